/* Tests for the sensitivity profiler (src/profile/sensitivity.h, ppl.h, qtime.h, evalset.h)
 * and the engine hook it uses (qwen2_forward_range): partial forwards equal whole ones
 * bit for bit, one quantized layer leaves earlier activations alone, the timing backend
 * changes no result, the sweep's cached cells equal direct measurements, workers and
 * resuming change nothing, and the CSVs have the study's columns. Models: the engine's
 * fixtures (tests/fixtures/model) and small Philox models written here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "profile/ppl.h"
#include "profile/qtime.h"
#include "profile/sensitivity.h"
#include "support/testutil.h"
#include "util/fs.h"
#include "util/json.h"

#define FIX "tests/fixtures/model/"
#define TOKFILE "tests/fixtures/tokenizer/small_synthetic.json"

static backend_t *cpu_be(void)
{
    backend_t *be;
    err_t e = ERR_INIT;
    if (be_cpu_open(&be, &e))
        fail_msg("%s", e.msg);
    return be;
}

static qwen2_model_t *open_fixture(backend_t *be, const char *name, int B, int T)
{
    qwen2_opts_t o = {.max_batch = B, .max_seq = T, .heads = QWEN2_HEAD_LM};
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    char dir[256];
    snprintf(dir, sizeof dir, FIX "%s", name);
    if (qwen2_open_dir(dir, be, &o, &m, &e))
        fail_msg("opening %s: %s", dir, e.msg);
    return m;
}

/* A fixed (B, T) batch of ids in [0, V), right-padded with row lengths T, T-3, ... */
typedef struct tbatch {
    int32_t ids[4 * 24], len[4];
    qwen2_batch_t b;
} tbatch_t;

static void make_batch(tbatch_t *t, int B, int T, int V, uint32_t salt)
{
    uint32_t x = 2463534242u ^ salt;
    for (int i = 0; i < B * T; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        t->ids[i] = (int32_t)(x % (uint32_t)V);
    }
    for (int r = 0; r < B; r++)
        t->len[r] = T - 3 * r;
    t->b = (qwen2_batch_t){.B = B, .T = T, .ids = t->ids, .len = t->len};
}

static void set_fwd(qwen2_model_t *m, const char *layer, const char *spec_text)
{
    mx_spec_t s;
    err_t e = ERR_INIT;
    if (mx_spec_parse(spec_text, &s, &e) ||
        prec_table_set(qwen2_precision(m), layer, PREC_ROLLOUT, PREC_OP_WEIGHT, &s, &e) ||
        prec_table_set(qwen2_precision(m), layer, PREC_ROLLOUT, PREC_OP_INPUT, &s, &e))
        fail_msg("%s", e.msg);
}

static const prec_ctx_t ROLL = {PREC_ROLLOUT, 0, 0};

/* ---- the engine hook ---------------------------------------------------------------- */

static void forward_range_pieces_equal_one_forward_bitwise(void **state)
{
    (void)state;
    backend_t *be = cpu_be();
    qwen2_model_t *m = open_fixture(be, "tiny_untied_mqa_f16_sharded", 3, 16);
    const qwen2_config_t *c = qwen2_config(m);
    tbatch_t t;
    make_batch(&t, 3, 16, c->vocab, 1);
    set_fwd(m, "model.layers.1.mlp.up_proj", "mxfp4_e2m1/8");   /* quantized too */
    const int N = 3 * 16, V = c->vocab, H = c->hidden;
    float *want = malloc(sizeof(float) * N * V), *got = malloc(sizeof(float) * N * V);
    float *x = malloc(sizeof(float) * N * H);
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_forward(m, &ROLL, &t.b, QWEN2_FWD_LOGITS, &e), 0);
    assert_int_equal(qwen2_logits_get(m, 0, N, want, &e), 0);
    /* every split point: [0, k) then [k, layers) */
    for (int k = 0; k <= c->layers; k++) {
        assert_int_equal(qwen2_forward_range(m, &ROLL, &t.b, 0, k, NULL, x, 0, &e), 0);
        assert_int_equal(qwen2_forward_range(m, &ROLL, &t.b, k, c->layers, x, NULL,
                                             QWEN2_FWD_LOGITS, &e), 0);
        assert_int_equal(qwen2_logits_get(m, 0, N, got, &e), 0);
        for (int i = 0; i < N; i++) {
            int r = i / 16, p = i % 16;
            if (p >= t.len[r])
                continue;   /* padding: meaningless */
            for (int v = 0; v < V; v++)
                if (test_f32_bits(want[(size_t)i * V + v]) != test_f32_bits(got[(size_t)i * V + v]))
                    fail_msg("split at layer %d, row %d pos %d, logit %d: expected %a, got %a", k,
                             r, p, v, want[(size_t)i * V + v], got[(size_t)i * V + v]);
        }
    }
    /* misuse is refused */
    assert_int_equal(qwen2_forward_range(m, &ROLL, &t.b, 1, c->layers, NULL, NULL,
                                         QWEN2_FWD_LOGITS, &e), ERR_INPUT);
    assert_int_equal(qwen2_forward_range(m, &ROLL, &t.b, 0, 1, NULL, x, QWEN2_FWD_LOGITS, &e),
                     ERR_INPUT);
    free(want);
    free(got);
    free(x);
    qwen2_free(m);
    be_close(be);
}

/* residual streams entering each block, and the final norm's input, under the current
 * table: (layers + 1) x (N*H) */
