/* Tests for src/tokenizer and `mxrlhf tokenize`: behaviour and bad input. (Agreement with
 * Hugging Face on thousands of strings is test_tokenizer_peer.c.) Uses the committed
 * trained tokenizer tests/fixtures/tokenizer/small_synthetic.json: ids 0..255 are bytes,
 * 597..599 are <|endoftext|>, <|im_start|>, <|im_end|>. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support/testutil.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

#define SMALL "tests/fixtures/tokenizer/small_synthetic.json"

static tok_t *small(void)
{
    tok_t *t;
    err_t e = ERR_INIT;
    if (tok_load(SMALL, &t, &e))
        fail_msg("%s", e.msg);
    return t;
}

static void encode_ok(const tok_t *t, const char *text, tok_ids_t *ids)
{
    err_t e = ERR_INIT;
    ids->n = 0;
    if (tok_encode(t, NULL, text, strlen(text), ids, &e))
        fail_msg("encode \"%s\": %s", text, e.msg);
}

/* A minimal tokenizer.json: Qwen2's pipeline, the given vocab/merges/added tokens. */
static char *doc(const char *model_type, const char *vocab, const char *merges, const char *added,
                 const char *extra)
{
    char *s = malloc(8192);
    snprintf(s, 8192,
             "{\"version\": \"1.0\", \"added_tokens\": [%s],"
             " \"normalizer\": {\"type\": \"NFC\"},"
             " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
             "   {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+|\\\\w+|[^\\\\s\\\\w]+\"},"
             "    \"behavior\": \"Isolated\", \"invert\": false},"
             "   {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},"
             " \"decoder\": {\"type\": \"ByteLevel\"}, %s"
             " \"model\": {\"type\": \"%s\", \"vocab\": {%s}, \"merges\": [%s]}}",
             added, extra, model_type, vocab, merges);
    return s;
}

static int load_doc(const char *text, tok_t **t, err_t *e)
{
    return tok_load_json(text, strlen(text), "t.json", t, e);
}

static void expect_load_error(const char *text, const char *needle)
{
    tok_t *t = NULL;
    err_t e = ERR_INIT;
    int rc = load_doc(text, &t, &e);
    if (rc != ERR_INPUT || !strstr(e.msg, needle) || !strstr(e.msg, "t.json"))
        fail_msg("expected ERR_INPUT naming t.json and \"%s\", got rc %d: \"%s\"", needle, rc, e.msg);
    assert_null(t);
}

/* ---- byte-level table ---------------------------------------------------------------- */

static void byte_table_is_gpt2s_bytes_to_unicode(void **state)
{
    (void)state;
    assert_int_equal(tok_byte_char(' '), 0x120);  /* "Ġ" */
    assert_int_equal(tok_byte_char('\n'), 0x10A); /* "Ċ" */
    assert_int_equal(tok_byte_char(0), 0x100);
    assert_int_equal(tok_byte_char(0x7F), 0x121);
    assert_int_equal(tok_byte_char(0xAD), 0x143);
    assert_int_equal(tok_byte_char('A'), 'A');
    assert_int_equal(tok_byte_char(0xE9), 0xE9);
    for (int b = 0; b < 256; b++)
        assert_int_equal(tok_char_byte(tok_byte_char((uint8_t)b)), b);
    assert_int_equal(tok_char_byte(0x144), -1);
    assert_int_equal(tok_char_byte(' '), -1);
}

static void utf8_check_finds_first_invalid_byte(void **state)
{
    (void)state;
    assert_int_equal(tok_utf8_check("abc\xC3\xA9", 5), 5);
    assert_int_equal(tok_utf8_check("abcdefgh\xC3", 9), 8);       /* truncated */
    assert_int_equal(tok_utf8_check("ab\xED\xA0\x80", 5), 2);     /* surrogate */
    assert_int_equal(tok_utf8_check("\xC0\xAF", 2), 0);           /* overlong */
    assert_int_equal(tok_utf8_check("ok\xF4\x90\x80\x80", 6), 2); /* > U+10FFFF */
}

/* ---- encoding ------------------------------------------------------------------------ */

