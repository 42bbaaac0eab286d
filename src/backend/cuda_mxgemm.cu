/* cuda_mxgemm: MX GEMMs on Hopper's FP8 / INT8 tensor cores (docs/engine.md "MX GEMMs").
 *
 * A linear layer's GEMM whose two operands are MX formats with a common tensor-core type
 * (cuda_mxgemm.cuh) runs here instead of fake quant + a bf16 cuBLASLt GEMM:
 *
 * 1. Quantize on the way in (k_mxg_codes): the float32 operand -> one byte per element
 *    (E4M3 / E5M2 / int8) and one float multiplier per block, blocks along the GEMM's
 *    reduction, in the K-major layout of cuda_mxgemm.cuh. The scale pass is cuda_mx.cu's
 *    (cu_mx_scale_exps), the element rounding mxc_elem (every rounding mode, stochastic
 *    with rng_u32(seed, stream, r * cols + c)), so a byte times its multiplier is exactly
 *    mx_fake_quant's value (then rounded to bf16 under bf16 compute, as the CPU does). The
 *    backward operands come from the same kernel transposed (blocks down the columns of
 *    the source become rows of the operand): dy along N (dx), W along N (dx), dy and x
 *    along M (dW). Weights are kept quantized per layer (mxg_cache_t, keyed as the
 *    emulated copies are); activations in the scratch slots CS_MXA / CS_MXB, reused while
 *    the backend's generation and the source are unchanged (q/k/v share one x).
 * 2. The GEMM (k_mxg_gemm): 128 x 128 CTA tiles, 8 warps of 64 x 32, 64 bytes of k per
 *    stage in a 3-stage cp.async pipeline, ldmatrix fragments; per k step (the smaller
 *    granule of the two operands: 32, 16 or 8) one mma.sync per 16 x 8 sub-tile with a
 *    zero accumulator, whose partial sum p is added as acc = fma(p * sa, sb, acc). Bias,
 *    the compute type's rounding (bf16) and the store or accumulation are the epilogue.
 *
 * Mixed E4M3 x E5M2 runs natively (mma.sync has every pairing); int8 against a float
 * format, fp16 compute (its rounding can leave the element grid or overflow to Inf),
 * blocks that are not a multiple of 8 and the plain casts keep the emulated path.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_internal.cuh"
#include "backend/cuda_mxgemm.cuh"

/* ---- operands ---------------------------------------------------------------------------- */

/* A quantized operand: `rows` rows of `red` elements along the reduction (layout in
 * cuda_mxgemm.cuh). */
typedef struct mxg_op {
    const uint8_t *codes; /* (rowsP, Kp) */
    const float *scales;  /* (rowsP, Kp / g) */
    size_t rows, red, rowsP, Kp;
    int g, kind;
    /* the folded copy (fold): E4M3 bytes (ld4, Kp) and cuBLASLt's VEC128_32F scales, one
     * per 128 along K, K-block major: fscales[kb * ld4 + row]; ld4 = rows rounded up to 4.
     * flag: nonzero when some chunk did not fold exactly (then the per-block kernel runs). */
    bool fold;
    size_t ld4;
    const uint8_t *fcodes;
    const float *fscales;
    int *flag;
} mxg_op_t;

static void op_shape(mxg_op_t *op, size_t rows, size_t red, const mx_spec_t *s, bool fold)
{
    op->rows = rows;
    op->red = red;
    op->rowsP = mxg_round_up(rows, MXG_BM);
    op->Kp = mxg_round_up(red, MXG_CHUNK); /* whole 128-chunks for the fold (and 64-byte stages) */
    op->g = mxg_granule(s->block);
    op->kind = mxg_kind((int)s->format);
    op->fold = fold;
    op->ld4 = mxg_round_up(rows, 4);
}

static size_t op_bytes(const mxg_op_t *op)
{
    size_t n = op->rowsP * op->Kp + op->rowsP * (op->Kp / (size_t)op->g) * sizeof(float);
    if (op->fold)
        n += op->ld4 * op->Kp + (op->Kp / MXG_CHUNK) * op->ld4 * sizeof(float) + 16;
    return n; /* every part a multiple of 16 bytes */
}

static void op_place(mxg_op_t *op, void *buf)
{
    uint8_t *b = (uint8_t *)buf;
    op->codes = b;
    b += op->rowsP * op->Kp;
    op->scales = (const float *)b;
    b += op->rowsP * (op->Kp / (size_t)op->g) * sizeof(float);
    op->fcodes = op->fold ? b : nullptr;
    b += op->ld4 * op->Kp;
    op->fscales = op->fold ? (const float *)b : nullptr;
    b += (op->Kp / MXG_CHUNK) * op->ld4 * sizeof(float);
    op->flag = op->fold ? (int *)b : nullptr;
}

/* ---- quantize on the way in ------------------------------------------------------------- */

typedef struct mxg_qargs {
    uint8_t *codes;
    float *scales;
    const uint32_t *in; /* the float32 source (rows, cols) */
    const int *sexp;    /* its blocks' scale exponents (mxc_block_of order) */
    size_t rows, cols, out_rows, red, Kp, ldsc;
    mx_axis_t axis;
    mx_round_t round;
    int blk, g, kind, fb, rc;
    mxc_fmt_t f;
    uint64_t seed, stream;
} mxg_qargs_t;

/* One CTA per 64 operand rows x 64 k (grid-stride over k): the source tile is read
 * coalesced along whichever of its axes is contiguous into shared memory, then each
 * thread writes 4 consecutive bytes of one operand row (and the scale of a granule that
 * starts there). Rows and k past the source (padding) get zero bytes and zero scales. */
