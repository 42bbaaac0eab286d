/* cuda_gemv: decoding's linear layers. y (M, N) = x (M, K) W^T for M <= BE_DEC_MAX_ROWS rows,
 * with W read from a compact copy and decoded in registers:
 *
 *  - an MX weight is kept packed exactly as mx_pack_encode writes it (codes in row-major
 *    order, 4, 6 or 8 bits each, then one E8M0 scale byte per block along K), built from
 *    the float32 master weight on the device by k_pack_* (dec_layout.h's dl_encode after
 *    mx_core.h's rounding: the same bytes as src/mx) and rebuilt when the parameters'
 *    version changes; a bf16 weight is the GEMM copy the weight cache already holds;
 *  - k_dec_gemv multiplies on the tensor cores with warp-level mma.m16n8k16 (bf16 operands,
 *    float32 accumulation): the weight rows are the mma's A rows, decoded chunk by chunk
 *    into bf16 pairs (dec_layout.h's dl_decode8: bit for bit the emulated path's operand),
 *    the activation rows its B columns, quantized per the layer's input spec and rounded to
 *    the compute type by the kernel itself (fused), held in shared memory as bf16. Every
 *    product of two bf16 values is exact in float32; only the summation order differs from
 *    the emulated cuBLASLt GEMM.
 *
 * One launch covers the linear layers of a be_dec_linear_t that share a weight format (q, k
 * and v; gate and up) and fuses the RMSNorm before them and the epilogue after them (bias,
 * residual add, SwiGLU). Work split (dec_layout.h's dl_plan): a CTA of 8 warps takes a tile
 * of RT row tiles (16 weight rows each) over one of S splits of K; the warps of a row tile
 * share the split's units of DL_UNIT elements and add up in shared memory, the splits in
 * global memory (the last CTA of a row group to arrive sums them in split order: the same
 * bits every run; the RMSNorm's sums are over whole rows in every CTA, so a norm does not
 * stop K from splitting). The plan is costed per launch (dl_plan_make: bytes of the busiest
 * multiprocessor against rounds of load latency and of staging the activation, which every
 * CTA does for its split). Persistent CTAs loop over tiles; a warp
 * loads a batch of units (ubatch: every load issued before any is used) and multiplies it,
 * the many warps of a multiprocessor keeping its loads in flight; the first batch is loaded
 * before the kernel waits for the previous one (programmatic dependent launch,
 * cuda_decode.cu), which hides the weights' latency behind the previous kernel. The
 * activation operand is staged a warp per 128 elements of a row, four a lane (an MX
 * block's scale by warp shuffles), and the kernel's parameters stay in constant memory
 * (__grid_constant__: no local copy, no stack).
 *
 * Shapes the vector loads do not fit (K not a multiple of 32 or an MX block that is not a
 * multiple of 8) take a scalar path in the same kernel: codes read one by one, decoded
 * exactly (dl_value). Every index computation the kernel does on packed bytes, fragments
 * and shared memory is one of dec_layout.h's, tested on the CPU (tests/test_decode.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_internal.cuh"
#include "backend/dec_layout.h"

/* ---- packed decode copies ------------------------------------------------------------------- */

struct cu_dentry {
    bool valid;
    uint64_t version, stream;
    mx_spec_t spec;
    int N, K;
    unsigned char *d;  /* codes, then the scales at scales_off */
    size_t bytes, ncodes, nscales, scales_off;
};

void cu_dentry_free(cuda_t *c, cu_dentry_t *d)
{
    if (!d)
        return;
    if (d->d) {
        cudaStreamSynchronize(c->st); /* enqueued work may read it */
        cu_free(c, d->d, d->bytes);
    }
    free(d);
}

size_t cu_dentry_bytes(const cu_dentry_t *d) { return d ? d->bytes : 0; }

/* the E8M0 byte of every block of a (N, K) weight along K: one thread per block */
__global__ void k_pack_scales(uint8_t *sc, const uint32_t *w, int N, int K, int k, int nb,
                              mxc_fmt_t f, int rule)
{
    const size_t n = (size_t)N * nb;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / (size_t)nb;
        const int b = (int)(i % (size_t)nb), len = K - b * k < k ? K - b * k : k;
        const uint32_t *p = w + r * (size_t)K + (size_t)b * k;
        uint32_t m = 0;
        for (int j = 0; j < len; j++) {
            const uint32_t a = p[j] & 0x7fffffffu;
            m = a > m ? a : m;
        }
        const int s = mxc_scale_exp(&f, (mx_scale_rule_t)rule, m);
        sc[i] = s == MXC_NAN_SCALE ? 0xFFu : (uint8_t)(s + 127);
    }
}

/* the codes, one thread per group of codes that fills whole bytes (e2m1: 2 codes in a byte;
 * fp6: 4 in 3 bytes; 8-bit storage: 4 bytes); code i of the flat row-major array uses its
 * block's scale and, for stochastic rounding, rng_u32(seed, stream, i) as mx_pack_encode */
__global__ void k_pack_codes(uint8_t *el, const uint8_t *sc, const uint32_t *w, int N, int K,
                             int k, int nb, int fmt, mxc_fmt_t f, int round, uint64_t seed,
                             uint64_t stream)
{
    const size_t n = (size_t)N * K;
    const int sbits = dl_fmt(fmt).sbits, per = sbits == 4 ? 2 : 4;
    const size_t ng = (n + per - 1) / per;
    for (size_t gi = (size_t)blockIdx.x * blockDim.x + threadIdx.x; gi < ng;
         gi += (size_t)gridDim.x * blockDim.x) {
        uint32_t code[4] = {0, 0, 0, 0};
        const size_t i0 = gi * per;
        const int cnt = n - i0 < (size_t)per ? (int)(n - i0) : per;
        for (int j = 0; j < cnt; j++) {
            const size_t i = i0 + j, r = i / (size_t)K, cc = i % (size_t)K;
            const uint32_t sb = sc[r * nb + cc / (size_t)k];
            if (sb == 0xFFu)
                continue; /* a NaN-scale block's codes are 0 */
            const int s = (int)sb - 127;
            const uint32_t rnd = round == 3 ? philox_u32(seed, stream, i) : 0u;
            code[j] = dl_encode(fmt, mxc_elem_fast(&f, (mx_round_t)round, s, w[i], rnd), s);
        }
        if (sbits == 4) {
            el[gi] = (uint8_t)(code[0] | (cnt > 1 ? code[1] << 4 : 0u));
        } else if (sbits == 6) {
            const uint32_t v = code[0] | code[1] << 6 | code[2] << 12 | code[3] << 18;
            const int nbytes = (cnt * 6 + 7) / 8;
            for (int b = 0; b < nbytes; b++)
                el[3 * gi + b] = (uint8_t)(v >> (8 * b));
        } else {
            for (int j = 0; j < cnt; j++)
                el[i0 + j] = (uint8_t)code[j];
        }
    }
}

