/* cuda_internal: what the CUDA backend's translation units share (not for other layers).
 *
 * cuda_backend.cu  the table, memory, streams, cuBLASLt GEMMs (linear layers), info
 * cuda_ops.cu      RMSNorm, RoPE, SwiGLU, embedding, losses, AdamW, reductions
 * cuda_attn.cu     attention: the exact float32 kernel and the tensor-core tiles
 * cuda_cudnn.cu    attention through cuDNN's fused flash attention (loaded with dlopen)
 * cuda_mx.cu       MX fake quant and GEMM-operand preparation (bf16 / fp16 / fp32)
 * cuda_mxgemm.cu   MX GEMMs on the FP8 / INT8 tensor cores (quantize to bytes + scales)
 * cuda_sample.cu   sampling on the device
 * cuda_gemv.cu     decoding's linear layers: packed MX weight copies, the skinny GEMM
 *                  (M <= 64 rows) that decodes them in registers, be_dec_linear
 * cuda_decode.cu   decoding's attention and sampling bookkeeping, graphs, decode modes
 *
 * Everything is enqueued on one stream, in program order; errors are sticky (the first
 * one is kept, as in the CPU backend) and reported by be_sync. Ops never allocate
 * except to grow a scratch slot, which happens during the first step of a shape.
 */
#ifndef MXRLHF_BACKEND_CUDA_INTERNAL_CUH
#define MXRLHF_BACKEND_CUDA_INTERNAL_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
#include "backend/cuda.h"
#include "mx/mx.h"
}

#include "mx/mx_core.h"

struct be_buf {
    size_t size;
    unsigned char *d;
};

/* Scratch slots; an op may use several, never one that a callee of the same op uses. */
enum {
    CS_XA,     /* GEMM operand A (activations, gradients) */
    CS_XB,     /* GEMM operand B (weights without a cache, x for dW) */
    CS_T,      /* float32 GEMM output before fp16 rounding; attention partials */
    CS_SCALE,  /* MX block scales */
    CS_RED,    /* reduction partials */
    CS_SORT,   /* sorting (embedding backward, top-p) */
    CS_SORT2,
    CS_ROW,    /* per-row values (sampling, attention D_i) */
    CS_ATT16,  /* 16-bit copies of attention's Q, K, V, dO */
    CS_MXA,    /* MX GEMM operand A as tensor-core bytes + scales (cuda_mxgemm.cu) */
    CS_MXB,    /* MX GEMM operand B (weights without a cache, x for dW) */
    CS_CUDNN,  /* cuDNN attention: 16-bit copies, statistics, cuDNN's workspace */
    CS_DEC0,   /* decoding, composed: a fused op's normed input */
    CS_DEC1,   /* decoding, composed: the gate output */
    CS_DEC2,   /* decoding, composed: the up output */
    CS_DECWS,  /* decoding: split partial sums (GEMV, attention) */
    CS_COUNT
};

typedef struct cu_dentry cu_dentry_t; /* a packed decode copy of a weight (cuda_gemv.cu) */

/* What a GEMM-operand slot (CS_XA, CS_XB) holds, so that consecutive linear layers on
 * the same input (q/k/v, gate/up, their weight gradients) prepare it once. Valid while
 * `gen` equals the backend's: every op other than the linear layers bumps it, and a
 * linear layer drops a record whose source its outputs overlap. */
typedef struct prep_rec {
    bool valid;
    uint64_t gen;
    const void *src;
    size_t rows, cols;
    int axis, dt;
    mx_spec_t spec;
    prec_compute_t ct;
    uint64_t seed, stream;
} prep_rec_t;

/* GEMM element types */
enum { DT_F32, DT_BF16, DT_F16 };

typedef struct gemm_plan gemm_plan_t;
typedef struct mxg_cache mxg_cache_t; /* a weight's tensor-core copies (cuda_mxgemm.cu) */
typedef struct mxg_state mxg_state_t; /* the MX GEMMs' plans and device words (cuda_mxgemm.cu) */
typedef struct mxg_dev mxg_dev_t;
typedef struct cu_dnn cu_dnn_t; /* cuDNN state (cuda_cudnn.cu); NULL until open */

