/* tok_load: reads a Hugging Face tokenizer.json into a tok_t.
 *
 * What Hugging Face `tokenizers` does on load is mirrored where it decides ids: added
 * tokens get their ids the way AddedVocabulary::add_tokens assigns them (an existing
 * vocabulary entry keeps its id; a new token takes the next free id), a later duplicate
 * merge overrides an earlier one, and "#version" lines in string merges are skipped.
 * Anything that would change ids and that we do not implement (other model types,
 * dropout, word prefixes/suffixes, non-byte-level pre-tokenizers, post-processors that
 * add tokens) is refused with an error naming the field, never ignored. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "util/fs.h"
#include "util/json.h"

#define TOK_MAX_FILE (1ull << 30)
#define TOK_MAX_ID (1 << 26) /* bounds the per-id tables */

enum { DEC_NONE = 0, DEC_BYTE_LEVEL = 1 };

typedef struct added_in {
    const char *content;
    size_t len;
    bool special, lstrip, rstrip, single_word, normalized;
} added_in_t;

static int bad(err_t *e, const char *ctx, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad(err_t *e, const char *ctx, const char *field, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(e, ERR_INPUT, "%s: field \"%s\": %s", ctx, field, msg);
}

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* Optional bool with a default; wrong type is an error. */
static int opt_bool(const cJSON *o, const char *key, const char *ctx, const char *field,
                    bool dflt, bool *out, err_t *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v))
        return ERR_OK;
    if (!cJSON_IsBool(v))
        return bad(e, ctx, field, "expected true or false");
    *out = cJSON_IsTrue(v);
    return ERR_OK;
}

/* ---- normalizer ---------------------------------------------------------------------- */

static int norm_form(const char *type)
{
    if (!type)
        return -1;
    if (!strcmp(type, "NFC"))
        return TOK_NORM_NFC;
    if (!strcmp(type, "NFD"))
        return TOK_NORM_NFD;
    if (!strcmp(type, "NFKC"))
        return TOK_NORM_NFKC;
    if (!strcmp(type, "NFKD"))
        return TOK_NORM_NFKD;
    return -1;
}

static int load_normalizer(tok_t *t, const cJSON *n, err_t *e)
{
    t->norm = TOK_NORM_NONE;
    if (!n || cJSON_IsNull(n))
        return ERR_OK;
    if (!cJSON_IsObject(n))
        return bad(e, t->ctx, "normalizer", "expected an object or null");
    const char *type = type_of(n);
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return bad(e, t->ctx, "normalizer.normalizers", "expected an array");
        int k = cJSON_GetArraySize(list);
        if (k == 0)
            return ERR_OK;
        if (k > 1)
            return bad(e, t->ctx, "normalizer.normalizers",
                       "%d normalizers; only one of NFC, NFD, NFKC, NFKD is supported", k);
        n = cJSON_GetArrayItem(list, 0);
        type = cJSON_IsObject(n) ? type_of(n) : NULL;
    }
    int f = norm_form(type);
    if (f < 0)
        return bad(e, t->ctx, "normalizer.type", "\"%s\" is not supported (NFC, NFD, NFKC, NFKD)",
                   type ? type : "(none)");
    t->norm = f;
    return ERR_OK;
}

/* ---- pre-tokenizer ------------------------------------------------------------------- */

static int load_split(tok_t *t, const cJSON *p, const char *field, err_t *e)
{
    char f[128];
    if (t->n_steps >= TOK_MAX_STEPS - 1)
        return bad(e, t->ctx, field, "more than %d split steps", TOK_MAX_STEPS - 1);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
    snprintf(f, sizeof f, "%s.pattern", field);
    if (!cJSON_IsObject(pat))
        return bad(e, t->ctx, f, "expected {\"Regex\": ...} or {\"String\": ...}");
    const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
    const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pat, "String");
    if (!cJSON_IsString(rx) && !cJSON_IsString(lit))
        return bad(e, t->ctx, f, "expected {\"Regex\": ...} or {\"String\": ...}");
    const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
    snprintf(f, sizeof f, "%s.behavior", field);
    if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated"))
        return bad(e, t->ctx, f, "\"%s\" is not supported (only \"Isolated\")",
                   cJSON_IsString(beh) ? beh->valuestring : "(missing)");
    bool invert;
    snprintf(f, sizeof f, "%s.invert", field);
    if (opt_bool(p, "invert", t->ctx, f, false, &invert, e))
        return ERR_INPUT;
    if (invert)
        return bad(e, t->ctx, f, "true is not supported");
    tok_step_t *s = &t->steps[t->n_steps];
    char what[300];
    snprintf(what, sizeof what, "%s: field \"%s.pattern\"", t->ctx, field);
    const char *src = cJSON_IsString(rx) ? rx->valuestring : lit->valuestring;
    if (!*src)
        return bad(e, t->ctx, f, "empty pattern");
    int rc = tok_regex_compile(src, !cJSON_IsString(rx), what, &s->re, &s->jit, e);
    if (rc)
        return rc;
    s->byte_level = false;
    t->n_steps++;
    return ERR_OK;
}

