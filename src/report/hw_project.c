/* hw_project: the accelerator energy projection (see hw_project.h). */
#include "report/hw_project.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "energy/attrib.h"
#include "model/qwen2.h"
#include "precision/precision.h"
#include "report/csv.h"
#include "report/csv_read.h"
#include "rlhf/ppo.h"
#include "util/fs.h"
#include "util/json.h"

#define F(x) (1u << (x))
#define FP8 (F(MX_FP8_E4M3) | F(MX_FP8_E5M2))
#define FP6 (F(MX_FP6_E3M2) | F(MX_FP6_E2M3))
#define UNITS16 (F(MX_BF16) | F(MX_FP16) | F(MX_FP32))

#define MXDOTP "G. İslamoğlu, L. Bertaccini, A. S. Prasad, F. Conti, A. Garofalo, L. Benini: " \
    "MXDOTP: A RISC-V ISA Extension for Enabling Microscaling (MX) Floating-Point Dot " \
    "Products, IEEE ASAP 2025 (arXiv:2505.13159)"
#define VMXDOTP "M. Wipfli, G. İslamoğlu, N. Kunhi Purayil, A. Garofalo, L. Benini: VMXDOTP: " \
    "A RISC-V Vector ISA Extension for Efficient Microscaling (MX) Format Acceleration, " \
    "arXiv:2603.04979 (2026)"
#define CUYCKENS "S. Cuyckens, X. Yi, R. Geens, J. Dumoulin, M. Wiesner, C. Fang, M. Verhelst: " \
    "Precision-Scalable Microscaling Datapaths with Optimized Reduction Tree for Efficient " \
    "NPU Integration, ASP-DAC 2026 (arXiv:2511.06313)"

const report_hw_source_t report_hw_sources[] = {
    {"mxdotp", "MXFP8 MatMul, 8-core Snitch cluster with MXDOTP units, 12 nm FinFET, 0.8 V, "
     "1 GHz", MXDOTP, "https://arxiv.org/abs/2505.13159", "mxfp8_e4m3, mxfp8_e5m2", 356, 356,
     false},
    {"vmxdotp-fp8", "MXFP8 MatMul, VMXDOTP vector cluster, 12 nm FinFET, 0.8 V, 1 GHz", VMXDOTP,
     "https://arxiv.org/abs/2603.04979", "mxfp8_e4m3, mxfp8_e5m2", 843, 843, false},
    {"vmxdotp-fp4", "MXFP4 MatMul, VMXDOTP vector cluster, 12 nm FinFET, 0.8 V, 1 GHz", VMXDOTP,
     "https://arxiv.org/abs/2603.04979", "mxfp4_e2m1", 1632, 1632, false},
    {"cuyckens-int8", "MXINT8, 8x8 precision-scalable MX MAC array in the SNAX NPU, system "
     "level", CUYCKENS, "https://arxiv.org/abs/2511.06313", "mxint8", 657, 657, false},
    {"cuyckens-fp8-6", "MXFP8 and MXFP6 on the same array (one range for its FP8 and FP6 "
     "modes)", CUYCKENS, "https://arxiv.org/abs/2511.06313",
     "mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3", 1438, 1675, false},
    {"cuyckens-fp4", "MXFP4 on the same array", CUYCKENS, "https://arxiv.org/abs/2511.06313",
     "mxfp4_e2m1", 4065, 4065, false},
    {"redmule", "FP16 MatMul, RedMulE accelerator in an 8-core PULP cluster, 22 nm, full-cluster "
     "efficiency (a 16-bit float MAC standing in for bf16: no bf16 silicon figure was found; a "
     "bf16 multiplier is narrower than an fp16 one)",
     "Y. Tortorella, L. Bertaccini, D. Rossi, L. Benini, F. Conti: RedMulE: A Compact FP16 "
     "Matrix-Multiplication Accelerator for Adaptive Deep Learning on RISC-V-Based "
     "Ultra-Low-Power SoCs, DATE 2022 (arXiv:2204.11192)", "https://arxiv.org/abs/2204.11192",
     "bf16, fp16, fp32 (the 16-bit units)", 688, 688, false},
    {"hbm3e", "HBM3E energy per bit transferred, the vendor's figure",
     "Samsung Electronics, as reported by ChinaFlashMarket (on HBM4E: \"more than twice that of "
     "the current HBM3E, which is 3.9 picojoules (pJ) per bit\")",
     "https://en.chinaflashmarket.com/price/ews/100178", "off-chip bytes", 3.9, 3.9, true},
    {"hygcn-hbm", "HBM access energy assumed in the evaluation of the HyGCN accelerator (M. Yan "
     "et al., HPCA 2020)",
     "as listed with its source in the public survey github.com/Dongyunkam/DRAM_info "
     "(\"7 pJ/b for HBM access energy\")", "https://github.com/Dongyunkam/DRAM_info",
     "off-chip bytes", 7, 7, true},
};
const int report_hw_nsources = (int)(sizeof report_hw_sources / sizeof report_hw_sources[0]);