/* The packed copy of an MX weight, built (or rebuilt) when its key is stale. NULL when it
 * cannot be had: no cache, out of memory, or while recording (cap_bad). */
static cu_dentry_t *dentry_get(cuda_t *c, const be_linear_t *a)
{
    const mx_spec_t *s = &a->spec[PREC_OP_WEIGHT];
    if (!a->wcache)
        return nullptr;
    cu_dentry_t **slot = cu_wcache_dslot(a->wcache), *d = *slot;
    const uint64_t stream = a->stream + PREC_OP_WEIGHT;
    const bool sr = s->round == MX_ROUND_STOCHASTIC;
    if (d && d->valid && d->version == a->wversion && mx_spec_equal(&d->spec, s) &&
        d->N == a->N && d->K == a->K && (!sr || d->stream == stream))
        return d;
    if (c->capturing) {
        c->cap_bad = true;
        return nullptr;
    }
    if (!d) {
        d = (cu_dentry_t *)calloc(1, sizeof *d);
        if (!d) {
            cu_fail(c, ERR_NOMEM, "cuda backend: out of memory for a decode copy");
            return nullptr;
        }
        *slot = d;
    }
    const int fmt = (int)s->format, k = s->block, N = a->N, K = a->K;
    const int nb = (K + k - 1) / k;
    const size_t ncodes = dl_code_bytes(fmt, (size_t)N * K), nscales = (size_t)N * nb;
    const size_t off = (ncodes + 256 + 255) & ~(size_t)255;
    const size_t bytes = off + nscales + 256; /* room for 16-byte loads and prefetch edges */
    d->valid = false;
    if (d->bytes != bytes) {
        if (d->d) {
            cudaStreamSynchronize(c->st);
            cu_free(c, d->d, d->bytes);
        }
        d->bytes = 0;
        d->d = (unsigned char *)cu_malloc(c, bytes, "a packed weight");
        if (!d->d)
            return nullptr;
        d->bytes = bytes;
        cu_check(c, cudaMemsetAsync(d->d, 0, bytes, c->st), "clearing a packed weight");
    }
    d->ncodes = ncodes, d->nscales = nscales, d->scales_off = off;
    const mxc_fmt_t f = mxc_fmt((mx_format_t)fmt);
    const uint32_t *w = (const uint32_t *)fptr(a->w);
    k_pack_scales<<<cu_grid(nscales, 256), 256, 0, c->st>>>(d->d + off, w, N, K, k, nb, f,
                                                           (int)s->scale);
    cu_launched(c, "k_pack_scales");
    const size_t groups = ((size_t)N * K + 3) / 4 * 2;
    k_pack_codes<<<cu_grid(groups, 256), 256, 0, c->st>>>(d->d, d->d + off, w, N, K, k, nb, fmt, f,
                                                          (int)s->round, a->seed, stream);
    cu_launched(c, "k_pack_codes");
    c->wbuilt = true;
    d->valid = true;
    d->version = a->wversion;
    d->spec = *s;
    d->stream = stream;
    d->N = N, d->K = K;
    return d;
}

extern "C" int be_cuda_wcache_packed(backend_t *be, be_wcache_t *wc, void *codes, size_t ncodes,
                                     void *scales, size_t nscales, err_t *e)
{
    cuda_t *c = CU(be);
    const cu_dentry_t *d = wc ? *cu_wcache_dslot(wc) : nullptr;
    if (!d || !d->valid)
        return err_set(e, ERR_INPUT, "packed weight: the cache holds no packed copy");
    if (ncodes != d->ncodes || nscales != d->nscales)
        return err_set(e, ERR_INPUT, "packed weight: %zu code bytes and %zu scales, asked for %zu "
                       "and %zu", d->ncodes, d->nscales, ncodes, nscales);
    if (!cu_check(c, cudaMemcpyAsync(codes, d->d, ncodes, cudaMemcpyDeviceToHost, c->st), "codes") ||
        !cu_check(c, cudaMemcpyAsync(scales, d->d + d->scales_off, nscales,
                                     cudaMemcpyDeviceToHost, c->st), "scales"))
        return be_sync(be, e);
    return be_sync(be, e);
}

/* ---- the GEMV's operands in registers ---------------------------------------------------------- */

template <int FMT> struct span_words {
    static constexpr int n = FMT == DL_BF16 ? 16 : FMT == DL_E2M1 ? 4
                             : (FMT == DL_E3M2 || FMT == DL_E2M3) ? 6 : 8; /* dl_span_words */
};

/* one thread's operand of one unit: two weight rows (g, g + 8), their spans and the scale
 * bytes of the span's four chunks (byte j of sb[h]: chunk j) */
template <int FMT> struct unit_t {
    uint32_t w[2][span_words<FMT>::n];
    uint32_t sb[2];
};

/* Units a warp loads at once before multiplying them, all loads issued before any is used:
 * as many as ub_regs(NT) registers hold (4 KiB of weights a warp at NT = 1 for bf16, 3-6
 * units of the MX formats; 8-16 KiB at NT >= 4, where a CTA has 255 registers a thread) */
__host__ __device__ constexpr int ub_regs(int NT) { return NT == 1 ? 66 : NT == 2 ? 50 : NT == 4 ? 140 : 100; }
/* the int formats' decode (int to float conversions) needs a unit's worth more at NT = 1 */
__host__ __device__ constexpr int ub_count(int fmt, int span_words, int NT)
{
    return (ub_regs(NT) - ((fmt == DL_INT8 || fmt == DL_INT4) && NT == 1 ? 18 : 0)) /
                       (2 * span_words + 2) < 1
               ? 1
               : (ub_regs(NT) - ((fmt == DL_INT8 || fmt == DL_INT4) && NT == 1 ? 18 : 0)) /
                     (2 * span_words + 2);
}
template <int FMT, int NT> struct ubatch {
    static constexpr int n = ub_count(FMT, span_words<FMT>::n, NT);
};

/* The span of row r starting at element k0 (a multiple of 32, below K, K a multiple of 32):
 * 16-byte loads (fp6: 8-byte), which the alignment of spans guarantees. */
template <int FMT>
__device__ __forceinline__ void load_span(uint32_t *w, const uint8_t *base, size_t r, int K, int k0)
{
    const size_t e0 = r * (size_t)K + (size_t)k0;
    if (FMT == DL_E3M2 || FMT == DL_E2M3) {
        const uint2 *p = (const uint2 *)(base + e0 * 6 / 8);
#pragma unroll
        for (int i = 0; i < 3; i++) {
            const uint2 t = __ldg(p + i);
            w[2 * i] = t.x, w[2 * i + 1] = t.y;
        }
    } else {
        const uint4 *p = (const uint4 *)(base + e0 * (size_t)dl_fmt(FMT).sbits / 8);
#pragma unroll
        for (int i = 0; i < span_words<FMT>::n / 4; i++) {
            const uint4 t = __ldg(p + i);
            w[4 * i] = t.x, w[4 * i + 1] = t.y, w[4 * i + 2] = t.z, w[4 * i + 3] = t.w;
        }
    }
}

