/* cuda_sample: be_sample_t sampling on the device, one block per row.
 *
 * The CPU definition (backend.h) step by step:
 *   greedy        the lowest id among the maxima of the row (block arg-max);
 *   z = logit / T float division, as the CPU;
 *   top-k         the k-th largest z found exactly by a 4-pass radix select on the
 *                 order-preserving bits of z; tokens with z >= it are kept (ties kept);
 *   top-p         kept tokens sorted by z descending, ties by ascending id (a stable
 *                 segmented radix sort, CUB), i.e. ascending with ties higher id first
 *                 as on the CPU; the longest ascending prefix (never the last token)
 *                 whose cumulative probability stays <= 1 - top_p is dropped;
 *   draw          u = rng_uniform_double(seed, stream + b, index) (the same Philox
 *                 words as the CPU) times the kept mass; the first kept id, in id order,
 *                 whose running sum of exp(z - max) exceeds it.
 * Sums run in double in a fixed order (per-thread chunks in id order, then the chunks in
 * order), so a draw is the same run to run; against the CPU's running sums they differ
 * only in the last bits, which moves a draw only when u lands within ~1e-16 of a
 * boundary. Decoding (be_dec_sample, cuda_decode.cu) passes the draw's index in device
 * memory, so that one recorded step serves every step.
 */
#include <cub/cub.cuh>
#include <math.h>

#include "backend/cuda_internal.cuh"

#define SB 1024 /* threads per row */

/* (value, id) pairs: the larger value wins, ties go to the lower id; id -1 is empty */
__device__ __forceinline__ void argmax_combine(float &v, int &i, float v2, int i2)
{
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) {
        v = v2;
        i = i2;
    }
}

__global__ void __launch_bounds__(SB) k_argmax(int32_t *out, const float *l, size_t ld, int V)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *r = l + blockIdx.x * ld;
    float bv = -INFINITY;
    int bi = -1;
    for (int j = threadIdx.x; j < V; j += SB) /* ascending j: strict > keeps the lowest id */
        if (bi < 0 || r[j] > bv) {
            bv = r[j];
            bi = j;
        }
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_combine(bv, bi, v2, i2);
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) {
        sv[w] = bv;
        si[w] = bi;
    }
    __syncthreads();
    if (w == 0) {
        bv = sv[lane];
        bi = si[lane];
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            argmax_combine(bv, bi, v2, i2);
        }
        if (lane == 0)
            out[blockIdx.x] = bi < 0 ? 0 : bi;
    }
}

/* thr[b] = the k-th largest z of row b (-inf when top-k is off) */
__global__ void __launch_bounds__(SB) k_topk_thr(float *thr, const float *l, size_t ld, int V,
                                                  float T, int k)
{
    __shared__ unsigned hist[256];
    __shared__ uint32_t prefix, mask;
    __shared__ int rank;
    const float *r = l + blockIdx.x * ld;
    if (k <= 0 || k >= V) {
        if (threadIdx.x == 0)
            thr[blockIdx.x] = -INFINITY;
        return;
    }
    if (threadIdx.x == 0) {
        prefix = 0;
        mask = 0;
        rank = V - k; /* 0-based rank in ascending order */
    }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int t = threadIdx.x; t < 256; t += SB)
            hist[t] = 0;
        __syncthreads();
        const uint32_t pf = prefix, mk = mask;
        for (int j = threadIdx.x; j < V; j += SB) {
            uint32_t key = hd_fkey(r[j] / T);
            if ((key & mk) == pf)
                atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            unsigned cum = 0;
            for (int d = 0; d < 256; d++) {
                if (cum + hist[d] > (unsigned)rank) {
                    prefix |= (uint32_t)d << shift;
                    rank -= (int)cum;
                    break;
                }
                cum += hist[d];
            }
            mask |= 255u << shift;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
        thr[blockIdx.x] = hd_unfkey(prefix);
}

/* mx[b] = max of the kept z */
__global__ void __launch_bounds__(SB) k_kept_max(float *mx, const float *l, size_t ld, int V, float T,
                                                  const float *thr)
{
    __shared__ float sh[32];
    const float *r = l + blockIdx.x * ld;
    const float th = thr[blockIdx.x];
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += SB) {
        float z = r[j] / T;
        if (z >= th && z > m)
            m = z;
    }
    m = block_max(m, sh, -INFINITY);
    if (threadIdx.x == 0)
        mx[blockIdx.x] = m;
}

