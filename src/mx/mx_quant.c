/* mx_quant: fake quantization on float32 bit patterns; integer operations only.
 *
 * Definitions (mx.h, docs/mx.md): a block with largest magnitude amax gets the scale
 * exponent s (mxc_scale_exp); an element x becomes q(x * 2^-s) * 2^s, where q rounds to
 * the element grid (quantum 2^(max(floor(log2|y|), emin) - m), subnormals kept) and
 * saturates at the format's largest normal. mxc_elem (mx_core.h) states this directly with
 * 64-bit integers; the fast kernels below compute the same thing per element with a few
 * integer operations, without ever forming x * 2^-s:
 *
 *  - "normal region": the element is a normal number of the element format. Its
 *    quantum is 2^(e - m) with e the float32's own exponent, so rounding is the classic
 *    add-bias-and-mask on the float32 bits (a carry moves into the exponent by itself).
 *  - "subnormal region" (x below 2^(emin + s)): the quantum is the block constant
 *    Q = 2^(emin + s - m); the 24-bit significand is shifted right by a per-element
 *    amount, rounded, and the small integer result is converted back as r * Q (exact).
 *
 * Results are then clamped to max * 2^s by an integer compare (float bit patterns of
 * non-negative numbers order like the numbers). The fast path needs the element
 * format's smallest normal 2^(emin + s) to be a normal float32 (T >= 1 below); blocks
 * whose scale is tinier than that (amax below about 2^-97) take the reference path.
 *
 * Speed: blocks of 8, 16 and 32 get loops with a compile-time trip count, which the
 * compiler vectorises; no division, no libm, no per-element branches.
 */
#include <stdlib.h>
#include <string.h>

#include "mx/mx_internal.h"
#include "util/philox.h"

#define QNAN_BITS 0x7fc00000u


/* ---- the definitions of mx_core.h, out of line for the tests ---------------------- */

mxc_fmt_t mxq_fmt(mx_format_t f)
{
    return mxc_fmt(f);
}

int mxq_scale_exp(const mxc_fmt_t *f, mx_scale_rule_t rule, uint32_t amax)
{
    return mxc_scale_exp(f, rule, amax);
}

uint32_t mxq_elem_ref(const mxc_fmt_t *f, mx_round_t round, int s, uint32_t u, uint32_t rnd)
{
    return mxc_elem(f, round, s, u, rnd);
}

/* ---- block reductions ---------------------------------------------------------- */

ALWAYS_INLINE uint32_t amax_inl(const uint32_t *in, size_t n)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = in[i] & 0x7fffffffu;
        m = a > m ? a : m;
    }
    return m;
}

uint32_t mxq_amax(const uint32_t *in, size_t n)
{
    return amax_inl(in, n);
}

uint32_t mxq_amax_strided(const uint32_t *in, size_t n, size_t stride)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = in[i * stride] & 0x7fffffffu;
        m = a > m ? a : m;
    }
    return m;
}

/* ---- random words for stochastic rounding --------------------------------------- */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MXQ_AVX2 1
#include <immintrin.h>

/* Compiled for AVX2 whatever the build's -march (the sanitizer build has none, and it
 * must test this path too); used only when the CPU has AVX2. */
#define AVX2_FN __attribute__((target("avx2")))

/* (hi, lo) 32-bit halves of the 32 x 32 -> 64-bit products m * c in all 8 lanes:
 * vpmuludq takes the even lanes; the odd lanes are shifted down and done the same. */
