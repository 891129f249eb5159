# SPDX-License-Identifier: Apache-2.0
"""HTTP/1.1 conformance of the http listener on raw sockets: a table of malformed, ambiguous
and edge-case requests, each with the exact status slbd must answer and, through a recording
backend, proof that nothing of a rejected request reached the backend; then malformed backend
responses, which must become a 502 (or a cut connection) and never a reused connection."""

import re
import socket
import threading
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import (ConnectionEnded, add_listener, build_request, hx,  # noqa: F401
                       response_or_end)
from pki import pki, tls_block, upload_server  # noqa: F401

NOHC = h.no_health_check()
R = "\r\n"


def req(line="GET / HTTP/1.1", *headers, body="", host="Host: example.test"):
    """Raw request text → bytes: a start line, header lines as given (Host first unless None)
    and an optional body. Nothing is normalised: every byte is what the test wants on the
    wire."""
    hs = ([host] if host else []) + list(headers)
    text = line + R + "".join(x + R for x in hs) + R + body
    return text.encode("latin-1")


# (id, raw request, status). Each is sent on its own connection; the backend must get nothing.
REJECTED = [
    # --- message framing: Content-Length and Transfer-Encoding (smuggling vectors) ---
    ("cl-and-te", req("POST / HTTP/1.1", "Content-Length: 5", "Transfer-Encoding: chunked",
                      body="0\r\n\r\n"), 400),
    ("te-and-cl", req("POST / HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 5",
                      body="0\r\n\r\n"), 400),
    ("cl-duplicate-equal", req("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 5",
                               body="hello"), 400),
    ("cl-conflicting", req("POST / HTTP/1.1", "Content-Length: 5", "Content-Length: 6",
                           body="hello!"), 400),
    ("cl-list", req("POST / HTTP/1.1", "Content-Length: 5, 5", body="hello"), 400),
    ("cl-plus-sign", req("POST / HTTP/1.1", "Content-Length: +5", body="hello"), 400),
    ("cl-negative", req("POST / HTTP/1.1", "Content-Length: -5", body="hello"), 400),
    ("cl-inner-space", req("POST / HTTP/1.1", "Content-Length: 5 5", body="hello"), 400),
    ("cl-hex", req("POST / HTTP/1.1", "Content-Length: 0x5", body="hello"), 400),
    ("cl-empty", req("POST / HTTP/1.1", "Content-Length: ", body="hello"), 400),
    ("cl-overflow", req("POST / HTTP/1.1", "Content-Length: 184467440737095516160",
                        body="hello"), 400),
    ("te-gzip-chunked", req("POST / HTTP/1.1", "Transfer-Encoding: gzip, chunked",
                            body="0\r\n\r\n"), 501),
    ("te-split-gzip-chunked", req("POST / HTTP/1.1", "Transfer-Encoding: gzip",
                                  "Transfer-Encoding: chunked", body="0\r\n\r\n"), 501),
    ("te-chunked-gzip", req("POST / HTTP/1.1", "Transfer-Encoding: chunked, gzip",
                            body="0\r\n\r\n"), 400),
    ("te-gzip-only", req("POST / HTTP/1.1", "Transfer-Encoding: gzip", body="x"), 400),
    ("te-identity", req("POST / HTTP/1.1", "Transfer-Encoding: identity", body="x"), 400),
    ("te-chunked-twice", req("POST / HTTP/1.1", "Transfer-Encoding: chunked, chunked",
                             body="0\r\n\r\n"), 400),
    ("te-chunked-param", req("POST / HTTP/1.1", "Transfer-Encoding: chunked;q=1",
                             body="0\r\n\r\n"), 400),
    ("te-quoted", req("POST / HTTP/1.1", 'Transfer-Encoding: "chunked"', body="0\r\n\r\n"),
     400),
    ("te-xchunked", req("POST / HTTP/1.1", "Transfer-Encoding: xchunked", body="0\r\n\r\n"),
     400),
    ("te-empty", req("POST / HTTP/1.1", "Transfer-Encoding: ", body="0\r\n\r\n"), 400),
    ("te-in-http10", req("POST / HTTP/1.0", "Transfer-Encoding: chunked", body="0\r\n\r\n"),
     400),
    # --- header syntax ---
    ("space-before-colon", req("GET / HTTP/1.1", "X-Test : y"), 400),
    ("tab-before-colon", req("GET / HTTP/1.1", "X-Test\t: y"), 400),
    ("obs-fold", req("GET / HTTP/1.1", "X-Test: a", " b"), 400),
    ("obs-fold-tab", req("GET / HTTP/1.1", "X-Test: a", "\tb"), 400),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: example.test\r\n\r\n", 400),
    ("bare-lf-header", b"GET / HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n", 400),
    ("bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: example.test\r\n\n", 400),
    ("bare-cr-in-value", req("GET / HTTP/1.1", "X-Test: a\rb"), 400),
    ("nul-in-value", req("GET / HTTP/1.1", "X-Test: a\x00b"), 400),
    ("ctl-in-value", req("GET / HTTP/1.1", "X-Test: a\x01b"), 400),
    ("del-in-value", req("GET / HTTP/1.1", "X-Test: a\x7fb"), 400),
    ("empty-name", req("GET / HTTP/1.1", ": value"), 400),
    ("non-token-name", req("GET / HTTP/1.1", "X(y): z"), 400),
    ("space-in-name", req("GET / HTTP/1.1", "X Y: z"), 400),
    ("non-ascii-name", req("GET / HTTP/1.1", "X\xe9: z"), 400),
    ("no-colon", req("GET / HTTP/1.1", "X-Test"), 400),
    ("connection-non-token", req("GET / HTTP/1.1", "Connection: close, a b"), 400),
    # --- request line ---
    ("double-space", req("GET  / HTTP/1.1"), 400),
    ("trailing-space", req("GET / HTTP/1.1 "), 400),
    ("missing-target", req("GET HTTP/1.1"), 400),
    ("tab-separator", req("GET\t/ HTTP/1.1"), 400),
    ("method-non-token", req("G(T / HTTP/1.1"), 400),
    ("lowercase-http", req("GET / http/1.1"), 400),
    ("no-version", b"GET /\r\n\r\n", 400),
    ("version-garbage", req("GET / HTTP/1.x"), 400),
    ("http-2.0", req("GET / HTTP/2.0"), 505),
    ("http-1.2", req("GET / HTTP/1.2"), 505),
    ("http-0.9-version", req("GET / HTTP/0.9"), 505),
    ("fragment-in-target", req("GET /a#b HTTP/1.1"), 400),
    ("relative-target", req("GET foo HTTP/1.1"), 400),
    ("asterisk-with-get", req("GET * HTTP/1.1"), 400),
    ("nul-in-target", req("GET /a\x00b HTTP/1.1"), 400),
    ("high-byte-in-target", req("GET /caf\xe9 HTTP/1.1"), 400),
    ("absolute-form-bad-scheme", req("GET ftp://example.test/ HTTP/1.1"), 400),
    ("absolute-form-userinfo", req("GET http://user@example.test/ HTTP/1.1"), 400),
    ("too-many-leading-crlf", b"\r\n" * 5 + req("GET / HTTP/1.1"), 400),
    ("request-line-over-8k", req("GET /" + "a" * 9000 + " HTTP/1.1"), 414),
    ("head-over-16k", req("GET / HTTP/1.1", *[f"X-Big-{i}: " + "v" * 6000 for i in range(3)]),
     431),
    ("over-100-headers", req("GET / HTTP/1.1", *[f"X-H{i}: {i}" for i in range(101)]), 431),
    # --- Host ---
    ("missing-host-http11", req("GET / HTTP/1.1", host=None), 400),
    ("two-hosts", req("GET / HTTP/1.1", "Host: other.test"), 400),
    ("host-with-space", req("GET / HTTP/1.1", host="Host: a b"), 400),
    ("host-with-userinfo", req("GET / HTTP/1.1", host="Host: user@example.test"), 400),
    ("host-with-comma", req("GET / HTTP/1.1", host="Host: a.test,b.test"), 400),
    ("host-bad-port", req("GET / HTTP/1.1", host="Host: example.test:99999"), 400),
    # --- semantics ---
    ("expect-unknown", req("GET / HTTP/1.1", "Expect: foo"), 417),
    ("expect-unknown-with-body", req("POST / HTTP/1.1", "Expect: bar", "Content-Length: 5",
                                     body="hello"), 417),
]


