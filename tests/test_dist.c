/* Tests for src/dist: splitting, the tcp communicator across real processes (fork), the
 * global statistics of ppo_math over ranks against one process on the whole batch, and the
 * launcher's handling of a rank that fails or dies (with /bin/sh ranks and with mxrlhf's
 * own `comm` command: no output is written when a rank fails). */
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist.h"
#include "rlhf/ppo_math.h"
#include "support/testutil.h"
#include "util/rng.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- splitting --------------------------------------------------------------------------- */

static void shares_cover_every_item_once_in_rank_order(void **state)
{
    (void)state;
    for (size_t n = 0; n <= 40; n++)
        for (int size = 1; size <= 9; size++) {
            size_t next = 0, lo = (size_t)-1, hi = 0;
            for (int r = 0; r < size; r++) {
                size_t off, cnt;
                dist_share(n, size, r, &off, &cnt);
                if (off != next)
                    fail_msg("n %zu size %d rank %d: offset %zu, expected %zu", n, size, r, off,
                             next);
                next = off + cnt;
                lo = cnt < lo ? cnt : lo;
                hi = cnt > hi ? cnt : hi;
            }
            assert_int_equal(next, n);
            assert_true(hi - lo <= 1);
        }
    size_t off, cnt;
    dist_share(10, 4, 1, &off, &cnt); /* 3 3 2 2 */
    assert_int_equal(off, 3);
    assert_int_equal(cnt, 3);
    dist_share(10, 4, 3, &off, &cnt);
    assert_int_equal(off, 8);
    assert_int_equal(cnt, 2);
}

static void an_uneven_batch_is_refused_naming_the_sizes(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    size_t per = 0;
    assert_int_equal(dist_share_even(16, 4, "batch_size", &per, &e), ERR_OK);
    assert_int_equal(per, 4);
    assert_int_equal(dist_share_even(10, 4, "batch_size", &per, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "batch_size 10 does not split evenly over 4 ranks"));
}

/* ---- ranks as forked processes ----------------------------------------------------------- */

typedef int (*rank_fn)(dist_comm_t *c, void *arg);

/* Runs fn on `n` forked ranks joined by the tcp communicator (rank 0 gets a bound socket as
 * the launcher gives it); fills st[r] with each rank's exit status (fn's return, or 100 +
 * the connect failure). */
static void run_ranks(int n, rank_fn fn, void *arg, int *st)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &len), 0);
    pid_t pid[DIST_MAX_RANKS];
    fflush(NULL);
    for (int r = 0; r < n; r++) {
        pid[r] = fork();
        assert_true(pid[r] >= 0);
        if (pid[r] == 0) {
            dist_env_t env = {.rank = r, .size = n, .local_rank = r, .local_size = n,
                              .addr = "127.0.0.1", .port = ntohs(a.sin_port),
                              .listen_fd = r == 0 ? lfd : -1, .timeout_s = 20, .set = true};
            if (r)
                close(lfd);
            dist_comm_t *c = NULL;
            err_t e = ERR_INIT;
            if (dist_comm_tcp(&env, &c, &e)) {
                fprintf(stderr, "rank %d: %s\n", r, e.msg);
                _exit(100 + e.code);
            }
            int rc = fn(c, arg);
            dist_comm_free(c);
            _exit(rc);
        }
    }
    close(lfd);
    for (int r = 0; r < n; r++) {
        int s;
        assert_int_equal(waitpid(pid[r], &s, 0), pid[r]);
        st[r] = WIFEXITED(s) ? WEXITSTATUS(s) : 200 + WTERMSIG(s);
    }
}

#define RANK_CHECK(cond, ...)                                                                \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "rank %d: ", dist_rank(c));                                     \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fprintf(stderr, "\n");                                                           \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)

/* values of rank r at i: not exactly representable sums, so the order of addition shows */
static float fval(int r, size_t i) { return rng_uniform(7, (uint64_t)r, i) * 3.0f - 1.0f; }