static inline AVX2_FN void mulhilo8(__m256i m, __m256i c, __m256i *hi, __m256i *lo)
{
    __m256i pe = _mm256_mul_epu32(m, c);
    __m256i po = _mm256_mul_epu32(m, _mm256_srli_epi64(c, 32));
    *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

/* Philox4x32-10 of the 8 blocks b, b+1, ..., b+7 (low words not wrapping), written
 * as 32 words in block order: out[4i + lane]. */
static AVX2_FN void philox8_avx2(uint64_t b, uint32_t s0, uint32_t s1, uint32_t key0,
                                 uint32_t key1, uint32_t *out)
{
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)b),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i c1 = _mm256_set1_epi32((int)(uint32_t)(b >> 32));
    __m256i c2 = _mm256_set1_epi32((int)s0), c3 = _mm256_set1_epi32((int)s1);
    __m256i k0 = _mm256_set1_epi32((int)key0), k1 = _mm256_set1_epi32((int)key1);
    const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
    const __m256i w0 = _mm256_set1_epi32((int)PHILOX_W0), w1 = _mm256_set1_epi32((int)PHILOX_W1);
    for (int round = 0; round < 10; round++) {
        __m256i hi0, lo0, hi1, lo1;
        mulhilo8(m0, c0, &hi0, &lo0);
        mulhilo8(m1, c2, &hi1, &lo1);
        c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), k0);
        c1 = lo1;
        c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), k1);
        c3 = lo0;
        k0 = _mm256_add_epi32(k0, w0);
        k1 = _mm256_add_epi32(k1, w1);
    }
    /* 4 x 8 -> 8 x 4: block i's words c0[i] c1[i] c2[i] c3[i] side by side */
    __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    _mm256_storeu_si256((__m256i *)(void *)out, _mm256_permute2x128_si256(u0, u1, 0x20));
    _mm256_storeu_si256((__m256i *)(void *)(out + 8), _mm256_permute2x128_si256(u2, u3, 0x20));
    _mm256_storeu_si256((__m256i *)(void *)(out + 16), _mm256_permute2x128_si256(u0, u1, 0x31));
    _mm256_storeu_si256((__m256i *)(void *)(out + 24), _mm256_permute2x128_si256(u2, u3, 0x31));
}
#endif

/* w[j] = rng_u32(seed, stream, index0 + (i0 + j) * stride) for j < n <= RAND_CHUNK.
 * Contiguous indices use all four words of each Philox4x32-10 block (util/philox.h),
 * eight blocks at a time with AVX2 where the CPU has it (the same rounds and constants,
 * lane-parallel); the tests hold the words to rng_u32. */
#define RAND_CHUNK 256

static void fill_rand(const mxq_rand_t *r, size_t i0, uint32_t *w, size_t n)
{
    if (r->stride != 1) {
        for (size_t j = 0; j < n; j++)
            w[j] = philox_u32(r->seed, r->stream, r->index0 + (i0 + j) * r->stride);
        return;
    }
    uint64_t idx = r->index0 + i0, b0 = idx >> 2;
    size_t nblk = (size_t)(((idx + n + 3) >> 2) - b0);
    uint32_t o[RAND_CHUNK + 40];
    const uint32_t s0 = (uint32_t)r->stream, s1 = (uint32_t)(r->stream >> 32);
    const uint32_t key0 = (uint32_t)r->seed, key1 = (uint32_t)(r->seed >> 32);
    size_t j = 0;
#ifdef MXQ_AVX2
    if (__builtin_cpu_supports("avx2"))
    /* 8 blocks per step (the last step may compute a few spare blocks; o has room)
     * while the counters' low words do not wrap */
    for (; j < nblk && (uint32_t)(b0 + j) <= 0xFFFFFFF7u; j += 8)
        philox8_avx2(b0 + j, s0, s1, key0, key1, o + 4 * j);
#endif
    for (; j < nblk; j++) {
        uint64_t blk = b0 + j;
        uint32_t *c = o + 4 * j;
        c[0] = (uint32_t)blk, c[1] = (uint32_t)(blk >> 32), c[2] = s0, c[3] = s1;
        philox4x32_10(c, key0, key1);
    }
    memcpy(w, o + (idx & 3), n * 4);
}

/* ---- the fast element kernels ----------------------------------------------------- */

/* Deterministic rounding of n elements (mxc_elem_det); R is a compile-time constant at each
 * use. Element i uses T[i*ps], Q[i*ps], maxb[i*ps] (ps = 0: one block; 1: per element). */
ALWAYS_INLINE void elems_det(const mxc_fmt_t *f, mx_round_t R, const int32_t *Tp,
                             const float *Qp, const uint32_t *maxbp, size_t ps,
                             const uint32_t *in, uint32_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = mxc_elem_det(f, R, Tp[i * ps], Qp[i * ps], maxbp[i * ps], in[i]);
}

/* Stochastic rounding with the words w[0..n) (mxc_elem_sto). */
ALWAYS_INLINE void elems_sto(const mxc_fmt_t *f, const int32_t *Tp, const float *Qp,
                             const uint32_t *maxbp, size_t ps, const uint32_t *in,
                             uint32_t *out, const uint32_t *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = mxc_elem_sto(f, Tp[i * ps], Qp[i * ps], maxbp[i * ps], in[i], w[i]);
}

