/* mxrlhf generate: samples a continuation of a prompt with the KV cache (temperature,
 * top-k, top-p; Philox random numbers keyed by seed and step), optionally under a
 * precision plan. Prints one JSON object. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "model/qwen2.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

/* The sampling flags, declared once: their ranges, defaults and help come from this table
 * (util/opts), so --top-p 2 or --max-new-tokens 1e9 are refused stating the range. */
typedef struct gen_opts {
    int max_new_tokens;
    double temperature;
    int top_k;
    double top_p;
    uint64_t seed;
} gen_opts_t;

#define G(f) offsetof(gen_opts_t, f)
static const opt_field_t gen_fields[] = {
    OPT_KEY("max_new_tokens", OPT_INT, G(max_new_tokens), "32", 1, 1 << 20,
            "most new tokens (and at most the model's positions less the prompt's)",
            .flag = "max-new-tokens"),
    OPT_KEY("temperature", OPT_DOUBLE, G(temperature), "1", 0, 1e6,
            "sampling temperature; 0 = greedy", .flag = "temperature"),
    OPT_KEY("top_k", OPT_INT, G(top_k), "0", 0, 1 << 30, "keep the K most likely tokens; 0 = off",
            .flag = "top-k"),
    OPT_KEY("top_p", OPT_DOUBLE, G(top_p), "1", 1e-9, 1, "nucleus sampling mass; 1 = off",
            .flag = "top-p"),
    OPT_KEY("seed", OPT_U64, G(seed), "0", 0, 0, "random seed", .flag = "seed"),
};
#undef G
static const opt_table_t gen_opts_table = OPT_TABLE("generate", gen_opts_t, gen_fields, NULL);

