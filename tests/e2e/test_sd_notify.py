# SPDX-License-Identifier: Apache-2.0
"""slbd tells a service manager (systemd, Type=notify) what it is doing, through the datagram
socket named by $NOTIFY_SOCKET: READY=1 once the first configuration's listeners are open,
RELOADING=1 then READY=1 around a SIGHUP reload (taken or refused), STOPPING=1 on SIGTERM, and
STATUS= lines. The test binds the socket itself, as systemd would."""

import signal
import socket
import subprocess
import time

import pytest

import slbd_harness as h


class NotifyReceiver:
    """A bound unix datagram socket; messages are kept as dicts of their KEY=VALUE lines."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages = []

    def next(self, timeout=10):
        self.sock.settimeout(h.scaled(timeout))
        data = self.sock.recv(4096).decode()
        msg = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.messages.append(msg)
        return msg

    def wait_for(self, key, timeout=10):
        """Messages up to and including the first that sets key."""
        seen = []
        deadline = time.monotonic() + h.scaled(timeout)
        while True:
            try:
                msg = self.next(max(0.1, deadline - time.monotonic()))
            except socket.timeout:
                raise AssertionError(f"no {key}= message; got {seen}") from None
            seen.append(msg)
            if key in msg:
                return seen

    def close(self):
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify(request, workdir, monkeypatch):
    """$NOTIFY_SOCKET for the slbd processes the test starts: a socket path, or an abstract
    name ('@...')."""
    if request.param == "path":
        addr = str(workdir / "notify.sock")
        env = addr
    else:
        env = f"@slbd-test-notify-{id(request)}-{time.monotonic_ns()}"
        addr = "\0" + env[1:]
    r = NotifyReceiver(addr)
    monkeypatch.setenv("NOTIFY_SOCKET", env)
    yield r
    r.close()


def test_ready_after_listeners_reload_and_stop(notify, slbd_factory, backend, clients):
    a = backend("a")
    # A first run writes a configuration with a listener; the second start must be ready only
    # once that listener accepts.
    d = slbd_factory()
    d.add_group("g", [a.server()])
    port = d.add_tcp_listener("l", "g")
    notify.wait_for("READY")
    assert d.stop() == 0
    assert "STOPPING" in notify.wait_for("STOPPING")[-1]

    d.start()
    seen = notify.wait_for("READY")
    assert seen[-1]["READY"] == "1"
    assert h.who(clients, port) == "a"  # already accepting when READY=1 was sent
    statuses = [m["STATUS"] for m in seen if "STATUS" in m]
    assert statuses and "active on" in statuses[-1], seen

    # A reload that is taken: RELOADING=1 with the monotonic time, a new STATUS, READY=1.
    gen = d.api.request("GET", "/healthz", token=None).json["generation"]
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    d.signal(signal.SIGHUP)
    seen = notify.wait_for("READY")
    assert seen[0].get("RELOADING") == "1", seen
    assert before <= int(seen[0]["MONOTONIC_USEC"]) <= \
        time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert any(f"configuration {gen + 1} active" in m.get("STATUS", "") for m in seen), seen

    # A reload that is refused still ends with READY=1, and says why in STATUS.
    d.allow_errors(r"reload refused")
    (d.state_dir / "config.json").write_text('{"groups": [')
    d.signal(signal.SIGHUP)
    seen = notify.wait_for("READY")
    assert seen[0].get("RELOADING") == "1", seen
    assert any(m.get("STATUS", "").startswith("reload refused") for m in seen), seen
    assert d.running()
    assert h.who(clients, port) == "a"

    # Changes through the API update STATUS too.
    d.add_group("later", [])
    assert "active on" in notify.next()["STATUS"]

    assert d.stop() == 0
    seen = notify.wait_for("STOPPING")
    assert seen[-1]["STOPPING"] == "1" and "stopping" in seen[-1]["STATUS"]


def test_no_notify_socket_is_fine(slbd_factory, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    d = slbd_factory()
    d.add_group("g", [])
    assert d.stop() == 0
    assert "cannot notify" not in d.log_text()


def test_version_flags():
    for prog in ("slbd", "slbctl"):
        out = subprocess.run([str(h.binary(prog)), "--version"], capture_output=True,
                               text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        version = (h.REPO / "VERSION").read_text().strip()
        assert out.stdout.startswith(f"{prog} {version}"), out.stdout