static int load_byte_level(tok_t *t, const cJSON *p, const char *field, err_t *e)
{
    char f[128];
    tok_step_t *s = &t->steps[t->n_steps];
    bool use_regex;
    snprintf(f, sizeof f, "%s.add_prefix_space", field);
    if (opt_bool(p, "add_prefix_space", t->ctx, f, true, &s->add_prefix_space, e))
        return ERR_INPUT;
    snprintf(f, sizeof f, "%s.use_regex", field);
    if (opt_bool(p, "use_regex", t->ctx, f, true, &use_regex, e))
        return ERR_INPUT;
    s->byte_level = true;
    if (use_regex) {
        char what[300];
        snprintf(what, sizeof what, "%s: ByteLevel regex", t->ctx);
        int rc = tok_regex_compile(TOK_GPT2_PATTERN, false, what, &s->re, &s->jit, e);
        if (rc)
            return rc;
    }
    t->n_steps++;
    return ERR_OK;
}

static int load_pre_tokenizer(tok_t *t, const cJSON *p, err_t *e)
{
    if (!cJSON_IsObject(p))
        return bad(e, t->ctx, "pre_tokenizer",
                   "missing; byte-level BPE needs a ByteLevel pre-tokenizer");
    const char *type = type_of(p);
    if (!type)
        return bad(e, t->ctx, "pre_tokenizer.type", "missing");
    if (!strcmp(type, "ByteLevel"))
        return load_byte_level(t, p, "pre_tokenizer", e);
    if (strcmp(type, "Sequence"))
        return bad(e, t->ctx, "pre_tokenizer.type",
                   "\"%s\" is not supported (ByteLevel, or a Sequence of Split steps ending "
                   "in ByteLevel)",
                   type);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    if (!cJSON_IsArray(list))
        return bad(e, t->ctx, "pre_tokenizer.pretokenizers", "expected an array");
    int k = cJSON_GetArraySize(list), i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        char field[64];
        snprintf(field, sizeof field, "pre_tokenizer.pretokenizers[%d]", i);
        const char *ty = cJSON_IsObject(item) ? type_of(item) : NULL;
        int rc;
        if (ty && !strcmp(ty, "Split") && i < k - 1) {
            rc = load_split(t, item, field, e);
        } else if (ty && !strcmp(ty, "ByteLevel") && i == k - 1) {
            rc = load_byte_level(t, item, field, e);
        } else {
            char f2[80];
            snprintf(f2, sizeof f2, "%s.type", field);
            rc = bad(e, t->ctx, f2,
                     "\"%s\" is not supported here (Split steps, then one final ByteLevel)",
                     ty ? ty : "(missing)");
        }
        if (rc)
            return rc;
        i++;
    }
    if (t->n_steps == 0 || !t->steps[t->n_steps - 1].byte_level)
        return bad(e, t->ctx, "pre_tokenizer.pretokenizers",
                   "must end with a ByteLevel step (only byte-level BPE is supported)");
    return ERR_OK;
}

/* post_processor: only ones that add no ids. */
static int check_post_processor(tok_t *t, const cJSON *p, err_t *e)
{
    if (!p || cJSON_IsNull(p))
        return ERR_OK;
    const char *type = cJSON_IsObject(p) ? type_of(p) : NULL;
    if (type && !strcmp(type, "ByteLevel"))
        return ERR_OK;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        const cJSON *item;
        int i = 0;
        cJSON_ArrayForEach(item, list)
        {
            const char *ty = cJSON_IsObject(item) ? type_of(item) : NULL;
            if (!ty || strcmp(ty, "ByteLevel")) {
                char f[80];
                snprintf(f, sizeof f, "post_processor.processors[%d].type", i);
                return bad(e, t->ctx, f, "\"%s\" is not supported (it may add ids)",
                           ty ? ty : "(missing)");
            }
            i++;
        }
        return ERR_OK;
    }
    return bad(e, t->ctx, "post_processor.type",
               "\"%s\" is not supported (it may add ids; only ByteLevel)", type ? type : "(missing)");
}

