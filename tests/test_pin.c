/* Pins what the refactors of issue 21 must not change, against fixtures taken from the
 * code before them (commit d8503b9): `mxrlhf config` byte for byte, and the files of a
 * whole `mxrlhf run` on a tiny configuration, minus what varies from run to run (times,
 * energies, load, the machine).
 *
 * tests/fixtures/pin/config.json        `mxrlhf config` of d8503b9
 * tests/fixtures/pin/tiny.json          the tiny configuration
 * tests/fixtures/pin/tiny_outputs.txt   one line per file of the run's output directory:
 *                                       "PATH KIND DIGEST VOLATILE", where KIND says how the
 *                                       file is compared: bytes (exactly), json / jsonl (the
 *                                       values at the VOLATILE paths set to null: keys joined
 *                                       by '>', "[]" for array elements), csv (the VOLATILE
 *                                       columns emptied), numbers (every number replaced by
 *                                       '#': the text but not its numbers), exists
 *
 * The run records relative paths only (it runs in its directory), and uses one thread and
 * OpenBLAS's Haswell kernels, so that the float sums happen in one order on any x86-64
 * machine with AVX2.
 *
 * The fixtures are made by this program in write mode with the mxrlhf of the code before
 * the refactors, never with the code under test:
 *   MXRLHF_PIN_WRITE=1 MXRLHF_PIN_FROM="<commit>" MXRLHF_BIN=<that build>/build/asan/mxrlhf \
 *       build/asan/tests/test_pin
 * which runs the chain three times and marks as volatile what differed between the runs, or
 * what names a time or the machine (VOLATILE_KEYS, VOLATILE_FIGURES below). They were first
 * taken at d8503b9; main's deterministic CPU GEMMs (4d767a9) then changed PPO's last bits
 * and its report a sentence (native-weights), so they were taken again with main's own
 * mxrlhf (135b412), which has none of issue 21's refactors of the options, the device or the
 * files (only its MX/Philox header, which changes no bit); the configuration is
 * byte-identical at all three. Issue 21's one deliberate change to the configuration, the
 * sections' device key named "device" (was "backend"): the fixtures were taken again from
 * 135b412 with that one rename applied (tiny_outputs.txt says so in its first line). Issue
 * 20 added one section ("dist": {"gpus": 1}): config.json gained it, and so did the run's
 * config.json, whose line holds the digest of `mxrlhf config --config tiny.json` with it (those
 * bytes without the section give the digest taken from 135b412); nothing else changed. */
#include <ctype.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "support/testutil.h"

#define FIXTURE(name) test_fixture_path("pin/" name)

/* Keys and columns that are times, energies, rates or the machine in any file: volatile
 * whether or not two runs on one machine happened to agree on them. */
static const char *const VOLATILE_KEYS[] = {
    "seconds", "cpu_seconds", "finished", "started", "machine", "cpu", "cores", "host",
    "hostname", "load_average_start", "load_average_end", "load_average", "elapsed_s",
    "tokens_per_s", "wall_s", NULL};

/* Figures of measured time or energy (their shapes follow the timings): only their presence
 * is pinned. */
static const char *const VOLATILE_FIGURES[] = {"power_over_time", "runs_in_order",
                                               "runtime_by_plan", "energy_by_phase",
                                               "quality_vs_runtime", NULL};

static bool volatile_figure(const char *rel)
{
    for (int i = 0; VOLATILE_FIGURES[i]; i++)
        if (strstr(rel, VOLATILE_FIGURES[i]))
            return true;
    return false;
}

