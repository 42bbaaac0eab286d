/* comm: the communicator interface (dist.h): the environment, dispatch by kind, the self
 * communicator, agreement before outputs, rank-ordered sums. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist_internal.h"

/* ---- the environment ---------------------------------------------------------------------- */

static int env_int(const char *name, int lo, int hi, int def, int *out, err_t *e)
{
    const char *s = getenv(name);
    if (!s || !*s) {
        *out = def;
        return ERR_OK;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return err_set(e, ERR_INPUT, "environment variable %s: expected an integer in [%d, %d], "
                       "got \"%s\"", name, lo, hi, s);
    *out = (int)v;
    return ERR_OK;
}

int dist_env_read(dist_env_t *env, err_t *e)
{
    memset(env, 0, sizeof *env);
    env->listen_fd = -1;
    env->timeout_s = 600;
    bool has_rank = getenv("RANK") && *getenv("RANK"),
         has_size = getenv("WORLD_SIZE") && *getenv("WORLD_SIZE");
    if (has_rank != has_size)
        return err_set(e, ERR_INPUT, "environment: RANK and WORLD_SIZE go together (%s is set, "
                       "%s is not)", has_rank ? "RANK" : "WORLD_SIZE",
                       has_rank ? "WORLD_SIZE" : "RANK");
    env->set = has_rank;
    if (env_int("WORLD_SIZE", 1, DIST_MAX_RANKS, 1, &env->size, e) ||
        env_int("RANK", 0, env->size - 1, 0, &env->rank, e) ||
        env_int("LOCAL_RANK", 0, DIST_MAX_RANKS - 1, env->rank, &env->local_rank, e) ||
        env_int("LOCAL_WORLD_SIZE", 1, DIST_MAX_RANKS, env->size, &env->local_size, e) ||
        env_int("MASTER_PORT", 0, 65535, 0, &env->port, e) ||
        env_int("MXRLHF_DIST_LISTEN_FD", -1, 1 << 20, -1, &env->listen_fd, e))
        return e->code;
    int t = 600;
    if (env_int("MXRLHF_DIST_TIMEOUT_S", 1, 1 << 24, 600, &t, e))
        return e->code;
    env->timeout_s = t;
    const char *a = getenv("MASTER_ADDR");
    snprintf(env->addr, sizeof env->addr, "%s", a && *a ? a : "127.0.0.1");
    if (env->size > 1 && env->port == 0 && !(env->rank == 0 && env->listen_fd >= 0))
        return err_set(e, ERR_INPUT, "environment: WORLD_SIZE is %d but MASTER_PORT is not set "
                       "(rank 0's TCP port)", env->size);
    return ERR_OK;
}

/* ---- opening ------------------------------------------------------------------------------- */

static dist_comm_t *comm_new(dist_kind_t kind, int rank, int size, double timeout_s, err_t *e)
{
    dist_comm_t *c = err_calloc(e, 1, sizeof *c, "communicator");
    if (!c)
        return NULL;
    c->kind = kind;
    c->rank = rank;
    c->size = size;
    c->timeout_s = timeout_s;
    for (int i = 0; i < DIST_MAX_RANKS; i++)
        c->fd[i] = -1;
    return c;
}

int dist_comm_self(dist_comm_t **out, err_t *e)
{
    *out = comm_new(DIST_SELF, 0, 1, 0, e);
    return *out ? ERR_OK : e->code;
}

int dist_comm_tcp(const dist_env_t *env, dist_comm_t **out, err_t *e)
{
    *out = NULL;
    if (env->size <= 1)
        return dist_comm_self(out, e);
    dist_comm_t *c = comm_new(DIST_TCP, env->rank, env->size, env->timeout_s, e);
    if (!c)
        return e->code;
    if (dist_tcp_connect(c, env, e)) {
        dist_comm_free(c);
        return e->code;
    }
    *out = c;
    return ERR_OK;
}

int dist_comm_open(const dist_env_t *env, bool cuda, int device, dist_comm_t **out, err_t *e)
{
    *out = NULL;
    const char *k = getenv("MXRLHF_DIST_COMM");
    if (k && *k && strcmp(k, "tcp") && strcmp(k, "nccl"))
        return err_set(e, ERR_INPUT, "environment variable MXRLHF_DIST_COMM: expected tcp or "
                       "nccl, got \"%s\"", k);
    /* one rank: self, unless nccl is asked for by name (a one-GPU check of the NCCL path) */
    if (env->size <= 1 && !(k && !strcmp(k, "nccl")))
        return dist_comm_self(out, e);
    bool nccl = k && *k ? !strcmp(k, "nccl") : cuda;
    return nccl ? dist_comm_nccl(env, device, out, e) : dist_comm_tcp(env, out, e);
}

void dist_comm_free(dist_comm_t *c)
{
    if (!c)
        return;
    dist_nccl_free(c->nccl);
    dist_tcp_close(c);
    free(c);
}

int dist_rank(const dist_comm_t *c) { return c ? c->rank : 0; }
int dist_size(const dist_comm_t *c) { return c ? c->size : 1; }
dist_kind_t dist_kind(const dist_comm_t *c) { return c ? c->kind : DIST_SELF; }

const char *dist_kind_name(dist_kind_t k)
{
    return k == DIST_TCP ? "tcp" : k == DIST_NCCL ? "nccl" : "self";
}

/* ---- collectives ----------------------------------------------------------------------------- */

/* A communicator of one rank does nothing, except nccl's (its one-rank path is a check). */
static bool alone(const dist_comm_t *c) { return !c || (c->size == 1 && c->kind != DIST_NCCL); }

int dist_allreduce(dist_comm_t *c, void *buf, size_t n, dist_dtype_t t, err_t *e)
{
    if (alone(c) || n == 0)
        return ERR_OK;
    return c->kind == DIST_NCCL ? dist_nccl_allreduce(c, buf, n, t, e)
                                : dist_tcp_allreduce(c, buf, n, t, e);
}

int dist_allgather(dist_comm_t *c, const void *in, void *out, size_t bytes, err_t *e)
{
    if (alone(c)) {
        if (bytes)
            memmove(out, in, bytes);
        return ERR_OK;
    }
    return c->kind == DIST_NCCL ? dist_nccl_allgather(c, in, out, bytes, e)
                                : dist_tcp_allgather(c, in, out, bytes, e);
}

int dist_broadcast(dist_comm_t *c, void *buf, size_t bytes, int root, err_t *e)
{
    if (alone(c) || bytes == 0)
        return ERR_OK;
    if (root < 0 || root >= c->size)
        return err_set(e, ERR_INPUT, "broadcast: root %d is not a rank of %d", root, c->size);
    return c->kind == DIST_NCCL ? dist_nccl_broadcast(c, buf, bytes, root, e)
                                : dist_tcp_broadcast(c, buf, bytes, root, e);
}

int dist_barrier(dist_comm_t *c, err_t *e)
{
    if (!c || c->size == 1)
        return ERR_OK;
    /* over the tcp star on both kinds: a barrier is about processes, not the device */
    unsigned char in = 1, out[DIST_MAX_RANKS];
    return dist_tcp_allgather(c, &in, out, 1, e);
}

int dist_agree(dist_comm_t *c, int status, err_t *e)
{
    if (!c || c->size == 1)
        return status;
    int32_t mine = status, all[DIST_MAX_RANKS];
    err_t e2 = ERR_INIT;
    if (dist_tcp_allgather(c, &mine, all, sizeof mine, &e2)) {
        if (!status)
            *e = e2;
        return status ? status : e2.code;
    }
    if (status)
        return status;
    for (int r = 0; r < c->size; r++)
        if (all[r])
            return err_set(e, ERR_FAIL, "rank %d of %d failed (status %d): nothing written",
                           r, c->size, (int)all[r]);
    return ERR_OK;
}

int dist_sum_f64(dist_comm_t *c, double *x, int n, err_t *e)
{
    int size = dist_size(c);
    if (size == 1 || n <= 0)
        return ERR_OK;
    double *all = err_malloc(e, (size_t)size * n * sizeof *all, "all-gather");
    if (!all)
        return e->code;
    int rc = dist_allgather(c, x, all, (size_t)n * sizeof *x, e);
    if (!rc)
        for (int i = 0; i < n; i++) {
            double s = all[i];
            for (int r = 1; r < size; r++)
                s += all[(size_t)r * n + i];
            x[i] = s;
        }
    free(all);
    return rc;
}
