/* text: preference data as token ids, the same way in every stage (SFT, reward model,
 * PPO, sensitivity), so a prompt means the same ids wherever it is scored.
 *
 * A sequence is the prompt's ids followed by the response's ids and one end-of-turn id.
 * Two templates:
 *   raw    — the HH-RLHF text as it is: ids("\n\nHuman: ...\n\nAssistant:") then
 *            ids(" " + response) then <|endoftext|>. Prompt and response are encoded
 *            separately (as TRL does with query and response), so the boundary is
 *            always a token boundary.
 *   chatml — the dialogue's turns rendered as ChatML messages with the generation
 *            prompt ("<|im_start|>assistant\n"), then ids(response) then <|im_end|>.
 *            For instruction-tuned checkpoints (Qwen2.5-*-Instruct).
 * Over-long inputs: a prompt longer than max_prompt keeps its LAST max_prompt ids (the
 * assistant tag survives); a response longer than max_response is cut to max_response
 * ids and gets no end-of-turn id (it did not end). The data layer normally drops such
 * pairs first, using rlhf_text_counter as its token counter.
 */
#ifndef MXRLHF_RLHF_TEXT_H
#define MXRLHF_RLHF_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "data/data.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"
#include "util/opts.h"

typedef enum rlhf_template {
    RLHF_TEMPLATE_RAW,
    RLHF_TEMPLATE_CHATML
} rlhf_template_t;

int rlhf_template_from_name(const char *name, rlhf_template_t *out); /* 0 or -1 */
const char *rlhf_template_name(rlhf_template_t t);
extern const opt_enum_t rlhf_template_enum; /* for options tables: "raw", "chatml" */

typedef struct rlhf_text {
    const tok_t *tok;        /* borrowed */
    tok_work_t *work;        /* owned; one encoder per thread */
    rlhf_template_t tmpl;
    int32_t eot_id;          /* end of turn: <|endoftext|> (raw) or <|im_end|> (chatml) */
    int max_prompt, max_response;
} rlhf_text_t;

/* Looks up the end-of-turn token in the tokenizer (an error names it when absent). */
int rlhf_text_init(rlhf_text_t *t, const tok_t *tok, rlhf_template_t tmpl, int max_prompt,
                   int max_response, err_t *e);
void rlhf_text_free(rlhf_text_t *t);

/* One tokenized sequence: ids[0, prompt_len) the prompt, then the response (with the
 * end-of-turn id when it fit). */
typedef struct rlhf_seq {
    int32_t *ids;
    int n, prompt_len;
    bool ended;              /* the response ends with the end-of-turn id */
} rlhf_seq_t;

void rlhf_seq_free(rlhf_seq_t *s);

/* Prompt ids only (what generation starts from). */
int rlhf_encode_prompt(rlhf_text_t *t, const char *prompt, rlhf_seq_t *out, err_t *e);

/* Prompt + response (+ end of turn). response may be "" (then only the end-of-turn id). */
int rlhf_encode_pair(rlhf_text_t *t, const char *prompt, const char *response, rlhf_seq_t *out,
                     err_t *e);

/* Response text of generated ids (end-of-turn and other special tokens dropped). Ids the
 * tokenizer does not name are dropped too, as Hugging Face's decode does: a model's
 * embedding may have more rows than its tokenizer has tokens (Qwen2.5: 151936 rows, 151665
 * tokens), and an untrained or randomly initialised model samples those rows. */
int rlhf_decode_response(rlhf_text_t *t, const int32_t *ids, int n, char **out, err_t *e);

/* A token counter for the data layer that counts exactly what rlhf_encode_* produce
 * for a prompt or a response (without the end-of-turn id). Valid while t lives. */
data_token_counter_t rlhf_text_counter(rlhf_text_t *t);

/* A right-padded training batch built from sequences: ids (B, T) with T the longest
 * sequence, len (B), and mask (B, T): 1 where position t's NEXT token is a response
 * token (the positions whose log-probs train the response), else 0. The pad id is the
 * end-of-turn id (its value never matters: padding is masked). Caller frees with
 * rlhf_batch_free. */
typedef struct rlhf_batch {
    int B, T;
    int32_t *ids, *len;
    float *mask;
} rlhf_batch_t;

int rlhf_batch_make(const rlhf_seq_t *const *seqs, int B, int32_t pad_id, rlhf_batch_t *out,
                    err_t *e);
void rlhf_batch_free(rlhf_batch_t *b);

#endif
