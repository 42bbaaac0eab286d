/* Tests for src/energy: power logs, attribution and its uncertainty, marks and windows,
 * the sources (RAPL on a fake powercap tree, NVML through a fake libnvidia-ml built
 * here), the monitor (failures mid-run, synchronisation, calibration). */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "energy/attrib.h"
#include "energy/monitor.h"
#include "energy/power_log.h"
#include "energy/run.h"
#include "energy/source.h"
#include "support/testutil.h"
#include "util/fs.h"
#include "util/json.h"

#define STEPS "tests/fixtures/energy/steps.csv"
#define FAKE_NVML_SRC "tests/fixtures/energy/fake_nvml.c"

#define assert_near(got, want, tol)                                                      \
    do {                                                                                 \
        double g_ = (got), w_ = (want);                                                  \
        if (!(fabs(g_ - w_) <= (tol)))                                                   \
            fail_msg("%s: expected %.9f (+-%g), got %.9f", #got, w_, (double)(tol), g_); \
    } while (0)

#define assert_contains(hay, needle)                                                     \
    do {                                                                                 \
        const char *h_ = (hay);                                                          \
        if (!h_ || !strstr(h_, needle))                                                  \
            fail_msg("expected \"%s\" in: %s", needle, h_ ? h_ : "(null)");             \
    } while (0)

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* A run over steps.csv: one device with power and counter, as a replay describes it. */
static void steps_run(energy_run_t *r, bool with_counter)
{
    energy_run_init(r);
    energy_log_t log;
    err_t e = ERR_INIT;
    assert_int_equal(energy_log_read(STEPS, &log, &e), 0);
    assert_int_equal(log.ndev, 1);
    snprintf(r->prov.kind, sizeof r->prov.kind, "replay");
    r->prov.ndev = 1;
    snprintf(r->prov.dev[0].label, sizeof r->prov.dev[0].label, "gpu0");
    r->prov.dev[0].has_power = true;
    r->prov.dev[0].has_counter = with_counter;
    r->prov.update_period_s = 0.1;
    r->prov.counter_period_s = 0.1;
    r->interval_s = 0.02;
    r->counter_interval_s = 0.2;
    r->run_begin = 0;
    r->run_end = 4.0;
    for (size_t i = 0; i < log.n; i++)
        assert_int_equal(energy_run_add_sample(r, &log.s[i], &e), 0);
    energy_log_free(&log);
}

static void add_window(energy_run_t *r, const char *name, double a, double b, int depth)
{
    energy_window_t w;
    memset(&w, 0, sizeof w);
    snprintf(w.name, sizeof w.name, "%s", name);
    w.begin = a;
    w.end = b;
    w.depth = depth;
    err_t e = ERR_INIT;
    assert_int_equal(energy_run_add_window(r, &w, &e), 0);
}

static void study_windows(energy_run_t *r)
{
    add_window(r, "rollout", 0.5, 1.5, 0);
    add_window(r, "reward_inference", 1.5, 2.5, 0);
    add_window(r, "rollout", 2.5, 3.25, 0);
    add_window(r, "gradient_update", 3.25, 3.95, 0);
}

static const energy_phase_result_t *phase(const energy_report_t *rep, const char *name)
{
    for (int i = 0; i < rep->nph; i++)
        if (!strcmp(rep->ph[i].name, name))
            return &rep->ph[i];
    fail_msg("no phase %s in the report", name);
    return NULL;
}

/* ---- attribution ------------------------------------------------------------------ */

/* Several GPUs (data-parallel ranks, measured by rank 0): gpu0 at 300 W and gpu1 at 200 W
 * with counters; energy.csv keeps its columns and gives each phase the sum over the GPUs,
 * phase_timing.json each GPU's share (per_device_J), and the shares add up to the sum. */
static void two_gpus_sum_in_energy_csv_and_split_in_phase_timing(void **state)
{
    (void)state;
    energy_run_t r;
    energy_run_init(&r);
    snprintf(r.prov.kind, sizeof r.prov.kind, "custom");
    r.prov.ndev = 2;
    const double watts[2] = {300, 200};
    for (int d = 0; d < 2; d++) {
        snprintf(r.prov.dev[d].label, sizeof r.prov.dev[d].label, "gpu%d", d);
        r.prov.dev[d].has_power = true;
        r.prov.dev[d].has_counter = true;
    }
    r.prov.update_period_s = 0.02;
    r.prov.counter_period_s = 0.02;
    r.interval_s = 0.02;
    r.counter_interval_s = 0.02;
    r.run_begin = 0;
    r.run_end = 4.0;
    err_t e = ERR_INIT;
    for (int i = 0; i <= 200; i++)
        for (int d = 0; d < 2; d++) {
            double t = i * 0.02;
            energy_sample_t p = {t, d, watts[d], NAN}, c = {t, d, NAN, watts[d] * t};
            assert_int_equal(energy_run_add_sample(&r, &p, &e), 0);
            assert_int_equal(energy_run_add_sample(&r, &c, &e), 0);
        }
    study_windows(&r);
    energy_report_t rep;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    const struct { const char *name; double s; } want[] = {
        {"rollout", 1.75}, {"reward_inference", 1.0}, {"gradient_update", 0.7}};
    for (int k = 0; k < 3; k++) {
        const energy_phase_result_t *p = phase(&rep, want[k].name);
        assert_near(p->energy_J, 500 * want[k].s, 1e-6);
        assert_near(p->m.per_device[0], 300 * want[k].s, 1e-6);
        assert_near(p->m.per_device[1], 200 * want[k].s, 1e-6);
    }
    char *dir = test_mkdtemp(), *csv = fs_join(dir, "energy.csv"),
         *pt = fs_join(dir, "phase_timing.json");
    assert_int_equal(energy_write_csv(&r, &rep, csv, &e), 0);
    assert_int_equal(energy_write_timing(&r, &rep, pt, &e), 0);
    char *text;
    size_t n;
    assert_int_equal(fs_read_all(csv, 1 << 20, &text, &n, &e), 0);
    /* the columns stay exactly as they are */
    assert_true(!strncmp(text, "phase,avg_power_W,runtime_s,energy_J,energy_above_idle_J,"
                               "uncertainty_J,method,windows,note,source\n", 85));
    const char *row = strstr(text, "\nrollout,");
    assert_non_null(row);
    double avg, rt, en;
    assert_int_equal(sscanf(row, "\nrollout,%lf,%lf,%lf", &avg, &rt, &en), 3);
    assert_near(en, 875, 1e-3);
    assert_near(avg, 500, 1e-3);
    free(text);
    cJSON *j;
    assert_int_equal(json_load_file(pt, 1 << 22, &j, &e), 0);
    const cJSON *phases = cJSON_GetObjectItemCaseSensitive(j, "phases"), *ph;
    int seen = 0;
    cJSON_ArrayForEach(ph, phases) {
        const cJSON *pd = cJSON_GetObjectItemCaseSensitive(ph, "per_device_J");
        double g0 = cJSON_GetObjectItemCaseSensitive(pd, "gpu0")->valuedouble,
               g1 = cJSON_GetObjectItemCaseSensitive(pd, "gpu1")->valuedouble,
               tot = cJSON_GetObjectItemCaseSensitive(ph, "energy_J")->valuedouble;
        assert_near(g0 + g1, tot, 1e-6);
        assert_near(g0 / g1, 1.5, 1e-9);
        seen++;
    }
    assert_int_equal(seen, 3);
    cJSON_Delete(j);
    test_rmtree(dir);
    free(dir), free(csv), free(pt);
    energy_report_free(&rep);
    energy_run_free(&r);
}

static void replay_steps_give_exact_joules_both_methods(void **state)
{
    (void)state;
    energy_run_t r;
    steps_run(&r, true);
    study_windows(&r);
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    const struct { const char *name; double J, s; } want[] = {
        {"rollout", 275, 1.75}, {"reward_inference", 175, 1.0}, {"gradient_update", 140, 0.7}};
    for (int k = 0; k < 3; k++) {
        const energy_phase_result_t *p = phase(&rep, want[k].name);
        assert_near(p->m.e_counter, want[k].J, 1e-9);
        assert_near(p->m.e_integral, want[k].J, 1e-9);
        assert_near(p->energy_J, want[k].J, 1e-9);
        assert_near(p->runtime_s, want[k].s, 1e-12);
        assert_string_equal(p->method, "counter");
    }
    assert_int_equal(phase(&rep, "rollout")->windows, 2);
    assert_near(rep.whole.e_counter, 650, 1e-9);
    assert_near(rep.whole.e_integral, 650, 1e-9);
    assert_near(rep.outside.e_best, 60, 1e-9);
    assert_near(rep.outside.runtime_s, 0.55, 1e-12);
    assert_true(rep.conservation_ok);
    assert_near(rep.conservation_residual_J, 0, 1e-9);
    energy_report_free(&rep);
    energy_run_free(&r);
}

/* study_windows' windows as marks on a monitor over the steps.csv replay */
static void study_marks(energy_monitor_t *m)
{
    err_t e = ERR_INIT;
    double t0 = energy_monitor_t0(m);
    const struct { bool b; const char *n; double t; } marks[] = {
        {true, "rollout", 0.5}, {false, "rollout", 1.5}, {true, "reward_inference", 1.5},
        {false, "reward_inference", 2.5}, {true, "rollout", 2.5}, {false, "rollout", 3.25},
        {true, "gradient_update", 3.25}, {false, "gradient_update", 3.95}};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        assert_int_equal(energy_monitor_mark(m, marks[i].b, marks[i].n, t0 + marks[i].t, "test",
                                             &e), 0);
}

static void replay_source_through_monitor_gives_exact_joules(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    energy_source_t *src;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("replay:" STEPS, NULL, &src, &e), 0);
    assert_true(src->virtual_time);
    assert_string_equal(src->prov.kind, "replay");
    energy_monitor_opts_t o = {0.02, 0, 0, dir, NULL, NULL};
    energy_monitor_t *m;
    assert_int_equal(energy_monitor_start(&m, src, &o, &e), 0);
    study_marks(m);
    energy_run_t run;
    assert_int_equal(energy_monitor_stop(m, 3.95, &run, &e), 0);
    assert_near(run.run_end, 3.95, 1e-9);
    assert_int_equal(run.n_windows, 4);
    assert_int_equal(run.n_warnings, 0);
    energy_report_t rep;
    assert_int_equal(energy_attribute(&run, &rep, &e), 0);
    assert_near(phase(&rep, "rollout")->energy_J, 275, 1e-6);
    assert_near(phase(&rep, "reward_inference")->energy_J, 175, 1e-6);
    assert_near(phase(&rep, "gradient_update")->energy_J, 140, 1e-6);
    assert_near(phase(&rep, "gradient_update")->m.e_integral, 140, 1e-6);
    assert_true(rep.conservation_ok);
    energy_report_free(&rep);
    /* the power log was renamed from its .partial, with the phase column filled */
    char *log = fs_join(dir, ENERGY_POWER_LOG_NAME), *partial = fs_join(dir,
                                                                         "power_log_baseline.csv.partial");
    assert_true(fs_exists(log));
    assert_false(fs_exists(partial));
    char *text;
    assert_int_equal(fs_read_all(log, 1 << 20, &text, NULL, &e), 0);
    assert_contains(text, "1.000000,gpu0,300.000,100.000000,rollout\n");
    assert_contains(text, "2.000000,gpu0,50.000,400.000000,reward_inference\n");
    free(text);
    free(log);
    free(partial);
    energy_run_free(&run);
    test_rmtree(dir);
    free(dir);
}

