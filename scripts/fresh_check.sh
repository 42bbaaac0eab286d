#!/bin/sh
# fresh_check: does the README's first command work on a fresh machine?
#
# CI runs on a machine where the Debian packages are already installed, which hides any
# build step that only works once they are there (a Makefile that asked pkg-config before
# scripts/deps.sh had installed anything linked without -l flags on the first try). This
# reproduces a fresh machine on this one:
#   1. removes the project's -dev packages that are installed (zlib1g-dev stays: removing
#      it would take python3-dev, tk-dev and others with it),
#   2. clones COMMIT into a temporary directory and runs `make` there once, as a newcomer
#      would (it must reinstall the packages itself and link on the first try),
#   3. checks that `mxrlhf --help` answers,
#   4. reinstalls whatever it removed, whatever happened (also on failure or interrupt).
# Needs root (CI runs as root) and apt-get's packages (its cache or the network).
# Usage: scripts/fresh_check.sh [COMMIT]    (default HEAD; run from inside the repository)
# Exit: 0 the first build worked, 1 it did not, 2 usage (not root, no such commit).
set -u
commit=${1:-HEAD}
pkgs="libcjson-dev libopenblas-dev libopenblas-openmp-dev libpcre2-dev libutf8proc-dev libcmocka-dev"

if [ "$(id -u)" != 0 ]; then
  echo "fresh_check: needs root: it removes and reinstalls Debian packages" >&2
  exit 2
fi
repo=$(git rev-parse --show-toplevel 2>/dev/null) || { echo "fresh_check: not in a git repository" >&2; exit 2; }
sha=$(git -C "$repo" rev-parse --verify -q "$commit^{commit}") || {
  echo "fresh_check: no commit '$commit'" >&2; exit 2; }

removed=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && removed="$removed $p"
done
tmp=$(mktemp -d /tmp/mxrlhf-fresh.XXXXXX)
restore() {
  if [ -n "$removed" ]; then
    echo "fresh_check: reinstalling$removed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $removed \
      >"$tmp.apt" 2>&1 || {
      apt-get update -q >>"$tmp.apt" 2>&1
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $removed \
        >>"$tmp.apt" 2>&1 || { echo "fresh_check: reinstall FAILED, see $tmp.apt" >&2; return; }
    }
    rm -f "$tmp.apt"
  fi
  rm -rf "$tmp"
}
trap 'restore' EXIT
trap 'exit 130' INT TERM

echo "fresh_check: commit $(git -C "$repo" rev-parse --short "$sha"); removing$removed"
if [ -n "$removed" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get remove -y -q $removed >"$tmp/apt-remove.log" 2>&1 || {
    echo "fresh_check: apt-get remove failed:" >&2; tail -20 "$tmp/apt-remove.log" >&2; exit 1; }
fi
git clone -q --shared --no-checkout "$repo" "$tmp/src" && git -C "$tmp/src" checkout -q "$sha" || {
  echo "fresh_check: cannot clone $repo at $sha" >&2; exit 1; }

t0=$(date +%s)
# FRESH_MAKE_ARGS: extra make arguments (CI passes CUDA=0: the packages and link flags under
# test are the Debian ones; `make test`'s cuda-check compiles and links the CUDA build)
(cd "$tmp/src" && make ${FRESH_MAKE_ARGS:-}) >"$tmp/make.log" 2>&1
rc=$?
echo "fresh_check: first \`make\` exit $rc after $(( $(date +%s) - t0 )) s"
if [ $rc -ne 0 ]; then
  echo "fresh_check: FAIL: the first \`make\` on a fresh machine failed; its last lines:" >&2
  tail -15 "$tmp/make.log" >&2
  exit 1
fi
if ! "$tmp/src/build/rel/mxrlhf" --help >"$tmp/help.txt" 2>&1 || ! grep -q "mxrlhf" "$tmp/help.txt"; then
  echo "fresh_check: FAIL: \`mxrlhf --help\` did not answer:" >&2
  head -5 "$tmp/help.txt" >&2
  exit 1
fi
echo "fresh_check: PASS: the first \`make\` built mxrlhf, which answers --help"
exit 0
