/* ppo_state: a PPO run's files (ppo_internal.h): the per-step samples and statistics
 * streams, the checkpoint state a resumed run restores (and the stream truncation that goes
 * with it), the final statistics, evaluation samples and models. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/hh.h"
#include "rlhf/ppo_ckpt.h"
#include "rlhf/ppo_internal.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- files ------------------------------------------------------------------------------------ */

char *ppo_out_path(ppo_t *P, const char *name) { return fs_join(P->io->out_dir, name); }

int ppo_write_line(FILE *f, const cJSON *j, const char *what, err_t *e)
{
    char *s = cJSON_PrintUnformatted(j);
    int bad = !s || fputs(s, f) == EOF || fputc('\n', f) == EOF || fflush(f) != 0;
    free(s);
    return bad ? err_errno(e, ERR_FAIL, "writing %s", what) : ERR_OK;
}

int ppo_samples_write(ppo_t *P, int step, const prompt_t *const *rows, char **texts, err_t *e)
{
    for (int b = 0; b < P->B; b++) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNumberToObject(j, "step", step + 1);
        cJSON_AddNumberToObject(j, "row", b);
        cJSON_AddStringToObject(j, "prompt", rows[b]->text);
        cJSON_AddStringToObject(j, "response", texts[b] ? texts[b] : "");
        cJSON_AddNumberToObject(j, "query_tokens", rows[b]->seq.n);
        cJSON_AddNumberToObject(j, "tokens", P->resp_len[b]);
        cJSON_AddItemToObject(j, "score", ppo_num(P->raw_scores[b]));
        cJSON_AddItemToObject(j, "data_synth_score", ppo_num(P->synth[b]));
        int rc = ppo_write_line(P->samples, j, "samples.jsonl", e);
        cJSON_Delete(j);
        if (rc)
            return rc;
    }
    return ERR_OK;
}

/* The state a checkpoint holds besides the weights. */
cJSON *ppo_state_json(ppo_t *P, int steps_done)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "format", "mxrlhf.ppo_state/2");
    cJSON_AddNumberToObject(s, "steps_done", steps_done);
    cJSON_AddNumberToObject(s, "kl_coef", P->kl.value);
    cJSON *r = cJSON_AddObjectToObject(s, "running_scores");
    cJSON_AddNumberToObject(r, "mean", P->running.mean);
    cJSON_AddNumberToObject(r, "var", P->running.var);
    cJSON_AddNumberToObject(r, "std", P->running.std);
    cJSON_AddNumberToObject(r, "count", P->running.count);
    cJSON_AddItemToObject(s, "options", opts_to_json(&ppo_opts_table, P->o));
    cJSON_AddItemToObject(s, "run", cJSON_Duplicate(P->run, 1));
    cJSON_AddItemToObject(s, "stats", cJSON_Duplicate(P->stats, 1));
    cJSON_AddItemToObject(s, "evaluations", cJSON_Duplicate(P->evals, 1));
    cJSON_AddItemToObject(s, "warnings", cJSON_Duplicate(P->warnings, 1));
    cJSON_AddItemToObject(s, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
    return s;
}

/* ---- what a run is: a resume must be the same run -------------------------------------- */

/* {"dir": dir, "fingerprint": "bytes:crc32"} of a model directory */
static int model_id(cJSON *run, const char *key, const char *dir, err_t *e)
{
    char fp[48];
    if (qwen2_dir_fingerprint(dir, fp, sizeof fp, e))
        return e->code;
    cJSON *m = cJSON_AddObjectToObject(run, key);
    cJSON_AddStringToObject(m, "dir", dir);
    cJSON_AddStringToObject(m, "fingerprint", fp);
    return ERR_OK;
}

static int file_fp(const char *path, char *fp, size_t cap, err_t *e)
{
    uint64_t bytes;
    uint32_t crc;
    bool gz;
    if (data_file_crc32(path, &bytes, &crc, &gz, e))
        return e->code;
    snprintf(fp, cap, "%llu:%08x", (unsigned long long)bytes, (unsigned)crc);
    return ERR_OK;
}