int cmd_generate(int argc, char **argv)
{
    const char *model = NULL, *ids_text = NULL, *prompt = NULL, *stop_text = NULL, *policy = NULL,
               *plan = NULL;
    const char *phase_s = "rollout", *role_s = "policy", *backend = "cpu";
    bool no_stop = false;
    args_mirror_t mi = {0};
    arg_opt_t opts[24] = {
        {"model", ARG_STRING, &model, "DIR", "Hugging Face model directory"},
        {"ids", ARG_STRING, &ids_text, "LIST", "prompt token ids, comma-separated"},
        {"prompt", ARG_STRING, &prompt, "TEXT", "prompt text, encoded with DIR/tokenizer.json"},
        {"stop", ARG_STRING, &stop_text, "LIST", "stop ids (default: eos_token_id of config.json)"},
        {"no-stop", ARG_FLAG, &no_stop, NULL, "ignore stop ids: always max-new-tokens"},
        {"policy", ARG_STRING, &policy, "FILE", "policies.json with precision plans"},
        {"plan", ARG_STRING, &plan, "NAME", "the plan to sample under (with --policy)"},
        {"phase", ARG_STRING, &phase_s, "P", "rollout, reward or gradient (default rollout)"},
        {"role", ARG_STRING, &role_s, "R", "policy, reference, reward or value (default policy)"},
        {"device", ARG_STRING, &backend, "D", "cpu, cuda or cuda:N (default cpu)"},
        {"backend", ARG_STRING, &backend, "D", "deprecated: use --device"},
    };
    int nopts = 11;
    args_mirror_add(&mi, &gen_opts_table, opts, &nopts, 24);
    arg_spec_t spec = {"generate", "Sample a continuation of a prompt of token ids.",
                       "--model DIR (--ids 1,2,3 | --prompt TEXT) [--max-new-tokens N --temperature T "
                       "--top-k K --top-p P --seed S] [--device cpu|cuda]",
                       "Prints {\"prompt\": [...], \"ids\": [new ids], \"stopped\": true when a "
                       "stop id ended it}, with --prompt also \"text\" (the new ids decoded, special "
                       "tokens left out). The same seed gives the same ids on any thread count.",
                       opts, nopts, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    int32_t *ids = NULL, *stop = NULL, *out = NULL;
    int n = 0, nstop = 0, out_len = 0;
    backend_t *be = NULL;
    qwen2_model_t *m = NULL;
    prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    prec_model_t role;
    tok_t *tok = NULL;
    char *decoded = NULL;
    gen_opts_t go;
    opts_default(&gen_opts_table, &go);
    if (rc || args_require(model, "model", &e) ||
        args_mirror_apply(&mi, &gen_opts_table, &go, NULL, &e))
        goto out;
    ctx.seed = go.seed;
    if (!ids_text == !prompt) {
        err_set(&e, ERR_INPUT, "give either --ids or --prompt");
        goto out;
    }
    if (prompt) {
        char *tpath = fs_join(model, "tokenizer.json");
        tok_ids_t ti = {0};
        if (!tpath || !fs_exists(tpath)) {
            err_set(&e, ERR_INPUT, "%s/tokenizer.json: no tokenizer here (--prompt needs one; "
                    "pass --ids)", model);
            free(tpath);
            goto out;
        }
        rc = tok_load(tpath, &tok, &e);
        free(tpath);
        if (rc || tok_encode(tok, NULL, prompt, strlen(prompt), &ti, &e)) {
            tok_ids_free(&ti);
            goto out;
        }
        ids = ti.ids;
        n = (int)ti.n;
        if (n < 1) {
            err_set(&e, ERR_INPUT, "--prompt: the text encodes to no tokens");
            goto out;
        }
    } else if (args_parse_ids(ids_text, "ids", &ids, &n, &e)) {
        goto out;
    }
    if (stop_text && args_parse_ids(stop_text, "stop", &stop, &nstop, &e))
        goto out;
    if (prec_phase_from_name(phase_s, &ctx.phase)) {
        err_set(&e, ERR_INPUT, "--phase: expected rollout, reward or gradient, got \"%s\"", phase_s);
        goto out;
    }
    if (prec_model_from_name(role_s, &role)) {
        err_set(&e, ERR_INPUT, "--role: expected policy, reference, reward or value, got \"%s\"", role_s);
        goto out;
    }
    if ((policy || plan) && (args_require(policy, "policy", &e) || args_require(plan, "plan", &e)))
        goto out;
    /* the model's positions bound prompt + new tokens (more would run for minutes past
     * what the model was built for) */
    char *cpath = fs_join(model, "config.json");
    qwen2_config_t mc;
    rc = cpath ? qwen2_config_load(cpath, &mc, &e) : err_set(&e, ERR_NOMEM, "out of memory");
    if (!rc && mc.max_pos > 0 && (long long)n + go.max_new_tokens > mc.max_pos) {
        if (n >= mc.max_pos)
            err_set(&e, ERR_INPUT, "the prompt's %d tokens fill the model's %d positions "
                    "(max_position_embeddings in %s): no room for a new token", n, mc.max_pos,
                    cpath);
        else
            err_set(&e, ERR_INPUT, "--max-new-tokens %d: the prompt's %d tokens and %d new ones "
                    "exceed the model's %d positions (max_position_embeddings in %s): at most %d",
                    go.max_new_tokens, n, go.max_new_tokens, mc.max_pos, cpath, mc.max_pos - n);
    }
    free(cpath);
    if (e.code || be_open(backend, &be, &e))
        goto out;
    const int max_new = go.max_new_tokens;
    int total = n + max_new;
    qwen2_opts_t mo = {.max_batch = 1, .max_seq = n, .heads = QWEN2_HEAD_LM, .kv_batch = 1,
                       .kv_len = total, .role = role};
    if (qwen2_open_dir(model, be, &mo, &m, &e))
        goto out;
    if (policy && qwen2_load_plan(m, policy, plan, NULL, &e))
        goto out;
    const qwen2_config_t *c = qwen2_config(m);
    qwen2_gen_t g = {max_new, go.temperature, go.top_k, go.top_p, go.seed, 0,
                     stop ? stop : c->eos_ids, stop ? nstop : c->n_eos};
    if (no_stop)
        g.nstop = 0;
    out = malloc((size_t)max_new * sizeof *out);
    if (!out) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto out;
    }
    const int32_t *prompts[1] = {ids};
    if (qwen2_generate(m, &ctx, 1, prompts, &n, &g, out, &out_len, &e))
        goto out;
    printf("{\"prompt\": [");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("], \"ids\": [");
    for (int i = 0; i < out_len; i++)
        printf("%s%d", i ? ", " : "", out[i]);
    bool stopped = false;
    for (int i = 0; out_len && i < g.nstop; i++)
        stopped |= out[out_len - 1] == g.stop[i];
    printf("], \"stopped\": %s", stopped ? "true" : "false");
    if (tok) {
        size_t dl;
        if (tok_decode(tok, out, (size_t)out_len, true, &decoded, &dl, &e)) {
            printf("}\n");
            goto out;
        }
        cJSON *js = cJSON_CreateString(decoded);
        char *q = js ? cJSON_PrintUnformatted(js) : NULL;
        printf(", \"text\": %s", q ? q : "null");
        free(q);
        cJSON_Delete(js);
    }
    printf("}\n");
out:
    qwen2_free(m);
    be_close(be);
    tok_free(tok);
    free(decoded);
    free(ids);
    free(stop);
    free(out);
    return cli_report("generate", &e);
}
