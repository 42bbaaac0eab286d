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
        if (o->help && !strncmp(o->help, "deprecated", 10))
            fprintf(stderr, "mxrlhf %s: --%s is %s\n", spec->command, o->name, o->help);
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

void args_alias(arg_opt_t *opts, int *n, int cap, const char *alias, const char *target,
                const char *help)
{
    for (int i = 0; i < *n && *n < cap; i++)
        if (!strcmp(opts[i].name, target)) {
            opts[*n] = opts[i];
            opts[*n].name = alias;
            opts[*n].help = help;
            (*n)++;
            return;
        }
}

/* Is key in the comma-separated list (NULL: every key)? */
static bool listed(const char *list, const char *key)
{
    if (!list)
        return true;
    size_t n = strlen(key);
    for (const char *p = list; *p;) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == n && !strncmp(p, key, n))
            return true;
        if (!q)
            break;
        p = q + 1;
    }
    return false;
}

void args_mirror_add(args_mirror_t *mi, const opt_table_t *t, arg_opt_t *opts, int *n, int cap)
{
    args_mirror_add_only(mi, t, NULL, opts, n, cap);
}

void args_mirror_add_only(args_mirror_t *mi, const opt_table_t *t, const char *keys,
                          arg_opt_t *opts, int *n, int cap)
{
    opt_keys_t k;
    opts_keys(t, &k);
    for (int i = 0; i < k.n; i++) {
        const opt_ref_t *r = &k.ref[i];
        if (r->hidden || !r->f->flag || !listed(keys, r->f->key) || mi->n == ARGS_MAX_MIRRORED ||
            *n == cap)
            continue;
        bool dup = false;
        for (int j = 0; j < mi->n; j++)
            dup |= !strcmp(mi->m[j].flag, r->f->flag);
        if (dup)
            continue;
        int j = mi->n++;
        mi->m[j].flag = r->f->flag;
        mi->m[j].key = r->f->key;
        mi->m[j].is_bool = r->f->type == OPT_BOOL;
        mi->m[j].value = NULL;
        mi->m[j].set = false;
        opts_ref_help(r, mi->m[j].help, sizeof mi->m[j].help);
        static const char *const meta[] = {"N", "N", "S", "X", NULL, "NAME", "TEXT", "LIST"};
        opts[(*n)++] = (arg_opt_t){r->f->flag, mi->m[j].is_bool ? ARG_FLAG : ARG_STRING,
                                   mi->m[j].is_bool ? (void *)&mi->m[j].set
                                                    : (void *)&mi->m[j].value,
                                   meta[r->f->type], mi->m[j].help};
    }
}

static int mirror_index(const args_mirror_t *mi, const char *flag)
{
    for (int i = 0; i < mi->n; i++)
        if (!strcmp(mi->m[i].flag, flag))
            return i;
    return -1;
}

bool args_mirror_given(const args_mirror_t *mi, const char *flag)
{
    int i = mirror_index(mi, flag);
    return i >= 0 && (mi->m[i].value || mi->m[i].set);
}

const char *args_mirror_value(const args_mirror_t *mi, const char *flag)
{
    int i = mirror_index(mi, flag);
    return i >= 0 ? mi->m[i].value : NULL;
}

int args_mirror_apply_one(const args_mirror_t *mi, const char *flag, const opt_table_t *t,
                          const char *key, void *opts, err_t *e)
{
    int i = mirror_index(mi, flag);
    if (i < 0 || !(mi->m[i].value || mi->m[i].set))
        return ERR_OK;
    char ctx[80];
    snprintf(ctx, sizeof ctx, "--%s", flag);
    return opts_set_text(t, opts, key, mi->m[i].is_bool ? "true" : mi->m[i].value, ctx, e);
}

int args_mirror_apply(const args_mirror_t *mi, const opt_table_t *t, void *opts,
                      const char *why, err_t *e)
{
    opt_keys_t k;
    opts_keys(t, &k);
    for (int i = 0; i < mi->n; i++) {
        if (!(mi->m[i].value || mi->m[i].set))
            continue;
        if (!opts_find(&k, mi->m[i].key)) {
            if (why)
                return err_set(e, ERR_INPUT, "--%s %s", mi->m[i].flag, why);
            continue;
        }
        int rc = args_mirror_apply_one(mi, mi->m[i].flag, t, mi->m[i].key, opts, e);
        if (rc)
            return rc;
    }
    return opts_check(t, opts, t->name, e);
}

int args_set_keys(const opt_table_t *t, void *opts, const arg_list_t *sets, err_t *e)
{
    for (int i = 0; i < sets->n; i++) {
        int rc = opts_set_json(t, opts, sets->items[i], "--set", e);
        if (rc)
            return rc;
    }
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
