# SPDX-License-Identifier: Apache-2.0
# slbd build: a static library of every module, linked into slbd, slbctl and the tests.
# `make` builds the release tree in build/; `make BUILD=asan` builds build-asan/ with
# AddressSanitizer and UndefinedBehaviorSanitizer.

BUILD ?= release
PKGS := openssl jansson libnghttp2 libcurl libpcre2-8 zlib
CC ?= cc
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-Wno-unused-parameter -Isrc $(shell pkg-config --cflags $(PKGS))
LIBS := $(shell pkg-config --libs $(PKGS)) -lpthread -lm

# The version lives in VERSION; `git describe` is added when building from a git checkout, or
# read from .git-describe in a copy that `make deb` made (a tarball has neither: VERSION alone).
VERSION := $(shell cat VERSION)
GIT_DESCRIBE := $(or $(if $(wildcard .git),$(shell git describe --tags --always --dirty 2>/dev/null)),$(shell cat .git-describe 2>/dev/null))

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
LDFLAGS := $(LDFLAGS_MODE) $(EXTRA_LDFLAGS)

LIB_SRC := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC := $(wildcard src/cli/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(OUT)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(OUT)/obj/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OUT)/tests/%)
TOOLS := $(OUT)/echo-backend $(OUT)/rules-bench

all: $(OUT)/slbd $(OUT)/slbctl $(TOOLS) $(UNIT_BIN)

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Rewritten only when its text changes, so an unchanged version rebuilds nothing.
$(OUT)/gen/slb_build_version.h: FORCE
	@mkdir -p $(dir $@)
	@printf '#define SLB_VERSION "%s"\n#define SLB_GIT_DESCRIBE "%s"\n' '$(VERSION)' \
	    '$(GIT_DESCRIBE)' >$@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(OUT)/obj/src/core/version.o: $(OUT)/gen/slb_build_version.h
$(OUT)/obj/src/core/version.o: CFLAGS += -I$(OUT)/gen

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

programs: $(OUT)/slbd $(OUT)/slbctl

.PHONY: all programs deps run test test-unit test-e2e test-asan clean bench bench-rules bench-sched bench-save bench-scale bench-tcp \
	run-cluster bench-cluster soak fmt fuzz install uninstall deb console console-test FORCE

deps:
	@scripts/deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo.sh

# Cluster mode on this machine: 3 etcd members and 3 slbd nodes on 127.0.0.1-3 (docs/cluster.md).
run-cluster: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-cluster.sh

# The whole suite: unit tests of both builds, then the end-to-end suite against the release
# and the sanitizer builds side by side (scripts/run-e2e.sh).
test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory BUILD=asan all
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory BUILD=asan test-unit
	@$(MAKE) --no-print-directory console-test
	@scripts/run-e2e.sh

# The web console (docs/console.md): console/src is embedded into src/admin/ui_assets.c, which
# is committed so that `make` needs no Node.js. `make console` regenerates it and runs the
# console's JavaScript unit tests; the browser test is tests/e2e/test_console.py (make test).
console: console-test
	/usr/bin/python3 scripts/console-embed.py
	/usr/bin/python3 scripts/console-embed.py --check

console-test:
	@scripts/console-deps.sh
	@for f in $$(find console/src/js -name '*.js'); do \
	    node --check --input-type=module <"$$f" || { echo "syntax error in $$f"; exit 1; }; done
	@cd console && node --test --test-reporter=dot test/unit/

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

# Cost of one forwarding-rule lookup for 10 and 1,000 rules (docs/benchmarks.md).
bench-rules: $(OUT)/rules-bench
	@$(OUT)/rules-bench

$(OUT)/rules-bench: $(OUT)/obj/bench/tools/rules-match.o $(OUT)/libslb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Cost of one backend pick for groups of 10 and 5,000 servers, and memory per server.
bench-sched: $(OUT)/sched-bench
	@$(OUT)/sched-bench

$(OUT)/sched-bench: $(OUT)/obj/bench/tools/sched-pick.o $(OUT)/libslb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# What writing config.json costs after a weight change at scale, serializing and fsync apart.
bench-save: $(OUT)/save-bench
	@$(OUT)/save-bench $(BENCH_ARGS)

$(OUT)/save-bench: $(OUT)/obj/bench/tools/config-save.o $(OUT)/libslb.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# How fast a change made on one node is served by the others, p50/p99 (docs/cluster.md).
bench-cluster: deps all
	@SLBD_BUILD=$(OUT) /usr/bin/python3 bench/cluster.py $(BENCH_ARGS)

# The tcp listener's copy modes (buffers, splice for bulk flows, splice always) side by side.
# SNI and changes at scale: 10,000 certificates, 1,000 listeners, vs 10/1 and HAProxy
# (docs/benchmarks.md, "Scale").
bench-scale: all
	@/usr/bin/python3 bench/scale.py $(BENCH_ARGS)

bench-tcp: deps all
	@BENCH_SCRIPT=bench/tcp_copy.py bench/run.sh $(BENCH_ARGS)

fmt:
	clang-format -i $(wildcard src/*/*.[ch] src/*.c tests/unit/*.[ch] tests/fuzz/*.c tools/*.c bench/tools/*.c)

# ---- installation (docs/operations.md) ----
# The unit's ExecStart names SBINDIR. Only /etc/logrotate.d is read by logrotate, so SYSCONFDIR
# stays /etc whatever PREFIX is.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INSTALLED := $(SBINDIR)/slbd $(BINDIR)/slbctl $(MANDIR)/man8/slbd.8 $(MANDIR)/man1/slbctl.1 \
	$(BASHCOMPDIR)/slbctl $(UNITDIR)/slbd.service $(SYSCONFDIR)/logrotate.d/slbd

install: programs
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	install -m 0755 $(OUT)/slbd $(DESTDIR)$(SBINDIR)/slbd
	install -m 0755 $(OUT)/slbctl $(DESTDIR)$(BINDIR)/slbctl
	install -m 0644 dist/man/slbd.8 $(DESTDIR)$(MANDIR)/man8/slbd.8
	install -m 0644 dist/man/slbctl.1 $(DESTDIR)$(MANDIR)/man1/slbctl.1
	install -m 0644 dist/bash-completion/slbctl $(DESTDIR)$(BASHCOMPDIR)/slbctl
	sed 's|@SBINDIR@|$(SBINDIR)|g' dist/systemd/slbd.service.in >$(DESTDIR)$(UNITDIR)/slbd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/slbd.service
	install -m 0644 dist/logrotate/slbd $(DESTDIR)$(SYSCONFDIR)/logrotate.d/slbd

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

# A Debian package built by dpkg-buildpackage in a copy of the sources under build/deb/, so the
# .deb and its companions land in build/deb/ and not in the repository's parent directory.
# nocheck: the package build does not run the test suite (`make test` does).
DEB_DIR := build/deb
DEB_SRC := Makefile VERSION src tools tests/unit dist debian

deb: deps
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_DIR)/slbd-$(VERSION)
	tar -cf - $(DEB_SRC) | tar -C $(DEB_DIR)/slbd-$(VERSION) -xf -
	echo '$(GIT_DESCRIBE)' >$(DEB_DIR)/slbd-$(VERSION)/.git-describe
	cd $(DEB_DIR)/slbd-$(VERSION) && DEB_BUILD_OPTIONS="nocheck parallel=2" \
	    DEB_BUILD_PROFILES=nocheck dpkg-buildpackage -b -uc -us
	@ls $(DEB_DIR)/*.deb

clean:
	rm -rf build build-asan

-include $(shell find $(OUT)/obj -name '*.d' -type f 2>/dev/null)
