/* atomic_file: see atomic_file.h. */
#include "util/atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void af_reset(atomic_file_t *af)
{
    free(af->path);
    free(af->tmp_path);
    af->path = af->tmp_path = NULL;
    af->fp = NULL;
}

#define TMP_MARK ".tmp-"

int atomic_remove_stale(const char *path)
{
    char *dcopy = strdup(path), *bcopy = strdup(path);
    const char *dir = dcopy ? dirname(dcopy) : NULL, *base = bcopy ? basename(bcopy) : NULL;
    DIR *d = dir ? opendir(dir) : NULL;
    int removed = 0;
    size_t bl = base ? strlen(base) : 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        const char *n = de->d_name;
        if (strncmp(n, base, bl) || strncmp(n + bl, TMP_MARK, sizeof TMP_MARK - 1))
            continue;
        /* a lock we can take means no writer holds the file: it is stale */
        int fd = openat(dirfd(d), n, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        struct stat a, b;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &a) == 0 &&
            fstatat(dirfd(d), n, &b, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(a.st_mode) &&
            a.st_dev == b.st_dev && a.st_ino == b.st_ino && unlinkat(dirfd(d), n, 0) == 0)
            removed++;
        close(fd); /* drops the lock */
    }
    if (d)
        closedir(d);
    free(dcopy);
    free(bcopy);
    return removed;
}

/* mkstemp + an exclusive lock on the temporary. A cleaner (atomic_remove_stale) that
 * took the lock between our mkstemp and our flock has removed the name by the time we
 * get the lock: then try again with a fresh name. */
static int locked_temp(char *tmpl, size_t base_len)
{
    for (int tries = 0; tries < 100; tries++) {
        strcpy(tmpl + base_len, "XXXXXX");
        int fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd < 0)
            return -1;
        while (flock(fd, LOCK_EX) != 0)
            if (errno != EINTR)
                return fd; /* no locks on this file system: no cleaner can take one either */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(tmpl, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            return fd;
        close(fd);
    }
    errno = EAGAIN;
    return -1;
}

static int af_begin(atomic_file_t *af, const char *path, const char *tmp_path, err_t *e)
{
    memset(af, 0, sizeof *af);
    af->path = strdup(path);
    af->tmp_path = tmp_path ? strdup(tmp_path) : malloc(strlen(path) + 16);
    if (!af->path || !af->tmp_path) {
        af_reset(af);
        return err_set(e, ERR_NOMEM, "out of memory opening %s", path);
    }
    int fd;
    if (tmp_path) {
        fd = open(af->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    } else {
        atomic_remove_stale(path);
        sprintf(af->tmp_path, "%s" TMP_MARK, path);
        fd = locked_temp(af->tmp_path, strlen(af->tmp_path));
        if (fd >= 0)
            (void)fchmod(fd, 0644); /* mkstemp makes 0600; outputs are for sharing */
    }
    if (fd < 0) {
        err_errno(e, ERR_FAIL, "cannot create %s (temporary for %s)", af->tmp_path, path);
        af_reset(af);
        return ERR_FAIL;
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        err_errno(e, ERR_FAIL, "fdopen %s", af->tmp_path);
        close(fd);
        unlink(af->tmp_path);
        af_reset(af);
        return ERR_FAIL;
    }
    return ERR_OK;
}

int atomic_open(atomic_file_t *af, const char *path, err_t *e)
{
    return af_begin(af, path, NULL, e);
}

int atomic_open_as(atomic_file_t *af, const char *path, const char *tmp_path, err_t *e)
{
    return af_begin(af, path, tmp_path, e);
}

static void fsync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some file systems refuse directory fsync */
        close(fd);
    }
    free(copy);
}

int atomic_commit(atomic_file_t *af, err_t *e)
{
    if (!af->fp)
        return err_set(e, ERR_FAIL, "atomic_commit on a file that is not open");
    int bad = ferror(af->fp) || fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0;
    if (bad)
        err_errno(e, ERR_FAIL, "writing %s", af->path);
    /* renamed while still open, so the temporary is locked until it has its final name
     * (atomic_remove_stale never sees it unlocked) */
    if (!bad && rename(af->tmp_path, af->path) != 0) {
        bad = 1;
        err_errno(e, ERR_FAIL, "renaming %s to %s", af->tmp_path, af->path);
    }
    if (bad)
        unlink(af->tmp_path);
    if (fclose(af->fp) != 0 && !bad) {
        bad = 1; /* the bytes were flushed and synced; the file is in place */
        err_errno(e, ERR_FAIL, "closing %s", af->path);
    }
    af->fp = NULL;
    if (!bad)
        fsync_parent_dir(af->path);
    af_reset(af);
    return bad ? ERR_FAIL : ERR_OK;
}

void atomic_abort(atomic_file_t *af)
{
    if (af->tmp_path)
        unlink(af->tmp_path); /* before the close drops the lock */
    if (af->fp)
        fclose(af->fp);
    af_reset(af);
}

int atomic_write(const char *path, const void *buf, size_t n, err_t *e)
{
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    if (n && fwrite(buf, 1, n, af.fp) != n) {
        err_errno(e, ERR_FAIL, "writing %s", path);
        atomic_abort(&af);
        return ERR_FAIL;
    }
    return atomic_commit(&af, e);
}
