/* cuda_backend: the CUDA backend's table, memory, stream and linear layers (cuBLASLt).
 *
 * Memory: one cudaMalloc per buffer; ops are enqueued on the backend's one stream in
 * program order; be_sync waits for it and reports the first error since the last sync.
 * Uploads from pageable host memory return once the data is staged, so callers may
 * reuse their host buffers at once (the model does).
 *
 * Linear layers follow the CPU backend's definition (backend.h) with tensor cores:
 * each GEMM operand is MX-quantized by its spec along its reduction axis and rounded to
 * the compute type (cuda_mx.cu), then stored in the narrowest type that holds it
 * exactly: bf16 when the compute type is bf16 or the spec is an MX format or bf16 (MX
 * elements have at most 8 significant bits), fp16 for fp16; float32 otherwise (an fp32
 * spec under fp32 compute, or two operands of different types). Products accumulate in
 * float32 (CUBLAS_COMPUTE_32F; for float32 operands that is a true float32 GEMM, no
 * TF32). Differences from the CPU emulation, by design: with bf16 compute the GEMM
 * output keeps the float32 accumulator (the CPU rounds it to bf16); with fp16 compute
 * the output is rounded to fp16 exactly as on the CPU (overflow to Inf drives loss
 * scaling). MX elements below 2^-133 (blocks whose largest magnitude is under about
 * 2^-112) are not representable in bf16 and are rounded there.
 *
 * Quantized weights are cached per linear layer (be_wcache_t) in the GEMM's type, keyed
 * as on the CPU; a weight whose specs are plain casts (bf16, fp16, fp32) serves both
 * the forward and the backward GEMM from one copy.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_internal.cuh"
#include "backend/dec_layout.h"

/* ---- errors and memory --------------------------------------------------------------- */

void cu_fail(cuda_t *c, int code, const char *fmt, ...)
{
    if (c->err_code)
        return;
    c->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err_msg, sizeof c->err_msg, fmt, ap);
    va_end(ap);
}

bool cu_check(cuda_t *c, cudaError_t r, const char *what)
{
    if (r == cudaSuccess)
        return true;
    cu_fail(c, r == cudaErrorMemoryAllocation ? ERR_NOMEM : ERR_FAIL, "cuda backend: %s: %s",
            what, cudaGetErrorString(r));
    return false;
}

void cu_launched(cuda_t *c, const char *what)
{
    cudaError_t r = cudaGetLastError();
    if (r != cudaSuccess)
        cu_fail(c, ERR_FAIL, "cuda backend: launching %s: %s", what, cudaGetErrorString(r));
}

void *cu_malloc(cuda_t *c, size_t bytes, const char *what)
{
    void *p = nullptr;
    size_t n = bytes ? bytes : 1;
    cudaError_t r = cudaMalloc(&p, n);
    if (r != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky in CUDA */
        cu_fail(c, ERR_NOMEM, "cuda backend: out of device memory allocating %zu bytes for %s "
                "(%zu bytes held)", bytes, what, c->mem_cur);
        return nullptr;
    }
    c->mem_cur += n;
    if (c->mem_cur > c->mem_peak)
        c->mem_peak = c->mem_cur;
    return p;
}

void cu_free(cuda_t *c, void *p, size_t bytes)
{
    if (!p)
        return;
    cudaFree(p);
    c->mem_cur -= bytes ? bytes : 1;
}

void *cu_scratch(cuda_t *c, int slot, size_t bytes)
{
    if (c->scr_n[slot] >= bytes && c->scr[slot])
        return c->scr[slot];
    if (c->capturing) { /* growing waits for the device: not while recording */
        c->cap_bad = true;
        return nullptr;
    }
    /* the old slot may still be read by enqueued work */
    cu_check(c, cudaStreamSynchronize(c->st), "waiting to grow scratch");
    cu_free(c, c->scr[slot], c->scr_n[slot]);
    c->scr[slot] = nullptr;
    c->scr_n[slot] = 0;
    size_t n = bytes + bytes / 8; /* some headroom: shapes grow a little at a time */
    c->scr[slot] = cu_malloc(c, n, "scratch");
    c->scr_n[slot] = c->scr[slot] ? n : 0;
    return c->scr[slot];
}

static be_buf_t *cuda_buf_alloc(backend_t *be, size_t bytes, err_t *e)
{
    cuda_t *c = CU(be);
    c->gen++; /* a new buffer may reuse a freed address */
    be_buf_t *b = (be_buf_t *)err_calloc(e, 1, sizeof *b, "a device buffer");
    if (!b)
        return nullptr;
    void *p = nullptr;
    size_t n = bytes ? bytes : 1;
    cudaError_t r = cudaMalloc(&p, n);
    if (r != cudaSuccess) {
        (void)cudaGetLastError();
        free(b);
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        err_set(e, ERR_NOMEM, "cuda backend: out of device memory allocating %zu bytes "
                "(%zu bytes free of %zu): %s", bytes, fr, tot, cudaGetErrorString(r));
        return nullptr;
    }
    c->mem_cur += n;
    if (c->mem_cur > c->mem_peak)
        c->mem_peak = c->mem_cur;
    b->size = bytes;
    b->d = (unsigned char *)p;
    return b;
}

static void cuda_buf_free(backend_t *be, be_buf_t *b)
{
    cuda_t *c = CU(be);
    c->gen++;
    /* work still enqueued may use it */
    cudaStreamSynchronize(c->st);
    cu_free(c, b->d, b->size);
    free(b);
}

static size_t cuda_buf_size(const be_buf_t *b) { return b->size; }
static void *cuda_host_addr(backend_t *be, be_ptr_t p) { return nullptr; }

static bool in_range(cuda_t *c, be_ptr_t p, size_t bytes, const char *what)
{
    if (!p.buf || p.off > p.buf->size || bytes > p.buf->size - p.off) {
        cu_fail(c, ERR_FAIL, "cuda backend: %s of %zu bytes outside its buffer", what, bytes);
        return false;
    }
    return true;
}

static void cuda_upload(backend_t *be, be_ptr_t dst, const void *src, size_t bytes)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (bytes && in_range(c, dst, bytes, "upload"))
        cu_check(c, cudaMemcpyAsync(vptr(dst), src, bytes, cudaMemcpyHostToDevice, c->st), "upload");
}

