#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make run`: a demo of slbd on this machine. Starts two demo backends, slbd with a fresh
# state directory, uploads a generated certificate and creates an https listener (with an
# http listener redirecting to it and a tcp listener), then prints what to try. Ctrl-C stops
# everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SLBD_BUILD:-build}
STATE=${SLBD_DEMO_STATE:-demo-state}
ADMIN=127.0.0.1:9000
HTTPS_PORT=${HTTPS_PORT:-8443}
HTTP_PORT=${HTTP_PORT:-8080}
TCP_PORT=${TCP_PORT:-8081}

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

rm -rf "$STATE"
mkdir -p "$STATE/demo-pki"
pki="$STATE/demo-pki"
# A demo CA and a server certificate (ECDSA P-256) for localhost, valid for 90 days: longer
# than the 30 days under which slbd warns that a certificate expires soon.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=slbd demo CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n" > "$pki/ext.cnf"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 90 -extfile "$pki/ext.cnf" -out "$pki/server.crt" 2>/dev/null

for i in 1 2; do
    "$BUILD/echo-backend" --listen "127.0.0.1:900$i" --name "backend-$i" --mode http \
        > "$STATE/backend-$i.log" 2>&1 &
    pids+=($!)
done

"$BUILD/slbd" --state-dir "$STATE" --admin "$ADMIN" &
pids+=($!)
for _ in $(seq 50); do
    curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
ctl() { "$BUILD/slbctl" --admin "http://$ADMIN" --state-dir "$STATE" "$@"; }
ctl cert upload --name demo --type server --cert "$pki/server.crt" --key "$pki/server.key" \
    --json > "$STATE/cert.json"
cert_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$STATE/cert.json")
ctl group create --name web --scheduler wrr --server 127.0.0.1:9001 --server 127.0.0.1:9002 \
    --health http --health-uri /health >/dev/null
ctl listener create --name https --protocol https --bind "127.0.0.1:$HTTPS_PORT" --group web \
    --cert "$cert_id" >/dev/null
ctl listener create --from-json - >/dev/null <<JSON
{"name": "http", "protocol": "http", "bind": "127.0.0.1:$HTTP_PORT",
 "redirect_to": "https://localhost:$HTTPS_PORT"}
JSON
ctl listener create --name tcp --protocol tcp --bind "127.0.0.1:$TCP_PORT" --group web >/dev/null

cat <<MSG

slbd is running (state directory: $STATE, admin API: http://$ADMIN).
Try:
  curl --cacert $pki/ca.crt https://localhost:$HTTPS_PORT/hello
  curl -i http://localhost:$HTTP_PORT/hello          # 301 to https
  export SLBD_TOKEN=\$(cat $STATE/admin.token)
  $BUILD/slbctl --admin http://$ADMIN listener list
  $BUILD/slbctl --admin http://$ADMIN stats
  curl -s -H "Authorization: Bearer \$SLBD_TOKEN" http://$ADMIN/metrics | grep slbd_listener_bytes
Ctrl-C stops slbd and the demo backends.
MSG
wait "${pids[-1]}"
