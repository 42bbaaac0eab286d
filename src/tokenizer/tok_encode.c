/* tok_encode: text -> ids, following Hugging Face `tokenizers` step by step.
 *
 *   1. added tokens are found in the raw text (leftmost-longest; single_word, lstrip and
 *      rstrip as AddedVocabulary::find_matches applies them);
 *   2. each piece between them is normalised, then searched again for the added tokens
 *      whose `normalized` flag is set;
 *   3. the remaining pieces go through the pre-tokenizer steps (regex splits, Isolated,
 *      with Oniguruma's rule for empty matches; then ByteLevel);
 *   4. each piece is merged by BPE: bytes -> their tokens, then repeatedly the adjacent
 *      pair of lowest merge rank, leftmost first (tokenizers' Word::merge_all).
 * Pieces are cached per workspace, since natural text repeats its words. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define CACHE_MAX_WORD 256       /* longer pieces are not cached (as in tokenizers) */
#define CACHE_MAX_ENTRIES (1 << 17)

struct tok_sym {
    int32_t id;
    int32_t prev, next;
    int32_t len; /* 0: merged into its left neighbour */
};

struct tok_merge {
    int32_t rank, pos, id;
};

void tok_ids_free(tok_ids_t *ids)
{
    free(ids->ids);
    memset(ids, 0, sizeof *ids);
}

static int ids_reserve(tok_ids_t *ids, size_t extra, err_t *e)
{
    if (ids->n + extra <= ids->cap)
        return ERR_OK;
    size_t nc = ids->cap ? ids->cap * 2 : 64;
    while (nc < ids->n + extra)
        nc *= 2;
    int32_t *p = realloc(ids->ids, nc * sizeof *p);
    if (!p)
        return err_set(e, ERR_NOMEM, "out of memory for %zu token ids", nc);
    ids->ids = p;
    ids->cap = nc;
    return ERR_OK;
}

int tok_ids_push(tok_ids_t *ids, int32_t id, err_t *e)
{
    if (ids_reserve(ids, 1, e))
        return ERR_NOMEM;
    ids->ids[ids->n++] = id;
    return ERR_OK;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, err_t *e)
{
    if (need <= *cap)
        return ERR_OK;
    size_t nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return err_set(e, ERR_NOMEM, "out of memory in the tokenizer workspace");
    *p = np;
    *cap = nc;
    return ERR_OK;
}

/* ---- workspace ----------------------------------------------------------------------- */

int tok_work_new(const tok_t *t, tok_work_t **out, err_t *e)
{
    *out = NULL;
    tok_work_t *w = err_calloc(e, 1, sizeof *w, "tokenizer workspace");
    if (!w)
        return ERR_NOMEM;
    w->t = t;
    w->md = pcre2_match_data_create(t->max_captures + 1, NULL);
    w->mctx = pcre2_match_context_create(NULL);
    w->jstack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!w->md || !w->mctx || !w->jstack || tok_smap_init(&w->cache, 4096, e)) {
        tok_work_free(w);
        return err_set(e, ERR_NOMEM, "out of memory creating a tokenizer workspace");
    }
    pcre2_jit_stack_assign(w->mctx, NULL, w->jstack);
    *out = w;
    return ERR_OK;
}

void tok_work_free(tok_work_t *w)
{
    if (!w)
        return;
    pcre2_match_data_free(w->md);
    pcre2_match_context_free(w->mctx);
    pcre2_jit_stack_free(w->jstack);
    if (w->cache.slots)
        tok_smap_free(&w->cache);
    free(w->cache_ids);
    free(w->nbuf);
    free(w->ubuf);
    free(w->pbuf);
    free(w->sym);
    free(w->heap);
    free(w->wids);
    free(w);
}

/* ---- BPE ----------------------------------------------------------------------------- */

static void heap_push(struct tok_merge *h, size_t *n, struct tok_merge m)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].rank < m.rank || (h[p].rank == m.rank && h[p].pos < m.pos))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static struct tok_merge heap_pop(struct tok_merge *h, size_t *n)
{
    struct tok_merge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n &&
            (h[c + 1].rank < h[c].rank || (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos)))
            c++;
        if (last.rank < h[c].rank || (last.rank == h[c].rank && last.pos <= h[c].pos))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

