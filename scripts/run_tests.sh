#!/bin/sh
# Runs every test binary given, then replays each fuzzer's committed corpus.
# Prints one line per binary and a summary whose last lines count the programs and the
# test cases that passed and failed (cmocka's own counts, read from each log), so a reader
# and CI see how many tests ran, not only "all passed"; exits non-zero if anything failed.
# Run from the repository root (tests find ../shared and tests/fixtures from there).
set -u
failed=""
n=0
npass=0
nfail=0
cases_pass=0
cases_fail=0
cases_skip=0
# cmocka prints "[  PASSED  ] N test(s).", "[  FAILED  ] N test(s), listed below:" and
# "[  SKIPPED ] N test(s), listed below:" per group
count_cases() {
  p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
  f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
  k=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
  cases_pass=$((cases_pass + p))
  cases_fail=$((cases_fail + f))
  cases_skip=$((cases_skip + k))
}
start=$(date +%s)
for t in "$@"; do
  n=$((n + 1))
  name=$(basename "$t")
  log="$t.log"
  t0=$(date +%s)
  if "$t" >"$log" 2>&1; then
    echo "PASS  $name ($(( $(date +%s) - t0 ))s)"
    npass=$((npass + 1))
  else
    echo "FAIL  $name  (log: $log)"
    sed 's/^/      /' "$log" | tail -40
    failed="$failed $name"
    nfail=$((nfail + 1))
  fi
  count_cases "$log"
done
# Corpus replay: each fuzz/corpus/<target>/ runs once through build/fuzz/fuzz_<target>.
if [ -n "${FUZZ_DIR:-}" ] && [ -d fuzz/corpus ]; then
  for dir in fuzz/corpus/*/; do
    target=$(basename "$dir")
    bin="$FUZZ_DIR/fuzz_$target"
    n=$((n + 1))
    if [ ! -x "$bin" ]; then
      echo "FAIL  corpus $target (no fuzzer binary $bin)"; failed="$failed corpus-$target"
      nfail=$((nfail + 1)); continue
    fi
    if "$bin" -runs=0 "$dir" >"$bin.replay.log" 2>&1; then
      echo "PASS  corpus $target ($(ls "$dir" | wc -l) inputs)"
      npass=$((npass + 1))
    else
      echo "FAIL  corpus $target (log: $bin.replay.log)"; tail -30 "$bin.replay.log"
      failed="$failed corpus-$target"
      nfail=$((nfail + 1))
    fi
  done
fi
echo "---- $n test programs, $(( $(date +%s) - start ))s"
[ -n "$failed" ] && echo "FAILED:$failed"
echo "test cases: $cases_pass passed, $cases_fail failed, $cases_skip skipped"
echo "programs and corpora: $npass passed, $nfail failed"
[ -z "$failed" ]
