/* Tests for the engine's commands, driven as a user would: mxrlhf logprobs and
 * mxrlhf generate, their output, and bad input (exit 2, one line naming file and field,
 * nothing written). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "support/testutil.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"

#define FIX "tests/fixtures/model"

static char *ids_of_row(const char *fixture, const char *batch, int row, cJSON **ref_out)
{
    char path[512];
    snprintf(path, sizeof path, FIX "/%s/ref.json", fixture);
    cJSON *ref;
    err_t e = ERR_INIT;
    if (json_load_file(path, 1 << 20, &ref, &e))
        fail_msg("%s", e.msg);
    const cJSON *b = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "batches"), batch);
    const cJSON *ids = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "ids"), row);
    char *s = calloc(4096, 1);
    for (const cJSON *v = ids->child; v; v = v->next)
        snprintf(s + strlen(s), 4096 - strlen(s), "%s%d", v == ids->child ? "" : ",", v->valueint);
    *ref_out = ref;
    return s;
}

static void test_logprobs_prints_what_transformers_computes(void **state)
{
    cJSON *ref;
    char *ids = ids_of_row("tiny_untied_mha_bf16", "right", 0, &ref);
    char *out;
    int rc = test_cli(&out, "logprobs --model " FIX "/tiny_untied_mha_bf16 --ids %s", ids);
    if (rc)
        fail_msg("exit %d: %s", rc, out);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    const cJSON *got = cJSON_GetObjectItem(j, "next_token_logprobs");
    const cJSON *want = cJSON_GetArrayItem(cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "batches"), "right"), "next_token_logprobs"), 0);
    assert_int_equal(cJSON_GetArraySize(got), cJSON_GetArraySize(want));
    double sum = 0;
    int n = 0;
    for (const cJSON *g = got->child, *w = want->child; g; g = g->next, w = w->next, n++) {
        if (!(fabs(g->valuedouble - w->valuedouble) <= 1e-4))
            fail_msg("position %d: transformers %.9g, mxrlhf %.9g", n, w->valuedouble, g->valuedouble);
        sum += g->valuedouble;
    }
    assert_true(fabs(cJSON_GetObjectItem(j, "mean_nll")->valuedouble + sum / n) < 1e-6);
    cJSON_Delete(j);
    cJSON_Delete(ref);
    free(out), free(ids);
}

static void test_logprobs_under_a_plan_writes_the_audit_table(void **state)
{
    char *dir = test_mkdtemp(), pol[4200], audit[4200], *out;
    snprintf(pol, sizeof pol, "%s/policies.json", dir);
    snprintf(audit, sizeof audit, "%s/audit.json", dir);
    const char *text = "{\"version\": 1, \"plans\": {\"A\": {\"default\": \"fp32\", \"compute\": \"fp16\", "
                       "\"rules\": [{\"phase\": [\"rollout\", \"reward\"], \"operand\": [\"weight\", "
                       "\"input\"], \"spec\": \"bf16\"}]}}}";
    test_write_file(pol, text, strlen(text));
    int rc = test_cli(&out, "logprobs --model " FIX "/tiny_tied_gqa_f32 --ids 1,2,3,4 --policy %s "
                            "--plan A --phase reward --audit %s", pol, audit);
    if (rc)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    cJSON *j;
    err_t e = ERR_INIT;
    assert_int_equal(json_load_file(audit, 1 << 20, &j, &e), ERR_OK);
    const cJSON *L = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "layers"), "model.layers.1.mlp.up_proj");
    const cJSON *w = cJSON_GetObjectItem(cJSON_GetObjectItem(L, "reward"), "weight");
    assert_string_equal(cJSON_GetObjectItem(w, "spec")->valuestring, "bf16");
    const cJSON *g = cJSON_GetObjectItem(cJSON_GetObjectItem(L, "gradient"), "weight");
    assert_string_equal(cJSON_GetObjectItem(g, "spec")->valuestring, "fp32");
    cJSON_Delete(j);
    test_rmtree(dir);
    free(dir);
}

static void test_plan_rule_matching_nothing_exits_2_naming_it(void **state)
{
    char *dir = test_mkdtemp(), pol[4200], audit[4200], *out;
    snprintf(pol, sizeof pol, "%s/policies.json", dir);
    snprintf(audit, sizeof audit, "%s/audit.json", dir);
    const char *text = "{\"version\": 1, \"plans\": {\"B\": {\"default\": \"fp32\", \"rules\": ["
                       "{\"module\": \"model.layers.*.mlp.dwn_proj\", \"spec\": \"mxfp4\"}]}}}";
    test_write_file(pol, text, strlen(text));
    int rc = test_cli(&out, "logprobs --model " FIX "/tiny_tied_gqa_f32 --ids 1,2,3 --policy %s "
                            "--plan B --audit %s", pol, audit);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "plans.B.rules[0].module"));
    assert_non_null(strstr(out, pol));
    assert_false(fs_exists(audit));
    free(out);
    /* unknown format: the field is named */
    text = "{\"version\": 1, \"plans\": {\"B\": {\"default\": \"mxfp5\"}}}";
    test_write_file(pol, text, strlen(text));
    rc = test_cli(&out, "logprobs --model " FIX "/tiny_tied_gqa_f32 --ids 1,2,3 --policy %s --plan B", pol);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "plans.B.default"));
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void test_bad_model_directories_exit_2_naming_file_and_field(void **state)
{
    char *dir = test_mkdtemp(), path[4200], *out;
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *cfg = "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"num_hidden_layers\": 2, "
                      "\"num_attention_heads\": 4, \"vocab_size\": 160}";
    test_write_file(path, cfg, strlen(cfg));
    int rc = test_cli(&out, "logprobs --model %s --ids 1,2", dir);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "intermediate_size"));
    assert_non_null(strstr(out, path));
    int lines = 0; /* one line of error */
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 1);
    free(out);
    /* a safetensors file whose header promises more data than there is */
    cfg = "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 96, "
          "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
          "\"vocab_size\": 160, \"tie_word_embeddings\": true}";
    test_write_file(path, cfg, strlen(cfg));
    FILE *src = fopen(FIX "/tiny_tied_gqa_f32/model.safetensors", "rb");
    assert_non_null(src);
    static unsigned char buf[200000];
    size_t n = fread(buf, 1, sizeof buf, src); /* truncated copy */
    fclose(src);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    test_write_file(path, buf, n);
    rc = test_cli(&out, "logprobs --model %s --ids 1,2", dir);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "model.safetensors"));
    free(out);
    rc = test_cli(&out, "logprobs --model %s --ids 1,x", FIX "/tiny_tied_gqa_f32");
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "--ids"));
    free(out);
    rc = test_cli(&out, "logprobs --model %s --ids 1,999", FIX "/tiny_tied_gqa_f32");
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "vocabulary"));
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void test_generate_is_reproducible_from_its_seed(void **state)
{
    char *a, *b, *c;
    const char *args = "generate --model " FIX "/tiny_tied_gqa_f32 --ids 5,17,29 --max-new-tokens 8 "
                       "--temperature 0.9 --top-k 40 --top-p 0.95";
    assert_int_equal(test_cli(&a, "%s --seed 3", args), 0);
    setenv("OMP_NUM_THREADS", "1", 1); /* the child process inherits it */
    assert_int_equal(test_cli(&b, "%s --seed 3", args), 0);
    unsetenv("OMP_NUM_THREADS");
    assert_int_equal(test_cli(&c, "%s --seed 4", args), 0);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    cJSON *j = cJSON_Parse(a);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids")), 8);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "prompt")), 3);
    assert_true(cJSON_IsBool(cJSON_GetObjectItem(j, "stopped")));
    cJSON_Delete(j);
    free(a), free(b), free(c);
    assert_int_equal(test_cli(NULL, "generate --help"), 0);
    assert_int_equal(test_cli(NULL, "generate --model " FIX "/tiny_tied_gqa_f32 --ids 1 --top-p 0"), 2);
}

