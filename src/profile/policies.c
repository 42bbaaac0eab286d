/* policies: deriving the study's plans A-D from a sensitivity matrix (policies.h). */
#include "profile/policies.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "profile/common.h"
#include "profile/ppl.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- options ------------------------------------------------------------------------------ */

#define PO(f) offsetof(policies_opts_t, f)
static const opt_field_t pol_fields[] = {
    OPT_EMBED("evaluation set", PO(eval), &profile_eval_opts_table, NULL),
    OPT_KEY("block", OPT_INT, PO(block), "32", 1, 4096,
            "MX block size of every plan (the matrix needs its columns)", .flag = "block"),
    OPT_KEY("threshold_pct", OPT_DOUBLE, PO(threshold_pct), "2.0", 0, OPT_NO_MAX,
            "per-layer tolerance: delta_pct < this (percent)", .flag = "threshold"),
    OPT_KEY("two_sided", OPT_BOOL, PO(two_sided), "false", 0, 0,
            "tolerance and budget on |delta_pct| (a large fall counts too)", .flag = "two-sided"),
    OPT_KEY("budget_factor", OPT_DOUBLE, PO(budget_factor), "2.0", 0, OPT_NO_MAX,
            "whole-model budget: delta_pct < factor x threshold", .flag = "budget-factor"),
    OPT_KEY("fp16_compute", OPT_ENUM, PO(fp16_compute), "fp16", 0, 0,
            "the study's \"FP16\": fp16 (dynamic loss scaling) or bf16",
            .en = &profile_compute_enum, .flag = "fp16-compute"),
    OPT_KEY("mx_gradient_compute", OPT_ENUM, PO(mx_gradient_compute), "fp32", 0, 0,
            "compute type of C's gradient GEMMs on MX operands", .en = &profile_compute_enum,
            .flag = "mx-gradient-compute"),
    OPT_KEY("rounding", OPT_ENUM, PO(round), "even", 0, 0, "MX element rounding",
            .en = &profile_round_enum, .flag = "rounding"),
    OPT_KEY("scale", OPT_ENUM, PO(scale), "floor", 0, 0, "MX scale rule", .en = &profile_scale_enum,
            .flag = "scale"),
    OPT_KEY("device", OPT_STRING, PO(backend), "cpu", 0, 0,
            "the device of the measurements: cpu, cuda or cuda:N",
            .cap = sizeof(((policies_opts_t *)0)->backend), .flag = "device",
            .alias = "backend"),
};

OPT_CHECK(pol_check, policies_opts_t, policies_opts_check)
const opt_table_t policies_opts_table =
    OPT_TABLE("policies", policies_opts_t, pol_fields, pol_check);

void policies_opts_default(policies_opts_t *o) { opts_default(&policies_opts_table, o); }

int policies_opts_check(const policies_opts_t *o, const char *ctx, err_t *e)
{
    if (o->block < 1 || o->block > 4096)
        return err_set(e, ERR_INPUT, "%s: field \"block\": %d is not in [1, 4096]", ctx, o->block);
    if (!(o->threshold_pct > 0) || !isfinite(o->threshold_pct))
        return err_set(e, ERR_INPUT, "%s: field \"threshold_pct\": expected a positive number",
                       ctx);
    if (!(o->budget_factor > 0) || !isfinite(o->budget_factor))
        return err_set(e, ERR_INPUT, "%s: field \"budget_factor\": expected a positive number",
                       ctx);
    if (o->fp16_compute != PREC_COMPUTE_FP16 && o->fp16_compute != PREC_COMPUTE_BF16)
        return err_set(e, ERR_INPUT, "%s: field \"fp16_compute\": expected \"fp16\" or \"bf16\"",
                       ctx);
    if (o->round == MX_ROUND_STOCHASTIC)
        return err_set(e, ERR_INPUT, "%s: field \"rounding\": stochastic rounding would make "
                       "every measurement a random draw", ctx);
    return profile_eval_opts_check(&o->eval, ctx, e);
}

/* ---- reading the matrix ------------------------------------------------------------------- */

void profile_sens_free(profile_sens_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->layers[i]);
    free(s->layers);
    free(s->d4);
    free(s->d8);
    memset(s, 0, sizeof *s);
}

/* Splits one CSV record (RFC 4180: quoted fields may hold commas and "" quotes) in place;
 * *p advances past the record's line end. Returns the number of fields, -1 when more
 * than max. */
static int csv_fields(char **p, char **f, int max)
{
    char *s = *p;
    int n = 0;
    for (;;) {
        if (n == max)
            return -1;
        if (*s == '"') {
            char *w = ++s;   /* unquoted in place: w trails s */
            f[n++] = w;
            while (*s) {
                if (*s == '"') {
                    if (s[1] != '"') {
                        s++;
                        break;
                    }
                    s++;
                }
                *w++ = *s++;
            }
            *w = 0;
            s += strcspn(s, ",\r\n");
        } else {
            f[n++] = s;
            s += strcspn(s, ",\r\n");
        }
        char c = *s;
        if (c)
            *s++ = 0;
        if (c == ',')
            continue;
        if (c == '\r' && *s == '\n')
            s++;
        break;
    }
    *p = s;
    return n;
}

