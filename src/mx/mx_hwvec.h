/* mx_hwvec: the test files of the MX processing elements, text read by every test bench
 * (docs/hardware.md, "Vector files" and "GEMM cases"): vectors, one block each, and GEMM
 * cases for the PE array.
 *
 * One vector per line, fields separated by single spaces:
 *
 *     <format> <k> <scale_a> <a_1> ... <a_k> <scale_b> <b_1> ... <b_k> <expected>
 *
 *   format    mxfp8_e4m3 mxfp8_e5m2 mxfp6_e3m2 mxfp6_e2m3 mxfp4_e2m1 mxint8
 *   k         8, 16 or 32
 *   scale_*   the E8M0 byte, 2 lowercase hex digits (ff, NaN, is refused)
 *   a_i, b_i  element codes in lowercase hex: 2 digits for 8- and 6-bit codes (6-bit:
 *             00..3f), 1 digit for 4-bit codes; FP8 NaN and E5M2 infinity codes are
 *             refused (int8 0x80 = -128 is accepted, though quantizing never writes it)
 *   expected  the block result (mx_block_dot) as binary32 bits, 8 lowercase hex digits
 *
 * A line starting with '#' is a comment; empty lines are skipped; a line may end in
 * "\r\n". Anything else is an error naming the file, the line and the field. The
 * expected value is read as given (a hand-written file may be wrong; the benches say
 * which vectors do not match).
 *
 * The writers: random vectors with edge cases (mx_hwvec_random) and vectors drawn from
 * two real float32 matrices quantized along their rows (mx_hwvec_from_matrices). */
#ifndef MXRLHF_MX_MX_HWVEC_H
#define MXRLHF_MX_MX_HWVEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mx/mx.h"
#include "util/err.h"

#define MX_HWVEC_KMAX 32
#define MX_HWVEC_NFORMATS 6
#define MX_HWVEC_LINE_MAX 256 /* longest line: k = 32, 8-bit codes, 218 characters */

typedef struct mx_hwvec {
    mx_format_t format;
    int k;                        /* 8, 16 or 32 */
    uint8_t sa, sb;               /* E8M0 bytes */
    uint8_t a[MX_HWVEC_KMAX];     /* codes, one per byte */
    uint8_t b[MX_HWVEC_KMAX];
    uint32_t expected;            /* binary32 bits */
} mx_hwvec_t;

/* The six formats of the file, in the order above. */
extern const mx_format_t mx_hwvec_formats[MX_HWVEC_NFORMATS];
bool mx_hwvec_format_ok(mx_format_t f);

/* Hex digits of one element code of f: 1 for 4-bit codes, else 2. */
int mx_hwvec_code_digits(mx_format_t f);

/* Parses one line (len characters, no newline needed). *got = false for a comment or
 * an empty line. Errors (ERR_INPUT) read "<ctx>:<lineno>: <field>: <what was expected>". */
int mx_hwvec_parse_line(const char *line, size_t len, const char *ctx, long lineno,
                        mx_hwvec_t *v, bool *got, err_t *e);

/* Parses a whole text into a new array (*out, *n; free(*out)). */
int mx_hwvec_parse(const char *text, size_t len, const char *ctx, mx_hwvec_t **out, size_t *n,
                   err_t *e);

/* Reads and parses a file. */
int mx_hwvec_load(const char *path, mx_hwvec_t **out, size_t *n, err_t *e);

/* The line of v (no newline) into buf; returns its length, or -1 when it does not fit or
 * v is not a valid vector. */
int mx_hwvec_format_line(const mx_hwvec_t *v, char *buf, size_t cap);

/* Sets v->expected to mx_block_dot of its operands (checks them too). */
int mx_hwvec_compute(mx_hwvec_t *v, err_t *e);

/* Writes a file: the comment lines of `header` (each line prefixed with "# "), then one
 * line per vector; atomically. */
int mx_hwvec_write(const char *path, const char *header, const mx_hwvec_t *v, size_t n,
                   err_t *e);