/* Joules per token: the phase's reported energy over the tokens its windows processed,
 * empty (NaN / null) without energy or tokens. */
static void energy_per_token_divides_and_is_empty_without_energy(void **state)
{
    (void)state;
    assert_near(energy_per_token(275, 50), 5.5, 0);
    assert_near(energy_per_token(140, 1024), 0.13671875, 0);
    assert_true(isnan(energy_per_token(NAN, 50)));  /* no sensor */
    assert_true(isnan(energy_per_token(275, 0)));   /* nothing counted */
    assert_true(isnan(energy_per_token(275, NAN))); /* not counted at all */
    /* through the monitor on the steps.csv replay: rollout 275 J, reward 175 J, gradient 140 J
     * (replay_source_through_monitor_gives_exact_joules); tokens added in pieces */
    char *dir = test_mkdtemp();
    energy_source_t *src;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("replay:" STEPS, NULL, &src, &e), 0);
    energy_monitor_opts_t o = {0.02, 0, 0, dir, NULL, NULL};
    energy_monitor_t *m;
    assert_int_equal(energy_monitor_start(&m, src, &o, &e), 0);
    study_marks(m);
    assert_int_equal(energy_monitor_add_tokens(m, "rollout", 30, &e), 0);
    assert_int_equal(energy_monitor_add_tokens(m, "rollout", 20, &e), 0);
    assert_int_equal(energy_monitor_add_tokens(m, "reward_inference", 700, &e), 0);
    assert_int_equal(energy_monitor_add_tokens(m, "gradient_update", 1024, &e), 0);
    err_t e2 = ERR_INIT, e3 = ERR_INIT;
    assert_int_equal(energy_monitor_add_tokens(m, "rollout", -1, &e2), ERR_INPUT);
    assert_contains(e2.msg, "tokens of phase rollout: -1");
    assert_int_equal(energy_monitor_add_tokens(m, "bad name", 1, &e3), ERR_INPUT);
    energy_run_t run;
    assert_int_equal(energy_monitor_stop(m, 3.95, &run, &e), 0);
    assert_int_equal((int)energy_run_tokens(&run, "rollout"), 50);
    assert_int_equal((int)energy_run_tokens(&run, "idle"), -1);
    assert_int_equal(energy_write_outputs(&run, dir, NULL, &e), 0);
    char *tp = fs_join(dir, ENERGY_TIMING_NAME), *lp = fs_join(dir, ENERGY_POWER_LOG_NAME);
    cJSON *j;
    assert_int_equal(json_load_file(tp, 1 << 24, &j, &e), 0);
    const cJSON *tk = cJSON_GetObjectItemCaseSensitive(j, "tokens");
    assert_near(cJSON_GetObjectItemCaseSensitive(tk, "rollout")->valuedouble, 50, 0);
    assert_near(cJSON_GetObjectItemCaseSensitive(tk, "reward_inference")->valuedouble, 700, 0);
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "phases");
    const struct { const char *n; double tokens, jpt; } want[] = {
        {"rollout", 50, 275.0 / 50}, {"reward_inference", 700, 0.25},
        {"gradient_update", 1024, 0.13671875}};
    for (int k = 0; k < 3; k++) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(ph, want[k].n);
        assert_near(cJSON_GetObjectItemCaseSensitive(p, "tokens")->valuedouble, want[k].tokens, 0);
        assert_near(cJSON_GetObjectItemCaseSensitive(p, "energy_per_token_J")->valuedouble,
                    want[k].jpt, 1e-9);
    }
    cJSON_Delete(j);
    /* `mxrlhf energy` reloads the counts: the same figures again */
    energy_run_t back;
    assert_int_equal(energy_run_load(lp, tp, &back, &e), 0);
    assert_int_equal((int)back.n_tokens, 3);
    assert_int_equal((int)energy_run_tokens(&back, "gradient_update"), 1024);
    energy_report_t rep;
    assert_int_equal(energy_attribute(&back, &rep, &e), 0);
    assert_near(phase(&rep, "reward_inference")->energy_per_token_J, 0.25, 1e-9);
    energy_report_free(&rep);
    energy_run_free(&back);
    energy_run_free(&run);
    free(tp);
    free(lp);
    test_rmtree(dir);
    free(dir);
}

