/* digest: fingerprints that decide whether a pipeline stage's cached output is still
 * valid. A digest is 64-bit FNV-1a over what is fed to it; a file is fed as its size and
 * its zlib CRC-32, so a changed byte changes the digest. This detects change, it does not
 * resist tampering (nothing here is a security boundary). Digests print as 16 lowercase
 * hex digits.
 */
#ifndef MXRLHF_PIPELINE_DIGEST_H
#define MXRLHF_PIPELINE_DIGEST_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct pipeline_digest {
    uint64_t h;
} pipeline_digest_t;

void pipeline_digest_init(pipeline_digest_t *d);
void pipeline_digest_bytes(pipeline_digest_t *d, const void *p, size_t n);
/* The string and its terminating NUL, so ("ab","c") and ("a","bc") differ. */
void pipeline_digest_str(pipeline_digest_t *d, const char *s);
void pipeline_digest_u64(pipeline_digest_t *d, uint64_t x);
/* The unformatted JSON text (cJSON keeps keys in insertion order, so a section built by
 * its to_json function always prints the same way). */
int pipeline_digest_json(pipeline_digest_t *d, const cJSON *j, err_t *e);

/* "size:crc32" of a file, as text ("4186:1a2b3c4d"), into buf (>= 32 bytes). */
int pipeline_file_fingerprint(const char *path, char *buf, size_t cap, err_t *e);

/* 16 hex digits into buf (>= 17 bytes). */
void pipeline_digest_hex(const pipeline_digest_t *d, char *buf);

#endif
