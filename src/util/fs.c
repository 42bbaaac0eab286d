/* fs: see fs.h. */
#include "util/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

int fs_crc32(const char *path, uint32_t *crc, uint64_t *bytes, unsigned char head2[2], err_t *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_errno(e, errno == ENOENT ? ERR_INPUT : ERR_FAIL, "open %s", path);
    unsigned char buf[1 << 16];
    uLong c = *crc;
    uint64_t n = 0;
    size_t k;
    if (head2)
        head2[0] = head2[1] = 0;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; head2 && i < k && n + i < 2; i++)
            head2[n + i] = buf[i];
        c = crc32(c, buf, (uInt)k);
        n += k;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return err_errno(e, ERR_FAIL, "read %s", path);
    *crc = (uint32_t)c;
    *bytes += n;
    return ERR_OK;
}

int fs_read_all(const char *path, size_t max_bytes, char **out, size_t *len, err_t *e)
{
    *out = NULL;
    if (len)
        *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_errno(e, ERR_INPUT, "cannot open %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, ERR_INPUT, "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        fclose(f);
        return err_set(e, ERR_INPUT, "%s: %lld bytes, more than the %zu allowed", path,
                       (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return err_set(e, ERR_NOMEM, "out of memory reading %s", path);
    }
    if (n && fread(buf, 1, n, f) != n) {
        free(buf);
        fclose(f);
        return err_errno(e, ERR_FAIL, "reading %s", path);
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    if (len)
        *len = n;
    return ERR_OK;
}

int fs_mkdir_p(const char *path, err_t *e)
{
    char *p = strdup(path);
    if (!p)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            err_errno(e, ERR_FAIL, "cannot create directory %s", p);
            free(p);
            return ERR_FAIL;
        }
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        err_errno(e, ERR_FAIL, "cannot create directory %s", p);
        free(p);
        return ERR_FAIL;
    }
    free(p);
    if (!fs_is_dir(path))
        return err_set(e, ERR_FAIL, "%s exists and is not a directory", path);
    return ERR_OK;
}

int fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fs_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *fs_join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    int slash = la > 0 && a[la - 1] != '/';
    char *r = malloc(la + lb + 2);
    if (!r)
        return NULL;
    memcpy(r, a, la);
    if (slash)
        r[la] = '/';
    memcpy(r + la + slash, b, lb + 1);
    return r;
}

/* ---- one writer per directory ---------------------------------------------------------- */

/* "DIR is in use by ...", from the holder's lock file (read through our own descriptor). */
static int in_use(const char *dir, int fd, err_t *e)
{
    char text[600];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    text[n > 0 ? n : 0] = 0;
    long pid = 0;
    char holder[256] = "", started[64] = "";
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        if (!strncmp(line, "pid=", 4))
            pid = strtol(line + 4, NULL, 10);
        else if (!strncmp(line, "holder=", 7))
            snprintf(holder, sizeof holder, "%s", line + 7);
        else if (!strncmp(line, "started=", 8))
            snprintf(started, sizeof started, "%s", line + 8);
    }
    if (pid <= 0) /* it holds the lock but has not written its name yet */
        return err_set(e, ERR_UNAVAILABLE, "%s is in use by another process (its lock file %s "
                       "does not name it yet)", dir, FS_LOCK_NAME);
    return err_set(e, ERR_UNAVAILABLE, "%s is in use by pid %ld (%s, started %s): wait for it "
                   "to finish or use another directory", dir, pid, holder[0] ? holder : "?",
                   started[0] ? started : "?");
}

int fs_lock_dir(const char *dir, const char *holder, fs_lock_t *lock, err_t *e)
{
    lock->fd = -1;
    lock->path = NULL;
    if (fs_mkdir_p(dir, e))
        return e ? e->code : ERR_FAIL;
    char *path = fs_join(dir, FS_LOCK_NAME);
    if (!path)
        return err_set(e, ERR_NOMEM, "out of memory");
    /* An unlocking holder removes the file; a taker that opened the old file then holds a
     * lock on a name that no longer exists, so it checks and tries again. */
    for (int tries = 0; tries < 100; tries++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0) {
            int rc = err_errno(e, ERR_FAIL, "cannot open the lock file %s", path);
            free(path);
            return rc;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int rc = errno == EWOULDBLOCK ? in_use(dir, fd, e)
                                          : err_errno(e, ERR_FAIL, "cannot lock %s", path);
            close(fd);
            free(path);
            return rc;
        }
        struct stat a, b;
        if (fstat(fd, &a) != 0 || stat(path, &b) != 0 || a.st_dev != b.st_dev ||
            a.st_ino != b.st_ino) {
            close(fd);
            continue;
        }
        char when[64] = "?";
        time_t now = time(NULL);
        struct tm tm;
        if (gmtime_r(&now, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        char text[600];
        int n = snprintf(text, sizeof text, "pid=%ld\nholder=%.300s\nstarted=%s\n",
                         (long)getpid(), holder ? holder : "?", when);
        if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)n, 0) != n) {
            int rc = err_errno(e, ERR_FAIL, "writing the lock file %s", path);
            unlink(path);
            close(fd);
            free(path);
            return rc;
        }
        lock->fd = fd;
        lock->path = path;
        return ERR_OK;
    }
    free(path);
    return err_set(e, ERR_FAIL, "%s: the lock file keeps being replaced", dir);
}

void fs_unlock_dir(fs_lock_t *lock)
{
    if (!lock || !lock->path) /* never taken (zeroed, or fs_lock_dir failed) */
        return;
    if (lock->fd >= 0) {
        unlink(lock->path); /* while still held, so no taker keeps the old file */
        close(lock->fd);
    }
    free(lock->path);
    lock->fd = -1;
    lock->path = NULL;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int fs_rmtree(const char *dir, err_t *e)
{
    if (!fs_exists(dir))
        return ERR_OK;
    if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return err_errno(e, ERR_FAIL, "removing %s", dir);
    return ERR_OK;
}
