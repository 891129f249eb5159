# SPDX-License-Identifier: Apache-2.0
"""HTTP helpers shared by the http/https end-to-end tests: a raw HTTP/1.1 client over plain or
TLS sockets that shows exactly what slbd sent, recording echo backends, scriptable raw Python
backends, listener helpers and the `hx` fixture that owns them all (standard library only)."""

import json
import os
import selectors
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import slbd_harness as h

CRLF = b"\r\n"


# --------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------


def build_request(method="GET", target="/", headers=None, body=b"", host="example.test",
                  version="HTTP/1.1", content_length=True):
    """Request bytes. headers is a list of (name, value) pairs sent as given; Host comes first
    unless host is None; Content-Length is added for a body unless the headers frame it."""
    lines = [f"{method} {target} {version}".encode()]
    hdrs = list(headers or [])
    if host is not None:
        lines.append(b"Host: " + host.encode())
    names = {n.lower() for n, _ in hdrs}
    if isinstance(body, str):
        body = body.encode()
    if body and content_length and "content-length" not in names and \
            "transfer-encoding" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    for n, v in hdrs:
        lines.append((n.encode() if isinstance(n, str) else n) + b": " +
                     (v.encode() if isinstance(v, str) else v))
    return CRLF.join(lines) + CRLF + CRLF + body


def chunked(body, size=65536):
    """body in the chunked transfer coding, chunks of at most size bytes."""
    out = bytearray()
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + CRLF
    out += b"0\r\n\r\n"
    return bytes(out)


