// The Verilator test bench of the RTL PEs (hw/rtl/mx_pe.v through mx_pe_bank.v, k = 32):
//   pe_bench_vl FILE
// runs every vector of FILE through the PE of its format, in block mode and in accumulate
// mode (hw/bench/pe_bench.h), and prints "N of N vectors match". Exit 0, 1 on a mismatch,
// 2 on a bad file.
#include <cstdio>
#include <cstring>

#include "Vmx_pe_bank.h"
#include "verilated.h"
#include "vl_clock.h"

#include "pe_bench.h"

namespace {

class VerilatorDut : public pe_bench::Dut {
public:
    explicit VerilatorDut(VerilatedContext *ctx) : m_(new Vmx_pe_bank(ctx))
    {
        m_->in_valid = 0;
        vl_reset(m_);
    }
    ~VerilatorDut() override
    {
        m_->final();
        delete m_;
    }
    int latency() const override { return 3; }
    bool clock(const mx_hwvec_t *in, bool acc, bool first, int *fmt, uint32_t *out) override
    {
        m_->in_valid = in != nullptr;
        m_->in_acc = acc;
        m_->in_first = first;
        for (int w = 0; w < pe_bench::KMAX * 8 / 32; w++) {
            m_->in_a[w] = 0;
            m_->in_b[w] = 0;
        }
        if (in) {
            m_->in_fmt = (uint8_t)hw_format_index(in->format);
            m_->in_sa = in->sa;
            m_->in_sb = in->sb;
            for (int i = 0; i < in->k; i++) {   // lanes beyond k keep code 0
                m_->in_a[i / 4] |= (uint32_t)in->a[i] << (8 * (i % 4));
                m_->in_b[i / 4] |= (uint32_t)in->b[i] << (8 * (i % 4));
            }
        }
        vl_tick(m_);
        for (int f = 0; f < MX_HWVEC_NFORMATS; f++)
            if ((m_->out_valid >> f) & 1) {
                *fmt = f;
                *out = m_->out_result[f];
                return true;
            }
        return false;
    }

    uint32_t add(uint32_t a, uint32_t b) override
    {
        m_->add_a = a;
        m_->add_b = b;
        m_->eval();
        return m_->add_y;
    }

private:
    Vmx_pe_bank *m_;
};

}  // namespace

int main(int argc, char **argv)
{
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s VECTORS\n", argv[0]);
        return 2;
    }
    std::vector<mx_hwvec_t> v = pe_bench::load(argv[1]);
    VerilatedContext ctx;
    VerilatorDut dut(&ctx);
    return pe_bench::run("verilator", dut, v);
}
