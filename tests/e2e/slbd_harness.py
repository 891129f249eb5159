# SPDX-License-Identifier: Apache-2.0
"""Process, network and admin-API helpers that the end-to-end tests use to drive slbd and echo
backends (standard library only, so the suite runs with Debian's python3-pytest)."""

import errno
import functools
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Where a sanitizer or a crash shows itself on stderr. Any of these fails the test.
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "LeakSanitizer",
    "ERROR: ThreadSanitizer",
    "WARNING: ThreadSanitizer",
)
# slbd's log format is "<time> <level> [<thread>] <message>"; error lines are internal faults
# unless a test declares them expected.
ERROR_LINE = re.compile(r' error \[|^\{"time":"[^"]*","level":"error"')  # text or --log-format json


class HarnessError(AssertionError):
    """A test precondition or a post-test check failed; raised as an assertion so pytest shows
    it as a test failure with the message, not as a crash of the harness."""


# --------------------------------------------------------------------------------------------
# Build tree and timing
# --------------------------------------------------------------------------------------------


def build_dir():
    """The build tree under test: $SLBD_BUILD (relative to the repository, as the Makefile
    passes it) or build/."""
    d = Path(os.environ.get("SLBD_BUILD", "build"))
    return d if d.is_absolute() else REPO / d


def binary(name):
    path = build_dir() / name
    if not os.access(path, os.X_OK):
        raise HarnessError(f"{path} is missing; build it first (make, or make BUILD=asan all)")
    return path


@functools.lru_cache(maxsize=None)
def is_sanitized():
    """True when slbd was built with AddressSanitizer (everything runs several times slower)."""
    try:
        data = binary("slbd").read_bytes()
    except (OSError, HarnessError):
        return False
    return b"__asan_init" in data or b"AddressSanitizer" in data


def slow_factor():
    """Deadlines are multiplied by this: sanitizer builds are slow, and so is a loaded 2-core
    machine, but a deadline is only an upper bound, so a generous one costs nothing when
    things work."""
    return 3.0 if is_sanitized() else 1.0


def scaled(seconds):
    return seconds * slow_factor()


