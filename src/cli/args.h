/* args: the one option parser every subcommand uses, so flags, --help and errors look
 * the same everywhere. Options are "--name value" or "--name=value"; flags take no
 * value; "--" ends the options (what follows is returned as positional arguments). */
#ifndef MXRLHF_CLI_ARGS_H
#define MXRLHF_CLI_ARGS_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

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
    const char *help;
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

/* "1,2,3" (the value of --opt) -> token ids (non-negative, < 2^31); caller frees *out.
 * ERR_INPUT naming --opt and the text otherwise. */
int args_parse_ids(const char *text, const char *opt, int32_t **out, int *n, err_t *e);

#endif