static void special_tokens_in_text_become_their_ids(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_ids_t ids = {0};
    encode_ok(t, "a<|im_end|>b<|endoftext|><|im_start|>", &ids);
    int32_t want[] = {'a', 599, 'b', 597, 598};
    assert_int_equal(ids.n, 5);
    assert_memory_equal(ids.ids, want, sizeof want);
    /* A near miss is ordinary text. */
    encode_ok(t, "<|im_end|", &ids);
    for (size_t i = 0; i < ids.n; i++)
        assert_true(ids.ids[i] < 597);
    tok_ids_free(&ids);
    tok_free(t);
}

static void special_tokens_are_matched_before_normalisation(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_ids_t a = {0}, b = {0};
    /* The mark after a special token cannot compose across it: it stays a lone U+0301. */
    encode_ok(t, "e<|im_end|>\xCC\x81", &a);
    assert_int_equal(a.ids[0], 'e');
    assert_int_equal(a.ids[1], 599);
    encode_ok(t, "\xCC\x81", &b);
    assert_int_equal(a.n, 2 + b.n);
    assert_memory_equal(a.ids + 2, b.ids, b.n * sizeof(int32_t));
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_free(t);
}

static void nfc_makes_decomposed_and_composed_text_equal(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_ids_t a = {0}, b = {0};
    encode_ok(t, "caf\xC3\xA9 Zu\xCC\x88rich", &a);  /* é composed, ü decomposed */
    encode_ok(t, "cafe\xCC\x81 Z\xC3\xBCrich", &b);  /* é decomposed, ü composed */
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(int32_t));
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_free(t);
}

static void invalid_utf8_is_refused_with_its_offset(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_ids_t ids = {0};
    err_t e = ERR_INIT;
    assert_int_equal(tok_encode(t, NULL, "ab\xFF" "cd", 5, &ids, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "not valid UTF-8 at byte 2"));
    assert_int_equal(ids.n, 0);
    tok_free(t);
}

static void workspace_cache_does_not_change_ids(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_work_t *w;
    err_t e = ERR_INIT;
    assert_int_equal(tok_work_new(t, &w, &e), 0);
    const char *text = "the the the cat sat on the mat, the end.  \n\tthe";
    tok_ids_t a = {0}, b = {0}, c = {0};
    assert_int_equal(tok_encode(t, w, text, strlen(text), &a, &e), 0);
    assert_int_equal(tok_encode(t, w, text, strlen(text), &b, &e), 0); /* cache warm */
    encode_ok(t, text, &c);                                              /* no cache */
    assert_int_equal(a.n, b.n);
    assert_int_equal(a.n, c.n);
    assert_memory_equal(a.ids, b.ids, a.n * sizeof(int32_t));
    assert_memory_equal(a.ids, c.ids, a.n * sizeof(int32_t));
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_ids_free(&c);
    tok_work_free(w);
    tok_free(t);
}

static void empty_text_gives_no_ids(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_ids_t ids = {0};
    encode_ok(t, "", &ids);
    assert_int_equal(ids.n, 0);
    tok_free(t);
}

/* Merges apply by rank, lowest first, leftmost among equals (tokenizers' Word::merge_all):
 * with "b c" ranked before "a b", "abc" must become [a, bc]. */
static void merges_apply_by_rank_not_position(void **state)
{
    (void)state;
    char *d = doc("BPE", "\"a\": 0, \"b\": 1, \"c\": 2, \"bc\": 3, \"ab\": 4, \"abc\": 5",
                  "\"b c\", \"a b\", [\"ab\", \"c\"]", "", "");
    tok_t *t;
    err_t e = ERR_INIT;
    assert_int_equal(load_doc(d, &t, &e), 0);
    tok_ids_t ids = {0};
    encode_ok(t, "abc", &ids);
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 0);
    assert_int_equal(ids.ids[1], 3);
    encode_ok(t, "abab", &ids); /* two equal-rank pairs: both merge */
    assert_int_equal(ids.n, 2);
    assert_int_equal(ids.ids[0], 4);
    assert_int_equal(ids.ids[1], 4);
    tok_ids_free(&ids);
    tok_free(t);
    free(d);
}

/* A byte whose character is not in the vocabulary is dropped (no unk_token), as in
 * tokenizers. */