class Response:
    """One parsed response: status, reason, headers as (name, value) pairs in order, body,
    the interim (1xx) responses that preceded it and the raw head bytes."""

    def __init__(self, status, reason, headers, body, raw_head, interim=()):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.raw_head = raw_head
        self.interim = list(interim)

    def header(self, name):
        """The first value of header name (case-insensitive), or None."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.raw_head[:400]!r} body {self.body[:200]!r}>"


class ConnectionEnded(AssertionError):
    """The peer closed (or reset) the connection before a complete response."""

    def __init__(self, how, partial):
        super().__init__(f"connection ended ({how}) after {bytes(partial[:300])!r}")
        self.how = how
        self.partial = bytes(partial)


class HttpConn:
    """A client connection (plain or TLS) with a read buffer, so pipelined responses and the
    bytes after a 101 are kept for the next read."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    # --- bytes ---

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Read once more into the buffer. False at EOF; a reset raises ConnectionEnded."""
        if self.eof:
            return False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.HarnessError(f"no data before the deadline (buffer: "
                                     f"{bytes(self.buf[:300])!r})")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ssl.SSLWantReadError:
                continue
            except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as e:
                raise ConnectionEnded("reset", self.buf) from e
            except ssl.SSLError as e:
                raise ConnectionEnded(f"tls error {e}", self.buf) from e
            if not chunk:
                self.eof = True
                return False
            self.buf += chunk
            return True

    def _deadline(self, timeout):
        return time.monotonic() + h.scaled(timeout)

    def read_until(self, marker, timeout=10, deadline=None):
        deadline = deadline or self._deadline(timeout)
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[:i + len(marker)])
                del self.buf[:i + len(marker)]
                return out
            if not self._fill(deadline):
                raise ConnectionEnded("eof", self.buf)

    def read_exact(self, n, timeout=10, deadline=None):
        deadline = deadline or self._deadline(timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionEnded("eof", self.buf)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_eof(self, timeout=10, deadline=None):
        deadline = deadline or self._deadline(timeout)
        while self._fill(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    # --- HTTP ---

    def read_head(self, deadline):
        raw = self.read_until(b"\r\n\r\n", deadline=deadline)
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise AssertionError(f"not an HTTP/1.x status line: {lines[0]!r}")
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = []
        for ln in lines[1:]:
            name, _, value = ln.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return status, reason, headers, raw

    def read_response(self, method="GET", timeout=10):
        """The next final response (1xx interim responses are collected in .interim; a 101 is
        final and its body is whatever follows, left in the buffer)."""
        deadline = self._deadline(timeout)
        interim = []
        while True:
            status, reason, headers, raw = self.read_head(deadline)
            if 100 <= status < 200 and status != 101:
                interim.append((status, reason, headers))
                continue
            break
        resp = Response(status, reason, headers, b"", raw, interim)
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if method == "HEAD" or status in (101, 204, 304):
            return resp
        if "chunked" in te:
            resp.body = self._read_chunked(deadline)
        elif cl is not None:
            resp.body = self.read_exact(int(cl), deadline=deadline)
        else:
            resp.body = self.read_to_eof(deadline=deadline)
        return resp

    def _read_chunked(self, deadline):
        body = bytearray()
        while True:
            line = self.read_until(b"\r\n", deadline=deadline)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while self.read_until(b"\r\n", deadline=deadline) != b"\r\n":
                    pass
                return bytes(body)
            body += self.read_exact(size, deadline=deadline)
            if self.read_exact(2, deadline=deadline) != CRLF:
                raise AssertionError("chunk data not followed by CRLF")

    def request(self, method="GET", target="/", headers=None, body=b"", timeout=10, **kw):
        self.send(build_request(method, target, headers, body, **kw))
        return self.read_response(method, timeout=timeout)

    def closed(self, timeout):
        """"eof" or "reset" when the peer ends the connection within timeout seconds (not
        scaled), None when it is still open. Buffered bytes are discarded."""
        self.buf.clear()
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                self.buf.clear()
            return "eof"
        except ConnectionEnded as e:
            return "reset" if e.how == "reset" else "eof"
        except h.HarnessError:
            return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def response_or_end(conn, method="GET", timeout=10):
    """A response, or the string "eof"/"reset" when the connection ends without one."""
    try:
        return conn.read_response(method, timeout=timeout)
    except ConnectionEnded as e:
        if e.partial:
            raise
        return e.how if e.how in ("eof", "reset") else "reset"


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


class HttpBackend(h.EchoBackend):
    """echo-backend in http mode, optionally with --record FILE (every byte received appended,
    so a test can assert exactly what reached the backend)."""

    def __init__(self, workdir, name, record=False, **kw):
        super().__init__(workdir, name, mode="http", **kw)
        self.record_path = Path(workdir) / f"backend-{name}.record" if record else None

    def _try_start(self):
        if self.record_path is None:
            return super()._try_start()
        # EchoBackend has no --record option; start the process the same way with it added.
        argv = [h.binary("echo-backend"), "--listen", f"127.0.0.1:{self.port}", "--name",
                self.name, "--mode", "http", "--record", self.record_path]
        if self.delay_ms:
            argv += ["--delay-ms", str(self.delay_ms)]
        with open(self.stderr_path, "ab") as err:
            self.proc = h._spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=err)
        deadline = time.monotonic() + h.scaled(10)
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise h.HarnessError(f"echo-backend {self.name} printed no 'ready'")
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    self.proc.wait(5)
                    return False  # the port was taken meanwhile: start() tries another
                line += b
        if line.strip() != b"ready":
            self.kill()
            raise h.HarnessError(f"echo-backend {self.name} said {line!r}")
        return True

    def recorded(self):
        try:
            return self.record_path.read_bytes()
        except FileNotFoundError:
            return b""

    def clear_record(self):
        if self.record_path is not None:
            self.record_path.write_bytes(b"")


class RawBackend:
    """A scriptable backend on 127.0.0.1: handler(sock, backend) runs in a thread per accepted
    connection; everything received is kept in .received (per connection)."""

    def __init__(self, name, handler):
        self.name = name
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):
            self.port = h.free_port()
            try:
                self.sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                continue
        self.sock.listen(128)
        self.accepted = 0
        self.received = []
        self._conns = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def server(self, weight=100):
        return {"address": "127.0.0.1", "port": self.port, "weight": weight}

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(c)
                rec = bytearray()
                self.received.append(rec)
            threading.Thread(target=self._run, args=(c, rec), daemon=True).start()

    def _run(self, c, rec):
        try:
            self.handler(RawConn(c, rec), self)
        except (OSError, AssertionError, h.HarnessError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            # shutdown first: close() alone does not end a socket that a handler thread is
            # blocked on in recv(), so slbd would never see the EOF.
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass


class RawConn:
    """The backend side of one connection: reads keep a record of every byte."""

    def __init__(self, sock, record):
        self.sock = sock
        self.record = record
        self.buf = bytearray()
        sock.settimeout(h.scaled(20))

    def recv_some(self):
        chunk = self.sock.recv(65536)
        self.record += chunk
        return chunk

    def read_head(self):
        """Bytes up to and including the blank line; b"" at EOF first."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.recv_some()
            if not chunk:
                return b""
            self.buf += chunk
        i = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:i])
        del self.buf[:i]
        return head

    def sendall(self, data):
        self.sock.sendall(data)

    def close(self):
        self.sock.close()


def header_value(head, name):
    """The value of header name in a raw request/response head, or None."""
    for ln in head.split(b"\r\n")[1:]:
        n, _, v = ln.partition(b":")
        if n.strip().lower() == name.lower().encode():
            return v.strip().decode("latin-1")
    return None

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def rst_close(conn):
    """Reset the backend side of a raw-backend connection (SO_LINGER 0, then close)."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.sock.close()


def flood_then_reset(flooded):
    """A Scripted fault: a close-delimited 200, then body bytes until nothing more can be sent
    for a second (every buffer up to a client that does not read is full), then a reset;
    sets the event `flooded` after the reset."""
    def fault(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        conn.sock.settimeout(h.scaled(1))
        try:
            while True:
                conn.sock.send(b"x" * 65536)
        except (socket.timeout, OSError):
            pass
        rst_close(conn)
        flooded.set()
    return fault


def reset_mid_length(conn):
    """A Scripted fault: the head and 1,000 of 100,000 announced body bytes, then a reset."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    time.sleep(0.2)
    rst_close(conn)


