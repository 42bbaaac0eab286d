/* opts: options tables (opts.h). */
#include "util/opts.h"

#include "util/json.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the keys of a section ---------------------------------------------------------------- */

/* Is key in the comma-separated list? */
static bool in_list(const char *list, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = list; p && *p;) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == n && !strncmp(p, key, n))
            return true;
        p = q ? q + 1 : NULL;
    }
    return false;
}

/* The value of key in "k=v;k=v" (a pointer into the list, up to ';' or the end), or NULL. */
static const char *override_of(const char *list, const char *key, size_t *len)
{
    size_t n = strlen(key);
    for (const char *p = list; p && *p;) {
        const char *q = strchr(p, ';');
        size_t l = q ? (size_t)(q - p) : strlen(p);
        if (l > n && p[n] == '=' && !strncmp(p, key, n)) {
            *len = l - n - 1;
            return p + n + 1;
        }
        p = q ? q + 1 : NULL;
    }
    return NULL;
}

/* An overridden default ("key=value" piece of an OPT_SUB row) copied into k->defs. */
static const char *keep_def(opt_keys_t *k, size_t *used, const char *v, size_t len)
{
    assert(*used + len + 1 <= sizeof k->defs);
    char *d = k->defs + *used;
    memcpy(d, v, len);
    d[len] = 0;
    *used += len + 1;
    return d;
}

/* omit and defs: what the parent's OPT_SUB row says of this table's keys (nested ones
 * included, as the keys are flat) */
static void flatten_into(const opt_table_t *t, size_t base, const char *omit, const char *defs,
                         bool hidden, opt_keys_t *k, size_t *used)
{
    for (int i = 0; i < t->n; i++) {
        const opt_field_t *f = &t->fields[i];
        bool hide = hidden || (omit && in_list(omit, f->key));
        if (f->type == OPT_SUB) {
            /* the sub's own overrides; ours (outer) win, so they are applied after */
            int first = k->n;
            flatten_into(f->sub, base + f->off, f->omit, f->def, hide, k, used);
            for (int i2 = first; i2 < k->n; i2++) {
                opt_ref_t *r = &k->ref[i2];
                size_t len;
                const char *v = defs ? override_of(defs, r->f->key, &len) : NULL;
                r->hidden |= omit && in_list(omit, r->f->key);
                if (v)
                    r->def = keep_def(k, used, v, len);
            }
            continue;
        }
        assert(k->n < OPT_MAX_KEYS);
        opt_ref_t *r = &k->ref[k->n++];
        size_t len;
        const char *v = defs ? override_of(defs, f->key, &len) : NULL;
        r->f = f;
        r->off = base + f->off;
        r->def = v ? keep_def(k, used, v, len) : f->def;
        r->hidden = hide;
    }
}

void opts_keys(const opt_table_t *t, opt_keys_t *k)
{
    size_t used = 0;
    k->n = 0;
    flatten_into(t, 0, NULL, NULL, false, k, &used);
}

const opt_ref_t *opts_find(const opt_keys_t *k, const char *key)
{
    for (int i = 0; i < k->n; i++)
        if (!k->ref[i].hidden && (!strcmp(k->ref[i].f->key, key) ||
                                  (k->ref[i].f->alias && !strcmp(k->ref[i].f->alias, key))))
            return &k->ref[i];
    return NULL;
}

/* ---- enums -------------------------------------------------------------------------------- */

static int enum_count(const opt_enum_t *en)
{
    if (!en->names)
        return en->count;
    int n = 0;
    while (en->names[n])
        n++;
    return n;
}

static const char *enum_name(const opt_enum_t *en, int v)
{
    if (v < 0 || v >= enum_count(en))
        return "?";
    return en->names ? en->names[v] : en->name(v);
}

static int enum_parse(const opt_enum_t *en, const char *s, int *v)
{
    if (!en->names)
        return en->parse(s, v);
    for (int i = 0; en->names[i]; i++)
        if (!strcmp(en->names[i], s)) {
            *v = i;
            return 0;
        }
    return -1;
}

/* "\"a\", \"b\", \"c\"" */
static void enum_choices(const opt_enum_t *en, char *buf, size_t cap, bool quoted)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < enum_count(en) && at + 1 < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, quoted ? "%s\"%s\"" : "%s%s", i ? ", " : "",
                               enum_name(en, i));
}

/* ---- setting one value --------------------------------------------------------------------- */

