/* cuda_sample: be_sample_t sampling on the device. The passes over a row's logits run a CTA
 * per chunk of SCH ids (k_chunk_*), so that a row of a large vocabulary spreads over the
 * whole GPU; top-k's threshold and top-p's cut take a block per row.
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
 * Sums run in double in a fixed order (per-thread runs of SPT ids in id order, the threads
 * of a chunk in order, then the chunks in order), so a draw is the same run to run; against
 * the CPU's running sums they differ only in the last bits, which moves a draw only when u
 * lands within ~1e-16 of a boundary. Decoding (be_dec_sample, cuda_decode.cu) passes the draw's index in device
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

/* ---- grid-wide passes: a row in chunks of SCH ids, a CTA per (chunk, row) ---------------- */

#define SCT 256           /* threads of a chunk's CTA */
#define SPT 16            /* consecutive ids a thread takes */
#define SCH (SCT * SPT)   /* ids of a chunk */

/* pmax[b * nc + c] = the max kept z of chunk c of row b (-inf when none); thr NULL: all kept */
__global__ void __launch_bounds__(SCT) k_chunk_max(float *pmax, const float *l, size_t ld, int V,
                                                   float T, const float *thr)
{
    __shared__ float sh[32];
    const int c = blockIdx.x, b = blockIdx.y, nc = gridDim.x;
    const float *r = l + (size_t)b * ld;
    const float th = thr ? thr[b] : -INFINITY;
    const int j0 = c * SCH + threadIdx.x * SPT;
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int j = j0 + i;
        if (j < V) {
            const float z = r[j] / T;
            if (z >= th && z > m)
                m = z;
        }
    }
    m = block_max(m, sh, -INFINITY);
    if (threadIdx.x == 0)
        pmax[(size_t)b * nc + c] = m;
}

/* the row's max kept z from the chunks' (the same in every CTA: max is exact) */
__device__ float row_max(const float *pmax, int b, int nc, float *sh)
{
    float m = -INFINITY;
    for (int c = threadIdx.x; c < nc; c += blockDim.x)
        m = fmaxf(m, pmax[(size_t)b * nc + c]);
    return block_max(m, sh, -INFINITY);
}

/* this thread's SPT ids of chunk c: the sum of exp(z - mx) over the kept ones, in id order,
 * and the last kept id (-1 when none) */
__device__ __forceinline__ double thread_part(const float *r, const unsigned char *kp, int V, float T,
                                              float th, float mx, int j0, int *last)
{
    double s = 0;
    *last = -1;
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int j = j0 + i;
        if (j < V) {
            const float z = r[j] / T;
            const bool kept = kp ? kp[j] != 0 : z >= th;
            if (kept) {
                s += exp((double)z - mx);
                *last = j;
            }
        }
    }
    return s;
}

/* warps' fixed-order sums of a double: returns the CTA's total in every thread (warp trees,
 * then the warps in order) and in *excl this thread's exclusive prefix in thread order */
__device__ double block_scan_double(double v, double *excl, double *sh /* 32 */)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    double x = v; /* inclusive scan within the warp */
    for (int o = 1; o < 32; o <<= 1) {
        const double y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o)
            x += y;
    }
    if (lane == 31)
        sh[w] = x;
    __syncthreads();
    double before = 0, tot = 0;
    for (int i = 0; i < nw; i++) {
        if (i == w)
            before = tot;
        tot += sh[i];
    }
    __syncthreads();
    *excl = before + (x - v);
    return tot;
}

/* psum[b * nc + c] = the chunk's sum of exp(z - mx) over kept ids (a fixed order) */
__global__ void __launch_bounds__(SCT) k_chunk_sum(double *psum, const float *pmax, const float *l,
                                                   size_t ld, int V, float T, const float *thr,
                                                   const unsigned char *keep)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    const int c = blockIdx.x, b = blockIdx.y, nc = gridDim.x;
    const float mx = row_max(pmax, b, nc, shf);
    const float th = thr ? thr[b] : -INFINITY;
    int last;
    const double s = thread_part(l + (size_t)b * ld, keep ? keep + (size_t)b * V : nullptr, V, T, th,
                                 mx, c * SCH + threadIdx.x * SPT, &last);
    double excl;
    const double tot = block_scan_double(s, &excl, shd);
    if (threadIdx.x == 0)
        psum[(size_t)b * nc + c] = tot;
}

/* The draw of row b (a CTA per row): u = uniform * total; the chunk where the chunks'
 * running sum passes u; in it, the first kept id whose running sum exceeds u (the last kept
 * id of the chunk when rounding leaves none; the last kept id of the row when u passes all) */
