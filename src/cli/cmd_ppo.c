/* mxrlhf ppo: PPO (TRL 0.11 semantics) from an SFT policy and a reward model, on HH-RLHF
 * pairs or the synthetic task. Parses options and hands over to rlhf_ppo_run. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/rank.h"
#include "data/split.h"
#include "rlhf/ppo.h"
#include "rlhf/ppo_data.h"
#include "util/fs.h"

static cJSON *num(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

static cJSON *eval_json(const ppo_eval_t *ev)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", ev->step);
    cJSON_AddNumberToObject(j, "prompts", ev->n);
    cJSON_AddItemToObject(j, "reward_mean", num(ev->reward_mean));
    cJSON_AddItemToObject(j, "data_synth_score", num(ev->synth_score_mean));
    cJSON_AddItemToObject(j, "kl", num(ev->kl_mean));
    cJSON_AddItemToObject(j, "response_len_mean", num(ev->response_len_mean));
    return j;
}

/* The run's summary on stdout, one JSON object. */
static void print_summary(const rlhf_ppo_result_t *r, const char *output)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "steps", r->steps_done);
    cJSON_AddStringToObject(j, "output", output);
    if (r->first.n)
        cJSON_AddItemToObject(j, "first_eval", eval_json(&r->first));
    if (r->last.n)
        cJSON_AddItemToObject(j, "last_eval", eval_json(&r->last));
    if (r->best_of_n_done) {
        cJSON *b = cJSON_AddObjectToObject(j, "best_of_n");
        cJSON_AddNumberToObject(b, "n", r->best_of_n);
        cJSON_AddItemToObject(b, "reward_mean", num(r->best_of_n_reward));
        cJSON_AddItemToObject(b, "data_synth_score", num(r->best_of_n_synth_score));
        cJSON_AddItemToObject(b, "kl_analytic", num(r->best_of_n_kl));
    }
    cJSON_AddItemToObject(j, "final_kl_coef", num(r->final_kl_coef));
    char *s = cJSON_Print(j);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(j);
}

