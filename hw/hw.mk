# hw.mk: the MX processing elements (docs/hardware.md), included by the Makefile.
#
#   make hw              the simulators and the synthesis table (yosys, nextpnr-ice40)
#   make hw-test         both PE test benches (SystemC, Verilator) on the committed vectors
#                        (real tensors of the embedded default), fresh random ones and a
#                        hand-written file; the PE array on a real layer's GEMM (about a
#                        minute on 2 cores, most of it compiling)
#   make hw-test VECTORS=FILE   both test benches on FILE only
#   make hw-test-long    the same with 2000 random vectors per format and k
#   make hw-synth        the synthesis table only -> $(BUILD)/hw/synth/table.md
#
# The Debian packages are installed through scripts/deps.sh like the rest: the simulators'
# (g++, SystemC, Verilator) for everything, Yosys and nextpnr only for synthesis (nextpnr-ice40
# carries its chip database; no bitstream is written, so IceStorm's tools are not needed). C++ lives only under hw/; the benches link the C
# library's MX files (the vector parser and the reference) compiled here.

HW       := $(BUILD)/hw
HW_PKGS  := g++ libsystemc-dev verilator
HW_DEPS  := $(BUILD)/.deps-hw-ok
HW_SYN_PKGS := yosys nextpnr-ice40
HW_SYN_DEPS_OK := $(BUILD)/.deps-hw-synth-ok
HW_CXX   ?= g++
HW_CXXFLAGS := -std=c++17 -O2 -Wall -Wextra -Werror -Isrc -Ihw/bench -Ihw/systemc
HW_SEED  ?= 1
HW_COUNT ?= 100
HW_SC_ENV := SYSTEMC_DISABLE_COPYRIGHT_MESSAGE=1

HW_C_SRC := src/util/err.c src/util/fs.c src/util/atomic_file.c src/util/rng.c src/mx/mx.c \
            src/mx/mx_quant.c src/mx/mx_pack.c src/mx/mx_dot.c src/mx/mx_hwvec.c
HW_C_OBJ := $(HW_C_SRC:%.c=$(HW)/c/%.o)
HW_LIB   := $(HW)/libmxhw.a
HW_RTL   := hw/rtl/mx_pe.v hw/rtl/fp32_add.v hw/rtl/sum_tree.v
HW_SC    := hw/systemc/mx_pe_sc.cpp hw/bench/pe_bench.cpp
HW_SC_ARRAY := hw/systemc/mx_pe_sc.cpp hw/systemc/mx_array_sc.cpp hw/bench/array_bench.cpp

HW_PE_SC  := $(HW)/pe_bench_sc
HW_PE_VL  := $(HW)/vl/pe_bench_vl
HW_RANDOM := $(HW)/pe_random
HW_ARRAY  := $(HW)/array_bench_sc
HW_ARRAY_VL := $(HW)/vla/array_bench_vl
HW_FIX    := hw/vectors
HW_GEMM   := $(HW_FIX)/default_gemm.txt

.PHONY: hw hw-test hw-test-long hw-synth hw-sims

$(HW_DEPS): scripts/deps.sh
	@$(if $(NO_DEPS),true,scripts/deps.sh $(HW_PKGS))
	@mkdir -p $(@D) && touch $@
$(HW_SYN_DEPS_OK): scripts/deps.sh
	@$(if $(NO_DEPS),true,scripts/deps.sh $(HW_SYN_PKGS))
	@mkdir -p $(@D) && touch $@

$(HW)/c/%.o: %.c | $(HW_DEPS)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC hw   $<")
	$(Q)$(CC) $(COMMON) -O2 -c $< -o $@

