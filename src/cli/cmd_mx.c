/* mxrlhf mx: the MX number library from the command line.
 *
 *   mx quantize  fake-quantize (or pack) a raw float32 file or a .safetensors file
 *   mx info      the format table
 *   mx error     SQNR and relative error of a spec on given or seeded random data
 *
 * Parsing, file I/O and printing only; the arithmetic is src/mx. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "mx/mx.h"
#include "mx/mx_pack.h"
#include "util/atomic_file.h"
#include "util/half.h"
#include "util/rng.h"
#include "util/safetensors.h"

/* ---- shared helpers --------------------------------------------------------------- */

static int spec_from_options(const char *format, long long block, const char *round,
                             const char *scale, mx_spec_t *s, err_t *e)
{
    if (args_require(format, "format", e))
        return ERR_INPUT;
    mx_format_t f;
    if (mx_format_from_name(format, &f))
        return err_set(e, ERR_INPUT, "--format: unknown format \"%s\" (mxrlhf mx info lists them)",
                       format);
    *s = mx_spec_default(f);
    if (block < 1 || block > MX_BLOCK_MAX)
        return err_set(e, ERR_INPUT, "--block %lld: expected an integer in 1..%d", block,
                       MX_BLOCK_MAX);
    s->block = (int)block;
    if (round && mx_round_from_name(round, &s->round))
        return err_set(e, ERR_INPUT,
                       "--round: unknown rounding \"%s\" (nearest, even, trunc or floor, stochastic)",
                       round);
    if (scale && mx_scale_from_name(scale, &s->scale))
        return err_set(e, ERR_INPUT, "--scale: unknown scale rule \"%s\" (floor, rceil)", scale);
    return mx_spec_check(s, e);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* A raw little-endian float32 file, whole. */
static int read_raw_f32(const char *path, float **out, size_t *n, err_t *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_errno(e, ERR_INPUT, "--in %s", path);
    struct stat st;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(e, ERR_INPUT, "--in %s: not a regular file", path);
    }
    if (st.st_size % 4) {
        fclose(f);
        return err_set(e, ERR_INPUT,
                       "--in %s: %lld bytes is not a whole number of float32 values (a multiple "
                       "of 4)", path, (long long)st.st_size);
    }
    size_t count = (size_t)st.st_size / 4;
    float *buf = err_malloc(e, count ? count * 4 : 4, "raw float32 input");
    if (!buf) {
        fclose(f);
        return ERR_NOMEM;
    }
    if (fread(buf, 4, count, f) != count) {
        free(buf);
        fclose(f);
        return err_errno(e, ERR_FAIL, "--in %s: read", path);
    }
    fclose(f);
    *out = buf;
    *n = count;
    return ERR_OK;
}

/* Dtypes st_to_f32 reads; these are the tensors `mx quantize` works on. */
static int quantizable(st_dtype_t d)
{
    return d == ST_F32 || d == ST_F64 || d == ST_F16 || d == ST_BF16 || d == ST_F8_E4M3 ||
           d == ST_F8_E5M2;
}

/* Blocks run along the last dimension: rows = product of the others. */
static void rows_cols(const st_tensor_t *t, size_t *rows, size_t *cols)
{
    *cols = t->ndim ? (size_t)t->shape[t->ndim - 1] : 1;
    *rows = *cols ? (size_t)t->nelem / *cols : 0;
}

/* ---- mx quantize ---------------------------------------------------------------- */

static int quantize_raw(const char *in, const char *out, const mx_spec_t *s, uint64_t seed,
                        int threads, err_t *e)
{
    float *x;
    size_t n;
    int rc = read_raw_f32(in, &x, &n, e);
    if (rc)
        return rc;
    mx_fake_quant_flat_parallel(x, x, n, s, seed, 0, 0, threads);
    rc = atomic_write(out, x, n * 4, e);
    free(x);
    return rc;
}

