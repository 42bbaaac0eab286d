/* compare: the arithmetic of the policy comparison (pipeline/compare.h runs it): means with
 * 95% confidence intervals over seeds, paired ratios, win rates with ties counted half, and
 * the control plan's check.
 *
 * Confidence intervals are Student-t intervals over the n seeds (independent PPO runs):
 * half-width = t(0.975, n - 1) · sd / sqrt(n), sd the sample standard deviation (n - 1).
 * One seed gives no interval (NAN). Ratios against the unquantized baseline are paired by
 * seed (plan's run / baseline's run of the same seed, interleaved so drift hits both alike),
 * and their interval is the t interval of the per-seed ratios.
 *
 * Win rate of A against B over prompts i: mean of 1 when A_i beats B_i, 1/2 when they tie,
 * 0 when B_i wins. Identical samples therefore give exactly 1/2, which is what the control
 * plan (the unquantized plan run as a plan) must produce.
 */
#ifndef MXRLHF_PROFILE_COMPARE_H
#define MXRLHF_PROFILE_COMPARE_H

#include <stdbool.h>

typedef struct profile_stat {
    int n;          /* finite values used */
    double mean;    /* NAN when n == 0 */
    double sd;      /* NAN when n < 2 */
    double ci95;    /* half-width; NAN when n < 2 */
} profile_stat_t;

/* t(0.975, df): the two-sided 95% Student-t quantile (df >= 1; exact table to 30, then
 * the Cornish-Fisher expansion, within 1e-4). */
double profile_t975(int df);

/* Mean and interval of the finite values among x[0..n). */
profile_stat_t profile_stat(const double *x, int n);

/* Per-seed ratios num[i] / den[i] (NAN where either is missing or den is 0), then their
 * stat. */
profile_stat_t profile_ratio_stat(const double *num, const double *den, int n);

/* -1, 0, 1: b beats a, tie, a beats b; both NAN is a tie, one NAN loses. */
int profile_cmp(double a, double b);

/* (wins + ties / 2) / n over outcomes cmp[i] in {-1, 0, 1}; NAN when n == 0. */
double profile_win_rate(const int *cmp, int n);

/* The control plan's check: it is the unquantized computation under another name, so its
 * samples equal the baseline's and every win rate is exactly 1/2; its energy (or, without a
 * sensor, nothing) must come out at a ratio near 1. */
typedef struct profile_control_in {
    const double *win_judge;     /* per seed */
    const double *win_truth;     /* per seed, NULL when there is no ground truth */
    int seeds;
    profile_stat_t energy_ratio; /* total energy, control / baseline, paired by seed */
    profile_stat_t runtime_ratio;
    double tolerance;            /* |ratio - 1| allowed (e.g. 0.1) */
} profile_control_in_t;

typedef struct profile_control_check {
    bool win_ok;         /* every win rate exactly 0.5 */
    bool energy_measured;
    bool energy_ok;      /* measured: |ratio - 1| <= tolerance, or its interval holds 1 */
    bool runtime_ok;     /* the same test on runtime (information: runtimes drift on a
                            shared machine) */
    bool ok;             /* win_ok && (energy_ok || !energy_measured) */
    char message[640];
} profile_control_check_t;

void profile_control_check(const profile_control_in_t *in, profile_control_check_t *out);

#endif
