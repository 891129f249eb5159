# SPDX-License-Identifier: Apache-2.0
"""Clients that count every byte their TCP socket sends and receives (plain, and TLS through
ssl.MemoryBIO so the handshake, records, tickets and alerts are all seen), plus helpers that
read slbd's counters from /v1/stats and /metrics once they have settled (standard library)."""

import json
import os
import socket
import ssl
import subprocess
import threading
import time
import warnings

import http_util
import promparse
import slbd_harness as h

# --------------------------------------------------------------------------------------------
# Counting clients
# --------------------------------------------------------------------------------------------


class CountingSocket:
    """A plain TCP client socket that counts the bytes the kernel took (sent) and gave
    (received). Offers what http_util.HttpConn uses (sendall, recv, settimeout, close)."""

    def __init__(self, sock):
        self.sock = sock
        self.sent = 0
        self.received = 0

    def sendall(self, data):
        self.sock.sendall(data)
        self.sent += len(data)

    def recv(self, n):
        data = self.sock.recv(n)
        self.received += len(data)
        return data

    def settimeout(self, t):
        self.sock.settimeout(t)

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def read_to_eof(self, timeout=10):
        """Everything until the peer's FIN (counted)."""
        deadline = time.monotonic() + h.scaled(timeout)
        out = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.HarnessError(f"no EOF before the deadline ({len(out)} bytes read)")
            self.sock.settimeout(left)
            try:
                chunk = self.recv(1 << 20)
            except socket.timeout:
                continue
            if not chunk:
                return bytes(out)
            out += chunk

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class MeteredTls:
    """A TLS client over a plain TCP socket, driven through ssl.MemoryBIO/SSLObject so that
    `sent` and `received` are exactly the bytes the socket carried (ClientHello, handshake
    flights, NewSessionTicket, records, alerts, close_notify) and `plain_sent` /
    `plain_received` the application bytes. recv() returns b"" once the peer's close_notify
    (or a bare EOF, see .close_notify) arrived; http_util.HttpConn can read over it."""

    def __init__(self, sock, ctx, server_hostname=None, session=None):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=False,
                                server_hostname=server_hostname, session=session)
        self.sent = 0
        self.received = 0
        self.plain_sent = 0
        self.plain_received = 0
        self.sock_eof = False  # the peer's FIN was read
        self.close_notify = False  # the peer's close_notify was read
        self.tls_eof = False  # no more application data will come (close_notify or bare EOF)
        self._timeout = h.scaled(10)

    @classmethod
    def connect(cls, port, ctx, server_hostname="localhost", session=None, host="127.0.0.1",
                timeout=10, track=None, handshake=True):
        s = socket.create_connection((host, port), timeout=h.scaled(timeout))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if track is not None:
            track(s)
        c = cls(s, ctx, server_hostname=server_hostname, session=session)
        if handshake:
            c.handshake(timeout)
        return c

    # --- socket level ---

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)
            self.sent += len(data)

    def _fill(self):
        """Move one socket read into the incoming BIO; False at EOF. Honours settimeout()."""
        if self.sock_eof:
            return False
        self.sock.settimeout(self._timeout)
        data = self.sock.recv(1 << 16)
        if not data:
            self.sock_eof = True
            self.inc.write_eof()
            return False
        self.received += len(data)
        self.inc.write(data)
        return True

    # --- TLS ---

    def handshake(self, timeout=10):
        deadline = time.monotonic() + h.scaled(timeout)
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise h.HarnessError("TLS handshake did not finish before the deadline")
                self._timeout = left
                self._fill()  # at EOF the next do_handshake raises what OpenSSL makes of it
                continue
            except ssl.SSLError:
                self._flush()  # our alert goes out, as a real client's would
                raise
            self._flush()
            return

    def handshake_step(self):
        """Send what the handshake has to send now (the ClientHello first) without waiting:
        for tests that leave a handshake half done."""
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def sendall(self, data):
        if isinstance(data, str):
            data = data.encode()
        view = memoryview(data)
        while view:
            n = self.obj.write(view)
            self.plain_sent += n
            view = view[n:]
            self._flush()

    def settimeout(self, t):
        self._timeout = t

    def recv(self, n):
        """Up to n plaintext bytes; b"" at the end of the TLS stream. socket.timeout when the
        timeout set by settimeout() passes without data."""
        while True:
            if self.tls_eof:
                return b""
            try:
                data = self.obj.read(n)
            except ssl.SSLWantReadError:
                self._flush()
                self._fill()  # at EOF the next read reports it
                continue
            except ssl.SSLZeroReturnError:
                self.close_notify = True
                self.tls_eof = True
                return b""
            except ssl.SSLEOFError:
                self.tls_eof = True
                return b""
            self._flush()  # post-handshake messages may need an answer (none in practice)
            if not data:
                # Python's SSLObject.read returns b"" (rather than raising) once the peer's
                # close_notify arrived; a bare EOF raises SSLEOFError above.
                self.close_notify = True
                self.tls_eof = True
                return b""
            self.plain_received += len(data)
            return data

    def pending(self):
        return self.obj.pending()

    def read_rest(self, timeout=10):
        """Plaintext until the end of the TLS stream, then the socket until EOF: afterwards
        `received` holds every byte the peer sent on this connection."""
        deadline = time.monotonic() + h.scaled(timeout)
        out = bytearray()
        while not (self.tls_eof and self.sock_eof):
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.HarnessError(f"no EOF before the deadline (tls_eof {self.tls_eof}, "
                                     f"socket eof {self.sock_eof})")
            self._timeout = left
            if not self.tls_eof:
                out += self.recv(1 << 16)
            else:
                # Bytes after close_notify are still wire bytes; none are expected.
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(1 << 16)
                except ConnectionResetError:
                    raise h.HarnessError("connection reset after close_notify")
                if not data:
                    self.sock_eof = True
                else:
                    self.received += len(data)
                    self.inc.write(data)
        return bytes(out)

    def drain_socket(self, timeout=10):
        """Read (and count) the socket until the peer's FIN or reset, whatever the TLS state:
        after a failed or abandoned handshake. Returns "eof" or "reset"."""
        deadline = time.monotonic() + h.scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.HarnessError("the peer did not close the connection in time")
            self._timeout = left
            try:
                if not self._fill():
                    return "eof"
            except socket.timeout:
                continue
            except ConnectionResetError:
                return "reset"

    def shutdown(self, timeout=10):
        """A clean bidirectional close: our close_notify, then the peer's and its FIN."""
        try:
            self.obj.unwrap()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            pass
        self._flush()
        rest = self.read_rest(timeout)
        return rest

    @property
    def session(self):
        return self.obj.session

    @property
    def session_reused(self):
        return self.obj.session_reused

    def version(self):
        return self.obj.version()

    def wire(self):
        return {"in": self.sent, "out": self.received}

    def payload(self):
        return {"in": self.plain_sent, "out": self.plain_received}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tls_request(port, ctx, target="/", body=b"", session=None, track=None, timeout=10):
    """One request with Connection: close over a MeteredTls client, read to the end (the
    response, slbd's close_notify and its FIN). Returns (client, response); the client's
    counters then hold everything its socket carried."""
    c = MeteredTls.connect(port, ctx, session=session, track=track, timeout=timeout)
    conn = http_util.HttpConn(c)
    conn.send(request_bytes("POST" if body else "GET", target, body=body, close=True))
    resp = conn.read_response("POST" if body else "GET", timeout=timeout)
    rest = bytes(conn.buf) + c.read_rest(timeout)
    if rest:
        raise h.HarnessError(f"bytes after the response: {rest[:200]!r}")
    if not c.close_notify:
        raise h.HarnessError("slbd closed the TLS connection without close_notify")
    c.close()
    return c, resp


