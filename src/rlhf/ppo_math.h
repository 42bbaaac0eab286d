/* ppo_math: the arithmetic of TRL 0.11's PPOTrainer (trl/trainer/ppo_trainer.py and
 * trl/core.py) on host arrays, one function per piece, so each can be checked against
 * hand-computed values. No model, no I/O.
 *
 * Arrays are (B, T) row-major floats over the positions of a right-padded batch; position t
 * of row b carries the log-prob of token t+1, the value of the state ending at token t, and
 * mask 1 where token t+1 is a response token (rlhf/text.h's rlhf_batch_t mask; TRL's
 * `masks` from batched_forward_pass). Sums are taken in double in index order, so results
 * do not depend on threads.
 *
 * Data parallelism: the *_all forms take a communicator (dist/dist.h; NULL: this process
 * only) and compute their moments over every rank's positions: each rank's partial sums,
 * added in rank order (dist_sum_f64), so N ranks x batch b whiten as 1 rank x batch N*b up
 * to the order of summation; with NULL they are the plain forms to the bit.
 *
 * What TRL does, and so what this does:
 *   rewards      r_t = -kl_coef * kl_t, plus the score at each row's last masked position
 *                (compute_rewards); kl_t by the chosen estimator (_kl_penalty)
 *   advantages   values and rewards multiplied by the mask, rewards optionally whitened
 *                without shifting the mean, GAE backwards over the whole row
 *                (delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1},
 *                V_T = 0), returns = A + V, then A whitened over the mask
 *                (compute_advantages)
 *   losses       ratio = exp(logp - old_logp); policy loss masked_mean(max(-A ratio,
 *                -A clamp(ratio, 1 - c, 1 + c))); value loss 0.5 masked_mean(max((v - R)^2,
 *                (clamp(v, V - cv, V + cv) - R)^2)); total = policy + vf_coef value; a
 *                minibatch whose masked mean ratio exceeds ratio_threshold has its losses
 *                multiplied by 0 (loss)
 *   KL control   adaptive: e = clip(kl / target - 1, -0.2, 0.2), coef *= 1 + e n / horizon
 *                (AdaptiveKLController.update with n = batch size); or fixed.
 *
 * Not in TRL 0.11 (off by default): rollout correction as verl offers it (truncated
 * importance sampling, Ionides 2008; verl's tis_imp_ratio_cap and rollout_corr), for
 * rollouts sampled from another distribution than the policy being trained (an MX
 * rollout plan): per-token weights w_t = min(exp(old_logp_t - rollout_logp_t), C)
 * ("tis"), or one weight per sequence min(exp(sum_t (old_logp_t - rollout_logp_t)), C)
 * over its response tokens ("seq_tis"), multiplied (as constants) into each position's
 * policy loss.
 */
#ifndef MXRLHF_RLHF_PPO_MATH_H
#define MXRLHF_RLHF_PPO_MATH_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/dist.h"
#include "util/err.h"

/* ---- KL estimators ------------------------------------------------------------------- */

typedef enum ppo_kl_est {
    PPO_KL_KL,    /* "kl":   logp - ref_logp                                  */
    PPO_KL_ABS,   /* "abs":  |logp - ref_logp|                                */
    PPO_KL_MSE,   /* "mse":  0.5 (logp - ref_logp)^2                          */
    PPO_KL_FULL,  /* "full": sum_v p(v) (log p(v) - log q(v)) over the vocabulary */
    PPO_KL_K3,    /* "k3":   exp(ref_logp - logp) - 1 - (ref_logp - logp) (Schulman's
                     unbiased, non-negative estimator; not in TRL 0.11)       */
    PPO_KL_COUNT
} ppo_kl_est_t;

const char *ppo_kl_est_name(ppo_kl_est_t k);            /* "kl", "abs", "mse", "full", "k3" */
int ppo_kl_est_from_name(const char *s, ppo_kl_est_t *out); /* 0 or -1 */

/* The per-token penalty of the log-prob estimators (not PPO_KL_FULL, which is 0 here). */
double ppo_kl_token(ppo_kl_est_t k, double logp, double ref_logp);

