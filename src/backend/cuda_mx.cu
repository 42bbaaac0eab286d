/* cuda_mx: MX fake quantization on the GPU, bit-exact with src/mx, and the preparation of
 * GEMM operands (quantize, round to the compute type, store as bf16 / fp16 / float32).
 *
 * Two passes, one thread per item: (1) every block's scale exponent from the largest
 * magnitude of its elements (mxc_scale_exp on the float bits); (2) every element
 * rounded with the exact definition (mxc_elem, src/mx/mx_core.h), its random word
 * for stochastic rounding being rng_u32(seed, stream, r * cols + c) as mx_fake_quant
 * defines it. Blocks run along rows (short block at the end of a row whose length is not
 * a multiple of the block) or down columns (short block at the bottom). Plain casts
 * (bf16, fp16, fp32) are one element-wise pass.
 */
#include "backend/cuda_internal.cuh"

/* float bits -> the stored type, after the compute rounding rc (0 none, 1 bf16, 2 fp16) */
template <int DT> struct store_t;
template <> struct store_t<DT_F32> {
    typedef float T;
    static __device__ __forceinline__ float make(uint32_t u) { return hd_u2f(u); }
};
template <> struct store_t<DT_BF16> {
    typedef __nv_bfloat16 T;
    /* u is already a bf16 value (its low 16 bits are zero) */
    static __device__ __forceinline__ __nv_bfloat16 make(uint32_t u)
    {
        __nv_bfloat16_raw r;
        r.x = (unsigned short)(u >> 16);
        return __nv_bfloat16(r);
    }
};
template <> struct store_t<DT_F16> {
    typedef __half T;
    /* u is already an fp16 value: the conversion is exact */
    static __device__ __forceinline__ __half make(uint32_t u) { return __float2half_rn(hd_u2f(u)); }
};

__device__ __forceinline__ uint32_t round_rc(uint32_t u, int rc)
{
    return rc == 1 ? mxc_cast_bf16(u) : rc == 2 ? mxc_cast_fp16(u) : u;
}

/* fmt: 0 identity, 1 bf16 cast, 2 fp16 cast */
template <int DT>
__global__ void k_cast(typename store_t<DT>::T *out, const uint32_t *in, size_t n, int fmt, int rc)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t u = in[i];
        u = fmt == 1 ? mxc_cast_bf16(u) : fmt == 2 ? mxc_cast_fp16(u) : u;
        out[i] = store_t<DT>::make(round_rc(u, rc));
    }
}

/* scale exponent of every block */
__global__ void k_mx_scales(int *sexp, const uint32_t *in, size_t rows, size_t cols,
                            mx_axis_t axis, int k, mxc_fmt_t f, mx_scale_rule_t rule,
                            size_t nblocks)
{
    for (size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x; b < nblocks;
         b += (size_t)gridDim.x * blockDim.x) {
        size_t start, len, stride;
        mxc_block_span(b, rows, cols, axis, k, &start, &len, &stride);
        uint32_t m = 0;
        for (size_t i = 0; i < len; i++) {
            uint32_t a = in[start + i * stride] & 0x7fffffffu;
            m = a > m ? a : m;
        }
        sexp[b] = mxc_scale_exp(&f, rule, m);
    }
}

/* every element; rows on y (looping), columns on x */
template <int DT>
__global__ void k_mx_elems(typename store_t<DT>::T *out, const uint32_t *in, const int *sexp,
                           size_t rows, size_t cols, mx_axis_t axis, int k, mxc_fmt_t f,
                           mx_round_t round,
                           uint64_t seed, uint64_t stream, int rc)
{
    for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
        for (size_t cc = (size_t)blockIdx.x * blockDim.x + threadIdx.x; cc < cols;
             cc += (size_t)gridDim.x * blockDim.x) {
            size_t i = r * cols + cc;
            size_t b = mxc_block_of(r, cc, cols, axis, k);
            uint32_t rnd = round == MX_ROUND_STOCHASTIC ? philox_u32(seed, stream, i) : 0;
            uint32_t u = mxc_elem_fast(&f, round, sexp[b], in[i], rnd);
            out[i] = store_t<DT>::make(round_rc(u, rc));
        }
    }
}

