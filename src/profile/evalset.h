/* evalset: the fixed held-out tokens a perplexity is measured on, and where they come from.
 *
 * A sequence is token ids with the positions that are scored: position t is scored when
 * the model's prediction of token t+1 there counts toward the perplexity. Two rules,
 * chosen by the caller (docs/sensitivity.md):
 *   all       every next-token prediction of the sequence (t = 0 .. n-2);
 *   response  the predictions of the response tokens only, end-of-turn id included
 *             (t = prompt_len-1 .. n-2), what rlhf_batch_make's mask marks.
 * The set takes sequences in the order given until exactly `tokens` predictions are
 * scored: the last sequence is cut after its needed tokens (a set that runs out first
 * scores fewer and says so). For batching, the chosen sequences are sorted by length,
 * longest first (ties in input order), and packed into right-padded batches of at most
 * `batch_tokens` tokens (rows x longest row; always at least one row), so little
 * compute goes to padding. Everything is a pure function of the inputs.
 *
 * Text comes from an HH-RLHF file or a split record (the run's held-out split): prompt +
 * chosen response through rlhf/text.h, exactly as every other stage tokenizes them.
 */
#ifndef MXRLHF_PROFILE_EVALSET_H
#define MXRLHF_PROFILE_EVALSET_H

#include <stdbool.h>
#include <stdint.h>

#include <cJSON.h>

#include "data/hh.h"
#include "data/split.h"
#include "model/qwen2.h"
#include "rlhf/text.h"
#include "util/err.h"
#include "util/opts.h"

typedef enum profile_score {
    PROFILE_SCORE_ALL,      /* "all" */
    PROFILE_SCORE_RESPONSE  /* "response" */
} profile_score_t;

int profile_score_from_name(const char *name, profile_score_t *out); /* 0 or -1 */
const char *profile_score_name(profile_score_t s);

/* How the evaluation set is made (flat keys in the "sensitivity", "phase_sensitivity" and
 * "policies" sections of the configuration file, the same in each so they can measure the
 * same tokens: profile_eval_opts_table is embedded by their tables). */
typedef struct profile_eval_opts {
    long tokens;                 /* "eval_tokens": scored predictions; <= 0: all */
    profile_score_t score;       /* "score": which predictions count */
    rlhf_template_t tmpl;        /* "template": how pairs become ids */
    int max_prompt_tokens;       /* "max_prompt_tokens" (the data split's default) */
    int max_response_tokens;     /* "max_response_tokens" */
    long batch_tokens;           /* "batch_tokens": rows x length per forward */
    char split[32];              /* "split": split of a split record */
} profile_eval_opts_t;

extern const opt_table_t profile_eval_opts_table;
int profile_eval_opts_check(const profile_eval_opts_t *o, const char *ctx, err_t *e);

/* One sequence to score: ids[0, n), predictions at positions [first, n-1) scored. */
typedef struct profile_seq {
    const int32_t *ids;
    int n;
    int first;
} profile_seq_t;

typedef struct profile_eval_batch {
    qwen2_batch_t b;        /* points at ids and len below */
    int32_t *ids;           /* (B, T), padding holds 0 */
    int32_t *len;           /* (B) */
    int32_t *targets;       /* (B, T): next id where scored, else -1 */
    long scored;
} profile_eval_batch_t;

typedef struct profile_evalset {
    profile_eval_batch_t *batches;
    int nbatch;
    int nseq;               /* sequences used (the last possibly cut) */
    long tokens;            /* scored predictions in all */
    long requested;         /* what was asked (<= 0: everything) */
    int max_rows, max_seq;  /* the largest batch: rows, and the longest sequence */
    long max_batch_tokens;  /* largest rows x T */
    uint64_t fingerprint;   /* of every batch's ids, lengths and targets */
} profile_evalset_t;

/* Builds the set from sequences (copied). tokens <= 0 takes them all. Sequences with no
 * scored position are skipped. ERR_INPUT when nothing is scored at all. */
int profile_evalset_build(const profile_seq_t *seqs, int nseq, long tokens, long batch_tokens,
                          profile_evalset_t *out, err_t *e);
void profile_evalset_free(profile_evalset_t *s);

/* Tokenizes prompt + chosen response of pairs[0..n) in order (only as many as the token
 * budget needs) and builds the set. */
int profile_evalset_from_pairs(rlhf_text_t *t, const data_pair_t *const *pairs, size_t n,
                               profile_score_t score, long tokens, long batch_tokens,
                               profile_evalset_t *out, err_t *e);

/* The pairs of an evaluation file: a split record (JSON with "format":
 * "mxrlhf-data-split"; its split `split`, whose source file is read and checked against
 * the record; a relative source path is tried as given, then beside the record) or an
 * HH-RLHF .jsonl(.gz) file (every usable pair, in file order). `desc` receives a short
 * description for records ("split eval_prompts of results/split.json (100 pairs)").
 * Free with profile_eval_source_free. */
typedef struct profile_eval_source {
    data_hh_t hh;
    data_split_record_t rec;
    bool is_split;
    const data_pair_t **pairs;
    size_t n;
    char desc[512];
} profile_eval_source_t;

int profile_eval_source_load(const char *path, const char *split, profile_eval_source_t *out,
                             err_t *e);
void profile_eval_source_free(profile_eval_source_t *s);

#endif
