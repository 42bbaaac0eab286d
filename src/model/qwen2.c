/* qwen2: building the model, the training forward and backward, AdamW.
 * Generation is in qwen2_decode.c, Hugging Face directories in qwen2_io.c.
 * Shapes: B batch rows, T tokens per row, N = B*T, H hidden, qd = heads*head_dim,
 * kvd = kv_heads*head_dim, I intermediate, V vocab. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2_internal.h"
#include "util/rng.h"

/* ---- parameter layout ------------------------------------------------------------------- */

#define ALIGN_F 16 /* every tensor starts on a 64-byte boundary */

static size_t add_tensor(qwen2_model_t *m, size_t *off, const char *name, int ndim, int64_t d0,
                         int64_t d1, bool decay)
{
    qwen2_tensor_t *t = &m->tensors[m->ntensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->off = *off;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim > 1 ? d1 : 1;
    t->numel = (size_t)d0 * (size_t)(ndim > 1 ? d1 : 1);
    t->decay = decay;
    *off += (t->numel + ALIGN_F - 1) / ALIGN_F * ALIGN_F;
    return t->off;
}

static void add_linear(qwen2_model_t *m, const char *name, size_t w, size_t b, int N, int K)
{
    qwen2_linear_t *l = &m->lin[m->nlin++];
    snprintf(l->name, sizeof l->name, "%s", name);
    l->w = w;
    l->b = b;
    l->N = N;
    l->K = K;
    l->stream_base = rng_stream(name, 0);
}

/* Lays the tensors out in transformers' order. A frozen model's linear weights (decoder
 * layers, untied lm_head) go to a second region starting at lin_base instead, so that they
 * can live in their own buffer (qwen2_freeze); returns the floats of the first region. */
static size_t layout_params(qwen2_model_t *m, size_t lin_base)
{
    const qwen2_config_t *c = &m->cfg;
    const int H = c->hidden, I = c->inter, qd = c->heads * c->head_dim,
              kvd = c->kv_heads * c->head_dim;
    size_t off = 0, off_lin = lin_base;
    size_t *lo = m->opts.frozen ? &off_lin : &off;
    char nm[96], ln[80];
    m->ntensors = m->nlin = 0;
    m->embed = add_tensor(m, &off, "model.embed_tokens.weight", 2, c->vocab, H, true);
    for (int L = 0; L < c->layers; L++) {
        qwen2_layer_off_t *o = &m->loff[L];
#define T1(field, suffix, n)                                                                  \
    snprintf(nm, sizeof nm, "model.layers.%d.%s", L, suffix);                                 \
    o->field = add_tensor(m, &off, nm, 1, n, 0, false)
#define T2(field, suffix, r, cc)                                                              \
    snprintf(nm, sizeof nm, "model.layers.%d.%s", L, suffix);                                 \
    o->field = add_tensor(m, lo, nm, 2, r, cc, true)
        T1(ln1, "input_layernorm.weight", H);
        T2(q_w, "self_attn.q_proj.weight", qd, H);
        T1(q_b, "self_attn.q_proj.bias", qd);
        T2(k_w, "self_attn.k_proj.weight", kvd, H);
        T1(k_b, "self_attn.k_proj.bias", kvd);
        T2(v_w, "self_attn.v_proj.weight", kvd, H);
        T1(v_b, "self_attn.v_proj.bias", kvd);
        T2(o_w, "self_attn.o_proj.weight", H, qd);
        T1(ln2, "post_attention_layernorm.weight", H);
        T2(gate, "mlp.gate_proj.weight", I, H);
        T2(up, "mlp.up_proj.weight", I, H);
        T2(down, "mlp.down_proj.weight", H, I);
#undef T1
#undef T2
        static const char *const lnames[LIN_PER_LAYER] = {
            "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
        const size_t w[LIN_PER_LAYER] = {o->q_w, o->k_w, o->v_w, o->o_w, o->gate, o->up, o->down};
        const size_t b[LIN_PER_LAYER] = {o->q_b, o->k_b, o->v_b, QWEN2_NONE, QWEN2_NONE,
                                         QWEN2_NONE, QWEN2_NONE};
        const int N[LIN_PER_LAYER] = {qd, kvd, kvd, H, I, I, H};
        const int K[LIN_PER_LAYER] = {H, H, H, qd, H, H, I};
        for (int i = 0; i < LIN_PER_LAYER; i++) {
            snprintf(ln, sizeof ln, "model.layers.%d.%s", L, lnames[i]);
            add_linear(m, ln, w[i], b[i], N[i], K[i]);
        }
    }
    m->norm = add_tensor(m, &off, "model.norm.weight", 1, H, 0, false);
    m->lm_head = m->score = m->vhead_w = m->vhead_b = QWEN2_NONE;
    m->lin_lm = m->lin_score = m->lin_vhead = -1;
    if (m->opts.heads & QWEN2_HEAD_LM) {
        m->lm_head = c->tie ? m->embed : add_tensor(m, lo, "lm_head.weight", 2, c->vocab, H, true);
        m->lin_lm = m->nlin;
        add_linear(m, "lm_head", m->lm_head, QWEN2_NONE, c->vocab, H);
    }
    if (m->opts.heads & QWEN2_HEAD_SCORE) {
        m->score = add_tensor(m, &off, "score.weight", 2, 1, H, true);
        m->lin_score = m->nlin;
        add_linear(m, "score", m->score, QWEN2_NONE, 1, H);
    }
    if (m->opts.heads & QWEN2_HEAD_VALUE) {
        m->vhead_w = add_tensor(m, &off, "v_head.summary.weight", 2, 1, H, true);
        m->vhead_b = add_tensor(m, &off, "v_head.summary.bias", 1, 1, 0, false);
        m->lin_vhead = m->nlin;
        add_linear(m, "v_head.summary", m->vhead_w, m->vhead_b, 1, H);
    }
    m->nparams = m->opts.frozen ? off_lin : off;
    m->nkeep = m->opts.frozen ? lin_base : off;
    return off;
}

/* ---- activation layout ------------------------------------------------------------------ */

/* Rows of logits held at once (qwen2_opts_t.logits_rows). */
static int logits_cap(const qwen2_opts_t *o, int V)
{
    const size_t N = (size_t)o->max_batch * o->max_seq;
    size_t cap = o->logits_rows > 0 ? (size_t)o->logits_rows : ((size_t)256 << 20) / ((size_t)V * 4);
    if (cap > 64)
        cap -= cap % 64; /* MX blocks of up to 64 along the rows stay whole in every chunk */
    if (cap < 1)
        cap = 1;
    if (cap > N)
        cap = N;
    if (cap < (size_t)o->kv_batch)
        cap = (size_t)o->kv_batch; /* generation keeps every row's logits of a step */
    return (int)cap;
}

/* Carves the activation buffer; called once with buf NULL to measure, once to assign. */
static size_t layout_act(qwen2_model_t *m, be_buf_t *buf)
{
    const qwen2_config_t *c = &m->cfg;
    const size_t N = (size_t)m->opts.max_batch * m->opts.max_seq;
    const size_t Nt = (size_t)m->ntrain * m->opts.max_seq;
    const size_t H = c->hidden, I = c->inter, qd = (size_t)c->heads * c->head_dim,
                 kvd = (size_t)c->kv_heads * c->head_dim;
    size_t off = 0;
#define CARVE(n) (off += ((size_t)(n) * 4 + 63) & ~(size_t)63, be_ptr(buf, off - (((size_t)(n) * 4 + 63) & ~(size_t)63)))
    for (int s = 0; s < m->nsets; s++) {
        /* set 0 serves inference (N rows) and is layer 0's in training; sets 1.. exist only
         * in training (Nt rows) and share set 0's xn1, xn2 and act (recomputed in backward) */
        qwen2_act_layer_t *S = &m->sets[s];
        const size_t n = s == 0 ? N : Nt;
        S->x = CARVE(n * H);
        S->xn1 = s == 0 ? CARVE(n * H) : m->sets[0].xn1;
        S->rstd1 = CARVE(n);
        S->q = CARVE(n * qd);
        S->k = CARVE(n * kvd);
        S->v = CARVE(n * kvd);
        S->att = CARVE(n * qd);
        S->lse = CARVE(n * c->heads);
        S->h = CARVE(n * H);
        S->xn2 = s == 0 ? CARVE(n * H) : m->sets[0].xn2;
        S->rstd2 = CARVE(n);
        S->gate = CARVE(n * I);
        S->up = CARVE(n * I);
        S->act = s == 0 ? CARVE(n * I) : m->sets[0].act;
    }
    m->xfin = m->opts.training ? CARVE(Nt * H) : m->sets[0].x;
    m->xnf = CARVE(N * H);
    m->rstdf = CARVE(N);
    m->logits = (m->opts.heads & QWEN2_HEAD_LM) ? CARVE((size_t)m->logits_cap * c->vocab) : BE_NULL;
    m->lse_lm = CARVE(N);
    m->logp = CARVE(N);
    m->ent = CARVE(N);
    m->head_out = CARVE(N);
    m->dseed = CARVE(N);
    m->dseed2 = CARVE(N);
    m->ids = CARVE(N);
    m->ids_grad = CARVE(N);
    m->targets = CARVE(N);
    m->pos = CARVE(N);
    m->padl = CARVE(N);
    m->last_rows = CARVE((size_t)(m->opts.max_batch > m->opts.kv_batch ? m->opts.max_batch
                                                                          : m->opts.kv_batch) * H);
    if (m->opts.kv_batch > 0) { /* generation's record on the device (qwen2_decode.c) */
        m->gen_out = CARVE((size_t)m->opts.kv_batch * m->opts.kv_len);
        m->gen_logp = CARVE((size_t)m->opts.kv_batch * m->opts.kv_len);
        m->gen_state = CARVE(BE_DEC_STATE_WORDS);
        m->gen_done = CARVE(m->opts.kv_batch);
        m->gen_len = CARVE(m->opts.kv_batch);
    }
    if (m->opts.training) {
        m->dres = CARVE(Nt * H);
        m->dxn = CARVE(Nt * H);
        m->dq = CARVE(Nt * qd);
        m->dk = CARVE(Nt * kvd);
        m->dv = CARVE(Nt * kvd);
        m->datt = CARVE(Nt * qd);
        m->dgate = CARVE(Nt * I);
        m->dup = CARVE(Nt * I);
        m->dact = CARVE(Nt * I);
    }
#undef CARVE
    return off;
}

/* ---- construction ----------------------------------------------------------------------- */

static int rope_tables(qwen2_model_t *m, err_t *e)
{
    const int D = m->cfg.head_dim, h = D / 2;
    m->npos = m->opts.max_seq > m->opts.kv_len ? m->opts.max_seq : m->opts.kv_len;
    size_t n = (size_t)m->npos * h;
    m->rope = be_alloc(m->be, 2 * n * sizeof(float), e);
    if (!m->rope)
        return e->code;
    m->rope_cos = be_ptr(m->rope, 0);
    m->rope_sin = be_ptr(m->rope, n * sizeof(float));
    float *tab = err_malloc(e, 2 * n * sizeof *tab, "rotary tables");
    if (!tab)
        return e->code;
    /* transformers: inv_freq = 1 / theta^(arange(0, D, 2) / D) and angle = pos * inv_freq,
     * both in float32; cos and sin of the float32 angle */
    for (int i = 0; i < h; i++) {
        float inv = 1.0f / powf((float)m->cfg.rope_theta, (float)(2 * i) / (float)D);
        for (int p = 0; p < m->npos; p++) {
            float ang = (float)p * inv;
            tab[(size_t)p * h + i] = cosf(ang);
            tab[n + (size_t)p * h + i] = sinf(ang);
        }
    }
    be_upload(m->be, m->rope_cos, tab, 2 * n * sizeof *tab);
    free(tab);
    return ERR_OK;
}

int qwen2_new(backend_t *be, const qwen2_config_t *cfg, const qwen2_opts_t *opts,
              qwen2_model_t **out, err_t *e)
{
    *out = NULL;
    if (qwen2_config_check(cfg, "config", e))
        return e->code;
    if (opts->max_batch < 1 || opts->max_seq < 1 || opts->kv_batch < 0 || opts->kv_len < 0 ||
        (size_t)opts->max_batch * opts->max_seq > (1u << 30))
        return err_set(e, ERR_INPUT, "model options: max_batch and max_seq must be >= 1 "
                       "(got %d and %d)", opts->max_batch, opts->max_seq);
    if ((size_t)opts->kv_batch > (size_t)opts->max_batch * opts->max_seq)
        return err_set(e, ERR_INPUT, "model options: kv_batch %d exceeds the activation rows "
                       "(%d x %d)", opts->kv_batch, opts->max_batch, opts->max_seq);
    if (opts->max_train_batch < 0 || opts->max_train_batch > opts->max_batch ||
        opts->logits_rows < 0)
        return err_set(e, ERR_INPUT, "model options: max_train_batch must be in [0, max_batch "
                       "%d] and logits_rows >= 0 (got %d and %d)", opts->max_batch,
                       opts->max_train_batch, opts->logits_rows);
    if (opts->frozen && opts->training)
        return err_set(e, ERR_INPUT, "model options: a frozen model cannot be trained");
    qwen2_model_t *m = err_calloc(e, 1, sizeof *m, "the model");
    if (!m)
        return e->code;
    m->be = be;
    m->cfg = *cfg;
    m->opts = *opts;
    if (!m->opts.heads)
        m->opts.heads = QWEN2_HEAD_LM;
    if ((m->opts.heads & QWEN2_HEAD_SCORE) && (m->opts.heads & QWEN2_HEAD_VALUE)) {
        free(m);
        return err_set(e, ERR_INPUT, "model options: a model has a score head or a value "
                       "head, not both");
    }
    m->loss_scale = 1.0;
    const int L = cfg->layers;
    m->tensors = err_calloc(e, (size_t)L * 12 + 8, sizeof *m->tensors, "tensor views");
    m->loff = err_calloc(e, (size_t)L, sizeof *m->loff, "layer offsets");
    m->lin = err_calloc(e, (size_t)L * LIN_PER_LAYER + 3, sizeof *m->lin, "linear layers");
    m->lin_names = err_calloc(e, (size_t)L * LIN_PER_LAYER + 3, sizeof *m->lin_names, "names");
    if (!m->tensors || !m->loff || !m->lin || !m->lin_names)
        goto fail;
    size_t nk = layout_params(m, 0);
    if (opts->frozen)
        layout_params(m, nk);
    for (int i = 0; i < m->nlin; i++) {
        m->lin_names[i] = m->lin[i].name;
        if (!(m->lin[i].wc = be_wcache_new(be, e)))
            goto fail;
    }
    if (prec_table_init_fp32(&m->table, opts->role, m->lin_names, m->nlin, e))
        goto fail;

    size_t pb = m->nparams * sizeof(float), kb = m->nkeep * sizeof(float);
    if (!(m->params = be_alloc(be, kb ? kb : 4, e)))
        goto fail;
    be_zero(be, be_ptr(m->params, 0), kb);
    if (pb > kb) {
        if (!(m->params_lin = be_alloc(be, pb - kb, e)))
            goto fail;
        be_zero(be, be_ptr(m->params_lin, 0), pb - kb);
    }
    if (opts->training) {
        if (!(m->grads = be_alloc(be, pb, e)) || !(m->adam_m = be_alloc(be, pb, e)) ||
            !(m->adam_v = be_alloc(be, pb, e)))
            goto fail;
        be_zero(be, be_ptr(m->grads, 0), pb);
        be_zero(be, be_ptr(m->adam_m, 0), pb);
        be_zero(be, be_ptr(m->adam_v, 0), pb);
    }

    m->ntrain = opts->max_train_batch > 0 ? opts->max_train_batch : opts->max_batch;
    m->logits_cap = logits_cap(opts, cfg->vocab);
    m->nsets = opts->training ? L : 1;
    m->sets = err_calloc(e, (size_t)m->nsets, sizeof *m->sets, "activation sets");
    if (!m->sets)
        goto fail;
    m->act_bytes = layout_act(m, NULL);
    if (!(m->act = be_alloc(be, m->act_bytes, e)))
        goto fail;
    layout_act(m, m->act);
    be_zero(be, be_ptr(m->act, 0), m->act_bytes);

    if (opts->kv_batch > 0 && opts->kv_len > 0) {
        m->kv_bytes = 2 * (size_t)L * opts->kv_batch * opts->kv_len *
                      ((size_t)cfg->kv_heads * cfg->head_dim) * sizeof(float);
        if (!(m->kv = be_alloc(be, m->kv_bytes, e)))
            goto fail;
    }
    if (rope_tables(m, e))
        goto fail;

    size_t N = (size_t)opts->max_batch * opts->max_seq;
    m->h_ids = err_malloc(e, N * sizeof(int32_t), "ids");
    m->h_ids_grad = err_malloc(e, N * sizeof(int32_t), "ids");
    m->h_pos = err_malloc(e, N * sizeof(int32_t), "positions");
    m->h_padl = err_malloc(e, N * sizeof(int32_t), "padding");
    m->h_len = err_malloc(e, N * sizeof(int32_t), "lengths");
    m->h_tgt = err_malloc(e, N * sizeof(int32_t), "targets");
    m->h_seed = err_malloc(e, N * sizeof(float), "gradient seeds");
    if (!m->h_ids || !m->h_ids_grad || !m->h_pos || !m->h_padl || !m->h_len || !m->h_tgt ||
        !m->h_seed)
        goto fail;
    if (be_sync(be, e))
        goto fail;
    *out = m;
    return ERR_OK;
fail:
    qwen2_free(m);
    return e && e->code ? e->code : ERR_NOMEM;
}

void qwen2_free(qwen2_model_t *m)
{
    if (!m)
        return;
    backend_t *be = m->be;
    for (int i = 0; i < m->nlin; i++)
        be_wcache_free(be, m->lin[i].wc);
    be_free(be, m->params);
    be_free(be, m->params_lin);
    free(m->frozen_spec);
    be_free(be, m->grads);
    be_free(be, m->adam_m);
    be_free(be, m->adam_v);
    be_free(be, m->act);
    be_free(be, m->kv);
    be_free(be, m->rope);
    prec_table_free(&m->table);
    cJSON_Delete(m->config_json);
    free(m->tensors);
    free(m->loff);
    free(m->lin);
    free(m->lin_names);
    free(m->sets);
    free(m->h_ids);
    free(m->h_ids_grad);
    free(m->h_pos);
    free(m->h_padl);
    free(m->h_len);
    free(m->h_tgt);
    free(m->h_seed);
    free(m);
}

const qwen2_config_t *qwen2_config(const qwen2_model_t *m) { return &m->cfg; }
backend_t *qwen2_backend(const qwen2_model_t *m) { return m->be; }
int qwen2_ntensors(const qwen2_model_t *m) { return m->ntensors; }
const qwen2_tensor_t *qwen2_tensor(const qwen2_model_t *m, int i) { return &m->tensors[i]; }
size_t qwen2_nparams(const qwen2_model_t *m) { return m->nparams; }
be_ptr_t qwen2_params(const qwen2_model_t *m) { return be_ptr(m->params, 0); }
be_ptr_t qwen2_grads(const qwen2_model_t *m) { return m->grads ? be_ptr(m->grads, 0) : BE_NULL; }
uint64_t qwen2_version(const qwen2_model_t *m) { return m->version; }
void qwen2_params_touched(qwen2_model_t *m) { m->version++; }
double qwen2_loss_scale(const qwen2_model_t *m) { return m->loss_scale; }
prec_table_t *qwen2_precision(qwen2_model_t *m) { return &m->table; }

const qwen2_tensor_t *qwen2_tensor_find(const qwen2_model_t *m, const char *name)
{
    for (int i = 0; i < m->ntensors; i++)
        if (!strcmp(m->tensors[i].name, name))
            return &m->tensors[i];
    return NULL;
}

static int range_ok(const qwen2_model_t *m, size_t off, size_t n, err_t *e)
{
    if (off > m->nparams || n > m->nparams - off)
        return err_set(e, ERR_INPUT, "model: range [%zu, %zu) outside the %zu parameters", off,
                       off + n, m->nparams);
    return ERR_OK;
}

/* Host copies of parameters [off, off + n), in two pieces when the range crosses into a
 * frozen model's region of linear weights. */
static int params_xfer(qwen2_model_t *m, size_t off, float *get, const float *set, size_t n,
                       err_t *e)
{
    if (range_ok(m, off, n, e))
        return e->code;
    if (m->dropped && off + n > m->nkeep)
        return err_set(e, ERR_INPUT, "model: parameters [%zu, %zu) include linear weights whose "
                       "float32 copies were freed (a frozen model)", off, off + n);
    size_t n1 = off >= m->nkeep ? 0 : (n < m->nkeep - off ? n : m->nkeep - off);
    size_t done = 0;
    for (int part = 0; part < 2; part++) {
        size_t k = part == 0 ? n1 : n - n1;
        if (!k)
            continue;
        if (get)
            be_download(m->be, get + done, qp(m, off + done), k * sizeof(float));
        else
            be_upload(m->be, qp(m, off + done), set + done, k * sizeof(float));
        done += k;
    }
    return be_sync(m->be, e);
}

int qwen2_params_get(qwen2_model_t *m, size_t off, float *host, size_t n, err_t *e)
{
    return params_xfer(m, off, host, NULL, n, e);
}

int qwen2_params_set(qwen2_model_t *m, size_t off, const float *host, size_t n, err_t *e)
{
    int rc = params_xfer(m, off, NULL, host, n, e);
    if (!rc)
        m->version++;
    return rc;
}

int qwen2_grads_get(qwen2_model_t *m, size_t off, float *host, size_t n, err_t *e)
{
    if (!m->grads)
        return err_set(e, ERR_INPUT, "model: no gradients (the model was not built for training)");
    if (range_ok(m, off, n, e))
        return e->code;
    be_download(m->be, host, qg(m, off), n * sizeof *host);
    return be_sync(m->be, e);
}

/* ---- initialisation ---------------------------------------------------------------------- */

static bool is_norm(const char *name)
{
    size_t n = strlen(name);
    return n >= 11 && !strcmp(name + n - 11, "norm.weight");
}

static bool is_bias(const char *name)
{
    size_t n = strlen(name);
    return n >= 5 && !strcmp(name + n - 5, ".bias");
}

/* normal: transformers' _init_weights (N(0, range) weights, zero biases, unit norms) through
 * Box-Muller on Philox words; otherwise the uniform of qwen2_init_philox */
static int fill_tensor(qwen2_model_t *m, const qwen2_tensor_t *t, uint64_t seed, float range,
                            bool normal, err_t *e)
{
    float *host = be_host_addr(m->be, qp(m, t->off));
    float *buf = host ? host : err_malloc(e, t->numel * sizeof *buf, "initial values");
    if (!buf)
        return e->code;
    uint64_t stream = rng_stream(t->name, 0);
    bool norm = is_norm(t->name), bias = is_bias(t->name);
    /* word i is lane i%4 of Philox block i/4 (rng_u32); one block serves four elements */
    const size_t nblk = (t->numel + 3) / 4;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < nblk; k++) {
        rng_block_t r = rng_philox4x32_10((uint32_t)k, (uint32_t)((uint64_t)k >> 32),
                                          (uint32_t)stream, (uint32_t)(stream >> 32),
                                          (uint32_t)seed, (uint32_t)(seed >> 32));
        if (normal) {
            /* lanes (0, 1) and (2, 3) each give two N(0, 1) values; u1 in (0, 1] */
            float z[4];
            for (int p = 0; p < 2; p++) {
                double u1 = ((double)(r.v[2 * p] >> 8) + 0.5) * 0x1p-24;
                double u2 = (double)(r.v[2 * p + 1] >> 8) * 0x1p-24;
                double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
                z[2 * p] = (float)(rad * cos(th));
                z[2 * p + 1] = (float)(rad * sin(th));
            }
            for (size_t l = 0; l < 4 && 4 * k + l < t->numel; l++)
                buf[4 * k + l] = norm ? 1.0f : bias ? 0.0f : z[l] * range;
            continue;
        }
        for (size_t l = 0; l < 4 && 4 * k + l < t->numel; l++) {
            float u = (float)(r.v[l] >> 8) * 0x1p-24f;
            float x = 2.0f * u - 1.0f;
            buf[4 * k + l] = norm ? 1.0f + x * 0.1f : x * range;
        }
    }
    if (!host) {
        be_upload(m->be, qp(m, t->off), buf, t->numel * sizeof *buf);
        free(buf);
    }
    return ERR_OK;
}

static int init_all(qwen2_model_t *m, uint64_t seed, float range, bool normal, err_t *e)
{
    if (m->dropped)
        return err_set(e, ERR_INPUT, "model: a frozen model's float32 linear weights were freed");
    for (int i = 0; i < m->ntensors; i++)
        if (fill_tensor(m, &m->tensors[i], seed, range, normal, e))
            return e->code;
    m->version++;
    return be_sync(m->be, e);
}

int qwen2_init_philox(qwen2_model_t *m, uint64_t seed, float range, err_t *e)
{
    return init_all(m, seed, range, false, e);
}

int qwen2_init_normal(qwen2_model_t *m, uint64_t seed, float std, err_t *e)
{
    return init_all(m, seed, std, true, e);
}

int qwen2__init_heads(qwen2_model_t *m, bool score, bool value, err_t *e)
{
    /* std 0.02 (transformers' initializer_range) as a uniform: range 0.02 * sqrt(3) */
    const float range = 0.0346410162f;
    for (int i = 0; i < m->ntensors; i++) {
        const qwen2_tensor_t *t = &m->tensors[i];
        bool is_score = !strcmp(t->name, "score.weight");
        bool is_vw = !strcmp(t->name, "v_head.summary.weight");
        bool is_vb = !strcmp(t->name, "v_head.summary.bias");
        if ((score && is_score) || (value && is_vw)) {
            if (fill_tensor(m, t, m->opts.head_seed, range, false, e))
                return e->code;
        } else if (value && is_vb) {
            be_zero(m->be, qp(m, t->off), t->numel * sizeof(float));
        }
    }
    m->version++;
    return be_sync(m->be, e);
}

/* ---- precision ---------------------------------------------------------------------------- */

int qwen2_linear_names(const qwen2_model_t *m, const char *const **names)
{
    *names = m->lin_names;
    return m->nlin;
}

int qwen2_set_plan(qwen2_model_t *m, const prec_plan_t *plan, const char *source, err_t *e)
{
    if (m->dropped)
        return err_set(e, ERR_INPUT, "model: a frozen model keeps the plan it was frozen with "
                       "(its float32 linear weights were freed)");
    prec_table_t t;
    if (prec_resolve(plan, source, m->opts.role, m->lin_names, m->nlin, &t, e))
        return e->code;
    prec_table_free(&m->table);
    m->table = t;
    m->loss_scale = t.compute == PREC_COMPUTE_FP16 ? t.loss_scale.init : 1.0;
    m->good_steps = 0;
    return ERR_OK;
}

void qwen2__linear_args(const qwen2_model_t *m, const prec_ctx_t *ctx, int li, be_ptr_t x, int M,
                        be_linear_t *a)
{
    const qwen2_linear_t *l = &m->lin[li];
    memset(a, 0, sizeof *a);
    a->x = x;
    a->w = qp(m, l->w);
    a->b = l->b == QWEN2_NONE ? BE_NULL : qp(m, l->b);
    a->M = M;
    a->N = l->N;
    a->K = l->K;
    for (int op = 0; op < PREC_OPERAND_COUNT; op++)
        a->spec[op] = *prec_spec(&m->table, li, ctx->phase, (prec_operand_t)op);
    a->compute = prec_compute_for(&m->table, ctx->phase);
    a->wcache = l->wc;
    a->wversion = m->version;
    a->seed = ctx->seed;
    /* operand o of this layer at this step draws from stream + o */
    a->stream = (l->stream_base ^ (ctx->step * 0x9E3779B97F4A7C15ull)) & ~(uint64_t)7;
}

void qwen2__lin_fwd(qwen2_model_t *m, const prec_ctx_t *ctx, int li, be_ptr_t x, int M,
                    be_ptr_t y, bool acc)
{
    be_linear_t a;
    qwen2__linear_args(m, ctx, li, x, M, &a);
    be_linear_fwd(m->be, &a, y, acc);
}


/* ---- forward ------------------------------------------------------------------------------ */

static be_ptr_t kv_k(const qwen2_model_t *m, int L) { return qwen2__kv(m, L, 0); }
static be_ptr_t kv_v(const qwen2_model_t *m, int L) { return qwen2__kv(m, L, 1); }

/* One decoder layer over B rows of Tq tokens whose residual stream is in S->x; the output
 * goes to x_out (which may be S->x). `kv_t` < 0: attention over these Tq tokens only; with
 * a KV cache, kv_t == 0 also stores K and V at cache positions [0, Tq) (prefill), and
 * kv_t > 0 (Tq == 1) stores them at kv_t and attends over cache positions [0, kv_t]. */
void qwen2__layer_forward(qwen2_model_t *m, const prec_ctx_t *ctx, int L, qwen2_act_layer_t *S,
                             be_ptr_t x_out, int B, int Tq, int kv_t)
{
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    const qwen2_layer_off_t *o = &m->loff[L];
    const int N = B * Tq, H = c->hidden, D = c->head_dim, kvd = c->kv_heads * D;
    const int li = L * LIN_PER_LAYER;

    be_rmsnorm_fwd(be, S->xn1, S->rstd1, S->x, qp(m, o->ln1), N, H, (float)c->rms_eps);
    qwen2__lin_fwd(m, ctx, li + LIN_Q, S->xn1, N, S->q, false);
    qwen2__lin_fwd(m, ctx, li + LIN_K, S->xn1, N, S->k, false);
    qwen2__lin_fwd(m, ctx, li + LIN_V, S->xn1, N, S->v, false);
    be_rope(be, S->q, m->pos, m->rope_cos, m->rope_sin, N, c->heads, D, false);
    be_rope(be, S->k, m->pos, m->rope_cos, m->rope_sin, N, c->kv_heads, D, false);

    be_attn_t at = {
        .q = S->q, .k = S->k, .v = S->v, .out = S->att, .lse = S->lse, .pad_left = m->padl,
        .kv_sb = (size_t)Tq * kvd, .kv_st = (size_t)kvd, .kv_sh = (size_t)D,
        .B = B, .Tq = Tq, .Tk = Tq, .H = c->heads, .Hkv = c->kv_heads, .D = D, .q0 = 0,
        .scale = 1.0f / sqrtf((float)D), .compute = prec_compute_for(&m->table, ctx->phase),
    };
    if (kv_t >= 0) {
        const size_t pitch = (size_t)m->opts.kv_len * kvd * sizeof(float);
        be_ptr_t kc = be_f32(kv_k(m, L), (size_t)kv_t * kvd), vc = be_f32(kv_v(m, L), (size_t)kv_t * kvd);
        size_t width = (size_t)Tq * kvd * sizeof(float);
        be_copy2d(be, kc, pitch, S->k, width, width, (size_t)B);
        be_copy2d(be, vc, pitch, S->v, width, width, (size_t)B);
        if (kv_t > 0) {
            at.k = kv_k(m, L);
            at.v = kv_v(m, L);
            at.kv_sb = (size_t)m->opts.kv_len * kvd;
            at.Tk = kv_t + 1;
            at.q0 = kv_t;
        }
    }
    be_attn_fwd(be, &at);

    const size_t rowsH = (size_t)N * H * sizeof(float);
    be_copy(be, S->h, S->x, rowsH);
    qwen2__lin_fwd(m, ctx, li + LIN_O, S->att, N, S->h, true);
    be_rmsnorm_fwd(be, S->xn2, S->rstd2, S->h, qp(m, o->ln2), N, H, (float)c->rms_eps);
    qwen2__lin_fwd(m, ctx, li + LIN_GATE, S->xn2, N, S->gate, false);
    qwen2__lin_fwd(m, ctx, li + LIN_UP, S->xn2, N, S->up, false);
    be_swiglu_fwd(be, S->act, S->gate, S->up, (size_t)N * c->inter);
    be_copy(be, x_out, S->h, rowsH);
    qwen2__lin_fwd(m, ctx, li + LIN_DOWN, S->act, N, x_out, true);
}

/* Validates a batch and uploads ids, positions and padding. */
int qwen2__prepare_batch(qwen2_model_t *m, const qwen2_batch_t *b, err_t *e)
{
    const int B = b->B, T = b->T, V = m->cfg.vocab;
    if (B < 1 || T < 1 || T > m->opts.max_seq ||
        (size_t)B * T > (size_t)m->opts.max_batch * m->opts.max_seq)
        return err_set(e, ERR_INPUT, "batch of %d x %d tokens does not fit the model's "
                       "activations (max %d rows x %d tokens)", B, T, m->opts.max_batch,
                       m->opts.max_seq);
    if (!b->ids)
        return err_set(e, ERR_INPUT, "batch: no ids");
    for (int r = 0; r < B; r++) {
        int pl = b->pad_left ? b->pad_left[r] : 0;
        int len = b->len ? b->len[r] : T - pl;
        if (pl < 0 || len < 1 || pl + len > T)
            return err_set(e, ERR_INPUT, "batch row %d: padding %d and length %d do not fit "
                           "%d tokens (each row needs at least one real token)", r, pl, len, T);
        m->h_padl[r] = pl;
        m->h_len[r] = len;
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)r * T + t;
            bool real = t >= pl && t < pl + len;
            int32_t id = b->ids[i];
            if (real && (id < 0 || id >= V))
                return err_set(e, ERR_INPUT, "batch row %d, position %d: token id %d is "
                               "outside the vocabulary [0, %d)", r, t, id, V);
            m->h_ids[i] = real ? id : 0;
            m->h_ids_grad[i] = real ? id : -1;
            m->h_pos[i] = t >= pl ? t - pl : 0;
        }
    }
    size_t n = (size_t)B * T * sizeof(int32_t);
    be_upload(m->be, m->ids, m->h_ids, n);
    be_upload(m->be, m->ids_grad, m->h_ids_grad, n);
    be_upload(m->be, m->pos, m->h_pos, n);
    be_upload(m->be, m->padl, m->h_padl, (size_t)B * sizeof(int32_t));
    return ERR_OK;
}

