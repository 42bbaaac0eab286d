/* Tests for src/data/synth: the fixed lists meet the task's spec, the ground-truth scorer
 * on hand-made responses, the best achievable score, the generators (determinism, no
 * ties, 10% flips, grammar), and that synthetic pairs travel through the HH-RLHF reader. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/hh.h"
#include "data/split.h"
#include "data/synth.h"
#include "support/testutil.h"
#include "util/fs.h"
#include "util/rng.h"

#define GARDENING 0 /* topic 0; asserted below */

static int topic_id(const char *name)
{
    for (int t = 0; t < data_synth_ntopics(); t++)
        if (!strcmp(data_synth_topic_name(t), name))
            return t;
    fail_msg("no topic %s", name);
    return -1;
}

static void score(const char *text, int topic, data_synth_score_t *s)
{
    data_synth_score(text, topic, NULL, s);
}

static void assert_score(const char *text, int topic, long long num, long long den)
{
    data_synth_score_t s;
    score(text, topic, &s);
    if (s.num * den != num * s.den || s.den <= 0)
        fail_msg("score of \"%s\": expected %lld/%lld, got %lld/%lld (D=%zu R=%zu L=%zu)", text,
                 num, den, s.num, s.den, s.distinct_topic, s.rude, s.words);
    assert_true(fabs(s.value - (double)num / (double)den) < 1e-15);
}

/* Lowercase ASCII letters only. */
static bool plain_word(const char *w)
{
    if (!*w)
        return false;
    for (; *w; w++)
        if (*w < 'a' || *w > 'z')
            return false;
    return true;
}

/* ---- the lists ------------------------------------------------------------------------ */

static void synth_lists_meet_the_spec(void **state)
{
    (void)state;
    int nt = data_synth_ntopics();
    assert_true(nt >= 20);
    assert_string_equal(data_synth_topic_name(GARDENING), "gardening");
    const char *const *rude;
    size_t nr = data_synth_rude_words(&rude);
    assert_true(nr >= 30);
    /* every word once across all lists, plain lowercase letters, names in no list */
    size_t total = nr;
    for (int t = 0; t < nt; t++) {
        const char *const *w;
        total += data_synth_topic_words(t, &w);
    }
    const char **all = malloc(total * sizeof *all);
    size_t k = 0;
    for (size_t i = 0; i < nr; i++)
        all[k++] = rude[i];
    for (int t = 0; t < nt; t++) {
        const char *const *w;
        size_t n = data_synth_topic_words(t, &w);
        if (n < 30)
            fail_msg("topic %s has %zu words, expected at least 30", data_synth_topic_name(t), n);
        for (size_t i = 0; i < n; i++)
            all[k++] = w[i];
        assert_true(plain_word(data_synth_topic_name(t)));
    }
    for (size_t i = 0; i < total; i++) {
        if (!plain_word(all[i]))
            fail_msg("word \"%s\" is not plain lowercase letters", all[i]);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(all[i], all[j]))
                fail_msg("word \"%s\" is in two lists (or twice in one)", all[i]);
        for (int t = 0; t < nt; t++)
            if (!strcmp(all[i], data_synth_topic_name(t)))
                fail_msg("topic name \"%s\" is also a list word", all[i]);
    }
    for (int t = 0; t < nt; t++)
        for (int u = 0; u < t; u++)
            assert_string_not_equal(data_synth_topic_name(t), data_synth_topic_name(u));
    free(all);
}

static void synth_neutral_texts_hold_no_scored_word(void **state)
{
    (void)state;
    size_t n = data_synth_nneutral();
    assert_true(n >= 40);
    assert_null(data_synth_neutral_text(n));
    for (size_t i = 0; i < n; i++) {
        const char *text = data_synth_neutral_text(i);
        for (int t = -1; t < data_synth_ntopics(); t++) {
            data_synth_score_t s;
            score(text, t, &s);
            if (s.distinct_topic || s.rude)
                fail_msg("neutral text \"%s\" holds %zu words of topic %s and %zu rude words",
                         text, s.distinct_topic, t < 0 ? "-" : data_synth_topic_name(t), s.rude);
        }
        /* nor a topic name, which would make a response look like a prompt */
        if (data_synth_topic_of_prompt(text) >= 0)
            fail_msg("neutral text \"%s\" names a topic", text);
    }
}

/* ---- the scorer -------------------------------------------------------------------------- */

