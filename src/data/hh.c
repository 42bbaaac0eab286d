/* hh: HH-RLHF reader (see hh.h). One pass over the stored bytes for size and CRC-32,
 * one pass through zlib's gzFile for the lines; lines are parsed with cJSON. */
#include "data/hh.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *const reason_names[DATA_HH_NREASONS] = {
    "malformed", "no_assistant", "prompt_mismatch", "identical"};

const char *data_hh_reason_name(int reason)
{
    return reason >= 0 && reason < DATA_HH_NREASONS ? reason_names[reason] : "?";
}

int data_file_crc32(const char *path, uint64_t *bytes, uint32_t *crc, bool *gzip, err_t *e)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_errno(e, errno == ENOENT ? ERR_INPUT : ERR_FAIL, "open %s", path);
    unsigned char buf[1 << 16];
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t n = 0;
    unsigned char magic[2] = {0, 0};
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) {
        for (size_t i = 0; i < k && n + i < 2; i++)
            magic[n + i] = buf[i];
        c = crc32(c, buf, (uInt)k);
        n += k;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return err_errno(e, ERR_FAIL, "read %s", path);
    *bytes = n;
    *crc = (uint32_t)c;
    *gzip = n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    return ERR_OK;
}

void data_hh_free(data_hh_t *h)
{
    if (!h)
        return;
    free(h->path);
    for (size_t i = 0; i < h->npairs; i++)
        data_pair_free(&h->pairs[i]);
    free(h->pairs);
    for (int r = 0; r < DATA_HH_NREASONS; r++)
        data_lines_free(&h->rejected[r]);
    memset(h, 0, sizeof *h);
}

const data_pair_t *data_hh_find_line(const data_hh_t *h, size_t line)
{
    size_t lo = 0, hi = h->npairs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->pairs[mid].line < line)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < h->npairs && h->pairs[lo].line == line ? &h->pairs[lo] : NULL;
}

/* Reads one line of any length into *buf (without the newline or a CR before it).
 * *got is false at the end of the input. Returns an ERR_* code. */
static int read_line(gzFile gz, const char *path, size_t lineno, size_t max_line, char **buf,
                     size_t *cap, size_t *len, bool *got, err_t *e)
{
    size_t n = 0;
    *got = false;
    for (;;) {
        if (*cap - n < 2) {
            size_t nc = *cap * 2;
            char *b = realloc(*buf, nc);
            if (!b)
                return err_set(e, ERR_NOMEM, "%s: line %zu: out of memory", path, lineno);
            *buf = b;
            *cap = nc;
        }
        if (!gzgets(gz, *buf + n, (int)(*cap - n > (size_t)1 << 30 ? (size_t)1 << 30
                                                                  : *cap - n)))
            break; /* end of input, or an error checked below */
        /* gzgets stops after a newline or when the buffer is full. Lines with NUL bytes
         * are cut at the NUL here; they are not JSON text anyway. */
        n += strlen(*buf + n);
        if (n > 0 && (*buf)[n - 1] == '\n')
            break;
        if (n > max_line)
            return err_set(e, ERR_INPUT, "%s: line %zu: longer than %zu bytes", path, lineno,
                           max_line);
        if (gzeof(gz))
            break;
    }
    /* A truncated or corrupt gzip stream sets the error while still handing back the
     * text before the damage; report the damage, not the half line. */
    int zerr;
    const char *msg = gzerror(gz, &zerr);
    if (zerr != Z_OK)
        return err_set(e, ERR_INPUT, "%s: line %zu: cannot decompress: %s", path, lineno, msg);
    (*buf)[n] = '\0';
    *len = n;
    if (n == 0)
        return ERR_OK;
    *got = true;
    while (*len > 0 && ((*buf)[*len - 1] == '\n' || (*buf)[*len - 1] == '\r'))
        (*buf)[--*len] = '\0';
    if (*len > max_line)
        return err_set(e, ERR_INPUT, "%s: line %zu: longer than %zu bytes", path, lineno,
                       max_line);
    return ERR_OK;
}

static bool blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            return false;
    return true;
}

