/* stages: the rows of the pipeline and the stages built so far (data, tokenizer, pretrain,
 * sft, rm, judge, sensitivity, policies). Later issues fill in the rows whose run function is NULL (stage.h
 * says how). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth.h"
#include "pipeline/stage.h"
#include "pipeline/baseline.h"
#include "pipeline/stages_study.h"
#include "rlhf/rm.h"
#include "rlhf/sft.h"
#include "tokenizer/tokenizer.h"
#include "util/atomic_file.h"
#include "util/fs.h"

static char *join(const char *a, const char *b, err_t *e)
{
    char *p = fs_join(a, b);
    if (!p)
        err_set(e, ERR_NOMEM, "out of memory");
    return p;
}

/* ---- data ------------------------------------------------------------------------------ */

static void data_select(const pipeline_data_opts_t *d, long pairs, data_select_opts_t *so)
{
    data_select_opts_default(so);
    so->pairs = (size_t)pairs;
    so->seed = d->seed;
    so->max_prompt_tokens = (size_t)d->max_prompt_tokens;
    so->max_response_tokens = (size_t)d->max_response_tokens;
    memcpy(so->fractions, d->fractions, sizeof so->fractions);
}

/* Pretraining corpus from an HH file: both dialogues of every pair in the splits that
 * train something (rm_train, judge_train, ppo_prompts). The evaluation splits are left
 * out so that no model has read their responses before it is graded on them. */
static int write_hh_corpus(const data_hh_t *h, const data_split_record_t *rec, const char *path,
                           size_t *ndocs, err_t *e)
{
    static const int use[] = {DATA_SPLIT_RM_TRAIN, DATA_SPLIT_JUDGE_TRAIN, DATA_SPLIT_PPO};
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    *ndocs = 0;
    for (size_t u = 0; !rc && u < sizeof use / sizeof use[0]; u++) {
        const data_pair_t **p;
        size_t n;
        if ((rc = data_split_pairs(h, rec, use[u], &p, &n, e)))
            break;
        for (size_t i = 0; i < n && !rc; i++)
            for (int k = 0; k < 2 && !rc; k++) {
                const char *resp = k ? p[i]->rejected : p[i]->chosen;
                size_t lp = strlen(p[i]->prompt), lr = strlen(resp);
                char *text = malloc(lp + lr + 2);
                cJSON *o = cJSON_CreateObject();
                char *line = NULL;
                if (text && o) {
                    memcpy(text, p[i]->prompt, lp);
                    text[lp] = ' ';
                    memcpy(text + lp + 1, resp, lr + 1);
                    cJSON_AddStringToObject(o, "text", text);
                    line = cJSON_PrintUnformatted(o);
                }
                if (!line)
                    rc = err_set(e, ERR_NOMEM, "out of memory writing %s", path);
                else
                    fprintf(af.fp, "%s\n", line);
                (*ndocs)++;
                cJSON_free(line);
                cJSON_Delete(o);
                free(text);
            }
        free(p);
    }
    if (rc) {
        atomic_abort(&af);
        return rc;
    }
    return atomic_commit(&af, e);
}

static void log_split(const pipeline_ctx_t *c, const data_split_record_t *r)
{
    rlhf_logf(c->log, "drew %zu of %zu pairs (seed %llu, %zu examined, %zu dropped as too long)",
              r->pairs_delivered, r->pairs_requested, (unsigned long long)r->seed, r->examined,
              r->dropped[0].n + r->dropped[1].n);
    char line[512];
    size_t at = 0;
    for (int s = 0; s < DATA_NSPLITS; s++)
        at += (size_t)snprintf(line + at, sizeof line - at, "%s%s %zu", s ? ", " : "",
                               data_split_name(s), r->split[s].n);
    rlhf_logf(c->log, "splits: %s", line);
}

