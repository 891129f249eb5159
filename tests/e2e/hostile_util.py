# SPDX-License-Identifier: Apache-2.0
"""Helpers of the hostile-client, fault, admin-security and TLS-audit tests: readings of slbd's
/proc entries (CPU time, memory, descriptors, limits), a prober that keeps a normal client
busy during an attack and counts what it got, hand-built TLS ClientHellos and a reader of the
server's first flight, openssl s_client alert parsing, and tool lookup that skips a test with
a reason (standard library and pytest only)."""

import errno
import os
import re
import resource
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

import slbd_harness as h

# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


def require_tool(name, package):
    """The path of an optional client tool; skips the test, naming the Debian package, when
    it is missing (a missing tool must never let a test pass silently)."""
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (Debian package {package})")
    return path


# --------------------------------------------------------------------------------------------
# /proc readings of a process
# --------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of the whole process (all threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CpuMeter:
    """CPU seconds a process used between start() (or construction) and stop()."""

    def __init__(self, pid):
        self.pid = pid
        self.start()

    def start(self):
        self.t0 = time.monotonic()
        self.c0 = cpu_seconds(self.pid)
        return self

    def stop(self):
        """(cpu seconds, wall seconds) since start()."""
        return cpu_seconds(self.pid) - self.c0, time.monotonic() - self.t0


def idle_cpu(pid, seconds):
    """CPU seconds the process used over the next `seconds` of wall time."""
    m = CpuMeter(pid)
    time.sleep(seconds)
    return m.stop()[0]


def rss_kb(pid):
    """Resident set size in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise h.HarnessError(f"no VmRSS for pid {pid}")


class RssSampler:
    """A thread sampling VmRSS of pid every `interval` seconds while running."""

    def __init__(self, pid, interval=1.0):
        self.pid = pid
        self.interval = interval
        self.samples = []  # (monotonic time, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), rss_kb(self.pid)))
            except (OSError, h.HarnessError):
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def peak(self):
        return max((kb for _, kb in self.samples), default=0)

    def values(self):
        return [kb for _, kb in self.samples]


def rss_budget_kb(release_kb):
    """An RSS growth bound: `release_kb` for a release build. AddressSanitizer keeps freed
    memory in a quarantine of up to 256 MiB before reusing it, so RSS grows with allocation
    churn rather than live memory; with sanitizers the bound is widened by that much (ASan's
    leak checker and the release run are what catch real growth)."""
    return release_kb + (256 << 10 if h.is_sanitized() else 0)


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid):
    """(soft, hard) RLIMIT_NOFILE of a running process."""
    return resource.prlimit(pid, resource.RLIMIT_NOFILE)


def set_nofile_limit(pid, soft, hard=None):
    """Change another process's descriptor limit (root or CAP_SYS_RESOURCE); skips the test
    when that is not permitted here."""
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, old[1] if hard is None else hard))
    except PermissionError as e:
        pytest.skip(f"cannot change slbd's RLIMIT_NOFILE here (prlimit: {e})")
    return old


def raise_own_nofile(want):
    """Raise this process's soft descriptor limit towards `want` (and the hard one too when
    allowed); returns the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, PermissionError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def listening_address(pid, port):
    """The local addresses ("127.0.0.1", "0.0.0.0", "::", ...) on which pid's network
    namespace has a listening TCP socket on port."""
    out = set()
    for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    c = line.split()
                    if len(c) < 4 or c[3] != "0A":
                        continue
                    addr, p = c[1].split(":")
                    if int(p, 16) != port:
                        continue
                    raw = bytes.fromhex(addr)
                    if fam == socket.AF_INET:
                        out.add(socket.inet_ntop(fam, raw[::-1]))
                    else:
                        out.add(socket.inet_ntop(fam, b"".join(
                            raw[i:i + 4][::-1] for i in range(0, 16, 4))))
        except OSError:
            pass
    return out


# --------------------------------------------------------------------------------------------
# Client sockets in bulk
# --------------------------------------------------------------------------------------------


