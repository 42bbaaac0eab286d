/* mx_hwvec: the PE test-vector format (see mx_hwvec.h). */
#include "mx/mx_hwvec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mx/mx_dot.h"
#include "mx/mx_pack.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/rng.h"

const mx_format_t mx_hwvec_formats[MX_HWVEC_NFORMATS] = {
    MX_FP8_E4M3, MX_FP8_E5M2, MX_FP6_E3M2, MX_FP6_E2M3, MX_FP4_E2M1, MX_INT8};

bool mx_hwvec_format_ok(mx_format_t f)
{
    for (int i = 0; i < MX_HWVEC_NFORMATS; i++)
        if (mx_hwvec_formats[i] == f)
            return true;
    return false;
}

int mx_hwvec_code_digits(mx_format_t f)
{
    return mx_format_info(f)->bits <= 4 ? 1 : 2;
}

/* ---- parsing --------------------------------------------------------------------------- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The next field of [*p, end): up to the next single space; an empty field (two spaces,
 * a leading or trailing space) or a tab is an error. */
typedef struct cursor {
    const char *p, *end;
    const char *ctx;
    long lineno;
    int field;           /* 1-based index of the field just read */
} cursor_t;

static int next_field(cursor_t *c, const char *what, const char **f, size_t *n, err_t *e)
{
    c->field++;
    if (c->p >= c->end)
        return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): missing (the line has %d fields; "
                       "a vector has 2k + 5)", c->ctx, c->lineno, c->field, what, c->field - 1);
    const char *s = c->p;
    while (c->p < c->end && *c->p != ' ')
        c->p++;
    *f = s;
    *n = (size_t)(c->p - s);
    if (!*n)
        return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): empty (fields are separated by "
                       "single spaces)", c->ctx, c->lineno, c->field, what);
    for (size_t i = 0; i < *n; i++)
        if (s[i] == '\t' || s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): a tab, control character or "
                           "NUL (fields are separated by single spaces)", c->ctx, c->lineno,
                           c->field, what);
    if (c->p < c->end) { /* the separator */
        c->p++;
        if (c->p == c->end)
            return err_set(e, ERR_INPUT, "%s:%ld: a trailing space after field %d", c->ctx,
                           c->lineno, c->field);
    }
    return ERR_OK;
}

/* Exactly `digits` lowercase hex digits. */
static int hex_field(cursor_t *c, const char *what, int digits, uint32_t *out, err_t *e)
{
    const char *f;
    size_t n;
    int rc = next_field(c, what, &f, &n, e);
    if (rc)
        return rc;
    uint32_t v = 0;
    bool ok = n == (size_t)digits;
    for (size_t i = 0; ok && i < n; i++) {
        int h = hexval(f[i]);
        ok = h >= 0;
        v = v << 4 | (uint32_t)(h < 0 ? 0 : h);
    }
    if (!ok)
        return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): \"%.*s\" (expected %d lowercase "
                       "hex digit%s)", c->ctx, c->lineno, c->field, what, (int)(n > 24 ? 24 : n),
                       f, digits, digits > 1 ? "s" : "");
    *out = v;
    return ERR_OK;
}

static int operand(cursor_t *c, mx_format_t f, int k, char which, uint8_t *scale, uint8_t *codes,
                   err_t *e)
{
    char what[48];
    uint32_t v;
    snprintf(what, sizeof what, "scale_%c", which);
    int rc = hex_field(c, what, 2, &v, e);
    if (rc)
        return rc;
    if (v == 0xff)
        return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): ff is the NaN scale (expected "
                       "00..fe)", c->ctx, c->lineno, c->field, what);
    *scale = (uint8_t)v;
    int digits = mx_hwvec_code_digits(f);
    for (int i = 0; i < k; i++) {
        snprintf(what, sizeof what, "%c_%d", which, i + 1);
        if ((rc = hex_field(c, what, digits, &v, e)))
            return rc;
        int chk = mx_block_code_check(f, (uint8_t)v);
        if (chk == -1)
            return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): %02x is not a %d-bit %s "
                           "code", c->ctx, c->lineno, c->field, what, v,
                           mx_format_info(f)->bits, mx_format_name(f));
        if (chk == -2)
            return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): %02x is a NaN or infinity "
                           "code of %s (vectors hold finite codes)", c->ctx, c->lineno, c->field,
                           what, v, mx_format_name(f));
        codes[i] = (uint8_t)v;
    }
    return ERR_OK;
}

