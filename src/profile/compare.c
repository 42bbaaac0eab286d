/* compare: statistics, win rates and the control check of compare.h. */
#include "profile/compare.h"

#include <math.h>
#include <stdio.h>

double profile_t975(int df)
{
    static const double t[30] = {
        12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243,
        2.3060041,  2.2621572, 2.2281389, 2.2009852, 2.1788128, 2.1603687, 2.1447867,
        2.1314495,  2.1199053, 2.1098155, 2.1009220, 2.0930241, 2.0859634, 2.0796138,
        2.0738731,  2.0686576, 2.0638986, 2.0595386, 2.0555294, 2.0518305, 2.0484071,
        2.0452296,  2.0422725};
    if (df < 1)
        return NAN;
    if (df <= 30)
        return t[df - 1];
    const double z = 1.959963984540054, v = df, z2 = z * z;
    return z + (z2 * z + z) / (4 * v) + (5 * z2 * z2 * z + 16 * z2 * z + 3 * z) / (96 * v * v) +
           (3 * z2 * z2 * z2 * z + 19 * z2 * z2 * z + 17 * z2 * z - 15 * z) / (384 * v * v * v);
}

profile_stat_t profile_stat(const double *x, int n)
{
    profile_stat_t s = {0, NAN, NAN, NAN};
    double sum = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i])) {
            sum += x[i];
            s.n++;
        }
    if (!s.n)
        return s;
    s.mean = sum / s.n;
    if (s.n < 2)
        return s;
    double ss = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(x[i]))
            ss += (x[i] - s.mean) * (x[i] - s.mean);
    s.sd = sqrt(ss / (s.n - 1));
    s.ci95 = profile_t975(s.n - 1) * s.sd / sqrt((double)s.n);
    return s;
}

profile_stat_t profile_ratio_stat(const double *num, const double *den, int n)
{
    double r[n > 0 ? n : 1];
    for (int i = 0; i < n; i++)
        r[i] = isfinite(num[i]) && isfinite(den[i]) && den[i] != 0 ? num[i] / den[i] : NAN;
    return profile_stat(r, n);
}

int profile_cmp(double a, double b)
{
    if (isnan(a) && isnan(b))
        return 0;
    if (isnan(a))
        return -1;
    if (isnan(b))
        return 1;
    return a > b ? 1 : a < b ? -1 : 0;
}

double profile_win_rate(const int *cmp, int n)
{
    if (n <= 0)
        return NAN;
    double w = 0;
    for (int i = 0; i < n; i++)
        w += cmp[i] > 0 ? 1.0 : cmp[i] == 0 ? 0.5 : 0.0;
    return w / n;
}

static bool near_one(const profile_stat_t *r, double tol)
{
    if (!isfinite(r->mean))
        return false;
    if (fabs(r->mean - 1) <= tol)
        return true;
    return isfinite(r->ci95) && r->mean - r->ci95 <= 1 && 1 <= r->mean + r->ci95;
}

void profile_control_check(const profile_control_in_t *in, profile_control_check_t *out)
{
    out->win_ok = in->seeds > 0;
    int bad_seed = -1;
    for (int s = 0; s < in->seeds; s++) {
        bool ok = in->win_judge[s] == 0.5 && (!in->win_truth || in->win_truth[s] == 0.5);
        if (!ok && bad_seed < 0)
            bad_seed = s;
        out->win_ok = out->win_ok && ok;
    }
    out->energy_measured = in->energy_ratio.n > 0;
    out->energy_ok = out->energy_measured && near_one(&in->energy_ratio, in->tolerance);
    out->runtime_ok = near_one(&in->runtime_ratio, in->tolerance);
    out->ok = out->win_ok && (out->energy_ok || !out->energy_measured);
    char win[256], en[256], er[64], rr[64];
    snprintf(er, sizeof er, isfinite(in->energy_ratio.ci95) ? "%.4f +- %.4f" : "%.4f",
             in->energy_ratio.mean, in->energy_ratio.ci95);
    snprintf(rr, sizeof rr, isfinite(in->runtime_ratio.ci95) ? "%.4f +- %.4f" : "%.4f",
             in->runtime_ratio.mean, in->runtime_ratio.ci95);
    if (out->win_ok)
        snprintf(win, sizeof win, "win rate 0.5 exactly on all %d seeds", in->seeds);
    else if (bad_seed >= 0)
        snprintf(win, sizeof win, "win rate NOT 0.5 on seed %d (judge %.6g, ground truth %.6g): "
                 "the control's samples differ from the baseline's", bad_seed,
                 in->win_judge[bad_seed], in->win_truth ? in->win_truth[bad_seed] : NAN);
    else
        snprintf(win, sizeof win, "no seeds");
    if (out->energy_measured)
        snprintf(en, sizeof en, "energy ratio %s (%s; tolerance %.2f)", er,
                 out->energy_ok ? "near 1" : "NOT near 1", in->tolerance);
    else
        snprintf(en, sizeof en, "energy ratio not checked: no power sensor (runtime ratio %s, "
                 "information only)", rr);
    snprintf(out->message, sizeof out->message, "control check %s: %s; %s",
             out->ok ? "passed" : "FAILED", win, en);
}