static float *residuals(qwen2_model_t *m, const qwen2_batch_t *b)
{
    const qwen2_config_t *c = qwen2_config(m);
    size_t n = (size_t)b->B * b->T * c->hidden;
    float *all = malloc(sizeof(float) * n * (c->layers + 1));
    err_t e = ERR_INIT;
    for (int L = 0; L <= c->layers; L++) {
        int first = L ? L - 1 : 0;
        if (qwen2_forward_range(m, &ROLL, b, first, L, first ? all + n * (L - 1) : NULL,
                                all + n * L, 0, &e))
            fail_msg("%s", e.msg);
    }
    return all;
}

static void quantizing_one_layer_leaves_earlier_activations_bitwise_unchanged(void **state)
{
    (void)state;
    backend_t *be = cpu_be();
    qwen2_model_t *m = open_fixture(be, "tiny_untied_mqa_f16_sharded", 2, 20);
    const qwen2_config_t *c = qwen2_config(m);
    assert_int_equal(c->layers, 3);
    tbatch_t t;
    make_batch(&t, 2, 20, c->vocab, 2);
    const size_t n = (size_t)2 * 20 * c->hidden;
    float *base = residuals(m, &t.b);
    const char *layers[] = {"model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"};
    for (int k = 0; k < 2; k++) {
        set_fwd(m, layers[k], "mxfp4_e2m1/8");
        float *q = residuals(m, &t.b);
        /* blocks 0 and 1 take the same residual stream bit for bit */
        for (int L = 0; L <= 1; L++)
            for (size_t i = 0; i < n; i++)
                if (test_f32_bits(base[n * L + i]) != test_f32_bits(q[n * L + i]))
                    fail_msg("%s: residual entering block %d changed at %zu: %a -> %a",
                             layers[k], L, i, base[n * L + i], q[n * L + i]);
        /* after block 1 it differs */
        for (int L = 2; L <= c->layers; L++) {
            size_t diff = 0;
            for (size_t i = 0; i < n; i++)
                diff += test_f32_bits(base[n * L + i]) != test_f32_bits(q[n * L + i]);
            if (diff == 0)
                fail_msg("%s: residual entering block %d did not change", layers[k], L);
        }
        free(q);
        set_fwd(m, layers[k], "fp32");
    }
    free(base);
    qwen2_free(m);
    be_close(be);
}

/* ---- the timing backend ----------------------------------------------------------------- */

static void timing_backend_changes_no_bit_and_counts_quantization(void **state)
{
    (void)state;
    backend_t *b1 = cpu_be(), *b2 = cpu_be(), *qt;
    err_t e = ERR_INIT;
    assert_int_equal(profile_qtime_open(b2, &qt, &e), 0);
    qwen2_model_t *m1 = open_fixture(b1, "tiny_tied_gqa_f32", 2, 24);
    qwen2_model_t *m2 = open_fixture(qt, "tiny_tied_gqa_f32", 2, 24);
    const qwen2_config_t *c = qwen2_config(m1);
    tbatch_t t;
    make_batch(&t, 2, 24, c->vocab, 3);
    const char *specs[] = {"mxfp4_e2m1/8", "mxint8/16", "mxfp6_e3m2/32/nearest/rceil"};
    const size_t N = 2 * 24, V = c->vocab;
    float *a = malloc(sizeof(float) * N * V), *b = malloc(sizeof(float) * N * V);
    for (int k = 0; k < 3; k++) {
        qwen2_model_t *ms[2] = {m1, m2};
        for (int j = 0; j < 2; j++) {
            set_fwd(ms[j], "lm_head", specs[k]);
            set_fwd(ms[j], "model.layers.0.self_attn.v_proj", specs[k]);
            set_fwd(ms[j], "model.layers.1.mlp.gate_proj", specs[k]);
        }
        /* twice: the second forward serves the weights from the cache */
        for (int rep = 0; rep < 2; rep++) {
            assert_int_equal(qwen2_forward(m1, &ROLL, &t.b, QWEN2_FWD_LOGITS, &e), 0);
            assert_int_equal(qwen2_logits_get(m1, 0, (int)N, a, &e), 0);
            assert_int_equal(qwen2_forward(m2, &ROLL, &t.b, QWEN2_FWD_LOGITS, &e), 0);
            assert_int_equal(qwen2_logits_get(m2, 0, (int)N, b, &e), 0);
            for (size_t i = 0; i < N * V; i++)
                if (test_f32_bits(a[i]) != test_f32_bits(b[i]))
                    fail_msg("%s: logit %zu differs through the timing backend: %a vs %a",
                             specs[k], i, a[i], b[i]);
        }
    }
    /* 3 specs x (3 weights once + 3 inputs x 2 forwards) */
    assert_int_equal(profile_qtime_count(qt), 3 * (3 + 6));
    assert_true(profile_qtime_seconds(qt) > 0);
    free(a);
    free(b);
    qwen2_free(m1);
    qwen2_free(m2);
    be_close(qt);
    be_close(b2);
    be_close(b1);
}

/* ---- the evaluation set -------------------------------------------------------------------- */

