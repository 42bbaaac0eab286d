/* libFuzzer target: the Qwen2 config.json parser (qwen2_config_parse) on arbitrary text.
 * Anything it accepts must pass qwen2_config_check, have its special ids inside the
 * vocabulary and give a parameter count without overflow. Corpus: fuzz/corpus/config/. */
#include <stdint.h>
#include <stdlib.h>

#include "model/qwen2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qwen2_config_t c;
    err_t e = ERR_INIT;
    if (qwen2_config_parse((const char *)data, size, "fuzz/config.json", &c, &e) != ERR_OK)
        return 0;
    err_t e2 = ERR_INIT;
    if (qwen2_config_check(&c, "fuzz", &e2) != ERR_OK || c.hidden < 1 || c.head_dim < 1 ||
        c.heads % c.kv_heads || c.bos_id >= c.vocab || c.pad_id >= c.vocab)
        abort(); /* an accepted config must be a usable one */
    for (int i = 0; i < c.n_eos; i++)
        if (c.eos_ids[i] < 0 || c.eos_ids[i] >= c.vocab)
            abort(); /* special ids lie inside the vocabulary */
    (void)qwen2_config_nparams(&c);
    return 0;
}
