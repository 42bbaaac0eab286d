/* run: see run.h. */
#include "energy/run.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "energy/power_log.h"
#include "util/json.h"

void energy_run_init(energy_run_t *r)
{
    memset(r, 0, sizeof *r);
    r->sensor_error_t = NAN;
}

void energy_run_free(energy_run_t *r)
{
    free(r->samples);
    free(r->windows);
    free(r->calib);
    free(r->tokens);
    for (int i = 0; i < r->n_warnings; i++)
        free(r->warnings[i]);
    free(r->warnings);
    energy_run_init(r);
}

static int grow(void **p, size_t *cap, size_t n, size_t elem, err_t *e)
{
    if (n < *cap)
        return ERR_OK;
    size_t nc = *cap ? *cap * 2 : 256;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return err_set(e, ERR_NOMEM, "out of memory growing the run record to %zu entries", nc);
    *p = np;
    *cap = nc;
    return ERR_OK;
}

int energy_run_add_sample(energy_run_t *r, const energy_sample_t *s, err_t *e)
{
    int rc = grow((void **)&r->samples, &r->cap_samples, r->n_samples, sizeof *s, e);
    if (!rc)
        r->samples[r->n_samples++] = *s;
    return rc;
}

int energy_run_add_window(energy_run_t *r, const energy_window_t *w, err_t *e)
{
    int rc = grow((void **)&r->windows, &r->cap_windows, r->n_windows, sizeof *w, e);
    if (!rc)
        r->windows[r->n_windows++] = *w;
    return rc;
}

int energy_run_add_calib(energy_run_t *r, const energy_calib_t *c, err_t *e)
{
    int rc = grow((void **)&r->calib, &r->cap_calib, r->n_calib, sizeof *c, e);
    if (!rc)
        r->calib[r->n_calib++] = *c;
    return rc;
}

int energy_run_add_tokens(energy_run_t *r, const char *phase, long long n, err_t *e)
{
    if (!energy_phase_name_ok(phase))
        return err_set(e, ERR_INPUT, "tokens of phase \"%.80s\": not a phase name (1 to %d "
                       "characters of A-Z a-z 0-9 _ . -)", phase, ENERGY_PHASE_MAX - 1);
    if (n < 0)
        return err_set(e, ERR_INPUT, "tokens of phase %s: %lld (expected >= 0)", phase, n);
    for (size_t i = 0; i < r->n_tokens; i++)
        if (!strcmp(r->tokens[i].phase, phase)) {
            r->tokens[i].tokens += n;
            return ERR_OK;
        }
    int rc = grow((void **)&r->tokens, &r->cap_tokens, r->n_tokens, sizeof *r->tokens, e);
    if (!rc) {
        energy_tokens_t *t = &r->tokens[r->n_tokens++];
        memset(t, 0, sizeof *t);
        snprintf(t->phase, sizeof t->phase, "%s", phase);
        t->tokens = n;
    }
    return rc;
}

long long energy_run_tokens(const energy_run_t *r, const char *phase)
{
    for (size_t i = 0; i < r->n_tokens; i++)
        if (!strcmp(r->tokens[i].phase, phase))
            return r->tokens[i].tokens;
    return -1;
}

void energy_run_warn(energy_run_t *r, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nw = realloc(r->warnings, sizeof *nw * (size_t)(r->n_warnings + 1));
    if (!nw)
        return;
    r->warnings = nw;
    if ((nw[r->n_warnings] = strdup(buf)))
        r->n_warnings++;
}

bool energy_phase_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= ENERGY_PHASE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

static int cmp_window(const void *a, const void *b)
{
    const energy_window_t *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->depth - y->depth; /* an outer window opened at the same instant comes first */
}

typedef struct mark_ref {
    const energy_mark_t *m;
    size_t seq;
} mark_ref_t;

