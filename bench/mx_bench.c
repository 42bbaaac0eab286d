/* mx_bench: MX fake-quant and packed-encode throughput, beside memcpy of the same
 * buffer in the same run.
 *
 * GB/s counts float32 input bytes per second. The buffer (default 256 MiB) is far
 * larger than the caches, so every figure includes streaming the input from DRAM and
 * writing the output (fake quant: 4 bytes per element, packed: 0.5-1 byte plus the
 * scales). Single thread uses the plain functions; "all" uses the OpenMP ones with
 * every core. memcpy "all" is the same buffer copied in per-thread chunks.
 *
 * Targets (issue 2): >= 1 GB/s per core single-threaded, and >= 25% of all-core
 * memcpy bandwidth with all cores, for every format.
 *
 * Usage: mx_bench [--mib N] [--reps R] [--threads T]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mx/mx.h"
#include "mx/mx_pack.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct job {
    int kind; /* 0 memcpy, 1 fake quant, 2 packed encode */
    int threads;
    mx_spec_t spec;
    const float *in;
    float *out;
    uint8_t *elems, *scales;
    size_t n;
} job_t;

static void run_job(const job_t *j)
{
    size_t n = j->n;
    if (j->kind == 0) {
        if (j->threads == 1) {
            memcpy(j->out, j->in, n * 4);
            return;
        }
        size_t chunk = 1 << 16;
        long nch = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) num_threads(j->threads)
        for (long c = 0; c < nch; c++) {
            size_t b = (size_t)c * chunk, len = n - b < chunk ? n - b : chunk;
            memcpy(j->out + b, j->in + b, len * 4);
        }
    } else if (j->kind == 1) {
        if (j->threads == 1)
            mx_fake_quant_flat(j->in, j->out, n, &j->spec, 1, 2, 0);
        else
            mx_fake_quant_flat_parallel(j->in, j->out, n, &j->spec, 1, 2, 0, j->threads);
    } else {
        err_t e = ERR_INIT;
        if (mx_pack_encode(j->in, 1, n, MX_AXIS_ROW, &j->spec, 1, 2, j->threads, j->elems,
                           j->scales, &e)) {
            fprintf(stderr, "mx_bench: %s\n", e.msg);
            exit(1);
        }
    }
}

/* Best of `reps` runs, in GB/s of float32 input. */
static double measure(const job_t *j, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        run_job(j);
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    return (double)j->n * 4 / best / 1e9;
}

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    fclose(f);
}

int main(int argc, char **argv)
{
    size_t mib = 256;
    int reps = 3, threads = omp_get_max_threads();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: mx_bench [--mib N] [--reps R] [--threads T]\n");
            return 2;
        }
    }
    if (mib < 1 || reps < 1 || threads < 1) {
        fprintf(stderr, "mx_bench: --mib, --reps and --threads must be positive\n");
        return 2;
    }
    size_t n = mib * 1024 * 1024 / 4;
    float *in = malloc(n * 4), *out = malloc(n * 4);
    uint8_t *elems = malloc(n), *scales = malloc(n / 8 + 1);
    if (!in || !out || !elems || !scales) {
        fprintf(stderr, "mx_bench: cannot allocate %zu MiB buffers\n", mib);
        return 1;
    }
    /* Gaussian-ish data with a spread of magnitudes (xorshift; first touch of every
     * page happens here and in the memsets, not in the timed runs) */
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long c = 0; c < (long)(n / 4096); c++) {
        uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(c + 1);
        for (size_t i = (size_t)c * 4096; i < (size_t)(c + 1) * 4096; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            float u = (float)((x >> 40) & 0xffffff) * 0x1p-24f - 0.5f;
            float v = (float)((x >> 16) & 0xffffff) * 0x1p-24f - 0.5f;
            in[i] = (u + v) * (float)(1u << (x & 7));
        }
    }
    memset(out, 0, n * 4);
    memset(elems, 0, n);
    memset(scales, 0, n / 8 + 1);

    char model[256];
    cpu_model(model, sizeof model);
    printf("MX quantization throughput, GB/s of float32 input (best of %d)\n", reps);
    printf("machine: %s, %ld logical CPUs online, %d OpenMP threads for \"all\"\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), threads);
    printf("buffer: %zu MiB of float32 (%zu elements), blocks along the flat array\n\n", mib, n);

    job_t j = {0, 1, mx_spec_default(MX_FP8_E4M3), in, out, elems, scales, n};
    double mc1 = measure(&j, reps);
    j.threads = threads;
    double mcA = measure(&j, reps);
    printf("memcpy: 1 thread %.2f GB/s, all %.2f GB/s (targets: 1 GB/s single, 25%% of all = "
           "%.2f GB/s)\n\n", mc1, mcA, 0.25 * mcA);

    printf("%-11s %5s %-10s | %8s %8s %6s | %8s %8s %6s | %s\n", "format", "block", "rounding",
           "fq 1T", "fq all", "%mcpy", "pack 1T", "pack all", "%mcpy", "target");
    printf("---------------------------------------------------------------------------------------"
           "------\n");
    int misses = 0;
    for (int f = 0; f < MX_FORMAT_COUNT; f++) {
        const mx_format_info_t *fi = mx_format_info((mx_format_t)f);
        int blocks[] = {8, 16, 32};
        for (int bi = 0; bi < (fi->is_mx ? 4 : 1); bi++) {
            /* the fourth row: stochastic rounding at block 32 */
            mx_spec_t s = mx_spec_default((mx_format_t)f);
            s.block = bi < 3 ? blocks[bi] : 32;
            if (bi == 3)
                s.round = MX_ROUND_STOCHASTIC;
            job_t q = {1, 1, s, in, out, elems, scales, n};
            double f1 = measure(&q, reps);
            q.threads = threads;
            double fA = measure(&q, reps);
            double p1 = 0, pA = 0;
            if (fi->is_mx) {
                job_t p = {2, 1, s, in, out, elems, scales, n};
                p1 = measure(&p, reps);
                p.threads = threads;
                pA = measure(&p, reps);
            }
            int ok = f1 >= 1.0 && fA >= 0.25 * mcA &&
                     (!fi->is_mx || (p1 >= 1.0 && pA >= 0.25 * mcA));
            misses += !ok;
            char blk[16];
            snprintf(blk, sizeof blk, fi->is_mx ? "%d" : "-", s.block);
            if (fi->is_mx)
                printf("%-11s %5s %-10s | %8.2f %8.2f %5.0f%% | %8.2f %8.2f %5.0f%% | %s\n",
                       fi->name, blk, mx_round_name(s.round), f1, fA, 100 * fA / mcA, p1, pA,
                       100 * pA / mcA, ok ? "met" : "MISSED");
            else
                printf("%-11s %5s %-10s | %8.2f %8.2f %5.0f%% | %8s %8s %6s | %s\n", fi->name, blk,
                       "cast", f1, fA, 100 * fA / mcA, "-", "-", "", ok ? "met" : "MISSED");
        }
    }
    printf("\n%d row(s) miss a target\n", misses);
    free(in);
    free(out);
    free(elems);
    free(scales);
    return 0;
}