#define MAX_COLS 512

int profile_sens_read(const char *path, int block, profile_sens_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    out->block = block;
    char *text;
    size_t len;
    if (fs_read_all(path, (size_t)1 << 28, &text, &len, e))
        return e->code;
    char **f = malloc(MAX_COLS * sizeof *f);
    int rc = ERR_OK, ncol, c_layer = -1, c4 = -1, c8 = -1;
    char want4[64], want8[64];
    snprintf(want4, sizeof want4, "mxfp4_e2m1_g%d_delta_pct", block);
    snprintf(want8, sizeof want8, "mxfp8_e4m3_g%d_delta_pct", block);
    char *p = text;
    if (!f) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((ncol = csv_fields(&p, f, MAX_COLS)) < 1) {
        rc = err_set(e, ERR_INPUT, "%s: line 1: expected the header row", path);
        goto done;
    }
    for (int i = 0; i < ncol; i++) {
        if (!strcmp(f[i], "layer"))
            c_layer = i;
        else if (!strcmp(f[i], want4))
            c4 = i;
        else if (!strcmp(f[i], want8))
            c8 = i;
    }
    if (c_layer != 0) {
        rc = err_set(e, ERR_INPUT, "%s: line 1: expected \"layer\" as the first column", path);
        goto done;
    }
    if (c4 < 0 || c8 < 0) {
        rc = err_set(e, ERR_INPUT, "%s: line 1: no column \"%s\" (the matrix has no block size "
                     "%d for the policies; measure it or set the policies' block)", path,
                     c4 < 0 ? want4 : want8, block);
        goto done;
    }
    int cap = 0;
    for (int line = 2; *p; line++) {
        if (*p == '\n' || (*p == '\r' && p[1] == '\n')) {
            p += *p == '\r' ? 2 : 1;
            continue;
        }
        int n = csv_fields(&p, f, MAX_COLS);
        if (n != ncol) {
            rc = err_set(e, ERR_INPUT, "%s: line %d: %d fields, the header has %d", path, line,
                         n, ncol);
            goto done;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 64;
            char **l = realloc(out->layers, (size_t)cap * sizeof *l);
            if (l)
                out->layers = l;
            double *a = realloc(out->d4, (size_t)cap * sizeof *a);
            if (a)
                out->d4 = a;
            double *b = realloc(out->d8, (size_t)cap * sizeof *b);
            if (b)
                out->d8 = b;
            if (!l || !a || !b) {
                rc = err_set(e, ERR_NOMEM, "out of memory");
                goto done;
            }
        }
        double v[2];
        int col[2] = {c4, c8};
        for (int k = 0; k < 2; k++) {
            char *end;
            const char *t = f[col[k]];
            v[k] = *t ? strtod(t, &end) : NAN;
            if (*t && (*end || end == t)) {
                rc = err_set(e, ERR_INPUT, "%s: line %d, column \"%s\": expected a number, got "
                             "\"%s\"", path, line, k ? want8 : want4, t);
                goto done;
            }
        }
        for (int i = 0; i < out->n; i++)
            if (!strcmp(out->layers[i], f[0])) {
                rc = err_set(e, ERR_INPUT, "%s: line %d: layer \"%s\" listed twice", path, line,
                             f[0]);
                goto done;
            }
        if (!(out->layers[out->n] = strdup(f[0]))) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto done;
        }
        out->d4[out->n] = v[0];
        out->d8[out->n] = v[1];
        out->n++;
    }
    if (!out->n)
        rc = err_set(e, ERR_INPUT, "%s: no layer rows", path);
done:
    free(f);
    free(text);
    if (rc)
        profile_sens_free(out);
    return rc;
}

/* ---- derivation ---------------------------------------------------------------------------- */

void profile_policies_free(profile_policies_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < POLICY_COUNT; i++)
        for (int ph = 0; ph < PREC_PHASE_COUNT; ph++)
            free(p->plan[i].fmt[ph]);
    free(p->g4.steps);
    free(p->g4.in);
    free(p->g8.steps);
    free(p->g8.in);
    memset(p, 0, sizeof *p);
}

/* A measured configuration, remembered so each is measured once. */
typedef struct memo {
    prec_compute_t compute;
    mx_format_t *fmt;
    double ppl;
} memo_t;

typedef struct deriver {
    const profile_sens_t *s;
    profile_measure_fn measure;
    void *mctx;
    memo_t *memo;
    int nmemo, cap;
    int measurements;
} deriver_t;

