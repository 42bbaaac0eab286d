/* split: seeded draw, over-long rule, prompt-disjoint splits and their JSON record
 * (see split.h and docs/data.md). */
#include "data/split.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"
#include "util/rng.h"

#define RECORD_FORMAT "mxrlhf-data-split"
#define RECORD_VERSION 1

static const char *const split_names[DATA_NSPLITS] = {"rm_train", "rm_eval", "judge_train",
                                                      "ppo_prompts", "eval_prompts"};
static const char *const drop_names[DATA_NDROPS] = {"prompt_too_long", "response_too_long"};

const char *data_split_name(int split)
{
    return split >= 0 && split < DATA_NSPLITS ? split_names[split] : "?";
}

int data_split_from_name(const char *name)
{
    for (int s = 0; s < DATA_NSPLITS; s++)
        if (!strcmp(name, split_names[s]))
            return s;
    return -1;
}

const char *data_drop_name(int drop)
{
    return drop >= 0 && drop < DATA_NDROPS ? drop_names[drop] : "?";
}

void data_select_opts_default(data_select_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->pairs = DATA_DEFAULT_PAIRS;
    o->seed = DATA_DEFAULT_SEED;
    o->max_prompt_tokens = DATA_DEFAULT_MAX_PROMPT_TOKENS;
    o->max_response_tokens = DATA_DEFAULT_MAX_RESPONSE_TOKENS;
    o->fractions[DATA_SPLIT_RM_TRAIN] = DATA_DEFAULT_RM_TRAIN;
    o->fractions[DATA_SPLIT_RM_EVAL] = DATA_DEFAULT_RM_EVAL;
    o->fractions[DATA_SPLIT_JUDGE_TRAIN] = DATA_DEFAULT_JUDGE_TRAIN;
    o->fractions[DATA_SPLIT_PPO] = DATA_DEFAULT_PPO;
    o->fractions[DATA_SPLIT_EVAL] = DATA_DEFAULT_EVAL;
}

void data_split_free(data_split_record_t *rec)
{
    if (!rec)
        return;
    free(rec->source_path);
    free(rec->token_counter);
    for (int r = 0; r < DATA_HH_NREASONS; r++)
        data_lines_free(&rec->rejected[r]);
    for (int d = 0; d < DATA_NDROPS; d++)
        data_lines_free(&rec->dropped[d]);
    for (int s = 0; s < DATA_NSPLITS; s++)
        data_lines_free(&rec->split[s]);
    memset(rec, 0, sizeof *rec);
}

static int check_fractions(const double *f, const char *ctx, err_t *e)
{
    double sum = 0;
    for (int s = 0; s < DATA_NSPLITS; s++) {
        if (!(f[s] >= 0 && f[s] <= 1))
            return err_set(e, ERR_INPUT, "%s: fraction for %s is %g, expected a number in "
                           "[0, 1]", ctx, split_names[s], f[s]);
        sum += f[s];
    }
    if (fabs(sum - 1) > 1e-9)
        return err_set(e, ERR_INPUT, "%s: split fractions sum to %.12g, expected 1 "
                       "(rm_train %g, rm_eval %g, judge_train %g, ppo_prompts %g, "
                       "eval_prompts %g)", ctx, sum, f[0], f[1], f[2], f[3], f[4]);
    return ERR_OK;
}

