/* evalset: building the held-out token set and reading its source (evalset.h). */
#include "profile/evalset.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"
#include "util/json.h"

static const char *const score_names[] = {"all", "response", NULL};
static const opt_enum_t score_enum = {score_names, 0, NULL, NULL};

int profile_score_from_name(const char *name, profile_score_t *out)
{
    for (int i = 0; name && score_names[i]; i++)
        if (!strcmp(name, score_names[i])) {
            *out = (profile_score_t)i;
            return 0;
        }
    return -1;
}

const char *profile_score_name(profile_score_t s)
{
    return s == PROFILE_SCORE_RESPONSE ? "response" : "all";
}

/* ---- options ---------------------------------------------------------------------------- */

#define EO(f) offsetof(profile_eval_opts_t, f)
static const opt_field_t eval_fields[] = {
    OPT_KEY("eval_tokens", OPT_LONG, EO(tokens), "4096", -1e15, 1e15,
            "scored predictions in the evaluation set (0 or less: all)", .flag = "tokens"),
    OPT_KEY("score", OPT_ENUM, EO(score), "all", 0, 0,
            "which predictions count: every next token, or the response's", .en = &score_enum,
            .flag = "score"),
    OPT_KEY("template", OPT_ENUM, EO(tmpl), "raw", 0, 0, "how pairs become ids",
            .en = &rlhf_template_enum, .flag = "template"),
    OPT_KEY("max_prompt_tokens", OPT_INT, EO(max_prompt_tokens),
            OPT_STR(DATA_DEFAULT_MAX_PROMPT_TOKENS), 1, 1 << 20, "prompt ids kept, the last ones",
            .flag = "max-prompt-tokens"),
    OPT_KEY("max_response_tokens", OPT_INT, EO(max_response_tokens),
            OPT_STR(DATA_DEFAULT_MAX_RESPONSE_TOKENS), 1, 1 << 20, "response ids kept",
            .flag = "max-response-tokens"),
    OPT_KEY("batch_tokens", OPT_LONG, EO(batch_tokens), "4096", 1, 1e15,
            "rows x length per forward", .flag = "batch-tokens"),
    OPT_KEY("split", OPT_STRING, EO(split), "eval_prompts", 0, 0, "split of a split record",
            .cap = sizeof(((profile_eval_opts_t *)0)->split), .flag = "split"),
};

OPT_CHECK(eval_check, profile_eval_opts_t, profile_eval_opts_check)

const opt_table_t profile_eval_opts_table =
    OPT_TABLE("evaluation set", profile_eval_opts_t, eval_fields, eval_check);

int profile_eval_opts_check(const profile_eval_opts_t *o, const char *ctx, err_t *e)
{
    if (o->max_prompt_tokens < 1 || o->max_response_tokens < 1)
        return err_set(e, ERR_INPUT, "%s: fields \"max_prompt_tokens\"/\"max_response_tokens\": "
                       "expected >= 1", ctx);
    if (o->batch_tokens < 1)
        return err_set(e, ERR_INPUT, "%s: field \"batch_tokens\": expected >= 1", ctx);
    if (data_split_from_name(o->split) < 0)
        return err_set(e, ERR_INPUT, "%s: field \"split\": unknown split \"%s\"", ctx, o->split);
    return ERR_OK;
}

/* ---- the set -------------------------------------------------------------------------------- */

void profile_evalset_free(profile_evalset_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->nbatch; i++) {
        free(s->batches[i].ids);
        free(s->batches[i].len);
        free(s->batches[i].targets);
    }
    free(s->batches);
    memset(s, 0, sizeof *s);
}

/* FNV-1a over bytes, continued from h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

typedef struct pick {
    int seq;   /* index into the input */
    int n;     /* tokens kept (the last sequence may be cut) */
} pick_t;

