/* testutil: see testutil.h. */
#include "support/testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int test_in_ci(void)
{
    const char *ci = getenv("CI");
    return ci && (!strcmp(ci, "true") || !strcmp(ci, "1"));
}

const char *test_shared_path(const char *rel)
{
    static char buf[8][4096];
    static int slot;
    const char *root = getenv("MXRLHF_SHARED");
    if (!root || !*root)
        root = "../shared";
    char *p = buf[slot++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", root, rel);
    struct stat st;
    return stat(p, &st) == 0 ? p : NULL;
}

const char *test_fixture_path(const char *rel)
{
    static char buf[8][4096];
    static int slot;
    const char *root = getenv("MXRLHF_FIXTURES");
    struct stat st;
#ifdef MXRLHF_FIXTURES_DIR
    if ((!root || !*root) && stat(MXRLHF_FIXTURES_DIR, &st) == 0)
        root = MXRLHF_FIXTURES_DIR;
#endif
    if (!root || !*root)
        root = "tests/fixtures";
    char *p = buf[slot++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", root, rel);
    return p;
}

char *test_mkdtemp(void)
{
    const char *t = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/mxrlhf-test-XXXXXX", t && *t ? t : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void test_rmtree(const char *dir)
{
    if (dir)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int test_cli(char **out, const char *fmt, ...)
{
    const char *bin = getenv("MXRLHF_BIN");
    if (!bin || !*bin)
        bin = "build/asan/mxrlhf";
    char args[8192], cmd[12288];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char logpath[] = "/tmp/mxrlhf-cli-XXXXXX";
    int fd = mkstemp(logpath);
    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>&1", bin, args, logpath);
    int st = system(cmd);
    if (out) {
        FILE *f = fopen(logpath, "rb");
        assert_non_null(f);
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        *out = malloc((size_t)n + 1);
        size_t got = fread(*out, 1, (size_t)n, f);
        (*out)[got] = 0;
        fclose(f);
    }
    unlink(logpath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

uint32_t test_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

void test_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}
