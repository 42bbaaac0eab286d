/* cuda_cudnn: attention through cuDNN 9's fused flash attention (forward and backward),
 * for training and prefill under bf16 / fp16 compute.
 *
 * What it is not: a dependency. cuDNN is loaded with dlopen when the backend opens; when
 * it is absent, too old, switched off (MXRLHF_CUDNN=off) or cannot build a plan for a
 * shape, stderr gets one line saying so and cuda_attn.cu's own kernels run instead.
 *
 * Where cuDNN is looked for (the first directory holding libcudnn_graph.so.9 wins):
 * $CUDNN_PATH/{lib,lib64,.}; the loader's own search (LD_LIBRARY_PATH, ld.so.cache);
 * $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64; the Python wheel
 * nvidia-cudnn-cu1x (nvidia/cudnn/lib under the site-packages of $VIRTUAL_ENV,
 * $CONDA_PREFIX, /usr/local/lib/python3*, /usr/lib/python3, /opt/conda, ~/.local).
 * libcudnn_graph.so.9 holds the whole backend API; it finds its engine libraries and
 * NVRTC through its own RUNPATH ($ORIGIN and the wheel layout).
 *
 * The graphs are the ones cudnn-frontend's sdpa / sdpa_backward nodes lower to on
 * cuDNN 9.10-9.20 (CompositeSDPANode, CompositeSDPABackwardNode; include/cudnn_frontend/
 * node/scaled_dot_product_flash_attention.h), written out operation by operation below
 * with the same tensors, types, strides and attributes, since cuDNN's fused engine
 * recognises exactly that pattern.
 *
 * Our contract (backend.h) against cuDNN's:
 *  - Left padding. Query (b, i) sees keys pad_left[b] <= j <= i. cuDNN's padding mask is
 *    right padding: per-batch sequence lengths. Both the 16-bit copies of Q, K, V (and O,
 *    dO) are written shifted up by p = pad_left[b] (row i of the copy is row i + p of the
 *    input), so the real tokens start at row 0 and the batch row has length T - p:
 *    causal (top-left) with seq_len_q = seq_len_kv = T - p is then exactly our mask. The
 *    copy is needed anyway (be_attn_t is float32, cuDNN wants 16-bit), so the shift costs
 *    nothing; an index-comparison mask node would have to match the fused engine's
 *    pattern, which only knows the padding, causal and sliding-window forms. Outputs are
 *    shifted back; padding queries get zeros and lse = -inf, padding keys zero dK, dV.
 *    Lengths are clamped to at least 1 (a fully padded row runs one zero query against
 *    one zero key, whose results are dropped), so cuDNN never sees an empty sequence.
 *  - Layout. The copies are dense (B, S, heads * D) rows (cuDNN's BSHD), S = T rounded up
 *    to 64 so that nearby lengths share a plan; K and V arrive strided (training's rows or
 *    the KV cache) and are gathered by the same copy.
 *  - lse is cuDNN's Stats (natural-log log-sum-exp of the scaled scores, float32), kept
 *    in our (B, H, T) layout and shifted like the rows.
 *  - Reproducibility. The backward graph is the frontend's deterministic one
 *    (set_deterministic_algorithm: on Hopper dQ is written by its own pass from a dP
 *    workspace instead of float32 atomics); mode FAST_NONDET builds the atomic one.
 *
 * Shapes served: mode FAST / FAST_NONDET, compute bf16 or fp16, q0 == 0 and Tq == Tk >= 16
 * (training, prefill), head_dim a multiple of 8 in [16, 128], 16-byte aligned rows and
 * strides; cuDNN >= 9.10.2. Everything else returns false to cuda_attn.cu.
 * Plans are cached per (direction, type, B, S, H, Hkv, D), at most DNN_MAX_PLANS (least
 * recently used dropped). Everything runs on the backend's stream with no host sync after
 * a shape's first call (the scratch and the plan are made then), so a step stays
 * capturable as a CUDA graph.
 */
#include <dlfcn.h>
#include <glob.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <initializer_list>

#include "backend/cuda_internal.cuh"

#if __has_include(<cudnn_graph.h>)
#include <cudnn_graph.h>
#define HAVE_CUDNN 1
#else
#define HAVE_CUDNN 0
#endif

#if HAVE_CUDNN

#define DNN_MAX_PLANS 48
#define DNN_MIN_VERSION 91002 /* 9.10.2: the frontend refuses 9.10.0/9.10.1's SDPA */
#define DNN_EVENTS 256        /* timing: event pairs kept before they are read */

/* ---- the library ---------------------------------------------------------------------- */

typedef struct dnn_api {
    size_t (*GetVersion)(void);
    size_t (*GetCudartVersion)(void);
    const char *(*GetErrorString)(cudnnStatus_t);
    void (*GetLastErrorString)(char *, size_t);
    cudnnStatus_t (*Create)(cudnnHandle_t *);
    cudnnStatus_t (*Destroy)(cudnnHandle_t);
    cudnnStatus_t (*SetStream)(cudnnHandle_t, cudaStream_t);
    cudnnStatus_t (*CreateDescriptor)(cudnnBackendDescriptorType_t, cudnnBackendDescriptor_t *);
    cudnnStatus_t (*DestroyDescriptor)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*Finalize)(cudnnBackendDescriptor_t);
    cudnnStatus_t (*SetAttribute)(cudnnBackendDescriptor_t, cudnnBackendAttributeName_t,
                                  cudnnBackendAttributeType_t, int64_t, const void *);
    cudnnStatus_t (*GetAttribute)(cudnnBackendDescriptor_t const, cudnnBackendAttributeName_t,
                                  cudnnBackendAttributeType_t, int64_t, int64_t *, void *);
    cudnnStatus_t (*Execute)(cudnnHandle_t, cudnnBackendDescriptor_t, cudnnBackendDescriptor_t);
} dnn_api_t;

enum { K_FWD, K_BWD, K_BWD_NONDET, K_COUNT };
static const char *const KIND_NAME[K_COUNT] = {"fwd", "bwd", "bwd-nondet"};

typedef struct dnn_plan {
    int kind, B, S, H, Hkv, D, dt; /* the key; dt DT_BF16 or DT_F16 */
    bool ok;                       /* false: building failed, the shape runs on our kernels */
    cudnnBackendDescriptor_t plan;
    cudnnBackendDescriptor_t *descs; /* everything the plan was built from, kept alive */
    int ndesc;
    int64_t ws;                      /* cuDNN's workspace bytes */
    int64_t engine;
    char knobs[160], notes[120];
    double build_ms;
    uint64_t used;                   /* LRU stamp */
} dnn_plan_t;

struct cu_dnn {
    void *lib;
    dnn_api_t f;
    cudnnHandle_t h;
    int version;
    char status[512];
    dnn_plan_t plans[DNN_MAX_PLANS];
    int nplans, built, failed;
    uint64_t clock;
    long calls[2];
    /* timing: event pairs around executions, read by be_cuda_cudnn */
    bool timing;
    cudaEvent_t ev[2 * DNN_EVENTS];
    int ev_kind[DNN_EVENTS], nev, ev_made;
    double ms[2];
    /* host memory the variant packs' by-value scalars point at */
    float scale, neg_inf, one;
};

/* ---- loading ---------------------------------------------------------------------------- */

/* dlopen dir/libcudnn_graph.so.9 (dir "" = the loader's search) and resolve the API; on
 * failure a reason in why */
static void *dnn_try(const char *dir, dnn_api_t *f, char *why, size_t nwhy)
{
    char path[1024];
    if (*dir) {
        const int n = snprintf(path, sizeof path, "%s/libcudnn_graph.so.9", dir);
        if (n < 0 || n >= (int)sizeof path || access(path, R_OK))
            return nullptr;
    } else {
        snprintf(path, sizeof path, "libcudnn_graph.so.9");
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        if (*dir) /* present but unloadable: say why (the loader's search failing is normal) */
            snprintf(why, nwhy, "%s", dlerror());
        return nullptr;
    }
    struct {
        void **slot;
        const char *name;
    } sym[] = {
        {(void **)&f->GetVersion, "cudnnGetVersion"},
        {(void **)&f->GetCudartVersion, "cudnnGetCudartVersion"},
        {(void **)&f->GetErrorString, "cudnnGetErrorString"},
        {(void **)&f->GetLastErrorString, "cudnnGetLastErrorString"},
        {(void **)&f->Create, "cudnnCreate"},
        {(void **)&f->Destroy, "cudnnDestroy"},
        {(void **)&f->SetStream, "cudnnSetStream"},
        {(void **)&f->CreateDescriptor, "cudnnBackendCreateDescriptor"},
        {(void **)&f->DestroyDescriptor, "cudnnBackendDestroyDescriptor"},
        {(void **)&f->Finalize, "cudnnBackendFinalize"},
        {(void **)&f->SetAttribute, "cudnnBackendSetAttribute"},
        {(void **)&f->GetAttribute, "cudnnBackendGetAttribute"},
        {(void **)&f->Execute, "cudnnBackendExecute"},
    };
    for (size_t i = 0; i < sizeof sym / sizeof sym[0]; i++) {
        *sym[i].slot = dlsym(h, sym[i].name);
        if (!*sym[i].slot) {
            if (snprintf(why, nwhy, "%s has no %s", path, sym[i].name) < 0)
                why[0] = 0;
            dlclose(h);
            return nullptr;
        }
    }
    return h;
}