static void synth_score_counts_distinct_topic_words_and_rude_occurrences(void **state)
{
    (void)state;
    /* 20 words: topic words soil, compost, seeds, mulch (soil twice: D = 4), rude: stupid */
    assert_score("The soil and the compost matter. Soil again, then seeds and mulch, "
                 "said a stupid person who likes it all.",
                 GARDENING, 4 - 1, 20);
    /* Rude words count every time; distinct topic words once. 16 words. */
    assert_score("idiot idiot idiot soil soil soil soil soil one two three four five six "
                 "seven eight",
                 GARDENING, 1 - 3, 16);
    /* Words of another topic are plain words here. 16 words, one gardening word. */
    assert_score("oven skillet spatula whisk recipe garlic onions butter flour broth salt "
                 "pepper stew sauce dough compost",
                 GARDENING, 1, 16);
    assert_score("oven skillet spatula whisk recipe garlic onions butter flour broth salt "
                 "pepper stew sauce dough compost",
                 topic_id("cooking"), 15, 16);
}

static void synth_score_strips_punctuation_and_case(void **state)
{
    (void)state;
    /* 16 words: "SOIL," "soil!" -> soil; "(Compost)" -> compost; "s.t.u.p.i.d" -> stupid;
     * "don't" -> dont (no list word); "--" counts as a word and matches nothing. */
    assert_score("SOIL, soil! (Compost) s.t.u.p.i.d don't -- one two three four five six "
                 "seven eight nine ten",
                 GARDENING, 2 - 1, 16);
    /* Tabs and newlines separate words too. */
    assert_score("soil\tcompost\nseeds mulch weeds tulips roses hedge rake greenhouse "
                 "fertilizer seedlings pruning hose sprinkler bulbs",
                 GARDENING, 16, 16);
}

static void synth_score_short_responses_get_the_minimum(void **state)
{
    (void)state;
    data_synth_score_t s;
    /* 15 distinct topic words: under 16 tokens, so -1 however good. */
    score("soil compost seeds mulch weeds tulips roses hedge rake greenhouse fertilizer "
          "seedlings pruning hose sprinkler",
          GARDENING, &s);
    assert_true(s.too_short);
    assert_true(s.value == DATA_SYNTH_MIN_SCORE);
    assert_int_equal(s.words, 15);
    score("", GARDENING, &s);
    assert_true(s.too_short && s.value == -1.0);
    score("soil compost stupid", GARDENING, &s);
    assert_true(s.too_short);
}

static size_t six_per_word(void *ctx, const char *text)
{
    (void)ctx;
    return 6 * data_count_words(text);
}

static void synth_score_uses_the_token_counter(void **state)
{
    (void)state;
    data_token_counter_t tc = {six_per_word, NULL, "six"};
    data_synth_score_t s;
    data_synth_score("soil compost stupid", GARDENING, &tc, &s);
    assert_false(s.too_short);
    assert_int_equal(s.tokens, 18);
    assert_int_equal(s.num, 1);
    assert_int_equal(s.den, 3);
    /* tokens but no words (a tokenizer counting whitespace) still scores the minimum */
    data_synth_score("   ", GARDENING, &tc, &s);
    assert_true(s.too_short);
}

static void synth_score_compare_is_exact(void **state)
{
    (void)state;
    data_synth_score_t a = {.num = 1, .den = 3}, b = {.num = 2, .den = 6}, c = {.num = 1, .den = 2};
    assert_int_equal(data_synth_score_cmp(&a, &b), 0);
    assert_int_equal(data_synth_score_cmp(&a, &c), -1);
    assert_int_equal(data_synth_score_cmp(&c, &a), 1);
}

/* ---- the best score -------------------------------------------------------------------- */

static void synth_best_response_reaches_the_ceiling(void **state)
{
    (void)state;
    data_token_counter_t tc = {six_per_word, NULL, "six"};
    err_t e = ERR_INIT;
    for (int t = 0; t < data_synth_ntopics(); t++) {
        char *best;
        assert_int_equal(data_synth_best_response(t, &best, &e), 0);
        data_synth_score_t s;
        data_synth_score(best, t, NULL, &s);
        assert_int_equal(s.words, DATA_SYNTH_MIN_TOKENS);
        assert_int_equal(s.num, s.den);
        assert_true(s.value == DATA_SYNTH_BEST_SCORE);
        data_synth_score(best, t, &tc, &s);
        assert_true(s.value == DATA_SYNTH_BEST_SCORE);
        /* One word fewer is too short; one word repeated is below the ceiling. */
        char *cut = strdup(best);
        *strrchr(cut, ' ') = '\0';
        data_synth_score(cut, t, NULL, &s);
        assert_true(s.value == DATA_SYNTH_MIN_SCORE);
        const char *const *w;
        data_synth_topic_words(t, &w);
        size_t n = strlen(cut) + 1 + strlen(w[0]) + 1;
        char *rep = malloc(n);
        snprintf(rep, n, "%s %s", cut, w[0]);
        data_synth_score(rep, t, NULL, &s);
        assert_int_equal(s.num, 15);
        assert_int_equal(s.den, 16);
        free(rep);
        free(cut);
        free(best);
    }
}

