/* report: energy.csv, phase_timing.json and the summary table, from a run and its
 * attribution. Every file names its source: sensor, devices (card, bus id), driver. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "energy/attrib.h"
#include "util/atomic_file.h"
#include "util/fs.h"
#include "util/json.h"

/* ---- energy.csv ------------------------------------------------------------------ */

static void csv_num(FILE *f, double x, const char *fmt)
{
    fputc(',', f);
    if (isfinite(x))
        fprintf(f, fmt, x);
}

static void csv_text(FILE *f, const char *s)
{
    fputs(",\"", f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static const energy_phase_result_t *phase_of(const energy_report_t *rep, const char *name)
{
    for (int i = 0; i < rep->nph; i++)
        if (!strcmp(rep->ph[i].name, name))
            return &rep->ph[i];
    return NULL;
}

int energy_write_csv(const energy_run_t *run, const energy_report_t *rep, const char *path,
                     err_t *e)
{
    atomic_file_t af;
    int rc = atomic_open(&af, path, e);
    if (rc)
        return rc;
    FILE *f = af.fp;
    char source[2048];
    energy_provenance_line(&run->prov, source, sizeof source);
    char none_note[1800] = "";
    if (!rep->measured && rep->short_trace[0])
        snprintf(none_note, sizeof none_note, "energy not measured: %s", rep->short_trace);
    else if (!rep->measured)
        snprintf(none_note, sizeof none_note, "no power sensor, energy not measured: %s",
                 run->prov.choice[0] ? run->prov.choice : run->prov.sensor);
    fprintf(f, "phase,avg_power_W,runtime_s,energy_J,energy_above_idle_J,uncertainty_J,method,"
               "windows,note,source\n");
    double T = 0, E = 0, A = 0, U = 0;
    int W = 0;
    bool e_ok = true, a_ok = true;
    const char *method = NULL;
    for (int k = 0; k < 3; k++) {
        const energy_phase_result_t *p = phase_of(rep, energy_study_phases[k]);
        fputs(p->name, f);
        csv_num(f, p->avg_power_W, "%.3f");
        csv_num(f, p->runtime_s, "%.3f");
        csv_num(f, p->energy_J, "%.3f");
        csv_num(f, p->above_idle_J, "%.3f");
        csv_num(f, p->uncertainty_J, "%.3f");
        fprintf(f, ",%s,%d", p->method, p->windows);
        char note[2600];
        snprintf(note, sizeof note, "%s%s%s", none_note, none_note[0] && p->note[0] ? "; " : "",
                 p->note);
        csv_text(f, note);
        csv_text(f, source);
        fputc('\n', f);
        T += p->runtime_s;
        W += p->windows;
        e_ok &= isfinite(p->energy_J);
        a_ok &= isfinite(p->above_idle_J);
        if (isfinite(p->energy_J)) {
            E += p->energy_J;
            U += p->uncertainty_J;
        }
        if (isfinite(p->above_idle_J))
            A += p->above_idle_J;
        if (p->windows || p->calibrated)
            method = !method || !strcmp(method, p->method) ? p->method : "mixed";
    }
    fputs("total", f);
    csv_num(f, e_ok && T > 0 ? E / T : NAN, "%.3f");
    csv_num(f, T, "%.3f");
    csv_num(f, e_ok ? E : NAN, "%.3f");
    csv_num(f, a_ok ? A : NAN, "%.3f");
    csv_num(f, e_ok ? U : NAN, "%.3f");
    fprintf(f, ",%s,%d", rep->measured ? (method ? method : "counter") : "none", W);
    char note[2600];
    snprintf(note, sizeof note, "%s%ssum of the three phases; whole run and time outside phases "
             "in phase_timing.json", none_note, none_note[0] ? "; " : "");
    csv_text(f, note);
    csv_text(f, source);
    fputc('\n', f);
    return atomic_commit(&af, e);
}

/* ---- phase_timing.json ----------------------------------------------------------- */

static void add_num(cJSON *o, const char *k, double x)
{
    if (isfinite(x))
        cJSON_AddNumberToObject(o, k, x);
    else
        cJSON_AddNullToObject(o, k);
}

static cJSON *interval_json(const energy_run_t *run, const energy_interval_t *iv)
{
    cJSON *o = cJSON_CreateObject();
    add_num(o, "runtime_s", iv->runtime_s);
    add_num(o, "energy_J", iv->e_best);
    add_num(o, "energy_counter_J", iv->e_counter);
    add_num(o, "energy_integral_J", iv->e_integral);
    add_num(o, "gap_J", iv->e_counter - iv->e_integral);
    add_num(o, "avg_power_W", iv->runtime_s > 0 ? iv->e_best / iv->runtime_s : NAN);
    add_num(o, "uncovered_s", iv->uncovered_s);
    cJSON *pd = cJSON_AddObjectToObject(o, "per_device_J");
    for (int d = 0; d < run->prov.ndev; d++)
        add_num(pd, run->prov.dev[d].label, iv->per_device[d]);
    return o;
}

static cJSON *source_json(const energy_provenance_t *p)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "kind", p->kind);
    cJSON_AddStringToObject(s, "sensor", p->sensor);
    cJSON_AddStringToObject(s, "driver", p->driver);
    cJSON_AddStringToObject(s, "library", p->library);
    cJSON_AddStringToObject(s, "choice", p->choice);
    cJSON_AddStringToObject(s, "notes", p->notes);
    add_num(s, "update_period_s", p->update_period_s);
    add_num(s, "counter_period_s", p->counter_period_s);
    add_num(s, "observed_period_s", p->observed_period_s);
    add_num(s, "content_window_s", p->content_window_s);
    cJSON *devs = cJSON_AddArrayToObject(s, "devices");
    for (int d = 0; d < p->ndev; d++) {
        const energy_device_info_t *di = &p->dev[d];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "label", di->label);
        cJSON_AddStringToObject(o, "name", di->name);
        cJSON_AddStringToObject(o, "bus_id", di->bus_id);
        cJSON_AddStringToObject(o, "uuid", di->uuid);
        cJSON_AddBoolToObject(o, "has_power", di->has_power);
        cJSON_AddBoolToObject(o, "has_counter", di->has_counter);
        cJSON_AddStringToObject(o, "power_method", di->power_method);
        cJSON_AddItemToArray(devs, o);
    }
    return s;
}

