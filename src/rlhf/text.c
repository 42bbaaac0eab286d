/* text: see text.h. */
#include "rlhf/text.h"

#include <stdlib.h>
#include <string.h>

static const char *const template_names[] = {"raw", "chatml", NULL};

const opt_enum_t rlhf_template_enum = {template_names, 0, NULL, NULL};

int rlhf_template_from_name(const char *name, rlhf_template_t *out)
{
    for (int i = 0; i < 2; i++)
        if (!strcmp(name, template_names[i])) {
            *out = (rlhf_template_t)i;
            return 0;
        }
    return -1;
}

const char *rlhf_template_name(rlhf_template_t t)
{
    return (unsigned)t < 2 ? template_names[t] : "?";
}

int rlhf_text_init(rlhf_text_t *t, const tok_t *tok, rlhf_template_t tmpl, int max_prompt,
                   int max_response, err_t *e)
{
    memset(t, 0, sizeof *t);
    const char *eot = tmpl == RLHF_TEMPLATE_CHATML ? "<|im_end|>" : "<|endoftext|>";
    t->eot_id = tok_token_id(tok, eot);
    if (t->eot_id < 0)
        return err_set(e, ERR_INPUT, "tokenizer has no %s token, needed to end a %s turn", eot,
                       rlhf_template_name(tmpl));
    if (max_prompt < 1 || max_response < 1)
        return err_set(e, ERR_INPUT, "max prompt and response lengths must be at least 1");
    t->tok = tok;
    t->tmpl = tmpl;
    t->max_prompt = max_prompt;
    t->max_response = max_response;
    return tok_work_new(tok, &t->work, e);
}

void rlhf_text_free(rlhf_text_t *t)
{
    tok_work_free(t->work);
    memset(t, 0, sizeof *t);
}

void rlhf_seq_free(rlhf_seq_t *s)
{
    free(s->ids);
    memset(s, 0, sizeof *s);
}

/* Splits an HH dialogue into ChatML messages: each "\n\nHuman:" turn is a user message,
 * each "\n\nAssistant:" turn an assistant message; the final empty assistant turn (the
 * prompt's tail) becomes the generation prompt. */
static int encode_chatml_prompt(rlhf_text_t *t, const char *prompt, tok_ids_t *ids, err_t *e)
{
    const char *tags[2] = {DATA_HUMAN_TAG, DATA_ASSISTANT_TAG};
    const char *roles[2] = {"user", "assistant"};
    size_t cap = 8, n = 0;
    tok_msg_t *msgs = malloc(cap * sizeof *msgs);
    char **owned = malloc(cap * sizeof *owned);
    int rc = ERR_OK;
    if (!msgs || !owned) {
        rc = err_set(e, ERR_NOMEM, "out of memory rendering a prompt");
        goto done;
    }
    const char *p = prompt;
    while (*p) {
        int which = -1;
        const char *at = NULL;
        for (int k = 0; k < 2; k++) {
            const char *q = strstr(p, tags[k]);
            if (q && (!at || q < at))
                at = q, which = k;
        }
        if (!at)
            break;
        const char *body = at + strlen(tags[which]);
        const char *next = NULL;
        for (int k = 0; k < 2; k++) {
            const char *q = strstr(body, tags[k]);
            if (q && (!next || q < next))
                next = q;
        }
        size_t len = next ? (size_t)(next - body) : strlen(body);
        while (len && (*body == ' '))
            body++, len--;
        if (!next && which == 1 && len == 0)
            break; /* the trailing "Assistant:" of the prompt: the generation prompt */
        if (n == cap) {
            cap *= 2;
            tok_msg_t *nm = realloc(msgs, cap * sizeof *msgs);
            char **no = realloc(owned, cap * sizeof *owned);
            if (nm)
                msgs = nm;
            if (no)
                owned = no;
            if (!nm || !no) {
                rc = err_set(e, ERR_NOMEM, "out of memory rendering a prompt");
                goto done;
            }
        }
        owned[n] = strndup(body, len);
        if (!owned[n]) {
            rc = err_set(e, ERR_NOMEM, "out of memory rendering a prompt");
            goto done;
        }
        msgs[n].role = roles[which];
        msgs[n].content = owned[n];
        n++;
        p = next ? next : body + len;
    }
    if (n == 0) { /* no HH tags: the whole prompt is one user message */
        msgs[0].role = "user";
        msgs[0].content = prompt;
        owned[0] = NULL;
        n = 1;
    }
    rc = tok_encode_chat(t->tok, t->work, msgs, n, true, ids, e);
done:
    for (size_t i = 0; owned && i < n; i++)
        free(owned[i]);
    free(owned);
    free(msgs);
    return rc;
}

static int encode_prompt_ids(rlhf_text_t *t, const char *prompt, tok_ids_t *ids, err_t *e)
{
    if (t->tmpl == RLHF_TEMPLATE_CHATML)
        return encode_chatml_prompt(t, prompt, ids, e);
    return tok_encode(t->tok, t->work, prompt, strlen(prompt), ids, e);
}

static int encode_response_ids(rlhf_text_t *t, const char *response, tok_ids_t *ids, err_t *e)
{
    if (t->tmpl == RLHF_TEMPLATE_CHATML)
        return tok_encode(t->tok, t->work, response, strlen(response), ids, e);
    /* raw: the response follows "Assistant:" after one space, as in the source text */
    size_t n = strlen(response);
    char *s = malloc(n + 2);
    if (!s)
        return err_set(e, ERR_NOMEM, "out of memory encoding a response");
    s[0] = ' ';
    memcpy(s + 1, response, n + 1);
    int rc = tok_encode(t->tok, t->work, s, n + 1, ids, e);
    free(s);
    return rc;
}

