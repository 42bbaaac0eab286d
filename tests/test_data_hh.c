/* Tests for src/data/hh and src/data/split: the HH-RLHF reader (plain and gzip, what it
 * rejects and why), the seeded draw with its over-long rule, prompt-disjoint splits and the
 * split record. Fixture: tests/fixtures/data/small.jsonl (its README lists the cases);
 * shared data: ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/hh.h"
#include "data/split.h"
#include "support/testutil.h"
#include "util/fs.h"

#define SMALL "tests/fixtures/data/small.jsonl"
#define HH_TEST "data/hh-rlhf/harmless-base-test.jsonl.gz"

/* ---- helpers --------------------------------------------------------------------------- */

static void gzip_file(const char *src, const char *dst)
{
    char *text;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(src, 1 << 26, &text, &n, &e), 0);
    gzFile gz = gzopen(dst, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, text, (unsigned)n), (int)n);
    assert_int_equal(gzclose(gz), Z_OK);
    free(text);
}

static void gunzip_file(const char *src, const char *dst)
{
    gzFile gz = gzopen(src, "rb");
    assert_non_null(gz);
    FILE *f = fopen(dst, "wb");
    assert_non_null(f);
    char buf[1 << 16];
    int k;
    while ((k = gzread(gz, buf, sizeof buf)) > 0)
        assert_int_equal(fwrite(buf, 1, (size_t)k, f), (size_t)k);
    assert_int_equal(k, 0);
    gzclose(gz);
    assert_int_equal(fclose(f), 0);
}

static void read_ok(const char *path, bool skip_bad, data_hh_t *h)
{
    err_t e = ERR_INIT;
    data_hh_opts_t o = {.skip_bad = skip_bad};
    int rc = data_hh_read(path, &o, h, &e);
    if (rc)
        fail_msg("data_hh_read(%s): expected success, got %d: %s", path, rc, e.msg);
}

static void assert_lines(const data_lines_t *l, const size_t *want, size_t n, const char *what)
{
    if (l->n != n)
        fail_msg("%s: expected %zu lines, got %zu", what, n, l->n);
    for (size_t i = 0; i < n; i++)
        if (l->v[i] != want[i])
            fail_msg("%s[%zu]: expected line %zu, got %zu", what, i, want[i], l->v[i]);
}

static void assert_same_pairs(const data_hh_t *a, const data_hh_t *b)
{
    assert_int_equal(a->npairs, b->npairs);
    for (size_t i = 0; i < a->npairs; i++) {
        assert_int_equal(a->pairs[i].line, b->pairs[i].line);
        assert_string_equal(a->pairs[i].prompt, b->pairs[i].prompt);
        assert_string_equal(a->pairs[i].chosen, b->pairs[i].chosen);
        assert_string_equal(a->pairs[i].rejected, b->pairs[i].rejected);
    }
}

static void assert_same_record(const data_split_record_t *a, const data_split_record_t *b)
{
    assert_int_equal(a->seed, b->seed);
    assert_int_equal(a->source_bytes, b->source_bytes);
    assert_int_equal(a->source_crc32, b->source_crc32);
    assert_int_equal(a->pairs_delivered, b->pairs_delivered);
    assert_int_equal(a->examined, b->examined);
    for (int d = 0; d < DATA_NDROPS; d++)
        assert_lines(&a->dropped[d], b->dropped[d].v, b->dropped[d].n, data_drop_name(d));
    for (int s = 0; s < DATA_NSPLITS; s++)
        assert_lines(&a->split[s], b->split[s].v, b->split[s].n, data_split_name(s));
}

/* ---- the reader -------------------------------------------------------------------------- */