__global__ void __launch_bounds__(256) k_mxg_codes(const mxg_qargs_t q)
{
    __shared__ uint32_t T[64][65];
    const int tid = threadIdx.x;
    const size_t o0 = (size_t)blockIdx.x * 64;
    for (size_t kt = blockIdx.y; kt < q.Kp / 64; kt += gridDim.y) {
        const size_t k0 = kt * 64;
        for (int i = tid; i < 64 * 64; i += 256) {
            const int a = q.axis == MX_AXIS_ROW ? i >> 6 : i & 63, b = q.axis == MX_AXIS_ROW ? i & 63 : i >> 6;
            const size_t o = o0 + a, kk = k0 + b;
            uint32_t u = 0;
            if (o < q.out_rows && kk < q.red) {
                size_t r, c;
                mxg_src_of(o, kk, q.axis, &r, &c);
                u = q.in[r * q.cols + c];
            }
            T[a][b] = u;
        }
        __syncthreads();
        for (int i = tid; i < 64 * 16; i += 256) {
            const int a = i >> 4, b4 = (i & 15) * 4;
            const size_t o = o0 + a;
            uint32_t word = 0;
            int s0 = 0;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const size_t kk = k0 + b4 + e;
                if (o >= q.out_rows || kk >= q.red)
                    continue;
                size_t r, c;
                mxg_src_of(o, kk, q.axis, &r, &c);
                const int s = q.sexp[mxc_block_of(r, c, q.cols, q.axis, q.blk)];
                if (e == 0)
                    s0 = s;
                if (s == MXC_NAN_SCALE)
                    continue; /* byte 0; the block's multiplier is NaN */
                const uint32_t rnd = q.round == MX_ROUND_STOCHASTIC ? philox_u32(q.seed, q.stream, r * q.cols + c) : 0;
                uint32_t v = mxc_elem_fast(&q.f, q.round, s, T[a][b4 + e], rnd);
                if (q.rc)
                    v = mxc_cast_bf16(v); /* exact for MX values above 2^-133; see the docs */
                word |= (uint32_t)mxg_encode(v, s, q.kind, q.fb) << (8 * e);
            }
            *(uint32_t *)(q.codes + o * q.Kp + k0 + b4) = word;
            if ((k0 + b4) % (size_t)q.g == 0) {
                const bool in = o < q.out_rows && k0 + b4 < q.red;
                q.scales[o * q.ldsc + (k0 + b4) / (size_t)q.g] =
                    in ? hd_u2f(mxg_scale_bits(s0, q.fb)) : 0.0f;
            }
        }
        __syncthreads();
    }
}

/* The fold (cuda_mxgemm.cuh): one warp per (row, 128-chunk) of the operand, lane l on
 * bytes 4l..4l+3. rows >= the operand's get scale 0 (cuBLASLt reads up to ld4); a chunk
 * holding a NaN block gets a NaN scale (its row of the product is NaN either way); a
 * chunk of padding (all granule scales 0) scale 0. */
__global__ void __launch_bounds__(256) k_mxg_fold(const uint8_t *codes, const float *scales,
                                                  size_t rows, size_t ld4, size_t Kp, int g,
                                                  uint8_t *fcodes, float *fscales, int *flag)
{
    const size_t nch = Kp / MXG_CHUNK;
    const size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (w >= ld4 * nch)
        return;
    const size_t row = w / nch, ch = w - row * nch, k = ch * MXG_CHUNK + 4 * (size_t)lane;
    if (row >= rows) {
        if (lane == 0)
            fscales[ch * ld4 + row] = 0.0f;
        return;
    }
    const uint32_t sb = hd_f2u(scales[row * (Kp / (size_t)g) + k / (size_t)g]);
    const bool nan = (sb & 0x7fffffffu) > 0x7f800000u;
    const int e = sb && !nan ? mxg_pow2_exp(sb) : -1000;
    int S = e;
#pragma unroll
    for (int o = 16; o; o >>= 1)
        S = max(S, __shfl_xor_sync(0xffffffffu, S, o));
    const bool any_nan = __any_sync(0xffffffffu, nan);
    const uint32_t in = *(const uint32_t *)(codes + row * Kp + k);
    uint32_t out = 0;
    bool ok = true;
    if (!any_nan && e != -1000) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint8_t b;
            ok = mxg_fold_byte((uint8_t)(in >> (8 * j)), S - e, &b) && ok;
            out |= (uint32_t)b << (8 * j);
        }
    }
    *(uint32_t *)(fcodes + row * Kp + k) = out;
    const bool all_ok = __all_sync(0xffffffffu, ok);
    if (lane == 0) {
        fscales[ch * ld4 + row] = any_nan ? hd_u2f(0x7fc00000u) : S == -1000 ? 0.0f : hd_u2f(mxg_pow2_bits(S));
        if (!all_ok)
            atomicOr(flag, 1);
    }
}

/* An operand whose fold was not exact somewhere gets chunk scales 0 throughout, so that
 * cuBLASLt adds nothing from it (its E4M3 bytes are finite) and its flag sends every GEMM
 * that uses it to the per-block kernel. */
__global__ void k_mxg_fold_kill(float *fscales, size_t n, const int *flag)
{
    if (!*flag)
        return;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        fscales[i] = 0.0f;
}

/* The operand of a GEMM from the float32 source `in` (rows, cols): blocks along `axis`
 * (MX_AXIS_ROW: the operand is the source, reduction along its rows; MX_AXIS_COL: the
 * source transposed), quantized by spec, rounded to the compute type, into buf. */
static void quantize(cuda_t *c, void *buf, const float *in, size_t rows, size_t cols,
                     mx_axis_t axis, const mx_spec_t *s, prec_compute_t ct, uint64_t seed,
                     uint64_t stream, bool fold, mxg_op_t *op)
{
    const bool col = axis == MX_AXIS_COL;
    op_shape(op, col ? cols : rows, col ? rows : cols, s, fold);
    op_place(op, buf);
    const int *sexp = cu_mx_scale_exps(c, in, rows, cols, axis, s);
    if (!sexp)
        return;
    mxg_qargs_t q;
    q.codes = (uint8_t *)buf;
    q.scales = (float *)op->scales;
    q.in = (const uint32_t *)in;
    q.sexp = sexp;
    q.rows = rows, q.cols = cols, q.out_rows = op->rows, q.red = op->red, q.Kp = op->Kp;
    q.ldsc = op->Kp / (size_t)op->g;
    q.axis = axis, q.blk = s->block, q.g = op->g, q.round = s->round, q.kind = op->kind;
    q.fb = mxg_frac_bits((int)s->format);
    q.rc = ct == PREC_COMPUTE_BF16;
    q.f = mxc_fmt(s->format);
    q.seed = seed, q.stream = stream;
    const size_t kt = op->Kp / 64;
    dim3 grid((unsigned)(op->rowsP / 64), (unsigned)(kt < 65535 ? kt : 65535));
    k_mxg_codes<<<grid, 256, 0, c->st>>>(q);
    cu_launched(c, "k_mxg_codes");
    if (!fold)
        return;
    cu_check(c, cudaMemsetAsync(op->flag, 0, sizeof(int), c->st), "fold flag");
    const size_t warps = op->ld4 * (op->Kp / MXG_CHUNK);
    k_mxg_fold<<<(unsigned)((warps + 7) / 8), 256, 0, c->st>>>(
        op->codes, op->scales, op->rows, op->ld4, op->Kp, op->g, (uint8_t *)op->fcodes,
        (float *)op->fscales, op->flag);
    cu_launched(c, "k_mxg_fold");
    const size_t ns = op->ld4 * (op->Kp / MXG_CHUNK);
    k_mxg_fold_kill<<<(unsigned)(ns / 256 + 1 < 1024 ? ns / 256 + 1 : 1024), 256, 0, c->st>>>(
        (float *)op->fscales, ns, op->flag);
    cu_launched(c, "k_mxg_fold_kill");
}

