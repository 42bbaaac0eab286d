/* attrib: energy per phase from a run's samples and windows, with its uncertainty, and
 * the files that report it (energy.csv, phase_timing.json).
 *
 * Two methods, kept side by side:
 *   counter   the energy counter read at each window edge, linearly interpolated
 *             between reads; a window's energy is E(end) - E(begin)
 *   integral  the instant power readings held from one reading to the next (a reading
 *             stands until the next one replaces it) and integrated over the window
 * Each device uses the counter when it has one, else the integral. A method needs two
 * readings of a device (one reading spans no time: it cannot be integrated, and a lone
 * counter value read 0 J); a device with fewer has no figure by it, and a run none of
 * whose devices has two readings gets no energy at all, with the reason said
 * (energy_report_t.short_trace) instead of 0 W / 0 J. Both methods are
 * written as cumulative functions of time, so energies over adjacent intervals add up
 * exactly: phases + time outside phases = whole run (the conservation check).
 *
 * Uncertainty (a bound meant to cover ~95% of cases, in joules; docs/energy.md):
 *   edge   the sensor reports power late by up to tau (its update period plus our
 *          sampling interval for the integral, max(counter period, counter read
 *          interval) for the counter), so each window can gain or lose up to
 *          min(tau, length) x the power swing seen around its edges. Summed linearly over
 *          windows: periodic steps can alias with the sensor, so the errors need not
 *          cancel.
 *   noise  the integral: each sensor update sees only part of its period (25 ms of 100
 *          on A100/H100), a random error of sd(power) per update: 2 sd sqrt(T tau);
 *          the counter: its staircase at each edge, 2 sqrt(2N) tau P / sqrt(12)
 *   gap    |counter - integral| where both exist
 *   total  edge + sqrt(noise^2 + gap^2)
 * A phase whose windows add up to less than 5 s gets a warning. The reported energy is
 * the candidate with the smallest uncertainty among: the windowed figure
 * (counter, else integral), the sampled method (below), and, where the phase was
 * calibrated (steady power over >= 10 s of its work repeated), calibrated power x
 * runtime; the note says which and why.
 */
#ifndef MXRLHF_ENERGY_ATTRIB_H
#define MXRLHF_ENERGY_ATTRIB_H

#include <stdbool.h>

#include "energy/run.h"
#include "precision/precision.h"
#include "util/err.h"

/* Energy of one set of intervals by both methods. NAN where the method is missing for
 * some device. */
typedef struct energy_interval {
    double runtime_s;
    double e_counter, e_integral;  /* summed over devices */
    double e_best;                 /* per device: counter if it has one, else integral */
    double per_device[ENERGY_MAX_DEVICES];
    double uncovered_s;            /* interval time beyond the readings (worst device) */
} energy_interval_t;

/* The sampled method, for sensors whose instant power is a short average taken once per
 * update period (NVML: the last 25 ms of every 100 ms). A reading is "clean" for a phase
 * when its content window, wherever the update fell between our two samples, lies wholly
 * inside one window of the phase: it is then a sample of the phase's own power, free of
 * the sensor's lag. Phase power = mean of its clean readings; energy = that x runtime.
 * With windows at scattered phases of the sensor's cycle the errors average out instead
 * of adding up (Yang et al., SC'24). Uncertainty:
 *   stat      2 sd / sqrt(n) x runtime
 *   window    the change when the content window is taken twice as long
 *   edges     the first and last (content window + sampling gap) of each window are seen
 *             by fewer readings: that length x the power swing at the edge
 *   aliasing  when window starts lock onto the sensor's cycle (resultant length > 0.5
 *             over >= 8 windows): the lag bound of the windowed methods as well
 *   total     edges + aliasing + sqrt(stat^2 + window^2)
 * It needs ENERGY_SAMPLED_MIN clean readings per device. */
#define ENERGY_SAMPLED_MIN 10
typedef struct energy_sampled {
    bool ok;
    long readings;          /* clean readings (the fewest over devices) */
    double energy_J, uncertainty_J, power_W;
    double u_stat, u_window, u_edges, u_aliasing;
    double phase_lock;      /* 0: window starts spread over the sensor's cycle, 1: locked */
    bool aliased;
} energy_sampled_t;

typedef struct energy_phase_result {
    char name[ENERGY_PHASE_MAX];
    int windows;
    double runtime_s, min_window_s, max_window_s;
    energy_interval_t m;           /* the windows, both methods */
    double energy_J;               /* reported (NAN: not measured) */
    double uncertainty_J;
    const char *method;            /* counter, integral, counter+integral, calibrated, none */
    double avg_power_W;
    double above_idle_J;
    double u_edge, u_noise, u_gap, tau_s;
    double windowed_J, windowed_u;  /* counter/integral over the windows */
    energy_sampled_t sampled;       /* the sampled method over the windows */
    bool calibrated;                /* a calibration exists for this phase */
    int calib_segments;
    double calib_total_s, calib_power_W, calib_u_W;
    double tokens;                  /* the work counted in its windows (NAN: not counted) */
    double energy_per_token_J;      /* energy_per_token(energy_J, tokens) */
    bool short_total;               /* total window time under 5 s */
    bool incomplete;                /* windows beyond the readings (sensor stopped) */
    char note[768];
} energy_phase_result_t;

typedef struct energy_report {
    energy_phase_result_t *ph;     /* every phase name, in order of first window */
    int nph;
    energy_interval_t whole, outside, idle;
    double idle_power_W;            /* NAN when not measured */
    bool measured;                  /* a sensor gave readings that can be integrated */
    /* why energies are left empty although there is a sensor: its readings are too few to
     * integrate ("" otherwise); devices with too few readings while others have enough
     * leave the figures that need them empty, and this says which */
    char short_trace[256];
    double conservation_residual_J; /* whole - (top-level phases + outside), best method */
    bool conservation_ok;
    /* closure: the reported energies of the top-level phases against the counter (or
     * best method) over the same time: a real check once phases use other methods */
    bool closure_valid, closure_ok;
    double closure_reported_J, closure_reference_J, closure_u_J;
    char **warnings;
    int n_warnings;
} energy_report_t;

/* The three phases of energy.csv, in order (precision.h's study names). */
#define energy_study_phases prec_phase_study_names

#define ENERGY_SHORT_TOTAL_S 5.0

int energy_attribute(const energy_run_t *run, energy_report_t *rep, err_t *e);
/* Joules per token: energy_J / tokens; NAN when the energy is not measured (NAN) or no
 * token was counted (tokens NAN or 0). */
double energy_per_token(double energy_J, double tokens);
void energy_report_free(energy_report_t *rep);

/* energy.csv: phase,avg_power_W,runtime_s,energy_J, then energy_above_idle_J,
 * uncertainty_J, method, windows, note, source. */
int energy_write_csv(const energy_run_t *run, const energy_report_t *rep, const char *path,
                     err_t *e);
/* phase_timing.json: the run's inputs (what `mxrlhf energy` reloads) and the results. */
int energy_write_timing(const energy_run_t *run, const energy_report_t *rep, const char *path,
                        err_t *e);
/* Both, into dir; then a short table on f (may be NULL). */
int energy_write_outputs(const energy_run_t *run, const char *dir, FILE *f, err_t *e);
void energy_report_print(const energy_run_t *run, const energy_report_t *rep, FILE *f);

#endif