static void hh_reads_harmless_test_file(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, HH_TEST);
    data_hh_t h;
    read_ok(path, false, &h);
    assert_true(h.gzip);
    assert_int_equal(h.lines, 2312);
    assert_int_equal(h.records, 2312);
    /* Five lines of the file itself end chosen and rejected after different turns. */
    static const size_t mismatch[] = {1255, 1689, 1951, 1953, 2037};
    assert_lines(&h.rejected[DATA_HH_PROMPT_MISMATCH], mismatch, 5, "prompt_mismatch");
    assert_int_equal(h.rejected[DATA_HH_MALFORMED].n, 0);
    assert_int_equal(h.rejected[DATA_HH_NO_ASSISTANT].n, 0);
    assert_int_equal(h.npairs, 2312 - 5);
    size_t differ = 0;
    for (size_t i = 0; i < h.npairs; i++) {
        const data_pair_t *p = &h.pairs[i];
        size_t n = strlen(p->prompt);
        assert_true(n >= 12);
        assert_string_equal(p->prompt + n - 12, "\n\nAssistant:");
        assert_memory_equal(p->prompt, "\n\nHuman:", 8);
        differ += strcmp(p->chosen, p->rejected) != 0;
    }
    assert_int_equal(differ, h.npairs); /* identical ones are rejected, and there are none */
    /* Line 1 by hand: the prompt ends at the last assistant tag, one space stripped. */
    assert_int_equal(h.pairs[0].line, 1);
    const char *tail = "\n\nHuman: okay some of these do not have anything to do with pens"
                       "\n\nAssistant:";
    const char *pr = h.pairs[0].prompt;
    assert_string_equal(pr + strlen(pr) - strlen(tail), tail);
    assert_memory_equal(pr, "\n\nHuman: what are some pranks with a pen i can do?", 50);
    assert_memory_equal(h.pairs[0].chosen, "No, sorry!  All of these involve a pen", 38);
    data_hh_free(&h);
}

static void hh_gzip_and_plain_read_the_same_detected_by_magic(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, HH_TEST);
    char *dir = test_mkdtemp();
    /* Misleading names on purpose: compression comes from the bytes, not the name. */
    char *plain = fs_join(dir, "plain.jsonl.gz");
    char *packed = fs_join(dir, "packed.jsonl");
    gunzip_file(path, plain);
    gzip_file(plain, packed);
    data_hh_t a, b, c;
    read_ok(path, false, &a);
    read_ok(plain, false, &b);
    read_ok(packed, false, &c);
    assert_false(b.gzip);
    assert_true(c.gzip);
    assert_same_pairs(&a, &b);
    assert_same_pairs(&a, &c);
    assert_lines(&b.rejected[DATA_HH_PROMPT_MISMATCH], a.rejected[DATA_HH_PROMPT_MISMATCH].v,
                 a.rejected[DATA_HH_PROMPT_MISMATCH].n, "plain prompt_mismatch");
    /* Same draw and splits from either form. */
    data_select_opts_t o;
    data_select_opts_default(&o);
    data_split_record_t ra, rb;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&a, &o, &ra, &e), 0);
    assert_int_equal(data_split_make(&b, &o, &rb, &e), 0);
    for (int s = 0; s < DATA_NSPLITS; s++)
        assert_lines(&rb.split[s], ra.split[s].v, ra.split[s].n, data_split_name(s));
    data_split_free(&ra);
    data_split_free(&rb);
    data_hh_free(&a);
    data_hh_free(&b);
    data_hh_free(&c);
    free(plain);
    free(packed);
    test_rmtree(dir);
    free(dir);
}

static void hh_malformed_line_fails_naming_file_and_line(void **state)
{
    (void)state;
    data_hh_t h;
    err_t e = ERR_INIT;
    assert_int_equal(data_hh_read(SMALL, NULL, &h, &e), ERR_INPUT);
    if (!strstr(e.msg, SMALL ": line 3: invalid JSON"))
        fail_msg("expected the message to name " SMALL " and line 3, got: %s", e.msg);
    assert_int_equal(h.npairs, 0);
    data_hh_free(&h);
}

static void hh_skip_bad_counts_every_reason_with_lines(void **state)
{
    (void)state;
    data_hh_t h;
    read_ok(SMALL, true, &h);
    assert_false(h.gzip);
    assert_int_equal(h.lines, 11);
    assert_int_equal(h.records, 10); /* line 2 is blank */
    static const size_t bad[] = {3, 8, 9}, mism[] = {4}, noa[] = {5}, same[] = {6};
    assert_lines(&h.rejected[DATA_HH_MALFORMED], bad, 3, "malformed");
    assert_lines(&h.rejected[DATA_HH_PROMPT_MISMATCH], mism, 1, "prompt_mismatch");
    assert_lines(&h.rejected[DATA_HH_NO_ASSISTANT], noa, 1, "no_assistant");
    assert_lines(&h.rejected[DATA_HH_IDENTICAL], same, 1, "identical");
    assert_int_equal(h.npairs, 4);
    static const size_t good[] = {1, 7, 10, 11};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(h.pairs[i].line, good[i]);
    data_hh_free(&h);
}

