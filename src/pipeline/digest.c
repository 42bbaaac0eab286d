/* digest: see digest.h. */
#include "pipeline/digest.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/hh.h"

void pipeline_digest_init(pipeline_digest_t *d)
{
    d->h = 0xcbf29ce484222325ull;
}

void pipeline_digest_bytes(pipeline_digest_t *d, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = d->h;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    d->h = h;
}

void pipeline_digest_str(pipeline_digest_t *d, const char *s)
{
    pipeline_digest_bytes(d, s, strlen(s) + 1);
}

void pipeline_digest_u64(pipeline_digest_t *d, uint64_t x)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(x >> (8 * i));
    pipeline_digest_bytes(d, b, 8);
}

int pipeline_digest_json(pipeline_digest_t *d, const cJSON *j, err_t *e)
{
    char *s = cJSON_PrintUnformatted(j);
    if (!s)
        return err_set(e, ERR_NOMEM, "out of memory printing JSON");
    pipeline_digest_str(d, s);
    cJSON_free(s);
    return ERR_OK;
}

int pipeline_file_fingerprint(const char *path, char *buf, size_t cap, err_t *e)
{
    uint64_t bytes;
    uint32_t crc;
    bool gz;
    int rc = data_file_crc32(path, &bytes, &crc, &gz, e);
    if (!rc)
        snprintf(buf, cap, "%" PRIu64 ":%08" PRIx32, bytes, crc);
    return rc;
}

void pipeline_digest_hex(const pipeline_digest_t *d, char *buf)
{
    snprintf(buf, 17, "%016" PRIx64, d->h);
}