def abort(sock):
    """Close with a reset (SO_LINGER 0): the client side keeps no TIME_WAIT entry, so tests
    that open thousands of connections do not use up the ephemeral ports of later tests."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def open_many(port, n, timeout=5, host="127.0.0.1", stop_on_error=True):
    """Open up to n idle TCP connections to port; returns (sockets, error or None). The
    connect completes as soon as the kernel queued the connection, whether slbd accepted it
    or not."""
    socks = []
    err = None
    for _ in range(n):
        s = socket.socket()
        try:
            s.settimeout(timeout)
            s.connect((host, port))
        except OSError as e:
            abort(s)
            err = e
            if stop_on_error:
                break
            continue
        socks.append(s)
    return socks, err


def close_all(socks, reset=True):
    for s in socks:
        if reset:
            abort(s)
        else:
            try:
                s.close()
            except OSError:
                pass
    socks.clear()


def peer_closed(sock):
    """True when the peer has closed (EOF or reset) a socket we never read, without
    waiting."""
    try:
        sock.setblocking(False)
        data = sock.recv(65536, socket.MSG_PEEK)
        return data == b""
    except BlockingIOError:
        return False
    except OSError as e:
        return e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
    finally:
        try:
            sock.setblocking(True)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# A normal client during an attack
# --------------------------------------------------------------------------------------------


def simple_get(port, target="/", tls_ctx=None, timeout=5, host="127.0.0.1"):
    """One GET with Connection: close on a fresh connection; returns the status code.
    Raises OSError/ssl.SSLError/HarnessError on any failure."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_ctx is not None:
            s = tls_ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise h.HarnessError(f"connection closed before a status line ({data!r})")
            data += chunk
        line = data.split(b"\r\n", 1)[0]
        parts = line.split(b" ")
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise h.HarnessError(f"not a status line: {line!r}")
        # Drain so that slbd sees an orderly close, not a reset, and counts nothing odd.
        while s.recv(65536):
            pass
        return int(parts[1])
    finally:
        s.close()


