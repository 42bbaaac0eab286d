/* comm_nccl: the NCCL communicator, loaded at run time so that mxrlhf builds and runs
 * without NCCL (dlopen("libnccl.so.2"); the functions used are resolved by dlsym). The
 * types and constants below are NCCL 2's ABI as nccl.h declares it (checked against the
 * header when the compiler finds <nccl.h>).
 *
 * Bootstrap: the tcp star first (dist_tcp_connect), then rank 0's ncclGetUniqueId is
 * broadcast over it and every rank calls ncclCommInitRank on its device. NVLink multicast
 * (NVLS) stays off unless NCCL_NVLS_ENABLE is already set: setenv before NCCL reads it.
 *
 * Buffers: the interface takes host buffers; they are copied to a device staging buffer
 * (CUDA driver API from libcuda.so.1, on the device's primary context, which the CUDA
 * runtime shares), reduced there on a stream of our own, and copied back, in chunks of
 * STAGE_BYTES. Gradients that already live on the device make the round trip through the
 * host: correct, not fast (docs/distributed.md says so; NOT RUN on several GPUs). */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist_internal.h"

/* ---- NCCL 2's ABI (nccl.h) ---------------------------------------------------------------- */
typedef int nccl_result_t;            /* ncclResult_t, ncclSuccess = 0 */
typedef struct nccl_comm *nccl_comm_t;
typedef struct {
    char internal[128];               /* NCCL_UNIQUE_ID_BYTES */
} nccl_unique_id_t;
enum { NCCL_INT8 = 0, NCCL_FLOAT32 = 7, NCCL_FLOAT64 = 8 };
enum { NCCL_SUM = 0 };

#if defined(__has_include)
#if __has_include(<nccl.h>)
#include <nccl.h>
_Static_assert(NCCL_UNIQUE_ID_BYTES == sizeof(nccl_unique_id_t), "ncclUniqueId size");
_Static_assert((int)ncclInt8 == (int)NCCL_INT8 && (int)ncclFloat32 == (int)NCCL_FLOAT32 &&
               (int)ncclFloat64 == (int)NCCL_FLOAT64 && (int)ncclSum == (int)NCCL_SUM &&
               (int)ncclSuccess == 0, "NCCL constants");
#endif
#endif

/* ---- the CUDA driver API's ABI (cuda.h) --------------------------------------------------- */
typedef int cu_result_t;              /* CUresult, CUDA_SUCCESS = 0 */
typedef unsigned long long cu_devptr_t;
typedef struct cu_ctx *cu_ctx_t;
typedef struct cu_stream *cu_stream_t;

#define STAGE_BYTES ((size_t)64 << 20)

struct dist_nccl {
    void *lib, *cuda;
    nccl_comm_t comm;
    cu_stream_t stream;
    cu_devptr_t stage;
    int device;
    bool ctx_retained;
    nccl_result_t (*get_unique_id)(nccl_unique_id_t *);
    nccl_result_t (*init_rank)(nccl_comm_t *, int, nccl_unique_id_t, int);
    nccl_result_t (*all_reduce)(const void *, void *, size_t, int, int, nccl_comm_t, cu_stream_t);
    nccl_result_t (*all_gather)(const void *, void *, size_t, int, nccl_comm_t, cu_stream_t);
    nccl_result_t (*broadcast)(const void *, void *, size_t, int, int, nccl_comm_t, cu_stream_t);
    nccl_result_t (*destroy)(nccl_comm_t);
    const char *(*error_string)(nccl_result_t);
    nccl_result_t (*get_version)(int *);
    cu_result_t (*cu_init)(unsigned);
    cu_result_t (*cu_device_get)(int *, int);
    cu_result_t (*cu_ctx_retain)(cu_ctx_t *, int);
    cu_result_t (*cu_ctx_release)(int);
    cu_result_t (*cu_ctx_set)(cu_ctx_t);
    cu_result_t (*cu_alloc)(cu_devptr_t *, size_t);
    cu_result_t (*cu_free)(cu_devptr_t);
    cu_result_t (*cu_htod)(cu_devptr_t, const void *, size_t);
    cu_result_t (*cu_dtoh)(void *, cu_devptr_t, size_t);
    cu_result_t (*cu_stream_create)(cu_stream_t *, unsigned);
    cu_result_t (*cu_stream_sync)(cu_stream_t);
    cu_result_t (*cu_stream_destroy)(cu_stream_t);
};

static int sym(void *lib, const char *libname, const char *name, void *fn, err_t *e)
{
    void *p = dlsym(lib, name);
    if (!p)
        return err_set(e, ERR_UNAVAILABLE, "%s: no symbol %s (too old?)", libname, name);
    memcpy(fn, &p, sizeof p);
    return ERR_OK;
}