/* code i (0..7) of a chunk's raw words */
template <int FMT> __device__ __forceinline__ uint32_t raw_code(const uint32_t *raw, int i)
{
    if (FMT == DL_E2M1)
        return (raw[0] >> (4 * i)) & 0xFu;
    if (FMT == DL_E3M2 || FMT == DL_E2M3) {
        const uint64_t v = (uint64_t)raw[0] | (uint64_t)raw[1] << 32;
        return (uint32_t)(v >> (6 * i)) & 0x3Fu;
    }
    return (raw[i >> 2] >> (8 * (i & 3))) & 0xFFu;
}

/* the bf16 of an element decoded exactly (dl_value), rounded to the compute type (rc) as
 * the emulated path rounds its operand, then its top 16 bits */
__device__ __forceinline__ uint32_t exact16(uint32_t u, int rc)
{
    return (rc ? mxc_cast_bf16(u) : u) >> 16;
}

/* The exact path of a chunk (out of line: rare, and it would bloat the loop). */
template <int FMT> __device__ __noinline__ uint4 exact_chunk(uint32_t raw0, uint32_t raw1, uint32_t sb, int rc)
{
    const uint32_t raw[2] = {raw0, raw1};
    uint32_t h[8];
#pragma unroll
    for (int i = 0; i < 8; i++)
        h[i] = exact16(dl_value(FMT, raw_code<FMT>(raw, i), sb), rc);
    const int p = dl_pairing(FMT);
    uint4 r;
    r.x = h[dl_slot(p, 0)] | h[dl_slot(p, 1)] << 16;
    r.y = h[dl_slot(p, 2)] | h[dl_slot(p, 3)] << 16;
    r.z = h[dl_slot(p, 4)] | h[dl_slot(p, 5)] << 16;
    r.w = h[dl_slot(p, 6)] | h[dl_slot(p, 7)] << 16;
    return r;
}

/* a chunk's four bf16x2 operand registers: dl_decode8, or the exact path when the block's
 * scale leaves bf16's normal range */
template <int FMT>
__device__ __forceinline__ void decode_chunk(const uint32_t *raw, uint32_t sb, int rc, uint32_t *r)
{
    if (dl_decode8(FMT, raw, sb, r))
        return;
    if (FMT != DL_BF16) {
        const uint4 q = exact_chunk<FMT>(raw[0], raw[1], sb, rc);
        r[0] = q.x, r[1] = q.y, r[2] = q.z, r[3] = q.w;
    }
}

/* A weight stored as the decode path reads it: packed codes + scales (nb per row, blocks of
 * `block` along K), or bf16 values (scales NULL). */
typedef struct wsrc {
    const uint8_t *w, *scales;
    int N, nb, block;
} wsrc_t;

/* The scale bytes of the four chunks of row r's span at k0 (block a multiple of 8), byte j
 * for chunk j. */
__device__ __forceinline__ uint32_t span_scales(const wsrc_t &s, size_t r, int k0)
{
    const uint8_t *p = s.scales + r * (size_t)s.nb;
    if (s.block % 32 == 0)
        return __ldg(p + k0 / s.block) * 0x01010101u;
    uint32_t sb = 0;
#pragma unroll
    for (int j = 0; j < 4; j++)
        sb |= (uint32_t)__ldg(p + (k0 + 8 * j) / s.block) << (8 * j);
    return sb;
}

/* One thread's unit: rows row0 + g and row0 + g + 8 at span k0; rows past N and spans past
 * K read as zeros (scale 2^0, the fast path). */
template <int FMT>
__device__ __forceinline__ void load_unit(unit_t<FMT> &u, const wsrc_t &s, int row0, int g, int K,
                                          int k0)
{
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = row0 + g + 8 * h;
        if (r < s.N && k0 < K) {
            load_span<FMT>(u.w[h], s.w, (size_t)r, K, k0);
            u.sb[h] = FMT != DL_BF16 ? span_scales(s, (size_t)r, k0) : 0u;
        } else {
#pragma unroll
            for (int i = 0; i < span_words<FMT>::n; i++)
                u.w[h][i] = 0;
            u.sb[h] = 0x7f7f7f7fu;
        }
    }
}

/* The scalar path's chunk: element k0 + 8j + i of row r decoded one by one. */
template <int FMT>
__device__ __forceinline__ void scalar_chunk(const wsrc_t &s, int r, int K, int k, int rc, uint32_t *out)
{
    uint32_t h[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        uint32_t v = 0;
        if (r < s.N && k + i < K) {
            const size_t e = (size_t)r * K + (size_t)(k + i);
            if (FMT == DL_BF16)
                v = (uint32_t)((const uint16_t *)s.w)[e];
            else
                v = exact16(dl_value(FMT, dl_code(FMT, s.w, e),
                                     s.scales[(size_t)r * s.nb + (size_t)(k + i) / s.block]), rc);
        }
        h[i] = v;
    }
    const int p = dl_pairing(FMT);
#pragma unroll
    for (int q = 0; q < 4; q++)
        out[q] = h[dl_slot(p, 2 * q)] | h[dl_slot(p, 2 * q + 1)] << 16;
}

__device__ __forceinline__ void mma_bf16(float *d, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Chunk j of a unit: mma steps 2j and 2j + 1 of rows (g, g + 8) with the decoded pairs ag,
 * ah and each of the NT column tiles' activations (xb: this thread's slots of the unit) */
template <int NT>
__device__ __forceinline__ void mma_chunk(float (*C)[4], const uint32_t *ag, const uint32_t *ah,
                                          const uint16_t *xb, int xp, int g, int j)
{
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const int st = 2 * j + hh;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const uint2 b = *(const uint2 *)(xb + (size_t)(8 * n + g) * xp + 16 * st);
            mma_bf16(C[n], ag[2 * hh], ah[2 * hh], ag[2 * hh + 1], ah[2 * hh + 1], b.x, b.y);
        }
    }
}

__device__ __forceinline__ void grid_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void grid_release() { asm volatile("griddepcontrol.launch_dependents;"); }

/* ---- the GEMV kernel ---------------------------------------------------------------------------- */

/* a linear layer of a launch: its weight, bias, output and input spec */
typedef struct gseg {
    wsrc_t w;
    const float *bias;
    float *out;
    int g0;               /* its first row group */
    int xfmt, xblock, xround, xrule;
    uint64_t seed, stream; /* stochastic input rounding (stream of the input operand) */
} gseg_t;

typedef struct gemv_args {
    const float *x, *norm_w;
    float eps;
    int M, K, nseg, epi, rc, vec;
    gseg_t seg[BE_DEC_MAX_LIN];
    int RT, S, KR, groups, ntiles;
    float *ws;  /* S > 1: (groups * S, tile) partial sums */
    int *cnt;   /* S > 1: (groups) arrival counters, zero between launches */
} gemv_args_t;

/* One element of the activation operand, v already normalized: quantized by the
 * segment's input spec (MX: block scale exponent sexp) or cast, rounded to the compute
 * type; its bf16 bits. */