int cmd_ppo(int argc, char **argv)
{
    const char *policy_dir = NULL, *reward_dir = NULL, *ref_dir = NULL, *critic_dir = NULL,
               *data = NULL, *output = "results/ppo", *config = NULL, *policies = NULL,
               *plan = NULL, *device = "cpu";
    long long pairs = DATA_DEFAULT_PAIRS;
    uint64_t data_seed = DATA_DEFAULT_SEED;
    bool synthetic = false, resume = false;
    arg_list_t sets = {0};
    args_mirror_t mi = {0}, md = {0};
    arg_opt_t opts[26] = {
        {"policy-model", ARG_STRING, &policy_dir, "DIR", "SFT policy (Hugging Face directory with tokenizer.json)"},
        {"reward-model", ARG_STRING, &reward_dir, "DIR", "reward model (score head)"},
        {"ref-model", ARG_STRING, &ref_dir, "DIR", "frozen reference (default: the policy)"},
        {"critic-model", ARG_STRING, &critic_dir, "DIR", "separate critic's start (separate_critic; default: the reward model)"},
        {"data", ARG_STRING, &data, "FILE", "HH-RLHF pairs (.jsonl[.gz]); default: the synthetic task"},
        {"synthetic", ARG_FLAG, &synthetic, NULL, "--data holds synthetic-task pairs (ground-truth scores)"},
        {"pairs", ARG_INT, &pairs, "N", "pairs drawn before splitting (default " OPT_STR(DATA_DEFAULT_PAIRS) ")"},
        {"data-seed", ARG_U64, &data_seed, "S", "seed of the data draw and split (default " OPT_STR(DATA_DEFAULT_SEED) ")"},
        {"output", ARG_STRING, &output, "DIR", "where the run's files go (default results/ppo)"},
        {"config", ARG_STRING, &config, "FILE", "JSON options: its \"ppo\" object, or the whole file"},
        {"set", ARG_LIST, &sets, "KEY=VALUE", "override one option (repeatable), e.g. learning_rate=1e-4"},
        {"policy", ARG_STRING, &policies, "FILE", "policies.json: run every phase under a precision plan"},
        {"plan", ARG_STRING, &plan, "NAME", "the plan (with --policy)"},
        {"device", ARG_STRING, &device, "D", "cpu, cuda or cuda:N (default cpu)"},
        {"resume", ARG_FLAG, &resume, NULL, "continue from OUTPUT/checkpoints/latest.json"},
    };
    int nopts = 15;
    args_mirror_add(&mi, &ppo_opts_table, opts, &nopts, 26);
    args_mirror_add(&md, &dist_opts_table, opts, &nopts, 26);
    arg_spec_t spec = {"ppo", "Train a policy with PPO against a reward model (TRL 0.11 semantics).",
                       "--policy-model DIR --reward-model DIR [--data FILE] [--output DIR] [options]",
                       "Writes training_stats.jsonl / .json (TRL's statistic names), samples.jsonl, "
                       "eval.json, policy/ (the trained policy), checkpoints/. Options and their "
                       "defaults: docs/ppo.md and `mxrlhf config --section ppo`. The same seed "
                       "gives the same statistics on any thread count; --resume after a crash "
                       "gives the same final weights and statistics as an uninterrupted run, and "
                       "refuses (exit 2, naming the field) a run that is not the checkpoint's: "
                       "other options, models, plan, data or seeds, or fewer steps than done. "
                       "--gpus N: N ranks share each batch (batch_size and mini_batch_size "
                       "split evenly), gradients averaged over them; rank 0 writes the files "
                       "(docs/distributed.md).",
                       opts, nopts, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc || args_require(policy_dir, "policy-model", &e) ||
        args_require(reward_dir, "reward-model", &e))
        return cli_report("ppo", &e);
    ppo_opts_t o;
    ppo_opts_default(&o);
    dist_opts_t d;
    dist_opts_default(&d);
    if ((config && opts_load_file(&ppo_opts_table, config, "ppo", true, &o, &e)) ||
        (config && opts_load_file(&dist_opts_table, config, "dist", false, &d, &e)) ||
        args_set_keys(&ppo_opts_table, &o, &sets, &e) ||
        args_mirror_apply(&mi, &ppo_opts_table, &o, NULL, &e) ||
        args_mirror_apply(&md, &dist_opts_table, &d, NULL, &e))
        return cli_report("ppo", &e);
    if (pairs < 1 || ((policies || plan) && (args_require(policies, "policy", &e) ||
                                             args_require(plan, "plan", &e)))) {
        if (!e.code)
            err_set(&e, ERR_INPUT, "--pairs: expected at least 1");
        return cli_report("ppo", &e);
    }
    /* --gpus N: this process launches N ranks, or is one of them (cli/rank.h); rank 0
     * writes the outputs, a rank r > 0 into a scratch directory */
    cli_rank_t rk;
    if (cli_rank_begin("ppo", d.gpus, device, argc, argv, &rk, &e) || rk.launched)
        return cli_report("ppo", &e);
    const int rank = dist_rank(rk.comm);
    const char *out_dir = cli_rank_output(&rk, output, &e);
    if (!out_dir) {
        cli_rank_end(&rk);
        return cli_report("ppo", &e);
    }
    backend_t *be = NULL;
    ppo_prompts_t pr;
    memset(&pr, 0, sizeof pr);
    char *tok = fs_join(policy_dir, "tokenizer.json"), *work = fs_join(out_dir, "data");
    ppo_data_opts_t dopt = {data, synthetic, (size_t)pairs, data_seed, tok, o.template_, work};
    rlhf_ppo_io_t io = {be, policy_dir, ref_dir, reward_dir, critic_dir, out_dir, policies, plan,
                        NULL, 0, NULL, 0, false, NULL, resume, rank == 0 ? stderr : NULL, NULL,
                        &dopt, rk.comm};
    rlhf_ppo_result_t res;
    fs_lock_t lock = {-1, NULL};
    if (!tok || !work)
        err_set(&e, ERR_NOMEM, "out of memory");
    /* one writer per output directory (rank 0's; the other ranks write scratch directories);
     * nothing goes into data/ before the reward model and, resuming, the checkpoint's run
     * are checked */
    else if ((rank > 0 || !fs_lock_dir(output, "mxrlhf ppo", &lock, &e)) &&
             !be_open(rk.device, &be, &e) && !rlhf_ppo_check(&o, &io, &e) &&
             !ppo_prompts_load(&dopt, &pr, &e)) {
        if (rank == 0)
            fprintf(stderr, "mxrlhf ppo: %zu PPO prompts and %zu evaluation prompts from %s%s\n",
                    pr.ntrain, pr.neval, pr.pairs_path, pr.synthetic ? " (synthetic task)" : "");
        io.be = be;
        io.prompts = (const char *const *)pr.train;
        io.n_prompts = pr.ntrain;
        io.eval_prompts = (const char *const *)pr.eval;
        io.n_eval = pr.neval;
        io.synthetic = pr.synthetic;
        if (!rlhf_ppo_run(&o, &io, &res, &e) && rank == 0)
            print_summary(&res, output);
    }
    ppo_prompts_free(&pr);
    be_close(be);
    fs_unlock_dir(&lock);
    cli_rank_end(&rk);
    free(tok);
    free(work);
    return cli_report("ppo", &e);
}