static int measure(deriver_t *d, prec_compute_t compute, const mx_format_t *fmt, double *ppl,
                   err_t *e)
{
    size_t bytes = (size_t)d->s->n * sizeof *fmt;
    for (int i = 0; i < d->nmemo; i++)
        if (d->memo[i].compute == compute && !memcmp(d->memo[i].fmt, fmt, bytes)) {
            *ppl = d->memo[i].ppl;
            return ERR_OK;
        }
    if (d->measure(d->mctx, compute, fmt, ppl, e))
        return e->code;
    d->measurements++;
    if (d->nmemo == d->cap) {
        int cap = d->cap ? 2 * d->cap : 16;
        memo_t *m = realloc(d->memo, (size_t)cap * sizeof *m);
        if (!m)
            return err_set(e, ERR_NOMEM, "out of memory");
        d->memo = m;
        d->cap = cap;
    }
    mx_format_t *copy = malloc(bytes);
    if (!copy)
        return err_set(e, ERR_NOMEM, "out of memory");
    memcpy(copy, fmt, bytes);
    d->memo[d->nmemo++] = (memo_t){compute, copy, *ppl};
    return ERR_OK;
}

static mx_format_t *fmt_all(int n, mx_format_t f, err_t *e)
{
    mx_format_t *a = err_malloc(e, (size_t)(n ? n : 1) * sizeof *a, "formats");
    if (a)
        for (int i = 0; i < n; i++)
            a[i] = f;
    return a;
}

typedef struct cand {
    int layer;
    double d;
} cand_t;