static int add_sym(tok_work_t *w, size_t *ns, int32_t id, int32_t len, err_t *e)
{
    if (grow((void **)&w->sym, &w->sym_cap, *ns + 1, sizeof *w->sym, e))
        return ERR_NOMEM;
    w->sym[*ns] = (struct tok_sym){id, (int32_t)*ns - 1, (int32_t)*ns + 1, len};
    (*ns)++;
    return ERR_OK;
}

/* One piece of raw bytes -> ids appended to w->wids[0..*nw). */
static int bpe_word(const tok_t *t, tok_work_t *w, const unsigned char *s, size_t n, size_t *nw,
                    err_t *e)
{
    *nw = 0;
    if (t->ignore_merges) {
        /* The whole piece as one vocabulary token, when it is one. */
        if (grow((void **)&w->pbuf, &w->pbuf_cap, n * 2 + 1, 1, e))
            return ERR_NOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            int32_t cp = tok_byte_char(s[i]);
            if (cp < 0x80) {
                w->pbuf[k++] = (char)cp;
            } else {
                w->pbuf[k++] = (char)(0xC0 | (cp >> 6));
                w->pbuf[k++] = (char)(0x80 | (cp & 0x3F));
            }
        }
        const tok_sslot_t *sl = tok_smap_get(&t->vocab, w->pbuf, k);
        if (sl) {
            if (grow((void **)&w->wids, &w->wids_cap, 1, sizeof *w->wids, e))
                return ERR_NOMEM;
            w->wids[(*nw)++] = sl->v1;
            return ERR_OK;
        }
    }
    /* Symbols: one per byte-level character (= per byte). A character missing from the
     * vocabulary takes its <0xXX> tokens (byte_fallback), else the unknown token (fused
     * when fuse_unk), else it is dropped: tokenizers' BPE::merge_word. */
    size_t ns = 0;
    int32_t unk_len = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[s[i]];
        if (id >= 0) {
            if (unk_len && add_sym(w, &ns, t->unk_id, unk_len, e))
                return ERR_NOMEM;
            unk_len = 0;
            if (add_sym(w, &ns, id, 1, e))
                return ERR_NOMEM;
            continue;
        }
        if (t->byte_fallback) {
            /* The fallback bytes are those of the character's UTF-8 form. */
            int32_t cp = tok_byte_char(s[i]);
            unsigned char u[2];
            int k = 1;
            if (cp < 0x80) {
                u[0] = (unsigned char)cp;
            } else {
                u[0] = (unsigned char)(0xC0 | (cp >> 6));
                u[1] = (unsigned char)(0x80 | (cp & 0x3F));
                k = 2;
            }
            bool all = true;
            for (int j = 0; j < k; j++)
                all = all && t->fallback_id[u[j]] >= 0;
            if (all) {
                for (int j = 0; j < k; j++)
                    if (add_sym(w, &ns, t->fallback_id[u[j]], 1, e))
                        return ERR_NOMEM;
                continue;
            }
        }
        if (t->unk_id >= 0) {
            if (unk_len && !t->fuse_unk) {
                if (add_sym(w, &ns, t->unk_id, unk_len, e))
                    return ERR_NOMEM;
                unk_len = 0;
            }
            unk_len += 1;
        }
    }
    if (unk_len && add_sym(w, &ns, t->unk_id, unk_len, e))
        return ERR_NOMEM;
    if (ns)
        w->sym[ns - 1].next = -1;

    if (ns > 1) {
        if (grow((void **)&w->heap, &w->heap_cap, ns * 2 + 8, sizeof *w->heap, e))
            return ERR_NOMEM;
        size_t hn = 0;
        for (size_t i = 0; i + 1 < ns; i++) {
            const tok_pslot_t *m = tok_pmap_get(&t->merges, tok_pair_key(w->sym[i].id, w->sym[i + 1].id));
            if (m)
                heap_push(w->heap, &hn, (struct tok_merge){m->rank, (int32_t)i, m->id});
        }
        while (hn) {
            struct tok_merge top = heap_pop(w->heap, &hn);
            struct tok_sym *cur = &w->sym[top.pos];
            if (cur->len == 0 || cur->next < 0)
                continue;
            struct tok_sym *right = &w->sym[cur->next];
            /* A stale entry: the pair here changed since it was queued. */
            const tok_pslot_t *m = tok_pmap_get(&t->merges, tok_pair_key(cur->id, right->id));
            if (!m || m->id != top.id)
                continue;
            cur->id = top.id;
            cur->len += right->len;
            right->len = 0;
            cur->next = right->next;
            if (cur->next >= 0)
                w->sym[cur->next].prev = top.pos;
            if (grow((void **)&w->heap, &w->heap_cap, hn + 2, sizeof *w->heap, e))
                return ERR_NOMEM;
            cur = &w->sym[top.pos];
            if (cur->prev >= 0) {
                const tok_pslot_t *pm =
                    tok_pmap_get(&t->merges, tok_pair_key(w->sym[cur->prev].id, cur->id));
                if (pm)
                    heap_push(w->heap, &hn, (struct tok_merge){pm->rank, cur->prev, pm->id});
            }
            if (cur->next >= 0) {
                const tok_pslot_t *nm =
                    tok_pmap_get(&t->merges, tok_pair_key(cur->id, w->sym[cur->next].id));
                if (nm)
                    heap_push(w->heap, &hn, (struct tok_merge){nm->rank, top.pos, nm->id});
            }
        }
    }
    if (grow((void **)&w->wids, &w->wids_cap, ns + 1, sizeof *w->wids, e))
        return ERR_NOMEM;
    for (size_t i = 0; i < ns; i++)
        if (w->sym[i].len)
            w->wids[(*nw)++] = w->sym[i].id;
    return ERR_OK;
}

