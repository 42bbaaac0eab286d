# mxrlhf build. Plain GNU make; every target first makes sure the Debian packages exist.
#
#   make            library + the mxrlhf command (optimised)      -> build/rel/
#   make run        the main job: `mxrlhf run` on the embedded default
#   make test       unit tests under ASan/UBSan + fuzz corpus replay -> build/asan/
#   make bench      benchmarks (optimised), printed as tables
#   make fuzz       build the libFuzzer targets (clang) -> build/fuzz/
#   make test-gpu   the GPU tests (tests/gpu/, optimised build with CUDA; on a GPU machine)
#   make test-gpu-sanitize   the same under compute-sanitizer (memcheck, racecheck)
#   make clean
#
# BUILD=dir puts all outputs elsewhere (parallel work trees, CI caches).
#
# CUDA: enabled when nvcc is found (on the PATH or /usr/local/cuda/bin); `make CUDA=0`
# disables it. With CUDA the optimised library holds the CUDA backend (src/backend/*.cu,
# compiled for sm_90: H100/H200) and links the CUDA runtime (static) and cuBLASLt; without
# it, src/backend/cuda_stub.c stands in and `--device cuda` reports "built without CUDA"
# (exit 3). The sanitizer build (tests) and the fuzzers always use the stub: ASan and the
# CUDA runtime do not mix. `make test` compiles the CUDA code when nvcc exists and runs
# its host-side arithmetic check; it needs no GPU.
#
# Overrides for machines without the Debian packages (the GPU machine):
#   NO_DEPS=1          do not run scripts/deps.sh
#   DEPS_PREFIX=dir    headers and libraries from Debian packages unpacked under dir
#                      (dpkg -x pkg.deb dir): dir/usr/include, dir/usr/lib/<multiarch>
#   PKG_CFLAGS=... PKG_LIBS=...   or give the flags outright
#   MARCH=x86-64-v3    instead of -march=native (binaries for another CPU)

BUILD   ?= build
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
CC      ?= gcc
CLANG   ?= clang
PKGS    := libcjson openblas libpcre2-8 libutf8proc zlib
DEPS_OK := $(BUILD)/.deps-ok

# The packages' flags. pkg-config is asked only once scripts/deps.sh has made sure the
# packages exist: $(PKG_MK) is written by a rule that depends on the deps stamp, and GNU
# make re-reads the Makefile after it has made an included file, so whatever target a
# newcomer types first (make, make run, make test, make bench) compiles and links with the
# flags of packages that deps.sh has just installed. (Asking pkg-config while the Makefile
# is parsed, before deps.sh ran, linked a fresh machine's first build without -l flags.)
# OpenBLAS is the OpenMP build (libopenblas-openmp-dev), found through its own pkgconfig
# directory and pinned with an rpath: our OpenMP regions and BLAS then share one thread
# pool (a BLAS call inside a parallel region runs single-threaded) instead of the default
# pthread build oversubscribing the cores. The system-wide default BLAS is left alone.
BLAS_PC    := /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/openblas-openmp/pkgconfig
PKGCONF    = PKG_CONFIG_PATH=$(BLAS_PC) pkg-config
PKG_MK     := $(BUILD)/pkg.mk

ifneq ($(DEPS_PREFIX),)
MULTIARCH  := $(shell $(CC) -print-multiarch 2>/dev/null)
DEPS_LIB   := $(abspath $(DEPS_PREFIX))/usr/lib/$(MULTIARCH)
PKG_CFLAGS = -I$(abspath $(DEPS_PREFIX))/usr/include -I$(abspath $(DEPS_PREFIX))/usr/include/cjson \
             -I$(abspath $(DEPS_PREFIX))/usr/include/$(MULTIARCH)/openblas-openmp -DUTF8PROC_EXPORTS
PKG_LIBS   = -L$(DEPS_LIB) -L$(DEPS_LIB)/openblas-openmp -Wl,-rpath,$(DEPS_LIB) \
             -Wl,-rpath,$(DEPS_LIB)/openblas-openmp -Wl,-rpath-link,$(DEPS_LIB) \
             -lcjson -lopenblas -lpcre2-8 -lutf8proc -lz -lm -ldl -lpthread
endif

# ---- CUDA ---------------------------------------------------------------------
NVCC      ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
CUDA      ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_GENCODE ?= -gencode arch=compute_90,code=sm_90
NVCC_FLAGS := -std=c++17 -O3 $(CUDA_GENCODE) -lineinfo -Isrc -MMD -MP \
              -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fopenmp -Werror all-warnings
CUDA_LIBS := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static \
             -lrt -ldl -lpthread -lstdc++
