/* cuda_attn: causal grouped-query attention with padding, forward and backward.
 *
 * Two implementations of backend.h's be_attn_t contract:
 *
 * exact  float32 on the CUDA cores. Forward: a block of 8 warps per query row, each warp
 *        a contiguous eighth of the visible keys (four keys in flight at a time) with an
 *        online softmax, lanes over head_dim; the eighths are merged in order. Backward: D_i = dO_i . O_i, then
 *        one warp per query row for dQ and one warp per key row for dK and dV (looping
 *        over the group's query heads and the queries that see the key), recomputing
 *        the probabilities from the saved log-sum-exp. Any head_dim up to 256.
 *
 * tiles  tensor cores (wmma m16n16k8 TF32, float32 accumulation; softmax, masks and the
 *        running statistics in float32), flash-attention style: 64 queries x 64 keys
 *        per tile, 4 warps of 16 rows; the probabilities never reach device memory.
 *        Two precisions: 3xTF32 (the default: each float32 operand split into a TF32
 *        high part and a TF32 remainder, products hi.hi + hi.lo + lo.hi, which leaves
 *        errors near float32 rounding) and plain TF32 (one product, ~1e-3 relative, for
 *        speed). Backward in two passes without atomics (dK/dV per key tile, looping
 *        over the group's heads and the query tiles; dQ per query tile), so results are
 *        the same bits run to run. Used for >= 16 queries with head_dim 16, 32, 64 or
 *        128 and 16-byte aligned rows; decoding (one query) uses exact.
 *
 * Under bf16 / fp16 compute (be_attn_t.compute, mode FAST) the tiles take 16-bit
 * operands instead, as autocast's attention does (below); where cuDNN is loaded and the
 * shape is training's or prefill's, cuda_cudnn.cu's fused attention serves instead.
 * Both see the same keys: query (b, i) attends to keys pad_left[b] <= j <= q0 + i
 * (j < Tk); a query with no visible key outputs zeros and lse = -inf.
 */
#include <math.h>
#include <mma.h>

#include "backend/cuda_internal.cuh"

using namespace nvcuda;

typedef struct attn_args {
    const float *q, *k, *v, *out, *lse, *dout, *dl;
    const void *q16, *k16, *v16, *do16; /* 16-bit tiles' inputs: q, dO (B, Tq, H*D); k, v
                                           (B, Tk, Hkv*D), dense */
    float *o_out, *lse_out, *dq, *dk, *dv;
    const int32_t *padl;
    long qrow, kv_sb, kv_st, kv_sh;
    int B, Tq, Tk, Tke, H, Hkv, D, q0, grp;
    float scale;
} attn_args_t;

__device__ __forceinline__ int vis_lo(const attn_args_t &a, int b)
{
    int p = a.padl[b];
    return p > 0 ? p : 0;
}
__device__ __forceinline__ int vis_hi(const attn_args_t &a, int i)
{
    int h = a.q0 + i;
    return h < a.Tk - 1 ? h : a.Tk - 1;
}

/* ================================ exact float32 ====================================== */

#define EX_WARPS 8
#define EX_MAXT 8 /* head_dim <= 32 * EX_MAXT */

__global__ void __launch_bounds__(32 * EX_WARPS) k_attn_fwd_exact(attn_args_t a)
{
    __shared__ float sm[EX_WARPS], sl[EX_WARPS], sacc[EX_WARPS][32 * EX_MAXT];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const size_t row = blockIdx.x; /* (b, hh, i) */
    const int i = (int)(row % a.Tq), hh = (int)((row / a.Tq) % a.H), b = (int)(row / ((size_t)a.Tq * a.H));
    const int g = hh / a.grp, D = a.D;
    const float *Q = a.q + ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D;
    const float *K = a.k + b * a.kv_sb + g * a.kv_sh, *V = a.v + b * a.kv_sb + g * a.kv_sh;
    float *O = a.o_out + ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D;
    const int lo = vis_lo(a, b), hi = vis_hi(a, i);
    const int nt = (D + 31) / 32;
    if (lo > hi) {
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            O[d] = 0.0f;
        if (a.lse_out && threadIdx.x == 0)
            a.lse_out[((size_t)b * a.H + hh) * a.Tq + i] = -INFINITY;
        return;
    }
    float qv[EX_MAXT], acc[EX_MAXT];
#pragma unroll
    for (int t = 0; t < EX_MAXT; t++) {
        int d = lane + 32 * t;
        qv[t] = (t < nt && d < D) ? Q[d] : 0.0f;
        acc[t] = 0.0f;
    }
    /* this warp's keys: a contiguous eighth of [lo, hi] */
    const int nk = hi - lo + 1, per = (nk + EX_WARPS - 1) / EX_WARPS;
    const int j0 = lo + w * per, j1 = j0 + per - 1 < hi ? j0 + per - 1 : hi;
    float m = -INFINITY, l = 0.0f;
    for (int j = j0; j <= j1; j += 4) { /* four keys' loads and sums in flight at once */
        float s4[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const float *kr = K + (size_t)(j + u) * a.kv_st;
            float sp = 0.0f;
#pragma unroll
            for (int t = 0; t < EX_MAXT; t++) {
                int d = lane + 32 * t;
                if (j + u <= j1 && t < nt && d < D)
                    sp += qv[t] * kr[d];
            }
            s4[u] = sp;
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
            s4[u] = warp_sum(s4[u]) * a.scale;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (j + u > j1)
                break;
            const float *vr = V + (size_t)(j + u) * a.kv_st;
            float mn = s4[u] > m ? s4[u] : m;
            float al = expf(m - mn), p = expf(s4[u] - mn);
            l = l * al + p;
#pragma unroll
            for (int t = 0; t < EX_MAXT; t++) {
                int d = lane + 32 * t;
                if (t < nt && d < D)
                    acc[t] = acc[t] * al + p * vr[d];
            }
            m = mn;
        }
    }
    if (lane == 0) {
        sm[w] = m;
        sl[w] = l;
    }
#pragma unroll
    for (int t = 0; t < EX_MAXT; t++)
        if (t < nt)
            sacc[w][lane + 32 * t] = acc[t];
    __syncthreads();
    if (w == 0) {
        float M = -INFINITY;
        for (int u = 0; u < EX_WARPS; u++)
            M = sm[u] > M ? sm[u] : M;
        float L = 0.0f;
        float o[EX_MAXT];
#pragma unroll
        for (int t = 0; t < EX_MAXT; t++)
            o[t] = 0.0f;
        for (int u = 0; u < EX_WARPS; u++) {
            if (sl[u] == 0.0f)
                continue; /* an empty quarter (m = -inf) */
            float f = expf(sm[u] - M);
            L += sl[u] * f;
#pragma unroll
            for (int t = 0; t < EX_MAXT; t++)
                if (t < nt)
                    o[t] += sacc[u][lane + 32 * t] * f;
        }
        float inv = 1.0f / L;
#pragma unroll
        for (int t = 0; t < EX_MAXT; t++) {
            int d = lane + 32 * t;
            if (t < nt && d < D)
                O[d] = o[t] * inv;
        }
        if (a.lse_out && lane == 0)
            a.lse_out[((size_t)b * a.H + hh) * a.Tq + i] = M + logf(L);
    }
}

/* D_i = dO_i . O_i, one warp per query row; layout of lse */
__global__ void k_attn_di(attn_args_t a, float *di)
{
    const int lane = threadIdx.x & 31;
    const size_t row = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (size_t)a.B * a.H * a.Tq)
        return;
    const int i = (int)(row % a.Tq), hh = (int)((row / a.Tq) % a.H), b = (int)(row / ((size_t)a.Tq * a.H));
    const size_t base = ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * a.D;
    double s = 0;
    for (int d = lane; d < a.D; d += 32)
        s += (double)a.dout[base + d] * a.out[base + d];
    s = warp_sum(s);
    if (lane == 0)
        di[((size_t)b * a.H + hh) * a.Tq + i] = (float)s;
}

