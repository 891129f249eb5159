# SPDX-License-Identifier: Apache-2.0
"""HTTP/2 towards clients of https listeners, end to end with real clients (curl --http2,
h2load, python3-h2 and a frame-level client): ALPN, the translation to HTTP/1.1 towards the
backend (request line, Host from :authority, joined cookies, forwarding and client-certificate
headers), refused connection-specific fields, bodies both ways with flow control, responses
without content, many streams at once, backend faults per stream, graceful GOAWAY on stop and
on listener removal, access log, metering and sticky sessions."""

import hashlib
import json
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

import http_util as hu
import slbd_harness as h
from h2_util import (CANCEL, CONNECTION_SPECIFIC, INTERNAL_ERROR, NOHC, PROTOCOL_ERROR,
                     SETTINGS_INITIAL_WINDOW_SIZE, LibH2, RawH2, TlsWire,
                     access_lines, client_context, curl, dechunk, error_name, h2_site, h2load,
                     https_listener, set_access_log, split_record,
                     window_update_frame)
from http_util import (Scripted, cookie_setter, flood_then_reset, hx,  # noqa: F401
                       reset_mid_chunked, reset_mid_length)
from metering_util import settle
from pki import pki, upload_ca, upload_server  # noqa: F401

XFC = "x-forwarded-clientcert-"


def raw(site, pki, hx, **kw):  # noqa: F811
    return RawH2.connect(site.port, client_context(pki), track=hx.track, **kw)


def lib(site, pki, hx, **kw):  # noqa: F811
    return LibH2.connect(site.port, client_context(pki), track=hx.track, **kw)


def sha(b):
    return hashlib.sha256(bytes(b)).hexdigest()


# --------------------------------------------------------------------------------------------
# ALPN
# --------------------------------------------------------------------------------------------


def test_default_tls_selects_h2(slbd, hx, pki, workdir):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    w = TlsWire.connect(site.port, client_context(pki, alpn=("h2", "http/1.1")),
                        track=hx.track)
    assert w.alpn == "h2", w.alpn
    w.close()
    # A client that prefers HTTP/1.1 still gets h2: the server's order decides.
    w = TlsWire.connect(site.port, client_context(pki, alpn=("http/1.1", "h2")),
                        track=hx.track)
    assert w.alpn == "h2", w.alpn
    w.close()
    r = curl(site.port, pki, "/alpn", workdir)
    assert r.version == "2" and r.status == 200, r


def test_http11_only_listener_never_selects_h2(slbd, hx, pki, workdir):  # noqa: F811
    site = h2_site(slbd, hx, pki, tls_extra={"alpn": ["http/1.1"]})
    w = TlsWire.connect(site.port, client_context(pki, alpn=("h2", "http/1.1")),
                        track=hx.track)
    assert w.alpn == "http/1.1", w.alpn
    w.close()
    r = curl(site.port, pki, "/fallback", workdir)
    assert r.version == "1.1" and r.status == 200, r
    assert json.loads(r.body)["path"] == "/fallback"


@pytest.mark.parametrize("alpn,offered", [(None, ("h3",)), (None, ("foo", "spdy/3")),
                                          (["http/1.1"], ("h2",))])
def test_alpn_nothing_in_common_is_fatal(slbd, hx, pki, alpn, offered):  # noqa: F811
    """RFC 7301 3.2: a client that offers ALPN but no protocol of the listener's gets the
    fatal no_application_protocol alert, counted under its own reason; one that offers no ALPN
    at all speaks HTTP/1.1."""
    site = h2_site(slbd, hx, pki, tls_extra={"alpn": alpn} if alpn else None)
    with pytest.raises(ssl.SSLError, match="no application protocol"):
        TlsWire.connect(site.port, client_context(pki, alpn=offered), track=hx.track)
    w = TlsWire.connect(site.port, client_context(pki, alpn=None), track=hx.track)
    assert w.alpn is None, w.alpn
    w.send(b"GET /noalpn HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert w.recv(h.scaled(10)).startswith(b"HTTP/1.1 200 "), "no HTTP/1.1 answer"
    w.close()
    key = 'slbd_listener_handshake_failures_total{listener="h2",reason="no_application_protocol"}'
    h.wait_until(lambda: hu.metrics(slbd).get(key) == 1, 10,
                 "the failure counted as no_application_protocol")


def test_s_client_alpn_foo_gets_the_alert(slbd, hx, pki):  # noqa: F811
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    site = h2_site(slbd, hx, pki)
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{site.port}",
                        "-servername", "localhost", "-alpn", "foo"], input=b"",
                       capture_output=True, timeout=h.scaled(15))
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode != 0 and "no application protocol" in out, out


# --------------------------------------------------------------------------------------------
# Translation
# --------------------------------------------------------------------------------------------