def tls_client_context(pki, version=None, cert=None, ciphers=None, seclevel0=False):
    """A client context trusting the test root. version pins one protocol version
    (ssl.TLSVersion); cert is a pki client certificate name; ciphers restricts TLS <= 1.2
    suites (OpenSSL syntax)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.root)
    ctx.check_hostname = False
    if version is not None:
        if seclevel0:
            # OpenSSL 3 refuses TLS 1.0/1.1 signatures at its default security level.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
            ctx.minimum_version = version
            ctx.maximum_version = version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(*pki.client_files(cert))
    return ctx


def tls_attempt(port, ctx, timeout=10, request=True):
    """One connection with the standard ssl module: "ok" when a request got an answer, or
    the failure as a string. With TLS 1.3 the server rejects a client certificate after the
    client's side of the handshake is done, so the client must read to learn it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(timeout))
    try:
        t = ctx.wrap_socket(s, server_hostname="localhost", do_handshake_on_connect=False)
        try:
            t.do_handshake()
            if not request:
                return "handshake"
            t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                data += chunk
            return "ok" if data.startswith(b"HTTP/1.1 ") else f"no response: {data[:80]!r}"
        except (ssl.SSLError, OSError) as e:
            return f"failed: {e}"
        finally:
            t.close()
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def request_bytes(method="GET", target="/", body=b"", close=False, host="localhost"):
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------------------------
# Reading slbd's counters
# --------------------------------------------------------------------------------------------