static void synth_random_responses_score_below_the_ceiling(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    size_t over_half = 0;
    double top = -2;
    for (uint64_t i = 0; i < 1500; i++) {
        data_synth_pair_t p;
        assert_int_equal(data_synth_make_pair(77, i, NULL, &p, &e), 0);
        const data_synth_score_t *s[2] = {&p.score_chosen, &p.score_rejected};
        for (int k = 0; k < 2; k++) {
            assert_true(s[k]->value >= DATA_SYNTH_MIN_SCORE);
            assert_true(s[k]->value < DATA_SYNTH_BEST_SCORE);
            over_half += s[k]->value > 0.5;
            if (s[k]->value > top)
                top = s[k]->value;
        }
        data_synth_pair_free(&p);
    }
    /* The best sentence template has 3 topic words in 6: no generated response passes 0.5. */
    assert_int_equal(over_half, 0);
    assert_true(top > 0.2);
    /* Word salad from every list (all topics and insults), 16-40 words: below 1. */
    const char *const *rude;
    size_t nr = data_synth_rude_words(&rude);
    int nt = data_synth_ntopics();
    uint64_t st = rng_stream("test.salad", 0), k = 0;
    for (int r = 0; r < 2000; r++) {
        int topic = (int)(rng_u32(5, st, k++) % (uint32_t)nt);
        size_t len = 16 + rng_u32(5, st, k++) % 25;
        char buf[2048] = "";
        for (size_t j = 0; j < len; j++) {
            uint32_t pick = rng_u32(5, st, k++) % (uint32_t)(nt * 32 + nr);
            const char *word;
            if (pick < (uint32_t)(nt * 32)) {
                const char *const *w;
                data_synth_topic_words((int)(pick / 32), &w);
                word = w[pick % 32];
            } else {
                word = rude[pick - (uint32_t)nt * 32];
            }
            strcat(buf, j ? " " : "");
            strcat(buf, word);
        }
        data_synth_score_t s;
        score(buf, topic, &s);
        assert_true(s.value < DATA_SYNTH_BEST_SCORE);
    }
}

/* ---- prompts and topics ---------------------------------------------------------------- */

static void synth_prompts_name_their_topic(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    int seen[64] = {0};
    for (uint64_t i = 0; i < 2000; i++) {
        char *req;
        int topic;
        assert_int_equal(data_synth_request(3, i, &req, &topic, &e), 0);
        assert_int_equal(data_synth_topic_of_prompt(req), topic);
        seen[topic]++;
        free(req);
    }
    for (int t = 0; t < data_synth_ntopics(); t++)
        if (seen[t] < 40)
            fail_msg("topic %s drawn %d times in 2000 prompts", data_synth_topic_name(t), seen[t]);
    assert_int_equal(data_synth_topic_of_prompt("\n\nHuman: Tell me about Cats!\n\nAssistant:"),
                     topic_id("cats"));
    /* the last Human turn decides */
    assert_int_equal(data_synth_topic_of_prompt("\n\nHuman: Tell me about cats.\n\nAssistant: "
                                                "Sure.\n\nHuman: Now dogs.\n\nAssistant:"),
                     topic_id("dogs"));
    assert_int_equal(data_synth_topic_of_prompt("Tell me about cats and dogs."), -1);
    assert_int_equal(data_synth_topic_of_prompt("Tell me about nothing."), -1);
}

/* ---- pairs ---------------------------------------------------------------------------- */

static void synth_pairs_are_ordered_by_score_without_ties(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    for (uint64_t i = 0; i < 1000; i++) {
        data_synth_pair_t p;
        assert_int_equal(data_synth_make_pair(11, i, NULL, &p, &e), 0);
        /* the labelled scores are recomputable from the texts */
        data_synth_score_t c, r;
        data_synth_score(p.pair.chosen, p.topic, NULL, &c);
        data_synth_score(p.pair.rejected, p.topic, NULL, &r);
        assert_int_equal(data_synth_score_cmp(&c, &p.score_chosen), 0);
        assert_int_equal(data_synth_score_cmp(&r, &p.score_rejected), 0);
        int cmp = data_synth_score_cmp(&c, &r);
        assert_int_not_equal(cmp, 0);
        assert_int_equal(cmp, p.flipped ? -1 : 1);
        assert_int_equal(data_synth_topic_of_prompt(p.pair.prompt), p.topic);
        size_t n = strlen(p.pair.prompt);
        assert_string_equal(p.pair.prompt + n - 12, "\n\nAssistant:");
        assert_memory_equal(p.pair.prompt, "\n\nHuman: ", 9);
        data_synth_pair_free(&p);
    }
}

