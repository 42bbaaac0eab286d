/* nvml: NVIDIA GPUs through NVML, loaded at run time.
 *
 * libnvidia-ml.so.1 comes with the driver, not with a -dev package, so we dlopen it and
 * look up the versioned symbols ourselves (nvmlInit_v2, nvmlDeviceGetCount_v2, ...);
 * the build needs no NVIDIA headers and the program runs where there is no GPU. The
 * structures below copy nvml.h's layout (nvmlPciInfo_t, nvmlFieldValue_t).
 *
 * Readings: instant power from nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT = 186,
 * milliwatts), which changes about every 100 ms; when a card lacks the field we fall back
 * to nvmlDeviceGetPowerUsage, which on Ampere and newer is a one-second average (and say
 * so). The total-energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ) is read when
 * the caller asks, because one read costs milliseconds.
 *
 * Devices are matched to CUDA devices by PCI bus id, never by NVML index (NVML's order is
 * not promised to be stable, and CUDA's default order is "fastest first").
 */
#include "energy/source.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvml_ret_t;
typedef struct nvml_device *nvml_dev_t;

typedef struct nvml_pci {
    char bus_id_legacy[16];
    unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
    char bus_id[32];
} nvml_pci_t;

typedef union nvml_value {
    double d;
    unsigned int ui;
    unsigned long ul;
    unsigned long long ull;
    long long sll;
    int si;
    unsigned short us;
} nvml_value_t;

typedef struct nvml_field {
    unsigned int field_id;
    unsigned int scope_id;
    long long timestamp;      /* microseconds since 1970, when the value was taken */
    long long latency_usec;
    int value_type;
    nvml_ret_t ret;
    nvml_value_t value;
} nvml_field_t;

enum { NVML_OK = 0, FI_POWER_INSTANT = 186, NVML_HIST_BINS = 200 };

typedef struct nvml_api {
    void *dl;
    nvml_ret_t (*init)(void);
    nvml_ret_t (*shutdown)(void);
    const char *(*error_string)(nvml_ret_t);
    nvml_ret_t (*driver_version)(char *, unsigned int);
    nvml_ret_t (*nvml_version)(char *, unsigned int);
    nvml_ret_t (*count)(unsigned int *);
    nvml_ret_t (*by_index)(unsigned int, nvml_dev_t *);
    nvml_ret_t (*name)(nvml_dev_t, char *, unsigned int);
    nvml_ret_t (*uuid)(nvml_dev_t, char *, unsigned int);
    nvml_ret_t (*pci)(nvml_dev_t, nvml_pci_t *);
    nvml_ret_t (*fields)(nvml_dev_t, int, nvml_field_t *);
    nvml_ret_t (*power_usage)(nvml_dev_t, unsigned int *);
    nvml_ret_t (*energy)(nvml_dev_t, unsigned long long *);
    nvml_ret_t (*clock)(nvml_dev_t, int, unsigned int *);          /* optional */
    nvml_ret_t (*temperature)(nvml_dev_t, int, unsigned int *);    /* optional */
    nvml_ret_t (*throttle)(nvml_dev_t, unsigned long long *);      /* optional */
} nvml_api_t;

typedef struct nvml_gpu {
    nvml_dev_t h;
    char bus[32];   /* canonical */
    char name[96];
    char uuid[96];
} nvml_gpu_t;

typedef struct nvml_src {
    nvml_api_t api;
    bool inited;
    int n;
    nvml_dev_t h[ENERGY_MAX_DEVICES];
    bool use_field[ENERGY_MAX_DEVICES];  /* field 186; else nvmlDeviceGetPowerUsage */
    bool has_power[ENERGY_MAX_DEVICES];
    bool has_counter[ENERGY_MAX_DEVICES];
    unsigned long long mj0[ENERGY_MAX_DEVICES];
    char label[ENERGY_MAX_DEVICES][ENERGY_LABEL_MAX];
    char bus[ENERGY_MAX_DEVICES][32];
    /* how often the reading changes, to observe the sensor's update period */
    double last_change_t[ENERGY_MAX_DEVICES];
    double last_mw[ENERGY_MAX_DEVICES];
    long changes[ENERGY_MAX_DEVICES];
    /* intervals between changes, in 10 ms bins up to 2 s (the median is reported) */
    long hist[ENERGY_MAX_DEVICES][NVML_HIST_BINS];
} nvml_src_t;

