/* mxrlhf data: the data layer by hand: draw and split HH-RLHF pairs, generate the
 * synthetic task, score a response by the synthetic ground truth. Later stages (run, sft,
 * rm) call src/data/ directly; this command is for inspecting and testing what they get.
 * Token counts here are whitespace-separated words (no tokenizer is involved). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/hh.h"
#include "data/split.h"
#include "data/synth.h"
#include "util/fs.h"

#define SPLIT_DETAILS                                                                      \
    "Pairs are drawn by a seeded shuffle; pairs whose prompt or a response has more tokens\n" \
    "than the limits are dropped and replaced from the rest of the shuffled pool (counted\n" \
    "in the record). Pairs with identical prompts stay in one split. Fractions must sum\n"  \
    "to 1. Tokens are whitespace-separated words here. See docs/data.md."

typedef struct split_args {
    long long pairs, max_prompt, max_response;
    uint64_t seed;
    double frac[DATA_NSPLITS];
} split_args_t;

static void split_args_default(split_args_t *a)
{
    data_select_opts_t o;
    data_select_opts_default(&o);
    a->pairs = (long long)o.pairs;
    a->seed = o.seed;
    a->max_prompt = (long long)o.max_prompt_tokens;
    a->max_response = (long long)o.max_response_tokens;
    memcpy(a->frac, o.fractions, sizeof a->frac);
}

static int split_opts_from(const split_args_t *a, data_select_opts_t *o, err_t *e)
{
    data_select_opts_default(o);
    if (a->pairs < 1)
        return err_set(e, ERR_INPUT, "--pairs: expected at least 1, got %lld", a->pairs);
    if (a->max_prompt < 0 || a->max_response < 0)
        return err_set(e, ERR_INPUT, "--max-prompt-tokens/--max-response-tokens: expected "
                       "0 (no limit) or more");
    o->pairs = (size_t)a->pairs;
    o->seed = a->seed;
    o->max_prompt_tokens = (size_t)a->max_prompt;
    o->max_response_tokens = (size_t)a->max_response;
    memcpy(o->fractions, a->frac, sizeof o->fractions);
    return ERR_OK;
}

#define SPLIT_OPTS(a)                                                                              \
    {"seed", ARG_U64, &(a).seed, "S", "seed of the draw (default " OPT_STR(DATA_DEFAULT_SEED) ")"},\
    {"max-prompt-tokens", ARG_INT, &(a).max_prompt, "N",                                           \
     "drop longer prompts (" OPT_STR(DATA_DEFAULT_MAX_PROMPT_TOKENS) "; 0: no limit)"},            \
    {"max-response-tokens", ARG_INT, &(a).max_response, "N",                                       \
     "drop pairs with a longer response (" OPT_STR(DATA_DEFAULT_MAX_RESPONSE_TOKENS)               \
     "; 0: no limit)"},                                                                            \
    {"rm-train", ARG_DOUBLE, &(a).frac[DATA_SPLIT_RM_TRAIN], "F",                                  \
     "fraction for reward-model training (" OPT_STR(DATA_DEFAULT_RM_TRAIN) ")"},                   \
    {"rm-eval", ARG_DOUBLE, &(a).frac[DATA_SPLIT_RM_EVAL], "F",                                    \
     "fraction for reward-model evaluation (" OPT_STR(DATA_DEFAULT_RM_EVAL) ")"},                  \
    {"judge-train", ARG_DOUBLE, &(a).frac[DATA_SPLIT_JUDGE_TRAIN], "F",                            \
     "fraction for the judge reward model (" OPT_STR(DATA_DEFAULT_JUDGE_TRAIN) ")"},               \
    {"ppo", ARG_DOUBLE, &(a).frac[DATA_SPLIT_PPO], "F",                                            \
     "fraction for PPO prompts (" OPT_STR(DATA_DEFAULT_PPO) ")"},                                  \
    {"eval", ARG_DOUBLE, &(a).frac[DATA_SPLIT_EVAL], "F",                                          \
     "fraction for held-out evaluation prompts (" OPT_STR(DATA_DEFAULT_EVAL) ")"}

static void print_record(const data_split_record_t *r, const char *out)
{
    printf("source %s: %zu lines, %zu usable pairs, %s, %" PRIu64 " bytes, CRC-32 %08" PRIx32
           "\n", r->source_path, r->source_lines, r->source_pairs,
           r->source_gzip ? "gzip" : "plain", r->source_bytes, r->source_crc32);
    for (int k = 0; k < DATA_HH_NREASONS; k++)
        if (r->rejected[k].n)
            printf("  not usable, %s: %zu (first at line %zu)\n", data_hh_reason_name(k),
                   r->rejected[k].n, r->rejected[k].v[0]);
    printf("drew %zu of %zu requested pairs with seed %" PRIu64 " (%zu examined; tokens: %s)\n",
           r->pairs_delivered, r->pairs_requested, r->seed, r->examined, r->token_counter);
    if (r->pairs_delivered < r->pairs_requested)
        fprintf(stderr, "warning: the file has only %zu pairs within the limits, fewer than "
                "the %zu requested\n", r->pairs_delivered, r->pairs_requested);
    for (int d = 0; d < DATA_NDROPS; d++)
        printf("  dropped, %s: %zu\n", data_drop_name(d), r->dropped[d].n);
    for (int s = 0; s < DATA_NSPLITS; s++)
        printf("  %-13s %zu\n", data_split_name(s), r->split[s].n);
    printf("%zu distinct prompts (largest group %zu)\nwrote %s\n", r->prompt_groups,
           r->largest_prompt_group, out);
}

/* Reads `data`, draws and splits, writes out_dir/split.json. */
static int split_file(const char *data, bool skip_bad, const data_select_opts_t *o,
                      const char *out_dir, err_t *e)
{
    data_hh_opts_t ho = {.skip_bad = skip_bad};
    data_hh_t h;
    data_split_record_t rec;
    int rc = fs_mkdir_p(out_dir, e);
    if (rc)
        return rc;
    if ((rc = data_hh_read(data, &ho, &h, e)))
        return rc;
    rc = data_split_make(&h, o, &rec, e);
    data_hh_free(&h);
    if (rc)
        return rc;
    char *path = fs_join(out_dir, "split.json");
    rc = path ? data_split_write(path, &rec, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        print_record(&rec, path);
    free(path);
    data_split_free(&rec);
    return rc;
}

static int data_split_cmd(int argc, char **argv)
{
    const char *data = NULL, *out = NULL;
    bool skip_bad = false;
    split_args_t a;
    split_args_default(&a);
    arg_opt_t opts[] = {
        {"data", ARG_STRING, &data, "FILE", "HH-RLHF .jsonl or .jsonl.gz (required)"},
        {"out", ARG_STRING, &out, "DIR", "where split.json goes (required)"},
        {"pairs", ARG_INT, &a.pairs, "N", "pairs to draw (default " OPT_STR(DATA_DEFAULT_PAIRS) ")"},
        {"skip-bad", ARG_FLAG, &skip_bad, NULL,
         "count malformed lines instead of failing on the first"},
        SPLIT_OPTS(a),
    };
    arg_spec_t spec = {"data split", "Draw N pairs from an HH-RLHF file and split them.",
                       "--data FILE --out DIR [options]", SPLIT_DETAILS, opts,
                       (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    data_select_opts_t o;
    if (!rc)
        rc = args_require(data, "data", &e);
    if (!rc)
        rc = args_require(out, "out", &e);
    if (!rc)
        rc = split_opts_from(&a, &o, &e);
    if (!rc)
        rc = split_file(data, skip_bad, &o, out, &e);
    return cli_report("data split", &e);
}

static int data_synth_cmd(int argc, char **argv)
{
    const char *out = NULL;
    long long corpus = DATA_SYNTH_DEFAULT_CORPUS_DOCS;
    split_args_t a;
    split_args_default(&a);
    arg_opt_t opts[] = {
        {"out", ARG_STRING, &out, "DIR", "where the files go (required)"},
        {"pairs", ARG_INT, &a.pairs, "N", "preference pairs to generate (default " OPT_STR(DATA_DEFAULT_PAIRS) ")"},
        {"corpus", ARG_INT, &corpus, "N", "pretraining documents to generate (default "
         OPT_STR(DATA_SYNTH_DEFAULT_CORPUS_DOCS) ")"},
        SPLIT_OPTS(a),
    };
    arg_spec_t spec = {
        "data synth", "Generate the synthetic preference task (the embedded default).",
        "--out DIR [options]",
        "Writes DIR/pairs.jsonl (HH-RLHF form, plus topic, ground-truth scores and the flip\n"
        "flag), DIR/corpus.jsonl ({\"text\": dialogue} per line) and DIR/split.json (all\n"
        "pairs split as `data split` would). The seed drives everything. docs/data.md\n"
        "defines the task.",
        opts, (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    data_select_opts_t o;
    if (!rc)
        rc = args_require(out, "out", &e);
    if (!rc && corpus < 0)
        rc = err_set(&e, ERR_INPUT, "--corpus: expected 0 or more, got %lld", corpus);
    if (!rc)
        rc = split_opts_from(&a, &o, &e);
    if (!rc)
        rc = fs_mkdir_p(out, &e);
    char *pairs_path = fs_join(out ? out : ".", "pairs.jsonl");
    char *corpus_path = fs_join(out ? out : ".", "corpus.jsonl");
    if (!rc && (!pairs_path || !corpus_path))
        rc = err_set(&e, ERR_NOMEM, "out of memory");
    data_synth_stats_t st;
    if (!rc)
        rc = data_synth_write_pairs(pairs_path, o.seed, o.pairs, NULL, &st, &e);
    if (!rc) {
        printf("wrote %s: %zu pairs, %zu labels flipped (%.1f%%), %zu tie redraws, "
               "mean score chosen %.4f rejected %.4f, too short chosen %zu rejected %zu\n",
               pairs_path, st.pairs, st.flipped, 100.0 * (double)st.flipped / (double)st.pairs,
               st.redraws, st.mean_score_chosen, st.mean_score_rejected, st.too_short_chosen,
               st.too_short_rejected);
        rc = data_synth_write_corpus(corpus_path, o.seed, (size_t)corpus, &e);
    }
    if (!rc) {
        printf("wrote %s: %lld documents\n", corpus_path, corpus);
        rc = split_file(pairs_path, false, &o, out, &e);
    }
    free(pairs_path);
    free(corpus_path);
    return cli_report("data synth", &e);
}

static int data_score_cmd(int argc, char **argv)
{
    const char *prompt = NULL, *topic_name = NULL, *response = NULL;
    arg_opt_t opts[] = {
        {"response", ARG_STRING, &response, "TEXT", "the response to score (required)"},
        {"topic", ARG_STRING, &topic_name, "NAME", "the topic (e.g. gardening)"},
        {"prompt", ARG_STRING, &prompt, "TEXT", "or: the prompt, whose topic is found in it"},
    };
    arg_spec_t spec = {"data score", "Score a response by the synthetic task's ground truth.",
                       "--response TEXT (--topic NAME | --prompt TEXT)",
                       "Prints the score and its parts as JSON. Tokens are words here.", opts,
                       (int)(sizeof opts / sizeof opts[0]), false};
    err_t e = ERR_INIT;
    int npos;
    char **pos;
    int rc = args_parse(&spec, argc, argv, &npos, &pos, &e);
    if (rc == ARGS_HELP)
        return 0;
    if (!rc)
        rc = args_require(response, "response", &e);
    int topic = -1;
    if (!rc && !topic_name == !prompt)
        rc = err_set(&e, ERR_INPUT, "give exactly one of --topic and --prompt");
    if (!rc && topic_name) {
        for (int t = 0; t < data_synth_ntopics(); t++)
            if (!strcmp(topic_name, data_synth_topic_name(t)))
                topic = t;
        if (topic < 0)
            rc = err_set(&e, ERR_INPUT, "--topic: no topic \"%s\" (topics: gardening, "
                         "cooking, ... see docs/data.md)", topic_name);
    }
    if (!rc && prompt && (topic = data_synth_topic_of_prompt(prompt)) < 0)
        rc = err_set(&e, ERR_INPUT, "--prompt: names no single synthetic topic");
    if (!rc) {
        data_synth_score_t s;
        data_synth_score(response, topic, NULL, &s);
        printf("{\"topic\": \"%s\", \"score\": %.17g, \"score_num\": %lld, "
               "\"score_den\": %lld, \"distinct_topic_words\": %zu, \"rude_words\": %zu, "
               "\"words\": %zu, \"tokens\": %zu, \"too_short\": %s}\n",
               data_synth_topic_name(topic), s.value, s.num, s.den, s.distinct_topic, s.rude,
               s.words, s.tokens, s.too_short ? "true" : "false");
    }
    return cli_report("data score", &e);
}

static void data_usage(FILE *f)
{
    fprintf(f, "usage: mxrlhf data <action> [options]   (mxrlhf data <action> --help)\n\n"
               "The data layer: HH-RLHF pairs and the synthetic preference task.\n\n"
               "actions:\n"
               "  split   draw N pairs from an HH-RLHF file and split them (split.json)\n"
               "  synth   generate the synthetic task: pairs, pretraining corpus, split\n"
               "  score   score a response by the synthetic ground truth\n");
}

int cmd_data(int argc, char **argv)
{
    if (argc < 1) {
        data_usage(stderr);
        return ERR_INPUT;
    }
    if (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        data_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[0], "split"))
        return data_split_cmd(argc - 1, argv + 1);
    if (!strcmp(argv[0], "synth"))
        return data_synth_cmd(argc - 1, argv + 1);
    if (!strcmp(argv[0], "score"))
        return data_score_cmd(argc - 1, argv + 1);
    fprintf(stderr, "mxrlhf data: unknown action \"%s\" (split, synth, score)\n", argv[0]);
    return ERR_INPUT;
}
