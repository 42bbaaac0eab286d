/* cuda_ops: the CUDA backend's element-wise, normalisation, loss and optimizer ops.
 *
 * Each op computes what backend_cpu.c computes, in float32 (double where the CPU sums in
 * double), with a fixed reduction order, so results are the same bits run to run; they
 * differ from the CPU's in the last bits where the summation order differs (block trees
 * instead of a running sum) and where nvcc contracts a*b+c into one rounding. Column
 * reductions (RMSNorm weight, bias and embedding gradients) sum in exactly the CPU's
 * order: fixed 64-row chunks, then the chunks in index order; tokens sharing an
 * embedding row are added in token order.
 */
#include <cub/cub.cuh>
#include <math.h>

#include "backend/cuda_internal.cuh"

#define RED_ROWS 64

/* ---- linear-layer helpers ------------------------------------------------------------ */

__device__ __forceinline__ float round_to(float v, int rc)
{
    return rc == 1 ? hd_u2f(mxc_cast_bf16(hd_f2u(v))) : rc == 2 ? hd_u2f(mxc_cast_fp16(hd_f2u(v))) : v;
}

static int rc_of(prec_compute_t ct)
{
    return ct == PREC_COMPUTE_BF16 ? 1 : ct == PREC_COMPUTE_FP16 ? 2 : 0;
}

__global__ void k_epilogue(float *y, const float *t, const float *b, int M, int N, int acc, int rc)
{
    const size_t n = (size_t)M * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = t[i];
        if (b)
            v += b[i % (size_t)N];
        v = round_to(v, rc);
        y[i] = acc ? y[i] + v : v;
    }
}

void cu_epilogue(cuda_t *c, float *y, const float *t, const float *b, int M, int N, bool acc,
                 prec_compute_t compute)
{
    size_t n = (size_t)M * N;
    if (!n)
        return;
    k_epilogue<<<cu_grid(n, 256), 256, 0, c->st>>>(y, t, b, M, N, acc, rc_of(compute));
    cu_launched(c, "k_epilogue");
}

/* part[ch][col] = sum over the chunk's rows of f(row, col), sequentially */
__global__ void k_colsum_part(float *part, const float *dy, int M, int N, int rc)
{
    const int ch = blockIdx.y;
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N)
        return;
    const int r1 = (ch + 1) * RED_ROWS < M ? (ch + 1) * RED_ROWS : M;
    float s = 0;
    for (int r = ch * RED_ROWS; r < r1; r++)
        s += round_to(dy[(size_t)r * N + col], rc);
    part[(size_t)ch * N + col] = s;
}

/* out[col] += sum over chunks, in order */
__global__ void k_colsum_final(float *out, const float *part, int nch, int N)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= N)
        return;
    float s = 0;
    for (int ch = 0; ch < nch; ch++)
        s += part[(size_t)ch * N + col];
    out[col] += s;
}

void cu_colsum_acc(cuda_t *c, float *db, const float *dy, int M, int N, prec_compute_t compute)
{
    if (M <= 0 || N <= 0)
        return;
    const int nch = (M + RED_ROWS - 1) / RED_ROWS;
    float *part = (float *)cu_scratch(c, CS_RED, (size_t)nch * N * 4);
    if (!part)
        return;
    for (int ch0 = 0; ch0 < nch; ch0 += 65535) {
        int nc = nch - ch0 < 65535 ? nch - ch0 : 65535;
        dim3 g((N + 127) / 128, nc);
        k_colsum_part<<<g, 128, 0, c->st>>>(part + (size_t)ch0 * N, dy + (size_t)ch0 * RED_ROWS * N,
                                            M - ch0 * RED_ROWS, N, rc_of(compute));
        cu_launched(c, "k_colsum_part");
    }
    k_colsum_final<<<(N + 127) / 128, 128, 0, c->st>>>(db, part, nch, N);
    cu_launched(c, "k_colsum_final");
}

/* ---- RMSNorm ---------------------------------------------------------------------------- */

