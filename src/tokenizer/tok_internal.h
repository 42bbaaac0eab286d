/* tok_internal: the tokenizer's private structures, shared by its .c files only.
 *
 * Hash maps are open-addressed with linear probing; keys are byte strings kept in the
 * map's own arena, or 64-bit integers (merge pairs). They never shrink; the word cache is
 * cleared when it fills, which bounds its memory. */
#ifndef MXRLHF_TOKENIZER_TOK_INTERNAL_H
#define MXRLHF_TOKENIZER_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

/* ---- hashing and maps ---------------------------------------------------------------- */

uint64_t tok_hash_bytes(const void *p, size_t n);

typedef struct tok_sslot {
    uint64_t hash; /* 0: empty slot */
    uint32_t off, len;
    int32_t v1, v2;
} tok_sslot_t;

/* Byte string -> two int32 values. */
typedef struct tok_smap {
    tok_sslot_t *slots;
    size_t cap, n; /* cap: power of two */
    char *arena;
    size_t alen, acap;
} tok_smap_t;

int tok_smap_init(tok_smap_t *m, size_t expect, err_t *e);
void tok_smap_free(tok_smap_t *m);
void tok_smap_clear(tok_smap_t *m);
/* The slot for key, or NULL. */
const tok_sslot_t *tok_smap_get(const tok_smap_t *m, const void *key, size_t len);
/* Inserts or finds key; *slot points at its slot (valid until the next insert), *fresh
 * says whether it was new (then v1 = v2 = 0). */
int tok_smap_put(tok_smap_t *m, const void *key, size_t len, tok_sslot_t **slot, bool *fresh,
                 err_t *e);
static inline const char *tok_smap_key(const tok_smap_t *m, const tok_sslot_t *s)
{
    return m->arena + s->off;
}

typedef struct tok_pslot {
    uint64_t key; /* UINT64_MAX: empty */
    int32_t rank, id;
} tok_pslot_t;

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_pmap {
    tok_pslot_t *slots;
    size_t cap, n;
} tok_pmap_t;

static inline uint64_t tok_pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}
int tok_pmap_init(tok_pmap_t *m, size_t expect, err_t *e);
void tok_pmap_free(tok_pmap_t *m);
const tok_pslot_t *tok_pmap_get(const tok_pmap_t *m, uint64_t key);
/* Inserts or overwrites (a later duplicate merge wins, as in Hugging Face). */
int tok_pmap_put(tok_pmap_t *m, uint64_t key, int32_t rank, int32_t id, err_t *e);

/* ---- UTF-8 --------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0..n) (1..4), or 0 when invalid; *cp gets the
 * code point. */
int tok_utf8_next(const unsigned char *s, size_t n, int32_t *cp);
/* Offset of the first invalid byte, or n when s is valid UTF-8. */
size_t tok_utf8_check(const char *s, size_t n);
/* Length of the maximal prefix of an invalid sequence at s (>= 1), the unit that
 * becomes one U+FFFD. Only meaningful when tok_utf8_next returned 0. */
int tok_utf8_invalid_len(const unsigned char *s, size_t n);

/* GPT-2's byte <-> character table: byte b is written as code point tok_byte_char(b). */
int32_t tok_byte_char(uint8_t b);
/* The byte a code point stands for, or -1 when it is not one of the 256 characters. */
int tok_char_byte(int32_t cp);

/* ---- the tokenizer ------------------------------------------------------------------- */

enum { TOK_NORM_NONE = 0, TOK_NORM_NFC, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD };

