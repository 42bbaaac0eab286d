/* cuda: what the CUDA backend offers beyond the op table (backend.h).
 *
 * The backend itself is opened with be_open("cuda") or be_cuda_open (backend.h). Built
 * without CUDA (no nvcc, `make CUDA=0`, and always in the sanitizer build), the same
 * functions exist in cuda_stub.c and report ERR_UNAVAILABLE ("built without CUDA"), so
 * callers need no #ifdef. This header is for tests, benchmarks and reports: device
 * facts, memory accounting and the choice of attention kernel.
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

/* Attention kernels. The tensor-core tiles serve blocks of >= 16 queries with head_dim 16,
 * 32, 64 or 128; decoding (one query per row) and other shapes use the exact float32
 * kernel. Modes:
 *   FAST (default)  tiles whose precision follows be_attn_t.compute: bf16 / fp16
 *                   operands under bf16 / fp16 compute (autocast's attention), 3xTF32
 *                   under fp32 compute (float32 operands split into two TF32 parts:
 *                   errors near float32 rounding);
 *   ACCURATE        3xTF32 tiles whatever the compute type;
 *   TF32            one TF32 product (about 1e-3 relative error);
 *   EXACT           the float32 kernel on the CUDA cores everywhere (one block or warp
 *                   per query row; slow for long sequences).
 * The environment variable MXRLHF_CUDA_ATTN=fast|accurate|tf32|exact sets it at open. */
typedef enum be_cuda_attn {
    BE_CUDA_ATTN_FAST,
    BE_CUDA_ATTN_ACCURATE,
    BE_CUDA_ATTN_TF32,
    BE_CUDA_ATTN_EXACT
} be_cuda_attn_t;

int be_cuda_set_attn(backend_t *be, be_cuda_attn_t mode, err_t *e);

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