static int load_decoder(tok_t *t, const cJSON *d, int *kind, err_t *e)
{
    *kind = DEC_NONE;
    if (!d || cJSON_IsNull(d))
        return ERR_OK;
    const char *type = cJSON_IsObject(d) ? type_of(d) : NULL;
    if (type && !strcmp(type, "ByteLevel")) {
        *kind = DEC_BYTE_LEVEL;
        return ERR_OK;
    }
    return bad(e, t->ctx, "decoder.type", "\"%s\" is not supported (ByteLevel or null)",
               type ? type : "(missing)");
}

/* ---- model --------------------------------------------------------------------------- */

static int utf8_encode(int32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int32_t vocab_id(const tok_t *t, const char *s, size_t n)
{
    const tok_sslot_t *sl = tok_smap_get(&t->vocab, s, n);
    return sl ? sl->v1 : -1;
}

static int merge_token(tok_t *t, const char *s, size_t n, int i, const char *which, int32_t *id,
                       err_t *e)
{
    *id = vocab_id(t, s, n);
    if (*id >= 0)
        return ERR_OK;
    char f[64];
    snprintf(f, sizeof f, "model.merges[%d]", i);
    return bad(e, t->ctx, f, "%s \"%.*s\" is not in model.vocab", which, (int)(n > 200 ? 200 : n),
               s);
}

static int load_model(tok_t *t, const cJSON *m, int32_t *max_id, err_t *e)
{
    if (!cJSON_IsObject(m))
        return bad(e, t->ctx, "model", "missing or not an object");
    const char *type = type_of(m);
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(m, "merges");
    if (type && strcmp(type, "BPE"))
        return bad(e, t->ctx, "model.type", "\"%s\" is not supported (only byte-level \"BPE\")",
                   type);
    if (!type && !merges)
        return bad(e, t->ctx, "model.type", "missing, and no merges: not a BPE model");
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (drop && !cJSON_IsNull(drop) && !(cJSON_IsNumber(drop) && drop->valuedouble == 0.0))
        return bad(e, t->ctx, "model.dropout",
                   "dropout makes encoding random; only null or 0 is supported");
    const char *fixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, fixes[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0])) {
            char f[64];
            snprintf(f, sizeof f, "model.%s", fixes[i]);
            return bad(e, t->ctx, f, "only null or \"\" is supported (byte-level BPE)");
        }
    }
    if (opt_bool(m, "fuse_unk", t->ctx, "model.fuse_unk", false, &t->fuse_unk, e) ||
        opt_bool(m, "byte_fallback", t->ctx, "model.byte_fallback", false, &t->byte_fallback, e) ||
        opt_bool(m, "ignore_merges", t->ctx, "model.ignore_merges", false, &t->ignore_merges, e))
        return ERR_INPUT;

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(m, "vocab");
    if (!cJSON_IsObject(vocab))
        return bad(e, t->ctx, "model.vocab", "missing or not an object");
    int nv = cJSON_GetArraySize(vocab);
    if (tok_smap_init(&t->vocab, (size_t)nv, e))
        return ERR_NOMEM;
    const cJSON *it;
    *max_id = -1;
    cJSON_ArrayForEach(it, vocab)
    {
        const char *key = it->string;
        double d = it->valuedouble;
        if (!cJSON_IsNumber(it) || d < 0 || d >= TOK_MAX_ID || d != (double)(int32_t)d)
            return err_set(e, ERR_INPUT,
                           "%s: field \"model.vocab\": token \"%.200s\": expected an id in "
                           "0..%d",
                           t->ctx, key, TOK_MAX_ID - 1);
        tok_sslot_t *sl;
        bool fresh;
        if (tok_smap_put(&t->vocab, key, strlen(key), &sl, &fresh, e))
            return e->code;
        if (!fresh)
            return err_set(e, ERR_INPUT, "%s: field \"model.vocab\": token \"%.200s\" appears twice",
                           t->ctx, key);
        sl->v1 = (int32_t)d;
        if (sl->v1 > *max_id)
            *max_id = sl->v1;
    }
    t->model_vocab_len = (int32_t)t->vocab.n;

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(m, "unk_token");
    t->unk_id = -1;
    if (unk && !cJSON_IsNull(unk)) {
        if (!cJSON_IsString(unk))
            return bad(e, t->ctx, "model.unk_token", "expected a string or null");
        t->unk_id = vocab_id(t, unk->valuestring, strlen(unk->valuestring));
        if (t->unk_id < 0)
            return bad(e, t->ctx, "model.unk_token", "\"%.200s\" is not in model.vocab",
                       unk->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        char u[4];
        int k = utf8_encode(tok_byte_char((uint8_t)b), u);
        t->byte_id[b] = vocab_id(t, u, (size_t)k);
        char fb[8];
        snprintf(fb, sizeof fb, "<0x%02X>", b);
        t->fallback_id[b] = vocab_id(t, fb, strlen(fb));
    }

    if (!cJSON_IsArray(merges))
        return bad(e, t->ctx, "model.merges", "missing or not an array");
    int nm = cJSON_GetArraySize(merges);
    if (tok_pmap_init(&t->merges, (size_t)nm, e))
        return ERR_NOMEM;
    char *buf = NULL;
    size_t bcap = 0;
    int rank = 0, i = -1;
    cJSON_ArrayForEach(it, merges)
    {
        i++;
        const char *a, *b;
        size_t al, bl;
        char f[64];
        snprintf(f, sizeof f, "model.merges[%d]", i);
        if (cJSON_IsString(it)) {
            const char *s = it->valuestring;
            /* tokenizers' convert_merges_to_hashmap: skip "#version", then exactly one
             * space. */
            if (!strncmp(s, "#version", 8))
                continue;
            const char *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                free(buf);
                return bad(e, t->ctx, f, "\"%.200s\" is not two tokens separated by one space", s);
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl = strlen(b);
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            al = strlen(a);
            bl = strlen(b);
        } else {
            free(buf);
            return bad(e, t->ctx, f, "expected \"a b\" or [\"a\", \"b\"]");
        }
        int32_t ia, ib, inew;
        if (merge_token(t, a, al, i, "token", &ia, e) || merge_token(t, b, bl, i, "token", &ib, e)) {
            free(buf);
            return ERR_INPUT;
        }
        if (al + bl > bcap) {
            bcap = (al + bl) * 2 + 64;
            char *nb = realloc(buf, bcap);
            if (!nb) {
                free(buf);
                return err_set(e, ERR_NOMEM, "out of memory reading merges");
            }
            buf = nb;
        }
        memcpy(buf, a, al);
        memcpy(buf + al, b, bl);
        if (merge_token(t, buf, al + bl, i, "merged token", &inew, e)) {
            free(buf);
            return ERR_INPUT;
        }
        if (tok_pmap_put(&t->merges, tok_pair_key(ia, ib), rank, inew, e)) {
            free(buf);
            return ERR_NOMEM;
        }
        rank++;
    }
    free(buf);
    return ERR_OK;
}

