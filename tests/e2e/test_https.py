# SPDX-License-Identifier: Apache-2.0
"""https listeners end to end with real clients (curl, openssl s_client, Python ssl, h2load):
the certificate served, protocol versions and cipher suites of each policy, session tickets
(lifetime, across workers and restarts), renegotiation, hostile handshakes, keep-alive over
TLS and a load run."""

import hashlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

import slbd_harness as h
from http_util import add_listener, client_context, hx, metrics  # noqa: F401
from pki import pki, tls_block, upload_server  # noqa: F401

NOHC = h.no_health_check()


def site(slbd, hx, pki, cert="server", listener="tls", **tls_extra):
    """An echo backend behind an https listener with pki certificate cert: (port, cert id)."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, cert)
    extra = {k: tls_extra.pop(k) for k in list(tls_extra) if not k.startswith("tls_")}
    tls = tls_block([cid], **{k[4:]: v for k, v in tls_extra.items()})
    port = add_listener(slbd, listener, "g", protocol="https", tls=tls, **extra)
    return port, cid


def s_client(port, *args, stdin=b"", timeout=15, servername="localhost"):
    """Run openssl s_client against 127.0.0.1:port; returns (rc, stdout+stderr text)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername,
            *args]
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=h.scaled(timeout))
    except subprocess.TimeoutExpired as e:
        raise h.HarnessError(f"{' '.join(argv)} did not finish") from e
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def negotiated(port, *args):
    """(protocol, cipher) when the handshake succeeds with these s_client options, else None."""
    rc, out = s_client(port, "-brief", *args)
    m = re.search(r"Protocol version: (\S+)\s+Ciphersuite: (\S+)", out)
    if rc == 0 and m:
        return m.group(1), m.group(2)
    return None


def ctx_for(pki, **kw):
    return client_context(pki.root, **kw)


# --------------------------------------------------------------------------------------------
# The certificate and the defaults
# --------------------------------------------------------------------------------------------


def test_curl_one_way_tls(slbd, hx, pki):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    port, _ = site(slbd, hx, pki)
    p = subprocess.run(["curl", "-sS", "--cacert", pki.root, "--resolve",
                        f"localhost:{port}:127.0.0.1", "-w", "\n%{http_code} %{ssl_verify_result}",
                        f"https://localhost:{port}/curl?x=1"], capture_output=True,
                       timeout=h.scaled(20))
    assert p.returncode == 0, p.stderr
    body, _, tail = p.stdout.decode().rpartition("\n")
    assert tail == "200 0", tail
    js = json.loads(body)
    assert js["path"] == "/curl?x=1"
    assert js["headers"]["x-forwarded-proto"] == "https"
    assert js["headers"]["x-forwarded-port"] == str(port)


def test_python_ssl_sees_the_uploaded_certificate(slbd, hx, pki):
    port, cid = site(slbd, hx, pki)
    c = hx.tls_connect(port, ctx_for(pki), server_hostname="localhost")
    der = c.sock.getpeercert(binary_form=True)
    assert hashlib.sha256(der).hexdigest() == pki.fingerprint("server")
    st, js = slbd.api.get(f"/v1/certificates/{cid}")
    assert js["fingerprint_sha256"].replace(":", "").lower() == pki.fingerprint("server")
    assert c.sock.version() == "TLSv1.3"  # the default policy ends at TLS 1.3
    assert c.request("GET", "/py").json()["path"] == "/py"


def test_chain_served_without_root(slbd, hx, pki):
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    st, js = slbd.api.post("/v1/certificates", {"name": "full", "type": "server",
                                                "certificate": pki.pem("server") +
                                                pki.pem("inter") + pki.pem("root"),
                                                "private_key": pki.key("server")})
    assert st == 201, js
    port = add_listener(slbd, "tls", "g", protocol="https", tls=tls_block([js["id"]]))
    rc, out = s_client(port, "-showcerts", "-CAfile", pki.root)
    assert rc == 0, out
    assert out.count("-----BEGIN CERTIFICATE-----") == 2, out  # leaf + intermediate
    assert "Verify return code: 0 (ok)" in out, out


