#!/bin/bash
# ppo_pack: prepares, on a CPU machine with nvcc and apt, the folder that
# scripts/peer/ppo_device.sh runs on the GPU machine: what scripts/peer/cuda_pack.sh packs
# (binaries built for the GPU machine, run-time Debian packages, the MX golden file), plus
# the HH-RLHF file the baseline draws its 1000 pairs from, the PPO peer and comparison
# scripts, scripts/mxrlhf_phase.py, Qwen2.5-0.5B's config.json and the bf16 plan.
# Usage: scripts/peer/ppo_pack.sh DEST [SHARED_DIR]   (run from the repository root)
#        HH file: $HH_FILE, default SHARED_DIR/data/hh-rlhf/harmless-base-test.jsonl.gz
set -euo pipefail
DEST=$1; SHARED=${2:-../shared}
HH=${HH_FILE:-$SHARED/data/hh-rlhf/harmless-base-test.jsonl.gz}
scripts/peer/cuda_pack.sh "$DEST" "$SHARED"
mkdir -p "$DEST/data"
cp "$HH" "$DEST/data/hh.jsonl.gz"
cp scripts/peer/ppo_device.sh scripts/peer/ppo_peer.py scripts/peer/ppo_compare.py \
   scripts/peer/qwen2.5-0.5b_config.json scripts/peer/bf16_policies.json scripts/mxrlhf_phase.py \
   "$DEST/"
du -sh "$DEST"