/* A 64-bit draw reduced modulo bound: the bias is below bound / 2^64, unmeasurable. */
static uint64_t draw_below(uint64_t seed, uint64_t stream, uint64_t i, uint64_t bound)
{
    uint64_t x = ((uint64_t)rng_u32(seed, stream, 2 * i) << 32) | rng_u32(seed, stream, 2 * i + 1);
    return x % bound;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Targets per split summing to n: floor(f*n), then the remainder to the largest
 * fractional parts (earlier split first on equal parts). */
static void split_targets(const double *f, size_t n, size_t *t)
{
    size_t sum = 0;
    double rem[DATA_NSPLITS];
    for (int s = 0; s < DATA_NSPLITS; s++) {
        double x = f[s] * (double)n;
        t[s] = (size_t)floor(x + 1e-9);
        if (t[s] > n)
            t[s] = n;
        rem[s] = x - (double)t[s];
        sum += t[s];
    }
    while (sum < n) {
        int best = -1;
        for (int s = 0; s < DATA_NSPLITS; s++)
            if (f[s] > 0 && (best < 0 || rem[s] > rem[best] + 1e-12))
                best = s;
        if (best < 0)
            best = 0;
        t[best]++;
        rem[best] -= 1;
        sum++;
    }
    while (sum > n) { /* only from rounding noise; take from the largest */
        int best = 0;
        for (int s = 1; s < DATA_NSPLITS; s++)
            if (t[s] > t[best])
                best = s;
        t[best]--;
        sum--;
    }
}

static int copy_lines(data_lines_t *dst, const data_lines_t *src, err_t *e)
{
    for (size_t i = 0; i < src->n; i++) {
        int rc = data_lines_push(dst, src->v[i], e);
        if (rc)
            return rc;
    }
    return ERR_OK;
}

int data_split_make(const data_hh_t *src, const data_select_opts_t *o,
                    data_split_record_t *rec, err_t *e)
{
    memset(rec, 0, sizeof *rec);
    int rc = check_fractions(o->fractions, "split options", e);
    if (rc)
        return rc;
    if (o->pairs == 0)
        return err_set(e, ERR_INPUT, "split options: pairs is 0, expected at least 1");

    rec->source_path = strdup(src->path ? src->path : "");
    rec->token_counter = strdup(data_counter_name(&o->counter));
    if (!rec->source_path || !rec->token_counter) {
        data_split_free(rec);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    rec->source_bytes = src->file_bytes;
    rec->source_crc32 = src->file_crc32;
    rec->source_gzip = src->gzip;
    rec->skip_bad = src->skip_bad;
    rec->source_lines = src->lines;
    rec->source_records = src->records;
    rec->source_pairs = src->npairs;
    rec->seed = o->seed;
    rec->pairs_requested = o->pairs;
    rec->max_prompt_tokens = o->max_prompt_tokens;
    rec->max_response_tokens = o->max_response_tokens;
    memcpy(rec->fractions, o->fractions, sizeof rec->fractions);
    for (int r = 0; r < DATA_HH_NREASONS && !rc; r++)
        rc = copy_lines(&rec->rejected[r], &src->rejected[r], e);
    if (rc) {
        data_split_free(rec);
        return rc;
    }

    size_t n = src->npairs;
    size_t *perm = malloc((n ? n : 1) * sizeof *perm);
    size_t want = o->pairs < n ? o->pairs : n;
    size_t *sel = malloc((want ? want : 1) * sizeof *sel);
    size_t *group = malloc((want ? want : 1) * sizeof *group);
    size_t hcap = 16;
    while (hcap < 2 * want)
        hcap *= 2;
    size_t *table = malloc(hcap * sizeof *table); /* selected index + 1, 0 = empty */
    size_t *gsize = calloc(want ? want : 1, sizeof *gsize);
    int *gsplit = malloc((want ? want : 1) * sizeof *gsplit);
    if (!perm || !sel || !group || !table || !gsize || !gsplit) {
        rc = err_set(e, ERR_NOMEM, "out of memory drawing %zu pairs", want);
        goto done;
    }

    /* Fisher-Yates: position i swaps with a draw in [0, i], from the top down. */
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    uint64_t stream = rng_stream("data.split.shuffle", 0);
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)draw_below(o->seed, stream, i, (uint64_t)i + 1);
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }

    /* Walk the shuffled pool; over-long pairs are dropped and replaced by the next. */
    size_t nsel = 0;
    for (size_t k = 0; k < n && nsel < want; k++) {
        const data_pair_t *p = &src->pairs[perm[k]];
        rec->examined++;
        int drop = -1;
        if (o->max_prompt_tokens &&
            data_count_tokens(&o->counter, p->prompt) > o->max_prompt_tokens) {
            drop = DATA_DROP_PROMPT_TOO_LONG;
        } else if (o->max_response_tokens &&
                   (data_count_tokens(&o->counter, p->chosen) > o->max_response_tokens ||
                    data_count_tokens(&o->counter, p->rejected) > o->max_response_tokens)) {
            drop = DATA_DROP_RESPONSE_TOO_LONG;
        }
        if (drop >= 0) {
            rc = data_lines_push(&rec->dropped[drop], p->line, e);
            if (rc)
                goto done;
            continue;
        }
        sel[nsel++] = perm[k];
    }
    rec->pairs_delivered = nsel;

    /* Groups of identical prompts, numbered by first appearance in the draw. */
    memset(table, 0, hcap * sizeof *table);
    size_t ngroups = 0;
    for (size_t i = 0; i < nsel; i++) {
        const char *prompt = src->pairs[sel[i]].prompt;
        size_t h = (size_t)(fnv1a(prompt) & (hcap - 1));
        for (;;) {
            if (!table[h]) {
                table[h] = i + 1;
                group[i] = ngroups++;
                break;
            }
            size_t other = table[h] - 1;
            if (!strcmp(src->pairs[sel[other]].prompt, prompt)) {
                group[i] = group[other];
                break;
            }
            h = (h + 1) & (hcap - 1);
        }
        gsize[group[i]]++;
    }
    rec->prompt_groups = ngroups;
    for (size_t g = 0; g < ngroups; g++)
        if (gsize[g] > rec->largest_prompt_group)
            rec->largest_prompt_group = gsize[g];

    /* Whole groups fill the splits in order up to the cumulative targets. */
    size_t target[DATA_NSPLITS], cum[DATA_NSPLITS], placed = 0, acc = 0;
    split_targets(o->fractions, nsel, target);
    for (int s = 0; s < DATA_NSPLITS; s++)
        cum[s] = (acc += target[s]);
    for (size_t g = 0; g < ngroups; g++) {
        int s = 0;
        while (s < DATA_NSPLITS - 1 && placed >= cum[s])
            s++;
        gsplit[g] = s;
        placed += gsize[g];
    }
    for (size_t i = 0; i < nsel && !rc; i++)
        rc = data_lines_push(&rec->split[gsplit[group[i]]], src->pairs[sel[i]].line, e);

done:
    free(perm);
    free(sel);
    free(group);
    free(table);
    free(gsize);
    free(gsplit);
    if (rc)
        data_split_free(rec);
    return rc;
}

