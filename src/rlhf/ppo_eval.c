/* ppo_eval: evaluation of the policy on the held-out prompts (the same random numbers at
 * every evaluation) and the best-of-n comparison from the initial policy (ppo_internal.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/ppo_internal.h"
#include "util/rng.h"

/* ---- evaluation ------------------------------------------------------------------------------- */

cJSON *ppo_num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* The random stream of chunk c (rows [c B, c B + B) of the held-out prompts), draw r of
 * `per` for each: one process's chunk of Bg rows holding them, offset by where they sit in
 * it, so a rank's smaller chunks (B = Bg / ranks) draw what one process draws. */
static uint64_t chunk_stream(const ppo_t *P, const char *name, size_t c, size_t per, size_t r)
{
    size_t i0 = c * (size_t)P->B, C = i0 / (size_t)P->Bg, off = i0 % (size_t)P->Bg;
    return rng_stream(name, C * per + r) + off;
}

/* One sample per held-out prompt from the current policy, with the same random numbers at
 * every evaluation; reward, ground truth and the sampled sequences' KL to the reference
 * (sum over response tokens of rollout log-prob minus reference log-prob). With `samples`
 * (a JSON array), one object per prompt is appended: the texts and their scores, for
 * comparing policies prompt by prompt (eval_samples.jsonl). */
static int evaluate(ppo_t *P, int steps_done, ppo_eval_t *ev, cJSON *samples, err_t *e)
{
    memset(ev, 0, sizeof *ev);
    ev->step = steps_done;
    double sr = 0, ss = 0, ss2 = 0, skl = 0, slen = 0;
    for (size_t c = 0; c * P->B < P->nev; c++) {
        int n = (int)(P->nev - c * P->B < (size_t)P->B ? P->nev - c * P->B : (size_t)P->B);
        const prompt_t *rows[P->B];
        for (int b = 0; b < n; b++)
            rows[b] = &P->ev[c * P->B + b];
        if (ppo_generate(P, rows, n, 0, chunk_stream(P, "ppo.eval", c, 1, 0), e) ||
            ppo_make_batch(P, rows, n, e) || ppo_rm_scores(P, n, 0, P->scores, e))
            return err_prefix(e, "evaluation");
        prec_ctx_t rctx = {PREC_REWARD, P->o->seed, 0};
        const int T = P->batch.T;
        qwen2_batch_t qb = {n, T, P->batch.ids, NULL, P->batch.len};
        qwen2_next_token_targets(&qb, P->tgt);
        if (qwen2_forward(P->ref, &rctx, &qb, QWEN2_FWD_LOGITS, e) ||
            qwen2_token_logprobs(P->ref, P->tgt, P->ref_logp, NULL, e))
            return err_prefix(e, "evaluation, reference model");
        for (int b = 0; b < n; b++) {
            int p0 = rows[b]->seq.n - 1;
            double kl = 0;
            for (int s = 0; s < P->resp_len[b]; s++)
                kl += (double)P->roll_logp[(size_t)b * P->max_new + s] -
                      P->ref_logp[(size_t)b * T + p0 + s];
            double gt = NAN;
            data_synth_score_t sc = {0};
            char *text;
            if (ppo_ground_truth_exact(P, rows[b], b, &gt, &sc, &text, e))
                return e->code;
            if (samples) {
                cJSON *j = cJSON_CreateObject();
                cJSON_AddNumberToObject(j, "step", steps_done);
                cJSON_AddNumberToObject(j, "prompt_index", (double)(c * P->B + (size_t)b));
                cJSON_AddStringToObject(j, "prompt", rows[b]->text);
                cJSON_AddStringToObject(j, "response", text ? text : "");
                cJSON_AddNumberToObject(j, "tokens", P->resp_len[b]);
                cJSON_AddItemToObject(j, "score", ppo_num(P->scores[b]));
                cJSON_AddItemToObject(j, "kl", ppo_num(kl));
                cJSON_AddItemToObject(j, "data_synth_score", ppo_num(gt));
                if (P->io->synthetic) {
                    cJSON_AddNumberToObject(j, "data_synth_num", (double)sc.num);
                    cJSON_AddNumberToObject(j, "data_synth_den", (double)sc.den);
                }
                cJSON_AddItemToArray(samples, j);
            }
            free(text);
            sr += P->scores[b];
            ss += gt;
            ss2 += gt * gt;
            skl += kl;
            slen += P->resp_len[b];
        }
        ev->n += n;
    }
    if (ev->n > 0) {
        ev->reward_mean = sr / ev->n;
        ev->synth_score_mean = P->io->synthetic ? ss / ev->n : NAN;
        ev->synth_score_std = P->io->synthetic && ev->n > 1
                                  ? sqrt(fmax(0, (ss2 - ss * ss / ev->n) / (ev->n - 1)))
                                  : NAN;
        ev->kl_mean = skl / ev->n;
        ev->response_len_mean = slen / ev->n;
    }
    return ERR_OK;
}

