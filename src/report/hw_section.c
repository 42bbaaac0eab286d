/* hw_section: "The MX datapath" section of report.md (see hw_section.h). */
#include "report/hw_section.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "report/csv_read.h"
#include "report/hw_project.h"
#include "report/study.h"
#include "util/fs.h"

/* results/hw/name, else results/name (caller frees), or NULL. */
static char *find_hw(const char *results, const char *name)
{
    const char *const dirs[2] = {"hw", "."};
    for (int i = 0; i < 2; i++) {
        char *d = fs_join(results, dirs[i]), *p = d ? fs_join(d, name) : NULL;
        free(d);
        if (p && fs_exists(p))
            return p;
        free(p);
    }
    return NULL;
}

/* A cell by column name ("" when the column is absent), and as a number (NaN when empty or
 * not a number: a missing figure). */
static const char *str(const csv_table_t *t, int row, const char *col)
{
    int c = csv_col(t, col);
    return c < 0 ? "" : csv_cell(t, row, c);
}

static double num(const csv_table_t *t, int row, const char *col)
{
    const char *s = str(t, row, col);
    char *end;
    double v = strtod(s, &end);
    return *s && !*end ? v : NAN;
}

/* "lo-hi" (one number when they agree), "n/a" when missing. */
static const char *range(double lo, double hi, char *buf, size_t cap)
{
    char a[32], b[32];
    if (!isfinite(lo) || !isfinite(hi))
        snprintf(buf, cap, "n/a");
    else if (report_fmt(lo, a) && !strcmp(a, report_fmt(hi, b)))
        snprintf(buf, cap, "%s", a);
    else
        snprintf(buf, cap, "%s – %s", report_fmt(lo, a), report_fmt(hi, b));
    return buf;
}