/* ---- added tokens -------------------------------------------------------------------- */

static int read_added(tok_t *t, const cJSON *list, added_in_t **out, int *n, err_t *e)
{
    *out = NULL;
    *n = 0;
    if (!list || cJSON_IsNull(list))
        return ERR_OK;
    if (!cJSON_IsArray(list))
        return bad(e, t->ctx, "added_tokens", "expected an array");
    int k = cJSON_GetArraySize(list);
    added_in_t *a = err_calloc(e, (size_t)k, sizeof *a, "added tokens");
    if (!a)
        return ERR_NOMEM;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, list)
    {
        char f[64], g[96];
        snprintf(f, sizeof f, "added_tokens[%d]", i);
        if (!cJSON_IsObject(it)) {
            free(a);
            return bad(e, t->ctx, f, "expected an object");
        }
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(c)) {
            free(a);
            snprintf(g, sizeof g, "%s.content", f);
            return bad(e, t->ctx, g, "missing or not a string");
        }
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= TOK_MAX_ID) {
            free(a);
            snprintf(g, sizeof g, "%s.id", f);
            return bad(e, t->ctx, g, "expected an id in 0..%d", TOK_MAX_ID - 1);
        }
        a[i].content = c->valuestring;
        a[i].len = strlen(c->valuestring);
        struct {
            const char *key;
            bool dflt;
            bool *dst;
        } flags[] = {{"special", false, &a[i].special},   {"lstrip", false, &a[i].lstrip},
                     {"rstrip", false, &a[i].rstrip},     {"single_word", false, &a[i].single_word},
                     {"normalized", true, &a[i].normalized}};
        for (size_t j = 0; j < sizeof flags / sizeof flags[0]; j++) {
            snprintf(g, sizeof g, "%s.%s", f, flags[j].key);
            if (opt_bool(it, flags[j].key, t->ctx, g, flags[j].dflt, flags[j].dst, e)) {
                free(a);
                return ERR_INPUT;
            }
        }
        i++;
    }
    *out = a;
    *n = k;
    return ERR_OK;
}