int mx_hwvec_parse_line(const char *line, size_t len, const char *ctx, long lineno,
                        mx_hwvec_t *v, bool *got, err_t *e)
{
    *got = false;
    if (len && line[len - 1] == '\n')
        len--;
    if (len && line[len - 1] == '\r')
        len--;
    if (!len || line[0] == '#')
        return ERR_OK;
    cursor_t c = {line, line + len, ctx ? ctx : "vectors", lineno, 0};
    const char *f;
    size_t n;
    int rc = next_field(&c, "format", &f, &n, e);
    if (rc)
        return rc;
    memset(v, 0, sizeof *v);
    bool known = false;
    for (int i = 0; i < MX_HWVEC_NFORMATS && !known; i++) {
        const char *name = mx_format_name(mx_hwvec_formats[i]);
        if (strlen(name) == n && !memcmp(name, f, n)) {
            v->format = mx_hwvec_formats[i];
            known = true;
        }
    }
    if (!known)
        return err_set(e, ERR_INPUT, "%s:%ld: field 1 (format): \"%.*s\" (expected mxfp8_e4m3, "
                       "mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1 or mxint8)", c.ctx, lineno,
                       (int)(n > 24 ? 24 : n), f);
    if ((rc = next_field(&c, "k", &f, &n, e)))
        return rc;
    if (n == 1 && f[0] == '8')
        v->k = 8;
    else if (n == 2 && f[0] == '1' && f[1] == '6')
        v->k = 16;
    else if (n == 2 && f[0] == '3' && f[1] == '2')
        v->k = 32;
    else
        return err_set(e, ERR_INPUT, "%s:%ld: field 2 (k): \"%.*s\" (expected 8, 16 or 32)",
                       c.ctx, lineno, (int)(n > 24 ? 24 : n), f);
    if ((rc = operand(&c, v->format, v->k, 'a', &v->sa, v->a, e)) ||
        (rc = operand(&c, v->format, v->k, 'b', &v->sb, v->b, e)) ||
        (rc = hex_field(&c, "expected", 8, &v->expected, e)))
        return rc;
    if (c.p < c.end)
        return err_set(e, ERR_INPUT, "%s:%ld: more than the %d fields of a k = %d vector", c.ctx,
                       lineno, 2 * v->k + 5, v->k);
    *got = true;
    return ERR_OK;
}

int mx_hwvec_parse(const char *text, size_t len, const char *ctx, mx_hwvec_t **out, size_t *n,
                   err_t *e)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    long lineno = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        lineno++;
        mx_hwvec_t v;
        bool got;
        int rc = mx_hwvec_parse_line(text + pos, end - pos, ctx, lineno, &v, &got, e);
        if (rc) {
            free(*out);
            *out = NULL;
            *n = 0;
            return rc;
        }
        if (got) {
            if (*n == cap) {
                size_t nc = cap ? 2 * cap : 64;
                mx_hwvec_t *p = realloc(*out, nc * sizeof *p);
                if (!p) {
                    free(*out);
                    *out = NULL;
                    *n = 0;
                    return err_set(e, ERR_NOMEM, "%s: out of memory at line %ld", ctx, lineno);
                }
                *out = p;
                cap = nc;
            }
            (*out)[(*n)++] = v;
        }
        pos = end + 1;
    }
    return ERR_OK;
}

int mx_hwvec_load(const char *path, mx_hwvec_t **out, size_t *n, err_t *e)
{
    char *text;
    size_t len;
    int rc = fs_read_all(path, (size_t)1 << 30, &text, &len, e);
    if (rc)
        return rc;
    rc = mx_hwvec_parse(text, len, path, out, n, e);
    free(text);
    return rc;
}

/* ---- writing ---------------------------------------------------------------------------- */

