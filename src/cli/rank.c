/* rank: a command as the launcher or as one rank (rank.h). */
#include "cli/rank.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

int cli_rank_begin(const char *command, int gpus, const char *device, int argc, char **argv,
                   cli_rank_t *r, err_t *e)
{
    memset(r, 0, sizeof *r);
    if (dist_env_read(&r->env, e))
        return e->code;
    if (!r->env.set && gpus > 1) {
        char **av = err_calloc(e, (size_t)argc + 3, sizeof *av, "arguments");
        if (!av)
            return e->code;
        av[0] = "mxrlhf";
        av[1] = (char *)command;
        for (int i = 0; i < argc; i++)
            av[2 + i] = argv[i];
        dist_launch_t l = {.nranks = gpus, .exe = "/proc/self/exe", .argv = av,
                           .quiet_stdout = true};
        fprintf(stderr, "mxrlhf %s: starting %d ranks\n", command, gpus);
        int rc = dist_launch(&l, e);
        free(av);
        r->launched = true;
        return rc;
    }
    const bool cuda = !strncmp(device, "cuda", 4);
    if (r->env.size > 1 && cuda && strcmp(device, "cuda"))
        return err_set(e, ERR_INPUT, "--device %s with %d ranks: say --device cuda (rank r "
                       "takes cuda:LOCAL_RANK)", device, r->env.size);
    if (r->env.size > 1 && cuda)
        snprintf(r->device, sizeof r->device, "cuda:%d", r->env.local_rank);
    else
        snprintf(r->device, sizeof r->device, "%s", device);
    if (dist_comm_open(&r->env, cuda, r->env.local_rank, &r->comm, e))
        return err_prefix(e, "rank %d of %d", r->env.rank, r->env.size);
    return ERR_OK;
}

const char *cli_rank_output(cli_rank_t *r, const char *output, err_t *e)
{
    if (dist_rank(r->comm) == 0)
        return output;
    snprintf(r->scratch, sizeof r->scratch, "/tmp/mxrlhf-rank%d-XXXXXX", dist_rank(r->comm));
    if (!mkdtemp(r->scratch)) {
        err_errno(e, ERR_FAIL, "rank %d: scratch directory %s", dist_rank(r->comm), r->scratch);
        r->scratch[0] = 0;
        return NULL;
    }
    return r->scratch;
}

void cli_rank_end(cli_rank_t *r)
{
    dist_comm_free(r->comm);
    r->comm = NULL;
    if (r->scratch[0]) {
        err_t e = ERR_INIT;
        fs_rmtree(r->scratch, &e);
        r->scratch[0] = 0;
    }
}
