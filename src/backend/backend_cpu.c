/* backend_cpu: the readable reference backend. float32, OpenMP loops, OpenBLAS sgemm.
 *
 * What it is: each op written as the math reads, parallel over rows (or heads) with
 * OpenMP, GEMMs through cblas_sgemm. What it deliberately is not: fast kernels, fused
 * ops or intrinsics; the CUDA backend is where speed goes, and it is checked against this.
 *
 * Buffers are plain aligned host memory. Ops run synchronously on the calling thread
 * (and its OpenMP team), so be_sync only reports errors. Scratch memory (quantized
 * operand copies, attention score tiles, reduction partials) grows on first use and is
 * then reused: after the first step of a given shape nothing is allocated.
 *
 * OpenBLAS is the OpenMP build: sgemm called outside a parallel region uses the whole
 * OpenMP team; called inside one (attention, per head) it runs on the calling thread.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "mx/mx_pack.h"
#include "util/half.h"
#include "util/rng.h"

struct be_buf {
    size_t size;
    unsigned char *data;
};

/* One quantized copy of a weight: the key it was made for and the values. */
typedef struct wentry {
    bool valid;
    uint64_t version, stream;
    mx_spec_t spec;
    prec_compute_t compute;
    float *data;
    size_t n;
} wentry_t;

/* The decode copy of a weight with an MX forward spec: its packed codes and E8M0 scales
 * (mx_pack's layout, blocks along K) and the float32 values they decode to, which
 * be_dec_linear multiplies (rounded to the compute type as be_linear_fwd's operand). */
typedef struct dentry {
    bool valid;
    uint64_t version, stream;
    mx_spec_t spec;
    prec_compute_t compute;
    uint8_t *codes, *scales;
    size_t ncodes, nscales;
    float *w;
    size_t n;
} dentry_t;

/* Entry 0 holds the forward copy (blocks along K), entry 1 the backward one (along N);
 * d the decode copy. */
struct be_wcache {
    wentry_t e[2];
    dentry_t d;
};

/* SCR_G, SCR_U: a fused decode op's gate and up outputs; SCR_Q, SCR_K: its rotated q, k */
enum { SCR_A, SCR_B, SCR_C, SCR_D, SCR_RED, SCR_G, SCR_U, SCR_Q, SCR_K, SCR_COUNT };

typedef struct cpu {
    backend_t be;
    int err_code;
    char err_msg[512];
    float *scr[SCR_COUNT];
    size_t scr_n[SCR_COUNT];
    int nthr;
    float **tscr;      /* per-thread scratch */
    size_t *tscr_n;
    be_mem_t mem;      /* bytes in buffers */
} cpu_t;

static cpu_t *CPU(backend_t *be) { return (cpu_t *)be->impl; }

/* Loops over less work than this run on the calling thread: waking the team costs more
 * than it saves (decoding one token is hundreds of tiny ops), and on a busy machine
 * every barrier can wait for a descheduled thread. */
#define PAR_MIN ((size_t)1 << 14)

static void fail(cpu_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(cpu_t *c, int code, const char *fmt, ...)
{
    if (c->err_code)
        return;
    c->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err_msg, sizeof c->err_msg, fmt, ap);
    va_end(ap);
}

static void *vp(be_ptr_t p) { return p.buf ? p.buf->data + p.off : NULL; }
static float *fp32(be_ptr_t p) { return (float *)vp(p); }
static int32_t *ip32(be_ptr_t p) { return (int32_t *)vp(p); }