/* An activation operand in scratch `slot`, reused when the slot already holds it (the
 * record is dropped by cu_mxg_written and by any op that bumps the generation). */
static bool act_operand(cuda_t *c, int slot, const float *in, size_t rows, size_t cols,
                        mx_axis_t axis, const mx_spec_t *s, prec_compute_t ct, uint64_t seed,
                        uint64_t stream, bool fold, mxg_op_t *op)
{
    const bool col = axis == MX_AXIS_COL;
    op_shape(op, col ? cols : rows, col ? rows : cols, s, fold);
    const size_t bytes = op_bytes(op);
    const bool sr = s->round == MX_ROUND_STOCHASTIC;
    prep_rec_t *r = &c->rec[slot];
    if (r->valid && r->gen == c->gen && r->src == in && r->rows == rows && r->cols == cols &&
        r->axis == (int)axis && r->dt == (int)fold && mx_spec_equal(&r->spec, s) && r->ct == ct &&
        (!sr || (r->seed == seed && r->stream == stream)) && c->scr[slot] && c->scr_n[slot] >= bytes) {
        op_place(op, c->scr[slot]);
        return true;
    }
    r->valid = false;
    void *buf = cu_scratch(c, slot, bytes);
    if (!buf)
        return false;
    quantize(c, buf, in, rows, cols, axis, s, ct, seed, stream, fold, op);
    prep_rec_t nr = {true, c->gen, in, rows, cols, (int)axis, (int)fold, *s, ct, seed, stream};
    *r = nr;
    return true;
}

void cu_mxg_written(cuda_t *c, const void *p, size_t bytes)
{
    if (!p)
        return;
    const uintptr_t a0 = (uintptr_t)p, a1 = a0 + bytes;
    for (int slot = CS_MXA; slot <= CS_MXB; slot++) {
        prep_rec_t *r = &c->rec[slot];
        const uintptr_t b0 = (uintptr_t)r->src, b1 = b0 + r->rows * r->cols * sizeof(float);
        if (r->valid && a0 < b1 && b0 < a1)
            r->valid = false;
    }
}

/* ---- the weight cache: W (N, K) along K (forward) and along N (dx) --------------------- */

typedef struct mxg_entry {
    bool valid, fold;
    uint64_t version, stream;
    mx_spec_t spec;
    prec_compute_t compute;
    void *d;
    size_t bytes;
} mxg_entry_t;

struct mxg_cache {
    mxg_entry_t e[2]; /* [0] forward, [1] backward */
};

static void entry_drop(cuda_t *c, mxg_entry_t *en)
{
    if (en->d) {
        cudaStreamSynchronize(c->st); /* enqueued GEMMs may still read it */
        cu_free(c, en->d, en->bytes);
    }
    memset(en, 0, sizeof *en);
}

void cu_mxg_cache_free(cuda_t *c, mxg_cache_t *m)
{
    if (!m)
        return;
    entry_drop(c, &m->e[0]);
    entry_drop(c, &m->e[1]);
    free(m);
}

size_t cu_mxg_cache_bytes(const mxg_cache_t *m) { return m ? m->e[0].bytes + m->e[1].bytes : 0; }

static bool weight_operand(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc, mx_axis_t axis,
                           bool fold, mxg_op_t *op)
{
    const prec_operand_t o = axis == MX_AXIS_ROW ? PREC_OP_WEIGHT : PREC_OP_WEIGHT_BP;
    const mx_spec_t *s = &a->spec[o];
    const uint64_t stream = a->stream + o;
    const float *w = fptr(a->w);
    if (!wc)
        return act_operand(c, CS_MXB, w, a->N, a->K, axis, s, a->compute, a->seed, stream, fold, op);
    if (!*wc && !(*wc = (mxg_cache_t *)calloc(1, sizeof **wc))) {
        cu_fail(c, ERR_NOMEM, "cuda backend: out of memory for a weight cache");
        return false;
    }
    mxg_entry_t *en = &(*wc)->e[axis == MX_AXIS_ROW ? 0 : 1];
    const bool col = axis == MX_AXIS_COL;
    op_shape(op, col ? a->K : a->N, col ? a->N : a->K, s, fold);
    const size_t bytes = op_bytes(op);
    const bool sr = s->round == MX_ROUND_STOCHASTIC;
    /* a folded entry serves the per-block kernel too (its first part): after
     * linear_prepare the float32 weight may be gone */
    mxg_op_t as_built = *op;
    as_built.fold = en->fold;
    if (en->valid && (en->fold || !fold) && en->version == a->wversion &&
        mx_spec_equal(&en->spec, s) && en->compute == a->compute &&
        en->bytes == op_bytes(&as_built) && (!sr || en->stream == stream)) {
        op_place(op, en->d);
        return true;
    }
    if (en->bytes != bytes) {
        entry_drop(c, en);
        if (!(en->d = cu_malloc(c, bytes, "a tensor-core weight")))
            return false;
        en->bytes = bytes;
    }
    quantize(c, en->d, w, a->N, a->K, axis, s, a->compute, a->seed, stream, fold, op);
    en->valid = true;
    en->fold = fold;
    en->version = a->wversion;
    en->stream = stream;
    en->spec = *s;
    en->compute = a->compute;
    return true;
}