int energy_write_timing(const energy_run_t *run, const energy_report_t *rep, const char *path,
                        err_t *e)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return err_set(e, ERR_NOMEM, "out of memory writing %s", path);
    cJSON_AddStringToObject(j, "format", "mxrlhf.phase_timing/1");
    cJSON_AddItemToObject(j, "source", source_json(&run->prov));
    cJSON *clk = cJSON_AddObjectToObject(j, "clock");
    cJSON_AddStringToObject(clk, "clock", "CLOCK_MONOTONIC");
    add_num(clk, "t0_monotonic_s", run->t0_monotonic_s);
    cJSON *smp = cJSON_AddObjectToObject(j, "sampling");
    add_num(smp, "interval_s", run->interval_s);
    add_num(smp, "counter_interval_s", run->counter_interval_s);
    cJSON_AddNumberToObject(smp, "samples", (double)run->n_samples);
    const energy_sampler_stats_t *st = &run->stats;
    cJSON_AddNumberToObject(smp, "ticks", (double)st->ticks);
    cJSON_AddNumberToObject(smp, "late_ticks", (double)st->late_ticks);
    cJSON_AddNumberToObject(smp, "power_reads", (double)st->power_reads);
    cJSON_AddNumberToObject(smp, "counter_reads", (double)st->counter_reads);
    add_num(smp, "power_read_mean_us",
            st->power_reads ? 1e6 * st->power_read_s / (double)st->power_reads : NAN);
    add_num(smp, "power_read_max_us", st->power_reads ? 1e6 * st->power_read_max_s : NAN);
    add_num(smp, "counter_read_mean_ms",
            st->counter_reads ? 1e3 * st->counter_read_s / (double)st->counter_reads : NAN);
    add_num(smp, "counter_read_max_ms", st->counter_reads ? 1e3 * st->counter_read_max_s : NAN);
    cJSON *run_o = cJSON_AddObjectToObject(j, "run");
    add_num(run_o, "begin_s", run->run_begin);
    add_num(run_o, "end_s", run->run_end);
    add_num(run_o, "duration_s", run->run_end - run->run_begin);
    if (run->idle_end > run->idle_begin) {
        cJSON *idle = cJSON_AddObjectToObject(j, "idle");
        add_num(idle, "begin_s", run->idle_begin);
        add_num(idle, "end_s", run->idle_end);
        add_num(idle, "power_W", rep->idle_power_W);
        add_num(idle, "energy_J", rep->measured ? rep->idle.e_best : NAN);
    } else {
        cJSON_AddNullToObject(j, "idle");
    }
    if (run->sensor_failed) {
        cJSON *se = cJSON_AddObjectToObject(j, "sensor_error");
        add_num(se, "t_s", run->sensor_error_t);
        cJSON_AddStringToObject(se, "message", run->sensor_error);
    } else {
        cJSON_AddNullToObject(j, "sensor_error");
    }
    cJSON *ws = cJSON_AddArrayToObject(j, "windows");
    for (size_t i = 0; i < run->n_windows; i++) {
        const energy_window_t *w = &run->windows[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "phase", w->name);
        add_num(o, "begin_s", w->begin);
        add_num(o, "end_s", w->end);
        cJSON_AddNumberToObject(o, "depth", w->depth);
        cJSON_AddBoolToObject(o, "closed_at_end", w->closed_at_end);
        cJSON_AddItemToArray(ws, o);
    }
    cJSON *cs = cJSON_AddArrayToObject(j, "calibration");
    for (size_t i = 0; i < run->n_calib; i++) {
        const energy_calib_t *c = &run->calib[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "phase", c->phase);
        add_num(o, "begin_s", c->begin);
        add_num(o, "steady_from_s", c->steady_from);
        add_num(o, "end_s", c->end);
        cJSON_AddNumberToObject(o, "iterations", (double)c->iterations);
        cJSON_AddItemToArray(cs, o);
    }
    cJSON *rw = cJSON_AddArrayToObject(j, "run_warnings");
    for (int i = 0; i < run->n_warnings; i++)
        cJSON_AddItemToArray(rw, cJSON_CreateString(run->warnings[i]));
    cJSON *tk = cJSON_AddObjectToObject(j, "tokens");
    for (size_t i = 0; i < run->n_tokens; i++)
        cJSON_AddNumberToObject(tk, run->tokens[i].phase, (double)run->tokens[i].tokens);

    /* results */
    cJSON *ph = cJSON_AddObjectToObject(j, "phases");
    for (int k = 0; k < rep->nph; k++) {
        const energy_phase_result_t *p = &rep->ph[k];
        cJSON *o = cJSON_AddObjectToObject(ph, p->name);
        cJSON_AddNumberToObject(o, "windows", p->windows);
        add_num(o, "runtime_s", p->runtime_s);
        add_num(o, "min_window_s", p->min_window_s);
        add_num(o, "max_window_s", p->max_window_s);
        add_num(o, "energy_J", p->energy_J);
        add_num(o, "uncertainty_J", p->uncertainty_J);
        cJSON_AddStringToObject(o, "method", p->method);
        add_num(o, "avg_power_W", p->avg_power_W);
        add_num(o, "energy_above_idle_J", p->above_idle_J);
        add_num(o, "tokens", p->tokens);
        add_num(o, "energy_per_token_J", p->energy_per_token_J);
        add_num(o, "energy_counter_J", rep->measured ? p->m.e_counter : NAN);
        add_num(o, "energy_integral_J", rep->measured ? p->m.e_integral : NAN);
        double gap = p->m.e_counter - p->m.e_integral;
        add_num(o, "gap_J", rep->measured ? gap : NAN);
        add_num(o, "gap_pct", rep->measured && p->m.e_counter != 0
                                  ? 100 * gap / p->m.e_counter : NAN);
        cJSON *ut = cJSON_AddObjectToObject(o, "uncertainty_terms");
        add_num(ut, "edge_J", rep->measured ? p->u_edge : NAN);
        add_num(ut, "noise_J", rep->measured ? p->u_noise : NAN);
        add_num(ut, "gap_J", rep->measured ? p->u_gap : NAN);
        add_num(ut, "tau_s", p->tau_s);
        cJSON *wo = cJSON_AddObjectToObject(o, "windowed");
        add_num(wo, "energy_J", p->windowed_J);
        add_num(wo, "uncertainty_J", p->windowed_u);
        const energy_sampled_t *sm = &p->sampled;
        if (sm->ok) {
            cJSON *so = cJSON_AddObjectToObject(o, "sampled");
            add_num(so, "energy_J", sm->energy_J);
            add_num(so, "uncertainty_J", sm->uncertainty_J);
            add_num(so, "power_W", sm->power_W);
            cJSON_AddNumberToObject(so, "readings", (double)sm->readings);
            add_num(so, "phase_lock", sm->phase_lock);
            cJSON_AddBoolToObject(so, "aliased", sm->aliased);
            cJSON *sut = cJSON_AddObjectToObject(so, "uncertainty_terms");
            add_num(sut, "stat_J", sm->u_stat);
            add_num(sut, "window_J", sm->u_window);
            add_num(sut, "edges_J", sm->u_edges);
            add_num(sut, "aliasing_J", sm->u_aliasing);
        } else {
            cJSON_AddNullToObject(o, "sampled");
        }
        if (p->calibrated) {
            cJSON *co = cJSON_AddObjectToObject(o, "calibration");
            cJSON_AddNumberToObject(co, "segments", p->calib_segments);
            add_num(co, "steady_s", p->calib_total_s);
            add_num(co, "power_W", p->calib_power_W);
            add_num(co, "uncertainty_W", p->calib_u_W);
            add_num(co, "energy_J", p->calib_power_W * p->runtime_s);
            add_num(co, "uncertainty_J", p->calib_u_W * p->runtime_s);
        } else {
            cJSON_AddNullToObject(o, "calibration");
        }
        add_num(o, "uncovered_s", p->m.uncovered_s);
        cJSON *pd = cJSON_AddObjectToObject(o, "per_device_J");
        for (int d = 0; d < run->prov.ndev; d++)
            add_num(pd, run->prov.dev[d].label, rep->measured ? p->m.per_device[d] : NAN);
        cJSON_AddStringToObject(o, "note", p->note);
    }
    cJSON_AddItemToObject(j, "outside_phases", interval_json(run, &rep->outside));
    cJSON_AddItemToObject(j, "whole_run", interval_json(run, &rep->whole));
    cJSON *co = cJSON_AddObjectToObject(j, "conservation");
    cJSON_AddStringToObject(co, "rule", "top-level windows + time outside them = whole run");
    if (rep->measured) {
        double top = rep->whole.e_best - rep->outside.e_best - rep->conservation_residual_J;
        add_num(co, "phases_J", top);
        add_num(co, "outside_J", rep->outside.e_best);
        add_num(co, "whole_run_J", rep->whole.e_best);
        add_num(co, "residual_J", rep->conservation_residual_J);
        cJSON_AddBoolToObject(co, "ok", rep->conservation_ok);
    } else {
        cJSON_AddNullToObject(co, "ok");
    }
    cJSON *cl = cJSON_AddObjectToObject(j, "closure");
    cJSON_AddStringToObject(cl, "rule", "top-level phases as reported = the same windows by the "
                            "counter (else integral), within their summed uncertainty");
    if (rep->closure_valid) {
        add_num(cl, "reported_J", rep->closure_reported_J);
        add_num(cl, "reference_J", rep->closure_reference_J);
        add_num(cl, "difference_J", rep->closure_reported_J - rep->closure_reference_J);
        add_num(cl, "uncertainty_J", rep->closure_u_J);
        cJSON_AddBoolToObject(cl, "ok", rep->closure_ok);
    } else {
        cJSON_AddNullToObject(cl, "ok");
    }
    cJSON *wa = cJSON_AddArrayToObject(j, "warnings");
    for (int i = 0; i < run->n_warnings; i++)
        cJSON_AddItemToArray(wa, cJSON_CreateString(run->warnings[i]));
    for (int i = 0; i < rep->n_warnings; i++)
        cJSON_AddItemToArray(wa, cJSON_CreateString(rep->warnings[i]));
    if (!rep->measured && !rep->short_trace[0]) /* else rep->warnings say why */
        cJSON_AddItemToArray(wa, cJSON_CreateString(
                                     "no power sensor: runtimes only, energies left empty"));
    int rc = json_write_file(path, j, true, e);
    cJSON_Delete(j);
    return rc;
}