/* Prompt ids truncated from the left to max_prompt, copied into a fresh sequence with
 * room for `extra` more ids. */
static int start_seq(rlhf_text_t *t, const tok_ids_t *p, size_t extra, rlhf_seq_t *out, err_t *e)
{
    size_t keep = p->n > (size_t)t->max_prompt ? (size_t)t->max_prompt : p->n;
    out->ids = malloc((keep + extra + 1) * sizeof *out->ids);
    if (!out->ids)
        return err_set(e, ERR_NOMEM, "out of memory for a token sequence");
    memcpy(out->ids, p->ids + (p->n - keep), keep * sizeof *out->ids);
    out->n = out->prompt_len = (int)keep;
    return ERR_OK;
}

int rlhf_encode_prompt(rlhf_text_t *t, const char *prompt, rlhf_seq_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    tok_ids_t p = {0};
    int rc = encode_prompt_ids(t, prompt, &p, e);
    if (!rc && p.n == 0)
        rc = err_set(e, ERR_INPUT, "empty prompt");
    if (!rc)
        rc = start_seq(t, &p, 0, out, e);
    tok_ids_free(&p);
    return rc;
}

int rlhf_encode_pair(rlhf_text_t *t, const char *prompt, const char *response, rlhf_seq_t *out,
                     err_t *e)
{
    memset(out, 0, sizeof *out);
    tok_ids_t p = {0}, r = {0};
    int rc = encode_prompt_ids(t, prompt, &p, e);
    if (!rc && p.n == 0)
        rc = err_set(e, ERR_INPUT, "empty prompt");
    if (!rc && *response)
        rc = encode_response_ids(t, response, &r, e);
    if (!rc)
        rc = start_seq(t, &p, (size_t)t->max_response + 1, out, e);
    if (!rc) {
        size_t keep = r.n > (size_t)t->max_response ? (size_t)t->max_response : r.n;
        memcpy(out->ids + out->n, r.ids, keep * sizeof *out->ids);
        out->n += (int)keep;
        out->ended = r.n <= (size_t)t->max_response;
        if (out->ended)
            out->ids[out->n++] = t->eot_id;
    }
    tok_ids_free(&p);
    tok_ids_free(&r);
    if (rc)
        rlhf_seq_free(out);
    return rc;
}

int rlhf_decode_response(rlhf_text_t *t, const int32_t *ids, int n, char **out, err_t *e)
{
    size_t len, k = 0;
    int32_t *known = malloc((size_t)(n > 0 ? n : 1) * sizeof *known);
    if (!known)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        if (tok_id_token(t->tok, ids[i], &len))
            known[k++] = ids[i];
    int rc = tok_decode(t->tok, known, k, true, out, &len, e);
    free(known);
    return rc;
}

static size_t count_prompt_or_response(void *ctx, const char *text)
{
    rlhf_text_t *t = ctx;
    tok_ids_t ids = {0};
    err_t e = ERR_INIT;
    /* The data layer asks about prompts (ending in the assistant tag) and responses. */
    size_t n = strlen(text), tl = strlen(DATA_ASSISTANT_TAG);
    int is_prompt = n >= tl && !strcmp(text + n - tl, DATA_ASSISTANT_TAG);
    int rc = is_prompt ? encode_prompt_ids(t, text, &ids, &e) : encode_response_ids(t, text, &ids, &e);
    size_t count = rc ? (size_t)-1 / 2 : ids.n; /* unencodable text counts as over-long */
    tok_ids_free(&ids);
    return count;
}

data_token_counter_t rlhf_text_counter(rlhf_text_t *t)
{
    data_token_counter_t c = {count_prompt_or_response, t, "tokenizer"};
    return c;
}

void rlhf_batch_free(rlhf_batch_t *b)
{
    free(b->ids);
    free(b->len);
    free(b->mask);
    memset(b, 0, sizeof *b);
}

int rlhf_batch_make(const rlhf_seq_t *const *seqs, int B, int32_t pad_id, rlhf_batch_t *out,
                    err_t *e)
{
    memset(out, 0, sizeof *out);
    int T = 1;
    for (int b = 0; b < B; b++)
        if (seqs[b]->n > T)
            T = seqs[b]->n;
    out->B = B;
    out->T = T;
    out->ids = malloc((size_t)B * T * sizeof *out->ids);
    out->len = malloc((size_t)B * sizeof *out->len);
    out->mask = calloc((size_t)B * T, sizeof *out->mask);
    if (!out->ids || !out->len || !out->mask) {
        rlhf_batch_free(out);
        return err_set(e, ERR_NOMEM, "out of memory for a %d x %d batch", B, T);
    }
    for (int b = 0; b < B; b++) {
        const rlhf_seq_t *s = seqs[b];
        int32_t *row = out->ids + (size_t)b * T;
        memcpy(row, s->ids, (size_t)s->n * sizeof *row);
        for (int t = s->n; t < T; t++)
            row[t] = pad_id;
        out->len[b] = s->n;
        /* Position t predicts token t+1; train where t+1 is a response token. */
        for (int t = s->prompt_len - 1; t + 1 < s->n; t++)
            if (t >= 0)
                out->mask[(size_t)b * T + t] = 1;
    }
    return ERR_OK;
}