static void evalset_scores_exactly_the_budget_and_cuts_the_last_sequence(void **state)
{
    (void)state;
    int32_t s0[10], s1[7], s2[12];
    for (int i = 0; i < 12; i++) {
        if (i < 10)
            s0[i] = 100 + i;
        if (i < 7)
            s1[i] = 200 + i;
        s2[i] = 300 + i;
    }
    /* response scoring: s0 from position 4 (5 predictions), s1 from 6 (none), s2 from 2 */
    profile_seq_t seqs[] = {{s0, 10, 4}, {s1, 7, 6}, {s2, 12, 2}};
    profile_evalset_t es;
    err_t e = ERR_INIT;
    assert_int_equal(profile_evalset_build(seqs, 3, 8, 1000, &es, &e), 0);
    assert_int_equal(es.tokens, 8);
    assert_int_equal(es.nseq, 2);   /* s1 has nothing scored */
    assert_int_equal(es.nbatch, 1);
    /* s2 cut to 2 + 3 + 1 = 6 ids; sorted longest first: s0 (10) then s2 (6) */
    const profile_eval_batch_t *b = &es.batches[0];
    assert_int_equal(b->b.B, 2);
    assert_int_equal(b->b.T, 10);
    assert_int_equal(b->len[0], 10);
    assert_int_equal(b->len[1], 6);
    int32_t want0[10] = {-1, -1, -1, -1, 105, 106, 107, 108, 109, -1};
    int32_t want1[10] = {-1, -1, 303, 304, 305, -1, -1, -1, -1, -1};
    assert_memory_equal(b->targets, want0, sizeof want0);
    assert_memory_equal(b->targets + 10, want1, sizeof want1);
    uint64_t fp = es.fingerprint;
    profile_evalset_free(&es);
    /* the same inputs give the same set; a token budget in batches of 10 tokens splits it */
    assert_int_equal(profile_evalset_build(seqs, 3, 8, 1000, &es, &e), 0);
    assert_true(es.fingerprint == fp);
    profile_evalset_free(&es);
    assert_int_equal(profile_evalset_build(seqs, 3, 0, 10, &es, &e), 0);
    assert_int_equal(es.tokens, 5 + 9);
    assert_int_equal(es.nbatch, 2);
    assert_int_equal(es.max_batch_tokens, 12);
    profile_evalset_free(&es);
    profile_seq_t none[] = {{s1, 7, 6}};
    assert_int_equal(profile_evalset_build(none, 1, 0, 10, &es, &e), ERR_INPUT);
}

/* A split record's held-out split is what the set is made of; a record whose source is
 * given relative to the record's own directory is found there. */
static void split_record_source_gives_its_eval_split(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *hh = fs_join(dir, "pairs.jsonl"), *rec = fs_join(dir, "split.json");
    FILE *f = fopen(hh, "w");
    for (int i = 0; i < 40; i++)
        fprintf(f, "{\"chosen\": \"\\n\\nHuman: question %d\\n\\nAssistant: answer %d\", "
                   "\"rejected\": \"\\n\\nHuman: question %d\\n\\nAssistant: no\"}\n", i, i, i);
    fclose(f);
    data_hh_t h;
    err_t e = ERR_INIT;
    assert_int_equal(data_hh_read(hh, NULL, &h, &e), 0);
    data_select_opts_t so;
    data_select_opts_default(&so);
    so.pairs = 40;
    data_split_record_t r;
    assert_int_equal(data_split_make(&h, &so, &r, &e), 0);
    /* the record names its source relative to the record's directory */
    free(r.source_path);
    r.source_path = strdup("pairs.jsonl");
    assert_int_equal(data_split_write(rec, &r, &e), 0);
    profile_eval_source_t src;
    if (profile_eval_source_load(rec, "eval_prompts", &src, &e))
        fail_msg("%s", e.msg);
    assert_true(src.is_split);
    assert_true(src.n > 0);
    assert_int_equal(src.n, r.split[DATA_SPLIT_EVAL].n);
    for (size_t i = 0; i < src.n; i++)
        assert_int_equal(src.pairs[i]->line, r.split[DATA_SPLIT_EVAL].v[i]);
    assert_non_null(strstr(src.desc, "eval_prompts"));
    profile_eval_source_free(&src);
    /* a plain HH file: every pair in file order */
    assert_int_equal(profile_eval_source_load(hh, NULL, &src, &e), 0);
    assert_false(src.is_split);
    assert_int_equal(src.n, 40);
    assert_int_equal(src.pairs[39]->line, 40);
    profile_eval_source_free(&src);
    assert_int_equal(profile_eval_source_load(rec, "no_such_split", &src, &e), ERR_INPUT);
    data_split_free(&r);
    data_hh_free(&h);
    test_rmtree(dir);
    free(hh);
    free(rec);
    free(dir);
}

/* ids 0..n-1 of a few pseudo-random sequences, "all" scoring */
static void toy_set(profile_evalset_t *es, int V, int nseq, int len, long tokens, long bt)
{
    int32_t *ids = malloc(sizeof(int32_t) * nseq * len);
    profile_seq_t *s = malloc(sizeof *s * nseq);
    uint32_t x = 88172645u;
    for (int i = 0; i < nseq * len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        ids[i] = (int32_t)(x % (uint32_t)V);
    }
    for (int i = 0; i < nseq; i++)
        s[i] = (profile_seq_t){ids + (size_t)i * len, len - (i % 3) * 2, 0};
    err_t e = ERR_INIT;
    if (profile_evalset_build(s, nseq, tokens, bt, es, &e))
        fail_msg("%s", e.msg);
    free(ids);
    free(s);
}

/* ---- the sweep ----------------------------------------------------------------------------- */