/* sort keys (0 for tokens top-k dropped), ids, and the keep mask */
__global__ void k_sort_prep(uint32_t *keys, int32_t *vals, unsigned char *keep, const float *l,
                            size_t ld, int V, int B, float T, const float *thr)
{
    for (int b = blockIdx.y; b < B; b += gridDim.y)
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < V; j += gridDim.x * blockDim.x) {
            float z = l[b * ld + j] / T;
            bool kept = z >= thr[b];
            size_t o = (size_t)b * V + j;
            keys[o] = kept ? hd_fkey(z) : 0u;
            vals[o] = j;
            keep[o] = kept;
        }
}

__global__ void k_offsets(int *offs, int B, int V)
{
    for (int b = threadIdx.x; b <= B; b += blockDim.x)
        offs[b] = b * V;
}

/* Fixed-order block scan helper: part[t] per thread -> exclusive prefix in excl (thread 0
 * adds them in order). */
__device__ double block_excl_prefix(double part, double *sh /* SB */)
{
    sh[threadIdx.x] = part;
    __syncthreads();
    if (threadIdx.x == 0) {
        double run = 0;
        for (int t = 0; t < SB; t++) {
            double v = sh[t];
            sh[t] = run;
            run += v;
        }
    }
    __syncthreads();
    double r = sh[threadIdx.x];
    __syncthreads();
    return r;
}

/* top-p on the sorted row: clears keep[] of the dropped tokens */
__global__ void __launch_bounds__(SB) k_topp(unsigned char *keep, const uint32_t *ks,
                                             const int32_t *vs, int V, const float *mxv, double top_p)
{
    __shared__ double sh[SB];
    __shared__ double shr[32];
    __shared__ int nc_s, first_s;
    const int b = blockIdx.x;
    const uint32_t *k = ks + (size_t)b * V;
    const int32_t *v = vs + (size_t)b * V;
    const float mx = mxv[b];
    if (threadIdx.x == 0) {
        nc_s = 0;
        first_s = 0x7fffffff;
    }
    __syncthreads();
    int cnt = 0;
    for (int i = threadIdx.x; i < V; i += SB)
        cnt += k[i] != 0u;
    atomicAdd(&nc_s, cnt);
    __syncthreads();
    const int nc = nc_s;
    /* tot over the kept tokens */
    double t = 0;
    for (int i = threadIdx.x; i < nc; i += SB)
        t += exp((double)hd_unfkey(k[i]) - mx);
    const double tot = block_sum(t, shr);
    const double cut = 1.0 - top_p;
    /* ascending position a <-> sorted index nc - 1 - a; candidates a < nc - 1 */
    const int na = nc - 1;
    const int C = (na + SB - 1) / SB;
    const int a0 = threadIdx.x * C, a1 = a0 + C < na ? a0 + C : na;
    double s = 0;
    for (int a = a0; a < a1; a++)
        s += exp((double)hd_unfkey(k[nc - 1 - a]) - mx) / tot;
    double run = block_excl_prefix(s, sh);
    for (int a = a0; a < a1; a++) {
        run += exp((double)hd_unfkey(k[nc - 1 - a]) - mx) / tot;
        if (run > cut) {
            atomicMin(&first_s, a);
            break;
        }
    }
    __syncthreads();
    const int first = first_s < na ? first_s : (na > 0 ? na : 0);
    for (int a = threadIdx.x; a < first; a += SB)
        keep[(size_t)b * V + v[nc - 1 - a]] = 0;
}

