#!/bin/sh
# Runs every test binary given, then replays each fuzzer's committed corpus.
# Prints one line per binary and a summary; exits non-zero if anything failed.
# Run from the repository root (tests find ../shared and tests/fixtures from there).
set -u
failed=""
n=0
start=$(date +%s)
for t in "$@"; do
  n=$((n + 1))
  name=$(basename "$t")
  log="$t.log"
  t0=$(date +%s)
  if "$t" >"$log" 2>&1; then
    echo "PASS  $name ($(( $(date +%s) - t0 ))s)"
  else
    echo "FAIL  $name  (log: $log)"
    sed 's/^/      /' "$log" | tail -40
    failed="$failed $name"
  fi
done
# Corpus replay: each fuzz/corpus/<target>/ runs once through build/fuzz/fuzz_<target>.
if [ -n "${FUZZ_DIR:-}" ] && [ -d fuzz/corpus ]; then
  for dir in fuzz/corpus/*/; do
    target=$(basename "$dir")
    bin="$FUZZ_DIR/fuzz_$target"
    n=$((n + 1))
    if [ ! -x "$bin" ]; then
      echo "FAIL  corpus $target (no fuzzer binary $bin)"; failed="$failed corpus-$target"; continue
    fi
    if "$bin" -runs=0 "$dir" >"$bin.replay.log" 2>&1; then
      echo "PASS  corpus $target ($(ls "$dir" | wc -l) inputs)"
    else
      echo "FAIL  corpus $target (log: $bin.replay.log)"; tail -30 "$bin.replay.log"
      failed="$failed corpus-$target"
    fi
  done
fi
echo "---- $n test programs, $(( $(date +%s) - start ))s"
if [ -n "$failed" ]; then
  echo "FAILED:$failed"
  exit 1
fi
echo "all passed"
