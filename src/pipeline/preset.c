/* preset: the embedded default's presets (see preset.h). Each value here is a choice
 * explained in docs/rlhf.md ("The GPU preset"), with the stage budget it was sized for. */
#include "pipeline/preset.h"

#include <stdio.h>
#include <string.h>

static const char *const cpu_sets[] = {NULL};

/* One H100, the whole chain within 15 minutes (docs/rlhf.md has the budget per stage). */
static const char *const gpu_sets[] = {
    /* 200,000 documents (about 11 M tokens), each read about half a time by pretraining */
    "data.corpus_docs=200000",
    /* Qwen2 layout, head size 32, GQA 8/2: 3.7 M parameters with the corpus's 2,741-id
     * vocabulary. Chosen by the measured curve (docs/rlhf.md): the task's ground truth can
     * rise only if the model learns to condition on the prompt's topic, and within the
     * budget only this width learnt it (hidden 384 and 512, and head size 64, did not) */
    "model.hidden=256", "model.layers=4", "model.heads=8", "model.kv_heads=2",
    "model.intermediate=768",
    /* 6 M tokens in 1,465 steps of 32 x 128, as the CPU default's schedule: the topic
     * conditioning appears after about 3 M */
    "pretrain.tokens=6000000", "pretrain.seq_len=128", "pretrain.batch_size=32",
    "pretrain.lr=0.003", "pretrain.warmup_steps=20", "pretrain.log_every=100",
    "sft.steps=200", "sft.batch_size=32", "sft.lr=0.0003", "sft.warmup_steps=20",
    /* 800 x 32 pairs: 1.8 epochs of rm_train (judge_train's 10,000 stop at max_epochs 2) */
    "rm.steps=800", "rm.batch_size=32", "rm.lr=0.0002", "rm.log_every=100",
    "judge.steps=800", "judge.batch_size=32", "judge.lr=0.0002", "judge.log_every=100",
    /* 100 steps of 32 rollouts (a decoding step costs about the same at batch 32 as at 8 on
     * the GPU), minibatches of 8; no checkpoints (the stage restarts whole when stopped) */
    "ppo.batch_size=32", "ppo.mini_batch_size=8", "ppo.learning_rate=2e-05",
    "ppo.checkpoint_every=0", "ppo.eval_prompts=128",
    "baseline.calibrate=true", "baseline.calibrate_s=5",
    "sensitivity.eval_tokens=8192", "policies.eval_tokens=8192",
    /* 3 seeds x 5 plans of 20 steps, each run's phase powers calibrated for 2 s (ten
     * segments of 0.2 s), after the warm-up run of compare.warmup_steps */
    "compare.seeds=3", "compare.steps=20", "compare.calibrate_s=2", "compare.eval_prompts=128",
    /* each plan warmed up once: the first 16-bit run paid cuDNN's plan building (a run of
     * plan A took 4.2 s of phases against 1.9 for its other seeds, on an H100) */
    "compare.warmup_each_plan=true",
    NULL};

const pipeline_preset_t pipeline_presets[] = {
    {PIPELINE_PRESET_CPU, "the built-in defaults: a 1.1 M-parameter model for two CPU cores",
     cpu_sets},
    {PIPELINE_PRESET_GPU, "a 3.7 M-parameter model that learns the task's topic conditioning, "
     "the whole study within 15 minutes on one H100", gpu_sets},
};
const int pipeline_npresets = (int)(sizeof pipeline_presets / sizeof *pipeline_presets);

const pipeline_preset_t *pipeline_preset_find(const char *name)
{
    for (int i = 0; name && i < pipeline_npresets; i++)
        if (!strcmp(pipeline_presets[i].name, name))
            return &pipeline_presets[i];
    return NULL;
}

const char *pipeline_preset_auto(const char *device, bool embedded)
{
    bool cuda = device && !strncmp(device, "cuda", 4) && (!device[4] || device[4] == ':');
    return cuda && embedded ? PIPELINE_PRESET_GPU : PIPELINE_PRESET_CPU;
}

int pipeline_preset_apply(pipeline_config_t *c, const char *name, err_t *e)
{
    const pipeline_preset_t *p = pipeline_preset_find(name);
    if (!p) {
        char known[256];
        size_t at = 0;
        known[0] = 0;
        for (int i = 0; i < pipeline_npresets && at < sizeof known; i++)
            at += (size_t)snprintf(known + at, sizeof known - at, "%s\"%s\"", i ? ", " : "",
                                   pipeline_presets[i].name);
        return err_set(e, ERR_INPUT, "preset \"%s\": expected one of %s", name ? name : "",
                       known);
    }
    pipeline_config_t t;
    pipeline_config_default(&t);
    for (const char *const *s = p->sets; *s; s++) {
        int rc = pipeline_config_set(&t, *s, e);
        if (rc) {
            err_prefix(e, "preset \"%s\"", p->name);
            return rc;
        }
    }
    snprintf(t.preset, sizeof t.preset, "%s", strcmp(p->name, PIPELINE_PRESET_CPU) ? p->name : "");
    *c = t;
    return ERR_OK;
}