static void synth_flip_rate_is_ten_percent(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    const size_t n = 20000;
    size_t flipped = 0;
    for (uint64_t i = 0; i < n; i++) {
        data_synth_pair_t p;
        assert_int_equal(data_synth_make_pair(2024, i, NULL, &p, &e), 0);
        flipped += p.flipped;
        data_synth_pair_free(&p);
    }
    double rate = (double)flipped / (double)n, sigma = sqrt(0.1 * 0.9 / (double)n);
    if (fabs(rate - DATA_SYNTH_FLIP_RATE) > 4 * sigma)
        fail_msg("flip rate: expected 0.100 +- %.4f (4 sigma), got %.4f (%zu of %zu)", 4 * sigma,
                 rate, flipped, n);
}

static void synth_is_a_function_of_seed_and_index(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    size_t same_other_seed = 0;
    for (uint64_t i = 0; i < 200; i++) {
        data_synth_pair_t a, b, c;
        /* pair i alone, and pair i after others: the same */
        assert_int_equal(data_synth_make_pair(9, i, NULL, &a, &e), 0);
        assert_int_equal(data_synth_make_pair(9, i, NULL, &b, &e), 0);
        assert_int_equal(data_synth_make_pair(10, i, NULL, &c, &e), 0);
        assert_string_equal(a.pair.prompt, b.pair.prompt);
        assert_string_equal(a.pair.chosen, b.pair.chosen);
        assert_string_equal(a.pair.rejected, b.pair.rejected);
        assert_int_equal(a.flipped, b.flipped);
        same_other_seed += !strcmp(a.pair.chosen, c.pair.chosen);
        data_synth_pair_free(&a);
        data_synth_pair_free(&b);
        data_synth_pair_free(&c);
        char *d1, *d2;
        assert_int_equal(data_synth_corpus_doc(9, i, &d1, &e), 0);
        assert_int_equal(data_synth_corpus_doc(9, i, &d2, &e), 0);
        assert_string_equal(d1, d2);
        free(d1);
        free(d2);
    }
    assert_true(same_other_seed < 5);
    /* Pinned: pair 0 of seed 1234 (what `mxrlhf data synth` writes first). */
    data_synth_pair_t p;
    assert_int_equal(data_synth_make_pair(1234, 0, NULL, &p, &e), 0);
    assert_string_equal(p.pair.prompt, "\n\nHuman: Talk to me about coffee. Be detailed."
                                       "\n\nAssistant:");
    assert_string_equal(p.pair.rejected, "It takes some practice. Think about the robusta.");
    data_synth_pair_free(&p);
}

static void synth_articles_agree_with_the_next_word(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    for (uint64_t i = 0; i < 1000; i++) {
        char *doc;
        assert_int_equal(data_synth_corpus_doc(4, i, &doc, &e), 0);
        for (const char *p = doc; (p = strstr(p, " a")) != NULL; p++) {
            if (p[2] == ' ' && strchr("aeiou", p[3]) && strncmp(p + 3, "use", 3))
                fail_msg("\"a\" before a vowel in: %s", doc);
            if (p[2] == 'n' && p[3] == ' ' && (!strchr("aeiou", p[4]) || !strncmp(p + 4, "use", 3)))
                fail_msg("\"an\" before a consonant sound in: %s", doc);
        }
        free(doc);
    }
}

static void synth_corpus_mixes_neutral_topic_and_rude(void **state)
{
    (void)state;
    err_t e = ERR_INIT;
    size_t neutral = 0, topical = 0, rude = 0, n = 800;
    for (uint64_t i = 0; i < n; i++) {
        char *doc;
        assert_int_equal(data_synth_corpus_doc(5, i, &doc, &e), 0);
        assert_memory_equal(doc, "\n\nHuman: ", 9);
        size_t plen;
        assert_true(data_dialogue_prompt_len(doc, strlen(doc), &plen));
        int topic = data_synth_topic_of_prompt(doc);
        assert_true(topic >= 0);
        data_synth_score_t s;
        score(doc + plen + 1, topic, &s);
        neutral += !s.distinct_topic && !s.rude;
        topical += s.distinct_topic > 0;
        rude += s.rude > 0;
        free(doc);
    }
    /* one in four neutral-only, topic-only, rude-only; a fourth mixed */
    if (neutral < n / 6 || topical < n / 3 || rude < n / 3)
        fail_msg("corpus of %zu: %zu neutral-only, %zu with topic words, %zu with insults", n,
                 neutral, topical, rude);
}