static void counter_and_integral_disagreement_is_kept(void **state)
{
    (void)state;
    energy_run_t r;
    steps_run(&r, true);
    for (size_t i = 0; i < r.n_samples; i++)
        if (isfinite(r.samples[i].energy_J))
            r.samples[i].energy_J *= 1.1; /* the counter reads 10% high */
    add_window(&r, "rollout", 0.5, 1.5, 0);
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    const energy_phase_result_t *p = phase(&rep, "rollout");
    assert_near(p->m.e_counter, 220, 1e-9);
    assert_near(p->m.e_integral, 200, 1e-9);
    assert_near(p->energy_J, 220, 1e-9);     /* the counter is preferred */
    assert_near(p->u_gap, 20, 1e-9);         /* and the gap enters the uncertainty */
    assert_true(p->uncertainty_J >= 20);
    energy_report_free(&rep);
    energy_run_free(&r);
}

static void uncertainty_terms_follow_the_model(void **state)
{
    (void)state;
    energy_run_t r;
    steps_run(&r, false); /* instant power only: the integral method */
    add_window(&r, "rollout", 1.0, 2.0, 0);          /* steps at both edges, flat inside */
    add_window(&r, "gradient_update", 0.5, 1.5, 0);  /* a step inside, flat at the edges */
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    /* tau = update period 0.1 + sampling interval 0.02 */
    const energy_phase_result_t *a = phase(&rep, "rollout");
    assert_string_equal(a->method, "integral");
    assert_near(a->tau_s, 0.12, 1e-12);
    assert_near(a->energy_J, 300, 1e-9);
    /* edges: swing 100->300 at 1.0, 300->50 at 2.0: min(0.12, 1) x 250 */
    assert_near(a->u_edge, 30, 1e-9);
    assert_near(a->u_noise, 0, 1e-9); /* constant power inside */
    assert_near(a->u_gap, 0, 1e-12);
    assert_near(a->uncertainty_J, 30, 1e-9);
    const energy_phase_result_t *b = phase(&rep, "gradient_update");
    assert_near(b->energy_J, 200, 1e-9);
    assert_near(b->u_edge, 0, 1e-9);
    /* sd of power inside = 100 W: 2 x 100 x sqrt(1.0 s x 0.12 s) */
    assert_near(b->u_noise, 2 * 100 * sqrt(0.12), 1e-6);
    energy_report_free(&rep);
    energy_run_free(&r);
}

static void short_phase_is_warned_and_noted(void **state)
{
    (void)state;
    energy_run_t r;
    steps_run(&r, true);
    study_windows(&r);
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    const energy_phase_result_t *p = phase(&rep, "rollout");
    assert_true(p->short_total);
    assert_contains(p->note, "under 5 s");
    bool found = false;
    for (int i = 0; i < rep.n_warnings; i++)
        found |= strstr(rep.warnings[i], "phase rollout") != NULL;
    assert_true(found);
    energy_report_free(&rep);
    energy_run_free(&r);
}

static void nested_windows_keep_conservation(void **state)
{
    (void)state;
    energy_run_t r;
    steps_run(&r, true);
    study_windows(&r);
    add_window(&r, "backward", 3.5, 3.7, 1); /* inside gradient_update */
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    assert_near(phase(&rep, "backward")->energy_J, 40, 1e-9);
    assert_near(phase(&rep, "gradient_update")->energy_J, 140, 1e-9); /* includes it */
    assert_near(rep.outside.e_best, 60, 1e-9);
    assert_true(rep.conservation_ok);
    energy_report_free(&rep);
    energy_run_free(&r);
}

/* A part-time sensor: the truth is `on` W inside the windows (period `period`, 0.2 s
 * long, from 0.3 s) and 100 W elsewhere; the sensor updates every 0.1 s with the mean of
 * the last 25 ms, and we read it every 20 ms (no counter). */
static double truth(double t, double period, double on)
{
    double x = t - 0.3;
    return x >= 0 && fmod(x, period) < 0.2 && x < 60 * period ? on : 100;
}

static void part_time_run(energy_run_t *r, double period, double on)
{
    energy_run_init(r);
    snprintf(r->prov.kind, sizeof r->prov.kind, "custom");
    r->prov.ndev = 1;
    snprintf(r->prov.dev[0].label, sizeof r->prov.dev[0].label, "gpu0");
    r->prov.dev[0].has_power = true;
    r->prov.update_period_s = 0.1;
    r->prov.content_window_s = 0.025;
    r->interval_s = r->counter_interval_s = 0.02;
    r->run_begin = 0;
    r->run_end = 0.3 + 60 * period + 0.5;
    err_t e = ERR_INIT;
    double v = 100;
    int next_upd = 0;
    for (int j = 0; j * 0.02 + 0.001 < r->run_end + 0.1; j++) {
        double t = j * 0.02 + 0.001;
        while (0.013 + next_upd * 0.1 <= t) {
            double s = 0.013 + next_upd++ * 0.1, acc = 0;
            for (int k = 0; k < 250; k++) /* mean over [s - 25 ms, s] */
                acc += truth(s - 0.025 + (k + 0.5) * 1e-4, period, on);
            v = acc / 250;
        }
        energy_sample_t smp = {t, 0, v, NAN};
        energy_log_round(&smp);
        assert_int_equal(energy_run_add_sample(r, &smp, &e), 0);
    }
    for (int k = 0; k < 60; k++)
        add_window(r, "burst_on", 0.3 + k * period, 0.3 + k * period + 0.2, 0);
}

static void sampled_method_sees_through_the_sensor_lag(void **state)
{
    (void)state;
    energy_run_t r;
    part_time_run(&r, 0.437, 500); /* the period drifts against the sensor's 0.1 s */
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    const energy_phase_result_t *p = phase(&rep, "burst_on");
    double want = 500 * p->runtime_s;
    assert_true(p->sampled.ok);
    assert_false(p->sampled.aliased);
    assert_true(p->sampled.readings >= 60);
    /* clean readings see only the phase's own power */
    assert_near(p->sampled.power_W, 500, 1e-9);
    assert_string_equal(p->method, "sampled");
    assert_near(p->energy_J, want, 1e-6);
    /* the held readings lag: the windowed integral is well short of the truth, and its
     * bound still covers it */
    assert_true(p->windowed_J < 0.85 * want);
    assert_true(fabs(p->windowed_J - want) <= p->windowed_u);
    assert_contains(p->note, "sampled: mean of");
    energy_report_free(&rep);
    energy_run_free(&r);
}

static void sampled_method_flags_windows_locked_to_the_sensor(void **state)
{
    (void)state;
    energy_run_t r;
    part_time_run(&r, 0.4, 500); /* 4 sensor periods: every window starts at one phase */
    energy_report_t rep;
    err_t e = ERR_INIT;
    assert_int_equal(energy_attribute(&r, &rep, &e), 0);
    const energy_phase_result_t *p = phase(&rep, "burst_on");
    assert_true(p->sampled.ok);
    assert_true(p->sampled.aliased);
    assert_near(p->sampled.phase_lock, 1, 1e-6);
    assert_true(p->sampled.u_aliasing > 0);
    assert_contains(p->note, "one phase of the sensor's cycle");
    energy_report_free(&rep);
    energy_run_free(&r);
}

/* ---- marks and windows ------------------------------------------------------------- */