int mx_hwvec_format_line(const mx_hwvec_t *v, char *buf, size_t cap)
{
    if (!mx_hwvec_format_ok(v->format) || (v->k != 8 && v->k != 16 && v->k != 32) ||
        cap < MX_HWVEC_LINE_MAX)
        return -1;
    int digits = mx_hwvec_code_digits(v->format);
    size_t o = (size_t)snprintf(buf, cap, "%s %d", mx_format_name(v->format), v->k);
    for (int op = 0; op < 2; op++) {
        o += (size_t)snprintf(buf + o, cap - o, " %02x", op ? v->sb : v->sa);
        const uint8_t *c = op ? v->b : v->a;
        for (int i = 0; i < v->k; i++)
            o += (size_t)snprintf(buf + o, cap - o, digits == 1 ? " %x" : " %02x", c[i]);
    }
    o += (size_t)snprintf(buf + o, cap - o, " %08x", v->expected);
    return (int)o;
}

int mx_hwvec_compute(mx_hwvec_t *v, err_t *e)
{
    if (!mx_hwvec_format_ok(v->format) || (v->k != 8 && v->k != 16 && v->k != 32))
        return err_set(e, ERR_INPUT, "vector: format %s, k %d (expected one of the six formats "
                       "and k 8, 16 or 32)", mx_format_name(v->format), v->k);
    float r;
    int rc = mx_block_dot(v->format, v->sa, v->a, v->format, v->sb, v->b, v->k, &r, e);
    if (!rc)
        memcpy(&v->expected, &r, 4);
    return rc;
}

/* Each line of text as a "# " comment line. */
static void write_comments(FILE *f, const char *text)
{
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "# %.*s\n", (int)l, p);
        p += l + (nl ? 1 : 0);
    }
}

int mx_hwvec_write(const char *path, const char *header, const mx_hwvec_t *v, size_t n,
                   err_t *e)
{
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    write_comments(af.fp, header);
    char line[MX_HWVEC_LINE_MAX];
    for (size_t i = 0; i < n; i++) {
        if (mx_hwvec_format_line(&v[i], line, sizeof line) < 0) {
            atomic_abort(&af);
            return err_set(e, ERR_INPUT, "%s: vector %zu is not valid (format %s, k %d)", path,
                           i + 1, mx_format_name(v[i].format), v[i].k);
        }
        fprintf(af.fp, "%s\n", line);
    }
    return atomic_commit(&af, e);
}

/* ---- random vectors --------------------------------------------------------------------- */

/* A uniformly random finite code of f from the word u (redrawn past NaN/Inf codes). */
static uint8_t finite_code(mx_format_t f, uint64_t seed, uint64_t stream, uint64_t idx)
{
    int bits = mx_format_info(f)->bits;
    for (uint64_t t = 0;; t++) {
        uint8_t c = (uint8_t)(rng_u32(seed, stream, idx * 8 + t) & ((1u << bits) - 1));
        if (!mx_block_code_check(f, c))
            return c;
    }
}

/* The code of the largest finite magnitude of f, with sign bit `neg`. */
static uint8_t largest_code(mx_format_t f, int neg)
{
    if (f == MX_INT8)
        return neg ? 0x80 : 0x7f; /* -128 is the largest magnitude two's complement has */
    int bits = mx_format_info(f)->bits;
    uint8_t top = (uint8_t)((1u << (bits - 1)) - 1); /* all exponent and mantissa ones */
    if (f == MX_FP8_E4M3)
        top = 0x7e;       /* 0x7f is NaN */
    else if (f == MX_FP8_E5M2)
        top = 0x7b;       /* exponent 31 is Inf/NaN */
    return (uint8_t)(top | (neg ? 1u << (bits - 1) : 0));
}

static uint8_t negate_code(mx_format_t f, uint8_t c)
{
    if (f == MX_INT8)
        return (uint8_t)(c == 0x80 ? 0x80 : -(int8_t)c);
    return (uint8_t)(c ^ (1u << (mx_format_info(f)->bits - 1)));
}

