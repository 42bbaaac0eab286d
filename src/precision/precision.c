/* precision: parsing policies.json, resolving a plan into a per-layer table, audit JSON.
 * See precision.h for the model and docs/policies.md for the file format. */
#include "precision/precision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fs.h"
#include "util/json.h"

/* policies files are small; anything bigger than this is not one */
#define PREC_MAX_FILE (16u << 20)

static const char *const phase_names[PREC_PHASE_COUNT] = {"rollout", "reward", "gradient"};
const char *const prec_phase_study_names[PREC_PHASE_COUNT] = {"rollout", "reward_inference",
                                                              "gradient_update"};
static const char *const phase_labels[PREC_PHASE_COUNT] = {"rollout", "reward inference",
                                                           "gradient update"};
static const char *const model_names[PREC_MODEL_COUNT] = {"policy", "reference", "reward",
                                                          "value"};
static const char *const operand_names[PREC_OPERAND_COUNT] = {
    "weight", "input", "weight_bp", "grad_output_dx", "input_bp", "grad_output_dw"};
static const char *const compute_names[PREC_COMPUTE_COUNT] = {"fp32", "bf16", "fp16"};

const char *prec_phase_name(prec_phase_t p)
{
    return (unsigned)p < PREC_PHASE_COUNT ? phase_names[p] : "?";
}
const char *prec_phase_study_name(prec_phase_t p)
{
    return (unsigned)p < PREC_PHASE_COUNT ? prec_phase_study_names[p] : "?";
}
const char *prec_phase_label(prec_phase_t p)
{
    return (unsigned)p < PREC_PHASE_COUNT ? phase_labels[p] : "?";
}
const char *prec_model_name(prec_model_t m)
{
    return (unsigned)m < PREC_MODEL_COUNT ? model_names[m] : "?";
}
const char *prec_operand_name(prec_operand_t o)
{
    return (unsigned)o < PREC_OPERAND_COUNT ? operand_names[o] : "?";
}
const char *prec_compute_name(prec_compute_t c)
{
    return (unsigned)c < PREC_COMPUTE_COUNT ? compute_names[c] : "?";
}

static int lookup(const char *s, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

int prec_phase_from_name(const char *s, prec_phase_t *out)
{
    int i = lookup(s, phase_names, PREC_PHASE_COUNT);
    if (i < 0)
        i = lookup(s, prec_phase_study_names, PREC_PHASE_COUNT);
    if (i < 0)
        return -1;
    *out = (prec_phase_t)i;
    return 0;
}

int prec_model_from_name(const char *s, prec_model_t *out)
{
    int i = lookup(s, model_names, PREC_MODEL_COUNT);
    if (i < 0)
        return -1;
    *out = (prec_model_t)i;
    return 0;
}

int prec_operand_from_name(const char *s, prec_operand_t *out)
{
    int i = lookup(s, operand_names, PREC_OPERAND_COUNT);
    if (i < 0)
        return -1;
    *out = (prec_operand_t)i;
    return 0;
}

int prec_compute_from_name(const char *s, prec_compute_t *out)
{
    int i = lookup(s, compute_names, PREC_COMPUTE_COUNT);
    if (i < 0)
        return -1;
    *out = (prec_compute_t)i;
    return 0;
}

bool prec_glob_match(const char *g, const char *s)
{
    /* Classic iterative matcher: remember the last '*' and retry from one character
     * further on a mismatch. Linear in practice, never exponential. */
    const char *star = NULL, *retry = NULL;
    while (*s) {
        if (*g == '*') {
            star = g++;
            retry = s;
        } else if (*g == '?' || *g == *s) {
            g++;
            s++;
        } else if (star) {
            g = star + 1;
            s = ++retry;
        } else {
            return false;
        }
    }
    while (*g == '*')
        g++;
    return *g == 0;
}

/* ---- parsing ------------------------------------------------------------------------ */

static char *dupstr(const char *s, err_t *e)
{
    size_t n = strlen(s) + 1;
    char *d = err_malloc(e, n, "a string");
    if (d)
        memcpy(d, s, n);
    return d;
}

static void list_names(char *buf, size_t n, const char *const *names, int count)
{
    buf[0] = 0;
    for (int i = 0; i < count; i++) {
        size_t used = strlen(buf);
        snprintf(buf + used, n - used, "%s%s", i ? ", " : "", names[i]);
    }
}

/* Keys of an object must all be in `allowed`: a typo in a rule silently matching
 * everything is the failure mode a plan must not have. */
static int check_keys(const cJSON *obj, const char *const *allowed, int n, const char *ctx,
                      const char *where, err_t *e)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (lookup(it->string, allowed, n) < 0) {
            char list[256];
            list_names(list, sizeof list, allowed, n);
            return err_set(e, ERR_INPUT, "%s: field \"%s.%s\": unknown key (expected %s)", ctx,
                           where, it->string, list);
        }
        for (const cJSON *j = it->next; j; j = j->next)
            if (!strcmp(j->string, it->string))
                return err_set(e, ERR_INPUT, "%s: field \"%s.%s\": given twice", ctx, where,
                               it->string);
    }
    return ERR_OK;
}