/* dQ, one warp per query row */
__global__ void k_attn_dq_exact(attn_args_t a, const float *di)
{
    const int lane = threadIdx.x & 31;
    const size_t row = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (size_t)a.B * a.H * a.Tq)
        return;
    const int i = (int)(row % a.Tq), hh = (int)((row / a.Tq) % a.H), b = (int)(row / ((size_t)a.Tq * a.H));
    const int g = hh / a.grp, D = a.D, nt = (D + 31) / 32;
    const size_t base = ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D;
    const float *K = a.k + b * a.kv_sb + g * a.kv_sh, *V = a.v + b * a.kv_sb + g * a.kv_sh;
    const size_t li = ((size_t)b * a.H + hh) * a.Tq + i;
    const float L = a.lse[li], Di = di[li];
    float qv[EX_MAXT], ov[EX_MAXT], acc[EX_MAXT];
#pragma unroll
    for (int t = 0; t < EX_MAXT; t++) {
        int d = lane + 32 * t;
        bool ok = t < nt && d < D;
        qv[t] = ok ? a.q[base + d] : 0.0f;
        ov[t] = ok ? a.dout[base + d] : 0.0f;
        acc[t] = 0.0f;
    }
    const int lo = vis_lo(a, b), hi = vis_hi(a, i);
    for (int j = lo; j <= hi; j++) {
        const float *kr = K + (size_t)j * a.kv_st, *vr = V + (size_t)j * a.kv_st;
        float s = 0.0f, dp = 0.0f;
#pragma unroll
        for (int t = 0; t < EX_MAXT; t++) {
            int d = lane + 32 * t;
            if (t < nt && d < D) {
                s += qv[t] * kr[d];
                dp += ov[t] * vr[d];
            }
        }
        s = warp_sum(s) * a.scale;
        dp = warp_sum(dp);
        float p = expf(s - L);
        float ds = p * (dp - Di);
#pragma unroll
        for (int t = 0; t < EX_MAXT; t++) {
            int d = lane + 32 * t;
            if (t < nt && d < D)
                acc[t] += ds * kr[d];
        }
    }
#pragma unroll
    for (int t = 0; t < EX_MAXT; t++) {
        int d = lane + 32 * t;
        if (t < nt && d < D)
            a.dq[base + d] = acc[t] * a.scale;
    }
}

/* dK, dV, one warp per key row j < Tk of each (b, KV head) */
__global__ void k_attn_dkv_exact(attn_args_t a, const float *di)
{
    const int lane = threadIdx.x & 31;
    const size_t row = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= (size_t)a.B * a.Hkv * a.Tk)
        return;
    const int j = (int)(row % a.Tk), g = (int)((row / a.Tk) % a.Hkv), b = (int)(row / ((size_t)a.Tk * a.Hkv));
    const int D = a.D, nt = (D + 31) / 32;
    const size_t kbase = b * a.kv_sb + (size_t)j * a.kv_st + g * a.kv_sh;
    float kv[EX_MAXT], vv[EX_MAXT], dk[EX_MAXT], dv[EX_MAXT];