/* Checks what a forward may be asked for. */
static int forward_check(const qwen2_model_t *m, const prec_ctx_t *ctx, unsigned flags, err_t *e)
{
    if ((flags & QWEN2_FWD_TRAIN) && !m->opts.training)
        return err_set(e, ERR_INPUT, "forward: TRAIN needs a model built for training");
    if ((flags & QWEN2_FWD_LOGITS) && m->lin_lm < 0)
        return err_set(e, ERR_INPUT, "forward: the model has no lm_head");
    if ((flags & QWEN2_FWD_VALUES) && m->lin_vhead < 0)
        return err_set(e, ERR_INPUT, "forward: the model has no value head");
    if ((flags & QWEN2_FWD_SCORES) && m->lin_score < 0)
        return err_set(e, ERR_INPUT, "forward: the model has no score head");
    if ((unsigned)ctx->phase >= PREC_PHASE_COUNT)
        return err_set(e, ERR_INPUT, "forward: bad phase");
    return qwen2__frozen_check(m, ctx, e);
}

int qwen2__frozen_check(const qwen2_model_t *m, const prec_ctx_t *ctx, err_t *e)
{
    if (!m->dropped)
        return ERR_OK;
    if (ctx->phase != m->frozen_phase)
        return err_set(e, ERR_INPUT, "frozen model: it runs in the %s phase only (its float32 "
                       "linear weights were freed), not in %s", prec_phase_name(m->frozen_phase),
                       prec_phase_name(ctx->phase));
    bool same = m->version == m->frozen_version &&
                prec_compute_for(&m->table, ctx->phase) == m->frozen_compute;
    for (int i = 0; same && i < m->nlin; i++)
        same = mx_spec_equal(prec_spec(&m->table, i, ctx->phase, PREC_OP_WEIGHT),
                             &m->frozen_spec[i]);
    if (!same)
        return err_set(e, ERR_INPUT, "frozen model: its weights or precision table changed since "
                       "it was frozen (its float32 linear weights were freed)");
    return ERR_OK;
}

