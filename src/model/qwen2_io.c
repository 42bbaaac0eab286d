/* qwen2_io: Hugging Face model directories in and out.
 *
 * In: config.json and either model.safetensors or model.safetensors.index.json (whose
 * "weight_map" names the shard of every tensor). Out: config.json and one
 * model.safetensors with metadata {"format": "pt"}, which transformers loads as is. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "model/qwen2_internal.h"
#include "util/fs.h"
#include "util/half.h"
#include "util/json.h"

#define MAX_SHARDS 256

typedef struct shards {
    st_file_t f[MAX_SHARDS];
    char *name[MAX_SHARDS];
    int n;
    cJSON *index;             /* the parsed index, or NULL for one file */
    const cJSON *weight_map;
    char *index_path;
} shards_t;

static void shards_close(shards_t *s)
{
    for (int i = 0; i < s->n; i++) {
        st_close(&s->f[i]);
        free(s->name[i]);
    }
    cJSON_Delete(s->index);
    free(s->index_path);
    memset(s, 0, sizeof *s);
}

static int open_shard(shards_t *s, const char *dir, const char *name, err_t *e)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], name))
            return i;
    if (s->n == MAX_SHARDS) {
        err_set(e, ERR_INPUT, "%s: more than %d shards", s->index_path, MAX_SHARDS);
        return -1;
    }
    char *path = fs_join(dir, name);
    if (!path) {
        err_set(e, ERR_NOMEM, "out of memory");
        return -1;
    }
    int rc = st_open(&s->f[s->n], path, e);
    free(path);
    if (rc)
        return -1;
    s->name[s->n] = strdup(name);
    return s->n++;
}

static int shards_open(shards_t *s, const char *dir, err_t *e)
{
    memset(s, 0, sizeof *s);
    s->index_path = fs_join(dir, "model.safetensors.index.json");
    if (!s->index_path)
        return err_set(e, ERR_NOMEM, "out of memory");
    if (!fs_exists(s->index_path))
        return open_shard(s, dir, "model.safetensors", e) < 0 ? e->code : ERR_OK;
    if (json_load_file(s->index_path, 64u << 20, &s->index, e))
        return e->code;
    s->weight_map = cJSON_GetObjectItemCaseSensitive(s->index, "weight_map");
    if (!cJSON_IsObject(s->weight_map))
        return err_set(e, ERR_INPUT, "%s: field \"weight_map\": expected an object mapping "
                       "tensor names to files", s->index_path);
    for (const cJSON *it = s->weight_map->child; it; it = it->next) {
        const char *f = cJSON_IsString(it) ? it->valuestring : NULL;
        /* a shard is a plain file name beside the index, never a path elsewhere */
        if (!f || !f[0] || strchr(f, '/') || f[0] == '.')
            return err_set(e, ERR_INPUT, "%s: field \"weight_map.%s\": expected a file name in "
                           "the same directory", s->index_path, it->string);
    }
    return ERR_OK;
}

/* The shard holding `name`, or NULL (then *where names the file it should be in). */
static const st_file_t *shards_find(shards_t *s, const char *dir, const char *name,
                                    const char **where, err_t *e)
{
    if (!s->index) {
        *where = s->f[0].path;
        return st_find(&s->f[0], name) ? &s->f[0] : NULL;
    }
    *where = s->index_path;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s->weight_map, name);
    if (!v)
        return NULL;
    int i = open_shard(s, dir, v->valuestring, e);
    if (i < 0)
        return NULL;
    *where = s->f[i].path;
    return st_find(&s->f[i], name) ? &s->f[i] : NULL;
}

static bool is_head(const char *name)
{
    return !strcmp(name, "score.weight") || !strncmp(name, "v_head.summary.", 15);
}