static int pick_cmp(const void *a, const void *b)
{
    const pick_t *x = a, *y = b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

int profile_evalset_build(const profile_seq_t *seqs, int nseq, long tokens, long batch_tokens,
                          profile_evalset_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    out->requested = tokens;
    pick_t *pk = err_calloc(e, nseq > 0 ? (size_t)nseq : 1, sizeof *pk, "evaluation sequences");
    if (!pk)
        return e->code;
    int np = 0;
    long total = 0;
    for (int i = 0; i < nseq && (tokens <= 0 || total < tokens); i++) {
        const profile_seq_t *s = &seqs[i];
        int first = s->first < 0 ? 0 : s->first;
        long avail = (long)s->n - 1 - first;   /* predictions at t = first .. n-2 */
        if (avail <= 0)
            continue;
        int n = s->n;
        if (tokens > 0 && total + avail > tokens) {
            avail = tokens - total;
            n = first + (int)avail + 1;
        }
        pk[np].seq = i;
        pk[np].n = n;
        np++;
        total += avail;
    }
    if (total == 0) {
        free(pk);
        return err_set(e, ERR_INPUT, "evaluation set: no token to score (%d sequences, none "
                       "with a scored position)", nseq);
    }
    qsort(pk, (size_t)np, sizeof *pk, pick_cmp);

    /* count batches: rows while rows x longest (the first, as sorted) fits batch_tokens */
    int nb = 0;
    for (int i = 0; i < np;) {
        long T = pk[i].n;
        int rows = batch_tokens > 0 ? (int)(batch_tokens / T) : np;
        if (rows < 1)
            rows = 1;
        i += rows;
        nb++;
    }
    out->batches = err_calloc(e, (size_t)nb, sizeof *out->batches, "evaluation batches");
    if (!out->batches) {
        free(pk);
        return e->code;
    }
    uint64_t h = 0xCBF29CE484222325ull;
    for (int i = 0; i < np;) {
        int T = pk[i].n;
        int rows = batch_tokens > 0 ? (int)(batch_tokens / T) : np;
        if (rows < 1)
            rows = 1;
        if (rows > np - i)
            rows = np - i;
        profile_eval_batch_t *bt = &out->batches[out->nbatch++];
        size_t cells = (size_t)rows * T;
        bt->ids = calloc(cells, sizeof *bt->ids);
        bt->targets = malloc(cells * sizeof *bt->targets);
        bt->len = calloc((size_t)rows, sizeof *bt->len);
        if (!bt->ids || !bt->targets || !bt->len) {
            free(pk);
            profile_evalset_free(out);
            return err_set(e, ERR_NOMEM, "out of memory building an evaluation batch");
        }
        for (size_t c = 0; c < cells; c++)
            bt->targets[c] = -1;
        for (int r = 0; r < rows; r++) {
            const profile_seq_t *s = &seqs[pk[i + r].seq];
            int n = pk[i + r].n, first = s->first < 0 ? 0 : s->first;
            int32_t *row = bt->ids + (size_t)r * T, *tg = bt->targets + (size_t)r * T;
            memcpy(row, s->ids, (size_t)n * sizeof *row);
            bt->len[r] = n;
            for (int t = first; t + 1 < n; t++) {
                tg[t] = row[t + 1];
                bt->scored++;
            }
        }
        bt->b.B = rows;
        bt->b.T = T;
        bt->b.ids = bt->ids;
        bt->b.len = bt->len;
        bt->b.pad_left = NULL;
        h = fnv(h, &rows, sizeof rows);
        h = fnv(h, &T, sizeof T);
        h = fnv(h, bt->ids, cells * sizeof *bt->ids);
        h = fnv(h, bt->len, (size_t)rows * sizeof *bt->len);
        h = fnv(h, bt->targets, cells * sizeof *bt->targets);
        if (rows > out->max_rows)
            out->max_rows = rows;
        if (T > out->max_seq)
            out->max_seq = T;
        if ((long)cells > out->max_batch_tokens)
            out->max_batch_tokens = (long)cells;
        out->tokens += bt->scored;
        i += rows;
    }
    out->nseq = np;
    out->fingerprint = h;
    free(pk);
    return ERR_OK;
}

int profile_evalset_from_pairs(rlhf_text_t *t, const data_pair_t *const *pairs, size_t n,
                               profile_score_t score, long tokens, long batch_tokens,
                               profile_evalset_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    rlhf_seq_t *enc = err_calloc(e, n ? n : 1, sizeof *enc, "tokenized pairs");
    profile_seq_t *seqs = err_calloc(e, n ? n : 1, sizeof *seqs, "evaluation sequences");
    int rc = ERR_OK, ns = 0;
    long total = 0;
    if (!enc || !seqs) {
        rc = e->code;
        goto done;
    }
    for (size_t i = 0; i < n && (tokens <= 0 || total < tokens); i++) {
        if ((rc = rlhf_encode_pair(t, pairs[i]->prompt, pairs[i]->chosen, &enc[ns], e))) {
            err_prefix(e, "evaluation pair %zu (line %zu)", i, pairs[i]->line);
            goto done;
        }
        seqs[ns].ids = enc[ns].ids;
        seqs[ns].n = enc[ns].n;
        seqs[ns].first = score == PROFILE_SCORE_RESPONSE ? enc[ns].prompt_len - 1 : 0;
        long avail = (long)seqs[ns].n - 1 - (seqs[ns].first < 0 ? 0 : seqs[ns].first);
        if (avail > 0)
            total += avail;
        ns++;
    }
    rc = profile_evalset_build(seqs, ns, tokens, batch_tokens, out, e);
done:
    if (enc)
        for (int i = 0; i < ns; i++)
            rlhf_seq_free(&enc[i]);
    free(enc);
    free(seqs);
    return rc;
}

/* ---- sources ------------------------------------------------------------------------- */

void profile_eval_source_free(profile_eval_source_t *s)
{
    if (!s)
        return;
    free(s->pairs);
    data_hh_free(&s->hh);
    if (s->is_split)
        data_split_free(&s->rec);
    memset(s, 0, sizeof *s);
}

/* A split record is a single JSON object whose "format" is "mxrlhf-data-split"; a JSONL
 * file is not one JSON document (or, with one line, has no such field). */
static bool is_split_record(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    unsigned char mg[2] = {0};
    size_t got = fread(mg, 1, 2, f);
    fclose(f);
    if (got == 2 && mg[0] == 0x1f && mg[1] == 0x8b)
        return false;
    cJSON *root = NULL;
    err_t e = ERR_INIT;
    if (json_load_file(path, (size_t)1 << 30, &root, &e))
        return false;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    bool yes = cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "mxrlhf-data-split");
    cJSON_Delete(root);
    return yes;
}