CU_SRC    := $(sort $(wildcard src/backend/*.cu))
CUDA_STUB := src/backend/cuda_stub.c

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Wno-format-truncation
COMMON  := -std=c11 -D_GNU_SOURCE $(WARN) -Isrc -fopenmp -g -MMD -MP
MARCH   ?= native
REL_CFLAGS  := $(COMMON) -O3 -march=$(MARCH)
ASAN_CFLAGS := $(COMMON) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined
ASAN_LDFLAGS := -fsanitize=address,undefined

LIB_SRC  := $(sort $(filter-out src/cli/%,$(wildcard src/*/*.c)))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TSUP_SRC := $(sort $(wildcard tests/support/*.c))
# tests find their fixtures from any working directory (tests/support/testutil.h)
TEST_DEFS := -DMXRLHF_FIXTURES_DIR='"$(abspath tests/fixtures)"'
BENCH_SRC := $(sort $(wildcard bench/*.c))
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))

# V=1 shows full command lines.
Q := $(if $(V),,@)

REL  := $(BUILD)/rel
ASAN := $(BUILD)/asan

ifeq ($(CUDA),1)
REL_LIB_OBJ  := $(filter-out $(CUDA_STUB:%.c=$(REL)/%.o),$(LIB_SRC:%.c=$(REL)/%.o)) \
                $(CU_SRC:%.cu=$(REL)/%.cu.o)
REL_LIBS     = $(PKG_LIBS) $(CUDA_LIBS)
else
REL_LIB_OBJ  := $(LIB_SRC:%.c=$(REL)/%.o)
REL_LIBS     = $(PKG_LIBS)
endif
CU_OBJ       := $(CU_SRC:%.cu=$(REL)/%.cu.o)
GPU_TEST_SRC := $(sort $(wildcard tests/gpu/test_gpu_*.c))
GPU_TEST_BIN := $(GPU_TEST_SRC:tests/gpu/%.c=$(REL)/tests/gpu/%)
CUDA_MATH_TEST := $(REL)/tests/gpu/test_cuda_math
CUDA_MXG_TEST  := $(REL)/tests/gpu/test_cuda_mxgemm
ASAN_LIB_OBJ := $(LIB_SRC:%.c=$(ASAN)/%.o)
REL_CLI_OBJ  := $(CLI_SRC:%.c=$(REL)/%.o)
ASAN_CLI_OBJ := $(CLI_SRC:%.c=$(ASAN)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(ASAN)/tests/%)
TSUP_OBJ  := $(TSUP_SRC:%.c=$(ASAN)/%.o)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(REL)/bench/%)
FUZZ_BIN  := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all run test bench fuzz deps clean test-gpu test-gpu-sanitize cuda-check
.SECONDARY:
.DEFAULT_GOAL := all

all: $(REL)/mxrlhf

$(DEPS_OK): scripts/deps.sh
	@$(if $(NO_DEPS),true,scripts/deps.sh)
	@mkdir -p $(@D) && touch $@

deps: $(DEPS_OK)

# Written after deps (see PKG_MK above); not used with DEPS_PREFIX, with PKG_LIBS given on
# the command line, or for `make clean`.
$(PKG_MK): $(DEPS_OK) Makefile
	@mkdir -p $(@D)
	@c=$$($(PKGCONF) --cflags $(PKGS)) && l=$$($(PKGCONF) --libs $(PKGS)) && \
	  d=$$($(PKGCONF) --variable=libdir openblas) || { \
	  echo "Makefile: pkg-config does not find all of: $(PKGS) (scripts/deps.sh installs them)" >&2; \
	  exit 1; }; \
	printf 'PKG_CFLAGS := %s\nPKG_LIBS := %s -Wl,-rpath,%s -lm -ldl -lpthread\n' "$$c" "$$l" "$$d" >$@.tmp && \
	  mv $@.tmp $@

ifeq ($(DEPS_PREFIX)$(filter command line,$(origin PKG_LIBS)),)
ifneq ($(MAKECMDGOALS),clean)
include $(PKG_MK)
endif
endif

# ---- optimised build --------------------------------------------------------
$(REL)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(REL)/%.cu.o: %.cu | $(DEPS_OK)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  NVCC    $<")
	$(Q)$(NVCC) $(NVCC_FLAGS) $(PKG_CFLAGS) -c $< -o $@

$(REL)/libmxrlhf.a: $(REL_LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(REL)/mxrlhf: $(REL_CLI_OBJ) $(REL)/libmxrlhf.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(REL_CFLAGS) $^ -o $@ $(REL_LIBS)

$(REL)/bench/%: bench/%.c $(REL)/libmxrlhf.a | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  LINK    $@"
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) $< $(REL)/libmxrlhf.a -o $@ $(REL_LIBS)

# ---- GPU tests (optimised build, cmocka; they skip when no GPU answers) --------
$(REL)/tests/gpu/%: tests/gpu/%.c $(TSUP_SRC) $(REL)/libmxrlhf.a | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  LINK    $@"
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) $(TEST_DEFS) -Itests $< $(TSUP_SRC) $(REL)/libmxrlhf.a -o $@ \
	  $(REL_LIBS) -lcmocka

# The host half of the CUDA arithmetic (src/mx/mx_core.h, util/philox.h as nvcc compiles
# them) against src/mx and util/rng: needs nvcc, not a GPU.
$(CUDA_MATH_TEST): tests/gpu/test_cuda_math.cu src/mx/mx_core.h src/util/philox.h src/util/hostdev.h $(TSUP_SRC) \
                   $(REL)/libmxrlhf.a | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  NVCC    $@"
	$(Q)$(NVCC) -std=c++17 -O2 -Isrc -Itests $(PKG_CFLAGS) -c $< -o $@.o
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) $(TEST_DEFS) -Itests $@.o $(TSUP_SRC) $(REL)/libmxrlhf.a -o $@ \
	  $(REL_LIBS) -lcmocka

# The host half of the MX GEMM kernels (src/backend/cuda_mxgemm.cuh): no GPU needed.
$(CUDA_MXG_TEST): tests/gpu/test_cuda_mxgemm.cu src/backend/cuda_mxgemm.cuh \
                  src/mx/mx_core.h $(TSUP_SRC) $(REL)/libmxrlhf.a | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  NVCC    $@"
	$(Q)$(NVCC) -std=c++17 -O2 -Isrc -Itests $(PKG_CFLAGS) -c $< -o $@.o
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) $(TEST_DEFS) -Itests $@.o $(TSUP_SRC) $(REL)/libmxrlhf.a -o $@ \
	  $(REL_LIBS) -lcmocka

# ---- sanitizer build for tests ----------------------------------------------
$(ASAN)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC asan $<")
	$(Q)$(CC) $(ASAN_CFLAGS) $(PKG_CFLAGS) -Itests -c $< -o $@

$(TSUP_OBJ): ASAN_CFLAGS += $(TEST_DEFS)

$(ASAN)/libmxrlhf.a: $(ASAN_LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(ASAN)/mxrlhf: $(ASAN_CLI_OBJ) $(ASAN)/libmxrlhf.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $^ -o $@ $(PKG_LIBS) $(ASAN_LDFLAGS)

$(ASAN)/tests/%: $(ASAN)/tests/%.o $(TSUP_OBJ) $(ASAN)/libmxrlhf.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $^ -o $@ $(PKG_LIBS) -lcmocka $(ASAN_LDFLAGS)

# ---- fuzzers (clang + libFuzzer); `make test` replays their committed corpora --
# The library is compiled once with the fuzzers' instrumentation (fuzzer-no-link) and each
# fuzzer's main file links against those objects: compiling the library again for every
# fuzzer took a large share of `make test`'s time.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Isrc -g -O1 -fopenmp=libgomp
FUZZ_OBJ    := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o)
$(BUILD)/fuzz/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  CC fuzz $<"
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -MMD -MP -fsanitize=fuzzer-no-link,address,undefined $(PKG_CFLAGS) \
	  -c $< -o $@
$(BUILD)/fuzz/%: fuzz/%.c $(FUZZ_OBJ) | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  FUZZ    $@"
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS) $< $(FUZZ_OBJ) \
	  -o $@ $(PKG_LIBS)

fuzz: $(FUZZ_BIN)

# ---- entry points -----------------------------------------------------------
run: $(REL)/mxrlhf
	$(REL)/mxrlhf run $(RUN_ARGS)

# The CLI binary is built under ASan too: tests drive it as a user would. With CUDA,
# the CUDA code is compiled and linked (cuda-check) and its host arithmetic tested.
ifeq ($(CUDA),1)
CUDA_CHECK := cuda-check
endif
test: $(TEST_BIN) $(ASAN)/mxrlhf $(FUZZ_BIN) $(CUDA_CHECK)
	@MXRLHF_BIN=$(ASAN)/mxrlhf FUZZ_DIR=$(BUILD)/fuzz scripts/run_tests.sh $(TEST_BIN) \
	  $(if $(CUDA_CHECK),$(CUDA_MATH_TEST) $(CUDA_MXG_TEST))

cuda-check: $(CU_OBJ) $(CUDA_MATH_TEST) $(CUDA_MXG_TEST) $(GPU_TEST_BIN) $(REL)/mxrlhf

test-gpu: $(GPU_TEST_BIN) $(REL)/mxrlhf
	@MXRLHF_BIN=$(REL)/mxrlhf scripts/run_tests.sh $(GPU_TEST_BIN)

test-gpu-sanitize: $(GPU_TEST_BIN)
	@for t in $(GPU_TEST_BIN); do for tool in memcheck racecheck; do \
	  echo "== compute-sanitizer --tool $$tool $$t"; \
	  MXRLHF_GPU_QUICK=1 compute-sanitizer --tool $$tool --error-exitcode 99 $$t >$$t.$$tool.log 2>&1 \
	    && tail -3 $$t.$$tool.log || { tail -60 $$t.$$tool.log; exit 1; }; done; done

bench: $(BENCH_BIN) $(REL)/mxrlhf
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD)

include hw/hw.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
