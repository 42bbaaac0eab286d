/* ppo: the PPO trainer. ppo.h says what one step does and which files a run writes;
 * ppo_math.h holds the arithmetic, ppo_ckpt.h the checkpoints. This file reads top to
 * bottom as TRL's generate() + step(): rollout, reward inference, gradient update,
 * statistics. */
#include "rlhf/ppo.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/synth.h"
#include "model/qwen2.h"
#include "rlhf/ppo_ckpt.h"
#include "rlhf/ppo_mem.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/rng.h"


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
    int B, M, max_new, T, V;      /* T: longest prompt + max_new */
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
    double *synth;
    rlhf_batch_t batch;
    /* a minibatch: (M, T) */
    int32_t *mb_ids, *mb_len, *mb_tgt;
    float *mb_old_logp, *mb_values, *mb_mask, *mb_adv, *mb_ret, *mb_logp, *mb_ent, *mb_vpred,
        *mb_dlogp, *mb_dv;
    ppo_klctl_t kl;
    ppo_running_t running;
    cJSON *stats, *evals, *warnings, *bon;
    FILE *jsonl, *samples;
    double phase_s[PREC_PHASE_COUNT];
    double phase_t0;
    bool calibrating;             /* warnings then go to the log only */
} ppo_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void logf_(ppo_t *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(ppo_t *P, const char *fmt, ...)
{
    if (!P->io->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(P->io->log, fmt, ap);
    va_end(ap);
    fflush(P->io->log);
}

/* A warning goes to the log and to training_stats.json (with the step it came from). */
static void warn(ppo_t *P, int step, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void warn(ppo_t *P, int step, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (P->calibrating) { /* not the run's: its statistics are already written */
        logf_(P, "mxrlhf ppo: warning: calibration on step %d's batch: %s\n", step, msg);
        return;
    }
    logf_(P, "mxrlhf ppo: warning: step %d: %s\n", step, msg);
    cJSON *w = cJSON_CreateObject();
    cJSON_AddNumberToObject(w, "step", step);
    cJSON_AddStringToObject(w, "message", msg);
    cJSON_AddItemToArray(P->warnings, w);
}

/* ---- phases ----------------------------------------------------------------------------- */

/* A phase window: the energy layer's (it synchronises the device first), or just the
 * device synchronised and the clock read. */
static int phase_begin(ppo_t *P, int ph, err_t *e)
{
    if (P->io->monitor ? energy_phase_begin(P->io->monitor, prec_phase_study_name((prec_phase_t)ph), e)
                       : be_sync(P->be, e))
        return e->code;
    P->phase_t0 = now_s();
    return ERR_OK;
}

static int phase_end(ppo_t *P, int ph, err_t *e)
{
    if (P->io->monitor ? energy_phase_end(P->io->monitor, prec_phase_study_name((prec_phase_t)ph), e) : be_sync(P->be, e))
        return e->code;
    P->phase_s[ph] += now_s() - P->phase_t0;
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

static size_t at_least_1(size_t n) { return n ? n : 1; }
#define ALLOC(ptr, n) (((ptr) = err_calloc(e, at_least_1((size_t)(n)), sizeof *(ptr), #ptr)) == NULL)

static int setup(ppo_t *P, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const rlhf_ppo_io_t *io = P->io;
    P->B = o->batch_size;
    P->M = o->mini_batch_size;
    P->max_new = o->max_new_tokens;
    P->shared_value = !o->separate_critic;
    if (fs_mkdir_p(io->out_dir, e))
        return e->code;
    if (!io->policy_dir || !io->reward_dir)
        return err_set(e, ERR_INPUT, "PPO needs a policy and a reward model directory");
    if ((size_t)P->B > io->n_prompts)
        return err_set(e, ERR_INPUT, "%zu PPO prompts, fewer than one batch of %d", io->n_prompts,
                       P->B);
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
        ALLOC(P->mb_dlogp, M * T) || ALLOC(P->mb_dv, M * T))
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
                    P->mb_ent, P->mb_vpred, P->mb_dlogp, P->mb_dv, P->full_p, P->full_q};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    cJSON_Delete(P->stats);
    cJSON_Delete(P->evals);
    cJSON_Delete(P->warnings);
    cJSON_Delete(P->bon);
    if (P->jsonl)
        fclose(P->jsonl);
    if (P->samples)
        fclose(P->samples);
}

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
 * permutation per pass over the prompts. */
static void step_prompts(ppo_t *P, int step, const prompt_t **rows)
{
    size_t per_pass = P->npr / (size_t)P->B;
    long epoch = (long)((size_t)step / per_pass);
    size_t k = (size_t)step % per_pass;
    if (epoch != P->perm_epoch) {
        shuffle(P->perm, P->npr, P->o->seed, rng_stream("ppo.prompts", (uint64_t)epoch));
        P->perm_epoch = epoch;
    }
    for (int b = 0; b < P->B; b++)
        rows[b] = &P->pr[P->perm[k * (size_t)P->B + (size_t)b]];
}

/* Samples one response per row into P->resp / resp_len / roll_logp. */
static int generate(ppo_t *P, const prompt_t *const *rows, int n, uint64_t pctx_step,
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
static int rollout(ppo_t *P, const prompt_t *const *rows, int step, err_t *e)
{
    return generate(P, rows, P->B, (uint64_t)step, rng_stream("ppo.rollout", (uint64_t)step), e);
}

/* The right-padded batch of prompt + response for rows [0, n) (rlhf/text's layout). */
static int make_batch(ppo_t *P, const prompt_t *const *rows, int n, err_t *e)
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
static int ground_truth_exact(ppo_t *P, const prompt_t *row, int b, double *score,
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

static int ground_truth(ppo_t *P, const prompt_t *row, int b, double *score, char **text, err_t *e)
{
    return ground_truth_exact(P, row, b, score, NULL, text, e);
}

/* Between rollout and reward inference, outside the phases: the batch of prompt +
 * response, and each response's text and ground truth (an evaluation aid, not PPO's
 * work; texts[b] is the caller's to free). */
static int rollout_batch(ppo_t *P, const prompt_t *const *rows, char **texts, err_t *e)
{
    int rc = make_batch(P, rows, P->B, e);
    for (int b = 0; b < P->B && !rc; b++)
        rc = ground_truth(P, rows[b], b, &P->synth[b], &texts[b], e);
    return rc;
}

/* Reward-model scores of the current batch (n rows). */
static int rm_scores(ppo_t *P, int n, uint64_t pstep, float *out, err_t *e)
{
    prec_ctx_t rctx = {PREC_REWARD, P->o->seed, pstep};
    qwen2_batch_t qb = {n, P->batch.T, P->batch.ids, NULL, P->batch.len};
    if (qwen2_forward(P->rm, &rctx, &qb, QWEN2_FWD_SCORES, e) || qwen2_scores_get(P->rm, out, e))
        return err_prefix(e, "reward model");
    return ERR_OK;
}

/* ---- evaluation ------------------------------------------------------------------------------- */

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

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
        if (generate(P, rows, n, 0, rng_stream("ppo.eval", c), e) || make_batch(P, rows, n, e) ||
            rm_scores(P, n, 0, P->scores, e))
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
            if (ground_truth_exact(P, rows[b], b, &gt, &sc, &text, e))
                return e->code;
            if (samples) {
                cJSON *j = cJSON_CreateObject();
                cJSON_AddNumberToObject(j, "step", steps_done);
                cJSON_AddNumberToObject(j, "prompt_index", (double)(c * P->B + (size_t)b));
                cJSON_AddStringToObject(j, "prompt", rows[b]->text);
                cJSON_AddStringToObject(j, "response", text ? text : "");
                cJSON_AddNumberToObject(j, "tokens", P->resp_len[b]);
                cJSON_AddItemToObject(j, "score", num_or_null(P->scores[b]));
                cJSON_AddItemToObject(j, "kl", num_or_null(kl));
                cJSON_AddItemToObject(j, "data_synth_score", num_or_null(gt));
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


static cJSON *eval_json(const ppo_eval_t *ev)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", ev->step);
    cJSON_AddNumberToObject(j, "prompts", ev->n);
    cJSON_AddItemToObject(j, "reward_mean", num_or_null(ev->reward_mean));
    cJSON_AddItemToObject(j, "data_synth_score", num_or_null(ev->synth_score_mean));
    cJSON_AddItemToObject(j, "data_synth_score_std", num_or_null(ev->synth_score_std));
    cJSON_AddItemToObject(j, "kl", num_or_null(ev->kl_mean));
    cJSON_AddItemToObject(j, "response_len_mean", num_or_null(ev->response_len_mean));
    return j;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void eval_from_json(const cJSON *j, ppo_eval_t *ev)
{
    ev->step = (int)jnum(j, "step");
    ev->n = (int)jnum(j, "prompts");
    ev->reward_mean = jnum(j, "reward_mean");
    ev->synth_score_mean = jnum(j, "data_synth_score");
    ev->synth_score_std = jnum(j, "data_synth_score_std");
    ev->kl_mean = jnum(j, "kl");
    ev->response_len_mean = jnum(j, "response_len_mean");
}

/* Best-of-n from the initial policy on the held-out prompts: n samples per prompt, the one
 * the reward model scores highest kept; its KL to the sampling policy is the analytic
 * log n - (n - 1) / n (Stiennon et al. 2020). */
static int best_of_n(ppo_t *P, err_t *e)
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
            if (generate(P, rows, rows_n, 0, rng_stream("ppo.best_of_n", c * (size_t)n + r), e) ||
                make_batch(P, rows, rows_n, e) || rm_scores(P, rows_n, 0, P->scores, e))
                return err_prefix(e, "best-of-%d", n);
            for (int b = 0; b < rows_n; b++) {
                if (!(P->scores[b] > best_rm[b]))
                    continue;
                char *text;
                double gt = NAN;
                if (ground_truth(P, rows[b], b, &gt, &text, e))
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
    cJSON_AddItemToObject(P->bon, "reward_mean", num_or_null(count ? srm / count : NAN));
    cJSON_AddItemToObject(P->bon, "data_synth_score",
                          num_or_null(count && P->io->synthetic ? sgt / count : NAN));
    cJSON_AddNumberToObject(P->bon, "kl_analytic", log((double)n) - (double)(n - 1) / n);
    return ERR_OK;
}

static int run_eval(ppo_t *P, int steps_done, bool keep, ppo_eval_t *ev, cJSON *samples,
                    err_t *e)
{
    if (!P->nev)
        return ERR_OK;
    if (evaluate(P, steps_done, ev, samples, e))
        return e->code;
    char truth[48] = "";
    if (P->io->synthetic)
        snprintf(truth, sizeof truth, ", ground truth %.4f", ev->synth_score_mean);
    logf_(P, "mxrlhf ppo: evaluation at step %d: reward %.4f%s, KL %.3f, length %.1f (%d "
             "prompts)\n", steps_done, ev->reward_mean, truth, ev->kl_mean,
          ev->response_len_mean, ev->n);
    if (keep)
        cJSON_AddItemToArray(P->evals, eval_json(ev));
    return ERR_OK;
}

/* ---- one PPO step ------------------------------------------------------------------------------- */

typedef struct step_acc {
    ppo_mb_stats_t sum;   /* summed over minibatches */
    int n, skipped, opt_steps, epochs;
    double grad_norm;
    bool early_stopped;
} step_acc_t;

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

/* TRL's train_minibatch over ppo_epochs passes; fills acc. */
static int gradient_update(ppo_t *P, int step, step_acc_t *acc, err_t *e)
{
    const ppo_opts_t *o = P->o;
    const int B = P->B, M = P->M, gas = o->gradient_accumulation_steps;
    size_t perm[B];
    long k = 0;
    qwen2_adamw_t h = {o->learning_rate, o->adam_beta1, o->adam_beta2, o->adam_epsilon,
                       o->weight_decay, o->max_grad_norm};
    ppo_loss_cfg_t lc = {o->cliprange, o->cliprange_value, o->vf_coef, o->ratio_threshold};
    for (int epoch = 0; epoch < o->ppo_epochs; epoch++) {
        shuffle(perm, (size_t)B, o->seed,
                rng_stream("ppo.minibatch", (uint64_t)step * 4096 + (uint64_t)epoch));
        ppo_mb_stats_t st = {0};
        for (int j = 0; j < B / M; j++, k++) {
            int Tm = gather_minibatch(P, perm + (size_t)j * M, M);
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
            ppo_loss(&lc, n, P->mb_old_logp, P->mb_values, P->mb_logp, P->mb_vpred, P->mb_ent,
                     P->mb_mask, P->mb_adv, P->mb_ret, 1.0 / gas, P->mb_dlogp, P->mb_dv, &st);
            if (!st.skipped && (!isfinite(st.loss_total) || !all_finite(P->mb_dlogp, NULL, n) ||
                                !all_finite(P->mb_dv, NULL, n)))
                return err_set(e, ERR_FAIL, "step %d: the PPO loss is not finite (policy %g, "
                               "value %g): stopping; the last good checkpoint stays",
                               step + 1, st.loss_policy, st.loss_value);
            if (st.skipped)
                warn(P, step + 1, "The average ratio of batch (%.2f) exceeds threshold %.2f. "
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
static int reward_inference(ppo_t *P, int step, err_t *e)
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
        P->klv[i] = full ? 0.0f : (float)ppo_kl_token(o->kl_penalty, P->old_logp[i], P->ref_logp[i]);
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
    if (rm_scores(P, B, (uint64_t)step, P->scores, e))
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
        ppo_running_update(&P->running, P->scores, B);
        double f = P->running.std + FLT_EPSILON;
        for (int b = 0; b < B; b++)
            P->scores[b] = (float)(o->use_score_norm ? (P->scores[b] - P->running.mean) / f
                                                     : P->scores[b] / f);
    }
    if (o->score_clip > 0)
        for (int b = 0; b < B; b++)
            P->scores[b] = (float)fmin(fmax(P->scores[b], -o->score_clip), o->score_clip);

    ppo_compute_rewards(B, T, P->scores, P->klv, mask, P->kl.value, P->rewards, P->non_score);
    ppo_advantages(B, T, P->values, P->rewards, mask, o->gamma, o->lam, o->whiten_rewards, P->adv,
                   P->ret);
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

static void add(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, num_or_null(v)); }

/* The step's statistics under TRL's names (record_step_stats + train_stats + log_stats). */
static cJSON *step_stats(ppo_t *P, int step, double kl_coef, const step_acc_t *a, double t_step,
                         double *kl_out)
{
    const int B = P->B, T = P->batch.T;
    const float *mask = P->batch.mask;
    double klrow[B], entrow[B], sc[B], raw[B], ql[B], rl[B];
    double gap = 0, gap_abs = 0, gap_max = 0, gn = 0, ended = 0;
    for (int b = 0; b < B; b++) {
        klrow[b] = entrow[b] = 0;
        int p0 = P->batch.len[b] - P->resp_len[b] - 1;
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            klrow[b] += (double)P->klv[i] * mask[i];
            entrow[b] += -(double)P->old_logp[i] * mask[i];
            if (mask[i] != 0) {
                double d = (double)P->roll_logp[(size_t)b * P->max_new + (t - p0)] - P->old_logp[i];
                gap += d;
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
    add(j, "rollout/logprob_gap_mean", gn ? gap / gn : NAN);
    add(j, "rollout/logprob_gap_abs_mean", gn ? gap_abs / gn : NAN);
    add(j, "rollout/logprob_gap_max_abs", gap_max);
    add(j, "time/ppo/rollout", P->phase_s[PREC_ROLLOUT]);
    add(j, "time/ppo/reward_inference", P->phase_s[PREC_REWARD]);
    add(j, "time/ppo/optimize_step", P->phase_s[PREC_GRADIENT]);
    add(j, "time/ppo/total", t_step);
    return j;
}

/* ---- files ------------------------------------------------------------------------------------ */

static char *out_path(ppo_t *P, const char *name) { return fs_join(P->io->out_dir, name); }

static int write_line(FILE *f, const cJSON *j, const char *what, err_t *e)
{
    char *s = cJSON_PrintUnformatted(j);
    int bad = !s || fputs(s, f) == EOF || fputc('\n', f) == EOF || fflush(f) != 0;
    free(s);
    return bad ? err_errno(e, ERR_FAIL, "writing %s", what) : ERR_OK;
}

static int samples_write(ppo_t *P, int step, const prompt_t *const *rows, char **texts, err_t *e)
{
    for (int b = 0; b < P->B; b++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "step", step + 1);
        cJSON_AddNumberToObject(j, "row", b);
        cJSON_AddStringToObject(j, "prompt", rows[b]->text);
        cJSON_AddStringToObject(j, "response", texts[b] ? texts[b] : "");
        cJSON_AddNumberToObject(j, "query_tokens", rows[b]->seq.n);
        cJSON_AddNumberToObject(j, "tokens", P->resp_len[b]);
        cJSON_AddItemToObject(j, "score", num_or_null(P->raw_scores[b]));
        cJSON_AddItemToObject(j, "data_synth_score", num_or_null(P->synth[b]));
        int rc = write_line(P->samples, j, "samples.jsonl", e);
        cJSON_Delete(j);
        if (rc)
            return rc;
    }
    return ERR_OK;
}

/* The state a checkpoint holds besides the weights. */
static cJSON *state_json(ppo_t *P, int steps_done)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "format", "mxrlhf.ppo_state/1");
    cJSON_AddNumberToObject(s, "steps_done", steps_done);
    cJSON_AddNumberToObject(s, "kl_coef", P->kl.value);
    cJSON *r = cJSON_AddObjectToObject(s, "running_scores");
    cJSON_AddNumberToObject(r, "mean", P->running.mean);
    cJSON_AddNumberToObject(r, "var", P->running.var);
    cJSON_AddNumberToObject(r, "std", P->running.std);
    cJSON_AddNumberToObject(r, "count", P->running.count);
    cJSON_AddItemToObject(s, "options", opts_to_json(&ppo_opts_table, P->o));
    cJSON_AddItemToObject(s, "stats", cJSON_Duplicate(P->stats, 1));
    cJSON_AddItemToObject(s, "evaluations", cJSON_Duplicate(P->evals, 1));
    cJSON_AddItemToObject(s, "warnings", cJSON_Duplicate(P->warnings, 1));
    cJSON_AddItemToObject(s, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
    return s;
}

/* Restores the state of a checkpoint; options must match (steps may grow). */
static int state_restore(ppo_t *P, cJSON *st, const char *ctx, err_t *e)
{
    cJSON *mine = opts_to_json(&ppo_opts_table, P->o);
    cJSON *theirs = cJSON_GetObjectItemCaseSensitive(st, "options");
    if (!mine)
        return err_set(e, ERR_NOMEM, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(mine, "steps");
    for (const cJSON *it = mine->child; it; it = it->next) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(theirs, it->string);
        if (!t || !cJSON_Compare(it, t, true)) {
            char *a = cJSON_PrintUnformatted(it), *b = t ? cJSON_PrintUnformatted(t) : NULL;
            err_set(e, ERR_INPUT, "%s: option %s was %s in the checkpoint, %s now (resume with "
                    "the options the run started with; only steps may change)", ctx, it->string,
                    b ? b : "absent", a ? a : "?");
            free(a);
            free(b);
            cJSON_Delete(mine);
            return ERR_INPUT;
        }
    }
    cJSON_Delete(mine);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(st, "running_scores");
    double klc = jnum(st, "kl_coef");
    cJSON *stats = cJSON_DetachItemFromObjectCaseSensitive(st, "stats");
    cJSON *evals = cJSON_DetachItemFromObjectCaseSensitive(st, "evaluations");
    cJSON *warns = cJSON_DetachItemFromObjectCaseSensitive(st, "warnings");
    cJSON *bon = cJSON_DetachItemFromObjectCaseSensitive(st, "best_of_n");
    if (!isfinite(klc) || !cJSON_IsObject(r) || !cJSON_IsArray(stats) || !cJSON_IsArray(evals) ||
        !cJSON_IsArray(warns)) {
        cJSON_Delete(stats), cJSON_Delete(evals), cJSON_Delete(warns), cJSON_Delete(bon);
        return err_set(e, ERR_INPUT, "%s: state.json lacks kl_coef, running_scores, stats, "
                       "evaluations or warnings", ctx);
    }
    P->kl.value = klc;
    P->running = (ppo_running_t){jnum(r, "mean"), jnum(r, "var"), jnum(r, "std"), jnum(r, "count")};
    cJSON_Delete(P->stats), cJSON_Delete(P->evals), cJSON_Delete(P->warnings);
    P->stats = stats;
    P->evals = evals;
    P->warnings = warns;
    P->bon = cJSON_IsObject(bon) ? bon : NULL;
    if (!P->bon)
        cJSON_Delete(bon);
    return ERR_OK;
}

/* samples.jsonl without the lines of steps after `steps_done` (a killed run's tail). */
static int samples_truncate(const char *path, int steps_done, err_t *e)
{
    char *text = NULL;
    size_t len;
    if (!fs_exists(path))
        return atomic_write(path, "", 0, e);
    if (fs_read_all(path, (size_t)1 << 34, &text, &len, e))
        return e->code;
    size_t keep = 0;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break; /* a torn last line */
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        double s = j ? jnum(j, "step") : NAN;
        cJSON_Delete(j);
        if (!(s <= steps_done))
            break;
        keep = (size_t)(nl + 1 - text);
        p = nl + 1;
    }
    int rc = atomic_write(path, text, keep, e);
    free(text);
    return rc;
}

static int open_streams(ppo_t *P, bool resumed, int steps_done, err_t *e)
{
    char *jp = out_path(P, PPO_STATS_JSONL), *sp = out_path(P, "samples.jsonl");
    int rc = jp && sp ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        /* training_stats.jsonl holds exactly the checkpoint's steps, then streams on */
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        cJSON *it;
        cJSON_ArrayForEach(it, P->stats)
        {
            char *s = cJSON_PrintUnformatted(it);
            size_t n = s ? strlen(s) : 0;
            if (buf && s && len + n + 2 > cap) {
                cap = 2 * (len + n + 2);
                char *nb = realloc(buf, cap);
                if (!nb)
                    free(buf);
                buf = nb;
            }
            if (buf && s) {
                memcpy(buf + len, s, n);
                len += n;
                buf[len++] = '\n';
            }
            free(s);
        }
        rc = buf ? atomic_write(jp, buf, len, e) : err_set(e, ERR_NOMEM, "out of memory");
        free(buf);
    }
    if (!rc)
        rc = resumed ? samples_truncate(sp, steps_done, e) : atomic_write(sp, "", 0, e);
    if (!rc && (!(P->jsonl = fopen(jp, "a")) || !(P->samples = fopen(sp, "a"))))
        rc = err_errno(e, ERR_FAIL, "cannot open %s for appending", P->jsonl ? sp : jp);
    free(jp);
    free(sp);
    return rc;
}

static cJSON *models_json(const rlhf_ppo_io_t *io)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "policy", io->policy_dir);
    cJSON_AddStringToObject(m, "reference", io->ref_dir ? io->ref_dir : io->policy_dir);
    cJSON_AddStringToObject(m, "reward", io->reward_dir);
    if (io->critic_dir)
        cJSON_AddStringToObject(m, "critic", io->critic_dir);
    cJSON_AddItemToObject(m, "precision_plan", io->plan ? cJSON_CreateString(io->plan) : cJSON_CreateNull());
    return m;
}

static int write_final(ppo_t *P, const ppo_eval_t *last, err_t *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "mxrlhf.training_stats/1");
    cJSON_AddStringToObject(root, "trainer", "PPO with TRL 0.11 PPOTrainer semantics (mxrlhf)");
    cJSON_AddItemToObject(root, "options", opts_to_json(&ppo_opts_table, P->o));
    cJSON_AddItemToObject(root, "models", models_json(P->io));
    cJSON_AddItemToObject(root, "steps", cJSON_Duplicate(P->stats, 1));
    cJSON *evals = cJSON_Duplicate(P->evals, 1);
    if (last && last->n)
        cJSON_AddItemToArray(evals, eval_json(last));
    cJSON_AddItemToObject(root, "evaluations", evals);
    cJSON_AddItemToObject(root, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "warnings", cJSON_Duplicate(P->warnings, 1));
    char *p = out_path(P, PPO_STATS_JSON), *ep = out_path(P, "eval.json");
    int rc = p && ep ? json_write_file(p, root, true, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        cJSON *ej = cJSON_CreateObject();
        cJSON_AddItemToObject(ej, "evaluations", cJSON_Duplicate(evals, 1));
        cJSON_AddItemToObject(ej, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
        rc = json_write_file(ep, ej, true, e);
        cJSON_Delete(ej);
    }
    free(p);
    free(ep);
    cJSON_Delete(root);
    return rc;
}

/* eval_samples.jsonl: the final evaluation's samples, one line per held-out prompt. */
static int write_eval_samples(ppo_t *P, const cJSON *samples, err_t *e)
{
    char *path = out_path(P, PPO_EVAL_SAMPLES);
    atomic_file_t af;
    int rc = path ? atomic_open(&af, path, e) : err_set(e, ERR_NOMEM, "out of memory");
    for (const cJSON *j = samples ? samples->child : NULL; !rc && j; j = j->next) {
        char *line = cJSON_PrintUnformatted(j);
        if (!line || fputs(line, af.fp) == EOF || fputc('\n', af.fp) == EOF)
            rc = err_set(e, ERR_FAIL, "writing %s", path);
        free(line);
        if (rc)
            atomic_abort(&af);
    }
    if (!rc)
        rc = atomic_commit(&af, e);
    free(path);
    return rc;
}

static int save_models(ppo_t *P, err_t *e)
{
    char *pd = out_path(P, "policy"), *cd = out_path(P, "critic");
    char *src = fs_join(P->io->policy_dir, "tokenizer.json");
    char *dst = pd ? fs_join(pd, "tokenizer.json") : NULL;
    char *buf = NULL;
    size_t len;
    int rc = pd && cd && src && dst ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = qwen2_save_dir(P->policy, pd, ST_F32, e);
    if (!rc)
        rc = fs_read_all(src, (size_t)1 << 30, &buf, &len, e);
    if (!rc)
        rc = atomic_write(dst, buf, len, e);
    if (!rc && P->critic)
        rc = qwen2_save_dir(P->critic, cd, ST_F32, e);
    free(buf);
    free(pd);
    free(cd);
    free(src);
    free(dst);
    return rc;
}

/* ---- calibration ------------------------------------------------------------------------------ */

/* A host copy of a training model's parameters and optimizer state. */
typedef struct model_snap {
    float *params, *m1, *m2;
    size_t n;
    qwen2_opt_state_t st;
} model_snap_t;

static void snap_free(model_snap_t *s)
{
    free(s->params);
    free(s->m1);
    free(s->m2);
    memset(s, 0, sizeof *s);
}

static int snap_take(qwen2_model_t *m, model_snap_t *s, err_t *e)
{
    memset(s, 0, sizeof *s);
    if (!m)
        return ERR_OK;
    s->n = qwen2_nparams(m);
    if (ALLOC(s->params, s->n) || ALLOC(s->m1, s->n) || ALLOC(s->m2, s->n) ||
        qwen2_params_get(m, 0, s->params, s->n, e) ||
        qwen2_moments_get(m, 0, s->m1, s->m2, s->n, e)) {
        snap_free(s);
        return err_prefix(e, "saving the model state before calibration");
    }
    qwen2_opt_state_get(m, &s->st);
    return ERR_OK;
}

static int snap_restore(qwen2_model_t *m, const model_snap_t *s, err_t *e)
{
    if (!m || !s->params)
        return ERR_OK;
    if (qwen2_params_set(m, 0, s->params, s->n, e) ||
        qwen2_moments_set(m, 0, s->m1, s->m2, s->n, e) || qwen2_opt_state_set(m, &s->st, e))
        return err_prefix(e, "restoring the model state after calibration");
    qwen2_zero_grads(m);
    return ERR_OK;
}

/* One iteration of a phase's work, as energy_calibrate calls it: the step's own code. */
typedef struct calib_work {
    ppo_t *P;
    const prompt_t *const *rows;
    int step;
    long skipped;   /* minibatches skipped over the ratio threshold */
} calib_work_t;

static int calib_rollout(void *ctx, err_t *e)
{
    calib_work_t *w = ctx;
    return rollout(w->P, w->rows, w->step, e);
}

static int calib_reward(void *ctx, err_t *e)
{
    calib_work_t *w = ctx;
    return reward_inference(w->P, w->step, e);
}

static int calib_gradient(void *ctx, err_t *e)
{
    calib_work_t *w = ctx;
    step_acc_t acc;
    memset(&acc, 0, sizeof acc);
    int rc = gradient_update(w->P, w->step, &acc, e);
    w->skipped += acc.skipped;
    return rc;
}

/* Repeats each phase's work on the last step's prompts through energy_calibrate, in the
 * step's order (the rollout's responses feed the scoring, whose results feed the update).
 * Whatever the phases change besides their buffers is put back: the running score
 * statistics, and the policy, critic and optimizer state (the repeated updates move them). */
static int calibrate(ppo_t *P, err_t *e)
{
    static const energy_workload_fn fns[PREC_PHASE_COUNT] = {calib_rollout, calib_reward, calib_gradient};
    const energy_calib_opts_t *co = P->io->calibrate;
    const int B = P->B, step = P->o->steps - 1;
    const prompt_t *rows[B];
    char *texts[B];
    memset(texts, 0, sizeof texts);
    step_prompts(P, step, rows);
    calib_work_t w = {P, rows, step, 0};
    const ppo_running_t running = P->running;
    model_snap_t sp, sc;
    memset(&sp, 0, sizeof sp);
    memset(&sc, 0, sizeof sc);
    int rc = ERR_OK;
    P->calibrating = true;
    for (int ph = 0; ph < PREC_PHASE_COUNT && !rc; ph++) {
        if (ph == PREC_REWARD)
            rc = rollout_batch(P, rows, texts, e);
        if (!rc && ph == PREC_GRADIENT &&
            !(rc = snap_take(P->policy, &sp, e)))
            rc = snap_take(P->critic, &sc, e);
        if (rc)
            break;
        energy_calib_opts_t o = *co;
        o.seed = co->seed + (uint64_t)ph;
        energy_calib_result_t r;
        logf_(P, "mxrlhf ppo: calibrating %s: its work on step %d's batch, repeated for %.1f s "
                 "of steady time\n", prec_phase_study_name((prec_phase_t)ph), step + 1,
              o.min_total_s > 0 ? o.min_total_s : 10.0);
        rc = energy_calibrate(P->io->monitor, prec_phase_study_name((prec_phase_t)ph), fns[ph], &w, &o, &r, e);
        if (ph == PREC_REWARD)
            P->running = running;
        if (ph == PREC_GRADIENT) {
            err_t re = ERR_INIT;
            int rrc = snap_restore(P->policy, &sp, &re);
            if (!rrc)
                rrc = snap_restore(P->critic, &sc, &re);
            if (!rc && rrc) {
                *e = re;
                rc = rrc;
            }
        }
        if (rc)
            break;
        char power[96] = "no power readings";
        if (isfinite(r.power_W))
            snprintf(power, sizeof power, "steady power %.2f W +-%.2f", r.power_W,
                     r.uncertainty_W);
        logf_(P, "mxrlhf ppo: calibration of %s: %ld iteration(s) in %d segment(s), %.2f s steady, "
                 "%s\n", prec_phase_study_name((prec_phase_t)ph), r.iterations, r.segments, r.steady_s, power);
    }
    P->calibrating = false;
    if (!rc && w.skipped)
        logf_(P, "mxrlhf ppo: calibration of gradient_update: %ld minibatches skipped over the "
                 "ratio threshold (the repeated updates moved the policy from the batch's)\n",
              w.skipped);
    for (int b = 0; b < B; b++)
        free(texts[b]);
    snap_free(&sp);
    snap_free(&sc);
    return rc;
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
    double t0 = now_s(), kl_coef = P->kl.value, kl = 0;
    step_acc_t acc;
    memset(&acc, 0, sizeof acc);
    step_prompts(P, step, rows);
    int rc = ERR_OK;

    /* rollout */
    if ((rc = phase_begin(P, PREC_ROLLOUT, e)) || (rc = rollout(P, rows, step, e)) ||
        (rc = phase_end(P, PREC_ROLLOUT, e)))
        goto out;
    /* outside the phases: the batch, text and ground truth */
    if ((rc = rollout_batch(P, rows, texts, e)))
        goto out;

    /* reward inference */
    if ((rc = phase_begin(P, PREC_REWARD, e)) || (rc = reward_inference(P, step, e)) ||
        (rc = phase_end(P, PREC_REWARD, e)))
        goto out;

    /* gradient update */
    if ((rc = phase_begin(P, PREC_GRADIENT, e)) || (rc = gradient_update(P, step, &acc, e)) ||
        (rc = phase_end(P, PREC_GRADIENT, e)))
        goto out;

    /* statistics, then the KL controller (TRL: kl_ctl.update after record_step_stats) */
    cJSON *st = step_stats(P, step, kl_coef, &acc, 0, &kl);
    if (!isfinite(kl)) {
        cJSON_Delete(st);
        rc = err_set(e, ERR_FAIL, "step %d: the KL is not finite: stopping; the last good "
                     "checkpoint stays", step + 1);
        goto out;
    }
    if (kl < -1.0)
        warn(P, step + 1, "KL divergence is starting to become negative: %.2f - this might be a "
             "precursor for failed training. sometimes this happens because the generation "
             "kwargs are not correctly set. Please make sure that the generation kwargs are set "
             "correctly, or review your training hyperparameters.", kl);
    ppo_klctl_update(&P->kl, kl, B);
    cJSON_ReplaceItemInObjectCaseSensitive(st, "time/ppo/total", cJSON_CreateNumber(now_s() - t0));
    cJSON_AddItemToArray(P->stats, st);
    if ((rc = write_line(P->jsonl, st, PPO_STATS_JSONL, e)) ||
        (rc = samples_write(P, step, rows, texts, e)))
        goto out;
    char truth[48] = "";
    if (P->io->synthetic)
        snprintf(truth, sizeof truth, "  truth %.4f", jnum(st, "data_synth_score"));
    logf_(P, "mxrlhf ppo: step %d/%d  score %.4f%s  kl %.3f  coef %.4f  len %.1f  (rollout %.2f s, "
             "reward %.2f s, gradient %.2f s)\n", step + 1, o->steps, jnum(st, "env/reward_mean"),
          truth, kl, kl_coef, jnum(st, "tokens/responses_len_mean"), P->phase_s[PREC_ROLLOUT],
          P->phase_s[PREC_REWARD], P->phase_s[PREC_GRADIENT]);
out:
    for (int b = 0; b < B; b++)
        free(texts[b]);
    return rc;
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
    int rc = ppo_opts_check(o, "ppo", e);
    if (!rc && io->calibrate && !io->monitor)
        rc = err_set(e, ERR_INPUT, "calibration needs the energy monitor (mxrlhf baseline "
                     "--calibrate)");
    if (!rc)
        rc = setup(&P, e);
    int start = 0;
    if (!rc && io->resume) {
        cJSON *st = NULL;
        char *ctx = out_path(&P, "checkpoints");
        rc = ppo_ckpt_read(io->out_dir, P.policy, P.critic, &st, &start, e);
        if (!rc)
            rc = state_restore(&P, st, ctx ? ctx : "checkpoint", e);
        cJSON_Delete(st);
        free(ctx);
        if (!rc)
            logf_(&P, "mxrlhf ppo: resuming after step %d (KL coefficient %.6g)\n", start, P.kl.value);
    }
    if (!rc)
        rc = open_streams(&P, io->resume, start, e);
    if (!rc && !io->resume) {
        ppo_eval_t first;
        rc = run_eval(&P, 0, true, &first, NULL, e);
        if (!rc && P.nev && o->best_of_n > 1)
            rc = best_of_n(&P, e);
    }
    for (int step = start; !rc && step < o->steps; step++) {
        rc = one_step(&P, step, e);
        int done = step + 1;
        if (!rc && o->eval_every > 0 && done % o->eval_every == 0 && done < o->steps) {
            ppo_eval_t ev;
            rc = run_eval(&P, done, true, &ev, NULL, e);
        }
        if (!rc && (done == o->steps || (o->checkpoint_every > 0 && done % o->checkpoint_every == 0))) {
            cJSON *state = state_json(&P, done);
            rc = state ? ppo_ckpt_write(io->out_dir, done, P.policy, P.critic, state, e)
                       : err_set(e, ERR_NOMEM, "out of memory");
            cJSON_Delete(state);
        }
    }
    cJSON *final_samples = cJSON_CreateArray();
    if (!rc && !final_samples)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = run_eval(&P, o->steps, false, &last, final_samples, e);
    if (!rc)
        rc = write_eval_samples(&P, final_samples, e);
    cJSON_Delete(final_samples);
    if (!rc)
        rc = write_final(&P, &last, e);
    if (!rc)
        rc = save_models(&P, e);
    /* last: every output is written, so calibration cannot change them */
    if (!rc && io->calibrate)
        rc = calibrate(&P, e);
    if (!rc) {
        rr.steps_done = o->steps;
        if (cJSON_GetArraySize(P.evals) > 0)
            eval_from_json(cJSON_GetArrayItem(P.evals, 0), &rr.first);
        rr.last = last;
        if (P.bon) {
            rr.best_of_n_done = true;
            rr.best_of_n = (int)jnum(P.bon, "n");
            rr.best_of_n_synth_score = jnum(P.bon, "data_synth_score");
            rr.best_of_n_reward = jnum(P.bon, "reward_mean");
            rr.best_of_n_kl = jnum(P.bon, "kl_analytic");
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
