/* Tests for the build without CUDA (src/backend/cuda_stub.c), which the sanitizer build
 * always is: the cuda device is refused cleanly, by the library and by the commands
 * (exit code 3, a message saying why), and an unknown device is bad input (exit 2); what
 * the CPU backend answers of the facts every backend gives (be_mem, be_native). */
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
    assert_non_null(strstr(e3.msg, "expected cpu, cuda or cuda:N"));
    /* cuda:N names a GPU; the stub has none */
    err_t e4 = ERR_INIT;
    assert_int_equal(be_open("cuda:1", &be, &e4), ERR_UNAVAILABLE);
    err_t e5 = ERR_INIT;
    assert_int_equal(be_open("cuda:x", &be, &e5), ERR_INPUT);
}

/* Memory statistics and native compute types are backend facts: the CPU backend counts its
 * buffers and computes only float32 natively. */
static void cpu_backend_counts_its_buffers_and_emulates_16_bit(void **state)
{
    (void)state;
    backend_t *be;
    err_t e = ERR_INIT;
    assert_int_equal(be_open("cpu", &be, &e), 0);
    be_mem_t m0 = be_mem(be);
    be_buf_t *a = be_alloc(be, 1000, &e), *b = be_alloc(be, 64, &e);
    be_mem_t m1 = be_mem(be);
    assert_int_equal(m1.current - m0.current, 1024 + 64); /* 64-byte granules */
    be_free(be, a);
    be_mem_t m2 = be_mem(be);
    assert_int_equal(m2.current - m0.current, 64);
    assert_int_equal(m2.peak, m1.current);
    be_mem_reset_peak(be);
    assert_int_equal(be_mem(be).peak, m2.current);
    be_free(be, b);
    const mx_spec_t bf16 = mx_spec_default(MX_BF16), mx4 = mx_spec_default(MX_FP4_E2M1);
    assert_true(be_native(be, NULL, NULL, PREC_COMPUTE_FP32));
    assert_false(be_native(be, NULL, NULL, PREC_COMPUTE_BF16));
    assert_false(be_native(be, NULL, NULL, PREC_COMPUTE_FP16));
    assert_false(be_native(be, &bf16, &bf16, PREC_COMPUTE_FP32));
    assert_false(be_native(be, &mx4, &mx4, PREC_COMPUTE_BF16));
    be_close(be);
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
    /* --backend still works, and says it is deprecated */
    assert_int_equal(test_cli(&out, "logprobs --model %s --ids 1,2,3 --backend cpu", m), 0);
    assert_non_null(strstr(out, "--backend is deprecated: use --device"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cuda_backend_reports_unavailable_without_cuda),
        cmocka_unit_test(commands_exit_3_for_device_cuda_and_2_for_an_unknown_device),
        cmocka_unit_test(cpu_backend_counts_its_buffers_and_emulates_16_bit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