static const char *nvml_err(const nvml_api_t *a, nvml_ret_t r)
{
    static const char *unknown = "unknown NVML error";
    const char *s = a->error_string ? a->error_string(r) : NULL;
    return s ? s : unknown;
}

static void nvml_unload(nvml_src_t *s)
{
    if (s->inited && s->api.shutdown)
        s->api.shutdown();
    if (s->api.dl)
        dlclose(s->api.dl);
    free(s);
}

static int load_api(nvml_api_t *a, const char *lib, err_t *e)
{
    memset(a, 0, sizeof *a);
    dlerror();
    a->dl = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!a->dl) {
        const char *d = dlerror();
        return err_set(e, ERR_UNAVAILABLE, "cannot load %s (%s): no NVIDIA driver here", lib,
                       d ? d : "dlopen failed");
    }
    struct { void **fn; const char *sym; bool required; } tab[] = {
        {(void **)&a->init, "nvmlInit_v2", true},
        {(void **)&a->shutdown, "nvmlShutdown", true},
        {(void **)&a->error_string, "nvmlErrorString", false},
        {(void **)&a->driver_version, "nvmlSystemGetDriverVersion", false},
        {(void **)&a->nvml_version, "nvmlSystemGetNVMLVersion", false},
        {(void **)&a->count, "nvmlDeviceGetCount_v2", true},
        {(void **)&a->by_index, "nvmlDeviceGetHandleByIndex_v2", true},
        {(void **)&a->name, "nvmlDeviceGetName", true},
        {(void **)&a->uuid, "nvmlDeviceGetUUID", false},
        {(void **)&a->pci, "nvmlDeviceGetPciInfo_v3", true},
        {(void **)&a->fields, "nvmlDeviceGetFieldValues", false},
        {(void **)&a->power_usage, "nvmlDeviceGetPowerUsage", false},
        {(void **)&a->energy, "nvmlDeviceGetTotalEnergyConsumption", false},
        {(void **)&a->clock, "nvmlDeviceGetClockInfo", false},
        {(void **)&a->temperature, "nvmlDeviceGetTemperature", false},
        {(void **)&a->throttle, "nvmlDeviceGetCurrentClocksThrottleReasons", false},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        void *p = dlsym(a->dl, tab[i].sym);
        if (!p && tab[i].required) {
            dlclose(a->dl);
            a->dl = NULL;
            return err_set(e, ERR_UNAVAILABLE, "%s lacks %s (driver too old?)", lib, tab[i].sym);
        }
        memcpy(tab[i].fn, &p, sizeof p); /* object -> function pointer, as POSIX allows */
    }
    return ERR_OK;
}

static double field_mw(const nvml_field_t *f)
{
    switch (f->value_type) {
    case 0: return f->value.d;
    case 1: return (double)f->value.ui;
    case 2: return (double)f->value.ul;
    case 3: return (double)f->value.ull;
    case 4: return (double)f->value.sll;
    case 5: return (double)f->value.si;
    case 6: return (double)f->value.us;
    default: return NAN;
    }
}

static int nvml_read(void *impl, double t_now, int what, energy_sample_t *out,
                     int cap, int *n, err_t *e)
{
    nvml_src_t *s = impl;
    *n = 0;
    for (int d = 0; d < s->n && *n < cap; d++) {
        energy_sample_t r = {NAN, d, NAN, NAN};
        if ((what & ENERGY_READ_POWER) && s->has_power[d]) {
            if (s->use_field[d]) {
                nvml_field_t f;
                memset(&f, 0, sizeof f);
                f.field_id = FI_POWER_INSTANT;
                nvml_ret_t rc = s->api.fields(s->h[d], 1, &f);
                if (rc == NVML_OK)
                    rc = f.ret;
                if (rc != NVML_OK)
                    return err_set(e, ERR_FAIL,
                                   "NVML: reading instant power (field 186) of %s (%s) failed: %s",
                                   s->label[d], s->bus[d], nvml_err(&s->api, rc));
                double mw = field_mw(&f);
                r.power_W = mw / 1000.0;
                if (mw != s->last_mw[d]) {
                    /* t_now is the caller's clock; the first change only starts it */
                    if (s->changes[d]++ > 0) {
                        long b = lround((t_now - s->last_change_t[d]) / 0.01);
                        s->hist[d][b < 0 ? 0 : b >= NVML_HIST_BINS ? NVML_HIST_BINS - 1 : b]++;
                    }
                    s->last_change_t[d] = t_now;
                    s->last_mw[d] = mw;
                }
            } else {
                unsigned int mw = 0;
                nvml_ret_t rc = s->api.power_usage(s->h[d], &mw);
                if (rc != NVML_OK)
                    return err_set(e, ERR_FAIL, "NVML: nvmlDeviceGetPowerUsage of %s (%s) failed: %s",
                                   s->label[d], s->bus[d], nvml_err(&s->api, rc));
                r.power_W = mw / 1000.0;
            }
        }
        if ((what & ENERGY_READ_COUNTER) && s->has_counter[d]) {
            unsigned long long mj = 0;
            nvml_ret_t rc = s->api.energy(s->h[d], &mj);
            if (rc != NVML_OK)
                return err_set(e, ERR_FAIL,
                               "NVML: nvmlDeviceGetTotalEnergyConsumption of %s (%s) failed: %s",
                               s->label[d], s->bus[d], nvml_err(&s->api, rc));
            r.energy_J = (double)(mj - s->mj0[d]) / 1000.0;
        }
        if (isnan(r.power_W) && isnan(r.energy_J))
            continue;
        out[(*n)++] = r;
    }
    return ERR_OK;
}

