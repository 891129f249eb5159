# SPDX-License-Identifier: Apache-2.0
"""slbd --upgrade of a cluster node (docs/cluster.md, "Upgrading a node"): the new process
takes the sockets and the lock as on a single node, and the old one's etcd lease, so the node
stays registered and keeps the ticket leadership. Under keep-alive and new TLS connections
nothing fails; the node stays listed; changes made elsewhere reach the new process; tickets
issued before resume after. An admin write waiting for etcd is waited for; with etcd down the
new process starts from the cache. Another --node or --cluster-prefix, or a change of mode,
is refused and the running node goes on. Real etcd members (cluster_util.py); skipped when
etcd is not installed."""

import os
import signal
import threading
import time

import pytest

import slbd_harness as h
from cluster_util import cluster, cluster_factory, needs_etcd, shared_etcd  # noqa: F401
from http_util import client_context, hx  # noqa: F401  (fixture)
from pki import pki  # noqa: F401  (fixture)
from test_cluster import HOSTS, NOHC, https_get, https_site, retry_write, verify_ctx, wait_served
from test_upgrade import RequestLoop

pytestmark = [*needs_etcd, pytest.mark.timeout(120)]


def leaders(nodes):
    return [n.name for n in nodes if n.running() and n.cluster().get("ticket_leader") is True]


def one_leader(nodes, timeout=10):
    return h.wait_until(lambda: leaders(nodes) if len(leaders(nodes)) == 1 else False,
                        timeout, "exactly one ticket leader")[0]


class ListedWatch:
    """Polls GET /v1/cluster on node until stopped; every answer not listing name is noted."""

    def __init__(self, node, name):
        self.node, self.name = node, name
        self.polls = 0
        self.missing = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                names = [n.get("name") for n in self.node.cluster().get("nodes", [])]
            except (h.HarnessError, OSError) as e:
                self.missing.append(f"{type(e).__name__}: {e}")
                continue
            self.polls += 1
            if names.count(self.name) != 1:
                self.missing.append(names)
            time.sleep(0.05)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(h.scaled(10))


def test_upgrade_of_a_node_under_load(cluster, hx, pki):
    a, b, c = cluster.nodes
    port, _, _ = https_site(a, hx, pki)
    ctx = verify_ctx(pki)
    wait_served(HOSTS, port, ctx)
    cluster.converged()
    leader = one_leader(cluster.nodes)
    st, reused, sess, _ = https_get(HOSTS[0], port, ctx)
    assert st == 200 and not reused and sess is not None
    h.wait_until(lambda: [n["name"] for n in b.cluster()["nodes"]] == ["nodea", "nodeb", "nodec"],
                 10, "node b to list the three nodes")
    lctx = client_context(pki.root)
    loops = [RequestLoop(port, lctx).start(), RequestLoop(port, lctx, keepalive=True).start()]
    listed = ListedWatch(b, "nodea").start()

    def progress(n):
        before = [lp.ok for lp in loops]
        h.wait_until(lambda: all(lp.ok >= x + n for lp, x in zip(loops, before)), 30,
                     f"{n} requests of every loop")
    try:
        progress(10)
        pids = {a.pid}
        for _ in range(2):  # the second hands over the lease the first one took
            a.upgrade(baseline=False)
            pids.add(a.pid)
            progress(10)
        assert len(pids) == 3
        time.sleep(1.5)  # the new process's first registration and election (each second)
    finally:
        for lp in loops:
            lp.stop()
        listed.stop()
    a.fd_baseline()
    for lp in loops:
        assert lp.failures == [], lp.failures[:10]
    assert listed.polls > 10 and listed.missing == [], listed.missing[:10]
    js = a.cluster()
    assert js["node"] == "nodea" and js["connected"] is True, js
    assert [n["name"] for n in js["nodes"]] == ["nodea", "nodeb", "nodec"], js
    # The ticket leadership hangs on the lease the new process kept: the same node leads.
    assert one_leader(cluster.nodes) == leader
    # A ticket the old process issued resumes on the new one (the ring comes from etcd).
    st, reused, _, _ = https_get(HOSTS[0], port, ctx, session=sess)
    assert st == 200 and reused, "the new process did not resume a ticket of the old one"
    # A change made on b reaches the new process (its watch).
    r = retry_write(lambda: b.api.request("POST", "/v1/groups", {
        "name": "after", "servers": [], "health_check": NOHC}))
    assert r.status == 201, r
    h.wait_until(lambda: "after" in {g["name"] for g in a.config()["groups"]}, 10,
                 "b's change to reach the new process on a")
    # The new process owns the lease now: stopped, it leaves the list at once.
    assert a.stop() == 0
    h.wait_until(lambda: [n["name"] for n in b.cluster()["nodes"]] == ["nodeb", "nodec"], 3,
                 "node a to leave the list when stopped")


def _with(args, flag, value):
    """The command line args with flag's value replaced (or removed when value is None)."""
    out = [str(x) for x in args]
    i = out.index(flag)
    return out[:i] + ([flag, value] if value is not None else []) + out[i + 2:]