static profile_worker_t *fixture_workers(const char *name, const profile_evalset_t *es, int n)
{
    profile_worker_t *w;
    err_t e = ERR_INIT;
    char dir[256];
    snprintf(dir, sizeof dir, FIX "%s", name);
    if (profile_workers_open(dir, es, n, "cpu", &w, &e))
        fail_msg("%s", e.msg);
    return w;
}

static void small_opts(sensitivity_opts_t *o)
{
    sensitivity_opts_default(o);
    o->nformats = 3;
    o->formats[0] = MX_FP8_E4M3;
    o->formats[1] = MX_FP4_E2M1;
    o->formats[2] = MX_INT8;
    o->nblocks = 2;
    o->blocks[0] = 8;
    o->blocks[1] = 32;
}

static void sweep_cells_equal_direct_whole_forwards(void **state)
{
    (void)state;
    profile_evalset_t es;
    toy_set(&es, 160, 5, 14, 50, 30);
    profile_worker_t *w = fixture_workers("tiny_tied_gqa_f32", &es, 1);
    sensitivity_opts_t o;
    small_opts(&o);
    char *dir = test_mkdtemp(), *cells = fs_join(dir, "cells.jsonl");
    profile_matrix_t mx;
    err_t e = ERR_INIT;
    assert_int_equal(profile_sensitivity_sweep(w, 1, &es, &o, cells, false, NULL, NULL, &mx, &e),
                     0);
    assert_int_equal(mx.nlayers, 2 * 7 + 1);
    assert_string_equal(mx.layers[0], "model.layers.0.self_attn.q_proj");
    assert_string_equal(mx.layers[14], "lm_head");
    assert_int_equal(mx.cells_run, 1 + 15 * 6 + 6);
    assert_true(mx.quant_s > 0 && mx.forward_s > 0 && mx.quant_ops > 0);
    /* a whole forward per batch with the same table gives the same sums, bit for bit */
    profile_ppl_t p;
    assert_int_equal(profile_ppl_init(&p, w->m, &es, &e), 0);
    double nll;
    assert_int_equal(profile_ppl_full(&p, &ROLL, &nll, &e), 0);
    assert_true(nll == mx.base_nll);
    const int picks[][3] = {{0, 1, 0}, {6, 2, 1}, {10, 0, 0}, {14, 1, 1}};
    for (size_t k = 0; k < 4; k++) {
        mx_spec_t sp = sensitivity_spec(&o, picks[k][1], picks[k][2]);
        char st[64];
        set_fwd(w->m, mx.layers[picks[k][0]], mx_spec_format(&sp, st, sizeof st));
        assert_int_equal(profile_ppl_full(&p, &ROLL, &nll, &e), 0);
        set_fwd(w->m, mx.layers[picks[k][0]], "fp32");
        double got = mx.nll[((size_t)picks[k][0] * o.nformats + picks[k][1]) * o.nblocks +
                            picks[k][2]];
        if (nll != got)
            fail_msg("%s %s: cached sweep %.17g, direct %.17g", mx.layers[picks[k][0]], st, got,
                     nll);
        assert_true(nll != mx.base_nll);
    }
    /* the sweep left the table unquantized */
    assert_int_equal(profile_ppl_full(&p, &ROLL, &nll, &e), 0);
    assert_true(nll == mx.base_nll);
    profile_ppl_free(&p);
    profile_matrix_free(&mx);
    profile_workers_close(w, 1);
    profile_evalset_free(&es);
    test_rmtree(dir);
    free(cells);
    free(dir);
}

static char *slurp(const char *path)
{
    char *t;
    size_t n;
    err_t e = ERR_INIT;
    if (fs_read_all(path, 1 << 26, &t, &n, &e))
        fail_msg("%s", e.msg);
    return t;
}

static void matrix_csvs(const char *dir, const char *tag, const profile_matrix_t *mx,
                        char **matrix, char **summary)
{
    char name[64];
    err_t e = ERR_INIT;
    snprintf(name, sizeof name, "%s_matrix.csv", tag);
    char *a = fs_join(dir, name);
    snprintf(name, sizeof name, "%s_summary.csv", tag);
    char *b = fs_join(dir, name);
    if (profile_matrix_write_csv(mx, 2.0, false, a, &e) ||
        profile_summary_write_csv(mx, 2.0, false, b, &e))
        fail_msg("%s", e.msg);
    *matrix = slurp(a);
    *summary = slurp(b);
    free(a);
    free(b);
}

