# SPDX-License-Identifier: Apache-2.0
"""The access log end to end: settings.access_log names a file in the state directory that
gets one JSON line per HTTP request (also for the 400, 408 and 503 slbd answers itself), with
the TLS facts on https; switching it off through POST /v1/apply stops the lines."""

import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import time

import pytest

import slbd_harness as h
from http_util import Scripted, add_listener, client_context, hx, rst_close  # noqa: F401
from pki import pki, tls_block, upload_server  # noqa: F401

NOHC = h.no_health_check()


def set_access_log(slbd, value):
    st, js = slbd.api.post("/v1/apply", {"settings": {"access_log": value}})
    assert st == 200, js
    assert js["settings"]["access_log"] == value, js


@pytest.fixture
def access_log(slbd):
    """set(value) turns the access log on or off; it is turned off after the test so that the
    log file is closed before the descriptor check."""
    yield lambda value: set_access_log(slbd, value)
    if slbd.running():
        set_access_log(slbd, "")


def log_lines(path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        out.append(json.loads(line))  # every line must be one JSON object
    return out


def wait_for(path, pred, what, timeout=10):
    return h.wait_until(lambda: [x for x in log_lines(path) if pred(x)], timeout, what)


def warm_up(hx, port, path, get=None):
    """Request /warm until its line shows up in path: the access log is then certainly
    active. (Lines right after switching the log on can be lost; that has its own test.)"""
    n = [0]

    def once():
        n[0] += 1
        r = get(f"/warm/{n[0]}") if get else hx.get(port, f"/warm/{n[0]}")
        assert r.status == 200, r
        deadline = time.monotonic() + h.scaled(1)
        while time.monotonic() < deadline:
            if [x for x in log_lines(path) if x.get("path", "").startswith("/warm/")]:
                return True
            time.sleep(0.05)
        return False
    h.wait_until(once, 10, f"a warm-up line in {path.name}", interval=0)


@pytest.mark.slbd(workers=1)
def test_first_request_after_enabling_is_logged(slbd, hx, access_log):
    """Activation is synchronous: the request right after the apply answered is logged."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    access_log("access.log")
    assert hx.get(port, "/right-after").status == 200
    wait_for(slbd.state_dir / "access.log", lambda x: x.get("path") == "/right-after",
             "the line of the first request after switching the log on")


@pytest.mark.slbd(workers=1)
def test_http_lines(slbd, hx, access_log):
    access_log("access.log")
    path = slbd.state_dir / "access.log"
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    slbd.add_group("empty", [], health_check=NOHC)
    port = add_listener(slbd, "web", "g", header_timeout_s=1)
    port503 = add_listener(slbd, "nobody", "empty")
    warm_up(hx, port, path)

    c = hx.connect(port)
    r = c.request("POST", "/ok?q=1", body=b"0123456789")
    assert r.status == 200
    line = wait_for(path, lambda x: x.get("path") == "/ok?q=1", "the 200 line")[0]
    assert line["listener"] == "web" and line["client"] == "127.0.0.1", line
    assert line["method"] == "POST" and line["status"] == 200, line
    assert line["proto"] == "HTTP/1.1", line
    assert line["upstream"] == f"127.0.0.1:{b.port}", line
    assert line["bytes_out"] == len(r.raw_head) + len(r.body), (line, r)
    assert line["bytes_in"] >= 10, line
    assert line["tls"] is None and line["cipher"] is None and line["resumed"] is None, line
    assert isinstance(line["time"], str) and line["time"].endswith("Z"), line

    bad = hx.connect(port)
    bad.send(b"GET /bad HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert bad.read_response().status == 400
    slow = hx.connect(port)
    slow.send(b"GET /partial HTTP/1.1\r\n")
    assert slow.read_response().status == 408
    assert hx.get(port503, "/none").status == 503

    for status, listener in ((400, "web"), (408, "web"), (503, "nobody")):
        got = wait_for(path, lambda x, s=status: x.get("status") == s, f"a {status} line")
        assert got[0]["listener"] == listener, got
        assert got[0]["upstream"] is None, got
        # An empty group is decided before any server is chosen: still no healthy server.
        assert got[0]["error"] == ("no_healthy_server" if status == 503 else None), got
    assert wait_for(path, lambda x: x["status"] == 503, "503")[0]["path"] == "/none"
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o007 == 0, oct(mode)  # not world-readable


@pytest.mark.slbd(workers=1)
def test_https_lines(slbd, hx, pki, access_log):
    access_log("tls-access.log")
    path = slbd.state_dir / "tls-access.log"
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = add_listener(slbd, "secure", "g", protocol="https", tls=tls_block([cid]))
    ctx = client_context(pki.root)

    def tls_get(target):
        c = hx.tls_connect(port, ctx, server_hostname="localhost")
        try:
            return c.request("GET", target)
        finally:
            c.close()
    warm_up(hx, port, path, get=tls_get)
    c = hx.tls_connect(port, ctx, server_hostname="localhost")
    assert c.request("GET", "/first").status == 200
    sess = c.sock.session
    c.sock.unwrap()
    c = hx.tls_connect(port, ctx, server_hostname="localhost", session=sess)
    assert c.request("GET", "/second").status == 200
    assert c.sock.session_reused
    first = wait_for(path, lambda x: x.get("path") == "/first", "the first line")[0]
    second = wait_for(path, lambda x: x.get("path") == "/second", "the second line")[0]
    for line in (first, second):
        assert line["listener"] == "secure" and line["tls"] == "TLSv1.3", line
        assert line["cipher"].startswith("TLS_AES_") or "CHACHA" in line["cipher"], line
        assert line["sni"] == "localhost", line
        assert line["upstream"] == f"127.0.0.1:{b.port}", line
    assert first["resumed"] is False and second["resumed"] is True, (first, second)
    # No SNI: the field is empty.
    c = hx.tls_connect(port, ctx, server_hostname=None)
    assert c.request("GET", "/nosni").status == 200
    assert wait_for(path, lambda x: x.get("path") == "/nosni", "no-SNI line")[0]["sni"] == ""
    # TLS 1.2 is reported as such.
    ctx12 = client_context(pki.root, maximum=ssl.TLSVersion.TLSv1_2)
    c = hx.tls_connect(port, ctx12, server_hostname="localhost")
    assert c.request("GET", "/v12").status == 200
    line = wait_for(path, lambda x: x.get("path") == "/v12", "TLS 1.2 line")[0]
    assert line["tls"] == "TLSv1.2" and line["cipher"] == "ECDHE-ECDSA-AES128-GCM-SHA256", line
    assert line["proto"] == "HTTP/1.1", line
    assert line["sni"] == "localhost" and line["resumed"] is False, line
    # A TLS 1.2 resumption still logs the name its ClientHello sent (OpenSSL's
    # SSL_get_servername would report the session's, which it does not keep).
    sess12 = c.sock.session
    c.close()
    c = hx.tls_connect(port, ctx12, server_hostname="localhost", session=sess12)
    assert c.request("GET", "/v12-resumed").status == 200
    assert c.sock.session_reused
    line = wait_for(path, lambda x: x.get("path") == "/v12-resumed", "TLS 1.2 resumed line")[0]
    assert line["tls"] == "TLSv1.2" and line["resumed"] is True, line
    assert line["sni"] == "localhost", line
    # HTTP/2 (curl offers h2 by ALPN): one line per stream, with its own frame bytes.
    p = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.root, "--resolve",
                        f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/h2a",
                        f"https://localhost:{port}/h2b"], capture_output=True,
                       timeout=h.scaled(20))
    assert p.returncode == 0, p.stderr
    for target in ("/h2a", "/h2b"):
        line = wait_for(path, lambda x, t=target: x.get("path") == t, f"the {target} line")[0]
        assert line["proto"] == "HTTP/2" and line["status"] == 200, line
        assert line["method"] == "GET" and line["tls"] == "TLSv1.3", line
        assert line["upstream"] == f"127.0.0.1:{b.port}", line
        assert 0 < line["bytes_in"] < 1000 and line["bytes_out"] > 100, line
        assert line["upstream_ms"] <= line["request_ms"], line


@pytest.mark.slbd(workers=1)
def test_switching_the_log_off_and_on(slbd, hx, access_log):
    access_log("access.log")
    path = slbd.state_dir / "access.log"
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    warm_up(hx, port, path)
    assert hx.get(port, "/on").status == 200
    wait_for(path, lambda x: x.get("path") == "/on", "the /on line")
    access_log("")
    assert hx.get(port, "/while-off").status == 200
    # Switch on again into another file and wait for a marker: with one worker, a line for
    # /while-off would have been written before it.
    access_log("second.log")
    second = slbd.state_dir / "second.log"
    warm_up(hx, port, second)
    every = log_lines(path) + log_lines(second)
    assert not [x for x in every if x.get("path") == "/while-off"], every
    assert [x["path"] for x in log_lines(path) if not x["path"].startswith("/warm/")] == \
        ["/on"], log_lines(path)
    # The setting is stored like every other change.
    cfg = json.loads((slbd.state_dir / "config.json").read_text())
    assert cfg["settings"]["access_log"] == "second.log"


# --------------------------------------------------------------------------------------------
# Where the log goes: rotation (SIGUSR1), an absolute path, syslog
# --------------------------------------------------------------------------------------------


def test_sigusr1_reopens_after_rename(slbd, hx, access_log, tmp_path):
    """logrotate's way: the file is renamed, slbd gets SIGUSR1, and the lines after it go to a
    new file of the same name (an absolute path outside the state directory here), while the
    renamed file keeps what was written before."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    logdir = tmp_path / "logs"
    logdir.mkdir()
    path = logdir / "access.log"
    access_log(str(path))
    warm_up(hx, port, path)
    assert hx.get(port, "/before").status == 200
    wait_for(path, lambda x: x.get("path") == "/before", "the line before the rotation")
    rotated = logdir / "access.log.1"
    path.rename(rotated)
    slbd.signal(signal.SIGUSR1)
    h.wait_until(path.exists, 10, "slbd to create the access log again after SIGUSR1")
    assert hx.get(port, "/after").status == 200
    wait_for(path, lambda x: x.get("path") == "/after", "the line after the rotation")
    old = [x["path"] for x in log_lines(rotated)]
    assert "/before" in old and "/after" not in old, old
    assert "/before" not in [x["path"] for x in log_lines(path)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_access_log_paths_validated(slbd):
    """A relative path with '/' and a path with '..' are refused; an absolute path, stdout and
    syslog are accepted."""
    slbd.allow_errors(r"cannot connect to syslog")  # no /dev/log on a test machine, perhaps
    for bad in ("logs/access.log", "/var/log/../etc/x"):
        st, js = slbd.api.post("/v1/apply", {"settings": {"access_log": bad}})
        assert st == 400 and js["error"]["code"] == "invalid_value", (bad, st, js)
    for good in ("syslog", "stdout", str(slbd.workdir / "a.log"), ""):
        set_access_log(slbd, good)


class SyslogSink:
    """A unix datagram socket standing in for /dev/log."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.got = []

    def poll(self):
        try:
            while True:
                self.got.append(self.sock.recv(65536).decode())
        except socket.timeout:
            pass
        return self.got

    def close(self):
        self.sock.close()


def test_syslog_target(slbd, hx, access_log, tmp_path, monkeypatch):
    """access_log "syslog": one datagram per request, in the format syslog(3) sends to
    /dev/log (facility local7, severity info, tag slbd[pid]), whose message is the JSON line.
    The socket is the test's own (SLBD_SYSLOG_SOCKET), as /dev/log is the machine's."""
    sink = SyslogSink(tmp_path / "log.sock")
    try:
        monkeypatch.setenv("SLBD_SYSLOG_SOCKET", str(tmp_path / "log.sock"))
        slbd.stop()
        slbd.start()
        b = hx.backend("a")
        slbd.add_group("g", [b.server()], health_check=NOHC)
        port = add_listener(slbd, "web", "g")
        access_log("syslog")
        for i in range(20):
            assert hx.get(port, f"/s/{i}").status == 200

        def lines():
            return [m for m in sink.poll() if '"path":"/s/' in m]
        h.wait_until(lambda: len(lines()) >= 20, 10, "20 syslog datagrams")
        pat = re.compile(r"<190>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d slbd\[(\d+)\]: (\{.*\})$")
        paths = []
        for m in lines():
            mm = pat.match(m)
            assert mm, m
            assert int(mm.group(1)) == slbd.pid
            paths.append(json.loads(mm.group(2))["path"])
        assert sorted(paths) == sorted(f"/s/{i}" for i in range(20)), paths
        access_log("")
    finally:
        sink.close()


# --------------------------------------------------------------------------------------------
# The fields: Host, User-Agent, client port, request id, why slbd answered 5xx
# --------------------------------------------------------------------------------------------


def recorded_ids(backend):
    return re.findall(rb"(?i)\r\nX-Request-Id: ([^\r]*)\r\n", backend.recorded())


@pytest.mark.slbd(workers=1)
def test_request_fields_and_request_id(slbd, hx, access_log):
    """A line names the Host, the User-Agent and the client's port; its id is sent to the
    backend as X-Request-Id, and a client's own X-Request-Id is kept (not doubled) and logged;
    request_ms and upstream_ms have sub-millisecond resolution."""
    access_log("access.log")
    path = slbd.state_dir / "access.log"
    b = hx.backend("a", record=True)
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    warm_up(hx, port, path)
    b.clear_record()
    c = hx.connect(port)
    cport = c.sock.getsockname()[1]
    r = c.request("GET", "/fields", host="www.example.com",
                  headers=[("User-Agent", 'probe/1.0 "q"')])
    assert r.status == 200
    line = wait_for(path, lambda x: x.get("path") == "/fields", "the /fields line")[0]
    assert line["host"] == "www.example.com", line
    assert line["user_agent"] == 'probe/1.0 "q"', line
    assert line["client_port"] == cport, line
    assert re.fullmatch(r"[0-9a-f]{32}", line["id"]), line
    assert recorded_ids(b) == [line["id"].encode()]
    assert line["error"] is None, line
    # A client's own id.
    b.clear_record()
    r = c.request("GET", "/own", headers=[("X-Request-Id", "abc-123")])
    assert r.status == 200
    line = wait_for(path, lambda x: x.get("path") == "/own", "the /own line")[0]
    assert line["id"] == "abc-123", line
    assert recorded_ids(b) == [b"abc-123"]
    c.close()
    # Ids differ per request; times are not whole milliseconds.
    for i in range(20):
        assert hx.get(port, f"/t/{i}").status == 200
    lines = wait_for(path, lambda x: x.get("path", "").startswith("/t/"), "20 lines")
    h.wait_until(lambda: len([x for x in log_lines(path)
                              if x.get("path", "").startswith("/t/")]) == 20, 10, "20 lines")
    lines = [x for x in log_lines(path) if x.get("path", "").startswith("/t/")]
    assert len({x["id"] for x in lines}) == 20
    assert any(x["request_ms"] != int(x["request_ms"]) for x in lines), lines
    assert all(0 < x["upstream_ms"] <= x["request_ms"] for x in lines), lines


@pytest.mark.slbd(workers=1)
def test_error_reasons_of_502_503_504(slbd, hx, access_log):
    """slbd's own 5xx lines say which server it tried and why: connect refused, a reset, a
    timeout, no healthy server; a backend's own 5xx carries no error."""
    access_log("access.log")
    path = slbd.state_dir / "access.log"

    def slow(conn):
        time.sleep(h.scaled(1) + 1)
        return False
    scripted = Scripted(hx, {"/reset": lambda conn: rst_close(conn), "/slow": slow,
                             "/503": lambda conn: conn.sendall(
                                 b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")})
    dead = h.dead_port()
    slbd.add_group("s", [scripted.server()], health_check=NOHC)
    slbd.add_group("d", [{"address": "127.0.0.1", "port": dead, "weight": 100}],
                   health_check=NOHC)
    slbd.add_group("z", [{"address": "127.0.0.1", "port": dead, "weight": 0}],
                   health_check=NOHC)
    ps = add_listener(slbd, "ps", "s", request_timeout_s=1, backend_reuse="safe")
    pd = add_listener(slbd, "pd", "d")
    pz = add_listener(slbd, "pz", "z")
    warm_up(hx, ps, path)
    want = [(ps, "/reset", 502, "reset", scripted.raw.port),
            (ps, "/slow", 504, "timeout", scripted.raw.port),
            (ps, "/503", 503, None, scripted.raw.port),
            (pd, "/refused", 502, "connect_refused", dead),
            (pz, "/drained", 503, "no_healthy_server", None)]
    for port, target, status, _, _ in want:
        assert hx.get(port, target).status == status, target
    for _, target, status, error, up in want:
        line = wait_for(path, lambda x, t=target: x.get("path") == t, f"the {target} line")[0]
        assert line["status"] == status and line["error"] == error, line
        assert line["upstream"] == (f"127.0.0.1:{up}" if up else None), line


def test_daemon_log_json(slbd, hx):
    """--log-format json: every line slbd writes to standard error is one JSON object with
    time, level, thread and msg, and the harness still sees error lines in that form."""
    slbd.stop()
    slbd.extra_args = ["--log-format", "json"]
    slbd.start()
    dead = h.dead_port()
    slbd.add_group("d", [{"address": "127.0.0.1", "port": dead, "weight": 100}],
                   health_check=NOHC)
    port = add_listener(slbd, "pd", "d")
    assert hx.get(port, "/").status == 502
    run = slbd._runs[-1]
    h.wait_until(lambda: "Connection refused" in run.read_text(), 10, "the connect warning")
    lines = [json.loads(ln) for ln in run.read_text().splitlines()]
    assert lines and all(set(x) == {"time", "level", "thread", "msg"} for x in lines), lines
    assert any(x["level"] == "info" and x["thread"] == "main" and "started" in x["msg"]
               for x in lines), lines
    warn = [x for x in lines if x["level"] == "warn" and "Connection refused" in x["msg"]]
    assert warn and warn[0]["thread"].startswith("w"), lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", warn[0]["time"]), warn
    assert h.ERROR_LINE.search('{"time":"2026-01-01T00:00:00.000Z","level":"error","thread":'
                               '"w0","msg":"x"}')


@pytest.mark.slbd(workers=1)
def test_http2_fields_and_request_id(slbd, hx, pki, access_log):
    """HTTP/2 streams get the same fields: Host from :authority, the User-Agent, the client's
    port, an id sent to the backend as X-Request-Id (the client's own kept), the error of a 503
    for an empty group."""
    access_log("h2.log")
    path = slbd.state_dir / "h2.log"
    b = hx.backend("a", record=True)
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = add_listener(slbd, "secure", "g", protocol="https", tls=tls_block([cid]))
    slbd.add_group("empty", [], health_check=NOHC)
    port503 = add_listener(slbd, "secure-empty", "empty", protocol="https", tls=tls_block([cid]))

    def curl(target, *headers, at=port):
        p = subprocess.run(["curl", "-sS", "--http2", "--cacert", pki.root, "--resolve",
                            f"localhost:{at}:127.0.0.1", "-A", "h2probe/2",
                            *[a for hd in headers for a in ("-H", hd)],
                            f"https://localhost:{at}{target}"], capture_output=True,
                           timeout=h.scaled(20))
        assert p.returncode == 0, p.stderr
    curl("/warm")
    wait_for(path, lambda x: x.get("path") == "/warm", "the warm-up line")
    b.clear_record()
    curl("/h2-ours")
    line = wait_for(path, lambda x: x.get("path") == "/h2-ours", "the /h2-ours line")[0]
    assert line["proto"] == "HTTP/2", line
    assert line["host"] == f"localhost:{port}" and line["user_agent"] == "h2probe/2", line
    assert isinstance(line["client_port"], int) and line["client_port"] > 0, line
    assert re.fullmatch(r"[0-9a-f]{32}", line["id"]), line
    assert recorded_ids(b) == [line["id"].encode()]
    b.clear_record()
    curl("/h2-theirs", "X-Request-Id: from-client-7")
    line = wait_for(path, lambda x: x.get("path") == "/h2-theirs", "the /h2-theirs line")[0]
    assert line["id"] == "from-client-7", line
    assert recorded_ids(b) == [b"from-client-7"]
    curl("/h2-empty", at=port503)
    line = wait_for(path, lambda x: x.get("path") == "/h2-empty", "the /h2-empty line")[0]
    assert line["status"] == 503 and line["error"] == "no_healthy_server", line
    assert line["upstream"] is None, line