__device__ __forceinline__ uint16_t x_elem(const gemv_args_t &a, const gseg_t &s, const mxc_fmt_t &f,
                                           bool mx, int m, int k, float v, int sexp)
{
    uint32_t u = hd_f2u(v);
    if (mx) {
        const uint32_t rnd =
            s.xround == 3 ? philox_u32(s.seed, s.stream, (uint64_t)m * a.K + k) : 0u;
        u = mxc_elem_fast(&f, (mx_round_t)s.xround, sexp, u, rnd);
    } else if (s.xfmt == MX_BF16) {
        u = mxc_cast_bf16(u);
    } else if (s.xfmt == MX_FP16) {
        u = mxc_cast_fp16(u);
    }
    if (a.rc)
        u = mxc_cast_bf16(u);
    return (uint16_t)(u >> 16);
}

/* Stages the activation operand of segment s, K range [kr0, kr0 + kn), into xs: rows m < M
 * normalized (norm_w) then quantized by the segment's input spec along K and rounded to
 * the compute type, as bf16 in the slots dl_xpos gives (rows 8 NT, pitch xp uint16).
 * Where K is a multiple of 4 and the vectors aligned, a warp takes 128 elements of a row, a
 * lane four neighbours (one float4 load), and an MX block of 4 to 32 (a power of two) finds
 * its scale with warp shuffles. Otherwise a thread per element: blocks of at most 32 with
 * shuffles, larger blocks a thread per block. Every path gives the same values. */
template <int FMT>
__device__ void stage_x(const gemv_args_t &a, const gseg_t &s, int kr0, int kn, uint16_t *xs,
                        int xp, int rows, const float *rstd)
{
    const int pairing = dl_pairing(FMT);
    const int tid = threadIdx.x;
    /* zeros first: rows past M, and K past the range */
    for (int i = tid; i < rows * xp / 8; i += blockDim.x)
        ((uint4 *)xs)[i] = make_uint4(0, 0, 0, 0);
    __syncthreads();
    const mx_format_t xf = (mx_format_t)s.xfmt;
    const bool mx = xf <= MX_INT4;
    const int bx = mx ? s.xblock : 32;
    const mxc_fmt_t f = mxc_fmt((mx_format_t)(mx ? s.xfmt : 0));
    auto xval = [&](int m, int k) {
        float v = a.x[(size_t)m * a.K + k];
        if (a.norm_w)
            v = a.norm_w[k] * (v * rstd[m]);
        return v;
    };
    auto put = [&](int m, int l, uint16_t h) {
        xs[(size_t)m * xp + (l / DL_UNIT) * DL_UNIT + dl_xpos(pairing, l % DL_UNIT)] = h;
    };
    const bool pow2 = bx <= 32 && (bx & (bx - 1)) == 0;
    if ((a.K & 3) == 0 && ((uintptr_t)a.x & 15) == 0 && ((uintptr_t)a.norm_w & 15) == 0 &&
        (!mx || (pow2 && bx >= 4))) {
        /* a warp per (row, 128 elements); kn is a multiple of 4 (kr0 and KR are of DL_UNIT),
         * so a lane's four are all in the range or all past it. The loop is warp-uniform
         * (the shuffles). */
        const int lane = tid & 31, nwarp = blockDim.x >> 5, nch = (kn + 127) / 128;
        for (int it = tid >> 5; it < a.M * nch; it += nwarp) {
            const int m = it / nch, l = (it - m * nch) * 128 + 4 * lane, k = kr0 + l;
            const bool in = l < kn;
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (in) {
                const float4 x4 = *(const float4 *)(a.x + (size_t)m * a.K + k);
                v[0] = x4.x, v[1] = x4.y, v[2] = x4.z, v[3] = x4.w;
                if (a.norm_w) {
                    const float4 w4 = *(const float4 *)(a.norm_w + k);
                    v[0] = w4.x * (v[0] * rstd[m]), v[1] = w4.y * (v[1] * rstd[m]);
                    v[2] = w4.z * (v[2] * rstd[m]), v[3] = w4.w * (v[3] * rstd[m]);
                }
            }
            int sexp = 0;
            if (mx) {
                uint32_t am = 0;
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint32_t u = hd_f2u(v[q]) & 0x7fffffffu;
                    am = u > am ? u : am;
                }
                for (int o = bx / 8; o > 0; o >>= 1) {
                    const uint32_t t = __shfl_xor_sync(0xffffffffu, am, o);
                    am = t > am ? t : am;
                }
                sexp = mxc_scale_exp(&f, (mx_scale_rule_t)s.xrule, am);
            }
            if (in) {
#pragma unroll
                for (int q = 0; q < 4; q++)
                    put(m, l + q, x_elem(a, s, f, mx, m, k + q, v[q], sexp));
            }
        }
    } else if (!mx) {
        for (int i = tid; i < a.M * kn; i += blockDim.x) {
            const int m = i / kn, l = i % kn;
            put(m, l, x_elem(a, s, f, false, m, kr0 + l, xval(m, kr0 + l), 0));
        }
    } else if (pow2) {
        /* blocks of bx consecutive lanes; whole warps run the loop (the shuffles) */
        const int nbk = (kn + bx - 1) / bx, per = nbk * bx, tot = a.M * per;
        const int lim = (tot + 31) / 32 * 32;
        for (int i = tid; i < lim; i += blockDim.x) {
            const int m = i / per, l = i % per;
            const bool in = i < tot && l < kn;
            const float v = in ? xval(m, kr0 + l) : 0.0f;
            uint32_t am = in ? hd_f2u(v) & 0x7fffffffu : 0u;
            for (int o = bx / 2; o > 0; o >>= 1) {
                const uint32_t t = __shfl_xor_sync(0xffffffffu, am, o);
                am = t > am ? t : am;
            }
            if (in)
                put(m, l, x_elem(a, s, f, true, m, kr0 + l,
                                 v, mxc_scale_exp(&f, (mx_scale_rule_t)s.xrule, am)));
        }
    } else {
        const int nbk = (kn + bx - 1) / bx;
        for (int it = tid; it < a.M * nbk; it += blockDim.x) {
            const int m = it / nbk, b = it % nbk;
            const int l0 = b * bx, len = kn - l0 < bx ? kn - l0 : bx;
            uint32_t am = 0;
            for (int j = 0; j < len; j++) {
                const uint32_t u = hd_f2u(xval(m, kr0 + l0 + j)) & 0x7fffffffu;
                am = u > am ? u : am;
            }
            const int sexp = mxc_scale_exp(&f, (mx_scale_rule_t)s.xrule, am);
            for (int j = 0; j < len; j++)
                put(m, l0 + j, x_elem(a, s, f, true, m, kr0 + l0 + j, xval(m, kr0 + l0 + j), sexp));
        }
    }
    __syncthreads();
}

/* CTAs of 256 threads a multiprocessor holds (the GEMV's __launch_bounds__): 2 at 128
 * registers a thread up to NT = 2, 1 at up to 255 above (the accumulators of more column
 * tiles and larger batches of units) */