/* the directories to try, in order (see the top of the file); n entries of dirs[][512] */
static int dnn_dirs(char (*dirs)[512], int cap)
{
    int n = 0;
    auto add = [&](const char *a, const char *b) {
        if (n < cap && a)
            snprintf(dirs[n++], 512, "%s%s", a, b);
    };
    const char *cp = getenv("CUDNN_PATH");
    if (cp && *cp) {
        add(cp, "/lib");
        add(cp, "/lib64");
        add(cp, "");
    }
    add("", ""); /* the loader's search */
    add(getenv("CUDA_HOME"), "/lib64");
    add(getenv("CUDA_PATH"), "/lib64");
    add("/usr/local/cuda/lib64", "");
    const char *pre[] = {getenv("VIRTUAL_ENV"), getenv("CONDA_PREFIX"), "/usr/local", "/usr",
                         "/opt/conda"};
    char pat[640];
    for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++) {
        if (!pre[i] || !*pre[i])
            continue;
        for (const char *sp : {"site-packages", "dist-packages"}) {
            snprintf(pat, sizeof pat, "%s/lib/python3*/%s/nvidia/cudnn/lib", pre[i], sp);
            glob_t g;
            if (!glob(pat, 0, nullptr, &g))
                for (size_t k = 0; k < g.gl_pathc; k++)
                    add(g.gl_pathv[k], "");
            globfree(&g);
        }
    }
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(pat, sizeof pat, "%s/.local/lib/python3*/site-packages/nvidia/cudnn/lib", home);
        glob_t g;
        if (!glob(pat, 0, nullptr, &g))
            for (size_t k = 0; k < g.gl_pathc; k++)
                add(g.gl_pathv[k], "");
        globfree(&g);
    }
    return n;
}

static bool attn_cudnn_mode(const cuda_t *c)
{
    return c->attn == BE_CUDA_ATTN_FAST || c->attn == BE_CUDA_ATTN_FAST_NONDET;
}

void cu_dnn_open(cuda_t *c)
{
    cu_dnn_t *d = (cu_dnn_t *)calloc(1, sizeof *d);
    if (!d)
        return; /* no state: the attention calls fall back, be_cuda_cudnn says so */
    c->dnn = d;
    d->neg_inf = -INFINITY;
    d->one = 1.0f;
    const char *env = getenv("MXRLHF_CUDNN");
    if (env && !strcmp(env, "off")) {
        snprintf(d->status, sizeof d->status, "cuDNN not used: MXRLHF_CUDNN=off");
        return; /* asked for: no line on stderr */
    }
    char dirs[24][512], why[400] = "", where[512] = "";
    const int nd = dnn_dirs(dirs, 24);
    for (int i = 0; i < nd && !d->lib; i++)
        d->lib = dnn_try(dirs[i], &d->f, why, sizeof why);
    Dl_info info;
    if (d->lib)
        snprintf(where, sizeof where, "%s", dladdr((void *)d->f.GetVersion, &info) &&
                 info.dli_fname ? info.dli_fname : "libcudnn_graph.so.9");
    if (!d->lib) {
        snprintf(d->status, sizeof d->status, "cuDNN not found (no libcudnn_graph.so.9 in "
                 "$CUDNN_PATH, the loader's path, the CUDA toolkit or Python's nvidia-cudnn%s%s)",
                 *why ? "; " : "", why);
    } else {
        d->version = (int)d->f.GetVersion();
        const int cv = (int)d->f.GetCudartVersion();
        cudnnStatus_t st = CUDNN_STATUS_SUCCESS;
        if (d->version / 10000 != 9 || d->version < DNN_MIN_VERSION) {
            snprintf(d->status, sizeof d->status, "cuDNN %d.%d.%d from %s is not supported "
                     "(need 9.x >= 9.10.2)", d->version / 10000, d->version / 100 % 100,
                     d->version % 100, where);
        } else if ((st = d->f.Create(&d->h)) != CUDNN_STATUS_SUCCESS ||
                   (st = d->f.SetStream(d->h, c->st)) != CUDNN_STATUS_SUCCESS) {
            snprintf(d->status, sizeof d->status, "cuDNN %d from %s did not start: %s",
                     d->version, where, d->f.GetErrorString(st));
            if (d->h)
                d->f.Destroy(d->h);
            d->h = nullptr;
        } else {
            snprintf(d->status, sizeof d->status, "cuDNN %d.%d.%d (for CUDA %d.%d) from %s",
                     d->version / 10000, d->version / 100 % 100, d->version % 100, cv / 1000,
                     cv / 10 % 100, where);
            return;
        }
        dlclose(d->lib);
        d->lib = nullptr;
        d->version = 0;
    }
    fprintf(stderr, "mxrlhf cuda: %s; attention uses the built-in kernels\n", d->status);
}

static void plan_drop(cu_dnn_t *d, dnn_plan_t *p)
{
    if (p->plan)
        d->f.DestroyDescriptor(p->plan);
    for (int i = p->ndesc - 1; i >= 0; i--)
        d->f.DestroyDescriptor(p->descs[i]);
    free(p->descs);
    memset(p, 0, sizeof *p);
}

void cu_dnn_close(cuda_t *c)
{
    cu_dnn_t *d = c->dnn;
    if (!d)
        return;
    for (int i = 0; i < d->nplans; i++)
        plan_drop(d, &d->plans[i]);
    for (int i = 0; i < d->ev_made; i++)
        cudaEventDestroy(d->ev[i]);
    if (d->h)
        d->f.Destroy(d->h);
    if (d->lib)
        dlclose(d->lib);
    free(d);
    c->dnn = nullptr;
}

/* ---- building graphs: every descriptor set and checked, the first failure named --------- */

