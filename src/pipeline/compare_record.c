/* compare_record: one comparison run's record (compare_internal.h): its energy.csv and
 * samples, its modelled cost, the judge's scores and the win rates against the unquantized
 * run of the same seed. */
#include "pipeline/compare_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/csv_read.h"
#include "util/fs.h"
#include "util/json.h"

void cmp_run_free(run_rec_t *r)
{
    for (int i = 0; i < r->nsamples; i++) {
        free(r->samples[i].prompt);
        free(r->samples[i].response);
    }
    free(r->samples);
    r->samples = NULL;
    r->nsamples = 0;
}

/* energy.csv: runtime, energy and its ± per phase (NAN: empty). */
int cmp_read_energy(run_rec_t *r, err_t *e)
{
    char *p = fs_join(r->dir, "energy.csv");
    csv_table_t t;
    int rc = p ? csv_load(p, &t, e) : err_set(e, ERR_NOMEM, "out of memory");
    free(p);
    if (rc)
        return rc;
    int cp, crt, cen, cun, csrc;
    rc = csv_require_col(&t, "phase", &cp, e);
    if (!rc)
        rc = csv_require_col(&t, "runtime_s", &crt, e);
    if (!rc)
        rc = csv_require_col(&t, "energy_J", &cen, e);
    if (!rc)
        rc = csv_require_col(&t, "uncertainty_J", &cun, e);
    if (!rc)
        rc = csv_require_col(&t, "source", &csrc, e);
    for (int k = 0; k < NPH; k++)
        r->runtime[k] = r->energy[k] = r->unc[k] = NAN;
    for (int i = 0; !rc && i < t.nrows; i++)
        for (int k = 0; k < NPH && !rc; k++)
            if (!strcmp(csv_cell(&t, i, cp), phase_name(k))) {
                rc = csv_cell_double(&t, i, crt, &r->runtime[k], e);
                if (!rc)
                    rc = csv_cell_double(&t, i, cen, &r->energy[k], e);
                if (!rc)
                    rc = csv_cell_double(&t, i, cun, &r->unc[k], e);
                if (!rc && k == PH_TOTAL)
                    snprintf(r->source, sizeof r->source, "%s", csv_cell(&t, i, csrc));
            }
    csv_table_free(&t);
    return rc;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* A JSON-lines file, one callback per object. */
int cmp_each_line(const char *path, int (*fn)(void *ctx, const cJSON *j, err_t *e), void *ctx,
                  err_t *e)
{
    char *buf;
    size_t len;
    int rc = fs_read_all(path, (size_t)1 << 30, &buf, &len, e);
    if (rc)
        return rc;
    long line = 0;
    for (char *p = buf; !rc && p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
        line++;
        if (n) {
            cJSON *j = cJSON_ParseWithLength(p, n);
            if (!j)
                rc = err_set(e, ERR_INPUT, "%s:%ld: not a JSON object", path, line);
            else
                rc = fn(ctx, j, e);
            cJSON_Delete(j);
        }
        p += n + 1;
    }
    free(buf);
    return rc;
}

int cmp_add_sample(void *ctx, const cJSON *j, err_t *e)
{
    run_rec_t *r = ctx;
    const cJSON *pi = cJSON_GetObjectItemCaseSensitive(j, "prompt_index");
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "response");
    if (!cJSON_IsNumber(pi) || !cJSON_IsString(pr) || !cJSON_IsString(rs))
        return err_set(e, ERR_INPUT, "%s/" PPO_EVAL_SAMPLES ": expected prompt_index, prompt and "
                       "response in every line", r->dir);
    if (pi->valueint != r->nsamples)
        return err_set(e, ERR_INPUT, "%s/" PPO_EVAL_SAMPLES ": prompt_index %d where %d was "
                       "expected", r->dir, pi->valueint, r->nsamples);
    sample_t *v = realloc(r->samples, (size_t)(r->nsamples + 1) * sizeof *v);
    if (!v)
        return err_set(e, ERR_NOMEM, "out of memory");
    r->samples = v;
    sample_t *s = &v[r->nsamples];
    memset(s, 0, sizeof *s);
    s->judge = NAN;
    s->prompt = strdup(pr->valuestring);
    s->response = strdup(rs->valuestring);
    double num = jnum(j, "data_synth_num"), den = jnum(j, "data_synth_den");
    if (isfinite(num) && isfinite(den) && den > 0) {
        s->num = (long long)num;
        s->den = (long long)den;
    }
    r->nsamples++;
    return s->prompt && s->response ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
}

typedef struct max_tokens {
    int nsteps;
    double *dmax;   /* per step (1-based step - 1) */
} max_tokens_t;

static int add_rollout(void *ctx, const cJSON *j, err_t *e)
{
    (void)e;
    max_tokens_t *m = ctx;
    double step = jnum(j, "step"), tok = jnum(j, "tokens");
    int s = (int)step - 1;
    if (s >= 0 && s < m->nsteps && isfinite(tok) && tok > m->dmax[s])
        m->dmax[s] = tok;
    return ERR_OK;
}

/* ---- modelled cost of one run -------------------------------------------------------------- */

