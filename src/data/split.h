/* split: draws N preference pairs with a seed and splits them, disjoint by prompt text,
 * into the sets every later stage uses; writes and reads the record of what went where.
 *
 * Drawing: the usable pairs of a file (data_hh_t, file order) are shuffled by Fisher-Yates
 * with Philox draws keyed by (seed, stream "data.split.shuffle", index), so the same seed
 * gives the same pairs on every machine. The shuffled pool is walked in order; a pair is
 * dropped when its prompt has more than max_prompt_tokens tokens ("prompt_too_long") or
 * either response more than max_response_tokens ("response_too_long"), and the walk goes
 * on, so N pairs are still delivered while the pool lasts. Fewer than N delivered is not
 * an error: the record says requested vs delivered and the caller decides.
 *
 * Splitting: selected pairs with identical prompt text form one group; groups, in order of
 * first appearance in the draw, fill the splits in the order below up to cumulative
 * targets (fraction x delivered, largest-remainder rounding). A group never straddles two
 * splits, so no prompt text is shared across splits, and each split's size is within one
 * group size of its target. Inside a split, pairs keep the draw order.
 */
#ifndef MXRLHF_DATA_SPLIT_H
#define MXRLHF_DATA_SPLIT_H

#include <stdbool.h>
#include <stdint.h>

#include "data/data.h"
#include "data/hh.h"
#include "util/err.h"

typedef enum {
    DATA_SPLIT_RM_TRAIN = 0, /* reward-model training pairs                       */
    DATA_SPLIT_RM_EVAL,      /* reward-model evaluation pairs (accuracy, margin)  */
    DATA_SPLIT_JUDGE_TRAIN,  /* a second reward model, the held-out judge          */
    DATA_SPLIT_PPO,          /* PPO prompts                                        */
    DATA_SPLIT_EVAL,         /* held-out evaluation prompts (win rates)            */
    DATA_NSPLITS
} data_split_t;

/* "rm_train", "rm_eval", "judge_train", "ppo_prompts", "eval_prompts"; -1 for unknown. */
const char *data_split_name(int split);
int data_split_from_name(const char *name);

typedef enum {
    DATA_DROP_PROMPT_TOO_LONG = 0,
    DATA_DROP_RESPONSE_TOO_LONG,
    DATA_NDROPS
} data_drop_t;

const char *data_drop_name(int drop); /* "prompt_too_long", "response_too_long" */

#define DATA_DEFAULT_PAIRS 1000
#define DATA_DEFAULT_SEED 1234
#define DATA_DEFAULT_MAX_PROMPT_TOKENS 512
#define DATA_DEFAULT_MAX_RESPONSE_TOKENS 256
/* split fractions, in data_split_t order */
#define DATA_DEFAULT_RM_TRAIN 0.35
#define DATA_DEFAULT_RM_EVAL 0.10
#define DATA_DEFAULT_JUDGE_TRAIN 0.25
#define DATA_DEFAULT_PPO 0.20
#define DATA_DEFAULT_EVAL 0.10

typedef struct data_select_opts {
    size_t pairs;               /* N to deliver */
    uint64_t seed;
    size_t max_prompt_tokens;   /* 0: no limit */
    size_t max_response_tokens; /* 0: no limit; applies to chosen and rejected */
    double fractions[DATA_NSPLITS]; /* each in [0,1], summing to 1 (within 1e-9) */
    data_token_counter_t counter;   /* fn NULL: whitespace-separated words */
} data_select_opts_t;

/* The DATA_DEFAULT_* values above. */
void data_select_opts_default(data_select_opts_t *o);

typedef struct data_split_record {
    /* the source file */
    char *source_path;
    uint64_t source_bytes;
    uint32_t source_crc32;
    bool source_gzip;
    bool skip_bad;
    size_t source_lines, source_records, source_pairs;
    data_lines_t rejected[DATA_HH_NREASONS];  /* by the reader, see hh.h */
    /* the draw */
    uint64_t seed;
    size_t pairs_requested, pairs_delivered, examined;
    size_t max_prompt_tokens, max_response_tokens;
    char *token_counter;
    data_lines_t dropped[DATA_NDROPS];        /* source lines, in draw order */
    size_t prompt_groups, largest_prompt_group;
    /* the splits: source line numbers in draw order */
    double fractions[DATA_NSPLITS];
    data_lines_t split[DATA_NSPLITS];
} data_split_record_t;

/* Draws and splits. On failure *rec is left empty (safe to free). */
int data_split_make(const data_hh_t *src, const data_select_opts_t *o,
                    data_split_record_t *rec, err_t *e);

/* The record as JSON (docs/data.md lists the fields), written atomically. */
int data_split_write(const char *path, const data_split_record_t *rec, err_t *e);

/* Reads a record back, checking its format, counts and disjointness. */
int data_split_read(const char *path, data_split_record_t *rec, err_t *e);

void data_split_free(data_split_record_t *rec);

/* The pairs of one split, in record order, as pointers into src (caller frees *out only).
 * Fails with ERR_INPUT when src is not the file the record was made from (size or
 * CRC-32 differ) or a recorded line is not a usable pair in it. */
int data_split_pairs(const data_hh_t *src, const data_split_record_t *rec, int split,
                     const data_pair_t ***out, size_t *n, err_t *e);

#endif
