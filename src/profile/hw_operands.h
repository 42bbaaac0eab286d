/* hw_operands: the two operands of one linear layer's forward GEMM, y = x·Wᵀ, taken from a
 * model on its evaluation set: the real tensors the MX processing elements are tested on
 * (`mxrlhf hw vectors`, `mxrlhf hw gemm`; docs/hardware.md).
 *
 *   W  (N, K)  the layer's weight as the model holds it (lm_head: the embedding when tied)
 *   x  (M, K)  the activations that reach the layer on the evaluation set: the first M real
 *              (non-padding) token positions of the evaluation batches, in batch order,
 *              row by row, each the layer's input before any quantization of the layer's
 *              own operands
 *
 * Layers whose input is a normalized residual stream are supported: `lm_head` (the final
 * norm's output) and `model.layers.L.self_attn.{q,k,v}_proj` (input_layernorm of the
 * stream entering layer L). The stream comes from qwen2_forward_range and the norm from
 * the backend's own rmsnorm, so x is bit for bit what the model's forward feeds the layer.
 * With a plan, the forward runs under it (in `phase`): earlier layers are quantized as the
 * plan says, and the plan's weight and input specs of this layer are returned. */
#ifndef MXRLHF_PROFILE_HW_OPERANDS_H
#define MXRLHF_PROFILE_HW_OPERANDS_H

#include <stddef.h>

#include "mx/mx.h"
#include "precision/precision.h"
#include "profile/evalset.h"
#include "util/err.h"

typedef struct profile_hw_operands_opts {
    const char *model_dir;       /* Hugging Face directory with tokenizer.json */
    const char *eval_path;       /* split record or HH-RLHF file (evalset.h) */
    profile_eval_opts_t eval;    /* how the evaluation set is made */
    const char *layer;           /* "lm_head" or "model.layers.L.self_attn.q_proj" ... */
    long rows;                   /* M: activation rows kept (>= 1) */
    const char *policies;        /* a policies file, or NULL: no plan (fp32) */
    const char *plan;            /* a plan name in it */
    prec_phase_t phase;          /* the phase the forward and the specs are taken in */
    const char *backend;         /* "cpu" (default when NULL) or "cuda" */
} profile_hw_operands_opts_t;

typedef struct profile_hw_operands {
    float *x, *w;                /* (M, K), (N, K); M < rows when the set has fewer tokens */
    size_t M, N, K;
    mx_spec_t spec_x, spec_w;    /* the plan's input and weight specs (fp32 without one) */
    char source[512];            /* the evaluation set, in words */
} profile_hw_operands_t;

int profile_hw_operands_load(const profile_hw_operands_opts_t *o, profile_hw_operands_t *out,
                             err_t *e);
void profile_hw_operands_free(profile_hw_operands_t *op);

#endif
