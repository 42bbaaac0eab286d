/* mxrlhf sensitivity: the per-layer MX sensitivity matrix (profile/sensitivity.h), or with
 * --phase the sensitivity of one RLHF phase (profile/phase.h). Parses options onto
 * sensitivity_opts_t (phase_sensitivity_opts_t), prints progress, calls
 * profile_sensitivity_run (profile_phase_run). */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "pipeline/config.h"
#include "profile/phase.h"
#include "profile/sensitivity.h"

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

/* "a,b,c" into items (pointers into a copy the caller frees) */
static int split_list(const char *text, char **copy, char **items, int max, int *n)
{
    *copy = strdup(text);
    *n = 0;
    if (!*copy)
        return -1;
    for (char *tok = strtok(*copy, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == max)
            return -1;
        items[(*n)++] = tok;
    }
    return *n ? 0 : -1;
}

static int run_phase(const char *phase_name, const phase_sensitivity_opts_t *po,
                     const char *config, const char *model, const char *reward, const char *eval,
                     const char *output, bool resume, bool quiet);

int cmd_sensitivity(int argc, char **argv)
{
    const char *model = NULL, *eval = "results/data/split.json", *output = NULL;
    const char *phase = NULL, *reward = NULL, *config = NULL, *operands = NULL;
    long long prompts = LLONG_MIN, max_new = LLONG_MIN, pairs = LLONG_MIN;
    double min_spearman = NAN;
    const char *score = NULL, *tmpl = NULL, *split = NULL, *formats = NULL, *blocks = NULL,
               *rounding = NULL, *scale = NULL;
    long long tokens = LLONG_MIN, batch_tokens = LLONG_MIN, max_prompt = LLONG_MIN,
              max_response = LLONG_MIN, workers = LLONG_MIN;
    double threshold = NAN;
    bool resume = false, quiet = false, two_sided = false;
    const char *backend = NULL;
    arg_opt_t opts[] = {
        {"model", ARG_STRING, &model, "DIR", "Hugging Face model directory with tokenizer.json (with --phase: the "
         "policy, for rollout and gradient)"},
        {"eval", ARG_STRING, &eval, "PATH", "HH-RLHF .jsonl(.gz) file, or a split record (its held-out "
         "split; default results/data/split.json, the run's)"},
        {"output", ARG_STRING, &output, "CSV", "the matrix (default results/sensitivity_matrix.csv; "
         "with --phase results/sensitivity_<phase>.csv); the summary, resume record and run "
         "record go beside it"},
        {"tokens", ARG_INT, &tokens, "N", "scored predictions in the evaluation set (default 4096, --phase "
         "gradient 512; 0 = all)"},
        {"score", ARG_STRING, &score, "WHICH", "all (every next-token prediction, default) or response"},
        {"template", ARG_STRING, &tmpl, "T", "raw (default) or chatml"},
        {"max-prompt-tokens", ARG_INT, &max_prompt, "N", "prompt ids kept, the last N (default 512)"},
        {"max-response-tokens", ARG_INT, &max_response, "N", "response ids kept (default 256)"},
        {"batch-tokens", ARG_INT, &batch_tokens, "N", "rows x length per forward (default 4096)"},
        {"split", ARG_STRING, &split, "NAME", "split of a split record (default eval_prompts)"},
        {"threshold", ARG_DOUBLE, &threshold, "X", "tolerant when delta_pct < X (default 2); with "
         "--phase: rollout kl < X (nats per response, default 0.06), reward accuracy falls by "
         "< X points (default 1), gradient cosine > X (default 0.99)"},
        {"two-sided", ARG_FLAG, &two_sided, NULL, "tolerant when |delta_pct| < PCT (a large fall "
         "is not tolerant either)"},
        {"formats", ARG_STRING, &formats, "LIST", "MX formats, comma-separated (default all six)"},
        {"blocks", ARG_STRING, &blocks, "LIST", "block sizes, comma-separated (default 8,16,32)"},
        {"rounding", ARG_STRING, &rounding, "R", "element rounding: even (default), nearest, trunc"},
        {"scale", ARG_STRING, &scale, "S", "scale rule: floor (OCP, default) or rceil"},
        {"workers", ARG_INT, &workers, "N", "models measuring cells in parallel (default 0: one per "
         "core for models under 64M parameters, else one using every core)"},
        {"resume", ARG_FLAG, &resume, NULL, "reuse the finished cells of an interrupted run"},
        {"device", ARG_STRING, &backend, "D", "cpu or cuda (default cpu)"},
        {"backend", ARG_STRING, &backend, "D", "synonym of --device"},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress lines"},
        {"phase", ARG_STRING, &phase, "P", "rollout, reward or gradient: that phase's sensitivity "
         "instead of the perplexity matrix (docs/sensitivity.md, \"Phase sensitivity\")"},
        {"reward-model", ARG_STRING, &reward, "DIR", "--phase rollout and reward: the reward "
         "model (results/rm)"},
        {"config", ARG_STRING, &config, "FILE", "--phase: a configuration file (mxrlhf config): its "
         "phase_sensitivity, ppo (rollout sampling) and rm (how the reward model reads text) "
         "sections"},
        {"prompts", ARG_INT, &prompts, "N", "--phase rollout: prompts sampled per cell (default 24)"},
        {"max-new-tokens", ARG_INT, &max_new, "N", "--phase rollout: tokens per response (default "
         "24)"},
        {"pairs", ARG_INT, &pairs, "N", "--phase reward: evaluation pairs (default 128; 0 = all)"},
        {"min-spearman", ARG_DOUBLE, &min_spearman, "R", "--phase reward: tolerant also needs "
         "spearman > R (default 0.999)"},
        {"gradient-operands", ARG_STRING, &operands, "W", "--phase gradient: all (the six "
         "gradient-phase operands, default) or backward (the four backward ones)"},
    };
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
        "operands; cosine of the raw gradient to the float32 one); output default "
        "results/sensitivity_<phase>.csv. Threads: OMP_NUM_THREADS. docs/sensitivity.md has the "
        "columns and rules.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
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
    if (!phase && (reward || config || prompts != LLONG_MIN || max_new != LLONG_MIN ||
                   pairs != LLONG_MIN || !isnan(min_spearman) || operands)) {
        err_set(&e, ERR_INPUT, "--reward-model, --config, --prompts, --max-new-tokens, --pairs, "
                "--min-spearman and --gradient-operands go with --phase");
        return cli_report("sensitivity", &e);
    }
    if (phase && two_sided) {
        err_set(&e, ERR_INPUT, "--two-sided is the perplexity matrix's rule; each phase has its "
                "own (docs/sensitivity.md)");
        return cli_report("sensitivity", &e);
    }

    sensitivity_opts_t o;
    sensitivity_opts_default(&o);
    phase_sensitivity_opts_t po;
    phase_sensitivity_opts_default(&po);
    if (phase) {
        if (config) {
            pipeline_config_t *cfg = malloc(sizeof *cfg);
            if (!cfg) {
                err_set(&e, ERR_NOMEM, "out of memory");
                return cli_report("sensitivity", &e);
            }
            pipeline_config_default(cfg);
            rc = pipeline_config_load(config, cfg, &e);
            po = cfg->phase_sensitivity;
            free(cfg);
            if (rc)
                return cli_report("sensitivity", &e);
        }
        o = po.sweep;
    }
    if (tokens != LLONG_MIN)
        o.eval.tokens = (long)tokens;
    if (batch_tokens != LLONG_MIN)
        o.eval.batch_tokens = (long)batch_tokens;
    if (max_prompt != LLONG_MIN)
        o.eval.max_prompt_tokens = max_prompt > INT_MAX ? INT_MAX : (int)max_prompt;
    if (max_response != LLONG_MIN)
        o.eval.max_response_tokens = max_response > INT_MAX ? INT_MAX : (int)max_response;
    if (workers != LLONG_MIN)
        o.workers = workers < 0 || workers > PROFILE_MAX_WORKERS ? -1 : (int)workers;
    if (!isnan(threshold) && !phase)
        o.threshold_pct = threshold;
    if (two_sided)
        o.two_sided = true;
    if (score && profile_score_from_name(score, &o.eval.score)) {
        err_set(&e, ERR_INPUT, "--score: expected all or response, got \"%s\"", score);
        return cli_report("sensitivity", &e);
    }
    if (tmpl && rlhf_template_from_name(tmpl, &o.eval.tmpl)) {
        err_set(&e, ERR_INPUT, "--template: expected raw or chatml, got \"%s\"", tmpl);
        return cli_report("sensitivity", &e);
    }
    if (split) {
        if (strlen(split) >= sizeof o.eval.split) {
            err_set(&e, ERR_INPUT, "--split: name too long");
            return cli_report("sensitivity", &e);
        }
        snprintf(o.eval.split, sizeof o.eval.split, "%s", split);
    }
    if (rounding && mx_round_from_name(rounding, &o.round)) {
        err_set(&e, ERR_INPUT, "--rounding: unknown rounding \"%s\"", rounding);
        return cli_report("sensitivity", &e);
    }
    if (scale && mx_scale_from_name(scale, &o.scale)) {
        err_set(&e, ERR_INPUT, "--scale: unknown scale rule \"%s\" (floor or rceil)", scale);
        return cli_report("sensitivity", &e);
    }
    char *copy = NULL, *items[SENS_MAX_FORMATS > SENS_MAX_BLOCKS ? SENS_MAX_FORMATS
                                                                 : SENS_MAX_BLOCKS];
    int n;
    if (formats) {
        if (split_list(formats, &copy, items, SENS_MAX_FORMATS, &n)) {
            err_set(&e, ERR_INPUT, "--formats: expected 1 to %d comma-separated format names",
                    SENS_MAX_FORMATS);
        } else {
            o.nformats = n;
            for (int i = 0; i < n && !e.code; i++)
                if (mx_format_from_name(items[i], &o.formats[i]))
                    err_set(&e, ERR_INPUT, "--formats: unknown format \"%s\"", items[i]);
        }
        free(copy);
        if (e.code)
            return cli_report("sensitivity", &e);
    }
    if (blocks) {
        if (split_list(blocks, &copy, items, SENS_MAX_BLOCKS, &n)) {
            err_set(&e, ERR_INPUT, "--blocks: expected 1 to %d comma-separated block sizes",
                    SENS_MAX_BLOCKS);
        } else {
            o.nblocks = n;
            for (int i = 0; i < n && !e.code; i++) {
                char *end;
                long v = strtol(items[i], &end, 10);
                if (*end || end == items[i] || v < 1 || v > 4096)
                    err_set(&e, ERR_INPUT, "--blocks: \"%s\" is not a block size in [1, 4096]",
                            items[i]);
                o.blocks[i] = (int)v;
            }
        }
        free(copy);
        if (e.code)
            return cli_report("sensitivity", &e);
    }
    if (backend) {
        if (strlen(backend) >= sizeof o.backend) {
            err_set(&e, ERR_INPUT, "--device: unknown device \"%s\"", backend);
            return cli_report("sensitivity", &e);
        }
        snprintf(o.backend, sizeof o.backend, "%s", backend);
    }
    if (sensitivity_opts_check(&o, "options", &e))
        return cli_report("sensitivity", &e);

    if (phase) {
        po.sweep = o;
        double *thr[] = {&po.rollout_max_kl, &po.reward_max_accuracy_drop,
                         &po.gradient_min_cosine};
        if (!isnan(threshold))
            *thr[ph] = threshold;
        if (!isnan(min_spearman))
            po.reward_min_spearman = min_spearman;
        if (prompts != LLONG_MIN)
            po.rollout_prompts = prompts < 1 || prompts > 4096 ? 0 : (int)prompts;
        if (max_new != LLONG_MIN)
            po.rollout_max_new_tokens = max_new < 1 || max_new > 4096 ? 0 : (int)max_new;
        if (pairs != LLONG_MIN)
            po.reward_pairs = pairs < 0 || pairs > INT_MAX ? -1 : (int)pairs;
        if (operands) {
            if (!strcmp(operands, "all"))
                po.gradient_operands = PHASE_GRAD_ALL;
            else if (!strcmp(operands, "backward"))
                po.gradient_operands = PHASE_GRAD_BACKWARD;
            else {
                err_set(&e, ERR_INPUT, "--gradient-operands: expected all or backward, got \"%s\"",
                        operands);
                return cli_report("sensitivity", &e);
            }
        }
        if (phase_sensitivity_opts_check(&po, "options", &e))
            return cli_report("sensitivity", &e);
        return run_phase(prec_phase_name(ph), &po, config, model, reward, eval, output, resume,
                         quiet);
    }
    if (!output)
        output = "results/sensitivity_matrix.csv";
    progress_state_t st = {.quiet = quiet, .last = -1e9};
    sensitivity_paths_t pa = {.model_dir = model, .eval_path = eval, .output = output,
                              .resume = resume};
    profile_sens_result_t res;
    if (profile_sensitivity_run(&o, &pa, on_progress, &st, &res, &e))
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

/* The phase mode: the ppo and rm sections of --config (or their defaults) say how the policy
 * samples and how the reward model reads text. */
static int run_phase(const char *phase_name, const phase_sensitivity_opts_t *po,
                     const char *config, const char *model, const char *reward, const char *eval,
                     const char *output, bool resume, bool quiet)
{
    err_t e = ERR_INIT;
    prec_phase_t ph;
    prec_phase_from_name(phase_name, &ph);
    pipeline_config_t *cfg = malloc(sizeof *cfg);
    if (!cfg) {
        err_set(&e, ERR_NOMEM, "out of memory");
        return cli_report("sensitivity", &e);
    }
    pipeline_config_default(cfg);
    if (config && pipeline_config_load(config, cfg, &e)) {
        free(cfg);
        return cli_report("sensitivity", &e);
    }
    char out_default[96];
    snprintf(out_default, sizeof out_default, "results/sensitivity_%s.csv", phase_name);
    if (!output)
        output = out_default;
    progress_state_t st = {.quiet = quiet, .last = -1e9};
    profile_phase_paths_t pa = {.model_dir = model, .reward_dir = reward, .eval_path = eval,
                                .ppo = &cfg->ppo, .rm = &cfg->rm, .output = output,
                                .resume = resume};
    profile_phase_result_t res;
    int rc = profile_phase_run(ph, po, &pa, on_phase_progress, &st, &res, &e);
    free(cfg);
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