/* The formats each figure is applied to, in the table's order. */
static const unsigned source_mask[] = {FP8, FP8, F(MX_FP4_E2M1), F(MX_INT8), FP8 | FP6,
                                       F(MX_FP4_E2M1), UNITS16, 0, 0};
_Static_assert(sizeof source_mask / sizeof source_mask[0] ==
                   sizeof report_hw_sources / sizeof report_hw_sources[0],
               "a mask per source");

void report_hw_mac_pj(mx_format_t f, double *lo, double *hi)
{
    double emin = INFINITY, emax = -INFINITY;
    for (int i = 0; i < report_hw_nsources; i++)
        if ((unsigned)f < 32 && (source_mask[i] & F(f))) {
            emin = fmin(emin, report_hw_sources[i].lo);
            emax = fmax(emax, report_hw_sources[i].hi);
        }
    /* ops per joule -> pJ per MAC, two operations per MAC */
    *lo = isfinite(emax) ? 2000.0 / emax : NAN;
    *hi = isfinite(emin) ? 2000.0 / emin : NAN;
}

void report_hw_bit_pj(double *lo, double *hi)
{
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int i = 0; i < report_hw_nsources; i++)
        if (report_hw_sources[i].per_bit) {
            *lo = fmin(*lo, report_hw_sources[i].lo);
            *hi = fmax(*hi, report_hw_sources[i].hi);
        }
}

void report_hw_energy(const profile_cost_t *c, report_hw_energy_t *out)
{
    memset(out, 0, sizeof *out);
    double b16lo, b16hi, blo, bhi;
    report_hw_mac_pj(MX_BF16, &b16lo, &b16hi);
    report_hw_bit_pj(&blo, &bhi);
    double macs = 0;
    for (int f = 0; f < MX_FORMAT_COUNT; f++) {
        double m = c->macs_by_format[f], lo, hi;
        if (m <= 0)
            continue;
        macs += m;
        report_hw_mac_pj((mx_format_t)f, &lo, &hi);
        if (isnan(lo)) {
            out->uncited_macs += m;
            continue;
        }
        out->mac_joules_low += m * lo * 1e-12;
        out->mac_joules_high += m * hi * 1e-12;
    }
    out->byte_joules_low = c->bytes * 8 * blo * 1e-12;
    out->byte_joules_high = c->bytes * 8 * bhi * 1e-12;
    bool ok = out->uncited_macs == 0;
    out->joules_low = ok ? out->mac_joules_low + out->byte_joules_low : NAN;
    out->joules_high = ok ? out->mac_joules_high + out->byte_joules_high : NAN;
    out->bf16_joules_low = macs * b16lo * 1e-12 + c->bytes_bf16 * 8 * blo * 1e-12;
    out->bf16_joules_high = macs * b16hi * 1e-12 + c->bytes_bf16 * 8 * bhi * 1e-12;
}

/* ---- the run's step ------------------------------------------------------------------- */

typedef struct step_shape {
    profile_ppo_step_t st;
    int steps;           /* in the baseline run */
    bool dmax_measured;  /* from samples.jsonl */
} step_shape_t;