/* Rows [r0, r0 + n) of the last forward's logits (n <= logits_cap) into the logits buffer:
 * the lm_head over those rows of the final norm's output, under the forward's context. */
static void logits_chunk(qwen2_model_t *m, int r0, int n)
{
    if (m->lg_n == n && m->lg_r0 == r0)
        return;
    qwen2__lin_fwd(m, &m->fwd_ctx, m->lin_lm, be_f32(m->xnf, (size_t)r0 * m->cfg.hidden), n,
                   m->logits, false);
    m->lg_r0 = r0;
    m->lg_n = n;
}

/* The final norm over the residual stream xf and the heads `flags` asks for; then the
 * record of what this forward left. */
static int forward_heads(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_batch_t *b,
                         be_ptr_t xf, unsigned flags, err_t *e)
{
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    const int N = b->B * b->T, H = c->hidden;
    be_rmsnorm_fwd(be, m->xnf, m->rstdf, xf, qp(m, m->norm), N, H, (float)c->rms_eps);
    m->fwd_ctx = *ctx;
    m->lg_n = 0;
    /* logits that fit one chunk are computed now; otherwise chunk by chunk when asked for */
    if ((flags & QWEN2_FWD_LOGITS) && N <= m->logits_cap)
        logits_chunk(m, 0, N);
    if (flags & QWEN2_FWD_VALUES)
        qwen2__lin_fwd(m, ctx, m->lin_vhead, m->xnf, N, m->head_out, false);
    if (flags & QWEN2_FWD_SCORES)
        qwen2__lin_fwd(m, ctx, m->lin_score, m->xnf, N, m->head_out, false);
    if (be_sync(be, e))
        return e->code;
    m->fwd_B = b->B;
    m->fwd_T = b->T;
    m->fwd_flags = flags;
    m->logits_valid = flags & QWEN2_FWD_LOGITS;
    m->logits_lazy = true;
    m->logits_rows = (flags & QWEN2_FWD_LOGITS) ? N : 0;
    return ERR_OK;
}

