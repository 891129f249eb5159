# SPDX-License-Identifier: Apache-2.0
"""tcp listeners end to end: bytes through slbd to echo backends, half-close, the schedulers,
draining, PROXY protocol, connect retries, health-driven failover and idle timeouts."""

import collections
import hashlib
import os
import socket
import threading
import time

import pytest

import slbd_harness as h


def test_bytes_echoed_exactly(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(), b.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    s = clients.connect(port)
    # The first bytes must not start like "WHO\n", which the backend treats as a question.
    payloads = [b"hello\n", bytes(range(256)), b"\x00" * 1000 + b"\xff" * 1000,
                b"\r\n\r\n", os.urandom(100_000), b"x"]
    for p in payloads:
        h.echo_roundtrip(s, p)


def test_one_megabyte_round_trip(slbd, backend, clients):
    a = backend("a")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    data = b"M" + os.urandom(1 << 20)
    s = clients.connect(port)
    errors = []

    def send():
        try:
            s.sendall(data)
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    got = h.recv_exact(s, len(data), timeout=30)
    t.join(h.scaled(10))
    assert not errors, errors
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # Payload metering counts what the client sent and received.
    st = slbd.stats()
    lis = next(x for x in st["listeners"] if x["name"] == "l")
    h.wait_until(lambda: next(x for x in slbd.stats()["listeners"] if x["name"] == "l")
                 ["payload_bytes"]["out"] >= len(data), 5, "payload_bytes.out to count 1 MiB")
    assert lis["payload_bytes"]["in"] >= len(data)


def test_many_sequential_connections(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(), b.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    for i in range(300):
        s = clients.connect(port)
        msg = f"message {i} ".encode() * 20
        h.echo_roundtrip(s, msg)
        s.close()
    st = slbd.stats()
    g = next(x for x in st["groups"] if x["name"] == "g")
    conns = {s["port"]: s["connections"] for s in g["servers"]}
    assert sum(conns.values()) == 300, conns
    assert all(c > 0 for c in conns.values()), conns


def test_half_close(slbd, backend, clients):
    a = backend("a")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    data = b"half-close " + os.urandom(300_000)
    s = clients.connect(port)
    sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)),
                              daemon=True)
    sender.start()
    got = h.read_to_eof(s, timeout=30)
    sender.join(h.scaled(10))
    assert got == data


@pytest.mark.slbd(workers=1)
def test_weighted_distribution(slbd, backend, clients):
    # One worker: each worker schedules on its own, so one gives the exact smooth-wrr ratio.
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(weight=3), b.server(weight=1)],
                   health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    counts = collections.Counter(h.who(clients, port) for _ in range(400))
    assert set(counts) == {"a", "b"}, counts
    assert abs(counts["a"] - 300) <= 30 and abs(counts["b"] - 100) <= 30, counts


def test_weighted_distribution_two_workers(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(weight=3), b.server(weight=1)],
                   health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    counts = collections.Counter(h.who(clients, port) for _ in range(400))
    # Each worker follows 3:1 on its own share, so the sum stays close to 3:1.
    assert abs(counts["a"] - 300) <= 40, counts


def test_round_robin(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(weight=5), b.server(weight=1)], scheduler="rr",
                   health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    counts = collections.Counter(h.who(clients, port) for _ in range(100))
    # rr ignores weights; every worker alternates, so two workers differ by at most 2.
    assert abs(counts["a"] - counts["b"]) <= 2, counts


def test_weighted_least_connections(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(weight=3), b.server(weight=1)], scheduler="wlc",
                   health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    held = []
    for _ in range(8):
        # Each connection stays open and is known to be established (the answer came back)
        # before the next one is scheduled, so the active counts are exact.
        s = clients.connect(port)
        s.sendall(b"WHO\n")
        held.append(h.recv_line(s))
    counts = collections.Counter(held)
    assert counts == {"a": 6, "b": 2}, counts