static double num_field(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Mean over steps of the longest response in each (samples.jsonl: "step", "tokens"). */
static int mean_dmax(const char *path, int nsteps, double *out, err_t *e)
{
    char *text;
    size_t len;
    int rc = fs_read_all(path, (size_t)1 << 30, &text, &len, e);
    if (rc)
        return rc;
    double *dmax = calloc((size_t)nsteps + 1, sizeof *dmax);
    if (!dmax) {
        free(text);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        double s = num_field(j, "step"), tok = num_field(j, "tokens");
        if (isfinite(s) && isfinite(tok) && s >= 1 && s <= nsteps && tok > dmax[(int)s - 1])
            dmax[(int)s - 1] = tok;
        cJSON_Delete(j);
    }
    double sum = 0;
    int n = 0;
    for (int i = 0; i < nsteps; i++)
        if (dmax[i] > 0) {
            sum += dmax[i];
            n++;
        }
    *out = n ? sum / n : NAN;
    free(dmax);
    free(text);
    return ERR_OK;
}

static int step_shape(const report_hw_project_opts_t *ho, step_shape_t *sh, err_t *e)
{
    memset(sh, 0, sizeof *sh);
    char *stats = fs_join(ho->baseline_dir, PPO_STATS_JSON);
    char *samples = fs_join(ho->baseline_dir, "samples.jsonl");
    cJSON *root = NULL, *sroot = NULL;
    ppo_opts_t o;
    ppo_opts_default(&o);
    int rc = stats && samples ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (ho->ppo) {
        o = *ho->ppo;
    } else if (!rc && ho->config_path) {
        rc = json_load_file(ho->config_path, 1u << 24, &root, e);
        const cJSON *ppo = rc ? NULL : cJSON_GetObjectItemCaseSensitive(root, "ppo");
        if (!rc && ppo)
            rc = opts_from_json(&ppo_opts_table, ppo, ho->config_path, &o, e);
    }
    if (!rc)
        rc = json_load_file(stats, 1u << 30, &sroot, e);
    const cJSON *steps = rc ? NULL : cJSON_GetObjectItemCaseSensitive(sroot, "steps");
    if (!rc && (!cJSON_IsArray(steps) || !cJSON_GetArraySize(steps)))
        rc = err_set(e, ERR_INPUT, "%s: field \"steps\" is missing or empty (expected the PPO "
                     "steps of the baseline run)", stats);
    double q = 0, r = 0;
    int n = 0;
    for (const cJSON *s = rc ? NULL : steps->child; s; s = s->next, n++) {
        double a = num_field(s, "tokens/queries_len_mean"), b = num_field(s, "tokens/responses_len_mean");
        if (!isfinite(a) || !isfinite(b)) {
            rc = err_set(e, ERR_INPUT, "%s: step %d lacks tokens/queries_len_mean or "
                         "tokens/responses_len_mean", stats, n + 1);
            break;
        }
        q += a;
        r += b;
    }
    double d = NAN;
    if (!rc && fs_exists(samples))
        rc = mean_dmax(samples, n, &d, e);
    if (!rc) {
        double B = o.batch_size;
        sh->steps = n;
        sh->dmax_measured = isfinite(d);
        sh->st = (profile_ppo_step_t){B, q / n * B, r / n * B, isfinite(d) ? d : o.max_new_tokens,
                                      o.ppo_epochs, o.batch_size / o.mini_batch_size};
    }
    cJSON_Delete(root);
    cJSON_Delete(sroot);
    free(stats);
    free(samples);
    return rc;
}

/* ---- the models and plans --------------------------------------------------------------- */

typedef struct models {
    profile_layers_t L[3];   /* policy (lm + value head), reference (lm), reward (score) */
    bool made[3];
} models_t;

static void models_free(models_t *m)
{
    for (int i = 0; i < 3; i++)
        if (m->made[i])
            profile_layers_free(&m->L[i]);
}

static int models_load(const char *sft_dir, const char *rm_dir, models_t *m, err_t *e)
{
    memset(m, 0, sizeof *m);
    char *sft = fs_join(sft_dir, "config.json");
    char *rm = rm_dir ? fs_join(rm_dir, "config.json") : strdup("");
    qwen2_config_t cp, cr;
    int rc = sft && rm ? qwen2_config_load(sft, &cp, e) : err_set(e, ERR_NOMEM, "out of memory");
    /* the reward model is the fine-tuned model with a score head: its own config when the
       rm stage ran, else the same shape */
    if (!rc)
        rc = rm[0] && fs_exists(rm) ? qwen2_config_load(rm, &cr, e) : (cr = cp, ERR_OK);
    const unsigned heads[3] = {QWEN2_HEAD_LM | QWEN2_HEAD_VALUE, QWEN2_HEAD_LM, QWEN2_HEAD_SCORE};
    for (int i = 0; !rc && i < 3; i++)
        if (!(rc = profile_layers_make(i == 2 ? &cr : &cp, heads[i], &m->L[i], e)))
            m->made[i] = true;
    free(sft);
    free(rm);
    if (rc)
        models_free(m);
    return rc;
}

/* One plan's per-step cost per phase (plan NULL: fp32 everywhere). */
static int plan_cost(const prec_plan_t *plan, const char *source, const models_t *m,
                     const profile_ppo_step_t *st, profile_cost_t cost[PROFILE_NPHASES + 1],
                     err_t *e)
{
    static const prec_model_t role[3] = {PREC_MODEL_POLICY, PREC_MODEL_REFERENCE, PREC_MODEL_REWARD};
    prec_table_t t[3];
    int made = 0, rc = ERR_OK;
    for (; plan && made < 3 && !rc; made++)
        rc = prec_resolve(plan, source, role[made], (const char *const *)m->L[made].names,
                          m->L[made].n, &t[made], e);
    if (rc)
        made--;
    if (!rc) {
        memset(cost, 0, sizeof(profile_cost_t) * (PROFILE_NPHASES + 1));
        profile_ppo_models_t pm = {&m->L[0], &m->L[1], &m->L[2], plan ? &t[0] : NULL,
                                   plan ? &t[1] : NULL, plan ? &t[2] : NULL};
        profile_cost_ppo_step(&pm, st, cost);
        for (int p = 0; p < PROFILE_NPHASES; p++)
            profile_cost_add(&cost[PROFILE_NPHASES], &cost[p], 1);
    }
    for (int i = 0; i < made; i++)
        prec_table_free(&t[i]);
    return rc;
}

/* ---- the measured baseline --------------------------------------------------------------- */

/* energy_J per phase (and their sum), NaN where absent; the source column's text. */
static int gpu_energy(const char *path, double j[PROFILE_NPHASES + 1], char *src, size_t n,
                      err_t *e)
{
    for (int p = 0; p <= PROFILE_NPHASES; p++)
        j[p] = NAN;
    src[0] = 0;
    if (!path || !fs_exists(path))
        return ERR_OK;
    csv_table_t t;
    int rc = csv_load(path, &t, e), cp = -1, ce = -1;
    if (rc)
        return rc;
    if (!(rc = csv_require_col(&t, "phase", &cp, e)))
        rc = csv_require_col(&t, "energy_J", &ce, e);
    int cs = csv_col(&t, "source");
    for (int r = 0; !rc && r < t.nrows; r++)
        for (int p = 0; p < PROFILE_NPHASES; p++)
            if (!strcmp(csv_cell(&t, r, cp), energy_study_phases[p])) {
                rc = csv_cell_double(&t, r, ce, &j[p], e);
                if (cs >= 0 && !src[0])
                    snprintf(src, n, "%s", csv_cell(&t, r, cs));
            }
    if (!rc && isfinite(j[0]) && isfinite(j[1]) && isfinite(j[2]))
        j[PROFILE_NPHASES] = j[0] + j[1] + j[2];
    csv_table_free(&t);
    return rc;
}

/* ---- the file ---------------------------------------------------------------------------- */

static double ratio(double a, double b) { return isfinite(a) && isfinite(b) && b > 0 ? a / b : NAN; }

static void write_rows(csv_writer_t *w, const char *plan, const profile_cost_t cost[],
                       const double gpu[], int steps, const char *gpu_src)
{
    static const char *const ph[PROFILE_NPHASES + 1] = {"rollout", "reward_inference",
                                                         "gradient_update", "total"};
    for (int p = 0; p <= PROFILE_NPHASES; p++) {
        report_hw_energy_t en;
        report_hw_energy(&cost[p], &en);
        double g = gpu[p] / steps;
        csv_str(w, plan);
        csv_str(w, ph[p]);
        csv_num(w, cost[p].macs);
        for (int f = 0; f < MX_FORMAT_COUNT; f++)
            csv_num(w, cost[p].macs_by_format[f]);
        csv_num(w, en.uncited_macs);
        csv_num(w, cost[p].bytes);
        csv_num(w, cost[p].bytes_bf16);
        csv_num(w, en.mac_joules_low);
        csv_num(w, en.mac_joules_high);
        csv_num(w, en.byte_joules_low);
        csv_num(w, en.byte_joules_high);
        csv_num(w, en.joules_low);
        csv_num(w, en.joules_high);
        csv_num(w, en.bf16_joules_low);
        csv_num(w, en.bf16_joules_high);
        csv_num(w, ratio(en.joules_low, en.bf16_joules_low));
        csv_num(w, ratio(en.joules_high, en.bf16_joules_high));
        csv_num(w, g);
        csv_num(w, ratio(en.joules_low, g));
        csv_num(w, ratio(en.joules_high, g));
        csv_int(w, steps);
        csv_str(w, gpu_src[0] ? gpu_src : NULL);
        csv_endrow(w);
    }
}

void report_hw_project_paths(const char *results, report_hw_project_opts_t *o, char *buf,
                             size_t cap)
{
    memset(o, 0, sizeof *o);
    const char *names[6] = {"config.json", "sft", "rm", "baseline", "policies/policies.json",
                            "baseline/energy.csv"};
    const char **dst[6] = {&o->config_path, &o->sft_dir, &o->rm_dir, &o->baseline_dir,
                           &o->policies, &o->energy};
    size_t each = cap / 7;
    for (int i = 0; i < 6; i++) {
        snprintf(buf + (size_t)i * each, each, "%s/%s", results, names[i]);
        *dst[i] = buf + (size_t)i * each;
    }
    snprintf(buf + 6 * each, each, "%s/hw/%s", results, REPORT_HW_PROJECTION_CSV);
    o->output = buf + 6 * each;
}

int report_hw_project(const report_hw_project_opts_t *o, report_hw_project_result_t *r,
                      err_t *e)
{
    memset(r, 0, sizeof *r);
    if (!o->sft_dir || !o->baseline_dir || !o->policies || !o->output)
        return err_set(e, ERR_INPUT, "hw projection: needs the sft and baseline directories, "
                       "policies.json and an output path");
    snprintf(r->output, sizeof r->output, "%s", o->output);
    prec_policies_t pp = {0};
    models_t m = {0};
    step_shape_t sh;
    double gpu[PROFILE_NPHASES + 1];
    char gsrc[256];
    int rc = prec_policies_load(o->policies, &pp, e);
    if (!rc)
        rc = models_load(o->sft_dir, o->rm_dir, &m, e);
    if (!rc)
        rc = step_shape(o, &sh, e);
    if (!rc)
        rc = gpu_energy(o->energy, gpu, gsrc, sizeof gsrc, e);
    char *dir = rc ? NULL : strdup(r->output);
    if (!rc && dir) {
        char *slash = strrchr(dir, '/');
        if (slash) {
            *slash = 0;
            rc = fs_mkdir_p(dir, e);
        }
    }
    free(dir);
    csv_writer_t w;
    if (!rc)
        rc = csv_open(&w, r->output, e);
    if (rc) {
        prec_policies_free(&pp);
        models_free(&m);
        return rc;
    }
    const char *head[64];
    int nh = 0;
    head[nh++] = "plan";
    head[nh++] = "phase";
    head[nh++] = "macs";
    char fnames[MX_FORMAT_COUNT][32];
    for (int f = 0; f < MX_FORMAT_COUNT; f++) {
        snprintf(fnames[f], sizeof fnames[f], "macs_%s", mx_format_name((mx_format_t)f));
        head[nh++] = fnames[f];
    }
    static const char *const rest[] = {
        "macs_uncited", "bytes", "bytes_bf16", "mac_joules_low", "mac_joules_high",
        "byte_joules_low", "byte_joules_high", "joules_per_step_low", "joules_per_step_high",
        "bf16_joules_per_step_low", "bf16_joules_per_step_high", "ratio_bf16_low",
        "ratio_bf16_high", "gpu_joules_per_step", "ratio_gpu_low", "ratio_gpu_high",
        "baseline_steps", "gpu_energy_source"};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
        head[nh++] = rest[i];
    head[nh] = NULL;
    csv_header(&w, head);
    profile_cost_t cost[PROFILE_NPHASES + 1];
    size_t sl = 0;
    rc = plan_cost(NULL, NULL, &m, &sh.st, cost, e);
    if (!rc) {
        write_rows(&w, "unquantized", cost, gpu, sh.steps, gsrc);
        r->plans++;
    }
    for (int i = 0; !rc && i < pp.nplans; i++) {
        if (!(rc = plan_cost(&pp.plans[i], pp.path, &m, &sh.st, cost, e))) {
            write_rows(&w, pp.plans[i].name, cost, gpu, sh.steps, gsrc);
            r->plans++;
            report_hw_energy_t t;
            report_hw_energy(&cost[PROFILE_NPHASES], &t);
            if (sl < sizeof r->summary)
                sl += (size_t)snprintf(r->summary + sl, sizeof r->summary - sl,
                                       "%s%s %.2f-%.2f", sl ? ", " : "plan / all-bf16 per step: ",
                                       pp.plans[i].name, ratio(t.joules_low, t.bf16_joules_low),
                                       ratio(t.joules_high, t.bf16_joules_high));
        }
    }
    if (rc)
        csv_abort(&w);
    else
        rc = csv_commit(&w, e);
    r->phases = PROFILE_NPHASES + 1;
    prec_policies_free(&pp);
    models_free(&m);
    return rc;
}
