#!/bin/sh
# Builds bench/tokenizer_bench as a binary that runs on the device machine (which has no
# PCRE2/utf8proc/cJSON packages): PCRE2, utf8proc and zlib linked statically, cJSON's
# shared library copied beside it, generic x86-64-v2 code. Output: DIR/tokenizer_bench and
# DIR/lib/. Run there as: LD_LIBRARY_PATH=DIR/lib DIR/tokenizer_bench TOKENIZER HH.gz
# Usage: scripts/peer/tok_device_bench.sh DIR
set -eu
out=${1:?usage: tok_device_bench.sh DIR}
mkdir -p "$out/lib"
libdir=/usr/lib/x86_64-linux-gnu
gcc -std=c11 -D_GNU_SOURCE -O3 -march=x86-64-v2 -Isrc $(pkg-config --cflags libcjson libpcre2-8 libutf8proc) \
  bench/tokenizer_bench.c src/tokenizer/*.c src/util/err.c src/util/fs.c src/util/json.c src/util/atomic_file.c \
  -o "$out/tokenizer_bench" \
  -Wl,-Bstatic -lpcre2-8 -lutf8proc -lz -Wl,-Bdynamic -lcjson -lm
cp -L "$libdir/libcjson.so.1" "$out/lib/"
echo "built $out/tokenizer_bench; needs glibc $(objdump -T "$out/tokenizer_bench" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k2 -n | tail -1)"
