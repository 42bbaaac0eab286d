/* Tests for report/hw_project (the accelerator energy projection) and report/hw_section
 * (report.md's "The MX datapath"): the energy per MAC and per bit are the cited figures
 * turned into picojoules by hand here, a cost is charged exactly as docs/hardware.md says,
 * and a small results directory (a fixture model's config, a baseline's token counts and
 * energy.csv, a policies file) gives the rows and relations the CSV promises, through the
 * library and through `mxrlhf hw project`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profile/modelled.h"
#include "report/csv_read.h"
#include "report/hw_project.h"
#include "report/hw_section.h"
#include "support/testutil.h"
#include "util/fs.h"

#define NEAR(a, b) assert_true(fabs((double)(a) - (double)(b)) <= 1e-12 * fabs((double)(b)) + 1e-300)

static void figures_become_picojoules(void **state)
{
    (void)state;
    double lo, hi;
    /* MXFP4: VMXDOTP 1632 and Cuyckens et al. 4065 GOPS/W, two operations per MAC */
    report_hw_mac_pj(MX_FP4_E2M1, &lo, &hi);
    NEAR(lo, 2000.0 / 4065);
    NEAR(hi, 2000.0 / 1632);
    /* MXFP8: MXDOTP 356 .. Cuyckens et al. 1675 */
    report_hw_mac_pj(MX_FP8_E5M2, &lo, &hi);
    NEAR(lo, 2000.0 / 1675);
    NEAR(hi, 2000.0 / 356);
    /* MXFP6: Cuyckens et al. 1438-1675 only */
    report_hw_mac_pj(MX_FP6_E2M3, &lo, &hi);
    NEAR(lo, 2000.0 / 1675);
    NEAR(hi, 2000.0 / 1438);
    report_hw_mac_pj(MX_INT8, &lo, &hi);
    NEAR(lo, 2000.0 / 657);
    NEAR(hi, 2000.0 / 657);
    /* the 16-bit units: RedMulE's 688 for bf16, fp16 and fp32 alike */
    report_hw_mac_pj(MX_FP32, &lo, &hi);
    NEAR(lo, 2000.0 / 688);
    /* no cited figure for mxint4 */
    report_hw_mac_pj(MX_INT4, &lo, &hi);
    assert_true(isnan(lo) && isnan(hi));
    report_hw_bit_pj(&lo, &hi);
    NEAR(lo, 3.9);
    NEAR(hi, 7.0);
    /* every source names where it comes from */
    for (int i = 0; i < report_hw_nsources; i++) {
        const report_hw_source_t *s = &report_hw_sources[i];
        assert_true(s->cite && strlen(s->cite) > 20 && s->url && !strncmp(s->url, "https://", 8));
        assert_true(s->lo > 0 && s->hi >= s->lo);
    }
}

static void a_cost_is_charged_per_format_and_bit(void **state)
{
    (void)state;
    profile_cost_t c = {0};
    c.macs_by_format[MX_FP4_E2M1] = 3e9;
    c.macs_by_format[MX_FP8_E4M3] = 2e9;
    c.macs_by_format[MX_BF16] = 1e9;
    c.macs = 6e9;
    c.bytes = 5e6;
    c.bytes_bf16 = 2e7;
    report_hw_energy_t en;
    report_hw_energy(&c, &en);
    double mac_lo = (3e9 * 2000.0 / 4065 + 2e9 * 2000.0 / 1675 + 1e9 * 2000.0 / 688) * 1e-12;
    double mac_hi = (3e9 * 2000.0 / 1632 + 2e9 * 2000.0 / 356 + 1e9 * 2000.0 / 688) * 1e-12;
    NEAR(en.mac_joules_low, mac_lo);
    NEAR(en.mac_joules_high, mac_hi);
    NEAR(en.byte_joules_low, 5e6 * 8 * 3.9e-12);
    NEAR(en.byte_joules_high, 5e6 * 8 * 7e-12);
    NEAR(en.joules_low, mac_lo + 5e6 * 8 * 3.9e-12);
    NEAR(en.bf16_joules_low, 6e9 * 2000.0 / 688 * 1e-12 + 2e7 * 8 * 3.9e-12);
    NEAR(en.bf16_joules_high, 6e9 * 2000.0 / 688 * 1e-12 + 2e7 * 8 * 7e-12);
    assert_true(en.uncited_macs == 0);
    /* a format nobody measured leaves the total empty rather than guessed */
    c.macs_by_format[MX_INT4] = 1e6;
    report_hw_energy(&c, &en);
    assert_true(en.uncited_macs == 1e6);
    assert_true(isnan(en.joules_low) && isnan(en.joules_high));
    assert_true(isfinite(en.mac_joules_low));
}

