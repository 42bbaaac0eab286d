/* dist_opts: the "dist" section of the configuration (dist.h). */
#include <stddef.h>

#include "dist/dist.h"

#define DO(f) offsetof(dist_opts_t, f)
static const opt_field_t dist_fields[] = {
    OPT_KEY("gpus", OPT_INT, DO(gpus), "1", 1, DIST_MAX_RANKS,
            "ranks started on this host, one process per GPU (cuda:0 ..; with --device cpu, "
            "CPU processes); docs/distributed.md", .flag = "gpus"),
};
const opt_table_t dist_opts_table = OPT_TABLE("dist", dist_opts_t, dist_fields, NULL);

void dist_opts_default(dist_opts_t *o) { opts_default(&dist_opts_table, o); }
