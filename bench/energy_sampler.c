/* energy_sampler: what sampling costs. Reads the power source (argv[1], default auto)
 * directly to time one power read and one counter read, then times a fixed CPU
 * compute loop without the monitor and with it sampling at 20 ms and at 5 ms, and
 * prints the slowdown. The GPU-side overhead (a PyTorch loop under `mxrlhf monitor`)
 * is measured by scripts/peer/energy_device.sh; both go to docs/benchmarks.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "energy/monitor.h"
#include "energy/source.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A single-threaded loop of dependent floating-point work (about 0.5 s). */
static double compute(long n)
{
    double x = 1.0, y = 0.5;
    for (long i = 0; i < n; i++) {
        x = x * 1.0000001 + y;
        y = y * 0.9999999 - 1e-9 * x;
    }
    return x + y;
}

static double timed_loop(long n, double *sink)
{
    double t = now();
    *sink += compute(n);
    return now() - t;
}

static int open_src(const char *spec, energy_source_t **s)
{
    energy_source_opts_t o;
    memset(&o, 0, sizeof o);
    energy_source_opts_from_env(&o);
    err_t e = ERR_INIT;
    if (energy_source_open(spec, &o, s, &e)) {
        fprintf(stderr, "energy_sampler: %s\n", e.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *spec = argc > 1 ? argv[1] : "auto";
    energy_source_t *s;
    if (open_src(spec, &s))
        return 3;
    char line[2048];
    energy_provenance_line(&s->prov, line, sizeof line);
    printf("source: %s\n", line);
    energy_sample_t buf[ENERGY_MAX_DEVICES];
    err_t e = ERR_INIT;
    int n;
    const char *what[2] = {"power read", "counter read"};
    int kinds[2] = {ENERGY_READ_POWER, ENERGY_READ_COUNTER};
    int reps[2] = {2000, 100};
    printf("%-14s %8s %12s %12s\n", "reading", "calls", "mean_us", "max_us");
    for (int k = 0; k < 2 && s->prov.ndev > 0; k++) {
        double sum = 0, mx = 0;
        for (int i = 0; i < reps[k]; i++) {
            double t = now();
            if (s->ops->read(s->impl, 0, kinds[k], buf, ENERGY_MAX_DEVICES, &n, &e)) {
                fprintf(stderr, "energy_sampler: %s\n", e.msg);
                return 1;
            }
            t = now() - t;
            sum += t;
            mx = fmax(mx, t);
        }
        printf("%-14s %8d %12.2f %12.2f\n", what[k], reps[k], 1e6 * sum / reps[k], 1e6 * mx);
    }
    energy_source_close(s);

    /* CPU loop: calibrate n for ~0.5 s, then alternate configurations. */
    double sink = 0;
    long iters = 1000000;
    while (timed_loop(iters, &sink) < 0.1)
        iters *= 2;
    iters *= 5;
    const double intervals[3] = {0, 0.02, 0.005};
    double best[3] = {INFINITY, INFINITY, INFINITY};
    for (int rep = 0; rep < 3; rep++)
        for (int c = 0; c < 3; c++) {
            energy_monitor_t *m = NULL;
            if (intervals[c] > 0) {
                if (open_src(spec, &s))
                    return 3;
                energy_monitor_opts_t mo = {intervals[c], c == 2 ? intervals[c] : 0, 0, NULL, NULL, NULL};
                if (energy_monitor_start(&m, s, &mo, &e)) {
                    fprintf(stderr, "energy_sampler: %s\n", e.msg);
                    return 1;
                }
            }
            best[c] = fmin(best[c], timed_loop(iters, &sink));
            if (m) {
                energy_run_t run;
                if (energy_monitor_stop(m, NAN, &run, &e)) {
                    fprintf(stderr, "energy_sampler: %s\n", e.msg);
                    return 1;
                }
                energy_run_free(&run);
            }
        }
    printf("\nCPU loop (best of 3, one thread)  %10s %10s\n", "seconds", "slowdown");
    const char *names[3] = {"no monitor", "monitor, 20 ms", "monitor, 5 ms (counter too)"};
    for (int c = 0; c < 3; c++)
        printf("%-33s %10.4f %9.2f%%\n", names[c], best[c], 100 * (best[c] / best[0] - 1));
    return sink == 12345.0; /* keep the loop's result alive */
}
