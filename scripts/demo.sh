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
ADMIN=${SLBD_DEMO_ADMIN:-127.0.0.1:9000}
HTTPS_PORT=${HTTPS_PORT:-8443}
HTTP_PORT=${HTTP_PORT:-8080}
TCP_PORT=${TCP_PORT:-8081}
BACKEND_PORTS=(${SLBD_DEMO_BACKEND_PORTS:-9001 9002})

# One demo at a time. A second `make run` would delete the running demo's state directory
# (its certificate, token and config) and then fail on its ports, leaving both broken: refuse
# before touching anything. The lock is on this script, held by this shell and the programs
# it starts until they are gone.
exec 9<"$0"
if ! flock -n 9; then
    echo "make run: another demo is already running from this checkout (state directory" \
        "$STATE); stop it with Ctrl-C in its terminal first" >&2
    exit 1
fi
if [ -e "$STATE/lock" ] && ! flock -n "$STATE/lock" true; then
    echo "make run: an slbd (pid $(tr -d '\n' < "$STATE/lock")) is using $STATE; stop it" \
        "first: the demo starts with a fresh state directory" >&2
    exit 1
fi
for port in "${ADMIN##*:}" "$HTTPS_PORT" "$HTTP_PORT" "$TCP_PORT" "${BACKEND_PORTS[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "make run: port $port is already in use (another demo or program); the demo" \
            "needs ports ${ADMIN##*:} $HTTPS_PORT $HTTP_PORT $TCP_PORT ${BACKEND_PORTS[*]}" >&2
        exit 1
    fi
done

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
    "$BUILD/echo-backend" --listen "127.0.0.1:${BACKEND_PORTS[i - 1]}" --name "backend-$i" \
        --mode http > "$STATE/backend-$i.log" 2>&1 9<&- &
    pids+=($!)
done

"$BUILD/slbd" --state-dir "$STATE" --admin "$ADMIN" 9<&- &
pids+=($!)
for _ in $(seq 50); do
    curl -sf "http://$ADMIN/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
ctl() { "$BUILD/slbctl" --admin "http://$ADMIN" --state-dir "$STATE" "$@"; }
ctl cert upload --name demo --type server --cert "$pki/server.crt" --key "$pki/server.key" \
    --json > "$STATE/cert.json"
cert_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$STATE/cert.json")
ctl group create --name web --scheduler wrr --server "127.0.0.1:${BACKEND_PORTS[0]}" \
    --server "127.0.0.1:${BACKEND_PORTS[1]}" --health http --health-uri /health >/dev/null
ctl listener create --name https --protocol https --bind "127.0.0.1:$HTTPS_PORT" --group web \
    --cert "$cert_id" >/dev/null
ctl listener create --from-json - >/dev/null <<JSON
{"name": "http", "protocol": "http", "bind": "127.0.0.1:$HTTP_PORT",
 "redirect_to": "https://localhost:$HTTPS_PORT"}
JSON
ctl listener create --name tcp --protocol tcp --bind "127.0.0.1:$TCP_PORT" --group web >/dev/null

cat <<MSG

slbd is running (state directory: $STATE, admin API: http://$ADMIN).
Web console: http://$ADMIN/  (sign in with the content of $STATE/admin.token)
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