int qwen2_forward(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_batch_t *b,
                  unsigned flags, err_t *e)
{
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    bool train = flags & QWEN2_FWD_TRAIN;
    if (forward_check(m, ctx, flags, e))
        return e->code;
    if (train && b->B >= 1 && b->T >= 1 && (size_t)b->B * b->T > (size_t)m->ntrain * m->opts.max_seq)
        return err_set(e, ERR_INPUT, "forward: a TRAIN batch of %d x %d tokens exceeds the "
                       "activations kept for backward (max_train_batch %d x max_seq %d)", b->B,
                       b->T, m->ntrain, m->opts.max_seq);
    m->fwd_flags = 0;
    m->logits_valid = false;
    m->have_targets = false;
    m->lg_n = 0;
    if (qwen2__prepare_batch(m, b, e))
        return e->code;
    const int N = b->B * b->T, H = c->hidden;

    be_embed_fwd(be, m->sets[0].x, qp(m, m->embed), m->ids, N, H);
    for (int L = 0; L < c->layers; L++) {
        qwen2_act_layer_t *S = train ? &m->sets[L] : &m->sets[0];
        be_ptr_t out = !train ? S->x : (L + 1 < c->layers ? m->sets[L + 1].x : m->xfin);
        qwen2__layer_forward(m, ctx, L, S, out, b->B, b->T, -1);
    }
    return forward_heads(m, ctx, b, train ? m->xfin : m->sets[0].x, flags, e);
}

