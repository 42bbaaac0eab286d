/* verify: `mxrlhf verify` — what this machine offers (CPU, GPU, driver, CUDA runtime, power
 * sources) and whether a given model directory and data file load. Each check says what it
 * found or why not; the exit code is 0 only when everything that was asked for works
 * (a model or data file given, or a GPU required). The CPU and power-source checks are
 * informational. */
#ifndef MXRLHF_PIPELINE_VERIFY_H
#define MXRLHF_PIPELINE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

/* CPU model name (from /proc/cpuinfo) and online cores. */
void pipeline_cpu_info(char *model, size_t cap, int *cores);

typedef struct pipeline_verify_opts {
    const char *model;      /* a model directory to load, or NULL */
    const char *data;       /* an HH-RLHF file to read, or NULL */
    bool require_gpu;       /* a GPU (NVML) and the CUDA runtime must be present */
    const char *cudart;     /* library to dlopen (NULL: libcudart.so, then versioned names) */
    const char *nvml_lib;   /* NULL: libnvidia-ml.so.1 */
    const char *powercap_root; /* NULL: /sys/class/powercap */
} pipeline_verify_opts_t;

#define PIPELINE_MAX_CHECKS 12

typedef struct pipeline_check {
    char name[32];          /* "cpu", "gpu", "cuda_runtime", "power:nvml", "model", "data" */
    bool asked;             /* its failure fails the command */
    int status;             /* ERR_OK, or the ERR_* code of the failure */
    char detail[1536];      /* what was found, or why not */
} pipeline_check_t;

typedef struct pipeline_verify_report {
    int n;
    pipeline_check_t check[PIPELINE_MAX_CHECKS];
} pipeline_verify_report_t;

/* Runs every check; returns the status of the first asked check that failed (ERR_INPUT
 * for a model or file that does not load, ERR_UNAVAILABLE for a missing GPU or runtime),
 * else ERR_OK. */
int pipeline_verify(const pipeline_verify_opts_t *o, pipeline_verify_report_t *r);

#endif
