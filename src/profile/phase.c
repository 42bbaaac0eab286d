/* phase: the phase sensitivity's options and its measuring session — data, models per
 * worker, the unquantized baseline and one measurement per phase (phase.h). The sweep,
 * its record and its files are in phase_sweep.c. */
#include "profile/phase.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "profile/common.h"
#include "profile/evalset.h"
#include "profile/phase_internal.h"
#include "rlhf/text.h"
#include "rlhf/train_common.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/rng.h"

/* ---- options ------------------------------------------------------------------------- */

static const char *const GRAD_OPERAND_NAMES[] = {"all", "backward", NULL};
static const opt_enum_t grad_operands_enum = {GRAD_OPERAND_NAMES, 0, NULL, NULL};

/* The matrix's keys but its thresholds (each phase has its own), with fewer evaluation
 * tokens: the gradient phase runs a forward and a backward per cell, and 512 tokens keep a
 * sweep near two minutes on the embedded default (a cosine to the float32 gradient on the
 * same tokens has no sampling noise). */
#define PO(f) offsetof(phase_sensitivity_opts_t, f)
static const opt_field_t phase_fields[] = {
    OPT_EMBED("sweep", PO(sweep), &sensitivity_opts_table, "eval_tokens=512",
              .omit = "threshold_pct,two_sided"),
    OPT_KEY("rollout_prompts", OPT_INT, PO(rollout_prompts), "24", 1, 4096,
            "rollout: prompts sampled per cell", .flag = "prompts"),
    OPT_KEY("rollout_max_new_tokens", OPT_INT, PO(rollout_max_new_tokens), "24", 1, 4096,
            "rollout: tokens per response", .flag = "max-new-tokens"),
    OPT_KEY("rollout_max_kl", OPT_DOUBLE, PO(rollout_max_kl), "0.06", 0, 1e9,
            "rollout: tolerant when kl < this (nats per response)"),
    OPT_KEY("reward_pairs", OPT_INT, PO(reward_pairs), "128", 0, 1e9,
            "reward: evaluation pairs (0: all)", .flag = "pairs"),
    OPT_KEY("reward_batch", OPT_INT, PO(reward_batch), "16", 1, 4096, "reward: pairs per forward"),
    OPT_KEY("reward_max_accuracy_drop", OPT_DOUBLE, PO(reward_max_accuracy_drop), "1.0", 0, 100,
            "reward: tolerant when accuracy falls by less (points) ..."),
    OPT_KEY("reward_min_spearman", OPT_DOUBLE, PO(reward_min_spearman), "0.999", -1, 1,
            "reward: ... and spearman > this", .flag = "min-spearman"),
    OPT_KEY("gradient_operands", OPT_ENUM, PO(gradient_operands), "all", 0, 0,
            "gradient: the six gradient-phase operands, or the four backward ones",
            .en = &grad_operands_enum, .flag = "gradient-operands"),
    OPT_KEY("gradient_min_cosine", OPT_DOUBLE, PO(gradient_min_cosine), "0.99", -1, 1,
            "gradient: tolerant when the cosine to the float32 gradient > this"),
};

OPT_CHECK(phase_check, phase_sensitivity_opts_t, phase_sensitivity_opts_check)
const opt_table_t phase_sensitivity_opts_table =
    OPT_TABLE("phase_sensitivity", phase_sensitivity_opts_t, phase_fields, phase_check);

void phase_sensitivity_opts_default(phase_sensitivity_opts_t *o)
{
    opts_default(&phase_sensitivity_opts_table, o);
}

const char *profile_phase_threshold_key(prec_phase_t ph)
{
    static const char *const keys[PREC_PHASE_COUNT] = {"rollout_max_kl",
                                                       "reward_max_accuracy_drop",
                                                       "gradient_min_cosine"};
    return keys[ph];
}

int phase_sensitivity_opts_check(const phase_sensitivity_opts_t *o, const char *ctx, err_t *e)
{
    if (sensitivity_opts_check(&o->sweep, ctx, e))
        return e->code;
    if (o->rollout_prompts < 1 || o->rollout_max_new_tokens < 1 || o->reward_batch < 1 ||
        o->reward_pairs < 0)
        return err_set(e, ERR_INPUT, "%s: fields \"rollout_prompts\", \"rollout_max_new_tokens\", "
                       "\"reward_batch\" must be at least 1, \"reward_pairs\" at least 0", ctx);
    if (!(o->rollout_max_kl > 0) || !isfinite(o->rollout_max_kl))
        return err_set(e, ERR_INPUT, "%s: field \"rollout_max_kl\": expected a positive number",
                       ctx);
    if (!(o->reward_max_accuracy_drop >= 0) || o->reward_max_accuracy_drop > 100)
        return err_set(e, ERR_INPUT, "%s: field \"reward_max_accuracy_drop\": expected points "
                       "in [0, 100]", ctx);
    if (!(o->reward_min_spearman >= -1 && o->reward_min_spearman < 1))
        return err_set(e, ERR_INPUT, "%s: field \"reward_min_spearman\": expected [-1, 1)", ctx);
    if (!(o->gradient_min_cosine >= -1 && o->gradient_min_cosine < 1))
        return err_set(e, ERR_INPUT, "%s: field \"gradient_min_cosine\": expected [-1, 1)", ctx);
    if (o->gradient_operands != PHASE_GRAD_ALL && o->gradient_operands != PHASE_GRAD_BACKWARD)
        return err_set(e, ERR_INPUT, "%s: field \"gradient_operands\": expected all or backward",
                       ctx);
    return ERR_OK;
}

/* ---- metrics -------------------------------------------------------------------------- */


int profile_phase_columns(prec_phase_t ph, const char *const **names)
{
    static const char *const roll[] = {"kl", "reward", "reward_delta"};
    static const char *const rew[] = {"accuracy", "accuracy_delta", "spearman"};
    static const char *const grad[] = {"cosine", "rel_error"};
    switch (ph) {
    case PREC_ROLLOUT: *names = roll; return 3;
    case PREC_REWARD: *names = rew; return 3;
    default: *names = grad; return 2;
    }
}

