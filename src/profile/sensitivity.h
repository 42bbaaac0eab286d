/* sensitivity: the per-layer MX sensitivity matrix (issue 8; docs/sensitivity.md).
 *
 * For every quantizable layer of a Qwen2 model (each block's q, k, v, o, gate, up and down
 * projections and the lm_head, Hugging Face names) and every (format, block size) pair,
 * that layer alone has its forward weight and input quantized to the spec (blocks along
 * the reduction axis, the engine's convention) and the perplexity of the evaluation set
 * is measured; the unquantized baseline and the whole model in each spec are measured
 * too. A tied lm_head shares the embedding's weight: quantizing lm_head quantizes its
 * GEMM's operands only, never the embedding lookup.
 *
 * Cost: the residual stream entering block L is cached per batch, so a cell of block L
 * runs only blocks L.. and the head (an lm_head cell runs the head alone). Finished cells
 * go to an append-only JSONL file (one line each, fsynced), so an interrupted sweep
 * resumes where it stopped; a cut-off last line is ignored. The CSVs are written
 * atomically at the end. The CPU backend gives the same bits for any thread count, and
 * every cell is a pure function of (model, evaluation set, spec), so a resumed sweep
 * writes the same files as an uninterrupted one.
 *
 * Outputs (columns in docs/sensitivity.md):
 *   sensitivity_matrix.csv   one row per layer: the study's seven columns first, then
 *                            <format>_g<k>_{ppl,delta_pct,tolerant} for every pair;
 *   sensitivity_summary.csv  the baseline and one whole-model row per pair;
 *   sensitivity_cells.jsonl  the finished cells (the resume record);
 *   sensitivity_metrics.json     options, model, evaluation set, baseline, timing.
 */
#ifndef MXRLHF_PROFILE_SENSITIVITY_H
#define MXRLHF_PROFILE_SENSITIVITY_H

#include <cJSON.h>
#include <stdbool.h>

#include "dist/dist.h"
#include "model/qwen2.h"
#include "mx/mx.h"
#include "profile/evalset.h"
#include "profile/ppl.h"
#include "rlhf/text.h"
#include "util/err.h"

#define SENS_MAX_FORMATS 8
#define SENS_MAX_BLOCKS 8

/* The stage's options (the "sensitivity" section of the configuration file; defaults,
 * ranges and help in sensitivity.c's table). */
typedef struct sensitivity_opts {
    profile_eval_opts_t eval;    /* the evaluation set (evalset.h) */
    double threshold_pct;        /* tolerant: delta_pct < threshold */
    bool two_sided;              /* tolerant: |delta_pct| < threshold instead */
    mx_format_t formats[SENS_MAX_FORMATS];
    int nformats;
    int blocks[SENS_MAX_BLOCKS];
    int nblocks;
    mx_round_t round;            /* element rounding */
    mx_scale_rule_t scale;       /* shared-scale rule */
    int workers;                 /* models measuring cells in parallel; 0: automatic */
    char backend[16];            /* the device ("backend" key: cpu, cuda, cuda:N) */
} sensitivity_opts_t;

/* Reading the section also checks the values (sensitivity_opts_check: the study's
 * mxfp4/mxfp8 block-8 pairs must be in the sweep, no stochastic rounding, ...). */
extern const opt_table_t sensitivity_opts_table;
void sensitivity_opts_default(sensitivity_opts_t *o);
int sensitivity_opts_check(const sensitivity_opts_t *o, const char *ctx, err_t *e);

/* The spec of pair (format i, block j) under the options' rounding and scale rule. */
mx_spec_t sensitivity_spec(const sensitivity_opts_t *o, int fi, int bj);

/* Progress after each cell. */
typedef struct profile_progress {
    long done, total;            /* cells, resumed ones included */
    long resumed;                /* cells taken from the resume file */
    const char *what;            /* "baseline", "whole_model" or the layer name */
    const char *spec;            /* "" for the baseline */
    double ppl, delta_pct;
    double elapsed_s, left_s;    /* left: estimated from the work done so far */
    long tokens, tokens_requested; /* of the evaluation set (fewer when the data ran out) */
} profile_progress_t;

typedef void (*profile_progress_fn)(void *ctx, const profile_progress_t *p);

/* The measured matrix. nll values are sums over `tokens` scored predictions. */
typedef struct profile_matrix {
    int nlayers;
    char **layers;               /* quantizable layers in table order */
    int nformats, nblocks;
    mx_format_t formats[SENS_MAX_FORMATS];
    int blocks[SENS_MAX_BLOCKS];
    mx_round_t round;
    mx_scale_rule_t scale;
    double *nll;                 /* [layer][format][block] */
    double whole_nll[SENS_MAX_FORMATS][SENS_MAX_BLOCKS];
    double base_nll;
    long tokens;
    uint64_t model_fingerprint;  /* of the configuration and parameters */
    /* timing of this process's work (resumed cells excluded) */
    double wall_s, forward_s, quant_s;
    long quant_ops, cells_run, cells_resumed;
    int workers;
} profile_matrix_t;

