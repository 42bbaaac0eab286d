/* backend: the operations the model needs, defined once, implemented per device.
 *
 * ggml's pattern: a backend is a small table of functions (be_ops_t) plus its private
 * state. The model calls only the be_* wrappers below, so one model definition runs on
 * every backend. `cpu` (backend_cpu.c) is the readable float32 reference with OpenMP and
 * OpenBLAS; `cuda` (cuda_*.cu) implements the same table and is checked op by op
 * against it.
 *
 * Memory. Tensors live in device buffers (be_buf_t) the backend owns. An op never takes
 * a host pointer for tensor data: it takes be_ptr_t = (buffer, byte offset). Host data
 * moves only through be_upload / be_download. Ops are asynchronous in principle (on
 * CUDA: enqueued on one stream, so a step can be captured as a graph); be_sync waits and
 * returns the first error any op hit since the last sync (a failed scratch allocation,
 * a device fault). Ops themselves return nothing. Reductions that return a number to
 * the host (be_sumsq) synchronise.
 *
 * Tensor shapes are stated at each op as (rows, cols), row-major float32 unless said
 * otherwise; ids and positions are int32. "acc" means the op adds into its output
 * instead of overwriting it.
 *
 * Determinism: every op gives bit-identical results for any thread count. Reductions
 * run in a fixed order (fixed-size chunks, combined in index order); parallel loops
 * split work, never a sum. Random numbers come from util/rng keyed by (seed, stream,
 * index), never from a thread's state.
 */
#ifndef MXRLHF_BACKEND_BACKEND_H
#define MXRLHF_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx/mx.h"
#include "precision/precision.h"
#include "util/err.h"

typedef struct be_buf be_buf_t;         /* device memory (opaque, backend-owned) */
typedef struct be_wcache be_wcache_t;   /* quantized copies of one weight (opaque) */
typedef struct backend backend_t;

/* A position in device memory: buffer + byte offset. NULL buf means "absent". */
typedef struct be_ptr {
    be_buf_t *buf;
    size_t off;
} be_ptr_t;

static inline be_ptr_t be_ptr(be_buf_t *b, size_t off)
{
    be_ptr_t p = {b, off};
    return p;
}
/* p advanced by n float32 (or int32) elements */
static inline be_ptr_t be_f32(be_ptr_t p, size_t n)
{
    p.off += n * 4;
    return p;
}
static inline bool be_null(be_ptr_t p) { return p.buf == NULL; }
#define BE_NULL ((be_ptr_t){NULL, 0})

/* ---- op arguments ------------------------------------------------------------------ */

/* A linear layer, y = x·Wᵀ + b, with one precision spec per operand.
 *   x: (M, K)   W: (N, K)   b: (N) or absent   y: (M, N)
 * Forward: x is quantized by spec[input] and W by spec[weight], both along K. Then, if
 * `compute` is bf16 or fp16, both operands are rounded to it; the product accumulates in
 * float32; bias is added in float32; the result is rounded to `compute`; then it is
 * stored (or added, when acc) into y.
 * Backward (from dy: (M, N)):
 *   dx (M, K)  = q(dy, grad_output_dx, along N) · q(W, weight_bp, along N)
 *   dW (N, K) += q(dy, grad_output_dw, along M)ᵀ · q(x, input_bp, along M)
 *   db (N)    += column sums of dy
 * with the same `compute` rounding of operands and of dx and dW before they are stored.
 * Backward quantizes the unquantized forward operands afresh along the new axes, as
 * microxcaling does.
 * Stochastic rounding of operand o draws rng_u32(seed, stream + o, element index) with
 * the element index of the operand matrix as mx_fake_quant defines it.
 * The weight's quantized copies are cached in `wcache` keyed by (wversion, spec, axis,
 * compute); pass the parameter's version and bump it whenever W changes. A weight
 * quantized with stochastic rounding is keyed by its stream too. */
typedef struct be_linear {
    be_ptr_t x, w, b;
    int M, N, K;
    mx_spec_t spec[PREC_OPERAND_COUNT];
    prec_compute_t compute;
    be_wcache_t *wcache;   /* may be NULL: quantize every call */
    uint64_t wversion;
    uint64_t seed, stream;
} be_linear_t;