/* A set of names: absent, "*", a name, or an array of names. Sets bits in *mask. */
static int parse_set(const cJSON *v, const char *const *names, int count, const char *what,
                     const char *ctx, const char *where, int (*extra)(const char *, int *),
                     unsigned *mask, err_t *e)
{
    unsigned all = (1u << count) - 1;
    if (!v) {
        *mask = all;
        return ERR_OK;
    }
    *mask = 0;
    const cJSON *items = v;
    bool single = cJSON_IsString(v);
    if (!single && !cJSON_IsArray(v))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a %s name, \"*\" or an array of them",
                       ctx, where, what);
    const cJSON *it = single ? items : items->child;
    if (!single && !it)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": empty list (omit the field to match every %s)",
                       ctx, where, what);
    for (; it; it = single ? NULL : it->next) {
        if (!cJSON_IsString(it))
            return err_set(e, ERR_INPUT, "%s: field \"%s\": expected %s names as strings", ctx,
                           where, what);
        const char *s = it->valuestring;
        if (!strcmp(s, "*")) {
            *mask |= all;
            continue;
        }
        int i = lookup(s, names, count);
        if (i < 0 && extra)
            extra(s, &i);
        if (i < 0) {
            char list[256];
            list_names(list, sizeof list, names, count);
            return err_set(e, ERR_INPUT, "%s: field \"%s\": unknown %s \"%s\" (expected %s or \"*\")",
                           ctx, where, what, s, list);
        }
        *mask |= 1u << i;
    }
    return ERR_OK;
}

static int phase_alias(const char *s, int *i)
{
    prec_phase_t p;
    if (prec_phase_from_name(s, &p))
        return -1;
    *i = (int)p;
    return 0;
}