#pragma unroll
    for (int t = 0; t < EX_MAXT; t++) {
        int d = lane + 32 * t;
        bool ok = t < nt && d < D;
        kv[t] = ok ? a.k[kbase + d] : 0.0f;
        vv[t] = ok ? a.v[kbase + d] : 0.0f;
        dk[t] = dv[t] = 0.0f;
    }
    const int lo = vis_lo(a, b);
    if (j >= lo && j < a.Tke) {
        const int i0 = j - a.q0 > 0 ? j - a.q0 : 0;
        for (int hh = g * a.grp; hh < (g + 1) * a.grp; hh++) {
            for (int i = i0; i < a.Tq; i++) {
                const size_t base = ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D;
                const size_t li = ((size_t)b * a.H + hh) * a.Tq + i;
                float s = 0.0f, dp = 0.0f;
#pragma unroll
                for (int t = 0; t < EX_MAXT; t++) {
                    int d = lane + 32 * t;
                    if (t < nt && d < D) {
                        s += a.q[base + d] * kv[t];
                        dp += a.dout[base + d] * vv[t];
                    }
                }
                s = warp_sum(s) * a.scale;
                dp = warp_sum(dp);
                float p = expf(s - a.lse[li]);
                float ds = p * (dp - di[li]);
#pragma unroll
                for (int t = 0; t < EX_MAXT; t++) {
                    int d = lane + 32 * t;
                    if (t < nt && d < D) {
                        dv[t] += p * a.dout[base + d];
                        dk[t] += ds * a.q[base + d];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < EX_MAXT; t++) {
        int d = lane + 32 * t;
        if (t < nt && d < D) {
            a.dk[kbase + d] = dk[t] * a.scale;
            a.dv[kbase + d] = dv[t];
        }
    }
}

/* ================================ tensor-core tiles ================================== */

#define TB 64          /* queries and keys per tile */
#define TLS (TB + 4)   /* row stride of score tiles (floats) */

typedef wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa_row_t;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb_col_t;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb_row_t;
typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> facc_t;

/* acc += a . b with TF32 operands: P = 1 one product; P = 3 the split products
 * (a_lo b_hi + a_hi b_lo + a_hi b_hi, small terms first) */
template <int P, typename FA, typename FB>
__device__ __forceinline__ void mma_p(facc_t &acc, FA &fa, FB &fb)
{
    if (P == 1) {
#pragma unroll
        for (int t = 0; t < fa.num_elements; t++)
            fa.x[t] = wmma::__float_to_tf32(fa.x[t]);
#pragma unroll
        for (int t = 0; t < fb.num_elements; t++)
            fb.x[t] = wmma::__float_to_tf32(fb.x[t]);
        wmma::mma_sync(acc, fa, fb, acc);
    } else {
        FA la;
        FB lb;
#pragma unroll
        for (int t = 0; t < fa.num_elements; t++) {
            float h = wmma::__float_to_tf32(fa.x[t]);
            la.x[t] = wmma::__float_to_tf32(fa.x[t] - h);
            fa.x[t] = h;
        }
#pragma unroll
        for (int t = 0; t < fb.num_elements; t++) {
            float h = wmma::__float_to_tf32(fb.x[t]);
            lb.x[t] = wmma::__float_to_tf32(fb.x[t] - h);
            fb.x[t] = h;
        }
        wmma::mma_sync(acc, la, fb, acc);
        wmma::mma_sync(acc, fa, lb, acc);
        wmma::mma_sync(acc, fa, fb, acc);
    }
}

/* C (16 x 64) = A (16 x D, row-major, lda) . B^T where B is (64 x D) row-major (ldb):
 * four 16x16 accumulators stored row-major to C (ldc). */
template <int D, int P>
__device__ __forceinline__ void mm_abt_16x64(float *C, int ldc, const float *A, int lda,
                                             const float *B, int ldb)
{
#pragma unroll
    for (int nb = 0; nb < 4; nb++) {
        facc_t acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < D; kk += 8) {
            fa_row_t fa;
            fb_col_t fb;
            wmma::load_matrix_sync(fa, A + kk, lda);
            wmma::load_matrix_sync(fb, B + (size_t)nb * 16 * ldb + kk, ldb);
            mma_p<P>(acc, fa, fb);
        }
        wmma::store_matrix_sync(C + nb * 16, acc, ldc, wmma::mem_row_major);
    }
}

/* acc[D/16] (16 x D) += A (16 x 64, row-major, lda) . B (64 x D, row-major, ldb) */
template <int D, int P>
__device__ __forceinline__ void mm_ab_16x64(facc_t *acc, const float *A, int lda, const float *B,
                                            int ldb)
{
#pragma unroll
    for (int kk = 0; kk < TB; kk += 8) {
#pragma unroll
        for (int nb = 0; nb < D / 16; nb++) {
            fa_row_t fa;
            fb_row_t fb;
            wmma::load_matrix_sync(fa, A + kk, lda);
            wmma::load_matrix_sync(fb, B + (size_t)kk * ldb + nb * 16, ldb);
            mma_p<P>(acc[nb], fa, fb);
        }
    }
}

/* rows [r0, r0 + 64) of a strided matrix (row j at base + j * rs, D contiguous floats)
 * into smem (ld D + 4); rows outside [0, nrows) read as zeros. 16-byte vectors. */
template <int D>
__device__ __forceinline__ void load_tile(float *s, const float *base, long rs, int r0, int nrows)
{
    constexpr int LD = D + 4, V4 = D / 4;
    for (int t = threadIdx.x; t < TB * V4; t += blockDim.x) {
        int r = t / V4, c4 = t % V4, j = r0 + r;
        float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
        if (j >= 0 && j < nrows)
            v = *(const float4 *)(base + (size_t)j * rs + 4 * c4);
        float *d = s + r * LD + 4 * c4;
        d[0] = v.x, d[1] = v.y, d[2] = v.z, d[3] = v.w;
    }
}

template <int D> struct tile_smem {
    static constexpr int LD = D + 4;
    static constexpr size_t fwd_floats = 4 * (size_t)TB * LD + (size_t)TB * TLS + 3 * TB;
    static constexpr size_t bwd_floats = 4 * (size_t)TB * LD + 2 * (size_t)TB * TLS + 2 * TB;
};

template <int D, int P> __global__ void __launch_bounds__(128) k_attn_fwd_tc(attn_args_t a)
{
    constexpr int LD = D + 4;
    extern __shared__ __align__(128) float sm[];
    float *Qs = sm, *Ks = Qs + TB * LD, *Vs = Ks + TB * LD, *Os = Vs + TB * LD, *Ss = Os + TB * LD;
    float *mrow = Ss + TB * TLS, *lrow = mrow + TB, *arow = lrow + TB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt0 = blockIdx.x * TB, hh = blockIdx.y, b = blockIdx.z, g = hh / a.grp;
    const float *Qg = a.q + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
    const float *Kg = a.k + b * a.kv_sb + g * a.kv_sh, *Vg = a.v + b * a.kv_sb + g * a.kv_sh;
    load_tile<D>(Qs, Qg, a.qrow, qt0, a.Tq);
    for (int t = threadIdx.x; t < TB * LD; t += blockDim.x)
        Os[t] = 0.0f;
    for (int t = threadIdx.x; t < TB; t += blockDim.x) {
        mrow[t] = -INFINITY;
        lrow[t] = 0.0f;
    }
    const int lo = vis_lo(a, b);
    const int ilast = qt0 + TB - 1 < a.Tq - 1 ? qt0 + TB - 1 : a.Tq - 1;
    const int hmax = vis_hi(a, ilast);
    float *Sw = Ss + 16 * w * TLS, *Ow = Os + 16 * w * LD;
    for (int kt0 = lo / TB * TB; kt0 <= hmax; kt0 += TB) {
        __syncthreads();
        load_tile<D>(Ks, Kg, a.kv_st, kt0, a.Tk);
        load_tile<D>(Vs, Vg, a.kv_st, kt0, a.Tk);
        __syncthreads();
        mm_abt_16x64<D, P>(Sw, TLS, Qs + 16 * w * LD, LD, Ks, LD);
        __syncwarp();
        for (int r = 0; r < 16; r++) {
            const int rr = 16 * w + r, i = qt0 + rr;
            const int hi = vis_hi(a, i);
            float s[2];
            float mx = -INFINITY;
#pragma unroll
            for (int u = 0; u < 2; u++) {
                int j = kt0 + lane + 32 * u;
                bool vis = i < a.Tq && j >= lo && j <= hi;
                s[u] = vis ? Sw[r * TLS + lane + 32 * u] * a.scale : -INFINITY;
                mx = s[u] > mx ? s[u] : mx;
            }
            mx = warp_max(mx);
            const float mold = mrow[rr];
            const float mn = mx > mold ? mx : mold;
            float al, p0, p1;
            if (mn == -INFINITY) {
                al = 1.0f, p0 = 0.0f, p1 = 0.0f;
            } else {
                al = expf(mold - mn);
                p0 = s[0] == -INFINITY ? 0.0f : expf(s[0] - mn);
                p1 = s[1] == -INFINITY ? 0.0f : expf(s[1] - mn);
            }
            float ps = warp_sum(p0 + p1);
            Sw[r * TLS + lane] = p0;
            Sw[r * TLS + lane + 32] = p1;
            __syncwarp();
            if (lane == 0) {
                mrow[rr] = mn;
                lrow[rr] = lrow[rr] * al + ps;
                arow[rr] = al;
            }
            __syncwarp();
        }
        for (int t = lane; t < 16 * D; t += 32) {
            int r = t / D, d = t % D;
            Ow[r * LD + d] *= arow[16 * w + r];
        }
        __syncwarp();
        facc_t acc[D / 16];
#pragma unroll
        for (int nb = 0; nb < D / 16; nb++)
            wmma::load_matrix_sync(acc[nb], Ow + nb * 16, LD, wmma::mem_row_major);
        mm_ab_16x64<D, P>(acc, Sw, TLS, Vs, LD);
#pragma unroll
        for (int nb = 0; nb < D / 16; nb++)
            wmma::store_matrix_sync(Ow + nb * 16, acc[nb], LD, wmma::mem_row_major);
        __syncwarp();
    }
    __syncthreads(); /* the initial zeros and -inf came from any thread */
    for (int r = 0; r < 16; r++) {
        const int rr = 16 * w + r, i = qt0 + rr;
        if (i >= a.Tq)
            break;
        const float l = lrow[rr];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        float *O = a.o_out + ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D;
        for (int d = lane; d < D; d += 32)
            O[d] = Ow[r * LD + d] * inv;
        if (a.lse_out && lane == 0)
            a.lse_out[((size_t)b * a.H + hh) * a.Tq + i] = l > 0.0f ? mrow[rr] + logf(l) : -INFINITY;
    }
}

/* dK, dV for 64 keys of one (b, KV head): loops over the group's heads and query tiles */
template <int D, int P> __global__ void __launch_bounds__(128) k_attn_dkv_tc(attn_args_t a, const float *di)
{
    constexpr int LD = D + 4;
    extern __shared__ __align__(128) float sm[];
    float *Ks = sm, *Vs = Ks + TB * LD, *Qs = Vs + TB * LD, *dOs = Qs + TB * LD;
    float *Ps = dOs + TB * LD, *dSs = Ps + TB * TLS, *Lr = dSs + TB * TLS, *Dr = Lr + TB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kt0 = blockIdx.x * TB, g = blockIdx.y, b = blockIdx.z;
    const float *Kg = a.k + b * a.kv_sb + g * a.kv_sh, *Vg = a.v + b * a.kv_sb + g * a.kv_sh;
    load_tile<D>(Ks, Kg, a.kv_st, kt0, a.Tk);
    load_tile<D>(Vs, Vg, a.kv_st, kt0, a.Tk);
    facc_t dk[D / 16], dv[D / 16];
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++) {
        wmma::fill_fragment(dk[nb], 0.0f);
        wmma::fill_fragment(dv[nb], 0.0f);
    }
    const int lo = vis_lo(a, b);
    const int klast = kt0 + TB - 1 < a.Tke - 1 ? kt0 + TB - 1 : a.Tke - 1;
    const bool any = klast >= lo && kt0 < a.Tke;
    /* the first query that can see key kt0 or later */
    int i0 = kt0 - a.q0;
    i0 = i0 < 0 ? 0 : i0 / TB * TB;
    float *Pw = Ps + 16 * w * TLS, *dSw = dSs + 16 * w * TLS;
    for (int hh = g * a.grp; any && hh < (g + 1) * a.grp; hh++) {
        const float *Qg = a.q + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
        const float *dOg = a.dout + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
        const size_t lbase = ((size_t)b * a.H + hh) * a.Tq;
        for (int qt0 = i0; qt0 < a.Tq; qt0 += TB) {
            __syncthreads();
            load_tile<D>(Qs, Qg, a.qrow, qt0, a.Tq);
            load_tile<D>(dOs, dOg, a.qrow, qt0, a.Tq);
            for (int t = threadIdx.x; t < TB; t += blockDim.x) {
                int i = qt0 + t;
                Lr[t] = i < a.Tq ? a.lse[lbase + i] : 0.0f;
                Dr[t] = i < a.Tq ? di[lbase + i] : 0.0f;
            }
            __syncthreads();
            /* S^T (16 keys x 64 queries) and dP^T = V dO^T */
            mm_abt_16x64<D, P>(Pw, TLS, Ks + 16 * w * LD, LD, Qs, LD);
            mm_abt_16x64<D, P>(dSw, TLS, Vs + 16 * w * LD, LD, dOs, LD);
            __syncwarp();
            for (int r = 0; r < 16; r++) {
                const int j = kt0 + 16 * w + r;
#pragma unroll
                for (int u = 0; u < 2; u++) {
                    const int cq = lane + 32 * u, i = qt0 + cq;
                    const bool vis = i < a.Tq && j >= lo && j <= vis_hi(a, i);
                    float p = vis ? expf(Pw[r * TLS + cq] * a.scale - Lr[cq]) : 0.0f;
                    float ds = p * (dSw[r * TLS + cq] - Dr[cq]);
                    Pw[r * TLS + cq] = p;
                    dSw[r * TLS + cq] = ds;
                }
            }
            __syncwarp();
            mm_ab_16x64<D, P>(dv, Pw, TLS, dOs, LD);
            mm_ab_16x64<D, P>(dk, dSw, TLS, Qs, LD);
        }
    }
    /* out through smem: rows j < Tk (zeros where nothing was visible) */
    __syncthreads();
    float *dKs = Qs, *dVs = dOs;
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++) {
        wmma::store_matrix_sync(dKs + 16 * w * LD + nb * 16, dk[nb], LD, wmma::mem_row_major);
        wmma::store_matrix_sync(dVs + 16 * w * LD + nb * 16, dv[nb], LD, wmma::mem_row_major);
    }
    __syncthreads();
    for (int t = threadIdx.x; t < TB * D; t += blockDim.x) {
        int r = t / D, d = t % D, j = kt0 + r;
        if (j < a.Tk) {
            size_t o = b * a.kv_sb + (size_t)j * a.kv_st + g * a.kv_sh + d;
            a.dk[o] = dKs[r * LD + d] * a.scale;
            a.dv[o] = dVs[r * LD + d];
        }
    }
}

