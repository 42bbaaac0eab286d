/* libFuzzer target: the PE test files (mx/mx_hwvec.h) on arbitrary bytes, read both as a
 * vector file and as a GEMM case. A vector that parses must write back to a line that
 * parses to the same vector, and its operands must be ones the reference accepts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx_hwvec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mx_hwvec_t *v;
    size_t n;
    err_t e = ERR_INIT;
    if (mx_hwvec_parse((const char *)data, size, "fuzz.vec", &v, &n, &e) == ERR_OK) {
        for (size_t i = 0; i < n; i++) {
            char line[MX_HWVEC_LINE_MAX];
            int len = mx_hwvec_format_line(&v[i], line, sizeof line);
            if (len < 0)
                abort();
            mx_hwvec_t w;
            bool got;
            if (mx_hwvec_parse_line(line, (size_t)len, "re", 1, &w, &got, &e) || !got ||
                memcmp(&w, &v[i], sizeof w))
                abort();
            if (mx_hwvec_compute(&w, &e))
                abort();
        }
        free(v);
    }
    mx_hwgemm_t g;
    err_clear(&e);
    if (mx_hwgemm_parse((const char *)data, size, "fuzz.gemm", &g, &e) == ERR_OK) {
        size_t ok;
        long bad;
        if (mx_hwgemm_check(&g, &ok, &bad, &e))
            abort();
        mx_hwgemm_free(&g);
    }
    return 0;
}
