/* commands: one function per subcommand, each in its own file cmd_<name>.c.
 * argv[0] is the first argument after the subcommand's name. The return value is
 * the process exit code (0 ok, 1 the work failed, 2 bad input, 3 unavailable). */
#ifndef MXRLHF_CLI_COMMANDS_H
#define MXRLHF_CLI_COMMANDS_H

#include <stdbool.h>

#include "util/err.h"

/* Only prototypes here: each cmd_<name>.c includes the headers of what it uses. */
struct arg_list;
struct pipeline_config;
struct pipeline_section;

int cmd_baseline(int argc, char **argv);
int cmd_comm(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_energy(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_hw(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_logprobs(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_mx(int argc, char **argv);
int cmd_policies(int argc, char **argv);
int cmd_ppo(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_sensitivity(int argc, char **argv);
int cmd_sft(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_verify(int argc, char **argv);

/* The pipeline commands (run, sft, rm): parse the shared options and run the chain up to
 * until_default (NULL: every built stage); with model_is_sft, --model names a fine-tuned
 * model (cmd_run.c). */
int cli_pipeline(const char *command, int argc, char **argv, const char *summary,
                 const char *until_default, bool model_is_sft);

/* Configuration: defaults, then --config FILE, then each --set (cmd_run.c); _preset puts
 * a named preset (pipeline/preset.h; NULL: none) between the defaults and the file. */
int cli_load_config(const char *path, const struct arg_list *sets, struct pipeline_config *cfg,
                    err_t *e);
int cli_load_config_preset(const char *path, const char *preset, const struct arg_list *sets,
                           struct pipeline_config *cfg, err_t *e);

/* --device DEVICE over a configuration: every section's device key (the `backend` keys,
 * whose flag is --device) set to DEVICE, each change printed to stderr ("--device cuda
 * overrides sensitivity.backend \"cpu\""); _section does one section's struct (cmd_run.c). */
int cli_device_override(const char *command, struct pipeline_config *cfg, const char *device,
                        err_t *e);
int cli_device_section(const char *command, const struct pipeline_section *s, void *opts,
                       const char *device, err_t *e);

/* Starts the command again with OMP_WAIT_POLICY=passive unless it is set (cmd_run.c says
 * why); returns only when it was set or the exec failed. */
void cli_passive_openmp(const char *command, int argc, char **argv);

/* Prints "mxrlhf <command>: <message>" to stderr and returns the exit code for e. */
int cli_report(const char *command, const err_t *e);

#endif
