/* cuda: what the CUDA backend offers beyond the op table (backend.h).
 *
 * The backend itself is opened with be_open("cuda") or be_cuda_open (backend.h). Built
 * without CUDA (no nvcc, `make CUDA=0`, and always in the sanitizer build), the same
 * functions exist in cuda_stub.c and report ERR_UNAVAILABLE ("built without CUDA"), so
 * callers need no #ifdef. This header is for tests, benchmarks and reports: device
 * facts, memory accounting, the choice of attention kernel and of MX GEMM path.
 */
#ifndef MXRLHF_BACKEND_CUDA_H
#define MXRLHF_BACKEND_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True when this build contains the CUDA backend (it may still find no device). */
bool be_cuda_built(void);

/* Facts about the device a CUDA backend runs on. */
typedef struct be_cuda_info {
    char name[256];          /* "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor;  /* compute capability */
    int sms;                 /* multiprocessors */
    size_t total_mem;        /* bytes of device memory */
    int runtime_version, driver_version; /* CUDA's encoding: 13000 = 13.0 */
} be_cuda_info_t;

/* Fails with ERR_INPUT when `be` is not a CUDA backend. */
int be_cuda_info(backend_t *be, be_cuda_info_t *out, err_t *e);

/* Device memory the backend holds through cudaMalloc (buffers, scratch, weight caches,
 * the cuBLASLt workspace): now and the most at any time since open or the last reset.
 * The CUDA context itself (a few hundred MiB per process) is not included. */
typedef struct be_cuda_mem {
    size_t current, peak;
} be_cuda_mem_t;

int be_cuda_mem(backend_t *be, be_cuda_mem_t *out, err_t *e);
void be_cuda_mem_reset_peak(backend_t *be);

/* Attention kernels. Blocks of >= 16 queries with head_dim 16, 32, 64 or 128 run on the
 * tensor cores; decoding (one query per row) and other shapes use the exact float32
 * kernel. Modes:
 *   FAST (default)  precision follows be_attn_t.compute: under bf16 / fp16 compute
 *                   (autocast's attention) cuDNN's fused flash attention where it applies
 *                   (training and prefill: queries at key positions 0..T-1, head_dim a
 *                   multiple of 8 up to 128; deterministic backward), else our 16-bit
 *                   tiles; under fp32 compute 3xTF32 tiles (float32 operands split into
 *                   two TF32 parts: errors near float32 rounding);
 *   ACCURATE        3xTF32 tiles whatever the compute type;
 *   TF32            one TF32 product (about 1e-3 relative error);
 *   EXACT           the float32 kernel on the CUDA cores everywhere (one block or warp
 *                   per query row; slow for long sequences);
 *   TILES           FAST without cuDNN: our 16-bit tiles under bf16 / fp16 compute;
 *   FAST_NONDET     FAST with cuDNN's non-deterministic backward (dQ accumulated with
 *                   atomics: faster, not the same bits run to run).
 * The environment variable MXRLHF_CUDA_ATTN=fast|accurate|tf32|exact|tiles|fast-nondet
 * sets it at open; MXRLHF_CUDNN=off keeps cuDNN from loading (src/backend/cuda_cudnn.cu
 * says where it is looked for). */
typedef enum be_cuda_attn {
    BE_CUDA_ATTN_FAST,
    BE_CUDA_ATTN_ACCURATE,
    BE_CUDA_ATTN_TF32,
    BE_CUDA_ATTN_EXACT,
    BE_CUDA_ATTN_TILES,
    BE_CUDA_ATTN_FAST_NONDET
} be_cuda_attn_t;

int be_cuda_set_attn(backend_t *be, be_cuda_attn_t mode, err_t *e);

/* MX GEMMs on the tensor cores (cuda_mxgemm.cu; docs/engine.md "MX GEMMs"). Two native
 * paths, both exact up to float32 summation order:
 *   - folded: both operands mxfp6 / mxfp4 (E4M3 elements), fp32 or bf16 compute, blocks a
 *     multiple of 8: the MX blocks of each 128-element chunk along K are refolded to one
 *     float32 scale (exact where the elements shift into E4M3, checked on the GPU) and
 *     cuBLASLt's FP8 GEMM with VEC128 block scaling runs (wgmma); where some chunk does
 *     not fold exactly, the per-block kernel runs that GEMM instead (decided on the GPU);
 *   - per block: any two MX formats with a common tensor-core type (E4M3: mxfp8_e4m3,
 *     mxfp6, mxfp4; E5M2: mxfp8_e5m2, either float one against the other; int8: mxint8,
 *     mxint4), blocks a multiple of 8: mma.sync per block, partial sums scaled in float32.
 * Modes: BE_CUDA_MXG_OFF (the default: measured faster and cheaper end to end on an H100,
 * docs/benchmarks.md) runs every MX GEMM emulated (fake quant, then a bf16 / fp16 / fp32
 * cuBLASLt GEMM); BE_CUDA_MXG_AUTO runs natively the pairs that fold and leaves the rest
 * to the emulation, which is faster than the per-block kernel on Hopper; BE_CUDA_MXG_ALL
 * runs every pair that maps natively. MXRLHF_CUDA_MXGEMM (0 / off, auto, all) sets the
 * mode at open; a device without FP8 tensor cores (compute capability < 8.9) is OFF
 * and refuses the others with ERR_UNAVAILABLE. be_cuda_mxgemm_native says whether a pair
 * of specs runs natively under the environment's mode (the `execution` labels), false in
 * a build without CUDA; set_mxgemm(on) is AUTO or OFF. The counters: MX GEMMs run
 * natively / left to the emulation since open (a linear layer is one GEMM forward and up
 * to two backward), how many of the native ones took the folded path, and of those how
 * many fell back to the per-block kernel (read from the device: synchronises). */
