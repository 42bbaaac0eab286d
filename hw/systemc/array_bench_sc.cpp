// The SystemC test bench of the PE array on a GEMM case (docs/hardware.md, "GEMM cases"):
//   array_bench_sc CASE R C [BUFFER_BYTES]
// runs y = a·bᵀ of CASE (written by `mxrlhf hw gemm` from a real layer under a policy's
// formats) on an R x C mx_array_sc in the case's formats (hw/bench/array_bench.h: the
// schedule, the checks, cycles and bytes). Exit 0, 1 on a mismatch, 2 on a bad case.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "array_bench.h"
#include "mx_array_sc.h"
#include "sc_clock.h"

namespace {

class SystemcArray : public array_bench::Dut {
public:
    SystemcArray(int R, int C, int fa, int fb, int k)
        : R_(R), C_(C), clk_("clk"), rst_("rst"), arr_("array", R, C, fa, fb, k)
    {
        arr_.clk(clk_);
        arr_.rst(rst_);
        for (int r = 0; r < R; r++) {
            a_.emplace_back(new sc_core::sc_signal<mxhw::block_in>(("a" + std::to_string(r)).c_str()));
            (*arr_.a_in[(size_t)r])(*a_.back());
        }
        for (int c = 0; c < C; c++) {
            b_.emplace_back(new sc_core::sc_signal<mxhw::block_in>(("b" + std::to_string(c)).c_str()));
            (*arr_.b_in[(size_t)c])(*b_.back());
        }
        for (int i = 0; i < R * C; i++) {
            v_.emplace_back(new sc_core::sc_signal<bool>(("v" + std::to_string(i)).c_str()));
            y_.emplace_back(new sc_core::sc_signal<uint32_t>(("y" + std::to_string(i)).c_str()));
            (*arr_.out_valid[(size_t)i])(*v_.back());
            (*arr_.out_result[(size_t)i])(*y_.back());
        }
        rst_.write(true);
        tick();
        tick();
        rst_.write(false);
    }
    int latency() const override { return mxhw::mx_pe_sc::LATENCY; }
    void clock(const std::vector<array_bench::edge> &a, const std::vector<array_bench::edge> &b,
               std::vector<bool> &valid, std::vector<uint32_t> &y) override
    {
        for (int r = 0; r < R_; r++) {
            mxhw::block_in in;
            in.valid = a[(size_t)r].valid;
            in.first = a[(size_t)r].first;
            in.sa = a[(size_t)r].scale;
            std::copy(a[(size_t)r].codes, a[(size_t)r].codes + mxhw::KMAX, in.a);
            a_[(size_t)r]->write(in);
        }
        for (int c = 0; c < C_; c++) {
            mxhw::block_in in;
            in.sb = b[(size_t)c].scale;
            std::copy(b[(size_t)c].codes, b[(size_t)c].codes + mxhw::KMAX, in.b);
            b_[(size_t)c]->write(in);
        }
        tick();
        for (int i = 0; i < R_ * C_; i++) {
            valid[(size_t)i] = v_[(size_t)i]->read();
            y[(size_t)i] = y_[(size_t)i]->read();
        }
    }

private:
    void tick() { sc_cycle(clk_); }
    int R_, C_;
    sc_core::sc_signal<bool> clk_, rst_;
    mxhw::mx_array_sc arr_;
    std::vector<std::unique_ptr<sc_core::sc_signal<mxhw::block_in>>> a_, b_;
    std::vector<std::unique_ptr<sc_core::sc_signal<bool>>> v_;
    std::vector<std::unique_ptr<sc_core::sc_signal<uint32_t>>> y_;
};

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
    mx_hwgemm_t g = array_bench::load(argv[1]);
    SystemcArray dut(R, C, hw_format_index(g.fa), hw_format_index(g.fb), g.k);
    int rc = array_bench::run("array", argv[1], g, R, C, buffer, dut);
    mx_hwgemm_free(&g);
    return rc;
}