def test_source_hash_stickiness(slbd, backend, clients):
    bs = [backend(n) for n in ("a", "b", "c")]
    slbd.add_group("g", [x.server() for x in bs], scheduler="sch",
                   health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    names = {h.who(clients, port) for _ in range(50)}
    assert len(names) == 1, f"one client address reached {names}"
    # Other client addresses (127.0.0.0/8 is all local) spread over the servers, each sticky.
    seen = {}
    for i in range(2, 42):
        src = f"127.0.0.{i}"
        first = h.who(clients, port, source=src)
        again = h.who(clients, port, source=src)
        assert first == again, f"{src} went to {first} then {again}"
        seen[src] = first
    assert len(set(seen.values())) >= 2, seen


def test_weight_zero_drains(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(), b.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    # Hold one connection on each server.
    held = {}
    for _ in range(20):
        s = clients.connect(port)
        s.sendall(b"WHO\n")
        held.setdefault(h.recv_line(s), s)
        if len(held) == 2:
            break
    assert set(held) == {"a", "b"}
    slbd.put_group("g", [a.server(weight=0), b.server()], health_check=h.no_health_check())
    names = collections.Counter(h.who(clients, port) for _ in range(40))
    assert names == {"b": 40}, names
    # The drained server keeps serving the connection it already had.
    h.echo_roundtrip(held["a"], b"still here " * 100)
    h.echo_roundtrip(held["b"], b"also here " * 100)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol(slbd, backend, clients, version):
    p = backend("p", proxy_protocol=True)
    slbd.add_group("g", [p.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g", proxy_protocol=version)
    for src in ("127.0.0.1", "127.0.0.9"):
        s = clients.connect(port, source=src)
        s.sendall(b"WHO\n")
        line = h.recv_line(s)
        host, cport = s.getsockname()
        assert line == f"p PROXY={host}:{cport}", line
        # The header is not part of the stream the client sees; data still flows both ways.
        h.echo_roundtrip(s, b"after the header " * 50)
        s.close()


def test_connect_failure_tries_next_server(slbd, backend, clients):
    live = backend("live")
    dead = h.dead_port()
    for sched in ("rr", "wrr"):
        slbd.add_group(f"g-{sched}", [{"address": "127.0.0.1", "port": dead, "weight": 100},
                                      live.server()],
                       scheduler=sched, health_check=h.no_health_check())
        port = slbd.add_tcp_listener(f"l-{sched}", f"g-{sched}")
        names = collections.Counter(h.who(clients, port) for _ in range(20))
        assert names == {"live": 20}, (sched, names)
    st = slbd.server_stats("g-rr", dead)
    assert st["failures"] > 0, st


def test_all_servers_down_closes_promptly(slbd, clients):
    slbd.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port()},
                         {"address": "127.0.0.1", "port": h.dead_port()}],
                   health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    for _ in range(5):
        assert refused_promptly(clients, port)
    # No usable server for other reasons: an empty group, every weight 0.
    slbd.put_group("g", [], health_check=h.no_health_check())
    assert refused_promptly(clients, port)
    slbd.put_group("g", [{"address": "127.0.0.1", "port": h.dead_port(), "weight": 0}],
                   health_check=h.no_health_check())
    assert refused_promptly(clients, port)


def refused_promptly(clients, port):
    """True when slbd ends a new connection within 2 s: refused, reset (possibly while connect
    still runs on loopback) or closed; False when it leaves the client hanging."""
    t0 = time.monotonic()
    try:
        s = clients.connect(port)
        s.sendall(b"WHO\n")
    except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
        return True
    how = h.wait_closed(s, h.scaled(2))
    return how in ("eof", "reset") and time.monotonic() - t0 < h.scaled(2) + 0.5


def test_health_check_removes_killed_backend(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server(), b.server()], scheduler="rr",
                   health_check=h.fast_health_check())
    port = slbd.add_tcp_listener("l", "g")
    assert {h.who(clients, port) for _ in range(10)} == {"a", "b"}
    b.kill()
    slbd.wait_health("g", b.port, "down", timeout=15)
    fails_before = slbd.server_stats("g", b.port)["failures"]
    names = collections.Counter(h.who(clients, port) for _ in range(50))
    assert names == {"a": 50}, names
    # Detection means slbd no longer even tries the dead server.
    assert slbd.server_stats("g", b.port)["failures"] == fails_before
    # All servers down: connections are closed at once, not left hanging.
    a.kill()
    slbd.wait_health("g", a.port, "down", timeout=15)
    assert refused_promptly(clients, port)


def test_server_added_by_put_takes_traffic(slbd, backend, clients):
    a, c = backend("a"), backend("c")
    slbd.add_group("g", [a.server()], scheduler="rr", health_check=h.fast_health_check())
    port = slbd.add_tcp_listener("l", "g")
    assert {h.who(clients, port) for _ in range(6)} == {"a"}
    slbd.put_group("g", [a.server(), c.server()], scheduler="rr",
                   health_check=h.fast_health_check())
    # A new server takes traffic at once, before its first health check has run.
    names = collections.Counter(h.who(clients, port) for _ in range(10))
    assert names["c"] >= 4, names
    slbd.put_group("g", [c.server()], scheduler="rr", health_check=h.fast_health_check())
    assert {h.who(clients, port) for _ in range(6)} == {"c"}


def test_established_timeout_closes_idle_connection(slbd, backend, clients):
    a = backend("a")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g", established_timeout_s=2)
    idle = clients.connect(port)
    busy = clients.connect(port)
    h.echo_roundtrip(idle, b"ping\n")
    h.echo_roundtrip(busy, b"ping\n")
    t0 = time.monotonic()
    closed_at = None
    while time.monotonic() - t0 < h.scaled(8):
        # The busy connection is used every 0.4 s and must survive the whole time.
        h.echo_roundtrip(busy, b"keepalive\n")
        how = h.wait_closed(idle, 0.4)
        if how:
            closed_at = time.monotonic() - t0
            break
    assert closed_at is not None, "idle connection not closed after established_timeout_s"
    assert closed_at >= 1.5, f"idle connection closed after {closed_at:.2f} s, before 2 s"
    t1 = time.monotonic()
    while time.monotonic() - t1 < 2.5:
        h.echo_roundtrip(busy, b"keepalive\n")
        time.sleep(0.4)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_ipv6_listener_with_proxy_protocol(slbd, backend, clients, version):
    p = backend("p6", proxy_protocol=True)
    slbd.add_group("g", [p.server()], health_check=h.no_health_check())
    port = h.free_port("::1")
    st, js = slbd.api.post("/v1/listeners", {"name": "l6", "protocol": "tcp",
                                             "bind": f"[::1]:{port}", "backend_group": "g",
                                             "proxy_protocol": version})
    assert st == 201, js
    s = clients.connect(port, host="::1")
    s.sendall(b"WHO\n")
    host, cport = s.getsockname()[:2]
    assert h.recv_line(s) == f"p6 PROXY=[{host}]:{cport}"
    h.echo_roundtrip(s, b"v6 " * 100)


def test_max_connections(slbd, backend, clients):
    a = backend("a")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g", max_connections=2)
    held = [clients.connect(port) for _ in range(2)]
    for s in held:
        h.echo_roundtrip(s, b"in\n")
    assert refused_promptly(clients, port), "a third connection was not turned away"
    held[0].close()
    h.wait_until(lambda: next(x for x in slbd.stats()["listeners"] if x["name"] == "l")
                 ["active"] < 2, 5, "the closed connection to leave the count")
    s = clients.connect(port)
    h.echo_roundtrip(s, b"room again\n")
    h.echo_roundtrip(held[1], b"still fine\n")
    assert next(x for x in slbd.stats()["listeners"] if x["name"] == "l")["refused"] >= 1


def test_connect_timeout_tries_next_server(slbd, backend, clients):
    """A server that never completes the handshake (its accept queue is full, so SYNs are
    dropped) costs connect_timeout_ms, then the next server takes the connection."""
    live = backend("live")
    hole = socket.socket()
    fillers = []
    try:
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        hole_port = hole.getsockname()[1]
        # Fill the accept queue; further connects hang in SYN_SENT.
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", hole_port))
            fillers.append(f)
        time.sleep(0.2)
        slbd.add_group("g", [{"address": "127.0.0.1", "port": hole_port}, live.server()],
                       scheduler="rr", health_check=h.no_health_check())
        port = slbd.add_tcp_listener("l", "g", connect_timeout_ms=300)
        slow = 0
        for _ in range(6):
            t0 = time.monotonic()
            assert h.who(clients, port) == "live"
            slow += time.monotonic() - t0 >= 0.25
        # rr alternates the first try, so about half went to the black hole first.
        assert slow >= 2, slow
        assert slbd.server_stats("g", hole_port)["failures"] >= 2
    finally:
        for f in fillers:
            f.close()
        hole.close()


def test_client_abort_and_backend_death(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    # A client that resets in the middle of a transfer.
    for _ in range(10):
        s = clients.connect(port)
        s.sendall(b"x" + os.urandom(200_000))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # A backend that dies under an open connection: the client learns it at once.
    slbd.put_group("g", [b.server()], health_check=h.no_health_check())
    s = clients.connect(port)
    h.echo_roundtrip(s, b"before\n")
    b.kill()
    assert h.wait_closed(s, h.scaled(2)) in ("eof", "reset")
    assert slbd.running()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_slow_reader_backpressure(slbd, backend, clients):
    """A client that sends much more than it reads: slbd buffers a bounded amount (the rest
    waits in the sender) and every byte arrives in order once the client reads."""
    a = backend("a")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    data = b"S" + os.urandom(48 << 20)
    s = clients.connect(port)
    rss0 = rss_kib(slbd.pid)
    t = threading.Thread(target=s.sendall, args=(data,), daemon=True)
    t.start()
    time.sleep(1.0)
    grown = rss_kib(slbd.pid) - rss0
    if not h.is_sanitized():  # ASan's quarantine keeps freed buffers: RSS says nothing there
        assert grown < 16 << 10, f"slbd grew by {grown} KiB holding a slow reader's data"
    digest = hashlib.sha256()
    left = len(data)
    while left:
        chunk = h.recv_exact(s, min(left, 1 << 20), timeout=60)
        digest.update(chunk)
        left -= len(chunk)
    t.join(h.scaled(10))
    assert digest.digest() == hashlib.sha256(data).digest()


def pipe_fds(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        except OSError:
            pass
    return n


@pytest.mark.parametrize("mode", ["off", "auto", "on"])
def test_copy_modes_move_every_byte(slbd_factory, backend, monkeypatch, mode):
    """SLBD_TCP_SPLICE picks how bytes cross: buffers only, splice for bulk flows (default) or
    splice always. Each mode moves 8 MiB each way with half-close, meters it to the byte, and
    the splice modes really hold the pending bytes in pipes (none left after the close)."""
    monkeypatch.setenv("SLBD_TCP_SPLICE", mode)
    d = slbd_factory(name="slbd", workers=1)
    a = backend("a")
    d.add_group("g", [a.server()], health_check=h.no_health_check())
    port = d.add_tcp_listener("l", "g")
    base_pipes = pipe_fds(d.pid)
    data = b"P" + os.urandom(8 << 20)
    s = socket.create_connection(("127.0.0.1", port))
    try:
        sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)),
                                  daemon=True)
        sender.start()
        # The client does not read yet: the echo comes back and waits in slbd (bounded).
        time.sleep(1.0)
        held_pipes = pipe_fds(d.pid) - base_pipes
        got = h.read_to_eof(s, timeout=60)
        sender.join(h.scaled(10))
    finally:
        s.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    if mode == "off":
        assert held_pipes == 0, held_pipes
    else:
        assert held_pipes >= 2, f"{mode}: no pipe holds the waiting bytes ({held_pipes})"

    def lis():
        return next(x for x in d.stats()["listeners"] if x["name"] == "l")
    h.wait_until(lambda: lis()["active"] == 0, 10, "the connection to close")
    st = lis()
    assert st["payload_bytes"] == {"in": len(data), "out": len(data)}, st["payload_bytes"]
    assert st["wire_bytes"] == st["payload_bytes"], st
    assert pipe_fds(d.pid) == base_pipes
