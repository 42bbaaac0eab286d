/* ppo_step: one PPO step's work (ppo_internal.h): rollouts and their scoring, shared with
 * evaluation; reward inference (scores, reference log-probs, KL-penalised rewards, GAE);
 * the gradient update over shuffled minibatches; the step's statistics under TRL's names. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/ppo_internal.h"
#include "rlhf/train_common.h"
#include "util/rng.h"

/* ---- rollouts and scoring (shared by training steps and evaluation) --------------------------- */

/* Fisher-Yates over n indices with Philox words keyed (seed, stream, i). */
static void shuffle(size_t *idx, size_t n, uint64_t seed, uint64_t stream)
{
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    for (size_t i = n; i > 1; i--) {
        uint64_t x = (uint64_t)rng_u32(seed, stream, 2 * (i - 1)) << 32 |
                     rng_u32(seed, stream, 2 * (i - 1) + 1);
        size_t j = (size_t)(x % i), t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

/* The prompts of step `step`: TRL's DataLoader(shuffle=True, drop_last=True) cycled, one
 * permutation per pass over the prompts; with ranks, rank r takes rows [r B, (r + 1) B) of
 * the global batch. */
void ppo_step_prompts(ppo_t *P, int step, const prompt_t **rows)
{
    size_t per_pass = P->npr / (size_t)P->Bg;
    long epoch = (long)((size_t)step / per_pass);
    size_t k = (size_t)step % per_pass;
    if (epoch != P->perm_epoch) {
        shuffle(P->perm, P->npr, P->o->seed, rng_stream("ppo.prompts", (uint64_t)epoch));
        P->perm_epoch = epoch;
    }
    /* this rank's rows of the global batch */
    for (int b = 0; b < P->B; b++)
        rows[b] = &P->pr[P->perm[k * (size_t)P->Bg + P->row0 + (size_t)b]];
}

/* Samples one response per row into P->resp / resp_len / roll_logp. */
int ppo_generate(ppo_t *P, const prompt_t *const *rows, int n, uint64_t pctx_step,
                 uint64_t stream, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const int32_t *pp[n];
    int plen[n];
    for (int b = 0; b < n; b++) {
        pp[b] = rows[b]->seq.ids;
        plen[b] = rows[b]->seq.n;
    }
    prec_ctx_t ctx = {PREC_ROLLOUT, o->seed, pctx_step};
    qwen2_gen_t g = {P->max_new, o->temperature, o->top_k, o->top_p, o->seed, stream, &P->eot, 1};
    qwen2_gen_ext_t x = {o->min_new_tokens, P->roll_logp};
    return qwen2_generate_ext(P->policy, &ctx, n, pp, plen, &g, &x, P->resp, P->resp_len, e);
}

/* The rollout phase's work: one response per prompt of step `step`. */
int ppo_rollout(ppo_t *P, const prompt_t *const *rows, int step, err_t *e)
{
    /* row b's stream is the global row's, as in one process */
    return ppo_generate(P, rows, P->B, (uint64_t)step,
                        rng_stream("ppo.rollout", (uint64_t)step) + P->row0, e);
}

/* The right-padded batch of prompt + response for rows [0, n) (rlhf/text's layout). */
int ppo_make_batch(ppo_t *P, const prompt_t *const *rows, int n, err_t *e)
{
    rlhf_seq_t seqs[n];
    const rlhf_seq_t *ptr[n];
    int rc = ERR_OK;
    memset(seqs, 0, sizeof seqs);
    for (int b = 0; b < n && !rc; b++) {
        const rlhf_seq_t *p = &rows[b]->seq;
        int r = P->resp_len[b];
        seqs[b].ids = malloc((size_t)(p->n + r) * sizeof(int32_t));
        if (!seqs[b].ids) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(seqs[b].ids, p->ids, (size_t)p->n * sizeof(int32_t));
        memcpy(seqs[b].ids + p->n, P->resp + (size_t)b * P->max_new, (size_t)r * sizeof(int32_t));
        seqs[b].n = p->n + r;
        seqs[b].prompt_len = p->n;
        seqs[b].ended = r > 0 && P->resp[(size_t)b * P->max_new + r - 1] == P->eot;
        ptr[b] = &seqs[b];
    }
    rlhf_batch_free(&P->batch);
    if (!rc)
        rc = rlhf_batch_make(ptr, n, P->eot, &P->batch, e);
    for (int b = 0; b < n; b++)
        rlhf_seq_free(&seqs[b]);
    return rc;
}

/* The ground truth of row b's response (synthetic task), and its text. */
int ppo_ground_truth_exact(ppo_t *P, const prompt_t *row, int b, double *score,
                           data_synth_score_t *exact, char **text, err_t *e)
{
    *text = NULL;
    if (rlhf_decode_response(&P->text, P->resp + (size_t)b * P->max_new, P->resp_len[b], text, e))
        return e->code;
    *score = NAN;
    if (P->io->synthetic) {
        data_synth_score_t sc;
        data_synth_score(*text, row->topic, &P->counter, &sc);
        *score = sc.value;
        if (exact)
            *exact = sc;
    }
    return ERR_OK;
}

int ppo_ground_truth(ppo_t *P, const prompt_t *row, int b, double *score, char **text, err_t *e)
{
    return ppo_ground_truth_exact(P, row, b, score, NULL, text, e);
}

/* Between rollout and reward inference, outside the phases: the batch of prompt +
 * response, and each response's text and ground truth (an evaluation aid, not PPO's
 * work; texts[b] is the caller's to free). */
int ppo_rollout_batch(ppo_t *P, const prompt_t *const *rows, char **texts, err_t *e)
{
    int rc = ppo_make_batch(P, rows, P->B, e);
    for (int b = 0; b < P->B && !rc; b++)
        rc = ppo_ground_truth(P, rows[b], b, &P->synth[b], &texts[b], e);
    return rc;
}

/* Reward-model scores of the current batch (n rows). */
int ppo_rm_scores(ppo_t *P, int n, uint64_t pstep, float *out, err_t *e)
{
    prec_ctx_t rctx = {PREC_REWARD, P->o->seed, pstep};
    qwen2_batch_t qb = {n, P->batch.T, P->batch.ids, NULL, P->batch.len};
    if (qwen2_forward(P->rm, &rctx, &qb, QWEN2_FWD_SCORES, e) || qwen2_scores_get(P->rm, out, e))
        return err_prefix(e, "reward model");
    return ERR_OK;
}
/* ---- one PPO step ------------------------------------------------------------------------------- */

static void acc_add(step_acc_t *a, const ppo_mb_stats_t *s)
{
    ppo_mb_stats_t *t = &a->sum;
    t->loss_policy += s->loss_policy;
    t->loss_value += s->loss_value;
    t->loss_total += s->loss_total;
    t->entropy += s->entropy;
    t->approxkl += s->approxkl;
    t->policykl += s->policykl;
    t->clipfrac += s->clipfrac;
    t->advantages_mean += s->advantages_mean;
    t->returns_mean += s->returns_mean;
    t->returns_var += s->returns_var;
    t->vpred += s->vpred;
    t->val_error += s->val_error;
    t->val_clipfrac += s->val_clipfrac;
    t->val_mean += s->val_mean;
    t->val_var += s->val_var;
    t->ratio_mean += s->ratio_mean;
    t->ratio_max = s->ratio_max > t->ratio_max ? s->ratio_max : t->ratio_max;
    a->n++;
    a->skipped += s->skipped;
}

/* Copies rows `rows` of the step's (B, batch.T) arrays into the minibatch buffers, trimmed
 * to the longest of them (right padding: positions keep their meaning). */
static int gather_minibatch(ppo_t *P, const size_t *rows, int M)
{
    const int T = P->batch.T;
    int Tm = 1;
    for (int j = 0; j < M; j++)
        Tm = P->batch.len[rows[j]] > Tm ? P->batch.len[rows[j]] : Tm;
    for (int j = 0; j < M; j++) {
        size_t src = rows[j] * (size_t)T, dst = (size_t)j * Tm;
        memcpy(P->mb_ids + dst, P->batch.ids + src, (size_t)Tm * sizeof(int32_t));
        memcpy(P->mb_old_logp + dst, P->old_logp + src, (size_t)Tm * sizeof(float));
        memcpy(P->mb_values + dst, P->values + src, (size_t)Tm * sizeof(float));
        memcpy(P->mb_mask + dst, P->batch.mask + src, (size_t)Tm * sizeof(float));
        memcpy(P->mb_adv + dst, P->adv + src, (size_t)Tm * sizeof(float));
        memcpy(P->mb_ret + dst, P->ret + src, (size_t)Tm * sizeof(float));
        memcpy(P->mb_w + dst, P->rc_w + src, (size_t)Tm * sizeof(float));
        P->mb_len[j] = P->batch.len[rows[j]];
    }
    return Tm;
}

static bool all_finite(const float *x, const float *mask, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((!mask || mask[i] != 0) && !isfinite(x[i]))
            return false;
    return true;
}

/* With ranks, the loss of a minibatch is the masked mean over every rank's rows: this
 * rank's gradient scale is (1 / gas) x (its mask sum x ranks / the global mask sum), so that
 * averaging the ranks' gradients gives the gradient of the global masked mean. */
static int global_scale(ppo_t *P, size_t n, double *msum, double *mglobal, double *scale,
                        err_t *e)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m += P->mb_mask[i];
    double g = m;
    if (dist_sum_f64(P->comm, &g, 1, e))
        return e->code;
    *msum = m;
    *mglobal = g;
    *scale *= g > 0 ? m * P->size / g : 0;
    return ERR_OK;
}

/* The ratio threshold and the policy KL (early stopping) on the global minibatch: every rank
 * skips the same minibatches and stops at the same epoch. */
static int global_ratio(ppo_t *P, size_t n, double msum, double mglobal, ppo_mb_stats_t *st,
                        err_t *e)
{
    double v[2] = {msum > 0 ? msum * st->ratio_mean : 0, msum > 0 ? msum * st->policykl : 0};
    if (dist_sum_f64(P->comm, v, 2, e))
        return e->code;
    st->ratio_mean = mglobal > 0 ? v[0] / mglobal : NAN;
    st->policykl = mglobal > 0 ? v[1] / mglobal : NAN;
    if (st->ratio_mean > P->o->ratio_threshold)
        ppo_loss_skip(st, n, P->mb_dlogp, P->mb_dv);
    return ERR_OK;
}

/* TRL's train_minibatch over ppo_epochs passes; fills acc. */
int ppo_gradient_update(ppo_t *P, int step, step_acc_t *acc, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const int B = P->B, M = P->M, gas = o->gradient_accumulation_steps;
    size_t perm[B];
    long k = 0;
    qwen2_adamw_t h = {o->learning_rate, o->adam_beta1, o->adam_beta2, o->adam_epsilon,
                       o->weight_decay, o->max_grad_norm};
    ppo_loss_cfg_t lc = {o->cliprange, o->cliprange_value, o->vf_coef, o->ratio_threshold,
                         o->rollout_correction != PPO_RC_NONE ? P->mb_w : NULL};
    /* with ranks the threshold is applied to the global ratio (global_ratio) */
    ppo_loss_cfg_t lc_ranks = lc;
    lc_ranks.ratio_threshold = INFINITY;
    for (int epoch = 0; epoch < o->ppo_epochs; epoch++) {
        /* with ranks, each shuffles its own rows (its stream offset by its rank) */
        shuffle(perm, (size_t)B, o->seed,
                rng_stream("ppo.minibatch", (uint64_t)step * 4096 + (uint64_t)epoch) +
                    (uint64_t)P->rank);
        ppo_mb_stats_t st = {0};
        for (int j = 0; j < B / M; j++, k++) {
            int Tm = gather_minibatch(P, perm + (size_t)j * M, M);
            for (int r = 0; r < M; r++)
                acc->tokens += P->resp_len[perm[(size_t)j * M + r]];
            size_t n = (size_t)M * Tm;
            qwen2_batch_t qb = {M, Tm, P->mb_ids, NULL, P->mb_len};
            prec_ctx_t g = {PREC_GRADIENT, o->seed, ((uint64_t)step << 16) | (uint64_t)(k + 1)};
            qwen2_next_token_targets(&qb, P->mb_tgt);
            unsigned fl = QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS | (P->shared_value ? QWEN2_FWD_VALUES : 0);
            if (qwen2_forward(P->policy, &g, &qb, fl, e) ||
                qwen2_token_logprobs(P->policy, P->mb_tgt, P->mb_logp, P->mb_ent, e) ||
                (P->shared_value && qwen2_values_get(P->policy, P->mb_vpred, e)))
                return err_prefix(e, "step %d, policy", step + 1);
            if (!P->shared_value &&
                (qwen2_forward(P->critic, &g, &qb, QWEN2_FWD_TRAIN | QWEN2_FWD_VALUES, e) ||
                 qwen2_values_get(P->critic, P->mb_vpred, e)))
                return err_prefix(e, "step %d, critic", step + 1);
            double scale = 1.0 / gas, msum = 0, mglobal = 0;
            if (P->size > 1 && global_scale(P, n, &msum, &mglobal, &scale, e))
                return err_prefix(e, "step %d", step + 1);
            ppo_loss(P->size > 1 ? &lc_ranks : &lc, n, P->mb_old_logp, P->mb_values, P->mb_logp,
                     P->mb_vpred, P->mb_ent, P->mb_mask, P->mb_adv, P->mb_ret, scale,
                     P->mb_dlogp, P->mb_dv, &st);
            if (P->size > 1 && global_ratio(P, n, msum, mglobal, &st, e))
                return err_prefix(e, "step %d", step + 1);
            if (!st.skipped && (!isfinite(st.loss_total) || !all_finite(P->mb_dlogp, NULL, n) ||
                                !all_finite(P->mb_dv, NULL, n)))
                return err_set(e, ERR_FAIL, "step %d: the PPO loss is not finite (policy %g, "
                               "value %g): stopping; the last good checkpoint stays",
                               step + 1, st.loss_policy, st.loss_value);
            if (st.skipped)
                ppo_warn(P, step + 1, "The average ratio of batch (%.2f) exceeds threshold %.2f. "
                     "Skipping batch.", st.ratio_mean, o->ratio_threshold);
            if (k % gas == 0) {
                qwen2_zero_grads(P->policy);
                if (P->critic)
                    qwen2_zero_grads(P->critic);
            }
            if (!st.skipped) {
                qwen2_grad_in_t gp = {P->mb_dlogp, NULL, P->shared_value ? P->mb_dv : NULL, NULL};
                if (qwen2_backward(P->policy, &g, &gp, e))
                    return err_prefix(e, "step %d, policy backward", step + 1);
                if (P->critic &&
                    qwen2_backward(P->critic, &g, &(qwen2_grad_in_t){NULL, NULL, P->mb_dv, NULL}, e))
                    return err_prefix(e, "step %d, critic backward", step + 1);
            }
            if ((k + 1) % gas == 0) {
                /* every rank's gradients averaged before the step: the same weights everywhere */
                if (rlhf_grads_allreduce(P->comm, P->policy, e) ||
                    (P->critic && rlhf_grads_allreduce(P->comm, P->critic, e)))
                    return err_prefix(e, "step %d", step + 1);
                qwen2_step_info_t info;
                if (qwen2_optimizer_step(P->policy, &h, &info, e))
                    return err_prefix(e, "step %d: stopping, the last good checkpoint stays",
                                      step + 1);
                acc->grad_norm += info.grad_norm;
                acc->opt_steps++;
                if (P->critic && qwen2_optimizer_step(P->critic, &h, &info, e))
                    return err_prefix(e, "step %d, critic: stopping, the last good checkpoint "
                                      "stays: ", step + 1);
            }
            acc_add(acc, &st);
        }
        acc->epochs = epoch + 1;
        /* TRL checks at the end of each epoch, with the last minibatch's policy KL */
        if (o->early_stopping && st.policykl > 1.5 * o->target_kl) {
            acc->early_stopped = true;
            break;
        }
    }
    return ERR_OK;
}

/* reward inference: the scores, the reference's log-probs, the policy's old log-probs and
 * values (gradient-phase precision), rewards and advantages. */
int ppo_reward_inference(ppo_t *P, int step, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const int B = P->B, T = P->batch.T;
    const size_t n = (size_t)B * T;
    const float *mask = P->batch.mask;
    qwen2_batch_t qb = {B, T, P->batch.ids, NULL, P->batch.len};
    prec_ctx_t g = {PREC_GRADIENT, o->seed, (uint64_t)step << 16};
    prec_ctx_t r = {PREC_REWARD, o->seed, (uint64_t)step};
    const bool full = o->kl_penalty == PPO_KL_FULL;
    qwen2_next_token_targets(&qb, P->tgt);

    /* the policy: old log-probs and values, as the gradient phase computes them */
    unsigned fl = QWEN2_FWD_LOGITS | (P->shared_value ? QWEN2_FWD_VALUES : 0);
    if (qwen2_forward(P->policy, &g, &qb, fl, e) ||
        qwen2_token_logprobs(P->policy, P->tgt, P->old_logp, NULL, e) ||
        (P->shared_value && qwen2_values_get(P->policy, P->values, e)))
        return err_prefix(e, "step %d, policy", step + 1);
    size_t fpos = 0;
    if (full)
        for (int b = 0; b < B; b++) {
            int p0 = P->batch.len[b] - P->resp_len[b] - 1;
            if (qwen2_logits_get(P->policy, b * T + p0, P->resp_len[b],
                                 P->full_p + fpos * (size_t)P->V, e))
                return e->code;
            fpos += (size_t)P->resp_len[b];
        }
    if (P->critic && (qwen2_forward(P->critic, &g, &qb, QWEN2_FWD_VALUES, e) ||
                      qwen2_values_get(P->critic, P->values, e)))
        return err_prefix(e, "step %d, critic", step + 1);

    /* the frozen reference */
    if (qwen2_forward(P->ref, &r, &qb, QWEN2_FWD_LOGITS, e) ||
        qwen2_token_logprobs(P->ref, P->tgt, P->ref_logp, NULL, e))
        return err_prefix(e, "step %d, reference model", step + 1);
    for (size_t i = 0; i < n; i++)
        P->klv[i] =
            full ? 0.0f : (float)ppo_kl_token(o->kl_penalty, P->old_logp[i], P->ref_logp[i]);
    if (full) {
        fpos = 0;
        for (int b = 0; b < B; b++) {
            int p0 = P->batch.len[b] - P->resp_len[b] - 1;
            if (qwen2_logits_get(P->ref, b * T + p0, P->resp_len[b], P->full_q, e))
                return e->code;
            for (int s = 0; s < P->resp_len[b]; s++)
                P->klv[(size_t)b * T + p0 + s] = (float)ppo_kl_full(
                    P->full_p + (fpos + s) * (size_t)P->V, P->full_q + (size_t)s * P->V, P->V);
            fpos += (size_t)P->resp_len[b];
        }
    }

    /* the reward model */
    if (ppo_rm_scores(P, B, (uint64_t)step, P->scores, e))
        return err_prefix(e, "step %d", step + 1);
    if (o->oracle_reward)
        for (int b = 0; b < B; b++)
            P->scores[b] = (float)P->synth[b];
    if (!all_finite(P->scores, NULL, (size_t)B) || !all_finite(P->old_logp, mask, n) ||
        !all_finite(P->ref_logp, mask, n) || !all_finite(P->values, mask, n))
        return err_set(e, ERR_FAIL, "step %d: a score, log-prob or value is not finite: stopping; "
                       "the last good checkpoint stays", step + 1);
    memcpy(P->raw_scores, P->scores, (size_t)B * sizeof(float));
    if (o->use_score_scaling) {
        /* the running moments see the global batch, in rank order */
        float all[P->Bg];
        if (dist_allgather(P->comm, P->scores, all, (size_t)B * sizeof(float), e))
            return err_prefix(e, "step %d, score scaling", step + 1);
        ppo_running_update(&P->running, all, P->Bg);
        double f = P->running.std + FLT_EPSILON;
        for (int b = 0; b < B; b++)
            P->scores[b] = (float)(o->use_score_norm ? (P->scores[b] - P->running.mean) / f
                                                     : P->scores[b] / f);
    }
    if (o->score_clip > 0)
        for (int b = 0; b < B; b++)
            P->scores[b] = (float)fmin(fmax(P->scores[b], -o->score_clip), o->score_clip);

    /* rollout correction: the rollout's log-probs against the old ones just computed */
    memset(P->roll_bt, 0, n * sizeof(float));
    for (int b = 0; b < B; b++) {
        int p0 = P->batch.len[b] - P->resp_len[b] - 1;
        memcpy(P->roll_bt + (size_t)b * T + p0, P->roll_logp + (size_t)b * P->max_new,
               (size_t)P->resp_len[b] * sizeof(float));
    }
    ppo_rollout_weights(o->rollout_correction, o->tis_cap, B, T, P->old_logp, P->roll_bt, mask,
                        P->rc_w, &P->rc);

    ppo_compute_rewards(B, T, P->scores, P->klv, mask, P->kl.value, P->rewards, P->non_score);
    if (ppo_advantages_all(P->comm, B, T, P->values, P->rewards, mask, o->gamma, o->lam,
                           o->whiten_rewards, P->adv, P->ret, e))
        return err_prefix(e, "step %d, advantages", step + 1);
    return ERR_OK;
}

static double mean_std(const double *x, int n, double *sd)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    double m = s / n;
    for (int i = 0; i < n; i++)
        s2 += (x[i] - m) * (x[i] - m);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : NAN; /* torch.std: unbiased */
    return m;
}

