/* rm: Bradley-Terry reward model training and evaluation (see rm.h). */
#include "rlhf/rm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/text.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/rng.h"

/* ---- options ------------------------------------------------------------------------- */

#define RO(f) offsetof(rlhf_rm_opts_t, f)
static const opt_field_t rm_fields[] = {
    OPT_KEY("steps", OPT_LONG, RO(steps), "1000", 0, 1e12, "optimizer steps"),
    OPT_KEY("max_epochs", OPT_DOUBLE, RO(max_epochs), "2", 0, 1e6,
            "at most this many passes over the training pairs (0: no cap)"),
    OPT_KEY("batch_size", OPT_INT, RO(batch_size), "16", 1, 1 << 16, "pairs per step"),
    OPT_KEY("seed", OPT_U64, RO(seed), "1234", 0, 0,
            "pair order, score-head initialisation, label shuffle"),
    OPT_KEY("max_prompt_tokens", OPT_INT, RO(max_prompt_tokens), "256", 1, 1 << 20,
            "prompt ids kept (the last ones)"),
    OPT_KEY("max_response_tokens", OPT_INT, RO(max_response_tokens), "256", 1, 1 << 20,
            "response ids kept (the first ones)"),
    OPT_KEY("template", OPT_ENUM, RO(template_), "raw", 0, 0, "how a turn is written",
            .en = &rlhf_template_enum),
    OPT_KEY("shuffle_labels", OPT_BOOL, RO(shuffle_labels), "false", 0, 0,
            "train on randomly swapped labels (the negative control)"),
    OPT_KEY("eval_every", OPT_INT, RO(eval_every), "0", 0, 1 << 30,
            "evaluate on rm_eval every N steps (0: only at the end)"),
    OPT_KEY("save_dtype", OPT_ENUM, RO(save_dtype), "float32", 0, 0, "type of the saved weights",
            .en = &rlhf_dtype_enum),
    OPT_KEY("log_every", OPT_INT, RO(log_every), "25", 0, 1 << 30,
            "progress line every N steps (0: only the last)"),
    OPT_EMBED("optimizer", RO(optim), &rlhf_optim_table, "lr=5e-4;warmup_steps=20"),
};
const opt_table_t rlhf_rm_opts_table = OPT_TABLE("rm", rlhf_rm_opts_t, rm_fields, NULL);

void rlhf_rm_opts_default(rlhf_rm_opts_t *o) { opts_default(&rlhf_rm_opts_table, o); }

cJSON *rlhf_rm_metrics_json(const rlhf_rm_metrics_t *m, const char *prefix)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    char k[64];
#define ADD(name, v)                                                                       \
    do {                                                                                   \
        snprintf(k, sizeof k, "%s%s", prefix, name);                                       \
        cJSON_AddNumberToObject(j, k, v);                                                  \
    } while (0)
    ADD("accuracy", m->accuracy);
    ADD("margin", m->margin);
    ADD("mean_reward", m->mean_reward);
    ADD("min_reward", m->min_reward);
    ADD("max_reward", m->max_reward);
    ADD("loss", m->loss);
    ADD("num_tokens", (double)m->num_tokens);
    ADD("pairs", (double)m->pairs);
    ADD("ties", (double)m->ties);
#undef ADD
    return j;
}

/* ---- data ---------------------------------------------------------------------------- */

typedef rlhf_rm_pairs_t rm_data_t;

void rlhf_rm_pairs_free(rlhf_rm_pairs_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->c)
            rlhf_seq_free(&d->c[i]);
        if (d->r)
            rlhf_seq_free(&d->r[i]);
    }
    free(d->c);
    free(d->r);
    free(d->len);
    memset(d, 0, sizeof *d);
}

