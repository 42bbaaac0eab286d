/* common: what the profile sweeps share (the perplexity matrix, sensitivity.h, and the
 * phase sensitivity, phase.h): the enums of their options, a model's fingerprint for
 * resume records, exact numbers in JSON, an append-only JSONL record, a minimal CSV
 * writer, and the machine's name. */
#ifndef MXRLHF_PROFILE_COMMON_H
#define MXRLHF_PROFILE_COMMON_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "model/qwen2.h"
#include "util/atomic_file.h"
#include "util/err.h"
#include "util/opts.h"

/* The MX and compute-type enums as options tables name them (mx.h's and precision.h's
 * names and aliases). */
extern const opt_enum_t profile_format_enum, profile_round_enum, profile_scale_enum,
    profile_compute_enum;

/* Monotonic seconds. */
double profile_now_s(void);

/* One step of the FNV-style hash the fingerprints use. */
uint64_t profile_mix(uint64_t h, uint64_t w);
#define PROFILE_HASH_INIT 0xCBF29CE484222325ull

/* Of the configuration and every parameter's bits: a resumed sweep must see the same
 * model. */
int profile_model_fingerprint(qwen2_model_t *m, uint64_t *out, err_t *e);

/* "%016llx" into buf (17 bytes). */
void profile_hex64(uint64_t v, char *buf);

/* A double written exactly: cJSON prints 15 significant digits when they read back to
 * within an epsilon, which is not the same double, so the number is written with 17.
 * JSON has no NaN: a non-finite value is written as null. */
void profile_json_add_exact(cJSON *o, const char *key, double v);
cJSON *profile_json_exact(double v);

/* An append-only record: one line per call, flushed and fsynced, so a crash loses at
 * most the line being written. */
typedef struct profile_record {
    FILE *f;
    const char *path;
} profile_record_t;

/* Writes `line` (consumed) as one line. */
int profile_record_append(profile_record_t *r, cJSON *line, err_t *e);

/* Opens the record at path for appending. valid > 0: a resumed record whose first valid
 * bytes are kept (a torn last line is cut off); valid == 0: a fresh record holding only
 * the header line hdr (written atomically). r->path keeps path (the caller's string). */
int profile_record_open(profile_record_t *r, const char *path, const cJSON *hdr, size_t valid,
                        err_t *e);

/* Called for each complete line after the header, in order (lineno from 2). */
typedef int (*profile_record_line_fn)(void *ctx, const cJSON *line, int lineno, err_t *e);

/* Reads a record written by profile_record_*: its header line must carry the same string
 * values as `want` under each of keys[0, nkeys) (else an error saying the record was made
 * for another what[k]); each later line goes to fn. A torn or garbled last line is a write
 * cut short and ignored; a garbled line before it is an error. valid_len receives the
 * length of the valid prefix, to cut the torn line off before appending. */
int profile_record_read(const char *path, const cJSON *want, const char *const *keys,
                        const char *const *what, int nkeys, profile_record_line_fn fn,
                        void *ctx, size_t *valid_len, err_t *e);

/* A minimal RFC 4180 writer over util/atomic_file: the report layer's writer sits above
 * this one, and these files need no more than cells, numbers and booleans. */
typedef struct profile_table {
    atomic_file_t af;
    int col;
} profile_table_t;

int profile_table_open(profile_table_t *t, const char *path, err_t *e);
void profile_table_cell(profile_table_t *t, const char *s);   /* NULL: an empty cell */
/* The shortest text that reads back to the same double; NaN (or infinity) leaves the cell
 * empty, because a missing figure is not a number. */
void profile_table_num(profile_table_t *t, double v);
void profile_table_int(profile_table_t *t, long long v);
void profile_table_bool(profile_table_t *t, bool v);
void profile_table_end(profile_table_t *t);                   /* ends the row */
int profile_table_commit(profile_table_t *t, err_t *e);

/* The CPU's model name from /proc/cpuinfo ("unknown" when it cannot be read). */
void profile_cpu_name(char *buf, size_t n);

#endif
