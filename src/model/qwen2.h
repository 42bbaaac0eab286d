/* qwen2: the Qwen2 transformer (Qwen2.5-0.5B and friends) on any backend.
 *
 * One model definition for every backend: this file calls only backend/backend.h ops.
 * Parameters live in one device buffer with named views (Hugging Face names); gradients
 * and the two AdamW moments, when training, in three more buffers of the same layout;
 * activations in one buffer sized once for (max_batch, max_seq) (what only training keeps
 * for backward: for max_train_batch rows; logits: for logits_rows rows, computed in
 * chunks); the KV cache in one buffer for (kv_batch, kv_len). Nothing is allocated per
 * step.
 *
 * Architecture (transformers' Qwen2ForCausalLM): token embedding; per layer
 *   h = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm1(x)
 *   x' = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)),                 n2 = rmsnorm2(h)
 * (q, k, v with bias; o, gate, up, down without); final rmsnorm; lm_head (tied to the
 * embedding or not). Optional scalar heads read the final-norm hidden state:
 *   score  ("score.weight" (1, hidden), no bias): transformers' Qwen2ForSequenceClassification
 *          with num_labels 1, pooled at each row's last real token (reward model);
 *   value  ("v_head.summary.weight" (1, hidden) + ".bias" (1)): TRL's
 *          AutoModelForCausalLMWithValueHead, one value per token (PPO critic). TRL's
 *          value-head dropout is not applied.
 *
 * Padding. A batch is (B, T) token ids; row b holds real tokens at positions
 * [pad_left[b], pad_left[b] + len[b]) and padding elsewhere. Right padding (pad_left 0)
 * is what training batches use; generation left-pads prompts so every row's next token
 * lands at the same cache index. Rotary positions count from each row's first real
 * token (t - pad_left[b]), as transformers' generate() does; attention never looks at
 * padding keys. Outputs at padding positions are meaningless and carry no gradient.
 *
 * Precision. Every linear layer asks the model's resolved precision table (one row per
 * layer: model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj,
 * lm_head, score, v_head.summary) for its operand specs in the phase the caller's
 * prec_ctx_t names. In the gradient phase the plan's compute type (bf16, fp16 with
 * dynamic loss scaling) rounds GEMM operands and outputs; master weights, optimizer
 * state and every non-GEMM op stay float32 (docs/engine.md).
 */
#ifndef MXRLHF_MODEL_QWEN2_H
#define MXRLHF_MODEL_QWEN2_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "precision/precision.h"
#include "util/err.h"
#include "util/safetensors.h"

/* ---- config ---------------------------------------------------------------------------- */

#define QWEN2_MAX_EOS 8

typedef struct qwen2_config {
    int hidden, inter, layers, heads, kv_heads, head_dim, vocab, max_pos;
    double rope_theta, rms_eps;
    bool tie;
    st_dtype_t dtype;            /* torch_dtype: ST_F32, ST_BF16 or ST_F16 */
    int bos_id;                  /* -1 when absent */
    int eos_ids[QWEN2_MAX_EOS];  /* eos_token_id (an id or a list) */
    int n_eos;
    int pad_id;                  /* pad_token_id, -1 when absent */
} qwen2_config_t;

/* Parses config.json text; `ctx` (the path) names it in errors, which name the key:
 * "m/config.json: field \"hidden_size\" is missing (expected an integer)". Required:
 * hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size;
 * the rest default as transformers' Qwen2Config does. Unsupported variants (rope_scaling,
 * sliding-window attention, another hidden_act or model_type) are errors. */
int qwen2_config_parse(const char *text, size_t len, const char *ctx, qwen2_config_t *c,
                       err_t *e);
int qwen2_config_load(const char *path, qwen2_config_t *c, err_t *e);
int qwen2_config_check(const qwen2_config_t *c, const char *ctx, err_t *e);

/* Parameter count of the trunk + lm_head (tied counted once), without scalar heads. */
size_t qwen2_config_nparams(const qwen2_config_t *c);

/* ---- the model ------------------------------------------------------------------------- */

typedef struct qwen2_model qwen2_model_t;

enum {
    QWEN2_HEAD_LM = 1,     /* lm_head: logits */
    QWEN2_HEAD_SCORE = 2,  /* score: one scalar per sequence */
    QWEN2_HEAD_VALUE = 4   /* v_head.summary: one scalar per token */
};