static int collectives(dist_comm_t *c, void *arg)
{
    (void)arg;
    const int rank = dist_rank(c), size = dist_size(c);
    err_t e = ERR_INIT;
    /* float all-reduce over more than one 1 MiB chunk: rank-order sums, bit for bit */
    const size_t n = 300000;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = fval(rank, i);
    RANK_CHECK(!dist_allreduce(c, x, n, DIST_F32, &e), "allreduce: %s", e.msg);
    for (size_t i = 0; i < n; i++) {
        float want = fval(0, i);
        for (int r = 1; r < size; r++)
            want += fval(r, i);
        RANK_CHECK(test_f32_bits(x[i]) == test_f32_bits(want), "f32 [%zu] %.9g != %.9g", i,
                   x[i], want);
    }
    free(x);
    double d[3] = {rank + 0.1, -rank * 1e-17, 1e308}; /* the last overflows */
    RANK_CHECK(!dist_allreduce(c, d, 3, DIST_F64, &e), "allreduce f64: %s", e.msg);
    double w0 = 0.1;
    for (int r = 1; r < size; r++)
        w0 += r + 0.1;
    RANK_CHECK(d[0] == w0 && isinf(d[2]), "f64 %.17g (want %.17g), %g (want inf)", d[0], w0, d[2]);
    /* all-gather in rank order */
    int32_t mine = 1000 + rank, all[DIST_MAX_RANKS];
    RANK_CHECK(!dist_allgather(c, &mine, all, sizeof mine, &e), "allgather: %s", e.msg);
    for (int r = 0; r < size; r++)
        RANK_CHECK(all[r] == 1000 + r, "allgather [%d] = %d", r, all[r]);
    /* broadcast from the last rank */
    char msg[32] = "";
    if (rank == size - 1)
        snprintf(msg, sizeof msg, "from rank %d", rank);
    RANK_CHECK(!dist_broadcast(c, msg, sizeof msg, size - 1, &e), "broadcast: %s", e.msg);
    char want[32];
    snprintf(want, sizeof want, "from rank %d", size - 1);
    RANK_CHECK(!strcmp(msg, want), "broadcast got \"%s\"", msg);
    RANK_CHECK(!dist_barrier(c, &e), "barrier: %s", e.msg);
    /* agreement: rank 1 fails, everyone learns it */
    int rc = dist_agree(c, rank == 1 ? ERR_INPUT : ERR_OK, &e);
    RANK_CHECK(rc != ERR_OK, "agree: a failed rank went unnoticed");
    if (rank != 1)
        RANK_CHECK(strstr(e.msg, "rank 1 of") != NULL, "agree: \"%s\"", e.msg);
    err_clear(&e);
    RANK_CHECK(dist_agree(c, ERR_OK, &e) == ERR_OK, "agree when all ok: %s", e.msg);
    return 0;
}

static void tcp_collectives_give_rank_order_sums_on_every_rank(void **state)
{
    (void)state;
    int st[3];
    run_ranks(3, collectives, NULL, st);
    for (int r = 0; r < 3; r++)
        if (st[r])
            fail_msg("rank %d exited with %d (its stderr says why)", r, st[r]);
}

static int die_or_reduce(dist_comm_t *c, void *arg)
{
    (void)arg;
    if (dist_rank(c) == 1)
        _exit(3); /* before the collective */
    float x[4] = {1, 2, 3, 4};
    err_t e = ERR_INIT;
    int rc = dist_allreduce(c, x, 4, DIST_F32, &e);
    if (rc == ERR_FAIL && strstr(e.msg, "rank 1 closed its connection"))
        return 0;
    fprintf(stderr, "rank %d: expected a failure naming rank 1, got %d \"%s\"\n", dist_rank(c),
            rc, e.msg);
    return 1;
}

static void a_rank_that_exits_fails_the_collective_naming_it(void **state)
{
    (void)state;
    int st[2];
    run_ranks(2, die_or_reduce, NULL, st);
    assert_int_equal(st[1], 3);
    assert_int_equal(st[0], 0);
}

