/* cuda_stub: the CUDA backend's entry points in a build without CUDA.
 *
 * A documented build variant, not a fake: the sanitizer build (ASan and the CUDA runtime
 * do not mix), the fuzzers, and every build where nvcc is absent or `make CUDA=0` was
 * given link this file instead of src/backend/cuda_*.cu. Opening the backend then fails
 * with ERR_UNAVAILABLE, which the commands turn into a clear message and exit code 3. */
#include "backend/cuda.h"

static int unavailable(err_t *e)
{
    return err_set(e, ERR_UNAVAILABLE, "device \"cuda\": this mxrlhf was built without CUDA "
                   "(no nvcc at build time, CUDA=0, or the sanitizer build); use --device cpu "
                   "or rebuild where nvcc is found");
}

bool be_cuda_built(void) { return false; }

int be_cuda_open(backend_t **out, err_t *e)
{
    *out = NULL;
    return unavailable(e);
}

int be_cuda_open_device(int dev, backend_t **out, err_t *e)
{
    *out = NULL;
    return unavailable(e);
}

int be_cuda_info(backend_t *be, be_cuda_info_t *out, err_t *e) { return unavailable(e); }
int be_cuda_mem(backend_t *be, be_cuda_mem_t *out, err_t *e) { return unavailable(e); }
void be_cuda_mem_reset_peak(backend_t *be) {}
int be_cuda_set_attn(backend_t *be, be_cuda_attn_t mode, err_t *e) { return unavailable(e); }
int be_cuda_cudnn(backend_t *be, be_cuda_cudnn_t *out, err_t *e) { return unavailable(e); }
int be_cuda_cudnn_timing(backend_t *be, bool on, err_t *e) { return unavailable(e); }
void be_cuda_cudnn_print(backend_t *be, FILE *f) {}
int be_cuda_profile(backend_t *be, bool on, err_t *e) { return unavailable(e); }
void be_cuda_profile_print(backend_t *be, FILE *f) {}
bool be_cuda_mxgemm_native(const mx_spec_t *a, const mx_spec_t *b, prec_compute_t compute)
{
    return false;
}
int be_cuda_set_mxgemm(backend_t *be, bool on, err_t *e) { return unavailable(e); }
int be_cuda_set_mxgemm_mode(backend_t *be, be_cuda_mxg_t mode, err_t *e) { return unavailable(e); }
int be_cuda_mxgemm_stats(backend_t *be, be_cuda_mxgemm_stats_t *out, err_t *e)
{
    return unavailable(e);
}
int be_cuda_set_decode(backend_t *be, be_cuda_dec_t mode, err_t *e) { return unavailable(e); }
int be_cuda_set_graphs(backend_t *be, bool on, err_t *e) { return unavailable(e); }
const char *be_cuda_decode_note(backend_t *be) { return ""; }
int be_cuda_wcache_packed(backend_t *be, be_wcache_t *wc, void *codes, size_t ncodes,
                          void *scales, size_t nscales, err_t *e)
{
    return unavailable(e);
}
