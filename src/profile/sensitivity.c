/* sensitivity: the per-layer MX sensitivity sweep, its resume record and its CSVs
 * (sensitivity.h, docs/sensitivity.md). */
#include "profile/sensitivity.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>
#include <pthread.h>
#include <unistd.h>

#include "profile/common.h"
#include "profile/ppl.h"
#include "profile/qtime.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- options ------------------------------------------------------------------------- */

#define SO(f) offsetof(sensitivity_opts_t, f)
static const opt_field_t sens_fields[] = {
    OPT_EMBED("evaluation set", SO(eval), &profile_eval_opts_table, NULL),
    OPT_KEY("threshold_pct", OPT_DOUBLE, SO(threshold_pct), "2.0", 0, OPT_NO_MAX,
            "tolerant when delta_pct < this (percent)", .flag = "threshold"),
    OPT_KEY("two_sided", OPT_BOOL, SO(two_sided), "false", 0, 0,
            "tolerant when |delta_pct| < threshold (a large fall is not tolerant either)",
            .flag = "two-sided"),
    OPT_KEY("formats", OPT_LIST, SO(formats),
            "mxfp8_e4m3,mxfp8_e5m2,mxfp6_e3m2,mxfp6_e2m3,mxfp4_e2m1,mxint8", 0, 0,
            "MX formats swept", .en = &profile_format_enum, .cap = SENS_MAX_FORMATS,
            .count_off = SO(nformats), .flag = "formats"),
    OPT_KEY("blocks", OPT_LIST, SO(blocks), "8,16,32", 1, 4096, "block sizes swept",
            .cap = SENS_MAX_BLOCKS, .count_off = SO(nblocks), .flag = "blocks"),
    OPT_KEY("rounding", OPT_ENUM, SO(round), "even", 0, 0, "MX element rounding",
            .en = &profile_round_enum, .flag = "rounding"),
    OPT_KEY("scale", OPT_ENUM, SO(scale), "floor", 0, 0, "MX scale rule (floor: OCP)",
            .en = &profile_scale_enum, .flag = "scale"),
    OPT_KEY("workers", OPT_INT, SO(workers), "0", 0, PROFILE_MAX_WORKERS,
            "models measuring cells in parallel (0: one per core for models under 64M parameters, "
            "else one using every core)", .flag = "workers"),
    OPT_KEY("device", OPT_STRING, SO(backend), "cpu", 0, 0, "the device: cpu, cuda or cuda:N",
            .cap = sizeof(((sensitivity_opts_t *)0)->backend), .flag = "device",
            .alias = "backend"),
};

OPT_CHECK(sens_check, sensitivity_opts_t, sensitivity_opts_check)
const opt_table_t sensitivity_opts_table =
    OPT_TABLE("sensitivity", sensitivity_opts_t, sens_fields, sens_check);

void sensitivity_opts_default(sensitivity_opts_t *o) { opts_default(&sensitivity_opts_table, o); }

static int index_of_format(const sensitivity_opts_t *o, mx_format_t f)
{
    for (int i = 0; i < o->nformats; i++)
        if (o->formats[i] == f)
            return i;
    return -1;
}

static int index_of_block(const int *blocks, int n, int k)
{
    for (int i = 0; i < n; i++)
        if (blocks[i] == k)
            return i;
    return -1;
}

int sensitivity_opts_check(const sensitivity_opts_t *o, const char *ctx, err_t *e)
{
    if (o->nformats < 1 || o->nblocks < 1)
        return err_set(e, ERR_INPUT, "%s: field \"formats\"/\"blocks\": at least one of each",
                       ctx);
    for (int i = 0; i < o->nformats; i++) {
        if (!mx_format_info(o->formats[i])->is_mx)
            return err_set(e, ERR_INPUT, "%s: field \"formats[%d]\": %s is not an MX format",
                           ctx, i, mx_format_name(o->formats[i]));
        for (int j = 0; j < i; j++)
            if (o->formats[j] == o->formats[i])
                return err_set(e, ERR_INPUT, "%s: field \"formats\": %s listed twice", ctx,
                               mx_format_name(o->formats[i]));
    }
    for (int i = 0; i < o->nblocks; i++) {
        if (o->blocks[i] < 1 || o->blocks[i] > 4096)
            return err_set(e, ERR_INPUT, "%s: field \"blocks[%d]\": %d is not in [1, 4096]", ctx,
                           i, o->blocks[i]);
        for (int j = 0; j < i; j++)
            if (o->blocks[j] == o->blocks[i])
                return err_set(e, ERR_INPUT, "%s: field \"blocks\": %d listed twice", ctx,
                               o->blocks[i]);
    }
    if (index_of_format(o, MX_FP4_E2M1) < 0 || index_of_format(o, MX_FP8_E4M3) < 0 ||
        index_of_block(o->blocks, o->nblocks, 8) < 0)
        return err_set(e, ERR_INPUT, "%s: fields \"formats\"/\"blocks\": the study's columns "
                       "need mxfp4_e2m1 and mxfp8_e4m3 with block 8 in the sweep", ctx);
    if (o->round == MX_ROUND_STOCHASTIC)
        return err_set(e, ERR_INPUT, "%s: field \"rounding\": stochastic rounding would make "
                       "each cell a random draw (use even, nearest or trunc)", ctx);
    if (!(o->threshold_pct > 0) || !isfinite(o->threshold_pct))
        return err_set(e, ERR_INPUT, "%s: field \"threshold_pct\": expected a positive number",
                       ctx);
    if (o->workers < 0 || o->workers > PROFILE_MAX_WORKERS)
        return err_set(e, ERR_INPUT, "%s: field \"workers\": expected 0 (automatic) to %d", ctx,
                       PROFILE_MAX_WORKERS);
    return profile_eval_opts_check(&o->eval, ctx, e);
}