/* Causal grouped-query attention with per-row padding.
 *   q:   (B, Tq, H*D) rows; query (b, i) sits at key index q0 + i.
 *   k,v: element (b, j, g, d) at float offset b*kv_sb + j*kv_st + g*kv_sh + d, for key
 *        index j < Tk and KV head g < Hkv: the same op reads K/V saved in row layout
 *        (B, T, Hkv*D) during training and from the KV cache (B, S, Hkv*D) in decoding.
 *   pad_left: int32 (B): keys j < pad_left[b] are padding. Query (b, i) sees keys
 *        pad_left[b] <= j <= q0 + i. Right padding needs no mask: a real token never
 *        sees a later key. A query with no visible key (itself padding) outputs zeros.
 *   out: (B, Tq, H*D) rows. lse: (B, H, Tq) log-sum-exp of the scaled scores, saved for
 *        backward (may be absent in inference).
 * Query head h uses KV head h / (H / Hkv). Scores are scaled by `scale` (1/sqrt(D)).
 * compute: the compute type of the calling phase (prec_compute_for). The CPU backend
 * keeps attention in float32 whatever it says; the CUDA backend rounds the operands of
 * attention's products to bf16 / fp16 under bf16 / fp16 compute, as PyTorch's autocast
 * does for scaled_dot_product_attention (float32 softmax and accumulation). Zero
 * (PREC_COMPUTE_FP32) when not set. */
typedef struct be_attn {
    be_ptr_t q, k, v, out, lse, pad_left;
    size_t kv_sb, kv_st, kv_sh;
    int B, Tq, Tk, H, Hkv, D, q0;
    float scale;
    prec_compute_t compute;
} be_attn_t;

/* AdamW as torch.optim.AdamW computes it (decoupled decay, bias correction):
 *   g  = grad * grad_mul                      (loss-scale undo and clipping, folded)
 *   p -= lr * weight_decay * p
 *   m  = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g²
 *   p -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)   */
typedef struct be_adamw {
    double lr, beta1, beta2, eps, weight_decay;
    long step;          /* 1 for the first update */
    double grad_mul;
} be_adamw_t;

/* Sampling one token per row from logits (B, V) (row stride ld floats), as transformers'
 * warpers do, in this order:
 *   temperature <= 0: greedy (the lowest id among equal maxima);
 *   z = logit / temperature;
 *   top_k > 0: keep tokens whose z >= the k-th largest z (ties at the boundary kept);
 *   0 < top_p < 1: with probabilities of the kept tokens sorted ascending (ties: higher id
 *     first), drop those whose cumulative probability is <= 1 - top_p (the most likely
 *     token always stays);
 *   draw u = rng_uniform_double(seed, stream + b, index) and return the first kept id, in
 *   id order, at which the running sum of exp(z - max) exceeds u * total.
 * The row's stream is stream + b, the index is the decoding step: a draw depends only on
 * (seed, row, step), never on thread count or backend. */
typedef struct be_sample {
    double temperature;
    int top_k;
    double top_p;
    uint64_t seed, stream, index;
} be_sample_t;

/* Memory a backend holds, in bytes: now, and the most at any time since it was opened or
 * the peak was last reset. What it counts: the CPU backend its buffers (be_alloc); the CUDA
 * backend every cudaMalloc of its own (buffers, scratch, weight caches, the cuBLASLt
 * workspace; not the CUDA context). */
typedef struct be_mem {
    size_t current, peak;
} be_mem_t;
/* ---- decoding: one token per row ------------------------------------------------------ */

/* What a decoding step's fused ops take at most: rows (tokens) of one fused linear op and
 * linear layers sharing its input. */
#define BE_DEC_MAX_ROWS 64
#define BE_DEC_MAX_LIN 3

