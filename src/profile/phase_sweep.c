/* phase_sweep: the phase sensitivity's sweep over layers, formats and block sizes, spread
 * over workers, with its resume record, its CSVs and the stage (phase.h). The measuring
 * itself is phase.c's. */
#include <libgen.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "profile/common.h"
#include "profile/phase.h"
#include "profile/phase_internal.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

#define CELLS_FORMAT "mxrlhf-phase-cells"

void profile_phase_matrix_free(profile_phase_matrix_t *mx)
{
    if (!mx)
        return;
    for (int i = 0; i < mx->nlayers; i++)
        free(mx->layers[i]);
    free(mx->layers);
    free(mx->v);
    memset(mx, 0, sizeof *mx);
}

const double *profile_phase_cell(const profile_phase_matrix_t *mx, int layer, int fi, int bj)
{
    return &mx->v[(((size_t)layer * mx->nformats + fi) * mx->nblocks + bj) * PHASE_NVALUES];
}

/* ---- the work --------------------------------------------------------------------------- */

typedef struct item {
    int l, f, b;        /* l = -1: whole model */
    size_t slot;
    double units;
} item_t;

typedef struct sweep {
    profile_phase_t *p;
    const phase_sensitivity_opts_t *o;
    profile_phase_matrix_t *mx;
    item_t *items;
    long nitems;
    bool *have;
    size_t ncell;       /* layer slots; whole-model slots follow */
    const char *cells_path; /* the resume record (for messages) */
    double t0;
    profile_phase_progress_fn progress;
    void *pctx;
    pthread_mutex_t mu;
    long next, done;
    int rc;
    err_t err;
    profile_record_t rec;
    double units_done, units_left;
} sweep_t;

static double *slot_values(profile_phase_matrix_t *mx, size_t ncell, size_t slot)
{
    if (slot < ncell)
        return &mx->v[slot * PHASE_NVALUES];
    slot -= ncell;
    return mx->whole[slot / (size_t)mx->nblocks][slot % (size_t)mx->nblocks];
}

static mx_spec_t spec_of(const phase_sensitivity_opts_t *o, int f, int b)
{
    return sensitivity_spec(&o->sweep, f, b);
}

/* "kl 0.0123, reward 0.512 (-0.004)" and the like, for progress lines. */
static void values_text(prec_phase_t ph, const double *v, const double *base, char *buf, size_t n)
{
    switch (ph) {
    case PREC_ROLLOUT:
        snprintf(buf, n, "kl %.4g, reward %.4f (%+.4f)", v[0], v[1], v[1] - base[1]);
        break;
    case PREC_REWARD:
        snprintf(buf, n, "accuracy %.4f (%+.2f points), spearman %.4f", v[0],
                 100 * (v[0] - base[0]), v[1]);
        break;
    default:
        snprintf(buf, n, "cosine %.6f, rel_error %.4g", v[0], v[1]);
        break;
    }
}

/* Called with the lock held. */
static void report(sweep_t *s, const item_t *it, const double *v)
{
    s->done++;
    s->units_left -= it->units;
    s->units_done += it->units;
    if (!s->progress)
        return;
    char st[64];
    mx_spec_t sp = spec_of(s->o, it->f, it->b);
    mx_spec_format(&sp, st, sizeof st);
    double el = profile_now_s() - s->t0;
    profile_phase_progress_t pr = {
        .done = s->done, .total = s->nitems, .resumed = s->mx->cells_resumed,
        .what = it->l < 0 ? "whole_model" : s->mx->layers[it->l], .spec = st,
        .elapsed_s = el,
        .left_s = s->units_done > 0 ? el / s->units_done * s->units_left : NAN,
    };
    values_text(s->mx->phase, v, s->mx->base, pr.values, sizeof pr.values);
    s->progress(s->pctx, &pr);
}