static void bytes_missing_from_vocab_are_dropped(void **state)
{
    (void)state;
    char *d = doc("BPE", "\"a\": 0", "", "", "");
    tok_t *t;
    err_t e = ERR_INIT;
    assert_int_equal(load_doc(d, &t, &e), 0);
    tok_ids_t ids = {0};
    encode_ok(t, "xax", &ids);
    assert_int_equal(ids.n, 1);
    assert_int_equal(ids.ids[0], 0);
    tok_ids_free(&ids);
    /* a piece with no ids at all, into an empty list, fresh and then from the word cache
     * (UBSan: memcpy from/to NULL with length 0, which the sanitizer build aborted on) */
    tok_work_t *w;
    err_t we = ERR_INIT;
    assert_int_equal(tok_work_new(t, &w, &we), 0);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(tok_encode(t, w, "x", 1, &ids, &we), 0);
        assert_int_equal(ids.n, 0);
    }
    assert_int_equal(tok_encode(t, w, "x a", 3, &ids, &we), 0);
    assert_int_equal(ids.n, 1);
    tok_ids_free(&ids);
    tok_work_free(w);
    tok_free(t);
    free(d);
}

/* An empty vocabulary would encode every text to no ids: refused at load, naming it (after
 * the checks of unsupported steps, which say more). */
static void empty_vocabulary_is_refused(void **state)
{
    (void)state;
    char *d = doc("BPE", "", "", "", "");
    expect_load_error(d, "model.vocab\": empty");
    free(d);
    d = doc("BPE", "", "", "{\"id\": 0, \"content\": \"<s>\", \"special\": true}", "");
    expect_load_error(d, "model.vocab\": empty");
    free(d);
}

/* A key twice in the file is refused by the JSON reader, naming the key and where. */
static void repeated_key_in_the_file_is_refused(void **state)
{
    (void)state;
    char *d = doc("BPE", "\"a\": 0", "", "", "\"decoder\": {\"type\": \"ByteLevel\"},");
    expect_load_error(d, "key \"decoder\" appears twice");
    free(d);
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"type\": \"WordPiece\"}}",
                      "key \"model.type\" appears twice");
}

static void added_token_ids_follow_hugging_faces_rule(void **state)
{
    (void)state;
    /* "<x>" is new: it takes the vocabulary size (2) whatever the file says; "a" keeps its
     * vocabulary id. */
    char *d = doc("BPE", "\"a\": 0, \"b\": 1", "",
                  "{\"id\": 7, \"content\": \"<x>\", \"special\": true, \"normalized\": false},"
                  "{\"id\": 9, \"content\": \"a\", \"special\": false, \"normalized\": false}",
                  "");
    tok_t *t;
    err_t e = ERR_INIT;
    assert_int_equal(load_doc(d, &t, &e), 0);
    assert_int_equal(tok_token_id(t, "<x>"), 2);
    assert_int_equal(tok_token_id(t, "a"), 0);
    assert_int_equal(tok_vocab_size(t), 3);
    assert_true(tok_is_special(t, 2));
    assert_false(tok_is_special(t, 0));
    tok_free(t);
    free(d);
}

/* ---- decoding ------------------------------------------------------------------------ */

static void decode_joins_bytes_then_repairs_utf8(void **state)
{
    (void)state;
    tok_t *t = small();
    err_t e = ERR_INIT;
    char *s;
    size_t n;
    /* U+4E16 (E4 B8 96) split over three byte tokens comes back whole. */
    int32_t whole[] = {0xE4, 0xB8, 0x96};
    assert_int_equal(tok_decode(t, whole, 3, false, &s, &n, &e), 0);
    assert_string_equal(s, "\xE4\xB8\x96");
    free(s);
    /* E4 B8 then 'a': one U+FFFD for the maximal invalid subpart, then 'a'. */
    int32_t cut[] = {0xE4, 0xB8, 'a', 0xFF};
    assert_int_equal(tok_decode(t, cut, 4, false, &s, &n, &e), 0);
    assert_string_equal(s, "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD");
    assert_int_equal(n, 7);
    free(s);
    tok_free(t);
}

static void decode_skip_special_leaves_special_tokens_out(void **state)
{
    (void)state;
    tok_t *t = small();
    err_t e = ERR_INIT;
    int32_t ids[] = {598, 'h', 'i', 599};
    char *s;
    assert_int_equal(tok_decode(t, ids, 4, false, &s, NULL, &e), 0);
    assert_string_equal(s, "<|im_start|>hi<|im_end|>");
    free(s);
    assert_int_equal(tok_decode(t, ids, 4, true, &s, NULL, &e), 0);
    assert_string_equal(s, "hi");
    free(s);
    tok_free(t);
}