/* Device words: the count of guarded per-block runs (folds that were not exact). */
struct mxg_dev {
    unsigned long long ran;
};

/* One cached cuBLASLt problem: column-major C' (m x n) = A'^T B', A' = B (K x m, E4M3,
 * VEC128_32F scales), B' = A (K x n), C' = C^T (float32, ld ldc). ok false: cuBLASLt has
 * no algorithm for it (the per-block kernel runs instead). */
typedef struct fold_plan {
    int m, n, k, al_c;
    long ldc;
    bool ok;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t l[3]; /* A', B', C' */
    cublasLtMatmulAlgo_t algo;
} fold_plan_t;

struct mxg_state {
    mxg_dev_t *dev;
    fold_plan_t *plans;
    int nplans, cap;
    long folded;
};

/* ---- the GEMM ---------------------------------------------------------------------------- */

typedef struct mxg_gargs {
    const uint8_t *a, *b;  /* (Mp, Kp), (Np, Kp) */
    const float *sa, *sb;  /* (Mp, Kp / ga), (Np, Kp / gb) */
    float *c;              /* (M, N), row stride ldc */
    const float *bias;     /* (N) or NULL */
    int M, N, Kp, na, nb;  /* na, nb: granules per 64-byte stage (64 / g) */
    int sha, shb;          /* log2(g / step) */
    long ldc;
    int acc, rc;           /* add into c; round to bf16 */
    int tm, tiles;         /* CTA tiles along M, in all */
    const int *ga, *gb;    /* guard: run only when *ga | *gb (a fold failed); NULL: always */
    unsigned long long *ran; /* counts the guarded runs (one per launch) */
} mxg_gargs_t;

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p)
{
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* d = A (16 x 32) . B (32 x 8) from zero, for the tensor-core types KA x KB */
template <int KA, int KB> struct mma;

#define MXG_MMA_F8(KA, KB, TA, TB)                                                               \
    template <> struct mma<KA, KB> {                                                             \
        static __device__ __forceinline__ void k32(float d[4], const uint32_t a[4],              \
                                                   const uint32_t b[2])                          \
        {                                                                                        \
            asm volatile("mma.sync.aligned.m16n8k32.row.col.f32." TA "." TB ".f32 "               \
                         "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"           \
                         : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                        \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),     \
                           "f"(0.0f));                                                           \
        }                                                                                        \
        static __device__ __forceinline__ void k16(float d[4], uint32_t a0, uint32_t a1,         \
                                                   uint32_t b0)                                  \
        {                                                                                        \
            asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TA "." TB ".f32 "               \
                         "{%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};\n"                        \
                         : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                        \
                         : "r"(a0), "r"(a1), "r"(b0), "f"(0.0f));                                \
        }                                                                                        \
    };

MXG_MMA_F8(MXG_E4M3, MXG_E4M3, "e4m3", "e4m3")
MXG_MMA_F8(MXG_E4M3, MXG_E5M2, "e4m3", "e5m2")
MXG_MMA_F8(MXG_E5M2, MXG_E4M3, "e5m2", "e4m3")
MXG_MMA_F8(MXG_E5M2, MXG_E5M2, "e5m2", "e5m2")

/* int8: an exact int32 sum (|sum| <= 32 x 127 x 127 < 2^24), so its float is exact too */
template <> struct mma<MXG_S8, MXG_S8> {
    static __device__ __forceinline__ void k32(float d[4], const uint32_t a[4], const uint32_t b[2])
    {
        int r[4];
        asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(0));
#pragma unroll
        for (int i = 0; i < 4; i++)
            d[i] = (float)r[i];
    }
    static __device__ __forceinline__ void k16(float d[4], uint32_t a0, uint32_t a1, uint32_t b0)
    {
        int r[4];
        asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 "
                     "{%0,%1,%2,%3}, {%4,%5}, {%6}, {%7,%7,%7,%7};\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a0), "r"(a1), "r"(b0), "r"(0));
#pragma unroll
        for (int i = 0; i < 4; i++)
            d[i] = (float)r[i];
    }
};

/* The partial sum of k step h (of 32 / STEP) of a k32 fragment pair. */
template <int KA, int KB, int STEP>
__device__ __forceinline__ void mma_step(float d[4], const uint32_t a[4], const uint32_t b[2], int h,
                                         int lane)
{
    if (STEP == 32) {
        mma<KA, KB>::k32(d, a, b);
    } else if (STEP == 16) {
        mma<KA, KB>::k16(d, a[2 * h], a[2 * h + 1], b[h]);
    } else { /* blocks of 8: the k16 half h / 2, A's lanes of block h % 2 only */
        const int half = h >> 1;
        const bool keep = mxg_k8_keep(lane, h & 1);
        mma<KA, KB>::k16(d, keep ? a[2 * half] : 0u, keep ? a[2 * half + 1] : 0u, b[half]);
    }
}

__device__ __forceinline__ void store_out(const mxg_gargs_t &p, int row, int col, float v)
{
    if (p.bias)
        v += p.bias[col];
    if (p.rc)
        v = hd_u2f(mxc_cast_bf16(hd_f2u(v)));
    float *dst = p.c + (size_t)row * p.ldc + col;
    *dst = p.acc ? *dst + v : v;
}