typedef struct qwen2_opts {
    int max_batch, max_seq;   /* activations are sized for this (rows x tokens) */
    bool training;            /* gradients, AdamW state, activations saved per layer */
    unsigned heads;           /* QWEN2_HEAD_* (0 means QWEN2_HEAD_LM) */
    int kv_batch, kv_len;     /* KV cache for generation; 0 = none */
    prec_model_t role;        /* which rules of a plan apply */
    uint64_t head_seed;       /* initialises scalar heads a checkpoint lacks */
    int max_train_batch;      /* training: rows of a TRAIN forward (the activations saved for
                                 backward are sized max_train_batch x max_seq; inference
                                 forwards and generation still take max_batch rows); a TRAIN
                                 forward with more tokens is an ERR_INPUT. 0 = max_batch */
    int logits_rows;          /* rows of logits held at once: the LM head, log-softmax,
                                 entropy and their backward run in chunks of this many rows
                                 (rounded down to a multiple of 64 when above 64; at least
                                 kv_batch). 0 = as many as fit in 256 MiB */
    bool frozen;              /* inference only, weights never change: the linear layers'
                                 float32 weights get their own buffer, which qwen2_freeze
                                 can free once their 16-bit copies exist (not with training) */
} qwen2_opts_t;

/* Creates a model with uninitialised parameters (load or init next). */
int qwen2_new(backend_t *be, const qwen2_config_t *cfg, const qwen2_opts_t *opts,
              qwen2_model_t **out, err_t *e);
void qwen2_free(qwen2_model_t *m);

const qwen2_config_t *qwen2_config(const qwen2_model_t *m);
backend_t *qwen2_backend(const qwen2_model_t *m);

/* ---- Hugging Face directories ---------------------------------------------------------- */

/* config.json + model.safetensors, or a sharded model.safetensors.index.json; weights in
 * F32, BF16 or F16. Every tensor's shape must match the config (errors name the file,
 * the tensor and both shapes). Scalar heads absent from the checkpoint are initialised
 * from opts.head_seed (uniform, std 0.02). */
int qwen2_open_dir(const char *dir, backend_t *be, const qwen2_opts_t *opts,
                   qwen2_model_t **out, err_t *e);
int qwen2_load_dir(qwen2_model_t *m, const char *dir, err_t *e);
/* Loading refuses NaN or Inf weights (ERR_INPUT naming the file, the tensor and the
 * element). */

/* A reward model's directory must hold its score head: qwen2_open_dir would initialise a
 * missing "score.weight" at random, and a causal LM given as the reward model would then
 * train the policy against noise. ERR_INPUT naming the directory and the missing tensor.
 * Reads the safetensors headers only. */
int qwen2_check_reward_dir(const char *dir, err_t *e);

/* What qwen2_load_dir reads from `dir` as "bytes:crc32" (zlib CRC-32 over each file's name
 * and bytes: config.json, then model.safetensors, or the index and its shards in name
 * order), the form of a file's fingerprint elsewhere ("4186:1a2b3c4d"), into buf (>= 32
 * bytes). Any changed byte of those files changes it; other files of the directory
 * (tokenizer.json, logs) do not count. */
int qwen2_dir_fingerprint(const char *dir, char *buf, size_t cap, err_t *e);

/* Writes config.json and model.safetensors (metadata {"format": "pt"}) in `dtype`
 * (ST_F32, ST_BF16, ST_F16) so transformers loads the directory unchanged; a tied lm_head
 * is not written twice. The config keeps the keys of the loaded config.json. */
int qwen2_save_dir(const qwen2_model_t *m, const char *dir, st_dtype_t dtype, err_t *e);

/* ---- parameters ------------------------------------------------------------------------ */

typedef struct qwen2_tensor {
    char name[96];        /* Hugging Face name */
    size_t off;           /* in floats, into the parameter buffer (and grads, moments) */
    size_t numel;
    int ndim;
    int64_t shape[2];
    bool decay;           /* AdamW weight decay applies (not to biases and norms) */
} qwen2_tensor_t;

int qwen2_ntensors(const qwen2_model_t *m);
const qwen2_tensor_t *qwen2_tensor(const qwen2_model_t *m, int i);
const qwen2_tensor_t *qwen2_tensor_find(const qwen2_model_t *m, const char *name);
size_t qwen2_nparams(const qwen2_model_t *m);   /* floats in the parameter buffer */