int qwen2_load_dir(qwen2_model_t *m, const char *dir, err_t *e)
{
    if (m->dropped)
        return err_set(e, ERR_INPUT, "%s: a frozen model's float32 linear weights were freed; "
                       "open a new model to load", dir);
    shards_t s;
    int rc = shards_open(&s, dir, e);
    bool miss_score = false, miss_value = false;
    float *stage = NULL;
    size_t stage_n = 0;
    for (int i = 0; !rc && i < m->ntensors; i++) {
        const qwen2_tensor_t *t = &m->tensors[i];
        const char *where = dir;
        const st_file_t *f = shards_find(&s, dir, t->name, &where, e);
        if (!f) {
            if (e && e->code) {
                rc = e->code;
            } else if (is_head(t->name)) {
                miss_score |= !strcmp(t->name, "score.weight");
                miss_value |= !strncmp(t->name, "v_head.", 7);
            } else {
                rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\" is missing", where, t->name);
            }
            continue;
        }
        float *dst = be_host_addr(m->be, qp(m, t->off));
        if (!dst) {
            if (stage_n < t->numel) {
                free(stage);
                stage = err_malloc(e, t->numel * sizeof *stage, "a staging buffer");
                stage_n = stage ? t->numel : 0;
                if (!stage) {
                    rc = e->code;
                    break;
                }
            }
            dst = stage;
        }
        rc = st_read_f32(f, t->name, t->ndim, t->shape, dst, e);
        /* NaN or Inf weights make every output NaN (logprobs printed "nan", generation
         * picked garbage ids with exit 0): refused here, naming the tensor */
        for (size_t k = 0; !rc && k < t->numel; k++)
            if (!isfinite(dst[k]))
                rc = err_set(e, ERR_INPUT, "%s: tensor \"%s\": element %zu is %s (weights must "
                             "be finite)", where, t->name, k, isnan(dst[k]) ? "NaN"
                             : dst[k] > 0 ? "+Inf" : "-Inf");
        if (!rc && dst == stage)
            be_upload(m->be, qp(m, t->off), stage, t->numel * sizeof *stage);
    }
    free(stage);
    shards_close(&s);
    if (!rc && (miss_score || miss_value))
        rc = qwen2__init_heads(m, miss_score, miss_value, e);
    m->version++;
    return rc ? rc : be_sync(m->be, e);
}

