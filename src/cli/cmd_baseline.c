/* mxrlhf baseline: the study's step 1, PPO with the energy monitor (pipeline/baseline.h).
 * Parses options and hands over to pipeline_baseline_run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/rank.h"
#include "data/split.h"
#include "pipeline/baseline.h"
#include "pipeline/compare.h"
#include "rlhf/ppo_data.h"
#include "util/fs.h"
#include "util/json.h"

int cmd_baseline(int argc, char **argv)
{
    pipeline_baseline_t b;
    memset(&b, 0, sizeof b);
    const char *data = NULL, *device = "cpu";
    bool synthetic = false;
    const char *config = NULL, *output = "results/gpu_baseline";
    long long pairs = DATA_DEFAULT_PAIRS;
    uint64_t data_seed = DATA_DEFAULT_SEED;
    arg_list_t sets = {0};
    args_mirror_t mi = {0}, md = {0};
    arg_opt_t opts[34] = {
        {"policy-model", ARG_STRING, &b.policy_dir, "DIR", "SFT policy (Hugging Face directory with tokenizer.json)"},
        {"reward-model", ARG_STRING, &b.reward_dir, "DIR", "reward model (score head)"},
        {"ref-model", ARG_STRING, &b.ref_dir, "DIR", "frozen reference (default: the policy)"},
        {"critic-model", ARG_STRING, &b.critic_dir, "DIR", "separate critic's start (separate_critic)"},
        {"data", ARG_STRING, &data, "FILE", "HH-RLHF pairs (.jsonl[.gz]); default: the synthetic task"},
        {"synthetic", ARG_FLAG, &synthetic, NULL, "--data holds synthetic-task pairs"},
        {"pairs", ARG_INT, &pairs, "N", "pairs drawn before splitting (default " OPT_STR(DATA_DEFAULT_PAIRS) ")"},
        {"data-seed", ARG_U64, &data_seed, "S", "seed of the data draw and split (default " OPT_STR(DATA_DEFAULT_SEED) ")"},
        {"output", ARG_STRING, &output, "DIR", "results directory (default results/gpu_baseline)"},
        {"config", ARG_STRING, &config, "FILE", "JSON options: its \"ppo\" object (or the whole file) and its \"baseline\" object"},
        {"set", ARG_LIST, &sets, "KEY=VALUE", "override one PPO option (repeatable)"},
        {"devices", ARG_STRING, &b.devices, "LIST", "GPUs to measure (bus ids or CUDA indices)"},
        {"policy", ARG_STRING, &b.policies_path, "FILE", "policies.json: every phase under a precision plan"},
        {"plan", ARG_STRING, &b.plan, "NAME", "the plan (with --policy)"},
        {"device", ARG_STRING, &device, "D", "cpu, cuda or cuda:N (default cpu)"},
        {"resume", ARG_FLAG, &b.resume, NULL, "continue a killed run from its last checkpoint"},
    };
    int nopts = 16;
    args_mirror_add(&mi, &ppo_opts_table, opts, &nopts, 34);
    args_mirror_add(&mi, &pipeline_baseline_opts_table, opts, &nopts, 34);
    /* how the energy is measured: the compare section's keys, with their defaults */
    args_mirror_add_only(&mi, &compare_opts_table, "power_source,interval_ms,idle_s", opts,
                         &nopts, 34);
    args_mirror_add(&md, &dist_opts_table, opts, &nopts, 34);
    arg_spec_t spec = {"baseline", "PPO with the energy monitor: the study's energy baseline.",
                       "[--steps 100] [--output results/gpu_baseline] --policy-model DIR "
                       "--reward-model DIR [options]",
                       "Writes power_log_baseline.csv, phase_timing.json, energy.csv (phases "
                       "rollout, reward_inference, gradient_update), training_stats.json, and the "
                       "charts reward_by_step.svg, kl_by_step.svg, losses_by_step.svg, "
                       "power_over_time.svg, besides what `mxrlhf ppo` writes. --calibrate then "
                       "repeats each phase's work (the last step's batch, weights restored "
                       "after) for --calibrate-s seconds of steady time with randomised start "
                       "offsets; energy.csv uses the steady power where the per-step windows "
                       "are too short, and says which phases did (method, note; calibration in "
                       "phase_timing.json). Outputs of the training itself do not change. "
                       "--gpus N: N ranks share each batch (as `mxrlhf ppo --gpus`); rank 0 "
                       "measures every rank's GPU, energy.csv sums them and phase_timing.json "
                       "has per-GPU energies (docs/distributed.md).",
                       opts, nopts, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("baseline", &e);
    ppo_opts_t o;
    ppo_opts_default(&o);
    opts_default(&pipeline_baseline_opts_table, &b.opts);
    dist_opts_t d;
    dist_opts_default(&d);
    if ((config && opts_load_file(&dist_opts_table, config, "dist", false, &d, &e)) ||
        args_mirror_apply(&md, &dist_opts_table, &d, NULL, &e))
        return cli_report("baseline", &e);
    if ((config && (opts_load_file(&ppo_opts_table, config, "ppo", true, &o, &e) ||
                    opts_load_file(&pipeline_baseline_opts_table, config, "baseline", false,
                                   &b.opts, &e))) ||
        args_set_keys(&ppo_opts_table, &o, &sets, &e) ||
        args_mirror_apply(&mi, &ppo_opts_table, &o, NULL, &e) ||
        args_mirror_apply(&mi, &pipeline_baseline_opts_table, &b.opts, NULL, &e))
        return cli_report("baseline", &e);
    compare_opts_t meas;
    compare_opts_default(&meas);
    if (args_mirror_apply_one(&mi, "power-source", &compare_opts_table, "power_source", &meas,
                              &e) ||
        args_mirror_apply_one(&mi, "interval-ms", &compare_opts_table, "interval_ms", &meas, &e) ||
        args_mirror_apply_one(&mi, "idle-s", &compare_opts_table, "idle_s", &meas, &e))
        return cli_report("baseline", &e);
    if (pairs < 1 || (!b.policies_path != !b.plan)) {
        err_set(&e, ERR_INPUT, "need --pairs >= 1, and --policy with --plan");
        return cli_report("baseline", &e);
    }
    if (args_require(b.policy_dir, "policy-model", &e) || args_require(b.reward_dir, "reward-model", &e))
        return cli_report("baseline", &e);
    /* --gpus N: this process launches N ranks, or is one of them (cli/rank.h); rank 0
     * writes the outputs, a rank r > 0 into a scratch directory */
    cli_rank_t rk;
    if (cli_rank_begin("baseline", d.gpus, device, argc, argv, &rk, &e) || rk.launched)
        return cli_report("baseline", &e);
    const int rank = dist_rank(rk.comm);
    const char *out_dir = cli_rank_output(&rk, output, &e);
    if (!out_dir) {
        cli_rank_end(&rk);
        return cli_report("baseline", &e);
    }
    b.out_dir = out_dir;
    b.power_source = meas.power_source;
    b.interval_s = meas.interval_ms / 1000;
    b.idle_s = meas.idle_s;
    b.log = rank == 0 ? stderr : NULL;
    b.comm = rk.comm;
    backend_t *be = NULL;
    ppo_prompts_t pr;
    memset(&pr, 0, sizeof pr);
    char *tok = fs_join(b.policy_dir, "tokenizer.json"), *work = fs_join(b.out_dir, "data");
    ppo_data_opts_t dopt = {data, synthetic, (size_t)pairs, data_seed, tok, o.template_, work};
    rlhf_ppo_result_t res;
    b.data = &dopt;
    /* the checks rlhf_ppo_run makes first, before data/ is written */
    rlhf_ppo_io_t pre = {NULL, b.policy_dir, b.ref_dir, b.reward_dir, b.critic_dir, out_dir,
                         b.policies_path, b.plan, NULL, 0, NULL, 0, false, NULL, b.resume, NULL,
                         NULL, &dopt, rk.comm};
    fs_lock_t lock = {-1, NULL};
    if (!tok || !work)
        err_set(&e, ERR_NOMEM, "out of memory");
    else if ((rank > 0 || !fs_lock_dir(output, "mxrlhf baseline", &lock, &e)) &&
             !be_open(rk.device, &be, &e) && !rlhf_ppo_check(&o, &pre, &e) &&
             !ppo_prompts_load(&dopt, &pr, &e)) {
        if (rank == 0)
            fprintf(stderr, "mxrlhf baseline: %zu PPO prompts and %zu evaluation prompts from "
                    "%s%s\n", pr.ntrain, pr.neval, pr.pairs_path,
                    pr.synthetic ? " (synthetic task)" : "");
        b.be = be;
        b.prompts = (const char *const *)pr.train;
        b.n_prompts = pr.ntrain;
        b.eval_prompts = (const char *const *)pr.eval;
        b.n_eval = pr.neval;
        b.synthetic = pr.synthetic;
        if (!pipeline_baseline_run(&o, &b, &res, &e) && rank == 0)
            printf("mxrlhf baseline: %d PPO steps; results in %s (energy.csv, phase_timing.json, "
                   "training_stats.json, power_log_baseline.csv, *.svg)\n", res.steps_done, output);
    }
    ppo_prompts_free(&pr);
    be_close(be);
    fs_unlock_dir(&lock);
    cli_rank_end(&rk);
    free(tok);
    free(work);
    return cli_report("baseline", &e);
}
