#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""What the admin API's reads cost at scale: slbd started as bench/scale.py starts it (the
certificates from its cache, one listener holding all of them and the others 10 each), then
GET /metrics, /v1/stats and the first pages of /v1/listeners and /v1/certificates, each
--rounds times in a row. Prints, per path, the answer time (p50, min) and slbd's user and
system CPU per request (from /proc/PID/stat: clock ticks, so use enough rounds). The control
thread answers these: while one is formed, no other admin request or health check runs.
docs/benchmarks.md ("Scale") has the figures. Usage:

    python3 bench/scale_reads.py [--certs 10000] [--listeners 1] [--rounds 40]

SLBD_BUILD names the build directory (default build), whose scale-certs cache is used."""

import argparse
import os
import statistics
import sys
import tempfile
import urllib.error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale as S  # noqa: E402
import scale_certs as sc  # noqa: E402

PATHS = ["/metrics", "/metrics?certificates=false", "/v1/stats", "/v1/listeners?limit=100", "/v1/listeners?limit=1000",
         "/v1/certificates?limit=100"]


def cpu(pid):
    """(user, system) CPU seconds of pid."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--certs", type=int, default=10000)
    ap.add_argument("--listeners", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=40)
    a = ap.parse_args()
    n, nl = a.certs, a.listeners
    cache = sc.cached(S.BUILD, max(n, 10))
    per = max(1, n // nl)

    def layout(ports):
        ports = ports or [None] * nl
        return [("all", ports[0], list(range(n)))] + [
            (f"l{k}", ports[k], [(k * per + j) % n for j in range(per)]) for k in range(1, nl)]

    print(f"{n} certificates, {nl} listeners, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="slbd-reads-") as work:
        s, _ = S.start_slbd(work, n, cache, layout)
        try:
            for path in PATHS:
                ms, size = [], 0
                u0, s0 = cpu(s.proc.pid)
                try:
                    for _ in range(a.rounds):
                        t, body = s.api("GET", path)
                        ms.append(t)
                        size = len(body)
                except urllib.error.HTTPError as e:  # a build without this parameter
                    print(f"{path:28s} {e.code} {e.reason}")
                    continue
                u1, s1 = cpu(s.proc.pid)
                print(f"{path:28s} p50 {statistics.median(ms):7.1f} ms  min {min(ms):7.1f} ms  "
                      f"CPU user {(u1 - u0) * 1000 / a.rounds:6.1f} ms  "
                      f"system {(s1 - s0) * 1000 / a.rounds:5.1f} ms  {size} B", flush=True)
        finally:
            s.stop()


if __name__ == "__main__":
    main()
