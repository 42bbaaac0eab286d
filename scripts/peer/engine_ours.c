/* engine_ours: writes model directories with the C engine for scripts/peer/engine_peer.py
 * --ours to check in transformers (each with ours.json: the batch, the engine's own
 * log-probs, and how the weights were made).
 *
 *   make && cc -std=c11 -D_GNU_SOURCE -fopenmp -Isrc $(pkg-config --cflags libcjson) \
 *      scripts/peer/engine_ours.c build/rel/libmxrlhf.a -o build/engine_ours \
 *      $(pkg-config --libs libcjson) -L/usr/lib/$(cc -print-multiarch)/openblas-openmp \
 *      -lopenblas -Wl,-rpath,/usr/lib/$(cc -print-multiarch)/openblas-openmp -lm
 *   build/engine_ours OUT [FIXTURES]
 *
 * Without FIXTURES: two Philox-initialised tiny models (one saved F32, one BF16 and
 * reloaded). With FIXTURES (tests/fixtures/model): every fixture model is loaded and saved
 * again in its storage dtype as <name>_resaved, for the "identical outputs" check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/qwen2.h"
#include "util/fs.h"
#include "util/json.h"

static void die(const err_t *e)
{
    fprintf(stderr, "engine_ours: %s\n", e->msg);
    exit(1);
}

/* logprobs of one (B, T) batch given as ids + mask (mask: leading zeros = left padding,
 * trailing zeros = right padding), written with the batch into dir/ours.json */
static void write_ours(qwen2_model_t *m, const char *dir, int B, int T, const int32_t *ids,
                       const int32_t *mask, const cJSON *extra)
{
    err_t e = ERR_INIT;
    int32_t padl[8], len[8], *tgt = malloc(sizeof(int32_t) * B * T);
    float *lp = malloc(sizeof(float) * B * T);
    for (int b = 0; b < B; b++) {
        padl[b] = 0;
        while (padl[b] < T && !mask[b * T + padl[b]])
            padl[b]++;
        len[b] = 0;
        while (padl[b] + len[b] < T && mask[b * T + padl[b] + len[b]])
            len[b]++;
    }
    qwen2_batch_t bt = {B, T, ids, padl, len};
    qwen2_next_token_targets(&bt, tgt);
    prec_ctx_t ctx = {PREC_REWARD, 0, 0};
    if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_LOGITS, &e) ||
        qwen2_token_logprobs(m, tgt, lp, NULL, &e))
        die(&e);
    cJSON *j = extra ? cJSON_Duplicate(extra, 1) : cJSON_CreateObject();
    cJSON *ji = cJSON_AddArrayToObject(j, "ids"), *jm = cJSON_AddArrayToObject(j, "mask"),
          *jl = cJSON_AddArrayToObject(j, "next_token_logprobs");
    for (int b = 0; b < B; b++) {
        cJSON *ri = cJSON_CreateArray(), *rm = cJSON_CreateArray(), *rl = cJSON_CreateArray();
        for (int t = 0; t < T; t++) {
            cJSON_AddItemToArray(ri, cJSON_CreateNumber(ids[b * T + t]));
            cJSON_AddItemToArray(rm, cJSON_CreateNumber(mask[b * T + t]));
            if (t + 1 < T)
                cJSON_AddItemToArray(rl, tgt[b * T + t] >= 0 ? cJSON_CreateNumber(lp[b * T + t])
                                                            : cJSON_CreateNull());
        }
        cJSON_AddItemToArray(ji, ri);
        cJSON_AddItemToArray(jm, rm);
        cJSON_AddItemToArray(jl, rl);
    }
    char *path = fs_join(dir, "ours.json");
    if (json_write_file(path, j, true, &e))
        die(&e);
    free(path);
    cJSON_Delete(j);
    free(tgt);
    free(lp);
}

