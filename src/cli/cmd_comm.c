/* mxrlhf comm: the ranks' communicator checked and timed, as nccl-tests' all_reduce_perf
 * does it: float32 all-reduce (sum) of doubling sizes, each result checked exactly, time per
 * call, algorithm bandwidth (bytes / time) and bus bandwidth (algbw x 2 (n - 1) / n, the
 * figure nccl-tests prints). Rank 0 prints the table and, with --output, writes comm.json
 * (atomically) once every rank has agreed that its checks passed. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/rank.h"
#include "util/atomic_file.h"
#include "util/fs.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* rank r's value at i, and the exact sum over n ranks: small integers, exact in float32 */
static float val(int r, size_t i) { return (float)((r + 1) * (int)(i % 7 + 1)); }
static float sum_val(int n, size_t i) { return (float)(n * (n + 1) / 2 * (int)(i % 7 + 1)); }

/* One size: a checked call, then `iters` timed calls between barriers. */
static int one_size(dist_comm_t *c, float *buf, size_t n, int iters, double *sec, long *bad,
                    err_t *e)
{
    const int rank = dist_rank(c), size = dist_size(c);
    for (size_t i = 0; i < n; i++)
        buf[i] = val(rank, i);
    if (dist_allreduce(c, buf, n, DIST_F32, e))
        return e->code;
    *bad = 0;
    for (size_t i = 0; i < n; i++)
        *bad += buf[i] != sum_val(size, i);
    if (dist_barrier(c, e))
        return e->code;
    double t0 = now_s();
    for (int k = 0; k < iters; k++)
        if (dist_allreduce(c, buf, n, DIST_F32, e))
            return e->code;
    if (dist_barrier(c, e))
        return e->code;
    *sec = (now_s() - t0) / iters;
    return ERR_OK;
}

int cmd_comm(int argc, char **argv)
{
    const char *device = "cpu", *output = NULL, *config = NULL;
    long long max_mib = 64, iters = 20;
    args_mirror_t mi = {0};
    arg_opt_t opts[12] = {
        {"device", ARG_STRING, &device, "D", "cpu or cuda (several ranks: rank r takes cuda:r); "
                                              "default cpu"},
        {"output", ARG_STRING, &output, "DIR", "write DIR/comm.json (rank 0, once all ranks agree)"},
        {"config", ARG_STRING, &config, "FILE", "JSON options: its \"dist\" object"},
        {"max-mib", ARG_INT, &max_mib, "M", "largest buffer, MiB (sizes double from 4 KiB; default 64)"},
        {"iters", ARG_INT, &iters, "N", "timed calls per size (default 20)"},
    };
    int nopts = 5;
    args_mirror_add(&mi, &dist_opts_table, opts, &nopts, 12);
    arg_spec_t spec = {"comm", "Check and time the ranks' all-reduce (as nccl-tests' all_reduce_perf).",
                       "--gpus N [--device cpu|cuda] [--output DIR] [--max-mib M] [--iters N]",
                       "Every size is checked exactly (integers summed over ranks). Columns: bytes, "
                       "time per call (us), algbw = bytes / time and busbw = algbw x 2(n-1)/n in "
                       "GB/s. The communicator is nccl on cuda, tcp on the cpu "
                       "(MXRLHF_DIST_COMM overrides); docs/distributed.md.",
                       opts, nopts, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    dist_opts_t d;
    dist_opts_default(&d);
    if (rc || (config && opts_load_file(&dist_opts_table, config, "dist", false, &d, &e)) ||
        args_mirror_apply(&mi, &dist_opts_table, &d, NULL, &e))
        return cli_report("comm", &e);
    if (max_mib < 1 || max_mib > 4096 || iters < 1 || iters > 100000) {
        err_set(&e, ERR_INPUT, "--max-mib: expected 1 to 4096, --iters: 1 to 100000");
        return cli_report("comm", &e);
    }
    cli_rank_t r;
    if (cli_rank_begin("comm", d.gpus, device, argc, argv, &r, &e) || r.launched)
        return cli_report("comm", &e);
    dist_comm_t *c = r.comm;
    const int rank = dist_rank(c), size = dist_size(c);
    const size_t maxn = (size_t)max_mib << 18; /* floats */
    float *buf = err_malloc(&e, maxn * sizeof *buf, "buffer");
    cJSON *doc = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(doc, "sizes");
    rc = buf ? ERR_OK : e.code;
    long bad_total = 0;
    if (!rc && rank == 0)
        printf("# %d ranks, communicator %s, device %s\n# %12s %12s %10s %10s %8s\n", size,
               dist_kind_name(dist_kind(c)), r.device, "bytes", "time_us", "algbw_GB/s",
               "busbw_GB/s", "wrong");
    for (size_t n = 1024; !rc && n <= maxn; n *= 2) {
        double sec = 0;
        long bad = 0;
        if ((rc = one_size(c, buf, n, (int)iters, &sec, &bad, &e)))
            break;
        double bytes = (double)n * 4, alg = bytes / sec / 1e9,
               bus = alg * 2.0 * (size - 1) / (size > 1 ? size : 1);
        bad_total += bad;
        if (rank == 0)
            printf("  %12.0f %12.2f %10.3f %10.3f %8ld\n", bytes, sec * 1e6, alg, bus, bad);
        cJSON *row = cJSON_CreateObject();
        cJSON_AddNumberToObject(row, "bytes", bytes);
        cJSON_AddNumberToObject(row, "time_us", sec * 1e6);
        cJSON_AddNumberToObject(row, "algbw_GBps", alg);
        cJSON_AddNumberToObject(row, "busbw_GBps", bus);
        cJSON_AddNumberToObject(row, "wrong", (double)bad);
        cJSON_AddItemToArray(rows, row);
    }
    if (!rc && bad_total)
        rc = err_set(&e, ERR_FAIL, "rank %d: %ld all-reduced values differ from the exact sum",
                     rank, bad_total);
    /* nothing is written unless every rank got here with its checks passed */
    rc = dist_agree(c, rc, &e);
    if (!rc && rank == 0 && output) {
        cJSON_AddNumberToObject(doc, "ranks", size);
        cJSON_AddStringToObject(doc, "communicator", dist_kind_name(dist_kind(c)));
        cJSON_AddStringToObject(doc, "device", r.device);
        char *s = cJSON_Print(doc), *path = fs_join(output, "comm.json");
        rc = !s || !path ? err_set(&e, ERR_NOMEM, "out of memory")
                         : fs_mkdir_p(output, &e) ? e.code : atomic_write(path, s, strlen(s), &e);
        free(s);
        free(path);
    }
    cJSON_Delete(doc);
    free(buf);
    cli_rank_end(&r);
    return cli_report("comm", &e);
}
