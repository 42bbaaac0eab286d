// mx_pe_sc: the SystemC PE (mx_pe_sc.h).
#include "mx_pe_sc.h"

#include <cstring>

namespace mxhw {

namespace pe_dp {

namespace {

typedef unsigned __int128 u128;

// The element formats from their definitions (OCP MX v1.0): bits, exponent bits,
// mantissa bits, bias; int8 is two's complement with 6 fraction bits.
struct fmt_def {
    int bits, ebits, mbits, bias;
    bool is_int;
};
const fmt_def FMT[6] = {
    {8, 4, 3, 7, false},  // mxfp8_e4m3
    {8, 5, 2, 15, false}, // mxfp8_e5m2
    {6, 3, 2, 3, false},  // mxfp6_e3m2
    {6, 2, 3, 1, false},  // mxfp6_e2m3
    {4, 2, 1, 1, false},  // mxfp4_e2m1
    {8, 0, 6, 0, true},   // mxint8
};

int top_bit(u128 v)
{
    int h = 127;
    while (h > 0 && !((v >> h) & 1))
        h--;
    return h;
}

}  // namespace

int unit_exp(int fmt)
{
    const fmt_def &d = FMT[fmt];
    return d.is_int ? -d.mbits : 1 - d.bias - d.mbits;   // emin - m
}

int64_t decode(int fmt, uint8_t code)
{
    const fmt_def &d = FMT[fmt];
    if (d.is_int)
        return (int8_t)code;
    int sign = (code >> (d.bits - 1)) & 1;
    int e = (code >> d.mbits) & ((1 << d.ebits) - 1), m = code & ((1 << d.mbits) - 1);
    int64_t sig = e ? (1 << d.mbits) | m : m;   // hidden bit
    int64_t mag = sig << (e ? e - 1 : 0);
    return sign ? -mag : mag;
}

__int128 exact_sum(int fa, int fb, int k, const uint8_t *a, const uint8_t *b)
{
    __int128 S = 0;
    for (int i = 0; i < k; i++)
        S += (__int128)decode(fa, a[i]) * decode(fb, b[i]);
    return S;
}

uint32_t round32(__int128 S, int x)
{
    if (S == 0)
        return 0;   // exact zero: +0
    uint32_t sign = S < 0 ? 0x80000000u : 0;
    u128 mag = S < 0 ? (u128)0 - (u128)S : (u128)S;
    int h = top_bit(mag);
    int ebase = h + x + 126;                     // biased exponent of the top bit, minus 1
    int rp = ebase > 0 ? h - 23 : -149 - x;      // weight of the result's last bit (units)
    u128 q;
    if (rp <= 0) {
        q = mag << -rp;                          // exact: fewer than 24 bits
    } else {
        q = rp >= 128 ? 0 : mag >> rp;
        bool guard = rp - 1 < 128 && ((mag >> (rp - 1)) & 1);
        bool sticky = rp - 1 >= 128 ? mag != 0
                                    : rp - 1 > 0 && (mag & (((u128)1 << (rp - 1)) - 1)) != 0;
        if (guard && (sticky || (q & 1)))
            q++;                                 // <= 2^24
    }
    uint64_t bits = ((uint64_t)(ebase > 0 ? ebase : 0) << 23) + (uint64_t)q;
    if (ebase > 254 || bits >= 0x7f800000u)
        return sign | 0x7f800000u;               // overflow
    return sign | (uint32_t)bits;
}

uint32_t block(int fa, int fb, int k, uint8_t sa, const uint8_t *a, uint8_t sb, const uint8_t *b)
{
    return round32(exact_sum(fa, fb, k, a, b), unit_exp(fa) + unit_exp(fb) + sa + sb - 254);
}

uint32_t add(uint32_t a, uint32_t b)
{
    const uint32_t QNAN = 0x7fc00000u;
    uint32_t ea = (a >> 23) & 0xff, eb = (b >> 23) & 0xff;
    if ((ea == 0xff && (a & 0x7fffff)) || (eb == 0xff && (b & 0x7fffff)))
        return QNAN;
    if (ea == 0xff && eb == 0xff)
        return (a >> 31) == (b >> 31) ? a : QNAN;
    if (ea == 0xff)
        return a;
    if (eb == 0xff)
        return b;
    // |x| >= |z|
    uint32_t x, z;
    if ((b & 0x7fffffff) > (a & 0x7fffffff)) {
        x = b;
        z = a;
    } else {
        x = a;
        z = b;
    }
    uint32_t sx = x >> 31, sz = z >> 31;
    int ex = (x >> 23) & 0xff, ez = (z >> 23) & 0xff;
    uint32_t mx = (x & 0x7fffff) | (ex ? 0x800000u : 0), mz = (z & 0x7fffff) | (ez ? 0x800000u : 0);
    ex = ex ? ex : 1;
    ez = ez ? ez : 1;
    int d = ex - ez;
    uint32_t ax = mx << 3, az;                   // 3 extra bits: guard, round, sticky
    if (d >= 27) {
        az = mz != 0;
    } else {
        az = (mz << 3) >> d;
        az |= ((mz << 3) & ((1u << d) - 1)) != 0;
    }
    int e = ex;
    uint32_t s;
    if (sx == sz) {
        s = ax + az;
        if (s >> 27) {
            s = (s >> 1) | (s & 1);
            e++;
        }
    } else {
        s = ax - az;
        if (s == 0)
            return 0;                            // exact cancellation: +0
        int lz = 0;
        while (lz < 27 && !((s >> (26 - lz)) & 1))
            lz++;
        int n = lz < e - 1 ? lz : e - 1;         // not below the subnormal exponent
        s <<= n;
        e -= n;
    }
    uint32_t rnd = ((s >> 2) & 1) && ((s & 3) || ((s >> 3) & 1));
    uint32_t sig = (s >> 3) + rnd;
    int ef;
    if (sig >> 24) {
        ef = e + 1;
        sig >>= 1;
    } else if (sig >> 23) {
        ef = e;
    } else {
        ef = 0;                                  // subnormal
    }
    if (ef >= 255)
        return sx << 31 | 0x7f800000u;
    return sx << 31 | (uint32_t)ef << 23 | (sig & 0x7fffff);
}

}  // namespace pe_dp

bool block_in::operator==(const block_in &o) const
{
    return valid == o.valid && acc == o.acc && first == o.first && sa == o.sa && sb == o.sb &&
           !std::memcmp(a, o.a, sizeof a) && !std::memcmp(b, o.b, sizeof b);
}

std::ostream &operator<<(std::ostream &os, const block_in &b)
{
    return os << "block_in(valid " << b.valid << ", acc " << b.acc << ", first " << b.first
              << ", sa " << int(b.sa) << ", sb " << int(b.sb) << ")";
}

void sc_trace(sc_core::sc_trace_file *, const block_in &, const std::string &) {}

mx_pe_sc::mx_pe_sc(sc_core::sc_module_name name, int fa, int fb, int k)
    : sc_core::sc_module(name), fa_(fa), fb_(fb), k_(k)
{
    SC_METHOD(tick);
    sensitive << clk.pos();
    dont_initialize();
}

void mx_pe_sc::tick()
{
    if (rst.read()) {
        v1_ = v2_ = false;
        acc_ = 0;
        out_valid.write(false);
        return;
    }
    // stage 3: from the stage-2 registers
    uint32_t result = r2_;
    if (v2_ && acc2_) {
        acc_ = first2_ ? r2_ : pe_dp::add(acc_, r2_);
        result = acc_;
    }
    out_valid.write(v2_);
    out_result.write(result);
    // stage 2: round the exact sum
    v2_ = v1_;
    acc2_ = acc1_;
    first2_ = first1_;
    r2_ = pe_dp::round32(s1_, x1_);
    // stage 1: the exact sum of this clock's inputs
    const block_in &b = in.read();
    v1_ = b.valid;
    acc1_ = b.acc;
    first1_ = b.first;
    s1_ = pe_dp::exact_sum(fa_, fb_, k_, b.a, b.b);
    x1_ = pe_dp::unit_exp(fa_) + pe_dp::unit_exp(fb_) + b.sa + b.sb - 254;
}

}  // namespace mxhw