template <int KA, int KB, int STEP>
__global__ void __launch_bounds__(MXG_THREADS) k_mxg_gemm(const mxg_gargs_t p)
{
    extern __shared__ __align__(16) unsigned char smem[];
    if (p.ga && !(*p.ga | *p.gb))
        return; /* the folded GEMM was exact */
    if (p.ga && blockIdx.x == 0 && threadIdx.x == 0)
        atomicAdd(p.ran, 1ull);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3, g = lane >> 2, t = lane & 3;
    /* CTA tiles of 128 x 128, grid-stride (a guarded launch has one CTA per SM) */
    for (int ti = blockIdx.x; ti < p.tiles; ti += gridDim.x) {
    const size_t m0 = (size_t)(ti % p.tm) * MXG_BM, n0 = (size_t)(ti / p.tm) * MXG_BM;
    const int tile = MXG_BM * MXG_LDS;
    const int stage = 2 * tile + MXG_BM * (p.na + p.nb) * 4;
    const int nk = p.Kp / MXG_BK;
    const int lda = p.Kp, ldsa = p.Kp / MXG_BK * p.na, ldsb = p.Kp / MXG_BK * p.nb;

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int r = 0; r < 4; r++)
                acc[i][j][r] = 0.0f;

    /* stage kt of A, B and their scales into buffer st */
    auto load = [&](int st, int kt) {
        unsigned char *sA = smem + st * stage, *sB = sA + tile;
        float *scA = (float *)(sB + tile), *scB = scA + MXG_BM * p.na;
        const size_t k0 = (size_t)kt * MXG_BK;
#pragma unroll
        for (int i = tid; i < MXG_BM * 4; i += MXG_THREADS) {
            const int r = i >> 2, cc = (i & 3) * 16;
            cp_async16(sA + r * MXG_LDS + cc, p.a + (m0 + r) * lda + k0 + cc);
            cp_async16(sB + r * MXG_LDS + cc, p.b + (n0 + r) * lda + k0 + cc);
        }
        for (int i = tid; i < MXG_BM * p.na; i += MXG_THREADS) {
            const int r = i / p.na, j = i - r * p.na;
            cp_async4(scA + i, p.sa + (m0 + r) * ldsa + (size_t)kt * p.na + j);
        }
        for (int i = tid; i < MXG_BM * p.nb; i += MXG_THREADS) {
            const int r = i / p.nb, j = i - r * p.nb;
            cp_async4(scB + i, p.sb + (n0 + r) * ldsb + (size_t)kt * p.nb + j);
        }
    };

#pragma unroll
    for (int s = 0; s < MXG_STAGES - 1; s++) {
        if (s < nk)
            load(s, s);
        cp_async_commit();
    }
    int ar, ac, br, bc;
    mxg_ldsm_a(lane, &ar, &ac);
    mxg_ldsm_b(lane, &br, &bc);
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<MXG_STAGES - 2>();
        __syncthreads();
        if (kt + MXG_STAGES - 1 < nk)
            load((kt + MXG_STAGES - 1) % MXG_STAGES, kt + MXG_STAGES - 1);
        cp_async_commit();
        const unsigned char *sA = smem + (kt % MXG_STAGES) * stage, *sB = sA + tile;
        const float *scA = (const float *)(sB + tile), *scB = scA + MXG_BM * p.na;
#pragma unroll
        for (int kc = 0; kc < MXG_BK / 32; kc++) {
            uint32_t af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++)
                ldsm_x4(af[i], sA + (wm * 64 + i * 16 + ar) * MXG_LDS + kc * 32 + ac);
#pragma unroll
            for (int jj = 0; jj < 2; jj++) {
                uint32_t r[4];
                ldsm_x4(r, sB + (wn * 32 + jj * 16 + br) * MXG_LDS + kc * 32 + bc);
                bf[2 * jj][0] = r[0], bf[2 * jj][1] = r[1];
                bf[2 * jj + 1][0] = r[2], bf[2 * jj + 1][1] = r[3];
            }
#pragma unroll
            for (int h = 0; h < 32 / STEP; h++) {
                const int hs = kc * (32 / STEP) + h; /* step within the stage */
                float fa[4][2], fb[4][2];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int r = wm * 64 + i * 16 + g;
                    fa[i][0] = scA[r * p.na + (hs >> p.sha)];
                    fa[i][1] = scA[(r + 8) * p.na + (hs >> p.sha)];
                }
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int n = wn * 32 + j * 8 + 2 * t;
                    fb[j][0] = scB[n * p.nb + (hs >> p.shb)];
                    fb[j][1] = scB[(n + 1) * p.nb + (hs >> p.shb)];
                }
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        float d[4];
                        mma_step<KA, KB, STEP>(d, af[i], bf[j], h, lane);
                        acc[i][j][0] = fmaf(d[0] * fa[i][0], fb[j][0], acc[i][j][0]);
                        acc[i][j][1] = fmaf(d[1] * fa[i][0], fb[j][1], acc[i][j][1]);
                        acc[i][j][2] = fmaf(d[2] * fa[i][1], fb[j][0], acc[i][j][2]);
                        acc[i][j][3] = fmaf(d[3] * fa[i][1], fb[j][1], acc[i][j][3]);
                    }
            }
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                int row, col;
                mxg_frag_c(lane, r, &row, &col);
                const size_t m = m0 + wm * 64 + i * 16 + row, n = n0 + wn * 32 + j * 8 + col;
                if (m < (size_t)p.M && n < (size_t)p.N)
                    store_out(p, (int)m, (int)n, acc[i][j][r]);
            }
    __syncthreads(); /* the next tile's loads overwrite the stages */
    }
}

static int log2i(int x)
{
    int l = 0;
    while ((1 << l) < x)
        l++;
    return l;
}

