/* commands: one function per subcommand, each in its own file cmd_<name>.c.
 * argv[0] is the first argument after the subcommand's name. The return value is
 * the process exit code (0 ok, 1 the work failed, 2 bad input, 3 unavailable). */
#ifndef MXRLHF_CLI_COMMANDS_H
#define MXRLHF_CLI_COMMANDS_H

#include "util/err.h"

int cmd_data(int argc, char **argv);
int cmd_energy(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_logprobs(int argc, char **argv);
int cmd_monitor(int argc, char **argv);
int cmd_mx(int argc, char **argv);
int cmd_policies(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_sensitivity(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

/* Prints "mxrlhf <command>: <message>" to stderr and returns the exit code for e. */
int cli_report(const char *command, const err_t *e);

#endif