/* A spec is a string for mx_spec_parse or an object {format, block, rounding, scale}. */
static int parse_spec(const cJSON *v, const char *ctx, const char *where, mx_spec_t *out,
                      err_t *e)
{
    err_t e2 = ERR_INIT;
    if (cJSON_IsString(v)) {
        if (mx_spec_parse(v->valuestring, out, &e2))
            return err_set(e, ERR_INPUT, "%s: field \"%s\": %s", ctx, where, e2.msg);
        return ERR_OK;
    }
    if (!cJSON_IsObject(v))
        return err_set(e, ERR_INPUT,
                       "%s: field \"%s\": expected a spec such as \"mxfp8_e4m3/32\" or an "
                       "object {\"format\", \"block\", \"rounding\", \"scale\"}",
                       ctx, where);
    static const char *const keys[] = {"format", "block", "rounding", "scale"};
    if (check_keys(v, keys, 4, ctx, where, e))
        return e->code;
    char sub[512];
    const char *fmt;
    snprintf(sub, sizeof sub, "%s.format", where);
    if (json_req_string(v, "format", ctx, &fmt, &e2))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a format name", ctx, sub);
    mx_format_t f;
    if (mx_format_from_name(fmt, &f))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": unknown format \"%s\"", ctx, sub, fmt);
    *out = mx_spec_default(f);
    long long block;
    snprintf(sub, sizeof sub, "%s.block", where);
    if (json_opt_int(v, "block", ctx, out->block, &block, &e2))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an integer", ctx, sub);
    if (block < 1 || block > 1 << 20)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected 1 to 1048576, got %lld", ctx,
                       sub, block);
    out->block = (int)block;
    const char *s;
    snprintf(sub, sizeof sub, "%s.rounding", where);
    if (json_opt_string(v, "rounding", ctx, NULL, &s, &e2))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a string", ctx, sub);
    if (s && mx_round_from_name(s, &out->round))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": unknown rounding \"%s\" (expected "
                       "nearest, even, trunc/floor or stochastic)", ctx, sub, s);
    snprintf(sub, sizeof sub, "%s.scale", where);
    if (json_opt_string(v, "scale", ctx, NULL, &s, &e2))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a string", ctx, sub);
    if (s && mx_scale_from_name(s, &out->scale))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": unknown scale rule \"%s\" (expected floor or rceil)",
                       ctx, sub, s);
    if (mx_spec_check(out, &e2))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": %s", ctx, where, e2.msg);
    return ERR_OK;
}

static int parse_rule(const cJSON *r, const char *ctx, const char *where, prec_rule_t *out,
                      err_t *e)
{
    static const char *const keys[] = {"phase", "model", "module", "operand", "spec", "comment"};
    char sub[512];
    if (!cJSON_IsObject(r))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an object", ctx, where);
    if (check_keys(r, keys, 6, ctx, where, e))
        return e->code;
    snprintf(sub, sizeof sub, "%s.phase", where);
    if (parse_set(cJSON_GetObjectItemCaseSensitive(r, "phase"), phase_names, PREC_PHASE_COUNT,
                  "phase", ctx, sub, phase_alias, &out->phases, e))
        return e->code;
    snprintf(sub, sizeof sub, "%s.model", where);
    if (parse_set(cJSON_GetObjectItemCaseSensitive(r, "model"), model_names, PREC_MODEL_COUNT,
                  "model", ctx, sub, NULL, &out->models, e))
        return e->code;
    snprintf(sub, sizeof sub, "%s.operand", where);
    if (parse_set(cJSON_GetObjectItemCaseSensitive(r, "operand"), operand_names,
                  PREC_OPERAND_COUNT, "operand", ctx, sub, NULL, &out->operands, e))
        return e->code;
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(r, "module");
    snprintf(sub, sizeof sub, "%s.module", where);
    if (mod && (!cJSON_IsString(mod) || !mod->valuestring[0]))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a non-empty glob such as "
                       "\"model.layers.*.mlp.down_proj\"", ctx, sub);
    out->module = dupstr(mod ? mod->valuestring : "*", e);
    if (!out->module)
        return e->code;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "comment");
    snprintf(sub, sizeof sub, "%s.comment", where);
    if (c && !cJSON_IsString(c))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a string", ctx, sub);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(r, "spec");
    snprintf(sub, sizeof sub, "%s.spec", where);
    if (!spec)
        return err_set(e, ERR_INPUT, "%s: field \"%s\" is missing (expected a spec such as "
                       "\"mxfp4_e2m1/32\")", ctx, sub);
    return parse_spec(spec, ctx, sub, &out->spec, e);
}

