#!/usr/bin/env python3
"""chain_device: issue 18's GPU embedded default on the device machine, for
scripts/peer/cuda_device.sh's parts "chain" and "curve" (docs/rlhf.md, "The GPU preset").

  chain_device.py chain MXRLHF OUT SECONDS
      `mxrlhf run --device cuda` (the GPU preset) into $CHAIN_DIR (default build/chain: kept
      between calls on a warm machine; every finished stage is cached there), starting no
      stage after $CHAIN_STOP seconds (default 450: the whole chain and the control in one call of
      570 s at the GPU preset's size; `--stop-after`) and killed, at the worst,
      30 s before SECONDS (the stage it was in runs again next time). Once the chain has its
      judge, the shuffled-label control in $CHAIN_DIR-control (with the time left, at least
      90 s): the same run with rm.shuffle_labels=true up to the PPO baseline (data to judge
      copied, so reused; $CHAIN_CONTROL=0 leaves it out). Copies
      report.md (and its figures), energy.csv, phase_timing.json, sensitivity_matrix.csv,
      policies.json, comparison.json and the other files the summary reads to OUT/chain/, then
      prints the stage times and the quality figures the issue asks for. Call again until it
      prints "chain complete" and the control's figures.
  chain_device.py curve MXRLHF OUT SECONDS
      Pretraining alone for three sizes around the preset's, $CURVE_TOKENS tokens each
      (default 6,000,000), in $CURVE_DIR (default build/curve): loss against parameters,
      tokens and seconds, the measured curve the preset's size is chosen from.
      $CURVE_VARIANTS replaces the three sizes by named option sets over the preset,
      "NAME:section.key=value,...;NAME2:...", e.g. "lr3:pretrain.lr=0.003;b32:
      pretrain.batch_size=32" (a pretraining sweep).

$CHAIN_ARGS adds options to every `mxrlhf run` (e.g. "--set ppo.learning_rate=3e-05").
Nothing here computes a result the run does not write: the figures are read from the run's
files, and the one derived figure (the reward model's implied clean accuracy) says how it
is derived.
"""
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time


def run(cmd, log, limit):
    """Runs cmd with its output in log; returns (exit code, seconds); 124 when killed at limit."""
    t = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                timeout=max(1, limit)).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.time() - t


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


STAGES = ("data", "tokenizer", "pretrain", "sft", "rm", "judge", "baseline", "sensitivity",
          "phase_sensitivity", "policies", "compare", "hw", "report")
T_START = time.time()


def stages(d):
    """Each stage's record: run.json's when this call's run wrote it, else (a run killed at the
    call's limit writes no run.json) from the stages' own stage.json, "done" or "not done"."""
    rj = os.path.join(d, "run.json")
    if os.path.exists(rj) and os.path.getmtime(rj) >= T_START:
        return {s["stage"]: s for s in (load(rj) or {}).get("stages", [])}
    out = {}
    for n in STAGES:
        sj = load(os.path.join(d, n, "stage.json"))
        out[n] = {"stage": n, "status": "done" if sj else "not done",
                  "seconds": sj.get("seconds") if sj else None}
    return out


def complete(d):
    s = stages(d).get("report")
    return bool(s) and s.get("status") in ("ran", "reused", "done")


def copy_stages(src, dst, names):
    for n in names:
        if os.path.isdir(os.path.join(src, n)) and not os.path.exists(os.path.join(dst, n)):
            shutil.copytree(os.path.join(src, n), os.path.join(dst, n))


def ppo_quality(d):
    """(SFT ground truth, final, its std, prompts, final KL, best-of-n truth) of d/baseline."""
    e = load(os.path.join(d, "baseline", "eval.json"))
    if not e or len(e.get("evaluations", [])) < 2:
        return None
    a, b = e["evaluations"][0], e["evaluations"][-1]
    bon = e.get("best_of_n") or {}
    return (a["data_synth_score"], b["data_synth_score"],
            math.hypot(a.get("data_synth_score_std", 0), b.get("data_synth_score_std", 0)),
            b.get("prompts", 0), b.get("kl", float("nan")), bon.get("data_synth_score"),
            b.get("step"), a.get("reward_mean"), b.get("reward_mean"))


def flip_rate(d, split="rm_eval"):
    """Share of the split's pairs whose label the synthetic task flipped (data/pairs.jsonl)."""
    sp = load(os.path.join(d, "data", "split.json"))
    try:
        lines = set(sp["splits"][split]["lines"])
        n = k = 0
        with open(os.path.join(d, "data", "pairs.jsonl")) as f:
            for i, line in enumerate(f, 1):
                if i in lines:
                    n += 1
                    k += bool(json.loads(line).get("flipped"))
        return k / n if n else None
    except (TypeError, KeyError, OSError, ValueError):
        return None


