# SPDX-License-Identifier: Apache-2.0
"""The cluster-mode harness: a 3-member etcd cluster on loopback ports (plain, or https with
client-certificate authentication), and slbd nodes started with --cluster, each pinned to its
own loopback address (127.0.0.1, 127.0.0.2, ...) with --bind-host. Everything is torn down
after the test; the nodes get the usual post-test checks (crash, sanitizer, error lines,
leaked descriptors), where connections to etcd and to other nodes do not count as leaks
(they come and go with watches, leases and reconnects)."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import slbd_harness as h

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")



def _slbd_has_cluster_mode():
    """Whether the slbd under test knows --cluster (a missing binary counts as yes: the
    harness then fails the test with the reason)."""
    try:
        p = subprocess.run([str(h.binary("slbd")), "--help"], capture_output=True, timeout=30)
    except (h.HarnessError, OSError, subprocess.TimeoutExpired):
        return True
    return b"--cluster" in p.stdout + p.stderr


needs_etcd = [
    pytest.mark.skipif(not (ETCD and ETCDCTL),
                       reason="etcd/etcdctl not installed (Debian etcd-server, etcd-client; "
                              "scripts/deps.sh installs them)"),
    pytest.mark.skipif(not _slbd_has_cluster_mode(),
                       reason="this slbd has no cluster mode (--cluster)"),
]

# Error log lines a node may write while etcd, or part of it, is away on purpose.
ETCD_TROUBLE = (r"etcd", r"cluster", r"lease", r"watch", r"connect", r"unreachable",
                r"unavailable", r"timed out", r"refused")


def _run(argv, cwd=None, timeout=60, env=None):
    p = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True,
                       timeout=h.scaled(timeout), env=env)
    if p.returncode != 0:
        raise h.HarnessError(f"{' '.join(map(str, argv))} failed ({p.returncode}):\n"
                             f"{p.stdout.decode(errors='replace')}"
                             f"{p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


def make_etcd_pki(d):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as the
    etcd unit test makes them (EC P-256). Returns {"ca", "server_cert", "server_key",
    "client_cert", "client_key"} paths."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
          "/CN=slbd-test-etcd-ca"], cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for n in ("server", "client"):
        _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", f"{n}.key", "-out", f"{n}.csr", "-subj",
              f"/CN=slbd-test-etcd-{n}"], cwd=d)
        _run(["openssl", "x509", "-req", "-in", f"{n}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", "2", "-extfile", f"{n}.ext", "-out", f"{n}.pem"],
             cwd=d)
        os.chmod(d / f"{n}.key", 0o600)
    return {"ca": d / "ca.pem", "server_cert": d / "server.pem", "server_key": d / "server.key",
            "client_cert": d / "client.pem", "client_key": d / "client.key"}


# --------------------------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------------------------


class EtcdMember:
    """One etcd process: a name, a client and a peer port on 127.0.0.1 (kept across restarts,
    so the cluster and slbd's endpoint list stay valid) and a data directory."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.client_port = h.free_port()
        self.peer_port = h.free_port()
        self.data_dir = cluster.dir / f"{name}.data"
        self.log_path = cluster.dir / f"{name}.log"
        self.proc = None
        self.started_once = False

    @property
    def client_url(self):
        return f"{'https' if self.cluster.tls else 'http'}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    def argv(self):
        a = [ETCD, "--name", self.name, "--data-dir", self.data_dir,
             "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
             "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
             "--initial-cluster", self.cluster.initial_cluster(),
             "--initial-cluster-state", "new", "--initial-cluster-token", self.cluster.token,
             "--heartbeat-interval", "50", "--election-timeout", "500",
             "--experimental-watch-progress-notify-interval", "300ms",
             "--logger", "zap", "--log-outputs", "stderr"]
        if self.cluster.tls:
            p = self.cluster.pki
            a += ["--client-cert-auth", "--trusted-ca-file", p["ca"], "--cert-file",
                  p["server_cert"], "--key-file", p["server_key"]]
        return a

    def start(self):
        if self.running():
            return self
        with open(self.log_path, "ab") as log:
            self.proc = h._spawn(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT)
        self.started_once = True
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: the member vanishes as a crashed machine would."""
        self._end(signal.SIGKILL)

    def stop(self):
        self._end(signal.SIGTERM)

    def _end(self, sig):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(h.scaled(15))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        h._live_procs.discard(self.proc)

    def healthy(self):
        """etcd's /health says true (the member is part of a cluster with a leader)."""
        try:
            with self.cluster.http_open(f"{self.client_url}/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False


class EtcdCluster:
    """n etcd members on 127.0.0.1; with tls, https client URLs that require a client
    certificate signed by the test CA (self.pki)."""

    def __init__(self, workdir, n=3, tls=False, name="etcd"):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.token = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.pki = make_etcd_pki(self.dir / "pki") if tls else None
        self.members = [EtcdMember(self, f"{name}{i}") for i in range(n)]
        self._ctx = None
        if tls:
            import ssl
            ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
            ctx.load_cert_chain(str(self.pki["client_cert"]), str(self.pki["client_key"]))
            self._ctx = ctx

    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self):
        """The value of slbd's --cluster: every member's client URL."""
        return ",".join(m.client_url for m in self.members)

    def slbd_args(self, members=None):
        """--cluster (every member, or those given) and, with TLS, the client certificate
        options."""
        a = ["--cluster", ",".join(m.client_url for m in (members or self.members))]
        if self.tls:
            a += ["--etcd-cacert", self.pki["ca"], "--etcd-cert", self.pki["client_cert"],
                  "--etcd-key", self.pki["client_key"]]
        return a

    def http_open(self, url, data=None, timeout=5):
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self._ctx))
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        return opener.open(req, timeout=timeout)

    def start(self, timeout=30):
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=30, members=None):
        ms = members or [m for m in self.members if m.running()]

        def ok():
            for m in ms:
                if not m.running():
                    raise h.HarnessError(f"etcd member {m.name} exited:\n"
                                         f"{h._tail(m.log_path.read_text(errors='replace'))}")
            return all(m.healthy() for m in ms)
        h.wait_until(ok, timeout, "the etcd members to be healthy", interval=0.1)

    def stop_all(self):
        for m in self.members:
            m.stop()

    def kill_all(self):
        for m in self.members:
            m.kill()

    def start_all(self, timeout=30):
        """Start every member that is down again (same ports, same data) and wait."""
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)

    def etcdctl(self, *args, timeout=30):
        """etcdctl (API v3) against the running members; returns stdout."""
        eps = ",".join(m.client_url for m in self.members if m.running())
        argv = [ETCDCTL, "--endpoints", eps, "--dial-timeout", "3s",
                "--command-timeout", "10s"]
        if self.tls:
            argv += ["--cacert", self.pki["ca"], "--cert", self.pki["client_cert"],
                     "--key", self.pki["client_key"]]
        env = dict(os.environ, ETCDCTL_API="3")
        return _run(argv + list(args), timeout=timeout, env=env)

    def revision(self):
        """etcd's current revision (header of an empty range)."""
        out = self.etcdctl("get", "--write-out", "json", "slbd-test-no-such-key")
        return int(json.loads(out)["header"]["revision"])

    def compact(self, rev=None):
        rev = rev or self.revision()
        self.etcdctl("compact", str(rev), "--physical")
        return rev

    def dump(self, prefix):
        """Every key and value under prefix, as text (keys and values as stored)."""
        return self.etcdctl("get", "--prefix", prefix)

    def teardown(self):
        for m in self.members:
            m.kill()


