/* tok_text: Unicode normalisation (utf8proc) and the pre-tokenizer regex (PCRE2).
 *
 * Normalisation works on segments: ASCII is unchanged by every normal form and never
 * combines with what precedes it, so only runs of non-ASCII characters (with the one
 * ASCII character before them, which a combining mark may compose with) go through
 * utf8proc. On mostly-English text this skips nearly all the work.
 *
 * Hugging Face compiles split patterns with Oniguruma; PCRE2 reads almost the same
 * syntax, but a few escapes mean other things there. tok_regex_compile rewrites those
 * (\s \S \w \W \d \D) into explicit Unicode properties and refuses the ones with no
 * faithful translation (\h \H), so a pattern never silently changes meaning. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tok_internal.h"
#include "util/strbuf.h"

const char TOK_GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

const char TOK_QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static utf8proc_option_t form_options(int form)
{
    switch (form) {
    case TOK_NORM_NFC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case TOK_NORM_NFD:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case TOK_NORM_NFKC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    default:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
}

static int grow(void **buf, size_t *cap, size_t need, size_t elem, err_t *e)
{
    if (need <= *cap)
        return ERR_OK;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    void *nb = realloc(*buf, nc * elem);
    if (!nb)
        return err_set(e, ERR_NOMEM, "out of memory normalising text (%zu bytes)", need * elem);
    *buf = nb;
    *cap = nc;
    return ERR_OK;
}

/* Normalises one segment, appending UTF-8 to (*out, *olen, *ocap); *ubuf is UTF-32
 * scratch. */
static int norm_segment(int form, const char *s, size_t n, int32_t **ubuf, size_t *ucap,
                        char **out, size_t *olen, size_t *ocap, err_t *e)
{
    utf8proc_option_t opt = form_options(form);
    for (;;) {
        utf8proc_ssize_t k = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n,
                                                *ubuf, (utf8proc_ssize_t)*ucap, opt);
        if (k < 0)
            return err_set(e, ERR_INPUT, "normalising text: %s", utf8proc_errmsg(k));
        if ((size_t)k > *ucap) {
            if (grow((void **)ubuf, ucap, (size_t)k, sizeof **ubuf, e))
                return ERR_NOMEM;
            continue;
        }
        utf8proc_ssize_t m = utf8proc_reencode(*ubuf, k, opt);
        if (m < 0)
            return err_set(e, ERR_INPUT, "normalising text: %s", utf8proc_errmsg(m));
        if (grow((void **)out, ocap, *olen + (size_t)m + 1, 1, e))
            return ERR_NOMEM;
        memcpy(*out + *olen, *ubuf, (size_t)m);
        *olen += (size_t)m;
        return ERR_OK;
    }
}

static int normalize_into(int form, const char *s, size_t n, int32_t **ubuf, size_t *ucap,
                          char **out, size_t *olen, size_t *ocap, err_t *e)
{
    *olen = 0;
    if (grow((void **)out, ocap, n + 1, 1, e))
        return ERR_NOMEM;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (unsigned char)s[j] < 0x80)
            j++;
        if (j == n) {
            memcpy(*out + *olen, s + i, n - i);
            *olen += n - i;
            break;
        }
        size_t k = j;
        while (k < n && (unsigned char)s[k] >= 0x80)
            k++;
        size_t seg = j > i ? j - 1 : j; /* the ASCII character a mark may compose with */
        if (grow((void **)out, ocap, *olen + (seg - i) + 1, 1, e))
            return ERR_NOMEM;
        memcpy(*out + *olen, s + i, seg - i);
        *olen += seg - i;
        if (norm_segment(form, s + seg, k - seg, ubuf, ucap, out, olen, ocap, e))
            return e ? e->code : ERR_FAIL;
        i = k;
    }
    (*out)[*olen] = 0;
    return ERR_OK;
}

int tok_normalize(const tok_t *t, tok_work_t *w, const char *s, size_t n, const char **out,
                  size_t *out_len, err_t *e)
{
    *out = s;
    *out_len = n;
    if (t->norm == TOK_NORM_NONE)
        return ERR_OK;
    size_t i = 0;
    while (i < n && (unsigned char)s[i] < 0x80)
        i++;
    if (i == n)
        return ERR_OK;
    size_t olen;
    int rc = normalize_into(t->norm, s, n, &w->ubuf, &w->ubuf_cap, &w->nbuf, &olen,
                            &w->nbuf_cap, e);
    if (rc)
        return rc;
    *out = w->nbuf;
    *out_len = olen;
    return ERR_OK;
}