static int parse_loss_scale(const cJSON *v, const char *ctx, const char *where,
                            prec_loss_scale_t *ls, err_t *e)
{
    static const char *const keys[] = {"init", "growth", "backoff", "interval"};
    char sub[512];
    if (!cJSON_IsObject(v))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an object", ctx, where);
    if (check_keys(v, keys, 4, ctx, where, e))
        return e->code;
    err_t e2 = ERR_INIT;
    long long interval;
    snprintf(sub, sizeof sub, "%s.init", where);
    if (json_opt_double(v, "init", ctx, ls->init, &ls->init, &e2) || !(ls->init > 0) ||
        ls->init > 1e30)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a positive number", ctx, sub);
    snprintf(sub, sizeof sub, "%s.growth", where);
    if (json_opt_double(v, "growth", ctx, ls->growth, &ls->growth, &e2) ||
        !(ls->growth >= 1) || ls->growth > 1e6)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a number >= 1", ctx, sub);
    snprintf(sub, sizeof sub, "%s.backoff", where);
    if (json_opt_double(v, "backoff", ctx, ls->backoff, &ls->backoff, &e2) ||
        !(ls->backoff > 0 && ls->backoff < 1))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a number in (0, 1)", ctx, sub);
    snprintf(sub, sizeof sub, "%s.interval", where);
    if (json_opt_int(v, "interval", ctx, ls->interval, &interval, &e2) || interval < 1 ||
        interval > 1000000000)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a positive integer", ctx, sub);
    ls->interval = (int)interval;
    return ERR_OK;
}

static void plan_free(prec_plan_t *p)
{
    for (int i = 0; i < p->nrules; i++)
        free(p->rules[i].module);
    free(p->rules);
    free(p->name);
    free(p->description);
    memset(p, 0, sizeof *p);
}

static int parse_plan(const cJSON *v, const char *ctx, prec_plan_t *p, err_t *e)
{
    static const char *const keys[] = {"description", "compute", "loss_scale", "default", "rules"};
    char where[256], sub[512];
    snprintf(where, sizeof where, "plans.%s", v->string);
    if (!v->string[0])
        return err_set(e, ERR_INPUT, "%s: field \"plans\": a plan has an empty name", ctx);
    if (!cJSON_IsObject(v))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an object", ctx, where);
    if (check_keys(v, keys, 5, ctx, where, e))
        return e->code;
    if (!(p->name = dupstr(v->string, e)))
        return e->code;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(v, "description");
    snprintf(sub, sizeof sub, "%s.description", where);
    if (d && !cJSON_IsString(d))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a string", ctx, sub);
    if (!(p->description = dupstr(d ? d->valuestring : "", e)))
        return e->code;

    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "compute");
    snprintf(sub, sizeof sub, "%s.compute", where);
    p->compute = PREC_COMPUTE_FP32;
    if (c && (!cJSON_IsString(c) || prec_compute_from_name(c->valuestring, &p->compute)))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected \"fp32\", \"bf16\" or \"fp16\"",
                       ctx, sub);
    p->loss_scale = (prec_loss_scale_t){65536.0, 2.0, 0.5, 2000};
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(v, "loss_scale");
    snprintf(sub, sizeof sub, "%s.loss_scale", where);
    if (ls && p->compute != PREC_COMPUTE_FP16)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": only meaningful with \"compute\": \"fp16\"",
                       ctx, sub);
    if (ls && parse_loss_scale(ls, ctx, sub, &p->loss_scale, e))
        return e->code;

    const cJSON *dflt = cJSON_GetObjectItemCaseSensitive(v, "default");
    snprintf(sub, sizeof sub, "%s.default", where);
    if (!dflt)
        return err_set(e, ERR_INPUT, "%s: field \"%s\" is missing (expected the spec for "
                       "operands no rule matches, e.g. \"fp32\")", ctx, sub);
    if (parse_spec(dflt, ctx, sub, &p->dflt, e))
        return e->code;

    const cJSON *rules = cJSON_GetObjectItemCaseSensitive(v, "rules");
    snprintf(sub, sizeof sub, "%s.rules", where);
    if (!rules)
        return ERR_OK;
    if (!cJSON_IsArray(rules))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an array of rules", ctx, sub);
    int n = cJSON_GetArraySize(rules);
    if (n > 30000)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": %d rules (at most 30000)", ctx, sub, n);
    p->rules = err_calloc(e, (size_t)n, sizeof *p->rules, "plan rules");
    if (!p->rules)
        return e->code;
    int i = 0;
    for (const cJSON *r = rules->child; r; r = r->next, i++) {
        char rw[600];
        snprintf(rw, sizeof rw, "%s[%d]", sub, i);
        p->nrules = i + 1;
        if (parse_rule(r, ctx, rw, &p->rules[i], e))
            return e->code;
    }
    return ERR_OK;
}

