/* json: cJSON with errors that name the file and the field.
 *
 * `ctx` arguments are the name to print for the document (usually its path), so a
 * message reads: "model/config.json: field \"hidden_size\": expected an integer".
 */
#ifndef MXRLHF_UTIL_JSON_H
#define MXRLHF_UTIL_JSON_H

#include <cJSON.h>
#include <stdbool.h>

#include "util/err.h"

/* Parses a file (at most max_bytes); on a syntax error names line and column. */
int json_load_file(const char *path, size_t max_bytes, cJSON **out, err_t *e);

/* Parses text; `ctx` names it in errors. */
int json_parse(const char *text, size_t len, const char *ctx, cJSON **out, err_t *e);

/* Required fields: a missing key or a wrong type is an ERR_INPUT naming both. */
int json_req_int(const cJSON *obj, const char *key, const char *ctx, long long *out, err_t *e);
int json_req_double(const cJSON *obj, const char *key, const char *ctx, double *out, err_t *e);
int json_req_bool(const cJSON *obj, const char *key, const char *ctx, bool *out, err_t *e);
/* The string stays owned by obj. */
int json_req_string(const cJSON *obj, const char *key, const char *ctx, const char **out, err_t *e);

/* Optional fields: absent or JSON null leaves *out at `dflt`; a wrong type is an error. */
int json_opt_int(const cJSON *obj, const char *key, const char *ctx, long long dflt,
                 long long *out, err_t *e);
int json_opt_double(const cJSON *obj, const char *key, const char *ctx, double dflt,
                    double *out, err_t *e);
int json_opt_bool(const cJSON *obj, const char *key, const char *ctx, bool dflt, bool *out,
                  err_t *e);
int json_opt_string(const cJSON *obj, const char *key, const char *ctx, const char *dflt,
                    const char **out, err_t *e);

/* Writes the document pretty-printed (or compact) to path, atomically, with a final
 * newline. */
int json_write_file(const char *path, const cJSON *root, bool pretty, err_t *e);

#endif
