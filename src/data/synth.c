/* synth: the synthetic preference task: scorer, prompt/response/pair/corpus generators
 * (see synth.h; the word lists are in synth_lists.c).
 *
 * Every random choice reads the next word of a Philox sequence keyed by
 * (seed, rng_stream(name, id), index) through a local cursor: no shared state, and pair k
 * is the same whether 10 or 10 million pairs are generated. */
#include "data/synth.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth_lists.h"
#include "util/atomic_file.h"
#include "util/rng.h"
#include "util/strbuf.h"

_Static_assert(SYNTH_NTOPICS >= 20, "the task needs at least 20 topics");
_Static_assert(SYNTH_NWORDS >= 30 && SYNTH_NWORDS <= 64, "30..64 words a topic (bit mask)");
_Static_assert(SYNTH_NRUDE >= 30, "the rude list needs at least 30 words");
_Static_assert(SYNTH_NWORDS >= DATA_SYNTH_MIN_TOKENS, "a best response needs 16 topic words");

/* ---- the lists ----------------------------------------------------------------------- */

int data_synth_ntopics(void)
{
    return SYNTH_NTOPICS;
}

const char *data_synth_topic_name(int topic)
{
    return topic >= 0 && topic < SYNTH_NTOPICS ? data_synth_topic_names[topic] : NULL;
}

size_t data_synth_topic_words(int topic, const char *const **words)
{
    if (topic < 0 || topic >= SYNTH_NTOPICS) {
        *words = NULL;
        return 0;
    }
    *words = data_synth_topic_lists[topic];
    return SYNTH_NWORDS;
}

size_t data_synth_rude_words(const char *const **words)
{
    *words = data_synth_rude_list;
    return SYNTH_NRUDE;
}

static const struct {
    const char *const *v;
    size_t n;
} neutral_parts[] = {
    {data_synth_openers, SYNTH_NOPENERS},
    {data_synth_templates, SYNTH_NTEMPLATES},
    {data_synth_closers, SYNTH_NCLOSERS},
    {data_synth_fillers, SYNTH_NFILLERS},
    {data_synth_topic_sentences, SYNTH_NTOPIC_SENTENCES},
    {data_synth_rude_sentences, SYNTH_NRUDE_SENTENCES},
};
#define NPARTS (sizeof neutral_parts / sizeof neutral_parts[0])

size_t data_synth_nneutral(void)
{
    size_t n = 0;
    for (size_t p = 0; p < NPARTS; p++)
        n += neutral_parts[p].n;
    return n;
}

const char *data_synth_neutral_text(size_t i)
{
    for (size_t p = 0; p < NPARTS; p++) {
        if (i < neutral_parts[p].n)
            return neutral_parts[p].v[i];
        i -= neutral_parts[p].n;
    }
    return NULL;
}

/* ---- words --------------------------------------------------------------------------- */

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_ascii_punct(unsigned char c)
{
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
}

/* Normalises the word [s, s+n) into out (cap bytes): ASCII punctuation deleted, A-Z
 * lowercased, other bytes kept. Returns false when it does not fit (then it matches no
 * list word, all of which are short). */
static bool normalise(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_ascii_punct(c))
            continue;
        if (k + 1 >= cap)
            return false;
        out[k++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    out[k] = '\0';
    return true;
}

static int find_word(const char *const *list, size_t n, const char *w)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], w))
            return (int)i;
    return -1;
}

/* ---- the ground truth ---------------------------------------------------------------- */