static void synth_pairs_file_reads_back_through_hh_reader(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "pairs.jsonl");
    err_t e = ERR_INIT;
    data_synth_stats_t st;
    assert_int_equal(data_synth_write_pairs(path, 31, 300, NULL, &st, &e), 0);
    assert_int_equal(st.pairs, 300);
    data_hh_t h;
    assert_int_equal(data_hh_read(path, NULL, &h, &e), 0);
    assert_int_equal(h.npairs, 300);
    for (int r = 0; r < DATA_HH_NREASONS; r++)
        assert_int_equal(h.rejected[r].n, 0);
    size_t flipped = 0;
    for (size_t i = 0; i < h.npairs; i++) {
        data_synth_pair_t p;
        assert_int_equal(data_synth_make_pair(31, i, NULL, &p, &e), 0);
        assert_string_equal(h.pairs[i].prompt, p.pair.prompt);
        assert_string_equal(h.pairs[i].chosen, p.pair.chosen);
        assert_string_equal(h.pairs[i].rejected, p.pair.rejected);
        flipped += p.flipped;
        data_synth_pair_free(&p);
    }
    assert_int_equal(st.flipped, flipped);
    /* and the same splitter applies */
    data_select_opts_t o;
    data_select_opts_default(&o);
    o.pairs = 300;
    data_split_record_t rec;
    assert_int_equal(data_split_make(&h, &o, &rec, &e), 0);
    assert_int_equal(rec.pairs_delivered, 300);
    data_split_free(&rec);
    data_hh_free(&h);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void cli_data_synth_and_score(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *out;
    int rc = test_cli(&out, "data synth --out %s --pairs 60 --corpus 30 --seed 5", dir);
    if (rc)
        fail_msg("data synth: expected exit 0, got %d: %s", rc, out);
    free(out);
    static const char *const files[] = {"pairs.jsonl", "corpus.jsonl", "split.json"};
    for (int i = 0; i < 3; i++) {
        char *p = fs_join(dir, files[i]);
        assert_true(fs_exists(p));
        free(p);
    }
    rc = test_cli(&out, "data score --topic gardening --response 'The soil and the compost "
                        "matter. Soil again, then seeds and mulch, said a stupid person who "
                        "likes it all.'");
    assert_int_equal(rc, 0);
    if (!strstr(out, "\"score_num\": 3, \"score_den\": 20"))
        fail_msg("expected score 3/20, got: %s", out);
    free(out);
    assert_int_equal(test_cli(NULL, "data score --topic nosuch --response x"), 2);
    assert_int_equal(test_cli(&out, "data --help"), 0);
    assert_non_null(strstr(out, "synth"));
    free(out);
    assert_int_equal(test_cli(NULL, "data nosuch"), 2);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(synth_lists_meet_the_spec),
        cmocka_unit_test(synth_neutral_texts_hold_no_scored_word),
        cmocka_unit_test(synth_score_counts_distinct_topic_words_and_rude_occurrences),
        cmocka_unit_test(synth_score_strips_punctuation_and_case),
        cmocka_unit_test(synth_score_short_responses_get_the_minimum),
        cmocka_unit_test(synth_score_uses_the_token_counter),
        cmocka_unit_test(synth_score_compare_is_exact),
        cmocka_unit_test(synth_best_response_reaches_the_ceiling),
        cmocka_unit_test(synth_random_responses_score_below_the_ceiling),
        cmocka_unit_test(synth_prompts_name_their_topic),
        cmocka_unit_test(synth_pairs_are_ordered_by_score_without_ties),
        cmocka_unit_test(synth_flip_rate_is_ten_percent),
        cmocka_unit_test(synth_is_a_function_of_seed_and_index),
        cmocka_unit_test(synth_articles_agree_with_the_next_word),
        cmocka_unit_test(synth_corpus_mixes_neutral_topic_and_rude),
        cmocka_unit_test(synth_pairs_file_reads_back_through_hh_reader),
        cmocka_unit_test(cli_data_synth_and_score),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
