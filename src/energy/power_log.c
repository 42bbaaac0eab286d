/* power_log: see power_log.h. */
#include "energy/power_log.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static double round_to(double x, const char *fmt)
{
    if (!isfinite(x))
        return x;
    char buf[64];
    snprintf(buf, sizeof buf, fmt, x);
    return strtod(buf, NULL);
}

void energy_log_round(energy_sample_t *s)
{
    s->t = round_to(s->t, "%.6f");
    s->power_W = round_to(s->power_W, "%.3f");
    s->energy_J = round_to(s->energy_J, "%.6f");
}

void energy_log_write_row(FILE *f, const energy_sample_t *s, const char *label,
                          const char *phase)
{
    fprintf(f, "%.6f,%s,", s->t, label);
    if (isfinite(s->power_W))
        fprintf(f, "%.3f", s->power_W);
    fputc(',', f);
    if (isfinite(s->energy_J))
        fprintf(f, "%.6f", s->energy_J);
    fprintf(f, ",%s\n", phase ? phase : "");
}

void energy_log_free(energy_log_t *log)
{
    free(log->s);
    log->s = NULL;
    log->n = 0;
    log->ndev = 0;
}

/* A numeric cell: empty -> NAN when allowed; otherwise a finite number. */
static int parse_cell(const char *path, long line, const char *col, const char *cell,
                      bool may_be_empty, double *out, err_t *e)
{
    if (!*cell) {
        if (may_be_empty) {
            *out = NAN;
            return ERR_OK;
        }
        return err_set(e, ERR_INPUT, "%s:%ld: column %s is empty (expected a number)", path,
                       line, col);
    }
    char *end;
    errno = 0;
    double v = strtod(cell, &end);
    if (end == cell || *end || errno == ERANGE || !isfinite(v))
        return err_set(e, ERR_INPUT, "%s:%ld: column %s: expected a finite number, got \"%s\"",
                       path, line, col, cell);
    *out = v;
    return ERR_OK;
}

int energy_log_read(const char *path, energy_log_t *log, err_t *e)
{
    memset(log, 0, sizeof *log);
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_errno(e, ERR_INPUT, "cannot open power log %s", path);
    char *line = NULL;
    size_t cap = 0, scap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = ERR_OK;
    double last_t = -INFINITY;
    double dev_last_t[ENERGY_MAX_DEVICES], dev_last_e[ENERGY_MAX_DEVICES];
    bool header = false;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (!header) {
            if (strcmp(line, ENERGY_LOG_HEADER) != 0) {
                rc = err_set(e, ERR_INPUT, "%s:%ld: header is \"%.80s\" (expected \"%s\")",
                             path, lineno, line, ENERGY_LOG_HEADER);
                goto out;
            }
            header = true;
            continue;
        }
        if (len == 0)
            continue; /* a blank line carries nothing */
        if ((size_t)len != strlen(line)) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: contains a NUL byte", path, lineno);
            goto out;
        }
        char *cells[6];
        int nc = 0;
        char *p = line;
        for (;;) {
            if (nc < 6)
                cells[nc] = p;
            nc++;
            char *c = strchr(p, ',');
            if (!c)
                break;
            *c = 0;
            p = c + 1;
        }
        if (nc != 5) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: %d columns (expected 5: %s)", path, lineno, nc,
                         ENERGY_LOG_HEADER);
            goto out;
        }
        energy_sample_t s;
        if ((rc = parse_cell(path, lineno, "time_s", cells[0], false, &s.t, e)) ||
            (rc = parse_cell(path, lineno, "power_W", cells[2], true, &s.power_W, e)) ||
            (rc = parse_cell(path, lineno, "energy_J", cells[3], true, &s.energy_J, e)))
            goto out;
        const char *label = cells[1];
        if (!*label || strlen(label) >= ENERGY_LABEL_MAX || strchr(label, '"')) {
            rc = err_set(e, ERR_INPUT,
                         "%s:%ld: column device: expected a label of 1 to %d characters, got "
                         "\"%.40s\"", path, lineno, ENERGY_LABEL_MAX - 1, label);
            goto out;
        }
        if (isnan(s.power_W) && isnan(s.energy_J)) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: neither power_W nor energy_J is given", path,
                         lineno);
            goto out;
        }
        /* run time with 6 decimals is exact only below 2^53 microseconds (about 285
         * years); a time beyond that is a broken clock or a broken file */
        if (fabs(s.t) >= ENERGY_LOG_MAX_T) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: column time_s: %g s is beyond the run times a "
                         "power log holds (|time_s| < %.0f s)", path, lineno, s.t,
                         ENERGY_LOG_MAX_T);
            goto out;
        }
        if (isfinite(s.power_W) && s.power_W < 0) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: column power_W: %g is negative", path, lineno,
                         s.power_W);
            goto out;
        }
        if (s.t < last_t) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: column time_s: %.6f is before the previous "
                         "row's %.6f (rows must be in time order)", path, lineno, s.t, last_t);
            goto out;
        }
        last_t = s.t;
        int d;
        for (d = 0; d < log->ndev; d++)
            if (!strcmp(log->labels[d], label))
                break;
        if (d == log->ndev) {
            if (log->ndev == ENERGY_MAX_DEVICES) {
                rc = err_set(e, ERR_INPUT, "%s:%ld: more than %d devices", path, lineno,
                             ENERGY_MAX_DEVICES);
                goto out;
            }
            snprintf(log->labels[d], ENERGY_LABEL_MAX, "%s", label);
            dev_last_t[d] = -INFINITY;
            dev_last_e[d] = -INFINITY;
            log->ndev++;
        }
        if (!(s.t > dev_last_t[d])) {
            rc = err_set(e, ERR_INPUT, "%s:%ld: device %s has two rows at time %.6f", path,
                         lineno, label, s.t);
            goto out;
        }
        dev_last_t[d] = s.t;
        if (isfinite(s.energy_J)) {
            if (s.energy_J < dev_last_e[d]) {
                rc = err_set(e, ERR_INPUT,
                             "%s:%ld: column energy_J: device %s's counter goes back from "
                             "%.6f to %.6f (the log holds unwrapped counters)", path, lineno,
                             label, dev_last_e[d], s.energy_J);
                goto out;
            }
            dev_last_e[d] = s.energy_J;
        }
        s.dev = d;
        if (log->n == scap) {
            size_t nc2 = scap ? scap * 2 : 1024;
            energy_sample_t *ns = realloc(log->s, nc2 * sizeof *ns);
            if (!ns) {
                rc = err_set(e, ERR_NOMEM, "out of memory reading %s", path);
                goto out;
            }
            log->s = ns;
            scap = nc2;
        }
        log->s[log->n++] = s;
    }
    if (ferror(f)) {
        rc = err_errno(e, ERR_FAIL, "reading %s", path);
        goto out;
    }
    if (!header)
        rc = err_set(e, ERR_INPUT, "%s: empty (expected the header \"%s\")", path,
                     ENERGY_LOG_HEADER);
out:
    free(line);
    fclose(f);
    if (rc)
        energy_log_free(log);
    return rc;
}