@pytest.fixture
def rec(slbd, hx):
    """A recording echo backend behind an http listener: (port, backend)."""
    b = hx.backend("rec", record=True)
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    return port, b


def _send_and_read(hx, port, raw):
    c = hx.connect(port)
    c.send(raw)
    r = response_or_end(c)
    assert r not in ("eof", "reset"), f"connection ended ({r}) without a response"
    return c, r


def _sanity(hx, port, b):
    """A valid request reaches the backend afterwards, so the recording works and slbd still
    serves; returns the bytes the backend recorded before it."""
    before = b.recorded()
    r = hx.get(port, "/sanity")
    assert r.status == 200, r
    after = b.recorded()
    assert after.startswith(before) and b"GET /sanity HTTP/1.1\r\n" in after[len(before):]
    return before


@pytest.mark.parametrize("raw,status", [(c[1], c[2]) for c in REJECTED],
                         ids=[c[0] for c in REJECTED])
def test_rejected_request(rec, hx, raw, status):
    port, b = rec
    c, r = _send_and_read(hx, port, raw)
    assert r.status == status, r
    # A rejected request is the end of the connection: the parser lost its place.
    assert (r.header("Connection") or "").lower() == "close", r
    assert c.closed(h.scaled(5)) in ("eof", "reset")
    assert b.recorded() == b"", b.recorded()[:500]
    assert _sanity(hx, port, b) == b""


def test_at_least_forty_rejection_cases():
    assert len(REJECTED) >= 40