static int cand_cmp(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

/* The greedy split: starting from every layer in `hi`, try the layers whose own delta for
 * `lo` is tolerant, smallest first, keeping each that leaves the whole model within
 * budget. */
static int greedy(deriver_t *d, const double *delta, mx_format_t hi, mx_format_t lo,
                  double threshold, bool two_sided, double base, double budget,
                  profile_greedy_t *g, mx_format_t **result, err_t *e)
{
    const int n = d->s->n;
    cand_t *c = err_malloc(e, (size_t)(n ? n : 1) * sizeof *c, "candidates");
    mx_format_t *cur = fmt_all(n, hi, e);
    g->in = err_calloc(e, (size_t)(n ? n : 1), sizeof *g->in, "the split");
    g->steps = err_calloc(e, (size_t)(n ? n : 1), sizeof *g->steps, "the split");
    if (!c || !cur || !g->in || !g->steps) {
        free(c);
        free(cur);
        return e->code;
    }
    int nc = 0;
    for (int l = 0; l < n; l++)
        if (profile_tolerant(delta[l], threshold, two_sided))
            c[nc++] = (cand_t){l, delta[l]};
    qsort(c, (size_t)nc, sizeof *c, cand_cmp);
    double pcur;
    if (measure(d, PREC_COMPUTE_FP32, cur, &pcur, e)) {
        free(c);
        free(cur);
        return e->code;
    }
    g->start_ppl = pcur;
    for (int i = 0; i < nc; i++) {
        int l = c[i].layer;
        cur[l] = lo;
        double p;
        if (measure(d, PREC_COMPUTE_FP32, cur, &p, e)) {
            free(c);
            free(cur);
            return e->code;
        }
        bool ok = profile_tolerant(profile_delta_pct(p, base), budget, two_sided);
        g->steps[g->nsteps++] = (profile_greedy_step_t){l, c[i].d, p, ok};
        if (ok) {
            g->in[l] = true;
            pcur = p;
        } else {
            cur[l] = hi;
        }
    }
    g->end_ppl = pcur;
    free(c);
    *result = cur;
    return ERR_OK;
}

static int copy_fmt(const mx_format_t *src, int n, mx_format_t **dst, err_t *e)
{
    *dst = err_malloc(e, (size_t)(n ? n : 1) * sizeof **dst, "formats");
    if (!*dst)
        return e->code;
    memcpy(*dst, src, (size_t)n * sizeof **dst);
    return ERR_OK;
}

int profile_policies_derive(const profile_sens_t *s, const policies_opts_t *o,
                            profile_measure_fn mfn, void *mctx, profile_policies_t *out,
                            err_t *e)
{
    memset(out, 0, sizeof *out);
    out->sens = s;
    out->opts = *o;
    if (policies_opts_check(o, "policies options", e))
        return e->code;
    deriver_t d = {.s = s, .measure = mfn, .mctx = mctx};
    const int n = s->n;
    const double T = o->threshold_pct, budget = o->budget_factor * o->threshold_pct;
    int rc = ERR_OK;
    mx_format_t *fp32 = fmt_all(n, MX_FP32, e), *all8 = fmt_all(n, MX_FP8_E4M3, e),
                *all4 = fmt_all(n, MX_FP4_E2M1, e), *g4 = NULL, *g8 = NULL;
    double p_all8, p_all4, p_fp16, p_g4_mxgrad;
    static const char *const names[POLICY_COUNT] = {"baseline", "A", "B", "C", "D"};
    if (!fp32 || !all8 || !all4) {
        rc = e->code;
        goto done;
    }
    if ((rc = measure(&d, PREC_COMPUTE_FP32, fp32, &out->base_ppl, e)) ||
        (rc = measure(&d, PREC_COMPUTE_FP32, all8, &p_all8, e)) ||
        (rc = greedy(&d, s->d4, MX_FP8_E4M3, MX_FP4_E2M1, T, o->two_sided, out->base_ppl, budget,
                     &out->g4, &g4, e)) ||
        (rc = measure(&d, PREC_COMPUTE_FP32, all4, &p_all4, e)) ||
        (rc = greedy(&d, s->d8, MX_FP32, MX_FP8_E4M3, T, o->two_sided, out->base_ppl, budget,
                     &out->g8, &g8, e)) ||
        (rc = measure(&d, o->fp16_compute, fp32, &p_fp16, e)) ||
        (rc = measure(&d, o->mx_gradient_compute, g4, &p_g4_mxgrad, e)))
        goto done;

    for (int i = 0; i < POLICY_COUNT; i++)
        out->plan[i].name = names[i];
    /* formats per phase, and the combined perplexities */
    struct {
        const mx_format_t *ph[PREC_PHASE_COUNT];
        double ppl[PREC_PHASE_COUNT];
        prec_compute_t compute;
    } spec[POLICY_COUNT] = {
        [POLICY_BASELINE] = {{fp32, fp32, fp32}, {out->base_ppl, out->base_ppl, out->base_ppl},
                             PREC_COMPUTE_FP32},
        [POLICY_A] = {{all8, all8, fp32}, {p_all8, p_all8, p_fp16}, o->fp16_compute},
        [POLICY_B] = {{g4, g4, fp32}, {out->g4.end_ppl, out->g4.end_ppl, p_fp16},
                      o->fp16_compute},
        [POLICY_C] = {{all4, all4, g4}, {p_all4, p_all4, p_g4_mxgrad}, o->mx_gradient_compute},
        [POLICY_D] = {{g4, g8, fp32}, {out->g4.end_ppl, out->g8.end_ppl, p_fp16},
                      o->fp16_compute},
    };
    for (int i = 0; i < POLICY_COUNT; i++) {
        profile_policy_t *pl = &out->plan[i];
        pl->compute = spec[i].compute;
        for (int ph = 0; ph < PREC_PHASE_COUNT; ph++) {
            pl->ppl[ph] = spec[i].ppl[ph];
            if ((rc = copy_fmt(spec[i].ph[ph], n, &pl->fmt[ph], e)))
                goto done;
        }
    }
    int n4 = 0, n8 = 0;
    for (int l = 0; l < n; l++) {
        n4 += out->g4.in[l];
        n8 += out->g8.in[l];
    }
    const char *ct = prec_compute_name(o->fp16_compute);
    snprintf(out->plan[POLICY_BASELINE].description, sizeof out->plan[0].description,
             "control: every GEMM operand unquantized (fp32) in every phase, fp32 compute");
    snprintf(out->plan[POLICY_A].description, sizeof out->plan[0].description,
             "Conservative: rollout and reward MXFP8 (mxfp8_e4m3/%d) on every layer; gradient "
             "%s compute%s, no MX", o->block, ct,
             o->fp16_compute == PREC_COMPUTE_FP16 ? " with dynamic loss scaling" : "");
    snprintf(out->plan[POLICY_B].description, sizeof out->plan[0].description,
             "Balanced: rollout and reward MXFP4 (mxfp4_e2m1/%d) on the %d of %d layers a greedy "
             "search kept within the whole-model budget (%.3g%%), MXFP8 on the rest "
             "(sensitive); gradient %s compute, no MX", o->block, n4, n, budget, ct);
    snprintf(out->plan[POLICY_C].description, sizeof out->plan[0].description,
             "Aggressive: rollout and reward MXFP4 on every layer; gradient phase (all six "
             "operands) MXFP8 on the %d sensitive layers (B's), MXFP4 on the other %d, %s "
             "compute", n - n4, n4, prec_compute_name(o->mx_gradient_compute));
    snprintf(out->plan[POLICY_D].description, sizeof out->plan[0].description,
             "Phase-adaptive: rollout MXFP4 on most layers (B's split: %d MXFP4, %d MXFP8); "
             "reward MXFP8 on the %d of %d layers a greedy search kept within budget, the rest "
             "unquantized; gradient %s compute for the GEMMs, fp32 elsewhere", n4, n - n4, n8,
             n, ct);
    out->measurements = d.measurements;
done:
    for (int i = 0; i < d.nmemo; i++)
        free(d.memo[i].fmt);
    free(d.memo);
    free(fp32);
    free(all8);
    free(all4);
    free(g4);
    free(g8);
    if (rc)
        profile_policies_free(out);
    return rc;
}

/* ---- policies.json ---------------------------------------------------------------------------- */

static void spec_text(const policies_opts_t *o, mx_format_t f, char *buf, size_t n)
{
    mx_spec_t s = mx_spec_default(f);
    s.block = o->block;
    s.round = o->round;
    s.scale = o->scale;
    mx_spec_format(&s, buf, n);
}

static cJSON *str_list(const char *const *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* Rules for one group of phases whose per-layer formats are `fmt`: the minority formats
 * layer by layer, then the most common format for the rest ("model.layers.*", and the
 * lm_head for the models that have one). The lm_head's rules name the policy and
 * reference models only: a reward or value model has no lm_head, and a rule that can
 * apply to a model must match one of its layers. */
static void add_rules(cJSON *rules, const profile_policies_t *p, const mx_format_t *fmt,
                      const char *const *phases, int nph, bool all_operands, const char *why)
{
    const profile_sens_t *s = p->sens;
    int count[MX_FORMAT_COUNT] = {0};
    for (int l = 0; l < s->n; l++)
        count[fmt[l]]++;
    mx_format_t common = MX_FP32;
    for (int f = 0; f < MX_FORMAT_COUNT; f++)
        if (count[f] > count[common])
            common = (mx_format_t)f;
    static const char *const fwd_ops[] = {"weight", "input"};
    static const char *const lm_models[] = {"policy", "reference"};
    char st[64];
    bool lm_head_ruled = false;
    for (int l = 0; l < s->n; l++) {
        bool lm = !strcmp(s->layers[l], "lm_head");
        if (fmt[l] == common)
            continue;
        lm_head_ruled |= lm;
        cJSON *r = cJSON_CreateObject();
        cJSON_AddItemToObject(r, "phase", str_list(phases, nph));
        if (lm)
            cJSON_AddItemToObject(r, "model", str_list(lm_models, 2));
        cJSON_AddStringToObject(r, "module", s->layers[l]);
        if (!all_operands)
            cJSON_AddItemToObject(r, "operand", str_list(fwd_ops, 2));
        spec_text(&p->opts, fmt[l], st, sizeof st);
        cJSON_AddStringToObject(r, "spec", st);
        cJSON_AddStringToObject(r, "comment", why);
        cJSON_AddItemToArray(rules, r);
    }
    if (common == MX_FP32)
        return;   /* the plan's default */
    spec_text(&p->opts, common, st, sizeof st);
    bool has_lm = false, has_trunk = false;
    for (int l = 0; l < s->n; l++) {
        bool lm = !strcmp(s->layers[l], "lm_head");
        has_lm |= lm;
        has_trunk |= !lm && fmt[l] == common;
    }
    if (has_trunk) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddItemToObject(r, "phase", str_list(phases, nph));
        cJSON_AddStringToObject(r, "module", "model.layers.*");
        if (!all_operands)
            cJSON_AddItemToObject(r, "operand", str_list(fwd_ops, 2));
        cJSON_AddStringToObject(r, "spec", st);
        cJSON_AddItemToArray(rules, r);
    }
    if (has_lm && !lm_head_ruled) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddItemToObject(r, "phase", str_list(phases, nph));
        cJSON_AddItemToObject(r, "model", str_list(lm_models, 2));
        cJSON_AddStringToObject(r, "module", "lm_head");
        if (!all_operands)
            cJSON_AddItemToObject(r, "operand", str_list(fwd_ops, 2));
        cJSON_AddStringToObject(r, "spec", st);
        cJSON_AddItemToArray(rules, r);
    }
}

