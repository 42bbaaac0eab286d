/* fs: small file-system helpers shared by every layer. */
#ifndef MXRLHF_UTIL_FS_H
#define MXRLHF_UTIL_FS_H

#include <stddef.h>

#include "util/err.h"

/* Reads a whole file into a NUL-terminated buffer (the NUL is not counted in *len).
 * Refuses files larger than max_bytes, naming the file. Caller frees. */
int fs_read_all(const char *path, size_t max_bytes, char **out, size_t *len, err_t *e);

/* mkdir -p; existing directories are fine. */
int fs_mkdir_p(const char *path, err_t *e);

int fs_exists(const char *path);
int fs_is_dir(const char *path);

/* Joins a and b with one '/' into a fresh string (NULL on allocation failure). */
char *fs_join(const char *a, const char *b);

#endif
