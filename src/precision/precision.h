/* precision: the precision plan — which number format each operand of each GEMM uses.
 *
 * A policies file (policies.json, schema in docs/policies.md) holds named plans. A plan is
 * an ordered list of rules; each rule matches by (phase, model, module glob, operand) and
 * gives an mx_spec; the first matching rule wins, the plan's "default" spec covers the
 * rest. A plan is resolved once per model into a table with one row per linear layer
 * (Hugging Face names such as "model.layers.3.mlp.down_proj" or "lm_head") holding a spec
 * for every (phase, operand); the table can be written out as JSON for audit and edited
 * one entry at a time (sensitivity profiling). Which phase is active travels in a
 * prec_ctx_t that the caller passes to every forward and backward: there is no global
 * "current phase".
 *
 * Operands follow microxcaling's linear layer, y = x·Wᵀ (+ b), each quantized along the
 * reduction axis of the GEMM it feeds:
 *   forward  y  = x · Wᵀ      : weight (W along K), input (x along K)
 *   backward dx = dy · W      : weight_bp (W along N), grad_output_dx (dy along N)
 *   backward dW = dyᵀ · x     : input_bp (x along M), grad_output_dw (dy along M)
 *
 * A plan also carries a "compute" type for the gradient phase (fp32, bf16, or fp16 with
 * dynamic loss scaling): the type GEMM operands and outputs are rounded to around the
 * fp32 master weights (docs/engine.md says exactly what is rounded).
 *
 * This layer only decides; it computes nothing. */
#ifndef MXRLHF_PRECISION_PRECISION_H
#define MXRLHF_PRECISION_PRECISION_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "mx/mx.h"
#include "util/err.h"

typedef enum prec_phase {
    PREC_ROLLOUT,   /* "rollout": sampling responses (forward, KV cache) */
    PREC_REWARD,    /* "reward": reward and reference scoring (forward only) */
    PREC_GRADIENT,  /* "gradient": training forward and backward */
    PREC_PHASE_COUNT
} prec_phase_t;

typedef enum prec_model {
    PREC_MODEL_POLICY,
    PREC_MODEL_REFERENCE,
    PREC_MODEL_REWARD,
    PREC_MODEL_VALUE,
    PREC_MODEL_COUNT
} prec_model_t;

typedef enum prec_operand {
    PREC_OP_WEIGHT,          /* forward: W, blocks along K (rows of W)        */
    PREC_OP_INPUT,           /* forward: x, blocks along K (rows of x)        */
    PREC_OP_WEIGHT_BP,       /* dx = dy·W: W, blocks along N (columns of W)   */
    PREC_OP_GRAD_OUTPUT_DX,  /* dx = dy·W: dy, blocks along N (rows of dy)    */
    PREC_OP_INPUT_BP,        /* dW = dyᵀ·x: x, blocks along M (columns of x)  */
    PREC_OP_GRAD_OUTPUT_DW,  /* dW = dyᵀ·x: dy, blocks along M (columns of dy)*/
    PREC_OPERAND_COUNT
} prec_operand_t;

typedef enum prec_compute {
    PREC_COMPUTE_FP32,
    PREC_COMPUTE_BF16,
    PREC_COMPUTE_FP16, /* with dynamic loss scaling */
    PREC_COMPUTE_COUNT
} prec_compute_t;

/* Dynamic loss scaling (fp16 compute), PyTorch GradScaler's rule and defaults: start at
 * `init`; a step whose gradients hold Inf/NaN is skipped and the scale multiplied by
 * `backoff`; after `interval` good steps in a row it is multiplied by `growth`. */
typedef struct prec_loss_scale {
    double init;      /* 65536 */
    double growth;    /* 2.0 */
    double backoff;   /* 0.5 */
    int interval;     /* 2000 */
} prec_loss_scale_t;

typedef struct prec_rule {
    unsigned phases;    /* bit (1 << prec_phase_t) per phase matched */
    unsigned models;    /* bit per prec_model_t */
    unsigned operands;  /* bit per prec_operand_t */
    char *module;       /* glob over layer names: '*' any run of characters (dots too),
                           '?' one character */
    mx_spec_t spec;
} prec_rule_t;

typedef struct prec_plan {
    char *name;
    char *description;            /* "" when absent */
    prec_compute_t compute;       /* for the gradient phase */
    prec_loss_scale_t loss_scale; /* used when compute is fp16 */
    mx_spec_t dflt;               /* "default" */
    prec_rule_t *rules;
    int nrules;
} prec_plan_t;

typedef struct prec_policies {
    char *path;       /* where it came from (for messages) */
    int version;      /* PREC_POLICIES_VERSION */
    prec_plan_t *plans;
    int nplans;
} prec_policies_t;

#define PREC_POLICIES_VERSION 1

/* Loads and validates a policies file; errors name the file and the field
 * ("policies.json: plans.B.rules[2].operand: unknown operand \"wieght\" (expected
 * weight, input, ...)") and are ERR_INPUT. On error *out is empty. */
