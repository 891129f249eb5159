#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds every libFuzzer target in tests/fuzz with clang (ASan + UBSan), replays the saved
# regression inputs, then fuzzes each target for SECONDS (default 60) from a copy of its seed
# corpus. One line per target; exits non-zero when any target fails to build or crashes.
#
# Usage: scripts/fuzz.sh [SECONDS]
# Environment:
#   FUZZ_TARGETS  space-separated subset of targets (e.g. "http_request chunked"); default all
#   FUZZ_JOBS     targets fuzzed at the same time; default the number of CPUs
#   CLANG         the compiler; default clang
#
# Everything is written under build-fuzz/: obj/ and libslb.a (the library built with clang,
# never the gcc-built one), the fuzz_* binaries, corpus/<target>/ (the seeds plus what the runs
# found; kept between runs so fuzzing picks up where it stopped), logs/<target>.log and
# crashes/<target>/ (the input of any crash, timeout or leak). The repository is only read.
#
# A crash becomes a regression input: copy it from build-fuzz/crashes/<target>/ into
# tests/fuzz/regressions/<target>/ under a name that says what it was. Every run replays those
# inputs first, one by one; a target with a failing input is reported and not fuzzed.
set -euo pipefail

SECONDS_PER_TARGET=${1:-60}
case $SECONDS_PER_TARGET in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=build-fuzz
CLANG=${CLANG:-clang}
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

# --- toolchain ------------------------------------------------------------------------------

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "fuzz: $CLANG not found; install it with: apt-get install clang libclang-rt-14-dev" >&2
    exit 2
fi
mkdir -p "$OUT/obj" "$OUT/logs" "$OUT/crashes" "$OUT/corpus"
probe=$OUT/obj/probe
cat >"$probe.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    return d && n > 1 ? 0 : 0;
}
EOF
if ! "$CLANG" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" >"$probe.log" 2>&1; then
    echo "fuzz: $CLANG cannot link -fsanitize=fuzzer (missing libFuzzer runtime?)" >&2
    echo "fuzz: install it with: apt-get install libclang-rt-14-dev" >&2
    sed 's/^/    /' "$probe.log" >&2
    exit 2
fi

PKG_CFLAGS=$(pkg-config --cflags openssl jansson libnghttp2 libcurl libpcre2-8 zlib)
PKG_LIBS="$(pkg-config --libs openssl jansson libnghttp2 libcurl libpcre2-8 zlib) -lpthread -lm"
# -O1 keeps the fuzzers fast while the stack traces stay readable; UBSan findings abort so
# libFuzzer keeps the input. Library warnings are shown but do not fail the build: another
# compiler may warn where gcc did not, and that is the library's business, not the fuzzer's.
COMMON="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Isrc $PKG_CFLAGS \
-fsanitize=address,undefined -fno-sanitize-recover=undefined \
-Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter"
# src/core/version.c includes the header the Makefile writes from VERSION and git describe.
make --no-print-directory -s build/gen/slb_build_version.h
COMMON="$COMMON -Ibuild/gen"

# --- the library, compiled with clang --------------------------------------------------------

# An object is stale when it is missing or older than its source or any header it included
# (from the -MMD dependency file clang writes beside it).
needs_build() { # needs_build SRC OBJ
    local src=$1 obj=$2 dep
    [ -e "$obj" ] && [ -e "$obj.d" ] || return 0
    [ "$src" -nt "$obj" ] && return 0
    for dep in $(sed -e 's/\\$//' -e 's/^[^:]*://' "$obj.d"); do
        [ -e "$dep" ] || return 0
        [ "$dep" -nt "$obj" ] && return 0
    done
    return 1
}

