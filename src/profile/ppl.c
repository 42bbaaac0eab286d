/* ppl: perplexity with a cached residual stream (ppl.h). */
#include "profile/ppl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <time.h>

#include "profile/qtime.h"
#include "util/fs.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double profile_head_units(const qwen2_config_t *c)
{
    double H = c->hidden, qd = (double)c->heads * c->head_dim,
           kvd = (double)c->kv_heads * c->head_dim;
    double layer = H * qd * 2 + H * kvd * 2 + 3 * H * c->inter;
    return (double)c->vocab * H / layer;
}

double profile_ppl_value(double nll, long tokens)
{
    return tokens > 0 ? exp(nll / (double)tokens) : NAN;
}

void profile_ppl_free(profile_ppl_t *p)
{
    if (!p)
        return;
    if (p->x && p->es)
        for (int i = 0; i < p->es->nbatch; i++)
            free(p->x[i]);
    free(p->x);
    free(p->logp);
    memset(p, 0, sizeof *p);
}

int profile_ppl_init(profile_ppl_t *p, qwen2_model_t *m, const profile_evalset_t *es, err_t *e)
{
    memset(p, 0, sizeof *p);
    p->m = m;
    p->es = es;
    p->layer = -1;
    p->x = err_calloc(e, (size_t)es->nbatch, sizeof *p->x, "the residual cache");
    p->logp = err_malloc(e, (size_t)es->max_batch_tokens * sizeof *p->logp, "log-probs");
    if (!p->x || !p->logp) {
        profile_ppl_free(p);
        return e->code;
    }
    return ERR_OK;
}

/* NLL of one batch from the log-probs of the last forward. */
static int batch_nll(profile_ppl_t *p, const profile_eval_batch_t *bt, double *nll, err_t *e)
{
    if (qwen2_token_logprobs(p->m, bt->targets, p->logp, NULL, e))
        return e->code;
    double s = 0;
    const size_t cells = (size_t)bt->b.B * bt->b.T;
    for (size_t i = 0; i < cells; i++)
        if (bt->targets[i] >= 0)
            s -= (double)p->logp[i];
    *nll += s;
    return ERR_OK;
}

int profile_ppl_full(profile_ppl_t *p, const prec_ctx_t *ctx, double *nll, err_t *e)
{
    const qwen2_config_t *c = qwen2_config(p->m);
    double t0 = now_s(), s = 0;
    for (int i = 0; i < p->es->nbatch; i++) {
        const profile_eval_batch_t *bt = &p->es->batches[i];
        if (qwen2_forward(p->m, ctx, &bt->b, QWEN2_FWD_LOGITS, e) || batch_nll(p, bt, &s, e))
            return e->code;
        p->batch_forwards++;
        p->layer_units += c->layers + profile_head_units(c);
    }
    p->fwd_s += now_s() - t0;
    *nll = s;
    return ERR_OK;
}

int profile_ppl_cache(profile_ppl_t *p, const prec_ctx_t *ctx, int layer, err_t *e)
{
    const qwen2_config_t *c = qwen2_config(p->m);
    if (layer < 0 || layer > c->layers)
        return err_set(e, ERR_INPUT, "residual cache: layer %d is not within [0, %d]", layer,
                       c->layers);
    if (p->layer == layer)
        return ERR_OK;
    int from = p->layer >= 0 && p->layer < layer ? p->layer : 0;
    double t0 = now_s();
    for (int i = 0; i < p->es->nbatch; i++) {
        const profile_eval_batch_t *bt = &p->es->batches[i];
        size_t n = (size_t)bt->b.B * bt->b.T * c->hidden;
        if (!p->x[i] && !(p->x[i] = malloc(n * sizeof(float)))) {
            p->layer = -1;
            return err_set(e, ERR_NOMEM, "out of memory caching the residual stream");
        }
        /* layers [from, layer): the cache at `from` is the input when from > 0 */
        if (qwen2_forward_range(p->m, ctx, &bt->b, from, layer, from ? p->x[i] : NULL, p->x[i],
                                0, e)) {
            p->layer = -1;
            return e->code;
        }
        p->batch_forwards++;
        p->layer_units += layer - from;
    }
    p->fwd_s += now_s() - t0;
    p->layer = layer;
    return ERR_OK;
}