static int stage_data(pipeline_ctx_t *c, err_t *e)
{
    const pipeline_data_opts_t *d = &c->cfg->data;
    char *pairs = NULL, *corpus = join(c->dir, "corpus.jsonl", e), *split = join(c->dir, "split.json", e);
    data_hh_t h = {0};
    data_split_record_t rec = {0};
    data_select_opts_t so;
    int rc = corpus && split ? ERR_OK : ERR_NOMEM;
    if (!rc && !c->opts->data) {
        data_synth_stats_t st;
        pairs = join(c->dir, "pairs.jsonl", e);
        rc = pairs ? ERR_OK : ERR_NOMEM;
        if (!rc)
            rc = data_synth_write_corpus(corpus, d->seed, (size_t)d->corpus_docs, e);
        if (!rc)
            rc = data_synth_write_pairs(pairs, d->seed, (size_t)d->synth_pairs, NULL, &st, e);
        if (!rc)
            rlhf_logf(c->log, "synthetic task: %ld corpus documents, %zu pairs (%zu labels "
                      "flipped, %zu tie redraws; mean true score chosen %.3f, rejected %.3f)",
                      d->corpus_docs, st.pairs, st.flipped, st.redraws, st.mean_score_chosen,
                      st.mean_score_rejected);
        if (!rc)
            rc = data_hh_read(pairs, NULL, &h, e);
        data_select(d, d->synth_pairs, &so);
    } else if (!rc) {
        data_hh_opts_t ho = {.skip_bad = d->skip_bad};
        rc = data_hh_read(c->opts->data, &ho, &h, e);
        data_select(d, d->pairs, &so);
        if (!rc)
            rlhf_logf(c->log, "%s: %zu lines, %zu usable pairs", c->opts->data, h.lines, h.npairs);
    }
    if (!rc)
        rc = data_split_make(&h, &so, &rec, e);
    if (!rc)
        rc = data_split_write(split, &rec, e);
    if (!rc && c->opts->data) {
        size_t ndocs;
        rc = write_hh_corpus(&h, &rec, corpus, &ndocs, e);
        if (!rc)
            rlhf_logf(c->log, "pretraining corpus: %zu dialogues of rm_train, judge_train and "
                      "ppo_prompts", ndocs);
    }
    if (!rc)
        log_split(c, &rec);
    data_split_free(&rec);
    data_hh_free(&h);
    free(pairs);
    free(corpus);
    free(split);
    return rc;
}

/* ---- tokenizer ------------------------------------------------------------------------- */

static const char *given_model(const pipeline_run_opts_t *o)
{
    return o->sft_model ? o->sft_model : o->model;
}

static int stage_tokenizer(pipeline_ctx_t *c, err_t *e)
{
    char *out = join(c->dir, "tokenizer.json", e), *src = NULL, *corpus = NULL;
    tok_t *t = NULL;
    int rc = out ? ERR_OK : ERR_NOMEM;
    const char *model = given_model(c->opts);
    if (!rc && model) {
        src = join(model, "tokenizer.json", e);
        rc = src ? rlhf_copy_file(src, out, e) : ERR_NOMEM;
        if (!rc)
            rlhf_logf(c->log, "using the model's tokenizer %s", src);
    } else if (!rc) {
        corpus = join(pipeline_stage_dir(c, "data"), "corpus.jsonl", e);
        tok_train_opts_t to = {c->cfg->tokenizer.vocab_size, c->cfg->tokenizer.min_frequency};
        rc = corpus ? tok_train_file(corpus, &to, out, e) : ERR_NOMEM;
    }
    if (!rc)
        rc = tok_load(out, &t, e);
    if (!rc)
        rlhf_logf(c->log, "tokenizer: %d ids", tok_vocab_size(t));
    tok_free(t);
    free(out);
    free(src);
    free(corpus);
    return rc;
}

/* ---- pretrain, sft, rm, judge ---------------------------------------------------------- */

static void log_to(void *ctx, const char *line)
{
    const rlhf_log_t *l = ctx;
    rlhf_logf(l, "  %s", line);
}

static const char *replaced_by_model(const pipeline_run_opts_t *o)
{
    return given_model(o);
}

