/* train_common: see train_common.h. */
#include "rlhf/train_common.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/rng.h"

/* ---- optimizer and schedule ------------------------------------------------------------ */

const char *const rlhf_sched_names[] = {"constant", "linear", "cosine", NULL};

const opt_enum_t rlhf_sched_enum = {rlhf_sched_names, 0, NULL, NULL};

#define OO(f) offsetof(rlhf_optim_t, f)
static const opt_field_t optim_fields[] = {
    OPT_KEY("lr", OPT_DOUBLE, OO(lr), "1e-3", 0, 10, "peak learning rate"),
    OPT_KEY("min_lr_ratio", OPT_DOUBLE, OO(min_lr_ratio), "0.1", 0, 1,
            "the schedule ends at lr x min_lr_ratio"),
    OPT_KEY("warmup_steps", OPT_LONG, OO(warmup_steps), "20", 0, 1e12,
            "linear warm-up from lr / warmup_steps to lr"),
    OPT_KEY("schedule", OPT_ENUM, OO(schedule), "cosine", 0, 0,
            "learning-rate schedule after the warm-up", .en = &rlhf_sched_enum),
    OPT_KEY("weight_decay", OPT_DOUBLE, OO(weight_decay), "0.01", 0, 10, "AdamW weight decay"),
    OPT_KEY("beta1", OPT_DOUBLE, OO(beta1), "0.9", 0, 0.999999, "AdamW beta1"),
    OPT_KEY("beta2", OPT_DOUBLE, OO(beta2), "0.999", 0, 0.999999999, "AdamW beta2"),
    OPT_KEY("eps", OPT_DOUBLE, OO(eps), "1e-8", 1e-30, 1, "AdamW epsilon"),
    OPT_KEY("max_grad_norm", OPT_DOUBLE, OO(max_grad_norm), "1.0", -1, 1e12,
            "global-norm clipping (<= 0: none)"),
};
const opt_table_t rlhf_optim_table = OPT_TABLE("optimizer", rlhf_optim_t, optim_fields, NULL);

double rlhf_lr_at(const rlhf_optim_t *o, long s, long total)
{
    if (s < 1)
        s = 1;
    if (o->warmup_steps > 0 && s <= o->warmup_steps)
        return o->lr * (double)s / (double)o->warmup_steps;
    if (o->schedule == RLHF_SCHED_CONSTANT || total <= o->warmup_steps)
        return o->lr;
    double p = (double)(s - o->warmup_steps) / (double)(total - o->warmup_steps);
    p = p > 1 ? 1 : p;
    double floor_lr = o->lr * o->min_lr_ratio;
    if (o->schedule == RLHF_SCHED_LINEAR)
        return floor_lr + (o->lr - floor_lr) * (1 - p);
    return floor_lr + (o->lr - floor_lr) * 0.5 * (1 + cos(M_PI * p));
}

qwen2_adamw_t rlhf_adamw_at(const rlhf_optim_t *o, long s, long total)
{
    qwen2_adamw_t h = {rlhf_lr_at(o, s, total), o->beta1, o->beta2, o->eps, o->weight_decay,
                       o->max_grad_norm};
    return h;
}

const char *const rlhf_dtype_names[] = {"float32", "bfloat16", "float16", NULL};
const opt_enum_t rlhf_dtype_enum = {rlhf_dtype_names, 0, NULL, NULL};

st_dtype_t rlhf_dtype_of(int index)
{
    return index == 1 ? ST_BF16 : index == 2 ? ST_F16 : ST_F32;
}

/* ---- example order --------------------------------------------------------------------- */