/* Element codes of n dequantized values v (float32 bits) whose block scale is 2^s:
 * inv[i*ps] = 2^-s and sb[i*ps] = s << 23. */
ALWAYS_INLINE void codes_kernel(const mxc_fmt_t *f, int is_int, int bits, const uint32_t *v,
                                const float *invp, const uint32_t *sbp, size_t ps,
                                uint8_t *codes, size_t n)
{
    if (is_int) {
        const float pm = mxq_pow2f(f->m); /* v * 2^-s is the element (|y| < 2) */
        for (size_t i = 0; i < n; i++)
            codes[i] = (uint8_t)(int8_t)(int32_t)((hd_u2f(v[i]) * invp[i * ps]) * pm);
        return;
    }
    const int m = f->m, emin = f->emin;
    for (size_t i = 0; i < n; i++) {
        /* Under rceil a block near FLT_MAX can hold an element whose value times the
         * scale is 2^128: fake quant gives Inf (IEEE), and Inf's bits minus the scale's
         * exponent are exactly that element. */
        uint32_t vb = v[i];
        uint32_t inf = (uint32_t)-(int32_t)((vb & 0x7fffffffu) == 0x7f800000u);
        uint32_t yb = ((vb - sbp[i * ps]) & inf) | (hd_f2u(hd_u2f(vb) * invp[i * ps]) & ~inf);
        codes[i] = mxq_enc_fp(yb, m, emin, bits);
    }
}

static void elems_slow(const mxc_fmt_t *f, mx_round_t round, int s, const uint32_t *in,
                       uint32_t *out, size_t n, const mxq_rand_t *rand)
{
    uint32_t w[RAND_CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += RAND_CHUNK) {
        size_t len = n - i0 < RAND_CHUNK ? n - i0 : RAND_CHUNK;
        if (round == MX_ROUND_STOCHASTIC)
            fill_rand(rand, i0, w, len);
        for (size_t j = 0; j < len; j++)
            out[i0 + j] = mxc_elem(f, round, s, in[i0 + j],
                                   round == MX_ROUND_STOCHASTIC ? w[j] : 0);
    }
}

/* One block's elements; n may be a compile-time constant at the call site. */
ALWAYS_INLINE void elems_inl(const mxc_fmt_t *f, mx_round_t R, int s, const uint32_t *in,
                             uint32_t *out, size_t n, const mxq_rand_t *rand)
{
    if (__builtin_expect(s == MXC_NAN_SCALE, 0)) {
        for (size_t i = 0; i < n; i++)
            out[i] = QNAN_BITS;
        return;
    }
    if (__builtin_expect(!mxc_fast_ok(f, s), 0)) { /* s is not the NaN scale here */
        elems_slow(f, R, s, in, out, n, rand);
        return;
    }
    mxc_kp_t p = mxc_kparams(f, s);
    if (R != MX_ROUND_STOCHASTIC) {
        elems_det(f, R, &p.T, &p.Q, &p.maxb, 0, in, out, n);
        return;
    }
    uint32_t w[RAND_CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += RAND_CHUNK) {
        size_t len = n - i0 < RAND_CHUNK ? n - i0 : RAND_CHUNK;
        fill_rand(rand, i0, w, len);
        elems_sto(f, &p.T, &p.Q, &p.maxb, 0, in + i0, out + i0, w, len);
    }
}

void mxq_elems(const mxc_fmt_t *f, mx_round_t round, int s, const uint32_t *in, uint32_t *out,
               size_t n, const mxq_rand_t *rand)
{
    switch (round) {
    case MX_ROUND_NEAREST:
        elems_inl(f, MX_ROUND_NEAREST, s, in, out, n, rand);
        break;
    case MX_ROUND_EVEN:
        elems_inl(f, MX_ROUND_EVEN, s, in, out, n, rand);
        break;
    case MX_ROUND_TRUNC:
        elems_inl(f, MX_ROUND_TRUNC, s, in, out, n, rand);
        break;
    default:
        elems_inl(f, MX_ROUND_STOCHASTIC, s, in, out, n, rand);
        break;
    }
}

