/* ppo_math: TRL 0.11's PPO arithmetic on host arrays (see ppo_math.h for the formulas). */
#include "rlhf/ppo_math.h"

#include <math.h>
#include <string.h>

static const char *const kl_names[PPO_KL_COUNT] = {"kl", "abs", "mse", "full", "k3"};

const char *ppo_kl_est_name(ppo_kl_est_t k)
{
    return (unsigned)k < PPO_KL_COUNT ? kl_names[k] : "?";
}

int ppo_kl_est_from_name(const char *s, ppo_kl_est_t *out)
{
    for (int i = 0; i < PPO_KL_COUNT; i++)
        if (s && !strcmp(s, kl_names[i])) {
            *out = (ppo_kl_est_t)i;
            return 0;
        }
    return -1;
}

double ppo_kl_token(ppo_kl_est_t k, double logp, double ref_logp)
{
    double d = logp - ref_logp;
    switch (k) {
    case PPO_KL_KL:
        return d;
    case PPO_KL_ABS:
        return fabs(d);
    case PPO_KL_MSE:
        return 0.5 * d * d;
    case PPO_KL_K3:
        /* r = q/p = exp(-d): (r - 1) - log r */
        return expm1(-d) + d;
    default:
        return 0;
    }
}

static double row_lse(const float *x, int V)
{
    double mx = -INFINITY;
    for (int j = 0; j < V; j++)
        mx = x[j] > mx ? x[j] : mx;
    double s = 0;
    for (int j = 0; j < V; j++)
        s += exp((double)x[j] - mx);
    return mx + log(s);
}

double ppo_kl_full(const float *lp, const float *lq, int V)
{
    double ap = row_lse(lp, V), aq = row_lse(lq, V), kl = 0;
    for (int j = 0; j < V; j++) {
        double a = (double)lp[j] - ap, b = (double)lq[j] - aq;
        double p = exp(a);
        if (p > 0)
            kl += p * (a - b);
    }
    return kl;
}

/* ---- masked moments --------------------------------------------------------------------- */

/* Masked moments over every rank's positions (ppo_math.h): the partial sums of this rank,
 * added over ranks in rank order (dist_sum_f64); the second pass about the global mean. */
int ppo_masked_moments(dist_comm_t *c, const float *x, const float *mask, size_t n,
                       bool unbiased, double *count, double *mean, double *var, err_t *e)
{
    double sm[2] = {0, 0}; /* sum(x mask), sum(mask) */
    for (size_t i = 0; i < n; i++) {
        sm[0] += (double)x[i] * mask[i];
        sm[1] += mask[i];
    }
    if (dist_sum_f64(c, sm, 2, e))
        return e->code;
    double m = sm[1], mu = m > 0 ? sm[0] / m : NAN, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - mu;
        s += d * d * mask[i];
    }
    if (dist_sum_f64(c, &s, 1, e))
        return e->code;
    *count = m;
    *mean = mu;
    /* TRL: bessel_correction = mask_sum / (mask_sum - 1); a single position divides by 0 */
    *var = !(m > 0) ? NAN : unbiased ? s / m * (m / (m - 1)) : s / m;
    return ERR_OK;
}

double ppo_masked_mean(const float *x, const float *mask, size_t n)
{
    double m, mu, v;
    return ppo_masked_moments(NULL, x, mask, n, false, &m, &mu, &v, NULL) ? NAN : mu;
}

double ppo_masked_var(const float *x, const float *mask, size_t n, bool unbiased)
{
    double m, mu, v;
    return ppo_masked_moments(NULL, x, mask, n, unbiased, &m, &mu, &v, NULL) ? NAN : v;
}

int ppo_masked_whiten_all(dist_comm_t *c, float *x, const float *mask, size_t n,
                          bool shift_mean, err_t *e)
{
    double m, mean, var;
    if (ppo_masked_moments(c, x, mask, n, true, &m, &mean, &var, e))
        return e->code;
    double r = 1.0 / sqrt(var + 1e-8);
    for (size_t i = 0; i < n; i++) {
        double w = ((double)x[i] - mean) * r;
        x[i] = (float)(shift_mean ? w : w + mean);
    }
    return ERR_OK;
}