static void decode_refuses_unknown_id(void **state)
{
    (void)state;
    tok_t *t = small();
    err_t e = ERR_INIT;
    int32_t ids[] = {1, 600};
    char *s = NULL;
    assert_int_equal(tok_decode(t, ids, 2, false, &s, NULL, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "ids[1] = 600"));
    assert_null(s);
    tok_free(t);
}

/* ---- ChatML -------------------------------------------------------------------------- */

static void chatml_renders_qwens_template(void **state)
{
    (void)state;
    tok_msg_t m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}};
    char *s;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(tok_chatml_render(m, 3, true, &s, &n, &e), 0);
    assert_string_equal(s, "<|im_start|>system\nBe brief.<|im_end|>\n"
                           "<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\nHello.<|im_end|>\n"
                           "<|im_start|>assistant\n");
    assert_int_equal(n, strlen(s));
    free(s);
    assert_int_equal(tok_chatml_render(m + 1, 1, false, &s, &n, &e), 0);
    assert_string_equal(s, "<|im_start|>user\nHi<|im_end|>\n");
    free(s);
}

static void chat_encoding_uses_special_token_ids(void **state)
{
    (void)state;
    tok_t *t = small();
    tok_msg_t m = {"user", "Hi"};
    tok_ids_t ids = {0};
    err_t e = ERR_INIT;
    assert_int_equal(tok_encode_chat(t, NULL, &m, 1, true, &ids, &e), 0);
    assert_int_equal(ids.ids[0], 598);
    int im_end = 0, im_start = 0;
    for (size_t i = 0; i < ids.n; i++) {
        im_end += ids.ids[i] == 599;
        im_start += ids.ids[i] == 598;
    }
    assert_int_equal(im_end, 1);
    assert_int_equal(im_start, 2);
    tok_ids_free(&ids);
    tok_free(t);
}

/* ---- bad tokenizer files ------------------------------------------------------------- */

static void wordpiece_model_is_refused(void **state)
{
    (void)state;
    char *d = doc("WordPiece", "\"a\": 0", "", "", "");
    expect_load_error(d, "model.type");
    free(d);
    d = doc("Unigram", "\"a\": 0", "", "", "");
    expect_load_error(d, "\"Unigram\" is not supported");
    free(d);
}

static void merge_naming_unknown_token_is_refused(void **state)
{
    (void)state;
    char *d = doc("BPE", "\"a\": 0, \"b\": 1, \"ab\": 2", "\"a b\", \"a q\"", "", "");
    expect_load_error(d, "model.merges[1]\": token \"q\" is not in model.vocab");
    free(d);
    d = doc("BPE", "\"a\": 0, \"b\": 1", "[\"a\", \"b\"]", "", "");
    expect_load_error(d, "merged token \"ab\"");
    free(d);
    d = doc("BPE", "\"a\": 0, \"b\": 1, \"ab\": 2", "\"a b c\"", "", "");
    expect_load_error(d, "not two tokens separated by one space");
    free(d);
}

static void malformed_json_names_line_and_column(void **state)
{
    (void)state;
    expect_load_error("{\"model\":\n  {\"type\": \"BPE\",,}}", "line 2");
    expect_load_error("[1, 2]", "JSON object");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}",
                      "model.vocab");
}

static void tokenizer_file_with_invalid_utf8_is_refused(void **state)
{
    (void)state;
    expect_load_error("{\"model\": {\"vocab\": {\"\xC3\": 0}}}", "not valid UTF-8 at byte 22");
}

static void unsupported_pipeline_steps_are_refused(void **state)
{
    (void)state;
    char *d = doc("BPE", "\"a\": 0", "", "", "\"post_processor\": {\"type\": \"TemplateProcessing\"},");
    expect_load_error(d, "post_processor.type");
    free(d);
    d = doc("BPE", "\"a\": 0", "", "", "\"truncation\": null,");
    tok_t *t;
    err_t e = ERR_INIT;
    assert_int_equal(load_doc(d, &t, &e), 0);
    tok_free(t);
    free(d);
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"Metaspace\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {}, \"merges\": []}}",
                      "pre_tokenizer.type");
    expect_load_error("{\"normalizer\": {\"type\": \"Lowercase\"}, \"pre_tokenizer\": {\"type\": "
                      "\"ByteLevel\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}",
                      "normalizer.type");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"dropout\": 0.1, \"vocab\": {}, \"merges\": []}}",
                      "model.dropout");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"unk_token\": \"<unk>\", \"vocab\": {}, \"merges\": []}}",
                      "model.unk_token");
    expect_load_error("{\"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"model\": {\"type\": \"BPE\","
                      " \"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}",
                      "appears twice");
}

