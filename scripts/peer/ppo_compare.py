#!/usr/bin/env python3
"""ppo_compare: one PPO step of `mxrlhf baseline` against the PyTorch peer
(scripts/peer/ppo_peer.py run under `mxrlhf monitor`), same steps, same token counts.

  ppo_compare.py OURS_DIR PEER_DIR PEER_JSON FIRST-LAST [--json OUT]

OURS_DIR: an `mxrlhf baseline` results directory (training_stats.json, energy.csv,
power_log_baseline.csv, phase_timing.json). PEER_DIR: `mxrlhf monitor --out` of the peer,
which replayed steps FIRST..LAST of OURS_DIR's samples.jsonl (PEER_JSON: its --json); the
peer's figures are its last pass over those steps (phases named as ours), its first pass
(phases first_*) is printed after the table.

Per phase and per step, for the steps FIRST..LAST of both runs:
  time     seconds per step (ours: training_stats.json's time/ppo/*, the phase windows;
           the peer: its own synchronised timings)
  power    the phase's average power as the monitor reports it in energy.csv (over all of
           the run's windows of that phase: the sampled method, docs/energy.md)
  energy   power x time, J per step
and, as a cross-check, the energy of exactly those steps' windows integrated from the power
log (each reading held until the next: the monitor's "integral" method; it lags the
sensor by up to ~100 ms, which moves energy between adjacent phases but not out of the
step). No numpy: runs anywhere.
"""
import csv
import json
import os
import sys

PHASES = ("rollout", "reward_inference", "gradient_update")
TIME_KEYS = {"rollout": "time/ppo/rollout", "reward_inference": "time/ppo/reward_inference",
             "gradient_update": "time/ppo/optimize_step"}


def energy_csv(d):
    out = {}
    with open(os.path.join(d, "energy.csv")) as f:
        for r in csv.DictReader(f):
            out[r["phase"]] = r
    return out


def power_series(d):
    """{device: [(t, W), ...]} from power_log_baseline.csv (rows with a power reading)."""
    s = {}
    with open(os.path.join(d, "power_log_baseline.csv")) as f:
        for r in csv.DictReader(f):
            if r["power_W"]:
                s.setdefault(r["device"], []).append((float(r["time_s"]), float(r["power_W"])))
    return s


def integral(series, a, b):
    """Energy in [a, b]: each reading holds until the next (summed over devices)."""
    e = 0.0
    for pts in series.values():
        for i, (t, p) in enumerate(pts):
            t1 = pts[i + 1][0] if i + 1 < len(pts) else float("inf")
            lo, hi = max(a, t), min(b, t1)
            if hi > lo:
                e += p * (hi - lo)
    return e


