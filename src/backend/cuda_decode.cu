/* cuda_decode: the rest of a decoding step on the GPU, and recording steps as graphs.
 *
 *  - be_dec_attn (k_dec_attn): flash-decoding. A CTA per (split of the visible keys, KV
 *    head, row): the group's query heads rotated in shared memory, the split's keys in
 *    chunks of KCH staged in shared memory, scores, an online softmax per head and the
 *    weighted values, all float32; the splits of a (row, KV head) are merged by the last
 *    CTA to finish, in split order (the same bits every run). The split that holds the new
 *    position t rotates this step's key and writes K and V into the caches. The cache index,
 *    the positions and the padding are read from device memory; the CTA stages its first
 *    chunk of cached keys before it waits for the previous kernel (the keys before t were
 *    written by earlier steps).
 *  - be_dec_sample: sampling (cuda_sample.cu) with the draw's index read from the device,
 *    the stop ids masked while the step is below min_new, the log-prob of the drawn id and
 *    the loop's record (k_dec_record).
 *  - graphs: be_graph_begin / end record the stream (cudaStreamBeginCapture); a recording
 *    that fails (an op that needs host work, an error) is dropped and reported as
 *    ERR_UNAVAILABLE, and the caller runs the step's ops directly.
 *  - cu_launch_pdl: the decode kernels' launches with programmatic dependent launch (a
 *    kernel starts while its predecessor finishes, loads what does not depend on it, then
 *    waits in griddepcontrol.wait).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda_internal.cuh"

void cu_launch_pdl(cuda_t *c, const void *fn, dim3 grid, dim3 block, size_t smem, void **args,
                   const char *what)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->st;
    cudaLaunchAttribute at[1] = {};
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = c->pdl ? 1 : 0;
    cu_check(c, cudaLaunchKernelExC(&cfg, fn, args), what);
}

/* ---- attention ------------------------------------------------------------------------------------ */

typedef struct dattn_args {
    const float *q, *k, *v, *cos_t, *sin_t;
    float *kc, *vc, *out, *ws;
    const int32_t *pos, *padl, *tp;
    int *cnt;
    int B, H, Hkv, D, S, G, NS, KCH;
    float scale;
} dattn_args_t;

/* rows of the key and value tiles in shared memory: D + 4 floats (16-byte rows for
 * cp.async when D % 4 == 0; the score loop's threads read different keys 4 banks apart) */
static __host__ __device__ int dattn_kp(int D) { return D + 4; }

/* splits a CTA merges: one a lane */
#define DATTN_MAX_SPLITS 32

/* shared memory of k_dec_attn, floats: keys and values (KCH, KP) each, queries (G, D + 1),
 * probabilities (G, KCH), outputs (G, D), per-head max, sum and rescale (3 G), the new key
 * and value (2 D), the merge's split factors (G, DATTN_MAX_SPLITS) */
static size_t dattn_smem(int D, int G, int KCH)
{
    return sizeof(float) * (2 * (size_t)KCH * dattn_kp(D) + (size_t)G * (D + 1) + (size_t)G * KCH +
                            (size_t)G * D + 3 * (size_t)G + 2 * (size_t)D +
                            (size_t)G * DATTN_MAX_SPLITS);
}

/* rows (G heads of pitch dp) of D values rotated at position pos: all heads at once */
__device__ __forceinline__ void rope_rows(float *dst, int dp, const float *src, int G, const float *ct,
                                          const float *st, int pos, int D)
{
    const int h2 = D / 2;
    for (int i = threadIdx.x; i < G * h2; i += blockDim.x) {
        const int h = i / h2, k = i % h2;
        const size_t pi = (size_t)pos * h2 + k;
        const float a = src[(size_t)h * D + k], b = src[(size_t)h * D + k + h2];
        const float cs = ct[pi], sn = st[pi];
        dst[(size_t)h * dp + k] = a * cs - b * sn;
        dst[(size_t)h * dp + k + h2] = b * cs + a * sn;
    }
}

