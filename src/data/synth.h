/* synth: the synthetic preference task, the embedded default that needs no download.
 *
 * The task (fixed by issue 6 so that it cannot be made easy; docs/data.md has the full
 * definition and the best achievable score):
 *  - prompts are short requests about one of DATA_SYNTH_NTOPICS (24) topics, built from
 *    an opener, one of 10 templates and a closer ("Tell me about gardening."), in the
 *    HH-RLHF shape "\n\nHuman: <request>\n\nAssistant:";
 *  - each topic has a list of 32 topic words; one shared list has 32 mild insults;
 *  - the ground-truth score of a response on topic t is
 *        (D - R) / L
 *    D = number of DISTINCT words of t's list used, R = number of OCCURRENCES of rude
 *    words, L = number of whitespace-separated words; words are matched after deleting
 *    ASCII punctuation and lowercasing ASCII letters. A response of fewer than 16 tokens
 *    (or with L = 0) scores the minimum, -1;
 *  - preference pairs are two generated responses to one prompt, ordered by the score
 *    (ties are redrawn), with 10% of labels flipped.
 * Everything is a pure function of (seed, index) through util/rng.h: pair k and corpus
 * document k do not depend on how many others are generated.
 */
#ifndef MXRLHF_DATA_SYNTH_H
#define MXRLHF_DATA_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/data.h"
#include "util/err.h"

#define DATA_SYNTH_MIN_TOKENS 16   /* shorter responses score DATA_SYNTH_MIN_SCORE */
#define DATA_SYNTH_MIN_SCORE (-1.0)
#define DATA_SYNTH_BEST_SCORE 1.0  /* see data_synth_best_response and docs/data.md */
#define DATA_SYNTH_FLIP_RATE 0.10
#define DATA_SYNTH_MAX_ATTEMPTS 1000 /* tie redraws before a pair is declared impossible */
#define DATA_SYNTH_DEFAULT_CORPUS_DOCS 20000 /* pretraining documents generated */

/* ---- the fixed lists ----------------------------------------------------------------- */
int data_synth_ntopics(void);
const char *data_synth_topic_name(int topic);          /* "gardening"; NULL if out of range */
size_t data_synth_topic_words(int topic, const char *const **words);
size_t data_synth_rude_words(const char *const **words); /* adjectives then nouns */

/* The fixed texts meant to be neutral, i = 0 .. data_synth_nneutral()-1: prompt openers,
 * templates and closers, filler sentences, on-topic and rude sentence templates (with
 * their "$t", "$j", "$J", "$n", "$N" slots and the "%s" for the topic name). For the test
 * that none of their words is a topic or rude word. */
size_t data_synth_nneutral(void);
const char *data_synth_neutral_text(size_t i);

/* The topic of a prompt: the one topic name occurring as a whole word (case-insensitive)
 * in the last Human turn (or the whole text when it has no "\n\nHuman:"). -1 when none or
 * more than one. */
int data_synth_topic_of_prompt(const char *prompt);

/* ---- the ground truth ---------------------------------------------------------------- */
typedef struct data_synth_score {
    double value;          /* num / den */
    long long num, den;    /* exact: D - R over L, or -1 over 1 when too short */
    size_t distinct_topic; /* D */
    size_t rude;           /* R (occurrences) */
    size_t words;          /* L */
    size_t tokens;         /* from the counter */
    bool too_short;        /* tokens < DATA_SYNTH_MIN_TOKENS or L == 0 */
} data_synth_score_t;

/* Scores a response to a prompt on `topic` (topic -1: no topic words count). tc may be
 * NULL: tokens are then whitespace-separated words. */
void data_synth_score(const char *response, int topic, const data_token_counter_t *tc,
                      data_synth_score_t *out);

/* Exact comparison of two scores (cross-multiplied): -1, 0 or 1. */
int data_synth_score_cmp(const data_synth_score_t *a, const data_synth_score_t *b);

/* A best response: the first DATA_SYNTH_MIN_TOKENS words of the topic's list, one space
 * apart. It scores DATA_SYNTH_BEST_SCORE under any counter that gives every word at least
 * one token. Caller frees. */
int data_synth_best_response(int topic, char **out, err_t *e);

/* ---- generators ---------------------------------------------------------------------- */

/* The user request of prompt `index` (no tags) and its topic. Caller frees. */
int data_synth_request(uint64_t seed, uint64_t index, char **request, int *topic, err_t *e);

/* One generated response (what pairs are made of): 2-8 sentences, each neutral filler,
 * on-topic or rude, with kind weights drawn per response. `stream_name` and `id` name the
 * draws (rng_stream(stream_name, id)); `attempt` selects a fresh sequence for redraws. */
int data_synth_response(uint64_t seed, const char *stream_name, uint64_t id, uint32_t attempt,
                        int topic, char **out, err_t *e);

typedef struct data_synth_pair {
    data_pair_t pair;    /* HH-shaped prompt; chosen/rejected after the flip; line = 0 */
    int topic;
    data_synth_score_t score_chosen, score_rejected; /* of the texts as labelled */
    bool flipped;        /* the label disagrees with the ground truth */
    uint32_t redraws;    /* tie redraws of the second response */
} data_synth_pair_t;

/* Pair `index`: prompt, response A, response B (redrawn while tied with A, up to
 * DATA_SYNTH_MAX_ATTEMPTS), ordered by score, then flipped with probability 0.10. */
int data_synth_make_pair(uint64_t seed, uint64_t index, const data_token_counter_t *tc,
                         data_synth_pair_t *out, err_t *e);
void data_synth_pair_free(data_synth_pair_t *p);

/* Pretraining document `index`: "\n\nHuman: <request>\n\nAssistant: <response>", the
 * response neutral-only, on-topic-only, rude-only or mixed (one in four each). */
int data_synth_corpus_doc(uint64_t seed, uint64_t index, char **out, err_t *e);

typedef struct data_synth_stats {
    size_t pairs, flipped, redraws, too_short_chosen, too_short_rejected;
    double mean_score_chosen, mean_score_rejected; /* of the texts as labelled */
} data_synth_stats_t;

/* Pairs 0..n-1 as HH-RLHF JSON lines ({"chosen": prompt + " " + response, "rejected":
 * ..., "topic", "score_chosen", "score_rejected", "flipped"}), written atomically, so
 * data_hh_read and the splitter serve both data sets. stats may be NULL. */
int data_synth_write_pairs(const char *path, uint64_t seed, size_t n,
                           const data_token_counter_t *tc, data_synth_stats_t *stats, err_t *e);

/* Documents 0..n-1 as JSON lines {"text": ...}, written atomically. */
int data_synth_write_corpus(const char *path, uint64_t seed, size_t n, err_t *e);

#endif