/* "count:bytes:crc32" of a list of texts (each with its terminating NUL) */
static void texts_fp(const char *const *t, size_t n, char *fp, size_t cap)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    unsigned long long bytes = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(t[i]) + 1;
        crc = crc32_z(crc, (const unsigned char *)t[i], k);
        bytes += k;
    }
    snprintf(fp, cap, "%zu:%llu:%08lx", n, bytes, (unsigned long)crc);
}

int ppo_run_identity(const ppo_opts_t *o, const rlhf_ppo_io_t *io, cJSON **out, err_t *e)
{
    *out = NULL;
    cJSON *run = cJSON_CreateObject();
    char fp[48];
    char *tok = fs_join(io->policy_dir, "tokenizer.json");
    int rc = run && tok ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = model_id(run, "policy_model", io->policy_dir, e);
    if (!rc && (!io->ref_dir || !strcmp(io->ref_dir, io->policy_dir))) /* read once */
        cJSON_AddItemToObject(run, "reference_model",
                              cJSON_Duplicate(cJSON_GetObjectItem(run, "policy_model"), 1));
    else if (!rc)
        rc = model_id(run, "reference_model", io->ref_dir, e);
    if (!rc)
        rc = model_id(run, "reward_model", io->reward_dir, e);
    if (!rc && o->separate_critic)
        rc = model_id(run, "critic_model", io->critic_dir ? io->critic_dir : io->reward_dir, e);
    if (!rc && !(rc = file_fp(tok, fp, sizeof fp, e)))
        cJSON_AddStringToObject(run, "tokenizer", fp);
    if (!rc && io->policies_path) {
        cJSON *p = cJSON_AddObjectToObject(run, "precision_plan");
        cJSON_AddStringToObject(p, "plan", io->plan ? io->plan : "");
        cJSON_AddStringToObject(p, "path", io->policies_path);
        if (!(rc = file_fp(io->policies_path, fp, sizeof fp, e)))
            cJSON_AddStringToObject(p, "fingerprint", fp);
    } else if (!rc) {
        cJSON_AddNullToObject(run, "precision_plan");
    }
    if (!rc && io->data) {
        const ppo_data_opts_t *d = io->data;
        cJSON *j = cJSON_AddObjectToObject(run, "data");
        cJSON_AddStringToObject(j, "source", d->data_path ? "file" : "synthetic task");
        if (d->data_path) {
            cJSON_AddStringToObject(j, "path", d->data_path);
            if (!(rc = file_fp(d->data_path, fp, sizeof fp, e)))
                cJSON_AddStringToObject(j, "fingerprint", fp);
            cJSON_AddBoolToObject(j, "synthetic", d->synthetic);
        }
        cJSON_AddNumberToObject(j, "pairs", (double)d->pairs);
        snprintf(fp, sizeof fp, "%llu", (unsigned long long)d->seed);
        cJSON_AddStringToObject(j, "data_seed", fp);
    }
    if (!rc && io->prompts) {
        cJSON *j = cJSON_AddObjectToObject(run, "prompts");
        texts_fp(io->prompts, io->n_prompts, fp, sizeof fp);
        cJSON_AddStringToObject(j, "ppo", fp);
        texts_fp(io->eval_prompts, io->n_eval, fp, sizeof fp);
        cJSON_AddStringToObject(j, "eval", fp);
        cJSON_AddBoolToObject(j, "synthetic", io->synthetic);
    }
    free(tok);
    if (rc) {
        cJSON_Delete(run);
        return rc;
    }
    *out = run;
    return ERR_OK;
}

/* Where `then` and `now` first differ, as "a.b" (keys "dir" and "path" only say where a
 * thing was: moving a model or a file is no change); 0 when they agree. */
