/* compare: PPO under each plan against the unquantized baseline (compare.h): the options,
 * the plans and their tables, the runs in their interleaved order (compare_internal.h). */
#include "pipeline/compare.h"
#include "pipeline/compare_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline/baseline.h"
#include "util/fs.h"

/* ---- options ----------------------------------------------------------------------------- */

static const char *const order_names[] = {"rotate", "fixed", NULL};
static const opt_enum_t order_enum = {order_names, 0, NULL, NULL};

#define CO(f) offsetof(compare_opts_t, f)
#define CAP(f) sizeof(((compare_opts_t *)0)->f)
static const opt_field_t compare_fields[] = {
    OPT_KEY("seeds", OPT_INT, CO(seeds), "3", 1, 1000, "PPO seeds per plan", .flag = "seeds"),
    OPT_KEY("steps", OPT_INT, CO(steps), "20", 1, 1e9,
            "PPO steps of each run (shorter than the baseline's, to fit the chain's time)",
            .flag = "steps"),
    OPT_KEY("plans", OPT_STRING, CO(plans), "baseline,A,B,C,D", 0, 0,
            "plans of policies.json, in order", .cap = CAP(plans), .flag = "plans"),
    OPT_KEY("control", OPT_STRING, CO(control), "baseline", 0, 0,
            "the control plan (must be among the plans)", .cap = CAP(control), .flag = "control"),
    OPT_KEY("reference", OPT_STRING, CO(reference), "", 0, 0,
            "plan of the unquantized runs (empty: none, fp32; on a GPU: bf16)",
            .cap = CAP(reference), .flag = "reference"),
    OPT_KEY("order", OPT_ENUM, CO(order), "rotate", 0, 0,
            "each seed's round in rotated or fixed plan order", .en = &order_enum),
    OPT_KEY("eval_prompts", OPT_INT, CO(eval_prompts), "64", 1, 1e9,
            "held-out prompts for the final samples"),
    OPT_KEY("rm_eval_pairs", OPT_LONG, CO(rm_eval_pairs), "1000", 0, 1e12,
            "rm_eval pairs for the reward models' accuracy (0: all)"),
    OPT_KEY("power_source", OPT_STRING, CO(power_source), "auto", 0, 0,
            "auto, nvml, rapl, none or replay:FILE", .cap = CAP(power_source),
            .flag = "power-source"),
    OPT_KEY("interval_ms", OPT_DOUBLE, CO(interval_ms), "20", 1, 60000, "power sampling interval",
            .flag = "interval-ms"),
    OPT_KEY("idle_s", OPT_DOUBLE, CO(idle_s), "2", 0, 3600,
            "idle power before each run (skipped without a sensor)", .flag = "idle-s"),
    OPT_KEY("tolerance", OPT_DOUBLE, CO(tolerance), "0.1", 0, 10,
            "the control's energy ratio must lie within 1 +- this"),
    OPT_KEY("warmup_steps", OPT_INT, CO(warmup_steps), "2", 0, 1e9,
            "an unrecorded PPO run of this many steps before the rounds (0: none)"),
    OPT_KEY("warmup_each_plan", OPT_BOOL, CO(warmup_each_plan), "false", 0, 0,
            "run that warm-up under every plan, not only the reference"),
    OPT_KEY("calibrate_s", OPT_DOUBLE, CO(calibrate_s), "0", 0, 3600,
            "calibrate each run's phases for this many seconds of steady time (0: off)",
            .flag = "calibrate-s"),
    OPT_KEY("keep_models", OPT_BOOL, CO(keep_models), "false", 0, 0,
            "keep every run's trained policy and checkpoints", .flag = "keep-models"),
};

