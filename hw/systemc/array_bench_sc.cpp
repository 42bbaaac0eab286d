// The SystemC test bench of the PE array on a GEMM case (docs/hardware.md, "GEMM cases"):
//   array_bench_sc CASE R C [BUFFER_BYTES]
// runs y = a·bᵀ of CASE (written by `mxrlhf hw gemm` from a real layer under a policy's
// formats) on an R x C array of PEs in the case's formats, compares every output bit for
// bit with the case's y, which must itself equal the C reference (mx_block_gemm, checked
// here first), and reports cycles and bytes. Exit 0, 1 on a mismatch, 2 on a bad case.
//
// Schedule: output tiles of R x C, row-major over (M / R, N / C), back to back: tile i's
// block j enters row r in cycle i*nb + j + r and column c in cycle i*nb + j + c (nb = K/k
// blocks), so the array never idles between tiles. Bytes (a block is its k codes at the
// format's bits, packed, plus its E8M0 byte):
//   off-chip  a read once (an R x K row buffer per tile row); b read once when it fits the
//             BUFFER_BYTES weight buffer (default 65536), else once per tile row; y written
//             once as fp32
//   on-chip   the buffers' reads into the array edges (R + C block streams per tile), y out
//             of the array, and the PE-to-PE hops (A across C - 1, B down R - 1 registers)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mx_array_sc.h"

extern "C" {
#include "mx/mx_hwvec.h"
}

namespace {

int format_index(mx_format_t f)
{
    for (int i = 0; i < MX_HWVEC_NFORMATS; i++)
        if (mx_hwvec_formats[i] == f)
            return i;
    return -1;
}

double block_bytes(mx_format_t f, int k)
{
    return mx_format_info(f)->bits * k / 8.0 + 1;
}

}  // namespace

