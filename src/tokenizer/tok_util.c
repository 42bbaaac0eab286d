/* tok_util: the tokenizer's small building blocks: a byte-string hash, two open-addressed
 * hash maps, UTF-8 validation and decoding, and GPT-2's byte <-> character table. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

/* A multiply-xorshift hash over 8-byte words: fast on the short keys tokens are, and
 * good enough that linear probing stays short. Never returns 0 (the empty marker). */
uint64_t tok_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ ((uint64_t)n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94D049BB133111EBull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return h ? h : 1;
}

static size_t pow2_at_least(size_t x)
{
    size_t c = 16;
    while (c < x)
        c <<= 1;
    return c;
}

/* ---- byte string map ----------------------------------------------------------------- */

int tok_smap_init(tok_smap_t *m, size_t expect, err_t *e)
{
    memset(m, 0, sizeof *m);
    m->cap = pow2_at_least(expect * 2 + 1);
    m->slots = err_calloc(e, m->cap, sizeof *m->slots, "tokenizer hash map");
    if (!m->slots)
        return ERR_NOMEM;
    m->acap = 4096;
    m->arena = err_malloc(e, m->acap, "tokenizer hash map keys");
    if (!m->arena) {
        free(m->slots);
        m->slots = NULL;
        return ERR_NOMEM;
    }
    return ERR_OK;
}

void tok_smap_free(tok_smap_t *m)
{
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof *m);
}

void tok_smap_clear(tok_smap_t *m)
{
    memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->n = 0;
    m->alen = 0;
}

const tok_sslot_t *tok_smap_get(const tok_smap_t *m, const void *key, size_t len)
{
    uint64_t h = tok_hash_bytes(key, len);
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const tok_sslot_t *s = &m->slots[i];
        if (!s->hash)
            return NULL;
        if (s->hash == h && s->len == len && !memcmp(m->arena + s->off, key, len))
            return s;
    }
}

static int smap_grow(tok_smap_t *m, err_t *e)
{
    size_t ncap = m->cap * 2;
    tok_sslot_t *ns = err_calloc(e, ncap, sizeof *ns, "tokenizer hash map");
    if (!ns)
        return ERR_NOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        tok_sslot_t *s = &m->slots[i];
        if (!s->hash)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].hash)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return ERR_OK;
}

int tok_smap_put(tok_smap_t *m, const void *key, size_t len, tok_sslot_t **slot, bool *fresh,
                 err_t *e)
{
    if ((m->n + 1) * 4 > m->cap * 3 && smap_grow(m, e))
        return ERR_NOMEM;
    if (len > UINT32_MAX || m->alen + len > UINT32_MAX)
        return err_set(e, ERR_INPUT, "tokenizer hash map: keys exceed 4 GiB");
    uint64_t h = tok_hash_bytes(key, len);
    size_t mask = m->cap - 1, i = h & mask;
    for (;; i = (i + 1) & mask) {
        tok_sslot_t *s = &m->slots[i];
        if (!s->hash)
            break;
        if (s->hash == h && s->len == len && !memcmp(m->arena + s->off, key, len)) {
            *slot = s;
            if (fresh)
                *fresh = false;
            return ERR_OK;
        }
    }
    if (m->alen + len > m->acap) {
        size_t nc = m->acap * 2;
        while (nc < m->alen + len)
            nc *= 2;
        char *na = realloc(m->arena, nc);
        if (!na)
            return err_set(e, ERR_NOMEM, "out of memory growing tokenizer hash map keys");
        m->arena = na;
        m->acap = nc;
    }
    memcpy(m->arena + m->alen, key, len);
    tok_sslot_t *s = &m->slots[i];
    s->hash = h;
    s->off = (uint32_t)m->alen;
    s->len = (uint32_t)len;
    s->v1 = s->v2 = 0;
    m->alen += len;
    m->n++;
    *slot = s;
    if (fresh)
        *fresh = true;
    return ERR_OK;
}

/* ---- pair map ------------------------------------------------------------------------ */

static inline size_t pair_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return (size_t)k;
}