int qwen2_check_reward_dir(const char *dir, err_t *e)
{
    shards_t s;
    int rc = shards_open(&s, dir, e);
    const char *where = dir;
    if (!rc && !shards_find(&s, dir, "score.weight", &where, e))
        rc = e && e->code ? e->code
                          : err_set(e, ERR_INPUT, "%s: not a reward model: tensor \"score.weight\" "
                                    "(the score head) is missing from %s (a causal LM? train a "
                                    "reward model from it with mxrlhf rm)", dir, where);
    shards_close(&s);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Adds one file of dir (its name, then its bytes) to the running CRC. */
static int crc_file(const char *dir, const char *name, uint32_t *crc, uint64_t *bytes, err_t *e)
{
    char *p = fs_join(dir, name);
    if (!p)
        return err_set(e, ERR_NOMEM, "out of memory");
    *crc = (uint32_t)crc32(*crc, (const unsigned char *)name, (uInt)strlen(name) + 1);
    int rc = fs_crc32(p, crc, bytes, NULL, e);
    free(p);
    return rc;
}

int qwen2_dir_fingerprint(const char *dir, char *buf, size_t cap, err_t *e)
{
    shards_t s;
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    uint64_t bytes = 0;
    const char **names = NULL;
    int n = 0;
    int rc = shards_open(&s, dir, e);
    if (!rc)
        rc = crc_file(dir, "config.json", &crc, &bytes, e);
    if (!rc && !s.index) {
        rc = crc_file(dir, "model.safetensors", &crc, &bytes, e);
    } else if (!rc) {
        rc = crc_file(dir, "model.safetensors.index.json", &crc, &bytes, e);
        int total = cJSON_GetArraySize(s.weight_map);
        names = calloc(total ? (size_t)total : 1, sizeof *names);
        if (!rc && !names)
            rc = err_set(e, ERR_NOMEM, "out of memory");
        for (const cJSON *it = s.weight_map->child; !rc && it; it = it->next)
            names[n++] = it->valuestring;
        if (!rc)
            qsort(names, (size_t)n, sizeof *names, cmp_str);
        for (int i = 0; !rc && i < n; i++)
            if (i == 0 || strcmp(names[i], names[i - 1]))
                rc = crc_file(dir, names[i], &crc, &bytes, e);
    }
    if (!rc)
        snprintf(buf, cap, "%llu:%08x", (unsigned long long)bytes, (unsigned)crc);
    else
        err_prefix(e, "fingerprint of the model %s", dir);
    free(names);
    shards_close(&s);
    return rc;
}

int qwen2_open_dir(const char *dir, backend_t *be, const qwen2_opts_t *opts, qwen2_model_t **out,
                   err_t *e)
{
    *out = NULL;
    char *cpath = fs_join(dir, "config.json");
    if (!cpath)
        return err_set(e, ERR_NOMEM, "out of memory");
    qwen2_config_t cfg;
    cJSON *j = NULL;
    qwen2_model_t *m = NULL;
    int rc = qwen2_config_load(cpath, &cfg, e);
    if (!rc)
        rc = json_load_file(cpath, 4u << 20, &j, e);
    if (!rc)
        rc = qwen2_new(be, &cfg, opts, &m, e);
    free(cpath);
    if (rc) {
        cJSON_Delete(j);
        return rc;
    }
    m->config_json = j;
    if ((rc = qwen2_load_dir(m, dir, e))) {
        qwen2_free(m);
        return rc;
    }
    *out = m;
    return ERR_OK;
}

/* ---- saving ---------------------------------------------------------------------------- */

static void set_num(cJSON *o, const char *k, double v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddNumberToObject(o, k, v);
}
static void set_str(cJSON *o, const char *k, const char *v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddStringToObject(o, k, v);
}
static void set_bool(cJSON *o, const char *k, bool v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddBoolToObject(o, k, v);
}

static cJSON *config_out(const qwen2_model_t *m, st_dtype_t dtype)
{
    const qwen2_config_t *c = &m->cfg;
    cJSON *j = m->config_json ? cJSON_Duplicate(m->config_json, 1) : cJSON_CreateObject();
    if (!j)
        return NULL;
    bool lm = m->lin_lm >= 0;
    cJSON_DeleteItemFromObjectCaseSensitive(j, "architectures");
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(lm ? "Qwen2ForCausalLM"
                                                     : "Qwen2ForSequenceClassification"));
    set_str(j, "model_type", "qwen2");
    set_num(j, "hidden_size", c->hidden);
    set_num(j, "intermediate_size", c->inter);
    set_num(j, "num_hidden_layers", c->layers);
    set_num(j, "num_attention_heads", c->heads);
    set_num(j, "num_key_value_heads", c->kv_heads);
    if (c->head_dim != c->hidden / c->heads || cJSON_GetObjectItemCaseSensitive(j, "head_dim"))
        set_num(j, "head_dim", c->head_dim);
    set_num(j, "vocab_size", c->vocab);
    set_num(j, "max_position_embeddings", c->max_pos);
    set_num(j, "rms_norm_eps", c->rms_eps);
    cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    if (cJSON_IsObject(rp))
        set_num(rp, "rope_theta", c->rope_theta);
    set_num(j, "rope_theta", c->rope_theta);
    set_bool(j, "tie_word_embeddings", c->tie);
    set_str(j, "hidden_act", "silu");
    if (!cJSON_GetObjectItemCaseSensitive(j, "use_sliding_window"))
        set_bool(j, "use_sliding_window", false);
    set_str(j, "torch_dtype", dtype == ST_BF16 ? "bfloat16" : dtype == ST_F16 ? "float16" : "float32");
    if (cJSON_GetObjectItemCaseSensitive(j, "dtype"))
        set_str(j, "dtype", dtype == ST_BF16 ? "bfloat16" : dtype == ST_F16 ? "float16" : "float32");
    if (c->bos_id >= 0 && !cJSON_GetObjectItemCaseSensitive(j, "bos_token_id"))
        set_num(j, "bos_token_id", c->bos_id);
    if (c->pad_id >= 0 && !cJSON_GetObjectItemCaseSensitive(j, "pad_token_id"))
        set_num(j, "pad_token_id", c->pad_id);
    if (c->n_eos == 1 && !cJSON_GetObjectItemCaseSensitive(j, "eos_token_id"))
        set_num(j, "eos_token_id", c->eos_ids[0]);
    if (!lm) {
        /* one label: transformers reads num_labels from id2label */
        cJSON_DeleteItemFromObjectCaseSensitive(j, "id2label");
        cJSON_DeleteItemFromObjectCaseSensitive(j, "label2id");
        cJSON *i2l = cJSON_AddObjectToObject(j, "id2label");
        cJSON_AddStringToObject(i2l, "0", "LABEL_0");
        cJSON *l2i = cJSON_AddObjectToObject(j, "label2id");
        cJSON_AddNumberToObject(l2i, "LABEL_0", 0);
    }
    return j;
}

