# SPDX-License-Identifier: Apache-2.0
"""Helpers of the certificate end-to-end tests: upload bodies and malformed variants of the test
PKI, extra certificates issued on demand, checks that no private key leaks, https listeners,
TLS handshakes that report the presented certificate, a new-connection load generator and
slbctl (standard library only)."""

import calendar
import hashlib
import json
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import slbd_harness as h
import http_util as hu

# make-pki.sh gives every server certificate these names, in this order.
SERVER_SANS = ["localhost", "www.example.com", "*.example.com", "127.0.0.1"]
SERVER_SANS_EXT = "DNS:localhost,DNS:www.example.com,DNS:*.example.com,IP:127.0.0.1"

_issue_lock = threading.Lock()


# --------------------------------------------------------------------------------------------
# PEM text and facts about certificates
# --------------------------------------------------------------------------------------------


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def pem_blocks(text):
    """The PEM blocks of text, each from its BEGIN line to its END line inclusive."""
    return re.findall(r"-----BEGIN [^-]+-----.*?-----END [^-]+-----\n?", text, re.S)


def leaf_fingerprint(pem_text):
    """SHA-256 of the DER of the first CERTIFICATE block (what slbd calls fingerprint_sha256),
    computed independently of slbd."""
    for b in pem_blocks(pem_text):
        if b.startswith("-----BEGIN CERTIFICATE-----"):
            return sha256_hex(ssl.PEM_cert_to_DER_cert(b))
    raise h.HarnessError("no CERTIFICATE block")


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def b64_body(pem_text):
    """The base64 characters of all blocks, headers and markers left out."""
    out = []
    for line in pem_text.splitlines():
        line = line.strip()
        if not line or line.startswith("-----") or ":" in line:
            continue
        out.append(line)
    return "".join(out)


def key_fragments(key_pem, size=20):
    """Distinctive substrings of a private key file: slices of its base64 text taken where the
    secret parts sit (PKCS#8 EC keys put the scalar near the start, RSA keys the private
    exponent and primes in the second half), as they would appear if a response or a log
    line quoted the key."""
    body = b64_body(key_pem)
    frags = []
    for start in (48, len(body) // 2, len(body) * 3 // 4):
        frag = body[start:start + size]
        if len(frag) == size:
            frags.append(frag)
    # Base64 text is also wrapped at 64 columns: a line of the file is a natural quote too.
    lines = [ln.strip() for ln in key_pem.splitlines()
             if ln.strip() and not ln.startswith("-----") and ":" not in ln]
    if len(lines) > 2:
        frags.append(lines[1][:size])
    return frags


# A key block as PEM: its BEGIN line followed by base64 data.
PEM_KEY_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(\\r|\\n|\s)*"
                           r"[A-Za-z0-9+/]{16}")


def assert_no_secret(text, keys, where, strict=True):
    """text (a response body or a log) must not contain a fragment of the given key PEMs nor a
    key block; strict also forbids the words "PRIVATE KEY" (an error message may name a
    block's type, e.g. "ENCRYPTED PRIVATE KEY", so errors are checked with strict=False)."""
    m = PEM_KEY_BLOCK.search(text)
    assert not m, f"{where} contains a PEM key block {m.group(0)!r}:\n{text[:2000]}"
    if strict:
        assert "PRIVATE KEY" not in text, f"{where} contains 'PRIVATE KEY':\n{text[:2000]}"
    for k in keys:
        for frag in key_fragments(k):
            assert frag not in text, f"{where} quotes private key material {frag!r}"