static bool all_fp32(const mx_format_t *f, int n)
{
    for (int i = 0; i < n; i++)
        if (f[i] != MX_FP32)
            return false;
    return true;
}

cJSON *profile_policy_to_json(const profile_policies_t *p, int which)
{
    const profile_policy_t *pl = &p->plan[which];
    const int n = p->sens->n;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "description", pl->description);
    cJSON_AddStringToObject(j, "compute", prec_compute_name(pl->compute));
    if (pl->compute == PREC_COMPUTE_FP16) {
        /* PyTorch GradScaler's defaults, written out so the plan says what it does */
        cJSON *ls = cJSON_AddObjectToObject(j, "loss_scale");
        cJSON_AddNumberToObject(ls, "init", 65536);
        cJSON_AddNumberToObject(ls, "growth", 2);
        cJSON_AddNumberToObject(ls, "backoff", 0.5);
        cJSON_AddNumberToObject(ls, "interval", 2000);
    }
    cJSON_AddStringToObject(j, "default", "fp32");
    cJSON *rules = cJSON_AddArrayToObject(j, "rules");
    const mx_format_t *ro = pl->fmt[PREC_ROLLOUT], *rw = pl->fmt[PREC_REWARD],
                      *gr = pl->fmt[PREC_GRADIENT];
    const char *why_r = which == POLICY_B || which == POLICY_D ? "greedy split (G4)" : "";
    if (!memcmp(ro, rw, (size_t)n * sizeof *ro)) {
        const char *ph[] = {prec_phase_name(PREC_ROLLOUT), prec_phase_name(PREC_REWARD)};
        add_rules(rules, p, ro, ph, 2, false, why_r);
    } else {
        const char *ph1[] = {prec_phase_name(PREC_ROLLOUT)}, *ph2[] = {prec_phase_name(PREC_REWARD)};
        add_rules(rules, p, ro, ph1, 1, false, why_r);
        add_rules(rules, p, rw, ph2, 1, false, "greedy split (G8)");
    }
    if (!all_fp32(gr, n)) {
        const char *ph[] = {prec_phase_name(PREC_GRADIENT)};
        add_rules(rules, p, gr, ph, 1, true, "sensitive: kept at MXFP8 by the greedy split (G4)");
    }
    return j;
}

