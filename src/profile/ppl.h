/* ppl: perplexity of a model on a fixed evaluation set, with the residual stream cached
 * so that a change in layer L only re-runs the model from L onward.
 *
 * The perplexity is exp(NLL / tokens) with NLL = -sum of log p(target) over the set's
 * scored positions, summed in double in a fixed order (batches, rows, positions), so the
 * same model, table and set give the same bits every time.
 *
 * The cache holds, for every batch, the residual stream entering one decoder layer
 * (qwen2_forward_range's x_out), computed under the table in force when it was built.
 * A measurement "from layer L" starts each batch there. That equals a whole forward as
 * long as nothing before layer L differs from the table the cache was built with, which
 * is the caller's promise (the sensitivity sweep changes only layer L's entries, or
 * lm_head's when L == layers).
 */
#ifndef MXRLHF_PROFILE_PPL_H
#define MXRLHF_PROFILE_PPL_H

#include "model/qwen2.h"
#include "profile/evalset.h"
#include "util/err.h"

typedef struct profile_ppl {
    qwen2_model_t *m;                /* borrowed */
    const profile_evalset_t *es;     /* borrowed */
    float **x;                       /* per batch: (B*T, hidden), entering layer `layer` */
    int layer;                       /* -1: no cache yet */
    float *logp;                     /* scratch (largest batch) */
    double fwd_s;                    /* seconds in forward passes (and log-probs) */
    long batch_forwards;             /* batch forwards run, complete or partial */
    double layer_units;              /* decoder-layer equivalents run (the head counted by FLOPs) */
} profile_ppl_t;

int profile_ppl_init(profile_ppl_t *p, qwen2_model_t *m, const profile_evalset_t *es, err_t *e);
void profile_ppl_free(profile_ppl_t *p);

/* NLL over the whole set with a full forward per batch (nothing cached is used). */
int profile_ppl_full(profile_ppl_t *p, const prec_ctx_t *ctx, double *nll, err_t *e);

/* Builds the cache entering `layer` (0..layers): from the cache in place when it sits at
 * or before `layer`, else from the embedding, under the current table. */
int profile_ppl_cache(profile_ppl_t *p, const prec_ctx_t *ctx, int layer, err_t *e);

/* NLL over the set starting every batch from the cache (which must sit at `layer`). */
int profile_ppl_from(profile_ppl_t *p, const prec_ctx_t *ctx, int layer, double *nll,
                     err_t *e);

/* A model on its own CPU backend, wrapped in the timing backend (profile/qtime.h): what
 * measures perplexities, one per worker thread. */
#define PROFILE_MAX_WORKERS 64
#define PROFILE_SMALL_MODEL_PARAMS 64000000L

typedef struct profile_worker {
    backend_t *be, *qt;     /* the compute backend, and the timing wrapper around it */
    qwen2_model_t *m;       /* runs on qt */
} profile_worker_t;

/* n copies of a model directory on backend `backend` ("cpu"; be_open's names), each
 * sized for the set's largest batch. */
int profile_workers_open(const char *dir, const profile_evalset_t *es, int n,
                         const char *backend, profile_worker_t **out, err_t *e);
void profile_workers_close(profile_worker_t *w, int n);

/* The workers for a directory: automatic (requested 0) is, on the CPU backend, one per
 * core for models under PROFILE_SMALL_MODEL_PARAMS parameters, whose ops are too small to
 * spread over cores, else one using every core; on another backend (a GPU) one. -1 on
 * error. */
int profile_auto_workers(const char *dir, const char *backend, long requested, err_t *e);

/* exp(nll / tokens). */
double profile_ppl_value(double nll, long tokens);

/* The lm_head's cost in decoder-layer equivalents (by multiply-adds per token), for time
 * estimates. */
double profile_head_units(const qwen2_config_t *c);

#endif
