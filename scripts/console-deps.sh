#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The console's test dependencies (console/package-lock.json: playwright-core, axe-core),
# installed with `npm ci` when node_modules does not match the lock file; quiet otherwise.
# Only the tests and `make console` need them: the console itself ships as committed files
# embedded in slbd (src/admin/ui_assets.c), and Node.js is never needed to build or run slbd.
set -euo pipefail
cd "$(dirname "$0")/../console"
if ! command -v npm >/dev/null; then
    echo "console-deps: npm is missing (scripts/deps.sh installs nodejs and npm)" >&2
    exit 1
fi
# npm writes node_modules/.package-lock.json on install: the same dependencies as the lock.
if [ -f node_modules/.package-lock.json ] &&
    python3 - <<'PY'
import json, sys
lock = json.load(open("package-lock.json"))["packages"]
have = json.load(open("node_modules/.package-lock.json"))["packages"]
want = {k: v.get("version") for k, v in lock.items() if k}
got = {k: v.get("version") for k, v in have.items()}
sys.exit(0 if want == got else 1)
PY
then
    exit 0
fi
echo "console-deps: npm ci (console/package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
