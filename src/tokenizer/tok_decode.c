/* tok_decode: ids -> text (Hugging Face's ByteLevel decoder), and the ChatML template.
 *
 * Decoding joins every token's bytes first and repairs UTF-8 once at the end, as
 * String::from_utf8_lossy does in tokenizers: a character split over several tokens
 * comes back whole, and bytes that never form a character become U+FFFD, one per
 * maximal invalid subpart. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

int tok_decode(const tok_t *t, const int32_t *ids, size_t n, bool skip_special, char **out,
               size_t *out_len, err_t *e)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->id_flags[id] & TOK_ID_USED))
            return err_set(e, ERR_INPUT, "ids[%zu] = %d is not a token id of %s", i, id, t->ctx);
        total += t->dec_len[id] + 1;
    }
    unsigned char *raw = err_malloc(e, total, "decoded bytes");
    if (!raw)
        return ERR_NOMEM;
    size_t k = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->id_flags[id] & TOK_ID_SPECIAL))
            continue;
        if (!t->byte_level_decoder && !first)
            raw[k++] = ' '; /* no decoder: tokenizers joins the tokens with spaces */
        memcpy(raw + k, t->dec + t->dec_off[id], t->dec_len[id]);
        k += t->dec_len[id];
        first = false;
    }
    /* Each invalid byte (at most) becomes the 3 bytes of U+FFFD. */
    char *res = err_malloc(e, k * 3 + 1, "decoded text");
    if (!res) {
        free(raw);
        return ERR_NOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < k;) {
        /* ASCII runs eight bytes at a time. */
        while (i + 8 <= k) {
            uint64_t v;
            memcpy(&v, raw + i, 8);
            if (v & 0x8080808080808080ull)
                break;
            memcpy(res + o, &v, 8);
            i += 8;
            o += 8;
        }
        if (i >= k)
            break;
        if (raw[i] < 0x80) {
            res[o++] = (char)raw[i++];
            continue;
        }
        int32_t cp;
        int l = tok_utf8_next(raw + i, k - i, &cp);
        if (l) {
            memcpy(res + o, raw + i, (size_t)l);
            o += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(res + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += (size_t)tok_utf8_invalid_len(raw + i, k - i);
        }
    }
    res[o] = 0;
    free(raw);
    *out = res;
    if (out_len)
        *out_len = o;
    return ERR_OK;
}

int tok_chatml_render(const tok_msg_t *msgs, size_t n, bool add_generation_prompt, char **out,
                      size_t *out_len, err_t *e)
{
    static const char start[] = "<|im_start|>", end[] = "<|im_end|>\n";
    static const char gen[] = "<|im_start|>assistant\n";
    *out = NULL;
    size_t total = sizeof gen;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return err_set(e, ERR_INPUT, "chat message %zu: role and content are required", i);
        total += strlen(start) + strlen(msgs[i].role) + 1 + strlen(msgs[i].content) + strlen(end);
    }
    char *s = err_malloc(e, total, "chat text");
    if (!s)
        return ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t rl = strlen(msgs[i].role), cl = strlen(msgs[i].content);
        memcpy(s + k, start, strlen(start));
        k += strlen(start);
        memcpy(s + k, msgs[i].role, rl);
        k += rl;
        s[k++] = '\n';
        memcpy(s + k, msgs[i].content, cl);
        k += cl;
        memcpy(s + k, end, strlen(end));
        k += strlen(end);
    }
    if (add_generation_prompt) {
        memcpy(s + k, gen, strlen(gen));
        k += strlen(gen);
    }
    s[k] = 0;
    *out = s;
    if (out_len)
        *out_len = k;
    return ERR_OK;
}

int tok_encode_chat(const tok_t *t, tok_work_t *w, const tok_msg_t *msgs, size_t n,
                    bool add_generation_prompt, tok_ids_t *ids, err_t *e)
{
    char *text;
    size_t len;
    int rc = tok_chatml_render(msgs, n, add_generation_prompt, &text, &len, e);
    if (rc)
        return rc;
    rc = tok_encode(t, w, text, len, ids, e);
    free(text);
    return rc;
}
