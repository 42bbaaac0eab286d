// pe_random: random PE vectors with edge cases for `make hw-test`, without building the
// whole mxrlhf command:
//   pe_random FILE COUNT SEED
// writes COUNT vectors for each of the six formats and k = 8, 16, 32 through the library's
// mx_hwvec_random_set, the same call `mxrlhf hw vectors --source random` makes, so both
// write the same vectors for the same seed and count.
#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" {
#include "mx/mx_hwvec.h"
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s FILE COUNT SEED\n", argv[0]);
        return 2;
    }
    long count = std::atol(argv[2]);
    unsigned long long seed = std::strtoull(argv[3], nullptr, 10);
    if (count < 1 || count > 1000000) {
        std::fprintf(stderr, "pe_random: COUNT %s (expected 1..1000000)\n", argv[2]);
        return 2;
    }
    const int ks[3] = {8, 16, 32};
    std::vector<mx_hwvec_t> v((size_t)count * MX_HWVEC_NFORMATS * 3);
    err_t e = ERR_INIT;
    char header[256];
    std::snprintf(header, sizeof header, "random PE vectors: %ld per format and k, seed %llu "
                  "(hw/bench/pe_random, mx_hwvec_random_set)", count, seed);
    if (mx_hwvec_random_set(mx_hwvec_formats, MX_HWVEC_NFORMATS, ks, 3, (size_t)count, seed,
                            v.data(), &e) ||
        mx_hwvec_write(argv[1], header, v.data(), v.size(), &e)) {
        std::fprintf(stderr, "pe_random: %s\n", e.msg);
        return 1;
    }
    return 0;
}