static void workers_and_resume_give_the_same_files(void **state)
{
    (void)state;
    profile_evalset_t es;
    toy_set(&es, 160, 4, 12, 36, 24);
    profile_worker_t *w = fixture_workers("tiny_untied_mha_bf16", &es, 3);
    sensitivity_opts_t o;
    small_opts(&o);
    char *dir = test_mkdtemp(), *cells = fs_join(dir, "cells.jsonl");
    err_t e = ERR_INIT;
    profile_matrix_t one, three, resumed;
    char *m1, *s1, *m3, *s3, *mr, *sr;
    assert_int_equal(profile_sensitivity_sweep(w, 1, &es, &o, cells, false, NULL, NULL, &one, &e),
                     0);
    matrix_csvs(dir, "one", &one, &m1, &s1);
    char *full = slurp(cells);
    assert_int_equal(profile_sensitivity_sweep(w, 3, &es, &o, cells, false, NULL, NULL, &three,
                                               &e), 0);
    matrix_csvs(dir, "three", &three, &m3, &s3);
    assert_string_equal(m1, m3);
    assert_string_equal(s1, s3);

    /* an interrupted run: the header and 40 cells, then a line torn mid-write */
    char *p = full;
    for (int k = 0; k < 41; k++)
        p = strchr(p, '\n') + 1;
    size_t keep = (size_t)(p - full);
    char *torn = malloc(keep + 20);
    memcpy(torn, full, keep);
    memcpy(torn + keep, "{\"cell\":\"layer\",\"la", 19);
    test_write_file(cells, torn, keep + 19);
    assert_int_equal(profile_sensitivity_sweep(w, 2, &es, &o, cells, true, NULL, NULL, &resumed,
                                               &e), 0);
    assert_int_equal(resumed.cells_resumed, 40);
    assert_int_equal(resumed.cells_run, one.cells_run - 40);
    matrix_csvs(dir, "resumed", &resumed, &mr, &sr);
    assert_string_equal(m1, mr);
    assert_string_equal(s1, sr);
    /* the record is whole again: a second resume has nothing left to do */
    profile_matrix_free(&resumed);
    assert_int_equal(profile_sensitivity_sweep(w, 1, &es, &o, cells, true, NULL, NULL, &resumed,
                                               &e), 0);
    assert_int_equal(resumed.cells_run, 0);
    assert_int_equal(resumed.cells_resumed, one.cells_run);

    /* a record made for another evaluation set is refused */
    profile_evalset_t other;
    toy_set(&other, 160, 4, 12, 30, 24);
    profile_matrix_t x;
    assert_int_equal(profile_sensitivity_sweep(w, 1, &other, &o, cells, true, NULL, NULL, &x, &e),
                     ERR_INPUT);
    assert_non_null(strstr(e.msg, "evaluation set"));
    profile_evalset_free(&other);

    free(torn);
    free(full);
    free(m1), free(s1), free(m3), free(s3), free(mr), free(sr);
    profile_matrix_free(&one);
    profile_matrix_free(&three);
    profile_matrix_free(&resumed);
    profile_workers_close(w, 3);
    profile_evalset_free(&es);
    test_rmtree(dir);
    free(cells);
    free(dir);
}

/* ---- the peer check ------------------------------------------------------------------------- */

/* tests/fixtures/profile/sens_peer.json (scripts/peer/sens_peer.py, PyTorch 2.11 +
 * transformers 5.17 in float64 on an H100): the perplexity of fixed ids with one layer
 * fake-quantized in every format and block size, for model.layers.1.mlp.down_proj and the
 * tied lm_head. Ours is float32, so a value near a rounding boundary may land on the other
 * side; the tolerance (stated before the run, README there) is 1e-4 relative on every
 * perplexity, 1e-6 on the unquantized baseline. */
static void matrix_rows_match_pytorch_fake_quant(void **state)
{
    (void)state;
    cJSON *fx;
    err_t e = ERR_INIT;
    if (json_load_file("tests/fixtures/profile/sens_peer.json", 1 << 20, &fx, &e))
        fail_msg("%s", e.msg);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(fx, "ids");
    int nseq = cJSON_GetArraySize(rows);
    profile_seq_t seqs[8];
    int32_t ids[8][64];
    assert_true(nseq <= 8);
    int k = 0;
    for (const cJSON *r = rows->child; r; r = r->next, k++) {
        int n = 0;
        for (const cJSON *v = r->child; v; v = v->next)
            ids[k][n++] = (int32_t)v->valuedouble;
        seqs[k] = (profile_seq_t){ids[k], n, 0};
    }
    profile_evalset_t es;
    assert_int_equal(profile_evalset_build(seqs, nseq, 0, 4096, &es, &e), 0);
    assert_int_equal(es.tokens, (long)cJSON_GetObjectItemCaseSensitive(fx, "tokens")->valuedouble);
    profile_worker_t *w = fixture_workers("tiny_tied_gqa_f32", &es, 2);
    sensitivity_opts_t o;
    sensitivity_opts_default(&o);
    char *dir = test_mkdtemp(), *cells = fs_join(dir, "cells.jsonl");
    profile_matrix_t mx;
    assert_int_equal(profile_sensitivity_sweep(w, 2, &es, &o, cells, false, NULL, NULL, &mx, &e),
                     0);
    double base = profile_ppl_value(mx.base_nll, mx.tokens);
    double want = cJSON_GetObjectItemCaseSensitive(fx, "baseline_ppl")->valuedouble;
    if (fabs(base - want) > 1e-6 * want)
        fail_msg("baseline: PyTorch %.12g, ours %.12g", want, base);
    const cJSON *peer = cJSON_GetObjectItemCaseSensitive(fx, "rows");
    double worst = 0;
    int checked = 0;
    for (const cJSON *row = peer->child; row; row = row->next) {
        int l = -1;
        for (int i = 0; i < mx.nlayers; i++)
            if (!strcmp(mx.layers[i], row->string))
                l = i;
        if (l < 0)
            fail_msg("fixture layer %s is not in the matrix", row->string);
        for (int f = 0; f < o.nformats; f++)
            for (int b = 0; b < o.nblocks; b++) {
                char key[64];
                snprintf(key, sizeof key, "%s/%d", mx_format_name(o.formats[f]), o.blocks[b]);
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, key);
                if (!cJSON_IsNumber(v))
                    fail_msg("fixture row %s has no %s", row->string, key);
                double ours = profile_matrix_ppl(&mx, l, f, b), rel = fabs(ours / v->valuedouble - 1);
                if (rel > worst)
                    worst = rel;
                if (rel > 1e-4)
                    fail_msg("%s %s: PyTorch %.12g, ours %.12g (relative %.2e > 1e-4)",
                             row->string, key, v->valuedouble, ours, rel);
                checked++;
            }
    }
    assert_int_equal(checked, 2 * 18);
    print_message("peer check: %d cells, largest relative difference %.2e\n", checked, worst);
    profile_matrix_free(&mx);
    profile_workers_close(w, 2);
    profile_evalset_free(&es);
    cJSON_Delete(fx);
    test_rmtree(dir);
    free(cells);
    free(dir);
}