static char *dup_range(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Classifies one parsed line. Returns a reason, -1 for a usable pair (then *pair is
 * filled), or -2 with e set when memory ran out. `why` explains a malformed line. */
static int classify(const char *text, size_t len, data_pair_t *pair, const char **why,
                    err_t *e)
{
    if (!data_utf8_valid(text, len)) {
        *why = "not valid UTF-8";
        return DATA_HH_MALFORMED;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) {
        *why = "invalid JSON";
        return DATA_HH_MALFORMED;
    }
    int reason = -1;
    const cJSON *c = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "chosen") : NULL;
    const cJSON *r = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "rejected") : NULL;
    if (!cJSON_IsObject(j)) {
        *why = "expected a JSON object";
        reason = DATA_HH_MALFORMED;
    } else if (!cJSON_IsString(c) || !cJSON_IsString(r)) {
        *why = "expected string fields \"chosen\" and \"rejected\"";
        reason = DATA_HH_MALFORMED;
    }
    if (reason >= 0) {
        cJSON_Delete(j);
        return reason;
    }
    const char *cs = c->valuestring, *rs = r->valuestring;
    size_t cl = strlen(cs), rl = strlen(rs), cp, rp;
    if (!data_dialogue_prompt_len(cs, cl, &cp) || !data_dialogue_prompt_len(rs, rl, &rp)) {
        reason = DATA_HH_NO_ASSISTANT;
    } else if (cp != rp || memcmp(cs, rs, cp) != 0) {
        reason = DATA_HH_PROMPT_MISMATCH;
    } else {
        const char *ca = cs + cp, *ra = rs + rp;
        if (*ca == ' ')
            ca++;
        if (*ra == ' ')
            ra++;
        if (!strcmp(ca, ra)) {
            reason = DATA_HH_IDENTICAL;
        } else {
            pair->prompt = dup_range(cs, cp);
            pair->chosen = strdup(ca);
            pair->rejected = strdup(ra);
            if (!pair->prompt || !pair->chosen || !pair->rejected) {
                data_pair_free(pair);
                err_set(e, ERR_NOMEM, "out of memory copying a pair");
                reason = -2;
            }
        }
    }
    cJSON_Delete(j);
    return reason;
}

int data_hh_read(const char *path, const data_hh_opts_t *opts, data_hh_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    data_hh_opts_t o = opts ? *opts : (data_hh_opts_t){0};
    if (!o.max_line)
        o.max_line = (size_t)64 << 20;
    int rc = data_file_crc32(path, &out->file_bytes, &out->file_crc32, &out->gzip, e);
    if (rc)
        return rc;
    out->skip_bad = o.skip_bad;
    out->path = strdup(path);
    if (!out->path)
        return err_set(e, ERR_NOMEM, "out of memory");
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        rc = err_errno(e, ERR_FAIL, "open %s", path);
        data_hh_free(out);
        return rc;
    }
    gzbuffer(gz, 1 << 18);
    size_t cap = 1 << 16, len, pcap = 0;
    char *buf = malloc(cap);
    if (!buf) {
        gzclose(gz);
        data_hh_free(out);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (;;) {
        size_t lineno = out->lines + 1;
        bool got;
        rc = read_line(gz, path, lineno, o.max_line, &buf, &cap, &len, &got, e);
        if (rc)
            goto fail;
        if (!got)
            break;
        out->lines = lineno;
        if (blank(buf))
            continue;
        out->records++;
        data_pair_t pair = {0};
        const char *why = NULL;
        int reason = classify(buf, len, &pair, &why, e);
        if (reason == -2) {
            rc = e ? e->code : ERR_NOMEM;
            goto fail;
        }
        if (reason == DATA_HH_MALFORMED && !o.skip_bad) {
            rc = err_set(e, ERR_INPUT, "%s: line %zu: %s (the skip_bad option counts such "
                         "lines instead)", path, lineno, why);
            goto fail;
        }
        if (reason >= 0) {
            rc = data_lines_push(&out->rejected[reason], lineno, e);
            if (rc)
                goto fail;
            continue;
        }
        if (out->npairs == pcap) {
            size_t nc = pcap ? 2 * pcap : 1024;
            data_pair_t *p = realloc(out->pairs, nc * sizeof *p);
            if (!p) {
                data_pair_free(&pair);
                rc = err_set(e, ERR_NOMEM, "out of memory holding %zu pairs", nc);
                goto fail;
            }
            out->pairs = p;
            pcap = nc;
        }
        pair.line = lineno;
        out->pairs[out->npairs++] = pair;
    }
    free(buf);
    gzclose(gz);
    return ERR_OK;
fail:
    free(buf);
    gzclose(gz);
    data_hh_free(out);
    return rc;
}
