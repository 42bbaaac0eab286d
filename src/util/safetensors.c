/* safetensors: see safetensors.h. The reader trusts nothing in the file; the writer
 * produces what huggingface/safetensors produces (tensors sorted by name, header
 * padded with spaces to 8 bytes, a contiguous data buffer). */
#include "util/safetensors.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/atomic_file.h"
#include "util/half.h"
#include "util/strbuf.h"

/* The Python library refuses headers over 100 MB; so do we. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static const struct {
    const char *name;
    int bits;
    int is_float;
} dtype_table[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8, 0},        [ST_U8] = {"U8", 8, 0},
    [ST_I8] = {"I8", 8, 0},            [ST_I16] = {"I16", 16, 0},
    [ST_U16] = {"U16", 16, 0},         [ST_I32] = {"I32", 32, 0},
    [ST_U32] = {"U32", 32, 0},         [ST_I64] = {"I64", 64, 0},
    [ST_U64] = {"U64", 64, 0},         [ST_F16] = {"F16", 16, 1},
    [ST_BF16] = {"BF16", 16, 1},       [ST_F32] = {"F32", 32, 1},
    [ST_F64] = {"F64", 64, 1},         [ST_F8_E4M3] = {"F8_E4M3", 8, 1},
    [ST_F8_E5M2] = {"F8_E5M2", 8, 1},  [ST_F8_E8M0] = {"F8_E8M0", 8, 1},
    [ST_F6_E3M2] = {"F6_E3M2", 6, 1},  [ST_F6_E2M3] = {"F6_E2M3", 6, 1},
    [ST_F4] = {"F4", 4, 1},
};

const char *st_dtype_name(st_dtype_t d)
{
    return (unsigned)d < ST_DTYPE_COUNT ? dtype_table[d].name : "?";
}

int st_dtype_from_name(const char *name, st_dtype_t *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (!strcmp(name, dtype_table[i].name)) {
            *out = (st_dtype_t)i;
            return 0;
        }
    return -1;
}

int st_dtype_bits(st_dtype_t d)
{
    return (unsigned)d < ST_DTYPE_COUNT ? dtype_table[d].bits : 0;
}

int st_dtype_is_float(st_dtype_t d)
{
    return (unsigned)d < ST_DTYPE_COUNT && dtype_table[d].is_float;
}

/* Byte length implied by dtype and element count; -1 if it is not a whole number of
 * bytes or overflows. */
static int64_t implied_bytes(st_dtype_t d, int64_t nelem)
{
    int bits = st_dtype_bits(d);
    if (nelem < 0 || nelem > INT64_MAX / 64)
        return -1;
    int64_t total = nelem * bits;
    return total % 8 ? -1 : total / 8;
}

static int shape_nelem(const int64_t *shape, int ndim, int64_t *out)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] && n > INT64_MAX / 64 / shape[i])
            return -1;
        n *= shape[i];
    }
    *out = n;
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const st_tensor_t *x = a, *y = b;
    if (x->data != y->data)
        return x->data < y->data ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* Reads a JSON number that must be a non-negative integer below 2^53. */
static int json_uint(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d > 9007199254740992.0)
        return -1;
    *out = (int64_t)d;
    return 0;
}

