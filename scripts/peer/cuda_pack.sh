#!/bin/bash
# cuda_pack: prepares, on a CPU machine with nvcc and apt, the folder that
# scripts/peer/cuda_device.sh runs on the GPU machine (which has CUDA, PyTorch and
# transformers, but no network and no Debian -dev packages):
#   - downloads the Debian packages the build and the binaries need (apt-get download),
#     unpacks them into a prefix and builds there with the Makefile's overrides
#     (make NO_DEPS=1 DEPS_PREFIX=prefix MARCH=x86-64-v3: the GPU machine's CPU differs);
#   - puts the binaries (debug info stripped, as bin.tar.gz: the device call carries at
#     most 64 MiB), the run-time packages, the MX golden file, the test fixtures the GPU
#     tests read (DEST/fixtures) and the PyTorch peer script into DEST.
# Usage: scripts/peer/cuda_pack.sh DEST [SHARED_DIR]   (run from the repository root)
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
make -j"${JOBS:-2}" NO_DEPS=1 DEPS_PREFIX="$B/depsroot" MARCH=x86-64-v3 BUILD="$B" \
  "$B/rel/mxrlhf" "$B/rel/tests/gpu/test_gpu_ops" "$B/rel/tests/gpu/test_gpu_model" \
  "$B/rel/bench/cuda_bench" "$B/rel/tests/gpu/test_gpu_mxgemm" "$B/rel/bench/cuda_mxgemm_bench" \
  "$B/rel/tests/gpu/test_gpu_attn_cudnn"
for f in rel/mxrlhf rel/tests/gpu/test_gpu_ops rel/tests/gpu/test_gpu_model rel/bench/cuda_bench \
         rel/tests/gpu/test_gpu_mxgemm rel/bench/cuda_mxgemm_bench rel/tests/gpu/test_gpu_attn_cudnn; do
  cp "$B/$f" "$B/bin/" && strip --strip-debug "$B/bin/$(basename "$f")"
done
tar -czf "$DEST/bin.tar.gz" -C "$B" bin
cp "$SHARED/mx-golden/mx_golden.bin" "$DEST/shared/mx-golden/"
# the fixtures the GPU tests read (they find them through $MXRLHF_FIXTURES, set by the
# device scripts, from whatever directory they run in)
rm -rf "$DEST/fixtures" && mkdir -p "$DEST/fixtures" && cp -r tests/fixtures/model tests/fixtures/mx "$DEST/fixtures/"
cp scripts/peer/cuda_peer.py scripts/peer/cuda_device.sh "$DEST/"
du -sh "$DEST"
