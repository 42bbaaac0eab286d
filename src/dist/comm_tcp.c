/* comm_tcp: the CPU communicator, a star of TCP connections to rank 0 (one host or several).
 *
 * Rank 0 listens (on the socket the launcher bound, or on MASTER_PORT); every other rank
 * connects to MASTER_ADDR:MASTER_PORT, retrying until the timeout, and says hello (magic,
 * rank, size); rank 0 answers once all have. A collective is fixed-size raw bytes, as
 * every rank knows the sizes:
 *   gather     rank r writes, rank 0 reads rank 1, 2, ... in order
 *   broadcast  rank 0 writes to rank 1, 2, ... in order (another root first sends to 0)
 *   all-reduce in chunks: rank 0 reads each rank's chunk in rank order and adds it to its
 *              own (0 + 1 + 2 ..., in the buffer's type), then broadcasts the sum
 * A read that meets the end of the stream is a rank that stopped: ERR_FAIL naming it. Every
 * wait is bounded by the timeout (poll). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist_internal.h"

#define HELLO_MAGIC 0x5344584du /* "MXDS" */
#define CHUNK_BYTES ((size_t)1 << 20)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The rank at the other end of fd[i]: rank 0 holds fd[r] for rank r, others fd[0]. */
static int peer_of(const dist_comm_t *c, int i) { return c->rank == 0 ? i : 0; }

static int wait_fd(dist_comm_t *c, int i, short ev, double deadline, const char *what, err_t *e)
{
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0)
            return err_set(e, ERR_FAIL, "rank %d: no %s from rank %d within %.0f s "
                           "(MXRLHF_DIST_TIMEOUT_S)", c->rank, what, peer_of(c, i),
                           c->timeout_s);
        struct pollfd p = {c->fd[i], ev, 0};
        int ms = left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
        int r = poll(&p, 1, ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return err_errno(e, ERR_FAIL, "rank %d: poll", c->rank);
        if (r > 0)
            return ERR_OK;
    }
}

static int send_all(dist_comm_t *c, int i, const void *buf, size_t n, err_t *e)
{
    const char *p = buf;
    double deadline = now_s() + c->timeout_s;
    while (n) {
        if (wait_fd(c, i, POLLOUT, deadline, "room to send", e))
            return e->code;
        ssize_t w = send(c->fd[i], p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0)
            return err_errno(e, ERR_FAIL, "rank %d: sending to rank %d (it stopped or failed?)",
                             c->rank, peer_of(c, i));
        p += w;
        n -= (size_t)w;
    }
    return ERR_OK;
}

static int recv_all(dist_comm_t *c, int i, void *buf, size_t n, err_t *e)
{
    char *p = buf;
    double deadline = now_s() + c->timeout_s;
    while (n) {
        if (wait_fd(c, i, POLLIN, deadline, "data", e))
            return e->code;
        ssize_t r = recv(c->fd[i], p, n, 0);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            return err_errno(e, ERR_FAIL, "rank %d: receiving from rank %d", c->rank,
                             peer_of(c, i));
        if (r == 0)
            return err_set(e, ERR_FAIL, "rank %d: rank %d closed its connection (it stopped or "
                           "failed)", c->rank, peer_of(c, i));
        p += r;
        n -= (size_t)r;
    }
    return ERR_OK;
}

/* ---- connecting -------------------------------------------------------------------------------- */

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int listen_on(const dist_env_t *env, int *out, err_t *e)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0)
        return err_errno(e, ERR_FAIL, "rank 0: socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)env->port),
                            .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, DIST_MAX_RANKS)) {
        err_errno(e, ERR_FAIL, "rank 0: listening on port %d (MASTER_PORT)", env->port);
        close(fd);
        return e->code;
    }
    *out = fd;
    return ERR_OK;
}

/* rank 0: accepts size - 1 ranks, each placed by the rank its hello names */
static int accept_ranks(dist_comm_t *c, const dist_env_t *env, err_t *e)
{
    int lfd = env->listen_fd;
    bool own = lfd < 0;
    if (own && listen_on(env, &lfd, e))
        return e->code;
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    double deadline = now_s() + c->timeout_s;
    int rc = ERR_OK;
    for (int got = 1; got < c->size && !rc;) {
        double left = deadline - now_s();
        struct pollfd p = {lfd, POLLIN, 0};
        int r = left > 0 ? poll(&p, 1, (int)(left * 1000) + 1) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? err_errno(e, ERR_FAIL, "rank 0: poll")
                       : err_set(e, ERR_FAIL, "rank 0: %d of %d ranks connected within %.0f s "
                                 "(MXRLHF_DIST_TIMEOUT_S)", got, c->size, c->timeout_s);
            break;
        }
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
                continue;
            rc = err_errno(e, ERR_FAIL, "rank 0: accept");
            break;
        }
        tune(fd);
        uint32_t hello[3];
        c->fd[0] = fd; /* rank 0's own slot, unused: borrowed for the hello */
        rc = recv_all(c, 0, hello, sizeof hello, e);
        c->fd[0] = -1;
        if (rc) {
            err_prefix(e, "rank 0: waiting for a connecting rank's hello");
            close(fd);
            break;
        }
        int rank = (int)hello[1], size = (int)hello[2];
        if (hello[0] != HELLO_MAGIC || size != c->size || rank < 1 || rank >= c->size ||
            c->fd[rank] >= 0) {
            close(fd);
            rc = err_set(e, ERR_FAIL, "rank 0: a connection said rank %d of %d (expected a new "
                         "rank of %d): another job on MASTER_PORT %d?", rank, size, c->size,
                         env->port);
            break;
        }
        c->fd[rank] = fd;
        got++;
    }
    close(lfd); /* the launcher's socket too: no later rank may connect */
    uint32_t ack = HELLO_MAGIC;
    for (int r = 1; r < c->size && !rc; r++)
        rc = send_all(c, r, &ack, sizeof ack, e);
    return rc;
}