static int nccl_check(dist_comm_t *c, nccl_result_t r, const char *what, err_t *e)
{
    if (r == 0)
        return ERR_OK;
    return err_set(e, ERR_FAIL, "rank %d: NCCL %s: %s (%d)", c->rank, what,
                   c->nccl->error_string ? c->nccl->error_string(r) : "error", r);
}

static int cu_check(dist_comm_t *c, cu_result_t r, const char *what, err_t *e)
{
    if (r == 0)
        return ERR_OK;
    return err_set(e, ERR_FAIL, "rank %d: CUDA driver %s: error %d", c->rank, what, r);
}

static int load(dist_nccl_t *n, err_t *e)
{
    n->lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!n->lib)
        return err_set(e, ERR_UNAVAILABLE, "NCCL: cannot load libnccl.so.2 (%s): install NCCL "
                       "or set LD_LIBRARY_PATH", dlerror());
    n->cuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!n->cuda)
        return err_set(e, ERR_UNAVAILABLE, "NCCL: cannot load libcuda.so.1 (%s): no NVIDIA "
                       "driver?", dlerror());
    const char *L = "libnccl.so.2", *C = "libcuda.so.1";
    if (sym(n->lib, L, "ncclGetUniqueId", &n->get_unique_id, e) ||
        sym(n->lib, L, "ncclCommInitRank", &n->init_rank, e) ||
        sym(n->lib, L, "ncclAllReduce", &n->all_reduce, e) ||
        sym(n->lib, L, "ncclAllGather", &n->all_gather, e) ||
        sym(n->lib, L, "ncclBroadcast", &n->broadcast, e) ||
        sym(n->lib, L, "ncclCommDestroy", &n->destroy, e) ||
        sym(n->lib, L, "ncclGetErrorString", &n->error_string, e) ||
        sym(n->lib, L, "ncclGetVersion", &n->get_version, e) ||
        sym(n->cuda, C, "cuInit", &n->cu_init, e) ||
        sym(n->cuda, C, "cuDeviceGet", &n->cu_device_get, e) ||
        sym(n->cuda, C, "cuDevicePrimaryCtxRetain", &n->cu_ctx_retain, e) ||
        sym(n->cuda, C, "cuDevicePrimaryCtxRelease_v2", &n->cu_ctx_release, e) ||
        sym(n->cuda, C, "cuCtxSetCurrent", &n->cu_ctx_set, e) ||
        sym(n->cuda, C, "cuMemAlloc_v2", &n->cu_alloc, e) ||
        sym(n->cuda, C, "cuMemFree_v2", &n->cu_free, e) ||
        sym(n->cuda, C, "cuMemcpyHtoD_v2", &n->cu_htod, e) ||
        sym(n->cuda, C, "cuMemcpyDtoH_v2", &n->cu_dtoh, e) ||
        sym(n->cuda, C, "cuStreamCreate", &n->cu_stream_create, e) ||
        sym(n->cuda, C, "cuStreamSynchronize", &n->cu_stream_sync, e) ||
        sym(n->cuda, C, "cuStreamDestroy_v2", &n->cu_stream_destroy, e))
        return e->code;
    return ERR_OK;
}

void dist_nccl_free(dist_nccl_t *n)
{
    if (!n)
        return;
    if (n->comm && n->destroy)
        n->destroy(n->comm);
    if (n->stage && n->cu_free)
        n->cu_free(n->stage);
    if (n->stream && n->cu_stream_destroy)
        n->cu_stream_destroy(n->stream);
    if (n->ctx_retained && n->cu_ctx_release)
        n->cu_ctx_release(n->device);
    if (n->lib)
        dlclose(n->lib);
    if (n->cuda)
        dlclose(n->cuda);
    free(n);
}

