/* tok_train: a byte-level BPE trainer for small vocabularies (the embedded default model).
 *
 * The corpus is cut exactly as the finished tokenizer will cut text (the special tokens
 * out, NFC, the Qwen2 split regex), by loading a tokenizer with no merges yet and running
 * its pre-tokenizer; the distinct pieces are counted. Then, until the vocabulary is full:
 * take the adjacent pair with the highest count (ties: smaller left id, then smaller
 * right id), add the joined token, and rewrite the words that contain the pair. Counts
 * are kept incrementally (a word's pairs are subtracted before and added after its
 * rewrite) and a lazy max-heap finds the best pair, so a step costs what the affected
 * words cost, not the whole corpus.
 *
 * Ids: 0..255 are the 256 byte characters in byte order, learnt tokens follow in the
 * order they were learnt, the three special tokens come last. The output is a
 * Qwen2-style tokenizer.json (merges as pairs) that Hugging Face `tokenizers` loads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "util/fs.h"
#include "util/json.h"

static const char *const SPECIALS[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
#define N_SPECIALS 3

/* ---- the tokenizer.json we write ----------------------------------------------------- */

/* The byte-level text of raw bytes (each byte as its table character, in UTF-8). */
static char *byte_level_text(const char *raw, size_t n)
{
    char *s = malloc(n * 2 + 1);
    if (!s)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t cp = tok_byte_char((uint8_t)raw[i]);
        if (cp < 0x80) {
            s[k++] = (char)cp;
        } else {
            s[k++] = (char)(0xC0 | (cp >> 6));
            s[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    s[k] = 0;
    return s;
}

typedef struct vocab_out {
    char **raw;     /* raw bytes of each token, by id */
    size_t *len;
    size_t n;
    int32_t (*merges)[2];
    size_t n_merges;
} vocab_out_t;

static cJSON *byte_level_obj(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", false);
    cJSON_AddBoolToObject(o, "trim_offsets", false);
    cJSON_AddBoolToObject(o, "use_regex", false);
    return o;
}

/* Builds the whole document; NULL on allocation failure. */
static cJSON *build_json(const vocab_out_t *v)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < N_SPECIALS; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", (double)(v->n + (size_t)i));
        cJSON_AddStringToObject(a, "content", SPECIALS[i]);
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", true);
        cJSON_AddItemToArray(added, a);
    }
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *steps = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *pat = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(pat, "Regex", TOK_QWEN2_PATTERN);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddBoolToObject(split, "invert", false);
    cJSON_AddItemToArray(steps, split);
    cJSON_AddItemToArray(steps, byte_level_obj());
    cJSON_AddItemToObject(root, "post_processor", byte_level_obj());
    cJSON_AddItemToObject(root, "decoder", byte_level_obj());
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "");
    cJSON_AddStringToObject(model, "end_of_word_suffix", "");
    cJSON_AddBoolToObject(model, "fuse_unk", false);
    cJSON_AddBoolToObject(model, "byte_fallback", false);
    cJSON_AddBoolToObject(model, "ignore_merges", false);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    char **text = calloc(v->n + 1, sizeof *text);
    bool ok = root && added && norm && pre && steps && model && vocab && text;
    for (size_t id = 0; ok && id < v->n; id++) {
        text[id] = byte_level_text(v->raw[id], v->len[id]);
        ok = text[id] && cJSON_AddNumberToObject(vocab, text[id], (double)id);
    }
    cJSON *merges = ok ? cJSON_AddArrayToObject(model, "merges") : NULL;
    ok = ok && merges;
    for (size_t i = 0; ok && i < v->n_merges; i++) {
        cJSON *pair = cJSON_CreateArray();
        ok = pair && cJSON_AddItemToArray(merges, pair);
        ok = ok && cJSON_AddItemToArray(pair, cJSON_CreateString(text[v->merges[i][0]]));
        ok = ok && cJSON_AddItemToArray(pair, cJSON_CreateString(text[v->merges[i][1]]));
    }
    for (size_t id = 0; text && id < v->n; id++)
        free(text[id]);
    free(text);
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---- counting pieces ----------------------------------------------------------------- */

static int count_piece(void *ctx, const char *piece, size_t len, err_t *e)
{
    tok_smap_t *words = ctx;
    tok_sslot_t *sl;
    if (tok_smap_put(words, piece, len, &sl, NULL, e))
        return e->code;
    uint64_t c = ((uint64_t)(uint32_t)sl->v2 << 32 | (uint32_t)sl->v1) + 1;
    sl->v1 = (int32_t)(uint32_t)c;
    sl->v2 = (int32_t)(uint32_t)(c >> 32);
    return ERR_OK;
}