/* Accuracy change in points. Accuracies are k/n, so the change is a multiple of 100/n, but
 * 100 * (0.59 - 0.58) is 1.0000000000000009 in doubles: rounded to 1e-9 points, a drop of
 * exactly reward_max_accuracy_drop compares as itself and the CSV shows 1, not 1.0000000000000009. */
static double accuracy_points(double a, double base)
{
    return nearbyint(100.0 * (a - base) * 1e9) / 1e9;
}

void profile_phase_derive(prec_phase_t ph, const double *v, const double *base, double *cols)
{
    switch (ph) {
    case PREC_ROLLOUT:
        cols[0] = v[0];
        cols[1] = v[1];
        cols[2] = v[1] - base[1];
        break;
    case PREC_REWARD:
        cols[0] = v[0];
        cols[1] = accuracy_points(v[0], base[0]);
        cols[2] = v[1];
        break;
    default:
        cols[0] = v[0];
        cols[1] = v[1];
        break;
    }
}

bool profile_phase_tolerant(const phase_sensitivity_opts_t *o, prec_phase_t ph, const double *v,
                            const double *base)
{
    switch (ph) {
    case PREC_ROLLOUT:
        return isfinite(v[0]) && isfinite(v[1]) && v[0] < o->rollout_max_kl;
    case PREC_REWARD: {
        double drop = -accuracy_points(v[0], base[0]);
        return isfinite(drop) && isfinite(v[1]) && drop < o->reward_max_accuracy_drop &&
               v[1] > o->reward_min_spearman;
    }
    default:
        return isfinite(v[0]) && isfinite(v[1]) && v[0] > o->gradient_min_cosine;
    }
}

/* ---- the session ------------------------------------------------------------------------ */

typedef struct phase_worker {
    backend_t *be;
    qwen2_model_t *m;     /* the profiled model: the policy (rollout, gradient) or the reward
                             model (reward) */
    qwen2_model_t *ref;   /* rollout: the unquantized policy */
    qwen2_model_t *rm;    /* rollout: the reward model that scores the samples */
    int32_t *resp;        /* rollout: (N, max_new) sampled ids */
    int *resp_len;
    float *lq, *lp;       /* rollout: logit rows of one response, quantized and not */
    float *scores;        /* rollout (N) or reward (2N: chosen of every pair, then rejected) */
    float **x;            /* reward: per batch, the residual stream entering cache_layer */
    int cache_layer;
    float *g, *logp, *dlogp; /* gradient */
    double measure_s;
} phase_worker_t;

struct profile_phase {
    prec_phase_t ph;
    phase_sensitivity_opts_t o;
    int nw;
    phase_worker_t *w;
    int model_layers;           /* decoder layers of the profiled model */
    double head_units;          /* its lm_head in decoder-layer equivalents */
    char **layers;
    int nlayers;
    double base[PHASE_NVALUES];
    uint64_t fp;
    /* rollout */
    tok_t *tok;
    rlhf_text_t text;
    bool text_ok;
    rlhf_seq_t *prompts;
    int N, max_new, T;
    const int32_t **pp;
    int *plen;
    int32_t eot;
    ppo_opts_t ppo;
    double base_len;            /* mean response length of the unquantized samples */
    /* reward */
    rlhf_rm_opts_t rmo;
    rlhf_rm_pairs_t pairs;
    rlhf_batch_t *batches;
    int nbatch;
    int *batch_first, *batch_n;
    long rm_tokens;
    float *base_scores;
    /* gradient */
    profile_evalset_t es;
    bool es_ok;
    float *ref_g;
    double ref_sq;
    size_t nparams;
};

int profile_phase__workers(const profile_phase_t *p) { return p->nw; }
const phase_sensitivity_opts_t *profile_phase__opts(const profile_phase_t *p) { return &p->o; }
prec_phase_t profile_phase__phase(const profile_phase_t *p) { return p->ph; }
uint64_t profile_phase__fingerprint(const profile_phase_t *p) { return p->fp; }
double profile_phase__measure_s(const profile_phase_t *p, int w) { return p->w[w].measure_s; }
int profile_phase_nlayers(const profile_phase_t *p) { return p->nlayers; }
const char *profile_phase_layer(const profile_phase_t *p, int i) { return p->layers[i]; }
const double *profile_phase_baseline(const profile_phase_t *p) { return p->base; }

/* Block index of a layer name ("model.layers.7.mlp.up_proj" -> 7; "lm_head" -> layers). */
static int block_of(const char *name, int layers)
{
    if (!strcmp(name, "lm_head"))
        return layers;
    return atoi(name + strlen("model.layers."));
}

double profile_phase__units(const profile_phase_t *p, int layer)
{
    /* only the reward phase starts cells from a cached residual stream; the others run
       whole rollouts or whole forward + backward passes */
    if (p->ph != PREC_REWARD || layer < 0)
        return 1.0;
    int L = block_of(p->layers[layer], p->model_layers);
    return (double)(p->model_layers - L) / p->model_layers;
}

static uint64_t mix_double(uint64_t h, double v)
{
    uint64_t b;
    memcpy(&b, &v, 8);
    return profile_mix(h, b);
}

static uint64_t mix_ids(uint64_t h, const int32_t *ids, int n)
{
    h = profile_mix(h, (uint64_t)(uint32_t)n);
    for (int i = 0; i < n; i++)
        h = profile_mix(h, (uint64_t)(uint32_t)ids[i]);
    return h;
}

/* Sets (spec NULL: resets to fp32) the operands this phase quantizes, of one layer or,
 * with layer NULL, of every profiled layer. */
