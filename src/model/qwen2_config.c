/* qwen2_config: config.json in, validated; defaults as transformers' Qwen2Config. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "util/fs.h"
#include "util/json.h"

/* positive integer field with an upper bound (sizes that would overflow later are
 * rejected here, where the message can name the key) */
static int get_pos(const cJSON *root, const char *key, const char *ctx, bool required,
                   long long dflt, long long max, int *out, err_t *e)
{
    long long v;
    int rc = required ? json_req_int(root, key, ctx, &v, e)
                      : json_opt_int(root, key, ctx, dflt, &v, e);
    if (rc)
        return rc;
    if (v < 1 || v > max)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an integer from 1 to %lld, got %lld",
                       ctx, key, max, v);
    *out = (int)v;
    return ERR_OK;
}

static int dtype_from(const char *s, st_dtype_t *d)
{
    if (!strcmp(s, "float32"))
        *d = ST_F32;
    else if (!strcmp(s, "bfloat16"))
        *d = ST_BF16;
    else if (!strcmp(s, "float16"))
        *d = ST_F16;
    else
        return -1;
    return 0;
}

/* an id: absent/null -> -1; an integer >= 0 */
static int get_id(const cJSON *root, const char *key, const char *ctx, int *out, err_t *e)
{
    long long v;
    if (json_opt_int(root, key, ctx, -1, &v, e))
        return e->code;
    if (v < -1 || v > 0x7fffffff)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a token id, got %lld", ctx, key, v);
    *out = (int)v;
    return ERR_OK;
}

int qwen2_config_check(const qwen2_config_t *c, const char *ctx, err_t *e)
{
    if (c->heads % c->kv_heads)
        return err_set(e, ERR_INPUT, "%s: field \"num_key_value_heads\": %d does not divide "
                       "num_attention_heads %d", ctx, c->kv_heads, c->heads);
    if (c->head_dim % 2)
        return err_set(e, ERR_INPUT, "%s: field \"head_dim\": rotary embeddings need an even "
                       "head dimension, got %d", ctx, c->head_dim);
    if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
        return err_set(e, ERR_INPUT, "%s: field \"rope_theta\": expected a number > 1", ctx);
    if (!(c->rms_eps > 0) || c->rms_eps > 1)
        return err_set(e, ERR_INPUT, "%s: field \"rms_norm_eps\": expected a number in (0, 1]", ctx);
    /* every tensor must stay below 2^31 elements per row product and the whole model
     * below 2^40 floats, so index arithmetic cannot overflow */
    double n = (double)qwen2_config_nparams(c);
    if (n > 1099511627776.0 || (double)c->vocab * c->hidden > 2147483647.0 * 64)
        return err_set(e, ERR_INPUT, "%s: the configured model is too large (%.3g parameters)",
                       ctx, n);
    return ERR_OK;
}

size_t qwen2_config_nparams(const qwen2_config_t *c)
{
    size_t H = (size_t)c->hidden, I = (size_t)c->inter, qd = (size_t)c->heads * c->head_dim,
           kvd = (size_t)c->kv_heads * c->head_dim;
    size_t per = 2 * H                  /* two norms */
                 + qd * H + qd          /* q */
                 + 2 * (kvd * H + kvd)  /* k, v */
                 + H * qd               /* o */
                 + 3 * I * H;           /* gate, up, down */
    size_t n = (size_t)c->vocab * H + per * (size_t)c->layers + H;
    if (!c->tie)
        n += (size_t)c->vocab * H;
    return n;
}