/* What later issues added to the outputs on purpose, after the fixtures were taken: taken
 * out before digesting (in write mode too), so the pin still holds everything else to the
 * fixtures. Issue 18 added the options ppo.rollout_correction and ppo.tis_cap (default
 * none: the run's numbers are unchanged; their keys appear wherever the ppo section is
 * written, and the stage digests over it change), and the tokens and energy per token of
 * phase_timing.json and of the report's energy section. Issue 19 added the hw stage (after
 * compare): its files under hw/, its entry in run.json and the report's inputs, and the
 * report's section "The MX datapath".
 *
 * ADDED_PATHS: JSON values removed from the files whose path ends with `file` (NULL: any)
 *              where the value's path ends with the pattern ('*' is any one key, a
 *              leading '^' anchors it at the top).
 * ADDED_LINES: lines of text files (the configuration, bytes) removed when they contain
 *              one of these.
 * ADDED_BLOCKS: from a line starting with the text, that many lines removed (report.md);
 *              -1: up to the next line starting with "## " (a whole section).
 * The stage digests over the ppo section (baseline, compare and phase_sensitivity's
 * inputs_digest) are volatile in tiny_outputs.txt since. */
static const struct {
    const char *file, *pattern;
} ADDED_PATHS[] = {{NULL, "rollout_correction"},
                   {NULL, "tis_cap"},
                   {"phase_timing.json", "^tokens"},
                   {"phase_timing.json", "^phases>*>tokens"},
                   {"phase_timing.json", "^phases>*>energy_per_token_J"},
                   {"report/stage.json", "^inputs>after>hw"},
                   {NULL, NULL}};
static const char *const ADDED_LINES[] = {"\"rollout_correction\":", "\"tis_cap\":", NULL};
static const struct {
    const char *start;
    int lines;
} ADDED_BLOCKS[] = {{"Energy per token (", 8}, {"## The MX datapath", -1}, {NULL, 0}};
/* ADDED_STAGES: stages whose output directory is left out of the listing, and whose
 * entries in JSON arrays of stages ({"stage": name, ...}: run.json) are removed. */
static const char *const ADDED_STAGES[] = {"hw", NULL};

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Does path ("a>b>c") of file rel end with an ADDED_PATHS pattern at a key boundary? */
static bool added_path(const char *rel, const char *path)
{
    for (int k = 0; ADDED_PATHS[k].pattern; k++) {
        const char *pat = ADDED_PATHS[k].pattern;
        if (ADDED_PATHS[k].file && !ends_with(rel, ADDED_PATHS[k].file))
            continue;
        bool anchored = *pat == '^';
        pat += anchored;
        int np = 1, nk = 1;
        for (const char *c = pat; *c; c++)
            np += *c == '>';
        for (const char *c = path; *c; c++)
            nk += *c == '>';
        if (np > nk || (anchored && np != nk))
            continue;
        const char *a = path; /* skip the first nk - np keys */
        for (int i = 0; i < nk - np; i++)
            a = strchr(a, '>') + 1;
        bool ok = true;
        for (const char *b = pat; ok && *b;) {
            size_t la = strcspn(a, ">"), lb = strcspn(b, ">");
            ok = (lb == 1 && *b == '*') || (la == lb && !strncmp(a, b, la));
            a += la + (a[la] == '>');
            b += lb + (b[lb] == '>');
        }
        if (ok)
            return true;
    }
    return false;
}

/* A copy of text without the ADDED_LINES and ADDED_BLOCKS (caller frees). */
static char *strip_added_lines(const char *t, size_t n, size_t *out_n)
{
    char *o = malloc(n + 1);
    size_t k = 0;
    int skip = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(t + i, '\n', n - i);
        size_t len = nl ? (size_t)(nl - (t + i)) + 1 : n - i;
        if (skip < 0 && !strncmp(t + i, "## ", 3))
            skip = 0; /* a section-long block ends at the next section */
        bool drop = skip != 0;
        for (int b = 0; !drop && ADDED_BLOCKS[b].start; b++)
            if (!strncmp(t + i, ADDED_BLOCKS[b].start, strlen(ADDED_BLOCKS[b].start))) {
                skip = ADDED_BLOCKS[b].lines;
                drop = true;
            }
        for (int a = 0; !drop && ADDED_LINES[a]; a++)
            drop = memmem(t + i, len, ADDED_LINES[a], strlen(ADDED_LINES[a])) != NULL;
        if (skip > 0)
            skip--;
        if (!drop) {
            memcpy(o + k, t + i, len);
            k += len;
        }
        i += len;
    }
    o[k] = 0;
    *out_n = k;
    return o;
}