/* dQ for 64 queries of one (b, head) */
template <int D, int P> __global__ void __launch_bounds__(128) k_attn_dq_tc(attn_args_t a, const float *di)
{
    constexpr int LD = D + 4;
    extern __shared__ __align__(128) float sm[];
    float *Qs = sm, *dOs = Qs + TB * LD, *Ks = dOs + TB * LD, *Vs = Ks + TB * LD;
    float *Ss = Vs + TB * LD, *dPs = Ss + TB * TLS, *Lr = dPs + TB * TLS, *Dr = Lr + TB;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt0 = blockIdx.x * TB, hh = blockIdx.y, b = blockIdx.z, g = hh / a.grp;
    const float *Qg = a.q + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
    const float *dOg = a.dout + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
    const float *Kg = a.k + b * a.kv_sb + g * a.kv_sh, *Vg = a.v + b * a.kv_sb + g * a.kv_sh;
    const size_t lbase = ((size_t)b * a.H + hh) * a.Tq;
    load_tile<D>(Qs, Qg, a.qrow, qt0, a.Tq);
    load_tile<D>(dOs, dOg, a.qrow, qt0, a.Tq);
    for (int t = threadIdx.x; t < TB; t += blockDim.x) {
        int i = qt0 + t;
        Lr[t] = i < a.Tq ? a.lse[lbase + i] : 0.0f;
        Dr[t] = i < a.Tq ? di[lbase + i] : 0.0f;
    }
    facc_t dq[D / 16];
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++)
        wmma::fill_fragment(dq[nb], 0.0f);
    const int lo = vis_lo(a, b);
    const int ilast = qt0 + TB - 1 < a.Tq - 1 ? qt0 + TB - 1 : a.Tq - 1;
    const int hmax = vis_hi(a, ilast);
    float *Sw = Ss + 16 * w * TLS, *dPw = dPs + 16 * w * TLS;
    for (int kt0 = lo / TB * TB; kt0 <= hmax; kt0 += TB) {
        __syncthreads();
        load_tile<D>(Ks, Kg, a.kv_st, kt0, a.Tk);
        load_tile<D>(Vs, Vg, a.kv_st, kt0, a.Tk);
        __syncthreads();
        mm_abt_16x64<D, P>(Sw, TLS, Qs + 16 * w * LD, LD, Ks, LD);
        mm_abt_16x64<D, P>(dPw, TLS, dOs + 16 * w * LD, LD, Vs, LD);
        __syncwarp();
        for (int r = 0; r < 16; r++) {
            const int rr = 16 * w + r, i = qt0 + rr;
            const int hi = vis_hi(a, i);
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int cc = lane + 32 * u, j = kt0 + cc;
                const bool vis = i < a.Tq && j >= lo && j <= hi;
                float p = vis ? expf(Sw[r * TLS + cc] * a.scale - Lr[rr]) : 0.0f;
                Sw[r * TLS + cc] = p * (dPw[r * TLS + cc] - Dr[rr]);
            }
        }
        __syncwarp();
        mm_ab_16x64<D, P>(dq, Sw, TLS, Ks, LD);
    }
    __syncthreads();
    float *dQs = Ks; /* reuse: every warp is past its last read of Ks */
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++)
        wmma::store_matrix_sync(dQs + 16 * w * LD + nb * 16, dq[nb], LD, wmma::mem_row_major);
    __syncthreads();
    for (int t = threadIdx.x; t < TB * D; t += blockDim.x) {
        int r = t / D, d = t % D, i = qt0 + r;
        if (i < a.Tq)
            a.dq[((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D + d] = dQs[r * LD + d] * a.scale;
    }
}

/* ============================ 16-bit tensor-core tiles ================================= */

/* Under bf16 / fp16 compute: Q, K, V, dO converted to T (bf16 or half, round to nearest)
 * once per call into dense copies the tiles then load with 16-byte vectors; P and dS
 * rounded to T for their products; scores, softmax and accumulators float32. Backward: the dK/dV pass also writes dS (T) to device memory,
 * so the dQ pass is one product per tile pair (dQ = dS K) instead of recomputing. */

#define TLH 72 /* row stride (elements) of 16-bit 64-wide tiles */

template <typename T> __device__ __forceinline__ T to16(float f);
template <> __device__ __forceinline__ __nv_bfloat16 to16<__nv_bfloat16>(float f)
{
    return __float2bfloat16_rn(f);
}
template <> __device__ __forceinline__ __half to16<__half>(float f) { return __float2half_rn(f); }

template <typename T> struct f16 {
    typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_row;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b_col;
    typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_row;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
};

/* rows [r0, r0 + 64) of a T matrix (row j at base + j * rs, rs a multiple of 8) into a
 * tile (ld D + 8); zeros outside. 16-byte vectors. */
template <int D, typename T>
__device__ __forceinline__ void load_tile16h(T *s, const T *base, long rs, int r0, int nrows)
{
    constexpr int LH = D + 8, V8 = D / 8;
    for (int t = threadIdx.x; t < TB * V8; t += blockDim.x) {
        int r = t / V8, c8 = t % V8, j = r0 + r;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (j >= 0 && j < nrows)
            v = *(const uint4 *)(base + (size_t)j * rs + 8 * c8);
        *(uint4 *)(s + r * LH + 8 * c8) = v;
    }
}

/* dst (B, rows, cols) dense T = src element (b, j, c) at b*sb + j*sr + (c/D)*sh + c%D:
 * the 16-bit copy every tile then reads (converted once, not once per tile) */
template <typename T>
__global__ void k_conv16(T *dst, const float *src, int B, int rows, int cols, int D, long sb,
                         long sr, long sh)
{
    const size_t n = (size_t)B * rows * cols;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x) {
        const int cc = (int)(t % cols);
        const size_t bj = t / cols;
        const int j = (int)(bj % rows), b = (int)(bj / rows);
        dst[t] = to16<T>(src[b * sb + (size_t)j * sr + (size_t)(cc / D) * sh + cc % D]);
    }
}