/* snprintf at buf + *at, never past cap */
static void app(char *buf, size_t cap, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void app(char *buf, size_t cap, size_t *at, const char *fmt, ...)
{
    if (*at >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *at, cap - *at, fmt, ap);
    va_end(ap);
    if (n > 0)
        *at = *at + (size_t)n < cap ? *at + (size_t)n : cap;
}

typedef struct gb {
    cu_dnn_t *d;
    cudnnBackendDescriptor_t *v; /* every descriptor made, in order */
    int n, cap;
    cudnnBackendDescriptor_t ops[64];
    int nops;
    int64_t vuid; /* next uid for a virtual tensor */
    bool bad;
    char err[640];
} gb_t;

static void gb_fail(gb_t *g, cudnnStatus_t st, const char *what, const char *attr)
{
    if (g->bad)
        return;
    g->bad = true;
    char last[256] = "";
    g->d->f.GetLastErrorString(last, sizeof last);
    snprintf(g->err, sizeof g->err, "%s%s%s: %s%s%s", what, attr ? ": " : "", attr ? attr : "",
             g->d->f.GetErrorString(st), *last ? " (" : "", *last ? last : "");
    if (*last)
        strncat(g->err, ")", sizeof g->err - strlen(g->err) - 1);
}

static cudnnBackendDescriptor_t gb_make(gb_t *g, cudnnBackendDescriptorType_t t, const char *what)
{
    if (g->bad)
        return nullptr;
    if (g->n == g->cap) {
        int nc = g->cap ? 2 * g->cap : 128;
        void *nv = realloc(g->v, (size_t)nc * sizeof *g->v);
        if (!nv) {
            g->bad = true;
            snprintf(g->err, sizeof g->err, "%s: out of host memory", what);
            return nullptr;
        }
        g->v = (cudnnBackendDescriptor_t *)nv;
        g->cap = nc;
    }
    cudnnBackendDescriptor_t x = nullptr;
    cudnnStatus_t st = g->d->f.CreateDescriptor(t, &x);
    if (st != CUDNN_STATUS_SUCCESS) {
        gb_fail(g, st, what, "cudnnBackendCreateDescriptor");
        return nullptr;
    }
    g->v[g->n++] = x;
    return x;
}

static void gb_set_(gb_t *g, cudnnBackendDescriptor_t x, cudnnBackendAttributeName_t a,
                    cudnnBackendAttributeType_t t, int64_t n, const void *p, const char *what,
                    const char *aname)
{
    if (g->bad)
        return;
    cudnnStatus_t st = g->d->f.SetAttribute(x, a, t, n, p);
    if (st != CUDNN_STATUS_SUCCESS)
        gb_fail(g, st, what, aname);
}
#define SET(g, x, A, T, n, p, what) gb_set_(g, x, A, T, n, p, what, #A)
/* an attribute that is one backend descriptor (the tensors and sub-descriptors of an op) */
#define SETD(g, x, A, d, what) gb_set_(g, x, A, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &(d), what, #A)

static void gb_fin(gb_t *g, cudnnBackendDescriptor_t x, const char *what)
{
    if (g->bad)
        return;
    cudnnStatus_t st = g->d->f.Finalize(x);
    if (st != CUDNN_STATUS_SUCCESS)
        gb_fail(g, st, what, "cudnnBackendFinalize");
}

static void gb_op(gb_t *g, cudnnBackendDescriptor_t op, const char *what)
{
    if (g->bad)
        return;
    if (g->nops == (int)(sizeof g->ops / sizeof g->ops[0])) {
        g->bad = true;
        snprintf(g->err, sizeof g->err, "%s: too many operations", what);
        return;
    }
    g->ops[g->nops++] = op;
}

enum { T_VIRT = 1, T_BYVAL = 2 };

/* a 4-D tensor, as cudnn-frontend's TensorBuilder sets it (alignment 16) */
static cudnnBackendDescriptor_t gb_tensor(gb_t *g, const char *name, int64_t uid,
                                          cudnnDataType_t dt, const int64_t dim[4],
                                          const int64_t str[4], int flags)
{
    cudnnBackendDescriptor_t x = gb_make(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR, name);
    const int64_t align = 16;
    const bool yes = true;
    SET(g, x, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, name);
    SET(g, x, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim, name);
    SET(g, x, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, str, name);
    SET(g, x, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, name);
    SET(g, x, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, name);
    if (flags & T_VIRT)
        SET(g, x, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes, name);
    if (flags & T_BYVAL)
        SET(g, x, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, name);
    gb_fin(g, x, name);
    return x;
}

static cudnnBackendDescriptor_t gb_virt(gb_t *g, const char *name, cudnnDataType_t dt,
                                        const int64_t dim[4], const int64_t str[4])
{
    return gb_tensor(g, name, g->vuid++, dt, dim, str, T_VIRT);
}

/* a pointwise operation y = mode(x[, b[, t]]) as the frontend's PointwiseNode lowers it;
 * axis >= 0 only for GEN_INDEX */
static void gb_pw(gb_t *g, const char *name, cudnnPointwiseMode_t mode, cudnnDataType_t math,
                  int64_t axis, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                  cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y)
{
    cudnnBackendDescriptor_t pd = gb_make(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, name);
    SET(g, pd, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, name);
    SET(g, pd, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math, name);
    if (mode == CUDNN_POINTWISE_GEN_INDEX)
        SET(g, pd, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, name);
    gb_fin(g, pd, name);
    cudnnBackendDescriptor_t op = gb_make(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, name);
    const float one = 1.0f;
    SETD(g, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pd, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, name);
    if (b)
        SETD(g, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b, name);
    if (t)
        SETD(g, op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t, name);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, name);
    SET(g, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, name);
    gb_fin(g, op, name);
    gb_op(g, op, name);
}

/* c = a . b (batched over the first two dims, broadcasting b's heads for GQA), float32
 * compute, with the GEMM's M / N / K taken from the per-batch length tensors given */
static void gb_mm(gb_t *g, const char *name, cudnnBackendDescriptor_t a,
                  cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
                  cudnnBackendDescriptor_t m_ov, cudnnBackendDescriptor_t n_ov,
                  cudnnBackendDescriptor_t k_ov)
{
    cudnnBackendDescriptor_t md = gb_make(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR, name);
    const cudnnDataType_t ct = CUDNN_DATA_FLOAT;
    SET(g, md, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &ct, name);
    gb_fin(g, md, name);
    cudnnBackendDescriptor_t op = gb_make(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, md, name);
    if (m_ov)
        SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_ov, name);
    if (n_ov)
        SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_ov, name);
    if (k_ov)
        SETD(g, op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_ov, name);
    gb_fin(g, op, name);
    gb_op(g, op, name);
}

/* y = reduce(x) over the dims where y has extent 1, float32 compute */
static void gb_red(gb_t *g, const char *name, cudnnReduceTensorOp_t rop,
                   cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y)
{
    cudnnBackendDescriptor_t rd = gb_make(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, name);
    const cudnnDataType_t ct = CUDNN_DATA_FLOAT;
    SET(g, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &ct, name);
    SET(g, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &rop, name);
    if (g->d->version >= 91100) { /* the frontend sets it (false) from 9.11 on */
        const bool no = false;
        SET(g, rd, CUDNN_ATTR_REDUCTION_IS_DETERMINISTIC, CUDNN_TYPE_BOOLEAN, 1, &no, name);
    }
    gb_fin(g, rd, name);
    cudnnBackendDescriptor_t op = gb_make(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y, name);
    gb_fin(g, op, name);
    gb_op(g, op, name);
}

/* y: a view of x with other dims / strides (the transposes of P, dS and K) */
static void gb_reshape(gb_t *g, const char *name, cudnnBackendDescriptor_t x,
                       cudnnBackendDescriptor_t y)
{
    cudnnBackendDescriptor_t op = gb_make(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x, name);
    SETD(g, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y, name);
    gb_fin(g, op, name);
    gb_op(g, op, name);
}

/* uids of the tensors the variant pack names (the virtual ones count up from 100) */
enum {
    U_Q = 1, U_K, U_V, U_O, U_STATS, U_SEQ_Q, U_SEQ_KV, U_SCALE, U_NINF_PAD, U_NINF_CAUSAL,
    U_DO, U_DQ, U_DK, U_DV, U_SOFTMAX_SUM, U_DQ_ACCUM, U_ONE, U_VIRTUAL = 100
};

typedef struct shape {
    int kind, B, S, H, Hkv, D, dt;
} shape_t;

/* the tensors both directions share, with the frontend's dims and strides:
 * Q, O, dO, dQ (b, hq, s, d) in BSHD rows; K given transposed (b, hk, d, s) like the
 * frontend's K -> KT swap; V (b, hk, s, d) forward, transposed (b, hk, d, s) backward. */
typedef struct common {
    cudnnBackendDescriptor_t q, kt, v, o, stats, sq, skv, scale, ninf_pad, ninf_causal;
    int64_t sd[4], ss[4]; /* scores (b, hq, s, s), row-major */
    int64_t rd[4], rs[4]; /* per-row statistics (b, hq, s, 1) */
    cudnnDataType_t io;
} common_t;

static void gb_common(gb_t *g, const shape_t *s, common_t *t, bool v_transposed)
{
    const int64_t b = s->B, hq = s->H, hk = s->Hkv, S = s->S, d = s->D;
    t->io = s->dt == DT_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    const int64_t qd[4] = {b, hq, S, d}, qs[4] = {S * hq * d, d, hq * d, 1};
    const int64_t ktd[4] = {b, hk, d, S}, kts[4] = {S * hk * d, d, 1, hk * d};
    const int64_t vd[4] = {b, hk, S, d}, vs[4] = {S * hk * d, d, hk * d, 1};
    const int64_t ld[4] = {b, 1, 1, 1}, ls[4] = {1, 1, 1, 1}, one[4] = {1, 1, 1, 1};
    const int64_t sd[4] = {b, hq, S, S}, ss[4] = {hq * S * S, S * S, S, 1};
    const int64_t rd[4] = {b, hq, S, 1}, rs[4] = {hq * S, S, 1, 1};
    memcpy(t->sd, sd, sizeof sd), memcpy(t->ss, ss, sizeof ss);
    memcpy(t->rd, rd, sizeof rd), memcpy(t->rs, rs, sizeof rs);
    t->q = gb_tensor(g, "Q", U_Q, t->io, qd, qs, 0);
    t->kt = gb_tensor(g, "K", U_K, t->io, ktd, kts, 0);
    t->v = v_transposed ? gb_tensor(g, "V", U_V, t->io, ktd, kts, 0)
                        : gb_tensor(g, "V", U_V, t->io, vd, vs, 0);
    t->o = gb_tensor(g, "O", U_O, t->io, qd, qs, 0);
    t->stats = gb_tensor(g, "Stats", U_STATS, CUDNN_DATA_FLOAT, rd, rs, 0);
    t->sq = gb_tensor(g, "seq_len_q", U_SEQ_Q, CUDNN_DATA_INT32, ld, ls, 0);
    t->skv = gb_tensor(g, "seq_len_kv", U_SEQ_KV, CUDNN_DATA_INT32, ld, ls, 0);
    t->scale = gb_tensor(g, "attn_scale", U_SCALE, CUDNN_DATA_FLOAT, one, one, T_BYVAL);
    t->ninf_pad = gb_tensor(g, "padding -inf", U_NINF_PAD, CUDNN_DATA_FLOAT, one, one, T_BYVAL);
    t->ninf_causal = gb_tensor(g, "causal -inf", U_NINF_CAUSAL, CUDNN_DATA_FLOAT, one, one,
                               T_BYVAL);
}