static int cmp_mark(const void *a, const void *b)
{
    const mark_ref_t *x = a, *y = b;
    if (x->m->t != y->m->t)
        return x->m->t < y->m->t ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

int energy_run_windows_from_marks(energy_run_t *r, const energy_mark_t *marks, size_t n,
                                  err_t *e)
{
    mark_ref_t *ord = err_malloc(e, (n ? n : 1) * sizeof *ord, "phase marks");
    if (!ord)
        return ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        ord[i] = (mark_ref_t){&marks[i], i};
    qsort(ord, n, sizeof *ord, cmp_mark);
    energy_window_t open[ENERGY_DEPTH_MAX];
    int depth = 0, rc = ERR_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const energy_mark_t *m = ord[i].m;
        if (m->begin) {
            bool dup = false;
            for (int k = 0; k < depth; k++)
                dup |= !strcmp(open[k].name, m->name);
            if (dup) {
                energy_run_warn(r, "%s: begin %s while %s is already open: ignored", m->origin,
                                m->name, m->name);
                continue;
            }
            if (depth == ENERGY_DEPTH_MAX) {
                energy_run_warn(r, "%s: begin %s nests deeper than %d: ignored", m->origin,
                                m->name, ENERGY_DEPTH_MAX);
                continue;
            }
            energy_window_t *w = &open[depth];
            memset(w, 0, sizeof *w);
            snprintf(w->name, sizeof w->name, "%s", m->name);
            w->begin = m->t;
            w->depth = depth++;
            continue;
        }
        int k = depth - 1;
        while (k >= 0 && strcmp(open[k].name, m->name))
            k--;
        if (k < 0) {
            energy_run_warn(r, "%s: end %s without a matching begin: ignored", m->origin,
                            m->name);
            continue;
        }
        while (depth > k) {
            energy_window_t *w = &open[--depth];
            if (depth > k)
                energy_run_warn(r, "%s: end %s while %s, opened inside it, is still open: both "
                                "closed at %.6f s", m->origin, m->name, w->name, m->t);
            w->end = m->t;
            rc = energy_run_add_window(r, w, e);
            if (rc)
                break;
        }
    }
    while (!rc && depth > 0) {
        energy_window_t *w = &open[--depth];
        double end = r->run_end > w->begin ? r->run_end : w->begin;
        energy_run_warn(r, "phase %s (begun at %.6f s) was never ended: closed at the end of the "
                        "run, %.6f s", w->name, w->begin, end);
        w->end = end;
        w->closed_at_end = true;
        rc = energy_run_add_window(r, w, e);
    }
    free(ord);
    if (r->n_windows)
        qsort(r->windows, r->n_windows, sizeof *r->windows, cmp_window);
    return rc;
}