static int stage_pretrain(pipeline_ctx_t *c, err_t *e)
{
    backend_t *be;
    char *tok = join(pipeline_stage_dir(c, "tokenizer"), "tokenizer.json", e);
    char *corpus = join(pipeline_stage_dir(c, "data"), "corpus.jsonl", e);
    rlhf_train_summary_t s;
    rlhf_log_t lg = {log_to, (void *)c->log};
    int rc = tok && corpus ? pipeline_backend(c, &be, e) : ERR_NOMEM;
    if (!rc)
        rc = rlhf_pretrain_run(be, &c->cfg->model, &c->cfg->pretrain, tok, corpus, c->dir, &lg,
                               &s, e);
    if (!rc)
        rlhf_logf(c->log, "pretrained %zu parameters on %ld tokens in %.1f s (%.0f tokens/s); "
                  "loss %.3f -> %.3f", s.params, s.tokens, s.seconds, s.tokens_per_s,
                  s.loss_first, s.loss_last);
    free(tok);
    free(corpus);
    return rc;
}

static const char *replaced_by_sft_model(const pipeline_run_opts_t *o)
{
    return o->sft_model;
}

static int stage_sft(pipeline_ctx_t *c, err_t *e)
{
    const data_pair_t **a, **b, **ev, **all = NULL;
    size_t na, nb, nev;
    backend_t *be;
    rlhf_train_summary_t s;
    rlhf_log_t lg = {log_to, (void *)c->log};
    int rc = pipeline_split_pairs(c, DATA_SPLIT_RM_TRAIN, &a, &na, e);
    if (!rc)
        rc = pipeline_split_pairs(c, DATA_SPLIT_PPO, &b, &nb, e);
    if (!rc)
        rc = pipeline_split_pairs(c, DATA_SPLIT_RM_EVAL, &ev, &nev, e);
    if (!rc && !(all = malloc((na + nb + 1) * sizeof *all)))
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc) {
        memcpy(all, a, na * sizeof *all);
        memcpy(all + na, b, nb * sizeof *all);
        rc = pipeline_backend(c, &be, e);
    }
    if (!rc)
        rc = rlhf_sft_run(be, &c->cfg->sft, pipeline_stage_dir(c, "pretrain"), all, na + nb, ev,
                          nev, c->dir, &lg, &s, e);
    if (!rc)
        rlhf_logf(c->log, "fine-tuned on the chosen responses of %zu pairs (rm_train + "
                  "ppo_prompts): %ld steps, %ld tokens in %.1f s (%.0f tokens/s); loss %.3f -> "
                  "%.3f; rm_eval chosen-response loss %.3f", na + nb, s.steps, s.tokens,
                  s.seconds, s.tokens_per_s, s.loss_first, s.loss_last, s.eval_loss);
    free(all);
    return rc;
}

static int run_rm(pipeline_ctx_t *c, const rlhf_rm_opts_t *o, const char *name, data_split_t split,
                  err_t *e)
{
    const data_pair_t **tr, **ev;
    size_t ntr, nev;
    backend_t *be;
    rlhf_rm_result_t r;
    rlhf_log_t lg = {log_to, (void *)c->log};
    int rc = pipeline_split_pairs(c, split, &tr, &ntr, e);
    if (!rc)
        rc = pipeline_split_pairs(c, DATA_SPLIT_RM_EVAL, &ev, &nev, e);
    if (!rc)
        rc = pipeline_backend(c, &be, e);
    if (!rc)
        rc = rlhf_rm_run(be, o, name, pipeline_stage_dir(c, "sft"), tr, ntr, ev, nev, c->dir, &lg,
                         &r, e);
    if (!rc)
        rlhf_logf(c->log, "%s: trained on %zu %s pairs in %.1f s (%.0f tokens/s); rm_eval "
                  "accuracy %.4f, margin %.3f, loss %.4f", name, ntr, data_split_name(split),
                  r.seconds, r.tokens_per_s, r.eval.accuracy, r.eval.margin, r.eval.loss);
    return rc;
}

static int stage_rm(pipeline_ctx_t *c, err_t *e)
{
    return run_rm(c, &c->cfg->rm, "rm", DATA_SPLIT_RM_TRAIN, e);
}

