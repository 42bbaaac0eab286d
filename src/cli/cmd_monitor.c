/* mxrlhf monitor: measures the energy of any command, phase by phase.
 *
 * Runs CMD with its stdout on a pipe. Lines "MXRLHF_PHASE begin|end NAME [t=SECONDS]"
 * mark phases (t: CLOCK_MONOTONIC seconds, which wins over the arrival time because
 * pipes buffer); every other line is passed through to our stdout. The same lines may
 * go to the file descriptor named in the child's MXRLHF_PHASE_FD, which keeps them out
 * of the child's output. MXRLHF_T0 gives the child the run's origin on CLOCK_MONOTONIC.
 * Exits with the child's exit status (128+N when a signal N ended it); if the child
 * succeeded but the measurement failed, with 1. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "energy/attrib.h"
#include "energy/monitor.h"
#include "util/fs.h"

#define LINE_MAX_BYTES 65536

typedef struct stream {
    int fd;
    const char *name;      /* "stdout" or "MXRLHF_PHASE_FD" */
    bool pass_through;     /* non-phase lines go to our stdout */
    char buf[LINE_MAX_BYTES];
    size_t len;
    long line;
    bool eof;
} stream_t;

typedef struct mon_state {
    energy_monitor_t *m;
    double last_mark;      /* latest mark time, run time */
    char **warn;
    int nwarn;
} mon_state_t;

static void state_warn(mon_state_t *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void state_warn(mon_state_t *st, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "mxrlhf monitor: warning: %s\n", buf);
    char **nw = realloc(st->warn, sizeof *nw * (size_t)(st->nwarn + 1));
    if (nw) {
        st->warn = nw;
        if ((nw[st->nwarn] = strdup(buf)))
            st->nwarn++;
    }
}

static void handle_line(mon_state_t *st, stream_t *s, char *line, size_t len, bool newline)
{
    s->line++;
    bool begin;
    char name[ENERGY_PHASE_MAX];
    double t;
    err_t e = ERR_INIT;
    line[len] = 0;
    int k = energy_phase_line_parse(line, &begin, name, &t, &e);
    if (k == 0) {
        if (s->pass_through) {
            fwrite(line, 1, len, stdout);
            if (newline)
                fputc('\n', stdout);
            fflush(stdout);
        } else {
            state_warn(st, "%s line %ld is not a phase mark: \"%.80s\"", s->name, s->line, line);
        }
        return;
    }
    if (k < 0 || k > 1) {
        state_warn(st, "%s line %ld: %s: ignored", s->name, s->line, e.msg);
        return;
    }
    char origin[64];
    snprintf(origin, sizeof origin, "%s line %ld", s->name, s->line);
    double now = energy_monitor_now(st->m);
    /* a t= outside the monitored interval is refused here, with the one warning that says
     * so and how timestamps are read */
    if (energy_monitor_mark(st->m, begin, name, t, origin, &e)) {
        state_warn(st, "%s", e.msg);
        return;
    }
    double rel = isnan(t) ? now : t - energy_monitor_t0(st->m);
    if (rel > st->last_mark)
        st->last_mark = rel;
}