static bool same_added(const added_in_t *x, const added_in_t *y)
{
    return x->len == y->len && !memcmp(x->content, y->content, x->len) &&
           x->special == y->special && x->lstrip == y->lstrip && x->rstrip == y->rstrip &&
           x->single_word == y->single_word && x->normalized == y->normalized;
}

static int build_matcher(tok_matcher_t *m, const tok_t *t, bool normalized, err_t *e)
{
    memset(m, 0, sizeof *m);
    int n = 0;
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized && (normalized ? t->added[i].nlen : t->added[i].len))
            n++;
    m->pat = err_calloc(e, (size_t)n + 1, sizeof *m->pat, "added-token matcher");
    m->plen = err_calloc(e, (size_t)n + 1, sizeof *m->plen, "added-token matcher");
    m->tok = err_calloc(e, (size_t)n + 1, sizeof *m->tok, "added-token matcher");
    m->by_first = err_calloc(e, (size_t)n + 1, sizeof *m->by_first, "added-token matcher");
    if (!m->pat || !m->plen || !m->tok || !m->by_first)
        return ERR_NOMEM;
    for (int i = 0; i < t->n_added; i++) {
        const tok_added_t *a = &t->added[i];
        size_t len = normalized ? a->nlen : a->len;
        if (a->normalized != normalized || !len)
            continue;
        m->pat[m->n] = normalized ? a->ncontent : a->content;
        m->plen[m->n] = len;
        m->tok[m->n] = i;
        m->n++;
    }
    /* Counting sort by first byte; within a byte, longest first (stable: earlier pattern
     * first among equal lengths, like Aho-Corasick's pattern order). */
    int count[257] = {0};
    for (int i = 0; i < m->n; i++)
        count[(unsigned char)m->pat[i][0] + 1]++;
    for (int b = 0; b < 256; b++)
        count[b + 1] += count[b];
    memcpy(m->first_start, count, sizeof m->first_start);
    int fill[256];
    memcpy(fill, count, sizeof fill);
    for (int i = 0; i < m->n; i++)
        m->by_first[fill[(unsigned char)m->pat[i][0]]++] = i;
    for (int b = 0; b < 256; b++) {
        int lo = m->first_start[b], hi = m->first_start[b + 1];
        for (int x = lo + 1; x < hi; x++) {
            int v = m->by_first[x], y = x;
            while (y > lo && m->plen[m->by_first[y - 1]] < m->plen[v]) {
                m->by_first[y] = m->by_first[y - 1];
                y--;
            }
            m->by_first[y] = v;
        }
    }
    return ERR_OK;
}

static void free_matcher(tok_matcher_t *m)
{
    free(m->pat);
    free(m->plen);
    free(m->tok);
    free(m->by_first);
}

static int id_key(int32_t id, char out[4])
{
    memcpy(out, &id, 4);
    return 4;
}

