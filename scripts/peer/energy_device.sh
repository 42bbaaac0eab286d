#!/bin/bash
# energy_device: the GPU validation of src/energy (docs/benchmarks.md, "Energy measurement").
# Runs on the device machine from a folder D holding src/, scripts/, bench/ and the
# Debian packages of cJSON (debs/): builds mxrlhf there, then
#   (a) NVML source: card, driver, bus id against CUDA's; read costs; sampler overhead
#       on a CPU loop (bench) and on a PyTorch matmul loop (with and without monitor)
#   (b) a bursty load (200 ms on / 200 ms off for 30 s, after steady references)
#   (c) study-like phases of seconds each
# comparing the monitor with NVML's counter read by the workload itself.
# Usage: energy_device.sh D OUT [PART...]   parts: devices overhead bursty20 bursty5 phases (default all)
set -euo pipefail
D=$1; OUT=$2; shift 2; PARTS=${*:-devices overhead bursty20 phases}; R=/tmp/energy_res; rm -rf "$R"; mkdir -p "$R"
echo "== versions"; gcc --version | head -1; python3 -c 'import torch; print("torch", torch.__version__)'
nvidia-smi --query-gpu=name,driver_version,pci.bus_id,power.limit --format=csv
mkdir -p "$D/root"; for f in "$D"/debs/*.deb; do dpkg -x "$f" "$D/root"; done
LIB=$(cd "$D/root/usr/lib/x86_64-linux-gnu" && pwd)
CF="-std=c11 -D_GNU_SOURCE -O2 -Wall -I$D/src -I$D/root/usr/include/cjson"
LF="-L$LIB -Wl,-rpath,$LIB -lcjson -ldl -lpthread -lm"
gcc $CF "$D"/src/util/*.c "$D"/src/energy/*.c "$D"/src/cli/*.c -o "$D/mxrlhf" $LF
gcc $CF "$D"/src/util/*.c "$D"/src/energy/*.c "$D/bench/energy_sampler.c" -o "$D/energy_sampler" $LF
M="$D/mxrlhf"; W="python3 $D/scripts/peer/energy_workload.py"; C="python3 $D/scripts/peer/energy_compare.py"
export PYTHONUNBUFFERED=1
part_devices() {
echo "== (a) devices"; $M monitor --out "$R/devices" --power-source auto --idle-s 1 -- $W devices "$R/devices/cuda.json"
python3 - "$R/devices" <<'PY'
import json, sys
d = sys.argv[1]; pt = json.load(open(d + "/phase_timing.json")); cu = json.load(open(d + "/cuda.json"))
dev = pt["source"]["devices"][0]
norm = lambda b: tuple(int(x, 16) for x in b.replace(".", ":").split(":"))
print("NVML:", dev["name"], dev["bus_id"], "driver", pt["source"]["driver"], "| CUDA:", cu["cuda_name"], cu["cuda_bus_id"],
      "| bus ids match:", norm(dev["bus_id"]) == norm(cu["cuda_bus_id"]))
print("power method:", dev["power_method"], "| counter:", dev["has_counter"])
PY
}
part_overhead() {
echo "== (a) read costs and CPU-loop overhead"; "$D/energy_sampler" nvml
echo "== (a) GPU matmul loop overhead (4 s each: none, monitor, monitor at 5 ms with counter, none)"
$W overhead 4 "$R/ovh_none_1.json" >/dev/null
$M monitor --out "$R/ovh_mon" --power-source nvml --idle-s 0 -- $W overhead 4 "$R/ovh_mon.json" >/dev/null 2>&1
$M monitor --out "$R/ovh_fast" --power-source nvml --idle-s 0 --interval-ms 5 --counter-interval-ms 5 -- $W overhead 4 "$R/ovh_fast.json" >/dev/null 2>&1
$W overhead 4 "$R/ovh_none_2.json" >/dev/null
python3 - "$R" <<'PY'
import json, sys
r = sys.argv[1]
for cfg in ("none_1", "mon", "fast", "none_2"):
    print(f"{cfg:7s} {json.load(open(f'{r}/ovh_{cfg}.json'))['tflops']:.1f} TFLOP/s")
for cfg in ("mon", "fast"):
    s = json.load(open(f"{r}/ovh_{cfg}/phase_timing.json"))["sampling"]
    print(cfg, {k: s[k] for k in ("interval_s", "counter_interval_s", "ticks", "late_ticks", "power_read_mean_us", "counter_read_mean_ms", "counter_read_max_ms")})
PY
}
part_bursty() {
echo "== (b) bursty, sampling every ${1} ms"; O="$R/bursty_${1}ms"; mkdir -p "$O"
$M monitor --out "$O" --power-source nvml --idle-s 2 --interval-ms "$1" -- $W bursty 30 0.2 0.2 "$O/ref.json" >/dev/null 2>"$O.log" || { cat "$O.log"; exit 1; }
tail -12 "$O.log"; $C "$O" "$O/ref.json"
}
part_phases() {
echo "== (c) phases"; $M monitor --out "$R/phases" --power-source nvml --idle-s 2 -- $W phases 3 "$R/phases/ref.json" >/dev/null 2>"$R/phases.log" || { cat "$R/phases.log"; exit 1; }
tail -12 "$R/phases.log"; $C "$R/phases" "$R/phases/ref.json"
"$M" energy --results "$R/phases" --out "$R/phases_again" >/dev/null && cmp "$R/phases/energy.csv" "$R/phases_again/energy.csv" && echo "mxrlhf energy recomputes energy.csv identically"
}
for p in $PARTS; do
  case $p in
    devices) part_devices ;; overhead) part_overhead ;; bursty20) part_bursty 20 ;;
    bursty5) part_bursty 5 ;; phases) part_phases ;; *) echo "unknown part $p"; exit 2 ;;
  esac
done
tar czf "$OUT/energy_results.tar.gz" -C "$R" .
