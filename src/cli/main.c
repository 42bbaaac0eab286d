/* mxrlhf: the command. Dispatches to one subcommand; holds no logic of its own. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

#define MXRLHF_VERSION "0.1.0"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command_t;

/* Keep sorted by name; `mxrlhf --help` prints it as is. */
static const command_t commands[] = {
    {"baseline", cmd_baseline, "the study's baseline: PPO with the energy monitor, plots"},
    {"comm", cmd_comm, "check and time the ranks' all-reduce (--gpus N; nccl-tests' figures)"},
    {"compare", cmd_compare, "PPO under each precision plan against the unquantized baseline (policy_comparison.csv)"},
    {"config", cmd_config, "print the configuration (every stage's options) as JSON"},
    {"data", cmd_data, "draw and split HH-RLHF pairs; generate or score the synthetic task"},
    {"energy", cmd_energy, "recompute energy per phase from a run's power log (energy.csv)"},
    {"generate", cmd_generate, "sample a continuation of token ids from a model"},
    {"hw", cmd_hw, "MX processing elements: test vectors, GEMM cases, accelerator energy projection"},
    {"init", cmd_init, "write a model directory with deterministic random weights (any config.json)"},
    {"logprobs", cmd_logprobs, "per-token log-probabilities of token ids under a model"},
    {"monitor", cmd_monitor, "measure the energy of any command, phase by phase"},
    {"mx", cmd_mx, "MX number formats: quantize or pack files, the format table, error"},
    {"policies", cmd_policies, "derive the study's precision policies A-D from a sensitivity matrix"},
    {"ppo", cmd_ppo, "train a policy with PPO against a reward model (TRL 0.11 semantics)"},
    {"report", cmd_report, "the study report (report.md, SVG figures) from a results directory"},
    {"rm", cmd_rm, "train the reward model and the held-out judge (Bradley-Terry)"},
    {"run", cmd_run, "run the whole pipeline on the embedded default (or what exists of it)"},
    {"sensitivity", cmd_sensitivity, "perplexity per layer, MX format and block size (the sensitivity matrix)"},
    {"sft", cmd_sft, "pretrain (embedded default) and fine-tune on chosen responses"},
    {"tokenize", cmd_tokenize, "encode/decode with a tokenizer.json; `tokenize train` learns BPE"},
    {"verify", cmd_verify, "check CPU, GPU, driver, CUDA runtime, power sources, --model, --data"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mxrlhf <command> [options]   (mxrlhf <command> --help for more)\n\n"
               "Energy of RLHF training with OCP Microscaling (MX) number formats.\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nexit codes: 0 success, 1 the work failed, 2 bad input or usage, "
               "3 a requested resource is unavailable\n");
}

int cli_report(const char *command, const err_t *e)
{
    if (!e || e->code == ERR_OK)
        return 0;
    fprintf(stderr, "mxrlhf %s: %s\n", command, e->msg[0] ? e->msg : "failed");
    return e->code;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return ERR_INPUT;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) {
        printf("mxrlhf %s\n", MXRLHF_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name))
            return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "mxrlhf: unknown command \"%s\" (mxrlhf --help lists them)\n", name);
    return ERR_INPUT;
}