static void split_patterns_without_faithful_translation_are_refused(void **state)
{
    (void)state;
    const char *tmpl = "{\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": "
                       "\"Split\", \"pattern\": {\"Regex\": \"%s\"}, \"behavior\": \"%s\"}, "
                       "{\"type\": \"ByteLevel\"}]}, \"model\": {\"type\": \"BPE\", \"vocab\": {}, "
                       "\"merges\": []}}";
    char buf[1024];
    snprintf(buf, sizeof buf, tmpl, "\\\\h+", "Isolated");
    expect_load_error(buf, "\\h");
    snprintf(buf, sizeof buf, tmpl, "[a-z&&[^aeiou]]", "Isolated");
    expect_load_error(buf, "nested character classes");
    snprintf(buf, sizeof buf, tmpl, "(unclosed", "Isolated");
    expect_load_error(buf, "does not compile");
    snprintf(buf, sizeof buf, tmpl, "\\\\s+", "Removed");
    expect_load_error(buf, "behavior");
}

/* \s is Unicode White_Space as in Oniguruma: U+0085 yes, U+180E (PCRE2's extra) no. */
static void split_regex_whitespace_is_onigurumas(void **state)
{
    (void)state;
    pcre2_code *re;
    bool jit;
    err_t e = ERR_INIT;
    assert_int_equal(tok_regex_compile("^\\s$", false, "test", &re, &jit, &e), 0);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    assert_true(pcre2_match(re, (PCRE2_SPTR) "\xC2\x85", 2, 0, 0, md, NULL) > 0);
    assert_true(pcre2_match(re, (PCRE2_SPTR) "\xE3\x80\x80", 3, 0, 0, md, NULL) > 0);
    assert_int_equal(pcre2_match(re, (PCRE2_SPTR) "\xE1\xA0\x8E", 3, 0, 0, md, NULL),
                     PCRE2_ERROR_NOMATCH);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
}

/* ---- trainer ------------------------------------------------------------------------- */

static cJSON *train_doc(const char *text, long vocab, long min_freq)
{
    char *dir = test_mkdtemp();
    char path[4096];
    snprintf(path, sizeof path, "%s/t.json", dir);
    tok_train_opts_t o = {vocab, min_freq};
    err_t e = ERR_INIT;
    size_t len = strlen(text);
    if (tok_train(&text, &len, 1, &o, path, &e))
        fail_msg("%s", e.msg);
    char *s;
    size_t n;
    assert_int_equal(fs_read_all(path, 1 << 26, &s, &n, &e), 0);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    free(s);
    test_rmtree(dir);
    free(dir);
    return j;
}

static const char *merge_str(const cJSON *doc_, int i)
{
    static char buf[4][64];
    const cJSON *m = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(doc_, "model"), "merges"), i);
    char *b = buf[i % 4];
    snprintf(b, 64, "%s %s", cJSON_GetArrayItem(m, 0)->valuestring, cJSON_GetArrayItem(m, 1)->valuestring);
    return b;
}

/* All pairs of "abcd" occur once: the tie goes to the smaller left id, so (a,b) first,
 * then (c,d) (99 < 256, the id of "ab"), then (ab,cd). */
static void trainer_breaks_ties_by_smaller_ids(void **state)
{
    (void)state;
    cJSON *j = train_doc("abcd", 259 + 3, 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges")), 3);
    assert_string_equal(merge_str(j, 0), "a b");
    assert_string_equal(merge_str(j, 1), "c d");
    assert_string_equal(merge_str(j, 2), "ab cd");
    const cJSON *added = cJSON_GetObjectItem(j, "added_tokens");
    assert_int_equal(cJSON_GetArrayItem(added, 0)->child->valueint, 259);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(added, 2), "content")->valuestring,
                        "<|im_end|>");
    cJSON_Delete(j);
}