mx_spec_t sensitivity_spec(const sensitivity_opts_t *o, int fi, int bj)
{
    mx_spec_t s = mx_spec_default(o->formats[fi]);
    s.block = o->blocks[bj];
    s.round = o->round;
    s.scale = o->scale;
    return s;
}

/* ---- the matrix ----------------------------------------------------------------------- */

void profile_matrix_free(profile_matrix_t *mx)
{
    if (!mx)
        return;
    for (int i = 0; i < mx->nlayers; i++)
        free(mx->layers[i]);
    free(mx->layers);
    free(mx->nll);
    memset(mx, 0, sizeof *mx);
}

static double *cell(const profile_matrix_t *mx, int layer, int fi, int bj)
{
    return &mx->nll[((size_t)layer * mx->nformats + fi) * mx->nblocks + bj];
}

double profile_matrix_ppl(const profile_matrix_t *mx, int layer, int fi, int bj)
{
    return profile_ppl_value(*cell(mx, layer, fi, bj), mx->tokens);
}

double profile_delta_pct(double ppl, double base) { return 100.0 * (ppl - base) / base; }

bool profile_tolerant(double delta_pct, double threshold_pct, bool two_sided)
{
    return isfinite(delta_pct) && (two_sided ? fabs(delta_pct) : delta_pct) < threshold_pct;
}

/* ---- the resume record ------------------------------------------------------------------- */

#define CELLS_FORMAT "mxrlhf-sensitivity-cells"

static cJSON *cells_header(uint64_t model_fp, const profile_evalset_t *es, int nlayers)
{
    char a[17], b[17];
    profile_hex64(model_fp, a);
    profile_hex64(es->fingerprint, b);
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "format", CELLS_FORMAT);
    cJSON_AddNumberToObject(h, "version", 1);
    cJSON_AddStringToObject(h, "model_fingerprint", a);
    cJSON_AddStringToObject(h, "eval_fingerprint", b);
    cJSON_AddNumberToObject(h, "eval_tokens", (double)es->tokens);
    cJSON_AddNumberToObject(h, "layers", nlayers);
    return h;
}

/* Slots of the have[] flags and values: the layer cells [0, ncell) in matrix order, then
 * SENS_MAX_FORMATS x SENS_MAX_BLOCKS whole-model slots, then the baseline. */
static long slot_index(const profile_matrix_t *mx, const sensitivity_opts_t *o, size_t nhave,
                       const char *kind, const char *layer, const char *spec_text)
{
    if (!strcmp(kind, "baseline"))
        return (long)nhave - 1;
    mx_spec_t s;
    err_t e = ERR_INIT;
    if (!spec_text || mx_spec_parse(spec_text, &s, &e) || s.round != o->round ||
        s.scale != o->scale)
        return -1;
    int fi = index_of_format(o, s.format), bj = index_of_block(o->blocks, o->nblocks, s.block);
    if (fi < 0 || bj < 0)
        return -1;
    size_t ncell = (size_t)mx->nlayers * o->nformats * o->nblocks;
    if (!strcmp(kind, "whole_model"))
        return (long)(ncell + (size_t)fi * SENS_MAX_BLOCKS + bj);
    if (strcmp(kind, "layer") || !layer)
        return -1;
    for (int l = 0; l < mx->nlayers; l++)
        if (!strcmp(mx->layers[l], layer))
            return (long)(((size_t)l * o->nformats + fi) * o->nblocks + bj);
    return -1;
}

static double *slot_value(profile_matrix_t *mx, size_t nhave, size_t idx)
{
    size_t ncell = (size_t)mx->nlayers * mx->nformats * mx->nblocks;
    if (idx == nhave - 1)
        return &mx->base_nll;
    if (idx < ncell)
        return &mx->nll[idx];
    idx -= ncell;
    return &mx->whole_nll[idx / SENS_MAX_BLOCKS][idx % SENS_MAX_BLOCKS];
}

/* Where the record's cell lines go (NaN marks a missing cell beforehand, so `have` flags
 * travel separately). */
typedef struct cells_in {
    const char *path;
    profile_matrix_t *mx;
    const sensitivity_opts_t *o;
    bool *have;
    size_t nhave;
    long *loaded;
} cells_in_t;

/* One cell line of the record (profile_record_read). */
static int cell_line(void *ctx, const cJSON *j, int lineno, err_t *e)
{
    cells_in_t *c = ctx;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "cell"),
                *layer = cJSON_GetObjectItemCaseSensitive(j, "layer"),
                *spec = cJSON_GetObjectItemCaseSensitive(j, "spec"),
                *nll = cJSON_GetObjectItemCaseSensitive(j, "nll");
    if (!cJSON_IsString(kind) || !(cJSON_IsNumber(nll) || cJSON_IsNull(nll)))
        return err_set(e, ERR_INPUT, "%s: line %d: expected \"cell\" and \"nll\"", c->path,
                       lineno);
    long k = slot_index(c->mx, c->o, c->nhave, kind->valuestring,
                        cJSON_IsString(layer) ? layer->valuestring : NULL,
                        cJSON_IsString(spec) ? spec->valuestring : NULL);
    if (k >= 0) {
        if (!c->have[k])
            (*c->loaded)++;
        c->have[k] = true;
        *slot_value(c->mx, c->nhave, (size_t)k) = cJSON_IsNull(nll) ? NAN : nll->valuedouble;
    }
    return ERR_OK;
}