#define GEMV_CTAS_PER_SM(NT) ((NT) >= 4 ? 1 : 2)

template <int FMT, int NT>
__global__ void __launch_bounds__(256, GEMV_CTAS_PER_SM(NT)) k_dec_gemv(const __grid_constant__ gemv_args_t a)
{
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float rstd_s[BE_DEC_MAX_ROWS];
    __shared__ double ss_s[8];
    __shared__ int last_s;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int RT = a.RT, KSW = 8 / RT, rt = warp % RT, kw = warp / RT;
    const int kpad = (a.KR + DL_UNIT - 1) / DL_UNIT * DL_UNIT, xp = kpad + 16;
    const int rows = 8 * NT, TS = RT * 16 * rows; /* a tile's sums: (rt, row, m) */
    uint16_t *xs = (uint16_t *)smem;
    const int rp = dl_red_pitch(NT);
    float *red = (float *)(smem + (size_t)rows * xp * 2); /* (warp, 16 rows, 8 NT; pitch rp) */
    float *tv = red + 8 * 16 * rp;                      /* (TS) */
    const bool swiglu = a.epi == BE_DEC_SWIGLU;
    constexpr int UB = ubatch<FMT, NT>::n;

    /* where tile `tile` puts this warp: segment, first weight row of its row tile, split */
    auto place = [&](int tile, int &si, int &row0, int &sp, int &grp) {
        grp = tile / a.S;
        sp = tile % a.S;
        si = 0;
        while (si + 1 < a.nseg && grp >= a.seg[si + 1].g0)
            si++;
        const int gj = grp - a.seg[si].g0;
        if (swiglu) {
            const int half = RT / 2;
            row0 = gj * 8 * RT + 16 * (rt % half);
            si = rt < half ? 0 : 1;
        } else {
            row0 = gj * 16 * RT + 16 * rt;
        }
    };

    /* a batch: this warp's units b0, b0 + KSW, ... (UB of them, those below nu), every load
     * issued before any is used */
    unit_t<FMT> u[UB];
    auto load_batch = [&](const wsrc_t &w, int row0, int kr0, int nu, int b0) {
#pragma unroll
        for (int i = 0; i < UB; i++) {
            const int un = b0 + i * KSW;
            if (un < nu)
                load_unit<FMT>(u[i], w, row0, g, a.K, kr0 + un * DL_UNIT + 32 * t);
        }
    };
    /* the first batch of tile `tl` */
    auto prefetch = [&](int tl) {
        int si, row0, sp, grp;
        place(tl, si, row0, sp, grp);
        const int kr0 = sp * a.KR, kn = min(a.K - kr0, a.KR);
        load_batch(a.seg[si].w, row0, kr0, (kn + DL_UNIT - 1) / DL_UNIT, kw);
    };

    int tile = blockIdx.x, pre = -1; /* pre: the tile whose first batch u holds */
    if (tile < a.ntiles && a.vec) {
        prefetch(tile); /* before waiting for the previous kernel */
        pre = tile;
    }
    grid_wait();
    grid_release();

    /* rows' norms over whole rows, 8 / M warps to a row (M < 8) */
    if (a.norm_w) {
        const int wpr = a.M >= 8 ? 1 : a.M >= 4 ? 2 : a.M >= 2 ? 4 : 8, rpp = 8 / wpr;
        for (int m0 = 0; m0 < a.M; m0 += rpp) {
            const int m = m0 + warp / wpr, part = warp % wpr;
            double ss = 0;
            if (m < a.M) {
                const float *xr = a.x + (size_t)m * a.K;
#pragma unroll 4
                for (int k = part * 32 + lane; k < a.K; k += 32 * wpr)
                    ss += (double)xr[k] * xr[k];
            }
            ss = warp_sum(ss);
            if (lane == 0)
                ss_s[warp] = ss;
            __syncthreads();
            if (tid < rpp && m0 + tid < a.M) {
                double tot = 0;
                for (int p = 0; p < wpr; p++)
                    tot += ss_s[tid * wpr + p];
                rstd_s[m0 + tid] = 1.0f / sqrtf((float)(tot / a.K) + a.eps);
            }
            __syncthreads();
        }
    }

    int staged_si = -1, staged_sp = -1;
    for (; tile < a.ntiles; tile += gridDim.x) {
        int si, row0, sp, grp;
        place(tile, si, row0, sp, grp);
        const gseg_t &sg = a.seg[si];
        const int kr0 = sp * a.KR, kn = min(a.K - kr0, a.KR);
        const int nu = (kn + DL_UNIT - 1) / DL_UNIT;
        /* the CTA's operand: the tile's first segment decides (SwiGLU's two share a spec) */
        const int xsi = swiglu ? 0 : si;
        if (xsi != staged_si || sp != staged_sp) {
            stage_x<FMT>(a, a.seg[xsi], kr0, kn, xs, xp, rows, rstd_s);
            staged_si = xsi, staged_sp = sp;
        }
        float C[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++)
            C[n][0] = C[n][1] = C[n][2] = C[n][3] = 0.0f;

        auto multiply = [&](const unit_t<FMT> &uu, int un) {
            const uint16_t *xb = xs + (size_t)un * DL_UNIT + 4 * t;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t raw[4], ag[4], ah[4];
                dl_chunk_raw(FMT, uu.w[0], j, raw);
                decode_chunk<FMT>(raw, (uu.sb[0] >> (8 * j)) & 0xffu, a.rc, ag);
                dl_chunk_raw(FMT, uu.w[1], j, raw);
                decode_chunk<FMT>(raw, (uu.sb[1] >> (8 * j)) & 0xffu, a.rc, ah);
                mma_chunk<NT>(C, ag, ah, xb, xp, g, j);
            }
        };

        if (a.vec) {
            for (int b0 = kw; b0 < nu; b0 += UB * KSW) {
                if (pre != tile || b0 != kw)
                    load_batch(sg.w, row0, kr0, nu, b0);
#pragma unroll
                for (int i = 0; i < UB; i++)
                    if (b0 + i * KSW < nu)
                        multiply(u[i], b0 + i * KSW);
            }
            pre = -1;
        } else {
            for (int un = kw; un < nu; un += KSW) {
                const uint16_t *xb = xs + (size_t)un * DL_UNIT + 4 * t;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int k = kr0 + un * DL_UNIT + 32 * t + 8 * j;
                    uint32_t ag[4], ah[4];
                    scalar_chunk<FMT>(sg.w, row0 + g, a.K, k, a.rc, ag);
                    scalar_chunk<FMT>(sg.w, row0 + g + 8, a.K, k, a.rc, ah);
                    mma_chunk<NT>(C, ag, ah, xb, xp, g, j);
                }
            }
        }

        /* the warps of a row tile add up: red (warp, 16 rows, 8 NT columns, pitch rp) */
