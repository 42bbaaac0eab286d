/* modelled: the traffic and MAC model of modelled.h. */
#include "profile/modelled.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void profile_cost_add(profile_cost_t *acc, const profile_cost_t *c, double times)
{
    acc->macs += times * c->macs;
    for (int i = 0; i < PROFILE_NWIDTHS; i++)
        acc->macs_by_width[i] += times * c->macs_by_width[i];
    for (int i = 0; i < MX_FORMAT_COUNT; i++)
        acc->macs_by_format[i] += times * c->macs_by_format[i];
    acc->bytes += times * c->bytes;
    acc->bytes_bf16 += times * c->bytes_bf16;
}

void profile_layers_free(profile_layers_t *l)
{
    for (int i = 0; l->names && i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->in);
    free(l->out);
    free(l->kind);
    memset(l, 0, sizeof *l);
}

int profile_layers_make(const qwen2_config_t *c, unsigned heads, profile_layers_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    if (!heads)
        heads = QWEN2_HEAD_LM;
    int cap = 7 * c->layers + 3;
    out->names = calloc((size_t)cap, sizeof *out->names);
    out->in = calloc((size_t)cap, sizeof *out->in);
    out->out = calloc((size_t)cap, sizeof *out->out);
    out->kind = calloc((size_t)cap, sizeof *out->kind);
    if (!out->names || !out->in || !out->out || !out->kind) {
        profile_layers_free(out);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    const int H = c->hidden, qd = c->heads * c->head_dim, kvd = c->kv_heads * c->head_dim;
    static const char *const proj[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                        "mlp.down_proj"};
    const int in[7] = {H, H, H, qd, H, H, c->inter}, o[7] = {qd, kvd, kvd, H, c->inter, c->inter, H};
    char name[128];
    for (int L = 0; L < c->layers; L++)
        for (int k = 0; k < 7; k++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", L, proj[k]);
            int i = out->n++;
            out->names[i] = strdup(name);
            out->in[i] = in[k];
            out->out[i] = o[k];
            out->kind[i] = PROFILE_TRUNK;
        }
    struct { unsigned bit; const char *name; int out; profile_layer_kind_t kind; } hd[] = {
        {QWEN2_HEAD_LM, "lm_head", c->vocab, PROFILE_LM},
        {QWEN2_HEAD_SCORE, "score", 1, PROFILE_SCORE},
        {QWEN2_HEAD_VALUE, "v_head.summary", 1, PROFILE_VALUE},
    };
    for (size_t k = 0; k < sizeof hd / sizeof hd[0]; k++) {
        if (!(heads & hd[k].bit))
            continue;
        int i = out->n++;
        out->names[i] = strdup(hd[k].name);
        out->in[i] = H;
        out->out[i] = hd[k].out;
        out->kind[i] = hd[k].kind;
    }
    for (int i = 0; i < out->n; i++)
        if (!out->names[i]) {
            profile_layers_free(out);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
    return ERR_OK;
}

double profile_spec_bits(const mx_spec_t *spec, prec_phase_t ph, prec_compute_t compute)
{
    const mx_format_info_t *fi = mx_format_info(spec->format);
    if (fi->is_mx)
        return fi->bits + 8.0 / (spec->block > 0 ? spec->block : 32);
    if (spec->format == MX_FP32)
        return ph == PREC_GRADIENT && compute != PREC_COMPUTE_FP32 ? 16 : 32;
    return 16; /* bf16, fp16 */
}

/* The width class of an operand for MAC counting: its element bits. */
static int width_class(const mx_spec_t *spec, prec_phase_t ph, prec_compute_t compute)
{
    const mx_format_info_t *fi = mx_format_info(spec->format);
    int bits = fi->is_mx ? fi->bits : (int)profile_spec_bits(spec, ph, compute);
    return bits <= 4 ? PROFILE_W4 : bits <= 6 ? PROFILE_W6 : bits <= 8 ? PROFILE_W8
         : bits <= 16 ? PROFILE_W16 : PROFILE_W32;
}

/* An operand's format as the MAC sees it: an fp32 operand rounded to a 16-bit compute type
 * counts as that type. */
static mx_format_t mac_operand_format(const mx_spec_t *s, prec_phase_t ph, prec_compute_t compute)
{
    if (s->format == MX_FP32 && profile_spec_bits(s, ph, compute) == 16)
        return compute == PREC_COMPUTE_FP16 ? MX_FP16 : MX_BF16;
    return s->format;
}

mx_format_t profile_mac_format(const mx_spec_t *a, const mx_spec_t *b, prec_phase_t ph,
                               prec_compute_t compute)
{
    return width_class(b, ph, compute) > width_class(a, ph, compute)
               ? mac_operand_format(b, ph, compute)
               : mac_operand_format(a, ph, compute);
}

static double layer_tokens(const profile_tokens_t *t, profile_layer_kind_t k)
{
    switch (k) {
    case PROFILE_LM: return t->lm;
    case PROFILE_SCORE: return t->score;
    case PROFILE_VALUE: return t->value;
    default: return t->trunk;
    }
}

static mx_spec_t spec_of(const prec_table_t *t, const char *layer, prec_phase_t ph,
                         prec_operand_t op)
{
    int i = t ? prec_table_find(t, layer) : -1;
    return i >= 0 ? *prec_spec(t, i, ph, op) : mx_spec_default(MX_FP32);
}

/* One GEMM: `macs` multiply-accumulates; operand a (`na` elements, read once) and b (`nb`
 * elements) in their specs; output `nout` elements. */
static void gemm(double macs, const mx_spec_t *sa, double na, const mx_spec_t *sb, double nb,
                 double nout, prec_phase_t ph, prec_compute_t compute, profile_cost_t *acc)
{
    double ba = profile_spec_bits(sa, ph, compute), bb = profile_spec_bits(sb, ph, compute);
    int wa = width_class(sa, ph, compute), wb = width_class(sb, ph, compute);
    double bout = ba >= 32 && bb >= 32 ? 32 : 16;
    acc->macs += macs;
    acc->macs_by_width[wa > wb ? wa : wb] += macs;
    acc->macs_by_format[profile_mac_format(sa, sb, ph, compute)] += macs;
    acc->bytes += (na * ba + nb * bb + nout * bout) / 8;
    acc->bytes_bf16 += (na + nb + nout) * 2;
}

void profile_cost_forward(const profile_layers_t *L, const prec_table_t *t, prec_phase_t ph,
                          const profile_tokens_t *tok, double calls, profile_cost_t *acc)
{
    prec_compute_t compute = t ? prec_compute_for(t, ph) : PREC_COMPUTE_FP32;
    for (int i = 0; i < L->n; i++) {
        double T = layer_tokens(tok, L->kind[i]), in = L->in[i], out = L->out[i];
        if (T <= 0)
            continue;
        mx_spec_t w = spec_of(t, L->names[i], ph, PREC_OP_WEIGHT);
        mx_spec_t x = spec_of(t, L->names[i], ph, PREC_OP_INPUT);
        gemm(T * in * out, &w, calls * out * in, &x, T * in, T * out, ph, compute, acc);
    }
}

void profile_cost_backward(const profile_layers_t *L, const prec_table_t *t,
                           const profile_tokens_t *tok, double calls, profile_cost_t *acc)
{
    const prec_phase_t ph = PREC_GRADIENT;
    prec_compute_t compute = t ? prec_compute_for(t, ph) : PREC_COMPUTE_FP32;
    for (int i = 0; i < L->n; i++) {
        double T = layer_tokens(tok, L->kind[i]), in = L->in[i], out = L->out[i];
        if (T <= 0)
            continue;
        const char *n = L->names[i];
        mx_spec_t wbp = spec_of(t, n, ph, PREC_OP_WEIGHT_BP);
        mx_spec_t gdx = spec_of(t, n, ph, PREC_OP_GRAD_OUTPUT_DX);
        mx_spec_t xbp = spec_of(t, n, ph, PREC_OP_INPUT_BP);
        mx_spec_t gdw = spec_of(t, n, ph, PREC_OP_GRAD_OUTPUT_DW);
        /* dx (T x in) = dy (T x out) · W (out x in) */
        gemm(T * in * out, &wbp, calls * out * in, &gdx, T * out, T * in, ph, compute, acc);
        /* dW (out x in) = dyᵀ (out x T) · x (T x in), written once per call */
        gemm(T * in * out, &gdw, T * out, &xbp, T * in, calls * out * in, ph, compute, acc);
    }
}

void profile_cost_ppo_step(const profile_ppo_models_t *m, const profile_ppo_step_t *s,
                           profile_cost_t acc[PROFILE_NPHASES])
{
    const double all = s->prompt_tokens + s->response_tokens;
    /* rollout: prefill + decode, logits for every generated token */
    profile_tokens_t roll = {all, s->response_tokens, 0, 0};
    profile_cost_forward(m->policy, m->t_policy, PREC_ROLLOUT, &roll,
                         s->decode_steps > 0 ? s->decode_steps : 1, &acc[PROFILE_PH_ROLLOUT]);
    /* reward inference: old log-probs and values (gradient precision), reference, reward */
    profile_tokens_t pol = {all, all, 0, all}, ref = {all, all, 0, 0}, rm = {all, 0, s->rows, 0};
    profile_cost_forward(m->policy, m->t_policy, PREC_GRADIENT, &pol, 1, &acc[PROFILE_PH_REWARD]);
    profile_cost_forward(m->reference, m->t_reference, PREC_REWARD, &ref, 1,
                         &acc[PROFILE_PH_REWARD]);
    profile_cost_forward(m->reward, m->t_reward, PREC_REWARD, &rm, 1, &acc[PROFILE_PH_REWARD]);
    /* gradient update: every epoch sees every token once, in `minibatches` calls */
    profile_tokens_t tr = {s->epochs * all, s->epochs * all, 0, s->epochs * all};
    double calls = (double)s->epochs * (s->minibatches > 0 ? s->minibatches : 1);
    profile_cost_forward(m->policy, m->t_policy, PREC_GRADIENT, &tr, calls,
                         &acc[PROFILE_PH_GRADIENT]);
    profile_cost_backward(m->policy, m->t_policy, &tr, calls, &acc[PROFILE_PH_GRADIENT]);
}
