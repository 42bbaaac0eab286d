/* config: the table of option sections and the configuration file (see config.h). */
#include "pipeline/config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/train_common.h"
#include "util/json.h"

/* ---- the data and tokenizer sections (their stages live in this layer) ---------------- */

void pipeline_data_opts_default(pipeline_data_opts_t *o)
{
    data_select_opts_t d;
    data_select_opts_default(&d);
    o->pairs = (long)d.pairs;
    o->synth_pairs = 40000;
    o->corpus_docs = 20000;
    o->seed = d.seed;
    o->max_prompt_tokens = (long)d.max_prompt_tokens;
    o->max_response_tokens = (long)d.max_response_tokens;
    memcpy(o->fractions, d.fractions, sizeof o->fractions);
    o->skip_bad = false;
}

#define DO(f) offsetof(pipeline_data_opts_t, f)
static const rlhf_field_t data_fields[] = {
    {"pairs", RLHF_F_LONG, DO(pairs), 1, 1e9, NULL, 0},
    {"synth_pairs", RLHF_F_LONG, DO(synth_pairs), 1, 1e9, NULL, 0},
    {"corpus_docs", RLHF_F_LONG, DO(corpus_docs), 1, 1e9, NULL, 0},
    {"seed", RLHF_F_U64, DO(seed), 0, 0, NULL, 0},
    {"max_prompt_tokens", RLHF_F_LONG, DO(max_prompt_tokens), 0, 1e9, NULL, 0},
    {"max_response_tokens", RLHF_F_LONG, DO(max_response_tokens), 0, 1e9, NULL, 0},
    {"rm_train", RLHF_F_DOUBLE, DO(fractions[DATA_SPLIT_RM_TRAIN]), 0, 1, NULL, 0},
    {"rm_eval", RLHF_F_DOUBLE, DO(fractions[DATA_SPLIT_RM_EVAL]), 0, 1, NULL, 0},
    {"judge_train", RLHF_F_DOUBLE, DO(fractions[DATA_SPLIT_JUDGE_TRAIN]), 0, 1, NULL, 0},
    {"ppo_prompts", RLHF_F_DOUBLE, DO(fractions[DATA_SPLIT_PPO]), 0, 1, NULL, 0},
    {"eval_prompts", RLHF_F_DOUBLE, DO(fractions[DATA_SPLIT_EVAL]), 0, 1, NULL, 0},
    {"skip_bad", RLHF_F_BOOL, DO(skip_bad), 0, 0, NULL, 0},
};
#define NF(t) ((int)(sizeof t / sizeof t[0]))

int pipeline_data_opts_from_json(const cJSON *obj, const char *ctx, pipeline_data_opts_t *o,
                                 err_t *e)
{
    pipeline_data_opts_t t = *o;
    int rc = rlhf_fields_from_json(data_fields, NF(data_fields), obj, ctx, &t, e);
    if (rc)
        return rc;
    double sum = 0;
    for (int i = 0; i < DATA_NSPLITS; i++)
        sum += t.fractions[i];
    if (sum < 1 - 1e-9 || sum > 1 + 1e-9)
        return err_set(e, ERR_INPUT, "%s: the split fractions rm_train %g, rm_eval %g, "
                       "judge_train %g, ppo_prompts %g, eval_prompts %g sum to %.12g, not 1",
                       ctx, t.fractions[0], t.fractions[1], t.fractions[2], t.fractions[3],
                       t.fractions[4], sum);
    *o = t;
    return ERR_OK;
}

cJSON *pipeline_data_opts_to_json(const pipeline_data_opts_t *o)
{
    return rlhf_fields_to_json(data_fields, NF(data_fields), o);
}

void pipeline_tokenizer_opts_default(pipeline_tokenizer_opts_t *o)
{
    o->vocab_size = 3072;
    o->min_frequency = 2;
}

#define TO(f) offsetof(pipeline_tokenizer_opts_t, f)
static const rlhf_field_t tok_fields[] = {
    {"vocab_size", RLHF_F_LONG, TO(vocab_size), 259, 1 << 20, NULL, 0},
    {"min_frequency", RLHF_F_LONG, TO(min_frequency), 1, 1e12, NULL, 0},
};

int pipeline_tokenizer_opts_from_json(const cJSON *obj, const char *ctx,
                                      pipeline_tokenizer_opts_t *o, err_t *e)
{
    return rlhf_fields_from_json(tok_fields, NF(tok_fields), obj, ctx, o, e);
}

