#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make bench`: installs the benchmark's tools when missing (HAProxy, nginx, wrk, h2load), builds
# its C helpers into build/bench/, then runs bench/bench.py with the given arguments
# (--quick, --rsa, --help for the rest); BENCH_SCRIPT=bench/tcp_copy.py (`make bench-tcp`)
# runs the tcp listener's copy-mode comparison instead. Every process it starts is stopped on
# exit, Ctrl-C or failure; the results land in bench/results/<timestamp>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SLBD_BUILD:-build}

# --- tools -------------------------------------------------------------------------------
pkgs=(haproxy nginx wrk nghttp2-client openssl python3 util-linux strace libssl-dev
      build-essential)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    # Debian's nginx and haproxy packages start their system services on install; the benchmark
    # runs its own instances on its own ports, so forbid that (policy-rc.d exit 101), and only
    # for the length of this install.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod 755 /usr/sbin/policy-rc.d
        guard=/usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    rc=0
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; } || rc=$?
    [ -n "$guard" ] && $SUDO rm -f "$guard"
    [ $rc -eq 0 ] || { echo "bench: apt-get failed ($rc)" >&2; exit $rc; }
fi
# A system nginx or haproxy started despite the guard (an older install, a service manager) is
# stopped by the PID in its own pid file, never by name.
for pidfile in /run/nginx.pid /run/haproxy.pid /var/run/nginx.pid /var/run/haproxy.pid; do
    if [ -s "$pidfile" ]; then
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            echo "bench: stopping the system service with pid $pid ($pidfile)"
            kill "$pid" 2>/dev/null || true
        fi
    fi
done

# --- helpers -----------------------------------------------------------------------------
mkdir -p "$BUILD/bench"
CFLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes)
for tool in fixed-backend tlsload tlsfloor; do
    src=bench/tools/$tool.c
    bin=$BUILD/bench/$tool
    if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
        cc "${CFLAGS[@]}" -o "$bin" "$src" -lssl -lcrypto
    fi
done
for bin in "$BUILD/slbd" "$BUILD/echo-backend"; do
    [ -x "$bin" ] || { echo "bench: $bin is missing; run make first" >&2; exit 2; }
done

# --- run ---------------------------------------------------------------------------------
# 5,000 idle connections need as many descriptors in the server and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# If bench.py itself is killed (-9), the process groups it listed here are stopped on exit.
pgids=$(mktemp)
cleanup() {
    local pg
    while read -r pg; do
        [ -n "$pg" ] && kill -KILL -- "-$pg" 2>/dev/null || true
    done <"$pgids"
    rm -f "$pgids"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
rc=0
BENCH_PGID_FILE=$pgids SLBD_BUILD=$BUILD /usr/bin/python3 "${BENCH_SCRIPT:-bench/bench.py}" "$@" ||
    rc=$?
exit $rc