static int add_packed(st_writer_t *w, const st_file_t *f, const st_tensor_t *t, const float *x,
                      const mx_spec_t *s, uint64_t seed, int threads, err_t *e)
{
    size_t rows, cols;
    rows_cols(t, &rows, &cols);
    const mx_format_info_t *fi = mx_format_info(s->format);
    size_t n = (size_t)t->nelem;
    if (!fi->is_mx) { /* plain casts: the cast's own dtype, no scales */
        st_dtype_t d = s->format == MX_BF16 ? ST_BF16 : s->format == MX_FP16 ? ST_F16 : ST_F32;
        void *buf = err_malloc(e, n ? n * 4 : 4, "packed tensor");
        if (!buf)
            return ERR_NOMEM;
        for (size_t i = 0; i < n; i++) {
            if (d == ST_F32) {
                ((float *)buf)[i] = x[i];
                continue;
            }
            uint16_t h = d == ST_BF16 ? half_f32_to_bf16(x[i]) : half_f32_to_f16(x[i]);
            memcpy((uint8_t *)buf + 2 * i, &h, 2);
        }
        int rc = st_writer_add(w, t->name, d, t->ndim, t->shape, buf,
                               n * (size_t)st_dtype_bits(d) / 8, 0, e);
        free(buf);
        return rc;
    }
    if ((n * (size_t)fi->bits) % 8 && mx_pack_dtype(s->format)[0] == 'F')
        return err_set(e, ERR_INPUT,
                       "%s: tensor \"%s\" has %zu elements; %s stores %d-bit codes and needs a "
                       "whole number of bytes", f->path, t->name, n, mx_pack_dtype(s->format),
                       fi->bits);
    char sname[512];
    snprintf(sname, sizeof sname, "%s.scales", t->name);
    if (st_find(f, sname))
        return err_set(e, ERR_INPUT, "%s: tensor \"%s\" already exists; cannot add the scales of "
                       "\"%s\"", f->path, sname, t->name);
    size_t srows, scols;
    mx_pack_scale_shape(rows, cols, MX_AXIS_ROW, s->block, &srows, &scols);
    size_t nel = mx_pack_elem_bytes(s->format, n);
    uint8_t *el = err_malloc(e, nel ? nel : 1, "packed elements");
    size_t nsc = srows * scols;
    uint8_t *sc = el ? err_malloc(e, nsc ? nsc : 1, "scales") : NULL;
    int rc = sc ? ERR_OK : ERR_NOMEM;
    if (!rc)
        rc = mx_pack_encode(x, rows, cols, MX_AXIS_ROW, s, seed, rng_stream(t->name, 0), threads,
                            el, sc, e);
    st_dtype_t d = ST_DTYPE_COUNT;
    if (!rc && st_dtype_from_name(mx_pack_dtype(s->format), &d))
        rc = err_set(e, ERR_FAIL, "no safetensors dtype %s", mx_pack_dtype(s->format));
    if (!rc)
        rc = st_writer_add(w, t->name, d, t->ndim, t->shape, el, nel, 0, e);
    if (!rc) {
        int64_t shape[ST_MAX_DIMS];
        int nd = t->ndim ? t->ndim : 1;
        for (int i = 0; i < t->ndim; i++)
            shape[i] = t->shape[i];
        shape[nd - 1] = (int64_t)scols;
        rc = st_writer_add(w, sname, ST_F8_E8M0, nd, shape, sc, srows * scols, 0, e);
    }
    free(el);
    free(sc);
    return rc;
}