/* generate --max-new-tokens 100000 on a 128-position model ran for minutes with no output;
 * --top-p 2 was accepted (the configuration refuses it); --max-new-tokens 1e9 said only
 * "need >= 1". Each is now exit 2 stating the limit. */
static void test_generate_states_its_limits(void **state)
{
    (void)state;
    const struct {
        const char *args, *want;
    } cases[] = {
        {"--max-new-tokens 100000", "--max-new-tokens 100000: the prompt's 3 tokens and 100000 "
                                    "new ones exceed the model's 128 positions "
                                    "(max_position_embeddings in "},
        {"--max-new-tokens 126", "at most 125"},
        {"--top-p 2", "--top-p: expected a number in [1e-09, 1], got \"2\""},
        {"--max-new-tokens 1e9", "--max-new-tokens: expected an integer in [1, 1048576], got "
                                 "\"1e9\""},
        {"--temperature -1", "--temperature: expected a number in [0, 1000000]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *o = NULL;
        int rc = test_cli(&o, "generate --model " FIX "/tiny_tied_gqa_f32 --ids 5,17,29 %s",
                          cases[i].args);
        if (rc != 2 || !strstr(o, cases[i].want))
            fail_msg("generate %s: expected exit 2 with \"%s\", got %d:\n%s", cases[i].args,
                     cases[i].want, rc, o);
        free(o);
    }
    /* the longest the model allows runs */
    char *o = NULL;
    int rc = test_cli(&o, "generate --model " FIX "/tiny_tied_gqa_f32 --ids 5,17,29 "
                      "--max-new-tokens 125 --no-stop");
    if (rc != 0)
        fail_msg("exit %d:\n%s", rc, o);
    cJSON *j = cJSON_Parse(o);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "ids")), 125);
    cJSON_Delete(j);
    free(o);
}