static void nvml_close(void *impl)
{
    nvml_unload(impl);
}

static void nvml_finish(void *impl, energy_provenance_t *p)
{
    nvml_src_t *s = impl;
    double best = 0;
    for (int d = 0; d < s->n; d++) {
        if (!s->use_field[d] || s->changes[d] < 6)
            continue;
        long half = (s->changes[d] - 1) / 2, acc = 0;
        int b = 0;
        while (b < NVML_HIST_BINS - 1 && (acc += s->hist[d][b]) <= half)
            b++;
        double per = b * 0.01;
        if (per > best)
            best = per;
    }
    p->observed_period_s = best;
}

/* nvml.h: NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2, NVML_TEMPERATURE_GPU = 0. A reading the
 * card refuses stays NAN. */
static int nvml_state(void *impl, int dev, energy_device_state_t *out, err_t *e)
{
    (void)e;
    nvml_src_t *s = impl;
    unsigned int v;
    unsigned long long r;
    if (s->api.clock && s->api.clock(s->h[dev], 1, &v) == NVML_OK)
        out->sm_clock_MHz = v;
    if (s->api.clock && s->api.clock(s->h[dev], 2, &v) == NVML_OK)
        out->mem_clock_MHz = v;
    if (s->api.temperature && s->api.temperature(s->h[dev], 0, &v) == NVML_OK)
        out->temperature_C = v;
    if (s->api.throttle && s->api.throttle(s->h[dev], &r) == NVML_OK)
        out->throttle_reasons = (double)r;
    return ERR_OK;
}

static const energy_source_ops_t nvml_ops = {nvml_read, nvml_close, nvml_finish, nvml_state};

static int cmp_gpu(const void *a, const void *b)
{
    return strcmp(((const nvml_gpu_t *)a)->bus, ((const nvml_gpu_t *)b)->bus);
}

static int find_bus(const nvml_gpu_t *g, int n, const char *bus)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(g[i].bus, bus))
            return i;
    return -1;
}

static bool all_same_model(const nvml_gpu_t *g, int n)
{
    for (int i = 1; i < n; i++)
        if (strcmp(g[i].name, g[0].name))
            return false;
    return true;
}

static void add_note(energy_provenance_t *p, const char *msg)
{
    size_t k = strlen(p->notes);
    snprintf(p->notes + k, sizeof p->notes - k, "%s%s", k ? " " : "", msg);
}