static int skip_added(void *ctx, int32_t id, err_t *e)
{
    (void)ctx, (void)id, (void)e;
    return ERR_OK;
}

/* ---- pair statistics ----------------------------------------------------------------- */

typedef struct pair {
    int32_t a, b;
    int64_t count;
    int64_t pushed;   /* count of this pair's representative heap entry */
    int32_t *occ;     /* words that may contain the pair (duplicates allowed) */
    size_t n_occ, cap_occ;
    uint32_t stamp;
} pair_t;

typedef struct hent {
    int64_t count;
    int32_t a, b;
    int32_t pair;
} hent_t;

typedef struct trainer {
    tok_pmap_t index;  /* (a, b) -> pair index (in .rank) */
    pair_t *pairs;
    size_t n_pairs, cap_pairs;
    hent_t *heap;
    size_t n_heap, cap_heap;
    int32_t **word;    /* symbols of each distinct word */
    size_t *wlen;
    int64_t *wcount;
    uint32_t *wstamp;
    size_t n_words;
    int32_t *touched;
    size_t n_touched, cap_touched;
    err_t *e;
    bool oom;
} trainer_t;

static bool hent_before(const hent_t *x, const hent_t *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    if (x->a != y->a)
        return x->a < y->a;
    return x->b < y->b;
}

static void heap_push(trainer_t *tr, hent_t h)
{
    if (tr->n_heap == tr->cap_heap) {
        size_t nc = tr->cap_heap ? tr->cap_heap * 2 : 1024;
        hent_t *nh = realloc(tr->heap, nc * sizeof *nh);
        if (!nh) {
            tr->oom = true;
            return;
        }
        tr->heap = nh;
        tr->cap_heap = nc;
    }
    size_t i = tr->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hent_before(&h, &tr->heap[p]))
            break;
        tr->heap[i] = tr->heap[p];
        i = p;
    }
    tr->heap[i] = h;
}

static hent_t heap_pop(trainer_t *tr)
{
    hent_t top = tr->heap[0], last = tr->heap[--tr->n_heap];
    size_t i = 0, n = tr->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && hent_before(&tr->heap[c + 1], &tr->heap[c]))
            c++;
        if (!hent_before(&tr->heap[c], &last))
            break;
        tr->heap[i] = tr->heap[c];
        i = c;
    }
    if (n)
        tr->heap[i] = last;
    return top;
}

static int32_t pair_get(trainer_t *tr, int32_t a, int32_t b, bool create)
{
    const tok_pslot_t *s = tok_pmap_get(&tr->index, tok_pair_key(a, b));
    if (s)
        return s->rank;
    if (!create)
        return -1;
    if (tr->n_pairs == tr->cap_pairs) {
        size_t nc = tr->cap_pairs ? tr->cap_pairs * 2 : 4096;
        pair_t *np = realloc(tr->pairs, nc * sizeof *np);
        if (!np) {
            tr->oom = true;
            return -1;
        }
        tr->pairs = np;
        tr->cap_pairs = nc;
    }
    int32_t idx = (int32_t)tr->n_pairs++;
    tr->pairs[idx] = (pair_t){.a = a, .b = b};
    if (tok_pmap_put(&tr->index, tok_pair_key(a, b), idx, 0, tr->e)) {
        tr->oom = true;
        return -1;
    }
    return idx;
}

static void occ_add(trainer_t *tr, pair_t *p, int32_t w)
{
    if (p->n_occ && p->occ[p->n_occ - 1] == w)
        return;
    if (p->n_occ == p->cap_occ) {
        size_t nc = p->cap_occ ? p->cap_occ * 2 : 4;
        int32_t *no = realloc(p->occ, nc * sizeof *no);
        if (!no) {
            tr->oom = true;
            return;
        }
        p->occ = no;
        p->cap_occ = nc;
    }
    p->occ[p->n_occ++] = w;
}

static void touch(trainer_t *tr, int32_t pi, uint32_t stamp)
{
    pair_t *p = &tr->pairs[pi];
    if (p->stamp == stamp)
        return;
    p->stamp = stamp;
    if (tr->n_touched == tr->cap_touched) {
        size_t nc = tr->cap_touched ? tr->cap_touched * 2 : 1024;
        int32_t *nt = realloc(tr->touched, nc * sizeof *nt);
        if (!nt) {
            tr->oom = true;
            return;
        }
        tr->touched = nt;
        tr->cap_touched = nc;
    }
    tr->touched[tr->n_touched++] = pi;
}