static float *aligned_floats(size_t n)
{
    size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

/* Scratch slot `i` with room for n floats; NULL (and a sticky error) if memory ran out. */
static float *scratch(cpu_t *c, int i, size_t n)
{
    if (c->scr_n[i] < n) {
        free(c->scr[i]);
        c->scr[i] = aligned_floats(n);
        c->scr_n[i] = c->scr[i] ? n : 0;
        if (!c->scr[i]) {
            fail(c, ERR_NOMEM, "cpu backend: out of memory for %zu floats of scratch", n);
            return NULL;
        }
    }
    return c->scr[i];
}

/* Makes every thread's scratch at least n floats (called before a parallel region). */
static bool tscratch(cpu_t *c, size_t n)
{
    int want = omp_get_max_threads();
    if (want > c->nthr) {
        float **ts = realloc(c->tscr, (size_t)want * sizeof *ts);
        if (ts)
            c->tscr = ts;
        size_t *tn = ts ? realloc(c->tscr_n, (size_t)want * sizeof *tn) : NULL;
        if (!tn) {
            fail(c, ERR_NOMEM, "cpu backend: out of memory for thread scratch");
            return false;
        }
        c->tscr_n = tn;
        for (int t = c->nthr; t < want; t++) {
            c->tscr[t] = NULL;
            c->tscr_n[t] = 0;
        }
        c->nthr = want;
    }
    for (int t = 0; t < c->nthr; t++) {
        if (c->tscr_n[t] >= n)
            continue;
        free(c->tscr[t]);
        c->tscr[t] = aligned_floats(n);
        c->tscr_n[t] = c->tscr[t] ? n : 0;
        if (!c->tscr[t]) {
            fail(c, ERR_NOMEM, "cpu backend: out of memory for %zu floats of thread scratch", n);
            return false;
        }
    }
    return true;
}

/* ---- memory ------------------------------------------------------------------------ */

static be_buf_t *cpu_buf_alloc(backend_t *be, size_t bytes, err_t *e)
{
    be_buf_t *b = err_calloc(e, 1, sizeof *b, "a device buffer");
    if (!b)
        return NULL;
    size_t n = ((bytes ? bytes : 1) + 63) & ~(size_t)63;
    b->data = aligned_alloc(64, n);
    if (!b->data) {
        free(b);
        err_set(e, ERR_NOMEM, "cpu backend: out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    b->size = bytes;
    cpu_t *c = CPU(be);
    c->mem.current += n;
    c->mem.peak = c->mem.current > c->mem.peak ? c->mem.current : c->mem.peak;
    return b;
}

static void cpu_buf_free(backend_t *be, be_buf_t *b)
{
    CPU(be)->mem.current -= ((b->size ? b->size : 1) + 63) & ~(size_t)63;
    free(b->data);
    free(b);
}

static void cpu_mem(backend_t *be, be_mem_t *out, bool reset_peak)
{
    cpu_t *c = CPU(be);
    if (reset_peak)
        c->mem.peak = c->mem.current;
    *out = c->mem;
}

static bool cpu_native(backend_t *be, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct,
                       bool decode)
{
    return ct == PREC_COMPUTE_FP32 && a->format == MX_FP32 && b->format == MX_FP32;
}

static size_t cpu_buf_size(const be_buf_t *b) { return b->size; }
static void *cpu_host_addr(backend_t *be, be_ptr_t p) { return vp(p); }

static bool in_range(cpu_t *c, be_ptr_t p, size_t bytes, const char *what)
{
    if (!p.buf || p.off > p.buf->size || bytes > p.buf->size - p.off) {
        fail(c, ERR_FAIL, "cpu backend: %s of %zu bytes outside its buffer", what, bytes);
        return false;
    }
    return true;
}

static void cpu_upload(backend_t *be, be_ptr_t dst, const void *src, size_t bytes)
{
    if (bytes && in_range(CPU(be), dst, bytes, "upload"))
        memcpy(vp(dst), src, bytes);
}

static void cpu_download(backend_t *be, void *dst, be_ptr_t src, size_t bytes)
{
    if (bytes && in_range(CPU(be), src, bytes, "download"))
        memcpy(dst, vp(src), bytes);
}

static void cpu_copy(backend_t *be, be_ptr_t dst, be_ptr_t src, size_t bytes)
{
    if (bytes && in_range(CPU(be), dst, bytes, "copy") && in_range(CPU(be), src, bytes, "copy"))
        memmove(vp(dst), vp(src), bytes);
}

static void cpu_copy2d(backend_t *be, be_ptr_t dst, size_t dpitch, be_ptr_t src, size_t spitch,
                       size_t width, size_t rows)
{
    if (!rows || !width)
        return;
    if (!in_range(CPU(be), dst, dpitch * (rows - 1) + width, "copy2d") ||
        !in_range(CPU(be), src, spitch * (rows - 1) + width, "copy2d"))
        return;
    unsigned char *d = vp(dst);
    const unsigned char *s = vp(src);
    for (size_t r = 0; r < rows; r++)
        memmove(d + r * dpitch, s + r * spitch, width);
}

static void cpu_zero(backend_t *be, be_ptr_t dst, size_t bytes)
{
    if (bytes && in_range(CPU(be), dst, bytes, "zero"))
        memset(vp(dst), 0, bytes);
}

static int cpu_sync(backend_t *be, err_t *e)
{
    cpu_t *c = CPU(be);
    if (!c->err_code)
        return ERR_OK;
    int code = c->err_code;
    err_set(e, code, "%s", c->err_msg);
    c->err_code = 0;
    c->err_msg[0] = 0;
    return code;
}

/* ---- quantization helpers ------------------------------------------------------------ */

static void round_compute(float *x, size_t n, prec_compute_t t)
{
    if (t == PREC_COMPUTE_BF16) {
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            x[i] = half_bf16_to_f32(half_f32_to_bf16(x[i]));
    } else if (t == PREC_COMPUTE_FP16) {
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
        for (size_t i = 0; i < n; i++)
            x[i] = half_f16_to_f32(half_f32_to_f16(x[i]));
    }
}

/* out = fake_quant(in) over a (rows, cols) matrix with blocks along `axis`: the MX library
 * splits the work over the OpenMP threads on block boundaries, bit-identical to one
 * whole-matrix call (stochastic rounding included). */
static void quant(float *out, const float *in, size_t rows, size_t cols, mx_axis_t axis,
                  const mx_spec_t *s, uint64_t seed, uint64_t stream)
{
    if (mx_spec_is_identity(s)) {
        if (out != in)
            memcpy(out, in, rows * cols * sizeof *out);
        return;
    }
    mx_fake_quant_parallel(in, out, rows, cols, axis, s, seed, stream, 0);
}

/* An operand prepared for a GEMM: quantized by spec, rounded to compute. Returns `in`
 * itself when nothing is to be done, else `buf` filled. */
static const float *prepare(float *buf, const float *in, size_t rows, size_t cols,
                            mx_axis_t axis, const mx_spec_t *s, prec_compute_t ct,
                            uint64_t seed, uint64_t stream)
{
    if (mx_spec_is_identity(s) && ct == PREC_COMPUTE_FP32)
        return in;
    if (!buf)
        return NULL;
    quant(buf, in, rows, cols, axis, s, seed, stream);
    round_compute(buf, rows * cols, ct);
    return buf;
}

/* The weight (N, K) prepared for axis `axis`, from the cache when the key matches. */
static const float *weight(cpu_t *c, const be_linear_t *a, mx_axis_t axis, int scr)
{
    const float *w = fp32(a->w);
    prec_operand_t op = axis == MX_AXIS_ROW ? PREC_OP_WEIGHT : PREC_OP_WEIGHT_BP;
    const mx_spec_t *s = &a->spec[op];
    size_t n = (size_t)a->N * a->K;
    uint64_t stream = a->stream + op;
    if (mx_spec_is_identity(s) && a->compute == PREC_COMPUTE_FP32)
        return w;
    if (!a->wcache)
        return prepare(scratch(c, scr, n), w, a->N, a->K, axis, s, a->compute, a->seed, stream);
    wentry_t *en = &a->wcache->e[axis == MX_AXIS_ROW ? 0 : 1];
    bool sr = s->round == MX_ROUND_STOCHASTIC && mx_format_info(s->format)->is_mx;
    if (en->valid && en->version == a->wversion && mx_spec_equal(&en->spec, s) &&
        en->compute == a->compute && en->n == n && (!sr || en->stream == stream))
        return en->data;
    if (en->n != n) {
        free(en->data);
        en->data = aligned_floats(n);
        en->n = en->data ? n : 0;
        if (!en->data) {
            en->valid = false;
            fail(c, ERR_NOMEM, "cpu backend: out of memory caching a %dx%d weight", a->N, a->K);
            return NULL;
        }
    }
    prepare(en->data, w, a->N, a->K, axis, s, a->compute, a->seed, stream);
    en->valid = true;
    en->version = a->wversion;
    en->spec = *s;
    en->compute = a->compute;
    en->stream = stream;
    return en->data;
}

static be_wcache_t *cpu_wcache_new(backend_t *be, err_t *e)
{
    return err_calloc(e, 1, sizeof(be_wcache_t), "a weight cache");
}

static void cpu_wcache_free(backend_t *be, be_wcache_t *wc)
{
    free(wc->e[0].data);
    free(wc->e[1].data);
    free(wc->d.codes);
    free(wc->d.scales);
    free(wc->d.w);
    free(wc);
}

static size_t cpu_wcache_bytes(const be_wcache_t *wc)
{
    return (wc->e[0].n + wc->e[1].n + wc->d.n) * sizeof(float) + wc->d.ncodes + wc->d.nscales;
}

/* ---- GEMM --------------------------------------------------------------------------- */

/* C (M, N) = alpha op(A) op(B) + beta C, row-major, as cblas_sgemm, but bit-identical for any
 * thread count. OpenBLAS splits one GEMM across its threads in ways that change the
 * summation order of edge tiles (measured on an AMD EPYC: 1 and 2 threads differ in the last
 * bits for most shapes, so the phase sweep's 1- and 3-worker runs disagreed). Here the output
 * is cut into fixed panels (DET_ROWS rows when M is large, else DET_COLS columns), each panel
 * one OpenBLAS call made inside an active OpenMP region, where OpenBLAS-OpenMP runs on the
 * calling thread alone: which thread computes a panel never changes its bits. */
#define DET_ROWS 64
#define DET_COLS 512

static void det_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    const bool by_rows = M >= 2 * DET_ROWS;
    const int step = by_rows ? DET_ROWS : DET_COLS, len = by_rows ? M : N;
    const int np = (len + step - 1) / step;
    int nt = omp_get_max_threads();
    nt = nt < 2 ? 1 : nt < np ? nt : np < 2 ? 2 : np; /* >= 2 threads keep the region active */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int p = 0; p < np; p++) {
        const int o = p * step, n = len - o < step ? len - o : step;
        if (by_rows) /* rows o.. of op(A) and C */
            cblas_sgemm(CblasRowMajor, ta, tb, n, N, K, alpha,
                        ta == CblasNoTrans ? A + (size_t)o * lda : A + o, lda, B, ldb, beta,
                        C + (size_t)o * ldc, ldc);
        else /* columns o.. of op(B) and C */
            cblas_sgemm(CblasRowMajor, ta, tb, M, n, K, alpha, A, lda,
                        tb == CblasNoTrans ? B + o : B + (size_t)o * ldb, ldb, beta, C + o, ldc);
    }
}

/* ---- linear ------------------------------------------------------------------------ */

/* y (M, N) (+)= linear(xin) with the weight operand w already prepared (be_linear_fwd's
 * definition; a->x is not read). */
static void linear_run(cpu_t *c, const be_linear_t *a, const float *xin, const float *w,
                       float *y, bool acc)
{
    const int M = a->M, N = a->N, K = a->K;
    if (M <= 0 || N <= 0)
        return;
    const float *x = prepare(scratch(c, SCR_A, (size_t)M * K), xin, M, K, MX_AXIS_ROW,
                             &a->spec[PREC_OP_INPUT], a->compute, a->seed,
                             a->stream + PREC_OP_INPUT);
    bool direct = !acc && a->compute == PREC_COMPUTE_FP32;
    float *t = direct ? y : scratch(c, SCR_C, (size_t)M * N);
    if (!x || !w || !t)
        return;
    det_sgemm(CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, t, N);
    const float *b = fp32(a->b);
    if (b) {
#pragma omp parallel for schedule(static) if((size_t)M * N > PAR_MIN)
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                t[(size_t)m * N + n] += b[n];
    }
    if (direct)
        return;
    round_compute(t, (size_t)M * N, a->compute);
    size_t total = (size_t)M * N;
    if (acc) {
#pragma omp parallel for schedule(static) if(total > PAR_MIN)
        for (size_t i = 0; i < total; i++)
            y[i] += t[i];
    } else {
        memcpy(y, t, total * sizeof *y);
    }
}

static void cpu_linear_fwd(backend_t *be, const be_linear_t *a, be_ptr_t yp, bool acc)
{
    cpu_t *c = CPU(be);
    if (a->M <= 0 || a->N <= 0)
        return;
    linear_run(c, a, fp32(a->x), weight(c, a, MX_AXIS_ROW, SCR_B), fp32(yp), acc);
}

/* Column sums of dy (M, N) into db, += ; fixed chunks of rows, combined in order. */
#define RED_ROWS 64
static void colsum_acc(cpu_t *c, float *db, const float *dy, int M, int N)
{
    int nch = (M + RED_ROWS - 1) / RED_ROWS;
    float *part = scratch(c, SCR_RED, (size_t)nch * N);
    if (!part)
        return;
#pragma omp parallel for schedule(static) if((size_t)M * N > PAR_MIN)
    for (int ch = 0; ch < nch; ch++) {
        float *p = part + (size_t)ch * N;
        memset(p, 0, (size_t)N * sizeof *p);
        int m1 = (ch + 1) * RED_ROWS < M ? (ch + 1) * RED_ROWS : M;
        for (int m = ch * RED_ROWS; m < m1; m++)
            for (int n = 0; n < N; n++)
                p[n] += dy[(size_t)m * N + n];
    }
#pragma omp parallel for schedule(static) if((size_t)M * N > PAR_MIN)
    for (int n = 0; n < N; n++) {
        float s = 0;
        for (int ch = 0; ch < nch; ch++)
            s += part[(size_t)ch * N + n];
        db[n] += s;
    }
}

static void cpu_linear_bwd(backend_t *be, const be_linear_t *a, be_ptr_t dyp, be_ptr_t dxp,
                           bool dx_acc, be_ptr_t dwp, be_ptr_t dbp)
{
    cpu_t *c = CPU(be);
    const int M = a->M, N = a->N, K = a->K;
    const float *dy = fp32(dyp);
    const prec_compute_t ct = a->compute;
    if (M <= 0 || N <= 0)
        return;
    if (!be_null(dxp)) {
        const float *g = prepare(scratch(c, SCR_A, (size_t)M * N), dy, M, N, MX_AXIS_ROW,
                                 &a->spec[PREC_OP_GRAD_OUTPUT_DX], ct, a->seed,
                                 a->stream + PREC_OP_GRAD_OUTPUT_DX);
        const float *w = weight(c, a, MX_AXIS_COL, SCR_B);
        float *dx = fp32(dxp);
        bool direct = ct == PREC_COMPUTE_FP32;
        float *t = direct ? dx : scratch(c, SCR_C, (size_t)M * K);
        if (!g || !w || !t)
            return;
        det_sgemm(CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, g, N, w, K,
                    direct && dx_acc ? 1.0f : 0.0f, t, K);
        if (!direct) {
            size_t total = (size_t)M * K;
            round_compute(t, total, ct);
            if (dx_acc) {
#pragma omp parallel for schedule(static) if(total > PAR_MIN)
                for (size_t i = 0; i < total; i++)
                    dx[i] += t[i];
            } else {
                memcpy(dx, t, total * sizeof *dx);
            }
        }
    }
    if (!be_null(dwp)) {
        const float *g = prepare(scratch(c, SCR_A, (size_t)M * N), dy, M, N, MX_AXIS_COL,
                                 &a->spec[PREC_OP_GRAD_OUTPUT_DW], ct, a->seed,
                                 a->stream + PREC_OP_GRAD_OUTPUT_DW);
        const float *x = prepare(scratch(c, SCR_B, (size_t)M * K), fp32(a->x), M, K, MX_AXIS_COL,
                                 &a->spec[PREC_OP_INPUT_BP], ct, a->seed,
                                 a->stream + PREC_OP_INPUT_BP);
        float *dw = fp32(dwp);
        bool direct = ct == PREC_COMPUTE_FP32;
        float *t = direct ? dw : scratch(c, SCR_C, (size_t)N * K);
        if (!g || !x || !t)
            return;
        det_sgemm(CblasTrans, CblasNoTrans, N, K, M, 1.0f, g, N, x, K,
                    direct ? 1.0f : 0.0f, t, K);
        if (!direct) {
            size_t total = (size_t)N * K;
            round_compute(t, total, ct);
#pragma omp parallel for schedule(static) if(total > PAR_MIN)
            for (size_t i = 0; i < total; i++)
                dw[i] += t[i];
        }
    }
    if (!be_null(dbp)) {
        const float *g = dy;
        if (ct != PREC_COMPUTE_FP32) {
            float *r = scratch(c, SCR_A, (size_t)M * N);
            if (!r)
                return;
            memcpy(r, dy, (size_t)M * N * sizeof *r);
            round_compute(r, (size_t)M * N, ct);
            g = r;
        }
        colsum_acc(c, fp32(dbp), g, M, N);
    }
}

/* ---- RMSNorm --------------------------------------------------------------------------- */

static void cpu_rmsnorm_fwd(backend_t *be, be_ptr_t yp, be_ptr_t rp, be_ptr_t xp, be_ptr_t wp,
                            int N, int C, float eps)
{
    float *y = fp32(yp), *rs = fp32(rp);
    const float *x = fp32(xp), *w = fp32(wp);
#pragma omp parallel for schedule(static) if((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * C;
        double ss = 0;
        for (int i = 0; i < C; i++)
            ss += (double)xr[i] * xr[i];
        float r = 1.0f / sqrtf((float)(ss / C) + eps);
        if (rs)
            rs[n] = r;
        float *yr = y + (size_t)n * C;
        for (int i = 0; i < C; i++)
            yr[i] = w[i] * (xr[i] * r);
    }
}