def wait_until(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a truthy value, which is returned; fail after timeout
    (scaled for sanitizer builds) with a message naming what was awaited."""
    deadline = time.monotonic() + scaled(timeout)
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {scaled(timeout):.1f} s waiting for {what} "
                               f"(last value: {last!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------

_given_ports = set()
_ports_lock = threading.Lock()


def _port_pool():
    """Ports below the kernel's ephemeral range: the tests open thousands of client connections
    whose source ports come from that range, and a listener port handed out from it could be
    taken by one of them before slbd binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low > 12000:
        return 10000, low - 1
    return None


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago and that this session has not handed out before.
    Another process may still take it before the caller binds it: callers retry on a bind
    failure (the helpers below do)."""
    pool = _port_pool()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(500):
        if pool:
            port = random.randint(*pool)
        else:
            with socket.socket(family) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        with _ports_lock:
            if port in _given_ports:
                continue
        s = socket.socket(family)
        try:
            # No SO_REUSEADDR: a port with connections in TIME_WAIT is skipped too.
            s.bind((host, port))
            s.listen(1)
        except OSError:
            continue
        finally:
            s.close()
        with _ports_lock:
            _given_ports.add(port)
        return port
    raise HarnessError("no free TCP port found")


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------

_live_procs = set()


def _spawn(argv, **kw):
    p = subprocess.Popen([str(a) for a in argv], **kw)
    _live_procs.add(p)
    return p


def kill_leftovers():
    """Last-resort cleanup (session end): nothing a test started may outlive the run."""
    for p in list(_live_procs):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _live_procs.discard(p)


def _tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


def _sanitizer_env():
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:strict_string_checks=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["LSAN_OPTIONS"] = "report_objects=1"
    return env


# --------------------------------------------------------------------------------------------
# Admin API client
# --------------------------------------------------------------------------------------------

_DEFAULT = object()


class ApiResponse:
    """status, parsed JSON body (None when the body is not JSON), raw text and headers."""

    def __init__(self, status, text, headers):
        self.status = status
        self.text = text
        self.headers = headers
        try:
            self.json = json.loads(text) if text else None
        except ValueError:
            self.json = None

    def error_code(self):
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"].get("code")
        return None

    def __repr__(self):
        return f"<ApiResponse {self.status} {self.text[:300]!r}>"


class ApiClient:
    """The admin API over urllib: one connection per request (urllib sends Connection: close),
    no proxies from the environment."""

    def __init__(self, base_url, token, context=None):
        self.base = base_url
        self.token = token
        handlers = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def request(self, method, path, body=None, *, data=None, content_type="application/json",
                token=_DEFAULT, headers=None, timeout=None):
        """body is JSON-encoded; data is sent as given (bytes or str). Returns ApiResponse."""
        if body is not None:
            data = json.dumps(body).encode()
        elif isinstance(data, str):
            data = data.encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        tok = self.token if token is _DEFAULT else token
        if tok is not None:
            req.add_header("Authorization", f"Bearer {tok}")
        if data is not None and content_type is not None:
            req.add_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with self._opener.open(req, timeout=timeout or scaled(20)) as r:
                return ApiResponse(r.status, r.read().decode("utf-8", "replace"), r.headers)
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            return ApiResponse(e.code, text, e.headers)

    def get(self, path, **kw):
        r = self.request("GET", path, **kw)
        return r.status, r.json

    def post(self, path, body=None, **kw):
        r = self.request("POST", path, body, **kw)
        return r.status, r.json

    def put(self, path, body=None, **kw):
        r = self.request("PUT", path, body, **kw)
        return r.status, r.json

    def delete(self, path, **kw):
        r = self.request("DELETE", path, **kw)
        return r.status, r.json


# --------------------------------------------------------------------------------------------
# File descriptors of a process
# --------------------------------------------------------------------------------------------


def _listening_inodes(pid):
    inodes = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == "0A":
                        inodes.add(cols[9])
        except OSError:
            pass
    return inodes


_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
               "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
               "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def _hex_addr(text):
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        host = "[" + socket.inet_ntop(socket.AF_INET6, b"".join(
            raw[i:i + 4][::-1] for i in range(0, 16, 4))) + "]"
    return f"{host}:{int(port, 16)}"


def describe_sockets(pid):
    """{inode: "local->remote STATE"} for the TCP sockets in pid's network namespace, so a
    leak report says which connection was left open."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    c = line.split()
                    if len(c) > 9:
                        out[c[9]] = (f"{_hex_addr(c[1])}->{_hex_addr(c[2])} "
                                     f"{_TCP_STATES.get(c[3], c[3])}")
        except (OSError, ValueError):
            pass
    return out


def fd_table(pid, skip_listening=True):
    """{fd: target} of a live process; listening TCP sockets are left out when asked, since
    they come and go with the configuration under test rather than with leaks."""
    listening = _listening_inodes(pid) if skip_listening else set()
    out = {}
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while we looked
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m and m.group(1) in listening:
            continue
        out[int(fd)] = target
    return out


# --------------------------------------------------------------------------------------------
# Client sockets
# --------------------------------------------------------------------------------------------


class Clients:
    """Client sockets opened by a test; all are closed before the post-test checks so that a
    connection the test still holds is not mistaken for a leak in slbd."""

    def __init__(self):
        self._socks = []
        self._lock = threading.Lock()

    def connect(self, port, host="127.0.0.1", timeout=10, source=None):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                          socket.SOCK_STREAM)
        with self._lock:
            self._socks.append(s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source:
            s.bind((source, 0))
        s.settimeout(scaled(timeout))
        s.connect((host, port))
        return s

    def close_all(self):
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def recv_exact(sock, n, timeout=10):
    """Exactly n bytes, or an assertion naming how many arrived before EOF or the deadline."""
    deadline = time.monotonic() + scaled(timeout)
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"got {len(buf)} of {n} bytes before the deadline")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            continue
        if not chunk:
            raise HarnessError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_line(sock, timeout=10):
    deadline = time.monotonic() + scaled(timeout)
    buf = bytearray()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"no complete line before the deadline (got {bytes(buf)!r})")
        sock.settimeout(left)
        try:
            b = sock.recv(1)
        except socket.timeout:
            continue
        if not b:
            raise HarnessError(f"EOF before a complete line (got {bytes(buf)!r})")
        buf += b
    return bytes(buf[:-1]).decode()


def read_to_eof(sock, timeout=10):
    """Everything until the peer's EOF; a reset or the deadline fails."""
    deadline = time.monotonic() + scaled(timeout)
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"no EOF before the deadline ({len(buf)} bytes read)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            return bytes(buf)
        buf += chunk