int mx_hwvec_random(mx_format_t f, int k, uint64_t seed, uint64_t stream, uint64_t index,
                    mx_hwvec_t *v, err_t *e)
{
    if (!mx_hwvec_format_ok(f) || (k != 8 && k != 16 && k != 32))
        return err_set(e, ERR_INPUT, "random vector: format %s, k %d (expected one of the six "
                       "formats and k 8, 16 or 32)", mx_format_name(f), k);
    memset(v, 0, sizeof *v);
    v->format = f;
    v->k = k;
    /* words: 4 per element and operand for codes (finite_code may redraw), a few more */
    uint64_t base = index * 1024;
    uint32_t u0 = rng_u32(seed, stream, base), u1 = rng_u32(seed, stream, base + 1);
    int kind = (int)(index % 8);
    v->sa = (uint8_t)(u0 % 255);
    v->sb = (uint8_t)(u1 % 255);
    for (int i = 0; i < k; i++) {
        v->a[i] = finite_code(f, seed, stream, base / 8 + 1 + (uint64_t)i);
        v->b[i] = finite_code(f, seed, stream, base / 8 + 33 + (uint64_t)i);
    }
    uint32_t u2 = rng_u32(seed, stream, base + 2);
    switch (kind) {
    case 0: /* a zero block: +-0 codes in A (int8 has one zero) */
        for (int i = 0; i < k; i++)
            v->a[i] = f == MX_INT8 ? 0 : (uint8_t)(((u2 >> (i % 32)) & 1) << (mx_format_info(f)->bits - 1));
        break;
    case 1: /* the largest magnitudes, random signs */
        for (int i = 0; i < k; i++) {
            v->a[i] = largest_code(f, (u2 >> (i % 32)) & 1);
            v->b[i] = largest_code(f, (u0 >> (i % 32)) & 1);
        }
        v->sa = (uint8_t)(127 + u0 % 64);
        v->sb = (uint8_t)(127 + u1 % 64);
        break;
    case 2: /* scales near 2^127: overflow */
        v->sa = (uint8_t)(254 - u0 % 8);
        v->sb = (uint8_t)(254 - u1 % 8);
        break;
    case 3: /* scales near 2^-127: subnormal results and underflow to +-0 */
        v->sa = (uint8_t)(u0 % 24);
        v->sb = (uint8_t)(u1 % 24);
        break;
    case 4: /* cancellation: a[2i+1] = -a[2i] against b[2i+1] = b[2i], one pair left
               slightly off */
        for (int i = 0; i + 1 < k; i += 2) {
            v->a[i + 1] = negate_code(f, v->a[i]);
            v->b[i + 1] = v->b[i];
        }
        v->a[k - 1] = finite_code(f, seed, stream, base / 8 + 65);
        break;
    default:
        break;
    }
    return mx_hwvec_compute(v, e);
}

int mx_hwvec_random_set(const mx_format_t *f, int nf, const int *k, int nk, size_t count,
                        uint64_t seed, mx_hwvec_t *out, err_t *e)
{
    for (int fi = 0; fi < nf; fi++)
        for (int ki = 0; ki < nk; ki++)
            for (size_t i = 0; i < count; i++) {
                uint64_t stream = MX_HWVEC_RANDOM_STREAM + (uint64_t)fi * 3 + (uint64_t)ki;
                int rc = mx_hwvec_random(f[fi], k[ki], seed, stream, i,
                                         &out[((size_t)fi * (size_t)nk + (size_t)ki) * count + i], e);
                if (rc)
                    return rc;
            }
    return ERR_OK;
}

/* ---- vectors from real operands --------------------------------------------------------- */