int qwen2_forward_range(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_batch_t *b,
                        int first, int last, const float *x_in, float *x_out, unsigned flags,
                        err_t *e)
{
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    if (forward_check(m, ctx, flags, e))
        return e->code;
    if (flags & QWEN2_FWD_TRAIN)
        return err_set(e, ERR_INPUT, "forward range: TRAIN is not supported (use qwen2_forward)");
    if (first < 0 || last < first || last > c->layers)
        return err_set(e, ERR_INPUT, "forward range: layers [%d, %d) are not within [0, %d]",
                       first, last, c->layers);
    if (first > 0 && !x_in)
        return err_set(e, ERR_INPUT, "forward range: starting at layer %d needs the residual "
                       "stream entering it", first);
    if (last < c->layers && (flags || !x_out))
        return err_set(e, ERR_INPUT, "forward range: stopping before the last layer returns "
                       "the residual stream (x_out) and runs no head");
    m->fwd_flags = 0;
    m->logits_valid = false;
    m->have_targets = false;
    m->lg_n = 0;
    if (qwen2__prepare_batch(m, b, e))
        return e->code;
    const int N = b->B * b->T, H = c->hidden;
    const size_t bytes = (size_t)N * H * sizeof(float);
    be_ptr_t x = m->sets[0].x;
    if (first == 0)
        be_embed_fwd(be, x, qp(m, m->embed), m->ids, N, H);
    else
        be_upload(be, x, x_in, bytes);
    for (int L = first; L < last; L++)
        qwen2__layer_forward(m, ctx, L, &m->sets[0], x, b->B, b->T, -1);
    if (x_out)
        be_download(be, x_out, x, bytes);
    if (last < c->layers)
        return be_sync(be, e);
    return forward_heads(m, ctx, b, x, flags, e);
}

