/* source: opening sources by name, `auto`, `none`, custom sources, PCI bus ids.
 * The sensors themselves live in nvml.c, rapl.c and replay.c. */
#include "energy/source.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void energy_source_opts_from_env(energy_source_opts_t *o)
{
    o->cuda_visible_devices = getenv("CUDA_VISIBLE_DEVICES");
    o->cuda_device_order = getenv("CUDA_DEVICE_ORDER");
    o->cuda_bus_ids = getenv(ENERGY_BUS_IDS_ENV);
}

int energy_source_custom(const energy_source_ops_t *ops, void *impl,
                         const energy_provenance_t *prov, bool virtual_time,
                         energy_source_t **out, err_t *e)
{
    *out = NULL;
    if (prov->ndev < 0 || prov->ndev > ENERGY_MAX_DEVICES)
        return err_set(e, ERR_INPUT, "energy source: %d devices (expected 0 to %d)", prov->ndev,
                       ENERGY_MAX_DEVICES);
    energy_source_t *s = err_calloc(e, 1, sizeof *s, "energy source");
    if (!s)
        return ERR_NOMEM;
    s->ops = ops;
    s->impl = impl;
    s->virtual_time = virtual_time;
    s->prov = *prov;
    *out = s;
    return ERR_OK;
}

void energy_source_close(energy_source_t *s)
{
    if (!s)
        return;
    if (s->ops && s->ops->close)
        s->ops->close(s->impl);
    free(s);
}

int energy_source_state(const energy_source_t *s, int dev, energy_device_state_t *out, err_t *e)
{
    out->sm_clock_MHz = out->mem_clock_MHz = out->temperature_C = out->throttle_reasons = NAN;
    if (!s || !s->ops || !s->ops->state)
        return err_set(e, ERR_UNAVAILABLE, "%s source: no clock or temperature readings (only "
                       "NVML gives them)", s ? s->prov.kind : "no");
    if (dev < 0 || dev >= s->prov.ndev)
        return err_set(e, ERR_INPUT, "%s source: no device %d (it has %d)", s->prov.kind, dev,
                       s->prov.ndev);
    return s->ops->state(s->impl, dev, out, e);
}

static int none_read(void *impl, double t_now, int what, energy_sample_t *out,
                     int cap, int *n, err_t *e)
{
    *n = 0;
    return ERR_OK;
}

static const energy_source_ops_t none_ops = {none_read, NULL, NULL, NULL};

int energy_source_open_none(energy_source_t **out, err_t *e)
{
    energy_provenance_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.kind, sizeof p.kind, "none");
    snprintf(p.sensor, sizeof p.sensor, "no power sensor: energy is not measured");
    snprintf(p.choice, sizeof p.choice, "--power-source none");
    return energy_source_custom(&none_ops, NULL, &p, false, out, e);
}

/* auto: nvml, else rapl, else none; every step's reason is kept for the record. */
static int open_auto(const energy_source_opts_t *o, energy_source_t **out, err_t *e)
{
    char why_nvml[640], why_rapl[640];
    err_t en = ERR_INIT, er = ERR_INIT;
    energy_source_t *nv = NULL, *ra = NULL;
    int rc = energy_source_open_nvml(o, &nv, &en);
    if (rc == ERR_NOMEM)
        return err_set(e, rc, "%s", en.msg);
    /* RAPL is probed even when NVML works, so the record says what it would have been. */
    int rc2 = energy_source_open_rapl(o, &ra, &er);
    if (rc2 == ERR_NOMEM) {
        energy_source_close(nv);
        return err_set(e, rc2, "%s", er.msg);
    }
    if (nv)
        snprintf(why_nvml, sizeof why_nvml, "picked: %d GPU(s) answer through NVML",
                 nv->prov.ndev);
    else
        snprintf(why_nvml, sizeof why_nvml, "not available: %s", en.msg);
    if (ra && nv)
        snprintf(why_rapl, sizeof why_rapl,
                 "available (%d zone(s)) but not used: the work runs on the GPUs, and RAPL "
                 "measures CPU packages and DRAM", ra->prov.ndev);
    else if (ra)
        snprintf(why_rapl, sizeof why_rapl, "picked: %d zone(s) readable", ra->prov.ndev);
    else
        snprintf(why_rapl, sizeof why_rapl, "not available: %s", er.msg);
    energy_source_t *pick = nv ? nv : ra;
    if (nv)
        energy_source_close(ra);
    if (!pick && (rc = energy_source_open_none(&pick, e)))
        return rc;
    snprintf(pick->prov.choice, sizeof pick->prov.choice,
             "auto picked %s. nvml: %s. rapl: %s. replay: never picked automatically (it "
             "needs replay:FILE). none: %s.",
             pick->prov.kind, why_nvml, why_rapl,
             !strcmp(pick->prov.kind, "none") ? "picked: no sensor answered, so energies are "
                                                "left empty"
                                              : "not needed, a sensor answered");
    *out = pick;
    return ERR_OK;
}