static int stage_judge(pipeline_ctx_t *c, err_t *e)
{
    return run_rm(c, &c->cfg->judge, "judge", DATA_SPLIT_JUDGE_TRAIN, e);
}

static const char *external_data(const pipeline_run_opts_t *o, char *buf, size_t cap)
{
    return o->data;
}

static const char *external_tokenizer(const pipeline_run_opts_t *o, char *buf, size_t cap)
{
    if (!given_model(o))
        return NULL;
    snprintf(buf, cap, "%s/tokenizer.json", given_model(o));
    return buf;
}

/* ---- sensitivity, policies (issue 8) --------------------------------------------------- */

typedef struct profile_log {
    const pipeline_ctx_t *c;
    double last;
} profile_log_t;

/* A progress line every 30 s (and the last). */
static void profile_progress(void *ctx, const profile_progress_t *p)
{
    profile_log_t *pl = ctx;
    if (p->done < p->total && p->elapsed_s - pl->last < 30)
        return;
    pl->last = p->elapsed_s;
    /* a cell finished before the baseline (another worker measures it) has no change yet */
    char delta[32] = "";
    if (isfinite(p->delta_pct))
        snprintf(delta, sizeof delta, " (%+.3f%%)", p->delta_pct);
    rlhf_logf(pl->c->log, "  [%ld/%ld] %s%s%s: ppl %.4f%s, %.0f s, about %.0f s left",
              p->done, p->total, p->what, p->spec[0] ? " " : "", p->spec, p->ppl, delta,
              p->elapsed_s, p->done < p->total && isfinite(p->left_s) ? p->left_s : 0.0);
}

static const char *const EVAL_DESC = "the run's eval_prompts split";

static int stage_sensitivity(pipeline_ctx_t *c, err_t *e)
{
    const data_pair_t **ev;
    size_t nev;
    int rc = pipeline_split_pairs(c, DATA_SPLIT_EVAL, &ev, &nev, e);
    char *out = rc ? NULL : join(c->dir, "sensitivity_matrix.csv", e);
    if (!out)
        return e->code;
    const sensitivity_opts_t *o = &c->cfg->sensitivity; /* its backend: the device */
    sensitivity_paths_t pa = {.model_dir = pipeline_stage_dir(c, "sft"), .output = out,
                              .pairs = ev, .npairs = nev, .eval_desc = EVAL_DESC};
    profile_log_t pl = {c, -1e9};
    profile_sens_result_t r;
    rc = profile_sensitivity_run(o, &pa, profile_progress, &pl, &r, e);
    if (!rc)
        rlhf_logf(c->log, "%d layers x %d formats x %d block sizes on %ld tokens of eval_prompts "
                  "in %.1f s (%d workers); baseline perplexity %.4f; quantizing %.2f%% of the "
                  "forward time", r.layers, o->nformats, o->nblocks, r.tokens, r.wall_s, r.workers,
                  r.baseline_ppl, r.forward_s > 0 ? 100 * r.quant_s / r.forward_s : 0.0);
    free(out);
    return rc;
}

/* A progress line every 30 s (and the last), for the phase sensitivity. */
static void phase_progress(void *ctx, const profile_phase_progress_t *p)
{
    profile_log_t *pl = ctx;
    if (p->done < p->total && p->elapsed_s - pl->last < 30)
        return;
    pl->last = p->elapsed_s;
    rlhf_logf(pl->c->log, "  [%ld/%ld] %s %s: %s, %.0f s, about %.0f s left", p->done, p->total,
              p->what, p->spec, p->values, p->elapsed_s,
              p->done < p->total && isfinite(p->left_s) ? p->left_s : 0.0);
}

/* The three phases in turn, each into sensitivity_<phase>.csv: the policy is the SFT model,
 * the reward model the rm stage's; rollouts sample as the ppo section says, the reward model
 * reads text as the rm section says. */