void ppo_masked_whiten(float *x, const float *mask, size_t n, bool shift_mean)
{
    ppo_masked_whiten_all(NULL, x, mask, n, shift_mean, NULL);
}

int ppo_mean_all(dist_comm_t *c, const double *x, size_t n, double *mean, double *count,
                 err_t *e)
{
    double sn[2] = {0, (double)n};
    for (size_t i = 0; i < n; i++)
        sn[0] += x[i];
    if (dist_sum_f64(c, sn, 2, e))
        return e->code;
    *mean = sn[1] > 0 ? sn[0] / sn[1] : NAN;
    *count = sn[1];
    return ERR_OK;
}

/* ---- rewards and advantages ----------------------------------------------------------------- */

void ppo_compute_rewards(int B, int T, const float *scores, const float *kl, const float *mask,
                         double kl_coef, float *rewards, float *non_score)
{
    for (int b = 0; b < B; b++) {
        int last = -1;
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            non_score[i] = (float)(-kl_coef * kl[i]);
            rewards[i] = non_score[i];
            if (mask[i] != 0)
                last = t;
        }
        if (last >= 0)
            rewards[(size_t)b * T + last] += scores[b];
    }
}

void ppo_advantages(int B, int T, float *values, float *rewards, const float *mask, double gamma,
                    double lam, bool whiten_rewards, float *adv, float *returns)
{
    ppo_advantages_all(NULL, B, T, values, rewards, mask, gamma, lam, whiten_rewards, adv,
                       returns, NULL);
}

int ppo_advantages_all(dist_comm_t *c, int B, int T, float *values, float *rewards,
                       const float *mask, double gamma, double lam, bool whiten_rewards,
                       float *adv, float *returns, err_t *e)
{
    const size_t n = (size_t)B * T;
    for (size_t i = 0; i < n; i++) {
        values[i] *= mask[i];
        rewards[i] *= mask[i];
    }
    /* TRL whitens after masking: positions past a row's end get the shifted value too and
     * so feed into GAE (kept for fidelity; off by default). */
    if (whiten_rewards && ppo_masked_whiten_all(c, rewards, mask, n, false, e))
        return e->code;
    for (int b = 0; b < B; b++) {
        const float *v = values + (size_t)b * T, *r = rewards + (size_t)b * T;
        float *a = adv + (size_t)b * T;
        float last = 0;
        for (int t = T - 1; t >= 0; t--) {
            float next = t < T - 1 ? v[t + 1] : 0.0f;
            /* float32 as the PyTorch loop computes it */
            float delta = r[t] + (float)gamma * next - v[t];
            last = delta + (float)(gamma * lam) * last;
            a[t] = last;
        }
    }
    for (size_t i = 0; i < n; i++)
        returns[i] = adv[i] + values[i];
    return ppo_masked_whiten_all(c, adv, mask, n, true, e);
}

/* ---- the loss ---------------------------------------------------------------------------------- */

/* d max(a, b) routed to branch a / branch b: PyTorch splits a tie evenly */
static void max_grad(double a, double b, double *ga, double *gb)
{
    if (a > b) {
        *ga = 1, *gb = 0;
    } else if (a < b) {
        *ga = 0, *gb = 1;
    } else {
        *ga = 0.5, *gb = 0.5;
    }
}

