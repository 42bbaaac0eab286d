/* mxrlhf hw: the MX processing elements' files (docs/hardware.md).
 *
 *   hw vectors  PE test vectors from a layer's real tensors and random codes
 *   hw gemm     a GEMM case for the PE array: a real layer under a policy's formats
 *   hw check    the C reference on a vector file or a GEMM case
 *   hw project  the accelerator's projected energy per policy (hw_projection.csv)
 *
 * Parsing and printing only; the work is in mx/mx_hwvec, profile/hw_operands and
 * report/hw_project. Options are each verb's own table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "mx/mx_hwvec.h"
#include "profile/hw_operands.h"
#include "report/hw_project.h"
#include "util/fs.h"

/* Where the embedded default's files are under a results directory. */
typedef struct hw_sources {
    const char *results, *model, *eval;
    char model_buf[1024], eval_buf[1024];
} hw_sources_t;

/* The options both real-tensor verbs take: where the model and evaluation set are, and
 * which layer. */
#define HW_SOURCE_OPTS(src, layer)                                                          \
    {"results", ARG_STRING, &(src).results, "DIR", "a run's results (default results): the "  \
     "model DIR/sft, the evaluation set DIR/data/split.json and, with --plan, "              \
     "DIR/policies/policies.json"},                                                          \
    {"model", ARG_STRING, &(src).model, "DIR", "a Hugging Face Qwen2 directory instead"},    \
    {"eval", ARG_STRING, &(src).eval, "PATH", "evaluation data: a split record or an "       \
     "HH-RLHF file"},                                                                        \
    {"layer", ARG_STRING, &(layer), "NAME", "lm_head or model.layers.L.self_attn.q_proj|"    \
     "k_proj|v_proj (the layers whose input is a norm's output)"}

static void resolve_sources(hw_sources_t *s)
{
    const char *r = s->results ? s->results : "results";
    if (!s->model) {
        snprintf(s->model_buf, sizeof s->model_buf, "%s/sft", r);
        s->model = s->model_buf;
    }
    if (!s->eval) {
        snprintf(s->eval_buf, sizeof s->eval_buf, "%s/data/split.json", r);
        s->eval = s->eval_buf;
    }
}

/* "all" or one of the six formats / one block size into a list. */
static int pick_formats(const char *text, mx_format_t *f, int *nf, err_t *e)
{
    if (!text || !strcmp(text, "all")) {
        memcpy(f, mx_hwvec_formats, sizeof mx_hwvec_formats);
        *nf = MX_HWVEC_NFORMATS;
        return ERR_OK;
    }
    if (mx_format_from_name(text, &f[0]) || !mx_hwvec_format_ok(f[0]))
        return err_set(e, ERR_INPUT, "--format \"%s\": expected all or one of mxfp8_e4m3, "
                       "mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1, mxint8", text);
    *nf = 1;
    return ERR_OK;
}

static int pick_ks(const char *text, int *k, int *nk, err_t *e)
{
    static const int all[3] = {8, 16, 32};
    if (!text || !strcmp(text, "all")) {
        memcpy(k, all, sizeof all);
        *nk = 3;
        return ERR_OK;
    }
    for (int i = 0; i < 3; i++)
        if (atoi(text) == all[i] && strlen(text) == (all[i] < 10 ? 1u : 2u)) {
            k[0] = all[i];
            *nk = 1;
            return ERR_OK;
        }
    return err_set(e, ERR_INPUT, "--k \"%s\": expected 8, 16, 32 or all", text);
}

static void operand_opts(const hw_sources_t *s, const char *layer, long long rows,
                         profile_hw_operands_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->model_dir = s->model;
    o->eval_path = s->eval;
    opts_default(&profile_eval_opts_table, &o->eval);
    o->eval.tokens = rows;
    o->layer = layer;
    o->rows = rows;
    o->phase = PREC_ROLLOUT;
}

/* ---- hw vectors ------------------------------------------------------------------------ */

