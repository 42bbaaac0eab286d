/* pipeline: the runner: stage order, caching by digests, stage.json, run.json (see
 * pipeline.h). The stages themselves are in stages.c. */
#include "pipeline/pipeline.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/digest.h"
#include "pipeline/stage.h"
#include "pipeline/verify.h"
#include "util/fs.h"
#include "util/json.h"

const char *pipeline_status_name(pipeline_status_t s)
{
    static const char *const n[] = {"ran",       "reused",    "skipped",
                                    "not_reached", "not_built", "failed"};
    return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "?";
}

const char *const *pipeline_stage_names(void)
{
    static const char *names[PIPELINE_MAX_STAGES + 1];
    for (int i = 0; i < pipeline_nstages && i < PIPELINE_MAX_STAGES; i++)
        names[i] = pipeline_stages[i].name;
    return names;
}

/* ---- helpers for stages ---------------------------------------------------------------- */

int pipeline_backend(pipeline_ctx_t *c, backend_t **be, err_t *e)
{
    if (!c->be) {
        int rc = be_open(c->opts->backend ? c->opts->backend : "cpu", &c->be, e);
        if (rc)
            return rc;
    }
    *be = c->be;
    return ERR_OK;
}

static int stage_index(const char *name)
{
    for (int i = 0; i < pipeline_nstages; i++)
        if (!strcmp(pipeline_stages[i].name, name))
            return i;
    return -1;
}

const char *pipeline_stage_dir(const pipeline_ctx_t *c, const char *stage)
{
    int i = stage_index(stage);
    return i >= 0 && c->dirs[i][0] ? c->dirs[i] : NULL;
}

const char *pipeline_pairs_path(const pipeline_ctx_t *c, char *buf, size_t cap)
{
    if (c->opts->data)
        return c->opts->data;
    snprintf(buf, cap, "%s/pairs.jsonl", pipeline_stage_dir(c, "data"));
    return buf;
}

int pipeline_split_pairs(pipeline_ctx_t *c, data_split_t split, const data_pair_t ***pairs,
                         size_t *n, err_t *e)
{
    if (!c->data_loaded) {
        char buf[600], spath[600];
        const char *ddir = pipeline_stage_dir(c, "data");
        if (!ddir)
            return err_set(e, ERR_FAIL, "the data stage has not run");
        data_hh_opts_t ho = {.skip_bad = c->cfg->data.skip_bad};
        snprintf(spath, sizeof spath, "%s/split.json", ddir);
        int rc = data_hh_read(pipeline_pairs_path(c, buf, sizeof buf), &ho, &c->hh, e);
        if (!rc)
            rc = data_split_read(spath, &c->rec, e);
        if (rc) {
            data_hh_free(&c->hh);
            return rc;
        }
        c->data_loaded = true;
    }
    if ((unsigned)split >= DATA_NSPLITS)
        return err_set(e, ERR_INPUT, "no split %d", (int)split);
    if (!c->split[split]) {
        int rc = data_split_pairs(&c->hh, &c->rec, split, &c->split[split], &c->nsplit[split], e);
        if (rc)
            return rc;
    }
    *pairs = c->split[split];
    *n = c->nsplit[split];
    return ERR_OK;
}

/* ---- digests of directories ------------------------------------------------------------ */

/* Files a stage writes that hold timings, so they are kept out of its output digest (the
 * sensitivity stage's resume record holds each cell's seconds). */
static bool is_timing_file(const char *name)
{
    size_t n = strlen(name), k = strlen("metrics.json");
    return !strcmp(name, "stage.json") || !strcmp(name, "train_log.csv") ||
           !strcmp(name, "sensitivity_cells.jsonl") ||
           (n >= k && !strcmp(name + n - k, "metrics.json"));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files directly in dir (no temporaries), sorted by name. */
static int list_files(const char *dir, char ***out, size_t *n, err_t *e)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return err_errno(e, ERR_INPUT, "%s", dir);
    size_t cap = 0;
    int rc = ERR_OK;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp-"))
            continue;
        char *p = fs_join(dir, de->d_name);
        struct stat st;
        bool reg = p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
        free(p);
        if (!reg)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **v = realloc(*out, cap * sizeof *v);
            if (!v) {
                rc = err_set(e, ERR_NOMEM, "out of memory");
                break;
            }
            *out = v;
        }
        if (!((*out)[*n] = strdup(de->d_name)))
            rc = err_set(e, ERR_NOMEM, "out of memory");
        else
            (*n)++;
    }
    closedir(d);
    if (!rc && *n)
        qsort(*out, *n, sizeof **out, cmp_str);
    return rc;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* Fingerprints every file of dir into `files` (name -> "size:crc") and feeds the product
 * files (all but timing files when products_only) into d. */