static energy_mark_t mk(bool b, const char *name, double t)
{
    energy_mark_t m;
    memset(&m, 0, sizeof m);
    m.begin = b;
    snprintf(m.name, sizeof m.name, "%s", name);
    m.t = t;
    snprintf(m.origin, sizeof m.origin, "mark at %.0f", t);
    return m;
}

static void bad_nesting_becomes_warnings(void **state)
{
    (void)state;
    energy_run_t r;
    energy_run_init(&r);
    r.run_end = 6;
    energy_mark_t ms[] = {mk(true, "a", 1), mk(true, "b", 2), mk(false, "a", 3),
                          mk(false, "c", 4), mk(true, "d", 5)};
    err_t e = ERR_INIT;
    assert_int_equal(energy_run_windows_from_marks(&r, ms, 5, &e), 0);
    assert_int_equal(r.n_windows, 3);
    assert_string_equal(r.windows[0].name, "a");
    assert_near(r.windows[0].end, 3, 0);
    assert_string_equal(r.windows[1].name, "b");
    assert_int_equal(r.windows[1].depth, 1);
    assert_near(r.windows[1].end, 3, 0);
    assert_string_equal(r.windows[2].name, "d");
    assert_true(r.windows[2].closed_at_end);
    assert_near(r.windows[2].end, 6, 0);
    assert_int_equal(r.n_warnings, 3);
    assert_contains(r.warnings[0], "mark at 3: end a while b");
    assert_contains(r.warnings[1], "mark at 4: end c without a matching begin");
    assert_contains(r.warnings[2], "phase d");
    energy_run_free(&r);
}

static void marks_are_ordered_by_timestamp_not_arrival(void **state)
{
    (void)state;
    energy_run_t r;
    energy_run_init(&r);
    r.run_end = 5;
    /* y's marks arrive last (a buffered pipe) but carry earlier timestamps */
    energy_mark_t ms[] = {mk(true, "x", 2), mk(false, "x", 3), mk(true, "y", 1),
                          mk(false, "y", 1.5)};
    err_t e = ERR_INIT;
    assert_int_equal(energy_run_windows_from_marks(&r, ms, 4, &e), 0);
    assert_int_equal(r.n_warnings, 0);
    assert_int_equal(r.n_windows, 2);
    assert_string_equal(r.windows[0].name, "y");
    assert_int_equal(r.windows[0].depth, 0);
    assert_string_equal(r.windows[1].name, "x");
    energy_run_free(&r);
}

/* ---- power log parsing ----------------------------------------------------------- */

static void malformed_traces_name_file_and_line(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *path = fs_join(dir, "bad.csv");
    const char *H = ENERGY_LOG_HEADER "\n";
    struct { const char *body; bool header; const char *want; } cases[] = {
        {"time_s,device,power\n", false, ":1: header is \"time_s,device,power\""},
        {"0.0,gpu0,100\n", true, ":2: 3 columns (expected 5"},
        {"0.0,gpu0,abc,,\n", true, ":2: column power_W: expected a finite number, got \"abc\""},
        {"0.0,gpu0,nan,,\n", true, ":2: column power_W"},
        {"1.0,gpu0,1,,\n0.5,gpu0,1,,\n", true, ":3: column time_s: 0.500000 is before"},
        {"0.0,gpu0,1,5,\n0.1,gpu0,1,4,\n", true, ":3: column energy_J: device gpu0's counter goes back"},
        {"0.0,gpu0,-5,,\n", true, ":2: column power_W: -5 is negative"},
        {"0.0,gpu0,,,\n", true, ":2: neither power_W nor energy_J"},
        {"0.0,,1,,\n", true, ":2: column device"},
        {"0.0,gpu0,1,,\n0.0,gpu0,2,,\n", true, ":3: device gpu0 has two rows at time 0.000000"},
        {"", false, ": empty (expected the header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%s%s", cases[i].header ? H : "", cases[i].body);
        fclose(f);
        energy_log_t log;
        err_t e = ERR_INIT;
        assert_int_equal(energy_log_read(path, &log, &e), ERR_INPUT);
        char want[512];
        snprintf(want, sizeof want, "%s%s", path, cases[i].want);
        assert_contains(e.msg, want);
    }
    /* the replay source passes the same error on */
    energy_source_t *src;
    err_t e = ERR_INIT;
    char spec[600];
    snprintf(spec, sizeof spec, "replay:%s", path);
    assert_int_equal(energy_source_open(spec, NULL, &src, &e), ERR_INPUT);
    assert_contains(e.msg, path);
    free(path);
    test_rmtree(dir);
    free(dir);
}

static void phase_timing_errors_name_file_and_field(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    char *tim = fs_join(dir, ENERGY_TIMING_NAME), *log = fs_join(dir, ENERGY_POWER_LOG_NAME);
    /* a minimal file, with its windows and tokens filled in below */
    const char *fmt = "{\"format\": \"mxrlhf.phase_timing/1\", \"source\": {\"kind\": \"none\", "
                      "\"devices\": []}, \"clock\": {\"t0_monotonic_s\": 1}, \"sampling\": "
                      "{\"interval_s\": 0.02, \"counter_interval_s\": 0.1}, \"run\": {\"begin_s\": "
                      "0, \"end_s\": 2}, \"windows\": [%s], \"tokens\": %s}";
    char doc[1024];
    snprintf(doc, sizeof doc, fmt, "{\"phase\": \"bad name!\", \"begin_s\": 0, \"end_s\": 1, "
             "\"depth\": 0}", "{}");
    test_write_file(tim, doc, strlen(doc));
    energy_run_t r;
    err_t e = ERR_INIT;
    assert_int_equal(energy_run_load(log, tim, &r, &e), ERR_INPUT);
    assert_contains(e.msg, tim);
    assert_contains(e.msg, "windows[0]: field \"phase\"");
    /* a token count that is not a whole number, or a negative one */
    const char *bad[2] = {"{\"rollout\": \"many\"}", "{\"rollout\": -3}"};
    const char *why[2] = {"field \"tokens\"", "tokens of phase rollout: -3"};
    for (int k = 0; k < 2; k++) {
        snprintf(doc, sizeof doc, fmt, "", bad[k]);
        test_write_file(tim, doc, strlen(doc));
        err_t e2 = ERR_INIT;
        assert_int_equal(energy_run_load(log, tim, &r, &e2), ERR_INPUT);
        assert_contains(e2.msg, tim);
        assert_contains(e2.msg, why[k]);
    }
    free(tim);
    free(log);
    test_rmtree(dir);
    free(dir);
}

/* ---- RAPL ------------------------------------------------------------------------- */

static void put(const char *dir, const char *rel, const char *text)
{
    char *p = fs_join(dir, rel);
    test_write_file(p, text, strlen(text));
    free(p);
}

static char *fake_powercap(void)
{
    char *root = test_mkdtemp();
    const char *dirs[] = {"intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:1"};
    for (int i = 0; i < 4; i++) {
        char *p = fs_join(root, dirs[i]);
        mkdir(p, 0755);
        free(p);
    }
    put(root, "intel-rapl:0/name", "package-0\n");
    put(root, "intel-rapl:0/energy_uj", "999000000\n");
    put(root, "intel-rapl:0/max_energy_range_uj", "1000000000\n");
    put(root, "intel-rapl:0:0/name", "dram\n");
    put(root, "intel-rapl:0:0/energy_uj", "5000000\n");
    put(root, "intel-rapl:0:0/max_energy_range_uj", "65532610987\n");
    put(root, "intel-rapl:0:1/name", "core\n"); /* part of the package: not taken */
    put(root, "intel-rapl:0:1/energy_uj", "1\n");
    put(root, "intel-rapl:1/name", "package-1\n");
    put(root, "intel-rapl:1/energy_uj", "0\n");
    put(root, "intel-rapl:1/max_energy_range_uj", "1000000000\n");
    return root;
}

