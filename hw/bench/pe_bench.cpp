// pe_bench: the passes both PE test benches run (pe_bench.h).
#include "pe_bench.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {
#include "mx/mx_dot.h"
#include "util/rng.h"
}

namespace pe_bench {

std::vector<mx_hwvec_t> load(const char *path)
{
    mx_hwvec_t *v = nullptr;
    size_t n = 0;
    err_t e = ERR_INIT;
    if (mx_hwvec_load(path, &v, &n, &e)) {
        std::fprintf(stderr, "%s\n", e.msg);
        std::exit(2);
    }
    std::vector<mx_hwvec_t> out(v, v + n);
    std::free(v);
    return out;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Drives all vectors one per clock; results[i] receives vector i's output (and whether
// it came, in order, exactly latency clocks later).
static bool drive(Dut &dut, const std::vector<mx_hwvec_t> &v, bool acc,
                  const std::vector<bool> &first, std::vector<uint32_t> &results,
                  long *late)
{
    size_t n = v.size(), got = 0;
    results.assign(n, 0);
    *late = 0;
    std::vector<long> sent(n, 0);
    long L = dut.latency();
    for (long t = 0; got < n && t < (long)n + L + 8; t++) {
        const mx_hwvec_t *in = t < (long)n ? &v[(size_t)t] : nullptr;
        int fmt;
        uint32_t out;
        if (dut.clock(in, acc, in && acc ? first[(size_t)t] : false, &fmt, &out)) {
            if (got < n) {
                results[got] = out;
                // clock t presents inputs in cycle t and reads what the edge ending it
                // registered, which cycle t + 1 sees: latency L means t - got == L - 1
                if (fmt != hw_format_index(v[got].format) || t - (long)got != L - 1)
                    (*late)++;
            }
            got++;
        }
    }
    return got == n;
}

static void show(const char *name, const char *what, size_t i, const mx_hwvec_t &v,
                 uint32_t want, uint32_t got)
{
    char line[MX_HWVEC_LINE_MAX];
    if (mx_hwvec_format_line(&v, line, sizeof line) < 0)
        line[0] = 0;
    std::printf("%s: %s %zu: expected %08x, got %08x  (%s)\n", name, what, i + 1, want, got,
                line);
}

// Operand i of the adder pass: a mix of the cases a binary32 adder gets wrong.
static void add_operands(long i, uint32_t *a, uint32_t *b)
{
    uint32_t u[4];
    for (int j = 0; j < 4; j++)
        u[j] = rng_u32(19, 0, (uint64_t)i * 4 + (uint64_t)j);
    *a = u[0];
    switch (u[2] % 8) {
    case 0: *b = u[1]; break;                                               // any bits
    case 1: *b = (u[1] & 0x807fffffu) | (*a & 0x7f800000u); break;          // same exponent
    case 2: *b = (*a ^ 0x80000000u) + (u[1] % 5) - 2; break;                // near cancellation
    case 3: *a &= 0x807fffffu; *b = u[1] & 0x80ffffffu; break;              // subnormals
    case 4: *b = (u[1] & 0x807fffffu) | (((*a >> 23 & 0xff) + u[3] % 60 - 30) & 0xff) << 23; break;
    case 5: *b = (u[1] & 0x80000000u) | 0x7f7fffffu; *a = (*a & 0x807fffffu) | 0x7f000000u; break;
    case 6: {                                                               // specials
        static const uint32_t sp[] = {0, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                                      0xffc00001u, 1, 0x80000001u, 0x7f7fffffu, 0x00800000u};
        *a = u[3] % 2 ? sp[u[1] % 10] : *a;
        *b = sp[(u[1] >> 8) % 10];
        break;
    }
    default: *b = *a + (u[1] % 64) - 32; break;                            // the same, nearly
    }
}

int run(const char *name, Dut &dut, const std::vector<mx_hwvec_t> &v)
{
    const int SHOW = 5;
    size_t n = v.size();
    std::vector<bool> first(n, false);
    std::vector<uint32_t> res;
    long late = 0;

    // block mode
    bool all = drive(dut, v, false, first, res, &late);
    size_t match = 0;
    int shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i] == v[i].expected)
            match++;
        else if (shown++ < SHOW)
            show(name, "vector", i, v[i], v[i].expected, res[i]);
    }
    std::printf("%s: %zu of %zu vectors match\n", name, match, n);
    if (!all || late)
        std::printf("%s: %ld results did not arrive %d clocks after their inputs\n", name,
                    late + (long)(all ? 0 : 1), dut.latency());

    // accumulate mode: chains of CHAIN blocks per format, in file order
    std::vector<uint32_t> want(n);
    int count[MX_HWVEC_NFORMATS] = {0};
    float acc[MX_HWVEC_NFORMATS] = {0};
    for (size_t i = 0; i < n; i++) {
        int f = hw_format_index(v[i].format);
        first[i] = count[f]++ % CHAIN == 0;
        float r = float_of(v[i].expected);
        acc[f] = first[i] ? r : mx_block_accumulate(acc[f], r);
        want[i] = bits_of(acc[f]);
    }
    long late2 = 0;
    bool all2 = drive(dut, v, true, first, res, &late2);
    size_t match2 = 0;
    shown = 0;
    for (size_t i = 0; i < n; i++) {
        if (res[i] == want[i])
            match2++;
        else if (shown++ < SHOW)
            show(name, "running sum after vector", i, v[i], want[i], res[i]);
    }
    std::printf("%s: accumulate: %zu of %zu running sums match (chains of %d blocks)\n", name,
                match2, n, CHAIN);
    if (!all2 || late2)
        std::printf("%s: accumulate: %ld results did not arrive %d clocks after their inputs\n",
                    name, late2 + (long)(all2 ? 0 : 1), dut.latency());
    // the adder alone
    long match3 = 0, shown3 = 0;
    for (long i = 0; i < ADD_PAIRS; i++) {
        uint32_t a, b;
        add_operands(i, &a, &b);
        uint32_t want3 = bits_of(mx_block_accumulate(float_of(a), float_of(b))),
                 got3 = dut.add(a, b);
        if (got3 == want3)
            match3++;
        else if (shown3++ < SHOW)
            std::printf("%s: adder: %08x + %08x: expected %08x, got %08x\n", name, a, b, want3,
                        got3);
    }
    std::printf("%s: adder: %ld of %ld sums match\n", name, match3, ADD_PAIRS);
    return match == n && match2 == n && match3 == ADD_PAIRS && all && all2 && !late && !late2
               ? 0
               : 1;
}

}  // namespace pe_bench