/* CUDA-visible GPUs, in CUDA order, as indices into g (sorted by bus id). */
static int visible_gpus(const energy_source_opts_t *o, const nvml_gpu_t *g, int ng, int *vis,
                        int *nvis, bool *by_index, energy_provenance_t *p, err_t *e)
{
    *nvis = 0;
    *by_index = false;
    char buf[1024];
    if (o->cuda_bus_ids && *o->cuda_bus_ids) {
        snprintf(buf, sizeof buf, "%s", o->cuda_bus_ids);
        for (char *save, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            char canon[32];
            if (energy_pci_canonical(t, canon))
                return err_set(e, ERR_INPUT, "%s: \"%s\" is not a PCI bus id", ENERGY_BUS_IDS_ENV, t);
            int i = find_bus(g, ng, canon);
            if (i < 0)
                return err_set(e, ERR_UNAVAILABLE, "%s: no GPU at %s among NVML's %d",
                               ENERGY_BUS_IDS_ENV, canon, ng);
            if (*nvis == ENERGY_MAX_DEVICES)
                break;
            vis[(*nvis)++] = i;
        }
        add_note(p, "CUDA devices mapped to GPUs by the PCI bus ids the caller gave "
                    "(" ENERGY_BUS_IDS_ENV ").");
        return ERR_OK;
    }
    if (!o->cuda_visible_devices) {
        /* every GPU: the set is certain, only the order (and so gpuN labels) assumed */
        for (int i = 0; i < ng && i < ENERGY_MAX_DEVICES; i++)
            vis[(*nvis)++] = i;
        return ERR_OK;
    }
    snprintf(buf, sizeof buf, "%s", o->cuda_visible_devices);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        int idx = -1;
        if (!strncmp(t, "MIG-", 4))
            return err_set(e, ERR_UNAVAILABLE,
                           "CUDA_VISIBLE_DEVICES names a MIG instance (%s): NVML measures the "
                           "power of whole GPUs only", t);
        if (!strncmp(t, "GPU-", 4)) {
            for (int i = 0; i < ng; i++)
                if (!strncmp(g[i].uuid, t, strlen(t))) {
                    if (idx >= 0)
                        return err_set(e, ERR_INPUT, "CUDA_VISIBLE_DEVICES: UUID prefix %s is "
                                       "ambiguous", t);
                    idx = i;
                }
        } else {
            char *end;
            long k = strtol(t, &end, 10);
            if (end != t && !*end && k >= 0 && k < ng) {
                idx = (int)k;
                *by_index = true;
            }
        }
        if (idx < 0) {
            /* CUDA stops at the first entry it does not understand; so do we. */
            snprintf(buf, sizeof buf, "CUDA_VISIBLE_DEVICES entry \"%.40s\" names no GPU; "
                     "like CUDA, the entries from there on are ignored.", t);
            add_note(p, buf);
            break;
        }
        for (int j = 0; j < *nvis; j++)
            if (vis[j] == idx)
                return err_set(e, ERR_INPUT, "CUDA_VISIBLE_DEVICES lists GPU %s twice", t);
        if (*nvis < ENERGY_MAX_DEVICES)
            vis[(*nvis)++] = idx;
    }
    return ERR_OK;
}