static void rapl_counters_unwrap_on_a_fake_powercap(void **state)
{
    (void)state;
    char *root = fake_powercap();
    energy_source_opts_t o;
    memset(&o, 0, sizeof o);
    o.powercap_root = root;
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("rapl", &o, &s, &e), 0);
    assert_int_equal(s->prov.ndev, 3);
    assert_string_equal(s->prov.dev[0].label, "package-0");
    assert_string_equal(s->prov.dev[1].label, "package-0-dram");
    assert_string_equal(s->prov.dev[2].label, "package-1");
    assert_false(s->prov.dev[0].has_power);
    assert_true(s->prov.dev[0].has_counter);
    energy_sample_t buf[8];
    int n;
    assert_int_equal(s->ops->read(s->impl, 0.0, ENERGY_READ_POWER, buf, 8, &n, &e), 0);
    assert_int_equal(n, 0); /* RAPL has no instant power */
    assert_int_equal(s->ops->read(s->impl, 0.0, ENERGY_READ_COUNTER, buf, 8, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_near(buf[0].energy_J, 0, 0);
    /* package-0 wraps: 999000000 -> 1000000000 (max) -> 2000000 uJ = 3 J on */
    put(root, "intel-rapl:0/energy_uj", "2000000\n");
    put(root, "intel-rapl:0:0/energy_uj", "7500000\n");
    assert_int_equal(s->ops->read(s->impl, 0.5, ENERGY_READ_COUNTER, buf, 8, &n, &e), 0);
    assert_near(buf[0].energy_J, 3.0, 1e-9);
    assert_near(buf[0].power_W, 6.0, 1e-9); /* 3 J over 0.5 s */
    assert_near(buf[1].energy_J, 2.5, 1e-9);
    /* and keeps counting after the wrap */
    put(root, "intel-rapl:0/energy_uj", "4000000\n");
    assert_int_equal(s->ops->read(s->impl, 1.0, ENERGY_READ_COUNTER, buf, 8, &n, &e), 0);
    assert_near(buf[0].energy_J, 5.0, 1e-9);
    energy_source_close(s);
    test_rmtree(root);
    free(root);
}

static void rapl_permission_denied_is_explained(void **state)
{
    (void)state;
    char *root = fake_powercap();
    chmod(root, 0755);
    const char *files[] = {"intel-rapl:0/energy_uj", "intel-rapl:0:0/energy_uj",
                           "intel-rapl:1/energy_uj"};
    for (int i = 0; i < 3; i++) {
        char *p = fs_join(root, files[i]);
        chmod(p, 0400);
        free(p);
    }
    /* root reads anything: check as "nobody" in a child process */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
            _exit(3);
        if (geteuid() == 0)
            _exit(3);
        if (getuid() != 0) {
            for (int i = 0; i < 3; i++) {
                char *p = fs_join(root, files[i]);
                chmod(p, 0);
                free(p);
            }
        }
        energy_source_opts_t o;
        memset(&o, 0, sizeof o);
        o.powercap_root = root;
        energy_source_t *s;
        err_t e = ERR_INIT;
        int rc = energy_source_open("rapl", &o, &s, &e);
        _exit(rc == ERR_UNAVAILABLE && strstr(e.msg, "permission denied") &&
                      strstr(e.msg, "readable by root only") && strstr(e.msg, "energy_uj")
                  ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 3)
        skip(); /* could not drop privileges here */
    assert_int_equal(WEXITSTATUS(st), 0);
    test_rmtree(root);
    free(root);
}

static void rapl_without_powercap_says_so(void **state)
{
    (void)state;
    energy_source_opts_t o;
    memset(&o, 0, sizeof o);
    o.powercap_root = "/nonexistent/powercap";
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("rapl", &o, &s, &e), ERR_UNAVAILABLE);
    assert_contains(e.msg, "RAPL: cannot open /nonexistent/powercap");
}

/* ---- NVML through a fake library --------------------------------------------------- */

static char *fake_nvml_dir;
static char fake_nvml_lib[4096];

static int build_fake_nvml(void **state)
{
    (void)state;
    fake_nvml_dir = test_mkdtemp();
    snprintf(fake_nvml_lib, sizeof fake_nvml_lib, "%s/libfakenvml.so", fake_nvml_dir);
    const char *cc = getenv("CC");
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s -shared -fPIC -O1 -o %s %s", cc && *cc ? cc : "cc",
             fake_nvml_lib, FAKE_NVML_SRC);
    return system(cmd) == 0 ? 0 : -1;
}

static int drop_fake_nvml(void **state)
{
    (void)state;
    test_rmtree(fake_nvml_dir);
    free(fake_nvml_dir);
    return 0;
}

static void fake_env(const char *gpus, int no_field, int fail_after)
{
    setenv("FAKE_NVML_GPUS", gpus, 1);
    char b[32];
    snprintf(b, sizeof b, "%d", no_field);
    setenv("FAKE_NVML_NO_FIELD", b, 1);
    snprintf(b, sizeof b, "%d", fail_after);
    setenv("FAKE_NVML_FAIL_AFTER", b, 1);
    unsetenv("FAKE_NVML_INIT_FAIL");
}

static energy_source_opts_t nvml_opts(void)
{
    energy_source_opts_t o;
    memset(&o, 0, sizeof o);
    o.nvml_lib = fake_nvml_lib;
    return o;
}

#define TWO_GPUS "00000000:3B:00.0=Fake B;00000000:1A:00.0=Fake A"

static void nvml_matches_cuda_devices_by_bus_id(void **state)
{
    (void)state;
    fake_env(TWO_GPUS, 0, 0); /* NVML index order differs from PCI order */
    energy_source_opts_t o = nvml_opts();
    energy_source_t *s;
    err_t e = ERR_INIT;
    /* the caller's CUDA device 0 is at bus 3b (what cudaDeviceGetPCIBusId says) */
    o.cuda_bus_ids = "0000:3b:00.0";
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_int_equal(s->prov.ndev, 1);
    assert_string_equal(s->prov.dev[0].label, "gpu0");
    assert_string_equal(s->prov.dev[0].name, "Fake B");
    assert_string_equal(s->prov.dev[0].bus_id, "00000000:3B:00.0");
    assert_string_equal(s->prov.driver, "999.99.99-fake");
    assert_true(s->prov.dev[0].has_counter);
    assert_contains(s->prov.dev[0].power_method, "field 186");
    energy_sample_t buf[4];
    int n;
    assert_int_equal(s->ops->read(s->impl, 0, ENERGY_READ_POWER, buf, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_near(buf[0].power_W, 100, 1e-9); /* NVML index 0 draws 100 W */
    assert_true(isnan(buf[0].energy_J));
    energy_source_close(s);
    /* CUDA_VISIBLE_DEVICES by index, in PCI order */
    o.cuda_bus_ids = NULL;
    o.cuda_visible_devices = "1";
    o.cuda_device_order = "PCI_BUS_ID";
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_string_equal(s->prov.dev[0].bus_id, "00000000:3B:00.0");
    energy_source_close(s);
    /* by UUID (NVML index 1 is the card at 1A) */
    o.cuda_visible_devices = "GPU-00000001";
    o.cuda_device_order = NULL;
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_string_equal(s->prov.dev[0].name, "Fake A");
    energy_source_close(s);
    /* a bus id in --devices, among all GPUs */
    o.cuda_visible_devices = NULL;
    o.devices = "1a:00.0";
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_string_equal(s->prov.dev[0].name, "Fake A");
    assert_string_equal(s->prov.dev[0].label, "gpu0");
    energy_source_close(s);
    /* a bus id that is not there */
    o.devices = "0000:99:00.0";
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), ERR_UNAVAILABLE);
    assert_contains(e.msg, "no GPU at 00000000:99:00.0");
}