static int stage_phase_sensitivity(pipeline_ctx_t *c, err_t *e)
{
    const data_pair_t **ev;
    size_t nev;
    int rc = pipeline_split_pairs(c, DATA_SPLIT_EVAL, &ev, &nev, e);
    const phase_sensitivity_opts_t *o = &c->cfg->phase_sensitivity;
    for (int ph = 0; ph < PREC_PHASE_COUNT && !rc; ph++) {
        char name[64];
        snprintf(name, sizeof name, "sensitivity_%s.csv", prec_phase_name((prec_phase_t)ph));
        char *out = join(c->dir, name, e);
        if (!out)
            return e->code;
        profile_phase_paths_t pa = {.model_dir = pipeline_stage_dir(c, "sft"),
                                    .reward_dir = pipeline_stage_dir(c, "rm"), .pairs = ev,
                                    .npairs = nev, .eval_desc = EVAL_DESC, .ppo = &c->cfg->ppo,
                                    .rm = &c->cfg->rm, .output = out};
        profile_log_t pl = {c, -1e9};
        profile_phase_result_t r;
        rlhf_logf(c->log, "phase %s:", prec_phase_name((prec_phase_t)ph));
        rc = profile_phase_run((prec_phase_t)ph, o, &pa, phase_progress, &pl, &r, e);
        if (!rc) {
            const char *const *names;
            int nc = profile_phase_columns((prec_phase_t)ph, &names);
            double cols[PHASE_MAX_COLUMNS];
            char base[160];
            size_t at = 0;
            profile_phase_derive((prec_phase_t)ph, r.base, r.base, cols);
            base[0] = 0;
            for (int k = 0; k < nc && at < sizeof base; k++)
                at += (size_t)snprintf(base + at, sizeof base - at, "%s%s %.4g", k ? ", " : "",
                                       names[k], cols[k]);
            rlhf_logf(c->log, "  %d layers x %d formats x %d block sizes in %.1f s (%d workers); "
                      "baseline %s; tolerant layers: %d at mxfp4_g8, %d at mxfp8_g8", r.layers,
                      o->sweep.nformats, o->sweep.nblocks, r.wall_s, r.workers, base,
                      r.tolerant[0], r.tolerant[1]);
        }
        free(out);
    }
    return rc;
}

static int stage_policies(pipeline_ctx_t *c, err_t *e)
{
    const data_pair_t **ev;
    size_t nev;
    int rc = pipeline_split_pairs(c, DATA_SPLIT_EVAL, &ev, &nev, e);
    char *out = rc ? NULL : join(c->dir, "policies.json", e);
    char *matrix = out ? join(pipeline_stage_dir(c, "sensitivity"), "sensitivity_matrix.csv", e)
                       : NULL;
    if (!matrix) {
        free(out);
        return e->code;
    }
    const policies_opts_t *o = &c->cfg->policies;
    policies_paths_t pa = {.sensitivity = matrix, .model_dir = pipeline_stage_dir(c, "sft"),
                           .pairs = ev, .npairs = nev, .eval_desc = EVAL_DESC, .output = out};
    profile_log_t pl = {c, -1e9};
    profile_policies_result_t r;
    rc = profile_policies_run(o, &pa, profile_progress, &pl, &r, e);
    if (!rc) {
        static const char *const names[POLICY_COUNT] = {"baseline", "A", "B", "C", "D"};
        rlhf_logf(c->log, "%d of %d layers sensitive (kept at MXFP8 by B); %d measurements; "
                  "combined perplexity (rollout / reward / gradient):", r.sensitive, r.layers,
                  r.measurements);
        for (int i = 0; i < POLICY_COUNT; i++)
            rlhf_logf(c->log, "  %-8s %.4f / %.4f / %.4f", names[i], r.ppl[i][PREC_ROLLOUT],
                      r.ppl[i][PREC_REWARD], r.ppl[i][PREC_GRADIENT]);
    }
    free(out);
    free(matrix);
    return rc;
}

/* ---- baseline (issue 7) ---------------------------------------------------------------- */

/* The prompt texts of one split (the list is freed by the caller; the texts belong to the
 * run). */
