/* fs: small file-system helpers shared by every layer. */
#ifndef MXRLHF_UTIL_FS_H
#define MXRLHF_UTIL_FS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Reads a whole file into a NUL-terminated buffer (the NUL is not counted in *len).
 * Refuses files larger than max_bytes, naming the file. Caller frees. */
int fs_read_all(const char *path, size_t max_bytes, char **out, size_t *len, err_t *e);

/* Feeds a file's bytes into a running zlib CRC-32 (*crc: crc32(0, NULL, 0) to start) and
 * adds its size to *bytes; the first two bytes go to head2 when it is not NULL (zeros for
 * a shorter file). A missing file is ERR_INPUT naming it. */
int fs_crc32(const char *path, uint32_t *crc, uint64_t *bytes, unsigned char head2[2], err_t *e);

/* mkdir -p; existing directories are fine. */
int fs_mkdir_p(const char *path, err_t *e);

int fs_exists(const char *path);
int fs_is_dir(const char *path);
/* Removes a directory and everything under it (nothing when it does not exist). */
int fs_rmtree(const char *dir, err_t *e);

/* Joins a and b with one '/' into a fresh string (NULL on allocation failure). */
char *fs_join(const char *a, const char *b);

/* ---- one writer per directory ---------------------------------------------------------- */

/* The lock file's name inside a locked directory. */
#define FS_LOCK_NAME ".mxrlhf.lock"

typedef struct fs_lock {
    int fd;       /* -1 when not held */
    char *path;   /* DIR/.mxrlhf.lock */
} fs_lock_t;

/* Takes an exclusive lock on `dir` (created if missing) for the calling process: two runs
 * writing one output directory would mix their files. flock(2) on DIR/.mxrlhf.lock, whose
 * text names the holder (pid, `holder` such as "mxrlhf ppo", start time in UTC). The
 * kernel drops the lock when the process ends however it ends (a stale file is simply
 * taken over); fs_unlock_dir releases it earlier and removes the file. The descriptor is
 * close-on-exec, but a fork()ed child holds the lock with its parent. A second taker, in
 * another process or this one, gets ERR_UNAVAILABLE: "DIR is in use by pid N (mxrlhf ppo,
 * started 2026-12-07 10:00:00 UTC)". */
int fs_lock_dir(const char *dir, const char *holder, fs_lock_t *lock, err_t *e);

/* Releases the lock and removes the lock file. Safe on a lock that is not held (zeroed,
 * or after fs_lock_dir failed). */
void fs_unlock_dir(fs_lock_t *lock);

#endif
