# geogate — one Makefile for build, tests, fuzzing, benchmarks and the demo.
#
#   make            build bin/geogate, bin/geogate-bench (installs missing Debian packages first)
#   make test       unit + integration tests, then the same again under ASan+UBSan, then a short fuzz
#   make demo       start a working site on loopback (two memcached + geogate)
#   make bench      side-by-side benchmark: memcached direct, nutcracker, geogate
#   make fuzz       libFuzzer on the request parser for FUZZ_TIME seconds

CC        ?= cc
BUILD     ?= build
BIN       ?= bin
SAN       ?=
FUZZ_TIME ?= 20
PYTHON    := /usr/bin/python3

DEB_PKGS := build-essential pkg-config libevent-dev libssl-dev libnghttp2-dev \
	libprotobuf-c-dev protobuf-c-compiler libyaml-dev libcmocka-dev libsystemd-dev \
	memcached nutcracker libmemcached-tools python3 python3-pymemcache python3-memcache \
	python3-grpcio python3-grpc-tools haproxy prometheus clang libclang-rt-14-dev \
	openssl iproute2 procps netcat-openbsd faketime

PKGS      := libevent libevent_pthreads libevent_openssl openssl libnghttp2 libprotobuf-c \
	yaml-0.1 libsystemd
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -pthread -D_GNU_SOURCE \
	-I. $(PKG_CFLAGS)
LDLIBS  += $(PKG_LIBS) -lm -pthread

ifeq ($(SAN),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Everything but the programs' main files goes into one static library that
# the daemon, the tools and the unit tests link against.
MAIN_SRC := gateway/main.c
PROTO_SRC := $(wildcard proto/*.proto)
PROTO_GEN := $(PROTO_SRC:%.proto=%.pb-c.c)
LIB_SRC  := $(sort $(wildcard ring/*.c tls/*.c wan/*.c) $(PROTO_GEN) \
	$(filter-out $(MAIN_SRC) $(wildcard gateway/ctl/*.c),$(wildcard gateway/*.c gateway/*/*.c)))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libgeogate.a