int st_parse(st_file_t *f, const uint8_t *buf, size_t len, const char *ctx, err_t *e)
{
    memset(f, 0, sizeof *f);
    if (len < 8)
        return err_set(e, ERR_INPUT, "%s: %zu bytes, too short for a safetensors file", ctx, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > len - 8)
        return err_set(e, ERR_INPUT, "%s: header length %llu exceeds the file's %zu bytes", ctx,
                       (unsigned long long)hlen, len);
    if (hlen > ST_MAX_HEADER)
        return err_set(e, ERR_INPUT, "%s: header length %llu is over the 100 MB limit", ctx,
                       (unsigned long long)hlen);
    if (hlen < 2 || buf[8] != '{')
        return err_set(e, ERR_INPUT, "%s: header does not start with '{'", ctx);
    const uint8_t *data = buf + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;

    const char *end = NULL;
    cJSON *h = cJSON_ParseWithLengthOpts((const char *)buf + 8, (size_t)hlen, &end, 0);
    if (!h || !cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return err_set(e, ERR_INPUT, "%s: header is not a valid JSON object", ctx);
    }
    /* Only trailing spaces may follow the JSON object inside the header. */
    for (const char *p = end; p && p < (const char *)buf + 8 + hlen; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(h);
            return err_set(e, ERR_INPUT, "%s: bytes after the header's JSON object", ctx);
        }
    f->header = h;
    int count = cJSON_GetArraySize(h);
    f->tensors = calloc((size_t)(count ? count : 1), sizeof *f->tensors);
    if (!f->tensors) {
        st_close(f);
        return err_set(e, ERR_NOMEM, "%s: out of memory for %d tensor entries", ctx, count);
    }
    int rc = ERR_OK;
    for (const cJSON *it = h->child; it; it = it->next) {
        const char *name = it->string;
        if (!name) {
            rc = err_set(e, ERR_INPUT, "%s: header entry without a name", ctx);
            goto fail;
        }
        if (!strcmp(name, "__metadata__")) {
            if (!cJSON_IsObject(it)) {
                rc = err_set(e, ERR_INPUT, "%s: __metadata__ must be an object", ctx);
                goto fail;
            }
            for (const cJSON *m = it->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    rc = err_set(e, ERR_INPUT, "%s: __metadata__ \"%s\" must be a string", ctx,
                                 m->string ? m->string : "");
                    goto fail;
                }
            if (f->metadata) {
                rc = err_set(e, ERR_INPUT, "%s: __metadata__ appears twice", ctx);
                goto fail;
            }
            f->metadata = it;
            continue;
        }
        for (int k = 0; k < f->ntensors; k++)
            if (!strcmp(f->tensors[k].name, name)) {
                rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\" appears twice", ctx, name);
                goto fail;
            }
        st_tensor_t *t = &f->tensors[f->ntensors];
        t->name = name;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsObject(it) || !cJSON_IsString(dt) || !cJSON_IsArray(sh) ||
            !cJSON_IsArray(off)) {
            rc = err_set(e, ERR_INPUT,
                         "%s: tensor \"%s\": expected an object with dtype, shape, data_offsets",
                         ctx, name);
            goto fail;
        }
        if (st_dtype_from_name(dt->valuestring, &t->dtype) != 0) {
            rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\": unknown dtype \"%s\"", ctx, name,
                         dt->valuestring);
            goto fail;
        }
        int nd = cJSON_GetArraySize(sh);
        if (nd > ST_MAX_DIMS) {
            rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\": %d dimensions (at most %d)", ctx,
                         name, nd, ST_MAX_DIMS);
            goto fail;
        }
        t->ndim = nd;
        int k = 0;
        for (const cJSON *d = sh->child; d; d = d->next, k++)
            if (json_uint(d, &t->shape[k]) != 0) {
                rc = err_set(e, ERR_INPUT,
                             "%s: tensor \"%s\": shape[%d] is not a non-negative integer", ctx,
                             name, k);
                goto fail;
            }
        int64_t b0, b1;
        if (cJSON_GetArraySize(off) != 2 || json_uint(off->child, &b0) ||
            json_uint(off->child->next, &b1) || b1 < b0) {
            rc = err_set(e, ERR_INPUT,
                         "%s: tensor \"%s\": data_offsets must be [begin, end] with begin <= end",
                         ctx, name);
            goto fail;
        }
        int64_t nbytes;
        if (shape_nelem(t->shape, nd, &t->nelem) != 0 ||
            (nbytes = implied_bytes(t->dtype, t->nelem)) < 0) {
            rc = err_set(e, ERR_INPUT,
                         "%s: tensor \"%s\": shape is too large or not whole bytes for %s", ctx,
                         name, dt->valuestring);
            goto fail;
        }
        if (b1 - b0 != nbytes) {
            rc = err_set(e, ERR_INPUT,
                         "%s: tensor \"%s\": data_offsets span %lld bytes but %s%s needs %lld",
                         ctx, name, (long long)(b1 - b0), dt->valuestring,
                         nd ? " of that shape" : "", (long long)nbytes);
            goto fail;
        }
        if ((uint64_t)b1 > data_len) {
            rc = err_set(e, ERR_INPUT,
                         "%s: tensor \"%s\": data_offsets end %lld is past the data (%zu bytes)",
                         ctx, name, (long long)b1, data_len);
            goto fail;
        }
        t->data = data + b0;
        t->nbytes = (size_t)nbytes;
        f->ntensors++;
    }
    /* As the reference implementation: tensors tile the data buffer exactly. */
    qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, cmp_offset);
    const uint8_t *at = data;
    for (int i = 0; i < f->ntensors; i++) {
        if (f->tensors[i].data != at) {
            rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\": data %s another tensor's or leaves a gap",
                         ctx, f->tensors[i].name, f->tensors[i].data < at ? "overlaps" : "follows");
            goto fail;
        }
        at += f->tensors[i].nbytes;
    }
    if (at != data + data_len) {
        rc = err_set(e, ERR_INPUT, "%s: %zu bytes after the last tensor's data", ctx,
                     (size_t)(data + data_len - at));
        goto fail;
    }
    return ERR_OK;
fail:
    st_close(f);
    return rc;
}