void prec_policies_free(prec_policies_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nplans; i++)
        plan_free(&p->plans[i]);
    free(p->plans);
    free(p->path);
    memset(p, 0, sizeof *p);
}

int prec_policies_parse(const char *text, size_t len, const char *ctx, prec_policies_t *out,
                        err_t *e)
{
    memset(out, 0, sizeof *out);
    cJSON *root;
    if (json_parse(text, len, ctx, &root, e))
        return e->code;
    int rc = ERR_OK;
    long long version;
    const cJSON *plans;
    if (!cJSON_IsObject(root)) {
        rc = err_set(e, ERR_INPUT, "%s: expected a JSON object with \"version\" and \"plans\"", ctx);
        goto done;
    }
    if ((rc = json_req_int(root, "version", ctx, &version, e)))
        goto done;
    if (version != PREC_POLICIES_VERSION) {
        rc = err_set(e, ERR_INPUT, "%s: field \"version\": expected %d, got %lld", ctx,
                     PREC_POLICIES_VERSION, version);
        goto done;
    }
    out->version = (int)version;
    plans = cJSON_GetObjectItemCaseSensitive(root, "plans");
    if (!plans || !cJSON_IsObject(plans) || !plans->child) {
        rc = err_set(e, ERR_INPUT, "%s: field \"plans\": expected an object with at least one "
                     "named plan", ctx);
        goto done;
    }
    int n = cJSON_GetArraySize(plans);
    out->plans = err_calloc(e, (size_t)n, sizeof *out->plans, "plans");
    if (!out->plans) {
        rc = e->code;
        goto done;
    }
    for (const cJSON *v = plans->child; v; v = v->next) {
        for (const cJSON *w = v->next; w; w = w->next)
            if (!strcmp(v->string, w->string)) {
                rc = err_set(e, ERR_INPUT, "%s: field \"plans.%s\": plan defined twice", ctx,
                             v->string);
                goto done;
            }
        out->nplans++;
        if ((rc = parse_plan(v, ctx, &out->plans[out->nplans - 1], e)))
            goto done;
    }
    if (!(out->path = dupstr(ctx, e)))
        rc = e->code;
done:
    cJSON_Delete(root);
    if (rc)
        prec_policies_free(out);
    return rc;
}

int prec_policies_load(const char *path, prec_policies_t *out, err_t *e)
{
    char *text;
    size_t len;
    memset(out, 0, sizeof *out);
    if (fs_read_all(path, PREC_MAX_FILE, &text, &len, e))
        return e->code == ERR_FAIL ? err_prefix(e, "policies") : e->code;
    int rc = prec_policies_parse(text, len, path, out, e);
    free(text);
    return rc;
}

int prec_plan_find(const prec_policies_t *p, const char *name, const prec_plan_t **out,
                   err_t *e)
{
    char list[1024] = "";
    for (int i = 0; i < p->nplans; i++) {
        if (!strcmp(p->plans[i].name, name)) {
            *out = &p->plans[i];
            return ERR_OK;
        }
        size_t used = strlen(list);
        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", p->plans[i].name);
    }
    return err_set(e, ERR_INPUT, "%s: no plan named \"%s\" (plans: %s)", p->path ? p->path : "policies",
                   name, list);
}

/* ---- tables ------------------------------------------------------------------------- */