int energy_source_open_nvml(const energy_source_opts_t *o, energy_source_t **out, err_t *e)
{
    energy_source_opts_t dflt;
    if (!o) {
        memset(&dflt, 0, sizeof dflt);
        o = &dflt;
    }
    *out = NULL;
    const char *lib = o->nvml_lib ? o->nvml_lib : "libnvidia-ml.so.1";
    nvml_src_t *s = err_calloc(e, 1, sizeof *s, "NVML source");
    if (!s)
        return ERR_NOMEM;
    energy_provenance_t *p = err_calloc(e, 1, sizeof *p, "NVML provenance");
    nvml_gpu_t *g = err_calloc(e, 64, sizeof *g, "NVML device table");
    int rc = ERR_OK;
    if (!p || !g) {
        rc = ERR_NOMEM;
        goto fail;
    }
    if ((rc = load_api(&s->api, lib, e)))
        goto fail;
    nvml_ret_t r = s->api.init();
    if (r != NVML_OK) {
        rc = err_set(e, ERR_UNAVAILABLE, "nvmlInit_v2 failed: %s", nvml_err(&s->api, r));
        goto fail;
    }
    s->inited = true;
    unsigned int count = 0;
    if ((r = s->api.count(&count)) != NVML_OK) {
        rc = err_set(e, ERR_UNAVAILABLE, "nvmlDeviceGetCount_v2 failed: %s", nvml_err(&s->api, r));
        goto fail;
    }
    if (count == 0) {
        rc = err_set(e, ERR_UNAVAILABLE, "NVML sees no GPU");
        goto fail;
    }
    int ng = count > 64 ? 64 : (int)count;
    for (int i = 0; i < ng; i++) {
        nvml_pci_t pci;
        memset(&pci, 0, sizeof pci);
        if ((r = s->api.by_index((unsigned)i, &g[i].h)) != NVML_OK ||
            (r = s->api.pci(g[i].h, &pci)) != NVML_OK) {
            rc = err_set(e, ERR_UNAVAILABLE, "NVML: GPU %d: cannot read its PCI bus id: %s", i,
                         nvml_err(&s->api, r));
            goto fail;
        }
        pci.bus_id[sizeof pci.bus_id - 1] = 0;
        if (energy_pci_canonical(pci.bus_id, g[i].bus)) {
            rc = err_set(e, ERR_UNAVAILABLE, "NVML: GPU %d reports bus id \"%s\", which does not "
                         "parse", i, pci.bus_id);
            goto fail;
        }
        if (s->api.name(g[i].h, g[i].name, sizeof g[i].name) != NVML_OK)
            snprintf(g[i].name, sizeof g[i].name, "unknown NVIDIA GPU");
        if (!s->api.uuid || s->api.uuid(g[i].h, g[i].uuid, sizeof g[i].uuid) != NVML_OK)
            g[i].uuid[0] = 0;
    }
    qsort(g, (size_t)ng, sizeof *g, cmp_gpu); /* "PCI order" */

    int vis[ENERGY_MAX_DEVICES], nvis;
    bool by_index;
    if ((rc = visible_gpus(o, g, ng, vis, &nvis, &by_index, p, e)))
        goto fail;
    /* Which of them to measure. */
    int sel[ENERGY_MAX_DEVICES], nsel = 0;
    bool sel_by_index = false;
    if (!o->devices || !*o->devices || !strcmp(o->devices, "all")) {
        memcpy(sel, vis, sizeof(int) * (size_t)nvis);
        nsel = nvis;
    } else {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", o->devices);
        for (char *save, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            int idx = -1;
            if (strchr(t, ':')) {
                char canon[32];
                if (energy_pci_canonical(t, canon)) {
                    rc = err_set(e, ERR_INPUT, "devices: \"%s\" is neither a PCI bus id nor an "
                                 "index", t);
                    goto fail;
                }
                if ((idx = find_bus(g, ng, canon)) < 0) {
                    rc = err_set(e, ERR_UNAVAILABLE, "devices: no GPU at %s (NVML sees %d)", canon,
                                 ng);
                    goto fail;
                }
            } else {
                char *end;
                long k = strtol(t, &end, 10);
                if (end == t || *end || k < 0) {
                    rc = err_set(e, ERR_INPUT, "devices: \"%s\" is neither a PCI bus id nor an "
                                 "index", t);
                    goto fail;
                }
                if (k >= nvis) {
                    rc = err_set(e, ERR_UNAVAILABLE, "devices: index %ld, but %d GPU(s) are "
                                 "CUDA-visible", k, nvis);
                    goto fail;
                }
                idx = vis[k];
                sel_by_index = true;
            }
            for (int j = 0; j < nsel; j++)
                if (sel[j] == idx) {
                    rc = err_set(e, ERR_INPUT, "devices: GPU %s is named twice", g[idx].bus);
                    goto fail;
                }
            if (nsel < ENERGY_MAX_DEVICES)
                sel[nsel++] = idx;
        }
    }
    if (nsel == 0) {
        rc = err_set(e, ERR_UNAVAILABLE, "no GPU is CUDA-visible (CUDA_VISIBLE_DEVICES=\"%s\")",
                     o->cuda_visible_devices ? o->cuda_visible_devices : "");
        goto fail;
    }
    /* Indices are only as good as the order they refer to. */
    bool pci_order = o->cuda_device_order && !strcmp(o->cuda_device_order, "PCI_BUS_ID");
    if ((by_index || sel_by_index) && !pci_order && ng > 1) {
        if (!all_same_model(g, ng)) {
            rc = err_set(e, ERR_INPUT,
                         "GPU indices are ambiguous here: CUDA orders devices fastest first and "
                         "these GPUs differ (%s, %s, ...); set CUDA_DEVICE_ORDER=PCI_BUS_ID, use "
                         "GPU UUIDs in CUDA_VISIBLE_DEVICES, or give PCI bus ids (--devices or "
                         ENERGY_BUS_IDS_ENV ")", g[0].name, g[1].name);
            goto fail;
        }
        add_note(p, "CUDA indices were taken in PCI bus order: all GPUs are the same model, so "
                    "CUDA's fastest-first order cannot tell them apart (set "
                    "CUDA_DEVICE_ORDER=PCI_BUS_ID or " ENERGY_BUS_IDS_ENV " to make this certain).");
    } else if (!by_index && !sel_by_index && !(o->cuda_bus_ids && *o->cuda_bus_ids) &&
               !pci_order && ng > 1) {
        add_note(p, "gpuN labels follow PCI bus order, which may differ from CUDA's device "
                    "numbering; the bus ids say which GPU is which.");
    }

    snprintf(p->kind, sizeof p->kind, "nvml");
    if (s->api.driver_version)
        s->api.driver_version(p->driver, sizeof p->driver);
    if (s->api.nvml_version)
        s->api.nvml_version(p->library, sizeof p->library);
    p->ndev = nsel;
    bool any_field = false, any_fallback = false, any_counter = false;
    for (int k = 0; k < nsel; k++) {
        nvml_gpu_t *gg = &g[sel[k]];
        energy_device_info_t *di = &p->dev[k];
        int vpos = -1;
        for (int j = 0; j < nvis; j++)
            if (vis[j] == sel[k])
                vpos = j;
        if (vpos >= 0)
            snprintf(di->label, sizeof di->label, "gpu%d", vpos);
        else
            snprintf(di->label, sizeof di->label, "gpu-%s", gg->bus);
        snprintf(di->name, sizeof di->name, "%s", gg->name);
        snprintf(di->bus_id, sizeof di->bus_id, "%s", gg->bus);
        snprintf(di->uuid, sizeof di->uuid, "%s", gg->uuid);
        s->h[k] = gg->h;
        snprintf(s->label[k], sizeof s->label[k], "%s", di->label);
        snprintf(s->bus[k], sizeof s->bus[k], "%s", gg->bus);
        /* Instant power: field 186, else the averaged reading. */
        char why[160] = "";
        if (s->api.fields) {
            nvml_field_t f;
            memset(&f, 0, sizeof f);
            f.field_id = FI_POWER_INSTANT;
            nvml_ret_t fr = s->api.fields(gg->h, 1, &f);
            if (fr == NVML_OK)
                fr = f.ret;
            if (fr == NVML_OK && isfinite(field_mw(&f))) {
                s->use_field[k] = s->has_power[k] = true;
                snprintf(di->power_method, sizeof di->power_method,
                         "nvmlDeviceGetFieldValues field 186 (instant power)");
            } else {
                snprintf(why, sizeof why, "field 186: %s", nvml_err(&s->api, fr));
            }
        } else {
            snprintf(why, sizeof why, "no nvmlDeviceGetFieldValues");
        }
        if (!s->has_power[k] && s->api.power_usage) {
            unsigned int mw;
            if (s->api.power_usage(gg->h, &mw) == NVML_OK) {
                s->has_power[k] = true;
                snprintf(di->power_method, sizeof di->power_method,
                         "nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer; %s)", why);
            }
        }
        if (s->api.energy && s->api.energy(gg->h, &s->mj0[k]) == NVML_OK)
            s->has_counter[k] = true;
        if (!s->has_power[k] && !s->has_counter[k]) {
            rc = err_set(e, ERR_UNAVAILABLE, "NVML: %s (%s) gives neither power (%s) nor an "
                         "energy counter", gg->name, gg->bus, why);
            goto fail;
        }
        di->has_power = s->has_power[k];
        di->has_counter = s->has_counter[k];
        any_field |= s->use_field[k];
        any_fallback |= s->has_power[k] && !s->use_field[k];
        any_counter |= s->has_counter[k];
    }
    s->n = nsel;
    snprintf(p->sensor, sizeof p->sensor, "NVML %s%s%s",
             any_field ? "instant power (field 186)" : "",
             any_fallback ? (any_field ? " / 1 s average power" : "1 s average power") : "",
             any_counter ? " + total-energy counter (nvmlDeviceGetTotalEnergyConsumption)" : "");
    /* Nominal update periods measured on H100/H200 (docs/energy.md): instant power and
     * the counter change about every 100 ms; the fallback average spans 1 s. */
    p->update_period_s = any_fallback ? 1.0 : 0.1;
    /* field 186 averages the last 25 ms of each 100 ms on A100/H100 (Yang et al., SC'24);
     * the fallback averages a whole second */
    p->content_window_s = any_fallback ? 1.0 : 0.025;
    p->counter_period_s = any_counter ? 0.1 : 0;
    rc = energy_source_custom(&nvml_ops, s, p, false, out, e);
    if (rc)
        goto fail;
    free(p);
    free(g);
    return ERR_OK;
fail:
    if (s->api.dl || s->inited)
        nvml_unload(s);
    else
        free(s);
    free(p);
    free(g);
    return rc;
}
