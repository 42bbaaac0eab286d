/* libFuzzer target: the safetensors reader (st_parse) on arbitrary bytes. A header that
 * lies must be refused with an error, never read out of bounds; every tensor a parse
 * accepts must convert within its stated size. Corpus: fuzz/corpus/safetensors/. */
#include <stdint.h>
#include <stdlib.h>

#include "util/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file_t f;
    err_t e = ERR_INIT;
    if (st_parse(&f, data, size, "fuzz.safetensors", &e) != ERR_OK)
        return 0;
    float buf[4096];
    for (int i = 0; i < f.ntensors; i++) {
        const st_tensor_t *t = &f.tensors[i];
        if (t->nelem <= 4096) {
            err_clear(&e);
            st_to_f32(&f, t, buf, &e);
        }
        if (st_find(&f, t->name) == NULL)
            abort(); /* every listed tensor must be found by its name */
    }
    (void)st_metadata(&f, "format");
    st_close(&f);
    return 0;
}