static int record_cell(sweep_t *s, const item_t *it, const double *v, double seconds, err_t *e)
{
    char st[64];
    mx_spec_t sp = spec_of(s->o, it->f, it->b);
    cJSON *j = cJSON_CreateObject(), *a = cJSON_CreateArray();
    cJSON_AddStringToObject(j, "cell", it->l < 0 ? "whole_model" : "layer");
    if (it->l >= 0)
        cJSON_AddStringToObject(j, "layer", s->mx->layers[it->l]);
    cJSON_AddStringToObject(j, "spec", mx_spec_format(&sp, st, sizeof st));
    for (int k = 0; k < PHASE_NVALUES; k++)
        cJSON_AddItemToArray(a, profile_json_exact(v[k]));
    cJSON_AddItemToObject(j, "values", a);
    cJSON_AddNumberToObject(j, "seconds", seconds);
    return profile_record_append(&s->rec, j, e);
}

typedef struct worker_arg {
    sweep_t *s;
    int w, threads;
} worker_arg_t;

static void *worker_main(void *arg)
{
    worker_arg_t *wa = arg;
    sweep_t *s = wa->s;
    omp_set_num_threads(wa->threads);
    err_t e = ERR_INIT;
    int rc = ERR_OK;
    while (!rc) {
        pthread_mutex_lock(&s->mu);
        while (s->next < s->nitems && s->have[s->items[s->next].slot])
            s->next++;
        long k = s->rc || s->next >= s->nitems ? -1 : s->next++;
        pthread_mutex_unlock(&s->mu);
        if (k < 0)
            break;
        const item_t *it = &s->items[k];
        mx_spec_t sp = spec_of(s->o, it->f, it->b);
        double v[PHASE_NVALUES], t = profile_now_s();
        if ((rc = profile_phase_measure(s->p, wa->w, it->l < 0 ? NULL : s->mx->layers[it->l], &sp,
                                        v, &e)))
            break;
        pthread_mutex_lock(&s->mu);
        memcpy(slot_values(s->mx, s->ncell, it->slot), v, sizeof v);
        rc = record_cell(s, it, v, profile_now_s() - t, &e);
        if (!rc) {
            s->have[it->slot] = true;
            s->mx->cells_run++;
            report(s, it, v);
        }
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    if (rc && !s->rc) {
        s->rc = rc;
        s->err = e;
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the record -------------------------------------------------------------------------- */

static cJSON *cells_header(const profile_phase_t *p, int nlayers)
{
    char hx[17];
    profile_hex64(profile_phase__fingerprint(p), hx);
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "format", CELLS_FORMAT);
    cJSON_AddNumberToObject(h, "version", 1);
    cJSON_AddStringToObject(h, "phase", prec_phase_name(profile_phase__phase(p)));
    cJSON_AddStringToObject(h, "fingerprint", hx);
    cJSON_AddNumberToObject(h, "layers", nlayers);
    return h;
}

/* The slot of a record line, or -1 for a cell this sweep does not measure. */
static long slot_of(const sweep_t *s, const char *kind, const char *layer, const char *spec_text)
{
    mx_spec_t sp;
    err_t e = ERR_INIT;
    const sensitivity_opts_t *o = &s->o->sweep;
    if (!spec_text || mx_spec_parse(spec_text, &sp, &e) || sp.round != o->round ||
        sp.scale != o->scale)
        return -1;
    int fi = -1, bj = -1;
    for (int i = 0; i < o->nformats; i++)
        if (o->formats[i] == sp.format)
            fi = i;
    for (int i = 0; i < o->nblocks; i++)
        if (o->blocks[i] == sp.block)
            bj = i;
    if (fi < 0 || bj < 0)
        return -1;
    if (!strcmp(kind, "whole_model"))
        return (long)(s->ncell + (size_t)fi * o->nblocks + bj);
    if (strcmp(kind, "layer") || !layer)
        return -1;
    for (int l = 0; l < s->mx->nlayers; l++)
        if (!strcmp(s->mx->layers[l], layer))
            return (long)(((size_t)l * o->nformats + fi) * o->nblocks + bj);
    return -1;
}

/* One cell line of the record (profile_record_read): its values into the cell's slot. */
static int cell_line(void *ctx, const cJSON *j, int lineno, err_t *e)
{
    sweep_t *s = ctx;
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(j, "cell"),
                *layer = cJSON_GetObjectItemCaseSensitive(j, "layer"),
                *spec = cJSON_GetObjectItemCaseSensitive(j, "spec"),
                *vals = cJSON_GetObjectItemCaseSensitive(j, "values");
    if (!cJSON_IsString(kind) || !cJSON_IsArray(vals) || cJSON_GetArraySize(vals) != PHASE_NVALUES)
        return err_set(e, ERR_INPUT, "%s: line %d: expected \"cell\" and %d \"values\"",
                       s->cells_path, lineno, PHASE_NVALUES);
    long k = slot_of(s, kind->valuestring, cJSON_IsString(layer) ? layer->valuestring : NULL,
                     cJSON_IsString(spec) ? spec->valuestring : NULL);
    if (k >= 0) {
        double *dst = slot_values(s->mx, s->ncell, (size_t)k);
        for (int i = 0; i < PHASE_NVALUES; i++) {
            const cJSON *x = cJSON_GetArrayItem(vals, i);
            dst[i] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
        }
        if (!s->have[k])
            s->mx->cells_resumed++;
        s->have[k] = true;
    }
    return ERR_OK;
}

/* ---- the sweep ---------------------------------------------------------------------------- */

int profile_phase_sweep(profile_phase_t *p, const char *cells_path, bool resume,
                        profile_phase_progress_fn progress, void *pctx,
                        profile_phase_matrix_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    const phase_sensitivity_opts_t *o = profile_phase__opts(p);
    const sensitivity_opts_t *so = &o->sweep;
    sweep_t s = {.p = p, .o = o, .mx = out, .progress = progress, .pctx = pctx,
                 .t0 = profile_now_s()};
    out->phase = profile_phase__phase(p);
    out->nformats = so->nformats;
    out->nblocks = so->nblocks;
    memcpy(out->formats, so->formats, sizeof so->formats);
    memcpy(out->blocks, so->blocks, sizeof so->blocks);
    out->round = so->round;
    out->scale = so->scale;
    out->fingerprint = profile_phase__fingerprint(p);
    out->workers = profile_phase__workers(p);
    memcpy(out->base, profile_phase_baseline(p), sizeof out->base);
    const int nl = profile_phase_nlayers(p), nspec = so->nformats * so->nblocks;
    int rc = ERR_OK;
    cJSON *hdr = NULL;
    bool mu_ok = false;
    out->layers = err_calloc(e, (size_t)(nl ? nl : 1), sizeof *out->layers, "layer names");
    if (!out->layers)
        return e->code;
    for (int i = 0; i < nl; i++) {
        if (!(out->layers[i] = strdup(profile_phase_layer(p, i)))) {
            profile_phase_matrix_free(out);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
        out->nlayers++;
    }
    s.ncell = (size_t)nl * nspec;
    s.nitems = (long)s.ncell + nspec;
    out->v = err_malloc(e, (s.ncell ? s.ncell : 1) * PHASE_NVALUES * sizeof *out->v, "the matrix");
    s.have = err_calloc(e, (size_t)s.nitems, sizeof *s.have, "the matrix");
    s.items = err_calloc(e, (size_t)s.nitems, sizeof *s.items, "the work list");
    if (!out->v || !s.have || !s.items) {
        rc = e->code;
        goto done;
    }
    for (size_t i = 0; i < s.ncell * PHASE_NVALUES; i++)
        out->v[i] = NAN;
    for (int f = 0; f < SENS_MAX_FORMATS; f++)
        for (int b = 0; b < SENS_MAX_BLOCKS; b++)
            for (int k = 0; k < PHASE_NVALUES; k++)
                out->whole[f][b][k] = NAN;
    /* layers in table order (the reward phase's residual caches move forward), then the
       whole model */
    long k = 0;
    for (int l = 0; l < nl; l++)
        for (int f = 0; f < so->nformats; f++)
            for (int b = 0; b < so->nblocks; b++, k++)
                s.items[k] = (item_t){l, f, b, (size_t)k, profile_phase__units(p, l)};
    for (int f = 0; f < so->nformats; f++)
        for (int b = 0; b < so->nblocks; b++, k++)
            s.items[k] = (item_t){-1, f, b, (size_t)k, profile_phase__units(p, -1)};

    hdr = cells_header(p, nl);
    size_t valid = 0; /* 0: a fresh record (no resume, or nothing usable in the old one) */
    if (resume && fs_exists(cells_path)) {
        static const char *const keys[] = {"format", "phase", "fingerprint"};
        static const char *const what[] = {"purpose", "phase", "model, data or settings"};
        s.cells_path = cells_path;
        if ((rc = profile_record_read(cells_path, hdr, keys, what, 3, cell_line, &s, &valid, e)))
            goto done;
    }
    if ((rc = profile_record_open(&s.rec, cells_path, hdr, valid, e)))
        goto done;
    for (long i = 0; i < s.nitems; i++) {
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
    int nw = out->workers, left = (int)(s.nitems - s.done);
    if (nw > left)
        nw = left > 0 ? left : 1;
    int cores = omp_get_max_threads();
    int per = cores / nw > 0 ? cores / nw : 1;
    pthread_t th[PROFILE_MAX_WORKERS];
    worker_arg_t wa[PROFILE_MAX_WORKERS];
    int started = 0;
    for (int i = 0; i < nw && i < PROFILE_MAX_WORKERS; i++) {
        wa[i] = (worker_arg_t){&s, i, per};
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

done:
    out->wall_s = profile_now_s() - s.t0;
    for (int i = 0; i < out->workers; i++)
        out->measure_s += profile_phase__measure_s(p, i);
    if (s.rec.f && fclose(s.rec.f) && !rc)
        rc = err_errno(e, ERR_FAIL, "closing %s", cells_path);
    if (mu_ok)
        pthread_mutex_destroy(&s.mu);
    cJSON_Delete(hdr);
    free(s.have);
    free(s.items);
    if (rc)
        profile_phase_matrix_free(out);
    return rc;
}

/* ---- the CSVs ------------------------------------------------------------------------------- */

static void metric_cells(profile_table_t *w, prec_phase_t ph, const double *v, const double *base)
{
    const char *const *names;
    int nc = profile_phase_columns(ph, &names);
    double cols[PHASE_MAX_COLUMNS];
    profile_phase_derive(ph, v, base, cols);
    for (int c = 0; c < nc; c++)
        profile_table_num(w, cols[c]);
}

int profile_phase_write_csv(const profile_phase_matrix_t *mx, const phase_sensitivity_opts_t *o,
                            const char *path, err_t *e)
{
    int f4 = -1, f8 = -1, b8 = -1;
    for (int i = 0; i < mx->nformats; i++) {
        if (mx->formats[i] == MX_FP4_E2M1)
            f4 = i;
        if (mx->formats[i] == MX_FP8_E4M3)
            f8 = i;
    }
    for (int i = 0; i < mx->nblocks; i++)
        if (mx->blocks[i] == 8)
            b8 = i;
    if (f4 < 0 || f8 < 0 || b8 < 0)
        return err_set(e, ERR_INPUT, "%s: the study's columns need mxfp4_e2m1 and mxfp8_e4m3 "
                       "with block 8", path);
    const char *const *names;
    int nc = profile_phase_columns(mx->phase, &names);
    profile_table_t w;
    if (profile_table_open(&w, path, e))
        return e->code;
    char col[96];
    /* the study's first columns, this phase's metrics in place of ppl and delta_pct */
    profile_table_cell(&w, "layer");
    for (int s = 0; s < 2; s++)
        for (int c = 0; c < nc; c++) {
            snprintf(col, sizeof col, "%s_g8_%s", s ? "mxfp8" : "mxfp4", names[c]);
            profile_table_cell(&w, col);
        }
    profile_table_cell(&w, "mxfp4_tolerant");
    profile_table_cell(&w, "mxfp8_tolerant");
    for (int f = 0; f < mx->nformats; f++)
        for (int b = 0; b < mx->nblocks; b++) {
            for (int c = 0; c <= nc; c++) {
                snprintf(col, sizeof col, "%s_g%d_%s", mx_format_name(mx->formats[f]),
                         mx->blocks[b], c < nc ? names[c] : "tolerant");
                profile_table_cell(&w, col);
            }
        }
    profile_table_end(&w);
    for (int l = 0; l < mx->nlayers; l++) {
        profile_table_cell(&w, mx->layers[l]);
        const double *v4 = profile_phase_cell(mx, l, f4, b8), *v8 = profile_phase_cell(mx, l, f8, b8);
        metric_cells(&w, mx->phase, v4, mx->base);
        metric_cells(&w, mx->phase, v8, mx->base);
        profile_table_bool(&w, profile_phase_tolerant(o, mx->phase, v4, mx->base));
        profile_table_bool(&w, profile_phase_tolerant(o, mx->phase, v8, mx->base));
        for (int f = 0; f < mx->nformats; f++)
            for (int b = 0; b < mx->nblocks; b++) {
                const double *v = profile_phase_cell(mx, l, f, b);
                metric_cells(&w, mx->phase, v, mx->base);
                profile_table_bool(&w, profile_phase_tolerant(o, mx->phase, v, mx->base));
            }
        profile_table_end(&w);
    }
    return profile_table_commit(&w, e);
}

int profile_phase_write_summary(const profile_phase_matrix_t *mx,
                                const phase_sensitivity_opts_t *o, const char *path, err_t *e)
{
    const char *const *names;
    int nc = profile_phase_columns(mx->phase, &names);
    profile_table_t w;
    if (profile_table_open(&w, path, e))
        return e->code;
    profile_table_cell(&w, "row");
    profile_table_cell(&w, "format");
    profile_table_cell(&w, "block");
    for (int c = 0; c < nc; c++)
        profile_table_cell(&w, names[c]);
    profile_table_cell(&w, "tolerant");
    profile_table_end(&w);
    profile_table_cell(&w, "baseline");
    profile_table_cell(&w, "fp32");
    profile_table_cell(&w, NULL);
    metric_cells(&w, mx->phase, mx->base, mx->base);
    profile_table_bool(&w, profile_phase_tolerant(o, mx->phase, mx->base, mx->base));
    profile_table_end(&w);
    for (int f = 0; f < mx->nformats; f++)
        for (int b = 0; b < mx->nblocks; b++) {
            profile_table_cell(&w, "whole_model");
            profile_table_cell(&w, mx_format_name(mx->formats[f]));
            profile_table_int(&w, mx->blocks[b]);
            metric_cells(&w, mx->phase, mx->whole[f][b], mx->base);
            profile_table_bool(&w, profile_phase_tolerant(o, mx->phase, mx->whole[f][b], mx->base));
            profile_table_end(&w);
        }
    return profile_table_commit(&w, e);
}

/* ---- the stage -------------------------------------------------------------------------------- */

static cJSON *thresholds_json(const phase_sensitivity_opts_t *o, prec_phase_t ph)
{
    cJSON *t = cJSON_CreateObject();
    switch (ph) {
    case PREC_ROLLOUT:
        cJSON_AddStringToObject(t, "rule", "kl < rollout_max_kl");
        cJSON_AddNumberToObject(t, "rollout_max_kl", o->rollout_max_kl);
        break;
    case PREC_REWARD:
        cJSON_AddStringToObject(t, "rule", "-accuracy_delta < reward_max_accuracy_drop and "
                                "spearman > reward_min_spearman");
        cJSON_AddNumberToObject(t, "reward_max_accuracy_drop", o->reward_max_accuracy_drop);
        cJSON_AddNumberToObject(t, "reward_min_spearman", o->reward_min_spearman);
        break;
    default:
        cJSON_AddStringToObject(t, "rule", "cosine > gradient_min_cosine");
        cJSON_AddNumberToObject(t, "gradient_min_cosine", o->gradient_min_cosine);
        break;
    }
    return t;
}

static int write_metrics(const char *path, prec_phase_t ph, const phase_sensitivity_opts_t *o,
                         const profile_phase_paths_t *pa, const char *desc,
                         const profile_phase_t *p, const profile_phase_matrix_t *mx, err_t *e)
{
    char hx[17], cpu[256];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "format", "mxrlhf-phase-sensitivity-metrics");
    cJSON_AddNumberToObject(r, "version", 1);
    cJSON_AddStringToObject(r, "phase", prec_phase_name(ph));
    if (ph != PREC_REWARD)
        cJSON_AddStringToObject(r, "model", pa->model_dir);
    if (ph != PREC_GRADIENT)
        cJSON_AddStringToObject(r, "reward_model", pa->reward_dir);
    profile_hex64(mx->fingerprint, hx);
    cJSON_AddStringToObject(r, "fingerprint", hx);
    cJSON_AddStringToObject(r, "eval_source", desc);
    cJSON_AddItemToObject(r, "measured_on", profile_phase_describe(p));
    cJSON_AddItemToObject(r, "options", opts_to_json(&phase_sensitivity_opts_table, o));
    cJSON *b = cJSON_AddObjectToObject(r, "baseline");
    const char *const *names;
    int nc = profile_phase_columns(ph, &names);
    double cols[PHASE_MAX_COLUMNS];
    profile_phase_derive(ph, mx->base, mx->base, cols);
    for (int c = 0; c < nc; c++)
        cJSON_AddNumberToObject(b, names[c], cols[c]);
    cJSON_AddItemToObject(r, "tolerance", thresholds_json(o, ph));
    cJSON_AddNumberToObject(r, "layers", mx->nlayers);
    cJSON_AddNumberToObject(r, "cells", (double)mx->nlayers * mx->nformats * mx->nblocks +
                                            mx->nformats * mx->nblocks);
    cJSON_AddNumberToObject(r, "cells_run", (double)mx->cells_run);
    cJSON_AddNumberToObject(r, "cells_resumed", (double)mx->cells_resumed);
    cJSON *t = cJSON_AddObjectToObject(r, "timing");
    cJSON_AddStringToObject(t, "note", "this process's sweep (resumed cells and the baseline "
                            "excluded); measure_s is summed over workers");
    cJSON_AddNumberToObject(t, "wall_s", mx->wall_s);
    cJSON_AddNumberToObject(t, "measure_s", mx->measure_s);
    cJSON_AddStringToObject(t, "backend", o->sweep.backend);
    cJSON_AddNumberToObject(t, "workers", mx->workers);
    profile_cpu_name(cpu, sizeof cpu);
    cJSON_AddStringToObject(t, "cpu", cpu);
    cJSON_AddNumberToObject(t, "cpus_online", (double)sysconf(_SC_NPROCESSORS_ONLN));
    const char *omp = getenv("OMP_NUM_THREADS");
    cJSON_AddStringToObject(t, "omp_num_threads", omp ? omp : "");
    int rc = json_write_file(path, r, true, e);
    cJSON_Delete(r);
    return rc;
}

static char *sibling(const char *output, prec_phase_t ph, const char *suffix)
{
    char name[96];
    snprintf(name, sizeof name, "sensitivity_%s%s", prec_phase_name(ph), suffix);
    return profile_sibling(output, name);
}

int profile_phase_run(prec_phase_t ph, const phase_sensitivity_opts_t *o,
                      const profile_phase_paths_t *pa, profile_phase_progress_fn progress,
                      void *pctx, profile_phase_result_t *res, err_t *e)
{
    if ((unsigned)ph >= PREC_PHASE_COUNT)
        return err_set(e, ERR_INPUT, "phase sensitivity: unknown phase");
    if (phase_sensitivity_opts_check(o, "phase sensitivity options", e))
        return e->code;
    if ((!pa->eval_path && !pa->pairs) || !pa->output)
        return err_set(e, ERR_INPUT, "phase sensitivity: needs evaluation data and an output "
                       "path");
    const char *counted = ph == PREC_REWARD ? pa->reward_dir : pa->model_dir;
    if (!counted)
        return err_set(e, ERR_INPUT, "phase %s: needs %s", prec_phase_name(ph),
                       ph == PREC_REWARD ? "a reward model (--reward-model)"
                                         : "the policy (--model)");
    if (ph == PREC_ROLLOUT && !pa->reward_dir)
        return err_set(e, ERR_INPUT, "phase rollout: needs a reward model (--reward-model) to "
                       "score the samples");
    char *summary = sibling(pa->output, ph, "_summary.csv");
    char *cells = sibling(pa->output, ph, "_cells.jsonl");
    char *record = sibling(pa->output, ph, "_metrics.json");
    char *dir = strdup(pa->output);
    profile_eval_source_t src;
    bool src_ok = false;
    profile_phase_t *p = NULL;
    profile_phase_matrix_t mx = {0};
    char desc[512] = "";
    int rc, nw;
    if (!summary || !cells || !record || !dir) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = fs_mkdir_p(dirname(dir), e)))
        goto done;
    const data_pair_t *const *pairs = pa->pairs;
    size_t npairs = pa->npairs;
    if (pairs) {
        snprintf(desc, sizeof desc, "%s", pa->eval_desc ? pa->eval_desc : "given pairs");
    } else {
        if ((rc = profile_eval_source_load(pa->eval_path, o->sweep.eval.split, &src, e)))
            goto done;
        src_ok = true;
        pairs = src.pairs;
        npairs = src.n;
        snprintf(desc, sizeof desc, "%s", src.desc);
    }
    if ((nw = profile_auto_workers(counted, o->sweep.backend, o->sweep.workers, e)) < 0) {
        rc = e->code;
        goto done;
    }
    profile_phase_inputs_t in = {pa->model_dir, pa->reward_dir, pairs, npairs, pa->ppo, pa->rm};
    if ((rc = profile_phase_open(ph, o, &in, nw, &p, e)) ||
        (rc = profile_phase_sweep(p, cells, pa->resume, progress, pctx, &mx, e)) ||
        (rc = profile_phase_write_csv(&mx, o, pa->output, e)) ||
        (rc = profile_phase_write_summary(&mx, o, summary, e)) ||
        (rc = write_metrics(record, ph, o, pa, desc, p, &mx, e)))
        goto done;
    if (res) {
        memset(res, 0, sizeof *res);
        res->layers = mx.nlayers;
        res->workers = mx.workers;
        res->cells_run = mx.cells_run;
        res->cells_resumed = mx.cells_resumed;
        memcpy(res->base, mx.base, sizeof res->base);
        res->wall_s = mx.wall_s;
        res->measure_s = mx.measure_s;
        for (int f = 0; f < mx.nformats; f++)
            for (int b = 0; b < mx.nblocks; b++) {
                int k = mx.formats[f] == MX_FP4_E2M1 ? 0 : mx.formats[f] == MX_FP8_E4M3 ? 1 : -1;
                if (k < 0 || mx.blocks[b] != 8)
                    continue;
                for (int l = 0; l < mx.nlayers; l++)
                    res->tolerant[k] +=
                        profile_phase_tolerant(o, ph, profile_phase_cell(&mx, l, f, b), mx.base);
            }
    }
done:
    profile_phase_matrix_free(&mx);
    profile_phase_close(p);
    if (src_ok)
        profile_eval_source_free(&src);
    free(summary);
    free(cells);
    free(record);
    free(dir);
    return rc;
}