typedef struct cuda_be {
    backend_t be;
    int dev;
    cudaDeviceProp prop;
    cudaStream_t st;
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_size;
    int err_code;
    char err_msg[512];
    void *scr[CS_COUNT];
    size_t scr_n[CS_COUNT];
    gemm_plan_t *plans;
    int nplans, cap_plans;
    size_t mem_cur, mem_peak;
    be_cuda_attn_t attn;
    int runtime_version, driver_version;
    double prof_t[40];
    long prof_n[40];
    uint64_t gen;             /* bumped by every op that may write device memory */
    prep_rec_t rec[CS_COUNT]; /* for CS_XA, CS_XB, CS_MXA, CS_MXB */
    int mxg_mode;             /* be_cuda_mxg_t: which MX GEMMs run on the tensor cores */
    mxg_state_t *mxgs;        /* their cuBLASLt plans and device words (cuda_mxgemm.cu) */
    long mxg_native, mxg_emulated; /* MX GEMMs run natively / left to the emulation */
    cu_dnn_t *dnn;
    /* decoding (cuda_gemv.cu, cuda_decode.cu) */
    int dec_mode;             /* be_cuda_dec_t */
    bool graphs, pdl;         /* record decoding steps; programmatic dependent launches */
    double gemv_xcost;        /* decode GEMV plan: us to stage an activation element (dl_plan_make) */
    bool capturing, cap_bad;  /* recording; something that cannot be recorded was asked */
    bool profiling;           /* be_cuda_profile is on (ops synchronise: no recording) */
    bool wbuilt;              /* a weight copy was (re)built since the flag was cleared: the
                                 next decode kernel must not start before that work is done */
    int *dec_cnt;             /* zeroed arrival counters of split reductions */
    size_t dec_cnt_n;
    int occ[64];              /* resident GEMV blocks per SM, per kernel (0: not asked yet) */
    char dec_note[256];       /* why graphs or PDL were turned off, for benchmarks */
} cuda_t;

static inline cuda_t *CU(backend_t *be) { return (cuda_t *)be->impl; }

static inline void *vptr(be_ptr_t p) { return p.buf ? (void *)(p.buf->d + p.off) : nullptr; }
static inline float *fptr(be_ptr_t p) { return (float *)vptr(p); }
static inline int32_t *iptr(be_ptr_t p) { return (int32_t *)vptr(p); }

/* the backend behind be, or NULL and ERR_INPUT when it is not a CUDA backend */
cuda_t *as_cuda(backend_t *be, err_t *e);