int dist_comm_nccl(const dist_env_t *env, int device, dist_comm_t **out, err_t *e)
{
    *out = NULL;
    /* NCCL reads its environment at initialisation: before any NCCL call */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    dist_comm_t *c; /* one rank (a check of this path on one GPU): no tcp connection */
    if (env->size <= 1 ? dist_comm_self(&c, e) : dist_comm_tcp(env, &c, e))
        return e->code;
    c->kind = DIST_NCCL;
    dist_nccl_t *n = c->nccl = err_calloc(e, 1, sizeof *n, "NCCL state");
    int rc = n ? load(n, e) : e->code;
    /* every rank learns whether every rank loaded NCCL before any waits on NCCL */
    rc = dist_agree(c, rc, e);
    cu_ctx_t ctx = NULL;
    int dev = 0;
    if (!rc) {
        rc = cu_check(c, n->cu_init(0), "cuInit", e);
        if (!rc)
            rc = cu_check(c, n->cu_device_get(&dev, device), "cuDeviceGet", e);
        n->device = dev;
        if (!rc && !(rc = cu_check(c, n->cu_ctx_retain(&ctx, dev), "primary context", e)))
            n->ctx_retained = true;
        if (!rc)
            rc = cu_check(c, n->cu_ctx_set(ctx), "cuCtxSetCurrent", e);
        if (!rc)
            /* a blocking stream: ordered after the legacy stream's synchronous copies */
            rc = cu_check(c, n->cu_stream_create(&n->stream, 0), "stream", e);
        if (!rc)
            rc = cu_check(c, n->cu_alloc(&n->stage, STAGE_BYTES), "staging buffer", e);
        rc = dist_agree(c, rc, e);
    }
    nccl_unique_id_t id;
    memset(&id, 0, sizeof id);
    if (!rc && c->rank == 0)
        rc = nccl_check(c, n->get_unique_id(&id), "ncclGetUniqueId", e);
    rc = dist_agree(c, rc, e);
    if (!rc)
        rc = dist_tcp_broadcast(c, &id, sizeof id, 0, e);
    if (!rc)
        rc = nccl_check(c, n->init_rank(&n->comm, c->size, id, c->rank), "ncclCommInitRank", e);
    if (rc) {
        dist_comm_free(c);
        return rc;
    }
    *out = c;
    return ERR_OK;
}

/* ---- collectives through the staging buffer ------------------------------------------------ */

static int finish(dist_comm_t *c, const char *what, nccl_result_t r, err_t *e)
{
    if (nccl_check(c, r, what, e))
        return e->code;
    return cu_check(c, c->nccl->cu_stream_sync(c->nccl->stream), "stream synchronize", e);
}

int dist_nccl_allreduce(dist_comm_t *c, void *buf, size_t n, dist_dtype_t t, err_t *e)
{
    dist_nccl_t *g = c->nccl;
    const size_t es = dist_dtype_size(t), per = STAGE_BYTES / es;
    const int nt = t == DIST_F64 ? NCCL_FLOAT64 : NCCL_FLOAT32;
    for (size_t i0 = 0; i0 < n; i0 += per) {
        size_t m = n - i0 < per ? n - i0 : per;
        char *p = (char *)buf + i0 * es;
        if (cu_check(c, g->cu_htod(g->stage, p, m * es), "copy to the device", e) ||
            finish(c, "ncclAllReduce",
                   g->all_reduce((void *)(uintptr_t)g->stage, (void *)(uintptr_t)g->stage, m, nt,
                                 NCCL_SUM, g->comm, g->stream), e) ||
            cu_check(c, g->cu_dtoh(p, g->stage, m * es), "copy to the host", e))
            return e->code;
    }
    return ERR_OK;
}

int dist_nccl_allgather(dist_comm_t *c, const void *in, void *out, size_t bytes, err_t *e)
{
    dist_nccl_t *g = c->nccl;
    const size_t total = bytes * (size_t)c->size;
    if (total > STAGE_BYTES) /* small messages only (statistics, flags): the tcp star */
        return dist_tcp_allgather(c, in, out, bytes, e);
    cu_devptr_t mine = g->stage + (cu_devptr_t)c->rank * bytes;
    if (cu_check(c, g->cu_htod(mine, in, bytes), "copy to the device", e) ||
        finish(c, "ncclAllGather",
               g->all_gather((void *)(uintptr_t)mine, (void *)(uintptr_t)g->stage, bytes,
                             NCCL_INT8, g->comm, g->stream), e) ||
        cu_check(c, g->cu_dtoh(out, g->stage, total), "copy to the host", e))
        return e->code;
    return ERR_OK;
}

int dist_nccl_broadcast(dist_comm_t *c, void *buf, size_t bytes, int root, err_t *e)
{
    dist_nccl_t *g = c->nccl;
    for (size_t i0 = 0; i0 < bytes; i0 += STAGE_BYTES) {
        size_t m = bytes - i0 < STAGE_BYTES ? bytes - i0 : STAGE_BYTES;
        char *p = (char *)buf + i0;
        if ((c->rank == root && cu_check(c, g->cu_htod(g->stage, p, m), "copy to the device", e)) ||
            finish(c, "ncclBroadcast",
                   g->broadcast((void *)(uintptr_t)g->stage, (void *)(uintptr_t)g->stage, m,
                                NCCL_INT8, root, g->comm, g->stream), e) ||
            cu_check(c, g->cu_dtoh(p, g->stage, m), "copy to the host", e))
            return e->code;
    }
    return ERR_OK;
}
