/* sft: pretraining and supervised fine-tuning (see sft.h). */
#include "rlhf/sft.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/text.h"
#include "rlhf/train_common.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- options ------------------------------------------------------------------------- */

static const char *const init_names[] = {"normal", "uniform", NULL};
static const opt_enum_t init_enum = {init_names, 0, NULL, NULL};

static int model_check(const void *opts, const char *ctx, err_t *e)
{
    const rlhf_model_opts_t *o = opts;
    if (o->hidden % o->heads || (o->hidden / o->heads) % 2)
        return err_set(e, ERR_INPUT, "%s: hidden (%d) must be heads (%d) times an even head "
                       "size", ctx, o->hidden, o->heads);
    if (o->heads % o->kv_heads)
        return err_set(e, ERR_INPUT, "%s: heads (%d) must be a multiple of kv_heads (%d)", ctx,
                       o->heads, o->kv_heads);
    return ERR_OK;
}

#define MO(f) offsetof(rlhf_model_opts_t, f)
static const opt_field_t model_fields[] = {
    OPT_KEY("hidden", OPT_INT, MO(hidden), "128", 2, 65536,
            "hidden size (heads x an even head size)"),
    OPT_KEY("layers", OPT_INT, MO(layers), "4", 1, 1024, "decoder layers"),
    OPT_KEY("heads", OPT_INT, MO(heads), "4", 1, 1024, "attention heads"),
    OPT_KEY("kv_heads", OPT_INT, MO(kv_heads), "2", 1, 1024, "key/value heads (heads a multiple)"),
    OPT_KEY("intermediate", OPT_INT, MO(intermediate), "352", 1, 1 << 20, "MLP size"),
    OPT_KEY("max_position", OPT_INT, MO(max_position), "1024", 8, 1 << 20, "longest sequence"),
    OPT_KEY("rope_theta", OPT_DOUBLE, MO(rope_theta), "10000", 1, 1e12, "RoPE base"),
    OPT_KEY("rms_eps", OPT_DOUBLE, MO(rms_eps), "1e-6", 1e-12, 1, "RMSNorm epsilon"),
    OPT_KEY("tie", OPT_BOOL, MO(tie), "true", 0, 0, "lm_head tied to the embedding"),
    OPT_KEY("init_range", OPT_DOUBLE, MO(init_range), "0.02", 1e-6, 1,
            "spread of the initial weights: the normal's std or the uniform's range"),
    OPT_KEY("init", OPT_ENUM, MO(init), "normal", 0, 0,
            "initialisation: transformers' (normal) or the earlier uniform one", .en = &init_enum),
};
const opt_table_t rlhf_model_opts_table =
    OPT_TABLE("model", rlhf_model_opts_t, model_fields, model_check);

void rlhf_model_opts_default(rlhf_model_opts_t *o) { opts_default(&rlhf_model_opts_table, o); }

/* 4 M tokens (about 4 passes over the corpus) in batches of 32: the tiny model learns to
 * look up the prompt's topic only after a plateau of about 2.2 M tokens (a sudden
 * transition, in PyTorch as here; docs/benchmarks.md, issue 7). Before, 600 k tokens gave
 * a model whose topic words ignored the prompt, and PPO could not raise the ground truth. */
#define PO(f) offsetof(rlhf_pretrain_opts_t, f)
static const opt_field_t pretrain_fields[] = {
    OPT_KEY("tokens", OPT_LONG, PO(tokens), "4000000", 0, 1e15,
            "training tokens (steps = tokens / (batch_size x seq_len), rounded up)"),
    OPT_KEY("seq_len", OPT_INT, PO(seq_len), "128", 2, 1 << 20, "tokens per row"),
    OPT_KEY("batch_size", OPT_INT, PO(batch_size), "32", 1, 1 << 16, "rows per step"),
    OPT_KEY("seed", OPT_U64, PO(seed), "1234", 0, 0, "initial weights and row order"),
    OPT_KEY("log_every", OPT_INT, PO(log_every), "25", 0, 1 << 30,
            "progress line every N steps (0: only the last)"),
    OPT_EMBED("optimizer", PO(optim), &rlhf_optim_table, "lr=3e-3;warmup_steps=20"),
};
const opt_table_t rlhf_pretrain_opts_table =
    OPT_TABLE("pretrain", rlhf_pretrain_opts_t, pretrain_fields, NULL);

