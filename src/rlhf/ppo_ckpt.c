/* ppo_ckpt: PPO checkpoints (layout and guarantees in ppo_ckpt.h). */
#include "rlhf/ppo_ckpt.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/safetensors.h"

#define CKPT_DIR "checkpoints"
#define LATEST "latest.json"

/* a path under out_dir/checkpoints: a, or a/b */
static char *ck_path(const char *out_dir, const char *a, const char *b)
{
    char buf[4096];
    int n = b ? snprintf(buf, sizeof buf, "%s/%s/%s/%s", out_dir, CKPT_DIR, a, b)
              : snprintf(buf, sizeof buf, "%s/%s/%s", out_dir, CKPT_DIR, a);
    return n > 0 && (size_t)n < sizeof buf ? strdup(buf) : NULL;
}

static int write_model(qwen2_model_t *m, const char *path, err_t *e)
{
    size_t maxn = 0;
    for (int i = 0; i < qwen2_ntensors(m); i++)
        maxn = qwen2_tensor(m, i)->numel > maxn ? qwen2_tensor(m, i)->numel : maxn;
    float *p = err_malloc(e, maxn * sizeof *p, "a checkpoint buffer");
    float *m1 = err_malloc(e, maxn * sizeof *m1, "a checkpoint buffer");
    float *m2 = err_malloc(e, maxn * sizeof *m2, "a checkpoint buffer");
    st_writer_t *w = p && m1 && m2 ? st_writer_new(e) : NULL;
    int rc = w ? ERR_OK : (e->code ? e->code : ERR_NOMEM);
    char name[160];
    for (int i = 0; !rc && i < qwen2_ntensors(m); i++) {
        const qwen2_tensor_t *t = qwen2_tensor(m, i);
        size_t nb = t->numel * sizeof(float);
        rc = qwen2_params_get(m, t->off, p, t->numel, e);
        if (!rc)
            rc = qwen2_moments_get(m, t->off, m1, m2, t->numel, e);
        if (!rc)
            rc = st_writer_add(w, t->name, ST_F32, t->ndim, t->shape, p, nb, 0, e);
        snprintf(name, sizeof name, "optimizer.exp_avg.%s", t->name);
        if (!rc)
            rc = st_writer_add(w, name, ST_F32, t->ndim, t->shape, m1, nb, 0, e);
        snprintf(name, sizeof name, "optimizer.exp_avg_sq.%s", t->name);
        if (!rc)
            rc = st_writer_add(w, name, ST_F32, t->ndim, t->shape, m2, nb, 0, e);
    }
    if (!rc)
        rc = st_writer_meta(w, "format", "mxrlhf.ppo_checkpoint", e);
    if (!rc)
        rc = st_writer_write(w, path, e);
    st_writer_free(w);
    free(p);
    free(m1);
    free(m2);
    return rc;
}

static int read_model(qwen2_model_t *m, const char *path, err_t *e)
{
    st_file_t f;
    if (st_open(&f, path, e))
        return e->code;
    size_t maxn = 0;
    for (int i = 0; i < qwen2_ntensors(m); i++)
        maxn = qwen2_tensor(m, i)->numel > maxn ? qwen2_tensor(m, i)->numel : maxn;
    float *p = err_malloc(e, maxn * sizeof *p, "a checkpoint buffer");
    float *m1 = err_malloc(e, maxn * sizeof *m1, "a checkpoint buffer");
    float *m2 = err_malloc(e, maxn * sizeof *m2, "a checkpoint buffer");
    int rc = p && m1 && m2 ? ERR_OK : ERR_NOMEM;
    char name[160];
    for (int i = 0; !rc && i < qwen2_ntensors(m); i++) {
        const qwen2_tensor_t *t = qwen2_tensor(m, i);
        rc = st_read_f32(&f, t->name, t->ndim, t->shape, p, e);
        snprintf(name, sizeof name, "optimizer.exp_avg.%s", t->name);
        if (!rc)
            rc = st_read_f32(&f, name, t->ndim, t->shape, m1, e);
        snprintf(name, sizeof name, "optimizer.exp_avg_sq.%s", t->name);
        if (!rc)
            rc = st_read_f32(&f, name, t->ndim, t->shape, m2, e);
        if (!rc)
            rc = qwen2_params_set(m, t->off, p, t->numel, e);
        if (!rc)
            rc = qwen2_moments_set(m, t->off, m1, m2, t->numel, e);
    }
    free(p);
    free(m1);
    free(m2);
    st_close(&f);
    return rc;
}

