/* rank: how a command runs under `--gpus N` (dist/dist.h, docs/distributed.md).
 *
 * cli_rank_begin, called once the command's options are read and before any work:
 *   - not a rank yet (no RANK in the environment) and gpus > 1: this process becomes the
 *     launcher: it starts N ranks of the same command line (dist_launch), waits, and
 *     reports; the command returns what the launcher says (r->launched);
 *   - otherwise this process is one rank (or the only one): its device (cuda becomes
 *     cuda:LOCAL_RANK when there are several ranks) and its communicator (self, tcp or
 *     nccl) are set up in r.
 */
#ifndef MXRLHF_CLI_RANK_H
#define MXRLHF_CLI_RANK_H

#include <stdbool.h>

#include "dist/dist.h"
#include "util/err.h"

typedef struct cli_rank {
    bool launched;          /* this process was the launcher: the job is over */
    dist_env_t env;
    dist_comm_t *comm;      /* never NULL after a successful begin (self for one rank) */
    char device[32];        /* the device this rank opens */
    char scratch[64];       /* rank r > 0: its scratch output directory ("" when none) */
} cli_rank_t;

/* argc/argv: the command's own arguments (after the command name), re-used for the ranks. */
int cli_rank_begin(const char *command, int gpus, const char *device, int argc, char **argv,
                   cli_rank_t *r, err_t *e);
/* Where this rank writes a command's output directory: `output` on rank 0; on a rank r > 0 a
 * scratch directory under /tmp (rank 0 writes the outputs), removed by cli_rank_end. NULL
 * with e set when it cannot be made. */
const char *cli_rank_output(cli_rank_t *r, const char *output, err_t *e);
/* Closes the communicator and removes the scratch directory. */
void cli_rank_end(cli_rank_t *r);

#endif
