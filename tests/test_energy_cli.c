/* Tests for `mxrlhf monitor` and `mxrlhf energy`, driven as a user would: a shell script
 * that prints phase lines under the monitor with a replayed power log gives a known
 * energy.csv, which `mxrlhf energy` recomputes (identically up to the last bits of a
 * number). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "support/testutil.h"
#include "util/fs.h"

#define FIX "tests/fixtures/energy"

#define assert_contains(hay, needle)                                                     \
    do {                                                                                 \
        const char *h_ = (hay);                                                          \
        if (!h_ || !strstr(h_, needle))                                                  \
            fail_msg("expected \"%s\" in: %s", needle, h_ ? h_ : "(null)");             \
    } while (0)

static char *slurp(const char *dir, const char *name)
{
    char *p = fs_join(dir, name), *text = NULL;
    err_t e = ERR_INIT;
    if (fs_read_all(p, 1 << 24, &text, NULL, &e))
        fail_msg("%s", e.msg);
    free(p);
    return text;
}

/* a and b equal as texts except that numbers may differ in their last bits (relative
 * 1e-12): `mxrlhf energy` recomputes from the power log's text, whose times lose the
 * monitor's in-memory bits, so a duration can differ by an ulp and cJSON then prints 17
 * digits of a neighbouring double. Anything else (keys, labels, structure) must match. */
static void expect_same_up_to_last_bits(const char *a, const char *b, const char *what)
{
    const char *p = a, *q = b;
    while (*p && *q) {
        bool num_p = (*p >= '0' && *p <= '9') || (*p == '-' && p[1] >= '0' && p[1] <= '9');
        bool num_q = (*q >= '0' && *q <= '9') || (*q == '-' && q[1] >= '0' && q[1] <= '9');
        if (num_p && num_q) {
            char *ep, *eq;
            double x = strtod(p, &ep), y = strtod(q, &eq);
            double scale = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
            if (fabs(x - y) > 1e-12 * (scale > 1 ? scale : 1))
                fail_msg("%s: %.17g != %.17g at offset %ld", what, x, y, (long)(p - a));
            p = ep;
            q = eq;
            continue;
        }
        if (*p != *q)
            fail_msg("%s: texts differ at offset %ld: ...%.40s... vs ...%.40s...", what,
                     (long)(p - a), p, q);
        p++;
        q++;
    }
    if (*p || *q)
        fail_msg("%s: one text is longer (offset %ld)", what, (long)(p - a));
}

/* The first four columns of each row: the study's contract. */
static void study_columns(const char *csv, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *line = csv; *line && k < cap;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        int commas = 0;
        size_t i = 0;
        while (i < len && commas < 4)
            commas += line[i++] == ',';
        if (commas == 4)
            i--;
        k += (size_t)snprintf(out + k, cap - k, "%.*s\n", (int)i, line);
        line += len + (nl ? 1 : 0);
    }
}