int mxq_block(const mxc_fmt_t *f, const mx_spec_t *spec, const uint32_t *in, uint32_t *out,
              size_t n, const mxq_rand_t *rand)
{
    int s = mxc_scale_exp(f, spec->scale, mxq_amax(in, n));
    mxq_elems(f, spec->round, s, in, out, n, rand);
    return s;
}

/* ---- plain casts ------------------------------------------------------------------ */

void mxq_cast_bf16(const uint32_t *in, uint32_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = mxc_cast_bf16(in[i]);
}

void mxq_cast_fp16(const uint32_t *in, uint32_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = mxc_cast_fp16(in[i]);
}

/* ---- drivers ---------------------------------------------------------------------- */

/* Codes of one block (constant scale). NaN-scale blocks get zero codes. */
ALWAYS_INLINE void block_codes(const mxc_fmt_t *f, int is_int, int bits, int s,
                               const uint32_t *v, uint8_t *codes, size_t n)
{
    if (s == MXC_NAN_SCALE) {
        memset(codes, 0, n);
        return;
    }
    float inv = mxq_pow2f(-s);
    uint32_t sb = (uint32_t)s << 23;
    codes_kernel(f, is_int, bits, v, &inv, &sb, 0, codes, n);
}

void mxq_codes(mx_format_t fmt, const float *v, size_t n, uint8_t sb, uint8_t *codes)
{
    const mxc_fmt_t fm = mxc_fmt(fmt), *f = &fm;
    block_codes(f, mx_format_info(fmt)->is_int, mx_format_info(fmt)->bits,
                sb == 0xFF ? MXC_NAN_SCALE : (int)sb - 127, (const uint32_t *)(const void *)v,
                codes, n);
}

/* Blocks of k along n contiguous values, one block at a time (for long blocks, where
 * the per-block work is amortised anyway). */
static void flat_blocks(const mxc_fmt_t *f, const mx_spec_t *sp, const uint32_t *in,
                        uint32_t *out, size_t n, uint64_t seed, uint64_t stream,
                        uint64_t index0, uint8_t *scales, uint8_t *codes)
{
    size_t k = (size_t)sp->block;
    const mx_format_info_t *fi = mx_format_info(sp->format);
    for (size_t b = 0; b < n; b += k) {
        size_t len = n - b < k ? n - b : k;
        mxq_rand_t rand = {seed, stream, index0 + b, 1};
        int s = mxc_scale_exp(f, sp->scale, mxq_amax(in + b, len));
        mxq_elems(f, sp->round, s, in + b, out + b, len, &rand);
        if (scales)
            scales[b / k] = mxq_scale_byte(s);
        if (codes)
            block_codes(f, fi->is_int, fi->bits, s, out + b, codes + b, len);
    }
}

/* Short blocks (k <= CHUNK / 2) go through chunks of about CHUNK elements: first every
 * block's scale, with the block constants broadcast into per-element arrays; then one
 * long vectorised loop over the chunk; then the rare blocks the fast kernel does not
 * cover (Inf/NaN, tiny scales) are redone from a saved copy of the input. The
 * per-block work is thus a few scalar operations and the element work is uniform. */
#define CHUNK 256

typedef struct chunk_ws {
    int32_t T[CHUNK];
    float Q[CHUNK];
    uint32_t maxb[CHUNK];
    float inv[CHUNK];
    uint32_t sb[CHUNK];
    uint32_t w[CHUNK];
    uint32_t saved[CHUNK];
    int s[CHUNK];
} chunk_ws_t;

