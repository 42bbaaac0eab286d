/* ppo_opts: PPO's options table (the "ppo" section of the configuration file) and its
 * cross-field checks. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "rlhf/ppo.h"

OPT_ENUM_FUNCS(ppo_kl_enum, ppo_kl_est_t, PPO_KL_COUNT, ppo_kl_est_name, ppo_kl_est_from_name);
const opt_enum_t ppo_rc_enum = {ppo_rc_names, 0, NULL, NULL};

static int check(const void *o, const char *ctx, err_t *e) { return ppo_opts_check(o, ctx, e); }

/* TRL PPOConfig's names and defaults, except where the study's differ (batch 8, minibatch
 * 4, seed 42). */
#define O(f) offsetof(ppo_opts_t, f)
static const opt_field_t fields[] = {
    OPT_KEY("steps", OPT_INT, O(steps), "100", 1, 1e9, "PPO steps", .flag = "steps"),
    OPT_KEY("batch_size", OPT_INT, O(batch_size), "8", 1, 4096, "rollouts per step"),
    OPT_KEY("mini_batch_size", OPT_INT, O(mini_batch_size), "4", 1, 4096, "rows per minibatch"),
    OPT_KEY("gradient_accumulation_steps", OPT_INT, O(gradient_accumulation_steps), "1", 1, 4096,
            "minibatches per optimizer step"),
    OPT_KEY("ppo_epochs", OPT_INT, O(ppo_epochs), "4", 1, 1000, "passes over each batch"),
    OPT_KEY("seed", OPT_U64, O(seed), "42", 0, 0, "PPO seed", .flag = "seed"),
    OPT_KEY("learning_rate", OPT_DOUBLE, O(learning_rate), "1.41e-5", 0, 10, "AdamW learning rate"),
    OPT_KEY("adam_beta1", OPT_DOUBLE, O(adam_beta1), "0.9", 0, 0.999999, "AdamW beta1"),
    OPT_KEY("adam_beta2", OPT_DOUBLE, O(adam_beta2), "0.999", 0, 0.999999999, "AdamW beta2"),
    OPT_KEY("adam_epsilon", OPT_DOUBLE, O(adam_epsilon), "1e-8", 0, 1, "AdamW epsilon"),
    OPT_KEY("weight_decay", OPT_DOUBLE, O(weight_decay), "0", 0, 10, "AdamW weight decay"),
    OPT_KEY("max_grad_norm", OPT_DOUBLE, O(max_grad_norm), "0", 0, 1e30,
            "global-norm clip (0: off, TRL's None)"),
    OPT_KEY("kl_penalty", OPT_ENUM, O(kl_penalty), "kl", 0, 0, "KL estimator of the penalty",
            .en = &ppo_kl_enum),
    OPT_KEY("adap_kl_ctrl", OPT_BOOL, O(adap_kl_ctrl), "true", 0, 0, "adaptive KL controller"),
    OPT_KEY("init_kl_coef", OPT_DOUBLE, O(init_kl_coef), "0.2", 0, 1e6, "initial KL coefficient"),
    OPT_KEY("target", OPT_DOUBLE, O(target), "6", 1e-12, 1e6,
            "KL target of the adaptive controller (nats)"),
    OPT_KEY("horizon", OPT_DOUBLE, O(horizon), "10000", 1e-12, 1e12,
            "horizon of the adaptive controller"),
    OPT_KEY("gamma", OPT_DOUBLE, O(gamma), "1", 0, 1, "discount"),
    OPT_KEY("lam", OPT_DOUBLE, O(lam), "0.95", 0, 1, "GAE lambda"),
    OPT_KEY("whiten_rewards", OPT_BOOL, O(whiten_rewards), "false", 0, 0,
            "whiten rewards before GAE"),
    OPT_KEY("cliprange", OPT_DOUBLE, O(cliprange), "0.2", 0, 1e6, "policy ratio clip"),
    OPT_KEY("cliprange_value", OPT_DOUBLE, O(cliprange_value), "0.2", 0, 1e30, "value clip"),
    OPT_KEY("vf_coef", OPT_DOUBLE, O(vf_coef), "0.1", 0, 1e6, "value loss coefficient"),
    OPT_KEY("ratio_threshold", OPT_DOUBLE, O(ratio_threshold), "10", 0, 1e30,
            "skip a minibatch above this mean ratio"),
    OPT_KEY("rollout_correction", OPT_ENUM, O(rollout_correction), "none", 0, 0,
            "weights for rollouts sampled at another precision: none (TRL), tis (per token), "
            "seq_tis (per sequence)", .en = &ppo_rc_enum),
    OPT_KEY("tis_cap", OPT_DOUBLE, O(tis_cap), "2", 1, 1e6,
            "truncation C of the rollout-correction weights min(pi_train / pi_rollout, C)"),
    OPT_KEY("early_stopping", OPT_BOOL, O(early_stopping), "false", 0, 0,
            "stop the epochs on policy KL"),
    OPT_KEY("target_kl", OPT_DOUBLE, O(target_kl), "1", 0, 1e6,
            "early-stopping KL (stops above 1.5x)"),
    OPT_KEY("use_score_scaling", OPT_BOOL, O(use_score_scaling), "false", 0, 0,
            "divide scores by a running std"),
    OPT_KEY("use_score_norm", OPT_BOOL, O(use_score_norm), "false", 0, 0,
            "also subtract the running mean"),
    OPT_KEY("score_clip", OPT_DOUBLE, O(score_clip), "0", 0, 1e30,
            "clip scores to +-this (0: off, TRL's None)"),
    OPT_KEY("max_new_tokens", OPT_INT, O(max_new_tokens), "48", 1, 1 << 20,
            "most new tokens per response"),
    OPT_KEY("min_new_tokens", OPT_INT, O(min_new_tokens), "0", 0, 1 << 20,
            "fewest new tokens per response (0: the end-of-turn id may come at once)"),
    OPT_KEY("temperature", OPT_DOUBLE, O(temperature), "1", 1e-6, 1e6, "sampling temperature"),
    OPT_KEY("top_k", OPT_INT, O(top_k), "0", 0, 1 << 30, "top-k sampling (0: off)"),
    OPT_KEY("top_p", OPT_DOUBLE, O(top_p), "1", 1e-9, 1, "nucleus sampling (1: off)"),
    OPT_KEY("max_prompt_tokens", OPT_INT, O(max_prompt_tokens), "256", 1, 1 << 20,
            "longest prompt kept (its last tokens)"),
    OPT_KEY("template", OPT_ENUM, O(template_), "raw", 0, 0, "how a turn is written",
            .en = &rlhf_template_enum),
    OPT_KEY("separate_critic", OPT_BOOL, O(separate_critic), "false", 0, 0,
            "a critic model of its own (else a value head on the policy's trunk)"),
    OPT_KEY("oracle_reward", OPT_BOOL, O(oracle_reward), "false", 0, 0,
            "reward = the synthetic task's ground truth (a diagnostic; synthetic data only)"),
    OPT_KEY("checkpoint_every", OPT_INT, O(checkpoint_every), "10", 0, 1e9,
            "steps between checkpoints (0: only at the end)"),
    OPT_KEY("eval_prompts", OPT_INT, O(eval_prompts), "64", 0, 1 << 20,
            "held-out prompts evaluated (0: no evaluation)"),
    OPT_KEY("eval_every", OPT_INT, O(eval_every), "0", 0, 1e9,
            "steps between evaluations (0: first and last)"),
    OPT_KEY("best_of_n", OPT_INT, O(best_of_n), "8", 0, 1024,
            "n of the best-of-n comparison from the initial policy (0/1: off)"),
};
#undef O

const opt_table_t ppo_opts_table = OPT_TABLE("ppo", ppo_opts_t, fields, check);

void ppo_opts_default(ppo_opts_t *o) { opts_default(&ppo_opts_table, o); }

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