const int *cu_mx_scale_exps(cuda_t *c, const float *in, size_t rows, size_t cols, mx_axis_t axis,
                            const mx_spec_t *spec)
{
    const size_t nb = mxc_nblocks(rows, cols, axis, spec->block);
    int *sexp = (int *)cu_scratch(c, CS_SCALE, (nb ? nb : 1) * sizeof(int));
    if (!sexp || !nb)
        return sexp;
    k_mx_scales<<<cu_grid(nb, 128), 128, 0, c->st>>>(sexp, (const uint32_t *)in, rows, cols, axis,
                                                     spec->block, mxc_fmt(spec->format),
                                                     spec->scale, nb);
    cu_launched(c, "k_mx_scales");
    return sexp;
}

template <int DT>
static void prepare_t(cuda_t *c, void *out, const float *in, size_t rows, size_t cols,
                      mx_axis_t axis, const mx_spec_t *spec, int rc, uint64_t seed,
                      uint64_t stream)
{
    typedef typename store_t<DT>::T T;
    const size_t n = rows * cols;
    const uint32_t *ui = (const uint32_t *)in;
    const mx_format_info_t *fi = mx_format_info(spec->format);
    if (!fi->is_mx) {
        int fmt = spec->format == MX_BF16 ? 1 : spec->format == MX_FP16 ? 2 : 0;
        k_cast<DT><<<cu_grid(n, 256), 256, 0, c->st>>>((T *)out, ui, n, fmt, rc);
        cu_launched(c, "k_cast");
        return;
    }
    const int k = spec->block;
    const int *sexp = cu_mx_scale_exps(c, in, rows, cols, axis, spec);
    if (!sexp)
        return;
    mxc_fmt_t f = mxc_fmt(spec->format);
    dim3 grid((unsigned)((cols + 255) / 256 < 64 ? (cols + 255) / 256 : 64),
              (unsigned)(rows < 65535 ? rows : 65535));
    k_mx_elems<DT><<<grid, 256, 0, c->st>>>((T *)out, ui, sexp, rows, cols, axis, k, f,
                                            spec->round, seed, stream, rc);
    cu_launched(c, "k_mx_elems");
}

void cu_prepare(cuda_t *c, void *out, int dt, const float *in, size_t rows, size_t cols,
                mx_axis_t axis, const mx_spec_t *spec, prec_compute_t compute, uint64_t seed,
                uint64_t stream)
{
    if (!rows || !cols)
        return;
    int rc = compute == PREC_COMPUTE_BF16 ? 1 : compute == PREC_COMPUTE_FP16 ? 2 : 0;
    if (dt == DT_BF16)
        prepare_t<DT_BF16>(c, out, in, rows, cols, axis, spec, rc, seed, stream);
    else if (dt == DT_F16)
        prepare_t<DT_F16>(c, out, in, rows, cols, axis, spec, rc, seed, stream);
    else
        prepare_t<DT_F32>(c, out, in, rows, cols, axis, spec, rc, seed, stream);
}

void cuda_op_fake_quant(backend_t *be, be_ptr_t op, be_ptr_t ip, size_t rows, size_t cols,
                        mx_axis_t axis, const mx_spec_t *spec, uint64_t seed, uint64_t stream)
{
    CU(be)->gen++; /* device memory changes: prepared GEMM operands are stale */
    cuda_t *c = CU(be);
    if (mx_spec_is_identity(spec)) {
        if (vptr(op) != vptr(ip) && rows && cols)
            cu_check(c, cudaMemcpyAsync(vptr(op), vptr(ip), rows * cols * 4,
                                        cudaMemcpyDeviceToDevice, c->st), "fake quant copy");
        return;
    }
    cu_prepare(c, vptr(op), DT_F32, fptr(ip), rows, cols, axis, spec, PREC_COMPUTE_FP32, seed,
               stream);
}
