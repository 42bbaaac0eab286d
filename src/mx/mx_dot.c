/* mx_dot: reference block dot product (see mx_dot.h). Written for clarity, not speed:
 * 128-bit block sums and a 768-bit two's-complement accumulator. */
#include "mx/mx_dot.h"

#include <stdlib.h>
#include <string.h>

#include "mx/mx_internal.h"
#include "mx/mx_pack.h"

/* Accumulator: NL 64-bit limbs, little end first; bit i weighs 2^(i - LSB).
 * Range: an MX product's last bit is at least 2^(-16-16-127-127) = 2^-286; a block sum
 * stays below 2^(84 + 254 - 2) for blocks up to 2^20; 768 bits leave > 100 bits of
 * headroom for the number of blocks. */
#define NL 12
#define LSB 320

typedef struct big {
    uint64_t w[NL];
} big_t;

typedef unsigned __int128 u128;
typedef __int128 i128;

static void big_add_shifted(big_t *acc, i128 p, int shift)
{
    uint64_t ext = p < 0 ? ~0ull : 0;
    big_t t;
    u128 u = (u128)p;
    uint64_t lo = (uint64_t)u, hi = (uint64_t)(u >> 64);
    int li = shift / 64, bi = shift % 64;
    uint64_t x0 = lo << bi;
    uint64_t x1 = bi ? (hi << bi) | (lo >> (64 - bi)) : hi;
    uint64_t x2 = bi ? (ext << bi) | (hi >> (64 - bi)) : ext;
    for (int i = 0; i < NL; i++)
        t.w[i] = i < li ? 0 : ext;
    t.w[li] = x0;
    if (li + 1 < NL)
        t.w[li + 1] = x1;
    if (li + 2 < NL)
        t.w[li + 2] = x2;
    u128 carry = 0;
    for (int i = 0; i < NL; i++) {
        u128 s = (u128)acc->w[i] + t.w[i] + carry;
        acc->w[i] = (uint64_t)s;
        carry = s >> 64;
    }
}

static int big_neg_p(const big_t *b)
{
    return (int)(b->w[NL - 1] >> 63);
}

static void big_negate(big_t *b)
{
    u128 carry = 1;
    for (int i = 0; i < NL; i++) {
        u128 s = (u128)(~b->w[i]) + carry;
        b->w[i] = (uint64_t)s;
        carry = s >> 64;
    }
}

static int big_top(const big_t *b)
{
    for (int i = NL - 1; i >= 0; i--)
        if (b->w[i])
            return i * 64 + 63 - __builtin_clzll(b->w[i]);
    return -1;
}

static int big_bit(const big_t *b, int i)
{
    return i >= 0 && i < NL * 64 ? (int)((b->w[i / 64] >> (i % 64)) & 1) : 0;
}

static int big_any_below(const big_t *b, int i) /* any of bits [0, i) set */
{
    for (int l = 0; l < NL && l * 64 < i; l++) {
        int nb = i - l * 64;
        uint64_t m = nb >= 64 ? ~0ull : (1ull << nb) - 1;
        if (b->w[l] & m)
            return 1;
    }
    return 0;
}

static void big_clear_below(big_t *b, int i)
{
    for (int l = 0; l < NL && l * 64 < i; l++) {
        int nb = i - l * 64;
        b->w[l] &= nb >= 64 ? 0 : ~((1ull << nb) - 1);
    }
}

static uint64_t big_bits64(const big_t *b, int lo) /* bits [lo, lo + 64) */
{
    uint64_t r = 0;
    for (int i = 0; i < 64; i++)
        r |= (uint64_t)big_bit(b, lo + i) << i;
    return r;
}

/* Rounds a non-negative magnitude so that no bit below rp remains. */
static void big_round_mag(big_t *b, int rp, mx_round_t mode)
{
    if (rp <= 0)
        return;
    int half = big_bit(b, rp - 1), sticky = big_any_below(b, rp - 1), lsb = big_bit(b, rp);
    big_clear_below(b, rp);
    int up = mode == MX_ROUND_NEAREST ? half
             : mode == MX_ROUND_EVEN  ? half && (sticky || lsb)
                                      : 0;
    if (up)
        big_add_shifted(b, 1, rp);
}

/* Rounds the signed accumulator to p significant bits (sign-magnitude rounding). */
static void big_round_sig(big_t *b, int p, mx_round_t mode)
{
    int neg = big_neg_p(b);
    if (neg)
        big_negate(b);
    int h = big_top(b);
    if (h >= 0)
        big_round_mag(b, h - (p - 1), mode);
    if (neg)
        big_negate(b);
}

static float big_to_f32(big_t *b)
{
    int neg = big_neg_p(b);
    if (neg)
        big_negate(b);
    int h = big_top(b);
    if (h < 0)
        return 0.0f;
    float v;
    if (h - LSB > 127) {
        uint32_t inf = 0x7f800000u;
        memcpy(&v, &inf, 4);
    } else {
        int rp = h - 23 > LSB - 149 ? h - 23 : LSB - 149; /* float32 subnormals: 2^-149 */
        big_round_mag(b, rp, MX_ROUND_EVEN);
        uint64_t q = big_bits64(b, rp); /* <= 2^24 */
        v = (float)q * mxq_pow2f(rp - LSB); /* exact, or Inf when it rounded past 2^128 */
    }
    return neg ? -v : v;
}