static void cpu_rmsnorm_bwd(backend_t *be, be_ptr_t dxp, bool dx_acc, be_ptr_t dwp, be_ptr_t dyp,
                            be_ptr_t xp, be_ptr_t wp, be_ptr_t rp, int N, int C)
{
    cpu_t *c = CPU(be);
    float *dx = fp32(dxp), *dw = fp32(dwp);
    const float *dy = fp32(dyp), *x = fp32(xp), *w = fp32(wp), *rs = fp32(rp);
    if (dx) {
#pragma omp parallel for schedule(static) if((size_t)N * C > PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (size_t)n * C, *gr = dy + (size_t)n * C;
            float r = rs[n];
            double dot = 0;
            for (int i = 0; i < C; i++)
                dot += (double)gr[i] * w[i] * xr[i];
            float k = (float)(dot / C) * r * r * r;
            float *o = dx + (size_t)n * C;
            for (int i = 0; i < C; i++) {
                float v = r * (gr[i] * w[i]) - k * xr[i];
                o[i] = dx_acc ? o[i] + v : v;
            }
        }
    }
    if (dw) {
        int nch = (N + RED_ROWS - 1) / RED_ROWS;
        float *part = scratch(c, SCR_RED, (size_t)nch * C);
        if (!part)
            return;
#pragma omp parallel for schedule(static) if((size_t)N * C > PAR_MIN)
        for (int ch = 0; ch < nch; ch++) {
            float *p = part + (size_t)ch * C;
            memset(p, 0, (size_t)C * sizeof *p);
            int n1 = (ch + 1) * RED_ROWS < N ? (ch + 1) * RED_ROWS : N;
            for (int n = ch * RED_ROWS; n < n1; n++)
                for (int i = 0; i < C; i++)
                    p[i] += dy[(size_t)n * C + i] * (x[(size_t)n * C + i] * rs[n]);
        }
#pragma omp parallel for schedule(static) if((size_t)N * C > PAR_MIN)
        for (int i = 0; i < C; i++) {
            float s = 0;
            for (int ch = 0; ch < nch; ch++)
                s += part[(size_t)ch * C + i];
            dw[i] += s;
        }
    }
}