static cJSON *phase_ppl(double ppl, double base, double budget, bool two_sided)
{
    cJSON *o = cJSON_CreateObject();
    double d = profile_delta_pct(ppl, base);
    cJSON_AddNumberToObject(o, "ppl", ppl);
    cJSON_AddNumberToObject(o, "delta_pct", d);
    cJSON_AddBoolToObject(o, "within_budget", profile_tolerant(d, budget, two_sided));
    return o;
}

static cJSON *greedy_json(const profile_policies_t *p, const profile_greedy_t *g, const char *hi,
                          const char *lo)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "start", hi);
    cJSON_AddStringToObject(o, "moved_to", lo);
    cJSON_AddNumberToObject(o, "start_ppl", g->start_ppl);
    cJSON_AddNumberToObject(o, "end_ppl", g->end_ppl);
    cJSON *steps = cJSON_AddArrayToObject(o, "steps");
    for (int i = 0; i < g->nsteps; i++) {
        const profile_greedy_step_t *st = &g->steps[i];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "layer", p->sens->layers[st->layer]);
        cJSON_AddNumberToObject(s, "single_delta_pct", st->single_delta_pct);
        cJSON_AddNumberToObject(s, "combined_ppl", st->ppl);
        cJSON_AddNumberToObject(s, "combined_delta_pct", profile_delta_pct(st->ppl, p->base_ppl));
        cJSON_AddBoolToObject(s, "accepted", st->accepted);
        cJSON_AddItemToArray(steps, s);
    }
    cJSON *in = cJSON_AddArrayToObject(o, "moved");
    for (int l = 0; l < p->sens->n; l++)
        if (g->in[l])
            cJSON_AddItemToArray(in, cJSON_CreateString(p->sens->layers[l]));
    return o;
}

cJSON *profile_policies_to_json(const profile_policies_t *p, cJSON *extra)
{
    const double budget = p->opts.budget_factor * p->opts.threshold_pct;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "version", PREC_POLICIES_VERSION);
    cJSON *plans = cJSON_AddObjectToObject(root, "plans");
    for (int i = 0; i < POLICY_COUNT; i++)
        cJSON_AddItemToObject(plans, p->plan[i].name, profile_policy_to_json(p, i));
    cJSON *pp = cJSON_AddObjectToObject(root, "perplexity");
    cJSON_AddStringToObject(pp, "note", "combined perplexity of each plan's forward in each "
                            "phase (rollout and reward: MX forward operands, fp32 compute; "
                            "gradient: the plan's compute type and gradient-phase forward "
                            "operands), on the evaluation set, against the unquantized baseline");
    cJSON_AddNumberToObject(pp, "baseline_ppl", p->base_ppl);
    cJSON_AddNumberToObject(pp, "threshold_pct", p->opts.threshold_pct);
    cJSON_AddNumberToObject(pp, "budget_pct", budget);
    cJSON *ppl = cJSON_AddObjectToObject(pp, "plans");
    for (int i = 0; i < POLICY_COUNT; i++) {
        cJSON *o = cJSON_AddObjectToObject(ppl, p->plan[i].name);
        for (int ph = 0; ph < PREC_PHASE_COUNT; ph++)
            cJSON_AddItemToObject(o, prec_phase_name((prec_phase_t)ph),
                                  phase_ppl(p->plan[i].ppl[ph], p->base_ppl, budget,
                                            p->opts.two_sided));
    }
    cJSON *d = cJSON_AddObjectToObject(root, "derivation");
    cJSON_AddNumberToObject(d, "block", p->opts.block);
    cJSON_AddNumberToObject(d, "layers", p->sens->n);
    cJSON_AddNumberToObject(d, "measurements", p->measurements);
    cJSON_AddItemToObject(d, "greedy_mxfp4", greedy_json(p, &p->g4, "mxfp8_e4m3", "mxfp4_e2m1"));
    cJSON_AddItemToObject(d, "greedy_mxfp8", greedy_json(p, &p->g8, "fp32", "mxfp8_e4m3"));
    cJSON *sens = cJSON_AddArrayToObject(d, "sensitive_layers");
    for (int l = 0; l < p->sens->n; l++)
        if (!p->g4.in[l])
            cJSON_AddItemToArray(sens, cJSON_CreateString(p->sens->layers[l]));
    cJSON_AddItemToObject(d, "options", opts_to_json(&policies_opts_table, &p->opts));
    if (extra)
        for (cJSON *c = extra->child; c;) {
            cJSON *next = c->next;
            cJSON_AddItemToObject(d, c->string, cJSON_DetachItemViaPointer(extra, c));
            c = next;
        }
    cJSON_Delete(extra);
    return root;
}