/* attn::score_modifiers::padding_mask: keep (row < seq_len_q && col < seq_len_kv) */
static cudnnBackendDescriptor_t gb_padding(gb_t *g, const common_t *t, cudnnBackendDescriptor_t x)
{
    cudnnBackendDescriptor_t r = gb_virt(g, "gen_row_idx_padding", CUDNN_DATA_INT32, t->sd, t->ss);
    cudnnBackendDescriptor_t c = gb_virt(g, "gen_col_idx_padding", CUDNN_DATA_INT32, t->sd, t->ss);
    cudnnBackendDescriptor_t rm = gb_virt(g, "lt_row_sq_padding", CUDNN_DATA_BOOLEAN, t->sd, t->ss);
    cudnnBackendDescriptor_t cm = gb_virt(g, "lt_col_skv_padding", CUDNN_DATA_BOOLEAN, t->sd, t->ss);
    cudnnBackendDescriptor_t m = gb_virt(g, "and_row_col_padding", CUDNN_DATA_BOOLEAN, t->sd, t->ss);
    cudnnBackendDescriptor_t y = gb_virt(g, "select_padding", CUDNN_DATA_FLOAT, t->sd, t->ss);
    gb_pw(g, "gen_row_idx_padding", CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, 2, x, nullptr,
          nullptr, r);
    gb_pw(g, "gen_col_idx_padding", CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, 3, x, nullptr,
          nullptr, c);
    gb_pw(g, "lt_row_sq_padding", CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, -1, r, t->sq,
          nullptr, rm);
    gb_pw(g, "lt_col_skv_padding", CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, -1, c, t->skv,
          nullptr, cm);
    gb_pw(g, "and_row_col_padding", CUDNN_POINTWISE_LOGICAL_AND, CUDNN_DATA_BOOLEAN, -1, rm, cm,
          nullptr, m);
    gb_pw(g, "select_padding", CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, -1, x,
          t->ninf_pad, m, y);
    return y;
}

/* the causal mask (CompositeDiagonalBandMaskNode, right bound 0, top-left): keep
 * row >= col */
static cudnnBackendDescriptor_t gb_causal(gb_t *g, const common_t *t, cudnnBackendDescriptor_t x)
{
    cudnnBackendDescriptor_t r = gb_virt(g, "gen_row_index", CUDNN_DATA_INT32, t->sd, t->ss);
    cudnnBackendDescriptor_t c = gb_virt(g, "gen_col_index", CUDNN_DATA_INT32, t->sd, t->ss);
    cudnnBackendDescriptor_t ge = gb_virt(g, "row>col", CUDNN_DATA_BOOLEAN, t->sd, t->ss);
    cudnnBackendDescriptor_t y = gb_virt(g, "right_bound_diagonal_mask::Y", CUDNN_DATA_FLOAT,
                                         t->sd, t->ss);
    gb_pw(g, "gen_row_index", CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, 2, x, nullptr, nullptr,
          r);
    gb_pw(g, "gen_col_index", CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, 3, x, nullptr, nullptr,
          c);
    gb_pw(g, "row>col", CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, -1, r, c, nullptr, ge);
    gb_pw(g, "binary_select", CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, -1, x,
          t->ninf_causal, ge, y);
    return y;
}

/* CompositeSDPANode: S = Q K^T * scale, padding and causal masks, softmax with Stats =
 * max + log(sum exp), O = P V (P in the io type) */
