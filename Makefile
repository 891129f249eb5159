# SPDX-License-Identifier: Apache-2.0
# slbd build: a static library of every module, linked into slbd, slbctl and the tests.
# `make` builds the release tree in build/; `make BUILD=asan` builds build-asan/ with
# AddressSanitizer and UndefinedBehaviorSanitizer.

BUILD ?= release
PKGS := openssl jansson libnghttp2 libcurl
CC ?= cc
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wno-unused-parameter -Isrc $(shell pkg-config --cflags $(PKGS))
LIBS := $(shell pkg-config --libs $(PKGS)) -lpthread -lm

ifeq ($(BUILD),asan)
  OUT := build-asan
  CFLAGS_MODE := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LDFLAGS_MODE := -fsanitize=address,undefined
else
  OUT := build
  CFLAGS_MODE := -O2 -g
  LDFLAGS_MODE :=
endif
CFLAGS := $(CFLAGS_BASE) $(CFLAGS_MODE) $(EXTRA_CFLAGS)
LDFLAGS := $(LDFLAGS_MODE)

LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(OUT)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(OUT)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OUT)/tests/%)
TOOLS := $(OUT)/echo-backend

all: $(OUT)/slbd $(OUT)/slbctl $(TOOLS) $(UNIT_BIN)

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(OUT)/libslb.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/slbd: $(OUT)/obj/src/main.o $(OUT)/libslb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(OUT)/slbctl: $(CLI_OBJ) $(OUT)/libslb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(OUT)/echo-backend: $(OUT)/obj/tools/echo-backend.o
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread

$(OUT)/tests/%: $(OUT)/obj/tests/unit/%.o $(OUT)/libslb.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(shell pkg-config --libs cmocka)

.PHONY: all deps run test test-unit test-e2e test-asan clean bench bench-tcp soak fmt fuzz

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

# The whole suite: unit tests of both builds, then the end-to-end suite against the release
# and the sanitizer builds side by side (scripts/run-e2e.sh).
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory BUILD=asan all
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory BUILD=asan test-unit
	@scripts/run-e2e.sh

test-unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

test-e2e: all
	SLBD_BUILD=$(OUT) /usr/bin/python3 -m pytest -q tests/e2e $(PYTEST_ARGS)

test-asan:
	@$(MAKE) --no-print-directory BUILD=asan all
	@$(MAKE) --no-print-directory BUILD=asan test-unit
	@$(MAKE) --no-print-directory BUILD=asan test-e2e

# One million requests through an https listener with slbd's RSS sampled every second
# (tests/e2e/test_soak.py; BUILD=asan for the sanitizer build). Not part of `make test`.
soak: deps all
	SLBD_SOAK=1 SLBD_BUILD=$(OUT) /usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
	    tests/e2e/test_soak.py $(PYTEST_ARGS)

fuzz: deps
	@scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

bench: deps all
	@bench/run.sh $(BENCH_ARGS)

# The tcp listener's copy modes (buffers, splice for bulk flows, splice always) side by side.
bench-tcp: deps all
	@BENCH_SCRIPT=bench/tcp_copy.py bench/run.sh $(BENCH_ARGS)

fmt:
	clang-format -i $(wildcard src/*/*.[ch] src/*.c tests/unit/*.[ch] tests/fuzz/*.c tools/*.c bench/tools/*.c)

clean:
	rm -rf build build-asan

-include $(shell find $(OUT) -name '*.d' 2>/dev/null)
