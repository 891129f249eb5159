# SPDX-License-Identifier: Apache-2.0
"""Traffic metering to the byte: clients that count exactly what their socket carried (TLS
through MemoryBIO, so handshakes, tickets, alerts and close_notify are included) against the
listener's payload and wire counters, for https (full and resumed handshakes, keep-alive,
failed handshakes), tcp and http listeners."""

import socket
import ssl
import time
import types

import pytest

import slbd_harness as h
from http_util import HttpConn, add_listener, hx  # noqa: F401
from metering_util import (CountingSocket, MeteredTls, request_bytes, settle,
                           tls_client_context, tls_request)
from pki import pki, tls_block, upload_server  # noqa: F401

NOHC = h.no_health_check()
VERSIONS = [pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
            pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3")]


@pytest.fixture
def site(slbd, hx, pki):  # noqa: F811
    """An http echo backend in group "g" and the server certificate uploaded; each test adds
    its own listener, so its counters start at zero."""
    a = hx.backend("a")
    slbd.add_group("g", [a.server()], health_check=NOHC)
    cert = upload_server(slbd, pki, "server")

    return types.SimpleNamespace(backend=a, cert=cert)


def https_listener(slbd, site, name, **extra):
    return add_listener(slbd, name, "g", protocol="https", tls=tls_block([site.cert]), **extra)


def assert_bytes(ls, wire_in, wire_out, payload_in, payload_out, what):
    got = {"wire in": ls["wire_bytes"]["in"], "wire out": ls["wire_bytes"]["out"],
           "payload in": ls["payload_bytes"]["in"], "payload out": ls["payload_bytes"]["out"]}
    want = {"wire in": wire_in, "wire out": wire_out, "payload in": payload_in,
            "payload out": payload_out}
    diff = {k: f"slbd {got[k]} != client {want[k]} ({got[k] - want[k]:+d})" for k in got
            if got[k] != want[k]}
    assert not diff, f"{what}: listener {ls['name']} counters differ from the client's: {diff}"


def delta(after, before):
    """Listener byte counters of `after` minus `before`, in the shape of /v1/stats."""
    out = dict(after)
    out["wire_bytes"] = {d: after["wire_bytes"][d] - before["wire_bytes"][d] for d in
                         ("in", "out")}
    out["payload_bytes"] = {d: after["payload_bytes"][d] - before["payload_bytes"][d] for d in
                            ("in", "out")}
    return out


# --------------------------------------------------------------------------------------------
# https
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_https_full_handshake_bytes_exact(slbd, hx, pki, site, version):  # noqa: F811
    port = https_listener(slbd, site, "m")
    ctx = tls_client_context(pki, version=version)
    body = bytes(range(256)) * 80  # 20480 bytes: more than one TLS record
    c, resp = tls_request(port, ctx, "/bytes/30000", body, track=hx.track)
    assert resp.status == 200 and len(resp.body) == 30000, resp
    assert (resp.header("Connection") or "").lower() == "close", resp
    assert c.version() == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    ls = settle(slbd, "m")
    assert ls["connections"] == 1
    assert ls["handshakes"]["full"] == 1 and ls["handshakes"]["resumed"] == 0, ls
    assert_bytes(ls, c.sent, c.received, c.plain_sent, c.plain_received,
                 f"one {c.version()} request with Connection: close")
    # Payload is the application's bytes: the wire adds the handshake and record overhead.
    assert ls["wire_bytes"]["in"] > ls["payload_bytes"]["in"]
    assert ls["wire_bytes"]["out"] > ls["payload_bytes"]["out"]


@pytest.mark.parametrize("version", VERSIONS)
def test_https_resumed_handshake_bytes_exact(slbd, hx, pki, site, version):  # noqa: F811
    port = https_listener(slbd, site, "m")
    ctx = tls_client_context(pki, version=version)
    c1, r1 = tls_request(port, ctx, "/bytes/5000", b"first" * 100, track=hx.track)
    assert r1.status == 200 and not c1.session_reused
    assert c1.session is not None and c1.session.has_ticket, "no session ticket was issued"
    s1 = settle(slbd, "m")
    assert_bytes(s1, c1.sent, c1.received, c1.plain_sent, c1.plain_received, "full handshake")

    c2, r2 = tls_request(port, ctx, "/bytes/5000", b"second" * 100,
                         session=c1.session, track=hx.track)
    assert r2.status == 200
    assert c2.session_reused, "the second connection did not resume the first one's session"
    s2 = settle(slbd, "m")
    assert s2["handshakes"]["full"] == 1 and s2["handshakes"]["resumed"] == 1, s2["handshakes"]
    assert_bytes(delta(s2, s1), c2.sent, c2.received, c2.plain_sent, c2.plain_received,
                 "resumed handshake (counter deltas)")
    # No certificate crosses the wire on resumption: fewer bytes than the full handshake.
    assert c2.received < c1.received, (c1.received, c2.received)
    assert c2.sent + c2.received < c1.sent + c1.received


def test_https_keep_alive_accounted_per_request(slbd, hx, pki, site):  # noqa: F811
    """Wire bytes are accounted when a request completes (not only at close): after each
    response on a kept-alive connection the counters equal what the client's socket carried;
    a clean close (close_notify both ways) then adds exactly the closing bytes."""
    port = https_listener(slbd, site, "m")
    ctx = tls_client_context(pki)
    c = MeteredTls.connect(port, ctx, track=hx.track)
    conn = HttpConn(c)
    for i, size in enumerate((100, 17000, 3)):
        conn.send(request_bytes("POST", f"/bytes/{size * 2}", body=b"k" * size))
        r = conn.read_response("POST")
        assert r.status == 200 and len(r.body) == size * 2, r
        ls = settle(slbd, "m", active=1)
        assert_bytes(ls, c.sent, c.received, c.plain_sent, c.plain_received,
                     f"after response {i + 1} on a kept-alive connection")
    rest = c.shutdown()
    assert rest == b"" and c.close_notify, (rest, c.close_notify)
    c.close()
    ls = settle(slbd, "m")
    assert_bytes(ls, c.sent, c.received, c.plain_sent, c.plain_received,
                 "after a bidirectional close_notify")
    assert ls["connections"] == 1 and ls["handshakes"]["full"] == 1


def test_https_closes_by_slbd_exact(slbd, hx, pki, site):  # noqa: F811
    """Connections slbd ends on its own are metered to the byte too: a request head left
    unfinished (slbd answers 408 and closes) and a kept-alive connection left idle (slbd
    closes it with close_notify)."""
    port = https_listener(slbd, site, "m", header_timeout_s=1, idle_timeout_s=1)
    ctx = tls_client_context(pki)
    partial = MeteredTls.connect(port, ctx, track=hx.track)
    partial.sendall(b"GET /never-finished HTTP/1.1\r\nHost: loc")
    idle = MeteredTls.connect(port, ctx, track=hx.track)
    conn = HttpConn(idle)
    conn.send(request_bytes("GET", "/bytes/1000"))
    r = conn.read_response()
    assert r.status == 200 and len(r.body) == 1000, r
    head = partial.read_rest(timeout=10)
    assert head.startswith(b"HTTP/1.1 408 "), head[:200]
    assert idle.read_rest(timeout=10) == b"" and idle.close_notify
    partial.close()
    idle.close()
    ls = settle(slbd, "m")
    assert ls["requests"]["4xx"] == 1 and ls["requests"]["2xx"] == 1, ls["requests"]
    assert_bytes(ls, partial.sent + idle.sent, partial.received + idle.received,
                 partial.plain_sent + idle.plain_sent,
                 partial.plain_received + idle.plain_received,
                 "a 408 answer and an idle close, both by slbd")


def test_https_large_response_with_backpressure_exact(slbd, hx, pki, site):  # noqa: F811
    """A response far larger than the socket buffers, read only after a pause so slbd's TLS
    writes meet a full socket: the counters still equal what crossed the socket."""
    port = https_listener(slbd, site, "m")
    ctx = tls_client_context(pki)
    size = 4 << 20
    c = MeteredTls.connect(port, ctx, track=hx.track)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    conn = HttpConn(c)
    conn.send(request_bytes("GET", f"/bytes/{size}", close=True))
    time.sleep(0.5)  # let slbd fill the socket and wait for room
    r = conn.read_response(timeout=60)
    assert r.status == 200 and len(r.body) == size, (r.status, len(r.body))
    assert c.read_rest() == b"" and c.close_notify
    c.close()
    ls = settle(slbd, "m")
    assert_bytes(ls, c.sent, c.received, c.plain_sent, c.plain_received,
                 f"a {size}-byte response read after a pause")


def test_https_failed_handshake_counts_wire_bytes(slbd, hx, pki, site):  # noqa: F811
    """A refused ClientHello (TLS 1.1 under the default policy) moves no payload, but its
    bytes and slbd's alert are wire traffic."""
    port = https_listener(slbd, site, "m")
    ctx = tls_client_context(pki, version=ssl.TLSVersion.TLSv1_1, seclevel0=True)
    c = MeteredTls.connect(port, ctx, track=hx.track, handshake=False)
    with pytest.raises(ssl.SSLError):
        c.handshake()
    assert c.drain_socket() == "eof"
    c.close()
    assert c.sent > 0 and c.received > 0, (c.sent, c.received)
    ls = settle(slbd, "m")
    assert ls["handshakes"]["failures"]["protocol_version"] == 1, ls["handshakes"]
    assert_bytes(ls, c.sent, c.received, 0, 0, "a handshake refused with an alert")


# --------------------------------------------------------------------------------------------
# tcp and http
# --------------------------------------------------------------------------------------------


def test_tcp_wire_equals_payload(slbd, backend):
    t = backend("t", mode="tcp")
    slbd.add_group("gt", [t.server()], health_check=NOHC)
    port = slbd.add_tcp_listener("raw", "gt")
    c = CountingSocket(slbd.clients.connect(port))
    for i in range(3):
        data = bytes([65 + i]) * (30000 + i)
        c.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = c.recv(65536)
            assert chunk, f"EOF after {len(got)} of {len(data)} echoed bytes"
            got += chunk
        assert got == data
    c.shutdown_write()
    assert c.read_to_eof() == b""
    c.close()
    ls = settle(slbd, "raw")
    assert c.sent == c.received == 90003
    assert_bytes(ls, c.sent, c.received, c.sent, c.received, "tcp echo")
    assert ls["connections"] == 1
    srv = slbd.server_stats("gt", t.port)
    assert (srv["bytes_to"], srv["bytes_from"]) == (c.sent, c.received), srv


def test_http_server_bytes_sent_match_backend_record(slbd, hx):
    """Per-server bytes sent are what the backend received, across reused (pooled) backend
    connections too."""
    r = hx.backend("r", record=True)
    slbd.add_group("g", [r.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    for i in range(3):
        resp = c.request("POST", f"/rec/{i}", body=b"b" * (1000 * i))
        assert resp.status == 200, resp
    c.close()
    assert hx.get(port, "/rec/again").status == 200
    settle(slbd, "web")
    deadline = time.monotonic() + h.scaled(5)  # the backend writes its record as it reads
    while True:
        srv, recorded = slbd.server_stats("g", r.port), len(r.recorded())
        if srv["bytes_to"] == recorded or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert srv["bytes_to"] == recorded, (srv, recorded)
    assert srv["requests"] == 4 and srv["bytes_from"] > 0, srv


_FIXED_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Fixed: yes\r\n\r\nhello there"
_INTERIM = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"


def _fixed_backend(conn, backend):
    """Answers every request with _FIXED_RESPONSE, the second one after a 103 first."""
    n = 0
    while True:
        if not conn.read_head():
            return
        n += 1
        conn.sendall((_INTERIM if n == 2 else b"") + _FIXED_RESPONSE)


def test_http_server_bytes_received_are_exact(slbd, hx):
    """Per-server bytes received are exactly what the backend sent: heads (interim ones too)
    and bodies, each byte once."""
    rb = hx.raw_backend("fixed", _fixed_backend)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    for i in range(3):
        resp = c.request("GET", f"/fixed/{i}")
        assert resp.status == 200 and resp.body == b"hello there", resp
    c.close()
    settle(slbd, "web")
    want = 3 * len(_FIXED_RESPONSE) + len(_INTERIM)
    h.wait_until(lambda: slbd.server_stats("g", rb.port)["bytes_from"] >= want, 5,
                 "the server's bytes received to be counted")
    srv = slbd.server_stats("g", rb.port)
    assert srv["bytes_from"] == want, (srv, want)


def test_http_wire_equals_payload(slbd, hx, site):
    port = add_listener(slbd, "web", "g")
    c = CountingSocket(hx.socket(port))
    conn = HttpConn(c)
    conn.send(request_bytes("POST", "/bytes/7000", body=b"p" * 5000))
    r = conn.read_response("POST")
    assert r.status == 200 and len(r.body) == 7000, r
    ls = settle(slbd, "web", active=1)
    assert_bytes(ls, c.sent, c.received, c.sent, c.received, "after one keep-alive request")
    conn.send(request_bytes("GET", "/bytes/10", close=True))
    r = conn.read_response()
    assert r.status == 200 and len(r.body) == 10, r
    assert conn.read_to_eof() == b""
    c.close()
    ls = settle(slbd, "web")
    assert_bytes(ls, c.sent, c.received, c.sent, c.received, "plain http, two requests")
    assert ls["requests"]["total"] == 2 and ls["requests"]["2xx"] == 2