static int quantize_st(const char *in, const char *out, const char *only, bool packed,
                       const mx_spec_t *s, uint64_t seed, int threads, err_t *e)
{
    st_file_t f;
    int rc = st_open(&f, in, e);
    if (rc)
        return rc;
    st_writer_t *w = NULL;
    const st_tensor_t *sel = only ? st_find(&f, only) : NULL;
    if (only && !sel) {
        rc = err_set(e, ERR_INPUT, "%s: no tensor \"%s\" (--tensor)", in, only);
        goto done;
    }
    if (sel && !quantizable(sel->dtype)) {
        rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\" has dtype %s, not a float dtype mx can read "
                     "(F32, F64, F16, BF16, F8_E4M3, F8_E5M2)", in, only, st_dtype_name(sel->dtype));
        goto done;
    }
    if (!(w = st_writer_new(e))) {
        rc = e ? e->code : ERR_NOMEM;
        goto done;
    }
    int count = 0;
    for (int i = 0; i < f.ntensors && !rc; i++) {
        const st_tensor_t *t = &f.tensors[i];
        if (only ? t != sel : !quantizable(t->dtype)) { /* passed through unchanged */
            rc = st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes, 1, e);
            continue;
        }
        size_t n = (size_t)t->nelem;
        float *x = err_malloc(e, n ? n * 4 : 4, "tensor values");
        if (!x) {
            rc = ERR_NOMEM;
            break;
        }
        rc = st_to_f32(&f, t, x, e);
        if (!rc && packed) {
            rc = add_packed(w, &f, t, x, s, seed, threads, e);
        } else if (!rc) {
            size_t rows, cols;
            rows_cols(t, &rows, &cols);
            if (n)
                mx_fake_quant_parallel(x, x, rows, cols, MX_AXIS_ROW, s, seed,
                                       rng_stream(t->name, 0), threads);
            rc = st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, x, n * 4, 0, e);
        }
        free(x);
        count++;
    }
    if (!rc && f.metadata) /* keep the input's metadata */
        for (const cJSON *m = f.metadata->child; m && !rc; m = m->next)
            if (strncmp(m->string, "mx.", 3))
                rc = st_writer_meta(w, m->string, m->valuestring, e);
    char spec[96], num[32];
    mx_spec_format(s, spec, sizeof spec);
    snprintf(num, sizeof num, "%d", count);
    if (!rc)
        rc = st_writer_meta(w, "mx.spec", spec, e);
    if (!rc)
        rc = st_writer_meta(w, "mx.axis", "rows: blocks run along the last dimension", e);
    if (!rc)
        rc = st_writer_meta(w, "mx.tensors_quantized", num, e);
    if (!rc)
        rc = st_writer_meta(w, "mx.content", packed ? "packed" : "dequantized float32", e);
    if (!rc && packed && mx_format_info(s->format)->is_mx)
        rc = st_writer_meta(w, "mx.packing",
                            "value = element * 2^(scale - 127); scales: F8_E8M0 tensor "
                            "<name>.scales, one per block, shape [..., ceil(cols/block)], 0xFF = "
                            "NaN; F4: two codes per byte, low nibble first; F6: four codes in "
                            "three bytes, code i at bits [6i, 6i+6) little endian; I8: two's "
                            "complement, mxint8 units of 2^-6, mxint4 units of 2^-2", e);
    if (!rc && s->round == MX_ROUND_STOCHASTIC)
        rc = st_writer_meta(w, "mx.stochastic",
                            "random word of element (r, c): rng_u32(seed, rng_stream(name, 0), "
                            "r*cols + c)", e);
    if (!rc && s->round == MX_ROUND_STOCHASTIC) {
        snprintf(num, sizeof num, "%llu", (unsigned long long)seed);
        rc = st_writer_meta(w, "mx.seed", num, e);
    }
    if (!rc)
        rc = st_writer_write(w, out, e);
done:
    st_writer_free(w);
    st_close(&f);
    return rc;
}