/* AddedVocabulary::add_tokens, in the order Hugging Face runs it on load. */
static int load_added(tok_t *t, const added_in_t *in, int n, int32_t *max_id, err_t *e)
{
    int rc = ERR_OK;
    tok_smap_t special_set = {0}, by_id = {0};
    int *order = NULL, n_order = 0, *plain = NULL, n_plain = 0;
    if (tok_smap_init(&special_set, (size_t)n, e) || tok_smap_init(&t->added_map, (size_t)n, e) ||
        tok_smap_init(&by_id, (size_t)n, e))
        goto fail;
    order = err_calloc(e, (size_t)n + 1, sizeof *order, "added tokens");
    plain = err_calloc(e, (size_t)n + 1, sizeof *plain, "added tokens");
    if (!order || !plain)
        goto fail;
    for (int i = 0; i < n; i++) {
        if (!in[i].special || !in[i].len)
            continue;
        tok_sslot_t *sl;
        bool fresh;
        if (tok_smap_put(&special_set, in[i].content, in[i].len, &sl, &fresh, e))
            goto fail;
        if (fresh)
            order[n_order++] = i;
    }
    /* added_map: content -> id (v1); by_id: id -> index of the defining entry (v1). */
    for (int i = 0; i < n; i++) {
        if (!in[i].len)
            continue;
        const tok_sslot_t *have = tok_smap_get(&t->added_map, in[i].content, in[i].len);
        if (have) {
            char k[4];
            const tok_sslot_t *d = tok_smap_get(&by_id, k, (size_t)id_key(have->v1, k));
            if (d && same_added(&in[d->v1], &in[i]))
                continue;
        }
        int32_t id;
        if (have) {
            id = have->v1;
        } else if ((id = vocab_id(t, in[i].content, in[i].len)) < 0) {
            int32_t mx = -1;
            for (size_t s = 0; s < t->added_map.cap; s++)
                if (t->added_map.slots[s].hash && t->added_map.slots[s].v1 > mx)
                    mx = t->added_map.slots[s].v1;
            int32_t vs = t->model_vocab_len;
            id = mx < 0 ? vs : (mx >= vs || vs == 0) ? mx + 1 : vs;
            if (id >= TOK_MAX_ID) {
                err_set(e, ERR_INPUT, "%s: field \"added_tokens[%d]\": id beyond %d", t->ctx, i,
                        TOK_MAX_ID - 1);
                goto fail;
            }
        }
        tok_sslot_t *sl;
        if (tok_smap_put(&t->added_map, in[i].content, in[i].len, &sl, NULL, e))
            goto fail;
        sl->v1 = id;
        char k[4];
        if (tok_smap_put(&by_id, k, (size_t)id_key(id, k), &sl, NULL, e))
            goto fail;
        sl->v1 = i;
        if (!tok_smap_get(&special_set, in[i].content, in[i].len))
            plain[n_plain++] = i;
        if (id > *max_id)
            *max_id = id;
    }
    /* Matching order: special tokens, then the others (refresh_added_tokens). Each entry
     * is matched by its own `normalized` flag, with the flags of its id's latest
     * definition. */
    t->n_added = n_order + n_plain;
    t->added = err_calloc(e, (size_t)t->n_added + 1, sizeof *t->added, "added tokens");
    if (!t->added)
        goto fail;
    for (int j = 0; j < t->n_added; j++) {
        const added_in_t *src = &in[j < n_order ? order[j] : plain[j - n_order]];
        tok_added_t *a = &t->added[j];
        a->id = tok_smap_get(&t->added_map, src->content, src->len)->v1;
        char k[4];
        const added_in_t *def = &in[tok_smap_get(&by_id, k, (size_t)id_key(a->id, k))->v1];
        a->content = malloc(src->len + 1);
        if (!a->content) {
            err_set(e, ERR_NOMEM, "out of memory for added tokens");
            goto fail;
        }
        memcpy(a->content, src->content, src->len);
        a->content[src->len] = 0;
        a->len = src->len;
        a->normalized = src->normalized;
        a->special = tok_smap_get(&special_set, src->content, src->len) != NULL;
        a->lstrip = def->lstrip;
        a->rstrip = def->rstrip;
        a->single_word = def->single_word;
        if (a->lstrip || a->rstrip || a->single_word)
            t->need_word_re = true;
        if (a->normalized && t->norm != TOK_NORM_NONE) {
            if (tok_normalize_alloc(t->norm, a->content, a->len, &a->ncontent, &a->nlen, e))
                goto fail;
        } else {
            a->ncontent = a->content;
            a->nlen = a->len;
        }
    }
    if (build_matcher(&t->raw_match, t, false, e) || build_matcher(&t->norm_match, t, true, e))
        goto fail;
    goto done;
fail:
    rc = e && e->code ? e->code : ERR_NOMEM;
done:
    tok_smap_free(&by_id);
    tok_smap_free(&special_set);
    free(order);
    free(plain);
    return rc;
}

/* ---- id tables ----------------------------------------------------------------------- */

