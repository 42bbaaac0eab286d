/* source: power sensors behind one interface.
 *
 * A source reads, for each of its devices, an instant power (W) and/or a cumulative
 * energy counter (J since the source was opened, never decreasing: the source unwraps
 * counters that wrap). Four kinds exist:
 *   nvml         NVIDIA GPUs through libnvidia-ml.so.1, loaded with dlopen (no link-time
 *                dependency); instant power from field 186, the energy counter where the
 *                card has one; devices matched to CUDA devices by PCI bus id.
 *   rapl         CPU package and DRAM zones of /sys/class/powercap (energy counters only;
 *                power is derived from successive counter reads).
 *   replay:FILE  a power log we recorded earlier (power_log CSV), played on the run's
 *                clock: row time_s is reported at run time time_s ("virtual time").
 *   none         no sensor: runs are timed, energies are left empty.
 * `auto` tries nvml, then rapl, then none, and says what it picked and why not the
 * others. Tests build their own sources with energy_source_custom.
 *
 * This layer reads no environment variables and holds no global state: whatever the
 * caller's environment says (CUDA_VISIBLE_DEVICES, ...) arrives in energy_source_opts_t;
 * energy_source_opts_from_env fills it for command-line callers.
 */
#ifndef MXRLHF_ENERGY_SOURCE_H
#define MXRLHF_ENERGY_SOURCE_H

#include <stdbool.h>

#include "util/err.h"

#define ENERGY_MAX_DEVICES 32
#define ENERGY_LABEL_MAX 32

/* One reading. t is run time in seconds (the monitor's clock); a live source leaves it
 * NAN and the monitor stamps it; a replay source sets it from the file. power_W and
 * energy_J are NAN when not read this time. */
typedef struct energy_sample {
    double t;
    int dev;
    double power_W;
    double energy_J;
} energy_sample_t;

typedef struct energy_device_info {
    char label[ENERGY_LABEL_MAX]; /* power_log "device" column: gpu0, package-0, ...      */
    char name[128];               /* card or zone name                                    */
    char bus_id[32];              /* PCI bus id, canonical 00000000:1A:00.0 (NVML only)   */
    char uuid[96];                /* GPU-... (NVML only)                                  */
    bool has_power;               /* instant power readings                               */
    bool has_counter;             /* cumulative energy counter                            */
    char power_method[128];       /* how power_W is obtained                              */
} energy_device_info_t;

/* What was measured and how: copied into every output (phase_timing.json, energy.csv). */
typedef struct energy_provenance {
    char kind[16];            /* nvml, rapl, replay, none, custom                        */
    char sensor[256];         /* human description of the sensor                         */
    char driver[64];          /* GPU driver version (nvml), kernel release (rapl)        */
    char library[64];         /* NVML library version                                    */
    char choice[1536];        /* why this source (auto: why not the others)              */
    char notes[1024];         /* device-mapping assumptions, fallbacks                   */
    double update_period_s;   /* the sensor's own update period (nominal)                */
    double counter_period_s;  /* the energy counter's update period (0: none/unknown)    */
    double observed_period_s; /* update period seen while reading (0: not observed)      */
    /* How much of each update period an instant-power reading averages over (the
     * "content window" ending at the update; 0: unknown). Enables the sampled method. */
    double content_window_s;
    int ndev;
    energy_device_info_t dev[ENERGY_MAX_DEVICES];
} energy_provenance_t;

/* A device's clocks and temperature at one moment, for logging drift between runs
 * (thermal throttling, clock changes). NAN where the source cannot tell. */
typedef struct energy_device_state {
    double sm_clock_MHz;        /* NVML: nvmlDeviceGetClockInfo(NVML_CLOCK_SM)            */
    double mem_clock_MHz;       /* NVML: nvmlDeviceGetClockInfo(NVML_CLOCK_MEM)           */
    double temperature_C;       /* NVML: nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)   */
    double throttle_reasons;    /* NVML: nvmlDeviceGetCurrentClocksThrottleReasons bit
                                   mask (0: not throttled), as a number                  */
} energy_device_state_t;

/* What a read asks for. Power and counter are read in separate calls because NVML's
 * counter takes milliseconds, and each reading should carry the time it was taken. */
enum { ENERGY_READ_POWER = 1, ENERGY_READ_COUNTER = 2 };

