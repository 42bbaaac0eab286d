#!/bin/bash
# ppo_device: the study's baseline on the GPU (issue 10, item 3) and the PPO-step benchmark
# against the PyTorch peer (item 4), in one device call. D is prepared on a CPU machine by
# scripts/peer/ppo_pack.sh. Runs from the repository root on the GPU machine.
#
# Parts (env PARTS, in this order; default "setup run1 peer"):
#   setup   versions; a BPE tokenizer trained on the HH file's chosen dialogues (`mxrlhf
#           tokenize train`, 8192 ids); random Qwen2.5-0.5B-shaped policy (seed 1) and reward
#           model (seed 2, score head) from `mxrlhf init` (bf16 safetensors, as Qwen2.5's)
#   tests   the GPU tests (test_gpu_ops, test_gpu_model: what `make test-gpu` runs)
#   run1    mxrlhf baseline --device cuda --steps $STEPS (default 100) under NVML, the
#           study's settings (batch 8, mini-batch 4, 4 epochs, seed 42, 1000 pairs of the
#           HH file), plan bf16, responses of exactly $RESP tokens (default 128:
#           min_new_tokens = max_new_tokens, random weights say nothing worth stopping for),
#           no evaluations or best-of-n (meaningless on random weights)
#   peer    scripts/peer/ppo_peer.py under `mxrlhf monitor`, replaying steps $PEER_STEPS
#           (default 2-9) of run1's token counts, then ppo_compare.py's table
#   run2    the same baseline again, $STEPS2 steps (default $STEPS), and training_stats.json
#           compared with run1's over the common steps (everything but time/*)
#   sens    the perplexity matrix of the Qwen2.5-0.5B-shaped policy on the GPU (`mxrlhf
#           sensitivity --device cuda`, 4096 tokens of the HH file), run for at most
#           $SENS_S seconds (default 150): its progress lines give the time per cell and
#           the estimate for the whole sweep (random weights: only the timing means anything)
#   calib   the baseline (run1's model and settings) for $CALIB_STEPS steps (default 5) with
#           --calibrate --calibrate-s $CALIB_S (default 10): after training each phase's work
#           is repeated under NVML for that many seconds of steady time; energy.csv and
#           phase_timing.json also go to OUT as calib_energy.csv, calib_phase_timing.json
#   tiny    a 3-step PPO run of a tiny Qwen2 on the CPU and, under compute-sanitizer memcheck,
#           on CUDA (fp32, responses of 12 to 24 tokens, evaluation and best-of-n on):
#           the sampled responses and statistics compared (needs setup's tokenizer)
# Everything goes to OUT/ppo_results.tar.gz (run directories without weights) and the
# console. Usage: ppo_device.sh D OUT [SECONDS]  (each part gets what is left of SECONDS)
set -uo pipefail
D=$(cd "$1" && pwd); OUT=$2; BUDGET=${3:-400}
PARTS=${PARTS:-setup run1 peer}; STEPS=${STEPS:-100}; STEPS2=${STEPS2:-$STEPS}
RESP=${RESP:-128}; PEER_STEPS=${PEER_STEPS:-2-9}
# for a dry run on a CPU machine with a small config: DEVICE=cpu POWER=none CONFIG=file
DEVICE=${DEVICE:-cuda}; POWER=${POWER:-nvml}; CONFIG=${CONFIG:-$D/qwen2.5-0.5b_config.json}
W=/tmp/ppo_work; R=$W/results; M=$W/models
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>&1
mkdir -p "$D/root" "$R" "$M"
tar -xJf "$D/bin.tar.xz" -C "$D"
for f in "$D"/debs/*.deb; do dpkg -x "$f" "$D/root"; done
L=$(cd "$D/root/usr/lib/x86_64-linux-gnu" && pwd)
CUL=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find /usr/local /opt -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
export LD_LIBRARY_PATH="$L:$L/openblas-openmp:$CUL:${LD_LIBRARY_PATH:-}"
export MXRLHF_FIXTURES="$(cd tests/fixtures 2>/dev/null && pwd)"   # the working tree's
export MXRLHF_SHARED="$D/shared" MXRLHF_BIN="$D/bin/mxrlhf" OMP_NUM_THREADS=16 PYTHONUNBUFFERED=1
X="$D/bin/mxrlhf"
summary=()

baseline() { # $1 output dir, $2 steps, then extra options; the log beside it, every 10th step shown
  timeout $(( $(left) - 15 )) "$X" baseline --device "$DEVICE" --steps "$2" --output "$1" \
    --policy-model "$M/policy" --reward-model "$M/reward" --data "$D/data/hh.jsonl.gz" --pairs 1000 \
    --seed 42 --policy "$D/bf16_policies.json" --plan bf16 --power-source "$POWER" \
    --set max_new_tokens=$RESP --set min_new_tokens=$RESP --set eval_prompts=0 --set best_of_n=0 \
    --set checkpoint_every=0 "${@:3}" >"$1.log" 2>&1
  local rc=$?
  grep -vE "^mxrlhf ppo: step [0-9]+/" "$1.log"; grep -E "^mxrlhf ppo: step ([0-9]*0|1)/" "$1.log"
  rm -rf "$1/checkpoints" "$1/policy"   # weights: gigabytes, not needed back
  return $rc
}

for p in $PARTS; do
  s=$(date +%s)
  case $p in
  setup)
    python3 - "$D/data/hh.jsonl.gz" "$W/corpus.jsonl" <<'PY'
import gzip, json, sys
with gzip.open(sys.argv[1], "rt") as f, open(sys.argv[2], "w") as o:
    for line in f:
        o.write(json.dumps({"text": json.loads(line)["chosen"]}) + "\n")
PY
    "$X" tokenize train --corpus "$W/corpus.jsonl" --vocab-size 8192 --out "$W/tokenizer.json" &&
    "$X" init --config "$CONFIG" --seed 1 --output "$M/policy" --tokenizer "$W/tokenizer.json" &&
    "$X" init --config "$CONFIG" --seed 2 --score-head --output "$M/reward" --tokenizer "$W/tokenizer.json"
    rc=$?; du -sh "$M"/* ;;
  tests)
    for t in test_gpu_ops test_gpu_model; do
      timeout $(( $(left) - 20 )) "$D/bin/$t" >"$R/$t.log" 2>&1; rc=$?
      grep -E "^\[  (FAILED|ERROR) \]" "$R/$t.log" | head -20
      summary+=("$t: rc $rc: $(grep -E '^\[  (PASSED|FAILED) ' "$R/$t.log" | tr '\n' ' ')")
    done ;;
  run1) baseline "$R/run1" "$STEPS"; rc=$?; cat "$R/run1/energy.csv" ;;
  calib) baseline "$R/calib" "${CALIB_STEPS:-5}" --calibrate --calibrate-s "${CALIB_S:-10}"; rc=$?
    cat "$R/calib/energy.csv"
    # both files to OUT as well (a run that failed has none: then rc says so)
    if ! cp "$R/calib/energy.csv" "$OUT/calib_energy.csv" ||
       ! cp "$R/calib/phase_timing.json" "$OUT/calib_phase_timing.json"; then
      [ "$rc" = 0 ] && rc=1
    fi ;;
  run2) baseline "$R/run2" "$STEPS2"; rc=$?
    python3 - "$R/run1/training_stats.json" "$R/run2/training_stats.json" <<'PY'
import json, math, sys
a, b = (json.load(open(p))["steps"] for p in sys.argv[1:3])
n = min(len(a), len(b)); eq = tot = 0; worst = (0.0, None)
for s in range(n):
    for k, v in a[s].items():
        if k.startswith("time/"):
            continue
        w = b[s].get(k); tot += 1
        if v == w:
            eq += 1
        elif isinstance(v, (int, float)) and isinstance(w, (int, float)):
            d = abs(v - w) / max(abs(v), abs(w), 1e-12)
            if d > worst[0]:
                worst = (d, (s + 1, k, v, w))
        else:
            worst = (math.inf, (s + 1, k, v, w))
print(f"reproducibility over {n} steps: {eq} of {tot} values identical; largest relative difference {worst[0]:.3g} at {worst[1]}")
PY
    ;;
  peer)
    PD="$R/peer"
    timeout $(( $(left) - 10 )) "$X" monitor --out "$PD" --power-source "$POWER" --idle-s 2 -- \
      python3 "$D/ppo_peer.py" --samples "$R/run1/samples.jsonl" --steps "$PEER_STEPS" \
      --config "$CONFIG" --json "$PD/peer.json"; rc=$?
    [ $rc = 0 ] && python3 "$D/ppo_compare.py" "$R/run1" "$PD" "$PD/peer.json" "$PEER_STEPS" --json "$R/compare.json" ;;
  sens)
    SD=$R/sens; mkdir -p "$SD"
    timeout $(( ${SENS_S:-150} < $(left) - 20 ? ${SENS_S:-150} : $(left) - 20 )) "$X" sensitivity \
      --device cuda --model "$M/policy" --eval "$D/data/hh.jsonl.gz" --output "$SD/sensitivity_matrix.csv" \
      >"$SD/sens.log" 2>&1; rc=$?
    [ $rc = 124 ] && rc=0   # stopped by design: a partial run
    head -5 "$SD/sens.log"; tail -6 "$SD/sens.log"; wc -l "$SD/sensitivity_cells.jsonl" 2>/dev/null ;;
  tiny)
    # the CUDA path of a PPO run (min_new_tokens masking included) against the CPU's, on a
    # tiny Qwen2 (fp32: the sampled ids then agree), the CUDA run under compute-sanitizer
    TD=$W/tiny; mkdir -p "$TD"
    echo '{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 9000, "max_position_embeddings": 1024, "rope_theta": 1000000.0, "tie_word_embeddings": true, "model_type": "qwen2"}' >"$TD/config.json"
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo compute-sanitizer)
    tb() { "$@" baseline --steps 3 --output "$TD/$dev" --policy-model "$TD/policy" --reward-model "$TD/reward" \
        --data "$D/data/hh.jsonl.gz" --pairs 1000 --seed 42 --power-source none --idle-s 0 --device $dev \
        --set max_new_tokens=24 --set min_new_tokens=12 --set eval_prompts=8 --set best_of_n=2 >"$TD/$dev.log" 2>&1; }
    "$X" init --config "$TD/config.json" --seed 1 --output "$TD/policy" --tokenizer "$W/tokenizer.json" >/dev/null &&
    "$X" init --config "$TD/config.json" --seed 2 --score-head --output "$TD/reward" --tokenizer "$W/tokenizer.json" >/dev/null &&
    dev=cpu tb "$X" && dev=cuda tb timeout $(( $(left) - 10 )) "$CS" --tool memcheck --error-exitcode 99 "$X"
    rc=$?; tail -3 "$TD/cuda.log"; cp "$TD"/*.log "$R/" 2>/dev/null
    python3 - "$TD/cpu" "$TD/cuda" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(d + "/samples.jsonl")] for d in sys.argv[1:3])
same = sum(x["response"] == y["response"] and x["tokens"] == y["tokens"] for x, y in zip(a, b))
print(f"tiny PPO, CPU vs CUDA: {same} of {len(a)} sampled responses identical; lengths {sorted({x['tokens'] for x in b})}")
sa, sb = (json.load(open(d + "/training_stats.json"))["steps"] for d in sys.argv[1:3])
w = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-6) for x, y in zip(sa, sb) for k in x
        if not k.startswith("time/") and isinstance(x[k], float) and isinstance(y.get(k), float))
print(f"largest relative difference of a training statistic: {w:.3g}")
PY
    ;;
  *) echo "unknown part $p"; rc=2 ;;
  esac
  summary+=("$p: rc $rc ($(( $(date +%s) - s )) s)")
  echo "== $p: rc $rc ($(( $(date +%s) - s )) s, $(left) s left)"
done
echo "== summary ($(( $(date +%s) - T0 )) s)"
for s in "${summary[@]}"; do echo "$s"; done
tar -czf "$OUT/ppo_results.tar.gz" -C "$R" . 2>/dev/null
ls -la "$OUT"