/* C (16 x 64, float32) = A (16 x D) . B^T, B (64 x D) row-major */
template <int D, typename T>
__device__ __forceinline__ void mm16_abt(float *C, int ldc, const T *A, int lda, const T *B, int ldb)
{
#pragma unroll
    for (int nb = 0; nb < 4; nb++) {
        typename f16<T>::acc acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < D; kk += 16) {
            typename f16<T>::a_row fa;
            typename f16<T>::b_col fb;
            wmma::load_matrix_sync(fa, A + kk, lda);
            wmma::load_matrix_sync(fb, B + (size_t)nb * 16 * ldb + kk, ldb);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(C + nb * 16, acc, ldc, wmma::mem_row_major);
    }
}

/* acc[D/16] (16 x D) += A (16 x 64) . B (64 x D, row-major) */
template <int D, typename T>
__device__ __forceinline__ void mm16_ab(typename f16<T>::acc *acc, const T *A, int lda, const T *B,
                                        int ldb)
{
#pragma unroll
    for (int kk = 0; kk < TB; kk += 16) {
        typename f16<T>::a_row fa;
        wmma::load_matrix_sync(fa, A + kk, lda);
#pragma unroll
        for (int nb = 0; nb < D / 16; nb++) {
            typename f16<T>::b_row fb;
            wmma::load_matrix_sync(fb, B + (size_t)kk * ldb + nb * 16, ldb);
            wmma::mma_sync(acc[nb], fa, fb, acc[nb]);
        }
    }
}

template <int D> struct smem16 {
    static constexpr int LD = D + 4, LH = D + 8;
    /* float32 first (Os, Ss, stats), then 16-bit (Q, K, V, P) */
    static constexpr size_t fwd_bytes = 4 * ((size_t)TB * LD + (size_t)TB * TLS + 3 * TB) +
                                        2 * (3 * (size_t)TB * LH + (size_t)TB * TLH);
    /* float32 (S^T, dP^T, L, D), then 16-bit (K, V, Q, dO, P^T, dS^T) */
    static constexpr size_t dkv_bytes = 4 * (2 * (size_t)TB * TLS + 2 * TB) +
                                        2 * (4 * (size_t)TB * LH + 2 * (size_t)TB * TLH);
    /* float32 (staging of dQ), then 16-bit (K, dS) */
    static constexpr size_t dq_bytes = 4 * (size_t)TB * LD + 2 * ((size_t)TB * LH + (size_t)TB * TLH);
};

