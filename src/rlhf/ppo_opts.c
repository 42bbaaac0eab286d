/* ppo_opts: PPO's options, their defaults, and their JSON form (the "ppo" section of the
 * configuration file). One table drives defaults, parsing, range checks and printing, so
 * a field cannot be added to one and forgotten in another. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "rlhf/ppo.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/json.h"

typedef enum { F_INT, F_U64, F_DBL, F_BOOL, F_KL, F_TMPL } ftype_t;

typedef struct field {
    const char *name;
    ftype_t type;
    size_t off;
    double lo, hi;     /* inclusive range for numbers */
    const char *help;  /* what the value means, for errors */
} field_t;

#define O(f) offsetof(ppo_opts_t, f)
static const field_t fields[] = {
    {"steps", F_INT, O(steps), 1, 1e9, "PPO steps"},
    {"batch_size", F_INT, O(batch_size), 1, 4096, "rollouts per step"},
    {"mini_batch_size", F_INT, O(mini_batch_size), 1, 4096, "rows per minibatch"},
    {"gradient_accumulation_steps", F_INT, O(gradient_accumulation_steps), 1, 4096,
     "minibatches per optimizer step"},
    {"ppo_epochs", F_INT, O(ppo_epochs), 1, 1000, "passes over each batch"},
    {"seed", F_U64, O(seed), 0, 9007199254740991.0, "random seed"},
    {"learning_rate", F_DBL, O(learning_rate), 0, 10, "AdamW learning rate"},
    {"adam_beta1", F_DBL, O(adam_beta1), 0, 0.999999, "AdamW beta1"},
    {"adam_beta2", F_DBL, O(adam_beta2), 0, 0.999999999, "AdamW beta2"},
    {"adam_epsilon", F_DBL, O(adam_epsilon), 0, 1, "AdamW epsilon"},
    {"weight_decay", F_DBL, O(weight_decay), 0, 10, "AdamW weight decay"},
    {"max_grad_norm", F_DBL, O(max_grad_norm), 0, 1e30, "global-norm clip (0: off)"},
    {"kl_penalty", F_KL, O(kl_penalty), 0, 0, "kl, abs, mse, full or k3"},
    {"adap_kl_ctrl", F_BOOL, O(adap_kl_ctrl), 0, 0, "adaptive KL controller"},
    {"init_kl_coef", F_DBL, O(init_kl_coef), 0, 1e6, "initial KL coefficient"},
    {"target", F_DBL, O(target), 1e-12, 1e6, "KL target of the adaptive controller (nats)"},
    {"horizon", F_DBL, O(horizon), 1e-12, 1e12, "horizon of the adaptive controller"},
    {"gamma", F_DBL, O(gamma), 0, 1, "discount"},
    {"lam", F_DBL, O(lam), 0, 1, "GAE lambda"},
    {"whiten_rewards", F_BOOL, O(whiten_rewards), 0, 0, "whiten rewards before GAE"},
    {"cliprange", F_DBL, O(cliprange), 0, 1e6, "policy ratio clip"},
    {"cliprange_value", F_DBL, O(cliprange_value), 0, 1e30, "value clip"},
    {"vf_coef", F_DBL, O(vf_coef), 0, 1e6, "value loss coefficient"},
    {"ratio_threshold", F_DBL, O(ratio_threshold), 0, 1e30, "skip a minibatch above this mean ratio"},
    {"early_stopping", F_BOOL, O(early_stopping), 0, 0, "stop the epochs on policy KL"},
    {"target_kl", F_DBL, O(target_kl), 0, 1e6, "early-stopping KL (stops above 1.5x)"},
    {"use_score_scaling", F_BOOL, O(use_score_scaling), 0, 0, "divide scores by a running std"},
    {"use_score_norm", F_BOOL, O(use_score_norm), 0, 0, "also subtract the running mean"},
    {"score_clip", F_DBL, O(score_clip), 0, 1e30, "clip scores to +-this (0: off)"},
    {"max_new_tokens", F_INT, O(max_new_tokens), 1, 1 << 20, "most new tokens per response"},
    {"min_new_tokens", F_INT, O(min_new_tokens), 0, 1 << 20, "fewest new tokens per response"},
    {"temperature", F_DBL, O(temperature), 1e-6, 1e6, "sampling temperature"},
    {"top_k", F_INT, O(top_k), 0, 1 << 30, "top-k sampling (0: off)"},
    {"top_p", F_DBL, O(top_p), 1e-9, 1, "nucleus sampling (1: off)"},
    {"max_prompt_tokens", F_INT, O(max_prompt_tokens), 1, 1 << 20, "longest prompt kept"},
    {"template", F_TMPL, O(template_), 0, 0, "raw or chatml"},
    {"separate_critic", F_BOOL, O(separate_critic), 0, 0, "a critic model of its own"},
    {"oracle_reward", F_BOOL, O(oracle_reward), 0, 0, "reward = synthetic ground truth"},
    {"checkpoint_every", F_INT, O(checkpoint_every), 0, 1e9, "steps between checkpoints"},
    {"eval_prompts", F_INT, O(eval_prompts), 0, 1 << 20, "held-out prompts evaluated"},
    {"eval_every", F_INT, O(eval_every), 0, 1e9, "steps between evaluations (0: first and last)"},
    {"best_of_n", F_INT, O(best_of_n), 0, 1024, "n of the best-of-n comparison (0: off)"},
};
#undef O
#define NFIELDS ((int)(sizeof fields / sizeof fields[0]))

