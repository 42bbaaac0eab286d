#!/bin/sh
# The tokenizer's one device call: Hugging Face's ids and timings (tok_peer.py) and our
# benchmark binary (tok_device_bench.sh) on the same machine. Prepare DIR with
#   strings.jsonl (tok_make_strings.py), qwen.json (fetch_qwen_tokenizer.sh),
#   harmless-base-test.jsonl.gz, trained/*.json (mxrlhf tokenize train, tok_make_variants.py),
#   tok_peer.py, bin/ (tok_device_bench.sh)
# Usage (on the device, from the repository root): sh DIR/tok_device.sh DIR OUT
set -u
dir=${1:?usage: tok_device.sh DIR OUT}
out=${2:?usage: tok_device.sh DIR OUT}
echo "== machine"
grep -m1 "model name" /proc/cpuinfo || true
nproc
ldd --version 2>&1 | head -1
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true
python3 -c "import sys, tokenizers; print('python', sys.version.split()[0], 'tokenizers', tokenizers.__version__)"
status=0
echo "== our benchmark (before the peer)"
LD_LIBRARY_PATH="$dir/bin/lib" "$dir/bin/tokenizer_bench" "$dir/qwen.json" "$dir/harmless-base-test.jsonl.gz" \
  >"$out/our_bench.txt" 2>&1 || { echo "our benchmark failed"; status=1; }
cat "$out/our_bench.txt"
echo "== Hugging Face tokenizers"
python3 "$dir/tok_peer.py" --dir "$dir" --out "$out" >"$out/peer_stdout.txt" 2>&1 || { echo "tok_peer.py failed"; status=1; }
tail -60 "$out/peer_stdout.txt"
echo "== our benchmark (again, after)"
LD_LIBRARY_PATH="$dir/bin/lib" "$dir/bin/tokenizer_bench" "$dir/qwen.json" "$dir/harmless-base-test.jsonl.gz" \
  >"$out/our_bench2.txt" 2>&1 || status=1
cat "$out/our_bench2.txt"
ls -la "$out"
exit $status
