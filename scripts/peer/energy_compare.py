#!/usr/bin/env python3
"""energy_compare: the monitor's figures against the workload's own NVML counter reads.

    energy_compare.py RESULTS_DIR REF.json

RESULTS_DIR is an `mxrlhf monitor --out` directory (phase_timing.json); REF.json is
what scripts/peer/energy_workload.py wrote. Prints, per phase: the monitor's energy by
counter and by integrated instant power, its +-, the reference (counter read by the
workload at each boundary), and whether the +- covers the difference. For the bursty
mode it adds the duty-cycle check: the on-phase predicted from the steady calibration
(cal_on power x burst_on time) against both.
"""
import json
import sys


def main():
    res, refp = sys.argv[1], sys.argv[2]
    pt = json.load(open(f"{res}/phase_timing.json"))
    ref = json.load(open(refp))
    src = pt["source"]
    dev = src["devices"][0] if src["devices"] else {}
    print(f"source: {src['kind']} {dev.get('name', '')} @ {dev.get('bus_id', '')}, driver "
          f"{src['driver']}; workload's CUDA bus id {ref.get('cuda_bus_id')}")
    s = pt["sampling"]
    print(f"sampling: {s['interval_s']*1e3:.0f} ms power, {s['counter_interval_s']*1e3:.0f} ms "
          f"counter; power read {s['power_read_mean_us']:.1f} us mean, counter read "
          f"{s['counter_read_mean_ms']:.2f} ms mean; observed sensor period "
          f"{src['observed_period_s']*1e3:.0f} ms; late ticks {s['late_ticks']}/{s['ticks']}")
    # The reference reads the counter at each boundary; the counter reports the energy up
    # to its last update, so each window's reference is itself off by up to one counter
    # period x the power around its edges: u_ref = windows x period x the highest phase
    # power of the run.
    per = src.get("counter_period_s") or 0.1
    p_max = max(v["avg_power_W"] or 0 for v in pt["phases"].values())
    hdr = ("phase", "win", "time_s", "method", "ours_J", "+-J", "counter_J", "integral_J",
           "sampled_J", "ref_J", "+-ref", "diff%", "covered")
    print("%-14s %4s %7s %-10s %9s %8s %9s %10s %9s %9s %7s %7s %s" % hdr)
    rows = []
    for name, r in ref["phases"].items():
        p = pt["phases"].get(name)
        if not p:
            continue
        ours, u = p["energy_J"], p["uncertainty_J"]
        u_ref = p["windows"] * per * p_max
        d = ours - r["energy_J"]
        cov = abs(d) <= u + u_ref
        rows.append((name, cov))
        sm = p["sampled"]["energy_J"] if p.get("sampled") else float("nan")
        print("%-14s %4d %7.2f %-10s %9.1f %8.1f %9.1f %10.1f %9.1f %9.1f %7.1f %6.1f%% %s" % (
            name, p["windows"], p["runtime_s"], p["method"], ours, u, p["energy_counter_J"],
            p["energy_integral_J"], sm, r["energy_J"], u_ref, 100 * d / r["energy_J"],
            "yes" if cov else "NO"))
    c = pt["closure"]
    if c.get("ok") is not None:
        print(f"closure (the issue's check: phases as reported vs the counter over the same "
              f"windows): reported {c['reported_J']:.1f} J, counter {c['reference_J']:.1f} J, "
              f"difference {c['difference_J']:+.1f} J ({100 * c['difference_J'] / c['reference_J']:+.2f}%), "
              f"summed +- {c['uncertainty_J']:.1f} J: {'covered' if c['ok'] else 'NOT covered'}")
    w = pt["whole_run"]
    print(f"whole run: monitor counter {w['energy_counter_J']:.2f} J, integral "
          f"{w['energy_integral_J']:.2f} J over {w['runtime_s']:.2f} s; workload's counter "
          f"{ref['whole_J']:.2f} J over {ref['whole_s']:.2f} s")
    print(f"conservation: {pt['conservation']}")
    if "cal_on" in ref["phases"] and "burst_on" in ref["phases"]:
        c, b = pt["phases"]["cal_on"], pt["phases"]["burst_on"]
        pred = c["avg_power_W"] * b["runtime_s"]
        print(f"duty cycle: steady on-power {c['avg_power_W']:.1f} W x burst_on time "
              f"{b['runtime_s']:.2f} s = {pred:.1f} J; reported {b['energy_J']:.1f} +- "
              f"{b['uncertainty_J']:.1f} J ({b['method']}), counter {b['energy_counter_J']:.1f} J,"
              f" integral {b['energy_integral_J']:.1f} J; workload's reads "
              f"{ref['phases']['burst_on']['energy_J']:.1f} J")
        off, idle = pt["phases"]["burst_off"], pt["phases"]["cal_off"]
        c = pt["phases"]["cal_on"]
        print(f"  burst_off {off['avg_power_W']:.1f} W vs steady idle {idle['avg_power_W']:.1f} W;"
              f" burst_on {b['avg_power_W']:.1f} W vs steady on {c['avg_power_W']:.1f} W")
        tot_i = sum(pt["phases"][n]["energy_integral_J"] for n in ("burst_on", "burst_off"))
        tot_c = sum(pt["phases"][n]["energy_counter_J"] for n in ("burst_on", "burst_off"))
        tot_u = sum(pt["phases"][n]["uncertainty_J"] for n in ("burst_on", "burst_off"))
        print(f"  bursts, both phases: integral {tot_i:.1f} J vs counter {tot_c:.1f} J "
              f"(diff {tot_i - tot_c:+.1f} J, {100 * (tot_i - tot_c) / tot_c:+.2f}%); summed +- "
              f"{tot_u:.1f} J")
    print("all covered" if all(c for _, c in rows) else "NOT all covered")


if __name__ == "__main__":
    main()
