/* sft: next-token training of a Qwen2 model: pretraining from scratch on a corpus (the
 * embedded default's tiny model) and supervised fine-tuning on chosen responses.
 *
 * Pretraining: the corpus documents are encoded, each followed by <|endoftext|>, and
 * concatenated into one stream, which is cut into rows of seq_len tokens. Each step takes
 * batch_size rows (the row order is a seeded permutation per epoch) and minimises the
 * mean next-token loss over every position that has a next token in its row. The model
 * starts from qwen2_init_normal(seed, init_range) (or qwen2_init_philox: model.init).
 *
 * SFT: each (prompt, chosen response) pair is encoded with rlhf/text.h (prompt ids,
 * response ids, end of turn) and the loss is the mean over the batch of the next-token
 * loss at the positions whose next token is a response token (the mask rlhf_batch_make
 * builds), so the prompt is context and never a target. Pairs are visited in a seeded
 * order per epoch; batches are grouped by length inside windows of 8 batches to waste
 * less on padding.
 *
 * Both: AdamW with warm-up and a cosine/linear/constant schedule (train_common.h),
 * global-norm clipping, float32 weights. Deterministic: the same options, data and seed
 * give the same weights bit for bit (the backend is deterministic for any thread count).
 * Output: a Hugging Face directory (config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json) plus train_log.csv and a metrics JSON (docs/cli.md).
 */
#ifndef MXRLHF_RLHF_SFT_H
#define MXRLHF_RLHF_SFT_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "data/data.h"
#include "rlhf/text.h"
#include "rlhf/train_common.h"
#include "util/err.h"

/* ---- the embedded default's model ("model" section) ---------------------------------- */

enum { RLHF_INIT_NORMAL, RLHF_INIT_UNIFORM };

typedef struct rlhf_model_opts {
    int hidden, layers, heads, kv_heads, intermediate, max_position;
    double rope_theta, rms_eps;
    bool tie;           /* lm_head tied to the embedding */
    double init_range;  /* the spread of the initial weights: std for "normal", range for "uniform" */
    int init;           /* RLHF_INIT_NORMAL (qwen2_init_normal, transformers' init) or
                         * RLHF_INIT_UNIFORM (qwen2_init_philox, before issue 7's fix) */
} rlhf_model_opts_t;

/* The "model" section (defaults in the table: docs/rlhf.md says why). */
extern const opt_table_t rlhf_model_opts_table;
void rlhf_model_opts_default(rlhf_model_opts_t *o);

/* ---- pretraining ("pretrain" section) ------------------------------------------------ */

typedef struct rlhf_pretrain_opts {
    long tokens;        /* training tokens: steps = ceil(tokens / (batch_size * seq_len)) */
    int seq_len, batch_size;
    rlhf_optim_t optim;
    uint64_t seed;      /* initial weights and row order */
    int log_every;      /* progress line every N steps (0: only the last) */
} rlhf_pretrain_opts_t;

extern const opt_table_t rlhf_pretrain_opts_table;
void rlhf_pretrain_opts_default(rlhf_pretrain_opts_t *o);

/* ---- SFT ("sft" section) ------------------------------------------------------------- */

typedef struct rlhf_sft_opts {
    long steps;
    int batch_size;
    rlhf_optim_t optim;
    uint64_t seed;          /* example order */
    int max_prompt_tokens, max_response_tokens;  /* rlhf/text.h truncation */
    int template_;          /* rlhf_template_t */
    int save_dtype;         /* index into rlhf_dtype_names */
    int log_every;
    long eval_pairs;        /* at most this many evaluation pairs are scored (0: all) */
} rlhf_sft_opts_t;

extern const opt_table_t rlhf_sft_opts_table;
void rlhf_sft_opts_default(rlhf_sft_opts_t *o);

/* ---- results ------------------------------------------------------------------------- */

typedef struct rlhf_train_summary {
    long steps, tokens;          /* optimizer steps; real (non-padding) tokens processed */
    long examples;               /* pretraining rows or SFT pairs available */
    double seconds, tokens_per_s;
    double loss_first, loss_last;/* mean training loss over the first / last 10% of steps */
    double eval_loss;            /* SFT: masked loss on the evaluation pairs (NAN: none)   */
    long eval_pairs;
    size_t params;               /* parameters of the model (floats) */
} rlhf_train_summary_t;

/* Pretrains a fresh model of size `mo` on the documents of `corpus` (a .jsonl file of
 * {"text": ...} lines) tokenized with `tokenizer_json`, and writes the directory out_dir
 * (config.json with eos/bos <|endoftext|>, model.safetensors in float32, tokenizer.json,
 * tokenizer_config.json, train_log.csv, pretrain_metrics.json). */
int rlhf_pretrain_run(backend_t *be, const rlhf_model_opts_t *mo, const rlhf_pretrain_opts_t *po,
                      const char *tokenizer_json, const char *corpus, const char *out_dir,
                      const rlhf_log_t *log, rlhf_train_summary_t *sum, err_t *e);

/* Fine-tunes the model in model_dir (which must hold tokenizer.json) on the chosen
 * responses of pairs[0..n), then measures the masked loss on the chosen responses of the
 * first eval_pairs of eval[0..neval) (neval may be 0), and writes out_dir (model, tokenizer files, train_log.csv,
 * sft_metrics.json). */
int rlhf_sft_run(backend_t *be, const rlhf_sft_opts_t *o, const char *model_dir,
                 const data_pair_t *const *pairs, size_t n, const data_pair_t *const *eval,
                 size_t neval, const char *out_dir, const rlhf_log_t *log,
                 rlhf_train_summary_t *sum, err_t *e);

/* The SFT targets of a batch made by rlhf_batch_make: targets[i] = ids[i + 1] where
 * mask[i] is set (the position predicts a response token), else -1. Returns how many. */
long rlhf_sft_targets(const rlhf_batch_t *b, int32_t *targets);

/* Mean masked next-token loss (response tokens only) of the model in model_dir over the
 * chosen responses of pairs[0..n) (no training; for tests and reports). */
int rlhf_sft_eval_loss(backend_t *be, const rlhf_sft_opts_t *o, const char *model_dir,
                       const data_pair_t *const *pairs, size_t n, double *loss, err_t *e);

#endif
