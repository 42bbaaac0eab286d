/* Tests for src/rlhf/text: the one way prompts and responses become token ids. */
#include <stdlib.h>
#include <string.h>

#include "rlhf/text.h"
#include "support/testutil.h"

#define TOKFILE "tests/fixtures/tokenizer/small_synthetic.json"

static tok_t *load_tok(void)
{
    tok_t *t;
    err_t e = ERR_INIT;
    if (tok_load(TOKFILE, &t, &e))
        fail_msg("%s", e.msg);
    return t;
}

static void expect_ids(const tok_t *tok, const char *text, const int32_t *got, int n)
{
    tok_ids_t ids = {0};
    err_t e = ERR_INIT;
    assert_int_equal(tok_encode(tok, NULL, text, strlen(text), &ids, &e), 0);
    assert_int_equal((int)ids.n, n);
    assert_memory_equal(ids.ids, got, (size_t)n * sizeof *got);
    tok_ids_free(&ids);
}

static void raw_pair_is_prompt_then_spaced_response_then_eot(void **state)
{
    (void)state;
    tok_t *tok = load_tok();
    rlhf_text_t t;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_text_init(&t, tok, RLHF_TEMPLATE_RAW, 512, 256, &e), 0);
    const char *prompt = "\n\nHuman: Tell me about gardening.\n\nAssistant:";
    rlhf_seq_t s;
    assert_int_equal(rlhf_encode_pair(&t, prompt, "Plants need water.", &s, &e), 0);
    expect_ids(tok, prompt, s.ids, s.prompt_len);
    expect_ids(tok, " Plants need water.", s.ids + s.prompt_len, s.n - s.prompt_len - 1);
    assert_true(s.ended);
    assert_int_equal(s.ids[s.n - 1], tok_token_id(tok, "<|endoftext|>"));
    rlhf_seq_free(&s);
    rlhf_text_free(&t);
    tok_free(tok);
}

static void long_prompt_keeps_its_end_and_long_response_does_not_end(void **state)
{
    (void)state;
    tok_t *tok = load_tok();
    rlhf_text_t t;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_text_init(&t, tok, RLHF_TEMPLATE_RAW, 4, 3, &e), 0);
    const char *prompt = "\n\nHuman: one two three four five six seven\n\nAssistant:";
    tok_ids_t full = {0};
    assert_int_equal(tok_encode(tok, NULL, prompt, strlen(prompt), &full, &e), 0);
    rlhf_seq_t s;
    assert_int_equal(rlhf_encode_pair(&t, prompt, "a b c d e f g h", &s, &e), 0);
    assert_int_equal(s.prompt_len, 4);
    assert_memory_equal(s.ids, full.ids + full.n - 4, 4 * sizeof(int32_t));
    assert_int_equal(s.n, 4 + 3);
    assert_false(s.ended);
    tok_ids_free(&full);
    rlhf_seq_free(&s);
    rlhf_text_free(&t);
    tok_free(tok);
}

static void chatml_renders_turns_and_ends_with_im_end(void **state)
{
    (void)state;
    tok_t *tok = load_tok();
    rlhf_text_t t;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_text_init(&t, tok, RLHF_TEMPLATE_CHATML, 512, 256, &e), 0);
    const char *prompt = "\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Tell me more\n\nAssistant:";
    rlhf_seq_t s;
    assert_int_equal(rlhf_encode_pair(&t, prompt, "More text.", &s, &e), 0);
    expect_ids(tok,
               "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
               "<|im_start|>user\nTell me more<|im_end|>\n<|im_start|>assistant\n",
               s.ids, s.prompt_len);
    assert_int_equal(s.ids[s.n - 1], tok_token_id(tok, "<|im_end|>"));
    char *text;
    assert_int_equal(rlhf_decode_response(&t, s.ids + s.prompt_len, s.n - s.prompt_len, &text, &e), 0);
    assert_string_equal(text, "More text.");
    free(text);
    rlhf_seq_free(&s);
    rlhf_text_free(&t);
    tok_free(tok);
}

