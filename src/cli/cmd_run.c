/* mxrlhf run: the whole pipeline (src/pipeline/) on the embedded default or on a user's
 * HH-RLHF file and model directory, each stage cached. `mxrlhf sft` and `mxrlhf rm` are
 * the same chain stopped earlier (cli_pipeline below). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "util/fs.h"
#include "pipeline/pipeline.h"
#include "pipeline/preset.h"
#include "pipeline/stage.h"

static void print_line(void *ctx, const char *line)
{
    (void)ctx;
    printf("%s\n", line);
    fflush(stdout);
}

/* Defaults, then the preset, then --config FILE, then each --set, in order. */
int cli_load_config_preset(const char *path, const char *preset, const arg_list_t *sets,
                           pipeline_config_t *cfg, err_t *e)
{
    pipeline_config_default(cfg);
    int rc = preset ? pipeline_preset_apply(cfg, preset, e) : ERR_OK;
    if (!rc && path)
        rc = pipeline_config_load(path, cfg, e);
    for (int i = 0; !rc && sets && i < sets->n; i++)
        rc = pipeline_config_set(cfg, sets->items[i], e);
    return rc;
}

int cli_load_config(const char *path, const arg_list_t *sets, pipeline_config_t *cfg, err_t *e)
{
    return cli_load_config_preset(path, NULL, sets, cfg, e);
}

int cli_device_section(const char *command, const pipeline_section_t *s, void *opts,
                       const char *device, err_t *e)
{
    opt_keys_t k;
    opts_keys(s->table, &k);
    for (int j = 0; j < k.n; j++) {
        const opt_ref_t *r = &k.ref[j];
        if (r->hidden || !r->f->flag || strcmp(r->f->flag, "device"))
            continue;
        const char *value = (const char *)opts + r->off;
        if (!strcmp(value, device))
            continue;
        fprintf(stderr, "mxrlhf %s: --device %s overrides %s.%s \"%s\"\n", command, device,
                s->name, r->f->key, value);
        if (opts_set_text(s->table, opts, r->f->key, device, "--device", e))
            return e->code;
    }
    return ERR_OK;
}

int cli_device_override(const char *command, pipeline_config_t *cfg, const char *device,
                        err_t *e)
{
    for (int i = 0; i < pipeline_nsections; i++) {
        const pipeline_section_t *s = &pipeline_sections[i];
        if (cli_device_section(command, s, (char *)cfg + s->off, device, e))
            return e->code;
    }
    return ERR_OK;
}

static void print_summary(const pipeline_report_t *rep)
{
    printf("\n%-17s %-12s %10s %10s  %s\n", "stage", "status", "seconds", "CPU s", "output");
    for (int i = 0; i < rep->n; i++) {
        const pipeline_stage_report_t *r = &rep->stage[i];
        if (r->status == PIPELINE_NOT_BUILT)
            continue;
        char secs[32] = "-", cpu[32] = "-";
        if (r->status == PIPELINE_RAN || r->status == PIPELINE_REUSED) {
            snprintf(secs, sizeof secs, "%.1f", r->seconds);
            snprintf(cpu, sizeof cpu, "%.1f", r->cpu_seconds);
        }
        printf("%-17s %-12s %10s %10s  %s\n", r->name, pipeline_status_name(r->status), secs,
               cpu, r->dir[0] ? r->dir : r->note);
    }
    int nb = 0;
    for (int i = 0; i < rep->n; i++)
        nb += rep->stage[i].status == PIPELINE_NOT_BUILT;
    if (nb) {
        printf("\nnot built yet (later issues add them to the chain):\n");
        for (int i = 0; i < rep->n; i++)
            if (rep->stage[i].status == PIPELINE_NOT_BUILT)
                printf("  %-12s %s\n", rep->stage[i].name, rep->stage[i].note);
    }
}

/* OpenMP threads that spin at barriers while their partner thread is descheduled waste
 * most of a shared machine's time: on the 2-core development VM at load average 9, a
 * 100-step pretraining run took 174 s with libgomp's default (spinning) policy and 48 s
 * with OMP_WAIT_POLICY=passive. libgomp reads the variable once, when the program
 * starts, so the training commands set it and start again; a value the user set is
 * kept. */
static void exec_with_passive_openmp(const char *command, int argc, char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || argc > 60)
        return;
    char *args[64];
    args[0] = (char *)"mxrlhf";
    args[1] = (char *)command;
    for (int i = 0; i < argc; i++)
        args[2 + i] = argv[i];
    args[2 + argc] = NULL;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", args);
    /* exec failed: carry on with the default policy */
}

void cli_passive_openmp(const char *command, int argc, char **argv)
{
    exec_with_passive_openmp(command, argc, argv);
}