/* ---- RoPE --------------------------------------------------------------------------------- */

static void cpu_rope(backend_t *be, be_ptr_t xp, be_ptr_t posp, be_ptr_t cp, be_ptr_t sp, int N,
                     int nheads, int D, bool inverse)
{
    float *x = fp32(xp);
    const int32_t *pos = ip32(posp);
    const float *ct = fp32(cp), *st = fp32(sp);
    const int h = D / 2;
    const size_t row = (size_t)nheads * D;
#pragma omp parallel for schedule(static) if((size_t)N * nheads * D > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *cr = ct + (size_t)pos[n] * h, *sr = st + (size_t)pos[n] * h;
        for (int hd = 0; hd < nheads; hd++) {
            float *v = x + (size_t)n * row + (size_t)hd * D;
            for (int i = 0; i < h; i++) {
                float a = v[i], b = v[i + h], cs = cr[i], sn = inverse ? -sr[i] : sr[i];
                v[i] = a * cs - b * sn;
                v[i + h] = b * cs + a * sn;
            }
        }
    }
}

/* ---- attention ---------------------------------------------------------------------------- */

/* Keys query (b, i) sees: [lo, hi]; empty when lo > hi. */
static inline void visible(const be_attn_t *a, const int32_t *padl, int b, int i, int *lo, int *hi)
{
    *lo = padl[b] > 0 ? padl[b] : 0;
    int h = a->q0 + i;
    *hi = h < a->Tk - 1 ? h : a->Tk - 1;
}

static void cpu_attn_fwd(backend_t *be, const be_attn_t *a)
{
    cpu_t *c = CPU(be);
    const int B = a->B, Tq = a->Tq, H = a->H, D = a->D, grp = a->H / a->Hkv;
    /* keys after the last query's position are never seen */
    const int Tk = a->Tk < a->q0 + Tq ? a->Tk : a->q0 + Tq;
    const size_t qrow = (size_t)H * D;
    const float *q = fp32(a->q), *k = fp32(a->k), *v = fp32(a->v);
    float *out = fp32(a->out), *lse = fp32(a->lse);
    const int32_t *padl = ip32(a->pad_left);
    if (Tk <= 0 || !tscratch(c, (size_t)Tq * Tk))
        return;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if((size_t)B * H * Tq * Tk * D > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int hh = 0; hh < H; hh++) {
            float *S = c->tscr[omp_get_thread_num()];
            const int g = hh / grp;
            const float *Q = q + (size_t)b * Tq * qrow + (size_t)hh * D;
            const float *K = k + b * a->kv_sb + g * a->kv_sh;
            const float *V = v + b * a->kv_sb + g * a->kv_sh;
            float *O = out + (size_t)b * Tq * qrow + (size_t)hh * D;
            det_sgemm(CblasNoTrans, CblasTrans, Tq, Tk, D, a->scale, Q,
                        (int)qrow, K, (int)a->kv_st, 0.0f, S, Tk);
            for (int i = 0; i < Tq; i++) {
                float *s = S + (size_t)i * Tk;
                int lo, hi;
                visible(a, padl, b, i, &lo, &hi);
                if (lo > hi) {
                    memset(s, 0, (size_t)Tk * sizeof *s);
                    if (lse)
                        lse[((size_t)b * H + hh) * Tq + i] = -INFINITY;
                    continue;
                }
                float mx = -INFINITY;
                for (int j = lo; j <= hi; j++)
                    mx = s[j] > mx ? s[j] : mx;
                double sum = 0;
                for (int j = lo; j <= hi; j++) {
                    float e = expf(s[j] - mx);
                    s[j] = e;
                    sum += e;
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < Tk; j++)
                    s[j] = (j >= lo && j <= hi) ? s[j] * inv : 0.0f;
                if (lse)
                    lse[((size_t)b * H + hh) * Tq + i] = mx + (float)log(sum);
            }
            det_sgemm(CblasNoTrans, CblasNoTrans, Tq, D, Tk, 1.0f, S, Tk, V,
                        (int)a->kv_st, 0.0f, O, (int)qrow);
        }
}