static int hw_vectors(int argc, char **argv)
{
    hw_sources_t src = {0};
    const char *output = NULL, *layer = "lm_head", *source = "both", *format = NULL, *ks = NULL;
    long long count = 16, rows = 256;
    uint64_t seed = 1;
    arg_opt_t opts[] = {
        {"output", ARG_STRING, &output, "FILE", "the vector file to write"},
        HW_SOURCE_OPTS(src, layer),
        {"rows", ARG_INT, &rows, "N", "activation rows (tokens) taken from the evaluation set "
         "(default 256; the layer defaults to lm_head)"},
        {"source", ARG_STRING, &source, "S", "real, random or both (default: half each)"},
        {"count", ARG_INT, &count, "N", "vectors per format and k (default 16)"},
        {"seed", ARG_U64, &seed, "S", "which blocks and which random codes (default 1)"},
        {"format", ARG_STRING, &format, "F", "one format, or all six (default)"},
        {"k", ARG_STRING, &ks, "K", "8, 16, 32 or all (default)"},
    };
    arg_spec_t spec = {
        "hw vectors", "Test vectors for the MX processing elements (docs/hardware.md).",
        "--output FILE [--results DIR | --model DIR --eval PATH] [--layer NAME] [--source S] "
        "[--count N] [--seed S]",
        "Real vectors are blocks of a layer's weights and of the activations that reach it on "
        "the evaluation set, both quantized along K (even rounding, floor scale); random ones "
        "cover zero blocks, the largest values, scales that overflow to infinity or underflow "
        "to subnormals, cancellation, and uniform codes. Each line's expected value is "
        "mx_block_dot's (the C reference).",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc || args_require(output, "output", &e))
        return cli_report("hw vectors", &e);
    mx_format_t fmts[MX_HWVEC_NFORMATS];
    int nf = 0, k[3], nk = 0;
    if (pick_formats(format, fmts, &nf, &e) || pick_ks(ks, k, &nk, &e))
        return cli_report("hw vectors", &e);
    bool real = !strcmp(source, "real") || !strcmp(source, "both");
    bool rnd = !strcmp(source, "random") || !strcmp(source, "both");
    if (!real && !rnd) {
        err_set(&e, ERR_INPUT, "--source \"%s\": expected real, random or both", source);
        return cli_report("hw vectors", &e);
    }
    if (count < 1 || count > 100000 || rows < 1 || rows > 1000000) {
        err_set(&e, ERR_INPUT, "--count %lld, --rows %lld: expected 1..100000 and 1..1000000",
                count, rows);
        return cli_report("hw vectors", &e);
    }
    size_t nreal = real ? (size_t)(rnd ? count / 2 : count) : 0, nrnd = (size_t)count - nreal;
    size_t per = (size_t)count, total = (size_t)nf * (size_t)nk * per;
    mx_hwvec_t *v = calloc(total, sizeof *v);
    profile_hw_operands_t op = {0};
    char header[4096] = "";
    size_t hl = 0;
    hl += (size_t)snprintf(header + hl, sizeof header - hl, "mxrlhf hw vectors: %zu vectors (%zu "
                           "real and %zu random per format and k), seed %llu\n", total, nreal,
                           nrnd, (unsigned long long)seed);
    if (!v)
        rc = err_set(&e, ERR_NOMEM, "out of memory for %zu vectors", total);
    if (!rc && nreal) {
        resolve_sources(&src);
        profile_hw_operands_opts_t oo;
        operand_opts(&src, layer, rows, &oo);
        rc = profile_hw_operands_load(&oo, &op, &e);
        if (!rc)
            hl += (size_t)snprintf(header + hl, sizeof header - hl,
                                   "real: layer %s of %s: weights %zu x %zu, activations %zu "
                                   "rows (tokens) of %s; both quantized along K (even, floor)\n",
                                   layer, src.model, op.N, op.K, op.M, op.source);
    }
    for (int fi = 0; !rc && fi < nf; fi++)
        for (int ki = 0; !rc && ki < nk; ki++) {
            mx_hwvec_t *out = v + ((size_t)fi * (size_t)nk + (size_t)ki) * per;
            if (nreal)
                rc = mx_hwvec_from_matrices(op.x, op.M, op.w, op.N, op.K, fmts[fi], k[ki], seed,
                                            200 + (uint64_t)fi * 3 + (uint64_t)ki, nreal, out, &e);
            if (!rc && nrnd) {
                /* the same vectors mx_hwvec_random_set gives this format and k */
                int gfi = 0, gki = k[ki] == 8 ? 0 : k[ki] == 16 ? 1 : 2;
                while (mx_hwvec_formats[gfi] != fmts[fi])
                    gfi++;
                for (size_t i = 0; !rc && i < nrnd; i++)
                    rc = mx_hwvec_random(fmts[fi], k[ki], seed,
                                         MX_HWVEC_RANDOM_STREAM + (uint64_t)gfi * 3 + (uint64_t)gki,
                                         i, &out[nreal + i], &e);
            }
        }
    if (!rc && nrnd)
        hl += (size_t)snprintf(header + hl, sizeof header - hl, "random: mx_hwvec_random, seed "
                               "%llu (zero blocks, largest values, overflow, underflow, "
                               "cancellation, uniform)\n", (unsigned long long)seed);
    if (!rc) {
        snprintf(header + hl, sizeof header - hl, "format: <format> <k> <scale_a> <a_1..a_k> "
                 "<scale_b> <b_1..b_k> <expected binary32> (docs/hardware.md)");
        rc = mx_hwvec_write(output, header, v, total, &e);
    }
    if (!rc)
        printf("wrote %zu vectors (%zu real, %zu random) to %s\n", total,
               nreal * (size_t)nf * (size_t)nk, nrnd * (size_t)nf * (size_t)nk, output);
    profile_hw_operands_free(&op);
    free(v);
    return rc ? cli_report("hw vectors", &e) : 0;
}

