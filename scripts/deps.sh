#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages slbd needs to build, run, test and package (`make deb`: debhelper,
# and systemd for `systemd-analyze verify` of the unit; chromium, nodejs and npm for the web
# console's tests, never needed to build or run slbd; prometheus for `promtool`, which checks
# /metrics and examples/prometheus-rules.yml, and which Debian ships only in that package;
# pebble as the ACME CA of the ACME tests);
# quiet when all are present.
set -euo pipefail
pkgs=(build-essential pkg-config libssl-dev libjansson-dev libcmocka-dev libnghttp2-dev libpcre2-dev
      zlib1g-dev
      python3 python3-pytest python3-h2 python3-cryptography curl openssl nghttp2-client wrk iproute2
      testssl.sh slowhttptest clang libclang-rt-14-dev libcurl4-openssl-dev etcd-server
      etcd-client pebble debhelper dpkg-dev fakeroot adduser systemd chromium nodejs
      prometheus)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm: Debian's package, unless the installed nodejs brings its own (NodeSource's does).
command -v npm >/dev/null || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