static void hh_splits_at_last_tag_and_strips_one_space(void **state)
{
    (void)state;
    data_hh_t h;
    read_ok(SMALL, true, &h);
    const data_pair_t *p = data_hh_find_line(&h, 7);
    assert_non_null(p);
    assert_string_equal(p->prompt, "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?"
                                   "\n\nAssistant:");
    assert_string_equal(p->chosen, " 6, of course."); /* two spaces in the file, one kept */
    assert_string_equal(p->rejected, "Seven.");
    p = data_hh_find_line(&h, 10); /* CR LF line end */
    assert_non_null(p);
    assert_string_equal(p->rejected, "Lyon.");
    p = data_hh_find_line(&h, 11); /* no final newline, UTF-8 text */
    assert_non_null(p);
    assert_string_equal(p->chosen, "こんにちは — konnichiwa.");
    assert_null(data_hh_find_line(&h, 4));
    data_hh_free(&h);
}

static void hh_gzip_of_fixture_reads_the_same(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *gz = fs_join(dir, "small.jsonl.gz");
    gzip_file(SMALL, gz);
    data_hh_t a, b;
    read_ok(SMALL, true, &a);
    read_ok(gz, true, &b);
    assert_true(b.gzip);
    assert_same_pairs(&a, &b);
    for (int r = 0; r < DATA_HH_NREASONS; r++)
        assert_lines(&b.rejected[r], a.rejected[r].v, a.rejected[r].n, data_hh_reason_name(r));
    data_hh_free(&a);
    data_hh_free(&b);
    free(gz);
    test_rmtree(dir);
    free(dir);
}

/* Lines that decompress from a damaged gzip file before zlib gives up. */
static size_t readable_lines(const char *path)
{
    gzFile gz = gzopen(path, "rb");
    assert_non_null(gz);
    char buf[4096];
    int k;
    size_t nl = 0;
    while ((k = gzread(gz, buf, sizeof buf)) > 0)
        for (int i = 0; i < k; i++)
            nl += buf[i] == '\n';
    gzclose(gz);
    return nl;
}

static void hh_truncated_gzip_names_the_line_where_it_ends(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, HH_TEST);
    char *dir = test_mkdtemp();
    char *cut = fs_join(dir, "cut.jsonl.gz");
    char *bytes;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(path, 1 << 24, &bytes, &n, &e), 0);
    test_write_file(cut, bytes, n / 2);
    /* the text decompresses up to a partial line: that line is where the file breaks,
     * not line 1 (zlib notices the end while reading ahead) */
    char want[64];
    snprintf(want, sizeof want, ": line %zu: the gzip data ends early", readable_lines(cut) + 1);
    data_hh_t h;
    for (int skip = 0; skip < 2; skip++) {
        data_hh_opts_t o = {.skip_bad = skip};
        err_clear(&e);
        assert_int_equal(data_hh_read(cut, &o, &h, &e), ERR_INPUT);
        if (!strstr(e.msg, cut) || !strstr(e.msg, want) || !strstr(e.msg, "truncated"))
            fail_msg("expected \"%s%s\" ... truncated, got: %s", cut, want, e.msg);
        assert_int_equal(h.npairs, 0);
    }
    free(bytes);
    free(cut);
    test_rmtree(dir);
    free(dir);
}

/* 3000 distinct pairs, gzipped, with bytes flipped in the middle or in the header. */
static void hh_damaged_gzip_says_damaged_not_invalid_json(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *good = fs_join(dir, "good.jsonl.gz"), *bad = fs_join(dir, "bad.jsonl.gz");
    gzFile gz = gzopen(good, "wb");
    assert_non_null(gz);
    for (int i = 0; i < 3000; i++)
        gzprintf(gz, "{\"chosen\": \"\\n\\nHuman: question %d\\n\\nAssistant: yes %d %d\", "
                 "\"rejected\": \"\\n\\nHuman: question %d\\n\\nAssistant: no\"}\n", i, i * 7919 % 104729,
                 i * i, i);
    assert_int_equal(gzclose(gz), Z_OK);
    data_hh_t h;
    read_ok(good, false, &h);
    assert_int_equal(h.npairs, 3000);
    data_hh_free(&h);
    char *bytes;
    size_t n;
    err_t e = ERR_INIT;
    assert_int_equal(fs_read_all(good, 1 << 24, &bytes, &n, &e), 0);
    const size_t at[] = {n / 2, 12}; /* the deflate data; the first block's header */
    for (int k = 0; k < 2; k++) {
        char *b = malloc(n);
        memcpy(b, bytes, n);
        for (size_t i = at[k]; i < at[k] + 16 && i < n; i++)
            b[i] ^= 0x5a;
        test_write_file(bad, b, n);
        free(b);
        for (int skip = 0; skip < 2; skip++) {
            data_hh_opts_t o = {.skip_bad = skip};
            err_clear(&e);
            assert_int_equal(data_hh_read(bad, &o, &h, &e), ERR_INPUT);
            if (!strstr(e.msg, bad) || !strstr(e.msg, "the gzip file is damaged"))
                fail_msg("flip at byte %zu%s: expected the damage named, got: %s", at[k],
                         skip ? " (skip_bad)" : "", e.msg);
        }
    }
    free(bytes);
    free(good);
    free(bad);
    test_rmtree(dir);
    free(dir);
}

