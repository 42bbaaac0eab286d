/* attrib: see attrib.h. The report files are written by report.c. */
#include "energy/attrib.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>


/* One device's readings as two step/ramp functions of time. */
typedef struct series {
    size_t np, nc;
    double *pt, *pv, *pC, *pC2;  /* power: times, values, cumulative integrals of P and P^2 */
    double *ct, *cv;             /* counter: times, values */
    bool use_power, use_counter; /* the provenance says the device has them */
    double tau_p, tau_c;
    /* sensor updates, seen as changes of the reading: the update happened in
     * (chg_prev, chg_obs] and the new value is chg_v */
    size_t nchg;
    double *chg_prev, *chg_obs, *chg_v;
    double obs_gap;              /* mean chg_obs - chg_prev: how precisely updates are located */
} series_t;

typedef struct ctx {
    const energy_run_t *run;
    int nd;
    series_t s[ENERGY_MAX_DEVICES];
    double tol; /* window time beyond the readings that still counts as covered */
    double content_w; /* the sensor's content window (0: sampled method unavailable) */
    double upd;       /* the sensor's update period */
} ctx_t;

static void ctx_free(ctx_t *c)
{
    for (int d = 0; d < c->nd; d++) {
        free(c->s[d].pt);
        free(c->s[d].ct);
        free(c->s[d].chg_prev);
    }
}

static int ctx_build(ctx_t *c, const energy_run_t *r, err_t *e)
{
    memset(c, 0, sizeof *c);
    c->run = r;
    c->nd = r->prov.ndev;
    size_t np[ENERGY_MAX_DEVICES] = {0}, nc[ENERGY_MAX_DEVICES] = {0};
    for (size_t i = 0; i < r->n_samples; i++) {
        const energy_sample_t *x = &r->samples[i];
        if (x->dev < 0 || x->dev >= c->nd)
            return err_set(e, ERR_INPUT, "sample %zu names device %d of %d", i, x->dev, c->nd);
        np[x->dev] += isfinite(x->power_W);
        nc[x->dev] += isfinite(x->energy_J);
    }
    double upd = fmax(r->prov.update_period_s, r->prov.observed_period_s);
    for (int d = 0; d < c->nd; d++) {
        series_t *s = &c->s[d];
        s->use_power = r->prov.dev[d].has_power;
        s->use_counter = r->prov.dev[d].has_counter;
        s->tau_p = (upd > 0 ? upd : 0) + r->interval_s;
        s->tau_c = fmax(r->prov.counter_period_s, r->counter_interval_s);
        s->pt = malloc((4 * np[d] + 1) * sizeof(double));
        s->ct = malloc((2 * nc[d] + 1) * sizeof(double));
        if (!s->pt || !s->ct) {
            ctx_free(c);
            return err_set(e, ERR_NOMEM, "out of memory for the attribution");
        }
        s->pv = s->pt + np[d];
        s->pC = s->pv + np[d];
        s->pC2 = s->pC + np[d];
        s->cv = s->ct + nc[d];
    }
    for (size_t i = 0; i < r->n_samples; i++) {
        const energy_sample_t *x = &r->samples[i];
        series_t *s = &c->s[x->dev];
        if (isfinite(x->power_W)) {
            s->pt[s->np] = x->t;
            s->pv[s->np++] = x->power_W;
        }
        if (isfinite(x->energy_J)) {
            s->ct[s->nc] = x->t;
            s->cv[s->nc++] = x->energy_J;
        }
    }
    for (int d = 0; d < c->nd; d++) {
        series_t *s = &c->s[d];
        for (size_t i = 0; i < s->np; i++) {
            double dt = i ? s->pt[i] - s->pt[i - 1] : 0;
            s->pC[i] = i ? s->pC[i - 1] + s->pv[i - 1] * dt : 0;
            s->pC2[i] = i ? s->pC2[i - 1] + s->pv[i - 1] * s->pv[i - 1] * dt : 0;
        }
        /* one reading spans no time: nothing to integrate (a lone counter value read 0 J) */
        if (s->np < 2)
            s->use_power = false;
        if (s->nc < 2)
            s->use_counter = false;
        /* Updates are seen where the reading changes. An update that repeats the value
         * is invisible, so between two changes m sensor periods apart the m - 1 unseen
         * updates are put back, one period after another, with the earlier value (else a
         * steady stretch would count as one reading). */
        size_t cap = 3 * s->np + 1;
        s->chg_prev = malloc(3 * cap * sizeof(double));
        if (!s->chg_prev) {
            ctx_free(c);
            return err_set(e, ERR_NOMEM, "out of memory for the attribution");
        }
        s->chg_obs = s->chg_prev + cap;
        s->chg_v = s->chg_obs + cap;
        double gaps = 0;
        size_t seen = 0;
        for (size_t i = 1; i < s->np; i++) {
            if (s->pv[i] == s->pv[i - 1])
                continue;
            if (seen && upd > 0) {
                size_t last = s->nchg - 1;
                double g = s->pt[i] - s->chg_obs[last], m = round(g / upd);
                if (m >= 2 && fabs(g / upd - m) < 0.3)
                    for (int k = 1; k < (int)m && s->nchg + 1 < cap; k++) {
                        double pv = s->chg_prev[last] + k * upd, ob = s->chg_obs[last] + k * upd;
                        if (ob > s->pt[i - 1])
                            break;
                        s->chg_prev[s->nchg] = pv;
                        s->chg_obs[s->nchg] = ob;
                        s->chg_v[s->nchg++] = s->chg_v[last];
                    }
            }
            if (s->nchg + 1 >= cap)
                break;
            s->chg_prev[s->nchg] = s->pt[i - 1];
            s->chg_obs[s->nchg] = s->pt[i];
            s->chg_v[s->nchg++] = s->pv[i];
            gaps += s->pt[i] - s->pt[i - 1];
            seen++;
        }
        s->obs_gap = seen ? gaps / (double)seen : 0;
    }
    c->tol = 2 * fmax(r->interval_s, r->counter_interval_s) + 0.05;
    c->content_w = r->prov.content_window_s;
    c->upd = upd;
    return ERR_OK;
}

