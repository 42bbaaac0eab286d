/* ppo_internal: what the PPO trainer's files share, and nobody else.
 *
 * ppo.c        setup, the step loop and the run (rlhf_ppo_run), phase windows, logging
 * ppo_step.c   one step's work: rollouts and scoring, reward inference (rewards, GAE),
 *              the gradient update, the step's statistics
 * ppo_eval.c   evaluation on the held-out prompts and best-of-n
 * ppo_state.c  the files: checkpoint state and resume, the JSONL streams, final outputs
 * ppo_calib.c  per-phase energy calibration after training
 */
#ifndef MXRLHF_RLHF_PPO_INTERNAL_H
#define MXRLHF_RLHF_PPO_INTERNAL_H

#include <stdio.h>

#include "data/synth.h"
#include "model/qwen2.h"
#include "rlhf/ppo.h"
#include "tokenizer/tokenizer.h"

typedef struct prompt {
    rlhf_seq_t seq;      /* prompt ids */
    const char *text;
    int topic;           /* synthetic task's topic, -1 otherwise */
} prompt_t;

typedef struct ppo {
    const ppo_opts_t *o;
    const rlhf_ppo_io_t *io;
    backend_t *be;
    tok_t *tok;
    rlhf_text_t text;
    bool text_ok;
    data_token_counter_t counter;
    qwen2_model_t *policy, *ref, *rm, *critic;
    bool shared_value;            /* value head on the policy */
    int B, M, max_new, T, V;      /* T: longest prompt + max_new; B, M: this rank's */
    dist_comm_t *comm;            /* the ranks (NULL: this process alone) */
    int rank, size;
    int Bg, Mg;                   /* the global batch and minibatch (B x size, M x size) */
    size_t row0;                  /* this rank's first row of the global batch */
    int32_t eot;
    prompt_t *pr, *ev;
    size_t npr, nev;
    long perm_epoch;              /* prompt order of this pass over the prompts */
    size_t *perm;
    /* one step's rollouts and their scoring: (B, max_new) and (B, T) */
    int32_t *resp, *tgt;
    int *resp_len;
    float *roll_logp, *old_logp, *ref_logp, *values, *klv, *rewards, *non_score, *adv, *ret;
    float *scores, *raw_scores, *full_p, *full_q;
    float *roll_bt, *rc_w;        /* (B, T): roll_logp at the batch's positions, and the
                                     rollout-correction weights (ppo_rollout_weights) */
    ppo_rc_stats_t rc;            /* the step's rollout-correction statistics */
    double *synth;
    rlhf_batch_t batch;
    /* a minibatch: (M, T) */
    int32_t *mb_ids, *mb_len, *mb_tgt;
    float *mb_old_logp, *mb_values, *mb_mask, *mb_adv, *mb_ret, *mb_logp, *mb_ent, *mb_vpred,
        *mb_dlogp, *mb_dv, *mb_w;
    ppo_klctl_t kl;
    ppo_running_t running;
    cJSON *stats, *evals, *warnings, *bon;
    cJSON *run;                   /* what the run is (ppo_run_identity), in every checkpoint */
    FILE *jsonl, *samples;
    double phase_s[PREC_PHASE_COUNT];
    double phase_t0;
    bool calibrating;             /* warnings then go to the log only */
} ppo_t;

/* What one PPO step's minibatches add up to (its statistics). */
typedef struct step_acc {
    ppo_mb_stats_t sum;   /* summed over minibatches */
    int n, skipped, opt_steps, epochs;
    long long tokens;     /* response tokens of the minibatches processed (every epoch; skipped
                             minibatches too: their forward ran) */
    double grad_norm;
    bool early_stopped;
} step_acc_t;