static void cuda_download(backend_t *be, void *dst, be_ptr_t src, size_t bytes)
{
    cuda_t *c = CU(be);
    if (bytes && in_range(c, src, bytes, "download") &&
        cu_check(c, cudaMemcpyAsync(dst, vptr(src), bytes, cudaMemcpyDeviceToHost, c->st), "download"))
        cu_check(c, cudaStreamSynchronize(c->st), "download");
}

static void cuda_copy(backend_t *be, be_ptr_t dst, be_ptr_t src, size_t bytes)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (bytes && in_range(c, dst, bytes, "copy") && in_range(c, src, bytes, "copy"))
        cu_check(c, cudaMemcpyAsync(vptr(dst), vptr(src), bytes, cudaMemcpyDeviceToDevice, c->st),
                 "copy");
}

static void cuda_copy2d(backend_t *be, be_ptr_t dst, size_t dpitch, be_ptr_t src, size_t spitch,
                        size_t width, size_t rows)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (!rows || !width)
        return;
    if (!in_range(c, dst, dpitch * (rows - 1) + width, "copy2d") ||
        !in_range(c, src, spitch * (rows - 1) + width, "copy2d"))
        return;
    cu_check(c, cudaMemcpy2DAsync(vptr(dst), dpitch, vptr(src), spitch, width, rows,
                                  cudaMemcpyDeviceToDevice, c->st), "copy2d");
}

static void cuda_zero(backend_t *be, be_ptr_t dst, size_t bytes)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (bytes && in_range(c, dst, bytes, "zero"))
        cu_check(c, cudaMemsetAsync(vptr(dst), 0, bytes, c->st), "zero");
}

static int cuda_sync(backend_t *be, err_t *e)
{
    cuda_t *c = CU(be);
    cu_check(c, cudaStreamSynchronize(c->st), "synchronizing");
    if (!c->err_code)
        return ERR_OK;
    int code = c->err_code;
    err_set(e, code, "%s", c->err_msg);
    c->err_code = 0;
    c->err_msg[0] = 0;
    return code;
}

/* ---- GEMM through cuBLASLt -------------------------------------------------------------- */

struct gemm_plan {
    int dt, ta, tb, m, n, k;
    long lda, ldb, ldc;
    int beta1, al_a, al_b, al_c, bias; /* bias: the bias epilogue (one value per row of C') */
    bool ok;                           /* false: cuBLASLt has no algorithm for it */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
};

static size_t dt_size(int dt) { return dt == DT_F32 ? 4 : 2; }
static cudaDataType_t dt_cuda(int dt)
{
    return dt == DT_F32 ? CUDA_R_32F : dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_16F;
}

static int align_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a & (uintptr_t)(al - 1)))
        al >>= 1;
    return al;
}

static bool lt_ok(cuda_t *c, cublasStatus_t s, const char *what)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return true;
    cu_fail(c, ERR_FAIL, "cuda backend: cuBLASLt %s failed (status %d)", what, (int)s);
    return false;
}

static void plan_destroy(gemm_plan_t *p)
{
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    if (p->la)
        cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb)
        cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc)
        cublasLtMatrixLayoutDestroy(p->lc);
}

/* The cached descriptors and algorithm of one column-major problem
 * C' (m x n) = op(A') (m x k) . op(B') (k x n) + beta C'. */
static gemm_plan_t *plan_get(cuda_t *c, int dt, int ta, int tb, int m, int n, int k, long lda,
                             long ldb, long ldc, int beta1, int al_a, int al_b, int al_c, int bias)
{
    for (int i = 0; i < c->nplans; i++) {
        gemm_plan_t *p = &c->plans[i];
        if (p->dt == dt && p->ta == ta && p->tb == tb && p->m == m && p->n == n && p->k == k &&
            p->lda == lda && p->ldb == ldb && p->ldc == ldc && p->beta1 == beta1 &&
            p->al_a == al_a && p->al_b == al_b && p->al_c == al_c && p->bias == bias)
            return p;
    }
    if (c->nplans == c->cap_plans) {
        int cap = c->cap_plans ? 2 * c->cap_plans : 64;
        gemm_plan_t *np = (gemm_plan_t *)realloc(c->plans, (size_t)cap * sizeof *np);
        if (!np) {
            cu_fail(c, ERR_NOMEM, "cuda backend: out of memory for GEMM plans");
            return nullptr;
        }
        c->plans = np;
        c->cap_plans = cap;
    }
    gemm_plan_t p;
    memset(&p, 0, sizeof p);
    p.dt = dt, p.ta = ta, p.tb = tb, p.m = m, p.n = n, p.k = k;
    p.lda = lda, p.ldb = ldb, p.ldc = ldc, p.beta1 = beta1;
    p.al_a = al_a, p.al_b = al_b, p.al_c = al_c, p.bias = bias;
    cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t t = dt_cuda(dt);
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    uint64_t ws = c->ws_size;
    uint32_t aa = (uint32_t)al_a, ab = (uint32_t)al_b, ac = (uint32_t)al_c;
    bool ok = lt_ok(c, cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc") &&
              lt_ok(c, cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &oa, sizeof oa), "transa") &&
              lt_ok(c, cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &ob, sizeof ob), "transb") &&
              lt_ok(c, cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), "epilogue") &&
              lt_ok(c, cublasLtMatrixLayoutCreate(&p.la, t, ta ? k : m, ta ? m : k, lda), "layout A") &&
              lt_ok(c, cublasLtMatrixLayoutCreate(&p.lb, t, tb ? n : k, tb ? k : n, ldb), "layout B") &&
              lt_ok(c, cublasLtMatrixLayoutCreate(&p.lc, CUDA_R_32F, m, n, ldc), "layout C") &&
              lt_ok(c, cublasLtMatmulPreferenceCreate(&pref), "preference") &&
              lt_ok(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), "workspace") &&
              lt_ok(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa), "align A") &&
              lt_ok(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab), "align B") &&
              lt_ok(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac), "align C") &&
              lt_ok(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac), "align D") &&
              lt_ok(c, cublasLtMatmulAlgoGetHeuristic(c->lt, p.op, p.la, p.lb, p.lc, p.lc, pref, 1, &res, &nres), "heuristic");
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (ok && nres < 1 && bias) {
        /* no algorithm with the bias epilogue: remember that, the caller adds the bias */
        plan_destroy(&p);
        memset(&p.op, 0, sizeof p - offsetof(gemm_plan_t, op));
        p.ok = false;
        c->plans[c->nplans] = p;
        return &c->plans[c->nplans++];
    }
    if (ok && nres < 1) {
        cu_fail(c, ERR_FAIL, "cuda backend: cuBLASLt has no algorithm for a %s GEMM m %d n %d k %d "
                "(trans %d%d, ld %ld %ld %ld, alignment %d %d %d)",
                dt == DT_F32 ? "fp32" : dt == DT_BF16 ? "bf16" : "fp16", m, n, k, ta, tb, lda, ldb,
                ldc, al_a, al_b, al_c);
        ok = false;
    }
    if (!ok) {
        plan_destroy(&p);
        return nullptr;
    }
    p.algo = res.algo;
    p.ok = true;
    c->plans[c->nplans] = p;
    return &c->plans[c->nplans++];
}

