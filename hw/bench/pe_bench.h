// pe_bench: what the SystemC and the Verilator test benches of the PEs share: the vector
// file (read by the C library's parser, src/mx/mx_hwvec.h, so both benches accept exactly
// the documented format) and the two passes every bench runs on it:
//
//   block mode       one vector per clock into the PE of its format (k < 32 padded with
//                    zero codes), each result compared bit for bit with the file's
//                    expected value, and its arrival checked to be exactly `latency`
//                    clocks after its inputs;
//   accumulate mode  the same vectors again, one per clock, in chains of CHAIN blocks per
//                    format (first, then accumulate), each running sum compared with the C
//                    reference's fold of the expected values (mx_block_accumulate);
//   adder            the accumulator's adder alone on ADD_PAIRS operand pairs (random bit
//                    patterns, near exponents, subnormals, zeros, infinities, NaNs, the
//                    largest values) against mx_block_accumulate (the CPU's addition).
//
// It prints "N of N vectors match" and "accumulate: N of N running sums match", lists the
// first few mismatches, and returns the exit code (0 all match, 1 a mismatch, 2 a bad
// file or usage).
#ifndef MXRLHF_HW_PE_BENCH_H
#define MXRLHF_HW_PE_BENCH_H

#include <cstdint>
#include <vector>

#include "hw_formats.h"

namespace pe_bench {

constexpr int KMAX = 32;  // lanes of every PE the benches build
constexpr int CHAIN = 4;  // blocks per accumulate-mode chain
constexpr long ADD_PAIRS = 200000;

// One clock of a device under test: `in` (or nullptr: nothing valid this clock) is presented
// to the PE of in->format during this cycle; after the clock edge that ends the cycle, the
// result in any PE's output register, if one is valid, is returned in *out (true) with its
// format in *fmt. latency() is in cycles: inputs presented in cycle t give a result
// readable in cycle t + latency.
class Dut {
public:
    virtual ~Dut() {}
    virtual bool clock(const mx_hwvec_t *in, bool acc, bool first, int *fmt, uint32_t *out) = 0;
    virtual int latency() const = 0;
    // The accumulator's binary32 adder alone (combinational in the RTL).
    virtual uint32_t add(uint32_t a, uint32_t b) = 0;
};

// Loads `path` (exits 2 with the parser's message when it is not a vector file).
std::vector<mx_hwvec_t> load(const char *path);

// Runs both passes; `name` labels the output ("systemc", "verilator").
int run(const char *name, Dut &dut, const std::vector<mx_hwvec_t> &v);

}  // namespace pe_bench

#endif