def summary(cd, cc, out):
    st = stages(cd)
    print("== issue 18: the GPU embedded default (%s)" % cd)
    cfg = load(os.path.join(cd, "config.json")) or {}
    print("preset %s; model %s" % (cfg.get("preset", "(none)"), json.dumps(cfg.get("model", {}))))
    tot = 0.0
    print("%-18s %-12s %9s" % ("stage", "status", "seconds"))
    for n, s in st.items():
        sec = s.get("seconds")
        if sec is not None:
            tot += sec
        print("%-18s %-12s %9s" % (n, s.get("status"), "%.1f" % sec if sec is not None else "-"))
    print("sum of the stages' seconds: %.1f (budget 900 on one H100)%s" %
          (tot, "" if complete(cd) else "; chain NOT complete yet: call again"))
    if complete(cd):
        print("chain complete")
    pm = load(os.path.join(cd, "pretrain", "pretrain_metrics.json"))
    if pm:
        print("pretrain: %d parameters, %d tokens in %.1f s (%.0f tokens/s), loss %.3f -> %.3f" %
              (pm["parameters"], pm["tokens"], pm["seconds"], pm["tokens_per_s"],
               pm["loss_first"], pm["loss_last"]))
    f = flip_rate(cd)
    for name in ("rm", "judge"):
        m = load(os.path.join(cd, name, "rm_metrics.json"))
        if not m:
            continue
        line = "%s: rm_eval accuracy %.4f on %d pairs (against the labels)" % (
            name, m["accuracy"], m["pairs"])
        if f is not None and f < 0.5:
            a = (m["accuracy"] - f) / (1 - 2 * f)
            line += ("; %.1f%% of those labels flipped, so %.4f against the true order if its "
                     "errors are independent of the flips (target >= 0.9: %s)" %
                     (100 * f, a, "met" if a >= 0.9 else "NOT met"))
        print(line)
    q = ppo_quality(cd)
    if q:
        s0, s1, sd, n, kl, bon, step, r0, r1 = q
        gain, need = s1 - s0, 0.5 * (0.5 - s0)
        print("PPO baseline: ground truth %.4f (SFT) -> %.4f (step %s), +%.4f; half the gap to "
              "0.5 is %.4f: %s; KL %.2f (< 10: %s); reward model %.3f -> %.3f; best-of-n truth %s"
              % (s0, s1, step, gain, need, "met" if gain >= need else "NOT met", kl,
                 "met" if kl < 10 else "NOT met", r0, r1,
                 "%.4f" % bon if bon is not None else "-"))
    qc = ppo_quality(cc) if cc else None
    if qc:
        s0, s1, sd, n, kl, *_ = qc
        se = sd / math.sqrt(n) if n else float("nan")
        print("control (reward model on shuffled labels): ground truth %.4f -> %.4f (%+.4f, "
              "2 standard errors %.4f: %s), KL %.2f" %
              (s0, s1, s1 - s0, 2 * se, "flat" if abs(s1 - s0) <= 2 * se else "MOVED", kl))
        m = load(os.path.join(cc, "rm", "rm_metrics.json"))
        if m:
            print("  its reward model: rm_eval accuracy %.4f" % m["accuracy"])
    mpath = os.path.join(cd, "sensitivity", "sensitivity_matrix.csv")
    if os.path.exists(mpath):
        with open(mpath) as fh:
            rows = list(csv.DictReader(fh))
        cols = [c for c in (rows[0].keys() if rows else [])
                if c.startswith("mxfp4_e2m1_g") and c.endswith("_delta_pct")]
        worst = sorted(((max(float(r[c]) for c in cols), r["layer"]) for r in rows),
                       reverse=True) if cols else []
        bad = [r["layer"] for r in rows if r.get("mxfp4_tolerant") == "false"]
        print("matrix: %d layers, %d not tolerant at MXFP4 (column mxfp4_tolerant); largest MXFP4 "
              "perplexity changes: %s" % (len(rows), len(bad), ", ".join(
                  "%s %+.2f%%" % (l, v) for v, l in worst[:5])))
    for ph in ("rollout", "reward", "gradient"):
        p = os.path.join(cd, "phase_sensitivity", "sensitivity_%s.csv" % ph)
        if os.path.exists(p):
            with open(p) as fh:
                rows = list(csv.DictReader(fh))
            bad = [r["layer"] for r in rows if r.get("mxfp4_tolerant") == "false"]
            print("phase %s: %d of %d layers not tolerant at MXFP4%s" % (
                ph, len(bad), len(rows), (": " + ", ".join(bad)) if bad else ""))
    pc = os.path.join(cd, "compare", "policy_comparison.csv")
    if os.path.exists(pc):
        with open(pc) as fh:
            rows = [r for r in csv.DictReader(fh) if r["phase"] == "total"]
        print("comparison (whole run; mean +- 95% interval over seeds):")
        print("  %-12s %-9s %16s %16s %16s %16s %8s" % ("plan", "execution", "energy x ref",
                                                        "runtime x ref", "true score",
                                                        "win rate (true)", "RM acc"))
        def pm_(r, k):
            v, c = r.get(k, ""), r.get(k + "_ci95", "")
            return ("%.3f +- %.3f" % (float(v), float(c))) if v and c else (v or "-")
        for r in rows:
            print("  %-12s %-9s %16s %16s %16s %16s %8s" % (
                r["plan"], r["execution"], pm_(r, "energy_ratio"), pm_(r, "runtime_ratio"),
                pm_(r, "true_score"), pm_(r, "win_rate_true"), r.get("rm_accuracy", "")[:6]))
        cj = load(os.path.join(cd, "compare", "comparison.json")) or {}
        cc_ = cj.get("control_check") or {}
        print("  control check: %s" % (cc_.get("message") or json.dumps(cc_)[:300]))
    pt = load(os.path.join(cd, "baseline", "phase_timing.json"))
    if pt:
        print("baseline energy per token (J): " + ", ".join(
            "%s %s" % (k, ("%.3g" % v["energy_per_token_J"])
                       if isinstance(v.get("energy_per_token_J"), (int, float)) else "-")
            for k, v in pt.get("phases", {}).items()))


