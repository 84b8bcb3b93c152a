# hubsync: one non-recursive Makefile.
#   make            build bin/hubsync-coordinator and bin/hubsync-worker
#   make demo       the README's first command: installs what is missing (.ci/deps), builds,
#                   then a whole sync on loopback and a podman pull through the target
#   make test       the README's second command (CI runs it): installs what is missing,
#                   builds, then every test: unit, fuzz smoke, integration
#   make unit       unit tests only
#   make asan       unit tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make asan-integration  the integration suite with the programs and tools built with
#                   ASan+UBSan (build/asan/bin, build/asan/tools); any sanitizer report fails
#   make fuzz       libFuzzer targets (clang) in build/fuzz/
#   make valgrind   unit tests under valgrind memcheck
#   make reliability  the fault tests in full (HUBSYNC_FULL=1: 20 worker kill trials)
#   make bench      hubsync against skopeo sync and the seed's script (BENCH_ARGS=--quick)
# WERROR=1 turns warnings into errors (CI sets it).

CC       ?= cc
CFLAGS   ?= -O2 -g
WERROR   ?= 0
BUILD    ?= build/default
BINDIR   ?= bin
# Seconds of each fuzz target in `make test` (ten targets; the long runs are by hand).
FUZZ_SECONDS ?= 10
# Integration modules run at once by `make test` (each in its own process).
TEST_JOBS ?= 2

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wno-format-nonliteral -Wwrite-strings
ifeq ($(WERROR),1)
WARN     += -Werror
endif
PKGS     := libcurl libgit2 jansson libcrypto libmicrohttpd yaml-0.1
CPPFLAGS += -D_GNU_SOURCE -Icommon $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) -MMD -MP
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lhiredis -lev -lm -lpthread

COMMON_SRC := $(wildcard common/*.c)
COORD_SRC  := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
TOOL_SRC   := $(wildcard tests/tools/*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
LIBCOMMON := $(BUILD)/libcommon.a
LIBCOORD  := $(BUILD)/libcoord.a
LIBWORKER := $(BUILD)/libworker.a
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_BINS := $(patsubst tests/tools/%.c,$(BUILD)/tools/%,$(TOOL_SRC))
PROGS     := $(BINDIR)/hubsync-coordinator $(BINDIR)/hubsync-worker

.SECONDARY:
.PHONY: all test test-run unit unit-bins integration fuzz fuzz-bins fuzz-smoke asan asan-build \
        asan-integration valgrind demo demo-run reliability bench clean
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

# Tests may reach the programs' private headers too.
$(BUILD)/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Icoordinator -Iworker $(ALL_CFLAGS) -c $< -o $@

# The Redis Functions library is kept as Lua (readable, loadable by hand with
# `redis-cli FUNCTION LOAD`); the programs carry it as a C array made from it here.
$(BUILD)/gen/rq_lua.c: common/rq.lua
	@mkdir -p $(dir $@)
	{ echo '/* Made from common/rq.lua by the Makefile. */'; echo '#include "rq.h"'; \
	  echo 'const char rq_lua_source[] = {'; \
	  od -An -v -tx1 $< | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0};'; } > $@.tmp
	mv $@.tmp $@
$(BUILD)/gen/rq_lua.o: $(BUILD)/gen/rq_lua.c
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c $< -o $@

$(LIBCOMMON): $(call obj,$(COMMON_SRC)) $(BUILD)/gen/rq_lua.o
	@rm -f $@; $(AR) rcs $@ $^
$(LIBCOORD): $(call obj,$(COORD_SRC))
	@rm -f $@; $(AR) rcs $@ $^
$(LIBWORKER): $(call obj,$(WORKER_SRC))
	@rm -f $@; $(AR) rcs $@ $^

$(BINDIR)/hubsync-coordinator: $(call obj,coordinator/main.c) $(LIBCOORD) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BINDIR)/hubsync-worker: $(call obj,worker/main.c) $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests may exercise coordinator and worker modules as well as common/. WRAP_<test>
# lists the calls a test replaces at link time (ld --wrap; the test defines __wrap_<call>).
WRAP_test_creds := -Wl,--wrap=poll -Wl,--wrap=posix_spawnp
$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBCOORD) $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) $(WRAP_$*) -o $@ $^ $(LDLIBS) -lcmocka