/* A line starting with NUL bytes is a malformed record at its own line (it used to vanish
 * and shift every later line number down by one); \u0000 in a text is malformed too
 * (cJSON cut the texts there, and "x\u0000yes" / "x\u0000no" compared equal). */
static void hh_nul_bytes_are_malformed_at_their_line(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "nul.jsonl");
    const char l1[] = "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: one\", "
                      "\"rejected\": \"\\n\\nHuman: a\\n\\nAssistant: two\"}\n";
    const char l3[] = "{\"chosen\": \"\\n\\nHuman: b\\n\\nAssistant: x\\u0000yes\", "
                      "\"rejected\": \"\\n\\nHuman: b\\n\\nAssistant: x\\u0000no\"}\n";
    const char l4[] = "{\"chosen\": \"\\n\\nHuman: c\\n\\nAssistant: three\", "
                      "\"rejected\": \"\\n\\nHuman: c\\n\\nAssistant: four\"}\n";
    char text[1024];
    size_t k = 0;
    memcpy(text + k, l1, sizeof l1 - 1), k += sizeof l1 - 1;
    text[k++] = '\0', text[k++] = '\0';          /* line 2: NUL NUL, then a good pair */
    memcpy(text + k, l4, sizeof l4 - 1), k += sizeof l4 - 1;
    memcpy(text + k, l3, sizeof l3 - 1), k += sizeof l3 - 1;
    memcpy(text + k, l4, sizeof l4 - 1), k += sizeof l4 - 1;
    test_write_file(path, text, k);
    data_hh_t h;
    err_t e = ERR_INIT;
    assert_int_equal(data_hh_read(path, NULL, &h, &e), ERR_INPUT);
    if (!strstr(e.msg, ": line 2: a NUL byte at column 1"))
        fail_msg("expected line 2 named as holding a NUL byte, got: %s", e.msg);
    read_ok(path, true, &h);
    assert_int_equal(h.lines, 4);
    assert_int_equal(h.records, 4);
    static const size_t bad[] = {2, 3}, good[] = {1, 4};
    assert_lines(&h.rejected[DATA_HH_MALFORMED], bad, 2, "malformed");
    assert_int_equal(h.rejected[DATA_HH_IDENTICAL].n, 0);
    assert_int_equal(h.npairs, 2);
    for (size_t i = 0; i < 2; i++)
        assert_int_equal(h.pairs[i].line, good[i]);
    assert_string_equal(h.pairs[1].chosen, "three");
    data_hh_free(&h);
    /* the escape alone, strictly: named with its line and column */
    test_write_file(path, l3, sizeof l3 - 1);
    err_clear(&e);
    assert_int_equal(data_hh_read(path, NULL, &h, &e), ERR_INPUT);
    if (!strstr(e.msg, ": line 1: a \\u0000 escape at column"))
        fail_msg("expected the \\u0000 escape named, got: %s", e.msg);
    /* an escaped backslash before u0000 is text, not NUL */
    const char ok[] = "{\"chosen\": \"\\n\\nHuman: d\\n\\nAssistant: C:\\\\u0000\", "
                      "\"rejected\": \"\\n\\nHuman: d\\n\\nAssistant: no\"}\n";
    test_write_file(path, ok, sizeof ok - 1);
    read_ok(path, false, &h);
    assert_string_equal(h.pairs[0].chosen, "C:\\u0000");
    data_hh_free(&h);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void hh_repeated_key_is_malformed(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "dup.jsonl");
    const char l[] = "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: one\", \"rejected\": "
                     "\"\\n\\nHuman: a\\n\\nAssistant: two\", \"chosen\": \"\\n\\nHuman: a\\n\\n"
                     "Assistant: three\"}\n";
    test_write_file(path, l, sizeof l - 1);
    data_hh_t h;
    err_t e = ERR_INIT;
    assert_int_equal(data_hh_read(path, NULL, &h, &e), ERR_INPUT);
    if (!strstr(e.msg, ": line 1: key \"chosen\" appears twice"))
        fail_msg("expected the repeated key named, got: %s", e.msg);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void hh_invalid_utf8_is_malformed(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "bad.jsonl");
    const char text[] = "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: b\\xff\", "
                        "\"rejected\": \"\\n\\nHuman: a\\n\\nAssistant: c\"}\n";
    char raw[sizeof text];
    /* The escape above is for C; put a raw 0xFF byte into the JSON string. */
    size_t k = 0;
    for (const char *p = text; *p; p++) {
        if (!strncmp(p, "\\xff", 4)) {
            raw[k++] = (char)0xff;
            p += 3;
        } else {
            raw[k++] = *p;
        }
    }
    test_write_file(path, raw, k);
    data_hh_t h;
    err_t e = ERR_INIT;
    assert_int_equal(data_hh_read(path, NULL, &h, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "line 1: not valid UTF-8"));
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void hh_long_lines_read_whole_and_limit_applies(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "long.jsonl");
    size_t big = 300000; /* several times the reader's first buffer */
    char *resp = malloc(big + 1);
    memset(resp, 'x', big);
    resp[big] = '\0';
    size_t cap = 2 * big + 256;
    char *line = malloc(cap);
    int n = snprintf(line, cap,
                     "{\"chosen\": \"\\n\\nHuman: q\\n\\nAssistant: %s\", \"rejected\": "
                     "\"\\n\\nHuman: q\\n\\nAssistant: no\"}\n",
                     resp);
    test_write_file(path, line, (size_t)n);
    data_hh_t h;
    read_ok(path, false, &h);
    assert_int_equal(h.npairs, 1);
    assert_int_equal(strlen(h.pairs[0].chosen), big);
    data_hh_free(&h);
    err_t e = ERR_INIT;
    data_hh_opts_t o = {.max_line = 1000};
    assert_int_equal(data_hh_read(path, &o, &h, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "line 1: longer than 1000 bytes"));
    free(resp);
    free(line);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void hh_missing_file_names_it(void **state)
{
    (void)state;
    data_hh_t h;
    err_t e = ERR_INIT;
    assert_int_equal(data_hh_read("/nonexistent/hh.jsonl.gz", NULL, &h, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "/nonexistent/hh.jsonl.gz"));
}

