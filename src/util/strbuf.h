/* strbuf: a growable NUL-terminated string. An allocation failure is remembered (oom)
 * and later appends do nothing, so builders check once, at the end. */
#ifndef MXRLHF_UTIL_STRBUF_H
#define MXRLHF_UTIL_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

typedef struct strbuf {
    char *p;       /* NUL-terminated once anything was added */
    size_t n, cap;
    bool oom;
} strbuf_t;

void strbuf_add(strbuf_t *b, const char *s, size_t n);
void strbuf_puts(strbuf_t *b, const char *s);
void strbuf_printf(strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the text to *out (an empty string if nothing was added) and resets b; on an
 * earlier allocation failure frees it and returns ERR_NOMEM naming `what`. */
int strbuf_finish(strbuf_t *b, char **out, const char *what, err_t *e);

void strbuf_free(strbuf_t *b);

#endif