void ppo_loss(const ppo_loss_cfg_t *c, size_t n, const float *old_logp, const float *old_values,
              const float *logp, const float *vpred, const float *entropy, const float *mask,
              const float *adv, const float *returns, double grad_scale, float *dlogp,
              float *dvpred, ppo_mb_stats_t *st)
{
    memset(st, 0, sizeof *st);
    double msum = 0, pg = 0, vf = 0, clip_pg = 0, clip_vf = 0, ent = 0, akl = 0, pkl = 0,
           rsum = 0, vp = 0, verr = 0, rmax = 0;
    const double lo = 1.0 - c->cliprange, hi = 1.0 + c->cliprange;
    for (size_t i = 0; i < n; i++)
        msum += mask[i];
    for (size_t i = 0; i < n; i++) {
        double m = mask[i], w = c->weight ? c->weight[i] : 1.0; /* m * 1.0 == m exactly */
        double d = (double)logp[i] - old_logp[i];
        double ratio = exp(d), A = adv[i], R = returns[i], v = vpred[i], V = old_values[i];
        double rc = ratio < lo ? lo : ratio > hi ? hi : ratio;
        double pg1 = -A * ratio, pg2 = -A * rc;
        double vlo = V - c->cliprange_value, vhi = V + c->cliprange_value;
        /* clip_by_value(x, lo, hi) = max(min(x, hi), lo) */
        double vmin = v < vhi ? v : vhi, vc = vmin > vlo ? vmin : vlo;
        double vf1 = (v - R) * (v - R), vf2 = (vc - R) * (vc - R);
        pg += m * w * (pg1 > pg2 ? pg1 : pg2);
        vf += m * (vf1 > vf2 ? vf1 : vf2);
        clip_pg += m * (pg2 > pg1);
        clip_vf += m * (vf2 > vf1);
        ent += entropy ? m * entropy[i] : 0;
        akl += m * d * d;
        pkl += m * -d;
        rsum += m * ratio;
        vp += m * v;
        verr += m * vf1;
        if (m != 0 && ratio > rmax)
            rmax = ratio;
        if (dlogp || dvpred) {
            double g1, g2;
            max_grad(pg1, pg2, &g1, &g2);
            double inside = (ratio >= lo && ratio <= hi) ? 1 : 0;
            /* d pg / d ratio, times d ratio / d logp = ratio */
            double gr = g1 * -A + g2 * -A * inside;
            if (dlogp)
                dlogp[i] = (float)(msum > 0 ? gr * ratio * m * w / msum * grad_scale : 0);
            double h1, h2;
            max_grad(vf1, vf2, &h1, &h2);
            /* d min(v, vhi)/dv and d max(., vlo)/d. with PyTorch's tie split */
            double dmin = v < vhi ? 1 : v == vhi ? 0.5 : 0;
            double dmax = vmin > vlo ? 1 : vmin == vlo ? 0.5 : 0;
            double gv = h1 * 2 * (v - R) + h2 * 2 * (vc - R) * dmin * dmax;
            if (dvpred)
                dvpred[i] = (float)(msum > 0 ? c->vf_coef * 0.5 * gv * m / msum * grad_scale : 0);
        }
    }
    if (!(msum > 0)) {
        st->loss_policy = st->loss_value = st->loss_total = NAN;
        return;
    }
    st->loss_policy = pg / msum;
    st->loss_value = 0.5 * vf / msum;
    st->loss_total = st->loss_policy + c->vf_coef * st->loss_value;
    st->clipfrac = clip_pg / msum;
    st->val_clipfrac = clip_vf / msum;
    st->entropy = ent / msum;
    st->approxkl = 0.5 * akl / msum;
    st->policykl = pkl / msum;
    st->ratio_mean = rsum / msum;
    st->ratio_max = rmax;
    st->advantages_mean = ppo_masked_mean(adv, mask, n);
    st->returns_mean = ppo_masked_mean(returns, mask, n);
    st->returns_var = ppo_masked_var(returns, mask, n, true);
    st->vpred = vp / msum;
    st->val_error = verr / msum;
    st->val_mean = ppo_masked_mean(old_values, mask, n);
    st->val_var = ppo_masked_var(old_values, mask, n, true);
    if (st->ratio_mean > c->ratio_threshold)
        ppo_loss_skip(st, n, dlogp, dvpred);
}