/* ---- hw gemm ---------------------------------------------------------------------------- */

static int hw_gemm(int argc, char **argv)
{
    hw_sources_t src = {0};
    const char *output = NULL, *layer = NULL, *policies = NULL, *plan = NULL, *phase = "rollout";
    const char *format = NULL, *ks = "32";
    long long rows = 16;
    arg_opt_t opts[] = {
        {"output", ARG_STRING, &output, "FILE", "the GEMM case to write"},
        HW_SOURCE_OPTS(src, layer),
        {"rows", ARG_INT, &rows, "M", "activation rows (tokens) of the GEMM (default 16)"},
        {"policies", ARG_STRING, &policies, "FILE", "a policies.json (default "
         "RESULTS/policies/policies.json when --plan is given)"},
        {"plan", ARG_STRING, &plan, "NAME", "the plan whose formats the layer runs in (A, B, ...)"},
        {"phase", ARG_STRING, &phase, "P", "the plan's phase: rollout (default), reward or gradient"},
        {"format", ARG_STRING, &format, "F", "without a plan: both operands' format"},
        {"k", ARG_STRING, &ks, "K", "without a plan: the block, 8, 16 or 32 (default 32)"},
    };
    arg_spec_t spec = {
        "hw gemm", "A GEMM case for the PE array: a real layer's y = x·Wᵀ in MX formats.",
        "--output FILE --layer NAME (--plan NAME [--policies FILE] [--phase P] | --format F "
        "[--k K]) [--results DIR | --model DIR --eval PATH] [--rows M]",
        "x is the activations that reach the layer on the evaluation set (under the plan, when "
        "one is given), W its weight; each is quantized along K with the plan's input and "
        "weight specs (or --format, even, floor), and y is the C reference (mx_block_gemm).",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc || args_require(output, "output", &e) || args_require(layer, "layer", &e))
        return cli_report("hw gemm", &e);
    if (!plan == !format) {
        err_set(&e, ERR_INPUT, "give either --plan (the policy's formats) or --format");
        return cli_report("hw gemm", &e);
    }
    if (rows < 1 || rows > 65536) {
        err_set(&e, ERR_INPUT, "--rows %lld: expected 1..65536", rows);
        return cli_report("hw gemm", &e);
    }
    resolve_sources(&src);
    char pol[1024];
    if (plan && !policies) {
        snprintf(pol, sizeof pol, "%s/policies/policies.json", src.results ? src.results : "results");
        policies = pol;
    }
    profile_hw_operands_opts_t oo;
    operand_opts(&src, layer, rows, &oo);
    oo.policies = plan ? policies : NULL;
    oo.plan = plan;
    if (prec_phase_from_name(phase, &oo.phase)) {
        err_set(&e, ERR_INPUT, "--phase \"%s\": expected rollout, reward or gradient", phase);
        return cli_report("hw gemm", &e);
    }
    mx_spec_t sx, sw;
    if (format) {
        mx_format_t f[MX_HWVEC_NFORMATS];
        int nf = 0, k[3], nk = 0;
        if (pick_formats(format, f, &nf, &e) || pick_ks(ks, k, &nk, &e))
            return cli_report("hw gemm", &e);
        if (nf != 1 || nk != 1) {
            err_set(&e, ERR_INPUT, "--format and --k: one format and one block");
            return cli_report("hw gemm", &e);
        }
        sx = (mx_spec_t){f[0], k[0], MX_ROUND_EVEN, MX_SCALE_FLOOR};
        sw = sx;
    }
    profile_hw_operands_t op;
    mx_hwgemm_t g = {0};
    rc = profile_hw_operands_load(&oo, &op, &e);
    if (!rc && plan) {
        sx = op.spec_x;
        sw = op.spec_w;
        if (!mx_hwvec_format_ok(sx.format) || !mx_hwvec_format_ok(sw.format) || sx.block != sw.block)
            rc = err_set(&e, ERR_INPUT, "plan %s keeps %s at input %s, weight %s in the %s phase: "
                         "the PE array computes the six MX formats with one block size (choose "
                         "another layer, plan or phase)", plan, layer,
                         mx_format_name(sx.format), mx_format_name(sw.format), phase);
    }
    if (!rc)
        rc = mx_hwgemm_from_matrices(op.x, op.M, op.w, op.N, op.K, &sx, &sw, &g, &e);
    char header[2048], a[64], b[64];
    if (!rc) {
        snprintf(header, sizeof header,
                 "mxrlhf hw gemm: layer %s of %s, y = x·Wᵀ: x = %zu activation rows of %s, "
                 "W %zu x %zu\nx as %s, W as %s%s%s%s%s\ny: mx_block_gemm (the C reference); "
                 "format: docs/hardware.md", layer, src.model, op.M, op.source, op.N, op.K,
                 mx_spec_format(&sx, a, sizeof a), mx_spec_format(&sw, b, sizeof b),
                 plan ? " (plan " : "", plan ? plan : "", plan ? ", phase " : "",
                 plan ? phase : "");
        if (plan)
            strncat(header, ")", sizeof header - strlen(header) - 1);
        rc = mx_hwgemm_write(output, header, &g, &e);
    }
    if (!rc)
        printf("wrote a %zu x %zu x %zu GEMM case (x %s, W %s) to %s\n", g.M, g.N, g.K,
               mx_format_name(g.fa), mx_format_name(g.fb), output);
    mx_hwgemm_free(&g);
    profile_hw_operands_free(&op);
    return rc ? cli_report("hw gemm", &e) : 0;
}