/* Row-major C (m x n) = op(A) . op(B) + beta C (+ bias (n), when given); A is (m x k) or,
 * transposed, stored (k x m); B is (k x n) or stored (n x k); lda/ldb/ldc are row strides
 * in elements. The bias goes through cuBLASLt's epilogue where it has an algorithm for
 * it, else through a separate pass. */
static void gemm_rm(cuda_t *c, int dt, bool ta, bool tb, int m, int n, int k, const void *A,
                    long lda, const void *B, long ldb, float *C, long ldc, float beta,
                    const float *bias = nullptr)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) { /* an empty sum */
        if (beta == 0.0f)
            cu_check(c, cudaMemset2DAsync(C, (size_t)ldc * 4, 0, (size_t)n * 4, (size_t)m, c->st),
                     "empty GEMM");
        return;
    }
    /* column-major: C^T (n x m) = op(B)^T . op(A)^T, i.e. A' = B with B's flag, B' = A */
    gemm_plan_t *p = plan_get(c, dt, tb, ta, n, m, k, ldb, lda, ldc, beta != 0.0f, align_of(B),
                              align_of(A), align_of(C), bias != nullptr);
    if (p && !p->ok) { /* bias epilogue unavailable: GEMM, then the bias */
        gemm_rm(c, dt, ta, tb, m, n, k, A, lda, B, ldb, C, ldc, beta);
        if (ldc == n)
            cu_epilogue(c, C, C, bias, m, n, beta != 0.0f, PREC_COMPUTE_FP32);
        else
            cu_fail(c, ERR_FAIL, "cuda backend: a bias needs a dense output");
        return;
    }
    if (!p)
        return;
    const float alpha = 1.0f;
    if (bias && !lt_ok(c, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                         &bias, sizeof bias), "bias pointer"))
        return;
    lt_ok(c, cublasLtMatmul(c->lt, p->op, &alpha, B, p->la, A, p->lb, &beta, C, p->lc, C, p->lc,
                            &p->algo, c->ws, c->ws_size, c->st), "matmul");
}

/* The same with the float32 product rounded to `ct` (fp16) before it is stored or added,
 * as the CPU emulation does: through a float32 scratch, in row chunks of at most 64 MiB. */
static void gemm_rounded(cuda_t *c, int dt, bool ta, bool tb, int m, int n, int k, const void *A,
                         long lda, const void *B, long ldb, float *C, long ldc, bool acc,
                         const float *bias, prec_compute_t ct)
{
    if (m <= 0 || n <= 0)
        return;
    size_t rows = ((size_t)64 << 20) / ((size_t)n * 4);
    rows = rows < 1 ? 1 : rows > (size_t)m ? (size_t)m : rows;
    float *T = (float *)cu_scratch(c, CS_T, rows * (size_t)n * 4);
    if (!T)
        return;
    const size_t es = dt_size(dt);
    for (size_t r0 = 0; r0 < (size_t)m; r0 += rows) {
        int mr = (int)((size_t)m - r0 < rows ? (size_t)m - r0 : rows);
        const unsigned char *Ar = (const unsigned char *)A + (ta ? r0 : r0 * (size_t)lda) * es;
        gemm_rm(c, dt, ta, tb, mr, n, k, Ar, lda, B, ldb, T, n, 0.0f);
        if (ldc == n) {
            cu_epilogue(c, C + r0 * (size_t)ldc, T, bias, mr, n, acc, ct);
        } else {
            cu_fail(c, ERR_FAIL, "cuda backend: rounded GEMM needs a dense output");
            return;
        }
    }
}

/* ---- quantized operands and the weight cache --------------------------------------------- */

typedef struct wentry {
    bool valid;
    uint64_t version, stream;
    mx_spec_t spec;
    prec_compute_t compute;
    int dt;
    void *d;
    size_t bytes; /* allocated */
    size_t n;
} wentry_t;

/* Entry 0: forward copy (blocks along K); entry 1: backward (along N), or shared; dec: the
 * packed decode copy (cuda_gemv.cu). */
struct be_wcache {
    wentry_t e[2];
    mxg_cache_t *mx; /* tensor-core copies (cuda_mxgemm.cu) */
    cu_dentry_t *dec;
};

cu_dentry_t **cu_wcache_dslot(be_wcache_t *wc) { return &wc->dec; }

/* The storage class an operand needs after quantization and compute rounding. */
static int op_class(const mx_spec_t *s, prec_compute_t ct)
{
    if (ct == PREC_COMPUTE_BF16)
        return DT_BF16;
    if (ct == PREC_COMPUTE_FP16)
        return DT_F16;
    if (mx_format_info(s->format)->is_mx || s->format == MX_BF16)
        return DT_BF16;
    if (s->format == MX_FP16)
        return DT_F16;
    return DT_F32;
}

static int gemm_type(const mx_spec_t *s1, const mx_spec_t *s2, prec_compute_t ct)
{
    int a = op_class(s1, ct), b = op_class(s2, ct);
    return a == b ? a : DT_F32;
}

/* An activation operand (rows, cols) prepared for a GEMM of type dt, in scratch `slot`
 * (or `in` itself when nothing is to be done); reused when the slot already holds it. */