int mx_hwvec_from_matrices(const float *x, size_t M, const float *w, size_t N, size_t K,
                           mx_format_t f, int k, uint64_t seed, uint64_t stream, size_t count,
                           mx_hwvec_t *out, err_t *e)
{
    if (!mx_hwvec_format_ok(f) || (k != 8 && k != 16 && k != 32))
        return err_set(e, ERR_INPUT, "vectors: format %s, k %d (expected one of the six formats "
                       "and k 8, 16 or 32)", mx_format_name(f), k);
    if (!M || !N || !K || K % (size_t)k)
        return err_set(e, ERR_INPUT, "vectors: operands %zu x %zu and %zu x %zu (expected "
                       "non-empty, K a multiple of k = %d)", M, K, N, K, k);
    mx_spec_t spec = {f, k, MX_ROUND_EVEN, MX_SCALE_FLOOR};
    size_t nb = K / (size_t)k;
    uint8_t *xe = err_malloc(e, mx_pack_elem_bytes(f, M * K) + 8, "x codes");
    uint8_t *we = err_malloc(e, mx_pack_elem_bytes(f, N * K) + 8, "w codes");
    uint8_t *xs = err_malloc(e, M * nb + 1, "x scales"), *ws = err_malloc(e, N * nb + 1, "w scales");
    int rc = xe && we && xs && ws ? ERR_OK : ERR_NOMEM;
    if (!rc)
        rc = mx_pack_encode(x, M, K, MX_AXIS_ROW, &spec, 0, 0, 1, xe, xs, e);
    if (!rc)
        rc = mx_pack_encode(w, N, K, MX_AXIS_ROW, &spec, 0, 0, 1, we, ws, e);
    for (size_t i = 0; !rc && i < count; i++) {
        size_t m = rng_u32(seed, stream, 3 * i) % M, n = rng_u32(seed, stream, 3 * i + 1) % N;
        size_t j = rng_u32(seed, stream, 3 * i + 2) % nb;
        mx_hwvec_t *v = &out[i];
        memset(v, 0, sizeof *v);
        v->format = f;
        v->k = k;
        v->sa = xs[m * nb + j];
        v->sb = ws[n * nb + j];
        if (v->sa == 0xFF || v->sb == 0xFF)
            rc = err_set(e, ERR_INPUT, "vectors: row %zu of %s, block %zu holds Inf or NaN",
                         v->sa == 0xFF ? m : n, v->sa == 0xFF ? "x" : "w", j);
        for (int t = 0; !rc && t < k; t++) {
            v->a[t] = mx_pack_get(f, xe, m * K + j * (size_t)k + (size_t)t);
            v->b[t] = mx_pack_get(f, we, n * K + j * (size_t)k + (size_t)t);
        }
        if (!rc)
            rc = mx_hwvec_compute(v, e);
    }
    free(xe);
    free(we);
    free(xs);
    free(ws);
    return rc;
}

/* ---- GEMM cases ------------------------------------------------------------------------- */

void mx_hwgemm_free(mx_hwgemm_t *g)
{
    free(g->a);
    free(g->as);
    free(g->b);
    free(g->bs);
    free(g->y);
    memset(g, 0, sizeof *g);
}

static int format_field(cursor_t *c, const char *what, mx_format_t *out, err_t *e)
{
    const char *f;
    size_t n;
    int rc = next_field(c, what, &f, &n, e);
    if (rc)
        return rc;
    for (int i = 0; i < MX_HWVEC_NFORMATS; i++) {
        const char *name = mx_format_name(mx_hwvec_formats[i]);
        if (strlen(name) == n && !memcmp(name, f, n)) {
            *out = mx_hwvec_formats[i];
            return ERR_OK;
        }
    }
    return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): \"%.*s\" (expected mxfp8_e4m3, "
                   "mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1 or mxint8)", c->ctx, c->lineno,
                   c->field, what, (int)(n > 24 ? 24 : n), f);
}

/* A decimal integer in [lo, hi], digits only, no leading zeros. */
static int int_field(cursor_t *c, const char *what, long lo, long hi, long *out, err_t *e)
{
    const char *f;
    size_t n;
    int rc = next_field(c, what, &f, &n, e);
    if (rc)
        return rc;
    long v = 0;
    bool ok = n > 0 && n <= 9 && (f[0] != '0' || n == 1);
    for (size_t i = 0; ok && i < n; i++) {
        ok = f[i] >= '0' && f[i] <= '9';
        v = v * 10 + (f[i] - '0');
    }
    if (!ok || v < lo || v > hi)
        return err_set(e, ERR_INPUT, "%s:%ld: field %d (%s): \"%.*s\" (expected an integer in "
                       "%ld..%ld)", c->ctx, c->lineno, c->field, what, (int)(n > 24 ? 24 : n), f,
                       lo, hi);
    *out = v;
    return ERR_OK;
}