static void cpu_attn_bwd(backend_t *be, const be_attn_t *a, be_ptr_t doutp, be_ptr_t dqp,
                         be_ptr_t dkp, be_ptr_t dvp)
{
    cpu_t *c = CPU(be);
    const int B = a->B, Tq = a->Tq, H = a->H, D = a->D, Hkv = a->Hkv, grp = a->H / a->Hkv;
    const int Tk = a->Tk < a->q0 + Tq ? a->Tk : a->q0 + Tq;
    const size_t qrow = (size_t)H * D;
    const float *q = fp32(a->q), *k = fp32(a->k), *v = fp32(a->v), *out = fp32(a->out), *lse = fp32(a->lse);
    const float *dout = fp32(doutp);
    float *dq = fp32(dqp), *dk = fp32(dkp), *dv = fp32(dvp);
    const int32_t *padl = ip32(a->pad_left);
    if (Tk <= 0 || !tscratch(c, 2 * (size_t)Tq * Tk + Tq))
        return;
    /* one task per (batch row, KV head): the heads of a group add into the same dK, dV,
     * in head order, so no two threads touch the same gradient */
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if((size_t)B * H * Tq * Tk * D > PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < Hkv; g++) {
            float *Pm = c->tscr[omp_get_thread_num()];
            float *dS = Pm + (size_t)Tq * Tk, *Di = dS + (size_t)Tq * Tk;
            const float *K = k + b * a->kv_sb + g * a->kv_sh;
            const float *V = v + b * a->kv_sb + g * a->kv_sh;
            float *dK = dk + b * a->kv_sb + g * a->kv_sh;
            float *dV = dv + b * a->kv_sb + g * a->kv_sh;
            for (int j = 0; j < a->Tk; j++) {
                memset(dK + j * a->kv_st, 0, (size_t)D * sizeof(float));
                memset(dV + j * a->kv_st, 0, (size_t)D * sizeof(float));
            }
            for (int hh = g * grp; hh < (g + 1) * grp; hh++) {
                const size_t base = (size_t)b * Tq * qrow + (size_t)hh * D;
                const float *Q = q + base, *O = out + base, *dO = dout + base;
                float *dQ = dq + base;
                const float *L = lse + ((size_t)b * H + hh) * Tq;
                det_sgemm(CblasNoTrans, CblasTrans, Tq, Tk, D, a->scale, Q,
                            (int)qrow, K, (int)a->kv_st, 0.0f, Pm, Tk);
                for (int i = 0; i < Tq; i++) {
                    float *p = Pm + (size_t)i * Tk;
                    int lo, hi;
                    visible(a, padl, b, i, &lo, &hi);
                    for (int j = 0; j < Tk; j++)
                        p[j] = (lo <= hi && j >= lo && j <= hi) ? expf(p[j] - L[i]) : 0.0f;
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += (double)dO[(size_t)i * qrow + d] * O[(size_t)i * qrow + d];
                    Di[i] = (float)s;
                }
                /* dV += Pᵀ dO */
                det_sgemm(CblasTrans, CblasNoTrans, Tk, D, Tq, 1.0f, Pm, Tk, dO,
                            (int)qrow, 1.0f, dV, (int)a->kv_st);
                /* dP = dO Vᵀ, then dS = P (dP - Di) */
                det_sgemm(CblasNoTrans, CblasTrans, Tq, Tk, D, 1.0f, dO,
                            (int)qrow, V, (int)a->kv_st, 0.0f, dS, Tk);
                for (int i = 0; i < Tq; i++)
                    for (int j = 0; j < Tk; j++)
                        dS[(size_t)i * Tk + j] = Pm[(size_t)i * Tk + j] * (dS[(size_t)i * Tk + j] - Di[i]);
                /* dQ = scale dS K;  dK += scale dSᵀ Q */
                det_sgemm(CblasNoTrans, CblasNoTrans, Tq, D, Tk, a->scale, dS, Tk,
                            K, (int)a->kv_st, 0.0f, dQ, (int)qrow);
                det_sgemm(CblasTrans, CblasNoTrans, Tk, D, Tq, a->scale, dS, Tk,
                            Q, (int)qrow, 1.0f, dK, (int)a->kv_st);
            }
        }
}

/* ---- element-wise ------------------------------------------------------------------------- */

static void cpu_swiglu_fwd(backend_t *be, be_ptr_t op, be_ptr_t gp, be_ptr_t up, size_t n)
{
    float *o = fp32(op);
    const float *g = fp32(gp), *u = fp32(up);
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_swiglu_bwd(backend_t *be, be_ptr_t dgp, be_ptr_t dup, be_ptr_t dop, be_ptr_t gp,
                           be_ptr_t up, size_t n)
{
    float *dg = fp32(dgp), *du = fp32(dup);
    const float *d = fp32(dop), *g = fp32(gp), *u = fp32(up);
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        float silu = g[i] * s;
        float dd = d[i];
        du[i] = dd * silu;
        dg[i] = dd * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
    }
}

static void cpu_embed_fwd(backend_t *be, be_ptr_t op, be_ptr_t tp, be_ptr_t idp, int N, int C)
{
    float *o = fp32(op);
    const float *t = fp32(tp);
    const int32_t *ids = ip32(idp);
#pragma omp parallel for schedule(static) if((size_t)N * C > PAR_MIN)
    for (int n = 0; n < N; n++)
        memcpy(o + (size_t)n * C, t + (size_t)ids[n] * C, (size_t)C * sizeof *o);
}

static void cpu_embed_bwd(backend_t *be, be_ptr_t dtp, be_ptr_t dop, be_ptr_t idp, int N, int C,
                          int V)
{
    float *dt = fp32(dtp);
    const float *d = fp32(dop);
    const int32_t *ids = ip32(idp);
    /* split the columns, never the tokens: each table entry is summed in token order */
    const int cb = 64, nb = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if((size_t)N * C > PAR_MIN)
    for (int blk = 0; blk < nb; blk++) {
        int c0 = blk * cb, c1 = c0 + cb < C ? c0 + cb : C;
        for (int n = 0; n < N; n++) {
            if (ids[n] < 0 || ids[n] >= V)
                continue;
            float *row = dt + (size_t)ids[n] * C;
            const float *g = d + (size_t)n * C;
            for (int i = c0; i < c1; i++)
                row[i] += g[i];
        }
    }
}

/* ---- losses ------------------------------------------------------------------------------- */