void rlhf_pretrain_opts_default(rlhf_pretrain_opts_t *o)
{
    opts_default(&rlhf_pretrain_opts_table, o);
}

#define SO(f) offsetof(rlhf_sft_opts_t, f)
static const opt_field_t sft_fields[] = {
    OPT_KEY("steps", OPT_LONG, SO(steps), "150", 0, 1e12, "optimizer steps"),
    OPT_KEY("batch_size", OPT_INT, SO(batch_size), "16", 1, 1 << 16, "pairs per step"),
    OPT_KEY("seed", OPT_U64, SO(seed), "1234", 0, 0, "example order"),
    OPT_KEY("max_prompt_tokens", OPT_INT, SO(max_prompt_tokens), "256", 1, 1 << 20,
            "prompt ids kept (the last ones)"),
    OPT_KEY("max_response_tokens", OPT_INT, SO(max_response_tokens), "256", 1, 1 << 20,
            "response ids kept (the first ones)"),
    OPT_KEY("template", OPT_ENUM, SO(template_), "raw", 0, 0, "how a turn is written",
            .en = &rlhf_template_enum),
    OPT_KEY("save_dtype", OPT_ENUM, SO(save_dtype), "float32", 0, 0, "type of the saved weights",
            .en = &rlhf_dtype_enum),
    OPT_KEY("log_every", OPT_INT, SO(log_every), "25", 0, 1 << 30,
            "progress line every N steps (0: only the last)"),
    OPT_KEY("eval_pairs", OPT_LONG, SO(eval_pairs), "1000", 0, 1e12,
            "rm_eval pairs whose held-out loss is measured (0: all)"),
    OPT_EMBED("optimizer", SO(optim), &rlhf_optim_table, "lr=1e-3;warmup_steps=10"),
};
const opt_table_t rlhf_sft_opts_table = OPT_TABLE("sft", rlhf_sft_opts_t, sft_fields, NULL);

void rlhf_sft_opts_default(rlhf_sft_opts_t *o) { opts_default(&rlhf_sft_opts_table, o); }

/* ---- shared pieces ------------------------------------------------------------------- */

/* Mean of v[from, to) */
static double mean_range(const double *v, long from, long to)
{
    double s = 0;
    for (long i = from; i < to; i++)
        s += v[i];
    return to > from ? s / (double)(to - from) : NAN;
}

static void summarize_losses(const double *losses, long steps, rlhf_train_summary_t *sum)
{
    long w = steps / 10 > 0 ? steps / 10 : 1;
    sum->loss_first = steps ? mean_range(losses, 0, w < steps ? w : steps) : NAN;
    sum->loss_last = steps ? mean_range(losses, steps - (w < steps ? w : steps), steps) : NAN;
}

/* The progress line every log_every steps and at the last one. */
static void progress(const rlhf_log_t *log, const char *stage, long s, long total, int every,
                     double loss, double lr, double gnorm, double tok_s, double t0)
{
    if (!(s == total || (every > 0 && s % every == 0)))
        return;
    double el = rlhf_now() - t0, left = el / (double)s * (double)(total - s);
    char a[32], b[32];
    rlhf_fmt_duration(el, a, sizeof a);
    rlhf_fmt_duration(left, b, sizeof b);
    rlhf_logf(log, "%s step %ld/%ld  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  %s elapsed, %s left",
              stage, s, total, loss, lr, gnorm, tok_s, a, b);
}