/* The buffers (BE_NULL where absent: gradients exist only when training). */
be_ptr_t qwen2_params(const qwen2_model_t *m);
be_ptr_t qwen2_grads(const qwen2_model_t *m);

/* Host copies: n floats from float offset `off` of the params / grads. */
int qwen2_params_get(qwen2_model_t *m, size_t off, float *host, size_t n, err_t *e);
int qwen2_params_set(qwen2_model_t *m, size_t off, const float *host, size_t n, err_t *e);
int qwen2_grads_get(qwen2_model_t *m, size_t off, float *host, size_t n, err_t *e);

/* Parameters changed behind the model's back (after qwen2_params_set this is done):
 * bumps the version, so cached quantized weights are rebuilt. */
void qwen2_params_touched(qwen2_model_t *m);
uint64_t qwen2_version(const qwen2_model_t *m);

/* The deterministic random initialisation the peer check rebuilds in PyTorch
 * (scripts/peer/engine_peer.py, docs/engine.md): element i of tensor NAME is
 *   t = 2 * u - 1,  u = (rng_u32(seed, rng_stream(NAME, 0), i) >> 8) * 2^-24
 *   value = 1 + t * 0.1f   for names ending in "norm.weight"
 *   value = t * range      otherwise (float32 arithmetic throughout). */
int qwen2_init_philox(qwen2_model_t *m, uint64_t seed, float range, err_t *e);

/* transformers' initialisation (Qwen2PreTrainedModel._init_weights), deterministic: weights
 * and embeddings N(0, std^2) by Box-Muller on the same Philox words (lanes 0-1 and 2-3 of a
 * block give elements 4k..4k+3), biases 0, norm weights 1. Pretraining uses it: the uniform
 * init above, with its smaller spread and noisy norms, makes the tiny model's topic retrieval
 * emerge later or not at all (docs/benchmarks.md, issue 7). */
int qwen2_init_normal(qwen2_model_t *m, uint64_t seed, float std, err_t *e);

/* ---- precision ------------------------------------------------------------------------- */

/* Names of the model's linear layers, in table order (valid while m lives). */
int qwen2_linear_names(const qwen2_model_t *m, const char *const **names);

/* Resolves `plan` for this model's role and layers (errors as prec_resolve). */
int qwen2_set_plan(qwen2_model_t *m, const prec_plan_t *plan, const char *source, err_t *e);
/* Loads a policies file, resolves plan `plan` for this model and, when audit_path is not
 * NULL, writes the resolved table there (prec_table_write). */
int qwen2_load_plan(qwen2_model_t *m, const char *policies_path, const char *plan,
                    const char *audit_path, err_t *e);
/* The table in force (fp32 everywhere until a plan is set); edit entries with
 * prec_table_set (sensitivity profiling); changes apply from the next call. */
prec_table_t *qwen2_precision(qwen2_model_t *m);

/* ---- forward ------------------------------------------------------------------------- */

typedef struct qwen2_batch {
    int B, T;
    const int32_t *ids;        /* (B, T); values at padding positions are ignored */
    const int32_t *pad_left;   /* (B) or NULL: all 0 */
    const int32_t *len;        /* (B) or NULL: T - pad_left[b] */
} qwen2_batch_t;

enum {
    QWEN2_FWD_TRAIN = 1,   /* keep activations for qwen2_backward (needs opts.training) */
    QWEN2_FWD_LOGITS = 2,  /* lm_head at every position */
    QWEN2_FWD_VALUES = 4,  /* value head at every position */
    QWEN2_FWD_SCORES = 8   /* score head (read at each row's last real token) */
};

int qwen2_forward(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_batch_t *b,
                  unsigned flags, err_t *e);

/* Part of an inference forward, for sensitivity profiling (layers before a quantized
 * one need not run again): decoder layers [first, last) of b.
 *   first == 0: from the embedding of b's ids; first > 0: from x_in, the residual stream
 *     entering layer `first` (host, (B*T, hidden) floats, e.g. an earlier call's x_out).
 *   last < layers: x_out receives the residual stream entering layer `last`; flags must
 *     be 0 (no head runs).
 *   last == layers: the final norm and the heads `flags` asks for, exactly as
 *     qwen2_forward (log-probs, values, scores work after it); x_out, when not NULL,
 *     receives the final norm's input.
 * Not TRAIN. Given the x_in an earlier range computed, the results are bitwise those of
 * one qwen2_forward (tested). */