typedef struct enc_ctx {
    const tok_t *t;
    tok_work_t *w;
    tok_ids_t *ids;
} enc_ctx_t;

static int encode_piece(void *vctx, const char *piece, size_t n, err_t *e)
{
    enc_ctx_t *c = vctx;
    tok_work_t *w = c->w;
    bool cacheable = n <= CACHE_MAX_WORD;
    if (cacheable) {
        const tok_sslot_t *hit = tok_smap_get(&w->cache, piece, n);
        if (hit) {
            if (ids_reserve(c->ids, (size_t)hit->v2, e))
                return ERR_NOMEM;
            if (hit->v2) /* a piece of characters the vocabulary lacks has no ids */
                memcpy(c->ids->ids + c->ids->n, w->cache_ids + hit->v1,
                       (size_t)hit->v2 * sizeof(int32_t));
            c->ids->n += (size_t)hit->v2;
            return ERR_OK;
        }
    }
    size_t nw;
    int rc = bpe_word(c->t, w, (const unsigned char *)piece, n, &nw, e);
    if (rc)
        return rc;
    if (ids_reserve(c->ids, nw, e))
        return ERR_NOMEM;
    if (nw) /* no ids yet means no buffer yet: memcpy must not see NULL */
        memcpy(c->ids->ids + c->ids->n, w->wids, nw * sizeof(int32_t));
    c->ids->n += nw;
    if (cacheable) {
        if (w->cache.n >= CACHE_MAX_ENTRIES) {
            tok_smap_clear(&w->cache);
            w->cache_n = 0;
        }
        if (grow((void **)&w->cache_ids, &w->cache_cap, w->cache_n + nw, sizeof *w->cache_ids, e))
            return ERR_NOMEM;
        tok_sslot_t *sl;
        if (tok_smap_put(&w->cache, piece, n, &sl, NULL, e))
            return e->code;
        sl->v1 = (int32_t)w->cache_n;
        sl->v2 = (int32_t)nw;
        if (nw)
            memcpy(w->cache_ids + w->cache_n, w->wids, nw * sizeof(int32_t));
        w->cache_n += nw;
    }
    return ERR_OK;
}

static int encode_added(void *vctx, int32_t id, err_t *e)
{
    enc_ctx_t *c = vctx;
    return tok_ids_push(c->ids, id, e);
}