/* Where a value goes and how errors name it: from JSON, "CTX: field \"KEY\": ..."; from a
 * flag's text, "CTX: ..., got \"TEXT\"". */
typedef struct dest {
    const opt_ref_t *r;
    char *base;
    const char *ctx;
    const char *text; /* NULL when the value came from JSON */
} dest_t;

__attribute__((format(printf, 3, 4))) static int bad(const dest_t *d, err_t *e, const char *fmt,
                                                       ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (d->text)
        return err_set(e, ERR_INPUT, "%s: %s, got \"%s\"", d->ctx, what, d->text);
    return err_set(e, ERR_INPUT, "%s: field \"%s\": %s", d->ctx, d->r->f->key, what);
}

/* "in [min, max]" or "of at least min" */
static void range_text(const opt_field_t *f, char *buf, size_t cap)
{
    if (f->max >= OPT_NO_MAX)
        snprintf(buf, cap, "of at least %.15g", f->min);
    else
        snprintf(buf, cap, "in [%.15g, %.15g]", f->min, f->max);
}

static int range_error(const dest_t *d, const char *kind, double v, err_t *e)
{
    char range[96];
    range_text(d->r->f, range, sizeof range);
    if (d->text || !isfinite(v))
        return bad(d, e, "expected %s %s", kind, range);
    return bad(d, e, "expected %s %s, got %.17g", kind, range, v);
}

/* a number for an OPT_INT / OPT_LONG / OPT_DOUBLE key, or an element of a list */
static int set_number(const dest_t *d, double v, void *p, err_t *e)
{
    const opt_field_t *f = d->r->f;
    bool is_int = f->type != OPT_DOUBLE;
    const char *kind = is_int ? "an integer" : "a number";
    if (!isfinite(v) || (is_int && v != floor(v)) || v < f->min || v > f->max)
        return range_error(d, kind, v, e);
    if (f->type == OPT_DOUBLE)
        *(double *)p = v;
    else if (f->type == OPT_LONG)
        *(long *)p = (long)v;
    else
        *(int *)p = (int)v;
    return ERR_OK;
}

static int set_u64(const dest_t *d, uint64_t v, err_t *e)
{
    *(uint64_t *)(d->base + d->r->off) = v;
    return ERR_OK;
}

static int set_name(const dest_t *d, const char *s, int *out, err_t *e)
{
    if (!s || enum_parse(d->r->f->en, s, out)) {
        char choices[400];
        enum_choices(d->r->f->en, choices, sizeof choices, true);
        return bad(d, e, "expected one of %s", choices);
    }
    return ERR_OK;
}

static int set_string(const dest_t *d, const char *s, err_t *e)
{
    const opt_field_t *f = d->r->f;
    if (!s)
        return bad(d, e, "expected a string");
    if (strlen(s) >= f->cap)
        return bad(d, e, "longer than %zu bytes", f->cap - 1);
    memmove(d->base + d->r->off, s, strlen(s) + 1);
    return ERR_OK;
}

/* text -> double: the whole text a number */
static bool text_number(const char *s, double *v)
{
    char *end;
    errno = 0;
    *v = strtod(s, &end);
    return !errno && end != s && !*end;
}

/* a list element: a name (lists of an enum) or an integer */
static int set_element(const dest_t *d, const cJSON *j, const char *s, int *out, err_t *e)
{
    const opt_field_t *f = d->r->f;
    if (f->en)
        return set_name(d, j ? (cJSON_IsString(j) ? j->valuestring : NULL) : s, out, e);
    double v;
    if (j ? !cJSON_IsNumber(j) : !text_number(s, &v))
        return bad(d, e, "expected integers in [%.15g, %.15g]", f->min, f->max);
    if (j)
        v = j->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < f->min || v > f->max)
        return bad(d, e, "expected integers in [%.15g, %.15g], got %.17g", f->min, f->max, v);
    *out = (int)v;
    return ERR_OK;
}

