/* rapl: CPU package and DRAM energy through the Linux powercap interface.
 *
 * Each zone directory under /sys/class/powercap (intel-rapl:N for packages,
 * intel-rapl:N:M for their sub-zones; AMD CPUs use the same driver) holds `name`,
 * `energy_uj` (a counter in microjoules that wraps at `max_energy_range_uj`) and more.
 * We take the package zones and the DRAM zones; "core" and "uncore" are parts of a
 * package and would count twice. RAPL has no instant power: the attribution uses the
 * counters, and power_W in the log is the average since the previous read.
 *
 * Since Linux 5.10 (CVE-2020-8694, "Platypus") energy_uj is readable by root only; we
 * say so rather than report a bare "permission denied". The root directory is an option
 * so that tests can run on a fake tree.
 */
#include "energy/source.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

typedef struct rapl_zone {
    int fd;                 /* energy_uj, kept open and re-read with pread */
    char path[512];
    double max_uj;          /* max_energy_range_uj, 0 when unknown */
    double last_uj;         /* last raw reading */
    double total_J;         /* unwrapped energy since open */
    double last_t;          /* run time of the last read (NAN before the first) */
} rapl_zone_t;

typedef struct rapl_src {
    int n;
    rapl_zone_t z[ENERGY_MAX_DEVICES];
} rapl_src_t;

static int read_text(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t k = read(fd, buf, cap - 1);
    int saved = errno;
    close(fd);
    if (k < 0) {
        errno = saved;
        return -1;
    }
    buf[k] = 0;
    while (k > 0 && (buf[k - 1] == '\n' || buf[k - 1] == ' '))
        buf[--k] = 0;
    return 0;
}

static int read_uj(rapl_zone_t *z, double *uj, err_t *e)
{
    char buf[64];
    ssize_t k = pread(z->fd, buf, sizeof buf - 1, 0);
    if (k <= 0)
        return err_errno(e, ERR_FAIL, "RAPL: reading %s", z->path);
    buf[k] = 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || errno)
        return err_set(e, ERR_FAIL, "RAPL: %s holds \"%.20s\", not a counter", z->path, buf);
    *uj = (double)v;
    return ERR_OK;
}

static int rapl_read(void *impl, double t_now, int what, energy_sample_t *out,
                     int cap, int *n, err_t *e)
{
    rapl_src_t *s = impl;
    *n = 0;
    if (!(what & ENERGY_READ_COUNTER))
        return ERR_OK; /* RAPL has counters only */
    for (int d = 0; d < s->n && *n < cap; d++) {
        rapl_zone_t *z = &s->z[d];
        double uj;
        int rc = read_uj(z, &uj, e);
        if (rc)
            return rc;
        double delta = uj - z->last_uj;
        if (delta < 0) {
            /* The counter wrapped (at most once: at our read rates a wrap takes minutes). */
            if (z->max_uj <= 0)
                return err_set(e, ERR_FAIL, "RAPL: %s went back from %.0f to %.0f and "
                               "max_energy_range_uj is unknown", z->path, z->last_uj, uj);
            delta += z->max_uj;
        }
        double prev_J = z->total_J;
        z->total_J += delta / 1e6;
        z->last_uj = uj;
        energy_sample_t r = {NAN, d, NAN, z->total_J};
        if (isfinite(z->last_t) && t_now > z->last_t)
            r.power_W = (z->total_J - prev_J) / (t_now - z->last_t);
        z->last_t = t_now;
        out[(*n)++] = r;
    }
    return ERR_OK;
}

static void rapl_close(void *impl)
{
    rapl_src_t *s = impl;
    for (int i = 0; i < s->n; i++)
        if (s->z[i].fd >= 0)
            close(s->z[i].fd);
    free(s);
}