ALWAYS_INLINE void chunk_run(const mxc_fmt_t *f, const mx_spec_t *sp, mx_round_t R, size_t k,
                             const uint32_t *in, uint32_t *out, size_t C, uint64_t seed,
                             uint64_t stream, uint64_t index0, uint8_t *scales, uint8_t *codes,
                             int is_int, int bits, chunk_ws_t *ws)
{
    size_t nb = C / k;
    int special = 0;
    for (size_t b = 0; b < nb; b++) {
        int s = mxc_scale_exp(f, sp->scale, amax_inl(in + b * k, k));
        ws->s[b] = s;
        if (scales)
            scales[b] = mxq_scale_byte(s);
        mxc_kp_t p = {1, 1.0f, 0};
        if (!mxc_fast_ok(f, s))
            special = 1;
        else
            p = mxc_kparams(f, s);
        for (size_t j = 0; j < k; j++) {
            ws->T[b * k + j] = p.T;
            ws->Q[b * k + j] = p.Q;
            ws->maxb[b * k + j] = p.maxb;
        }
    }
    if (special)
        memcpy(ws->saved, in, C * 4); /* in may be out */
    if (R == MX_ROUND_STOCHASTIC) {
        mxq_rand_t rand = {seed, stream, index0, 1};
        fill_rand(&rand, 0, ws->w, C);
        elems_sto(f, ws->T, ws->Q, ws->maxb, 1, in, out, ws->w, C);
    } else {
        elems_det(f, R, ws->T, ws->Q, ws->maxb, 1, in, out, C);
    }
    if (special)
        for (size_t b = 0; b < nb; b++)
            if (!mxc_fast_ok(f, ws->s[b])) {
                mxq_rand_t rand = {seed, stream, index0 + b * k, 1};
                elems_inl(f, R, ws->s[b], ws->saved + b * k, out + b * k, k, &rand);
            }
    if (!codes)
        return;
    for (size_t b = 0; b < nb; b++) {
        int s = ws->s[b] == MXC_NAN_SCALE ? 0 : ws->s[b];
        float inv = mxq_pow2f(-s);
        uint32_t sbits = (uint32_t)s << 23;
        for (size_t j = 0; j < k; j++) {
            ws->inv[b * k + j] = inv;
            ws->sb[b * k + j] = sbits;
        }
    }
    codes_kernel(f, is_int, bits, out, ws->inv, ws->sb, 1, codes, C);
    if (special)
        for (size_t b = 0; b < nb; b++)
            if (ws->s[b] == MXC_NAN_SCALE)
                memset(codes + b * k, 0, k);
}

ALWAYS_INLINE void flat_chunks(const mxc_fmt_t *f, const mx_spec_t *sp, mx_round_t R,
                               size_t k, const uint32_t *in, uint32_t *out, size_t n,
                               uint64_t seed, uint64_t stream, uint64_t index0,
                               uint8_t *scales, uint8_t *codes)
{
    const mx_format_info_t *fi = mx_format_info(sp->format);
    chunk_ws_t ws;
    size_t C = CHUNK / k * k, c0 = 0;
    for (; c0 + C <= n; c0 += C)
        chunk_run(f, sp, R, k, in + c0, out + c0, C, seed, stream, index0 + c0,
                  scales ? scales + c0 / k : NULL, codes ? codes + c0 : NULL, fi->is_int,
                  fi->bits, &ws);
    if (c0 < n) /* the rest, short block included, one block at a time */
        flat_blocks(f, sp, in + c0, out + c0, n - c0, seed, stream, index0 + c0,
                    scales ? scales + c0 / k : NULL, codes ? codes + c0 : NULL);
}

ALWAYS_INLINE void flat_round(const mxc_fmt_t *f, const mx_spec_t *sp, mx_round_t R,
                              const uint32_t *in, uint32_t *out, size_t n, uint64_t seed,
                              uint64_t stream, uint64_t index0, uint8_t *scales, uint8_t *codes)
{
    switch (sp->block) {
    case 8:
        flat_chunks(f, sp, R, 8, in, out, n, seed, stream, index0, scales, codes);
        break;
    case 16:
        flat_chunks(f, sp, R, 16, in, out, n, seed, stream, index0, scales, codes);
        break;
    case 32:
        flat_chunks(f, sp, R, 32, in, out, n, seed, stream, index0, scales, codes);
        break;
    default:
        if (sp->block <= CHUNK / 2)
            flat_chunks(f, sp, R, (size_t)sp->block, in, out, n, seed, stream, index0, scales,
                        codes);
        else
            flat_blocks(f, sp, in, out, n, seed, stream, index0, scales, codes);
        break;
    }
}

