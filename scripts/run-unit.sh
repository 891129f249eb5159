#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every cmocka unit test binary given; prints one summary line and fails if any failed.
set -u
pass=0; fail=0
for t in "$@"; do
    if "$t" >"$t.log" 2>&1; then pass=$((pass + 1)); else fail=$((fail + 1)); cat "$t.log"; fi
done
echo "unit: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