/* ---- global statistics --------------------------------------------------------------------- */

#define SB 10 /* rows of the global batch */
#define ST 13 /* positions */

typedef struct stats_case {
    float values[SB * ST], rewards[SB * ST], mask[SB * ST];
    double kl[SB];
} stats_case_t;

static void stats_case_make(stats_case_t *s)
{
    for (int b = 0; b < SB; b++) {
        int p0 = 2 + b % 3, len = 3 + (b * 5) % 8; /* response positions [p0, p0 + len) */
        for (int t = 0; t < ST; t++) {
            size_t i = (size_t)b * ST + t;
            s->mask[i] = t >= p0 && t < p0 + len ? 1.0f : 0.0f;
            s->values[i] = rng_uniform(3, 1, i) * 2 - 1;
            s->rewards[i] = (rng_uniform(3, 2, i) - 0.5f) * 0.1f + (t == p0 + len - 1 ? 1.5f : 0);
        }
        s->kl[b] = rng_uniform(3, 3, (uint64_t)b) * 0.2;
    }
}

/* Where each rank writes its rows' advantages and returns for the parent to compare (a
 * shared file: the ranks are processes). */
typedef struct stats_arg {
    const char *path;
    bool whiten_rewards;
} stats_arg_t;

static int stats_rank(dist_comm_t *c, void *arg)
{
    stats_arg_t *a = arg;
    stats_case_t s;
    stats_case_make(&s);
    size_t off, cnt;
    dist_share(SB, dist_size(c), dist_rank(c), &off, &cnt); /* uneven: 4 3 3 */
    float *v = s.values + off * ST, *rw = s.rewards + off * ST, *m = s.mask + off * ST;
    float adv[SB * ST], ret[SB * ST];
    err_t e = ERR_INIT;
    RANK_CHECK(!ppo_advantages_all(c, (int)cnt, ST, v, rw, m, 0.99, 0.95, a->whiten_rewards,
                                   adv, ret, &e), "advantages: %s", e.msg);
    double mean, count;
    RANK_CHECK(!ppo_mean_all(c, s.kl + off, cnt, &mean, &count, &e), "mean: %s", e.msg);
    int fd = open(a->path, O_WRONLY);
    RANK_CHECK(fd >= 0, "open %s", a->path);
    size_t bytes = cnt * ST * sizeof(float);
    RANK_CHECK(pwrite(fd, adv, bytes, (off_t)(off * ST * sizeof(float))) == (ssize_t)bytes &&
                   pwrite(fd, ret, bytes, (off_t)((SB + off) * ST * sizeof(float))) ==
                       (ssize_t)bytes,
               "pwrite");
    if (dist_rank(c) == 0) {
        double mc[2] = {mean, count};
        RANK_CHECK(pwrite(fd, mc, sizeof mc, (off_t)(2 * SB * ST * sizeof(float))) ==
                       (ssize_t)sizeof mc, "pwrite");
    }
    close(fd);
    return 0;
}