/* ---- the JSON record ---------------------------------------------------------------- */

static cJSON *lines_json(const data_lines_t *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)l->n);
    cJSON *a = cJSON_AddArrayToObject(o, "lines");
    for (size_t i = 0; a && i < l->n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber((double)l->v[i]));
    return o;
}

int data_split_write(const char *path, const data_split_record_t *rec, err_t *e)
{
    cJSON *root = cJSON_CreateObject();
    char buf[32];
    cJSON_AddStringToObject(root, "format", RECORD_FORMAT);
    cJSON_AddNumberToObject(root, "version", RECORD_VERSION);

    cJSON *src = cJSON_AddObjectToObject(root, "source");
    cJSON_AddStringToObject(src, "path", rec->source_path ? rec->source_path : "");
    cJSON_AddNumberToObject(src, "bytes", (double)rec->source_bytes);
    snprintf(buf, sizeof buf, "%08" PRIx32, rec->source_crc32);
    cJSON_AddStringToObject(src, "crc32", buf);
    cJSON_AddBoolToObject(src, "gzip", rec->source_gzip);
    cJSON_AddBoolToObject(src, "skip_bad", rec->skip_bad);
    cJSON_AddNumberToObject(src, "lines", (double)rec->source_lines);
    cJSON_AddNumberToObject(src, "records", (double)rec->source_records);
    cJSON_AddNumberToObject(src, "pairs_usable", (double)rec->source_pairs);
    cJSON *rej = cJSON_AddObjectToObject(src, "rejected");
    for (int r = 0; r < DATA_HH_NREASONS; r++)
        cJSON_AddItemToObject(rej, data_hh_reason_name(r), lines_json(&rec->rejected[r]));

    cJSON *sel = cJSON_AddObjectToObject(root, "selection");
    snprintf(buf, sizeof buf, "%" PRIu64, rec->seed);
    cJSON_AddStringToObject(sel, "seed", buf);
    cJSON_AddNumberToObject(sel, "pairs_requested", (double)rec->pairs_requested);
    cJSON_AddNumberToObject(sel, "pairs_delivered", (double)rec->pairs_delivered);
    cJSON_AddNumberToObject(sel, "examined", (double)rec->examined);
    cJSON_AddStringToObject(sel, "token_counter", rec->token_counter ? rec->token_counter : "");
    cJSON_AddNumberToObject(sel, "max_prompt_tokens", (double)rec->max_prompt_tokens);
    cJSON_AddNumberToObject(sel, "max_response_tokens", (double)rec->max_response_tokens);
    cJSON *drop = cJSON_AddObjectToObject(sel, "dropped");
    for (int d = 0; d < DATA_NDROPS; d++)
        cJSON_AddItemToObject(drop, drop_names[d], lines_json(&rec->dropped[d]));
    cJSON_AddNumberToObject(sel, "prompt_groups", (double)rec->prompt_groups);
    cJSON_AddNumberToObject(sel, "largest_prompt_group", (double)rec->largest_prompt_group);

    cJSON *splits = cJSON_AddObjectToObject(root, "splits");
    for (int s = 0; s < DATA_NSPLITS; s++) {
        cJSON *o = lines_json(&rec->split[s]);
        cJSON_AddNumberToObject(o, "fraction", rec->fractions[s]);
        cJSON_AddItemToObject(splits, split_names[s], o);
    }
    int rc = json_write_file(path, root, true, e);
    cJSON_Delete(root);
    return rc;
}

