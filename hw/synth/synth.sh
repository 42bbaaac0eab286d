#!/bin/sh
# synth.sh: synthesis of one design for docs/hardware.md's table.
#   hw/synth/synth.sh OUTDIR NAME TOP "PARAMS" VERILOG...
# TOP is mx_pe, mx_array or a shell; PARAMS is "-set FMT_A 4 -set FMT_B 4 -set K 32" style
# (chparam arguments). Writes into OUTDIR:
#   NAME.ice40.txt   yosys stat after synth_ice40 (iCE40 LUT4, SB_CARRY, flip-flops)
#   NAME.ice40.json  the netlist (for nextpnr-ice40)
#   NAME.gates.txt   yosys stat -tech cmos after generic synthesis (simple gates, transistors)
#   NAME.mul.txt     yosys stat -width of the elaborated, word-reduced netlist: its $mul
#                    cells are the multipliers, with their operand widths
# Yosys's SAT-based resource sharing pass (`share`) runs for hours on the PE's mutually
# exclusive shifters, and synth_ice40 has no option to skip it, so its coarse section is
# run here step by step without it (the rest of synth_ice40 as it is); generic synthesis
# uses `synth -noshare`.
set -eu
out=$1; name=$2; top=$3; params=$4; shift 4
mkdir -p "$out"
reads=""
for f in "$@"; do reads="$reads read_verilog $f;"; done
chp=""
[ -n "$params" ] && chp="chparam $params $top;"
yosys -q -l "$out/$name.ice40.log" -p "$reads $chp
  synth_ice40 -top $top -run begin:coarse;
  opt_expr; opt_clean; check; opt -nodffe -nosdff; fsm; opt; wreduce; peepopt; opt_clean;
  techmap -map +/cmp2lut.v -D LUT_WIDTH=4; opt_expr; opt_clean; memory_dff; wreduce t:\$mul;
  alumacc; opt; memory -nomap; opt_clean;
  synth_ice40 -top $top -run map_ram: -json $out/$name.ice40.json;
  tee -q -o $out/$name.ice40.txt stat"
yosys -q -p "$reads $chp hierarchy -top $top; proc; flatten; opt -fast; wreduce;
  opt_clean; tee -q -o $out/$name.mul.txt stat -width"
yosys -q -l "$out/$name.gates.log" -p "$reads $chp
  synth -noshare -flatten -top $top; abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX; opt_clean;
  tee -q -o $out/$name.gates.txt stat -tech cmos"
