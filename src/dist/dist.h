/* dist: data parallelism over several processes (ranks), one per GPU, as torchrun + NCCL
 * arrange it (docs/distributed.md).
 *
 *   communicator   all-reduce (sum) of float / double buffers, all-gather, broadcast,
 *                  barrier, rank and size. Three kinds behind one interface:
 *                    self  one rank, every collective a copy (or nothing);
 *                    tcp   ranks as processes on one or several hosts, a star of TCP
 *                          connections to rank 0 (the CPU communicator `make test` uses);
 *                    nccl  NCCL (libnccl.so.2 loaded with dlopen, its functions resolved
 *                          with dlsym), bootstrapped by rank 0's ncclGetUniqueId sent to
 *                          the others over the tcp star; host buffers are staged through
 *                          device memory (CUDA driver API, libcuda.so.1, also by dlopen).
 *   launcher       `--gpus N` starts N rank processes of mxrlhf itself and watches them.
 *   splitting      contiguous, deterministic shares of a batch or a list of cells.
 *   sums           dist_sum_f64: partial sums of every rank added in rank order, from
 *                  which rlhf/ppo_math takes its global moments (whitening, the KL
 *                  controller's input).
 *
 * Determinism. tcp: rank 0 gathers every rank's buffer and adds them in rank order
 * (0 + 1 + ... in the buffer's own type), then sends the sum back: every rank gets the same
 * bits, run after run. self: the buffer unchanged. nccl all-reduce: NCCL's order (ring or
 * tree, fixed for a given NCCL version, topology, rank count and size; every rank gets the
 * same bits); nccl all-gather is exact, so sums made from it (dist_sum_f64) are in rank
 * order on every kind.
 *
 * Environment of a rank (the names torchrun uses, so a cluster scheduler can start the
 * ranks itself, one `mxrlhf ... --gpus N` per rank with these set):
 *   RANK              this process's rank, 0 .. WORLD_SIZE-1
 *   WORLD_SIZE        number of ranks
 *   LOCAL_RANK        rank on this host: its GPU (cuda:LOCAL_RANK)
 *   LOCAL_WORLD_SIZE  ranks on this host (optional)
 *   MASTER_ADDR       rank 0's host (IPv4 address or name)
 *   MASTER_PORT       the TCP port rank 0 listens on
 *   MXRLHF_DIST_TIMEOUT_S  seconds a rank waits for the others (connect, each collective;
 *                     default 600)
 *   MXRLHF_DIST_COMM  tcp or nccl: the communicator (default: nccl on a cuda device, tcp on
 *                     the cpu; nccl named with one rank runs NCCL's one-rank path, a check
 *                     of the library, the driver and the staging on one GPU)
 *   MXRLHF_DIST_LISTEN_FD  (set by the launcher only) rank 0's already-bound listening
 *                     socket, so no other process can take the port between choosing it
 *                     and listening
 */
#ifndef MXRLHF_DIST_DIST_H
#define MXRLHF_DIST_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "util/opts.h"

/* ---- options (the "dist" section) ------------------------------------------------------------ */

#define DIST_MAX_RANKS 64

typedef struct dist_opts {
    int gpus;   /* ranks, one per GPU (with --device cpu: CPU processes) */
} dist_opts_t;

extern const opt_table_t dist_opts_table;
void dist_opts_default(dist_opts_t *o);

/* ---- the communicator ------------------------------------------------------------------------ */

typedef enum dist_dtype { DIST_F32, DIST_F64 } dist_dtype_t;
typedef enum dist_kind { DIST_SELF, DIST_TCP, DIST_NCCL } dist_kind_t;

typedef struct dist_comm dist_comm_t;

/* Where this process stands, from the environment above. */
typedef struct dist_env {
    int rank, size, local_rank, local_size;
    char addr[256];
    int port;
    int listen_fd;      /* -1 unless the launcher passed one */
    double timeout_s;
    bool set;           /* RANK and WORLD_SIZE were given */
} dist_env_t;

/* Reads the environment; without RANK and WORLD_SIZE: rank 0 of 1 (set false). Malformed
 * or inconsistent values are ERR_INPUT naming the variable. */
int dist_env_read(dist_env_t *env, err_t *e);

