/* common: helpers the profile sweeps share (common.h). */
#include "profile/common.h"

#include "mx/mx.h"
#include "precision/precision.h"
#include "util/fs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

OPT_ENUM_FUNCS(profile_format_enum, mx_format_t, MX_FORMAT_COUNT, mx_format_name,
               mx_format_from_name);
OPT_ENUM_FUNCS(profile_round_enum, mx_round_t, MX_ROUND_COUNT, mx_round_name, mx_round_from_name);
OPT_ENUM_FUNCS(profile_scale_enum, mx_scale_rule_t, MX_SCALE_COUNT, mx_scale_name,
               mx_scale_from_name);
OPT_ENUM_FUNCS(profile_compute_enum, prec_compute_t, PREC_COMPUTE_COUNT, prec_compute_name,
               prec_compute_from_name);

double profile_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t profile_mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0x100000001B3ull;
    return h ^ (h >> 29);
}

int profile_model_fingerprint(qwen2_model_t *m, uint64_t *out, err_t *e)
{
    const qwen2_config_t *c = qwen2_config(m);
    uint64_t h = PROFILE_HASH_INIT;
    const int cf[] = {c->hidden, c->inter, c->layers, c->heads, c->kv_heads, c->head_dim,
                      c->vocab, c->tie};
    for (size_t i = 0; i < sizeof cf / sizeof *cf; i++)
        h = profile_mix(h, (uint64_t)(uint32_t)cf[i]);
    uint64_t bits;
    memcpy(&bits, &c->rope_theta, 8);
    h = profile_mix(h, bits);
    memcpy(&bits, &c->rms_eps, 8);
    h = profile_mix(h, bits);
    size_t n = qwen2_nparams(m), chunk = (size_t)1 << 20;
    float *buf = err_malloc(e, chunk * sizeof *buf, "fingerprint buffer");
    if (!buf)
        return e->code;
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        if (qwen2_params_get(m, off, buf, k, e)) {
            free(buf);
            return e->code;
        }
        const uint32_t *u = (const uint32_t *)buf;
        for (size_t i = 0; i + 1 < k; i += 2)
            h = profile_mix(h, (uint64_t)u[i] | (uint64_t)u[i + 1] << 32);
        if (k & 1)
            h = profile_mix(h, u[k - 1]);
    }
    free(buf);
    *out = h;
    return ERR_OK;
}

void profile_hex64(uint64_t v, char *buf) { snprintf(buf, 17, "%016llx", (unsigned long long)v); }

cJSON *profile_json_exact(double v)
{
    char buf[40];
    if (!isfinite(v))
        return cJSON_CreateNull();
    snprintf(buf, sizeof buf, "%.17g", v);
    return cJSON_CreateRaw(buf);
}

void profile_json_add_exact(cJSON *o, const char *key, double v)
{
    cJSON_AddItemToObject(o, key, profile_json_exact(v));
}

int profile_record_read(const char *path, const cJSON *want, const char *const *keys,
                        const char *const *what, int nkeys, profile_record_line_fn fn,
                        void *ctx, size_t *valid_len, err_t *e)
{
    char *text;
    size_t len;
    *valid_len = 0;
    if (fs_read_all(path, (size_t)1 << 30, &text, &len, e))
        return e->code;
    size_t pos = 0;
    int lineno = 0, rc = ERR_OK;
    while (pos < len) {
        char *nl = memchr(text + pos, '\n', len - pos);
        if (!nl)
            break;  /* torn last line: ignored */
        *nl = 0;
        lineno++;
        cJSON *j = cJSON_Parse(text + pos);
        if (!j) {
            if (nl + 1 == text + len)
                break;  /* a garbled last line is a torn write too */
            rc = err_set(e, ERR_INPUT, "%s: line %d is not JSON (the resume record is damaged; "
                         "run without --resume to start again)", path, lineno);
            break;
        }
        if (lineno == 1) {
            for (int k = 0; k < nkeys && !rc; k++) {
                const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, keys[k]),
                            *b = cJSON_GetObjectItemCaseSensitive(want, keys[k]);
                if (!cJSON_IsString(a) || strcmp(a->valuestring, b->valuestring))
                    rc = err_set(e, ERR_INPUT, "%s: field \"%s\": made for another %s (run "
                                 "without --resume to start again)", path, keys[k], what[k]);
            }
        } else {
            rc = fn(ctx, j, lineno, e);
        }
        cJSON_Delete(j);
        if (rc)
            break;
        pos = (size_t)(nl - text) + 1;
        *valid_len = pos;
    }
    free(text);
    return rc;
}

int profile_record_open(profile_record_t *r, const char *path, const cJSON *hdr, size_t valid,
                        err_t *e)
{
    if (valid > 0) {
        if (truncate(path, (off_t)valid))
            return err_errno(e, ERR_FAIL, "cutting the torn last line off %s", path);
    } else {
        char *txt = cJSON_PrintUnformatted(hdr);
        if (!txt)
            return err_set(e, ERR_NOMEM, "out of memory");
        size_t n = strlen(txt);
        txt[n] = '\n';   /* overwrites the NUL; written with its length */
        int rc = atomic_write(path, txt, n + 1, e);
        free(txt);
        if (rc)
            return rc;
    }
    r->path = path;
    if (!(r->f = fopen(path, "a")))
        return err_errno(e, ERR_FAIL, "opening %s", path);
    return ERR_OK;
}

int profile_record_append(profile_record_t *r, cJSON *line, err_t *e)
{
    char *txt = cJSON_PrintUnformatted(line);
    cJSON_Delete(line);
    if (!txt)
        return err_set(e, ERR_NOMEM, "out of memory writing %s", r->path);
    int ok = fprintf(r->f, "%s\n", txt) > 0 && fflush(r->f) == 0 && fsync(fileno(r->f)) == 0;
    free(txt);
    if (!ok)
        return err_errno(e, ERR_FAIL, "writing %s", r->path);
    return ERR_OK;
}

int profile_table_open(profile_table_t *t, const char *path, err_t *e)
{
    memset(t, 0, sizeof *t);
    return atomic_open(&t->af, path, e);
}

void profile_table_cell(profile_table_t *t, const char *s)
{
    if (t->col++)
        fputc(',', t->af.fp);
    if (!s)
        return;
    if (strpbrk(s, ",\"\r\n")) {
        fputc('"', t->af.fp);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', t->af.fp);
            fputc(*s, t->af.fp);
        }
        fputc('"', t->af.fp);
    } else {
        fputs(s, t->af.fp);
    }
}

void profile_table_num(profile_table_t *t, double v)
{
    char buf[40];
    if (!isfinite(v)) {
        profile_table_cell(t, NULL);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    profile_table_cell(t, buf);
}

void profile_table_int(profile_table_t *t, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    profile_table_cell(t, buf);
}

void profile_table_bool(profile_table_t *t, bool v) { profile_table_cell(t, v ? "true" : "false"); }

void profile_table_end(profile_table_t *t)
{
    fputc('\n', t->af.fp);
    t->col = 0;
}

int profile_table_commit(profile_table_t *t, err_t *e)
{
    if (ferror(t->af.fp)) {
        int rc = err_set(e, ERR_FAIL, "writing %s failed", t->af.path);
        atomic_abort(&t->af);
        return rc;
    }
    return atomic_commit(&t->af, e);
}

void profile_cpu_name(char *buf, size_t n)
{
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ')
                    c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}