/* KL(p || q) of the softmax distributions of two logit rows of V entries, in double:
 * what F.kl_div(ref_logp, logp, log_target=True).sum(-1) computes. */
double ppo_kl_full(const float *logits_p, const float *logits_q, int V);

/* ---- masked moments (trl/core.py) ------------------------------------------------------- */

/* sum(x * mask) / sum(mask); NaN when the mask is empty. */
double ppo_masked_mean(const float *x, const float *mask, size_t n);
/* masked_mean((x - mean)^2), times sum(mask) / (sum(mask) - 1) when unbiased (TRL's
 * default); NaN when the mask is empty (TRL raises). */
double ppo_masked_var(const float *x, const float *mask, size_t n, bool unbiased);
/* x = (x - mean) / sqrt(var + 1e-8) with the unbiased masked moments; shift_mean false adds
 * the mean back. Every position is transformed (TRL's behaviour); masked-out positions are
 * never read by the losses. */
void ppo_masked_whiten(float *x, const float *mask, size_t n, bool shift_mean);

/* Over every rank: count = sum(mask), mean = sum(x mask) / count, var = sum((x - mean)^2
 * mask) / count about the global mean (times count / (count - 1) when unbiased); NaN
 * moments when the global mask is empty. */
int ppo_masked_moments(dist_comm_t *c, const float *x, const float *mask, size_t n,
                       bool unbiased, double *count, double *mean, double *var, err_t *e);
int ppo_masked_whiten_all(dist_comm_t *c, float *x, const float *mask, size_t n,
                          bool shift_mean, err_t *e);
/* The mean of every rank's x[0..n) and their number (the KL controller's input: per-row KL
 * over the global batch). */
int ppo_mean_all(dist_comm_t *c, const double *x, size_t n, double *mean, double *count,
                 err_t *e);

/* ---- rewards and advantages -------------------------------------------------------------- */

/* kl (B, T) per-token penalties; scores (B). non_score (B, T) = -kl_coef * kl; rewards =
 * non_score with scores[b] added at row b's last masked position (a row with an empty
 * mask gets no score). Positions outside the mask keep their penalty, as in TRL; the
 * advantage step multiplies them away. */
void ppo_compute_rewards(int B, int T, const float *scores, const float *kl, const float *mask,
                         double kl_coef, float *rewards, float *non_score);

/* TRL's compute_advantages. values and rewards (B, T) are multiplied by the mask in place
 * (values keeps the masked values: what the value loss compares against); adv and returns
 * (B, T) are written. */
void ppo_advantages(int B, int T, float *values, float *rewards, const float *mask, double gamma,
                    double lam, bool whiten_rewards, float *adv, float *returns);
/* The same with the whitening over every rank's rows (GAE itself is per row). */
int ppo_advantages_all(dist_comm_t *c, int B, int T, float *values, float *rewards,
                       const float *mask, double gamma, double lam, bool whiten_rewards,
                       float *adv, float *returns, err_t *e);

/* ---- the minibatch loss -------------------------------------------------------------------- */

typedef struct ppo_loss_cfg {
    double cliprange, cliprange_value, vf_coef, ratio_threshold;
    const float *weight; /* (n) rollout-correction weights multiplying each position's policy
                            loss and its gradient (ppo_rollout_weights), NULL: none (TRL) */
} ppo_loss_cfg_t;

/* TRL's stats of one minibatch (train_stats), under their names without the "ppo/" prefix. */
typedef struct ppo_mb_stats {
    double loss_policy, loss_value, loss_total;         /* loss/policy, loss/value, loss/total */
    double entropy, approxkl, policykl, clipfrac;       /* policy/... */
    double advantages_mean;                             /* policy/advantages_mean */
    double returns_mean, returns_var;                   /* returns/mean, returns/var */
    double vpred, val_error, val_clipfrac, val_mean, val_var; /* val/... */
    double ratio_mean;                                  /* masked mean of the ratio */
    double ratio_max;                                   /* largest masked ratio */
    bool skipped;                                       /* ratio_threshold: losses zeroed */
} ppo_mb_stats_t;