# Small C programs that integration tests drive (tests/tools/*.c).
$(BUILD)/tools/%: $(BUILD)/tests/tools/%.o $(LIBCOORD) $(LIBWORKER) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit-bins: $(UNIT_BINS)

unit: $(UNIT_BINS)
	python3 tests/run.py --build $(BUILD) unit

# The README's two commands first install the Debian packages that are missing; a sub-make
# then builds, since the flags above come from pkg-config, which may have just arrived.
test:
	@.ci/deps
	@$(MAKE) --no-print-directory test-run
demo:
	@.ci/deps
	@$(MAKE) --no-print-directory demo-run

# Everything CI checks, counted in one closing line: unit tests (plain and
# under ASan+UBSan), a bounded run of every fuzz target, integration tests.
test-run: all $(UNIT_BINS) $(TOOL_BINS) fuzz asan-build
	python3 tests/run.py --build $(BUILD) --asan-build $(ASAN_BUILD) \
	  --fuzz-seconds $(FUZZ_SECONDS) --jobs $(TEST_JOBS) all

integration: all $(TOOL_BINS)
	python3 tests/run.py --build $(BUILD) --jobs $(TEST_JOBS) integration

# One sub-make builds the unit tests, both programs and the test tools with sanitizers.
ASAN_BUILD := build/asan
asan-build:
	$(MAKE) BUILD=$(ASAN_BUILD) CC=clang BINDIR=$(ASAN_BUILD)/bin \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  LDFLAGS="-fsanitize=address,undefined" unit-bins all \
	  $(patsubst tests/tools/%.c,$(ASAN_BUILD)/tools/%,$(TOOL_SRC))

asan: asan-build
	python3 tests/run.py --build $(ASAN_BUILD) unit

# Every integration test with the sanitized programs, except those that check the plain
# build on purpose: valgrind cannot run ASan binaries (test_memcheck, the catalog's and
# diff's valgrind runs), the benchmark times it and measures its RSS, and the Dockerfile
# test reads the libraries it links (ASan adds libgcc_s).
ASAN_EXCLUDE := test_memcheck.py test_bench.py \
  integration.test_catalog.CatalogCommand.test_valgrind_full_catalog_no_leak \
  integration.test_catalog.TempClone.test_removed_repository_and_group \
  integration.test_compose.DockerfileTest.test_runtime_stage_has_every_linked_library
asan-integration: all asan-build
	python3 tests/run.py --build $(ASAN_BUILD) --bin $(ASAN_BUILD)/bin --sanitize --jobs $(TEST_JOBS) \
	  $(addprefix --exclude ,$(ASAN_EXCLUDE)) integration

valgrind: $(UNIT_BINS)
	python3 tests/run.py --build $(BUILD) --valgrind unit

# libFuzzer targets: each links the common library built with clang and sanitizers. The
# sub-make builds that library; the targets relink only when it or their source changed.
FUZZ_BUILD := build/fuzz
FUZZ_FLAGS := -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
FUZZ_BINS  := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/bin/%,$(FUZZ_SRC))
fuzz:
	$(MAKE) BUILD=$(FUZZ_BUILD) CC=clang CFLAGS="$(FUZZ_FLAGS)" $(FUZZ_BUILD)/libcommon.a
	$(MAKE) --no-print-directory fuzz-bins
fuzz-bins: $(FUZZ_BINS)
$(FUZZ_BUILD)/bin/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_check.h $(FUZZ_BUILD)/libcommon.a
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -std=c11 $(WARN) -O1 -g -fsanitize=fuzzer,address,undefined \
	  -o $@ $< $(FUZZ_BUILD)/libcommon.a $(LDLIBS)

fuzz-smoke: fuzz
	python3 tests/run.py --build $(BUILD) --fuzz-seconds $(FUZZ_SECONDS) fuzz

# The long randomized fault tests in full (20 kill trials instead of 3).
reliability: all $(TOOL_BINS)
	HUBSYNC_FULL=1 python3 tests/run.py --build $(BUILD) integration --pattern 'test_faults.py'

# Everything on loopback, cleaned up at the end.
demo-run: all
	python3 tests/demo/demo.py

# Side-by-side benchmark; the table it prints is kept in tests/bench/README.md.
bench: all
	python3 tests/bench/run.py $(BENCH_ARGS)

clean:
	rm -rf build $(BINDIR)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
