// array_bench: what the SystemC and the Verilator test benches of the PE array share: the
// GEMM case (read by the C library's parser, src/mx/mx_hwvec.h, and checked against the C
// reference first), the tile schedule, the comparison of every output and the cycle and
// byte counts (docs/hardware.md, "The PE array").
//
// Schedule: output tiles of R x C, row-major over (M / R, N / C), back to back: tile i's
// block j enters row r in cycle i*nb + j + r and column c in cycle i*nb + j + c (nb = K/k
// blocks), so the array never idles between tiles. Bytes (a block is its k codes at the
// format's bits, packed, plus its E8M0 byte):
//   off-chip  a read once (an R x K row buffer per tile row); b read once when it fits the
//             weight buffer (default 65536 bytes), else once per tile row; y written once
//             as fp32
//   on-chip   the buffers' reads into the array edges (R + C block streams per tile), y out
//             of the array, and the PE-to-PE hops (A across C - 1, B down R - 1 registers)
#ifndef MXRLHF_HW_ARRAY_BENCH_H
#define MXRLHF_HW_ARRAY_BENCH_H

#include <cstdint>
#include <vector>

#include "hw_formats.h"

namespace array_bench {

// One edge input of a clock: row r's A block (valid, first, scale, codes) or column c's B
// block (scale, codes; valid and first unused).
struct edge {
    bool valid = false, first = false;
    uint8_t scale = 0;
    uint8_t codes[32] = {0};
};

// One clock of an R x C array: a[r] and b[c] are presented during the cycle; after the
// edge that ends it, valid[r*C + c] and y[r*C + c] are PE (r, c)'s output registers.
class Dut {
public:
    virtual ~Dut() {}
    virtual void clock(const std::vector<edge> &a, const std::vector<edge> &b,
                       std::vector<bool> &valid, std::vector<uint32_t> &y) = 0;
    virtual int latency() const = 0;   // of one PE, cycles
};

// Loads a GEMM case (exits 2 with the parser's message when it is not one).
mx_hwgemm_t load(const char *path);

// Runs the case on the array, prints the outcome; the exit code (0 all outputs match and
// the case's y is the C reference's, 1 otherwise).
int run(const char *name, const char *path, const mx_hwgemm_t &g, int R, int C, double buffer,
        Dut &dut);

}  // namespace array_bench

#endif