static void cpu_logsoftmax_gather(backend_t *be, be_ptr_t lpp, be_ptr_t lsep, be_ptr_t lp,
                                  be_ptr_t idp, int N, int V)
{
    float *logp = fp32(lpp), *lse = fp32(lsep);
    const float *l = fp32(lp);
    const int32_t *ids = ip32(idp);
#pragma omp parallel for schedule(static) if((size_t)N * V > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *r = l + (size_t)n * V;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            mx = r[j] > mx ? r[j] : mx;
        double s = 0;
        for (int j = 0; j < V; j++)
            s += exp((double)(r[j] - mx));
        double ls = log(s);
        lse[n] = (float)(mx + ls);
        if (logp) {
            int id = ids ? ids[n] : -1;
            logp[n] = (id >= 0 && id < V) ? (float)((double)(r[id] - mx) - ls) : 0.0f;
        }
    }
}

static void cpu_entropy(backend_t *be, be_ptr_t entp, be_ptr_t lp, be_ptr_t lsep, int N, int V)
{
    float *ent = fp32(entp);
    const float *l = fp32(lp), *lse = fp32(lsep);
#pragma omp parallel for schedule(static) if((size_t)N * V > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *r = l + (size_t)n * V;
        double L = lse[n], h = 0;
        for (int j = 0; j < V; j++) {
            double z = (double)r[j] - L;
            h -= exp(z) * z;
        }
        ent[n] = (float)h;
    }
}

static void cpu_logits_bwd(backend_t *be, be_ptr_t dlp, be_ptr_t lp, be_ptr_t lsep, be_ptr_t entp,
                           be_ptr_t idp, be_ptr_t dlogpp, be_ptr_t dentp, int N, int V)
{
    float *dl = fp32(dlp);
    const float *l = fp32(lp), *lse = fp32(lsep), *ent = fp32(entp), *dlogp = fp32(dlogpp), *dent = fp32(dentp);
    const int32_t *ids = ip32(idp);
#pragma omp parallel for schedule(static) if((size_t)N * V > PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *r = l + (size_t)n * V;
        float *o = dl + (size_t)n * V;
        double L = lse[n];
        int id = ids ? ids[n] : -1;
        /* a position without a target has logp 0 by definition: no gradient through it */
        double gl = (dlogp && id >= 0 && id < V) ? dlogp[n] : 0.0, ge = dent ? dent[n] : 0.0;
        double El = (dent && ent) ? L - ent[n] : 0.0; /* E_p[logit] = lse - H */
        for (int j = 0; j < V; j++) {
            double p = exp((double)r[j] - L);
            double d = -gl * p + ge * p * (El - r[j]);
            o[j] = (float)d; /* r[j] is read before o[j] is written: aliasing is fine */
        }
        if (id >= 0 && id < V)
            o[id] = (float)(o[id] + gl);
    }
}

/* ---- optimizer ---------------------------------------------------------------------------- */

static void cpu_adamw(backend_t *be, be_ptr_t pp, be_ptr_t gp, be_ptr_t mp, be_ptr_t vp, size_t n,
                      const be_adamw_t *h)
{
    float *p = fp32(pp), *m = fp32(mp), *v = fp32(vp);
    const float *g = fp32(gp);
    const float b1 = (float)h->beta1, b2 = (float)h->beta2;
    const float decay = (float)(1.0 - h->lr * h->weight_decay);
    const double bc1 = 1.0 - pow(h->beta1, (double)h->step);
    const double bc2 = 1.0 - pow(h->beta2, (double)h->step);
    const float step_size = (float)(h->lr / bc1), bc2s = (float)sqrt(bc2), eps = (float)h->eps;
    const float gm = (float)h->grad_mul;
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * gm;
        p[i] *= decay;
        m[i] += (1.0f - b1) * (gi - m[i]);
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] -= step_size * (m[i] / (sqrtf(v[i]) / bc2s + eps));
    }
}

#define SUMSQ_CHUNK 65536
static double cpu_sumsq(backend_t *be, be_ptr_t xp, size_t n)
{
    cpu_t *c = CPU(be);
    const float *x = fp32(xp);
    size_t nch = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double *part = (double *)scratch(c, SCR_RED, 2 * nch + 2);
    if (!part)
        return NAN;
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
    for (size_t ch = 0; ch < nch; ch++) {
        size_t i1 = (ch + 1) * SUMSQ_CHUNK < n ? (ch + 1) * SUMSQ_CHUNK : n;
        double s = 0;
        for (size_t i = ch * SUMSQ_CHUNK; i < i1; i++)
            s += (double)x[i] * x[i];
        part[ch] = s;
    }
    double s = 0;
    for (size_t ch = 0; ch < nch; ch++)
        s += part[ch];
    return s;
}

static void cpu_scale(backend_t *be, be_ptr_t xp, float alpha, size_t n)
{
    float *x = fp32(xp);
#pragma omp parallel for schedule(static) if(n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] *= alpha;
}

/* ---- sampling ------------------------------------------------------------------------------ */

typedef struct cand {
    float z;
    int id;
} cand_t;

/* ascending by z; among equal z the higher id first, so the descending view breaks ties
 * toward the lower id */
static int cand_cmp(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;
    if (a->z != b->z)
        return a->z < b->z ? -1 : 1;
    return a->id > b->id ? -1 : (a->id < b->id);
}