static void nvml_reports_clocks_and_temperature_others_say_absent(void **state)
{
    (void)state;
    fake_env(TWO_GPUS, 0, 0);
    unsetenv("FAKE_NVML_NO_STATE");
    energy_source_opts_t o = nvml_opts();
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_int_equal(s->prov.ndev, 2);
    energy_device_state_t st;
    /* gpu1 is the card at 3B, NVML index 0 */
    assert_int_equal(energy_source_state(s, 1, &st, &e), 0);
    assert_near(st.sm_clock_MHz, 1980, 0);
    assert_near(st.mem_clock_MHz, 2619, 0);
    assert_near(st.temperature_C, 40, 0);
    assert_near(st.throttle_reasons, 0, 0);
    assert_int_equal(energy_source_state(s, 0, &st, &e), 0);
    assert_near(st.sm_clock_MHz, 1970, 0);
    assert_near(st.temperature_C, 41, 0);
    assert_near(st.throttle_reasons, 4, 0);
    assert_int_equal(energy_source_state(s, 2, &st, &e), ERR_INPUT);
    energy_source_close(s);
    /* a card that refuses the readings: NAN, not an error */
    setenv("FAKE_NVML_NO_STATE", "1", 1);
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_int_equal(energy_source_state(s, 0, &st, &e), 0);
    assert_true(isnan(st.sm_clock_MHz) && isnan(st.mem_clock_MHz) && isnan(st.temperature_C));
    energy_source_close(s);
    unsetenv("FAKE_NVML_NO_STATE");
    /* no sensor: absent, said so */
    assert_int_equal(energy_source_open("none", NULL, &s, &e), 0);
    err_clear(&e);
    assert_int_equal(energy_source_state(s, 0, &st, &e), ERR_UNAVAILABLE);
    assert_contains(e.msg, "only NVML");
    assert_true(isnan(st.temperature_C));
    energy_source_close(s);
}

static void nvml_refuses_ambiguous_indices(void **state)
{
    (void)state;
    fake_env(TWO_GPUS, 0, 0);
    energy_source_opts_t o = nvml_opts();
    o.cuda_visible_devices = "0";
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), ERR_INPUT);
    assert_contains(e.msg, "CUDA_DEVICE_ORDER=PCI_BUS_ID");
    /* identical cards: accepted, with the assumption recorded */
    fake_env("00000000:3B:00.0=Same;00000000:1A:00.0=Same", 0, 0);
    err_clear(&e);
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_string_equal(s->prov.dev[0].bus_id, "00000000:1A:00.0");
    assert_contains(s->prov.notes, "PCI bus order");
    energy_source_close(s);
    /* MIG instances are refused: power is per physical GPU */
    o.cuda_visible_devices = "MIG-1234";
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), ERR_UNAVAILABLE);
    assert_contains(e.msg, "MIG");
}

static void nvml_falls_back_without_field_186(void **state)
{
    (void)state;
    fake_env("00000000:1A:00.0=Old", 1, 0);
    energy_source_opts_t o = nvml_opts();
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    assert_contains(s->prov.dev[0].power_method, "nvmlDeviceGetPowerUsage");
    assert_contains(s->prov.dev[0].power_method, "field 186: Not Supported");
    assert_near(s->prov.update_period_s, 1.0, 0);
    energy_sample_t buf[4];
    int n;
    assert_int_equal(s->ops->read(s->impl, 0, ENERGY_READ_POWER, buf, 4, &n, &e), 0);
    assert_near(buf[0].power_W, 100, 1e-9);
    energy_source_close(s);
    setenv("FAKE_NVML_INIT_FAIL", "1", 1);
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), ERR_UNAVAILABLE);
    assert_contains(e.msg, "nvmlInit_v2 failed: Driver Not Loaded");
    unsetenv("FAKE_NVML_INIT_FAIL");
}

static void nvml_failing_mid_run_keeps_what_was_collected(void **state)
{
    (void)state;
    fake_env("00000000:1A:00.0=Fake A", 0, 7); /* the open probes field 186 once */
    energy_source_opts_t o = nvml_opts();
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("nvml", &o, &s, &e), 0);
    char *dir = test_mkdtemp();
    energy_monitor_opts_t mo = {0.01, 0.01, 0, dir, NULL, NULL};
    energy_monitor_t *m;
    assert_int_equal(energy_monitor_start(&m, s, &mo, &e), 0);
    assert_int_equal(energy_phase_begin(m, "rollout", &e), 0);
    sleep_s(0.02);
    assert_int_equal(energy_phase_end(m, "rollout", &e), 0);
    /* the 7th power read (6th of the run) fails about 60 ms in; wait for it */
    for (int i = 0; i < 200 && energy_monitor_sensor_error(m, &e) == ERR_OK; i++)
        sleep_s(0.01);
    assert_int_equal(e.code, ERR_FAIL);
    assert_contains(e.msg, "GPU is lost");
    err_clear(&e);
    /* phases keep working after the sensor died */
    assert_int_equal(energy_phase_begin(m, "gradient_update", &e), 0);
    sleep_s(0.1);
    assert_int_equal(energy_phase_end(m, "gradient_update", &e), 0);
    energy_run_t run;
    assert_int_equal(energy_monitor_stop(m, NAN, &run, &e), 0);
    assert_true(run.sensor_failed);
    assert_contains(run.sensor_error, "GPU is lost");
    long power = 0;
    for (size_t i = 0; i < run.n_samples; i++)
        power += isfinite(run.samples[i].power_W);
    assert_int_equal(power, 6);
    assert_int_equal(energy_write_outputs(&run, dir, NULL, &e), 0);
    char *csv = fs_join(dir, ENERGY_CSV_NAME), *tim = fs_join(dir, ENERGY_TIMING_NAME);
    char *text;
    assert_int_equal(fs_read_all(csv, 1 << 20, &text, NULL, &e), 0);
    /* rollout was measured; gradient_update came after the failure: no figure */
    const char *row = strstr(text, "\nrollout,");
    assert_non_null(row);
    assert_near(strtod(row + 9, NULL), 100, 0.5); /* the fake counter counts whole mJ */
    assert_contains(text, "\ngradient_update,,");
    assert_contains(text, "the sensor failed during the run");
    free(text);
    assert_int_equal(fs_read_all(tim, 1 << 20, &text, NULL, &e), 0);
    assert_contains(text, "\"sensor_error\":");
    assert_contains(text, "GPU is lost");
    free(text);
    free(csv);
    free(tim);
    energy_run_free(&run);
    test_rmtree(dir);
    free(dir);
}

static void auto_explains_its_choice(void **state)
{
    (void)state;
    energy_source_opts_t o;
    memset(&o, 0, sizeof o);
    o.nvml_lib = "/nonexistent/libnvidia-ml.so.1";
    o.powercap_root = "/nonexistent/powercap";
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("auto", &o, &s, &e), 0);
    assert_string_equal(s->prov.kind, "none");
    assert_contains(s->prov.choice, "auto picked none");
    assert_contains(s->prov.choice, "nvml: not available: cannot load /nonexistent/libnvidia-ml");
    assert_contains(s->prov.choice, "rapl: not available: RAPL: cannot open /nonexistent/powercap");
    assert_contains(s->prov.choice, "replay: never picked automatically");
    energy_source_close(s);
    fake_env("00000000:1A:00.0=Fake A", 0, 0);
    o.nvml_lib = fake_nvml_lib;
    assert_int_equal(energy_source_open("auto", &o, &s, &e), 0);
    assert_string_equal(s->prov.kind, "nvml");
    assert_contains(s->prov.choice, "nvml: picked");
    assert_contains(s->prov.choice, "rapl: not available");
    energy_source_close(s);
    assert_int_equal(energy_source_open("bogus", &o, &s, &e), ERR_INPUT);
    assert_contains(e.msg, "expected auto, nvml, rapl, replay:FILE or none");
}