static void test_text_is_encoded_with_the_directory_tokenizer(void **state)
{
    char *dir = test_mkdtemp(), tpath[4200], *a, *b;
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", dir);
    const char *texts[2] = {"hello world, hello engine", "the engine says hello"};
    size_t lens[2] = {strlen(texts[0]), strlen(texts[1])};
    tok_train_opts_t to = {280, 1};
    err_t e = ERR_INIT;
    if (tok_train(texts, lens, 2, &to, tpath, &e))
        fail_msg("%s", e.msg);
    tok_t *tok;
    assert_int_equal(tok_load(tpath, &tok, &e), ERR_OK);
    tok_ids_t ids = {0};
    assert_int_equal(tok_encode(tok, NULL, "hello world", 11, &ids, &e), ERR_OK);
    /* a random model over the tokenizer's vocabulary, saved beside it */
    backend_t *be;
    assert_int_equal(be_open("cpu", &be, &e), ERR_OK);
    qwen2_config_t c = {.hidden = 32, .inter = 48, .layers = 1, .heads = 2, .kv_heads = 1,
                        .head_dim = 16, .vocab = tok_vocab_size(tok), .max_pos = 64,
                        .rope_theta = 10000, .rms_eps = 1e-6, .tie = true, .dtype = ST_F32,
                        .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 4};
    qwen2_model_t *m;
    assert_int_equal(qwen2_new(be, &c, &o, &m, &e), ERR_OK);
    assert_int_equal(qwen2_init_philox(m, 5, 0.2f, &e), ERR_OK);
    assert_int_equal(qwen2_save_dir(m, dir, ST_F32, &e), ERR_OK);
    qwen2_free(m);
    be_close(be);
    char list[512] = "";
    for (size_t i = 0; i < ids.n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", ids.ids[i]);
    assert_int_equal(test_cli(&a, "logprobs --model %s --text 'hello world'", dir), 0);
    assert_int_equal(test_cli(&b, "logprobs --model %s --ids %s", dir, list), 0);
    cJSON *ja = cJSON_Parse(a), *jb = cJSON_Parse(b);
    assert_non_null(ja);
    assert_non_null(jb);
    char *la = cJSON_PrintUnformatted(cJSON_GetObjectItem(ja, "next_token_logprobs"));
    char *lb = cJSON_PrintUnformatted(cJSON_GetObjectItem(jb, "next_token_logprobs"));
    assert_string_equal(la, lb);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ja, "ids")), (int)ids.n);
    free(la), free(lb), free(a), free(b);
    cJSON_Delete(ja), cJSON_Delete(jb);
    assert_int_equal(test_cli(&a, "generate --model %s --prompt 'hello' --max-new-tokens 3 --seed 1", dir), 0);
    ja = cJSON_Parse(a);
    assert_non_null(ja);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(ja, "text")));
    cJSON_Delete(ja);
    free(a);
    /* no tokenizer in the directory: bad input, naming the file */
    assert_int_equal(test_cli(&a, "logprobs --model " FIX "/tiny_tied_gqa_f32 --text hi"), 2);
    assert_non_null(strstr(a, "tokenizer.json"));
    free(a);
    tok_ids_free(&ids);
    tok_free(tok);
    test_rmtree(dir);
    free(dir);
}