static int dir_digest(const char *dir, bool products_only, pipeline_digest_t *d, cJSON *files,
                      err_t *e)
{
    char **names;
    size_t n;
    int rc = list_files(dir, &names, &n, e);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!strcmp(names[i], "stage.json"))
            continue;
        char *p = fs_join(dir, names[i]), fp[48];
        rc = p ? pipeline_file_fingerprint(p, fp, sizeof fp, e) : err_set(e, ERR_NOMEM, "oom");
        free(p);
        if (rc)
            break;
        if (files)
            cJSON_AddStringToObject(files, names[i], fp);
        if (!products_only || !is_timing_file(names[i])) {
            pipeline_digest_str(d, names[i]);
            pipeline_digest_str(d, fp);
        }
    }
    free_list(names, n);
    return rc;
}

/* Fingerprint of an external input: a file's "size:crc", or a directory's digest. */
static int external_fingerprint(const char *path, char *buf, size_t cap, err_t *e)
{
    if (fs_is_dir(path)) {
        pipeline_digest_t d;
        pipeline_digest_init(&d);
        int rc = dir_digest(path, false, &d, NULL, e);
        if (!rc)
            pipeline_digest_hex(&d, buf);
        return rc;
    }
    if (!fs_exists(path))
        return err_set(e, ERR_INPUT, "%s: no such file or directory", path);
    return pipeline_file_fingerprint(path, buf, cap, e);
}

/* ---- stamps ---------------------------------------------------------------------------- */

/* True when dir/stage.json records `inputs` and every file it lists is unchanged; then
 * out_digest and *seconds come from it. */
static bool stamp_valid(const char *dir, const char *inputs, char *out_digest, double *seconds,
                        double *cpu_seconds, char *finished, size_t fcap)
{
    char *path = fs_join(dir, "stage.json");
    cJSON *j = NULL;
    err_t e = ERR_INIT;
    bool ok = path && fs_exists(path) && json_load_file(path, 1u << 20, &j, &e) == ERR_OK;
    free(path);
    const cJSON *in = ok ? cJSON_GetObjectItemCaseSensitive(j, "inputs_digest") : NULL;
    const cJSON *od = ok ? cJSON_GetObjectItemCaseSensitive(j, "output_digest") : NULL;
    const cJSON *files = ok ? cJSON_GetObjectItemCaseSensitive(j, "files") : NULL;
    ok = cJSON_IsString(in) && !strcmp(in->valuestring, inputs) && cJSON_IsString(od) &&
         strlen(od->valuestring) == 16 && cJSON_IsObject(files);
    for (const cJSON *f = ok ? files->child : NULL; f && ok; f = f->next) {
        char *p = fs_join(dir, f->string), fp[48];
        ok = p && cJSON_IsString(f) &&
             pipeline_file_fingerprint(p, fp, sizeof fp, &e) == ERR_OK &&
             !strcmp(fp, f->valuestring);
        free(p);
    }
    if (ok) {
        snprintf(out_digest, 17, "%s", od->valuestring);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "seconds");
        *seconds = cJSON_IsNumber(s) ? s->valuedouble : 0;
        const cJSON *cs = cJSON_GetObjectItemCaseSensitive(j, "cpu_seconds");
        *cpu_seconds = cJSON_IsNumber(cs) ? cs->valuedouble : 0;
        const cJSON *fin = cJSON_GetObjectItemCaseSensitive(j, "finished");
        snprintf(finished, fcap, "%s", cJSON_IsString(fin) ? fin->valuestring : "?");
    }
    cJSON_Delete(j);
    return ok;
}