int cmp_run_cost(run_rec_t *r, const plan_info_t *p, const profile_layers_t *lp,
                 const profile_layers_t *lr, const profile_layers_t *lm, const ppo_opts_t *o,
                 err_t *e)
{
    char *sp = fs_join(r->dir, PPO_STATS_JSON), *rp = fs_join(r->dir, "samples.jsonl");
    cJSON *root = NULL;
    max_tokens_t mt = {0, NULL};
    int rc = sp && rp ? json_load_file(sp, 1u << 30, &root, e) : err_set(e, ERR_NOMEM, "oom");
    const cJSON *steps = rc ? NULL : cJSON_GetObjectItemCaseSensitive(root, "steps");
    if (!rc && !cJSON_IsArray(steps))
        rc = err_set(e, ERR_INPUT, "%s: field \"steps\" is missing (expected an array)", sp);
    if (!rc) {
        mt.nsteps = cJSON_GetArraySize(steps);
        mt.dmax = calloc((size_t)mt.nsteps + 1, sizeof *mt.dmax);
        rc = mt.dmax ? cmp_each_line(rp, add_rollout, &mt, e) : err_set(e, ERR_NOMEM, "oom");
    }
    memset(r->cost, 0, sizeof r->cost);
    profile_ppo_models_t m = {lp, lr, lm, p->have_tables ? &p->t_policy : NULL,
                              p->have_tables ? &p->t_ref : NULL, p->have_tables ? &p->t_rm : NULL};
    int k = 0;
    for (const cJSON *s = rc ? NULL : steps->child; s; s = s->next, k++) {
        double q = jnum(s, "tokens/queries_len_mean"), a = jnum(s, "tokens/responses_len_mean");
        if (!isfinite(q) || !isfinite(a)) {
            rc = err_set(e, ERR_INPUT, "%s: step %d lacks tokens/queries_len_mean or "
                         "tokens/responses_len_mean", sp, k + 1);
            break;
        }
        profile_ppo_step_t st = {o->batch_size, q * o->batch_size, a * o->batch_size,
                                 mt.dmax[k] > 0 ? mt.dmax[k] : o->max_new_tokens, o->ppo_epochs,
                                 o->batch_size / o->mini_batch_size};
        profile_cost_ppo_step(&m, &st, r->cost);
    }
    for (int ph = 0; !rc && ph < PROFILE_NPHASES; ph++)
        profile_cost_add(&r->cost[PH_TOTAL], &r->cost[ph], 1);
    cJSON_Delete(root);
    free(mt.dmax);
    free(sp);
    free(rp);
    return rc;
}

/* ---- judging ------------------------------------------------------------------------------ */

/* The judge's score of every run's final samples, two runs per pair list entry (one
 * model load for everything). */
int cmp_judge_runs(const pipeline_compare_t *c, run_rec_t *runs, int nruns, err_t *e)
{
    size_t total = 0;
    for (int i = 0; i < nruns; i += 2)
        total += (size_t)runs[i].nsamples;
    data_pair_t *pairs = calloc(total + 1, sizeof *pairs);
    const data_pair_t **pp = calloc(total + 1, sizeof *pp);
    float *ca = calloc(total + 1, sizeof *ca), *cb = calloc(total + 1, sizeof *cb);
    int rc = pairs && pp && ca && cb ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (int i = 0; !rc && i < nruns; i += 2) {
        run_rec_t *a = &runs[i], *b = &runs[i + 1 < nruns ? i + 1 : i];
        if (a->nsamples != b->nsamples) {
            rc = err_set(e, ERR_FAIL, "%s and %s hold %d and %d evaluation samples", a->dir,
                         b->dir, a->nsamples, b->nsamples);
            break;
        }
        for (int s = 0; s < a->nsamples; s++, k++) {
            pairs[k].prompt = a->samples[s].prompt;
            pairs[k].chosen = a->samples[s].response;
            pairs[k].rejected = b->samples[s].response;
            pp[k] = &pairs[k];
        }
    }
    rlhf_rm_metrics_t m;
    if (!rc && total)
        rc = rlhf_rm_evaluate_dir(c->be, c->judge_opts, c->judge_dir, pp, total, &m, ca, cb, e);
    k = 0;
    for (int i = 0; !rc && i < nruns; i += 2) {
        run_rec_t *a = &runs[i], *b = &runs[i + 1 < nruns ? i + 1 : i];
        for (int s = 0; s < a->nsamples; s++, k++) {
            a->samples[s].judge = ca[k];
            b->samples[s].judge = cb[k];
        }
    }
    free(pairs);
    free(pp);
    free(ca);
    free(cb);
    return rc ? err_prefix(e, "judge %s", c->judge_dir) : ERR_OK;
}

static int cmp_exact(const sample_t *a, const sample_t *b)
{
    if (!a->den || !b->den)
        return 2; /* no ground truth */
    long double l = (long double)a->num * b->den, r = (long double)b->num * a->den;
    return l > r ? 1 : l < r ? -1 : 0;
}

/* Win rates of run a against the baseline run b, prompt by prompt (identical texts tie). */
void cmp_win_rates(run_rec_t *a, const run_rec_t *b, bool synthetic)
{
    int n = a->nsamples < b->nsamples ? a->nsamples : b->nsamples;
    int *cj = calloc((size_t)n + 1, sizeof *cj), *ct = calloc((size_t)n + 1, sizeof *ct);
    double js = 0, ts = 0;
    bool truth = synthetic && n > 0;
    for (int i = 0; cj && ct && i < n; i++) {
        const sample_t *x = &a->samples[i], *y = &b->samples[i];
        bool same = !strcmp(x->response, y->response);
        cj[i] = same ? 0 : profile_cmp(x->judge, y->judge);
        int t = same ? 0 : cmp_exact(x, y);
        if (t == 2)
            truth = false;
        ct[i] = t;
        js += x->judge;
        if (x->den)
            ts += (double)x->num / (double)x->den;
    }
    a->win_judge = cj && ct ? profile_win_rate(cj, n) : NAN;
    a->win_truth = cj && ct && truth ? profile_win_rate(ct, n) : NAN;
    a->judge_mean = n ? js / n : NAN;
    if (!truth)
        a->truth_mean = NAN;
    else if (n)
        a->truth_mean = ts / n;
    free(cj);
    free(ct);
}