void prec_table_free(prec_table_t *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->nlayers; i++)
        free(t->layers[i].name);
    free(t->layers);
    free(t->plan);
    free(t->source);
    memset(t, 0, sizeof *t);
}

static int table_alloc(prec_table_t *t, const char *plan, const char *source, prec_model_t model,
                       const char *const *names, int n, err_t *e)
{
    memset(t, 0, sizeof *t);
    t->model = model;
    t->layers = err_calloc(e, (size_t)n, sizeof *t->layers, "precision table");
    if (!t->layers || !(t->plan = dupstr(plan, e)) || !(t->source = dupstr(source, e)))
        goto fail;
    for (int i = 0; i < n; i++) {
        t->nlayers = i + 1;
        if (!(t->layers[i].name = dupstr(names[i], e)))
            goto fail;
    }
    t->nlayers = n;
    return ERR_OK;
fail:
    prec_table_free(t);
    return e ? e->code : ERR_NOMEM;
}

int prec_table_init_fp32(prec_table_t *t, prec_model_t model, const char *const *names, int n,
                         err_t *e)
{
    if (table_alloc(t, "fp32", "", model, names, n, e))
        return e->code;
    t->compute = PREC_COMPUTE_FP32;
    t->loss_scale = (prec_loss_scale_t){65536.0, 2.0, 0.5, 2000};
    mx_spec_t f = mx_spec_default(MX_FP32);
    for (int i = 0; i < n; i++)
        for (int ph = 0; ph < PREC_PHASE_COUNT; ph++)
            for (int op = 0; op < PREC_OPERAND_COUNT; op++) {
                t->layers[i].spec[ph][op] = f;
                t->layers[i].rule[ph][op] = -1;
            }
    return ERR_OK;
}

int prec_resolve(const prec_plan_t *plan, const char *source, prec_model_t model,
                 const char *const *names, int n, prec_table_t *out, err_t *e)
{
    const char *src = source ? source : "";
    /* Every rule that can apply to this model must name at least one of its layers:
     * a glob that matches nothing is almost always a typo in a layer name. */
    for (int r = 0; r < plan->nrules; r++) {
        const prec_rule_t *rule = &plan->rules[r];
        if (!(rule->models & (1u << model)))
            continue;
        bool hit = false;
        for (int i = 0; i < n && !hit; i++)
            hit = prec_glob_match(rule->module, names[i]);
        if (!hit)
            return err_set(e, ERR_INPUT,
                           "%s: field \"plans.%s.rules[%d].module\": \"%s\" matches no linear "
                           "layer of the %s model (names look like \"%s\")",
                           src[0] ? src : "policies", plan->name, r, rule->module,
                           prec_model_name(model), n ? names[0] : "lm_head");
    }
    if (table_alloc(out, plan->name, src, model, names, n, e))
        return e->code;
    out->compute = plan->compute;
    out->loss_scale = plan->loss_scale;
    for (int i = 0; i < n; i++) {
        prec_layer_t *L = &out->layers[i];
        for (int ph = 0; ph < PREC_PHASE_COUNT; ph++)
            for (int op = 0; op < PREC_OPERAND_COUNT; op++) {
                L->spec[ph][op] = plan->dflt;
                L->rule[ph][op] = -1;
                for (int r = 0; r < plan->nrules; r++) {
                    const prec_rule_t *rule = &plan->rules[r];
                    if ((rule->phases & (1u << ph)) && (rule->models & (1u << model)) &&
                        (rule->operands & (1u << op)) && prec_glob_match(rule->module, L->name)) {
                        L->spec[ph][op] = rule->spec;
                        L->rule[ph][op] = (int16_t)r;
                        break;
                    }
                }
            }
    }
    return ERR_OK;
}

