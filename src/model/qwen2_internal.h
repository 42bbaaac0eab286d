/* qwen2_internal: the model's state, shared by qwen2.c (build, forward, backward,
 * optimizer), qwen2_decode.c (generation) and qwen2_io.c (Hugging Face directories).
 * Not for other layers: they use qwen2.h. */
#ifndef MXRLHF_MODEL_QWEN2_INTERNAL_H
#define MXRLHF_MODEL_QWEN2_INTERNAL_H

#include "model/qwen2.h"

#define QWEN2_NONE ((size_t)-1)

/* Offsets (floats into the parameter buffer) of one decoder layer's tensors. */
typedef struct qwen2_layer_off {
    size_t ln1, q_w, q_b, k_w, k_b, v_w, v_b, o_w, ln2, gate, up, down;
} qwen2_layer_off_t;

/* A linear layer: its weight (N, K), optional bias, and its quantized-weight cache. */
typedef struct qwen2_linear {
    char name[80];
    size_t w, b;           /* offsets; b = QWEN2_NONE without bias */
    int N, K;
    be_wcache_t *wc;
    uint64_t stream_base;  /* rng_stream(name, 0): stochastic rounding streams derive from it */
} qwen2_linear_t;

/* Linear layers of a decoder layer, in table order. */
enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_PER_LAYER };

/* Activations of one decoder layer: everything backward needs. In inference one set
 * serves every layer. Rows are (B*T) tokens. */
typedef struct qwen2_act_layer {
    be_ptr_t x;      /* (N, H) residual stream in */
    be_ptr_t xn1;    /* (N, H) rmsnorm1(x) */
    be_ptr_t rstd1;  /* (N) */
    be_ptr_t q;      /* (N, qd) after rope */
    be_ptr_t k, v;   /* (N, kvd) k after rope */
    be_ptr_t att;    /* (N, qd) attention output */
    be_ptr_t lse;    /* (B, heads, T) */
    be_ptr_t h;      /* (N, H) x + o_proj(att) */
    be_ptr_t xn2;    /* (N, H) */
    be_ptr_t rstd2;  /* (N) */
    be_ptr_t gate, up, act; /* (N, I) */
} qwen2_act_layer_t;

struct qwen2_model {
    backend_t *be;
    qwen2_config_t cfg;
    qwen2_opts_t opts;
    cJSON *config_json;     /* the loaded config.json (kept for saving), or NULL */

    /* parameters */
    qwen2_tensor_t *tensors;
    int ntensors;
    size_t nparams;
    size_t embed, norm, lm_head, score, vhead_w, vhead_b;   /* QWEN2_NONE when absent */
    qwen2_layer_off_t *loff;
    be_buf_t *params, *grads, *adam_m, *adam_v;
    /* Frozen models keep the decoder layers' linear weights (and an untied lm_head) at
     * offsets [nkeep, nparams), in their own buffer params_lin, NULL once qwen2_freeze has
     * freed it; other models have nkeep == nparams. */
    size_t nkeep;
    be_buf_t *params_lin;
    bool dropped;               /* qwen2_freeze freed params_lin */
    prec_phase_t frozen_phase;
    uint64_t frozen_version;
    mx_spec_t *frozen_spec;     /* per linear layer: its weight spec when frozen */
    prec_compute_t frozen_compute;
    uint64_t version;
    long adam_step;
    double loss_scale;
    int good_steps;

    /* linear layers: LIN_PER_LAYER per decoder layer, then lm_head, score, v_head */
    qwen2_linear_t *lin;
    int nlin;
    int lin_lm, lin_score, lin_vhead;   /* -1 when absent */
    const char **lin_names;
    prec_table_t table;

    /* rotary tables (npos, head_dim/2) */
    be_buf_t *rope;
    be_ptr_t rope_cos, rope_sin;
    int npos;

