# SPDX-License-Identifier: Apache-2.0
"""Response compression (a listener's "gzip") end to end: what curl --compressed, a raw
HTTP/1.1 client and an HTTP/2 client (python3-h2) get from a real backend that answers with a
Content-Length, chunked or close-delimited body decompresses to the backend's bytes exactly;
none of the excluded cases is compressed; Vary and ETag are rewritten; the configuration is
validated and exported; the payload counters count what the client received."""

import gzip
import random
import socket
import subprocess
import time
import zlib

import pytest

import slbd_harness as h
from h2_util import LibH2, client_context, curl, https_listener
from hostile_util import require_tool
from http_util import (ConnectionEnded, HttpConn, add_listener, build_request,  # noqa: F401
                       header_value, hx)
from metering_util import CountingSocket, scrape, settle
from pki import pki, upload_server  # noqa: F401

NOHC = h.no_health_check()


def text_body(n, seed=1):
    """n bytes of text that compresses like real pages do (not a repeated string)."""
    rnd = random.Random(seed)
    words = [w.encode() for w in ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do "
                                  "eiusmod tempor incididunt ut labore et dolore magna aliqua "
                                  "<div> </div> {\"id\": 42} slbd gzip").split()]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + (b"\n" if rnd.random() < 0.1 else b" ")
    return bytes(out[:n])


BIG = text_body(1_500_000)
MID = text_body(50_000, seed=2)
PNGISH = random.Random(3).randbytes(20_000)
TRAILERS = b"X-Checksum: abc123\r\nServer-Timing: db;dur=53\r\n"

# path -> (status line, header lines, body, framing: "length", "chunked" or "close")
CASES = {
    "/length": ("200 OK", ["Content-Type: text/html; charset=utf-8"], BIG, "length"),
    "/chunked": ("200 OK", ["Content-Type: application/json"], BIG, "chunked"),
    "/close": ("200 OK", ["Content-Type: text/plain"], BIG, "close"),
    "/mid": ("200 OK", ["Content-Type: text/css", 'ETag: "v1"', "Vary: Cookie"], MID, "length"),
    "/weak": ("200 OK", ["Content-Type: text/css", 'ETag: W/"v2"', "Vary: accept-encoding"], MID,
              "length"),
    "/varystar": ("200 OK", ["Content-Type: text/css", "Vary: *"], MID, "length"),
    "/small-chunked": ("200 OK", ["Content-Type: text/plain"], b"tiny but chunked", "chunked"),
    "/svg": ("200 OK", ["Content-Type: image/svg+xml"], MID, "length"),
    "/notfound": ("404 Not Found", ["Content-Type: text/html"], MID, "length"),
    "/early": ("200 OK", ["Content-Type: text/html"], MID, "chunked"),  # after a 103
    "/trailers": ("200 OK", ["Content-Type: text/plain", "Trailer: X-Checksum, Server-Timing"],
                  MID, "chunked"),  # ends with TRAILERS
    # exclusions
    "/small": ("200 OK", ["Content-Type: text/html"], MID[:1023], "length"),
    "/png": ("200 OK", ["Content-Type: image/png"], PNGISH, "length"),
    "/notype": ("200 OK", [], MID, "length"),
    "/encoded": ("200 OK", ["Content-Type: text/html", "Content-Encoding: br"], PNGISH, "length"),
    "/no-transform": ("200 OK", ["Content-Type: text/html", "Cache-Control: public, no-transform"],
                      MID, "length"),
    "/events": ("200 OK", ["Content-Type: text/event-stream"], MID, "chunked"),
    "/nocontent": ("204 No Content", ["Content-Type: text/html"], b"", "none"),
    "/notmodified": ("304 Not Modified", ["Content-Type: text/html", 'ETag: "v1"'], b"", "none"),
}


