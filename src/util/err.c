/* err: see err.h. */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int err_set(err_t *e, int code, const char *fmt, ...)
{
    if (!e || e->code != ERR_OK)
        return code;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return code;
}

int err_prefix(err_t *e, const char *fmt, ...)
{
    if (!e || e->code == ERR_OK)
        return e ? e->code : ERR_OK;
    char head[512], old[sizeof e->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    /* the separator is ours: a head that ends in one of its own would read "x: : msg" */
    size_t n = strlen(head);
    while (n && (head[n - 1] == ' ' || head[n - 1] == ':'))
        head[--n] = 0;
    memcpy(old, e->msg, sizeof old);
    snprintf(e->msg, sizeof e->msg, "%s: %s", head, old);
    return e->code;
}

int err_errno(err_t *e, int code, const char *fmt, ...)
{
    int saved = errno;
    if (!e || e->code != ERR_OK)
        return code;
    char head[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    return err_set(e, code, "%s: %s", head, strerror(saved));
}

void err_clear(err_t *e)
{
    if (e) {
        e->code = ERR_OK;
        e->msg[0] = 0;
    }
}

void *err_malloc(err_t *e, size_t n, const char *what)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        err_set(e, ERR_NOMEM, "out of memory allocating %zu bytes for %s", n, what);
    return p;
}

void *err_calloc(err_t *e, size_t count, size_t size, const char *what)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        err_set(e, ERR_NOMEM, "out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}
