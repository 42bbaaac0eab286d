/* replay: a recorded power log played back as a source.
 *
 * The log's rows are reported on the run's clock: the row at time_s is returned by the
 * first read at run time >= time_s, with its own timestamp ("virtual time"). A run
 * measured with a replay therefore sees exactly the recorded samples, which makes
 * attribution testable to the joule. The sensor's update period is taken from the
 * options, else from a phase_timing.json beside the log (the recording's own record),
 * else the log's median row spacing.
 */
#include "energy/source.h"

#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "energy/power_log.h"
#include "util/fs.h"
#include "util/json.h"

typedef struct replay_src {
    energy_log_t log;
    size_t next;
} replay_src_t;

static int replay_read(void *impl, double t_now, int what, energy_sample_t *out,
                       int cap, int *n, err_t *e)
{
    replay_src_t *s = impl;
    *n = 0;
    while (s->next < s->log.n && *n < cap && s->log.s[s->next].t <= t_now)
        out[(*n)++] = s->log.s[s->next++];
    (void)what;
    return ERR_OK;
}

static void replay_close(void *impl)
{
    replay_src_t *s = impl;
    energy_log_free(&s->log);
    free(s);
}

static const energy_source_ops_t replay_ops = {replay_read, replay_close, NULL, NULL};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The recording's sensor timing, if a phase_timing.json lies beside the log: returns the
 * update period and fills the counter period and content window. */
static double recorded_period(const char *path, char *what, size_t cap, energy_provenance_t *p)
{
    char *copy = strdup(path);
    if (!copy)
        return 0;
    char *pt = fs_join(dirname(copy), "phase_timing.json");
    free(copy);
    double per = 0;
    cJSON *j = NULL;
    err_t e = ERR_INIT;
    if (pt && fs_exists(pt) && !json_load_file(pt, 64u << 20, &j, &e)) {
        const cJSON *src = cJSON_GetObjectItemCaseSensitive(j, "source");
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(src, "update_period_s");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(src, "kind");
        const cJSON *sn = cJSON_GetObjectItemCaseSensitive(src, "sensor");
        const cJSON *cp = cJSON_GetObjectItemCaseSensitive(src, "counter_period_s");
        const cJSON *cw = cJSON_GetObjectItemCaseSensitive(src, "content_window_s");
        if (cJSON_IsNumber(u) && u->valuedouble > 0) {
            per = u->valuedouble;
            p->counter_period_s = cJSON_IsNumber(cp) ? cp->valuedouble : per;
            p->content_window_s = cJSON_IsNumber(cw) ? cw->valuedouble : 0;
            snprintf(what, cap, "recorded with %s (%s); sensor period from %s",
                     cJSON_IsString(k) ? k->valuestring : "?",
                     cJSON_IsString(sn) ? sn->valuestring : "?", pt);
        }
    }
    cJSON_Delete(j);
    free(pt);
    return per;
}

int energy_source_open_replay(const char *path, const energy_source_opts_t *o,
                              energy_source_t **out, err_t *e)
{
    *out = NULL;
    replay_src_t *s = err_calloc(e, 1, sizeof *s, "replay source");
    energy_provenance_t *p = err_calloc(e, 1, sizeof *p, "replay provenance");
    int rc = ERR_OK;
    if (!s || !p) {
        rc = ERR_NOMEM;
        goto fail;
    }
    if ((rc = energy_log_read(path, &s->log, e)))
        goto fail;
    if (s->log.n == 0) {
        rc = err_set(e, ERR_INPUT, "%s: the power log has no rows", path);
        goto fail;
    }
    snprintf(p->kind, sizeof p->kind, "replay");
    snprintf(p->sensor, sizeof p->sensor, "replay of the power log %s", path);
    snprintf(p->choice, sizeof p->choice, "--power-source replay:%s", path);
    p->ndev = s->log.ndev;
    for (int d = 0; d < p->ndev; d++) {
        snprintf(p->dev[d].label, sizeof p->dev[d].label, "%s", s->log.labels[d]);
        snprintf(p->dev[d].name, sizeof p->dev[d].name, "recorded device %s", s->log.labels[d]);
        snprintf(p->dev[d].power_method, sizeof p->dev[d].power_method, "recorded power_W");
    }
    for (size_t i = 0; i < s->log.n; i++) {
        p->dev[s->log.s[i].dev].has_power |= isfinite(s->log.s[i].power_W);
        p->dev[s->log.s[i].dev].has_counter |= isfinite(s->log.s[i].energy_J);
    }
    char what[600] = "";
    double per = o && o->replay_update_period_s > 0 ? o->replay_update_period_s : 0;
    if (per > 0)
        snprintf(what, sizeof what, "sensor period given by the caller");
    else
        per = recorded_period(path, what, sizeof what, p);
    if (per <= 0) {
        /* Median spacing of device 0's rows: the finest the recording can resolve. */
        size_t m = 0;
        double *gaps = malloc(s->log.n * sizeof *gaps);
        double last = NAN;
        for (size_t i = 0; gaps && i < s->log.n; i++) {
            if (s->log.s[i].dev != 0)
                continue;
            if (isfinite(last))
                gaps[m++] = s->log.s[i].t - last;
            last = s->log.s[i].t;
        }
        if (m) {
            qsort(gaps, m, sizeof *gaps, cmp_double);
            per = gaps[m / 2];
        }
        free(gaps);
        snprintf(what, sizeof what, "sensor period unknown: taken as the median row spacing");
    }
    p->update_period_s = per;
    if (p->counter_period_s <= 0)
        p->counter_period_s = per;
    snprintf(p->notes, sizeof p->notes, "%s", what);
    rc = energy_source_custom(&replay_ops, s, p, true, out, e);
    if (rc)
        goto fail;
    (*out)->virtual_end = s->log.s[s->log.n - 1].t; /* rows are in time order */
    free(p);
    return ERR_OK;
fail:
    if (s)
        replay_close(s);
    free(p);
    return rc;
}