static int set_from_json(const dest_t *d, const cJSON *v, err_t *e)
{
    const opt_field_t *f = d->r->f;
    void *p = d->base + d->r->off;
    switch (f->type) {
    case OPT_INT:
    case OPT_LONG:
    case OPT_DOUBLE:
        if (!cJSON_IsNumber(v))
            return range_error(d, f->type == OPT_DOUBLE ? "a number" : "an integer", NAN, e);
        return set_number(d, v->valuedouble, p, e);
    case OPT_U64: {
        if (cJSON_IsNumber(v)) {
            double x = v->valuedouble;
            if (x < 0 || x != floor(x) || x > 9007199254740992.0)
                return bad(d, e, "expected an integer in [0, 2^53] (or a decimal string for "
                           "larger values)");
            return set_u64(d, (uint64_t)x, e);
        }
        const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
        char *end = NULL;
        errno = 0;
        unsigned long long x = s && *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
        if (!s || !end || *end || errno)
            return bad(d, e, "expected an unsigned integer or a decimal string");
        return set_u64(d, (uint64_t)x, e);
    }
    case OPT_BOOL:
        if (!cJSON_IsBool(v))
            return bad(d, e, "expected true or false");
        *(bool *)p = cJSON_IsTrue(v);
        return ERR_OK;
    case OPT_ENUM:
        return set_name(d, cJSON_IsString(v) ? v->valuestring : NULL, (int *)p, e);
    case OPT_STRING:
        return set_string(d, cJSON_IsString(v) ? v->valuestring : NULL, e);
    case OPT_LIST: {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > (int)f->cap)
            return bad(d, e, "expected an array of at most %zu %s", f->cap,
                       f->en ? "names" : "integers");
        int *items = p, n = 0;
        for (const cJSON *c = v->child; c; c = c->next, n++) {
            int rc = set_element(d, c, NULL, &items[n], e);
            if (rc)
                return rc;
        }
        *(int *)(d->base + f->count_off + (d->r->off - f->off)) = n;
        return ERR_OK;
    }
    case OPT_SUB:
        break;
    }
    return bad(d, e, "not a value");
}

static int set_from_text(const dest_t *d, const char *s, err_t *e)
{
    const opt_field_t *f = d->r->f;
    void *p = d->base + d->r->off;
    switch (f->type) {
    case OPT_INT:
    case OPT_LONG:
    case OPT_DOUBLE: {
        double v;
        if (!text_number(s, &v))
            return range_error(d, f->type == OPT_DOUBLE ? "a number" : "an integer", NAN, e);
        return set_number(d, v, p, e);
    }
    case OPT_U64: {
        char *end;
        errno = 0;
        unsigned long long x = *s == '-' ? 0 : strtoull(s, &end, 0);
        if (*s == '-' || errno || end == s || *end)
            return bad(d, e, "expected a non-negative integer");
        return set_u64(d, (uint64_t)x, e);
    }
    case OPT_BOOL:
        if (strcmp(s, "true") && strcmp(s, "false"))
            return bad(d, e, "expected true or false");
        *(bool *)p = !strcmp(s, "true");
        return ERR_OK;
    case OPT_ENUM:
        return set_name(d, s, (int *)p, e);
    case OPT_STRING:
        return set_string(d, s, e);
    case OPT_LIST: {
        int *items = p, n = 0;
        char item[128];
        for (const char *q = s;;) {
            const char *c = strchr(q, ',');
            size_t len = c ? (size_t)(c - q) : strlen(q);
            if ((size_t)n == f->cap || !len || len >= sizeof item)
                return bad(d, e, "expected 1 to %zu comma-separated %s", f->cap,
                           f->en ? "names" : "integers");
            memcpy(item, q, len);
            item[len] = 0;
            int rc = set_element(d, NULL, item, &items[n++], e);
            if (rc)
                return rc;
            if (!c)
                break;
            q = c + 1;
        }
        *(int *)(d->base + f->count_off + (d->r->off - f->off)) = n;
        return ERR_OK;
    }
    case OPT_SUB:
        break;
    }
    return bad(d, e, "not a value");
}

/* ---- sections -------------------------------------------------------------------------------- */

void opts_default(const opt_table_t *t, void *opts)
{
    opt_keys_t k;
    opts_keys(t, &k);
    memset(opts, 0, t->size);
    for (int i = 0; i < k.n; i++) {
        err_t e = ERR_INIT;
        if (!k.ref[i].def)
            continue; /* zero */
        dest_t d = {&k.ref[i], opts, t->name, k.ref[i].def};
        int rc = set_from_text(&d, k.ref[i].def, &e);
        assert(rc == ERR_OK && "a default of an options table does not parse");
        (void)rc;
    }
}

