/* err: one error message that travels with a return code.
 *
 * Functions that can fail take an `err_t *` and return a status (0 on success,
 * one of the ERR_* codes otherwise). The message names the file, the field and what
 * was expected; the top level (cli/) decides how to print it and which exit code to
 * use. There is no global error state: each caller owns its err_t.
 */
#ifndef MXRLHF_UTIL_ERR_H
#define MXRLHF_UTIL_ERR_H

#include <stddef.h>

/* Status codes. They map onto the command's exit codes (see docs/cli.md). */
enum {
    ERR_OK = 0,
    ERR_FAIL = 1,        /* the work failed: I/O error, numeric blow-up, device fault */
    ERR_INPUT = 2,       /* bad input: usage, unknown name, malformed or lying file  */
    ERR_UNAVAILABLE = 3, /* a requested resource is absent (sensor, device, library) */
    ERR_NOMEM = 4,       /* allocation failed                                        */
    ERR_INTERRUPTED = 130
};

typedef struct err {
    int code;          /* ERR_OK when nothing happened */
    char msg[1024];
} err_t;

#define ERR_INIT {ERR_OK, {0}}

/* Records the first error only (later ones are usually consequences) and returns
 * `code`, so callers can write `return err_set(e, ERR_INPUT, "...")`. `e` may be NULL. */
int err_set(err_t *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes context to an existing message: err_prefix(e, "loading %s", path) gives
 * "loading x: <msg>" (a trailing ": " in the head is dropped, not doubled); returns
 * e->code. */
int err_prefix(err_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The errno text appended: err_errno(e, ERR_FAIL, "open %s", path) -> "open x: No such file". */
int err_errno(err_t *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void err_clear(err_t *e);

/* malloc/calloc that record ERR_NOMEM with what was being allocated. */
void *err_malloc(err_t *e, size_t n, const char *what);
void *err_calloc(err_t *e, size_t count, size_t size, const char *what);

#endif
