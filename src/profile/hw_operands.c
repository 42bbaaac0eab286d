/* hw_operands: a linear layer's real operands (see hw_operands.h). */
#include "profile/hw_operands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/qwen2.h"
#include "profile/sensitivity.h"

/* Which layers: the norm whose output is the layer's input, and how far the forward runs
 * (the residual stream entering `stop`; stop == layers: the final norm's input). */
static int layer_route(const qwen2_config_t *c, const char *layer, char *norm, size_t n,
                       int *stop, err_t *e)
{
    if (!strcmp(layer, "lm_head")) {
        snprintf(norm, n, "model.norm.weight");
        *stop = c->layers;
        return ERR_OK;
    }
    int L, used = 0;
    char proj[16] = "";
    if (sscanf(layer, "model.layers.%d.self_attn.%1[qkv]_proj%n", &L, proj, &used) == 2 &&
        used == (int)strlen(layer) && L >= 0 && L < c->layers) {
        snprintf(norm, n, "model.layers.%d.input_layernorm.weight", L);
        *stop = L;
        return ERR_OK;
    }
    return err_set(e, ERR_INPUT, "layer \"%s\": expected lm_head or model.layers.L.self_attn."
                   "q_proj, k_proj or v_proj with L in 0..%d (the layers whose input is a norm's "
                   "output, which the forward exposes)", layer, c->layers - 1);
}

/* y (N, H) = rmsnorm(x) * w through the backend, as the model computes it. */
static int backend_rmsnorm(backend_t *be, const float *x, const float *w, float *y, int N, int H,
                           float eps, err_t *e)
{
    size_t bytes = (size_t)N * (size_t)H * sizeof(float);
    be_buf_t *bx = be_alloc(be, bytes, e), *by = bx ? be_alloc(be, bytes, e) : NULL;
    be_buf_t *bw = by ? be_alloc(be, (size_t)H * sizeof(float), e) : NULL;
    int rc = bw ? ERR_OK : e->code ? e->code : ERR_NOMEM;
    if (!rc) {
        be_upload(be, be_ptr(bx, 0), x, bytes);
        be_upload(be, be_ptr(bw, 0), w, (size_t)H * sizeof(float));
        be_rmsnorm_fwd(be, be_ptr(by, 0), BE_NULL, be_ptr(bx, 0), be_ptr(bw, 0), N, H, eps);
        be_download(be, y, be_ptr(by, 0), bytes);
        rc = be_sync(be, e);
    }
    be_free(be, bx);
    be_free(be, by);
    be_free(be, bw);
    return rc;
}

void profile_hw_operands_free(profile_hw_operands_t *op)
{
    free(op->x);
    free(op->w);
    memset(op, 0, sizeof *op);
}

int profile_hw_operands_load(const profile_hw_operands_opts_t *o, profile_hw_operands_t *out,
                             err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!o->model_dir || !o->eval_path || !o->layer || o->rows < 1)
        return err_set(e, ERR_INPUT, "hw operands: needs a model, evaluation data, a layer and "
                       "rows >= 1");
    profile_evalset_t es = {0};
    backend_t *be = NULL;
    qwen2_model_t *m = NULL;
    float *stream = NULL, *normed = NULL, *normw = NULL;
    int rc = profile_load_evalset(o->model_dir, o->eval_path, NULL, 0, &o->eval, &es,
                                  out->source, sizeof out->source, e);
    qwen2_opts_t mo = {.max_seq = es.max_seq, .max_batch = es.max_rows, .heads = QWEN2_HEAD_LM,
                       .role = PREC_MODEL_POLICY};
    if (!rc)
        rc = be_open(o->backend ? o->backend : "cpu", &be, e);
    if (!rc)
        rc = qwen2_open_dir(o->model_dir, be, &mo, &m, e);
    if (!rc && o->policies)
        rc = qwen2_load_plan(m, o->policies, o->plan, NULL, e);
    const qwen2_config_t *c = m ? qwen2_config(m) : NULL;
    char norm[96];
    int stop = 0;
    if (!rc)
        rc = layer_route(c, o->layer, norm, sizeof norm, &stop, e);
    /* the weight, and the layer's specs */
    const qwen2_tensor_t *wt = NULL, *nt = NULL;
    if (!rc) {
        char wname[128];
        snprintf(wname, sizeof wname, "%s.weight", o->layer);
        wt = qwen2_tensor_find(m, wname);
        if (!wt && !strcmp(o->layer, "lm_head"))
            wt = qwen2_tensor_find(m, "model.embed_tokens.weight"); /* tied */
        nt = qwen2_tensor_find(m, norm);
        if (!wt || !nt || wt->ndim != 2 || wt->shape[1] != c->hidden)
            rc = err_set(e, ERR_INPUT, "%s: no tensor %s (or %s) of shape (N, %d)", o->model_dir,
                         wname, norm, c->hidden);
    }
    if (!rc) {
        prec_table_t *t = qwen2_precision(m);
        int li = prec_table_find(t, o->layer);
        out->spec_x = li >= 0 ? *prec_spec(t, li, o->phase, PREC_OP_INPUT) : mx_spec_default(MX_FP32);
        out->spec_w = li >= 0 ? *prec_spec(t, li, o->phase, PREC_OP_WEIGHT) : mx_spec_default(MX_FP32);
        out->N = (size_t)wt->shape[0];
        out->K = (size_t)c->hidden;
        out->w = err_malloc(e, out->N * out->K * sizeof(float), "layer weight");
        normw = err_malloc(e, out->K * sizeof(float), "norm weight");
        out->x = err_malloc(e, (size_t)o->rows * out->K * sizeof(float), "activations");
        rc = out->w && normw && out->x ? ERR_OK : ERR_NOMEM;
        if (!rc)
            rc = qwen2_params_get(m, wt->off, out->w, out->N * out->K, e);
        if (!rc)
            rc = qwen2_params_get(m, nt->off, normw, out->K, e);
    }
    /* the activations, batch by batch, until `rows` real positions */
    prec_ctx_t ctx = {o->phase, 0, 0};
    const int H = c ? c->hidden : 0;
    for (int bi = 0; !rc && bi < es.nbatch && out->M < (size_t)o->rows; bi++) {
        const qwen2_batch_t *b = &es.batches[bi].b;
        size_t n = (size_t)b->B * (size_t)b->T * (size_t)H;
        free(stream);
        free(normed);
        stream = err_malloc(e, n * sizeof(float), "residual stream");
        normed = err_malloc(e, n * sizeof(float), "normalized stream");
        if (!stream || !normed) {
            rc = ERR_NOMEM;
            break;
        }
        if ((rc = qwen2_forward_range(m, &ctx, b, 0, stop, NULL, stream, 0, e)) ||
            (rc = backend_rmsnorm(be, stream, normw, normed, b->B * b->T, H, (float)c->rms_eps, e)))
            break;
        for (int r = 0; r < b->B && out->M < (size_t)o->rows; r++) {
            int len = b->len ? b->len[r] : b->T;
            for (int t = 0; t < len && out->M < (size_t)o->rows; t++, out->M++)
                memcpy(out->x + out->M * out->K, normed + ((size_t)r * b->T + t) * H,
                       (size_t)H * sizeof(float));
        }
    }
    free(stream);
    free(normed);
    free(normw);
    qwen2_free(m);
    be_close(be);
    profile_evalset_free(&es);
    if (rc)
        profile_hw_operands_free(out);
    return rc;
}