static int write_metrics(const char *dir, const char *name, const char *stage,
                         const rlhf_train_summary_t *s, cJSON *extra, err_t *e)
{
    cJSON *j = cJSON_CreateObject();
    char *path = fs_join(dir, name);
    int rc = ERR_OK;
    if (!j || !path) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    cJSON_AddStringToObject(j, "stage", stage);
    cJSON_AddNumberToObject(j, "steps", (double)s->steps);
    cJSON_AddNumberToObject(j, "examples", (double)s->examples);
    cJSON_AddNumberToObject(j, "tokens", (double)s->tokens);
    cJSON_AddNumberToObject(j, "seconds", s->seconds);
    cJSON_AddNumberToObject(j, "tokens_per_s", s->tokens_per_s);
    if (isfinite(s->loss_first))
        cJSON_AddNumberToObject(j, "loss_first", s->loss_first);
    if (isfinite(s->loss_last))
        cJSON_AddNumberToObject(j, "loss_last", s->loss_last);
    if (isfinite(s->eval_loss)) {
        cJSON_AddNumberToObject(j, "eval_loss", s->eval_loss);
        cJSON_AddNumberToObject(j, "eval_pairs", (double)s->eval_pairs);
    }
    cJSON_AddNumberToObject(j, "parameters", (double)s->params);
    if (extra) {
        cJSON_AddItemToObject(j, "options", extra);
        extra = NULL;
    }
    rc = json_write_file(path, j, true, e);
out:
    cJSON_Delete(extra);
    cJSON_Delete(j);
    free(path);
    return rc;
}

/* A tokenizer_config.json for a tokenizer we trained, so transformers' AutoTokenizer
 * takes tokenizer.json as it is (PreTrainedTokenizerFast) with <|endoftext|> as end and
 * padding token. */
static int write_tokenizer_config(const char *dir, int max_len, err_t *e)
{
    cJSON *j = cJSON_CreateObject();
    char *path = fs_join(dir, "tokenizer_config.json");
    int rc;
    if (!j || !path) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
    } else {
        cJSON_AddStringToObject(j, "tokenizer_class", "PreTrainedTokenizerFast");
        cJSON_AddStringToObject(j, "eos_token", "<|endoftext|>");
        cJSON_AddStringToObject(j, "pad_token", "<|endoftext|>");
        cJSON_AddNullToObject(j, "bos_token");
        cJSON_AddNullToObject(j, "unk_token");
        cJSON_AddNumberToObject(j, "model_max_length", max_len);
        cJSON_AddBoolToObject(j, "clean_up_tokenization_spaces", false);
        rc = json_write_file(path, j, true, e);
    }
    cJSON_Delete(j);
    free(path);
    return rc;
}

/* ---- pretraining --------------------------------------------------------------------- */

/* Encodes every document of a {"text": ...} .jsonl corpus, each followed by eot, into one
 * stream. */
static int encode_corpus(const tok_t *tok, const char *corpus, int32_t eot, tok_ids_t *stream,
                         long *ndocs, err_t *e)
{
    char *buf;
    size_t len;
    int rc = fs_read_all(corpus, (size_t)4 << 30, &buf, &len, e);
    if (rc)
        return rc;
    tok_work_t *w = NULL;
    if ((rc = tok_work_new(tok, &w, e))) {
        free(buf);
        return rc;
    }
    *ndocs = 0;
    size_t lineno = 0;
    for (char *p = buf; !rc && p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
        lineno++;
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r'))
            k++;
        if (k < n) {
            char ctx[600];
            snprintf(ctx, sizeof ctx, "%s: line %zu", corpus, lineno);
            cJSON *j = NULL;
            const char *text;
            rc = json_parse(p, n, ctx, &j, e);
            if (!rc)
                rc = json_req_string(j, "text", ctx, &text, e);
            if (!rc)
                rc = tok_encode(tok, w, text, strlen(text), stream, e);
            if (!rc)
                rc = tok_ids_push(stream, eot, e);
            if (!rc)
                (*ndocs)++;
            cJSON_Delete(j);
        }
        p += n + 1;
    }
    tok_work_free(w);
    free(buf);
    if (!rc && *ndocs == 0)
        rc = err_set(e, ERR_INPUT, "%s: no documents", corpus);
    return rc;
}