static void global_whitening_over_3_ranks_matches_one_rank_on_the_whole_batch(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), path[512];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    for (int wr = 0; wr <= 1; wr++) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 2 * SB * ST * sizeof(float) + 2 * sizeof(double)), 0);
        close(fd);
        stats_arg_t a = {path, wr == 1};
        int st[3];
        run_ranks(3, stats_rank, &a, st);
        for (int r = 0; r < 3; r++)
            assert_int_equal(st[r], 0);
        /* one process, the whole batch */
        stats_case_t s;
        stats_case_make(&s);
        float adv[SB * ST], ret[SB * ST];
        ppo_advantages(SB, ST, s.values, s.rewards, s.mask, 0.99, 0.95, wr == 1, adv, ret);
        double sum = 0;
        for (int b = 0; b < SB; b++)
            sum += s.kl[b];
        float got[2 * SB * ST];
        double mc[2];
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fread(got, sizeof got, 1, f), 1);
        assert_int_equal(fread(mc, sizeof mc, 1, f), 1);
        fclose(f);
        double dmax = 0;
        for (int i = 0; i < SB * ST; i++) {
            if (s.mask[i] == 0 && !wr)
                continue; /* never read by the losses */
            dmax = fmax(dmax, fabs((double)got[i] - adv[i]));
            dmax = fmax(dmax, fabs((double)got[SB * ST + i] - ret[i]));
        }
        /* the sums differ only in order: float32 rounding of whitened values (|x| < 4) */
        print_message("whiten_rewards %d: max |3 ranks - 1 rank| = %.3g (advantages, returns)\n",
                      wr, dmax);
        if (!(dmax <= 2e-6))
            fail_msg("3 ranks x uneven shares differ from 1 rank x %d rows by %.3g", SB, dmax);
        assert_true(fabs(mc[0] - sum / SB) <= 1e-15);
        assert_true(mc[1] == SB);
    }
    test_rmtree(dir);
    free(dir);
}

static void moments_of_one_rank_are_the_plain_functions_to_the_bit(void **state)
{
    (void)state;
    stats_case_t s;
    stats_case_make(&s);
    double m, mean, var;
    assert_int_equal(ppo_masked_moments(NULL, s.values, s.mask, SB * ST, true, &m, &mean, &var,
                                        NULL), 0);
    /* the formula written out, two passes in index order */
    double sx = 0, sm = 0, ss = 0;
    for (int i = 0; i < SB * ST; i++) {
        sx += (double)s.values[i] * s.mask[i];
        sm += s.mask[i];
    }
    for (int i = 0; i < SB * ST; i++) {
        double d = (double)s.values[i] - sx / sm;
        ss += d * d * s.mask[i];
    }
    assert_true(m == sm);
    assert_true(mean == sx / sm);
    assert_true(var == ss / sm * (sm / (sm - 1)));
    assert_true(ppo_masked_var(s.values, s.mask, SB * ST, true) == var);
    assert_true(ppo_masked_mean(s.values, s.mask, SB * ST) == mean);
}

/* ---- the launcher ----------------------------------------------------------------------------- */

static int launch_sh(int n, const char *script, double grace, err_t *e, double *secs)
{
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    dist_launch_t l = {.nranks = n, .exe = "/bin/sh", .argv = argv, .grace_s = grace};
    double t0 = now_s();
    int rc = dist_launch(&l, e);
    *secs = now_s() - t0;
    return rc;
}

static void launched_ranks_get_torchrun_variables(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), script[1024];
    snprintf(script, sizeof script,
             "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR "
             "${MASTER_PORT:+port} ${MXRLHF_DIST_LISTEN_FD:+fd}\" > %s/rank$RANK", dir);
    err_t e = ERR_INIT;
    double secs;
    assert_int_equal(launch_sh(3, script, 5, &e, &secs), ERR_OK);
    for (int r = 0; r < 3; r++) {
        char p[600], line[256] = "", want[128];
        snprintf(p, sizeof p, "%s/rank%d", dir, r);
        FILE *f = fopen(p, "r");
        assert_non_null(f);
        assert_non_null(fgets(line, sizeof line, f));
        fclose(f);
        snprintf(want, sizeof want, "%d 3 %d 3 127.0.0.1 port %s\n", r, r, r == 0 ? "fd" : "");
        assert_string_equal(line, want);
    }
    test_rmtree(dir);
    free(dir);
}

static void a_rank_exiting_3_stops_the_others_and_is_named(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    double secs;
    /* rank 1 fails at once; ranks 0 and 2 would sleep 30 s */
    int rc = launch_sh(3, "if [ \"$RANK\" = 1 ]; then sleep 0.2; exit 3; fi; exec sleep 30", 5,
                       &e, &secs);
    assert_int_equal(rc, 3);
    assert_non_null(strstr(e.msg, "rank 1 of 3 exited with status 3"));
    assert_non_null(strstr(e.msg, "the other ranks were stopped"));
    if (secs > 10)
        fail_msg("the other ranks ran on for %.1f s", secs);
}

