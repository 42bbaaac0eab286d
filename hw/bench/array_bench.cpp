// array_bench: the schedule and the counts both array benches share (array_bench.h).
#include "array_bench.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace array_bench {

mx_hwgemm_t load(const char *path)
{
    mx_hwgemm_t g;
    err_t e = ERR_INIT;
    if (mx_hwgemm_load(path, &g, &e)) {
        std::fprintf(stderr, "%s\n", e.msg);
        std::exit(2);
    }
    return g;
}

static double block_bytes(mx_format_t f, int k)
{
    return mx_format_info(f)->bits * k / 8.0 + 1;
}

int run(const char *name, const char *path, const mx_hwgemm_t &g, int R, int C, double buffer,
        Dut &dut)
{
    size_t ref_ok;
    long ref_bad;
    err_t e = ERR_INIT;
    if (mx_hwgemm_check(&g, &ref_ok, &ref_bad, &e)) {
        std::fprintf(stderr, "%s\n", e.msg);
        return 2;
    }
    std::printf("%s: %s: %zu x %zu x %zu, a %s, b %s, k %d; the case's y: %zu of %zu equal "
                "the C reference (mx_block_gemm)\n", name, path, g.M, g.N, g.K,
                mx_format_name(g.fa), mx_format_name(g.fb), g.k, ref_ok, g.M * g.N);
    const int k = g.k, L = dut.latency();
    const long nb = (long)(g.K / (size_t)k);
    const long TM = (long)((g.M + (size_t)R - 1) / (size_t)R),
               TN = (long)((g.N + (size_t)C - 1) / (size_t)C), tiles = TM * TN;
    std::vector<edge> a((size_t)R), b((size_t)C);
    std::vector<bool> valid((size_t)(R * C));
    std::vector<uint32_t> out((size_t)(R * C));
    std::vector<uint32_t> y(g.M * g.N, 0);
    std::vector<bool> got(g.M * g.N, false);
    long missing_valid = 0, cycles = 0;
    const long last = tiles * nb + (R - 1) + (C - 1) + L;   // cycles until the last result
    for (long t = 0; t < last; t++) {
        for (int r = 0; r < R; r++) {   // row r presents block j of tile i in cycle i*nb + j + r
            edge &in = a[(size_t)r];
            in = edge();
            long u = t - r;
            if (u < 0 || u >= tiles * nb)
                continue;
            long i = u / nb, j = u % nb;
            size_t m = (size_t)(i / TN) * (size_t)R + (size_t)r;
            if (m < g.M) {
                in.valid = true;
                in.first = j == 0;
                in.scale = g.as[m * (size_t)nb + (size_t)j];
                std::memcpy(in.codes, g.a + m * g.K + (size_t)j * (size_t)k, (size_t)k);
            }
        }
        for (int c = 0; c < C; c++) {
            edge &in = b[(size_t)c];
            in = edge();
            long u = t - c;
            if (u < 0 || u >= tiles * nb)
                continue;
            long i = u / nb, j = u % nb;
            size_t n = (size_t)(i % TN) * (size_t)C + (size_t)c;
            if (n < g.N) {
                in.scale = g.bs[n * (size_t)nb + (size_t)j];
                std::memcpy(in.codes, g.b + n * g.K + (size_t)j * (size_t)k, (size_t)k);
            }
        }
        dut.clock(a, b, valid, out);
        cycles = t + 1;
        // after this clock, PE (r, c) holds the running sum of the block that reached it
        // L - 1 clocks ago; it is tile i's result when that was block nb - 1
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++) {
                long u = t - (L - 1) - r - c;
                if (u < 0 || u >= tiles * nb || u % nb != nb - 1)
                    continue;
                long i = u / nb;
                size_t m = (size_t)(i / TN) * (size_t)R + (size_t)r;
                size_t n = (size_t)(i % TN) * (size_t)C + (size_t)c;
                if (m >= g.M || n >= g.N)
                    continue;
                if (!valid[(size_t)(r * C + c)])
                    missing_valid++;
                y[m * g.N + n] = out[(size_t)(r * C + c)];
                got[m * g.N + n] = true;
            }
    }
    size_t match = 0;
    int shown = 0;
    for (size_t i = 0; i < g.M * g.N; i++) {
        if (got[i] && y[i] == g.y[i])
            match++;
        else if (shown++ < 5)
            std::printf("%s: output (%zu, %zu): expected %08x, got %08x%s\n", name, i / g.N,
                        i % g.N, g.y[i], y[i], got[i] ? "" : " (never produced)");
    }
    const double bba = block_bytes(g.fa, k), bbb = block_bytes(g.fb, k);
    const double a_bytes = (double)g.M * (double)nb * bba, b_bytes = (double)g.N * (double)nb * bbb;
    const double y_bytes = (double)g.M * (double)g.N * 4;
    const bool b_fits = b_bytes <= buffer;
    const double off = a_bytes + (b_fits ? b_bytes : b_bytes * (double)TM) + y_bytes;
    const double off_bf16 = ((double)g.M + (double)g.N) * (double)g.K * 2 + y_bytes;
    const double edge_bytes = (double)tiles * (double)nb * ((double)R * bba + (double)C * bbb) + y_bytes;
    const double hops = (double)tiles * (double)nb * ((double)R * (C - 1) * bba + (double)C * (R - 1) * bbb);
    const double macs = (double)g.M * (double)g.N * (double)g.K;
    std::printf("%s: %d x %d PEs, %zu of %zu outputs match the C reference\n", name, R, C, match,
                g.M * g.N);
    std::printf("%s: %ld tiles of %ld blocks: %ld cycles (fill and drain %d), %.0f MACs, "
                "utilisation %.1f%% of %d MAC lanes\n", name, tiles, nb, cycles, R + C - 2 + L,
                macs, 100.0 * macs / ((double)cycles * R * C * k), R * C * k);
    std::printf("%s: off-chip %.0f bytes (a %.0f, b %.0f%s, y %.0f; the same GEMM in bf16: "
                "%.0f bytes, ratio %.3f)\n", name, off, a_bytes,
                b_fits ? b_bytes : b_bytes * (double)TM,
                b_fits ? " once: fits the weight buffer" : " per tile row", y_bytes, off_bf16,
                off / off_bf16);
    std::printf("%s: on-chip %.0f bytes from the buffers into the array and out, %.0f bytes "
                "over PE-to-PE links\n", name, edge_bytes, hops);
    if (missing_valid)
        std::printf("%s: %ld results were read without their valid bit\n", name, missing_valid);
    return match == g.M * g.N && ref_ok == g.M * g.N && !missing_valid ? 0 : 1;
}

}  // namespace array_bench