# Requests slbd must accept (edge cases of the grammar) and what the backend then sees.
ACCEPTED = [
    ("options-asterisk", req("OPTIONS * HTTP/1.1"), "OPTIONS", "*"),
    ("absolute-form", req("GET http://example.test/abs?x=1 HTTP/1.1"), "GET", None),
    # RFC 9112 3.2.4: no path in an absolute-form OPTIONS is the asterisk-form to the origin.
    ("absolute-form-options-no-path", req("OPTIONS http://example.test HTTP/1.1"), "OPTIONS",
     "*"),
    ("absolute-form-options-slash", req("OPTIONS http://example.test/ HTTP/1.1"), "OPTIONS",
     "/"),
    ("leading-crlf", b"\r\n\r\n" + req("GET /lead HTTP/1.1"), "GET", "/lead"),
    ("http10-without-host", req("GET /old HTTP/1.0", host=None), "GET", "/old"),
    ("empty-host", req("GET /e HTTP/1.1", host="Host:"), "GET", "/e"),
    ("ows-around-value", req("GET /ows HTTP/1.1", "X-Pad: \t  v  \t"), "GET", "/ows"),
    ("unknown-method", req("PURGE /p HTTP/1.1"), "PURGE", "/p"),
    ("cl-zero", req("POST /z HTTP/1.1", "Content-Length: 0"), "POST", "/z"),
    ("chunk-extension", req("POST /ext HTTP/1.1", "Transfer-Encoding: chunked",
                            body='5;name=value;q="a b"\r\nhello\r\n0\r\n\r\n'), "POST", "/ext"),
    ("chunk-trailer", req("POST /tr HTTP/1.1", "Transfer-Encoding: chunked",
                          body="5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"), "POST", "/tr"),
    ("chunk-size-uppercase-hex", req("POST /hex HTTP/1.1", "Transfer-Encoding: chunked",
                                     body="A\r\n0123456789\r\n0\r\n\r\n"), "POST", "/hex"),
    ("expect-100-continue-http10", req("POST /c HTTP/1.0", "Expect: 100-continue",
                                       "Content-Length: 2", body="ok", host=None), "POST",
     "/c"),
]


