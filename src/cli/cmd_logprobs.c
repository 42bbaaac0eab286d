/* mxrlhf logprobs: per-token log-probabilities of a token sequence under a model, as
 * transformers computes them (log_softmax of the logits at position t, read at id t+1),
 * optionally under a precision plan. Prints one JSON object. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "model/qwen2.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

/* ids of `text` with DIR/tokenizer.json (as transformers' tokenizer(text): no ids added);
 * caller frees */
static int encode_text(const char *dir, const char *text, int32_t **out, int *n, err_t *e)
{
    char *path = fs_join(dir, "tokenizer.json");
    if (!path)
        return err_set(e, ERR_NOMEM, "out of memory");
    tok_t *t = NULL;
    tok_ids_t ids = {0};
    int rc = fs_exists(path) ? tok_load(path, &t, e)
                             : err_set(e, ERR_INPUT, "%s: no tokenizer here (--text needs one; "
                                       "pass --ids)", path);
    if (!rc)
        rc = tok_encode(t, NULL, text, strlen(text), &ids, e);
    free(path);
    tok_free(t);
    if (rc) {
        tok_ids_free(&ids);
        return rc;
    }
    *out = ids.ids;
    *n = (int)ids.n;
    return ERR_OK;
}

int cmd_logprobs(int argc, char **argv)
{
    const char *model = NULL, *ids_text = NULL, *text = NULL, *policy = NULL, *plan = NULL,
               *audit = NULL;
    const char *phase_s = "rollout", *role_s = "policy", *backend = "cpu";
    arg_opt_t opts[] = {
        {"model", ARG_STRING, &model, "DIR", "Hugging Face model directory (config.json, safetensors)"},
        {"ids", ARG_STRING, &ids_text, "LIST", "token ids, comma-separated: 1,2,3 (at least two)"},
        {"text", ARG_STRING, &text, "TEXT", "text, encoded with DIR/tokenizer.json (instead of --ids)"},
        {"policy", ARG_STRING, &policy, "FILE", "policies.json with precision plans"},
        {"plan", ARG_STRING, &plan, "NAME", "the plan to score under (with --policy)"},
        {"phase", ARG_STRING, &phase_s, "P", "rollout, reward or gradient (default rollout)"},
        {"role", ARG_STRING, &role_s, "R", "policy, reference, reward or value (default policy)"},
        {"audit", ARG_STRING, &audit, "FILE", "write the resolved per-layer precision table here"},
        {"device", ARG_STRING, &backend, "D", "cpu, cuda or cuda:N (default cpu)"},
        {"backend", ARG_STRING, &backend, "D", "deprecated: use --device"},
    };
    arg_spec_t spec = {"logprobs",
                       "Per-token log-probabilities of a token sequence, as transformers computes them.",
                       "--model DIR (--ids 1,2,3,... | --text TEXT) [--policy FILE --plan NAME --phase P] "
                       "[--device cpu|cuda]",
                       "Prints {\"next_token_logprobs\": [log p(id[t+1] | id[0..t]) for each t], "
                       "\"mean_nll\": -mean}; with --text also \"ids\", the encoded text.",
                       opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    int32_t *ids = NULL, *tgt = NULL;
    float *logp = NULL;
    int n = 0;
    backend_t *be = NULL;
    qwen2_model_t *m = NULL;
    prec_ctx_t ctx = {PREC_ROLLOUT, 0, 0};
    prec_model_t role;
    if (rc || args_require(model, "model", &e))
        goto out;
    if (!ids_text == !text) {
        err_set(&e, ERR_INPUT, "give either --ids or --text");
        goto out;
    }
    if (text ? encode_text(model, text, &ids, &n, &e) : args_parse_ids(ids_text, "ids", &ids, &n, &e))
        goto out;
    if (n < 2) {
        err_set(&e, ERR_INPUT, "need at least two tokens (the first has no log-probability)");
        goto out;
    }
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
    if (be_open(backend, &be, &e))
        goto out;
    qwen2_opts_t mo = {.max_batch = 1, .max_seq = n, .heads = QWEN2_HEAD_LM, .role = role};
    if (qwen2_open_dir(model, be, &mo, &m, &e))
        goto out;
    if (policy && qwen2_load_plan(m, policy, plan, audit, &e))
        goto out;
    logp = malloc((size_t)n * sizeof *logp);
    tgt = malloc((size_t)n * sizeof *tgt);
    if (!logp || !tgt) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto out;
    }
    qwen2_batch_t b = {1, n, ids, NULL, NULL};
    qwen2_next_token_targets(&b, tgt);
    if (qwen2_forward(m, &ctx, &b, QWEN2_FWD_LOGITS, &e) ||
        qwen2_token_logprobs(m, tgt, logp, NULL, &e))
        goto out;
    double sum = 0;
    printf("{\"next_token_logprobs\": [");
    for (int t = 0; t + 1 < n; t++) {
        printf("%s%.9g", t ? ", " : "", logp[t]);
        sum += logp[t];
    }
    printf("], \"mean_nll\": %.9g", -sum / (n - 1));
    if (text) {
        printf(", \"ids\": [");
        for (int t = 0; t < n; t++)
            printf("%s%d", t ? ", " : "", ids[t]);
        printf("]");
    }
    printf("}\n");
out:
    qwen2_free(m);
    be_close(be);
    free(ids);
    free(tgt);
    free(logp);
    return cli_report("logprobs", &e);
}
