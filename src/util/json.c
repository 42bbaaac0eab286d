/* json: see json.h. */
#include "util/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/atomic_file.h"
#include "util/fs.h"

int json_parse(const char *text, size_t len, const char *ctx, cJSON **out, err_t *e)
{
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (*out)
        return ERR_OK;
    /* cJSON reports where it stopped; turn that into line:column for people. */
    size_t at = (end && end >= text && end <= text + len) ? (size_t)(end - text) : 0;
    int line = 1, col = 1;
    for (size_t i = 0; i < at; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
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