def test_tls12_client_gets_ecdhe_aead(slbd, hx, pki):
    port, _ = site(slbd, hx, pki)
    c = hx.tls_connect(port, ctx_for(pki, maximum=ssl.TLSVersion.TLSv1_2),
                       server_hostname="localhost")
    assert c.sock.version() == "TLSv1.2"
    # Server preference: AES-128-GCM first, ECDSA flavour for the EC certificate.
    assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256", c.sock.cipher()
    assert c.request("GET", "/12").status == 200


def test_keep_alive_over_tls(slbd, hx, pki):
    port, _ = site(slbd, hx, pki)
    c = hx.tls_connect(port, ctx_for(pki), server_hostname="localhost")
    for i in range(10):
        r = c.request("GET", f"/ka/{i}", body=b"x" * (i * 1000) if i % 2 else b"")
        assert r.status == 200 and r.json()["path"] == f"/ka/{i}", r
    r = c.request("GET", "/bytes/300000")
    assert len(r.body) == 300000
    st = [x for x in slbd.stats()["listeners"] if x["name"] == "tls"][0]
    assert st["connections"] == 1, st


def test_sticky_insert_cookie_is_secure_on_https(slbd, hx, pki):
    port, _ = site(slbd, hx, pki, sticky={"type": "insert", "cookie": "LB", "timeout_s": 60})
    c = hx.tls_connect(port, ctx_for(pki), server_hostname="localhost")
    r = c.request("GET", "/cookie")
    cookie = r.header("Set-Cookie")
    assert cookie and cookie.startswith("LB="), r
    attrs = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert "secure" in attrs and "httponly" in attrs, cookie


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------

LEGACY_ECDSA = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-SHA256",
                "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA"}
STRICT_ECDSA = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-CHACHA20-POLY1305"}


def _accepted_tls12_suites(port):
    """The TLS 1.2 suites the server accepts, out of every one the local openssl knows: offer
    them all, note the one the server picks, take it out and offer the rest again until the
    handshake fails. Equivalent to trying each alone (the server picks some suite it accepts
    while one is offered), in a handful of handshakes instead of ~150. Returns {name: kx}."""
    p = subprocess.run(["openssl", "ciphers", "-v", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
                       capture_output=True, timeout=30, check=True)
    suites = {}
    for line in p.stdout.decode().splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[1] != "TLSv1.3":
            suites[cols[0]] = cols[2]
    assert len(suites) > 30, suites
    offered = sorted(suites)
    accepted = {}
    while offered:
        got = negotiated(port, "-tls1_2", "-cipher", ":".join(offered) + ":@SECLEVEL=0")
        if got is None:
            break
        assert got[0] == "TLSv1.2" and got[1] in offered, (got, offered)
        accepted[got[1]] = suites[got[1]]
        offered.remove(got[1])
    # Spot check the elimination against single offers of a few refused suites.
    for name in ("AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"):
        if name in suites and name not in accepted:
            assert negotiated(port, "-tls1_2", "-cipher", f"{name}:@SECLEVEL=0") is None, name
    return accepted


@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy,expected", [
    ("tls_cipher_policy_1_0", LEGACY_ECDSA),
    ("tls_cipher_policy_1_2_strict_with_1_3", STRICT_ECDSA),
])
def test_only_ecdhe_suites_accepted(slbd, hx, pki, policy, expected):
    port, _ = site(slbd, hx, pki, tls_policy=policy)
    accepted = _accepted_tls12_suites(port)
    assert all(kx == "Kx=ECDH" for kx in accepted.values()), accepted
    assert set(accepted) == expected, sorted(accepted)


