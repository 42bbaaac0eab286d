/* config: the table of option sections and the configuration file (see config.h). */
#include "pipeline/config.h"

#include "data/synth.h"
#include "pipeline/preset.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/json.h"

/* ---- the data and tokenizer sections (their stages live in this layer) ---------------- */

static int data_check(const void *opts, const char *ctx, err_t *e)
{
    const pipeline_data_opts_t *t = opts;
    double sum = 0;
    for (int i = 0; i < DATA_NSPLITS; i++)
        sum += t->fractions[i];
    if (sum < 1 - 1e-9 || sum > 1 + 1e-9)
        return err_set(e, ERR_INPUT, "%s: the split fractions rm_train %g, rm_eval %g, "
                       "judge_train %g, ppo_prompts %g, eval_prompts %g sum to %.12g, not 1",
                       ctx, t->fractions[0], t->fractions[1], t->fractions[2], t->fractions[3],
                       t->fractions[4], sum);
    return ERR_OK;
}

/* data/split.h's defaults, so that `mxrlhf data` and the pipeline draw alike */
#define DO(f) offsetof(pipeline_data_opts_t, f)
static const opt_field_t data_fields[] = {
    OPT_KEY("pairs", OPT_LONG, DO(pairs), OPT_STR(DATA_DEFAULT_PAIRS), 1, 1e9,
            "pairs drawn from an HH-RLHF file"),
    OPT_KEY("synth_pairs", OPT_LONG, DO(synth_pairs), "40000", 1, 1e9,
            "synthetic pairs generated (embedded default)"),
    OPT_KEY("corpus_docs", OPT_LONG, DO(corpus_docs), OPT_STR(DATA_SYNTH_DEFAULT_CORPUS_DOCS), 1,
            1e9, "synthetic pretraining documents generated (embedded default)"),
    OPT_KEY("seed", OPT_U64, DO(seed), OPT_STR(DATA_DEFAULT_SEED), 0, 0, "the draw and the split"),
    OPT_KEY("max_prompt_tokens", OPT_LONG, DO(max_prompt_tokens),
            OPT_STR(DATA_DEFAULT_MAX_PROMPT_TOKENS), 0, 1e9,
            "pairs with a longer prompt are dropped, in whitespace words (0: no limit)"),
    OPT_KEY("max_response_tokens", OPT_LONG, DO(max_response_tokens),
            OPT_STR(DATA_DEFAULT_MAX_RESPONSE_TOKENS), 0, 1e9,
            "pairs with a longer response are dropped, in whitespace words (0: no limit)"),
    OPT_KEY("rm_train", OPT_DOUBLE, DO(fractions[DATA_SPLIT_RM_TRAIN]),
            OPT_STR(DATA_DEFAULT_RM_TRAIN), 0, 1, "split fraction: reward-model training"),
    OPT_KEY("rm_eval", OPT_DOUBLE, DO(fractions[DATA_SPLIT_RM_EVAL]), OPT_STR(DATA_DEFAULT_RM_EVAL),
            0, 1, "split fraction: reward-model evaluation"),
    OPT_KEY("judge_train", OPT_DOUBLE, DO(fractions[DATA_SPLIT_JUDGE_TRAIN]),
            OPT_STR(DATA_DEFAULT_JUDGE_TRAIN), 0, 1, "split fraction: the judge's training"),
    OPT_KEY("ppo_prompts", OPT_DOUBLE, DO(fractions[DATA_SPLIT_PPO]), OPT_STR(DATA_DEFAULT_PPO), 0,
            1, "split fraction: PPO prompts"),
    OPT_KEY("eval_prompts", OPT_DOUBLE, DO(fractions[DATA_SPLIT_EVAL]), OPT_STR(DATA_DEFAULT_EVAL),
            0, 1, "split fraction: held-out evaluation prompts"),
    OPT_KEY("skip_bad", OPT_BOOL, DO(skip_bad), "false", 0, 0,
            "count malformed lines of an HH file instead of failing"),
};
const opt_table_t pipeline_data_opts_table =
    OPT_TABLE("data", pipeline_data_opts_t, data_fields, data_check);

#define TO(f) offsetof(pipeline_tokenizer_opts_t, f)
static const opt_field_t tok_fields[] = {
    OPT_KEY("vocab_size", OPT_LONG, TO(vocab_size), "3072", 259, 1 << 20,
            "vocabulary, the 3 special tokens included"),
    OPT_KEY("min_frequency", OPT_LONG, TO(min_frequency), "2", 1, 1e12,
            "a pair merges only when it occurs this often"),
};
const opt_table_t pipeline_tokenizer_opts_table =
    OPT_TABLE("tokenizer", pipeline_tokenizer_opts_t, tok_fields, NULL);

/* ---- the table ------------------------------------------------------------------------ */

#define SECTION(NAME, TABLE, WHAT) {#NAME, WHAT, offsetof(pipeline_config_t, NAME), &TABLE}

