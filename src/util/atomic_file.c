/* atomic_file: see atomic_file.h. */
#include "util/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
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
        sprintf(af->tmp_path, "%s.tmp-XXXXXX", path);
        fd = mkstemp(af->tmp_path);
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
    if (fclose(af->fp) != 0 && !bad) {
        bad = 1;
        err_errno(e, ERR_FAIL, "closing %s", af->path);
    }
    af->fp = NULL;
    if (!bad && rename(af->tmp_path, af->path) != 0) {
        bad = 1;
        err_errno(e, ERR_FAIL, "renaming %s to %s", af->tmp_path, af->path);
    }
    if (bad)
        unlink(af->tmp_path);
    else
        fsync_parent_dir(af->path);
    af_reset(af);
    return bad ? ERR_FAIL : ERR_OK;
}

void atomic_abort(atomic_file_t *af)
{
    if (af->fp)
        fclose(af->fp);
    if (af->tmp_path)
        unlink(af->tmp_path);
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