static cJSON *opt_state_json(const qwen2_model_t *m)
{
    qwen2_opt_state_t s;
    qwen2_opt_state_get(m, &s);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", (double)s.step);
    cJSON_AddNumberToObject(j, "loss_scale", s.loss_scale);
    cJSON_AddNumberToObject(j, "good_steps", s.good_steps);
    return j;
}

static int opt_state_set(qwen2_model_t *m, const cJSON *state, const char *key, const char *ctx,
                         err_t *e)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(state, key);
    long long step, good;
    double ls;
    char sub[512];
    snprintf(sub, sizeof sub, "%s: %s", ctx, key);
    if (!cJSON_IsObject(j))
        return err_set(e, ERR_INPUT, "%s: field \"%s\" is missing", ctx, key);
    if (json_req_int(j, "step", sub, &step, e) || json_req_double(j, "loss_scale", sub, &ls, e) ||
        json_req_int(j, "good_steps", sub, &good, e))
        return e->code;
    qwen2_opt_state_t s = {(long)step, ls, (int)good};
    return qwen2_opt_state_set(m, &s, e);
}

/* Removes a checkpoint directory: the files this module writes and the temporaries a
 * killed writer left of them (atomic_remove_stale: only those no live writer holds), then
 * the directory. */
static void remove_ckpt(const char *out_dir, const char *name)
{
    static const char *const files[] = {"policy.safetensors", "critic.safetensors", "state.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = ck_path(out_dir, name, files[i]);
        if (p) {
            atomic_remove_stale(p);
            unlink(p);
        }
        free(p);
    }
    char *d = ck_path(out_dir, name, NULL);
    if (d)
        rmdir(d);
    free(d);
}

/* Every checkpoint directory but `keep`: the previous checkpoint, and any a killed run left
 * half-written (a resumed run with other checkpoint steps never writes that one again). */
static void remove_other_ckpts(const char *out_dir, const char *keep)
{
    char *cd = fs_join(out_dir, CKPT_DIR);
    DIR *d = cd ? opendir(cd) : NULL;
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        if (strncmp(de->d_name, "ckpt-", 5) || !strcmp(de->d_name, keep))
            continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn)
            break;
        names = nn;
        if ((names[n] = strdup(de->d_name)))
            n++;
    }
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++) {
        remove_ckpt(out_dir, names[i]);
        free(names[i]);
    }
    free(names);
    free(cd);
}

int ppo_ckpt_write(const char *out_dir, int step, qwen2_model_t *policy, qwen2_model_t *critic,
                   const cJSON *state, err_t *e)
{
    char name[32];
    snprintf(name, sizeof name, "ckpt-%06d", step);
    char *dir = ck_path(out_dir, name, NULL), *pp = ck_path(out_dir, name, "policy.safetensors"),
         *cp = ck_path(out_dir, name, "critic.safetensors"), *sp = ck_path(out_dir, name, "state.json"),
         *lp = ck_path(out_dir, LATEST, NULL);
    cJSON *st = cJSON_Duplicate(state, 1), *latest = cJSON_CreateObject();
    int rc = dir && pp && cp && sp && lp && st && latest ? ERR_OK
                                                         : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = fs_mkdir_p(dir, e);
    if (!rc)
        rc = write_model(policy, pp, e);
    if (!rc && critic)
        rc = write_model(critic, cp, e);
    if (!rc) {
        cJSON_AddItemToObject(st, "policy_optimizer", opt_state_json(policy));
        if (critic)
            cJSON_AddItemToObject(st, "critic_optimizer", opt_state_json(critic));
        rc = json_write_file(sp, st, true, e);
    }
    if (!rc) {
        cJSON_AddNumberToObject(latest, "step", step);
        cJSON_AddStringToObject(latest, "dir", name);
        rc = json_write_file(lp, latest, true, e);
    }
    if (!rc) /* latest.json names the new one: the others are obsolete */
        remove_other_ckpts(out_dir, name);
    if (rc)
        err_prefix(e, "checkpoint at step %d", step);
    cJSON_Delete(st);
    cJSON_Delete(latest);
    free(dir);
    free(pp);
    free(cp);
    free(sp);
    free(lp);
    return rc;
}

