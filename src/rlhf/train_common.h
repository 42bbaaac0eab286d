/* train_common: the few pieces the training stages (pretraining, SFT, reward model) share:
 * options tables that convert a stage's options struct to and from its JSON section,
 * AdamW settings with the learning-rate schedule, the seeded order of examples per epoch,
 * progress lines with time left, and a small training log (CSV).
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

#include "model/qwen2.h"
#include "util/err.h"

/* ---- options <-> JSON ------------------------------------------------------------------ */

typedef enum rlhf_field_kind {
    RLHF_F_INT,    /* int                                                              */
    RLHF_F_LONG,   /* long                                                             */
    RLHF_F_DOUBLE, /* double                                                           */
    RLHF_F_BOOL,   /* bool                                                             */
    RLHF_F_U64,    /* uint64_t: a JSON integer below 2^53 or a decimal string (seeds)   */
    RLHF_F_ENUM,   /* int holding an index into `names`, written as the name            */
    RLHF_F_STRING  /* char[cap]                                                        */
} rlhf_field_kind_t;

/* One key of a JSON section and where it lives in the options struct. Numbers must lie
 * in [min, max] (both inclusive); strings must be shorter than `cap`. */
typedef struct rlhf_field {
    const char *key;
    rlhf_field_kind_t kind;
    size_t off;                 /* offsetof(struct, member) */
    double min, max;
    const char *const *names;   /* RLHF_F_ENUM: NULL-terminated names */
    size_t cap;                 /* RLHF_F_STRING: size of the char array */
} rlhf_field_t;

/* Reads the keys of `obj` into the struct at `base`. Missing keys keep what is there (the
 * defaults); an unknown key, a wrong type or a value out of range is ERR_INPUT naming
 * ctx and the key: "config.json: sft: unknown key \"lrr\" (known: steps, ...)". obj NULL
 * (section absent) changes nothing. */
int rlhf_fields_from_json(const rlhf_field_t *f, int n, const cJSON *obj, const char *ctx,
                          void *base, err_t *e);

/* The struct as a JSON object with the keys in table order (NULL on allocation failure). */
cJSON *rlhf_fields_to_json(const rlhf_field_t *f, int n, const void *base);

/* ---- optimizer and schedule ------------------------------------------------------------ */

typedef enum rlhf_sched {
    RLHF_SCHED_CONSTANT,
    RLHF_SCHED_LINEAR,
    RLHF_SCHED_COSINE
} rlhf_sched_t;

extern const char *const rlhf_sched_names[]; /* "constant", "linear", "cosine", NULL */

typedef struct rlhf_optim {
    double lr;             /* peak learning rate                                       */
    double min_lr_ratio;   /* the schedule ends at lr * min_lr_ratio                   */
    long warmup_steps;     /* linear warm-up from lr/warmup_steps to lr                */
    int schedule;          /* rlhf_sched_t                                             */
    double weight_decay, beta1, beta2, eps;
    double max_grad_norm;  /* global-norm clipping; <= 0: none                         */
} rlhf_optim_t;

/* lr 1e-3, min ratio 0.1, warm-up 20 steps, cosine, weight decay 0.01, betas 0.9/0.999,
 * eps 1e-8, clipping at 1.0. */
void rlhf_optim_default(rlhf_optim_t *o);

/* The option table rows of rlhf_optim_t embedded at byte offset `base_off` of a stage's
 * struct; writes RLHF_OPTIM_NFIELDS rows to out. */
#define RLHF_OPTIM_NFIELDS 9
void rlhf_optim_fields(size_t base_off, rlhf_field_t *out);

/* Learning rate for optimizer step s (1-based) of `total`:
 *   s <= W (warm-up):  lr * s / W
 *   else, p = (s - W) / (total - W) in (0, 1], floor = lr * min_lr_ratio:
 *     constant  lr
 *     linear    floor + (lr - floor) * (1 - p)
 *     cosine    floor + (lr - floor) * (1 + cos(pi p)) / 2 */
double rlhf_lr_at(const rlhf_optim_t *o, long s, long total);

/* The engine's AdamW settings for step s of total. */
qwen2_adamw_t rlhf_adamw_at(const rlhf_optim_t *o, long s, long total);

/* Names for enum fields shared by the stages (NULL-terminated): how a model directory is
 * written, and rlhf/text.h's templates in rlhf_template_t order. */
extern const char *const rlhf_dtype_names[];          /* "float32", "bfloat16", "float16" */
extern const char *const rlhf_template_enum_names[];  /* "raw", "chatml" */
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