    /* activations, all in one buffer. N = max_batch x max_seq rows for inference (set 0,
     * the final norm, per-token outputs); Nt = max_train_batch x max_seq for what only
     * TRAIN forwards and backward use (sets 1.., xfin, backward scratch). In training the
     * sets share set 0's xn1, xn2 and act: backward recomputes them (RMSNorm and SwiGLU
     * forwards, the same bits) instead of keeping them per layer. */
    be_buf_t *act;
    size_t act_bytes;
    int ntrain;                 /* max_train_batch (max_batch when 0 was given) */
    int nsets;                  /* layers when training, else 1 */
    qwen2_act_layer_t *sets;
    be_ptr_t xfin, xnf, rstdf;  /* (Nt, H), (N, H), (N) */
    be_ptr_t logits;            /* (logits_cap, V): one chunk of rows */
    int logits_cap;             /* rows of a chunk */
    be_ptr_t lse_lm, logp, ent; /* (N) */
    be_ptr_t head_out;          /* (N) value or score per position */
    be_ptr_t dseed;             /* (N) backward seeds (dlogp, dent, dvalues) */
    be_ptr_t dseed2;            /* (N) */
    be_ptr_t ids, ids_grad, targets, pos, padl; /* int32: (N), (N), (N), (N), (B) */
    be_ptr_t last_rows;         /* (B, H) gathered last-token states for prefill */
    /* generation's device-side record (qwen2_decode.c): int32 out ids and float log-probs
     * (kv_batch, kv_len), be_dec_sample_t's state words, done flags and lengths (kv_batch) */
    be_ptr_t gen_out, gen_logp, gen_state, gen_done, gen_len;
    /* backward scratch */
    be_ptr_t dres, dxn, dq, dk, dv, datt, dgate, dup, dact;

    /* host-side staging, allocated once */
    int32_t *h_ids, *h_ids_grad, *h_pos, *h_padl, *h_len, *h_tgt;
    float *h_seed;

    /* KV cache: per layer K then V, each (kv_batch, kv_len, kvd) */
    be_buf_t *kv;
    size_t kv_bytes;

    /* what the last forward left */
    int fwd_B, fwd_T;
    unsigned fwd_flags;
    prec_ctx_t fwd_ctx;         /* chunks of logits are computed under the forward's context */
    bool have_targets, logits_valid;
    int logits_rows;            /* rows of logits the last op produced */
    bool logits_lazy;           /* a forward's: any chunk can be computed from xnf */
    int lg_r0, lg_n;            /* rows [lg_r0, lg_r0 + lg_n) are in the logits buffer */
};

static inline be_ptr_t qp(const qwen2_model_t *m, size_t off)
{
    return off < m->nkeep ? be_ptr(m->params, off * 4) : be_ptr(m->params_lin, (off - m->nkeep) * 4);
}
static inline be_ptr_t qg(const qwen2_model_t *m, size_t off) { return be_ptr(m->grads, off * 4); }

/* Layer L's K (v = 0) or V (v = 1) cache: (kv_batch, kv_len, kv_heads * head_dim) */
static inline be_ptr_t qwen2__kv(const qwen2_model_t *m, int L, int v)
{
    size_t per = (size_t)m->opts.kv_batch * m->opts.kv_len * m->cfg.kv_heads * m->cfg.head_dim;
    return be_ptr(m->kv, (size_t)(2 * L + v) * per * sizeof(float));
}

/* shared between qwen2.c and qwen2_decode.c */
void qwen2__linear_args(const qwen2_model_t *m, const prec_ctx_t *ctx, int li, be_ptr_t x, int M,
                        be_linear_t *a);
void qwen2__layer_forward(qwen2_model_t *m, const prec_ctx_t *ctx, int L, qwen2_act_layer_t *S,
                          be_ptr_t x_out, int B, int Tq, int kv_t);
void qwen2__lin_fwd(qwen2_model_t *m, const prec_ctx_t *ctx, int li, be_ptr_t x, int M,
                    be_ptr_t y, bool acc);
int qwen2__prepare_batch(qwen2_model_t *m, const qwen2_batch_t *b, err_t *e);
int qwen2__init_heads(qwen2_model_t *m, bool score, bool value, err_t *e);
/* ERR_INPUT when a frozen model whose float32 linear weights were freed is asked to run
 * in another phase or with another weight precision than it was frozen with. */
int qwen2__frozen_check(const qwen2_model_t *m, const prec_ctx_t *ctx, err_t *e);

#endif