static int set_ops(profile_phase_t *p, qwen2_model_t *m, const char *layer, const mx_spec_t *spec,
                   err_t *e)
{
    static const prec_operand_t ops[] = {PREC_OP_WEIGHT, PREC_OP_INPUT, PREC_OP_WEIGHT_BP,
                                         PREC_OP_GRAD_OUTPUT_DX, PREC_OP_INPUT_BP,
                                         PREC_OP_GRAD_OUTPUT_DW};
    mx_spec_t fp32 = mx_spec_default(MX_FP32);
    const mx_spec_t *sp = spec ? spec : &fp32;
    int first = 0, last = 2;
    if (p->ph == PREC_GRADIENT) {
        first = p->o.gradient_operands == PHASE_GRAD_BACKWARD ? 2 : 0;
        last = 6;
    }
    prec_table_t *t = qwen2_precision(m);
    for (int l = 0; l < p->nlayers; l++) {
        if (layer && strcmp(layer, p->layers[l]))
            continue;
        for (int k = first; k < last; k++)
            if (prec_table_set(t, p->layers[l], p->ph, ops[k], sp, e))
                return e->code;
    }
    return ERR_OK;
}

/* The layers a phase profiles: every block's linear layers, and the lm_head when the model
 * has one (scalar heads are one-row GEMVs and are not profiled, as in the matrix). */
static int collect_layers(profile_phase_t *p, qwen2_model_t *m, err_t *e)
{
    const char *const *names;
    int n = qwen2_linear_names(m, &names);
    p->layers = err_calloc(e, (size_t)(n ? n : 1), sizeof *p->layers, "layer names");
    if (!p->layers)
        return e->code;
    for (int i = 0; i < n; i++)
        if (!strncmp(names[i], "model.layers.", 13) || !strcmp(names[i], "lm_head")) {
            if (!(p->layers[p->nlayers] = strdup(names[i])))
                return err_set(e, ERR_NOMEM, "out of memory");
            p->nlayers++;
        }
    const qwen2_config_t *c = qwen2_config(m);
    p->model_layers = c->layers;
    p->head_units = profile_head_units(c);
    return ERR_OK;
}

static int load_tokenizer(const char *dir, tok_t **tok, err_t *e)
{
    char *tp = fs_join(dir, "tokenizer.json");
    if (!tp)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = fs_exists(tp) ? tok_load(tp, tok, e)
                           : err_set(e, ERR_INPUT, "%s: not found (the model directory needs its "
                                     "tokenizer to turn the evaluation text into ids)", tp);
    free(tp);
    return rc;
}

static int open_model(phase_worker_t *w, const char *dir, const qwen2_opts_t *mo,
                      qwen2_model_t **out, err_t *e)
{
    if (qwen2_open_dir(dir, w->be, mo, out, e))
        return err_prefix(e, "%s", dir);
    return ERR_OK;
}

/* ---- rollout ---------------------------------------------------------------------------- */

static int rollout_open(profile_phase_t *p, const profile_phase_inputs_t *in, err_t *e)
{
    if (!in->model_dir || !in->reward_dir)
        return err_set(e, ERR_INPUT, "phase rollout: needs the policy (--model) and a reward "
                       "model (--reward-model)");
    if (in->ppo)
        p->ppo = *in->ppo;
    else
        ppo_opts_default(&p->ppo);
    if (rlhf_rm_check_dir(in->reward_dir, e))
        return e->code;
    char *cp = fs_join(in->model_dir, "config.json");
    qwen2_config_t cfg;
    int rc = cp ? qwen2_config_load(cp, &cfg, e) : err_set(e, ERR_NOMEM, "out of memory");
    free(cp);
    if (rc || (rc = load_tokenizer(in->model_dir, &p->tok, e)))
        return rc;
    p->max_new = p->o.rollout_max_new_tokens;
    int max_prompt = p->ppo.max_prompt_tokens;
    if (cfg.max_pos > 0 && max_prompt > cfg.max_pos - p->max_new)
        max_prompt = cfg.max_pos - p->max_new;
    if (max_prompt < 1)
        return err_set(e, ERR_INPUT, "rollout_max_new_tokens %d leaves no room for a prompt "
                       "within the policy's %d positions", p->max_new, cfg.max_pos);
    if (rlhf_text_init(&p->text, p->tok, p->ppo.template_, max_prompt, p->max_new, e))
        return e->code;
    p->text_ok = true;
    p->eot = p->text.eot_id;
    p->N = (int)(in->npairs < (size_t)p->o.rollout_prompts ? in->npairs
                                                            : (size_t)p->o.rollout_prompts);
    if (p->N < 1)
        return err_set(e, ERR_INPUT, "phase rollout: no evaluation prompts");
    p->prompts = err_calloc(e, (size_t)p->N, sizeof *p->prompts, "prompts");
    p->pp = err_calloc(e, (size_t)p->N, sizeof *p->pp, "prompts");
    p->plen = err_calloc(e, (size_t)p->N, sizeof *p->plen, "prompts");
    if (!p->prompts || !p->pp || !p->plen)
        return e->code;
    int longest = 1;
    for (int i = 0; i < p->N; i++) {
        if (rlhf_encode_prompt(&p->text, in->pairs[i]->prompt, &p->prompts[i], e))
            return err_prefix(e, "evaluation prompt %d", i);
        if (p->prompts[i].n < 1)
            return err_set(e, ERR_INPUT, "evaluation prompt %d encodes to no tokens", i);
        p->pp[i] = p->prompts[i].ids;
        p->plen[i] = p->prompts[i].n;
        longest = p->plen[i] > longest ? p->plen[i] : longest;
    }
    p->T = longest + p->max_new;
    const int V = cfg.vocab;
    qwen2_opts_t pol = {.max_batch = p->N, .max_seq = p->T, .heads = QWEN2_HEAD_LM,
                        .kv_batch = p->N, .kv_len = p->T, .role = PREC_MODEL_POLICY};
    qwen2_opts_t ref = {.max_batch = p->N, .max_seq = p->T, .heads = QWEN2_HEAD_LM,
                        .role = PREC_MODEL_REFERENCE};
    qwen2_opts_t rmo = {.max_batch = p->N, .max_seq = p->T, .heads = QWEN2_HEAD_SCORE,
                        .role = PREC_MODEL_REWARD};
    for (int i = 0; i < p->nw; i++) {
        phase_worker_t *w = &p->w[i];
        if (open_model(w, in->model_dir, &pol, &w->m, e) ||
            open_model(w, in->model_dir, &ref, &w->ref, e) ||
            open_model(w, in->reward_dir, &rmo, &w->rm, e))
            return e->code;
        if (qwen2_config(w->rm)->vocab != V)
            return err_set(e, ERR_INPUT, "%s: vocabulary of %d tokens, the policy's has %d (the "
                           "reward model must share the policy's tokenizer)", in->reward_dir,
                           qwen2_config(w->rm)->vocab, V);
        w->resp = err_calloc(e, (size_t)p->N * p->max_new, sizeof *w->resp, "responses");
        w->resp_len = err_calloc(e, (size_t)p->N, sizeof *w->resp_len, "responses");
        w->lq = err_malloc(e, (size_t)p->max_new * V * sizeof *w->lq, "logits");
        w->lp = err_malloc(e, (size_t)p->max_new * V * sizeof *w->lp, "logits");
        w->scores = err_calloc(e, (size_t)p->N, sizeof *w->scores, "scores");
        if (!w->resp || !w->resp_len || !w->lq || !w->lp || !w->scores)
            return e->code;
    }
    if ((rc = collect_layers(p, p->w[0].m, e)))
        return rc;
    uint64_t fa, fb, h = profile_mix(PROFILE_HASH_INIT, PREC_ROLLOUT);
    if (profile_model_fingerprint(p->w[0].m, &fa, e) ||
        profile_model_fingerprint(p->w[0].rm, &fb, e))
        return e->code;
    h = profile_mix(profile_mix(h, fa), fb);
    for (int i = 0; i < p->N; i++)
        h = mix_ids(h, p->pp[i], p->plen[i]);
    const ppo_opts_t *po = &p->ppo;
    h = profile_mix(profile_mix(profile_mix(h, (uint64_t)p->max_new), (uint64_t)po->min_new_tokens),
                    (uint64_t)po->top_k);
    h = mix_double(mix_double(h, po->temperature), po->top_p);
    h = profile_mix(profile_mix(h, po->seed), (uint64_t)(uint32_t)p->eot);
    p->fp = h;
    return ERR_OK;
}

