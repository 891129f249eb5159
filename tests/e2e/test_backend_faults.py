# SPDX-License-Identifier: Apache-2.0
"""Backends that fail in every way a real one does, behind http (and tcp) listeners: resets
in the middle of a response, closes before answering, answers slower than request_timeout_s,
malformed or endless heads, every server down, a server that flaps up and down. The client
gets a truthful answer (502, 503, 504 or a cut connection, never a truncated response that
looks complete), slbd lets go of the broken connections, and a normal request is served
afterwards."""

import socket
import struct
import subprocess
import threading
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from h2_util import RawH2, client_context, https_listener
from http_util import (OK_RESPONSE, ConnectionEnded, HttpConn, Response,  # noqa: F401
                       Scripted, add_listener, build_request, flood_then_reset, get_listener, hx,
                       listener_stats, reset_mid_chunked, reset_mid_length, rst_close)
from metering_util import MeteredTls, scrape
from pki import pki, tls_block, upload_server  # noqa: F401

NOHC = h.no_health_check()
OK = OK_RESPONSE


def _wait_peer_close(conn, seconds):
    """True when slbd closes its side of a backend connection within `seconds`."""
    conn.sock.settimeout(seconds)
    try:
        while conn.recv_some():
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True


def site(slbd, hx, faults, **extra):
    sc = Scripted(hx, faults)
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g", **extra)
    # Warm a pooled connection so that a fault on a reused one is possible too.
    assert hx.get(port, "/ok").body == b"ok"
    return port, sc


def read_outcome(c, timeout=10):
    """("response", Response) for a complete response; ("cut", status or None, bytes) when
    the connection ended first (status from a head that did arrive); ("timeout", status or
    None, bytes) when nothing ended it within `timeout` seconds (scaled)."""
    deadline = time.monotonic() + h.scaled(timeout)
    raw = b""
    status = None
    interim = 0
    try:
        while True:
            status, reason, headers, raw = c.read_head(deadline)
            if 100 <= status < 200 and status != 101:
                interim += 1
                continue
            break
        r = Response(status, reason, headers, b"", raw, [None] * interim)
        te = (r.header("Transfer-Encoding") or "").lower()
        cl = r.header("Content-Length")
        if status in (101, 204, 304):
            return ("response", r)
        if "chunked" in te:
            r.body = c._read_chunked(deadline)
        elif cl is not None:
            r.body = c.read_exact(int(cl), deadline=deadline)
        else:
            r.body = c.read_to_eof(deadline=deadline)
        return ("response", r)
    except ConnectionEnded as e:
        return ("cut", status if status is not None else hu.status_of(e.partial),
                raw + e.partial)
    except h.HarnessError:
        return ("timeout", status, raw + bytes(c.buf))


# --------------------------------------------------------------------------------------------
# Resets and closes
# --------------------------------------------------------------------------------------------


def _reset_mid_close_delimited(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 1000)
    time.sleep(0.2)
    rst_close(conn)


@pytest.mark.parametrize("fault", [reset_mid_length, reset_mid_chunked],
                         ids=["content-length", "chunked"])
def test_backend_reset_mid_response(slbd, hx, fault):
    """The head went out; the backend resets. The client must be able to tell that the body
    is incomplete: fewer bytes than Content-Length, or no last chunk."""
    port, sc = site(slbd, hx, {"/reset": fault})
    with hu.Prober(port, target="/ok") as p:
        c = hx.connect(port)
        c.send(build_request("GET", "/reset"))
        got = read_outcome(c)
    if got[0] == "response":
        assert got[1].status == 502, f"a truncated response looks complete: {got[1]!r}"
    else:
        _, status, partial = got
        assert status in (200, None), partial[:200]
        assert not partial.endswith(b"0\r\n\r\n"), partial[-50:]
    p.assert_all_ok()
    # The backend connection is gone and a fresh one serves the next request.
    assert hx.get(port, "/ok").body == b"ok"


def test_close_delimited_cut_is_signalled_with_a_reset(slbd, hx):
    """A body without Content-Length or chunking ends when the backend closes. When the
    backend resets instead, an orderly close towards the client would make the cut body
    look complete: slbd must reset the client (or re-frame the body so the cut shows)."""
    port, sc = site(slbd, hx, {"/reset": _reset_mid_close_delimited})
    s = hx.socket(port)
    s.sendall(build_request("GET", "/reset"))
    data, how = hu.read_to_end(s)
    head, _, body = data.partition(b"\r\n\r\n")
    if hu.status_of(data) == 200:
        framed = b"content-length" in head.lower() or b"chunked" in head.lower()
        if framed:
            # slbd re-framed the body: the framing must show it is incomplete.
            assert not body.endswith(b"0\r\n\r\n"), data[-100:]
        else:
            assert how == "reset", (f"a close-delimited body cut by a backend reset reached "
                                    f"the client as a clean EOF ({len(body)} bytes): it looks "
                                    f"complete: {head!r}")


def test_reset_seen_by_an_upload_send_still_cuts_a_close_delimited_body(slbd, hx):
    """The kernel reports a backend's reset once, to whichever call comes first. When a send
    of the client's upload takes it, the backend's socket then reads as an orderly end of
    the stream: slbd must still cut a close-delimited body with a reset, not end it cleanly.
    The client does not read, so slbd stops reading the backend and the reset waits in the
    socket until the client's next body bytes are sent on."""
    flooded = threading.Event()
    port, sc = site(slbd, hx, {"/flood": flood_then_reset(flooded)})
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST /flood HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" +
              b"a" * 1000)
    assert flooded.wait(h.scaled(15)), "the backend never filled the buffers"
    time.sleep(0.3)  # the reset reaches slbd's backend socket
    s.sendall(b"b" * 1000)
    data, how = hu.read_to_end(s, timeout=15)
    s.close()
    assert hu.status_of(data) == 200, data[:200]
    assert how == "reset", (f"a close-delimited body cut by a backend reset reached the client "
                            f"as a clean EOF after {len(data)} bytes: it looks complete")
    assert hx.get(port, "/ok").body == b"ok"


