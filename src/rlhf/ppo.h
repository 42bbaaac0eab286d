/* ppo: PPO for language models as TRL 0.11's PPOTrainer does it, in C, with the energy
 * layer's phase windows around its three phases.
 *
 * One PPO step (TRL's generate + step):
 *   rollout           batch_size prompts, one sampled response each from the policy
 *                     (temperature, top-k, top-p, max/min new tokens, stop at the end-of-turn
 *                     id), under the plan's rollout phase; the sampled tokens' log-probs
 *                     are kept (rollout-time log-probs)
 *   reward_inference  the reward model's score of each prompt + response, the reference
 *                     model's log-probs, and the policy's old log-probs and values (at the
 *                     gradient phase's precision: they must be what training would compute);
 *                     per-token rewards, GAE advantages and returns
 *   gradient_update   ppo_epochs passes over shuffled minibatches: forward, clipped losses
 *                     (with rollout_correction, the policy loss weighted per token or
 *                     sequence by min(pi_train / pi_rollout, tis_cap)), backward, AdamW
 *                     (global-norm clipping optional)
 * then statistics under TRL's names, the KL controller's update, a checkpoint every
 * checkpoint_every steps. ppo_math.h holds the arithmetic.
 *
 * Randomness: rollout row b of step s draws from Philox stream rng_stream("ppo.rollout",
 * s) + b, prompt order from "ppo.prompts" (one permutation per pass over the prompts),
 * minibatch order from "ppo.minibatch" keyed by (step, epoch), all under opts.seed: a run
 * is a pure function of (inputs, options), the same on any thread count and when resumed
 * from a checkpoint.
 *
 * Outputs in the output directory: training_stats.jsonl (one line per step, written as
 * the step ends), training_stats.json (every step, the options, evaluations and warnings,
 * at the end), samples.jsonl (each rollout's text and scores), eval.json, eval_samples.jsonl (the final
 * evaluation's samples, prompt by prompt), policy/ (the
 * trained policy as a Hugging Face directory with its value head and tokenizer.json),
 * critic/ (separate critic only), checkpoints/ (latest.json naming the newest complete
 * checkpoint), precision_<role>.json (resolved plans, with a plan). docs/ppo.md describes
 * them.
 *
 * With io.calibrate, the run then repeats each phase's work under the energy monitor
 * (energy_calibrate) to measure its steady power; the files above are written first and
 * do not change.
 */
#ifndef MXRLHF_RLHF_PPO_H
#define MXRLHF_RLHF_PPO_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "dist/dist.h"
#include "energy/monitor.h"
#include "rlhf/ppo_data.h"
#include "rlhf/ppo_math.h"
#include "rlhf/text.h"
#include "util/err.h"
#include "util/opts.h"

/* Every hyperparameter, with TRL PPOConfig's name where it has one; the table in
 * ppo_opts.c holds the defaults, ranges and help lines. */
typedef struct ppo_opts {
    /* schedule */
    int steps;
    int batch_size;                   /* rollouts per step */
    int mini_batch_size;
    int gradient_accumulation_steps;
    int ppo_epochs;
    uint64_t seed;
    /* optimizer: TRL builds torch.optim.Adam; AdamW with weight_decay 0 is the same update */
    double learning_rate;
    double adam_beta1, adam_beta2, adam_epsilon;
    double weight_decay;
    double max_grad_norm;             /* 0: no clipping (TRL's None) */
    /* KL penalty */
    ppo_kl_est_t kl_penalty;
    bool adap_kl_ctrl;
    double init_kl_coef;
    double target;
    double horizon;
    /* advantages and losses */
    double gamma, lam;
    bool whiten_rewards;
    double cliprange, cliprange_value, vf_coef;
    double ratio_threshold;
    ppo_rc_t rollout_correction;      /* none: TRL 0.11; tis / seq_tis: verl's truncated
                                         importance weights (ppo_math.h) */
    double tis_cap;                   /* their truncation C */
    bool early_stopping;
    double target_kl;
    bool use_score_scaling, use_score_norm;
    double score_clip;                /* 0: none (TRL's None) */
    /* rollouts */
    int max_new_tokens;
    int min_new_tokens;               /* 0: the end-of-turn id may come at once */
    double temperature;
    int top_k;                        /* 0: off */
    double top_p;                     /* 1: off */
    int max_prompt_tokens;            /* longer prompts keep their last tokens */
    rlhf_template_t template_;        /* "template" */
    /* models */
    bool separate_critic;             /* false: value head on the policy's trunk */
    bool oracle_reward;               /* true: score rollouts with the synthetic task's ground
                                         truth instead of the reward model (a diagnostic that
                                         separates reward-model error from PPO) */
    /* checkpoints and evaluation */
    int checkpoint_every;             /* 0: only at the end */
    int eval_prompts;                 /* held-out prompts (0: no evaluation) */
    int eval_every;                   /* 0: before training and at the end only */
    int best_of_n;                    /* best-of-n from the initial policy (0/1: off) */
} ppo_opts_t;

/* The "ppo" section: defaults, ranges and help in ppo_opts.c's table; reading a section
 * checks ppo_opts_check too. */