/* One minibatch of n positions: old_logp, old_values (masked values from
 * ppo_advantages), logp and vpred of the current model, entropy (may be NULL: stat 0),
 * mask, adv, returns. With c->weight, position i's clipped policy loss is multiplied by
 * weight[i] (loss/policy and the gradient; the other stats are TRL's). Fills the stats and
 * the gradients of the total loss times
 * grad_scale (1 / gradient_accumulation_steps) with respect to logp and vpred (either may
 * be NULL); a skipped minibatch gets zero gradients. Gradients follow PyTorch's autograd
 * exactly: clamp passes gradient inside its closed range, max sends it to the larger
 * branch and splits it evenly on a tie. */
void ppo_loss(const ppo_loss_cfg_t *c, size_t n, const float *old_logp, const float *old_values,
              const float *logp, const float *vpred, const float *entropy, const float *mask,
              const float *adv, const float *returns, double grad_scale, float *dlogp,
              float *dvpred, ppo_mb_stats_t *st);

/* ---- rollout correction ------------------------------------------------------------------------ */

typedef enum ppo_rc {
    PPO_RC_NONE,     /* "none":    TRL 0.11: no correction                                  */
    PPO_RC_TIS,      /* "tis":     a weight per token                                       */
    PPO_RC_SEQ_TIS,  /* "seq_tis": a weight per sequence, the product of its tokens' ratios */
    PPO_RC_COUNT
} ppo_rc_t;

extern const char *const ppo_rc_names[PPO_RC_COUNT + 1]; /* by value, NULL-terminated */

/* The step's rollout correction statistics (training_stats.json's rollout_corr/...). */
typedef struct ppo_rc_stats {
    double ratio_mean;    /* mean of the untruncated ratio exp(old - rollout) over response
                             tokens (tis) or over sequences with a response token (seq_tis; the
                             ratio of the summed log-ratios); NaN for none or no unit */
    double clipped_frac;  /* fraction of those units whose ratio exceeds the cap */
    double kl;            /* mean over response tokens of rollout_logp - old_logp (every mode;
                             NaN when no token): KL(pi_rollout || pi_train) by the k1 estimator
                             on the rollout's own samples */
    long units;           /* response tokens (none, tis) or sequences (seq_tis) counted */
} ppo_rc_stats_t;

/* old_logp (the training-precision policy's log-probs before the update), rollout_logp
 * (the rollout engine's, at the same positions) and mask (B, T) as above. Writes the
 * weights w (B, T) (may be NULL; none: 1 everywhere; positions outside the mask get 1, a
 * row without a response token 1) and the statistics. cap: C > 0. Sums in double, in index
 * order. */
void ppo_rollout_weights(ppo_rc_t mode, double cap, int B, int T, const float *old_logp,
                         const float *rollout_logp, const float *mask, float *w,
                         ppo_rc_stats_t *st);
/* A minibatch skipped (ratio_threshold): its losses in st and its gradients zeroed. */
void ppo_loss_skip(ppo_mb_stats_t *st, size_t n, float *dlogp, float *dvpred);

/* ---- the KL controller ------------------------------------------------------------------------ */

typedef struct ppo_klctl {
    bool adaptive;
    double value, target, horizon;
} ppo_klctl_t;

/* Adaptive: value *= 1 + clip(current / target - 1, -0.2, 0.2) * n_steps / horizon;
 * fixed: unchanged. */
void ppo_klctl_update(ppo_klctl_t *c, double current, long n_steps);

/* ---- score scaling (TRL's RunningMoments, use_score_scaling) ------------------------------------ */

typedef struct ppo_running {
    double mean, var, std, count;   /* starts at 0, 1, 1, 1e-24 */
} ppo_running_t;

void ppo_running_init(ppo_running_t *r);
/* Folds n scores into the running moments (Chan's parallel update, in double). */
void ppo_running_update(ppo_running_t *r, const float *x, int n);

#endif