__global__ void k_rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int C, float eps)
{
    __shared__ double sh[32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * C;
    double ss = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        ss += (double)xr[i] * xr[i];
    ss = block_sum(ss, sh);
    const float r = 1.0f / sqrtf((float)(ss / C) + eps);
    if (rstd && threadIdx.x == 0)
        rstd[row] = r;
    float *yr = y + row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        yr[i] = w[i] * (xr[i] * r);
}

void cuda_op_rmsnorm_fwd(backend_t *be, be_ptr_t y, be_ptr_t rstd, be_ptr_t x, be_ptr_t w, int N,
                         int C, float eps)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    for (int r0 = 0; r0 < N; r0 += 65535 * 16) {
        int n = N - r0 < 65535 * 16 ? N - r0 : 65535 * 16;
        k_rmsnorm_fwd<<<n, 256, 0, c->st>>>(fptr(y) + (size_t)r0 * C,
                                            be_null(rstd) ? nullptr : fptr(rstd) + r0,
                                            fptr(x) + (size_t)r0 * C, fptr(w), C, eps);
        cu_launched(c, "k_rmsnorm_fwd");
    }
}

__global__ void k_rmsnorm_bwd_dx(float *dx, int acc, const float *dy, const float *x, const float *w,
                                 const float *rs, int C)
{
    __shared__ double sh[32];
    const size_t row = blockIdx.x;
    const float *xr = x + row * C, *gr = dy + row * C;
    const float r = rs[row];
    double dot = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        dot += (double)gr[i] * w[i] * xr[i];
    dot = block_sum(dot, sh);
    const float k = (float)(dot / C) * r * r * r;
    float *o = dx + row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = r * (gr[i] * w[i]) - k * xr[i];
        o[i] = acc ? o[i] + v : v;
    }
}

__global__ void k_rmsnorm_dw_part(float *part, const float *dy, const float *x, const float *rs,
                                  int N, int C)
{
    const int ch = blockIdx.y;
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= C)
        return;
    const int n1 = (ch + 1) * RED_ROWS < N ? (ch + 1) * RED_ROWS : N;
    float p = 0;
    for (int n = ch * RED_ROWS; n < n1; n++)
        p += dy[(size_t)n * C + col] * (x[(size_t)n * C + col] * rs[n]);
    part[(size_t)ch * C + col] = p;
}

void cuda_op_rmsnorm_bwd(backend_t *be, be_ptr_t dx, bool dx_acc, be_ptr_t dw, be_ptr_t dy,
                         be_ptr_t x, be_ptr_t w, be_ptr_t rstd, int N, int C)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (N <= 0)
        return;
    if (!be_null(dx)) {
        for (int r0 = 0; r0 < N; r0 += 65535 * 16) {
            int n = N - r0 < 65535 * 16 ? N - r0 : 65535 * 16;
            k_rmsnorm_bwd_dx<<<n, 256, 0, c->st>>>(fptr(dx) + (size_t)r0 * C, dx_acc,
                                                   fptr(dy) + (size_t)r0 * C, fptr(x) + (size_t)r0 * C,
                                                   fptr(w), fptr(rstd) + r0, C);
            cu_launched(c, "k_rmsnorm_bwd_dx");
        }
    }
    if (!be_null(dw)) {
        const int nch = (N + RED_ROWS - 1) / RED_ROWS;
        float *part = (float *)cu_scratch(c, CS_RED, (size_t)nch * C * 4);
        if (!part)
            return;
        for (int ch0 = 0; ch0 < nch; ch0 += 65535) {
            int nc = nch - ch0 < 65535 ? nch - ch0 : 65535;
            dim3 g((C + 127) / 128, nc);
            size_t r0 = (size_t)ch0 * RED_ROWS;
            k_rmsnorm_dw_part<<<g, 128, 0, c->st>>>(part + (size_t)ch0 * C, fptr(dy) + r0 * C,
                                                    fptr(x) + r0 * C, fptr(rstd) + r0,
                                                    (int)(N - r0), C);
            cu_launched(c, "k_rmsnorm_dw_part");
        }
        k_colsum_final<<<(C + 127) / 128, 128, 0, c->st>>>(fptr(dw), part, nch, C);
        cu_launched(c, "k_colsum_final");
    }
}