/* sticky errors (cuda_backend.cu) */
void cu_fail(cuda_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* false (and the error recorded, naming `what`) when r is not cudaSuccess */
bool cu_check(cuda_t *c, cudaError_t r, const char *what);
/* the launch error of the kernel just enqueued, if any */
void cu_launched(cuda_t *c, const char *what);
/* device scratch slot `slot` with room for `bytes`; NULL (and an error) if out of memory */
void *cu_scratch(cuda_t *c, int slot, size_t bytes);
/* cudaMalloc / cudaFree with the memory accounting of be_cuda_mem */
void *cu_malloc(cuda_t *c, size_t bytes, const char *what);
void cu_free(cuda_t *c, void *p, size_t bytes);

/* a 1-D grid of `bs` threads for n items (grid-stride loops cover the rest) */
static inline unsigned cu_grid(size_t n, int bs)
{
    size_t g = (n + (size_t)bs - 1) / (size_t)bs;
    if (g < 1)
        g = 1;
    return g > 65536u * 8 ? 65536u * 8 : (unsigned)g;
}

/* ---- the linear layer's two paths (cuda_backend.cu, cuda_gemv.cu) -------------------- */

/* be_linear_fwd through cuBLASLt with prepared operands (the emulated path) */
void cu_linear_gemm(cuda_t *c, const be_linear_t *a, be_ptr_t y, bool acc);
/* The weight (N, K) prepared as the forward GEMM's operand of type dt (the weight cache's
 * entry 0); NULL (and cap_bad) when it would have to be rebuilt while recording. */
const void *cu_weight_fwd(cuda_t *c, const be_linear_t *a, int dt);
/* the same in the type cu_linear_gemm picks for these specs (the float32 weight itself when
 * nothing is to be done) */
const void *cu_weight_gemm(cuda_t *c, const be_linear_t *a);
/* be_linear_fwd by the decode GEMV when M <= BE_DEC_MAX_ROWS and be_dec_native holds and
 * the decode mode is packed; false (nothing done) otherwise */
bool cu_dec_linear_hook(cuda_t *c, const be_linear_t *a, be_ptr_t y, bool acc);
/* a weight cache's packed decode copy */
void cu_dentry_free(cuda_t *c, cu_dentry_t *d);
size_t cu_dentry_bytes(const cu_dentry_t *d);
/* a weight cache's decode-copy slot (the cache lives in cuda_backend.cu) */
cu_dentry_t **cu_wcache_dslot(be_wcache_t *wc);
/* the zeroed split counters (at least n), NULL while recording when they would grow */
int *cu_dec_counters(cuda_t *c, size_t n);
/* launches a decode kernel with the programmatic-dependent-launch attribute when c->pdl */
void cu_launch_pdl(cuda_t *c, const void *fn, dim3 grid, dim3 block, size_t smem, void **args,
                   const char *what);

/* ---- MX and operand preparation (cuda_mx.cu) ---------------------------------------- */

/* out (rows, cols) of type `dt` = round_compute(fake_quant(in, spec, axis)), where
 * round_compute rounds to bf16 / fp16 (compute) or leaves float32; the element index of
 * stochastic rounding is r * cols + c as mx_fake_quant defines it. `out` may equal `in`
 * when dt is DT_F32. */
void cu_prepare(cuda_t *c, void *out, int dt, const float *in, size_t rows, size_t cols,
                mx_axis_t axis, const mx_spec_t *spec, prec_compute_t compute, uint64_t seed,
                uint64_t stream);

/* Every MX block's scale exponent (mxc_scale_exp, MXC_NAN_SCALE for a block with Inf or
 * NaN) of a (rows, cols) matrix with blocks along `axis`, in the order of mxc_block_of,
 * in scratch slot CS_SCALE; NULL (and the error recorded) when out of memory. */
const int *cu_mx_scale_exps(cuda_t *c, const float *in, size_t rows, size_t cols, mx_axis_t axis,
                            const mx_spec_t *spec);

/* ---- MX GEMMs on the tensor cores (cuda_mxgemm.cu) ------------------------------------ */

/* Each runs one GEMM of a linear layer (backend.h's definitions) on the FP8 / INT8 tensor
 * cores and returns true when both of its operands' specs map there (MX formats with a
 * tensor-core type in common, blocks of a multiple of 8, fp32 or bf16 compute, the switch
 * on); otherwise it does nothing and returns false, and the caller runs the emulation.
 * An error (out of memory) is recorded and true returned. `wc` is the weight cache's slot
 * for the tensor-core copies of W (NULL: no cache).
 *   fwd: y (M, N) (+)= x W^T + b      dx: dx (M, K) (+)= dy W      dw: dW (N, K) += dy^T x */
bool cu_mxg_linear_fwd(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc, float *y, bool acc);
bool cu_mxg_linear_dx(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc, const float *dy,
                      float *dx, bool dx_acc);
bool cu_mxg_linear_dw(cuda_t *c, const be_linear_t *a, const float *dy, float *dw);
void cu_mxg_cache_free(cuda_t *c, mxg_cache_t *m);
/* Builds the forward tensor-core copy of a's weight now, where a forward of more rows would
 * run natively (linear_prepare: qwen2_freeze frees the float32 weights after it). */
void cu_mxg_prepare(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc);
void cu_weight_mxg(cuda_t *c, const be_linear_t *a);
size_t cu_mxg_cache_bytes(const mxg_cache_t *m);
/* a linear layer wrote [p, p + bytes): drop the operands prepared from there */
void cu_mxg_written(cuda_t *c, const void *p, size_t bytes);
/* sets the mode at open (MXRLHF_CUDA_MXGEMM, the device's compute capability); close
 * releases the plans and device words */
void cu_mxg_init(cuda_t *c);
void cu_mxg_close(cuda_t *c);
/* would this pair of operand specs run on the tensor cores under c's mode? */
bool cu_mxg_native(cuda_t *c, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct);
/* the backend's state, or NULL (and e set) when `be` is not a CUDA backend */
cuda_t *cu_backend(backend_t *be, err_t *e);

/* ---- element-wise helpers for the linear layers (cuda_ops.cu) ------------------------ */

/* y (M, N) (+)= round(t + b), round to `compute` (fp32: none); b may be NULL; t may be y
 * when !acc */
void cu_epilogue(cuda_t *c, float *y, const float *t, const float *b, int M, int N, bool acc,
                 prec_compute_t compute);
/* db (N) += column sums of round(dy (M, N)); fixed 64-row chunks, combined in order */
void cu_colsum_acc(cuda_t *c, float *db, const float *dy, int M, int N, prec_compute_t compute);

/* ---- cuDNN's fused attention (cuda_cudnn.cu) ------------------------------------------ */

/* Load cuDNN (never fails: without it the state says why and the calls below return
 * false); close releases plans, handle and library. */
void cu_dnn_open(cuda_t *c);
void cu_dnn_close(cuda_t *c);
/* Attention through cuDNN when the mode, compute type and shape allow it: true when the
 * op was enqueued, false when the caller must run its own kernels (nothing written). */
bool cu_dnn_attn_fwd(cuda_t *c, const be_attn_t *a);
bool cu_dnn_attn_bwd(cuda_t *c, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq, be_ptr_t dk,
                     be_ptr_t dv);

/* ---- ops implemented outside cuda_backend.cu ----------------------------------------- */

void cuda_op_rmsnorm_fwd(backend_t *be, be_ptr_t y, be_ptr_t rstd, be_ptr_t x, be_ptr_t w, int N,
                         int C, float eps);
void cuda_op_rmsnorm_bwd(backend_t *be, be_ptr_t dx, bool dx_acc, be_ptr_t dw, be_ptr_t dy,
                         be_ptr_t x, be_ptr_t w, be_ptr_t rstd, int N, int C);
void cuda_op_rope(backend_t *be, be_ptr_t x, be_ptr_t pos, be_ptr_t cos_t, be_ptr_t sin_t, int N,
                  int nheads, int D, bool inverse);
void cuda_op_attn_fwd(backend_t *be, const be_attn_t *a);
void cuda_op_attn_bwd(backend_t *be, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq, be_ptr_t dk,
                      be_ptr_t dv);
void cuda_op_swiglu_fwd(backend_t *be, be_ptr_t out, be_ptr_t gate, be_ptr_t up, size_t n);
void cuda_op_swiglu_bwd(backend_t *be, be_ptr_t dgate, be_ptr_t dup, be_ptr_t dout, be_ptr_t gate,
                        be_ptr_t up, size_t n);
void cuda_op_embed_fwd(backend_t *be, be_ptr_t out, be_ptr_t table, be_ptr_t ids, int N, int C);
void cuda_op_embed_bwd(backend_t *be, be_ptr_t dtable, be_ptr_t dout, be_ptr_t ids, int N, int C,
                       int V);
void cuda_op_logsoftmax_gather(backend_t *be, be_ptr_t logp, be_ptr_t lse, be_ptr_t logits,
                               be_ptr_t ids, int N, int V);
void cuda_op_entropy(backend_t *be, be_ptr_t ent, be_ptr_t logits, be_ptr_t lse, int N, int V);
void cuda_op_logits_bwd(backend_t *be, be_ptr_t dlogits, be_ptr_t logits, be_ptr_t lse,
                        be_ptr_t ent, be_ptr_t ids, be_ptr_t dlogp, be_ptr_t dent, int N, int V);
void cuda_op_adamw(backend_t *be, be_ptr_t p, be_ptr_t g, be_ptr_t m, be_ptr_t v, size_t n,
                   const be_adamw_t *h);
double cuda_op_sumsq(backend_t *be, be_ptr_t x, size_t n);
void cuda_op_scale(backend_t *be, be_ptr_t x, float alpha, size_t n);
void cuda_op_sample(backend_t *be, be_ptr_t out_ids, be_ptr_t logits, size_t ld, int B, int V,
                    const be_sample_t *s);
void cuda_op_fake_quant(backend_t *be, be_ptr_t out, be_ptr_t in, size_t rows, size_t cols,
                        mx_axis_t axis, const mx_spec_t *spec, uint64_t seed, uint64_t stream);
void cuda_op_linear_prepare(backend_t *be, const be_linear_t *a);
void cuda_op_dec_weight(backend_t *be, const be_linear_t *a, be_ptr_t out);
void cuda_op_dec_linear(backend_t *be, const be_dec_linear_t *a);
void cuda_op_dec_attn(backend_t *be, const be_dec_attn_t *a);
void cuda_op_dec_sample(backend_t *be, const be_dec_sample_t *a);
int cuda_op_graph_begin(backend_t *be, err_t *e);
int cuda_op_graph_end(backend_t *be, be_graph_t **g, err_t *e);
void cuda_op_graph_launch(backend_t *be, be_graph_t *g);
void cuda_op_graph_free(backend_t *be, be_graph_t *g);
/* sampling with the draw's index read from the device (index_dev, may be NULL: s->index) */
void cu_sample(cuda_t *c, int32_t *out, const float *logits, size_t ld, int B, int V,
               const be_sample_t *s, const int32_t *index_dev);
/* lp[b], lse[b]: the log-prob of ids[b] and the log-sum-exp of logits row b (grid-wide) */
void cu_logp_rows(cuda_t *c, float *lp, float *lse, const float *logits, size_t ld,
                  const int32_t *ids, int B, int V);

/* ---- block reductions --------------------------------------------------------------- */

template <typename T> __device__ __forceinline__ T warp_sum(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ __forceinline__ T warp_max(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024), the same fixed tree
 * every time; every thread gets the result. `sh` holds 32 T. */
template <typename T> __device__ T block_sum(T v, T *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read from a previous call */
    if (lane == 0)
        sh[wid] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : (T)0;
    return warp_sum(r);
}

template <typename T> __device__ T block_max(T v, T *sh, T lowest)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0)
        sh[wid] = v;
    __syncthreads();
    T r = lane < nw ? sh[lane] : lowest;
    return warp_max(r);
}

/* Asynchronous copies from global into shared memory (cp.async): 16 bytes (L2 only) or 4
 * bytes; cp_async_wait() waits for all of this thread's, cp_async_wait<N>() until at most N
 * of its committed groups (cp_async_commit) are pending. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(d), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

#endif