template <int KA, int KB, int STEP>
static void launch(cuda_t *c, const mxg_gargs_t &p)
{
    const size_t smem = (size_t)MXG_STAGES * (2 * MXG_BM * MXG_LDS + MXG_BM * (p.na + p.nb) * 4);
    if (!cu_check(c, cudaFuncSetAttribute(k_mxg_gemm<KA, KB, STEP>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                  "k_mxg_gemm shared memory"))
        return;
    const int grid = p.ga && p.tiles > c->prop.multiProcessorCount ? c->prop.multiProcessorCount : p.tiles;
    k_mxg_gemm<KA, KB, STEP><<<grid, MXG_THREADS, smem, c->st>>>(p);
    cu_launched(c, "k_mxg_gemm");
}

template <int STEP>
static void launch_kinds(cuda_t *c, int ka, int kb, const mxg_gargs_t &p)
{
    if (ka == MXG_S8)
        launch<MXG_S8, MXG_S8, STEP>(c, p);
    else if (ka == MXG_E4M3 && kb == MXG_E4M3)
        launch<MXG_E4M3, MXG_E4M3, STEP>(c, p);
    else if (ka == MXG_E4M3)
        launch<MXG_E4M3, MXG_E5M2, STEP>(c, p);
    else if (kb == MXG_E4M3)
        launch<MXG_E5M2, MXG_E4M3, STEP>(c, p);
    else
        launch<MXG_E5M2, MXG_E5M2, STEP>(c, p);
}

/* C (M, N) (+)= round(A . B^T + bias) with the per-block kernel, A and B sharing their
 * reduction; guarded (A, B folded): only where a fold was not exact, then always adding. */
static void block_gemm(cuda_t *c, const mxg_op_t *A, const mxg_op_t *B, float *C, long ldc,
                       const float *bias, bool acc, prec_compute_t ct, bool guarded)
{
    mxg_gargs_t p;
    p.a = A->codes, p.b = B->codes, p.sa = A->scales, p.sb = B->scales;
    p.c = C, p.bias = bias;
    p.M = (int)A->rows, p.N = (int)B->rows, p.Kp = (int)A->Kp;
    p.na = MXG_BK / A->g, p.nb = MXG_BK / B->g;
    const int step = A->g < B->g ? A->g : B->g;
    p.sha = log2i(A->g / step), p.shb = log2i(B->g / step);
    p.ldc = ldc;
    p.acc = acc, p.rc = ct == PREC_COMPUTE_BF16;
    p.tm = (int)(A->rowsP / MXG_BM);
    p.tiles = p.tm * (int)(B->rowsP / MXG_BM);
    p.ga = guarded ? A->flag : nullptr, p.gb = guarded ? B->flag : nullptr;
    p.ran = guarded ? &c->mxgs->dev->ran : nullptr;
    if (step == 32)
        launch_kinds<32>(c, A->kind, B->kind, p);
    else if (step == 16)
        launch_kinds<16>(c, A->kind, B->kind, p);
    else
        launch_kinds<8>(c, A->kind, B->kind, p);
}

/* ---- the folded GEMM through cuBLASLt ---------------------------------------------------- */

static void plan_free(fold_plan_t *p)
{
    for (int i = 0; i < 3; i++) {
        if (p->l[i])
            cublasLtMatrixLayoutDestroy(p->l[i]);
        p->l[i] = nullptr;
    }
    if (p->op)
        cublasLtMatmulDescDestroy(p->op);
    p->op = nullptr;
}

void cu_mxg_close(cuda_t *c)
{
    mxg_state_t *st = c->mxgs;
    if (!st)
        return;
    for (int i = 0; i < st->nplans; i++)
        plan_free(&st->plans[i]);
    free(st->plans);
    if (st->dev)
        cu_free(c, st->dev, sizeof *st->dev);
    free(st);
    c->mxgs = nullptr;
}

static mxg_state_t *state(cuda_t *c)
{
    if (c->mxgs)
        return c->mxgs;
    mxg_state_t *st = (mxg_state_t *)calloc(1, sizeof *st);
    if (!st) {
        cu_fail(c, ERR_NOMEM, "cuda backend: out of memory for the MX GEMM state");
        return nullptr;
    }
    st->dev = (mxg_dev_t *)cu_malloc(c, sizeof *st->dev, "MX GEMM device words");
    const mxg_dev_t init = {0ull};
    if (!st->dev || !cu_check(c, cudaMemcpy(st->dev, &init, sizeof init, cudaMemcpyHostToDevice),
                              "MX GEMM device words")) {
        if (st->dev)
            cu_free(c, st->dev, sizeof *st->dev);
        free(st);
        return nullptr;
    }
    return c->mxgs = st;
}

static int align_c(const void *p)
{
    const uintptr_t a = (uintptr_t)p;
    return a & 255 ? (int)(a & (~a + 1)) : 256; /* the lowest set bit, at most 256 */
}

static bool st_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }

/* The plan of an M x N x Kp folded GEMM into C (row stride ldc), built on first use. */
static fold_plan_t *fold_plan(cuda_t *c, int M, int N, int Kp, long ldc, int al_c)
{
    mxg_state_t *st = state(c);
    if (!st)
        return nullptr;
    for (int i = 0; i < st->nplans; i++) {
        fold_plan_t *p = &st->plans[i];
        if (p->m == N && p->n == M && p->k == Kp && p->ldc == ldc && p->al_c == al_c)
            return p;
    }
    if (st->nplans == st->cap) {
        const int cap = st->cap ? 2 * st->cap : 32;
        fold_plan_t *np = (fold_plan_t *)realloc(st->plans, (size_t)cap * sizeof *np);
        if (!np) {
            cu_fail(c, ERR_NOMEM, "cuda backend: out of memory for MX GEMM plans");
            return nullptr;
        }
        st->plans = np, st->cap = cap;
    }
    fold_plan_t p;
    memset(&p, 0, sizeof p);
    p.m = N, p.n = M, p.k = Kp, p.ldc = ldc, p.al_c = al_c;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    const void *dummy = st->dev; /* scale pointers are set per call */
    const uint64_t ws = c->ws_size;
    const uint32_t a16 = 16, ac = (uint32_t)al_c;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulHeuristicResult_t res;
    int nres = 0;
    p.ok = st_ok(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F)) &&
           st_ok(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) &&
           st_ok(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)) &&
           st_ok(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec, sizeof vec)) &&
           st_ok(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec)) &&
           st_ok(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy)) &&
           st_ok(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy)) &&
           st_ok(cublasLtMatrixLayoutCreate(&p.l[0], CUDA_R_8F_E4M3, Kp, N, Kp)) &&
           st_ok(cublasLtMatrixLayoutCreate(&p.l[1], CUDA_R_8F_E4M3, Kp, M, Kp)) &&
           st_ok(cublasLtMatrixLayoutCreate(&p.l[2], CUDA_R_32F, N, M, ldc)) &&
           st_ok(cublasLtMatmulPreferenceCreate(&pref)) &&
           st_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws)) &&
           st_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a16, sizeof a16)) &&
           st_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a16, sizeof a16)) &&
           st_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof ac)) &&
           st_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof ac)) &&
           st_ok(cublasLtMatmulAlgoGetHeuristic(c->lt, p.op, p.l[0], p.l[1], p.l[2], p.l[2], pref, 1, &res, &nres)) &&
           nres > 0;
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (p.ok)
        p.algo = res.algo;
    else
        plan_free(&p); /* remembered as unavailable: shapes cuBLASLt's FP8 kernels refuse */
    st->plans[st->nplans] = p;
    return &st->plans[st->nplans++];
}