int st_open(st_file_t *f, const char *path, err_t *e)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_errno(e, ERR_INPUT, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(e, ERR_INPUT, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (len && map == MAP_FAILED)
        return err_errno(e, ERR_FAIL, "mmap %s", path);
    int rc = st_parse(f, map ? map : (const uint8_t *)"", len, path, e);
    if (rc) {
        if (map)
            munmap(map, len);
        return rc;
    }
    f->map = map;
    f->map_len = len;
    f->path = strdup(path);
    return ERR_OK;
}

void st_close(st_file_t *f)
{
    if (f->map)
        munmap(f->map, f->map_len);
    cJSON_Delete(f->header);
    free(f->tensors);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const st_tensor_t *st_find(const st_file_t *f, const char *name)
{
    for (int i = 0; i < f->ntensors; i++)
        if (!strcmp(f->tensors[i].name, name))
            return &f->tensors[i];
    return NULL;
}

const char *st_metadata(const st_file_t *f, const char *key)
{
    const cJSON *v = f->metadata ? cJSON_GetObjectItemCaseSensitive(f->metadata, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* fp8 e4m3fn (no infinities; S.1111.111 is NaN) and e5m2 (IEEE-like) to float. */
static float f8_to_f32(uint8_t b, int ebits)
{
    int mbits = 7 - ebits, bias = (1 << (ebits - 1)) - 1;
    int sign = b >> 7, ex = (b >> mbits) & ((1 << ebits) - 1), man = b & ((1 << mbits) - 1);
    float v;
    if (ebits == 4 && ex == 15 && man == 7)
        return NAN;
    if (ebits == 5 && ex == 31)
        v = man ? NAN : INFINITY;
    else if (ex == 0)
        v = ldexpf((float)man, 1 - bias - mbits);
    else
        v = ldexpf((float)(man | 1 << mbits), ex - bias - mbits);
    return sign ? -v : v;
}

int st_to_f32(const st_file_t *f, const st_tensor_t *t, float *out, err_t *e)
{
    const uint8_t *p = t->data;
    size_t n = (size_t)t->nelem;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, p, n * 4);
        return ERR_OK;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return ERR_OK;
    case ST_BF16:
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            out[i] = t->dtype == ST_BF16 ? half_bf16_to_f32(h) : half_f16_to_f32(h);
        }
        return ERR_OK;
    case ST_F8_E4M3:
    case ST_F8_E5M2:
        for (size_t i = 0; i < n; i++)
            out[i] = f8_to_f32(p[i], t->dtype == ST_F8_E4M3 ? 4 : 5);
        return ERR_OK;
    default:
        return err_set(e, ERR_INPUT, "%s: tensor \"%s\": dtype %s cannot be read as float32",
                       f->path ? f->path : "safetensors", t->name, st_dtype_name(t->dtype));
    }
}

int st_read_f32(const st_file_t *f, const char *name, int ndim, const int64_t *shape,
                float *out, err_t *e)
{
    const char *path = f->path ? f->path : "safetensors";
    const st_tensor_t *t = st_find(f, name);
    if (!t)
        return err_set(e, ERR_INPUT, "%s: tensor \"%s\" is missing", path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char want[160] = "", got[160] = "";
        for (int i = 0; i < ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                     (long long)shape[i]);
        for (int i = 0; i < t->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                     (long long)t->shape[i]);
        return err_set(e, ERR_INPUT, "%s: tensor \"%s\" has shape [%s], expected [%s]", path,
                       name, got, want);
    }
    return st_to_f32(f, t, out, e);
}

/* ---- writer ---------------------------------------------------------------- */

typedef struct st_entry {
    char *name;
    st_dtype_t dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
    int owned;
} st_entry_t;

struct st_writer {
    st_entry_t *entries;
    int n, cap;
    char **meta_keys, **meta_vals;
    int nmeta;
};

st_writer_t *st_writer_new(err_t *e)
{
    st_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        err_set(e, ERR_NOMEM, "out of memory creating a safetensors writer");
    return w;
}

void st_writer_free(st_writer_t *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++) {
        free(w->entries[i].name);
        if (w->entries[i].owned)
            free((void *)w->entries[i].data);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_vals[i]);
    }
    free(w->meta_keys);
    free(w->meta_vals);
    free(w->entries);
    free(w);
}