/* ---- the monitor with custom sources ---------------------------------------------- */

typedef struct fake {
    atomic_long reads;
    long fail_after;             /* 0: never */
    _Atomic double busy_until;   /* CLOCK_MONOTONIC; power is high while now < this */
    double hi, lo;
} fake_t;

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fake_read(void *impl, double t_now, int what, energy_sample_t *out, int cap, int *n,
                     err_t *e)
{
    fake_t *f = impl;
    *n = 0;
    if (!(what & ENERGY_READ_POWER))
        return ERR_OK;
    long k = atomic_fetch_add(&f->reads, 1) + 1;
    if (f->fail_after && k > f->fail_after)
        return err_set(e, ERR_FAIL, "fake sensor: device fell off the bus");
    out[0] = (energy_sample_t){NAN, 0, mono() < atomic_load(&f->busy_until) ? f->hi : f->lo, NAN};
    *n = 1;
    return ERR_OK;
}

static const energy_source_ops_t fake_ops = {fake_read, NULL, NULL, NULL};

static energy_source_t *fake_source(fake_t *f, double period)
{
    energy_provenance_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.kind, sizeof p.kind, "custom");
    snprintf(p.sensor, sizeof p.sensor, "test sensor");
    p.ndev = 1;
    snprintf(p.dev[0].label, sizeof p.dev[0].label, "dev0");
    p.dev[0].has_power = true;
    p.update_period_s = period;
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_custom(&fake_ops, f, &p, false, &s, &e), 0);
    return s;
}

static void custom_source_failure_ends_sampling_cleanly(void **state)
{
    (void)state;
    fake_t f = {.fail_after = 4, .hi = 10, .lo = 10};
    energy_monitor_opts_t mo = {0.005, 0, 0, NULL, NULL, NULL};
    energy_monitor_t *m;
    err_t e = ERR_INIT;
    assert_int_equal(energy_monitor_start(&m, fake_source(&f, 0.005), &mo, &e), 0);
    for (int i = 0; i < 200 && energy_monitor_sensor_error(m, &e) == ERR_OK; i++)
        sleep_s(0.005);
    assert_contains(e.msg, "fell off the bus");
    energy_run_t run;
    err_clear(&e);
    assert_int_equal(energy_monitor_stop(m, NAN, &run, &e), 0);
    assert_true(run.sensor_failed);
    assert_int_equal(run.n_samples, 4);
    energy_run_free(&run);
}

typedef struct sync_count {
    int calls;
    bool fail;
} sync_count_t;

static int count_sync(void *ctx, err_t *e)
{
    sync_count_t *c = ctx;
    c->calls++;
    return c->fail ? err_set(e, ERR_FAIL, "device fault") : ERR_OK;
}

static void phase_marks_synchronise_and_check_nesting(void **state)
{
    (void)state;
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open_none(&s, &e), 0);
    sync_count_t sc = {0, false};
    energy_monitor_opts_t mo = {0, 0, 0, NULL, count_sync, &sc};
    energy_monitor_t *m;
    assert_int_equal(energy_monitor_start(&m, s, &mo, &e), 0);
    assert_int_equal(energy_phase_begin(m, "gradient_update", &e), 0);
    assert_int_equal(energy_phase_begin(m, "backward", &e), 0);
    assert_int_equal(energy_phase_end(m, "backward", &e), 0);
    assert_int_equal(energy_phase_end(m, "gradient_update", &e), 0);
    assert_int_equal(sc.calls, 4);
    assert_int_equal(energy_phase_end(m, "rollout", &e), ERR_INPUT);
    assert_contains(e.msg, "no phase is open");
    err_clear(&e);
    assert_int_equal(energy_phase_begin(m, "a", &e), 0);
    assert_int_equal(energy_phase_begin(m, "b", &e), 0);
    assert_int_equal(energy_phase_end(m, "a", &e), ERR_INPUT);
    assert_contains(e.msg, "the innermost open phase is b");
    err_clear(&e);
    assert_int_equal(energy_phase_begin(m, "a", &e), ERR_INPUT);
    assert_contains(e.msg, "a is already open");
    err_clear(&e);
    assert_int_equal(energy_phase_begin(m, "bad/name", &e), ERR_INPUT);
    err_clear(&e);
    sc.fail = true;
    assert_int_equal(energy_phase_end(m, "b", &e), ERR_FAIL);
    assert_contains(e.msg, "synchronising the device before ending b: device fault");
    sc.fail = false;
    err_clear(&e);
    assert_int_equal(energy_phase_end(m, "b", &e), 0);
    assert_int_equal(energy_phase_end(m, "a", &e), 0);
    energy_run_t run;
    assert_int_equal(energy_monitor_stop(m, NAN, &run, &e), 0);
    assert_int_equal(run.n_windows, 4);
    assert_int_equal(run.n_warnings, 0);
    assert_string_equal(run.windows[1].name, "backward");
    assert_int_equal(run.windows[1].depth, 1);
    energy_run_free(&run);
}

typedef struct work_ctx {
    fake_t *f;
    long calls;
} work_ctx_t;

/* One "iteration" of a synthetic phase: 2 ms of busy time at high power. Like a GPU
 * with queued work, the fake device stays busy for 50 ms after the last call, so a
 * descheduled test thread (loaded CI machines) does not look like an idle device. */
static int synthetic_work(void *ctx, err_t *e)
{
    work_ctx_t *w = ctx;
    double end = mono() + 0.002;
    atomic_store(&w->f->busy_until, end + 0.05);
    while (mono() < end) {
    }
    w->calls++;
    return ERR_OK;
}

static void calibration_measures_steady_power_of_a_synthetic_workload(void **state)
{
    (void)state;
    fake_t f = {.hi = 250, .lo = 40};
    energy_monitor_opts_t mo = {0.005, 0, 0, NULL, NULL, NULL};
    energy_monitor_t *m;
    err_t e = ERR_INIT;
    assert_int_equal(energy_monitor_start(&m, fake_source(&f, 0.005), &mo, &e), 0);
    work_ctx_t w = {&f, 0};
    energy_calib_opts_t co = {0.3, 0.1, 0.01, 42};
    energy_calib_result_t res;
    assert_int_equal(energy_calibrate(m, "reward_inference", synthetic_work, &w, &co, &res, &e), 0);
    assert_true(res.steady_s >= 0.3);
    assert_true(res.segments >= 3);
    assert_int_equal(res.iterations, w.calls);
    if (!(fabs(res.power_W - 250) <= fmax(res.uncertainty_W, 1.0)))
        fail_msg("steady power %.3f +- %.3f W, expected 250 W", res.power_W, res.uncertainty_W);
    /* a short window of the phase from idle: too short alone, so the calibrated power is
     * used */
    sleep_s(0.1);
    assert_int_equal(energy_phase_begin(m, "reward_inference", &e), 0);
    for (int i = 0; i < 10; i++)
        synthetic_work(&w, &e);
    assert_int_equal(energy_phase_end(m, "reward_inference", &e), 0);
    sleep_s(0.05);
    energy_run_t run;
    assert_int_equal(energy_monitor_stop(m, NAN, &run, &e), 0);
    assert_int_equal(run.n_calib, (size_t)res.segments);
    energy_report_t rep;
    assert_int_equal(energy_attribute(&run, &rep, &e), 0);
    const energy_phase_result_t *p = phase(&rep, "reward_inference");
    assert_string_equal(p->method, "calibrated");
    assert_contains(p->note, "calibrated: steady power");
    assert_near(p->energy_J, res.power_W * p->runtime_s, 1e-9);
    energy_report_free(&rep);
    energy_run_free(&run);
}