__global__ void __launch_bounds__(128) k_dec_attn(const __grid_constant__ dattn_args_t a)
{
    extern __shared__ __align__(16) float sm[];
    __shared__ int last_s;
    const int sp = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, nw = blockDim.x >> 5;
    const int D = a.D, G = a.G, KCH = a.KCH, KP = dattn_kp(D), QP = D + 1;
    float *Ks = sm, *Vs = Ks + (size_t)KCH * KP, *qs = Vs + (size_t)KCH * KP, *ps = qs + (size_t)G * QP;
    float *os = ps + (size_t)G * KCH, *mh = os + (size_t)G * D, *lh = mh + G, *al = lh + G;
    float *knew = al + G, *vnew = knew + D, *fs = vnew + D;
    const size_t kvd = (size_t)a.Hkv * D;
    const size_t base = (size_t)b * a.S * kvd + (size_t)g * D; /* key j at base + j * kvd */

    /* the split's keys [j0, j1) of the visible [lo, t] (earlier kernels wrote t, pad_left) */
    const int t = *a.tp;
    if (t < 0 || t >= a.S)
        return; /* the host checks the cache length; never here */
    const int lo = a.padl[b] > 0 ? a.padl[b] : 0;
    const int n = t - lo + 1, per = (n + a.NS - 1) / a.NS;
    const int j0 = lo + sp * per, j1 = min(j0 + per, t + 1);

    /* rows [c0, c0 + cn) of the caches into Ks, Vs (keys before t only: t is this step's),
     * asynchronously 16 bytes at a time where rows allow */
    auto stage = [&](int c0, int cn) {
        if (D % 4 == 0) {
            const int q4 = D / 4;
            for (int i = tid; i < cn * q4; i += blockDim.x) {
                const int jj = i / q4, d = 4 * (i % q4), j = c0 + jj;
                if (j < t) {
                    cp_async16(Ks + (size_t)jj * KP + d, a.kc + base + (size_t)j * kvd + d);
                    cp_async16(Vs + (size_t)jj * KP + d, a.vc + base + (size_t)j * kvd + d);
                }
            }
        } else {
            for (int i = tid; i < cn * D; i += blockDim.x) {
                const int jj = i / D, d = i % D, j = c0 + jj;
                if (j < t) {
                    Ks[(size_t)jj * KP + d] = a.kc[base + (size_t)j * kvd + d];
                    Vs[(size_t)jj * KP + d] = a.vc[base + (size_t)j * kvd + d];
                }
            }
        }
    };
    if (j0 < j1)
        stage(j0, min(KCH, j1 - j0));

    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;");

    const int pb = a.pos[b];
    rope_rows(qs, QP, a.q + (size_t)b * a.H * D + (size_t)g * G * D, G, a.cos_t, a.sin_t, pb, D);
    for (int i = tid; i < G * D; i += blockDim.x)
        os[i] = 0.0f;
    for (int h = tid; h < G; h += blockDim.x) {
        mh[h] = -INFINITY;
        lh[h] = 0.0f;
    }
    const bool owns_t = j0 <= t && t < j1;
    if (owns_t) {
        rope_rows(knew, D, a.k + (size_t)b * kvd + (size_t)g * D, 1, a.cos_t, a.sin_t, pb, D);
        for (int d = tid; d < D; d += blockDim.x)
            vnew[d] = a.v[(size_t)b * kvd + (size_t)g * D + d];
        __syncthreads();
        for (int d = tid; d < D; d += blockDim.x) {
            a.kc[base + (size_t)t * kvd + d] = knew[d];
            a.vc[base + (size_t)t * kvd + d] = vnew[d];
        }
    }
    __syncthreads();

    for (int c0 = j0; c0 < j1; c0 += KCH) {
        const int cn = min(KCH, j1 - c0);
        if (c0 != j0) {
            __syncthreads(); /* the previous chunk's readers are done */
            stage(c0, cn);
        }
        cp_async_wait();
        if (t >= c0 && t < c0 + cn)
            for (int d = tid; d < D; d += blockDim.x) {
                Ks[(size_t)(t - c0) * KP + d] = knew[d];
                Vs[(size_t)(t - c0) * KP + d] = vnew[d];
            }
        __syncthreads();
        /* scores: neighbouring threads take neighbouring heads of one key */
        for (int i = tid; i < G * cn; i += blockDim.x) {
            const int h = i % G, jj = i / G;
            const float *qh = qs + (size_t)h * QP, *kr = Ks + (size_t)jj * KP;
            float s0 = 0.0f, s1 = 0.0f;
            int d = 0;
            for (; d + 2 <= D; d += 2) {
                s0 += qh[d] * kr[d];
                s1 += qh[d + 1] * kr[d + 1];
            }
            if (d < D)
                s0 += qh[d] * kr[d];
            ps[h * KCH + jj] = (s0 + s1) * a.scale;
        }
        __syncthreads();
        for (int h = warp; h < G; h += nw) {
            float mx = -INFINITY;
            for (int jj = lane; jj < cn; jj += 32)
                mx = fmaxf(mx, ps[h * KCH + jj]);
            mx = warp_max(mx);
            const float mn = fmaxf(mh[h], mx);
            float sum = 0.0f;
            for (int jj = lane; jj < cn; jj += 32) {
                const float p = expf(ps[h * KCH + jj] - mn);
                ps[h * KCH + jj] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                const float alpha = expf(mh[h] - mn); /* 0 for the first chunk (-inf) */
                lh[h] = lh[h] * alpha + sum;
                mh[h] = mn;
                al[h] = alpha;
            }
        }
        __syncthreads();
        for (int i = tid; i < G * D; i += blockDim.x) {
            const int h = i / D, d = i % D;
            const float *ph = ps + (size_t)h * KCH;
            float acc0 = 0.0f, acc1 = 0.0f;
            int jj = 0;
            for (; jj + 2 <= cn; jj += 2) {
                acc0 += ph[jj] * Vs[(size_t)jj * KP + d];
                acc1 += ph[jj + 1] * Vs[(size_t)(jj + 1) * KP + d];
            }
            if (jj < cn)
                acc0 += ph[jj] * Vs[(size_t)jj * KP + d];
            os[i] = os[i] * al[h] + (acc0 + acc1);
        }
    }
    __syncthreads();

    const size_t orow = (size_t)b * a.H * D + (size_t)g * G * D;
    if (a.NS == 1) {
        for (int i = tid; i < G * D; i += blockDim.x)
            a.out[orow + i] = os[i] / lh[i / D];
        return;
    }
    /* partial (o, m, l) per head; the last split of (b, g) to finish merges them */
    const size_t pw = (size_t)G * (D + 2), bg = (size_t)b * a.Hkv + g;
    float *mine = a.ws + (bg * a.NS + sp) * pw;
    for (int i = tid; i < G * D; i += blockDim.x)
        __stcg(mine + (i / D) * (D + 2) + i % D, os[i]);
    for (int h = tid; h < G; h += blockDim.x) {
        __stcg(mine + h * (D + 2) + D, mh[h]);
        __stcg(mine + h * (D + 2) + D + 1, lh[h]);
    }
    __threadfence();
    __syncthreads();
    if (tid == 0)
        last_s = atomicAdd(a.cnt + bg, 1) == a.NS - 1;
    __syncthreads();
    if (!last_s)
        return;
    __threadfence();
    const float *all = a.ws + bg * a.NS * pw;
    /* per head, a lane per split: the common max, each split's factor, the total */
    for (int h = warp; h < G; h += nw) {
        const bool in = lane < a.NS;
        const float l = in ? __ldcg(all + lane * pw + h * (D + 2) + D + 1) : 0.0f;
        const float m = in ? __ldcg(all + lane * pw + h * (D + 2) + D) : -INFINITY;
        const float M = warp_max(l > 0.0f ? m : -INFINITY); /* empty splits have l = 0 */
        const float f = l > 0.0f ? expf(m - M) : 0.0f;
        const float L = warp_sum(l * f);
        fs[h * DATTN_MAX_SPLITS + lane] = f;
        if (lane == 0)
            lh[h] = L;
    }
    __syncthreads();
    for (int i = tid; i < G * D; i += blockDim.x) {
        const int h = i / D, d = i % D;
        const float *fh = fs + h * DATTN_MAX_SPLITS;
        float O = 0.0f;
#pragma unroll 4
        for (int s = 0; s < a.NS; s++)
            O += __ldcg(all + s * pw + h * (D + 2) + d) * fh[s];
        a.out[orow + i] = O / lh[h];
    }
    if (tid == 0)
        a.cnt[bg] = 0;
}

