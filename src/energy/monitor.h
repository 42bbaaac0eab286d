/* monitor: a sampling thread over a power source, phase windows, calibration.
 *
 *   energy_monitor_t *m;
 *   energy_monitor_start(&m, src, &opts, &e);      // measures idle power first, then the
 *   energy_phase_begin(m, "rollout", &e);          // run begins
 *   ...work...
 *   energy_phase_end(m, "rollout", &e);
 *   energy_monitor_stop(m, &run, &e);             // run: samples, windows, provenance
 *   energy_write_outputs(&run, dir, stdout, &e);   // energy.csv, phase_timing.json
 *
 * Phase begin/end first call the caller's synchronise callback (the device must have
 * finished the work queued before the mark, or the mark lands early), then take the
 * time. Windows nest; the same name may not be open twice; repeated windows of a name
 * are summed. The energy layer knows nothing of backends: synchronisation is a function
 * pointer and a context.
 *
 * The sampler reads power every interval (default 20 ms) and the energy counter every
 * counter interval (default: the counter's update period, 100 ms for NVML, whose
 * counter read costs milliseconds), on an absolute schedule so it does not drift. With
 * an output directory it writes power_log_baseline.csv.partial as it goes (flushed every
 * second) and renames it to power_log_baseline.csv at stop, after rewriting it with the
 * final phase labels (marks may arrive late through pipes). If the sensor fails, the
 * sampler stops, the run keeps what was collected and records the error; phase calls
 * keep working.
 */
#ifndef MXRLHF_ENERGY_MONITOR_H
#define MXRLHF_ENERGY_MONITOR_H

#include <stdbool.h>
#include <stdint.h>

#include "energy/run.h"
#include "energy/source.h"
#include "util/err.h"

/* Waits until the device has finished the work queued so far. */
typedef int (*energy_sync_fn)(void *ctx, err_t *e);

typedef struct energy_monitor_opts {
    double interval_s;         /* 0: 0.02 */
    double counter_interval_s; /* 0: max(interval, the source's counter period) */
    double idle_s;             /* idle measurement before the run (0: none) */
    const char *out_dir;       /* where the power log goes (NULL: kept in memory only) */
    energy_sync_fn sync;       /* may be NULL (nothing to wait for) */
    void *sync_ctx;
} energy_monitor_opts_t;

typedef struct energy_monitor energy_monitor_t;

/* Takes ownership of src (closed by stop, or here on failure). Blocks for idle_s. */
int energy_monitor_start(energy_monitor_t **out, energy_source_t *src,
                         const energy_monitor_opts_t *o, err_t *e);

/* Run time now (seconds since the run's origin), and the origin on CLOCK_MONOTONIC. */
double energy_monitor_now(const energy_monitor_t *m);
double energy_monitor_t0(const energy_monitor_t *m);
const energy_provenance_t *energy_monitor_provenance(const energy_monitor_t *m);

/* In-process phase windows: synchronise, take the time, check the nesting. */
int energy_phase_begin(energy_monitor_t *m, const char *name, err_t *e);
int energy_phase_end(energy_monitor_t *m, const char *name, err_t *e);

/* A mark from outside the process (an MXRLHF_PHASE line): t_monotonic is the line's
 * CLOCK_MONOTONIC timestamp, or NAN for "now". A timestamp outside the monitored
 * interval (the run's begin to now; for a replay, to its last reading if that is later;
 * ENERGY_MARK_TOL_S either side) is refused with ERR_INPUT naming `origin`, and the mark
 * is not recorded. Nesting is checked when the run stops; problems become warnings naming
 * `origin`. */
int energy_monitor_mark(energy_monitor_t *m, bool begin, const char *name, double t_monotonic,
                        const char *origin, err_t *e);

/* Adds n tokens to the work of `phase` (energy_tokens_t): the caller counts what its
 * windows of that phase processed, and phase_timing.json reports joules per token. */
int energy_monitor_add_tokens(energy_monitor_t *m, const char *phase, long long n, err_t *e);

/* The sensor's error if it failed (ERR_OK otherwise); copies the message into e. */
int energy_monitor_sensor_error(energy_monitor_t *m, err_t *e);

/* Ends the run at the later of now and `end_hint` (run time; NAN for now; a replay's
 * virtual marks can lie ahead of the wall clock), stops sampling after a final reading,
 * writes and renames the power log, and hands over the run record (caller frees with
 * energy_run_free). The monitor is freed in any case. */
int energy_monitor_stop(energy_monitor_t *m, double end_hint, energy_run_t *run, err_t *e);

/* Stops sampling and throws the run away (the .partial log is removed): for a run that
 * never started, such as a command that could not be executed. */
void energy_monitor_discard(energy_monitor_t *m);

/* ---- calibration ---------------------------------------------------------------- */

/* Runs one iteration of a phase's work (the caller's code). */
typedef int (*energy_workload_fn)(void *ctx, err_t *e);

typedef struct energy_calib_opts {
    double min_total_s;    /* steady time to collect (0: 10 s) */
    double segment_s;      /* length of one segment (0: max(1 s, 10 sensor periods)) */
    double max_offset_s;   /* random pause before each segment, uniform in [0, this]
                            * (0: one sensor update period), so segments start at
                            * scattered phases of the sensor's cycle */
    uint64_t seed;         /* for the offsets (Philox, util/rng.h) */
} energy_calib_opts_t;

typedef struct energy_calib_result {
    double power_W, uncertainty_W;  /* NAN without a sensor */
    double steady_s;                /* steady time collected */
    int segments;
    long iterations;
} energy_calib_result_t;

/* Repeats `work` in segments until min_total_s of steady time is collected and
 * measures the phase's steady power; the segments are recorded in the run, and
 * energy.csv uses them for the phase where its own windows are too short. Must be called
 * outside any phase window. */
int energy_calibrate(energy_monitor_t *m, const char *phase, energy_workload_fn work,
                     void *ctx, const energy_calib_opts_t *o, energy_calib_result_t *res,
                     err_t *e);

/* ---- MXRLHF_PHASE lines ----------------------------------------------------------- */

/* Parses "MXRLHF_PHASE begin|end NAME [t=SECONDS]". Returns 1 for a phase line (fills
 * begin, name, *t: NAN when absent), 0 for any other line (to pass through), and
 * ERR_INPUT for a line that starts with the keyword but is malformed (e says why). */
int energy_phase_line_parse(const char *line, bool *begin, char name[ENERGY_PHASE_MAX],
                            double *t, err_t *e);

#endif
