#!/bin/sh
# synth.sh: one synthesis step for docs/hardware.md's table.
#   hw/synth/synth.sh STEP OUTDIR NAME TOP "PARAMS" VERILOG...
# TOP is mx_pe, mx_array or a shell; PARAMS is "-set FMT_A 4 -set FMT_B 4 -set K 32" style
# (chparam arguments). STEP, and what it writes into OUTDIR:
#   ice40   NAME.ice40.txt (yosys stat after synthesis for iCE40: LUT4, SB_CARRY, flip-flops)
#           and NAME.ice40.json (the netlist for nextpnr-ice40)
#   gates   NAME.gates.txt: stat -tech cmos after generic synthesis to simple gates
#   mul     NAME.mul.txt: stat -width of the elaborated, word-reduced design; its $mul cells
#           are the multipliers, with their widths
# Yosys's SAT-based resource sharing pass (`share`) runs for hours on the PE's mutually
# exclusive shifters and adders, and synth_ice40 has no option to skip it, so its coarse
# section is run here step by step without it (the rest of synth_ice40 as it is); generic
# synthesis uses `synth -noshare`. Each output is written at the end of its step, so a file
# that exists is complete.
set -eu
step=$1; out=$2; name=$3; top=$4; params=$5; shift 5
mkdir -p "$out"
reads=""
for f in "$@"; do reads="$reads read_verilog $f;"; done
chp=""
[ -n "$params" ] && chp="chparam $params $top;"
case $step in
ice40)
  yosys -q -l "$out/$name.ice40.log" -p "$reads $chp
    synth_ice40 -top $top -run begin:coarse;
    opt_expr; opt_clean; check; opt -nodffe -nosdff; fsm; opt; wreduce; peepopt; opt_clean;
    techmap -map +/cmp2lut.v -D LUT_WIDTH=4; opt_expr; opt_clean; memory_dff; wreduce t:\$mul;
    alumacc; opt; memory -nomap; opt_clean;
    synth_ice40 -top $top -run map_ram: -json $out/$name.ice40.json;
    tee -q -o $out/$name.ice40.txt stat" ;;
gates)
  yosys -q -l "$out/$name.gates.log" -p "$reads $chp
    synth -noshare -flatten -top $top; abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX;
    opt_clean; tee -q -o $out/$name.gates.txt stat -tech cmos" ;;
mul)
  yosys -q -p "$reads $chp hierarchy -top $top; proc; flatten; opt -fast; wreduce; opt_clean;
    tee -q -o $out/$name.mul.txt stat -width" ;;
*) echo "synth.sh: unknown step $step (ice40, gates, mul)" >&2; exit 2 ;;
esac
