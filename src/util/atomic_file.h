/* atomic_file: every file we write is complete or absent.
 *
 * Data goes to a temporary file in the destination's directory; commit flushes it,
 * fsyncs it and renames it over the destination (rename is atomic within a file
 * system), then fsyncs the directory. Abort, or a crash, leaves the destination as it
 * was and at most a stray temporary "<path>.tmp-XXXXXX" that names its origin.
 *
 * Stray temporaries do not pile up: a writer holds an exclusive flock(2) on its
 * temporary from creation to rename, and atomic_open first removes the temporaries of
 * the same destination that nobody holds (their writer died: killed, crashed, or the
 * machine went down; the kernel drops the lock with the process). A checkpoint killed
 * just before its rename is therefore cleaned up by the next writer of that file (the
 * resumed run). atomic_remove_stale does the same for a destination about to be
 * deleted. Temporaries of live writers, in this or another process, are left alone.
 */
#ifndef MXRLHF_UTIL_ATOMIC_FILE_H
#define MXRLHF_UTIL_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "util/err.h"

typedef struct atomic_file {
    FILE *fp;          /* write through this */
    char *path;        /* destination */
    char *tmp_path;    /* where the bytes are until commit */
} atomic_file_t;

/* Removes stale temporaries of `path` (see above), then opens a fresh temporary
 * "<path>.tmp-XXXXXX" for writing, locked until commit or abort. */
int atomic_open(atomic_file_t *af, const char *path, err_t *e);

/* Removes the temporaries "<path>.tmp-*" that no live writer holds; returns how many.
 * Best effort (an unreadable directory removes nothing). */
int atomic_remove_stale(const char *path);

/* Like atomic_open, but the temporary has the fixed name `tmp_path` (for example
 * "power_log.csv.partial", which a user may watch while a run goes on). */
int atomic_open_as(atomic_file_t *af, const char *path, const char *tmp_path, err_t *e);

/* Flush, fsync, close, rename. On failure the temporary is removed. Frees af. */
int atomic_commit(atomic_file_t *af, err_t *e);

/* Closes and removes the temporary; the destination is untouched. Safe on a zeroed af. */
void atomic_abort(atomic_file_t *af);

/* One-shot: writes `n` bytes to `path` atomically. */
int atomic_write(const char *path, const void *buf, size_t n, err_t *e);

#endif
