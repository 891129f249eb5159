# SPDX-License-Identifier: Apache-2.0
"""SNI at scale: one https listener with 10,000 certificates (loaded from the state directory
at start-up), a handshake for an arbitrary name gets that name's certificate, a wildcard
certificate covers one label, Host against SNI still answers 421; and changes cost what they
touch, as slbd_tls_context_builds_total shows: a weight change builds no TLS context, a
certificate replace builds only the contexts using it (while handshakes for other names go
on without a failure), and a ticket key rotation builds none."""

import hashlib
import random
import ssl
import threading
import time

import cert_util as cu
import scale_certs as sc
import slbd_harness as h
from http_util import add_listener, client_context, hx  # noqa: F401

N = 10000
BUILDS = "slbd_tls_context_builds_total"


def big_site(slbd, hx, n=N):
    """slbd restarted with n certificates in its store and one https listener holding them
    all (s0 the default). Returns (port, cache directory, backend)."""
    cache = sc.cached(h.build_dir(), n)
    slbd.stop()
    sc.install(cache, slbd.state_dir)
    # Start-up takes seconds with 10,000 certificates (bench/scale.py measures it); the
    # machine running the tests may be busy.
    slbd.start(ready_timeout=120)
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=h.no_health_check())
    ids = [sc.cert_id(i) for i in range(n)]
    port = add_listener(slbd, "big", "g", protocol="https", tls={"certificates": ids})
    return port, cache, b


def fingerprint_of(cache, i):
    """SHA-256 of certificate i's DER, from its store file."""
    import json
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    doc = json.loads((cache / "certs" / f"{sc.cert_id(i)}.json").read_text())
    return x509.load_pem_x509_certificate(doc["certificate"].encode()).fingerprint(
        hashes.SHA256()).hex()


def served(hx, port, ctx, name):
    c = hx.tls_connect(port, ctx, server_hostname=name)
    fp = hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()
    c.close()
    return fp


def test_ten_thousand_certificates(slbd, hx):
    port, cache, _ = big_site(slbd, hx)
    ctx = client_context(str(cache / "root.pem"))
    rng = random.Random(19)
    for i in [0, 2, 3, N - 1] + rng.sample(range(2, N), 12):
        assert served(hx, port, ctx, sc.name_of(i)) == fingerprint_of(cache, i), i
    # Names are case-insensitive, a trailing dot is the same name.
    assert served(hx, port, ctx, f"SITE{N - 2}.Scale.Test.") == fingerprint_of(cache, N - 2)
    # Certificate 1 is *.wild.scale.test: one label, not two; unknown names get the default.
    assert served(hx, port, ctx, "anything.wild.scale.test") == fingerprint_of(cache, 1)
    assert served(hx, port, ctx, "a.b.wild.scale.test") == fingerprint_of(cache, 0)
    assert served(hx, port, ctx, "nowhere.test") == fingerprint_of(cache, 0)
    assert served(hx, port, ctx, None) == fingerprint_of(cache, 0)
    # Host naming another certificate of the listener than SNI chose: 421; its own: 200.
    c = hx.tls_connect(port, ctx, server_hostname="site5.scale.test")
    assert c.request("GET", "/x", host="site7.scale.test").status == 421
    assert c.request("GET", "/x", host="x.wild.scale.test").status == 421
    assert c.request("GET", "/x", host="unknown.test").status == 200
    assert c.request("GET", "/x", host="site5.scale.test:443").status == 200


def test_changes_build_only_what_they_touch(slbd, hx):
    port, cache, b = big_site(slbd, hx)
    small = add_listener(slbd, "small", "g", protocol="https",
                         tls={"certificates": [sc.cert_id(0), sc.cert_id(2)]})
    ctx = client_context(str(cache / "root.pem"))
    before = cu.metric_value(slbd, BUILDS)

    # A weight change (and a listener's non-TLS change) builds no TLS context.
    r = slbd.api.request("PATCH", f"/v1/groups/g/servers/127.0.0.1:{b.port}", {"weight": 40})
    assert r.status == 200, r
    assert cu.metric_value(slbd, BUILDS) == before

    # Replacing certificate 3 (used by "big" only) under load: one context is built, and
    # handshakes for other names keep succeeding.
    failures, done, stop = [], [0], threading.Event()

    def load():
        r = random.Random(7)
        while not stop.is_set():
            i = r.choice([0, 2, 4, 5, N - 1])
            try:
                if served(hx, port, ctx, sc.name_of(i)) != fingerprint_of(cache, i):
                    failures.append(f"wrong certificate for {i}")
                done[0] += 1
            except (OSError, ssl.SSLError) as e:
                failures.append(f"{i}: {e!r}")

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        pem, key, fp = sc.issue_one(cache, 3)
        cu.replace_cert(slbd.api, sc.cert_id(3), cu.server_body("scale-3", pem, key))
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert done[0] > 0
    assert cu.metric_value(slbd, BUILDS) == before + 1
    assert served(hx, port, ctx, sc.name_of(3)) == fp

    # Replacing certificate 2 (used by both listeners) builds both, nothing else.
    pem, key, fp2 = sc.issue_one(cache, 2)
    cu.replace_cert(slbd.api, sc.cert_id(2), cu.server_body("scale-2", pem, key))
    assert cu.metric_value(slbd, BUILDS) == before + 3
    assert served(hx, small, ctx, sc.name_of(2)) == fp2
    assert served(hx, port, ctx, sc.name_of(2)) == fp2


def test_ticket_rotation_builds_no_context(slbd, hx, monkeypatch):
    """Keys rotated every second reach the running contexts: a session resumes across
    rotations, and no context is built."""
    monkeypatch.setenv("SLBD_TICKET_ROTATE_S", "1")
    port, cache, _ = big_site(slbd, hx, n=10)
    ctx = client_context(str(cache / "root.pem"), maximum=ssl.TLSVersion.TLSv1_2)
    c = hx.tls_connect(port, ctx, server_hostname="site4.scale.test")
    assert c.request("GET", "/x", host="site4.scale.test").status == 200
    session = c.sock.session
    c.close()
    before = cu.metric_value(slbd, BUILDS)
    stderr = slbd._runs[-1]
    rotations = stderr.read_text().count("session ticket keys rotated")
    h.wait_until(lambda: stderr.read_text().count("session ticket keys rotated") > rotations,
                 h.scaled(10), "a ticket key rotation")
    assert cu.metric_value(slbd, BUILDS) == before
    # The ticket was issued under a key that is no longer the newest: it still resumes.
    c = hx.tls_connect(port, ctx, server_hostname="site4.scale.test", session=session)
    assert c.request("GET", "/x", host="site4.scale.test").status == 200
    assert c.sock.session_reused