/* Reads what is there; hands over complete lines (and, at EOF, the last partial one). */
static void pump(mon_state_t *st, stream_t *s)
{
    ssize_t k = read(s->fd, s->buf + s->len, sizeof s->buf - 1 - s->len);
    if (k < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (k <= 0) {
        if (s->len)
            handle_line(st, s, s->buf, s->len, false);
        s->len = 0;
        s->eof = true;
        return;
    }
    s->len += (size_t)k;
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++)
        if (s->buf[i] == '\n') {
            handle_line(st, s, s->buf + start, i - start, true);
            start = i + 1;
        }
    memmove(s->buf, s->buf + start, s->len - start);
    s->len -= start;
    if (s->len == sizeof s->buf - 1) {
        /* a line longer than the buffer cannot be a phase mark */
        if (s->pass_through) {
            fwrite(s->buf, 1, s->len, stdout);
            fflush(stdout);
        }
        s->len = 0;
    }
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int monitor_command(char **cmd, const char *out, const char *source,
                           const char *devices, long long interval_ms, long long counter_ms,
                           double idle_s);

int cmd_monitor(int argc, char **argv)
{
    const char *out = "results/monitor", *source = "auto", *devices = NULL;
    long long interval_ms = 20, counter_ms = 0;
    double idle_s = 2.0;
    arg_opt_t opts[] = {
        {"out", ARG_STRING, &out, "DIR", "where the outputs go (default results/monitor)"},
        {"power-source", ARG_STRING, &source, "SRC",
         "auto (default), nvml, rapl, replay:FILE or none"},
        {"interval-ms", ARG_INT, &interval_ms, "N", "power sampling interval (default 20)"},
        {"counter-interval-ms", ARG_INT, &counter_ms, "N",
         "energy-counter reading interval (default: the counter's own period, 100 for NVML)"},
        {"idle-s", ARG_DOUBLE, &idle_s, "S",
         "measure idle power for S seconds before starting the command (default 2; 0: skip)"},
        {"devices", ARG_STRING, &devices, "LIST",
         "GPUs to measure: PCI bus ids or CUDA-visible indices, comma separated (default all "
         "CUDA-visible)"},
    };
    arg_spec_t spec = {
        "monitor", "Measure the energy of a command, phase by phase.",
        "[--out DIR] [--power-source SRC] [--interval-ms N] -- CMD [ARGS...]",
        "The command marks phases by printing lines\n"
        "  MXRLHF_PHASE begin|end NAME [t=<CLOCK_MONOTONIC seconds>]\n"
        "on stdout (other lines are passed through) or on the file descriptor named in\n"
        "$MXRLHF_PHASE_FD; scripts/mxrlhf_phase.py does this for Python. A timestamp in the\n"
        "line wins over its arrival time. $MXRLHF_T0 holds the run's origin on CLOCK_MONOTONIC.\n"
        "Outputs: power_log_baseline.csv, phase_timing.json, energy.csv (docs/energy.md).\n"
        "Exit status: the command's (128+N if signal N ended it); 1 if it succeeded but the\n"
        "measurement failed; 2 if it could not be started.\n"
        "Environment: CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and MXRLHF_CUDA_BUS_IDS select\n"
        "GPUs; MXRLHF_NVML_LIB and MXRLHF_POWERCAP_ROOT override where NVML and RAPL are read.",
        opts, (int)(sizeof opts / sizeof opts[0]), true};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("monitor", &e);
    if (npos == 0) {
        err_set(&e, ERR_INPUT, "no command given (usage: mxrlhf monitor [options] -- CMD ARGS)");
        return cli_report("monitor", &e);
    }
    if (interval_ms < 1 || interval_ms > 60000 || counter_ms < 0 || counter_ms > 600000 ||
        !(idle_s >= 0 && idle_s <= 3600)) {
        err_set(&e, ERR_INPUT, "--interval-ms must be 1 to 60000, --counter-interval-ms 0 to "
                "600000 and --idle-s 0 to 3600");
        return cli_report("monitor", &e);
    }
    /* one writer per output directory (the lock's descriptor is close-on-exec: the
     * measured command does not hold it) */
    fs_lock_t lock;
    if ((rc = fs_lock_dir(out, "mxrlhf monitor", &lock, &e)))
        return cli_report("monitor", &e);
    /* args_parse leaves the command at the front of argv, not NULL-terminated */
    char **cmd = calloc((size_t)npos + 1, sizeof *cmd);
    if (!cmd) {
        fs_unlock_dir(&lock);
        return ERR_NOMEM;
    }
    memcpy(cmd, pos, sizeof *cmd * (size_t)npos);
    rc = monitor_command(cmd, out, source, devices, interval_ms, counter_ms, idle_s);
    free(cmd);
    fs_unlock_dir(&lock);
    return rc;
}

static int monitor_command(char **cmd, const char *out, const char *source,
                           const char *devices, long long interval_ms, long long counter_ms,
                           double idle_s)
{
    err_t e = ERR_INIT;
    int rc;
    energy_source_opts_t so;
    memset(&so, 0, sizeof so);
    energy_source_opts_from_env(&so);
    so.devices = devices;
    so.nvml_lib = getenv("MXRLHF_NVML_LIB");
    so.powercap_root = getenv("MXRLHF_POWERCAP_ROOT");
    energy_source_t *src;
    if ((rc = energy_source_open(source, &so, &src, &e)))
        return cli_report("monitor", &e);
    char line[2048];
    energy_provenance_line(&src->prov, line, sizeof line);
    fprintf(stderr, "mxrlhf monitor: power source %s\n", line);
    if (!strcmp(source, "auto"))
        fprintf(stderr, "mxrlhf monitor: %s\n", src->prov.choice);

    energy_monitor_opts_t mo = {(double)interval_ms / 1000.0, (double)counter_ms / 1000.0,
                                idle_s, out, NULL, NULL};
    energy_monitor_t *m;
    if (idle_s > 0)
        fprintf(stderr, "mxrlhf monitor: measuring idle power for %.1f s\n", idle_s);
    if ((rc = energy_monitor_start(&m, src, &mo, &e)))
        return cli_report("monitor", &e);

    /* Signals are taken through a signalfd and passed on to the child. */
    sigset_t sigs, old;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, &old);
    int sfd = signalfd(-1, &sigs, SFD_CLOEXEC);
    int outp[2], php[2], errp[2];
    if (pipe2(outp, O_CLOEXEC) || pipe2(php, O_CLOEXEC) || pipe2(errp, O_CLOEXEC)) {
        err_errno(&e, ERR_FAIL, "pipe");
        energy_monitor_discard(m);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return cli_report("monitor", &e);
    }
    char t0buf[64];
    snprintf(t0buf, sizeof t0buf, "%.9f", energy_monitor_t0(m));
    fflush(stdout);
    fflush(stderr);
    /* a closed stdout downstream must not kill us and orphan the child's measurement */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_pipe;
    sigaction(SIGPIPE, &ign, &old_pipe);
    pid_t pid = fork();
    if (pid == 0) {
        sigaction(SIGPIPE, &old_pipe, NULL);
        sigprocmask(SIG_SETMASK, &old, NULL);
        dup2(outp[1], STDOUT_FILENO);
        /* The phase pipe goes to fd 3, without CLOEXEC: shells such as dash only
         * redirect to single-digit descriptors (>&$MXRLHF_PHASE_FD). */
        int pfd = 3;
        if (errp[1] == pfd)
            errp[1] = fcntl(errp[1], F_DUPFD_CLOEXEC, 10);
        if (php[1] == pfd)
            fcntl(pfd, F_SETFD, 0);
        else
            dup2(php[1], pfd);
        char fdbuf[16];
        snprintf(fdbuf, sizeof fdbuf, "%d", pfd);
        setenv("MXRLHF_PHASE_FD", fdbuf, 1);
        setenv("MXRLHF_T0", t0buf, 1);
        execvp(cmd[0], cmd);
        int err = errno;
        ssize_t w = write(errp[1], &err, sizeof err);
        (void)w;
        _exit(127);
    }
    close(outp[1]);
    close(php[1]);
    close(errp[1]);
    int exec_err = 0;
    ssize_t got = pid > 0 ? read(errp[0], &exec_err, sizeof exec_err) : -1;
    close(errp[0]);
    if (pid < 0 || got > 0) {
        if (pid < 0)
            err_errno(&e, ERR_FAIL, "fork");
        else
            err_set(&e, ERR_INPUT, "cannot run %s: %s", cmd[0], strerror(exec_err));
        if (pid > 0)
            waitpid(pid, NULL, 0);
        close(outp[0]);
        close(php[0]);
        if (sfd >= 0)
            close(sfd);
        energy_monitor_discard(m);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return cli_report("monitor", &e);
    }

    mon_state_t st = {m, -INFINITY, NULL, 0};
    stream_t *so_s = calloc(1, sizeof *so_s), *ph_s = calloc(1, sizeof *ph_s);
    if (!so_s || !ph_s) {
        fprintf(stderr, "mxrlhf monitor: out of memory\n");
        kill(pid, SIGTERM);
        waitpid(pid, NULL, 0);
        free(so_s);
        free(ph_s);
        energy_monitor_discard(m);
        return ERR_NOMEM;
    }
    *so_s = (stream_t){.fd = outp[0], .name = "stdout", .pass_through = true};
    *ph_s = (stream_t){.fd = php[0], .name = "MXRLHF_PHASE_FD", .pass_through = false};
    int status = 0;
    bool exited = false;
    double drain_until = INFINITY;
    while (!(so_s->eof && ph_s->eof) && mono_now() < drain_until) {
        struct pollfd pf[3];
        int np = 0;
        stream_t *map[3] = {NULL, NULL, NULL};
        if (!so_s->eof)
            map[np] = so_s, pf[np++] = (struct pollfd){so_s->fd, POLLIN, 0};
        if (!ph_s->eof)
            map[np] = ph_s, pf[np++] = (struct pollfd){ph_s->fd, POLLIN, 0};
        int sidx = -1;
        if (sfd >= 0)
            sidx = np, pf[np++] = (struct pollfd){sfd, POLLIN, 0};
        int k = poll(pf, (nfds_t)np, 100);
        if (k < 0 && errno != EINTR)
            break;
        for (int i = 0; k > 0 && i < np; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (i == sidx) {
                struct signalfd_siginfo si;
                if (read(sfd, &si, sizeof si) == sizeof si && si.ssi_code <= 0)
                    kill(pid, (int)si.ssi_signo); /* sent to us alone (kill/sigqueue): pass on */
                continue;
            }
            pump(&st, map[i]);
        }
        if (!exited && waitpid(pid, &status, WNOHANG) == pid) {
            exited = true;
            /* descendants may keep the pipes open; read what comes soon, then stop */
            drain_until = mono_now() + 0.5;
        }
    }
    if (!exited)
        waitpid(pid, &status, 0);
    close(outp[0]);
    close(php[0]);
    if (sfd >= 0)
        close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(so_s);
    free(ph_s);
    int child = WIFEXITED(status) ? WEXITSTATUS(status)
                : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;

    err_t se = ERR_INIT;
    bool sensor_failed = energy_monitor_sensor_error(m, &se) != ERR_OK;
    energy_run_t run;
    rc = energy_monitor_stop(m, st.last_mark, &run, &e);
    for (int i = 0; i < st.nwarn; i++) {
        if (!rc)
            energy_run_warn(&run, "%s", st.warn[i]);
        free(st.warn[i]);
    }
    free(st.warn);
    if (!rc) {
        sensor_failed |= run.sensor_failed;
        if (run.sensor_failed && !se.msg[0])
            err_set(&se, ERR_FAIL, "%s", run.sensor_error);
        rc = energy_write_outputs(&run, out, stderr, &e);
        energy_run_free(&run);
    }
    if (rc) {
        cli_report("monitor", &e);
        return child ? child : ERR_FAIL;
    }
    if (sensor_failed)
        fprintf(stderr, "mxrlhf monitor: the power sensor failed during the run (%s); the "
                "outputs hold what was collected before\n", se.msg);
    fprintf(stderr, "mxrlhf monitor: wrote %s/{%s,%s,%s}\n", out, ENERGY_POWER_LOG_NAME,
            ENERGY_TIMING_NAME, ENERGY_CSV_NAME);
    if (child)
        return child;
    return sensor_failed ? ERR_FAIL : 0;
}