def chain(mx, out, budget):
    t0 = time.time()
    cd = os.environ.get("CHAIN_DIR", "build/chain")
    extra = shlex.split(os.environ.get("CHAIN_ARGS", ""))
    os.makedirs(cd, exist_ok=True)
    left = lambda: budget - (time.time() - t0)
    rc, sec = run([mx, "run", "--device", "cuda", "--output", cd, "--stop-after",
                   os.environ.get("CHAIN_STOP", "450")] + extra,
                  os.path.join(out, "chain.log"), left() - 30)
    print("mxrlhf run: rc %d in %.0f s%s" % (rc, sec, " (killed at the call's limit; the "
                                             "stage it was in runs again next call)"
                                             if rc == 124 else ""))
    with open(os.path.join(out, "chain.log")) as f:
        for line in f:
            if line.startswith(("== ", "   ")) or any(k in line for k in (
                    "accuracy", "pretrained", "fine-tuned", "PPO steps", "tolerant layers",
                    "sensitive", "control check", "mxrlhf run:", "error")):
                print(line.rstrip()[:220])
    cc = cd.rstrip("/") + "-control"
    # the control needs the main run's data to judge stages only: it runs in the first call
    # that has them, beside the rest of the chain
    ready = stages(cd).get("judge", {}).get("status") in ("ran", "reused", "done")
    if ready and os.environ.get("CHAIN_CONTROL", "1") != "0":
        os.makedirs(cc, exist_ok=True)
        copy_stages(cd, cc, ("data", "tokenizer", "pretrain", "sft", "judge"))
        if left() > 90:
            rc, sec = run([mx, "run", "--device", "cuda", "--output", cc, "--until", "baseline",
                           "--set", "rm.shuffle_labels=true"] + extra,
                          os.path.join(out, "chain_control.log"), left() - 20)
            print("control run: rc %d in %.0f s" % (rc, sec))
        else:
            print("control run: not started, %.0f s left; call again" % left())
    dst = os.path.join(out, "chain")
    os.makedirs(dst, exist_ok=True)
    for rel in ("config.json", "run.json", "baseline/energy.csv", "baseline/phase_timing.json",
                "baseline/eval.json", "baseline/training_stats.jsonl",
                "sensitivity/sensitivity_matrix.csv", "policies/policies.json",
                "compare/comparison.json", "compare/policy_comparison.csv",
                "compare/compare_runs.csv", "rm/rm_metrics.json", "judge/rm_metrics.json",
                "baseline/eval_samples.jsonl",
                "pretrain/pretrain_metrics.json", "pretrain/train_log.csv",
                "phase_sensitivity/sensitivity_rollout.csv",
                "phase_sensitivity/sensitivity_reward.csv",
                "phase_sensitivity/sensitivity_gradient.csv"):
        p = os.path.join(cd, rel)
        if os.path.exists(p):
            name = rel.replace("/", "_") if rel.startswith(("rm/", "judge/", "pretrain/")) \
                else os.path.basename(rel)
            shutil.copy(p, os.path.join(dst, name))
    if os.path.isdir(os.path.join(cd, "report")):
        shutil.copytree(os.path.join(cd, "report"), os.path.join(dst, "report"),
                        dirs_exist_ok=True)
    for n in ("eval.json", "eval_samples.jsonl"):
        if os.path.exists(os.path.join(cc, "baseline", n)):
            shutil.copy(os.path.join(cc, "baseline", n), os.path.join(dst, "control_" + n))
    summary(cd, cc if os.path.isdir(cc) else None, out)