/* A right-aligned number, or "-" where there is none. */
static const char *cell(char *buf, size_t cap, double x, const char *fmt)
{
    if (isfinite(x))
        snprintf(buf, cap, fmt, x);
    else
        snprintf(buf, cap, "-");
    return buf;
}

static void print_row(FILE *f, const char *name, double w, double s, double j, double u,
                      const char *method)
{
    char a[32], b[32], c[32], d[32];
    fprintf(f, "%-18s %10s %10s %12s %10s  %s\n", name, cell(a, sizeof a, w, "%.2f"),
            cell(b, sizeof b, s, "%.3f"), cell(c, sizeof c, j, "%.2f"),
            cell(d, sizeof d, u, "%.2f"), method);
}

void energy_report_print(const energy_run_t *run, const energy_report_t *rep, FILE *f)
{
    char src[2048];
    energy_provenance_line(&run->prov, src, sizeof src);
    fprintf(f, "source: %s\n", src);
    fprintf(f, "%-18s %10s %10s %12s %10s  %s\n", "phase", "power_W", "runtime_s", "energy_J",
            "+-J", "method");
    for (int k = 0; k < rep->nph; k++) {
        const energy_phase_result_t *p = &rep->ph[k];
        if (k >= 3 && !p->windows)
            continue;
        print_row(f, p->name, p->avg_power_W, p->runtime_s, p->energy_J, p->uncertainty_J,
                  p->method);
    }
    double eo = rep->measured ? rep->outside.e_best : NAN;
    double ew = rep->measured ? rep->whole.e_best : NAN;
    print_row(f, "outside phases", rep->outside.runtime_s > 0 ? eo / rep->outside.runtime_s : NAN,
              rep->outside.runtime_s, eo, NAN, "");
    print_row(f, "whole run", rep->whole.runtime_s > 0 ? ew / rep->whole.runtime_s : NAN,
              rep->whole.runtime_s, ew, NAN, "");
    for (int k = 0; k < rep->nph; k++) {
        const energy_phase_result_t *p = &rep->ph[k];
        if (!p->calibrated)
            continue;
        char pw[96] = "no steady power";
        if (isfinite(p->calib_power_W))
            snprintf(pw, sizeof pw, "steady power %.2f W +-%.2f", p->calib_power_W,
                     p->calib_u_W);
        fprintf(f, "calibration of %s: %d segment(s), %.2f s steady, %s (%s)\n", p->name,
                p->calib_segments, p->calib_total_s, pw,
                !strcmp(p->method, "calibrated") ? "used for its energy" : "not used");
    }
    if (isfinite(rep->idle_power_W))
        fprintf(f, "idle power before the run: %.2f W\n", rep->idle_power_W);
    for (int i = 0; i < run->n_warnings; i++)
        fprintf(f, "warning: %s\n", run->warnings[i]);
    for (int i = 0; i < rep->n_warnings; i++)
        fprintf(f, "warning: %s\n", rep->warnings[i]);
    if (!rep->measured && !rep->short_trace[0])
        fprintf(f, "note: no power sensor, energies not measured (%s)\n",
                run->prov.choice[0] ? run->prov.choice : run->prov.sensor);
}

int energy_write_outputs(const energy_run_t *run, const char *dir, FILE *f, err_t *e)
{
    energy_report_t rep;
    int rc = energy_attribute(run, &rep, e);
    if (rc)
        return rc;
    char *csv = fs_join(dir, ENERGY_CSV_NAME), *tim = fs_join(dir, ENERGY_TIMING_NAME);
    if (!csv || !tim)
        rc = err_set(e, ERR_NOMEM, "out of memory");
    if (!rc)
        rc = energy_write_timing(run, &rep, tim, e);
    if (!rc)
        rc = energy_write_csv(run, &rep, csv, e);
    if (!rc && f)
        energy_report_print(run, &rep, f);
    free(csv);
    free(tim);
    energy_report_free(&rep);
    return rc;
}