/* ---- RoPE --------------------------------------------------------------------------------- */

__global__ void k_rope(float *x, const int32_t *pos, const float *ct, const float *st, int N,
                       int nheads, int D, int inverse)
{
    const int h = D / 2;
    const size_t total = (size_t)N * nheads * h;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(t % h);
        const size_t nh = t / h;
        const size_t n = nh / nheads;
        float *v = x + nh * D;
        const size_t pi = (size_t)pos[n] * h + i;
        float a = v[i], b = v[i + h], cs = ct[pi], sn = inverse ? -st[pi] : st[pi];
        v[i] = a * cs - b * sn;
        v[i + h] = b * cs + a * sn;
    }
}

void cuda_op_rope(backend_t *be, be_ptr_t x, be_ptr_t pos, be_ptr_t cos_t, be_ptr_t sin_t, int N,
                  int nheads, int D, bool inverse)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    size_t total = (size_t)N * nheads * (D / 2);
    if (!total)
        return;
    k_rope<<<cu_grid(total, 256), 256, 0, c->st>>>(fptr(x), iptr(pos), fptr(cos_t), fptr(sin_t), N,
                                                    nheads, D, inverse);
    cu_launched(c, "k_rope");
}

/* ---- SwiGLU --------------------------------------------------------------------------------- */

__global__ void k_swiglu_fwd(float *o, const float *g, const float *u, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void k_swiglu_bwd(float *dg, float *du, const float *d, const float *g, const float *u,
                             size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i];
        float s = 1.0f / (1.0f + expf(-gi));
        float silu = gi * s;
        float dd = d[i];
        float ui = u[i];
        du[i] = dd * silu;
        dg[i] = dd * ui * (s * (1.0f + gi * (1.0f - s)));
    }
}

void cuda_op_swiglu_fwd(backend_t *be, be_ptr_t out, be_ptr_t gate, be_ptr_t up, size_t n)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (!n)
        return;
    k_swiglu_fwd<<<cu_grid(n, 256), 256, 0, c->st>>>(fptr(out), fptr(gate), fptr(up), n);
    cu_launched(c, "k_swiglu_fwd");
}

void cuda_op_swiglu_bwd(backend_t *be, be_ptr_t dgate, be_ptr_t dup, be_ptr_t dout, be_ptr_t gate,
                        be_ptr_t up, size_t n)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (!n)
        return;
    k_swiglu_bwd<<<cu_grid(n, 256), 256, 0, c->st>>>(fptr(dgate), fptr(dup), fptr(dout), fptr(gate),
                                                     fptr(up), n);
    cu_launched(c, "k_swiglu_bwd");
}

/* ---- embedding ------------------------------------------------------------------------------ */

__global__ void k_embed_fwd(float *o, const float *t, const int32_t *ids, int N, int C)
{
    const size_t total = (size_t)N * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t n = i / C, cc = i % C;
        o[i] = t[(size_t)ids[n] * C + cc];
    }
}

void cuda_op_embed_fwd(backend_t *be, be_ptr_t out, be_ptr_t table, be_ptr_t ids, int N, int C)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    size_t total = (size_t)N * C;
    if (!total)
        return;
    k_embed_fwd<<<cu_grid(total, 256), 256, 0, c->st>>>(fptr(out), fptr(table), iptr(ids), N, C);
    cu_launched(c, "k_embed_fwd");
}

/* After a stable sort of (id, token) by id: the first position of each run of one id adds
 * that run's rows to the table row, in token order (the CPU's order). */
__global__ void k_embed_bwd_runs(float *dt, const float *d, const int32_t *ks, const int32_t *vs,
                                 int N, int C, int V)
{
    const int i = blockIdx.x;
    const int32_t key = ks[i];
    if ((i > 0 && ks[i - 1] == key) || key < 0 || key >= V)
        return;
    float *row = dt + (size_t)key * C;
    for (int cc = threadIdx.x; cc < C; cc += blockDim.x) {
        float acc = row[cc];
        for (int j = i; j < N && ks[j] == key; j++)
            acc += d[(size_t)vs[j] * C + cc];
        row[cc] = acc;
    }
}