const char *opts_nearest(const char *key, const char *const *keys, int n)
{
    const char *best = NULL;
    size_t best_d = (size_t)-1, lk = strlen(key);
    for (int i = 0; i < n; i++) {
        /* Levenshtein distance, one row */
        size_t lc = strlen(keys[i]), row[128];
        if (lc >= 127 || lk >= 127)
            continue;
        for (size_t j = 0; j <= lc; j++)
            row[j] = j;
        for (size_t a = 1; a <= lk; a++) {
            size_t diag = row[0];
            row[0] = a;
            for (size_t j = 1; j <= lc; j++) {
                size_t up = row[j];
                size_t cost = diag + (key[a - 1] != keys[i][j - 1]);
                size_t del = row[j] + 1, ins = row[j - 1] + 1;
                row[j] = cost < del ? (cost < ins ? cost : ins) : (del < ins ? del : ins);
                diag = up;
            }
        }
        if (row[lc] < best_d) {
            best_d = row[lc];
            best = keys[i];
        }
    }
    return best;
}

static int unknown_key(const opt_keys_t *k, const char *ctx, const char *key, err_t *e)
{
    const char *keys[OPT_MAX_KEYS];
    int n = 0;
    for (int i = 0; i < k->n; i++)
        if (!k->ref[i].hidden)
            keys[n++] = k->ref[i].f->key;
    const char *near = opts_nearest(key, keys, n);
    if (near)
        return err_set(e, ERR_INPUT, "%s: unknown key \"%s\" (did you mean \"%s\"?)", ctx, key,
                       near);
    return err_set(e, ERR_INPUT, "%s: unknown key \"%s\" (this section has no keys)", ctx, key);
}

int opts_from_json(const opt_table_t *t, const cJSON *obj, const char *ctx, void *opts,
                   err_t *e)
{
    if (!obj)
        return ERR_OK;
    if (!cJSON_IsObject(obj))
        return err_set(e, ERR_INPUT, "%s: expected an object", ctx);
    opt_keys_t k;
    opts_keys(t, &k);
    char *tmp = err_malloc(e, t->size, "options");
    if (!tmp)
        return e->code;
    memcpy(tmp, opts, t->size);
    int rc = ERR_OK;
    /* a sub's omitted keys are not keys here: they always hold their defaults, so that a
       section reads back into the same struct whatever it started from */
    for (int i = 0; i < k.n && !rc; i++)
        if (k.ref[i].hidden && k.ref[i].def) {
            dest_t d = {&k.ref[i], tmp, t->name, k.ref[i].def};
            rc = set_from_text(&d, k.ref[i].def, e);
        }
    for (const cJSON *it = obj->child; it && !rc; it = it->next) {
        const opt_ref_t *r = opts_find(&k, it->string);
        for (const cJSON *p = obj->child; p != it && !rc; p = p->next)
            if (!strcmp(p->string, it->string))
                rc = err_set(e, ERR_INPUT, "%s: key \"%s\" given twice", ctx, it->string);
            else if (r && opts_find(&k, p->string) == r)
                rc = err_set(e, ERR_INPUT, "%s: key \"%s\" given twice (also as \"%s\")", ctx,
                             r->f->key, strcmp(it->string, r->f->key) ? it->string : p->string);
        if (!rc && !r)
            rc = unknown_key(&k, ctx, it->string, e);
        if (!rc) {
            dest_t d = {r, tmp, ctx, NULL};
            rc = set_from_json(&d, it, e);
        }
    }
    if (!rc && t->check)
        rc = t->check(tmp, ctx, e);
    if (!rc)
        memcpy(opts, tmp, t->size);
    free(tmp);
    return rc;
}

static cJSON *value_json(const opt_ref_t *r, const char *base)
{
    const opt_field_t *f = r->f;
    const void *p = base + r->off;
    switch (f->type) {
    case OPT_INT: return cJSON_CreateNumber(*(const int *)p);
    case OPT_LONG: return cJSON_CreateNumber((double)*(const long *)p);
    case OPT_DOUBLE: return cJSON_CreateNumber(*(const double *)p);
    case OPT_BOOL: return cJSON_CreateBool(*(const bool *)p);
    case OPT_U64: {
        uint64_t x = *(const uint64_t *)p;
        if (x <= (1ull << 53))
            return cJSON_CreateNumber((double)x);
        char buf[24];
        snprintf(buf, sizeof buf, "%" PRIu64, x);
        return cJSON_CreateString(buf);
    }
    case OPT_ENUM: return cJSON_CreateString(enum_name(f->en, *(const int *)p));
    case OPT_STRING: return cJSON_CreateString((const char *)p);
    case OPT_LIST: {
        const int *items = p;
        int n = *(const int *)(base + f->count_off + (r->off - f->off));
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; a && i < n; i++) {
            cJSON *v = f->en ? cJSON_CreateString(enum_name(f->en, items[i]))
                             : cJSON_CreateNumber(items[i]);
            if (!v || !cJSON_AddItemToArray(a, v)) {
                cJSON_Delete(v);
                cJSON_Delete(a);
                return NULL;
            }
        }
        return a;
    }
    case OPT_SUB: break;
    }
    return NULL;
}

