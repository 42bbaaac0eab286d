#!/bin/sh
# table.sh: the synthesis table of docs/hardware.md from synth.sh's and pnr.sh's files.
#   hw/synth/table.sh OUTDIR > table.md
set -u
d=$1
num() { # the count of cell type $2 in stat file $1 (0 when absent)
  awk -v t="$2" '$1 == t { n = $2 } END { print n + 0 }' "$1"
}
ffs() { awk '$1 ~ /^SB_DFF/ { n += $2 } END { print n + 0 }' "$1"; }
muls() { awk '$1 == "$mul" || $1 == "$macc" { n += $2 } END { print n + 0 }' "$1"; }
gates() { awk '/Number of cells:/ { n = $4 } END { print n + 0 }' "$1"; }
trans() { awk '/Estimated number of transistors:/ { n = $5 } END { sub(/\+$/, "", n); print n + 0 }' "$1"; }
pnr() {
  f="$d/$1.pnr.txt"
  if [ ! -f "$f" ]; then echo "| not run | |"; return; fi
  if grep -q "^fit yes" "$f"; then
    echo "| $(awk '$1 == "lc_used" { print $2 }' "$f") | $(awk '$1 == "fmax_mhz" { print $2 }' "$f") |"
  else
    echo "| does not fit | |"
  fi
}
echo "| design | LUT4 | SB_CARRY | flip-flops | multipliers | SB_MAC16 | generic gates | CMOS transistors (est.) | HX8K logic cells (shell) | Fmax (MHz) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for f in mxfp8_e4m3 mxfp8_e5m2 mxfp6_e3m2 mxfp6_e2m3 mxfp4_e2m1 mxint8; do
  s="$d/pe_$f"
  [ -f "$s.ice40.txt" ] || continue
  echo "| PE $f, k = 32 | $(num $s.ice40.txt SB_LUT4) | $(num $s.ice40.txt SB_CARRY) | $(ffs $s.ice40.txt) | $(muls $s.mul.txt) | $(num $s.ice40.txt SB_MAC16) | $(gates $s.gates.txt) | $(trans $s.gates.txt) $(pnr shell_$f)"
done
s="$d/array_2x2_mxfp4_e2m1"
if [ -f "$s.ice40.txt" ]; then
  echo "| array 2 x 2, mxfp4_e2m1, k = 32 | $(num $s.ice40.txt SB_LUT4) | $(num $s.ice40.txt SB_CARRY) | $(ffs $s.ice40.txt) | $(muls $s.mul.txt) | $(num $s.ice40.txt SB_MAC16) | $(gates $s.gates.txt) | $(trans $s.gates.txt) $(pnr shell_array_2x2_mxfp4_e2m1)"
fi
echo
echo "Tools: $(yosys -V 2>/dev/null | head -1); $(nextpnr-ice40 --version 2>&1 | head -1); device iCE40 HX8K (CT256), seed 1."