static int first_diff(const cJSON *then, const cJSON *now, char *path, size_t cap,
                      const cJSON **a, const cJSON **b)
{
    if (!cJSON_IsObject(then) || !cJSON_IsObject(now)) {
        *a = then, *b = now;
        return !cJSON_Compare(then, now, true);
    }
    size_t at = strlen(path);
    for (const cJSON *it = then->child; it; it = it->next) {
        if (!strcmp(it->string, "dir") || !strcmp(it->string, "path"))
            continue;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(now, it->string);
        snprintf(path + at, cap - at, "%s%s", at ? "." : "", it->string);
        if (!t) {
            *a = it, *b = NULL;
            return 1;
        }
        if (first_diff(it, t, path, cap, a, b))
            return 1;
        path[at] = 0;
    }
    for (const cJSON *it = now->child; it; it = it->next)
        if (!cJSON_GetObjectItemCaseSensitive(then, it->string)) {
            snprintf(path + at, cap - at, "%s%s", at ? "." : "", it->string);
            *a = NULL, *b = it;
            return 1;
        }
    return 0;
}

/* `where` of an object of a run record ("policy_model" -> its dir), or "" */
static const char *where_of(const cJSON *run, const char *field)
{
    char top[64];
    snprintf(top, sizeof top, "%.*s", (int)strcspn(field, "."), field);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(run, top);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "dir");
    if (!w)
        w = cJSON_GetObjectItemCaseSensitive(o, "path");
    return cJSON_IsString(w) ? w->valuestring : "";
}

static int differs(const char *ctx, const char *what, const char *field, const cJSON *then,
                   const cJSON *now, const char *where_then, const char *where_now, err_t *e)
{
    char *a = then ? cJSON_PrintUnformatted(then) : NULL, *b = now ? cJSON_PrintUnformatted(now) : NULL;
    char wt[600] = "", wn[600] = "";
    if (where_then && *where_then)
        snprintf(wt, sizeof wt, " (%s)", where_then);
    if (where_now && *where_now)
        snprintf(wn, sizeof wn, " (%s)", where_now);
    err_set(e, ERR_INPUT, "%s: %s %s was %s%s in the checkpoint, %s%s now: a resumed run must be "
            "the run it continues (its models, data, plan, seeds and options; only steps may "
            "grow)", ctx, what, field, a ? a : "absent", wt, b ? b : "absent", wn);
    free(a);
    free(b);
    return ERR_INPUT;
}

int ppo_resume_check(const ppo_opts_t *o, const rlhf_ppo_io_t *io, const cJSON *run, err_t *e)
{
    cJSON *st = NULL;
    char *sp = NULL;
    int done = 0;
    if (ppo_ckpt_peek(io->out_dir, &st, &done, &sp, e))
        return e->code;
    int rc = ERR_OK;
    if (o->steps < done)
        rc = err_set(e, ERR_INPUT, "%s: steps %d is fewer than the %d steps the checkpoint has "
                     "done (a resume may only keep or raise steps)", sp, o->steps, done);
    /* the options, steps aside */
    cJSON *mine = rc ? NULL : opts_to_json(&ppo_opts_table, o);
    const cJSON *theirs = cJSON_GetObjectItemCaseSensitive(st, "options");
    if (!rc && !mine)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc && !cJSON_IsObject(theirs))
        rc = err_set(e, ERR_INPUT, "%s: field \"options\" is missing", sp);
    if (!rc) {
        cJSON_DeleteItemFromObjectCaseSensitive(mine, "steps");
        for (const cJSON *it = mine->child; !rc && it; it = it->next) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(theirs, it->string);
            if (!t || !cJSON_Compare(it, t, true))
                rc = differs(sp, "option", it->string, t, it, NULL, NULL, e);
        }
    }
    cJSON_Delete(mine);
    /* what the run is */
    cJSON *then = cJSON_GetObjectItemCaseSensitive(st, "run");
    if (!io->prompts) /* a check before the prompts are drawn: rlhf_ppo_run compares them */
        cJSON_DeleteItemFromObjectCaseSensitive(then, "prompts");
    if (!rc && !cJSON_IsObject(then))
        rc = err_set(e, ERR_INPUT, "%s: field \"run\" is missing (a checkpoint of an older "
                     "mxrlhf, which did not record its models and data): start the run again",
                     sp);
    char field[256] = "";
    const cJSON *a = NULL, *b = NULL;
    if (!rc && first_diff(then, run, field, sizeof field, &a, &b))
        rc = differs(sp, "run", field, a, b, where_of(then, field), where_of(run, field), e);
    cJSON_Delete(st);
    free(sp);
    return rc;
}