static float kth_largest(float *t, int n, int k)
{
    /* quickselect for the element of rank n-k in ascending order */
    int lo = 0, hi = n - 1, want = n - k;
    while (lo < hi) {
        float piv = t[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (t[i] < piv)
                i++;
            while (t[j] > piv)
                j--;
            if (i <= j) {
                float s = t[i];
                t[i] = t[j];
                t[j] = s;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return t[want];
}

static void cpu_sample(backend_t *be, be_ptr_t outp, be_ptr_t lp, size_t ld, int B, int V,
                       const be_sample_t *s)
{
    cpu_t *c = CPU(be);
    int32_t *out = ip32(outp);
    const float *l = fp32(lp);
    /* per thread: z (V floats), a mask (V), candidates (2V) */
    if (!tscratch(c, (size_t)V * 4))
        return;
#pragma omp parallel for schedule(dynamic, 1) if((size_t)B * V > PAR_MIN)
    for (int b = 0; b < B; b++) {
        const float *r = l + (size_t)b * ld;
        if (!(s->temperature > 0)) {
            int best = 0;
            for (int j = 1; j < V; j++)
                if (r[j] > r[best])
                    best = j;
            out[b] = best;
            continue;
        }
        float *z = c->tscr[omp_get_thread_num()];
        float *keep = z + V;
        cand_t *cd = (cand_t *)(keep + V);
        float T = (float)s->temperature;
        for (int j = 0; j < V; j++) {
            z[j] = r[j] / T;
            keep[j] = 1.0f;
        }
        if (s->top_k > 0 && s->top_k < V) {
            float *tmp = (float *)cd; /* reuse as a plain float array */
            for (int j = 0; j < V; j++)
                tmp[j] = z[j];
            float thr = kth_largest(tmp, V, s->top_k);
            for (int j = 0; j < V; j++)
                keep[j] = z[j] >= thr ? 1.0f : 0.0f;
        }
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            if (keep[j] != 0 && z[j] > mx)
                mx = z[j];
        if (s->top_p > 0 && s->top_p < 1) {
            int nc = 0;
            double tot = 0;
            for (int j = 0; j < V; j++)
                if (keep[j] != 0) {
                    cd[nc].z = z[j];
                    cd[nc].id = j;
                    nc++;
                    tot += exp((double)z[j] - mx);
                }
            qsort(cd, (size_t)nc, sizeof *cd, cand_cmp);
            double cum = 0, cut = 1.0 - s->top_p;
            for (int i = 0; i < nc - 1; i++) {
                cum += exp((double)cd[i].z - mx) / tot;
                if (cum <= cut)
                    keep[cd[i].id] = 0.0f;
                else
                    break;
            }
        }
        double total = 0;
        for (int j = 0; j < V; j++)
            if (keep[j] != 0)
                total += exp((double)z[j] - mx);
        double u = rng_uniform_double(s->seed, s->stream + (uint64_t)b, s->index) * total;
        double run = 0;
        int pick = -1, last = -1;
        for (int j = 0; j < V; j++) {
            if (keep[j] == 0)
                continue;
            last = j;
            run += exp((double)z[j] - mx);
            if (run > u) {
                pick = j;
                break;
            }
        }
        out[b] = pick >= 0 ? pick : last; /* rounding at the very end: the last kept id */
    }
}

static void cpu_fake_quant(backend_t *be, be_ptr_t op, be_ptr_t ip, size_t rows, size_t cols,
                           mx_axis_t axis, const mx_spec_t *spec, uint64_t seed, uint64_t stream)
{
    quant(fp32(op), fp32(ip), rows, cols, axis, spec, seed, stream);
}

/* ---- decoding ------------------------------------------------------------------------------ */

/* The weight operand decoding multiplies: for an MX forward spec the values of the packed
 * decode copy (built from the float32 weight when its key is stale), otherwise the operand
 * be_linear_fwd uses. */
static const float *dec_weight_of(cpu_t *c, const be_linear_t *a)
{
    const mx_spec_t *s = &a->spec[PREC_OP_WEIGHT];
    if (!mx_format_info(s->format)->is_mx || !a->wcache)
        return weight(c, a, MX_AXIS_ROW, SCR_B);
    dentry_t *d = &a->wcache->d;
    const size_t n = (size_t)a->N * a->K;
    const uint64_t stream = a->stream + PREC_OP_WEIGHT;
    const bool sr = s->round == MX_ROUND_STOCHASTIC;
    if (d->valid && d->version == a->wversion && mx_spec_equal(&d->spec, s) &&
        d->compute == a->compute && d->n == n && (!sr || d->stream == stream))
        return d->w;
    size_t sr_, sc_;
    mx_pack_scale_shape((size_t)a->N, (size_t)a->K, MX_AXIS_ROW, s->block, &sr_, &sc_);
    const size_t nc = mx_pack_elem_bytes(s->format, n), ns = sr_ * sc_;
    d->valid = false;
    if (d->n != n || d->ncodes != nc || d->nscales != ns) {
        free(d->codes), free(d->scales), free(d->w);
        d->codes = malloc(nc ? nc : 1);
        d->scales = malloc(ns ? ns : 1);
        d->w = aligned_floats(n);
        d->n = d->ncodes = d->nscales = 0;
        if (!d->codes || !d->scales || !d->w) {
            fail(c, ERR_NOMEM, "cpu backend: out of memory packing a %dx%d weight", a->N, a->K);
            return NULL;
        }
        d->n = n, d->ncodes = nc, d->nscales = ns;
    }
    err_t e = ERR_INIT;
    if (mx_pack_encode(fp32(a->w), (size_t)a->N, (size_t)a->K, MX_AXIS_ROW, s, a->seed, stream, 0,
                       d->codes, d->scales, &e) ||
        mx_pack_decode(d->codes, d->scales, (size_t)a->N, (size_t)a->K, MX_AXIS_ROW, s->format,
                       s->block, d->w, &e)) {
        fail(c, e.code, "cpu backend: %s", e.msg);
        return NULL;
    }
    round_compute(d->w, n, a->compute);
    d->valid = true;
    d->version = a->wversion;
    d->spec = *s;
    d->compute = a->compute;
    d->stream = stream;
    return d->w;
}

static void cpu_linear_prepare(backend_t *be, const be_linear_t *a)
{
    cpu_t *c = CPU(be);
    weight(c, a, MX_AXIS_ROW, SCR_B);
    dec_weight_of(c, a);
}

static void cpu_dec_weight(backend_t *be, const be_linear_t *a, be_ptr_t out)
{
    cpu_t *c = CPU(be);
    const float *w = dec_weight_of(c, a);
    if (w && w != fp32(out))
        memcpy(fp32(out), w, (size_t)a->N * a->K * sizeof(float));
}

/* A view of host scratch as a device pointer, so that the ops above can be reused on it. */
static be_ptr_t host_ptr(be_buf_t *view, float *p, size_t n)
{
    view->size = n * sizeof *p;
    view->data = (unsigned char *)p;
    return be_ptr(view, 0);
}

static void cpu_dec_linear(backend_t *be, const be_dec_linear_t *a)
{
    cpu_t *c = CPU(be);
    const int M = a->M, K = a->K;
    if (M <= 0 || a->nlin < 1 || a->nlin > BE_DEC_MAX_LIN)
        return;
    const float *xn = fp32(a->x);
    if (!be_null(a->norm_w)) {
        float *t = scratch(c, SCR_D, (size_t)M * K);
        if (!t)
            return;
        be_buf_t v;
        cpu_rmsnorm_fwd(be, host_ptr(&v, t, (size_t)M * K), BE_NULL, a->x, a->norm_w, M, K, a->eps);
        xn = t;
    }
    for (int i = 0; i < a->nlin; i++) {
        be_linear_t l = a->lin[i];
        l.M = M, l.K = K;
        const float *w = dec_weight_of(c, &l);
        float *y = fp32(a->out[i]);
        if (a->epi == BE_DEC_SWIGLU)
            y = scratch(c, i ? SCR_U : SCR_G, (size_t)M * l.N);
        if (!w || !y)
            return;
        linear_run(c, &l, xn, w, y, a->epi == BE_DEC_RESIDUAL);
    }
    if (a->epi == BE_DEC_SWIGLU) {
        be_buf_t g, u;
        const size_t n = (size_t)M * a->lin[0].N;
        cpu_swiglu_fwd(be, a->out[0], host_ptr(&g, c->scr[SCR_G], n), host_ptr(&u, c->scr[SCR_U], n), n);
    }
}

static void cpu_dec_attn(backend_t *be, const be_dec_attn_t *a)
{
    cpu_t *c = CPU(be);
    const int B = a->B, D = a->D, qd = a->H * D, kvd = a->Hkv * D;
    const int t = ip32(a->t)[0];
    if (B <= 0 || t < 0 || t >= a->S) {
        fail(c, ERR_FAIL, "cpu backend: decoding attention at cache index %d of %d", t, a->S);
        return;
    }
    float *q = scratch(c, SCR_Q, (size_t)B * qd), *k = scratch(c, SCR_K, (size_t)B * kvd);
    if (!q || !k)
        return;
    memcpy(q, fp32(a->q), (size_t)B * qd * sizeof *q);
    memcpy(k, fp32(a->k), (size_t)B * kvd * sizeof *k);
    be_buf_t vq, vk;
    be_ptr_t pq = host_ptr(&vq, q, (size_t)B * qd), pk = host_ptr(&vk, k, (size_t)B * kvd);
    cpu_rope(be, pq, a->pos, a->cos_t, a->sin_t, B, a->H, D, false);
    cpu_rope(be, pk, a->pos, a->cos_t, a->sin_t, B, a->Hkv, D, false);
    float *kc = fp32(a->kc), *vc = fp32(a->vc);
    const float *v = fp32(a->v);
    for (int b = 0; b < B; b++) {
        const size_t at = ((size_t)b * a->S + (size_t)t) * kvd;
        memcpy(kc + at, k + (size_t)b * kvd, (size_t)kvd * sizeof *kc);
        memcpy(vc + at, v + (size_t)b * kvd, (size_t)kvd * sizeof *vc);
    }
    be_attn_t at = {
        .q = pq, .k = a->kc, .v = a->vc, .out = a->out, .lse = BE_NULL, .pad_left = a->pad_left,
        .kv_sb = (size_t)a->S * kvd, .kv_st = (size_t)kvd, .kv_sh = (size_t)D,
        .B = B, .Tq = 1, .Tk = t + 1, .H = a->H, .Hkv = a->Hkv, .D = D, .q0 = t,
        .scale = a->scale, .compute = PREC_COMPUTE_FP32,
    };
    cpu_attn_fwd(be, &at);
}

static void cpu_dec_sample(backend_t *be, const be_dec_sample_t *a)
{
    const int B = a->B, V = a->V;
    int32_t *st = ip32(a->state), *ids = ip32(a->ids), *pos = ip32(a->pos), *done = ip32(a->done),
            *len = ip32(a->len), *out = ip32(a->out);
    const int32_t *stop = ip32(a->stop);
    float *logits = fp32(a->logits), *save = fp32(a->save), *lp = fp32(a->lp),
          *olp = fp32(a->out_logp);
    const int s = st[BE_DEC_STEP];
    const bool mask = s < a->min_new && a->nstop > 0;
    if (mask)
        for (int b = 0; b < B; b++)
            for (int i = 0; i < a->nstop; i++) {
                float *l = logits + (size_t)b * a->ld + stop[i];
                save[(size_t)i * B + b] = *l;
                *l = -INFINITY;
            }
    be_sample_t sp = {a->temperature, a->top_k, a->top_p, a->seed, a->stream, (uint64_t)s};
    cpu_sample(be, a->ids, a->logits, a->ld, B, V, &sp);
    if (mask) /* back in the reverse order: a stop id listed twice gets its own logit back */
        for (int b = 0; b < B; b++)
            for (int i = a->nstop - 1; i >= 0; i--)
                logits[(size_t)b * a->ld + stop[i]] = save[(size_t)i * B + b];
    if (olp) {
        if (a->ld != (size_t)V) {
            fail(CPU(be), ERR_FAIL, "cpu backend: decoding log-probs need dense logits");
            return;
        }
        cpu_logsoftmax_gather(be, a->lp, a->lse, a->logits, a->ids, B, V);
    }
    for (int b = 0; b < B; b++) {
        if (!done[b]) {
            out[(size_t)b * a->max_new + s] = ids[b];
            if (olp)
                olp[(size_t)b * a->max_new + s] = lp[b];
            len[b] = s + 1;
            for (int i = 0; i < a->nstop && !done[b]; i++)
                done[b] = ids[b] == stop[i];
            st[BE_DEC_NDONE] += done[b];
        }
        pos[b] += 1;
    }
    st[BE_DEC_T] += 1;
    st[BE_DEC_STEP] += 1;
}

static int cpu_graph_begin(backend_t *be, err_t *e)
{
    return err_set(e, ERR_UNAVAILABLE, "cpu backend: ops run as they come (no recording)");
}

static int cpu_graph_end(backend_t *be, be_graph_t **g, err_t *e)
{
    *g = NULL;
    return err_set(e, ERR_UNAVAILABLE, "cpu backend: nothing was recorded");
}

static void cpu_graph_launch(backend_t *be, be_graph_t *g)
{
    fail(CPU(be), ERR_FAIL, "cpu backend: no graph to launch");
}

static void cpu_graph_free(backend_t *be, be_graph_t *g) {}

/* ---- life ---------------------------------------------------------------------------------- */

static void cpu_destroy(backend_t *be)
{
    cpu_t *c = CPU(be);
    for (int i = 0; i < SCR_COUNT; i++)
        free(c->scr[i]);
    for (int t = 0; t < c->nthr; t++)
        free(c->tscr[t]);
    free(c->tscr);
    free(c->tscr_n);
    free(c);
}

static const be_ops_t cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .buf_alloc = cpu_buf_alloc,
    .buf_free = cpu_buf_free,
    .buf_size = cpu_buf_size,
    .host_addr = cpu_host_addr,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .copy2d = cpu_copy2d,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .wcache_new = cpu_wcache_new,
    .wcache_free = cpu_wcache_free,
    .wcache_bytes = cpu_wcache_bytes,
    .linear_fwd = cpu_linear_fwd,
    .linear_bwd = cpu_linear_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .rope = cpu_rope,
    .attn_fwd = cpu_attn_fwd,
    .attn_bwd = cpu_attn_bwd,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .logsoftmax_gather = cpu_logsoftmax_gather,
    .entropy = cpu_entropy,
    .logits_bwd = cpu_logits_bwd,
    .adamw = cpu_adamw,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .sample = cpu_sample,
    .fake_quant = cpu_fake_quant,
    .linear_prepare = cpu_linear_prepare,
    .dec_weight = cpu_dec_weight,
    .dec_linear = cpu_dec_linear,
    .dec_attn = cpu_dec_attn,
    .dec_sample = cpu_dec_sample,
    .graph_begin = cpu_graph_begin,
    .graph_end = cpu_graph_end,
    .graph_launch = cpu_graph_launch,
    .graph_free = cpu_graph_free,
    .mem = cpu_mem,
    .native = cpu_native,
};

int be_cpu_open(backend_t **out, err_t *e)
{
    cpu_t *c = err_calloc(e, 1, sizeof *c, "the cpu backend");
    if (!c)
        return e->code;
    c->nthr = omp_get_max_threads();
    c->tscr = calloc((size_t)c->nthr, sizeof *c->tscr);
    c->tscr_n = calloc((size_t)c->nthr, sizeof *c->tscr_n);
    if (!c->tscr || !c->tscr_n) {
        free(c->tscr);
        free(c->tscr_n);
        free(c);
        return err_set(e, ERR_NOMEM, "out of memory opening the cpu backend");
    }
    c->be.ops = &cpu_ops;
    c->be.impl = c;
    *out = &c->be;
    return ERR_OK;
}