void mxq_flat(const float *in, float *out, size_t n, const mx_spec_t *spec, uint64_t seed,
              uint64_t stream, uint64_t index0, uint8_t *scales, uint8_t *codes)
{
    const uint32_t *ui = (const uint32_t *)(const void *)in;
    uint32_t *uo = (uint32_t *)(void *)out;
    const mxc_fmt_t fm = mxc_fmt(spec->format), *f = &fm;
    switch (spec->round) {
    case MX_ROUND_NEAREST:
        flat_round(f, spec, MX_ROUND_NEAREST, ui, uo, n, seed, stream, index0, scales, codes);
        break;
    case MX_ROUND_EVEN:
        flat_round(f, spec, MX_ROUND_EVEN, ui, uo, n, seed, stream, index0, scales, codes);
        break;
    case MX_ROUND_TRUNC:
        flat_round(f, spec, MX_ROUND_TRUNC, ui, uo, n, seed, stream, index0, scales, codes);
        break;
    default:
        flat_round(f, spec, MX_ROUND_STOCHASTIC, ui, uo, n, seed, stream, index0, scales, codes);
        break;
    }
}

void mx_fake_quant_flat(const float *in, float *out, size_t n, const mx_spec_t *spec,
                        uint64_t seed, uint64_t stream, uint64_t index0)
{
    const uint32_t *ui = (const uint32_t *)(const void *)in;
    uint32_t *uo = (uint32_t *)(void *)out;
    switch (spec->format) {
    case MX_FP32:
        if (in != out)
            memmove(out, in, n * sizeof *in);
        return;
    case MX_BF16:
        mxq_cast_bf16(ui, uo, n);
        return;
    case MX_FP16:
        mxq_cast_fp16(ui, uo, n);
        return;
    default:
        mxq_flat(in, out, n, spec, seed, stream, index0, NULL, NULL);
        return;
    }
}

/* Column blocks over the rectangle rows [r0, r1) x cols [c0, c1) of a matrix with
 * `cols` columns; r0 is a multiple of the block. Each column block is gathered into a
 * contiguous buffer (tiles of several columns), rounded there, and scattered back. */
#define COL_BUF 4096

static void cols_rect(const uint32_t *in, uint32_t *out, size_t cols, size_t r0, size_t r1,
                      size_t c0, size_t c1, const mx_spec_t *spec, uint64_t seed,
                      uint64_t stream, uint8_t *scales)
{
    const mxc_fmt_t fm = mxc_fmt(spec->format), *f = &fm;
    size_t k = (size_t)spec->block;
    uint32_t buf[COL_BUF];
    for (size_t rb = r0; rb < r1; rb += k) {
        size_t kk = r1 - rb < k ? r1 - rb : k;
        if (kk <= COL_BUF) {
            size_t W = COL_BUF / kk;
            for (size_t cb = c0; cb < c1; cb += W) {
                size_t w = c1 - cb < W ? c1 - cb : W;
                for (size_t i = 0; i < kk; i++)
                    for (size_t c = 0; c < w; c++)
                        buf[c * kk + i] = in[(rb + i) * cols + cb + c];
                for (size_t c = 0; c < w; c++) {
                    mxq_rand_t rand = {seed, stream, rb * cols + cb + c, cols};
                    int s = mxq_block(f, spec, buf + c * kk, buf + c * kk, kk, &rand);
                    if (scales)
                        scales[rb / k * cols + cb + c] = mxq_scale_byte(s);
                }
                for (size_t i = 0; i < kk; i++)
                    for (size_t c = 0; c < w; c++)
                        out[(rb + i) * cols + cb + c] = buf[c * kk + i];
            }
        } else {
            /* a block longer than the buffer: one column at a time, in pieces */
            for (size_t c = c0; c < c1; c++) {
                int s = mxc_scale_exp(f, spec->scale,
                                      mxq_amax_strided(in + rb * cols + c, kk, cols));
                if (scales)
                    scales[rb / k * cols + c] = mxq_scale_byte(s);
                for (size_t i0 = 0; i0 < kk; i0 += COL_BUF) {
                    size_t len = kk - i0 < COL_BUF ? kk - i0 : COL_BUF;
                    for (size_t i = 0; i < len; i++)
                        buf[i] = in[(rb + i0 + i) * cols + c];
                    mxq_rand_t rand = {seed, stream, (rb + i0) * cols + c, cols};
                    mxq_elems(f, spec->round, s, buf, buf, len, &rand);
                    for (size_t i = 0; i < len; i++)
                        out[(rb + i0 + i) * cols + c] = buf[i];
                }
            }
        }
    }
}