/* Adds sign * count for every adjacent pair of word w; registers w with pairs that
 * involve `fresh` (the token just made), which is where new occurrences appear. */
static void word_pairs(trainer_t *tr, int32_t w, int sign, int32_t fresh, uint32_t stamp)
{
    const int32_t *s = tr->word[w];
    for (size_t i = 0; i + 1 < tr->wlen[w] && !tr->oom; i++) {
        int32_t pi = pair_get(tr, s[i], s[i + 1], sign > 0);
        if (pi < 0)
            continue;
        pair_t *p = &tr->pairs[pi];
        p->count += sign * tr->wcount[w];
        if (sign > 0 && (fresh < 0 || s[i] == fresh || s[i + 1] == fresh))
            occ_add(tr, p, w);
        if (stamp)
            touch(tr, pi, stamp);
    }
}

static void push_if_grown(trainer_t *tr, int32_t pi)
{
    pair_t *p = &tr->pairs[pi];
    if (p->count > 0 && p->count > p->pushed) {
        p->pushed = p->count;
        heap_push(tr, (hent_t){p->count, p->a, p->b, pi});
    }
}

/* ---- training ------------------------------------------------------------------------ */

static int base_tokenizer(tok_t **out, err_t *e)
{
    vocab_out_t v = {0};
    char raw[256];
    char *rp[256];
    size_t rl[256];
    for (int b = 0; b < 256; b++) {
        raw[b] = (char)b;
        rp[b] = &raw[b];
        rl[b] = 1;
    }
    v.raw = rp;
    v.len = rl;
    v.n = 256;
    cJSON *doc = build_json(&v);
    char *text = doc ? cJSON_PrintUnformatted(doc) : NULL;
    cJSON_Delete(doc);
    if (!text)
        return err_set(e, ERR_NOMEM, "out of memory building the trainer's tokenizer");
    int rc = tok_load_json(text, strlen(text), "trainer base tokenizer", out, e);
    free(text);
    return rc;
}

