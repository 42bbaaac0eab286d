/* libFuzzer target: the policies.json parser (prec_policies_parse) on arbitrary text, and
 * every plan it accepts resolved against the layer names of a small Qwen2 model and
 * written as audit JSON. Corpus: fuzz/corpus/policies/. */
#include <stdint.h>
#include <stdlib.h>

#include "precision/precision.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const NAMES[] = {
    "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
    "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.gate_proj",    "model.layers.0.mlp.up_proj",
    "model.layers.0.mlp.down_proj",    "model.layers.1.self_attn.q_proj",
    "model.layers.1.mlp.down_proj",    "lm_head",
    "score",                           "v_head.summary"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    prec_policies_t p;
    err_t e = ERR_INIT;
    if (prec_policies_parse((const char *)data, size, "fuzz/policies.json", &p, &e) != ERR_OK)
        return 0;
    for (int i = 0; i < p.nplans; i++)
        for (int m = 0; m < PREC_MODEL_COUNT; m++) {
            prec_table_t t;
            err_t e2 = ERR_INIT;
            if (prec_resolve(&p.plans[i], p.path, (prec_model_t)m, NAMES, 12, &t, &e2) == ERR_OK) {
                cJSON *j = prec_table_to_json(&t);
                if (!j)
                    abort();
                cJSON_Delete(j);
                prec_table_free(&t);
            }
        }
    prec_policies_free(&p);
    return 0;
}
