/* fs: see fs.h. */
#include "util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