/* The element-wise work fused after the linear layers of a be_dec_linear_t. */
typedef enum be_dec_epi {
    BE_DEC_STORE,    /* out[i] (M, N_i) = r_i, every layer i */
    BE_DEC_RESIDUAL, /* out[0] (M, N_0) += r_0: one layer, added to the residual stream */
    BE_DEC_SWIGLU    /* out[0] (M, N) = silu(r_0) * r_1: two layers (gate, up) of equal N */
} be_dec_epi_t;

/* Up to BE_DEC_MAX_LIN linear layers over one input, with the work around them fused:
 *   xn (M, K) = norm_w absent ? x : rmsnorm(x) as be_rmsnorm_fwd (weight norm_w (K), eps)
 *   r_i (M, N_i) = linear(xn) exactly as be_linear_fwd defines it with lin[i]'s weight,
 *        bias, specs (the input quantized by lin[i].spec[input] along K, with lin[i]'s
 *        stochastic-rounding stream), compute type and weight cache
 *   then the epilogue `epi` into out[].
 * lin[i].x, .M and .K are ignored (x, M, K above). Any M; backends fuse M <=
 * BE_DEC_MAX_ROWS. The outputs may not overlap x, except that with RESIDUAL and no norm
 * out[0] may be x itself (the residual stream updated in place). */
typedef struct be_dec_linear {
    be_ptr_t x, norm_w;
    float eps;
    int M, K, nlin;
    be_linear_t lin[BE_DEC_MAX_LIN];
    be_ptr_t out[BE_DEC_MAX_LIN];
    be_dec_epi_t epi;
} be_dec_linear_t;

/* Attention of one decoding step, with RoPE and the KV-cache write fused. Every length
 * and position is read from device memory, so one recorded step serves every step:
 *   t (int32 (1)): this step's cache index; pos (int32 (B)): each row's rotary position;
 *   pad_left (int32 (B)): keys j < pad_left[b] are padding;
 *   q (B, H*D), k, v (B, Hkv*D): this step's projections, before RoPE (left unchanged);
 *   kc, vc: the caches, element (b, j, g, d) at float offset ((b*S + j)*Hkv + g)*D + d;
 *   cos_t, sin_t: (P, D/2) rotary tables (be_rope's).
 * kc[b, t] = rope(k[b]) and vc[b, t] = v[b]; out (B, H*D) = be_attn_fwd's output for one
 * query at q0 = t over keys pad_left[b] <= j <= t on rope(q), float32 throughout. Equal to
 * be_rope on q and k, the two cache copies and be_attn_fwd with Tq = 1, Tk = t + 1. D is
 * even and at most 256. */
typedef struct be_dec_attn {
    be_ptr_t q, k, v, kc, vc, out, pos, pad_left, t, cos_t, sin_t;
    int B, H, Hkv, D, S;
    float scale;
} be_dec_attn_t;

/* The state a decoding loop keeps in device memory (int32 words of be_dec_sample_t.state). */
enum { BE_DEC_T, BE_DEC_STEP, BE_DEC_NDONE, BE_DEC_STATE_WORDS };

/* The end of one decoding step: the token of each row drawn from the step's logits, and
 * the loop's bookkeeping, all on the device:
 *   s = state[BE_DEC_STEP];
 *   when out_logp is present: lp[b] = log softmax(logits[b])[id[b]] of the drawn id (the
 *     logits as given, before the mask below);
 *   while s < min_new, the nstop ids in `stop` (int32) count as -inf in the draw (their
 *     logits are set aside in `save` (B * nstop floats) and put back afterwards);
 *   id[b] = be_sample_tokens's draw with index s (temperature, top_k, top_p, seed, stream);
 *   rows not done: out[b * max_new + s] = id[b], out_logp[b * max_new + s] = lp[b],
 *     len[b] = s + 1, done[b] = (id[b] is a stop id), state[BE_DEC_NDONE] counts the done;
 *   every row: ids[b] = id[b], pos[b] += 1; then state[BE_DEC_T] += 1, [BE_DEC_STEP] += 1.
 * logits (B, V) with row stride ld; lse and lp are (B) float scratch the op overwrites;
 * ids, pos, done, len int32 (B); out int32 and out_logp float (B, max_new). */