def test_curl_get_through_h2(slbd, hx, pki, workdir):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    r = curl(site.port, pki, "/curl?x=1", workdir)
    assert r.version == "2" and r.status == 200, r
    assert r.status_line.startswith("HTTP/2 200"), r.status_line
    names = [ln.split(":", 1)[0] for ln in r.header_lines]
    assert names and all(n == n.lower() for n in names), r.header_lines
    assert not set(names) & set(CONNECTION_SPECIFIC), r.header_lines
    assert "x-backend" in names, r.header_lines  # the backend's own field is passed on
    js = json.loads(r.body)
    assert js["path"] == "/curl?x=1" and js["method"] == "GET", js
    assert js["headers"]["x-forwarded-proto"] == "https", js
    # Response fields as python-h2 sees them (it refuses uppercase or connection-specific
    # names itself).
    c = lib(site, pki, hx)
    s = c.get("/lib")
    assert s.status == 200 and s.json()["path"] == "/lib", s
    assert not {n for n, _ in s.headers} & set(CONNECTION_SPECIFIC), s.headers


def test_request_as_the_backend_receives_it(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki, record=True)
    b = site.backends[0]
    c = raw(site, pki, hx)
    s = c.wait_stream(c.request("GET", "/t/x?q=1", authority="h2.example:8443", headers=[
        ("cookie", "a=1"), ("x-custom", "v"), ("cookie", "b=2"), ("cookie", "c=3"),
        ("x-forwarded-for", "192.0.2.7"), ("x-forwarded-proto", "gopher")]))
    assert s.status == 200, s
    js = s.json()
    assert js["method"] == "GET" and js["path"] == "/t/x?q=1", js
    hd = js["headers"]
    assert hd["host"] == "h2.example:8443", hd
    assert hd["cookie"] == "a=1; b=2; c=3", hd
    assert hd["x-custom"] == "v", hd
    assert hd["x-forwarded-for"] == "192.0.2.7, 127.0.0.1", hd
    assert hd["x-forwarded-proto"] == "https", hd
    assert hd["x-forwarded-port"] == str(site.port), hd
    assert hd["x-real-ip"] == "127.0.0.1", hd
    line, fields, _ = split_record(b.recorded())
    assert line == "GET /t/x?q=1 HTTP/1.1", line
    names = [n for n, _ in fields]
    assert names.count("host") == 1 and names.count("cookie") == 1, fields
    assert not [n for n in names if n.startswith(":")], fields

    # :authority wins over a different host field.
    b.clear_record()
    s = c.wait_stream(c.request("POST", "/t/host", authority="right.example",
                                headers=[("host", "wrong.example")], body=b"hello"))
    assert s.status == 200, s
    js = s.json()
    assert js["method"] == "POST" and js["headers"]["host"] == "right.example", js
    assert js["body_bytes"] == 5, js
    line, fields, _ = split_record(b.recorded())
    assert line == "POST /t/host HTTP/1.1", line
    assert [n for n, _ in fields].count("host") == 1, fields


def test_client_certificate_headers_over_h2(slbd, hx, pki):  # noqa: F811
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    caid = upload_ca(slbd, pki, "inter", cert_id="ca-inter")
    port = https_listener(slbd, "mtls", "g", cid,
                          tls_extra={"client_ca": caid, "client_auth": "required"})
    c = LibH2.connect(port, client_context(pki, cert="client"), track=hx.track)
    s = c.get("/whoami", headers=[(XFC + "subjectdn", "CN=forged")])
    assert s.status == 200, s
    hd = s.json()["headers"]
    assert hd[XFC + "clientverify"] == "SUCCESS", hd
    assert hd[XFC + "subjectdn"] == pki.subject("client"), hd
    assert hd[XFC + "issuerdn"] == pki.issuer("client"), hd
    assert hd[XFC + "fingerprint"] == pki.fingerprint("client"), hd


BAD_FIELDS = [("connection", "keep-alive"), ("keep-alive", "timeout=5"),
              ("proxy-connection", "keep-alive"), ("transfer-encoding", "chunked"),
              ("upgrade", "websocket"), ("te", "gzip"),
              # A line break in a value would become a field of the client's choosing in the
              # HTTP/1.1 request to the backend (and a NUL is no field byte).
              ("x-inject", "a\r\nx-evil: 1"), ("x-lf", "a\nx-evil: 1"), ("x-nul", "a\x00b")]


def test_connection_specific_request_fields_reset_the_stream(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki, record=True)
    c = raw(site, pki, hx)
    problems = []
    for name, value in BAD_FIELDS:
        s = c.wait_stream(c.request("GET", f"/bad/{name}", headers=[(name, value)]))
        if s.reset != PROTOCOL_ERROR or s.status is not None:
            problems.append(f"{name}: {value}: {s!r}")
        ok = c.get(f"/after/{name}")
        assert ok.status == 200 and ok.json()["path"] == f"/after/{name}", (name, ok)
    assert not problems, "streams not reset with PROTOCOL_ERROR:\n" + "\n".join(problems)
    s = c.get("/te-trailers", headers=[("te", "trailers")])
    assert s.status == 200, s  # the one te value HTTP/2 allows
    assert not c.goaways and not c.ended, c.describe()
    recorded = site.backends[0].recorded()
    assert b"/bad/" not in recorded and b"x-evil" not in recorded.lower(), recorded[-500:]