int sc_main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        std::fprintf(stderr, "usage: %s CASE R C [BUFFER_BYTES]\n", argv[0]);
        return 2;
    }
    int R = std::atoi(argv[2]), C = std::atoi(argv[3]);
    double buffer = argc == 5 ? std::atof(argv[4]) : 65536;
    if (R < 1 || C < 1 || R > 64 || C > 64) {
        std::fprintf(stderr, "array: R and C must be in 1..64\n");
        return 2;
    }
    mx_hwgemm_t g;
    err_t e = ERR_INIT;
    if (mx_hwgemm_load(argv[1], &g, &e)) {
        std::fprintf(stderr, "%s\n", e.msg);
        return 2;
    }
    size_t ref_ok;
    long ref_bad;
    if (mx_hwgemm_check(&g, &ref_ok, &ref_bad, &e)) {
        std::fprintf(stderr, "%s\n", e.msg);
        return 2;
    }
    std::printf("array: %s: %zu x %zu x %zu, a %s, b %s, k %d; the case's y: %zu of %zu equal "
                "the C reference (mx_block_gemm)\n", argv[1], g.M, g.N, g.K,
                mx_format_name(g.fa), mx_format_name(g.fb), g.k, ref_ok, g.M * g.N);

    const int fa = format_index(g.fa), fb = format_index(g.fb), k = g.k;
    const long nb = (long)(g.K / (size_t)k);
    const long TM = (long)((g.M + (size_t)R - 1) / (size_t)R),
               TN = (long)((g.N + (size_t)C - 1) / (size_t)C), tiles = TM * TN;
    const int L = mxhw::mx_pe_sc::LATENCY;

    sc_core::sc_signal<bool> clk("clk"), rst("rst");
    std::vector<std::unique_ptr<sc_core::sc_signal<mxhw::block_in>>> a_in, b_in;
    std::vector<std::unique_ptr<sc_core::sc_signal<bool>>> valid;
    std::vector<std::unique_ptr<sc_core::sc_signal<uint32_t>>> result;
    mxhw::mx_array_sc arr("array", R, C, fa, fb, k);
    arr.clk(clk);
    arr.rst(rst);
    for (int r = 0; r < R; r++) {
        a_in.emplace_back(new sc_core::sc_signal<mxhw::block_in>(("a" + std::to_string(r)).c_str()));
        (*arr.a_in[(size_t)r])(*a_in.back());
    }
    for (int c = 0; c < C; c++) {
        b_in.emplace_back(new sc_core::sc_signal<mxhw::block_in>(("b" + std::to_string(c)).c_str()));
        (*arr.b_in[(size_t)c])(*b_in.back());
    }
    for (int i = 0; i < R * C; i++) {
        valid.emplace_back(new sc_core::sc_signal<bool>(("v" + std::to_string(i)).c_str()));
        result.emplace_back(new sc_core::sc_signal<uint32_t>(("y" + std::to_string(i)).c_str()));
        (*arr.out_valid[(size_t)i])(*valid.back());
        (*arr.out_result[(size_t)i])(*result.back());
    }
    auto tick = [&]() {
        clk.write(false);
        sc_core::sc_start(5, sc_core::SC_NS);
        clk.write(true);
        sc_core::sc_start(5, sc_core::SC_NS);
    };
    rst.write(true);
    tick();
    tick();
    rst.write(false);

    std::vector<uint32_t> y(g.M * g.N, 0);
    std::vector<bool> got(g.M * g.N, false);
    long missing_valid = 0, cycles = 0;
    const long last = tiles * nb + (R - 1) + (C - 1) + L;   // cycles until the last result
    for (long t = 0; t < last; t++) {
        // the edges: row r presents block j of tile i in cycle i*nb + j + r
        for (int r = 0; r < R; r++) {
            mxhw::block_in in;
            long u = t - r;
            if (u >= 0 && u < tiles * nb) {
                long i = u / nb, j = u % nb;
                size_t m = (size_t)(i / TN) * (size_t)R + (size_t)r;
                if (m < g.M) {
                    in.valid = true;
                    in.first = j == 0;
                    in.sa = g.as[m * (size_t)nb + (size_t)j];
                    std::memcpy(in.a, g.a + m * g.K + (size_t)j * (size_t)k, (size_t)k);
                }
            }
            a_in[(size_t)r]->write(in);
        }
        for (int c = 0; c < C; c++) {
            mxhw::block_in in;
            long u = t - c;
            if (u >= 0 && u < tiles * nb) {
                long i = u / nb, j = u % nb;
                size_t n = (size_t)(i % TN) * (size_t)C + (size_t)c;
                if (n < g.N) {
                    in.sb = g.bs[n * (size_t)nb + (size_t)j];
                    std::memcpy(in.b, g.b + n * g.K + (size_t)j * (size_t)k, (size_t)k);
                }
            }
            b_in[(size_t)c]->write(in);
        }
        tick();
        cycles = t + 1;
        // after this clock, PE (r, c) holds the running sum of the block that reached it
        // L - 1 clocks ago: cycle t - (L - 1); it is tile i's result when that was block nb-1
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
                if (!valid[(size_t)(r * C + c)]->read())
                    missing_valid++;
                y[m * g.N + n] = result[(size_t)(r * C + c)]->read();
                got[m * g.N + n] = true;
            }
    }
    size_t match = 0;
    int shown = 0;
    for (size_t i = 0; i < g.M * g.N; i++) {
        if (got[i] && y[i] == g.y[i])
            match++;
        else if (shown++ < 5)
            std::printf("array: output (%zu, %zu): expected %08x, got %08x%s\n", i / g.N,
                        i % g.N, g.y[i], y[i], got[i] ? "" : " (never produced)");
    }
    // bytes
    const double bba = block_bytes(g.fa, k), bbb = block_bytes(g.fb, k);
    const double a_bytes = (double)g.M * (double)nb * bba, b_bytes = (double)g.N * (double)nb * bbb;
    const double y_bytes = (double)g.M * (double)g.N * 4;
    const bool b_fits = b_bytes <= buffer;
    const double off = a_bytes + (b_fits ? b_bytes : b_bytes * (double)TM) + y_bytes;
    const double off_bf16 = ((double)g.M + (double)g.N) * (double)g.K * 2 + y_bytes;
    const double edge = (double)tiles * (double)nb * ((double)R * bba + (double)C * bbb) + y_bytes;
    const double hops = (double)tiles * (double)nb * ((double)R * (C - 1) * bba + (double)C * (R - 1) * bbb);
    const double macs = (double)g.M * (double)g.N * (double)g.K;
    std::printf("array: %d x %d PEs, %zu of %zu outputs match the C reference\n", R, C, match,
                g.M * g.N);
    std::printf("array: %ld tiles of %ld blocks: %ld cycles (fill and drain %d), %.0f MACs, "
                "utilisation %.1f%% of %d MAC lanes\n", tiles, nb, cycles, R + C - 2 + L, macs,
                100.0 * macs / ((double)cycles * R * C * k), R * C * k);
    std::printf("array: off-chip %.0f bytes (a %.0f, b %.0f%s, y %.0f; the same GEMM in bf16: "
                "%.0f bytes, ratio %.3f)\n", off, a_bytes,
                b_fits ? b_bytes : b_bytes * (double)TM,
                b_fits ? " once: fits the weight buffer" : " per tile row", y_bytes, off_bf16,
                off / off_bf16);
    std::printf("array: on-chip %.0f bytes from the buffers into the array and out, %.0f bytes "
                "over PE-to-PE links\n", edge, hops);
    if (missing_valid)
        std::printf("array: %ld results were read without their valid bit\n", missing_valid);
    bool ok = match == g.M * g.N && ref_ok == g.M * g.N && !missing_valid;
    mx_hwgemm_free(&g);
    return ok ? 0 : 1;
}