typedef struct tok_added {
    char *content;     /* as written */
    size_t len;
    char *ncontent;    /* normalised content (normalized tokens), else == content */
    size_t nlen;
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tok_added_t;

/* Leftmost-longest literal matcher over a few patterns (Hugging Face uses Aho-Corasick
 * with the same semantics). Patterns are grouped by first byte, longest first. */
typedef struct tok_matcher {
    int n;
    const char **pat;
    size_t *plen;
    int *tok;          /* index into tok_t.added: whose flags and id */
    int *by_first;     /* pattern indices grouped by first byte */
    int first_start[257];
} tok_matcher_t;

/* One pre-tokenizer step: a regex split (Isolated), or the final ByteLevel step. */
typedef struct tok_step {
    bool byte_level;
    bool add_prefix_space; /* ByteLevel only */
    pcre2_code *re;        /* split pattern; NULL for ByteLevel without use_regex */
    bool jit;
} tok_step_t;

#define TOK_MAX_STEPS 8

struct tok {
    char *ctx;                  /* file name for messages */
    tok_smap_t vocab;           /* model token (as written) -> id */
    int32_t n_ids;              /* one past the highest id */
    int32_t model_vocab_len;    /* number of model vocabulary entries */
    /* per id: the text as written (into vocab arena or an added token), and the bytes it
     * decodes to (into dec) */
    const char **id_text;
    uint32_t *id_text_len;
    uint32_t *dec_off, *dec_len;
    char *dec;
    uint8_t *id_flags;          /* TOK_ID_* */
    int32_t byte_id[256];       /* id of each byte's character, -1 if absent */
    tok_pmap_t merges;
    bool ignore_merges, fuse_unk, byte_fallback;
    int32_t unk_id;             /* -1: none */
    int32_t fallback_id[256];   /* "<0xXX>" tokens for byte_fallback */
    tok_added_t *added;
    int n_added;
    tok_smap_t added_map;       /* content -> index into added (v1) */
    tok_matcher_t raw_match, norm_match;
    bool need_word_re;          /* some added token uses lstrip/rstrip/single_word */
    pcre2_code *re_word, *re_space;
    int norm;
    bool byte_level_decoder;    /* else (decoder null) tokens are joined with spaces */
    tok_step_t steps[TOK_MAX_STEPS];
    int n_steps;
    uint32_t max_captures;
};

enum { TOK_ID_USED = 1, TOK_ID_ADDED = 2, TOK_ID_SPECIAL = 4 };

struct tok_work {
    const tok_t *t;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    tok_smap_t cache;           /* word bytes -> (offset into cache_ids, count) */
    int32_t *cache_ids;
    size_t cache_n, cache_cap;
    char *nbuf;                 /* normalised piece */
    size_t nbuf_cap;
    int32_t *ubuf;              /* UTF-32 scratch for normalisation */
    size_t ubuf_cap;
    char *pbuf;                 /* prefix-space copy */
    size_t pbuf_cap;
    /* BPE scratch */
    struct tok_sym *sym;
    size_t sym_cap;
    struct tok_merge *heap;
    size_t heap_cap;
    int32_t *wids;
    size_t wids_cap;
};

/* Calls fn for every piece the model would encode (after added-token cutting,
 * normalisation and pre-tokenization; before byte mapping), and `added` for every added
 * token found. Used by the encoder and by the trainer (which counts pieces). */
typedef int (*tok_piece_fn)(void *ctx, const char *piece, size_t len, err_t *e);
typedef int (*tok_added_fn)(void *ctx, int32_t id, err_t *e);
int tok_pretokenize(const tok_t *t, tok_work_t *w, const char *text, size_t len,
                    tok_piece_fn piece, tok_added_fn added, void *ctx, err_t *e);

/* Normalises s[0..n) with the tokenizer's normalizer into w->nbuf (also when it is the
 * identity: then *out == s). */
int tok_normalize(const tok_t *t, tok_work_t *w, const char *s, size_t n, const char **out,
                  size_t *out_len, err_t *e);
/* The same with a stand-alone form (used at load time for added tokens). Caller frees. */
int tok_normalize_alloc(int form, const char *s, size_t n, char **out, size_t *out_len,
                        err_t *e);

/* The pattern Hugging Face's ByteLevel pre-tokenizer uses when use_regex is true. */
extern const char TOK_GPT2_PATTERN[];
/* The Qwen2 split pattern (what the trainer writes). */
extern const char TOK_QWEN2_PATTERN[];

/* Translates an Oniguruma pattern (what Hugging Face runs) into PCRE2 syntax with the
 * same meaning for the constructs tokenizers use; compiles it with UTF and UCP, and
 * JIT-compiles it where possible. `what` names the field in errors. */
int tok_regex_compile(const char *pattern, bool literal, const char *what, pcre2_code **out,
                      bool *jit, err_t *e);

#endif