BENCH_SRC := $(wildcard tests/tools/bench/*.c)

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

WANEM_SRC := $(wildcard tests/tools/wanem/*.c)
CTL_SRC   := $(wildcard gateway/ctl/*.c)
PROGRAMS := $(BIN)/geogate $(BIN)/geogatectl $(if $(BENCH_SRC),$(BIN)/geogate-bench) \
	$(if $(WANEM_SRC),$(BIN)/geogate-wanem) $(BIN)/wan_testd

DEPS_STAMP := build/.deps-installed

.PHONY: all deps test unit integration sanitize fuzz bench demo demo-site clean format
.DEFAULT_GOAL := all

all: $(DEPS_STAMP)
	@$(MAKE) --no-print-directory programs

programs: $(PROGRAMS)

# Install whatever Debian packages are missing (CI runs as root on a fresh machine).
deps $(DEPS_STAMP): Makefile
	@missing=""; for p in $(DEB_PKGS); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing \
	        </dev/null || exit 1; \
	fi
	@mkdir -p build && touch $(DEPS_STAMP)

# protobuf-c code is generated at build time, never committed (and never deleted as
# an intermediate file).
.SECONDARY: $(PROTO_GEN) $(PROTO_GEN:.c=.h)
proto/%.pb-c.c proto/%.pb-c.h: proto/%.proto $(DEPS_STAMP)
	protoc-c --c_out=. $<

$(BUILD)/%.o: %.c | $(PROTO_GEN)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Generated code is not ours to hold to -Werror's standards.
$(BUILD)/proto/%.o: proto/%.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -Werror -Wextra,$(CFLAGS)) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/geogate: $(BUILD)/gateway/main.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/geogate-bench: $(BENCH_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The operator's command line: blocking HTTP to the admin listener and a tiny memcached
# client for drills; it links nothing of the daemon.
$(BIN)/geogatectl: $(CTL_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ -lm -pthread

# The WAN emulator the multi-site tests put between sites (netem is not available).
$(BIN)/geogate-wanem: $(WANEM_SRC:%.c=$(BUILD)/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# A bare WAN server for the wire tests (a grpcio client talks to it).
$(BIN)/wan_testd: $(BUILD)/tests/tools/wan_testd.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

unit: $(DEPS_STAMP) $(UNIT_BINS) $(LIB)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; (cd tests/unit && timeout 120 ../../$$t); done
	$(PYTHON) tests/tools/layers.py --build $(BUILD)

integration: all
	GEOGATE_BIN=$(abspath $(BIN)) timeout 1500 $(PYTHON) tests/integration/run.py

# The whole suite again with AddressSanitizer + UndefinedBehaviorSanitizer.
sanitize: $(DEPS_STAMP)
	$(MAKE) --no-print-directory SAN=1 BUILD=build/san BIN=build/san/bin programs unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	GEOGATE_BIN=$(abspath build/san/bin) GEOGATE_SANITIZED=1 \
	    timeout 1500 $(PYTHON) tests/integration/run.py

FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -I. $(PKG_CFLAGS)

build/fuzz/%: tests/fuzz/%.c $(LIB_SRC) $(DEPS_STAMP) | $(PROTO_GEN)
	@mkdir -p build/fuzz
	clang $(FUZZ_FLAGS) -o $@ $< $(LIB_SRC) $(PKG_LIBS) -lm -pthread

fuzz: $(FUZZ_TARGETS)
	@set -e; for f in $(FUZZ_TARGETS); do \
	    name=$$(basename $$f); mkdir -p build/fuzz/corpus-$$name; \
	    echo "== $$name for $(FUZZ_TIME)s"; \
	    $$f -max_total_time=$(FUZZ_TIME) -timeout=5 -rss_limit_mb=2048 \
	        build/fuzz/corpus-$$name tests/fuzz/seeds/$$name 2>&1 | tail -4; done

test: $(DEPS_STAMP)
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory sanitize
	$(MAKE) --no-print-directory fuzz FUZZ_TIME=15

# Each script writes its part of docs/BENCHMARKS.md (the proxy benchmark the head of the
# file, the others the sections between their markers).  The chaos soak comes last: it
# exits 1 when one of its goals is not met.
bench: all
	$(PYTHON) tests/bench/run_bench.py --out docs/BENCHMARKS.md
	$(PYTHON) tests/bench/run_repl_bench.py --out docs/BENCHMARKS.md
	$(PYTHON) tests/bench/run_failover_bench.py --out docs/BENCHMARKS.md
	$(PYTHON) tests/bench/run_backfill_bench.py --out docs/BENCHMARKS.md
	$(PYTHON) tests/bench/run_restore_bench.py --out docs/BENCHMARKS.md
	$(PYTHON) tests/bench/run_client_bench.py --out docs/BENCHMARKS.md
	$(PYTHON) tests/bench/run_chaos.py --duration 600 --out docs/BENCHMARKS.md

# The three-region lab: first a write at one region read back at the others, then the
# lab stays up (Ctrl-C stops it; DEMO_SECONDS=N for a bounded run).  `make demo-site`
# is the one-site version (two memcached + one gateway).
demo: all
	$(PYTHON) deploy/lab/lab.py demo
	$(PYTHON) deploy/lab/lab.py up

demo-site: all
	$(PYTHON) deploy/demo.py

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin proto/*.pb-c.c proto/*.pb-c.h

-include $(LIB_OBJ:.o=.d) $(BUILD)/gateway/main.d $(WANEM_SRC:%.c=$(BUILD)/%.d) \
	$(CTL_SRC:%.c=$(BUILD)/%.d) $(BENCH_SRC:%.c=$(BUILD)/%.d) $(UNIT_SRC:%.c=$(BUILD)/%.d) \
	$(BUILD)/tests/tools/wan_testd.d
