/* mxrlhf verify: what this machine offers and whether the given inputs load (the checks
 * are in src/pipeline/verify.c). Exit 0 only when everything asked for works. */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "pipeline/verify.h"

int cmd_verify(int argc, char **argv)
{
    pipeline_verify_opts_t o = {0};
    arg_opt_t opts[] = {
        {"model", ARG_STRING, &o.model, "DIR", "check that this model directory loads"},
        {"data", ARG_STRING, &o.data, "FILE", "check that this HH-RLHF file reads"},
        {"require-gpu", ARG_FLAG, &o.require_gpu, NULL,
         "fail (exit 3) unless a GPU and the CUDA runtime are present"},
        {"cudart", ARG_STRING, &o.cudart, "LIB", "CUDA runtime library to load (default "
         "libcudart.so, then versioned names)"},
        {"nvml-lib", ARG_STRING, &o.nvml_lib, "LIB", "NVML library (default libnvidia-ml.so.1)"},
    };
    arg_spec_t spec = {"verify", "Check the machine (CPU, GPU, driver, CUDA, power sources) and "
                       "inputs.", "[--model DIR] [--data FILE] [--require-gpu]",
                       "Exit codes: 0 everything asked for works; 2 the model or data does not "
                       "load;\n3 --require-gpu and no GPU or CUDA runtime. The CPU and power-"
                       "source lines\nare information.", opts, (int)(sizeof opts / sizeof opts[0]),
                       false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("verify", &e);
    pipeline_verify_report_t r;
    rc = pipeline_verify(&o, &r);
    for (int i = 0; i < r.n; i++) {
        const pipeline_check_t *c = &r.check[i];
        printf("%-13s %-4s %s\n", c->name, c->status ? (c->asked ? "FAIL" : "no") : "ok",
               c->detail);
    }
    if (rc)
        fprintf(stderr, "mxrlhf verify: %s\n", rc == ERR_UNAVAILABLE
                ? "a required resource is unavailable" : "an input does not load");
    return rc;
}
