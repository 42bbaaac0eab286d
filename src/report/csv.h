/* csv: writing CSV files that are complete or absent (RFC 4180 quoting). */
#ifndef MXRLHF_REPORT_CSV_H
#define MXRLHF_REPORT_CSV_H

#include <stdbool.h>

#include "util/atomic_file.h"

typedef struct csv_writer {
    atomic_file_t af;
    int col;   /* cells written on the current row */
    int bad;   /* a write failed */
} csv_writer_t;

int csv_open(csv_writer_t *w, const char *path, err_t *e);

/* A cell; quoted only when it holds a comma, quote, CR or LF. NULL writes an empty cell. */
void csv_str(csv_writer_t *w, const char *s);
/* A number in the shortest form that reads back to the same double ("%.17g" trimmed);
 * NaN writes an empty cell, because a missing figure is not a number. */
void csv_num(csv_writer_t *w, double v);
/* A number with a fixed count of decimals (for human-facing tables). */
void csv_fixed(csv_writer_t *w, double v, int decimals);
void csv_int(csv_writer_t *w, long long v);
void csv_bool(csv_writer_t *w, bool v); /* "true" / "false" */
void csv_endrow(csv_writer_t *w);

/* Writes a whole header row from a NULL-terminated list. */
void csv_header(csv_writer_t *w, const char *const *names);

int csv_commit(csv_writer_t *w, err_t *e);
void csv_abort(csv_writer_t *w);

/* Shortest "%.*g" text of v that parses back to v exactly; buf >= 32 bytes. */
char *csv_format_double(double v, char *buf);

#endif