def site_handler(conn, backend):
    """The backend: answers each request from CASES by its path; a Range request gets a 206
    of the first 2000 bytes (with /range-ignored, a whole 200 instead)."""
    while True:
        head = conn.read_head()
        if not head:
            return
        line = head.split(b"\r\n", 1)[0].decode()
        method, target = line.split(" ")[:2]
        path = target.split("?")[0]
        rng = header_value(head, "Range")
        if path in ("/range", "/range-ignored"):
            status, hdrs, body, framing = "200 OK", ["Content-Type: text/html"], MID, "length"
            if rng and path == "/range":
                status, body = "206 Partial Content", MID[:2000]
                hdrs = hdrs + [f"Content-Range: bytes 0-1999/{len(MID)}"]
        else:
            status, hdrs, body, framing = CASES[path]
        out = [f"HTTP/1.1 {status}"] + hdrs
        if framing == "length":
            out.append(f"Content-Length: {len(body)}")
        elif framing == "chunked":
            out.append("Transfer-Encoding: chunked")
        elif framing == "close":
            out.append("Connection: close")
        wire = ("\r\n".join(out) + "\r\n\r\n").encode()
        if path == "/early":
            wire = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + wire
        if method != "HEAD" and framing != "none":
            if framing == "chunked":
                # Uneven chunk sizes, some of them tiny, as a streaming backend sends.
                rnd, i, parts = random.Random(len(body)), 0, []
                while i < len(body):
                    n = rnd.choice((1, 7, 100, 4096, 30000))
                    parts.append(b"%x\r\n" % len(body[i:i + n]) + body[i:i + n] + b"\r\n")
                    i += n
                wire += b"".join(parts) + b"0\r\n" + (TRAILERS if path == "/trailers" else b"")
                wire += b"\r\n"
            else:
                wire += body
        conn.sendall(wire)
        if framing == "close":
            return