/* ---- the draw and the splits ------------------------------------------------------------ */

static void split_is_fixed_by_seed_and_changes_with_it(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, HH_TEST);
    data_hh_t h;
    read_ok(path, false, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    data_split_record_t a, b, c;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &a, &e), 0);
    assert_int_equal(data_split_make(&h, &o, &b, &e), 0);
    assert_same_record(&a, &b);
    /* Pinned: the Philox Fisher-Yates must give these lines on every machine. */
    static const size_t first[] = {1978, 284, 177, 896, 1901};
    data_lines_t head = {a.split[DATA_SPLIT_RM_TRAIN].v, 5, 5};
    assert_lines(&head, first, 5, "rm_train head, seed 1234");
    o.seed = 1235;
    assert_int_equal(data_split_make(&h, &o, &c, &e), 0);
    size_t same = 0;
    for (size_t i = 0; i < c.split[DATA_SPLIT_RM_TRAIN].n; i++)
        same += c.split[DATA_SPLIT_RM_TRAIN].v[i] == a.split[DATA_SPLIT_RM_TRAIN].v[i];
    if (same > 10)
        fail_msg("seeds 1234 and 1235 put %zu rm_train pairs in the same place", same);
    data_split_free(&a);
    data_split_free(&b);
    data_split_free(&c);
    data_hh_free(&h);
}

static void split_sets_are_disjoint_in_lines_and_prompts(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, HH_TEST);
    data_hh_t h;
    read_ok(path, false, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &r, &e), 0);
    assert_int_equal(r.pairs_delivered, 1000);
    static const size_t want[] = {350, 100, 250, 200, 100};
    char *owner = calloc(h.lines + 1, 1);
    size_t total = 0;
    for (int s = 0; s < DATA_NSPLITS; s++) {
        const data_lines_t *l = &r.split[s];
        /* within one prompt group of the target; this file has no repeated prompt */
        assert_int_equal(l->n, want[s]);
        total += l->n;
        for (size_t i = 0; i < l->n; i++) {
            if (owner[l->v[i]])
                fail_msg("line %zu is in split %d and %d", l->v[i], owner[l->v[i]] - 1, s);
            owner[l->v[i]] = (char)(s + 1);
            const data_pair_t *p = data_hh_find_line(&h, l->v[i]);
            assert_non_null(p);
            /* no prompt text in two splits */
            for (int s2 = 0; s2 < s; s2++)
                for (size_t j = 0; j < r.split[s2].n; j++)
                    if (!strcmp(p->prompt, data_hh_find_line(&h, r.split[s2].v[j])->prompt))
                        fail_msg("prompt of line %zu (%s) is also in %s (line %zu)", l->v[i],
                                 data_split_name(s), data_split_name(s2), r.split[s2].v[j]);
        }
    }
    assert_int_equal(total, 1000);
    free(owner);
    data_split_free(&r);
    data_hh_free(&h);
}

