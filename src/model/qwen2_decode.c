/* qwen2_decode: batched sampling with the KV cache.
 *
 * Prompts are left-padded to the longest one, so after the prefill every row's next token
 * goes to the same cache index t; each row's rotary position is t - pad_left[b] and the
 * padding keys stay masked. The prefill runs the prompt through the ordinary forward
 * (qwen2__layer_forward, K and V stored at [0, Lmax)). Every later step is the same
 * sequence of the backend's decoding ops on B rows of one token:
 *
 *   embed(ids)                                          x (B, H)
 *   per layer: dec_linear  rmsnorm1 + q, k, v           q, k, v
 *              dec_attn    RoPE, K/V into the cache at t, attention over [pad_left, t]
 *              dec_linear  o_proj, added to x
 *              dec_linear  rmsnorm2 + gate, up, SwiGLU   act (B, I)
 *              dec_linear  down_proj, added to x
 *   dec_linear  final norm + lm_head                     logits (B, V)
 *   dec_sample  the draw, the log-prob, stop ids, and t, positions, step advanced
 *
 * Nothing in a step depends on host values that change from step to step: the cache index,
 * the positions, the step number of the draw, which rows are done and the output all live
 * in device memory. So on a backend that records (CUDA graphs) the step is recorded once,
 * after one direct run has built the weight copies and scratch it reads, and replayed for
 * every further token; the host looks at the done count every DONE_CHECK steps only. A
 * backend that does not record (the CPU; CUDA with MXRLHF_CUDA_GRAPH=0) runs the same ops
 * directly and checks after each step. Both give the same tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2_internal.h"

/* steps between two looks at the done count when the step is a recorded graph: the loop
 * may run up to DONE_CHECK - 1 steps after every row has stopped (their output is not
 * touched) instead of waiting for the device after each token */
#define DONE_CHECK 8

/* final norm and lm_head over B rows of hidden state x: logits rows [0, B) */
static void head(qwen2_model_t *m, const prec_ctx_t *ctx, be_ptr_t x, int B)
{
    be_rmsnorm_fwd(m->be, m->xnf, m->rstdf, x, qp(m, m->norm), B, m->cfg.hidden,
                   (float)m->cfg.rms_eps);
    qwen2__lin_fwd(m, ctx, m->lin_lm, m->xnf, B, m->logits, false);
}

/* one fused linear op over B rows of x: layers li[0..n); out[] has n entries for STORE,
 * one otherwise */
static void dec_lin(qwen2_model_t *m, const prec_ctx_t *ctx, be_ptr_t x, size_t norm, int B,
                    const int *li, const be_ptr_t *out, int n, be_dec_epi_t epi)
{
    be_dec_linear_t d;
    memset(&d, 0, sizeof d);
    d.x = x;
    d.norm_w = norm == QWEN2_NONE ? BE_NULL : qp(m, norm);
    d.eps = (float)m->cfg.rms_eps;
    d.M = B;
    d.K = m->lin[li[0]].K;
    d.nlin = n;
    d.epi = epi;
    for (int i = 0; i < n; i++) {
        qwen2__linear_args(m, ctx, li[i], x, B, &d.lin[i]);
        d.out[i] = epi == BE_DEC_STORE || i == 0 ? out[i] : BE_NULL;
    }
    be_dec_linear(m->be, &d);
}

/* The decoding step after a draw: the drawn tokens (m->ids) through every layer to the next
 * logits, and the next draw. */
static void decode_step(qwen2_model_t *m, const prec_ctx_t *ctx, int B, const be_dec_sample_t *ds)
{
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    const int D = c->head_dim;
    qwen2_act_layer_t *S = &m->sets[0];
    be_embed_fwd(be, S->x, qp(m, m->embed), m->ids, B, c->hidden);
    for (int L = 0; L < c->layers; L++) {
        const int li = L * LIN_PER_LAYER;
        const qwen2_layer_off_t *o = &m->loff[L];
        const int qkv[3] = {li + LIN_Q, li + LIN_K, li + LIN_V}, ol[1] = {li + LIN_O},
                  gu[2] = {li + LIN_GATE, li + LIN_UP}, dn[1] = {li + LIN_DOWN};
        const be_ptr_t qkv_out[3] = {S->q, S->k, S->v};
        dec_lin(m, ctx, S->x, o->ln1, B, qkv, qkv_out, 3, BE_DEC_STORE);
        be_dec_attn_t at = {
            .q = S->q, .k = S->k, .v = S->v, .kc = qwen2__kv(m, L, 0), .vc = qwen2__kv(m, L, 1),
            .out = S->att, .pos = m->pos, .pad_left = m->padl,
            .t = be_f32(m->gen_state, BE_DEC_T), .cos_t = m->rope_cos, .sin_t = m->rope_sin,
            .B = B, .H = c->heads, .Hkv = c->kv_heads, .D = D, .S = m->opts.kv_len,
            .scale = 1.0f / sqrtf((float)D),
        };
        be_dec_attn(be, &at);
        dec_lin(m, ctx, S->att, QWEN2_NONE, B, ol, &S->x, 1, BE_DEC_RESIDUAL);
        dec_lin(m, ctx, S->x, o->ln2, B, gu, &S->act, 2, BE_DEC_SWIGLU);
        dec_lin(m, ctx, S->act, QWEN2_NONE, B, dn, &S->x, 1, BE_DEC_RESIDUAL);
    }
    const int lm[1] = {m->lin_lm};
    dec_lin(m, ctx, S->x, m->norm, B, lm, &m->logits, 1, BE_DEC_STORE);
    be_dec_sample(be, ds);
}