static void build_fwd(gb_t *g, const shape_t *s)
{
    common_t t;
    gb_common(g, s, &t, false);
    const cudnnDataType_t F = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t s1 = gb_virt(g, "bmm1::C", F, t.sd, t.ss);
    gb_mm(g, "bmm1", t.q, t.kt, s1, t.sq, t.skv, nullptr);
    cudnnBackendDescriptor_t s2 = gb_virt(g, "attn_scale::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "attn_scale", CUDNN_POINTWISE_MUL, F, -1, s1, t.scale, nullptr, s2);
    cudnnBackendDescriptor_t s3 = gb_padding(g, &t, s2);
    cudnnBackendDescriptor_t s4 = gb_causal(g, &t, s3);
    /* CompositeSoftmaxNode with Stats */
    cudnnBackendDescriptor_t mx = gb_virt(g, "Max", F, t.rd, t.rs);
    gb_red(g, "Max", CUDNN_REDUCE_TENSOR_MAX, s4, mx);
    cudnnBackendDescriptor_t sub = gb_virt(g, "sub_M", F, t.sd, t.ss);
    gb_pw(g, "sub", CUDNN_POINTWISE_SUB, F, -1, s4, mx, nullptr, sub);
    cudnnBackendDescriptor_t ex = gb_virt(g, "exp_sub_M", F, t.sd, t.ss);
    gb_pw(g, "exp", CUDNN_POINTWISE_EXP, F, -1, sub, nullptr, nullptr, ex);
    cudnnBackendDescriptor_t sum = gb_virt(g, "SumExp", F, t.rd, t.rs);
    gb_red(g, "sum", CUDNN_REDUCE_TENSOR_ADD, ex, sum);
    cudnnBackendDescriptor_t lg = gb_virt(g, "log::OUT_0", F, t.rd, t.rs);
    gb_pw(g, "log", CUDNN_POINTWISE_LOG, F, -1, sum, nullptr, nullptr, lg);
    gb_pw(g, "add", CUDNN_POINTWISE_ADD, F, -1, mx, lg, nullptr, t.stats);
    cudnnBackendDescriptor_t p = gb_virt(g, "softmax::S", t.io, t.sd, t.ss);
    gb_pw(g, "div", CUDNN_POINTWISE_DIV, F, -1, ex, sum, nullptr, p);
    gb_mm(g, "bmm2", p, t.v, t.o, t.sq, nullptr, t.skv);
}

/* CompositeSDPABackwardNode: softmax_sum = rowsum(dO * O); P recomputed from Stats; dV =
 * P^T dO, dS = P * (dO V^T - softmax_sum) * scale, dK = dS^T Q, dQ = dS K; with GQA the
 * per-query-head dK, dV are summed over the group by a reduction. Deterministic: dQ
 * straight from its matmul (the frontend's use_dp_workspace on Hopper); otherwise
 * through a float32 accumulator in the workspace. */
static void build_bwd(gb_t *g, const shape_t *s)
{
    common_t t;
    gb_common(g, s, &t, true);
    const cudnnDataType_t F = CUDNN_DATA_FLOAT;
    const int64_t b = s->B, hq = s->H, hk = s->Hkv, S = s->S, d = s->D;
    const int64_t qd[4] = {b, hq, S, d}, qs[4] = {S * hq * d, d, hq * d, 1};
    const int64_t kd[4] = {b, hk, S, d}, ks[4] = {S * hk * d, d, hk * d, 1};
    const int64_t fd[4] = {b, hq, S, d}, fs[4] = {hq * S * d, S * d, d, 1}; /* full-head */
    const int64_t tds[4] = {hq * S * S, S * S, 1, S};                       /* transposed */
    cudnnBackendDescriptor_t dO = gb_tensor(g, "dO", U_DO, t.io, qd, qs, 0);
    cudnnBackendDescriptor_t dQ = gb_tensor(g, "dQ", U_DQ, t.io, qd, qs, 0);
    cudnnBackendDescriptor_t dK = gb_tensor(g, "dK", U_DK, t.io, kd, ks, 0);
    cudnnBackendDescriptor_t dV = gb_tensor(g, "dV", U_DV, t.io, kd, ks, 0);
    const int64_t one4[4] = {1, 1, 1, 1};
    cudnnBackendDescriptor_t one = gb_tensor(g, "one", U_ONE, F, one4, one4, T_BYVAL);

    /* dO * O => softmax_sum */
    const int64_t mds[4] = {hq * S * d, S * d, hq * d, 1};
    cudnnBackendDescriptor_t t1 = gb_virt(g, "mul_dO_O::OUT_0", F, qd, mds);
    gb_pw(g, "mul_dO_O", CUDNN_POINTWISE_MUL, F, -1, dO, t.o, nullptr, t1);
    cudnnBackendDescriptor_t t2 = gb_virt(g, "reduce_dO_o::Y", F, t.rd, t.rs);
    gb_red(g, "reduce_dO_o", CUDNN_REDUCE_TENSOR_ADD, t1, t2);
    cudnnBackendDescriptor_t ssum = gb_tensor(g, "softmax_sum", U_SOFTMAX_SUM, F, t.rd, t.rs, 0);
    gb_pw(g, "scale_dropout_inv", CUDNN_POINTWISE_MUL, F, -1, t2, one, nullptr, ssum);

    /* Q K^T => exp(S - Stats) => dV */
    cudnnBackendDescriptor_t s1 = gb_virt(g, "matmul_Q_KT::C", F, t.sd, t.ss);
    gb_mm(g, "matmul_Q_KT", t.q, t.kt, s1, t.sq, t.skv, nullptr);
    cudnnBackendDescriptor_t s2 = gb_virt(g, "mul_s_attn_scale::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "mul_s_attn_scale", CUDNN_POINTWISE_MUL, F, -1, s1, t.scale, nullptr, s2);
    cudnnBackendDescriptor_t s3 = gb_padding(g, &t, s2);
    cudnnBackendDescriptor_t s4 = gb_virt(g, "sub_s_m::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "sub_s_m", CUDNN_POINTWISE_SUB, F, -1, s3, t.stats, nullptr, s4);
    cudnnBackendDescriptor_t s5 = gb_causal(g, &t, s4);
    cudnnBackendDescriptor_t e = gb_virt(g, "exp_s::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "exp_s", CUDNN_POINTWISE_EXP, F, -1, s5, nullptr, nullptr, e);
    cudnnBackendDescriptor_t pt = gb_virt(g, "reshape_p::Y", t.io, t.sd, tds);
    gb_reshape(g, "reshape_p", e, pt);
    if (hq == hk) {
        gb_mm(g, "matmul_pT_dO", pt, dO, dV, t.skv, nullptr, t.sq);
    } else {
        cudnnBackendDescriptor_t dvf = gb_virt(g, "matmul_pT_dO::C", t.io, fd, fs);
        gb_mm(g, "matmul_pT_dO", pt, dO, dvf, t.skv, nullptr, t.sq);
        gb_red(g, "red_dV_head", CUDNN_REDUCE_TENSOR_ADD, dvf, dV);
    }

    /* dO V^T => dS => dK */
    cudnnBackendDescriptor_t dp = gb_virt(g, "matmul_dO_VT::C", F, t.sd, t.ss);
    gb_mm(g, "matmul_dO_VT", dO, t.v, dp, t.sq, t.skv, nullptr);
    cudnnBackendDescriptor_t u1 = gb_virt(g, "sub_dP_softmax_sum::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "sub_dP_softmax_sum", CUDNN_POINTWISE_SUB, F, -1, dp, ssum, nullptr, u1);
    cudnnBackendDescriptor_t u2 = gb_virt(g, "mul_dP_exp_s::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "mul_dP_exp_s", CUDNN_POINTWISE_MUL, F, -1, u1, e, nullptr, u2);
    cudnnBackendDescriptor_t ds = gb_virt(g, "mul_dS_attn_scale::OUT_0", F, t.sd, t.ss);
    gb_pw(g, "mul_dS_attn_scale", CUDNN_POINTWISE_MUL, F, -1, u2, t.scale, nullptr, ds);
    cudnnBackendDescriptor_t dst = gb_virt(g, "reshape_dS::Y", t.io, t.sd, tds);
    gb_reshape(g, "reshape_dS", ds, dst);
    if (hq == hk) {
        gb_mm(g, "matmul_dST_Q", dst, t.q, dK, t.skv, nullptr, t.sq);
    } else {
        cudnnBackendDescriptor_t dkf = gb_virt(g, "matmul_dST_Q::C", t.io, fd, fs);
        gb_mm(g, "matmul_dST_Q", dst, t.q, dkf, t.skv, nullptr, t.sq);
        gb_red(g, "red_dK_head", CUDNN_REDUCE_TENSOR_ADD, dkf, dK);
    }

    /* dS K => dQ */
    /* float32 like the frontend's (its reshape fills the virtual output's type from the
     * graph's intermediate type before looking at the input's) */
    cudnnBackendDescriptor_t kr = gb_virt(g, "reshape_k::Y", F, kd, ks);
    gb_reshape(g, "reshape_k", t.kt, kr);
    if (s->kind == K_BWD) {
        gb_mm(g, "matmul_dS_K", ds, kr, dQ, t.sq, nullptr, t.skv);
    } else {
        cudnnBackendDescriptor_t acc = gb_tensor(g, "dQ_accum", U_DQ_ACCUM, F, fd, fs, 0);
        gb_mm(g, "matmul_dS_K", ds, kr, acc, t.sq, nullptr, t.skv);
        gb_pw(g, "identity_dQ", CUDNN_POINTWISE_IDENTITY, F, -1, acc, nullptr, nullptr, dQ);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* engine id, knobs and notes of an engine config, for the plan's line */
static void describe_cfg(gb_t *g, cudnnBackendDescriptor_t cfg, dnn_plan_t *p)
{
    const dnn_api_t *f = &g->d->f;
    int64_t n = 0;
    p->engine = -1;
    cudnnBackendDescriptor_t eng = gb_make(g, CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
    if (!eng || f->GetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                &n, &eng) != CUDNN_STATUS_SUCCESS)
        return;
    f->GetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &p->engine);
    cudnnBackendNumericalNote_t nn[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    static const char *const NN[] = {"tensor_core", "down_convert", "reduced_precision_reduction",
                                     "fft", "nondeterministic", "winograd", "winograd4",
                                     "winograd6", "winograd13", "strict_nan"};
    static const char *const BN[] = {"runtime_compiled", "int8x32_filter", "int8x32_bias",
                                     "cuda_graph_native", "cublaslt"};
    size_t at = 0;
    p->notes[0] = 0;
    if (f->GetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                        CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, nn) == CUDNN_STATUS_SUCCESS)
        for (int64_t i = 0; i < n; i++)
            app(p->notes, sizeof p->notes, &at, "%s%s", at ? "," : "",
                (int)nn[i] < (int)(sizeof NN / sizeof NN[0]) ? NN[nn[i]] : "?");
    if (f->GetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                        CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, bn) == CUDNN_STATUS_SUCCESS)
        for (int64_t i = 0; i < n; i++)
            app(p->notes, sizeof p->notes, &at, "%s%s", at ? "," : "",
                (int)bn[i] < (int)(sizeof BN / sizeof BN[0]) ? BN[bn[i]] : "?");
    cudnnBackendDescriptor_t kc[24];
    int nk = 0;
    for (; nk < 24; nk++)
        if (!(kc[nk] = gb_make(g, CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR, "knob choice")))
            return;
    at = 0;
    p->knobs[0] = 0;
    if (f->GetAttribute(cfg, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR, nk,
                        &n, kc) != CUDNN_STATUS_SUCCESS)
        return;
    for (int64_t i = 0; i < n && i < nk; i++) {
        cudnnBackendKnobType_t kt;
        int64_t kv = 0, m = 0;
        if (f->GetAttribute(kc[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &m,
                            &kt) != CUDNN_STATUS_SUCCESS ||
            f->GetAttribute(kc[i], CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &m,
                            &kv) != CUDNN_STATUS_SUCCESS)
            continue;
        if (kt == CUDNN_KNOB_TYPE_KERNEL_CFG)
            app(p->knobs, sizeof p->knobs, &at, "%skernel_cfg=%lld", at ? "," : "", (long long)kv);
        else
            app(p->knobs, sizeof p->knobs, &at, "%sknob%d=%lld", at ? "," : "", (int)kt,
                (long long)kv);
    }
}

/* the operation graph of one shape, heuristics (mode A, then the fallback list), and the
 * first engine config whose plan finalizes */
static bool build_plan(cu_dnn_t *d, dnn_plan_t *p)
{
    const double t0 = now_ms();
    gb_t g;
    memset(&g, 0, sizeof g);
    g.d = d;
    g.vuid = U_VIRTUAL;
    shape_t s = {p->kind, p->B, p->S, p->H, p->Hkv, p->D, p->dt};
    if (p->kind == K_FWD)
        build_fwd(&g, &s);
    else
        build_bwd(&g, &s);
    cudnnBackendDescriptor_t og = gb_make(&g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "graph");
    SET(&g, og, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, g.nops, g.ops,
        "operation graph");
    if (d->h) /* as the frontend: the handle when there is one */
        SET(&g, og, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &d->h,
            "operation graph");
    gb_fin(&g, og, "operation graph");
    char tries[400] = "";
    size_t tat = 0;
    const cudnnBackendHeurMode_t modes[2] = {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK};
    for (int mi = 0; mi < 2 && !g.bad && !p->plan; mi++) {
        cudnnBackendDescriptor_t heur = gb_make(&g, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
        SETD(&g, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, og, "heuristics");
        SET(&g, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &modes[mi], "heuristics");
        gb_fin(&g, heur, "heuristics");
        int64_t cnt = 0;
        if (g.bad)
            break;
        cudnnStatus_t st = d->f.GetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                             CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &cnt, nullptr);
        if (st != CUDNN_STATUS_SUCCESS) {
            gb_fail(&g, st, "heuristics", "CUDNN_ATTR_ENGINEHEUR_RESULTS (count)");
            break;
        }
        if (cnt > 16)
            cnt = 16;
        cudnnBackendDescriptor_t cfg[16];
        for (int64_t i = 0; i < cnt; i++)
            cfg[i] = gb_make(&g, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
        int64_t got = 0;
        if (g.bad)
            break;
        if (cnt > 0 && (st = d->f.GetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                               CUDNN_TYPE_BACKEND_DESCRIPTOR, cnt, &got, cfg)) !=
                           CUDNN_STATUS_SUCCESS) {
            gb_fail(&g, st, "heuristics", "CUDNN_ATTR_ENGINEHEUR_RESULTS");
            break;
        }
        app(tries, sizeof tries, &tat, "%sheuristics %s: %lld configs", tat ? "; " : "",
            mi ? "fallback" : "A", (long long)got);
        for (int64_t i = 0; i < got && !p->plan; i++) {
            cudnnBackendDescriptor_t plan = nullptr;
            if ((st = d->f.CreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan)) !=
                CUDNN_STATUS_SUCCESS) {
                gb_fail(&g, st, "execution plan", "cudnnBackendCreateDescriptor");
                break;
            }
            st = d->f.SetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg[i]);
            if (st == CUDNN_STATUS_SUCCESS)
                st = d->f.Finalize(plan);
            if (st == CUDNN_STATUS_SUCCESS) {
                p->plan = plan;
                int64_t n = 0;
                st = d->f.GetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                       CUDNN_TYPE_INT64, 1, &n, &p->ws);
                if (st != CUDNN_STATUS_SUCCESS)
                    gb_fail(&g, st, "execution plan", "CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE");
                describe_cfg(&g, cfg[i], p);
            } else {
                char last[200] = "";
                d->f.GetLastErrorString(last, sizeof last);
                app(tries, sizeof tries, &tat, ", config %lld: %s%s%s", (long long)i,
                    d->f.GetErrorString(st), *last ? " " : "", last);
                d->f.DestroyDescriptor(plan);
            }
        }
    }
    p->descs = g.v;
    p->ndesc = g.n;
    p->build_ms = now_ms() - t0;
    const char *dtn = p->dt == DT_BF16 ? "bf16" : "fp16";
    if (!g.bad && p->plan && p->ws >= 0) {
        p->ok = true;
        d->built++;
        return true;
    }
    fprintf(stderr, "mxrlhf cuda: cuDNN %s attention plan for %s B=%d S=%d H=%d/%d D=%d failed: "
            "%s; this shape uses the built-in kernels\n", KIND_NAME[p->kind], dtn, p->B, p->S, p->H,
            p->Hkv, p->D, g.bad ? g.err : (*tries ? tries : "no engine config"));
    const int kind = p->kind, B = p->B, S = p->S, H = p->H, Hkv = p->Hkv, D = p->D, dt = p->dt;
    plan_drop(d, p); /* keep the key, marked failed, so the shape is not tried again */
    p->kind = kind, p->B = B, p->S = S, p->H = H, p->Hkv = Hkv, p->D = D, p->dt = dt;
    p->ok = false;
    d->failed++;
    return false;
}

/* the cached plan of a shape (built on first use); NULL when it cannot be built */
static dnn_plan_t *get_plan(cuda_t *c, int kind, int B, int S, int H, int Hkv, int D, int dt)
{
    cu_dnn_t *d = c->dnn;
    dnn_plan_t *lru = nullptr;
    for (int i = 0; i < d->nplans; i++) {
        dnn_plan_t *p = &d->plans[i];
        if (p->kind == kind && p->B == B && p->S == S && p->H == H && p->Hkv == Hkv &&
            p->D == D && p->dt == dt) {
            p->used = ++d->clock;
            return p->ok ? p : nullptr;
        }
        if (!lru || p->used < lru->used)
            lru = p;
    }
    dnn_plan_t *p;
    if (d->nplans < DNN_MAX_PLANS) {
        p = &d->plans[d->nplans++];
    } else { /* its kernels may still be queued: wait before unloading them */
        p = lru;
        cu_check(c, cudaStreamSynchronize(c->st), "waiting to drop a cuDNN plan");
        plan_drop(d, p);
    }
    memset(p, 0, sizeof *p);
    p->kind = kind, p->B = B, p->S = S, p->H = H, p->Hkv = Hkv, p->D = D, p->dt = dt;
    p->used = ++d->clock;
    return build_plan(d, p) ? p : nullptr;
}

/* one execution: a variant pack of (uid, pointer) pairs and the workspace; false (and a
 * line on stderr; the plan is then marked failed) when cuDNN refuses */
static bool dnn_exec(cuda_t *c, dnn_plan_t *p, const int64_t *uids, void **ptrs, int n, void *ws)
{
    cu_dnn_t *d = c->dnn;
    cudnnBackendDescriptor_t vp = nullptr;
    cudnnStatus_t st = d->f.CreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    const char *what = "cudnnBackendCreateDescriptor(VARIANT_PACK)";
    if (st == CUDNN_STATUS_SUCCESS &&
        (st = d->f.SetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1,
                                &ws)) != CUDNN_STATUS_SUCCESS)
        what = "CUDNN_ATTR_VARIANT_PACK_WORKSPACE";
    if (st == CUDNN_STATUS_SUCCESS &&
        (st = d->f.SetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n,
                                ptrs)) != CUDNN_STATUS_SUCCESS)
        what = "CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS";
    if (st == CUDNN_STATUS_SUCCESS &&
        (st = d->f.SetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n,
                                uids)) != CUDNN_STATUS_SUCCESS)
        what = "CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS";
    if (st == CUDNN_STATUS_SUCCESS && (st = d->f.Finalize(vp)) != CUDNN_STATUS_SUCCESS)
        what = "cudnnBackendFinalize(VARIANT_PACK)";
    const int k = p->kind == K_FWD ? 0 : 1;
    int e = -1;
    if (st == CUDNN_STATUS_SUCCESS && d->timing) {
        if (d->nev == DNN_EVENTS) { /* full: fold the oldest into the totals */
            for (int i = 0; i < d->nev; i++) {
                float ms = 0.0f;
                cudaEventSynchronize(d->ev[2 * i + 1]);
                cudaEventElapsedTime(&ms, d->ev[2 * i], d->ev[2 * i + 1]);
                d->ms[d->ev_kind[i]] += ms;
            }
            d->nev = 0;
        }
        e = d->nev;
        while (d->ev_made < 2 * e + 2 && cudaEventCreate(&d->ev[d->ev_made]) == cudaSuccess)
            d->ev_made++;
        if (d->ev_made >= 2 * e + 2)
            cudaEventRecord(d->ev[2 * e], c->st);
        else
            e = -1;
    }
    if (st == CUDNN_STATUS_SUCCESS) {
        what = "cudnnBackendExecute";
        st = d->f.Execute(d->h, p->plan, vp);
    }
    if (e >= 0) {
        cudaEventRecord(d->ev[2 * e + 1], c->st);
        d->ev_kind[e] = k;
        d->nev++;
    }
    if (vp)
        d->f.DestroyDescriptor(vp);
    if (st == CUDNN_STATUS_SUCCESS) {
        d->calls[k]++;
        return true;
    }
    char last[256] = "";
    d->f.GetLastErrorString(last, sizeof last);
    fprintf(stderr, "mxrlhf cuda: cuDNN %s attention (B=%d S=%d H=%d/%d D=%d): %s: %s%s%s; this "
            "shape uses the built-in kernels from now on\n", KIND_NAME[p->kind], p->B, p->S, p->H,
            p->Hkv, p->D, what, d->f.GetErrorString(st), *last ? " " : "", last);
    p->ok = false;
    d->failed++;
    return false;
}

/* ---- the copies around cuDNN ------------------------------------------------------------- */

/* One tensor of the copies: the float32 side element (b, j, c) (c = head * D + e) at
 * b*sb + j*sr + (c/D)*sh + c%D; the 16-bit side dense (B, S, cols) with row i holding row
 * i + pad_left[b] of the float32 side (the shift that turns left padding into right
 * padding). */
typedef struct dnn_job {
    float *f32;
    void *h16;
    long sb, sr, sh;
    int cols;
} dnn_job_t;

typedef struct dnn_cvt {
    dnn_job_t j[5];
    const int32_t *padl;
    int32_t *seq; /* (2B): seq_len_q then seq_len_kv = max(T - pad, 1); NULL: not written */
    int B, T, S, D;
} dnn_cvt_t;

__device__ __forceinline__ int dnn_pad(const dnn_cvt_t &a, int b)
{
    int p = a.padl[b];
    return p < 0 ? 0 : p > a.T ? a.T : p;
}

template <typename T16> __device__ __forceinline__ unsigned pack2(float x, float y);
template <> __device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float x, float y)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *(unsigned *)&h;
}
template <> __device__ __forceinline__ unsigned pack2<__half>(float x, float y)
{
    __half2 h = __floats2half2_rn(x, y);
    return *(unsigned *)&h;
}
template <typename T16> __device__ __forceinline__ float2 unpack2(unsigned u);
template <> __device__ __forceinline__ float2 unpack2<__nv_bfloat16>(unsigned u)
{
    return __bfloat1622float2(*(__nv_bfloat162 *)&u);
}
template <> __device__ __forceinline__ float2 unpack2<__half>(unsigned u)
{
    return __half22float2(*(__half2 *)&u);
}