int ppo_ckpt_peek(const char *out_dir, cJSON **state, int *step, char **state_path, err_t *e)
{
    *state = NULL;
    if (state_path)
        *state_path = NULL;
    char *lp = ck_path(out_dir, LATEST, NULL), *sp = NULL;
    cJSON *latest = NULL, *st = NULL;
    int rc = lp ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    if (!rc && !fs_exists(lp))
        rc = err_set(e, ERR_INPUT, "%s: no checkpoint to resume from", lp);
    if (!rc)
        rc = json_load_file(lp, 1 << 16, &latest, e);
    const char *name = NULL;
    long long s = 0, done = 0;
    if (!rc && !(rc = json_req_string(latest, "dir", lp, &name, e)) &&
        !(rc = json_req_int(latest, "step", lp, &s, e))) {
        if (strncmp(name, "ckpt-", 5) || strchr(name, '/'))
            rc = err_set(e, ERR_INPUT, "%s: field \"dir\": expected ckpt-NNNNNN, got \"%s\"", lp,
                         name);
    }
    if (!rc && !(sp = ck_path(out_dir, name, "state.json")))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = json_load_file(sp, 1u << 30, &st, e);
    /* latest.json is written after the checkpoint it names: their steps must agree */
    if (!rc && !(rc = json_req_int(st, "steps_done", sp, &done, e)) && done != s)
        rc = err_set(e, ERR_INPUT, "%s: field \"step\" is %lld, but the checkpoint it names "
                     "(%s) holds step %lld (%s): the checkpoint directory is inconsistent",
                     lp, s, name, done, sp);
    if (!rc) {
        *state = st;
        *step = (int)s;
        st = NULL;
        if (state_path) {
            *state_path = sp;
            sp = NULL;
        }
    }
    cJSON_Delete(latest);
    cJSON_Delete(st);
    free(lp);
    free(sp);
    return rc;
}

int ppo_ckpt_read(const char *out_dir, qwen2_model_t *policy, qwen2_model_t *critic,
                  cJSON **state, int *step, err_t *e)
{
    *state = NULL;
    cJSON *st = NULL;
    char *sp = NULL, *pp = NULL, *cp = NULL;
    int rc = ppo_ckpt_peek(out_dir, &st, step, &sp, e);
    if (!rc) {
        /* the checkpoint's files beside its state.json */
        char *slash = strrchr(sp, '/');
        *slash = 0;
        pp = fs_join(sp, "policy.safetensors");
        cp = fs_join(sp, "critic.safetensors");
        *slash = '/';
        if (!pp || !cp)
            rc = err_set(e, ERR_NOMEM, "out of memory");
    }
    if (!rc)
        rc = read_model(policy, pp, e);
    if (!rc)
        rc = opt_state_set(policy, st, "policy_optimizer", sp, e);
    if (!rc && critic) {
        rc = read_model(critic, cp, e);
        if (!rc)
            rc = opt_state_set(critic, st, "critic_optimizer", sp, e);
    }
    if (!rc) {
        *state = st;
        st = NULL;
    }
    cJSON_Delete(st);
    free(sp);
    free(pp);
    free(cp);
    return rc;
}