/* ---- the sweep ------------------------------------------------------------------------- */

/* Block index of a layer name ("model.layers.7.mlp.up_proj" -> 7; "lm_head" -> layers). */
static int block_of(const char *name, int layers)
{
    if (!strcmp(name, "lm_head"))
        return layers;
    return atoi(name + strlen("model.layers."));
}

static bool quantizable(const char *name)
{
    return !strncmp(name, "model.layers.", 13) || !strcmp(name, "lm_head");
}

enum { ITEM_BASE, ITEM_LAYER, ITEM_WHOLE };

typedef struct item {
    int kind, l, f, b;
    size_t slot;        /* into have[] */
    double units;       /* decoder-layer equivalents, for the time estimate */
} item_t;

/* What the workers share; everything below `mu` is guarded by it. */
typedef struct sweep {
    const sensitivity_opts_t *o;
    const profile_evalset_t *es;
    profile_matrix_t *mx;
    item_t *items;
    long nitems;
    bool *have;
    size_t nhave;
    int layers;
    double t0;
    profile_progress_fn progress;
    void *pctx;
    pthread_mutex_t mu;
    long next;
    int rc;
    err_t err;
    profile_record_t cf;
    long done, total;
    double units_done, units_left, fwd_s, quant_s;
    long quant_ops;
} sweep_t;

typedef struct worker_arg {
    sweep_t *s;
    profile_worker_t *w;
    int threads;
} worker_arg_t;

/* Sets (or, with spec NULL, resets to fp32) the forward weight and input of one layer in
 * the phase the sweep measures. */
static int set_layer(prec_table_t *t, const char *layer, const mx_spec_t *spec, err_t *e)
{
    mx_spec_t fp32 = mx_spec_default(MX_FP32);
    const mx_spec_t *sp = spec ? spec : &fp32;
    if (prec_table_set(t, layer, PREC_ROLLOUT, PREC_OP_WEIGHT, sp, e) ||
        prec_table_set(t, layer, PREC_ROLLOUT, PREC_OP_INPUT, sp, e))
        return e->code;
    return ERR_OK;
}

static int set_all(prec_table_t *t, const profile_matrix_t *mx, const mx_spec_t *spec, err_t *e)
{
    for (int l = 0; l < mx->nlayers; l++)
        if (set_layer(t, mx->layers[l], spec, e))
            return e->code;
    return ERR_OK;
}

static int record_cell(sweep_t *s, const char *kind, const char *layer, const mx_spec_t *spec,
                       double nll, double seconds, double quant_s, err_t *e)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "cell", kind);
    if (layer)
        cJSON_AddStringToObject(j, "layer", layer);
    if (spec) {
        char st[64];
        cJSON_AddStringToObject(j, "spec", mx_spec_format(spec, st, sizeof st));
    }
    profile_json_add_exact(j, "nll", nll);
    if (isfinite(nll))
        cJSON_AddNumberToObject(j, "ppl", profile_ppl_value(nll, s->mx->tokens));
    cJSON_AddNumberToObject(j, "seconds", seconds);
    if (isfinite(quant_s))
        cJSON_AddNumberToObject(j, "quantize_s", quant_s);
    return profile_record_append(&s->cf, j, e);
}

/* Called with the lock held. */
static void report(sweep_t *s, const item_t *it, double nll)
{
    s->done++;
    s->units_left -= it->units;
    s->units_done += it->units;
    if (!s->progress)
        return;
    char st[64] = "";
    mx_spec_t sp;
    if (it->kind != ITEM_BASE) {
        sp = sensitivity_spec(s->o, it->f, it->b);
        mx_spec_format(&sp, st, sizeof st);
    }
    double el = profile_now_s() - s->t0;
    double base = profile_ppl_value(s->mx->base_nll, s->mx->tokens);
    profile_progress_t p = {
        .done = s->done, .total = s->total, .resumed = s->mx->cells_resumed,
        .what = it->kind == ITEM_BASE ? "baseline"
                : it->kind == ITEM_WHOLE ? "whole_model" : s->mx->layers[it->l],
        .spec = st, .ppl = profile_ppl_value(nll, s->mx->tokens),
        .elapsed_s = el,
        .left_s = s->units_done > 0 ? el / s->units_done * s->units_left : NAN,
        .tokens = s->es->tokens, .tokens_requested = s->es->requested,
    };
    p.delta_pct = it->kind == ITEM_BASE ? 0 : profile_delta_pct(p.ppl, base);
    s->progress(s->pctx, &p);
}

