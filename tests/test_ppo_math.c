/* Tests for src/rlhf/ppo_math: TRL 0.11's PPO arithmetic against values computed by hand
 * (and, for the loss gradients, against finite differences of the loss itself). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "rlhf/ppo_math.h"
#include "support/testutil.h"

#define CLOSE(got, want, tol)                                                                   \
    do {                                                                                        \
        double g_ = (got), w_ = (want);                                                         \
        if (!(fabs(g_ - w_) <= (tol)))                                                          \
            fail_msg("%s: expected %.9g, got %.9g (tolerance %g)", #got, w_, g_, (double)(tol)); \
    } while (0)

static void kl_estimators_match_hand_values(void **state)
{
    (void)state;
    CLOSE(ppo_kl_token(PPO_KL_KL, -1.0, -1.5), 0.5, 1e-12);
    CLOSE(ppo_kl_token(PPO_KL_KL, -1.5, -1.0), -0.5, 1e-12);
    CLOSE(ppo_kl_token(PPO_KL_ABS, -1.5, -1.0), 0.5, 1e-12);
    CLOSE(ppo_kl_token(PPO_KL_MSE, -1.0, -1.5), 0.125, 1e-12);
    /* k3 = exp(ref - logp) - 1 - (ref - logp) = e^-0.5 - 1 + 0.5 */
    CLOSE(ppo_kl_token(PPO_KL_K3, -1.0, -1.5), 0.10653065971263342, 1e-12);
    CLOSE(ppo_kl_token(PPO_KL_K3, -2.0, -2.0), 0.0, 1e-15);
    /* full: softmax([1, 2, 0.5]) against softmax([0, 1, 1]) */
    float p[3] = {1.0f, 2.0f, 0.5f}, q[3] = {0.0f, 1.0f, 1.0f};
    CLOSE(ppo_kl_full(p, q, 3), 0.18725944520117338, 1e-9);
    CLOSE(ppo_kl_full(p, p, 3), 0.0, 1e-12);
    ppo_kl_est_t k;
    assert_int_equal(ppo_kl_est_from_name("mse", &k), 0);
    assert_int_equal(k, PPO_KL_MSE);
    assert_int_equal(ppo_kl_est_from_name("kl3", &k), -1);
    assert_string_equal(ppo_kl_est_name(PPO_KL_FULL), "full");
}

static void masked_moments_and_whitening_use_the_mask_and_bessel(void **state)
{
    (void)state;
    float x[5] = {100, 0.55f, -1.0f, -2.0f, 7}, mask[5] = {0, 1, 1, 1, 0};
    CLOSE(ppo_masked_mean(x, mask, 5), -0.81666666666, 1e-6);
    CLOSE(ppo_masked_var(x, mask, 5, true), 1.65083333333, 1e-6);
    CLOSE(ppo_masked_var(x, mask, 5, false), 1.65083333333 * 2 / 3, 1e-6);
    float w[5];
    memcpy(w, x, sizeof w);
    ppo_masked_whiten(w, mask, 5, true);
    CLOSE(w[1], 1.0636799816486617, 1e-6);
    CLOSE(w[2], -0.1426887780260399, 1e-6);
    CLOSE(w[3], -0.9209912036226215, 1e-6);
    CLOSE(ppo_masked_mean(w, mask, 5), 0.0, 1e-6);
    memcpy(w, x, sizeof w);
    ppo_masked_whiten(w, mask, 5, false); /* the mean is added back */
    CLOSE(w[1], 1.0636799816486617 - 0.81666666666, 1e-6);
    float none[5] = {0};
    assert_true(isnan(ppo_masked_mean(x, none, 5)));
}

static void rewards_put_the_score_on_the_last_response_token(void **state)
{
    (void)state;
    /* two rows of 4 positions: row 0's response positions 1..2, row 1's 0..3 */
    float kl[8] = {9, 0.5f, -0.25f, 9, 1, 2, 3, 4};
    float mask[8] = {0, 1, 1, 0, 1, 1, 1, 1}, scores[2] = {2.0f, -1.0f}, r[8], ns[8];
    ppo_compute_rewards(2, 4, scores, kl, mask, 0.2, r, ns);
    CLOSE(ns[1], -0.1, 1e-7);
    CLOSE(r[1], -0.1, 1e-7);
    CLOSE(r[2], 0.05 + 2.0, 1e-6);
    CLOSE(r[3], -1.8, 1e-6); /* outside the mask: penalty kept, no score */
    CLOSE(r[7], -0.8 - 1.0, 1e-6);
    CLOSE(r[6], -0.6, 1e-6);
}

