/* launch: `--gpus N` on one host, as torchrun --standalone does it: N processes of the same
 * command, each told its rank through the environment (dist.h), watched until all end.
 *
 * The port: the launcher binds 127.0.0.1 port 0 (the kernel picks a free one) and hands the
 * listening socket to rank 0 (MXRLHF_DIST_LISTEN_FD), so nothing can take the port between
 * choosing it and rank 0 listening; the others connect to MASTER_PORT.
 *
 * Failure: the first rank that exits non-zero or dies by a signal stops the job: the others
 * get SIGTERM, then SIGKILL after the grace period; the error names that rank and how it
 * ended. A rank whose connection to a failed rank broke fails too (status 1) at about the
 * same moment; when several ended before the others were stopped, a death by signal, then
 * a status other than 1, is taken as the cause and the others are listed after it. Ranks
 * die with the launcher (PR_SET_PDEATHSIG), and SIGINT / SIGTERM / SIGHUP sent to the
 * launcher are passed on to every rank. Signals are taken synchronously (sigtimedwait):
 * no handler, no global state. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist.h"

extern char **environ;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *const OURS[] = {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=",
                                   "MASTER_ADDR=", "MASTER_PORT=", "MXRLHF_DIST_LISTEN_FD="};

static bool ours(const char *kv)
{
    for (size_t i = 0; i < sizeof OURS / sizeof *OURS; i++)
        if (!strncmp(kv, OURS[i], strlen(OURS[i])))
            return true;
    return false;
}

/* The environment of rank r: ours first, then the launcher's minus any of ours. Built
 * before fork: nothing is allocated in the child. */
static char **rank_env(int r, int n, const char *addr, int port, int lfd, err_t *e)
{
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = err_calloc(e, ne + 8, sizeof *env, "environment");
    if (!env)
        return NULL;
    char buf[7][300];
    snprintf(buf[0], sizeof buf[0], "RANK=%d", r);
    snprintf(buf[1], sizeof buf[1], "WORLD_SIZE=%d", n);
    snprintf(buf[2], sizeof buf[2], "LOCAL_RANK=%d", r);
    snprintf(buf[3], sizeof buf[3], "LOCAL_WORLD_SIZE=%d", n);
    snprintf(buf[4], sizeof buf[4], "MASTER_ADDR=%s", addr);
    snprintf(buf[5], sizeof buf[5], "MASTER_PORT=%d", port);
    snprintf(buf[6], sizeof buf[6], "MXRLHF_DIST_LISTEN_FD=%d", lfd);
    size_t k = 0;
    for (int i = 0; i < (r == 0 ? 7 : 6); i++)
        if (!(env[k++] = strdup(buf[i])))
            goto nomem;
    for (size_t i = 0; i < ne; i++)
        if (!ours(environ[i]))
            env[k++] = environ[i]; /* borrowed */
    return env;
nomem:
    for (size_t i = 0; i < k; i++)
        free(env[i]);
    free(env);
    err_set(e, ERR_NOMEM, "out of memory");
    return NULL;
}

/* frees what rank_env allocated: the array and its first (r == 0 ? 7 : 6) strings */
static void env_free(char **env, int r)
{
    if (!env)
        return;
    for (int i = 0; i < (r == 0 ? 7 : 6); i++)
        free(env[i]);
    free(env);
}

static int bind_port(const char *addr, int *fd_out, int *port, err_t *e)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_errno(e, ERR_FAIL, "launcher: socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    (void)addr; /* one host: rank 0 is reached on the loopback address given to the ranks */
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, DIST_MAX_RANKS) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        err_errno(e, ERR_FAIL, "launcher: binding a port on 127.0.0.1");
        close(fd);
        return e->code;
    }
    *fd_out = fd;
    *port = ntohs(a.sin_port);
    return ERR_OK;
}

typedef struct rank_state {
    pid_t pid;
    bool running;
    int status;         /* wait status once ended */
    bool failed_first;  /* ended badly before the launcher stopped anyone */
} rank_state_t;

static bool bad(int st) { return !(WIFEXITED(st) && WEXITSTATUS(st) == 0); }

/* how a rank ended, for messages */
static void ended(int st, char *buf, size_t cap)
{
    if (WIFSIGNALED(st))
        snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(st));
}

/* the cause among the ranks that failed before the stop: a signal, then a status other than
 * 1 (a broken connection's consequence exits 1), then the lowest rank */
