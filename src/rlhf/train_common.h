/* train_common: the few pieces the training stages (pretraining, SFT, reward model) share:
 * the optimizer's options (a table the stages' sections embed), AdamW settings with the
 * learning-rate schedule, the seeded order of examples per epoch,
 * progress lines with time left, a small training log (CSV), and the gradients averaged
 * over data-parallel ranks.
 *
 * Deliberately small: each stage owns its training loop; nothing here knows a model or a
 * data set. Nothing here prints: progress goes through a caller-supplied rlhf_log_t (the
 * command prints it; tests collect or drop it).
 */
#ifndef MXRLHF_RLHF_TRAIN_COMMON_H
#define MXRLHF_RLHF_TRAIN_COMMON_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dist/dist.h"
#include "model/qwen2.h"
#include "util/err.h"
#include "util/opts.h"

/* ---- data parallelism ------------------------------------------------------------------ */

/* Floats per all-reduce bucket of rlhf_grads_allreduce (16 MiB). */
#define RLHF_GRAD_BUCKET ((size_t)1 << 22)

/* A training model's gradients averaged over the ranks of c, after backward and before the
 * optimizer step: the gradient buffer in buckets of RLHF_GRAD_BUCKET floats, each copied to
 * the host, summed over the ranks (dist_allreduce: every rank gets the same bits), divided
 * by the rank count and copied back. Nothing with one rank. Not overlapped with backward
 * (the buckets go after it): docs/distributed.md. */
int rlhf_grads_allreduce(dist_comm_t *c, qwen2_model_t *m, err_t *e);

/* ---- optimizer and schedule ------------------------------------------------------------ */

typedef enum rlhf_sched {
    RLHF_SCHED_CONSTANT,
    RLHF_SCHED_LINEAR,
    RLHF_SCHED_COSINE
} rlhf_sched_t;

extern const char *const rlhf_sched_names[]; /* "constant", "linear", "cosine", NULL */
extern const opt_enum_t rlhf_sched_enum;

typedef struct rlhf_optim {
    double lr;             /* peak learning rate                                       */
    double min_lr_ratio;   /* the schedule ends at lr * min_lr_ratio                   */
    long warmup_steps;     /* linear warm-up from lr/warmup_steps to lr                */
    int schedule;          /* rlhf_sched_t                                             */
    double weight_decay, beta1, beta2, eps;
    double max_grad_norm;  /* global-norm clipping; <= 0: none                         */
} rlhf_optim_t;

/* The optimizer keys (lr, min_lr_ratio, warmup_steps, schedule, weight_decay, beta1, beta2,
 * eps, max_grad_norm), embedded by the pretrain, sft, rm and judge sections (OPT_SUB rows
 * with their own lr and warm-up). */
extern const opt_table_t rlhf_optim_table;

/* Learning rate for optimizer step s (1-based) of `total`:
 *   s <= W (warm-up):  lr * s / W
 *   else, p = (s - W) / (total - W) in (0, 1], floor = lr * min_lr_ratio:
 *     constant  lr
 *     linear    floor + (lr - floor) * (1 - p)
 *     cosine    floor + (lr - floor) * (1 + cos(pi p)) / 2 */
double rlhf_lr_at(const rlhf_optim_t *o, long s, long total);

/* The engine's AdamW settings for step s of total. */
qwen2_adamw_t rlhf_adamw_at(const rlhf_optim_t *o, long s, long total);

/* How a model directory is written: "float32", "bfloat16", "float16" (NULL-terminated) and
 * the matching safetensors type. */
extern const char *const rlhf_dtype_names[];
extern const opt_enum_t rlhf_dtype_enum;
st_dtype_t rlhf_dtype_of(int index);                  /* ST_F32, ST_BF16, ST_F16 */

/* ---- example order --------------------------------------------------------------------- */

/* idx[0..n) = a permutation of 0..n-1 for `epoch`: Fisher-Yates with Philox draws keyed
 * by (seed, rng_stream(name, epoch)), so the order depends only on those. */
void rlhf_epoch_order(uint64_t seed, const char *name, uint64_t epoch, size_t *idx, size_t n);

/* Batches grouped by length: a seeded permutation (rlhf_epoch_order) is cut into windows
 * of 8 batches; inside a window the examples are sorted by len (longest first, ties by
 * position in the permutation), cut into batches of `batch`, and those batches put in a
 * seeded order; the windows keep their order. Consecutive groups of `batch` entries of
 * order[0..n) are then batches (a window's last may be short). Padding drops because
 * rows of a batch have similar lengths, while the order stays random. */
void rlhf_length_grouped_order(uint64_t seed, const char *name, uint64_t epoch, const int *len,
                               size_t n, int batch, size_t *order);

/* ---- progress -------------------------------------------------------------------------- */

typedef struct rlhf_log {
    void (*fn)(void *ctx, const char *line); /* NULL: silent */
    void *ctx;
} rlhf_log_t;

void rlhf_logf(const rlhf_log_t *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

double rlhf_now(void); /* monotonic seconds */

/* "12.3 s", "4 min 05 s", "1 h 02 min" */
void rlhf_fmt_duration(double s, char *buf, size_t cap);

/* ---- training log ---------------------------------------------------------------------- */

/* One row per optimizer step, kept in memory and written as CSV at the end (atomically):
 *   step,lr,loss,grad_norm,tokens,tokens_per_s,elapsed_s[,extra columns]
 * `extra` names up to 4 more columns (accuracy for the reward model). */
typedef struct rlhf_trainlog {
    const char *extra[4];
    int nextra;
    size_t n, cap;
    double *rows;  /* n x (7 + nextra) */
} rlhf_trainlog_t;

int rlhf_trainlog_add(rlhf_trainlog_t *l, long step, double lr, double loss, double grad_norm,
                      long tokens, double tokens_per_s, double elapsed, const double *extra,
                      err_t *e);
int rlhf_trainlog_write(const rlhf_trainlog_t *l, const char *path, err_t *e);
void rlhf_trainlog_free(rlhf_trainlog_t *l);

/* ---- files ----------------------------------------------------------------------------- */

/* Copies a file atomically (tokenizer files into a model directory). */
int rlhf_copy_file(const char *src, const char *dst, err_t *e);

/* Copies the tokenizer files a Hugging Face directory may hold (tokenizer.json required;
 * tokenizer_config.json, special_tokens_map.json, vocab.json, merges.txt,
 * generation_config.json when present) from src_dir to dst_dir. */
int rlhf_copy_tokenizer_files(const char *src_dir, const char *dst_dir, err_t *e);

#endif
