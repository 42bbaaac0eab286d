/* mxrlhf report: the study report from a results directory (report/study.h). */
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "report/study.h"
#include "util/fs.h"

int cmd_report(int argc, char **argv)
{
    const char *results = "results", *output = NULL;
    arg_opt_t opts[] = {
        {"results", ARG_STRING, &results, "DIR", "results directory (default results)"},
        {"output", ARG_STRING, &output, "DIR", "where report.md and the figures go (default "
         "DIR/report, plus DIR/report.md)"},
    };
    arg_spec_t spec = {
        "report", "The study report: report.md with tables and SVG figures.",
        "--results DIR [--output OUT]",
        "Reads what the stages wrote (either `mxrlhf run`'s layout, baseline/ sensitivity/ "
        "policies/ compare/ ..., or the study's: gpu_baseline/, sensitivity_matrix.csv, "
        "policies.json, policy_comparison.csv) and writes report.md and its figures; a section "
        "whose files are absent says so. By default the figures and report.md go to "
        "DIR/report/ and the same report to DIR/report.md.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("report", &e);
    char *dflt = output ? NULL : fs_join(results, "report");
    char *top = output ? NULL : fs_join(results, "report.md");
    const char *out = output ? output : dflt;
    report_study_result_t r;
    report_study_opts_t o = {results, out, NULL, ""};
    if (!out || (!output && !top))
        err_set(&e, ERR_NOMEM, "out of memory");
    else if (!report_study_write(&o, &r, &e)) {
        report_study_opts_t o2 = {results, out, top, "report/"};
        if (!top || !report_study_write(&o2, NULL, &e))
            printf("mxrlhf report: %s/report.md%s%s: %d figures, %d of 6 data sections%s%s\n",
                   out, top ? " and " : "", top ? top : "", r.figures, r.sections_present,
                   r.missing[0] ? "; absent: " : "", r.missing);
    }
    free(dflt);
    free(top);
    return cli_report("report", &e);
}