static void monitor_replay_script_gives_expected_energy_csv(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source replay:" FIX
                      "/steps.csv -- " FIX "/phases.sh", dir);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    char *csv = slurp(dir, "energy.csv");
    char cols[2048];
    study_columns(csv, cols, sizeof cols);
    assert_string_equal(cols, "phase,avg_power_W,runtime_s,energy_J\n"
                              "rollout,157.143,1.750,275.000\n"
                              "reward_inference,175.000,1.000,175.000\n"
                              "gradient_update,200.000,0.700,140.000\n"
                              "total,171.014,3.450,590.000\n");
    assert_contains(csv, "energy_above_idle_J,uncertainty_J,method,windows,note,source\n");
    assert_contains(csv, ",counter,2,");
    assert_contains(csv, "replay of the power log " FIX "/steps.csv");
    /* the child's other lines were passed through; its phase lines were not */
    assert_contains(out, "before any phase\na line in between\nafter the phases\n");
    if (strstr(out, "MXRLHF_PHASE begin"))
        fail_msg("phase lines leaked into the output: %s", out);
    char *tim = slurp(dir, "phase_timing.json");
    assert_contains(tim, "\"kind\":\t\"replay\"");
    assert_contains(tim, "\"ok\":\ttrue");
    free(tim);
    free(csv);
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void monitor_exits_with_the_commands_status(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source none -- sh -c 'exit 7'",
                      dir);
    assert_int_equal(rc, 7);
    free(out);
    rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source none -- sh -c 'kill -TERM $$'",
                  dir);
    assert_int_equal(rc, 128 + 15);
    free(out);
    char *sub = fs_join(dir, "never");
    rc = test_cli(&out, "monitor --out %s --idle-s 0 -- ./no-such-command-here", sub);
    assert_int_equal(rc, 2);
    assert_contains(out, "cannot run ./no-such-command-here: No such file or directory");
    free(out);
    /* nothing was measured, so nothing is left behind */
    char *log = fs_join(sub, "power_log_baseline.csv"), *part = fs_join(sub,
                                                                       "power_log_baseline.csv.partial");
    assert_false(fs_exists(log));
    assert_false(fs_exists(part));
    free(log);
    free(part);
    free(sub);
    rc = test_cli(&out, "monitor --out %s --power-source replay:/nonexistent.csv -- true", dir);
    assert_int_equal(rc, 2);
    assert_contains(out, "cannot open power log /nonexistent.csv");
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void energy_recomputes_the_monitors_outputs(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s/run --idle-s 0 --power-source replay:" FIX
                      "/steps.csv -- " FIX "/phases.sh", dir);
    assert_int_equal(rc, 0);
    free(out);
    rc = test_cli(&out, "energy --results %s/run --out %s/again", dir, dir);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    char *a_dir = fs_join(dir, "run"), *b_dir = fs_join(dir, "again");
    const char *files[] = {"energy.csv", "phase_timing.json"};
    for (int i = 0; i < 2; i++) {
        char *a = slurp(a_dir, files[i]), *b = slurp(b_dir, files[i]);
        expect_same_up_to_last_bits(a, b, files[i]);
        free(a);
        free(b);
    }
    free(a_dir);
    free(b_dir);
    rc = test_cli(&out, "energy --results %s/nothing-here", dir);
    assert_int_equal(rc, 2);
    assert_contains(out, "nothing-here/phase_timing.json");
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void monitor_without_sensor_leaves_cells_empty_with_a_note(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source none -- sh -c "
                      "'echo MXRLHF_PHASE begin rollout; sleep 0.05; echo MXRLHF_PHASE end rollout'",
                      dir);
    assert_int_equal(rc, 0);
    char *csv = slurp(dir, "energy.csv");
    assert_contains(csv, "\nrollout,,0.0");
    assert_contains(csv, ",,,,none,1,\"no power sensor, energy not measured: --power-source none");
    assert_contains(csv, "\ntotal,,");
    assert_contains(out, "no power sensor");
    free(csv);
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void malformed_phase_lines_are_reported_not_fatal(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source none -- sh -c "
                      "'echo MXRLHF_PHASE start rollout; echo MXRLHF_PHASE end rollout; echo ok'",
                      dir);
    assert_int_equal(rc, 0);
    assert_contains(out, "stdout line 1: expected begin or end, got \"start\": ignored");
    assert_contains(out, "stdout line 2: end rollout without a matching begin");
    assert_contains(out, "ok\n");
    char *tim = slurp(dir, "phase_timing.json");
    assert_contains(tim, "expected begin or end");
    free(tim);
    free(out);
    test_rmtree(dir);
    free(dir);
}