/* The copies, one launch for up to five tensors (gridDim.y = the jobs), 8 elements per
 * thread (two float4, one uint4); I the index type (32-bit where the counts fit: cheaper
 * divisions).
 * IN: float32 -> 16-bit, row i of the copy from row i + pad of the input, zeros past the
 * sequence; also the lengths (seq). OUT: 16-bit -> float32, shifted back down, zeros in the
 * padding rows. */
template <typename T16, typename I, bool IN> __global__ void k_dnn_copy(dnn_cvt_t a)
{
    const dnn_job_t J = a.j[blockIdx.y];
    if (IN && a.seq && blockIdx.x == 0 && blockIdx.y == 0)
        for (int b = threadIdx.x; b < a.B; b += blockDim.x) {
            const int s = a.T - dnn_pad(a, b);
            a.seq[b] = a.seq[a.B + b] = s < 1 ? 1 : s;
        }
    const int rows = IN ? a.S : a.T; /* of the side written */
    const I c8n = (I)(J.cols / 8);
    const I n = (I)a.B * (I)rows * c8n;
    for (I t = (I)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (I)gridDim.x * blockDim.x) {
        const int c = (int)(t % c8n) * 8;
        const I r = t / c8n;
        const int i = (int)(r % rows), b = (int)(r / rows), p = dnn_pad(a, b);
        const int j = IN ? i + p : i; /* the float32 row */
        float4 *f = (float4 *)(J.f32 + b * J.sb + (size_t)j * J.sr + (size_t)(c / a.D) * J.sh +
                               c % a.D);
        if (IN) {
            uint4 o = make_uint4(0u, 0u, 0u, 0u);
            if (j < a.T) {
                const float4 x = f[0], y = f[1];
                o = make_uint4(pack2<T16>(x.x, x.y), pack2<T16>(x.z, x.w), pack2<T16>(y.x, y.y),
                               pack2<T16>(y.z, y.w));
            }
            ((uint4 *)J.h16)[t] = o;
        } else {
            float4 x = make_float4(0.f, 0.f, 0.f, 0.f), y = x;
            if (j >= p) {
                const uint4 v = ((const uint4 *)J.h16)[((size_t)b * a.S + (j - p)) * c8n + c / 8];
                const float2 f0 = unpack2<T16>(v.x), f1 = unpack2<T16>(v.y),
                             f2 = unpack2<T16>(v.z), f3 = unpack2<T16>(v.w);
                x = make_float4(f0.x, f0.y, f1.x, f1.y);
                y = make_float4(f2.x, f2.y, f3.x, f3.y);
            }
            f[0] = x;
            f[1] = y;
        }
    }
}