int profile_ppl_from(profile_ppl_t *p, const prec_ctx_t *ctx, int layer, double *nll, err_t *e)
{
    const qwen2_config_t *c = qwen2_config(p->m);
    if (p->layer != layer)
        return err_set(e, ERR_INPUT, "residual cache sits at layer %d, not %d", p->layer, layer);
    double t0 = now_s(), s = 0;
    for (int i = 0; i < p->es->nbatch; i++) {
        const profile_eval_batch_t *bt = &p->es->batches[i];
        if (qwen2_forward_range(p->m, ctx, &bt->b, layer, c->layers, layer ? p->x[i] : NULL,
                                NULL, QWEN2_FWD_LOGITS, e) ||
            batch_nll(p, bt, &s, e))
            return e->code;
        p->batch_forwards++;
        p->layer_units += c->layers - layer + profile_head_units(c);
    }
    p->fwd_s += now_s() - t0;
    *nll = s;
    return ERR_OK;
}

/* ---- workers ----------------------------------------------------------------------------- */

void profile_workers_close(profile_worker_t *w, int n)
{
    if (!w)
        return;
    for (int i = 0; i < n; i++) {
        qwen2_free(w[i].m);
        be_close(w[i].qt);
        be_close(w[i].be);
    }
    free(w);
}

int profile_workers_open(const char *dir, const profile_evalset_t *es, int n,
                         const char *backend, profile_worker_t **out, err_t *e)
{
    *out = NULL;
    if (n < 1 || n > PROFILE_MAX_WORKERS)
        return err_set(e, ERR_INPUT, "workers: %d is not in [1, %d]", n, PROFILE_MAX_WORKERS);
    profile_worker_t *w = err_calloc(e, (size_t)n, sizeof *w, "workers");
    if (!w)
        return e->code;
    /* activations for the largest batch: the longest row, and rows x length of the
       biggest batch */
    qwen2_opts_t mo = {
        .max_seq = es->max_seq,
        .max_batch = (int)((es->max_batch_tokens + es->max_seq - 1) / es->max_seq),
        .heads = QWEN2_HEAD_LM,
        .role = PREC_MODEL_POLICY,
    };
    for (int i = 0; i < n; i++) {
        if (be_open(backend, &w[i].be, e) || profile_qtime_open(w[i].be, &w[i].qt, e) ||
            qwen2_open_dir(dir, w[i].qt, &mo, &w[i].m, e)) {
            profile_workers_close(w, n);
            return e->code;
        }
    }
    *out = w;
    return ERR_OK;
}

int profile_auto_workers(const char *dir, const char *backend, long requested, err_t *e)
{
    if (requested > 0)
        return requested > PROFILE_MAX_WORKERS ? PROFILE_MAX_WORKERS : (int)requested;
    if (backend && strcmp(backend, "cpu"))
        return 1;
    char *cp = fs_join(dir, "config.json");
    if (!cp)
        return err_set(e, ERR_NOMEM, "out of memory"), -1;
    qwen2_config_t c;
    int rc = qwen2_config_load(cp, &c, e);
    free(cp);
    if (rc)
        return -1;
    int cores = omp_get_max_threads();
    if (cores > PROFILE_MAX_WORKERS)
        cores = PROFILE_MAX_WORKERS;
    /* small models: one model per core (their ops are too small to split well);
       large ones: one model, every core on each op */
    return qwen2_config_nparams(&c) < PROFILE_SMALL_MODEL_PARAMS ? cores : 1;
}