static int req_obj(const cJSON *obj, const char *key, const char *ctx, const cJSON **out,
                   err_t *e)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsObject(o))
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected an object", ctx, key);
    *out = o;
    return ERR_OK;
}

static int req_size(const cJSON *obj, const char *key, const char *ctx, size_t *out, err_t *e)
{
    long long v = 0;
    int rc = json_req_int(obj, key, ctx, &v, e);
    if (rc)
        return rc;
    if (v < 0)
        return err_set(e, ERR_INPUT, "%s: field \"%s\": expected a non-negative integer, got "
                       "%lld", ctx, key, v);
    *out = (size_t)v;
    return ERR_OK;
}

/* {"count": n, "lines": [...]} with 1 <= line <= max_line and count == length. */
static int read_lines(const cJSON *parent, const char *key, const char *ctx, size_t max_line,
                      data_lines_t *out, err_t *e)
{
    const cJSON *o = NULL;
    int rc = req_obj(parent, key, ctx, &o, e);
    size_t count = 0;
    if (!rc)
        rc = req_size(o, "count", ctx, &count, e);
    if (rc)
        return err_prefix(e, "in \"%s\": ", key);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "lines");
    if (!cJSON_IsArray(a))
        return err_set(e, ERR_INPUT, "%s: field \"%s.lines\": expected an array", ctx, key);
    const cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        double v = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (!(v >= 1 && v <= (double)max_line && v == floor(v)))
            return err_set(e, ERR_INPUT, "%s: field \"%s.lines\": expected line numbers in "
                           "[1, %zu]", ctx, key, max_line);
        rc = data_lines_push(out, (size_t)v, e);
        if (rc)
            return rc;
    }
    if (out->n != count)
        return err_set(e, ERR_INPUT, "%s: field \"%s.count\" is %zu but \"lines\" has %zu",
                       ctx, key, count, out->n);
    return ERR_OK;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static int parse_record(const cJSON *root, const char *ctx, data_split_record_t *rec, err_t *e)
{
    const char *s;
    long long version;
    int rc = json_req_string(root, "format", ctx, &s, e);
    if (rc)
        return rc;
    if (strcmp(s, RECORD_FORMAT))
        return err_set(e, ERR_INPUT, "%s: field \"format\" is \"%s\", expected \"%s\"", ctx, s,
                       RECORD_FORMAT);
    if ((rc = json_req_int(root, "version", ctx, &version, e)))
        return rc;
    if (version != RECORD_VERSION)
        return err_set(e, ERR_INPUT, "%s: field \"version\" is %lld, expected %d", ctx, version,
                       RECORD_VERSION);

    const cJSON *src = NULL, *sel = NULL, *splits = NULL, *rej = NULL, *drop = NULL;
    if ((rc = req_obj(root, "source", ctx, &src, e)) ||
        (rc = req_obj(root, "selection", ctx, &sel, e)) ||
        (rc = req_obj(root, "splits", ctx, &splits, e)))
        return rc;
    long long bytes;
    if ((rc = json_req_string(src, "path", ctx, &s, e)))
        return rc;
    if (!(rec->source_path = strdup(s)))
        return err_set(e, ERR_NOMEM, "out of memory");
    if ((rc = json_req_int(src, "bytes", ctx, &bytes, e)))
        return rc;
    if (bytes < 0)
        return err_set(e, ERR_INPUT, "%s: field \"source.bytes\" is negative", ctx);
    rec->source_bytes = (uint64_t)bytes;
    if ((rc = json_req_string(src, "crc32", ctx, &s, e)))
        return rc;
    char *end;
    unsigned long crc = strtoul(s, &end, 16);
    if (strlen(s) != 8 || *end || crc > 0xffffffffUL)
        return err_set(e, ERR_INPUT, "%s: field \"source.crc32\" is \"%s\", expected 8 hex "
                       "digits", ctx, s);
    rec->source_crc32 = (uint32_t)crc;
    if ((rc = json_req_bool(src, "gzip", ctx, &rec->source_gzip, e)) ||
        (rc = json_req_bool(src, "skip_bad", ctx, &rec->skip_bad, e)) ||
        (rc = req_size(src, "lines", ctx, &rec->source_lines, e)) ||
        (rc = req_size(src, "records", ctx, &rec->source_records, e)) ||
        (rc = req_size(src, "pairs_usable", ctx, &rec->source_pairs, e)) ||
        (rc = req_obj(src, "rejected", ctx, &rej, e)))
        return rc;
    size_t maxl = rec->source_lines;
    for (int r = 0; r < DATA_HH_NREASONS; r++)
        if ((rc = read_lines(rej, data_hh_reason_name(r), ctx, maxl, &rec->rejected[r], e)))
            return rc;

    if ((rc = json_req_string(sel, "seed", ctx, &s, e)))
        return rc;
    errno = 0;
    unsigned long long seed = strtoull(s, &end, 10);
    if (!*s || *end || *s == '-' || errno)
        return err_set(e, ERR_INPUT, "%s: field \"selection.seed\" is \"%s\", expected a "
                       "decimal 64-bit integer", ctx, s);
    rec->seed = seed;
    if ((rc = req_size(sel, "pairs_requested", ctx, &rec->pairs_requested, e)) ||
        (rc = req_size(sel, "pairs_delivered", ctx, &rec->pairs_delivered, e)) ||
        (rc = req_size(sel, "examined", ctx, &rec->examined, e)) ||
        (rc = json_req_string(sel, "token_counter", ctx, &s, e)))
        return rc;
    if (!(rec->token_counter = strdup(s)))
        return err_set(e, ERR_NOMEM, "out of memory");
    if ((rc = req_size(sel, "max_prompt_tokens", ctx, &rec->max_prompt_tokens, e)) ||
        (rc = req_size(sel, "max_response_tokens", ctx, &rec->max_response_tokens, e)) ||
        (rc = req_size(sel, "prompt_groups", ctx, &rec->prompt_groups, e)) ||
        (rc = req_size(sel, "largest_prompt_group", ctx, &rec->largest_prompt_group, e)) ||
        (rc = req_obj(sel, "dropped", ctx, &drop, e)))
        return rc;
    for (int d = 0; d < DATA_NDROPS; d++)
        if ((rc = read_lines(drop, drop_names[d], ctx, maxl, &rec->dropped[d], e)))
            return rc;

    size_t total = 0;
    for (int k = 0; k < DATA_NSPLITS; k++) {
        if ((rc = read_lines(splits, split_names[k], ctx, maxl, &rec->split[k], e)))
            return rc;
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(splits, split_names[k]);
        if ((rc = json_req_double(o, "fraction", ctx, &rec->fractions[k], e)))
            return err_prefix(e, "in \"%s\": ", split_names[k]);
        total += rec->split[k].n;
    }
    if ((rc = check_fractions(rec->fractions, ctx, e)))
        return rc;
    if (total != rec->pairs_delivered)
        return err_set(e, ERR_INPUT, "%s: the splits hold %zu pairs but "
                       "\"selection.pairs_delivered\" is %zu", ctx, total, rec->pairs_delivered);

    /* No line may sit in two splits (nor twice in one). */
    size_t *all = malloc((total ? total : 1) * sizeof *all);
    if (!all)
        return err_set(e, ERR_NOMEM, "out of memory");
    size_t k = 0;
    for (int sp = 0; sp < DATA_NSPLITS; sp++)
        for (size_t i = 0; i < rec->split[sp].n; i++)
            all[k++] = rec->split[sp].v[i];
    qsort(all, total, sizeof *all, cmp_size);
    for (size_t i = 1; i < total && !rc; i++)
        if (all[i] == all[i - 1])
            rc = err_set(e, ERR_INPUT, "%s: line %zu is listed twice in \"splits\"", ctx,
                         all[i]);
    free(all);
    return rc;
}

