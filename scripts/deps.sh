#!/bin/sh
# Makes sure the Debian packages the build needs are present.
# As root it installs what is missing with apt-get; otherwise it prints the one
# command to run and fails, so the build stops before a confusing compiler error.
# Usage: scripts/deps.sh [extra-package ...]
set -u
pkgs="gcc make pkg-config clang libclang-rt-14-dev zlib1g-dev libcjson-dev libopenblas-dev libopenblas-openmp-dev libpcre2-dev libutf8proc-dev libcmocka-dev $*"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends $missing >/tmp/mxrlhf-apt.log 2>&1; then
    apt-get update -q >>/tmp/mxrlhf-apt.log 2>&1
    apt-get install -y -q --no-install-recommends $missing >>/tmp/mxrlhf-apt.log 2>&1 || {
      echo "deps: apt-get failed; see /tmp/mxrlhf-apt.log" >&2; exit 1; }
  fi
  exit 0
fi
echo "deps: missing Debian packages:$missing" >&2
echo "deps: run:  sudo apt-get install -y$missing" >&2
exit 1