def insecure_client_context():
    """A TLS client context that does not verify (the prober measures availability; the
    certificate checks have their own tests)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Prober:
    """A normal client that keeps sending one request per fresh connection to port every
    `interval` seconds while an attack runs. Each result is (start time, status or error text,
    latency). A request that takes longer than `timeout` (scaled) counts as a failure."""

    def __init__(self, port, tls=False, target="/probe", interval=0.1, timeout=5):
        self.port = port
        self.ctx = insecure_client_context() if tls else None
        self.target = target
        self.interval = interval
        self.timeout = h.scaled(timeout)
        self.results = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                res = simple_get(self.port, self.target, self.ctx, timeout=self.timeout)
            except (OSError, ssl.SSLError, h.HarnessError, ValueError) as e:
                res = f"{type(e).__name__}: {e}"
            self.results.append((t0, res, time.monotonic() - t0))
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def ok(self):
        return sum(1 for _, r, _ in self.results if r == 200)

    def failures(self):
        return [(round(t, 2), r, round(lat, 3)) for t, r, lat in self.results if r != 200]

    def max_latency(self):
        return max((lat for _, _, lat in self.results), default=0.0)

    def summary(self):
        return (f"{self.ok()}/{len(self.results)} probes answered 200, max latency "
                f"{self.max_latency():.3f} s; failures: {self.failures()[:10]}")

    def assert_all_ok(self, minimum=1):
        """Every probe got a 200 (and there were at least `minimum` of them)."""
        assert len(self.results) >= minimum, self.summary()
        assert self.ok() == len(self.results), self.summary()

    def assert_ratio(self, ratio, minimum=1):
        assert len(self.results) >= minimum, self.summary()
        assert self.ok() >= ratio * len(self.results), self.summary()


# --------------------------------------------------------------------------------------------
# TLS on the wire: hand-built ClientHellos and the server's answer
# --------------------------------------------------------------------------------------------

REC_CCS, REC_ALERT, REC_HANDSHAKE, REC_APPDATA = 20, 21, 22, 23
HS_CLIENT_HELLO, HS_SERVER_HELLO, HS_SERVER_HELLO_DONE = 1, 2, 14

ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 22: "record_overflow",
    40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
    80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
    100: "no_renegotiation", 109: "missing_extension", 110: "unsupported_extension",
    112: "unrecognized_name", 116: "certificate_required", 120: "no_application_protocol",
}

# ECDHE suites every policy offers (TLS 1.2), then the TLS 1.3 suites.
TLS12_ECDHE_SUITES = (0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC009)
TLS13_SUITES = (0x1301, 0x1302, 0x1303)
SIGALGS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
TLS_FALLBACK_SCSV = 0x5600

_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def _u8(b):
    return struct.pack("!B", len(b)) + b


def _u16(b):
    return struct.pack("!H", len(b)) + b


def _u24(b):
    return struct.pack("!I", len(b))[1:] + b


def extension(ext_type, data):
    return struct.pack("!H", ext_type) + _u16(data)


def client_hello(version=0x0303, suites=TLS12_ECDHE_SUITES + TLS13_SUITES, sni="localhost",
                 tls13=True, groups=(0x001D, 0x0017, 0x0018), padding=0, extra=(),
                 compression=b"\x00", with_extensions=True):
    """A ClientHello handshake message (no record header). tls13 adds supported_versions
    and an X25519 key share (random bytes are a valid X25519 public value); padding adds an
    RFC 7685 padding extension of that many zero bytes; extra is a list of (type, data)."""
    exts = b""
    if with_extensions:
        if sni:
            name = sni.encode()
            exts += extension(0, _u16(b"\x00" + _u16(name)))
        exts += extension(10, _u16(b"".join(struct.pack("!H", g) for g in groups)))
        exts += extension(11, _u8(b"\x00"))
        exts += extension(13, _u16(b"".join(struct.pack("!H", a) for a in SIGALGS)))
        exts += extension(0xFF01, b"\x00")  # renegotiation_info, empty
        exts += extension(23, b"")  # extended_master_secret
        if tls13:
            exts += extension(43, _u8(struct.pack("!HH", 0x0304, 0x0303)))
            exts += extension(45, _u8(b"\x01"))  # psk_dhe_ke
            exts += extension(51, _u16(struct.pack("!HH", 0x001D, 32) + os.urandom(32)))
        for t, d in extra:
            exts += extension(t, d)
        if padding:
            exts += extension(21, b"\x00" * padding)
    body = struct.pack("!H", version) + os.urandom(32) + _u8(os.urandom(32))
    body += _u16(b"".join(struct.pack("!H", s) for s in suites))
    body += _u8(compression)
    if with_extensions:
        body += _u16(exts)
    return struct.pack("!B", HS_CLIENT_HELLO) + _u24(body)


def records(payload, ctype=REC_HANDSHAKE, version=0x0301, fragment=16384):
    """payload framed as TLS records of at most `fragment` bytes each."""
    out = b""
    for i in range(0, max(len(payload), 1), fragment):
        part = payload[i:i + fragment]
        out += struct.pack("!BHH", ctype, version, len(part)) + part
    return out


def sslv2_client_hello(version=0x0301, specs=(0x00C02F, 0x00C013, 0x000035, 0x010080)):
    """An SSL 2.0-format ClientHello (the "SSLv2-compatible" first flight of old clients)
    offering `version`, with three-byte cipher specs."""
    spec = b"".join(struct.pack("!I", s)[1:] for s in specs)
    challenge = os.urandom(16)
    msg = struct.pack("!BHHHH", 1, version, len(spec), 0, len(challenge)) + spec + challenge
    return struct.pack("!H", 0x8000 | len(msg)) + msg


class ServerFlight:
    """What the server sent in answer to a hand-built first flight: the records (type,
    version, payload), the handshake message types seen, the alerts as names, how the
    connection ended ("eof", "reset", "timeout" or None when we stopped reading because the
    flight was complete) and the version the ServerHello chose."""

    def __init__(self):
        self.records = []
        self.handshakes = []
        self.alerts = []
        self.ended = None
        self.version = None
        self.extensions = []  # extension types of the ServerHello
        self.raw = b""
        self.elapsed = 0.0

    @property
    def server_hello(self):
        return HS_SERVER_HELLO in self.handshakes

    def __repr__(self):
        return (f"<ServerFlight handshakes={self.handshakes} alerts={self.alerts} "
                f"version={self.version and hex(self.version)} ended={self.ended} "
                f"bytes={len(self.raw)} after {self.elapsed:.2f}s>")


def _parse_server_hello(body, flight):
    try:
        legacy = struct.unpack("!H", body[0:2])[0]
        if body[2:34] == _HRR_RANDOM:
            flight.version = "hrr"
            return
        sid_len = body[34]
        p = 35 + sid_len + 3  # session id, cipher suite, compression method
        flight.version = legacy
        if p + 2 > len(body):
            return
        end = p + 2 + struct.unpack("!H", body[p:p + 2])[0]
        p += 2
        while p + 4 <= end:
            t, n = struct.unpack("!HH", body[p:p + 4])
            flight.extensions.append(t)
            if t == 43 and n == 2:
                flight.version = struct.unpack("!H", body[p + 4:p + 6])[0]
            p += 4 + n
    except (IndexError, struct.error):
        pass


def read_flight(sock, timeout=10, until_done=True):
    """Read the server's answer to a first flight already sent on sock: stops at an alert,
    at ServerHelloDone (TLS <= 1.2), after a TLS 1.3 ServerHello (the rest is encrypted), at
    EOF/reset, or after `timeout` seconds (not scaled)."""
    flight = ServerFlight()
    buf = b""
    hs_buf = b""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        # Parse the complete records we have.
        while len(buf) >= 5:
            ctype, ver, n = struct.unpack("!BHH", buf[:5])
            if len(buf) < 5 + n:
                break
            payload = buf[5:5 + n]
            buf = buf[5 + n:]
            flight.records.append((ctype, ver, payload))
            if ctype == REC_ALERT and len(payload) >= 2:
                flight.alerts.append(ALERTS.get(payload[1], str(payload[1])))
            elif ctype == REC_HANDSHAKE:
                hs_buf += payload
                while len(hs_buf) >= 4:
                    mlen = struct.unpack("!I", b"\x00" + hs_buf[1:4])[0]
                    if len(hs_buf) < 4 + mlen:
                        break
                    mtype, body = hs_buf[0], hs_buf[4:4 + mlen]
                    hs_buf = hs_buf[4 + mlen:]
                    flight.handshakes.append(mtype)
                    if mtype == HS_SERVER_HELLO:
                        _parse_server_hello(body, flight)
        done = bool(flight.alerts) or HS_SERVER_HELLO_DONE in flight.handshakes or (
            flight.version == 0x0304) or flight.version == "hrr"
        if done and until_done:
            flight.elapsed = time.monotonic() - t0
            return flight
        left = deadline - time.monotonic()
        if left <= 0:
            flight.ended = "timeout"
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            flight.ended = "timeout"
            break
        except (ConnectionResetError, BrokenPipeError):
            flight.ended = "reset"
            break
        if not chunk:
            flight.ended = "eof"
            break
        flight.raw += chunk
        buf += chunk
    flight.elapsed = time.monotonic() - t0
    return flight


def send_flight(port, data, timeout=10, segment=None, delay=0.0, host="127.0.0.1"):
    """Connect, send data (in `segment`-byte writes `delay` seconds apart when given) and
    read the answer with read_flight. Returns (flight, socket); the caller closes it."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if segment:
            for i in range(0, len(data), segment):
                s.sendall(data[i:i + segment])
                if delay:
                    time.sleep(delay)
        else:
            s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return read_flight(s, timeout), s