/* A communicator of one rank. */
int dist_comm_self(dist_comm_t **out, err_t *e);
/* The tcp star for env (size 1: self). Blocks until every rank has connected. */
int dist_comm_tcp(const dist_env_t *env, dist_comm_t **out, err_t *e);
/* NCCL on CUDA device `device` (the rank's GPU), bootstrapped over the tcp star (kept for
 * the bootstrap and the barrier; one rank: none, and NCCL's one-rank communicator). Sets NCCL_NVLS_ENABLE=0 unless it is set. ERR_UNAVAILABLE
 * naming the library when libnccl.so.2 or libcuda.so.1 cannot be loaded. */
int dist_comm_nccl(const dist_env_t *env, int device, dist_comm_t **out, err_t *e);
/* The communicator a command uses: self for one rank (unless MXRLHF_DIST_COMM is nccl);
 * else MXRLHF_DIST_COMM, or nccl when cuda is true, tcp otherwise. */
int dist_comm_open(const dist_env_t *env, bool cuda, int device, dist_comm_t **out, err_t *e);
void dist_comm_free(dist_comm_t *c);

int dist_rank(const dist_comm_t *c);
int dist_size(const dist_comm_t *c);
dist_kind_t dist_kind(const dist_comm_t *c);
const char *dist_kind_name(dist_kind_t k); /* "self", "tcp", "nccl" */

/* Collectives: every rank calls them in the same order with the same sizes. A rank that
 * stops or fails shows up as ERR_FAIL naming it ("rank 1 closed its connection"). */

/* buf (n values) = the sum over ranks of every rank's buf, in place; every rank gets the
 * same bits. */
int dist_allreduce(dist_comm_t *c, void *buf, size_t n, dist_dtype_t t, err_t *e);
/* out (size x bytes) = every rank's `in` (bytes), in rank order. */
int dist_allgather(dist_comm_t *c, const void *in, void *out, size_t bytes, err_t *e);
/* root's buf (bytes) copied to every rank's. */
int dist_broadcast(dist_comm_t *c, void *buf, size_t bytes, int root, err_t *e);
int dist_barrier(dist_comm_t *c, err_t *e);

/* Whether every rank succeeded: each passes its own status; every rank gets ERR_OK only when
 * all were ERR_OK, else ERR_FAIL naming the first failed rank (a rank's own failure keeps its
 * own error). Call it before rank 0 writes outputs, so a failure anywhere writes nothing. */
int dist_agree(dist_comm_t *c, int status, err_t *e);

/* The sum over ranks of x[0..n) (doubles), added in rank order from an all-gather: the same
 * bits on every kind of communicator and every rank. */
int dist_sum_f64(dist_comm_t *c, double *x, int n, err_t *e);

/* ---- splitting ---------------------------------------------------------------------------------- */

/* Rank r's share of n items: [*off, *off + *cnt), contiguous, in rank order; the first
 * n % size ranks get one more. Shares cover [0, n) exactly once. */
void dist_share(size_t n, int size, int rank, size_t *off, size_t *cnt);

/* The even share of n per rank, or ERR_INPUT naming `what` when size does not divide n
 * (PPO's batch: every rank must run the same number of minibatches). */
int dist_share_even(size_t n, int size, const char *what, size_t *per, err_t *e);

/* ---- the launcher ----------------------------------------------------------------------------- */

typedef struct dist_launch {
    int nranks;
    const char *exe;          /* the program each rank runs (e.g. /proc/self/exe) */
    char *const *argv;        /* its arguments, argv[0] first */
    const char *addr;         /* MASTER_ADDR given to the ranks (default 127.0.0.1) */
    double grace_s;           /* after a failure: SIGTERM, then SIGKILL after this (default 10) */
    bool quiet_stdout;        /* ranks > 0 write stdout to /dev/null (rank 0's is the command's) */
} dist_launch_t;

/* Starts nranks processes of exe with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
 * MASTER_ADDR, MASTER_PORT (a port bound here, passed to rank 0 as MXRLHF_DIST_LISTEN_FD)
 * and waits. When a rank exits non-zero or is killed by a signal, the others get SIGTERM
 * (then SIGKILL after grace_s) and the call fails naming the rank and how it ended: the
 * code is the rank's exit status when it is 1, 2 or 3 (ERR_FAIL, ERR_INPUT, ERR_UNAVAILABLE),
 * ERR_FAIL otherwise. SIGINT / SIGTERM sent to the launcher go to every rank. */
int dist_launch(const dist_launch_t *l, err_t *e);

#endif
