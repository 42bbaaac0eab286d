/* args: the one option parser every subcommand uses, so flags, --help and errors look
 * the same everywhere. Options are "--name value" or "--name=value"; flags take no
 * value; "--" ends the options (what follows is returned as positional arguments). */
#ifndef MXRLHF_CLI_ARGS_H
#define MXRLHF_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"
#include "util/opts.h"

typedef enum {
    ARG_STRING, /* const char **            */
    ARG_INT,    /* long long *              */
    ARG_U64,    /* uint64_t * (seeds)       */
    ARG_DOUBLE, /* double *                 */
    ARG_FLAG,   /* bool *, set to true      */
    ARG_LIST    /* arg_list_t *: repeatable */
} arg_kind_t;

typedef struct arg_list {
    const char *items[64];
    int n;
} arg_list_t;

typedef struct arg_opt {
    const char *name;  /* without the leading "--" */
    arg_kind_t kind;
    void *dest;
    const char *meta;  /* value placeholder for help, e.g. "FILE" */
    const char *help;  /* "deprecated: ..." also prints this line to stderr when used */
} arg_opt_t;

typedef struct arg_spec {
    const char *command;   /* "mx quantize" */
    const char *summary;   /* one line */
    const char *usage;     /* after the command name, e.g. "--in IN --out OUT" */
    const char *details;   /* free text printed after the options, may be NULL */
    const arg_opt_t *opts;
    int nopts;
    bool positional;       /* accept positional arguments (else they are errors) */
} arg_spec_t;

/* Result of args_parse besides ERR_* codes: help was printed, exit 0. */
#define ARGS_HELP (-1)

/* Parses argv[0..argc) (argv[0] is the first option, not the program). On success
 * *npos and *pos give the positional arguments (those after "--" included). */
int args_parse(const arg_spec_t *spec, int argc, char **argv, int *npos, char ***pos, err_t *e);

void args_print_help(const arg_spec_t *spec);

/* Names the missing required option in e and returns ERR_INPUT when value is NULL. */
int args_require(const char *value, const char *name, err_t *e);

/* Another name for option `target` of opts[0..*n), printed as deprecated when used:
 * args_alias(opts, &n, cap, "backend", "device", "deprecated: use --device"). */
void args_alias(arg_opt_t *opts, int *n, int cap, const char *alias, const char *target,
                const char *help);

/* ---- flags that mirror configuration keys ------------------------------------------------ */

/* An options table's keys with a `flag` (util/opts.h) become options of a command, with
 * the table's help line, range and default; the values given are applied to the options
 * struct after the configuration (defaults, --config, --set) is read, through the table's
 * own parsing and checks. */
#define ARGS_MAX_MIRRORED 48

typedef struct args_mirror {
    int n;
    struct {
        const char *flag, *key;
        bool is_bool;
        const char *value;  /* the text given, or NULL */
        bool set;           /* a boolean flag was given */
        char help[320];
    } m[ARGS_MAX_MIRRORED];
} args_mirror_t;

/* Appends an option to opts[0..*n) (at most cap) for every flagged key of t that mi does
 * not hold yet. */
void args_mirror_add(args_mirror_t *mi, const opt_table_t *t, arg_opt_t *opts, int *n, int cap);
/* The same for the keys listed ("interval_ms,idle_s") only. */
void args_mirror_add_only(args_mirror_t *mi, const opt_table_t *t, const char *keys,
                          arg_opt_t *opts, int *n, int cap);

/* Whether --flag was given; its text (NULL when not given or a boolean flag). */
bool args_mirror_given(const args_mirror_t *mi, const char *flag);
const char *args_mirror_value(const args_mirror_t *mi, const char *flag);

/* Sets key of a struct of t to the given flag's value (error messages name --flag);
 * ERR_OK when the flag was not given. The table's checks are the caller's (opts_check). */
int args_mirror_apply_one(const args_mirror_t *mi, const char *flag, const opt_table_t *t,
                          const char *key, void *opts, err_t *e);

/* Applies every given flag whose key t has, then the table's checks; a given flag t lacks
 * is ERR_INPUT naming `why` ("goes with --phase") unless why is NULL, when it is skipped. */
int args_mirror_apply(const args_mirror_t *mi, const opt_table_t *t, void *opts,
                      const char *why, err_t *e);

/* Each "KEY=VALUE" of a command's --set list read into a struct of t (opts_set_json). */
int args_set_keys(const opt_table_t *t, void *opts, const arg_list_t *sets, err_t *e);

/* "1,2,3" (the value of --opt) -> token ids (non-negative, < 2^31); caller frees *out.
 * ERR_INPUT naming --opt and the text otherwise. */
int args_parse_ids(const char *text, const char *opt, int32_t **out, int *n, err_t *e);

#endif