SIZES = (  # name, hidden, layers, heads, kv_heads, intermediate (head size 32 in each)
    ("S", 128, 4, 4, 2, 352),     # the CPU default's
    ("M", 256, 4, 8, 2, 768),     # the GPU preset's
    ("L", 384, 6, 12, 4, 1152),
)


def variants():
    """[(name, ["section.key=value", ...])]: $CURVE_VARIANTS, else the three SIZES."""
    spec = os.environ.get("CURVE_VARIANTS", "").strip()
    if spec:
        out = []
        for v in filter(None, (x.strip() for x in spec.split(";"))):
            name, _, sets = v.partition(":")
            out.append((name.strip(), [x.strip() for x in sets.split(",") if x.strip()]))
        return out
    return [(n, ["model.hidden=%d" % h, "model.layers=%d" % l, "model.heads=%d" % nh,
                 "model.kv_heads=%d" % kv, "model.intermediate=%d" % i])
            for n, h, l, nh, kv, i in SIZES]


def curve(mx, out, budget):
    t0 = time.time()
    root = os.environ.get("CURVE_DIR", "build/curve")
    tokens = os.environ.get("CURVE_TOKENS", "6000000")
    extra = shlex.split(os.environ.get("CHAIN_ARGS", ""))
    rows = []
    first = None
    for name, sets in variants():
        d = os.path.join(root, name)
        os.makedirs(d, exist_ok=True)
        if first:
            copy_stages(first, d, ("data", "tokenizer"))
        left = budget - (time.time() - t0) - 20
        if left < 30:
            print("%s: not started, %.0f s left" % (name, left))
            break
        cmd = [mx, "run", "--device", "cuda", "--output", d, "--until", "pretrain",
               "--set", "pretrain.tokens=%s" % tokens, "--set", "pretrain.log_every=20"]
        for x in sets:
            cmd += ["--set", x]
        rc, sec = run(cmd + extra, os.path.join(out, "curve_%s.log" % name), left)
        first = first or d
        pm = load(os.path.join(d, "pretrain", "pretrain_metrics.json"))
        log = []
        try:
            with open(os.path.join(d, "pretrain", "train_log.csv")) as f:
                log = list(csv.DictReader(f))
            shutil.copy(os.path.join(d, "pretrain", "train_log.csv"),
                        os.path.join(out, "curve_%s_train_log.csv" % name))
        except OSError:
            pass
        rows.append((name, " ".join(sets), rc, pm, log))
        if rc == 124:
            break
    print("== pretraining curve: %s tokens each, same corpus, the GPU preset's pretrain section "
          "with these options over it" % tokens)
    print("%-6s %12s %9s %11s  loss at 25%% / 50%% / 75%% / 100%% of the steps; mean of the "
          "last 10%%  options" % ("name", "parameters", "seconds", "tokens/s"))
    for name, sets, rc, pm, log in rows:
        if not pm:
            print("%-6s  (rc %d: no metrics)  %s" % (name, rc, sets))
            continue
        pts = []
        for q in (0.25, 0.5, 0.75, 1.0):
            if log:
                r = log[min(len(log) - 1, max(0, int(round(q * len(log))) - 1))]
                pts.append("%.3f (%.0f s)" % (float(r["loss"]), float(r["elapsed_s"])))
        tail = log[-max(1, len(log) // 10):]
        mean = sum(float(r["loss"]) for r in tail) / len(tail) if tail else float("nan")
        print("%-6s %12d %9.1f %11.0f  %s; %.3f  %s" % (
            name, pm["parameters"], pm["seconds"], pm["tokens_per_s"], " / ".join(pts), mean,
            sets))


def main():
    part, mx, out, budget = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    {"chain": chain, "curve": curve}[part](mx, out, budget)


if __name__ == "__main__":
    main()
