/* Tests for src/rlhf/sft (pretraining and SFT) and the shared training pieces in
 * src/rlhf/train_common, on the tiny fixture of test_sft_tiny.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/sft.h"
#include "rlhf/text.h"
#include "test_sft_tiny.h"
#include "util/fs.h"

static tiny_t T;

#define assert_near(got, want, tol)                                                        \
    do {                                                                                   \
        double g_ = (got), w_ = (want);                                                    \
        if (!(fabs(g_ - w_) <= (tol)))                                                     \
            fail_msg("%s: expected %.12g, got %.12g", #got, w_, g_);                       \
    } while (0)

static int group_setup(void **state)
{
    (void)state;
    tiny_setup(&T, 300, 96, 400, 8 * 64 * 20); /* 20 pretraining steps */
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    tiny_teardown(&T);
    return 0;
}

static void sft_opts(rlhf_sft_opts_t *o, long steps)
{
    rlhf_sft_opts_default(o);
    o->steps = steps;
    o->batch_size = 8;
    o->optim.lr = 3e-3;
    o->optim.warmup_steps = 3;
    o->log_every = 0;
}

static void sft_targets_mark_exactly_the_response_tokens(void **state)
{
    (void)state;
    tok_t *tok;
    err_t e = ERR_INIT;
    assert_int_equal(tok_load(T.tok, &tok, &e), 0);
    rlhf_text_t t;
    assert_int_equal(rlhf_text_init(&t, tok, RLHF_TEMPLATE_RAW, 256, 256, &e), 0);
    rlhf_seq_t s[3];
    const rlhf_seq_t *rows[3];
    for (int i = 0; i < 3; i++) {
        const data_pair_t *p = &T.hh.pairs[i];
        assert_int_equal(rlhf_encode_pair(&t, p->prompt, i == 2 ? p->rejected : p->chosen, &s[i], &e), 0);
        rows[i] = &s[i];
    }
    rlhf_batch_t b;
    assert_int_equal(rlhf_batch_make(rows, 3, t.eot_id, &b, &e), 0);
    int32_t *tg = malloc((size_t)b.B * b.T * sizeof *tg);
    long n = rlhf_sft_targets(&b, tg), want = 0;
    for (int r = 0; r < 3; r++) {
        want += s[r].n - s[r].prompt_len; /* response ids and the end-of-turn id */
        for (int i = 0; i < b.T; i++) {
            int32_t got = tg[(size_t)r * b.T + i];
            bool predicts_response = i >= s[r].prompt_len - 1 && i + 1 < s[r].n;
            if (predicts_response && got != s[r].ids[i + 1])
                fail_msg("row %d position %d: expected target %d (the next response id), got %d",
                         r, i, s[r].ids[i + 1], got);
            if (!predicts_response && got != -1)
                fail_msg("row %d position %d (prompt %d, length %d): expected no target, got %d",
                         r, i, s[r].prompt_len, s[r].n, got);
        }
    }
    assert_int_equal(n, want);
    free(tg);
    rlhf_batch_free(&b);
    for (int i = 0; i < 3; i++)
        rlhf_seq_free(&s[i]);
    rlhf_text_free(&t);
    tok_free(tok);
}