void qwen2_next_token_targets(const qwen2_batch_t *b, int32_t *targets)
{
    for (int r = 0; r < b->B; r++) {
        int pl = b->pad_left ? b->pad_left[r] : 0;
        int len = b->len ? b->len[r] : b->T - pl;
        for (int t = 0; t < b->T; t++) {
            size_t i = (size_t)r * b->T + t;
            targets[i] = (t >= pl && t + 1 < pl + len) ? b->ids[i + 1] : -1;
        }
    }
}

int qwen2_token_logprobs(qwen2_model_t *m, const int32_t *targets, float *logp, float *entropy,
                         err_t *e)
{
    if (!m->logits_valid || !(m->fwd_flags & QWEN2_FWD_LOGITS))
        return err_set(e, ERR_INPUT, "log-probs: no logits (run a forward with LOGITS first)");
    const int N = m->fwd_B * m->fwd_T, V = m->cfg.vocab;
    for (int i = 0; i < N; i++) {
        if (targets[i] < -1 || targets[i] >= V)
            return err_set(e, ERR_INPUT, "log-probs: target %d at position %d is outside the "
                           "vocabulary [0, %d)", targets[i], i, V);
        m->h_tgt[i] = targets[i];
    }
    be_upload(m->be, m->targets, m->h_tgt, (size_t)N * sizeof(int32_t));
    for (int r0 = 0; r0 < N; r0 += m->logits_cap) {
        const int n = N - r0 < m->logits_cap ? N - r0 : m->logits_cap;
        logits_chunk(m, r0, n);
        be_logsoftmax_gather(m->be, be_f32(m->logp, r0), be_f32(m->lse_lm, r0), m->logits,
                             be_f32(m->targets, r0), n, V);
        if (entropy)
            be_entropy(m->be, be_f32(m->ent, r0), m->logits, be_f32(m->lse_lm, r0), n, V);
    }
    if (logp)
        be_download(m->be, logp, m->logp, (size_t)N * sizeof(float));
    if (entropy)
        be_download(m->be, entropy, m->ent, (size_t)N * sizeof(float));
    if (be_sync(m->be, e))
        return e->code;
    m->have_targets = true;
    return ERR_OK;
}

int qwen2_values_get(qwen2_model_t *m, float *values, err_t *e)
{
    if (!(m->fwd_flags & QWEN2_FWD_VALUES))
        return err_set(e, ERR_INPUT, "values: the last forward did not compute VALUES");
    be_download(m->be, values, m->head_out, (size_t)m->fwd_B * m->fwd_T * sizeof(float));
    return be_sync(m->be, e);
}

int qwen2_scores_get(qwen2_model_t *m, float *scores, err_t *e)
{
    if (!(m->fwd_flags & QWEN2_FWD_SCORES))
        return err_set(e, ERR_INPUT, "scores: the last forward did not compute SCORES");
    const int T = m->fwd_T;
    for (int r = 0; r < m->fwd_B; r++) {
        size_t last = (size_t)r * T + m->h_padl[r] + m->h_len[r] - 1;
        be_download(m->be, &scores[r], be_f32(m->head_out, last), sizeof(float));
    }
    return be_sync(m->be, e);
}

int qwen2_hidden_get(qwen2_model_t *m, int layer, float *out, err_t *e)
{
    if (!m->fwd_flags)
        return err_set(e, ERR_INPUT, "hidden: no forward has run");
    const size_t n = (size_t)m->fwd_B * m->fwd_T * m->cfg.hidden * sizeof(float);
    bool train = m->fwd_flags & QWEN2_FWD_TRAIN;
    if (layer == -1) {
        be_download(m->be, out, m->xnf, n);
    } else if (layer == m->cfg.layers) {
        be_download(m->be, out, train ? m->xfin : m->sets[0].x, n);
    } else if (train && layer >= 0 && layer < m->cfg.layers) {
        be_download(m->be, out, m->sets[layer].x, n);
    } else {
        return err_set(e, ERR_INPUT, "hidden: layer %d's input is kept only by TRAIN forwards "
                       "(-1 = final norm output, %d = final norm input)", layer, m->cfg.layers);
    }
    return be_sync(m->be, e);
}

int qwen2_logits_get(qwen2_model_t *m, int row0, int nrows, float *out, err_t *e)
{
    if (!m->logits_valid || row0 < 0 || nrows < 0 || row0 + nrows > m->logits_rows)
        return err_set(e, ERR_INPUT, "logits: rows [%d, %d) not available (%d rows)", row0,
                       row0 + nrows, m->logits_valid ? m->logits_rows : 0);
    const size_t V = (size_t)m->cfg.vocab;
    if (!m->logits_lazy) { /* generation's: the rows are in the buffer */
        be_download(m->be, out, be_f32(m->logits, (size_t)(row0 - m->lg_r0) * V),
                    (size_t)nrows * V * sizeof(float));
        return be_sync(m->be, e);
    }
    /* a forward's: the chunks holding the rows, on the same grid as every other use */
    const int cap = m->logits_cap;
    for (int r = row0; r < row0 + nrows;) {
        const int c0 = r / cap * cap, cn = m->logits_rows - c0 < cap ? m->logits_rows - c0 : cap;
        const int end = row0 + nrows < c0 + cn ? row0 + nrows : c0 + cn;
        logits_chunk(m, c0, cn);
        be_download(m->be, out + (size_t)(r - row0) * V, be_f32(m->logits, (size_t)(r - c0) * V),
                    (size_t)(end - r) * V * sizeof(float));
        r = end;
    }
    return be_sync(m->be, e);
}

/* ---- backward ------------------------------------------------------------------------------ */

void qwen2_zero_grads(qwen2_model_t *m)
{
    if (m->grads)
        be_zero(m->be, be_ptr(m->grads, 0), m->nparams * sizeof(float));
}

