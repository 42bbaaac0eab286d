/* data: shared helpers (see data.h). */
#include "data/data.h"

#include <stdlib.h>
#include <string.h>

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

size_t data_count_words(const char *text)
{
    size_t n = 0;
    bool in_word = false;
    for (const unsigned char *p = (const unsigned char *)text; p && *p; p++) {
        if (is_space(*p)) {
            in_word = false;
        } else if (!in_word) {
            in_word = true;
            n++;
        }
    }
    return n;
}

size_t data_count_tokens(const data_token_counter_t *tc, const char *text)
{
    if (tc && tc->fn)
        return tc->fn(tc->ctx, text);
    return data_count_words(text);
}

const char *data_counter_name(const data_token_counter_t *tc)
{
    if (!tc || !tc->fn)
        return DATA_WORDS_COUNTER_NAME;
    return tc->name ? tc->name : "caller";
}

void data_pair_free(data_pair_t *p)
{
    if (!p)
        return;
    free(p->prompt);
    free(p->chosen);
    free(p->rejected);
    memset(p, 0, sizeof *p);
}

bool data_dialogue_prompt_len(const char *dialogue, size_t len, size_t *prompt_len)
{
    const size_t tl = sizeof DATA_ASSISTANT_TAG - 1;
    if (len < tl)
        return false;
    for (size_t i = len - tl + 1; i-- > 0;) {
        if (dialogue[i] == '\n' && !memcmp(dialogue + i, DATA_ASSISTANT_TAG, tl)) {
            *prompt_len = i + tl;
            return true;
        }
    }
    return false;
}

bool data_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t k;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) {
            k = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= k)
            return false;
        for (size_t i = 1; i <= k; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += k + 1;
    }
    return true;
}

int data_lines_push(data_lines_t *l, size_t x, err_t *e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        size_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return err_set(e, ERR_NOMEM, "out of memory growing a list of %zu entries", cap);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return ERR_OK;
}

void data_lines_free(data_lines_t *l)
{
    if (!l)
        return;
    free(l->v);
    memset(l, 0, sizeof *l);
}
