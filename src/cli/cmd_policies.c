/* mxrlhf policies: the study's precision policies A-D from a sensitivity matrix
 * (profile/policies.h). Parses options onto policies_opts_t, prints progress, calls
 * profile_policies_run. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "profile/policies.h"

static void on_progress(void *ctx, const profile_progress_t *p)
{
    if (*(bool *)ctx)
        return;
    fprintf(stderr, "[measurement %ld, at most %ld] %s: ppl %.4f (%+.3f%%), %.0fs\n", p->done,
            p->total, p->what, p->ppl, p->delta_pct, p->elapsed_s);
}

int cmd_policies(int argc, char **argv)
{
    const char *sens = "results/sensitivity_matrix.csv", *output = "results/policies.json",
               *model = NULL, *eval = "results/data/split.json", *score = NULL, *tmpl = NULL,
               *split = NULL,
               *fp16 = NULL, *mxgrad = NULL, *rounding = NULL, *scale = NULL;
    long long block = LLONG_MIN, tokens = LLONG_MIN, batch_tokens = LLONG_MIN,
              max_prompt = LLONG_MIN, max_response = LLONG_MIN;
    double threshold = NAN, budget = NAN;
    bool quiet = false, two_sided = false;
    const char *backend = NULL;
    arg_opt_t opts[] = {
        {"sensitivity", ARG_STRING, &sens, "CSV",
         "the matrix (default results/sensitivity_matrix.csv)"},
        {"output", ARG_STRING, &output, "FILE",
         "policies.json to write (default results/policies.json)"},
        {"model", ARG_STRING, &model, "DIR",
         "the model the matrix was measured on (combined perplexities)"},
        {"eval", ARG_STRING, &eval, "PATH",
         "evaluation data, as for mxrlhf sensitivity (default results/data/split.json)"},
        {"block", ARG_INT, &block, "K",
         "MX block size of the plans (default 32; the matrix needs its columns)"},
        {"threshold", ARG_DOUBLE, &threshold, "PCT",
         "per-layer tolerance: delta_pct < PCT (default 2)"},
        {"two-sided", ARG_FLAG, &two_sided, NULL,
         "tolerance and budget on |delta_pct| (a large fall counts too)"},
        {"budget-factor", ARG_DOUBLE, &budget, "X",
         "whole-model budget: delta_pct < X * threshold (default 2)"},
        {"fp16-compute", ARG_STRING, &fp16, "T",
         "the study's \"FP16\": fp16 (dynamic loss scaling, default) or bf16"},
        {"mx-gradient-compute", ARG_STRING, &mxgrad, "T",
         "compute type of C's MX gradient GEMMs (default fp32)"},
        {"rounding", ARG_STRING, &rounding, "R", "MX element rounding (default even)"},
        {"scale", ARG_STRING, &scale, "S", "MX scale rule (default floor)"},
        {"tokens", ARG_INT, &tokens, "N", "scored predictions (default 4096; as the matrix)"},
        {"score", ARG_STRING, &score, "WHICH", "all (default) or response"},
        {"template", ARG_STRING, &tmpl, "T", "raw (default) or chatml"},
        {"max-prompt-tokens", ARG_INT, &max_prompt, "N", "default 512"},
        {"max-response-tokens", ARG_INT, &max_response, "N", "default 256"},
        {"batch-tokens", ARG_INT, &batch_tokens, "N", "rows x length per forward (default 4096)"},
        {"split", ARG_STRING, &split, "NAME", "split of a split record (default eval_prompts)"},
        {"device", ARG_STRING, &backend, "D", "cpu or cuda (default cpu)"},
        {"backend", ARG_STRING, &backend, "D", "synonym of --device"},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress lines"},
    };
    arg_spec_t spec = {
        "policies",
        "Derive the study's precision policies A-D (and a baseline control) as precision plans.",
        "--sensitivity CSV --model DIR [--eval PATH] [--output FILE] [--block K] ...",
        "B and C's MXFP4/MXFP8 split and D's reward split are built greedily under a whole-model "
        "perplexity budget, measured on the model; every plan's combined perplexity per phase "
        "is written into policies.json beside the plans. docs/sensitivity.md has the rules.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc || args_require(model, "model", &e))
        return cli_report("policies", &e);
    policies_opts_t o;
    policies_opts_default(&o);
    if (block != LLONG_MIN)
        o.block = block < 1 || block > 4096 ? -1 : (int)block;
    if (!isnan(threshold))
        o.threshold_pct = threshold;
    if (!isnan(budget))
        o.budget_factor = budget;
    if (two_sided)
        o.two_sided = true;
    if (tokens != LLONG_MIN)
        o.eval.tokens = (long)tokens;
    if (batch_tokens != LLONG_MIN)
        o.eval.batch_tokens = (long)batch_tokens;
    if (max_prompt != LLONG_MIN)
        o.eval.max_prompt_tokens = max_prompt < 1 || max_prompt > INT_MAX ? 0 : (int)max_prompt;
    if (max_response != LLONG_MIN)
        o.eval.max_response_tokens =
            max_response < 1 || max_response > INT_MAX ? 0 : (int)max_response;
    const char *bad = NULL;
    if (score && profile_score_from_name(score, &o.eval.score))
        bad = "--score: expected all or response";
    else if (tmpl && rlhf_template_from_name(tmpl, &o.eval.tmpl))
        bad = "--template: expected raw or chatml";
    else if (fp16 && prec_compute_from_name(fp16, &o.fp16_compute))
        bad = "--fp16-compute: expected fp16 or bf16";
    else if (mxgrad && prec_compute_from_name(mxgrad, &o.mx_gradient_compute))
        bad = "--mx-gradient-compute: expected fp32, bf16 or fp16";
    else if (rounding && mx_round_from_name(rounding, &o.round))
        bad = "--rounding: expected even, nearest or trunc";
    else if (scale && mx_scale_from_name(scale, &o.scale))
        bad = "--scale: expected floor or rceil";
    if (bad) {
        err_set(&e, ERR_INPUT, "%s", bad);
        return cli_report("policies", &e);
    }
    if (split) {
        if (strlen(split) >= sizeof o.eval.split) {
            err_set(&e, ERR_INPUT, "--split: name too long");
            return cli_report("policies", &e);
        }
        snprintf(o.eval.split, sizeof o.eval.split, "%s", split);
    }
    if (backend) {
        if (strlen(backend) >= sizeof o.backend) {
            err_set(&e, ERR_INPUT, "--device: unknown device \"%s\"", backend);
            return cli_report("policies", &e);
        }
        snprintf(o.backend, sizeof o.backend, "%s", backend);
    }
    if (policies_opts_check(&o, "options", &e))
        return cli_report("policies", &e);
    policies_paths_t pa = {.sensitivity = sens, .model_dir = model, .eval_path = eval,
                           .output = output};
    profile_policies_result_t res;
    if (profile_policies_run(&o, &pa, on_progress, &quiet, &res, &e))
        return cli_report("policies", &e);
    printf("baseline perplexity %.6g; %d of %d layers sensitive (kept at MXFP8 by B); %d "
           "measurements\n", res.baseline_ppl, res.sensitive, res.layers, res.measurements);
    static const char *const names[POLICY_COUNT] = {"baseline", "A", "B", "C", "D"};
    for (int i = 0; i < POLICY_COUNT; i++)
        printf("  %-8s rollout %.6g  reward %.6g  gradient %.6g\n", names[i],
               res.ppl[i][PREC_ROLLOUT], res.ppl[i][PREC_REWARD], res.ppl[i][PREC_GRADIENT]);
    printf("wrote %s\n", output);
    return 0;
}