static int rm_data_make(rlhf_text_t *t, const data_pair_t *const *pairs, size_t n, bool shuffle,
                        uint64_t seed, rm_data_t *d, err_t *e)
{
    memset(d, 0, sizeof *d);
    if (n == 0)
        return ERR_OK;
    d->c = calloc(n, sizeof *d->c);
    d->r = calloc(n, sizeof *d->r);
    d->len = calloc(n, sizeof *d->len);
    if (!d->c || !d->r || !d->len)
        return err_set(e, ERR_NOMEM, "out of memory for %zu pairs", n);
    d->n = n;
    uint64_t stream = rng_stream("rlhf.rm.shuffle_labels", 0);
    for (size_t i = 0; i < n; i++) {
        const data_pair_t *p = pairs[i];
        bool swap = shuffle && (rng_u32(seed, stream, i) & 1);
        int rc = rlhf_encode_pair(t, p->prompt, swap ? p->rejected : p->chosen, &d->c[i], e);
        if (!rc)
            rc = rlhf_encode_pair(t, p->prompt, swap ? p->chosen : p->rejected, &d->r[i], e);
        if (rc)
            return err_prefix(e, "pair %zu (source line %zu)", i, p->line);
        d->len[i] = d->c[i].n > d->r[i].n ? d->c[i].n : d->r[i].n;
        d->maxlen = d->len[i] > d->maxlen ? d->len[i] : d->maxlen;
    }
    return ERR_OK;
}

int rlhf_rm_pairs_make(rlhf_text_t *t, const data_pair_t *const *pairs, size_t n,
                       rlhf_rm_pairs_t *out, err_t *e)
{
    int rc = rm_data_make(t, pairs, n, false, 0, out, e);
    if (rc)
        rlhf_rm_pairs_free(out);
    return rc;
}

int rlhf_rm_pairs_batch(const rlhf_rm_pairs_t *d, const size_t *idx, int nb, int32_t pad,
                        rlhf_batch_t *out, err_t *e)
{
    const rlhf_seq_t **rows = malloc(2 * (size_t)(nb > 0 ? nb : 1) * sizeof *rows);
    if (!rows)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < nb; i++) {
        rows[i] = &d->c[idx[i]];
        rows[nb + i] = &d->r[idx[i]];
    }
    int rc = rlhf_batch_make(rows, 2 * nb, pad, out, e);
    free(rows);
    return rc;
}

/* ---- scoring ------------------------------------------------------------------------- */

typedef struct rm_acc {
    long pairs, correct, ties, tokens;
    double margin, loss, sum_r, min_r, max_r;
} rm_acc_t;

static void acc_init(rm_acc_t *a)
{
    memset(a, 0, sizeof *a);
    a->min_r = INFINITY;
    a->max_r = -INFINITY;
}

/* -log sigmoid(x), stable for any x */
static double neg_log_sigmoid(double x)
{
    return x > 0 ? log1p(exp(-x)) : -x + log1p(exp(x));
}

static void acc_add(rm_acc_t *a, double rc, double rr)
{
    double d = rc - rr;
    a->pairs++;
    a->correct += rc > rr;
    a->ties += rc == rr;
    a->margin += d;
    a->loss += neg_log_sigmoid(d);
    a->sum_r += rc + rr;
    a->min_r = fmin(a->min_r, fmin(rc, rr));
    a->max_r = fmax(a->max_r, fmax(rc, rr));
}

static void acc_metrics(const rm_acc_t *a, rlhf_rm_metrics_t *m)
{
    memset(m, 0, sizeof *m);
    m->pairs = a->pairs;
    m->num_tokens = a->tokens;
    m->ties = a->ties;
    if (!a->pairs)
        return;
    m->accuracy = (double)a->correct / (double)a->pairs;
    m->margin = a->margin / (double)a->pairs;
    m->loss = a->loss / (double)a->pairs;
    m->mean_reward = a->sum_r / (2.0 * (double)a->pairs);
    m->min_reward = a->min_r;
    m->max_reward = a->max_r;
}

void rlhf_rm_metrics_of(const float *chosen, const float *rejected, size_t n, long tokens,
                        rlhf_rm_metrics_t *out)
{
    rm_acc_t a;
    acc_init(&a);
    for (size_t i = 0; i < n; i++)
        acc_add(&a, chosen[i], rejected[i]);
    a.tokens = tokens;
    acc_metrics(&a, out);
}

/* One forward over pairs idx[0..nb): rows 0..nb-1 chosen, nb..2nb-1 rejected; scores to
 * s (2nb). */
