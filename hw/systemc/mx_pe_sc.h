// mx_pe_sc: the SystemC model of the MX block dot-product PE (docs/hardware.md), clocked,
// with the RTL's timing: one block per clock (initiation interval 1), latency 3 cycles
// (the exact sum, the rounded block result, the output or accumulator register).
//
// The datapath (pe_dp) is written from the format definitions, bit by bit as the RTL does
// it, and shares no code with the C reference (src/mx/mx_dot.c) it is checked against:
//   decode   code -> sign, significand (hidden bit and mantissa; int8: |code|), shift
//            (biased exponent - 1), so |element| = sig << sh units of 2^Q
//   sum      S = sum of +-(sig_a * sig_b) << (sh_a + sh_b), exact (128-bit integer)
//   round    S * 2^(Q_a + Q_b + sa + sb - 254) to binary32, nearest even, subnormals kept,
//            overflow to infinity, exact zero +0, underflow keeps the sign
//   add      accumulate mode: binary32 addition, nearest even, the quiet NaN 0x7fc00000
// Formats are runtime values here (0 mxfp8_e4m3, 1 mxfp8_e5m2, 2 mxfp6_e3m2, 3 mxfp6_e2m3,
// 4 mxfp4_e2m1, 5 mxint8), parameters in the RTL.
#ifndef MXRLHF_HW_MX_PE_SC_H
#define MXRLHF_HW_MX_PE_SC_H

#include <cstdint>
#include <ostream>

#include <systemc>

namespace mxhw {

constexpr int KMAX = 32;

// ---- the datapath (pure functions) ---------------------------------------------------------
namespace pe_dp {
// Exponent of the unit of a format's integer significand N (value = N * 2^q).
int unit_exp(int fmt);
// Element code -> N (signed).
int64_t decode(int fmt, uint8_t code);
// Stage 1: the exact sum S of the k products (units 2^(unit_exp(fa) + unit_exp(fb))).
__int128 exact_sum(int fa, int fb, int k, const uint8_t *a, const uint8_t *b);
// Stage 2: S * 2^x rounded to binary32 bits.
uint32_t round32(__int128 S, int x);
// Both: the block result of codes a[0..k), b[0..k) of formats fa, fb.
uint32_t block(int fa, int fb, int k, uint8_t sa, const uint8_t *a, uint8_t sb, const uint8_t *b);
// binary32 a + b, nearest even, NaN -> 0x7fc00000.
uint32_t add(uint32_t a, uint32_t b);
}  // namespace pe_dp

// ---- the clocked module ----------------------------------------------------------------------

// One block of operands as a signal value.
struct block_in {
    bool valid = false, acc = false, first = false;
    uint8_t sa = 0, sb = 0;
    uint8_t a[KMAX] = {0}, b[KMAX] = {0};
    bool operator==(const block_in &o) const;
};
std::ostream &operator<<(std::ostream &os, const block_in &b);
void sc_trace(sc_core::sc_trace_file *, const block_in &, const std::string &);

SC_MODULE(mx_pe_sc) {
    sc_core::sc_in<bool> clk;
    sc_core::sc_in<bool> rst;
    sc_core::sc_in<block_in> in;
    sc_core::sc_out<bool> out_valid;
    sc_core::sc_out<uint32_t> out_result;

    // fa, fb: format indices; k: lanes (1..32).
    mx_pe_sc(sc_core::sc_module_name name, int fa, int fb, int k);
    SC_HAS_PROCESS(mx_pe_sc);

    static constexpr int LATENCY = 3;

private:
    void tick();
    int fa_, fb_, k_;
    // stage registers: 1 the exact sum and its unit's exponent, 2 the block result, 3 (the
    // output port) the result or the accumulator
    bool v1_ = false, acc1_ = false, first1_ = false;
    __int128 s1_ = 0;
    int x1_ = 0;
    bool v2_ = false, acc2_ = false, first2_ = false;
    uint32_t r2_ = 0;
    uint32_t acc_ = 0;
};

}  // namespace mxhw

#endif