int qwen2_decode_weights(qwen2_model_t *m, const prec_ctx_t *ctx, err_t *e)
{
    if ((unsigned)ctx->phase >= PREC_PHASE_COUNT)
        return err_set(e, ERR_INPUT, "decode weights: bad phase");
    if (qwen2__frozen_check(m, ctx, e))
        return e->code;
    for (int i = 0; i < m->nlin; i++) {
        be_linear_t a;
        qwen2__linear_args(m, ctx, i, BE_NULL, 1, &a);
        be_linear_prepare(m->be, &a);
    }
    return be_sync(m->be, e);
}

int qwen2_generate(qwen2_model_t *m, const prec_ctx_t *ctx, int B, const int32_t *const *prompts,
                   const int *plen, const qwen2_gen_t *g, int32_t *out, int *out_len, err_t *e)
{
    return qwen2_generate_ext(m, ctx, B, prompts, plen, g, NULL, out, out_len, e);
}

int qwen2_generate_ext(qwen2_model_t *m, const prec_ctx_t *ctx, int B,
                       const int32_t *const *prompts, const int *plen, const qwen2_gen_t *g,
                       const qwen2_gen_ext_t *x, int32_t *out, int *out_len, err_t *e)
{
    const qwen2_gen_ext_t none = {0, NULL};
    if (!x)
        x = &none;
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    const int H = c->hidden, V = c->vocab;
    if (m->lin_lm < 0)
        return err_set(e, ERR_INPUT, "generate: the model has no lm_head");
    if (!m->kv)
        return err_set(e, ERR_INPUT, "generate: the model was built without a KV cache");
    if (B < 1 || B > m->opts.kv_batch)
        return err_set(e, ERR_INPUT, "generate: %d rows, the KV cache holds %d", B,
                       m->opts.kv_batch);
    if (g->max_new < 0 || (unsigned)ctx->phase >= PREC_PHASE_COUNT)
        return err_set(e, ERR_INPUT, "generate: bad max_new (%d) or phase", g->max_new);
    if (qwen2__frozen_check(m, ctx, e))
        return e->code;
    int Lmax = 0;
    for (int b = 0; b < B; b++) {
        if (plen[b] < 1)
            return err_set(e, ERR_INPUT, "generate: prompt %d is empty", b);
        Lmax = plen[b] > Lmax ? plen[b] : Lmax;
    }
    if (Lmax + g->max_new > m->opts.kv_len)
        return err_set(e, ERR_INPUT, "generate: prompt of %d tokens + %d new tokens exceeds the "
                       "KV cache length %d", Lmax, g->max_new, m->opts.kv_len);
    if (x->min_new < 0 || (g->nstop > 0 && !g->stop) || g->nstop < 0)
        return err_set(e, ERR_INPUT, "generate: bad min_new (%d) or stop list", x->min_new);
    for (int i = 0; x->min_new > 0 && i < g->nstop; i++) /* masked logits must exist */
        if (g->stop[i] < 0 || g->stop[i] >= V)
            return err_set(e, ERR_INPUT, "generate: stop id %d is outside the vocabulary [0, %d)",
                           g->stop[i], V);
    for (int b = 0; b < B; b++)
        out_len[b] = 0;
    if (x->logp)
        for (size_t i = 0; i < (size_t)B * g->max_new; i++)
            x->logp[i] = 0;
    m->fwd_flags = 0;
    m->have_targets = false;
    m->logits_valid = false;
    m->logits_lazy = false;
    m->lg_n = 0;
    if (g->max_new == 0)
        return ERR_OK;
    const size_t nrows = (size_t)m->opts.max_batch * m->opts.max_seq;
    if ((size_t)B * Lmax > nrows || Lmax > m->opts.max_seq)
        return err_set(e, ERR_INPUT, "generate: %d prompts of up to %d tokens do not fit the "
                       "model's activations (%d x %d)", B, Lmax, m->opts.max_batch, m->opts.max_seq);
    /* the stop ids and their logits set aside while masked borrow two per-token buffers */
    if ((size_t)g->nstop > nrows || (size_t)B * g->nstop > nrows)
        return err_set(e, ERR_INPUT, "generate: %d stop ids x %d rows exceed the model's "
                       "activation rows", g->nstop, B);

    /* the weight copies the prefill and the steps read, rebuilt here when stale (after an
     * optimizer step, a new plan): part of generation's time, as in PPO's rollout phase */
    int rc = qwen2_decode_weights(m, ctx, e);
    if (rc)
        return rc;

    /* left-padded prompt batch; h_tgt is free during generation and holds the ids */
    int32_t *ids = m->h_tgt;
    int32_t *padl = m->h_padl;
    for (int b = 0; b < B; b++) {
        const int pl = Lmax - plen[b];
        for (int t = 0; t < Lmax; t++)
            ids[(size_t)b * Lmax + t] = t < pl ? 0 : prompts[b][t - pl];
    }
    int32_t *pl_in = malloc((size_t)B * sizeof *pl_in);
    if (!pl_in)
        return err_set(e, ERR_NOMEM, "generate: out of memory");
    for (int b = 0; b < B; b++)
        pl_in[b] = Lmax - plen[b];
    qwen2_batch_t batch = {B, Lmax, ids, pl_in, NULL};
    rc = qwen2__prepare_batch(m, &batch, e); /* ids, pad_left into device memory */
    free(pl_in);
    if (rc)
        return rc;

    /* prefill: the prompt through every layer, K and V into the cache at [0, Lmax) */
    qwen2_act_layer_t *S = &m->sets[0];
    be_embed_fwd(be, S->x, qp(m, m->embed), m->ids, B * Lmax, H);
    for (int L = 0; L < c->layers; L++)
        qwen2__layer_forward(m, ctx, L, S, S->x, B, Lmax, 0);
    be_copy2d(be, m->last_rows, (size_t)H * sizeof(float), be_f32(S->x, (size_t)(Lmax - 1) * H),
              (size_t)Lmax * H * sizeof(float), (size_t)H * sizeof(float), (size_t)B);
    head(m, ctx, m->last_rows, B);

    /* the loop's state: the last prompt token sits at cache index Lmax - 1, each draw moves
     * the index and the positions on by one */
    int32_t st[BE_DEC_STATE_WORDS] = {0};
    st[BE_DEC_T] = Lmax - 1;
    for (int b = 0; b < B; b++)
        m->h_pos[b] = Lmax - 1 - padl[b];
    be_upload(be, m->gen_state, st, sizeof st);
    be_upload(be, m->pos, m->h_pos, (size_t)B * sizeof(int32_t));
    be_zero(be, m->gen_done, (size_t)B * sizeof(int32_t));
    be_zero(be, m->gen_len, (size_t)B * sizeof(int32_t));
    be_zero(be, m->gen_out, (size_t)B * g->max_new * sizeof(int32_t));
    if (x->logp)
        be_zero(be, m->gen_logp, (size_t)B * g->max_new * sizeof(float));
    if (g->nstop > 0)
        be_upload(be, m->ids_grad, g->stop, (size_t)g->nstop * sizeof(int32_t));
    const be_dec_sample_t ds = {
        .logits = m->logits, .ld = (size_t)V, .B = B, .V = V, .temperature = g->temperature,
        .top_k = g->top_k, .top_p = g->top_p, .seed = g->seed, .stream = g->stream,
        .state = m->gen_state, .ids = m->ids, .pos = m->pos, .done = m->gen_done,
        .len = m->gen_len, .out = m->gen_out, .out_logp = x->logp ? m->gen_logp : BE_NULL,
        .lse = m->lse_lm, .lp = m->logp, .stop = m->ids_grad, .save = m->dseed,
        .max_new = g->max_new, .nstop = g->nstop, .min_new = x->min_new,
    };
    be_dec_sample(be, &ds); /* step 0: from the prefill's logits */

    be_graph_t *graph = NULL;
    bool try_graph = true;
    int since_check = DONE_CHECK; /* look after step 0 */
    for (int s = 1; s <= g->max_new; s++) {
        if (since_check >= (graph ? DONE_CHECK : 1) || s == g->max_new) {
            if ((rc = be_sync(be, e)))
                goto out;
            be_download(be, st, m->gen_state, sizeof st);
            if ((rc = be_sync(be, e)))
                goto out;
            since_check = 0;
            if (st[BE_DEC_NDONE] >= B || s == g->max_new)
                break;
        }
        if (graph) {
            be_graph_launch(be, graph);
        } else if (s >= 2 && try_graph) {
            /* step 1 ran directly and built every copy and scratch the step reads */
            err_t ge = ERR_INIT;
            try_graph = false;
            if (be_graph_begin(be, &ge) == ERR_OK) {
                decode_step(m, ctx, B, &ds);
                if (be_graph_end(be, &graph, &ge))
                    graph = NULL;
            }
            if (graph)
                be_graph_launch(be, graph);
            else
                decode_step(m, ctx, B, &ds);
        } else {
            decode_step(m, ctx, B, &ds);
        }
        since_check++;
    }
    be_download(be, out_len, m->gen_len, (size_t)B * sizeof(int32_t));
    be_download(be, out, m->gen_out, (size_t)B * g->max_new * sizeof(int32_t));
    if (x->logp)
        be_download(be, x->logp, m->gen_logp, (size_t)B * g->max_new * sizeof(float));
    m->logits_valid = true;
    m->logits_rows = B;
    m->lg_r0 = 0;
    m->lg_n = B;
    rc = be_sync(be, e);
out:
    be_graph_free(be, graph);
    return rc;
}