@pytest.mark.parametrize("policy", ["tls_cipher_policy_1_0", "tls_cipher_policy_1_2",
                                    "tls_cipher_policy_1_2_strict_with_1_3"])
def test_static_rsa_and_dhe_refused(slbd, hx, pki, policy):
    port, _ = site(slbd, hx, pki, cert="server-rsa", tls_policy=policy)
    for suite in ("AES128-GCM-SHA256", "AES256-SHA", "DHE-RSA-AES128-GCM-SHA256"):
        assert negotiated(port, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0") is None, suite
    # The RSA certificate still works with ECDHE.
    assert negotiated(port, "-tls1_2") == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")


def _can_speak(version_flag):
    """Whether the local openssl can offer an old protocol version at all."""
    p = subprocess.run(["openssl", "s_client", "-help"], capture_output=True, timeout=10)
    return version_flag in (p.stdout + p.stderr).decode()


@pytest.mark.parametrize("policy,versions", [
    ("tls_cipher_policy_1_0", {"-tls1": True, "-tls1_1": True, "-tls1_2": True,
                               "-tls1_3": False}),
    ("tls_cipher_policy_1_1", {"-tls1": False, "-tls1_1": True, "-tls1_2": True,
                               "-tls1_3": False}),
    ("tls_cipher_policy_1_2", {"-tls1": False, "-tls1_1": False, "-tls1_2": True,
                               "-tls1_3": False}),
    ("tls_cipher_policy_1_2_strict", {"-tls1_1": False, "-tls1_2": True, "-tls1_3": False}),
    ("tls_cipher_policy_1_2_strict_with_1_3", {"-tls1": False, "-tls1_1": False,
                                               "-tls1_2": True, "-tls1_3": True}),
])
def test_protocol_versions_per_policy(slbd, hx, pki, policy, versions):
    port, _ = site(slbd, hx, pki, tls_policy=policy)
    names = {"-tls1": "TLSv1", "-tls1_1": "TLSv1.1", "-tls1_2": "TLSv1.2", "-tls1_3": "TLSv1.3"}
    for flag, ok in versions.items():
        if not _can_speak(flag):
            continue
        # SECLEVEL=0 on the client side so that only the server decides.
        args = [flag] if flag == "-tls1_3" else [flag, "-cipher", "DEFAULT:@SECLEVEL=0"]
        got = negotiated(port, *args)
        if ok:
            if got is None and flag in ("-tls1", "-tls1_1"):
                rc, out = s_client(port, flag, "-cipher", "DEFAULT:@SECLEVEL=0")
                if "no protocols available" in out or "unsupported protocol" in out.lower():
                    pytest.skip(f"the local openssl refuses to offer {names[flag]}")
            assert got and got[0] == names[flag], (policy, flag, got)
            if flag in ("-tls1", "-tls1_1"):
                assert "-SHA" in got[1] and got[1].startswith("ECDHE-"), got
        else:
            assert got is None, (policy, flag, got)


def test_cbc_suites_refused_by_strict_policy(slbd, hx, pki):
    port, _ = site(slbd, hx, pki, tls_policy="tls_cipher_policy_1_2_strict")
    assert negotiated(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA") is None
    assert negotiated(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256") is None
    assert negotiated(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305") == \
        ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")


# --------------------------------------------------------------------------------------------
# Session resumption
# --------------------------------------------------------------------------------------------


def tls_request(hx, port, ctx, session=None, path="/r"):
    """One request on a new TLS connection, closed cleanly; returns (reused, session)."""
    c = hx.tls_connect(port, ctx, server_hostname="localhost", session=session)
    r = c.request("GET", path)
    assert r.status == 200, r
    reused = c.sock.session_reused
    sess = c.sock.session
    try:
        c.sock.unwrap()
    except (ssl.SSLError, OSError):
        pass
    c.close()
    return reused, sess


def handshakes(slbd, listener):
    m = metrics(slbd)
    return (m.get(f'slbd_listener_handshakes_total{{listener="{listener}",type="full"}}', 0),
            m.get(f'slbd_listener_handshakes_total{{listener="{listener}",type="resumed"}}', 0))


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_session_resumed_within_lifetime(slbd, hx, pki, version):
    port, _ = site(slbd, hx, pki)
    v = getattr(ssl.TLSVersion, version)
    ctx = ctx_for(pki, minimum=v, maximum=v)
    reused, sess = tls_request(hx, port, ctx)
    assert not reused and sess is not None
    reused, sess2 = tls_request(hx, port, ctx, session=sess)
    assert reused, "the ticket was not accepted"
    full, resumed = handshakes(slbd, "tls")
    assert (full, resumed) == (1, 1), (full, resumed)


def test_session_not_resumed_after_lifetime(slbd, hx, pki):
    port, _ = site(slbd, hx, pki, tls_session_ticket_lifetime_s=2)
    ctx = ctx_for(pki)
    _, sess = tls_request(hx, port, ctx)
    reused, _ = tls_request(hx, port, ctx, session=sess)
    assert reused
    time.sleep(3)  # the lifetime is the point of this test
    reused, _ = tls_request(hx, port, ctx, session=sess)
    assert not reused, "a ticket older than session_ticket_lifetime_s resumed"


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_session_max_age_bounds_renewed_tickets(slbd, hx, pki, version):
    """Every TLS 1.3 resumption hands out a fresh ticket; session_max_age_s still ends the
    session counted from its full handshake."""
    port, _ = site(slbd, hx, pki, tls_session_max_age_s=3)
    v = getattr(ssl.TLSVersion, version)
    ctx = ctx_for(pki, minimum=v, maximum=v)
    t0 = time.time()
    reused, sess = tls_request(hx, port, ctx)
    assert not reused
    for at in (1, 2):  # each TLS 1.3 resumption renews the ticket
        time.sleep(max(0, t0 + at - time.time()))
        reused, sess = tls_request(hx, port, ctx, session=sess)
        assert reused, "the session did not resume within session_max_age_s"
    time.sleep(max(0, t0 + 4.2 - time.time()))  # the age is the point of this test
    reused, sess = tls_request(hx, port, ctx, session=sess)
    assert not reused, "a session older than session_max_age_s resumed"
    # The full handshake started a new session.
    reused, _ = tls_request(hx, port, ctx, session=sess)
    assert reused


def test_tickets_off_with_lifetime_zero(slbd, hx, pki):
    port, _ = site(slbd, hx, pki, tls_session_ticket_lifetime_s=0)
    ctx = ctx_for(pki, maximum=ssl.TLSVersion.TLSv1_2)
    _, sess = tls_request(hx, port, ctx)
    reused, _ = tls_request(hx, port, ctx, session=sess)
    assert not reused


@pytest.mark.slbd(workers=2)
def test_resumption_works_on_every_worker(slbd, hx, pki):
    port, _ = site(slbd, hx, pki)
    ctx = ctx_for(pki)
    _, sess = tls_request(hx, port, ctx)
    results = []
    for i in range(20):
        reused, new = tls_request(hx, port, ctx, session=sess, path=f"/w/{i}")
        results.append(reused)
        sess = new or sess
    assert all(results), results
    full, resumed = handshakes(slbd, "tls")
    assert full == 1 and resumed == 20, (full, resumed)


def test_ticket_keys_survive_restart(slbd, hx, pki):
    port, _ = site(slbd, hx, pki)
    ctx = ctx_for(pki)
    _, sess = tls_request(hx, port, ctx)
    assert (slbd.state_dir / "tickets.json").exists()
    slbd.restart()
    reused, _ = tls_request(hx, port, ctx, session=sess)
    assert reused, "a ticket issued before the restart did not resume"


def test_ticket_from_another_listener_does_not_resume(slbd, hx, pki):
    port, cid = site(slbd, hx, pki)
    port2 = add_listener(slbd, "tls2", "g", protocol="https", tls=tls_block([cid]))
    ctx = ctx_for(pki)
    _, sess = tls_request(hx, port, ctx)
    reused, _ = tls_request(hx, port2, ctx, session=sess)
    assert not reused


# --------------------------------------------------------------------------------------------
# Hostile or broken clients
# --------------------------------------------------------------------------------------------


def test_renegotiation_refused(slbd, hx, pki):
    port, _ = site(slbd, hx, pki)
    # "R" asks s_client to renegotiate; the pause keeps stdin open while it tries.
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                             "-servername", "localhost", "-tls1_2"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5 * h.slow_factor())
        proc.stdin.write(b"R\n")
        proc.stdin.flush()
        time.sleep(1.0 * h.slow_factor())
        out = proc.communicate(timeout=h.scaled(15))[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "RENEGOTIATING" in out, out
    assert "no renegotiation" in out or proc.returncode != 0, out
    full, _ = handshakes(slbd, "tls")
    assert full == 1, full  # the renegotiation never completed a second handshake
    c = hx.tls_connect(port, ctx_for(pki), server_hostname="localhost")
    assert c.request("GET", "/after").status == 200


def _client_hello(port_for_sni="localhost"):
    """The first flight of a real TLS client, captured through a socketpair."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=port_for_sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def test_garbage_and_half_handshakes_do_not_disturb_others(slbd, hx, pki):
    port, _ = site(slbd, hx, pki, header_timeout_s=1)
    ctx = ctx_for(pki)
    garbage = hx.socket(port)
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: plain-http-on-tls\r\n\r\n")
    half = hx.socket(port)
    hello = _client_hello()
    half.sendall(hello[:len(hello) // 2])
    stalled = hx.socket(port)
    stalled.sendall(hello)  # a full ClientHello, then silence
    noise = hx.socket(port)
    noise.sendall(bytes(range(256)) * 8)
    for i in range(5):
        c = hx.tls_connect(port, ctx, server_hostname="localhost")
        assert c.request("GET", f"/fine/{i}").status == 200
        c.close()
    # slbd ends the bad ones: at once for garbage, after header_timeout_s for the silent ones.
    for s in (garbage, noise, half, stalled):
        assert h.wait_closed(s, h.scaled(10)) in ("eof", "reset")
    m = metrics(slbd)
    fails = {k: v for k, v in m.items() if k.startswith("slbd_listener_handshake_failures_total")
             and 'listener="tls"' in k}
    assert fails, "no handshake failure metrics"
    assert fails.get('slbd_listener_handshake_failures_total{listener="tls",reason="timeout"}',
                     0) >= 2, fails
    assert sum(fails.values()) >= 4, fails


@pytest.mark.timeout(120)
def test_h2load_over_tls(slbd, hx, pki):
    if not shutil.which("h2load"):
        pytest.skip("h2load (nghttp2-client) is not installed")
    port, _ = site(slbd, hx, pki)
    p = subprocess.run(["h2load", "-n", "2000", "-c", "10", "--h1",
                        f"https://127.0.0.1:{port}/load"], capture_output=True,
                       timeout=h.scaled(90))
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    assert m, out
    total, started, done, ok, failed, errored = map(int, m.groups())
    assert (done, ok, failed, errored) == (2000, 2000, 0, 0), out
    codes = re.search(r"status codes: (\d+) 2xx", out)
    assert codes and int(codes.group(1)) == 2000, out


def test_plain_http_on_https_port_gets_a_plain_400(slbd, hx, pki):
    """As nginx: a clear-text 400 naming the mistake, then the connection closes
    (test_metrics.py checks how it is counted)."""
    port, _ = site(slbd, hx, pki)
    s = hx.socket(port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(h.scaled(10))
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data
    assert data.endswith(b"\r\n\r\n400 The plain HTTP request was sent to HTTPS port\n"), data