void energy_labels_free(char **labels, size_t n)
{
    if (!labels)
        return;
    for (size_t i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
}

char **energy_run_labels(const energy_run_t *r, err_t *e)
{
    char **lab = err_calloc(e, r->n_samples ? r->n_samples : 1, sizeof *lab, "power log labels");
    if (!lab)
        return NULL;
    size_t next = 0, nact = 0;
    size_t act[64];
    char buf[ENERGY_PHASE_MAX * (ENERGY_DEPTH_MAX + 2)];
    for (size_t i = 0; i < r->n_samples; i++) {
        double t = r->samples[i].t;
        while (next < r->n_windows && r->windows[next].begin <= t) {
            if (nact < 64)
                act[nact++] = next;
            next++;
        }
        size_t k = 0;
        for (size_t j = 0; j < nact; j++)
            if (r->windows[act[j]].end > t)
                act[k++] = act[j];
        nact = k;
        size_t len = 0;
        buf[0] = 0;
        if (r->idle_end > r->idle_begin && t >= r->idle_begin && t < r->idle_end)
            len += (size_t)snprintf(buf, sizeof buf, "idle");
        /* act is in begin order, and nesting makes that outermost first */
        for (size_t j = 0; j < nact && len < sizeof buf; j++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len ? "/" : "",
                                    r->windows[act[j]].name);
        for (size_t c = 0; c < r->n_calib && len < sizeof buf; c++)
            if (t >= r->calib[c].begin && t < r->calib[c].end)
                len += (size_t)snprintf(buf + len, sizeof buf - len, "%scalibrate:%s",
                                        len ? "/" : "", r->calib[c].phase);
        if (!(lab[i] = strdup(buf))) {
            err_set(e, ERR_NOMEM, "out of memory labelling the power log");
            energy_labels_free(lab, r->n_samples);
            return NULL;
        }
    }
    return lab;
}

int energy_run_write_log(const energy_run_t *r, FILE *f, err_t *e)
{
    char **lab = energy_run_labels(r, e);
    if (!lab)
        return e ? e->code : ERR_NOMEM;
    fprintf(f, "%s\n", ENERGY_LOG_HEADER);
    for (size_t i = 0; i < r->n_samples; i++) {
        const energy_sample_t *s = &r->samples[i];
        energy_log_write_row(f, s, r->prov.dev[s->dev].label, lab[i]);
    }
    energy_labels_free(lab, r->n_samples);
    return ferror(f) ? err_set(e, ERR_FAIL, "writing the power log failed") : ERR_OK;
}

/* ---- loading ------------------------------------------------------------------- */

static int get_obj(const cJSON *j, const char *key, const char *ctx, const cJSON **out,
                   bool nullable, err_t *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if ((!v || cJSON_IsNull(v)) && nullable) {
        *out = NULL;
        return ERR_OK;
    }
    if (!cJSON_IsObject(v))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an object", ctx, key);
    *out = v;
    return ERR_OK;
}

static int copy_str(const cJSON *obj, const char *key, const char *ctx, char *dst, size_t cap,
                    err_t *e)
{
    const char *s;
    int rc = json_opt_string(obj, key, ctx, "", &s, e);
    if (!rc)
        snprintf(dst, cap, "%s", s);
    return rc;
}

static int load_source(const cJSON *src, const char *ctx, energy_provenance_t *p, err_t *e)
{
    int rc;
    memset(p, 0, sizeof *p);
    if ((rc = copy_str(src, "kind", ctx, p->kind, sizeof p->kind, e)) ||
        (rc = copy_str(src, "sensor", ctx, p->sensor, sizeof p->sensor, e)) ||
        (rc = copy_str(src, "driver", ctx, p->driver, sizeof p->driver, e)) ||
        (rc = copy_str(src, "library", ctx, p->library, sizeof p->library, e)) ||
        (rc = copy_str(src, "choice", ctx, p->choice, sizeof p->choice, e)) ||
        (rc = copy_str(src, "notes", ctx, p->notes, sizeof p->notes, e)) ||
        (rc = json_opt_double(src, "update_period_s", ctx, 0, &p->update_period_s, e)) ||
        (rc = json_opt_double(src, "counter_period_s", ctx, 0, &p->counter_period_s, e)) ||
        (rc = json_opt_double(src, "observed_period_s", ctx, 0, &p->observed_period_s, e)) ||
        (rc = json_opt_double(src, "content_window_s", ctx, 0, &p->content_window_s, e)))
        return rc;
    if (!p->kind[0])
        return err_set(e, ERR_INPUT, "%s: field \"source.kind\" is missing", ctx);
    const cJSON *devs = cJSON_GetObjectItemCaseSensitive(src, "devices");
    if (!cJSON_IsArray(devs))
        return err_set(e, ERR_INPUT, "%s: field \"source.devices\": expected an array", ctx);
    int nd = cJSON_GetArraySize(devs);
    if (nd > ENERGY_MAX_DEVICES)
        return err_set(e, ERR_INPUT, "%s: %d devices (at most %d)", ctx, nd, ENERGY_MAX_DEVICES);
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(devs, i);
        energy_device_info_t *di = &p->dev[i];
        char dctx[600];
        snprintf(dctx, sizeof dctx, "%s: source.devices[%d]", ctx, i);
        const char *label;
        if ((rc = json_req_string(d, "label", dctx, &label, e)))
            return rc;
        if (!*label || strlen(label) >= sizeof di->label)
            return err_set(e, ERR_INPUT, "%s: field \"label\": expected 1 to %d characters", dctx,
                           (int)sizeof di->label - 1);
        snprintf(di->label, sizeof di->label, "%s", label);
        if ((rc = copy_str(d, "name", dctx, di->name, sizeof di->name, e)) ||
            (rc = copy_str(d, "bus_id", dctx, di->bus_id, sizeof di->bus_id, e)) ||
            (rc = copy_str(d, "uuid", dctx, di->uuid, sizeof di->uuid, e)) ||
            (rc = copy_str(d, "power_method", dctx, di->power_method, sizeof di->power_method, e)) ||
            (rc = json_req_bool(d, "has_power", dctx, &di->has_power, e)) ||
            (rc = json_req_bool(d, "has_counter", dctx, &di->has_counter, e)))
            return rc;
    }
    p->ndev = nd;
    return ERR_OK;
}