#pragma unroll
        for (int n = 0; n < NT; n++) {
            float *r = red + (size_t)warp * 16 * rp;
            r[g * rp + 8 * n + 2 * t] = C[n][0];
            r[g * rp + 8 * n + 2 * t + 1] = C[n][1];
            r[(g + 8) * rp + 8 * n + 2 * t] = C[n][2];
            r[(g + 8) * rp + 8 * n + 2 * t + 1] = C[n][3];
        }
        __syncthreads();
        /* tv (rt, row, m), m outermost so that neighbouring threads write neighbouring rows */
        for (int e = tid; e < TS; e += blockDim.x) {
            const int m = e / (RT * 16), q = e % (RT * 16), et = q / 16, r16 = q % 16;
            float v = 0.0f;
            for (int w2 = 0; w2 < KSW; w2++)
                v += red[(size_t)(w2 * RT + et) * 16 * rp + r16 * rp + m];
            tv[e] = v;
        }
        __syncthreads();
        if (a.S > 1) {
            /* the splits of a row group through global memory (L2); the last CTA to arrive
             * adds them up in split order */
            float *mine = a.ws + ((size_t)grp * a.S + sp) * TS;
            for (int e = tid; e < TS; e += blockDim.x)
                __stcg(mine + e, tv[e]);
            __threadfence();
            __syncthreads();
            if (tid == 0)
                last_s = atomicAdd(a.cnt + grp, 1) == a.S - 1;
            __syncthreads();
            if (!last_s)
                continue;
            __threadfence();
            const float *all = a.ws + (size_t)grp * a.S * TS;
            for (int e = tid; e < TS; e += blockDim.x) {
                float v = 0.0f;
                int p = 0;
                for (; p + 4 <= a.S; p += 4) {
                    const float v0 = __ldcg(all + (size_t)p * TS + e);
                    const float v1 = __ldcg(all + (size_t)(p + 1) * TS + e);
                    const float v2 = __ldcg(all + (size_t)(p + 2) * TS + e);
                    const float v3 = __ldcg(all + (size_t)(p + 3) * TS + e);
                    v = (((v + v0) + v1) + v2) + v3;
                }
                for (; p < a.S; p++)
                    v += __ldcg(all + (size_t)p * TS + e);
                tv[e] = v;
            }
            if (tid == 0)
                a.cnt[grp] = 0;
            __syncthreads();
        }
        /* epilogue */
        if (swiglu) {
            const int half = RT / 2, N = a.seg[0].w.N;
            const int gj = grp - a.seg[0].g0;
            float *out = a.seg[0].out;
            for (int e = tid; e < a.M * half * 16; e += blockDim.x) {
                const int m = e / (half * 16), q = e % (half * 16);
                const int n = gj * 8 * RT + q;
                if (n >= N)
                    continue;
                float gt = tv[m * RT * 16 + q], up = tv[m * RT * 16 + half * 16 + q];
                if (a.seg[0].bias)
                    gt += a.seg[0].bias[n];
                if (a.seg[1].bias)
                    up += a.seg[1].bias[n];
                out[(size_t)m * N + n] = gt / (1.0f + expf(-gt)) * up;
            }
        } else {
            const int N = sg.w.N, gj = grp - sg.g0;
            for (int e = tid; e < a.M * RT * 16; e += blockDim.x) {
                const int m = e / (RT * 16), q = e % (RT * 16);
                const int n = gj * 16 * RT + q;
                if (n >= N)
                    continue;
                float v = tv[e];
                if (sg.bias)
                    v += sg.bias[n];
                float *o = sg.out + (size_t)m * N + n;
                *o = a.epi == BE_DEC_RESIDUAL ? *o + v : v;
            }
        }
        __syncthreads(); /* tv and red are reused by the next tile */
    }
}

#define GEMV_ROW(F) {(const void *)k_dec_gemv<F, 1>, (const void *)k_dec_gemv<F, 2>, \
                     (const void *)k_dec_gemv<F, 4>, (const void *)k_dec_gemv<F, 8>}
static const void *const GEMV[DL_NFMT][4] = {GEMV_ROW(DL_E4M3), GEMV_ROW(DL_E5M2), GEMV_ROW(DL_E3M2),
                                             GEMV_ROW(DL_E2M3), GEMV_ROW(DL_E2M1), GEMV_ROW(DL_INT8),
                                             GEMV_ROW(DL_INT4), GEMV_ROW(DL_BF16)};

static int nt_index(int NT) { return NT == 1 ? 0 : NT == 2 ? 1 : NT == 4 ? 2 : 3; }

/* ---- host side --------------------------------------------------------------------------------- */

/* The GEMV weight format of a layer (DL_BF16 for weights read as bf16), and its source. */
static bool weight_src(cuda_t *c, const be_linear_t *l, int *fmt, wsrc_t *w)
{
    const mx_spec_t *s = &l->spec[PREC_OP_WEIGHT];
    memset(w, 0, sizeof *w);
    w->N = l->N;
    if (mx_format_info(s->format)->is_mx) {
        const cu_dentry_t *d = dentry_get(c, l);
        if (!d)
            return false;
        *fmt = (int)s->format;
        w->w = d->d;
        w->scales = d->d + d->scales_off;
        w->block = s->block;
        w->nb = (l->K + s->block - 1) / s->block;
        return true;
    }
    const void *p = cu_weight_fwd(c, l, DT_BF16);
    if (!p)
        return false;
    *fmt = DL_BF16;
    w->w = (const uint8_t *)p;
    return true;
}

/* whether the fused kernel serves these layers (decode mode, rows, specs, caches) */
static bool fusable(const cuda_t *c, const be_linear_t *l, int M)
{
    if (c->dec_mode != BE_CUDA_DEC_PACKED || M < 1 || M > BE_DEC_MAX_ROWS)
        return false;
    const mx_spec_t *w = &l->spec[PREC_OP_WEIGHT];
    return be_dec_native(w, &l->spec[PREC_OP_INPUT], l->compute) &&
           (!mx_format_info(w->format)->is_mx || l->wcache);
}

int *cu_dec_counters(cuda_t *c, size_t n)
{
    if (c->dec_cnt_n >= n && c->dec_cnt)
        return c->dec_cnt;
    if (c->capturing) {
        c->cap_bad = true;
        return nullptr;
    }
    cu_check(c, cudaStreamSynchronize(c->st), "waiting to grow the split counters");
    cu_free(c, c->dec_cnt, c->dec_cnt_n * sizeof(int));
    c->dec_cnt_n = 0;
    const size_t cap = n < 4096 ? 4096 : n;
    c->dec_cnt = (int *)cu_malloc(c, cap * sizeof(int), "split counters");
    if (!c->dec_cnt)
        return nullptr;
    c->dec_cnt_n = cap;
    cu_check(c, cudaMemsetAsync(c->dec_cnt, 0, cap * sizeof(int), c->st), "zeroing split counters");
    return c->dec_cnt;
}

/* One launch over layers lin[0..n) (all of weight format fmt; for SwiGLU gate then up with
 * the same input spec) of input x: the GEMV and its epilogue into outs. */
