/* csv_read: reading the CSV files our stages write (and users edit), RFC 4180: quoted
 * cells may hold commas, doubled quotes and line breaks; CRLF or LF line ends; the first
 * row is the header. Cells are looked up by column name, so readers do not depend on
 * column order; a missing column or a malformed cell is an error naming file, line and
 * column. */
#ifndef MXRLHF_REPORT_CSV_READ_H
#define MXRLHF_REPORT_CSV_READ_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

typedef struct csv_table {
    char *path;
    int ncols, nrows;
    char **header;     /* ncols names */
    char **cells;      /* nrows x ncols, row-major; "" for empty cells */
    int *line;         /* nrows: 1-based line where each row starts */
    char *storage;     /* owns the cell text */
} csv_table_t;

/* Parses text (len bytes); `ctx` names it in errors. Every row must have the header's
 * number of cells. */
int csv_parse(const char *text, size_t len, const char *ctx, csv_table_t *out, err_t *e);
int csv_load(const char *path, csv_table_t *out, err_t *e);
void csv_table_free(csv_table_t *t);

/* Index of a column, or -1. */
int csv_col(const csv_table_t *t, const char *name);
/* Like csv_col but a missing column is an ERR_INPUT naming the file and the column. */
int csv_require_col(const csv_table_t *t, const char *name, int *col, err_t *e);

const char *csv_cell(const csv_table_t *t, int row, int col);

/* A numeric cell: "" is NaN (a missing figure); anything not a number is an error
 * naming file, line and column. */
int csv_cell_double(const csv_table_t *t, int row, int col, double *out, err_t *e);
/* "true" / "false" (an error otherwise). */
int csv_cell_bool(const csv_table_t *t, int row, int col, bool *out, err_t *e);

#endif