static int tag_field(cursor_t *c, const char *tag, err_t *e)
{
    const char *f;
    size_t n;
    int rc = next_field(c, "tag", &f, &n, e);
    if (rc)
        return rc;
    if (n != strlen(tag) || memcmp(f, tag, n))
        return err_set(e, ERR_INPUT, "%s:%ld: field 1: \"%.*s\" (expected \"%s\" here)", c->ctx,
                       c->lineno, (int)(n > 24 ? 24 : n), f, tag);
    return ERR_OK;
}

static int end_of_line(cursor_t *c, err_t *e)
{
    if (c->p < c->end)
        return err_set(e, ERR_INPUT, "%s:%ld: more than the %d fields this line takes", c->ctx,
                       c->lineno, c->field);
    return ERR_OK;
}

/* One operand row: K / k blocks of (scale, k codes). */
static int gemm_row(cursor_t *c, mx_format_t f, int k, size_t K, char which, uint8_t *codes,
                    uint8_t *scales, err_t *e)
{
    for (size_t j = 0; j < K / (size_t)k; j++) {
        int rc = operand(c, f, k, which, &scales[j], codes + j * (size_t)k, e);
        if (rc)
            return rc;
    }
    return end_of_line(c, e);
}

int mx_hwgemm_parse(const char *text, size_t len, const char *ctx, mx_hwgemm_t *g, err_t *e)
{
    memset(g, 0, sizeof *g);
    ctx = ctx ? ctx : "gemm";
    long lineno = 0;
    size_t row = 0; /* data lines after the header */
    int rc = ERR_OK;
    for (size_t pos = 0; !rc && pos < len;) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len, l = end - pos;
        const char *line = text + pos;
        pos = end + 1;
        lineno++;
        if (l && line[l - 1] == '\r')
            l--;
        if (!l || line[0] == '#')
            continue;
        cursor_t c = {line, line + l, ctx, lineno, 0};
        if (!g->y) { /* the header */
            long v[4];
            if ((rc = tag_field(&c, "gemm", e)) || (rc = format_field(&c, "fa", &g->fa, e)) ||
                (rc = format_field(&c, "fb", &g->fb, e)) ||
                (rc = int_field(&c, "k", 8, 32, &v[0], e)))
                break;
            if (v[0] != 8 && v[0] != 16 && v[0] != 32) {
                rc = err_set(e, ERR_INPUT, "%s:%ld: field 4 (k): %ld (expected 8, 16 or 32)", ctx,
                             lineno, v[0]);
                break;
            }
            if ((rc = int_field(&c, "M", 1, 65536, &v[1], e)) ||
                (rc = int_field(&c, "N", 1, 65536, &v[2], e)) ||
                (rc = int_field(&c, "K", 1, 65536, &v[3], e)) || (rc = end_of_line(&c, e)))
                break;
            if (v[3] % v[0]) {
                rc = err_set(e, ERR_INPUT, "%s:%ld: field 7 (K): %ld is not a multiple of k = %ld",
                             ctx, lineno, v[3], v[0]);
                break;
            }
            if (v[1] * v[3] > MX_HWGEMM_MAX || v[2] * v[3] > MX_HWGEMM_MAX ||
                v[1] * v[2] > MX_HWGEMM_MAX) {
                rc = err_set(e, ERR_INPUT, "%s:%ld: %ld x %ld x %ld: a matrix of more than %ld "
                             "elements", ctx, lineno, v[1], v[2], v[3], (long)MX_HWGEMM_MAX);
                break;
            }
            g->k = (int)v[0];
            g->M = (size_t)v[1];
            g->N = (size_t)v[2];
            g->K = (size_t)v[3];
            size_t nb = g->K / (size_t)g->k;
            g->a = malloc(g->M * g->K);
            g->as = malloc(g->M * nb);
            g->b = malloc(g->N * g->K);
            g->bs = malloc(g->N * nb);
            g->y = malloc(g->M * g->N * sizeof *g->y);
            if (!g->a || !g->as || !g->b || !g->bs || !g->y) {
                rc = err_set(e, ERR_NOMEM, "%s: out of memory for a %zu x %zu x %zu GEMM", ctx,
                             g->M, g->N, g->K);
            }
            continue;
        }
        size_t nb = g->K / (size_t)g->k;
        if (row < g->M) {
            if (!(rc = tag_field(&c, "a", e)))
                rc = gemm_row(&c, g->fa, g->k, g->K, 'a', g->a + row * g->K, g->as + row * nb, e);
        } else if (row < g->M + g->N) {
            size_t n = row - g->M;
            if (!(rc = tag_field(&c, "b", e)))
                rc = gemm_row(&c, g->fb, g->k, g->K, 'b', g->b + n * g->K, g->bs + n * nb, e);
        } else if (row < 2 * g->M + g->N) {
            size_t m = row - g->M - g->N;
            if (!(rc = tag_field(&c, "y", e))) {
                for (size_t n = 0; !rc && n < g->N; n++)
                    rc = hex_field(&c, "y", 8, &g->y[m * g->N + n], e);
                if (!rc)
                    rc = end_of_line(&c, e);
            }
        } else {
            rc = err_set(e, ERR_INPUT, "%s:%ld: a line after the last y line (the case has %zu "
                         "a, %zu b and %zu y lines)", ctx, lineno, g->M, g->N, g->M);
        }
        row++;
    }
    if (!rc && !g->y)
        rc = err_set(e, ERR_INPUT, "%s: no \"gemm <fa> <fb> <k> <M> <N> <K>\" line", ctx);
    if (!rc && row < 2 * g->M + g->N)
        rc = err_set(e, ERR_INPUT, "%s: ends after %zu of the %zu a, b and y lines", ctx, row,
                     2 * g->M + g->N);
    if (rc)
        mx_hwgemm_free(g);
    return rc;
}