static void gemv_launch(cuda_t *c, const float *x, const float *norm_w, float eps, int M, int K,
                        const be_linear_t *lin, const wsrc_t *w, float *const *outs, int n, int fmt,
                        int epi)
{
    gemv_args_t a;
    memset(&a, 0, sizeof a);
    a.x = x, a.norm_w = norm_w, a.eps = eps, a.M = M, a.K = K, a.nseg = n, a.epi = epi;
    a.rc = lin[0].compute == PREC_COMPUTE_BF16;
    bool vec = K % 32 == 0;
    int Ns[BE_DEC_MAX_LIN];
    for (int i = 0; i < n; i++) {
        const mx_spec_t *xs = &lin[i].spec[PREC_OP_INPUT];
        gseg_t &s = a.seg[i];
        s.w = w[i];
        s.bias = fptr(lin[i].b);
        s.out = outs[i];
        s.xfmt = (int)xs->format;
        s.xblock = xs->block;
        s.xround = (int)xs->round;
        s.xrule = (int)xs->scale;
        s.seed = lin[i].seed;
        s.stream = lin[i].stream + PREC_OP_INPUT;
        Ns[i] = lin[i].N;
        if (fmt != DL_BF16 && w[i].block % 8 != 0)
            vec = false;
    }
    a.vec = vec;
    const int sms = c->prop.multiProcessorCount;
    const int smem_max = (int)c->prop.sharedMemPerBlockOptin - 2048;
    /* the input blocks a split must keep whole: the largest MX input block of the layers */
    int xb = 0;
    for (int i = 0; i < n; i++)
        if (mx_format_info(lin[i].spec[PREC_OP_INPUT].format)->is_mx)
            xb = lin[i].spec[PREC_OP_INPUT].block > xb ? lin[i].spec[PREC_OP_INPUT].block : xb;
    const int NT = M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8;
    const double wbytes = fmt == DL_BF16 ? 2.0 : dl_fmt(fmt).sbits / 8.0 + 1.0 / w[0].block;
    dl_plan_t p = dl_plan_make(M, K, Ns, n, epi == BE_DEC_SWIGLU, xb, sms, GEMV_CTAS_PER_SM(NT),
                               ub_count(fmt, dl_span_words(fmt), NT), wbytes, c->gemv_xcost,
                               smem_max, (int)c->prop.sharedMemPerMultiprocessor);
    if (!p.RT) {
        cu_fail(c, ERR_FAIL, "cuda backend: a decode GEMV of %d rows of K %d does not fit shared "
                "memory", M, K);
        return;
    }
    /* segments' first row groups */
    int g = 0;
    for (int i = 0; i < n; i++) {
        a.seg[i].g0 = g;
        if (epi != BE_DEC_SWIGLU)
            g += (Ns[i] + 16 * p.RT - 1) / (16 * p.RT);
    }
    if (epi == BE_DEC_SWIGLU)
        a.seg[1].g0 = 0;
    a.RT = p.RT, a.S = p.S, a.KR = p.KR, a.groups = p.groups, a.ntiles = p.groups * p.S;
    if (p.S > 1) {
        const size_t TS = (size_t)p.RT * 16 * 8 * p.NT;
        a.ws = (float *)cu_scratch(c, CS_DECWS, (size_t)p.groups * p.S * TS * sizeof(float));
        a.cnt = cu_dec_counters(c, (size_t)p.groups);
        if (!a.ws || !a.cnt)
            return;
    }
    const int ki = fmt * 4 + nt_index(p.NT);
    const void *fn = GEMV[fmt][nt_index(p.NT)];
    if (c->occ[ki] < p.smem) { /* raise the kernel's shared memory limit once */
        if (!cu_check(c, cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              smem_max), "decode GEMV shared memory"))
            return;
        c->occ[ki] = smem_max;
    }
    int per_sm = 1;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, 256, (size_t)p.smem);
    per_sm = per_sm < 1 ? 1 : per_sm;
    const int grid = a.ntiles < sms * per_sm ? a.ntiles : sms * per_sm;
    void *args[] = {&a};
    /* a kernel that starts early reads its weights before it waits: not when they were just
     * (re)built by the work right before it */
    const bool pdl = c->pdl;
    if (c->wbuilt)
        c->pdl = false;
    cu_launch_pdl(c, fn, dim3((unsigned)grid), dim3(256), (size_t)p.smem, args, "k_dec_gemv");
    c->pdl = pdl;
}

/* The layers of a fused op, grouped into launches of one weight format. */
static void gemv_run(cuda_t *c, const float *x, const float *norm_w, float eps, int M, int K,
                     const be_linear_t *lin, float *const *outs, int n, int epi)
{
    int fmt[BE_DEC_MAX_LIN];
    wsrc_t w[BE_DEC_MAX_LIN];
    c->wbuilt = false;
    for (int i = 0; i < n; i++)
        if (!weight_src(c, &lin[i], &fmt[i], &w[i]))
            return;
    bool done[BE_DEC_MAX_LIN] = {false, false, false};
    for (int i = 0; i < n; i++) {
        if (done[i])
            continue;
        be_linear_t gl[BE_DEC_MAX_LIN];
        wsrc_t gw[BE_DEC_MAX_LIN];
        float *go[BE_DEC_MAX_LIN];
        int gn = 0;
        for (int j = i; j < n; j++)
            if (!done[j] && fmt[j] == fmt[i]) {
                gl[gn] = lin[j], gw[gn] = w[j], go[gn] = outs[j], gn++;
                done[j] = true;
            }
        gemv_launch(c, x, norm_w, eps, M, K, gl, gw, go, gn, fmt[i], epi);
    }
}

bool cu_dec_linear_hook(cuda_t *c, const be_linear_t *a, be_ptr_t yp, bool acc)
{
    if (!fusable(c, a, a->M) || a->N < 1 || a->K < 1)
        return false;
    c->gen++; /* device memory changes: prepared GEMM operands are stale */
    float *y = fptr(yp);
    gemv_run(c, fptr(a->x), nullptr, 0.0f, a->M, a->K, a, &y, 1,
             acc ? BE_DEC_RESIDUAL : BE_DEC_STORE);
    return true;
}

/* The same op as linear layers, norm and element-wise kernels one by one (EMULATED mode, M
 * above BE_DEC_MAX_ROWS, or layers whose specs the GEMV does not take); each linear layer
 * still goes through the hook, so the packed ones take the GEMV. */