static void add(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, ppo_num(v)); }

/* The step's statistics under TRL's names (record_step_stats + train_stats + log_stats). */
cJSON *ppo_step_stats(ppo_t *P, int step, double kl_coef, const step_acc_t *a, double t_step,
                      double *kl_out)
{
    const int B = P->B, T = P->batch.T;
    const float *mask = P->batch.mask;
    double klrow[B], entrow[B], sc[B], raw[B], ql[B], rl[B];
    double gap_abs = 0, gap_max = 0, gn = 0, ended = 0;
    for (int b = 0; b < B; b++) {
        klrow[b] = entrow[b] = 0;
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            klrow[b] += (double)P->klv[i] * mask[i];
            entrow[b] += -(double)P->old_logp[i] * mask[i];
            if (mask[i] != 0) {
                double d = (double)P->roll_bt[i] - P->old_logp[i];
                gap_abs += fabs(d);
                gap_max = fabs(d) > gap_max ? fabs(d) : gap_max;
                gn++;
            }
        }
        sc[b] = P->scores[b];
        raw[b] = P->raw_scores[b];
        ql[b] = P->batch.len[b] - P->resp_len[b];
        rl[b] = P->resp_len[b];
        ended += P->resp[(size_t)b * P->max_new + P->resp_len[b] - 1] == P->eot;
    }
    double sd, kl = mean_std(klrow, B, &sd);
    *kl_out = kl;
    cJSON *j = cJSON_CreateObject();
    const ppo_mb_stats_t *s = &a->sum;
    const double nm = a->n ? a->n : NAN;
    add(j, "step", step + 1);
    add(j, "objective/kl", kl);
    add(j, "objective/kl_coef", kl_coef);
    add(j, "objective/entropy", mean_std(entrow, B, &sd));
    add(j, "ppo/mean_non_score_reward", ppo_masked_mean(P->non_score, mask, (size_t)B * T));
    double ms, ss;
    ms = mean_std(sc, B, &ss);
    add(j, "ppo/mean_scores", ms);
    add(j, "ppo/std_scores", ss);
    double qm, qs, rm, rs;
    qm = mean_std(ql, B, &qs);
    rm = mean_std(rl, B, &rs);
    add(j, "tokens/queries_len_mean", qm);
    add(j, "tokens/queries_len_std", qs);
    add(j, "tokens/responses_len_mean", rm);
    add(j, "tokens/responses_len_std", rs);
    add(j, "ppo/loss/policy", s->loss_policy / nm);
    add(j, "ppo/loss/value", s->loss_value / nm);
    add(j, "ppo/loss/total", s->loss_total / nm);
    add(j, "ppo/policy/entropy", s->entropy / nm);
    add(j, "ppo/policy/approxkl", s->approxkl / nm);
    add(j, "ppo/policy/policykl", s->policykl / nm);
    add(j, "ppo/policy/clipfrac", s->clipfrac / nm);
    add(j, "ppo/policy/advantages_mean", s->advantages_mean / nm);
    add(j, "ppo/policy/ratio_mean", s->ratio_mean / nm);
    add(j, "ppo/policy/ratio_max", s->ratio_max);
    add(j, "ppo/returns/mean", s->returns_mean / nm);
    add(j, "ppo/returns/var", s->returns_var / nm);
    add(j, "ppo/val/vpred", s->vpred / nm);
    add(j, "ppo/val/error", s->val_error / nm);
    add(j, "ppo/val/clipfrac", s->val_clipfrac / nm);
    add(j, "ppo/val/mean", s->val_mean / nm);
    add(j, "ppo/val/var", s->val_var / nm);
    add(j, "ppo/val/var_explained", 1 - (s->val_error / nm) / (s->returns_var / nm));
    add(j, "ppo/learning_rate", P->o->learning_rate);
    add(j, "ppo/grad_norm", a->opt_steps ? a->grad_norm / a->opt_steps : NAN);
    add(j, "ppo/minibatches", a->n);
    add(j, "ppo/minibatches_skipped", a->skipped);
    add(j, "ppo/epochs", a->epochs);
    add(j, "ppo/early_stopped", a->early_stopped);
    double rsd, rmean = mean_std(raw, B, &rsd);
    add(j, "env/reward_mean", rmean);
    add(j, "env/reward_std", rsd);
    if (P->io->synthetic) {
        double gsd, gm = mean_std(P->synth, B, &gsd);
        add(j, "data_synth_score", gm);
        add(j, "data_synth_score_std", gsd);
    }
    add(j, "tokens/responses_ended_frac", ended / B);
    add(j, "rollout/logprob_gap_mean", P->rc.kl);
    add(j, "rollout/logprob_gap_abs_mean", gn ? gap_abs / gn : NAN);
    add(j, "rollout/logprob_gap_max_abs", gap_max);
    if (P->o->rollout_correction != PPO_RC_NONE) {
        add(j, "rollout_corr/ratio_mean", P->rc.ratio_mean);
        add(j, "rollout_corr/clipped_frac", P->rc.clipped_frac);
        add(j, "rollout_corr/kl", P->rc.kl);
    }
    add(j, "time/ppo/rollout", P->phase_s[PREC_ROLLOUT]);
    add(j, "time/ppo/reward_inference", P->phase_s[PREC_REWARD]);
    add(j, "time/ppo/optimize_step", P->phase_s[PREC_GRADIENT]);
    add(j, "time/ppo/total", t_step);
    return j;
}
