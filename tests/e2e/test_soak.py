# SPDX-License-Identifier: Apache-2.0
"""Soak: one million requests over keep-alive TLS connections (h2load, HTTP/1.1) through an
https listener while slbd's resident memory is sampled every second. After the warm-up the
memory must stay flat: the mean of the last quarter of the samples within 5 % of the mean of
the second quarter. Runs only with SLBD_SOAK=1 (it takes minutes); the figures are printed."""

import os
import re
import subprocess
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import add_listener, hx, listener_stats  # noqa: F401
from pki import pki, tls_block, upload_server  # noqa: F401

pytestmark = pytest.mark.skipif(os.environ.get("SLBD_SOAK") != "1",
                                reason="soak test: set SLBD_SOAK=1 to run it (several minutes)")

REQUESTS = int(os.environ.get("SLBD_SOAK_REQUESTS", "1000000"))
CLIENTS = 50


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.mark.slbd(workers=2)
@pytest.mark.timeout(3600)
def test_one_million_requests_with_flat_memory(slbd, hx, pki):
    tool = hu.require_tool("h2load", "nghttp2-client")
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=h.no_health_check())
    cid = upload_server(slbd, pki, "server")
    port = add_listener(slbd, "soak", "g", protocol="https", tls=tls_block([cid]),
                        idle_timeout_s=300)
    argv = [tool, "--h1", "-n", str(REQUESTS), "-c", str(CLIENTS), "-t", "1",
            f"https://127.0.0.1:{port}/soak"]
    t0 = time.monotonic()
    with hu.RssSampler(slbd.pid, 1.0) as rss:
        p = subprocess.run(argv, capture_output=True, timeout=h.scaled(3000),
                           stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    assert m, out[-2000:]
    total, started, done, ok, failed, errored = map(int, m.groups())
    samples = rss.values()
    n = len(samples)
    assert n >= 8, f"only {n} RSS samples in {wall:.0f} s"
    q = n // 4
    q2, q4 = samples[q:2 * q], samples[3 * q:]
    m2, m4 = _mean(q2), _mean(q4)
    drift = (m4 - m2) / m2
    print(f"\nsoak: {ok}/{REQUESTS} requests succeeded in {wall:.0f} s "
          f"({ok / wall:.0f} req/s, {CLIENTS} keep-alive TLS connections); RSS KiB: start "
          f"{samples[0]}, peak {max(samples)}, end {samples[-1]}; second-quarter mean "
          f"{m2:.0f}, last-quarter mean {m4:.0f} ({drift * 100:+.2f} %); {n} samples\n"
          f"RSS samples (KiB): {samples}")
    assert (done, ok, failed, errored) == (REQUESTS, REQUESTS, 0, 0), out[-2000:]
    assert abs(drift) <= 0.05, (f"RSS not flat after warm-up: last quarter {m4:.0f} KiB vs "
                                f"second quarter {m2:.0f} KiB ({drift * 100:+.2f} %)")
    codes = re.search(r"status codes: (\d+) 2xx", out)
    assert codes and int(codes.group(1)) == REQUESTS, out[-2000:]
    stats = listener_stats(slbd, "soak")
    assert stats["requests"]["2xx"] >= REQUESTS, stats