static qwen2_model_t *philox_model(backend_t *be, bool tie, int kvh, double theta, uint64_t seed)
{
    err_t e = ERR_INIT;
    qwen2_config_t c = {.hidden = 64, .inter = 96, .layers = 2, .heads = 4, .kv_heads = kvh,
                        .head_dim = 16, .vocab = 160, .max_pos = 128, .rope_theta = theta,
                        .rms_eps = 1e-6, .tie = tie, .dtype = ST_F32, .bos_id = -1, .pad_id = -1};
    qwen2_opts_t o = {.max_batch = 2, .max_seq = 12};
    qwen2_model_t *m;
    if (qwen2_new(be, &c, &o, &m, &e) || qwen2_init_philox(m, seed, 0.08f, &e))
        die(&e);
    return m;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: engine_ours OUT [FIXTURES]\n");
        return 2;
    }
    const char *out = argv[1];
    err_t e = ERR_INIT;
    backend_t *be;
    if (be_open("cpu", &be, &e) || fs_mkdir_p(out, &e))
        die(&e);
    int32_t ids[24], right[24], left[24];
    for (int i = 0; i < 24; i++) {
        ids[i] = (i * 37 + 11) % 160;
        right[i] = !(i >= 12 + 9);  /* row 1: 9 real tokens, then padding */
        left[i] = !(i >= 12 && i < 16); /* row 1: 4 padding tokens, then 8 real */
    }
    if (argc < 3) {
        char *d = fs_join(out, "ours_tied_gqa_f32");
        qwen2_model_t *m = philox_model(be, true, 2, 10000.0, 7);
        if (qwen2_save_dir(m, d, ST_F32, &e))
            die(&e);
        cJSON *x = cJSON_CreateObject();
        cJSON *p = cJSON_AddObjectToObject(x, "philox");
        cJSON_AddNumberToObject(p, "seed", 7);
        cJSON_AddNumberToObject(p, "range", 0.08);
        write_ours(m, d, 2, 12, ids, right, x);
        cJSON_Delete(x);
        qwen2_free(m);
        free(d);

        d = fs_join(out, "ours_untied_mha_bf16");
        m = philox_model(be, false, 4, 1000000.0, 8);
        if (qwen2_save_dir(m, d, ST_BF16, &e))
            die(&e);
        qwen2_free(m);
        qwen2_opts_t o = {.max_batch = 2, .max_seq = 12};
        if (qwen2_open_dir(d, be, &o, &m, &e))
            die(&e);
        write_ours(m, d, 2, 12, ids, left, NULL);
        qwen2_free(m);
        free(d);

        /* a reward model: trunk + score head, scored at each row's last real token */
        d = fs_join(out, "ours_reward_f32");
        qwen2_config_t c = {.hidden = 64, .inter = 96, .layers = 2, .heads = 4, .kv_heads = 2,
                            .head_dim = 16, .vocab = 160, .max_pos = 128, .rope_theta = 10000,
                            .rms_eps = 1e-6, .tie = true, .dtype = ST_F32, .bos_id = -1,
                            .pad_id = 159};
        qwen2_opts_t ro = {.max_batch = 2, .max_seq = 12, .heads = QWEN2_HEAD_SCORE};
        if (qwen2_new(be, &c, &ro, &m, &e) || qwen2_init_philox(m, 9, 0.08f, &e) ||
            qwen2_save_dir(m, d, ST_F32, &e))
            die(&e);
        int32_t rid[24], rlen[2] = {12, 7};
        for (int i = 0; i < 24; i++)
            rid[i] = (i % 12) < rlen[i / 12] ? (i * 53 + 5) % 159 : 159;
        qwen2_batch_t bt = {2, 12, rid, NULL, rlen};
        prec_ctx_t ctx = {PREC_REWARD, 0, 0};
        float sc[2];
        if (qwen2_forward(m, &ctx, &bt, QWEN2_FWD_SCORES, &e) || qwen2_scores_get(m, sc, &e))
            die(&e);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "class", "Qwen2ForSequenceClassification");
        cJSON *ji = cJSON_AddArrayToObject(j, "ids"), *jm = cJSON_AddArrayToObject(j, "mask");
        cJSON *js = cJSON_AddArrayToObject(j, "scores");
        for (int b = 0; b < 2; b++) {
            cJSON *ri = cJSON_CreateArray(), *rm = cJSON_CreateArray();
            for (int t = 0; t < 12; t++) {
                cJSON_AddItemToArray(ri, cJSON_CreateNumber(rid[b * 12 + t]));
                cJSON_AddItemToArray(rm, cJSON_CreateNumber(t < rlen[b]));
            }
            cJSON_AddItemToArray(ji, ri);
            cJSON_AddItemToArray(jm, rm);
            cJSON_AddItemToArray(js, cJSON_CreateNumber(sc[b]));
        }
        char *path = fs_join(d, "ours.json");
        if (json_write_file(path, j, true, &e))
            die(&e);
        free(path);
        cJSON_Delete(j);
        qwen2_free(m);
        free(d);
    } else {
        static const char *const names[] = {"tiny_tied_gqa_f32", "tiny_untied_mha_bf16",
                                            "tiny_untied_mqa_f16_sharded"};
        for (int i = 0; i < 3; i++) {
            char *src = fs_join(argv[2], names[i]), dst[4096];
            snprintf(dst, sizeof dst, "%s/%s_resaved", out, names[i]);
            qwen2_opts_t o = {.max_batch = 2, .max_seq = 12};
            qwen2_model_t *m;
            if (qwen2_open_dir(src, be, &o, &m, &e) ||
                qwen2_save_dir(m, dst, qwen2_config(m)->dtype, &e))
                die(&e);
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "same_as", names[i]);
            write_ours(m, dst, 2, 12, ids, right, x);
            cJSON_Delete(x);
            qwen2_free(m);
            free(src);
        }
    }
    be_close(be);
    return 0;
}