static const void *prepare(cuda_t *c, int slot, const float *in, size_t rows, size_t cols,
                           mx_axis_t axis, const mx_spec_t *s, prec_compute_t ct, uint64_t seed,
                           uint64_t stream, int dt)
{
    if (dt == DT_F32 && mx_spec_is_identity(s) && ct == PREC_COMPUTE_FP32)
        return in;
    const bool mx = mx_format_info(s->format)->is_mx;
    const bool sr = mx && s->round == MX_ROUND_STOCHASTIC;
    const int ax = mx ? (int)axis : 0; /* casts do not depend on the axis */
    const size_t bytes = rows * cols * dt_size(dt);
    prep_rec_t *r = &c->rec[slot];
    if (r->valid && r->gen == c->gen && r->src == in && r->rows == rows && r->cols == cols &&
        r->axis == ax && r->dt == dt && mx_spec_equal(&r->spec, s) && r->ct == ct &&
        (!sr || (r->seed == seed && r->stream == stream)) && c->scr[slot] && c->scr_n[slot] >= bytes)
        return c->scr[slot];
    r->valid = false;
    void *buf = cu_scratch(c, slot, bytes);
    if (!buf)
        return nullptr;
    cu_prepare(c, buf, dt, in, rows, cols, axis, s, ct, seed, stream);
    prep_rec_t nr = {true, c->gen, in, rows, cols, ax, dt, *s, ct, seed, stream};
    *r = nr;
    return buf;
}

/* a linear layer wrote [p, p + bytes): records prepared from there are stale */
static void written(cuda_t *c, const void *p, size_t bytes)
{
    if (!p)
        return;
    const uintptr_t a0 = (uintptr_t)p, a1 = a0 + bytes;
    for (int slot = CS_XA; slot <= CS_XB; slot++) {
        prep_rec_t *r = &c->rec[slot];
        const uintptr_t b0 = (uintptr_t)r->src, b1 = b0 + r->rows * r->cols * sizeof(float);
        if (r->valid && a0 < b1 && b0 < a1)
            r->valid = false;
    }
    cu_mxg_written(c, p, bytes);
}

static bool entry_matches(const wentry_t *en, const be_linear_t *a, const mx_spec_t *s,
                          uint64_t stream, int dt, size_t n)
{
    bool sr = s->round == MX_ROUND_STOCHASTIC && mx_format_info(s->format)->is_mx;
    return en->valid && en->version == a->wversion && mx_spec_equal(&en->spec, s) &&
           en->compute == a->compute && en->dt == dt && en->n == n && (!sr || en->stream == stream);
}

static void entry_release(cuda_t *c, wentry_t *en)
{
    if (en->d) {
        cudaStreamSynchronize(c->st);
        cu_free(c, en->d, en->bytes);
    }
    en->d = nullptr;
    en->bytes = 0;
    en->valid = false;
}

/* The weight (N, K) prepared for axis `axis` and GEMM type dt. */
static const void *weight(cuda_t *c, const be_linear_t *a, mx_axis_t axis, int dt, int slot)
{
    const float *w = fptr(a->w);
    prec_operand_t op = axis == MX_AXIS_ROW ? PREC_OP_WEIGHT : PREC_OP_WEIGHT_BP;
    const mx_spec_t *s = &a->spec[op];
    const size_t n = (size_t)a->N * a->K;
    const uint64_t stream = a->stream + op;
    if (dt == DT_F32 && mx_spec_is_identity(s) && a->compute == PREC_COMPUTE_FP32)
        return w;
    if (!a->wcache)
        return prepare(c, slot, w, a->N, a->K, axis, s, a->compute, a->seed, stream, dt);
    wentry_t *en = &a->wcache->e[axis == MX_AXIS_ROW ? 0 : 1];
    if (entry_matches(en, a, s, stream, dt, n))
        return en->d;
    if (c->capturing) { /* a new copy is not built while recording (cuda_decode.cu) */
        c->cap_bad = true;
        return nullptr;
    }
    if (axis == MX_AXIS_COL && !mx_format_info(s->format)->is_mx &&
        entry_matches(&a->wcache->e[0], a, s, stream, dt, n)) {
        /* a plain cast does not depend on the axis: share the forward copy */
        entry_release(c, en);
        return a->wcache->e[0].d;
    }
    size_t bytes = n * dt_size(dt);
    if (en->bytes != bytes) {
        entry_release(c, en);
        en->d = cu_malloc(c, bytes, "a quantized weight");
        if (!en->d)
            return nullptr;
        en->bytes = bytes;
    }
    cu_prepare(c, en->d, dt, w, a->N, a->K, axis, s, a->compute, a->seed, stream);
    c->wbuilt = true;
    en->valid = true;
    en->version = a->wversion;
    en->spec = *s;
    en->compute = a->compute;
    en->dt = dt;
    en->n = n;
    en->stream = stream;
    return en->d;
}

static be_wcache_t *cuda_wcache_new(backend_t *be, err_t *e)
{
    return (be_wcache_t *)err_calloc(e, 1, sizeof(be_wcache_t), "a weight cache");
}

static void cuda_wcache_free(backend_t *be, be_wcache_t *wc)
{
    entry_release(CU(be), &wc->e[0]);
    entry_release(CU(be), &wc->e[1]);
    cu_mxg_cache_free(CU(be), wc->mx);
    cu_dentry_free(CU(be), wc->dec);
    free(wc);
}

static size_t cuda_wcache_bytes(const be_wcache_t *wc)
{
    return wc->e[0].bytes + wc->e[1].bytes + cu_mxg_cache_bytes(wc->mx) + cu_dentry_bytes(wc->dec);
}

void cu_weight_mxg(cuda_t *c, const be_linear_t *a)
{
    cu_mxg_prepare(c, a, a->wcache ? &a->wcache->mx : nullptr);
}

const void *cu_weight_fwd(cuda_t *c, const be_linear_t *a, int dt)
{
    return weight(c, a, MX_AXIS_ROW, dt, CS_XB);
}

const void *cu_weight_gemm(cuda_t *c, const be_linear_t *a)
{
    return weight(c, a, MX_AXIS_ROW, gemm_type(&a->spec[PREC_OP_INPUT], &a->spec[PREC_OP_WEIGHT],
                                               a->compute), CS_XB);
}

/* ---- linear --------------------------------------------------------------------------------- */

