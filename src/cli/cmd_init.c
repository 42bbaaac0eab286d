/* mxrlhf init: a Hugging Face model directory with deterministic random weights
 * (qwen2_init_philox) for a given config.json, optionally with a tokenizer.json copied in.
 * For machines without the real checkpoint (the GPU machine has no network): a
 * Qwen2.5-0.5B-shaped policy and reward model to run the study's PPO baseline on, where
 * the weights only have to have the right shapes and sizes. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "model/qwen2.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/fs.h"

/* transformers' initializer_range (std 0.02) as the half-width of a uniform: 0.02 * sqrt(3) */
#define INIT_RANGE_STD002 0.0346410162

int cmd_init(int argc, char **argv)
{
    const char *config = NULL, *output = NULL, *tokenizer = NULL, *dtype_s = "bf16";
    uint64_t seed = 0;
    double range = INIT_RANGE_STD002;
    bool score_head = false;
    arg_opt_t opts[] = {
        {"config", ARG_STRING, &config, "FILE", "config.json of the model (Qwen2)"},
        {"output", ARG_STRING, &output, "DIR", "directory to write (config.json, model.safetensors)"},
        {"seed", ARG_U64, &seed, "S", "Philox seed of the weights (default 0)"},
        {"range", ARG_DOUBLE, &range, "R", "weights uniform in [-R, R) (default 0.0346: std 0.02)"},
        {"score-head", ARG_FLAG, &score_head, NULL,
         "a reward model (Qwen2ForSequenceClassification, score.weight) instead of a causal LM"},
        {"dtype", ARG_STRING, &dtype_s, "T", "bf16 (default), f16 or f32"},
        {"tokenizer", ARG_STRING, &tokenizer, "FILE", "tokenizer.json to copy into DIR (checked first)"},
    };
    arg_spec_t spec = {"init", "Write a model directory with deterministic random weights.",
                       "--config FILE --output DIR [--seed S] [--score-head] [--tokenizer FILE]",
                       "Every tensor NAME gets qwen2_init_philox's values (docs/engine.md): element "
                       "i is t * R with t = 2u - 1 in [-1, 1), u from Philox (seed, stream of NAME, "
                       "i); norm weights are 1 + 0.1 t. The same seed gives the same bits on any "
                       "machine. Heads: lm_head (tied or not, as config.json says), or with "
                       "--score-head the reward model's score.weight instead. Quality is "
                       "meaningless: this is for measuring time and energy at a model's real size.",
                       opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    backend_t *be = NULL;
    qwen2_model_t *m = NULL;
    tok_t *tok = NULL;
    char *tok_text = NULL, *tok_dst = NULL;
    size_t tok_len = 0;
    st_dtype_t dtype = ST_BF16;
    qwen2_config_t cfg;
    if (rc || args_require(config, "config", &e) || args_require(output, "output", &e))
        goto out;
    if (!strcmp(dtype_s, "f32"))
        dtype = ST_F32;
    else if (!strcmp(dtype_s, "f16"))
        dtype = ST_F16;
    else if (strcmp(dtype_s, "bf16")) {
        err_set(&e, ERR_INPUT, "--dtype: expected bf16, f16 or f32, got \"%s\"", dtype_s);
        goto out;
    }
    if (!(range > 0 && range <= 1)) {
        err_set(&e, ERR_INPUT, "--range: expected a number in (0, 1], got %g", range);
        goto out;
    }
    if (qwen2_config_load(config, &cfg, &e))
        goto out;
    /* the tokenizer is checked before the (slow) weights are made */
    if (tokenizer) {
        if (tok_load(tokenizer, &tok, &e) ||
            fs_read_all(tokenizer, (size_t)1 << 30, &tok_text, &tok_len, &e))
            goto out;
        if (tok_vocab_size(tok) > cfg.vocab) {
            err_set(&e, ERR_INPUT, "%s: %d token ids, more than the model's vocab_size %d in %s",
                    tokenizer, tok_vocab_size(tok), cfg.vocab, config);
            goto out;
        }
    }
    qwen2_opts_t mo = {.max_batch = 1, .max_seq = 1,
                       .heads = score_head ? QWEN2_HEAD_SCORE : QWEN2_HEAD_LM,
                       .role = score_head ? PREC_MODEL_REWARD : PREC_MODEL_POLICY};
    if (be_open("cpu", &be, &e) || qwen2_new(be, &cfg, &mo, &m, &e) ||
        qwen2_init_philox(m, seed, (float)range, &e) || qwen2_save_dir(m, output, dtype, &e))
        goto out;
    if (tokenizer) {
        if (!(tok_dst = fs_join(output, "tokenizer.json"))) {
            err_set(&e, ERR_NOMEM, "out of memory");
            goto out;
        }
        if (atomic_write(tok_dst, tok_text, tok_len, &e))
            goto out;
    }
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "output", output);
    cJSON_AddStringToObject(sum, "architecture",
                            score_head ? "Qwen2ForSequenceClassification" : "Qwen2ForCausalLM");
    cJSON_AddNumberToObject(sum, "parameters", (double)qwen2_nparams(m));
    cJSON_AddNumberToObject(sum, "seed", (double)seed);
    cJSON_AddNumberToObject(sum, "range", range);
    cJSON_AddStringToObject(sum, "dtype", dtype_s);
    cJSON_AddBoolToObject(sum, "tokenizer", tokenizer != NULL);
    char *line = cJSON_PrintUnformatted(sum);
    if (line)
        printf("%s\n", line);
    free(line);
    cJSON_Delete(sum);
out:
    qwen2_free(m);
    be_close(be);
    tok_free(tok);
    free(tok_text);
    free(tok_dst);
    return cli_report("init", &e);
}