def _early_then_close(conn):
    conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n"
                 b"Connection: close\r\n\r\nlarge")
    time.sleep(0.1)
    conn.sock.close()  # with the body unread: a reset


def _early_then_read_body(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
    while len(conn.buf) < 3000:
        chunk = conn.recv_some()
        if not chunk:
            return False
        conn.buf += chunk
    del conn.buf[:3000]
    return True  # the connection serves the next request


def test_early_response_from_a_closing_backend_ends_the_connection(slbd, hx):
    """A backend answers before the upload is in (an early 413) and closes: the client gets
    the response with Connection: close, then the end of the connection, at once; the rest
    of its body has nowhere to go."""
    port, sc = site(slbd, hx, {"/early": _early_then_close})
    s = hx.socket(port)
    s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" +
              b"a" * 1000)
    s.settimeout(h.scaled(5))
    data = b""
    t0 = time.monotonic()
    try:
        for _ in range(200):
            try:
                s.sendall(b"b" * 10000)
            except OSError:
                pass
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            time.sleep(0.02)
    except ConnectionResetError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    assert hu.status_of(data) == 413 and body == b"large", data[:300]
    assert b"connection: close" in head.lower(), head
    assert time.monotonic() - t0 < h.scaled(3), "the connection stayed open after the answer"
    assert hx.get(port, "/ok").body == b"ok"