static int load_name(const cJSON *o, const char *key, const char *ctx, char *dst, err_t *e)
{
    const char *s;
    int rc = json_req_string(o, key, ctx, &s, e);
    if (rc)
        return rc;
    if (!energy_phase_name_ok(s))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": \"%.80s\" is not a phase name (1 to %d "
                       "characters of A-Z a-z 0-9 _ . -)", ctx, key, s, ENERGY_PHASE_MAX - 1);
    snprintf(dst, ENERGY_PHASE_MAX, "%s", s);
    return ERR_OK;
}

static int load_timing(const cJSON *j, const char *ctx, energy_run_t *r, err_t *e)
{
    const char *fmt;
    int rc = json_req_string(j, "format", ctx, &fmt, e);
    if (rc)
        return rc;
    if (strcmp(fmt, "mxrlhf.phase_timing/1"))
        return err_set(e, ERR_INPUT, "%s: field \"format\": \"%s\" (expected "
                       "\"mxrlhf.phase_timing/1\")", ctx, fmt);
    const cJSON *src = NULL, *clock = NULL, *samp = NULL, *run = NULL, *idle = NULL, *serr = NULL;
    if ((rc = get_obj(j, "source", ctx, &src, false, e)) ||
        (rc = load_source(src, ctx, &r->prov, e)) ||
        (rc = get_obj(j, "clock", ctx, &clock, false, e)) ||
        (rc = json_req_double(clock, "t0_monotonic_s", ctx, &r->t0_monotonic_s, e)) ||
        (rc = get_obj(j, "sampling", ctx, &samp, false, e)) ||
        (rc = json_req_double(samp, "interval_s", ctx, &r->interval_s, e)) ||
        (rc = json_req_double(samp, "counter_interval_s", ctx, &r->counter_interval_s, e)) ||
        (rc = get_obj(j, "run", ctx, &run, false, e)) ||
        (rc = json_req_double(run, "begin_s", ctx, &r->run_begin, e)) ||
        (rc = json_req_double(run, "end_s", ctx, &r->run_end, e)) ||
        (rc = get_obj(j, "idle", ctx, &idle, true, e)) ||
        (rc = get_obj(j, "sensor_error", ctx, &serr, true, e)))
        return rc;
    /* the sampler's figures are kept as they were measured */
    long long ticks, late, pr, cr;
    double pmean, pmax, cmean, cmax;
    if ((rc = json_opt_int(samp, "ticks", ctx, 0, &ticks, e)) ||
        (rc = json_opt_int(samp, "late_ticks", ctx, 0, &late, e)) ||
        (rc = json_opt_int(samp, "power_reads", ctx, 0, &pr, e)) ||
        (rc = json_opt_int(samp, "counter_reads", ctx, 0, &cr, e)) ||
        (rc = json_opt_double(samp, "power_read_mean_us", ctx, 0, &pmean, e)) ||
        (rc = json_opt_double(samp, "power_read_max_us", ctx, 0, &pmax, e)) ||
        (rc = json_opt_double(samp, "counter_read_mean_ms", ctx, 0, &cmean, e)) ||
        (rc = json_opt_double(samp, "counter_read_max_ms", ctx, 0, &cmax, e)))
        return rc;
    r->stats.ticks = (long)ticks;
    r->stats.late_ticks = (long)late;
    r->stats.power_reads = (long)pr;
    r->stats.counter_reads = (long)cr;
    r->stats.power_read_s = pmean * 1e-6 * (double)pr;
    r->stats.power_read_max_s = pmax * 1e-6;
    r->stats.counter_read_s = cmean * 1e-3 * (double)cr;
    r->stats.counter_read_max_s = cmax * 1e-3;
    if (!(r->interval_s > 0) || !(r->counter_interval_s > 0))
        return err_set(e, ERR_INPUT, "%s: sampling intervals must be positive", ctx);
    if (!(r->run_end >= r->run_begin))
        return err_set(e, ERR_INPUT, "%s: run.end_s %.6f is before run.begin_s %.6f", ctx,
                       r->run_end, r->run_begin);
    if (!(fabs(r->run_begin) < ENERGY_LOG_MAX_T && fabs(r->run_end) < ENERGY_LOG_MAX_T))
        return err_set(e, ERR_INPUT, "%s: field \"run\": %g .. %g s is beyond the run times a "
                       "power log holds (|t| < %.0f s)", ctx, r->run_begin, r->run_end,
                       ENERGY_LOG_MAX_T);
    if (idle && ((rc = json_req_double(idle, "begin_s", ctx, &r->idle_begin, e)) ||
                 (rc = json_req_double(idle, "end_s", ctx, &r->idle_end, e))))
        return rc;
    if (serr) {
        const char *msg;
        if ((rc = json_req_double(serr, "t_s", ctx, &r->sensor_error_t, e)) ||
            (rc = json_req_string(serr, "message", ctx, &msg, e)))
            return rc;
        r->sensor_failed = true;
        snprintf(r->sensor_error, sizeof r->sensor_error, "%s", msg);
    }
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(j, "windows");
    if (!cJSON_IsArray(ws))
        return err_set(e, ERR_INPUT, "%s: field \"windows\": expected an array", ctx);
    for (int i = 0; i < cJSON_GetArraySize(ws); i++) {
        const cJSON *w = cJSON_GetArrayItem(ws, i);
        char wctx[600];
        snprintf(wctx, sizeof wctx, "%s: windows[%d]", ctx, i);
        energy_window_t win;
        memset(&win, 0, sizeof win);
        long long depth;
        if ((rc = load_name(w, "phase", wctx, win.name, e)) ||
            (rc = json_req_double(w, "begin_s", wctx, &win.begin, e)) ||
            (rc = json_req_double(w, "end_s", wctx, &win.end, e)) ||
            (rc = json_req_int(w, "depth", wctx, &depth, e)) ||
            (rc = json_opt_bool(w, "closed_at_end", wctx, false, &win.closed_at_end, e)))
            return rc;
        if (!(win.end >= win.begin) || depth < 0 || depth >= ENERGY_DEPTH_MAX)
            return err_set(e, ERR_INPUT, "%s: end_s before begin_s, or depth out of range", wctx);
        /* marks are checked against the monitored interval when they arrive; a window
         * outside the run is a file edited or broken since */
        if (win.begin < r->run_begin - ENERGY_MARK_TOL_S || win.end > r->run_end + ENERGY_MARK_TOL_S)
            return err_set(e, ERR_INPUT, "%s: [%.6f, %.6f] s lies outside the run [%.6f, %.6f] s",
                           wctx, win.begin, win.end, r->run_begin, r->run_end);
        win.depth = (int)depth;
        if ((rc = energy_run_add_window(r, &win, e)))
            return rc;
    }
    if (r->n_windows)
        qsort(r->windows, r->n_windows, sizeof *r->windows, cmp_window);
    const cJSON *cs = cJSON_GetObjectItemCaseSensitive(j, "calibration");
    if (cs && !cJSON_IsArray(cs))
        return err_set(e, ERR_INPUT, "%s: field \"calibration\": expected an array", ctx);
    for (int i = 0; cs && i < cJSON_GetArraySize(cs); i++) {
        const cJSON *c = cJSON_GetArrayItem(cs, i);
        char cctx[600];
        snprintf(cctx, sizeof cctx, "%s: calibration[%d]", ctx, i);
        energy_calib_t cal;
        memset(&cal, 0, sizeof cal);
        long long it;
        if ((rc = load_name(c, "phase", cctx, cal.phase, e)) ||
            (rc = json_req_double(c, "begin_s", cctx, &cal.begin, e)) ||
            (rc = json_req_double(c, "end_s", cctx, &cal.end, e)) ||
            (rc = json_req_double(c, "steady_from_s", cctx, &cal.steady_from, e)) ||
            (rc = json_req_int(c, "iterations", cctx, &it, e)))
            return rc;
        if (!(cal.begin <= cal.steady_from && cal.steady_from <= cal.end))
            return err_set(e, ERR_INPUT, "%s: expected begin_s <= steady_from_s <= end_s", cctx);
        cal.iterations = (long)it;
        if ((rc = energy_run_add_calib(r, &cal, e)))
            return rc;
    }
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(j, "tokens"); /* absent before issue 18 */
    if (tk && !cJSON_IsObject(tk))
        return err_set(e, ERR_INPUT, "%s: field \"tokens\": expected an object", ctx);
    for (const cJSON *t = tk ? tk->child : NULL; t; t = t->next) {
        char tctx[600];
        snprintf(tctx, sizeof tctx, "%s: field \"tokens\"", ctx);
        long long n;
        if ((rc = json_req_int(tk, t->string, tctx, &n, e)))
            return rc;
        if ((rc = energy_run_add_tokens(r, t->string, n, e)))
            return err_prefix(e, "%s", tctx);
    }
    const cJSON *rw = cJSON_GetObjectItemCaseSensitive(j, "run_warnings");
    for (int i = 0; cJSON_IsArray(rw) && i < cJSON_GetArraySize(rw); i++) {
        const cJSON *w = cJSON_GetArrayItem(rw, i);
        if (cJSON_IsString(w))
            energy_run_warn(r, "%s", w->valuestring);
    }
    return ERR_OK;
}