/* CPU seconds (user + system, every thread) of this process so far. */
static double cpu_now(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void utc_now(char *buf, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Removes the regular files directly in a stage's directory (its previous output). */
static int clear_dir(const char *dir, err_t *e)
{
    char **names;
    size_t n;
    int rc = list_files(dir, &names, &n, e);
    for (size_t i = 0; i < n && !rc; i++) {
        char *p = fs_join(dir, names[i]);
        if (!p || unlink(p) != 0)
            rc = p ? err_errno(e, ERR_FAIL, "remove %s", p) : err_set(e, ERR_NOMEM, "oom");
        free(p);
    }
    free_list(names, n);
    return rc;
}

/* ---- the run --------------------------------------------------------------------------- */

/* Splits a comma-separated list ("model,pretrain") into at most max items. */
static int split_list(const char *list, char items[][64], int max)
{
    int n = 0;
    for (const char *p = list; *p && n < max;) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        snprintf(items[n++], 64, "%.*s", (int)len, p);
        p += len + (q != NULL);
    }
    return n;
}

static int inputs_digest(const pipeline_ctx_t *c, const pipeline_stage_t *st, char out_hex[17],
                         char (*digests)[17], cJSON *record, err_t *e)
{
    pipeline_digest_t d;
    pipeline_digest_init(&d);
    pipeline_digest_str(&d, st->name);
    cJSON *secs = cJSON_AddObjectToObject(record, "sections");
    cJSON *after = cJSON_AddObjectToObject(record, "after");
    int rc = ERR_OK;
    char items[8][64];
    int n = split_list(st->sections, items, 8);
    for (int i = 0; i < n && !rc; i++) {
        cJSON *j = pipeline_section_json(c->cfg, items[i]);
        if (!j) {
            rc = err_set(e, ERR_FAIL, "stage %s: unknown config section \"%s\"", st->name,
                         items[i]);
            break;
        }
        pipeline_digest_str(&d, items[i]);
        rc = pipeline_digest_json(&d, j, e);
        cJSON_AddItemToObject(secs, items[i], j);
    }
    n = split_list(st->after, items, 8);
    for (int i = 0; i < n && !rc; i++) {
        int k = stage_index(items[i]);
        if (k < 0 || !digests[k][0]) {
            rc = err_set(e, ERR_FAIL, "stage %s needs the output of stage %s, which has not run",
                         st->name, items[i]);
            break;
        }
        pipeline_digest_str(&d, items[i]);
        pipeline_digest_str(&d, digests[k]);
        cJSON_AddStringToObject(after, items[i], digests[k]);
    }
    char buf[600];
    const char *ext = !rc && st->external ? st->external(c->opts, buf, sizeof buf) : NULL;
    if (ext) {
        char fp[48];
        rc = external_fingerprint(ext, fp, sizeof fp, e);
        if (!rc) {
            pipeline_digest_str(&d, ext);
            pipeline_digest_str(&d, fp);
            cJSON *x = cJSON_AddObjectToObject(record, "external");
            cJSON_AddStringToObject(x, "path", ext);
            cJSON_AddStringToObject(x, "fingerprint", fp);
        }
    }
    if (!rc && st->compute) {
        const char *be = c->opts->backend ? c->opts->backend : "cpu";
        pipeline_digest_str(&d, be);
        cJSON_AddStringToObject(record, "backend", be);
    }
    pipeline_digest_hex(&d, out_hex);
    return rc;
}

static int write_stamp(const pipeline_ctx_t *c, const pipeline_stage_t *st, const char *inputs,
                       cJSON *record, double seconds, double cpu_seconds, char out_hex[17],
                       err_t *e)
{
    pipeline_digest_t d;
    pipeline_digest_init(&d);
    cJSON *j = cJSON_CreateObject(), *files = cJSON_CreateObject();
    char *path = fs_join(c->dir, "stage.json"), when[32];
    int rc = j && files && path ? dir_digest(c->dir, true, &d, files, e)
                                : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        pipeline_digest_hex(&d, out_hex);
        utc_now(when, sizeof when);
        cJSON_AddStringToObject(j, "stage", st->name);
        cJSON_AddStringToObject(j, "inputs_digest", inputs);
        cJSON_AddStringToObject(j, "output_digest", out_hex);
        cJSON_AddItemReferenceToObject(j, "inputs", record);
        cJSON_AddItemToObject(j, "files", files);
        files = NULL;
        cJSON_AddNumberToObject(j, "seconds", seconds);
        cJSON_AddNumberToObject(j, "cpu_seconds", cpu_seconds);
        cJSON_AddStringToObject(j, "finished", when);
        rc = json_write_file(path, j, true, e);
    }
    cJSON_Delete(files);
    cJSON_Delete(j);
    free(path);
    return rc;
}

