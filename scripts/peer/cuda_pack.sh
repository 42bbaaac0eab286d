#!/bin/bash
# cuda_pack: prepares, on a CPU machine with nvcc and apt, the folder that
# scripts/peer/cuda_device.sh runs on the GPU machine (which has CUDA, PyTorch and
# transformers, but no network and no Debian -dev packages):
#   - downloads the Debian packages the build and the binaries need (apt-get download),
#     unpacks them into a prefix and builds there with the Makefile's overrides
#     (make NO_DEPS=1 DEPS_PREFIX=prefix MARCH=x86-64-v3: the GPU machine's CPU differs);
#   - puts the binaries (debug info stripped, as bin.tar.xz: the device call carries at
#     most 64 MiB, working tree included), the run-time packages, the MX golden file and the
#     PyTorch peer script into DEST.
# Usage: scripts/peer/cuda_pack.sh DEST [SHARED_DIR]   (run from the repository root)
#        BASE_PACK=OLD/bin.tar.xz adds OLD's cuda_bench as bin/cuda_bench_base: the baseline
#        that cuda_device.sh's parts gemv and decode_env run in the same call, for an A/B of
#        two builds on one card.
set -euo pipefail
DEST=$1; SHARED=${2:-../shared}
B=${BUILD_DEV:-build/dev}
RUNTIME="libcjson1 libopenblas0-openmp libpcre2-8-0 libutf8proc2 libcmocka0 libgfortran5 libquadmath0 libgomp1"
DEV="libcjson-dev libopenblas-openmp-dev libopenblas-dev libpcre2-dev libutf8proc-dev libcmocka-dev zlib1g-dev"
mkdir -p "$DEST/debs" "$B/bin" "$DEST/shared/mx-golden" "$B/debs" "$B/depsroot"
rm -f "$DEST"/debs/*.deb
(cd "$DEST/debs" && apt-get download $RUNTIME >/dev/null)
(cd "$B/debs" && apt-get download $DEV >/dev/null)
for f in "$DEST"/debs/*.deb "$B"/debs/*.deb; do dpkg -x "$f" "$B/depsroot"; done
# every GPU test (tests/gpu/test_gpu_*.c) and CUDA benchmark (bench/cuda_*.c)
GPU_BINS="$(ls tests/gpu/test_gpu_*.c bench/cuda_*.c | sed -e 's#^tests/gpu/\(.*\)\.c$#rel/tests/gpu/\1#' \
  -e 's#^bench/\(.*\)\.c$#rel/bench/\1#' | tr '\n' ' ')"
make -j"${JOBS:-2}" NO_DEPS=1 DEPS_PREFIX="$B/depsroot" MARCH=x86-64-v3 BUILD="$B" \
  "$B/rel/mxrlhf" $(for f in $GPU_BINS; do echo "$B/$f"; done)
for f in rel/mxrlhf $GPU_BINS; do
  cp "$B/$f" "$B/bin/" && strip --strip-debug "$B/bin/$(basename "$f")"
done
rm -f "$B/bin/cuda_bench_base"
if [ -n "${BASE_PACK:-}" ]; then
  tar -xJf "$BASE_PACK" -O bin/cuda_bench >"$B/bin/cuda_bench_base" && chmod +x "$B/bin/cuda_bench_base"
fi
rm -f "$DEST/bin.tar.gz"
tar -cf - -C "$B" bin | xz -T1 -9 >"$DEST/bin.tar.xz"   # one thread, 64 MiB window: the binaries share most bytes (7 MB, not 43); a call carries at most 64 MiB
cp "$SHARED/mx-golden/mx_golden.bin" "$DEST/shared/mx-golden/"
# The fixtures the GPU tests read travel with the working tree (tests/fixtures); the device
# scripts point $MXRLHF_FIXTURES at them, so the tests find them from any directory.
rm -rf "$DEST/fixtures"
cp scripts/peer/cuda_peer.py scripts/peer/cuda_device.sh "$DEST/"
du -sh "$DEST"