/* Restores the state of a checkpoint (ppo_resume_check has compared the run). */
int ppo_state_restore(ppo_t *P, cJSON *st, const char *ctx, err_t *e)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(st, "running_scores");
    double klc = ppo_jnum(st, "kl_coef");
    cJSON *stats = cJSON_DetachItemFromObjectCaseSensitive(st, "stats");
    cJSON *evals = cJSON_DetachItemFromObjectCaseSensitive(st, "evaluations");
    cJSON *warns = cJSON_DetachItemFromObjectCaseSensitive(st, "warnings");
    cJSON *bon = cJSON_DetachItemFromObjectCaseSensitive(st, "best_of_n");
    if (!isfinite(klc) || !cJSON_IsObject(r) || !cJSON_IsArray(stats) || !cJSON_IsArray(evals) ||
        !cJSON_IsArray(warns)) {
        cJSON_Delete(stats), cJSON_Delete(evals), cJSON_Delete(warns), cJSON_Delete(bon);
        return err_set(e, ERR_INPUT, "%s: state.json lacks kl_coef, running_scores, stats, "
                       "evaluations or warnings", ctx);
    }
    P->kl.value = klc;
    P->running = (ppo_running_t){ppo_jnum(r, "mean"), ppo_jnum(r, "var"), ppo_jnum(r, "std"),
                                 ppo_jnum(r, "count")};
    cJSON_Delete(P->stats), cJSON_Delete(P->evals), cJSON_Delete(P->warnings);
    P->stats = stats;
    P->evals = evals;
    P->warnings = warns;
    P->bon = cJSON_IsObject(bon) ? bon : NULL;
    if (!P->bon)
        cJSON_Delete(bon);
    return ERR_OK;
}

/* samples.jsonl without the lines of steps after `steps_done` (a killed run's tail). */
static int samples_truncate(const char *path, int steps_done, err_t *e)
{
    char *text = NULL;
    size_t len;
    if (!fs_exists(path))
        return atomic_write(path, "", 0, e);
    if (fs_read_all(path, (size_t)1 << 34, &text, &len, e))
        return e->code;
    size_t keep = 0;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        if (!nl)
            break; /* a torn last line */
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        double s = j ? ppo_jnum(j, "step") : NAN;
        cJSON_Delete(j);
        if (!(s <= steps_done))
            break;
        keep = (size_t)(nl + 1 - text);
        p = nl + 1;
    }
    int rc = atomic_write(path, text, keep, e);
    free(text);
    return rc;
}

int ppo_open_streams(ppo_t *P, bool resumed, int steps_done, err_t *e)
{
    char *jp = ppo_out_path(P, PPO_STATS_JSONL), *sp = ppo_out_path(P, "samples.jsonl");
    int rc = jp && sp ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        /* training_stats.jsonl holds exactly the checkpoint's steps, then streams on */
        size_t cap = 1 << 16, len = 0;
        char *buf = malloc(cap);
        cJSON *it;
        cJSON_ArrayForEach(it, P->stats)
        {
            char *s = cJSON_PrintUnformatted(it);
            size_t n = s ? strlen(s) : 0;
            if (buf && s && len + n + 2 > cap) {
                cap = 2 * (len + n + 2);
                char *nb = realloc(buf, cap);
                if (!nb)
                    free(buf);
                buf = nb;
            }
            if (buf && s) {
                memcpy(buf + len, s, n);
                len += n;
                buf[len++] = '\n';
            }
            free(s);
        }
        rc = buf ? atomic_write(jp, buf, len, e) : err_set(e, ERR_NOMEM, "out of memory");
        free(buf);
    }
    if (!rc)
        rc = resumed ? samples_truncate(sp, steps_done, e) : atomic_write(sp, "", 0, e);
    if (!rc && (!(P->jsonl = fopen(jp, "a")) || !(P->samples = fopen(sp, "a"))))
        rc = err_errno(e, ERR_FAIL, "cannot open %s for appending", P->jsonl ? sp : jp);
    free(jp);
    free(sp);
    return rc;
}