/* A file of `n` pairs whose prompts repeat every `period` lines. */
static char *write_repeating(const char *dir, size_t n, size_t period)
{
    char *path = fs_join(dir, "rep.jsonl");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fprintf(f,
                "{\"chosen\": \"\\n\\nHuman: question %zu\\n\\nAssistant: good %zu\", "
                "\"rejected\": \"\\n\\nHuman: question %zu\\n\\nAssistant: bad %s\"}\n",
                i % period, i, i % period, i % 7 == 0 ? "word word word word word word" : "");
    assert_int_equal(fclose(f), 0);
    return path;
}

static void split_keeps_identical_prompts_together(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = write_repeating(dir, 300, 40); /* 40 prompts, 7-8 pairs each */
    data_hh_t h;
    read_ok(path, false, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.pairs = 300;
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &r, &e), 0);
    assert_int_equal(r.prompt_groups, 40);
    assert_int_equal(r.largest_prompt_group, 8);
    int where[40];
    for (int q = 0; q < 40; q++)
        where[q] = -1;
    for (int s = 0; s < DATA_NSPLITS; s++) {
        size_t target = (size_t)(o.fractions[s] * 300 + 0.5);
        if (r.split[s].n + 8 < target || r.split[s].n > target + 8)
            fail_msg("%s holds %zu pairs, expected %zu within one group (8)",
                     data_split_name(s), r.split[s].n, target);
        for (size_t i = 0; i < r.split[s].n; i++) {
            int q = (int)((r.split[s].v[i] - 1) % 40);
            if (where[q] >= 0 && where[q] != s)
                fail_msg("prompt %d is in %s and %s", q, data_split_name(where[q]),
                         data_split_name(s));
            where[q] = s;
        }
    }
    data_split_free(&r);
    data_hh_free(&h);
    free(path);
    test_rmtree(dir);
    free(dir);
}

typedef struct counting {
    size_t calls;
} counting_t;

/* A stand-in tokenizer: one token per byte, so limits bite at known places. */
static size_t count_bytes(void *ctx, const char *text)
{
    ((counting_t *)ctx)->calls++;
    return strlen(text);
}

static void split_drops_overlong_and_refills_from_pool(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = write_repeating(dir, 300, 300);
    data_hh_t h;
    read_ok(path, false, &h);
    counting_t cnt = {0};
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.pairs = 200;
    o.max_prompt_tokens = 32;   /* "\n\nHuman: question N\n\nAssistant:" is 30 + digits */
    o.max_response_tokens = 20; /* "bad word word ..." (every 7th line) is 34 bytes */
    o.counter = (data_token_counter_t){count_bytes, &cnt, "bytes"};
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &r, &e), 0);
    assert_true(cnt.calls > 0);
    assert_string_equal(r.token_counter, "bytes");
    /* prompts of 3-digit question numbers (100..299) are 33 bytes: 200 of 300 too long */
    size_t too_long_prompt = 0, too_long_resp = 0;
    for (size_t i = 0; i < r.dropped[DATA_DROP_PROMPT_TOO_LONG].n; i++)
        too_long_prompt += r.dropped[DATA_DROP_PROMPT_TOO_LONG].v[i] >= 101;
    for (size_t i = 0; i < r.dropped[DATA_DROP_RESPONSE_TOO_LONG].n; i++)
        too_long_resp += (r.dropped[DATA_DROP_RESPONSE_TOO_LONG].v[i] - 1) % 7 == 0;
    assert_int_equal(too_long_prompt, 200);
    assert_int_equal(r.dropped[DATA_DROP_PROMPT_TOO_LONG].n, 200);
    assert_int_equal(too_long_resp, r.dropped[DATA_DROP_RESPONSE_TOO_LONG].n);
    assert_int_equal(r.dropped[DATA_DROP_RESPONSE_TOO_LONG].n, 15); /* lines 1,8,..,99 */
    /* what is left (85 pairs) is all delivered, short of the 200 asked for */
    assert_int_equal(r.pairs_requested, 200);
    assert_int_equal(r.pairs_delivered, 85);
    assert_int_equal(r.examined, 300);
    data_split_free(&r);

    /* With room in the pool the walk refills: 60 asked, 60 delivered, none over-long. */
    o.pairs = 60;
    assert_int_equal(data_split_make(&h, &o, &r, &e), 0);
    assert_int_equal(r.pairs_delivered, 60);
    assert_int_equal(r.examined, 60 + r.dropped[0].n + r.dropped[1].n);
    for (int s = 0; s < DATA_NSPLITS; s++)
        for (size_t i = 0; i < r.split[s].n; i++) {
            const data_pair_t *p = data_hh_find_line(&h, r.split[s].v[i]);
            assert_true(strlen(p->prompt) <= 32);
            assert_true(strlen(p->chosen) <= 20 && strlen(p->rejected) <= 20);
        }
    data_split_free(&r);
    data_hh_free(&h);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void split_fractions_must_sum_to_one(void **state)
{
    (void)state;
    data_hh_t h;
    read_ok(SMALL, true, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.fractions[DATA_SPLIT_EVAL] = 0.2;
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &r, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "sum to 1.1"));
    data_hh_free(&h);
}

