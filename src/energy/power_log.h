/* power_log: our power log CSV, written by the monitor and read back by replay and by
 * `mxrlhf energy`.
 *
 *   time_s,device,power_W,energy_J,phase
 *
 * time_s    run time in seconds (CLOCK_MONOTONIC minus the origin stored in
 *           phase_timing.json as t0_monotonic_s), 6 decimals
 * device    the device label (gpu0, package-0, ...), described in phase_timing.json
 * power_W   instant power in W, 3 decimals; empty when not read at this sample
 * energy_J  the device's energy counter in J since the source was opened, 6 decimals;
 *           empty when not read at this sample (NVML's counter is read less often than
 *           power because it is slow) or when the device has no counter
 * phase     the open phase windows at time_s, outermost first, joined by '/'; "idle"
 *           during the idle measurement, "calibrate:NAME" during calibration, empty
 *           outside any window
 *
 * Rows are in time order; each device's times strictly increase and its counter never
 * decreases; |time_s| < 2^53 us (ENERGY_LOG_MAX_T). The reader checks all of this and
 * names file, line and column.
 */
#ifndef MXRLHF_ENERGY_POWER_LOG_H
#define MXRLHF_ENERGY_POWER_LOG_H

#include <stddef.h>
#include <stdio.h>

#include "energy/source.h"
#include "util/err.h"

#define ENERGY_LOG_HEADER "time_s,device,power_W,energy_J,phase"

/* |time_s| must be below this (2^53 microseconds): beyond it 6 decimals are not exact. */
#define ENERGY_LOG_MAX_T 9007199254.740992

typedef struct energy_log {
    energy_sample_t *s;  /* rows in file order; dev indexes labels */
    size_t n;
    int ndev;
    char labels[ENERGY_MAX_DEVICES][ENERGY_LABEL_MAX]; /* in order of first appearance */
} energy_log_t;

/* Reads and validates a whole power log. */
int energy_log_read(const char *path, energy_log_t *log, err_t *e);
void energy_log_free(energy_log_t *log);

/* Writes one row (no header). phase may be NULL or "". */
void energy_log_write_row(FILE *f, const energy_sample_t *s, const char *label,
                          const char *phase);

/* Rounds a sample to what energy_log_write_row prints, so figures computed in memory
 * equal those recomputed from the file. */
void energy_log_round(energy_sample_t *s);

#endif
