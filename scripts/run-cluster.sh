#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make run-cluster`: cluster mode on this machine (docs/cluster.md). Starts a 3-member etcd
# cluster and 3 slbd nodes, a on 127.0.0.1, b on 127.0.0.2, c on 127.0.0.3 (--bind-host), all
# sharing one cluster key, plus the two demo backends of `make run`. Node a seeds the cluster
# with a certificate, a group and an https listener; b and c serve them too. Prints what to
# try; Ctrl-C stops everything. State lives in cluster-demo/ (removed at start).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SLBD_BUILD:-build}
DIR=${SLBD_CLUSTER_DIR:-cluster-demo}
ETCD_BASE=${SLBD_CLUSTER_ETCD_PORT:-12379}   # client ports BASE, BASE+10, BASE+20; peers +1
ADMIN_BASE=${SLBD_CLUSTER_ADMIN_PORT:-9100}  # admin APIs of a, b, c: BASE, BASE+1, BASE+2
HTTPS_PORT=${HTTPS_PORT:-8443}
BACKEND_PORTS=(${SLBD_DEMO_BACKEND_PORTS:-9001 9002})
PREFIX=/slbd/

command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
    echo "make run-cluster: etcd and etcdctl are needed (Debian etcd-server and etcd-client;" \
        "scripts/deps.sh installs them)" >&2
    exit 1
}
exec 9<"$0"
if ! flock -n 9; then
    echo "make run-cluster: already running from this checkout; stop it with Ctrl-C first" >&2
    exit 1
fi
ports=("${BACKEND_PORTS[@]}" "$HTTPS_PORT")
for i in 0 1 2; do
    ports+=($((ETCD_BASE + 10 * i)) $((ETCD_BASE + 10 * i + 1)) $((ADMIN_BASE + i)))
done
for port in "${ports[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "make run-cluster: port $port is in use; it needs ports ${ports[*]}" >&2
        exit 1
    fi
done

pids=() node_pids=()
cleanup() {
    trap - EXIT INT TERM
    # The slbd nodes first (they leave the registry while etcd is there), then etcd and the
    # backends; each is waited for.
    for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${node_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

rm -rf "$DIR"
mkdir -p "$DIR/pki"
pki="$DIR/pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=slbd demo CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3\n" > "$pki/ext.cnf"
openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 90 -extfile "$pki/ext.cnf" -out "$pki/server.crt" 2>/dev/null
# The cluster key: 32 random bytes, readable by slbd only, never stored in etcd. One admin
# token for the three nodes (each would make its own), so that `slbctl stats --cluster`,
# which asks every node with the same token, works.
(umask 077 && head -c 32 /dev/urandom > "$DIR/cluster.key" &&
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/admin.token" &&
    for n in a b c; do mkdir -p "$DIR/node-$n" && cp "$DIR/admin.token" "$DIR/node-$n/"; done)

initial="" endpoints=""
for i in 0 1 2; do
    initial+="${initial:+,}e$i=http://127.0.0.1:$((ETCD_BASE + 10 * i + 1))"
    endpoints+="${endpoints:+,}http://127.0.0.1:$((ETCD_BASE + 10 * i))"
done
for i in 0 1 2; do
    c=$((ETCD_BASE + 10 * i)) p=$((ETCD_BASE + 10 * i + 1))
    etcd --name "e$i" --data-dir "$DIR/etcd$i" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$p" \
        --initial-advertise-peer-urls "http://127.0.0.1:$p" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token "slbd-demo-$$" > "$DIR/etcd$i.log" 2>&1 9<&- &
    pids+=($!)
done
export ETCDCTL_API=3
for _ in $(seq 100); do
    etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done

for i in 1 2; do
    "$BUILD/echo-backend" --listen "127.0.0.1:${BACKEND_PORTS[i - 1]}" --name "backend-$i" \
        --mode http > "$DIR/backend-$i.log" 2>&1 9<&- &
    pids+=($!)
done

names=(a b c)
start_node() { # index
    local i=$1 n=${names[$1]}
    "$BUILD/slbd" --state-dir "$DIR/node-$n" --admin "127.0.0.1:$((ADMIN_BASE + i))" \
        --cluster "$endpoints" --node "$n" --cluster-key-file "$DIR/cluster.key" \
        --cluster-prefix "$PREFIX" --bind-host "127.0.0.$((i + 1))" \
        > "$DIR/node-$n.log" 2>&1 9<&- &
    node_pids+=($!)
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$((ADMIN_BASE + i))/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "make run-cluster: node $n did not start; see $DIR/node-$n.log" >&2
    tail -20 "$DIR/node-$n.log" >&2
    exit 1
}
start_node 0 # a seeds the empty prefix
ctl() { # node-index args...
    local i=$1
    shift
    "$BUILD/slbctl" --admin "http://127.0.0.1:$((ADMIN_BASE + i))" \
        --state-dir "$DIR/node-${names[$i]}" "$@"
}
cert_id=$(ctl 0 --json cert upload --name demo --type server --cert "$pki/server.crt" \
    --key "$pki/server.key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
ctl 0 group create --name web --scheduler wrr --server "127.0.0.1:${BACKEND_PORTS[0]}" \
    --server "127.0.0.1:${BACKEND_PORTS[1]}" --health http --health-uri /health >/dev/null
ctl 0 listener create --name https --protocol https --bind "127.0.0.1:$HTTPS_PORT" \
    --group web --cert "$cert_id" >/dev/null
start_node 1
start_node 2

cat <<MSG

3 etcd members ($endpoints) and 3 slbd nodes are running (logs and state in $DIR/):
  node a: https://127.0.0.1:$HTTPS_PORT  admin http://127.0.0.1:$ADMIN_BASE
  node b: https://127.0.0.2:$HTTPS_PORT  admin http://127.0.0.1:$((ADMIN_BASE + 1))
  node c: https://127.0.0.3:$HTTPS_PORT  admin http://127.0.0.1:$((ADMIN_BASE + 2))
The nodes share one admin token, $DIR/admin.token (copied into each state directory).
Try:
  for h in 1 2 3; do curl -s --cacert $pki/ca.crt --resolve localhost:$HTTPS_PORT:127.0.0.\$h \\
      https://localhost:$HTTPS_PORT/hello | head -c 80; echo; done
  $BUILD/slbctl --admin http://127.0.0.1:$ADMIN_BASE --state-dir $DIR/node-a cluster status
  # a change on node b is served by a and c:
  $BUILD/slbctl --admin http://127.0.0.1:$((ADMIN_BASE + 1)) --state-dir $DIR/node-b \\
      server set-weight web 127.0.0.1:${BACKEND_PORTS[1]} 0
  $BUILD/slbctl --admin http://127.0.0.1:$((ADMIN_BASE + 2)) --state-dir $DIR/node-c group show web
  $BUILD/slbctl --admin http://127.0.0.1:$ADMIN_BASE --state-dir $DIR/node-a stats --cluster
  # what etcd holds (no private key in the clear):
  ETCDCTL_API=3 etcdctl --endpoints $endpoints get --prefix $PREFIX --keys-only
  # static stability: stop etcd (kill the etcd pids), traffic goes on, writes answer 503
  $BUILD/slbctl --admin http://127.0.0.1:$ADMIN_BASE --state-dir $DIR/node-a \
      cluster export /tmp/slbd-export
Ctrl-C stops the nodes, etcd and the backends.
MSG
wait "${node_pids[0]}"