$(HW_LIB): $(HW_C_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

HW_HDR_SC := hw/systemc/mx_pe_sc.h hw/systemc/sc_clock.h hw/bench/hw_formats.h
HW_HDR_VL := hw/verilator/vl_clock.h hw/bench/hw_formats.h

$(HW_PE_SC): hw/systemc/pe_bench_sc.cpp $(HW_SC) $(HW_HDR_SC) hw/bench/pe_bench.h \
             $(HW_LIB) | $(HW_DEPS)
	@echo "  C++     $@"
	$(Q)$(HW_CXX) $(HW_CXXFLAGS) hw/systemc/pe_bench_sc.cpp $(HW_SC) $(HW_LIB) -o $@ \
	  -lsystemc -fopenmp -lm -lz

$(HW_ARRAY): hw/systemc/array_bench_sc.cpp $(HW_SC_ARRAY) $(HW_HDR_SC) \
             hw/systemc/mx_array_sc.h hw/bench/array_bench.h $(HW_LIB) | $(HW_DEPS)
	@echo "  C++     $@"
	$(Q)$(HW_CXX) $(HW_CXXFLAGS) hw/systemc/array_bench_sc.cpp $(HW_SC_ARRAY) $(HW_LIB) -o $@ \
	  -lsystemc -fopenmp -lm -lz

$(HW_RANDOM): hw/bench/pe_random.cpp $(HW_LIB) | $(HW_DEPS)
	@echo "  C++     $@"
	$(Q)$(HW_CXX) $(HW_CXXFLAGS) $< $(HW_LIB) -o $@ -fopenmp -lm -lz

# Verilator runs make in its own directory: every path it sees is absolute.
$(HW_PE_VL): hw/rtl/mx_pe_bank.v $(HW_RTL) hw/verilator/pe_bench_vl.cpp hw/bench/pe_bench.cpp \
             hw/bench/pe_bench.h $(HW_HDR_VL) $(HW_LIB) | $(HW_DEPS)
	@echo "  VERILATE $@"
	@mkdir -p $(@D)
	$(Q)verilator --cc --exe --build -j 2 -Wall -Wno-WIDTH -Wno-DECLFILENAME --top-module mx_pe_bank \
	  --Mdir $(abspath $(@D)) -o $(notdir $@) \
	  -CFLAGS "-std=c++17 -O1 -I$(abspath src) -I$(abspath hw/bench)" \
	  -LDFLAGS "$(abspath $(HW_LIB)) -fopenmp -lm -lz" \
	  $(abspath hw/rtl/mx_pe_bank.v $(HW_RTL) hw/verilator/pe_bench_vl.cpp hw/bench/pe_bench.cpp) \
	  >$(@D)/verilate.log 2>&1 || { tail -30 $(@D)/verilate.log; exit 1; }

# The RTL array for the committed GEMM case: its formats and k are Verilog parameters, read
# from the case's "gemm" line; 2 x 2 PEs (the schedule covers any size; a small array keeps
# the verilated model quick to compile).
hw_fmt = $$(awk '/^gemm/ {print $$$(1); exit}' $(HW_GEMM) | \
  awk '{n = split("$(HW_FORMATS)", f, " "); for (i = 1; i <= n; i++) if (f[i] == $$1) print i - 1}')
$(HW_ARRAY_VL): hw/rtl/mx_array.v $(HW_RTL) hw/verilator/array_bench_vl.cpp hw/bench/array_bench.cpp \
                hw/bench/array_bench.h $(HW_HDR_VL) $(HW_GEMM) $(HW_LIB) | $(HW_DEPS)
	@echo "  VERILATE $@"
	@mkdir -p $(@D)
	$(Q)fa=$(call hw_fmt,2); fb=$(call hw_fmt,3); k=$$(awk '/^gemm/ {print $$4; exit}' $(HW_GEMM)); \
	verilator --cc --exe --build -j 2 -Wall -Wno-WIDTH -Wno-DECLFILENAME --top-module mx_array \
	  -GR=2 -GC=2 -GFMT_A=$$fa -GFMT_B=$$fb -GK=$$k --Mdir $(abspath $(@D)) -o $(notdir $@) \
	  -CFLAGS "-std=c++17 -O1 -I$(abspath src) -I$(abspath hw/bench) -DARR_R=2 -DARR_C=2 \
	           -DARR_FA=$$fa -DARR_FB=$$fb -DARR_K=$$k" \
	  -LDFLAGS "$(abspath $(HW_LIB)) -fopenmp -lm -lz" \
	  $(abspath hw/rtl/mx_array.v $(HW_RTL) hw/verilator/array_bench_vl.cpp hw/bench/array_bench.cpp) \
	  >$(@D)/verilate.log 2>&1 || { tail -30 $(@D)/verilate.log; exit 1; }

hw-sims: $(HW_PE_SC) $(HW_PE_VL) $(HW_RANDOM) $(HW_ARRAY) $(HW_ARRAY_VL)

# ---- tests --------------------------------------------------------------------------------

# Both benches on one file; a bench's own exit code stops make.
define hw_both
	@echo "== $(1)"
	@$(HW_SC_ENV) $(HW_PE_SC) $(1)
	@$(HW_PE_VL) $(1)
endef

ifneq ($(VECTORS),)
hw-test: $(HW_PE_SC) $(HW_PE_VL)
	$(call hw_both,$(VECTORS))
else
hw-test: hw-sims
	$(call hw_both,$(HW_FIX)/default_real.vec)
	$(call hw_both,$(HW_FIX)/hand_written.vec)
	@$(HW_RANDOM) $(HW)/random.vec $(HW_COUNT) $(HW_SEED)
	$(call hw_both,$(HW)/random.vec)
	@echo "== a file with one wrong expected value: both benches must fail"
	@sed '0,/^mx/s/ [0-9a-f]\{8\}$$/ 3f800001/' $(HW_FIX)/hand_written.vec > $(HW)/wrong.vec
	@! $(HW_SC_ENV) $(HW_PE_SC) $(HW)/wrong.vec >$(HW)/wrong.sc.log && grep -q "vectors match" $(HW)/wrong.sc.log
	@! $(HW_PE_VL) $(HW)/wrong.vec >$(HW)/wrong.vl.log && grep -q "vectors match" $(HW)/wrong.vl.log
	@echo "   both reported the mismatch and exited 1"
	@echo "== the PE array on a real layer's GEMM"
	@$(HW_SC_ENV) $(HW_ARRAY) $(HW_GEMM) 4 4
	@$(HW_SC_ENV) $(HW_ARRAY) $(HW_GEMM) 3 5
	@$(HW_ARRAY_VL) $(HW_GEMM)
endif

hw-test-long: hw-sims
	@$(HW_RANDOM) $(HW)/random_long.vec 2000 $(HW_SEED)
	$(call hw_both,$(HW)/random_long.vec)
	$(call hw_both,$(HW_FIX)/default_real.vec)
	@$(HW_SC_ENV) $(HW_ARRAY) $(HW_GEMM) 8 8

# ---- synthesis -----------------------------------------------------------------------------

HW_SYN := $(HW)/synth
HW_FORMATS := mxfp8_e4m3 mxfp8_e5m2 mxfp6_e3m2 mxfp6_e2m3 mxfp4_e2m1 mxint8
HW_HX8K_LC := 7680
# the format's index in the RTL's numbering (0 mxfp8_e4m3 ... 5 mxint8)
hw_fidx = $$(echo $(HW_FORMATS) | tr ' ' '\n' | grep -n -x $(1) | cut -d: -f1 | awk '{print $$1 - 1}')
HW_SYN_DEPS := $(HW_RTL) hw/synth/synth.sh | $(HW_SYN_DEPS_OK)

$(HW_SYN)/pe_%.ice40.txt: $(HW_SYN_DEPS)
	@echo "  YOSYS   PE $* (iCE40)"
	$(Q)f=$(call hw_fidx,$*); hw/synth/synth.sh ice40 $(HW_SYN) pe_$* mx_pe "-set FMT_A $$f -set FMT_B $$f -set K 32" $(HW_RTL)

$(HW_SYN)/pe_%.gates.txt: $(HW_SYN_DEPS)
	@echo "  YOSYS   PE $* (gates)"
	$(Q)f=$(call hw_fidx,$*); hw/synth/synth.sh gates $(HW_SYN) pe_$* mx_pe "-set FMT_A $$f -set FMT_B $$f -set K 32" $(HW_RTL)

$(HW_SYN)/pe_%.mul.txt: $(HW_SYN_DEPS)
	$(Q)f=$(call hw_fidx,$*); hw/synth/synth.sh mul $(HW_SYN) pe_$* mx_pe "-set FMT_A $$f -set FMT_B $$f -set K 32" $(HW_RTL)

# Place and route of the PE in its shell, unless the PE alone has more LUT4s than the
# device has logic cells (then the shell's synthesis is skipped: it cannot fit).
$(HW_SYN)/shell_%.pnr.txt: $(HW_SYN)/pe_%.ice40.txt hw/synth/pe_shell.v hw/synth/pnr.sh
	$(Q)luts=$$(awk '$$1 == "SB_LUT4" { print $$2 }' $<); \
	if [ "$${luts:-0}" -gt $(HW_HX8K_LC) ]; then \
	  printf 'fit no\nwhy the PE alone needs %s LUT4, the HX8K has %s logic cells\n' $$luts $(HW_HX8K_LC) > $@; \
	else \
	  echo "  YOSYS   PE $* in its shell, then NEXTPNR"; \
	  f=$(call hw_fidx,$*); hw/synth/synth.sh ice40 $(HW_SYN) shell_$* pe_shell "-set FMT $$f -set K 32" \
	    $(HW_RTL) hw/synth/pe_shell.v && hw/synth/pnr.sh $(HW_SYN) shell_$*; \
	fi

# The array at a small size: 2 x 2 MXFP4 PEs of k = 8 lanes (four k = 32 PEs would not fit
# the HX8K: one alone needs about 3,300 LUT4s).
HW_ARR := array_2x2_mxfp4_e2m1_k8
HW_ARR_SRC := $(HW_RTL) hw/rtl/mx_array.v
HW_ARR_P := -set R 2 -set C 2 -set FMT_A 4 -set FMT_B 4 -set K 8
$(HW_SYN)/$(HW_ARR).ice40.txt: $(HW_SYN_DEPS) hw/rtl/mx_array.v
	@echo "  YOSYS   array 2x2 mxfp4_e2m1 k=8 (iCE40)"
	$(Q)hw/synth/synth.sh ice40 $(HW_SYN) $(HW_ARR) mx_array "$(HW_ARR_P)" $(HW_ARR_SRC)
$(HW_SYN)/$(HW_ARR).gates.txt: $(HW_SYN_DEPS) hw/rtl/mx_array.v
	@echo "  YOSYS   array 2x2 mxfp4_e2m1 k=8 (gates)"
	$(Q)hw/synth/synth.sh gates $(HW_SYN) $(HW_ARR) mx_array "$(HW_ARR_P)" $(HW_ARR_SRC)
$(HW_SYN)/$(HW_ARR).mul.txt: $(HW_SYN_DEPS) hw/rtl/mx_array.v
	$(Q)hw/synth/synth.sh mul $(HW_SYN) $(HW_ARR) mx_array "$(HW_ARR_P)" $(HW_ARR_SRC)
$(HW_SYN)/shell_$(HW_ARR).pnr.txt: $(HW_SYN)/$(HW_ARR).ice40.txt hw/synth/array_shell.v hw/synth/pnr.sh
	@echo "  YOSYS   array 2x2 in its shell, then NEXTPNR"
	$(Q)hw/synth/synth.sh ice40 $(HW_SYN) shell_$(HW_ARR) array_shell "-set R 2 -set C 2 -set FMT 4 -set K 8" \
	  $(HW_ARR_SRC) hw/synth/array_shell.v && hw/synth/pnr.sh $(HW_SYN) shell_$(HW_ARR)

HW_SYN_OUT := $(foreach f,$(HW_FORMATS),$(foreach s,ice40 gates mul,$(HW_SYN)/pe_$(f).$(s).txt) \
                $(HW_SYN)/shell_$(f).pnr.txt) \
              $(foreach s,ice40 gates mul,$(HW_SYN)/$(HW_ARR).$(s).txt) $(HW_SYN)/shell_$(HW_ARR).pnr.txt

# The table for docs/hardware.md, and synthesis.csv, which is committed as
# hw/synth/synthesis.csv (the pipeline's hw stage copies it into the results for the report).
hw-synth: $(HW_SYN_OUT) hw/synth/table.sh
	@hw/synth/table.sh $(HW_SYN) > $(HW_SYN)/table.md
	@cat $(HW_SYN)/table.md

hw: hw-sims hw-synth