/* ---- the stage -------------------------------------------------------------------------------- */

typedef struct model_measure {
    profile_worker_t *w;
    profile_ppl_t ppl;
    const profile_sens_t *s;
    const policies_opts_t *o;
    profile_progress_fn progress;
    void *pctx;
    long done, total;
    double t0, base;
} model_measure_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int set_forward(prec_table_t *t, const model_measure_t *mm, prec_phase_t ph,
                       const mx_format_t *fmt, err_t *e)
{
    for (int l = 0; l < mm->s->n; l++) {
        mx_spec_t sp = mx_spec_default(fmt ? fmt[l] : MX_FP32);
        sp.block = mm->o->block;
        sp.round = mm->o->round;
        sp.scale = mm->o->scale;
        if (prec_table_set(t, mm->s->layers[l], ph, PREC_OP_WEIGHT, &sp, e) ||
            prec_table_set(t, mm->s->layers[l], ph, PREC_OP_INPUT, &sp, e))
            return e->code;
    }
    return ERR_OK;
}

static int model_measure_fn(void *ctx, prec_compute_t compute, const mx_format_t *fmt,
                            double *ppl, err_t *e)
{
    model_measure_t *mm = ctx;
    prec_table_t *t = qwen2_precision(mm->w->m);
    /* fp32 compute is what the rollout phase runs; any other is the gradient phase's */
    prec_phase_t ph = compute == PREC_COMPUTE_FP32 ? PREC_ROLLOUT : PREC_GRADIENT;
    prec_ctx_t cx = {ph, 0, 0};
    t->compute = compute;
    double nll = NAN;
    int rc = set_forward(t, mm, ph, fmt, e);
    if (!rc)
        rc = profile_ppl_full(&mm->ppl, &cx, &nll, e);
    err_t e2 = ERR_INIT;
    int rc2 = set_forward(t, mm, ph, NULL, &e2);
    t->compute = PREC_COMPUTE_FP32;
    if (rc)
        return rc;
    if (rc2)
        return err_set(e, rc2, "%s", e2.msg);
    *ppl = profile_ppl_value(nll, mm->ppl.es->tokens);
    mm->done++;
    if (mm->progress) {
        int n4 = 0, n8 = 0, n32 = 0;
        for (int l = 0; l < mm->s->n; l++) {
            n4 += fmt[l] == MX_FP4_E2M1;
            n8 += fmt[l] == MX_FP8_E4M3;
            n32 += fmt[l] == MX_FP32;
        }
        char what[160];
        snprintf(what, sizeof what, "%d mxfp4, %d mxfp8, %d fp32 layers, %s compute", n4, n8, n32,
                 prec_compute_name(compute));
        if (mm->done == 1)
            mm->base = *ppl;
        double el = now_s() - mm->t0;
        profile_progress_t p = {.done = mm->done, .total = mm->total, .what = what, .spec = "",
                                .ppl = *ppl, .delta_pct = profile_delta_pct(*ppl, mm->base),
                                .elapsed_s = el,
                                .left_s = el / (double)mm->done * (double)(mm->total - mm->done)};
        mm->progress(mm->pctx, &p);
    }
    return ERR_OK;
}

