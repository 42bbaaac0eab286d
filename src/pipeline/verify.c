/* verify: machine and input checks (see verify.h). */
#include "pipeline/verify.h"

#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/hh.h"
#include "energy/source.h"
#include "model/qwen2.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"

void pipeline_cpu_info(char *model, size_t cap, int *cores)
{
    snprintf(model, cap, "unknown CPU");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    *cores = n > 0 ? (int)n : 1;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                snprintf(model, cap, "%s", p + 2);
                model[strcspn(model, "\n")] = 0;
            }
            break;
        }
    fclose(f);
}

static pipeline_check_t *add(pipeline_verify_report_t *r, const char *name, bool asked)
{
    if (r->n >= PIPELINE_MAX_CHECKS)
        return &r->check[PIPELINE_MAX_CHECKS - 1];
    pipeline_check_t *c = &r->check[r->n++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->asked = asked;
    return c;
}

static void say(pipeline_check_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(pipeline_check_t *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    c->status = status;
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
}

/* ---- CUDA runtime ---------------------------------------------------------------------- */

typedef int (*cuda_int_fn)(int *);

static void check_cudart(const pipeline_verify_opts_t *o, pipeline_check_t *c)
{
    static const char *const names[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12",
                                        "libcudart.so.11.0"};
    void *h = NULL;
    const char *used = NULL;
    char why[512] = "";
    if (o->cudart) {
        h = dlopen(o->cudart, RTLD_NOW | RTLD_LOCAL);
        used = o->cudart;
        if (!h)
            snprintf(why, sizeof why, "%s", dlerror());
    } else {
        for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) {
            h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
            used = names[i];
            if (!h && i == 0)
                snprintf(why, sizeof why, "%s", dlerror());
        }
    }
    if (!h) {
        say(c, ERR_UNAVAILABLE, "not found (%s; tried libcudart.so and versions 13, 12, 11.0 "
            "on the library path)", why);
        return;
    }
    cuda_int_fn rt = (cuda_int_fn)dlsym(h, "cudaRuntimeGetVersion");
    cuda_int_fn dr = (cuda_int_fn)dlsym(h, "cudaDriverGetVersion");
    cuda_int_fn count = (cuda_int_fn)dlsym(h, "cudaGetDeviceCount");
    int vr = 0, vd = 0, n = 0;
    if (!rt || !dr || !count) {
        say(c, ERR_UNAVAILABLE, "%s loaded but lacks cudaRuntimeGetVersion/"
            "cudaDriverGetVersion/cudaGetDeviceCount", used);
    } else {
        int e1 = rt(&vr), e2 = dr(&vd), e3 = count(&n);
        if (e1)
            say(c, ERR_UNAVAILABLE, "%s: cudaRuntimeGetVersion failed (error %d)", used, e1);
        else if (e3 || n == 0)
            say(c, ERR_UNAVAILABLE, "%s: runtime %d.%d, driver API %d.%d, but no usable device "
                "(cudaGetDeviceCount error %d, %d devices)", used, vr / 1000, (vr % 1000) / 10,
                vd / 1000, (vd % 1000) / 10, e3, n);
        else
            say(c, ERR_OK, "%s: runtime %d.%d, driver supports CUDA %d.%d, %d device(s)%s", used,
                vr / 1000, (vr % 1000) / 10, vd / 1000, (vd % 1000) / 10, n,
                e2 ? " (driver version query failed)" : "");
    }
    dlclose(h);
}

/* ---- power sources --------------------------------------------------------------------- */

static void check_source(const char *kind, const pipeline_verify_opts_t *o, pipeline_check_t *c,
                         pipeline_check_t *gpu)
{
    energy_source_opts_t so;
    memset(&so, 0, sizeof so);
    energy_source_opts_from_env(&so);
    so.nvml_lib = o->nvml_lib;
    so.powercap_root = o->powercap_root;
    energy_source_t *s = NULL;
    err_t e = ERR_INIT;
    if (energy_source_open(kind, &so, &s, &e)) {
        say(c, e.code, "does not work: %s", e.msg);
        if (gpu)
            say(gpu, ERR_UNAVAILABLE, "no GPU seen through NVML: %s", e.msg);
        return;
    }
    char line[1024];
    energy_provenance_line(&s->prov, line, sizeof line);
    say(c, ERR_OK, "works: %s", line);
    if (gpu) {
        const energy_provenance_t *p = &s->prov;
        size_t at = (size_t)snprintf(gpu->detail, sizeof gpu->detail, "%d GPU(s), driver %s, "
                                     "NVML %s:", p->ndev, p->driver, p->library);
        for (int i = 0; i < p->ndev && at < sizeof gpu->detail; i++)
            at += (size_t)snprintf(gpu->detail + at, sizeof gpu->detail - at, " %s%s (%s, %s)",
                                   i ? "; " : "", p->dev[i].name, p->dev[i].bus_id,
                                   p->dev[i].has_power ? "power readings" : "no power readings");
        gpu->status = p->ndev > 0 ? ERR_OK : ERR_UNAVAILABLE;
    }
    energy_source_close(s);
}

/* ---- model and data -------------------------------------------------------------------- */

static void check_model(const char *dir, pipeline_check_t *c)
{
    err_t e = ERR_INIT;
    char *cpath = fs_join(dir, "config.json"), *tpath = fs_join(dir, "tokenizer.json");
    cJSON *cj = NULL;
    qwen2_config_t cfg;
    backend_t *be = NULL;
    qwen2_model_t *m = NULL;
    tok_t *tok = NULL;
    float *out = NULL;
    if (!cpath || !tpath) {
        say(c, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (qwen2_config_load(cpath, &cfg, &e) || json_load_file(cpath, 4u << 20, &cj, &e)) {
        say(c, e.code, "%s", e.msg);
        goto out;
    }
    const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(cj, "architectures"), 0);
    bool score = cJSON_IsString(arch) && strstr(arch->valuestring, "ForSequenceClassification");
    qwen2_opts_t qo = {.max_batch = 1, .max_seq = 4,
                       .heads = score ? QWEN2_HEAD_SCORE : QWEN2_HEAD_LM};
    if (be_open("cpu", &be, &e) || qwen2_open_dir(dir, be, &qo, &m, &e)) {
        say(c, e.code, "%s", e.msg);
        goto out;
    }
    /* one short forward: the weights load and compute finite outputs */
    int32_t ids[4] = {0, 1, 2, 3};
    for (int i = 0; i < 4; i++)
        ids[i] = ids[i] % cfg.vocab;
    qwen2_batch_t b = {1, 4, ids, NULL, NULL};
    out = malloc((size_t)cfg.vocab * sizeof *out); /* one row of logits, or one score */
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    bool finite = true;
    if (!out) {
        say(c, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (qwen2_forward(m, &ctx, &b, score ? QWEN2_FWD_SCORES : QWEN2_FWD_LOGITS, &e) ||
        (score ? qwen2_scores_get(m, out, &e) : qwen2_logits_get(m, 3, 1, out, &e))) {
        say(c, e.code ? e.code : ERR_FAIL, "loaded but a forward pass failed: %s", e.msg);
        goto out;
    }
    for (int i = 0; i < (score ? 1 : cfg.vocab); i++)
        finite = finite && isfinite(out[i]);
    char tokmsg[600];
    if (!fs_exists(tpath))
        snprintf(tokmsg, sizeof tokmsg, "no tokenizer.json");
    else if (tok_load(tpath, &tok, &e))
        snprintf(tokmsg, sizeof tokmsg, "tokenizer.json does not load: %s", e.msg);
    else
        snprintf(tokmsg, sizeof tokmsg, "tokenizer.json: %d ids", tok_vocab_size(tok));
    say(c, finite && tok ? ERR_OK : ERR_INPUT,
        "%s: %s, %zu parameters (hidden %d, %d layers, %d heads, %d KV heads, intermediate %d, "
        "vocab %d, %s embeddings); %s; a 4-token forward %s", dir,
        score ? "reward model (score head)" : "causal LM", qwen2_config_nparams(&cfg), cfg.hidden,
        cfg.layers, cfg.heads, cfg.kv_heads, cfg.inter, cfg.vocab, cfg.tie ? "tied" : "untied",
        tokmsg, finite ? "gives finite outputs" : "gives non-finite outputs");
out:
    free(out);
    tok_free(tok);
    qwen2_free(m);
    if (be)
        be_close(be);
    cJSON_Delete(cj);
    free(cpath);
    free(tpath);
}

static void check_data(const char *path, pipeline_check_t *c)
{
    err_t e = ERR_INIT;
    data_hh_t h;
    data_hh_opts_t o = {.skip_bad = true};
    if (data_hh_read(path, &o, &h, &e)) {
        say(c, e.code, "%s", e.msg);
        return;
    }
    size_t at = (size_t)snprintf(c->detail, sizeof c->detail, "%s: %s, %zu lines, %zu pairs "
                                 "found", path, h.gzip ? "gzip" : "plain", h.lines, h.npairs);
    for (int k = 0; k < DATA_HH_NREASONS && at < sizeof c->detail; k++)
        if (h.rejected[k].n)
            at += (size_t)snprintf(c->detail + at, sizeof c->detail - at, "; not usable, %s: %zu",
                                   data_hh_reason_name(k), h.rejected[k].n);
    c->status = h.npairs > 0 ? ERR_OK : ERR_INPUT;
    if (!h.npairs && at < sizeof c->detail)
        snprintf(c->detail + at, sizeof c->detail - at, " (no usable pair)");
    data_hh_free(&h);
}

int pipeline_verify(const pipeline_verify_opts_t *o, pipeline_verify_report_t *r)
{
    memset(r, 0, sizeof *r);
    char cpu[256];
    int cores;
    pipeline_cpu_info(cpu, sizeof cpu, &cores);
    double la[3] = {-1, -1, -1};
    if (getloadavg(la, 3) != 3)
        la[0] = la[1] = la[2] = -1;
    say(add(r, "cpu", false), ERR_OK, "%s, %d cores online, load average %.2f %.2f %.2f", cpu,
        cores, la[0], la[1], la[2]);
    pipeline_check_t *gpu = add(r, "gpu", o->require_gpu);
    check_source("nvml", o, add(r, "power:nvml", false), gpu);
    check_cudart(o, add(r, "cuda_runtime", o->require_gpu));
    check_source("rapl", o, add(r, "power:rapl", false), NULL);
    say(add(r, "power:none", false), ERR_OK, "works: always (runs are timed, energies left "
        "empty)");
    if (o->model)
        check_model(o->model, add(r, "model", true));
    if (o->data)
        check_data(o->data, add(r, "data", true));
    for (int i = 0; i < r->n; i++)
        if (r->check[i].asked && r->check[i].status)
            return r->check[i].status;
    return ERR_OK;
}