int profile_eval_source_load(const char *path, const char *split, profile_eval_source_t *out,
                             err_t *e)
{
    memset(out, 0, sizeof *out);
    int rc;
    if (!fs_exists(path))
        return err_set(e, ERR_INPUT, "%s: evaluation data not found (expected an HH-RLHF "
                       ".jsonl(.gz) file or a split record)", path);
    if (!is_split_record(path)) {
        if ((rc = data_hh_read(path, NULL, &out->hh, e)))
            return rc;
        out->n = out->hh.npairs;
        out->pairs = err_calloc(e, out->n ? out->n : 1, sizeof *out->pairs, "pairs");
        if (!out->pairs) {
            profile_eval_source_free(out);
            return e->code;
        }
        for (size_t i = 0; i < out->n; i++)
            out->pairs[i] = &out->hh.pairs[i];
        snprintf(out->desc, sizeof out->desc, "%s (%zu pairs, file order)", path, out->n);
        return ERR_OK;
    }
    out->is_split = true;
    if ((rc = data_split_read(path, &out->rec, e)))
        return rc;
    int sp = data_split_from_name(split ? split : "eval_prompts");
    if (sp < 0) {
        profile_eval_source_free(out);
        return err_set(e, ERR_INPUT, "unknown split \"%s\" (expected rm_train, rm_eval, "
                       "judge_train, ppo_prompts or eval_prompts)", split);
    }
    /* the record names its source as it was given: try that, then beside the record */
    const char *src = out->rec.source_path;
    char *alt = NULL;
    if (!fs_exists(src) && src[0] != '/') {
        char *dup = strdup(path);
        if (dup) {
            alt = fs_join(dirname(dup), src);
            free(dup);
        }
        if (alt && fs_exists(alt))
            src = alt;
    }
    data_hh_opts_t ho = {.skip_bad = out->rec.skip_bad};
    rc = data_hh_read(src, &ho, &out->hh, e);
    if (!rc)
        rc = data_split_pairs(&out->hh, &out->rec, sp, &out->pairs, &out->n, e);
    if (!rc)
        snprintf(out->desc, sizeof out->desc, "split %s of %s (source %s, %zu pairs)",
                 data_split_name(sp), path, src, out->n);
    free(alt);
    if (rc) {
        err_prefix(e, "%s", path);
        profile_eval_source_free(out);
    }
    return rc;
}