static inline size_t ppo_at_least_1(size_t n) { return n ? n : 1; }
/* err_calloc of n (at least 1) elements into ptr, true on failure (needs an err_t *e) */
#define ALLOC(ptr, n)                                                                      \
    (((ptr) = err_calloc(e, ppo_at_least_1((size_t)(n)), sizeof *(ptr), #ptr)) == NULL)

/* ---- ppo.c ---- */
double ppo_now(void); /* monotonic seconds */
void ppo_log(ppo_t *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A warning goes to the log and to training_stats.json (with the step it came from). */
void ppo_warn(ppo_t *P, int step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- ppo_step.c ---- */
/* The B prompts of step `step` (a seeded permutation per pass over the prompts). */
void ppo_step_prompts(ppo_t *P, int step, const prompt_t **rows);
int ppo_generate(ppo_t *P, const prompt_t *const *rows, int n, uint64_t pctx_step,
                 uint64_t stream, err_t *e);
int ppo_rollout(ppo_t *P, const prompt_t *const *rows, int step, err_t *e);
int ppo_make_batch(ppo_t *P, const prompt_t *const *rows, int n, err_t *e);
int ppo_ground_truth_exact(ppo_t *P, const prompt_t *row, int b, double *score,
                           data_synth_score_t *exact, char **text, err_t *e);
int ppo_ground_truth(ppo_t *P, const prompt_t *row, int b, double *score, char **text, err_t *e);
int ppo_rollout_batch(ppo_t *P, const prompt_t *const *rows, char **texts, err_t *e);
int ppo_rm_scores(ppo_t *P, int n, uint64_t pstep, float *out, err_t *e);
int ppo_reward_inference(ppo_t *P, int step, err_t *e);
int ppo_gradient_update(ppo_t *P, int step, step_acc_t *acc, err_t *e);
cJSON *ppo_step_stats(ppo_t *P, int step, double kl_coef, const step_acc_t *a, double t_step,
                      double *kl_out);

/* ---- ppo_eval.c ---- */
cJSON *ppo_num(double v); /* a number, or null when not finite */
double ppo_jnum(const cJSON *o, const char *k);
cJSON *ppo_eval_json(const ppo_eval_t *ev);
void ppo_eval_from_json(const cJSON *j, ppo_eval_t *ev);
int ppo_run_eval(ppo_t *P, int steps_done, bool keep, ppo_eval_t *ev, cJSON *samples, err_t *e);
int ppo_best_of_n(ppo_t *P, err_t *e);

/* ---- ppo_state.c ---- */
char *ppo_out_path(ppo_t *P, const char *name);
int ppo_write_line(FILE *f, const cJSON *j, const char *what, err_t *e);
int ppo_samples_write(ppo_t *P, int step, const prompt_t *const *rows, char **texts, err_t *e);
/* What shapes a run besides its options: each model's directory fingerprint
 * (qwen2_dir_fingerprint), the tokenizer, the precision plan (name and file), the data
 * (io->data: source, pairs, data seed) and the prompts (when io->prompts is set). */
int ppo_run_identity(const ppo_opts_t *o, const rlhf_ppo_io_t *io, cJSON **out, err_t *e);
/* The checkpoint latest.json names against this run: ERR_INPUT naming the field that
 * differs (an option, steps below the steps done, a model, the data, ...) with both values. */
int ppo_resume_check(const ppo_opts_t *o, const rlhf_ppo_io_t *io, const cJSON *run, err_t *e);
cJSON *ppo_state_json(ppo_t *P, int steps_done);
int ppo_state_restore(ppo_t *P, cJSON *st, const char *ctx, err_t *e);
int ppo_open_streams(ppo_t *P, bool resumed, int steps_done, err_t *e);
int ppo_write_final(ppo_t *P, const ppo_eval_t *last, err_t *e);
int ppo_write_eval_samples(ppo_t *P, const cJSON *samples, err_t *e);
int ppo_save_models(ppo_t *P, err_t *e);

/* ---- ppo_calib.c ---- */
int ppo_calibrate(ppo_t *P, err_t *e);

#endif
