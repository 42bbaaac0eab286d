// mx_array_sc: the SystemC model of the PE array, the same structure as hw/rtl/mx_array.v
// (docs/hardware.md, "The PE array"): R x C mx_pe_sc in accumulate mode, output
// stationary. A blocks (valid, first, scale, codes) enter row r at the left and move one PE
// right per clock through a register per hop; B blocks (scale, codes) enter column c at
// the top and move one PE down per clock. PE (r, c) sees row r's stream delayed c clocks
// and column c's delayed r clocks, so a driver that presents block j of row r in cycle
// j + r and of column c in cycle j + c meets them at PE (r, c) in cycle j + r + c.
#ifndef MXRLHF_HW_MX_ARRAY_SC_H
#define MXRLHF_HW_MX_ARRAY_SC_H

#include <memory>
#include <vector>

#include "mx_pe_sc.h"

namespace mxhw {

SC_MODULE(mx_array_sc) {
    sc_core::sc_in<bool> clk;
    sc_core::sc_in<bool> rst;
    // a_in[r]: valid, first, sa, a[] used; b_in[c]: sb, b[] used
    std::vector<std::unique_ptr<sc_core::sc_in<block_in>>> a_in, b_in;
    // outputs of PE (r, c) at index r * C + c
    std::vector<std::unique_ptr<sc_core::sc_out<bool>>> out_valid;
    std::vector<std::unique_ptr<sc_core::sc_out<uint32_t>>> out_result;

    mx_array_sc(sc_core::sc_module_name name, int R, int C, int fa, int fb, int k);
    SC_HAS_PROCESS(mx_array_sc);

    int rows() const { return R_; }
    int cols() const { return C_; }

private:
    void hop();      // clocked: the forwarding registers
    void route();    // combinational: each PE's input from its row's and column's stream
    int R_, C_;
    // a_q[r * C + c]: the A register in front of PE (r, c), c >= 1; b_q likewise, r >= 1
    std::vector<std::unique_ptr<sc_core::sc_signal<block_in>>> a_q, b_q, pe_in;
    std::vector<std::unique_ptr<mx_pe_sc>> pe_;
    const block_in &a_at(int r, int c) const;
    const block_in &b_at(int r, int c) const;
};

}  // namespace mxhw

#endif