static void calibration_is_refused_inside_a_window(void **state)
{
    (void)state;
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open_none(&s, &e), 0);
    energy_monitor_opts_t mo = {0, 0, 0, NULL, NULL, NULL};
    energy_monitor_t *m;
    assert_int_equal(energy_monitor_start(&m, s, &mo, &e), 0);
    assert_int_equal(energy_phase_begin(m, "rollout", &e), 0);
    work_ctx_t w = {NULL, 0};
    energy_calib_result_t res;
    /* refused inside a window, before any work */
    assert_int_equal(energy_calibrate(m, "rollout", synthetic_work, &w, NULL, &res, &e),
                     ERR_INPUT);
    assert_contains(e.msg, "outside phase windows");
    assert_int_equal(w.calls, 0);
    energy_run_t run;
    err_clear(&e);
    assert_int_equal(energy_monitor_stop(m, NAN, &run, &e), 0);
    energy_run_free(&run);
}

/* ---- no sensor ---------------------------------------------------------------------- */

static void no_sensor_gives_empty_cells_and_a_note(void **state)
{
    (void)state;
    char *dir = test_mkdtemp();
    energy_source_t *s;
    err_t e = ERR_INIT;
    assert_int_equal(energy_source_open("none", NULL, &s, &e), 0);
    energy_monitor_opts_t mo = {0, 0, 0, dir, NULL, NULL};
    energy_monitor_t *m;
    assert_int_equal(energy_monitor_start(&m, s, &mo, &e), 0);
    assert_int_equal(energy_phase_begin(m, "rollout", &e), 0);
    sleep_s(0.01);
    assert_int_equal(energy_phase_end(m, "rollout", &e), 0);
    assert_int_equal(energy_monitor_add_tokens(m, "rollout", 7, &e), 0);
    energy_run_t run;
    assert_int_equal(energy_monitor_stop(m, NAN, &run, &e), 0);
    assert_int_equal(energy_write_outputs(&run, dir, NULL, &e), 0);
    char *csv = fs_join(dir, ENERGY_CSV_NAME), *text;
    assert_int_equal(fs_read_all(csv, 1 << 20, &text, NULL, &e), 0);
    /* rollout: power and energy empty, runtime given, a note that says why */
    char *row = strstr(text, "\nrollout,,0.0");
    assert_non_null(row);
    assert_non_null(strstr(row, ",,,,none,1,\"no power sensor, energy not measured"));
    assert_contains(text, "\ntotal,,");
    free(text);
    free(csv);
    /* tokens counted but no energy: joules per token null; a phase not counted: tokens null */
    char *tim = fs_join(dir, ENERGY_TIMING_NAME);
    cJSON *j;
    assert_int_equal(json_load_file(tim, 1 << 24, &j, &e), 0);
    const cJSON *ph = cJSON_GetObjectItemCaseSensitive(j, "phases");
    const cJSON *ro = cJSON_GetObjectItemCaseSensitive(ph, "rollout");
    const cJSON *rw = cJSON_GetObjectItemCaseSensitive(ph, "reward_inference");
    assert_near(cJSON_GetObjectItemCaseSensitive(ro, "tokens")->valuedouble, 7, 0);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(ro, "energy_per_token_J")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rw, "tokens")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rw, "energy_per_token_J")));
    cJSON_Delete(j);
    free(tim);
    energy_run_free(&run);
    test_rmtree(dir);
    free(dir);
}

/* ---- small parsers ------------------------------------------------------------------ */

static void phase_lines_parse_or_explain(void **state)
{
    (void)state;
    bool b;
    char name[ENERGY_PHASE_MAX];
    double t;
    err_t e = ERR_INIT;
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASE begin rollout", &b, name, &t, &e), 1);
    assert_true(b);
    assert_string_equal(name, "rollout");
    assert_true(isnan(t));
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASE end gradient_update t=123.5\r", &b,
                                             name, &t, &e), 1);
    assert_false(b);
    assert_near(t, 123.5, 0);
    assert_int_equal(energy_phase_line_parse("hello world", &b, name, &t, &e), 0);
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASEX begin a", &b, name, &t, &e), 0);
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASE start a", &b, name, &t, &e), ERR_INPUT);
    assert_contains(e.msg, "expected begin or end");
    err_clear(&e);
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASE begin a t=x", &b, name, &t, &e),
                     ERR_INPUT);
    assert_contains(e.msg, "t=<CLOCK_MONOTONIC seconds>");
    err_clear(&e);
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASE begin", &b, name, &t, &e), ERR_INPUT);
    err_clear(&e);
    assert_int_equal(energy_phase_line_parse("MXRLHF_PHASE begin a,b", &b, name, &t, &e),
                     ERR_INPUT);
}

static void pci_bus_ids_are_canonicalised(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(energy_pci_canonical("0000:1a:00.0", out), 0);
    assert_string_equal(out, "00000000:1A:00.0");
    assert_int_equal(energy_pci_canonical("00000000:3B:00.0", out), 0);
    assert_string_equal(out, "00000000:3B:00.0");
    assert_int_equal(energy_pci_canonical("c1:00.1", out), 0);
    assert_string_equal(out, "00000000:C1:00.1");
    assert_int_equal(energy_pci_canonical("1a:00", out), ERR_INPUT);
    assert_int_equal(energy_pci_canonical("zz:00.0", out), ERR_INPUT);
    assert_int_equal(energy_pci_canonical("0000:1a:40.0", out), ERR_INPUT); /* device <= 31 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replay_steps_give_exact_joules_both_methods),
        cmocka_unit_test(two_gpus_sum_in_energy_csv_and_split_in_phase_timing),
        cmocka_unit_test(replay_source_through_monitor_gives_exact_joules),
        cmocka_unit_test(energy_per_token_divides_and_is_empty_without_energy),
        cmocka_unit_test(counter_and_integral_disagreement_is_kept),
        cmocka_unit_test(uncertainty_terms_follow_the_model),
        cmocka_unit_test(short_phase_is_warned_and_noted),
        cmocka_unit_test(nested_windows_keep_conservation),
        cmocka_unit_test(sampled_method_sees_through_the_sensor_lag),
        cmocka_unit_test(sampled_method_flags_windows_locked_to_the_sensor),
        cmocka_unit_test(bad_nesting_becomes_warnings),
        cmocka_unit_test(marks_are_ordered_by_timestamp_not_arrival),
        cmocka_unit_test(malformed_traces_name_file_and_line),
        cmocka_unit_test(phase_timing_errors_name_file_and_field),
        cmocka_unit_test(rapl_counters_unwrap_on_a_fake_powercap),
        cmocka_unit_test(rapl_permission_denied_is_explained),
        cmocka_unit_test(rapl_without_powercap_says_so),
        cmocka_unit_test(custom_source_failure_ends_sampling_cleanly),
        cmocka_unit_test(phase_marks_synchronise_and_check_nesting),
        cmocka_unit_test(calibration_measures_steady_power_of_a_synthetic_workload),
        cmocka_unit_test(calibration_is_refused_inside_a_window),
        cmocka_unit_test(no_sensor_gives_empty_cells_and_a_note),
        cmocka_unit_test(phase_lines_parse_or_explain),
        cmocka_unit_test(pci_bus_ids_are_canonicalised),
    };
    const struct CMUnitTest nvml_tests[] = {
        cmocka_unit_test(nvml_matches_cuda_devices_by_bus_id),
        cmocka_unit_test(nvml_refuses_ambiguous_indices),
        cmocka_unit_test(nvml_reports_clocks_and_temperature_others_say_absent),
        cmocka_unit_test(nvml_falls_back_without_field_186),
        cmocka_unit_test(nvml_failing_mid_run_keeps_what_was_collected),
        cmocka_unit_test(auto_explains_its_choice),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("nvml (fake libnvidia-ml)", nvml_tests, build_fake_nvml,
                                          drop_fake_nvml);
    return failed;
}