typedef struct energy_source_ops {
    /* Appends up to cap readings to out and sets *n. t_now is run time (seconds since
     * the monitor's origin); what is ENERGY_READ_POWER or ENERGY_READ_COUNTER (a source
     * without that reading returns none). A replay source ignores `what` and returns its
     * rows with time_s <= t_now not yet returned; when *n == cap, call again for more. */
    int (*read)(void *impl, double t_now, int what, energy_sample_t *out, int cap, int *n,
                err_t *e);
    void (*close)(void *impl);
    /* Optional: adds what was learned while reading (an observed update period) to the
     * provenance; called once when sampling stops. */
    void (*finish)(void *impl, energy_provenance_t *prov);
    /* Optional: the device's clocks and temperature now (energy_source_state). */
    int (*state)(void *impl, int dev, energy_device_state_t *out, err_t *e);
} energy_source_ops_t;

typedef struct energy_source {
    const energy_source_ops_t *ops;
    void *impl;
    bool virtual_time; /* readings carry their own t (replay) */
    double virtual_end; /* virtual time: the last reading's run time (0: not known) */
    energy_provenance_t prov;
} energy_source_t;

typedef struct energy_source_opts {
    const char *nvml_lib;        /* NULL: "libnvidia-ml.so.1"                            */
    const char *powercap_root;   /* NULL: "/sys/class/powercap"                          */
    /* Which GPUs: NULL or "all" (every CUDA-visible GPU), or a comma list whose items
     * are PCI bus ids ("0000:1a:00.0") or CUDA-visible indices ("0"). */
    const char *devices;
    const char *cuda_visible_devices; /* value of CUDA_VISIBLE_DEVICES (NULL: unset)       */
    const char *cuda_device_order;    /* value of CUDA_DEVICE_ORDER (NULL: FASTEST_FIRST)  */
    /* PCI bus ids of the caller's CUDA devices in CUDA order, comma separated (for
     * example what a CUDA program read with cudaDeviceGetPCIBusId): makes the index ->
     * GPU mapping exact. NULL: unknown. */
    const char *cuda_bus_ids;
    double replay_update_period_s;    /* replay: the recorded sensor's period (0: infer)   */
} energy_source_opts_t;

/* Name of the environment variable energy_source_opts_from_env reads cuda_bus_ids from. */
#define ENERGY_BUS_IDS_ENV "MXRLHF_CUDA_BUS_IDS"

/* Fills the CUDA fields from CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER and
 * MXRLHF_CUDA_BUS_IDS; other fields are left as they are. */
void energy_source_opts_from_env(energy_source_opts_t *o);

/* Opens "auto", "nvml", "rapl", "replay:FILE" or "none". On success *out is owned by the
 * caller (energy_source_close). With "auto" never fails for lack of a sensor: it falls
 * back to none and prov.choice says why. Explicit kinds fail with ERR_UNAVAILABLE and a
 * message that says what is missing (library, GPU, permission). */
int energy_source_open(const char *spec, const energy_source_opts_t *o, energy_source_t **out,
                       err_t *e);

int energy_source_open_nvml(const energy_source_opts_t *o, energy_source_t **out, err_t *e);
int energy_source_open_rapl(const energy_source_opts_t *o, energy_source_t **out, err_t *e);
int energy_source_open_replay(const char *path, const energy_source_opts_t *o,
                              energy_source_t **out, err_t *e);
int energy_source_open_none(energy_source_t **out, err_t *e);

/* A source from caller-supplied operations (tests, future sensors). prov is copied;
 * its kind should say what it is. */
int energy_source_custom(const energy_source_ops_t *ops, void *impl,
                         const energy_provenance_t *prov, bool virtual_time,
                         energy_source_t **out, err_t *e);

void energy_source_close(energy_source_t *s);

/* Clocks and temperature of device `dev` now. Only NVML gives them: other sources (RAPL,
 * replay, none) return ERR_UNAVAILABLE with a message saying so, and every field NAN. A
 * reading NVML refuses for this card is NAN, not an error. */
int energy_source_state(const energy_source_t *s, int dev, energy_device_state_t *out,
                        err_t *e);

/* Canonical PCI bus id "DDDDDDDD:BB:DD.F" (upper-case hex) from the forms NVML, CUDA
 * and sysfs print ("0000:1a:00.0", "00000000:1A:00.0", "1a:00.0"). */
int energy_pci_canonical(const char *in, char out[32]);

/* One line "kind: sensor, N device(s) (names), driver X" for summaries. */
void energy_provenance_line(const energy_provenance_t *p, char *buf, int cap);

#endif