template <int D, typename T> __global__ void __launch_bounds__(128) k_attn_fwd_16(attn_args_t a)
{
    constexpr int LD = D + 4, LH = D + 8;
    extern __shared__ __align__(128) unsigned char smraw[];
    float *Os = (float *)smraw, *Ss = Os + TB * LD, *mrow = Ss + TB * TLS, *lrow = mrow + TB,
          *arow = lrow + TB;
    T *Qh = (T *)(arow + TB), *Kh = Qh + TB * LH, *Vh = Kh + TB * LH, *Ph = Vh + TB * LH;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int qt0 = blockIdx.x * TB, hh = blockIdx.y, b = blockIdx.z, g = hh / a.grp;
    const long kvd = (long)a.Hkv * D;
    const T *Qg = (const T *)a.q16 + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
    const T *Kg = (const T *)a.k16 + (size_t)b * a.Tk * kvd + (size_t)g * D;
    const T *Vg = (const T *)a.v16 + (size_t)b * a.Tk * kvd + (size_t)g * D;
    load_tile16h<D, T>(Qh, Qg, a.qrow, qt0, a.Tq);
    for (int t = threadIdx.x; t < TB * LD; t += blockDim.x)
        Os[t] = 0.0f;
    for (int t = threadIdx.x; t < TB; t += blockDim.x) {
        mrow[t] = -INFINITY;
        lrow[t] = 0.0f;
    }
    const int lo = vis_lo(a, b);
    const int ilast = qt0 + TB - 1 < a.Tq - 1 ? qt0 + TB - 1 : a.Tq - 1;
    const int hmax = vis_hi(a, ilast);
    float *Sw = Ss + 16 * w * TLS, *Ow = Os + 16 * w * LD;
    T *Pw = Ph + 16 * w * TLH;
    for (int kt0 = lo / TB * TB; kt0 <= hmax; kt0 += TB) {
        __syncthreads();
        load_tile16h<D, T>(Kh, Kg, kvd, kt0, a.Tk);
        load_tile16h<D, T>(Vh, Vg, kvd, kt0, a.Tk);
        __syncthreads();
        mm16_abt<D, T>(Sw, TLS, Qh + 16 * w * LH, LH, Kh, LH);
        __syncwarp();
        {
            /* two lanes per row, 32 columns each (visited in a rotated order, so the 32
             * lanes hit 32 different banks) */
            const int r = lane >> 1, hf = lane & 1, rr = 16 * w + r, i = qt0 + rr;
            const int hi = vis_hi(a, i);
            const bool rowok = i < a.Tq;
            float *Sr = Sw + r * TLS;
            float mx = -INFINITY;
            for (int k = 0; k < 32; k++) {
                const int cc = 32 * hf + ((k + lane) & 31), j = kt0 + cc;
                const float sv = (rowok && j >= lo && j <= hi) ? Sr[cc] * a.scale : -INFINITY;
                Sr[cc] = sv;
                mx = fmaxf(mx, sv);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            const float mold = mrow[rr];
            const float mn = fmaxf(mx, mold);
            const float al = mn == -INFINITY ? 1.0f : expf(mold - mn);
            float ps = 0.0f;
            for (int k = 0; k < 32; k++) {
                const int cc = 32 * hf + ((k + lane) & 31);
                const float sv = Sr[cc];
                const float p = sv == -INFINITY ? 0.0f : expf(sv - mn);
                ps += p;
                Pw[r * TLH + cc] = to16<T>(p);
            }
            ps += __shfl_xor_sync(0xffffffffu, ps, 1);
            __syncwarp();
            if (!hf) {
                mrow[rr] = mn;
                lrow[rr] = lrow[rr] * al + ps;
                arow[rr] = al;
            }
        }
        __syncwarp();
        for (int t = lane; t < 16 * D; t += 32) {
            int r = t / D, d = t % D;
            Ow[r * LD + d] *= arow[16 * w + r];
        }
        __syncwarp();
        typename f16<T>::acc acc[D / 16];
#pragma unroll
        for (int nb = 0; nb < D / 16; nb++)
            wmma::load_matrix_sync(acc[nb], Ow + nb * 16, LD, wmma::mem_row_major);
        mm16_ab<D, T>(acc, Pw, TLH, Vh, LH);
#pragma unroll
        for (int nb = 0; nb < D / 16; nb++)
            wmma::store_matrix_sync(Ow + nb * 16, acc[nb], LD, wmma::mem_row_major);
        __syncwarp();
    }
    __syncthreads();
    for (int r = 0; r < 16; r++) {
        const int rr = 16 * w + r, i = qt0 + rr;
        if (i >= a.Tq)
            break;
        const float l = lrow[rr];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        float *O = a.o_out + ((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D;
        for (int d = lane; d < D; d += 32)
            O[d] = Ow[r * LD + d] * inv;
        if (a.lse_out && lane == 0)
            a.lse_out[((size_t)b * a.H + hh) * a.Tq + i] = l > 0.0f ? mrow[rr] + logf(l) : -INFINITY;
    }
}

/* One query head's share of dK, dV (unscaled) for 64 keys, into dkp / dvp (b, head, key,
 * d), and dS (b, head, query, key) into dsg. One block per (key tile, query head, b): a
 * block per KV head would leave most of the GPU idle (B x Hkv x T/64 blocks, the first
 * key tiles with 16 times the work of the last); k_attn_dkv_sum adds the group's heads
 * in order afterwards, so no atomics. */
template <int D, typename T>
__global__ void __launch_bounds__(128) k_attn_dkv_16(attn_args_t a, const float *di, T *dsg,
                                                     float *dkp, float *dvp)
{
    constexpr int LD = D + 4, LH = D + 8;
    extern __shared__ __align__(128) unsigned char smraw[];
    float *Sts = (float *)smraw, *dPts = Sts + TB * TLS, *Lr = dPts + TB * TLS, *Dr = Lr + TB;
    T *Kh = (T *)(Dr + TB), *Vh = Kh + TB * LH, *Qh = Vh + TB * LH, *dOh = Qh + TB * LH;
    T *Pth = dOh + TB * LH, *dSth = Pth + TB * TLH;
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kt0 = blockIdx.x * TB, hh = blockIdx.y, b = blockIdx.z, g = hh / a.grp;
    const long kvd = (long)a.Hkv * D;
    load_tile16h<D, T>(Kh, (const T *)a.k16 + (size_t)b * a.Tk * kvd + (size_t)g * D, kvd, kt0, a.Tk);
    load_tile16h<D, T>(Vh, (const T *)a.v16 + (size_t)b * a.Tk * kvd + (size_t)g * D, kvd, kt0, a.Tk);
    typename f16<T>::acc dk[D / 16], dv[D / 16];
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++) {
        wmma::fill_fragment(dk[nb], 0.0f);
        wmma::fill_fragment(dv[nb], 0.0f);
    }
    const int lo = vis_lo(a, b);
    const int klast = kt0 + TB - 1 < a.Tke - 1 ? kt0 + TB - 1 : a.Tke - 1;
    const bool any = klast >= lo && kt0 < a.Tke;
    int i0 = kt0 - a.q0;
    i0 = i0 < 0 ? 0 : i0 / TB * TB;
    float *Stw = Sts + 16 * w * TLS, *dPtw = dPts + 16 * w * TLS;
    T *Ptw = Pth + 16 * w * TLH, *dStw = dSth + 16 * w * TLH;
    const T *Qg = (const T *)a.q16 + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
    const T *dOg = (const T *)a.do16 + (size_t)b * a.Tq * a.qrow + (size_t)hh * D;
    const size_t lbase = ((size_t)b * a.H + hh) * a.Tq;
    T *dsrow = dsg + lbase * a.Tk; /* (Tq, Tk) of this (b, head) */
    for (int qt0 = i0; any && qt0 < a.Tq; qt0 += TB) {
        __syncthreads();
        load_tile16h<D, T>(Qh, Qg, a.qrow, qt0, a.Tq);
        load_tile16h<D, T>(dOh, dOg, a.qrow, qt0, a.Tq);
        for (int t = threadIdx.x; t < TB; t += blockDim.x) {
            int i = qt0 + t;
            Lr[t] = i < a.Tq ? a.lse[lbase + i] : 0.0f;
            Dr[t] = i < a.Tq ? di[lbase + i] : 0.0f;
        }
        __syncthreads();
        mm16_abt<D, T>(Stw, TLS, Kh + 16 * w * LH, LH, Qh, LH);
        mm16_abt<D, T>(dPtw, TLS, Vh + 16 * w * LH, LH, dOh, LH);
        __syncwarp();
        for (int r = 0; r < 16; r++) {
            const int j = kt0 + 16 * w + r;
#pragma unroll
            for (int u = 0; u < 2; u++) {
                const int cq = lane + 32 * u, i = qt0 + cq;
                const bool vis = i < a.Tq && j >= lo && j <= vis_hi(a, i);
                float p = vis ? expf(Stw[r * TLS + cq] * a.scale - Lr[cq]) : 0.0f;
                float ds = p * (dPtw[r * TLS + cq] - Dr[cq]);
                Ptw[r * TLH + cq] = to16<T>(p);
                dStw[r * TLH + cq] = to16<T>(ds);
            }
        }
        __syncthreads(); /* dS^T of every warp, for the copy to device memory */
        for (int t = threadIdx.x; t < TB * TB; t += blockDim.x) {
            const int qi = t / TB, kj = t % TB, i = qt0 + qi, j = kt0 + kj;
            if (i < a.Tq && j < a.Tk)
                dsrow[(size_t)i * a.Tk + j] = dSth[kj * TLH + qi];
        }
        mm16_ab<D, T>(dv, Ptw, TLH, dOh, LH);
        mm16_ab<D, T>(dk, dStw, TLH, Qh, LH);
    }
    __syncthreads();
    float *dKs = Sts, *dVs = Sts + TB * LD; /* float32 staging over S^T and dP^T (and more) */
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++) {
        wmma::store_matrix_sync(dKs + 16 * w * LD + nb * 16, dk[nb], LD, wmma::mem_row_major);
        wmma::store_matrix_sync(dVs + 16 * w * LD + nb * 16, dv[nb], LD, wmma::mem_row_major);
    }
    __syncthreads();
    const size_t pbase = ((size_t)b * a.H + hh) * a.Tk;
    for (int t = threadIdx.x; t < TB * D; t += blockDim.x) {
        int r = t / D, d = t % D, j = kt0 + r;
        if (j < a.Tk) {
            dkp[(pbase + j) * D + d] = dKs[r * LD + d];
            dvp[(pbase + j) * D + d] = dVs[r * LD + d];
        }
    }
}

/* dK = scale x (sum over the group's heads, in order), dV the same unscaled */
__global__ void k_attn_dkv_sum(attn_args_t a, const float *dkp, const float *dvp)
{
    const size_t n = (size_t)a.B * a.Hkv * a.Tk * a.D;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(t % a.D);
        const size_t r = t / a.D;
        const int j = (int)(r % a.Tk), g = (int)((r / a.Tk) % a.Hkv), b = (int)(r / ((size_t)a.Tk * a.Hkv));
        float sk = 0.0f, sv = 0.0f;
        for (int u = 0; u < a.grp; u++) {
            const size_t o = (((size_t)b * a.H + g * a.grp + u) * a.Tk + j) * a.D + d;
            sk += dkp[o];
            sv += dvp[o];
        }
        const size_t o = b * a.kv_sb + (size_t)j * a.kv_st + g * a.kv_sh + d;
        a.dk[o] = sk * a.scale;
        a.dv[o] = sv;
    }
}