int mx_hwgemm_load(const char *path, mx_hwgemm_t *out, err_t *e)
{
    char *text;
    size_t len;
    int rc = fs_read_all(path, (size_t)1 << 30, &text, &len, e);
    if (rc)
        return rc;
    rc = mx_hwgemm_parse(text, len, path, out, e);
    free(text);
    return rc;
}

static void write_row(FILE *f, char tag, mx_format_t fmt, int k, size_t K, const uint8_t *codes,
                      const uint8_t *scales)
{
    int digits = mx_hwvec_code_digits(fmt);
    fputc(tag, f);
    for (size_t j = 0; j < K / (size_t)k; j++) {
        fprintf(f, " %02x", scales[j]);
        for (int i = 0; i < k; i++)
            fprintf(f, digits == 1 ? " %x" : " %02x", codes[j * (size_t)k + (size_t)i]);
    }
    fputc('\n', f);
}

int mx_hwgemm_write(const char *path, const char *header, const mx_hwgemm_t *g, err_t *e)
{
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    write_comments(af.fp, header);
    size_t nb = g->K / (size_t)g->k;
    fprintf(af.fp, "gemm %s %s %d %zu %zu %zu\n", mx_format_name(g->fa), mx_format_name(g->fb),
            g->k, g->M, g->N, g->K);
    for (size_t m = 0; m < g->M; m++)
        write_row(af.fp, 'a', g->fa, g->k, g->K, g->a + m * g->K, g->as + m * nb);
    for (size_t n = 0; n < g->N; n++)
        write_row(af.fp, 'b', g->fb, g->k, g->K, g->b + n * g->K, g->bs + n * nb);
    for (size_t m = 0; m < g->M; m++) {
        fputc('y', af.fp);
        for (size_t n = 0; n < g->N; n++)
            fprintf(af.fp, " %08x", g->y[m * g->N + n]);
        fputc('\n', af.fp);
    }
    return atomic_commit(&af, e);
}