# --------------------------------------------------------------------------------------------
# openssl s_client
# --------------------------------------------------------------------------------------------

_MSG_ALERT = re.compile(r"^(<<<|>>>) [^,]+, Alert \[length [0-9a-fA-F]+\], (fatal|warning) (\w+)",
                        re.M)
_LIB_ALERT = re.compile(r"(?:sslv3|tlsv1|tlsv13) alert ([a-z]+(?: [a-z]+)*)")


def s_client(port, *args, stdin=b"", timeout=15, servername="localhost", hold=0.0):
    """Run openssl s_client against 127.0.0.1:port; returns (rc, stdout+stderr text). hold
    keeps its stdin open that many seconds before `stdin` and EOF (s_client closes the
    connection at EOF, before a late alert such as TLS 1.3's certificate_required)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}"]
    if servername:
        argv += ["-servername", servername]
    argv += list(args)
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        if hold:
            time.sleep(hold * h.slow_factor())
        out = p.communicate(stdin, timeout=h.scaled(timeout))[0]
    except subprocess.TimeoutExpired as e:
        p.kill()
        p.wait()
        raise h.HarnessError(f"{' '.join(argv)} did not finish") from e
    return p.returncode, out.decode(errors="replace")


def received_alerts(text):
    """Alert names the peer sent, from s_client -msg output ("<<< ..., Alert ...") and from
    OpenSSL error strings ("... tlsv1 alert unknown ca ..."), which is also how Python's ssl
    module reports them."""
    out = [m.group(3) for m in _MSG_ALERT.finditer(text) if m.group(1) == "<<<"]
    for m in _LIB_ALERT.finditer(text):
        out.append(m.group(1).replace(" ", "_"))
    return out


def sent_alerts(text):
    return [m.group(3) for m in _MSG_ALERT.finditer(text) if m.group(1) == ">>>"]


# --------------------------------------------------------------------------------------------
# Raw HTTP
# --------------------------------------------------------------------------------------------


def read_to_end(sock, timeout=10):
    """Read until EOF or `timeout` (scaled); returns (bytes received, "eof" | "reset" |
    "timeout")."""
    out = b""
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, "timeout"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return out, "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return out, "reset"
        if not chunk:
            return out, "eof"
        out += chunk


def raw_exchange(port, data, timeout=10, host="127.0.0.1"):
    """Send bytes on a fresh connection and read until EOF or `timeout` (scaled); returns
    (bytes received, "eof" | "reset" | "timeout")."""
    s = socket.create_connection((host, port), timeout=h.scaled(timeout))
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_to_end(s, timeout)
    finally:
        s.close()


def status_of(data):
    """The status code of the first response in data, or None."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(m.group(1)) if m else None