static int build_id_tables(tok_t *t, int dec_kind, err_t *e)
{
    size_t n = (size_t)t->n_ids;
    t->id_text = err_calloc(e, n + 1, sizeof *t->id_text, "id table");
    t->id_text_len = err_calloc(e, n + 1, sizeof *t->id_text_len, "id table");
    t->dec_off = err_calloc(e, n + 1, sizeof *t->dec_off, "id table");
    t->dec_len = err_calloc(e, n + 1, sizeof *t->dec_len, "id table");
    t->id_flags = err_calloc(e, n + 1, 1, "id table");
    if (!t->id_text || !t->id_text_len || !t->dec_off || !t->dec_len || !t->id_flags)
        return ERR_NOMEM;
    /* Model tokens first; an added token with the same id overrides (it wins in
     * id_to_token). Several vocab entries naming one id: the first in the file wins
     * (Hugging Face's choice depends on hash order). */
    for (size_t s = 0; s < t->vocab.cap; s++) {
        const tok_sslot_t *sl = &t->vocab.slots[s];
        if (!sl->hash)
            continue;
        int32_t id = sl->v1;
        if (t->id_flags[id] && t->id_text[id] < tok_smap_key(&t->vocab, sl))
            continue;
        t->id_text[id] = tok_smap_key(&t->vocab, sl);
        t->id_text_len[id] = sl->len;
        t->id_flags[id] = TOK_ID_USED;
    }
    /* Hugging Face gives an added token back in its normalised form (normalized tokens
     * are stored normalised), and decoding skips a token when that text is the content
     * of a special token. */
    tok_smap_t special = {0};
    if (tok_smap_init(&special, (size_t)t->n_added, e))
        return ERR_NOMEM;
    for (int i = 0; i < t->n_added; i++) {
        const tok_added_t *a = &t->added[i];
        tok_sslot_t *sl;
        if (a->special && tok_smap_put(&special, a->content, a->len, &sl, NULL, e)) {
            tok_smap_free(&special);
            return ERR_NOMEM;
        }
    }
    for (int i = 0; i < t->n_added; i++) {
        const tok_added_t *a = &t->added[i];
        t->id_text[a->id] = a->ncontent;
        t->id_text_len[a->id] = (uint32_t)a->nlen;
        t->id_flags[a->id] = TOK_ID_USED | TOK_ID_ADDED;
    }
    for (size_t id = 0; id < n; id++)
        if ((t->id_flags[id] & TOK_ID_USED) &&
            tok_smap_get(&special, t->id_text[id], t->id_text_len[id]))
            t->id_flags[id] |= TOK_ID_SPECIAL;
    tok_smap_free(&special);
    size_t total = 0;
    for (size_t id = 0; id < n; id++)
        total += t->id_text_len[id];
    t->dec = err_malloc(e, total + 1, "decode table");
    if (!t->dec)
        return ERR_NOMEM;
    size_t off = 0;
    for (size_t id = 0; id < n; id++) {
        const unsigned char *s = (const unsigned char *)t->id_text[id];
        size_t len = t->id_text_len[id], k = 0, o = off;
        bool all = dec_kind == DEC_BYTE_LEVEL;
        while (all && k < len) {
            int32_t cp;
            int step = tok_utf8_next(s + k, len - k, &cp);
            int b = step ? tok_char_byte(cp) : -1;
            if (b < 0)
                all = false;
            else
                t->dec[o++] = (char)b;
            k += step ? (size_t)step : 1;
        }
        if (!all) {
            /* ByteLevel decoder: a token with a character outside the table is kept as its
             * own UTF-8 text. */
            memcpy(t->dec + off, s, len);
            o = off + len;
        }
        t->dec_off[id] = (uint32_t)off;
        t->dec_len[id] = (uint32_t)(o - off);
        off = o;
    }
    return ERR_OK;
}

/* ---- entry points -------------------------------------------------------------------- */

static int compile_word_res(tok_t *t, err_t *e)
{
    bool jit;
    char what[300];
    snprintf(what, sizeof what, "%s: added-token word class", t->ctx);
    /* Rust regex's \w and \s, which tokenizers uses for single_word, lstrip and rstrip. */
    if (tok_regex_compile("[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]", false, what,
                          &t->re_word, &jit, e) ||
        tok_regex_compile("\\p{White_Space}", false, what, &t->re_space, &jit, e))
        return e->code;
    return ERR_OK;
}

