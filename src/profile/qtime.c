/* qtime: the timing wrapper backend (qtime.h). Every op but the linear forward and the
 * weight caches is a one-line forward to the inner backend. */
#include "profile/qtime.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The wrapper must forward every op: a new op in be_ops_t has to be added here. */
_Static_assert(sizeof(be_ops_t) == sizeof(const char *) + 44 * sizeof(void (*)(void)),
               "be_ops_t changed: forward the new op in profile/qtime.c");

/* Our weight cache: the inner backend's (for pass-through calls) and one quantized copy
 * of the weight along K, keyed like the inner cache. */
struct be_wcache {
    be_wcache_t *inner;
    be_buf_t *buf;
    size_t cap;     /* floats in buf */
    bool valid;
    uint64_t version, stream;
    mx_spec_t spec;
    size_t n;
};

typedef struct qtime {
    backend_t be;          /* first: a backend_t * is a qtime_t * */
    be_ops_t ops;
    backend_t *inner;
    be_buf_t *xbuf;        /* the quantized input */
    size_t xcap;
    bool split;            /* time quantization (CPU backend); else pass everything through */
    double seconds;
    long count;
    err_t pending;         /* an error a timing sync reported, for the next be_sync */
} qtime_t;

static qtime_t *QT(backend_t *be) { return (qtime_t *)be; }
static backend_t *IN(backend_t *be) { return QT(be)->inner; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Syncs the inner backend for timing, keeping (not losing) an error it reports. */
static void tsync(qtime_t *q)
{
    err_t e = ERR_INIT;
    if (q->inner->ops->sync(q->inner, &e) && q->pending.code == ERR_OK)
        q->pending = e;
}

/* ---- pass-through ---------------------------------------------------------------- */

static void qt_destroy(backend_t *be)
{
    qtime_t *q = QT(be);
    if (q->xbuf)
        q->inner->ops->buf_free(q->inner, q->xbuf);
    free(q);
}
static be_buf_t *qt_buf_alloc(backend_t *be, size_t bytes, err_t *e)
{
    return IN(be)->ops->buf_alloc(IN(be), bytes, e);
}
static void qt_buf_free(backend_t *be, be_buf_t *b) { IN(be)->ops->buf_free(IN(be), b); }
static void *qt_host_addr(backend_t *be, be_ptr_t p) { return IN(be)->ops->host_addr(IN(be), p); }
static void qt_upload(backend_t *be, be_ptr_t dst, const void *src, size_t bytes)
{
    IN(be)->ops->upload(IN(be), dst, src, bytes);
}
static void qt_download(backend_t *be, void *dst, be_ptr_t src, size_t bytes)
{
    IN(be)->ops->download(IN(be), dst, src, bytes);
}
static void qt_copy(backend_t *be, be_ptr_t dst, be_ptr_t src, size_t bytes)
{
    IN(be)->ops->copy(IN(be), dst, src, bytes);
}
static void qt_copy2d(backend_t *be, be_ptr_t dst, size_t dpitch, be_ptr_t src, size_t spitch,
                      size_t width, size_t rows)
{
    IN(be)->ops->copy2d(IN(be), dst, dpitch, src, spitch, width, rows);
}
static void qt_zero(backend_t *be, be_ptr_t dst, size_t bytes)
{
    IN(be)->ops->zero(IN(be), dst, bytes);
}
static int qt_sync(backend_t *be, err_t *e)
{
    qtime_t *q = QT(be);
    if (q->pending.code != ERR_OK) {
        int code = q->pending.code;
        err_set(e, code, "%s", q->pending.msg);
        err_clear(&q->pending);
        err_t drop = ERR_INIT;
        q->inner->ops->sync(q->inner, &drop);
        return code;
    }
    return q->inner->ops->sync(q->inner, e);
}
static void qt_rmsnorm_fwd(backend_t *be, be_ptr_t y, be_ptr_t rstd, be_ptr_t x, be_ptr_t w,
                           int N, int C, float eps)
{
    IN(be)->ops->rmsnorm_fwd(IN(be), y, rstd, x, w, N, C, eps);
}
static void qt_rmsnorm_bwd(backend_t *be, be_ptr_t dx, bool dx_acc, be_ptr_t dw, be_ptr_t dy,
                           be_ptr_t x, be_ptr_t w, be_ptr_t rstd, int N, int C)
{
    IN(be)->ops->rmsnorm_bwd(IN(be), dx, dx_acc, dw, dy, x, w, rstd, N, C);
}
static void qt_rope(backend_t *be, be_ptr_t x, be_ptr_t pos, be_ptr_t cos_t, be_ptr_t sin_t,
                    int N, int nheads, int D, bool inverse)
{
    IN(be)->ops->rope(IN(be), x, pos, cos_t, sin_t, N, nheads, D, inverse);
}
static void qt_attn_fwd(backend_t *be, const be_attn_t *a) { IN(be)->ops->attn_fwd(IN(be), a); }
static void qt_attn_bwd(backend_t *be, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq,
                        be_ptr_t dk, be_ptr_t dv)
{
    IN(be)->ops->attn_bwd(IN(be), a, dout, dq, dk, dv);
}
static void qt_swiglu_fwd(backend_t *be, be_ptr_t out, be_ptr_t gate, be_ptr_t up, size_t n)
{
    IN(be)->ops->swiglu_fwd(IN(be), out, gate, up, n);
}
static void qt_swiglu_bwd(backend_t *be, be_ptr_t dgate, be_ptr_t dup, be_ptr_t dout,
                          be_ptr_t gate, be_ptr_t up, size_t n)
{
    IN(be)->ops->swiglu_bwd(IN(be), dgate, dup, dout, gate, up, n);
}
static void qt_embed_fwd(backend_t *be, be_ptr_t out, be_ptr_t table, be_ptr_t ids, int N, int C)
{
    IN(be)->ops->embed_fwd(IN(be), out, table, ids, N, C);
}
static void qt_embed_bwd(backend_t *be, be_ptr_t dtable, be_ptr_t dout, be_ptr_t ids, int N,
                         int C, int V)
{
    IN(be)->ops->embed_bwd(IN(be), dtable, dout, ids, N, C, V);
}
static void qt_logsoftmax_gather(backend_t *be, be_ptr_t logp, be_ptr_t lse, be_ptr_t logits,
                                 be_ptr_t ids, int N, int V)
{
    IN(be)->ops->logsoftmax_gather(IN(be), logp, lse, logits, ids, N, V);
}
static void qt_entropy(backend_t *be, be_ptr_t ent, be_ptr_t logits, be_ptr_t lse, int N, int V)
{
    IN(be)->ops->entropy(IN(be), ent, logits, lse, N, V);
}
static void qt_logits_bwd(backend_t *be, be_ptr_t dlogits, be_ptr_t logits, be_ptr_t lse,
                          be_ptr_t ent, be_ptr_t ids, be_ptr_t dlogp, be_ptr_t dent, int N, int V)
{
    IN(be)->ops->logits_bwd(IN(be), dlogits, logits, lse, ent, ids, dlogp, dent, N, V);
}
static void qt_adamw(backend_t *be, be_ptr_t p, be_ptr_t g, be_ptr_t m, be_ptr_t v, size_t n,
                     const be_adamw_t *h)
{
    IN(be)->ops->adamw(IN(be), p, g, m, v, n, h);
}
static double qt_sumsq(backend_t *be, be_ptr_t x, size_t n) { return IN(be)->ops->sumsq(IN(be), x, n); }
static void qt_scale(backend_t *be, be_ptr_t x, float alpha, size_t n)
{
    IN(be)->ops->scale(IN(be), x, alpha, n);
}
static void qt_sample(backend_t *be, be_ptr_t out_ids, be_ptr_t logits, size_t ld, int B, int V,
                      const be_sample_t *s)
{
    IN(be)->ops->sample(IN(be), out_ids, logits, ld, B, V, s);
}
static void qt_fake_quant(backend_t *be, be_ptr_t out, be_ptr_t in, size_t rows, size_t cols,
                          mx_axis_t axis, const mx_spec_t *spec, uint64_t seed, uint64_t stream)
{
    IN(be)->ops->fake_quant(IN(be), out, in, rows, cols, axis, spec, seed, stream);
}
static void qt_mem(backend_t *be, be_mem_t *out, bool reset_peak)
{
    IN(be)->ops->mem(IN(be), out, reset_peak);
}
static bool qt_native(backend_t *be, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct,
                      bool decode)
{
    return IN(be)->ops->native(IN(be), a, b, ct, decode);
}

/* ---- weight caches ---------------------------------------------------------------- */

static be_wcache_t *qt_wcache_new(backend_t *be, err_t *e)
{
    be_wcache_t *c = err_calloc(e, 1, sizeof *c, "a weight cache");
    if (!c)
        return NULL;
    c->inner = IN(be)->ops->wcache_new(IN(be), e);
    if (!c->inner) {
        free(c);
        return NULL;
    }
    return c;
}
static void qt_wcache_free(backend_t *be, be_wcache_t *c)
{
    if (!c)
        return;
    IN(be)->ops->wcache_free(IN(be), c->inner);
    if (c->buf)
        IN(be)->ops->buf_free(IN(be), c->buf);
    free(c);
}
static size_t qt_wcache_bytes(const be_wcache_t *c)
{
    /* the inner cache's size needs its backend's ops; ours is what we hold */
    return c->cap * sizeof(float);
}

/* ---- linear layers ----------------------------------------------------------------- */

/* Grows *buf to hold n floats; false (and an error pending) when it cannot. */
static bool grow(qtime_t *q, be_buf_t **buf, size_t *cap, size_t n)
{
    if (*cap >= n && *buf)
        return true;
    if (*buf)
        q->inner->ops->buf_free(q->inner, *buf);
    *cap = 0;
    err_t e = ERR_INIT;
    *buf = q->inner->ops->buf_alloc(q->inner, n * sizeof(float), &e);
    if (!*buf) {
        if (q->pending.code == ERR_OK)
            q->pending = e;
        return false;
    }
    *cap = n;
    return true;
}

static void qt_linear_fwd(backend_t *be, const be_linear_t *a, be_ptr_t y, bool acc)
{
    qtime_t *q = QT(be);
    backend_t *in = q->inner;
    const mx_spec_t *si = &a->spec[PREC_OP_INPUT], *sw = &a->spec[PREC_OP_WEIGHT];
    bool qx = !mx_spec_is_identity(si), qw = !mx_spec_is_identity(sw);
    be_linear_t b = *a;
    b.wcache = a->wcache ? a->wcache->inner : NULL;
    if (!q->split || (!qx && !qw)) {
        in->ops->linear_fwd(in, &b, y, acc);
        return;
    }
    const mx_spec_t fp32 = mx_spec_default(MX_FP32);
    tsync(q);
    double t0 = now_s();
    if (qx) {
        size_t n = (size_t)a->M * a->K;
        if (!grow(q, &q->xbuf, &q->xcap, n))
            return;
        in->ops->fake_quant(in, be_ptr(q->xbuf, 0), a->x, (size_t)a->M, (size_t)a->K,
                            MX_AXIS_ROW, si, a->seed, a->stream + PREC_OP_INPUT);
        b.x = be_ptr(q->xbuf, 0);
        b.spec[PREC_OP_INPUT] = fp32;
        q->count++;
    }
    if (qw) {
        /* keyed as the inner cache keys it: version, spec, and the stream for stochastic
           rounding (the compute type is applied by the inner backend afterwards) */
        be_wcache_t *c = a->wcache, tmp = {0};
        if (!c)
            c = &tmp;
        size_t n = (size_t)a->N * a->K;
        uint64_t stream = a->stream + PREC_OP_WEIGHT;
        bool sr = sw->round == MX_ROUND_STOCHASTIC && mx_format_info(sw->format)->is_mx;
        bool hit = c != &tmp && c->valid && c->version == a->wversion && mx_spec_equal(&c->spec, sw) &&
                   c->n == n && (!sr || c->stream == stream);
        if (!hit) {
            c->valid = false;
            if (!grow(q, &c->buf, &c->cap, n))
                return;
            in->ops->fake_quant(in, be_ptr(c->buf, 0), a->w, (size_t)a->N, (size_t)a->K,
                                MX_AXIS_ROW, sw, a->seed, stream);
            c->valid = true;
            c->version = a->wversion;
            c->spec = *sw;
            c->stream = stream;
            c->n = n;
            q->count++;
        }
        b.w = be_ptr(c->buf, 0);
        b.spec[PREC_OP_WEIGHT] = fp32;
        /* the inner cache must not serve the unquantized weight's rounding for this one */
        b.wcache = NULL;
        tsync(q);
        q->seconds += now_s() - t0;
        in->ops->linear_fwd(in, &b, y, acc);
        if (c == &tmp)
            in->ops->buf_free(in, tmp.buf);
        return;
    }
    tsync(q);
    q->seconds += now_s() - t0;
    in->ops->linear_fwd(in, &b, y, acc);
}

static void qt_linear_bwd(backend_t *be, const be_linear_t *a, be_ptr_t dy, be_ptr_t dx,
                          bool dx_acc, be_ptr_t dw, be_ptr_t db)
{
    be_linear_t b = *a;
    b.wcache = a->wcache ? a->wcache->inner : NULL;
    IN(be)->ops->linear_bwd(IN(be), &b, dy, dx, dx_acc, dw, db);
}

/* ---- decoding: straight through (the inner weight caches; no timing) ---------------- */

static void qt_linear_prepare(backend_t *be, const be_linear_t *a)
{
    be_linear_t b = *a;
    b.wcache = a->wcache ? a->wcache->inner : NULL;
    IN(be)->ops->linear_prepare(IN(be), &b);
}
static void qt_dec_weight(backend_t *be, const be_linear_t *a, be_ptr_t out)
{
    be_linear_t b = *a;
    b.wcache = a->wcache ? a->wcache->inner : NULL;
    IN(be)->ops->dec_weight(IN(be), &b, out);
}
static void qt_dec_linear(backend_t *be, const be_dec_linear_t *a)
{
    be_dec_linear_t b = *a;
    for (int i = 0; i < BE_DEC_MAX_LIN; i++)
        b.lin[i].wcache = a->lin[i].wcache ? a->lin[i].wcache->inner : NULL;
    IN(be)->ops->dec_linear(IN(be), &b);
}
static void qt_dec_attn(backend_t *be, const be_dec_attn_t *a) { IN(be)->ops->dec_attn(IN(be), a); }
static void qt_dec_sample(backend_t *be, const be_dec_sample_t *a)
{
    IN(be)->ops->dec_sample(IN(be), a);
}
static int qt_graph_begin(backend_t *be, err_t *e) { return IN(be)->ops->graph_begin(IN(be), e); }
static int qt_graph_end(backend_t *be, be_graph_t **g, err_t *e)
{
    return IN(be)->ops->graph_end(IN(be), g, e);
}
static void qt_graph_launch(backend_t *be, be_graph_t *g) { IN(be)->ops->graph_launch(IN(be), g); }
static void qt_graph_free(backend_t *be, be_graph_t *g) { IN(be)->ops->graph_free(IN(be), g); }

/* ---- opening ----------------------------------------------------------------------- */

int profile_qtime_open(backend_t *inner, backend_t **out, err_t *e)
{
    *out = NULL;
    qtime_t *q = err_calloc(e, 1, sizeof *q, "the timing backend");
    if (!q)
        return e->code;
    q->inner = inner;
    q->split = !strcmp(inner->ops->name, "cpu");
    q->ops = (be_ops_t){
        .name = inner->ops->name,
        .destroy = qt_destroy,
        .buf_alloc = qt_buf_alloc,
        .buf_free = qt_buf_free,
        .buf_size = inner->ops->buf_size,
        .host_addr = qt_host_addr,
        .upload = qt_upload,
        .download = qt_download,
        .copy = qt_copy,
        .copy2d = qt_copy2d,
        .zero = qt_zero,
        .sync = qt_sync,
        .wcache_new = qt_wcache_new,
        .wcache_free = qt_wcache_free,
        .wcache_bytes = qt_wcache_bytes,
        .linear_fwd = qt_linear_fwd,
        .linear_bwd = qt_linear_bwd,
        .rmsnorm_fwd = qt_rmsnorm_fwd,
        .rmsnorm_bwd = qt_rmsnorm_bwd,
        .rope = qt_rope,
        .attn_fwd = qt_attn_fwd,
        .attn_bwd = qt_attn_bwd,
        .swiglu_fwd = qt_swiglu_fwd,
        .swiglu_bwd = qt_swiglu_bwd,
        .embed_fwd = qt_embed_fwd,
        .embed_bwd = qt_embed_bwd,
        .logsoftmax_gather = qt_logsoftmax_gather,
        .entropy = qt_entropy,
        .logits_bwd = qt_logits_bwd,
        .adamw = qt_adamw,
        .sumsq = qt_sumsq,
        .scale = qt_scale,
        .sample = qt_sample,
        .fake_quant = qt_fake_quant,
        .linear_prepare = qt_linear_prepare,
        .dec_weight = qt_dec_weight,
        .dec_linear = qt_dec_linear,
        .dec_attn = qt_dec_attn,
        .dec_sample = qt_dec_sample,
        .graph_begin = qt_graph_begin,
        .graph_end = qt_graph_end,
        .graph_launch = qt_graph_launch,
        .graph_free = qt_graph_free,
        .mem = qt_mem,
        .native = qt_native,
    };
    q->be.ops = &q->ops;
    q->be.impl = q;
    *out = &q->be;
    return ERR_OK;
}

bool profile_qtime_measures(const backend_t *be) { return ((const qtime_t *)be)->split; }

double profile_qtime_seconds(const backend_t *be)
{
    const qtime_t *q = (const qtime_t *)be;
    return q->split ? q->seconds : NAN;
}
long profile_qtime_count(const backend_t *be) { return ((const qtime_t *)be)->count; }