static void gae_on_a_short_sequence_matches_hand_computation(void **state)
{
    (void)state;
    /* position 0 is the prompt's last token (masked out); gamma 1, lambda 0.95:
     *   masked V = [0, 1, 2, 3], masked r = [0, 0.5, -0.1, 1]
     *   A3 = 1 - 3 = -2; A2 = -0.1 + 3 - 2 + 0.95 A3 = -1; A1 = 0.5 + 2 - 1 + 0.95 A2 = 0.55;
     *   A0 = 0 + 1 - 0 + 0.95 A1 = 1.5225; returns = A + V */
    float v[4] = {5, 1, 2, 3}, r[4] = {9, 0.5f, -0.1f, 1}, mask[4] = {0, 1, 1, 1}, adv[4], ret[4];
    ppo_advantages(1, 4, v, r, mask, 1.0, 0.95, false, adv, ret);
    CLOSE(v[0], 0, 0);
    CLOSE(r[0], 0, 0);
    CLOSE(ret[0], 1.5225, 1e-6);
    CLOSE(ret[1], 1.55, 1e-6);
    CLOSE(ret[2], 1.0, 1e-6);
    CLOSE(ret[3], 1.0, 1e-6);
    /* advantages whitened over the mask: [0.55, -1, -2] -> */
    CLOSE(adv[1], 1.0636799816486617, 1e-5);
    CLOSE(adv[2], -0.1426887780260399, 1e-5);
    CLOSE(adv[3], -0.9209912036226215, 1e-5);
    CLOSE(adv[0], 1.8205790905413377, 1e-5); /* transformed too (never read) */
    /* gamma 0.5, lambda 1: A3 = -2, A2 = -0.1 + 1.5 - 2 + 0.5 A3 = -1.6 */
    float v2[4] = {5, 1, 2, 3}, r2[4] = {9, 0.5f, -0.1f, 1};
    ppo_advantages(1, 4, v2, r2, mask, 0.5, 1.0, false, adv, ret);
    CLOSE(ret[3], 1.0, 1e-6);
    CLOSE(ret[2], -1.6 + 2, 1e-6);
}

static void clipped_losses_and_gradients_match_hand_values(void **state)
{
    (void)state;
    /* position 0: ratio e^0.5 > 1.2 with A = 1 -> the clipped branch wins (no gradient);
     * its value 0.5 is clipped to 0.2 and the clipped error wins (no gradient).
     * position 1: ratio e^-0.1 inside the range, A = -0.5; its value inside the range
     * (both branches tie: gradient split evenly, summing to the unclipped one).
     * position 2: masked out. */
    float old_lp[3] = {-1.0f, -2.0f, -3}, lp[3] = {-0.5f, -2.1f, 0};
    float old_v[3] = {0.0f, 1.0f, 0}, vpred[3] = {0.5f, 0.9f, 5}, ent[3] = {1.0f, 3.0f, 50};
    float adv[3] = {1.0f, -0.5f, 9}, ret[3] = {1.0f, 0.5f, 9}, mask[3] = {1, 1, 0};
    float dlp[3], dv[3];
    ppo_loss_cfg_t c = {0.2, 0.2, 0.1, 10.0, NULL};
    ppo_mb_stats_t st;
    ppo_loss(&c, 3, old_lp, old_v, lp, vpred, ent, mask, adv, ret, 1.0, dlp, dv, &st);
    double r0 = exp(0.5), r1 = exp(-0.1);
    CLOSE(st.loss_policy, (-1.2 + 0.5 * r1) / 2, 1e-6);
    CLOSE(st.loss_value, 0.5 * (0.64 + 0.16) / 2, 1e-6);
    CLOSE(st.loss_total, st.loss_policy + 0.1 * st.loss_value, 1e-12);
    CLOSE(st.clipfrac, 0.5, 0);
    CLOSE(st.val_clipfrac, 0.5, 0);
    CLOSE(st.approxkl, 0.5 * (0.25 + 0.01) / 2, 1e-6);
    CLOSE(st.policykl, (-0.5 + 0.1) / 2, 1e-6);
    CLOSE(st.entropy, 2.0, 1e-12);
    CLOSE(st.ratio_mean, (r0 + r1) / 2, 1e-6);
    CLOSE(st.vpred, 0.7, 1e-6);
    CLOSE(st.val_error, (0.25 + 0.16) / 2, 1e-6);
    CLOSE(st.advantages_mean, 0.25, 1e-7);
    CLOSE(st.returns_mean, 0.75, 1e-7);
    CLOSE(st.returns_var, 0.125, 1e-7);
    CLOSE(st.val_mean, 0.5, 1e-7);
    CLOSE(st.val_var, 0.5, 1e-7);
    assert_false(st.skipped);
    CLOSE(dlp[0], 0, 0);
    CLOSE(dlp[1], 0.5 * r1 / 2, 1e-6);
    CLOSE(dlp[2], 0, 0);
    CLOSE(dv[0], 0, 0);
    CLOSE(dv[1], 0.1 * 0.5 * (2 * 0.4) / 2, 1e-6);
    CLOSE(dv[2], 0, 0);
}