/* log softmax of one row of V logits into double sums: returns log sum exp. */
static double logsumexp(const float *x, int V)
{
    double m = -INFINITY, s = 0;
    for (int v = 0; v < V; v++)
        m = x[v] > m ? x[v] : m;
    for (int v = 0; v < V; v++)
        s += exp((double)x[v] - m);
    return m + log(s);
}

/* KL(q || p) = sum_v q_v (log q_v - log p_v) of one position's two logit rows. */
static double row_kl(const float *q, const float *p, int V)
{
    double lq = logsumexp(q, V), lp = logsumexp(p, V), kl = 0;
    for (int v = 0; v < V; v++) {
        double a = (double)q[v] - lq, b = (double)p[v] - lp;
        kl += exp(a) * (a - b);
    }
    return kl;
}

/* Samples one response per prompt from the (quantized) policy with the same random numbers
 * in every cell, then scores prompt + response: the KL of the quantized policy to the
 * unquantized one at each response position (exact over the vocabulary, both from full
 * forwards of the same sequences, so nothing but the quantization separates them), summed
 * over the response, and the reward model's score. */
static int rollout_measure(profile_phase_t *p, phase_worker_t *w, double *v, double *len_mean,
                           err_t *e)
{
    const ppo_opts_t *po = &p->ppo;
    const prec_ctx_t rctx = {PREC_ROLLOUT, po->seed, 0}, wctx = {PREC_REWARD, po->seed, 0};
    qwen2_gen_t g = {p->max_new, po->temperature, po->top_k, po->top_p, po->seed,
                     rng_stream("profile.phase.rollout", 0), &p->eot, 1};
    qwen2_gen_ext_t x = {po->min_new_tokens, NULL};
    if (qwen2_generate_ext(w->m, &rctx, p->N, p->pp, p->plen, &g, &x, w->resp, w->resp_len, e))
        return err_prefix(e, "rollout");
    /* prompt + response, as PPO's reward inference lays them out */
    rlhf_seq_t *seqs = err_calloc(e, (size_t)p->N, sizeof *seqs, "samples");
    const rlhf_seq_t **ptr = err_calloc(e, (size_t)p->N, sizeof *ptr, "samples");
    rlhf_batch_t bt = {0};
    int rc = seqs && ptr ? ERR_OK : e->code;
    for (int b = 0; b < p->N && !rc; b++) {
        int r = w->resp_len[b], n0 = p->plen[b];
        if (!(seqs[b].ids = malloc((size_t)(n0 + r) * sizeof(int32_t)))) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(seqs[b].ids, p->pp[b], (size_t)n0 * sizeof(int32_t));
        memcpy(seqs[b].ids + n0, w->resp + (size_t)b * p->max_new, (size_t)r * sizeof(int32_t));
        seqs[b].n = n0 + r;
        seqs[b].prompt_len = n0;
        ptr[b] = &seqs[b];
    }
    if (!rc)
        rc = rlhf_batch_make(ptr, p->N, p->eot, &bt, e);
    qwen2_batch_t qb = {bt.B, bt.T, bt.ids, NULL, bt.len};
    if (!rc && (qwen2_forward(w->m, &rctx, &qb, QWEN2_FWD_LOGITS, e) ||
                qwen2_forward(w->ref, &rctx, &qb, QWEN2_FWD_LOGITS, e) ||
                qwen2_forward(w->rm, &wctx, &qb, QWEN2_FWD_SCORES, e) ||
                qwen2_scores_get(w->rm, w->scores, e)))
        rc = e->code;
    const int V = qwen2_config(w->m)->vocab;
    double kl = 0, reward = 0, len = 0;
    for (int b = 0; b < p->N && !rc; b++) {
        int r = w->resp_len[b], row0 = b * bt.T + p->plen[b] - 1;
        if (qwen2_logits_get(w->m, row0, r, w->lq, e) || qwen2_logits_get(w->ref, row0, r, w->lp, e)) {
            rc = e->code;
            break;
        }
        for (int s = 0; s < r; s++)
            kl += row_kl(w->lq + (size_t)s * V, w->lp + (size_t)s * V, V);
        reward += w->scores[b];
        len += r;
    }
    for (int b = 0; seqs && b < p->N; b++)
        rlhf_seq_free(&seqs[b]);
    free(seqs);
    free(ptr);
    rlhf_batch_free(&bt);
    if (rc)
        return rc;
    v[0] = kl / p->N;
    v[1] = reward / p->N;
    *len_mean = len / p->N;
    return ERR_OK;
}