@pytest.mark.parametrize("declared,sent", [(10, 5), (5, 10)], ids=["short", "long"])
def test_content_length_mismatch_resets_the_stream(slbd, hx, pki, declared, sent):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    s = c.wait_stream(c.request("POST", "/cl", headers=[("content-length", str(declared))],
                                body=b"x" * sent))
    assert s.reset == PROTOCOL_ERROR, s
    ok = c.get("/after")
    assert ok.status == 200, ok
    assert not c.goaways and not c.ended, c.describe()


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_10mib_upload_arrives_intact(slbd, hx, pki, with_length):  # noqa: F811
    site = h2_site(slbd, hx, pki, record=True)
    body = random.Random(7).randbytes(10 << 20)
    c = lib(site, pki, hx)
    fields = [("content-type", "application/octet-stream")]
    if with_length:
        fields.append(("content-length", str(len(body))))
    s = c.wait_stream(c.request("POST", "/upload", headers=fields, body=body), timeout=60)
    assert s.status == 200 and s.json()["body_bytes"] == len(body), s
    line, got, rest = split_record(site.backends[0].recorded())
    assert line == "POST /upload HTTP/1.1", line
    fd = dict(got)
    if with_length:
        assert fd.get("content-length") == str(len(body)), got
        assert "transfer-encoding" not in fd, got
        assert len(rest) == len(body) and sha(rest) == sha(body), len(rest)
    else:
        assert fd.get("transfer-encoding") == "chunked", got
        assert "content-length" not in fd, got
        data, trailers, after = dechunk(rest)
        assert len(data) == len(body) and sha(data) == sha(body), len(data)
        assert not trailers and not after, (trailers, after[:100])


def test_request_trailers_reach_the_backend(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki, record=True)
    c = lib(site, pki, hx)
    sid = c.request("POST", "/trailers", headers=[("content-type", "text/plain")],
                    body=b"part one, ", end_stream=False)
    c.send_data(sid, b"part two", end_stream=False)
    c.send_trailers(sid, [("x-checksum", "abc123")])
    s = c.wait_stream(sid)
    assert s.status == 200 and s.json()["body_bytes"] == 18, s
    line, fields, rest = split_record(site.backends[0].recorded())
    assert dict(fields).get("transfer-encoding") == "chunked", fields
    data, trailers, after = dechunk(rest)
    assert data == b"part one, part two", data
    got = [(n.strip().lower(), v.strip()) for n, _, v in (t.partition(":") for t in trailers)]
    assert got == [("x-checksum", "abc123")], trailers


def test_request_trailers_that_frame_or_route_are_dropped(slbd, hx, pki):  # noqa: F811
    """Trailer fields that frame, route or control a message (RFC 9110 6.5.1) never reach the
    backend's chunked trailer section, where a backend merging trailers into the head would
    take them for its own; nghttp2 refuses most of them, not te: trailers nor trailer."""
    site = h2_site(slbd, hx, pki, record=True)
    c = raw(site, pki, hx)
    sid = c.request("POST", "/trailers", body=b"hello", end_stream=False)
    c.send_headers(sid, [("x-checksum", "abc123"), ("te", "trailers"), ("trailer", "x-a"),
                         ("host", "evil.example"), ("content-length", "5")])
    s = c.wait_stream(sid)
    assert s.status == 200 and s.json()["body_bytes"] == 5, s
    line, fields, rest = split_record(site.backends[0].recorded())
    data, trailers, after = dechunk(rest)
    assert data == b"hello", data
    got = [(n.strip().lower(), v.strip()) for n, _, v in (t.partition(":") for t in trailers)]
    assert got == [("x-checksum", "abc123")], trailers


