#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""`make bench-scale`: slbd with many certificates and listeners, side by side with a small
configuration and with HAProxy (Debian's) loading the same certificates from a crt-list, in one
run. Measures start-up time, resident memory per loaded certificate, the activation time (the
API's answer: activation is synchronous) of a certificate replace and of a weight change with
10,000 certificates on 1,000 listeners against 10 certificates on 1 listener, TLS contexts
built by each change, and full handshakes for arbitrary names. Writes
bench/results/scale-<timestamp>.json and prints a table; docs/benchmarks.md ("Scale") explains
it. Certificates are generated once with Python's cryptography and cached under build/."""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))
import scale_certs as sc  # noqa: E402

BUILD = REPO / os.environ.get("SLBD_BUILD", "build")


def free_ports(n):
    """n distinct ports free now on 127.0.0.1 (the kernel's choice, all held until chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def handshakes(port, names, root):
    """Full handshakes (TLS 1.3, no resumption) for names; returns (ms per handshake p50,
    mismatches)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(root)
    ctx.check_hostname = True
    times, bad = [], 0
    for n in names:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            try:
                with ctx.wrap_socket(s, server_hostname=n):
                    pass
            except ssl.SSLCertVerificationError:
                bad += 1
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), bad


class PortTaken(Exception):
    """A port chosen free was taken by another program before slbd bound it."""


def start_slbd(work, ncerts, cache, layout):
    """Slbd with the listeners layout(ports) gives, on fresh ports until they bind (other
    programs on this host take ports too). Returns (slbd, ports)."""
    for attempt in range(5):
        ports = free_ports(len(layout(None)))
        try:
            return Slbd(Path(work) / f"try{attempt}", ncerts, layout(ports), cache), ports
        except PortTaken:
            continue
    raise SystemExit("could not bind the listeners' ports in 5 attempts")


class Slbd:
    def __init__(self, work, ncerts, listeners, cache):
        """listeners: list of (name, port, [cert indexes])."""
        self.dir = Path(work) / f"slbd-{ncerts}-{len(listeners)}"
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700)
        (self.dir / "certs").mkdir(mode=0o700)
        for i in range(ncerts):
            f = f"{sc.cert_id(i)}.json"
            shutil.copyfile(cache / "certs" / f, self.dir / "certs" / f)
            os.chmod(self.dir / "certs" / f, 0o600)
        self.backend = free_ports(1)[0]
        cfg = {"listeners": [{"name": n, "protocol": "https", "bind": f"127.0.0.1:{p}",
                              "backend_group": "g",
                              "tls": {"certificates": [sc.cert_id(i) for i in ids]}}
                             for n, p, ids in listeners],
               "groups": [{"name": "g", "servers": [{"address": "127.0.0.1",
                                                      "port": self.backend, "weight": 100}],
                           "health_check": {"enabled": False}}]}
        fd = os.open(self.dir / "config.json", os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f)
        self.admin = free_ports(1)[0]
        self.log = open(self.dir / "stderr", "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen([BUILD / "slbd", "--state-dir", self.dir, "--admin",
                                      f"127.0.0.1:{self.admin}", "--workers", "2",
                                      "--log-level", "warn"], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        while True:
            if self.proc.poll() is not None:
                text = (self.dir / "stderr").read_text()
                if "bind_failed" in text:
                    raise PortTaken(text)
                raise SystemExit(f"slbd exited: {text[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.05)
        self.start_s = time.monotonic() - t0
        self.start_cpu_s = cpu_s(self.proc.pid)
        self.token = (self.dir / "admin.token").read_text().strip()
        time.sleep(1)
        self.rss = rss_kib(self.proc.pid)

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", data=data,
                                     method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
        return (time.perf_counter() - t0) * 1000, body

    def builds(self):
        _, text = self.api("GET", "/metrics")
        return int(float(re.search(rb"^slbd_tls_context_builds_total (\S+)$", text,
                                   re.M).group(1)))

    def weight_change(self, i):
        """One weight change (50 or 51 by parity of i); its answer time in ms."""
        return self.api("PATCH", f"/v1/groups/g/servers/127.0.0.1:{self.backend}",
                        {"weight": 50 + i % 2})[0]

    def replace(self, body, i):
        return self.api("PUT", f"/v1/certificates/{sc.cert_id(i)}", body)[0]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Haproxy:
    def __init__(self, work, ncerts, cache):
        d = Path(work) / f"haproxy-{ncerts}"
        (d / "pem").mkdir(parents=True)
        lines = []
        for i in range(ncerts):
            doc = json.loads((cache / "certs" / f"{sc.cert_id(i)}.json").read_text())
            p = d / "pem" / f"{sc.cert_id(i)}.pem"
            p.write_text(doc["certificate"] + doc["private_key"])
            lines.append(str(p))
        (d / "crt-list").write_text("\n".join(lines) + "\n")
        self.port, backend = free_ports(2)
        (d / "haproxy.cfg").write_text(f"""global
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{self.port} ssl crt-list {d / 'crt-list'}
    default_backend be
backend be
    server s1 127.0.0.1:{backend}
""")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", d / "haproxy.cfg"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("haproxy exited")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.start_s = time.monotonic() - t0
        self.start_cpu_s = cpu_s(self.proc.pid)
        time.sleep(1)
        self.rss = rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--certs", type=int, default=10000)
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=30, help="samples per change kind")
    ap.add_argument("--handshakes", type=int, default=200)
    a = ap.parse_args()
    n, nl = a.certs, a.listeners
    t0 = time.monotonic()
    cache = sc.cached(BUILD, n)
    print(f"scale: {n} certificates ready in {time.monotonic() - t0:.1f} s ({cache})")
    root = str(cache / "root.pem")
    # Replacements of certificate 3, made before any clock runs.
    bodies = []
    for k in range(a.changes):
        pem, key, _ = sc.issue_one(cache, 3)
        bodies.append({"name": "scale-3", "type": "server", "certificate": pem,
                       "private_key": key})
    rng = random.Random(19)
    names = [sc.name_of(rng.randrange(2, n)) for _ in range(a.handshakes)]
    small_names = [sc.name_of(rng.choice([0, 2, 3, 4, 5, 6, 7, 8, 9]))
                   for _ in range(a.handshakes)]
    res = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "loadavg_start": os.getloadavg(), "certs": n, "listeners": nl}
    with tempfile.TemporaryDirectory(prefix="slbd-scale-") as work:
        # Small: 10 certificates, 1 listener. Large: n certificates, nl listeners, the first
        # holding all n, the others n/nl each. Both run at once and their changes alternate
        # (small, large, small, ...), so both see the same moments of a shared machine.
        per = max(1, n // nl)

        def large(ports):
            ports = ports or [None] * nl
            return [("all", ports[0], list(range(n)))] + [
                (f"l{k}", ports[k], [(k * per + j) % n for j in range(per)])
                for k in range(1, nl)]

        small_s, small_ports = start_slbd(work, 10, cache,
                                          lambda ports: [("web", ports and ports[0],
                                                          list(range(10)))])
        large_s = None
        try:
            large_s, large_ports = start_slbd(work + "/large", n, cache, large)
            both = (small_s, large_s)
            b0 = [x.builds() for x in both]
            w = ([], [])
            for k in range(a.changes):
                for j, x in enumerate(both):
                    w[j].append(x.weight_change(k))
            wb = [(x.builds() - b) / a.changes for x, b in zip(both, b0)]
            b0 = [x.builds() for x in both]
            r = ([], [])
            for body in bodies:
                for j, x in enumerate(both):
                    r[j].append(x.replace(body, 3))
            rb = [(x.builds() - b) / len(bodies) for x, b in zip(both, b0)]
            for j, (key, x, port, hnames) in enumerate(
                    (("small", small_s, small_ports[0], small_names),
                     ("large", large_s, large_ports[0], names))):
                hs, bad = handshakes(port, hnames, root)
                res[key] = {"start_s": x.start_s, "start_cpu_s": x.start_cpu_s,
                            "rss_kib": x.rss, "weight_ms": w[j], "weight_builds": wb[j],
                            "replace_ms": r[j], "replace_builds": rb[j], "handshake_ms": hs,
                            "wrong_certificate": bad}
        finally:
            small_s.stop()
            if large_s:
                large_s.stop()
        # Memory per certificate: one listener with all n, against 10.
        s, _ = start_slbd(work + "/one", n, cache,
                          lambda ports: [("all", ports and ports[0], list(range(n)))])
        res["one_listener"] = {"start_s": s.start_s, "start_cpu_s": s.start_cpu_s,
                               "rss_kib": s.rss}
        s.stop()
        if shutil.which("haproxy"):
            h10 = Haproxy(work, 10, cache)
            h10.stop()
            hn = Haproxy(work, n, cache)
            hs, bad = handshakes(hn.port, names, root)
            hn.stop()
            res["haproxy"] = {"start_s_10": h10.start_s, "rss_kib_10": h10.rss,
                              "start_s": hn.start_s, "start_cpu_s": hn.start_cpu_s,
                              "rss_kib": hn.rss, "handshake_ms": hs, "wrong_certificate": bad}
    res["loadavg_end"] = os.getloadavg()
    out = REPO / "bench" / "results" / f"scale-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    report(res, n, nl)
    print(f"results: {out.relative_to(REPO)}")


def report(res, n, nl):
    sm, lg, one = res["small"], res["large"], res["one_listener"]
    hp = res.get("haproxy")

    def row(what, small, large, fmt="{:.2f}"):
        ratio = large / small if small else float("nan")
        print(f"  {what:<44} {fmt.format(small):>10} {fmt.format(large):>10} {ratio:>7.2f}x")

    print(f"\nscale ({n} certificates, {nl} listeners vs 10 certificates, 1 listener); "
          f"load average {res['loadavg_start'][0]:.1f} -> {res['loadavg_end'][0]:.1f}")
    print(f"  {'':<44} {'small':>10} {'large':>10} {'ratio':>8}")
    for kind in ("weight", "replace"):
        for p in (50, 99):
            row(f"{kind} change activation p{p} (ms)", pct(sm[f"{kind}_ms"], p),
                pct(lg[f"{kind}_ms"], p))
        row(f"{kind} change: TLS contexts built", sm[f"{kind}_builds"], lg[f"{kind}_builds"])
    row("full handshake, arbitrary name, p50 (ms)", sm["handshake_ms"], lg["handshake_ms"])
    row("start-up (s)", sm["start_s"], lg["start_s"])
    row("start-up CPU (s)", sm["start_cpu_s"], lg["start_cpu_s"])
    per_slbd = (one["rss_kib"] - sm["rss_kib"]) / (n - 10)
    print(f"\n  one listener with {n} certificates: start-up {one['start_s']:.1f} s "
          f"({one['start_cpu_s']:.1f} s CPU), RSS {one['rss_kib'] / 1024:.0f} MiB, "
          f"{per_slbd:.1f} KiB per certificate")
    if hp:
        per_hp = (hp["rss_kib"] - hp["rss_kib_10"]) / (n - 10)
        print(f"  HAProxy crt-list with {n}: start-up {hp['start_s']:.1f} s "
              f"({hp['start_cpu_s']:.1f} s CPU), RSS {hp['rss_kib'] / 1024:.0f} MiB, "
              f"{per_hp:.1f} KiB per certificate; slbd/HAProxy memory per certificate "
              f"{per_slbd / per_hp:.2f}x; handshake p50 {hp['handshake_ms']:.2f} ms "
              f"(slbd {lg['handshake_ms']:.2f} ms)")
    for k, v in (("slbd", lg), ("haproxy", hp or {})):
        if v.get("wrong_certificate"):
            print(f"  WARNING: {k} served a certificate not matching the name "
                  f"{v['wrong_certificate']} times")


if __name__ == "__main__":
    main()