static int score_pairs(qwen2_model_t *m, const prec_ctx_t *ctx, const rm_data_t *d,
                       const size_t *idx, int nb, int32_t pad, bool train, float *s,
                       long *tokens, err_t *e)
{
    rlhf_batch_t rb;
    int rc = rlhf_rm_pairs_batch(d, idx, nb, pad, &rb, e);
    if (rc)
        return rc;
    qwen2_batch_t b = {rb.B, rb.T, rb.ids, NULL, rb.len};
    rc = qwen2_forward(m, ctx, &b, QWEN2_FWD_SCORES | (train ? QWEN2_FWD_TRAIN : 0), e);
    if (!rc)
        rc = qwen2_scores_get(m, s, e);
    for (int i = 0; i < 2 * nb; i++)
        *tokens += rb.len[i];
    rlhf_batch_free(&rb);
    return rc;
}

static int evaluate(qwen2_model_t *m, const rm_data_t *d, int B, int32_t pad, uint64_t seed,
                    rlhf_rm_metrics_t *out, float *chosen, float *rejected, err_t *e)
{
    rm_acc_t a;
    acc_init(&a);
    size_t *idx = malloc((size_t)B * sizeof *idx);
    float *s = malloc(2 * (size_t)B * sizeof *s);
    int rc = idx && s ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    prec_ctx_t ctx = {PREC_REWARD, seed, 0};
    for (size_t i = 0; i < d->n && !rc; i += (size_t)B) {
        int nb = (int)(d->n - i < (size_t)B ? d->n - i : (size_t)B);
        for (int k = 0; k < nb; k++)
            idx[k] = i + (size_t)k;
        if ((rc = score_pairs(m, &ctx, d, idx, nb, pad, false, s, &a.tokens, e)))
            break;
        for (int k = 0; k < nb; k++) {
            acc_add(&a, s[k], s[nb + k]);
            if (chosen)
                chosen[i + (size_t)k] = s[k];
            if (rejected)
                rejected[i + (size_t)k] = s[nb + k];
        }
    }
    free(idx);
    free(s);
    if (!rc)
        acc_metrics(&a, out);
    return rc;
}

/* The padding id written to the reward model's config.json: transformers'
 * Qwen2ForSequenceClassification reads the score at the last token that is not
 * pad_token_id, so the pad id must never occur in a scored sequence, or the score would
 * be read before our end-of-turn token. The other template's end-of-turn token is such
 * an id; -1 when the tokenizer has none (then the key is removed: transformers then
 * scores batches of one sequence). */
static int32_t config_pad_id(const rlhf_text_t *t)
{
    const char *other = t->tmpl == RLHF_TEMPLATE_CHATML ? "<|endoftext|>" : "<|im_end|>";
    return tok_token_id(t->tok, other);
}

static int fix_config_pad(const char *dir, int32_t pad, err_t *e)
{
    char *path = fs_join(dir, "config.json");
    cJSON *j = NULL;
    int rc = path ? json_load_file(path, 4u << 20, &j, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        cJSON_DeleteItemFromObjectCaseSensitive(j, "pad_token_id");
        if (pad >= 0)
            cJSON_AddNumberToObject(j, "pad_token_id", pad);
        rc = json_write_file(path, j, true, e);
    }
    cJSON_Delete(j);
    free(path);
    return rc;
}

static int open_text(const char *dir, const rlhf_rm_opts_t *o, tok_t **tok, rlhf_text_t *t,
                     err_t *e)
{
    char *tpath = fs_join(dir, "tokenizer.json");
    if (!tpath)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = tok_load(tpath, tok, e);
    free(tpath);
    if (!rc)
        rc = rlhf_text_init(t, *tok, (rlhf_template_t)o->template_, o->max_prompt_tokens,
                            o->max_response_tokens, e);
    return rc;
}

/* ---- training ------------------------------------------------------------------------ */