/* The directory `mxrlhf init` writes loads, and its weights are qwen2_init_philox's, bit for
 * bit (f32); the config's head choice and the tokenizer checks are kept. */
static void load_params(const char *dir, unsigned heads, float **out, size_t *n)
{
    backend_t *be;
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 4, .heads = heads};
    if (be_open("cpu", &be, &e) || qwen2_open_dir(dir, be, &o, &m, &e))
        fail_msg("%s: %s", dir, e.msg);
    *n = qwen2_nparams(m);
    *out = malloc(*n * sizeof **out);
    assert_int_equal(qwen2_params_get(m, 0, *out, *n, &e), 0);
    qwen2_free(m);
    be_close(be);
}

static void philox_params(const char *config, unsigned heads, uint64_t seed, float range,
                          float **out, size_t *n)
{
    backend_t *be;
    qwen2_model_t *m;
    qwen2_config_t c;
    err_t e = ERR_INIT;
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 4, .heads = heads};
    if (qwen2_config_load(config, &c, &e) || be_open("cpu", &be, &e) ||
        qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, range, &e))
        fail_msg("%s", e.msg);
    *n = qwen2_nparams(m);
    *out = malloc(*n * sizeof **out);
    assert_int_equal(qwen2_params_get(m, 0, *out, *n, &e), 0);
    qwen2_free(m);
    be_close(be);
}

