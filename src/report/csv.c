/* csv: see csv.h. */
#include "report/csv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int csv_open(csv_writer_t *w, const char *path, err_t *e)
{
    memset(w, 0, sizeof *w);
    return atomic_open(&w->af, path, e);
}

static void sep(csv_writer_t *w)
{
    if (w->col++ && fputc(',', w->af.fp) == EOF)
        w->bad = 1;
}

void csv_str(csv_writer_t *w, const char *s)
{
    sep(w);
    if (!s)
        return;
    if (!strpbrk(s, ",\"\r\n")) {
        if (fputs(s, w->af.fp) == EOF && *s)
            w->bad = 1;
        return;
    }
    fputc('"', w->af.fp);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            fputc('"', w->af.fp);
        fputc(*p, w->af.fp);
    }
    if (fputc('"', w->af.fp) == EOF)
        w->bad = 1;
}

char *csv_format_double(double v, char *buf)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return buf;
    }
    return buf;
}

void csv_num(csv_writer_t *w, double v)
{
    char buf[32];
    if (isnan(v)) {
        sep(w);
        return;
    }
    csv_str(w, csv_format_double(v, buf));
}

void csv_fixed(csv_writer_t *w, double v, int decimals)
{
    char buf[64];
    if (isnan(v)) {
        sep(w);
        return;
    }
    snprintf(buf, sizeof buf, "%.*f", decimals, v);
    csv_str(w, buf);
}

void csv_int(csv_writer_t *w, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    csv_str(w, buf);
}

void csv_bool(csv_writer_t *w, bool v)
{
    csv_str(w, v ? "true" : "false");
}

void csv_endrow(csv_writer_t *w)
{
    if (fputc('\n', w->af.fp) == EOF)
        w->bad = 1;
    w->col = 0;
}

void csv_header(csv_writer_t *w, const char *const *names)
{
    for (; *names; names++)
        csv_str(w, *names);
    csv_endrow(w);
}

int csv_commit(csv_writer_t *w, err_t *e)
{
    if (w->bad) {
        err_errno(e, ERR_FAIL, "writing %s", w->af.path);
        atomic_abort(&w->af);
        return ERR_FAIL;
    }
    return atomic_commit(&w->af, e);
}

void csv_abort(csv_writer_t *w)
{
    atomic_abort(&w->af);
}