/* ---- reward ------------------------------------------------------------------------------ */

static int reward_open(profile_phase_t *p, const profile_phase_inputs_t *in, err_t *e)
{
    if (!in->reward_dir)
        return err_set(e, ERR_INPUT, "phase reward: needs a reward model (--reward-model)");
    if (in->rm)
        p->rmo = *in->rm;
    else
        rlhf_rm_opts_default(&p->rmo);
    if (rlhf_rm_check_dir(in->reward_dir, e) || load_tokenizer(in->reward_dir, &p->tok, e) ||
        rlhf_text_init(&p->text, p->tok, (rlhf_template_t)p->rmo.template_,
                       p->rmo.max_prompt_tokens, p->rmo.max_response_tokens, e))
        return e->code;
    p->text_ok = true;
    p->eot = p->text.eot_id;
    size_t n = p->o.reward_pairs > 0 && (size_t)p->o.reward_pairs < in->npairs
                   ? (size_t)p->o.reward_pairs : in->npairs;
    if (n < 1)
        return err_set(e, ERR_INPUT, "phase reward: no evaluation pairs");
    if (rlhf_rm_pairs_make(&p->text, in->pairs, n, &p->pairs, e))
        return e->code;
    p->N = (int)n;
    const int B = p->o.reward_batch;
    p->nbatch = (p->N + B - 1) / B;
    p->batches = err_calloc(e, (size_t)p->nbatch, sizeof *p->batches, "batches");
    p->batch_first = err_calloc(e, (size_t)p->nbatch, sizeof *p->batch_first, "batches");
    p->batch_n = err_calloc(e, (size_t)p->nbatch, sizeof *p->batch_n, "batches");
    size_t *idx = err_malloc(e, (size_t)B * sizeof *idx, "batches");
    p->base_scores = err_calloc(e, 2 * (size_t)p->N, sizeof *p->base_scores, "scores");
    if (!p->batches || !p->batch_first || !p->batch_n || !idx || !p->base_scores) {
        free(idx);
        return e->code;
    }
    uint64_t h = profile_mix(PROFILE_HASH_INIT, PREC_REWARD);
    int rc = ERR_OK;
    for (int i = 0; i < p->nbatch && !rc; i++) {
        p->batch_first[i] = i * B;
        p->batch_n[i] = p->N - i * B < B ? p->N - i * B : B;
        for (int k = 0; k < p->batch_n[i]; k++)
            idx[k] = (size_t)(p->batch_first[i] + k);
        rc = rlhf_rm_pairs_batch(&p->pairs, idx, p->batch_n[i], p->eot, &p->batches[i], e);
        for (int r = 0; !rc && r < p->batches[i].B; r++) {
            p->rm_tokens += p->batches[i].len[r];
            h = mix_ids(h, p->batches[i].ids + (size_t)r * p->batches[i].T, p->batches[i].len[r]);
        }
    }
    free(idx);
    if (rc)
        return rc;
    qwen2_opts_t mo = {.max_batch = 2 * B, .max_seq = p->pairs.maxlen, .heads = QWEN2_HEAD_SCORE,
                       .role = PREC_MODEL_REWARD};
    for (int i = 0; i < p->nw; i++) {
        phase_worker_t *w = &p->w[i];
        if (open_model(w, in->reward_dir, &mo, &w->m, e))
            return e->code;
        if (p->pairs.maxlen > qwen2_config(w->m)->max_pos)
            return err_set(e, ERR_INPUT, "%s: a pair of %d tokens exceeds the model's %d positions "
                           "(lower the rm section's max_prompt_tokens/max_response_tokens)",
                           in->reward_dir, p->pairs.maxlen, qwen2_config(w->m)->max_pos);
        w->scores = err_calloc(e, 2 * (size_t)p->N, sizeof *w->scores, "scores");
        w->x = err_calloc(e, (size_t)p->nbatch, sizeof *w->x, "the residual cache");
        w->cache_layer = -1;
        if (!w->scores || !w->x)
            return e->code;
    }
    if ((rc = collect_layers(p, p->w[0].m, e)))
        return rc;
    uint64_t fm;
    if (profile_model_fingerprint(p->w[0].m, &fm, e))
        return e->code;
    p->fp = profile_mix(profile_mix(h, fm), (uint64_t)B);
    return ERR_OK;
}

/* Ranks (1-based, ties get their average rank) of x[0..n) into r. */
static int ranks(const float *x, int n, double *r, err_t *e)
{
    int *idx = err_malloc(e, (size_t)(n ? n : 1) * sizeof *idx, "ranks");
    if (!idx)
        return e->code;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    /* insertion sort by value, ties by index: n is a few hundred */
    for (int i = 1; i < n; i++) {
        int k = idx[i], j = i - 1;
        while (j >= 0 && (x[idx[j]] > x[k] || (x[idx[j]] == x[k] && idx[j] > k))) {
            idx[j + 1] = idx[j];
            j--;
        }
        idx[j + 1] = k;
    }
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && x[idx[j + 1]] == x[idx[i]])
            j++;
        double avg = 0.5 * (double)(i + j) + 1.0;
        for (int k = i; k <= j; k++)
            r[idx[k]] = avg;
        i = j + 1;
    }
    free(idx);
    return ERR_OK;
}