static int write_run_json(const pipeline_run_opts_t *o, const pipeline_report_t *rep,
                          double total, const double load[2][3], int failed_rc, err_t *e)
{
    char *path = fs_join(o->output, "run.json"), cpu[256], when[32];
    int cores;
    cJSON *j = cJSON_CreateObject();
    if (!path || !j) {
        free(path);
        cJSON_Delete(j);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    pipeline_cpu_info(cpu, sizeof cpu, &cores);
    utc_now(when, sizeof when);
    cJSON_AddStringToObject(j, "format", "mxrlhf-run");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "finished", when);
    cJSON_AddBoolToObject(j, "ok", failed_rc == 0);
    cJSON_AddStringToObject(j, "data", o->data ? o->data : "synthetic");
    if (o->model)
        cJSON_AddStringToObject(j, "model", o->model);
    if (o->sft_model)
        cJSON_AddStringToObject(j, "sft_model", o->sft_model);
    cJSON_AddStringToObject(j, "backend", o->backend ? o->backend : "cpu");
    cJSON *m = cJSON_AddObjectToObject(j, "machine");
    cJSON_AddStringToObject(m, "cpu", cpu);
    cJSON_AddNumberToObject(m, "cores", cores);
    cJSON_AddItemToObject(m, "load_average_start", cJSON_CreateDoubleArray(load[0], 3));
    cJSON_AddItemToObject(m, "load_average_end", cJSON_CreateDoubleArray(load[1], 3));
    cJSON_AddNumberToObject(j, "seconds", total);
    cJSON *arr = cJSON_AddArrayToObject(j, "stages");
    for (int i = 0; i < rep->n; i++) {
        const pipeline_stage_report_t *r = &rep->stage[i];
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "stage", r->name);
        cJSON_AddStringToObject(s, "status", pipeline_status_name(r->status));
        if (r->status == PIPELINE_RAN || r->status == PIPELINE_REUSED) {
            cJSON_AddNumberToObject(s, "seconds", r->seconds);
            cJSON_AddNumberToObject(s, "cpu_seconds", r->cpu_seconds);
        }
        if (r->dir[0])
            cJSON_AddStringToObject(s, "dir", r->dir);
        if (r->note[0])
            cJSON_AddStringToObject(s, "note", r->note);
        cJSON_AddItemToArray(arr, s);
    }
    int rc = json_write_file(path, j, true, e);
    cJSON_Delete(j);
    free(path);
    return rc;
}

static void load_now(double l[3])
{
    if (getloadavg(l, 3) != 3)
        l[0] = l[1] = l[2] = -1;
}

