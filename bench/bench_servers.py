# SPDX-License-Identifier: Apache-2.0
"""The three servers under test (HAProxy, nginx, slbd) and the backend, each started pinned to
its CPU on the same ports, with the processes whose CPU and memory count for it."""

import hashlib
import json
import os
import re
import shutil
import ssl
import socket
import subprocess
import time
import urllib.error
import urllib.request

from bench_procs import children, wait_port

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


class BenchError(Exception):
    """A setup step failed; the message says which and where its log is."""


def render(template, out, values):
    """Fills @NAME@ placeholders of bench/conf/TEMPLATE into out; an unknown one is an error."""
    with open(os.path.join(BENCH_DIR, "conf", template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise BenchError(f"{template}: no value for {', '.join(sorted(set(left)))}")
    with open(out, "w") as f:
        f.write(text)


def _client_ctx():
    """One client context for the whole run: creating one per handshake would load the system
    CA store each time (tens of ms), which the activation latency must not include. It keeps no
    sessions, so every handshake is a full one."""
    global _CTX
    if _CTX is None:
        _CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _CTX.check_hostname = False
        _CTX.verify_mode = ssl.CERT_NONE
    return _CTX


_CTX = None


def https_get(port, path, timeout=5.0):
    """One request over TLS; returns (status, body length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with _client_ctx().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    return status, len(body)


def presented_cert_sha256(port, timeout=5.0):
    """SHA-256 of the leaf certificate a fresh handshake presents (no session reuse)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with _client_ctx().wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


class Backend:
    """The HTTP backend all three servers proxy to, on the client CPU."""

    def __init__(self, env, kind):
        self.env = env
        self.kind = kind
        self.proc = None
        if kind == "fixed":
            self.small_path, self.big_path = "/", "/1m"
        else:
            self.small_path, self.big_path = "/bytes/100", "/bytes/1048576"

    def start(self):
        e = self.env
        addr = f"127.0.0.1:{e.backend_port}"
        if self.kind == "fixed":
            argv = [e.tools / "fixed-backend", "--listen", addr, "--small-bytes", "100"]
        else:
            argv = [e.build / "echo-backend", "--listen", addr, "--name", "bench", "--mode",
                    "http"]
        self.proc = e.procs.start("backend", argv, cpu=e.client_cpu)
        if not wait_port(e.backend_port):
            raise BenchError(f"the backend did not start; see {e.work}/backend.log")

    def stop(self):
        if self.proc:
            self.env.procs.stop(self.proc)
            self.proc = None


class Server:
    """Common part: start pinned to the server CPU, wait until the listener answers."""

    name = "?"

    def __init__(self, env):
        self.env = env
        self.proc = None
        self.dir = os.path.join(env.work, self.name)

    def cpu_pids(self):
        return [self.proc.pid] if self.proc else []

    def mem_pids(self):
        return self.cpu_pids()

    def stats(self):
        return {}

    def version(self):
        return ""

    def _wait_ready(self):
        e = self.env
        if not wait_port(e.port, timeout=15):
            raise BenchError(f"{self.name} does not listen on {e.port}; see {self.dir}/*.log")
        for path, want in ((e.backend.small_path, 100), (e.backend.big_path, 1 << 20)):
            status, n = https_get(e.port, path)
            if status != 200 or n != want:
                raise BenchError(f"{self.name}: GET {path} answered {status} with {n} bytes, "
                                 f"expected 200 with {want}")

    def start(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        for f in ("server.crt", "server.key", "server.pem"):
            shutil.copy(os.path.join(self.env.pki, f), self.dir)
        self._start()
        self._wait_ready()

    def stop(self):
        if self.proc:
            self.env.procs.stop(self.proc)
            self.proc = None


class HAProxy(Server):
    name = "haproxy"

    def _start(self):
        e = self.env
        cfg = os.path.join(self.dir, "haproxy.cfg")
        render("haproxy.cfg.in", cfg, {"DIR": self.dir, "LISTEN": f"127.0.0.1:{e.port}",
                                       "BACKEND": f"127.0.0.1:{e.backend_port}",
                                       "HTTP_REUSE": e.args.backend_reuse, "PORT": e.port})
        # -db: foreground, no master-worker: the one process does all the work.
        self.proc = e.procs.start("haproxy", ["haproxy", "-db", "-f", cfg], cpu=e.server_cpu)

    def version(self):
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else ""


class Nginx(Server):
    name = "nginx"

    def _start(self):
        e = self.env
        os.makedirs(os.path.join(self.dir, "nginx-tmp"))
        cfg = os.path.join(self.dir, "nginx.conf")
        render("nginx.conf.in", cfg, {"DIR": self.dir, "LISTEN": f"127.0.0.1:{e.port}",
                                      "BACKEND": f"127.0.0.1:{e.backend_port}",
                                      "BACKEND_IDLE": max(64, e.args.h2_conns *
                                                          e.args.h2_streams),
                                      "PORT": e.port})
        self.proc = e.procs.start("nginx", ["nginx", "-c", cfg, "-p", self.dir + "/"],
                                  cpu=e.server_cpu)
        end = time.monotonic() + 10
        while not children(self.proc.pid) and time.monotonic() < end:
            time.sleep(0.05)

    def cpu_pids(self):
        # The worker does the work; the master only supervises.
        return children(self.proc.pid) if self.proc else []

    def mem_pids(self):
        return ([self.proc.pid] + children(self.proc.pid)) if self.proc else []

    def version(self):
        r = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
        return (r.stderr or r.stdout).strip()


class Slbd(Server):
    name = "slbd"
    CERT_ID = "bench"

    def _api(self, method, path, body=None, timeout=10):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.env.admin_port}{path}", data=data,
                                     method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as ex:
            return ex.code, ex.read()

    def _must(self, method, path, body, want):
        status, data = self._api(method, path, body)
        if status != want:
            raise BenchError(f"slbd: {method} {path} answered {status}: {data[:300]!r}")
        return data

    def _start(self):
        e = self.env
        state = os.path.join(self.dir, "state")
        self.proc = e.procs.start(self.name, [self.binary(), "--state-dir", state, "--admin",
                                           f"127.0.0.1:{e.admin_port}", "--workers",
                                           str(e.args.slbd_workers), "--log-level", "warn"],
                                  cpu=e.server_cpu if e.args.slbd_workers == 1 else None)
        if not wait_port(e.admin_port, timeout=15):
            raise BenchError(f"{self.name}'s admin API did not start; see "
                             f"{e.work}/{self.name}.log")
        with open(os.path.join(state, "admin.token")) as f:
            self.token = f.read().strip()
        with open(os.path.join(self.dir, "server.crt")) as f:
            cert = f.read()
        with open(os.path.join(self.dir, "server.key")) as f:
            key = f.read()
        self._must("POST", "/v1/certificates", {"id": self.CERT_ID, "name": "bench",
                                                "type": "server", "certificate": cert,
                                                "private_key": key}, 201)
        # Health checks off: the anchors run none either.
        self._must("POST", "/v1/groups", {
            "name": "be", "scheduler": "wrr",
            "servers": [{"address": "127.0.0.1", "port": e.backend_port, "weight": 100}],
            "health_check": {"enabled": False}}, 201)
        # The idle-connection scenario holds connections for several seconds before and after
        # their first request: 60 s like the anchors' keep-alive timeouts. Pooled backend
        # connections go to any request, a client connection's first one too, as with
        # HAProxy's "http-reuse always" and nginx's upstream keepalive (slbd's default,
        # "safe", would open a backend connection per new client connection; --backend-reuse
        # safe measures that, against HAProxy's "http-reuse safe").
        self._must("POST", "/v1/listeners", {
            "name": "bench", "protocol": "https", "bind": f"127.0.0.1:{e.port}",
            "backend_group": "be", "idle_timeout_s": 60,
            "backend_reuse": e.args.backend_reuse,
            "tls": {"certificates": [self.CERT_ID], "session_ticket_lifetime_s": 300}}, 201)

    def binary(self):
        return self.env.slbd_bin

    def stats(self):
        """Handshake counters of the listener from /metrics."""
        status, data = self._api("GET", "/metrics")
        res = {}
        if status != 200:
            return res
        for line in data.decode(errors="replace").splitlines():
            m = re.match(r'slbd_listener_handshakes_total\{listener="bench",type="(\w+)"\} (\d+)',
                         line)
            if m:
                res["handshakes_" + m.group(1)] = int(m.group(2))
            m = re.match(r'slbd_listener_handshake_failures_total\{listener="bench",'
                         r'reason="(\w+)"\} (\d+)', line)
            if m:
                res["handshake_failures"] = res.get("handshake_failures", 0) + int(m.group(2))
        return res

    def replace_cert(self, cert_pem, key_pem):
        """PUT /v1/certificates/bench; returns the HTTP status."""
        status, _ = self._api("PUT", f"/v1/certificates/{self.CERT_ID}", {
            "name": "bench", "type": "server", "certificate": cert_pem, "private_key": key_pem})
        return status

    def version(self):
        try:
            rev = subprocess.run(["git", "-C", str(self.env.repo), "describe", "--always",
                                  "--dirty"], capture_output=True, text=True).stdout.strip()
        except OSError:
            rev = ""
        return (f"slbd (git {rev or 'unknown'}, binary sha256 {self.env.slbd_sha256[:12]}, "
                f"--workers {self.env.args.slbd_workers})")


class SlbdBase(Slbd):
    """--baseline-slbd PATH: another slbd binary (the build before a change, say), run in the
    same run with the same configuration, so that a before/after comparison is one run on the
    same machine state. Shown as the server "slbd-base"; not an anchor."""

    name = "slbd-base"

    def binary(self):
        return self.env.slbd_base_bin

    def version(self):
        return (f"slbd baseline ({self.env.args.baseline_slbd}, binary sha256 "
                f"{self.env.slbd_base_sha256[:12]}, --workers {self.env.args.slbd_workers})")


class Floor(Server):
    """Scenario 5's floor, not a server under test: bench/tools/tlsfloor, OpenSSL with
    SSL_MODE_RELEASE_BUFFERS and a descriptor per connection, nothing else. It answers every
    request head with a fixed 100-byte response and has no backend, so only the memory scenario
    runs against it."""

    name = "openssl-floor"

    def _start(self):
        e = self.env
        self.proc = e.procs.start("tlsfloor", [
            e.tools / "tlsfloor", "--listen", f"127.0.0.1:{e.port}",
            "--cert", os.path.join(self.dir, "server.crt"),
            "--key", os.path.join(self.dir, "server.key")], cpu=e.server_cpu)

    def _wait_ready(self):
        if not wait_port(self.env.port, timeout=15):
            raise BenchError(f"tlsfloor does not listen on {self.env.port}; see "
                             f"{self.env.work}/tlsfloor.log")
        presented_cert_sha256(self.env.port)

    def version(self):
        return f"bench/tools/tlsfloor on {ssl.OPENSSL_VERSION}"


SERVERS = {"haproxy": HAProxy, "nginx": Nginx, "slbd": Slbd, "slbd-base": SlbdBase}
