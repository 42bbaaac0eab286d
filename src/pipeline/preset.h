/* preset: named sets of configuration values for the embedded default, applied over the
 * built-in defaults and under the user's own values:
 *
 *   built-in defaults (each options table) -> preset -> --config FILE -> each --set
 *
 * "cpu" is the built-in defaults themselves (the tiny model sized for two CPU cores, issue
 * 6); "gpu" sizes the embedded default for one GPU (issue 18: a 3.7 M-parameter Qwen2 model
 * that learns the task's topic conditioning, and a study that fits 15 minutes on one H100;
 * docs/rlhf.md says how the sizes were chosen, docs/cli.md how the run picks one).
 * `mxrlhf run` picks "gpu" when its device is cuda and neither --data nor --model is given,
 * "cpu" otherwise; --preset overrides the choice. A run whose preset is not "cpu" records it in config.json ("preset": "gpu"), and
 * reading a configuration file that names a preset starts again from the defaults and that
 * preset before the file's sections, so the file alone says what ran.
 */
#ifndef MXRLHF_PIPELINE_PRESET_H
#define MXRLHF_PIPELINE_PRESET_H

#include <stdbool.h>

#include "pipeline/config.h"
#include "util/err.h"

#define PIPELINE_PRESET_CPU "cpu"
#define PIPELINE_PRESET_GPU "gpu"

typedef struct pipeline_preset {
    const char *name;
    const char *what;                /* one line for --help and docs                      */
    const char *const *sets;         /* "section.key=value" assignments, NULL-terminated  */
} pipeline_preset_t;

extern const pipeline_preset_t pipeline_presets[];
extern const int pipeline_npresets;

const pipeline_preset_t *pipeline_preset_find(const char *name);

/* The preset a run gets when none is named: "gpu" for a cuda device ("cuda", "cuda:N") on
 * the embedded default (no --data, no --model), else "cpu". */
const char *pipeline_preset_auto(const char *device, bool embedded);

/* Resets c to the built-in defaults and applies the preset's values; c->preset records the
 * name ("" for "cpu", so that a CPU run's config.json stays as it was). An unknown name is
 * ERR_INPUT naming the known ones. */
int pipeline_preset_apply(pipeline_config_t *c, const char *name, err_t *e);

#endif
