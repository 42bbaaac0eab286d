#!/bin/bash
# cuda_device: one device call for the CUDA backend (issue 10): GPU tests, the benchmark
# against the PyTorch peer, compute-sanitizer; short summary last.
#
# Runs on the GPU machine from the repository root (tests read tests/fixtures/) with a
# folder D prepared on a CPU machine by scripts/peer/cuda_pack.sh:
#   D/bin.tar.xz  bin/: mxrlhf, test_gpu_ops, test_gpu_model, test_gpu_attn_cudnn, cuda_bench
#               (built there with
#               make NO_DEPS=1 DEPS_PREFIX=... MARCH=x86-64-v3: the GPU machine has no
#               Debian -dev packages, and its CPU is another model)
#   D/debs/     the run-time Debian packages those binaries need (cJSON, OpenBLAS-OpenMP,
#               PCRE2, utf8proc, cmocka, libgfortran, ...), unpacked here with dpkg -x
#   D/shared/mx-golden/mx_golden.bin   (../shared is not on the GPU machine)
#   D/cuda_peer.py
# Usage: cuda_device.sh D OUT [SECONDS]   (the whole run stays within SECONDS, default 230;
#        parts: env var PARTS, default "tests bench peer sanitize"; "compile" adds the
#        torch.compile'd peer training step with whatever time is left; "mxgemm" runs the
#        MX GEMM tests, their SASS check and cuda_mxgemm_bench, issue 17; "attn" (issue 17):
#        where cuDNN is on this machine, test_gpu_attn_cudnn with cuDNN required, and
#        attention alone at 8 x 1024, ours (cuda_bench --attn) and PyTorch's (--attn); "decode" runs only
#        issue 16's decoding: test_gpu_decode, `cuda_bench decode`, the peer's generate,
#        and a table of the targets; "dist" (issue 20): `mxrlhf comm` through NCCL, one
#        rank on one GPU (MXRLHF_DIST_COMM=nccl: the dlopen, driver and staging path), and
#        with --gpus N when the machine has N >= 2 GPUs; docs/distributed.md); "decode_env"
#        runs `cuda_bench decode` again under each assignment of DECODE_ENVS (';'-separated,
#        e.g. MXRLHF_CUDA_PDL=0) for an A/B in the same call; "gemv" runs `cuda_bench
#        gemv` (the step's fused linear ops alone), then under each of DECODE_ENVS (both
#        run the baseline build's bin/cuda_bench_base first where the pack has one); "chain"
#        (issue 18): the embedded default's whole study on this GPU, `mxrlhf run --device
#        cuda` (the GPU preset) into build/chain, kept between calls on a warm machine:
#        call again until it prints "chain complete" (scripts/peer/chain_device.py; give
#        SECONDS 570); "curve" (issue 18): pretraining loss against model size and seconds,
#        three sizes around the GPU preset's)
set -uo pipefail
D=$1; OUT=$2; BUDGET=${3:-230}; PARTS=${PARTS:-tests bench peer sanitize}
# part "tests" runs every test_gpu_* binary of the pack, or those named in $TESTS
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
echo "== versions"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader
nvcc --version 2>/dev/null | tail -1
mkdir -p "$D/root"
tar -xJf "$D/bin.tar.xz" -C "$D"
for f in "$D"/debs/*.deb; do dpkg -x "$f" "$D/root"; done
L=$(cd "$D/root/usr/lib/x86_64-linux-gnu" && pwd)
CUL=$(dirname "$(ls /usr/local/cuda/lib64/libcublasLt.so.13 2>/dev/null || find /usr/local /opt -name 'libcublasLt.so.13' 2>/dev/null | head -1)")
echo "cuBLASLt from $CUL"
export LD_LIBRARY_PATH="$L:$L/openblas-openmp:$CUL:${LD_LIBRARY_PATH:-}"
export MXRLHF_FIXTURES="$(cd tests/fixtures 2>/dev/null && pwd)"   # the working tree's
export MXRLHF_SHARED="$(cd "$D/shared" && pwd)" MXRLHF_BIN="$D/bin/mxrlhf" OMP_NUM_THREADS=16
# cuDNN for the attention (the backend also searches the usual places itself): PyTorch's
# nvidia-cudnn wheel when the toolkit has none
if [ -z "${CUDNN_PATH:-}" ] && [ ! -e /usr/local/cuda/lib64/libcudnn_graph.so.9 ]; then
  CUDNN_PATH=$(python3 -c "import nvidia.cudnn as m; print(list(m.__path__)[0])" 2>/dev/null) && export CUDNN_PATH
fi
echo "cuDNN: ${CUDNN_PATH:-the toolkit's or the loader's}"
summary=()
for p in $PARTS; do
  case $p in
  tests)
    for t in ${TESTS:-$(cd "$D/bin" && ls test_gpu_* | grep -v "\.log$")}; do
      s=$(date +%s)
      timeout $(( $(left) - 20 )) "$D/bin/$t" >"$OUT/$t.log" 2>&1; rc=$?
      grep -E "^\[  (FAILED|ERROR|SKIPPED) \]|max \||worst|plan [FZM]:|GPU:|bit-exact" "$OUT/$t.log" | head -40
      summary+=("$t: rc $rc ($(( $(date +%s) - s )) s): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')")
    done ;;
  bench)
    timeout $(( $(left) - 10 )) "$D/bin/cuda_bench" >"$OUT/bench_ours.log" 2>&1; rc=$?
    cat "$OUT/bench_ours.log" | grep -v cuda_bench_json
    summary+=("cuda_bench: rc $rc") ;;
  peer)
    timeout $(( $(left) - 10 )) python3 "$D/cuda_peer.py" >"$OUT/bench_peer.log" 2>&1; rc=$?
    grep -v "cuda_peer_json" "$OUT/bench_peer.log" | tail -8
    summary+=("cuda_peer: rc $rc") ;;
  sanitize)
    CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo compute-sanitizer)
    : >"$OUT/sanitizer.log"
    # racecheck only on the op tests: they run every kernel with shared memory; the model
    # tests under racecheck take minutes
    for tool in memcheck racecheck; do
      for t in test_gpu_ops test_gpu_model; do
        [ "$tool/$t" = racecheck/test_gpu_model ] && continue
        lim=$(( $(left) / 2 - 5 ))
        if [ "$lim" -lt 15 ]; then summary+=("sanitizer $tool $t: no time left"); continue; fi
        echo "== compute-sanitizer --tool $tool $t (limit $lim s)" >>"$OUT/sanitizer.log"
        MXRLHF_GPU_QUICK=1 timeout "$lim" "$CS" --tool "$tool" --error-exitcode 99 \
          "$D/bin/$t" >>"$OUT/sanitizer.log" 2>&1; rc=$?
        summary+=("sanitizer $tool $t: rc $rc ($(grep -cE '^========= (Invalid|Race|Error|.*hazard)' "$OUT/sanitizer.log") reports so far; $(tail -1 "$OUT/sanitizer.log" | cut -c1-80))")
      done
    done ;;
  mxgemm)
    s=$(date +%s)
    timeout $(( $(left) - 20 )) "$D/bin/test_gpu_mxgemm" >"$OUT/test_gpu_mxgemm.log" 2>&1; rc=$?
    grep -E "^\[  (FAILED|ERROR|SKIPPED) \]|worst|ERROR|relative error" "$OUT/test_gpu_mxgemm.log" | head -30
    summary+=("test_gpu_mxgemm: rc $rc ($(( $(date +%s) - s )) s): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_gpu_mxgemm.log" | tr '\n' ' ')")
    CUO=$(command -v cuobjdump || ls /usr/local/cuda/bin/cuobjdump 2>/dev/null || echo cuobjdump)
    "$CUO" -sass "$D/bin/test_gpu_mxgemm" >"$OUT/mxgemm.sass" 2>&1
    "$CUO" -res-usage "$D/bin/test_gpu_mxgemm" 2>&1 | grep -A1 k_mxg >"$OUT/mxgemm.res" || true
    echo "SASS of the MX GEMM kernels (tensor-core instructions, local memory):"
    awk '/Function : .*k_mxg_gemm/{f=1} /Function : /&&!/k_mxg_gemm/{f=0} f' "$OUT/mxgemm.sass" \
      | grep -oE '(QMMA|HMMA|IMMA|QGMMA|HGMMA|IGMMA)[.A-Z0-9_]*|LDL|STL' | sort | uniq -c
    s=$(date +%s)
    timeout $(( $(left) - 5 )) "$D/bin/cuda_mxgemm_bench" >"$OUT/bench_mxgemm.log" 2>&1; rc=$?
    grep -v cuda_mxgemm_bench_json "$OUT/bench_mxgemm.log"
    summary+=("cuda_mxgemm_bench: rc $rc ($(( $(date +%s) - s )) s)") ;;
  attn)
    echo "== cuDNN on this machine"
    ls /usr/local/cuda/lib64/libcudnn_graph.so.9 2>/dev/null || echo "(none in /usr/local/cuda/lib64)"
    python3 -c "import torch, nvidia.cudnn as m; print('PyTorch', torch.__version__, 'cuDNN', torch.backends.cudnn.version(), 'wheel', list(m.__path__))" 2>&1 | tail -1
    s=$(date +%s)
    MXRLHF_REQUIRE_CUDNN=1 timeout $(( $(left) - 60 )) "$D/bin/test_gpu_attn_cudnn" >"$OUT/test_gpu_attn_cudnn.log" 2>&1; rc=$?
    grep -E "^\[  (FAILED|ERROR|SKIPPED) \]|cuDNN|bf16|fp16|bits|mxrlhf cuda|error|plans" "$OUT/test_gpu_attn_cudnn.log" | head -60
    summary+=("test_gpu_attn_cudnn: rc $rc ($(( $(date +%s) - s )) s): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_gpu_attn_cudnn.log" | tr '\n' ' ')")
    timeout $(( $(left) - 40 )) "$D/bin/cuda_bench" --attn >"$OUT/bench_attn.log" 2>&1; rc=$?
    grep -v cuda_bench_attn_json "$OUT/bench_attn.log"
    summary+=("cuda_bench --attn: rc $rc")
    timeout $(( $(left) - 5 )) python3 "$D/cuda_peer.py" --attn >"$OUT/peer_attn.log" 2>&1; rc=$?
    grep -v cuda_peer_attn_json "$OUT/peer_attn.log" | tail -6
    summary+=("cuda_peer --attn: rc $rc") ;;
  decode)
    s=$(date +%s)
    timeout $(( $(left) / 3 )) "$D/bin/test_gpu_decode" >"$OUT/test_gpu_decode.log" 2>&1; rc=$?
    grep -E "^\[  (FAILED|ERROR|SKIPPED) \]|relative L2|bit-exact|agree|within|log-probs|ERROR|Failure" \
      "$OUT/test_gpu_decode.log" | head -60
    summary+=("test_gpu_decode: rc $rc ($(( $(date +%s) - s )) s): $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/test_gpu_decode.log" | tr '\n' ' ')")
    timeout $(( $(left) - 60 )) "$D/bin/cuda_bench" decode >"$OUT/bench_decode.log" 2>&1; rc=$?
    grep -v cuda_bench_decode_json "$OUT/bench_decode.log"
    summary+=("cuda_bench decode: rc $rc")
    timeout $(( $(left) - 5 )) python3 "$D/cuda_peer.py" --decode-only >"$OUT/peer_decode.log" 2>&1; rc=$?
    grep -v cuda_peer_decode_json "$OUT/peer_decode.log" | tail -4
    summary+=("cuda_peer decode: rc $rc")
    ;;
  decode_env|gemv)
    # decode_env: the decoding benchmark again under each of DECODE_ENVS (';'-separated
    # assignments, e.g. "MXRLHF_CUDA_PDL=0"), for A/B comparisons in the same call;
    # gemv: `cuda_bench gemv` (the step's linear ops alone) as it is, then under each of them.
    # Where the pack has bin/cuda_bench_base (cuda_pack.sh's BASE_PACK: an older build's
    # cuda_bench), it runs first, under BASE_ENV, as the same call's baseline: logs
    # bench_${what}_base.log.
    i=0; what=decode; envs=()
    [ "$p" = gemv ] && what=gemv && envs=("")
    if [ -x "$D/bin/cuda_bench_base" ]; then
      echo "== the baseline build's cuda_bench $what${BASE_ENV:+ with $BASE_ENV}"
      env ${BASE_ENV:-} timeout $(( $(left) - 10 )) "$D/bin/cuda_bench_base" $what >"$OUT/bench_${what}_base.log" 2>&1; rc=$?
      grep -v cuda_bench_decode_json "$OUT/bench_${what}_base.log" | head -${HEAD_LINES:-100}
      summary+=("baseline build's cuda_bench $what: rc $rc")
    fi
    IFS=';' read -ra more <<<"${DECODE_ENVS:-}"
    for ev in "${envs[@]}" "${more[@]}"; do
      i=$((i + 1))
      echo "== cuda_bench $what${ev:+ with $ev}"
      env $ev timeout $(( $(left) - 10 )) "$D/bin/cuda_bench" $what >"$OUT/bench_${what}_env$i.log" 2>&1; rc=$?
      grep -v cuda_bench_decode_json "$OUT/bench_${what}_env$i.log" | head -${HEAD_LINES:-100}
      summary+=("cuda_bench $what${ev:+ with $ev}: rc $rc")
    done ;;
  ncu)
    # Nsight Compute on kernels of the pack's programs: NCU_RUNS holds runs separated by ';',
    # each "ncu options | program and its arguments" (" | " with its blanks separates them, so a
    # --kernel-name regex may hold "|"; the program from D/bin), e.g.
    # NCU_RUNS="--kernel-name regex:k_dec_gemv --launch-skip 80000 --launch-count 4 | cuda_bench decode"
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || echo ncu)
    # stop the program once its kernels are profiled (ncu prints its report at the end)
    KILL=$("$NCU" --help 2>&1 | grep -q -- '--kill' && echo "--kill yes")
    i=0
    IFS=';' read -ra runs <<<"${NCU_RUNS:-}"
    for r in "${runs[@]}"; do
      i=$((i + 1)); opts=${r%% | *}; cmd=${r#* | }; cmd=${cmd#"${cmd%%[![:space:]]*}"}
      lim=$(( $(left) / (${#runs[@]} - i + 1) - 5 ))
      echo "== ncu run $i ($lim s): $opts | $cmd"
      timeout "$lim" "$NCU" --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats \
        --section InstructionStats $KILL $opts "$D/bin/"$cmd >"$OUT/ncu_$i.log" 2>&1; rc=$?
      grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Grid Size|Block Size|Issue Slots Busy|No Eligible|Stall|Theoretical Occupancy|Waves Per SM|L1/TEX Hit|Executed Ipc" "$OUT/ncu_$i.log" | head -80
      summary+=("ncu run $i: rc $rc")
    done ;;
  dist)
    NCCLD=$(dirname "$(ldconfig -p | grep -m1 'libnccl.so.2 ' | awk '{print $NF}')" 2>/dev/null)
    [ -e "$NCCLD/libnccl.so.2" ] || NCCLD=$(dirname "$(find /usr/local /opt /usr/lib -name libnccl.so.2 2>/dev/null | head -1)")
    [ -e "$NCCLD/libnccl.so.2" ] || NCCLD=$(python3 -c "import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], 'lib'))" 2>/dev/null)
    echo "NCCL from ${NCCLD:-nowhere}"
    NG=$(nvidia-smi -L | wc -l)
    LD_LIBRARY_PATH="$NCCLD:$LD_LIBRARY_PATH" MXRLHF_DIST_COMM=nccl timeout $(( $(left) - 10 )) \
      "$D/bin/mxrlhf" comm --device cuda --output "$OUT/comm_nccl1" >"$OUT/comm_nccl1.log" 2>&1; rc=$?
    cat "$OUT/comm_nccl1.log"
    summary+=("comm nccl 1 rank: rc $rc, wrong values $(awk '$1 ~ /^[0-9]/ {w += $5} END {print w+0}' "$OUT/comm_nccl1.log")")
    if [ "$NG" -ge 2 ]; then
      LD_LIBRARY_PATH="$NCCLD:$LD_LIBRARY_PATH" timeout $(( $(left) - 10 )) \
        "$D/bin/mxrlhf" comm --gpus "$NG" --device cuda --output "$OUT/comm_nccl$NG" >"$OUT/comm_nccl$NG.log" 2>&1; rc=$?
      cat "$OUT/comm_nccl$NG.log"
      summary+=("comm nccl $NG ranks: rc $rc, busbw at 64 MiB $(awk '$1 == 67108864 {print $4}' "$OUT/comm_nccl$NG.log") GB/s")
    else
      summary+=("comm nccl with several ranks: not run ($NG GPU on this machine)")
    fi ;;
  chain|curve)
    # issue 18 (docs/rlhf.md, "The GPU preset"): the run, its files to $OUT/chain/ and the
    # stage times and quality figures (chain), or the size curve (curve); CHAIN_STOP,
    # CHAIN_ARGS, CURVE_TOKENS: see chain_device.py
    python3 scripts/peer/chain_device.py "$p" "$D/bin/mxrlhf" "$OUT" "$(( $(left) - 5 ))"; rc=$?
    summary+=("$p: rc $rc") ;;
  compile)
    lim=$(( $(left) - 5 ))
    if [ "$lim" -lt 30 ]; then summary+=("peer torch.compile: no time left"); continue; fi
    timeout "$lim" python3 "$D/cuda_peer.py" --compile-only >"$OUT/bench_peer_compile.log" 2>&1; rc=$?
    summary+=("peer torch.compile: rc $rc: $(grep -E '^training' "$OUT/bench_peer_compile.log" | tail -1)") ;;
  esac
done
echo "== summary ($(( $(date +%s) - T0 )) s)"
for s in "${summary[@]}"; do echo "$s"; done
python3 - "$OUT" <<'PY'
import json, sys, os
o = sys.argv[1]
def js(name, key):
    try:
        for line in open(os.path.join(o, name)):
            if line.startswith(key):
                return json.loads(line[len(key):])
    except OSError:
        pass
    return None
a, b = js("bench_ours.log", "cuda_bench_json "), js("bench_peer.log", "cuda_peer_json ")
if a and b:
    G = 2**30
    print(f"{'':28s} {'mxrlhf cuda':>14s} {'PyTorch eager':>14s} {'ratio':>7s}")
    print(f"{'train tokens/s (8x1024)':28s} {a['train_tokens_per_s']:14.0f} {b['train_tokens_per_s']:14.0f} {a['train_tokens_per_s']/b['train_tokens_per_s']:7.2f}")
    print(f"{'train peak GiB (ours/alloc)':28s} {a['train_peak_bytes']/G:14.2f} {b['train_peak_alloc_bytes']/G:14.2f} {a['train_peak_bytes']/b['train_peak_alloc_bytes']:7.2f}")
    print(f"{'  (PyTorch reserved)':28s} {'':14s} {b['train_peak_reserved_bytes']/G:14.2f}")
    print(f"{'decode new tokens/s (8x128)':28s} {a['decode_tokens_per_s']:14.0f} {b['decode_tokens_per_s']:14.0f} {a['decode_tokens_per_s']/b['decode_tokens_per_s']:7.2f}")
    print(f"{'decode peak GiB':28s} {a['decode_peak_bytes']/G:14.2f} {b['decode_peak_alloc_bytes']/G:14.2f}")
    print(f"card: {a['device']} / {b['device']}; copy {a['copy_gbs']:.0f} GB/s, bf16 GEMM {a['gemm_tflops']:.0f} TFLOP/s")
# attention alone, 8 x 1024 (issue 17): ours from cuda_bench --attn (or the full bench), the peer's from --attn
a = js("bench_attn.log", "cuda_bench_attn_json ") or js("bench_ours.log", "cuda_bench_attn_json ")
b = js("peer_attn.log", "cuda_peer_attn_json ")
if a:
    f = a["gflop_fwd"] + a["gflop_bwd"]
    rows = [("ours, bf16 tiles", a.get("tiles_fwd_bwd_ms", 0)), ("ours, cuDNN (deterministic)", a.get("cudnn_fwd_bwd_ms", 0)),
            ("  cuDNN's kernels alone", a.get("cudnn_kernel_fwd_ms", 0) + a.get("cudnn_kernel_bwd_ms", 0)),
            ("ours, cuDNN (non-deterministic)", a.get("cudnn_nondet_fwd_bwd_ms", 0))]
    if b:
        rows += [("PyTorch SDPA flash", b.get("flash_fwd_bwd_ms", 0)), ("PyTorch SDPA cuDNN", b.get("cudnn_fwd_bwd_ms", 0))]
    print(f"attention fwd+bwd, 8 x 1024, 14/2 heads, D 64, causal ({f:.1f} GFLOP; target >= 300 TFLOP/s):")
    for n, ms in rows:
        if ms > 0:
            print(f"  {n:34s} {ms:8.3f} ms {f / ms:6.0f} TFLOP/s")
dd, dp = js("bench_decode.log", "cuda_bench_decode_json "), js("peer_decode.log", "cuda_peer_decode_json ")
if dd:
    g = dd["copy_gbs"] * 1e9
    print(f"decode (issue 16), card {dd['device']}, copy {dd['copy_gbs']:.0f} GB/s; {dd.get('graph_note') or 'graphs recorded'}")
    for B in (8, 32):
        t = dd[f"step_bf16_b{B}_s"]
        fl = dd["weight_bytes_bf16"] / g
        print(f"bf16 step batch {B}: {t*1e3:.3f} ms = {t/fl:.2f} x its weight bytes at the copy ceiling "
              f"(target {'1.5' if B == 8 else '2'} x)")
    for f, tgt in (("mxfp4", 0.45), ("mxfp8", 0.65)):
        print(f"{f} step / bf16 step, batch 8: {dd[f'step_{f}_b8_s'] / dd['step_bf16_b8_s']:.3f} (target <= {tgt})")
    print(f"batch 32 new tokens/s (bf16): {dd['b32_bf16_tokens_per_s']:.0f} (target >= 40000); mxfp4 {dd['b32_mxfp4_tokens_per_s']:.0f}")
    if dp:
        r = dd['rollout_tokens_per_s'] / dp['rollout_tokens_per_s']
        print(f"rollout 8 x (128 + 128): ours {dd['rollout_tokens_per_s']:.0f} new tokens/s, transformers "
              f"{dp['rollout_tokens_per_s']:.0f}: {r:.1f} x (target >= 25 x); batch 32: "
              f"{dd['b32_bf16_tokens_per_s'] / dp['b32_tokens_per_s']:.1f} x")
PY