int tok_train(const char *const *texts, const size_t *lens, size_t n_texts,
              const tok_train_opts_t *opts, const char *out_path, err_t *e)
{
    long target = opts->vocab_size - N_SPECIALS;
    long min_freq = opts->min_frequency > 0 ? opts->min_frequency : 1;
    if (opts->vocab_size < 256 + N_SPECIALS || opts->vocab_size > (1 << 24))
        return err_set(e, ERR_INPUT,
                       "vocab size %ld: expected 259 (256 bytes + 3 special tokens) .. %d",
                       opts->vocab_size, 1 << 24);
    size_t bytes = 0;
    for (size_t i = 0; i < n_texts; i++)
        bytes += lens[i];
    if (bytes == 0) /* an empty corpus: a tokenizer "trained" on it learnt nothing from it */
        return err_set(e, ERR_INPUT, "the corpus holds no text to learn from (%zu text(s), all "
                       "empty)", n_texts);
    tok_t *base = NULL;
    tok_work_t *w = NULL;
    tok_smap_t words = {0}, strs = {0};
    trainer_t tr = {0};
    vocab_out_t v = {0};
    size_t cap_v = 0, cap_m = 0;
    cJSON *doc = NULL;
    int rc = base_tokenizer(&base, e);
    if (rc || (rc = tok_work_new(base, &w, e)) || (rc = tok_smap_init(&words, 1 << 14, e)) ||
        (rc = tok_smap_init(&strs, (size_t)target, e)))
        goto out;
    for (size_t i = 0; i < n_texts; i++) {
        rc = tok_pretokenize(base, w, texts[i], lens[i], count_piece, skip_added, &words, e);
        if (rc) {
            err_prefix(e, "corpus text %zu", i);
            goto out;
        }
    }

    /* The distinct words. Their order does not matter: counts are sums, and rewriting
     * one word never looks at another. */
    tr.e = e;
    tr.n_words = words.n;
    tr.word = calloc(words.n + 1, sizeof *tr.word);
    tr.wlen = calloc(words.n + 1, sizeof *tr.wlen);
    tr.wcount = calloc(words.n + 1, sizeof *tr.wcount);
    tr.wstamp = calloc(words.n + 1, sizeof *tr.wstamp);
    if (!tr.word || !tr.wlen || !tr.wcount || !tr.wstamp ||
        tok_pmap_init(&tr.index, words.n * 4 + 1024, e)) {
        rc = err_set(e, ERR_NOMEM, "out of memory for %zu training words", words.n);
        goto out;
    }
    {
        size_t k = 0;
        for (size_t s = 0; s < words.cap; s++) {
            const tok_sslot_t *sl = &words.slots[s];
            if (!sl->hash)
                continue;
            tr.word[k] = malloc((sl->len + 1) * sizeof(int32_t));
            if (!tr.word[k]) {
                rc = err_set(e, ERR_NOMEM, "out of memory for training words");
                goto out;
            }
            const unsigned char *b = (const unsigned char *)tok_smap_key(&words, sl);
            for (size_t j = 0; j < sl->len; j++)
                tr.word[k][j] = b[j]; /* byte b has id b */
            tr.wlen[k] = sl->len;
            tr.wcount[k] = (int64_t)((uint64_t)(uint32_t)sl->v2 << 32 | (uint32_t)sl->v1);
            k++;
        }
    }

    /* Vocabulary: the 256 bytes. */
    cap_v = 1024;
    v.raw = calloc(cap_v, sizeof *v.raw);
    v.len = calloc(cap_v, sizeof *v.len);
    if (!v.raw || !v.len) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int b = 0; b < 256; b++) {
        v.raw[b] = malloc(1);
        if (!v.raw[b]) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
        v.raw[b][0] = (char)b;
        v.len[b] = 1;
        tok_sslot_t *sl;
        if ((rc = tok_smap_put(&strs, v.raw[b], 1, &sl, NULL, e)))
            goto out;
        sl->v1 = b;
    }
    v.n = 256;

    for (size_t i = 0; i < tr.n_words; i++)
        word_pairs(&tr, (int32_t)i, +1, -1, 0);
    for (size_t pi = 0; pi < tr.n_pairs; pi++)
        push_if_grown(&tr, (int32_t)pi);
    if (tr.oom) {
        rc = err_set(e, ERR_NOMEM, "out of memory counting pairs");
        goto out;
    }

    uint32_t step = 0;
    while ((long)v.n < target && tr.n_heap) {
        hent_t h = heap_pop(&tr);
        pair_t *p = &tr.pairs[h.pair];
        if (h.count == p->pushed)
            p->pushed = 0; /* the pair's representative entry left the heap */
        if (h.count != p->count) {
            push_if_grown(&tr, h.pair); /* stale: requeue at the true count */
            continue;
        }
        if (p->count < min_freq)
            break;
        step++;
        int32_t a = p->a, b = p->b;
        /* The joined token; an existing string (another merge path) keeps its id. */
        size_t nl = v.len[a] + v.len[b];
        char *joined = malloc(nl);
        if (!joined) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(joined, v.raw[a], v.len[a]);
        memcpy(joined + v.len[a], v.raw[b], v.len[b]);
        tok_sslot_t *sl;
        bool fresh;
        if ((rc = tok_smap_put(&strs, joined, nl, &sl, &fresh, e))) {
            free(joined);
            goto out;
        }
        int32_t id;
        if (fresh) {
            if (v.n == cap_v) {
                cap_v *= 2;
                char **nr = realloc(v.raw, cap_v * sizeof *nr);
                size_t *nlen = nr ? realloc(v.len, cap_v * sizeof *nlen) : NULL;
                if (nr)
                    v.raw = nr;
                if (!nr || !nlen) {
                    free(joined);
                    rc = err_set(e, ERR_NOMEM, "out of memory");
                    goto out;
                }
                v.len = nlen;
            }
            id = (int32_t)v.n++;
            sl->v1 = id;
            v.raw[id] = joined;
            v.len[id] = nl;
        } else {
            id = sl->v1;
            free(joined);
        }
        if (v.n_merges == cap_m) {
            cap_m = cap_m ? cap_m * 2 : 1024;
            int32_t(*nm)[2] = realloc(v.merges, cap_m * sizeof *nm);
            if (!nm) {
                rc = err_set(e, ERR_NOMEM, "out of memory");
                goto out;
            }
            v.merges = nm;
        }
        v.merges[v.n_merges][0] = a;
        v.merges[v.n_merges][1] = b;
        v.n_merges++;

        /* Rewrite every word holding the pair. The list is detached first: new pairs may
         * move tr.pairs (and p with it). */
        int32_t *occ = p->occ;
        size_t n_occ = p->n_occ;
        p->occ = NULL;
        p->n_occ = p->cap_occ = 0;
        tr.n_touched = 0;
        for (size_t k = 0; k < n_occ; k++) {
            int32_t wi = occ[k];
            if (tr.wstamp[wi] == step)
                continue;
            tr.wstamp[wi] = step;
            int32_t *s = tr.word[wi];
            size_t n = tr.wlen[wi], j = 0;
            bool has = false;
            for (size_t i = 0; i + 1 < n && !has; i++)
                has = s[i] == a && s[i + 1] == b;
            if (!has)
                continue;
            word_pairs(&tr, wi, -1, -1, step);
            for (size_t i = 0; i < n;) {
                if (i + 1 < n && s[i] == a && s[i + 1] == b) {
                    s[j++] = id;
                    i += 2;
                } else {
                    s[j++] = s[i++];
                }
            }
            tr.wlen[wi] = j;
            word_pairs(&tr, wi, +1, id, step);
        }
        free(occ);
        for (size_t k = 0; k < tr.n_touched; k++)
            push_if_grown(&tr, tr.touched[k]);
        if (tr.oom) {
            rc = err_set(e, ERR_NOMEM, "out of memory while training");
            goto out;
        }
    }

    doc = build_json(&v);
    if (!doc) {
        rc = err_set(e, ERR_NOMEM, "out of memory building tokenizer.json");
        goto out;
    }
    rc = json_write_file(out_path, doc, true, e);