__global__ void k_iota(int32_t *v, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        v[i] = i;
}

void cuda_op_embed_bwd(backend_t *be, be_ptr_t dtable, be_ptr_t dout, be_ptr_t ids, int N, int C,
                       int V)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (N <= 0 || C <= 0)
        return;
    size_t tmp = 0;
    int32_t *kin = iptr(ids);
    cub::DeviceRadixSort::SortPairs(nullptr, tmp, kin, (int32_t *)nullptr, (int32_t *)nullptr,
                                    (int32_t *)nullptr, N, 0, 32, c->st);
    size_t off = ((size_t)N * 4 + 255) & ~(size_t)255;
    unsigned char *s = (unsigned char *)cu_scratch(c, CS_SORT, 3 * off + tmp);
    if (!s)
        return;
    int32_t *kout = (int32_t *)s, *vin = (int32_t *)(s + off), *vout = (int32_t *)(s + 2 * off);
    k_iota<<<cu_grid(N, 256), 256, 0, c->st>>>(vin, N);
    cu_launched(c, "k_iota");
    if (!cu_check(c, cub::DeviceRadixSort::SortPairs(s + 3 * off, tmp, kin, kout, vin, vout, N, 0,
                                                     32, c->st), "sorting embedding ids"))
        return;
    k_embed_bwd_runs<<<N, 128, 0, c->st>>>(fptr(dtable), fptr(dout), kout, vout, N, C, V);
    cu_launched(c, "k_embed_bwd_runs");
}

/* ---- losses --------------------------------------------------------------------------------- */

/* (max, sum of exp(x - max)) pairs merged: the same fixed tree every time */
__device__ __forceinline__ void ms_merge(float &m, float &s, float m2, float s2)
{
    float mn = m > m2 ? m : m2;
    if (mn == -INFINITY)
        return; /* both empty */
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

/* max and sum of exp(x - max) of a row in one pass: each thread keeps a running pair
 * (rescaled when its maximum grows), then the pairs are merged over the block */
__device__ void row_max_sumexp(const float *r, int V, float *mx_out, double *s_out)
{
    __shared__ float shm[32], shs[32];
    float m = -INFINITY, s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float x = r[j];
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else {
            s += expf(x - m);
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_merge(m, s, m2, s2);
    }
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        shm[wid] = m;
        shs[wid] = s;
    }
    __syncthreads();
    m = lane < nw ? shm[lane] : -INFINITY;
    s = lane < nw ? shs[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        ms_merge(m, s, m2, s2);
    }
    *mx_out = m;
    *s_out = s;
}

__global__ void k_logsoftmax_gather(float *logp, float *lse, const float *l, const int32_t *ids, int V)
{
    const size_t n = blockIdx.x;
    const float *r = l + n * V;
    float mx;
    double s;
    row_max_sumexp(r, V, &mx, &s);
    if (threadIdx.x == 0) {
        double ls = log(s);
        lse[n] = (float)(mx + ls);
        if (logp) {
            int id = ids ? ids[n] : -1;
            logp[n] = (id >= 0 && id < V) ? (float)((double)(r[id] - mx) - ls) : 0.0f;
        }
    }
}

void cuda_op_logsoftmax_gather(backend_t *be, be_ptr_t logp, be_ptr_t lse, be_ptr_t logits,
                               be_ptr_t ids, int N, int V)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    for (int r0 = 0; r0 < N; r0 += 1 << 20) {
        int n = N - r0 < (1 << 20) ? N - r0 : 1 << 20;
        k_logsoftmax_gather<<<n, 512, 0, c->st>>>(be_null(logp) ? nullptr : fptr(logp) + r0,
                                                  fptr(lse) + r0, fptr(logits) + (size_t)r0 * V,
                                                  be_null(ids) ? nullptr : iptr(ids) + r0, V);
        cu_launched(c, "k_logsoftmax_gather");
    }
}