/* ---- the CSVs ------------------------------------------------------------------------------ */

static void matrix_header_is_the_study_columns_then_every_pair(void **state)
{
    (void)state;
    sensitivity_opts_t o;
    sensitivity_opts_default(&o);
    profile_matrix_t mx = {.nlayers = 1, .nformats = o.nformats, .nblocks = o.nblocks,
                           .round = o.round, .scale = o.scale, .tokens = 10};
    memcpy(mx.formats, o.formats, sizeof o.formats);
    memcpy(mx.blocks, o.blocks, sizeof o.blocks);
    char *names[] = {"model.layers.0.self_attn.q_proj"};
    mx.layers = names;
    double nll[18];
    for (int i = 0; i < 18; i++)
        nll[i] = 0.01 * i;       /* ppl = exp(0.001 i): mxfp8_e4m3 block 8 (i = 0) is 1 */
    nll[4 * 3 + 0] = NAN;        /* mxfp4_e2m1 block 8 failed */
    mx.nll = nll;
    mx.base_nll = 0;             /* baseline ppl 1 */
    for (int f = 0; f < o.nformats; f++)
        for (int b = 0; b < o.nblocks; b++)
            mx.whole_nll[f][b] = 0.5;
    char *dir = test_mkdtemp(), *path = fs_join(dir, "m.csv"), *spath = fs_join(dir, "s.csv");
    err_t e = ERR_INIT;
    assert_int_equal(profile_matrix_write_csv(&mx, 2.0, false, path, &e), 0);
    char *t = slurp(path);
    char want[4096] = "layer,mxfp4_g8_ppl,mxfp4_g8_delta_pct,mxfp8_g8_ppl,mxfp8_g8_delta_pct,"
                      "mxfp4_tolerant,mxfp8_tolerant";
    const char *fm[] = {"mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1",
                        "mxint8"};
    const int bl[] = {8, 16, 32};
    for (int f = 0; f < 6; f++)
        for (int b = 0; b < 3; b++) {
            char c[128];
            snprintf(c, sizeof c, ",%s_g%d_ppl,%s_g%d_delta_pct,%s_g%d_tolerant", fm[f], bl[b],
                     fm[f], bl[b], fm[f], bl[b]);
            strcat(want, c);
        }
    strcat(want, "\n");
    size_t hl = strlen(want);
    if (strncmp(t, want, hl))
        fail_msg("header:\nexpected %s\ngot      %.*s", want, (int)hl, t);
    /* one row: the layer, mxfp4 (NaN: empty cells, not tolerant), mxfp8 block 8 */
    char *row = t + hl;
    const char *wrow = "model.layers.0.self_attn.q_proj,,,1,0,false,true,1,0,true,";
    if (strncmp(row, wrow, strlen(wrow)))
        fail_msg("row:\nexpected %s...\ngot      %s", wrow, row);
    int lines = 0;
    for (char *q = t; *q; q++)
        lines += *q == '\n';
    assert_int_equal(lines, 2);
    assert_int_equal(profile_summary_write_csv(&mx, 2.0, false, spath, &e), 0);
    char *s = slurp(spath);
    const char *ws = "row,format,block,ppl,delta_pct,tolerant,tokens,nll\n"
                     "baseline,fp32,,1,0,true,10,0\n";
    if (strncmp(s, ws, strlen(ws)))
        fail_msg("summary:\nexpected %s...\ngot      %s", ws, s);
    assert_non_null(strstr(s, "\nwhole_model,mxint8,32,"));
    lines = 0;
    for (char *q = s; *q; q++)
        lines += *q == '\n';
    assert_int_equal(lines, 1 + 1 + 18);
    free(s);
    free(t);
    test_rmtree(dir);
    free(path);
    free(spath);
    free(dir);
}

static void tolerance_counts_falls_unless_two_sided_and_refuses_non_finite(void **state)
{
    (void)state;
    assert_true(profile_tolerant(-5.0, 2.0, false));
    assert_true(profile_tolerant(1.999, 2.0, false));
    assert_false(profile_tolerant(2.0, 2.0, false));
    assert_false(profile_tolerant(NAN, 2.0, false));
    assert_false(profile_tolerant(INFINITY, 2.0, false));
    assert_false(profile_tolerant(-INFINITY, 2.0, false));
    /* two-sided: a fall as large as the threshold is not tolerant either */
    assert_false(profile_tolerant(-5.0, 2.0, true));
    assert_true(profile_tolerant(-1.999, 2.0, true));
    assert_true(profile_tolerant(1.999, 2.0, true));
    assert_false(profile_tolerant(2.0, 2.0, true));
}