int st_writer_add(st_writer_t *w, const char *name, st_dtype_t dtype, int ndim,
                  const int64_t *shape, const void *data, size_t nbytes, int borrow, err_t *e)
{
    int64_t nelem, want;
    if (!strcmp(name, "__metadata__") || !*name)
        return err_set(e, ERR_INPUT, "safetensors: \"%s\" is not a valid tensor name", name);
    if ((unsigned)dtype >= ST_DTYPE_COUNT || ndim < 0 || ndim > ST_MAX_DIMS ||
        shape_nelem(shape, ndim, &nelem) || (want = implied_bytes(dtype, nelem)) < 0 ||
        (size_t)want != nbytes)
        return err_set(e, ERR_INPUT,
                       "safetensors: tensor \"%s\": %zu bytes do not match its dtype and shape",
                       name, nbytes);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->entries[i].name, name))
            return err_set(e, ERR_INPUT, "safetensors: tensor \"%s\" added twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 16;
        st_entry_t *ne = realloc(w->entries, (size_t)cap * sizeof *ne);
        if (!ne)
            return err_set(e, ERR_NOMEM, "out of memory adding tensor %s", name);
        w->entries = ne;
        w->cap = cap;
    }
    st_entry_t *en = &w->entries[w->n];
    memset(en, 0, sizeof *en);
    en->name = strdup(name);
    en->dtype = dtype;
    en->ndim = ndim;
    if (ndim)
        memcpy(en->shape, shape, (size_t)ndim * sizeof *shape);
    en->nbytes = nbytes;
    if (borrow) {
        en->data = data;
    } else {
        void *copy = malloc(nbytes ? nbytes : 1);
        if (copy && nbytes)
            memcpy(copy, data, nbytes);
        en->data = copy;
        en->owned = 1;
    }
    if (!en->name || !en->data) {
        free(en->name);
        if (en->owned)
            free((void *)en->data);
        return err_set(e, ERR_NOMEM, "out of memory adding tensor %s", name);
    }
    w->n++;
    return ERR_OK;
}

int st_writer_meta(st_writer_t *w, const char *key, const char *value, err_t *e)
{
    char **k = realloc(w->meta_keys, (size_t)(w->nmeta + 1) * sizeof *k);
    if (k)
        w->meta_keys = k;
    char **v = realloc(w->meta_vals, (size_t)(w->nmeta + 1) * sizeof *v);
    if (v)
        w->meta_vals = v;
    if (!k || !v)
        return err_set(e, ERR_NOMEM, "out of memory adding metadata %s", key);
    w->meta_keys[w->nmeta] = strdup(key);
    w->meta_vals[w->nmeta] = strdup(value);
    if (!w->meta_keys[w->nmeta] || !w->meta_vals[w->nmeta]) {
        free(w->meta_keys[w->nmeta]);
        free(w->meta_vals[w->nmeta]);
        return err_set(e, ERR_NOMEM, "out of memory adding metadata %s", key);
    }
    w->nmeta++;
    return ERR_OK;
}

/* A JSON string literal: quotes, backslashes and control characters escaped. */
static void sb_json_string(strbuf_t *b, const char *s)
{
    strbuf_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            strbuf_add(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            strbuf_add(b, esc, 6);
        } else {
            strbuf_add(b, (const char *)p, 1);
        }
    }
    strbuf_add(b, "\"", 1);
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const st_entry_t *)a)->name, ((const st_entry_t *)b)->name);
}

int st_writer_write(st_writer_t *w, const char *path, err_t *e)
{
    qsort(w->entries, (size_t)w->n, sizeof *w->entries, cmp_entry_name);
    strbuf_t h = {0};
    char num[64];
    strbuf_puts(&h, "{");
    if (w->nmeta) {
        strbuf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i)
                strbuf_puts(&h, ",");
            sb_json_string(&h, w->meta_keys[i]);
            strbuf_puts(&h, ":");
            sb_json_string(&h, w->meta_vals[i]);
        }
        strbuf_puts(&h, "}");
    }
    size_t offset = 0;
    for (int i = 0; i < w->n; i++) {
        const st_entry_t *en = &w->entries[i];
        if (i || w->nmeta)
            strbuf_puts(&h, ",");
        sb_json_string(&h, en->name);
        strbuf_puts(&h, ":{\"dtype\":\"");
        strbuf_puts(&h, st_dtype_name(en->dtype));
        strbuf_puts(&h, "\",\"shape\":[");
        for (int d = 0; d < en->ndim; d++) {
            snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)en->shape[d]);
            strbuf_puts(&h, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", offset, offset + en->nbytes);
        strbuf_puts(&h, num);
        offset += en->nbytes;
    }
    strbuf_puts(&h, "}");
    while (!h.oom && h.n % 8)
        strbuf_puts(&h, " ");
    if (h.oom) {
        free(h.p);
        return err_set(e, ERR_NOMEM, "out of memory building the header of %s", path);
    }
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc) {
        free(h.p);
        return rc;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    int ok = fwrite(len8, 1, 8, af.fp) == 8 && fwrite(h.p, 1, h.n, af.fp) == h.n;
    for (int i = 0; ok && i < w->n; i++)
        ok = fwrite(w->entries[i].data, 1, w->entries[i].nbytes, af.fp) == w->entries[i].nbytes;
    free(h.p);
    if (!ok) {
        err_errno(e, ERR_FAIL, "writing %s", path);
        atomic_abort(&af);
        return ERR_FAIL;
    }
    return atomic_commit(&af, e);
}