def windows(d, name):
    pt = json.load(open(os.path.join(d, "phase_timing.json")))
    w = [x for x in pt["windows"] if x["phase"] == name and x["depth"] == 0]
    return sorted(w, key=lambda x: x["begin_s"]), pt


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    ours, peer, peer_json, rng = sys.argv[1:5]
    out_json = sys.argv[sys.argv.index("--json") + 1] if "--json" in sys.argv else None
    first, last = (int(x) for x in rng.split("-"))
    steps = list(range(first, last + 1))
    n = len(steps)
    st = json.load(open(os.path.join(ours, "training_stats.json")))["steps"]
    st = {s["step"]: s for s in st}
    pj = json.load(open(peer_json))
    pst = {s["step"]: s for s in pj["steps"]}
    eo, ep = energy_csv(ours), energy_csv(peer)
    so, sp = power_series(ours), power_series(peer)
    res = {"steps": [first, last], "phases": {}}
    tot = {"ours_s": 0, "peer_s": 0, "ours_J": 0, "peer_J": 0, "ours_int_J": 0, "peer_int_J": 0}
    for ph in PHASES:
        to = sum(st[s][TIME_KEYS[ph]] for s in steps) / n
        tp = sum(pst[s][ph] for s in steps) / n
        po, pp = float(eo[ph]["avg_power_W"]), float(ep[ph]["avg_power_W"])
        wo, _ = windows(ours, ph)
        wp, _ = windows(peer, ph)
        # ours: windows are one per step in order (step 1 first); the peer's: one per replayed step
        io = sum(integral(so, w["begin_s"], w["end_s"]) for w in wo[first - 1:last]) / n
        ip = sum(integral(sp, w["begin_s"], w["end_s"]) for w in wp[:n]) / n
        r = {"ours_s": to, "peer_s": tp, "ours_W": po, "peer_W": pp, "ours_J": po * to,
             "peer_J": pp * tp, "ours_int_J": io, "peer_int_J": ip,
             "ours_method": eo[ph]["method"], "peer_method": ep[ph]["method"]}
        res["phases"][ph] = r
        for k in tot:
            tot[k] += r[k]
    res["total"] = tot
    res["ours_step_wall_s"] = sum(st[s]["time/ppo/total"] for s in steps) / n
    res["ratio_joules"] = tot["ours_J"] / tot["peer_J"]
    res["ratio_joules_integral"] = tot["ours_int_J"] / tot["peer_int_J"]
    res["card"] = pj["device"]
    print(f"PPO step, steps {first}-{last} of the run (same token counts both sides), {pj['device']}")
    print("| phase | ours s/step | PyTorch s/step | speed-up | ours W | PyTorch W | ours J/step | "
          "PyTorch J/step | J ratio | integral J/step ours / PyTorch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ph in PHASES:
        r = res["phases"][ph]
        print(f"| {ph} | {r['ours_s']:.3f} | {r['peer_s']:.3f} | {r['peer_s'] / r['ours_s']:.2f} x | "
              f"{r['ours_W']:.0f} | {r['peer_W']:.0f} | {r['ours_J']:.0f} | {r['peer_J']:.0f} | "
              f"{r['ours_J'] / r['peer_J']:.2f} | {r['ours_int_J']:.0f} / {r['peer_int_J']:.0f} |")
    print(f"| whole step (3 phases) | {tot['ours_s']:.3f} | {tot['peer_s']:.3f} | "
          f"{tot['peer_s'] / tot['ours_s']:.2f} x | | | {tot['ours_J']:.0f} | {tot['peer_J']:.0f} | "
          f"{res['ratio_joules']:.2f} | {tot['ours_int_J']:.0f} / {tot['peer_int_J']:.0f} "
          f"({res['ratio_joules_integral']:.2f}) |")
    print(f"ours, whole step wall time incl. work outside the phases: {res['ours_step_wall_s']:.3f} s")
    # the peer's first pass over the same steps (shapes new to PyTorch), when it made one
    if pj.get("first_pass_steps"):
        _, ptj = windows(peer, "rollout")
        fst = {s["step"]: s for s in pj["first_pass_steps"]}
        first = {"peer_s": 0, "peer_J": 0}
        print("PyTorch's first pass over the same steps (every shape new to it):")
        for ph in PHASES:
            t = sum(fst[s][ph] for s in steps) / n
            w = ptj["phases"]["first_" + ph]["avg_power_W"]
            first[ph] = {"peer_s": t, "peer_W": w, "peer_J": w * t}
            first["peer_s"] += t
            first["peer_J"] += w * t
            print(f"  {ph}: {t:.3f} s/step at {w:.0f} W = {w * t:.0f} J/step")
        print(f"  whole step: {first['peer_s']:.3f} s, {first['peer_J']:.0f} J; ours / PyTorch's first "
              f"pass: {tot['ours_J'] / first['peer_J']:.3f} of the joules")
        res["peer_first_pass"] = first
    print(f"target: whole PPO step <= 1/3 of PyTorch's joules: "
          f"{'met' if res['ratio_joules'] <= 1 / 3 else 'not met'} ({res['ratio_joules']:.3f})")
    if out_json:
        with open(out_json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