/* ---- options --------------------------------------------------------------------------------- */

static void options_round_trip_and_name_bad_keys(void **state)
{
    (void)state;
    sensitivity_opts_t o, back;
    sensitivity_opts_default(&o);
    o.eval.tokens = 123;
    o.eval.score = PROFILE_SCORE_RESPONSE;
    o.threshold_pct = 1.5;
    o.nblocks = 2;
    o.blocks[1] = 16;
    cJSON *j = opts_to_json(&sensitivity_opts_table, &o);
    sensitivity_opts_default(&back);
    err_t e = ERR_INIT;
    assert_int_equal(opts_from_json(&sensitivity_opts_table, j, "cfg.sensitivity", &back, &e), 0);
    assert_int_equal(back.eval.tokens, 123);
    assert_int_equal(back.eval.score, PROFILE_SCORE_RESPONSE);
    assert_int_equal(back.nblocks, 2);
    assert_int_equal(back.blocks[1], 16);
    assert_true(back.threshold_pct == 1.5);
    cJSON_AddNumberToObject(j, "treshold_pct", 3);
    assert_int_equal(opts_from_json(&sensitivity_opts_table, j, "cfg.sensitivity", &back, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "cfg.sensitivity"));
    assert_non_null(strstr(e.msg, "treshold_pct"));
    cJSON_Delete(j);
    /* the study's columns need mxfp4 and mxfp8 at block 8 */
    cJSON *k = cJSON_Parse("{\"blocks\": [16, 32]}");
    err_clear(&e);
    sensitivity_opts_default(&back);
    assert_int_equal(opts_from_json(&sensitivity_opts_table, k, "c", &back, &e), ERR_INPUT);
    cJSON_Delete(k);
    k = cJSON_Parse("{\"score\": 3}");
    err_clear(&e);
    assert_int_equal(opts_from_json(&sensitivity_opts_table, k, "c", &back, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "score"));
    cJSON_Delete(k);
    /* the section's device key is "device"; the older "backend" still reads into it, and
       the two together are one key given twice */
    sensitivity_opts_default(&back);
    k = cJSON_Parse("{\"backend\": \"cuda:1\"}");
    err_clear(&e);
    assert_int_equal(opts_from_json(&sensitivity_opts_table, k, "c", &back, &e), 0);
    assert_string_equal(back.backend, "cuda:1");
    cJSON_Delete(k);
    j = opts_to_json(&sensitivity_opts_table, &back);
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "backend"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "device")->valuestring, "cuda:1");
    cJSON_Delete(j);
    k = cJSON_Parse("{\"device\": \"cpu\", \"backend\": \"cuda\"}");
    err_clear(&e);
    assert_int_equal(opts_from_json(&sensitivity_opts_table, k, "c", &back, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "\"device\" given twice (also as \"backend\")"));
    cJSON_Delete(k);
}

/* ---- the command ----------------------------------------------------------------------------- */

/* A Philox model with the small synthetic tokenizer's vocabulary, written with it. */
static char *tiny_dir(const char *root)
{
    char *dir = fs_join(root, "model");
    err_t e = ERR_INIT;
    tok_t *tok;
    if (tok_load(TOKFILE, &tok, &e))
        fail_msg("%s", e.msg);
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                        .head_dim = 8, .vocab = tok_vocab_size(tok), .max_pos = 1024,
                        .rope_theta = 10000, .rms_eps = 1e-6, .tie = true, .dtype = ST_F32,
                        .bos_id = -1, .pad_id = -1};
    tok_free(tok);
    backend_t *be = cpu_be();
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 4, .heads = QWEN2_HEAD_LM};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, 5, 0.1f, &e) ||
        fs_mkdir_p(dir, &e) || qwen2_save_dir(m, dir, ST_F32, &e))
        fail_msg("%s", e.msg);
    qwen2_free(m);
    be_close(be);
    char *tj = slurp(TOKFILE), *dst = fs_join(dir, "tokenizer.json");
    test_write_file(dst, tj, strlen(tj));
    free(tj);
    free(dst);
    return dir;
}

/* A few HH-shaped dialogues. */
static char *hh_file(const char *root)
{
    static const char *const turns[][2] = {
        {"How do I boil an egg?", "Put it in boiling water for eight minutes, then cool it."},
        {"Name a color.", "Blue, like the sky on a clear summer day."},
        {"What is a good name for a cat?", "Whiskers is a classic name for a cat."},
        {"Tell me about gardening.", "Plants need soil, water, sunlight and some patience."},
    };
    char *path = fs_join(root, "hh.jsonl");
    FILE *f = fopen(path, "w");
    for (size_t i = 0; i < 4; i++)
        fprintf(f, "{\"chosen\": \"\\n\\nHuman: %s\\n\\nAssistant: %s\", "
                   "\"rejected\": \"\\n\\nHuman: %s\\n\\nAssistant: No.\"}\n",
                turns[i][0], turns[i][1], turns[i][0]);
    fclose(f);
    return path;
}

/* --gpus 3 --device cpu: three rank processes share the cells; the merged matrix and summary
 * are the one-process files byte for byte (each cell is a pure function of model, set and
 * spec), and each rank keeps its own resume record. */
