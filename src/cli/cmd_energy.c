/* mxrlhf energy: recomputes a run's energy figures from its power log and phase timing
 * (the study's process_energy step). Reads power_log_baseline.csv and phase_timing.json
 * from --results; writes energy.csv and phase_timing.json (inputs kept, results
 * recomputed) to --out, by default the same directory. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "energy/attrib.h"
#include "energy/run.h"
#include "util/fs.h"

int cmd_energy(int argc, char **argv)
{
    const char *results = NULL, *out = NULL;
    arg_opt_t opts[] = {
        {"results", ARG_STRING, &results, "DIR",
         "a run's directory (power_log_baseline.csv, phase_timing.json)"},
        {"out", ARG_STRING, &out, "DIR", "where energy.csv and phase_timing.json go (default "
                                        "the --results directory)"},
    };
    arg_spec_t spec = {"energy", "Recompute energy per phase from a run's power log.",
                       "--results DIR [--out DIR]",
                       "Methods, uncertainty and every column: docs/energy.md.", opts,
                       (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc || (rc = args_require(results, "results", &e)))
        return cli_report("energy", &e);
    if (!out)
        out = results;
    char *log = fs_join(results, ENERGY_POWER_LOG_NAME);
    char *tim = fs_join(results, ENERGY_TIMING_NAME);
    energy_run_t run;
    if (!log || !tim)
        rc = err_set(&e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = energy_run_load(log, tim, &run, &e);
    free(log);
    free(tim);
    if (!rc) {
        rc = fs_mkdir_p(out, &e);
        if (!rc)
            rc = energy_write_outputs(&run, out, stdout, &e);
        energy_run_free(&run);
    }
    if (rc)
        return cli_report("energy", &e);
    printf("wrote %s/%s and %s/%s\n", out, ENERGY_CSV_NAME, out, ENERGY_TIMING_NAME);
    return 0;
}