/* the draw */
__global__ void __launch_bounds__(SB) k_draw(int32_t *out, const float *l, size_t ld, int V, float T,
                                             const float *thr, const float *mxv,
                                             const unsigned char *keep, uint64_t seed,
                                             uint64_t stream, uint64_t index,
                                             const int32_t *index_dev)
{
    __shared__ double sh[SB];
    __shared__ int pick_s, last_s;
    const int b = blockIdx.x;
    const float *r = l + (size_t)b * ld;
    const float th = thr[b], mx = mxv[b];
    const unsigned char *kp = keep ? keep + (size_t)b * V : nullptr;
    if (threadIdx.x == 0) {
        pick_s = 0x7fffffff;
        last_s = -1;
    }
    const int C = (V + SB - 1) / SB;
    const int j0 = threadIdx.x * C, j1 = j0 + C < V ? j0 + C : V;
    double s = 0;
    int last = -1;
    for (int j = j0; j < j1; j++) {
        float z = r[j] / T;
        bool kept = kp ? kp[j] != 0 : z >= th;
        if (kept) {
            s += exp((double)z - mx);
            last = j;
        }
    }
    double run = block_excl_prefix(s, sh); /* its barriers also publish pick_s, last_s */
    if (last >= 0)
        atomicMax(&last_s, last);
    /* total = the last thread's prefix + its part: the same fixed order for every thread */
    __shared__ double total_s;
    if (threadIdx.x == SB - 1)
        total_s = run + s;
    __syncthreads();
    if (index_dev)
        index += (uint64_t)(int64_t)*index_dev;
    const double u = philox_uniform_double(seed, stream + (uint64_t)b, index) * total_s;
    for (int j = j0; j < j1; j++) {
        float z = r[j] / T;
        bool kept = kp ? kp[j] != 0 : z >= th;
        if (!kept)
            continue;
        run += exp((double)z - mx);
        if (run > u) {
            atomicMin(&pick_s, j);
            break;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0)
        out[b] = pick_s != 0x7fffffff ? pick_s : (last_s >= 0 ? last_s : 0);
}

void cuda_op_sample(backend_t *be, be_ptr_t outp, be_ptr_t lp, size_t ld, int B, int V,
                    const be_sample_t *s)
{
    cu_sample(CU(be), iptr(outp), fptr(lp), ld, B, V, s, nullptr);
}

void cu_sample(cuda_t *c, int32_t *out, const float *l, size_t ld, int B, int V,
               const be_sample_t *s, const int32_t *index_dev)
{
    c->gen++; /* device memory changes: prepared GEMM operands are stale */
    if (B <= 0 || V <= 0)
        return;
    if (!(s->temperature > 0)) {
        k_argmax<<<B, SB, 0, c->st>>>(out, l, ld, V);
        cu_launched(c, "k_argmax");
        return;
    }
    const float T = (float)s->temperature;
    float *row = (float *)cu_scratch(c, CS_ROW, 2 * (size_t)B * sizeof(float));
    if (!row)
        return;
    float *thr = row, *mx = row + B;
    k_topk_thr<<<B, SB, 0, c->st>>>(thr, l, ld, V, T, s->top_k);
    cu_launched(c, "k_topk_thr");
    k_kept_max<<<B, SB, 0, c->st>>>(mx, l, ld, V, T, thr);
    cu_launched(c, "k_kept_max");
    unsigned char *keep = nullptr;
    if (s->top_p > 0 && s->top_p < 1) {
        const size_t n = (size_t)B * V;
        const size_t a4 = (n * 4 + 255) & ~(size_t)255, a1 = (n + 255) & ~(size_t)255;
        const size_t ao = (((size_t)B + 1) * 4 + 255) & ~(size_t)255;
        size_t tmp = 0;
        cub::DeviceSegmentedRadixSort::SortPairsDescending(
            nullptr, tmp, (uint32_t *)nullptr, (uint32_t *)nullptr, (int32_t *)nullptr,
            (int32_t *)nullptr, (int)n, B, (int *)nullptr, (int *)nullptr, 0, 32, c->st);
        unsigned char *sc = (unsigned char *)cu_scratch(c, CS_SORT, 4 * a4 + a1 + ao + tmp);
        if (!sc)
            return;
        uint32_t *kin = (uint32_t *)sc, *kout = (uint32_t *)(sc + a4);
        int32_t *vin = (int32_t *)(sc + 2 * a4), *vout = (int32_t *)(sc + 3 * a4);
        keep = sc + 4 * a4;
        int *offs = (int *)(sc + 4 * a4 + a1);
        void *tmpp = sc + 4 * a4 + a1 + ao;
        dim3 g((unsigned)((V + 255) / 256 < 256 ? (V + 255) / 256 : 256), (unsigned)(B < 65535 ? B : 65535));
        k_sort_prep<<<g, 256, 0, c->st>>>(kin, vin, keep, l, ld, V, B, T, thr);
        cu_launched(c, "k_sort_prep");
        k_offsets<<<1, 256, 0, c->st>>>(offs, B, V);
        cu_launched(c, "k_offsets");
        if (!cu_check(c, cub::DeviceSegmentedRadixSort::SortPairsDescending(
                             tmpp, tmp, kin, kout, vin, vout, (int)n, B, offs, offs + 1, 0, 32,
                             c->st), "sorting for top-p"))
            return;
        k_topp<<<B, SB, 0, c->st>>>(keep, kout, vout, V, mx, s->top_p);
        cu_launched(c, "k_topp");
    }
    k_draw<<<B, SB, 0, c->st>>>(out, l, ld, V, T, thr, mx, keep, s->seed, s->stream, s->index,
                                index_dev);
    cu_launched(c, "k_draw");
}