cJSON *opts_to_json(const opt_table_t *t, const void *opts)
{
    opt_keys_t k;
    opts_keys(t, &k);
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < k.n; i++) {
        if (k.ref[i].hidden)
            continue;
        cJSON *v = value_json(&k.ref[i], opts);
        if (!v || !cJSON_AddItemToObject(o, k.ref[i].f->key, v)) {
            cJSON_Delete(v);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

int opts_set_json(const opt_table_t *t, void *opts, const char *assignment, const char *ctx,
                  err_t *e)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return err_set(e, ERR_INPUT, "%s: expected KEY=VALUE, got \"%s\"", ctx, assignment);
    char key[128];
    size_t kl = (size_t)(eq - assignment);
    if (kl >= sizeof key)
        return err_set(e, ERR_INPUT, "%s: key too long in \"%s\"", ctx, assignment);
    memcpy(key, assignment, kl);
    key[kl] = 0;
    cJSON *v = cJSON_Parse(eq + 1);
    if (!v)
        v = cJSON_CreateString(eq + 1);
    cJSON *obj = cJSON_CreateObject();
    if (!v || !obj) {
        cJSON_Delete(v);
        cJSON_Delete(obj);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(obj, key, v);
    int rc = opts_from_json(t, obj, ctx, opts, e);
    cJSON_Delete(obj);
    return rc;
}

int opts_set_text(const opt_table_t *t, void *opts, const char *key, const char *text,
                  const char *ctx, err_t *e)
{
    opt_keys_t k;
    opts_keys(t, &k);
    const opt_ref_t *r = opts_find(&k, key);
    if (!r)
        return unknown_key(&k, ctx, key, e);
    dest_t d = {r, opts, ctx, text};
    return set_from_text(&d, text, e);
}

int opts_load_file(const opt_table_t *t, const char *path, const char *section, bool whole,
                   void *opts, err_t *e)
{
    cJSON *j = NULL;
    if (json_load_file(path, 16u << 20, &j, e))
        return e->code;
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(j, section);
    char ctx[1100];
    snprintf(ctx, sizeof ctx, "%s%s%s", path, sec ? ": " : "", sec ? section : "");
    int rc = sec || whole ? opts_from_json(t, sec ? sec : j, ctx, opts, e) : ERR_OK;
    cJSON_Delete(j);
    return rc;
}

int opts_check(const opt_table_t *t, const void *opts, const char *ctx, err_t *e)
{
    return t->check ? t->check(opts, ctx, e) : ERR_OK;
}

void opts_ref_help(const opt_ref_t *r, char *buf, size_t cap)
{
    const opt_field_t *f = r->f;
    char range[420] = "";
    switch (f->type) {
    case OPT_INT:
    case OPT_LONG:
    case OPT_DOUBLE:
        if (f->max >= OPT_NO_MAX)
            snprintf(range, sizeof range, "at least %.15g; ", f->min);
        else
            snprintf(range, sizeof range, "%.15g to %.15g; ", f->min, f->max);
        break;
    case OPT_ENUM:
        enum_choices(f->en, range, sizeof range - 2, false);
        strcat(range, "; ");
        break;
    case OPT_LIST:
        if (f->en) {
            enum_choices(f->en, range, sizeof range - 2, false);
            strcat(range, "; ");
        } else {
            snprintf(range, sizeof range, "each %.15g to %.15g; ", f->min, f->max);
        }
        break;
    default:
        break;
    }
    const char *def = r->def ? r->def : f->type == OPT_BOOL ? "false" : "";
    if (f->type == OPT_STRING || f->type == OPT_LIST)
        snprintf(buf, cap, "%s (%sdefault \"%s\")", f->help, range, def);
    else
        snprintf(buf, cap, "%s (%sdefault %s)", f->help, range, def);
}