def test_early_response_from_a_reading_backend_keeps_the_body_going(slbd, hx):
    """A backend may answer first and still read the body: slbd passes the rest of the body
    on, and the connection stays usable for the next request."""
    port, sc = site(slbd, hx, {"/early": _early_then_read_body})
    c = hx.connect(port)
    c.send(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n" + b"a" * 1000)
    got = read_outcome(c)
    assert got[0] == "response" and got[1].status == 200 and got[1].body == b"early", got
    assert (got[1].header("Connection") or "").lower() != "close", got[1]
    c.send(b"b" * 2000)
    r = c.request("GET", "/ok")
    assert r.status == 200 and r.body == b"ok", r


def _chunked_then_close(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" +
                 b"x" * 1000 + b"\r\n3e8\r\n" + b"y" * 500)
    time.sleep(0.2)
    conn.sock.close()


def _close_delimited_then_stall(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 1000)
    time.sleep(h.scaled(6))


@pytest.mark.parametrize("path,version", [
    ("/chunked-close", "1.0"), ("/chunked-reset", "1.0"), ("/close-delimited-stall", "1.1")])
def test_cut_of_a_body_ended_by_the_close_is_a_reset(slbd, hx, path, version):
    """An HTTP/1.0 client gets a chunked body decoded and ended by slbd's close, so a backend
    that ends that body early (close or reset) must show as a reset, never as a clean EOF; so
    must a close-delimited body cut by request_timeout_s because the backend stalled."""
    faults = {"/chunked-close": _chunked_then_close, "/chunked-reset": reset_mid_chunked,
              "/close-delimited-stall": _close_delimited_then_stall}
    port, sc = site(slbd, hx, faults, request_timeout_s=1)
    t0 = time.monotonic()
    data, how = hu.raw_exchange(port, f"GET {path} HTTP/{version}\r\nHost: x\r\n\r\n"
                                .encode(), timeout=8)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower(), \
        head
    assert how == "reset", (f"a cut body that only the close delimits ended with {how} after "
                            f"{len(body)} bytes: it looks complete: {head!r}")
    if hu.status_of(data) == 200:
        # What did arrive is the decoded data, no chunk framing.
        assert body == (b"x" * 1000 + b"y" * 500)[:len(body)], body[:100]
    assert time.monotonic() - t0 < h.scaled(5)
    assert hx.get(port, "/ok").body == b"ok"


def test_close_delimited_cut_over_tls_has_no_close_notify(slbd, hx, pki):  # noqa: F811
    """Over TLS, a close_notify would tell the client the close-delimited body is complete:
    the cut must reach it as a reset without one."""
    sc = Scripted(hx, {"/reset": _reset_mid_close_delimited})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = add_listener(slbd, "web", "g", protocol="https", tls=tls_block([cid]))
    # Through a memory BIO, so that the socket's own end (FIN or reset) is seen apart from
    # what TLS makes of it.
    s = MeteredTls.connect(port, hu.insecure_client_context(), track=hx.track)
    s.sendall(build_request("GET", "/reset"))
    data = b""
    how = None
    s.settimeout(h.scaled(10))
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                how = "close_notify" if s.close_notify else "eof without close_notify"
                break
            data += chunk
    except ConnectionResetError:
        how = "reset"
    assert how == "reset", (how, data[:200])
    if data:
        assert hu.status_of(data) == 200 and data.endswith(b"x"), data[-100:]


# --------------------------------------------------------------------------------------------
# Tunnels after 101
# --------------------------------------------------------------------------------------------

SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\n\r\n")
UPGRADE = [("Connection", "Upgrade"), ("Upgrade", "websocket")]


def _tunnel_then(end):
    """Switch to a tunnel, echo one line, then end the backend side with end(conn)."""
    def fault(conn):
        conn.sendall(SWITCH)
        while b"\n" not in conn.buf:
            chunk = conn.recv_some()
            if not chunk:
                return
            conn.buf += chunk
        conn.sendall(b"echo " + bytes(conn.buf))
        time.sleep(0.2)
        end(conn)
    return fault


TUNNEL_ENDS = {"/tunnel-reset": rst_close, "/tunnel-close": lambda conn: conn.sock.close()}


@pytest.mark.parametrize("protocol", ["http", "https"])
@pytest.mark.parametrize("path,expect", [("/tunnel-reset", "reset"), ("/tunnel-close", "eof")])
def test_backend_end_of_a_tunnel_reaches_the_client(slbd, hx, pki, protocol,  # noqa: F811
                                                    path, expect):
    """A backend that resets an upgraded connection lost bytes on the way: the client must
    see a reset too (over TLS without a close_notify, which would say the stream ended
    cleanly). A backend that closes cleanly ends the client side cleanly."""
    sc = Scripted(hx, {p: _tunnel_then(end) for p, end in TUNNEL_ENDS.items()})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    extra = {}
    if protocol == "https":
        extra = {"protocol": "https", "tls": tls_block([upload_server(slbd, pki, "server")])}
    port = add_listener(slbd, "web", "g", **extra)
    if protocol == "https":
        tls = MeteredTls.connect(port, hu.insecure_client_context(), track=hx.track)
        c = HttpConn(tls)
    else:
        c = hx.connect(port)
    r = c.request("GET", path, UPGRADE)
    assert r.status == 101, r
    c.send(b"hello\n")
    assert c.read_exact(len(b"echo hello\n")) == b"echo hello\n"
    t0 = time.monotonic()
    how = c.closed(h.scaled(5))
    assert how == expect, f"the backend's {path[8:]} reached the client as {how}"
    assert time.monotonic() - t0 < h.scaled(3)
    if protocol == "https":
        assert tls.close_notify == (expect == "eof"), tls.close_notify
    # The listener serves on.
    if protocol == "http":
        assert hx.get(port, "/ok").body == b"ok"


def test_backend_half_close_of_a_tunnel_is_passed_on(slbd, hx):
    """A backend that only shuts down its sending side still reads: the client sees the end
    of the backend's stream, and what it sends afterwards still reaches the backend, until it
    ends its own side, which ends the tunnel."""
    after = []

    def half_close(conn):
        conn.sock.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = conn.recv_some()
            if not chunk:
                break
            got += chunk
        after.append(got)

    port, sc = site(slbd, hx, {"/tunnel-half": _tunnel_then(half_close)})
    c = hx.connect(port)
    r = c.request("GET", "/tunnel-half", UPGRADE)
    assert r.status == 101, r
    c.send(b"hello\n")
    assert c.read_exact(len(b"echo hello\n")) == b"echo hello\n"
    assert c.read_to_eof(timeout=5) == b""
    c.send(b"after the backend's end\n")
    c.sock.shutdown(socket.SHUT_WR)
    h.wait_until(lambda: after, 5, "the backend to see the client's end")
    assert after == [b"after the backend's end\n"], after
    h.wait_until(lambda: listener_stats(slbd, "web")["active"] == 0, 5, "the tunnel to end")


@pytest.mark.parametrize("client_end", ["reset", "close"])
def test_client_end_of_a_tunnel_reaches_the_backend(slbd, hx, client_end):
    """The other direction: a client that resets an upgraded connection makes slbd reset the
    backend's side (an orderly FIN would tell the backend the stream ended cleanly); a client
    that closes cleanly ends the backend's side with a FIN."""
    seen = []

    def watch(conn):
        try:
            while conn.recv_some():
                pass
            seen.append("close")
        except ConnectionResetError:
            seen.append("reset")

    port, sc = site(slbd, hx, {"/tunnel-watch": _tunnel_then(watch)})
    c = hx.connect(port)
    r = c.request("GET", "/tunnel-watch", UPGRADE)
    assert r.status == 101, r
    c.send(b"hello\n")
    assert c.read_exact(len(b"echo hello\n")) == b"echo hello\n"
    if client_end == "reset":
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.sock.close()
    h.wait_until(lambda: seen, 5, "the backend to see the client's end")
    assert seen == [client_end], seen
    h.wait_until(lambda: listener_stats(slbd, "web")["active"] == 0, 5, "the tunnel to end")


def _late_switch(conn):
    time.sleep(0.3)  # the client has ended its side before the 101 goes out
    conn.sendall(SWITCH)
    while conn.recv_some():
        pass
    conn.sendall(b"bye")
    conn.sock.close()


def test_client_end_before_the_101_reaches_the_backend(slbd, hx):
    """A client that half-closes right after its upgrade request, before the 101: once the
    tunnel exists its end is passed on, so the backend learns of it and can finish."""
    port, sc = site(slbd, hx, {"/late-switch": _late_switch})
    s = hx.socket(port)
    s.sendall(build_request("GET", "/late-switch", UPGRADE))
    s.shutdown(socket.SHUT_WR)
    data = h.read_to_eof(s, timeout=5)
    assert data.startswith(b"HTTP/1.1 101 ") and data.endswith(b"\r\n\r\nbye"), data


CLOSES = {
    "/read-then-close": lambda conn: conn.sock.close(),
    "/read-then-reset": rst_close,
    "/partial-status-line": lambda conn: (conn.sendall(b"HTTP/1.1 2"), conn.sock.close()),
    "/partial-head": lambda conn: (conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le"),
                                   conn.sock.close()),
}


@pytest.mark.parametrize("path", list(CLOSES))
def test_backend_closes_before_answering(slbd, hx, path):
    port, sc = site(slbd, hx, dict(CLOSES))
    c = hx.connect(port)
    c.send(build_request("GET", path))
    got = read_outcome(c)
    assert got[0] == "response" and got[1].status == 502, got
    assert hx.get(port, "/ok").body == b"ok"


def test_backend_that_closes_every_connection_at_once(slbd, hx):
    def closer(conn, backend):
        conn.sock.close()
    rb = hx.raw_backend("closer", closer)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    with hu.Prober(port, interval=0.05) as p:
        time.sleep(1)
    assert p.results and all(r == 502 for _, r, _ in p.results), p.summary()
    assert rb.accepted >= len(p.results)


# --------------------------------------------------------------------------------------------
# Slow and malformed
# --------------------------------------------------------------------------------------------


def _never_answers(conn):
    time.sleep(h.scaled(8))


def _head_then_stall(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
    time.sleep(h.scaled(8))


def _trickled_head(conn):
    for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 40:
        conn.sendall(bytes([b]))
        time.sleep(0.4)


@pytest.mark.parametrize("path,expect", [
    ("/never", 504), ("/stall-body", "cut"),
    ("/trickled-head", 504)])
def test_backend_slower_than_request_timeout(slbd, hx, path, expect):
    faults = {"/never": _never_answers, "/stall-body": _head_then_stall,
              "/trickled-head": _trickled_head}
    timeout_s = 1
    port, sc = site(slbd, hx, faults, request_timeout_s=timeout_s)
    with hu.Prober(port, target="/ok") as p:
        c = hx.connect(port)
        t0 = time.monotonic()
        c.send(build_request("GET", path))
        got = read_outcome(c, timeout=timeout_s + 4)
        took = time.monotonic() - t0
    if expect == 504:
        # /trickled-head moves a byte every 0.4 s: an inactivity timer never fires, but
        # request_timeout_s is documented to run from the request to the complete response
        # without restarting when data moves.
        assert got[0] == "response" and got[1].status == 504, (
            f"{got} after {took:.1f} s with request_timeout_s={timeout_s}")
        assert took < timeout_s + h.scaled(2), took
    else:
        assert got[0] == "cut" and got[1] == 200, got
        assert took < timeout_s + h.scaled(2), took
    p.assert_all_ok()


def _endless_head(conn):
    conn.sock.settimeout(h.scaled(10))
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(256):
            conn.sendall(b"X-Endless: " + b"v" * 4000 + b"\r\n")
    except OSError:
        pass


def _continue_flood(conn):
    try:
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 20000 + OK)
    except OSError:
        pass


def test_backend_with_an_endless_head(slbd, hx):
    port, sc = site(slbd, hx, {"/endless": _endless_head})
    rss0 = hu.rss_kb(slbd.pid)
    c = hx.connect(port)
    r = c.request("GET", "/endless", timeout=10)
    assert r.status == 502, r
    assert hu.rss_kb(slbd.pid) - rss0 < hu.rss_budget_kb(8 << 10)
    assert hx.get(port, "/ok").body == b"ok"


def test_backend_flooding_interim_responses(slbd, hx):
    port, sc = site(slbd, hx, {"/flood": _continue_flood})
    c = hx.connect(port)
    c.send(build_request("GET", "/flood"))
    got = read_outcome(c, timeout=15)
    # Forwarding the 1xx responses (or refusing them with a 502) is fine; hanging is not.
    assert (got[0] == "response" and got[1].status in (200, 502)) or got[0] == "cut", got
    if got[0] == "response":
        print(f"\n20000 interim responses from the backend: the client got "
              f"{len(got[1].interim)} of them and a {got[1].status}")
    assert hx.get(port, "/ok").body == b"ok"


# --------------------------------------------------------------------------------------------
# Servers down, flapping
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_all_servers_down_then_one_back(slbd, hx):
    a = hx.backend("a")
    b = hx.backend("b")
    slbd.add_group("g", [a.server(), b.server()], health_check=h.fast_health_check())
    http_port = add_listener(slbd, "web", "g")
    tcp_port = slbd.add_tcp_listener("raw", "g")
    assert hx.get(http_port, "/").status == 200
    a.kill()
    b.kill()
    slbd.wait_health("g", a.port, "down", 15)
    slbd.wait_health("g", b.port, "down", 15)
    for _ in range(5):
        t0 = time.monotonic()
        assert hu.simple_get(http_port) == 503
        assert time.monotonic() - t0 < h.scaled(1)
    # tcp: accepted and reset at once, no waiting for a connect timeout.
    for _ in range(5):
        t0 = time.monotonic()
        try:
            s = socket.create_connection(("127.0.0.1", tcp_port), timeout=5)
        except ConnectionResetError:
            how = "reset"  # reset before connect() even returned
        else:
            how = h.wait_closed(s, h.scaled(2))
            s.close()
        assert how in ("reset", "eof") and time.monotonic() - t0 < h.scaled(1), how
    a.restart()
    slbd.wait_health("g", a.port, "up", 15)
    with hu.Prober(http_port) as p:
        time.sleep(1)
    p.assert_all_ok()
    s = socket.create_connection(("127.0.0.1", tcp_port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert h.read_to_eof(s).startswith(b"HTTP/1.1 200 ")
    s.close()


class Flapping:
    """An HTTP server on a fixed port that is up for `up_s` seconds, then gone for `down_s`
    (listening socket closed, its connections reset), over and over."""

    def __init__(self, up_s, down_s):
        self.up_s = up_s
        self.down_s = down_s
        self.port = h.free_port()
        self.stop = threading.Event()
        self.conns = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def server(self):
        return {"address": "127.0.0.1", "port": self.port, "weight": 100}

    def _serve(self, c):
        c.settimeout(h.scaled(10))
        buf = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    _, _, buf = buf.partition(b"\r\n\r\n")
                    c.sendall(OK)
        except OSError:
            return

    def _run(self):
        while not self.stop.is_set():
            ls = socket.socket()
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(("127.0.0.1", self.port))
            ls.listen(128)
            ls.settimeout(0.05)
            end = time.monotonic() + self.up_s
            while time.monotonic() < end and not self.stop.is_set():
                try:
                    c, _ = ls.accept()
                except socket.timeout:
                    continue
                with self.lock:
                    self.conns.append(c)
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()
            ls.close()
            self._drop_all()
            self.stop.wait(self.down_s)

    def _drop_all(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            # shutdown first: a close alone does not end a socket that a serving thread is
            # blocked on in recv(), and slbd would keep a pooled connection to a dead server.
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            hu.abort(c)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self._drop_all()


@pytest.fixture
def flapping():
    made = []

    def make(up_s, down_s):
        f = Flapping(up_s, down_s)
        made.append(f)
        return f
    yield make
    for f in made:
        f.close()


def _client_loop(port, seconds, results):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            res = hu.simple_get(port, timeout=h.scaled(5))
        except (OSError, h.HarnessError) as e:
            res = f"{type(e).__name__}: {e}"
        results.append((round(t0, 2), res, round(time.monotonic() - t0, 3)))
        time.sleep(0.03)


@pytest.mark.timeout(60)
def test_flapping_server_alone(slbd, hx, flapping):
    f = flapping(4, 4)
    slbd.add_group("g", [f.server()], health_check=h.fast_health_check())
    port = add_listener(slbd, "web", "g")
    results = []
    health = []
    clients = [threading.Thread(target=_client_loop, args=(port, 12, results), daemon=True)
               for _ in range(2)]
    for t in clients:
        t.start()
    end = time.monotonic() + 12
    while time.monotonic() < end:
        s = slbd.server_stats("g", f.port)
        health.append(s["health"] if s else None)
        time.sleep(0.2)
    for t in clients:
        t.join(h.scaled(15))
    statuses = {r for _, r, _ in results}
    transitions = sum(1 for x, y in zip(health, health[1:]) if x != y)
    print(f"\nflapping alone: {len(results)} requests, statuses {sorted(map(str, statuses))}, "
          f"health transitions {transitions}: {''.join('U' if x == 'up' else 'D' for x in health)}")
    assert statuses <= {200, 502, 503}, [r for r in results if r[1] not in (200, 502, 503)][:5]
    assert 200 in statuses and statuses & {502, 503}, statuses
    assert max(lat for _, _, lat in results) < h.scaled(2), "a request hung"
    assert "up" in health and "down" in health and transitions >= 2, health


@pytest.mark.timeout(60)
def test_flapping_server_with_a_stable_partner(slbd, hx, flapping):
    f = flapping(1.5, 1.5)
    stable = hx.backend("stable")
    slbd.add_group("g", [f.server(), stable.server()], health_check=h.fast_health_check())
    port = add_listener(slbd, "web", "g")
    results = []
    clients = [threading.Thread(target=_client_loop, args=(port, 6, results), daemon=True)
               for _ in range(2)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(h.scaled(15))
    bad = [r for r in results if r[1] != 200]
    print(f"\nflapping with a stable partner: {len(results)} requests, {len(bad)} not 200")
    # A refused connect moves on to the stable server; a pooled connection that the flapping
    # server reset before any response byte is retried. Every client gets a 200.
    assert not bad, bad[:10]


def test_broken_backend_connections_are_not_kept(slbd, hx):
    """After a burst of faults slbd holds no backend connection to the faulty server (each
    fault ended one), and the client side is back to nothing active."""
    faults = {"/cut": reset_mid_length, "/close": CLOSES["/read-then-close"]}
    port, sc = site(slbd, hx, faults)
    for i in range(20):
        c = hx.connect(port)
        c.send(build_request("GET", "/cut" if i % 2 else "/close"))
        read_outcome(c)
        c.close()
    h.wait_until(lambda: listener_stats(slbd, "web")["active"] == 0, 10, "client connections")
    # Every backend connection of a fault was closed by the backend itself; slbd has at most
    # the pooled /ok connection from the warm-up (one per worker) open to the backend.
    socks = h.describe_sockets(slbd.pid)
    to_backend = [v for v in socks.values() if f"->127.0.0.1:{sc.raw.port} ESTABLISHED" in v]
    fds = h.fd_table(slbd.pid)
    inodes = {t[8:-1] for t in fds.values() if t.startswith("socket:[")}
    held = [v for k, v in socks.items() if k in inodes and f"127.0.0.1:{sc.raw.port}" in v]
    assert len(held) <= slbd.workers, (held, to_backend)
    assert hx.get(port, "/ok").body == b"ok"


# --------------------------------------------------------------------------------------------
# Retries, reuse of pooled connections, and each server's count of active requests
# --------------------------------------------------------------------------------------------


class CloseOnReuse:
    """A raw backend that answers the first request of each connection with 200 "ok" and
    closes without a word at the second one, as a backend whose keep-alive timer fires just
    as slbd reuses the connection. It records every request line it read."""

    def __init__(self, hx):
        self.seen = []
        self._lock = threading.Lock()
        self.raw = hx.raw_backend("close-on-reuse", self.handle)

    def server(self):
        return self.raw.server()

    def handle(self, conn, backend):
        head = conn.read_head()
        if not head:
            return
        with self._lock:
            self.seen.append(head.split(b"\r\n", 1)[0].decode())
        conn.sendall(OK)
        head = conn.read_head()
        if head:
            with self._lock:
                self.seen.append(head.split(b"\r\n", 1)[0].decode())

    def count(self, line):
        with self._lock:
            return self.seen.count(line)


@pytest.mark.parametrize("method,retried", [("POST", False), ("PATCH", False), ("GET", True),
                                            ("DELETE", True)])
def test_only_idempotent_requests_are_retried_on_a_reused_connection(slbd, hx, method,
                                                                        retried):
    """A request sent on a reused backend connection that closes without answering may have
    been acted on: only an idempotent one goes again on a new connection (RFC 9112 9.3.1).
    A POST (here without a body, which nothing else would keep from a second try) gets 502
    and reached the backend once."""
    be = CloseOnReuse(hx)
    slbd.add_group("g", [be.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    assert c.request("GET", "/warm").body == b"ok"  # its backend connection is pooled
    r = c.request(method, "/act")
    line = f"{method} /act HTTP/1.1"
    if retried:
        assert r.status == 200 and r.body == b"ok", r
        assert be.count(line) == 2, be.seen
    else:
        assert r.status == 502, r
        assert be.count(line) == 1, be.seen
    # The request sent again on a fresh connection counts as the listener's retry.
    assert scrape(slbd).value("slbd_listener_retries_total", listener="web") == int(retried)


@pytest.mark.parametrize("method,retried", [("POST", False), ("GET", True)])
def test_h2_only_idempotent_requests_are_retried_on_a_reused_connection(slbd, hx, pki, method,
                                                                           retried):
    be = CloseOnReuse(hx)
    slbd.add_group("g", [be.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    assert c.get("/warm").status == 200
    s = c.wait_stream(c.request(method, "/act"))
    line = f"{method} /act HTTP/1.1"
    if retried:
        assert s.status == 200 and bytes(s.data) == b"ok", s
        assert be.count(line) == 2, be.seen
    else:
        assert s.status == 502, s
        assert be.count(line) == 1, be.seen
    assert scrape(slbd).value("slbd_listener_retries_total", listener="h2") == int(retried)


class ServesThenEnds:
    """A raw backend that answers `serve` requests on each connection (200 "ok", kept alive,
    no Connection: close) and at the next one ends the connection without a word: a FIN, or a
    reset (end="reset"), as a backend whose keep-alive limit ends a connection just as slbd
    reuses it. It records every request line it read (seen) and those it answered (served)."""

    def __init__(self, hx, serve, end="fin"):
        self.serve, self.end = serve, end
        self.seen, self.served = [], []
        self._lock = threading.Lock()
        self.raw = hx.raw_backend("serves-then-ends", self.handle)

    def server(self):
        return self.raw.server()

    def _read(self, conn):
        head = conn.read_head()
        if head:
            with self._lock:
                self.seen.append(head.split(b"\r\n", 1)[0].decode())
        return head

    def handle(self, conn, backend):
        for _ in range(self.serve):
            head = self._read(conn)
            if not head:
                return
            with self._lock:
                self.served.append(head.split(b"\r\n", 1)[0].decode())
            conn.sendall(OK)
        if self._read(conn) and self.end == "reset":
            rst_close(conn)


def _one_request_connections(hx, port, n, h2=None):
    """n client connections (HTTP/2 over TLS with the client context h2), one GET each
    (/one/0 .. /one/n-1): their statuses."""
    statuses = []
    for i in range(n):
        if h2:
            c = RawH2.connect(port, h2, track=hx.track)
            statuses.append(c.get(f"/one/{i}").status)
        else:
            c = hx.connect(port)
            statuses.append(c.request("GET", f"/one/{i}").status)
        c.close()
    return statuses


@pytest.mark.slbd(workers=1)
@pytest.mark.parametrize("end", ["fin", "reset"])
@pytest.mark.parametrize("proto", ["http1", "h2"])
def test_safe_first_gets_reuse_pooled_connections_and_a_stale_one_is_retried(slbd, hx, pki, end,
                                                                             proto):
    """backend_reuse "safe" (the default): the first request of a client connection, when it
    is a GET without a body, may take a pooled backend connection, because slbd can send it
    again itself. Clients that send one request per connection reuse backend connections;
    each time the backend ends one just as slbd reuses it (here after 3 requests, with a FIN
    or a reset and no Connection: close before), the request goes again on a new connection:
    every client gets 200, each request is answered once, and the retry is counted."""
    be = ServesThenEnds(hx, serve=3, end=end)
    slbd.add_group("g", [be.server()], health_check=NOHC)
    if proto == "h2":
        port = https_listener(slbd, "web", "g", upload_server(slbd, pki, "server"))
        ctx = client_context(pki)
    else:
        port, ctx = add_listener(slbd, "web", "g"), None
    assert get_listener(slbd, "web")["backend_reuse"] == "safe"
    n = 15
    statuses = _one_request_connections(hx, port, n, h2=ctx)
    assert statuses == [200] * n, statuses
    assert sorted(be.served) == sorted(f"GET /one/{i} HTTP/1.1" for i in range(n)), be.served
    # Each backend connection served 3 one-request clients: 5 connections, not 15; and each
    # of the 4 that ended did so under a request that went again on the next one.
    assert be.raw.accepted == n // 3, (be.raw.accepted, be.seen)
    assert len(be.seen) == n + n // 3 - 1, be.seen
    assert scrape(slbd).value("slbd_listener_retries_total", listener="web") == n // 3 - 1
    assert scrape(slbd).get("slbd_listener_requests_total", 0, listener="web",
                            **{"class": "5xx"}) == 0


@pytest.mark.slbd(workers=1)
def test_safe_first_gets_survive_a_backend_that_closes_idle_connections(slbd, hx):
    """A backend that closes a kept-alive connection after 300 ms idle, without a word before.
    One-request client connections, some right after the last one (the pooled connection is
    reused), some after 500 ms (it is gone, or going): every request gets 200."""
    def handle(conn, backend):
        conn.sock.settimeout(0.3)  # the read times out: the connection closes with a FIN
        while conn.read_head():
            conn.sendall(OK)

    raw = hx.raw_backend("idle-closer", handle)
    slbd.add_group("g", [raw.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    statuses = []
    for i in range(16):
        if i % 4 == 0:
            time.sleep(0.5)
        statuses += _one_request_connections(hx, port, 1)
    assert statuses == [200] * 16, statuses
    assert raw.accepted < 16, raw.accepted  # the requests in between reused connections


@pytest.mark.slbd(workers=1)
def test_safe_first_requests_slbd_cannot_resend_get_a_new_connection(slbd, hx):
    """Under "safe", a first request with a body, or with a method that is not idempotent,
    never goes on a pooled backend connection: if the backend closed that just as the request
    went out, slbd could not send it again, and the client cannot tell that from a failure."""
    be = ServesThenEnds(hx, serve=1000)
    slbd.add_group("g", [be.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    assert _one_request_connections(hx, port, 1) == [200]  # its backend connection is pooled
    accepted = be.raw.accepted
    for method, body in [("POST", b""), ("POST", b"x"), ("PATCH", b""), ("PUT", b"data"),
                         ("DELETE", b"data")]:
        c = hx.connect(port)
        r = c.request(method, "/first", body=body)
        assert r.status == 200 and r.body == b"ok", (method, r)
        c.close()
        accepted += 1
        assert be.raw.accepted == accepted, (method, body, be.raw.accepted)
    # A GET, OPTIONS or a bodiless PUT takes a pooled one.
    for method in ("GET", "PUT", "OPTIONS"):
        c = hx.connect(port)
        assert c.request(method, "/first").status == 200
        c.close()
    assert be.raw.accepted == accepted


@pytest.mark.slbd(workers=1)
def test_safe_first_get_on_a_pooled_connection_is_not_resent_after_a_response_byte(slbd, hx):
    """A pooled connection that the backend ends after it began its answer: the backend may
    have acted on the request, and part of the answer is lost, so slbd does not send it
    again: the client gets 502 and the backend saw the request once."""
    def handle(conn, backend):
        conn.read_head()
        conn.sendall(OK)
        if conn.read_head():
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
            time.sleep(0.1)

    raw = hx.raw_backend("partial-on-reuse", handle)
    slbd.add_group("g", [raw.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    assert _one_request_connections(hx, port, 1) == [200]
    c = hx.connect(port)
    r = c.request("GET", "/act")
    assert r.status == 502, r
    c.close()
    assert raw.accepted == 1  # the GET took the pooled connection and was not sent again
    assert sum(rec.count(b"GET /act ") for rec in raw.received) == 1, raw.received
    assert scrape(slbd).value("slbd_listener_retries_total", listener="web") == 0


class CloseAtOnce:
    """A raw backend that reads each request and closes without a word, as a server that
    accepted the connection and then died. It records every request line it read."""

    def __init__(self, hx):
        self.seen = []
        self._lock = threading.Lock()
        self.raw = hx.raw_backend("close-at-once", self.handle)

    def server(self):
        return self.raw.server()

    def handle(self, conn, backend):
        head = conn.read_head()
        if head:
            with self._lock:
                self.seen.append(head.split(b"\r\n", 1)[0].decode())

    def count(self, line):
        with self._lock:
            return self.seen.count(line)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_fresh_connection_that_fails_moves_an_idempotent_request_on(slbd, hx, method):
    """With backend_reuse "safe" a client connection's first request gets a fresh backend
    connection. When that one ends before any response byte, an idempotent request goes to
    the next server, as after a failed connect; a POST, which the backend may have acted on,
    gets 502 and reached it once."""
    bad = CloseAtOnce(hx)
    good = hx.backend("good")
    slbd.add_group("g", [bad.server(), good.server()], scheduler="rr", health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    statuses = []
    for _ in range(6):
        c = hx.connect(port)
        statuses.append(c.request(method, "/act").status)
        c.close()
    line = f"{method} /act HTTP/1.1"
    assert bad.count(line) >= 2, bad.seen  # rr sent it there about every second time
    if method == "GET":
        assert statuses == [200] * 6, statuses
    else:
        assert statuses.count(502) == bad.count(line), (statuses, bad.seen)
        assert statuses.count(200) == 6 - statuses.count(502), statuses


def test_h2_a_fresh_connection_that_fails_moves_a_get_on(slbd, hx, pki):
    bad = CloseAtOnce(hx)
    good = hx.backend("good")
    slbd.add_group("g", [bad.server(), good.server()], scheduler="rr", health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    statuses = []
    for _ in range(6):
        c = RawH2.connect(port, client_context(pki), track=hx.track)
        statuses.append(c.get("/act").status)
        c.close()
    assert bad.count("GET /act HTTP/1.1") >= 2, bad.seen
    assert statuses == [200] * 6, statuses


class StrayAfterResponse:
    """A raw backend that answers /stray and then, `delay` seconds later, sends a second
    response nobody asked for on the same connection; every other request gets 200 "ok".
    Connections it accepted are counted (self.raw.accepted)."""

    STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY"

    def __init__(self, hx, delay):
        self.delay = delay
        self.raw = hx.raw_backend("stray", self.handle)

    def server(self):
        return self.raw.server()

    def handle(self, conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            conn.sendall(OK)
            if head.startswith(b"GET /stray "):
                time.sleep(self.delay)
                conn.sendall(self.STRAY)


@pytest.mark.slbd(workers=1)
@pytest.mark.parametrize("mode,method", [("safe", "POST"), ("safe", "GET"), ("always", "POST")])
def test_backend_reuse_keeps_a_stray_response_from_another_client(slbd, hx, mode, method):
    """Client A's request is answered, then the backend sends a stray response on that
    connection, pooled by then. Client B's first request comes just before the stray. When it
    takes A's pooled connection it reads the stray as its answer: under "always", and under
    "safe" (the default) for a GET without a body, which slbd could send again if the
    connection failed (a backend that answers what nobody asked breaks HTTP/1.1 for any
    reused connection, HAProxy's and nginx's too). Under "safe" a first request slbd could not
    send again (a POST) never goes on a connection another client used."""
    be = StrayAfterResponse(hx, delay=0.6)
    slbd.add_group("g", [be.server()], health_check=NOHC)
    extra = {} if mode == "safe" else {"backend_reuse": "always"}
    port = add_listener(slbd, "web", "g", **extra)
    assert get_listener(slbd, "web")["backend_reuse"] == mode
    a = hx.connect(port)
    assert a.request("GET", "/stray").body == b"ok"
    time.sleep(0.2)  # A's connection is in the pool; the stray comes 0.4 s later
    b = hx.connect(port)
    r = b.request(method, "/b")
    if mode == "safe" and method == "POST":
        assert r.status == 200 and r.body == b"ok", r
        assert be.raw.accepted == 2
    else:
        assert r.body == b"STRAY", r  # what a new connection prevents
    # Later requests of a client connection may reuse pooled connections, but never one
    # that became readable while idle: the stray closed it.
    time.sleep(0.8)
    for conn in (a, b):
        r = conn.request("GET", "/later")
        assert r.status == 200 and r.body == b"ok", r


@pytest.mark.slbd(workers=1)
def test_a_stray_response_on_an_idle_pooled_connection_closes_it(slbd, hx):
    """Bytes that arrive on a pooled connection while no request uses it end that connection:
    the next request (one that may reuse: not the first of its client connection) gets a new
    connection and the real answer."""
    be = StrayAfterResponse(hx, delay=0.1)
    slbd.add_group("g", [be.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    assert c.request("GET", "/stray").body == b"ok"
    time.sleep(0.5)
    r = c.request("GET", "/next")
    assert r.status == 200 and r.body == b"ok", r
    assert be.raw.accepted == 2
    r = c.request("GET", "/again")  # the new one was pooled and is reused
    assert r.status == 200 and r.body == b"ok", r
    assert be.raw.accepted == 2


@pytest.mark.slbd(workers=1)
def test_pooled_connections_that_slbd_ends_are_reset_not_left_in_time_wait(slbd, hx):
    """A pooled backend connection carries nothing, so when slbd ends it itself (stopping here;
    a full pool and the idle timeout take the same path) it sends a reset, not a FIN: an
    orderly close would leave slbd a TIME_WAIT socket towards the backend for each one, and
    with backend_reuse "safe" and clients that send one request per connection that is one
    per client connection (docs/benchmarks.md, "A client that closes first")."""
    ends = []

    def handle(conn, backend):
        try:
            while conn.read_head():
                conn.sendall(OK)
            ends.append("fin")
        except ConnectionResetError:
            ends.append("reset")

    raw = hx.raw_backend("idle", handle)
    slbd.add_group("g", [raw.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    for i in range(3):  # "safe": a client connection's first POST opens its own
        c = hx.connect(port)
        r = c.request("POST", f"/one/{i}")
        assert r.status == 200 and r.body == b"ok", r
        c.close()
    assert raw.accepted == 3
    assert slbd.stop() == 0
    deadline = time.monotonic() + h.scaled(10)
    while len(ends) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ends == ["reset"] * 3, ends
    # Nothing waits in TIME_WAIT on slbd's side (the backend's port is the remote one).
    out = subprocess.run(["ss", "-Htan", "state", "time-wait", f"( dport = :{raw.port} )"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", out


def _hang_or_ok(conn, backend):
    while True:
        head = conn.read_head()
        if not head:
            return
        if head.startswith(b"GET /hang "):
            conn.recv_some()  # until slbd gives up and closes
            return
        conn.sendall(OK)


@pytest.mark.parametrize("proto", ["http", "h2"])
def test_active_requests_end_with_a_504_and_wlc_picks_the_server_again(slbd, hx, pki, proto):
    """Each 504 ends its exchange: the server's active count (GET /v1/stats) is back to 0, so
    a least-connections group sends it its share again once a second server joins."""
    slow = hx.raw_backend("slow", _hang_or_ok)
    other = hx.raw_backend("other", _hang_or_ok)
    slbd.add_group("g", [slow.server()], scheduler="wlc", health_check=NOHC)
    if proto == "http":
        port = add_listener(slbd, "web", "g", request_timeout_s=1)

        def status(path):
            return hx.get(port, path).status
    else:
        cid = upload_server(slbd, pki, "server")
        port = https_listener(slbd, "web", "g", cid, request_timeout_s=1)
        c = RawH2.connect(port, client_context(pki), track=hx.track)

        def status(path):
            return c.get(path).status
    for _ in range(3):
        assert status("/hang") == 504
    h.wait_until(lambda: slbd.server_stats("g", slow.port)["active"] == 0, 5,
                 "the slow server's active count back to 0")
    slbd.put_group("g", [slow.server(), other.server()], scheduler="wlc", health_check=NOHC)
    for _ in range(20):
        assert status("/ok") == 200
    got = slbd.server_stats("g", slow.port)["requests"]
    assert got >= 5, f"wlc sent the slow server {got} of 20 requests"