/* Index of the last element <= x, or -1. */
static long last_le(const double *t, size_t n, double x)
{
    long lo = -1, hi = (long)n; /* invariant: t[lo] <= x < t[hi] */
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if (t[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Cumulative integral of held power (and of its square) up to x. */
static double F_power(const series_t *s, double x, bool sq)
{
    long i = last_le(s->pt, s->np, x);
    if (i < 0) /* before the first reading: hold it backwards */
        return (sq ? s->pv[0] * s->pv[0] : s->pv[0]) * (x - s->pt[0]);
    double v = sq ? s->pv[i] * s->pv[i] : s->pv[i];
    return (sq ? s->pC2[i] : s->pC[i]) + v * (x - s->pt[i]);
}

/* The counter at x, linearly interpolated (extrapolated along the end segments). */
static double F_counter(const series_t *s, double x)
{
    if (s->nc == 1)
        return s->cv[0];
    long i = last_le(s->ct, s->nc, x);
    if (i < 0)
        i = 0;
    if (i >= (long)s->nc - 1)
        i = (long)s->nc - 2;
    double dt = s->ct[i + 1] - s->ct[i];
    return s->cv[i] + (s->cv[i + 1] - s->cv[i]) * (x - s->ct[i]) / dt;
}

static double beyond(const double *t, size_t n, double a, double b)
{
    if (!n)
        return b - a;
    return fmax(0, fmin(b, t[0]) - a) + fmax(0, b - fmax(a, t[n - 1]));
}

/* The largest power swing a device shows in [x0, x1]: max - min of its readings there
 * (and of the one holding at x0); from counter slopes when it has no power readings. */
static double swing(const series_t *s, double x0, double x1)
{
    double lo = INFINITY, hi = -INFINITY;
    if (s->np) {
        long i = last_le(s->pt, s->np, x0);
        if (i < 0)
            i = 0;
        for (; i < (long)s->np && s->pt[i] <= x1; i++) {
            lo = fmin(lo, s->pv[i]);
            hi = fmax(hi, s->pv[i]);
        }
    } else if (s->nc >= 2) {
        long i = last_le(s->ct, s->nc, x0);
        if (i < 0)
            i = 0;
        for (; i + 1 < (long)s->nc && s->ct[i] <= x1; i++) {
            double p = (s->cv[i + 1] - s->cv[i]) / (s->ct[i + 1] - s->ct[i]);
            lo = fmin(lo, p);
            hi = fmax(hi, p);
        }
    }
    return hi > lo ? hi - lo : 0;
}

typedef struct span {
    double a, b;
} span_t;

/* Energies over a set of intervals, and the uncertainty terms for them. */
typedef struct measure {
    energy_interval_t iv;
    double u_edge, u_noise, u_gap, tau;
    bool all_counter, all_integral;
} measure_t;

/* Index of the last span whose begin is <= x (spans sorted, disjoint), or -1. */
static long span_at(const span_t *sp, size_t n, double x)
{
    long lo = -1, hi = (long)n;
    while (hi - lo > 1) {
        long mid = lo + (hi - lo) / 2;
        if (sp[mid].a <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Mean of the readings whose content window lies wholly inside one span, for content
 * window w: the update is somewhere in (prev, obs], so [prev - w, obs] must fit. */
static long clean_mean(const series_t *s, const span_t *sp, size_t n, double w, double *mean,
                       double *sd)
{
    double sum = 0, sq = 0;
    long k = 0;
    for (size_t i = 0; i < s->nchg; i++) {
        long j = span_at(sp, n, s->chg_prev[i] - w);
        if (j < 0 || s->chg_obs[i] > sp[j].b)
            continue;
        sum += s->chg_v[i];
        sq += s->chg_v[i] * s->chg_v[i];
        k++;
    }
    *mean = k ? sum / (double)k : NAN;
    double var = k > 1 ? (sq - sum * sum / (double)k) / (double)(k - 1) : NAN;
    *sd = var > 0 ? sqrt(var) : 0;
    return k;
}

/* The sampled method (see attrib.h): phase power = mean of clean readings. */
static void sampled_spans(const ctx_t *c, const span_t *sp, size_t n, energy_sampled_t *o)
{
    memset(o, 0, sizeof *o);
    o->energy_J = o->uncertainty_J = o->power_W = NAN;
    double T = 0;
    for (size_t k = 0; k < n; k++)
        T += sp[k].b - sp[k].a;
    if (c->content_w <= 0 || c->nd == 0 || T <= 0)
        return;
    /* windows whose starts sit at one phase of the sensor's cycle see the same part of
     * it every time: the readings then need not represent the whole window */
    if (n >= 8 && c->upd > 0) {
        double cx = 0, cy = 0;
        for (size_t k = 0; k < n; k++) {
            double ph = 2 * M_PI * fmod(sp[k].a, c->upd) / c->upd;
            cx += cos(ph);
            cy += sin(ph);
        }
        o->phase_lock = sqrt(cx * cx + cy * cy) / (double)n;
        o->aliased = o->phase_lock > 0.5;
    }
    double e = 0, stat2 = 0, win2 = 0;
    o->readings = -1;
    for (int d = 0; d < c->nd; d++) {
        const series_t *s = &c->s[d];
        if (!s->use_power)
            return;
        double m, sd, m2, sd2;
        long k = clean_mean(s, sp, n, c->content_w, &m, &sd);
        long k2 = clean_mean(s, sp, n, 2 * c->content_w, &m2, &sd2);
        if (k < ENERGY_SAMPLED_MIN)
            return;
        o->readings = o->readings < 0 ? k : (k < o->readings ? k : o->readings);
        e += m * T;
        stat2 += pow(2 * sd / sqrt((double)k) * T, 2);
        if (k2 >= ENERGY_SAMPLED_MIN)
            win2 += pow((m2 - m) * T, 2);
        /* the first and last w + gap of each window are seen by fewer readings */
        double edge = c->content_w + s->obs_gap;
        for (size_t j = 0; j < n; j++) {
            double a = sp[j].a, b = sp[j].b, tau = s->tau_p;
            double sw = fmax(swing(s, a - tau, a + tau), swing(s, b - tau, b + tau));
            o->u_edges += fmin(edge, b - a) * sw;
            if (o->aliased)
                o->u_aliasing += fmin(tau, b - a) * sw;
        }
    }
    o->ok = true;
    o->energy_J = e;
    o->power_W = e / T;
    o->u_stat = sqrt(stat2);
    o->u_window = sqrt(win2);
    o->uncertainty_J = o->u_edges + o->u_aliasing + sqrt(stat2 + win2);
}

static void measure_spans(const ctx_t *c, const span_t *sp, size_t n, measure_t *m)
{
    memset(m, 0, sizeof *m);
    energy_interval_t *iv = &m->iv;
    for (size_t k = 0; k < n; k++)
        iv->runtime_s += sp[k].b - sp[k].a;
    double ec = 0, ei = 0, eb = 0, noise2 = 0;
    bool have_c = c->nd > 0, have_i = c->nd > 0, have_b = c->nd > 0;
    m->all_counter = m->all_integral = c->nd > 0;
    for (int d = 0; d < c->nd; d++) {
        const series_t *s = &c->s[d];
        double edc = 0, edi = 0, unc_c = 0, unc_i = 0, sq = 0;
        for (size_t k = 0; k < n; k++) {
            double a = sp[k].a, b = sp[k].b;
            if (s->use_counter) {
                edc += F_counter(s, b) - F_counter(s, a);
                unc_c += beyond(s->ct, s->nc, a, b);
            }
            if (s->use_power) {
                edi += F_power(s, b, false) - F_power(s, a, false);
                sq += F_power(s, b, true) - F_power(s, a, true);
                unc_i += beyond(s->pt, s->np, a, b);
            }
        }
        if (s->use_counter)
            ec += edc;
        else
            have_c = false;
        if (s->use_power)
            ei += edi;
        else
            have_i = false;
        bool counter = s->use_counter;
        if (!counter && !s->use_power) {
            have_b = false;
            iv->per_device[d] = NAN;
            continue;
        }
        m->all_counter &= counter;
        m->all_integral &= !counter;
        double best = counter ? edc : edi;
        iv->per_device[d] = best;
        eb += best;
        iv->uncovered_s = fmax(iv->uncovered_s, counter ? unc_c : unc_i);
        double tau = counter ? s->tau_c : s->tau_p;
        m->tau = fmax(m->tau, tau);
        /* edge: each interval can gain or lose up to min(tau, L) x the swing at its edges */
        for (size_t k = 0; k < n; k++) {
            double a = sp[k].a, b = sp[k].b;
            double sw = fmax(swing(s, a - tau, a + tau), swing(s, b - tau, b + tau));
            m->u_edge += fmin(tau, b - a) * sw;
        }
        double T = iv->runtime_s;
        if (T > 0) {
            if (counter) {
                double pbar = edc / T;
                double u = 2 * sqrt(2.0 * (double)n) * tau * fabs(pbar) / sqrt(12.0);
                noise2 += u * u;
            } else {
                double mean = edi / T, var = sq / T - mean * mean;
                double u = 2 * sqrt(var > 0 ? var : 0) * sqrt(T * tau);
                noise2 += u * u;
            }
        }
    }
    iv->e_counter = have_c ? ec : NAN;
    iv->e_integral = have_i ? ei : NAN;
    iv->e_best = have_b ? eb : NAN;
    m->u_noise = sqrt(noise2);
    m->u_gap = isfinite(iv->e_counter) && isfinite(iv->e_integral)
                   ? fabs(iv->e_counter - iv->e_integral) : 0;
}

static double u_total(const measure_t *m)
{
    return m->u_edge + sqrt(m->u_noise * m->u_noise + m->u_gap * m->u_gap);
}

static void rep_warn(energy_report_t *rep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void rep_warn(energy_report_t *rep, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nw = realloc(rep->warnings, sizeof *nw * (size_t)(rep->n_warnings + 1));
    if (!nw)
        return;
    rep->warnings = nw;
    if ((nw[rep->n_warnings] = strdup(buf)))
        rep->n_warnings++;
}

void energy_report_free(energy_report_t *rep)
{
    free(rep->ph);
    for (int i = 0; i < rep->n_warnings; i++)
        free(rep->warnings[i]);
    free(rep->warnings);
    memset(rep, 0, sizeof *rep);
}

static int find_phase(const energy_report_t *rep, const char *name)
{
    for (int i = 0; i < rep->nph; i++)
        if (!strcmp(rep->ph[i].name, name))
            return i;
    return -1;
}

static void note_add(char *note, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note_add(char *note, size_t cap, const char *fmt, ...)
{
    size_t k = strlen(note);
    if (k && k + 2 < cap) {
        strcat(note, "; ");
        k += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note + k, cap - k, fmt, ap);
    va_end(ap);
}

static const char *method_name(const measure_t *m)
{
    return m->all_counter ? "counter" : m->all_integral ? "integral" : "counter+integral";
}

static void phase_result(const ctx_t *c, const energy_report_t *rep, energy_phase_result_t *p,
                         span_t *sp, size_t nsp)
{
    const energy_run_t *r = c->run;
    size_t n = 0;
    p->min_window_s = INFINITY;
    p->max_window_s = 0;
    for (size_t i = 0; i < r->n_windows; i++) {
        const energy_window_t *w = &r->windows[i];
        if (strcmp(w->name, p->name))
            continue;
        sp[n++] = (span_t){w->begin, w->end};
        p->min_window_s = fmin(p->min_window_s, w->end - w->begin);
        p->max_window_s = fmax(p->max_window_s, w->end - w->begin);
    }
    if (!n)
        p->min_window_s = 0;
    p->windows = (int)n;
    measure_t m;
    measure_spans(c, sp, n, &m);
    p->m = m.iv;
    p->runtime_s = m.iv.runtime_s;
    p->u_edge = m.u_edge;
    p->u_noise = m.u_noise;
    p->u_gap = m.u_gap;
    p->tau_s = m.tau;
    p->windowed_J = m.iv.e_best;
    p->windowed_u = u_total(&m);
    p->energy_J = p->windowed_J;
    p->uncertainty_J = p->windowed_u;
    p->method = method_name(&m);
    sampled_spans(c, sp, n, &p->sampled);
    p->avg_power_W = p->above_idle_J = NAN;
    p->calib_power_W = p->calib_u_W = NAN;
    p->short_total = n > 0 && p->runtime_s < ENERGY_SHORT_TOTAL_S;
    if (!n)
        note_add(p->note, sizeof p->note, "never marked");
    /* The calibration segments' steady parts (sp is free again after measure_spans). */
    size_t nc = 0;
    double steady = 0;
    for (size_t i = 0; i < r->n_calib; i++)
        if (!strcmp(r->calib[i].phase, p->name) && r->calib[i].end > r->calib[i].steady_from) {
            sp[nc++] = (span_t){r->calib[i].steady_from, r->calib[i].end};
            steady += r->calib[i].end - r->calib[i].steady_from;
        }
    if (!rep->measured) {
        p->energy_J = p->uncertainty_J = p->windowed_J = p->windowed_u = NAN;
        p->method = "none";
        p->short_total = false; /* nothing measured, nothing unreliable */
        if (nc) { /* the work was repeated, but there is nothing to measure it with */
            p->calibrated = true;
            p->calib_segments = (int)nc;
            p->calib_total_s = steady;
            note_add(p->note, sizeof p->note, "calibrated over %zu segment(s) (%.1f s steady), "
                     "but no sensor: no steady power", nc, steady);
        }
        return;
    }
    if (n && !isfinite(m.iv.e_best) && rep->short_trace[0]) {
        p->energy_J = p->uncertainty_J = NAN;
        note_add(p->note, sizeof p->note, "energy not measured: %s", rep->short_trace);
        return;
    }
    if (n && m.iv.uncovered_s > c->tol) {
        p->incomplete = true;
        p->energy_J = p->uncertainty_J = NAN;
        note_add(p->note, sizeof p->note,
                 "%.3f s of its %.3f s have no readings%s: energy not reported",
                 m.iv.uncovered_s, p->runtime_s,
                 r->sensor_failed ? " (the sensor failed during the run)" : "");
        return;
    }
    /* All candidates estimate the same energy: the narrowest interval wins. */
    if (p->sampled.ok && !(p->windowed_u <= p->sampled.uncertainty_J)) {
        note_add(p->note, sizeof p->note,
                 "sampled: mean of %ld clean readings, +-%.1f J, against +-%.1f J for %s over "
                 "the windows", p->sampled.readings, p->sampled.uncertainty_J, p->windowed_u,
                 p->method);
        p->energy_J = p->sampled.energy_J;
        p->uncertainty_J = p->sampled.uncertainty_J;
        p->method = "sampled";
    }
    if (p->sampled.aliased)
        note_add(p->note, sizeof p->note, "windows start at one phase of the sensor's cycle "
                 "(lock %.2f): vary their timing for better figures", p->sampled.phase_lock);
    /* Calibration: steady power over the segments' steady parts (sp[0, nc) from above). */
    if (nc) {
        measure_t cm;
        measure_spans(c, sp, nc, &cm);
        p->calibrated = true;
        p->calib_segments = (int)nc;
        p->calib_total_s = cm.iv.runtime_s;
        if (cm.iv.uncovered_s <= c->tol && cm.iv.runtime_s > 0 && isfinite(cm.iv.e_best)) {
            p->calib_power_W = cm.iv.e_best / cm.iv.runtime_s;
            p->calib_u_W = u_total(&cm) / cm.iv.runtime_s;
        }
        double u_c = p->calib_u_W * p->runtime_s;
        if (p->runtime_s > 0 && isfinite(p->calib_power_W) && !(p->uncertainty_J <= u_c)) {
            note_add(p->note, sizeof p->note,
                     "calibrated: steady power %.2f W (+-%.2f) over %.1f s of repeated work x "
                     "runtime, because the windows give +-%.1f J (%s) and calibration +-%.1f J",
                     p->calib_power_W, p->calib_u_W, p->calib_total_s, p->uncertainty_J,
                     p->method, u_c);
            p->energy_J = p->calib_power_W * p->runtime_s;
            p->uncertainty_J = p->calib_u_W * p->runtime_s;
            p->method = "calibrated";
        } else if (isfinite(p->calib_power_W) && !(p->runtime_s > 0)) {
            note_add(p->note, sizeof p->note, "calibrated: steady power %.2f W +-%.2f over "
                     "%.1f s (no windows to apply it to)", p->calib_power_W, p->calib_u_W,
                     p->calib_total_s);
        } else if (isfinite(p->calib_power_W)) {
            note_add(p->note, sizeof p->note,
                     "calibrated (steady power %.2f W +-%.2f over %.1f s) but not used: %s "
                     "gives +-%.1f J, calibration +-%.1f J", p->calib_power_W, p->calib_u_W,
                     p->calib_total_s, p->method, p->uncertainty_J, u_c);
        } else {
            note_add(p->note, sizeof p->note,
                     "calibrated over %zu segment(s), but %s: no steady power", nc,
                     cm.iv.uncovered_s > c->tol ? "the readings do not cover them"
                                                : "no energy over them");
        }
    }
    if (p->short_total)
        note_add(p->note, sizeof p->note,
                 "its windows total %.3f s, under %.0f s: per-step readings of it are unreliable%s",
                 p->runtime_s, ENERGY_SHORT_TOTAL_S,
                 !strcmp(p->method, "calibrated") ? " (calibration used)"
                 : p->calibrated ? "" : " (calibrate it)");
    if (p->runtime_s > 0 && isfinite(p->energy_J))
        p->avg_power_W = p->energy_J / p->runtime_s;
    if (isfinite(rep->idle_power_W) && isfinite(p->energy_J))
        p->above_idle_J = p->energy_J - rep->idle_power_W * p->runtime_s;
}

double energy_per_token(double energy_J, double tokens)
{
    return isfinite(energy_J) && tokens > 0 ? energy_J / tokens : NAN;
}

static int cmp_span(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    return (x->a > y->a) - (x->a < y->a);
}

int energy_attribute(const energy_run_t *r, energy_report_t *rep, err_t *e)
{
    memset(rep, 0, sizeof *rep);
    ctx_t c;
    int rc = ctx_build(&c, r, e);
    if (rc)
        return rc;
    size_t nmax = r->n_windows + r->n_calib + 2;
    span_t *sp = malloc(nmax * sizeof *sp);
    rep->ph = calloc(r->n_windows + r->n_calib + 3, sizeof *rep->ph);
    if (!sp || !rep->ph) {
        free(sp);
        ctx_free(&c);
        energy_report_free(rep);
        return err_set(e, ERR_NOMEM, "out of memory for the attribution");
    }
    bool any = false;
    size_t st = 0; /* length of rep->short_trace */
    for (int d = 0; d < c.nd; d++) {
        const series_t *s = &c.s[d];
        any |= s->use_power || s->use_counter;
        bool had = r->prov.dev[d].has_power || r->prov.dev[d].has_counter;
        if (had && !s->use_power && !s->use_counter && st < sizeof rep->short_trace)
            st += (size_t)snprintf(rep->short_trace + st, sizeof rep->short_trace - st,
                                   "%s%s has %zu reading(s)", st ? ", " : "",
                                   r->prov.dev[d].label, s->np > s->nc ? s->np : s->nc);
    }
    if (st && st < sizeof rep->short_trace)
        snprintf(rep->short_trace + st, sizeof rep->short_trace - st,
                 ": too few to integrate (2 are needed)");
    rep->measured = any && strcmp(r->prov.kind, "none") != 0;
    if (rep->short_trace[0] && strcmp(r->prov.kind, "none") != 0)
        rep_warn(rep, "energy not measured%s: %s", any ? " for the figures that need those "
                 "devices" : "", rep->short_trace);

    /* idle */
    rep->idle_power_W = NAN;
    if (r->idle_end > r->idle_begin) {
        measure_t m;
        sp[0] = (span_t){r->idle_begin, r->idle_end};
        measure_spans(&c, sp, 1, &m);
        rep->idle = m.iv;
        if (rep->measured && m.iv.uncovered_s <= c.tol)
            rep->idle_power_W = m.iv.e_best / m.iv.runtime_s;
    }
    /* whole run, and time outside the top-level windows */
    measure_t mw, mo, mt;
    sp[0] = (span_t){r->run_begin, r->run_end};
    measure_spans(&c, sp, 1, &mw);
    rep->whole = mw.iv;
    size_t nt = 0;
    for (size_t i = 0; i < r->n_windows; i++) {
        const energy_window_t *w = &r->windows[i];
        if (w->depth)
            continue;
        if (w->begin < r->run_begin - 1e-3 || w->end > r->run_end + 1e-3)
            rep_warn(rep, "window %s [%.6f, %.6f] s reaches outside the run [%.6f, %.6f] s; "
                     "clipped for the conservation check", w->name, w->begin, w->end,
                     r->run_begin, r->run_end);
        double a = fmax(w->begin, r->run_begin), b = fmin(w->end, r->run_end);
        if (b > a)
            sp[nt++] = (span_t){a, b};
    }
    qsort(sp, nt, sizeof *sp, cmp_span);
    measure_spans(&c, sp, nt, &mt);
    span_t *gaps = malloc((nt + 1) * sizeof *gaps);
    if (!gaps) {
        free(sp);
        ctx_free(&c);
        energy_report_free(rep);
        return err_set(e, ERR_NOMEM, "out of memory for the attribution");
    }
    size_t ng = 0;
    double cur = r->run_begin;
    for (size_t i = 0; i < nt; i++) {
        if (sp[i].a > cur)
            gaps[ng++] = (span_t){cur, sp[i].a};
        cur = fmax(cur, sp[i].b);
    }
    if (r->run_end > cur)
        gaps[ng++] = (span_t){cur, r->run_end};
    measure_spans(&c, gaps, ng, &mo);
    free(gaps);
    rep->outside = mo.iv;
    if (rep->measured) {
        rep->conservation_residual_J = mw.iv.e_best - (mt.iv.e_best + mo.iv.e_best);
        rep->conservation_ok = fabs(rep->conservation_residual_J) <=
                               1e-6 * fmax(1.0, fabs(mw.iv.e_best));
        if (!rep->conservation_ok)
            rep_warn(rep, "conservation check failed: whole run %.6f J, phases + outside %.6f J",
                     mw.iv.e_best, mt.iv.e_best + mo.iv.e_best);
    }
    /* phases: the study's three first, then the others in order of first window */
    for (int k = 0; k < 3; k++)
        snprintf(rep->ph[rep->nph++].name, ENERGY_PHASE_MAX, "%s", energy_study_phases[k]);
    for (size_t i = 0; i < r->n_windows; i++)
        if (find_phase(rep, r->windows[i].name) < 0)
            snprintf(rep->ph[rep->nph++].name, ENERGY_PHASE_MAX, "%s", r->windows[i].name);
    for (size_t i = 0; i < r->n_calib; i++)
        if (find_phase(rep, r->calib[i].phase) < 0)
            snprintf(rep->ph[rep->nph++].name, ENERGY_PHASE_MAX, "%s", r->calib[i].phase);
    for (int k = 0; k < rep->nph; k++) {
        energy_phase_result_t *p = &rep->ph[k];
        phase_result(&c, rep, p, sp, nmax);
        long long tk = energy_run_tokens(r, p->name);
        p->tokens = tk >= 0 ? (double)tk : NAN;
        p->energy_per_token_J = energy_per_token(p->energy_J, p->tokens);
        if (p->short_total && rep->measured)
            rep_warn(rep, "phase %s: its %d window(s) total %.3f s, under %.0f s%s", p->name,
                     p->windows, p->runtime_s, ENERGY_SHORT_TOTAL_S,
                     !strcmp(p->method, "calibrated") ? "; calibrated power used"
                                                      : "; its energy is uncertain");
        if (p->incomplete)
            rep_warn(rep, "phase %s: %s", p->name, p->note);
    }
    /* closure: phases whose windows are all top level, as reported, against the best
     * method over the same time */
    if (rep->measured && nt > 0) {
        double sum = 0, u = 0;
        bool ok = true;
        for (int k = 0; k < rep->nph; k++) {
            const energy_phase_result_t *p = &rep->ph[k];
            bool top = p->windows > 0;
            for (size_t i = 0; i < r->n_windows && top; i++)
                if (!strcmp(r->windows[i].name, p->name) && r->windows[i].depth)
                    top = false;
            if (!top)
                continue;
            ok &= isfinite(p->energy_J);
            sum += p->energy_J;
            u += p->uncertainty_J;
        }
        rep->closure_valid = ok && isfinite(mt.iv.e_best);
        rep->closure_reported_J = sum;
        rep->closure_reference_J = mt.iv.e_best;
        rep->closure_u_J = u;
        rep->closure_ok = rep->closure_valid && fabs(sum - mt.iv.e_best) <= u;
        if (rep->closure_valid && !rep->closure_ok)
            rep_warn(rep, "closure: the phases as reported add up to %.3f J, the %s over the "
                     "same windows to %.3f J; the difference is beyond their summed "
                     "uncertainty %.3f J", sum, method_name(&mt), mt.iv.e_best, u);
    }
    if (r->sensor_failed)
        rep_warn(rep, "the sensor failed at %.3f s: %s", r->sensor_error_t, r->sensor_error);
    free(sp);
    ctx_free(&c);
    return ERR_OK;
}