static void cells_spread_over_3_ranks_give_the_one_process_matrix(void **state)
{
    (void)state;
    char *root = test_mkdtemp(), *model = tiny_dir(root), *hh = hh_file(root), *out;
    const char *common = "--tokens 40 --formats mxfp8_e4m3,mxfp4_e2m1 --blocks 8,16 --quiet";
    int rc = test_cli(&out, "sensitivity --model %s --eval %s --output %s/one/m.csv %s", model,
                      hh, root, common);
    if (rc != 0)
        fail_msg("one process: exit %d: %s", rc, out);
    free(out);
    rc = test_cli(&out, "sensitivity --model %s --eval %s --output %s/three/m.csv %s --gpus 3",
                  model, hh, root, common);
    if (rc != 0)
        fail_msg("3 ranks: exit %d: %s", rc, out);
    free(out);
    const char *same[] = {"m.csv", "sensitivity_summary.csv"};
    for (int i = 0; i < 2; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, "%s/one/%s", root, same[i]);
        snprintf(b, sizeof b, "%s/three/%s", root, same[i]);
        char *ta = slurp(a), *tb = slurp(b);
        if (strcmp(ta, tb))
            fail_msg("%s differs between 1 and 3 ranks:\n%s\n---\n%s", same[i], ta, tb);
        free(ta);
        free(tb);
    }
    const char *rec[] = {"sensitivity_cells.jsonl", "sensitivity_cells.rank1.jsonl",
                         "sensitivity_cells.rank2.jsonl"};
    for (int i = 0; i < 3; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/three/%s", root, rec[i]);
        if (!fs_exists(p))
            fail_msg("%s was not written", p);
    }
    char p[512];
    snprintf(p, sizeof p, "%s/three/sensitivity_metrics.json", root);
    char *t = slurp(p);
    assert_non_null(strstr(t, "\"ranks\":\t3"));
    free(t);
    test_rmtree(root);
    free(root);
    free(model);
    free(hh);
}

static void commands_write_their_files_and_refuse_bad_input(void **state)
{
    (void)state;
    char *root = test_mkdtemp(), *model = tiny_dir(root), *hh = hh_file(root), *out;
    int rc = test_cli(&out, "sensitivity --model %s --eval %s "
                            "--output %s/res/sensitivity_matrix.csv --tokens 40 --formats "
                            "mxfp8_e4m3,mxfp4_e2m1 --blocks 8 --quiet",
                      model, hh, root);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    const char *files[] = {"sensitivity_matrix.csv", "sensitivity_summary.csv",
                           "sensitivity_cells.jsonl", "sensitivity_metrics.json"};
    for (int i = 0; i < 4; i++) {
        char p[512];
        snprintf(p, sizeof p, "%s/res/%s", root, files[i]);
        if (!fs_exists(p))
            fail_msg("%s was not written", p);
    }
    char p[512];
    snprintf(p, sizeof p, "%s/res/sensitivity_matrix.csv", root);
    char *t = slurp(p);
    int lines = 0;
    for (char *q = t; *q; q++)
        lines += *q == '\n';
    assert_int_equal(lines, 1 + 15);
    free(t);
    /* the policies from it, and a plan of them in force */
    rc = test_cli(&out, "policies --sensitivity %s/res/sensitivity_matrix.csv --model %s "
                        "--eval %s --tokens 40 --block 8 --output %s/res/policies.json --quiet",
                  root, model, hh, root);
    if (rc != 0)
        fail_msg("policies: exit %d: %s", rc, out);
    free(out);
    const char *plans[] = {"baseline", "A", "B", "C", "D"};
    for (int i = 0; i < 5; i++) {
        rc = test_cli(&out, "logprobs --model %s --ids 1,2,3,4 --policy %s/res/policies.json "
                            "--plan %s --phase gradient", model, root, plans[i]);
        if (rc != 0)
            fail_msg("plan %s: exit %d: %s", plans[i], rc, out);
        free(out);
    }
    rc = test_cli(&out, "policies --sensitivity %s/res/sensitivity_matrix.csv --model %s "
                        "--eval %s --output %s/res/p32.json", root, model, hh, root);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "mxfp4_e2m1_g32_delta_pct"));
    free(out);
    rc = test_cli(&out, "sensitivity --model %s --eval %s/nope.jsonl --output %s/x.csv", model,
                  root, root);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "nope.jsonl"));
    free(out);
    rc = test_cli(&out, "sensitivity --model %s --eval %s --blocks 16", model, hh);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "block 8"));
    free(out);
    test_rmtree(root);
    free(hh);
    free(model);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_range_pieces_equal_one_forward_bitwise),
        cmocka_unit_test(quantizing_one_layer_leaves_earlier_activations_bitwise_unchanged),
        cmocka_unit_test(timing_backend_changes_no_bit_and_counts_quantization),
        cmocka_unit_test(evalset_scores_exactly_the_budget_and_cuts_the_last_sequence),
        cmocka_unit_test(split_record_source_gives_its_eval_split),
        cmocka_unit_test(sweep_cells_equal_direct_whole_forwards),
        cmocka_unit_test(workers_and_resume_give_the_same_files),
        cmocka_unit_test(matrix_rows_match_pytorch_fake_quant),
        cmocka_unit_test(matrix_header_is_the_study_columns_then_every_pair),
        cmocka_unit_test(tolerance_counts_falls_unless_two_sided_and_refuses_non_finite),
        cmocka_unit_test(options_round_trip_and_name_bad_keys),
        cmocka_unit_test(commands_write_their_files_and_refuse_bad_input),
        cmocka_unit_test(cells_spread_over_3_ranks_give_the_one_process_matrix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