def listener_stats(slbd, name):
    for x in slbd.stats().get("listeners", []):
        if x.get("name") == name:
            return x
    raise h.HarnessError(f"listener {name} is not in /v1/stats")


def _counters_of(ls):
    return (ls["connections"], ls["active"], ls["payload_bytes"]["in"],
            ls["payload_bytes"]["out"], ls["wire_bytes"]["in"], ls["wire_bytes"]["out"],
            json.dumps(ls.get("requests")), json.dumps(ls.get("handshakes")))


def settle(slbd, name, active=0, timeout=10, quiet_polls=3, interval=0.05):
    """The listener's /v1/stats entry once its connections are down to `active` and its
    counters did not change over quiet_polls consecutive polls (slbd accounts wire bytes when
    a request completes and when a connection closes, on the worker's own schedule)."""
    deadline = time.monotonic() + h.scaled(timeout)
    last, same = None, 0
    while True:
        ls = listener_stats(slbd, name)
        key = _counters_of(ls)
        if active is None or ls["active"] == active:
            same = same + 1 if key == last else 0
            if same >= quiet_polls:
                return ls
        else:
            same = 0
        last = key
        if time.monotonic() >= deadline:
            raise h.HarnessError(f"listener {name} did not settle (active {ls['active']}, "
                                 f"want {active}): {ls}")
        time.sleep(interval)


def scrape(slbd):
    """GET /metrics, parsed strictly (promparse raises on any violation)."""
    r = slbd.api.request("GET", "/metrics")
    if r.status != 200:
        raise h.HarnessError(f"GET /metrics: {r.status} {r.text[:300]}")
    ctype = r.headers.get("Content-Type", "")
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        raise h.HarnessError(f"GET /metrics: Content-Type {ctype!r}")
    return promparse.parse(r.text)


def monotonic_series(doc):
    """{series key: value} of every series that may never go down: counters, and the
    buckets, _count and _sum of histograms."""
    out = {}
    for fam in doc.families.values():
        if fam.type in ("counter", "histogram"):
            for s in fam.samples:
                out[s.key()] = s.value
    return out


def went_backwards(before, after):
    """[(series, old, new)] of series present in both whose value decreased."""
    return [(promparse.format_key(k), v, after[k]) for k, v in before.items()
            if k in after and after[k] < v]


def wait_metric(slbd, pred, timeout, what):
    """Poll /metrics until pred(doc) is truthy; returns the doc."""
    holder = {}

    def probe():
        holder["doc"] = scrape(slbd)
        return pred(holder["doc"])
    h.wait_until(probe, timeout, what, interval=0.05)
    return holder["doc"]


# --------------------------------------------------------------------------------------------
# slbctl
# --------------------------------------------------------------------------------------------


def slbctl(slbd, *args, timeout=20):
    """Run build/slbctl against slbd's admin API with the token in SLBD_TOKEN; returns the
    CompletedProcess (text)."""
    env = dict(os.environ)
    env["SLBD_TOKEN"] = slbd.api.token
    env.pop("SLBD_ADMIN", None)
    argv = [str(h.binary("slbctl")), "--admin", f"http://127.0.0.1:{slbd.admin_port}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=h.scaled(timeout),
                          env=env, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


class ConnectionBurst:
    """A thread that opens and closes connections to a port as fast as it can until stopped
    (used to make the new-connections rate visible)."""

    def __init__(self, port, payload=None):
        self.port = port
        self.payload = payload
        self.count = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    if self.payload:
                        s.sendall(self.payload)
                        s.shutdown(socket.SHUT_WR)
                        while s.recv(65536):
                            pass
                self.count += 1
            except OSError:
                self.errors += 1
                time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