static void cuda_linear_fwd(backend_t *be, const be_linear_t *a, be_ptr_t yp, bool acc)
{
    if (!cu_dec_linear_hook(CU(be), a, yp, acc)) /* small M, packed weights: cuda_gemv.cu */
        cu_linear_gemm(CU(be), a, yp, acc);
}

void cu_linear_gemm(cuda_t *c, const be_linear_t *a, be_ptr_t yp, bool acc)
{
    const int M = a->M, N = a->N, K = a->K;
    if (M <= 0 || N <= 0)
        return;
    if (cu_mxg_linear_fwd(c, a, a->wcache ? &a->wcache->mx : nullptr, fptr(yp), acc)) {
        written(c, vptr(yp), (size_t)M * N * sizeof(float)); /* on the tensor cores */
        return;
    }
    const prec_compute_t ct = a->compute;
    const int dt = gemm_type(&a->spec[PREC_OP_INPUT], &a->spec[PREC_OP_WEIGHT], ct);
    const void *x = prepare(c, CS_XA, fptr(a->x), M, K, MX_AXIS_ROW, &a->spec[PREC_OP_INPUT], ct,
                            a->seed, a->stream + PREC_OP_INPUT, dt);
    const void *w = weight(c, a, MX_AXIS_ROW, dt, CS_XB);
    float *y = fptr(yp);
    if (!x || !w)
        return;
    if (ct == PREC_COMPUTE_FP16) {
        gemm_rounded(c, dt, false, true, M, N, K, x, K, w, K, y, N, acc, fptr(a->b), ct);
        written(c, y, (size_t)M * N * sizeof(float));
        return;
    }
    gemm_rm(c, dt, false, true, M, N, K, x, K, w, K, y, N, acc ? 1.0f : 0.0f,
            be_null(a->b) ? nullptr : fptr(a->b));
    written(c, y, (size_t)M * N * sizeof(float));
}

static void cuda_linear_bwd(backend_t *be, const be_linear_t *a, be_ptr_t dyp, be_ptr_t dxp,
                            bool dx_acc, be_ptr_t dwp, be_ptr_t dbp)
{
    cuda_t *c = CU(be);
    const int M = a->M, N = a->N, K = a->K;
    const float *dy = fptr(dyp);
    const prec_compute_t ct = a->compute;
    if (M <= 0 || N <= 0)
        return;
    const mx_spec_t *sgx = &a->spec[PREC_OP_GRAD_OUTPUT_DX], *sgw = &a->spec[PREC_OP_GRAD_OUTPUT_DW];
    const void *gx = nullptr;
    int dtx = -1;
    if (!be_null(dxp) &&
        !cu_mxg_linear_dx(c, a, a->wcache ? &a->wcache->mx : nullptr, dy, fptr(dxp), dx_acc)) {
        dtx = gemm_type(sgx, &a->spec[PREC_OP_WEIGHT_BP], ct);
        gx = prepare(c, CS_XA, dy, M, N, MX_AXIS_ROW, sgx, ct, a->seed,
                     a->stream + PREC_OP_GRAD_OUTPUT_DX, dtx);
        const void *w = weight(c, a, MX_AXIS_COL, dtx, CS_XB);
        float *dx = fptr(dxp);
        if (!gx || !w)
            return;
        if (ct == PREC_COMPUTE_FP16)
            gemm_rounded(c, dtx, false, false, M, K, N, gx, N, w, K, dx, K, dx_acc, nullptr, ct);
        else
            gemm_rm(c, dtx, false, false, M, K, N, gx, N, w, K, dx, K, dx_acc ? 1.0f : 0.0f);
    }
    if (!be_null(dwp) && !cu_mxg_linear_dw(c, a, dy, fptr(dwp))) {
        const int dtw = gemm_type(sgw, &a->spec[PREC_OP_INPUT_BP], ct);
        /* the dx operand serves again when its quantization does not depend on the axis */
        const void *g = (gx && dtw == dtx && mx_spec_equal(sgx, sgw) &&
                         (!mx_format_info(sgx->format)->is_mx))
                            ? gx
                            : prepare(c, CS_XA, dy, M, N, MX_AXIS_COL, sgw, ct, a->seed,
                                      a->stream + PREC_OP_GRAD_OUTPUT_DW, dtw);
        const void *x = prepare(c, CS_XB, fptr(a->x), M, K, MX_AXIS_COL, &a->spec[PREC_OP_INPUT_BP],
                                ct, a->seed, a->stream + PREC_OP_INPUT_BP, dtw);
        float *dw = fptr(dwp);
        if (!g || !x)
            return;
        if (ct == PREC_COMPUTE_FP16)
            gemm_rounded(c, dtw, true, false, N, K, M, g, N, x, K, dw, K, true, nullptr, ct);
        else
            gemm_rm(c, dtw, true, false, N, K, M, g, N, x, K, dw, K, 1.0f);
    }
    if (!be_null(dbp))
        cu_colsum_acc(c, fptr(dbp), dy, M, N, ct);
    written(c, vptr(dxp), (size_t)M * K * sizeof(float));
    written(c, vptr(dwp), (size_t)N * K * sizeof(float));
    written(c, vptr(dbp), (size_t)N * sizeof(float));
}

/* ---- life ------------------------------------------------------------------------------------ */

static void cuda_destroy(backend_t *be)
{
    cuda_t *c = CU(be);
    cudaStreamSynchronize(c->st);
    cu_dnn_close(c);
    cu_mxg_close(c);
    for (int i = 0; i < c->nplans; i++)
        plan_destroy(&c->plans[i]);
    free(c->plans);
    for (int i = 0; i < CS_COUNT; i++)
        cu_free(c, c->scr[i], c->scr_n[i]);
    cu_free(c, c->dec_cnt, c->dec_cnt_n * sizeof(int));
    cu_free(c, c->ws, c->ws_size);
    if (c->lt)
        cublasLtDestroy(c->lt);
    if (c->st)
        cudaStreamDestroy(c->st);
    free(c);
}

static void cuda_mem(backend_t *be, be_mem_t *out, bool reset_peak)
{
    cuda_t *c = CU(be);
    if (reset_peak)
        c->mem_peak = c->mem_cur;
    out->current = c->mem_cur;
    out->peak = c->mem_peak;
}