int rlhf_pretrain_run(backend_t *be, const rlhf_model_opts_t *mo, const rlhf_pretrain_opts_t *po,
                      const char *tokenizer_json, const char *corpus, const char *out_dir,
                      const rlhf_log_t *log, rlhf_train_summary_t *sum, err_t *e)
{
    memset(sum, 0, sizeof *sum);
    sum->eval_loss = NAN;
    tok_t *tok = NULL;
    tok_ids_t stream = {0};
    qwen2_model_t *m = NULL;
    int32_t *ids = NULL, *targets = NULL;
    float *logp = NULL, *dlogp = NULL;
    size_t *order = NULL;
    double *losses = NULL;
    rlhf_trainlog_t tl = {0};
    char *path = NULL;
    const int B = po->batch_size, T = po->seq_len;
    int rc = tok_load(tokenizer_json, &tok, e);
    if (rc)
        return rc;
    int32_t eot = tok_token_id(tok, "<|endoftext|>");
    if (eot < 0) {
        rc = err_set(e, ERR_INPUT, "%s: no <|endoftext|> token (needed between documents)",
                     tokenizer_json);
        goto out;
    }
    if (T > mo->max_position) {
        rc = err_set(e, ERR_INPUT, "pretrain: seq_len %d exceeds the model's max_position %d", T,
                     mo->max_position);
        goto out;
    }
    long ndocs;
    double t_enc = rlhf_now();
    if ((rc = encode_corpus(tok, corpus, eot, &stream, &ndocs, e)))
        goto out;
    size_t nrows = stream.n / (size_t)T;
    if (nrows < 1) {
        rc = err_set(e, ERR_INPUT, "%s: %zu tokens, fewer than one row of %d", corpus, stream.n, T);
        goto out;
    }
    long steps = (po->tokens + (long)B * T - 1) / ((long)B * T);
    rlhf_logf(log, "pretrain: %ld documents, %zu tokens (%zu rows of %d) encoded in %.1f s; "
              "%ld steps of %d x %d", ndocs, stream.n, nrows, T, rlhf_now() - t_enc, steps, B, T);

    qwen2_config_t c = {.hidden = mo->hidden, .inter = mo->intermediate, .layers = mo->layers,
                        .heads = mo->heads, .kv_heads = mo->kv_heads,
                        .head_dim = mo->hidden / mo->heads, .vocab = tok_vocab_size(tok),
                        .max_pos = mo->max_position, .rope_theta = mo->rope_theta,
                        .rms_eps = mo->rms_eps, .tie = mo->tie, .dtype = ST_F32, .bos_id = -1,
                        .eos_ids = {eot}, .n_eos = 1, .pad_id = eot};
    if ((rc = qwen2_config_check(&c, "model", e)))
        goto out;
    qwen2_opts_t qo = {.max_batch = B, .max_seq = T, .training = true, .heads = QWEN2_HEAD_LM,
                       .role = PREC_MODEL_POLICY, .head_seed = po->seed};
    if ((rc = qwen2_new(be, &c, &qo, &m, e)) ||
        (rc = mo->init == RLHF_INIT_UNIFORM
                  ? qwen2_init_philox(m, po->seed, (float)mo->init_range, e)
                  : qwen2_init_normal(m, po->seed, (float)mo->init_range, e)))
        goto out;
    sum->params = qwen2_nparams(m);
    sum->examples = (long)nrows;
    rlhf_logf(log, "pretrain: model hidden %d, %d layers, %d heads (%d KV), intermediate %d, "
              "vocab %d: %zu parameters", c.hidden, c.layers, c.heads, c.kv_heads, c.inter,
              c.vocab, qwen2_config_nparams(&c));

    size_t N = (size_t)B * T;
    ids = malloc(N * sizeof *ids);
    targets = malloc(N * sizeof *targets);
    logp = malloc(N * sizeof *logp);
    dlogp = malloc(N * sizeof *dlogp);
    order = malloc(nrows * sizeof *order);
    losses = malloc((size_t)(steps > 0 ? steps : 1) * sizeof *losses);
    if (!ids || !targets || !logp || !dlogp || !order || !losses) {
        rc = err_set(e, ERR_NOMEM, "out of memory for pretraining batches");
        goto out;
    }
    qwen2_batch_t b = {B, T, ids, NULL, NULL};
    const float g = -1.0f / (float)((size_t)B * (T - 1));
    prec_ctx_t ctx = {PREC_GRADIENT, po->seed, 0};
    double t0 = rlhf_now();
    size_t next = nrows; /* position in the current epoch's order */
    uint64_t epoch = 0;
    for (long s = 1; s <= steps && !rc; s++) {
        for (int r = 0; r < B; r++) {
            if (next == nrows) {
                rlhf_epoch_order(po->seed, "rlhf.pretrain.rows", epoch++, order, nrows);
                next = 0;
            }
            memcpy(ids + (size_t)r * T, stream.ids + order[next++] * (size_t)T,
                   (size_t)T * sizeof *ids);
        }
        qwen2_next_token_targets(&b, targets);
        for (size_t i = 0; i < N; i++)
            dlogp[i] = targets[i] >= 0 ? g : 0.0f;
        ctx.step = (uint64_t)s;
        qwen2_step_info_t info;
        qwen2_adamw_t h = rlhf_adamw_at(&po->optim, s, steps);
        if ((rc = qwen2_forward(m, &ctx, &b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, e)) ||
            (rc = qwen2_token_logprobs(m, targets, logp, NULL, e)))
            break;
        double loss = 0;
        for (size_t i = 0; i < N; i++)
            loss -= targets[i] >= 0 ? logp[i] : 0.0;
        loss /= (double)((size_t)B * (T - 1));
        qwen2_zero_grads(m);
        if ((rc = qwen2_backward(m, &ctx, &(qwen2_grad_in_t){dlogp, NULL, NULL, NULL}, e)) ||
            (rc = qwen2_optimizer_step(m, &h, &info, e)))
            break;
        losses[s - 1] = loss;
        sum->tokens += (long)N;
        double el = rlhf_now() - t0;
        if ((rc = rlhf_trainlog_add(&tl, s, h.lr, loss, info.grad_norm, sum->tokens,
                                    sum->tokens / el, el, NULL, e)))
            break;
        progress(log, "pretrain", s, steps, po->log_every, loss, h.lr, info.grad_norm,
                 sum->tokens / el, t0);
    }
    if (rc)
        goto out;
    sum->steps = steps;
    sum->seconds = rlhf_now() - t0;
    sum->tokens_per_s = sum->seconds > 0 ? sum->tokens / sum->seconds : 0;
    summarize_losses(losses, steps, sum);
    if ((rc = qwen2_save_dir(m, out_dir, ST_F32, e)))
        goto out;
    path = fs_join(out_dir, "tokenizer.json");
    if (!path) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = rlhf_copy_file(tokenizer_json, path, e)) ||
        (rc = write_tokenizer_config(out_dir, mo->max_position, e)))
        goto out;
    free(path);
    path = fs_join(out_dir, "train_log.csv");
    if (!path || (rc = rlhf_trainlog_write(&tl, path, e))) {
        rc = path ? rc : err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    rc = write_metrics(out_dir, "pretrain_metrics.json", "pretrain", sum, NULL, e);
out:
    free(path);
    rlhf_trainlog_free(&tl);
    free(losses);
    free(order);
    free(ids);
    free(targets);
    free(logp);
    free(dlogp);
    qwen2_free(m);
    tok_ids_free(&stream);
    tok_free(tok);
    return rc;
}