int compare_plan_list(const char *list, char names[][64], int max, err_t *e)
{
    int n = 0;
    for (const char *p = list;;) {
        while (*p == ' ')
            p++;
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        while (len && p[len - 1] == ' ')
            len--;
        if (!len || len >= 64) {
            err_set(e, ERR_INPUT, "plans \"%s\": expected a comma-separated list of plan names",
                    list);
            return -1;
        }
        if (n == max) {
            err_set(e, ERR_INPUT, "plans \"%s\": at most %d plans", list, max);
            return -1;
        }
        snprintf(names[n], 64, "%.*s", (int)len, p);
        if (!strcmp(names[n], COMPARE_UNQUANTIZED)) {
            err_set(e, ERR_INPUT, "plans \"%s\": \"%s\" is the baseline every plan is compared "
                    "with; it always runs and is not a plan", list, COMPARE_UNQUANTIZED);
            return -1;
        }
        for (int i = 0; i < n; i++)
            if (!strcmp(names[i], names[n])) {
                err_set(e, ERR_INPUT, "plans \"%s\": \"%s\" is named twice", list, names[n]);
                return -1;
            }
        n++;
        if (!q)
            break;
        p = q + 1;
    }
    return n;
}

static int compare_check(const void *opts, const char *ctx, err_t *e)
{
    const compare_opts_t *t = opts;
    char names[COMPARE_MAX_PLANS - 1][64];
    int n = compare_plan_list(t->plans, names, COMPARE_MAX_PLANS - 1, e);
    if (n < 0)
        return err_prefix(e, "%s", ctx);
    bool found = false;
    for (int i = 0; i < n; i++)
        found |= !strcmp(names[i], t->control);
    if (!found)
        return err_set(e, ERR_INPUT, "%s: control \"%s\" is not among the plans \"%s\"", ctx,
                       t->control, t->plans);
    return ERR_OK;
}

const opt_table_t compare_opts_table =
    OPT_TABLE("compare", compare_opts_t, compare_fields, compare_check);

void compare_opts_default(compare_opts_t *o) { opts_default(&compare_opts_table, o); }

/* "native", "native-weights" or "emulated" for what a phase computes under these tables on
 * this backend (be_native answers for each GEMM): native when every GEMM with an operand or
 * a compute type other than fp32 runs in those types on the hardware (on cuda, 16-bit types
 * on the tensor cores, and MX pairs of operands (0,1), (2,3), (4,5) where its dispatch maps
 * them; never on the CPU, which rounds and computes in float32); otherwise emulated, except
 * a rollout whose MX GEMMs are emulated but whose decoding steps read every layer's MX
 * weight packed and multiply exactly (be_native_decode, cuda's packed decoding):
 * native-weights. */
static const char *exec_of(const prec_table_t *const *t, const prec_phase_t *ph, int n,
                           bool all_ops, backend_t *be)
{
    bool mx = false, emulated = false;
    bool packed = n == 1 && ph[0] == PREC_ROLLOUT && t[0];
    for (int k = 0; k < n; k++) {
        if (!t[k])
            continue;
        prec_compute_t ct = prec_compute_for(t[k], ph[k]);
        if (ct != PREC_COMPUTE_FP32 && !be_native(be, NULL, NULL, ct))
            emulated = true;
        for (int i = 0; i < t[k]->nlayers; i++) {
            packed = packed && be_native_decode(be, prec_spec(t[k], i, ph[k], PREC_OP_WEIGHT),
                                                prec_spec(t[k], i, ph[k], PREC_OP_INPUT), ct);
            for (int op = 0; op < (all_ops ? PREC_OPERAND_COUNT : 2); op++) {
                const mx_spec_t *s = prec_spec(t[k], i, ph[k], (prec_operand_t)op);
                const mx_spec_t *o = prec_spec(t[k], i, ph[k], (prec_operand_t)(op ^ 1));
                if (s->format != MX_FP32 && !be_native(be, s, o, ct)) {
                    emulated = true;
                    mx |= mx_format_info(s->format)->is_mx;
                }
            }
        }
    }
    if (mx)
        return packed ? "native-weights" : "emulated";
    return emulated ? "emulated" : "native";
}

static void plan_execution(plan_info_t *p, backend_t *be)
{
    const prec_table_t *tp = p->have_tables ? &p->t_policy : NULL;
    const prec_table_t *tr = p->have_tables ? &p->t_ref : NULL;
    const prec_table_t *tm = p->have_tables ? &p->t_rm : NULL;
    const prec_table_t *roll[1] = {tp}, *rew[3] = {tp, tr, tm}, *grad[1] = {tp};
    prec_phase_t proll[1] = {PREC_ROLLOUT}, prew[3] = {PREC_GRADIENT, PREC_REWARD, PREC_REWARD},
                 pgrad[1] = {PREC_GRADIENT};
    snprintf(p->execution[PH_ROLL], 16, "%s", exec_of(roll, proll, 1, false, be));
    snprintf(p->execution[PH_REW], 16, "%s", exec_of(rew, prew, 3, false, be));
    snprintf(p->execution[PH_GRAD], 16, "%s", exec_of(grad, pgrad, 1, true, be));
    bool same = !strcmp(p->execution[0], p->execution[1]) && !strcmp(p->execution[1], p->execution[2]);
    snprintf(p->execution[PH_TOTAL], 16, "%s", same ? p->execution[0] : "mixed");
}