void ppo_loss_skip(ppo_mb_stats_t *st, size_t n, float *dlogp, float *dvpred)
{
    /* TRL: pg_loss, vf_loss and loss multiplied by 0.0 (their gradients vanish) */
    st->skipped = true;
    st->loss_policy = st->loss_value = st->loss_total = 0;
    for (size_t i = 0; i < n; i++) {
        if (dlogp)
            dlogp[i] = 0;
        if (dvpred)
            dvpred[i] = 0;
    }
}

/* ---- rollout correction ---------------------------------------------------------------------- */

const char *const ppo_rc_names[PPO_RC_COUNT + 1] = {"none", "tis", "seq_tis", NULL};

/* min(exp(s), cap) without overflow: exp(s) is not formed once s exceeds log(cap) */
static double truncated_ratio(double s, double cap) { return s > log(cap) ? cap : exp(s); }

void ppo_rollout_weights(ppo_rc_t mode, double cap, int B, int T, const float *old_logp,
                         const float *rollout_logp, const float *mask, float *w,
                         ppo_rc_stats_t *st)
{
    double kl = 0, rsum = 0, nclip = 0;
    long ntok = 0, units = 0;
    for (int b = 0; b < B; b++) {
        double s = 0; /* the row's summed log-ratio old - rollout */
        long nb = 0;
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            if (w)
                w[i] = 1;
            if (mask[i] == 0)
                continue;
            double d = (double)rollout_logp[i] - old_logp[i];
            kl += d;
            ntok++;
            nb++;
            s += (double)old_logp[i] - rollout_logp[i];
            if (mode == PPO_RC_TIS) {
                double r = exp((double)old_logp[i] - rollout_logp[i]);
                rsum += r;
                nclip += r > cap;
                units++;
                if (w)
                    w[i] = (float)truncated_ratio((double)old_logp[i] - rollout_logp[i], cap);
            }
        }
        if (mode == PPO_RC_SEQ_TIS && nb > 0) {
            double r = exp(s); /* may be +Inf: then ratio_mean is too */
            rsum += r;
            nclip += r > cap;
            units++;
            if (w) {
                float wb = (float)truncated_ratio(s, cap);
                for (int t = 0; t < T; t++)
                    if (mask[(size_t)b * T + t] != 0)
                        w[(size_t)b * T + t] = wb;
            }
        }
    }
    st->kl = ntok ? kl / (double)ntok : NAN;
    st->units = mode == PPO_RC_SEQ_TIS ? units : ntok;
    st->ratio_mean = mode != PPO_RC_NONE && units ? rsum / (double)units : NAN;
    st->clipped_frac = mode != PPO_RC_NONE && units ? nclip / (double)units : NAN;
}

/* ---- KL controller ------------------------------------------------------------------------------- */

void ppo_klctl_update(ppo_klctl_t *c, double current, long n_steps)
{
    if (!c->adaptive)
        return;
    double err = current / c->target - 1;
    err = err < -0.2 ? -0.2 : err > 0.2 ? 0.2 : err;
    c->value *= 1 + err * (double)n_steps / c->horizon;
}

/* ---- running moments ------------------------------------------------------------------------------ */

void ppo_running_init(ppo_running_t *r)
{
    r->mean = 0;
    r->var = 1;
    r->std = 1;
    r->count = 1e-24;
}

void ppo_running_update(ppo_running_t *r, const float *x, int n)
{
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    double xm = s / n;
    for (int i = 0; i < n; i++)
        ss += ((double)x[i] - xm) * ((double)x[i] - xm);
    double xv = ss / n; /* torch.var_mean(unbiased=False) */
    double delta = xm - r->mean, tot = r->count + n;
    double new_sum = xv * n;
    double old_sum = r->var * r->count + delta * delta * r->count * n / tot;
    r->mean += delta * n / tot;
    r->var = (old_sum + new_sum) / tot;
    r->std = sqrt(r->var * tot / (tot - 1));
    r->count = tot;
}
