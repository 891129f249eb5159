# SPDX-License-Identifier: Apache-2.0
"""Cluster mode (docs/cluster.md) end to end: real etcd members on loopback ports and slbd
nodes on 127.0.0.1, 127.0.0.2, 127.0.0.3 (--bind-host) acting as one load balancer. What one
node is told, every node serves; a ticket issued by one resumes on another; losing an etcd
member changes nothing, losing all of them keeps every node serving and refuses writes; a
killed node, a late node and a node whose watch fell behind a compaction all converge; etcd
never holds a private key in the clear. Skipped when etcd is not installed."""

import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time

import pytest

import slbd_harness as h
from cluster_util import cluster, cluster_factory, needs_etcd, shared_etcd  # noqa: F401
from http_util import hx  # noqa: F401
from pki import pki, tls_block, upload_server  # noqa: F401

pytestmark = [*needs_etcd, pytest.mark.timeout(120)]

NOHC = h.no_health_check()
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def https_site(node, hx, pki, cert="server", listener="web", group="g"):
    """An echo backend in group g, certificate cert and an https listener, all created through
    node's API. The listener binds 127.0.0.1:PORT; each node binds its own host on PORT.
    Returns (port, certificate id, backend)."""
    b = hx.backend(f"be-{listener}")
    node.add_group(group, [b.server()], health_check=NOHC)
    cid = upload_server(node, pki, cert)
    for _ in range(5):
        port = h.free_port()
        st, js = node.api.post("/v1/listeners", {
            "name": listener, "protocol": "https", "bind": f"127.0.0.1:{port}",
            "backend_group": group, "tls": tls_block([cid])})
        if st == 201:
            return port, cid, b
        if (js or {}).get("error", {}).get("code") != "bind_failed":
            raise h.HarnessError(f"POST /v1/listeners {listener}: {st} {js}")
    raise h.HarnessError("no bindable port")


def verify_ctx(pki, version=None):
    ctx = ssl.create_default_context(cafile=pki.root)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def https_get(host, port, ctx, session=None, path="/c", hostname="localhost"):
    """One request on a new TLS connection to host:port, read to the end. Returns
    (status, reused, session, sha256 of the served certificate)."""
    with socket.create_connection((host, port), timeout=h.scaled(10)) as raw:
        with ctx.wrap_socket(raw, server_hostname=hostname, session=session) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
            return status, s.session_reused, s.session, fp


def serves(host, port, ctx, want_fp=None):
    """True once host:port answers 200 over TLS (with the certificate want_fp, when given)."""
    try:
        st, _, _, fp = https_get(host, port, ctx)
    except (OSError, ssl.SSLError, ValueError, IndexError):
        return False
    return st == 200 and (want_fp is None or fp == want_fp)


def wait_served(hosts, port, ctx, want_fp=None, timeout=10, what="the site"):
    for host in hosts:
        h.wait_until(lambda: serves(host, port, ctx, want_fp), timeout,
                     f"{what} served on {host}:{port}", interval=0.1)


def unverified_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def group_servers(node, group):
    st, js = node.api.get(f"/v1/groups/{group}")
    if st != 200:
        return None
    return sorted((s["address"], s["port"]) for s in js.get("servers", []))


def etcd_reachable(js):
    """What GET /v1/cluster says of this node's link to etcd: "connected" true/false."""
    return js.get("connected") is True


def retry_write(fn, timeout=15, what="the write"):
    """Writes may meet an etcd election (a member just died): retry 503s until timeout."""
    def attempt():
        r = fn()
        if r.status == 503:
            return False
        return r
    return h.wait_until(attempt, timeout, what, interval=0.2)


# --------------------------------------------------------------------------------------------
# One load balancer
# --------------------------------------------------------------------------------------------


def test_created_on_a_served_by_b_and_c(cluster, hx, pki):
    a, b, c = cluster.nodes
    port, cid, _ = https_site(a, hx, pki)
    wait_served(HOSTS, port, verify_ctx(pki), pki.fingerprint("server"))
    doc = cluster.converged()
    assert [x["name"] for x in doc["listeners"]] == ["web"]
    for n in (b, c):
        st, js = n.api.get(f"/v1/certificates/{cid}")
        assert st == 200, (n.name, st, js)