void cuda_op_dec_attn(backend_t *be, const be_dec_attn_t *at)
{
    cuda_t *c = CU(be);
    c->gen++;
    if (at->B <= 0)
        return;
    if (at->H % at->Hkv || at->D % 2 || at->D > 256 || at->D < 2) {
        cu_fail(c, ERR_FAIL, "cuda backend: decoding attention with %d heads, %d KV heads, head "
                "dim %d (expected a multiple, even, at most 256)", at->H, at->Hkv, at->D);
        return;
    }
    dattn_args_t a;
    memset(&a, 0, sizeof a);
    a.q = fptr(at->q), a.k = fptr(at->k), a.v = fptr(at->v), a.cos_t = fptr(at->cos_t);
    a.sin_t = fptr(at->sin_t), a.kc = fptr(at->kc), a.vc = fptr(at->vc), a.out = fptr(at->out);
    a.pos = iptr(at->pos), a.padl = iptr(at->pad_left), a.tp = iptr(at->t);
    a.B = at->B, a.H = at->H, a.Hkv = at->Hkv, a.D = at->D, a.S = at->S, a.G = at->H / at->Hkv;
    a.scale = at->scale;
    /* splits: about four CTAs per multiprocessor, at least 16 cache positions per split, at
     * most DATTN_MAX_SPLITS */
    const int sms = c->prop.multiProcessorCount, pairs = at->B * at->Hkv;
    int NS = (4 * sms + pairs - 1) / pairs;
    NS = NS < at->S / 16 ? NS : at->S / 16;
    NS = NS < DATTN_MAX_SPLITS ? NS : DATTN_MAX_SPLITS;
    a.NS = NS < 1 ? 1 : NS;
    const size_t smax = c->prop.sharedMemPerBlockOptin - 2048;
    a.KCH = 64;
    while (a.KCH > 4 && dattn_smem(a.D, a.G, a.KCH) > smax)
        a.KCH /= 2;
    const size_t smem = dattn_smem(a.D, a.G, a.KCH);
    if (smem > smax) {
        cu_fail(c, ERR_FAIL, "cuda backend: decoding attention of %d heads x %d does not fit shared "
                "memory", a.G, a.D);
        return;
    }
    if (a.NS > 1) {
        a.ws = (float *)cu_scratch(c, CS_DECWS, (size_t)pairs * a.NS * a.G * (a.D + 2) * sizeof(float));
        a.cnt = cu_dec_counters(c, (size_t)pairs);
        if (!a.ws || !a.cnt)
            return;
    }
    if (smem > 48 * 1024 &&
        !cu_check(c, cudaFuncSetAttribute((const void *)k_dec_attn,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smax),
                  "decoding attention shared memory"))
        return;
    void *args[] = {&a};
    cu_launch_pdl(c, (const void *)k_dec_attn, dim3((unsigned)a.NS, (unsigned)at->Hkv, (unsigned)at->B),
                  dim3(128), smem, args, "k_dec_attn");
}

