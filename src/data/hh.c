/* hh: HH-RLHF reader (see hh.h). One pass over the stored bytes for size and CRC-32,
 * one pass through zlib's gzFile for the lines; lines are parsed with cJSON. */
#include "data/hh.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util/fs.h"
#include "util/json.h"

static const char *const reason_names[DATA_HH_NREASONS] = {
    "malformed", "no_assistant", "prompt_mismatch", "identical"};

const char *data_hh_reason_name(int reason)
{
    return reason >= 0 && reason < DATA_HH_NREASONS ? reason_names[reason] : "?";
}

int data_file_crc32(const char *path, uint64_t *bytes, uint32_t *crc, bool *gzip, err_t *e)
{
    unsigned char magic[2];
    uint64_t n = 0;
    uint32_t c = (uint32_t)crc32(0L, Z_NULL, 0);
    if (fs_crc32(path, &c, &n, magic, e))
        return e->code;
    *bytes = n;
    *crc = c;
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

/* The decompressed text, line by line: gzread into a buffer, lines cut at '\n' with their
 * length (a NUL byte inside stays in the line, so it is reported, never lost). */
typedef struct lines {
    gzFile gz;
    const char *path;
    bool gzip;
    size_t max_line;
    char *buf;
    size_t cap, start, end; /* unread text is buf[start, end) */
    bool eof;               /* gzread reported the end (or the damage) */
    int zerr;               /* the decompression error at eof, Z_OK when none */
    char zmsg[256];
} lines_t;

/* Fills the buffer with more text; at the end records whether the stream was whole. */
static int lines_fill(lines_t *L, err_t *e)
{
    if (L->start > 0) {
        memmove(L->buf, L->buf + L->start, L->end - L->start);
        L->end -= L->start;
        L->start = 0;
    }
    if (L->cap - L->end < (1 << 16)) {
        size_t nc = L->cap * 2;
        char *b = realloc(L->buf, nc);
        if (!b)
            return err_set(e, ERR_NOMEM, "%s: out of memory for a line of %zu bytes", L->path,
                           L->end);
        L->buf = b;
        L->cap = nc;
    }
    size_t want = L->cap - L->end - 1;
    int got = gzread(L->gz, L->buf + L->end, (unsigned)(want > (1u << 30) ? (1u << 30) : want));
    if (got > 0) {
        L->end += (size_t)got;
        return ERR_OK;
    }
    /* A damaged stream hands back the text decoded before the damage (a truncated one all
     * of it); the error shows once that text is used up. */
    L->eof = true;
    const char *msg = gzerror(L->gz, &L->zerr);
    if (L->zerr != Z_OK) {
        if (L->zerr == Z_ERRNO)
            return err_errno(e, ERR_FAIL, "reading %s", L->path);
        /* zlib writes "PATH: what"; the path is said once, by the caller's message */
        size_t pl = strlen(L->path);
        if (msg && !strncmp(msg, L->path, pl) && !strncmp(msg + pl, ": ", 2))
            msg += pl + 2;
        snprintf(L->zmsg, sizeof L->zmsg, "%s", msg ? msg : "?");
    }
    return ERR_OK;
}

/* The damage as an error, at the line where the text breaks off. `bad`, when not NULL,
 * is what was wrong with line `lineno` (damage can decode as garbage before zlib sees
 * it). */
static int lines_damaged(const lines_t *L, size_t lineno, const char *bad, err_t *e)
{
    if (L->zerr == Z_BUF_ERROR)
        return err_set(e, ERR_INPUT, "%s: line %zu: the gzip data ends early (%s): the file is "
                       "truncated or damaged", L->path, lineno, L->zmsg);
    if (strstr(L->zmsg, "check") && bad)
        return err_set(e, ERR_INPUT, "%s: the gzip file is damaged (%s): its text does not "
                       "match its checksum, and line %zu came out as %.300s", L->path, L->zmsg,
                       lineno, bad);
    if (strstr(L->zmsg, "check"))
        return err_set(e, ERR_INPUT, "%s: the gzip file is damaged (%s): its text does not "
                       "match its checksum", L->path, L->zmsg);
    return err_set(e, ERR_INPUT, "%s: line %zu: the gzip file is damaged (%s): the text does "
                   "not decompress from about here", L->path, lineno, L->zmsg);
}

/* The next line (without its '\n' and a CR before it) in *line, *len; *got is false at
 * the end of the text. The line stays valid until the next call. */
static int lines_next(lines_t *L, size_t lineno, char **line, size_t *len, bool *got,
                      err_t *e)
{
    *got = false;
    size_t searched = 0; /* bytes of this line already searched for the newline */
    for (;;) {
        char *from = L->buf + L->start + searched;
        char *nl = memchr(from, '\n', L->end - L->start - searched);
        if (nl) {
            *line = L->buf + L->start;
            *len = (size_t)(nl - *line);
            L->start = (size_t)(nl - L->buf) + 1;
            break;
        }
        searched = L->end - L->start;
        if (searched > L->max_line)
            return err_set(e, ERR_INPUT, "%s: line %zu: longer than %zu bytes", L->path, lineno,
                           L->max_line);
        if (L->eof) {
            if (L->zerr != Z_OK)
                return lines_damaged(L, lineno, NULL, e);
            if (!searched)
                return ERR_OK;
            *line = L->buf + L->start; /* the last line, without a final newline */
            *len = searched;
            L->start = L->end;
            break;
        }
        int rc = lines_fill(L, e);
        if (rc)
            return rc;
    }
    *got = true;
    while (*len > 0 && (*line)[*len - 1] == '\r')
        --*len;
    (*line)[*len] = '\0'; /* over the '\n' (or the spare byte lines_fill keeps) */
    if (*len > L->max_line)
        return err_set(e, ERR_INPUT, "%s: line %zu: longer than %zu bytes", L->path, lineno,
                       L->max_line);
    return ERR_OK;
}

/* After a bad line of a gzip file: reads on to the end, so that damage to the stream
 * (which can decode as garbage before zlib notices) is reported as damage. */
static bool lines_damaged_later(lines_t *L)
{
    while (L->gzip && !L->eof) {
        L->start = L->end = 0;
        if (lines_fill(L, NULL))
            return false;
    }
    return L->zerr != Z_OK;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
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

/* Classifies one line. Returns a reason, -1 for a usable pair (then *pair is filled), or
 * -2 with e set when memory ran out. `why` (cap bytes) explains a malformed line. Texts
 * cannot hold NUL: a NUL byte or a \u0000 escape makes the line malformed (cJSON would
 * cut the string there, and two different responses could then compare equal). */
static int classify(const char *text, size_t len, data_pair_t *pair, char *why, size_t cap,
                    err_t *e)
{
    bool esc;
    long nul = json_find_nul(text, len, &esc);
    if (nul >= 0) {
        snprintf(why, cap, "%s at column %ld (texts cannot hold NUL)",
                 esc ? "a \\u0000 escape" : "a NUL byte", nul + 1);
        return DATA_HH_MALFORMED;
    }
    if (!data_utf8_valid(text, len)) {
        snprintf(why, cap, "not valid UTF-8");
        return DATA_HH_MALFORMED;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) {
        snprintf(why, cap, "invalid JSON");
        return DATA_HH_MALFORMED;
    }
    err_t de = ERR_INIT;
    if (json_check_unique_keys(j, "", &de)) {
        if (de.code == ERR_NOMEM) {
            cJSON_Delete(j);
            err_set(e, ERR_NOMEM, "out of memory checking a line's keys");
            return -2;
        }
        snprintf(why, cap, "%s", de.msg + 2); /* without the empty context's ": " */
        cJSON_Delete(j);
        return DATA_HH_MALFORMED;
    }
    int reason = -1;
    const cJSON *c = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "chosen") : NULL;
    const cJSON *r = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "rejected") : NULL;
    if (!cJSON_IsObject(j)) {
        snprintf(why, cap, "expected a JSON object");
        reason = DATA_HH_MALFORMED;
    } else if (!cJSON_IsString(c) || !cJSON_IsString(r)) {
        snprintf(why, cap, "expected string fields \"chosen\" and \"rejected\"");
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
    lines_t L = {.path = path, .gzip = out->gzip, .max_line = o.max_line, .cap = 1 << 16};
    L.gz = gzopen(path, "rb");
    if (!L.gz) {
        rc = err_errno(e, ERR_FAIL, "open %s", path);
        data_hh_free(out);
        return rc;
    }
    gzbuffer(L.gz, 1 << 18);
    size_t len, pcap = 0;
    char *text;
    L.buf = malloc(L.cap);
    if (!L.buf) {
        gzclose(L.gz);
        data_hh_free(out);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    size_t lineno;
    char why[512];
    const char *why_bad = NULL; /* what was wrong with the line that stopped the read */
    for (;;) {
        lineno = out->lines + 1;
        bool got;
        rc = lines_next(&L, lineno, &text, &len, &got, e);
        if (rc)
            goto bad_line;
        if (!got)
            break;
        out->lines = lineno;
        if (blank(text, len))
            continue;
        out->records++;
        data_pair_t pair = {0};
        int reason = classify(text, len, &pair, why, sizeof why, e);
        if (reason == -2) {
            rc = e ? e->code : ERR_NOMEM;
            goto fail;
        }
        if (reason == DATA_HH_MALFORMED && !o.skip_bad) {
            why_bad = why;
            rc = err_set(e, ERR_INPUT, "%s: line %zu: %s (the skip_bad option counts such "
                         "lines instead)", path, lineno, why);
            goto bad_line;
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
    free(L.buf);
    gzclose(L.gz);
    return ERR_OK;
bad_line:
    /* A bad line in a gzip file may be damage that decoded as garbage: say so if it is. */
    if (rc == ERR_INPUT && L.gzip && !L.eof && lines_damaged_later(&L)) {
        err_clear(e);
        rc = lines_damaged(&L, lineno, why_bad, e);
    }
fail:
    free(L.buf);
    gzclose(L.gz);
    data_hh_free(out);
    return rc;
}