typedef struct be_dec_sample {
    be_ptr_t logits;
    size_t ld;
    int B, V;
    double temperature;
    int top_k;
    double top_p;
    uint64_t seed, stream;
    be_ptr_t state, ids, pos, done, len, out, out_logp, lse, lp, stop, save;
    int max_new, nstop, min_new;
} be_dec_sample_t;

/* A recorded sequence of ops (CUDA graphs), replayed as a whole. */
typedef struct be_graph be_graph_t;

/* True when a backend that keeps packed weights (cuda) computes a forward of this linear
 * layer with at most BE_DEC_MAX_ROWS rows by reading its weight in packed MX form (or as
 * bf16) with exact products: the weight spec an MX format, bf16, or anything under bf16
 * compute; the input spec an MX format, bf16, or anything under bf16 compute; compute
 * fp32 or bf16 (fp16 compute rounds the outputs as well: emulated). Both operands are
 * then bf16 values, multiplied exactly and summed in float32. */
bool be_dec_native(const mx_spec_t *weight, const mx_spec_t *input, prec_compute_t compute);

/* ---- the table every backend fills -------------------------------------------------- */

typedef struct be_ops {
    const char *name;
    void (*destroy)(backend_t *be);

    /* memory */
    be_buf_t *(*buf_alloc)(backend_t *be, size_t bytes, err_t *e);
    void (*buf_free)(backend_t *be, be_buf_t *b);
    size_t (*buf_size)(const be_buf_t *b);
    /* A host address for the buffer when the device shares host memory (CPU), else NULL.
     * Only loaders and tests use it, to skip a staging copy. */
    void *(*host_addr)(backend_t *be, be_ptr_t p);
    void (*upload)(backend_t *be, be_ptr_t dst, const void *src, size_t bytes);
    void (*download)(backend_t *be, void *dst, be_ptr_t src, size_t bytes); /* syncs */
    void (*copy)(backend_t *be, be_ptr_t dst, be_ptr_t src, size_t bytes);
    /* rows of `width` bytes from src (pitch bytes apart) to dst (pitch bytes apart) */
    void (*copy2d)(backend_t *be, be_ptr_t dst, size_t dpitch, be_ptr_t src, size_t spitch,
                   size_t width, size_t rows);
    void (*zero)(backend_t *be, be_ptr_t dst, size_t bytes);
    int (*sync)(backend_t *be, err_t *e);

    /* weight caches */
    be_wcache_t *(*wcache_new)(backend_t *be, err_t *e);
    void (*wcache_free)(backend_t *be, be_wcache_t *c);
    size_t (*wcache_bytes)(const be_wcache_t *c);

    /* ops; shapes at the wrappers below */
    void (*linear_fwd)(backend_t *be, const be_linear_t *a, be_ptr_t y, bool acc);
    void (*linear_bwd)(backend_t *be, const be_linear_t *a, be_ptr_t dy, be_ptr_t dx,
                       bool dx_acc, be_ptr_t dw, be_ptr_t db);
    void (*rmsnorm_fwd)(backend_t *be, be_ptr_t y, be_ptr_t rstd, be_ptr_t x, be_ptr_t w,
                        int N, int C, float eps);
    void (*rmsnorm_bwd)(backend_t *be, be_ptr_t dx, bool dx_acc, be_ptr_t dw, be_ptr_t dy,
                        be_ptr_t x, be_ptr_t w, be_ptr_t rstd, int N, int C);
    void (*rope)(backend_t *be, be_ptr_t x, be_ptr_t pos, be_ptr_t cos_t, be_ptr_t sin_t,
                 int N, int nheads, int D, bool inverse);
    void (*attn_fwd)(backend_t *be, const be_attn_t *a);
    void (*attn_bwd)(backend_t *be, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq,
                     be_ptr_t dk, be_ptr_t dv);
    void (*swiglu_fwd)(backend_t *be, be_ptr_t out, be_ptr_t gate, be_ptr_t up, size_t n);
    void (*swiglu_bwd)(backend_t *be, be_ptr_t dgate, be_ptr_t dup, be_ptr_t dout,
                       be_ptr_t gate, be_ptr_t up, size_t n);
    void (*embed_fwd)(backend_t *be, be_ptr_t out, be_ptr_t table, be_ptr_t ids, int N, int C);
    void (*embed_bwd)(backend_t *be, be_ptr_t dtable, be_ptr_t dout, be_ptr_t ids, int N,
                      int C, int V);
    void (*logsoftmax_gather)(backend_t *be, be_ptr_t logp, be_ptr_t lse, be_ptr_t logits,
                              be_ptr_t ids, int N, int V);
    void (*entropy)(backend_t *be, be_ptr_t ent, be_ptr_t logits, be_ptr_t lse, int N, int V);
    void (*logits_bwd)(backend_t *be, be_ptr_t dlogits, be_ptr_t logits, be_ptr_t lse,
                       be_ptr_t ent, be_ptr_t ids, be_ptr_t dlogp, be_ptr_t dent, int N,
                       int V);
    void (*adamw)(backend_t *be, be_ptr_t p, be_ptr_t g, be_ptr_t m, be_ptr_t v, size_t n,
                  const be_adamw_t *h);
    double (*sumsq)(backend_t *be, be_ptr_t x, size_t n);
    void (*scale)(backend_t *be, be_ptr_t x, float alpha, size_t n);
    void (*sample)(backend_t *be, be_ptr_t out_ids, be_ptr_t logits, size_t ld, int B, int V,
                   const be_sample_t *s);
    void (*fake_quant)(backend_t *be, be_ptr_t out, be_ptr_t in, size_t rows, size_t cols,
                       mx_axis_t axis, const mx_spec_t *spec, uint64_t seed, uint64_t stream);

    /* decoding (shapes at the wrappers) */
    void (*linear_prepare)(backend_t *be, const be_linear_t *a);
    void (*dec_weight)(backend_t *be, const be_linear_t *a, be_ptr_t out);
    void (*dec_linear)(backend_t *be, const be_dec_linear_t *a);
    void (*dec_attn)(backend_t *be, const be_dec_attn_t *a);
    void (*dec_sample)(backend_t *be, const be_dec_sample_t *a);
    int (*graph_begin)(backend_t *be, err_t *e);
    int (*graph_end)(backend_t *be, be_graph_t **g, err_t *e);
    void (*graph_launch)(backend_t *be, be_graph_t *g);
    void (*graph_free)(backend_t *be, be_graph_t *g);
    /* facts about the backend (be_mem, be_native below) */
    void (*mem)(backend_t *be, be_mem_t *out, bool reset_peak);
    bool (*native)(backend_t *be, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct,
                   bool decode);
} be_ops_t;