static int cause(const rank_state_t *rs, int n)
{
    int best = -1, score = -1;
    for (int r = 0; r < n; r++) {
        if (!rs[r].failed_first)
            continue;
        int s = WIFSIGNALED(rs[r].status) ? 2 : WEXITSTATUS(rs[r].status) != 1 ? 1 : 0;
        if (s > score) {
            best = r;
            score = s;
        }
    }
    return best;
}

static void signal_all(rank_state_t *rs, int n, int sig)
{
    for (int r = 0; r < n; r++)
        if (rs[r].running)
            kill(rs[r].pid, sig);
}

int dist_launch(const dist_launch_t *l, err_t *e)
{
    const int n = l->nranks;
    const char *addr = l->addr ? l->addr : "127.0.0.1";
    const double grace = l->grace_s > 0 ? l->grace_s : 10;
    if (n < 1 || n > DIST_MAX_RANKS)
        return err_set(e, ERR_INPUT, "--gpus %d: expected 1 to %d", n, DIST_MAX_RANKS);
    int lfd = -1, port = 0;
    if (bind_port(addr, &lfd, &port, e))
        return e->code;
    char **envs[DIST_MAX_RANKS] = {0};
    rank_state_t rs[DIST_MAX_RANKS];
    memset(rs, 0, sizeof rs);
    int rc = ERR_OK;
    for (int r = 0; r < n && !rc; r++)
        if (!(envs[r] = rank_env(r, n, addr, port, lfd, e)))
            rc = e->code;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    pid_t parent = getpid();
    int started = 0;
    for (int r = 0; r < n && !rc; r++) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            rc = err_errno(e, ERR_FAIL, "launcher: starting rank %d", r);
            break;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(ERR_FAIL);
            sigprocmask(SIG_SETMASK, &old, NULL);
            if (r == 0)
                fcntl(lfd, F_SETFD, 0); /* rank 0 keeps the listening socket across exec */
            if (r > 0 && l->quiet_stdout) {
                int dn = open("/dev/null", O_WRONLY);
                if (dn >= 0)
                    dup2(dn, STDOUT_FILENO);
            }
            execve(l->exe, l->argv, envs[r]);
            fprintf(stderr, "mxrlhf: rank %d: cannot run %s: %s\n", r, l->exe, strerror(errno));
            _exit(127);
        }
        rs[r].pid = pid;
        rs[r].running = true;
        started++;
    }
    close(lfd);
    if (rc) /* a rank could not start: stop those that did */
        signal_all(rs, n, SIGTERM);

    int alive = started;
    bool stopping = rc != ERR_OK, interrupted = false;
    double kill_at = stopping ? now_s() + grace : 0;
    while (alive > 0) {
        siginfo_t si;
        struct timespec ts = {0, 200 * 1000 * 1000};
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            signal_all(rs, n, sig);
            if (!stopping) {
                stopping = interrupted = true;
                kill_at = now_s() + grace;
            }
        }
        pid_t pid;
        int st;
        bool newly_failed = false;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
            for (int r = 0; r < n; r++)
                if (rs[r].running && rs[r].pid == pid) {
                    rs[r].running = false;
                    rs[r].status = st;
                    alive--;
                    if (bad(st) && !stopping) {
                        rs[r].failed_first = true;
                        newly_failed = true;
                    }
                }
        if (newly_failed) {
            stopping = true;
            kill_at = now_s() + grace;
            signal_all(rs, n, SIGTERM);
        }
        if (stopping && alive > 0 && now_s() > kill_at) {
            signal_all(rs, n, SIGKILL);
            kill_at = now_s() + 3600;
        }
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    for (int r = 0; r < n; r++)
        env_free(envs[r], r);
    if (rc)
        return rc;
    if (interrupted)
        return err_set(e, ERR_INTERRUPTED, "interrupted: the %d ranks were stopped", n);
    int c = cause(rs, n);
    if (c < 0)
        return ERR_OK;
    char how[96], also[600] = "";
    ended(rs[c].status, how, sizeof how);
    size_t k = 0;
    for (int r = 0; r < n; r++)
        if (r != c && rs[r].failed_first && k < sizeof also - 100) {
            char h[96];
            ended(rs[r].status, h, sizeof h);
            k += (size_t)snprintf(also + k, sizeof also - k, "%s rank %d %s", k ? ";" : " (then",
                                  r, h);
        }
    if (k)
        snprintf(also + k, sizeof also - k, ")");
    int code = WIFEXITED(rs[c].status) && WEXITSTATUS(rs[c].status) <= ERR_UNAVAILABLE
                   ? WEXITSTATUS(rs[c].status) : ERR_FAIL;
    return err_set(e, code, "rank %d of %d %s%s; the other ranks were stopped", c, n, how, also);
}