int cli_pipeline(const char *command, int argc, char **argv, const char *summary,
                 const char *until_default, bool model_is_sft)
{
    exec_with_passive_openmp(command, argc, argv);
    const char *output = "results", *config = NULL, *data = NULL, *model = NULL,
               *until = until_default, *device = NULL, *preset = NULL;
    double stop_after = 0;
    bool force = false, no_judge = false;
    arg_list_t sets = {0};
    arg_opt_t opts[] = {
        {"output", ARG_STRING, &output, "DIR", "where results go (default results/)"},
        {"config", ARG_STRING, &config, "FILE", "configuration file (default: built-in; "
         "`mxrlhf config` prints it)"},
        {"set", ARG_LIST, &sets, "S.K=V", "override one config value, e.g. --set sft.steps=50 "
         "(repeatable)"},
        {"data", ARG_STRING, &data, "FILE", "HH-RLHF .jsonl(.gz) instead of the synthetic task"},
        {"model", ARG_STRING, &model, "DIR",
         model_is_sft ? "a fine-tuned model directory to train the reward models from (no "
                        "pretraining, no SFT)"
                      : "a Hugging Face Qwen2 model directory to start from (no pretraining; "
                        "its own tokenizer)"},
        {"force", ARG_FLAG, &force, NULL, "run every stage even when its cached output is valid"},
        {"device", ARG_STRING, &device, "D", "cpu, cuda or cuda:N: every stage's device, the "
         "sections' own (their backend keys) overridden (default cpu, and the sections')"},
        {"preset", ARG_STRING, &preset, "NAME", "the embedded default's sizes under --config and "
         "--set: cpu (the built-in defaults) or gpu (default: gpu on a cuda device without "
         "--data and --model, else cpu; docs/cli.md)"},
        {"until", ARG_STRING, &until, "STAGE", "stop after this stage"},
        {"stop-after", ARG_DOUBLE, &stop_after, "S", "start no stage after S seconds of this "
         "run (cached stages are still reused); run again to go on"},
        {"no-judge", ARG_FLAG, &no_judge, NULL, "train the reward model only, not the judge"},
    };
    /* run has --until and --stop-after; rm has --no-judge; sft has neither */
    int nopts = 8;
    if (!strcmp(command, "run"))
        nopts = 10;
    arg_opt_t rm_opts[9];
    const arg_opt_t *use = opts;
    if (!strcmp(command, "rm")) {
        memcpy(rm_opts, opts, 8 * sizeof *opts);
        rm_opts[8] = opts[10];
        use = rm_opts;
        nopts = 9;
    }
    char details[1024];
    snprintf(details, sizeof details,
             "Stages: data, tokenizer, pretrain, sft, rm, judge (then later issues' stages).\n"
             "Each stage's output goes to DIR/<stage>/ with stage.json; a stage whose config\n"
             "section and inputs are unchanged is reused. DIR/config.json is the configuration\n"
             "used, DIR/run.json what ran and how long. See docs/cli.md.");
    arg_spec_t spec = {command, summary, "[--output DIR] [--config FILE] [--data FILE] "
                       "[--model DIR] [options]", details, use, nopts, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report(command, &e);
    if (stop_after < 0) {
        err_set(&e, ERR_INPUT, "--stop-after %g: expected seconds >= 0", stop_after);
        return cli_report(command, &e);
    }
    /* the embedded default's sizes: the GPU preset on a cuda device (pipeline/preset.h) */
    if (!preset)
        preset = pipeline_preset_auto(device, !data && !model);
    pipeline_config_t cfg;
    if ((rc = cli_load_config_preset(config, preset, &sets, &cfg, &e)) ||
        (device && (rc = cli_device_override(command, &cfg, device, &e))))
        return cli_report(command, &e);
    if (no_judge)
        until = "rm";
    pipeline_run_opts_t o = {.output = output, .data = data, .until = until,
                             .backend = device ? device : "cpu", .force = force,
                             .stop_after_s = stop_after, .log = {print_line, NULL}};
    if (model_is_sft)
        o.sft_model = model;
    else
        o.model = model;
    printf("mxrlhf %s: %s%s%s -> %s/\n", command, data ? data : "the synthetic task (embedded "
           "default)", model ? ", model " : "", model ? model : "", output);
    if (cfg.preset[0])
        printf("preset %s: %s (config.json records it; --config and --set values win)\n",
               cfg.preset, pipeline_preset_find(cfg.preset)->what);
    /* one writer per output directory: two runs would mix their files */
    char holder[64];
    snprintf(holder, sizeof holder, "mxrlhf %s", command);
    fs_lock_t lock;
    if (fs_lock_dir(output, holder, &lock, &e))
        return cli_report(command, &e);
    pipeline_report_t rep;
    rc = pipeline_run(&cfg, &o, &rep, &e);
    print_summary(&rep);
    fs_unlock_dir(&lock);
    if (rc)
        return cli_report(command, &e);
    return 0;
}

int cmd_run(int argc, char **argv)
{
    return cli_pipeline("run", argc, argv, "Run the pipeline (embedded default, or --data/--model).",
                        NULL, false);
}