static void synthesis(FILE *md, const char *results)
{
    char *p = find_hw(results, REPORT_HW_SYNTHESIS_CSV);
    csv_table_t t;
    err_t e = ERR_INIT;
    if (!p || csv_load(p, &t, &e)) {
        fprintf(md, "No `hw/%s` in the results (`make hw-synth` writes it to "
                    "`hw/synth/`; the hw stage copies it here): the synthesis table is in "
                    "docs/hardware.md.\n\n", REPORT_HW_SYNTHESIS_CSV);
        free(p);
        return;
    }
    fprintf(md, "### The processing elements on an FPGA\n\nFrom `%s` (`make hw-synth`: Yosys "
                "for the iCE40 family and for generic gates, nextpnr-ice40 place and route on "
                "an HX8K; docs/hardware.md says how). One PE takes a block of k = 32 element "
                "pairs and both E8M0 scales per clock and returns the exact block result "
                "rounded once to binary32, or adds it into an fp32 accumulator.\n\n"
                "| design | LUT4 | carry | flip-flops | multipliers | generic gates | "
                "transistors (est.) | fits the HX8K | Fmax (MHz) | tools |\n"
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |\n", p);
    char a[32];
    for (int r = 0; r < t.nrows; r++) {
        fprintf(md, "| %s |", str(&t, r, "design"));
        static const char *const cols[] = {"lut4", "carry", "ff", "multipliers", "gates",
                                           "transistors"};
        for (int c = 0; c < 6; c++)
            fprintf(md, " %s |", report_fmt(num(&t, r, cols[c]), a));
        double f = num(&t, r, "fmax_mhz");
        fprintf(md, " %s | %s | %s |\n", str(&t, r, "fits_hx8k"),
                isfinite(f) ? report_fmt(f, a) : "–", str(&t, r, "tools"));
    }
    fprintf(md, "\n");
    csv_table_free(&t);
    free(p);
}

static void projection(FILE *md, const char *results)
{
    char *p = find_hw(results, REPORT_HW_PROJECTION_CSV);
    csv_table_t t;
    err_t e = ERR_INIT;
    if (!p || csv_load(p, &t, &e)) {
        fprintf(md, "No `hw/%s` in the results (the hw stage, or `mxrlhf hw project`, "
                    "writes it).\n\n", REPORT_HW_PROJECTION_CSV);
        free(p);
        return;
    }
    fprintf(md, "### Projected accelerator energy per PPO step\n\nFrom `%s`. A projection, not "
                "a measurement: the modelled MACs per format and bytes of one PPO step (the "
                "baseline run's mean step) times energy per MAC and per off-chip bit from "
                "published silicon (below); low and high take every figure at its most and "
                "least efficient end. × all-bf16 is the same work on 16-bit units with 16-bit "
                "operands; × measured divides by the baseline's measured energy per step "
                "(energy.csv), whatever device and sensor measured it.\n\n"
                "| plan | phase | GMAC | of which MX | bytes (MB) | J per step | × all-bf16 | "
                "× measured |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n", p);
    char a[32], b[32], c[64], d[64], g[64];
    static const char *const mx[] = {"macs_mxfp8_e4m3", "macs_mxfp8_e5m2", "macs_mxfp6_e3m2",
                                     "macs_mxfp6_e2m3", "macs_mxfp4_e2m1", "macs_mxint8",
                                     "macs_mxint4"};
    for (int r = 0; r < t.nrows; r++) {
        double macs = num(&t, r, "macs"), mxm = 0;
        for (size_t k = 0; k < sizeof mx / sizeof mx[0]; k++)
            mxm += isfinite(num(&t, r, mx[k])) ? num(&t, r, mx[k]) : 0;
        char share[32];
        snprintf(share, sizeof share, "%.0f%%", macs > 0 ? 100 * mxm / macs : 0);
        fprintf(md, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", str(&t, r, "plan"),
                str(&t, r, "phase"), report_fmt(macs / 1e9, a), share,
                report_fmt(num(&t, r, "bytes") / 1e6, b),
                range(num(&t, r, "joules_per_step_low"), num(&t, r, "joules_per_step_high"), c,
                      sizeof c),
                range(num(&t, r, "ratio_bf16_low"), num(&t, r, "ratio_bf16_high"), d, sizeof d),
                range(num(&t, r, "ratio_gpu_low"), num(&t, r, "ratio_gpu_high"), g, sizeof g));
    }
    const char *src = t.nrows ? str(&t, 0, "gpu_energy_source") : "";
    fprintf(md, "\nThe measured baseline: %s.\n\n", src[0] ? src : "no energy.csv (× measured "
            "is n/a)");
    csv_table_free(&t);
    free(p);
}

static void figures(FILE *md)
{
    fprintf(md, "### The figures the projection rests on\n\nEnergy per MAC = 2 / (the source's "
                "GOPS/W or GFLOPS/W): a multiply-accumulate counts as two operations. Each "
                "format's range spans the sources that cover it; a format no source covers "
                "(mxint4) is left out of the joules and counted in `macs_uncited`.\n\n"
                "| source | what | applied to | figure |\n| --- | --- | --- | --- |\n");
    for (int i = 0; i < report_hw_nsources; i++) {
        const report_hw_source_t *s = &report_hw_sources[i];
        char f[64];
        if (s->lo == s->hi)
            snprintf(f, sizeof f, "%g %s", s->lo, s->per_bit ? "pJ/bit" : "GOPS/W");
        else
            snprintf(f, sizeof f, "%g–%g %s", s->lo, s->hi, s->per_bit ? "pJ/bit" : "GOPS/W");
        fprintf(md, "| [%s](%s): %s | %s | %s | %s |\n", s->key, s->url, s->cite, s->what,
                s->formats, f);
    }
    fprintf(md, "\n");
}

int report_hw_section(FILE *md, const char *results, err_t *e)
{
    (void)e;
    fprintf(md, "## The MX datapath\n\nOn the GPU, MX products are computed in 16 or 32 bits: "
                "the operands are fake-quantized (`emulated`) or, where decoding reads MX "
                "weights packed, decoded in registers (`native-weights`), so MX can save bytes "
                "there but not arithmetic. This section is the "
                "other half: MX processing elements built in SystemC and Verilog, held bit for "
                "bit to the C reference (`make hw-test`), synthesized for an FPGA, and the "
                "energy an accelerator built from such units would spend on this run's PPO "
                "step under each policy (docs/hardware.md).\n\n");
    synthesis(md, results);
    projection(md, results);
    figures(md);
    return ERR_OK;
}