/* Element code -> integer N with value N * 2^(emin - m); -1 for NaN/Inf codes. */
static int elem_int(mx_format_t f, uint8_t code, int64_t *N)
{
    if (f == MX_INT8 || f == MX_INT4) {
        *N = (int8_t)code;
        return 0;
    }
    const mxc_fmt_t q = mxc_fmt(f);
    int bits = mx_format_info(f)->bits, m = q.m, ebits = bits - 1 - m;
    uint32_t sign = (code >> (bits - 1)) & 1;
    uint32_t E = (code >> m) & ((1u << ebits) - 1), M = code & ((1u << m) - 1);
    if ((f == MX_FP8_E4M3 && E == 15 && M == 7) || (f == MX_FP8_E5M2 && E == 31))
        return -1;
    int64_t mag = E ? (int64_t)((1u << m) + M) << (E - 1) : (int64_t)M;
    *N = sign ? -mag : mag;
    return 0;
}

int mx_dot(mx_format_t fa, const uint8_t *a_elems, const uint8_t *a_scales, mx_format_t fb,
           const uint8_t *b_elems, const uint8_t *b_scales, size_t n, int block,
           const mx_dot_acc_t *acc, float *out, err_t *e)
{
    if ((unsigned)fa >= MX_FORMAT_COUNT || !mx_format_info(fa)->is_mx ||
        (unsigned)fb >= MX_FORMAT_COUNT || !mx_format_info(fb)->is_mx)
        return err_set(e, ERR_INPUT, "mx_dot: both operands must be MX formats (got %s, %s)",
                       mx_format_name(fa), mx_format_name(fb));
    if (block < 1 || block > MX_BLOCK_MAX)
        return err_set(e, ERR_INPUT, "mx_dot: block %d out of range (expected 1..%d)", block,
                       MX_BLOCK_MAX);
    int p = acc ? acc->bits : 0;
    mx_round_t mode = acc ? acc->round : MX_ROUND_EVEN;
    if (p < 0 || p == 1 || p > 128)
        return err_set(e, ERR_INPUT, "mx_dot: accumulator bits %d (expected 0 or 2..128)", p);
    if (p && mode == MX_ROUND_STOCHASTIC)
        return err_set(e, ERR_INPUT, "mx_dot: the accumulator rounds even, nearest or trunc");
    int qa = mxc_fmt(fa).emin - mxc_fmt(fa).m, qb = mxc_fmt(fb).emin - mxc_fmt(fb).m;
    size_t k = (size_t)block;
    big_t sum;
    memset(&sum, 0, sizeof sum);
    int nan = 0;
    for (size_t b0 = 0, j = 0; b0 < n; b0 += k, j++) {
        if (a_scales[j] == 0xFF || b_scales[j] == 0xFF)
            nan = 1;
        i128 P = 0;
        size_t end = b0 + k < n ? b0 + k : n;
        for (size_t i = b0; i < end; i++) {
            int64_t na, nb;
            if (elem_int(fa, mx_pack_get(fa, a_elems, i), &na) ||
                elem_int(fb, mx_pack_get(fb, b_elems, i), &nb)) {
                nan = 1;
                continue;
            }
            P += (i128)na * nb;
        }
        if (nan)
            continue;
        if (P)
            big_add_shifted(&sum, P, qa + qb + (a_scales[j] - 127) + (b_scales[j] - 127) + LSB);
        if (p)
            big_round_sig(&sum, p, mode);
    }
    if (nan) {
        uint32_t q = 0x7fc00000u;
        memcpy(out, &q, 4);
        return ERR_OK;
    }
    *out = big_to_f32(&sum);
    return ERR_OK;
}

int mx_dot_f32(const float *a, const mx_spec_t *sa, const float *b, const mx_spec_t *sb,
               size_t n, const mx_dot_acc_t *acc, float *out, err_t *e)
{
    if (sa->block != sb->block)
        return err_set(e, ERR_INPUT, "mx_dot: the operands' blocks differ (%d and %d)",
                       sa->block, sb->block);
    size_t nb = (n + (size_t)sa->block - 1) / (size_t)sa->block;
    uint8_t *ae = malloc(n + 8), *be = malloc(n + 8), *as = malloc(nb + 1), *bs = malloc(nb + 1);
    int rc;
    if (!ae || !be || !as || !bs)
        rc = err_set(e, ERR_NOMEM, "mx_dot: out of memory for %zu elements", n);
    else if (!(rc = mx_pack_encode(a, 1, n, MX_AXIS_ROW, sa, 0, 0, 1, ae, as, e)) &&
             !(rc = mx_pack_encode(b, 1, n, MX_AXIS_ROW, sb, 0, 0, 1, be, bs, e)))
        rc = mx_dot(sa->format, ae, as, sb->format, be, bs, n, sa->block, acc, out, e);
    free(ae);
    free(be);
    free(as);
    free(bs);
    return rc;
}