static cJSON *models_json(const rlhf_ppo_io_t *io)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "policy", io->policy_dir);
    cJSON_AddStringToObject(m, "reference", io->ref_dir ? io->ref_dir : io->policy_dir);
    cJSON_AddStringToObject(m, "reward", io->reward_dir);
    if (io->critic_dir)
        cJSON_AddStringToObject(m, "critic", io->critic_dir);
    cJSON_AddItemToObject(m, "precision_plan", io->plan ? cJSON_CreateString(io->plan) : cJSON_CreateNull());
    return m;
}

int ppo_write_final(ppo_t *P, const ppo_eval_t *last, err_t *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "mxrlhf.training_stats/1");
    cJSON_AddStringToObject(root, "trainer", "PPO with TRL 0.11 PPOTrainer semantics (mxrlhf)");
    cJSON_AddItemToObject(root, "options", opts_to_json(&ppo_opts_table, P->o));
    cJSON_AddItemToObject(root, "models", models_json(P->io));
    cJSON_AddItemToObject(root, "steps", cJSON_Duplicate(P->stats, 1));
    cJSON *evals = cJSON_Duplicate(P->evals, 1);
    if (last && last->n)
        cJSON_AddItemToArray(evals, ppo_eval_json(last));
    cJSON_AddItemToObject(root, "evaluations", evals);
    cJSON_AddItemToObject(root, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "warnings", cJSON_Duplicate(P->warnings, 1));
    char *p = ppo_out_path(P, PPO_STATS_JSON), *ep = ppo_out_path(P, "eval.json");
    int rc = p && ep ? json_write_file(p, root, true, e) : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        cJSON *ej = cJSON_CreateObject();
        cJSON_AddItemToObject(ej, "evaluations", cJSON_Duplicate(evals, 1));
        cJSON_AddItemToObject(ej, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
        rc = json_write_file(ep, ej, true, e);
        cJSON_Delete(ej);
    }
    free(p);
    free(ep);
    cJSON_Delete(root);
    return rc;
}

/* eval_samples.jsonl: the final evaluation's samples, one line per held-out prompt. */
int ppo_write_eval_samples(ppo_t *P, const cJSON *samples, err_t *e)
{
    char *path = ppo_out_path(P, PPO_EVAL_SAMPLES);
    atomic_file_t af;
    int rc = path ? atomic_open(&af, path, e) : err_set(e, ERR_NOMEM, "out of memory");
    for (const cJSON *j = samples ? samples->child : NULL; !rc && j; j = j->next) {
        char *line = cJSON_PrintUnformatted(j);
        if (!line || fputs(line, af.fp) == EOF || fputc('\n', af.fp) == EOF)
            rc = err_set(e, ERR_FAIL, "writing %s", path);
        free(line);
        if (rc)
            atomic_abort(&af);
    }
    if (!rc)
        rc = atomic_commit(&af, e);
    free(path);
    return rc;
}

int ppo_save_models(ppo_t *P, err_t *e)
{
    char *pd = ppo_out_path(P, "policy"), *cd = ppo_out_path(P, "critic");
    char *src = fs_join(P->io->policy_dir, "tokenizer.json");
    char *dst = pd ? fs_join(pd, "tokenizer.json") : NULL;
    char *buf = NULL;
    size_t len;
    int rc = pd && cd && src && dst ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = qwen2_save_dir(P->policy, pd, ST_F32, e);
    if (!rc)
        rc = fs_read_all(src, (size_t)1 << 30, &buf, &len, e);
    if (!rc)
        rc = atomic_write(dst, buf, len, e);
    if (!rc && P->critic)
        rc = qwen2_save_dir(P->critic, cd, ST_F32, e);
    free(buf);
    free(pd);
    free(cd);
    free(src);
    free(dst);
    return rc;
}