int profile_policies_run(const policies_opts_t *o, const policies_paths_t *pa,
                         profile_progress_fn progress, void *pctx,
                         profile_policies_result_t *res, err_t *e)
{
    if (policies_opts_check(o, "policies options", e))
        return e->code;
    if (!pa->sensitivity || !pa->model_dir || (!pa->eval_path && !pa->pairs) || !pa->output)
        return err_set(e, ERR_INPUT, "policies: needs the sensitivity matrix, the model "
                       "directory, evaluation data and an output path");
    profile_sens_t s = {0};
    profile_evalset_t es = {0};
    profile_worker_t *w = NULL;
    profile_policies_t pol = {0};
    model_measure_t mm = {0};
    bool ppl_ok = false;
    char desc[512] = "";
    int rc;
    if (pa->pairs)
        snprintf(desc, sizeof desc, "%s", pa->eval_desc ? pa->eval_desc : "given pairs");
    if ((rc = profile_sens_read(pa->sensitivity, o->block, &s, e)) ||
        (rc = profile_load_evalset(pa->model_dir, pa->eval_path, pa->pairs, pa->npairs,
                                   &o->eval, &es, desc, sizeof desc, e)) ||
        (rc = profile_workers_open(pa->model_dir, &es, 1, o->backend, &w, e)))
        goto done;
    /* the matrix must describe this model: the same quantizable layers */
    {
        const char *const *names;
        int nlin = qwen2_linear_names(w->m, &names), nq = 0;
        for (int i = 0; i < nlin; i++)
            if (!strncmp(names[i], "model.layers.", 13) || !strcmp(names[i], "lm_head"))
                nq++;
        for (int l = 0; l < s.n && !rc; l++)
            if (prec_table_find(qwen2_precision(w->m), s.layers[l]) < 0)
                rc = err_set(e, ERR_INPUT, "%s: layer \"%s\" is not a layer of the model in %s",
                             pa->sensitivity, s.layers[l], pa->model_dir);
        if (!rc && nq != s.n)
            rc = err_set(e, ERR_INPUT, "%s: %d layers, but the model in %s has %d quantizable "
                         "layers (was the matrix measured on another model?)", pa->sensitivity,
                         s.n, pa->model_dir, nq);
        if (rc)
            goto done;
    }
    if ((rc = profile_ppl_init(&mm.ppl, w->m, &es, e)))
        goto done;
    ppl_ok = true;
    mm.w = w;
    mm.s = &s;
    mm.o = o;
    mm.progress = progress;
    mm.pctx = pctx;
    mm.t0 = now_s();
    {
        int c4 = 0, c8 = 0;
        for (int l = 0; l < s.n; l++) {
            c4 += profile_tolerant(s.d4[l], o->threshold_pct, o->two_sided);
            c8 += profile_tolerant(s.d8[l], o->threshold_pct, o->two_sided);
        }
        mm.total = 7 + c4 + c8;   /* an upper bound: repeated configurations are not re-run */
    }
    if ((rc = profile_policies_derive(&s, o, model_measure_fn, &mm, &pol, e)))
        goto done;
    {
        char hx[17];
        cJSON *extra = cJSON_CreateObject();
        cJSON_AddStringToObject(extra, "sensitivity_matrix", pa->sensitivity);
        cJSON_AddStringToObject(extra, "model", pa->model_dir);
        cJSON *ev = cJSON_AddObjectToObject(extra, "eval");
        cJSON_AddStringToObject(ev, "source", desc);
        cJSON_AddNumberToObject(ev, "tokens", (double)es.tokens);
        snprintf(hx, sizeof hx, "%016llx", (unsigned long long)es.fingerprint);
        cJSON_AddStringToObject(ev, "fingerprint", hx);
        /* the matrix's own record, when it sits beside it: was it the same token set? */
        char *rec = profile_sibling(pa->sensitivity, "sensitivity_metrics.json");
        cJSON *rj = NULL;
        err_t ign = ERR_INIT;
        if (rec && fs_exists(rec) && !json_load_file(rec, (size_t)1 << 24, &rj, &ign)) {
            const cJSON *mev = cJSON_GetObjectItemCaseSensitive(rj, "eval");
            const cJSON *fp = cJSON_GetObjectItemCaseSensitive(mev, "fingerprint");
            if (cJSON_IsString(fp)) {
                cJSON_AddStringToObject(ev, "matrix_fingerprint", fp->valuestring);
                cJSON_AddBoolToObject(ev, "same_as_matrix", !strcmp(fp->valuestring, hx));
            }
        }
        cJSON_Delete(rj);
        free(rec);
        cJSON *root = profile_policies_to_json(&pol, extra);
        char *dir = strdup(pa->output), *slash = dir ? strrchr(dir, '/') : NULL;
        if (slash) {
            *slash = 0;
            rc = fs_mkdir_p(dir, e);
        }
        free(dir);
        if (!rc)
            rc = json_write_file(pa->output, root, true, e);
        cJSON_Delete(root);
    }
    if (!rc && res) {
        memset(res, 0, sizeof *res);
        res->layers = s.n;
        res->measurements = pol.measurements;
        res->baseline_ppl = pol.base_ppl;
        for (int l = 0; l < s.n; l++)
            res->sensitive += !pol.g4.in[l];
        for (int i = 0; i < POLICY_COUNT; i++)
            memcpy(res->ppl[i], pol.plan[i].ppl, sizeof res->ppl[i]);
    }
done:
    profile_policies_free(&pol);
    if (ppl_ok)
        profile_ppl_free(&mm.ppl);
    profile_workers_close(w, 1);
    profile_evalset_free(&es);
    profile_sens_free(&s);
    return rc;
}