int rlhf_rm_run(backend_t *be, const rlhf_rm_opts_t *o, const char *name, const char *model_dir,
                const data_pair_t *const *train, size_t ntrain, const data_pair_t *const *eval,
                size_t neval, const char *out_dir, const rlhf_log_t *log, rlhf_rm_result_t *res,
                err_t *e)
{
    memset(res, 0, sizeof *res);
    tok_t *tok = NULL;
    rlhf_text_t text = {0};
    rm_data_t dt = {0}, de = {0};
    qwen2_model_t *m = NULL;
    size_t *order = NULL;
    float *s = NULL, *ds = NULL;
    rlhf_trainlog_t tl = {.extra = {"accuracy", "eval_accuracy"}, .nextra = 2};
    cJSON *j = NULL;
    char *path = NULL;
    const int B = o->batch_size;
    int rc = open_text(model_dir, o, &tok, &text, e);
    if (rc)
        goto out;
    if (ntrain == 0) {
        rc = err_set(e, ERR_INPUT, "%s: no training pairs", name);
        goto out;
    }
    if ((rc = rm_data_make(&text, train, ntrain, o->shuffle_labels, o->seed, &dt, e)) ||
        (rc = rm_data_make(&text, eval, neval, false, o->seed, &de, e))) {
        err_prefix(e, "%s", name);
        goto out;
    }
    int maxlen = dt.maxlen > de.maxlen ? dt.maxlen : de.maxlen;
    qwen2_opts_t qo = {.max_batch = 2 * B, .max_seq = maxlen, .training = true,
                       .heads = QWEN2_HEAD_SCORE, .role = PREC_MODEL_REWARD, .head_seed = o->seed};
    if ((rc = qwen2_open_dir(model_dir, be, &qo, &m, e)))
        goto out;
    if (maxlen > qwen2_config(m)->max_pos) {
        rc = err_set(e, ERR_INPUT, "%s: a sequence of %d tokens exceeds the model's "
                     "max_position_embeddings %d (lower max_prompt_tokens/max_response_tokens)",
                     name, maxlen, qwen2_config(m)->max_pos);
        goto out;
    }
    /* The step count, capped at max_epochs passes over the pairs. */
    long steps = o->steps;
    if (o->max_epochs > 0) {
        double cap = ceil(o->max_epochs * (double)ntrain / B);
        if (cap < (double)steps)
            steps = cap < 1 ? 1 : (long)cap;
    }
    res->params = qwen2_nparams(m);
    res->train_pairs = (long)ntrain;
    rlhf_logf(log, "%s: %zu training pairs%s, %zu evaluation pairs, longest sequence %d; %ld "
              "steps of %d pairs%s, from %s", name, ntrain,
              o->shuffle_labels ? " (labels shuffled: negative control)" : "", neval, maxlen,
              steps, B, steps < o->steps ? " (capped at max_epochs)" : "", model_dir);
    order = malloc(ntrain * sizeof *order);
    s = malloc(2 * (size_t)B * sizeof *s);
    ds = malloc(2 * (size_t)B * sizeof *ds);
    if (!order || !s || !ds) {
        rc = err_set(e, ERR_NOMEM, "out of memory for reward-model batches");
        goto out;
    }
    prec_ctx_t ctx = {PREC_GRADIENT, o->seed, 0};
    rm_acc_t last;
    acc_init(&last);
    long last_from = steps - (steps / 10 > 0 ? steps / 10 : 1) + 1;
    double t0 = rlhf_now(), t_eval = 0;
    size_t next = ntrain;
    uint64_t epoch = 0;
    for (long st = 1; st <= steps && !rc; st++) {
        int nb = 0;
        size_t idx[1 << 10];
        size_t *bi = B <= (int)(sizeof idx / sizeof idx[0]) ? idx : NULL;
        if (!bi) {
            rc = err_set(e, ERR_INPUT, "%s: batch_size above %zu", name, sizeof idx / sizeof idx[0]);
            break;
        }
        while (nb < B) {
            if (next == ntrain) {
                rlhf_length_grouped_order(o->seed, "rlhf.rm.order", epoch++, dt.len, ntrain, B,
                                          order);
                next = 0;
                if (nb)
                    break;
            }
            bi[nb++] = order[next++];
        }
        ctx.step = (uint64_t)st;
        long tokens = 0;
        if ((rc = score_pairs(m, &ctx, &dt, bi, nb, text.eot_id, true, s, &tokens, e)))
            break;
        /* d loss / d r_c = -(1 - sigmoid(r_c - r_r)) / nb, and the opposite for r_r */
        rm_acc_t a;
        acc_init(&a);
        for (int k = 0; k < nb; k++) {
            double d = (double)s[k] - s[nb + k];
            double g = -(1.0 / (1.0 + exp(d))) / nb;
            ds[k] = (float)g;
            ds[nb + k] = (float)-g;
            acc_add(&a, s[k], s[nb + k]);
            if (st >= last_from)
                acc_add(&last, s[k], s[nb + k]);
        }
        res->tokens += tokens;
        if (st >= last_from)
            last.tokens += tokens;
        qwen2_step_info_t info;
        qwen2_adamw_t h = rlhf_adamw_at(&o->optim, st, steps);
        qwen2_zero_grads(m);
        if ((rc = qwen2_backward(m, &ctx, &(qwen2_grad_in_t){NULL, NULL, NULL, ds}, e)) ||
            (rc = qwen2_optimizer_step(m, &h, &info, e)))
            break;
        double ev = NAN;
        if (o->eval_every > 0 && st % o->eval_every == 0 && st < steps && de.n) {
            double te = rlhf_now();
            rlhf_rm_metrics_t em;
            if ((rc = evaluate(m, &de, B, text.eot_id, o->seed, &em, NULL, NULL, e)))
                break;
            ev = em.accuracy;
            t_eval += rlhf_now() - te;
            rlhf_logf(log, "%s step %ld: eval accuracy %.4f, margin %.3f, loss %.4f", name, st,
                      em.accuracy, em.margin, em.loss);
        }
        double el = rlhf_now() - t0 - t_eval;
        double acc = (double)a.correct / nb, extra[2] = {acc, ev};
        double loss = a.loss / nb;
        if ((rc = rlhf_trainlog_add(&tl, st, h.lr, loss, info.grad_norm, res->tokens,
                                    res->tokens / el, el, extra, e)))
            break;
        if (st == steps || (o->log_every > 0 && st % o->log_every == 0)) {
            double left = el / (double)st * (double)(steps - st);
            char a1[32], a2[32];
            rlhf_fmt_duration(el, a1, sizeof a1);
            rlhf_fmt_duration(left, a2, sizeof a2);
            rlhf_logf(log, "%s step %ld/%ld  loss %.4f  acc %.3f  lr %.2e  |g| %.3f  %.0f tok/s  "
                      "%s elapsed, %s left", name, st, steps, loss, acc, h.lr, info.grad_norm,
                      res->tokens / el, a1, a2);
        }
    }
    if (rc)
        goto out;
    res->steps = steps;
    res->seconds = rlhf_now() - t0 - t_eval;
    res->tokens_per_s = res->seconds > 0 ? res->tokens / res->seconds : 0;
    acc_metrics(&last, &res->train_last);
    if (de.n) {
        double te = rlhf_now();
        if ((rc = evaluate(m, &de, B, text.eot_id, o->seed, &res->eval, NULL, NULL, e)))
            goto out;
        rlhf_logf(log, "%s: eval on %zu pairs: accuracy %.4f, margin %.3f, mean reward %.3f, "
                  "loss %.4f (%.1f s)", name, de.n, res->eval.accuracy, res->eval.margin,
                  res->eval.mean_reward, res->eval.loss, rlhf_now() - te);
        if (tl.n)
            tl.rows[(tl.n - 1) * 9 + 8] = res->eval.accuracy;
    }
    if ((rc = qwen2_save_dir(m, out_dir, rlhf_dtype_of(o->save_dtype), e)) ||
        (rc = fix_config_pad(out_dir, config_pad_id(&text), e)) ||
        (rc = rlhf_copy_tokenizer_files(model_dir, out_dir, e)))
        goto out;
    path = fs_join(out_dir, "train_log.csv");
    if (!path || (rc = rlhf_trainlog_write(&tl, path, e))) {
        rc = path ? rc : err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    free(path);
    path = fs_join(out_dir, "rm_metrics.json");
    j = de.n ? rlhf_rm_metrics_json(&res->eval, "") : cJSON_CreateObject();
    cJSON *tr = rlhf_rm_metrics_json(&res->train_last, "");
    if (!path || !j || !tr) {
        cJSON_Delete(tr);
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    cJSON_AddStringToObject(j, "model", name);
    cJSON_AddStringToObject(j, "eval_split", de.n ? "rm_eval" : "none");
    cJSON_AddBoolToObject(j, "shuffle_labels", o->shuffle_labels);
    cJSON_AddItemToObject(j, "train_last_10pct", tr);
    cJSON_AddNumberToObject(j, "train_pairs", (double)ntrain);
    cJSON_AddNumberToObject(j, "steps", (double)res->steps);
    cJSON_AddNumberToObject(j, "train_tokens", (double)res->tokens);
    cJSON_AddNumberToObject(j, "train_seconds", res->seconds);
    cJSON_AddNumberToObject(j, "train_tokens_per_s", res->tokens_per_s);
    cJSON_AddNumberToObject(j, "parameters", (double)res->params);
    rc = json_write_file(path, j, true, e);
out:
    cJSON_Delete(j);
    free(path);
    rlhf_trainlog_free(&tl);
    free(order);
    free(s);
    free(ds);
    qwen2_free(m);
    rlhf_rm_pairs_free(&dt);
    rlhf_rm_pairs_free(&de);
    if (text.tok)
        rlhf_text_free(&text);
    tok_free(tok);
    return rc;
}

/* A reward-model directory says so in config.json (architectures); anything else would
 * get a freshly initialised score head and meaningless scores. */
int rlhf_rm_check_dir(const char *dir, err_t *e)
{
    char *path = fs_join(dir, "config.json");
    cJSON *j = NULL;
    int rc = path ? json_load_file(path, 4u << 20, &j, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        const cJSON *a = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "architectures"), 0);
        if (!cJSON_IsString(a) || !strstr(a->valuestring, "ForSequenceClassification"))
            rc = err_set(e, ERR_INPUT, "%s: not a reward model (no score head: field "
                         "\"architectures\" is %s, expected Qwen2ForSequenceClassification)", path,
                         cJSON_IsString(a) ? a->valuestring : "missing");
    }
    if (!rc)
        rc = qwen2_check_reward_dir(dir, e);
    cJSON_Delete(j);
    free(path);
    return rc;
}