static void test_init_writes_philox_weights_that_load(void **state)
{
    char *dir = test_mkdtemp(), lm[4200], rm[4200], bad[4200], *out;
    snprintf(lm, sizeof lm, "%s/lm", dir);
    snprintf(rm, sizeof rm, "%s/rm", dir);
    snprintf(bad, sizeof bad, "%s/bad", dir);
    const char *cfg = FIX "/tiny_tied_gqa_f32/config.json";
    int rc = test_cli(&out, "init --config %s --seed 7 --range 0.08 --dtype f32 --output %s", cfg, lm);
    if (rc)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    rc = test_cli(&out, "init --config %s --seed 8 --range 0.08 --dtype f32 --score-head --output %s",
                  cfg, rm);
    if (rc)
        fail_msg("exit %d: %s", rc, out);
    assert_non_null(strstr(out, "Qwen2ForSequenceClassification"));
    free(out);
    const struct { const char *dir; unsigned heads; uint64_t seed; } cases[] = {
        {lm, QWEN2_HEAD_LM, 7}, {rm, QWEN2_HEAD_SCORE, 8}};
    for (int c = 0; c < 2; c++) {
        float *got, *want;
        size_t ng, nw;
        load_params(cases[c].dir, cases[c].heads, &got, &ng);
        philox_params(cfg, cases[c].heads, cases[c].seed, 0.08f, &want, &nw);
        assert_int_equal(ng, nw);
        for (size_t i = 0; i < ng; i++)
            if (memcmp(&got[i], &want[i], sizeof(float)))
                fail_msg("%s: parameter %zu: expected %.9g, got %.9g", cases[c].dir, i, want[i], got[i]);
        free(got);
        free(want);
    }
    char cpath[4300];
    snprintf(cpath, sizeof cpath, "%s/config.json", rm);
    cJSON *j;
    err_t e = ERR_INIT;
    assert_int_equal(json_load_file(cpath, 1 << 20, &j, &e), 0);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "architectures"), 0)->valuestring,
                        "Qwen2ForSequenceClassification");
    cJSON_Delete(j);
    /* a tokenizer with more ids than the model's 160 rows: bad input, nothing written */
    assert_int_equal(test_cli(&out, "init --config %s --output %s --tokenizer "
                              "tests/fixtures/tokenizer/small_synthetic.json", cfg, bad), 2);
    assert_non_null(strstr(out, "vocab_size"));
    assert_false(fs_exists(bad));
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* A copy of tiny_tied_gqa_f32 in dir whose tensor `name` has `v` at element `at`. */
static void save_with_value(const char *dir, const char *name, size_t at, float v, st_dtype_t dt)
{
    backend_t *be;
    qwen2_model_t *m;
    err_t e = ERR_INIT;
    qwen2_opts_t o = {.max_batch = 1, .max_seq = 4};
    if (be_open("cpu", &be, &e) || qwen2_open_dir(FIX "/tiny_tied_gqa_f32", be, &o, &m, &e))
        fail_msg("%s", e.msg);
    const qwen2_tensor_t *t = qwen2_tensor_find(m, name);
    assert_non_null(t);
    assert_int_equal(qwen2_params_set(m, t->off + at, &v, 1, &e), 0);
    assert_int_equal(qwen2_save_dir(m, dir, dt, &e), 0);
    qwen2_free(m);
    be_close(be);
}

/* NaN/Inf weights printed "nan" from logprobs (not JSON) and garbage ids from generate,
 * with exit 0: refused at load, naming the file, the tensor and the element. */
static void test_non_finite_weights_exit_2_naming_the_tensor(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    save_with_value(dir, "model.layers.1.mlp.up_proj.weight", 10, NAN, ST_F32);
    const char *cmds[2] = {"logprobs --model %s --ids 1,2,3",
                           "generate --model %s --ids 1,2,3 --max-new-tokens 4"};
    for (int k = 0; k < 2; k++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, cmds[k], dir);
        assert_int_equal(test_cli(&out, "%s", cmd), 2);
        if (!strstr(out, "model.safetensors: tensor \"model.layers.1.mlp.up_proj.weight\": "
                         "element 10 is NaN (weights must be finite)"))
            fail_msg("%s: expected the tensor named, got: %s", cmd, out);
        assert_null(strstr(out, "\"ids\""));
        free(out);
    }
    /* an overflow to Inf in a 16-bit file is refused the same way */
    save_with_value(dir, "model.norm.weight", 3, -INFINITY, ST_BF16);
    assert_int_equal(test_cli(&out, "logprobs --model %s --ids 1,2,3", dir), 2);
    assert_non_null(strstr(out, "tensor \"model.norm.weight\": element 3 is -Inf"));
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* A special token id beyond the vocabulary was accepted: refused at config load, naming
 * the field. */