static const energy_source_ops_t rapl_ops = {rapl_read, rapl_close, NULL, NULL};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int energy_source_open_rapl(const energy_source_opts_t *o, energy_source_t **out, err_t *e)
{
    *out = NULL;
    const char *root = o && o->powercap_root ? o->powercap_root : "/sys/class/powercap";
    DIR *dir = opendir(root);
    if (!dir)
        return err_errno(e, ERR_UNAVAILABLE, "RAPL: cannot open %s", root);
    char *names[256];
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(dir)) && nn < 256)
        if (!strncmp(de->d_name, "intel-rapl:", 11))
            names[nn++] = strdup(de->d_name);
    closedir(dir);
    qsort(names, (size_t)nn, sizeof names[0], cmp_str);

    rapl_src_t *s = err_calloc(e, 1, sizeof *s, "RAPL source");
    energy_provenance_t *p = err_calloc(e, 1, sizeof *p, "RAPL provenance");
    int rc = ERR_OK;
    if (!s || !p) {
        rc = ERR_NOMEM;
        goto done;
    }
    char denied[600] = "", other[600] = "";
    for (int i = 0; i < nn; i++) {
        if (!names[i])
            continue;
        char path[512], zname[64];
        snprintf(path, sizeof path, "%s/%s/name", root, names[i]);
        if (read_text(path, zname, sizeof zname))
            continue;
        bool package = !strncmp(zname, "package", 7);
        if (!package && strcmp(zname, "dram"))
            continue; /* core, uncore, psys: parts of a package, or the whole platform */
        if (s->n == ENERGY_MAX_DEVICES)
            break;
        rapl_zone_t *z = &s->z[s->n];
        energy_device_info_t *di = &p->dev[s->n];
        snprintf(z->path, sizeof z->path, "%s/%s/energy_uj", root, names[i]);
        z->fd = open(z->path, O_RDONLY | O_CLOEXEC);
        if (z->fd < 0) {
            if (errno == EACCES || errno == EPERM) {
                if (!denied[0])
                    snprintf(denied, sizeof denied, "%s", z->path);
            } else if (!other[0]) {
                snprintf(other, sizeof other, "%s: %s", z->path, strerror(errno));
            }
            continue;
        }
        double uj;
        err_t e2 = ERR_INIT;
        if (read_uj(z, &uj, &e2)) {
            if (!other[0])
                snprintf(other, sizeof other, "%s", e2.msg);
            close(z->fd);
            continue;
        }
        z->last_uj = uj;
        z->last_t = NAN;
        char buf[64];
        snprintf(path, sizeof path, "%s/%s/max_energy_range_uj", root, names[i]);
        z->max_uj = read_text(path, buf, sizeof buf) ? 0 : strtod(buf, NULL);
        /* Sub-zone "intel-rapl:0:0" named dram belongs to package "intel-rapl:0". */
        if (package) {
            snprintf(di->label, sizeof di->label, "%s", zname);
        } else {
            char parent[64] = "", pname[64] = "";
            const char *c = strrchr(names[i], ':');
            if (c && c > names[i] + 11)
                snprintf(parent, sizeof parent, "%.*s", (int)(c - names[i]), names[i]);
            snprintf(path, sizeof path, "%s/%s/name", root, parent);
            if (parent[0] && !read_text(path, pname, sizeof pname))
                snprintf(di->label, sizeof di->label, "%.20s-dram", pname);
            else
                snprintf(di->label, sizeof di->label, "dram-%s", names[i] + 11);
        }
        snprintf(di->name, sizeof di->name, "RAPL %s zone (%s)", zname, names[i]);
        di->has_power = false;
        di->has_counter = true;
        snprintf(di->power_method, sizeof di->power_method,
                 "none: RAPL has energy counters only (power_W in the log is the average "
                 "since the previous read)");
        s->n++;
    }
    if (s->n == 0) {
        if (denied[0])
            rc = err_set(e, ERR_UNAVAILABLE,
                         "RAPL: permission denied reading %s: since Linux 5.10 (CVE-2020-8694) "
                         "the counters are readable by root only; run as root or have an "
                         "administrator grant read access (chmod o+r or a udev rule)", denied);
        else if (other[0])
            rc = err_set(e, ERR_UNAVAILABLE, "RAPL: %s", other);
        else
            rc = err_set(e, ERR_UNAVAILABLE, "RAPL: no package or dram zone under %s", root);
        goto done;
    }
    snprintf(p->kind, sizeof p->kind, "rapl");
    char cpu[200] = "";
    FILE *ci = fopen("/proc/cpuinfo", "r");
    if (ci) {
        char line[512];
        while (fgets(line, sizeof line, ci))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        fclose(ci);
    }
    snprintf(p->sensor, sizeof p->sensor, "RAPL energy counters via powercap (%s)%s%s", root,
             cpu[0] ? ", CPU " : "", cpu);
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(p->driver, sizeof p->driver, "Linux %s", u.release);
    if (denied[0])
        snprintf(p->notes, sizeof p->notes, "some zones were not readable (permission denied "
                 "on %s)", denied);
    p->ndev = s->n;
    p->update_period_s = 0.001; /* RAPL updates its counters about every millisecond */
    p->counter_period_s = 0.001;
    rc = energy_source_custom(&rapl_ops, s, p, false, out, e);
    if (!rc)
        s = NULL;
done:
    if (s)
        rapl_close(s);
    free(p);
    for (int i = 0; i < nn; i++)
        free(names[i]);
    return rc;
}