static int mx_quantize(int argc, char **argv)
{
    const char *format = NULL, *round = NULL, *scale = NULL, *in = NULL, *out = NULL,
               *tensor = NULL;
    long long block = 32, threads = 0;
    uint64_t seed = 0;
    bool packed = false;
    arg_opt_t opts[] = {
        {"format", ARG_STRING, &format, "F", "element format (mxrlhf mx info lists them)"},
        {"block", ARG_INT, &block, "K", "elements per shared scale (default 32)"},
        {"round", ARG_STRING, &round, "R", "nearest | even | trunc (alias floor) | stochastic "
                                            "(default even)"},
        {"scale", ARG_STRING, &scale, "S", "floor (OCP, default) | rceil"},
        {"seed", ARG_U64, &seed, "N", "seed for stochastic rounding (default 0)"},
        {"in", ARG_STRING, &in, "IN", "raw little-endian float32 file, or a .safetensors file"},
        {"out", ARG_STRING, &out, "OUT", "output: raw float32, or .safetensors for such input"},
        {"tensor", ARG_STRING, &tensor, "NAME", "safetensors: only this tensor (others are "
                                                "copied unchanged)"},
        {"packed", ARG_FLAG, &packed, NULL, "safetensors: write MX codes plus <name>.scales "
                                            "(F8_E8M0) instead of dequantized float32"},
        {"threads", ARG_INT, &threads, "T", "threads (default: all cores)"},
    };
    arg_spec_t spec = {
        "mx quantize", "Quantize-dequantize (fake quant) or pack float32 data to an MX format.",
        "--format F [--block K] [--round R] [--scale S] [--seed N] --in IN --out OUT",
        "A raw file is one flat array: blocks of K along it, the last one possibly short;\n"
        "stochastic rounding gives element i the word rng_u32(seed, 0, i). A .safetensors\n"
        "input has every float tensor (or --tensor NAME) quantized with blocks along its\n"
        "last dimension (rows); the other tensors are copied. Output tensors are float32\n"
        "dequantized values, or with --packed the MX element codes (F8_E4M3, F8_E5M2,\n"
        "F6_E3M2, F6_E2M3, F4, I8) plus an F8_E8M0 tensor <name>.scales, with __metadata__\n"
        "describing the spec and packing. Bad input exits 2 and writes nothing.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    mx_spec_t s;
    if (!rc)
        rc = spec_from_options(format, block, round, scale, &s, &e);
    if (!rc && !args_require(in, "in", &e) && !args_require(out, "out", &e)) {
        if (threads < 0 || threads > 4096)
            rc = err_set(&e, ERR_INPUT, "--threads %lld: expected 0..4096", threads);
        else if (ends_with(in, ".safetensors"))
            rc = quantize_st(in, out, tensor, packed, &s, seed, (int)threads, &e);
        else if (tensor || packed)
            rc = err_set(&e, ERR_INPUT, "--%s needs a .safetensors input (got %s)",
                         tensor ? "tensor" : "packed", in);
        else
            rc = quantize_raw(in, out, &s, seed, (int)threads, &e);
    }
    if (!rc && e.code)
        rc = e.code;
    return rc ? cli_report("mx quantize", &e) : 0;
}

/* ---- mx info ------------------------------------------------------------------- */

static int mx_info(int argc, char **argv)
{
    arg_spec_t spec = {"mx info", "Print the element formats and their constants.", "", NULL,
                       NULL, 0, false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("mx info", &e);
    printf("%-11s %-6s %-9s %4s %2s %2s %5s %-14s %-12s %-12s %-4s %s\n", "format", "alias",
           "element", "bits", "E", "M", "emax", "max", "min normal", "min subnorm", "ocp",
           "packed dtype");
    for (int i = 0; i < MX_FORMAT_COUNT; i++) {
        const mx_format_info_t *fi = mx_format_info((mx_format_t)i);
        char mn[32], ms[32];
        int emin = fi->is_int ? 0 : 2 - (1 << (fi->ebits - 1));
        if (fi->is_int)
            snprintf(mn, sizeof mn, "-");
        else
            snprintf(mn, sizeof mn, "2^%d", emin);
        snprintf(ms, sizeof ms, "2^%d", emin - fi->mbits);
        const char *dt = mx_pack_dtype((mx_format_t)i);
        printf("%-11s %-6s %-9s %4d %2d %2d %5d %-14.9g %-12s %-12s %-4s %s\n", fi->name,
               fi->alias ? fi->alias : "-", fi->elem_name, fi->bits, fi->ebits, fi->mbits,
               fi->emax, fi->max_normal, mn, ms, fi->is_mx ? (fi->is_ocp ? "yes" : "no") : "-",
               dt ? dt : (i == MX_BF16 ? "BF16" : i == MX_FP16 ? "F16" : "F32"));
    }
    printf("\nMX formats share one E8M0 scale (F8_E8M0, 2^-127..2^127, 0xFF = NaN) per block\n"
           "of K elements (default 32). int formats are fixed point with emax 0: mxint8 is\n"
           "code * 2^-6, mxint4 code * 2^-2; mxint4 is microxcaling's extension, not OCP.\n"
           "bf16, fp16 and fp32 are plain casts (round to nearest even).\n");
    return 0;
}

/* ---- mx error ------------------------------------------------------------------ */

typedef struct err_stats {
    double sig, noise, max_rel, max_rel_kept;
    size_t n, flushed, skipped;
} err_stats_t;

static void accumulate(err_stats_t *st, const float *x, const float *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(q[i])) {
            st->skipped++;
            continue;
        }
        double d = (double)q[i] - x[i];
        st->sig += (double)x[i] * x[i];
        st->noise += d * d;
        st->n++;
        if (x[i] == 0)
            continue;
        double rel = fabs(d) / fabs(x[i]);
        st->max_rel = rel > st->max_rel ? rel : st->max_rel;
        if (q[i] == 0)
            st->flushed++;
        else
            st->max_rel_kept = rel > st->max_rel_kept ? rel : st->max_rel_kept;
    }
}