static void split_record_round_trips_and_serves_pairs(void **state)
{
    (void)state;
    const char *path;
    REQUIRE_SHARED(path, HH_TEST);
    char *dir = test_mkdtemp();
    char *rec_path = fs_join(dir, "split.json");
    data_hh_t h;
    read_ok(path, false, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.seed = 0xfedcba9876543210ull; /* beyond 2^53: the record keeps it exact */
    data_split_record_t a, b;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &a, &e), 0);
    assert_int_equal(data_split_write(rec_path, &a, &e), 0);
    int rc = data_split_read(rec_path, &b, &e);
    if (rc)
        fail_msg("reading back %s: %s", rec_path, e.msg);
    assert_same_record(&a, &b);
    assert_string_equal(b.source_path, path);
    assert_int_equal(b.source_lines, 2312);
    assert_true(b.source_gzip);
    assert_string_equal(b.token_counter, "whitespace_words");
    for (int s = 0; s < DATA_NSPLITS; s++)
        assert_true(b.fractions[s] == a.fractions[s]);
    assert_lines(&b.rejected[DATA_HH_PROMPT_MISMATCH], a.rejected[DATA_HH_PROMPT_MISMATCH].v,
                 5, "prompt_mismatch");
    const data_pair_t **pairs;
    size_t n;
    assert_int_equal(data_split_pairs(&h, &b, DATA_SPLIT_PPO, &pairs, &n, &e), 0);
    assert_int_equal(n, a.split[DATA_SPLIT_PPO].n);
    assert_int_equal(pairs[0]->line, a.split[DATA_SPLIT_PPO].v[0]);
    free(pairs);
    data_split_free(&a);
    data_split_free(&b);
    data_hh_free(&h);
    free(rec_path);
    test_rmtree(dir);
    free(dir);
}

static void split_record_refuses_another_file(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    data_hh_t h, h2;
    read_ok(SMALL, true, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.pairs = 4;
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &r, &e), 0);
    assert_int_equal(r.pairs_delivered, 4);
    char *rep = write_repeating(dir, 20, 20);
    read_ok(rep, false, &h2);
    const data_pair_t **pairs;
    size_t n;
    assert_int_equal(data_split_pairs(&h2, &r, DATA_SPLIT_RM_TRAIN, &pairs, &n, &e), ERR_INPUT);
    assert_non_null(strstr(e.msg, "is not the file the split record was made from"));
    data_split_free(&r);
    data_hh_free(&h);
    data_hh_free(&h2);
    free(rep);
    test_rmtree(dir);
    free(dir);
}

static void split_record_read_rejects_shared_lines(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *rec_path = fs_join(dir, "split.json");
    data_hh_t h;
    read_ok(SMALL, true, &h);
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.fractions[DATA_SPLIT_RM_TRAIN] = 0.5;
    o.fractions[DATA_SPLIT_RM_EVAL] = 0.5;
    o.fractions[DATA_SPLIT_JUDGE_TRAIN] = 0;
    o.fractions[DATA_SPLIT_PPO] = 0;
    o.fractions[DATA_SPLIT_EVAL] = 0;
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_make(&h, &o, &r, &e), 0);
    assert_int_equal(r.split[DATA_SPLIT_RM_TRAIN].n, 2);
    assert_int_equal(r.split[DATA_SPLIT_RM_EVAL].n, 2);
    /* Forge the record: an rm_eval line repeated in rm_train. */
    r.split[DATA_SPLIT_RM_TRAIN].v[0] = r.split[DATA_SPLIT_RM_EVAL].v[0];
    assert_int_equal(data_split_write(rec_path, &r, &e), 0);
    data_split_record_t b;
    assert_int_equal(data_split_read(rec_path, &b, &e), ERR_INPUT);
    if (!strstr(e.msg, "is listed twice"))
        fail_msg("expected a duplicate-line error, got: %s", e.msg);
    data_split_free(&r);
    data_hh_free(&h);
    free(rec_path);
    test_rmtree(dir);
    free(dir);
}