/* another rank: connects to rank 0, retrying until the timeout */
static int connect_rank0(dist_comm_t *c, const dist_env_t *env, err_t *e)
{
    char port[16];
    snprintf(port, sizeof port, "%d", env->port);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(env->addr, port, &hints, &ai);
    if (g)
        return err_set(e, ERR_INPUT, "rank %d: MASTER_ADDR %s: %s", c->rank, env->addr,
                       gai_strerror(g));
    double deadline = now_s() + c->timeout_s;
    int fd = -1;
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            freeaddrinfo(ai);
            return err_errno(e, ERR_FAIL, "rank %d: socket", c->rank);
        }
        if (!connect(fd, ai->ai_addr, ai->ai_addrlen))
            break;
        close(fd);
        fd = -1;
        if (now_s() > deadline) {
            freeaddrinfo(ai);
            return err_set(e, ERR_FAIL, "rank %d: cannot reach rank 0 at %s:%d within %.0f s",
                           c->rank, env->addr, env->port, c->timeout_s);
        }
        nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    }
    freeaddrinfo(ai);
    tune(fd);
    c->fd[0] = fd;
    uint32_t hello[3] = {HELLO_MAGIC, (uint32_t)c->rank, (uint32_t)c->size}, ack = 0;
    if (send_all(c, 0, hello, sizeof hello, e) || recv_all(c, 0, &ack, sizeof ack, e))
        return e->code;
    if (ack != HELLO_MAGIC)
        return err_set(e, ERR_FAIL, "rank %d: rank 0 at %s:%d answered something else",
                       c->rank, env->addr, env->port);
    return ERR_OK;
}

int dist_tcp_connect(dist_comm_t *c, const dist_env_t *env, err_t *e)
{
    return c->rank == 0 ? accept_ranks(c, env, e) : connect_rank0(c, env, e);
}

void dist_tcp_close(dist_comm_t *c)
{
    for (int i = 0; i < DIST_MAX_RANKS; i++)
        if (c->fd[i] >= 0) {
            close(c->fd[i]);
            c->fd[i] = -1;
        }
}

/* ---- collectives ------------------------------------------------------------------------------- */

/* rank 0's buf to every rank */
static int bcast0(dist_comm_t *c, void *buf, size_t bytes, err_t *e)
{
    if (c->rank != 0)
        return recv_all(c, 0, buf, bytes, e);
    for (int r = 1; r < c->size; r++)
        if (send_all(c, r, buf, bytes, e))
            return e->code;
    return ERR_OK;
}

int dist_tcp_allgather(dist_comm_t *c, const void *in, void *out, size_t bytes, err_t *e)
{
    char *o = out;
    if (c->rank != 0) {
        if (send_all(c, 0, in, bytes, e))
            return e->code;
    } else {
        memmove(o, in, bytes);
        for (int r = 1; r < c->size; r++)
            if (recv_all(c, r, o + (size_t)r * bytes, bytes, e))
                return e->code;
    }
    return bcast0(c, out, (size_t)c->size * bytes, e);
}

int dist_tcp_broadcast(dist_comm_t *c, void *buf, size_t bytes, int root, err_t *e)
{
    if (root != 0) {
        if (c->rank == root && send_all(c, 0, buf, bytes, e))
            return e->code;
        if (c->rank == 0 && recv_all(c, root, buf, bytes, e))
            return e->code;
    }
    return bcast0(c, buf, bytes, e);
}

int dist_tcp_allreduce(dist_comm_t *c, void *buf, size_t n, dist_dtype_t t, err_t *e)
{
    const size_t es = dist_dtype_size(t), per = CHUNK_BYTES / es;
    char *tmp = NULL;
    if (c->rank == 0 && !(tmp = err_malloc(e, CHUNK_BYTES, "all-reduce chunk")))
        return e->code;
    int rc = ERR_OK;
    for (size_t i0 = 0; i0 < n && !rc; i0 += per) {
        size_t m = n - i0 < per ? n - i0 : per;
        char *p = (char *)buf + i0 * es;
        if (c->rank != 0) {
            rc = send_all(c, 0, p, m * es, e);
        } else {
            for (int r = 1; r < c->size && !rc; r++) {
                if ((rc = recv_all(c, r, tmp, m * es, e)))
                    break;
                if (t == DIST_F64) {
                    double *a = (double *)(void *)p;
                    const double *b = (const double *)(void *)tmp;
                    for (size_t k = 0; k < m; k++)
                        a[k] += b[k];
                } else {
                    float *a = (float *)(void *)p;
                    const float *b = (const float *)(void *)tmp;
                    for (size_t k = 0; k < m; k++)
                        a[k] += b[k];
                }
            }
        }
        if (!rc)
            rc = bcast0(c, p, m * es, e);
    }
    free(tmp);
    return rc;
}