static int resolve_tables(plan_info_t *p, const prec_policies_t *pol, const profile_layers_t *lp,
                          const profile_layers_t *lr, const profile_layers_t *lm, err_t *e)
{
    const prec_plan_t *plan;
    int rc = prec_plan_find(pol, p->plan, &plan, e);
    if (!rc)
        rc = prec_resolve(plan, pol->path, PREC_MODEL_POLICY, (const char *const *)lp->names,
                          lp->n, &p->t_policy, e);
    if (!rc)
        rc = prec_resolve(plan, pol->path, PREC_MODEL_REFERENCE, (const char *const *)lr->names,
                          lr->n, &p->t_ref, e);
    if (!rc)
        rc = prec_resolve(plan, pol->path, PREC_MODEL_REWARD, (const char *const *)lm->names,
                          lm->n, &p->t_rm, e);
    p->have_tables = !rc;
    if (rc) {
        prec_table_free(&p->t_policy);
        prec_table_free(&p->t_ref);
        prec_table_free(&p->t_rm);
    }
    return rc;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static int rmtree(const char *dir, err_t *e) { return fs_rmtree(dir, e); }

/* Run directories of an earlier comparison ("NN-PLAN-seedS") that this one would not
 * overwrite (fewer seeds or plans): removed, so runs/ holds this comparison's runs only.
 * Other entries (the command's data/) stay. */
static int clear_old_runs(const char *out_dir, err_t *e)
{
    char *runs = fs_join(out_dir, "runs");
    DIR *d = runs ? opendir(runs) : NULL;
    int rc = runs ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    struct dirent *de;
    while (!rc && d && (de = readdir(d))) {
        const char *n = de->d_name;
        if (!isdigit((unsigned char)n[0]) || !isdigit((unsigned char)n[1]) || n[2] != '-' ||
            !strstr(n, "-seed"))
            continue;
        char *p = fs_join(runs, n);
        rc = p ? rmtree(p, e) : err_set(e, ERR_NOMEM, "out of memory");
        free(p);
    }
    if (d)
        closedir(d);
    free(runs);
    return rc;
}

static double load1(void)
{
    double l[3];
    return getloadavg(l, 3) >= 1 ? l[0] : NAN;
}

static void utc_now(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void read_states(energy_source_t *src, energy_device_state_t *st, int *ndev)
{
    *ndev = src ? src->prov.ndev : 0;
    for (int d = 0; d < *ndev; d++) {
        err_t e = ERR_INIT;
        energy_source_state(src, d, &st[d], &e);
    }
}

/* Worst case over devices (min clock, max temperature, OR of throttle bits as a number). */
void cmp_state_summary(const energy_device_state_t *st, int n, energy_device_state_t *out)
{
    out->sm_clock_MHz = out->mem_clock_MHz = out->temperature_C = out->throttle_reasons = NAN;
    for (int d = 0; d < n; d++) {
        if (isfinite(st[d].sm_clock_MHz) && !(st[d].sm_clock_MHz >= out->sm_clock_MHz))
            out->sm_clock_MHz = st[d].sm_clock_MHz;
        if (isfinite(st[d].mem_clock_MHz) && !(st[d].mem_clock_MHz >= out->mem_clock_MHz))
            out->mem_clock_MHz = st[d].mem_clock_MHz;
        if (isfinite(st[d].temperature_C) && !(st[d].temperature_C <= out->temperature_C))
            out->temperature_C = st[d].temperature_C;
        if (isfinite(st[d].throttle_reasons))
            out->throttle_reasons = (double)((unsigned long long)(isfinite(out->throttle_reasons)
                                                                       ? out->throttle_reasons
                                                                       : 0) |
                                             (unsigned long long)st[d].throttle_reasons);
    }
}

cJSON *cmp_num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

cJSON *cmp_state_json(const energy_device_state_t *st, int n, const energy_source_t *src)
{
    cJSON *a = cJSON_CreateArray();
    for (int d = 0; d < n; d++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "device", src->prov.dev[d].label);
        cJSON_AddItemToObject(o, "sm_clock_MHz", cmp_num_or_null(st[d].sm_clock_MHz));
        cJSON_AddItemToObject(o, "mem_clock_MHz", cmp_num_or_null(st[d].mem_clock_MHz));
        cJSON_AddItemToObject(o, "temperature_C", cmp_num_or_null(st[d].temperature_C));
        cJSON_AddItemToObject(o, "throttle_reasons", cmp_num_or_null(st[d].throttle_reasons));
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

static void logf_(const pipeline_compare_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(const pipeline_compare_t *c, const char *fmt, ...)
{
    if (!c->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("mxrlhf compare: ", c->log);
    vfprintf(c->log, fmt, ap);
    fputc('\n', c->log);
    va_end(ap);
    fflush(c->log);
}

static int setup(ctx_t *x, err_t *e)
{
    const pipeline_compare_t *c = x->c;
    char names[COMPARE_MAX_PLANS - 1][64];
    int n = compare_plan_list(x->co->plans, names, COMPARE_MAX_PLANS - 1, e);
    if (n < 0)
        return e->code;
    x->nplans = n + 1;
    snprintf(x->plans[0].name, 64, "%s", COMPARE_UNQUANTIZED);
    snprintf(x->plans[0].plan, 64, "%s", x->co->reference);
    x->control = -1;
    for (int i = 0; i < n; i++) {
        snprintf(x->plans[i + 1].name, 64, "%s", names[i]);
        snprintf(x->plans[i + 1].plan, 64, "%s", names[i]);
        if (!strcmp(names[i], x->co->control))
            x->control = i + 1;
    }
    if (x->control < 0)
        return err_set(e, ERR_INPUT, "the control plan \"%s\" is not among the plans \"%s\"",
                       x->co->control, x->co->plans);
    int rc = prec_policies_load(c->policies_path, &x->pol, e);
    qwen2_config_t cp, cr;
    char *pc = fs_join(c->policy_dir, "config.json"), *rcfg = fs_join(c->reward_dir, "config.json");
    if (!rc)
        rc = pc && rcfg ? qwen2_config_load(pc, &cp, e) : err_set(e, ERR_NOMEM, "oom");
    if (!rc)
        rc = qwen2_config_load(rcfg, &cr, e);
    free(pc);
    free(rcfg);
    if (!rc)
        rc = profile_layers_make(&cp, QWEN2_HEAD_LM | QWEN2_HEAD_VALUE, &x->lp, e);
    if (!rc)
        rc = profile_layers_make(&cp, QWEN2_HEAD_LM, &x->lr, e);
    if (!rc)
        rc = profile_layers_make(&cr, QWEN2_HEAD_SCORE, &x->lm, e);
    for (int i = 0; !rc && i < x->nplans; i++)
        if (x->plans[i].plan[0])
            rc = resolve_tables(&x->plans[i], &x->pol, &x->lp, &x->lr, &x->lm, e);
    for (int i = 0; !rc && i < x->nplans; i++)
        plan_execution(&x->plans[i], c->be);
    if (rc)
        return rc;
    /* the order: seed-major rounds, rotated */
    x->nruns = x->nplans * x->co->seeds;
    x->runs = calloc((size_t)x->nruns, sizeof *x->runs);
    x->order = calloc((size_t)x->nruns, sizeof *x->order);
    if (!x->runs || !x->order)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (int r = 0, k = 0; r < x->co->seeds; r++)
        for (int j = 0; j < x->nplans; j++, k++) {
            int p = x->co->order == COMPARE_ORDER_ROTATE ? (j + r) % x->nplans : j;
            run_rec_t *rr = &x->runs[r * x->nplans + p];
            rr->plan = p;
            rr->round = r;
            x->order[k] = r * x->nplans + p;
        }
    /* clocks and temperature: a source of our own, opened like the runs' */
    energy_source_opts_t so;
    memset(&so, 0, sizeof so);
    energy_source_opts_from_env(&so);
    so.devices = c->devices;
    err_t se = ERR_INIT;
    if (energy_source_open(x->co->power_source, &so, &x->state_src, &se)) {
        x->state_src = NULL;
        snprintf(x->state_note, sizeof x->state_note, "absent: %s", se.msg);
    } else {
        energy_device_state_t st;
        if (x->state_src->prov.ndev == 0 || energy_source_state(x->state_src, 0, &st, &se))
            snprintf(x->state_note, sizeof x->state_note, "absent: %s",
                     x->state_src->prov.ndev ? se.msg : "the source has no devices (no sensor)");
        else
            snprintf(x->state_note, sizeof x->state_note, "read from %s before and after each "
                     "run", x->state_src->prov.kind);
    }
    return ERR_OK;
}

/* The PPO options of a comparison run: the base's, with steps and seed set and the
 * extras (checkpoints, best-of-n, periodic evaluations) off. */
static ppo_opts_t run_ppo_opts(const ppo_opts_t *base, int steps, uint64_t seed,
                               int eval_prompts)
{
    ppo_opts_t o = *base;
    o.steps = steps;
    o.seed = seed;
    o.checkpoint_every = 0;
    o.best_of_n = 0;
    o.eval_every = 0;
    o.eval_prompts = eval_prompts;
    return o;
}

/* What pipeline_baseline_run needs for one run of plan p into dir. */
static pipeline_baseline_t run_baseline(const ctx_t *x, const plan_info_t *p, const char *dir)
{
    const pipeline_compare_t *c = x->c;
    bool sensor = x->state_src && strcmp(x->state_src->prov.kind, "none");
    return (pipeline_baseline_t){
        .be = c->be, .policy_dir = c->policy_dir, .reward_dir = c->reward_dir,
        .prompts = c->prompts, .n_prompts = c->n_prompts, .eval_prompts = c->eval_prompts,
        .n_eval = c->n_eval, .synthetic = c->synthetic, .out_dir = dir,
        .power_source = x->co->power_source, .devices = c->devices,
        .interval_s = x->co->interval_ms / 1000, .idle_s = sensor ? x->co->idle_s : 0,
        .policies_path = p->plan[0] ? c->policies_path : NULL,
        .plan = p->plan[0] ? p->plan : NULL,
        .opts = {x->co->calibrate_s > 0, x->co->calibrate_s}, .log = NULL};
}

static int one_run(ctx_t *x, int k, const ppo_opts_t *base, err_t *e)
{
    const pipeline_compare_t *c = x->c;
    run_rec_t *r = &x->runs[x->order[k]];
    const plan_info_t *p = &x->plans[r->plan];
    ppo_opts_t o = run_ppo_opts(base, x->co->steps, base->seed + (uint64_t)r->round,
                                x->co->eval_prompts);
    r->seed = o.seed;
    snprintf(r->dir, sizeof r->dir, "%s/runs/%02d-%s-seed%llu", c->out_dir, k + 1, p->name,
             (unsigned long long)o.seed);
    pipeline_baseline_t b = run_baseline(x, p, r->dir);
    logf_(c, "run %d/%d: %s, seed %llu -> %s", k + 1, x->nruns, p->name,
          (unsigned long long)o.seed, r->dir);
    int rc = rmtree(r->dir, e);
    utc_now(r->started, sizeof r->started);
    r->load0 = load1();
    read_states(x->state_src, r->st0, &r->ndev);
    double t0 = rlhf_now();
    rlhf_ppo_result_t res;
    if (!rc)
        rc = pipeline_baseline_run(&o, &b, &res, e);
    r->wall_s = rlhf_now() - t0;
    read_states(x->state_src, r->st1, &r->ndev);
    r->load1 = load1();
    if (rc)
        return err_prefix(e, "run %s", r->dir);
    r->final_reward = res.last.reward_mean;
    r->kl = res.last.kl_mean;
    r->truth_mean = res.last.synth_score_mean;
    char *sp = fs_join(r->dir, PPO_EVAL_SAMPLES);
    rc = sp ? cmp_read_energy(r, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = cmp_each_line(sp, cmp_add_sample, r, e);
    free(sp);
    if (!rc)
        rc = cmp_run_cost(r, p, &x->lp, &x->lr, &x->lm, &o, e);
    if (!rc && !x->co->keep_models) {
        char *pd = fs_join(r->dir, "policy"), *cd = fs_join(r->dir, "checkpoints"),
             *kd = fs_join(r->dir, "critic");
        rc = pd && cd && kd ? rmtree(pd, e) : err_set(e, ERR_NOMEM, "out of memory");
        if (!rc)
            rc = rmtree(cd, e);
        if (!rc)
            rc = rmtree(kd, e);
        free(pd);
        free(cd);
        free(kd);
    }
    if (!rc) {
        char en[64] = "no sensor";
        if (isfinite(r->energy[PH_TOTAL]))
            snprintf(en, sizeof en, "%.1f J", r->energy[PH_TOTAL]);
        logf_(c, "  %.1f s (phases %.1f / %.1f / %.1f s), %s; final reward %.4f, KL %.3f",
              r->wall_s, r->runtime[PH_ROLL], r->runtime[PH_REW], r->runtime[PH_GRAD], en,
              r->final_reward, r->kl);
    }
    return rc;
}

/* warmup_steps of PPO under the reference's computation (and, with warmup_each_plan, under
 * every plan's), unmonitored and thrown away: the device, its clocks, cuBLASLt's and cuDNN's
 * plans and the allocator meet the run's shapes before the first recorded run, which would
 * otherwise be slower for no reason of its plan's. */
static int warmup(ctx_t *x, const ppo_opts_t *base, err_t *e)
{
    const pipeline_compare_t *c = x->c;
    if (x->co->warmup_steps <= 0)
        return ERR_OK;
    ppo_opts_t o = run_ppo_opts(base, x->co->warmup_steps, base->seed, 0);
    char *dir = fs_join(c->out_dir, "runs/00-warmup");
    if (!dir)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = ERR_OK;
    const int n = x->co->warmup_each_plan ? x->nplans : 1;
    for (int i = 0; !rc && i < n; i++) {
        const plan_info_t *p = &x->plans[i];
        pipeline_baseline_t b = run_baseline(x, p, dir);
        b.power_source = "none"; /* unmonitored: nothing of it is recorded */
        b.devices = NULL;
        b.idle_s = 0;
        b.opts.calibrate = false;
        logf_(c, "warm-up: %d PPO steps as %s, not recorded", o.steps, p->name);
        double t0 = rlhf_now();
        rlhf_ppo_result_t res;
        rc = rmtree(dir, e);
        if (!rc)
            rc = pipeline_baseline_run(&o, &b, &res, e);
        if (rc)
            err_prefix(e, "warm-up run %s (%s)", dir, p->name);
        else
            rc = rmtree(dir, e);
        if (!rc)
            logf_(c, "  %.1f s", rlhf_now() - t0);
    }
    free(dir);
    return rc;
}

static int rm_accuracy(ctx_t *x, err_t *e)
{
    const pipeline_compare_t *c = x->c;
    size_t n = c->n_rm_eval;
    if (x->co->rm_eval_pairs > 0 && (size_t)x->co->rm_eval_pairs < n)
        n = (size_t)x->co->rm_eval_pairs;
    for (int p = 0; p < x->nplans; p++) {
        plan_info_t *pl = &x->plans[p];
        rlhf_rm_metrics_t m;
        pl->rm_pairs = (long)n;
        pl->rm_acc = pl->rm_acc_ci = NAN;
        if (!n)
            continue;
        int rc = rlhf_rm_evaluate_dir_plan(c->be, c->rm_opts, c->reward_dir,
                                           pl->plan[0] ? c->policies_path : NULL,
                                           pl->plan[0] ? pl->plan : NULL, c->rm_eval, n, &m,
                                           NULL, NULL, e);
        if (rc)
            return err_prefix(e, "RM accuracy under plan %s", pl->name);
        pl->rm_acc = m.accuracy;
        pl->rm_acc_ci = 1.959963984540054 * sqrt(m.accuracy * (1 - m.accuracy) / (double)n);
        logf_(c, "RM accuracy under %s: %.4f on %zu rm_eval pairs", pl->name, m.accuracy, n);
    }
    return ERR_OK;
}

int pipeline_compare_run(const compare_opts_t *co, const ppo_opts_t *ppo,
                         const pipeline_compare_t *c, pipeline_compare_result_t *res, err_t *e)
{
    double t_start = rlhf_now();
    ctx_t *x = calloc(1, sizeof *x);
    if (!x)
        return err_set(e, ERR_NOMEM, "out of memory");
    x->co = co;
    x->c = c;
    int rc = fs_mkdir_p(c->out_dir, e);
    if (!rc)
        rc = setup(x, e);
    if (!rc)
        rc = clear_old_runs(c->out_dir, e);
    if (!rc)
        logf_(c, "%d plans (%s and %s) x %d seeds = %d PPO runs of %d steps, interleaved; "
              "clocks and temperature: %s", x->nplans, COMPARE_UNQUANTIZED, co->plans, co->seeds,
              x->nruns, co->steps, x->state_note);
    if (!rc)
        rc = warmup(x, ppo, e);
    for (int k = 0; !rc && k < x->nruns; k++)
        rc = one_run(x, k, ppo, e);
    double t_judge = rlhf_now();
    if (!rc)
        rc = cmp_judge_runs(c, x->runs, x->nruns, e);
    if (!rc)
        for (int i = 0; i < x->nruns; i++) {
            run_rec_t *r = &x->runs[i];
            cmp_win_rates(r, &x->runs[r->round * x->nplans], c->synthetic);
        }
    double t_rm = rlhf_now();
    if (!rc)
        rc = rm_accuracy(x, e);
    double t_end = rlhf_now();
    profile_control_check_t chk = {0};
    plan_stats_t cs;
    if (!rc) {
        cmp_plan_stats(x->runs, x->nruns, x->control, co->seeds, &cs);
        double wj[co->seeds], wt[co->seeds];
        cmp_gather(x->runs, x->nruns, x->control, co->seeds, wj, offsetof(run_rec_t, win_judge));
        cmp_gather(x->runs, x->nruns, x->control, co->seeds, wt, offsetof(run_rec_t, win_truth));
        profile_control_in_t in = {wj, c->synthetic ? wt : NULL, co->seeds,
                                   cs.energy_ratio[PH_TOTAL], cs.runtime_ratio[PH_TOTAL],
                                   co->tolerance};
        profile_control_check(&in, &chk);
    }
    char src[512] = "";
    if (!rc && x->nruns)
        snprintf(src, sizeof src, "%s", x->runs[0].source);
    char *p1 = fs_join(c->out_dir, COMPARE_CSV), *p2 = fs_join(c->out_dir, COMPARE_RUNS_CSV);
    if (!rc && (!p1 || !p2))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = cmp_write_comparison_csv(p1, x->plans, x->nplans, x->runs, x->nruns, co, src,
                                  x->runs[0].nsamples, e);
    if (!rc)
        rc = cmp_write_runs_csv(p2, x->plans, x->runs, x->order, x->nruns, e);
    if (!rc)
        rc = cmp_write_json(x, ppo, &chk, &cs, rlhf_now() - t_start, t_rm - t_judge,
                            t_end - t_rm, e);
    free(p1);
    free(p2);
    if (!rc) {
        logf_(c, "%s", chk.message);
        if (res) {
            res->runs = x->nruns;
            res->seconds = rlhf_now() - t_start;
            res->control_ok = chk.ok;
            snprintf(res->control_message, sizeof res->control_message, "%s", chk.message);
        }
        if (!chk.win_ok)
            rc = err_set(e, ERR_FAIL, "%s", chk.message);
    }
    for (int i = 0; i < x->nruns; i++)
        cmp_run_free(&x->runs[i]);
    for (int p = 0; p < x->nplans; p++)
        if (x->plans[p].have_tables) {
            prec_table_free(&x->plans[p].t_policy);
            prec_table_free(&x->plans[p].t_ref);
            prec_table_free(&x->plans[p].t_rm);
        }
    prec_policies_free(&x->pol);
    profile_layers_free(&x->lp);
    profile_layers_free(&x->lr);
    profile_layers_free(&x->lm);
    energy_source_close(x->state_src);
    free(x->runs);
    free(x->order);
    free(x);
    return rc;
}