/* ---- a results directory ---------------------------------------------------------------- */

static void write_text(const char *dir, const char *name, const char *text)
{
    char *p = fs_join(dir, name);
    test_write_file(p, text, strlen(text));
    free(p);
}

static char *make_results(void)
{
    char *d = test_mkdtemp();
    char sub[600];
    const char *dirs[] = {"sft", "baseline", "policies"};
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", d, dirs[i]);
        err_t e = ERR_INIT;
        assert_int_equal(fs_mkdir_p(sub, &e), 0);
    }
    char *cfg;
    size_t len;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all("tests/fixtures/model/tiny_tied_gqa_f32/config.json", 1 << 20,
                                 &cfg, &len, &e), 0);
    write_text(d, "sft/config.json", cfg);
    free(cfg);
    write_text(d, "config.json",
               "{\"ppo\": {\"batch_size\": 8, \"mini_batch_size\": 4, \"ppo_epochs\": 2, "
               "\"max_new_tokens\": 12}}");
    write_text(d, "baseline/training_stats.json",
               "{\"steps\": [{\"tokens/queries_len_mean\": 10, \"tokens/responses_len_mean\": 6},"
               " {\"tokens/queries_len_mean\": 14, \"tokens/responses_len_mean\": 10}]}");
    write_text(d, "baseline/energy.csv",
               "phase,avg_power_W,runtime_s,energy_J,source\n"
               "rollout,100,2,200,nvml\nreward_inference,100,1,100,nvml\n"
               "gradient_update,100,3,300,nvml\n");
    write_text(d, "policies/policies.json",
               "{\"version\": 1, \"plans\": {"
               "\"fp4\": {\"default\": \"mxfp4_e2m1/32\"},"
               "\"mixed\": {\"default\": \"bf16\", \"compute\": \"bf16\", \"rules\": ["
               "{\"phase\": \"rollout\", \"operand\": \"weight\", \"spec\": \"mxfp4_e2m1\"},"
               "{\"phase\": \"rollout\", \"operand\": \"input\", \"spec\": \"mxfp8_e4m3\"}]}}}");
    return d;
}

static double cellv(const csv_table_t *t, int row, const char *col)
{
    int c = csv_col(t, col);
    double v = NAN;
    err_t e = ERR_INIT;
    if (c < 0)
        fail_msg("no column %s", col);
    if (csv_cell_double(t, row, c, &v, &e))
        fail_msg("%s", e.msg);
    return v;
}

static int row_of(const csv_table_t *t, const char *plan, const char *phase)
{
    for (int r = 0; r < t->nrows; r++)
        if (!strcmp(csv_cell(t, r, csv_col(t, "plan")), plan) &&
            !strcmp(csv_cell(t, r, csv_col(t, "phase")), phase))
            return r;
    fail_msg("no row %s / %s", plan, phase);
    return -1;
}

/* make_results, then the projection into its default path (o and buf filled, as
   report_hw_project_paths does) */
static char *project_results(report_hw_project_opts_t *o, char *buf, size_t cap,
                             report_hw_project_result_t *r)
{
    char *d = make_results();
    report_hw_project_paths(d, o, buf, cap);
    err_t e = ERR_INIT;
    if (report_hw_project(o, r, &e))
        fail_msg("%s", e.msg);
    return d;
}