static void lin_bwd(qwen2_model_t *m, const prec_ctx_t *ctx, int li, be_ptr_t x, int M, be_ptr_t dy,
                    be_ptr_t dx, bool dx_acc)
{
    be_linear_t a;
    const qwen2_linear_t *l = &m->lin[li];
    qwen2__linear_args(m, ctx, li, x, M, &a);
    be_linear_bwd(m->be, &a, dy, dx, dx_acc, qg(m, l->w),
                  l->b == QWEN2_NONE ? BE_NULL : qg(m, l->b));
}

/* seed = host * scale, uploaded into dst (N floats) */
static void upload_seed(qwen2_model_t *m, be_ptr_t dst, const float *host, int N, double scale)
{
    for (int i = 0; i < N; i++)
        m->h_seed[i] = (float)(host[i] * scale);
    be_upload(m->be, dst, m->h_seed, (size_t)N * sizeof(float));
}

int qwen2_backward(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_grad_in_t *g, err_t *e)
{
    backend_t *be = m->be;
    const qwen2_config_t *c = &m->cfg;
    if (!m->opts.training || !(m->fwd_flags & QWEN2_FWD_TRAIN))
        return err_set(e, ERR_INPUT, "backward: needs a TRAIN forward on a training model");
    const int B = m->fwd_B, T = m->fwd_T, N = B * T, H = c->hidden, D = c->head_dim,
              kvd = c->kv_heads * D, V = c->vocab;
    const double scale = (ctx->phase == PREC_GRADIENT && m->table.compute == PREC_COMPUTE_FP16)
                             ? m->loss_scale : 1.0;
    bool any = false;
    be_zero(be, m->dxn, (size_t)N * H * sizeof(float));

    if (g->dlogp || g->dentropy) {
        if (!m->logits_valid)
            return err_set(e, ERR_INPUT, "backward: the logits are gone (one backward per "
                           "forward) or were never computed");
        if (g->dlogp && !m->have_targets)
            return err_set(e, ERR_INPUT, "backward: dlogp given but no targets (call "
                           "qwen2_token_logprobs after the forward)");
        if (g->dlogp)
            upload_seed(m, m->dseed, g->dlogp, N, scale);
        if (g->dentropy)
            upload_seed(m, m->dseed2, g->dentropy, N, scale);
        /* chunk by chunk, last first (the one the log-probs left in the buffer): the chunk's
         * logits (recomputed unless still there), their gradient in place, then the
         * lm_head's backward over those rows */
        for (int r0 = (N - 1) / m->logits_cap * m->logits_cap; r0 >= 0; r0 -= m->logits_cap) {
            const int n = N - r0 < m->logits_cap ? N - r0 : m->logits_cap;
            be_ptr_t lse = be_f32(m->lse_lm, r0), ent = be_f32(m->ent, r0);
            logits_chunk(m, r0, n);
            if (!m->have_targets) /* entropy only: lse is needed */
                be_logsoftmax_gather(be, BE_NULL, lse, m->logits, BE_NULL, n, V);
            if (g->dentropy)
                be_entropy(be, ent, m->logits, lse, n, V);
            be_logits_bwd(be, m->logits, m->logits, lse, ent,
                          m->have_targets ? be_f32(m->targets, r0) : BE_NULL,
                          g->dlogp ? be_f32(m->dseed, r0) : BE_NULL,
                          g->dentropy ? be_f32(m->dseed2, r0) : BE_NULL, n, V);
            m->lg_n = 0; /* the buffer holds gradients now */
            lin_bwd(m, ctx, m->lin_lm, be_f32(m->xnf, (size_t)r0 * H), n, m->logits,
                    be_f32(m->dxn, (size_t)r0 * H), true);
        }
        m->logits_valid = false;
        any = true;
    }
    if (g->dvalues) {
        if (!(m->fwd_flags & QWEN2_FWD_VALUES))
            return err_set(e, ERR_INPUT, "backward: dvalues given but the forward had no VALUES");
        upload_seed(m, m->dseed, g->dvalues, N, scale);
        lin_bwd(m, ctx, m->lin_vhead, m->xnf, N, m->dseed, m->dxn, true);
        any = true;
    }
    if (g->dscores) {
        if (!(m->fwd_flags & QWEN2_FWD_SCORES))
            return err_set(e, ERR_INPUT, "backward: dscores given but the forward had no SCORES");
        for (int i = 0; i < N; i++)
            m->h_seed[i] = 0;
        for (int r = 0; r < B; r++)
            m->h_seed[(size_t)r * T + m->h_padl[r] + m->h_len[r] - 1] = (float)(g->dscores[r] * scale);
        be_upload(be, m->dseed, m->h_seed, (size_t)N * sizeof(float));
        lin_bwd(m, ctx, m->lin_score, m->xnf, N, m->dseed, m->dxn, true);
        any = true;
    }
    if (!any)
        return err_set(e, ERR_INPUT, "backward: no gradient given");

    be_rmsnorm_bwd(be, m->dres, false, qg(m, m->norm), m->dxn, m->xfin, qp(m, m->norm), m->rstdf,
                   N, H);
    for (int L = c->layers - 1; L >= 0; L--) {
        qwen2_act_layer_t *S = &m->sets[L];
        const qwen2_layer_off_t *o = &m->loff[L];
        const int li = L * LIN_PER_LAYER;
        /* xn1, xn2 and act are shared by the layers: the last layer's are still there, the
         * others' are recomputed by the same ops the forward ran (the same bits) */
        const bool fresh = L == c->layers - 1;
        /* out = h + down(silu(gate) * up) */
        if (!fresh)
            be_swiglu_fwd(be, S->act, S->gate, S->up, (size_t)N * c->inter);
        lin_bwd(m, ctx, li + LIN_DOWN, S->act, N, m->dres, m->dact, false);
        be_swiglu_bwd(be, m->dgate, m->dup, m->dact, S->gate, S->up, (size_t)N * c->inter);
        if (!fresh)
            be_rmsnorm_fwd(be, S->xn2, BE_NULL, S->h, qp(m, o->ln2), N, H, (float)c->rms_eps);
        lin_bwd(m, ctx, li + LIN_GATE, S->xn2, N, m->dgate, m->dxn, false);
        lin_bwd(m, ctx, li + LIN_UP, S->xn2, N, m->dup, m->dxn, true);
        be_rmsnorm_bwd(be, m->dres, true, qg(m, o->ln2), m->dxn, S->h, qp(m, o->ln2), S->rstd2, N, H);
        /* h = x + o_proj(attn(q, k, v)) */
        lin_bwd(m, ctx, li + LIN_O, S->att, N, m->dres, m->datt, false);
        be_attn_t at = {
            .q = S->q, .k = S->k, .v = S->v, .out = S->att, .lse = S->lse, .pad_left = m->padl,
            .kv_sb = (size_t)T * kvd, .kv_st = (size_t)kvd, .kv_sh = (size_t)D,
            .B = B, .Tq = T, .Tk = T, .H = c->heads, .Hkv = c->kv_heads, .D = D, .q0 = 0,
            .scale = 1.0f / sqrtf((float)D), .compute = prec_compute_for(&m->table, ctx->phase),
        };
        be_attn_bwd(be, &at, m->datt, m->dq, m->dk, m->dv);
        be_rope(be, m->dq, m->pos, m->rope_cos, m->rope_sin, N, c->heads, D, true);
        be_rope(be, m->dk, m->pos, m->rope_cos, m->rope_sin, N, c->kv_heads, D, true);
        if (!fresh)
            be_rmsnorm_fwd(be, S->xn1, BE_NULL, S->x, qp(m, o->ln1), N, H, (float)c->rms_eps);
        lin_bwd(m, ctx, li + LIN_Q, S->xn1, N, m->dq, m->dxn, false);
        lin_bwd(m, ctx, li + LIN_K, S->xn1, N, m->dk, m->dxn, true);
        lin_bwd(m, ctx, li + LIN_V, S->xn1, N, m->dv, m->dxn, true);
        be_rmsnorm_bwd(be, m->dres, true, qg(m, o->ln1), m->dxn, S->x, qp(m, o->ln1), S->rstd1, N, H);
    }
    be_embed_bwd(be, qg(m, m->embed), m->dres, m->ids_grad, N, H, V);
    return be_sync(be, e);
}

