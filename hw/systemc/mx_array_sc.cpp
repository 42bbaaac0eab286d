// mx_array_sc: the SystemC PE array (mx_array_sc.h).
#include "mx_array_sc.h"

#include <string>

namespace mxhw {

mx_array_sc::mx_array_sc(sc_core::sc_module_name name, int R, int C, int fa, int fb, int k)
    : sc_core::sc_module(name), R_(R), C_(C)
{
    for (int r = 0; r < R; r++)
        a_in.emplace_back(new sc_core::sc_in<block_in>(("a_in_" + std::to_string(r)).c_str()));
    for (int c = 0; c < C; c++)
        b_in.emplace_back(new sc_core::sc_in<block_in>(("b_in_" + std::to_string(c)).c_str()));
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            std::string rc = std::to_string(r) + "_" + std::to_string(c);
            out_valid.emplace_back(new sc_core::sc_out<bool>(("out_valid_" + rc).c_str()));
            out_result.emplace_back(new sc_core::sc_out<uint32_t>(("out_result_" + rc).c_str()));
            a_q.emplace_back(new sc_core::sc_signal<block_in>(("a_q_" + rc).c_str()));
            b_q.emplace_back(new sc_core::sc_signal<block_in>(("b_q_" + rc).c_str()));
            pe_in.emplace_back(new sc_core::sc_signal<block_in>(("pe_in_" + rc).c_str()));
            pe_.emplace_back(new mx_pe_sc(("pe_" + rc).c_str(), fa, fb, k));
            mx_pe_sc &p = *pe_.back();
            p.clk(clk);
            p.rst(rst);
            p.in(*pe_in.back());
            p.out_valid(*out_valid.back());
            p.out_result(*out_result.back());
        }
    SC_METHOD(hop);
    sensitive << clk.pos();
    dont_initialize();
    SC_METHOD(route);
    for (auto &p : a_in)
        sensitive << *p;
    for (auto &p : b_in)
        sensitive << *p;
    for (auto &s : a_q)
        sensitive << *s;
    for (auto &s : b_q)
        sensitive << *s;
}

const block_in &mx_array_sc::a_at(int r, int c) const
{
    return c == 0 ? (*a_in[(size_t)r])->read() : a_q[(size_t)(r * C_ + c)]->read();
}

const block_in &mx_array_sc::b_at(int r, int c) const
{
    return r == 0 ? (*b_in[(size_t)c])->read() : b_q[(size_t)(r * C_ + c)]->read();
}

void mx_array_sc::hop()
{
    for (int r = 0; r < R_; r++)
        for (int c = 0; c < C_; c++) {
            if (c > 0)
                a_q[(size_t)(r * C_ + c)]->write(rst.read() ? block_in() : a_at(r, c - 1));
            if (r > 0)
                b_q[(size_t)(r * C_ + c)]->write(b_at(r - 1, c));
        }
}

void mx_array_sc::route()
{
    for (int r = 0; r < R_; r++)
        for (int c = 0; c < C_; c++) {
            const block_in &a = a_at(r, c), &b = b_at(r, c);
            block_in in = a;       // valid, first, sa, a[] from the row's stream
            in.acc = true;         // the array always accumulates
            in.sb = b.sb;          // sb, b[] from the column's stream
            std::copy(b.b, b.b + KMAX, in.b);
            pe_in[(size_t)(r * C_ + c)]->write(in);
        }
}

}  // namespace mxhw