/* lse (B, H, T) <-> cuDNN's Stats (B, H, S), shifted like the rows. to_dnn: padding rows
 * past the sequence get 0 (masked by cuDNN anyway); from cuDNN: padding queries -inf. */
__global__ void k_dnn_lse(dnn_cvt_t a, float *dst, const float *src, int H, bool to_dnn)
{
    const int L = to_dnn ? a.S : a.T;
    const size_t n = (size_t)a.B * H * L;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < n;
         t += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(t % L);
        const size_t bh = t / L;
        const int b = (int)(bh / H), p = dnn_pad(a, b);
        if (to_dnn)
            dst[t] = i < a.T - p ? src[bh * a.T + i + p] : 0.0f;
        else
            dst[t] = i >= p ? src[bh * a.S + i - p] : -INFINITY;
    }
}

/* ---- the two ops -------------------------------------------------------------------------- */

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* the shapes cuDNN serves (the top of the file); dt the 16-bit type */
static bool eligible(const cuda_t *c, const be_attn_t *a, int *dt)
{
    const cu_dnn_t *d = c->dnn;
    if (!d || !d->h || !attn_cudnn_mode(c))
        return false;
    if (a->compute == PREC_COMPUTE_BF16)
        *dt = DT_BF16;
    else if (a->compute == PREC_COMPUTE_FP16)
        *dt = DT_F16;
    else
        return false;
    return a->q0 == 0 && a->Tq == a->Tk && a->Tq >= 16 && a->B >= 1 && a->D % 8 == 0 &&
           a->D >= 16 && a->D <= 128 && a->Hkv >= 1 && a->H % a->Hkv == 0 && al16(vptr(a->q)) &&
           al16(vptr(a->k)) && al16(vptr(a->v)) && al16(vptr(a->out)) && a->kv_sb % 4 == 0 &&
           a->kv_st % 4 == 0 && a->kv_sh % 4 == 0 && !be_null(a->pad_left);
}

static size_t up256(size_t n) { return (n + 255) & ~(size_t)255; }

/* the scratch for one call; when it does not fit in device memory the shape falls back to
 * our kernels instead of failing the op (the allocation error cu_scratch recorded is
 * dropped; any earlier error is kept) */
static unsigned char *dnn_scratch(cuda_t *c, dnn_plan_t *p, size_t bytes)
{
    const bool clean = c->err_code == 0;
    unsigned char *buf = (unsigned char *)cu_scratch(c, CS_CUDNN, bytes);
    if (buf || !clean || c->err_code != ERR_NOMEM)
        return buf;
    fprintf(stderr, "mxrlhf cuda: cuDNN %s attention (B=%d S=%d H=%d/%d D=%d) needs %.0f MiB of "
            "scratch, which does not fit; this shape uses the built-in kernels\n",
            KIND_NAME[p->kind], p->B, p->S, p->H, p->Hkv, p->D, bytes / 1048576.0);
    c->err_code = 0;
    c->err_msg[0] = 0;
    p->ok = false;
    c->dnn->failed++;
    return nullptr;
}

template <typename T16, typename I>
static void launch_copy_t(cuda_t *c, const dnn_cvt_t &v, dim3 grid, bool in)
{
    if (in)
        k_dnn_copy<T16, I, true><<<grid, 256, 0, c->st>>>(v);
    else
        k_dnn_copy<T16, I, false><<<grid, 256, 0, c->st>>>(v);
}

/* the copies of nj jobs to cuDNN (in) or back; dt the 16-bit type */
static void launch_copy(cuda_t *c, const dnn_cvt_t &v, int nj, bool in, int dt)
{
    size_t maxn = 0; /* the largest job's count of 8-element chunks */
    for (int i = 0; i < nj; i++) {
        const size_t n = (size_t)v.B * (in ? v.S : v.T) * (size_t)(v.j[i].cols / 8);
        maxn = n > maxn ? n : maxn;
    }
    const dim3 grid(cu_grid(maxn, 256), (unsigned)nj);
    const bool small = maxn < (1u << 31);
    if (dt == DT_BF16 && small)
        launch_copy_t<__nv_bfloat16, unsigned>(c, v, grid, in);
    else if (dt == DT_BF16)
        launch_copy_t<__nv_bfloat16, size_t>(c, v, grid, in);
    else if (small)
        launch_copy_t<__half, unsigned>(c, v, grid, in);
    else
        launch_copy_t<__half, size_t>(c, v, grid, in);
    cu_launched(c, in ? "k_dnn_copy (to cuDNN)" : "k_dnn_copy (from cuDNN)");
}

static dnn_cvt_t cvt_of(const be_attn_t *a, int S)
{
    dnn_cvt_t v;
    memset(&v, 0, sizeof v);
    v.padl = iptr(a->pad_left);
    v.B = a->B, v.T = a->Tq, v.S = S, v.D = a->D;
    return v;
}

static dnn_job_t job_q(float *p, void *h, const be_attn_t *a)
{
    dnn_job_t j = {p, h, (long)a->Tq * a->H * a->D, (long)a->H * a->D, a->D, a->H * a->D};
    return j;
}

static dnn_job_t job_kv(float *p, void *h, const be_attn_t *a)
{
    dnn_job_t j = {p, h, (long)a->kv_sb, (long)a->kv_st, (long)a->kv_sh, a->Hkv * a->D};
    return j;
}

