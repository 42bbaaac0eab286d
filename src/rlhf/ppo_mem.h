/* ppo_mem: where a PPO run's device memory goes, model by model (issue 10's memory target
 * is checked against PyTorch's peak; this table shows what makes up ours). */
#ifndef MXRLHF_RLHF_PPO_MEM_H
#define MXRLHF_RLHF_PPO_MEM_H

#include <stdio.h>

#include "backend/backend.h"
#include "model/qwen2.h"

/* Writes one line per model (NULL models skipped) with qwen2_memory's parts in GiB, their
 * total, and what the backend holds now and at its peak (be_mem: on CUDA every cudaMalloc,
 * the difference from the models' sum being scratch and workspace; on the CPU its
 * buffers). Lines start with "mxrlhf ppo: memory". */
void ppo_memory_write(FILE *f, backend_t *be, qwen2_model_t *const *models,
                      const char *const *names, int n);

#endif