def site(slbd, hx, **extra):  # noqa: F811
    rb = hx.raw_backend("gz", site_handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    return add_listener(slbd, "web", "g", gzip=True, **extra)


@pytest.fixture
def port(slbd, hx):  # noqa: F811
    """site()'s port: a gzip listener in front of site_handler."""
    return site(slbd, hx)


def backend_body(path):
    return CASES[path][2]


def get(hx, port, path, headers=(("Accept-Encoding", "gzip, deflate"),), method="GET",  # noqa: F811
        version="HTTP/1.1"):
    c = hx.connect(port)
    c.send(build_request(method, path, list(headers), host="localhost", version=version))
    r = c.read_response(method, timeout=30)
    c.close()
    return r


def assert_compressed(r, want):
    assert r.status in (200, 404), r
    assert r.header("Content-Encoding") == "gzip", r
    assert r.header("Content-Length") is None, r
    assert (r.header("Transfer-Encoding") or "").lower() == "chunked", r
    assert "accept-encoding" in (", ".join(r.all("Vary"))).lower(), r
    got = gzip.decompress(r.body)
    assert got == want, f"decompressed {len(got)} bytes, want {len(want)}"
    return got


def assert_identity(r, want, status=200):
    assert r.status == status, r
    assert r.header("Content-Encoding") in (None, "br"), r
    assert "gzip" not in (r.header("Content-Encoding") or ""), r
    assert r.body == want, r


# --------------------------------------------------------------------------------------------
# HTTP/1.1
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/length", "/chunked", "/close"])
def test_big_bodies_decompress_to_the_backend_bytes(slbd, hx, path, port):  # noqa: F811
    r = get(hx, port, path)
    assert_compressed(r, BIG)
    assert len(r.body) < len(BIG) // 2, len(r.body)


def test_curl_compressed(slbd, hx, workdir, port):  # noqa: F811
    require_tool("curl", "curl")
    for path in ("/length", "/chunked", "/close", "/small-chunked", "/svg"):
        out = workdir / "curl-out"
        p = subprocess.run(["curl", "-sS", "--compressed", "-D", "-", "-o", str(out),
                            f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        head = p.stdout.decode("latin-1").lower()
        assert "content-encoding: gzip" in head, head
        assert out.read_bytes() == backend_body(path), path
        # Without --compressed curl sends no Accept-Encoding: the bytes as they are.
        p = subprocess.run(["curl", "-sS", "-D", "-", "-o", str(out),
                            f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "content-encoding" not in p.stdout.decode("latin-1").lower()
        assert out.read_bytes() == backend_body(path), path


def test_small_chunked_and_other_statuses_are_compressed(slbd, hx, port):  # noqa: F811
    """An unknown length is compressed whatever it turns out to be; any status with a body
    but those excluded is (a 404 page too)."""
    assert_compressed(get(hx, port, "/small-chunked"), b"tiny but chunked")
    assert_compressed(get(hx, port, "/notfound"), MID)
    assert_compressed(get(hx, port, "/svg"), MID)
    # "*" and x-gzip are acceptance too.
    assert_compressed(get(hx, port, "/mid", [("Accept-Encoding", "br;q=1, *;q=0.1")]), MID)
    assert_compressed(get(hx, port, "/mid", [("Accept-Encoding", "x-gzip")]), MID)


def test_interim_response_passes_and_the_final_one_is_compressed(slbd, hx, pki, port):  # noqa: F811
    r = get(hx, port, "/early")
    assert [st for st, _, _ in r.interim] == [103], r
    assert all(n.lower() != "content-encoding" for n, _ in r.interim[0][2]), r.interim
    assert_compressed(r, MID)
    cid = upload_server(slbd, pki, "server")
    c = LibH2.connect(https_listener(slbd, "h2", "g", cid, gzip=True), client_context(pki),
                      track=hx.track)
    s = c.get("/early", headers=[("accept-encoding", "gzip")])
    assert len(s.interim) == 1 and s.header("content-encoding") == "gzip", s
    assert gzip.decompress(bytes(s.data)) == MID


def test_exclusions_are_not_compressed(slbd, hx, port):  # noqa: F811
    for path in ("/small", "/png", "/notype", "/encoded", "/no-transform", "/events"):
        r = get(hx, port, path)
        assert_identity(r, backend_body(path))
        if CASES[path][3] == "length":
            assert r.header("Content-Length") == str(len(backend_body(path))), r
        assert r.header("Vary") is None, r
    # Clients that do not take gzip.
    for ae in ([], [("Accept-Encoding", "gzip;q=0")], [("Accept-Encoding", "br, deflate")],
               [("Accept-Encoding", "identity")], [("Accept-Encoding", "*;q=0")],
               [("Accept-Encoding", "gzip;q=0, *")], [("Accept-Encoding", "gzip;q=5")]):
        r = get(hx, port, "/length", ae)
        assert_identity(r, BIG)
        assert r.header("Content-Length") == str(len(BIG)), (ae, r)
    # HEAD: the head as it is, Content-Length included.
    r = get(hx, port, "/length", method="HEAD")
    assert r.status == 200 and r.header("Content-Encoding") is None, r
    assert r.header("Content-Length") == str(len(BIG)), r
    # 204 and 304.
    r = get(hx, port, "/nocontent")
    assert r.status == 204 and r.header("Content-Encoding") is None, r
    r = get(hx, port, "/notmodified")
    assert r.status == 304 and r.header("Content-Encoding") is None, r
    assert r.header("ETag") == '"v1"', r
    # Range: the 206 as it is; and a Range request the backend answers whole is not
    # compressed either.
    ae_range = [("Accept-Encoding", "gzip"), ("Range", "bytes=0-1999")]
    r = get(hx, port, "/range", ae_range)
    assert_identity(r, MID[:2000], status=206)
    assert r.header("Content-Range") == f"bytes 0-1999/{len(MID)}", r
    r = get(hx, port, "/range-ignored", ae_range)
    assert_identity(r, MID)
    # An HTTP/1.0 client that keeps its connection gets the bytes as they are (a compressed
    # body's length is not known before its end; see test_http10_compressed_until_close).
    r = get(hx, port, "/length", [("Accept-Encoding", "gzip"), ("Connection", "keep-alive")],
            version="HTTP/1.0")
    assert_identity(r, BIG)


def test_listener_without_gzip_does_not_compress(slbd, hx):  # noqa: F811
    rb = hx.raw_backend("gz", site_handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "plain", "g")
    r = get(hx, port, "/length")
    assert_identity(r, BIG)
    assert r.header("Content-Length") == str(len(BIG)), r


def test_vary_and_etag(slbd, hx, port):  # noqa: F811
    r = get(hx, port, "/mid")
    assert_compressed(r, MID)
    assert r.header("ETag") == 'W/"v1"', r
    assert r.all("Vary") == ["Cookie, Accept-Encoding"], r
    r = get(hx, port, "/weak")
    assert_compressed(r, MID)
    assert r.header("ETag") == 'W/"v2"', r
    assert r.all("Vary") == ["accept-encoding"], r
    r = get(hx, port, "/varystar")
    assert r.header("Content-Encoding") == "gzip" and r.all("Vary") == ["*"], r
    assert gzip.decompress(r.body) == MID
    r = get(hx, port, "/length")
    assert r.all("Vary") == ["Accept-Encoding"], r


def test_gzip_types(slbd, hx):  # noqa: F811
    """gzip_types replaces the default list: here only image/png is compressed."""
    port = site(slbd, hx, gzip_types=["image/png", "application/*+json"])
    r = get(hx, port, "/png")
    assert_compressed(r, PNGISH)
    assert_identity(get(hx, port, "/mid"), MID)


def test_keep_alive_and_pipelining_after_compressed_responses(slbd, hx, port):  # noqa: F811
    c = hx.connect(port)
    ae = [("Accept-Encoding", "gzip")]
    c.send(b"".join(build_request("GET", p, ae, host="localhost")
                    for p in ("/chunked", "/mid", "/png", "/length", "/small-chunked")))
    assert_compressed(c.read_response(timeout=30), BIG)
    assert_compressed(c.read_response(timeout=30), MID)
    assert_identity(c.read_response(timeout=30), PNGISH)
    assert_compressed(c.read_response(timeout=30), BIG)
    assert_compressed(c.read_response(timeout=30), b"tiny but chunked")
    c.close()


def test_slow_reader_gets_every_byte(slbd, hx, port):  # noqa: F811
    """A client that reads slowly: the compressed stream waits for it (bounded buffers) and
    still decompresses to the backend's bytes."""
    s = hx.socket(port, timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(build_request("GET", "/chunked", [("Accept-Encoding", "gzip")], host="localhost"))
    time.sleep(1)
    r = HttpConn(s).read_response(timeout=60)
    assert_compressed(r, BIG)


def test_metering_counts_the_bytes_the_client_received(slbd, hx, port):  # noqa: F811
    c = CountingSocket(hx.socket(port))
    conn = HttpConn(c)
    conn.send(build_request("GET", "/length", [("Accept-Encoding", "gzip")], host="localhost"))
    r = conn.read_response(timeout=30)
    assert_compressed(r, BIG)
    conn.send(build_request("GET", "/chunked", [("Accept-Encoding", "gzip"),
                                                ("Connection", "close")], host="localhost"))
    r = conn.read_response(timeout=30)
    assert_compressed(r, BIG)
    assert conn.read_to_eof() == b""
    c.close()
    ls = settle(slbd, "web")
    assert ls["payload_bytes"]["out"] == c.received, (ls, c.received)
    assert ls["wire_bytes"]["out"] == c.received, (ls, c.received)
    assert c.received < len(BIG)  # two compressed bodies of BIG
    doc = scrape(slbd)
    assert doc.value("slbd_listener_gzip_responses_total", listener="web") == 2
    assert doc.value("slbd_listener_gzip_bytes_in_total", listener="web") == 2 * len(BIG)
    gz_out = doc.value("slbd_listener_gzip_bytes_out_total", listener="web")
    assert 0 < gz_out < c.received, gz_out


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_config_exported_and_validated(slbd, hx):  # noqa: F811
    site(slbd, hx)
    st, js = slbd.api.get("/v1/config")
    assert st == 200
    lis = [x for x in js["listeners"] if x["name"] == "web"][0]
    assert lis["gzip"] is True
    assert "text/*" in lis["gzip_types"] and "application/json" in lis["gzip_types"]
    st, js = slbd.api.put("/v1/listeners/web", {**lis, "gzip_types": ["text/html", "Text/CSS"]})
    assert st == 400, js
    assert js["error"]["code"] == "invalid_value", js
    assert js["error"]["where"].endswith("gzip_types[1]"), js
    st, js = slbd.api.put("/v1/listeners/web", {**lis, "gzip": "yes"})
    assert st == 400 and js["error"]["where"].endswith("gzip"), js


# --------------------------------------------------------------------------------------------
# HTTP/2
# --------------------------------------------------------------------------------------------


def read_chunked_with_trailers(c, timeout=30):
    """A response whose body is chunked, read off a raw connection: (head bytes, body,
    trailer lines). What follows stays in the connection."""
    head = c.read_until(b"\r\n\r\n", timeout=timeout)
    assert b"chunked" in head.lower(), head
    body = bytearray()
    while True:
        size = int(c.read_until(b"\r\n", timeout=timeout).split(b";")[0], 16)
        if size == 0:
            break
        body += c.read_exact(size, timeout=timeout)
        assert c.read_exact(2, timeout=timeout) == b"\r\n"
    trailers = []
    while (line := c.read_until(b"\r\n", timeout=timeout)) != b"\r\n":
        trailers.append(line[:-2].decode("latin-1"))
    return head, bytes(body), trailers


def test_trailers_follow_the_last_compressed_chunk(slbd, hx):  # noqa: F811
    """A chunked backend response's trailer section reaches an HTTP/1.1 client after the
    last chunk of the compressed body, as it is; the connection goes on after it."""
    port = site(slbd, hx)
    c = hx.connect(port)
    for _ in range(2):
        c.send(build_request("GET", "/trailers", [("Accept-Encoding", "gzip"), ("TE", "trailers")],
                             host="localhost"))
        head, body, trailers = read_chunked_with_trailers(c)
        assert b"content-encoding: gzip" in head.lower(), head
        assert gzip.decompress(body) == MID
        assert trailers == ["X-Checksum: abc123", "Server-Timing: db;dur=53"], trailers
    # Uncompressed (no Accept-Encoding), the re-chunked body carries them the same way.
    c.send(build_request("GET", "/trailers", [("TE", "trailers")], host="localhost"))
    head, body, trailers = read_chunked_with_trailers(c)
    assert b"content-encoding" not in head.lower() and body == MID, head
    assert trailers == ["X-Checksum: abc123", "Server-Timing: db;dur=53"], trailers
    # A chunked backend body without trailers still ends with an empty trailer section.
    assert_compressed(c.request("GET", "/chunked", [("Accept-Encoding", "gzip")], timeout=30,
                                host="localhost"), BIG)
    c.close()


def test_curl_compressed_trailers(slbd, hx, workdir):  # noqa: F811
    require_tool("curl", "curl")
    port = site(slbd, hx)
    out = workdir / "curl-trailers"
    p = subprocess.run(["curl", "-sS", "--compressed", "-H", "TE: trailers", "-D", "-", "-o",
                        str(out), f"http://127.0.0.1:{port}/trailers"], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    head = p.stdout.decode("latin-1").lower()
    assert "content-encoding: gzip" in head, head
    assert "x-checksum: abc123" in head and "server-timing: db;dur=53" in head, head
    assert out.read_bytes() == MID


def test_http10_compressed_until_close(slbd, hx):  # noqa: F811
    """An HTTP/1.0 client whose connection closes after the response gets it compressed,
    without Transfer-Encoding or Content-Length, ended by the close; whatever the backend's
    framing (the trailers of a chunked one are dropped with the framing)."""
    port = site(slbd, hx)
    for path in ("/length", "/chunked", "/close", "/trailers", "/small-chunked"):
        r = get(hx, port, path, [("Accept-Encoding", "gzip")], version="HTTP/1.0")
        assert r.status == 200 and r.header("Content-Encoding") == "gzip", (path, r)
        assert r.header("Transfer-Encoding") is None and r.header("Content-Length") is None, r
        assert (r.header("Connection") or "").lower() == "close", r
        assert "accept-encoding" in (", ".join(r.all("Vary"))).lower(), r
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert d.decompress(r.body) == backend_body(path), path
        assert d.eof and d.unused_data == b"", path
    # Not asking for gzip: the bytes as they are.
    r = get(hx, port, "/length", [], version="HTTP/1.0")
    assert_identity(r, BIG)
    # Keeping the connection: identity with its length, and the connection serves again.
    c = hx.connect(port)
    for _ in range(2):
        r = c.request("GET", "/mid", [("Accept-Encoding", "gzip"), ("Connection", "keep-alive")],
                      timeout=30, host="localhost", version="HTTP/1.0")
        assert_identity(r, MID)
        assert r.header("Content-Length") == str(len(MID)), r
    c.close()


def h2_site(slbd, hx, pki):  # noqa: F811
    rb = hx.raw_backend("gz", site_handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    return https_listener(slbd, "h2", "g", cid, gzip=True)


@pytest.fixture
def h2c(slbd, hx, pki):  # noqa: F811
    """An HTTP/2 client of h2_site(), closed at the end (again: closing twice is harmless)."""
    c = LibH2.connect(h2_site(slbd, hx, pki), client_context(pki), track=hx.track)
    yield c
    c.close()


def test_h2_bodies_decompress_to_the_backend_bytes(slbd, hx, pki, h2c):  # noqa: F811
    ae = [("accept-encoding", "gzip, deflate, br")]
    for path in ("/length", "/chunked", "/close", "/small-chunked", "/mid"):
        s = h2c.get(path, timeout=60, headers=ae)
        assert s.status == 200 and s.ended and s.reset is None, s
        assert s.header("content-encoding") == "gzip", s
        assert s.header("content-length") is None, s
        assert "accept-encoding" in ", ".join(s.all("vary")).lower(), s
        assert gzip.decompress(bytes(s.data)) == backend_body(path), path
    s = h2c.get("/mid", headers=ae)
    assert s.header("etag") == 'W/"v1"' and s.all("vary") == ["Cookie, Accept-Encoding"], s


def test_h2_trailers_follow_the_compressed_body(slbd, hx, pki, h2c):  # noqa: F811
    """Over HTTP/2 the backend's trailers come as a trailing HEADERS after the compressed
    DATA."""
    s = h2c.get("/trailers", timeout=30, headers=[("accept-encoding", "gzip"), ("te", "trailers")])
    assert s.status == 200 and s.ended and s.reset is None, s
    assert s.header("content-encoding") == "gzip", s
    assert gzip.decompress(bytes(s.data)) == MID
    assert s.trailers == [("x-checksum", "abc123"), ("server-timing", "db;dur=53")], s.trailers


def test_h2_exclusions_are_not_compressed(slbd, hx, pki, h2c):  # noqa: F811
    ae = [("accept-encoding", "gzip")]
    for path in ("/small", "/png", "/encoded", "/no-transform", "/events"):
        s = h2c.get(path, timeout=30, headers=ae)
        assert s.status == 200 and s.header("content-encoding") != "gzip", s
        assert bytes(s.data) == backend_body(path), path
    s = h2c.get("/length", timeout=30)  # no accept-encoding
    assert s.header("content-encoding") is None and bytes(s.data) == BIG, s
    s = h2c.get("/length", timeout=30, headers=[("accept-encoding", "gzip;q=0")])
    assert s.header("content-encoding") is None and bytes(s.data) == BIG, s
    s = h2c.wait_stream(h2c.request("HEAD", "/length", headers=ae))
    assert s.status == 200 and s.header("content-encoding") is None, s
    s = h2c.get("/range", headers=ae + [("range", "bytes=0-1999")])
    assert s.status == 206 and s.header("content-encoding") is None, s
    assert bytes(s.data) == MID[:2000]
    s = h2c.get("/notmodified", headers=ae)
    assert s.status == 304 and s.header("content-encoding") is None, s


def test_h2_curl_compressed(slbd, hx, pki, workdir):  # noqa: F811
    port = h2_site(slbd, hx, pki)
    for path in ("/length", "/chunked", "/close"):
        r = curl(port, pki, path, workdir, args=("--compressed",), timeout=60)
        assert r.version == "2" and r.status == 200, r
        assert "content-encoding: gzip" in [x.lower() for x in r.header_lines], r.header_lines
        assert r.body == backend_body(path), path


def test_h2_metering_and_counters(slbd, hx, pki, h2c):  # noqa: F811
    s = h2c.get("/chunked", timeout=60, headers=[("accept-encoding", "gzip")])
    assert gzip.decompress(bytes(s.data)) == BIG
    h2c.close()
    ls = settle(slbd, "h2")
    # The payload counts what went to the client: far less than the backend's body.
    assert len(s.data) < ls["payload_bytes"]["out"] < len(BIG) // 2, ls
    doc = scrape(slbd)
    assert doc.value("slbd_listener_gzip_responses_total", listener="h2") == 1
    assert doc.value("slbd_listener_gzip_bytes_in_total", listener="h2") == len(BIG)
    assert doc.value("slbd_listener_gzip_bytes_out_total", listener="h2") == len(s.data)


def test_decompressor_agrees_with_zlib_stream_end(slbd, hx, port):  # noqa: F811
    """The stream ends with a proper gzip trailer (CRC and length): zlib reports its end and
    nothing follows it."""
    r = get(hx, port, "/chunked")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert d.decompress(r.body) == BIG
    assert d.eof and d.unused_data == b""


def cutting_handler(conn, backend):
    """Promises BIG with a Content-Length, sends a part of it and closes."""
    if conn.read_head():
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: " +
                     str(len(BIG)).encode() + b"\r\n\r\n" + BIG[:200_000])


def test_a_cut_backend_body_never_looks_complete(slbd, hx, pki):  # noqa: F811
    """The backend closes in the middle of its body: the HTTP/1.1 client's chunked stream has
    no last chunk, the HTTP/2 stream is reset; neither gets a whole gzip stream."""
    rb = hx.raw_backend("cut", cutting_handler)
    slbd.add_group("g", [rb.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g", gzip=True)
    c = hx.connect(port)
    c.send(build_request("GET", "/", [("Accept-Encoding", "gzip")], host="localhost"))
    with pytest.raises((AssertionError, h.HarnessError)):
        c.read_response(timeout=20)  # the connection ends before the last chunk
    # HTTP/1.0, where the close ends the compressed body: the cut is a reset (which may also
    # discard what the client had not read yet), never an orderly close.
    c = hx.connect(port)
    c.send(build_request("GET", "/", [("Accept-Encoding", "gzip")], host="localhost",
                         version="HTTP/1.0"))
    with pytest.raises(ConnectionEnded) as ended:
        c.read_to_eof(timeout=20)
    assert ended.value.how == "reset", ended.value
    head, _, body = ended.value.partial.partition(b"\r\n\r\n")
    if body:
        assert b"content-encoding: gzip" in head.lower(), head
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        d.decompress(body)
        assert not d.eof
    cid = upload_server(slbd, pki, "server")
    port2 = https_listener(slbd, "h2", "g", cid, gzip=True)
    c2 = LibH2.connect(port2, client_context(pki), track=hx.track)
    s = c2.get("/", timeout=20, headers=[("accept-encoding", "gzip")])
    assert s.reset is not None and not s.ended, s
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    d.decompress(bytes(s.data))
    assert not d.eof