bool cu_dnn_attn_fwd(cuda_t *c, const be_attn_t *a)
{
    int dt;
    if (!eligible(c, a, &dt))
        return false;
    cu_dnn_t *d = c->dnn;
    const int S = (a->Tq + 63) / 64 * 64;
    dnn_plan_t *p = get_plan(c, K_FWD, a->B, S, a->H, a->Hkv, a->D, dt);
    if (!p)
        return false;
    const size_t nq = (size_t)a->B * S * a->H * a->D, nk = (size_t)a->B * S * a->Hkv * a->D;
    const size_t nl = (size_t)a->B * a->H * S;
    const size_t oq = 0, ok = oq + up256(2 * nq), ov = ok + up256(2 * nk), oo = ov + up256(2 * nk),
                 ol = oo + up256(2 * nq), os = ol + up256(4 * nl), ow = os + up256(8 * (size_t)a->B);
    unsigned char *buf = dnn_scratch(c, p, ow + (size_t)p->ws);
    if (!buf)
        return false;
    dnn_cvt_t v = cvt_of(a, S);
    v.seq = (int32_t *)(buf + os);
    v.j[0] = job_q(fptr(a->q), buf + oq, a);
    v.j[1] = job_kv(fptr(a->k), buf + ok, a);
    v.j[2] = job_kv(fptr(a->v), buf + ov, a);
    launch_copy(c, v, 3, true, dt);
    d->scale = a->scale;
    const int64_t uids[] = {U_Q, U_K, U_V, U_O, U_STATS, U_SEQ_Q, U_SEQ_KV, U_SCALE, U_NINF_PAD,
                            U_NINF_CAUSAL};
    void *ptrs[] = {buf + oq, buf + ok, buf + ov, buf + oo, buf + ol, buf + os,
                    buf + os + 4 * (size_t)a->B, &d->scale, &d->neg_inf, &d->neg_inf};
    if (!dnn_exec(c, p, uids, ptrs, 10, buf + ow))
        return false;
    v.seq = nullptr;
    v.j[0] = job_q(fptr(a->out), buf + oo, a);
    launch_copy(c, v, 1, false, dt);
    if (!be_null(a->lse)) {
        k_dnn_lse<<<cu_grid((size_t)a->B * a->H * a->Tq, 256), 256, 0, c->st>>>(
            v, fptr(a->lse), (const float *)(buf + ol), a->H, false);
        cu_launched(c, "k_dnn_lse");
    }
    return true;
}

bool cu_dnn_attn_bwd(cuda_t *c, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq, be_ptr_t dk,
                     be_ptr_t dv)
{
    int dt;
    if (!eligible(c, a, &dt) || be_null(a->lse) || !al16(vptr(dout)) || !al16(vptr(dq)) ||
        !al16(vptr(dk)) || !al16(vptr(dv)))
        return false;
    cu_dnn_t *d = c->dnn;
    const int kind = c->attn == BE_CUDA_ATTN_FAST_NONDET ? K_BWD_NONDET : K_BWD;
    const int S = (a->Tq + 63) / 64 * 64;
    dnn_plan_t *p = get_plan(c, kind, a->B, S, a->H, a->Hkv, a->D, dt);
    if (!p)
        return false;
    const size_t nq = (size_t)a->B * S * a->H * a->D, nk = (size_t)a->B * S * a->Hkv * a->D;
    const size_t nl = (size_t)a->B * a->H * S;
    /* 16-bit Q, K, V, O, dO, dQ, dK, dV; Stats; softmax_sum; dQ_accum; lengths; workspace */
    size_t off[13], at = 0;
    const size_t sz[12] = {2 * nq, 2 * nk, 2 * nk, 2 * nq, 2 * nq, 2 * nq, 2 * nk, 2 * nk,
                           4 * nl, 4 * nl, kind == K_BWD_NONDET ? 4 * nq : 0, 8 * (size_t)a->B};
    for (int i = 0; i < 12; i++) {
        off[i] = at;
        at += up256(sz[i]);
    }
    off[12] = at;
    unsigned char *buf = dnn_scratch(c, p, at + (size_t)p->ws);
    if (!buf)
        return false;
    dnn_cvt_t v = cvt_of(a, S);
    v.seq = (int32_t *)(buf + off[11]);
    v.j[0] = job_q(fptr(a->q), buf + off[0], a);
    v.j[1] = job_kv(fptr(a->k), buf + off[1], a);
    v.j[2] = job_kv(fptr(a->v), buf + off[2], a);
    v.j[3] = job_q(fptr(a->out), buf + off[3], a);
    v.j[4] = job_q(fptr(dout), buf + off[4], a);
    launch_copy(c, v, 5, true, dt);
    k_dnn_lse<<<cu_grid(nl, 256), 256, 0, c->st>>>(v, (float *)(buf + off[8]), fptr(a->lse),
                                                   a->H, true);
    cu_launched(c, "k_dnn_lse");
    d->scale = a->scale;
    const int64_t uids[] = {U_Q, U_K, U_V, U_O, U_DO, U_DQ, U_DK, U_DV, U_STATS, U_SOFTMAX_SUM,
                            U_SEQ_Q, U_SEQ_KV, U_SCALE, U_NINF_PAD, U_NINF_CAUSAL, U_ONE,
                            U_DQ_ACCUM};
    void *ptrs[] = {buf + off[0], buf + off[1], buf + off[2], buf + off[3], buf + off[4],
                    buf + off[5], buf + off[6], buf + off[7], buf + off[8], buf + off[9],
                    buf + off[11], buf + off[11] + 4 * (size_t)a->B, &d->scale, &d->neg_inf,
                    &d->neg_inf, &d->one, buf + off[10]};
    if (!dnn_exec(c, p, uids, ptrs, kind == K_BWD_NONDET ? 17 : 16, buf + off[12]))
        return false;
    v.seq = nullptr;
    v.j[0] = job_q(fptr(dq), buf + off[5], a);
    v.j[1] = job_kv(fptr(dk), buf + off[6], a);
    v.j[2] = job_kv(fptr(dv), buf + off[7], a);
    launch_copy(c, v, 3, false, dt);
    return true;
}

/* ---- what the API reports ----------------------------------------------------------------- */

static void dnn_read_events(cu_dnn_t *d)
{
    for (int i = 0; i < d->nev; i++) {
        float ms = 0.0f;
        cudaEventSynchronize(d->ev[2 * i + 1]);
        cudaEventElapsedTime(&ms, d->ev[2 * i], d->ev[2 * i + 1]);
        d->ms[d->ev_kind[i]] += ms;
    }
    d->nev = 0;
}

extern "C" int be_cuda_cudnn(backend_t *be, be_cuda_cudnn_t *out, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    memset(out, 0, sizeof *out);
    cu_dnn_t *d = c->dnn;
    if (!d) {
        snprintf(out->status, sizeof out->status, "cuDNN not used: no host memory for its state");
        return ERR_OK;
    }
    dnn_read_events(d);
    out->version = d->h ? d->version : 0;
    snprintf(out->status, sizeof out->status, "%s", d->status);
    out->plans = d->built;
    out->failed = d->failed;
    out->fwd_calls = d->calls[0];
    out->bwd_calls = d->calls[1];
    out->fwd_ms = d->ms[0];
    out->bwd_ms = d->ms[1];
    return ERR_OK;
}

extern "C" int be_cuda_cudnn_timing(backend_t *be, bool on, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    cu_dnn_t *d = c->dnn;
    if (d) {
        dnn_read_events(d);
        if (on)
            d->ms[0] = d->ms[1] = 0.0, d->calls[0] = d->calls[1] = 0;
        d->timing = on;
    }
    return ERR_OK;
}

extern "C" void be_cuda_cudnn_print(backend_t *be, FILE *f)
{
    err_t e = ERR_INIT;
    cuda_t *c = as_cuda(be, &e);
    if (!c || !c->dnn)
        return;
    cu_dnn_t *d = c->dnn;
    fprintf(f, "  %s\n", d->status);
    for (int i = 0; i < d->nplans; i++) {
        const dnn_plan_t *p = &d->plans[i];
        fprintf(f, "  %-10s %s B=%d S=%d H=%d/%d D=%d: ", KIND_NAME[p->kind],
                p->dt == DT_BF16 ? "bf16" : "fp16", p->B, p->S, p->H, p->Hkv, p->D);
        if (p->ok)
            fprintf(f, "engine %lld, knobs [%s], notes [%s], workspace %.1f MiB, built in %.0f ms\n",
                    (long long)p->engine, p->knobs, p->notes, p->ws / 1048576.0, p->build_ms);
        else
            fprintf(f, "no plan (built-in kernels)\n");
    }
}

#else /* !HAVE_CUDNN: built where cudnn_graph.h is absent */

struct cu_dnn {
    int unused;
};

void cu_dnn_open(cuda_t *c) { c->dnn = nullptr; }
void cu_dnn_close(cuda_t *c) {}
bool cu_dnn_attn_fwd(cuda_t *c, const be_attn_t *a) { return false; }
bool cu_dnn_attn_bwd(cuda_t *c, const be_attn_t *a, be_ptr_t dout, be_ptr_t dq, be_ptr_t dk,
                     be_ptr_t dv)
{
    return false;
}

extern "C" int be_cuda_cudnn(backend_t *be, be_cuda_cudnn_t *out, err_t *e)
{
    cuda_t *c = as_cuda(be, e);
    if (!c)
        return e->code;
    memset(out, 0, sizeof *out);
    snprintf(out->status, sizeof out->status, "cuDNN not used: built without cudnn_graph.h");
    return ERR_OK;
}
extern "C" int be_cuda_cudnn_timing(backend_t *be, bool on, err_t *e)
{
    return as_cuda(be, e) ? ERR_OK : e->code;
}
extern "C" void be_cuda_cudnn_print(backend_t *be, FILE *f)
{
    fprintf(f, "  cuDNN not used: built without cudnn_graph.h\n");
}

#endif
