/* csv_read: see csv_read.h. One pass splits the text into cells in place. */
#include "report/csv_read.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"

/* Cap on file size: our CSVs are tables of at most a few thousand rows. */
#define CSV_MAX_BYTES (256u << 20)

void csv_table_free(csv_table_t *t)
{
    free(t->path);
    free(t->header);
    free(t->cells);
    free(t->line);
    free(t->storage);
    memset(t, 0, sizeof *t);
}

typedef struct cellvec {
    char **v;
    int *line;
    size_t n, cap;
} cellvec_t;

static int push(cellvec_t *c, char *cell, int line)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        char **nv = realloc(c->v, cap * sizeof *nv);
        if (!nv)
            return -1;
        c->v = nv;
        int *nl = realloc(c->line, cap * sizeof *nl);
        if (!nl)
            return -1;
        c->line = nl;
        c->cap = cap;
    }
    c->v[c->n] = cell;
    c->line[c->n] = line;
    c->n++;
    return 0;
}

int csv_parse(const char *text, size_t len, const char *ctx, csv_table_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    char *s = malloc(len + 1);
    cellvec_t cells = {0};
    int *row_len = NULL;
    size_t nrow = 0, row_cap = 0;
    int rc = ERR_OK;
    if (!s) {
        rc = err_set(e, ERR_NOMEM, "out of memory reading %s", ctx);
        goto fail;
    }
    memcpy(s, text, len);
    s[len] = 0;
    if (memchr(s, 0, len)) {
        rc = err_set(e, ERR_INPUT, "%s: contains a NUL byte (not a text CSV file)", ctx);
        goto fail;
    }
    /* Cells are rewritten in place: quoted text is unescaped into the same buffer (it only
     * shrinks), and each cell is NUL-terminated where its delimiter was. */
    size_t i = 0;
    int line = 1;
    while (i < len) {
        int start_line = line, ncells = 0;
        for (;;) {
            char *cell = s + i, *w = cell;
            if (i < len && s[i] == '"') {
                i++;
                for (;;) {
                    if (i >= len) {
                        rc = err_set(e, ERR_INPUT, "%s: line %d: quoted cell never closed", ctx,
                                     start_line);
                        goto fail;
                    }
                    if (s[i] == '"') {
                        if (i + 1 < len && s[i + 1] == '"') {
                            *w++ = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (s[i] == '\n')
                        line++;
                    *w++ = s[i++];
                }
                if (i < len && s[i] != ',' && s[i] != '\n' && s[i] != '\r') {
                    rc = err_set(e, ERR_INPUT, "%s: line %d: text after a closing quote", ctx,
                                 line);
                    goto fail;
                }
            } else {
                while (i < len && s[i] != ',' && s[i] != '\n' && s[i] != '\r') {
                    if (s[i] == '"') {
                        rc = err_set(e, ERR_INPUT, "%s: line %d: quote inside an unquoted cell",
                                     ctx, line);
                        goto fail;
                    }
                    *w++ = s[i++];
                }
            }
            char delim = i < len ? s[i] : '\n';
            *w = 0;
            if (push(&cells, cell, start_line)) {
                rc = err_set(e, ERR_NOMEM, "out of memory reading %s", ctx);
                goto fail;
            }
            ncells++;
            if (delim == ',') {
                i++;
                if (i >= len) { /* a trailing comma ends the file: one more empty cell */
                    if (push(&cells, s + len, start_line)) {
                        rc = err_set(e, ERR_NOMEM, "out of memory reading %s", ctx);
                        goto fail;
                    }
                    ncells++;
                    break;
                }
                continue;
            }
            if (delim == '\r') {
                i++;
                if (i < len && s[i] == '\n')
                    i++;
            } else {
                i++;
            }
            line++;
            break;
        }
        if (nrow == row_cap) {
            row_cap = row_cap ? 2 * row_cap : 64;
            int *nr = realloc(row_len, row_cap * sizeof *nr);
            if (!nr) {
                rc = err_set(e, ERR_NOMEM, "out of memory reading %s", ctx);
                goto fail;
            }
            row_len = nr;
        }
        row_len[nrow++] = ncells;
    }
    if (nrow == 0) {
        rc = err_set(e, ERR_INPUT, "%s: empty file (expected a header row)", ctx);
        goto fail;
    }
    int ncols = row_len[0];
    size_t at = 0;
    for (size_t r = 0; r < nrow; r++) {
        if (row_len[r] != ncols) {
            rc = err_set(e, ERR_INPUT, "%s: line %d: %d cells, the header has %d", ctx,
                         cells.line[at], row_len[r], ncols);
            goto fail;
        }
        at += (size_t)row_len[r];
    }
    for (int c = 0; c < ncols; c++)
        for (int d = 0; d < c; d++)
            if (!strcmp(cells.v[c], cells.v[d])) {
                rc = err_set(e, ERR_INPUT, "%s: column \"%s\" appears twice in the header", ctx,
                             cells.v[c]);
                goto fail;
            }
    out->path = strdup(ctx);
    out->ncols = ncols;
    out->nrows = (int)nrow - 1;
    out->header = malloc((size_t)ncols * sizeof *out->header);
    out->cells = malloc(((size_t)out->nrows * ncols + 1) * sizeof *out->cells);
    out->line = malloc(((size_t)out->nrows + 1) * sizeof *out->line);
    if (!out->path || !out->header || !out->cells || !out->line) {
        rc = err_set(e, ERR_NOMEM, "out of memory reading %s", ctx);
        goto fail;
    }
    memcpy(out->header, cells.v, (size_t)ncols * sizeof *out->header);
    memcpy(out->cells, cells.v + ncols, (size_t)out->nrows * ncols * sizeof *out->cells);
    for (int r = 0; r < out->nrows; r++)
        out->line[r] = cells.line[(size_t)(r + 1) * ncols];
    out->storage = s;
    free(cells.v);
    free(cells.line);
    free(row_len);
    return ERR_OK;
fail:
    free(s);
    free(cells.v);
    free(cells.line);
    free(row_len);
    out->storage = NULL;
    csv_table_free(out);
    return rc;
}

int csv_load(const char *path, csv_table_t *out, err_t *e)
{
    char *text;
    size_t len;
    memset(out, 0, sizeof *out);
    int rc = fs_read_all(path, CSV_MAX_BYTES, &text, &len, e);
    if (rc)
        return rc;
    rc = csv_parse(text, len, path, out, e);
    free(text);
    return rc;
}

int csv_col(const csv_table_t *t, const char *name)
{
    for (int c = 0; c < t->ncols; c++)
        if (!strcmp(t->header[c], name))
            return c;
    return -1;
}

int csv_require_col(const csv_table_t *t, const char *name, int *col, err_t *e)
{
    *col = csv_col(t, name);
    if (*col < 0)
        return err_set(e, ERR_INPUT, "%s: column \"%s\" is missing", t->path, name);
    return ERR_OK;
}

const char *csv_cell(const csv_table_t *t, int row, int col)
{
    return t->cells[(size_t)row * t->ncols + col];
}

int csv_cell_double(const csv_table_t *t, int row, int col, double *out, err_t *e)
{
    const char *s = csv_cell(t, row, col);
    if (!*s) {
        *out = NAN;
        return ERR_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE)
        return err_set(e, ERR_INPUT, "%s: line %d, column \"%s\": expected a number, got \"%s\"",
                       t->path, t->line[row], t->header[col], s);
    *out = v;
    return ERR_OK;
}

int csv_cell_bool(const csv_table_t *t, int row, int col, bool *out, err_t *e)
{
    const char *s = csv_cell(t, row, col);
    if (!strcmp(s, "true"))
        *out = true;
    else if (!strcmp(s, "false"))
        *out = false;
    else
        return err_set(e, ERR_INPUT,
                       "%s: line %d, column \"%s\": expected true or false, got \"%s\"", t->path,
                       t->line[row], t->header[col], s);
    return ERR_OK;
}