cJSON *pipeline_tokenizer_opts_to_json(const pipeline_tokenizer_opts_t *o)
{
    return rlhf_fields_to_json(tok_fields, NF(tok_fields), o);
}

/* ---- the table ------------------------------------------------------------------------ */

/* Adapters from a stage's typed functions to the table's void * ones. */
#define PIPELINE_SECTION(NAME, TYPE, PREFIX)                                               \
    static void NAME##_defaults(void *p) { PREFIX##_default((TYPE *)p); }                  \
    static int NAME##_from_json(const cJSON *j, const char *ctx, void *p, err_t *e)        \
    {                                                                                      \
        return PREFIX##_from_json(j, ctx, (TYPE *)p, e);                                   \
    }                                                                                      \
    static cJSON *NAME##_to_json(const void *p) { return PREFIX##_to_json((const TYPE *)p); }
#define PIPELINE_ROW(NAME, WHAT)                                                           \
    {#NAME, WHAT, offsetof(pipeline_config_t, NAME), NAME##_defaults, NAME##_from_json,     \
     NAME##_to_json}

PIPELINE_SECTION(data, pipeline_data_opts_t, pipeline_data_opts)
PIPELINE_SECTION(tokenizer, pipeline_tokenizer_opts_t, pipeline_tokenizer_opts)
PIPELINE_SECTION(model, rlhf_model_opts_t, rlhf_model_opts)
PIPELINE_SECTION(pretrain, rlhf_pretrain_opts_t, rlhf_pretrain_opts)
PIPELINE_SECTION(sft, rlhf_sft_opts_t, rlhf_sft_opts)
PIPELINE_SECTION(rm, rlhf_rm_opts_t, rlhf_rm_opts)
PIPELINE_SECTION(judge, rlhf_rm_opts_t, rlhf_rm_opts)
PIPELINE_SECTION(ppo, ppo_opts_t, ppo_opts)
PIPELINE_SECTION(baseline, pipeline_baseline_opts_t, pipeline_baseline_opts)
PIPELINE_SECTION(sensitivity, sensitivity_opts_t, sensitivity_opts)
PIPELINE_SECTION(phase_sensitivity, phase_sensitivity_opts_t, phase_sensitivity_opts)
PIPELINE_SECTION(policies, policies_opts_t, policies_opts)
PIPELINE_SECTION(compare, compare_opts_t, compare_opts)

const pipeline_section_t pipeline_sections[] = {
    PIPELINE_ROW(data, "pairs drawn and split (HH-RLHF file or the synthetic task)"),
    PIPELINE_ROW(tokenizer, "BPE vocabulary trained for the embedded default"),
    PIPELINE_ROW(model, "size of the embedded default's model (pretrained from scratch)"),
    PIPELINE_ROW(pretrain, "pretraining of the embedded default's model"),
    PIPELINE_ROW(sft, "supervised fine-tuning on chosen responses"),
    PIPELINE_ROW(rm, "reward model (Bradley-Terry) on rm_train, evaluated on rm_eval"),
    PIPELINE_ROW(judge, "held-out judge reward model on judge_train, evaluated on rm_eval"),
    PIPELINE_ROW(ppo, "PPO (TRL 0.11 semantics): the baseline and every compared plan"),
    PIPELINE_ROW(baseline, "the baseline stage's additions to PPO: per-phase energy calibration"),
    PIPELINE_ROW(sensitivity, "MX sensitivity matrix of the SFT model on the eval_prompts split"),
    PIPELINE_ROW(phase_sensitivity, "MX sensitivity per RLHF phase: rollout, reward, gradient"),
    PIPELINE_ROW(policies, "policies A-D derived from the matrix (greedy under a budget)"),
    PIPELINE_ROW(compare, "PPO under each plan against the unquantized baseline, seeds interleaved"),
};
const int pipeline_nsections = NF(pipeline_sections);

const pipeline_section_t *pipeline_section_find(const char *name)
{
    for (int i = 0; i < pipeline_nsections; i++)
        if (!strcmp(pipeline_sections[i].name, name))
            return &pipeline_sections[i];
    return NULL;
}

/* ---- the document --------------------------------------------------------------------- */

void pipeline_config_default(pipeline_config_t *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < pipeline_nsections; i++)
        pipeline_sections[i].defaults((char *)c + pipeline_sections[i].off);
}

