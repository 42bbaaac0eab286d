#!/bin/sh
# table.sh: the synthesis table of docs/hardware.md from synth.sh's and pnr.sh's files.
#   hw/synth/table.sh OUTDIR > table.md       also writes OUTDIR/synthesis.csv, the same
#                                             rows for the report (report/hw_section.h)
set -u
d=$1
csv="$d/synthesis.csv"
tools="$(yosys -V 2>/dev/null | head -1 | sed 's/ (git.*//'); $(nextpnr-ice40 --version 2>&1 | head -1 | sed 's/.*(Version \(.*\))/nextpnr-ice40 \1/')"
echo "design,lut4,carry,ff,multipliers,product_bits,dsp,gates,transistors,fits_hx8k,lc_hx8k,fmax_mhz,tools" > "$csv"
num() { # the count of cell type $2 in stat file $1 (0 when absent)
  awk -v t="$2" '$1 == t { n = $2 } END { print n + 0 }' "$1"
}
ffs() { awk '$1 ~ /^SB_DFF/ { n += $2 } END { print n + 0 }' "$1"; }
muls() { awk '$1 ~ /^\$mul/ { n += $2 } END { print n + 0 }' "$1"; }
mulw() { awk '$1 ~ /^\$mul_/ { w = $1; sub(/^\$mul_/, "", w) } END { print w + 0 }' "$1"; }
gates() { awk '/Number of cells:/ { n = $4 } END { print n + 0 }' "$1"; }
trans() { awk '/Estimated number of transistors:/ { n = $5 } END { sub(/\+$/, "", n); print n + 0 }' "$1"; }
pnr_fit() { f="$d/$1.pnr.txt"; [ -f "$f" ] || { echo "not run"; return; }
  grep -q "^fit yes" "$f" && echo yes || echo no; }
pnr_val() { f="$d/$1.pnr.txt"; [ -f "$f" ] && awk -v k="$2" '$1 == k { print $2 }' "$f"; }
row() { # design label, stat prefix, shell name
  s="$d/$2"
  [ -f "$s.ice40.txt" ] || return 0
  fit=$(pnr_fit "$3"); lc=$(pnr_val "$3" lc_used); fm=$(pnr_val "$3" fmax_mhz)
  set -- "$1" "$(num $s.ice40.txt SB_LUT4)" "$(num $s.ice40.txt SB_CARRY)" "$(ffs $s.ice40.txt)" \
    "$(muls $s.mul.txt)" "$(mulw $s.mul.txt)" "$(num $s.ice40.txt SB_MAC16)" "$(gates $s.gates.txt)" \
    "$(trans $s.gates.txt)"
  if [ "$fit" = yes ]; then shown="$lc | $fm"; elif [ "$fit" = no ]; then shown="does not fit |"; else shown="not run |"; fi
  echo "| $1 | $2 | $3 | $4 | $5 × $6-bit | $7 | $8 | $9 | $shown |"
  echo "\"$1\",$2,$3,$4,$5,$6,$7,$8,$9,$fit,$lc,$fm,\"$tools\"" >> "$csv"
}
echo "| design | LUT4 | SB_CARRY | flip-flops | multipliers (product width) | SB_MAC16 | generic gates | CMOS transistors (est.) | HX8K logic cells (shell) | Fmax (MHz) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for f in mxfp8_e4m3 mxfp8_e5m2 mxfp6_e3m2 mxfp6_e2m3 mxfp4_e2m1 mxint8; do
  row "PE $f, k = 32" "pe_$f" "shell_$f"
done
row "array 2 x 2, mxfp4_e2m1, k = 8" array_2x2_mxfp4_e2m1_k8 shell_array_2x2_mxfp4_e2m1_k8
echo
echo "Tools: $tools; device iCE40 HX8K (CT256), seed 1."