int tok_pmap_init(tok_pmap_t *m, size_t expect, err_t *e)
{
    m->n = 0;
    m->cap = pow2_at_least(expect * 2 + 1);
    m->slots = err_malloc(e, m->cap * sizeof *m->slots, "merge table");
    if (!m->slots)
        return ERR_NOMEM;
    memset(m->slots, 0xFF, m->cap * sizeof *m->slots);
    return ERR_OK;
}

void tok_pmap_free(tok_pmap_t *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

const tok_pslot_t *tok_pmap_get(const tok_pmap_t *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    for (size_t i = pair_hash(key) & mask;; i = (i + 1) & mask) {
        const tok_pslot_t *s = &m->slots[i];
        if (s->key == key)
            return s;
        if (s->key == UINT64_MAX)
            return NULL;
    }
}

int tok_pmap_put(tok_pmap_t *m, uint64_t key, int32_t rank, int32_t id, err_t *e)
{
    if ((m->n + 1) * 4 > m->cap * 3) {
        tok_pmap_t g;
        if (tok_pmap_init(&g, m->cap, e))
            return ERR_NOMEM;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key != UINT64_MAX)
                tok_pmap_put(&g, m->slots[i].key, m->slots[i].rank, m->slots[i].id, e);
        free(m->slots);
        *m = g;
    }
    size_t mask = m->cap - 1;
    for (size_t i = pair_hash(key) & mask;; i = (i + 1) & mask) {
        tok_pslot_t *s = &m->slots[i];
        if (s->key == UINT64_MAX) {
            s->key = key;
            m->n++;
        } else if (s->key != key) {
            continue;
        }
        s->rank = rank;
        s->id = id;
        return ERR_OK;
    }
}

/* ---- UTF-8 --------------------------------------------------------------------------- */

/* The well-formed byte sequences of Unicode's table 3-7. */
int tok_utf8_next(const unsigned char *s, size_t n, int32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = (int32_t)c;
        return 1;
    }
    if (c < 0xC2 || c > 0xF4)
        return 0;
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80)
            return 0;
        *cp = (int32_t)(((c & 0x1F) << 6) | (s[1] & 0x3F));
        return 2;
    }
    if (c < 0xF0) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (n < 3 || s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80)
            return 0;
        *cp = (int32_t)(((c & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F));
        return 3;
    }
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    if (n < 4 || s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
        return 0;
    *cp = (int32_t)(((c & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) |
                    (s[3] & 0x3F));
    return 4;
}

size_t tok_utf8_check(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs eight bytes at a time: most text is mostly ASCII. */
        while (i + 8 <= n) {
            uint64_t v;
            memcpy(&v, u + i, 8);
            if (v & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        int32_t cp;
        int k = tok_utf8_next(u + i, n - i, &cp);
        if (!k)
            return i;
        i += (size_t)k;
    }
    return n;
}

int tok_utf8_invalid_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 1;
    }
    /* The lead byte and as many following bytes as still form a valid prefix. */
    int k = 1;
    if (k < need && (size_t)k < n && s[k] >= lo && s[k] <= hi) {
        k++;
        while (k < need && (size_t)k < n && (s[k] & 0xC0) == 0x80)
            k++;
    }
    return k;
}

/* ---- byte-level characters ----------------------------------------------------------- */

/* Bytes that are printable Latin-1 keep their code point; the other 68 are numbered from
 * U+0100 upwards in byte order (GPT-2's bytes_to_unicode). */
static bool byte_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

int32_t tok_byte_char(uint8_t b)
{
    if (byte_printable(b))
        return b;
    if (b <= 0x20)
        return 256 + b;              /* 0x00..0x20 -> U+0100..U+0120 */
    if (b <= 0xA0)
        return 256 + 33 + (b - 0x7F); /* 0x7F..0xA0 -> U+0121..U+0142 */
    return 256 + 33 + 34;            /* 0xAD -> U+0143 */
}

int tok_char_byte(int32_t cp)
{
    if (cp < 0)
        return -1;
    if (cp < 256)
        return byte_printable((unsigned)cp) ? cp : -1;
    if (cp <= 256 + 0x20)
        return cp - 256;
    if (cp <= 256 + 33 + 33)
        return cp - 256 - 33 + 0x7F;
    if (cp == 256 + 33 + 34)
        return 0xAD;
    return -1;
}