static void the_projection_file(void **state)
{
    (void)state;
    char buf[8000];
    report_hw_project_opts_t o;
    report_hw_project_result_t r;
    char *d = project_results(&o, buf, sizeof buf, &r);
    err_t e = ERR_INIT;
    assert_int_equal(r.plans, 3);
    csv_table_t t;
    assert_int_equal(csv_load(o.output, &t, &e), 0);
    assert_int_equal(t.nrows, 3 * 4);
    static const char *const phases[] = {"rollout", "reward_inference", "gradient_update"};
    for (int p = 0; p < 3; p++) {
        /* formats change bytes, never the MAC count */
        int u = row_of(&t, "unquantized", phases[p]), f = row_of(&t, "fp4", phases[p]);
        assert_true(cellv(&t, u, "macs") > 0);
        NEAR(cellv(&t, u, "macs"), cellv(&t, f, "macs"));
        assert_true(cellv(&t, f, "bytes") < cellv(&t, u, "bytes"));
        /* plan fp4 quantizes every operand: all its MACs are mxfp4 ones */
        NEAR(cellv(&t, f, "macs_mxfp4_e2m1"), cellv(&t, f, "macs"));
        /* the unquantized run's MACs are fp32 (on the 16-bit units) */
        NEAR(cellv(&t, u, "macs_fp32"), cellv(&t, u, "macs"));
        /* the measured baseline per step: energy_J / 2 steps */
        NEAR(cellv(&t, f, "gpu_joules_per_step"), (p == 0 ? 200.0 : p == 1 ? 100.0 : 300.0) / 2);
        NEAR(cellv(&t, f, "ratio_gpu_low"),
             cellv(&t, f, "joules_per_step_low") / cellv(&t, f, "gpu_joules_per_step"));
        NEAR(cellv(&t, f, "ratio_bf16_high"),
             cellv(&t, f, "joules_per_step_high") / cellv(&t, f, "bf16_joules_per_step_high"));
        assert_true(cellv(&t, f, "joules_per_step_low") < cellv(&t, f, "joules_per_step_high"));
        /* MXFP4 beats the 16-bit units at both ends of its range */
        assert_true(cellv(&t, f, "ratio_bf16_high") < 1);
    }
    /* the mixed plan: rollout MACs are mxfp8 (the wider of fp4 weights and fp8 inputs);
       the gradient phase's bf16 MACs go to bf16 */
    int mr = row_of(&t, "mixed", "rollout"), mg = row_of(&t, "mixed", "gradient_update");
    NEAR(cellv(&t, mr, "macs_mxfp8_e4m3"), cellv(&t, mr, "macs"));
    NEAR(cellv(&t, mg, "macs_bf16"), cellv(&t, mg, "macs"));
    /* total = the sum of the phases */
    for (int pl = 0; pl < 3; pl++) {
        const char *plan = pl == 0 ? "unquantized" : pl == 1 ? "fp4" : "mixed";
        double s = 0, sj = 0;
        for (int p = 0; p < 3; p++) {
            s += cellv(&t, row_of(&t, plan, phases[p]), "macs");
            sj += cellv(&t, row_of(&t, plan, phases[p]), "joules_per_step_low");
        }
        int tr = row_of(&t, plan, "total");
        NEAR(cellv(&t, tr, "macs"), s);
        assert_true(fabs(cellv(&t, tr, "joules_per_step_low") - sj) <= 1e-9 * sj);
        NEAR(cellv(&t, tr, "gpu_joules_per_step"), 300);
    }
    assert_string_equal(csv_cell(&t, 0, csv_col(&t, "gpu_energy_source")), "nvml");
    csv_table_free(&t);

    /* the report section reads it back */
    char *md = NULL;
    size_t mdlen = 0;
    FILE *f = open_memstream(&md, &mdlen);
    assert_int_equal(report_hw_section(f, d, &e), 0);
    fclose(f);
    assert_non_null(strstr(md, "## The MX datapath"));
    assert_non_null(strstr(md, "| fp4 | rollout |"));
    assert_non_null(strstr(md, "No `hw/synthesis.csv`"));
    assert_non_null(strstr(md, "mxdotp"));
    assert_non_null(strstr(md, "The measured baseline: nvml."));
    free(md);
    /* with the synthesis table beside the projection it is shown, figures as written */
    write_text(d, "hw/synthesis.csv",
               "design,lut4,carry,ff,multipliers,dsp,gates,transistors,fits_hx8k,lc_hx8k,"
               "fmax_mhz,tools\n\"PE mxfp4_e2m1, k = 32\",3273,626,127,32,0,5615,40480,yes,"
               "4100,21.5,\"Yosys 0.23\"\n");
    f = open_memstream(&md, &mdlen);
    assert_int_equal(report_hw_section(f, d, &e), 0);
    fclose(f);
    assert_non_null(strstr(md, "| PE mxfp4_e2m1, k = 32 | 3273 | 626 | 127 | 32 | 5615 | 40480 | yes | "
                               "21.500 | Yosys 0.23 |"));
    free(md);

    /* without energy.csv the GPU columns are empty, the rest is there */
    char *en = fs_join(d, "baseline/energy.csv");
    remove(en);
    free(en);
    assert_int_equal(report_hw_project(&o, &r, &e), 0);
    assert_int_equal(csv_load(o.output, &t, &e), 0);
    assert_true(isnan(cellv(&t, 1, "gpu_joules_per_step")));
    assert_true(isfinite(cellv(&t, 1, "joules_per_step_low")));
    csv_table_free(&t);

    /* a missing baseline is an error that names the file */
    char *st = fs_join(d, "baseline/training_stats.json");
    remove(st);
    free(st);
    assert_int_not_equal(report_hw_project(&o, &r, &e), 0);
    assert_non_null(strstr(e.msg, "training_stats.json"));
    test_rmtree(d);
    free(d);
}

