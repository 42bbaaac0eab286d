# mxrlhf build. Plain GNU make; every target first makes sure the Debian packages exist.
#
#   make            library + the mxrlhf command (optimised)      -> build/rel/
#   make run        the main job: `mxrlhf run` on the embedded default
#   make test       unit tests under ASan/UBSan + fuzz corpus replay -> build/asan/
#   make bench      benchmarks (optimised), printed as tables
#   make fuzz       build the libFuzzer targets (clang) -> build/fuzz/
#   make clean
#
# BUILD=dir puts all outputs elsewhere (parallel work trees, CI caches).

BUILD   ?= build
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
CC      ?= gcc
CLANG   ?= clang
PKGS    := libcjson openblas libpcre2-8 libutf8proc zlib
DEPS_OK := $(BUILD)/.deps-ok

# pkg-config is only asked once the packages are known to be present.
# OpenBLAS is the OpenMP build (libopenblas-openmp-dev), found through its own pkgconfig
# directory and pinned with an rpath: our OpenMP regions and BLAS then share one thread
# pool (a BLAS call inside a parallel region runs single-threaded) instead of the default
# pthread build oversubscribing the cores. The system-wide default BLAS is left alone.
BLAS_PC    := /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/openblas-openmp/pkgconfig
PKGCONF    = PKG_CONFIG_PATH=$(BLAS_PC) pkg-config
PKG_CFLAGS = $(shell $(PKGCONF) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell $(PKGCONF) --libs $(PKGS) 2>/dev/null) \
             -Wl,-rpath,$(shell $(PKGCONF) --variable=libdir openblas 2>/dev/null) -lm -ldl -lpthread

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Wno-format-truncation
COMMON  := -std=c11 -D_GNU_SOURCE $(WARN) -Isrc -fopenmp -g -MMD -MP
REL_CFLAGS  := $(COMMON) -O3 -march=native
ASAN_CFLAGS := $(COMMON) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
               -fno-sanitize-recover=undefined
ASAN_LDFLAGS := -fsanitize=address,undefined

LIB_SRC  := $(sort $(filter-out src/cli/%,$(wildcard src/*/*.c)))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TSUP_SRC := $(sort $(wildcard tests/support/*.c))
BENCH_SRC := $(sort $(wildcard bench/*.c))
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))

# V=1 shows full command lines.
Q := $(if $(V),,@)

REL  := $(BUILD)/rel
ASAN := $(BUILD)/asan

REL_LIB_OBJ  := $(LIB_SRC:%.c=$(REL)/%.o)
ASAN_LIB_OBJ := $(LIB_SRC:%.c=$(ASAN)/%.o)
REL_CLI_OBJ  := $(CLI_SRC:%.c=$(REL)/%.o)
ASAN_CLI_OBJ := $(CLI_SRC:%.c=$(ASAN)/%.o)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(ASAN)/tests/%)
TSUP_OBJ  := $(TSUP_SRC:%.c=$(ASAN)/%.o)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(REL)/bench/%)
FUZZ_BIN  := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all run test bench fuzz deps clean
.SECONDARY:
.DEFAULT_GOAL := all

all: $(REL)/mxrlhf

$(DEPS_OK): scripts/deps.sh
	@scripts/deps.sh
	@mkdir -p $(@D) && touch $@

deps: $(DEPS_OK)

# ---- optimised build --------------------------------------------------------
$(REL)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC      $<")
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(REL)/libmxrlhf.a: $(REL_LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(REL)/mxrlhf: $(REL_CLI_OBJ) $(REL)/libmxrlhf.a
	@echo "  LINK    $@"
	$(Q)$(CC) $(REL_CFLAGS) $^ -o $@ $(PKG_LIBS)

$(REL)/bench/%: bench/%.c $(REL)/libmxrlhf.a | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  LINK    $@"
	$(Q)$(CC) $(REL_CFLAGS) $(PKG_CFLAGS) $< $(REL)/libmxrlhf.a -o $@ $(PKG_LIBS)

# ---- sanitizer build for tests ----------------------------------------------
$(ASAN)/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	@$(if $(V),,echo "  CC asan $<")
	$(Q)$(CC) $(ASAN_CFLAGS) $(PKG_CFLAGS) -Itests -c $< -o $@

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
$(BUILD)/fuzz/%: fuzz/%.c $(LIB_SRC) | $(DEPS_OK)
	@mkdir -p $(@D)
	@echo "  FUZZ    $@"
	$(Q)$(CLANG) -std=c11 -D_GNU_SOURCE -Isrc -g -O1 -fopenmp=libgomp \
	  -fsanitize=fuzzer,address,undefined $(PKG_CFLAGS) $< $(LIB_SRC) -o $@ $(PKG_LIBS)

fuzz: $(FUZZ_BIN)

# ---- entry points -----------------------------------------------------------
run: $(REL)/mxrlhf
	$(REL)/mxrlhf run $(RUN_ARGS)

# The CLI binary is built under ASan too: tests drive it as a user would.
test: $(TEST_BIN) $(ASAN)/mxrlhf $(FUZZ_BIN)
	@MXRLHF_BIN=$(ASAN)/mxrlhf FUZZ_DIR=$(BUILD)/fuzz scripts/run_tests.sh $(TEST_BIN)

bench: $(BENCH_BIN) $(REL)/mxrlhf
	@for b in $(BENCH_BIN); do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
