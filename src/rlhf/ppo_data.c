/* ppo_data: PPO's prompts from an HH-RLHF file or the synthetic task (see ppo_data.h). */
#include "rlhf/ppo_data.h"

#include <stdlib.h>
#include <string.h>

#include "data/hh.h"
#include "data/split.h"
#include "data/synth.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

void ppo_prompts_free(ppo_prompts_t *p)
{
    for (size_t i = 0; p->train && i < p->ntrain; i++)
        free(p->train[i]);
    for (size_t i = 0; p->eval && i < p->neval; i++)
        free(p->eval[i]);
    free(p->train);
    free(p->eval);
    free(p->pairs_path);
    memset(p, 0, sizeof *p);
}

static int copy_split(const data_hh_t *src, const data_split_record_t *rec, int split, char ***out,
                      size_t *n, err_t *e)
{
    const data_pair_t **pairs = NULL;
    size_t np = 0;
    if (data_split_pairs(src, rec, split, &pairs, &np, e))
        return e->code;
    *out = calloc(np ? np : 1, sizeof **out);
    int rc = *out ? ERR_OK : err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < np; i++)
        if (!((*out)[i] = strdup(pairs[i]->prompt)))
            rc = err_set(e, ERR_NOMEM, "out of memory");
    *n = np;
    free(pairs);
    return rc;
}

int ppo_prompts_load(const ppo_data_opts_t *o, ppo_prompts_t *out, err_t *e)
{
    memset(out, 0, sizeof *out);
    tok_t *tok = NULL;
    rlhf_text_t text;
    bool text_ok = false;
    data_hh_t hh;
    memset(&hh, 0, sizeof hh);
    data_split_record_t rec;
    memset(&rec, 0, sizeof rec);
    char *split_path = NULL;
    int rc = fs_mkdir_p(o->work_dir, e);
    if (!rc)
        rc = tok_load(o->tokenizer_path, &tok, e);
    if (!rc && !(rc = rlhf_text_init(&text, tok, o->tmpl, 1 << 20, 1 << 20, e)))
        text_ok = true;
    if (rc)
        goto out;
    data_token_counter_t counter = rlhf_text_counter(&text);
    out->synthetic = !o->data_path || o->synthetic;
    if (o->data_path) {
        out->pairs_path = strdup(o->data_path);
    } else {
        /* the embedded default: the synthetic task's pairs, as `mxrlhf data synth` writes them */
        out->pairs_path = fs_join(o->work_dir, "synthetic_pairs.jsonl");
        if (out->pairs_path &&
            (rc = data_synth_write_pairs(out->pairs_path, o->seed, o->pairs, &counter, NULL, e)))
            goto out;
    }
    split_path = fs_join(o->work_dir, "split.json");
    if (!out->pairs_path || !split_path) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rc = data_hh_read(out->pairs_path, NULL, &hh, e)))
        goto out;
    data_select_opts_t so;
    data_select_opts_default(&so);
    so.pairs = o->pairs;
    so.seed = o->seed;
    so.counter = counter;
    if ((rc = data_split_make(&hh, &so, &rec, e)) || (rc = data_split_write(split_path, &rec, e)) ||
        (rc = copy_split(&hh, &rec, DATA_SPLIT_PPO, &out->train, &out->ntrain, e)) ||
        (rc = copy_split(&hh, &rec, DATA_SPLIT_EVAL, &out->eval, &out->neval, e)))
        goto out;
out:
    if (rc)
        ppo_prompts_free(out);
    data_split_free(&rec);
    data_hh_free(&hh);
    if (text_ok)
        rlhf_text_free(&text);
    tok_free(tok);
    free(split_path);
    return rc;
}