/* total loss of ppo_loss for finite differences */
static double total(const ppo_loss_cfg_t *c, int n, const float *olp, const float *ov, const float *lp,
                    const float *v, const float *mask, const float *a, const float *r)
{
    ppo_mb_stats_t st;
    ppo_loss(c, (size_t)n, olp, ov, lp, v, NULL, mask, a, r, 1.0, NULL, NULL, &st);
    return st.loss_total;
}

static void loss_gradients_agree_with_finite_differences(void **state)
{
    (void)state;
    /* with and without rollout-correction weights (position 7 is masked out) */
    static const float w[8] = {0.5f, 2, 1.25f, 0.1f, 1, 1.9f, 0.75f, 7};
    for (int k = 0; k < 2; k++) {
        enum { N = 8 };
        /* every branch away from its boundaries: ratios below, inside and above the clip
         * range with both signs of A; values inside and outside their clip range */
        float olp[N] = {-1, -1, -1, -1, -2, -2, -2, -2};
        float lp[N] = {-1.5f, -0.5f, -1.05f, -0.95f, -2.4f, -1.6f, -2.02f, -1.3f};
        float adv[N] = {1, -1, 0.7f, -0.3f, -1.2f, 0.8f, 2, 1.5f};
        float ov[N] = {0, 0, 1, 1, -1, 0.5f, 0, 2};
        float v[N] = {0.5f, -0.35f, 1.1f, 0.95f, -1.6f, 0.1f, 0.05f, 2.7f};
        float ret[N] = {0.1f, 0.3f, 2, -1, 0, 0.45f, 1, 1.9f};
        float mask[N] = {1, 1, 1, 1, 1, 1, 1, 0};
        ppo_loss_cfg_t c = {0.2, 0.2, 0.1, 10.0, k ? w : NULL};
        float dlp[N], dv[N];
        ppo_mb_stats_t st;
        ppo_loss(&c, N, olp, ov, lp, v, NULL, mask, adv, ret, 0.5, dlp, dv, &st);
        const double h = 1e-3;
        for (int i = 0; i < N; i++) {
            float save = lp[i];
            lp[i] = save + (float)h;
            double up = total(&c, N, olp, ov, lp, v, mask, adv, ret);
            lp[i] = save - (float)h;
            double dn = total(&c, N, olp, ov, lp, v, mask, adv, ret);
            lp[i] = save;
            double fd = 0.5 * (up - dn) / (2 * h);
            if (!(fabs(fd - dlp[i]) <= 1e-4 + 1e-3 * fabs(fd)))
                fail_msg("dlogp[%d]: analytic %.7g, finite differences %.7g", i, dlp[i], fd);
            save = v[i];
            v[i] = save + (float)h;
            up = total(&c, N, olp, ov, lp, v, mask, adv, ret);
            v[i] = save - (float)h;
            dn = total(&c, N, olp, ov, lp, v, mask, adv, ret);
            v[i] = save;
            fd = 0.5 * (up - dn) / (2 * h);
            if (!(fabs(fd - dv[i]) <= 1e-4 + 1e-3 * fabs(fd)))
                fail_msg("dvpred[%d]: analytic %.7g, finite differences %.7g", i, dv[i], fd);
        }
    }
}