void data_synth_score(const char *response, int topic, const data_token_counter_t *tc,
                      data_synth_score_t *out)
{
    memset(out, 0, sizeof *out);
    const char *const *tw = NULL;
    size_t ntw = data_synth_topic_words(topic, &tw);
    uint64_t seen = 0;
    char norm[64];
    const char *p = response ? response : "";
    while (*p) {
        while (*p && is_space((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *w = p;
        while (*p && !is_space((unsigned char)*p))
            p++;
        out->words++;
        if (!normalise(w, (size_t)(p - w), norm, sizeof norm) || !norm[0])
            continue;
        int k = ntw ? find_word(tw, ntw, norm) : -1;
        if (k >= 0)
            seen |= (uint64_t)1 << k;
        else if (find_word(data_synth_rude_list, SYNTH_NRUDE, norm) >= 0)
            out->rude++;
    }
    for (uint64_t m = seen; m; m &= m - 1)
        out->distinct_topic++;
    out->tokens = data_count_tokens(tc, response ? response : "");
    out->too_short = out->tokens < DATA_SYNTH_MIN_TOKENS || out->words == 0;
    if (out->too_short) {
        out->num = -1;
        out->den = 1;
    } else {
        out->num = (long long)out->distinct_topic - (long long)out->rude;
        out->den = (long long)out->words;
    }
    out->value = (double)out->num / (double)out->den;
}

int data_synth_score_cmp(const data_synth_score_t *a, const data_synth_score_t *b)
{
    /* den > 0 and |num| <= den = words, so the products fit 64 bits for any response
     * under 3 * 10^9 words. */
    long long x = a->num * b->den, y = b->num * a->den;
    return x < y ? -1 : x > y;
}

int data_synth_best_response(int topic, char **out, err_t *e)
{
    *out = NULL;
    const char *const *tw;
    if (!data_synth_topic_words(topic, &tw))
        return err_set(e, ERR_INPUT, "no synthetic topic number %d (0..%d)", topic,
                       SYNTH_NTOPICS - 1);
    size_t len = 0;
    for (int i = 0; i < DATA_SYNTH_MIN_TOKENS; i++)
        len += strlen(tw[i]) + 1;
    char *s = malloc(len);
    if (!s)
        return err_set(e, ERR_NOMEM, "out of memory");
    s[0] = '\0';
    for (int i = 0; i < DATA_SYNTH_MIN_TOKENS; i++) {
        if (i)
            strcat(s, " ");
        strcat(s, tw[i]);
    }
    *out = s;
    return ERR_OK;
}

int data_synth_topic_of_prompt(const char *prompt)
{
    if (!prompt)
        return -1;
    const char *start = prompt, *end = prompt + strlen(prompt);
    for (const char *h = strstr(prompt, DATA_HUMAN_TAG); h; h = strstr(h + 1, DATA_HUMAN_TAG))
        start = h + sizeof DATA_HUMAN_TAG - 1;
    const char *a = strstr(start, DATA_ASSISTANT_TAG);
    if (a)
        end = a;
    int found = -1;
    char norm[64];
    for (const char *p = start; p < end;) {
        while (p < end && is_space((unsigned char)*p))
            p++;
        const char *w = p;
        while (p < end && !is_space((unsigned char)*p))
            p++;
        if (p == w || !normalise(w, (size_t)(p - w), norm, sizeof norm))
            continue;
        for (int t = 0; t < SYNTH_NTOPICS; t++) {
            if (strcmp(norm, data_synth_topic_names[t]))
                continue;
            if (found >= 0 && found != t)
                return -1;
            found = t;
        }
    }
    return found;
}

/* ---- text building --------------------------------------------------------------------- */

/* ---- draws ---------------------------------------------------------------------------- */

typedef struct cursor {
    uint64_t seed, stream, i;
} cursor_t;

static cursor_t cursor(uint64_t seed, const char *name, uint64_t id, uint64_t start)
{
    return (cursor_t){seed, rng_stream(name, id), start};
}

static uint32_t cur_u32(cursor_t *c)
{
    return rng_u32(c->seed, c->stream, c->i++);
}

/* In [0, n): multiply-shift of a 32-bit draw (bias below n / 2^32; n <= 64 here). */
static uint32_t cur_below(cursor_t *c, uint32_t n)
{
    return (uint32_t)(((uint64_t)cur_u32(c) * n) >> 32);
}

static double cur_uniform(cursor_t *c)
{
    return (double)(cur_u32(c) >> 8) * (1.0 / 16777216.0);
}

/* ---- generators ------------------------------------------------------------------------ */

static void add_request(cursor_t *c, strbuf_t *b, int *topic)
{
    int t = (int)cur_below(c, SYNTH_NTOPICS);
    const char *op = data_synth_openers[cur_below(c, SYNTH_NOPENERS)];
    const char *tpl = data_synth_templates[cur_below(c, SYNTH_NTEMPLATES)];
    const char *cl = data_synth_closers[cur_below(c, SYNTH_NCLOSERS)];
    strbuf_puts(b, op);
    const char *slot = strstr(tpl, "%s");
    strbuf_add(b, tpl, (size_t)(slot - tpl));
    strbuf_puts(b, data_synth_topic_names[t]);
    strbuf_puts(b, slot + 2);
    strbuf_puts(b, cl);
    *topic = t;
}

int data_synth_request(uint64_t seed, uint64_t index, char **request, int *topic, err_t *e)
{
    cursor_t c = cursor(seed, "data.synth.prompt", index, 0);
    strbuf_t b = {0};
    add_request(&c, &b, topic);
    return strbuf_finish(&b, request, "synthetic text", e);
}

/* "a" or "an" for the word: vowel sound by first letter, with "use..." taking "a". */
static const char *article(const char *w)
{
    if (!strncmp(w, "use", 3))
        return "a ";
    return strchr("aeiou", w[0]) ? "an " : "a ";
}

enum { KIND_NEUTRAL, KIND_TOPIC, KIND_RUDE };

static void add_sentence(cursor_t *c, strbuf_t *b, int kind, int topic)
{
    if (kind == KIND_NEUTRAL) {
        strbuf_puts(b, data_synth_fillers[cur_below(c, SYNTH_NFILLERS)]);
        return;
    }
    const char *tpl = kind == KIND_TOPIC
                          ? data_synth_topic_sentences[cur_below(c, SYNTH_NTOPIC_SENTENCES)]
                          : data_synth_rude_sentences[cur_below(c, SYNTH_NRUDE_SENTENCES)];
    uint64_t used = 0;
    for (const char *p = tpl; *p;) {
        const char *d = strchr(p, '$');
        if (!d) {
            strbuf_puts(b, p);
            break;
        }
        strbuf_add(b, p, (size_t)(d - p));
        char slot = d[1];
        p = d + 2;
        if (slot == 't') {
            /* distinct within the sentence: step to the next unused word */
            uint32_t k = cur_below(c, SYNTH_NWORDS);
            while (used >> k & 1)
                k = (k + 1) % SYNTH_NWORDS;
            used |= (uint64_t)1 << k;
            strbuf_puts(b, data_synth_topic_lists[topic][k]);
        } else {
            bool adj = slot == 'j' || slot == 'J';
            const char *w = adj ? data_synth_rude_list[cur_below(c, SYNTH_NRUDE_ADJ)]
                                : data_synth_rude_list[SYNTH_NRUDE_ADJ +
                                                       cur_below(c, SYNTH_NRUDE - SYNTH_NRUDE_ADJ)];
            if (slot == 'J' || slot == 'N')
                strbuf_puts(b, article(w));
            strbuf_puts(b, w);
        }
    }
}

/* 2..8 sentences, kinds drawn with weights w (neutral, on-topic, rude). */
static void add_response(cursor_t *c, strbuf_t *b, int topic, const double w[3])
{
    double total = w[0] + w[1] + w[2];
    uint32_t n = 2 + cur_below(c, 7);
    for (uint32_t i = 0; i < n; i++) {
        double u = cur_uniform(c) * total;
        int kind = u < w[0] ? KIND_NEUTRAL : u < w[0] + w[1] ? KIND_TOPIC : KIND_RUDE;
        if (i)
            strbuf_puts(b, " ");
        add_sentence(c, b, kind, topic);
    }
}

/* Pair responses: kind weights uniform in [0,1) each (a small floor keeps the total
 * positive), so responses range from all filler to all insult to all on-topic. */
static void add_pair_response(cursor_t *c, strbuf_t *b, int topic)
{
    double w[3];
    for (int k = 0; k < 3; k++)
        w[k] = cur_uniform(c) + 1e-6;
    add_response(c, b, topic, w);
}

int data_synth_response(uint64_t seed, const char *stream_name, uint64_t id, uint32_t attempt,
                        int topic, char **out, err_t *e)
{
    *out = NULL;
    if (topic < 0 || topic >= SYNTH_NTOPICS)
        return err_set(e, ERR_INPUT, "no synthetic topic number %d (0..%d)", topic,
                       SYNTH_NTOPICS - 1);
    cursor_t c = cursor(seed, stream_name, id, (uint64_t)attempt << 20);
    strbuf_t b = {0};
    add_pair_response(&c, &b, topic);
    return strbuf_finish(&b, out, "synthetic text", e);
}

void data_synth_pair_free(data_synth_pair_t *p)
{
    if (!p)
        return;
    data_pair_free(&p->pair);
    memset(p, 0, sizeof *p);
}

int data_synth_make_pair(uint64_t seed, uint64_t index, const data_token_counter_t *tc,
                         data_synth_pair_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    char *request = NULL, *ra = NULL, *rb = NULL;
    int topic, rc = data_synth_request(seed, index, &request, &topic, e);
    if (rc)
        return rc;
    strbuf_t pb = {0};
    strbuf_puts(&pb, DATA_HUMAN_TAG " ");
    strbuf_puts(&pb, request);
    strbuf_puts(&pb, DATA_ASSISTANT_TAG);
    free(request);
    if ((rc = strbuf_finish(&pb, &out->pair.prompt, "synthetic text", e)))
        return rc;
    out->topic = topic;

    data_synth_score_t sa, sbs;
    if ((rc = data_synth_response(seed, "data.synth.response_a", index, 0, topic, &ra, e)))
        goto fail;
    data_synth_score(ra, topic, tc, &sa);
    for (uint32_t t = 0;; t++) {
        if (t == DATA_SYNTH_MAX_ATTEMPTS) {
            rc = err_set(e, ERR_FAIL, "synthetic pair %llu: second response tied with the "
                         "first %d times", (unsigned long long)index, DATA_SYNTH_MAX_ATTEMPTS);
            goto fail;
        }
        if ((rc = data_synth_response(seed, "data.synth.response_b", index, t, topic, &rb, e)))
            goto fail;
        data_synth_score(rb, topic, tc, &sbs);
        if (data_synth_score_cmp(&sa, &sbs) != 0)
            break;
        free(rb);
        rb = NULL;
        out->redraws++;
    }
    bool a_better = data_synth_score_cmp(&sa, &sbs) > 0;
    out->flipped = rng_uniform_double(seed, rng_stream("data.synth.flip", 0), index) <
                   DATA_SYNTH_FLIP_RATE;
    bool a_chosen = a_better != out->flipped;
    out->pair.chosen = a_chosen ? ra : rb;
    out->pair.rejected = a_chosen ? rb : ra;
    out->score_chosen = a_chosen ? sa : sbs;
    out->score_rejected = a_chosen ? sbs : sa;
    return ERR_OK;
fail:
    free(ra);
    free(rb);
    data_synth_pair_free(out);
    return rc;
}

int data_synth_corpus_doc(uint64_t seed, uint64_t index, char **out, err_t *e)
{
    cursor_t c = cursor(seed, "data.synth.corpus", index, 0);
    strbuf_t b = {0};
    int topic;
    strbuf_puts(&b, DATA_HUMAN_TAG " ");
    add_request(&c, &b, &topic);
    strbuf_puts(&b, DATA_ASSISTANT_TAG " ");
    /* One in four each: filler only, on-topic only, rude only, mixed as in pairs. */
    static const double modes[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
    uint32_t mode = cur_below(&c, 4);
    if (mode < 3)
        add_response(&c, &b, topic, modes[mode]);
    else
        add_pair_response(&c, &b, topic);
    return strbuf_finish(&b, out, "synthetic text", e);
}

/* ---- files ----------------------------------------------------------------------------- */

static int write_json_line(atomic_file_t *af, cJSON *obj, const char *path, err_t *e)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s)
        return err_set(e, ERR_NOMEM, "out of memory formatting %s", path);
    int bad = fputs(s, af->fp) == EOF || fputc('\n', af->fp) == EOF;
    free(s);
    return bad ? err_errno(e, ERR_FAIL, "writing %s", path) : ERR_OK;
}

static char *join3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = malloc(la + lb + lc + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb);
        memcpy(s + la + lb, c, lc + 1);
    }
    return s;
}

