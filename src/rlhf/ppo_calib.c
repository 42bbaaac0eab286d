/* ppo_calib: after training, each phase's work repeated under the energy monitor to measure
 * its steady power (energy_calibrate; ppo.h, io.calibrate), the models' state restored. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf/ppo_internal.h"

/* ---- calibration ------------------------------------------------------------------------------ */

/* A host copy of a training model's parameters and optimizer state. */
typedef struct model_snap {
    float *params, *m1, *m2;
    size_t n;
    qwen2_opt_state_t st;
} model_snap_t;

static void snap_free(model_snap_t *s)
{
    free(s->params);
    free(s->m1);
    free(s->m2);
    memset(s, 0, sizeof *s);
}

static int snap_take(qwen2_model_t *m, model_snap_t *s, err_t *e)
{
    memset(s, 0, sizeof *s);
    if (!m)
        return ERR_OK;
    s->n = qwen2_nparams(m);
    if (ALLOC(s->params, s->n) || ALLOC(s->m1, s->n) || ALLOC(s->m2, s->n) ||
        qwen2_params_get(m, 0, s->params, s->n, e) ||
        qwen2_moments_get(m, 0, s->m1, s->m2, s->n, e)) {
        snap_free(s);
        return err_prefix(e, "saving the model state before calibration");
    }
    qwen2_opt_state_get(m, &s->st);
    return ERR_OK;
}

static int snap_restore(qwen2_model_t *m, const model_snap_t *s, err_t *e)
{
    if (!m || !s->params)
        return ERR_OK;
    if (qwen2_params_set(m, 0, s->params, s->n, e) ||
        qwen2_moments_set(m, 0, s->m1, s->m2, s->n, e) || qwen2_opt_state_set(m, &s->st, e))
        return err_prefix(e, "restoring the model state after calibration");
    qwen2_zero_grads(m);
    return ERR_OK;
}

/* One iteration of a phase's work, as energy_calibrate calls it: the step's own code. */
typedef struct calib_work {
    ppo_t *P;
    const prompt_t *const *rows;
    int step;
    long skipped;   /* minibatches skipped over the ratio threshold */
} calib_work_t;

static int calib_rollout(void *ctx, err_t *e)
{
    calib_work_t *w = ctx;
    return ppo_rollout(w->P, w->rows, w->step, e);
}

static int calib_reward(void *ctx, err_t *e)
{
    calib_work_t *w = ctx;
    return ppo_reward_inference(w->P, w->step, e);
}

static int calib_gradient(void *ctx, err_t *e)
{
    calib_work_t *w = ctx;
    step_acc_t acc;
    memset(&acc, 0, sizeof acc);
    int rc = ppo_gradient_update(w->P, w->step, &acc, e);
    w->skipped += acc.skipped;
    return rc;
}

/* Repeats each phase's work on the last step's prompts through energy_calibrate, in the
 * step's order (the rollout's responses feed the scoring, whose results feed the update).
 * Whatever the phases change besides their buffers is put back: the running score
 * statistics, and the policy, critic and optimizer state (the repeated updates move them). */
int ppo_calibrate(ppo_t *P, err_t *e)
{
    static const energy_workload_fn fns[PREC_PHASE_COUNT] = {calib_rollout, calib_reward,
                                                             calib_gradient};
    const energy_calib_opts_t *co = P->io->calibrate;
    const int B = P->B, step = P->o->steps - 1;
    const prompt_t *rows[B];
    char *texts[B];
    memset(texts, 0, sizeof texts);
    ppo_step_prompts(P, step, rows);
    calib_work_t w = {P, rows, step, 0};
    const ppo_running_t running = P->running;
    model_snap_t sp, sc;
    memset(&sp, 0, sizeof sp);
    memset(&sc, 0, sizeof sc);
    int rc = ERR_OK;
    P->calibrating = true;
    for (int ph = 0; ph < PREC_PHASE_COUNT && !rc; ph++) {
        if (ph == PREC_REWARD)
            rc = ppo_rollout_batch(P, rows, texts, e);
        if (!rc && ph == PREC_GRADIENT &&
            !(rc = snap_take(P->policy, &sp, e)))
            rc = snap_take(P->critic, &sc, e);
        if (rc)
            break;
        energy_calib_opts_t o = *co;
        o.seed = co->seed + (uint64_t)ph;
        energy_calib_result_t r;
        ppo_log(P, "mxrlhf ppo: calibrating %s: its work on step %d's batch, repeated for %.1f s "
                 "of steady time\n", prec_phase_study_name((prec_phase_t)ph), step + 1,
              o.min_total_s > 0 ? o.min_total_s : 10.0);
        rc = energy_calibrate(P->io->monitor, prec_phase_study_name((prec_phase_t)ph), fns[ph], &w,
                              &o, &r, e);
        if (ph == PREC_REWARD)
            P->running = running;
        if (ph == PREC_GRADIENT) {
            err_t re = ERR_INIT;
            int rrc = snap_restore(P->policy, &sp, &re);
            if (!rrc)
                rrc = snap_restore(P->critic, &sc, &re);
            if (!rc && rrc) {
                *e = re;
                rc = rrc;
            }
        }
        if (rc)
            break;
        char power[96] = "no power readings";
        if (isfinite(r.power_W))
            snprintf(power, sizeof power, "steady power %.2f W +-%.2f", r.power_W,
                     r.uncertainty_W);
        ppo_log(P,
                "mxrlhf ppo: calibration of %s: %ld iteration(s) in %d segment(s), %.2f s steady, "
                "%s\n",
                prec_phase_study_name((prec_phase_t)ph), r.iterations, r.segments, r.steady_s,
                power);
    }
    P->calibrating = false;
    if (!rc && w.skipped)
        ppo_log(P, "mxrlhf ppo: calibration of gradient_update: %ld minibatches skipped over the "
                 "ratio threshold (the repeated updates moved the policy from the batch's)\n",
              w.skipped);
    for (int b = 0; b < B; b++)
        free(texts[b]);
    snap_free(&sp);
    snap_free(&sc);
    return rc;
}