/* ---- rollout correction ---------------------------------------------------------------------- */

/* Two rows of T = 4 and a third without response tokens. d = old - rollout (exact in
 * float): row 0 masks t = 1, 2 (d = 0.25, 1.0); row 1 masks t = 0, 1, 2 (d = -0.5, 0.875,
 * 0); the unmasked positions carry a large d (4) that must count nowhere. */
enum { RB = 3, RT = 4 };
static const float rc_mask[RB * RT] = {0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0};
static const float rc_old[RB * RT] = {-1, -1, -2, -1, -3, -0.125f, -1, -1, -1, -1, -1, -1};
static const float rc_roll[RB * RT] = {-5, -1.25f, -3, -5, -2.5f, -1, -1, -5, -5, -5, -5, -5};

static void tis_weights_and_stats_match_the_formula(void **state)
{
    (void)state;
    float w[RB * RT];
    ppo_rc_stats_t st;
    const double d[5] = {0.25, 1.0, -0.5, 0.875, 0}; /* the masked tokens, in order */
    const int at[5] = {1, 2, 4, 5, 6};
    const double C = 2;
    ppo_rollout_weights(PPO_RC_TIS, C, RB, RT, rc_old, rc_roll, rc_mask, w, &st);
    double rsum = 0, nclip = 0, kl = 0;
    for (int k = 0; k < 5; k++) {
        double r = exp(d[k]);
        CLOSE(w[at[k]], fmin(r, C), 1e-6);
        rsum += r;
        nclip += r > C;
        kl += -d[k];
    }
    for (int i = 0; i < RB * RT; i++)
        if (rc_mask[i] == 0)
            CLOSE(w[i], 1, 0); /* outside the mask: 1 */
    CLOSE(st.ratio_mean, rsum / 5, 1e-12);
    CLOSE(st.clipped_frac, 2.0 / 5, 0); /* e^1 and e^0.875 exceed 2 */
    CLOSE(nclip, 2, 0);
    CLOSE(st.kl, kl / 5, 1e-12);
    CLOSE(st.kl, -1.625 / 5, 1e-12);
    assert_int_equal(st.units, 5);
    /* a cap of 3 truncates nothing here */
    ppo_rollout_weights(PPO_RC_TIS, 3, RB, RT, rc_old, rc_roll, rc_mask, w, &st);
    CLOSE(w[2], exp(1.0), 1e-6);
    CLOSE(w[5], exp(0.875), 1e-6);
    CLOSE(st.clipped_frac, 0, 0);
    CLOSE(st.ratio_mean, rsum / 5, 1e-12);
    /* a cap of 1 truncates every ratio above 1 */
    ppo_rollout_weights(PPO_RC_TIS, 1, RB, RT, rc_old, rc_roll, rc_mask, w, &st);
    CLOSE(w[1], 1, 0);
    CLOSE(w[4], exp(-0.5), 1e-6);
    CLOSE(st.clipped_frac, 3.0 / 5, 0);
}