/* Spearman's rho: the Pearson correlation of the ranks. Written so that identical inputs
 * give exactly 1: the numerator then equals each sum of squares s, and sqrt(s * s) == s in
 * IEEE arithmetic. NaN when a score is not finite or a set has no spread. */
static int spearman(const float *a, const float *b, int n, double *out, err_t *e)
{
    for (int i = 0; i < n; i++)
        if (!isfinite(a[i]) || !isfinite(b[i])) {
            *out = NAN;
            return ERR_OK;
        }
    double *ra = err_malloc(e, (size_t)(n ? n : 1) * sizeof *ra, "ranks"),
           *rb = err_malloc(e, (size_t)(n ? n : 1) * sizeof *rb, "ranks");
    int rc = ra && rb ? ERR_OK : e->code;
    if (!rc && !(rc = ranks(a, n, ra, e)) && !(rc = ranks(b, n, rb, e))) {
        double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
        for (int i = 0; i < n; i++) {
            ma += ra[i];
            mb += rb[i];
        }
        ma /= n;
        mb /= n;
        for (int i = 0; i < n; i++) {
            double da = ra[i] - ma, db = rb[i] - mb;
            sab += da * db;
            saa += da * da;
            sbb += db * db;
        }
        *out = saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : NAN;
    }
    free(ra);
    free(rb);
    return rc;
}

/* Moves worker w's residual cache to the stream entering block L (under the table in
 * force, which must be the unquantized one). */
static int reward_cache(profile_phase_t *p, phase_worker_t *w, int L, err_t *e)
{
    if (w->cache_layer == L)
        return ERR_OK;
    const int H = qwen2_config(w->m)->hidden;
    int from = w->cache_layer >= 0 && w->cache_layer < L ? w->cache_layer : 0;
    const prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    for (int i = 0; i < p->nbatch; i++) {
        const rlhf_batch_t *bt = &p->batches[i];
        if (!w->x[i] && !(w->x[i] = malloc((size_t)bt->B * bt->T * H * sizeof(float)))) {
            w->cache_layer = -1;
            return err_set(e, ERR_NOMEM, "out of memory caching the residual stream");
        }
        qwen2_batch_t qb = {bt->B, bt->T, bt->ids, NULL, bt->len};
        if (qwen2_forward_range(w->m, &ctx, &qb, from, L, from ? w->x[i] : NULL, w->x[i], 0, e)) {
            w->cache_layer = -1;
            return e->code;
        }
    }
    w->cache_layer = L;
    return ERR_OK;
}

/* The reward model's scores of every evaluation pair into w->scores (chosen of every pair,
 * then rejected): with a layer, from the residual stream entering its block. */
static int reward_scores(profile_phase_t *p, phase_worker_t *w, const char *layer,
                         const mx_spec_t *spec, err_t *e)
{
    const prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    int L = layer && spec ? block_of(layer, p->model_layers) : 0;
    if (L > 0 && reward_cache(p, w, L, e))
        return e->code;
    if (set_ops(p, w->m, layer, spec, e))
        return e->code;
    int rc = ERR_OK;
    float *s = malloc(2 * (size_t)p->o.reward_batch * sizeof *s);
    if (!s)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    for (int i = 0; i < p->nbatch && !rc; i++) {
        const rlhf_batch_t *bt = &p->batches[i];
        qwen2_batch_t qb = {bt->B, bt->T, bt->ids, NULL, bt->len};
        rc = L > 0 ? qwen2_forward_range(w->m, &ctx, &qb, L, p->model_layers, w->x[i], NULL,
                                         QWEN2_FWD_SCORES, e)
                   : qwen2_forward(w->m, &ctx, &qb, QWEN2_FWD_SCORES, e);
        if (!rc)
            rc = qwen2_scores_get(w->m, s, e);
        const int nb = p->batch_n[i], f = p->batch_first[i];
        for (int k = 0; !rc && k < nb; k++) {
            w->scores[f + k] = s[k];
            w->scores[p->N + f + k] = s[nb + k];
        }
    }
    free(s);
    err_t e2 = ERR_INIT;
    int rc2 = set_ops(p, w->m, layer, NULL, &e2);
    return rc ? rc : rc2 ? err_set(e, rc2, "%s", e2.msg) : ERR_OK;
}

static int reward_values(profile_phase_t *p, const float *scores, double *v, err_t *e)
{
    rlhf_rm_metrics_t m;
    rlhf_rm_metrics_of(scores, scores + p->N, (size_t)p->N, p->rm_tokens, &m);
    v[0] = m.accuracy;
    return spearman(p->base_scores, scores, 2 * p->N, &v[1], e);
}

/* ---- gradient ---------------------------------------------------------------------------- */

