/* Tests for the build without CUDA (src/backend/cuda_stub.c), which the sanitizer build
 * always is: the cuda device is refused cleanly, by the library and by the commands
 * (exit code 3, a message saying why), and an unknown device is bad input (exit 2). */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cuda.h"
#include "support/testutil.h"

static void cuda_backend_reports_unavailable_without_cuda(void **state)
{
    (void)state;
    assert_false(be_cuda_built());
    backend_t *be = (backend_t *)1;
    err_t e = ERR_INIT;
    assert_int_equal(be_open("cuda", &be, &e), ERR_UNAVAILABLE);
    assert_null(be);
    assert_non_null(strstr(e.msg, "built without CUDA"));
    err_t e2 = ERR_INIT;
    be_cuda_mem_t mem;
    assert_int_equal(be_cuda_mem(NULL, &mem, &e2), ERR_UNAVAILABLE);
    err_t e3 = ERR_INIT;
    assert_int_equal(be_open("tpu", &be, &e3), ERR_INPUT);
    assert_non_null(strstr(e3.msg, "expected cpu or cuda"));
}

static void commands_exit_3_for_device_cuda_and_2_for_an_unknown_device(void **state)
{
    (void)state;
    char *out = NULL;
    const char *m = "tests/fixtures/model/tiny_tied_gqa_f32";
    assert_int_equal(test_cli(&out, "logprobs --model %s --ids 1,2,3 --device cuda", m), 3);
    assert_non_null(strstr(out, "built without CUDA"));
    free(out);
    assert_int_equal(test_cli(&out, "generate --model %s --ids 1,2,3 --device cuda", m), 3);
    assert_non_null(strstr(out, "built without CUDA"));
    free(out);
    assert_int_equal(test_cli(&out, "logprobs --model %s --ids 1,2,3 --device gpu0", m), 2);
    assert_non_null(strstr(out, "unknown device \"gpu0\""));
    free(out);
    assert_int_equal(test_cli(&out, "logprobs --model %s --ids 1,2,3 --device cpu", m), 0);
    assert_non_null(strstr(out, "mean_nll"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cuda_backend_reports_unavailable_without_cuda),
        cmocka_unit_test(commands_exit_3_for_device_cuda_and_2_for_an_unknown_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
