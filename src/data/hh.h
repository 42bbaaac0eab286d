/* hh: reader for Anthropic HH-RLHF preference files (.jsonl or .jsonl.gz).
 *
 * Each line is a JSON object with string fields "chosen" and "rejected", each a whole
 * dialogue ("\n\nHuman: ...\n\nAssistant: ..."). The prompt is the dialogue up to and
 * including the LAST "\n\nAssistant:"; the responses are what follows it, with one leading
 * space removed (the dialogues write "Assistant: text"; TRL-era scripts split the same way
 * and the space belongs to the tag, not the answer). Other keys are ignored.
 *
 * Compression is detected from the file's first two bytes (gzip magic 1f 8b), never from
 * its name; both kinds are read through zlib's gzFile API.
 *
 * What is not a usable pair is counted by reason with its line numbers, never silently
 * dropped:
 *   malformed        not JSON, not UTF-8, not an object, or "chosen"/"rejected" missing or
 *                    not strings. An error (ERR_INPUT naming file and line) unless
 *                    skip_bad is set: a damaged line usually means a damaged or wrong file.
 *   no_assistant     chosen or rejected lacks "\n\nAssistant:".
 *   prompt_mismatch  chosen and rejected prompts differ (the file's own data: harmless-base
 *                    test has 5 such lines).
 *   identical        chosen and rejected responses are equal: no preference to learn.
 * Blank lines (only whitespace) are skipped and not counted as records.
 */
#ifndef MXRLHF_DATA_HH_H
#define MXRLHF_DATA_HH_H

#include <stdbool.h>
#include <stdint.h>

#include "data/data.h"
#include "util/err.h"

typedef enum {
    DATA_HH_MALFORMED = 0,
    DATA_HH_NO_ASSISTANT,
    DATA_HH_PROMPT_MISMATCH,
    DATA_HH_IDENTICAL,
    DATA_HH_NREASONS
} data_hh_reason_t;

/* "malformed", "no_assistant", "prompt_mismatch", "identical". */
const char *data_hh_reason_name(int reason);

typedef struct data_hh_opts {
    bool skip_bad;       /* malformed lines are counted instead of failing the read */
    size_t max_line;     /* longest line accepted in bytes; 0 gives 64 MiB */
} data_hh_opts_t;

typedef struct data_hh {
    char *path;
    uint64_t file_bytes;    /* size of the file as stored (compressed when gzip) */
    uint32_t file_crc32;    /* zlib CRC-32 of the stored bytes */
    bool gzip;              /* from the magic bytes */
    bool skip_bad;          /* the option the file was read with */
    size_t lines;           /* lines in the (decompressed) text, blank ones included */
    size_t records;         /* non-blank lines */
    data_pair_t *pairs;     /* usable pairs in file order (line numbers increase) */
    size_t npairs;
    data_lines_t rejected[DATA_HH_NREASONS];  /* line numbers per reason */
} data_hh_t;

/* Reads the whole file. opts may be NULL (strict, 64 MiB lines). On failure *out is left
 * empty (safe to free). */
int data_hh_read(const char *path, const data_hh_opts_t *opts, data_hh_t *out, err_t *e);

void data_hh_free(data_hh_t *h);

/* The usable pair read from 1-based `line`, or NULL (binary search over the pairs). */
const data_pair_t *data_hh_find_line(const data_hh_t *h, size_t line);

/* Size and CRC-32 of a file as stored, as data_hh_read records them. */
int data_file_crc32(const char *path, uint64_t *bytes, uint32_t *crc, bool *gzip, err_t *e);

#endif
