/* mxrlhf policies: the study's precision policies A-D from a sensitivity matrix
 * (profile/policies.h). Parses options onto policies_opts_t, prints progress, calls
 * profile_policies_run. */
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
               *model = NULL, *eval = "results/data/split.json";
    bool quiet = false;
    args_mirror_t mi = {0};
    arg_opt_t opts[48] = {
        {"sensitivity", ARG_STRING, &sens, "CSV",
         "the matrix (default results/sensitivity_matrix.csv)"},
        {"output", ARG_STRING, &output, "FILE",
         "policies.json to write (default results/policies.json)"},
        {"model", ARG_STRING, &model, "DIR",
         "the model the matrix was measured on (combined perplexities)"},
        {"eval", ARG_STRING, &eval, "PATH",
         "evaluation data, as for mxrlhf sensitivity (default results/data/split.json)"},
        {"quiet", ARG_FLAG, &quiet, NULL, "no progress lines"},
    };
    int nopts = 5;
    args_mirror_add(&mi, &policies_opts_table, opts, &nopts, 48);
    args_alias(opts, &nopts, 48, "backend", "device", "deprecated: use --device");
    arg_spec_t spec = {
        "policies",
        "Derive the study's precision policies A-D (and a baseline control) as precision plans.",
        "--sensitivity CSV --model DIR [--eval PATH] [--output FILE] [--block K] ...",
        "B and C's MXFP4/MXFP8 split and D's reward split are built greedily under a whole-model "
        "perplexity budget, measured on the model; every plan's combined perplexity per phase "
        "is written into policies.json beside the plans. The evaluation-set options must match "
        "the matrix's. docs/sensitivity.md has the rules.",
        opts, nopts, false};
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
    if (args_mirror_apply(&mi, &policies_opts_table, &o, NULL, &e))
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