def test_cluster_view_lists_every_node(cluster):
    a, b, c = cluster.nodes
    a.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port(), "weight": 100}],
                health_check=NOHC)
    cluster.converged()

    def all_listed():
        js = b.cluster()
        names = sorted(n.get("name") for n in js.get("nodes", []))
        return js if names == ["nodea", "nodeb", "nodec"] else False
    js = h.wait_until(all_listed, 10, "GET /v1/cluster to list the three nodes")
    assert isinstance(js.get("revision"), int) and js["revision"] > 0, js
    for n in js["nodes"]:
        for field in ("name", "admin", "revision", "last_seen", "version", "state"):
            assert field in n, (field, n)
    admins = {n["name"]: n["admin"] for n in js["nodes"]}
    for node in cluster.nodes:
        assert str(node.admin_port) in admins[node.name], (node.name, admins)
    # A node stopped as an operator would revokes its lease: it leaves the list at once
    # (well within the lease's 10 s).
    assert c.stop() == 0
    h.wait_until(lambda: sorted(n["name"] for n in a.cluster()["nodes"]) == ["nodea", "nodeb"],
                 3, "node c to leave the list when stopped")


def test_certificate_replaced_on_b_served_by_a(cluster, hx, pki):
    a, b, c = cluster.nodes
    port, cid, _ = https_site(a, hx, pki)
    ctx = unverified_ctx()
    wait_served(HOSTS, port, ctx, pki.fingerprint("server"))
    st, js = b.api.put(f"/v1/certificates/{cid}", {
        "name": cid, "type": "server", "certificate": pki.chain("other"),
        "private_key": pki.key("other")})
    assert st == 200, (st, js)
    # B answered after it serves the new one; A and C follow.
    assert serves(HOSTS[1], port, ctx, pki.fingerprint("other"))
    wait_served(HOSTS, port, ctx, pki.fingerprint("other"), what="the replaced certificate")


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_ticket_from_a_resumes_on_c(cluster, hx, pki, version):
    a, b, c = cluster.nodes
    port, _, _ = https_site(a, hx, pki)
    ctx = verify_ctx(pki, getattr(ssl.TLSVersion, version))
    wait_served(HOSTS, port, ctx)
    cluster.converged()
    st, reused, sess, _ = https_get(HOSTS[0], port, ctx)
    assert st == 200 and not reused and sess is not None
    st, reused, _, _ = https_get(HOSTS[2], port, ctx, session=sess)
    assert st == 200
    assert reused, "node c did not resume a session whose ticket node a issued"
    st, reused, _, _ = https_get(HOSTS[1], port, ctx, session=sess)
    assert reused, "node b did not resume a session whose ticket node a issued"


def test_ticket_leader_death_hands_rotation_over(cluster):
    """Exactly one node rotates the shared ticket keys; when it dies (kill -9: its lease is
    not revoked, it expires), another takes over."""
    def leaders():
        return [n for n in cluster.nodes
                if n.running() and n.cluster().get("ticket_leader") is True]
    first = h.wait_until(lambda: leaders() if len(leaders()) == 1 else False, 10,
                         "one ticket leader")[0]
    first.kill9()
    new = h.wait_until(lambda: leaders() if len(leaders()) == 1 else False, 25,
                       "another node to become the ticket leader")[0]
    assert new is not first


# --------------------------------------------------------------------------------------------
# etcd failures
# --------------------------------------------------------------------------------------------


def test_one_etcd_member_killed(cluster_factory, hx, pki):
    cluster = cluster_factory(own_etcd=True)
    a, b, c = cluster.nodes
    cluster.allow_etcd_trouble()
    port, _, _ = https_site(a, hx, pki)
    ctx = verify_ctx(pki)
    wait_served(HOSTS, port, ctx)
    cluster.etcd.members[0].kill()
    for i, node in enumerate(cluster.nodes):
        r = retry_write(lambda: node.api.request("POST", "/v1/groups", {
            "name": f"after{i}", "scheduler": "rr",
            "servers": [{"address": "127.0.0.1", "port": 1000 + i}],
            "health_check": NOHC}), what=f"a write on {node.name}")
        assert r.status == 201, (node.name, r)
    doc = cluster.converged()
    assert {"after0", "after1", "after2"} <= {g["name"] for g in doc["groups"]}
    for host in HOSTS:
        assert serves(host, port, ctx), host