void rlhf_epoch_order(uint64_t seed, const char *name, uint64_t epoch, size_t *idx, size_t n)
{
    uint64_t stream = rng_stream(name, epoch);
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t i = n; i > 1; i--) {
        uint64_t x = ((uint64_t)rng_u32(seed, stream, 2 * (i - 1)) << 32) |
                     rng_u32(seed, stream, 2 * (i - 1) + 1);
        size_t j = (size_t)(x % i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

typedef struct len_key {
    int len;
    size_t pos, idx;
} len_key_t;

static int by_len_desc(const void *a, const void *b)
{
    const len_key_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

void rlhf_length_grouped_order(uint64_t seed, const char *name, uint64_t epoch, const int *len,
                               size_t n, int batch, size_t *order)
{
    rlhf_epoch_order(seed, name, epoch, order, n);
    size_t win = (size_t)(batch > 0 ? batch : 1) * 8;
    len_key_t *k = malloc(win * sizeof *k);
    if (!k)
        return; /* the plain permutation is still a valid order */
    for (size_t w0 = 0; w0 < n; w0 += win) {
        size_t m = n - w0 < win ? n - w0 : win;
        for (size_t i = 0; i < m; i++)
            k[i] = (len_key_t){len[order[w0 + i]], i, order[w0 + i]};
        qsort(k, m, sizeof *k, by_len_desc);
        /* the window's batches in a seeded order, so that the seed still matters when
         * the whole set fits in one window */
        size_t B = (size_t)(batch > 0 ? batch : 1), nb = m / B, bo[8], at = w0;
        rlhf_epoch_order(seed, name, (epoch << 20) ^ (w0 / win + 1), bo, nb);
        for (size_t b = 0; b < nb; b++)
            for (size_t i = bo[b] * B; i < (bo[b] + 1) * B; i++)
                order[at++] = k[i].idx;
        for (size_t i = nb * B; i < m; i++) /* a short batch stays last */
            order[at++] = k[i].idx;
    }
    free(k);
}

/* ---- progress -------------------------------------------------------------------------- */

void rlhf_logf(const rlhf_log_t *log, const char *fmt, ...)
{
    if (!log || !log->fn)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log->fn(log->ctx, line);
}

double rlhf_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void rlhf_fmt_duration(double s, char *buf, size_t cap)
{
    if (!(s >= 0))
        s = 0;
    if (s < 60)
        snprintf(buf, cap, "%.1f s", s);
    else if (s < 3600)
        snprintf(buf, cap, "%d min %02d s", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, cap, "%d h %02d min", (int)(s / 3600), ((int)s % 3600) / 60);
}

/* ---- training log ---------------------------------------------------------------------- */

#define TL_BASE 7

int rlhf_trainlog_add(rlhf_trainlog_t *l, long step, double lr, double loss, double grad_norm,
                      long tokens, double tokens_per_s, double elapsed, const double *extra,
                      err_t *e)
{
    size_t w = TL_BASE + (size_t)l->nextra;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        double *r = realloc(l->rows, cap * w * sizeof *r);
        if (!r)
            return err_set(e, ERR_NOMEM, "out of memory for the training log");
        l->rows = r;
        l->cap = cap;
    }
    double *r = l->rows + l->n * w;
    r[0] = (double)step, r[1] = lr, r[2] = loss, r[3] = grad_norm, r[4] = (double)tokens;
    r[5] = tokens_per_s, r[6] = elapsed;
    for (int k = 0; k < l->nextra; k++)
        r[TL_BASE + k] = extra ? extra[k] : NAN;
    l->n++;
    return ERR_OK;
}

int rlhf_trainlog_write(const rlhf_trainlog_t *l, const char *path, err_t *e)
{
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    fprintf(af.fp, "step,lr,loss,grad_norm,tokens,tokens_per_s,elapsed_s");
    for (int k = 0; k < l->nextra; k++)
        fprintf(af.fp, ",%s", l->extra[k]);
    fputc('\n', af.fp);
    size_t w = TL_BASE + (size_t)l->nextra;
    for (size_t i = 0; i < l->n; i++) {
        const double *r = l->rows + i * w;
        fprintf(af.fp, "%.0f,%.6g,%.6f,%.6g,%.0f,%.1f,%.3f", r[0], r[1], r[2], r[3], r[4], r[5],
                r[6]);
        for (int k = 0; k < l->nextra; k++)
            fprintf(af.fp, ",%.6g", r[TL_BASE + k]);
        fputc('\n', af.fp);
    }
    return atomic_commit(&af, e);
}

void rlhf_trainlog_free(rlhf_trainlog_t *l)
{
    free(l->rows);
    l->rows = NULL;
    l->n = l->cap = 0;
}

/* ---- files ----------------------------------------------------------------------------- */

int rlhf_copy_file(const char *src, const char *dst, err_t *e)
{
    char *buf;
    size_t len;
    int rc = fs_read_all(src, (size_t)1 << 31, &buf, &len, e);
    if (rc)
        return rc;
    rc = atomic_write(dst, buf, len, e);
    free(buf);
    return rc;
}

int rlhf_copy_tokenizer_files(const char *src_dir, const char *dst_dir, err_t *e)
{
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json", "vocab.json", "merges.txt",
                                        "generation_config.json"};
    int rc = ERR_OK;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !rc; i++) {
        char *s = fs_join(src_dir, names[i]), *d = fs_join(dst_dir, names[i]);
        if (!s || !d)
            rc = err_set(e, ERR_NOMEM, "out of memory");
        else if (fs_exists(s))
            rc = rlhf_copy_file(s, d, e);
        else if (i == 0)
            rc = err_set(e, ERR_INPUT, "%s: missing (the model directory needs its tokenizer)", s);
        free(s);
        free(d);
    }
    return rc;
}

/* ---- data parallelism ------------------------------------------------------------------ */

int rlhf_grads_allreduce(dist_comm_t *c, qwen2_model_t *m, err_t *e)
{
    const int size = dist_size(c);
    if (size <= 1)
        return ERR_OK;
    backend_t *be = qwen2_backend(m);
    const be_ptr_t g = qwen2_grads(m);
    const size_t n = qwen2_nparams(m), cap = n < RLHF_GRAD_BUCKET ? n : RLHF_GRAD_BUCKET;
    if (be_null(g))
        return err_set(e, ERR_INPUT, "gradients all-reduced on a model that is not training");
    float *h = err_malloc(e, (cap ? cap : 1) * sizeof *h, "gradient bucket");
    if (!h)
        return e->code;
    int rc = be_sync(be, e);
    for (size_t off = 0; off < n && !rc; off += cap) {
        size_t k = n - off < cap ? n - off : cap;
        be_download(be, h, be_f32(g, off), k * sizeof *h);
        if ((rc = be_sync(be, e)) || (rc = dist_allreduce(c, h, k, DIST_F32, e)))
            break;
        for (size_t i = 0; i < k; i++)
            h[i] /= (float)size;
        be_upload(be, be_f32(g, off), h, k * sizeof *h);
        rc = be_sync(be, e); /* the bucket is reused */
    }
    free(h);
    return rc ? err_prefix(e, "gradient all-reduce") : ERR_OK;
}
