/* rm: the reward model. A Qwen2 trunk (initialised from the SFT model) with the scalar
 * head score.weight (transformers' Qwen2ForSequenceClassification, num_labels 1), read at
 * each sequence's last real token, trained with the Bradley-Terry loss
 *     loss = mean over pairs of -log sigmoid(r_chosen - r_rejected).
 * A pair is encoded as two sequences with rlhf/text.h (prompt, response, end of turn), so
 * the score is read at the end-of-turn token, after the whole response. A step takes
 * batch_size pairs as one forward of 2*batch_size rows (chosen rows, then rejected rows).
 * Pairs are visited in a seeded order per epoch, grouped by length as in SFT.
 *
 * Metrics use the names of TRL's RewardTrainer (trl/trainer/reward_trainer.py, which logs
 * them with an "eval_" prefix in evaluation): accuracy (share of pairs with
 * r_chosen > r_rejected; ties count as wrong), margin (mean r_chosen - r_rejected),
 * mean_reward / min_reward / max_reward (over all chosen and rejected scores), loss (the
 * Bradley-Terry loss), num_tokens. TRL averages per-batch values; here each is computed
 * over the whole evaluation set at once.
 *
 * The negative control: with shuffle_labels each training pair's chosen and rejected are
 * swapped with probability 1/2 (Philox, keyed by the seed and the pair's index), so the
 * labels carry no information and evaluation accuracy must stay near 50%.
 */
#ifndef MXRLHF_RLHF_RM_H
#define MXRLHF_RLHF_RM_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "data/data.h"
#include "rlhf/text.h"
#include "rlhf/train_common.h"
#include "util/err.h"

typedef struct rlhf_rm_opts {
    long steps;
    double max_epochs;       /* at most this many passes over the training pairs (0: no cap):
                                a small data set (HH's 350 rm_train pairs) is not memorised */
    int batch_size;          /* pairs per step */
    rlhf_optim_t optim;
    uint64_t seed;           /* pair order, score-head initialisation, label shuffle */
    int max_prompt_tokens, max_response_tokens;
    int template_;           /* rlhf_template_t */
    bool shuffle_labels;     /* negative control */
    int eval_every;          /* evaluate every N steps (0: only at the end) */
    int save_dtype;          /* index into rlhf_dtype_names */
    int log_every;
} rlhf_rm_opts_t;

/* The "rm" and "judge" sections. */
extern const opt_table_t rlhf_rm_opts_table;
void rlhf_rm_opts_default(rlhf_rm_opts_t *o);

/* TRL's metric set over a set of pairs. */
typedef struct rlhf_rm_metrics {
    long pairs;
    double accuracy, margin, mean_reward, min_reward, max_reward, loss;
    long num_tokens;         /* real tokens scored (both sequences of every pair) */
    long ties;               /* pairs with r_chosen == r_rejected (counted as wrong) */
} rlhf_rm_metrics_t;

typedef struct rlhf_rm_result {
    rlhf_rm_metrics_t eval;        /* on the evaluation pairs, after training */
    rlhf_rm_metrics_t train_last;  /* over the training pairs of the last 10% of steps */
    long steps, train_pairs, tokens;
    double seconds, tokens_per_s;
    size_t params;
} rlhf_rm_result_t;

/* Trains a reward model from the model in model_dir (a causal LM directory with
 * tokenizer.json; its lm_head is dropped, score.weight initialised from the seed, or read
 * when the directory already has one) on train[0..ntrain), evaluates on eval[0..neval)
 * (may be 0), and writes out_dir: config.json + model.safetensors
 * (Qwen2ForSequenceClassification), tokenizer files, train_log.csv (with eval_accuracy
 * where evaluated), rm_metrics.json. `name` labels the progress lines and metrics
 * ("rm", "judge"). */
int rlhf_rm_run(backend_t *be, const rlhf_rm_opts_t *o, const char *name, const char *model_dir,
                const data_pair_t *const *train, size_t ntrain, const data_pair_t *const *eval,
                size_t neval, const char *out_dir, const rlhf_log_t *log, rlhf_rm_result_t *res,
                err_t *e);

/* Scores pairs with a reward-model directory (score head required) and computes the
 * metrics; per-pair scores go to chosen/rejected when not NULL. */
int rlhf_rm_evaluate_dir(backend_t *be, const rlhf_rm_opts_t *o, const char *rm_dir,
                         const data_pair_t *const *pairs, size_t n, rlhf_rm_metrics_t *out,
                         float *chosen, float *rejected, err_t *e);

/* The same with the reward model under plan `plan` of policies_path (role reward, reward
 * phase); policies_path NULL: unquantized. */
int rlhf_rm_evaluate_dir_plan(backend_t *be, const rlhf_rm_opts_t *o, const char *rm_dir,
                              const char *policies_path, const char *plan,
                              const data_pair_t *const *pairs, size_t n, rlhf_rm_metrics_t *out,
                              float *chosen, float *rejected, err_t *e);

/* Pairs tokenized as the reward model reads them (rlhf/text.h: prompt, response, end of
 * turn), for callers that score them with a model of their own (the phase sensitivity,
 * profile/phase.h): c[i] the chosen, r[i] the rejected sequence of pair i. */
typedef struct rlhf_rm_pairs {
    rlhf_seq_t *c, *r;
    int *len;            /* longer of the two */
    size_t n;
    int maxlen;
} rlhf_rm_pairs_t;

int rlhf_rm_pairs_make(rlhf_text_t *t, const data_pair_t *const *pairs, size_t n,
                       rlhf_rm_pairs_t *out, err_t *e);
void rlhf_rm_pairs_free(rlhf_rm_pairs_t *d);

/* The batch the reward model scores pairs idx[0..nb) in: rows 0..nb-1 the chosen
 * sequences, nb..2nb-1 the rejected ones, right-padded with `pad` (rlhf_batch_make). */
int rlhf_rm_pairs_batch(const rlhf_rm_pairs_t *d, const size_t *idx, int nb, int32_t pad,
                        rlhf_batch_t *out, err_t *e);

/* TRL's metrics from the scores of n pairs (tokens: what num_tokens reports). */
void rlhf_rm_metrics_of(const float *chosen, const float *rejected, size_t n, long tokens,
                        rlhf_rm_metrics_t *out);

/* ERR_INPUT unless dir's config.json names a sequence-classification model (a score head):
 * anything else would get a freshly initialised head and meaningless scores. */
int rlhf_rm_check_dir(const char *dir, err_t *e);

/* The metrics as a JSON object with TRL's names (prefix "" or "eval_"). */
cJSON *rlhf_rm_metrics_json(const rlhf_rm_metrics_t *m, const char *prefix);

#endif