/* 16-bit types and fp32 run on the tensor cores as they are; an MX pair natively where the
 * MX GEMM dispatch maps it (be_cuda_mxgemm_native) and it is switched on; a decoding step's
 * linear layer where packed decoding is on and be_dec_native accepts its specs. */
static bool cuda_native(backend_t *be, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct,
                        bool decode)
{
    if (decode)
        return CU(be)->dec_mode == BE_CUDA_DEC_PACKED && be_dec_native(a, b, ct);
    if (!mx_format_info(a->format)->is_mx && !mx_format_info(b->format)->is_mx)
        return true;
    return cu_mxg_native(CU(be), a, b, ct);
}

static const be_ops_t cuda_ops = {
    "cuda",
    cuda_destroy,
    cuda_buf_alloc,
    cuda_buf_free,
    cuda_buf_size,
    cuda_host_addr,
    cuda_upload,
    cuda_download,
    cuda_copy,
    cuda_copy2d,
    cuda_zero,
    cuda_sync,
    cuda_wcache_new,
    cuda_wcache_free,
    cuda_wcache_bytes,
    cuda_linear_fwd,
    cuda_linear_bwd,
    cuda_op_rmsnorm_fwd,
    cuda_op_rmsnorm_bwd,
    cuda_op_rope,
    cuda_op_attn_fwd,
    cuda_op_attn_bwd,
    cuda_op_swiglu_fwd,
    cuda_op_swiglu_bwd,
    cuda_op_embed_fwd,
    cuda_op_embed_bwd,
    cuda_op_logsoftmax_gather,
    cuda_op_entropy,
    cuda_op_logits_bwd,
    cuda_op_adamw,
    cuda_op_sumsq,
    cuda_op_scale,
    cuda_op_sample,
    cuda_op_fake_quant,
    cuda_op_linear_prepare,
    cuda_op_dec_weight,
    cuda_op_dec_linear,
    cuda_op_dec_attn,
    cuda_op_dec_sample,
    cuda_op_graph_begin,
    cuda_op_graph_end,
    cuda_op_graph_launch,
    cuda_op_graph_free,
    cuda_mem,
    cuda_native,
};

/* ---- the profiling table: the same ops, each timed between two synchronisations ------------- */

#include <time.h>

static const char *const PROF_NAMES[] = {
    "upload", "download", "copy", "copy2d", "zero", "linear_fwd", "linear_bwd", "rmsnorm_fwd",
    "rmsnorm_bwd", "rope", "attn_fwd", "attn_bwd", "swiglu_fwd", "swiglu_bwd", "embed_fwd",
    "embed_bwd", "logsoftmax_gather", "entropy", "logits_bwd", "adamw", "sumsq", "scale",
    "sample", "fake_quant", "linear_prepare", "dec_weight", "dec_linear", "dec_attn",
    "dec_sample", "graph_launch"};
enum { PR_COUNT = sizeof PROF_NAMES / sizeof PROF_NAMES[0] };

