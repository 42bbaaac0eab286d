/* ppo: the PPO trainer. ppo.h says what one step does and which files a run writes;
 * ppo_math.h holds the arithmetic, ppo_ckpt.h the checkpoints, ppo_internal.h how the
 * trainer's files divide the work. This file sets the run up and reads top to bottom as
 * TRL's generate() + step(): rollout, reward inference, gradient update, statistics. */
#include "rlhf/ppo.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rlhf/ppo_ckpt.h"
#include "rlhf/ppo_internal.h"
#include "rlhf/ppo_mem.h"
#include "util/fs.h"

double ppo_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void ppo_log(ppo_t *P, const char *fmt, ...)
{
    if (!P->io->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(P->io->log, fmt, ap);
    va_end(ap);
    fflush(P->io->log);
}

void ppo_warn(ppo_t *P, int step, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (P->calibrating) { /* not the run's: its statistics are already written */
        ppo_log(P, "mxrlhf ppo: warning: calibration on step %d's batch: %s\n", step, msg);
        return;
    }
    ppo_log(P, "mxrlhf ppo: warning: step %d: %s\n", step, msg);
    cJSON *w = cJSON_CreateObject();
    cJSON_AddNumberToObject(w, "step", step);
    cJSON_AddStringToObject(w, "message", msg);
    cJSON_AddItemToArray(P->warnings, w);
}

/* ---- phases ----------------------------------------------------------------------------- */

/* A phase window: the energy layer's (it synchronises the device first), or just the
 * device synchronised and the clock read. With ranks, every rank's device is synchronised
 * and the ranks meet (barrier) at both edges, so rank 0's window, which its monitor
 * measures over every rank's GPU, holds every rank's work of the phase; the time a rank
 * waits for the others is inside the phase that waits. */
static int ranks_meet(ppo_t *P, err_t *e)
{
    if (P->size <= 1)
        return ERR_OK;
    return be_sync(P->be, e) || dist_barrier(P->comm, e) ? e->code : ERR_OK;
}

static int phase_begin(ppo_t *P, int ph, err_t *e)
{
    if (ranks_meet(P, e))
        return e->code;
    if (P->io->monitor
            ? energy_phase_begin(P->io->monitor, prec_phase_study_name((prec_phase_t)ph), e)
            : be_sync(P->be, e))
        return e->code;
    P->phase_t0 = ppo_now();
    return ERR_OK;
}

/* ... and its end, with the tokens the window processed (phase_timing.json's tokens). */
static int phase_end(ppo_t *P, int ph, long long tokens, err_t *e)
{
    if (ranks_meet(P, e))
        return e->code;
    const char *name = prec_phase_study_name((prec_phase_t)ph);
    if (P->io->monitor ? energy_phase_end(P->io->monitor, name, e) ||
                             energy_monitor_add_tokens(P->io->monitor, name, tokens, e)
                       : be_sync(P->be, e))
        return e->code;
    P->phase_s[ph] += ppo_now() - P->phase_t0;
    return ERR_OK;
}
/* ---- setup ---------------------------------------------------------------------------------- */

static int open_model(ppo_t *P, const char *dir, unsigned heads, bool training, prec_model_t role,
                      int kv, qwen2_model_t **out, err_t *e)
{
    /* training runs forward-backward passes of one minibatch (accumulation adds them up);
     * the frozen models run in the reward phase only (qwen2_freeze) */
    qwen2_opts_t mo = {.max_batch = P->B, .max_seq = P->T, .training = training, .heads = heads,
                       .kv_batch = kv ? P->B : 0, .kv_len = kv ? P->T : 0, .role = role,
                       .head_seed = P->o->seed, .max_train_batch = training ? P->M : 0,
                       .frozen = !training};
    if (qwen2_open_dir(dir, P->be, &mo, out, e))
        return err_prefix(e, "%s (%s model)", dir, prec_model_name(role));
    if (P->io->policies_path) {
        char name[64];
        snprintf(name, sizeof name, "precision_%s.json", prec_model_name(role));
        char *audit = fs_join(P->io->out_dir, name);
        int rc = audit ? qwen2_load_plan(*out, P->io->policies_path, P->io->plan, audit, e)
                       : err_set(e, ERR_NOMEM, "out of memory");
        free(audit);
        if (rc)
            return err_prefix(e, "plan %s for the %s model", P->io->plan, prec_model_name(role));
    }
    size_t freed;
    if (!training && qwen2_freeze(*out, PREC_REWARD, &freed, e))
        return err_prefix(e, "%s (%s model)", dir, prec_model_name(role));
    if (qwen2_config(*out)->vocab != P->V)
        return err_set(e, ERR_INPUT, "%s: vocabulary of %d tokens, the policy's has %d (every "
                       "model must share the policy's tokenizer)", dir, qwen2_config(*out)->vocab,
                       P->V);
    return ERR_OK;
}

static int encode_prompts(ppo_t *P, const char *const *texts, size_t n, prompt_t **out, err_t *e)
{
    *out = err_calloc(e, n ? n : 1, sizeof **out, "prompts");
    if (!*out)
        return e->code;
    for (size_t i = 0; i < n; i++) {
        prompt_t *p = &(*out)[i];
        p->text = texts[i];
        p->topic = P->io->synthetic ? data_synth_topic_of_prompt(texts[i]) : -1;
        if (rlhf_encode_prompt(&P->text, texts[i], &p->seq, e))
            return err_prefix(e, "prompt %zu", i);
        if (p->seq.n < 1)
            return err_set(e, ERR_INPUT, "prompt %zu encodes to no tokens", i);
        if (p->seq.n + P->max_new > P->T)
            P->T = p->seq.n + P->max_new;
    }
    return ERR_OK;
}


static int setup(ppo_t *P, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const rlhf_ppo_io_t *io = P->io;
    /* the ranks: each takes an even share of the batch and of every minibatch */
    P->comm = io->comm;
    P->rank = dist_rank(io->comm);
    P->size = dist_size(io->comm);
    P->Bg = o->batch_size;
    P->Mg = o->mini_batch_size;
    size_t per;
    if (dist_share_even((size_t)P->Bg, P->size, "batch_size", &per, e))
        return e->code;
    P->B = (int)per;
    if (dist_share_even((size_t)P->Mg, P->size, "mini_batch_size", &per, e))
        return e->code;
    P->M = (int)per;
    P->row0 = (size_t)P->rank * (size_t)P->B;
    if (P->size > 1 && (io->resume || io->calibrate))
        return err_set(e, ERR_INPUT, "%s with %d ranks: not supported (run it on one process)",
                       io->resume ? "resume" : "calibration", P->size);
    P->max_new = o->max_new_tokens;
    P->shared_value = !o->separate_critic;
    if (fs_mkdir_p(io->out_dir, e))
        return e->code;
    if ((size_t)P->Bg > io->n_prompts)
        return err_set(e, ERR_INPUT, "%zu PPO prompts, fewer than one batch of %d", io->n_prompts,
                       P->Bg);
    if (o->oracle_reward && !io->synthetic)
        return err_set(e, ERR_INPUT, "oracle_reward needs the synthetic task's prompts");

    /* the policy's configuration bounds the lengths: prompts keep their last tokens */
    char *cpath = fs_join(io->policy_dir, "config.json"), *tpath = fs_join(io->policy_dir, "tokenizer.json");
    qwen2_config_t cfg;
    int rc = cpath && tpath ? qwen2_config_load(cpath, &cfg, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc && !fs_exists(tpath))
        rc = err_set(e, ERR_INPUT, "%s: no tokenizer (the policy directory must hold its "
                     "tokenizer.json)", tpath);
    if (!rc)
        rc = tok_load(tpath, &P->tok, e);
    free(cpath);
    free(tpath);
    if (rc)
        return rc;
    P->V = cfg.vocab;
    int max_prompt = o->max_prompt_tokens;
    if (cfg.max_pos > 0 && max_prompt > cfg.max_pos - P->max_new)
        max_prompt = cfg.max_pos - P->max_new;
    if (max_prompt < 1)
        return err_set(e, ERR_INPUT, "max_new_tokens %d leaves no room for a prompt within the "
                       "policy's %d positions", P->max_new, cfg.max_pos);
    if (rlhf_text_init(&P->text, P->tok, o->template_, max_prompt, P->max_new, e))
        return e->code;
    P->text_ok = true;
    P->eot = P->text.eot_id;
    if (P->eot >= P->V)
        return err_set(e, ERR_INPUT, "end-of-turn id %d is outside the policy's vocabulary (%d)",
                       P->eot, P->V);
    P->counter = rlhf_text_counter(&P->text);
    P->T = 1;
    if (encode_prompts(P, io->prompts, io->n_prompts, &P->pr, e))
        return e->code;
    P->npr = io->n_prompts;
    P->nev = o->eval_prompts > 0 ? (io->n_eval < (size_t)o->eval_prompts ? io->n_eval
                                                                          : (size_t)o->eval_prompts)
                                 : 0;
    if (encode_prompts(P, io->eval_prompts, P->nev, &P->ev, e))
        return e->code;

    /* the models: policy (+ value head), frozen reference, reward model, critic */
    unsigned ph = QWEN2_HEAD_LM | (P->shared_value ? QWEN2_HEAD_VALUE : 0);
    if (open_model(P, io->policy_dir, ph, true, PREC_MODEL_POLICY, 1, &P->policy, e) ||
        open_model(P, io->ref_dir ? io->ref_dir : io->policy_dir, QWEN2_HEAD_LM, false,
                   PREC_MODEL_REFERENCE, 0, &P->ref, e) ||
        open_model(P, io->reward_dir, QWEN2_HEAD_SCORE, false, PREC_MODEL_REWARD, 0, &P->rm, e))
        return e->code;
    if (!P->shared_value &&
        open_model(P, io->critic_dir ? io->critic_dir : io->reward_dir, QWEN2_HEAD_VALUE, true,
                   PREC_MODEL_VALUE, 0, &P->critic, e))
        return e->code;

    const int B = P->B, T = P->T, M = P->M, N = P->max_new;
    if (ALLOC(P->resp, B * N) || ALLOC(P->resp_len, B) || ALLOC(P->roll_logp, B * N) ||
        ALLOC(P->tgt, B * T) || ALLOC(P->old_logp, B * T) || ALLOC(P->ref_logp, B * T) ||
        ALLOC(P->values, B * T) || ALLOC(P->klv, B * T) || ALLOC(P->rewards, B * T) ||
        ALLOC(P->non_score, B * T) || ALLOC(P->adv, B * T) || ALLOC(P->ret, B * T) ||
        ALLOC(P->scores, B) || ALLOC(P->raw_scores, B) || ALLOC(P->synth, B) ||
        ALLOC(P->perm, P->npr) || ALLOC(P->mb_ids, M * T) || ALLOC(P->mb_len, M) ||
        ALLOC(P->mb_tgt, M * T) || ALLOC(P->mb_old_logp, M * T) || ALLOC(P->mb_values, M * T) ||
        ALLOC(P->mb_mask, M * T) || ALLOC(P->mb_adv, M * T) || ALLOC(P->mb_ret, M * T) ||
        ALLOC(P->mb_logp, M * T) || ALLOC(P->mb_ent, M * T) || ALLOC(P->mb_vpred, M * T) ||
        ALLOC(P->mb_dlogp, M * T) || ALLOC(P->mb_dv, M * T) || ALLOC(P->roll_bt, B * T) ||
        ALLOC(P->rc_w, B * T) || ALLOC(P->mb_w, M * T))
        return e->code;
    if (o->kl_penalty == PPO_KL_FULL &&
        (ALLOC(P->full_p, (size_t)B * N * P->V) || ALLOC(P->full_q, (size_t)N * P->V)))
        return e->code;
    P->perm_epoch = -1;
    P->kl = (ppo_klctl_t){o->adap_kl_ctrl, o->init_kl_coef, o->target, o->horizon};
    ppo_running_init(&P->running);
    P->stats = cJSON_CreateArray();
    P->evals = cJSON_CreateArray();
    P->warnings = cJSON_CreateArray();
    if (!P->stats || !P->evals || !P->warnings)
        return err_set(e, ERR_NOMEM, "out of memory");
    return ERR_OK;
}

static void teardown(ppo_t *P)
{
    for (size_t i = 0; P->pr && i < P->npr; i++)
        rlhf_seq_free(&P->pr[i].seq);
    for (size_t i = 0; P->ev && i < P->nev; i++)
        rlhf_seq_free(&P->ev[i].seq);
    free(P->pr);
    free(P->ev);
    qwen2_free(P->policy);
    qwen2_free(P->ref);
    qwen2_free(P->rm);
    qwen2_free(P->critic);
    if (P->text_ok)
        rlhf_text_free(&P->text);
    tok_free(P->tok);
    rlhf_batch_free(&P->batch);
    void *bufs[] = {P->resp, P->resp_len, P->roll_logp, P->tgt, P->old_logp, P->ref_logp,
                    P->values, P->klv, P->rewards, P->non_score, P->adv, P->ret, P->scores,
                    P->raw_scores, P->synth, P->perm, P->mb_ids, P->mb_len, P->mb_tgt,
                    P->mb_old_logp, P->mb_values, P->mb_mask, P->mb_adv, P->mb_ret, P->mb_logp,
                    P->mb_ent, P->mb_vpred, P->mb_dlogp, P->mb_dv, P->full_p, P->full_q,
                    P->roll_bt, P->rc_w, P->mb_w};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    cJSON_Delete(P->stats);
    cJSON_Delete(P->evals);
    cJSON_Delete(P->warnings);
    cJSON_Delete(P->bon);
    cJSON_Delete(P->run);
    if (P->jsonl)
        fclose(P->jsonl);
    if (P->samples)
        fclose(P->samples);
}
/* ---- the run ---------------------------------------------------------------------------------- */

static int one_step(ppo_t *P, int step, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const int B = P->B;
    const prompt_t *rows[B];
    char *texts[B];
    memset(texts, 0, sizeof texts);
    memset(P->phase_s, 0, sizeof P->phase_s);
    double t0 = ppo_now(), kl_coef = P->kl.value, kl = 0;
    step_acc_t acc;
    memset(&acc, 0, sizeof acc);
    ppo_step_prompts(P, step, rows);
    int rc = ERR_OK;

    /* rollout; tokens: the responses' (end-of-turn id included, no padding) */
    long long generated = 0, scored = 0;
    if ((rc = phase_begin(P, PREC_ROLLOUT, e)) || (rc = ppo_rollout(P, rows, step, e)))
        goto out;
    for (int b = 0; b < B; b++)
        generated += P->resp_len[b];
    if ((rc = phase_end(P, PREC_ROLLOUT, generated, e)))
        goto out;
    /* outside the phases: the batch, text and ground truth */
    if ((rc = ppo_rollout_batch(P, rows, texts, e)))
        goto out;

    /* reward inference; tokens: prompt + response of each row, as the reward model reads
     * them (no padding) */
    for (int b = 0; b < B; b++)
        scored += P->batch.len[b];
    if ((rc = phase_begin(P, PREC_REWARD, e)) || (rc = ppo_reward_inference(P, step, e)) ||
        (rc = phase_end(P, PREC_REWARD, scored, e)))
        goto out;

    /* gradient update; tokens: the response tokens of every minibatch it processed */
    if ((rc = phase_begin(P, PREC_GRADIENT, e)) || (rc = ppo_gradient_update(P, step, &acc, e)) ||
        (rc = phase_end(P, PREC_GRADIENT, acc.tokens, e)))
        goto out;

    /* statistics, then the KL controller (TRL: kl_ctl.update after record_step_stats) */
    cJSON *st = ppo_step_stats(P, step, kl_coef, &acc, 0, &kl);
    if (P->size > 1) { /* the controller's input: the mean KL of the global batch */
        double v[2] = {kl * B, B};
        if ((rc = dist_sum_f64(P->comm, v, 2, e))) {
            cJSON_Delete(st);
            goto out;
        }
        kl = v[0] / v[1];
        cJSON_ReplaceItemInObjectCaseSensitive(st, "objective/kl", ppo_num(kl));
    }
    if (!isfinite(kl)) {
        cJSON_Delete(st);
        rc = err_set(e, ERR_FAIL, "step %d: the KL is not finite: stopping; the last good "
                     "checkpoint stays", step + 1);
        goto out;
    }
    if (kl < -1.0)
        ppo_warn(
            P, step + 1,
            "KL divergence is starting to become negative: %.2f - this might be a "
            "precursor for failed training. sometimes this happens because the generation "
            "kwargs are not correctly set. Please make sure that the generation kwargs are set "
            "correctly, or review your training hyperparameters.",
            kl);
    ppo_klctl_update(&P->kl, kl, P->Bg);
    cJSON_ReplaceItemInObjectCaseSensitive(st, "time/ppo/total",
                                           cJSON_CreateNumber(ppo_now() - t0));
    cJSON_AddItemToArray(P->stats, st);
    if ((rc = ppo_write_line(P->jsonl, st, PPO_STATS_JSONL, e)) ||
        (rc = ppo_samples_write(P, step, rows, texts, e)))
        goto out;
    char truth[48] = "";
    if (P->io->synthetic)
        snprintf(truth, sizeof truth, "  truth %.4f", ppo_jnum(st, "data_synth_score"));
    ppo_log(P,
            "mxrlhf ppo: step %d/%d  score %.4f%s  kl %.3f  coef %.4f  len %.1f  (rollout %.2f s, "
            "reward %.2f s, gradient %.2f s)\n",
            step + 1, o->steps, ppo_jnum(st, "env/reward_mean"), truth, kl, kl_coef,
            ppo_jnum(st, "tokens/responses_len_mean"), P->phase_s[PREC_ROLLOUT],
            P->phase_s[PREC_REWARD], P->phase_s[PREC_GRADIENT]);
out:
    for (int b = 0; b < B; b++)
        free(texts[b]);
    return rc;
}

/* The checks before anything is written; *run receives what the run is (for its
 * checkpoints) when not NULL. */
static int check(const ppo_opts_t *o, const rlhf_ppo_io_t *io, cJSON **run, err_t *e)
{
    cJSON *id = NULL;
    int rc = ppo_opts_check(o, "ppo", e);
    if (!rc && (!io->policy_dir || !io->reward_dir))
        rc = err_set(e, ERR_INPUT, "PPO needs a policy and a reward model directory");
    if (!rc)
        rc = qwen2_check_reward_dir(io->reward_dir, e);
    if (!rc && (run || io->resume)) /* reads every model file: only when it is needed */
        rc = ppo_run_identity(o, io, &id, e);
    if (!rc && io->resume)
        rc = ppo_resume_check(o, io, id, e);
    if (!rc && run)
        *run = id;
    else
        cJSON_Delete(id);
    return rc;
}

int rlhf_ppo_check(const ppo_opts_t *o, const rlhf_ppo_io_t *io, err_t *e)
{
    return check(o, io, NULL, e);
}

int rlhf_ppo_run(const ppo_opts_t *o, const rlhf_ppo_io_t *io, rlhf_ppo_result_t *res, err_t *e)
{
    ppo_t P;
    memset(&P, 0, sizeof P);
    P.o = o;
    P.io = io;
    P.be = io->be;
    rlhf_ppo_result_t rr;
    memset(&rr, 0, sizeof rr);
    ppo_eval_t last = {0};
    int rc = check(o, io, &P.run, e);
    if (!rc && io->calibrate && !io->monitor)
        rc = err_set(e, ERR_INPUT, "calibration needs the energy monitor (mxrlhf baseline "
                     "--calibrate)");
    if (!rc)
        rc = setup(&P, e);
    int start = 0;
    if (!rc && io->resume) {
        cJSON *st = NULL;
        char *ctx = ppo_out_path(&P, "checkpoints");
        rc = ppo_ckpt_read(io->out_dir, P.policy, P.critic, &st, &start, e);
        if (!rc)
            rc = ppo_state_restore(&P, st, ctx ? ctx : "checkpoint", e);
        cJSON_Delete(st);
        free(ctx);
        if (!rc)
            ppo_log(&P, "mxrlhf ppo: resuming after step %d (KL coefficient %.6g)\n", start,
                    P.kl.value);
    }
    if (!rc)
        rc = ppo_open_streams(&P, io->resume, start, e);
    if (!rc && !io->resume) {
        ppo_eval_t first;
        rc = ppo_run_eval(&P, 0, true, &first, NULL, e);
        if (!rc && P.nev && o->best_of_n > 1)
            rc = ppo_best_of_n(&P, e);
    }
    for (int step = start; !rc && step < o->steps; step++) {
        rc = one_step(&P, step, e);
        int done = step + 1;
        if (!rc && o->eval_every > 0 && done % o->eval_every == 0 && done < o->steps) {
            ppo_eval_t ev;
            rc = ppo_run_eval(&P, done, true, &ev, NULL, e);
        }
        if (!rc && (done == o->steps || (o->checkpoint_every > 0 && done % o->checkpoint_every == 0))) {
            cJSON *state = ppo_state_json(&P, done);
            rc = state ? ppo_ckpt_write(io->out_dir, done, P.policy, P.critic, state, e)
                       : err_set(e, ERR_NOMEM, "out of memory");
            cJSON_Delete(state);
        }
    }
    cJSON *final_samples = cJSON_CreateArray();
    if (!rc && !final_samples)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = ppo_run_eval(&P, o->steps, false, &last, final_samples, e);
    /* the outputs, once every rank has finished (rank r > 0 writes to its scratch out_dir) */
    rc = dist_agree(P.comm, rc, e);
    if (!rc)
        rc = ppo_write_eval_samples(&P, final_samples, e);
    cJSON_Delete(final_samples);
    if (!rc)
        rc = ppo_write_final(&P, &last, e);
    if (!rc)
        rc = ppo_save_models(&P, e);
    /* last: every output is written, so calibration cannot change them */
    if (!rc && io->calibrate)
        rc = ppo_calibrate(&P, e);
    if (!rc) {
        rr.steps_done = o->steps;
        if (cJSON_GetArraySize(P.evals) > 0)
            ppo_eval_from_json(cJSON_GetArrayItem(P.evals, 0), &rr.first);
        rr.last = last;
        if (P.bon) {
            rr.best_of_n_done = true;
            rr.best_of_n = (int)ppo_jnum(P.bon, "n");
            rr.best_of_n_synth_score = ppo_jnum(P.bon, "data_synth_score");
            rr.best_of_n_reward = ppo_jnum(P.bon, "reward_mean");
            rr.best_of_n_kl = ppo_jnum(P.bon, "kl_analytic");
        }
        rr.final_kl_coef = P.kl.value;
        if (res)
            *res = rr;
    }
    if (!rc) { /* where the memory went */
        qwen2_model_t *const ms[] = {P.policy, P.ref, P.rm, P.critic};
        const char *const names[] = {"policy", "reference", "reward", "critic"};
        ppo_memory_write(io->log, P.be, ms, names, 4);
    }
    teardown(&P);
    return rc;
}