/* dQ = scale dS K for 64 queries of one (b, head), dS from the dK/dV pass */
template <int D, typename T>
__global__ void __launch_bounds__(128) k_attn_dq_16(attn_args_t a, const T *dsg)
{
    constexpr int LD = D + 4, LH = D + 8;
    extern __shared__ __align__(128) unsigned char smraw[];
    float *Qst = (float *)smraw;
    T *Kh = (T *)(Qst + TB * LD), *dSh = Kh + TB * LH;
    const int w = threadIdx.x >> 5;
    const int qt0 = blockIdx.x * TB, hh = blockIdx.y, b = blockIdx.z, g = hh / a.grp;
    const long kvd = (long)a.Hkv * D;
    const T *Kg = (const T *)a.k16 + (size_t)b * a.Tk * kvd + (size_t)g * D;
    const size_t lbase = ((size_t)b * a.H + hh) * a.Tq;
    const T *dsrow = dsg + lbase * a.Tk;
    typename f16<T>::acc dq[D / 16];
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++)
        wmma::fill_fragment(dq[nb], 0.0f);
    const int lo = vis_lo(a, b);
    const int ilast = qt0 + TB - 1 < a.Tq - 1 ? qt0 + TB - 1 : a.Tq - 1;
    const int hmax = vis_hi(a, ilast);
    const T zero = to16<T>(0.0f);
    /* only the visible (query, key) pairs were written by the dK/dV pass */
    for (int kt0 = lo / TB * TB; lo <= hmax && kt0 <= hmax; kt0 += TB) {
        __syncthreads();
        load_tile16h<D, T>(Kh, Kg, kvd, kt0, a.Tk);
        for (int t = threadIdx.x; t < TB * TB; t += blockDim.x) {
            const int qi = t / TB, kj = t % TB, i = qt0 + qi, j = kt0 + kj;
            const bool vis = i < a.Tq && j >= lo && j <= vis_hi(a, i);
            dSh[qi * TLH + kj] = vis ? dsrow[(size_t)i * a.Tk + j] : zero;
        }
        __syncthreads();
        mm16_ab<D, T>(dq, dSh + 16 * w * TLH, TLH, Kh, LH);
    }
    __syncthreads();
#pragma unroll
    for (int nb = 0; nb < D / 16; nb++)
        wmma::store_matrix_sync(Qst + 16 * w * LD + nb * 16, dq[nb], LD, wmma::mem_row_major);
    __syncthreads();
    for (int t = threadIdx.x; t < TB * D; t += blockDim.x) {
        int r = t / D, d = t % D, i = qt0 + r;
        if (i < a.Tq)
            a.dq[((size_t)b * a.Tq + i) * a.qrow + (size_t)hh * D + d] = Qst[r * LD + d] * a.scale;
    }
}

/* ================================ host side ========================================== */

static attn_args_t args_of(const be_attn_t *at)
{
    attn_args_t a;
    memset(&a, 0, sizeof a);
    a.q = fptr(at->q);
    a.k = fptr(at->k);
    a.v = fptr(at->v);
    a.out = fptr(at->out);
    a.lse = be_null(at->lse) ? nullptr : fptr(at->lse);
    a.o_out = fptr(at->out);
    a.lse_out = be_null(at->lse) ? nullptr : fptr(at->lse);
    a.padl = iptr(at->pad_left);
    a.qrow = (long)at->H * at->D;
    a.kv_sb = (long)at->kv_sb;
    a.kv_st = (long)at->kv_st;
    a.kv_sh = (long)at->kv_sh;
    a.B = at->B, a.Tq = at->Tq, a.Tk = at->Tk, a.H = at->H, a.Hkv = at->Hkv, a.D = at->D;
    a.q0 = at->q0;
    a.grp = at->H / at->Hkv;
    a.Tke = at->Tk < at->q0 + at->Tq ? at->Tk : at->q0 + at->Tq;
    a.scale = at->scale;
    return a;
}

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* the tile kernels apply: enough queries, a supported head_dim, 16-byte rows */
static bool use_tiles(const cuda_t *c, const attn_args_t &a)
{
    if (c->attn == BE_CUDA_ATTN_EXACT || a.Tq < 16)
        return false;
    if (a.D != 16 && a.D != 32 && a.D != 64 && a.D != 128)
        return false;
    return al16(a.q) && al16(a.k) && al16(a.v) && a.qrow % 4 == 0 && a.kv_sb % 4 == 0 &&
           a.kv_st % 4 == 0 && a.kv_sh % 4 == 0;
}

template <int D, int P> static void fwd_tc(cuda_t *c, const attn_args_t &a)
{
    size_t sm = tile_smem<D>::fwd_floats * sizeof(float);
    if (!cu_check(c, cudaFuncSetAttribute(k_attn_fwd_tc<D, P>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm),
                  "attention shared memory"))
        return;
    dim3 grid((a.Tq + TB - 1) / TB, a.H, a.B);
    k_attn_fwd_tc<D, P><<<grid, 128, sm, c->st>>>(a);
    cu_launched(c, "k_attn_fwd_tc");
}

template <int D, int P> static void bwd_tc(cuda_t *c, const attn_args_t &a, const float *di)
{
    size_t sm = tile_smem<D>::bwd_floats * sizeof(float);
    if (!cu_check(c, cudaFuncSetAttribute(k_attn_dkv_tc<D, P>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm),
                  "attention shared memory") ||
        !cu_check(c, cudaFuncSetAttribute(k_attn_dq_tc<D, P>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm),
                  "attention shared memory"))
        return;
    dim3 gk((a.Tk + TB - 1) / TB, a.Hkv, a.B);
    k_attn_dkv_tc<D, P><<<gk, 128, sm, c->st>>>(a, di);
    cu_launched(c, "k_attn_dkv_tc");
    dim3 gq((a.Tq + TB - 1) / TB, a.H, a.B);
    k_attn_dq_tc<D, P><<<gq, 128, sm, c->st>>>(a, di);
    cu_launched(c, "k_attn_dq_tc");
}

template <int P> static void fwd_tc_d(cuda_t *c, const attn_args_t &a)
{
    switch (a.D) {
    case 16: fwd_tc<16, P>(c, a); return;
    case 32: fwd_tc<32, P>(c, a); return;
    case 64: fwd_tc<64, P>(c, a); return;
    default: fwd_tc<128, P>(c, a); return;
    }
}

template <int P> static void bwd_tc_d(cuda_t *c, const attn_args_t &a, const float *di)
{
    switch (a.D) {
    case 16: bwd_tc<16, P>(c, a, di); return;
    case 32: bwd_tc<32, P>(c, a, di); return;
    case 64: bwd_tc<64, P>(c, a, di); return;
    default: bwd_tc<128, P>(c, a, di); return;
    }
}

/* 16-bit copies of q, k, v (and dout when given) in CS_ATT16; false if out of memory */
template <typename T> static bool conv16(cuda_t *c, attn_args_t &a, bool with_dout)
{
    const size_t nq = (size_t)a.B * a.Tq * a.qrow, nk = (size_t)a.B * a.Tk * a.Hkv * a.D;
    const size_t aq = (nq * sizeof(T) + 255) & ~(size_t)255, ak = (nk * sizeof(T) + 255) & ~(size_t)255;
    unsigned char *s = (unsigned char *)cu_scratch(c, CS_ATT16, 2 * aq + 2 * ak);
    if (!s)
        return false;
    T *q16 = (T *)s, *k16 = (T *)(s + aq), *v16 = (T *)(s + aq + ak), *do16 = (T *)(s + aq + 2 * ak);
    const int kc = a.Hkv * a.D;
    k_conv16<T><<<cu_grid(nq, 256), 256, 0, c->st>>>(q16, a.q, a.B, a.Tq, (int)a.qrow, a.D,
                                                      (long)a.Tq * a.qrow, a.qrow, a.D);
    k_conv16<T><<<cu_grid(nk, 256), 256, 0, c->st>>>(k16, a.k, a.B, a.Tk, kc, a.D, a.kv_sb, a.kv_st,
                                                      a.kv_sh);
    k_conv16<T><<<cu_grid(nk, 256), 256, 0, c->st>>>(v16, a.v, a.B, a.Tk, kc, a.D, a.kv_sb, a.kv_st,
                                                      a.kv_sh);
    if (with_dout)
        k_conv16<T><<<cu_grid(nq, 256), 256, 0, c->st>>>(do16, a.dout, a.B, a.Tq, (int)a.qrow, a.D,
                                                          (long)a.Tq * a.qrow, a.qrow, a.D);
    cu_launched(c, "k_conv16");
    a.q16 = q16, a.k16 = k16, a.v16 = v16, a.do16 = do16;
    return true;
}