/* ---- SFT ----------------------------------------------------------------------------- */

/* Chosen responses of pairs as token sequences. */
typedef struct seqset {
    rlhf_seq_t *seqs;
    int *len;
    size_t n;
    int maxlen;
    long response_tokens;
} seqset_t;

static void seqset_free(seqset_t *s)
{
    for (size_t i = 0; s->seqs && i < s->n; i++)
        rlhf_seq_free(&s->seqs[i]);
    free(s->seqs);
    free(s->len);
    memset(s, 0, sizeof *s);
}

static int seqset_make(rlhf_text_t *t, const data_pair_t *const *pairs, size_t n, seqset_t *s,
                       err_t *e)
{
    memset(s, 0, sizeof *s);
    if (n == 0)
        return ERR_OK;
    s->seqs = calloc(n, sizeof *s->seqs);
    s->len = calloc(n, sizeof *s->len);
    if (!s->seqs || !s->len)
        return err_set(e, ERR_NOMEM, "out of memory for %zu sequences", n);
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        if (rlhf_encode_pair(t, pairs[i]->prompt, pairs[i]->chosen, &s->seqs[i], e))
            return err_prefix(e, "sft: pair %zu (source line %zu)", i, pairs[i]->line);
        s->len[i] = s->seqs[i].n;
        s->maxlen = s->len[i] > s->maxlen ? s->len[i] : s->maxlen;
        s->response_tokens += s->seqs[i].n - s->seqs[i].prompt_len;
    }
    return ERR_OK;
}

