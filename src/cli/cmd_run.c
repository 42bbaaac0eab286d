/* mxrlhf run: the whole pipeline on the embedded default.
 *
 * The pipeline is built stage by stage (docs/architecture.md). This command runs the
 * stages that exist and names those that do not yet, so `make run` is honest about
 * what it did. */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"

int cmd_run(int argc, char **argv)
{
    const char *output = "results";
    arg_opt_t opts[] = {
        {"output", ARG_STRING, &output, "DIR", "where results go (default results/)"},
    };
    arg_spec_t spec = {"run", "Run the pipeline on the embedded default.", "[--output DIR]",
                       NULL, opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("run", &e);
    printf("mxrlhf run: no pipeline stage is built yet.\n");
    return 0;
}
