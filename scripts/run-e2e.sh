#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the end-to-end suite against the release build and the ASan+UBSan build at the same
# time (the tests mostly wait on sockets and timers, so two runs share the two cores well),
# then prints both summaries. Fails if either run fails.
set -u
cd "$(dirname "$0")/.."
mkdir -p build/logs
run() {
    local build=$1 log=$2
    SLBD_BUILD=$build /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e \
        ${PYTEST_ARGS:-} >"$log" 2>&1
}
run build-asan build/logs/e2e-asan.log &
asan=$!
run build build/logs/e2e-release.log
rel=$?
wait "$asan"
as=$?
for f in build/logs/e2e-release.log build/logs/e2e-asan.log; do
    echo "=== $f"
    if grep -qE "failed|error" <(tail -1 "$f"); then
        # Show the failures in full; the summary line last.
        sed -n '/= FAILURES =/,$p' "$f" | head -400
    fi
    tail -1 "$f"
done
[ "$rel" -eq 0 ] && [ "$as" -eq 0 ]