__global__ void k_entropy(float *ent, const float *l, const float *lse, int V)
{
    __shared__ double sh[32];
    const size_t n = blockIdx.x;
    const float *r = l + n * V;
    const float L = lse[n];
    double h = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float z = r[j] - L;
        h -= (double)(expf(z) * z);
    }
    h = block_sum(h, sh);
    if (threadIdx.x == 0)
        ent[n] = (float)h;
}

void cuda_op_entropy(backend_t *be, be_ptr_t ent, be_ptr_t logits, be_ptr_t lse, int N, int V)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    for (int r0 = 0; r0 < N; r0 += 1 << 20) {
        int n = N - r0 < (1 << 20) ? N - r0 : 1 << 20;
        k_entropy<<<n, 512, 0, c->st>>>(fptr(ent) + r0, fptr(logits) + (size_t)r0 * V,
                                        fptr(lse) + r0, V);
        cu_launched(c, "k_entropy");
    }
}

/* rows on y (looping), vocabulary on x */
__global__ void k_logits_bwd(float *dl, const float *l, const float *lse, const float *ent,
                             const int32_t *ids, const float *dlogp, const float *dent, int N, int V)
{
    for (int n = blockIdx.y; n < N; n += gridDim.y) {
        const float *r = l + (size_t)n * V;
        float *o = dl + (size_t)n * V;
        const float L = lse[n];
        const int id = ids ? ids[n] : -1;
        const float gl = (dlogp && id >= 0 && id < V) ? dlogp[n] : 0.0f;
        const float ge = dent ? dent[n] : 0.0f;
        const float El = (dent && ent) ? L - ent[n] : 0.0f;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < V; j += gridDim.x * blockDim.x) {
            float rj = r[j];
            float p = expf(rj - L);
            float d = -gl * p + ge * p * (El - rj);
            o[j] = j == id ? d + gl : d; /* r[j] read before o[j] written: aliasing is fine */
        }
    }
}

void cuda_op_logits_bwd(backend_t *be, be_ptr_t dlogits, be_ptr_t logits, be_ptr_t lse,
                        be_ptr_t ent, be_ptr_t ids, be_ptr_t dlogp, be_ptr_t dent, int N, int V)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (N <= 0 || V <= 0)
        return;
    dim3 g((unsigned)((V + 255) / 256 < 64 ? (V + 255) / 256 : 64),
           (unsigned)(N < 65535 ? N : 65535));
    k_logits_bwd<<<g, 256, 0, c->st>>>(fptr(dlogits), fptr(logits), fptr(lse),
                                       be_null(ent) ? nullptr : fptr(ent),
                                       be_null(ids) ? nullptr : iptr(ids),
                                       be_null(dlogp) ? nullptr : fptr(dlogp),
                                       be_null(dent) ? nullptr : fptr(dent), N, V);
    cu_launched(c, "k_logits_bwd");
}

/* ---- optimizer and reductions ------------------------------------------------------------------ */

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float gm, float decay,
                        float b1, float b2, float step_size, float bc2s, float eps)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i] * gm;
        float pi = p[i] * decay;
        float mi = m[i] + (1.0f - b1) * (gi - m[i]);
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (sqrtf(vi) / bc2s + eps));
    }
}

/* the same on 16-byte vectors (n4 of them) */
__global__ void k_adamw4(float4 *p, const float4 *g, float4 *m, float4 *v, size_t n4, float gm,
                         float decay, float b1, float b2, float step_size, float bc2s, float eps)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        float4 P = p[i], G = g[i], M = m[i], V = v[i];
        float *pp = &P.x, *gg = &G.x, *mm = &M.x, *vv = &V.x;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float gi = gg[k] * gm;
            float pi = pp[k] * decay;
            float mi = mm[k] + (1.0f - b1) * (gi - mm[k]);
            float vi = b2 * vv[k] + (1.0f - b2) * gi * gi;
            mm[k] = mi;
            vv[k] = vi;
            pp[k] = pi - step_size * (mi / (sqrtf(vi) / bc2s + eps));
        }
        p[i] = P, m[i] = M, v[i] = V;
    }
}