/* ---- sampling and the loop's record ------------------------------------------------------------------- */

/* while the step is below min_new: the stop ids' logits of row b set aside (restore = 0) or
 * put back (restore = 1, in reverse order, so a stop id listed twice gets its logit back) */
__global__ void k_dec_mask(float *logits, size_t ld, int B, const int32_t *stop, int nstop,
                           float *save, const int32_t *st, int min_new, int restore)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B || st[BE_DEC_STEP] >= min_new)
        return;
    float *r = logits + (size_t)b * ld;
    if (!restore) {
        for (int i = 0; i < nstop; i++) {
            save[(size_t)i * B + b] = r[stop[i]];
            r[stop[i]] = -INFINITY;
        }
    } else {
        for (int i = nstop - 1; i >= 0; i--)
            r[stop[i]] = save[(size_t)i * B + b];
    }
}

__global__ void k_dec_record(int32_t *st, const int32_t *ids, int32_t *pos, int32_t *done,
                             int32_t *len, int32_t *out, float *olp, const float *lp,
                             const int32_t *stop, int nstop, int B, int max_new)
{
    __shared__ int ndone;
    if (threadIdx.x == 0)
        ndone = 0;
    const int s = st[BE_DEC_STEP];
    __syncthreads();
    for (int b = threadIdx.x; b < B; b += blockDim.x) {
        if (!done[b] && s < max_new) {
            const int32_t id = ids[b];
            out[(size_t)b * max_new + s] = id;
            if (olp)
                olp[(size_t)b * max_new + s] = lp[b];
            len[b] = s + 1;
            int hit = 0;
            for (int i = 0; i < nstop; i++)
                hit |= id == stop[i];
            if (hit) {
                done[b] = 1;
                atomicAdd(&ndone, 1);
            }
        }
        pos[b] += 1;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        st[BE_DEC_NDONE] += ndone;
        st[BE_DEC_T] += 1;
        st[BE_DEC_STEP] = s + 1;
    }
}