static void trainer_merges_the_most_frequent_pair_first(void **state)
{
    (void)state;
    cJSON *j = train_doc("xy xy xy ab ab", 260, 2);
    /* Pieces "xy", " xy" x2, " ab" x2: (x,y) occurs 3 times, the others twice. */
    assert_string_equal(merge_str(j, 0), "x y");
    cJSON_Delete(j);
}

static void trainer_never_learns_across_special_tokens(void **state)
{
    (void)state;
    cJSON *j = train_doc("<|im_end|><|im_end|><|im_end|>", 300, 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges")), 0);
    cJSON_Delete(j);
}

static void trainer_stops_at_min_frequency(void **state)
{
    (void)state;
    cJSON *j = train_doc("ab ab cd", 1000, 2);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model"), "merges"));
    /* Pieces "ab", " ab", " cd": only (a,b) occurs twice. */
    assert_int_equal(n, 1);
    assert_string_equal(merge_str(j, 0), "a b");
    cJSON_Delete(j);
}

static void trained_tokenizer_reaches_the_requested_size(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char path[4096];
    snprintf(path, sizeof path, "%s/t.json", dir);
    /* Words of pseudo-random letters from a small alphabet: plenty of distinct pairs. */
    char *text = malloc(200000);
    size_t k = 0;
    uint32_t x = 12345;
    for (int i = 0; i < 20000; i++) {
        int len = 1 + (int)(x >> 29);
        for (int j = 0; j < len; j++) {
            x = x * 1664525u + 1013904223u;
            text[k++] = "etaoinshrdlu"[(x >> 24) % 12];
        }
        text[k++] = i % 17 ? ' ' : '\n';
    }
    tok_train_opts_t o = {400, 2};
    err_t e = ERR_INIT;
    const char *tp = text;
    assert_int_equal(tok_train(&tp, &k, 1, &o, path, &e), 0);
    tok_t *t;
    assert_int_equal(tok_load(path, &t, &e), 0);
    assert_int_equal(tok_vocab_size(t), 400);
    assert_int_equal(tok_token_id(t, "<|im_end|>"), 399);
    assert_int_equal(tok_token_id(t, "<|endoftext|>"), 397);
    /* Encoding then decoding gives the text back. */
    tok_ids_t ids = {0};
    assert_int_equal(tok_encode(t, NULL, text, k, &ids, &e), 0);
    assert_true(ids.n < k * 9 / 10); /* the merges are used */
    char *back;
    size_t bn;
    assert_int_equal(tok_decode(t, ids.ids, ids.n, false, &back, &bn, &e), 0);
    assert_int_equal(bn, k);
    assert_memory_equal(back, text, k);
    free(back);
    tok_ids_free(&ids);
    tok_free(t);
    free(text);
    test_rmtree(dir);
    free(dir);
}

static void trainer_refuses_too_small_vocabulary(void **state)
{
    (void)state;
    const char *text = "abc";
    size_t len = 3;
    tok_train_opts_t o = {258, 2};
    err_t e = ERR_INIT;
    assert_int_equal(tok_train(&text, &len, 1, &o, "/nonexistent/x.json", &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "vocab size 258"));
}

/* ---- the command --------------------------------------------------------------------- */

static void cli_encodes_text_and_decodes_ids(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --text 'a<|im_end|>'"), 0);
    assert_string_equal(out, "{\"ids\": [97, 599]}\n");
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --decode --ids 104,105,10,599"), 0);
    assert_string_equal(out, "{\"text\": \"hi\\n<|im_end|>\"}\n");
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --decode --skip-special --ids 598,104"), 0);
    assert_string_equal(out, "{\"text\": \"h\"}\n");
    free(out);
}

static void cli_jsonl_writes_one_line_per_input_line(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char in[4096], outp[4096], dec[4096];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    snprintf(outp, sizeof outp, "%s/out.jsonl", dir);
    snprintf(dec, sizeof dec, "%s/dec.jsonl", dir);
    const char *lines = "{\"text\": \"a\"}\n\n{\"text\": \"\\u00e9\"}\n";
    test_write_file(in, lines, strlen(lines));
    char *out;
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --jsonl %s --out %s", in, outp), 0);
    free(out);
    char *got;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(outp, 1 << 20, &got, &n, &e), 0);
    assert_string_equal(got, "{\"ids\": [97]}\n{\"ids\": [262]}\n"); /* 262: "é" */
    free(got);
    /* And back. */
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --decode --jsonl %s --out %s", outp, dec), 0);
    free(out);
    assert_int_equal(fs_read_all(dec, 1 << 20, &got, &n, &e), 0);
    assert_string_equal(got, "{\"text\": \"a\"}\n{\"text\": \"\xC3\xA9\"}\n");
    free(got);
    test_rmtree(dir);
    free(dir);
}