/* Random vector `index` of format f and block k, expected filled in. The case is chosen by
 * the index: index % 8 = 0 a zero block (zero codes of both signs), 1 the largest
 * magnitudes with random signs, 2 scales near 2^127 (results that overflow to infinity),
 * 3 scales near 2^-127 (results in the float32 subnormals or rounding to zero), 4 a block
 * that cancels (pairs of opposite products: an exact zero, or the little that is left),
 * 5-7 uniformly random codes and scales. Every random number is rng_u32(seed, stream,
 * ...). */
int mx_hwvec_random(mx_format_t f, int k, uint64_t seed, uint64_t stream, uint64_t index,
                    mx_hwvec_t *v, err_t *e);

/* count random vectors for each of the nf formats and nk block sizes, format by format,
 * k by k: out[(fi * nk + ki) * count + i] is mx_hwvec_random(f[fi], k[ki], seed,
 * stream = MX_HWVEC_RANDOM_STREAM + fi * 3 + ki, i). out holds nf * nk * count vectors. */
#define MX_HWVEC_RANDOM_STREAM 100
int mx_hwvec_random_set(const mx_format_t *f, int nf, const int *k, int nk, size_t count,
                        uint64_t seed, mx_hwvec_t *out, err_t *e);

/* `count` vectors from real operands: x (M, K) and w (N, K) row-major float32, both
 * quantized along K with {f, k, even, floor} (the forward GEMM y = x·wᵀ of a linear
 * layer); vector i takes row m of x, row n of w and block j with (m, n, j) drawn from
 * rng_u32(seed, stream, 3i .. 3i+2). K must be a multiple of k. */
int mx_hwvec_from_matrices(const float *x, size_t M, const float *w, size_t N, size_t K,
                           mx_format_t f, int k, uint64_t seed, uint64_t stream, size_t count,
                           mx_hwvec_t *out, err_t *e);

/* ---- GEMM cases ------------------------------------------------------------------------
 *
 * A GEMM y (M, N) = the accumulate-mode chain over K / k blocks (mx_block_gemm) of a (M, K)
 * in format fa and b (N, K) in fb, both with blocks of k along K. The file:
 *
 *     gemm <fa> <fb> <k> <M> <N> <K>
 *     a <scale> <k codes> <scale> <k codes> ...     M lines: row m of a, K / k blocks
 *     b <scale> <k codes> ...                       N lines: row n of b
 *     y <N binary32 values, 8 hex digits each>      M lines: the expected outputs
 *
 * with the vector format's fields (formats, 2-digit scales, 1- or 2-digit codes); '#'
 * comment lines and empty lines anywhere. M, N, K <= 65536, K a multiple of k, and no
 * matrix (a, b or y) over MX_HWGEMM_MAX elements. */
#define MX_HWGEMM_MAX (1L << 24)
typedef struct mx_hwgemm {
    mx_format_t fa, fb;
    int k;
    size_t M, N, K;
    uint8_t *a, *as;    /* (M, K) codes, (M, K/k) scales */
    uint8_t *b, *bs;    /* (N, K), (N, K/k) */
    uint32_t *y;        /* (M, N) binary32 bits */
} mx_hwgemm_t;

void mx_hwgemm_free(mx_hwgemm_t *g);

int mx_hwgemm_parse(const char *text, size_t len, const char *ctx, mx_hwgemm_t *out, err_t *e);
int mx_hwgemm_load(const char *path, mx_hwgemm_t *out, err_t *e);
int mx_hwgemm_write(const char *path, const char *header, const mx_hwgemm_t *g, err_t *e);

/* A case from real operands: x (M, K) quantized with spec sa, w (N, K) with spec sb (MX
 * formats of the file, equal blocks of 8, 16 or 32), both along K; y from mx_block_gemm. */
int mx_hwgemm_from_matrices(const float *x, size_t M, const float *w, size_t N, size_t K,
                            const mx_spec_t *sa, const mx_spec_t *sb, mx_hwgemm_t *out,
                            err_t *e);

/* The C reference on a case: how many of the M x N outputs equal y (bit for bit), and
 * the first mismatch's index (or -1). */
int mx_hwgemm_check(const mx_hwgemm_t *g, size_t *matches, long *first_bad, err_t *e);

#endif