/* One cell on one worker's model. */
static int run_item(sweep_t *s, profile_worker_t *w, profile_ppl_t *ppl, const item_t *it,
                    double *nll, err_t *e)
{
    const prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    prec_table_t *t = qwen2_precision(w->m);
    if (it->kind == ITEM_BASE)
        return profile_ppl_full(ppl, &ctx, nll, e);
    mx_spec_t sp = sensitivity_spec(s->o, it->f, it->b);
    int rc;
    if (it->kind == ITEM_WHOLE) {
        if ((rc = set_all(t, s->mx, &sp, e)))
            return rc;
        rc = profile_ppl_full(ppl, &ctx, nll, e);
        err_t e2 = ERR_INIT;
        int rc2 = set_all(t, s->mx, NULL, &e2);
        return rc ? rc : rc2 ? err_set(e, rc2, "%s", e2.msg) : ERR_OK;
    }
    const char *name = s->mx->layers[it->l];
    int L = block_of(name, s->layers);
    /* the cache is built under the unquantized table, before the layer is set */
    if ((rc = profile_ppl_cache(ppl, &ctx, L, e)) || (rc = set_layer(t, name, &sp, e)))
        return rc;
    rc = profile_ppl_from(ppl, &ctx, L, nll, e);
    err_t e2 = ERR_INIT;
    int rc2 = set_layer(t, name, NULL, &e2);
    return rc ? rc : rc2 ? err_set(e, rc2, "%s", e2.msg) : ERR_OK;
}