/* ---- small helpers ------------------------------------------------------------------------ */

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    size_t got = fread(b, 1, (size_t)len, f);
    b[got] = 0;
    fclose(f);
    *n = got;
    return b;
}

static uint64_t fnv64(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool in_set(const char *name, const char *list)
{
    for (int i = 0; VOLATILE_KEYS[i]; i++)
        if (!strcmp(name, VOLATILE_KEYS[i]))
            return true;
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return true;
        p = q ? q + 1 : NULL;
    }
    return false;
}

/* ---- normalising ---------------------------------------------------------------------------- */

/* The path of a value: keys joined by '>', "[]" for any array element ("files>x.csv",
 * "steps>[]>time/ppo/total"). A value is volatile when its path is listed, or its own key
 * is in VOLATILE_KEYS. */
static void path_join(char *out, size_t cap, const char *path, const char *key)
{
    snprintf(out, cap, "%s%s%s", path, *path ? ">" : "", key);
}

/* Is c an element of a stage list ({"stage": ADDED_STAGE, ...}) that a later issue added? */
static bool added_stage(const cJSON *c)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(c, "stage");
    for (int k = 0; cJSON_IsString(st) && ADDED_STAGES[k]; k++)
        if (!strcmp(st->valuestring, ADDED_STAGES[k]))
            return true;
    return false;
}

static void json_null_keys(cJSON *j, const char *rel, const char *path, const char *vol)
{
    if (cJSON_IsArray(j)) /* the added stages' entries (run.json): out */
        for (cJSON *c = j->child, *next; c; c = next) {
            next = c->next;
            if (cJSON_IsObject(c) && added_stage(c))
                cJSON_Delete(cJSON_DetachItemViaPointer(j, c));
        }
    if (cJSON_IsObject(j)) /* what was added since the fixtures: out */
        for (cJSON *c = j->child, *next; c; c = next) {
            char p[1024];
            next = c->next;
            path_join(p, sizeof p, path, c->string);
            if (added_path(rel, p))
                cJSON_Delete(cJSON_DetachItemViaPointer(j, c));
        }
    for (cJSON *c = j ? j->child : NULL; c; c = c->next) {
        char p[1024];
        path_join(p, sizeof p, path, cJSON_IsObject(j) ? c->string : "[]");
        if (cJSON_IsObject(j) && (in_set(c->string, "") || in_set(p, vol))) {
            cJSON *n = cJSON_CreateNull();
            cJSON_ReplaceItemViaPointer(j, c, n);
            c = n;
            continue;
        }
        json_null_keys(c, rel, p, vol);
    }
}

static uint64_t digest_json_text(const char *t, size_t n, const char *rel, const char *vol,
                                 bool *ok)
{
    cJSON *j = cJSON_ParseWithLength(t, n);
    if (!j) {
        *ok = false;
        return 0;
    }
    json_null_keys(j, rel, "", vol);
    char *s = cJSON_PrintUnformatted(j);
    uint64_t h = fnv64(s, strlen(s));
    free(s);
    cJSON_Delete(j);
    return h;
}

/* one CSV line into cells (quotes kept as they are, commas inside quotes not splitting) */
static int csv_cells(const char *line, size_t n, const char **cell, size_t *len, int max)
{
    int k = 0;
    bool q = false;
    size_t start = 0;
    for (size_t i = 0; i <= n && k < max; i++) {
        if (i < n && line[i] == '"')
            q = !q;
        if (i == n || (line[i] == ',' && !q)) {
            cell[k] = line + start;
            len[k++] = i - start;
            start = i + 1;
        }
    }
    return k;
}