/* The tokenizer of a model directory and rlhf/text.h over it. */
static int open_text(const rlhf_sft_opts_t *o, const char *model_dir, tok_t **tok,
                     rlhf_text_t *t, err_t *e)
{
    char *tpath = fs_join(model_dir, "tokenizer.json");
    if (!tpath)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = tok_load(tpath, tok, e);
    free(tpath);
    if (!rc)
        rc = rlhf_text_init(t, *tok, (rlhf_template_t)o->template_, o->max_prompt_tokens,
                            o->max_response_tokens, e);
    return rc;
}

long rlhf_sft_targets(const rlhf_batch_t *b, int32_t *targets)
{
    size_t N = (size_t)b->B * b->T;
    long cnt = 0;
    for (size_t i = 0; i < N; i++) {
        bool on = b->mask[i] > 0;
        targets[i] = on ? b->ids[i + 1] : -1; /* mask is 0 at each row's last position */
        cnt += on;
    }
    return cnt;
}

/* Forward + masked loss of one batch; fills dlogp = -mask/sum(mask) when not NULL. The
 * loss goes to *loss, the number of target tokens to *ntgt. */
static int sft_batch_loss(qwen2_model_t *m, const prec_ctx_t *ctx, const rlhf_batch_t *rb,
                          bool train, int32_t *targets, float *logp, float *dlogp, double *loss,
                          double *ntgt, err_t *e)
{
    size_t N = (size_t)rb->B * rb->T;
    double cnt = (double)rlhf_sft_targets(rb, targets);
    qwen2_batch_t b = {rb->B, rb->T, rb->ids, NULL, rb->len};
    unsigned fl = QWEN2_FWD_LOGITS | (train ? QWEN2_FWD_TRAIN : 0);
    int rc = qwen2_forward(m, ctx, &b, fl, e);
    if (!rc)
        rc = qwen2_token_logprobs(m, targets, logp, NULL, e);
    if (rc)
        return rc;
    double s = 0;
    for (size_t i = 0; i < N; i++)
        if (targets[i] >= 0) {
            s -= logp[i];
            if (dlogp)
                dlogp[i] = (float)(-1.0 / cnt);
        } else if (dlogp) {
            dlogp[i] = 0.0f;
        }
    *loss = cnt > 0 ? s / cnt : 0;
    *ntgt = cnt;
    return ERR_OK;
}

/* Masked loss over a whole set, in consecutive batches of B (the same batches whatever
 * model object computes it, so a reloaded model gives the same bits). */
static int set_loss(qwen2_model_t *m, const seqset_t *s, int B, int32_t pad, double *loss,
                    err_t *e)
{
    size_t N = (size_t)B * s->maxlen;
    int32_t *targets = malloc(N * sizeof *targets);
    float *logp = malloc(N * sizeof *logp);
    const rlhf_seq_t **rows = malloc((size_t)B * sizeof *rows);
    int rc = targets && logp && rows ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    double tot = 0, cnt = 0;
    for (size_t i = 0; i < s->n && !rc; i += (size_t)B) {
        int nb = (int)(s->n - i < (size_t)B ? s->n - i : (size_t)B);
        for (int r = 0; r < nb; r++)
            rows[r] = &s->seqs[i + (size_t)r];
        rlhf_batch_t rb;
        double l, c;
        if ((rc = rlhf_batch_make(rows, nb, pad, &rb, e)))
            break;
        rc = sft_batch_loss(m, &ctx, &rb, false, targets, logp, NULL, &l, &c, e);
        rlhf_batch_free(&rb);
        tot += l * c;
        cnt += c;
    }
    if (!rc)
        *loss = cnt > 0 ? tot / cnt : NAN;
    free(rows);
    free(targets);
    free(logp);
    return rc;
}