int qwen2_save_dir(const qwen2_model_t *m, const char *dir, st_dtype_t dtype, err_t *e)
{
    if (dtype != ST_F32 && dtype != ST_BF16 && dtype != ST_F16)
        return err_set(e, ERR_INPUT, "save: dtype must be F32, BF16 or F16, got %s",
                       st_dtype_name(dtype));
    if (m->dropped)
        return err_set(e, ERR_INPUT, "save %s: a frozen model's float32 linear weights were "
                       "freed", dir);
    if (fs_mkdir_p(dir, e))
        return e->code;
    char *idx = fs_join(dir, "model.safetensors.index.json");
    char *wpath = fs_join(dir, "model.safetensors");
    char *cpath = fs_join(dir, "config.json");
    int rc = ERR_OK;
    size_t esz = dtype == ST_F32 ? 4 : 2;
    unsigned char *data = NULL;
    float *tmp = NULL;
    st_writer_t *w = NULL;
    cJSON *cfg = NULL;
    if (!idx || !wpath || !cpath) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (fs_exists(idx)) {
        /* loading prefers the index, so a stale one would shadow what we write */
        rc = err_set(e, ERR_INPUT, "%s: the directory holds a sharded checkpoint; save into "
                     "another directory", idx);
        goto out;
    }
    size_t total = 0, maxn = 0;
    for (int i = 0; i < m->ntensors; i++) {
        total += m->tensors[i].numel;
        maxn = m->tensors[i].numel > maxn ? m->tensors[i].numel : maxn;
    }
    data = err_malloc(e, total * esz, "the tensors to save");
    tmp = err_malloc(e, maxn * sizeof *tmp, "a staging buffer");
    if (!data || !tmp || !(w = st_writer_new(e))) {
        rc = e->code ? e->code : ERR_NOMEM;
        goto out;
    }
    size_t at = 0;
    for (int i = 0; i < m->ntensors && !rc; i++) {
        const qwen2_tensor_t *t = &m->tensors[i];
        be_download(m->be, tmp, qp(m, t->off), t->numel * sizeof *tmp);
        if ((rc = be_sync(m->be, e)))
            break;
        unsigned char *d = data + at * esz;
        for (size_t k = 0; k < t->numel; k++) {
            if (dtype == ST_F32) {
                memcpy(d + 4 * k, &tmp[k], 4);
            } else {
                uint16_t h = dtype == ST_BF16 ? half_f32_to_bf16(tmp[k]) : half_f32_to_f16(tmp[k]);
                memcpy(d + 2 * k, &h, 2);
            }
        }
        rc = st_writer_add(w, t->name, dtype, t->ndim, t->shape, d, t->numel * esz, 1, e);
        at += t->numel;
    }
    if (!rc)
        rc = st_writer_meta(w, "format", "pt", e);
    if (!rc)
        rc = st_writer_write(w, wpath, e);
    if (!rc) {
        cfg = config_out(m, dtype);
        rc = cfg ? json_write_file(cpath, cfg, true, e) : err_set(e, ERR_NOMEM, "out of memory");
    }
out:
    st_writer_free(w);
    cJSON_Delete(cfg);
    free(data);
    free(tmp);
    free(idx);
    free(wpath);
    free(cpath);
    return rc;
}

int qwen2_load_plan(qwen2_model_t *m, const char *policies_path, const char *plan_name,
                    const char *audit_path, err_t *e)
{
    prec_policies_t pol;
    const prec_plan_t *plan;
    if (prec_policies_load(policies_path, &pol, e))
        return e->code;
    int rc = prec_plan_find(&pol, plan_name, &plan, e);
    if (!rc)
        rc = qwen2_set_plan(m, plan, policies_path, e);
    prec_policies_free(&pol);
    if (!rc && audit_path)
        rc = prec_table_write(&m->table, audit_path, e);
    return rc;
}