out:
    cJSON_Delete(doc);
    for (size_t i = 0; i < v.n; i++)
        free(v.raw[i]);
    free(v.raw);
    free(v.len);
    free(v.merges);
    for (size_t i = 0; i < tr.n_pairs; i++)
        free(tr.pairs[i].occ);
    free(tr.pairs);
    free(tr.heap);
    for (size_t i = 0; tr.word && i < tr.n_words; i++)
        free(tr.word[i]);
    free(tr.word);
    free(tr.wlen);
    free(tr.wcount);
    free(tr.wstamp);
    free(tr.touched);
    if (tr.index.slots)
        tok_pmap_free(&tr.index);
    if (words.slots)
        tok_smap_free(&words);
    if (strs.slots)
        tok_smap_free(&strs);
    tok_work_free(w);
    tok_free(base);
    return rc;
}

/* ---- corpus files -------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int tok_train_file(const char *corpus_path, const tok_train_opts_t *opts, const char *out_path,
                   err_t *e)
{
    char *text;
    size_t len;
    int rc = fs_read_all(corpus_path, 1ull << 31, &text, &len, e);
    if (rc)
        return rc;
    if (!ends_with(corpus_path, ".jsonl")) {
        const char *tp = text;
        rc = tok_train(&tp, &len, 1, opts, out_path, e);
        if (rc == ERR_INPUT)
            err_prefix(e, "%s", corpus_path);
        free(text);
        return rc;
    }
    /* One {"text": ...} object a line. */
    size_t n = 0, cap = 0;
    const char **texts = NULL;
    size_t *lens = NULL;
    cJSON **docs = NULL;
    size_t lineno = 0;
    /* by length: a NUL byte in a line reaches json_parse, which names it */
    for (char *line = text, *next, *end = text + len; line < end; line = next) {
        lineno++;
        char *nl = memchr(line, '\n', (size_t)(end - line));
        next = nl ? nl + 1 : end;
        size_t ll = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (ll == 0 || (ll == 1 && line[0] == '\r'))
            continue;
        char ctx[600];
        snprintf(ctx, sizeof ctx, "%s:%zu", corpus_path, lineno);
        cJSON *j;
        if ((rc = json_parse(line, ll, ctx, &j, e)))
            break;
        const char *s;
        if ((rc = json_req_string(j, "text", ctx, &s, e))) {
            cJSON_Delete(j);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            const char **nt = realloc(texts, cap * sizeof *nt);
            size_t *nls = nt ? realloc(lens, cap * sizeof *nls) : NULL;
            cJSON **nd = nls ? realloc(docs, cap * sizeof *nd) : NULL;
            if (nt)
                texts = nt;
            if (nls)
                lens = nls;
            if (!nd) {
                cJSON_Delete(j);
                rc = err_set(e, ERR_NOMEM, "out of memory reading %s", corpus_path);
                break;
            }
            docs = nd;
        }
        texts[n] = s;
        lens[n] = strlen(s);
        docs[n] = j;
        n++;
    }
    if (!rc && (rc = tok_train(texts, lens, n, opts, out_path, e)) == ERR_INPUT)
        err_prefix(e, "%s", corpus_path);
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(docs[i]);
    free(texts);
    free(lens);
    free(docs);
    free(text);
    return rc;
}
