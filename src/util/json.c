/* json: see json.h. */
#include "util/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/atomic_file.h"
#include "util/fs.h"

/* 1-based line and column of byte `at` of text. */
static void line_col(const char *text, size_t at, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at; i++) {
        if (text[i] == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

long json_find_nul(const char *text, size_t len, bool *escape)
{
    *escape = false;
    const char *z = memchr(text, 0, len);
    size_t lim = z ? (size_t)(z - text) : len;
    /* backslash runs: "\\u0000" is an escaped backslash and the letters u0000 */
    size_t run = 0;
    for (size_t i = 0; i < lim; i++) {
        if (text[i] != '\\') {
            run = 0;
            continue;
        }
        if (run++ % 2 == 0 && i + 6 <= lim && !memcmp(text + i + 1, "u0000", 5)) {
            *escape = true;
            return (long)i;
        }
    }
    return z ? (long)lim : -1;
}

/* Object paths for messages: keys joined by '.', array items as [i]. */
static int unique_in(const cJSON *node, char *path, size_t cap, size_t plen, const char *ctx,
                     err_t *e);

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int duplicate(const char *ctx, const char *key, const char *path, err_t *e)
{
    return err_set(e, ERR_INPUT, "%s: key \"%s%s%.200s\" appears twice (which value is meant "
                   "cannot be told)", ctx, path, path[0] ? "." : "", key);
}

static int keys_unique(const cJSON *obj, const char *path, const char *ctx, err_t *e)
{
    size_t n = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        n++;
    if (n < 2)
        return ERR_OK;
    if (n <= 16) {
        for (const cJSON *a = obj->child; a; a = a->next)
            for (const cJSON *b = a->next; b; b = b->next)
                if (a->string && b->string && !strcmp(a->string, b->string))
                    return duplicate(ctx, a->string, path, e);
        return ERR_OK;
    }
    const char **k = malloc(n * sizeof *k);
    if (!k)
        return err_set(e, ERR_NOMEM, "%s: out of memory checking %zu keys", ctx, n);
    size_t m = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string)
            k[m++] = c->string;
    qsort(k, m, sizeof *k, cmp_key);
    int rc = ERR_OK;
    for (size_t i = 1; i < m && !rc; i++)
        if (!strcmp(k[i - 1], k[i]))
            rc = duplicate(ctx, k[i], path, e);
    free(k);
    return rc;
}

static int unique_in(const cJSON *node, char *path, size_t cap, size_t plen, const char *ctx,
                     err_t *e)
{
    bool obj = cJSON_IsObject(node);
    if (!obj && !cJSON_IsArray(node))
        return ERR_OK;
    path[plen] = 0;
    if (obj && keys_unique(node, path, ctx, e))
        return e ? e->code : ERR_INPUT;
    size_t i = 0;
    for (const cJSON *c = node->child; c; c = c->next, i++) {
        if (!cJSON_IsObject(c) && !cJSON_IsArray(c))
            continue;
        int k = obj ? snprintf(path + plen, cap - plen, "%s%s", plen ? "." : "", c->string)
                    : snprintf(path + plen, cap - plen, "[%zu]", i);
        size_t nl = k < 0 ? plen : plen + (size_t)k;
        if (nl >= cap)
            nl = cap - 1;
        int rc = unique_in(c, path, cap, nl, ctx, e);
        if (rc)
            return rc;
    }
    path[plen] = 0;
    return ERR_OK;
}

int json_check_unique_keys(const cJSON *root, const char *ctx, err_t *e)
{
    char path[512];
    path[0] = 0;
    return root ? unique_in(root, path, sizeof path, 0, ctx, e) : ERR_OK;
}

/* A NUL byte or \u0000 escape in text[0, at): ERR_INPUT naming its line and column. */
static int nul_before(const char *text, size_t at, const char *ctx, err_t *e)
{
    bool esc;
    long nul = json_find_nul(text, at, &esc);
    if (nul < 0)
        return ERR_OK;
    int line, col;
    line_col(text, (size_t)nul, &line, &col);
    return err_set(e, ERR_INPUT, "%s: line %d, column %d: %s (a text cannot hold NUL bytes)", ctx,
                   line, col, esc ? "a \\u0000 escape" : "a NUL byte");
}

int json_parse(const char *text, size_t len, const char *ctx, cJSON **out, err_t *e)
{
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    /* cJSON reports where it stopped (after the document, or at the error); what follows
     * a document is ignored, as before */
    size_t at = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
    if (*out) {
        int rc = nul_before(text, at, ctx, e);
        if (!rc)
            rc = json_check_unique_keys(*out, ctx, e);
        if (rc) {
            cJSON_Delete(*out);
            *out = NULL;
        }
        return rc;
    }
    if (nul_before(text, at < len ? at + 1 : len, ctx, e))
        return ERR_INPUT;
    int line, col;
    line_col(text, at, &line, &col);
    return err_set(e, ERR_INPUT, "%s: invalid JSON at line %d, column %d", ctx, line, col);
}

int json_load_file(const char *path, size_t max_bytes, cJSON **out, err_t *e)
{
    char *text;
    size_t len;
    *out = NULL;
    int rc = fs_read_all(path, max_bytes, &text, &len, e);
    if (rc)
        return rc;
    rc = json_parse(text, len, path, out, e);
    free(text);
    return rc;
}

static const cJSON *field(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static int missing(const char *ctx, const char *key, const char *what, err_t *e)
{
    return err_set(e, ERR_INPUT, "%s: field \"%s\" is missing (expected %s)", ctx, key, what);
}

static int wrong(const char *ctx, const char *key, const char *what, err_t *e)
{
    return err_set(e, ERR_INPUT, "%s: field \"%s\": expected %s", ctx, key, what);
}

static int get_int(const cJSON *v, const char *key, const char *ctx, long long *out, err_t *e)
{
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0)
        return wrong(ctx, key, "an integer", e);
    *out = (long long)d;
    return ERR_OK;
}

int json_req_int(const cJSON *obj, const char *key, const char *ctx, long long *out, err_t *e)
{
    const cJSON *v = field(obj, key);
    return v ? get_int(v, key, ctx, out, e) : missing(ctx, key, "an integer", e);
}

int json_req_double(const cJSON *obj, const char *key, const char *ctx, double *out, err_t *e)
{
    const cJSON *v = field(obj, key);
    if (!v)
        return missing(ctx, key, "a number", e);
    if (!cJSON_IsNumber(v))
        return wrong(ctx, key, "a number", e);
    *out = v->valuedouble;
    return ERR_OK;
}

int json_req_bool(const cJSON *obj, const char *key, const char *ctx, bool *out, err_t *e)
{
    const cJSON *v = field(obj, key);
    if (!v)
        return missing(ctx, key, "true or false", e);
    if (!cJSON_IsBool(v))
        return wrong(ctx, key, "true or false", e);
    *out = cJSON_IsTrue(v);
    return ERR_OK;
}

int json_req_string(const cJSON *obj, const char *key, const char *ctx, const char **out,
                    err_t *e)
{
    const cJSON *v = field(obj, key);
    if (!v)
        return missing(ctx, key, "a string", e);
    if (!cJSON_IsString(v))
        return wrong(ctx, key, "a string", e);
    *out = v->valuestring;
    return ERR_OK;
}

int json_opt_int(const cJSON *obj, const char *key, const char *ctx, long long dflt,
                 long long *out, err_t *e)
{
    const cJSON *v = field(obj, key);
    *out = dflt;
    return (!v || cJSON_IsNull(v)) ? ERR_OK : get_int(v, key, ctx, out, e);
}

int json_opt_double(const cJSON *obj, const char *key, const char *ctx, double dflt,
                    double *out, err_t *e)
{
    const cJSON *v = field(obj, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v))
        return ERR_OK;
    if (!cJSON_IsNumber(v))
        return wrong(ctx, key, "a number", e);
    *out = v->valuedouble;
    return ERR_OK;
}