static void seq_tis_weights_one_ratio_per_sequence(void **state)
{
    (void)state;
    float w[RB * RT];
    ppo_rc_stats_t st;
    const double C = 2;
    ppo_rollout_weights(PPO_RC_SEQ_TIS, C, RB, RT, rc_old, rc_roll, rc_mask, w, &st);
    double r0 = exp(0.25 + 1.0), r1 = exp(-0.5 + 0.875 + 0); /* 3.49 (truncated), 1.45 */
    const int row0[2] = {1, 2}, row1[3] = {4, 5, 6};
    for (int k = 0; k < 2; k++)
        CLOSE(w[row0[k]], fmin(r0, C), 1e-6);
    for (int k = 0; k < 3; k++)
        CLOSE(w[row1[k]], fmin(r1, C), 1e-6);
    for (int i = 0; i < RB * RT; i++)
        if (rc_mask[i] == 0)
            CLOSE(w[i], 1, 0);
    /* the third row has no response token: no sequence */
    assert_int_equal(st.units, 2);
    CLOSE(st.ratio_mean, (r0 + r1) / 2, 1e-12);
    CLOSE(st.clipped_frac, 0.5, 0);
    CLOSE(st.kl, -(0.25 + 1.0 - 0.5 + 0.875 + 0) / 5, 1e-12); /* per token in every mode */
    /* none: weights 1, only the KL */
    ppo_rollout_weights(PPO_RC_NONE, C, RB, RT, rc_old, rc_roll, rc_mask, w, &st);
    for (int i = 0; i < RB * RT; i++)
        CLOSE(w[i], 1, 0);
    assert_true(isnan(st.ratio_mean) && isnan(st.clipped_frac));
    CLOSE(st.kl, -1.625 / 5, 1e-12);
    /* no response token at all: every statistic NaN */
    const float none[RT] = {0, 0, 0, 0};
    ppo_rollout_weights(PPO_RC_SEQ_TIS, C, 1, RT, rc_old, rc_roll, none, NULL, &st);
    assert_true(isnan(st.ratio_mean) && isnan(st.clipped_frac) && isnan(st.kl));
    /* a sequence log-ratio far beyond exp's range: the weight is the cap, the ratio +Inf */
    const float big_old[2] = {0, 0}, big_roll[2] = {-400, -400}, m2[2] = {1, 1};
    float w2[2];
    ppo_rollout_weights(PPO_RC_SEQ_TIS, C, 1, 2, big_old, big_roll, m2, w2, &st);
    CLOSE(w2[0], C, 0);
    assert_true(isinf(st.ratio_mean));
    CLOSE(st.clipped_frac, 1, 0);
}

/* The weights multiply each position's clipped policy loss and its gradient; the other
 * statistics stay TRL's (the hand values of clipped_losses_and_gradients_match_hand_values). */
static void weighted_policy_loss_matches_hand_values(void **state)
{
    (void)state;
    float old_lp[3] = {-1.0f, -2.0f, -3}, lp[3] = {-0.5f, -2.1f, 0};
    float old_v[3] = {0.0f, 1.0f, 0}, vpred[3] = {0.5f, 0.9f, 5};
    float adv[3] = {1.0f, -0.5f, 9}, ret[3] = {1.0f, 0.5f, 9}, mask[3] = {1, 1, 0};
    float w[3] = {0.5f, 1.75f, 3}, dlp[3], dv[3];
    ppo_loss_cfg_t c = {0.2, 0.2, 0.1, 10.0, w};
    ppo_mb_stats_t st;
    ppo_loss(&c, 3, old_lp, old_v, lp, vpred, NULL, mask, adv, ret, 1.0, dlp, dv, &st);
    double r0 = exp(0.5), r1 = exp(-0.1);
    /* position 0: clipped branch -A (1 + 0.2) = -1.2; position 1: -A r1 = 0.5 r1 */
    CLOSE(st.loss_policy, (0.5 * -1.2 + 1.75 * 0.5 * r1) / 2, 1e-6);
    CLOSE(st.loss_value, 0.5 * (0.64 + 0.16) / 2, 1e-6); /* unweighted */
    CLOSE(st.loss_total, st.loss_policy + 0.1 * st.loss_value, 1e-12);
    CLOSE(st.clipfrac, 0.5, 0);
    CLOSE(st.ratio_mean, (r0 + r1) / 2, 1e-6);
    CLOSE(st.approxkl, 0.5 * (0.25 + 0.01) / 2, 1e-6);
    CLOSE(dlp[0], 0, 0);
    CLOSE(dlp[1], 1.75 * 0.5 * r1 / 2, 1e-6);
    CLOSE(dlp[2], 0, 0);
    CLOSE(dv[1], 0.1 * 0.5 * (2 * 0.4) / 2, 1e-6);
}