int prec_table_copy(prec_table_t *dst, const prec_table_t *src, err_t *e)
{
    const char **names = err_calloc(e, (size_t)src->nlayers + 1, sizeof *names, "layer names");
    if (!names)
        return e->code;
    for (int i = 0; i < src->nlayers; i++)
        names[i] = src->layers[i].name;
    int rc = table_alloc(dst, src->plan, src->source, src->model, names, src->nlayers, e);
    free(names);
    if (rc)
        return rc;
    dst->compute = src->compute;
    dst->loss_scale = src->loss_scale;
    for (int i = 0; i < src->nlayers; i++) {
        memcpy(dst->layers[i].spec, src->layers[i].spec, sizeof dst->layers[i].spec);
        memcpy(dst->layers[i].rule, src->layers[i].rule, sizeof dst->layers[i].rule);
    }
    return ERR_OK;
}

int prec_table_find(const prec_table_t *t, const char *layer)
{
    for (int i = 0; i < t->nlayers; i++)
        if (!strcmp(t->layers[i].name, layer))
            return i;
    return -1;
}

int prec_table_set(prec_table_t *t, const char *layer, prec_phase_t phase, prec_operand_t op,
                   const mx_spec_t *spec, err_t *e)
{
    int i = prec_table_find(t, layer);
    if (i < 0)
        return err_set(e, ERR_INPUT, "precision table: no linear layer named \"%s\"", layer);
    if ((unsigned)phase >= PREC_PHASE_COUNT || (unsigned)op >= PREC_OPERAND_COUNT)
        return err_set(e, ERR_INPUT, "precision table: bad phase or operand");
    err_t e2 = ERR_INIT;
    if (mx_spec_check(spec, &e2))
        return err_set(e, ERR_INPUT, "precision table: %s", e2.msg);
    t->layers[i].spec[phase][op] = *spec;
    t->layers[i].rule[phase][op] = -2;
    return ERR_OK;
}

cJSON *prec_table_to_json(const prec_table_t *t)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddNumberToObject(root, "version", PREC_POLICIES_VERSION);
    cJSON_AddStringToObject(root, "plan", t->plan);
    cJSON_AddStringToObject(root, "source", t->source);
    cJSON_AddStringToObject(root, "model", prec_model_name(t->model));
    cJSON_AddStringToObject(root, "compute", prec_compute_name(t->compute));
    if (t->compute == PREC_COMPUTE_FP16) {
        cJSON *ls = cJSON_AddObjectToObject(root, "loss_scale");
        cJSON_AddNumberToObject(ls, "init", t->loss_scale.init);
        cJSON_AddNumberToObject(ls, "growth", t->loss_scale.growth);
        cJSON_AddNumberToObject(ls, "backoff", t->loss_scale.backoff);
        cJSON_AddNumberToObject(ls, "interval", t->loss_scale.interval);
    }
    cJSON *layers = cJSON_AddObjectToObject(root, "layers");
    for (int i = 0; layers && i < t->nlayers; i++) {
        cJSON *L = cJSON_AddObjectToObject(layers, t->layers[i].name);
        for (int ph = 0; L && ph < PREC_PHASE_COUNT; ph++) {
            cJSON *P = cJSON_AddObjectToObject(L, phase_names[ph]);
            for (int op = 0; P && op < PREC_OPERAND_COUNT; op++) {
                char buf[96];
                cJSON *O = cJSON_AddObjectToObject(P, operand_names[op]);
                if (!O)
                    continue;
                cJSON_AddStringToObject(O, "spec",
                                        mx_spec_format(&t->layers[i].spec[ph][op], buf, sizeof buf));
                int r = t->layers[i].rule[ph][op];
                if (r >= 0)
                    cJSON_AddNumberToObject(O, "rule", r);
                else
                    cJSON_AddStringToObject(O, "rule", r == -1 ? "default" : "override");
            }
        }
    }
    return root;
}

int prec_table_write(const prec_table_t *t, const char *path, err_t *e)
{
    cJSON *j = prec_table_to_json(t);
    if (!j)
        return err_set(e, ERR_NOMEM, "out of memory building %s", path);
    int rc = json_write_file(path, j, true, e);
    cJSON_Delete(j);
    return rc;
}