template <int D, typename T> static void fwd_16(cuda_t *c, attn_args_t a)
{
    if (!conv16<T>(c, a, false))
        return;
    size_t sm = smem16<D>::fwd_bytes;
    if (!cu_check(c, cudaFuncSetAttribute(k_attn_fwd_16<D, T>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm),
                  "attention shared memory"))
        return;
    dim3 grid((a.Tq + TB - 1) / TB, a.H, a.B);
    k_attn_fwd_16<D, T><<<grid, 128, sm, c->st>>>(a);
    cu_launched(c, "k_attn_fwd_16");
}

template <int D, typename T> static void bwd_16(cuda_t *c, attn_args_t a, const float *di)
{
    if (!conv16<T>(c, a, true))
        return;
    T *ds = (T *)cu_scratch(c, CS_T, (size_t)a.B * a.H * a.Tq * a.Tk * sizeof(T));
    const size_t np = (size_t)a.B * a.H * a.Tk * D;
    float *dkp = (float *)cu_scratch(c, CS_SORT2, 2 * np * sizeof(float));
    if (!ds || !dkp)
        return;
    size_t sk = smem16<D>::dkv_bytes, sq = smem16<D>::dq_bytes;
    if (!cu_check(c, cudaFuncSetAttribute(k_attn_dkv_16<D, T>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sk),
                  "attention shared memory") ||
        !cu_check(c, cudaFuncSetAttribute(k_attn_dq_16<D, T>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sq),
                  "attention shared memory"))
        return;
    dim3 gk((a.Tk + TB - 1) / TB, a.H, a.B);
    k_attn_dkv_16<D, T><<<gk, 128, sk, c->st>>>(a, di, ds, dkp, dkp + np);
    cu_launched(c, "k_attn_dkv_16");
    k_attn_dkv_sum<<<cu_grid((size_t)a.B * a.Hkv * a.Tk * D, 256), 256, 0, c->st>>>(a, dkp, dkp + np);
    cu_launched(c, "k_attn_dkv_sum");
    dim3 gq((a.Tq + TB - 1) / TB, a.H, a.B);
    k_attn_dq_16<D, T><<<gq, 128, sq, c->st>>>(a, ds);
    cu_launched(c, "k_attn_dq_16");
}

template <typename T> static void fwd_16_d(cuda_t *c, const attn_args_t &a)
{
    switch (a.D) {
    case 16: fwd_16<16, T>(c, a); return;
    case 32: fwd_16<32, T>(c, a); return;
    case 64: fwd_16<64, T>(c, a); return;
    default: fwd_16<128, T>(c, a); return;
    }
}

template <typename T> static void bwd_16_d(cuda_t *c, const attn_args_t &a, const float *di)
{
    switch (a.D) {
    case 16: bwd_16<16, T>(c, a, di); return;
    case 32: bwd_16<32, T>(c, a, di); return;
    case 64: bwd_16<64, T>(c, a, di); return;
    default: bwd_16<128, T>(c, a, di); return;
    }
}

/* which tile precision: 16 (bf16), 17 (fp16), 3 (3xTF32), 1 (TF32) */
static int tile_kind(const cuda_t *c, prec_compute_t ct)
{
    if (c->attn == BE_CUDA_ATTN_TF32)
        return 1;
    const bool fast = c->attn == BE_CUDA_ATTN_FAST || c->attn == BE_CUDA_ATTN_TILES ||
                      c->attn == BE_CUDA_ATTN_FAST_NONDET;
    if (fast && ct == PREC_COMPUTE_BF16)
        return 16;
    if (fast && ct == PREC_COMPUTE_FP16)
        return 17;
    return 3;
}

static bool check_shape(cuda_t *c, const attn_args_t &a)
{
    if (a.D > 32 * EX_MAXT || a.D < 1 || a.H % a.Hkv) {
        cu_fail(c, ERR_INPUT, "cuda backend: attention with head_dim %d and %d/%d heads is not "
                "supported (head_dim <= %d)", a.D, a.H, a.Hkv, 32 * EX_MAXT);
        return false;
    }
    return true;
}

void cuda_op_attn_fwd(backend_t *be, const be_attn_t *at)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    attn_args_t a = args_of(at);
    if (a.B <= 0 || a.Tq <= 0 || a.H <= 0 || !check_shape(c, a))
        return;
    if (a.Tke <= 0) { /* nothing visible anywhere: zeros (the CPU leaves out untouched) */
        return;
    }
    if (cu_dnn_attn_fwd(c, at)) /* cuDNN's fused attention (cuda_cudnn.cu says when) */
        return;
    if (use_tiles(c, a)) {
        switch (tile_kind(c, at->compute)) {
        case 1: fwd_tc_d<1>(c, a); return;
        case 16: fwd_16_d<__nv_bfloat16>(c, a); return;
        case 17: fwd_16_d<__half>(c, a); return;
        default: fwd_tc_d<3>(c, a); return;
        }
    }
    size_t rows = (size_t)a.B * a.H * a.Tq;
    k_attn_fwd_exact<<<(unsigned)rows, 32 * EX_WARPS, 0, c->st>>>(a);
    cu_launched(c, "k_attn_fwd_exact");
}

void cuda_op_attn_bwd(backend_t *be, const be_attn_t *at, be_ptr_t dout, be_ptr_t dq, be_ptr_t dk,
                      be_ptr_t dv)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    attn_args_t a = args_of(at);
    if (a.B <= 0 || a.Tq <= 0 || a.H <= 0 || !check_shape(c, a))
        return;
    if (!a.lse) {
        cu_fail(c, ERR_INPUT, "cuda backend: attention backward needs the forward's lse");
        return;
    }
    if (a.Tke <= 0)
        return;
    if (cu_dnn_attn_bwd(c, at, dout, dq, dk, dv))
        return;
    a.dout = fptr(dout);
    a.dq = fptr(dq);
    a.dk = fptr(dk);
    a.dv = fptr(dv);
    const size_t rows = (size_t)a.B * a.H * a.Tq;
    float *di = (float *)cu_scratch(c, CS_ROW, rows * sizeof(float));
    if (!di)
        return;
    k_attn_di<<<(unsigned)((rows + 3) / 4), 128, 0, c->st>>>(a, di);
    cu_launched(c, "k_attn_di");
    if (use_tiles(c, a) && al16(a.dout) && al16(a.dq) && al16(a.dk) && al16(a.dv)) {
        switch (tile_kind(c, at->compute)) {
        case 1: bwd_tc_d<1>(c, a, di); return;
        case 16: bwd_16_d<__nv_bfloat16>(c, a, di); return;
        case 17: bwd_16_d<__half>(c, a, di); return;
        default: bwd_tc_d<3>(c, a, di); return;
        }
    }
    k_attn_dq_exact<<<(unsigned)((rows + 3) / 4), 128, 0, c->st>>>(a, di);
    cu_launched(c, "k_attn_dq_exact");
    const size_t krows = (size_t)a.B * a.Hkv * a.Tk;
    k_attn_dkv_exact<<<(unsigned)((krows + 3) / 4), 128, 0, c->st>>>(a, di);
    cu_launched(c, "k_attn_dkv_exact");
}
