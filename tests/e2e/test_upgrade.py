# SPDX-License-Identifier: Apache-2.0
"""slbd --upgrade: a new process takes the listening sockets, the admin socket and the state
directory's lock over from the running one (SCM_RIGHTS over DIR/upgrade.sock), and the old one
drains. Under load through an http and an https listener, twenty upgrades in a row refuse and
fail nothing; a request in flight and connections accepted just before finish on the old
process; a failed upgrade leaves the old one serving; one upgrade at a time; the lock and
systemd's main pid pass to the new process; TLS sessions resume across an upgrade."""

import fcntl
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading

import pytest

import slbd_harness as h
import cert_util as cu
from http_util import add_listener, client_context, hx  # noqa: F401  (fixture)
from pki import pki, tls_block, upload_server  # noqa: F401  (fixture)

NOHC = h.no_health_check()
UPGRADES = 20


class Site:
    """An http backend behind group "g", listener "plain" (http) and "secure" (https)."""

    def __init__(self, slbd, hx, pki):
        self.backend = hx.backend("a")
        slbd.add_group("g", [self.backend.server()], health_check=NOHC)
        cid = upload_server(slbd, pki, "server")
        self.http = add_listener(slbd, "plain", "g")
        self.https = add_listener(slbd, "secure", "g", protocol="https", tls=tls_block([cid]))
        self.ctx = client_context(pki.root)


@pytest.fixture
def site(slbd, hx, pki):
    return Site(slbd, hx, pki)


class RequestLoop:
    """One thread sending GET requests until stopped: a new connection per request, or one
    keep-alive connection (http.client opens a new one after a "Connection: close" answer, as
    any client does). Every request that does not end in a complete 200 is a failure."""

    def __init__(self, port, ctx=None, keepalive=False):
        self.port, self.ctx, self.keepalive = port, ctx, keepalive
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _conn(self):
        timeout = h.scaled(15)
        if self.ctx:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                               timeout=timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def _run(self):
        conn = self._conn() if self.keepalive else None
        i = 0
        while not self._stop.is_set():
            c = conn or self._conn()
            i += 1
            try:
                c.request("GET", f"/r{i}", headers={"Host": "localhost"})
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or not body:
                    self.failures.append(f"request {i}: status {r.status}")
                else:
                    self.ok += 1
            except Exception as e:  # every failure is a finding; keep the reason
                self.failures.append(f"request {i}: {type(e).__name__}: {e}")
                if conn:
                    conn.close()
            finally:
                if not conn:
                    c.close()
        if conn:
            conn.close()

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(h.scaled(30))
        assert not self._t.is_alive(), "request loop did not stop"


class WrkRounds:
    """wrk (keep-alive) against each URL in rounds of a few seconds, a new round as soon as
    one ends, until finish(); the sums of every round's errors."""

    def __init__(self, targets, seconds=4):
        self.targets, self.seconds = targets, seconds
        self.running = {}
        self.results = []
        if not cu.WrkLoad.available():
            pytest.skip("wrk is not installed")

    def _start(self, target):
        port, scheme = target
        self.running[target] = cu.WrkLoad(port, self.seconds, connections=4, threads=1,
                                          scheme=scheme, close=False).start()

    def poll(self):
        for t in self.targets:
            w = self.running.get(t)
            if w is None:
                self._start(t)
            elif w.proc.poll() is not None:
                self.results.append((t, w.result()))
                self._start(t)

    def finish(self):
        for t, w in self.running.items():
            self.results.append((t, w.result()))
        self.running = {}
        return self.results


def lock_pid(slbd):
    text = (slbd.state_dir / "lock").read_text().strip()
    return int(text) if text else None  # empty for a moment while it is rewritten


