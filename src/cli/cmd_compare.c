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
#include "pipeline/config.h"
#include "rlhf/ppo_data.h"
#include "util/fs.h"

int cmd_compare(int argc, char **argv)
{
    cli_passive_openmp("compare", argc, argv);
    pipeline_compare_t c;
    memset(&c, 0, sizeof c);
    const char *data = NULL, *device = "cpu", *config = NULL, *output = "results";
    bool synthetic = false;
    long long pairs = DATA_DEFAULT_PAIRS;
    uint64_t data_seed = DATA_DEFAULT_SEED;
    arg_list_t sets = {0};
    args_mirror_t mi = {0};
    arg_opt_t opts[32] = {
        {"policies", ARG_STRING, &c.policies_path, "FILE", "policies.json with the plans"},
        {"output", ARG_STRING, &output, "DIR", "results directory (default results)"},
        {"policy-model", ARG_STRING, &c.policy_dir, "DIR", "SFT policy (Hugging Face directory with tokenizer.json)"},
        {"reward-model", ARG_STRING, &c.reward_dir, "DIR", "reward model (score head)"},
        {"judge-model", ARG_STRING, &c.judge_dir, "DIR", "held-out judge reward model (win rates)"},
        {"data", ARG_STRING, &data, "FILE", "HH-RLHF pairs (.jsonl[.gz]); default: the synthetic task"},
        {"synthetic", ARG_FLAG, &synthetic, NULL, "--data holds synthetic-task pairs"},
        {"pairs", ARG_INT, &pairs, "N", "pairs drawn before splitting (default " OPT_STR(DATA_DEFAULT_PAIRS) ")"},
        {"data-seed", ARG_U64, &data_seed, "S", "seed of the data draw and split (default " OPT_STR(DATA_DEFAULT_SEED) ")"},
        {"config", ARG_STRING, &config, "FILE", "configuration file: its ppo, compare, rm and judge sections"},
        {"set", ARG_LIST, &sets, "SECTION.KEY=VALUE", "override one option (ppo.*, compare.*; repeatable)"},
        {"devices", ARG_STRING, &c.devices, "LIST", "GPUs to measure (bus ids or CUDA indices)"},
        {"device", ARG_STRING, &device, "D", "cpu, cuda or cuda:N (default cpu)"},
    };
    int nopts = 13;
    args_mirror_add(&mi, &compare_opts_table, opts, &nopts, 32);
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
        opts, nopts, false};
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
    if (cli_load_config(config, &sets, cfg, &e) ||
        args_mirror_apply(&mi, &compare_opts_table, &cfg->compare, NULL, &e))
        goto out;
    compare_opts_t *co = &cfg->compare;
    if (pairs < 1) {
        err_set(&e, ERR_INPUT, "--pairs: expected at least 1");
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
    fs_lock_t lock = {-1, NULL};
    rc = tok && work && split ? ERR_OK : err_set(&e, ERR_NOMEM, "out of memory");
    if (!rc) /* one writer per output directory: two runs would mix their files */
        rc = fs_lock_dir(output, "mxrlhf compare", &lock, &e);
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
    fs_unlock_dir(&lock);
out:
    free(cfg);
    return cli_report("compare", &e);
}