def statuses(data):
    return [int(x) for x in re.findall(rb"HTTP/1\.[01] (\d{3}) ", data)]


# --------------------------------------------------------------------------------------------
# A TLS client whose first flight is cut into small TCP segments or small records
# --------------------------------------------------------------------------------------------


def refragment(data, size):
    """The handshake bytes of the TLS records in data, framed again as records carrying
    `size` handshake bytes each (legal: a handshake message may span any number of
    records)."""
    payload = b""
    p = 0
    while p + 5 <= len(data):
        ctype, _, n = struct.unpack("!BHH", data[p:p + 5])
        if ctype != REC_HANDSHAKE:
            raise h.HarnessError(f"unexpected record type {ctype} in the first flight")
        payload += data[p + 5:p + 5 + n]
        p += 5 + n
    return records(payload, fragment=size)


def segmented_tls(port, ctx, segment=1, delay=0.001, record_size=None, timeout=10,
                  server_hostname="localhost"):
    """A connected, handshaken client (metering_util.MeteredTls, usable with
    http_util.HttpConn) whose ClientHello went out `segment` bytes per TCP write, `delay`
    seconds apart, optionally re-framed into records of `record_size` bytes."""
    import metering_util  # the TLS-over-MemoryBIO client; imported here to keep it optional

    class Segmented(metering_util.MeteredTls):
        first = True

        def _flush(self):
            data = self.out.read()
            if not data:
                return
            if self.first:
                self.first = False
                if record_size:
                    data = refragment(data, record_size)
                for i in range(0, len(data), segment):
                    self.sock.sendall(data[i:i + segment])
                    if delay:
                        time.sleep(delay)
            else:
                self.sock.sendall(data)
            self.sent += len(data)

    s = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(timeout))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Segmented(s, ctx, server_hostname=server_hostname)
    try:
        c.handshake(timeout)
    except BaseException:
        s.close()
        raise
    return c