__global__ void __launch_bounds__(SCT) k_chunk_draw(int32_t *out, const double *psum,
                                                    const float *pmax, int nc, const float *l,
                                                    size_t ld, int V, float T, const float *thr,
                                                    const unsigned char *keep, uint64_t seed,
                                                    uint64_t stream, uint64_t index,
                                                    const int32_t *index_dev)
{
    __shared__ float shf[32];
    __shared__ double shd[32];
    __shared__ double base_s, u_s;
    __shared__ int chunk_s, pick_s, last_s;
    const int b = blockIdx.x;
    const float mx = row_max(pmax, b, nc, shf);
    const float th = thr ? thr[b] : -INFINITY;
    if (threadIdx.x == 0) {
        const double *p = psum + (size_t)b * nc;
        double tot = 0;
        for (int c = 0; c < nc; c++)
            tot += p[c];
        if (index_dev)
            index += (uint64_t)(int64_t)*index_dev;
        const double u = philox_uniform_double(seed, stream + (uint64_t)b, index) * tot;
        double run = 0;
        int ch = -1, lastc = -1;
        for (int c = 0; c < nc; c++) {
            if (p[c] > 0)
                lastc = c;
            if (ch < 0 && p[c] > 0 && run + p[c] > u) {
                ch = c;
                break;
            }
            run += p[c];
        }
        chunk_s = ch >= 0 ? ch : lastc;
        base_s = ch >= 0 ? run : 0.0;
        u_s = ch >= 0 ? u : INFINITY; /* past every chunk: the last kept id */
        pick_s = 0x7fffffff;
        last_s = -1;
    }
    __syncthreads();
    const int ch = chunk_s;
    if (ch < 0) { /* nothing kept */
        if (threadIdx.x == 0)
            out[b] = 0;
        return;
    }
    const float *r = l + (size_t)b * ld;
    const unsigned char *kp = keep ? keep + (size_t)b * V : nullptr;
    const int j0 = ch * SCH + threadIdx.x * SPT;
    int last;
    const double s = thread_part(r, kp, V, T, th, mx, j0, &last);
    double excl;
    block_scan_double(s, &excl, shd);
    if (last >= 0)
        atomicMax(&last_s, last);
    const double u = u_s;
    double run = base_s + excl;
    if (s > 0)
        for (int i = 0; i < SPT; i++) {
            const int j = j0 + i;
            if (j >= V)
                break;
            const float z = r[j] / T;
            const bool kept = kp ? kp[j] != 0 : z >= th;
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
        out[b] = pick_s != 0x7fffffff ? pick_s : last_s;
}

/* arg-max in chunks: (value, id) of each chunk, then the row's in chunk order */
__global__ void __launch_bounds__(SCT) k_chunk_argmax(float *pv, int *pi, const float *l, size_t ld,
                                                      int V)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const int c = blockIdx.x, b = blockIdx.y, nc = gridDim.x;
    const float *r = l + (size_t)b * ld;
    float bv = -INFINITY;
    int bi = -1;
    const int j0 = c * SCH + threadIdx.x * SPT;
#pragma unroll
    for (int i = 0; i < SPT; i++) {
        const int j = j0 + i;
        if (j < V) {
            const float v = r[j];
            if (bi < 0 || v > bv) { /* ascending j: strict > keeps the lowest id */
                bv = v;
                bi = j;
            }
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_combine(bv, bi, v2, i2);
    }
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) {
        sv[w] = bv;
        si[w] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int k = 1; k < SCT / 32; k++)
            argmax_combine(bv, bi, sv[k], si[k]);
        pv[(size_t)b * nc + c] = bv;
        pi[(size_t)b * nc + c] = bi;
    }
}

__global__ void k_chunk_argmax_fin(int32_t *out, const float *pv, const int *pi, int nc)
{
    const int b = blockIdx.x;
    float bv = -INFINITY;
    int bi = -1;
    for (int c = threadIdx.x; c < nc; c += 32)
        argmax_combine(bv, bi, pv[(size_t)b * nc + c], pi[(size_t)b * nc + c]);
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
        const int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_combine(bv, bi, v2, i2);
    }
    if (threadIdx.x == 0)
        out[b] = bi < 0 ? 0 : bi;
}

/* lse[b] = mx + log(sum of exp(z - mx)) of row b from its chunks' maxima and sums (T = 1,
 * nothing masked), lp[b] = its log-prob of ids[b] */
__global__ void k_chunk_logp(float *lp, float *lse, const float *pmax, const double *psum, int nc,
                             const float *l, size_t ld, const int32_t *ids, int V)
{
    __shared__ float sh[32];
    const int b = blockIdx.x;
    const float mx = row_max(pmax, b, nc, sh);
    if (threadIdx.x == 0) {
        double s = 0;
        for (int c = 0; c < nc; c++)
            s += psum[(size_t)b * nc + c];
        const double ls = log(s);
        lse[b] = (float)(mx + ls);
        const int id = ids[b];
        lp[b] = id >= 0 && id < V ? (float)((double)(l[(size_t)b * ld + id] - mx) - ls) : 0.0f;
    }
}