static void cli_chat_wraps_text_as_user_turn(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --chat --text hi"), 0);
    assert_non_null(strstr(out, "{\"ids\": [598, "));
    assert_non_null(strstr(out, "599, 10, 598, "));
    free(out);
    char *dir = test_mkdtemp();
    char in[4096];
    snprintf(in, sizeof in, "%s/chat.jsonl", dir);
    const char *line = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], "
                       "\"add_generation_prompt\": false}\n";
    test_write_file(in, line, strlen(line));
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --chat --jsonl %s", in), 0);
    assert_non_null(strstr(out, ", 599, 10]}"));
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void cli_bad_input_exits_2_naming_the_problem(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --text $(printf 'a\\377b')"), 2);
    assert_non_null(strstr(out, "not valid UTF-8 at byte 1"));
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer /nonexistent/tok.json --text a"), 2);
    assert_non_null(strstr(out, "/nonexistent/tok.json"));
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL), 2);
    assert_non_null(strstr(out, "exactly one of"));
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --decode --ids 1,x"), 2);
    assert_non_null(strstr(out, "--ids"));
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --decode --ids 100000"), 2);
    assert_non_null(strstr(out, "ids[0] = 100000"));
    free(out);
    char *dir = test_mkdtemp();
    char in[4096];
    snprintf(in, sizeof in, "%s/in.jsonl", dir);
    const char *lines = "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n";
    test_write_file(in, lines, strlen(lines));
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --jsonl %s", in), 2);
    assert_non_null(strstr(out, "in.jsonl:2: field \"text\""));
    free(out);
    lines = "{\"text\": \"a\\u0000b\"}\n";
    test_write_file(in, lines, strlen(lines));
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --jsonl %s", in), 2);
    assert_non_null(strstr(out, "\\u0000"));
    free(out);
    /* a raw NUL byte in the text was cut there: "a<NUL>b" became the one token "a" */
    const char raw[] = "{\"text\": \"ok\"}\n{\"text\": \"a\0b\"}\n";
    test_write_file(in, raw, sizeof raw - 1);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer " SMALL " --jsonl %s", in), 2);
    if (!strstr(out, "in.jsonl:2: line 1, column 12: a NUL byte"))
        fail_msg("expected the NUL byte named with its line, got: %s", out);
    assert_null(strstr(out, "{\"ids\": [97]}"));
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void cli_train_writes_a_loadable_tokenizer(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char corpus[4096], outp[4096];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", dir);
    snprintf(outp, sizeof outp, "%s/tok.json", dir);
    const char *text = "low lower lowest newer newest wider widest low low lower";
    test_write_file(corpus, text, strlen(text));
    char *out;
    assert_int_equal(test_cli(&out, "tokenize train --corpus %s --vocab-size 270 --out %s", corpus, outp), 0);
    free(out);
    assert_int_equal(test_cli(&out, "tokenize --tokenizer %s --text ' lowest'", outp), 0);
    assert_non_null(strstr(out, "{\"ids\": ["));
    free(out);
    assert_int_equal(test_cli(&out, "tokenize train --corpus %s --vocab-size 10 --out %s", corpus, outp), 2);
    assert_non_null(strstr(out, "--vocab-size"));
    free(out);
    assert_int_equal(test_cli(&out, "tokenize train --help"), 0);
    assert_non_null(strstr(out, "--min-frequency"));
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* An empty corpus (an empty file, a .jsonl of blank lines or empty texts) has nothing to
 * learn: exit 2 naming the corpus, and no tokenizer written. */
static void cli_train_refuses_an_empty_corpus(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char corpus[4096], jl[4096], outp[4096];
    snprintf(corpus, sizeof corpus, "%s/empty.txt", dir);
    snprintf(jl, sizeof jl, "%s/blank.jsonl", dir);
    snprintf(outp, sizeof outp, "%s/tok.json", dir);
    {
        test_write_file(corpus, "", 0);
        char *out;
        assert_int_equal(test_cli(&out, "tokenize train --corpus %s --vocab-size 300 --out %s",
                                  corpus, outp), 2);
        if (!strstr(out, "empty.txt: the corpus holds no text to learn from"))
            fail_msg("expected the empty corpus named, got: %s", out);
        free(out);
        assert_false(fs_exists(outp));
    }
    const char *lines[] = {"\n\n", "{\"text\": \"\"}\n"};
    for (int k = 0; k < 2; k++) {
        test_write_file(jl, lines[k], strlen(lines[k]));
        char *out;
        assert_int_equal(test_cli(&out, "tokenize train --corpus %s --vocab-size 300 --out %s",
                                  jl, outp), 2);
        if (!strstr(out, "blank.jsonl: the corpus holds no text"))
            fail_msg("expected the empty corpus named, got: %s", out);
        free(out);
        assert_false(fs_exists(outp));
    }
    /* a NUL byte in a .jsonl line is named, not the end of the corpus */
    const char nul[] = "{\"text\": \"low lower\"}\n\0{\"text\": \"x\"}\n";
    test_write_file(jl, nul, sizeof nul - 1);
    char *out;
    assert_int_equal(test_cli(&out, "tokenize train --corpus %s --vocab-size 300 --out %s", jl,
                              outp), 2);
    if (!strstr(out, "blank.jsonl:2: line 1, column 1: a NUL byte"))
        fail_msg("expected the NUL line named, got: %s", out);
    free(out);
    assert_false(fs_exists(outp));
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(byte_table_is_gpt2s_bytes_to_unicode),
        cmocka_unit_test(utf8_check_finds_first_invalid_byte),
        cmocka_unit_test(special_tokens_in_text_become_their_ids),
        cmocka_unit_test(special_tokens_are_matched_before_normalisation),
        cmocka_unit_test(nfc_makes_decomposed_and_composed_text_equal),
        cmocka_unit_test(invalid_utf8_is_refused_with_its_offset),
        cmocka_unit_test(workspace_cache_does_not_change_ids),
        cmocka_unit_test(empty_text_gives_no_ids),
        cmocka_unit_test(merges_apply_by_rank_not_position),
        cmocka_unit_test(bytes_missing_from_vocab_are_dropped),
        cmocka_unit_test(added_token_ids_follow_hugging_faces_rule),
        cmocka_unit_test(decode_joins_bytes_then_repairs_utf8),
        cmocka_unit_test(decode_skip_special_leaves_special_tokens_out),
        cmocka_unit_test(decode_refuses_unknown_id),
        cmocka_unit_test(chatml_renders_qwens_template),
        cmocka_unit_test(chat_encoding_uses_special_token_ids),
        cmocka_unit_test(wordpiece_model_is_refused),
        cmocka_unit_test(merge_naming_unknown_token_is_refused),
        cmocka_unit_test(malformed_json_names_line_and_column),
        cmocka_unit_test(tokenizer_file_with_invalid_utf8_is_refused),
        cmocka_unit_test(unsupported_pipeline_steps_are_refused),
        cmocka_unit_test(split_patterns_without_faithful_translation_are_refused),
        cmocka_unit_test(split_regex_whitespace_is_onigurumas),
        cmocka_unit_test(trainer_breaks_ties_by_smaller_ids),
        cmocka_unit_test(trainer_merges_the_most_frequent_pair_first),
        cmocka_unit_test(trainer_never_learns_across_special_tokens),
        cmocka_unit_test(trainer_stops_at_min_frequency),
        cmocka_unit_test(trained_tokenizer_reaches_the_requested_size),
        cmocka_unit_test(trainer_refuses_too_small_vocabulary),
        cmocka_unit_test(cli_encodes_text_and_decodes_ids),
        cmocka_unit_test(cli_jsonl_writes_one_line_per_input_line),
        cmocka_unit_test(cli_chat_wraps_text_as_user_turn),
        cmocka_unit_test(cli_bad_input_exits_2_naming_the_problem),
        cmocka_unit_test(cli_train_writes_a_loadable_tokenizer),
        cmocka_unit_test(cli_train_refuses_an_empty_corpus),
        cmocka_unit_test(empty_vocabulary_is_refused),
        cmocka_unit_test(repeated_key_in_the_file_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