static void *worker_main(void *arg)
{
    worker_arg_t *wa = arg;
    sweep_t *s = wa->s;
    profile_worker_t *w = wa->w;
    omp_set_num_threads(wa->threads);
    profile_ppl_t ppl;
    err_t e = ERR_INIT;
    double q0 = w->qt ? profile_qtime_seconds(w->qt) : 0;
    long n0 = w->qt ? profile_qtime_count(w->qt) : 0;
    int rc = profile_ppl_init(&ppl, w->m, s->es, &e);
    while (!rc) {
        pthread_mutex_lock(&s->mu);
        while (s->next < s->nitems && s->have[s->items[s->next].slot])
            s->next++;
        long k = s->rc || s->next >= s->nitems ? -1 : s->next++;
        pthread_mutex_unlock(&s->mu);
        if (k < 0)
            break;
        const item_t *it = &s->items[k];
        double t = profile_now_s(), nll = NAN, qs = w->qt ? profile_qtime_seconds(w->qt) : NAN;
        if ((rc = run_item(s, w, &ppl, it, &nll, &e)))
            break;
        if (w->qt)
            qs = profile_qtime_seconds(w->qt) - qs;
        pthread_mutex_lock(&s->mu);
        *slot_value(s->mx, s->nhave, it->slot) = nll;
        mx_spec_t sp = it->kind == ITEM_BASE ? mx_spec_default(MX_FP32)
                                             : sensitivity_spec(s->o, it->f, it->b);
        rc = record_cell(s, it->kind == ITEM_BASE ? "baseline"
                            : it->kind == ITEM_WHOLE ? "whole_model" : "layer",
                         it->kind == ITEM_LAYER ? s->mx->layers[it->l] : NULL,
                         it->kind == ITEM_BASE ? NULL : &sp, nll, profile_now_s() - t, qs, &e);
        if (!rc) {
            s->have[it->slot] = true;
            s->mx->cells_run++;
            report(s, it, nll);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    if (rc && !s->rc) {
        s->rc = rc;
        s->err = e;
    }
    s->fwd_s += ppl.fwd_s;
    if (w->qt) {
        s->quant_s += profile_qtime_seconds(w->qt) - q0;
        s->quant_ops += profile_qtime_count(w->qt) - n0;
    }
    pthread_mutex_unlock(&s->mu);
    profile_ppl_free(&ppl);
    return NULL;
}

int profile_sensitivity_sweep(profile_worker_t *workers, int nworkers,
                              const profile_evalset_t *es, const sensitivity_opts_t *o,
                              const char *cells_path, bool resume, profile_progress_fn progress,
                              void *pctx, profile_matrix_t *out, err_t *e)
{
    return profile_sensitivity_sweep_ranks(NULL, workers, nworkers, es, o, cells_path, resume,
                                           progress, pctx, out, e);
}

/* Rank r's items: those whose cost midpoint (units before it + half its own) falls in
 * [r U / n, (r + 1) U / n) of the total U: contiguous in the work order, so each rank's
 * residual caches still only move forward, and balanced by cost rather than count. */
static void mark_share(const item_t *items, long nitems, int rank, int size, bool *mine)
{
    double total = 0, before = 0;
    for (long k = 0; k < nitems; k++)
        total += items[k].units;
    for (long k = 0; k < nitems; k++) {
        double mid = before + items[k].units / 2;
        int r = total > 0 ? (int)(mid / total * size) : 0;
        mine[k] = (r < size ? r : size - 1) == rank;
        before += items[k].units;
    }
}

/* Every rank's cells into every rank's matrix: each slot is the sum over ranks of its
 * owner's value and zeros (exact in any order), the counters summed. */
static int merge_ranks(dist_comm_t *c, sweep_t *s, const bool *mine, err_t *e)
{
    const long n = s->nitems;
    double *v = err_calloc(e, (size_t)n + 5, sizeof *v, "the merged cells");
    if (!v)
        return e->code;
    for (long k = 0; k < n; k++)
        if (mine[k])
            v[k] = *slot_value(s->mx, s->nhave, s->items[k].slot);
    v[n] = (double)s->mx->cells_run;
    v[n + 1] = (double)s->mx->cells_resumed;
    v[n + 2] = s->fwd_s;
    v[n + 3] = s->quant_s;
    v[n + 4] = (double)s->quant_ops;
    int rc = dist_allreduce(c, v, (size_t)n + 5, DIST_F64, e);
    if (!rc) {
        for (long k = 0; k < n; k++)
            *slot_value(s->mx, s->nhave, s->items[k].slot) = v[k];
        s->mx->cells_run = (long)v[n];
        s->mx->cells_resumed = (long)v[n + 1];
        s->fwd_s = v[n + 2];
        s->quant_s = v[n + 3];
        s->quant_ops = (long)v[n + 4];
    }
    free(v);
    return rc;
}

int profile_sensitivity_sweep_ranks(dist_comm_t *comm, profile_worker_t *workers, int nworkers,
                                    const profile_evalset_t *es, const sensitivity_opts_t *o,
                                    const char *cells_path, bool resume,
                                    profile_progress_fn progress, void *pctx,
                                    profile_matrix_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    bool *mine = NULL;
    if (sensitivity_opts_check(o, "sensitivity options", e))
        return e->code;
    if (nworkers < 1)
        return err_set(e, ERR_INPUT, "sensitivity: no worker");
    qwen2_model_t *m = workers[0].m;
    sweep_t s = {.o = o, .es = es, .mx = out, .progress = progress, .pctx = pctx,
                 .t0 = profile_now_s()};
    const qwen2_config_t *c = qwen2_config(m);
    s.layers = c->layers;
    const char *const *names;
    int nlin = qwen2_linear_names(m, &names);
    int rc = ERR_OK;
    cJSON *hdr = NULL;
    bool mu_ok = false;

    out->nformats = o->nformats;
    out->nblocks = o->nblocks;
    memcpy(out->formats, o->formats, sizeof o->formats);
    memcpy(out->blocks, o->blocks, sizeof o->blocks);
    out->round = o->round;
    out->scale = o->scale;
    out->tokens = es->tokens;
    out->layers = err_calloc(e, (size_t)nlin, sizeof *out->layers, "layer names");
    if (!out->layers)
        return e->code;
    for (int i = 0; i < nlin; i++)
        if (quantizable(names[i]) && !(out->layers[out->nlayers++] = strdup(names[i]))) {
            profile_matrix_free(out);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
    const int nspec = o->nformats * o->nblocks;
    const size_t ncell = (size_t)out->nlayers * nspec;
    s.nhave = ncell + SENS_MAX_FORMATS * SENS_MAX_BLOCKS + 1;
    s.nitems = 1 + (long)ncell + nspec;
    out->nll = err_malloc(e, (ncell ? ncell : 1) * sizeof *out->nll, "the matrix");
    s.have = err_calloc(e, s.nhave, sizeof *s.have, "the matrix");
    s.items = err_calloc(e, (size_t)s.nitems, sizeof *s.items, "the work list");
    if (!out->nll || !s.have || !s.items) {
        rc = e->code;
        goto done;
    }
    for (size_t i = 0; i < ncell; i++)
        out->nll[i] = NAN;
    for (int f = 0; f < SENS_MAX_FORMATS; f++)
        for (int b = 0; b < SENS_MAX_BLOCKS; b++)
            out->whole_nll[f][b] = NAN;
    out->base_nll = NAN;

    /* the work, in the order the residual caches only move forward */
    const double head = profile_head_units(c), full = c->layers + head;
    long k = 0;
    s.items[k++] = (item_t){ITEM_BASE, 0, 0, 0, s.nhave - 1, full};
    for (int l = 0; l < out->nlayers; l++)
        for (int f = 0; f < o->nformats; f++)
            for (int b = 0; b < o->nblocks; b++)
                s.items[k++] = (item_t){ITEM_LAYER, l, f, b,
                                        ((size_t)l * o->nformats + f) * o->nblocks + b,
                                        c->layers - block_of(out->layers[l], c->layers) + head};
    for (int f = 0; f < o->nformats; f++)
        for (int b = 0; b < o->nblocks; b++)
            s.items[k++] = (item_t){ITEM_WHOLE, 0, f, b,
                                    ncell + (size_t)f * SENS_MAX_BLOCKS + b, full};

    uint64_t mfp = 0;
    if ((rc = profile_model_fingerprint(m, &mfp, e)))
        goto done;
    out->model_fingerprint = mfp;
    hdr = cells_header(mfp, es, out->nlayers);
    size_t valid = 0; /* 0: a fresh record (no resume, or nothing usable in the old one) */
    if (resume && fs_exists(cells_path)) {
        static const char *const keys[] = {"format", "model_fingerprint", "eval_fingerprint"};
        static const char *const what[] = {"purpose", "model", "evaluation set"};
        cells_in_t ci = {cells_path, out, o, s.have, s.nhave, &out->cells_resumed};
        out->cells_resumed = 0;
        if ((rc = profile_record_read(cells_path, hdr, keys, what, 3, cell_line, &ci, &valid,
                                      e)))
            goto done;
    }
    if ((rc = profile_record_open(&s.cf, cells_path, hdr, valid, e)))
        goto done;
    /* this rank's share: the others' items count as had (skipped) until the merge */
    if (!(mine = err_malloc(e, (size_t)s.nitems * sizeof *mine, "the work list"))) {
        rc = e->code;
        goto done;
    }
    mark_share(s.items, s.nitems, dist_rank(comm), dist_size(comm), mine);
    s.total = 0;
    for (long i = 0; i < s.nitems; i++) {
        if (!mine[i]) {
            s.have[s.items[i].slot] = true;
            continue;
        }
        s.total++;
        if (s.have[s.items[i].slot])
            s.done++;
        else
            s.units_left += s.items[i].units;
    }

    if (pthread_mutex_init(&s.mu, NULL)) {
        rc = err_set(e, ERR_FAIL, "cannot create a mutex");
        goto done;
    }
    mu_ok = true;
    int nw = nworkers;
    if (nw > s.total - s.done)
        nw = (int)(s.total - s.done) > 0 ? (int)(s.total - s.done) : 1;
    int cores = omp_get_max_threads();
    int per = cores / nw > 0 ? cores / nw : 1;
    pthread_t th[PROFILE_MAX_WORKERS];
    worker_arg_t wa[PROFILE_MAX_WORKERS];
    int started = 0;
    for (int i = 0; i < nw && i < PROFILE_MAX_WORKERS; i++) {
        wa[i] = (worker_arg_t){&s, &workers[i], per};
        if (pthread_create(&th[i], NULL, worker_main, &wa[i]))
            break;
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    if (!started)
        rc = err_set(e, ERR_FAIL, "cannot start a worker thread");
    else if (s.rc) {
        rc = s.rc;
        *e = s.err;
    }
    /* every rank's cells, once every rank has finished its own */
    if (dist_size(comm) > 1 && !(rc = dist_agree(comm, rc, e)))
        rc = merge_ranks(comm, &s, mine, e);

done:
    out->wall_s = profile_now_s() - s.t0;
    out->forward_s = s.fwd_s;
    out->quant_s = workers[0].qt ? s.quant_s : NAN;
    out->quant_ops = s.quant_ops;
    out->workers = nworkers;
    if (s.cf.f && fclose(s.cf.f) && !rc)
        rc = err_errno(e, ERR_FAIL, "closing %s", cells_path);
    if (mu_ok)
        pthread_mutex_destroy(&s.mu);
    cJSON_Delete(hdr);
    free(s.have);
    free(s.items);
    free(mine);
    if (rc) {
        /* the tables go back to fp32 whatever happened */
        err_t ign = ERR_INIT;
        for (int i = 0; i < nworkers; i++)
            set_all(qwen2_precision(workers[i].m), out, NULL, &ign);
        profile_matrix_free(out);
    }
    return rc;
}

/* ---- the CSVs ----------------------------------------------------------------------------- */

static void ppl_cells(profile_table_t *w, double ppl, double base, bool with_tolerant, double threshold,
                      bool two_sided)
{
    double d = profile_delta_pct(ppl, base);
    profile_table_num(w, ppl);
    profile_table_num(w, d);
    if (with_tolerant)
        profile_table_bool(w, profile_tolerant(d, threshold, two_sided));
}

int profile_matrix_write_csv(const profile_matrix_t *mx, double threshold_pct, bool two_sided,
                             const char *path, err_t *e)
{
    int f4 = -1, f8 = -1, b8 = index_of_block(mx->blocks, mx->nblocks, 8);
    for (int i = 0; i < mx->nformats; i++) {
        if (mx->formats[i] == MX_FP4_E2M1)
            f4 = i;
        if (mx->formats[i] == MX_FP8_E4M3)
            f8 = i;
    }
    if (f4 < 0 || f8 < 0 || b8 < 0)
        return err_set(e, ERR_INPUT, "%s: the study's columns need mxfp4_e2m1 and mxfp8_e4m3 "
                       "with block 8 in the matrix", path);
    profile_table_t w;
    if (profile_table_open(&w, path, e))
        return e->code;
    const char *study[] = {"layer", "mxfp4_g8_ppl", "mxfp4_g8_delta_pct", "mxfp8_g8_ppl",
                           "mxfp8_g8_delta_pct", "mxfp4_tolerant", "mxfp8_tolerant"};
    for (size_t i = 0; i < sizeof study / sizeof *study; i++)
        profile_table_cell(&w, study[i]);
    char col[96];
    static const char *const suffix[] = {"ppl", "delta_pct", "tolerant"};
    for (int f = 0; f < mx->nformats; f++)
        for (int b = 0; b < mx->nblocks; b++)
            for (int k = 0; k < 3; k++) {
                snprintf(col, sizeof col, "%s_g%d_%s", mx_format_name(mx->formats[f]),
                         mx->blocks[b], suffix[k]);
                profile_table_cell(&w, col);
            }
    profile_table_end(&w);
    const double base = profile_ppl_value(mx->base_nll, mx->tokens);
    for (int l = 0; l < mx->nlayers; l++) {
        profile_table_cell(&w, mx->layers[l]);
        double p4 = profile_matrix_ppl(mx, l, f4, b8), p8 = profile_matrix_ppl(mx, l, f8, b8);
        ppl_cells(&w, p4, base, false, threshold_pct, two_sided);
        ppl_cells(&w, p8, base, false, threshold_pct, two_sided);
        profile_table_bool(&w, profile_tolerant(profile_delta_pct(p4, base), threshold_pct, two_sided));
        profile_table_bool(&w, profile_tolerant(profile_delta_pct(p8, base), threshold_pct, two_sided));
        for (int f = 0; f < mx->nformats; f++)
            for (int b = 0; b < mx->nblocks; b++)
                ppl_cells(&w, profile_matrix_ppl(mx, l, f, b), base, true, threshold_pct,
                          two_sided);
        profile_table_end(&w);
    }
    return profile_table_commit(&w, e);
}

int profile_summary_write_csv(const profile_matrix_t *mx, double threshold_pct, bool two_sided,
                              const char *path, err_t *e)
{
    profile_table_t w;
    if (profile_table_open(&w, path, e))
        return e->code;
    const char *hdr[] = {"row", "format", "block", "ppl", "delta_pct", "tolerant", "tokens",
                         "nll"};
    for (size_t i = 0; i < sizeof hdr / sizeof *hdr; i++)
        profile_table_cell(&w, hdr[i]);
    profile_table_end(&w);
    const double base = profile_ppl_value(mx->base_nll, mx->tokens);
    profile_table_cell(&w, "baseline");
    profile_table_cell(&w, "fp32");
    profile_table_cell(&w, NULL);
    ppl_cells(&w, base, base, true, threshold_pct, two_sided);
    profile_table_int(&w, mx->tokens);
    profile_table_num(&w, mx->base_nll);
    profile_table_end(&w);
    for (int f = 0; f < mx->nformats; f++)
        for (int b = 0; b < mx->nblocks; b++) {
            profile_table_cell(&w, "whole_model");
            profile_table_cell(&w, mx_format_name(mx->formats[f]));
            profile_table_int(&w, mx->blocks[b]);
            ppl_cells(&w, profile_ppl_value(mx->whole_nll[f][b], mx->tokens), base, true,
                      threshold_pct, two_sided);
            profile_table_int(&w, mx->tokens);
            profile_table_num(&w, mx->whole_nll[f][b]);
            profile_table_end(&w);
        }
    return profile_table_commit(&w, e);
}

/* ---- the stage ------------------------------------------------------------------------------ */

char *profile_sibling(const char *output, const char *name)
{
    char *dup = strdup(output);
    if (!dup)
        return NULL;
    char *r = fs_join(dirname(dup), name);
    free(dup);
    return r;
}

int profile_load_evalset(const char *model_dir, const char *eval_path,
                         const data_pair_t *const *pairs, size_t npairs,
                         const profile_eval_opts_t *eo, profile_evalset_t *out, char *desc,
                         size_t desc_n, err_t *e)
{
    memset(out, 0, sizeof *out);
    char *tp = fs_join(model_dir, "tokenizer.json");
    if (!tp)
        return err_set(e, ERR_NOMEM, "out of memory");
    if (!fs_exists(tp)) {
        int rc = err_set(e, ERR_INPUT, "%s: not found (the model directory needs its "
                         "tokenizer to turn the evaluation text into ids)", tp);
        free(tp);
        return rc;
    }
    tok_t *tok = NULL;
    rlhf_text_t txt;
    bool txt_ok = false;
    profile_eval_source_t src;
    bool src_ok = false;
    int rc = tok_load(tp, &tok, e);
    if (!rc && !(rc = rlhf_text_init(&txt, tok, eo->tmpl, eo->max_prompt_tokens,
                                     eo->max_response_tokens, e)))
        txt_ok = true;
    if (!rc && !pairs && !(rc = profile_eval_source_load(eval_path, eo->split, &src, e)))
        src_ok = true;
    if (!rc)
        rc = profile_evalset_from_pairs(&txt, pairs ? pairs : src.pairs, pairs ? npairs : src.n,
                                        eo->score, eo->tokens, eo->batch_tokens, out, e);
    if (!rc && desc && src_ok)
        snprintf(desc, desc_n, "%s", src.desc);
    if (src_ok)
        profile_eval_source_free(&src);
    if (txt_ok)
        rlhf_text_free(&txt);
    tok_free(tok);
    free(tp);
    return rc;
}

static int write_record(const char *path, const sensitivity_opts_t *o,
                        const sensitivity_paths_t *pa, const char *desc,
                        const profile_evalset_t *es, const profile_matrix_t *mx, err_t *e)
{
    char hx[17], cpu[256];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "format", "mxrlhf-sensitivity-metrics");
    cJSON_AddNumberToObject(r, "version", 1);
    cJSON_AddStringToObject(r, "model", pa->model_dir);
    profile_hex64(mx->model_fingerprint, hx);
    cJSON_AddStringToObject(r, "model_fingerprint", hx);
    cJSON *ev = cJSON_AddObjectToObject(r, "eval");
    cJSON_AddStringToObject(ev, "source", desc);
    cJSON_AddStringToObject(ev, "score", profile_score_name(o->eval.score));
    cJSON_AddStringToObject(ev, "template", rlhf_template_name(o->eval.tmpl));
    cJSON_AddNumberToObject(ev, "tokens_requested", (double)es->requested);
    cJSON_AddNumberToObject(ev, "tokens", (double)es->tokens);
    cJSON_AddNumberToObject(ev, "sequences", es->nseq);
    cJSON_AddNumberToObject(ev, "batches", es->nbatch);
    profile_hex64(es->fingerprint, hx);
    cJSON_AddStringToObject(ev, "fingerprint", hx);
    cJSON_AddItemToObject(r, "options", opts_to_json(&sensitivity_opts_table, o));
    cJSON_AddNumberToObject(r, "baseline_ppl", profile_ppl_value(mx->base_nll, mx->tokens));
    cJSON_AddNumberToObject(r, "layers", mx->nlayers);
    cJSON_AddNumberToObject(r, "cells", 1 + (double)mx->nlayers * mx->nformats * mx->nblocks +
                                            mx->nformats * mx->nblocks);
    cJSON_AddNumberToObject(r, "cells_run", (double)mx->cells_run);
    cJSON_AddNumberToObject(r, "cells_resumed", (double)mx->cells_resumed);
    cJSON *t = cJSON_AddObjectToObject(r, "timing");
    cJSON_AddStringToObject(t, "note", dist_size(pa->comm) > 1
                                           ? "every rank's work (resumed cells excluded): "
                                             "forward_s and quantize_s summed over the ranks, "
                                             "wall_s rank 0's; quantize_s is inside forward_s"
                                           : "this process's work only (resumed cells excluded); "
                                             "quantize_s is inside forward_s");
    cJSON_AddNumberToObject(t, "wall_s", mx->wall_s);
    cJSON_AddNumberToObject(t, "forward_s", mx->forward_s);
    cJSON_AddNumberToObject(t, "quantize_s", mx->quant_s);
    cJSON_AddNumberToObject(t, "quantize_share_of_forward",
                            mx->forward_s > 0 ? mx->quant_s / mx->forward_s : 0);
    cJSON_AddNumberToObject(t, "quantized_operands", (double)mx->quant_ops);
    cJSON_AddStringToObject(t, "backend", o->backend);
    cJSON_AddNumberToObject(t, "workers", mx->workers);
    if (dist_size(pa->comm) > 1) /* only then: one process's record stays as it was */
        cJSON_AddNumberToObject(t, "ranks", dist_size(pa->comm));
    profile_cpu_name(cpu, sizeof cpu);
    cJSON_AddStringToObject(t, "cpu", cpu);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cJSON_AddNumberToObject(t, "cpus_online", (double)ncpu);
    const char *omp = getenv("OMP_NUM_THREADS");
    cJSON_AddStringToObject(t, "omp_num_threads", omp ? omp : "");
    int rc = json_write_file(path, r, true, e);
    cJSON_Delete(r);
    return rc;
}

int profile_sensitivity_run(const sensitivity_opts_t *o, const sensitivity_paths_t *pa,
                            profile_progress_fn progress, void *pctx, profile_sens_result_t *res,
                            err_t *e)
{
    if (sensitivity_opts_check(o, "sensitivity options", e))
        return e->code;
    if (!pa->model_dir || (!pa->eval_path && !pa->pairs) || !pa->output)
        return err_set(e, ERR_INPUT, "sensitivity: needs a model directory, evaluation data "
                       "and an output path");
    char *summary = profile_sibling(pa->output, "sensitivity_summary.csv");
    const int rank = dist_rank(pa->comm);
    char cname[64] = "sensitivity_cells.jsonl";
    if (rank > 0)
        snprintf(cname, sizeof cname, "sensitivity_cells.rank%d.jsonl", rank);
    char *cells = profile_sibling(pa->output, cname);
    char *record = profile_sibling(pa->output, "sensitivity_metrics.json");
    char *dir = strdup(pa->output);
    profile_evalset_t es = {0};
    profile_matrix_t mx = {0};
    profile_worker_t *w = NULL;
    int nw = 0;
    char desc[512] = "";
    int rc;
    if (!summary || !cells || !record || !dir) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = fs_mkdir_p(dirname(dir), e)))
        goto done;
    if (pa->pairs)
        snprintf(desc, sizeof desc, "%s", pa->eval_desc ? pa->eval_desc : "given pairs");
    if ((rc = profile_load_evalset(pa->model_dir, pa->eval_path, pa->pairs, pa->npairs,
                                   &o->eval, &es, desc, sizeof desc, e)))
        goto done;
    if ((nw = profile_auto_workers(pa->model_dir, o->backend, o->workers, e)) < 0) {
        rc = e->code;
        goto done;
    }
    if ((rc = profile_workers_open(pa->model_dir, &es, nw, o->backend, &w, e)))
        goto done;
    if ((rc = profile_sensitivity_sweep_ranks(pa->comm, w, nw, &es, o, cells, pa->resume,
                                              progress, pctx, &mx, e)))
        goto done;
    if (rank == 0 && ((rc = profile_matrix_write_csv(&mx, o->threshold_pct, o->two_sided, pa->output, e)) ||
        (rc = profile_summary_write_csv(&mx, o->threshold_pct, o->two_sided, summary, e)) ||
        (rc = write_record(record, o, pa, desc, &es, &mx, e))))
        goto done;
    if (res)
        *res = (profile_sens_result_t){
            .layers = mx.nlayers, .workers = mx.workers, .tokens = mx.tokens,
            .cells_run = mx.cells_run, .cells_resumed = mx.cells_resumed,
            .baseline_ppl = profile_ppl_value(mx.base_nll, mx.tokens), .wall_s = mx.wall_s,
            .forward_s = mx.forward_s, .quant_s = mx.quant_s};
done:
    profile_matrix_free(&mx);
    profile_workers_close(w, nw);
    profile_evalset_free(&es);
    free(summary);
    free(cells);
    free(record);
    free(dir);
    return rc;
}
