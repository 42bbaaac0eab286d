/* ppo_mem: the per-model device-memory table of a PPO run (ppo_mem.h). */
#include "rlhf/ppo_mem.h"

static double gib(size_t b) { return (double)b / (1024.0 * 1024.0 * 1024.0); }

void ppo_memory_write(FILE *f, backend_t *be, qwen2_model_t *const *models,
                      const char *const *names, int n)
{
    if (!f)
        return;
    fprintf(f, "mxrlhf ppo: memory (GiB)  %-10s %7s %7s %9s %11s %8s %12s %7s\n", "model",
            "params", "grads", "optimizer", "activations", "kv_cache", "weight_cache", "total");
    size_t all = 0;
    for (int i = 0; i < n; i++) {
        if (!models[i])
            continue;
        qwen2_mem_t m;
        qwen2_memory(models[i], &m);
        size_t tot = m.params + m.grads + m.optimizer + m.activations + m.kv_cache + m.weight_cache;
        all += tot;
        fprintf(f, "mxrlhf ppo: memory (GiB)  %-10s %7.2f %7.2f %9.2f %11.2f %8.2f %12.2f %7.2f\n",
                names[i], gib(m.params), gib(m.grads), gib(m.optimizer), gib(m.activations),
                gib(m.kv_cache), gib(m.weight_cache), gib(tot));
    }
    fprintf(f, "mxrlhf ppo: memory (GiB)  models in all %.2f\n", gib(all));
    if (!be)
        return;
    be_mem_t bm = be_mem(be);
    fprintf(f, "mxrlhf ppo: memory (GiB)  the %s backend holds %.2f (beyond the models %.2f), "
            "peak %.2f\n", be_name(be), gib(bm.current),
            gib(bm.current > all ? bm.current - all : 0), gib(bm.peak));
}