/* `mxrlhf hw project` as a user runs it: the same file as the library writes, the paths
   its options name, and a usage error for a results directory without policies */
static void the_command(void **state)
{
    (void)state;
    char buf[8000];
    report_hw_project_opts_t o;
    report_hw_project_result_t r;
    char *d = project_results(&o, buf, sizeof buf, &r);
    err_t e = ERR_INIT;
    char *lib, *cli, *out;
    size_t nlib, ncli;
    assert_int_equal(fs_read_all(o.output, 1 << 24, &lib, &nlib, &e), 0);
    remove(o.output);
    if (test_cli(&out, "hw project --results %s", d))
        fail_msg("%s", out);
    assert_non_null(strstr(out, "3 plans x 4 phases"));
    free(out);
    assert_int_equal(fs_read_all(o.output, 1 << 24, &cli, &ncli, &e), 0);
    assert_int_equal(ncli, nlib);
    assert_memory_equal(cli, lib, nlib);
    free(cli);
    free(lib);
    /* --energy names another measured baseline: the GPU column follows it (400 J / 2 steps) */
    write_text(d, "other_energy.csv",
               "phase,avg_power_W,runtime_s,energy_J,source\n"
               "rollout,100,4,400,rapl\nreward_inference,100,1,100,rapl\n"
               "gradient_update,100,3,300,rapl\n");
    char *alt = fs_join(d, "alt.csv");
    if (test_cli(&out, "hw project --results %s --energy %s/other_energy.csv --output %s", d, d, alt))
        fail_msg("%s", out);
    free(out);
    csv_table_t t;
    assert_int_equal(csv_load(alt, &t, &e), 0);
    int u = row_of(&t, "unquantized", "rollout");
    NEAR(cellv(&t, u, "gpu_joules_per_step"), 200);
    assert_string_equal(csv_cell(&t, u, csv_col(&t, "gpu_energy_source")), "rapl");
    csv_table_free(&t);
    free(alt);
    /* no policies.json: exit 2, naming the file */
    char *pj = fs_join(d, "policies/policies.json");
    remove(pj);
    free(pj);
    assert_int_equal(test_cli(&out, "hw project --results %s", d), 2);
    assert_non_null(strstr(out, "policies.json"));
    free(out);
    test_rmtree(d);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(figures_become_picojoules),
        cmocka_unit_test(a_cost_is_charged_per_format_and_bit),
        cmocka_unit_test(the_projection_file),
        cmocka_unit_test(the_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