def reset_mid_chunked(conn):
    """A Scripted fault: the head and one chunk of a chunked body, then a reset."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" +
                 b"x" * 1000 + b"\r\n")
    time.sleep(0.2)
    rst_close(conn)


class Scripted:
    """A raw backend that answers by request path: a path in `faults` runs fault(conn), which
    ends the connection unless it returns True; any other path gets a 200 "ok" on a
    kept-alive connection."""

    def __init__(self, hx, faults):
        self.faults = faults
        self.raw = hx.raw_backend("scripted", self.handle)

    def server(self):
        return self.raw.server()

    def handle(self, conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            path = head.split(b" ", 2)[1].decode()
            if path in self.faults:
                if not self.faults[path](conn):
                    return
                continue
            conn.sendall(OK_RESPONSE)


def cookie_setter(name):
    """A raw-backend handler that answers every request with Set-Cookie
    `JSESSIONID=sess-<name>` (and `other=1`) and a body "<name>|<the Cookie it got>"."""
    def handler(conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            seen = header_value(head, "Cookie") or ""
            body = f"{name}|{seen}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=sess-" + name.encode() +
                         b"; Path=/; Secure\r\nSet-Cookie: other=1\r\nContent-Length: " +
                         str(len(body)).encode() + b"\r\n\r\n" + body)
    return handler



# --------------------------------------------------------------------------------------------
# Listeners
# --------------------------------------------------------------------------------------------


def add_listener(slbd, name, group, protocol="http", bind_host="127.0.0.1", **extra):
    """Create an http/https listener on a free port and return the port (another port is tried
    when the chosen one was taken meanwhile)."""
    for _ in range(5):
        port = h.free_port(bind_host)
        body = {"name": name, "protocol": protocol, "bind": f"{bind_host}:{port}", **extra}
        if group is not None:
            body["backend_group"] = group
        st, js = slbd.api.post("/v1/listeners", body)
        if st == 201:
            return port
        if (js or {}).get("error", {}).get("code") != "bind_failed":
            raise h.HarnessError(f"POST /v1/listeners {name}: {st} {js}")
    raise h.HarnessError(f"POST /v1/listeners {name}: no bindable port")


def put_listener(slbd, name, body):
    st, js = slbd.api.put(f"/v1/listeners/{name}", body)
    if st != 200:
        raise h.HarnessError(f"PUT /v1/listeners/{name}: {st} {js}")
    return js


def get_listener(slbd, name):
    st, js = slbd.api.get(f"/v1/listeners/{name}")
    if st != 200:
        raise h.HarnessError(f"GET /v1/listeners/{name}: {st} {js}")
    return js


def metrics(slbd):
    r = slbd.api.request("GET", "/metrics")
    assert r.status == 200, r
    return h.parse_metrics(r.text)


def listener_stats(slbd, name):
    for x in slbd.stats().get("listeners", []):
        if x.get("name") == name:
            return x
    return None


# --------------------------------------------------------------------------------------------
# TLS clients
# --------------------------------------------------------------------------------------------


def client_context(cafile=None, cert=None, key=None, minimum=None, maximum=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile)
        ctx.check_hostname = False  # tests pick names freely; the chain is still verified
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


# --------------------------------------------------------------------------------------------
# The per-test toolkit
# --------------------------------------------------------------------------------------------


class HttpKit:
    """Backends and client connections of one test. Everything is closed when the test ends,
    before slbd's post-test checks, so pooled backend connections see EOF and are closed by
    slbd instead of being counted as leaked descriptors."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self._backends = []
        self._raw = []
        self._conns = []
        self._socks = []
        self._lock = threading.Lock()

    def backend(self, name, record=False, **kw):
        b = HttpBackend(self.workdir, name, record=record, **kw)
        self._backends.append(b)
        return b.start()

    def raw_backend(self, name, handler):
        b = RawBackend(name, handler)
        self._raw.append(b)
        return b

    def track(self, sock):
        with self._lock:
            self._socks.append(sock)
        return sock

    def socket(self, port, host="127.0.0.1", source=None, timeout=10):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.track(s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            s.bind((source, 0))
        s.settimeout(h.scaled(timeout))
        s.connect((host, port))
        return s

    def connect(self, port, host="127.0.0.1", source=None, timeout=10):
        c = HttpConn(self.socket(port, host, source, timeout))
        with self._lock:
            self._conns.append(c)
        return c

    def tls_connect(self, port, ctx, server_hostname=None, session=None, host="127.0.0.1",
                    timeout=10):
        s = self.socket(port, host, timeout=timeout)
        t = ctx.wrap_socket(s, server_hostname=server_hostname, session=session)
        self.track(t)
        c = HttpConn(t)
        with self._lock:
            self._conns.append(c)
        return c

    def get(self, port, target="/", headers=None, **kw):
        """One request on a fresh plain connection (closed afterwards)."""
        c = self.connect(port)
        try:
            return c.request("GET", target, headers, **kw)
        finally:
            c.close()

    def close(self):
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        for b in self._raw:
            b.close()
        for b in self._backends:
            b.kill()


@pytest.fixture
def hx(slbd_factory, workdir):
    """The HTTP toolkit of one test (see HttpKit). Depends on slbd_factory so that it is torn
    down before the daemons are checked."""
    kit = HttpKit(workdir)
    yield kit
    kit.close()
