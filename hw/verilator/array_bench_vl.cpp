// The Verilator test bench of the RTL PE array (hw/rtl/mx_array.v) on a GEMM case:
//   array_bench_vl CASE [BUFFER_BYTES]
// The array's size and formats are Verilog parameters, fixed when it is verilated (hw.mk
// passes them, and the same values as ARR_* defines here); the case must be in those
// formats. The schedule, the checks and the counts are hw/bench/array_bench's, shared with
// the SystemC bench. Exit 0, 1 on a mismatch, 2 on a bad case or a case in other formats.
#include <cstdio>
#include <cstdlib>

#include "Vmx_array.h"
#include "verilated.h"
#include "vl_clock.h"

#include "array_bench.h"

namespace {

// Byte p of a Verilated port, whatever its C++ type.
template <typename T> void put_byte(T &v, int p, uint8_t x)
{
    v = (T)((v & ~((T)0xff << (8 * p))) | ((T)x << (8 * p)));
}
template <std::size_t N> void put_byte(VlWide<N> &v, int p, uint8_t x)
{
    v[p / 4] = (v[p / 4] & ~(0xffu << (8 * (p % 4)))) | ((uint32_t)x << (8 * (p % 4)));
}
template <typename T> void put_bit(T &v, int p, bool x)
{
    v = (T)((v & ~((T)1 << p)) | ((T)x << p));
}
template <typename T> uint32_t get_word(const T &v, int w) { return (uint32_t)(v >> (32 * w)); }
template <std::size_t N> uint32_t get_word(const VlWide<N> &v, int w) { return v[w]; }
template <typename T> bool get_bit(const T &v, int p) { return (v >> p) & 1; }

class VerilatorArray : public array_bench::Dut {
public:
    explicit VerilatorArray(VerilatedContext *ctx) : m_(new Vmx_array(ctx))
    {
        vl_reset(m_);
    }
    ~VerilatorArray() override
    {
        m_->final();
        delete m_;
    }
    int latency() const override { return 3; }
    void clock(const std::vector<array_bench::edge> &a, const std::vector<array_bench::edge> &b,
               std::vector<bool> &valid, std::vector<uint32_t> &y) override
    {
        for (int r = 0; r < ARR_R; r++) {
            const array_bench::edge &e = a[(size_t)r];
            put_bit(m_->a_valid, r, e.valid);
            put_bit(m_->a_first, r, e.first);
            put_byte(m_->a_scale, r, e.scale);
            for (int i = 0; i < ARR_K; i++)
                put_byte(m_->a_codes, r * ARR_K + i, e.codes[i]);
        }
        for (int c = 0; c < ARR_C; c++) {
            const array_bench::edge &e = b[(size_t)c];
            put_byte(m_->b_scale, c, e.scale);
            for (int i = 0; i < ARR_K; i++)
                put_byte(m_->b_codes, c * ARR_K + i, e.codes[i]);
        }
        vl_tick(m_);
        for (int i = 0; i < ARR_R * ARR_C; i++) {
            valid[(size_t)i] = get_bit(m_->out_valid, i);
            y[(size_t)i] = get_word(m_->out_result, i);
        }
    }

private:
    Vmx_array *m_;
};

}  // namespace

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: %s CASE [BUFFER_BYTES]\n", argv[0]);
        return 2;
    }
    mx_hwgemm_t g = array_bench::load(argv[1]);
    if (hw_format_index(g.fa) != ARR_FA || hw_format_index(g.fb) != ARR_FB ||
        g.k != ARR_K) {
        std::fprintf(stderr, "verilator array: %s is %s x %s with k %d; this array was built "
                     "for formats %d x %d with k %d (hw.mk verilates it for the committed "
                     "case)\n", argv[1], mx_format_name(g.fa), mx_format_name(g.fb), g.k,
                     ARR_FA, ARR_FB, ARR_K);
        mx_hwgemm_free(&g);
        return 2;
    }
    VerilatedContext ctx;
    VerilatorArray dut(&ctx);
    int rc = array_bench::run("verilator array", argv[1], g, ARR_R, ARR_C,
                              argc == 3 ? std::atof(argv[2]) : 65536, dut);
    mx_hwgemm_free(&g);
    return rc;
}