int tok_load_json(const char *text, size_t len, const char *ctx, tok_t **out, err_t *e)
{
    *out = NULL;
    size_t bad_at = tok_utf8_check(text, len);
    if (bad_at < len)
        return err_set(e, ERR_INPUT, "%s: not valid UTF-8 at byte %zu", ctx, bad_at);
    cJSON *root = NULL;
    int rc = json_parse(text, len, ctx, &root, e);
    if (rc)
        return rc;
    tok_t *t = err_calloc(e, 1, sizeof *t, "tokenizer");
    added_in_t *ain = NULL;
    int n_ain = 0;
    if (!t) {
        cJSON_Delete(root);
        return ERR_NOMEM;
    }
    t->ctx = strdup(ctx);
    t->unk_id = -1;
    int dec_kind = DEC_NONE;
    int32_t max_id = -1;
    if (!t->ctx) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = err_set(e, ERR_INPUT, "%s: expected a JSON object at the top", ctx);
        goto out;
    }
    if ((rc = load_model(t, cJSON_GetObjectItemCaseSensitive(root, "model"), &max_id, e)) ||
        (rc = load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), e)) ||
        (rc = load_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), e)) ||
        (rc = check_post_processor(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"),
                                   e)) ||
        (rc = load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), &dec_kind, e)) ||
        (rc = read_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &ain, &n_ain,
                         e)) ||
        (rc = load_added(t, ain, n_ain, &max_id, e)))
        goto out;
    /* Checked last, so a file that is unsupported for another reason says that first. */
    if (t->vocab.n == 0) {
        rc = bad(e, ctx, "model.vocab", "empty: every text would encode to no ids (a "
                 "byte-level BPE vocabulary holds at least its byte tokens)");
        goto out;
    }
    /* Per-id tables are dense; ids far beyond the number of tokens would make a tiny file
     * allocate gigabytes. */
    if ((int64_t)max_id >= 2 * ((int64_t)t->vocab.n + t->n_added) + 65536) {
        rc = err_set(e, ERR_INPUT,
                     "%s: token ids are too sparse (largest id %d for %zu tokens); ids up to "
                     "twice the token count plus 65536 are supported",
                     ctx, max_id, t->vocab.n + (size_t)t->n_added);
        goto out;
    }
    t->n_ids = max_id + 1;
    t->byte_level_decoder = dec_kind == DEC_BYTE_LEVEL;
    if ((rc = build_id_tables(t, dec_kind, e)))
        goto out;
    if (t->need_word_re && (rc = compile_word_res(t, e)))
        goto out;
    uint32_t caps = 0;
    for (int i = 0; i < t->n_steps; i++) {
        uint32_t c = 0;
        if (t->steps[i].re)
            pcre2_pattern_info(t->steps[i].re, PCRE2_INFO_CAPTURECOUNT, &c);
        if (c > caps)
            caps = c;
    }
    t->max_captures = caps;
out:
    free(ain);
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return ERR_OK;
}

int tok_load(const char *path, tok_t **out, err_t *e)
{
    char *text;
    size_t len;
    *out = NULL;
    int rc = fs_read_all(path, TOK_MAX_FILE, &text, &len, e);
    if (rc)
        return rc;
    rc = tok_load_json(text, len, path, out, e);
    free(text);
    return rc;
}

void tok_free(tok_t *t)
{
    if (!t)
        return;
    tok_smap_free(&t->vocab);
    tok_pmap_free(&t->merges);
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].ncontent != t->added[i].content)
            free(t->added[i].ncontent);
        free(t->added[i].content);
    }
    free(t->added);
    tok_smap_free(&t->added_map);
    free_matcher(&t->raw_match);
    free_matcher(&t->norm_match);
    for (int i = 0; i < t->n_steps; i++)
        pcre2_code_free(t->steps[i].re);
    pcre2_code_free(t->re_word);
    pcre2_code_free(t->re_space);
    free(t->id_text);
    free(t->id_text_len);
    free(t->dec_off);
    free(t->dec_len);
    free(t->dec);
    free(t->id_flags);
    free(t->ctx);
    free(t);
}

int32_t tok_vocab_size(const tok_t *t)
{
    return t->n_ids;
}

int32_t tok_token_id(const tok_t *t, const char *token)
{
    size_t n = strlen(token);
    const tok_sslot_t *a = t->added_map.slots ? tok_smap_get(&t->added_map, token, n) : NULL;
    if (a)
        return a->v1;
    return vocab_id(t, token, n);
}

const char *tok_id_token(const tok_t *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || !(t->id_flags[id] & TOK_ID_USED))
        return NULL;
    if (len)
        *len = t->id_text_len[id];
    return t->id_text[id];
}

bool tok_is_special(const tok_t *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->id_flags[id] & TOK_ID_SPECIAL);
}