/* ---- pre-tokenization ---------------------------------------------------------------- */

typedef struct pt_ctx {
    const tok_t *t;
    tok_work_t *w;
    tok_piece_fn piece;
    tok_added_fn added;
    void *ctx;
} pt_ctx_t;

static int regex_fail(const pt_ctx_t *p, int rc, err_t *e)
{
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    return err_set(e, ERR_FAIL, "%s: pre-tokenizer regex failed: %s", p->t->ctx, (const char *)msg);
}

static int run_steps(const pt_ctx_t *p, int k, const char *s, size_t n, err_t *e);

/* Splits s by re (Isolated: matches and the text between them are pieces), calling
 * run_steps(k + 1) on each non-empty piece, or p->piece when `final`. Empty matches follow
 * the onig crate's find_iter: one right after the previous match is skipped by a
 * character. */
static int split_regex(const pt_ctx_t *p, const tok_step_t *st, int k, bool final, const char *s,
                       size_t n, err_t *e)
{
    size_t last_end = 0, prev = 0;
    long long last_match_end = -1;
    int rc;
    while (last_end <= n) {
        if (st->jit)
            rc = pcre2_jit_match(st->re, (PCRE2_SPTR)s, n, last_end, PCRE2_NO_UTF_CHECK, p->w->md,
                                 p->w->mctx);
        else
            rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, last_end, PCRE2_NO_UTF_CHECK, p->w->md,
                             p->w->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return regex_fail(p, rc, e);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->w->md);
        size_t ms = ov[0], me = ov[1];
        if (ms == me && last_match_end == (long long)me) {
            size_t step = 1;
            if (last_end < n) {
                int32_t cp;
                int l = tok_utf8_next((const unsigned char *)s + last_end, n - last_end, &cp);
                step = l ? (size_t)l : 1;
            }
            last_end += step;
            continue;
        }
        last_end = me;
        last_match_end = (long long)me;
        if (prev < ms) {
            rc = final ? p->piece(p->ctx, s + prev, ms - prev, e)
                       : run_steps(p, k + 1, s + prev, ms - prev, e);
            if (rc)
                return rc;
        }
        if (me > ms) {
            rc = final ? p->piece(p->ctx, s + ms, me - ms, e) : run_steps(p, k + 1, s + ms, me - ms, e);
            if (rc)
                return rc;
        }
        prev = me;
    }
    if (prev < n)
        return final ? p->piece(p->ctx, s + prev, n - prev, e) : run_steps(p, k + 1, s + prev, n - prev, e);
    return ERR_OK;
}

static int run_steps(const pt_ctx_t *p, int k, const char *s, size_t n, err_t *e)
{
    if (n == 0)
        return ERR_OK; /* tokenizers drops empty splits after every step */
    const tok_step_t *st = &p->t->steps[k];
    if (!st->byte_level)
        return split_regex(p, st, k, false, s, n, e);
    if (st->add_prefix_space && s[0] != ' ') {
        /* A fresh copy: the workspace buffers are in use further down (BPE scratch). */
        char *copy = malloc(n + 1);
        if (!copy)
            return err_set(e, ERR_NOMEM, "out of memory pre-tokenizing");
        copy[0] = ' ';
        memcpy(copy + 1, s, n);
        int rc = st->re ? split_regex(p, st, k, true, copy, n + 1, e) : p->piece(p->ctx, copy, n + 1, e);
        free(copy);
        return rc;
    }
    return st->re ? split_regex(p, st, k, true, s, n, e) : p->piece(p->ctx, s, n, e);
}

/* ---- added tokens -------------------------------------------------------------------- */

static bool char_is(const pt_ctx_t *p, const pcre2_code *re, const char *s, size_t n)
{
    if (!n)
        return false;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, p->w->md,
                         p->w->mctx);
    return rc > 0;
}

/* Start of the last character of s[0..n). */
static size_t last_char(const char *s, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
        i--;
    return i;
}

static size_t char_len(const char *s, size_t n)
{
    int32_t cp;
    int l = tok_utf8_next((const unsigned char *)s, n, &cp);
    return l ? (size_t)l : 1;
}