static void cli_data_split_writes_record(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *out;
    int rc = test_cli(&out, "data split --data %s --pairs 3 --out %s", SMALL, dir);
    assert_int_equal(rc, 2); /* malformed lines: strict by default */
    assert_non_null(strstr(out, "line 3"));
    free(out);
    rc = test_cli(&out, "data split --data %s --skip-bad --pairs 3 --seed 7 --out %s", SMALL, dir);
    if (rc)
        fail_msg("expected exit 0, got %d: %s", rc, out);
    assert_non_null(strstr(out, "drew 3 of 3 requested pairs with seed 7"));
    free(out);
    char *rec_path = fs_join(dir, "split.json");
    data_split_record_t r;
    err_t e = ERR_INIT;
    assert_int_equal(data_split_read(rec_path, &r, &e), 0);
    assert_int_equal(r.pairs_delivered, 3);
    assert_true(r.skip_bad);
    assert_int_equal(r.rejected[DATA_HH_MALFORMED].n, 3);
    data_split_free(&r);
    assert_int_equal(test_cli(&out, "data split --help"), 0);
    assert_non_null(strstr(out, "--max-prompt-tokens"));
    free(out);
    assert_int_equal(test_cli(NULL, "data split --out %s", dir), 2);
    free(rec_path);
    test_rmtree(dir);
    free(dir);
}

/* The NUL line through the command: exit 2, the file and line named, no split.json. */
static void cli_data_split_names_a_nul_line(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "nul.jsonl"), *out_dir = fs_join(dir, "out");
    const char l[] = "{\"chosen\": \"\\n\\nHuman: a\\n\\nAssistant: one\", "
                     "\"rejected\": \"\\n\\nHuman: a\\n\\nAssistant: two\"}\n";
    char text[512];
    size_t k = 0;
    memcpy(text, l, sizeof l - 1), k += sizeof l - 1;
    text[k++] = '\0';
    memcpy(text + k, l, sizeof l - 1), k += sizeof l - 1;
    test_write_file(path, text, k);
    char *out;
    int rc = test_cli(&out, "data split --data %s --pairs 1 --out %s", path, out_dir);
    assert_int_equal(rc, 2);
    if (!strstr(out, "nul.jsonl: line 2: a NUL byte at column 1"))
        fail_msg("expected the NUL line named, got: %s", out);
    free(out);
    char *rec = fs_join(out_dir, "split.json");
    assert_false(fs_exists(rec));
    free(rec);
    free(path);
    free(out_dir);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hh_reads_harmless_test_file),
        cmocka_unit_test(hh_gzip_and_plain_read_the_same_detected_by_magic),
        cmocka_unit_test(hh_malformed_line_fails_naming_file_and_line),
        cmocka_unit_test(hh_skip_bad_counts_every_reason_with_lines),
        cmocka_unit_test(hh_splits_at_last_tag_and_strips_one_space),
        cmocka_unit_test(hh_gzip_of_fixture_reads_the_same),
        cmocka_unit_test(hh_truncated_gzip_names_the_line_where_it_ends),
        cmocka_unit_test(hh_damaged_gzip_says_damaged_not_invalid_json),
        cmocka_unit_test(hh_nul_bytes_are_malformed_at_their_line),
        cmocka_unit_test(hh_repeated_key_is_malformed),
        cmocka_unit_test(hh_invalid_utf8_is_malformed),
        cmocka_unit_test(hh_long_lines_read_whole_and_limit_applies),
        cmocka_unit_test(hh_missing_file_names_it),
        cmocka_unit_test(split_is_fixed_by_seed_and_changes_with_it),
        cmocka_unit_test(split_sets_are_disjoint_in_lines_and_prompts),
        cmocka_unit_test(split_keeps_identical_prompts_together),
        cmocka_unit_test(split_drops_overlong_and_refills_from_pool),
        cmocka_unit_test(split_fractions_must_sum_to_one),
        cmocka_unit_test(split_record_round_trips_and_serves_pairs),
        cmocka_unit_test(split_record_refuses_another_file),
        cmocka_unit_test(split_record_read_rejects_shared_lines),
        cmocka_unit_test(cli_data_split_writes_record),
        cmocka_unit_test(cli_data_split_names_a_nul_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