static uint64_t digest_numbers(const char *t, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    /* every number ([-+]digits[.digits][e[-+]digits]) becomes one '#' */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        if ((t[j] == '-' || t[j] == '+') && j + 1 < n && isdigit((unsigned char)t[j + 1]))
            j++;
        if (j < n && (isdigit((unsigned char)t[j]) ||
                      (t[j] == '.' && j + 1 < n && isdigit((unsigned char)t[j + 1])))) {
            while (j < n && (isdigit((unsigned char)t[j]) || t[j] == '.'))
                j++;
            if (j + 1 < n && (t[j] == 'e' || t[j] == 'E') &&
                (isdigit((unsigned char)t[j + 1]) ||
                 ((t[j + 1] == '-' || t[j + 1] == '+') && j + 2 < n &&
                  isdigit((unsigned char)t[j + 2])))) {
                j += 2;
                while (j < n && isdigit((unsigned char)t[j]))
                    j++;
            }
            h = (h ^ '#') * 0x100000001b3ull;
            i = j;
            continue;
        }
        h = (h ^ (unsigned char)t[i]) * 0x100000001b3ull;
        i++;
    }
    return h;
}

static uint64_t digest_kind(const char *t, size_t n, const char *rel, const char *kind,
                            const char *vol,
                            bool *ok)
{
    *ok = true;
    if (!strcmp(kind, "bytes") || !strcmp(kind, "numbers")) {
        size_t m;
        char *u = strip_added_lines(t, n, &m);
        uint64_t h = !strcmp(kind, "bytes") ? fnv64(u, m) : digest_numbers(u, m);
        free(u);
        return h;
    }
    if (!strcmp(kind, "exists"))
        return 0;
    if (!strcmp(kind, "json"))
        return digest_json_text(t, n, rel, vol, ok);
    uint64_t h = 0xcbf29ce484222325ull;
    /* jsonl and csv: line by line */
    const char *head[256];
    size_t headlen[256];
    int nhead = 0;
    for (size_t i = 0, line = 0; i < n; line++) {
        const char *nl = memchr(t + i, '\n', n - i);
        size_t len = nl ? (size_t)(nl - (t + i)) : n - i;
        uint64_t lh;
        if (!strcmp(kind, "jsonl")) {
            lh = len ? digest_json_text(t + i, len, rel, vol, ok) : 0;
        } else {
            const char *cell[256];
            size_t cl[256];
            int k = csv_cells(t + i, len, cell, cl, 256);
            if (line == 0) {
                nhead = k;
                memcpy(head, cell, sizeof cell[0] * (size_t)k);
                memcpy(headlen, cl, sizeof cl[0] * (size_t)k);
            }
            lh = 0xcbf29ce484222325ull;
            for (int c = 0; c < k; c++) {
                char name[128] = "";
                if (c < nhead)
                    snprintf(name, sizeof name, "%.*s", (int)headlen[c], head[c]);
                if (line > 0 && in_set(name, vol))
                    lh = (lh ^ 0xff) * 0x100000001b3ull;
                else
                    lh = (lh ^ fnv64(cell[c], cl[c])) * 0x100000001b3ull;
            }
        }
        h = (h ^ lh) * 0x100000001b3ull;
        i += len + 1;
    }
    return h;
}

/* ---- the output directory --------------------------------------------------------------------- */

typedef struct files {
    char **rel;
    int n, cap;
} files_t;

static void list_files(const char *root, const char *sub, files_t *fs)
{
    char path[2048];
    snprintf(path, sizeof path, "%s%s%s", root, *sub ? "/" : "", sub);
    DIR *d = opendir(path);
    if (!d)
        return;
    for (struct dirent *de; (de = readdir(d));) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char rel[1024], full[3072];
        snprintf(rel, sizeof rel, "%s%s%s", sub, *sub ? "/" : "", de->d_name);
        snprintf(full, sizeof full, "%s/%s", root, rel);
        struct stat st;
        if (stat(full, &st))
            continue;
        bool added = false;
        for (int k = 0; !*sub && ADDED_STAGES[k]; k++)
            added |= !strcmp(de->d_name, ADDED_STAGES[k]);
        if (S_ISDIR(st.st_mode)) {
            if (!added)
                list_files(root, rel, fs);
        } else {
            if (fs->n == fs->cap)
                fs->rel = realloc(fs->rel, sizeof *fs->rel * (size_t)(fs->cap = 2 * fs->cap + 16));
            fs->rel[fs->n++] = strdup(rel);
        }
    }
    closedir(d);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void files_free(files_t *fs)
{
    for (int i = 0; i < fs->n; i++)
        free(fs->rel[i]);
    free(fs->rel);
}