/* A model's vocabulary may be larger than its tokenizer's (Qwen2.5: 151936 rows, 151665
 * tokens); a sampled id the tokenizer does not name is dropped, as Hugging Face drops it. */
static void decode_response_drops_ids_the_tokenizer_does_not_name(void **state)
{
    (void)state;
    tok_t *tok = load_tok();
    rlhf_text_t t;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_text_init(&t, tok, RLHF_TEMPLATE_RAW, 512, 256, &e), 0);
    tok_ids_t ids = {0};
    assert_int_equal(tok_encode(tok, NULL, " More text.", 11, &ids, &e), 0);
    int32_t v = tok_vocab_size(tok);
    int32_t mixed[64];
    int n = 0;
    mixed[n++] = v + 100;
    for (size_t i = 0; i < ids.n && n < 60; i++) {
        mixed[n++] = ids.ids[i];
        mixed[n++] = v + (int32_t)i; /* past the tokenizer's last id */
    }
    mixed[n++] = t.eot_id;
    char *text = NULL;
    int rc = rlhf_decode_response(&t, mixed, n, &text, &e);
    if (rc)
        fail_msg("expected the unknown ids dropped, got error: %s", e.msg);
    assert_string_equal(text, " More text.");
    free(text);
    tok_ids_free(&ids);
    rlhf_text_free(&t);
    tok_free(tok);
}

static void batch_masks_exactly_the_positions_predicting_response_tokens(void **state)
{
    (void)state;
    int32_t a[5] = {1, 2, 3, 4, 5}, b[3] = {7, 8, 9};
    rlhf_seq_t sa = {a, 5, 2, true}, sb = {b, 3, 1, true};
    const rlhf_seq_t *seqs[2] = {&sa, &sb};
    rlhf_batch_t bt;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_batch_make(seqs, 2, 0, &bt, &e), 0);
    assert_int_equal(bt.T, 5);
    float want[10] = {0, 1, 1, 1, 0, /* row 0: positions 1..3 predict ids 3,4,5 */
                      1, 1, 0, 0, 0}; /* row 1: positions 0..1 predict 8, 9 */
    assert_memory_equal(bt.mask, want, sizeof want);
    assert_int_equal(bt.len[1], 3);
    assert_int_equal(bt.ids[5 + 3], 0);
    rlhf_batch_free(&bt);
}

static void counter_counts_what_encoding_produces(void **state)
{
    (void)state;
    tok_t *tok = load_tok();
    rlhf_text_t t;
    err_t e = ERR_INIT;
    assert_int_equal(rlhf_text_init(&t, tok, RLHF_TEMPLATE_RAW, 512, 256, &e), 0);
    data_token_counter_t c = rlhf_text_counter(&t);
    const char *prompt = "\n\nHuman: What about cooking?\n\nAssistant:";
    rlhf_seq_t s;
    assert_int_equal(rlhf_encode_pair(&t, prompt, "Use salt.", &s, &e), 0);
    assert_int_equal((int)data_count_tokens(&c, prompt), s.prompt_len);
    assert_int_equal((int)data_count_tokens(&c, "Use salt."), s.n - s.prompt_len - 1);
    rlhf_seq_free(&s);
    rlhf_text_free(&t);
    tok_free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raw_pair_is_prompt_then_spaced_response_then_eot),
        cmocka_unit_test(long_prompt_keeps_its_end_and_long_response_does_not_end),
        cmocka_unit_test(chatml_renders_turns_and_ends_with_im_end),
        cmocka_unit_test(decode_response_drops_ids_the_tokenizer_does_not_name),
        cmocka_unit_test(batch_masks_exactly_the_positions_predicting_response_tokens),
        cmocka_unit_test(counter_counts_what_encoding_produces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