/* ---- optimizer -------------------------------------------------------------------------------- */

int qwen2_optimizer_step(qwen2_model_t *m, const qwen2_adamw_t *h, qwen2_step_info_t *info,
                         err_t *e)
{
    if (!m->opts.training)
        return err_set(e, ERR_INPUT, "optimizer: the model was not built for training");
    qwen2_step_info_t inf = {0, 1, false, m->loss_scale};
    bool fp16 = m->table.compute == PREC_COMPUTE_FP16;
    double ss = be_sumsq(m->be, be_ptr(m->grads, 0), m->nparams);
    if (be_sync(m->be, e))
        return e->code;
    if (!isfinite(ss)) {
        if (!fp16)
            return err_set(e, ERR_FAIL, "optimizer: non-finite gradient (Inf or NaN)");
        m->loss_scale *= m->table.loss_scale.backoff;
        m->good_steps = 0;
        inf.skipped = true;
        inf.grad_norm = INFINITY;
        inf.loss_scale = m->loss_scale;
        if (info)
            *info = inf;
        return ERR_OK;
    }
    double ls = fp16 ? m->loss_scale : 1.0;
    inf.grad_norm = sqrt(ss) / ls;
    if (h->max_grad_norm > 0) {
        double coef = h->max_grad_norm / (inf.grad_norm + 1e-6);
        inf.clip = coef < 1 ? coef : 1;
    }
    m->adam_step++;
    be_adamw_t a = {h->lr, h->beta1, h->beta2, h->eps, 0, m->adam_step, inf.clip / ls};
    for (int i = 0; i < m->ntensors; i++) {
        const qwen2_tensor_t *t = &m->tensors[i];
        a.weight_decay = t->decay ? h->weight_decay : 0.0;
        be_adamw(m->be, qp(m, t->off), qg(m, t->off), be_ptr(m->adam_m, t->off * 4),
                 be_ptr(m->adam_v, t->off * 4), t->numel, &a);
    }
    m->version++;
    if (fp16 && ++m->good_steps >= m->table.loss_scale.interval) {
        m->loss_scale *= m->table.loss_scale.growth;
        m->good_steps = 0;
    }
    inf.loss_scale = m->loss_scale;
    if (info)
        *info = inf;
    return be_sync(m->be, e);
}

int qwen2_moments_get(qwen2_model_t *m, size_t off, float *m1, float *m2, size_t n, err_t *e)
{
    if (!m->adam_m)
        return err_set(e, ERR_INPUT, "model: no optimizer state (the model was not built for "
                       "training)");
    if (range_ok(m, off, n, e))
        return e->code;
    be_download(m->be, m1, be_ptr(m->adam_m, off * 4), n * sizeof *m1);
    be_download(m->be, m2, be_ptr(m->adam_v, off * 4), n * sizeof *m2);
    return be_sync(m->be, e);
}

int qwen2_moments_set(qwen2_model_t *m, size_t off, const float *m1, const float *m2, size_t n,
                      err_t *e)
{
    if (!m->adam_m)
        return err_set(e, ERR_INPUT, "model: no optimizer state (the model was not built for "
                       "training)");
    if (range_ok(m, off, n, e))
        return e->code;
    be_upload(m->be, be_ptr(m->adam_m, off * 4), m1, n * sizeof *m1);
    be_upload(m->be, be_ptr(m->adam_v, off * 4), m2, n * sizeof *m2);
    return be_sync(m->be, e);
}

void qwen2_opt_state_get(const qwen2_model_t *m, qwen2_opt_state_t *s)
{
    s->step = m->adam_step;
    s->loss_scale = m->loss_scale;
    s->good_steps = m->good_steps;
}

int qwen2_opt_state_set(qwen2_model_t *m, const qwen2_opt_state_t *s, err_t *e)
{
    if (s->step < 0 || !(s->loss_scale > 0) || !isfinite(s->loss_scale) || s->good_steps < 0)
        return err_set(e, ERR_INPUT, "model: optimizer state out of range (step %ld, loss scale "
                       "%g, good steps %d)", s->step, s->loss_scale, s->good_steps);
    m->adam_step = s->step;
    m->loss_scale = s->loss_scale;
    m->good_steps = s->good_steps;
    return ERR_OK;
}

/* ---- memory ---------------------------------------------------------------------------------- */

int qwen2_freeze(qwen2_model_t *m, prec_phase_t phase, size_t *freed, err_t *e)
{
    *freed = 0;
    if (!m->opts.frozen || m->dropped)
        return err_set(e, ERR_INPUT, "freeze: the model was not opened with opts.frozen, or is "
                       "frozen already");
    if ((unsigned)phase >= PREC_PHASE_COUNT)
        return err_set(e, ERR_INPUT, "freeze: bad phase");
    if (!m->params_lin)
        return ERR_OK; /* no linear weights of their own (no layers, tied head) */
    const prec_compute_t ct = prec_compute_for(&m->table, phase);
    for (int i = 0; i < m->nlin; i++) {
        const mx_spec_t *s = prec_spec(&m->table, i, phase, PREC_OP_WEIGHT);
        if (m->lin[i].w < m->nkeep)
            continue;
        if ((mx_spec_is_identity(s) && ct == PREC_COMPUTE_FP32) ||
            (mx_format_info(s->format)->is_mx && s->round == MX_ROUND_STOCHASTIC))
            return ERR_OK; /* the float32 weights stay needed */
    }
    /* one forward of one token builds every weight's copy for this phase */
    int32_t id = 0;
    qwen2_batch_t b = {1, 1, &id, NULL, NULL};
    prec_ctx_t ctx = {phase, 0, 0};
    unsigned fl = (m->lin_lm >= 0 ? QWEN2_FWD_LOGITS : 0) | (m->lin_score >= 0 ? QWEN2_FWD_SCORES : 0) |
                  (m->lin_vhead >= 0 ? QWEN2_FWD_VALUES : 0);
    if (qwen2_forward(m, &ctx, &b, fl, e))
        return e->code;
    m->fwd_flags = 0;
    m->logits_valid = false;
    /* and every other copy a forward of another length reads (the packed decode copies) */
    for (int i = 0; i < m->nlin; i++) {
        be_linear_t a;
        qwen2__linear_args(m, &ctx, i, BE_NULL, 1, &a);
        be_linear_prepare(m->be, &a);
    }
    for (int i = 0; i < m->nlin; i++)
        if (m->lin[i].w >= m->nkeep && be_wcache_bytes(m->be, m->lin[i].wc) == 0)
            return ERR_OK; /* the backend reads this weight directly: keep them */
    m->frozen_spec = err_calloc(e, (size_t)m->nlin, sizeof *m->frozen_spec, "frozen specs");
    if (!m->frozen_spec)
        return e->code;
    for (int i = 0; i < m->nlin; i++)
        m->frozen_spec[i] = *prec_spec(&m->table, i, phase, PREC_OP_WEIGHT);
    m->frozen_phase = phase;
    m->frozen_compute = ct;
    m->frozen_version = m->version;
    if (be_sync(m->be, e))
        return e->code;
    *freed = (m->nparams - m->nkeep) * sizeof(float);
    be_free(m->be, m->params_lin);
    m->params_lin = NULL;
    m->dropped = true;
    return ERR_OK;
}

void qwen2_memory(const qwen2_model_t *m, qwen2_mem_t *out)
{
    size_t pb = (m->dropped ? m->nkeep : m->nparams) * sizeof(float);
    memset(out, 0, sizeof *out);
    out->params = pb + 2 * (size_t)m->npos * (m->cfg.head_dim / 2) * sizeof(float);
    out->grads = m->grads ? m->nparams * sizeof(float) : 0;
    out->optimizer = m->adam_m ? 2 * m->nparams * sizeof(float) : 0;
    out->activations = m->act_bytes;
    out->kv_cache = m->kv_bytes;
    for (int i = 0; i < m->nlin; i++)
        out->weight_cache += be_wcache_bytes(m->be, m->lin[i].wc);
}