def test_hung_etcd_member_is_left(cluster_factory):
    """A member that stops answering without closing its connections (SIGSTOP: a network
    black hole) is left: writes go through another member and every node's watch moves on."""
    cluster = cluster_factory(own_etcd=True)
    a, b, c = cluster.nodes
    cluster.allow_etcd_trouble()
    a.add_group("before", [], health_check=NOHC)
    cluster.converged()
    m = cluster.etcd.members[0]
    m.proc.send_signal(signal.SIGSTOP)
    try:
        r = retry_write(lambda: b.api.request("POST", "/v1/groups", {
            "name": "during", "servers": [], "health_check": NOHC}), timeout=15,
            what="a write on b while member 0 hangs")
        assert r.status == 201, r
        doc = cluster.converged(timeout=40)
        assert {"before", "during"} <= {g["name"] for g in doc["groups"]}
    finally:
        m.proc.send_signal(signal.SIGCONT)


def test_concurrent_certificate_replacements_on_two_nodes(cluster, hx, pki):
    a, b, c = cluster.nodes
    port, cid, _ = https_site(a, hx, pki)
    cluster.converged()
    bodies = {"server": {"name": "s", "type": "server", "certificate": pki.chain("server"),
                         "private_key": pki.key("server")},
              "other": {"name": "o", "type": "server", "certificate": pki.chain("other"),
                        "private_key": pki.key("other")}}
    statuses = []

    def replace(node, which):
        for _ in range(5):
            statuses.append(node.api.request("PUT", f"/v1/certificates/{cid}",
                                             bodies[which]).status)
    ts = [threading.Thread(target=replace, args=(a, "server")),
          threading.Thread(target=replace, args=(b, "other"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(h.scaled(60))
    assert all(st in (200, 409) for st in statuses), statuses
    # Every replacement answered 200 counts (none lost); every node ends with the last one
    # and serves it.
    want = 1 + statuses.count(200)

    def same():
        got = {(js["version"], js["fingerprint_sha256"]) for js in
               (n.api.get(f"/v1/certificates/{cid}")[1] for n in cluster.nodes)}
        return got.pop() if len(got) == 1 and next(iter(got))[0] == want else False
    _, fp = h.wait_until(same, 10, f"the nodes to agree on version {want} of the certificate")
    wait_served(HOSTS, port, unverified_ctx(), fp)


def test_all_etcd_stopped_nodes_serve_writes_refused_then_converge(cluster_factory, hx, pki):
    cluster = cluster_factory(own_etcd=True)
    a, b, c = cluster.nodes
    cluster.allow_etcd_trouble()
    port, _, be = https_site(a, hx, pki)
    ctx = verify_ctx(pki)
    wait_served(HOSTS, port, ctx)
    before = cluster.converged()
    cluster.etcd.kill_all()
    for host in HOSTS:
        assert serves(host, port, ctx), host
    for node in cluster.nodes:
        r = node.api.request("POST", "/v1/groups", {"name": "nope", "servers": [],
                                                     "health_check": NOHC})
        assert r.status == 503 and r.error_code() == "cluster_unavailable", (node.name, r)
        h.wait_until(lambda: not etcd_reachable(node.cluster()), 10,
                     f"GET /v1/cluster on {node.name} to say etcd is unreachable")
        # /healthz stays 200 (the node serves) and says so; so does /metrics.
        r = node.api.request("GET", "/healthz", token=None)
        assert r.status == 200 and r.json["cluster"]["connected"] is False, r
        r = node.api.request("GET", "/metrics")
        assert h.parse_metrics(r.text)["slbd_cluster_connected"] == 0, r.text[:300]
    # A node restarted while etcd is away starts from its cache and serves.
    c.kill9()
    c.start()
    assert serves(HOSTS[2], port, ctx), "node c did not serve its cached state after a restart"
    assert c.config() == before
    # etcd is back: writes work on every node and all converge.
    cluster.etcd.start_all()
    for i, node in enumerate(cluster.nodes):
        r = retry_write(lambda: node.api.request("POST", "/v1/groups", {
            "name": f"back{i}", "servers": [], "health_check": NOHC}), timeout=30,
            what=f"a write on {node.name} after etcd returned")
        assert r.status == 201, (node.name, r)
    doc = cluster.converged()
    assert {"back0", "back1", "back2"} <= {g["name"] for g in doc["groups"]}
    assert "nope" not in {g["name"] for g in doc["groups"]}
    for node in cluster.nodes:
        h.wait_until(lambda: etcd_reachable(node.cluster()), 10,
                     f"GET /v1/cluster on {node.name} to say etcd is reachable again")


def test_write_waiting_for_etcd_does_not_pause_the_node(cluster_factory, hx):
    """An admin write waits for etcd on the control loop without pausing it. etcd is stopped
    with SIGSTOP (connections are accepted, nothing answers) and writes are sent: while they
    wait (one at a time, the others queued in order), the node answers GET /healthz and reads
    at once and its health checks go on (a backend killed meanwhile is marked down). The first
    write answers 503 cluster_unavailable at its deadline; the queued ones are answered in
    turn, and once etcd runs again writes succeed. (A txn that timed out may still be applied
    by etcd once it runs again: its outcome is unknown, as before; the node then takes it from
    the watch.)"""
    cluster = cluster_factory(nodes=1, etcd_members=1)
    (a,) = cluster.nodes
    cluster.allow_etcd_trouble()
    be = hx.backend("be-hc")
    a.add_group("hc", [be.server()], health_check=h.fast_health_check())
    a.wait_health("hc", be.port, "up", timeout=10)
    member = cluster.etcd.members[0]
    results = {}

    def write(name):
        results[name] = a.api.request("POST", "/v1/groups", {
            "name": name, "servers": [], "health_check": NOHC}, timeout=h.scaled(60))

    def prompt(fn):
        t0 = time.monotonic()
        r = fn()
        return r, time.monotonic() - t0

    # Each write waits about a second for etcd (one try of the txn); six keep the node busy.
    names = [f"w{i}" for i in range(6)]
    writers = [threading.Thread(target=write, args=(n,)) for n in names]
    os.kill(member.proc.pid, signal.SIGSTOP)
    try:
        for t in writers:
            t.start()
            time.sleep(0.05)
        time.sleep(0.1)
        assert writers[0].is_alive(), results
        r, took = prompt(lambda: a.api.request("GET", "/healthz", token=None))
        assert r.status == 200 and took < 0.5, (r, took)
        r, took = prompt(lambda: a.api.request("GET", "/v1/groups/hc"))
        assert r.status == 200 and took < 0.5, (r, took)
        be.kill()
        a.wait_health("hc", be.port, "down", timeout=10)
        assert writers[-1].is_alive(), f"the writes ended before the backend was down: {results}"
        writers[0].join(h.scaled(20))
        r = results["w0"]
        assert r.status == 503 and r.error_code() == "cluster_unavailable", r
    finally:
        os.kill(member.proc.pid, signal.SIGCONT)
    for t in writers:
        t.join(h.scaled(30))
        assert not t.is_alive()
    stored = set()
    for n in names:
        r = results[n]
        assert r.status == 201 or (r.status == 503 and r.error_code() == "cluster_unavailable"), r
        if r.status == 201:
            stored.add(n)
    r = retry_write(lambda: a.api.request("POST", "/v1/groups", {
        "name": "after", "servers": [], "health_check": NOHC}), timeout=30,
        what="a write once etcd runs again")
    assert r.status == 201, r
    assert int(r.headers.get("X-Slbd-Revision") or 0) > 0, r.headers
    have = {g["name"] for g in a.config()["groups"]}
    assert stored | {"after"} <= have, (have, results)


def test_write_waiting_for_etcd_outlives_its_client_and_ends_at_stop(cluster_factory):
    """A write waiting for etcd whose client hangs up is completed and its answer dropped (the
    node goes on, no descriptor leaks); a node stopped while a write waits fails that write
    at once and exits cleanly (the post-test checks catch a leak or a sanitizer report)."""
    cluster = cluster_factory(nodes=1, etcd_members=1)
    (a,) = cluster.nodes
    cluster.allow_etcd_trouble()
    member = cluster.etcd.members[0]
    body = json.dumps({"name": "gone", "servers": [], "health_check": NOHC}).encode()
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.api.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    results = {}
    os.kill(member.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", a.admin_port), timeout=5) as s:
                s.sendall(head + body)
                time.sleep(0.05)
        r = a.api.request("GET", "/healthz", token=None)
        assert r.status == 200, r

        def write():
            try:
                results["w"] = a.api.request("POST", "/v1/groups", {
                    "name": "late", "servers": [], "health_check": NOHC}, timeout=h.scaled(60))
            except (OSError, http.client.HTTPException) as e:
                results["w"] = e  # the connection closed with the node

        # Queued behind the abandoned ones, then the node stops while it waits.
        t = threading.Thread(target=write)
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), results
        assert a.stop() == 0
        assert "slbd is stopping" in a.log_text()  # the waiting write was failed at once
        t.join(h.scaled(20))
    finally:
        os.kill(member.proc.pid, signal.SIGCONT)
    assert not t.is_alive()
    r = results.get("w")
    assert isinstance(r, Exception) or (r.status == 503 and r.error_code() == "cluster_unavailable"), r
    # It starts again and takes writes (from etcd, where an abandoned write may have landed).
    a.start()
    r = retry_write(lambda: a.api.request("POST", "/v1/groups", {
        "name": "again", "servers": [], "health_check": NOHC}), timeout=30,
        what="a write after the restart")
    assert r.status == 201, r


# --------------------------------------------------------------------------------------------
# Node failures and concurrency
# --------------------------------------------------------------------------------------------


def test_node_killed_during_writes_restarts_from_cache_and_converges(cluster, hx, pki):
    a, b, c = cluster.nodes
    port, _, be = https_site(a, hx, pki)
    ctx = verify_ctx(pki)
    wait_served(HOSTS, port, ctx)
    done = threading.Event()
    failures = []

    def writer():
        for i in range(40):
            r = a.api.request("POST", "/v1/groups/g/servers",
                              {"address": "127.0.0.9", "port": 2000 + i, "weight": 0})
            if r.status != 201:
                failures.append(r)
        done.set()
    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.3)
    b.kill9()
    b.start()  # with etcd up: cache first, then the watch catches up
    t.join(h.scaled(60))
    assert done.is_set() and not failures, failures[:3]
    doc = cluster.converged()
    g = [x for x in doc["groups"] if x["name"] == "g"][0]
    assert len(g["servers"]) == 41
    assert serves(HOSTS[1], port, ctx)


def test_concurrent_writes_on_two_nodes_lose_nothing(cluster):
    a, b, c = cluster.nodes
    a.add_group("g", [], health_check=NOHC)
    cluster.converged()
    results = {}

    def add(node, base):
        out = []
        for i in range(15):
            r = node.api.request("POST", "/v1/groups/g/servers",
                                 {"address": "127.0.0.9", "port": base + i, "weight": 0})
            out.append(r.status)
        results[node.name] = out
    ts = [threading.Thread(target=add, args=(a, 3000)),
          threading.Thread(target=add, args=(b, 4000))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(h.scaled(60))
    # A write may be answered 409 conflict when its retries ran out; none may vanish.
    want = sorted([("127.0.0.9", 3000 + i) for i in range(15) if results[a.name][i] == 201] +
                  [("127.0.0.9", 4000 + i) for i in range(15) if results[b.name][i] == 201])
    assert all(s in (201, 409) for s in results[a.name] + results[b.name]), results
    assert results[a.name].count(201) + results[b.name].count(201) >= 15, results
    cluster.converged()
    for node in cluster.nodes:
        assert group_servers(node, "g") == want, node.name


def test_concurrent_certificate_replaces_on_two_nodes_converge(cluster, hx, pki):
    """Two nodes replace one certificate at the same time: conflicts are refreshed and
    retried, and every node ends up serving the version etcd holds (an event older than what
    a refresh took is not applied over it)."""
    a, b, c = cluster.nodes
    cid = upload_server(a, pki, "server")
    results = {}

    def replace(node, names):
        out = []
        for name in names:
            r = node.api.request("PUT", f"/v1/certificates/{cid}", {
                "name": cid, "type": "server", "certificate": pki.chain(name),
                "private_key": pki.key(name)})
            out.append(r.status)
        results[node.name] = out
    ts = [threading.Thread(target=replace, args=(a, ["other", "server"] * 4)),
          threading.Thread(target=replace, args=(b, ["server", "other"] * 4))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(h.scaled(60))
    assert all(s in (200, 409) for s in results[a.name] + results[b.name]), results

    def same():
        seen = set()
        for node in cluster.nodes:
            st, js = node.api.get(f"/v1/certificates/{cid}")
            if st != 200:
                return False
            seen.add((js.get("version"), js.get("fingerprint_sha256")))
        return len(seen) == 1
    h.wait_until(same, 15, "every node to serve the same version of the certificate")


def test_node_started_later_catches_up(cluster_factory, hx, pki):
    cl = cluster_factory(nodes=2)
    a, b = cl.nodes
    port, _, _ = https_site(a, hx, pki)
    b.add_group("other", [], health_check=NOHC)
    cl.converged()
    c = cl.add_node()
    doc = cl.converged()
    assert {"g", "other"} == {g["name"] for g in doc["groups"]}
    wait_served(HOSTS, port, verify_ctx(pki))


def test_compaction_forces_a_resync(cluster_factory):
    """Node c talks to etcd member 2 only; while that member is down, a and b keep writing
    (quorum holds) and etcd is compacted past what c has seen. When the member returns, c's
    watch cannot resume: it must read everything again, deletions included."""
    cl = cluster_factory(start=False, own_etcd=True)
    cl.etcd.start()
    a, b = cl.add_node(), cl.add_node()
    ms = cl.etcd.members
    c = cl.add_node(start=False)
    c.etcd_members = [ms[2]]
    c.start()
    cl.allow_etcd_trouble()
    a.add_group("old", [], health_check=NOHC)
    cl.converged()
    ms[2].kill()
    # Cut off from etcd, c serves what it has and refuses changes.
    h.wait_until(lambda: not etcd_reachable(c.cluster()), 10, "node c to lose etcd")
    r = c.api.request("POST", "/v1/groups", {"name": "fromc", "servers": [],
                                             "health_check": NOHC})
    assert r.status == 503 and r.error_code() == "cluster_unavailable", r
    for i in range(5):
        r = retry_write(lambda: a.api.request("POST", "/v1/groups", {
            "name": f"new{i}", "servers": [], "health_check": NOHC}), what="a write")
        assert r.status == 201, r
    st, _ = a.api.delete("/v1/groups/old")
    assert st == 204
    cl.etcd.compact()
    ms[2].start()
    cl.etcd.wait_healthy()
    doc = cl.converged(timeout=30)
    assert {g["name"] for g in doc["groups"]} == {f"new{i}" for i in range(5)}
    # It got there by the resync, not by a watch that could resume.
    assert "compacted" in c.log_text(), h._tail(c.log_text())


# --------------------------------------------------------------------------------------------
# What etcd holds
# --------------------------------------------------------------------------------------------


def test_etcd_holds_no_private_key(cluster, hx, pki):
    a, b, c = cluster.nodes
    https_site(a, hx, pki)
    upload_server(b, pki, "other")
    cluster.converged()
    dump = cluster.etcd.dump(cluster.prefix)
    assert cluster.prefix in dump, "nothing stored under the cluster prefix"
    assert "PRIVATE KEY" not in dump
    for name in ("server", "other"):
        body = [ln for ln in pki.key(name).splitlines() if ln and not ln.startswith("-----")]
        for ln in body:
            assert ln not in dump, f"a line of {name}'s private key is stored in etcd"
    # No node's cache may hold a plain key in a file others can read either.
    for n in cluster.nodes:
        for root, _, files in os.walk(n.state_dir):
            for f in files:
                p = os.path.join(root, f)
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    continue  # the upgrade socket, the lock
                if "PRIVATE KEY" in open(p, errors="replace").read():
                    assert os.stat(p).st_mode & 0o077 == 0, p


def test_node_with_another_cluster_key_refuses_to_start(cluster, hx, pki):
    a, b, c = cluster.nodes
    upload_server(a, pki, "server")
    cluster.converged()
    cluster.key_file = cluster.workdir / "other-cluster.key"
    cluster.key_file.write_bytes(os.urandom(32))
    os.chmod(cluster.key_file, 0o600)
    d = cluster.add_node(start=False, name="noded")
    cluster.nodes.remove(d)  # never started: nothing to check after the test
    rc, out = d.run_once(*cluster.node_args(d))
    assert rc == 1, out
    assert "cannot be opened with the cluster key" in out, out
    assert "PRIVATE KEY" not in out


def test_etcd_with_tls_client_auth(cluster_factory, hx, pki):
    cl = cluster_factory(nodes=2, tls=True)
    a, b = cl.nodes
    port, _, _ = https_site(a, hx, pki)
    wait_served(HOSTS[:2], port, verify_ctx(pki))
    st, js = b.api.post("/v1/groups", {"name": "fromb", "servers": [], "health_check": NOHC})
    assert st == 201, (st, js)
    doc = cl.converged()
    assert {"g", "fromb"} == {g["name"] for g in doc["groups"]}
    assert "PRIVATE KEY" not in cl.etcd.dump(cl.prefix)


# --------------------------------------------------------------------------------------------
# slbctl cluster
# --------------------------------------------------------------------------------------------


def slbctl(node, *args, timeout=30):
    argv = [h.binary("slbctl"), "--admin", f"http://127.0.0.1:{node.admin_port}",
            "--state-dir", node.state_dir, *args]
    p = subprocess.run([str(a) for a in argv], capture_output=True, timeout=h.scaled(timeout),
                       env=h._sanitizer_env())
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def test_slbctl_cluster_status(cluster):
    a, b, c = cluster.nodes
    a.add_group("g", [], health_check=NOHC)
    cluster.converged()
    h.wait_until(lambda: len(b.cluster().get("nodes", [])) == 3, 10, "three registered nodes")
    rc, out, err = slbctl(b, "cluster", "status")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAME", "ADMIN", "REVISION", "LAST_SEEN", "VERSION",
                                    "STATE"], out
    for n in cluster.nodes:
        row = [ln for ln in lines if ln.split()[0] == n.name]
        assert row and str(n.admin_port) in row[0], (n.name, out)
    rc, out, err = slbctl(b, "--json", "cluster", "status")
    assert rc == 0 and len(json.loads(out)["nodes"]) == 3, (out, err)


def test_slbctl_cluster_export_is_a_state_directory(cluster, hx, pki, slbd_factory):
    a, b, c = cluster.nodes
    port, cid, be = https_site(a, hx, pki)
    cluster.converged()
    out_dir = cluster.workdir / "exported"
    rc, out, err = slbctl(c, "cluster", "export", out_dir)
    assert rc == 0, err
    assert (out_dir / "config.json").is_file()
    assert (out_dir / "certs" / f"{cid}.json").is_file()
    assert os.stat(out_dir / "certs" / f"{cid}.json").st_mode & 0o077 == 0
    # A single node started from it (no --cluster) serves the same site on a new port.
    doc = json.loads((out_dir / "config.json").read_text())
    new_port = h.free_port()
    for lst in doc["listeners"]:
        lst["bind"] = f"127.0.0.1:{new_port}"
    (out_dir / "config.json").write_text(json.dumps(doc))
    single = slbd_factory(name="single", state_dir=out_dir)
    assert single.api.get(f"/v1/certificates/{cid}")[0] == 200
    assert serves("127.0.0.1", new_port, verify_ctx(pki), pki.fingerprint("server"))


def test_slbctl_stats_cluster_adds_up_the_nodes(cluster_factory, hx, pki):
    cl = cluster_factory(shared_token=True)
    a, b, c = cl.nodes
    port, _, _ = https_site(a, hx, pki)
    ctx = verify_ctx(pki)
    wait_served(HOSTS, port, ctx)
    sent = {HOSTS[0]: 2, HOSTS[1]: 3, HOSTS[2]: 4}
    for host, count in sent.items():
        for _ in range(count):
            assert https_get(host, port, ctx)[0] == 200
    # wait_served's probes count too: compare with what the nodes say one by one.

    def total():
        return sum(next(x["requests"]["total"] for x in n.stats()["listeners"]
                        if x["name"] == "web") for n in cl.nodes)
    want = total()
    assert want >= 9

    def summed():
        rc, out, err = slbctl(b, "--json", "stats", "--cluster")
        assert rc == 0, err
        js = json.loads(out)
        got = next(x["requests"]["total"] for x in js["listeners"] if x["name"] == "web")
        return js if got == total() else False
    js = h.wait_until(summed, 10, "stats --cluster to add up the three nodes")
    assert js["scope"] == "cluster"
    assert sorted((n["name"], n["ok"]) for n in js["nodes"]) == \
        [("nodea", True), ("nodeb", True), ("nodec", True)]
    g = next(x for x in js["groups"] if x["name"] == "g")
    web = next(x for x in js["listeners"] if x["name"] == "web")
    assert g["servers"][0]["requests"] == web["requests"]["total"]
    rc, out, err = slbctl(c, "stats", "--cluster")
    assert rc == 0 and "web" in out, (out, err)
    # A registered node that does not answer is named and left out (its lease still runs).
    c.kill9()
    rc, out, err = slbctl(a, "--json", "stats", "--cluster")
    assert rc == 0, err
    js = json.loads(out)
    assert "nodec" in err, err
    assert {n["name"]: n["ok"] for n in js["nodes"]} == {"nodea": True, "nodeb": True,
                                                         "nodec": False}


def test_stats_scope_cluster_adds_up_the_nodes(cluster_factory, hx, pki):
    """GET /v1/stats?scope=cluster on one node asks every other registered node (with the
    caller's token) and adds their counters to its own. A node that does not answer (stopped
    with SIGSTOP: connections accepted, nothing answered) is named under "missing" after a
    short timeout, while the asking node's control loop keeps answering."""
    cl = cluster_factory(shared_token=True)
    a, b, c = cl.nodes
    port, _, _ = https_site(a, hx, pki)
    ctx = verify_ctx(pki)
    wait_served(HOSTS, port, ctx)
    for host, count in ((HOSTS[0], 2), (HOSTS[1], 3)):
        for _ in range(count):
            assert https_get(host, port, ctx)[0] == 200

    def web(js):
        return next(x for x in js["listeners"] if x["name"] == "web")

    def own():
        return [web(n.stats()) for n in cl.nodes]

    def summed():
        st, js = c.api.get("/v1/stats?scope=cluster")
        assert st == 200, js
        mine = own()
        if web(js)["requests"]["total"] != sum(x["requests"]["total"] for x in mine):
            return False
        return js, mine
    js, mine = h.wait_until(summed, 10, "scope=cluster to add up the three nodes")
    assert mine[0]["requests"]["total"] >= 2 and mine[1]["requests"]["total"] >= 3, mine
    assert web(js)["connections"] == sum(x["connections"] for x in mine)
    assert js["scope"] == "cluster"
    assert sorted(js["nodes"]) == ["nodea", "nodeb", "nodec"] and js["missing"] == [], js
    g = next(x for x in js["groups"] if x["name"] == "g")
    assert g["servers"][0]["requests"] == web(js)["requests"]["total"]
    # The caller's token is what the other nodes see: without one, nothing is asked.
    r = c.api.request("GET", "/v1/stats?scope=cluster", token=None)
    assert r.status == 401, r

    result = {}

    def ask():
        t0 = time.monotonic()
        result["r"] = c.api.request("GET", "/v1/stats?scope=cluster", timeout=h.scaled(30))
        result["took"] = time.monotonic() - t0

    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), result
        t0 = time.monotonic()
        r = c.api.request("GET", "/healthz", token=None)
        assert r.status == 200 and time.monotonic() - t0 < 0.5, r
        t0 = time.monotonic()
        assert c.api.get("/v1/stats")[0] == 200 and time.monotonic() - t0 < 0.5
        t.join(h.scaled(20))
        assert not t.is_alive()
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    r = result["r"]
    assert r.status == 200, r
    assert sorted(r.json["nodes"]) == ["nodea", "nodec"], r.json
    assert [m["name"] for m in r.json["missing"]] == ["nodeb"] and r.json["missing"][0]["error"]
    assert 1.5 < result["took"] < h.scaled(10), result["took"]
    assert web(r.json)["requests"]["total"] == \
        web(a.stats())["requests"]["total"] + web(c.stats())["requests"]["total"]


def test_stats_scope_cluster_waiting_ends_at_stop(cluster_factory):
    """A node stopped (SIGTERM) while GET /v1/stats?scope=cluster waits for another node
    exits at once and cleanly: the requests in flight are cancelled with the connection."""
    cl = cluster_factory(nodes=2, etcd_members=1, shared_token=True)
    a, b = cl.nodes
    h.wait_until(lambda: len(a.cluster().get("nodes", [])) == 2, 10, "two registered nodes")
    result = {}

    def ask():
        try:
            result["r"] = a.api.request("GET", "/v1/stats?scope=cluster", timeout=h.scaled(30))
        except OSError as e:
            result["e"] = e

    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), result
        t0 = time.monotonic()
        assert a.stop() == 0
        assert time.monotonic() - t0 < 1.5
        t.join(h.scaled(10))
        assert not t.is_alive() and "r" not in result, result
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