/* can this GEMM (A: M rows, B: N rows, reduction Kp, into C with row stride ldc) run folded? */
static bool fold_available(cuda_t *c, int M, int N, int Kp, long ldc, const float *C)
{
    fold_plan_t *p = fold_plan(c, M, N, Kp, ldc, align_c(C));
    return p && p->ok;
}

/* C (M, N) += bias, unless a fold failed (then the per-block kernel adds it) */
__global__ void k_mxg_bias(float *C, long ldc, const float *bias, int M, int N, const int *fa,
                           const int *fb)
{
    if (*fa | *fb)
        return;
    const size_t n = (size_t)M * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        C[(i / (size_t)N) * (size_t)ldc + i % (size_t)N] += bias[i % (size_t)N];
}

/* C (M, N) (+)= A . B^T (+ bias) from the folded copies. Where a fold was not exact, its
 * operand's chunk scales are all 0 (k_mxg_fold_kill), so cuBLASLt leaves beta C, and the
 * guarded per-block kernel adds the product and the bias: the choice is made on the GPU,
 * without a host synchronisation. */
static void fold_gemm(cuda_t *c, const mxg_op_t *A, const mxg_op_t *B, float *C, long ldc,
                      const float *bias, bool acc, prec_compute_t ct)
{
    mxg_state_t *st = state(c);
    fold_plan_t *p = st ? fold_plan(c, (int)A->rows, (int)B->rows, (int)A->Kp, ldc, align_c(C)) : nullptr;
    if (!p || !p->ok)
        return; /* fold_available said yes before the operands were built */
    const void *sa = B->fscales, *sb = A->fscales;
    if (!st_ok(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa)) ||
        !st_ok(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb))) {
        cu_fail(c, ERR_FAIL, "cuda backend: cuBLASLt scale pointers refused");
        return;
    }
    const float one = 1.0f, beta = acc ? 1.0f : 0.0f;
    const cublasStatus_t r = cublasLtMatmul(c->lt, p->op, &one, B->fcodes, p->l[0], A->fcodes, p->l[1],
                                            &beta, C, p->l[2], C, p->l[2], &p->algo, c->ws, c->ws_size,
                                            c->st);
    if (r != CUBLAS_STATUS_SUCCESS) {
        cu_fail(c, ERR_FAIL, "cuda backend: cuBLASLt FP8 block-scaled GEMM failed (status %d)", (int)r);
        return;
    }
    if (bias) {
        const size_t n = A->rows * B->rows;
        const unsigned grid = (unsigned)(n / 256 + 1 < 4096 ? n / 256 + 1 : 4096);
        k_mxg_bias<<<grid, 256, 0, c->st>>>(C, ldc, bias, (int)A->rows, (int)B->rows, A->flag, B->flag);
        cu_launched(c, "k_mxg_bias");
    }
    block_gemm(c, A, B, C, ldc, bias, true, ct, true);
    st->folded++;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

/* The mode a backend opens with: MXRLHF_CUDA_MXGEMM = auto, all, or 0 / off (the default:
 * on an H100 the emulation was faster and cheaper end to end than either native path, the
 * folded one included: a training step 399 ms / 168 J emulated against 588 ms / 235 J
 * folded, docs/benchmarks.md). */
static be_cuda_mxg_t mode_default(void)
{
    const char *v = getenv("MXRLHF_CUDA_MXGEMM");
    if (v && !strcmp(v, "auto"))
        return BE_CUDA_MXG_AUTO;
    if (v && !strcmp(v, "all"))
        return BE_CUDA_MXG_ALL;
    return BE_CUDA_MXG_OFF;
}

/* Can this pair of operand specs run on the tensor cores (the per-block kernel)? */
static bool pair_maps(const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct)
{
    const int ka = mxg_kind((int)a->format), kb = mxg_kind((int)b->format);
    return ct != PREC_COMPUTE_FP16 && ka != MXG_NONE && kb != MXG_NONE &&
           (ka == MXG_S8) == (kb == MXG_S8) && mxg_granule(a->block) && mxg_granule(b->block);
}

/* Does it fold: both FP6 / FP4 (E4M3 elements with room to shift; see mxg_fold_dmax)? */
static bool pair_folds(const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct)
{
    return pair_maps(a, b, ct) && mxg_fold_dmax((int)a->format) > 0 &&
           mxg_fold_dmax((int)b->format) > 0 && a->format != MX_FP8_E4M3 &&
           b->format != MX_FP8_E4M3;
}

/* Native under `mode`? auto: the pairs that fold (cuBLASLt's FP8 GEMM, or the per-block
 * kernel where a fold is not exact); all: every pair that maps. */
static bool mode_native(int mode, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct)
{
    return mode == BE_CUDA_MXG_ALL ? pair_maps(a, b, ct)
           : mode == BE_CUDA_MXG_AUTO ? pair_folds(a, b, ct)
                                      : false;
}

bool cu_mxg_native(cuda_t *c, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct)
{
    return mode_native(c->mxg_mode, a, b, ct);
}

enum { PATH_EMUL, PATH_BLOCK, PATH_FOLD };

/* The path of a GEMM C (M, N) (row stride ldc) with reduction `red`; counts it as native
 * or emulated when it has an MX operand. */
static int take(cuda_t *c, const mx_spec_t *a, const mx_spec_t *b, prec_compute_t ct, int M,
                int N, int red, long ldc, const float *C)
{
    if (red > 0 && mode_native(c->mxg_mode, a, b, ct)) {
        c->mxg_native++;
        const int Kp = (int)mxg_round_up((size_t)red, MXG_CHUNK);
        return pair_folds(a, b, ct) && fold_available(c, M, N, Kp, ldc, C) ? PATH_FOLD : PATH_BLOCK;
    }
    if (mx_format_info(a->format)->is_mx || mx_format_info(b->format)->is_mx)
        c->mxg_emulated++;
    return PATH_EMUL;
}