def test_large_response_with_flow_control(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    c = lib(site, pki, hx)  # 64 KiB windows, given back as the data is consumed
    size = 8 << 20
    s = c.get(f"/bytes/{size}", timeout=60)
    assert s.status == 200 and s.ended and s.reset is None, s
    assert len(s.data) == size and s.data.count(b"x") == size, len(s.data)
    assert s.header("content-length") in (None, str(size)), s.headers
    assert s.data_frames >= size // 16384, s.data_frames  # no frame over the default maximum
    # The connection goes on after the big response.
    assert c.get("/after").status == 200


def test_flow_control_window_is_respected_to_the_byte(slbd, hx, pki):  # noqa: F811
    """A client that opens its stream window 1000 bytes at a time gets exactly that much each
    time: DATA beyond the window would be a FLOW_CONTROL_ERROR."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx, settings={SETTINGS_INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    sid = c.request("GET", "/bytes/5000")
    c.wait(lambda: c.streams[sid].status, 10, "the response head")
    assert not c.streams[sid].data, c.streams[sid]
    for i in range(1, 6):
        c.send(window_update_frame(sid, 1000))
        c.wait(lambda i=i: len(c.streams[sid].data) >= 1000 * i, 10, f"{1000 * i} bytes")
        c.settle(0.1)  # anything sent beyond the window would have arrived by now
        assert len(c.streams[sid].data) == 1000 * i, len(c.streams[sid].data)
    c.wait(lambda: c.streams[sid].done, 10, "the end of the stream")
    s = c.streams[sid]
    assert s.ended and s.reset is None and bytes(s.data) == b"x" * 5000, s

def test_responses_without_content(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    problems = []
    for method, path, status in (("HEAD", "/bytes/1000", 200), ("HEAD", "/", 200),
                                 ("GET", "/status/204", 204), ("GET", "/status/304", 304)):
        s = c.wait_stream(c.request(method, path))
        if s.status != status or not s.ended or s.reset is not None:
            problems.append(f"{method} {path}: {s!r}")
        elif s.data_frames or not s.end_on_headers:
            problems.append(f"{method} {path}: {s.data_frames} DATA frame(s) "
                            f"({len(s.data)} bytes) instead of END_STREAM on the HEADERS")
        elif method == "HEAD" and path.startswith("/bytes/") and \
                s.header("content-length") not in (None, "1000"):
            problems.append(f"HEAD {path}: content-length {s.header('content-length')}")
    assert not problems, "\n".join(problems)
    assert c.get("/after").status == 200


# --------------------------------------------------------------------------------------------
# Many streams
# --------------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_h2load_many_streams(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    res, out = h2load(f"https://127.0.0.1:{site.port}/load", "-n", "2000", "-c", "4",
                      "-m", "50")
    assert res["protocol"] == "h2", out
    assert (res["done"], res["succeeded"], res["failed"], res["errored"]) == \
        (2000, 2000, 0, 0), out
    assert res["2xx"] == 2000, out


def test_fifty_concurrent_streams_on_one_connection(slbd, hx, pki):  # noqa: F811
    """The backend answers only once all 50 requests are with it at the same time, so the
    streams must really be in flight together."""
    n = 50
    barrier = threading.Barrier(n, timeout=h.scaled(20))

    def handler(conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            path = head.split(b" ", 2)[1]
            try:
                barrier.wait()
                status = b"200 OK"
            except threading.BrokenBarrierError:
                status = b"500 Not All Together"
            body = path * (1 + int(path.rsplit(b"/", 1)[1]))
            conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: " +
                         str(len(body)).encode() + b"\r\n\r\n" + body)

    rb = hx.raw_backend("together", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = LibH2.connect(port, client_context(pki), track=hx.track)
    sids = {c.request("GET", f"/c/{i}"): i for i in range(n)}
    c.wait(lambda: all(c.streams[s].done for s in sids), 30, "all 50 streams")
    bad = []
    for sid, i in sids.items():
        s = c.streams[sid]
        want = f"/c/{i}".encode() * (1 + i)
        if s.status != 200 or bytes(s.data) != want or s.reset is not None:
            bad.append(repr(s))
    assert not bad, f"{len(bad)} of {n} streams wrong:\n" + "\n".join(bad[:5])


# --------------------------------------------------------------------------------------------
# Backend faults stay on their stream
# --------------------------------------------------------------------------------------------


def test_dead_server_answers_each_stream(slbd, hx, pki):  # noqa: F811
    slbd.add_group("dead", [{"address": "127.0.0.1", "port": h.dead_port(), "weight": 100}],
                   health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "dead", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    for i in range(3):
        s = c.wait_stream(c.request("GET", f"/dead/{i}"))
        assert s.status in (502, 503) and s.ended and s.reset is None, s
    c.ping()
    assert not c.goaways and not c.ended, c.describe()


def test_backend_timeout_is_504_on_that_stream_only(slbd, hx, pki):  # noqa: F811
    sc = Scripted(hx, {"/never": lambda conn: time.sleep(h.scaled(8))})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid, request_timeout_s=1)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    t0 = time.monotonic()
    never = c.request("GET", "/never")
    ok = c.wait_stream(c.request("GET", "/ok"))
    assert ok.status == 200 and bytes(ok.data) == b"ok", ok
    s = c.wait_stream(never, timeout=1 + 5)
    took = time.monotonic() - t0
    assert s.status == 504 and s.ended and s.reset is None, s
    assert took >= 0.9, f"504 after {took:.2f} s with request_timeout_s=1"
    assert c.get("/ok").status == 200
    assert not c.goaways and not c.ended, c.describe()


def _slow_ok(conn):
    time.sleep(0.6)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nslow ok")
    return True  # and the connection stays open


@pytest.mark.parametrize("fault", [reset_mid_length, reset_mid_chunked],
                         ids=["content-length", "chunked"])
def test_backend_dying_mid_body_resets_the_stream(slbd, hx, pki, fault):  # noqa: F811
    sc = Scripted(hx, {"/die": fault, "/slow-ok": _slow_ok})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    slow = c.request("GET", "/slow-ok")
    s = c.wait_stream(c.request("GET", "/die"))
    assert s.reset in (INTERNAL_ERROR, CANCEL) and not s.ended, (
        f"a body cut by the backend must end in RST_STREAM, got {s!r} "
        f"(reset {error_name(s.reset)})")
    assert s.status == 200 and len(s.data) <= 1000, s
    other = c.wait_stream(slow)
    assert other.status == 200 and bytes(other.data) == b"slow ok", other
    assert c.get("/ok").status == 200
    assert not c.goaways and not c.ended, c.describe()


def test_reset_seen_by_an_upload_send_still_resets_the_stream(slbd, hx, pki):  # noqa: F811
    """The kernel reports a backend's reset once, to whichever call comes first. When a send
    of the stream's request body takes it, the backend's socket then reads as an orderly end:
    a close-delimited body must still end in RST_STREAM, not END_STREAM. The client opens no
    window, so slbd stops reading the backend and the reset waits in the socket until the
    rest of the request body is sent on."""
    flooded = threading.Event()
    sc = Scripted(hx, {"/flood": flood_then_reset(flooded)})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track, auto_window=False)
    sid = c.request("POST", "/flood", headers=[("content-length", "2000")], end_stream=False)
    c.send_data(sid, b"a" * 1000, end_stream=False)
    assert flooded.wait(h.scaled(15)), "the backend never filled the buffers"
    time.sleep(0.3)  # the reset reaches slbd's backend socket
    c.send_data(sid, b"b" * 1000, end_stream=True)
    c.send(window_update_frame(0, 1 << 30) + window_update_frame(sid, 1 << 30))
    c.auto_window = True
    s = c.wait_stream(sid, timeout=20)
    assert s.status == 200 and s.reset is not None and not s.ended, (
        f"a close-delimited body cut by a backend reset must end in RST_STREAM, got {s!r}")
    assert c.get("/ok").status == 200


def _early_413_then_close(conn):
    conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 5\r\n"
                 b"Connection: close\r\n\r\nlarge")
    time.sleep(0.1)
    conn.sock.close()  # with the body unread: a reset


def test_response_before_the_request_body_ends_the_stream_with_no_error(slbd, hx,
                                                                       pki):  # noqa: F811
    """A backend answers before the upload is in (an early 413) and closes. The stream gets
    the whole response, then RST_STREAM NO_ERROR (RFC 9113 8.1: the rest of the request is
    not wanted); the connection and its other streams go on."""
    sc = Scripted(hx, {"/early": _early_413_then_close})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid, request_timeout_s=5)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    sid = c.request("POST", "/early", headers=[("content-length", "300000")], end_stream=False)
    c.send_data(sid, b"a" * 1000, end_stream=False)
    c.wait(lambda: c.stream(sid).reset is not None, 10, "the RST_STREAM after the response")
    s = c.stream(sid)
    assert s.status == 413 and bytes(s.data) == b"large" and s.ended, s
    assert s.reset == 0, f"expected RST_STREAM NO_ERROR after the response, got {s!r}"
    assert c.get("/ok").status == 200
    assert not c.goaways and not c.ended, c.describe()


def _huge_chunk(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"100000005\r\nhello\r\n0\r\n\r\n")
    time.sleep(h.scaled(10))  # and the connection stays open: only slbd can end the stream


def test_backend_chunk_size_above_bound_ends_the_stream(slbd, hx, pki):  # noqa: F811
    """A backend's chunk size above 2^31 - 1 is refused for an HTTP/2 client as for HTTP/1:
    the stream gets a 502 (or a reset once its head went out), at once, not after 4 GB."""
    sc = Scripted(hx, {"/huge": _huge_chunk})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    s = c.get("/huge", timeout=5)
    assert s.status == 502 or (s.reset and not s.ended), s
    assert b"hello" not in bytes(s.data), s
    assert c.get("/ok").status == 200


def _length_then_close(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\ncomplete")


def _chunked_then_close(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                 b"8\r\ncomplete\r\n0\r\n\r\n")


def _keep_alive_then_close(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ncomplete")


@pytest.mark.parametrize("fault", [_length_then_close, _chunked_then_close,
                                   _keep_alive_then_close],
                         ids=["content-length", "chunked", "keep-alive"])
def test_backend_closing_right_after_a_complete_response(slbd, hx, pki, fault):  # noqa: F811
    """A backend that closes its connection as soon as the response is written (the FIN
    arrives with the last body bytes): the response is complete and must reach the client
    as such, not as a reset."""
    sc = Scripted(hx, {"/done": fault})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    got = [c.get("/done") for _ in range(20)]
    bad = [s for s in got if s.status != 200 or not s.ended or bytes(s.data) != b"complete"]
    assert not bad, f"{len(bad)} of 20 complete responses did not arrive as such: {bad[:3]}"


def _hints_and_trailers(conn):
    conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n"
                 b"Connection: keep-alive\r\nX-App: yes\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nContent-Length: 11\r\n\r\n")
    return True


def _endless_interims(conn):
    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 50 +
                 b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_flood_of_interim_responses_is_cut(slbd, hx, pki):  # noqa: F811
    """Interim heads are not flow-controlled: a backend that sends them without end would
    have slbd queue HEADERS frames without bound. After 8 the stream gets 502."""
    sc = Scripted(hx, {"/flood": _endless_interims})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    s = c.get("/flood")
    assert s.status == 502 and s.ended and len(s.interim) == 8, s
    assert c.get("/ok").status == 200


def test_interim_responses_and_response_trailers(slbd, hx, pki):  # noqa: F811
    """A 103 with its Link goes out as a non-final HEADERS frame before the final head; a
    chunked response loses its framing (and its hop-by-hop fields) and its trailer section
    becomes a trailing HEADERS frame, without the fields that frame a message."""
    sc = Scripted(hx, {"/hints": _hints_and_trailers})
    slbd.add_group("g", [sc.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid)
    c = RawH2.connect(port, client_context(pki), track=hx.track)
    for _ in range(2):  # the second on the pooled backend connection
        s = c.get("/hints")
        assert s.status == 200 and s.ended and bytes(s.data) == b"hello world", s
        assert s.interim == [[(":status", "103"),
                              ("link", "</style.css>; rel=preload; as=style")]], s.interim
        names = [n for n, _ in s.headers]
        assert "x-app" in names, s.headers
        assert not {"transfer-encoding", "connection", "keep-alive"} & set(names), s.headers
        assert s.trailers == [("x-sum", "42")], s.trailers
    assert not c.goaways and not c.ended, c.describe()


# --------------------------------------------------------------------------------------------
# Graceful GOAWAY
# --------------------------------------------------------------------------------------------


def _assert_graceful(c, sid, what):
    s = c.wait_stream(sid, timeout=15)
    assert s.status == 200 and s.ended and s.reset is None, (what, s)
    assert s.json()["path"] == "/slow/1500", s
    assert c.goaways, f"{what}: no GOAWAY ({c.describe()})"
    codes = [error_name(code) for _, code, _ in c.goaways]
    assert set(codes) == {"NO_ERROR"}, f"{what}: GOAWAY codes {codes}"
    assert c.goaways[-1][0] >= sid, f"{what}: last stream id {c.goaways[-1][0]} < {sid}"
    assert c.order.index(("goaway", None)) < c.order.index(("end", sid)), (
        f"{what}: the GOAWAY came only after the stream ended: {c.order}")


def test_sigterm_sends_goaway_and_finishes_the_stream(slbd, hx, pki):  # noqa: F811
    st, js = slbd.api.post("/v1/apply", {"settings": {"drain_timeout_s": 120}})
    assert st == 200, js
    site = h2_site(slbd, hx, pki, idle_timeout_s=300)
    idle = raw(site, pki, hx)
    assert idle.get("/idle").status == 200
    # This client gives every DATA byte back at once (WINDOW_UPDATE), so its frames cross
    # slbd's GOAWAY: slbd reads and drops them until the client's FIN rather than close with
    # unread bytes, which would make the kernel send a reset.
    c = raw(site, pki, hx)
    assert c.get("/warm").status == 200
    sid = c.request("GET", "/slow/1500")
    time.sleep(0.3 * h.slow_factor())  # let the request reach the backend
    slbd.signal(signal.SIGTERM)
    _assert_graceful(c, sid, "SIGTERM")
    assert c.wait_end(h.scaled(10)) == "eof", f"after the stream: {c.describe()}"
    # The idle connection is told and closed too, long before drain_timeout_s (120 s).
    assert idle.wait_end(h.scaled(10)) == "eof", idle.describe()
    assert {error_name(code) for _, code, _ in idle.goaways} <= {"NO_ERROR"}, idle.goaways
    assert slbd.stop(timeout=10) == 0


def test_listener_removal_sends_goaway_and_finishes_the_stream(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    assert c.get("/warm").status == 200
    sid = c.request("GET", "/slow/1500")
    time.sleep(0.3 * h.slow_factor())
    st, js = slbd.api.delete("/v1/listeners/h2")
    assert st == 204, js
    _assert_graceful(c, sid, "listener removal")
    assert c.wait_end(h.scaled(10)) == "eof", f"after the stream: {c.describe()}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", site.port), timeout=h.scaled(2)).close()


# --------------------------------------------------------------------------------------------
# Access log, metering, sticky sessions
# --------------------------------------------------------------------------------------------


@pytest.mark.slbd(workers=1)
def test_access_log_line_per_stream(slbd, hx, pki):  # noqa: F811
    set_access_log(slbd, "access.log")
    path = slbd.state_dir / "access.log"
    try:
        site = h2_site(slbd, hx, pki)
        c = lib(site, pki, hx)
        sids = [c.request("GET", "/log/a"), c.request("POST", "/log/b", body=b"0123456789"),
                c.request("GET", "/status/404")]
        for sid in sids:
            c.wait_stream(sid)
        want = {"/log/a": ("GET", 200), "/log/b": ("POST", 200), "/status/404": ("GET", 404)}
        lines = h.wait_until(
            lambda: (x := [ln for ln in access_lines(path) if ln.get("path") in want])
            and len(x) >= 3 and x, 10, "three access log lines")
        time.sleep(0.2)  # a duplicate line would show up by now
        lines = [ln for ln in access_lines(path) if ln.get("path") in want]
        assert sorted(ln["path"] for ln in lines) == sorted(want), lines
        for ln in lines:
            assert (ln["method"], ln["status"]) == want[ln["path"]], ln
            assert ln["listener"] == "h2" and ln["client"] == "127.0.0.1", ln
            assert ln["tls"] == "TLSv1.3" and ln["sni"] == "localhost", ln
            assert ln["upstream"] == f"127.0.0.1:{site.backends[0].port}", ln
    finally:
        set_access_log(slbd, "")


def test_metering_counts_h2_traffic(slbd, hx, pki):  # noqa: F811
    """As for HTTP/1.1: the counters move as requests complete (not only at close), the
    wire never counts less than the payload, and after the close both equal, to the byte,
    what the client's socket and TLS layer carried."""
    site = h2_site(slbd, hx, pki)
    c = lib(site, pki, hx)
    assert c.get("/m/1").status == 200
    before = settle(slbd, "h2", active=1)
    s = c.wait_stream(c.request("POST", "/bytes/100000", body=b"u" * 50000))
    assert s.status == 200 and len(s.data) == 100000, s
    after = settle(slbd, "h2", active=1)
    grow = {k: {d: after[k][d] - before[k][d] for d in ("in", "out")}
            for k in ("payload_bytes", "wire_bytes")}
    assert grow["payload_bytes"]["in"] >= 50000, grow
    assert grow["payload_bytes"]["out"] >= 100000, grow
    for d in ("in", "out"):
        assert grow["wire_bytes"][d] >= grow["payload_bytes"][d], (
            f"while the connection is open: growth {grow}, counters {after}")
    assert after["connections"] == 1, after
    assert after["requests"]["2xx"] == 2, after["requests"]
    c.close()
    final = settle(slbd, "h2", active=0)
    got = {"wire in": final["wire_bytes"]["in"], "wire out": final["wire_bytes"]["out"],
           "payload in": final["payload_bytes"]["in"],
           "payload out": final["payload_bytes"]["out"]}
    want = {"wire in": c.wire.sent, "wire out": c.wire.received,
            "payload in": c.wire.plain_out, "payload out": c.wire.plain_in}
    assert got == want, f"after the close: slbd {got}, client {want}"


def test_misdirected_stream_gets_421(slbd, hx, pki):  # noqa: F811
    """A client reusing its HTTP/2 connection for a site of another certificate of the listener
    (connection coalescing) gets 421 on that stream (RFC 9110 7.4, RFC 9113 9.1.2), and the
    connection goes on serving the site its SNI chose."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    ids = [upload_server(slbd, pki, c, cert_id=c) for c in ("server", "other")]
    port = https_listener(slbd, "h2", "g", ids[0], tls_extra={"certificates": ids})
    wire = TlsWire.connect(port, client_context(pki), server_hostname="localhost",
                           track=hx.track)
    assert wire.alpn == "h2", wire.alpn
    c = LibH2(wire)
    s = c.get("/md", authority="other.test")
    assert s.status == 421 and s.ended, s
    s = c.get("/ok", authority="www.example.com")  # the same certificate: served
    assert s.status == 200 and s.json()["path"] == "/ok", s
    assert not c.ended, "the connection must stay open"


def test_group_change_reaches_an_open_h2_connection(slbd, hx, pki):  # noqa: F811
    """A server set to weight 0 gets no more streams from an HTTP/2 connection opened before
    the change, while a stream in progress on the old configuration completes."""
    site = h2_site(slbd, hx, pki, n=2)
    c = raw(site, pki, hx)
    before = {c.get(f"/before/{i}").json()["server"] for i in range(6)}
    assert before == {"a", "b"}, before
    slow = c.request("GET", "/slow/800")
    slbd.put_group("g", [site.backends[0].server(), site.backends[1].server(weight=0)],
                   health_check=NOHC)
    after = [c.get(f"/after/{i}").json()["server"] for i in range(8)]
    assert after == ["a"] * 8, after
    s = c.wait_stream(slow)
    assert s.status == 200 and s.ended, s
    assert not c.goaways and not c.ended, c.describe()


def test_sticky_server_cookie_over_h2(slbd, hx, pki):  # noqa: F811
    """Sticky "server" mode: the backend's own JSESSIONID gets slbd's server prefix in the
    set-cookie of the HEADERS frame, and a request carrying it goes back to that server,
    which sees its own value without the prefix."""
    rbs = [hx.raw_backend(n, cookie_setter(n)) for n in ("p", "q")]
    slbd.add_group("g", [b.server() for b in rbs], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = https_listener(slbd, "h2", "g", cid,
                          sticky={"type": "server", "cookie": "JSESSIONID"})
    c = LibH2.connect(port, client_context(pki), track=hx.track)
    seen = {}
    for i in range(4):
        s = c.get(f"/{i}")
        assert s.status == 200, s
        name = bytes(s.data).decode().split("|")[0]
        cookies = s.all("set-cookie")
        m = [re.match(r"^JSESSIONID=([0-9a-f]{16})~sess-(\w); Path=/; Secure$", v)
             for v in cookies]
        m = [x for x in m if x]
        assert len(m) == 1 and m[0].group(2) == name and "other=1" in cookies, cookies
        seen[name] = m[0].group(1)
    assert set(seen) == {"p", "q"}, seen
    for name, prefix in seen.items():
        for _ in range(3):
            s = c.get("/again", headers=[("cookie", f"JSESSIONID={prefix}~sess-{name}"),
                                         ("cookie", "x=y")])
            got, cookie = bytes(s.data).decode().split("|")
            assert got == name and cookie == f"JSESSIONID=sess-{name}; x=y", (got, cookie)


def test_sticky_insert_cookie_over_h2(slbd, hx, pki):  # noqa: F811
    site = h2_site(slbd, hx, pki, n=3,
                   sticky={"type": "insert", "cookie": "LB", "timeout_s": 600})
    c = lib(site, pki, hx)
    s = c.get("/s/0")
    cookies = s.all("set-cookie")
    assert s.status == 200 and len(cookies) == 1 and cookies[0].startswith("LB="), s
    attrs = [a.strip().lower() for a in cookies[0].split(";")[1:]]
    assert "secure" in attrs and "httponly" in attrs, cookies
    value = cookies[0].split(";")[0].split("=", 1)[1]
    server = s.json()["server"]
    for j in range(6):
        s = c.get(f"/again/{j}", headers=[("cookie", f"LB={value}")])
        assert s.status == 200 and s.json()["server"] == server, (value, server, s)
    # On a new connection, with the cookie split in crumbs as HTTP/2 clients send it.
    c2 = lib(site, pki, hx)
    for j in range(6):
        s = c2.get(f"/crumbs/{j}", headers=[("cookie", "a=b"), ("cookie", f"LB={value}")])
        assert s.status == 200 and s.json()["server"] == server, (value, server, s)
        assert s.json()["headers"]["cookie"] == f"a=b; LB={value}", s




def test_connect_is_405(slbd, hx, pki):  # noqa: F811
    """An HTTP/2 CONNECT (:method and :authority, no :path or :scheme, RFC 9113 8.5) gets the
    documented 405 with Allow, as over HTTP/1.1, and never reaches the backend."""
    site = h2_site(slbd, hx, pki, record=True)
    c = raw(site, pki, hx)
    sid = c.new_sid()
    c.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.com:443")])
    s = c.wait_stream(sid)
    assert s.status == 405 and s.ended, s
    assert "GET" in (s.header("allow") or ""), s
    assert b"CONNECT" not in site.backends[0].recorded()
    assert c.get("/after").status == 200


def test_chunked_body_of_tiny_chunks_streams_to_the_end(slbd, hx, pki):  # noqa: F811
    """A chunked response cut in many tiny chunks fills the backend buffer with framing; once
    decoded and sent, the room it leaves must get the backend read again (the stream stalled
    after the first 16 KiB)."""
    rnd = random.Random(5)
    body = bytes(rnd.randrange(32, 127) for _ in range(60000))

    def handler(conn, backend):
        while conn.read_head():
            out, i = bytearray(), 0
            while i < len(body):
                n = rnd.choice((1, 3, 7, 100, 4096))
                out += b"%x\r\n" % len(body[i:i + n]) + body[i:i + n] + b"\r\n"
                i += n
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + bytes(out) +
                         b"0\r\n\r\n")

    rb = hx.raw_backend("tiny", handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = https_listener(slbd, "h2", "g", upload_server(slbd, pki, "server"))
    c = LibH2.connect(port, client_context(pki), track=hx.track)
    for i in range(3):
        s = c.get(f"/tiny/{i}", timeout=20)
        assert s.status == 200 and s.ended and s.reset is None, s
        assert bytes(s.data) == body, (i, len(s.data))
