/* monitor: see monitor.h. */
#include "energy/monitor.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "energy/attrib.h"
#include "energy/power_log.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/rng.h"

#define READ_BUF 256

struct energy_monitor {
    energy_source_t *src;
    double interval, counter_interval;
    energy_sync_fn sync;
    void *sync_ctx;
    double t0;                 /* CLOCK_MONOTONIC of run time 0 */
    pthread_t th;
    bool th_started;
    atomic_int stop;
    pthread_mutex_t mu;        /* guards everything below */
    energy_run_t run;          /* samples, calibration, idle, provenance */
    energy_mark_t *marks;
    size_t n_marks, cap_marks;
    char stack[ENERGY_DEPTH_MAX][ENERGY_PHASE_MAX]; /* in-process windows now open */
    int depth;
    char ext[ENERGY_DEPTH_MAX][ENERGY_PHASE_MAX];   /* outside marks, best effort */
    int ext_depth;
    char calib_phase[ENERGY_PHASE_MAX];              /* non-empty while calibrating */
    bool in_idle;
    bool failed;
    err_t sensor_err;
    double last_counter_t;
    /* the .partial power log */
    bool log_open;
    atomic_file_t log;
    double last_flush;
    energy_sample_t buf[READ_BUF];
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double energy_monitor_now(const energy_monitor_t *m)
{
    return mono() - m->t0;
}

double energy_monitor_t0(const energy_monitor_t *m)
{
    return m->t0;
}

const energy_provenance_t *energy_monitor_provenance(const energy_monitor_t *m)
{
    return &m->run.prov;
}

static void sleep_until(double t_abs)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t_abs;
    ts.tv_nsec = (long)((t_abs - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* The phase column for a sample taken now (under mu). */
static void live_label(const energy_monitor_t *m, char *buf, size_t cap)
{
    size_t k = 0;
    buf[0] = 0;
    if (m->in_idle)
        k += (size_t)snprintf(buf, cap, "idle");
    for (int i = 0; i < m->depth && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", k ? "/" : "", m->stack[i]);
    for (int i = 0; i < m->ext_depth && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%s", k ? "/" : "", m->ext[i]);
    if (m->calib_phase[0] && k < cap)
        snprintf(buf + k, cap - k, "%scalibrate:%s", k ? "/" : "", m->calib_phase);
}

/* One read of `what`; stamps the readings and stores them (under mu). */
static int read_store(energy_monitor_t *m, int what, double t_now, err_t *e)
{
    int n;
    for (;;) {
        double a = mono();
        int rc = m->src->ops->read(m->src->impl, t_now, what, m->buf, READ_BUF, &n, e);
        double b = mono();
        if (rc)
            return rc;
        double dt = b - a;
        energy_sampler_stats_t *st = &m->run.stats;
        if (what == ENERGY_READ_POWER) {
            st->power_reads++;
            st->power_read_s += dt;
            st->power_read_max_s = fmax(st->power_read_max_s, dt);
        } else {
            st->counter_reads++;
            st->counter_read_s += dt;
            st->counter_read_max_s = fmax(st->counter_read_max_s, dt);
        }
        double stamp = (a + b) / 2 - m->t0;
        char label[ENERGY_PHASE_MAX * (ENERGY_DEPTH_MAX * 2 + 2)];
        pthread_mutex_lock(&m->mu);
        live_label(m, label, sizeof label);
        for (int i = 0; i < n && !rc; i++) {
            energy_sample_t s = m->buf[i];
            if (isnan(s.t))
                s.t = stamp;
            energy_log_round(&s);
            if (m->run.n_samples) {
                /* a device's times must strictly increase (the log's rule) */
                for (size_t j = m->run.n_samples; j-- > 0;) {
                    const energy_sample_t *p = &m->run.samples[j];
                    if (p->dev == s.dev) {
                        if (s.t <= p->t)
                            s.t = p->t + 1e-6;
                        break;
                    }
                    if (m->run.n_samples - j > 64)
                        break;
                }
            }
            rc = energy_run_add_sample(&m->run, &s, e);
            if (!rc && m->log_open)
                energy_log_write_row(m->log.fp, &s, m->run.prov.dev[s.dev].label, label);
        }
        if (m->log_open && stamp - m->last_flush >= 1.0) {
            fflush(m->log.fp);
            m->last_flush = stamp;
        }
        pthread_mutex_unlock(&m->mu);
        if (rc || !m->src->virtual_time || n < READ_BUF)
            return rc;
    }
}

/* Power now, and the counter when it is due (or forced). */
static int sample_once(energy_monitor_t *m, double t_now, bool force_counter, err_t *e)
{
    int rc = read_store(m, ENERGY_READ_POWER, t_now, e);
    if (rc || m->src->virtual_time)
        return rc;
    if (force_counter || t_now - m->last_counter_t >= m->counter_interval - m->interval / 2) {
        m->last_counter_t = t_now;
        rc = read_store(m, ENERGY_READ_COUNTER, t_now, e);
    }
    return rc;
}

static void fail(energy_monitor_t *m, const err_t *e, double t)
{
    pthread_mutex_lock(&m->mu);
    m->failed = true;
    m->sensor_err = *e;
    m->run.sensor_failed = true;
    m->run.sensor_error_t = t;
    snprintf(m->run.sensor_error, sizeof m->run.sensor_error, "%s", e->msg);
    pthread_mutex_unlock(&m->mu);
}

static void *sampler(void *arg)
{
    energy_monitor_t *m = arg;
    double next = mono() + m->interval;
    while (!atomic_load(&m->stop)) {
        sleep_until(next);
        if (atomic_load(&m->stop))
            break;
        double now = mono();
        m->run.stats.ticks++;
        err_t e = ERR_INIT;
        if (sample_once(m, now - m->t0, false, &e)) {
            fail(m, &e, now - m->t0);
            break;
        }
        next += m->interval;
        double after = mono();
        if (after > next) {
            /* fell behind (a slow read): skip the missed ticks rather than burst */
            m->run.stats.late_ticks++;
            next = after + m->interval;
        }
    }
    return NULL;
}

static void monitor_free(energy_monitor_t *m)
{
    if (!m)
        return;
    if (m->log_open)
        atomic_abort(&m->log);
    energy_source_close(m->src);
    energy_run_free(&m->run);
    free(m->marks);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int energy_monitor_start(energy_monitor_t **out, energy_source_t *src,
                         const energy_monitor_opts_t *o, err_t *e)
{
    *out = NULL;
    energy_monitor_t *m = calloc(1, sizeof *m);
    if (!m) {
        energy_source_close(src);
        return err_set(e, ERR_NOMEM, "out of memory starting the energy monitor");
    }
    pthread_mutex_init(&m->mu, NULL);
    m->src = src;
    energy_run_init(&m->run);
    m->run.prov = src->prov;
    m->interval = o && o->interval_s > 0 ? o->interval_s : 0.02;
    m->counter_interval = o && o->counter_interval_s > 0
                              ? o->counter_interval_s
                              : fmax(m->interval, src->prov.counter_period_s);
    m->run.interval_s = m->interval;
    m->run.counter_interval_s = m->counter_interval;
    m->sync = o ? o->sync : NULL;
    m->sync_ctx = o ? o->sync_ctx : NULL;
    int rc = ERR_OK;
    if (m->interval < 1e-3 || m->interval > 60) {
        rc = err_set(e, ERR_INPUT, "sampling interval %.6f s: expected 0.001 to 60 s", m->interval);
        goto fail;
    }
    if (o && o->out_dir) {
        char *path = fs_join(o->out_dir, ENERGY_POWER_LOG_NAME);
        char *partial = path ? malloc(strlen(path) + 9) : NULL;
        if (!partial) {
            free(path);
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto fail;
        }
        sprintf(partial, "%s.partial", path);
        rc = atomic_open_as(&m->log, path, partial, e);
        free(path);
        free(partial);
        if (rc)
            goto fail;
        m->log_open = true;
        fprintf(m->log.fp, "%s\n", ENERGY_LOG_HEADER);
    }
    m->t0 = mono();
    m->run.t0_monotonic_s = m->t0;
    double idle_s = o && o->idle_s > 0 ? o->idle_s : 0;
    m->in_idle = idle_s > 0;
    m->run.idle_begin = m->run.idle_end = 0;
    /* The first reading is taken here, so a sensor that cannot be read fails the start. */
    if (src->prov.ndev > 0 && (rc = sample_once(m, 0, true, e))) {
        err_prefix(e, "first reading from the %s source", src->prov.kind);
        goto fail;
    }
    /* Without devices (the none source) there is nothing to sample. */
    if (src->prov.ndev > 0 && pthread_create(&m->th, NULL, sampler, m) != 0) {
        rc = err_set(e, ERR_FAIL, "cannot start the sampling thread");
        goto fail;
    }
    m->th_started = src->prov.ndev > 0;
    if (idle_s > 0) {
        sleep_until(m->t0 + idle_s);
        pthread_mutex_lock(&m->mu);
        m->in_idle = false;
        m->run.idle_end = energy_monitor_now(m);
        pthread_mutex_unlock(&m->mu);
    }
    m->run.run_begin = energy_monitor_now(m);
    *out = m;
    return ERR_OK;
fail:
    monitor_free(m);
    return rc;
}

static int add_mark(energy_monitor_t *m, bool begin, const char *name, double t,
                    const char *origin, err_t *e)
{
    if (m->n_marks == m->cap_marks) {
        size_t nc = m->cap_marks ? m->cap_marks * 2 : 64;
        energy_mark_t *nm = realloc(m->marks, nc * sizeof *nm);
        if (!nm)
            return err_set(e, ERR_NOMEM, "out of memory recording phase marks");
        m->marks = nm;
        m->cap_marks = nc;
    }
    energy_mark_t *k = &m->marks[m->n_marks++];
    memset(k, 0, sizeof *k);
    k->begin = begin;
    snprintf(k->name, sizeof k->name, "%s", name);
    k->t = t;
    snprintf(k->origin, sizeof k->origin, "%s", origin);
    return ERR_OK;
}

static int phase_mark(energy_monitor_t *m, bool begin, const char *name, err_t *e)
{
    if (!energy_phase_name_ok(name))
        return err_set(e, ERR_INPUT, "phase name \"%.80s\": expected 1 to %d characters of "
                       "A-Z a-z 0-9 _ . -", name, ENERGY_PHASE_MAX - 1);
    if (m->sync) {
        int rc = m->sync(m->sync_ctx, e);
        if (rc)
            return err_prefix(e, "synchronising the device before %s %s",
                              begin ? "beginning" : "ending", name);
    }
    double t = energy_monitor_now(m);
    int rc = ERR_OK;
    pthread_mutex_lock(&m->mu);
    if (begin) {
        for (int i = 0; i < m->depth; i++)
            if (!strcmp(m->stack[i], name))
                rc = err_set(e, ERR_INPUT, "energy_phase_begin(%s): %s is already open", name,
                             name);
        if (!rc && m->calib_phase[0])
            rc = err_set(e, ERR_INPUT, "energy_phase_begin(%s) during calibration", name);
        if (!rc && m->depth == ENERGY_DEPTH_MAX)
            rc = err_set(e, ERR_INPUT, "energy_phase_begin(%s): windows nest deeper than %d",
                         name, ENERGY_DEPTH_MAX);
        if (!rc && !(rc = add_mark(m, true, name, t, "energy_phase_begin", e)))
            snprintf(m->stack[m->depth++], ENERGY_PHASE_MAX, "%s", name);
    } else {
        if (m->depth == 0 || strcmp(m->stack[m->depth - 1], name))
            rc = err_set(e, ERR_INPUT, "energy_phase_end(%s): %s%s%s", name,
                         m->depth ? "the innermost open phase is " : "no phase is open",
                         m->depth ? m->stack[m->depth - 1] : "", "");
        if (!rc && !(rc = add_mark(m, false, name, t, "energy_phase_end", e)))
            m->depth--;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int energy_phase_begin(energy_monitor_t *m, const char *name, err_t *e)
{
    return phase_mark(m, true, name, e);
}

int energy_phase_end(energy_monitor_t *m, const char *name, err_t *e)
{
    return phase_mark(m, false, name, e);
}

int energy_monitor_mark(energy_monitor_t *m, bool begin, const char *name, double t_monotonic,
                        const char *origin, err_t *e)
{
    if (!energy_phase_name_ok(name))
        return err_set(e, ERR_INPUT, "%s: phase name \"%.80s\": expected 1 to %d characters of "
                       "A-Z a-z 0-9 _ . -", origin, name, ENERGY_PHASE_MAX - 1);
    double now = energy_monitor_now(m);
    double t = isnan(t_monotonic) ? now : t_monotonic - m->t0;
    /* The monitored interval: from the run's begin to now (a replay's marks live on its
     * virtual clock and may run ahead, to its last reading). A mark outside it would
     * stretch the run (t=99999999999 made a millisecond command a 3000-year run). */
    double lo = m->run.run_begin;
    double hi = now;
    if (m->src->virtual_time && m->src->virtual_end > hi)
        hi = m->src->virtual_end;
    if (t < lo - ENERGY_MARK_TOL_S || t > hi + ENERGY_MARK_TOL_S || !isfinite(t))
        return err_set(e, ERR_INPUT, "%s: t=%.6f is run time %.6f s, outside the monitored "
                       "interval [%.6f, %.6f] s: the mark is refused (timestamps are "
                       "CLOCK_MONOTONIC seconds; $MXRLHF_T0 is the run's origin)", origin,
                       t_monotonic, t, lo, hi);
    t = fmin(fmax(t, lo), hi);
    pthread_mutex_lock(&m->mu);
    int rc = add_mark(m, begin, name, t, origin, e);
    /* the live label of the .partial log follows the marks as they arrive */
    if (!rc && begin && m->ext_depth < ENERGY_DEPTH_MAX)
        snprintf(m->ext[m->ext_depth++], ENERGY_PHASE_MAX, "%s", name);
    else if (!rc && !begin)
        for (int i = m->ext_depth - 1; i >= 0; i--)
            if (!strcmp(m->ext[i], name)) {
                m->ext_depth = i;
                break;
            }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int energy_monitor_add_tokens(energy_monitor_t *m, const char *phase, long long n, err_t *e)
{
    pthread_mutex_lock(&m->mu);
    int rc = energy_run_add_tokens(&m->run, phase, n, e);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int energy_monitor_sensor_error(energy_monitor_t *m, err_t *e)
{
    pthread_mutex_lock(&m->mu);
    int rc = m->failed ? err_set(e, m->sensor_err.code, "%s", m->sensor_err.msg) : ERR_OK;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int energy_monitor_stop(energy_monitor_t *m, double end_hint, energy_run_t *run, err_t *e)
{
    energy_run_init(run);
    double now = energy_monitor_now(m);
    double end = isfinite(end_hint) && end_hint > now ? end_hint : now;
    atomic_store(&m->stop, 1);
    if (m->th_started)
        pthread_join(m->th, NULL);
    int rc = ERR_OK;
    if (!m->failed && m->src->prov.ndev > 0) {
        /* A last reading after the end, so the whole run lies inside the readings. */
        err_t se = ERR_INIT;
        if (sample_once(m, end, true, &se))
            fail(m, &se, end);
    }
    if (m->src->ops->finish)
        m->src->ops->finish(m->src->impl, &m->run.prov);
    m->run.run_end = end;
    if (m->depth)
        energy_run_warn(&m->run, "energy_monitor_stop with %d phase window(s) still open "
                        "(innermost %s)", m->depth, m->stack[m->depth - 1]);
    rc = energy_run_windows_from_marks(&m->run, m->marks, m->n_marks, e);
    if (!rc && m->log_open) {
        /* Rewrite with the final labels: marks that came late through a pipe are placed. */
        FILE *f = m->log.fp;
        if (fflush(f) || ftruncate(fileno(f), 0) || fseek(f, 0, SEEK_SET))
            rc = err_errno(e, ERR_FAIL, "rewriting %s", m->log.tmp_path);
        if (!rc)
            rc = energy_run_write_log(&m->run, f, e);
        if (!rc) {
            m->log_open = false;
            rc = atomic_commit(&m->log, e);
        }
    }
    if (!rc) {
        *run = m->run;
        energy_run_init(&m->run); /* ownership moved */
    }
    monitor_free(m);
    return rc;
}

void energy_monitor_discard(energy_monitor_t *m)
{
    atomic_store(&m->stop, 1);
    if (m->th_started)
        pthread_join(m->th, NULL);
    monitor_free(m); /* aborts the .partial log */
}

/* ---- calibration ------------------------------------------------------------------ */

int energy_calibrate(energy_monitor_t *m, const char *phase, energy_workload_fn work,
                     void *ctx, const energy_calib_opts_t *o, energy_calib_result_t *res,
                     err_t *e)
{
    memset(res, 0, sizeof *res);
    res->power_W = res->uncertainty_W = NAN;
    if (!energy_phase_name_ok(phase))
        return err_set(e, ERR_INPUT, "energy_calibrate: \"%.80s\" is not a phase name", phase);
    const energy_provenance_t *p = &m->run.prov;
    double upd = fmax(p->update_period_s, p->observed_period_s);
    /* the sensor lags by up to this much (attrib.h); the segment start is skipped by it */
    double settle = fmax(upd + m->interval, fmax(p->counter_period_s, m->counter_interval));
    double min_total = o && o->min_total_s > 0 ? o->min_total_s : 10.0;
    double seg = o && o->segment_s > 0 ? o->segment_s : fmax(1.0, 10 * upd);
    if (seg < 3 * settle)
        seg = 3 * settle;
    double max_off = o && o->max_offset_s > 0 ? o->max_offset_s : (upd > 0 ? upd : m->interval);
    uint64_t seed = o ? o->seed : 0, stream = rng_stream("energy.calibrate", 0);
    pthread_mutex_lock(&m->mu);
    int depth = m->depth;
    if (!depth)
        snprintf(m->calib_phase, sizeof m->calib_phase, "%s", phase);
    pthread_mutex_unlock(&m->mu);
    if (depth)
        return err_set(e, ERR_INPUT, "energy_calibrate(%s): call it outside phase windows", phase);
    int rc = ERR_OK;
    double steady = 0, last_end = 0;
    for (uint64_t k = 0; steady < min_total && !rc; k++) {
        double off = rng_uniform_double(seed, stream, k) * max_off;
        sleep_until(mono() + off);
        if (m->sync && (rc = m->sync(m->sync_ctx, e)))
            break;
        energy_calib_t c;
        memset(&c, 0, sizeof c);
        snprintf(c.phase, sizeof c.phase, "%s", phase);
        c.begin = energy_monitor_now(m);
        do {
            if ((rc = work(ctx, e)))
                break;
            c.iterations++;
        } while (energy_monitor_now(m) - c.begin < seg);
        if (!rc && m->sync)
            rc = m->sync(m->sync_ctx, e);
        if (rc)
            break;
        c.end = energy_monitor_now(m);
        c.steady_from = fmin(c.begin + settle, c.end);
        pthread_mutex_lock(&m->mu);
        rc = energy_run_add_calib(&m->run, &c, e);
        pthread_mutex_unlock(&m->mu);
        steady += c.end - c.steady_from;
        res->segments++;
        res->iterations += c.iterations;
        last_end = c.end;
    }
    pthread_mutex_lock(&m->mu);
    m->calib_phase[0] = 0;
    pthread_mutex_unlock(&m->mu);
    if (rc)
        return err_prefix(e, "calibrating %s", phase);
    res->steady_s = steady;
    /* Wait until the readings cover the last segment (a counter read after its end). */
    double deadline = mono() + 3 * m->counter_interval + 0.5;
    for (;;) {
        pthread_mutex_lock(&m->mu);
        bool covered = m->failed || m->src->virtual_time || p->ndev == 0; /* none: no readings */
        for (size_t i = m->run.n_samples; !covered && i-- > 0;) {
            const energy_sample_t *s = &m->run.samples[i];
            if (s->t < last_end)
                break;
            covered = isfinite(s->energy_J) || !p->dev[s->dev].has_counter;
        }
        pthread_mutex_unlock(&m->mu);
        if (covered || mono() > deadline)
            break;
        sleep_until(mono() + m->interval);
    }
    /* Steady power from a snapshot of the run with only this phase's segments. */
    energy_run_t snap;
    energy_run_init(&snap);
    pthread_mutex_lock(&m->mu);
    snap.prov = m->run.prov;
    snap.interval_s = m->run.interval_s;
    snap.counter_interval_s = m->run.counter_interval_s;
    snap.run_begin = m->run.run_begin;
    snap.run_end = last_end;
    for (size_t i = 0; i < m->run.n_samples && !rc; i++)
        rc = energy_run_add_sample(&snap, &m->run.samples[i], e);
    for (size_t i = 0; i < m->run.n_calib && !rc; i++)
        if (!strcmp(m->run.calib[i].phase, phase))
            rc = energy_run_add_calib(&snap, &m->run.calib[i], e);
    pthread_mutex_unlock(&m->mu);
    energy_report_t rep;
    if (!rc && !(rc = energy_attribute(&snap, &rep, e))) {
        for (int i = 0; i < rep.nph; i++)
            if (!strcmp(rep.ph[i].name, phase)) {
                res->power_W = rep.ph[i].calib_power_W;
                res->uncertainty_W = rep.ph[i].calib_u_W;
            }
        energy_report_free(&rep);
    }
    energy_run_free(&snap);
    return rc;
}

/* ---- MXRLHF_PHASE lines ---------------------------------------------------------- */

int energy_phase_line_parse(const char *line, bool *begin, char name[ENERGY_PHASE_MAX],
                            double *t, err_t *e)
{
    static const char kw[] = "MXRLHF_PHASE";
    if (strncmp(line, kw, sizeof kw - 1))
        return 0;
    const char *p = line + sizeof kw - 1;
    if (*p && *p != ' ' && *p != '\t' && *p != '\r')
        return 0; /* MXRLHF_PHASEX...: not ours */
    char tok[4][128];
    int nt = 0;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\r')
            p++;
        if (!*p)
            break;
        size_t len = strcspn(p, " \t\r");
        if (nt == 4)
            return err_set(e, ERR_INPUT, "too many fields (expected MXRLHF_PHASE begin|end NAME "
                           "[t=SECONDS])");
        if (len >= sizeof tok[0])
            return err_set(e, ERR_INPUT, "field \"%.40s...\" is too long", p);
        memcpy(tok[nt], p, len);
        tok[nt++][len] = 0;
        p += len;
    }
    if (nt < 2)
        return err_set(e, ERR_INPUT, "expected MXRLHF_PHASE begin|end NAME [t=SECONDS]");
    if (!strcmp(tok[0], "begin"))
        *begin = true;
    else if (!strcmp(tok[0], "end"))
        *begin = false;
    else
        return err_set(e, ERR_INPUT, "expected begin or end, got \"%s\"", tok[0]);
    if (!energy_phase_name_ok(tok[1]))
        return err_set(e, ERR_INPUT, "phase name \"%s\": expected 1 to %d characters of A-Z a-z "
                       "0-9 _ . -", tok[1], ENERGY_PHASE_MAX - 1);
    snprintf(name, ENERGY_PHASE_MAX, "%s", tok[1]);
    *t = NAN;
    if (nt == 3) {
        char *end;
        errno = 0;
        double v = strncmp(tok[2], "t=", 2) ? NAN : strtod(tok[2] + 2, &end);
        if (isnan(v) || end == tok[2] + 2 || *end || errno || !isfinite(v) || v < 0)
            return err_set(e, ERR_INPUT, "expected t=<CLOCK_MONOTONIC seconds>, got \"%s\"",
                           tok[2]);
        *t = v;
    }
    if (nt > 3)
        return err_set(e, ERR_INPUT, "unexpected \"%s\" after the timestamp", tok[3]);
    return 1;
}