static void a_killed_rank_is_named_with_its_signal(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    double secs;
    /* rank 0 ignores SIGTERM: SIGKILL must come after the grace period */
    int rc = launch_sh(2, "if [ \"$RANK\" = 1 ]; then kill -9 $$; fi; trap '' TERM; exec sleep 30",
                       1, &e, &secs);
    assert_int_equal(rc, ERR_FAIL);
    assert_non_null(strstr(e.msg, "rank 1 of 2 was killed by signal 9"));
    if (secs > 10)
        fail_msg("a rank that ignores SIGTERM ran on for %.1f s (grace 1 s)", secs);
}

/* mxrlhf comm under the launcher: rank 1 (a shell that execs mxrlhf) exits 3 before or is
 * killed during the collectives; rank 0 must fail and write nothing. */
static void a_failing_rank_leaves_no_output(void **state)
{
    (void)state;
    const char *bin = getenv("MXRLHF_BIN");
    if (!bin || !*bin)
        bin = "build/asan/mxrlhf";
    if (access(bin, X_OK)) {
        if (test_in_ci())
            fail_msg("%s: not built", bin);
        skip();
    }
    char *dir = test_mkdtemp(), script[2048], out[600];
    snprintf(out, sizeof out, "%s/out", dir);
    char modes[2][1024];
    snprintf(modes[0], sizeof modes[0], "exit 3");
    snprintf(modes[1], sizeof modes[1],
             "(sleep 0.3; kill -9 $$) & exec %s comm --gpus 2 --max-mib 64 --iters 50", bin);
    for (int m = 0; m < 2; m++) {
        snprintf(script, sizeof script,
                 "if [ \"$RANK\" = 1 ]; then %s; fi; "
                 "exec %s comm --gpus 2 --max-mib 64 --iters 50 --output %s", modes[m], bin, out);
        err_t e = ERR_INIT;
        double secs;
        int rc = launch_sh(2, script, 5, &e, &secs);
        print_message("rank 1 %s: %s\n", m ? "killed" : "exits 3", e.msg);
        assert_int_not_equal(rc, ERR_OK);
        assert_non_null(strstr(e.msg, m == 0 ? "exited with status" : "rank 1 of 2 was killed"));
        struct stat sb;
        if (!stat(out, &sb)) /* the directory may exist only if empty: nothing half-written */
            fail_msg("%s exists after a failed rank", out);
    }
    /* and the same job without the failure writes its file */
    snprintf(script, sizeof script, "exec %s comm --gpus 2 --max-mib 1 --iters 2 --output %s",
             bin, out);
    err_t e = ERR_INIT;
    double secs;
    assert_int_equal(launch_sh(2, script, 5, &e, &secs), ERR_OK);
    char p[700];
    snprintf(p, sizeof p, "%s/comm.json", out);
    assert_int_equal(access(p, R_OK), 0);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shares_cover_every_item_once_in_rank_order),
        cmocka_unit_test(an_uneven_batch_is_refused_naming_the_sizes),
        cmocka_unit_test(tcp_collectives_give_rank_order_sums_on_every_rank),
        cmocka_unit_test(a_rank_that_exits_fails_the_collective_naming_it),
        cmocka_unit_test(global_whitening_over_3_ranks_matches_one_rank_on_the_whole_batch),
        cmocka_unit_test(moments_of_one_rank_are_the_plain_functions_to_the_bit),
        cmocka_unit_test(launched_ranks_get_torchrun_variables),
        cmocka_unit_test(a_rank_exiting_3_stops_the_others_and_is_named),
        cmocka_unit_test(a_killed_rank_is_named_with_its_signal),
        cmocka_unit_test(a_failing_rank_leaves_no_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