static double prof_begin(cuda_t *c)
{
    cudaStreamSynchronize(c->st);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void prof_end(cuda_t *c, int i, double t0)
{
    cudaStreamSynchronize(c->st);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    c->prof_t[i] += ts.tv_sec + ts.tv_nsec * 1e-9 - t0;
    c->prof_n[i]++;
}

#define PROF(i, call)                                                                    \
    do {                                                                                 \
        cuda_t *pc = CU(be);                                                             \
        double t0 = prof_begin(pc);                                                      \
        call;                                                                            \
        prof_end(pc, i, t0);                                                             \
    } while (0)

static void p_upload(backend_t *be, be_ptr_t d, const void *s, size_t n) { PROF(0, cuda_upload(be, d, s, n)); }
static void p_download(backend_t *be, void *d, be_ptr_t s, size_t n) { PROF(1, cuda_download(be, d, s, n)); }
static void p_copy(backend_t *be, be_ptr_t d, be_ptr_t s, size_t n) { PROF(2, cuda_copy(be, d, s, n)); }
static void p_copy2d(backend_t *be, be_ptr_t d, size_t dp, be_ptr_t s, size_t sp, size_t w, size_t r)
{
    PROF(3, cuda_copy2d(be, d, dp, s, sp, w, r));
}
static void p_zero(backend_t *be, be_ptr_t d, size_t n) { PROF(4, cuda_zero(be, d, n)); }
static void p_linear_fwd(backend_t *be, const be_linear_t *a, be_ptr_t y, bool acc)
{
    PROF(5, cuda_linear_fwd(be, a, y, acc));
}
static void p_linear_bwd(backend_t *be, const be_linear_t *a, be_ptr_t dy, be_ptr_t dx, bool xa,
                         be_ptr_t dw, be_ptr_t db)
{
    PROF(6, cuda_linear_bwd(be, a, dy, dx, xa, dw, db));
}
static void p_rmsnorm_fwd(backend_t *be, be_ptr_t y, be_ptr_t r, be_ptr_t x, be_ptr_t w, int N, int C, float eps)
{
    PROF(7, cuda_op_rmsnorm_fwd(be, y, r, x, w, N, C, eps));
}
static void p_rmsnorm_bwd(backend_t *be, be_ptr_t dx, bool xa, be_ptr_t dw, be_ptr_t dy, be_ptr_t x,
                          be_ptr_t w, be_ptr_t r, int N, int C)
{
    PROF(8, cuda_op_rmsnorm_bwd(be, dx, xa, dw, dy, x, w, r, N, C));
}
static void p_rope(backend_t *be, be_ptr_t x, be_ptr_t pos, be_ptr_t ct, be_ptr_t st, int N, int nh,
                   int D, bool inv)
{
    PROF(9, cuda_op_rope(be, x, pos, ct, st, N, nh, D, inv));
}
static void p_attn_fwd(backend_t *be, const be_attn_t *a) { PROF(10, cuda_op_attn_fwd(be, a)); }
static void p_attn_bwd(backend_t *be, const be_attn_t *a, be_ptr_t o, be_ptr_t q, be_ptr_t k, be_ptr_t v)
{
    PROF(11, cuda_op_attn_bwd(be, a, o, q, k, v));
}
static void p_swiglu_fwd(backend_t *be, be_ptr_t o, be_ptr_t g, be_ptr_t u, size_t n)
{
    PROF(12, cuda_op_swiglu_fwd(be, o, g, u, n));
}
static void p_swiglu_bwd(backend_t *be, be_ptr_t dg, be_ptr_t du, be_ptr_t d, be_ptr_t g, be_ptr_t u,
                         size_t n)
{
    PROF(13, cuda_op_swiglu_bwd(be, dg, du, d, g, u, n));
}
static void p_embed_fwd(backend_t *be, be_ptr_t o, be_ptr_t t, be_ptr_t ids, int N, int C)
{
    PROF(14, cuda_op_embed_fwd(be, o, t, ids, N, C));
}
static void p_embed_bwd(backend_t *be, be_ptr_t dt, be_ptr_t d, be_ptr_t ids, int N, int C, int V)
{
    PROF(15, cuda_op_embed_bwd(be, dt, d, ids, N, C, V));
}
static void p_lsg(backend_t *be, be_ptr_t lp, be_ptr_t lse, be_ptr_t l, be_ptr_t ids, int N, int V)
{
    PROF(16, cuda_op_logsoftmax_gather(be, lp, lse, l, ids, N, V));
}
static void p_entropy(backend_t *be, be_ptr_t ent, be_ptr_t l, be_ptr_t lse, int N, int V)
{
    PROF(17, cuda_op_entropy(be, ent, l, lse, N, V));
}
static void p_logits_bwd(backend_t *be, be_ptr_t dl, be_ptr_t l, be_ptr_t lse, be_ptr_t ent,
                         be_ptr_t ids, be_ptr_t dlp, be_ptr_t den, int N, int V)
{
    PROF(18, cuda_op_logits_bwd(be, dl, l, lse, ent, ids, dlp, den, N, V));
}
static void p_adamw(backend_t *be, be_ptr_t p, be_ptr_t g, be_ptr_t m, be_ptr_t v, size_t n,
                    const be_adamw_t *h)
{
    PROF(19, cuda_op_adamw(be, p, g, m, v, n, h));
}
static double p_sumsq(backend_t *be, be_ptr_t x, size_t n)
{
    double r = 0;
    PROF(20, r = cuda_op_sumsq(be, x, n));
    return r;
}
static void p_scale(backend_t *be, be_ptr_t x, float a, size_t n) { PROF(21, cuda_op_scale(be, x, a, n)); }
static void p_sample(backend_t *be, be_ptr_t o, be_ptr_t l, size_t ld, int B, int V, const be_sample_t *s)
{
    PROF(22, cuda_op_sample(be, o, l, ld, B, V, s));
}
static void p_fake_quant(backend_t *be, be_ptr_t o, be_ptr_t i, size_t r, size_t cc, mx_axis_t ax,
                         const mx_spec_t *sp, uint64_t seed, uint64_t st)
{
    PROF(23, cuda_op_fake_quant(be, o, i, r, cc, ax, sp, seed, st));
}
static void p_linear_prepare(backend_t *be, const be_linear_t *a) { PROF(24, cuda_op_linear_prepare(be, a)); }
static void p_dec_weight(backend_t *be, const be_linear_t *a, be_ptr_t o)
{
    PROF(25, cuda_op_dec_weight(be, a, o));
}
static void p_dec_linear(backend_t *be, const be_dec_linear_t *a) { PROF(26, cuda_op_dec_linear(be, a)); }
static void p_dec_attn(backend_t *be, const be_dec_attn_t *a) { PROF(27, cuda_op_dec_attn(be, a)); }
static void p_dec_sample(backend_t *be, const be_dec_sample_t *a) { PROF(28, cuda_op_dec_sample(be, a)); }
static void p_graph_launch(backend_t *be, be_graph_t *g) { PROF(29, cuda_op_graph_launch(be, g)); }

static const be_ops_t cuda_prof_ops = {
    "cuda",
    cuda_destroy,
    cuda_buf_alloc,
    cuda_buf_free,
    cuda_buf_size,
    cuda_host_addr,
    p_upload,
    p_download,
    p_copy,
    p_copy2d,
    p_zero,
    cuda_sync,
    cuda_wcache_new,
    cuda_wcache_free,
    cuda_wcache_bytes,
    p_linear_fwd,
    p_linear_bwd,
    p_rmsnorm_fwd,
    p_rmsnorm_bwd,
    p_rope,
    p_attn_fwd,
    p_attn_bwd,
    p_swiglu_fwd,
    p_swiglu_bwd,
    p_embed_fwd,
    p_embed_bwd,
    p_lsg,
    p_entropy,
    p_logits_bwd,
    p_adamw,
    p_sumsq,
    p_scale,
    p_sample,
    p_fake_quant,
    p_linear_prepare,
    p_dec_weight,
    p_dec_linear,
    p_dec_attn,
    p_dec_sample,
    cuda_op_graph_begin,
    cuda_op_graph_end,
    p_graph_launch,
    cuda_op_graph_free,
    cuda_mem,
    cuda_native,
};

extern "C" bool be_cuda_built(void) { return true; }

extern "C" int be_cuda_open(backend_t **out, err_t *e) { return be_cuda_open_device(0, out, e); }

extern "C" int be_cuda_open_device(int dev, backend_t **out, err_t *e)
{
    *out = nullptr;
    int n = 0;
    cudaError_t r = cudaGetDeviceCount(&n);
    if (r != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        return err_set(e, ERR_UNAVAILABLE, "device \"cuda\": no usable GPU (%s)",
                       r != cudaSuccess ? cudaGetErrorString(r) : "no CUDA device found");
    }
    if (dev < 0 || dev >= n)
        return err_set(e, ERR_UNAVAILABLE, "device \"cuda:%d\": there are %d GPU(s), cuda:0 to "
                       "cuda:%d", dev, n, n - 1);
    cuda_t *c = (cuda_t *)err_calloc(e, 1, sizeof *c, "the cuda backend");
    if (!c)
        return e->code;
    c->dev = dev;
    c->attn = BE_CUDA_ATTN_FAST;
    const char *am = getenv("MXRLHF_CUDA_ATTN");
    if (am && !strcmp(am, "exact"))
        c->attn = BE_CUDA_ATTN_EXACT;
    else if (am && !strcmp(am, "tf32"))
        c->attn = BE_CUDA_ATTN_TF32;
    else if (am && !strcmp(am, "accurate"))
        c->attn = BE_CUDA_ATTN_ACCURATE;
    else if (am && !strcmp(am, "tiles"))
        c->attn = BE_CUDA_ATTN_TILES;
    else if (am && !strcmp(am, "fast-nondet"))
        c->attn = BE_CUDA_ATTN_FAST_NONDET;
    const char *dm = getenv("MXRLHF_CUDA_DECODE"), *gm = getenv("MXRLHF_CUDA_GRAPH"),
               *pm = getenv("MXRLHF_CUDA_PDL");
    c->dec_mode = dm && !strcmp(dm, "emulated") ? BE_CUDA_DEC_EMULATED : BE_CUDA_DEC_PACKED;
    c->graphs = !(gm && !strcmp(gm, "0"));
    c->pdl = !(pm && !strcmp(pm, "0"));
    const char *xc = getenv("MXRLHF_CUDA_GEMV_XCOST"); /* ns an element, for A/B runs */
    c->gemv_xcost = xc && *xc ? atof(xc) * 1e-3 : DL_XCOST_US;
    cudaRuntimeGetVersion(&c->runtime_version);
    cudaDriverGetVersion(&c->driver_version);
    cublasStatus_t ls = CUBLAS_STATUS_SUCCESS;
    if ((r = cudaSetDevice(c->dev)) != cudaSuccess ||
        (r = cudaGetDeviceProperties(&c->prop, c->dev)) != cudaSuccess ||
        (r = cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking)) != cudaSuccess) {
        err_set(e, ERR_UNAVAILABLE, "device \"cuda\": cannot start the GPU: %s", cudaGetErrorString(r));
        goto fail;
    }
    if (c->prop.major < 8) {
        err_set(e, ERR_UNAVAILABLE, "device \"cuda\": %s has compute capability %d.%d; this build "
                "needs 9.0 (H100/H200)", c->prop.name, c->prop.major, c->prop.minor);
        goto fail;
    }
    if ((ls = cublasLtCreate(&c->lt)) != CUBLAS_STATUS_SUCCESS) {
        err_set(e, ERR_UNAVAILABLE, "device \"cuda\": cuBLASLt did not start (status %d)", (int)ls);
        goto fail;
    }
    c->ws_size = (size_t)32 << 20;
    c->ws = cu_malloc(c, c->ws_size, "the cuBLASLt workspace");
    if (!c->ws) {
        err_set(e, ERR_NOMEM, "%s", c->err_msg);
        goto fail;
    }
    cu_mxg_init(c);
    cu_dnn_open(c);
    c->be.ops = &cuda_ops;
    c->be.impl = c;
    *out = &c->be;
    return ERR_OK;
fail:
    if (c->lt)
        cublasLtDestroy(c->lt);
    if (c->st)
        cudaStreamDestroy(c->st);
    free(c);
    return e->code;
}

