/* run: the record of one measured run, and what turns phase marks into windows.
 *
 * A run holds the source's provenance, every sample, the phase windows, the
 * calibration segments, the idle interval and any sensor error. The monitor builds one
 * while measuring; `mxrlhf energy` rebuilds one from power_log_baseline.csv and
 * phase_timing.json. Attribution (attrib.h) reads a run and nothing else, so both paths
 * give the same figures.
 *
 * Times are run time: seconds of CLOCK_MONOTONIC since the run's origin t0_monotonic_s.
 */
#ifndef MXRLHF_ENERGY_RUN_H
#define MXRLHF_ENERGY_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "energy/source.h"
#include "util/err.h"

#define ENERGY_PHASE_MAX 64   /* phase name length limit, NUL included */
#define ENERGY_DEPTH_MAX 16   /* nesting limit */

typedef struct energy_window {
    char name[ENERGY_PHASE_MAX];
    double begin, end;
    int depth;           /* 0: top level */
    bool closed_at_end;  /* never ended; closed when the run stopped */
} energy_window_t;

/* One calibration segment: the phase's work repeated back to back from begin to end;
 * the steady part [steady_from, end] skips one sensor period after the start. */
typedef struct energy_calib {
    char phase[ENERGY_PHASE_MAX];
    double begin, end, steady_from;
    long iterations;
} energy_calib_t;

/* How far a mark may lie outside the monitored interval and still count (then it is put
 * on the edge): timestamps printed with fewer decimals round up or down. */
#define ENERGY_MARK_TOL_S 1e-3

/* The work a phase's windows did, in tokens, as the caller counts them (PPO: generated,
 * scored and trained tokens, docs/ppo.md): what turns a phase's joules into joules per
 * token. Summed over the phase's windows. */
typedef struct energy_tokens {
    char phase[ENERGY_PHASE_MAX];
    long long tokens;
} energy_tokens_t;

/* A phase mark as received (in-process calls or MXRLHF_PHASE lines). */
typedef struct energy_mark {
    bool begin;
    char name[ENERGY_PHASE_MAX];
    double t;
    char origin[64];     /* where it came from, for warnings ("stdout line 12") */
} energy_mark_t;

/* How the sampler did (overhead figures for phase_timing.json). */
typedef struct energy_sampler_stats {
    long ticks, late_ticks;
    long power_reads, counter_reads;
    double power_read_s, power_read_max_s;     /* total and worst time in power reads */
    double counter_read_s, counter_read_max_s;
} energy_sampler_stats_t;

typedef struct energy_run {
    energy_provenance_t prov;
    double t0_monotonic_s;
    double interval_s, counter_interval_s;
    double idle_begin, idle_end;  /* equal when idle power was not measured */
    double run_begin, run_end;
    energy_sample_t *samples;
    size_t n_samples, cap_samples;
    energy_window_t *windows;     /* sorted by begin */
    size_t n_windows, cap_windows;
    energy_calib_t *calib;
    size_t n_calib, cap_calib;
    energy_tokens_t *tokens;      /* phases whose tokens were counted, in order of first count */
    size_t n_tokens, cap_tokens;
    bool sensor_failed;
    double sensor_error_t;
    char sensor_error[1024];
    energy_sampler_stats_t stats;
    char **warnings;
    int n_warnings;
} energy_run_t;

void energy_run_init(energy_run_t *r);
void energy_run_free(energy_run_t *r);

int energy_run_add_sample(energy_run_t *r, const energy_sample_t *s, err_t *e);
int energy_run_add_window(energy_run_t *r, const energy_window_t *w, err_t *e);
int energy_run_add_calib(energy_run_t *r, const energy_calib_t *c, err_t *e);
/* Adds n >= 0 tokens to the phase's count (phase names as energy_phase_name_ok). */
int energy_run_add_tokens(energy_run_t *r, const char *phase, long long n, err_t *e);
/* The phase's token count, or -1 when none was counted. */
long long energy_run_tokens(const energy_run_t *r, const char *phase);
/* Adds a warning (printf format); silently drops it when memory is short. */
void energy_run_warn(energy_run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Phase names: 1 to 63 characters of [A-Za-z0-9_.-]. */
bool energy_phase_name_ok(const char *name);

/* Turns marks into windows (appended to r, then sorted). Marks are taken in time order
 * (stable for equal times). Problems do not stop it: a begin of an open phase or an end
 * without begin is dropped, an end that skips inner windows closes them too, windows
 * still open at run_end are closed there; each is a warning naming the mark's origin. */
int energy_run_windows_from_marks(energy_run_t *r, const energy_mark_t *marks, size_t n,
                                  err_t *e);

/* The phase column of the power log for each sample: the open windows outermost first,
 * joined by '/', "idle" in the idle interval, "calibrate:NAME" in calibration segments.
 * Returns an array of n_samples strings (caller frees with energy_labels_free). */
char **energy_run_labels(const energy_run_t *r, err_t *e);
void energy_labels_free(char **labels, size_t n);

/* Writes the power log (header + rows) to an open stream. */
int energy_run_write_log(const energy_run_t *r, FILE *f, err_t *e);

/* Loads a run from a results directory: power_log_baseline.csv and the inputs recorded
 * in phase_timing.json (source, clock, run and idle intervals, windows, calibration,
 * sensor error, tokens). */
int energy_run_load(const char *log_path, const char *timing_path, energy_run_t *r, err_t *e);

#define ENERGY_POWER_LOG_NAME "power_log_baseline.csv"
#define ENERGY_TIMING_NAME "phase_timing.json"
#define ENERGY_CSV_NAME "energy.csv"

#endif