def _openssl(args, cwd=None):
    p = subprocess.run(["openssl", *[str(a) for a in args]], cwd=cwd, capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        raise h.HarnessError(f"openssl {' '.join(map(str, args))} failed:\n"
                             f"{p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


def _parse_openssl_date(s):
    """'Nov 27 06:03:00 2026 GMT' -> unix seconds."""
    return calendar.timegm(time.strptime(s.strip(), "%b %d %H:%M:%S %Y GMT"))


def cert_dates(path):
    """(not_before, not_after) of a certificate file in unix seconds, read by the openssl CLI."""
    out = _openssl(["x509", "-in", path, "-noout", "-startdate", "-enddate"])
    vals = dict(line.split("=", 1) for line in out.strip().splitlines())
    return _parse_openssl_date(vals["notBefore"]), _parse_openssl_date(vals["notAfter"])


def rfc3339(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_rfc3339(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


# --------------------------------------------------------------------------------------------
# Extra certificates issued on demand under the PKI's intermediate
# --------------------------------------------------------------------------------------------


def issue_server(pki, name, kind="ec", sans=SERVER_SANS_EXT, cn="localhost", days=3650):
    """A server certificate pki/<name>.pem + .key signed by the intermediate, made once per
    session (the PKI directory is shared). kind: "ec" (P-256), "ec384" (P-384) or "rsa" (2048
    bits)."""
    d = pki.dir
    with _issue_lock:
        if (d / f"{name}.pem").exists():
            return name
        if kind in ("ec", "ec384"):
            curve = "P-384" if kind == "ec384" else "P-256"
            _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{curve}",
                      "-out", f"{name}.key"], d)
        else:
            _openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                      f"{name}.key"], d)
        (d / f"{name}.certext").write_text(
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            f"subjectAltName = {sans}\n")
        _openssl(["req", "-new", "-key", f"{name}.key", "-subj", f"/O=SLB Test/CN={cn}",
                  "-config", d / "ca-inter" / "openssl.cnf", "-out", f"{name}.csr"], d)
        # Written next to the final name and renamed, so a concurrent reader never sees half.
        _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "inter.pem", "-CAkey",
                  "inter.key", "-CAcreateserial", "-days", str(days), "-sha256", "-extfile",
                  f"{name}.certext", "-out", f"{name}.pem.part"], d)
        os.chmod(d / f"{name}.key", 0o600)
        os.replace(d / f"{name}.pem.part", d / f"{name}.pem")
    return name


# --------------------------------------------------------------------------------------------
# Upload bodies and the admin API
# --------------------------------------------------------------------------------------------


def server_body(name, certificate, private_key, **extra):
    return {"name": name, "type": "server", "certificate": certificate,
            "private_key": private_key, **extra}


def ca_body(name, certificate, **extra):
    return {"name": name, "type": "ca", "certificate": certificate, **extra}


class RecordingApi:
    """The admin API of one slbd with every response body kept, so a test can check afterwards
    that none of them ever carried key material."""

    def __init__(self, slbd):
        self.slbd = slbd
        self.texts = []

    def request(self, method, path, body=None, **kw):
        r = self.slbd.api.request(method, path, body, **kw)
        self.texts.append((r.status, f"{method} {path} -> {r.status}\n{r.text}"))
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def ok_text(self):
        """Every 2xx response: these must not even name a private key."""
        return "\n".join(t for st, t in self.texts if 200 <= st < 300)

    def error_text(self):
        return "\n".join(t for st, t in self.texts if st >= 300)


def cert_list(slbd):
    st, js = slbd.api.get("/v1/certificates")
    if st != 200:
        raise h.HarnessError(f"GET /v1/certificates: {st} {js}")
    return js["certificates"]


def get_cert(slbd, cert_id):
    st, js = slbd.api.get(f"/v1/certificates/{cert_id}")
    if st != 200:
        raise h.HarnessError(f"GET /v1/certificates/{cert_id}: {st} {js}")
    return js


def replace_cert(api, cert_id, body, timeout=None):
    """PUT a replacement through an ApiClient; returns the resource or fails the test."""
    r = api.request("PUT", f"/v1/certificates/{cert_id}", body, timeout=timeout)
    if r.status != 200:
        raise h.HarnessError(f"PUT /v1/certificates/{cert_id}: {r.status} {r.text[:500]}")
    return r.json


def certs_dir_listing(state_dir):
    """Every name in STATE/certs, dot-files and temporary files included."""
    d = Path(state_dir) / "certs"
    return sorted(os.listdir(d)) if d.is_dir() else []


