/* tokenizer: byte-level BPE read from a Hugging Face `tokenizer.json`, with ids equal to
 * Hugging Face `tokenizers` (checked against it on a few thousand strings, see
 * docs/tokenizer.md), decoding, the ChatML template, and a small BPE trainer.
 *
 * The pipeline is Hugging Face's, step by step: added/special tokens are cut out of the
 * raw text; each remaining piece is normalised (NFC via utf8proc), cut again on
 * normalised added tokens, split by the pre-tokenizer's regex (the file's own pattern,
 * run by PCRE2), mapped byte-wise, and merged by rank.
 *
 * A tok_t is immutable once loaded and may be shared by threads. Encoding needs a
 * workspace (tok_work_t: the word cache, regex match data, scratch buffers); use one
 * workspace per thread. This is deliberately not a general `tokenizers` clone: only
 * byte-level BPE (Qwen2/Qwen2.5/Qwen3, GPT-2 style) is supported; other model types,
 * pre-tokenizers or post-processors that add ids are refused with a clear error.
 */
#ifndef MXRLHF_TOKENIZER_TOKENIZER_H
#define MXRLHF_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct tok tok_t;
typedef struct tok_work tok_work_t;

/* A growable list of token ids (caller owns; free with tok_ids_free). */
typedef struct tok_ids {
    int32_t *ids;
    size_t n, cap;
} tok_ids_t;

void tok_ids_free(tok_ids_t *ids);
int tok_ids_push(tok_ids_t *ids, int32_t id, err_t *e);

/* Loads a tokenizer.json. Errors name the file and the field ("tok.json: model.merges[12]:
 * token \"xy\" is not in model.vocab"). */
int tok_load(const char *path, tok_t **out, err_t *e);

/* The same from text in memory; `ctx` names it in errors. */
int tok_load_json(const char *text, size_t len, const char *ctx, tok_t **out, err_t *e);

void tok_free(tok_t *t);

/* One past the highest id (model vocabulary and added tokens together). */
int32_t tok_vocab_size(const tok_t *t);

/* Id of a token written as in the file (added tokens first, then the model vocabulary),
 * or -1. */
int32_t tok_token_id(const tok_t *t, const char *token);

/* The token's text as written in the file (byte-level characters for model tokens), or
 * NULL for an unused id. *len gets its length. */
const char *tok_id_token(const tok_t *t, int32_t id, size_t *len);

/* True when id is an added token marked "special" (skipped by decoding with
 * skip_special). */
bool tok_is_special(const tok_t *t, int32_t id);

/* Workspace for encoding: holds a cache of encoded words (bounded) and scratch buffers. */
int tok_work_new(const tok_t *t, tok_work_t **out, err_t *e);
void tok_work_free(tok_work_t *w);

/* Appends the ids of `text` (len bytes, UTF-8) to *ids. Invalid UTF-8 is refused with
 * ERR_INPUT naming the byte offset (Hugging Face's Python binding cannot be given such
 * text at all). `w` may be NULL (a temporary workspace is used: slower). */
int tok_encode(const tok_t *t, tok_work_t *w, const char *text, size_t len, tok_ids_t *ids,
               err_t *e);

/* Decodes ids to UTF-8 text as Hugging Face's ByteLevel decoder does: the tokens' bytes
 * are joined and any invalid UTF-8 in them becomes U+FFFD (one per maximal invalid
 * subpart). With skip_special, special added tokens are left out. An id that names no
 * token is ERR_INPUT (Hugging Face silently drops it). *out is NUL-terminated; caller
 * frees. */
int tok_decode(const tok_t *t, const int32_t *ids, size_t n, bool skip_special, char **out,
               size_t *out_len, err_t *e);

/* ---- ChatML -------------------------------------------------------------------------- */

typedef struct tok_msg {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content;
} tok_msg_t;

/* Renders "<|im_start|>ROLE\nCONTENT<|im_end|>\n" per message and, with
 * add_generation_prompt, a final "<|im_start|>assistant\n". No default system message is
 * inserted (Qwen2.5's template adds one; pass it yourself if you want it). */
int tok_chatml_render(const tok_msg_t *msgs, size_t n, bool add_generation_prompt, char **out,
                      size_t *out_len, err_t *e);

/* Renders with tok_chatml_render and encodes the result (the markers become their
 * special-token ids because encoding matches added tokens in the text). */
int tok_encode_chat(const tok_t *t, tok_work_t *w, const tok_msg_t *msgs, size_t n,
                    bool add_generation_prompt, tok_ids_t *ids, err_t *e);

/* ---- trainer ------------------------------------------------------------------------- */

typedef struct tok_train_opts {
    long vocab_size;     /* total, the 3 special tokens included; at least 259 */
    long min_frequency;  /* stop when the best pair occurs fewer times (< 1 counts as 1;
                            the CLI's default is 2) */
} tok_train_opts_t;

/* Trains byte-level BPE on the given texts (Qwen2 pre-tokenization: NFC, the Qwen2 split
 * regex, byte-level mapping) and writes a Hugging Face tokenizer.json to out_path
 * (atomically). Special tokens <|endoftext|>, <|im_start|>, <|im_end|> are cut out of the
 * texts and appended after the learnt vocabulary. Deterministic: each step merges the
 * pair with the highest count; ties go to the smaller left id, then the smaller right id
 * (ids are bytes 0..255, then tokens in the order they were learnt). */
int tok_train(const char *const *texts, const size_t *lens, size_t n_texts,
              const tok_train_opts_t *opts, const char *out_path, err_t *e);

/* Reads a corpus file (.jsonl: one {"text": ...} object a line; anything else: the whole
 * file is one text) and trains as tok_train. */
int tok_train_file(const char *corpus_path, const tok_train_opts_t *opts, const char *out_path,
                   err_t *e);

#endif