def assert_locked(slbd):
    """Nobody else can take the lock, and a plain second slbd is refused naming the holder."""
    with open(slbd.state_dir / "lock") as f:
        with pytest.raises(BlockingIOError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    rc, text = slbd.run_once()
    assert rc == 1 and f"another slbd (pid {slbd.pid})" in text, text


@pytest.mark.timeout(90)
def test_twenty_upgrades_under_load_fail_no_request(slbd, hx, site):
    loops = [RequestLoop(site.http).start(), RequestLoop(site.http, keepalive=True).start(),
             RequestLoop(site.https, site.ctx).start(),
             RequestLoop(site.https, site.ctx, keepalive=True).start()]
    wrk = WrkRounds([(site.http, "http"), (site.https, "https")])
    def progress(n):
        before = [lp.ok for lp in loops]
        h.wait_until(lambda: all(lp.ok >= b + n for lp, b in zip(loops, before)), 30,
                     f"{n} requests of every loop")
    try:
        wrk.poll()
        progress(20)  # wrk has connected meanwhile too
        pids = {slbd.pid}
        for _ in range(UPGRADES):
            slbd.upgrade(baseline=False)
            pids.add(slbd.pid)
            wrk.poll()
            # Each upgrade happens under traffic: every loop got answers since the last one.
            progress(10)
        assert len(pids) == UPGRADES + 1
    finally:
        for lp in loops:
            lp.stop()
        results = wrk.finish()
    # The last process's descriptors, for the post-test leak check, now that the load is over.
    slbd.fd_baseline()
    for lp in loops:
        assert lp.failures == [], lp.failures[:10]
    for (port, scheme), res in results:
        errs = res["socket_errors"]
        assert res["non2xx"] == 0 and not any(errs.values()), (scheme, res["text"])
    assert sum(r["requests"] for _, r in results) > 0
    assert lock_pid(slbd) == slbd.pid
    assert_locked(slbd)
    assert hx.get(site.http).status == 200


def test_connections_accepted_before_finish_on_the_old_process(slbd, hx, site):
    # A slow response in flight, an idle keep-alive connection, a TLS connection whose
    # handshake has not started and a plain one whose request has not been sent: all accepted
    # by the old process before the upgrade.
    slow = hx.connect(site.http)
    slow.send(b"GET /slow/3000 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    idle = hx.connect(site.http)
    assert idle.request("GET", "/first").status == 200
    not_started = hx.socket(site.https)
    silent = hx.connect(site.http)
    h.wait_until(lambda: sum(x["active"] for x in slbd.stats()["listeners"]) >= 4, 20,
                 "the old process to accept the four connections")
    old = slbd.upgrade(wait_old=False)
    assert old.poll() is None, "the old process exited with connections open"
    r = idle.request("GET", "/second")
    assert r.status == 200 and (r.header("Connection") or "").lower() == "close", r
    assert silent.request("GET", "/late").status == 200
    t = site.ctx.wrap_socket(not_started, server_hostname="localhost")
    hx.track(t)
    t.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert b" 200 " in h.read_to_eof(t, timeout=h.scaled(15)).split(b"\r\n", 1)[0]
    r = slow.read_response(timeout=h.scaled(20))
    assert r.status == 200 and r.body, r
    slbd.wait_old_exit(old)
    # The new process serves.
    assert hx.get(site.http).status == 200
    assert lock_pid(slbd) == slbd.pid


def test_failed_upgrades_leave_the_old_process_serving(slbd, hx, site):
    pid = slbd.pid
    rc, text = slbd.run_once("--upgrade", "--no-such-option")
    assert rc == 2, text
    # A configuration that validates but cannot start: its new listener's port is taken.
    # The new process fails after the old one handed its sockets over.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    cfg_path = slbd.state_dir / "config.json"
    original = cfg_path.read_text()
    st, doc = slbd.api.get("/v1/listeners/plain")
    assert st == 200
    extra = {**doc, "name": "extra", "bind": f"127.0.0.1:{taken.getsockname()[1]}"}
    cfg = json.loads(original)
    cfg["listeners"].append(extra)
    cfg_path.write_text(json.dumps(cfg))
    slbd.allow_errors(r"upgrade failed")
    try:
        rc, text = slbd.run_once("--upgrade")
    finally:
        cfg_path.write_text(original)
        taken.close()
    assert rc == 1 and "upgrade failed, the running slbd goes on unchanged" in text, text
    assert "cannot bind" in text, text
    assert slbd.running() and slbd.pid == pid and lock_pid(slbd) == pid
    assert hx.get(site.http).status == 200
    # Changes are accepted again, and a later upgrade works.
    h.wait_until(lambda: slbd.api.post("/v1/groups", {"name": "g2", "servers": []})[0] == 201,
                 20, "configuration changes to be accepted again")
    slbd.upgrade()
    assert slbd.pid != pid and hx.get(site.http).status == 200


def test_one_upgrade_at_a_time_and_changes_wait(slbd, hx, site):
    # A hand-over in progress (this test plays the new process, holding the sockets).
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.settimeout(h.scaled(10))
    sock.connect(str(slbd.state_dir / "upgrade.sock"))
    sock.send(f"upgrade {os.getpid()}".encode())
    got = {}
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 256, 64)
        for fd in fds:
            os.close(fd)
        word = msg.decode().split(" ", 1)[0]
        if word == "end":
            break
        got.setdefault(word, []).append((msg.decode(), len(fds)))
    assert [n for _, n in got["lock"]] == [1] and [n for _, n in got["admin"]] == [1], got
    listens = sorted(m.split()[2] for m, n in got["listen"] if n == slbd.workers)
    assert listens == ["plain", "secure"], got
    slbd.allow_errors(r"upgrade failed")
    # Changes wait (the new process could miss them); reads and traffic go on.
    st, js = slbd.api.post("/v1/groups", {"name": "g2", "servers": []})
    assert st == 503 and js["error"]["code"] == "upgrading", (st, js)
    assert slbd.api.get("/v1/groups")[0] == 200
    assert hx.get(site.http).status == 200
    rc, text = slbd.run_once("--upgrade")
    assert rc == 1 and "another upgrade" in text, text
    for _ in range(5):  # the answer is read, however early the request arrived
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as second:
            second.settimeout(h.scaled(10))
            second.connect(str(slbd.state_dir / "upgrade.sock"))
            second.send(b"upgrade 1")
            assert second.recv(256) == b"busy"
    assert_locked(slbd)
    # The would-be new process goes away: the old one goes on as before.
    sock.close()
    h.wait_until(lambda: slbd.api.post("/v1/groups", {"name": "g2", "servers": []})[0] == 201,
                 20, "configuration changes to be accepted again")
    old = slbd.pid
    slbd.upgrade()
    assert lock_pid(slbd) == slbd.pid != old
    assert_locked(slbd)
    st, js = slbd.api.get("/v1/groups/g2")
    assert st == 200, js


def test_sessions_resume_across_an_upgrade(slbd, hx, site):
    sessions = {}
    for name, version in (("1.3", ssl.TLSVersion.TLSv1_3), ("1.2", ssl.TLSVersion.TLSv1_2)):
        ctx = client_context(cafile=None, verify=False, maximum=version)
        c = hx.tls_connect(site.https, ctx, server_hostname="localhost")
        assert c.request("GET", "/before").status == 200
        sessions[name] = (ctx, c.sock.session)
        c.close()
    slbd.upgrade()
    for name, (ctx, sess) in sessions.items():
        c = hx.tls_connect(site.https, ctx, server_hostname="localhost", session=sess)
        assert c.request("GET", "/after").status == 200
        assert c.sock.session_reused, name
        c.close()


def test_systemd_learns_the_new_main_pid(slbd, workdir, site):
    path = str(workdir / "notify.sock")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(path)
    n.settimeout(h.scaled(20))
    msgs = []
    try:
        slbd.upgrade(env={"NOTIFY_SOCKET": path})
        while not any("MAINPID=" in m for m in msgs):
            msgs.append(n.recv(4096).decode())
    finally:
        n.close()
    # STATUS lines may come first; readiness comes once, together with the new main pid.
    assert msgs[-1].split("\n") == [f"MAINPID={slbd.pid}", "READY=1"], msgs
    assert not any("READY=1" in m for m in msgs[:-1]), msgs


def test_the_new_process_may_have_another_configuration(slbd, hx, site):
    """A listener removed from config.json before the upgrade: its sockets are closed (the
    new process does not keep what it does not use); more workers bind the sockets the old
    process did not have."""
    cfg_path = slbd.state_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["listeners"] = [x for x in cfg["listeners"] if x["name"] != "secure"]
    cfg_path.write_text(json.dumps(cfg))
    slbd.upgrade("--workers", "3")
    text = slbd.log_text()
    assert f"closing 2 listening sockets of 127.0.0.1:{site.https}" in text, text
    assert f"adopted 2 listening sockets of 127.0.0.1:{site.http}" in text, text
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", site.https), timeout=h.scaled(5)).close()
    for _ in range(12):  # spread over the three workers' sockets
        assert hx.get(site.http).status == 200
    st, js = slbd.api.get("/v1/listeners")
    assert st == 200 and [x["name"] for x in js["listeners"]] == ["plain"], js


def test_detached_upgrade_ends_once_the_new_process_serves(slbd, hx, site, workdir):
    """`slbd --upgrade --detach` (for systemd's ExecReload, a command that must end) exits 0
    once its child took over, which goes on as the daemon; and with the child's code when
    the child fails."""
    pid, old = slbd.pid, slbd.proc
    argv = [str(a) for a in slbd.argv("--upgrade", "--detach")]
    log = workdir / "detached.stderr"
    slbd._runs.append(log)  # checked after the test like the daemon's own output

    def run():
        with open(log, "ab") as f:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=h.scaled(60),
                                  env=h._sanitizer_env()).returncode
    cfg_path = slbd.state_dir / "config.json"
    original = cfg_path.read_text()
    cfg_path.write_text("{")
    try:
        assert run() == 1
    finally:
        cfg_path.write_text(original)
    assert slbd.running() and lock_pid(slbd) == pid
    assert run() == 0
    new = lock_pid(slbd)
    assert new != pid
    slbd.wait_old_exit(old)
    assert hx.get(site.http).status == 200
    # The daemon is not this test's child: stop it as systemd would, and see it go.
    os.kill(new, signal.SIGTERM)

    def gone():
        try:
            with open(f"/proc/{new}/stat") as f:
                return f.read().split()[2] == "Z"
        except OSError:
            return True
    h.wait_until(gone, 30, "the detached daemon to stop")
    assert "upgrade complete" in log.read_text() and "stopped" in log.read_text()