int data_split_read(const char *path, data_split_record_t *rec, err_t *e)
{
    memset(rec, 0, sizeof *rec);
    cJSON *root;
    int rc = json_load_file(path, (size_t)1 << 30, &root, e);
    if (rc)
        return rc;
    rc = parse_record(root, path, rec, e);
    cJSON_Delete(root);
    if (rc)
        data_split_free(rec);
    return rc;
}

int data_split_pairs(const data_hh_t *src, const data_split_record_t *rec, int split,
                     const data_pair_t ***out, size_t *n, err_t *e)
{
    *out = NULL;
    *n = 0;
    if (split < 0 || split >= DATA_NSPLITS)
        return err_set(e, ERR_INPUT, "no split number %d", split);
    if (src->file_bytes != rec->source_bytes || src->file_crc32 != rec->source_crc32)
        return err_set(e, ERR_INPUT, "%s (%" PRIu64 " bytes, CRC-32 %08" PRIx32 ") is not the "
                       "file the split record was made from (%s, %" PRIu64 " bytes, CRC-32 "
                       "%08" PRIx32 ")", src->path, src->file_bytes, src->file_crc32,
                       rec->source_path, rec->source_bytes, rec->source_crc32);
    const data_lines_t *l = &rec->split[split];
    const data_pair_t **v = malloc((l->n ? l->n : 1) * sizeof *v);
    if (!v)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < l->n; i++) {
        v[i] = data_hh_find_line(src, l->v[i]);
        if (!v[i]) {
            free(v);
            return err_set(e, ERR_INPUT, "%s: split record puts line %zu in %s, but that "
                           "line is not a usable pair",
                           src->path, l->v[i], split_names[split]);
        }
    }
    *out = v;
    *n = l->n;
    return ERR_OK;
}