/* ---- hw check --------------------------------------------------------------------------- */

static int hw_check(int argc, char **argv)
{
    arg_spec_t spec = {"hw check", "The C reference on a vector file or a GEMM case.", "FILE",
                       "Prints \"N of N vectors match\" (or outputs, for a GEMM case) and lists "
                       "the first mismatches; exit 1 on any.", NULL, 0, true};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("hw check", &e);
    if (npos != 1) {
        err_set(&e, ERR_INPUT, "expected one file");
        return cli_report("hw check", &e);
    }
    char *text;
    size_t len;
    if ((rc = fs_read_all(pos[0], (size_t)1 << 30, &text, &len, &e)))
        return cli_report("hw check", &e);
    /* a GEMM case has a "gemm" line; anything else is read as vectors */
    bool gemm = !strncmp(text, "gemm ", 5) || strstr(text, "\ngemm ");
    if (gemm) {
        mx_hwgemm_t g;
        size_t ok;
        long bad;
        rc = mx_hwgemm_parse(text, len, pos[0], &g, &e);
        if (!rc && !(rc = mx_hwgemm_check(&g, &ok, &bad, &e))) {
            if (bad >= 0)
                printf("output (%ld, %ld): the reference differs from the file's %08x\n",
                       bad / (long)g.N, bad % (long)g.N, g.y[bad]);
            printf("%zu of %zu outputs match\n", ok, g.M * g.N);
            rc = ok == g.M * g.N ? 0 : ERR_FAIL;
            mx_hwgemm_free(&g);
        }
    } else {
        mx_hwvec_t *v;
        size_t n, ok = 0;
        if (!(rc = mx_hwvec_parse(text, len, pos[0], &v, &n, &e))) {
            for (size_t i = 0; !rc && i < n; i++) {
                mx_hwvec_t w = v[i];
                rc = mx_hwvec_compute(&w, &e);
                if (!rc && w.expected == v[i].expected)
                    ok++;
                else if (!rc && i - ok < 5)
                    printf("vector %zu: expected %08x in the file, the reference gives %08x\n",
                           i + 1, v[i].expected, w.expected);
            }
            if (!rc) {
                printf("%zu of %zu vectors match\n", ok, n);
                rc = ok == n ? 0 : ERR_FAIL;
            }
            free(v);
        }
    }
    free(text);
    return rc == ERR_FAIL && !e.code ? 1 : rc ? cli_report("hw check", &e) : 0;
}