int tok_normalize_alloc(int form, const char *s, size_t n, char **out, size_t *out_len, err_t *e)
{
    *out = NULL;
    *out_len = 0;
    int32_t *ubuf = NULL;
    size_t ucap = 0, ocap = 0;
    int rc;
    if (form == TOK_NORM_NONE) {
        rc = grow((void **)out, &ocap, n + 1, 1, e);
        if (!rc) {
            memcpy(*out, s, n);
            (*out)[n] = 0;
            *out_len = n;
        }
    } else {
        rc = normalize_into(form, s, n, &ubuf, &ucap, out, out_len, &ocap, e);
    }
    free(ubuf);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- regex --------------------------------------------------------------------------- */

/* Oniguruma (UTF-8, as Hugging Face builds it): \s is White_Space, \w is
 * Letter|Mark|Decimal_Number|Connector_Punctuation, \d is Decimal_Number, \h is a hex
 * digit. PCRE2's \s also takes U+180E and its \w lacks marks, hence the rewrite. */
static int translate(const char *pat, const char *what, char **out, err_t *e)
{
    strbuf_t b = {0};
    bool in_class = false, class_start = false;
    size_t n = strlen(pat);
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[++i];
            switch (d) {
            case 's':
                strbuf_puts(&b, "\\p{White_Space}");
                break;
            case 'S':
                strbuf_puts(&b, "\\P{White_Space}");
                break;
            case 'w':
                strbuf_puts(&b, in_class ? "\\p{L}\\p{M}\\p{Nd}\\p{Pc}" : "[\\p{L}\\p{M}\\p{Nd}\\p{Pc}]");
                break;
            case 'W':
                if (in_class) {
                    free(b.p);
                    return err_set(e, ERR_INPUT,
                                   "%s: \\W inside a character class is not supported", what);
                }
                strbuf_puts(&b, "[^\\p{L}\\p{M}\\p{Nd}\\p{Pc}]");
                break;
            case 'd':
                strbuf_puts(&b, "\\p{Nd}");
                break;
            case 'D':
                strbuf_puts(&b, "\\P{Nd}");
                break;
            case 'h':
            case 'H':
                free(b.p);
                return err_set(e, ERR_INPUT,
                               "%s: \\%c (Oniguruma's hex digit class) is not supported", what,
                               d);
            default: {
                char two[2] = {'\\', d};
                strbuf_add(&b, two, 2);
            }
            }
            class_start = false;
            continue;
        }
        if (in_class) {
            if (c == ']' && !class_start) {
                in_class = false;
            } else if (c == '[' && !(i + 1 < n && pat[i + 1] == ':')) {
                /* Oniguruma nests classes ([a-z&&[^aeiou]]); PCRE2 reads '[' literally. */
                free(b.p);
                return err_set(e, ERR_INPUT,
                               "%s: nested character classes are not supported (at offset %zu)",
                               what, i);
            }
            class_start = false;
            strbuf_add(&b, &c, 1);
            continue;
        }
        strbuf_add(&b, &c, 1);
        if (c == '[') {
            in_class = true;
            class_start = true;
            if (i + 1 < n && pat[i + 1] == '^') {
                strbuf_add(&b, "^", 1);
                i++;
            }
        }
    }
    if (b.oom || !b.p) {
        free(b.p);
        if (b.oom)
            return err_set(e, ERR_NOMEM, "out of memory translating %s", what);
        b.p = strdup("");
        if (!b.p)
            return err_set(e, ERR_NOMEM, "out of memory translating %s", what);
    }
    *out = b.p;
    return ERR_OK;
}

int tok_regex_compile(const char *pattern, bool literal, const char *what, pcre2_code **out,
                      bool *jit, err_t *e)
{
    *out = NULL;
    *jit = false;
    char *tr = NULL;
    if (!literal) {
        int rc = translate(pattern, what, &tr, e);
        if (rc)
            return rc;
    }
    int ecode;
    PCRE2_SIZE eoff;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    const char *src = literal ? pattern : tr;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, opts, &ecode, &eoff,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        err_set(e, ERR_INPUT, "%s: the pattern does not compile (%s at offset %zu of \"%s\")",
                what, (const char *)msg, (size_t)eoff, src);
        free(tr);
        return ERR_INPUT;
    }
    free(tr);
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    *out = re;
    return ERR_OK;
}