static void pretraining_loss_falls_and_writes_a_loadable_directory(void **state)
{
    (void)state;
    char out[600];
    snprintf(out, sizeof out, "%s/pt", T.dir);
    rlhf_model_opts_t mo;
    tiny_model_opts(&mo);
    rlhf_pretrain_opts_t po;
    rlhf_pretrain_opts_default(&po);
    po.tokens = 8 * 64 * 15;
    po.seq_len = 64;
    po.batch_size = 8;
    po.optim.lr = 1e-2;
    po.optim.warmup_steps = 3;
    po.log_every = 0;
    rlhf_train_summary_t s;
    err_t e = ERR_INIT;
    if (rlhf_pretrain_run(T.be, &mo, &po, T.tok, T.corpus, out, NULL, &s, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(s.steps, 15);
    if (!(s.loss_last < s.loss_first - 1.0))
        fail_msg("expected the loss to fall by more than 1 nat, got %.3f -> %.3f", s.loss_first,
                 s.loss_last);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "train_log.csv", "pretrain_metrics.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = fs_join(out, files[i]);
        if (!fs_exists(p))
            fail_msg("expected %s in the pretraining directory", files[i]);
        free(p);
    }
    qwen2_model_t *m;
    qwen2_opts_t qo = {.max_batch = 1, .max_seq = 8};
    assert_int_equal(qwen2_open_dir(out, T.be, &qo, &m, &e), 0);
    assert_int_equal(qwen2_config(m)->hidden, 32);
    qwen2_free(m);
}

static void sft_loss_falls_on_a_tiny_model(void **state)
{
    (void)state;
    char out[600];
    snprintf(out, sizeof out, "%s/sft", T.dir);
    const data_pair_t **tr = tiny_pairs(&T, 0, 64), **ev = tiny_pairs(&T, 64, 32);
    rlhf_sft_opts_t o;
    sft_opts(&o, 25);
    err_t e = ERR_INIT;
    double before;
    assert_int_equal(rlhf_sft_eval_loss(T.be, &o, T.base, ev, 32, &before, &e), 0);
    rlhf_train_summary_t s;
    if (rlhf_sft_run(T.be, &o, T.base, tr, 64, ev, 32, out, NULL, &s, &e))
        fail_msg("%s", e.msg);
    if (!(s.loss_last < s.loss_first))
        fail_msg("expected the training loss to fall, got %.4f -> %.4f", s.loss_first, s.loss_last);
    if (!(s.eval_loss < before - 0.2))
        fail_msg("expected the held-out response loss to fall by 0.2, got %.4f -> %.4f", before,
                 s.eval_loss);
    free(tr);
    free(ev);
}

static void sft_directory_reloads_with_identical_logprobs(void **state)
{
    (void)state;
    char out[600];
    snprintf(out, sizeof out, "%s/sft2", T.dir);
    const data_pair_t **tr = tiny_pairs(&T, 0, 64), **ev = tiny_pairs(&T, 64, 32);
    rlhf_sft_opts_t o;
    sft_opts(&o, 6);
    err_t e = ERR_INIT;
    rlhf_train_summary_t s;
    assert_int_equal(rlhf_sft_run(T.be, &o, T.base, tr, 64, ev, 32, out, NULL, &s, &e), 0);
    double reloaded;
    assert_int_equal(rlhf_sft_eval_loss(T.be, &o, out, ev, 32, &reloaded, &e), 0);
    if (test_f32_bits((float)reloaded) != test_f32_bits((float)s.eval_loss) ||
        reloaded != s.eval_loss)
        fail_msg("expected the reloaded directory to give the in-memory loss %.17g, got %.17g",
                 s.eval_loss, reloaded);
    char *cfg = fs_join(out, "config.json"), *tok = fs_join(out, "tokenizer.json");
    char *text = tiny_read(cfg, NULL);
    assert_non_null(strstr(text, "Qwen2ForCausalLM"));
    assert_true(fs_exists(tok));
    free(text);
    free(cfg);
    free(tok);
    free(tr);
    free(ev);
}

static void sft_is_deterministic_for_a_seed(void **state)
{
    (void)state;
    const data_pair_t **tr = tiny_pairs(&T, 0, 64);
    rlhf_sft_opts_t o;
    sft_opts(&o, 4);
    err_t e = ERR_INIT;
    rlhf_train_summary_t s;
    char a[600], b[600], c[600];
    snprintf(a, sizeof a, "%s/det_a", T.dir);
    snprintf(b, sizeof b, "%s/det_b", T.dir);
    snprintf(c, sizeof c, "%s/det_c", T.dir);
    assert_int_equal(rlhf_sft_run(T.be, &o, T.base, tr, 64, NULL, 0, a, NULL, &s, &e), 0);
    assert_int_equal(rlhf_sft_run(T.be, &o, T.base, tr, 64, NULL, 0, b, NULL, &s, &e), 0);
    o.seed = 99;
    assert_int_equal(rlhf_sft_run(T.be, &o, T.base, tr, 64, NULL, 0, c, NULL, &s, &e), 0);
    size_t na, nb, nc;
    char pa[700], pb[700], pc[700];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    snprintf(pc, sizeof pc, "%s/model.safetensors", c);
    char *da = tiny_read(pa, &na), *db = tiny_read(pb, &nb), *dc = tiny_read(pc, &nc);
    assert_int_equal(na, nb);
    if (memcmp(da, db, na))
        fail_msg("expected two runs with one seed to write identical weights");
    if (na == nc && !memcmp(da, dc, na))
        fail_msg("expected another seed (another example order) to give other weights");
    free(da);
    free(db);
    free(dc);
    free(tr);
}

static void lr_schedule_warms_up_then_decays_to_the_floor(void **state)
{
    (void)state;
    rlhf_optim_t o;
    opts_default(&rlhf_optim_table, &o);
    o.lr = 1.0;
    o.warmup_steps = 10;
    o.min_lr_ratio = 0.1;
    assert_near(rlhf_lr_at(&o, 1, 110), 0.1, 1e-12);
    assert_near(rlhf_lr_at(&o, 10, 110), 1.0, 1e-12);
    assert_near(rlhf_lr_at(&o, 60, 110), 0.55, 1e-12); /* cosine half way */
    assert_near(rlhf_lr_at(&o, 110, 110), 0.1, 1e-12);
    o.schedule = RLHF_SCHED_LINEAR;
    assert_near(rlhf_lr_at(&o, 35, 110), 1.0 - 0.9 * 0.25, 1e-12);
    o.schedule = RLHF_SCHED_CONSTANT;
    assert_near(rlhf_lr_at(&o, 100, 110), 1.0, 1e-12);
}

static void epoch_order_is_a_seeded_permutation(void **state)
{
    (void)state;
    enum { N = 50 };
    size_t a[N], b[N], c[N];
    int seen[N] = {0};
    rlhf_epoch_order(7, "t", 0, a, N);
    rlhf_epoch_order(7, "t", 0, b, N);
    rlhf_epoch_order(7, "t", 1, c, N);
    for (int i = 0; i < N; i++)
        seen[a[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    /* grouped by length: inside each window of 8 batches, lengths do not increase */
    int len[N];
    for (int i = 0; i < N; i++)
        len[i] = (i * 37) % 23;
    size_t g[N];
    rlhf_length_grouped_order(7, "t", 0, len, N, 2, g);
    int seen2[N] = {0};
    for (int i = 0; i < N; i++)
        seen2[g[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen2[i], 1);
    /* each batch of 2 has its longer row first; within a window of 16 the batches hold
     * lengths sorted, in a shuffled batch order */
    for (int w = 0; w < N; w += 16) {
        int m = N - w < 16 ? N - w : 16, sorted[16];
        for (int i = 0; i < m; i++)
            sorted[i] = len[g[w + i]];
        for (int i = 0; i + 1 < m; i += 2)
            assert_true(sorted[i] >= sorted[i + 1]);
        for (int i = 1; i < m; i++) /* insertion sort, descending */
            for (int j = i; j > 0 && sorted[j] > sorted[j - 1]; j--) {
                int x = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = x;
            }
        int got[16] = {0}, want[16] = {0};
        for (int i = 0; i + 1 < m; i += 2) { /* batches pair neighbours in sorted order */
            got[i / 2] = len[g[w + i]] * 100 + len[g[w + i + 1]];
            want[i / 2] = sorted[i] * 100 + sorted[i + 1];
        }
        for (int i = 0; i < m / 2; i++) {
            int found = 0;
            for (int j = 0; j < m / 2; j++)
                found += got[j] == want[i];
            assert_true(found >= 1);
        }
    }
}

static void sft_options_reject_unknown_keys_and_bad_values(void **state)
{
    (void)state;
    rlhf_sft_opts_t o;
    rlhf_sft_opts_default(&o);
    err_t e = ERR_INIT;
    cJSON *j = cJSON_Parse("{\"steps\": 5, \"lrr\": 1}");
    assert_int_equal(opts_from_json(&rlhf_sft_opts_table, j, "cfg.json: sft", &o, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "cfg.json: sft: unknown key \"lrr\""));
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"template\": \"chatml\", \"schedule\": \"sawtooth\"}");
    assert_int_equal(opts_from_json(&rlhf_sft_opts_table, j, "sft", &o, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "\"schedule\": expected one of"));
    cJSON_Delete(j);
    err_clear(&e);
    j = cJSON_Parse("{\"batch_size\": 0}");
    assert_int_equal(opts_from_json(&rlhf_sft_opts_table, j, "sft", &o, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "batch_size"));
    cJSON_Delete(j);
    err_clear(&e);
    rlhf_model_opts_t mo;
    rlhf_model_opts_default(&mo);
    j = cJSON_Parse("{\"hidden\": 100, \"heads\": 3}");
    assert_int_equal(opts_from_json(&rlhf_model_opts_table, j, "model", &mo, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "hidden (100) must be heads (3)"));
    cJSON_Delete(j);
}

int main(int argc, char **argv)
{
    (void)argc;
    tiny_omp_passive(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sft_targets_mark_exactly_the_response_tokens),
        cmocka_unit_test(pretraining_loss_falls_and_writes_a_loadable_directory),
        cmocka_unit_test(sft_loss_falls_on_a_tiny_model),
        cmocka_unit_test(sft_directory_reloads_with_identical_logprobs),
        cmocka_unit_test(sft_is_deterministic_for_a_seed),
        cmocka_unit_test(lr_schedule_warms_up_then_decays_to_the_floor),
        cmocka_unit_test(epoch_order_is_a_seeded_permutation),
        cmocka_unit_test(sft_options_reject_unknown_keys_and_bad_values),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