int qwen2_forward_range(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_batch_t *b,
                        int first, int last, const float *x_in, float *x_out, unsigned flags,
                        err_t *e);

/* After a forward with LOGITS: logp[b*T+t] = log softmax(logits[b, t])[targets[b*T+t]],
 * 0 where targets is negative (no target), and optionally the entropy of each position's
 * distribution. The targets are kept for qwen2_backward. */
int qwen2_token_logprobs(qwen2_model_t *m, const int32_t *targets, float *logp, float *entropy,
                         err_t *e);

/* targets for next-token prediction: targets[b*T+t] = ids[b*T+t+1] when both positions
 * are real tokens, else -1. */
void qwen2_next_token_targets(const qwen2_batch_t *b, int32_t *targets);

/* After a forward with VALUES: (B*T) values; with SCORES: (B) scores. */
int qwen2_values_get(qwen2_model_t *m, float *values, err_t *e);
int qwen2_scores_get(qwen2_model_t *m, float *scores, err_t *e);

/* Hidden states (B*T, hidden) of the last forward: layer -1 is the final norm's output
 * (what the heads read); layer L in [0, layers) the residual stream entering decoder
 * layer L (kept only by TRAIN forwards); layer == layers the final norm's input. For
 * debugging and sensitivity checks. */
int qwen2_hidden_get(qwen2_model_t *m, int layer, float *out, err_t *e);

/* Host copy of logits rows [row0, row0 + nrows) of the last forward (or generate step).
 * When a forward's logits did not fit the logits buffer, the chunks holding these rows are
 * computed again from the final norm's output. */
int qwen2_logits_get(qwen2_model_t *m, int row0, int nrows, float *out, err_t *e);

/* ---- backward ------------------------------------------------------------------------ */

/* Gradients of the caller's loss with respect to the forward's outputs, host arrays,
 * any of which may be NULL: dlogp and dentropy (B*T) for the values qwen2_token_logprobs
 * returned, dvalues (B*T), dscores (B). Accumulates into the parameter gradients (call
 * qwen2_zero_grads first; several backward calls add up, as for micro-batches).
 * Cross-entropy over masked tokens is dlogp = -mask / sum(mask).
 * With fp16 compute the seeds are multiplied by the current loss scale here and the
 * gradients divided by it in qwen2_optimizer_step. The logits are overwritten. */
typedef struct qwen2_grad_in {
    const float *dlogp, *dentropy, *dvalues, *dscores;
} qwen2_grad_in_t;

int qwen2_backward(qwen2_model_t *m, const prec_ctx_t *ctx, const qwen2_grad_in_t *g, err_t *e);
void qwen2_zero_grads(qwen2_model_t *m);

/* ---- optimizer ----------------------------------------------------------------------- */

typedef struct qwen2_adamw {
    double lr, beta1, beta2, eps, weight_decay;
    double max_grad_norm;   /* <= 0: no clipping */
} qwen2_adamw_t;

typedef struct qwen2_step_info {
    double grad_norm;    /* global L2 norm of the (unscaled) gradients before clipping */
    double clip;         /* factor applied (1 when not clipped) */
    bool skipped;        /* fp16: gradients overflowed, step skipped, scale backed off */
    double loss_scale;   /* the scale in force after this step (1 unless fp16) */
} qwen2_step_info_t;

/* One AdamW step over every parameter (global-norm clipping as
 * torch.nn.utils.clip_grad_norm_), then the version bump that invalidates cached
 * quantized weights. Non-finite gradients are an ERR_FAIL unless fp16 compute is in
 * force, where they skip the step (dynamic loss scaling). */
int qwen2_optimizer_step(qwen2_model_t *m, const qwen2_adamw_t *h, qwen2_step_info_t *info,
                         err_t *e);
double qwen2_loss_scale(const qwen2_model_t *m);

/* The optimizer's state, for checkpoints that resume to the same bits: the AdamW moments
 * (host copies of n floats from float offset `off`, in the parameters' layout; m1 the
 * first moment, m2 the second) and the counters below. Training models only. */
typedef struct qwen2_opt_state {
    long step;           /* AdamW updates taken (bias correction) */
    double loss_scale;   /* fp16 dynamic loss scale (1 otherwise) */
    int good_steps;      /* fp16: good steps since the scale last changed */
} qwen2_opt_state_t;

