/* qwen2_decode: batched sampling with the KV cache.
 *
 * Prompts are left-padded to the longest one, so after the prefill every row's next token
 * goes to the same cache index t; each row's rotary position is t - pad_left[b] and the
 * padding keys stay masked. One decoding step runs every decoder layer on B rows of one
 * token, stores its K and V at t and attends over cache positions [pad_left[b], t]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2_internal.h"

static bool is_stop(const qwen2_gen_t *g, int32_t id)
{
    for (int i = 0; i < g->nstop; i++)
        if (g->stop[i] == id)
            return true;
    return false;
}

/* final norm and lm_head over B rows of hidden state x: logits rows [0, B) */
static void head(qwen2_model_t *m, const prec_ctx_t *ctx, be_ptr_t x, int B)
{
    be_rmsnorm_fwd(m->be, m->xnf, m->rstdf, x, qp(m, m->norm), B, m->cfg.hidden,
                   (float)m->cfg.rms_eps);
    qwen2__lin_fwd(m, ctx, m->lin_lm, m->xnf, B, m->logits, false);
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
    if (x->min_new < 0 || (g->nstop > 0 && !g->stop))
        return err_set(e, ERR_INPUT, "generate: bad min_new (%d) or stop list", x->min_new);
    for (int i = 0; x->min_new > 0 && i < g->nstop; i++)
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

    /* left-padded prompt batch; h_tgt is free during generation and holds the ids */
    int32_t *ids = m->h_tgt;
    int32_t *padl = malloc((size_t)B * sizeof *padl);
    bool *done = calloc((size_t)B, sizeof *done);
    int rc = ERR_OK;
    if (!padl || !done) {
        rc = err_set(e, ERR_NOMEM, "generate: out of memory");
        goto out;
    }
    if ((size_t)B * Lmax > (size_t)m->opts.max_batch * m->opts.max_seq || Lmax > m->opts.max_seq) {
        rc = err_set(e, ERR_INPUT, "generate: %d prompts of up to %d tokens do not fit the "
                     "model's activations (%d x %d)", B, Lmax, m->opts.max_batch, m->opts.max_seq);
        goto out;
    }
    for (int b = 0; b < B; b++) {
        padl[b] = Lmax - plen[b];
        for (int t = 0; t < Lmax; t++)
            ids[(size_t)b * Lmax + t] = t < padl[b] ? 0 : prompts[b][t - padl[b]];
    }
    qwen2_batch_t batch = {B, Lmax, ids, padl, NULL};
    if ((rc = qwen2__prepare_batch(m, &batch, e)))
        goto out;

    /* prefill: the prompt through every layer, K and V into the cache at [0, Lmax) */
    qwen2_act_layer_t *S = &m->sets[0];
    be_embed_fwd(be, S->x, qp(m, m->embed), m->ids, B * Lmax, H);
    for (int L = 0; L < c->layers; L++)
        qwen2__layer_forward(m, ctx, L, S, S->x, B, Lmax, 0);
    be_copy2d(be, m->last_rows, (size_t)H * sizeof(float), be_f32(S->x, (size_t)(Lmax - 1) * H),
              (size_t)Lmax * H * sizeof(float), (size_t)H * sizeof(float), (size_t)B);
    head(m, ctx, m->last_rows, B);

    int32_t *tok = m->h_ids_grad; /* host staging for B sampled ids */
    float *lp = m->h_seed;        /* host staging for B log-probs */
    /* min_new: the stop ids cannot be drawn yet. Their logits (one column per stop id, B
     * rows) are set aside in the device buffer dseed (free while generating), replaced by
     * -inf from dseed2, and put back after the draw, so the log-probs below are those of the
     * unmasked distribution (what a training forward computes). Strided device copies: no
     * round trip to the host per row and token. */
    const bool mask_stop = x->min_new > 0 && g->nstop > 0;
    const size_t fsz = sizeof(float), lpitch = (size_t)V * sizeof(float);
    if (mask_stop) {
        if ((size_t)B * g->nstop > (size_t)m->opts.max_batch * m->opts.max_seq) {
            rc = err_set(e, ERR_INPUT, "generate: %d stop ids x %d rows exceed the model's "
                         "activation rows", g->nstop, B);
            goto out;
        }
        float *ninf = (float *)m->h_seed; /* host staging of (max_batch * max_seq) floats */
        for (int b = 0; b < B; b++)
            ninf[b] = -INFINITY;
        be_upload(be, m->dseed2, ninf, (size_t)B * fsz);
    }
    for (int s = 0; s < g->max_new; s++) {
        const bool masked = mask_stop && s < x->min_new;
        if (masked)
            for (int i = 0; i < g->nstop; i++) {
                be_ptr_t col = be_f32(m->logits, (size_t)g->stop[i]);
                be_copy2d(be, be_f32(m->dseed, (size_t)i * B), fsz, col, lpitch, fsz, (size_t)B);
                be_copy2d(be, col, lpitch, m->dseed2, fsz, fsz, (size_t)B);
            }
        be_sample_t sp = {g->temperature, g->top_k, g->top_p, g->seed, g->stream, (uint64_t)s};
        be_sample_tokens(be, m->targets, m->logits, (size_t)V, B, V, &sp);
        if (masked && x->logp)
            for (int i = 0; i < g->nstop; i++)
                be_copy2d(be, be_f32(m->logits, (size_t)g->stop[i]), lpitch,
                          be_f32(m->dseed, (size_t)i * B), fsz, fsz, (size_t)B);
        be_download(be, tok, m->targets, (size_t)B * sizeof(int32_t));
        if (x->logp) {
            be_logsoftmax_gather(be, m->logp, m->lse_lm, m->logits, m->targets, B, V);
            be_download(be, lp, m->logp, (size_t)B * sizeof(float));
        }
        if ((rc = be_sync(be, e)))
            goto out;
        bool all = true;
        for (int b = 0; b < B; b++) {
            if (done[b])
                continue;
            out[(size_t)b * g->max_new + s] = tok[b];
            if (x->logp)
                x->logp[(size_t)b * g->max_new + s] = lp[b];
            out_len[b]++;
            done[b] = is_stop(g, tok[b]);
            all = all && done[b];
        }
        if (all || s + 1 == g->max_new)
            break;
        /* one step: the sampled token of every row at cache index t */
        const int t = Lmax + s;
        for (int b = 0; b < B; b++) {
            m->h_ids[b] = tok[b];
            m->h_pos[b] = t - padl[b];
        }
        be_upload(be, m->ids, m->h_ids, (size_t)B * sizeof(int32_t));
        be_upload(be, m->pos, m->h_pos, (size_t)B * sizeof(int32_t));
        be_embed_fwd(be, S->x, qp(m, m->embed), m->ids, B, H);
        for (int L = 0; L < c->layers; L++)
            qwen2__layer_forward(m, ctx, L, S, S->x, B, 1, t);
        head(m, ctx, S->x, B);
    }
    m->logits_valid = true;
    m->logits_rows = B;
    m->lg_r0 = 0;
    m->lg_n = B;
    rc = be_sync(be, e);
out:
    free(padl);
    free(done);
    return rc;
}