/* Quantizes rows x K along K into one-per-byte codes and scales. */
static int quantize_rows(const float *x, size_t rows, size_t K, const mx_spec_t *s, uint8_t *codes,
                         uint8_t *scales, err_t *e)
{
    uint8_t *packed = err_malloc(e, mx_pack_elem_bytes(s->format, rows * K) + 8, "packed codes");
    if (!packed)
        return ERR_NOMEM;
    int rc = mx_pack_encode(x, rows, K, MX_AXIS_ROW, s, 0, 0, 1, packed, scales, e);
    for (size_t i = 0; !rc && i < rows * K; i++)
        codes[i] = mx_pack_get(s->format, packed, i);
    free(packed);
    size_t nb = K / (size_t)s->block;
    for (size_t i = 0; !rc && i < rows * nb; i++)
        if (scales[i] == 0xFF)
            rc = err_set(e, ERR_INPUT, "row %zu, block %zu holds Inf or NaN", i / nb, i % nb);
    return rc;
}

int mx_hwgemm_from_matrices(const float *x, size_t M, const float *w, size_t N, size_t K,
                            const mx_spec_t *sa, const mx_spec_t *sb, mx_hwgemm_t *g, err_t *e)
{
    memset(g, 0, sizeof *g);
    if (!mx_hwvec_format_ok(sa->format) || !mx_hwvec_format_ok(sb->format))
        return err_set(e, ERR_INPUT, "GEMM case: formats %s and %s (the PEs take mxfp8_e4m3, "
                       "mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8)",
                       mx_format_name(sa->format), mx_format_name(sb->format));
    if (sa->block != sb->block || (sa->block != 8 && sa->block != 16 && sa->block != 32))
        return err_set(e, ERR_INPUT, "GEMM case: blocks %d and %d (expected one block, 8, 16 "
                       "or 32)", sa->block, sb->block);
    if (!M || !N || !K || K % (size_t)sa->block || M > 65536 || N > 65536 || K > 65536 ||
        M * K > MX_HWGEMM_MAX || N * K > MX_HWGEMM_MAX || M * N > MX_HWGEMM_MAX)
        return err_set(e, ERR_INPUT, "GEMM case: %zu x %zu x %zu (expected 1..65536 each, K a "
                       "multiple of %d, no matrix over %ld elements)", M, N, K, sa->block,
                       (long)MX_HWGEMM_MAX);
    g->fa = sa->format;
    g->fb = sb->format;
    g->k = sa->block;
    g->M = M;
    g->N = N;
    g->K = K;
    size_t nb = K / (size_t)g->k;
    g->a = err_malloc(e, M * K, "GEMM a");
    g->as = err_malloc(e, M * nb, "GEMM a scales");
    g->b = err_malloc(e, N * K, "GEMM b");
    g->bs = err_malloc(e, N * nb, "GEMM b scales");
    g->y = err_malloc(e, M * N * sizeof *g->y, "GEMM y");
    float *y = err_malloc(e, M * N * sizeof *y, "GEMM y");
    int rc = g->a && g->as && g->b && g->bs && g->y && y ? ERR_OK : ERR_NOMEM;
    if (!rc && (rc = quantize_rows(x, M, K, sa, g->a, g->as, e)))
        err_prefix(e, "GEMM case, x: ");
    if (!rc && (rc = quantize_rows(w, N, K, sb, g->b, g->bs, e)))
        err_prefix(e, "GEMM case, w: ");
    if (!rc)
        rc = mx_block_gemm(g->fa, g->a, g->as, g->fb, g->b, g->bs, M, N, K, g->k, y, e);
    if (!rc)
        memcpy(g->y, y, M * N * sizeof *y);
    free(y);
    if (rc)
        mx_hwgemm_free(g);
    return rc;
}

int mx_hwgemm_check(const mx_hwgemm_t *g, size_t *matches, long *first_bad, err_t *e)
{
    float *y = err_malloc(e, g->M * g->N * sizeof *y + 4, "GEMM y");
    if (!y)
        return ERR_NOMEM;
    int rc = mx_block_gemm(g->fa, g->a, g->as, g->fb, g->b, g->bs, g->M, g->N, g->K, g->k, y, e);
    *matches = 0;
    *first_bad = -1;
    for (size_t i = 0; !rc && i < g->M * g->N; i++) {
        uint32_t u;
        memcpy(&u, &y[i], 4);
        if (u == g->y[i])
            (*matches)++;
        else if (*first_bad < 0)
            *first_bad = (long)i;
    }
    free(y);
    return rc;
}