void mx_fake_quant(const float *in, float *out, size_t rows, size_t cols, mx_axis_t axis,
                   const mx_spec_t *spec, uint64_t seed, uint64_t stream)
{
    const mx_format_info_t *fi = mx_format_info(spec->format);
    if (!fi->is_mx || axis == MX_AXIS_ROW) {
        if (!fi->is_mx || cols % (size_t)spec->block == 0) {
            /* the blocks of consecutive rows line up: one flat pass */
            mx_fake_quant_flat(in, out, rows * cols, spec, seed, stream, 0);
            return;
        }
        for (size_t r = 0; r < rows; r++)
            mx_fake_quant_flat(in + r * cols, out + r * cols, cols, spec, seed, stream, r * cols);
        return;
    }
    cols_rect((const uint32_t *)(const void *)in, (uint32_t *)(void *)out, cols, 0, rows, 0,
              cols, spec, seed, stream, NULL);
}

void mxq_cols(const float *in, float *out, size_t rows, size_t cols, const mx_spec_t *spec,
              uint64_t seed, uint64_t stream, size_t r0, size_t r1, uint8_t *scales)
{
    cols_rect((const uint32_t *)(const void *)in, (uint32_t *)(void *)out, cols, r0, r1, 0, cols,
              spec, seed, stream, scales);
}

/* ---- all cores -------------------------------------------------------------------- */

#include <omp.h>

/* Work items of about 16 Ki elements, whole blocks each. */
static size_t chunk_elems(int block)
{
    size_t k = (size_t)(block > 0 ? block : 1);
    size_t c = (16384 / k) * k;
    return c ? c : k;
}

void mx_fake_quant_flat_parallel(const float *in, float *out, size_t n, const mx_spec_t *spec,
                                 uint64_t seed, uint64_t stream, uint64_t index0, int threads)
{
    if (threads <= 0)
        threads = omp_get_max_threads();
    size_t cs = chunk_elems(mx_format_info(spec->format)->is_mx ? spec->block : 1);
    long nchunks = (long)((n + cs - 1) / cs);
    if (threads == 1 || nchunks <= 1) {
        mx_fake_quant_flat(in, out, n, spec, seed, stream, index0);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long c = 0; c < nchunks; c++) {
        size_t b = (size_t)c * cs, len = n - b < cs ? n - b : cs;
        mx_fake_quant_flat(in + b, out + b, len, spec, seed, stream, index0 + b);
    }
}

void mx_fake_quant_parallel(const float *in, float *out, size_t rows, size_t cols,
                            mx_axis_t axis, const mx_spec_t *spec, uint64_t seed,
                            uint64_t stream, int threads)
{
    if (threads <= 0)
        threads = omp_get_max_threads();
    const mx_format_info_t *fi = mx_format_info(spec->format);
    if (!fi->is_mx || (axis == MX_AXIS_ROW && cols % (size_t)spec->block == 0)) {
        mx_fake_quant_flat_parallel(in, out, rows * cols, spec, seed, stream, 0, threads);
        return;
    }
    if (threads == 1) {
        mx_fake_quant(in, out, rows, cols, axis, spec, seed, stream);
        return;
    }
    size_t k = (size_t)spec->block;
    if (axis == MX_AXIS_ROW) {
        size_t cs = chunk_elems(spec->block), per_row = (cols + cs - 1) / cs;
        long items = (long)(rows * per_row);
#pragma omp parallel for schedule(static) num_threads(threads)
        for (long it = 0; it < items; it++) {
            size_t r = (size_t)it / per_row, b = ((size_t)it % per_row) * cs;
            size_t len = cols - b < cs ? cols - b : cs;
            mx_fake_quant_flat(in + r * cols + b, out + r * cols + b, len, spec, seed, stream,
                               r * cols + b);
        }
        return;
    }
    /* columns: items are (group of k rows) x (strip of 256 columns) */
    size_t groups = (rows + k - 1) / k, strip = 256, strips = (cols + strip - 1) / strip;
    long items = (long)(groups * strips);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long it = 0; it < items; it++) {
        size_t g = (size_t)it / strips, st = (size_t)it % strips;
        size_t r0 = g * k, r1 = r0 + k < rows ? r0 + k : rows;
        size_t c0 = st * strip, c1 = c0 + strip < cols ? c0 + strip : cols;
        cols_rect((const uint32_t *)(const void *)in, (uint32_t *)(void *)out, cols, r0, r1, c0,
                  c1, spec, seed, stream, NULL);
    }
}