static int stage_piece(const pt_ctx_t *p, int stage, const char *s, size_t n, err_t *e);

/* AddedVocabulary::find_matches over s, then the pieces between matches go on. The
 * literal search continues after each match's own end, whatever lstrip/rstrip did. */
static int split_added(const pt_ctx_t *p, int stage, const char *s, size_t n, err_t *e)
{
    const tok_t *t = p->t;
    const tok_matcher_t *m = stage == 0 ? &t->raw_match : &t->norm_match;
    if (m->n == 0)
        return stage_piece(p, stage, s, n, e);
    size_t pos = 0, start_offset = 0;
    int rc;
    while (pos < n) {
        /* Leftmost position where some pattern matches; the longest there. */
        int found = -1;
        size_t ms = 0;
        for (size_t i = pos; i < n && found < 0; i++) {
            unsigned char b = (unsigned char)s[i];
            for (int j = m->first_start[b]; j < m->first_start[b + 1]; j++) {
                int pi = m->by_first[j];
                if (m->plen[pi] <= n - i && !memcmp(s + i, m->pat[pi], m->plen[pi])) {
                    found = pi;
                    ms = i;
                    break;
                }
            }
        }
        if (found < 0)
            break;
        size_t me = ms + m->plen[found];
        pos = me;
        const tok_added_t *a = &t->added[m->tok[found]];
        if (a->single_word) {
            bool start_space = ms == 0 || !char_is(p, t->re_word, s + last_char(s, ms), ms - last_char(s, ms));
            bool stop_space = me == n || !char_is(p, t->re_word, s + me, char_len(s + me, n - me));
            if (!start_space || !stop_space)
                continue;
        }
        size_t start = ms, stop = me;
        if (a->lstrip) {
            size_t ns = ms;
            while (ns > 0) {
                size_t c = last_char(s, ns);
                if (!char_is(p, t->re_space, s + c, ns - c))
                    break;
                ns = c;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t l = char_len(s + stop, n - stop);
                if (!char_is(p, t->re_space, s + stop, l))
                    break;
                stop += l;
            }
        }
        if (start_offset < start && (rc = stage_piece(p, stage, s + start_offset, start - start_offset, e)))
            return rc;
        if ((rc = p->added(p->ctx, a->id, e)))
            return rc;
        start_offset = stop;
    }
    if (start_offset < n)
        return stage_piece(p, stage, s + start_offset, n - start_offset, e);
    return ERR_OK;
}

/* A piece without added tokens: raw pieces get normalised and searched for normalised
 * added tokens; normalised ones go to the pre-tokenizer. */
static int stage_piece(const pt_ctx_t *p, int stage, const char *s, size_t n, err_t *e)
{
    if (n == 0)
        return ERR_OK;
    if (stage == 1)
        return run_steps(p, 0, s, n, e);
    const char *ns;
    size_t nn;
    int rc = tok_normalize(p->t, p->w, s, n, &ns, &nn, e);
    if (rc)
        return rc;
    return split_added(p, 1, ns, nn, e);
}

int tok_pretokenize(const tok_t *t, tok_work_t *w, const char *text, size_t len,
                    tok_piece_fn piece, tok_added_fn added, void *ctx, err_t *e)
{
    size_t bad = tok_utf8_check(text, len);
    if (bad < len)
        return err_set(e, ERR_INPUT, "text is not valid UTF-8 at byte %zu", bad);
    pt_ctx_t p = {t, w, piece, added, ctx};
    return split_added(&p, 0, text, len, e);
}

int tok_encode(const tok_t *t, tok_work_t *w, const char *text, size_t len, tok_ids_t *ids,
               err_t *e)
{
    tok_work_t *own = NULL;
    if (!w) {
        int rc = tok_work_new(t, &own, e);
        if (rc)
            return rc;
        w = own;
    }
    enc_ctx_t c = {t, w, ids};
    int rc = tok_pretokenize(t, w, text, len, encode_piece, encode_added, &c, e);
    tok_work_free(own);
    return rc;
}
