#!/bin/sh
# pnr.sh: place and route a synthesized shell on an iCE40 HX8K (CT256 package, 7,680 logic
# cells, no DSP blocks) with nextpnr-ice40, and report the clock's Fmax.
#   hw/synth/pnr.sh OUTDIR NAME [CORE]    reads OUTDIR/NAME.ice40.json
# Writes OUTDIR/NAME.pnr.log and OUTDIR/NAME.pnr.txt: "fit yes", "fmax_mhz X", "lc_used X";
# or "fit no" and why. With CORE (the design inside the shell, e.g. pe_mxfp8_e5m2), a core
# whose own LUT4 count (CORE.ice40.txt) already exceeds the device is reported as not
# fitting without synthesizing its shell (the caller skips that; see hw.mk).
# The target frequency is 12 MHz (the HX8K boards' oscillator); the reported Fmax is what
# the router's timing analysis achieved. Seed 1, so reruns agree.
set -u
out=$1; name=$2
log="$out/$name.pnr.log"; txt="$out/$name.pnr.txt"
if nextpnr-ice40 --hx8k --package ct256 --json "$out/$name.ice40.json" --pcf-allow-unconstrained \
     --freq 12 --seed 1 --log "$log" -q >/dev/null 2>&1; then
  fmax=$(grep "Max frequency for clock" "$log" | tail -1 | sed 's/.*: \([0-9.]*\) MHz.*/\1/')
  lc=$(grep -A3 "Device utilisation" "$log" | grep ICESTORM_LC | tail -1 | sed 's/.*: *\([0-9]*\)\/.*/\1/')
  printf 'fit yes\nfmax_mhz %s\nlc_used %s\n' "$fmax" "$lc" > "$txt"
else
  why=$(grep -i "error" "$log" | head -1)
  printf 'fit no\nwhy %s\n' "$why" > "$txt"
fi