typedef enum { BE_CUDA_MXG_OFF, BE_CUDA_MXG_AUTO, BE_CUDA_MXG_ALL } be_cuda_mxg_t;
bool be_cuda_mxgemm_native(const mx_spec_t *a, const mx_spec_t *b, prec_compute_t compute);
int be_cuda_set_mxgemm(backend_t *be, bool on, err_t *e);
int be_cuda_set_mxgemm_mode(backend_t *be, be_cuda_mxg_t mode, err_t *e);
typedef struct be_cuda_mxgemm_stats {
    long native, emulated, folded, fold_fallbacks;
} be_cuda_mxgemm_stats_t;
int be_cuda_mxgemm_stats(backend_t *be, be_cuda_mxgemm_stats_t *out, err_t *e);
/* cuDNN's fused attention: the library the backend loaded at open (or why none), the
 * execution plans built so far (one per shape and direction, cached), and the calls that
 * ran through it. Calls count since open or since timing was last turned on; while
 * timing is on, fwd_ms / bwd_ms add up the device time of cuDNN's own executions (cuda
 * events around them; not the fp32 <-> 16-bit copies around them). be_cuda_cudnn waits
 * for the device when timing is on. */
typedef struct be_cuda_cudnn {
    int version;          /* cudnnGetVersion(): 91900 = 9.19.0; 0 when not loaded */
    char status[512];     /* "cuDNN 9.19.0 (for CUDA 13.0) from DIR" or why it is not used */
    int plans, failed;    /* plans built; shapes whose plan could not be built (they run
                             on our kernels) */
    long fwd_calls, bwd_calls;
    double fwd_ms, bwd_ms;
} be_cuda_cudnn_t;

int be_cuda_cudnn(backend_t *be, be_cuda_cudnn_t *out, err_t *e);
int be_cuda_cudnn_timing(backend_t *be, bool on, err_t *e);
/* one line per cached plan: direction, type, shape, engine, knobs, notes, workspace,
 * build time */
void be_cuda_cudnn_print(backend_t *be, FILE *f);
/* Decoding (be_dec_linear, and be_linear_fwd with at most BE_DEC_MAX_ROWS rows, docs/engine.md):
 *   PACKED (default)  linear layers whose specs be_dec_native accepts read their weight
 *                     from its packed MX codes and scales (or bf16) in a skinny tensor-core
 *                     GEMM that decodes them in registers; the rest as EMULATED;
 *   EMULATED          every linear layer through the cuBLASLt GEMM on fake-quantized
 *                     operands, as larger M (the reference the packed path is checked on).
 * MXRLHF_CUDA_DECODE=packed|emulated sets it at open. Decoding steps are recorded as a CUDA
 * graph (be_graph_begin) unless MXRLHF_CUDA_GRAPH=0 or be_cuda_set_graphs(be, false); the
 * decode kernels overlap their weight loads with the previous kernel (programmatic
 * dependent launch) unless MXRLHF_CUDA_PDL=0. */
typedef enum be_cuda_dec {
    BE_CUDA_DEC_PACKED,
    BE_CUDA_DEC_EMULATED
} be_cuda_dec_t;

int be_cuda_set_decode(backend_t *be, be_cuda_dec_t mode, err_t *e);
int be_cuda_set_graphs(backend_t *be, bool on, err_t *e);
/* Why recording or programmatic launches were turned off in this backend ("" when not). */
const char *be_cuda_decode_note(backend_t *be);
/* The packed decode copy of a weight cache, for tests: its element codes and E8M0 scales as
 * mx_pack_encode writes them (blocks along K). ERR_INPUT when it holds none or the sizes
 * differ from ncodes / nscales. */
int be_cuda_wcache_packed(backend_t *be, be_wcache_t *wc, void *codes, size_t ncodes,
                          void *scales, size_t nscales, err_t *e);

/* Per-op profile, for benchmarks: while on, every op waits for the device before and
 * after it and adds its wall time to its op's total (which serialises the stream: use
 * it to see where time goes, not to time). Turning it on clears the totals; print
 * writes a table of time and calls per op, largest first. */
int be_cuda_profile(backend_t *be, bool on, err_t *e);
void be_cuda_profile_print(backend_t *be, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