static void test_special_ids_outside_the_vocabulary_exit_2(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), path[4200], *out;
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *fields[3] = {"\"eos_token_id\": 500", "\"eos_token_id\": [5, 160]",
                             "\"pad_token_id\": 160"};
    const char *want[3] = {"field \"eos_token_id\": token id 500 is outside the vocabulary "
                           "(vocab_size 160)",
                           "field \"eos_token_id\": token id 160 is outside",
                           "field \"pad_token_id\": token id 160 is outside"};
    for (int k = 0; k < 3; k++) {
        char cfg[1024];
        snprintf(cfg, sizeof cfg, "{\"model_type\": \"qwen2\", \"hidden_size\": 64, "
                 "\"intermediate_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": "
                 "4, \"num_key_value_heads\": 2, \"vocab_size\": 160, \"tie_word_embeddings\": "
                 "true, %s}", fields[k]);
        test_write_file(path, cfg, strlen(cfg));
        assert_int_equal(test_cli(&out, "logprobs --model %s --ids 1,2", dir), 2);
        if (!strstr(out, path) || !strstr(out, want[k]))
            fail_msg("expected %s: %s, got: %s", path, want[k], out);
        free(out);
    }
    test_rmtree(dir);
    free(dir);
}

/* A causal LM given as the reward model trained against a random score head (exit 0, no
 * warning): refused, naming the directory and the missing tensor. */
static void test_causal_lm_as_reward_model_is_refused(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    char corpus[4200], tok[4200], cfg[4200], lm[4200], outd[4200];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    snprintf(tok, sizeof tok, "%s/tok.json", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(lm, sizeof lm, "%s/lm", dir);
    snprintf(outd, sizeof outd, "%s/ppo", dir);
    const char *text = "low lower lowest newer newest wider widest hello world the engine";
    test_write_file(corpus, text, strlen(text));
    const char *c = "{\"model_type\": \"qwen2\", \"hidden_size\": 32, \"intermediate_size\": 48, "
                    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": "
                    "1, \"vocab_size\": 280, \"max_position_embeddings\": 128, "
                    "\"tie_word_embeddings\": true}";
    test_write_file(cfg, c, strlen(c));
    assert_int_equal(test_cli(NULL, "tokenize train --corpus %s --vocab-size 280 --out %s", corpus,
                              tok), 0);
    assert_int_equal(test_cli(NULL, "init --config %s --output %s --tokenizer %s", cfg, lm, tok), 0);
    assert_int_equal(test_cli(&out, "ppo --policy-model %s --reward-model %s --output %s --steps 1",
                              lm, lm, outd), 2);
    char want[4400];
    snprintf(want, sizeof want, "%s: not a reward model: tensor \"score.weight\" (the score head) "
             "is missing from %s/model.safetensors", lm, lm);
    if (!strstr(out, want))
        fail_msg("expected \"%s\", got: %s", want, out);
    free(out);
    char *stats = fs_join(outd, "training_stats.jsonl");
    assert_false(fs_exists(stats));
    free(stats);
    /* the model-layer check itself: a reward model passes, a causal LM does not */
    err_t e = ERR_INIT;
    assert_int_equal(qwen2_check_reward_dir(FIX "/tiny_reward", &e), 0);
    assert_int_equal(qwen2_check_reward_dir(FIX "/tiny_untied_mqa_f16_sharded", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "model.safetensors.index.json"));
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logprobs_prints_what_transformers_computes),
        cmocka_unit_test(test_logprobs_under_a_plan_writes_the_audit_table),
        cmocka_unit_test(test_plan_rule_matching_nothing_exits_2_naming_it),
        cmocka_unit_test(test_bad_model_directories_exit_2_naming_file_and_field),
        cmocka_unit_test(test_generate_is_reproducible_from_its_seed),
        cmocka_unit_test(test_generate_states_its_limits),
        cmocka_unit_test(test_text_is_encoded_with_the_directory_tokenizer),
        cmocka_unit_test(test_init_writes_philox_weights_that_load),
        cmocka_unit_test(test_non_finite_weights_exit_2_naming_the_tensor),
        cmocka_unit_test(test_special_ids_outside_the_vocabulary_exit_2),
        cmocka_unit_test(test_causal_lm_as_reward_model_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