@pytest.mark.parametrize("raw,method,path", [(c[1], c[2], c[3]) for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_accepted_edge_case(rec, hx, raw, method, path):
    port, b = rec
    c, r = _send_and_read(hx, port, raw)
    assert r.status == 200, r
    js = r.json()
    assert js["method"] == method, js
    if path is not None:
        assert js["path"] == path, js
    got = b.recorded()
    assert got.count(b" HTTP/1.1\r\n") == 1, got  # exactly one request, always sent as 1.1
    if b"X-Pad" in raw:
        assert js["headers"]["x-pad"] == "v", js
    if b"hello" in raw:
        assert js["body_bytes"] == 5, js


def test_absolute_form_host_comes_from_the_target(rec, hx):
    """RFC 9112 3.2.2: with an absolute-form target the Host field is replaced by the target's
    authority, so slbd and the backend cannot disagree on which site is asked for."""
    port, b = rec
    c, r = _send_and_read(hx, port, req("GET http://example.test/abs HTTP/1.1",
                                        host="Host: other.test"))
    assert r.status in (200, 400), r
    if r.status == 200:
        js = r.json()
        assert js["headers"]["host"] == "example.test", js
        assert js["path"] in ("/abs", "http://example.test/abs"), js


def test_absolute_form_options_is_sent_as_asterisk(rec, hx):
    port, b = rec
    c, r = _send_and_read(hx, port, req("OPTIONS http://example.test:81 HTTP/1.1"))
    assert r.status == 200, r
    got = b.recorded()
    assert got.startswith(b"OPTIONS * HTTP/1.1\r\nHost: example.test:81\r\n"), got


def test_connect_is_not_proxied(rec, hx):
    """A load balancer is not a forward proxy: CONNECT is refused rather than relayed to the
    backend (whose 2xx would make the client believe a tunnel is open)."""
    port, b = rec
    c = hx.connect(port)
    c.send(req("CONNECT example.test:443 HTTP/1.1", host="Host: example.test:443"))
    # Only the head: a relayed 2xx to CONNECT has a Content-Length but no body.
    status, _, _, raw = c.read_head(time.monotonic() + h.scaled(10))
    assert status in (400, 405, 501), raw
    assert b.recorded() == b"", b.recorded()


# Chunked bodies whose framing breaks after the head: the head may already have gone to the
# backend (bodies are streamed), but no byte past the error may, so nothing is smuggled.
SMUGGLE = "GET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
BAD_CHUNKS = [
    ("size-not-hex", "zz\r\nhello\r\n0\r\n\r\n"),
    ("size-trailing-space", "5 \r\nhello\r\n0\r\n\r\n"),
    ("size-leading-space", " 5\r\nhello\r\n0\r\n\r\n"),
    ("size-17-digits", "00000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("size-above-2^31", "80000000\r\nhello\r\n0\r\n\r\n"),
    ("size-2^32-plus-5", "100000005\r\nhello\r\n0\r\n\r\n"),
    ("size-negative", "-5\r\nhello\r\n0\r\n\r\n"),
    ("size-empty", "\r\nhello\r\n0\r\n\r\n"),
    ("ext-bws", "5 ;a=b\r\nhello\r\n0\r\n\r\n"),
    ("ext-empty", "5;\r\nhello\r\n0\r\n\r\n"),
    ("ext-unterminated-quote", '5;a="b\r\nhello\r\n0\r\n\r\n'),
    ("data-longer-than-size", "5\r\nhelloXX\r\n0\r\n\r\n"),
    ("bare-lf-after-size", "5\nhello\r\n0\r\n\r\n"),
    ("bare-lf-after-data", "5\r\nhello\n0\r\n\r\n"),
    ("trailer-obs-fold", "5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
    ("last-chunk-missing-crlf", "5\r\nhello\r\n0\r\nGET"),
    # Fields that frame or route a message have no place in a trailer section (RFC 9110
    # 6.5.1): a backend merging trailers into the head would see a second framing or Host.
    ("trailer-content-length", "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
    ("trailer-transfer-encoding", "5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n"),
    ("trailer-host", "5\r\nhello\r\n0\r\nX-Ok: 1\r\nHOST: evil.test\r\n\r\n"),
    ("trailer-connection", "5\r\nhello\r\n0\r\nConnection: close\r\n\r\n"),
    ("trailer-te", "5\r\nhello\r\n0\r\nTE: trailers\r\n\r\n"),
]


@pytest.mark.parametrize("body", [c[1] for c in BAD_CHUNKS], ids=[c[0] for c in BAD_CHUNKS])
def test_bad_chunked_request_body(rec, hx, body):
    port, b = rec
    raw = req("POST /chunky HTTP/1.1", "Transfer-Encoding: chunked", body=body + SMUGGLE)
    c, r = _send_and_read(hx, port, raw)
    assert r.status == 400, r
    assert c.closed(h.scaled(5)) in ("eof", "reset")
    got = _sanity(hx, port, b)
    assert b"/smuggled" not in got, got
    # Whatever went out is the head and at most the valid part of the body.
    assert b"POST /chunky" in got or got == b"", got
    assert b'"path":"/smuggled"' not in r.body


# Upgrade is a list (RFC 9110 7.8): h2c anywhere in it, in any case, with or without a
# version, in one field or another, and the backend could pick it.
H2C_UPGRADES = [["h2c"], ["H2C"], ["websocket, h2c"], ["h2c/2, websocket"],
                ["websocket", "h2c"]]


@pytest.mark.parametrize("upgrades", H2C_UPGRADES, ids=["-".join(u) for u in H2C_UPGRADES])
def test_h2c_upgrade_not_forwarded_over_tls(slbd, hx, pki, upgrades):
    """h2c is cleartext HTTP/2: over TLS it must never reach the backend as an upgrade."""
    import ssl
    b = hx.backend("rec", record=True)
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = add_listener(slbd, "tls", "g", protocol="https", tls=tls_block([cid]))
    ctx = ssl.create_default_context(cafile=pki.root)
    c = hx.tls_connect(port, ctx, server_hostname="localhost")
    r = c.request("GET", "/h2c", [("Connection", "Upgrade, HTTP2-Settings")] +
                  [("Upgrade", u) for u in upgrades] +
                  [("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
    assert r.status == 200, r
    hd = r.json()["headers"]
    assert "upgrade" not in hd and "http2-settings" not in hd, hd
    assert "upgrade" not in (hd.get("connection") or "").lower(), hd
    assert c.request("GET", "/next").json()["path"] == "/next"


# --------------------------------------------------------------------------------------------
# Malformed responses from the backend
# --------------------------------------------------------------------------------------------

GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"

# (id, bytes the backend answers, what the client sees: a status or "cut" when the head was
# already relayed and slbd can only end the connection)
BAD_RESPONSES = [
    ("status-4-digits", b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", 502),
    ("status-letters", b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", 502),
    ("no-http-version", b"FOO 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    ("http-2.0-status-line", b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    ("status-below-100", b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n", 502),
    ("cl-and-te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0\r\n\r\n", 502),
    ("cl-conflicting", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"
                       b"hello", 502),
    ("cl-negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 502),
    ("te-in-http10", b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", 502),
    ("nul-in-header", b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n", 502),
    ("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 502),
    ("head-too-large", b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 4000)
                                                          for i in range(6)) +
     b"Content-Length: 0\r\n\r\n", 502),
    ("binary-garbage", bytes(range(256)) * 4, 502),
    ("101-without-upgrade-request", b"HTTP/1.1 101 Switching Protocols\r\n"
                                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 502),
    ("bad-chunk-size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n"
                       b"0\r\n\r\n", "cut"),
    ("chunk-size-above-2^31", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"80000000\r\nhi\r\n0\r\n\r\n", "cut"),
    ("chunk-data-overrun", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello"
                           b"\r\n0\r\n\r\n", "cut"),
    ("bad-chunk-later", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
                        b"<PAUSE>zz\r\nhi\r\n0\r\n\r\n", "cut"),
    ("close-mid-body", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-ten!!", "cut"),
    ("close-mid-chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"64\r\nonly-ten!!", "cut"),
]


class BadBackend:
    """Answers /bad with the given bytes and then closes its sending side; answers /good
    properly and keeps the connection. Records per connection whether slbd closed it."""

    def __init__(self, hx, answer):
        self.answer = answer
        self.lock = threading.Lock()
        self.bad_conns_closed_by_peer = []
        self.raw = hx.raw_backend("bad", self.handle)

    def handle(self, conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            if head.startswith(b"GET /good"):
                conn.sendall(GOOD)
                continue
            for i, part in enumerate(self.answer.split(b"<PAUSE>")):
                if i:
                    time.sleep(0.3)  # the part before went out to the client on its own
                conn.sendall(part)
            if self.answer.startswith(b"HTTP/1.1 200 OK\r\nContent-Length: 100") or \
                    b"only-ten" in self.answer:
                return  # close mid-body
            # Wait for slbd to give up on this connection: it must not be reused.
            deadline = time.monotonic() + h.scaled(10)
            closed = False
            while time.monotonic() < deadline:
                conn.sock.settimeout(0.2)
                try:
                    chunk = conn.recv_some()
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
            with self.lock:
                self.bad_conns_closed_by_peer.append(closed)
            return


@pytest.mark.slbd(workers=1)
@pytest.mark.parametrize("answer,expect", [(c[1], c[2]) for c in BAD_RESPONSES],
                         ids=[c[0] for c in BAD_RESPONSES])
def test_bad_backend_response(slbd, hx, answer, expect):
    bb = BadBackend(hx, answer)
    slbd.add_group("g", [bb.raw.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    # Warm a kept-alive backend connection first, so "discarded" is observable.
    assert hx.get(port, "/good").body == b"good"
    c = hx.connect(port)
    c.send(build_request("GET", "/bad"))
    if expect == "cut":
        # Either slbd relayed the head and then can only cut the connection, or it found the
        # error before the head left and answers 502. Silence is not an answer.
        try:
            status, _, _, raw = c.read_head(time.monotonic() + h.scaled(10))
        except ConnectionEnded as e:
            pytest.fail(f"the connection ended ({e.how}) without any response: {e.partial!r}")
        if status == 200:
            assert c.closed(h.scaled(10)) in ("eof", "reset")
        else:
            assert status == 502, raw
    else:
        r = response_or_end(c)
        assert r not in ("eof", "reset"), "no 502 before the connection ended"
        assert r.status == expect, r
        # No bytes of the bad answer leak to the client.
        assert b"Switching" not in r.raw_head and b"abc" not in r.raw_head, r
    if not (b"only-ten" in answer):
        h.wait_until(lambda: bb.bad_conns_closed_by_peer, 15, "the bad connection to end")
        assert bb.bad_conns_closed_by_peer == [True], "slbd kept the broken backend connection"
    # The next request is served on a fresh backend connection.
    accepted = bb.raw.accepted
    r = hx.get(port, "/good")
    assert r.status == 200 and r.body == b"good", r
    assert bb.raw.accepted == accepted + 1, "a broken backend connection was reused"


# --------------------------------------------------------------------------------------------
# HTTP/1.0 clients: no interim responses, no Transfer-Encoding, no upgrade
# --------------------------------------------------------------------------------------------


class Answering:
    """A raw backend that answers every request with fixed bytes (parts split at <PAUSE> go
    out 0.3 s apart, so each reaches slbd on its own) and then closes; records each head."""

    def __init__(self, hx, answer):
        self.answer = answer
        self.heads = []
        self.raw = hx.raw_backend("answering", self.handle)

    def handle(self, conn, backend):
        head = conn.read_head()
        if not head:
            return
        self.heads.append(head)
        if b"Content-Length: " in head:  # read the request body before answering
            n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            while len(conn.buf) < n:
                chunk = conn.recv_some()
                if not chunk:
                    return
                conn.buf += chunk
        for i, part in enumerate(self.answer.split(b"<PAUSE>")):
            if i:
                time.sleep(0.3)
            conn.sendall(part)


def answering_site(slbd, hx, answer):
    ab = Answering(hx, answer)
    slbd.add_group("g", [ab.raw.server()], health_check=NOHC)
    return add_listener(slbd, "web", "g"), ab


def exchange_to_eof(hx, port, raw):
    """Send raw on a fresh connection; everything slbd sends until its EOF (a reset fails)."""
    s = hx.socket(port)
    s.sendall(raw)
    return h.read_to_eof(s)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nhello"

INTERIM = [
    ("100", CONTINUE + FINAL),
    ("103", EARLY_HINTS + FINAL),
    ("100-103", CONTINUE + EARLY_HINTS + FINAL),
    ("100-apart", CONTINUE + b"<PAUSE>" + EARLY_HINTS + b"<PAUSE>" + FINAL),
]
HTTP10_REQUESTS = [
    ("get", b"GET /i HTTP/1.0\r\n\r\n"),
    ("post-expect", b"POST /i HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"),
]


@pytest.mark.parametrize("request_raw", [r[1] for r in HTTP10_REQUESTS],
                         ids=[r[0] for r in HTTP10_REQUESTS])
@pytest.mark.parametrize("answer", [a[1] for a in INTERIM], ids=[a[0] for a in INTERIM])
def test_http10_client_gets_no_interim_response(slbd, hx, answer, request_raw):
    """RFC 9110 15.2: a server must not send a 1xx response to an HTTP/1.0 client, which
    would take it for the final response. slbd drops them; the final response follows."""
    port, ab = answering_site(slbd, hx, answer)
    data = exchange_to_eof(hx, port, request_raw)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), data[:300]
    assert b"\r\nx-final: yes" in head.lower(), head
    assert b" 100 " not in data and b" 103 " not in data and b"Link:" not in data, data[:300]
    assert body == b"hello", data[:300]
    assert len(ab.heads) == 1, ab.heads
    # An HTTP/1.0 request's Expect is ignored, not passed on (RFC 9110 10.1.1).
    assert b"\r\nexpect:" not in ab.heads[0].lower(), ab.heads


def test_http11_client_still_gets_interim_responses(slbd, hx):
    """HTTP/1.1 clients get interim responses with their end-to-end fields (103's Link, which
    is the point of Early Hints) and without hop-by-hop ones."""
    hints = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
             b"Connection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
             b"Link: </app.js>; rel=preload; as=script\r\n\r\n")
    port, ab = answering_site(slbd, hx, CONTINUE + hints + FINAL)
    data = exchange_to_eof(hx, port, b"GET /i HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"
                           b"HTTP/1.1 103 Early Hints\r\n"
                           b"Link: </style.css>; rel=preload; as=style\r\n"
                           b"Link: </app.js>; rel=preload; as=script\r\n\r\n"
                           b"HTTP/1.1 200 OK\r\n"), data[:300]
    assert data.endswith(b"\r\n\r\nhello"), data[:300]


def test_http10_request_cannot_upgrade(slbd, hx):
    """Upgrade is HTTP/1.1 only (RFC 9110 7.8: ignored in an HTTP/1.0 request): the backend
    is not asked to switch, and a 101 it sends anyway is a 502, never a tunnel."""
    port, ab = answering_site(slbd, hx, b"HTTP/1.1 101 Switching Protocols\r\n"
                                        b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    data = exchange_to_eof(hx, port, b"GET /ws HTTP/1.0\r\nConnection: Upgrade\r\n"
                                     b"Upgrade: websocket\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 502 "), data[:300]
    assert b"Switching" not in data and b"websocket" not in data.lower(), data[:300]
    head = ab.heads[0].lower()
    assert b"\r\nupgrade:" not in head and b"connection: upgrade" not in head, ab.heads[0]


# (id, the backend's head for a 5-byte body "hello" framed by it, what an HTTP/1.0 client gets:
# 200 with the plain body, or 502 when the body carries a coding it cannot be told about)
TE_FOR_HTTP10 = [
    ("chunked", b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n", 200),
    ("chunked-mixed-case", b"Transfer-Encoding: cHuNkEd", b"5\r\nhello\r\n0\r\n\r\n", 200),
    ("chunked-empty-elements", b"Transfer-Encoding: , chunked", b"5\r\nhello\r\n0\r\n\r\n",
     200),
    ("gzip-chunked", b"Transfer-Encoding: gzip, chunked", b"5\r\nhello\r\n0\r\n\r\n", 502),
    ("gzip-then-chunked-fields", b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
     b"5\r\nhello\r\n0\r\n\r\n", 502),
    ("gzip-close-delimited", b"Transfer-Encoding: gzip", b"hello", 502),
]


@pytest.mark.parametrize("te,body,status", [(c[1], c[2], c[3]) for c in TE_FOR_HTTP10],
                         ids=[c[0] for c in TE_FOR_HTTP10])
def test_http10_client_never_gets_transfer_encoding(slbd, hx, te, body, status):
    """RFC 9112 6.1: a server must not send Transfer-Encoding to an HTTP/1.0 client. Chunked
    alone is decoded and the body ended by the close; any other transfer coding is part of the
    body bytes, which the client, not told of it, would take as they are: 502."""
    port, ab = answering_site(slbd, hx, b"HTTP/1.1 200 OK\r\n" + te + b"\r\n\r\n" + body)
    data = exchange_to_eof(hx, port, b"GET /te HTTP/1.0\r\n\r\n")
    head, _, got = data.partition(b"\r\n\r\n")
    assert int(head.split(b" ")[1]) == status, data[:300]
    assert b"transfer-encoding" not in head.lower(), head
    if status == 200:
        assert got == b"hello", data[:300]
    else:
        assert b"hello" not in got, data[:300]
    # An HTTP/1.1 client gets the response as the backend framed it.
    data = exchange_to_eof(hx, port, b"GET /te HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, got = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and got == body, data[:300]
    for line in te.split(b"\r\n"):
        assert line + b"\r\n" in head + b"\r\n", head


def test_http10_head_request_gets_no_transfer_encoding(slbd, hx):
    """A response to HEAD has no body, so a coding it names cannot hurt: the head is given
    without Transfer-Encoding rather than refused."""
    port, ab = answering_site(slbd, hx, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked"
                                        b"\r\nX-Head: yes\r\n\r\n")
    data = exchange_to_eof(hx, port, b"HEAD /te HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n"), data[:300]
    assert b"transfer-encoding" not in data.lower() and b"X-Head: yes" in data, data[:300]


# --------------------------------------------------------------------------------------------
# A body slbd did not read is never a request
# --------------------------------------------------------------------------------------------

INNER = b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("answer", ["503-empty-group", "417-expect", "301-redirect"])
def test_a_body_slbd_answers_without_reading_is_not_taken_for_a_request(slbd, hx, answer,
                                                                         framing):
    """slbd answers some requests itself without reading their body. The body's bytes must
    not be parsed as the next request (an HTTP desync): one answer, Connection: close, an
    orderly end, and nothing reaches a backend."""
    be = hx.backend("rec", record=True)
    slbd.add_group("full", [be.server()], health_check=NOHC)
    slbd.add_group("empty", [], health_check=NOHC)
    extra = b""
    if answer == "503-empty-group":
        port = add_listener(slbd, "web", "empty")
    elif answer == "417-expect":
        port = add_listener(slbd, "web", "full")
        extra = b"Expect: something-else\r\n"
    else:
        port = add_listener(slbd, "web", "full", redirect_to="https://secure.example.test")
    if framing == "content-length":
        framed = b"Content-Length: %d\r\n\r\n" % len(INNER) + INNER
    else:
        framed = (b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(INNER) + INNER +
                  b"\r\n0\r\n\r\n")
    data, how = hu.raw_exchange(port, b"POST /outer HTTP/1.1\r\nHost: x\r\n" + extra + framed)
    assert how == "eof", (how, data[:200])
    want = answer[:3].encode()
    assert data.startswith(b"HTTP/1.1 " + want), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1, f"the body was answered as a request: {data!r}"
    assert b"connection: close" in data.partition(b"\r\n\r\n")[0].lower(), data[:300]
    time.sleep(0.2)
    rec = be.record_path.read_bytes() if be.record_path.exists() else b""
    assert b"/inner" not in rec, rec[:300]


# --------------------------------------------------------------------------------------------
# Chunked bodies leave in slbd's own framing: the peer's chunk sizes, leading zeros and
# extensions never reach the next hop, so a reader there that keeps sizes in fewer bits than
# slbd cannot be made to see a different body (or a second request).
# --------------------------------------------------------------------------------------------

TRAILER = b"X-Sum: 42\r\n"


def our_chunks(body):
    """(data, trailer section, chunk sizes) of a chunked body as slbd writes it: lowercase hex
    sizes without leading zeros or extensions. Anything else fails."""
    i, data, sizes = 0, b"", []
    while True:
        m = re.match(rb"([1-9a-f][0-9a-f]*|0)\r\n", body[i:])
        assert m, f"not slbd's size line at {i}: {body[i:i + 40]!r}"
        size = int(m.group(1), 16)
        i += m.end()
        if size == 0:
            return data, body[i:], sizes
        sizes.append(size)
        data += body[i:i + size]
        assert body[i + size:i + size + 2] == b"\r\n", body[i + size:i + size + 10]
        i += size + 2


def test_chunked_request_body_is_reframed(rec, hx):
    """Extensions, leading zeros and uppercase sizes stay at slbd: the backend gets the same
    data and trailer field in chunks slbd sized, none larger than its buffer."""
    port, b = rec
    parts = [b"a" * 3, b"B" * 0x1A, b"c" * 40000, b"d"]
    body = (b"0003;name=value\r\n" + parts[0] + b"\r\n" +
            b"1A;q=\"a;b\"\r\n" + parts[1] + b"\r\n" +
            b"%X\r\n" % len(parts[2]) + parts[2] + b"\r\n" +
            b"00000001;x\r\n" + parts[3] + b"\r\n" +
            b"0;last=1\r\n" + TRAILER + b"\r\n")
    c, r = _send_and_read(hx, port, req("POST /rf HTTP/1.1", "Transfer-Encoding: chunked")
                          + body)
    assert r.status == 200, r
    assert r.json()["body_bytes"] == sum(len(p) for p in parts), r.json()
    got = b.recorded()
    head, _, sent = got.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert b";" not in sent, sent[:200]  # no extension anywhere
    data, trailer, sizes = our_chunks(sent)
    assert data == b"".join(parts)
    assert trailer == TRAILER + b"\r\n", trailer
    assert max(sizes) <= 16384, sizes


def test_tiny_chunks_are_relayed_whole(rec, hx):
    """A body of one-byte chunks (gathered into few sends towards the backend) arrives whole
    and in order."""
    port, b = rec
    data = bytes(range(256)) * 12
    body = b"".join(b"1;x\r\n" + data[i:i + 1] + b"\r\n" for i in range(len(data)))
    c, r = _send_and_read(hx, port, req("POST /tiny HTTP/1.1", "Transfer-Encoding: chunked")
                          + body + b"0\r\n\r\n")
    assert r.status == 200, r
    assert r.json()["body_bytes"] == len(data), r.json()
    sent = b.recorded().partition(b"\r\n\r\n")[2]
    got, trailer, _ = our_chunks(sent)
    assert got == data and trailer == b"\r\n"


TINY = bytes(range(256)) * 12


def _relay_chunked_response(conn, backend):
    """Answers /a with a chunked body written with extensions, leading zeros, uppercase hex
    and a trailer field, /tiny with one-byte chunks."""
    while True:
        head = conn.read_head()
        if not head:
            return
        if head.startswith(b"GET /tiny"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                         b"".join(b"1\r\n" + TINY[i:i + 1] + b"\r\n" for i in range(len(TINY)))
                         + b"0\r\n\r\n")
            continue
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0005;ext=\"v\"\r\nhello\r\n00A\r\n0123456789\r\n"
                     b"0;z\r\n" + TRAILER + b"\r\n")


def test_chunked_response_is_reframed(slbd, hx):
    rb = hx.raw_backend("chunky", _relay_chunked_response)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    s = hx.socket(port)
    s.sendall(req("GET /a HTTP/1.1", "Connection: close"))
    raw = h.read_to_eof(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower(), head
    data, trailer, _ = our_chunks(body)
    assert b";" not in body, body
    assert data == b"hello0123456789"
    assert trailer == TRAILER + b"\r\n", trailer
    s = hx.socket(port)
    s.sendall(req("GET /tiny HTTP/1.1", "Connection: close"))
    data, trailer, _ = our_chunks(h.read_to_eof(s).partition(b"\r\n\r\n")[2])
    assert data == TINY and trailer == b"\r\n"


def _bits32_backend(heads):
    """A backend that keeps chunk sizes in 32 bits (as some do): it reads 100000005 as 5. Each
    request head it reads goes to `heads`; each request gets a 200."""
    def handler(conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            heads.append(head)
            if b"chunked" in head.lower():
                while True:
                    while b"\r\n" not in conn.buf:
                        chunk = conn.recv_some()
                        if not chunk:
                            return
                        conn.buf += chunk
                    line, _, rest = bytes(conn.buf).partition(b"\r\n")
                    size = int(line.split(b";")[0], 16) & 0xFFFFFFFF
                    need = size + 2 if size else 2
                    while len(rest) < need:
                        chunk = conn.recv_some()
                        if not chunk:
                            return
                        rest += chunk
                    conn.buf = bytearray(rest[need:])
                    if size == 0:
                        break
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return handler


def test_chunk_size_a_32_bit_backend_truncates_is_refused(slbd, hx):
    """0x100000005 is 5 to a reader that keeps 32 bits: relayed as it came, the bytes after
    five of data would be a second request there. slbd refuses sizes above 2^31 - 1."""
    heads = []
    rb = hx.raw_backend("bits32", _bits32_backend(heads))
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    body = (b"100000005\r\nhello\r\n0\r\n\r\n" + SMUGGLE.encode() + b"x" * 64)
    c, r = _send_and_read(hx, port, req("POST /big HTTP/1.1", "Transfer-Encoding: chunked")
                          + body)
    assert r.status == 400, r
    assert c.closed(h.scaled(5)) in ("eof", "reset")
    r = hx.get(port, "/after")
    assert r.status == 200, r
    assert not any(b"/smuggled" in x for x in heads), heads
    assert not any(b"/smuggled" in x for x in rb.received), rb.received


def test_backend_chunk_size_above_bound_is_502(slbd, hx):
    """The same bound on a backend's chunk sizes: with the head and the size line in hand
    together, the client gets a 502 and never the backend's head."""
    def handler(conn, backend):
        if conn.read_head():
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"100000005\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n")
            time.sleep(h.scaled(2))
    rb = hx.raw_backend("big", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    c = hx.connect(port)
    c.send(req("GET /big HTTP/1.1"))
    r = response_or_end(c)
    assert r not in ("eof", "reset"), "no 502"
    assert r.status == 502, r


# Item: a backend that answers before the request body is in, then a chunked body that turns
# out invalid. The backend's response has begun: a 400 from slbd would read as more of its
# body (or as a second response); the connection ends instead, with a reset when the
# response is not all out.
EARLY_ANSWERS = [
    ("close-delimited", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n0123456789", "reset"),
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", None),
]


@pytest.mark.parametrize("action", ["bad-chunk", "half-close"])
@pytest.mark.parametrize("answer,how", [(a[1], a[2]) for a in EARLY_ANSWERS],
                         ids=[a[0] for a in EARLY_ANSWERS])
def test_request_body_ending_badly_after_an_early_response(slbd, hx, answer, how, action):
    """The request body turns invalid, or the client half-closes in the middle of it, after
    the backend's early response: no 400 follows that response, and a response the close
    would delimit ends with a reset, never an orderly close that makes it look complete."""
    def handler(conn, backend):
        if not conn.read_head():
            return
        conn.sendall(answer)
        while conn.recv_some():  # takes what comes until slbd closes
            pass
    rb = hx.raw_backend("early", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    s = hx.socket(port)
    s.sendall(req("POST /up HTTP/1.1", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n")
    got = b""
    deadline = time.monotonic() + h.scaled(10)
    while not got.endswith(b"0123456789") and time.monotonic() < deadline:
        got += s.recv(65536)
    assert got.endswith(b"0123456789"), got
    if action == "bad-chunk":
        s.sendall(b"zz\r\n" + SMUGGLE.encode())
    else:
        s.shutdown(socket.SHUT_WR)
    rest, end = hu.read_to_end(s)
    assert rest == b"", rest  # nothing after the backend's response: no 400
    assert end == how if how else end in ("eof", "reset"), end
    assert not any(b"/smuggled" in x for x in rb.received), rb.received
