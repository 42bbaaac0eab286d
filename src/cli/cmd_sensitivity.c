/* mxrlhf sensitivity: the per-layer MX sensitivity matrix (profile/sensitivity.h), or with
 * --phase the sensitivity of one RLHF phase (profile/phase.h). Parses options onto
 * sensitivity_opts_t (phase_sensitivity_opts_t), prints progress, calls
 * profile_sensitivity_run (profile_phase_run). */
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/rank.h"
#include "pipeline/config.h"
#include "profile/phase.h"
#include "profile/sensitivity.h"
#include "util/fs.h"

typedef struct progress_state {
    bool quiet, told;
    double last;
} progress_state_t;

static void fmt_dur(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

static void on_progress(void *ctx, const profile_progress_t *p)
{
    progress_state_t *st = ctx;
    if (!st->told && p->tokens_requested > 0 && p->tokens < p->tokens_requested)
        fprintf(stderr, "note: the evaluation data gave %ld scored tokens of the %ld asked\n",
                p->tokens, p->tokens_requested);
    st->told = true;
    if (st->quiet)
        return;
    /* at most one line a second, and always the last */
    if (p->done < p->total && p->elapsed_s - st->last < 1.0)
        return;
    st->last = p->elapsed_s;
    char el[32], left[32];
    fmt_dur(p->elapsed_s, el, sizeof el);
    fmt_dur(p->left_s, left, sizeof left);
    char delta[32] = ""; /* none yet for a cell finished before the baseline */
    if (isfinite(p->delta_pct))
        snprintf(delta, sizeof delta, " (%+.3f%%)", p->delta_pct);
    fprintf(stderr, "[%ld/%ld] %s%s%s ppl %.4f%s  elapsed %s, left ~%s%s\n", p->done,
            p->total, p->what, p->spec[0] ? " " : "", p->spec, p->ppl, delta, el,
            p->done < p->total ? left : "0s", p->resumed ? " (resumed cells skipped)" : "");
}

static void on_phase_progress(void *ctx, const profile_phase_progress_t *p)
{
    progress_state_t *st = ctx;
    if (st->quiet || (p->done < p->total && p->elapsed_s - st->last < 1.0))
        return;
    st->last = p->elapsed_s;
    char el[32], left[32];
    fmt_dur(p->elapsed_s, el, sizeof el);
    fmt_dur(p->left_s, left, sizeof left);
    fprintf(stderr, "[%ld/%ld] %s %s: %s  elapsed %s, left ~%s%s\n", p->done, p->total, p->what,
            p->spec, p->values, el, p->done < p->total ? left : "0s",
            p->resumed ? " (resumed cells skipped)" : "");
}

static int run_phase(prec_phase_t ph, const phase_sensitivity_opts_t *po,
                     const pipeline_config_t *cfg, const char *model, const char *reward,
                     const char *eval, const char *output, bool resume, bool quiet);

/* One writer per output directory (the CSV's, where its summary, resume record and run
 * record go too): two sweeps into one would mix their files. */
static int lock_beside(const char *csv, fs_lock_t *lock, err_t *e)
{
    char *copy = strdup(csv);
    int rc = copy ? fs_lock_dir(dirname(copy), "mxrlhf sensitivity", lock, e)
                  : err_set(e, ERR_NOMEM, "out of memory");
    free(copy);
    return rc;
}

int cmd_sensitivity(int argc, char **argv)
{
    const char *model = NULL, *eval = "results/data/split.json", *output = NULL;
    const char *phase = NULL, *reward = NULL, *config = NULL;
    bool resume = false, quiet = false;
    args_mirror_t mi = {0}, md = {0};
    arg_opt_t opts[80] = {
        {"model", ARG_STRING, &model, "DIR", "Hugging Face model directory with tokenizer.json "
         "(with --phase: the policy, for rollout and gradient)"},
        {"eval", ARG_STRING, &eval, "PATH", "HH-RLHF .jsonl(.gz) file, or a split record (its "
         "held-out split; default results/data/split.json, the run's)"},
        {"output", ARG_STRING, &output, "CSV", "the matrix (default "
         "results/sensitivity_matrix.csv; with --phase results/sensitivity_<phase>.csv); the "
         "summary, resume record and run record go beside it"},
        {"resume", ARG_FLAG, &resume, NULL, "reuse the finished cells of an interrupted run"},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress lines"},
        {"phase", ARG_STRING, &phase, "P", "rollout, reward or gradient: that phase's sensitivity "
         "instead of the perplexity matrix (docs/sensitivity.md, \"Phase sensitivity\")"},
        {"reward-model", ARG_STRING, &reward, "DIR", "--phase rollout and reward: the reward "
         "model (results/rm)"},
        {"config", ARG_STRING, &config, "FILE", "--phase: a configuration file (mxrlhf config): "
         "its phase_sensitivity, ppo (rollout sampling) and rm (how the reward model reads "
         "text) sections"},
    };
    int nopts = 8;
    args_mirror_add(&mi, &sensitivity_opts_table, opts, &nopts, 80);
    args_mirror_add(&mi, &phase_sensitivity_opts_table, opts, &nopts, 80);
    args_alias(opts, &nopts, 80, "backend", "device", "deprecated: use --device");
    args_mirror_add(&md, &dist_opts_table, opts, &nopts, 80);
    arg_spec_t spec = {
        "sensitivity",
        "Perplexity with one layer at a time quantized, for every MX format and block size.",
        "--model DIR [--eval PATH] [--output CSV] [--tokens N] [--resume] ...\n"
        "       mxrlhf sensitivity --phase rollout|reward|gradient [--model DIR] "
        "[--reward-model DIR] [--eval PATH] [--output CSV] [--resume] ...",
        "Each layer (q, k, v, o, gate, up, down of every block, and lm_head) has its forward "
        "weight and input quantized alone; the baseline and whole-model rows go to "
        "sensitivity_summary.csv. With --phase, the layer is quantized in that phase and the "
        "phase's own metrics replace perplexity: rollout (the policy samples; KL to the "
        "unquantized policy and the reward model's score), reward (the reward model; pair "
        "accuracy and Spearman correlation of its scores), gradient (the gradient-phase "
        "operands; cosine of the raw gradient to the float32 one); --threshold then sets that "
        "phase's tolerance (rollout_max_kl, reward_max_accuracy_drop, gradient_min_cosine), "
        "--tokens defaults to 512, and the options above named \"rollout:\", \"reward:\" or "
        "\"gradient:\" apply. Output default results/sensitivity_<phase>.csv. Threads: "
        "OMP_NUM_THREADS. docs/sensitivity.md has the columns and rules.",
        opts, nopts, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("sensitivity", &e);
    prec_phase_t ph = PREC_ROLLOUT;
    if (phase && prec_phase_from_name(phase, &ph)) {
        err_set(&e, ERR_INPUT, "--phase: expected rollout, reward or gradient, got \"%s\"", phase);
        return cli_report("sensitivity", &e);
    }
    if ((!phase || ph != PREC_REWARD) && args_require(model, "model", &e))
        return cli_report("sensitivity", &e);
    if (!phase) {
        if (reward || config) {
            err_set(&e, ERR_INPUT, "--%s goes with --phase", reward ? "reward-model" : "config");
            return cli_report("sensitivity", &e);
        }
        sensitivity_opts_t o;
        sensitivity_opts_default(&o);
        dist_opts_t d;
        dist_opts_default(&d);
        if (args_mirror_apply(&mi, &sensitivity_opts_table, &o, "goes with --phase", &e) ||
            args_mirror_apply(&md, &dist_opts_table, &d, NULL, &e))
            return cli_report("sensitivity", &e);
        if (!output)
            output = "results/sensitivity_matrix.csv";
        /* --gpus N: this process launches N ranks, or is one of them (cli/rank.h) */
        cli_rank_t rk;
        if (cli_rank_begin("sensitivity", d.gpus, o.backend, argc, argv, &rk, &e) || rk.launched)
            return cli_report("sensitivity", &e);
        snprintf(o.backend, sizeof o.backend, "%s", rk.device);
        const int rank = dist_rank(rk.comm);
        progress_state_t st = {.quiet = quiet || rank > 0, .last = -1e9};
        sensitivity_paths_t pa = {.model_dir = model, .eval_path = eval, .output = output,
                                  .resume = resume, .comm = rk.comm};
        profile_sens_result_t res;
        fs_lock_t lock = {-1, NULL}; /* rank 0 writes the files: it holds the lock */
        rc = (rank == 0 && lock_beside(output, &lock, &e)) ||
             profile_sensitivity_run(&o, &pa, on_progress, &st, &res, &e);
        fs_unlock_dir(&lock);
        cli_rank_end(&rk);
        if (rc || rank > 0)
            return cli_report("sensitivity", &e);
        char *summary = profile_sibling(output, "sensitivity_summary.csv");
        char *record = profile_sibling(output, "sensitivity_metrics.json");
        printf("%d layers, %ld cells measured (%ld resumed) on %ld tokens in %.1f s with %d "
               "worker(s); baseline perplexity %.6g; forward passes %.1f s", res.layers,
               res.cells_run, res.cells_resumed, res.tokens, res.wall_s, res.workers,
               res.baseline_ppl, res.forward_s);
        if (isnan(res.quant_s))
            printf(" (quantizing not measured on this backend)\n");
        else
            printf(", of which quantizing %.2f s (%.2f%%)\n", res.quant_s,
                   res.forward_s > 0 ? 100 * res.quant_s / res.forward_s : 0.0);
        printf("wrote %s, %s and %s\n", output, summary ? summary : "", record ? record : "");
        free(summary);
        free(record);
        return 0;
    }
    if (args_mirror_given(&mi, "two-sided")) {
        err_set(&e, ERR_INPUT, "--two-sided is the perplexity matrix's rule; each phase has its "
                "own (docs/sensitivity.md)");
        return cli_report("sensitivity", &e);
    }
    /* the phase's options: --config's section (or the defaults), then the flags */
    pipeline_config_t *cfg = malloc(sizeof *cfg);
    if (!cfg) {
        err_set(&e, ERR_NOMEM, "out of memory");
        return cli_report("sensitivity", &e);
    }
    pipeline_config_default(cfg);
    phase_sensitivity_opts_t *po = &cfg->phase_sensitivity;
    rc = config ? pipeline_config_load(config, cfg, &e) : ERR_OK;
    const char *device = args_mirror_value(&mi, "device");
    if (!rc && config && device)
        rc = cli_device_section("sensitivity", pipeline_section_find("phase_sensitivity"), po,
                                device, &e);
    if (!rc)
        rc = args_mirror_apply_one(&mi, "threshold", &phase_sensitivity_opts_table,
                                   profile_phase_threshold_key(ph), po, &e);
    if (!rc)
        rc = args_mirror_apply(&mi, &phase_sensitivity_opts_table, po, NULL, &e);
    if (!rc)
        rc = args_mirror_given(&md, "gpus")
                 ? (err_set(&e, ERR_INPUT, "--gpus: --phase sweeps run on one process (only the "
                            "perplexity matrix is spread over ranks; docs/distributed.md)"),
                    cli_report("sensitivity", &e))
                 : run_phase(ph, po, cfg, model, reward, eval, output, resume, quiet);
    else
        rc = cli_report("sensitivity", &e);
    free(cfg);
    return rc;
}

/* The phase mode: the ppo and rm sections of --config (or their defaults) say how the policy
 * samples and how the reward model reads text. */
static int run_phase(prec_phase_t ph, const phase_sensitivity_opts_t *po,
                     const pipeline_config_t *cfg, const char *model, const char *reward,
                     const char *eval, const char *output, bool resume, bool quiet)
{
    err_t e = ERR_INIT;
    const char *phase_name = prec_phase_name(ph);
    char out_default[96];
    snprintf(out_default, sizeof out_default, "results/sensitivity_%s.csv", phase_name);
    if (!output)
        output = out_default;
    progress_state_t st = {.quiet = quiet, .last = -1e9};
    profile_phase_paths_t pa = {.model_dir = model, .reward_dir = reward, .eval_path = eval,
                                .ppo = &cfg->ppo, .rm = &cfg->rm, .output = output,
                                .resume = resume};
    profile_phase_result_t res;
    fs_lock_t lock;
    int rc = lock_beside(output, &lock, &e) ||
             profile_phase_run(ph, po, &pa, on_phase_progress, &st, &res, &e);
    fs_unlock_dir(&lock);
    if (rc)
        return cli_report("sensitivity", &e);
    const char *const *names;
    int nc = profile_phase_columns(ph, &names);
    double cols[PHASE_MAX_COLUMNS];
    profile_phase_derive(ph, res.base, res.base, cols);
    printf("phase %s: %d layers, %ld cells measured (%ld resumed) in %.1f s with %d worker(s); "
           "baseline", phase_name, res.layers, res.cells_run, res.cells_resumed, res.wall_s,
           res.workers);
    for (int c = 0; c < nc; c++)
        printf(" %s %.6g", names[c], cols[c]);
    printf("; tolerant layers: %d at mxfp4_g8, %d at mxfp8_g8\n", res.tolerant[0],
           res.tolerant[1]);
    char name[96];
    snprintf(name, sizeof name, "sensitivity_%s_summary.csv", phase_name);
    char *summary = profile_sibling(output, name);
    snprintf(name, sizeof name, "sensitivity_%s_metrics.json", phase_name);
    char *record = profile_sibling(output, name);
    printf("wrote %s, %s and %s\n", output, summary ? summary : "", record ? record : "");
    free(summary);
    free(record);
    return 0;
}