static void runaway_ratio_skips_the_minibatch(void **state)
{
    (void)state;
    float olp[2] = {-5, -5}, lp[2] = {-1, -4}, v[2] = {0, 0}, ov[2] = {0, 0};
    float adv[2] = {1, -1}, ret[2] = {1, 1}, mask[2] = {1, 1}, dlp[2], dv[2];
    ppo_loss_cfg_t c = {0.2, 0.2, 0.1, 10.0, NULL};
    ppo_mb_stats_t st;
    ppo_loss(&c, 2, olp, ov, lp, v, NULL, mask, adv, ret, 1.0, dlp, dv, &st);
    /* mean ratio (e^4 + e^1) / 2 = 28.66 > 10 */
    assert_true(st.skipped);
    CLOSE(st.ratio_mean, (exp(4) + exp(1)) / 2, 1e-4);
    CLOSE(st.loss_total, 0, 0);
    CLOSE(st.loss_policy, 0, 0);
    CLOSE(st.loss_value, 0, 0);
    CLOSE(dlp[0], 0, 0);
    CLOSE(dv[1], 0, 0);
    CLOSE(st.approxkl, 0.5 * (16 + 1) / 2, 1e-6); /* the other stats are still reported */
    c.ratio_threshold = 30;
    ppo_loss(&c, 2, olp, ov, lp, v, NULL, mask, adv, ret, 1.0, dlp, dv, &st);
    assert_false(st.skipped);
}

static void kl_controller_updates_proportionally_with_clipping(void **state)
{
    (void)state;
    ppo_klctl_t c = {true, 0.2, 6.0, 10000.0};
    ppo_klctl_update(&c, 9.0, 8); /* error 0.5 clipped to 0.2: x (1 + 0.2 * 8 / 10000) */
    CLOSE(c.value, 0.2 * 1.00016, 1e-15);
    c.value = 0.2;
    ppo_klctl_update(&c, 6.6, 8); /* error 0.1 */
    CLOSE(c.value, 0.2 * 1.00008, 1e-15);
    c.value = 0.2;
    ppo_klctl_update(&c, -3.0, 8); /* error -1.5 clipped to -0.2 */
    CLOSE(c.value, 0.2 * (1 - 0.00016), 1e-15);
    ppo_klctl_t f = {false, 0.05, 6.0, 10000.0};
    ppo_klctl_update(&f, 100.0, 8);
    CLOSE(f.value, 0.05, 0);
}

static void running_moments_match_the_pooled_statistics(void **state)
{
    (void)state;
    float a[3] = {1, 2, 4}, b[4] = {-1, 0, 3, 10};
    ppo_running_t r;
    ppo_running_init(&r);
    ppo_running_update(&r, a, 3);
    ppo_running_update(&r, b, 4);
    /* all 7 values: mean 19/7, unbiased std */
    double all[7] = {1, 2, 4, -1, 0, 3, 10}, m = 19.0 / 7, ss = 0;
    for (int i = 0; i < 7; i++)
        ss += (all[i] - m) * (all[i] - m);
    CLOSE(r.mean, m, 1e-12);
    CLOSE(r.var, ss / 7, 1e-9);
    CLOSE(r.std, sqrt(ss / 6), 1e-9);
    CLOSE(r.count, 7, 1e-9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kl_estimators_match_hand_values),
        cmocka_unit_test(masked_moments_and_whitening_use_the_mask_and_bessel),
        cmocka_unit_test(rewards_put_the_score_on_the_last_response_token),
        cmocka_unit_test(gae_on_a_short_sequence_matches_hand_computation),
        cmocka_unit_test(clipped_losses_and_gradients_match_hand_values),
        cmocka_unit_test(loss_gradients_agree_with_finite_differences),
        cmocka_unit_test(runaway_ratio_skips_the_minibatch),
        cmocka_unit_test(tis_weights_and_stats_match_the_formula),
        cmocka_unit_test(seq_tis_weights_one_ratio_per_sequence),
        cmocka_unit_test(weighted_policy_loss_matches_hand_values),
        cmocka_unit_test(kl_controller_updates_proportionally_with_clipping),
        cmocka_unit_test(running_moments_match_the_pooled_statistics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