int data_synth_write_pairs(const char *path, uint64_t seed, size_t n,
                           const data_token_counter_t *tc, data_synth_stats_t *stats, err_t *e)
{
    data_synth_stats_t st = {0};
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    double sum_c = 0, sum_r = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        data_synth_pair_t p;
        if ((rc = data_synth_make_pair(seed, i, tc, &p, e)))
            break;
        /* The dialogue form of HH-RLHF: the tag, one space, the response. */
        char *c = join3(p.pair.prompt, " ", p.pair.chosen);
        char *r = join3(p.pair.prompt, " ", p.pair.rejected);
        cJSON *o = cJSON_CreateObject();
        if (c && r && o) {
            cJSON_AddStringToObject(o, "chosen", c);
            cJSON_AddStringToObject(o, "rejected", r);
            cJSON_AddStringToObject(o, "topic", data_synth_topic_names[p.topic]);
            cJSON_AddNumberToObject(o, "score_chosen", p.score_chosen.value);
            cJSON_AddNumberToObject(o, "score_rejected", p.score_rejected.value);
            cJSON_AddBoolToObject(o, "flipped", p.flipped);
            rc = write_json_line(&af, o, path, e);
        } else {
            cJSON_Delete(o);
            rc = err_set(e, ERR_NOMEM, "out of memory writing %s", path);
        }
        free(c);
        free(r);
        st.pairs++;
        st.flipped += p.flipped;
        st.redraws += p.redraws;
        st.too_short_chosen += p.score_chosen.too_short;
        st.too_short_rejected += p.score_rejected.too_short;
        sum_c += p.score_chosen.value;
        sum_r += p.score_rejected.value;
        data_synth_pair_free(&p);
    }
    if (rc) {
        atomic_abort(&af);
        return rc;
    }
    if ((rc = atomic_commit(&af, e)))
        return rc;
    if (st.pairs) {
        st.mean_score_chosen = sum_c / (double)st.pairs;
        st.mean_score_rejected = sum_r / (double)st.pairs;
    }
    if (stats)
        *stats = st;
    return ERR_OK;
}

int data_synth_write_corpus(const char *path, uint64_t seed, size_t n, err_t *e)
{
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        char *doc;
        if ((rc = data_synth_corpus_doc(seed, i, &doc, e)))
            break;
        cJSON *o = cJSON_CreateObject();
        if (o)
            cJSON_AddStringToObject(o, "text", doc);
        rc = write_json_line(&af, o, path, e);
        free(doc);
    }
    if (rc) {
        atomic_abort(&af);
        return rc;
    }
    return atomic_commit(&af, e);
}