const pipeline_section_t pipeline_sections[] = {
    SECTION(data, pipeline_data_opts_table,
            "pairs drawn and split (HH-RLHF file or the synthetic task)"),
    SECTION(tokenizer, pipeline_tokenizer_opts_table,
            "BPE vocabulary trained for the embedded default"),
    SECTION(model, rlhf_model_opts_table,
            "size of the embedded default's model (pretrained from scratch)"),
    SECTION(pretrain, rlhf_pretrain_opts_table, "pretraining of the embedded default's model"),
    SECTION(sft, rlhf_sft_opts_table, "supervised fine-tuning on chosen responses"),
    SECTION(rm, rlhf_rm_opts_table,
            "reward model (Bradley-Terry) on rm_train, evaluated on rm_eval"),
    SECTION(judge, rlhf_rm_opts_table,
            "held-out judge reward model on judge_train, evaluated on rm_eval"),
    SECTION(ppo, ppo_opts_table,
            "PPO (TRL 0.11 semantics): the baseline and every compared plan"),
    SECTION(baseline, pipeline_baseline_opts_table,
            "the baseline stage's additions to PPO: per-phase energy calibration"),
    SECTION(sensitivity, sensitivity_opts_table,
            "MX sensitivity matrix of the SFT model on the eval_prompts split"),
    SECTION(phase_sensitivity, phase_sensitivity_opts_table,
            "MX sensitivity per RLHF phase: rollout, reward, gradient"),
    SECTION(policies, policies_opts_table,
            "policies A-D derived from the matrix (greedy under a budget)"),
    SECTION(compare, compare_opts_table,
            "PPO under each plan against the unquantized baseline, seeds interleaved"),
    SECTION(dist, dist_opts_table, "data parallelism: ranks, one process per GPU (--gpus)"),
};
const int pipeline_nsections = (int)(sizeof pipeline_sections / sizeof *pipeline_sections);

const pipeline_section_t *pipeline_section_find(const char *name)
{
    for (int i = 0; i < pipeline_nsections; i++)
        if (!strcmp(pipeline_sections[i].name, name))
            return &pipeline_sections[i];
    return NULL;
}

static int unknown_section(const char *ctx, const char *name, err_t *e)
{
    const char *names[64];
    for (int i = 0; i < pipeline_nsections; i++)
        names[i] = pipeline_sections[i].name;
    return err_set(e, ERR_INPUT, "%s: unknown section \"%s\" (did you mean \"%s\"?)", ctx,
                   name, opts_nearest(name, names, pipeline_nsections));
}

/* ---- the document --------------------------------------------------------------------- */

void pipeline_config_default(pipeline_config_t *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < pipeline_nsections; i++)
        opts_default(pipeline_sections[i].table, (char *)c + pipeline_sections[i].off);
}

int pipeline_config_from_json(const cJSON *root, const char *ctx, pipeline_config_t *c, err_t *e)
{
    if (!cJSON_IsObject(root))
        return err_set(e, ERR_INPUT, "%s: expected a JSON object of sections", ctx);
    pipeline_config_t t = *c;
    /* a named preset first, wherever it stands: the file's sections apply over it */
    const cJSON *pr = cJSON_GetObjectItemCaseSensitive(root, "preset");
    if (pr) {
        char pctx[600];
        snprintf(pctx, sizeof pctx, "%s: field \"preset\"", ctx);
        if (!cJSON_IsString(pr))
            return err_set(e, ERR_INPUT, "%s: expected a string", pctx);
        int rc = pipeline_preset_apply(&t, pr->valuestring, e);
        if (rc) {
            err_prefix(e, "%s", ctx);
            return rc;
        }
    }
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "preset"))
            continue;
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
        for (const cJSON *p = root->child; p != it; p = p->next)
            if (!strcmp(p->string, it->string))
                return err_set(e, ERR_INPUT, "%s: section \"%s\" given twice", ctx, it->string);
        const pipeline_section_t *s = pipeline_section_find(it->string);
        if (!s)
            return unknown_section(ctx, it->string, e);
        char sctx[600];
        snprintf(sctx, sizeof sctx, "%s: %s", ctx, s->name);
        int rc = opts_from_json(s->table, it, sctx, (char *)&t + s->off, e);
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
    return s ? opts_to_json(s->table, (const char *)c + s->off) : NULL;
}

cJSON *pipeline_config_to_json(const pipeline_config_t *c)
{
    cJSON *j = cJSON_CreateObject();
    if (!j || !cJSON_AddStringToObject(j, "format", PIPELINE_CONFIG_FORMAT) ||
        !cJSON_AddNumberToObject(j, "version", PIPELINE_CONFIG_VERSION) ||
        (c->preset[0] && !cJSON_AddStringToObject(j, "preset", c->preset))) {
        cJSON_Delete(j);
        return NULL;
    }
    for (int i = 0; i < pipeline_nsections; i++) {
        cJSON *s = opts_to_json(pipeline_sections[i].table,
                                (const char *)c + pipeline_sections[i].off);
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
    char section[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - assignment), assignment);
    const pipeline_section_t *s = pipeline_section_find(section);
    if (!s)
        return unknown_section("--set", section, e);
    char ctx[256];
    snprintf(ctx, sizeof ctx, "--set %s", section);
    return opts_set_json(s->table, (char *)c + s->off, dot + 1, ctx, e);
}