/* mx[b] = the row's max kept z (top-p's input) */
__global__ void k_rows_max(float *mx, const float *pmax, int nc)
{
    __shared__ float sh[32];
    const float m = row_max(pmax, blockIdx.x, nc, sh);
    if (threadIdx.x == 0)
        mx[blockIdx.x] = m;
}

void cuda_op_sample(backend_t *be, be_ptr_t outp, be_ptr_t lp, size_t ld, int B, int V,
                    const be_sample_t *s)
{
    cu_sample(CU(be), iptr(outp), fptr(lp), ld, B, V, s, nullptr);
}

/* The passes' row scratch: thr, mx (B floats each), the chunks' maxima pmax (B nc floats),
 * then their sums psum (B nc doubles; greedy: arg-max pairs in the same bytes). */
typedef struct rowscr {
    float *thr, *mx, *pmax;
    double *psum;
    int nc;
} rowscr_t;

static bool row_scratch(cuda_t *c, int B, int V, rowscr_t *r)
{
    r->nc = (V + SCH - 1) / SCH;
    const size_t bn = (size_t)B * r->nc;
    const size_t hdr = ((2 * (size_t)B + bn) * sizeof(float) + 15) & ~(size_t)15;
    unsigned char *p = (unsigned char *)cu_scratch(c, CS_ROW, hdr + bn * sizeof(double));
    if (!p)
        return false;
    r->thr = (float *)p, r->mx = r->thr + B, r->pmax = r->mx + B;
    r->psum = (double *)(p + hdr);
    return true;
}

void cu_sample(cuda_t *c, int32_t *out, const float *l, size_t ld, int B, int V,
               const be_sample_t *s, const int32_t *index_dev)
{
    c->gen++; /* device memory changes: prepared GEMM operands are stale */
    rowscr_t r;
    if (B <= 0 || V <= 0 || !row_scratch(c, B, V, &r))
        return;
    const int nc = r.nc;
    float *thr = r.thr, *mx = r.mx, *pmax = r.pmax;
    double *psum = r.psum;
    const dim3 cg((unsigned)nc, (unsigned)B);
    if (!(s->temperature > 0)) {
        int *pi = (int *)psum;
        float *pv = (float *)(pi + (size_t)B * nc);
        k_chunk_argmax<<<cg, SCT, 0, c->st>>>(pv, pi, l, ld, V);
        cu_launched(c, "k_chunk_argmax");
        k_chunk_argmax_fin<<<B, 32, 0, c->st>>>(out, pv, pi, nc);
        cu_launched(c, "k_chunk_argmax_fin");
        return;
    }
    const float T = (float)s->temperature;
    const bool topk = s->top_k > 0 && s->top_k < V, topp = s->top_p > 0 && s->top_p < 1;
    if (topk || topp) {
        k_topk_thr<<<B, SB, 0, c->st>>>(thr, l, ld, V, T, s->top_k);
        cu_launched(c, "k_topk_thr");
    }
    const float *th = topk || topp ? thr : nullptr;
    k_chunk_max<<<cg, SCT, 0, c->st>>>(pmax, l, ld, V, T, th);
    cu_launched(c, "k_chunk_max");
    unsigned char *keep = nullptr;
    if (topp) {
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
        k_rows_max<<<B, SCT, 0, c->st>>>(mx, pmax, nc);
        cu_launched(c, "k_rows_max");
        k_topp<<<B, SB, 0, c->st>>>(keep, kout, vout, V, mx, s->top_p);
        cu_launched(c, "k_topp");
    }
    k_chunk_sum<<<cg, SCT, 0, c->st>>>(psum, pmax, l, ld, V, T, th, keep);
    cu_launched(c, "k_chunk_sum");
    k_chunk_draw<<<B, SCT, 0, c->st>>>(out, psum, pmax, nc, l, ld, V, T, th, keep, s->seed, s->stream,
                                       s->index, index_dev);
    cu_launched(c, "k_chunk_draw");
}

void cu_logp_rows(cuda_t *c, float *lp, float *lse, const float *l, size_t ld, const int32_t *ids,
                  int B, int V)
{
    rowscr_t r;
    if (B <= 0 || V <= 0 || !row_scratch(c, B, V, &r))
        return;
    const dim3 cg((unsigned)r.nc, (unsigned)B);
    k_chunk_max<<<cg, SCT, 0, c->st>>>(r.pmax, l, ld, V, 1.0f, nullptr);
    cu_launched(c, "k_chunk_max");
    k_chunk_sum<<<cg, SCT, 0, c->st>>>(r.psum, r.pmax, l, ld, V, 1.0f, nullptr, nullptr);
    cu_launched(c, "k_chunk_sum");
    k_chunk_logp<<<B, 32, 0, c->st>>>(lp, lse, r.pmax, r.psum, r.nc, l, ld, ids, V);
    cu_launched(c, "k_chunk_logp");
}