cJSON *ppo_eval_json(const ppo_eval_t *ev)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", ev->step);
    cJSON_AddNumberToObject(j, "prompts", ev->n);
    cJSON_AddItemToObject(j, "reward_mean", ppo_num(ev->reward_mean));
    cJSON_AddItemToObject(j, "data_synth_score", ppo_num(ev->synth_score_mean));
    cJSON_AddItemToObject(j, "data_synth_score_std", ppo_num(ev->synth_score_std));
    cJSON_AddItemToObject(j, "kl", ppo_num(ev->kl_mean));
    cJSON_AddItemToObject(j, "response_len_mean", ppo_num(ev->response_len_mean));
    return j;
}

double ppo_jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

void ppo_eval_from_json(const cJSON *j, ppo_eval_t *ev)
{
    ev->step = (int)ppo_jnum(j, "step");
    ev->n = (int)ppo_jnum(j, "prompts");
    ev->reward_mean = ppo_jnum(j, "reward_mean");
    ev->synth_score_mean = ppo_jnum(j, "data_synth_score");
    ev->synth_score_std = ppo_jnum(j, "data_synth_score_std");
    ev->kl_mean = ppo_jnum(j, "kl");
    ev->response_len_mean = ppo_jnum(j, "response_len_mean");
}

/* Best-of-n from the initial policy on the held-out prompts: n samples per prompt, the one
 * the reward model scores highest kept; its KL to the sampling policy is the analytic
 * log n - (n - 1) / n (Stiennon et al. 2020). */
int ppo_best_of_n(ppo_t *P, err_t *e)
{
    const int n = P->o->best_of_n;
    double sgt = 0, srm = 0;
    int count = 0;
    for (size_t c = 0; c * P->B < P->nev; c++) {
        int rows_n = (int)(P->nev - c * P->B < (size_t)P->B ? P->nev - c * P->B : (size_t)P->B);
        const prompt_t *rows[P->B];
        double best_rm[P->B], best_gt[P->B];
        for (int b = 0; b < rows_n; b++) {
            rows[b] = &P->ev[c * P->B + b];
            best_rm[b] = -INFINITY;
            best_gt[b] = NAN;
        }
        for (int r = 0; r < n; r++) {
            if (ppo_generate(P, rows, rows_n, 0,
                             chunk_stream(P, "ppo.best_of_n", c, (size_t)n, (size_t)r), e) ||
                ppo_make_batch(P, rows, rows_n, e) || ppo_rm_scores(P, rows_n, 0, P->scores, e))
                return err_prefix(e, "best-of-%d", n);
            for (int b = 0; b < rows_n; b++) {
                if (!(P->scores[b] > best_rm[b]))
                    continue;
                char *text;
                double gt = NAN;
                if (ppo_ground_truth(P, rows[b], b, &gt, &text, e))
                    return e->code;
                free(text);
                best_rm[b] = P->scores[b];
                best_gt[b] = gt;
            }
        }
        for (int b = 0; b < rows_n; b++) {
            srm += best_rm[b];
            sgt += best_gt[b];
            count++;
        }
    }
    P->bon = cJSON_CreateObject();
    cJSON_AddNumberToObject(P->bon, "n", n);
    cJSON_AddNumberToObject(P->bon, "prompts", count);
    cJSON_AddItemToObject(P->bon, "reward_mean", ppo_num(count ? srm / count : NAN));
    cJSON_AddItemToObject(P->bon, "data_synth_score",
                          ppo_num(count && P->io->synthetic ? sgt / count : NAN));
    cJSON_AddNumberToObject(P->bon, "kl_analytic", log((double)n) - (double)(n - 1) / n);
    return ERR_OK;
}

int ppo_run_eval(ppo_t *P, int steps_done, bool keep, ppo_eval_t *ev, cJSON *samples,
                 err_t *e)
{
    if (!P->nev)
        return ERR_OK;
    if (evaluate(P, steps_done, ev, samples, e))
        return e->code;
    char truth[48] = "";
    if (P->io->synthetic)
        snprintf(truth, sizeof truth, ", ground truth %.4f", ev->synth_score_mean);
    ppo_log(P, "mxrlhf ppo: evaluation at step %d: reward %.4f%s, KL %.3f, length %.1f (%d "
             "prompts)\n", steps_done, ev->reward_mean, truth, ev->kl_mean,
          ev->response_len_mean, ev->n);
    if (keep)
        cJSON_AddItemToArray(P->evals, ppo_eval_json(ev));
    return ERR_OK;
}