struct backend {
    const be_ops_t *ops;
    void *impl;
};

/* Backends by device name: "cpu", "cuda" (the first GPU), "cuda:N" (GPU N as the CUDA
 * runtime numbers them). ERR_INPUT for another name; ERR_UNAVAILABLE for a backend not
 * built in or a device that is absent. */
int be_open(const char *name, backend_t **out, err_t *e);
void be_close(backend_t *be);
const char *be_name(const backend_t *be);

/* The CPU backend (float32, OpenMP + OpenBLAS). Threads: OMP_NUM_THREADS. */
int be_cpu_open(backend_t **out, err_t *e);

/* The CUDA backend (src/backend/cuda_*.cu; device 0 or $CUDA_VISIBLE_DEVICES' first): bf16 /
 * fp16 / fp32 tensor-core GEMMs through cuBLASLt, float32 everywhere else. ERR_UNAVAILABLE
 * when built without CUDA or when no device answers. Extras in backend/cuda.h. */
int be_cuda_open(backend_t **out, err_t *e);
int be_cuda_open_device(int dev, backend_t **out, err_t *e); /* GPU dev */

/* ---- facts ---------------------------------------------------------------------------- */

static inline be_mem_t be_mem(backend_t *be)
{
    be_mem_t m = {0, 0};
    be->ops->mem(be, &m, false);
    return m;
}
static inline void be_mem_reset_peak(backend_t *be)
{
    be_mem_t m;
    be->ops->mem(be, &m, true);
}
/* True when a GEMM of operands quantized to specs a and b (NULL: fp32) under compute type
 * ct runs in those types on the hardware; false when the backend fake-quantizes or rounds
 * and computes in a wider type ("emulated": the CPU for everything but fp32; cuda for MX
 * pairs its dispatch does not map). */
