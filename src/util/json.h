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

/* Parses text; `ctx` names it in errors. Besides syntax, it refuses what cJSON would
 * accept but lose: a NUL byte or a \u0000 escape in the document (cJSON ends strings at
 * U+0000, so the text would be cut short; the error gives line and column), and a key
 * repeated in one object (json_check_unique_keys). What follows the document is ignored. */
int json_parse(const char *text, size_t len, const char *ctx, cJSON **out, err_t *e);

/* Offset of the first NUL byte or \u0000 escape in JSON text (an escape is a backslash
 * preceded by an even number of backslashes), or -1 when there is none. *escape says
 * which it was. */
long json_find_nul(const char *text, size_t len, bool *escape);

/* ERR_INPUT when an object in the tree holds a key twice (cJSON keeps both and readers
 * would take one of them silently), naming the key by its path from the root (keys joined
 * by '.', array items as [i]): "ctx: key \"ppo.lr\" appears twice (...)". */
int json_check_unique_keys(const cJSON *root, const char *ctx, err_t *e);

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