int qwen2_config_parse(const char *text, size_t len, const char *ctx, qwen2_config_t *c,
                       err_t *e)
{
    memset(c, 0, sizeof *c);
    cJSON *root;
    if (json_parse(text, len, ctx, &root, e))
        return e->code;
    int rc = ERR_INPUT;
    const char *s;
    bool b;
    if (!cJSON_IsObject(root)) {
        err_set(e, ERR_INPUT, "%s: expected a JSON object", ctx);
        goto done;
    }
    if (json_opt_string(root, "model_type", ctx, "qwen2", &s, e))
        goto done;
    if (strcmp(s, "qwen2")) {
        err_set(e, ERR_INPUT, "%s: field \"model_type\": expected \"qwen2\", got \"%s\"", ctx, s);
        goto done;
    }
    if (get_pos(root, "hidden_size", ctx, true, 0, 1 << 20, &c->hidden, e) ||
        get_pos(root, "intermediate_size", ctx, true, 0, 1 << 22, &c->inter, e) ||
        get_pos(root, "num_hidden_layers", ctx, true, 0, 4096, &c->layers, e) ||
        get_pos(root, "num_attention_heads", ctx, true, 0, 4096, &c->heads, e) ||
        get_pos(root, "num_key_value_heads", ctx, false, c->heads, 4096, &c->kv_heads, e) ||
        get_pos(root, "vocab_size", ctx, true, 0, 1 << 24, &c->vocab, e) ||
        get_pos(root, "max_position_embeddings", ctx, false, 32768, 1 << 24, &c->max_pos, e))
        goto done;
    if (c->hidden % c->heads && !cJSON_GetObjectItemCaseSensitive(root, "head_dim")) {
        err_set(e, ERR_INPUT, "%s: field \"num_attention_heads\": %d does not divide "
                "hidden_size %d", ctx, c->heads, c->hidden);
        goto done;
    }
    if (get_pos(root, "head_dim", ctx, false, c->hidden / c->heads, 4096, &c->head_dim, e))
        goto done;

    /* rope_theta at the top level (transformers 4.x) or inside rope_parameters (5.x) */
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rp && !cJSON_IsNull(rp)) {
        char sub[600];
        snprintf(sub, sizeof sub, "%s: rope_parameters", ctx);
        if (!cJSON_IsObject(rp)) {
            err_set(e, ERR_INPUT, "%s: field \"rope_parameters\": expected an object", ctx);
            goto done;
        }
        if (json_opt_string(rp, "rope_type", sub, "default", &s, e))
            goto done;
        if (strcmp(s, "default")) {
            err_set(e, ERR_INPUT, "%s: field \"rope_parameters.rope_type\": only \"default\" "
                    "rotary embeddings are supported, got \"%s\"", ctx, s);
            goto done;
        }
        double th;
        if (json_opt_double(root, "rope_theta", ctx, 10000.0, &th, e) ||
            json_opt_double(rp, "rope_theta", sub, th, &c->rope_theta, e))
            goto done;
    } else if (json_opt_double(root, "rope_theta", ctx, 10000.0, &c->rope_theta, e)) {
        goto done;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        err_set(e, ERR_INPUT, "%s: field \"rope_scaling\": scaled rotary embeddings are not "
                "supported (expected null)", ctx);
        goto done;
    }
    if (json_opt_double(root, "rms_norm_eps", ctx, 1e-6, &c->rms_eps, e) ||
        json_opt_bool(root, "tie_word_embeddings", ctx, false, &c->tie, e) ||
        json_opt_bool(root, "use_sliding_window", ctx, false, &b, e))
        goto done;
    if (b) {
        err_set(e, ERR_INPUT, "%s: field \"use_sliding_window\": sliding-window attention is "
                "not supported (expected false)", ctx);
        goto done;
    }
    if (json_opt_string(root, "hidden_act", ctx, "silu", &s, e))
        goto done;
    if (strcmp(s, "silu")) {
        err_set(e, ERR_INPUT, "%s: field \"hidden_act\": expected \"silu\", got \"%s\"", ctx, s);
        goto done;
    }
    /* transformers 5 writes "dtype", 4.x "torch_dtype" */
    const char *key = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype") ? "torch_dtype" : "dtype";
    if (json_opt_string(root, key, ctx, "float32", &s, e))
        goto done;
    if (dtype_from(s, &c->dtype)) {
        err_set(e, ERR_INPUT, "%s: field \"%s\": expected \"float32\", \"bfloat16\" or "
                "\"float16\", got \"%s\"", ctx, key, s);
        goto done;
    }
    if (get_id(root, "bos_token_id", ctx, &c->bos_id, e) ||
        get_id(root, "pad_token_id", ctx, &c->pad_id, e))
        goto done;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (cJSON_IsArray(eos)) {
        for (const cJSON *it = eos->child; it; it = it->next) {
            double d = it->valuedouble;
            if (!cJSON_IsNumber(it) || d != floor(d) || d < 0 || d > 2147483647.0 ||
                c->n_eos >= QWEN2_MAX_EOS) {
                err_set(e, ERR_INPUT, "%s: field \"eos_token_id\": expected up to %d token ids",
                        ctx, QWEN2_MAX_EOS);
                goto done;
            }
            c->eos_ids[c->n_eos++] = (int)d;
        }
    } else {
        int id;
        if (get_id(root, "eos_token_id", ctx, &id, e))
            goto done;
        if (id >= 0)
            c->eos_ids[c->n_eos++] = id;
    }
    /* a special id beyond the vocabulary can never be produced or embedded */
    const struct {
        const char *key;
        int id;
    } ids[] = {{"bos_token_id", c->bos_id}, {"pad_token_id", c->pad_id}};
    for (int i = 0; i < 2; i++)
        if (ids[i].id >= c->vocab) {
            err_set(e, ERR_INPUT, "%s: field \"%s\": token id %d is outside the vocabulary "
                    "(vocab_size %d)", ctx, ids[i].key, ids[i].id, c->vocab);
            goto done;
        }
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] >= c->vocab) {
            err_set(e, ERR_INPUT, "%s: field \"eos_token_id\": token id %d is outside the "
                    "vocabulary (vocab_size %d)", ctx, c->eos_ids[i], c->vocab);
            goto done;
        }
    rc = qwen2_config_check(c, ctx, e);
done:
    cJSON_Delete(root);
    return rc;
}

int qwen2_config_load(const char *path, qwen2_config_t *c, err_t *e)
{
    char *text;
    size_t len;
    if (fs_read_all(path, 4u << 20, &text, &len, e))
        return e->code;
    int rc = qwen2_config_parse(text, len, path, c, e);
    free(text);
    return rc;
}