extern const opt_table_t ppo_opts_table;
extern const opt_enum_t ppo_kl_enum;
extern const opt_enum_t ppo_rc_enum;
void ppo_opts_default(ppo_opts_t *o);
/* Cross-field checks (batch_size a multiple of mini_batch_size x accumulation, ...). */
int ppo_opts_check(const ppo_opts_t *o, const char *ctx, err_t *e);

/* What a run works on. */
typedef struct rlhf_ppo_io {
    backend_t *be;                  /* every model lives here (the caller opens it) */
    const char *policy_dir;         /* the SFT policy: Hugging Face directory with
                                       tokenizer.json */
    const char *ref_dir;            /* frozen reference (NULL: policy_dir) */
    const char *reward_dir;         /* reward model (score head) */
    const char *critic_dir;         /* separate critic's start (NULL: reward_dir) */
    const char *out_dir;
    const char *policies_path;      /* precision plans, or NULL (fp32) */
    const char *plan;
    const char *const *prompts;     /* PPO prompts (HH shape), cycled through */
    size_t n_prompts;
    const char *const *eval_prompts; /* held-out prompts for evaluation (may be none) */
    size_t n_eval;
    bool synthetic;                 /* prompts of the synthetic task: ground-truth scores */
    energy_monitor_t *monitor;      /* phase windows (NULL: phases are only timed) */
    bool resume;                    /* continue from out_dir/checkpoints/latest.json */
    FILE *log;                      /* progress lines and warnings (NULL: quiet) */
    /* Calibration (needs the monitor; NULL: none): once every output is written, each
     * phase's work is repeated through energy_calibrate, the phase's own code on the last
     * step's prompts: rollout (that batch's responses), reward_inference (its scoring),
     * gradient_update (one PPO update on that batch; the policy, critic and optimizer
     * state are restored afterwards). The seed is offset per phase. */
    const energy_calib_opts_t *calibrate;
    /* How the prompts were drawn (source, pairs, data seed), recorded in every checkpoint
     * so that a resume with other data is refused before it draws anything (NULL: only the
     * prompts themselves are compared). */
    const ppo_data_opts_t *data;
    /* Data parallelism (NULL or one rank: this process alone; docs/distributed.md): the
     * batch_size prompts of a step and each minibatch are split evenly over the ranks
     * (refused when they do not divide), rollouts, scoring and minibatches stay local,
     * whitening, score scaling, the ratio threshold, early stopping and the KL controller
     * use global statistics, and gradients are averaged over the ranks before every
     * optimizer step, so every rank keeps the same weights. Rank 0 writes the outputs; a
     * rank r > 0 should be given a scratch out_dir. No resume, no calibration. */
    dist_comm_t *comm;
} rlhf_ppo_io_t;

/* Evaluation of a policy on the held-out prompts (one sample each, the same random
 * numbers at every evaluation, so evaluations differ only by the policy). */
typedef struct ppo_eval {
    int step;                       /* optimizer steps done when measured */
    int n;
    double reward_mean;             /* reward model score */
    double synth_score_mean, synth_score_std; /* ground truth (NAN unless synthetic) */
    double kl_mean;                 /* per sequence: sum over tokens of logp - ref_logp */
    double response_len_mean;
} ppo_eval_t;

typedef struct rlhf_ppo_result {
    int steps_done;
    ppo_eval_t first, last;         /* first.n == 0 when not evaluated */
    bool best_of_n_done;
    int best_of_n;
    double best_of_n_synth_score, best_of_n_reward, best_of_n_kl; /* analytic KL */
    double final_kl_coef;
} rlhf_ppo_result_t;

/* What a run checks before it writes anything, for callers that write files before
 * rlhf_ppo_run (the prompts' work directory, the energy monitor's power log): the options,
 * the reward model's score head (qwen2_check_reward_dir), and with io->resume that the
 * checkpoint latest.json names is this run's: the same options (steps may grow, never fall
 * below the steps done), models (by qwen2_dir_fingerprint; moving a directory is no
 * change), tokenizer, precision plan, data (io->data) and prompts (when io->prompts is
 * set), and a latest.json whose step is its checkpoint's. ERR_INPUT naming the field that
 * differs and both values. rlhf_ppo_run checks all of this again, first. */
int rlhf_ppo_check(const ppo_opts_t *o, const rlhf_ppo_io_t *io, err_t *e);

/* The whole stage: trains, writes the outputs above. On NaN/Inf the run stops with
 * ERR_FAIL naming the step and what went non-finite; the last good checkpoint stays. */
int rlhf_ppo_run(const ppo_opts_t *o, const rlhf_ppo_io_t *io, rlhf_ppo_result_t *res, err_t *e);

#define PPO_STATS_JSONL "training_stats.jsonl"
#define PPO_STATS_JSON "training_stats.json"
/* The final evaluation's samples, one JSON line per held-out prompt: step, prompt_index,
 * prompt, response, tokens, score (reward model), kl, data_synth_score (+ the exact
 * data_synth_num / data_synth_den on the synthetic task). */
#define PPO_EVAL_SAMPLES "eval_samples.jsonl"

#endif