static int split_prompts(pipeline_ctx_t *c, data_split_t split, const char ***out, size_t *n,
                         err_t *e)
{
    const data_pair_t **p;
    int rc = pipeline_split_pairs(c, split, &p, n, e);
    if (rc)
        return rc;
    if (!(*out = malloc((*n + 1) * sizeof **out)))
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < *n; i++)
        (*out)[i] = p[i]->prompt;
    return ERR_OK;
}

static int stage_baseline(pipeline_ctx_t *c, err_t *e)
{
    const char **train = NULL, **eval = NULL;
    size_t ntrain = 0, neval = 0;
    backend_t *be = NULL;
    int rc = split_prompts(c, DATA_SPLIT_PPO, &train, &ntrain, e);
    if (!rc)
        rc = split_prompts(c, DATA_SPLIT_EVAL, &eval, &neval, e);
    if (!rc)
        rc = pipeline_backend(c, &be, e);
    rlhf_ppo_result_t r;
    if (!rc) {
        pipeline_baseline_t b = {
            .be = be, .policy_dir = pipeline_stage_dir(c, "sft"), .reward_dir = pipeline_stage_dir(c, "rm"),
            .prompts = train, .n_prompts = ntrain, .eval_prompts = eval, .n_eval = neval,
            .synthetic = !c->opts->data, .out_dir = c->dir, .power_source = "auto",
            .interval_s = 0.02, .idle_s = 2, .opts = c->cfg->baseline,
            .log = c->log->fn ? stderr : NULL};
        rc = pipeline_baseline_run(&c->cfg->ppo, &b, &r, e);
    }
    if (!rc)
        rlhf_logf(c->log, "%d PPO steps on %zu ppo_prompts: energy.csv, phase_timing.json, "
                  "training_stats.json, power_log_baseline.csv and charts", r.steps_done, ntrain);
    free(train);
    free(eval);
    return rc;
}

/* ---- the table ------------------------------------------------------------------------- */

const pipeline_stage_t pipeline_stages[] = {
    {"data", "draw and split the preference pairs", "data", "", false, stage_data, NULL,
     external_data, NULL},
    {"tokenizer", "the vocabulary (trained on the corpus, or the model's)", "tokenizer", "data",
     false, stage_tokenizer, NULL, external_tokenizer, NULL},
    {"pretrain", "pretrain the tiny Qwen2 model from scratch", "model,pretrain",
     "data,tokenizer", true, stage_pretrain, replaced_by_model, NULL, NULL},
    {"sft", "supervised fine-tuning on chosen responses", "sft", "data,pretrain", true, stage_sft,
     replaced_by_sft_model, NULL, NULL},
    {"rm", "reward model (rm_train), evaluated on rm_eval", "rm", "data,sft", true, stage_rm,
     NULL, NULL, NULL},
    {"judge", "held-out judge reward model (judge_train), evaluated on rm_eval", "judge",
     "data,sft", true, stage_judge, NULL, NULL, NULL},
    {"baseline", "PPO baseline with energy per phase", "ppo,baseline", "data,sft,rm", true,
     stage_baseline, NULL, NULL, NULL},
    {"sensitivity", "MX sensitivity of every layer", "sensitivity", "data,sft", true,
     stage_sensitivity, NULL, NULL, NULL},
    {"phase_sensitivity", "MX sensitivity per RLHF phase (rollout, reward, gradient)",
     "phase_sensitivity,ppo,rm", "data,sft,rm", true, stage_phase_sensitivity, NULL, NULL, NULL},
    {"policies", "policies A-D", "policies", "data,sft,sensitivity", true, stage_policies, NULL,
     NULL, NULL},
    {"compare", "PPO under each policy against the baseline", "ppo,compare,rm,judge",
     "data,sft,rm,judge,policies", true, pipeline_stage_compare, NULL, NULL, NULL},
    {"report", "the study report", "", "baseline,sensitivity,policies,compare", false,
     pipeline_stage_report, NULL, pipeline_report_external, NULL},
};
const int pipeline_nstages = (int)(sizeof pipeline_stages / sizeof pipeline_stages[0]);