int rlhf_rm_evaluate_dir(backend_t *be, const rlhf_rm_opts_t *o, const char *rm_dir,
                         const data_pair_t *const *pairs, size_t n, rlhf_rm_metrics_t *out,
                         float *chosen, float *rejected, err_t *e)
{
    return rlhf_rm_evaluate_dir_plan(be, o, rm_dir, NULL, NULL, pairs, n, out, chosen, rejected,
                                     e);
}

int rlhf_rm_evaluate_dir_plan(backend_t *be, const rlhf_rm_opts_t *o, const char *rm_dir,
                              const char *policies_path, const char *plan,
                              const data_pair_t *const *pairs, size_t n, rlhf_rm_metrics_t *out,
                              float *chosen, float *rejected, err_t *e)
{
    tok_t *tok = NULL;
    rlhf_text_t text = {0};
    rm_data_t d = {0};
    qwen2_model_t *m = NULL;
    int rc = rlhf_rm_check_dir(rm_dir, e);
    if (!rc)
        rc = open_text(rm_dir, o, &tok, &text, e);
    if (!rc)
        rc = rm_data_make(&text, pairs, n, false, o->seed, &d, e);
    qwen2_opts_t qo = {.max_batch = 2 * o->batch_size, .max_seq = d.maxlen > 0 ? d.maxlen : 1,
                       .heads = QWEN2_HEAD_SCORE, .role = PREC_MODEL_REWARD, .head_seed = o->seed};
    if (!rc)
        rc = qwen2_open_dir(rm_dir, be, &qo, &m, e);
    if (!rc && policies_path)
        rc = qwen2_load_plan(m, policies_path, plan, NULL, e);
    if (!rc)
        rc = evaluate(m, &d, o->batch_size, text.eot_id, o->seed, out, chosen, rejected, e);
    qwen2_free(m);
    rlhf_rm_pairs_free(&d);
    if (text.tok)
        rlhf_text_free(&text);
    tok_free(tok);
    return rc;
}