void profile_matrix_free(profile_matrix_t *mx);
double profile_matrix_ppl(const profile_matrix_t *mx, int layer, int fi, int bj);
double profile_delta_pct(double ppl, double base);
/* Tolerant: delta_pct < threshold; a fall (negative delta) counts as tolerant unless
 * two_sided, which asks |delta_pct| < threshold; a non-finite delta never is. */
bool profile_tolerant(double delta_pct, double threshold_pct, bool two_sided);

/* The sweep on an evaluation set, with one or more workers (the same model loaded once
 * per worker, profile_workers_open) taking cells in turn; each cell is a pure function of
 * (model, set, spec), so the matrix does not depend on the number of workers or threads.
 * The models' tables must be the unquantized ones (fp32, as a model without a plan has);
 * they are restored at the end. cells_path: the resume record; with resume, its cells are
 * reused when its header matches this model and set (else ERR_INPUT), without, it is
 * started afresh. Cores (omp_get_max_threads) are divided among the workers. */
int profile_sensitivity_sweep(profile_worker_t *workers, int nworkers,
                              const profile_evalset_t *es, const sensitivity_opts_t *o,
                              const char *cells_path, bool resume, profile_progress_fn progress,
                              void *pctx, profile_matrix_t *out, err_t *e);

/* The same sweep spread over the ranks of comm (NULL or one rank: the sweep above). Each
 * rank measures a contiguous share of the work list, balanced by cost (decoder-layer
 * equivalents), records its cells in its own cells_path (resume: the same --gpus), and
 * once every rank has finished (dist_agree) the cells are merged: every rank ends with the
 * whole matrix, the same as one process's, and cells_run / resumed / forward_s / quant_s
 * summed over ranks. */
int profile_sensitivity_sweep_ranks(dist_comm_t *comm, profile_worker_t *workers, int nworkers,
                                    const profile_evalset_t *es, const sensitivity_opts_t *o,
                                    const char *cells_path, bool resume,
                                    profile_progress_fn progress, void *pctx,
                                    profile_matrix_t *out, err_t *e);

/* The two CSVs (atomically). */
int profile_matrix_write_csv(const profile_matrix_t *mx, double threshold_pct, bool two_sided,
                             const char *path, err_t *e);
int profile_summary_write_csv(const profile_matrix_t *mx, double threshold_pct, bool two_sided,
                              const char *path, err_t *e);

/* Where the stage reads and writes. */
typedef struct sensitivity_paths {
    const char *model_dir;       /* Hugging Face directory with tokenizer.json */
    const char *eval_path;       /* HH-RLHF .jsonl(.gz) or split record */
    /* or, instead of eval_path, pairs already loaded (the pipeline's held-out split) */
    const data_pair_t *const *pairs;
    size_t npairs;
    const char *eval_desc;       /* what they are, for the run record */
    const char *output;          /* sensitivity_matrix.csv; the other files go beside it */
    bool resume;
    /* ranks (NULL: this process alone): cells spread over them; rank 0 writes the files once
     * all have agreed, rank r > 0 keeps its cells in sensitivity_cells.rank<r>.jsonl */
    dist_comm_t *comm;
} sensitivity_paths_t;

/* What a stage run did, for its caller's log. */
typedef struct profile_sens_result {
    int layers, workers;
    long tokens, cells_run, cells_resumed;
    double baseline_ppl, wall_s, forward_s, quant_s;
} profile_sens_result_t;

/* The whole stage: load, tokenize, sweep, write the four files. res may be NULL. */
int profile_sensitivity_run(const sensitivity_opts_t *o, const sensitivity_paths_t *paths,
                            profile_progress_fn progress, void *pctx, profile_sens_result_t *res,
                            err_t *e);

/* The sibling file `name` of `output` (same directory). Caller frees. */
char *profile_sibling(const char *output, const char *name);

/* Loads the tokenizer of a model directory and builds the evaluation set from a file
 * (eval_path), or from pairs already loaded when pairs is not NULL. */
int profile_load_evalset(const char *model_dir, const char *eval_path,
                         const data_pair_t *const *pairs, size_t npairs,
                         const profile_eval_opts_t *eo, profile_evalset_t *out, char *desc,
                         size_t desc_n, err_t *e);

#endif
