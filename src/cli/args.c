/* args: see args.h. */
#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void args_print_help(const arg_spec_t *spec)
{
    printf("usage: mxrlhf %s %s\n\n%s\n", spec->command, spec->usage ? spec->usage : "",
           spec->summary);
    if (spec->nopts)
        printf("\noptions:\n");
    for (int i = 0; i < spec->nopts; i++) {
        const arg_opt_t *o = &spec->opts[i];
        char left[64];
        if (o->kind == ARG_FLAG)
            snprintf(left, sizeof left, "--%s", o->name);
        else
            snprintf(left, sizeof left, "--%s %s", o->name, o->meta ? o->meta : "X");
        printf("  %-28s %s\n", left, o->help);
    }
    printf("  %-28s %s\n", "--help", "print this help and exit");
    if (spec->details)
        printf("\n%s\n", spec->details);
}

static int parse_value(const arg_opt_t *o, const char *v, err_t *e)
{
    char *end;
    errno = 0;
    switch (o->kind) {
    case ARG_STRING:
        *(const char **)o->dest = v;
        return ERR_OK;
    case ARG_LIST: {
        arg_list_t *l = o->dest;
        if (l->n >= (int)(sizeof l->items / sizeof l->items[0]))
            return err_set(e, ERR_INPUT, "--%s: given too many times", o->name);
        l->items[l->n++] = v;
        return ERR_OK;
    }
    case ARG_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end)
            return err_set(e, ERR_INPUT, "--%s: expected an integer, got \"%s\"", o->name, v);
        *(long long *)o->dest = x;
        return ERR_OK;
    }
    case ARG_U64: {
        if (*v == '-')
            return err_set(e, ERR_INPUT, "--%s: expected a non-negative integer, got \"%s\"",
                           o->name, v);
        unsigned long long x = strtoull(v, &end, 0);
        if (errno || end == v || *end)
            return err_set(e, ERR_INPUT, "--%s: expected a non-negative integer, got \"%s\"",
                           o->name, v);
        *(uint64_t *)o->dest = x;
        return ERR_OK;
    }
    case ARG_DOUBLE: {
        double x = strtod(v, &end);
        if (errno || end == v || *end)
            return err_set(e, ERR_INPUT, "--%s: expected a number, got \"%s\"", o->name, v);
        *(double *)o->dest = x;
        return ERR_OK;
    }
    case ARG_FLAG:
        break;
    }
    return err_set(e, ERR_INPUT, "--%s takes no value", o->name);
}

int args_parse(const arg_spec_t *spec, int argc, char **argv, int *npos, char ***pos, err_t *e)
{
    /* Positionals are collected in place at the front of argv. */
    int np = 0;
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            if (!spec->positional)
                return err_set(e, ERR_INPUT, "unexpected \"--\" (see --help)");
            for (i++; i < argc; i++)
                argv[np++] = argv[i];
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args_print_help(spec);
            return ARGS_HELP;
        }
        if (strncmp(a, "--", 2) != 0) {
            if (!spec->positional)
                return err_set(e, ERR_INPUT, "unexpected argument \"%s\" (see --help)", a);
            argv[np++] = a;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const arg_opt_t *o = NULL;
        for (int k = 0; k < spec->nopts; k++)
            if (strlen(spec->opts[k].name) == nlen && !strncmp(spec->opts[k].name, name, nlen))
                o = &spec->opts[k];
        if (!o)
            return err_set(e, ERR_INPUT, "unknown option --%.*s (see mxrlhf %s --help)",
                           (int)nlen, name, spec->command);
        if (o->kind == ARG_FLAG) {
            if (eq)
                return err_set(e, ERR_INPUT, "--%s takes no value", o->name);
            *(bool *)o->dest = true;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc)
                return err_set(e, ERR_INPUT, "--%s needs a value (%s)", o->name,
                               o->meta ? o->meta : "X");
            v = argv[++i];
        }
        int rc = parse_value(o, v, e);
        if (rc)
            return rc;
    }
    *npos = np;
    *pos = argv;
    return ERR_OK;
}

int args_require(const char *value, const char *name, err_t *e)
{
    if (value)
        return ERR_OK;
    return err_set(e, ERR_INPUT, "--%s is required", name);
}

int args_parse_ids(const char *text, const char *opt, int32_t **out, int *n, err_t *e)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids)
        return err_set(e, ERR_NOMEM, "out of memory");
    int k = 0;
    const char *p = text;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 0x7fffffff || (*end && *end != ',')) {
            free(ids);
            return err_set(e, ERR_INPUT, "--%s: expected comma-separated token ids, got \"%s\"",
                           opt, text);
        }
        ids[k++] = (int32_t)v;
        if (!*end)
            break;
        p = end + 1;
    }
    *out = ids;
    *n = k;
    return ERR_OK;
}