static void compose(cuda_t *c, backend_t *be, const be_dec_linear_t *a)
{
    const int M = a->M, K = a->K;
    be_ptr_t xn = a->x;
    be_buf_t views[3];
    if (!be_null(a->norm_w)) {
        float *t = (float *)cu_scratch(c, CS_DEC0, (size_t)M * K * sizeof(float));
        if (!t)
            return;
        views[0].size = (size_t)M * K * sizeof(float), views[0].d = (unsigned char *)t;
        xn = be_ptr(&views[0], 0);
        cuda_op_rmsnorm_fwd(be, xn, BE_NULL, a->x, a->norm_w, M, K, a->eps);
    }
    be_ptr_t o[BE_DEC_MAX_LIN];
    for (int i = 0; i < a->nlin; i++) {
        o[i] = a->out[i];
        if (a->epi == BE_DEC_SWIGLU) {
            float *t = (float *)cu_scratch(c, i ? CS_DEC2 : CS_DEC1, (size_t)M * a->lin[i].N * sizeof(float));
            if (!t)
                return;
            views[1 + i].size = (size_t)M * a->lin[i].N * sizeof(float);
            views[1 + i].d = (unsigned char *)t;
            o[i] = be_ptr(&views[1 + i], 0);
        }
    }
    for (int i = 0; i < a->nlin; i++) {
        be_linear_t l = a->lin[i];
        l.x = xn, l.M = M, l.K = K;
        const bool acc = a->epi == BE_DEC_RESIDUAL;
        if (!cu_dec_linear_hook(c, &l, o[i], acc))
            cu_linear_gemm(c, &l, o[i], acc);
    }
    if (a->epi == BE_DEC_SWIGLU)
        cuda_op_swiglu_fwd(be, a->out[0], o[0], o[1], (size_t)M * a->lin[0].N);
}

void cuda_op_dec_linear(backend_t *be, const be_dec_linear_t *a)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (a->M <= 0 || a->nlin < 1 || a->nlin > BE_DEC_MAX_LIN ||
        (a->epi != BE_DEC_STORE && a->nlin != (a->epi == BE_DEC_SWIGLU ? 2 : 1))) {
        cu_fail(c, ERR_FAIL, "cuda backend: bad fused decode op (%d layers, epilogue %d)", a->nlin,
                (int)a->epi);
        return;
    }
    bool fuse = true;
    be_linear_t lin[BE_DEC_MAX_LIN];
    for (int i = 0; i < a->nlin; i++) {
        lin[i] = a->lin[i];
        lin[i].x = a->x, lin[i].M = a->M, lin[i].K = a->K;
        fuse = fuse && fusable(c, &lin[i], a->M);
    }
    if (fuse && a->epi == BE_DEC_SWIGLU) {
        /* one launch pairs gate and up rows: same weight format, same quantized input */
        const mx_spec_t *x0 = &lin[0].spec[PREC_OP_INPUT], *x1 = &lin[1].spec[PREC_OP_INPUT];
        const mx_spec_t *w0 = &lin[0].spec[PREC_OP_WEIGHT], *w1 = &lin[1].spec[PREC_OP_WEIGHT];
        const bool same_w = mx_format_info(w0->format)->is_mx == mx_format_info(w1->format)->is_mx &&
                            (!mx_format_info(w0->format)->is_mx || w0->format == w1->format);
        fuse = same_w && mx_spec_equal(x0, x1) && lin[0].N == lin[1].N &&
               !(mx_format_info(x0->format)->is_mx && x0->round == MX_ROUND_STOCHASTIC);
    }
    if (!fuse) {
        compose(c, be, a);
        return;
    }
    float *outs[BE_DEC_MAX_LIN];
    for (int i = 0; i < a->nlin; i++)
        outs[i] = fptr(a->out[i]);
    gemv_run(c, fptr(a->x), fptr(a->norm_w), a->eps, a->M, a->K, lin, outs, a->nlin, (int)a->epi);
}

/* ---- weight copies for tests and freezing ---------------------------------------------------------- */

/* out (N, K) float32: the operand the decode GEMV multiplies, decoded by the same device
 * functions (load_unit, chunk_raw, decode_chunk; scalar_chunk for the scalar path), each
 * thread one 32-element span of a row. */
template <int FMT>
__global__ void k_dec_weight(float *out, wsrc_t w, int K, int rc, int vec)
{
    const int spans = (K + 31) / 32;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)w.N * spans;
         i += (size_t)gridDim.x * blockDim.x) {
        const int r = (int)(i / (size_t)spans), k0 = (int)(i % (size_t)spans) * 32;
        unit_t<FMT> u;
        if (vec)
            load_unit<FMT>(u, w, r, 0, K, k0); /* row r is this unit's row g = 0 */
        const int p = dl_pairing(FMT);
        for (int j = 0; j < 4; j++) {
            uint32_t q[4], raw[4];
            if (vec) {
                dl_chunk_raw(FMT, u.w[0], j, raw);
                decode_chunk<FMT>(raw, (u.sb[0] >> (8 * j)) & 0xffu, rc, q);
            } else {
                scalar_chunk<FMT>(w, r, K, k0 + 8 * j, rc, q);
            }
            for (int slot = 0; slot < 8; slot++) {
                const int k = k0 + 8 * j + dl_slot(p, slot);
                if (k < K)
                    out[(size_t)r * K + k] = __uint_as_float(((q[slot >> 1] >> (16 * (slot & 1))) & 0xffffu) << 16);
            }
        }
    }
}

#define DECW(F) (const void *)k_dec_weight<F>
static const void *const DECW_K[DL_NFMT] = {DECW(DL_E4M3), DECW(DL_E5M2), DECW(DL_E3M2), DECW(DL_E2M3),
                                            DECW(DL_E2M1), DECW(DL_INT8), DECW(DL_INT4), DECW(DL_BF16)};

void cuda_op_dec_weight(backend_t *be, const be_linear_t *a, be_ptr_t out)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (a->N <= 0 || a->K <= 0)
        return;
    if (!fusable(c, a, 1)) {
        /* not read by the GEMV: the GEMM operand, widened */
        cu_prepare(c, vptr(out), DT_F32, fptr(a->w), (size_t)a->N, (size_t)a->K, MX_AXIS_ROW,
                   &a->spec[PREC_OP_WEIGHT], a->compute, a->seed, a->stream + PREC_OP_WEIGHT);
        return;
    }
    int fmt;
    wsrc_t w;
    if (!weight_src(c, a, &fmt, &w))
        return;
    int vec = a->K % 32 == 0 && (fmt == DL_BF16 || w.block % 8 == 0);
    int rc = a->compute == PREC_COMPUTE_BF16, K = a->K;
    float *o = fptr(out);
    const size_t n = (size_t)a->N * ((a->K + 31) / 32);
    void *args[] = {&o, &w, &K, &rc, &vec};
    cu_check(c, cudaLaunchKernel(DECW_K[fmt], dim3(cu_grid(n, 128)), dim3(128), args, 0, c->st),
             "k_dec_weight");
}

void cuda_op_linear_prepare(backend_t *be, const be_linear_t *a)
{
    cuda_t *c = CU(be);
    c->gen++;
    cu_weight_gemm(c, a); /* the operand of larger forwards */
    cu_weight_mxg(c, a);  /* or their tensor-core copy, where the pair runs natively */
    int fmt;
    wsrc_t w;
    if (fusable(c, a, 1)) /* and the decode copy */
        weight_src(c, a, &fmt, &w);
}