static void monitor_reads_rapl_from_the_given_powercap_root(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    char path[4096];
    snprintf(path, sizeof path, "%s/pc/intel-rapl:0", dir);
    err_t e = ERR_INIT;
    assert_int_equal(fs_mkdir_p(path, &e), 0);
    snprintf(path, sizeof path, "%s/pc/intel-rapl:0/name", dir);
    test_write_file(path, "package-0\n", 10);
    snprintf(path, sizeof path, "%s/pc/intel-rapl:0/energy_uj", dir);
    test_write_file(path, "1000\n", 5);
    snprintf(path, sizeof path, "%s/pc", dir);
    setenv("MXRLHF_POWERCAP_ROOT", path, 1);
    int rc = test_cli(&out, "monitor --out %s/o --idle-s 0 --power-source rapl -- sleep 0.1", dir);
    unsetenv("MXRLHF_POWERCAP_ROOT");
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    char *o = fs_join(dir, "o");
    char *log = slurp(o, "power_log_baseline.csv");
    assert_contains(log, ",package-0,");
    char *tim = slurp(o, "phase_timing.json");
    assert_contains(tim, "\"kind\":\t\"rapl\"");
    free(tim);
    free(log);
    free(o);
    test_rmtree(dir);
    free(dir);
}

static void python_helper_marks_phases(void **state)
{
    (void)state;
    if (system("python3 -c 'import sys' >/dev/null 2>&1") != 0)
        skip();
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source none -- python3 "
                      "scripts/mxrlhf_phase.py rollout 0.02 0.03", dir);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    char *csv = slurp(dir, "energy.csv");
    assert_contains(csv, ",none,2,"); /* two rollout windows, through MXRLHF_PHASE_FD */
    free(csv);
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* run.duration_s of a run directory's phase_timing.json. */
static double run_duration(const char *dir)
{
    char *tim = slurp(dir, "phase_timing.json");
    cJSON *j = cJSON_Parse(tim);
    assert_non_null(j);
    const cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "run"), "duration_s");
    assert_true(cJSON_IsNumber(d));
    double v = d->valuedouble;
    cJSON_Delete(j);
    free(tim);
    return v;
}

/* A mark whose t= lies outside the monitored interval is refused, naming its line: it
 * made a millisecond command a 99,999,996,345 s run (t=99999999999); one before the run
 * began, or beyond a replay's last reading, is refused the same way. */
static void monitor_refuses_marks_outside_the_monitored_interval(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source none -- sh -c "
                      "'echo MXRLHF_PHASE begin gradient_update t=99999999999; "
                      "echo MXRLHF_PHASE begin rollout t=1; echo MXRLHF_PHASE end gradient_update'",
                      dir);
    assert_int_equal(rc, 0);
    assert_contains(out, "stdout line 1: t=99999999999.000000 is run time ");
    assert_contains(out, "outside the monitored interval [");
    assert_contains(out, "stdout line 2: t=1.000000 is run time -");
    /* one warning per refused mark (a second one, "is the command using CLOCK_MONOTONIC?",
     * said the same thing again) */
    const char *const marks[] = {"monitor: warning: stdout line 1:",
                                 "monitor: warning: stdout line 2:"};
    for (int i = 0; i < 2; i++) {
        const char *first = strstr(out, marks[i]);
        if (!first || strstr(first + 1, marks[i]))
            fail_msg("expected exactly one warning naming %s, got:\n%s", marks[i], out);
    }
    if (strstr(out, "from the run's clock"))
        fail_msg("a refused mark is warned about once:\n%s", out);
    double d = run_duration(dir);
    if (!(d >= 0 && d < 60))
        fail_msg("the run lasted %g s: a refused mark must not stretch it", d);
    char *csv = slurp(dir, "energy.csv");
    assert_contains(csv, "\ngradient_update,,0.000,,,,none,0,");
    free(csv);
    free(out);
    /* a replay's marks may run ahead of the wall clock, to its last reading (4.0 s) only */
    rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source replay:" FIX "/steps.csv -- sh -c "
                  "'at() { awk -v t0=\"$MXRLHF_T0\" -v d=\"$1\" \"BEGIN { printf \\\"%%.9f\\\", t0 + d }\"; }; "
                  "echo MXRLHF_PHASE begin rollout t=$(at 0.5); echo MXRLHF_PHASE end rollout t=$(at 1.5); "
                  "echo MXRLHF_PHASE begin rollout t=$(at 2.5); echo MXRLHF_PHASE end rollout t=$(at 10)'",
                  dir);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    assert_contains(out, "stdout line 4: t=");
    assert_contains(out, "outside the monitored interval");
    /* the run ends at its last accepted mark (2.5 s after MXRLHF_T0), where the open window
     * is closed; the run's own begin comes a few milliseconds after T0 on a loaded machine
     * (measured 2.483 s at load 13), and a run stretched to the refused mark would last 4 s */
    d = run_duration(dir);
    if (!(d >= 2.4 && d < 2.6))
        fail_msg("the replayed run lasted %g s, expected 2.5 s (its last accepted mark)", d);
    assert_contains(out, "was never ended: closed at the end of the run");
    free(out);
    test_rmtree(dir);
    free(dir);
}

