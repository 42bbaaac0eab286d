/* dist_internal: what the communicator's files share (dist.h is the interface).
 *
 * comm.c       the interface: dispatch by kind, the self communicator, agree, sums
 * comm_tcp.c   the tcp star: connections, framing, gather / broadcast / reduce at rank 0
 * comm_nccl.c  NCCL and the CUDA driver by dlopen, host buffers staged through the device
 */
#ifndef MXRLHF_DIST_INTERNAL_H
#define MXRLHF_DIST_INTERNAL_H

#include "dist/dist.h"

typedef struct dist_nccl dist_nccl_t;

struct dist_comm {
    dist_kind_t kind;
    int rank, size;
    double timeout_s;
    /* tcp (also nccl's bootstrap and barrier): rank 0 holds fd[r] for r = 1 .. size-1,
     * another rank fd[0] (its connection to rank 0); -1 elsewhere */
    int fd[DIST_MAX_RANKS];
    dist_nccl_t *nccl;
};

/* element size of a dtype */
static inline size_t dist_dtype_size(dist_dtype_t t) { return t == DIST_F64 ? 8 : 4; }

/* ---- comm_tcp.c ---- */
int dist_tcp_connect(dist_comm_t *c, const dist_env_t *env, err_t *e);
void dist_tcp_close(dist_comm_t *c);
int dist_tcp_allreduce(dist_comm_t *c, void *buf, size_t n, dist_dtype_t t, err_t *e);
int dist_tcp_allgather(dist_comm_t *c, const void *in, void *out, size_t bytes, err_t *e);
int dist_tcp_broadcast(dist_comm_t *c, void *buf, size_t bytes, int root, err_t *e);

/* ---- comm_nccl.c ---- */
void dist_nccl_free(dist_nccl_t *n);
int dist_nccl_allreduce(dist_comm_t *c, void *buf, size_t n, dist_dtype_t t, err_t *e);
int dist_nccl_allgather(dist_comm_t *c, const void *in, void *out, size_t bytes, err_t *e);
int dist_nccl_broadcast(dist_comm_t *c, void *buf, size_t bytes, int root, err_t *e);

#endif