static int gradient_open(profile_phase_t *p, const profile_phase_inputs_t *in, err_t *e)
{
    if (!in->model_dir)
        return err_set(e, ERR_INPUT, "phase gradient: needs the policy (--model)");
    if (profile_load_evalset(in->model_dir, NULL, in->pairs, in->npairs, &p->o.sweep.eval,
                             &p->es, NULL, 0, e))
        return e->code;
    p->es_ok = true;
    const profile_evalset_t *es = &p->es;
    qwen2_opts_t mo = {
        .max_seq = es->max_seq,
        .max_batch = (int)((es->max_batch_tokens + es->max_seq - 1) / es->max_seq),
        .training = true,
        .heads = QWEN2_HEAD_LM,
        .role = PREC_MODEL_POLICY,
    };
    for (int i = 0; i < p->nw; i++) {
        phase_worker_t *w = &p->w[i];
        if (open_model(w, in->model_dir, &mo, &w->m, e))
            return e->code;
        p->nparams = qwen2_nparams(w->m);
        w->g = err_malloc(e, p->nparams * sizeof *w->g, "the gradient");
        w->logp = err_malloc(e, (size_t)es->max_batch_tokens * sizeof *w->logp, "log-probs");
        w->dlogp = err_malloc(e, (size_t)es->max_batch_tokens * sizeof *w->dlogp, "log-probs");
        if (!w->g || !w->logp || !w->dlogp)
            return e->code;
    }
    p->ref_g = err_malloc(e, p->nparams * sizeof *p->ref_g, "the float32 gradient");
    if (!p->ref_g || collect_layers(p, p->w[0].m, e))
        return e->code;
    uint64_t fm;
    if (profile_model_fingerprint(p->w[0].m, &fm, e))
        return e->code;
    p->fp = profile_mix(profile_mix(profile_mix(profile_mix(PROFILE_HASH_INIT, PREC_GRADIENT),
                                                fm), es->fingerprint),
                        (uint64_t)p->o.gradient_operands);
    return ERR_OK;
}

/* The raw gradient of the mean NLL over the set's scored tokens into w->g: forward (train),
 * log-probs, backward with d(loss)/d(logp) = -1/tokens at scored positions, summed over
 * batches. No optimizer step. */
static int gradient_of(profile_phase_t *p, phase_worker_t *w, err_t *e)
{
    const prec_ctx_t ctx = {PREC_GRADIENT, 0, 0};
    const float d = -1.0f / (float)p->es.tokens;
    qwen2_zero_grads(w->m);
    for (int i = 0; i < p->es.nbatch; i++) {
        const profile_eval_batch_t *bt = &p->es.batches[i];
        const size_t cells = (size_t)bt->b.B * bt->b.T;
        if (qwen2_forward(w->m, &ctx, &bt->b, QWEN2_FWD_TRAIN | QWEN2_FWD_LOGITS, e) ||
            qwen2_token_logprobs(w->m, bt->targets, w->logp, NULL, e))
            return e->code;
        for (size_t k = 0; k < cells; k++)
            w->dlogp[k] = bt->targets[k] >= 0 ? d : 0.0f;
        qwen2_grad_in_t gi = {.dlogp = w->dlogp};
        if (qwen2_backward(w->m, &ctx, &gi, e))
            return e->code;
    }
    return qwen2_grads_get(w->m, 0, w->g, p->nparams, e);
}

/* cosine = <g, g32> / sqrt(|g|^2 |g32|^2): for g == g32 the numerator equals |g32|^2 and
 * the square root of its square gives it back, so the float32 gradient scores exactly 1. */
static void gradient_values(const profile_phase_t *p, const float *g, double *v)
{
    double dot = 0, gg = 0, diff = 0;
    for (size_t i = 0; i < p->nparams; i++) {
        double a = g[i], b = p->ref_g[i];
        dot += a * b;
        gg += a * a;
        diff += (a - b) * (a - b);
    }
    v[0] = gg > 0 && p->ref_sq > 0 ? dot / sqrt(gg * p->ref_sq) : NAN;
    v[1] = p->ref_sq > 0 ? sqrt(diff) / sqrt(p->ref_sq) : NAN;
}

/* ---- open, measure, close ------------------------------------------------------------------ */

int profile_phase_measure(profile_phase_t *p, int wi, const char *layer, const mx_spec_t *spec,
                          double *v, err_t *e)
{
    if (wi < 0 || wi >= p->nw)
        return err_set(e, ERR_INPUT, "phase: worker %d of %d", wi, p->nw);
    if (layer) {
        int k = -1;
        for (int i = 0; i < p->nlayers && k < 0; i++)
            if (!strcmp(p->layers[i], layer))
                k = i;
        if (k < 0)
            return err_set(e, ERR_INPUT, "phase %s: no profiled layer \"%s\"",
                           prec_phase_name(p->ph), layer);
    }
    phase_worker_t *w = &p->w[wi];
    double t0 = profile_now_s();
    int rc;
    if (p->ph == PREC_REWARD) {
        rc = reward_scores(p, w, layer, spec, e);
        if (!rc)
            rc = reward_values(p, w->scores, v, e);
    } else {
        if ((rc = set_ops(p, w->m, layer, spec, e)))
            return rc;
        if (p->ph == PREC_ROLLOUT) {
            double len;
            rc = rollout_measure(p, w, v, &len, e);
        } else {
            rc = gradient_of(p, w, e);
            if (!rc)
                gradient_values(p, w->g, v);
        }
        err_t e2 = ERR_INIT;
        int rc2 = set_ops(p, w->m, layer, NULL, &e2);
        if (!rc && rc2)
            rc = err_set(e, rc2, "%s", e2.msg);
    }
    w->measure_s += profile_now_s() - t0;
    return rc;
}

void profile_phase_close(profile_phase_t *p)
{
    if (!p)
        return;
    for (int i = 0; p->w && i < p->nw; i++) {
        phase_worker_t *w = &p->w[i];
        qwen2_free(w->m);
        qwen2_free(w->ref);
        qwen2_free(w->rm);
        be_close(w->be);
        free(w->resp);
        free(w->resp_len);
        free(w->lq);
        free(w->lp);
        free(w->scores);
        for (int k = 0; w->x && k < p->nbatch; k++)
            free(w->x[k]);
        free(w->x);
        free(w->g);
        free(w->logp);
        free(w->dlogp);
    }
    free(p->w);
    for (int i = 0; i < p->nlayers; i++)
        free(p->layers[i]);
    free(p->layers);
    for (int i = 0; p->prompts && i < p->N; i++)
        rlhf_seq_free(&p->prompts[i]);
    free(p->prompts);
    free(p->pp);
    free(p->plen);
    if (p->text_ok)
        rlhf_text_free(&p->text);
    tok_free(p->tok);
    rlhf_rm_pairs_free(&p->pairs);
    for (int i = 0; p->batches && i < p->nbatch; i++)
        rlhf_batch_free(&p->batches[i]);
    free(p->batches);
    free(p->batch_first);
    free(p->batch_n);
    free(p->base_scores);
    if (p->es_ok)
        profile_evalset_free(&p->es);
    free(p->ref_g);
    free(p);
}