static int mx_error(int argc, char **argv)
{
    const char *format = NULL, *round = NULL, *scale = NULL, *in = NULL;
    long long block = 32, count = 1 << 20, threads = 0;
    uint64_t seed = 0;
    arg_opt_t opts[] = {
        {"format", ARG_STRING, &format, "F", "element format"},
        {"block", ARG_INT, &block, "K", "elements per shared scale (default 32)"},
        {"round", ARG_STRING, &round, "R", "rounding (default even)"},
        {"scale", ARG_STRING, &scale, "S", "floor | rceil (default floor)"},
        {"in", ARG_STRING, &in, "IN", "raw float32 or .safetensors data (default: seeded "
                                      "standard normal values)"},
        {"n", ARG_INT, &count, "N", "number of seeded random values (default 1048576)"},
        {"seed", ARG_U64, &seed, "S", "seed of the random data and of stochastic rounding"},
        {"threads", ARG_INT, &threads, "T", "threads (default: all cores)"},
    };
    arg_spec_t spec = {
        "mx error", "Quantization error of a spec: SQNR and maximum relative error.",
        "--format F [--block K] [--round R] [--scale S] [--in IN | --n N --seed S]",
        "sqnr_db = 10 log10(sum x^2 / sum (q - x)^2); max_rel_err = max |q - x| / |x| over\n"
        "nonzero x (1 when some value is flushed to zero); max_rel_err_kept leaves the\n"
        "flushed values out. Non-finite values and NaN blocks are skipped (when nothing is\n"
        "left, exit 2). A raw file is one flat array; safetensors tensors are quantized\n"
        "along their rows.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    mx_spec_t s;
    if (!rc)
        rc = spec_from_options(format, block, round, scale, &s, &e);
    if (!rc && (count < 1 || count > (1LL << 32)))
        rc = err_set(&e, ERR_INPUT, "--n %lld: expected 1..2^32", count);
    if (!rc && (threads < 0 || threads > 4096))
        rc = err_set(&e, ERR_INPUT, "--threads %lld: expected 0..4096", threads);
    if (rc)
        return cli_report("mx error", &e);
    err_stats_t st = {0};
    char source[600];
    if (in && ends_with(in, ".safetensors")) {
        st_file_t f;
        if ((rc = st_open(&f, in, &e)))
            return cli_report("mx error", &e);
        int used = 0;
        for (int i = 0; i < f.ntensors && !rc; i++) {
            const st_tensor_t *t = &f.tensors[i];
            if (!quantizable(t->dtype) || !t->nelem)
                continue;
            size_t n = (size_t)t->nelem, rows, cols;
            float *x = err_malloc(&e, n * 4, "tensor values"), *q = x ? malloc(n * 4) : NULL;
            if (!q) {
                free(x);
                rc = err_set(&e, ERR_NOMEM, "out of memory for tensor \"%s\"", t->name);
                break;
            }
            if (!(rc = st_to_f32(&f, t, x, &e))) {
                rows_cols(t, &rows, &cols);
                mx_fake_quant_parallel(x, q, rows, cols, MX_AXIS_ROW, &s, seed,
                                       rng_stream(t->name, 0), (int)threads);
                accumulate(&st, x, q, n);
                used++;
            }
            free(x);
            free(q);
        }
        st_close(&f);
        if (rc)
            return cli_report("mx error", &e);
        snprintf(source, sizeof source, "%s (%d float tensors, blocks along rows)", in, used);
    } else {
        float *x;
        size_t n;
        if (in) {
            if ((rc = read_raw_f32(in, &x, &n, &e)))
                return cli_report("mx error", &e);
            snprintf(source, sizeof source, "%s (raw float32)", in);
        } else {
            n = (size_t)count;
            if (!(x = err_malloc(&e, n * 4, "random data")))
                return cli_report("mx error", &e);
            uint64_t stream = rng_stream("mx.error", 0);
            for (size_t i = 0; i < n; i++)
                x[i] = (float)rng_normal(seed, stream, i);
            snprintf(source, sizeof source, "seeded standard normal (seed %llu)",
                     (unsigned long long)seed);
        }
        float *q = err_malloc(&e, n ? n * 4 : 4, "quantized data");
        if (!q) {
            free(x);
            return cli_report("mx error", &e);
        }
        mx_fake_quant_flat_parallel(x, q, n, &s, seed, 0, 0, (int)threads);
        accumulate(&st, x, q, n);
        free(x);
        free(q);
    }
    if (st.n == 0) { /* no error to measure, which is not "no error" */
        err_set(&e, ERR_INPUT, "%s: no usable values (%zu non-finite or in NaN blocks "
                "skipped): nothing to measure the error on", source, st.skipped);
        return cli_report("mx error", &e);
    }
    char spec_text[96];
    printf("spec              %s\n", mx_spec_format(&s, spec_text, sizeof spec_text));
    printf("data              %s\n", source);
    printf("values            %zu (%zu non-finite or in NaN blocks skipped)\n", st.n, st.skipped);
    if (st.noise == 0)
        printf("sqnr_db           inf (no error)\n");
    else if (st.sig == 0)
        printf("sqnr_db           -inf (all-zero signal)\n");
    else
        printf("sqnr_db           %.3f\n", 10 * log10(st.sig / st.noise));
    printf("max_rel_err       %.6g\n", st.max_rel);
    printf("max_rel_err_kept  %.6g\n", st.max_rel_kept);
    printf("flushed_to_zero   %zu\n", st.flushed);
    return 0;
}

/* ---- dispatch --------------------------------------------------------------------- */

static void mx_usage(FILE *f)
{
    fprintf(f, "usage: mxrlhf mx <verb> [options]   (mxrlhf mx <verb> --help for more)\n\n"
               "OCP Microscaling (MX) number formats.\n\n"
               "verbs:\n"
               "  quantize   fake-quantize or pack a raw float32 or .safetensors file\n"
               "  info       print the format table\n"
               "  error      SQNR and max relative error of a spec on given or random data\n");
}

int cmd_mx(int argc, char **argv)
{
    if (argc < 1) {
        mx_usage(stderr);
        return ERR_INPUT;
    }
    const char *verb = argv[0];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        mx_usage(stdout);
        return 0;
    }
    if (!strcmp(verb, "quantize"))
        return mx_quantize(argc - 1, argv + 1);
    if (!strcmp(verb, "info"))
        return mx_info(argc - 1, argv + 1);
    if (!strcmp(verb, "error"))
        return mx_error(argc - 1, argv + 1);
    fprintf(stderr, "mxrlhf mx: unknown verb \"%s\" (quantize, info, error)\n", verb);
    return ERR_INPUT;
}