int qwen2_moments_get(qwen2_model_t *m, size_t off, float *m1, float *m2, size_t n, err_t *e);
int qwen2_moments_set(qwen2_model_t *m, size_t off, const float *m1, const float *m2, size_t n,
                      err_t *e);
void qwen2_opt_state_get(const qwen2_model_t *m, qwen2_opt_state_t *s);
int qwen2_opt_state_set(qwen2_model_t *m, const qwen2_opt_state_t *s, err_t *e);

/* ---- generation ------------------------------------------------------------------------ */

typedef struct qwen2_gen {
    int max_new;
    double temperature;   /* <= 0: greedy */
    int top_k;            /* 0: off */
    double top_p;         /* >= 1: off */
    uint64_t seed, stream; /* row b draws from stream + b, step s at index s */
    const int32_t *stop;  /* stop ids (the stop token is kept in the output) */
    int nstop;
} qwen2_gen_t;

/* Samples continuations of B prompts (prompts[b] has plen[b] >= 1 ids) with the KV cache.
 * out (B, max_new) receives the new ids, out_len (B) how many each row got (a row stops
 * after a stop id or max_new). Needs opts.kv_batch >= B and kv_len >= longest prompt +
 * max_new. */
int qwen2_generate(qwen2_model_t *m, const prec_ctx_t *ctx, int B, const int32_t *const *prompts,
                   const int *plen, const qwen2_gen_t *g, int32_t *out, int *out_len, err_t *e);

/* What PPO rollouts add to qwen2_generate (all zero: qwen2_generate itself). */
typedef struct qwen2_gen_ext {
    int min_new;   /* the stop ids' logits are set to -inf for the first min_new new tokens,
                      so no row ends sooner (transformers' MinNewTokensLengthLogitsProcessor;
                      0: off) */
    float *logp;   /* optional output (B, max_new): log softmax of the step's logits (before
                      the min_new mask and the temperature) at the sampled token, 0 past a
                      row's end: the rollout-time log-probs; NULL: not computed */
} qwen2_gen_ext_t;

int qwen2_generate_ext(qwen2_model_t *m, const prec_ctx_t *ctx, int B,
                       const int32_t *const *prompts, const int *plen, const qwen2_gen_t *g,
                       const qwen2_gen_ext_t *x, int32_t *out, int *out_len, err_t *e);

/* The weight copies generation in ctx's phase reads, built now where stale: the operands of
 * the prompt's forward and the decode copies of the steps (packed MX codes and scales on
 * CUDA, docs/engine.md). qwen2_generate does this itself (after an optimizer step it is
 * part of the rollout's time); exposed so that a benchmark can time it. */
int qwen2_decode_weights(qwen2_model_t *m, const prec_ctx_t *ctx, err_t *e);

/* ---- frozen models -------------------------------------------------------------------- */

/* For a model opened with opts.frozen, after its plan is set: builds the quantized or
 * 16-bit copy of every linear layer's weight that forwards in `phase` use (through the
 * backend's weight caches) and frees the float32 weights of the decoder layers' linear
 * layers (and an untied lm_head), which those copies replace. Afterwards the model runs
 * forwards (and generation) in `phase` only, with the plan unchanged; another phase, a
 * changed precision table, qwen2_set_plan, loading, saving, qwen2_init_philox or reading
 * or writing those weights is an ERR_INPUT. Nothing is freed (*freed = 0, ERR_OK) when
 * some layer's weight would be read as is (an fp32 spec under fp32 compute) or is
 * quantized with stochastic rounding (a new copy per step needs the float32 source). */
int qwen2_freeze(qwen2_model_t *m, prec_phase_t phase, size_t *freed, err_t *e);

/* ---- memory ---------------------------------------------------------------------------- */

typedef struct qwen2_mem {
    size_t params, grads, optimizer, activations, kv_cache, weight_cache;  /* bytes */
} qwen2_mem_t;

/* Device memory the model holds: params (float32 weights still held, rotary tables),
 * gradients, AdamW moments, the activation buffer (saved activations, a chunk of logits,
 * backward scratch), the KV cache and the backend's weight caches. */

void qwen2_memory(const qwen2_model_t *m, qwen2_mem_t *out);

#endif
