// The SystemC test bench of the PE model (mx_pe_sc.h), k = 32:
//   pe_bench_sc FILE
// runs every vector of FILE through the PE of its format, in block mode and in accumulate
// mode (hw/bench/pe_bench.h), and prints "N of N vectors match". Exit 0, 1 on a mismatch,
// 2 on a bad file. The clock is a signal toggled here: a cycle is inputs written, the clock
// low for 5 ns, high for 5 ns (the PEs act on the rising edge), outputs read.
#include <cstdio>
#include <memory>
#include <string>

#include "mx_pe_sc.h"
#include "pe_bench.h"
#include "sc_clock.h"

namespace {

class SystemcDut : public pe_bench::Dut {
public:
    SystemcDut() : clk_("clk"), rst_("rst")
    {
        for (int f = 0; f < MX_HWVEC_NFORMATS; f++) {
            std::string n = "pe" + std::to_string(f);
            pe_[f].reset(new mxhw::mx_pe_sc(n.c_str(), f, f, mxhw::KMAX));
            pe_[f]->clk(clk_);
            pe_[f]->rst(rst_);
            pe_[f]->in(in_[f]);
            pe_[f]->out_valid(valid_[f]);
            pe_[f]->out_result(result_[f]);
        }
        rst_.write(true);
        tick();
        tick();
        rst_.write(false);
    }
    int latency() const override { return mxhw::mx_pe_sc::LATENCY; }
    bool clock(const mx_hwvec_t *in, bool acc, bool first, int *fmt, uint32_t *out) override
    {
        for (int f = 0; f < MX_HWVEC_NFORMATS; f++)
            in_[f].write(mxhw::block_in());
        if (in) {
            mxhw::block_in b;
            b.valid = true;
            b.acc = acc;
            b.first = first;
            b.sa = in->sa;
            b.sb = in->sb;
            for (int i = 0; i < in->k; i++) {   // lanes beyond k keep code 0
                b.a[i] = in->a[i];
                b.b[i] = in->b[i];
            }
            in_[hw_format_index(in->format)].write(b);
        }
        tick();
        for (int f = 0; f < MX_HWVEC_NFORMATS; f++)
            if (valid_[f].read()) {
                *fmt = f;
                *out = result_[f].read();
                return true;
            }
        return false;
    }

    uint32_t add(uint32_t a, uint32_t b) override { return mxhw::pe_dp::add(a, b); }

private:
    void tick() { sc_cycle(clk_); }
    sc_core::sc_signal<bool> clk_, rst_;
    sc_core::sc_signal<mxhw::block_in> in_[MX_HWVEC_NFORMATS];
    sc_core::sc_signal<bool> valid_[MX_HWVEC_NFORMATS];
    sc_core::sc_signal<uint32_t> result_[MX_HWVEC_NFORMATS];
    std::unique_ptr<mxhw::mx_pe_sc> pe_[MX_HWVEC_NFORMATS];
};

}  // namespace

int sc_main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s VECTORS\n", argv[0]);
        return 2;
    }
    std::vector<mx_hwvec_t> v = pe_bench::load(argv[1]);
    SystemcDut dut;
    return pe_bench::run("systemc", dut, v);
}
