/* modelled: memory traffic and multiply-accumulate counts of a PPO run's linear layers at
 * a precision plan's formats, against the same work in bf16 — a model computed from the
 * model's shape, the run's token counts and the plan's per-layer specs, never a
 * measurement (the comparison labels every such column "modelled").
 *
 * What is counted: the GEMMs of the linear layers a plan governs (q, k, v, o, gate, up,
 * down of every block, lm_head, and the scalar heads score and v_head.summary). Attention's
 * own products, norms, embeddings, sampling and the optimizer are left out: no plan changes
 * them. Each GEMM y = x·Wᵀ over T tokens costs T·in·out multiply-accumulates and moves
 *   W   (out x in) once per call, at the width of its spec;
 *   x   (T x in), at the width of its spec;
 *   y   (T x out), 16 bits — 32 when both operands are 32-bit (an fp32 GEMM writes fp32).
 * Widths: an MX format is its element bits + 8 / block (one E8M0 scale per block); bf16 and
 * fp16 are 16; fp32 is 32, or 16 in the gradient phase under a bf16/fp16 compute type
 * (operands are rounded to it). Backward (gradient phase): dx = dy·W moves W (weight_bp),
 * dy (grad_output_dx) and writes dx; dW = dyᵀ·x moves dy (grad_output_dw), x (input_bp) and
 * writes dW once per call; each costs T·in·out again. The bf16 column is the same GEMMs with
 * every operand and output at 16 bits. A MAC is classed by the wider of its two operands'
 * element widths (4, 6, 8, 16 or 32 bits), and by format (profile_mac_format): the wider
 * operand's format, the first operand's (W, or dy for dW) at equal widths, an fp32 operand
 * counting as the compute type it is rounded to in the gradient phase.
 *
 * A PPO step (profile_cost_ppo_step), with B rows, Q prompt tokens and R response tokens in
 * all, D the longest response (decode steps), E epochs of B / mini_batch minibatches:
 *   rollout           policy, rollout phase: trunk over Q + R tokens, lm_head over R, the
 *                     weights read D times (prefill + D - 1 decode steps);
 *   reward_inference  policy at the gradient phase (old log-probs and values: trunk,
 *                     lm_head and value head over Q + R), reference and reward model at
 *                     the reward phase (trunk over Q + R; lm_head over Q + R; score over
 *                     B), each read once;
 *   gradient_update   policy, gradient phase: E x (forward + backward over Q + R tokens,
 *                     lm_head and value head included), weights read once per minibatch
 *                     forward and once per backward.
 * Padding is not counted (an engine without padding waste). A separate critic is not
 * modelled.
 */
#ifndef MXRLHF_PROFILE_MODELLED_H
#define MXRLHF_PROFILE_MODELLED_H

#include <stdbool.h>

#include "model/qwen2.h"
#include "precision/precision.h"
#include "util/err.h"

enum { PROFILE_W4, PROFILE_W6, PROFILE_W8, PROFILE_W16, PROFILE_W32, PROFILE_NWIDTHS };

typedef struct profile_cost {
    double macs;
    double macs_by_width[PROFILE_NWIDTHS];  /* by the wider operand's element width */
    double macs_by_format[MX_FORMAT_COUNT]; /* by profile_mac_format */
    double bytes;                           /* at the plan's formats */
    double bytes_bf16;                      /* everything at 16 bits */
} profile_cost_t;

void profile_cost_add(profile_cost_t *acc, const profile_cost_t *c, double times);

/* The linear layers of a Qwen2 model with the given heads (QWEN2_HEAD_*), in the engine's
 * order and with Hugging Face names. */
typedef enum profile_layer_kind { PROFILE_TRUNK, PROFILE_LM, PROFILE_SCORE, PROFILE_VALUE } profile_layer_kind_t;

typedef struct profile_layers {
    int n;
    char **names;
    int *in, *out;
    profile_layer_kind_t *kind;
} profile_layers_t;

int profile_layers_make(const qwen2_config_t *c, unsigned heads, profile_layers_t *out, err_t *e);
void profile_layers_free(profile_layers_t *l);

/* Tokens each kind of layer sees in one pass. */
typedef struct profile_tokens {
    double trunk, lm, score, value;
} profile_tokens_t;

/* The format a multiply-accumulate of operands a and b is counted under (see above). */
mx_format_t profile_mac_format(const mx_spec_t *a, const mx_spec_t *b, prec_phase_t ph,
                               prec_compute_t compute);

/* Bits one element occupies in memory under `spec` in phase `ph` (see above). */
double profile_spec_bits(const mx_spec_t *spec, prec_phase_t ph, prec_compute_t compute);

/* One forward pass over the layers (weights read `calls` times), under table t (NULL:
 * fp32 everywhere) in phase ph; added to acc. */
void profile_cost_forward(const profile_layers_t *L, const prec_table_t *t, prec_phase_t ph,
                          const profile_tokens_t *tok, double calls, profile_cost_t *acc);

/* The backward GEMMs (dx and dW) of a pass (gradient phase), weights read and dW written
 * `calls` times; added to acc. */
void profile_cost_backward(const profile_layers_t *L, const prec_table_t *t,
                           const profile_tokens_t *tok, double calls, profile_cost_t *acc);

/* The three models of a PPO run and their resolved tables (NULL: fp32). */
typedef struct profile_ppo_models {
    const profile_layers_t *policy, *reference, *reward;
    const prec_table_t *t_policy, *t_reference, *t_reward;
} profile_ppo_models_t;

typedef struct profile_ppo_step {
    double rows;             /* B */
    double prompt_tokens;    /* Q, summed over rows */
    double response_tokens;  /* R, summed over rows */
    double decode_steps;     /* D: the longest response */
    int epochs;              /* ppo_epochs */
    int minibatches;         /* per epoch: batch_size / mini_batch_size */
} profile_ppo_step_t;

enum { PROFILE_PH_ROLLOUT, PROFILE_PH_REWARD, PROFILE_PH_GRADIENT, PROFILE_NPHASES };

/* Adds one PPO step's cost to acc[phase]. */
void profile_cost_ppo_step(const profile_ppo_models_t *m, const profile_ppo_step_t *s,
                           profile_cost_t acc[PROFILE_NPHASES]);

#endif