lib_src=()
for f in src/*/*.c; do
    case $f in src/cli/*) continue ;; esac
    lib_src+=("$f")
done
stale=()
lib_obj=()
for f in "${lib_src[@]}"; do
    o=$OUT/obj/${f%.c}.o
    lib_obj+=("$o")
    if needs_build "$f" "$o"; then
        stale+=("$f")
    fi
done
if [ ${#stale[@]} -gt 0 ]; then
    echo "fuzz: compiling ${#stale[@]} library file(s) with $CLANG"
    export CLANG OUT COMMON
    if ! printf '%s\n' "${stale[@]}" | xargs -P "$JOBS" -I{} sh -c '
        o="$OUT/obj/$(echo "{}" | sed "s/\.c$//").o"
        mkdir -p "$(dirname "$o")"
        $CLANG $COMMON -fsanitize=fuzzer-no-link -MMD -MF "$o.d" -c "{}" -o "$o.tmp" &&
            mv "$o.tmp" "$o"
    '; then
        echo "fuzz: the library does not compile with $CLANG" >&2
        exit 1
    fi
fi
lib=$OUT/libslb.a
rebuild_lib=0
[ -e "$lib" ] || rebuild_lib=1
for o in "${lib_obj[@]}"; do
    [ "$o" -nt "$lib" ] && rebuild_lib=1
done
if [ $rebuild_lib = 1 ]; then
    rm -f "$lib"
    ar rcs "$lib" "${lib_obj[@]}"
fi

# --- the targets -----------------------------------------------------------------------------

all_targets=()
for f in tests/fuzz/fuzz_*.c; do
    t=${f#tests/fuzz/fuzz_}
    all_targets+=("${t%.c}")
done
targets=(${FUZZ_TARGETS:-${all_targets[@]}})

# Longest input per target: past the parsers' limits (so those paths are reachable) but not
# so long that rescanning whole inputs slows the search down.
max_len() {
    case $1 in
    http_request | http_response | rewrite | h2) echo 8192 ;;
    chunked) echo 12288 ;;
    proxyproto) echo 4096 ;;
    cert | config) echo 16384 ;;
    *) echo 4096 ;;
    esac
}

declare -A result
built=()
for t in "${targets[@]}"; do
    src=tests/fuzz/fuzz_$t.c
    bin=$OUT/fuzz_$t
    if [ ! -f "$src" ]; then
        result[$t]="fuzz $t: no such target ($src)"
        continue
    fi
    if needs_build "$src" "$bin" || [ "$lib" -nt "$bin" ]; then
        # shellcheck disable=SC2086
        if ! "$CLANG" $COMMON -Werror -fsanitize=fuzzer -MMD -MF "$bin.d" "$src" "$lib" \
            $PKG_LIBS -o "$bin" >"$OUT/logs/$t.build.log" 2>&1; then
            result[$t]="fuzz $t: BUILD FAILED (see $OUT/logs/$t.build.log)"
            sed 's/^/    /' "$OUT/logs/$t.build.log" | head -n 20 >&2
            continue
        fi
    fi
    built+=("$t")
done

# Replays the regression inputs, then fuzzes; writes the target's one-line result to a file.
run_target() {
    local t=$1 bin=$OUT/fuzz_$1 log=$OUT/logs/$1.log res=$OUT/logs/$1.result
    local crashes=$OUT/crashes/$t corpus=$OUT/corpus/$t regs=tests/fuzz/regressions/$t
    mkdir -p "$crashes" "$corpus"
    : >"$log"
    if [ -d "$regs" ] && [ -n "$(ls -A "$regs" 2>/dev/null)" ]; then
        # One run per input, so the report counts every input that still fails.
        local f failed=0 total=0 first=""
        : >"$OUT/logs/$t.regressions.log"
        for f in "$regs"/*; do
            total=$((total + 1))
            if ! "$bin" -rss_limit_mb=2048 -timeout=25 "$f" >"$OUT/logs/$t.one.log" 2>&1; then
                failed=$((failed + 1))
                [ -n "$first" ] || first="$f: $(summary "$OUT/logs/$t.one.log")"
                cat "$OUT/logs/$t.one.log" >>"$OUT/logs/$t.regressions.log"
            fi
        done
        rm -f "$OUT/logs/$t.one.log"
        if [ $failed -gt 0 ]; then
            echo "fuzz $t: REGRESSION FAILED ($failed of $total inputs; first: $first);" \
                "log: $OUT/logs/$t.regressions.log" >"$res"
            return
        fi
    fi
    if [ -d "tests/fuzz/corpus/$t" ]; then
        cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    fi
    local rc=0
    "$bin" -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$t")" -timeout=25 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" \
        >"$log" 2>&1 || rc=$?
    if [ $rc -eq 0 ]; then
        local runs
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "fuzz $t: ok (${runs:-?} runs)" >"$res"
        return
    fi
    local input
    input=$(sed -n 's/^artifact_prefix=.*; Test unit written to //p' "$log" | tail -n 1)
    echo "fuzz $t: CRASH ($(summary "$log")); input: ${input:-none}; log: $log" >"$res"
}

# The most telling line of a libFuzzer log: a harness check, else the sanitizer summary.
summary() {
    local line
    line=$(grep -m 1 -E 'check failed|^SUMMARY: ' "$1" || true)
    [ -n "$line" ] || line=$(grep -m 1 -E '^==[0-9]+==' "$1" || true)
    [ -n "$line" ] || line="exit status without a report"
    echo "$line" | sed 's/^==[0-9]*== *//'
}

running=0
for t in "${built[@]}"; do
    rm -f "$OUT/logs/$t.result"
    run_target "$t" &
    running=$((running + 1))
    if [ $running -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait

status=0
for t in "${targets[@]}"; do
    line=${result[$t]:-}
    if [ -z "$line" ]; then
        line=$(cat "$OUT/logs/$t.result" 2>/dev/null || echo "fuzz $t: no result")
    fi
    echo "$line"
    case $line in *": ok ("*) ;; *) status=1 ;; esac
done
exit $status