int energy_run_load(const char *log_path, const char *timing_path, energy_run_t *r, err_t *e)
{
    energy_run_init(r);
    cJSON *j = NULL;
    int rc = json_load_file(timing_path, 256u << 20, &j, e);
    if (rc)
        return rc;
    rc = load_timing(j, timing_path, r, e);
    cJSON_Delete(j);
    if (rc) {
        energy_run_free(r);
        return rc;
    }
    if (!strcmp(r->prov.kind, "none"))
        return ERR_OK; /* nothing was sampled; the log, if any, holds only a header */
    energy_log_t log;
    if ((rc = energy_log_read(log_path, &log, e))) {
        energy_run_free(r);
        return rc;
    }
    /* The log names devices by label; phase_timing.json says what each label is. */
    int map[ENERGY_MAX_DEVICES];
    for (int d = 0; d < log.ndev; d++) {
        map[d] = -1;
        for (int k = 0; k < r->prov.ndev; k++)
            if (!strcmp(log.labels[d], r->prov.dev[k].label))
                map[d] = k;
        if (map[d] < 0) {
            rc = err_set(e, ERR_INPUT, "%s: device \"%s\" is not described in %s (source.devices)",
                         log_path, log.labels[d], timing_path);
            goto out;
        }
    }
    free(r->samples);
    r->samples = log.s;
    r->n_samples = r->cap_samples = log.n;
    log.s = NULL;
    for (size_t i = 0; i < r->n_samples; i++)
        r->samples[i].dev = map[r->samples[i].dev];
out:
    energy_log_free(&log);
    if (rc)
        energy_run_free(r);
    return rc;
}