int json_opt_bool(const cJSON *obj, const char *key, const char *ctx, bool dflt, bool *out,
                  err_t *e)
{
    const cJSON *v = field(obj, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v))
        return ERR_OK;
    if (!cJSON_IsBool(v))
        return wrong(ctx, key, "true or false", e);
    *out = cJSON_IsTrue(v);
    return ERR_OK;
}

int json_opt_string(const cJSON *obj, const char *key, const char *ctx, const char *dflt,
                    const char **out, err_t *e)
{
    const cJSON *v = field(obj, key);
    *out = dflt;
    if (!v || cJSON_IsNull(v))
        return ERR_OK;
    if (!cJSON_IsString(v))
        return wrong(ctx, key, "a string", e);
    *out = v->valuestring;
    return ERR_OK;
}

int json_write_file(const char *path, const cJSON *root, bool pretty, err_t *e)
{
    char *text = pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root);
    if (!text)
        return err_set(e, ERR_NOMEM, "out of memory formatting %s", path);
    size_t n = strlen(text);
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (!rc) {
        if (fwrite(text, 1, n, af.fp) != n || fputc('\n', af.fp) == EOF) {
            err_errno(e, ERR_FAIL, "writing %s", path);
            atomic_abort(&af);
            rc = ERR_FAIL;
        } else {
            rc = atomic_commit(&af, e);
        }
    }
    free(text);
    return rc;
}
