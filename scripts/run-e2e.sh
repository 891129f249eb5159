#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the end-to-end suite against the release build and the ASan+UBSan build at the same
# time (the tests mostly wait on sockets and timers, so two runs share the two cores well),
# then prints both summaries. Fails if either run fails. The cluster suites (test_cluster*.py:
# etcd members and three nodes per test, almost all waiting on elections and watches) runs
# as a third and fourth run beside them, so it adds little to the wall time.
set -u
cd "$(dirname "$0")/.."
mkdir -p build/logs
run() {
    local build=$1 log=$2
    shift 2
    SLBD_BUILD=$build /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" \
        ${PYTEST_ARGS:-} >"$log" 2>&1
}
CLUSTER=(tests/e2e/test_cluster.py tests/e2e/test_cluster_upgrade.py)
run build-asan build/logs/e2e-cluster-asan.log "${CLUSTER[@]}" &
cas=$!
run build build/logs/e2e-cluster-release.log "${CLUSTER[@]}" &
crel=$!
run build-asan build/logs/e2e-asan.log tests/e2e --ignore="${CLUSTER[0]}" --ignore="${CLUSTER[1]}" &
asan=$!
run build build/logs/e2e-release.log tests/e2e --ignore="${CLUSTER[0]}" --ignore="${CLUSTER[1]}"
rel=$?
wait "$asan"
as=$?
wait "$crel"
cr=$?
wait "$cas"
ca=$?
for f in build/logs/e2e-release.log build/logs/e2e-asan.log build/logs/e2e-cluster-release.log \
    build/logs/e2e-cluster-asan.log; do
    echo "=== $f"
    if grep -qE "failed|error" <(tail -1 "$f"); then
        # Show the failures in full; the summary line last.
        sed -n '/= FAILURES =/,$p' "$f" | head -400
    fi
    tail -1 "$f"
done
[ "$rel" -eq 0 ] && [ "$as" -eq 0 ] && [ "$cr" -eq 0 ] && [ "$ca" -eq 0 ]