int profile_phase_open(prec_phase_t ph, const phase_sensitivity_opts_t *o,
                       const profile_phase_inputs_t *in, int nworkers, profile_phase_t **out,
                       err_t *e)
{
    *out = NULL;
    if ((unsigned)ph >= PREC_PHASE_COUNT)
        return err_set(e, ERR_INPUT, "phase: unknown phase %d", (int)ph);
    if (phase_sensitivity_opts_check(o, "phase sensitivity options", e))
        return e->code;
    if (nworkers < 1 || nworkers > PROFILE_MAX_WORKERS)
        return err_set(e, ERR_INPUT, "workers: %d is not in [1, %d]", nworkers,
                       PROFILE_MAX_WORKERS);
    if (!in->pairs || in->npairs == 0)
        return err_set(e, ERR_INPUT, "phase %s: no evaluation pairs", prec_phase_name(ph));
    profile_phase_t *p = err_calloc(e, 1, sizeof *p, "the phase session");
    if (!p)
        return e->code;
    p->ph = ph;
    p->o = *o;
    p->nw = nworkers;
    int rc = ERR_OK;
    if (!(p->w = err_calloc(e, (size_t)nworkers, sizeof *p->w, "workers")))
        rc = e->code;
    for (int i = 0; !rc && i < nworkers; i++)
        rc = be_open(o->sweep.backend, &p->w[i].be, e);
    if (!rc)
        rc = ph == PREC_ROLLOUT ? rollout_open(p, in, e)
             : ph == PREC_REWARD ? reward_open(p, in, e)
                                 : gradient_open(p, in, e);
    /* the baseline: the unquantized model, whose samples, scores or gradient the cells are
       compared with */
    if (!rc) {
        if (ph == PREC_REWARD) {
            rc = reward_scores(p, &p->w[0], NULL, NULL, e);
            if (!rc) {
                memcpy(p->base_scores, p->w[0].scores, 2 * (size_t)p->N * sizeof *p->base_scores);
                rc = reward_values(p, p->base_scores, p->base, e);
            }
        } else if (ph == PREC_GRADIENT) {
            rc = gradient_of(p, &p->w[0], e);
            if (!rc) {
                memcpy(p->ref_g, p->w[0].g, p->nparams * sizeof *p->ref_g);
                double s = 0;
                for (size_t i = 0; i < p->nparams; i++)
                    s += (double)p->ref_g[i] * p->ref_g[i];
                p->ref_sq = s;
                gradient_values(p, p->ref_g, p->base);
            }
        } else {
            rc = rollout_measure(p, &p->w[0], p->base, &p->base_len, e);
        }
        p->w[0].measure_s = 0;
    }
    if (rc) {
        profile_phase_close(p);
        return rc;
    }
    *out = p;
    return ERR_OK;
}

cJSON *profile_phase_describe(const profile_phase_t *p)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "phase", prec_phase_name(p->ph));
    cJSON_AddNumberToObject(j, "layers", p->nlayers);
    if (p->ph == PREC_ROLLOUT) {
        cJSON_AddNumberToObject(j, "prompts", p->N);
        cJSON_AddNumberToObject(j, "max_new_tokens", p->max_new);
        cJSON_AddNumberToObject(j, "min_new_tokens", p->ppo.min_new_tokens);
        cJSON_AddNumberToObject(j, "temperature", p->ppo.temperature);
        cJSON_AddNumberToObject(j, "top_k", p->ppo.top_k);
        cJSON_AddNumberToObject(j, "top_p", p->ppo.top_p);
        cJSON_AddNumberToObject(j, "max_prompt_tokens", p->text.max_prompt);
        cJSON_AddStringToObject(j, "template", rlhf_template_name(p->ppo.template_));
        cJSON_AddNumberToObject(j, "seed", (double)p->ppo.seed);
        cJSON_AddStringToObject(j, "rng_stream", "profile.phase.rollout");
        cJSON_AddNumberToObject(j, "baseline_response_len_mean", p->base_len);
    } else if (p->ph == PREC_REWARD) {
        cJSON_AddNumberToObject(j, "pairs", p->N);
        cJSON_AddNumberToObject(j, "sequences", 2 * p->N);
        cJSON_AddNumberToObject(j, "tokens", (double)p->rm_tokens);
        cJSON_AddNumberToObject(j, "batch_pairs", p->o.reward_batch);
        cJSON_AddStringToObject(j, "template",
                                rlhf_template_name((rlhf_template_t)p->rmo.template_));
        cJSON_AddNumberToObject(j, "max_prompt_tokens", p->rmo.max_prompt_tokens);
        cJSON_AddNumberToObject(j, "max_response_tokens", p->rmo.max_response_tokens);
    } else {
        char hx[17];
        cJSON_AddNumberToObject(j, "tokens_requested", (double)p->es.requested);
        cJSON_AddNumberToObject(j, "tokens", (double)p->es.tokens);
        cJSON_AddNumberToObject(j, "sequences", p->es.nseq);
        cJSON_AddNumberToObject(j, "batches", p->es.nbatch);
        cJSON_AddStringToObject(j, "score", profile_score_name(p->o.sweep.eval.score));
        profile_hex64(p->es.fingerprint, hx);
        cJSON_AddStringToObject(j, "eval_fingerprint", hx);
        cJSON_AddStringToObject(j, "operands", GRAD_OPERAND_NAMES[p->o.gradient_operands]);
        cJSON_AddNumberToObject(j, "parameters", (double)p->nparams);
        cJSON_AddStringToObject(j, "loss", "mean token NLL over the scored tokens");
    }
    return j;
}
