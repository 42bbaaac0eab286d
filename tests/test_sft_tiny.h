/* test_sft_tiny: a tiny, fast fixture shared by test_sft.c, test_rm.c and
 * test_pipeline.c: a synthetic-task corpus and pairs, a BPE vocabulary trained on the
 * corpus, and a small Qwen2 model directory (optionally pretrained for a few steps).
 * Everything lives in a fresh temporary directory; sizes are chosen so that a whole test
 * file runs in seconds under ASan. */
#ifndef MXRLHF_TESTS_SFT_TINY_H
#define MXRLHF_TESTS_SFT_TINY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/hh.h"
#include "data/synth.h"
#include "rlhf/sft.h"
#include "support/testutil.h"
#include "tokenizer/tokenizer.h"

typedef struct tiny {
    char *dir;
    char corpus[512], pairs[512], tok[512], base[512];
    data_hh_t hh;
    backend_t *be;
} tiny_t;

/* Re-executes the test with OMP_WAIT_POLICY=passive unless the variable is set: on a
 * shared 2-core machine, OpenMP threads spinning at barriers while their partner is
 * descheduled made a 10-step SFT of the tiny model take 20.9 s instead of 1.1 s (load
 * average 9). libgomp reads the variable once at start-up, hence the exec. */
static inline void tiny_omp_passive(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: go on with the default policy */
}

static inline void tiny_fail(const char *what, const err_t *e)
{
    fail_msg("%s: %s", what, e->msg);
}

/* The tiny model: hidden 32, 2 layers, 2 heads (1 KV head), intermediate 64. */
static inline void tiny_model_opts(rlhf_model_opts_t *mo)
{
    rlhf_model_opts_default(mo);
    mo->hidden = 32;
    mo->layers = 2;
    mo->heads = 2;
    mo->kv_heads = 1;
    mo->intermediate = 64;
    mo->max_position = 256;
}

/* ndocs corpus documents, npairs synthetic pairs (seed 1234), a vocabulary of `vocab`,
 * and a base model pretrained on pretrain_tokens tokens (0: the Philox initialisation
 * only). */
static inline void tiny_setup(tiny_t *t, long ndocs, long npairs, long vocab, long pretrain_tokens)
{
    memset(t, 0, sizeof *t);
    err_t e = ERR_INIT;
    t->dir = test_mkdtemp();
    snprintf(t->corpus, sizeof t->corpus, "%s/corpus.jsonl", t->dir);
    snprintf(t->pairs, sizeof t->pairs, "%s/pairs.jsonl", t->dir);
    snprintf(t->tok, sizeof t->tok, "%s/tokenizer.json", t->dir);
    snprintf(t->base, sizeof t->base, "%s/base", t->dir);
    if (data_synth_write_corpus(t->corpus, 1234, (size_t)ndocs, &e))
        tiny_fail("corpus", &e);
    if (data_synth_write_pairs(t->pairs, 1234, (size_t)npairs, NULL, NULL, &e))
        tiny_fail("pairs", &e);
    tok_train_opts_t to = {vocab, 2};
    if (tok_train_file(t->corpus, &to, t->tok, &e))
        tiny_fail("tokenizer", &e);
    if (data_hh_read(t->pairs, NULL, &t->hh, &e))
        tiny_fail("reading pairs", &e);
    if (be_open("cpu", &t->be, &e))
        tiny_fail("backend", &e);
    rlhf_model_opts_t mo;
    tiny_model_opts(&mo);
    rlhf_pretrain_opts_t po;
    rlhf_pretrain_opts_default(&po);
    po.tokens = pretrain_tokens;
    po.seq_len = 64;
    po.batch_size = 8;
    po.optim.warmup_steps = 5;
    po.log_every = 0;
    rlhf_train_summary_t s;
    if (rlhf_pretrain_run(t->be, &mo, &po, t->tok, t->corpus, t->base, NULL, &s, &e))
        tiny_fail("pretraining", &e);
}

static inline void tiny_teardown(tiny_t *t)
{
    data_hh_free(&t->hh);
    if (t->be)
        be_close(t->be);
    test_rmtree(t->dir);
    free(t->dir);
    memset(t, 0, sizeof *t);
}

/* Pointers to pairs [from, from + n) of the fixture's pairs file. */
static inline const data_pair_t **tiny_pairs(const tiny_t *t, size_t from, size_t n)
{
    const data_pair_t **p = malloc(n * sizeof *p);
    assert_non_null(p);
    assert_true(from + n <= t->hh.npairs);
    for (size_t i = 0; i < n; i++)
        p[i] = &t->hh.pairs[from + i];
    return p;
}

/* Reads a whole file (fails the test if it cannot). */
static inline char *tiny_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return b;
}

#endif
