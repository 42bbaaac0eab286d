/* mxrlhf compare: PPO under each precision plan against the unquantized baseline
 * (pipeline/compare.h). Parses options, loads the prompts and the rm_eval pairs, hands over
 * to pipeline_compare_run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/hh.h"
#include "data/split.h"
#include "pipeline/compare.h"
#include "rlhf/ppo_data.h"
#include "util/fs.h"

int cmd_compare(int argc, char **argv)
{
    cli_passive_openmp("compare", argc, argv);
    pipeline_compare_t c;
    memset(&c, 0, sizeof c);
    const char *data = NULL, *device = "cpu", *config = NULL, *output = "results";
    const char *plans = NULL, *control = NULL, *reference = NULL, *source = NULL;
    bool synthetic = false, keep = false;
    long long pairs = 1000, seeds = -1, steps = -1;
    double calibrate_s = -1;
    uint64_t data_seed = 1234;
    arg_list_t sets = {0};
    arg_opt_t opts[] = {
        {"policies", ARG_STRING, &c.policies_path, "FILE", "policies.json with the plans"},
        {"output", ARG_STRING, &output, "DIR", "results directory (default results)"},
        {"policy-model", ARG_STRING, &c.policy_dir, "DIR", "SFT policy (Hugging Face directory with tokenizer.json)"},
        {"reward-model", ARG_STRING, &c.reward_dir, "DIR", "reward model (score head)"},
        {"judge-model", ARG_STRING, &c.judge_dir, "DIR", "held-out judge reward model (win rates)"},
        {"data", ARG_STRING, &data, "FILE", "HH-RLHF pairs (.jsonl[.gz]); default: the synthetic task"},
        {"synthetic", ARG_FLAG, &synthetic, NULL, "--data holds synthetic-task pairs"},
        {"pairs", ARG_INT, &pairs, "N", "pairs drawn before splitting (default 1000)"},
        {"data-seed", ARG_U64, &data_seed, "S", "seed of the data draw and split (default 1234)"},
        {"seeds", ARG_INT, &seeds, "N", "PPO seeds per plan (default 3)"},
        {"steps", ARG_INT, &steps, "N", "PPO steps of each run (default 20)"},
        {"plans", ARG_STRING, &plans, "LIST", "plans of policies.json (default baseline,A,B,C,D)"},
        {"control", ARG_STRING, &control, "NAME", "the control plan (default baseline)"},
        {"reference", ARG_STRING, &reference, "PLAN", "plan of the unquantized runs (default: none, fp32; on a GPU: bf16)"},
        {"config", ARG_STRING, &config, "FILE", "configuration file: its ppo, compare, rm and judge sections"},
        {"set", ARG_LIST, &sets, "SECTION.KEY=VALUE", "override one option (ppo.*, compare.*; repeatable)"},
        {"power-source", ARG_STRING, &source, "SRC", "auto (default), nvml, rapl, none or replay:FILE"},
        {"devices", ARG_STRING, &c.devices, "LIST", "GPUs to measure (bus ids or CUDA indices)"},
        {"device", ARG_STRING, &device, "NAME", "compute backend (default cpu)"},
        {"keep-models", ARG_FLAG, &keep, NULL, "keep every run's trained policy and checkpoints"},
        {"calibrate-s", ARG_DOUBLE, &calibrate_s, "S", "calibrate each run's phases for S s of steady time (default 0: off)"},
    };
    arg_spec_t spec = {
        "compare", "PPO under each precision plan against the unquantized baseline.",
        "--policies results/policies.json --output results/ --policy-model DIR --reward-model DIR "
        "--judge-model DIR [--seeds 3] [--steps 20] [options]",
        "Runs the unquantized baseline, the control plan and the plans over --seeds seeds, "
        "interleaved (seed-major rounds, each rotated), each inside the energy monitor as "
        "`mxrlhf baseline`, into OUTPUT/runs/. Writes OUTPUT/policy_comparison.csv (one row per "
        "plan and phase), compare_runs.csv and comparison.json, and checks that the control "
        "comes out at a 50% win rate (exit 1 otherwise) and an energy ratio near 1. To use a "
        "`mxrlhf run` directory's data: --data DIR/data/pairs.jsonl --synthetic --pairs 40000. "
        "docs/compare.md describes the columns.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("compare", &e);
    pipeline_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) {
        err_set(&e, ERR_NOMEM, "out of memory");
        return cli_report("compare", &e);
    }
    if (cli_load_config(config, &sets, cfg, &e))
        goto out;
    compare_opts_t *co = &cfg->compare;
    if (seeds >= 0)
        co->seeds = (int)seeds;
    if (steps >= 0)
        co->steps = (int)steps;
    if (plans)
        snprintf(co->plans, sizeof co->plans, "%s", plans);
    if (control)
        snprintf(co->control, sizeof co->control, "%s", control);
    if (reference)
        snprintf(co->reference, sizeof co->reference, "%s", reference);
    if (source)
        snprintf(co->power_source, sizeof co->power_source, "%s", source);
    if (calibrate_s >= 0)
        co->calibrate_s = calibrate_s;
    co->keep_models |= keep;
    {
        /* the command line's values go through the section's own checks */
        cJSON *j = compare_opts_to_json(co);
        compare_opts_t chk;
        compare_opts_default(&chk);
        rc = j ? compare_opts_from_json(j, "compare", &chk, &e) : err_set(&e, ERR_NOMEM, "oom");
        cJSON_Delete(j);
        if (rc)
            goto out;
    }
    if (pairs < 1 || co->seeds < 1 || co->steps < 1) {
        err_set(&e, ERR_INPUT, "need --pairs, --seeds and --steps >= 1");
        goto out;
    }
    if (args_require(c.policies_path, "policies", &e) ||
        args_require(c.policy_dir, "policy-model", &e) ||
        args_require(c.reward_dir, "reward-model", &e) ||
        args_require(c.judge_dir, "judge-model", &e))
        goto out;
    backend_t *be = NULL;
    ppo_prompts_t pr;
    memset(&pr, 0, sizeof pr);
    data_hh_t hh;
    memset(&hh, 0, sizeof hh);
    data_split_record_t rec;
    memset(&rec, 0, sizeof rec);
    bool have_rec = false;
    const data_pair_t **rm_eval = NULL;
    size_t nrm = 0;
    char *tok = fs_join(c.policy_dir, "tokenizer.json"), *work = fs_join(output, "runs/data");
    char *split = work ? fs_join(work, "split.json") : NULL;
    ppo_data_opts_t dopt = {data, synthetic, (size_t)pairs, data_seed, tok, cfg->ppo.template_, work};
    pipeline_compare_result_t res;
    rc = tok && work && split ? ERR_OK : err_set(&e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = be_open(device, &be, &e);
    if (!rc)
        rc = ppo_prompts_load(&dopt, &pr, &e);
    if (!rc)
        rc = data_hh_read(pr.pairs_path, NULL, &hh, &e);
    if (!rc && !(rc = data_split_read(split, &rec, &e)))
        have_rec = true;
    if (!rc)
        rc = data_split_pairs(&hh, &rec, DATA_SPLIT_RM_EVAL, &rm_eval, &nrm, &e);
    if (!rc) {
        fprintf(stderr, "mxrlhf compare: %zu PPO prompts, %zu evaluation prompts, %zu rm_eval "
                "pairs from %s%s\n", pr.ntrain, pr.neval, nrm, pr.pairs_path,
                pr.synthetic ? " (synthetic task)" : "");
        c.be = be;
        c.backend_name = device;
        c.prompts = (const char *const *)pr.train;
        c.n_prompts = pr.ntrain;
        c.eval_prompts = (const char *const *)pr.eval;
        c.n_eval = pr.neval;
        c.rm_eval = rm_eval;
        c.n_rm_eval = nrm;
        c.synthetic = pr.synthetic;
        c.rm_opts = &cfg->rm;
        c.judge_opts = &cfg->judge;
        c.out_dir = output;
        c.log = stderr;
        if (!pipeline_compare_run(co, &cfg->ppo, &c, &res, &e))
            printf("mxrlhf compare: %d runs in %.1f s; %s/%s, %s, %s\n%s\n", res.runs,
                   res.seconds, output, COMPARE_CSV, COMPARE_RUNS_CSV, COMPARE_JSON,
                   res.control_message);
    }
    free(rm_eval);
    if (have_rec)
        data_split_free(&rec);
    data_hh_free(&hh);
    ppo_prompts_free(&pr);
    be_close(be);
    free(tok);
    free(work);
    free(split);
out:
    free(cfg);
    return cli_report("compare", &e);
}