# --------------------------------------------------------------------------------------------
# slbd nodes
# --------------------------------------------------------------------------------------------


class ClusterNode(h.Slbd):
    """slbd started with --cluster (options from the ClusterHarness) and --bind-host ADDR.
    The descriptor checks ignore TCP connections to etcd's client ports and to other nodes'
    admin ports: those belong to the cluster machinery, not to client traffic."""

    def __init__(self, harness, name, host, **kw):
        super().__init__(harness.workdir, name=name, **kw)
        self.harness = harness
        self.host = host
        # The etcd members this node is told about (None: all of them).
        self.etcd_members = None

    def argv(self, *extra):
        return super().argv(*self.harness.node_args(self), *extra)

    def _ignored_ports(self):
        ports = {m.client_port for m in self.harness.etcd.members}
        ports |= {n.admin_port for n in self.harness.nodes if n.admin_port}
        return ports

    def _fds(self):
        table = h.fd_table(self.proc.pid)
        socks = h.describe_sockets(self.proc.pid)
        ign = self._ignored_ports()
        out = {}
        for fd, target in table.items():
            if target.startswith("socket:["):
                desc = socks.get(target[8:-1], "")
                remote = desc.split("->")[1].split()[0] if "->" in desc else ""
                try:
                    rport = int(remote.rsplit(":", 1)[1]) if remote else 0
                except ValueError:
                    rport = 0
                if rport in ign:
                    continue
            out[fd] = target
        return out

    def fd_baseline(self):
        best = self._fds()
        for _ in range(5):
            time.sleep(0.03)
            now = self._fds()
            if len(now) < len(best):
                best = now
            elif len(now) == len(best):
                break
        self._fd_baseline = best

    def check_fds(self, timeout=5):
        if not self.running() or self._fd_baseline is None:
            return None
        deadline = time.monotonic() + h.scaled(timeout)
        while True:
            now = self._fds()
            if len(now) <= len(self._fd_baseline):
                return None
            if time.monotonic() >= deadline:
                extra = sorted(f"{fd}: {t}" for fd, t in now.items()
                               if self._fd_baseline.get(fd) != t)
                return (f"{self.name} leaked file descriptors: {len(now)} open vs "
                        f"{len(self._fd_baseline)} after start-up (etcd and peer connections "
                        f"excluded); new: {extra[:40]}")
            time.sleep(0.1)

    # --- cluster views ---

    def cluster(self):
        st, js = self.api.get("/v1/cluster")
        if st != 200:
            raise h.HarnessError(f"{self.name}: GET /v1/cluster: {st} {js}")
        return js

    def config(self):
        st, js = self.api.get("/v1/config")
        if st != 200:
            raise h.HarnessError(f"{self.name}: GET /v1/config: {st} {js}")
        return js

    def applied_revision(self):
        try:
            return int(self.cluster().get("revision") or 0)
        except (h.HarnessError, OSError, ValueError, TypeError):
            return 0