void ppo_opts_default(ppo_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 100;
    o->batch_size = 8;
    o->mini_batch_size = 4;
    o->gradient_accumulation_steps = 1;
    o->ppo_epochs = 4;
    o->seed = 42;
    o->learning_rate = 1.41e-5;
    o->adam_beta1 = 0.9;
    o->adam_beta2 = 0.999;
    o->adam_epsilon = 1e-8;
    o->weight_decay = 0;
    o->max_grad_norm = 0;
    o->kl_penalty = PPO_KL_KL;
    o->adap_kl_ctrl = true;
    o->init_kl_coef = 0.2;
    o->target = 6;
    o->horizon = 10000;
    o->gamma = 1;
    o->lam = 0.95;
    o->whiten_rewards = false;
    o->cliprange = 0.2;
    o->cliprange_value = 0.2;
    o->vf_coef = 0.1;
    o->ratio_threshold = 10;
    o->early_stopping = false;
    o->target_kl = 1;
    o->use_score_scaling = false;
    o->use_score_norm = false;
    o->score_clip = 0;
    o->max_new_tokens = 48;
    o->min_new_tokens = 0;
    o->temperature = 1;
    o->top_k = 0;
    o->top_p = 1;
    o->max_prompt_tokens = 256;
    o->template_ = RLHF_TEMPLATE_RAW;
    o->separate_critic = false;
    o->oracle_reward = false;
    o->checkpoint_every = 10;
    o->eval_prompts = 64;
    o->eval_every = 0;
    o->best_of_n = 8;
}

static void *at(ppo_opts_t *o, const field_t *f) { return (char *)o + f->off; }
static const void *cat(const ppo_opts_t *o, const field_t *f) { return (const char *)o + f->off; }

int ppo_opts_from_json(const cJSON *obj, const char *ctx, ppo_opts_t *out, err_t *e)
{
    if (!cJSON_IsObject(obj))
        return err_set(e, ERR_INPUT, "%s: expected an object of PPO options", ctx);
    ppo_opts_t o = *out;
    for (const cJSON *it = obj->child; it; it = it->next) {
        const field_t *f = NULL;
        for (int i = 0; i < NFIELDS; i++)
            if (!strcmp(fields[i].name, it->string))
                f = &fields[i];
        if (!f)
            return err_set(e, ERR_INPUT, "%s.%s: unknown PPO option (ppo_opts_to_json lists "
                           "them; `mxrlhf config` prints the defaults)", ctx, it->string);
        switch (f->type) {
        case F_BOOL:
            if (!cJSON_IsBool(it))
                return err_set(e, ERR_INPUT, "%s.%s: expected true or false (%s)", ctx, f->name,
                               f->help);
            *(bool *)at(&o, f) = cJSON_IsTrue(it);
            break;
        case F_KL:
        case F_TMPL: {
            bool bad = !cJSON_IsString(it);
            if (!bad && f->type == F_KL)
                bad = ppo_kl_est_from_name(it->valuestring, (ppo_kl_est_t *)at(&o, f)) != 0;
            if (!bad && f->type == F_TMPL)
                bad = rlhf_template_from_name(it->valuestring, (rlhf_template_t *)at(&o, f)) != 0;
            if (bad)
                return err_set(e, ERR_INPUT, "%s.%s: expected one of %s", ctx, f->name, f->help);
            break;
        }
        default: {
            double v = it->valuedouble;
            if (!cJSON_IsNumber(it) || !isfinite(v) || v < f->lo || v > f->hi ||
                (f->type != F_DBL && v != floor(v)))
                return err_set(e, ERR_INPUT, "%s.%s: expected %s in [%g, %g] (%s)", ctx, f->name,
                               f->type == F_DBL ? "a number" : "an integer", f->lo, f->hi, f->help);
            if (f->type == F_INT)
                *(int *)at(&o, f) = (int)v;
            else if (f->type == F_U64)
                *(uint64_t *)at(&o, f) = (uint64_t)v;
            else
                *(double *)at(&o, f) = v;
        }
        }
    }
    if (ppo_opts_check(&o, ctx, e))
        return e->code;
    *out = o;
    return ERR_OK;
}

