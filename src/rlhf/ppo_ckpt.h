/* ppo_ckpt: PPO checkpoints that resume to the same bits.
 *
 * Layout under the run's output directory:
 *   checkpoints/ckpt-NNNNNN/policy.safetensors   every policy parameter (F32, Hugging Face
 *                                                names) and the AdamW moments as
 *                                                "optimizer.exp_avg.<name>" and
 *                                                "optimizer.exp_avg_sq.<name>"
 *   checkpoints/ckpt-NNNNNN/critic.safetensors   the same for a separate critic
 *   checkpoints/ckpt-NNNNNN/state.json           the caller's state (step, KL coefficient,
 *                                                options, statistics so far, ...) plus each
 *                                                model's optimizer counters
 *   checkpoints/latest.json                      {"step": N, "dir": "ckpt-NNNNNN"}
 * Each file is written atomically and latest.json last, so it always names a complete
 * checkpoint; every other checkpoint directory (the previous one, or one a killed run left
 * half-written, with its temporaries) is removed only after that. A run killed at any
 * moment leaves the last good checkpoint readable.
 */
#ifndef MXRLHF_RLHF_PPO_CKPT_H
#define MXRLHF_RLHF_PPO_CKPT_H

#include <cJSON.h>

#include "model/qwen2.h"
#include "util/err.h"

/* Writes checkpoint `step` (critic may be NULL); `state` is stored as given with
 * "policy_optimizer" (and "critic_optimizer") added. */
int ppo_ckpt_write(const char *out_dir, int step, qwen2_model_t *policy, qwen2_model_t *critic,
                   const cJSON *state, err_t *e);

/* Reads latest.json and the state.json of the checkpoint it names, without the weights
 * (caller frees *state; *state_path too when not NULL). ERR_INPUT when there is none, or
 * when latest.json's step is not the step that checkpoint holds. */
int ppo_ckpt_peek(const char *out_dir, cJSON **state, int *step, char **state_path, err_t *e);

/* Reads the checkpoint latest.json names into the models (which must have the shapes it
 * was written from) and returns its state (caller frees) and step. ERR_INPUT when there is
 * none or it does not fit. */
int ppo_ckpt_read(const char *out_dir, qwen2_model_t *policy, qwen2_model_t *critic,
                  cJSON **state, int *step, err_t *e);

#endif
