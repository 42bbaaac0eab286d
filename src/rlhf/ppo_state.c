/* ppo_state: a PPO run's files (ppo_internal.h): the per-step samples and statistics
 * streams, the checkpoint state a resumed run restores (and the stream truncation that goes
 * with it), the final statistics, evaluation samples and models. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    cJSON_AddStringToObject(s, "format", "mxrlhf.ppo_state/1");
    cJSON_AddNumberToObject(s, "steps_done", steps_done);
    cJSON_AddNumberToObject(s, "kl_coef", P->kl.value);
    cJSON *r = cJSON_AddObjectToObject(s, "running_scores");
    cJSON_AddNumberToObject(r, "mean", P->running.mean);
    cJSON_AddNumberToObject(r, "var", P->running.var);
    cJSON_AddNumberToObject(r, "std", P->running.std);
    cJSON_AddNumberToObject(r, "count", P->running.count);
    cJSON_AddItemToObject(s, "options", opts_to_json(&ppo_opts_table, P->o));
    cJSON_AddItemToObject(s, "stats", cJSON_Duplicate(P->stats, 1));
    cJSON_AddItemToObject(s, "evaluations", cJSON_Duplicate(P->evals, 1));
    cJSON_AddItemToObject(s, "warnings", cJSON_Duplicate(P->warnings, 1));
    cJSON_AddItemToObject(s, "best_of_n", P->bon ? cJSON_Duplicate(P->bon, 1) : cJSON_CreateNull());
    return s;
}

/* Restores the state of a checkpoint; options must match (steps may grow). */
int ppo_state_restore(ppo_t *P, cJSON *st, const char *ctx, err_t *e)
{
    cJSON *mine = opts_to_json(&ppo_opts_table, P->o);
    cJSON *theirs = cJSON_GetObjectItemCaseSensitive(st, "options");
    if (!mine)
        return err_set(e, ERR_NOMEM, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(mine, "steps");
    for (const cJSON *it = mine->child; it; it = it->next) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(theirs, it->string);
        if (!t || !cJSON_Compare(it, t, true)) {
            char *a = cJSON_PrintUnformatted(it), *b = t ? cJSON_PrintUnformatted(t) : NULL;
            err_set(e, ERR_INPUT, "%s: option %s was %s in the checkpoint, %s now (resume with "
                    "the options the run started with; only steps may change)", ctx, it->string,
                    b ? b : "absent", a ? a : "?");
            free(a);
            free(b);
            cJSON_Delete(mine);
            return ERR_INPUT;
        }
    }
    cJSON_Delete(mine);
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