int rlhf_sft_run(backend_t *be, const rlhf_sft_opts_t *o, const char *model_dir,
                 const data_pair_t *const *pairs, size_t n, const data_pair_t *const *eval,
                 size_t neval, const char *out_dir, const rlhf_log_t *log,
                 rlhf_train_summary_t *sum, err_t *e)
{
    memset(sum, 0, sizeof *sum);
    sum->eval_loss = NAN;
    tok_t *tok = NULL;
    rlhf_text_t text = {0};
    seqset_t d = {0}, de = {0};
    qwen2_model_t *m = NULL;
    int32_t *targets = NULL;
    float *logp = NULL, *dlogp = NULL;
    size_t *order = NULL;
    const rlhf_seq_t **rows = NULL;
    double *losses = NULL;
    rlhf_trainlog_t tl = {0};
    char *path = NULL;
    const int B = o->batch_size;
    if (o->eval_pairs > 0 && neval > (size_t)o->eval_pairs)
        neval = (size_t)o->eval_pairs;
    int rc = open_text(o, model_dir, &tok, &text, e);
    if (!rc && n == 0)
        rc = err_set(e, ERR_INPUT, "sft: no training pairs");
    if (!rc)
        rc = seqset_make(&text, pairs, n, &d, e);
    if (!rc)
        rc = seqset_make(&text, eval, neval, &de, e);
    if (rc)
        goto out;
    int maxlen = d.maxlen > de.maxlen ? d.maxlen : de.maxlen;
    qwen2_opts_t qo = {.max_batch = B, .max_seq = maxlen, .training = true,
                       .heads = QWEN2_HEAD_LM, .role = PREC_MODEL_POLICY, .head_seed = o->seed};
    if ((rc = qwen2_open_dir(model_dir, be, &qo, &m, e)))
        goto out;
    if (maxlen > qwen2_config(m)->max_pos) {
        rc = err_set(e, ERR_INPUT, "sft: a sequence of %d tokens exceeds the model's "
                     "max_position_embeddings %d (lower max_prompt_tokens/max_response_tokens)",
                     maxlen, qwen2_config(m)->max_pos);
        goto out;
    }
    sum->params = qwen2_nparams(m);
    sum->examples = (long)n;
    sum->eval_pairs = (long)neval;
    rlhf_logf(log, "sft: %zu pairs (chosen responses: %ld tokens, longest sequence %d), %ld "
              "steps of %d, model %s (%zu parameters)", n, d.response_tokens, d.maxlen, o->steps,
              B, model_dir, qwen2_config_nparams(qwen2_config(m)));
    size_t N = (size_t)B * d.maxlen;
    targets = malloc(N * sizeof *targets);
    logp = malloc(N * sizeof *logp);
    dlogp = malloc(N * sizeof *dlogp);
    order = malloc(n * sizeof *order);
    rows = malloc((size_t)B * sizeof *rows);
    losses = malloc((size_t)(o->steps > 0 ? o->steps : 1) * sizeof *losses);
    if (!targets || !logp || !dlogp || !order || !rows || !losses) {
        rc = err_set(e, ERR_NOMEM, "out of memory for SFT batches");
        goto out;
    }
    prec_ctx_t ctx = {PREC_GRADIENT, o->seed, 0};
    double t0 = rlhf_now();
    size_t next = n;
    uint64_t epoch = 0;
    for (long s = 1; s <= o->steps && !rc; s++) {
        int nb = 0;
        while (nb < B) {
            if (next == n) {
                rlhf_length_grouped_order(o->seed, "rlhf.sft.order", epoch++, d.len, n, B, order);
                next = 0;
                if (nb)
                    break; /* an epoch's last short batch is not topped up from the next */
            }
            rows[nb++] = &d.seqs[order[next++]];
        }
        rlhf_batch_t rb;
        if ((rc = rlhf_batch_make(rows, nb, text.eot_id, &rb, e)))
            break;
        ctx.step = (uint64_t)s;
        double loss = 0, ntgt = 0;
        qwen2_step_info_t info;
        qwen2_adamw_t h = rlhf_adamw_at(&o->optim, s, o->steps);
        rc = sft_batch_loss(m, &ctx, &rb, true, targets, logp, dlogp, &loss, &ntgt, e);
        if (!rc) {
            qwen2_zero_grads(m);
            rc = qwen2_backward(m, &ctx, &(qwen2_grad_in_t){dlogp, NULL, NULL, NULL}, e);
        }
        if (!rc)
            rc = qwen2_optimizer_step(m, &h, &info, e);
        for (int r = 0; r < nb; r++)
            sum->tokens += rb.len[r];
        rlhf_batch_free(&rb);
        if (rc)
            break;
        losses[s - 1] = loss;
        double el = rlhf_now() - t0;
        if ((rc = rlhf_trainlog_add(&tl, s, h.lr, loss, info.grad_norm, sum->tokens,
                                    sum->tokens / el, el, NULL, e)))
            break;
        progress(log, "sft", s, o->steps, o->log_every, loss, h.lr, info.grad_norm,
                 sum->tokens / el, t0);
    }
    if (rc)
        goto out;
    sum->steps = o->steps;
    sum->seconds = rlhf_now() - t0;
    sum->tokens_per_s = sum->seconds > 0 ? sum->tokens / sum->seconds : 0;
    summarize_losses(losses, o->steps, sum);
    if (de.n) {
        if ((rc = set_loss(m, &de, B, text.eot_id, &sum->eval_loss, e)))
            goto out;
        rlhf_logf(log, "sft: loss on the chosen responses of %zu evaluation pairs: %.4f", de.n,
                  sum->eval_loss);
    }
    if ((rc = qwen2_save_dir(m, out_dir, rlhf_dtype_of(o->save_dtype), e)) ||
        (rc = rlhf_copy_tokenizer_files(model_dir, out_dir, e)))
        goto out;
    path = fs_join(out_dir, "train_log.csv");
    if (!path || (rc = rlhf_trainlog_write(&tl, path, e))) {
        rc = path ? rc : err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    rc = write_metrics(out_dir, "sft_metrics.json", "sft", sum, NULL, e);
out:
    free(path);
    rlhf_trainlog_free(&tl);
    free(losses);
    free(rows);
    free(order);
    free(targets);
    free(logp);
    free(dlogp);
    qwen2_free(m);
    seqset_free(&d);
    seqset_free(&de);
    if (text.tok)
        rlhf_text_free(&text);
    tok_free(tok);
    return rc;
}

int rlhf_sft_eval_loss(backend_t *be, const rlhf_sft_opts_t *o, const char *model_dir,
                       const data_pair_t *const *pairs, size_t n, double *loss, err_t *e)
{
    tok_t *tok = NULL;
    rlhf_text_t text = {0};
    seqset_t d = {0};
    qwen2_model_t *m = NULL;
    int rc = open_text(o, model_dir, &tok, &text, e);
    if (!rc && n == 0)
        rc = err_set(e, ERR_INPUT, "sft: no evaluation pairs");
    if (!rc)
        rc = seqset_make(&text, pairs, n, &d, e);
    qwen2_opts_t qo = {.max_batch = o->batch_size, .max_seq = d.maxlen, .heads = QWEN2_HEAD_LM,
                       .role = PREC_MODEL_POLICY};
    if (!rc)
        rc = qwen2_open_dir(model_dir, be, &qo, &m, e);
    if (!rc)
        rc = set_loss(m, &d, o->batch_size, text.eot_id, loss, e);
    qwen2_free(m);
    seqset_free(&d);
    if (text.tok)
        rlhf_text_free(&text);
    tok_free(tok);
    return rc;
}
