# SPDX-License-Identifier: Apache-2.0
"""http listeners end to end: keep-alive on both sides, pipelining, streamed chunked bodies,
100-continue, the forwarding headers, hop-by-hop removal, the hash schedulers, the answers
slbd makes itself (502, 503, 504, 408, 301), timeouts, sticky sessions, ACLs, WebSocket
tunnels, reloads and limits."""

import os
import re
import signal
import socket
import threading
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import (add_listener, build_request, chunked, cookie_setter,  # noqa: F401
                       get_listener, header_value, hx, put_listener, response_or_end)

NOHC = h.no_health_check()


def web(slbd, hx, n=1, listener="web", record=False, **extra):
    """n echo backends in group "g" behind an http listener; returns (port, backends)."""
    bs = [hx.backend(chr(ord("a") + i), record=record) for i in range(n)]
    slbd.add_group("g", [b.server() for b in bs], health_check=NOHC)
    port = add_listener(slbd, listener, "g", **extra)
    return port, bs


# --------------------------------------------------------------------------------------------
# Keep-alive, reuse, pipelining
# --------------------------------------------------------------------------------------------


def test_keep_alive_to_client(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    local = c.sock.getsockname()
    for i in range(5):
        r = c.request("GET", f"/ka/{i}")
        assert r.status == 200, r
        assert r.json()["path"] == f"/ka/{i}"
        assert (r.header("Connection") or "").lower() != "close", r
    assert c.sock.getsockname() == local
    st = h.wait_until(lambda: (x := [ls for ls in slbd.stats()["listeners"]
                                     if ls["name"] == "web"]) and x[0], 5, "listener stats")
    assert st["connections"] == 1, st


def test_group_change_reaches_an_open_keep_alive_connection(slbd, hx):
    """A server set to weight 0 gets no more requests from a keep-alive connection opened
    before the change: each request uses the listener's newest configuration."""
    a, b = hx.backend("a"), hx.backend("b")
    slbd.add_group("g", [a.server(), b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    before = {c.request("GET", f"/before/{i}").json()["server"] for i in range(6)}
    assert before == {"a", "b"}, before
    slbd.put_group("g", [a.server(), b.server(weight=0)], health_check=NOHC)
    local = c.sock.getsockname()
    after = [c.request("GET", f"/after/{i}").json()["server"] for i in range(8)]
    assert after == ["a"] * 8, after
    assert c.sock.getsockname() == local  # the same connection throughout


def test_source_hash_keeps_each_client_address_on_one_server(slbd, hx):
    """sch on an http listener: every request of a client address, on one keep-alive
    connection or on new ones, goes to the same server; addresses spread over the servers."""
    bs = [hx.backend(n) for n in ("a", "b", "c", "d")]
    slbd.add_group("g", [b.server() for b in bs], scheduler="sch", health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    seen = {}
    for i in range(2, 14):
        src = f"127.0.0.{i}"
        c = hx.connect(port, source=src)
        servers = {c.request("GET", f"/sch/{i}/{k}").json()["server"] for k in range(3)}
        servers.add(hx.connect(port, source=src).request("GET", "/again").json()["server"])
        assert len(servers) == 1, f"{src} reached {servers}"
        seen[src] = servers.pop()
    assert len(set(seen.values())) >= 2, seen


def test_hash_scheduler_change_reaches_an_open_keep_alive_connection(slbd, hx):
    """The connection's hash key is computed once, for the scheduler it was made for: after
    the group moves from sch to tch, and then to wrr, an open keep-alive connection follows."""
    bs = [hx.backend(n) for n in ("a", "b", "c", "d")]
    servers = [b.server() for b in bs]
    slbd.add_group("g", servers, scheduler="sch", health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port, source="127.0.0.7")
    assert len({c.request("GET", f"/sch/{k}").json()["server"] for k in range(4)}) == 1
    slbd.put_group("g", servers, scheduler="tch", health_check=NOHC)
    # tch hashes the ports too: still one server for the connection, any of them.
    assert len({c.request("GET", f"/tch/{k}").json()["server"] for k in range(4)}) == 1
    slbd.put_group("g", servers, scheduler="wrr", health_check=NOHC)
    spread = {c.request("GET", f"/wrr/{k}").json()["server"] for k in range(8)}
    assert spread == {"a", "b", "c", "d"}, spread


@pytest.mark.slbd(workers=1)
def test_backend_connection_reused(slbd, hx):
    port, _ = web(slbd, hx, backend_reuse="always")
    peers = []
    for i in range(5):
        # A fresh client connection each time: only the backend side can be reused.
        r = hx.get(port, f"/reuse/{i}")
        assert r.status == 200, r
        peers.append(r.json()["peer"])
    assert len(set(peers)) == 1, peers


@pytest.mark.slbd(workers=1)
def test_backend_reuse_safe_gives_a_first_request_its_own_connection(slbd, hx):
    """The default, "safe": the first request of each client connection gets a new backend
    connection unless slbd could send it again itself (an idempotent method, no body): a
    POST does, a GET takes a pooled one. The later requests reuse pooled connections."""
    port, _ = web(slbd, hx)
    firsts = []
    for i in range(3):
        c = hx.connect(port)
        r = c.request("POST", f"/first/{i}", body=b"x")
        assert r.status == 200, r
        firsts.append(r.json()["peer"])
        later = {c.request("GET", f"/later/{i}/{k}").json()["peer"] for k in range(3)}
        assert len(later) == 1 and later <= set(firsts), (later, firsts)
        c.close()
    assert len(set(firsts)) == 3, firsts
    gets = {hx.get(port, f"/get/{i}").json()["peer"] for i in range(3)}
    assert len(gets) == 1 and gets <= set(firsts), (gets, firsts)


def test_pipelined_requests_answered_in_order(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    c.send(b"".join(build_request("GET", f"/pipe/{i}") for i in range(3)))
    paths = [c.read_response().json()["path"] for _ in range(3)]
    assert paths == ["/pipe/0", "/pipe/1", "/pipe/2"]
    # The connection is still usable afterwards.
    assert c.request("GET", "/after").json()["path"] == "/after"


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


def _send_in_thread(conn, data, errors):
    def run():
        try:
            conn.send(data)
        except OSError as e:
            errors.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(90)
@pytest.mark.parametrize("total,chunk", [(5_000_000, 100_000), (1_000_000, 1000)],
                         ids=["5MB-in-100KB-chunks", "1MB-in-1KB-chunks"])
def test_chunked_upload_streamed(slbd, hx, total, chunk):
    port, _ = web(slbd, hx)
    body = os.urandom(total)
    c = hx.connect(port)
    head = build_request("POST", "/upload", [("Transfer-Encoding", "chunked")])
    errors = []
    t = _send_in_thread(c, head + chunked(body, chunk), errors)
    r = c.read_response(timeout=10)
    t.join(h.scaled(30))
    assert not errors, errors
    assert r.status == 200, r
    js = r.json()
    assert js["body_bytes"] == total, js
    assert js["headers"].get("transfer-encoding") == "chunked", js
    assert "content-length" not in js["headers"], js


@pytest.mark.timeout(90)
def test_large_download(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    r = c.request("GET", "/bytes/5000000", timeout=10)
    assert r.status == 200 and r.header("Content-Length") == "5000000", r
    assert len(r.body) == 5_000_000 and r.body.count(b"x") == 5_000_000
    # And the connection is reusable after a body that large.
    assert c.request("GET", "/next").json()["path"] == "/next"


def _chunked_responder(size, chunk):
    payload = os.urandom(size)

    def handler(conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: application/octet-stream\r\n\r\n")
            out = bytearray()
            for i in range(0, size, chunk):
                part = payload[i:i + chunk]
                out += b"%x\r\n" % len(part) + part + b"\r\n"
            conn.sendall(out)
            conn.sendall(b"0\r\nX-Trailer: done\r\n\r\n")
    return payload, handler


@pytest.mark.timeout(90)
@pytest.mark.parametrize("total,chunk", [(5_000_000, 65536), (1_000_000, 1000)],
                         ids=["5MB-in-64KB-chunks", "1MB-in-1KB-chunks"])
def test_chunked_response_streamed(slbd, hx, total, chunk):
    # Small chunks matter: each one is a separate step of slbd's chunked framing check.
    payload, handler = _chunked_responder(total, chunk)
    rb = hx.raw_backend("chunky", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    r = c.request("GET", "/stream", timeout=10)
    assert r.status == 200, r
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked", r
    assert r.body == payload
    assert c.request("GET", "/again", timeout=10).body == payload


def test_head_and_bodiless_statuses(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    # HEAD carries the length of the body it does not send; 204 and 304 carry neither.
    r = c.request("HEAD", "/bytes/1000")
    assert r.status == 200 and r.header("Content-Length") == "1000", r
    assert c.buf == b"", c.buf
    for code in (204, 304):
        r = c.request("GET", f"/status/{code}")
        assert r.status == code and r.body == b"", r
    r = c.request("GET", "/status/404")
    assert r.status == 404 and r.json()["path"] == "/status/404", r
    # Nothing was left behind on the connection by the bodiless answers.
    assert c.request("GET", "/last").json()["path"] == "/last"


def test_expect_100_continue(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    c.send(build_request("PUT", "/cont", [("Expect", "100-continue"),
                                          ("Content-Length", "11")]))
    deadline = time.monotonic() + h.scaled(10)
    status, _, _, raw = c.read_head(deadline)
    assert status == 100, raw
    c.send(b"hello world")
    r = c.read_response()
    assert r.status == 200, r
    assert r.json()["body_bytes"] == 11


# --------------------------------------------------------------------------------------------
# Headers towards the backend
# --------------------------------------------------------------------------------------------


def test_forwarded_headers(slbd, hx):
    port, _ = web(slbd, hx)
    r = hx.get(port, "/fwd", [("X-Forwarded-For", "203.0.113.7"),
                              ("X-Forwarded-Proto", "https"),
                              ("X-Forwarded-Port", "1"),
                              ("X-Real-IP", "198.51.100.9")])
    assert r.status == 200, r
    hd = r.json()["headers"]
    assert hd["x-forwarded-for"] == "203.0.113.7, 127.0.0.1", hd
    assert hd["x-forwarded-proto"] == "http", hd
    assert hd["x-forwarded-port"] == str(port), hd
    assert hd["x-real-ip"] == "127.0.0.1", hd
    # Without a client value the list is just the client.
    hd = hx.get(port, "/fwd2").json()["headers"]
    assert hd["x-forwarded-for"] == "127.0.0.1", hd


def test_underscore_twins_of_forwarding_headers_are_dropped(slbd, hx):
    """A backend that maps field names to CGI-style variables (Rack/Puma, WSGI, PHP) reads
    X_Real_IP as X-Real-IP: a client's underscore twin of a field slbd sets could clobber
    slbd's (Puma's CVE-2024-45614), so it never reaches the backend."""
    b = hx.backend("rec", record=True)
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    twins = [("X_Forwarded_For", "203.0.113.7"), ("X-Forwarded_Proto", "gopher"),
             ("x_forwarded_port", "1"), ("X_REAL_IP", "198.51.100.9"),
             ("X_Forwarded_Clientcert_subjectdn", "CN=forged"), ("X-Real_IP", "192.0.2.1")]
    r = hx.get(port, "/twins", twins + [("X_Custom_Header", "kept")])
    assert r.status == 200, r
    hd = r.json()["headers"]
    assert hd["x-forwarded-for"] == "127.0.0.1" and hd["x-real-ip"] == "127.0.0.1", hd
    assert hd["x-forwarded-proto"] == "http" and hd["x-forwarded-port"] == str(port), hd
    head = b.recorded().split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for name, value in twins:
        assert f"{name}:" not in head and (len(value) < 4 or value not in head), head
    assert "X_Custom_Header: kept" in head, head


def test_every_client_forwarded_for_line_is_kept(slbd, hx):
    port, _ = web(slbd, hx)
    r = hx.get(port, "/xff2", [("X-Forwarded-For", "203.0.113.7"),
                               ("X-Forwarded-For", "198.51.100.1, 192.0.2.3")])
    hd = r.json()["headers"]
    assert hd["x-forwarded-for"] == "203.0.113.7, 198.51.100.1, 192.0.2.3, 127.0.0.1", hd


def test_forwarded_headers_switched_off(slbd, hx):
    port, _ = web(slbd, hx, x_forwarded_for=False, x_forwarded_proto=False)
    hd = hx.get(port, "/off", [("X-Forwarded-For", "203.0.113.7"),
                               ("X-Forwarded-Proto", "https")]).json()["headers"]
    assert "x-forwarded-for" not in hd and "x-forwarded-proto" not in hd, hd
    assert "x-forwarded-port" not in hd, hd
    assert hd["x-real-ip"] == "127.0.0.1", hd


def test_hop_by_hop_headers_removed(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    r = c.request("GET", "/hop", [("Connection", "close, foo"), ("Foo", "secret"),
                                  ("Keep-Alive", "timeout=5"), ("TE", "trailers"),
                                  ("Proxy-Connection", "keep-alive"), ("Trailer", "X-T"),
                                  ("Bar", "kept")])
    assert r.status == 200, r
    hd = r.json()["headers"]
    for gone in ("connection", "foo", "keep-alive", "te", "proxy-connection", "trailer"):
        assert gone not in hd, (gone, hd)
    assert hd["bar"] == "kept", hd
    # The client asked to close: slbd says so and closes after the response.
    assert (r.header("Connection") or "").lower() == "close", r
    assert c.closed(h.scaled(5)) in ("eof", "reset")


def test_connection_cannot_remove_forwarding_headers(slbd, hx):
    port, _ = web(slbd, hx)
    r = hx.get(port, "/xff", [("Connection", "X-Forwarded-For, X-Real-IP, X-Forwarded-Proto"),
                              ("X-Forwarded-For", "192.0.2.1")])
    hd = r.json()["headers"]
    assert hd.get("x-forwarded-for") == "192.0.2.1, 127.0.0.1", hd
    assert hd.get("x-real-ip") == "127.0.0.1", hd
    assert hd.get("x-forwarded-proto") == "http", hd


def test_hop_by_hop_headers_removed_from_response(slbd, hx):
    def handler(conn, backend):
        while conn.read_head():
            body = b"resp"
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal\r\n"
                         b"X-Internal: yes\r\nKeep-Alive: timeout=99\r\nX-Public: yes\r\n"
                         b"Content-Length: 4\r\n\r\n" + body)
    rb = hx.raw_backend("r", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    r = hx.get(port, "/")
    assert r.status == 200 and r.body == b"resp", r
    assert r.header("X-Internal") is None and r.header("Keep-Alive") is None, r
    assert r.header("X-Public") == "yes", r


# --------------------------------------------------------------------------------------------
# Answers slbd makes itself
# --------------------------------------------------------------------------------------------


def test_503_when_every_server_is_down(slbd, hx):
    dead = h.dead_port()
    slbd.add_group("g", [{"address": "127.0.0.1", "port": dead}],
                   health_check=h.fast_health_check())
    port = add_listener(slbd, "web", "g")
    slbd.wait_health("g", dead, "down", timeout=15)
    c = hx.connect(port)
    r = c.request("GET", "/down")
    assert r.status == 503, r
    # A 503 of slbd's own keeps the connection usable.
    assert c.request("GET", "/down2").status == 503


def test_503_for_an_empty_group(slbd, hx):
    slbd.add_group("g", [], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    assert hx.get(port, "/").status == 503


def test_an_answer_before_the_upload_reaches_a_client_still_sending(slbd, hx):
    """slbd answers 503 at the request head, with a megabyte of body still on its way. It
    closes its side and drops what the client still sends until the client closes: the
    client's sends do not fail and it reads the whole answer, then an orderly end. Closing
    with unread bytes would have the kernel reset the connection under the upload."""
    slbd.add_group("g", [], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    s = hx.socket(port)
    s.settimeout(h.scaled(10))
    s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
    time.sleep(0.2)  # the answer and slbd's close come before the body
    for _ in range(16):
        s.sendall(b"u" * 65536)
    data, how = hu.read_to_end(s)
    s.close()
    assert how == "eof", (how, data[:200])
    assert data.startswith(b"HTTP/1.1 503 "), data[:200]
    head = data.partition(b"\r\n\r\n")[0].lower()
    assert b"connection: close" in head, head
    assert hx.get(port, "/").status == 503


def test_502_when_every_connect_fails(slbd, hx):
    # Health checks off: the server counts as up, and the connect itself is refused.
    slbd.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port()}], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    assert hx.get(port, "/").status == 502


def test_connect_failure_moves_to_the_next_server(slbd, hx):
    good = hx.backend("good")
    slbd.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port()}, good.server()],
                   health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    for i in range(6):
        r = hx.get(port, f"/retry/{i}")
        assert r.status == 200 and r.json()["server"] == "good", r


def test_retries_through_a_group_bigger_than_the_inline_tried_flags(slbd, hx):
    # 40 servers: more than the 32 whose tried flags an exchange holds itself, so the flags
    # live in an array the exchange state keeps. 39 refuse the connect; every request still
    # reaches the one that answers, on one keep-alive connection and on new ones.
    good = hx.backend("good")
    servers = [{"address": "127.0.0.1", "port": h.dead_port()} for _ in range(39)]
    slbd.add_group("g", servers + [good.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    for i in range(8):
        r = c.request("GET", f"/big/{i}")
        assert r.status == 200 and r.json()["server"] == "good", r
    for i in range(4):
        r = hx.get(port, f"/big/new/{i}")
        assert r.status == 200 and r.json()["server"] == "good", r


def _closer(conn, backend):
    conn.read_head()  # then close without a word


def _garbage(conn, backend):
    if conn.read_head():
        conn.sendall(b"\x16\x03\x01\x00\x05hello garbage\r\n\r\n")


@pytest.mark.parametrize("handler", [_closer, _garbage], ids=["closes", "garbage"])
def test_502_on_a_broken_backend(slbd, hx, handler):
    rb = hx.raw_backend("broken", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    r = c.request("GET", "/broken")
    assert r.status == 502, r
    assert rb.accepted >= 1


def test_504_when_the_backend_is_too_slow(slbd, hx):
    port, _ = web(slbd, hx, request_timeout_s=1)
    c = hx.connect(port)
    r = c.request("GET", "/slow/3000", timeout=15)
    assert r.status == 504, r
    # A fast request on a new connection is still served.
    assert hx.get(port, "/fast").status == 200


def test_408_on_header_timeout(slbd, hx):
    port, bs = web(slbd, hx, record=True, header_timeout_s=1)
    c = hx.connect(port)
    c.send(b"GET /partial HTTP/1.1\r\nHost: x\r\nX-Never: ")
    r = c.read_response(timeout=10)
    assert r.status == 408, r
    assert (r.header("Connection") or "").lower() == "close", r
    assert c.closed(h.scaled(5)) in ("eof", "reset")
    assert bs[0].recorded() == b""


def test_idle_keep_alive_connection_closed(slbd, hx):
    port, _ = web(slbd, hx, idle_timeout_s=1)
    c = hx.connect(port)
    assert c.request("GET", "/once").status == 200
    # No byte arrives: slbd closes the connection silently after idle_timeout_s.
    assert c.closed(h.scaled(10)) == "eof"
    # A connection that never sent anything is closed the same way.
    c2 = hx.connect(port)
    assert c2.closed(h.scaled(10)) == "eof"


def test_redirect_to_https(slbd, hx):
    port = add_listener(slbd, "redir", None, redirect_to="https://secure.example.test")
    c = hx.connect(port)
    r = c.request("GET", "/some/path?q=1&r=2")
    assert r.status == 301, r
    assert r.header("Location") == "https://secure.example.test/some/path?q=1&r=2", r
    r = c.request("HEAD", "/x")
    assert r.status == 301 and r.header("Location") == "https://secure.example.test/x", r
    port2 = add_listener(slbd, "redir2", None, redirect_to="https://secure.example.test:8443")
    r = hx.get(port2, "/p")
    assert r.header("Location") == "https://secure.example.test:8443/p", r


# --------------------------------------------------------------------------------------------
# Sticky sessions
# --------------------------------------------------------------------------------------------

STICKY_COOKIE = re.compile(r"^SRVID=([0-9a-f]{16}); Path=/; Max-Age=600; HttpOnly$")


def test_sticky_insert(slbd, hx):
    port, _ = web(slbd, hx, n=3, sticky={"type": "insert", "cookie": "SRVID", "timeout_s": 600})
    owners = {}
    for i in range(6):
        r = hx.get(port, f"/s/{i}")
        assert r.status == 200, r
        cookies = r.all("Set-Cookie")
        assert len(cookies) == 1, r
        m = STICKY_COOKIE.match(cookies[0])
        assert m, cookies
        owners.setdefault(m.group(1), set()).add(r.json()["server"])
    # Each cookie value names one server, and every server has its own value.
    assert all(len(v) == 1 for v in owners.values()), owners
    assert len(owners) == 3, owners
    for value, (server,) in owners.items():
        c = hx.connect(port)
        for j in range(6):
            r = c.request("GET", f"/again/{j}", [("Cookie", f"a=b; SRVID={value}; c=d")])
            assert r.json()["server"] == server, (value, server, r)
            # The backend still gets the cookie header as sent.
            assert "SRVID=" + value in r.json()["headers"]["cookie"]
    # An unknown value is replaced by a valid one.
    r = hx.get(port, "/bogus", [("Cookie", "SRVID=0123456789abcdef")])
    assert r.status == 200 and STICKY_COOKIE.match(r.header("Set-Cookie")), r


def test_sticky_server_cookie(slbd, hx):
    rbs = [hx.raw_backend(n, cookie_setter(n)) for n in ("p", "q")]
    slbd.add_group("g", [b.server() for b in rbs], health_check=NOHC)
    port = add_listener(slbd, "web", "g", sticky={"type": "server", "cookie": "JSESSIONID"})
    seen = {}
    for i in range(4):
        r = hx.get(port, f"/{i}")
        assert r.status == 200, r
        name = r.body.decode().split("|")[0]
        cookies = r.all("Set-Cookie")
        m = [re.match(r"^JSESSIONID=([0-9a-f]{16})~sess-(\w); Path=/; Secure$", c)
             for c in cookies]
        m = [x for x in m if x]
        assert len(m) == 1 and m[0].group(2) == name, cookies
        assert "other=1" in cookies, cookies
        seen[name] = m[0].group(1)
    assert set(seen) == {"p", "q"} and seen["p"] != seen["q"], seen
    for name, prefix in seen.items():
        for _ in range(4):
            r = hx.get(port, "/again", [("Cookie", f"JSESSIONID={prefix}~sess-{name}; x=y")])
            got, cookie = r.body.decode().split("|")
            assert got == name, r
            # The backend sees its own value, without slbd's prefix.
            assert cookie == f"JSESSIONID=sess-{name}; x=y", cookie


# --------------------------------------------------------------------------------------------
# Access control
# --------------------------------------------------------------------------------------------


def _refused(hx, port, source):
    """True when a connection from source is reset before any response."""
    try:
        c = hx.connect(port, source=source)
        c.send(build_request("GET", "/acl"))
    except (ConnectionResetError, BrokenPipeError, ConnectionRefusedError):
        return True
    r = response_or_end(c)
    if r in ("eof", "reset"):
        return True
    assert r.status == 200, r
    return False


def test_acl_deny(slbd, hx):
    port, _ = web(slbd, hx, acl={"mode": "deny", "cidrs": ["127.0.0.2/32", "10.0.0.0/8"]})
    assert _refused(hx, port, "127.0.0.2")
    assert not _refused(hx, port, "127.0.0.1")
    st = h.wait_until(lambda: (s := [x for x in slbd.stats()["listeners"]
                                     if x["name"] == "web"]) and s[0]["denied"] >= 1 and s[0],
                      5, "the denied counter")
    assert st["denied"] == 1, st


def test_acl_allow(slbd, hx):
    port, _ = web(slbd, hx, acl={"mode": "allow", "cidrs": ["127.0.0.2"]})
    assert _refused(hx, port, "127.0.0.1")
    assert not _refused(hx, port, "127.0.0.2")
    # The backend sees the real client address in X-Real-IP.
    c = hx.connect(port, source="127.0.0.2")
    assert c.request("GET", "/who").json()["headers"]["x-real-ip"] == "127.0.0.2"


def test_acl_ipv4_mapped_entries(slbd, hx):
    # ::ffff:a.b.c.d entries name IPv4 clients, also on an IPv4 listener.
    port, _ = web(slbd, hx, acl={"mode": "deny",
                                 "cidrs": ["::ffff:127.0.0.2", "::ffff:127.0.3.0/120"]})
    assert _refused(hx, port, "127.0.0.2")
    assert _refused(hx, port, "127.0.3.9")
    assert not _refused(hx, port, "127.0.0.1")


# --------------------------------------------------------------------------------------------
# Response trailers
# --------------------------------------------------------------------------------------------

BANNED_TRAILERS = (b"Content-Length: 50\r\nHOST: evil.test\r\nTransfer-Encoding: chunked\r\n"
                   b"Connection: close\r\nTE: trailers\r\nTrailer: X-Ok\r\n")


def _trailing(conn, backend):
    """A chunked text body whose trailer section mixes allowed and banned fields, a banned
    name split across two sends."""
    while conn.read_head():
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"t" * 1024 +
                     b"\r\n0\r\nX-Ok: 1\r\n" + BANNED_TRAILERS + b"Content-Le")
        time.sleep(0.2)
        conn.sendall(b"ngth: 7\r\nX-Also: 2\r\n\r\n")


@pytest.mark.parametrize("gzip", [False, True], ids=["rechunked", "gzip"])
def test_banned_response_trailers_are_dropped(slbd, hx, gzip):
    # Fields that frame or route a message have no place in a trailer section (RFC 9110
    # 6.5.1): an HTTP/1.1 client gets the others only, as an HTTP/2 client does.
    rb = hx.raw_backend("trailing", _trailing)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g", gzip=gzip)
    s = hx.socket(port)
    s.sendall(build_request("GET", "/t", [("Accept-Encoding", "gzip"), ("Connection", "close")]))
    raw = h.read_to_eof(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert (b"content-encoding: gzip" in head.lower()) == gzip, head
    assert body.endswith(b"\r\n0\r\nX-Ok: 1\r\nX-Also: 2\r\n\r\n"), body[-200:]


# --------------------------------------------------------------------------------------------
# Upgrade (WebSocket-style tunnels)
# --------------------------------------------------------------------------------------------


def _upgrader(conn, backend):
    head = conn.read_head()
    if not head:
        return
    backend.heads.append(head)
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nX-From: backend\r\n\r\n")
    if conn.buf:
        conn.sendall(bytes(conn.buf))
    while True:
        data = conn.recv_some()
        if not data:
            return
        conn.sendall(data)


def test_websocket_upgrade_tunnelled(slbd, hx):
    rb = hx.raw_backend("ws", _upgrader)
    rb.heads = []
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g", request_timeout_s=2)
    c = hx.connect(port)
    r = c.request("GET", "/chat", [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                   ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                   ("Sec-WebSocket-Version", "13")])
    assert r.status == 101, r
    assert (r.header("Upgrade") or "").lower() == "websocket", r
    assert "upgrade" in (r.header("Connection") or "").lower(), r
    head = rb.heads[0]
    assert header_value(head, "Upgrade") == "websocket", head
    assert "upgrade" in (header_value(head, "Connection") or "").lower(), head
    assert header_value(head, "Sec-WebSocket-Key") == "dGhlIHNhbXBsZSBub25jZQ==", head
    # Bytes flow both ways, also after request_timeout_s as long as they keep moving.
    end = time.monotonic() + 3
    n = 0
    while time.monotonic() < end or n < 3:
        msg = os.urandom(1000) + b"frame %d" % n
        c.send(msg)
        assert c.read_exact(len(msg)) == msg
        n += 1
        time.sleep(0.3)
    big = os.urandom(300_000)
    errors = []
    t = _send_in_thread(c, big, errors)
    assert c.read_exact(len(big), timeout=10) == big
    t.join(h.scaled(10))
    assert not errors
    # Client half-close ends the tunnel cleanly.
    c.sock.shutdown(socket.SHUT_WR)
    assert c.closed(h.scaled(10)) == "eof"


def test_upgrade_refused_by_backend_is_a_normal_response(slbd, hx):
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    r = c.request("GET", "/noupgrade", [("Connection", "Upgrade"), ("Upgrade", "websocket")])
    assert r.status == 200, r
    # The backend was asked to upgrade, said no, and the connection carries on as HTTP.
    assert r.json()["headers"].get("upgrade") == "websocket"
    assert c.request("GET", "/next").json()["path"] == "/next"


def test_request_pipelined_behind_an_upgrade_request(slbd, hx):
    """Bytes sent right behind an upgrade request are the new protocol's only once the backend
    said 101: refused, they are the next HTTP request (rewritten and answered in order);
    accepted, they go into the tunnel exactly as sent, never rewritten as a request."""
    upgrade = build_request("GET", "/up", [("Connection", "Upgrade"), ("Upgrade", "websocket")])
    second = b"GET /second HTTP/1.1\r\nHost: example.test\r\n\r\n"
    port, _ = web(slbd, hx)
    c = hx.connect(port)
    c.send(upgrade + second)
    r1, r2 = c.read_response(), c.read_response()
    assert r1.status == 200 and r1.json()["path"] == "/up", r1
    assert r2.status == 200 and r2.json()["path"] == "/second", r2
    assert r2.json()["headers"]["x-forwarded-for"] == "127.0.0.1", r2

    rb = hx.raw_backend("ws", _upgrader)
    rb.heads = []
    slbd.put_group("g", [rb.server()], health_check=NOHC)
    c = hx.connect(port)
    c.send(upgrade + second)
    r = c.read_response()
    assert r.status == 101, r
    assert c.read_exact(len(second)) == second
    assert len(rb.heads) == 1 and b"GET /up " in rb.heads[0], rb.heads


# --------------------------------------------------------------------------------------------
# Configuration changes and limits
# --------------------------------------------------------------------------------------------


def test_reload_keeps_keep_alive_connections(slbd, hx):
    port, bs = web(slbd, hx, n=1)
    c = hx.connect(port)
    assert c.request("GET", "/before").status == 200
    # An API change of the group and of the listener, then a SIGHUP re-read of config.json.
    extra = hx.backend("extra")
    slbd.put_group("g", [bs[0].server(), extra.server()], health_check=NOHC)
    body = get_listener(slbd, "web")
    body["idle_timeout_s"] = 30
    put_listener(slbd, "web", body)
    assert c.request("GET", "/after-api").status == 200
    gen = slbd.api.get("/healthz")[1]["generation"]
    slbd.signal(signal.SIGHUP)
    h.wait_until(lambda: slbd.api.get("/healthz")[1]["generation"] > gen, 10,
                 "the SIGHUP reload")
    for i in range(3):
        assert c.request("GET", f"/after-hup/{i}").status == 200
    # New connections see the new group.
    servers = {hx.get(port, f"/new/{i}").json()["server"] for i in range(8)}
    assert servers == {"a", "extra"}, servers


def test_max_connections(slbd, hx):
    port, _ = web(slbd, hx, max_connections=2)
    held = [hx.connect(port), hx.connect(port)]
    for c in held:
        assert c.request("GET", "/held").status == 200
    third = hx.connect(port)
    try:
        third.send(build_request("GET", "/third"))
        got = response_or_end(third)
    except (ConnectionResetError, BrokenPipeError):
        got = "reset"
    assert got in ("eof", "reset"), got
    st = [x for x in slbd.stats()["listeners"] if x["name"] == "web"][0]
    assert st["refused"] >= 1, st
    held[0].close()

    def fourth_served():
        c = hx.connect(port)
        try:
            c.send(build_request("GET", "/fourth"))
            r = response_or_end(c)
            return r not in ("eof", "reset") and r.status == 200
        except (ConnectionResetError, BrokenPipeError):
            return False
        finally:
            c.close()
    h.wait_until(fourth_served, 10, "a connection slot to free up", interval=0.2)
    assert held[1].request("GET", "/still").status == 200


def test_sigterm_finishes_in_flight_and_closes_idle(slbd, hx):
    st, js = slbd.api.post("/v1/apply", {"settings": {"drain_timeout_s": 120}})
    assert st == 200, js
    port, _ = web(slbd, hx, idle_timeout_s=300)
    idle = hx.connect(port)
    assert idle.request("GET", "/idle").status == 200
    busy = hx.connect(port)
    busy.send(build_request("GET", "/slow/1500"))
    time.sleep(0.3 * h.slow_factor())  # let the slow request reach the backend
    slbd.signal(signal.SIGTERM)
    r = busy.read_response(timeout=15)
    assert r.status == 200, r
    assert (r.header("Connection") or "").lower() == "close", r
    # An idle keep-alive connection has nothing in flight: it is closed, not waited for until
    # drain_timeout_s (120 s here) or idle_timeout_s (300 s), and slbd exits long before that.
    assert idle.closed(h.scaled(10)) in ("eof", "reset"), "idle connection kept open"
    assert slbd.stop(timeout=10) == 0
