#!/bin/bash
# study_device: steps 2 and 3 of the study on the GPU with the Qwen2.5-0.5B-shaped random
# models of ppo_device.sh's setup part (run that part first, in the same call or on the same
# warm machine): the whole perplexity matrix (`mxrlhf sensitivity --device cuda`, every
# layer x 6 formats x blocks 8/16/32, 4096 tokens of the HH file), the policies derived from
# it, and `mxrlhf compare --device cuda` under NVML. Random weights: perplexities, rewards
# and win rates mean nothing here; the timings and the energies are real.
# Parts (env PARTS, default "sens policies"): sens, policies, compare.
# compare with REFERENCE=bf16: the derived policies plus bf16_policies.json's plan as "bf16"
# (the reference the unquantized runs use: the study's GPU baseline is bf16 autocast) and
# again as "bf16_control" (the control plan, which must reproduce the reference);
# CALIB_S=S calibrates each run's phases for S seconds (compare.calibrate_s).
# Each part's outputs are copied to OUT as soon as it ends (a call cut short keeps them).
# Usage: study_device.sh D OUT [SECONDS]   (D as for ppo_device.sh)
set -uo pipefail
D=$(cd "$1" && pwd); OUT=$2; BUDGET=${3:-500}
PARTS=${PARTS:-sens policies}
W=/tmp/ppo_work; R=$W/study; M=$W/models
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
mkdir -p "$R"
L=$(cd "$D/root/usr/lib/x86_64-linux-gnu" && pwd)
CUL=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find /usr/local /opt -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$L:$L/openblas-openmp:$CUL:${LD_LIBRARY_PATH:-}" OMP_NUM_THREADS=16
X="$D/bin/mxrlhf"; HH="$D/data/hh.jsonl.gz"
[ -d "$M/judge" ] || "$X" init --config "$D/qwen2.5-0.5b_config.json" --seed 3 --score-head \
  --output "$M/judge" --tokenizer "$W/tokenizer.json" >/dev/null
for p in $PARTS; do
  s=$(date +%s)
  case $p in
  sens)
    timeout $(( $(left) - 10 )) "$X" sensitivity --device cuda --model "$M/policy" --eval "$HH" \
      --output "$R/sensitivity_matrix.csv" --resume >"$R/sens.log" 2>&1; rc=$?
    tail -4 "$R/sens.log"
    cp "$R"/sensitivity_matrix.csv "$R"/sensitivity_summary.csv "$R"/sensitivity_metrics.json "$R/sens.log" "$OUT/" 2>/dev/null ;;
  policies)
    timeout $(( $(left) - 10 )) "$X" policies --device cuda --sensitivity "$R/sensitivity_matrix.csv" \
      --model "$M/policy" --eval "$HH" --output "$R/policies.json" >"$R/policies.log" 2>&1; rc=$?
    tail -12 "$R/policies.log"; cp "$R/policies.json" "$R/policies.log" "$OUT/" 2>/dev/null ;;
  compare)
    POL=${POLICIES:-$R/policies.json}; REF=()
    if [ -n "${REFERENCE:-}" ]; then
      python3 - "$POL" "$D/bf16_policies.json" "$R/policies_ref.json" <<'PY'
import json, sys
pol, ref = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
plan = ref["plans"]["bf16"]
pol["plans"]["bf16"] = plan
pol["plans"]["bf16_control"] = dict(plan, description="control: " + plan.get("description", "bf16"))
json.dump(pol, open(sys.argv[3], "w"), indent=1)
PY
      POL=$R/policies_ref.json
      REF=(--reference "$REFERENCE" --plans "${REFERENCE}_control,A,B,C,D" --control "${REFERENCE}_control")
    fi
    timeout $(( $(left) - 10 )) "$X" compare --device cuda --policies "$POL" --output "$R/compare" \
      --policy-model "$M/policy" --reward-model "$M/reward" --judge-model "$M/judge" --data "$HH" \
      --pairs 1000 --seeds ${SEEDS:-2} --steps ${STEPS:-8} --power-source nvml \
      --set ppo.max_new_tokens=${RESP:-64} --set ppo.min_new_tokens=${RESP:-64} \
      --set ppo.checkpoint_every=0 --set ppo.best_of_n=0 --calibrate-s ${CALIB_S:-0} "${REF[@]}" \
      >"$R/compare.log" 2>&1; rc=$?
    grep -v "mxrlhf ppo: step" "$R/compare.log" | tail -25
    (cd "$R/compare" && cp policy_comparison.csv compare_runs.csv comparison.json "$OUT/" 2>/dev/null)
    cp "$R/compare.log" "$OUT/" ;;
  *) echo "unknown part $p"; rc=2 ;;
  esac
  echo "== $p: rc $rc ($(( $(date +%s) - s )) s, $(left) s left)"
done
