/* mxrlhf sensitivity: the per-layer MX sensitivity matrix (profile/sensitivity.h). Parses
 * options onto sensitivity_opts_t, prints progress, calls profile_sensitivity_run. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/commands.h"
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
    fprintf(stderr, "[%ld/%ld] %s%s%s ppl %.4f (%+.3f%%)  elapsed %s, left ~%s%s\n", p->done,
            p->total, p->what, p->spec[0] ? " " : "", p->spec, p->ppl, p->delta_pct, el,
            p->done < p->total ? left : "0s", p->resumed ? " (resumed cells skipped)" : "");
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

int cmd_sensitivity(int argc, char **argv)
{
    const char *model = NULL, *eval = "results/data/split.json",
               *output = "results/sensitivity_matrix.csv";
    const char *score = NULL, *tmpl = NULL, *split = NULL, *formats = NULL, *blocks = NULL,
               *rounding = NULL, *scale = NULL;
    long long tokens = LLONG_MIN, batch_tokens = LLONG_MIN, max_prompt = LLONG_MIN,
              max_response = LLONG_MIN, workers = LLONG_MIN;
    double threshold = NAN;
    bool resume = false, quiet = false, two_sided = false;
    const char *backend = NULL;
    arg_opt_t opts[] = {
        {"model", ARG_STRING, &model, "DIR", "Hugging Face model directory with tokenizer.json"},
        {"eval", ARG_STRING, &eval, "PATH", "HH-RLHF .jsonl(.gz) file, or a split record (its held-out "
         "split; default results/data/split.json, the run's)"},
        {"output", ARG_STRING, &output, "CSV", "the matrix (default results/sensitivity_matrix.csv); "
         "the summary, resume record and run record go beside it"},
        {"tokens", ARG_INT, &tokens, "N", "scored predictions in the evaluation set (default 4096; 0 = all)"},
        {"score", ARG_STRING, &score, "WHICH", "all (every next-token prediction, default) or response"},
        {"template", ARG_STRING, &tmpl, "T", "raw (default) or chatml"},
        {"max-prompt-tokens", ARG_INT, &max_prompt, "N", "prompt ids kept, the last N (default 512)"},
        {"max-response-tokens", ARG_INT, &max_response, "N", "response ids kept (default 256)"},
        {"batch-tokens", ARG_INT, &batch_tokens, "N", "rows x length per forward (default 4096)"},
        {"split", ARG_STRING, &split, "NAME", "split of a split record (default eval_prompts)"},
        {"threshold", ARG_DOUBLE, &threshold, "PCT", "tolerant when delta_pct < PCT (default 2)"},
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
    };
    arg_spec_t spec = {
        "sensitivity",
        "Perplexity with one layer at a time quantized, for every MX format and block size.",
        "--model DIR [--eval PATH] [--output CSV] [--tokens N] [--resume] ...",
        "Each layer (q, k, v, o, gate, up, down of every block, and lm_head) has its forward "
        "weight and input quantized alone; the baseline and whole-model rows go to "
        "sensitivity_summary.csv. Threads: OMP_NUM_THREADS. docs/sensitivity.md has the "
        "columns and rules.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc || args_require(model, "model", &e))
        return cli_report("sensitivity", &e);

    sensitivity_opts_t o;
    sensitivity_opts_default(&o);
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
    if (!isnan(threshold))
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