int prec_policies_load(const char *path, prec_policies_t *out, err_t *e);

/* The same from text; `ctx` names it in errors (the fuzzer's entry point). */
int prec_policies_parse(const char *text, size_t len, const char *ctx, prec_policies_t *out,
                        err_t *e);

void prec_policies_free(prec_policies_t *p);

/* The plan called `name`; an error lists the names there are. */
int prec_plan_find(const prec_policies_t *p, const char *name, const prec_plan_t **out,
                   err_t *e);

/* ---- the resolved table ----------------------------------------------------------- */

typedef struct prec_layer {
    char *name;                                          /* "model.layers.0.mlp.up_proj" */
    mx_spec_t spec[PREC_PHASE_COUNT][PREC_OPERAND_COUNT];
    int16_t rule[PREC_PHASE_COUNT][PREC_OPERAND_COUNT];  /* index of the rule that won,
                                                            -1 = the default, -2 = set by
                                                            prec_table_set */
} prec_layer_t;

typedef struct prec_table {
    char *plan;                   /* plan name ("fp32" for prec_table_init_fp32) */
    char *source;                 /* policies file, or "" */
    prec_model_t model;
    prec_compute_t compute;
    prec_loss_scale_t loss_scale;
    prec_layer_t *layers;
    int nlayers;
} prec_table_t;

/* Resolves `plan` for a model playing role `model` whose linear layers are `names`.
 * Every rule that can apply to this model (its model filter includes `model`) must
 * match at least one layer name, else ERR_INPUT naming the rule. */
int prec_resolve(const prec_plan_t *plan, const char *source, prec_model_t model,
                 const char *const *names, int n, prec_table_t *out, err_t *e);

/* A table with fp32 everywhere (what a model uses when no plan is given). */
int prec_table_init_fp32(prec_table_t *t, prec_model_t model, const char *const *names, int n,
                         err_t *e);

int prec_table_copy(prec_table_t *dst, const prec_table_t *src, err_t *e);
void prec_table_free(prec_table_t *t);

/* Index of a layer by exact name, or -1. */
int prec_table_find(const prec_table_t *t, const char *layer);

/* Overrides one entry (sensitivity profiling: one layer in one format). */
int prec_table_set(prec_table_t *t, const char *layer, prec_phase_t phase, prec_operand_t op,
                   const mx_spec_t *spec, err_t *e);

/* The audit form: {"version":1, "plan":..., "source":..., "model":..., "compute":...,
 * "layers": {"<name>": {"<phase>": {"<operand>": "spec text", ...}, ...}, ...}} with the
 * winning rule beside each spec. Caller frees with cJSON_Delete. */
cJSON *prec_table_to_json(const prec_table_t *t);
int prec_table_write(const prec_table_t *t, const char *path, err_t *e);

/* ---- the context ----------------------------------------------------------------- */

/* What a forward or backward needs to know about "now". Passed explicitly. */
typedef struct prec_ctx {
    prec_phase_t phase;
    uint64_t seed;   /* stochastic rounding: the random words of a quantization are */
    uint64_t step;   /* keyed by (seed, stream(layer, operand, step), element index) */
} prec_ctx_t;

static inline const mx_spec_t *prec_spec(const prec_table_t *t, int layer, prec_phase_t ph,
                                         prec_operand_t op)
{
    return &t->layers[layer].spec[ph][op];
}

/* The compute type in force for a phase: the plan's for gradient, fp32 otherwise. */
static inline prec_compute_t prec_compute_for(const prec_table_t *t, prec_phase_t ph)
{
    return ph == PREC_GRADIENT ? t->compute : PREC_COMPUTE_FP32;
}

/* ---- names ------------------------------------------------------------------------ */

const char *prec_phase_name(prec_phase_t p);     /* "rollout", "reward", "gradient" */
/* The study's names, which its energy.csv, the energy layer's phase windows and PPO's
 * statistics use: "rollout", "reward_inference", "gradient_update". */
extern const char *const prec_phase_study_names[PREC_PHASE_COUNT];
const char *prec_phase_study_name(prec_phase_t p);
/* For prose and figure labels: "rollout", "reward inference", "gradient update". */
const char *prec_phase_label(prec_phase_t p);
const char *prec_model_name(prec_model_t m);     /* "policy", ... */
const char *prec_operand_name(prec_operand_t o); /* "weight", ... */
const char *prec_compute_name(prec_compute_t c); /* "fp32", "bf16", "fp16" */

/* 0 or -1. Phases also accept the study's names "reward_inference", "gradient_update". */
int prec_phase_from_name(const char *s, prec_phase_t *out);
int prec_model_from_name(const char *s, prec_model_t *out);
int prec_operand_from_name(const char *s, prec_operand_t *out);
int prec_compute_from_name(const char *s, prec_compute_t *out);

/* The glob rule used for module names. */
bool prec_glob_match(const char *glob, const char *s);

#endif