static char *file_text(const char *root, const char *rel, size_t *n)
{
    char full[3072];
    snprintf(full, sizeof full, "%s/%s", root, rel);
    return read_all(full, n);
}

/* The working directory the test started in (the runs happen elsewhere). */
static char repo[2048];

/* Runs the chain on the tiny configuration in DIR, as `mxrlhf run --output results --config
 * tiny.json` from DIR: the paths the files record are relative, the same for every run.
 * One thread, Haswell BLAS kernels. */
static void run_chain(const char *dir)
{
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", dir);
    size_t n;
    char *t = read_all(FIXTURE("tiny.json"), &n);
    assert_non_null(t);
    test_write_file(cfg, t, n);
    free(t);
    char *o = NULL;
    assert_int_equal(chdir(dir), 0);
    int rc = test_cli(&o, "run --output results --config tiny.json");
    assert_int_equal(chdir(repo), 0);
    if (rc)
        fail_msg("mxrlhf run exited %d:\n%s", rc, o);
    free(o);
}

static const char *kind_of(const char *rel)
{
    const char *dot = strrchr(rel, '.');
    if (dot && !strcmp(dot, ".json"))
        return "json";
    if (dot && !strcmp(dot, ".jsonl"))
        return "jsonl";
    if (dot && !strcmp(dot, ".csv"))
        return "csv";
    return "numbers";
}

/* The paths (json, jsonl) or columns (csv) whose values differ between two texts. */
static void add_name(char *out, size_t cap, const char *name)
{
    if (in_set(name, out))
        return;
    size_t at = strlen(out);
    snprintf(out + at, cap - at, "%s%s", at ? "," : "", name);
}

static void json_diff_keys(const cJSON *a, const cJSON *b, const char *path, const char *key,
                           char *out, size_t cap)
{
    if (key && in_set(key, ""))
        return; /* volatile by name anyway */
    if (cJSON_IsObject(a) && cJSON_IsObject(b)) {
        for (const cJSON *c = a->child; c; c = c->next) {
            char p[1024];
            path_join(p, sizeof p, path, c->string);
            json_diff_keys(c, cJSON_GetObjectItemCaseSensitive(b, c->string), p, c->string, out,
                           cap);
        }
        return;
    }
    if (cJSON_IsArray(a) && cJSON_IsArray(b) && cJSON_GetArraySize(a) == cJSON_GetArraySize(b)) {
        char p[1024];
        path_join(p, sizeof p, path, "[]");
        for (const cJSON *x = a->child, *y = b->child; x && y; x = x->next, y = y->next)
            json_diff_keys(x, y, p, NULL, out, cap);
        return;
    }
    if (!cJSON_Compare(a, b, true)) {
        /* an array element differing: the array's path (the key that holds it) */
        char p[1024];
        snprintf(p, sizeof p, "%s", path);
        for (size_t n = strlen(p); n >= 3 && !strcmp(p + n - 3, ">[]"); n = strlen(p))
            p[n - 3] = 0;
        if (!strcmp(p, "[]"))
            p[0] = 0;
        if (*p)
            add_name(out, cap, p);
    }
}