cJSON *ppo_opts_to_json(const ppo_opts_t *o)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    for (int i = 0; i < NFIELDS; i++) {
        const field_t *f = &fields[i];
        const void *p = cat(o, f);
        cJSON *v = NULL;
        switch (f->type) {
        case F_INT: v = cJSON_CreateNumber(*(const int *)p); break;
        case F_U64: v = cJSON_CreateNumber((double)*(const uint64_t *)p); break;
        case F_DBL: v = cJSON_CreateNumber(*(const double *)p); break;
        case F_BOOL: v = cJSON_CreateBool(*(const bool *)p); break;
        case F_KL: v = cJSON_CreateString(ppo_kl_est_name(*(const ppo_kl_est_t *)p)); break;
        case F_TMPL: v = cJSON_CreateString(rlhf_template_name(*(const rlhf_template_t *)p)); break;
        }
        if (!v || !cJSON_AddItemToObject(j, f->name, v)) {
            cJSON_Delete(v);
            cJSON_Delete(j);
            return NULL;
        }
    }
    return j;
}

int ppo_opts_check(const ppo_opts_t *o, const char *ctx, err_t *e)
{
    int bb = o->mini_batch_size * o->gradient_accumulation_steps;
    if (o->mini_batch_size > o->batch_size || o->batch_size % bb)
        return err_set(e, ERR_INPUT, "%s: batch_size (%d) must be a multiple of mini_batch_size "
                       "(%d) x gradient_accumulation_steps (%d)", ctx, o->batch_size,
                       o->mini_batch_size, o->gradient_accumulation_steps);
    if (o->min_new_tokens > o->max_new_tokens)
        return err_set(e, ERR_INPUT, "%s: min_new_tokens (%d) exceeds max_new_tokens (%d)", ctx,
                       o->min_new_tokens, o->max_new_tokens);
    if (o->use_score_norm && !o->use_score_scaling)
        return err_set(e, ERR_INPUT, "%s: use_score_norm needs use_score_scaling (as in TRL)",
                       ctx);
    return ERR_OK;
}

int ppo_opts_load_file(const char *path, ppo_opts_t *o, err_t *e)
{
    cJSON *j = NULL;
    if (json_load_file(path, 16u << 20, &j, e))
        return e->code;
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(j, "ppo");
    char ctx[1100];
    snprintf(ctx, sizeof ctx, "%s%s", path, sec ? ": ppo" : "");
    int rc = ppo_opts_from_json(sec ? sec : j, ctx, o, e);
    cJSON_Delete(j);
    return rc;
}

int ppo_opts_set(ppo_opts_t *o, const char *const *kv, int n, err_t *e)
{
    for (int i = 0; i < n; i++) {
        const char *eq = strchr(kv[i], '=');
        if (!eq || eq == kv[i])
            return err_set(e, ERR_INPUT, "--set %s: expected KEY=VALUE", kv[i]);
        char key[128];
        size_t kl = (size_t)(eq - kv[i]);
        if (kl >= sizeof key)
            return err_set(e, ERR_INPUT, "--set %s: key too long", kv[i]);
        memcpy(key, kv[i], kl);
        key[kl] = 0;
        cJSON *v = cJSON_Parse(eq + 1);
        if (!v)
            v = cJSON_CreateString(eq + 1);
        cJSON *obj = cJSON_CreateObject();
        if (!v || !obj) {
            cJSON_Delete(v);
            cJSON_Delete(obj);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
        cJSON_AddItemToObject(obj, key, v);
        int rc = ppo_opts_from_json(obj, "--set", o, e);
        cJSON_Delete(obj);
        if (rc)
            return rc;
    }
    return ERR_OK;
}