void cuda_op_dec_sample(backend_t *be, const be_dec_sample_t *a)
{
    cuda_t *c = CU(be);
    c->gen++;
    const int B = a->B;
    if (B <= 0)
        return;
    int32_t *st = iptr(a->state);
    const bool mask = a->min_new > 0 && a->nstop > 0;
    const unsigned mg = (unsigned)((B + 127) / 128);
    if (mask) {
        k_dec_mask<<<mg, 128, 0, c->st>>>(fptr(a->logits), a->ld, B, iptr(a->stop), a->nstop,
                                         fptr(a->save), st, a->min_new, 0);
        cu_launched(c, "k_dec_mask");
    }
    const be_sample_t sp = {a->temperature, a->top_k, a->top_p, a->seed, a->stream, 0};
    cu_sample(c, iptr(a->ids), fptr(a->logits), a->ld, B, a->V, &sp, st + BE_DEC_STEP);
    if (mask) {
        k_dec_mask<<<mg, 128, 0, c->st>>>(fptr(a->logits), a->ld, B, iptr(a->stop), a->nstop,
                                         fptr(a->save), st, a->min_new, 1);
        cu_launched(c, "k_dec_mask");
    }
    if (!be_null(a->out_logp))
        cu_logp_rows(c, fptr(a->lp), fptr(a->lse), fptr(a->logits), a->ld, iptr(a->ids), B, a->V);
    k_dec_record<<<1, 1024, 0, c->st>>>(st, iptr(a->ids), iptr(a->pos), iptr(a->done),
                                        iptr(a->len), iptr(a->out), fptr(a->out_logp),
                                        fptr(a->lp), iptr(a->stop), a->nstop, B, a->max_new);
    cu_launched(c, "k_dec_record");
}

/* ---- graphs ---------------------------------------------------------------------------------------- */

struct be_graph {
    cudaGraph_t g;
    cudaGraphExec_t x;
};

int cuda_op_graph_begin(backend_t *be, err_t *e)
{
    cuda_t *c = CU(be);
    if (!c->graphs)
        return err_set(e, ERR_UNAVAILABLE, "cuda backend: recording is off (MXRLHF_CUDA_GRAPH=0)");
    if (c->profiling)
        return err_set(e, ERR_UNAVAILABLE, "cuda backend: no recording while profiling ops");
    if (c->err_code)
        return err_set(e, ERR_UNAVAILABLE, "cuda backend: an error is pending");
    cudaError_t r = cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal);
    if (r != cudaSuccess) {
        (void)cudaGetLastError();
        return err_set(e, ERR_UNAVAILABLE, "cuda backend: cannot record: %s", cudaGetErrorString(r));
    }
    c->capturing = true;
    c->cap_bad = false;
    c->gen++;
    return ERR_OK;
}

int cuda_op_graph_end(backend_t *be, be_graph_t **out, err_t *e)
{
    cuda_t *c = CU(be);
    *out = nullptr;
    cudaGraph_t g = nullptr;
    cudaError_t r = cudaStreamEndCapture(c->st, &g);
    c->capturing = false;
    c->gen++;
    cudaGraphExec_t x = nullptr;
    bool bad = r != cudaSuccess || c->cap_bad || c->err_code || !g;
    if (!bad) {
        r = cudaGraphInstantiate(&x, g, 0);
        bad = r != cudaSuccess;
    }
    if (bad) {
        snprintf(c->dec_note, sizeof c->dec_note, "recording a decoding step failed (%.60s%s%.100s)%s",
                 r != cudaSuccess ? cudaGetErrorString(r) : "",
                 c->cap_bad ? ", an op needed host work" : "", c->err_code ? c->err_msg : "",
                 c->pdl ? "; programmatic dependent launch turned off" : "");
        c->pdl = false; /* the likeliest culprit; the next recording goes without */
        if (g)
            cudaGraphDestroy(g);
        (void)cudaGetLastError();
        c->err_code = 0; /* errors of a dropped recording: nothing ran */
        c->err_msg[0] = 0;
        return err_set(e, ERR_UNAVAILABLE, "cuda backend: %s", c->dec_note);
    }
    be_graph_t *bg = (be_graph_t *)calloc(1, sizeof *bg);
    if (!bg) {
        cudaGraphExecDestroy(x);
        cudaGraphDestroy(g);
        return err_set(e, ERR_NOMEM, "cuda backend: out of memory for a graph");
    }
    bg->g = g;
    bg->x = x;
    *out = bg;
    return ERR_OK;
}

void cuda_op_graph_launch(backend_t *be, be_graph_t *g)
{
    cuda_t *c = CU(be);
    c->gen++;
    cu_check(c, cudaGraphLaunch(g->x, c->st), "launching a recorded step");
}

void cuda_op_graph_free(backend_t *be, be_graph_t *g)
{
    cuda_t *c = CU(be);
    cudaStreamSynchronize(c->st);
    cudaGraphExecDestroy(g->x);
    cudaGraphDestroy(g->g);
    free(g);
}