int pipeline_run(const pipeline_config_t *cfg, const pipeline_run_opts_t *o,
                 pipeline_report_t *rep, err_t *e)
{
    memset(rep, 0, sizeof *rep);
    if (o->until && stage_index(o->until) < 0)
        return err_set(e, ERR_INPUT, "--until %s: no such stage", o->until);
    if (o->until && !pipeline_stages[stage_index(o->until)].run)
        return err_set(e, ERR_INPUT, "--until %s: that stage is not built yet", o->until);
    if (o->model && o->sft_model)
        return err_set(e, ERR_INPUT, "give a base model or a fine-tuned model, not both");
    if (cfg->dist.gpus > 1)
        return err_set(e, ERR_INPUT, "dist.gpus %d: `mxrlhf run` runs on one process; ppo, "
                       "baseline and sensitivity take --gpus (docs/distributed.md)",
                       cfg->dist.gpus);
    if (pipeline_nstages > PIPELINE_MAX_STAGES)
        return err_set(e, ERR_FAIL, "too many stages");
    int rc = fs_mkdir_p(o->output, e);
    char *cpath = fs_join(o->output, "config.json");
    if (!rc)
        rc = cpath ? pipeline_config_write(cpath, cfg, e) : err_set(e, ERR_NOMEM, "oom");
    free(cpath);
    if (rc)
        return rc;
    pipeline_ctx_t *c = calloc(1, sizeof *c);
    char(*digests)[17] = calloc(PIPELINE_MAX_STAGES, sizeof *digests);
    if (!c || !digests) {
        free(c);
        free(digests);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    c->cfg = cfg;
    c->opts = o;
    c->log = &o->log;
    double load[2][3], t_run = rlhf_now();
    load_now(load[0]);
    bool done = false;    /* --until reached */
    bool stopped = false; /* --stop-after reached */
    int built = 0;
    for (int i = 0; i < pipeline_nstages; i++)
        built += pipeline_stages[i].run != NULL;
    int k_built = 0;
    for (int i = 0; i < pipeline_nstages && !rc; i++) {
        const pipeline_stage_t *st = &pipeline_stages[i];
        pipeline_stage_report_t *r = &rep->stage[rep->n++];
        r->name = st->name;
        r->title = st->title;
        if (!st->run) {
            r->status = PIPELINE_NOT_BUILT;
            snprintf(r->note, sizeof r->note, "%s", st->later ? st->later : "");
            continue;
        }
        k_built++;
        if (done) {
            r->status = PIPELINE_NOT_REACHED;
            if (stopped)
                snprintf(r->note, sizeof r->note, "not started: --stop-after reached");
            else
                snprintf(r->note, sizeof r->note, "after --until %s", o->until);
            continue;
        }
        const char *given = st->replaced_by ? st->replaced_by(o) : NULL;
        if (given) {
            char fp[48];
            r->status = PIPELINE_SKIPPED;
            snprintf(r->dir, sizeof r->dir, "%s", given);
            snprintf(c->dirs[i], sizeof c->dirs[i], "%s", given);
            snprintf(r->note, sizeof r->note, "replaced by the given model directory %s", given);
            rlhf_logf(c->log, "== %s (%d/%d): skipped, using %s", st->name, k_built, built, given);
            if (!fs_is_dir(given))
                rc = err_set(e, ERR_INPUT, "%s: not a directory", given);
            if (!rc)
                rc = external_fingerprint(given, fp, sizeof fp, e);
            snprintf(digests[i], 17, "%s", fp);
            if (o->until && !strcmp(o->until, st->name))
                done = true;
            continue;
        }
        snprintf(c->dirs[i], sizeof c->dirs[i], "%s/%s", o->output, st->name);
        snprintf(r->dir, sizeof r->dir, "%s", c->dirs[i]);
        c->stage = st;
        c->dir = c->dirs[i];
        cJSON *record = cJSON_CreateObject();
        char inputs[17], finished[40];
        if (!record) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
        rc = inputs_digest(c, st, inputs, digests, record, e);
        if (!rc && !o->force &&
            stamp_valid(c->dir, inputs, digests[i], &r->seconds, &r->cpu_seconds, finished,
                        sizeof finished)) {
            r->status = PIPELINE_REUSED;
            rlhf_logf(c->log, "== %s (%d/%d): %s — reusing %s (inputs unchanged; made %s in "
                      "%.1f s)", st->name, k_built, built, st->title, c->dir, finished,
                      r->seconds);
        } else if (!rc && o->stop_after_s > 0 && rlhf_now() - t_run >= o->stop_after_s) {
            /* out of time: this stage and the rest wait for the next run, which reuses
             * everything done so far */
            r->status = PIPELINE_NOT_REACHED;
            r->dir[0] = 0;
            snprintf(r->note, sizeof r->note, "not started: --stop-after %g s reached",
                     o->stop_after_s);
            rlhf_logf(c->log, "== %s (%d/%d): not started, %.0f s of --stop-after %g s spent; "
                      "run again to go on", st->name, k_built, built, rlhf_now() - t_run,
                      o->stop_after_s);
            stopped = true;
        } else if (!rc) {
            rlhf_logf(c->log, "== %s (%d/%d): %s", st->name, k_built, built, st->title);
            char *stamp = fs_join(c->dir, "stage.json");
            rc = fs_mkdir_p(c->dir, e);
            if (!rc && stamp && fs_exists(stamp) && unlink(stamp) != 0)
                rc = err_errno(e, ERR_FAIL, "remove %s", stamp);
            free(stamp);
            if (!rc)
                rc = clear_dir(c->dir, e);
            double t0 = rlhf_now(), c0 = cpu_now();
            if (!rc)
                rc = st->run(c, e);
            r->seconds = rlhf_now() - t0;
            r->cpu_seconds = cpu_now() - c0;
            if (!rc)
                rc = write_stamp(c, st, inputs, record, r->seconds, r->cpu_seconds, digests[i], e);
            if (!rc) {
                r->status = PIPELINE_RAN;
                char d[32];
                rlhf_fmt_duration(r->seconds, d, sizeof d);
                rlhf_logf(c->log, "   %s done in %s (%.1f CPU seconds) -> %s", st->name, d,
                          r->cpu_seconds, c->dir);
            } else {
                err_prefix(e, "stage %s", st->name);
            }
        }
        cJSON_Delete(record);
        if (stopped || (o->until && !strcmp(o->until, st->name)))
            done = true;
    }
    if (rc && rep->n) /* the loop stops at the stage that failed: never listed as ran */
        rep->stage[rep->n - 1].status = PIPELINE_FAILED;
    load_now(load[1]);
    err_t e2 = ERR_INIT;
    int rc2 = write_run_json(o, rep, rlhf_now() - t_run, load, rc, rc ? &e2 : e);
    if (!rc)
        rc = rc2;
    for (int k = 0; k < DATA_NSPLITS; k++)
        free(c->split[k]);
    if (c->data_loaded) {
        data_hh_free(&c->hh);
        data_split_free(&c->rec);
    }
    if (c->be)
        be_close(c->be);
    free(c);
    free(digests);
    return rc;
}
