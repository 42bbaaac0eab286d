/* data: what the HH-RLHF reader, the splitter and the synthetic task share.
 *
 * A preference pair is a prompt in Anthropic HH-RLHF shape ("\n\nHuman: ...\n\nAssistant:",
 * ending with the assistant tag) and two responses (the text after the tag, one leading
 * space removed). Token counts come from a caller-supplied function, so the rules do not
 * depend on which tokenizer a run uses (rlhf/text.h supplies the real one); without
 * one, whitespace-separated words are counted and outputs say so. This layer does no tokenizing and no batching of tokens.
 */
#ifndef MXRLHF_DATA_DATA_H
#define MXRLHF_DATA_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define DATA_HUMAN_TAG "\n\nHuman:"
#define DATA_ASSISTANT_TAG "\n\nAssistant:"

/* Counts the tokens of `text` (a prompt or a response, as given). */
typedef size_t (*data_count_tokens_fn)(void *ctx, const char *text);

typedef struct data_token_counter {
    data_count_tokens_fn fn; /* NULL: whitespace-separated words (data_count_words) */
    void *ctx;
    const char *name;        /* recorded in outputs; NULL gives "caller" or "whitespace_words" */
} data_token_counter_t;

/* The name every output records when no counting function is given. */
#define DATA_WORDS_COUNTER_NAME "whitespace_words"

/* Words separated by ASCII whitespace (space, \t, \n, \v, \f, \r). */
size_t data_count_words(const char *text);

/* tc->fn(tc->ctx, text), or data_count_words when tc or tc->fn is NULL. */
size_t data_count_tokens(const data_token_counter_t *tc, const char *text);

/* The counter's name for records (see data_token_counter_t.name). */
const char *data_counter_name(const data_token_counter_t *tc);

typedef struct data_pair {
    char *prompt;   /* dialogue up to and including the last "\n\nAssistant:" */
    char *chosen;   /* preferred response, without the one leading space */
    char *rejected;
    size_t line;    /* 1-based line in the source file; 0 when not read from a file */
} data_pair_t;

void data_pair_free(data_pair_t *p);

/* Length of the prompt part of an HH dialogue: up to and including the LAST
 * "\n\nAssistant:". Returns false when the tag does not occur. */
bool data_dialogue_prompt_len(const char *dialogue, size_t len, size_t *prompt_len);

/* True when the n bytes are well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
bool data_utf8_valid(const char *s, size_t n);

/* A growable list of 1-based line numbers (or other indexes). */
typedef struct data_lines {
    size_t *v;
    size_t n, cap;
} data_lines_t;

int data_lines_push(data_lines_t *l, size_t x, err_t *e);
void data_lines_free(data_lines_t *l);

#endif