class ClusterHarness:
    """An etcd cluster plus slbd nodes sharing one cluster key and prefix. node(i) is
    started on 127.0.0.(i+1)."""

    _count = 0

    def __init__(self, workdir, etcd_members=3, tls=False, prefix=None, shared_token=False,
                 etcd=None):
        self.workdir = Path(workdir)
        ClusterHarness._count += 1
        # One admin token for every node (written into each state directory before its first
        # start), as `slbctl stats --cluster` needs; else each node creates its own.
        self.shared_token = os.urandom(32).hex() if shared_token else None
        # An etcd cluster of the module that other tests use too (under other prefixes), or
        # one of our own, which the test may kill and which goes with us.
        self.own_etcd = etcd is None
        self.etcd = etcd or EtcdCluster(workdir, etcd_members, tls=tls)
        self.prefix = prefix or f"/slbd-test-{os.getpid()}-{ClusterHarness._count}/"
        self.key_file = self.workdir / "cluster.key"
        self.key_file.write_bytes(os.urandom(32))
        os.chmod(self.key_file, 0o600)
        self.nodes = []

    def node_args(self, node):
        return [*self.etcd.slbd_args(node.etcd_members), "--node", node.name, "--cluster-key-file",
                self.key_file, "--cluster-prefix", self.prefix, "--bind-host", node.host]

    def add_node(self, start=True, name=None, **kw):
        i = len(self.nodes)
        node = ClusterNode(self, name or f"node{chr(ord('a') + i)}", f"127.0.0.{i + 1}", **kw)
        self.nodes.append(node)
        if self.shared_token:
            node.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tok = node.state_dir / "admin.token"
            tok.write_text(self.shared_token)
            os.chmod(tok, 0o600)
        if start:
            node.start()
        return node

    def start(self, nodes=3):
        self.etcd.start()
        for _ in range(nodes):
            self.add_node()
        return self

    def allow_etcd_trouble(self):
        """Nodes may log errors about etcd while the test takes it away."""
        for n in self.nodes:
            n.allow_errors(*ETCD_TROUBLE)

    def converged(self, nodes=None, timeout=15):
        """Wait until every running node serves the same configuration document; returns it."""
        ns = [n for n in (nodes or self.nodes) if n.running()]

        def same():
            docs = []
            for n in ns:
                try:
                    docs.append(json.dumps(n.config(), sort_keys=True))
                except (h.HarnessError, OSError):
                    return False
            return docs[0] if len(set(docs)) == 1 else False
        return json.loads(h.wait_until(same, timeout, "the nodes to serve one configuration",
                                       interval=0.1))

    def teardown(self):
        errors = []
        for n in self.nodes:
            try:
                n.teardown()
            except AssertionError as e:
                errors.append(str(e))
        if self.own_etcd:
            self.etcd.teardown()
        return errors


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory):
    """A 3-member etcd cluster for the tests of a module that leave etcd alone: each test's
    nodes use a prefix of their own, and starting etcd once saves seconds per test."""
    if not (ETCD and ETCDCTL):
        pytest.skip("etcd is not installed")
    e = EtcdCluster(tmp_path_factory.mktemp("etcd-shared"))
    try:
        yield e.start()
    finally:
        e.teardown()


@pytest.fixture
def cluster_factory(workdir, request):
    """cluster_factory(nodes=3, tls=False, etcd_members=3, start=True, shared_token=False,
    own_etcd=False): etcd and that many slbd nodes (node a on 127.0.0.1, b on 127.0.0.2,
    ...). The etcd is the module's shared one unless the test asks for its own (own_etcd, tls
    or another member count): a test that kills or stops etcd members must. Torn down after
    the test with the nodes' post-test checks."""
    made = []

    def make(nodes=3, tls=False, etcd_members=3, start=True, shared_token=False,
             own_etcd=False):
        etcd = None
        if not (own_etcd or tls or etcd_members != 3):
            etcd = request.getfixturevalue("shared_etcd")
            etcd.start_all()  # a no-op when all are up; waits until they are healthy
        c = ClusterHarness(workdir, etcd_members=etcd_members, tls=tls,
                           shared_token=shared_token, etcd=etcd)
        made.append(c)
        if start:
            c.start(nodes)
        return c

    yield make
    errors = []
    for c in made:
        errors += c.teardown()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def cluster(cluster_factory):
    """3 slbd nodes on the module's shared 3-member etcd, plain HTTP to etcd."""
    return cluster_factory()