int energy_source_open(const char *spec, const energy_source_opts_t *o, energy_source_t **out,
                       err_t *e)
{
    energy_source_opts_t dflt;
    if (!o) {
        memset(&dflt, 0, sizeof dflt);
        o = &dflt;
    }
    *out = NULL;
    if (!spec || !strcmp(spec, "auto"))
        return open_auto(o, out, e);
    int rc;
    if (!strcmp(spec, "nvml"))
        rc = energy_source_open_nvml(o, out, e);
    else if (!strcmp(spec, "rapl"))
        rc = energy_source_open_rapl(o, out, e);
    else if (!strcmp(spec, "none"))
        rc = energy_source_open_none(out, e);
    else if (!strncmp(spec, "replay:", 7) && spec[7])
        rc = energy_source_open_replay(spec + 7, o, out, e);
    else
        return err_set(e, ERR_INPUT,
                       "power source \"%s\": expected auto, nvml, rapl, replay:FILE or none",
                       spec);
    if (!rc && strncmp(spec, "replay:", 7))
        snprintf((*out)->prov.choice, sizeof (*out)->prov.choice, "--power-source %s", spec);
    return rc;
}

int energy_pci_canonical(const char *in, char out[32])
{
    /* [domain:]bus:device.function, hexadecimal, any case. */
    unsigned long v[4] = {0, 0, 0, 0};
    int nv = 0;
    const char *p = in;
    char seps[4] = {0};
    while (*p && nv < 4) {
        char *end;
        if (!isxdigit((unsigned char)*p))
            return ERR_INPUT;
        v[nv] = strtoul(p, &end, 16);
        seps[nv] = *end;
        nv++;
        if (!*end)
            break;
        if (*end != ':' && *end != '.')
            return ERR_INPUT;
        p = end + 1;
    }
    unsigned long dom, bus, dev, fn;
    if (nv == 4 && seps[0] == ':' && seps[1] == ':' && seps[2] == '.' && !seps[3]) {
        dom = v[0], bus = v[1], dev = v[2], fn = v[3];
    } else if (nv == 3 && seps[0] == ':' && seps[1] == '.' && !seps[2]) {
        dom = 0, bus = v[0], dev = v[1], fn = v[2];
    } else {
        return ERR_INPUT;
    }
    if (dom > 0xffffffffUL || bus > 0xff || dev > 0x1f || fn > 7)
        return ERR_INPUT;
    snprintf(out, 32, "%08lX:%02lX:%02lX.%lX", dom, bus, dev, fn);
    return ERR_OK;
}

void energy_provenance_line(const energy_provenance_t *p, char *buf, int cap)
{
    int k = snprintf(buf, (size_t)cap, "%s: %s", p->kind, p->sensor);
    for (int i = 0; i < p->ndev && k < cap; i++)
        k += snprintf(buf + k, (size_t)(cap - k), "; %s %s%s%s", p->dev[i].label, p->dev[i].name,
                      p->dev[i].bus_id[0] ? " @ " : "", p->dev[i].bus_id);
    if (p->driver[0] && k < cap)
        k += snprintf(buf + k, (size_t)(cap - k), "; driver %s", p->driver);
    (void)k;
}
