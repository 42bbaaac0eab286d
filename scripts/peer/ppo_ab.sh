#!/bin/bash
# ppo_ab: two builds of mxrlhf on the same GPU machine in one device call: the study's
# baseline (ppo_device.sh's run1 settings) with D's binary, then with another binary B
# (e.g. main's, to see what a change costs or saves), then D's again (run2: reproducibility
# against run1); per-phase seconds per step (steps 2 to STEPS) and the peak memory of each.
# D is prepared by scripts/peer/ppo_pack.sh; B is an mxrlhf built the same way
# (make NO_DEPS=1 ... MARCH=x86-64-v3), gzipped.
# Usage: ppo_ab.sh D B.gz OUT [SECONDS]   (env STEPS, default 10; a dry run on a CPU machine:
#        DEVICE=cpu POWER=none CONFIG=small_config.json, passed on to ppo_device.sh)
set -uo pipefail
D=$(cd "$1" && pwd); BGZ=$2; OUT=$3; BUDGET=${4:-280}; STEPS=${STEPS:-10}
DEVICE=${DEVICE:-cuda}; POWER=${POWER:-nvml}
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
quiet() { grep -vE "^mxrlhf ppo: step [0-9]+/|^(rollout|reward_inference|gradient_update|total),"; }
PARTS="setup run1" STEPS=$STEPS bash "$D/ppo_device.sh" "$D" "$OUT" "$(left)" 2>&1 | quiet
W=/tmp/ppo_work; R=$W/results; M=$W/models
L=$D/root/usr/lib/x86_64-linux-gnu
CUL=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find /usr/local /opt -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$L:$L/openblas-openmp:$CUL:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=16
gzip -dc "$BGZ" >"$W/mxrlhf_b" && chmod +x "$W/mxrlhf_b"
echo "== B ($(( $(date +%s) - T0 )) s in)"
timeout $(( $(left) - 60 )) "$W/mxrlhf_b" baseline --device "$DEVICE" --steps "$STEPS" --output "$R/b" \
  --policy-model "$M/policy" --reward-model "$M/reward" --data "$D/data/hh.jsonl.gz" --pairs 1000 \
  --seed 42 --policy "$D/bf16_policies.json" --plan bf16 --power-source "$POWER" \
  --set max_new_tokens=128 --set min_new_tokens=128 --set eval_prompts=0 --set best_of_n=0 \
  --set checkpoint_every=0 >"$R/b.log" 2>&1
echo "B: rc $?"; rm -rf "$R/b/policy" "$R/b/checkpoints"; grep -E "GiB" "$R/b.log"
PARTS="run2" STEPS=$STEPS bash "$D/ppo_device.sh" "$D" "$OUT" "$(left)" 2>&1 | quiet
python3 - "$R" "$STEPS" <<'PY'
import json, sys
R, n = sys.argv[1], int(sys.argv[2])
for name in ("run1", "b", "run2"):
    try:
        st = json.load(open(f"{R}/{name}/training_stats.json"))["steps"][1:n]
    except OSError:
        print(f"{name}: no training_stats.json"); continue
    t = {k: sum(s[f"time/ppo/{k}"] for s in st) / len(st) for k in ("rollout", "reward_inference", "optimize_step", "total")}
    print(f"{name}: steps 2-{n}, s/step: " + ", ".join(f"{k} {v:.4f}" for k, v in t.items()))
PY
tar -czf "$OUT/ppo_results.tar.gz" -C "$R" . 2>/dev/null
echo "== ab done in $(( $(date +%s) - T0 )) s"