/* A replayed row at t=1e300 was accepted (and never played): refused with its line. */
static void replay_row_beyond_run_times_is_refused(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    char *log = fs_join(dir, "big.csv"), *o = fs_join(dir, "o");
    const char *text = "time_s,device,power_W,energy_J,phase\n0.0,gpu0,100,0,\n1e300,gpu0,100,,\n";
    test_write_file(log, text, strlen(text));
    int rc = test_cli(&out, "monitor --out %s --idle-s 0 --power-source replay:%s -- true", o, log);
    assert_int_equal(rc, 2);
    assert_contains(out, "big.csv:3: column time_s: 1e+300 s is beyond the run times");
    char *pl = fs_join(o, "power_log_baseline.csv");
    assert_false(fs_exists(pl));
    free(pl);
    free(out);
    free(log);
    free(o);
    test_rmtree(dir);
    free(dir);
}

/* One reading spans no time: the energy is left empty and the reason said, where it
 * reported 0 W / 0 J; `mxrlhf energy` recomputes the same. */
static void one_row_trace_gives_no_energy_saying_why(void **state)
{
    (void)state;
    char *dir = test_mkdtemp(), *out;
    char *log = fs_join(dir, "one.csv");
    const char *text = "time_s,device,power_W,energy_J,phase\n0.0,gpu0,100,0,\n";
    test_write_file(log, text, strlen(text));
    int rc = test_cli(&out, "monitor --out %s/run --idle-s 0 --power-source replay:%s -- sh -c "
                      "'echo MXRLHF_PHASE begin rollout; sleep 0.1; echo MXRLHF_PHASE end rollout'",
                      dir, log);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    assert_contains(out, "energy not measured: gpu0 has 1 reading(s): too few to integrate");
    if (strstr(out, " 0.00 "))
        fail_msg("a figure of 0 from one reading: %s", out);
    free(out);
    char *run = fs_join(dir, "run");
    char *csv = slurp(run, "energy.csv");
    assert_contains(csv, "\nrollout,,0.1");
    assert_contains(csv, ",,,,none,1,\"energy not measured: gpu0 has 1 reading(s): too few to "
                         "integrate (2 are needed)\"");
    assert_contains(csv, "\ntotal,,0.1");
    free(csv);
    rc = test_cli(&out, "energy --results %s/run --out %s/again", dir, dir);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, out);
    free(out);
    char *again = fs_join(dir, "again");
    char *a = slurp(run, "energy.csv"), *b = slurp(again, "energy.csv");
    expect_same_up_to_last_bits(a, b, "energy.csv");
    free(a);
    free(b);
    free(again);
    free(run);
    free(log);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(monitor_replay_script_gives_expected_energy_csv),
        cmocka_unit_test(monitor_exits_with_the_commands_status),
        cmocka_unit_test(monitor_refuses_marks_outside_the_monitored_interval),
        cmocka_unit_test(replay_row_beyond_run_times_is_refused),
        cmocka_unit_test(one_row_trace_gives_no_energy_saying_why),
        cmocka_unit_test(energy_recomputes_the_monitors_outputs),
        cmocka_unit_test(monitor_without_sensor_leaves_cells_empty_with_a_note),
        cmocka_unit_test(malformed_phase_lines_are_reported_not_fatal),
        cmocka_unit_test(monitor_reads_rapl_from_the_given_powercap_root),
        cmocka_unit_test(python_helper_marks_phases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