static void diff_keys(const char *kind, const char *a, size_t na, const char *b, size_t nb,
                      char *out, size_t cap)
{
    out[0] = 0;
    if (!strcmp(kind, "json")) {
        cJSON *ja = cJSON_ParseWithLength(a, na), *jb = cJSON_ParseWithLength(b, nb);
        json_diff_keys(ja, jb, "", NULL, out, cap);
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        return;
    }
    const char *pa = a, *pb = b;
    const char *head[256];
    size_t headlen[256];
    int nhead = 0;
    for (int line = 0; pa < a + na && pb < b + nb; line++) {
        const char *ea = memchr(pa, '\n', (size_t)(a + na - pa)), *eb = memchr(pb, '\n', (size_t)(b + nb - pb));
        size_t la = ea ? (size_t)(ea - pa) : (size_t)(a + na - pa);
        size_t lb = eb ? (size_t)(eb - pb) : (size_t)(b + nb - pb);
        if (!strcmp(kind, "csv")) {
            const char *ca[256], *cb[256];
            size_t lca[256], lcb[256];
            int ka = csv_cells(pa, la, ca, lca, 256), kb = csv_cells(pb, lb, cb, lcb, 256);
            if (line == 0) {
                nhead = ka;
                memcpy(head, ca, sizeof ca[0] * (size_t)ka);
                memcpy(headlen, lca, sizeof lca[0] * (size_t)ka);
            }
            for (int c = 0; c < ka && c < kb && c < nhead; c++)
                if (lca[c] != lcb[c] || memcmp(ca[c], cb[c], lca[c])) {
                    char name[128];
                    snprintf(name, sizeof name, "%.*s", (int)headlen[c], head[c]);
                    add_name(out, cap, name);
                }
        } else {
            cJSON *ja = cJSON_ParseWithLength(pa, la), *jb = cJSON_ParseWithLength(pb, lb);
            json_diff_keys(ja, jb, "", NULL, out, cap);
            cJSON_Delete(ja);
            cJSON_Delete(jb);
        }
        pa += la + 1;
        pb += lb + 1;
    }
}

/* ---- the tests --------------------------------------------------------------------------------- */

#define PIN_RUNS 3

static void write_fixtures(void)
{
    char *o = NULL;
    assert_int_equal(test_cli(&o, "config"), 0);
    test_write_file(FIXTURE("config.json"), o, strlen(o));
    free(o);
    /* the chain PIN_RUNS times into the same path; run[r] keeps each one's files */
    char *dir = test_mkdtemp(), run[PIN_RUNS][1100], results[1100];
    snprintf(results, sizeof results, "%s/results", dir);
    for (int r = 0; r < PIN_RUNS; r++) {
        snprintf(run[r], sizeof run[r], "%s/run%d", dir, r);
        run_chain(dir);
        assert_int_equal(rename(results, run[r]), 0);
    }
    files_t fs = {0};
    list_files(run[0], "", &fs);
    qsort(fs.rel, (size_t)fs.n, sizeof *fs.rel, cmp_str);
    FILE *f = fopen(FIXTURE("tiny_outputs.txt"), "w");
    assert_non_null(f);
    const char *from = getenv("MXRLHF_PIN_FROM");
    fprintf(f, "# written by tests/test_pin.c in write mode from the mxrlhf of %s\n",
            from ? from : "(MXRLHF_PIN_FROM unset)");
    for (int i = 0; i < fs.n; i++) {
        char *t[PIN_RUNS];
        size_t n[PIN_RUNS];
        for (int r = 0; r < PIN_RUNS; r++)
            t[r] = file_text(run[r], fs.rel[i], &n[r]);
        const char *kind = "bytes";
        char vol[4096] = "";
        bool same = true, ok = true;
        for (int r = 1; r < PIN_RUNS; r++)
            same &= t[r] && n[r] == n[0] && !memcmp(t[r], t[0], n[0]);
        if (!same) {
            kind = kind_of(fs.rel[i]);
            if (strcmp(kind, "numbers"))
                for (int r = 1; r < PIN_RUNS; r++)
                    if (t[r])
                        diff_keys(kind, t[0], n[0], t[r], n[r], vol, sizeof vol);
            uint64_t h0 = digest_kind(t[0], n[0], fs.rel[i], kind, vol, &ok);
            for (int r = 1; r < PIN_RUNS; r++) {
                bool okr = true;
                if (!t[r] || digest_kind(t[r], n[r], fs.rel[i], kind, vol, &okr) != h0 || !okr)
                    ok = false; /* not even the normalised text repeats */
            }
        }
        if (!ok || volatile_figure(fs.rel[i])) {
            kind = "exists";
            vol[0] = 0;
        }
        uint64_t h = digest_kind(t[0], n[0], fs.rel[i], kind, vol, &ok);
        fprintf(f, "%s %s %016llx %s\n", fs.rel[i], kind, (unsigned long long)h,
                vol[0] ? vol : "-");
        for (int r = 0; r < PIN_RUNS; r++)
            free(t[r]);
    }
    fclose(f);
    files_free(&fs);
    test_rmtree(dir);
    free(dir);
}