/* ---- hw project ------------------------------------------------------------------------- */

static int hw_project_cmd(int argc, char **argv)
{
    const char *results = "results", *policies = NULL, *energy = NULL, *output = NULL;
    static char paths[8000];
    arg_opt_t opts[] = {
        {"results", ARG_STRING, &results, "DIR", "a run's results (default results): "
         "DIR/policies/policies.json, the model DIR/sft, the baseline's DIR/baseline"},
        {"policies", ARG_STRING, &policies, "FILE", "the plans (default DIR/policies/policies.json)"},
        {"energy", ARG_STRING, &energy, "CSV", "the measured baseline (default "
         "DIR/baseline/energy.csv; the GPU ratio is empty without it)"},
        {"output", ARG_STRING, &output, "CSV", "default DIR/hw/hw_projection.csv"},
    };
    arg_spec_t spec = {
        "hw project", "Projected energy of an MX accelerator per policy and PPO phase.",
        "[--results DIR] [--policies FILE] [--energy CSV] [--output CSV]",
        "MACs per format and bytes per PPO step come from the modelled counts (profile/modelled) "
        "at each plan's formats and the baseline run's token counts; energy per MAC and per "
        "byte from published silicon, each cited in docs/hardware.md. Columns: docs/hardware.md.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (rc)
        return cli_report("hw project", &e);
    report_hw_project_opts_t o;
    report_hw_project_paths(results, &o, paths, sizeof paths);
    if (policies)
        o.policies = policies;
    if (energy)
        o.energy = energy;
    if (output)
        o.output = output;
    report_hw_project_result_t r;
    if ((rc = report_hw_project(&o, &r, &e)))
        return cli_report("hw project", &e);
    printf("%s: %d plans x %d phases; %s\n", r.output, r.plans, r.phases, r.summary);
    return 0;
}

int cmd_hw(int argc, char **argv)
{
    const char *usage = "usage: mxrlhf hw <verb> [options]   (mxrlhf hw <verb> --help)\n\n"
                        "  vectors   PE test vectors from a layer's real tensors and random codes\n"
                        "  gemm      a GEMM case for the PE array (a real layer, a policy's formats)\n"
                        "  check     the C reference on a vector file or a GEMM case\n"
                        "  project   projected accelerator energy per policy (hw_projection.csv)\n";
    if (argc < 1) {
        fputs(usage, stderr);
        return ERR_INPUT;
    }
    const char *verb = argv[0];
    if (!strcmp(verb, "--help") || !strcmp(verb, "-h") || !strcmp(verb, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(verb, "vectors"))
        return hw_vectors(argc - 1, argv + 1);
    if (!strcmp(verb, "gemm"))
        return hw_gemm(argc - 1, argv + 1);
    if (!strcmp(verb, "check"))
        return hw_check(argc - 1, argv + 1);
    if (!strcmp(verb, "project"))
        return hw_project_cmd(argc - 1, argv + 1);
    fprintf(stderr, "mxrlhf hw: unknown verb \"%s\" (vectors, gemm, check, project)\n", verb);
    return ERR_INPUT;
}