static inline bool be_native(backend_t *be, const mx_spec_t *a, const mx_spec_t *b,
                             prec_compute_t ct)
{
    const mx_spec_t fp32 = {MX_FP32, 32, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    return be->ops->native(be, a ? a : &fp32, b ? b : &fp32, ct, false);
}
/* The same for the decoding steps' forward of a linear layer (weight spec w, input spec in):
 * true where the backend reads the weight packed and multiplies exactly (cuda's packed
 * decoding, be_dec_native's rule). */
static inline bool be_native_decode(backend_t *be, const mx_spec_t *w, const mx_spec_t *in,
                                    prec_compute_t ct)
{
    return be->ops->native(be, w, in, ct, true);
}

/* ---- wrappers: what the model calls --------------------------------------------------- */

static inline be_buf_t *be_alloc(backend_t *be, size_t bytes, err_t *e)
{
    return be->ops->buf_alloc(be, bytes, e);
}
static inline void be_free(backend_t *be, be_buf_t *b)
{
    if (b)
        be->ops->buf_free(be, b);
}
static inline void *be_host_addr(backend_t *be, be_ptr_t p) { return be->ops->host_addr(be, p); }
static inline void be_upload(backend_t *be, be_ptr_t dst, const void *src, size_t bytes)
{
    be->ops->upload(be, dst, src, bytes);
}
static inline void be_download(backend_t *be, void *dst, be_ptr_t src, size_t bytes)
{
    be->ops->download(be, dst, src, bytes);
}
static inline void be_copy(backend_t *be, be_ptr_t dst, be_ptr_t src, size_t bytes)
{
    be->ops->copy(be, dst, src, bytes);
}
static inline void be_copy2d(backend_t *be, be_ptr_t dst, size_t dpitch, be_ptr_t src,
                             size_t spitch, size_t width, size_t rows)
{
    be->ops->copy2d(be, dst, dpitch, src, spitch, width, rows);
}
static inline void be_zero(backend_t *be, be_ptr_t dst, size_t bytes)
{
    be->ops->zero(be, dst, bytes);
}
static inline int be_sync(backend_t *be, err_t *e) { return be->ops->sync(be, e); }

static inline be_wcache_t *be_wcache_new(backend_t *be, err_t *e)
{
    return be->ops->wcache_new(be, e);
}
static inline void be_wcache_free(backend_t *be, be_wcache_t *c)
{
    if (c)
        be->ops->wcache_free(be, c);
}
static inline size_t be_wcache_bytes(backend_t *be, const be_wcache_t *c)
{
    return c ? be->ops->wcache_bytes(c) : 0;
}

/* y (M, N) = or += linear(x) */
static inline void be_linear_fwd(backend_t *be, const be_linear_t *a, be_ptr_t y, bool acc)
{
    be->ops->linear_fwd(be, a, y, acc);
}
/* dx (M, K) = or +=; dW (N, K) +=; db (N) +=; any output may be BE_NULL to skip it */
static inline void be_linear_bwd(backend_t *be, const be_linear_t *a, be_ptr_t dy, be_ptr_t dx,
                                 bool dx_acc, be_ptr_t dw, be_ptr_t db)
{
    be->ops->linear_bwd(be, a, dy, dx, dx_acc, dw, db);
}
/* y (N, C) = w ⊙ x · rstd, rstd (N) = 1 / sqrt(mean(x²) + eps) (rstd may be absent) */
static inline void be_rmsnorm_fwd(backend_t *be, be_ptr_t y, be_ptr_t rstd, be_ptr_t x,
                                  be_ptr_t w, int N, int C, float eps)
{
    be->ops->rmsnorm_fwd(be, y, rstd, x, w, N, C, eps);
}
/* dx (N, C) = or +=, dw (C) += */
static inline void be_rmsnorm_bwd(backend_t *be, be_ptr_t dx, bool dx_acc, be_ptr_t dw,
                                  be_ptr_t dy, be_ptr_t x, be_ptr_t w, be_ptr_t rstd, int N, int C)
{
    be->ops->rmsnorm_bwd(be, dx, dx_acc, dw, dy, x, w, rstd, N, C);
}
/* In place on x (N, nheads*D), Hugging Face's rotate-half form:
 *   x'[i] = x[i] cos - x[i+D/2] sin,  x'[i+D/2] = x[i+D/2] cos + x[i] sin,  i < D/2
 * with cos/sin tables (P, D/2) at row pos[n] (int32 (N)). inverse rotates back (the
 * backward of a rotation is its inverse). */
static inline void be_rope(backend_t *be, be_ptr_t x, be_ptr_t pos, be_ptr_t cos_t,
                           be_ptr_t sin_t, int N, int nheads, int D, bool inverse)
{
    be->ops->rope(be, x, pos, cos_t, sin_t, N, nheads, D, inverse);
}
static inline void be_attn_fwd(backend_t *be, const be_attn_t *a) { be->ops->attn_fwd(be, a); }
/* dq like q; dk, dv in the same strided layout as k, v (overwritten); needs a->lse */
static inline void be_attn_bwd(backend_t *be, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq,
                               be_ptr_t dk, be_ptr_t dv)
{
    be->ops->attn_bwd(be, a, dout, dq, dk, dv);
}
/* out (n) = silu(gate) * up, silu(g) = g / (1 + exp(-g)) */
static inline void be_swiglu_fwd(backend_t *be, be_ptr_t out, be_ptr_t gate, be_ptr_t up, size_t n)
{
    be->ops->swiglu_fwd(be, out, gate, up, n);
}
static inline void be_swiglu_bwd(backend_t *be, be_ptr_t dgate, be_ptr_t dup, be_ptr_t dout,
                                 be_ptr_t gate, be_ptr_t up, size_t n)
{
    be->ops->swiglu_bwd(be, dgate, dup, dout, gate, up, n);
}
/* out (N, C) = table[ids[n]]; ids int32 (N) */
static inline void be_embed_fwd(backend_t *be, be_ptr_t out, be_ptr_t table, be_ptr_t ids, int N,
                                int C)
{
    be->ops->embed_fwd(be, out, table, ids, N, C);
}
/* dtable (V, C) += scatter of dout (N, C) */
static inline void be_embed_bwd(backend_t *be, be_ptr_t dtable, be_ptr_t dout, be_ptr_t ids,
                                int N, int C, int V)
{
    be->ops->embed_bwd(be, dtable, dout, ids, N, C, V);
}
/* logits (N, V); lse (N) = logsumexp of each row; logp (N) = logits[n, ids[n]] - lse[n],
 * 0 where ids[n] < 0 (no target). logp may be absent. */
static inline void be_logsoftmax_gather(backend_t *be, be_ptr_t logp, be_ptr_t lse,
                                        be_ptr_t logits, be_ptr_t ids, int N, int V)
{
    be->ops->logsoftmax_gather(be, logp, lse, logits, ids, N, V);
}
/* ent (N) = -sum p log p of softmax(logits row), from lse */
static inline void be_entropy(backend_t *be, be_ptr_t ent, be_ptr_t logits, be_ptr_t lse, int N,
                              int V)
{
    be->ops->entropy(be, ent, logits, lse, N, V);
}
/* dlogits (N, V) = dlogp[n] (onehot(ids[n]) - p) + dent[n] p (E_p[logit] - logit), from the
 * forward's lse and ent (ent needed only with dent); dlogp / dent (N) may be absent; rows
 * whose id is negative (no target, logp 0) take no dlogp term.
 * dlogits may alias logits (the usual case: the gradient overwrites the logits). */
static inline void be_logits_bwd(backend_t *be, be_ptr_t dlogits, be_ptr_t logits, be_ptr_t lse,
                                 be_ptr_t ent, be_ptr_t ids, be_ptr_t dlogp, be_ptr_t dent, int N,
                                 int V)
{
    be->ops->logits_bwd(be, dlogits, logits, lse, ent, ids, dlogp, dent, N, V);
}
static inline void be_adamw(backend_t *be, be_ptr_t p, be_ptr_t g, be_ptr_t m, be_ptr_t v,
                            size_t n, const be_adamw_t *h)
{
    be->ops->adamw(be, p, g, m, v, n, h);
}
/* sum of x² in double, fixed order; Inf/NaN anywhere make it non-finite. Syncs. */
static inline double be_sumsq(backend_t *be, be_ptr_t x, size_t n) { return be->ops->sumsq(be, x, n); }
/* x (n) *= alpha */
static inline void be_scale(backend_t *be, be_ptr_t x, float alpha, size_t n)
{
    be->ops->scale(be, x, alpha, n);
}
/* out_ids int32 (B) */
static inline void be_sample_tokens(backend_t *be, be_ptr_t out_ids, be_ptr_t logits, size_t ld,
                                    int B, int V, const be_sample_t *s)
{
    be->ops->sample(be, out_ids, logits, ld, B, V, s);
}
/* out (rows, cols) = mx_fake_quant(in) (may alias) */
static inline void be_fake_quant(backend_t *be, be_ptr_t out, be_ptr_t in, size_t rows,
                                 size_t cols, mx_axis_t axis, const mx_spec_t *spec,
                                 uint64_t seed, uint64_t stream)
{
    be->ops->fake_quant(be, out, in, rows, cols, axis, spec, seed, stream);
}

/* Builds every copy of the weight (N, K) that forwards with these arguments read, whatever
 * their M (the GEMM operand, the packed decode copy), so that the float32 weight can be
 * freed afterwards (qwen2_freeze); a copy already current is kept. */
static inline void be_linear_prepare(backend_t *be, const be_linear_t *a)
{
    be->ops->linear_prepare(be, a);
}
/* out (N, K) float32 = the weight operand as be_dec_linear multiplies it, widened to
 * float32: bit for bit the operand be_linear_fwd prepares (quantized by spec[weight],
 * rounded to compute), read back from the decode copy (packed MX codes and scales where
 * the backend keeps them). */
static inline void be_dec_weight(backend_t *be, const be_linear_t *a, be_ptr_t out)
{
    be->ops->dec_weight(be, a, out);
}
static inline void be_dec_linear(backend_t *be, const be_dec_linear_t *a)
{
    be->ops->dec_linear(be, a);
}
static inline void be_dec_attn(backend_t *be, const be_dec_attn_t *a) { be->ops->dec_attn(be, a); }
static inline void be_dec_sample(backend_t *be, const be_dec_sample_t *a)
{
    be->ops->dec_sample(be, a);
}
/* Recording: between be_graph_begin and be_graph_end ops are recorded, not run; the graph
 * then runs them all, in order, on each be_graph_launch, reading whatever the device memory
 * holds at that time. The ops' host work (argument checks, weight caches, scratch) happens
 * while recording only, so the ops recorded must find their caches and scratch ready (run
 * them once first). be_graph_begin: ERR_UNAVAILABLE when the backend does not record (cpu;
 * cuda with MXRLHF_CUDA_GRAPH=0): run the ops directly. be_graph_end: ERR_UNAVAILABLE when
 * recording failed (the ops did not run and must be run directly; the backend is as before
 * be_graph_begin). */
static inline int be_graph_begin(backend_t *be, err_t *e) { return be->ops->graph_begin(be, e); }
static inline int be_graph_end(backend_t *be, be_graph_t **g, err_t *e)
{
    return be->ops->graph_end(be, g, e);
}
static inline void be_graph_launch(backend_t *be, be_graph_t *g) { be->ops->graph_launch(be, g); }
static inline void be_graph_free(backend_t *be, be_graph_t *g)
{
    if (g)
        be->ops->graph_free(be, g);
}

#endif