void cuda_op_adamw(backend_t *be, be_ptr_t p, be_ptr_t g, be_ptr_t m, be_ptr_t v, size_t n,
                   const be_adamw_t *h)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (!n)
        return;
    const double bc1 = 1.0 - pow(h->beta1, (double)h->step);
    const double bc2 = 1.0 - pow(h->beta2, (double)h->step);
    const float gm = (float)h->grad_mul, decay = (float)(1.0 - h->lr * h->weight_decay);
    const float b1 = (float)h->beta1, b2 = (float)h->beta2, ss = (float)(h->lr / bc1);
    const float bc2s = (float)sqrt(bc2), eps = (float)h->eps;
    const uintptr_t al = (uintptr_t)vptr(p) | (uintptr_t)vptr(g) | (uintptr_t)vptr(m) |
                         (uintptr_t)vptr(v);
    if (n % 4 == 0 && !(al & 15)) {
        k_adamw4<<<cu_grid(n / 4, 256), 256, 0, c->st>>>((float4 *)vptr(p), (const float4 *)vptr(g),
                                                         (float4 *)vptr(m), (float4 *)vptr(v), n / 4,
                                                         gm, decay, b1, b2, ss, bc2s, eps);
        cu_launched(c, "k_adamw4");
        return;
    }
    k_adamw<<<cu_grid(n, 256), 256, 0, c->st>>>(fptr(p), fptr(g), fptr(m), fptr(v), n, gm, decay,
                                                b1, b2, ss, bc2s, eps);
    cu_launched(c, "k_adamw");
}

#define SUMSQ_CHUNK 65536

__global__ void k_sumsq_part(double *part, const float *x, size_t n)
{
    __shared__ double sh[32];
    const size_t ch = blockIdx.x;
    const size_t i0 = ch * SUMSQ_CHUNK, i1 = i0 + SUMSQ_CHUNK < n ? i0 + SUMSQ_CHUNK : n;
    double s = 0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
        s += (double)x[i] * x[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0)
        part[ch] = s;
}

/* *out = part[0] + part[1] + ... in index order (one thread adds; the block stages loads) */
__global__ void k_sum_ordered(double *out, const double *part, size_t n)
{
    __shared__ double buf[1024];
    double s = 0;
    for (size_t b = 0; b < n; b += 1024) {
        size_t m = n - b < 1024 ? n - b : 1024;
        if (threadIdx.x < m)
            buf[threadIdx.x] = part[b + threadIdx.x];
        __syncthreads();
        if (threadIdx.x == 0)
            for (size_t i = 0; i < m; i++)
                s += buf[i];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        *out = s;
}

double cuda_op_sumsq(backend_t *be, be_ptr_t x, size_t n)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (!n)
        return 0.0;
    const size_t nch = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double *part = (double *)cu_scratch(c, CS_RED, (nch + 1) * sizeof(double));
    if (!part)
        return NAN;
    k_sumsq_part<<<(unsigned)nch, 256, 0, c->st>>>(part + 1, fptr(x), n);
    cu_launched(c, "k_sumsq_part");
    k_sum_ordered<<<1, 1024, 0, c->st>>>(part, part + 1, nch);
    cu_launched(c, "k_sum_ordered");
    double r = NAN;
    if (cu_check(c, cudaMemcpyAsync(&r, part, sizeof r, cudaMemcpyDeviceToHost, c->st), "sumsq") &&
        cu_check(c, cudaStreamSynchronize(c->st), "sumsq"))
        return r;
    return NAN;
}

__global__ void k_scale(float *x, float a, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= a;
}

void cuda_op_scale(backend_t *be, be_ptr_t x, float alpha, size_t n)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (!n)
        return;
    k_scale<<<cu_grid(n, 256), 256, 0, c->st>>>(fptr(x), alpha, n);
    cu_launched(c, "k_scale");
}