cuda_t *as_cuda(backend_t *be, err_t *e)
{
    if (!be || (be->ops != &cuda_ops && be->ops != &cuda_prof_ops)) {
        err_set(e, ERR_INPUT, "not a cuda backend (%s)", be_name(be));
        return nullptr;
    }
    return CU(be);
}

cuda_t *cu_backend(backend_t *be, err_t *e) { return as_cuda(be, e); }

extern "C" int be_cuda_info(backend_t *be, be_cuda_info_t *out, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", c->prop.name);
    out->cc_major = c->prop.major;
    out->cc_minor = c->prop.minor;
    out->sms = c->prop.multiProcessorCount;
    out->total_mem = c->prop.totalGlobalMem;
    out->runtime_version = c->runtime_version;
    out->driver_version = c->driver_version;
    return ERR_OK;
}

extern "C" int be_cuda_mem(backend_t *be, be_cuda_mem_t *out, err_t *e)
{
    if (!as_cuda(be, e))
        return e->code;
    be_mem_t m = be_mem(be);
    out->current = m.current;
    out->peak = m.peak;
    return ERR_OK;
}

extern "C" void be_cuda_mem_reset_peak(backend_t *be)
{
    if (be && (be->ops == &cuda_ops || be->ops == &cuda_prof_ops))
        be_mem_reset_peak(be);
}

extern "C" int be_cuda_set_attn(backend_t *be, be_cuda_attn_t mode, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    c->attn = mode;
    return ERR_OK;
}

extern "C" int be_cuda_profile(backend_t *be, bool on, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    if (on) {
        memset(c->prof_t, 0, sizeof c->prof_t);
        memset(c->prof_n, 0, sizeof c->prof_n);
    }
    c->be.ops = on ? &cuda_prof_ops : &cuda_ops;
    c->profiling = on;
    return ERR_OK;
}

extern "C" int be_cuda_set_decode(backend_t *be, be_cuda_dec_t mode, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    c->dec_mode = mode;
    return ERR_OK;
}

extern "C" int be_cuda_set_graphs(backend_t *be, bool on, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    c->graphs = on;
    return ERR_OK;
}

extern "C" const char *be_cuda_decode_note(backend_t *be)
{
    err_t e = ERR_INIT;
    cuda_t *c = as_cuda(be, &e);
    return c ? c->dec_note : "";
}

extern "C" void be_cuda_profile_print(backend_t *be, FILE *f)
{
    err_t e = ERR_INIT;
    cuda_t *c = as_cuda(be, &e);
    if (!c)
        return;
    int idx[PR_COUNT];
    double total = 0;
    for (int i = 0; i < PR_COUNT; i++) {
        idx[i] = i;
        total += c->prof_t[i];
    }
    for (int i = 1; i < PR_COUNT; i++) /* largest first */
        for (int j = i; j > 0 && c->prof_t[idx[j]] > c->prof_t[idx[j - 1]]; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    fprintf(f, "  %-18s %10s %6s %8s %10s\n", "op", "ms", "%", "calls", "us/call");
    for (int k = 0; k < PR_COUNT; k++) {
        int i = idx[k];
        if (!c->prof_n[i])
            continue;
        fprintf(f, "  %-18s %10.2f %5.1f%% %8ld %10.1f\n", PROF_NAMES[i], c->prof_t[i] * 1e3,
                total > 0 ? 100 * c->prof_t[i] / total : 0.0, c->prof_n[i],
                c->prof_t[i] / c->prof_n[i] * 1e6);
    }
    fprintf(f, "  %-18s %10.2f\n", "total", total * 1e3);
}