def test_upgrade_with_other_cluster_flags_is_refused(cluster_factory):
    cl = cluster_factory(nodes=2)
    a, b = cl.nodes
    a.allow_errors(r"upgrade failed")
    args = cl.node_args(a)
    cases = [
        (_with(args, "--node", "nodez"), '--node: the running slbd is node "nodea", not "nodez"'),
        (_with(args, "--cluster-prefix", "/elsewhere/"),
         "--cluster-prefix: the running slbd serves the cluster at prefix " + cl.prefix),
        (["--bind-host", a.host], "the running slbd is a cluster node"),
    ]
    for extra, message in cases:
        rc, text = a.run_once("--upgrade", *extra)
        assert rc == 1, text
        assert "upgrade failed, the running slbd goes on unchanged" in text, text
        assert message in text, text
    # The running node goes on: it takes writes, and its watch (stopped while the new process
    # started) resumes: a change on b reaches it.
    r = retry_write(lambda: a.api.request("POST", "/v1/groups", {
        "name": "on-a", "servers": [], "health_check": NOHC}))
    assert r.status == 201, r
    r = retry_write(lambda: b.api.request("POST", "/v1/groups", {
        "name": "on-b", "servers": [], "health_check": NOHC}))
    assert r.status == 201, r
    h.wait_until(lambda: {"on-a", "on-b"} <= {g["name"] for g in a.config()["groups"]}, 10,
                 "b's change to reach a after the refused upgrades")


def test_single_node_upgraded_into_a_cluster_is_refused(slbd, cluster_factory):
    cl = cluster_factory(nodes=0)
    slbd.allow_errors(r"upgrade failed")
    node = cl.add_node(start=False)
    rc, text = slbd.run_once("--upgrade", *cl.node_args(node))
    assert rc == 1 and "the running slbd is not in cluster mode" in text, text
    assert slbd.api.get("/healthz")[0] == 200


def test_upgrade_waits_for_an_admin_write_waiting_for_etcd(cluster_factory):
    """A write that waits for etcd (etcd stopped with SIGSTOP) when the new process asks: the
    hand-over waits until it is answered, so the new process reads etcd after it and never
    writes beside it; the write is answered by the old process and served by the new one, and
    the writes queued behind it are refused (503 upgrading), never dropped. Four writes queue
    (about a second each while etcd is stopped), so one waits whenever the new process asks."""
    cl = cluster_factory(nodes=1, etcd_members=1)
    (a,) = cl.nodes
    cl.allow_etcd_trouble()
    member = cl.etcd.members[0]
    results = {}
    names = [f"w{i}" for i in range(4)]

    def write(name):
        results[name] = a.api.request("POST", "/v1/groups", {
            "name": name, "servers": [], "health_check": NOHC}, timeout=h.scaled(60))

    def upgrade():
        try:
            results["old"] = a.upgrade(wait_old=False)
        except h.HarnessError as e:
            results["upgrade"] = e

    writers = [threading.Thread(target=write, args=(n,)) for n in names]
    u = threading.Thread(target=upgrade)
    os.kill(member.proc.pid, signal.SIGSTOP)
    try:
        for t in writers:
            t.start()
            time.sleep(0.05)
        u.start()
        h.wait_until(lambda: "waits until etcd answers the admin write" in a.log_text(), 10,
                     "the old process to wait for a write")
        assert u.is_alive(), results
    finally:
        os.kill(member.proc.pid, signal.SIGCONT)
    for t in writers:
        t.join(h.scaled(30))
    u.join(h.scaled(60))
    assert not u.is_alive() and not any(t.is_alive() for t in writers)
    assert "upgrade" not in results, results["upgrade"]
    a.wait_old_exit(results["old"])
    # Each answered by the old process: stored (etcd ran again within the write's deadline),
    # 503 at its deadline, or refused once the upgrade asked; the new process serves what was
    # stored.
    have = {g["name"] for g in a.config()["groups"]}
    for n in names:
        r = results[n]
        assert r.status == 201 or (r.status == 503 and r.error_code() in (
            "cluster_unavailable", "upgrading")), r
        if r.status == 201:
            assert n in have, (n, have)
    r = retry_write(lambda: a.api.request("POST", "/v1/groups", {
        "name": "after", "servers": [], "health_check": NOHC}), timeout=30)
    assert r.status == 201, r


def test_upgrade_while_etcd_is_down_starts_from_the_cache(cluster_factory, hx):
    """Every etcd member stopped: the new process starts from the node's state directory (its
    cache) and serves what the old one served; once etcd is back it reconnects, registers and
    takes writes."""
    cl = cluster_factory(nodes=1, etcd_members=1)
    (a,) = cl.nodes
    cl.allow_etcd_trouble()
    be = hx.backend("be-down")
    a.add_group("g", [be.server()], health_check=NOHC)
    port = h.free_port()
    r = a.api.request("POST", "/v1/listeners", {
        "name": "plain", "protocol": "http", "bind": f"127.0.0.1:{port}", "backend_group": "g"})
    assert r.status == 201, r
    assert hx.get(port).status == 200
    cl.etcd.stop_all()
    h.wait_until(lambda: a.cluster().get("connected") is False, 20, "a to see etcd gone")
    loop = RequestLoop(port, keepalive=True).start()
    try:
        a.upgrade(baseline=False)
        h.wait_until(lambda: loop.ok > 5, 10, "requests after the upgrade")
    finally:
        loop.stop()
    assert loop.failures == [], loop.failures[:10]
    a.fd_baseline()
    assert {g["name"] for g in a.config()["groups"]} == {"g"}
    cl.etcd.start_all()
    r = retry_write(lambda: a.api.request("POST", "/v1/groups", {
        "name": "back", "servers": [], "health_check": NOHC}), timeout=40,
        what="a write once etcd is back")
    assert r.status == 201, r
    h.wait_until(lambda: [n["name"] for n in a.cluster()["nodes"]] == ["nodea"]
                 and a.cluster()["connected"] is True, 20, "a to be connected and listed")