static void config_output_is_byte_identical_to_the_fixture(void **state)
{
    (void)state;
    if (getenv("MXRLHF_PIN_WRITE"))
        skip();
    char *out = NULL;
    assert_int_equal(test_cli(&out, "config"), 0);
    size_t n, m;
    char *o = strip_added_lines(out, strlen(out), &m);
    free(out);
    char *want = read_all(FIXTURE("config.json"), &n);
    assert_non_null(want);
    if (strcmp(o, want))
        fail_msg("`mxrlhf config` differs from %s:\n%s", FIXTURE("config.json"), o);
    free(o);
    free(want);
}

static void tiny_run_outputs_match_the_fixture(void **state)
{
    (void)state;
    if (getenv("MXRLHF_PIN_WRITE")) {
        write_fixtures();
        return;
    }
    char *dir = test_mkdtemp(), out[1100];
    snprintf(out, sizeof out, "%s/results", dir);
    run_chain(dir);
    size_t fn;
    char *fix = read_all(FIXTURE("tiny_outputs.txt"), &fn);
    assert_non_null(fix);
    files_t fs = {0};
    list_files(out, "", &fs);
    qsort(fs.rel, (size_t)fs.n, sizeof *fs.rel, cmp_str);
    int listed = 0, bad = 0;
    char why[4096] = "";
    for (char *line = strtok(fix, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char rel[1024], kind[16], vol[4096];
        unsigned long long want;
        if (sscanf(line, "%1023s %15s %llx %4095s", rel, kind, &want, vol) != 4)
            fail_msg("bad fixture line: %s", line);
        listed++;
        size_t n;
        char *t = file_text(out, rel, &n);
        bool ok = true;
        uint64_t got = t ? digest_kind(t, n, rel, kind, strcmp(vol, "-") ? vol : "", &ok) : 0;
        if (!t || !ok || got != want) {
            bad++;
            size_t at = strlen(why);
            if (t)
                snprintf(why + at, sizeof why - at, "  %s (%s): differs (digest %016llx, the "
                         "fixture's %016llx)\n", rel, kind, (unsigned long long)got, want);
            else
                snprintf(why + at, sizeof why - at, "  %s (%s): missing\n", rel, kind);
        }
        free(t);
    }
    if (listed != fs.n) {
        size_t at = strlen(why);
        snprintf(why + at, sizeof why - at, "  the run wrote %d files, the fixture lists %d\n",
                 fs.n, listed);
        bad++;
    }
    if (bad)
        fail_msg("the tiny run's outputs differ from %s:\n%s", FIXTURE("tiny_outputs.txt"), why);
    free(fix);
    files_free(&fs);
    test_rmtree(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    (void)argc;
    if (!getenv("OMP_WAIT_POLICY")) { /* as tiny_omp_passive: spinning threads on 2 cores */
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    /* the runs happen in their own directory: the binary's path must not be relative */
    const char *bin = getenv("MXRLHF_BIN");
    char abs[4096];
    if (!getcwd(repo, sizeof repo) || !realpath(bin && *bin ? bin : "build/asan/mxrlhf", abs)) {
        fprintf(stderr, "test_pin: cannot find the repository or the mxrlhf binary\n");
        return 1;
    }
    setenv("MXRLHF_BIN", abs, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_output_is_byte_identical_to_the_fixture),
        cmocka_unit_test(tiny_run_outputs_match_the_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