def raw_admin_request(slbd, head_lines, body=b"", send_body=True, timeout=10):
    """Send a request by hand (for bodies urllib cannot send sensibly) and return
    (status, body text). The request head is sent first and the answer read when it comes:
    slbd may answer (413) before the body arrives and close, and the body is then sent only as
    far as the socket takes it."""
    s = socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=h.scaled(timeout))
    try:
        head = "\r\n".join([*head_lines, f"Authorization: Bearer {slbd.api.token}",
                            "Connection: close", "", ""]).encode()
        s.sendall(head)
        if send_body and body:
            try:
                s.sendall(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
        data = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    text = data.decode("utf-8", "replace")
    m = re.match(r"HTTP/1\.1 (\d{3})", text)
    if not m:
        raise h.HarnessError(f"no HTTP response from the admin API: {text[:300]!r}")
    return int(m.group(1)), text.split("\r\n\r\n", 1)[-1]


# --------------------------------------------------------------------------------------------
# Listeners and TLS clients
# --------------------------------------------------------------------------------------------


def add_https_listener(slbd, name, group, cert_ids, **tls):
    """An https listener on a free port presenting cert_ids; returns the port."""
    return hu.add_listener(slbd, name, group, protocol="https",
                           tls={"certificates": list(cert_ids), **tls})


def https_setup(slbd, hx, cert_ids, name="web", **tls):
    """An http echo backend, group "g" and an https listener; returns the listener's port."""
    b = hx.backend(f"{name}-be")
    slbd.add_group("g", [b.server()], health_check=h.no_health_check())
    return add_https_listener(slbd, name, "g", cert_ids, **tls)


def verify_context(pki):
    """A client context that verifies the chain against the test root (names are not checked:
    the tests connect to 127.0.0.1 with SNI localhost)."""
    return hu.client_context(cafile=pki.root)


def tls_fingerprint(port, ctx, server_hostname="localhost", request=False, timeout=10):
    """Open a new connection, complete a TLS handshake and return the SHA-256 of the
    certificate the server presented; with request=True also send one GET with
    "Connection: close" and return (fingerprint, status)."""
    with socket.create_connection(("127.0.0.1", port), timeout=h.scaled(timeout)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(s, server_hostname=server_hostname) as t:
            fp = sha256_hex(t.getpeercert(binary_form=True))
            if not request:
                return fp
            c = hu.HttpConn(t)
            r = c.request("GET", "/", [("Connection", "close")], host="localhost",
                          timeout=timeout)
            return fp, r.status


def served_chain(port, server_name="localhost"):
    """Fingerprints of every certificate the server sends in its handshake, in order (read with
    openssl s_client -showcerts, since Python 3.11's ssl cannot show the peer's chain)."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        server_name, "-showcerts"], input=b"", capture_output=True,
                       timeout=h.scaled(20))
    out = p.stdout.decode(errors="replace")
    blocks = [b for b in pem_blocks(out) if b.startswith("-----BEGIN CERTIFICATE-----")]
    if not blocks:
        raise h.HarnessError(f"openssl s_client showed no certificate:\n{out[-2000:]}"
                             f"{p.stderr.decode(errors='replace')[-1000:]}")
    return [leaf_fingerprint(b) for b in blocks]


class MtlsResult:
    """Outcome of mtls_request: ok, response (when ok), why (when refused), the TLS session
    afterwards (for a resumption attempt) and whether this connection resumed one."""

    def __init__(self, ok, response=None, why=None, session=None, reused=False):
        self.ok = ok
        self.response = response
        self.why = why
        self.session = session
        self.reused = reused

    def __repr__(self):
        return (f"<MtlsResult ok={self.ok} reused={self.reused} why={self.why!r} "
                f"response={self.response!r}>")


def mtls_request(port, ctx, session=None, timeout=10):
    """One GET over a new mutual-TLS connection (resuming session when given). With TLS 1.3
    the client's handshake completes before the server has checked the client certificate,
    so a refusal may only show on the first read."""
    s = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(timeout))
    try:
        try:
            t = ctx.wrap_socket(s, server_hostname="localhost", session=session)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return MtlsResult(False, why=f"handshake: {e}")
        try:
            c = hu.HttpConn(t)
            r = c.request("GET", "/", [("Connection", "close")], host="localhost",
                          timeout=timeout)
            # Reading to the end also reads the TLS 1.3 session tickets.
            return MtlsResult(True, response=r, session=t.session, reused=t.session_reused)
        except hu.ConnectionEnded as e:
            return MtlsResult(False, why=f"after the handshake: {e.how}")
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return MtlsResult(False, why=f"after the handshake: {e}")
        finally:
            t.close()
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# Load: new TLS connections, one request each
# --------------------------------------------------------------------------------------------


class NewConnectionLoad:
    """threads clients, each opening a new TLS connection per request ("Connection: close") in a
    loop until stop() or the deadline. Every outcome is recorded: a request counts as ok only
    with status 200 and a presented certificate among the allowed fingerprints."""

    def __init__(self, port, ctx, allowed, threads=4, max_seconds=30):
        self.port = port
        self.ctx = ctx
        self.allowed = set(allowed)
        self.threads = threads
        self.deadline = time.monotonic() + h.scaled(max_seconds)
        self.ok = 0
        self.failures = []
        self.seen = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = []

    def start(self):
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self):
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            try:
                fp, status = tls_fingerprint(self.port, self.ctx, request=True)
                err = None
                if status != 200:
                    err = f"status {status}"
                elif fp not in self.allowed:
                    err = f"unexpected certificate {fp}"
            except Exception as e:  # every failure is a finding; keep the reason
                fp, err = None, f"{type(e).__name__}: {e}"
            with self._lock:
                if err:
                    self.failures.append(err)
                else:
                    self.ok += 1
                    self.seen[fp] = self.seen.get(fp, 0) + 1

    def count(self):
        with self._lock:
            return self.ok + len(self.failures)

    def stop(self):
        self._stop.set()
        for t in self._workers:
            t.join(h.scaled(30))
        alive = [t.name for t in self._workers if t.is_alive()]
        if alive:
            raise h.HarnessError(f"load threads did not stop: {alive}")


class WrkLoad:
    """wrk with "Connection: close" (a new connection and TLS handshake per request; with
    close=False, keep-alive) for a fixed time; result() parses its summary."""

    def __init__(self, port, seconds, connections=8, threads=2, scheme="https", close=True):
        self.argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                     "--timeout", "10s", *(["-H", "Connection: close"] if close else []),
                     f"{scheme}://127.0.0.1:{port}/"]
        self.seconds = seconds
        self.proc = None

    @staticmethod
    def available():
        return shutil.which("wrk") is not None

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def result(self):
        """{"requests", "non2xx", "socket_errors": {...}, "text"} once wrk has finished."""
        try:
            out, _ = self.proc.communicate(timeout=h.scaled(self.seconds + 30))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise h.HarnessError(f"wrk did not finish:\n{out.decode(errors='replace')}")
        text = out.decode(errors="replace")
        m = re.search(r"(\d+) requests in", text)
        if self.proc.returncode != 0 or not m:
            raise h.HarnessError(f"wrk failed (rc {self.proc.returncode}):\n{text}")
        res = {"requests": int(m.group(1)), "non2xx": 0, "socket_errors": {}, "text": text}
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        if m:
            res["non2xx"] = int(m.group(1))
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      text)
        if m:
            res["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                            map(int, m.groups())))
        return res

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------------------------
# Metrics, logs and slbctl
# --------------------------------------------------------------------------------------------


def expiry_metrics(slbd):
    """{(id, name): seconds} of slbd_certificate_expiry_seconds in /metrics."""
    r = slbd.api.request("GET", "/metrics")
    assert r.status == 200, r
    out = {}
    label = r'"((?:[^"\\\n]|\\.)*)"'
    for m in re.finditer(r'^slbd_certificate_expiry_seconds\{id=' + label + ',name=' + label +
                         r'\} (\S+)$', r.text, re.M):
        out[(unescape_label(m.group(1)), unescape_label(m.group(2)))] = float(m.group(3))
    return out


def unescape_label(v):
    """A Prometheus label value as written (\\\\, \\" and \\n escaped) back to its text."""
    return re.sub(r'\\(.)', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def metric_value(slbd, name):
    """The value of an unlabelled metric, or None."""
    r = slbd.api.request("GET", "/metrics")
    assert r.status == 200, r
    m = re.search(rf"^{re.escape(name)} (\S+)$", r.text, re.M)
    return float(m.group(1)) if m else None


def warn_lines(slbd):
    return [ln for ln in slbd.log_text().splitlines() if " warn [" in ln]


def slbctl(slbd, *args, timeout=30):
    """Run build/slbctl against slbd's admin API (token from the state dir); returns
    CompletedProcess with text stdout/stderr."""
    env = dict(os.environ)
    env.pop("SLBD_TOKEN", None)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    argv = [str(h.binary("slbctl")), "--admin", f"http://127.0.0.1:{slbd.admin_port}",
            "--state-dir", str(slbd.state_dir), *[str(a) for a in args]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=h.scaled(timeout),
                          env=env, stdin=subprocess.DEVNULL)


def table_rows(text):
    """A human table (header line, then rows) as a list of dicts keyed by the header words."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return []
    cols = lines[0].split()
    return [dict(zip(cols, ln.split())) for ln in lines[1:]]


def show_fields(text):
    """`slbctl ... show` output ("field:   value" lines) as a dict."""
    out = {}
    for ln in text.splitlines():
        k, sep, v = ln.partition(":")
        if sep and k and " " not in k.strip():
            out[k.strip()] = v.strip()
    return out


def json_of(proc):
    try:
        return json.loads(proc.stdout)
    except ValueError as e:
        raise h.HarnessError(f"slbctl printed no JSON: {proc.stdout[:500]!r} "
                             f"{proc.stderr[:500]!r}") from e


def der_as_text(der):
    """DER bytes smuggled into a JSON string (latin-1, one character per byte), as a user who
    pastes a binary file would send them."""
    return der.decode("latin-1")


def garbage_text(n=600, seed=7, nul=True):
    """Deterministic binary garbage as text (control characters included; NUL bytes only with
    nul=True, since JSON carries them as \\u0000 which not every parser takes)."""
    rnd = random.Random(seed)
    data = bytes(rnd.randrange(0 if nul else 1, 256) for _ in range(n))
    if nul:
        data = b"\0" + data
    return data.decode("latin-1")


# --------------------------------------------------------------------------------------------
# A TLS client driven step by step (to hold a handshake half-way)
# --------------------------------------------------------------------------------------------


class SteppedTls:
    """A TLS client over a plain socket through memory BIOs, so a test decides when each
    flight leaves: connect() opens TCP only, hello() sends the ClientHello and waits for the
    server's first flight (it then has chosen its certificate), finish() completes the
    handshake."""

    def __init__(self, port, ctx, server_hostname="localhost", timeout=10):
        self.port = port
        self.timeout = h.scaled(timeout)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_hostname)
        self.sock = None

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    def _flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def _recv_into_bio(self):
        data = self.sock.recv(65536)
        if not data:
            raise h.HarnessError("the server closed the connection during the handshake")
        self.inc.write(data)

    def _step(self):
        """One do_handshake(); True when the handshake is complete."""
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def hello(self):
        if self._step():
            raise h.HarnessError("handshake completed without a server flight")
        self._flush()
        self._recv_into_bio()
        return self

    def finish(self):
        deadline = time.monotonic() + self.timeout
        while not self._step():
            self._flush()
            if time.monotonic() > deadline:
                raise h.HarnessError("handshake did not complete in time")
            self._recv_into_bio()
        self._flush()
        return sha256_hex(self.obj.getpeercert(binary_form=True))

    def request(self):
        """One GET with Connection: close over the finished connection; returns the status."""
        self.obj.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        self._flush()
        data = bytearray()
        while True:
            try:
                chunk = self.obj.read(65536)
                if not chunk:
                    break
                data += chunk
                continue
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                break
            self._flush()
            raw = self.sock.recv(65536)
            if not raw:
                break
            self.inc.write(raw)
        m = re.match(rb"HTTP/1\.1 (\d{3})", bytes(data))
        if not m:
            raise h.HarnessError(f"no HTTP response: {bytes(data[:200])!r}")
        return int(m.group(1))

    def close(self):
        if self.sock:
            self.sock.close()