def wait_closed(sock, timeout):
    """How the peer ends the connection: "eof", "reset", or None when it is still open at the
    deadline (not scaled: callers pass the bound they want to assert). Data is discarded."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                return "reset"
            raise
        if not chunk:
            return "eof"


def echo_roundtrip(sock, data, timeout=10):
    sock.sendall(data)
    got = recv_exact(sock, len(data), timeout)
    if got != data:
        raise HarnessError(f"echo mismatch: sent {data[:60]!r}..., got {got[:60]!r}...")


def who(clients, port, source=None, timeout=10):
    """Ask the backend behind port for its name (echo-backend tcp mode answers "WHO\\n")."""
    s = clients.connect(port, source=source, timeout=timeout)
    try:
        s.sendall(b"WHO\n")
        return recv_line(s, timeout)
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# Echo backends
# --------------------------------------------------------------------------------------------


class EchoBackend:
    """One echo-backend process on 127.0.0.1:port. tcp mode echoes and answers "WHO\\n" with its
    name; http mode answers JSON describing the request (/health is "ok", /status/N is N)."""

    def __init__(self, workdir, name, mode="tcp", proxy_protocol=False, delay_ms=0, port=None):
        self.workdir = Path(workdir)
        self.name = name
        self.mode = mode
        self.proxy_protocol = proxy_protocol
        self.delay_ms = delay_ms
        self.port = port
        self._fixed_port = port is not None
        self.proc = None
        self.stderr_path = self.workdir / f"backend-{name}.stderr"

    @property
    def address(self):
        return "127.0.0.1"

    def server(self, weight=100):
        return {"address": self.address, "port": self.port, "weight": weight}

    def start(self):
        fixed = self._fixed_port and self.port is not None
        for _ in range(50 if fixed else 10):
            if not fixed:
                self.port = free_port()
            if self._try_start():
                return self
            if fixed:
                # The old process's socket may linger briefly; the port is ours to retry.
                time.sleep(0.1)
        raise HarnessError(f"echo-backend {self.name} did not start on port {self.port}; "
                           f"stderr:\n{_tail(self.stderr_path.read_text(errors='replace'))}")

    def _try_start(self):
        argv = [binary("echo-backend"), "--listen", f"127.0.0.1:{self.port}", "--name", self.name,
                "--mode", self.mode]
        if self.proxy_protocol:
            argv.append("--proxy-protocol")
        if self.delay_ms:
            argv += ["--delay-ms", str(self.delay_ms)]
        err = open(self.stderr_path, "ab")
        try:
            self.proc = _spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=err, env=_sanitizer_env())
        finally:
            err.close()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + scaled(10)
        line = b""
        try:
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise HarnessError(f"echo-backend {self.name} printed no 'ready'")
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    self.proc.wait(5)
                    _live_procs.discard(self.proc)
                    return False  # exited: most likely the port was taken meanwhile
                line += b
        finally:
            sel.close()
        if line.strip() != b"ready":
            self.kill()
            raise HarnessError(f"echo-backend {self.name} said {line!r} instead of 'ready'")
        return True

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: the backend vanishes as a crashed server would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        self._reap()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
        self._reap()

    def _reap(self):
        if self.proc:
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout:
                self.proc.stdout.close()
            _live_procs.discard(self.proc)

    def restart(self):
        """Start again on the same port (after kill or stop)."""
        self.kill()
        self._fixed_port = True
        return self.start()


# --------------------------------------------------------------------------------------------
# slbd
# --------------------------------------------------------------------------------------------


class Slbd:
    """One slbd under test: a state directory, an admin port, the process (restartable), its
    stderr (one file per run, all checked after the test), and the post-test checks."""

    def __init__(self, workdir, workers=2, log_level="info", state_dir=None, name="slbd",
                 nofile=None, extra_args=()):
        self.workdir = Path(workdir)
        # More command-line options for every start (e.g. ["--admin-auth-failures", "0"]); a
        # test may change them between starts.
        self.extra_args = [str(a) for a in extra_args]
        # With --admin-cert in extra_args: the ssl.SSLContext that verifies the admin API.
        self.admin_ssl = None
        self.workers = workers
        # RLIMIT_NOFILE (soft and hard) of the process, as `ulimit -n` would set it.
        self.nofile = nofile
        self.log_level = log_level
        self.state_dir = Path(state_dir) if state_dir else self.workdir / f"{name}-state"
        self.name = name
        self.proc = None
        self.admin_port = None
        self.api = None
        self.clients = Clients()
        self._runs = []  # stderr paths, one per process started
        self._allowed = []  # regexes of error lines the test expects
        self._exits = []  # (pid, rc, expected) of processes that ended
        self._stop_sent = None  # pid that the test sent SIGTERM/SIGINT to
        self._fd_baseline = None

    # --- lifecycle ---

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def argv(self, *extra):
        return [binary("slbd"), "--state-dir", self.state_dir, "--admin",
                f"127.0.0.1:{self.admin_port}", "--workers", str(self.workers), "--log-level",
                self.log_level, *self.extra_args, *extra]

    def start(self, ready_timeout=20):
        """Start and wait for /healthz (ready_timeout seconds, scaled); a new admin port is
        tried when the chosen one was taken in the meantime."""
        if self.running():
            raise HarnessError("slbd is already running")
        for _ in range(5):
            self.admin_port = free_port()
            err_path = self.workdir / f"{self.name}.{len(self._runs)}.stderr"
            self._runs.append(err_path)
            with open(err_path, "wb") as err:
                self.proc = _spawn(self.argv(), stdin=subprocess.DEVNULL, stdout=err,
                                   stderr=subprocess.STDOUT, env=_sanitizer_env(),
                                   preexec_fn=self._preexec())
            self.api = None
            if self._wait_ready(ready_timeout):
                return self
            text = err_path.read_text(errors="replace")
            if "--admin" in text and "bind_failed" in text:
                self._exits.append((self.proc.pid, self.proc.returncode, True))
                continue
            raise HarnessError(f"slbd did not start (rc {self.proc.returncode}):\n{_tail(text)}")
        raise HarnessError("slbd could not bind an admin port in 5 attempts")

    def _preexec(self):
        if not self.nofile:
            return None
        n = self.nofile

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        return limit

    def _wait_ready(self, timeout=20):
        base = f"{'https' if self.admin_ssl else 'http'}://127.0.0.1:{self.admin_port}"
        probe = ApiClient(base, None, self.admin_ssl)
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = probe.request("GET", "/healthz", timeout=scaled(5))
                if r.status == 200:
                    break
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        else:
            raise HarnessError("slbd did not answer /healthz in time")
        token = (self.state_dir / "admin.token").read_text().strip()
        self.api = ApiClient(base, token, self.admin_ssl)
        self.fd_baseline()
        return True

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stop as an operator would and return the exit code; the exit counts as expected.
        Fails when the process does not end within timeout (scaled)."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(10)
            self._exits.append((self.proc.pid, rc, True))
            raise HarnessError(f"slbd did not exit within {scaled(timeout):.0f} s of signal "
                               f"{sig!r}; killed")
        self._exits.append((self.proc.pid, rc, True))
        _live_procs.discard(self.proc)
        return rc

    def kill9(self):
        """SIGKILL, as a crash or power loss would end it."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            rc = self.proc.wait(10)
            self._exits.append((self.proc.pid, rc, True))
            _live_procs.discard(self.proc)

    def signal(self, sig):
        """Send sig; after SIGTERM/SIGINT the process ending (with code 0) is expected."""
        if sig in (signal.SIGTERM, signal.SIGINT):
            self._stop_sent = self.proc.pid
        self.proc.send_signal(sig)

    def restart(self):
        if self.running():
            rc = self.stop()
            if rc != 0:
                raise HarnessError(f"slbd exited with {rc} on SIGTERM")
        return self.start()

    def upgrade(self, *extra, env=None, wait_old=True, baseline=True, timeout=30):
        """`slbd --upgrade` with this daemon's options (plus extra): waits until the new process
        took over (the state directory's lock file names it), then, with wait_old, until the
        old one drained and exited with code 0. From then on this object tracks the new
        process. Returns the old process's Popen (see wait_old_exit). Fails when the new
        process exits instead. baseline=False skips the descriptor baseline (slow to take
        under load; call fd_baseline() once the load is over)."""
        old = self.proc
        err_path = self.workdir / f"{self.name}.{len(self._runs)}.stderr"
        self._runs.append(err_path)
        with open(err_path, "wb") as err:
            new = _spawn(self.argv("--upgrade", *extra), stdin=subprocess.DEVNULL, stdout=err,
                         stderr=subprocess.STDOUT, env={**_sanitizer_env(), **(env or {})})
        lock = self.state_dir / "lock"

        def took_over():
            if new.poll() is not None:
                self._exits.append((new.pid, new.returncode, True))
                _live_procs.discard(new)
                raise HarnessError(f"slbd --upgrade exited with {new.returncode}:\n"
                                   f"{_tail(err_path.read_text(errors='replace'))}")
            try:
                return lock.read_text().strip() == str(new.pid)
            except OSError:
                return False
        wait_until(took_over, timeout, "the new slbd taking over")
        self.proc = new
        self._fd_baseline = None
        if baseline:
            self.fd_baseline()
        if wait_old:
            self.wait_old_exit(old, timeout)
        return old

    def wait_old_exit(self, old, timeout=30):
        """The process an upgrade replaced exits with code 0 once its connections are done."""
        try:
            rc = old.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            old.kill()
            old.wait(10)
            self._exits.append((old.pid, -9, True))
            _live_procs.discard(old)
            raise HarnessError(f"the old slbd (pid {old.pid}) did not exit after the upgrade")
        self._exits.append((old.pid, rc, True))
        _live_procs.discard(old)
        if rc != 0:
            raise HarnessError(f"the old slbd (pid {old.pid}) exited with {rc} after the upgrade")

    def run_once(self, *args, timeout=30):
        """Run slbd to completion with extra arguments (--check, or a start that must fail):
        returns (rc, stdout+stderr text). Its output is checked for sanitizer reports too."""
        port = self.admin_port or free_port()
        argv = [binary("slbd"), "--state-dir", self.state_dir, "--admin", f"127.0.0.1:{port}",
                "--workers", str(self.workers), *args]
        try:
            p = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=scaled(timeout),
                               env=_sanitizer_env())
        except subprocess.TimeoutExpired as e:
            raise HarnessError(f"slbd {' '.join(map(str, args))} did not exit in time") from e
        text = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        path = self.workdir / f"{self.name}.once{len(self._runs)}.stderr"
        path.write_text(text)
        self._runs.append(path)
        return p.returncode, text

    # --- what the test may declare ---

    def allow_errors(self, *patterns):
        """Error log lines matching one of these regexes are expected by the test."""
        self._allowed += [re.compile(p) for p in patterns]

    def log_text(self):
        return "".join(p.read_text(errors="replace") for p in self._runs if p.exists())

    def fd_baseline(self):
        """Take the descriptor baseline now. The admin connection that just answered may still
        be closing inside slbd, so the smallest of a few samples is kept."""
        best = fd_table(self.proc.pid)
        for _ in range(5):
            time.sleep(0.03)
            now = fd_table(self.proc.pid)
            if len(now) < len(best):
                best = now
            elif len(now) == len(best):
                break
        self._fd_baseline = best

    # --- post-test checks ---

    def check_fds(self, timeout=5):
        """Descriptors other than listening sockets must be back to the baseline taken when the
        process became ready. Health probes and closing connections are transient, so poll."""
        if not self.running() or self._fd_baseline is None:
            return None
        deadline = time.monotonic() + scaled(timeout)
        while True:
            now = fd_table(self.proc.pid)
            if len(now) <= len(self._fd_baseline):
                return None
            if time.monotonic() >= deadline:
                base_targets = sorted(self._fd_baseline.values())
                socks = describe_sockets(self.proc.pid)
                extra = []
                for fd, t in sorted(now.items()):
                    if self._fd_baseline.get(fd) == t:
                        continue
                    m = re.fullmatch(r"socket:\[(\d+)\]", t)
                    extra.append(f"{fd}: {t}" + (f" {socks[m.group(1)]}"
                                                 if m and m.group(1) in socks else ""))
                return (f"slbd leaked file descriptors: {len(now)} open (listening sockets "
                        f"excluded) vs {len(self._fd_baseline)} after start-up; new: "
                        f"{extra[:40]}; baseline: {base_targets[:40]} (connections slbd still "
                        "holds after the clients closed theirs, or health probes in flight: a "
                        "test with probes to a slow server removes its groups before it ends)")
            time.sleep(0.1)

    def check_logs(self):
        problems = []
        for path in self._runs:
            if not path.exists():
                continue
            text = path.read_text(errors="replace")
            for pat in SANITIZER_PATTERNS:
                if pat in text:
                    problems.append(f"{path.name}: sanitizer report ({pat}):\n{_tail(text, 80)}")
                    break
            bad = [ln for ln in text.splitlines()
                   if ERROR_LINE.search(ln) and not any(a.search(ln) for a in self._allowed)]
            if bad:
                problems.append(f"{path.name}: unexpected error log lines:\n" +
                                "\n".join(bad[:20]))
        return problems

    def teardown(self):
        """Close the test's connections, then check: no crash, no fd leak, clean SIGTERM exit
        with code 0, no sanitizer report, no unexpected error line. Always stops the process."""
        problems = []
        try:
            self.clients.close_all()
            if self.proc is not None and self.proc.poll() is not None:
                known = any(pid == self.proc.pid for pid, _, _ in self._exits)
                rc = self.proc.returncode
                if not known and self._stop_sent == self.proc.pid:
                    if rc != 0:
                        problems.append(f"slbd exited with {rc} after SIGTERM (expected 0)")
                    self._exits.append((self.proc.pid, rc, True))
                elif not known:
                    problems.append(f"slbd exited unexpectedly with {rc}")
                    self._exits.append((self.proc.pid, rc, False))
            leak = self.check_fds()
            if leak:
                problems.append(leak)
            if self.running():
                try:
                    rc = self.stop(signal.SIGTERM, timeout=15)
                    if rc != 0:
                        problems.append(f"slbd exited with {rc} on SIGTERM (expected 0)")
                except HarnessError as e:
                    problems.append(str(e))
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            if self.proc is not None:
                _live_procs.discard(self.proc)
        problems += self.check_logs()
        if problems:
            raise HarnessError("post-test checks of slbd failed:\n" + "\n".join(problems) +
                               f"\n--- slbd log tail ---\n{_tail(self.log_text(), 30)}")

    # --- configuration helpers ---

    def add_group(self, name, servers, scheduler="wrr", health_check=None):
        body = {"name": name, "scheduler": scheduler, "servers": servers}
        if health_check is not None:
            body["health_check"] = health_check
        st, js = self.api.post("/v1/groups", body)
        if st != 201:
            raise HarnessError(f"POST /v1/groups {name}: {st} {js}")
        return js

    def put_group(self, name, servers, scheduler="wrr", health_check=None):
        body = {"name": name, "scheduler": scheduler, "servers": servers}
        if health_check is not None:
            body["health_check"] = health_check
        st, js = self.api.put(f"/v1/groups/{name}", body)
        if st != 200:
            raise HarnessError(f"PUT /v1/groups/{name}: {st} {js}")
        return js

    def add_tcp_listener(self, name, group, port=None, **extra):
        """Create a tcp listener on 127.0.0.1 and return its port; a port that another process
        took since it was chosen is replaced by a new one (unless port was given)."""
        for _ in range(5):
            p = port or free_port()
            body = {"name": name, "protocol": "tcp", "bind": f"127.0.0.1:{p}",
                    "backend_group": group, **extra}
            st, js = self.api.post("/v1/listeners", body)
            if st == 201:
                return p
            code = (js or {}).get("error", {}).get("code")
            if port or code != "bind_failed":
                raise HarnessError(f"POST /v1/listeners {name}: {st} {js}")
        raise HarnessError(f"POST /v1/listeners {name}: no bindable port")

    def stats(self):
        st, js = self.api.get("/v1/stats")
        if st != 200:
            raise HarnessError(f"GET /v1/stats: {st} {js}")
        return js

    def server_stats(self, group, port):
        for g in self.stats().get("groups", []):
            if g.get("name") == group:
                for s in g.get("servers", []):
                    if s.get("port") == port:
                        return s
        return None

    def wait_health(self, group, port, state, timeout):
        def pred():
            s = self.server_stats(group, port)
            return s is not None and s.get("health") == state
        wait_until(pred, timeout, f"server {port} of group {group} to be {state}")


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def parse_metrics(text):
    """Prometheus text → {"name{labels}": value}; a line that is not the format fails."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        if not m:
            raise HarnessError(f"not Prometheus text: {line!r}")
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def no_health_check():
    return {"enabled": False}


def fast_health_check(**kw):
    """Checks every second; two failures take a server out, two successes bring it back."""
    hc = {"protocol": "tcp", "interval_s": 1, "timeout_s": 1, "unhealthy_threshold": 2,
          "healthy_threshold": 2}
    hc.update(kw)
    return hc


def dead_port():
    """A port on which nothing listens (connects are refused at once)."""
    return free_port()