static void run(cuda_t *c, int path, const mxg_op_t *A, const mxg_op_t *B, float *C, long ldc,
                const float *bias, bool acc, prec_compute_t ct)
{
    if (path == PATH_FOLD)
        fold_gemm(c, A, B, C, ldc, bias, acc, ct);
    else
        block_gemm(c, A, B, C, ldc, bias, acc, ct, false);
}

void cu_mxg_prepare(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc)
{
    mxg_op_t B;
    const mx_spec_t *sx = &a->spec[PREC_OP_INPUT], *sw = &a->spec[PREC_OP_WEIGHT];
    if (wc && a->K > 0 && mode_native(c->mxg_mode, sx, sw, a->compute))
        weight_operand(c, a, wc, MX_AXIS_ROW, pair_folds(sx, sw, a->compute), &B);
}

bool cu_mxg_linear_fwd(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc, float *y, bool acc)
{
    const int path = take(c, &a->spec[PREC_OP_INPUT], &a->spec[PREC_OP_WEIGHT], a->compute, a->M,
                          a->N, a->K, a->N, y);
    if (path == PATH_EMUL)
        return false;
    const bool fold = path == PATH_FOLD;
    mxg_op_t A, B;
    if (act_operand(c, CS_MXA, fptr(a->x), a->M, a->K, MX_AXIS_ROW, &a->spec[PREC_OP_INPUT],
                    a->compute, a->seed, a->stream + PREC_OP_INPUT, fold, &A) &&
        weight_operand(c, a, wc, MX_AXIS_ROW, fold, &B))
        run(c, path, &A, &B, y, a->N, be_null(a->b) ? nullptr : fptr(a->b), acc, a->compute);
    return true;
}

bool cu_mxg_linear_dx(cuda_t *c, const be_linear_t *a, mxg_cache_t **wc, const float *dy,
                      float *dx, bool dx_acc)
{
    const int path = take(c, &a->spec[PREC_OP_GRAD_OUTPUT_DX], &a->spec[PREC_OP_WEIGHT_BP],
                          a->compute, a->M, a->K, a->N, a->K, dx);
    if (path == PATH_EMUL)
        return false;
    const bool fold = path == PATH_FOLD;
    mxg_op_t A, B;
    if (act_operand(c, CS_MXA, dy, a->M, a->N, MX_AXIS_ROW, &a->spec[PREC_OP_GRAD_OUTPUT_DX],
                    a->compute, a->seed, a->stream + PREC_OP_GRAD_OUTPUT_DX, fold, &A) &&
        weight_operand(c, a, wc, MX_AXIS_COL, fold, &B))
        run(c, path, &A, &B, dx, a->K, nullptr, dx_acc, a->compute);
    return true;
}

bool cu_mxg_linear_dw(cuda_t *c, const be_linear_t *a, const float *dy, float *dw)
{
    const int path = take(c, &a->spec[PREC_OP_GRAD_OUTPUT_DW], &a->spec[PREC_OP_INPUT_BP],
                          a->compute, a->N, a->K, a->M, a->K, dw);
    if (path == PATH_EMUL)
        return false;
    const bool fold = path == PATH_FOLD;
    mxg_op_t A, B;
    if (act_operand(c, CS_MXA, dy, a->M, a->N, MX_AXIS_COL, &a->spec[PREC_OP_GRAD_OUTPUT_DW],
                    a->compute, a->seed, a->stream + PREC_OP_GRAD_OUTPUT_DW, fold, &A) &&
        act_operand(c, CS_MXB, fptr(a->x), a->M, a->K, MX_AXIS_COL, &a->spec[PREC_OP_INPUT_BP],
                    a->compute, a->seed, a->stream + PREC_OP_INPUT_BP, fold, &B))
        run(c, path, &A, &B, dw, a->K, nullptr, true, a->compute);
    return true;
}

void cu_mxg_init(cuda_t *c)
{
    c->mxg_mode = c->prop.major * 10 + c->prop.minor >= 89 ? mode_default() : BE_CUDA_MXG_OFF;
}

/* ---- the public switch (backend/cuda.h) ----------------------------------------------------- */

extern "C" bool be_cuda_mxgemm_native(const mx_spec_t *a, const mx_spec_t *b,
                                      prec_compute_t compute)
{
    return mode_native(mode_default(), a, b, compute);
}

extern "C" int be_cuda_set_mxgemm_mode(backend_t *be, be_cuda_mxg_t mode, err_t *e)
{
    cuda_t *c = cu_backend(be, e);
    if (!c)
        return e->code;
    if (mode != BE_CUDA_MXG_OFF && c->prop.major * 10 + c->prop.minor < 89)
        return err_set(e, ERR_UNAVAILABLE, "MX GEMMs on the tensor cores need FP8 tensor cores "
                       "(compute capability 8.9 or later); %s has %d.%d", c->prop.name,
                       c->prop.major, c->prop.minor);
    c->mxg_mode = mode;
    return ERR_OK;
}

extern "C" int be_cuda_set_mxgemm(backend_t *be, bool on, err_t *e)
{
    return be_cuda_set_mxgemm_mode(be, on ? BE_CUDA_MXG_AUTO : BE_CUDA_MXG_OFF, e);
}

extern "C" int be_cuda_mxgemm_stats(backend_t *be, be_cuda_mxgemm_stats_t *out, err_t *e)
{
    cuda_t *c = cu_backend(be, e);
    if (!c)
        return e->code;
    out->native = c->mxg_native;
    out->emulated = c->mxg_emulated;
    out->folded = c->mxgs ? c->mxgs->folded : 0;
    out->fold_fallbacks = 0;
    if (c->mxgs) { /* the device's count of guarded per-block runs: synchronises */
        unsigned long long ran = 0;
        if (!cu_check(c, cudaMemcpyAsync(&ran, &c->mxgs->dev->ran, sizeof ran, cudaMemcpyDeviceToHost, c->st),
                      "MX GEMM counters") ||
            !cu_check(c, cudaStreamSynchronize(c->st), "MX GEMM counters"))
            return err_set(e, ERR_FAIL, "%s", c->err_msg);
        out->fold_fallbacks = (long)ran;
    }
    return ERR_OK;
}