int pipeline_config_from_json(const cJSON *root, const char *ctx, pipeline_config_t *c, err_t *e)
{
    if (!cJSON_IsObject(root))
        return err_set(e, ERR_INPUT, "%s: expected a JSON object of sections", ctx);
    pipeline_config_t t = *c;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "format")) {
            if (!cJSON_IsString(it) || strcmp(it->valuestring, PIPELINE_CONFIG_FORMAT))
                return err_set(e, ERR_INPUT, "%s: field \"format\": expected \"%s\"", ctx,
                               PIPELINE_CONFIG_FORMAT);
            continue;
        }
        if (!strcmp(it->string, "version")) {
            if (!cJSON_IsNumber(it) || it->valuedouble != PIPELINE_CONFIG_VERSION)
                return err_set(e, ERR_INPUT, "%s: field \"version\": expected %d", ctx,
                               PIPELINE_CONFIG_VERSION);
            continue;
        }
        const pipeline_section_t *s = pipeline_section_find(it->string);
        if (!s) {
            char known[512];
            size_t at = 0;
            known[0] = 0;
            for (int i = 0; i < pipeline_nsections && at + 2 < sizeof known; i++)
                at += (size_t)snprintf(known + at, sizeof known - at, "%s%s", i ? ", " : "",
                                       pipeline_sections[i].name);
            return err_set(e, ERR_INPUT, "%s: unknown section \"%s\" (sections: %s)", ctx,
                           it->string, known);
        }
        char sctx[600];
        snprintf(sctx, sizeof sctx, "%s: %s", ctx, s->name);
        int rc = s->from_json(it, sctx, (char *)&t + s->off, e);
        if (rc)
            return rc;
    }
    *c = t;
    return ERR_OK;
}

int pipeline_config_load(const char *path, pipeline_config_t *c, err_t *e)
{
    cJSON *j;
    int rc = json_load_file(path, 16u << 20, &j, e);
    if (rc)
        return rc;
    rc = pipeline_config_from_json(j, path, c, e);
    cJSON_Delete(j);
    return rc;
}

cJSON *pipeline_section_json(const pipeline_config_t *c, const char *name)
{
    const pipeline_section_t *s = pipeline_section_find(name);
    return s ? s->to_json((const char *)c + s->off) : NULL;
}

cJSON *pipeline_config_to_json(const pipeline_config_t *c)
{
    cJSON *j = cJSON_CreateObject();
    if (!j || !cJSON_AddStringToObject(j, "format", PIPELINE_CONFIG_FORMAT) ||
        !cJSON_AddNumberToObject(j, "version", PIPELINE_CONFIG_VERSION)) {
        cJSON_Delete(j);
        return NULL;
    }
    for (int i = 0; i < pipeline_nsections; i++) {
        cJSON *s = pipeline_sections[i].to_json((const char *)c + pipeline_sections[i].off);
        if (!s || !cJSON_AddItemToObject(j, pipeline_sections[i].name, s)) {
            cJSON_Delete(s);
            cJSON_Delete(j);
            return NULL;
        }
    }
    return j;
}

int pipeline_config_write(const char *path, const pipeline_config_t *c, err_t *e)
{
    cJSON *j = pipeline_config_to_json(c);
    if (!j)
        return err_set(e, ERR_NOMEM, "out of memory");
    int rc = json_write_file(path, j, true, e);
    cJSON_Delete(j);
    return rc;
}

int pipeline_config_set(pipeline_config_t *c, const char *assignment, err_t *e)
{
    const char *dot = strchr(assignment, '.'), *eq = strchr(assignment, '=');
    if (!dot || !eq || dot > eq || dot == assignment || eq == dot + 1)
        return err_set(e, ERR_INPUT, "--set %s: expected SECTION.KEY=VALUE", assignment);
    char section[64], key[128];
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    const pipeline_section_t *s = pipeline_section_find(section);
    if (!s)
        return err_set(e, ERR_INPUT, "--set %s: unknown section \"%s\"", assignment, section);
    cJSON *v = cJSON_Parse(eq + 1);
    if (!v)
        v = cJSON_CreateString(eq + 1);
    cJSON *obj = cJSON_CreateObject();
    if (!v || !obj) {
        cJSON_Delete(v);
        cJSON_Delete(obj);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(obj, key, v);
    char ctx[256];
    snprintf(ctx, sizeof ctx, "--set %s", section);
    int rc = s->from_json(obj, ctx, (char *)c + s->off, e);
    cJSON_Delete(obj);
    return rc;
}
