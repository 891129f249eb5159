# SPDX-License-Identifier: Apache-2.0
"""TLS edge cases on https listeners, read off the wire: renegotiation refused with the
no_renegotiation alert, TLS 1.3 early data never accepted (and refused gracefully), SSLv2-style
hellos and SSL 3.0 / TLS 1.0 / 1.1 refused with protocol_version under the default policy, the
fallback SCSV honoured, a ClientHello in 1-byte TCP segments or 1-byte records, truncated
hellos, the alert each two-way authentication failure sends, and the handshake timeout while
slbd waits for a client certificate."""

import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from h2_util import TlsWire
from h2_util import client_context as h2_client_context
from http_util import HttpConn, add_listener, hx, metrics  # noqa: F401
from pki import pki, tls_block, upload_ca, upload_crl, upload_server  # noqa: F401

NOHC = h.no_health_check()
pytestmark = pytest.mark.skipif(not shutil.which("openssl"),
                                reason="openssl is not installed (Debian package openssl)")
DEFAULT_POLICY = "tls_cipher_policy_1_2_strict_with_1_3"


def site(slbd, hx, pki, name="tls", group="g", **tls):
    """An echo backend behind an https listener; returns its port."""
    if slbd.api.get(f"/v1/groups/{group}")[0] != 200:
        b = hx.backend(f"{group}-be")
        slbd.add_group(group, [b.server()], health_check=NOHC)
    certs = [c for c in slbd.api.get("/v1/certificates")[1]["certificates"]
             if c["type"] == "server"]
    cid = certs[0]["id"] if certs else upload_server(slbd, pki, "server")
    header_timeout = tls.pop("header_timeout_s", 10)
    return add_listener(slbd, name, group, protocol="https", tls=tls_block([cid], **tls),
                        header_timeout_s=header_timeout)


def hs_failures(slbd, listener):
    prefix = f'slbd_listener_handshake_failures_total{{listener="{listener}",reason="'
    return {k[len(prefix):-2]: v for k, v in metrics(slbd).items() if k.startswith(prefix)}


def full_handshakes(slbd, listener):
    return metrics(slbd).get(
        f'slbd_listener_handshakes_total{{listener="{listener}",type="full"}}', 0)


def https_get(port, ctx=None):
    return hu.simple_get(port, tls_ctx=ctx or hu.insecure_client_context())


# --------------------------------------------------------------------------------------------
# Renegotiation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy,proto", [(DEFAULT_POLICY, "-tls1_2"),
                                          ("tls_cipher_policy_1_0", "-tls1")])
def test_renegotiation_refused_with_no_renegotiation_alert(slbd, hx, pki, policy, proto):
    port = site(slbd, hx, pki, policy=policy)
    before = full_handshakes(slbd, "tls")
    extra = ["-cipher", "DEFAULT:@SECLEVEL=0"] if proto == "-tls1" else []
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                             "-servername", "localhost", proto, "-msg", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5 * h.slow_factor())
        proc.stdin.write(b"R\n")
        proc.stdin.flush()
        time.sleep(0.5 * h.slow_factor())
        out = proc.communicate(timeout=h.scaled(15))[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "RENEGOTIATING" in out, out[-2000:]
    assert "no_renegotiation" in hu.received_alerts(out), out[-2000:]
    # The ServerHello announced secure renegotiation support (RFC 5746) all the same.
    flight, s = hu.send_flight(port, hu.records(hu.client_hello(
        version=0x0303 if proto == "-tls1_2" else 0x0301, tls13=False)))
    s.close()
    assert 0xFF01 in flight.extensions, flight
    # One full handshake: s_client's first. The refused renegotiation added none (and the
    # hand-built hello above never completed).
    h.wait_until(lambda: full_handshakes(slbd, "tls") >= before + 1, 5, "handshake counters")
    time.sleep(0.2)
    assert full_handshakes(slbd, "tls") == before + 1, "a renegotiation completed"
    assert https_get(port) == 200


# --------------------------------------------------------------------------------------------
# Early data
# --------------------------------------------------------------------------------------------


def _session_from(port, path, servername="localhost"):
    """Save a resumable TLS 1.3 session from the server on port to path (s_client waits a
    moment for the NewSessionTicket)."""
    # Not -quiet: it implies -ign_eof, and s_client would then wait for the server to close.
    p = subprocess.run(["sh", "-c", f"sleep 1 | openssl s_client -connect 127.0.0.1:{port} "
                        f"-servername {servername} -tls1_3 -sess_out {path}"],
                       capture_output=True, timeout=h.scaled(20))
    if not path.exists():
        raise h.HarnessError(f"no session saved: {p.stdout!r} {p.stderr!r}")


def _max_early_data(path):
    out = subprocess.run(["openssl", "sess_id", "-in", str(path), "-noout", "-text"],
                         capture_output=True, text=True, timeout=20).stdout
    m = re.search(r"Max Early Data: (\d+)", out)
    return int(m.group(1)) if m else None


def _early_data_attempt(port, sess, workdir):
    req = workdir / "early.txt"
    req.write_bytes(b"GET /early HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    return hu.s_client(port, "-tls1_3", "-sess_in", str(sess), "-early_data", str(req), "-msg",
                       stdin=b"", timeout=20)


def test_early_data_is_not_offered_by_slbd_tickets(slbd, hx, pki, workdir):
    port = site(slbd, hx, pki)
    sess = workdir / "slbd.sess"
    _session_from(port, sess)
    assert _max_early_data(sess) == 0, "slbd's tickets invite 0-RTT data"
    rc, out = _early_data_attempt(port, sess, workdir)
    assert "Reused, TLSv1.3" in out, out[-1500:]
    assert "Early data was accepted" not in out, out[-1500:]
    assert "Early data was not sent" in out or "Early data was rejected" in out, out[-1500:]


@pytest.mark.timeout(60)
def test_early_data_from_a_foreign_ticket_is_rejected_gracefully(slbd, hx, pki, workdir):
    """A client holding a 0-RTT ticket from another server for the same name (a previous
    deployment, another node behind the same address) sends early data. slbd cannot use the
    ticket: it must reject the early data, skip it, and finish a normal 1-RTT handshake
    (RFC 8446 §4.2.10), as OpenSSL does by default; aborting leaves such clients without
    service until they drop the ticket."""
    other_port = h.free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{other_port}",
                            "-cert", str(pki.path("server.pem")), "-key",
                            str(pki.path("server.key")), "-early_data", "-quiet",
                            "-naccept", "1"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        h.wait_until(lambda: hu.listening_address(srv.pid, other_port), 10, "openssl s_server")
        sess = workdir / "foreign.sess"
        _session_from(other_port, sess)
    finally:
        srv.kill()
        srv.wait(10)
    assert _max_early_data(sess) and _max_early_data(sess) > 0
    port = site(slbd, hx, pki)
    rc, out = _early_data_attempt(port, sess, workdir)
    assert "Early data was accepted" not in out, out[-1500:]
    assert "Early data was rejected" in out, out[-1500:]
    alerts = hu.received_alerts(out)
    gist = "\n".join(ln for ln in out.splitlines()
                     if re.search(r"Early data|Alert|alert|^New,|^Reused,", ln))
    assert not alerts, (f"slbd aborted the handshake after rejecting early data with "
                        f"{alerts} instead of skipping it:\n{gist}")
    # The foreign ticket was not resumed: a full 1-RTT handshake took its place.
    assert "New, TLSv1.3" in out, gist
    assert https_get(port) == 200


# --------------------------------------------------------------------------------------------
# Versions, SSLv2 hellos, fallback SCSV
# --------------------------------------------------------------------------------------------

OLD_HELLOS = {
    "sslv2-format-offering-tls1.0": hu.sslv2_client_hello(0x0301),
    "sslv2-format-offering-sslv2": hu.sslv2_client_hello(0x0002),
    "tls1.0": hu.records(hu.client_hello(version=0x0301, tls13=False)),
    "tls1.1": hu.records(hu.client_hello(version=0x0302, tls13=False)),
    "tls1.2-with-supported-versions-1.1-only": hu.records(hu.client_hello(
        tls13=False, extra=[(43, b"\x04\x03\x02\x03\x01")])),
}


@pytest.mark.parametrize("policy", ["tls_cipher_policy_1_2", "tls_cipher_policy_1_2_strict",
                                    DEFAULT_POLICY])
@pytest.mark.parametrize("hello", list(OLD_HELLOS))
def test_old_versions_refused_with_protocol_version(slbd, hx, pki, policy, hello):
    port = site(slbd, hx, pki, policy=policy)
    flight, s = hu.send_flight(port, OLD_HELLOS[hello])
    s.close()
    assert not flight.server_hello, flight
    assert flight.alerts == ["protocol_version"], flight
    assert https_get(port) == 200


def test_ssl3_refused(slbd, hx, pki):
    """SSL 3.0 is refused under every policy. OpenSSL answers an SSL 3.0 ClientHello with
    handshake_failure rather than protocol_version (its own choice, before slbd sees the
    hello); either is a refusal."""
    for policy in ("tls_cipher_policy_1_0", DEFAULT_POLICY):
        port = site(slbd, hx, pki, name=f"l-{policy[-3:]}", policy=policy)
        for rec_version in (0x0300, 0x0301):
            flight, s = hu.send_flight(port, hu.records(hu.client_hello(
                version=0x0300, tls13=False), version=rec_version))
            s.close()
            assert not flight.server_hello, flight
            assert flight.alerts in (["protocol_version"], ["handshake_failure"]), flight


def test_old_versions_with_openssl_s_client(slbd, hx, pki):
    port = site(slbd, hx, pki)
    for proto in ("-tls1", "-tls1_1"):
        rc, out = hu.s_client(port, proto, "-cipher", "DEFAULT:@SECLEVEL=0", "-msg")
        assert rc != 0, out[-1500:]
        assert "protocol_version" in hu.received_alerts(out), out[-1500:]
    assert https_get(port) == 200


@pytest.mark.parametrize("policy,args,refused", [
    (DEFAULT_POLICY, ["-tls1_2"], True),
    ("tls_cipher_policy_1_2", ["-tls1_2"], False),
    ("tls_cipher_policy_1_0", ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], True),
    ("tls_cipher_policy_1_0", ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], True),
], ids=["default-tls1.2", "1_2-tls1.2", "1_0-tls1.1", "1_0-tls1.0"])
def test_fallback_scsv(slbd, hx, pki, policy, args, refused):
    """A client that retries with a lower version says so (TLS_FALLBACK_SCSV, RFC 7507);
    when slbd supports a higher version, that retry is a downgrade attack and gets
    inappropriate_fallback."""
    port = site(slbd, hx, pki, policy=policy)
    rc, out = hu.s_client(port, *args, "-fallback_scsv", "-msg")
    if refused:
        assert "inappropriate_fallback" in hu.received_alerts(out), out[-1500:]
        assert rc != 0
    else:
        assert not hu.received_alerts(out) and "Cipher is" in out, out[-1500:]
    # The same without the SCSV is a normal handshake whenever the policy allows the version.
    rc, out = hu.s_client(port, *args, "-brief")
    assert rc == 0 and "Protocol version" in out, out[-1500:]


@pytest.mark.parametrize("policy", ["tls_cipher_policy_1_0", "tls_cipher_policy_1_2",
                                    "tls_cipher_policy_1_2_strict", DEFAULT_POLICY])
def test_rsa_suite_client_gets_the_rsa_twin(slbd, hx, pki, policy):
    """A listener with an ECDSA and an RSA certificate for the same names, and a client with
    TLS 1.3 enabled (it sends supported_versions with 1.3, and ECDSA signature algorithms) that
    allows only ECDHE-RSA suites for TLS 1.2 (`curl --ciphers ECDHE-RSA-AES128-GCM-SHA256`).
    Where the policy ends at TLS 1.2 the client cannot use TLS 1.3 here, so it needs the RSA
    certificate; offering 1.3 must not make slbd choose the ECDSA one."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    ids = [upload_server(slbd, pki, "server"), upload_server(slbd, pki, "server-rsa")]
    port = add_listener(slbd, "dual", "g", protocol="https",
                        tls=tls_block(ids, policy=policy))
    ctx = hu.insecure_client_context()
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    try:
        got = hu.simple_get(port, tls_ctx=ctx)
    except ssl.SSLError as e:
        got = str(e)
    assert got == 200, (f"{got}: a TLS 1.3-capable client offering only ECDHE-RSA suites "
                        f"failed against {policy} with both certificates")
    # And the ECDSA-only client still gets the ECDSA certificate.
    ctx = hu.insecure_client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert hu.simple_get(port, tls_ctx=ctx) == 200


@pytest.mark.parametrize("policy", ["tls_cipher_policy_1_2_strict", DEFAULT_POLICY])
def test_ecdsa_suite_the_policy_refuses_does_not_pick_the_ecdsa_certificate(slbd, hx, pki,
                                                                             policy):
    """A TLS 1.2 client offering ECDHE-ECDSA-AES128-SHA (CBC, which the strict policies do
    not allow) and ECDHE-RSA-AES128-GCM-SHA256. The only suite both sides accept is the RSA
    one, so slbd must serve the RSA certificate; choosing the ECDSA one because of a suite the
    policy will never negotiate fails the handshake. (This is also why testssl's cipher
    enumeration finds no ECDHE-RSA suite on the strict policies: its later probes still list
    the ECDSA CBC suites.)"""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    ids = [upload_server(slbd, pki, "server"), upload_server(slbd, pki, "server-rsa")]
    port = add_listener(slbd, "dual", "g", protocol="https",
                        tls=tls_block(ids, policy=policy))
    ctx = hu.insecure_client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256")
    try:
        got = hu.simple_get(port, tls_ctx=ctx)
    except ssl.SSLError as e:
        got = str(e)
    assert got == 200, got


# --------------------------------------------------------------------------------------------
# The session ticket
# --------------------------------------------------------------------------------------------


def _finished_with_partial_request(port, hx, pki):
    """A TLS 1.3 client whose Finished and the first part of a request leave in one write.
    Returns how long the NewSessionTicket took to arrive (None: not within 2 s), before the
    rest of the request is sent at all; then completes the request and checks the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(10))
    hx.track(s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    w = TlsWire(s, h2_client_context(pki, alpn=None))
    w.handshake(flush_last=False)
    assert w.obj.version() == "TLSv1.3" and w.pending
    w.write(b"GET /ticket HTTP/1.1\r\nHost: localhost\r\n")
    assert w.sock.send(w.pending) == len(w.pending)  # the Finished and the request, one write
    w.pending.clear()
    t0 = time.monotonic()
    got = w._fill(2.0)  # one socket read, as soon as bytes come
    took = time.monotonic() - t0 if got else None
    if got:
        # What came is the ticket: no response comes before the request is complete.
        assert w.recv(0) is None
        assert w.obj.session is not None and w.obj.session.has_ticket
    w.send(b"Connection: close\r\n\r\n")
    resp = w.recv(h.scaled(10))
    assert resp and resp.startswith(b"HTTP/1.1 200 "), resp
    w.sock.close()
    return took


def test_ticket_not_held_for_the_rest_of_the_first_request(slbd, hx, pki):
    """The client's Finished and an incomplete request in one segment: the NewSessionTicket
    must leave when slbd has read them, not wait in the cork (TCP_CORK holds it 200 ms) for the
    rest of the request. The median of three, so one stall of a loaded machine does not
    count."""
    port = site(slbd, hx, pki)
    times = []
    for _ in range(3):
        took = _finished_with_partial_request(port, hx, pki)
        assert took is not None, "no NewSessionTicket before the request was complete"
        times.append(took)
    assert sorted(times)[1] < 0.15, f"the ticket came after {times} s: held in the cork"


# --------------------------------------------------------------------------------------------
# Fragmented and truncated ClientHellos
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
@pytest.mark.parametrize("how", ["1-byte-tcp-segments", "1-byte-records",
                                 "7-byte-records-in-3-byte-segments"])
def test_fragmented_client_hello_completes(slbd, hx, pki, version, how):
    port = site(slbd, hx, pki)
    v = getattr(ssl.TLSVersion, version)
    ctx = hu.insecure_client_context()
    ctx.minimum_version = ctx.maximum_version = v
    kw = {"1-byte-tcp-segments": dict(segment=1),
          "1-byte-records": dict(segment=4096, record_size=1, delay=0),
          "7-byte-records-in-3-byte-segments": dict(segment=3, record_size=7)}[how]
    c = hu.segmented_tls(port, ctx, **kw)
    try:
        assert c.version() == version.replace("_", "."), c.version()
        conn = HttpConn(c)
        r = conn.request("GET", "/fragmented", host="localhost")
        assert r.status == 200 and r.json()["path"] == "/fragmented", r
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_truncated_client_hello(slbd, hx, pki):
    timeout_s = 2
    port = site(slbd, hx, pki, header_timeout_s=timeout_s)
    hello = hu.records(hu.client_hello())
    before = hs_failures(slbd, "tls")
    # Cut, then the client's FIN: slbd ends it at once.
    for cut in (1, 5, 60, len(hello) - 1):
        s = hx.socket(port)
        s.sendall(hello[:cut])
        s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        assert h.wait_closed(s, h.scaled(2)) in ("eof", "reset"), cut
        assert time.monotonic() - t0 < h.scaled(1), cut
        s.close()
    # Cut, then silence: slbd ends it at header_timeout_s and counts a timeout.
    s = hx.socket(port)
    s.sendall(hello[:len(hello) // 3])
    t0 = time.monotonic()
    how = h.wait_closed(s, timeout_s + h.scaled(3))
    took = time.monotonic() - t0
    assert how in ("eof", "reset") and timeout_s - 0.3 <= took <= timeout_s + h.scaled(1.5), \
        (how, took)
    after = h.wait_until(lambda: (f := hs_failures(slbd, "tls")).get("timeout", 0) >
                         before.get("timeout", 0) and f, 5, "the timeout to be counted")
    assert after.get("timeout", 0) == before.get("timeout", 0) + 1, (before, after)
    assert https_get(port) == 200


# --------------------------------------------------------------------------------------------
# Two-way authentication failures
# --------------------------------------------------------------------------------------------


def _mtls(slbd, hx, pki, **tls):
    ca = upload_ca(slbd, pki, "inter", cert_id="ca-inter")
    upload_crl(slbd, ca, pki.path("inter.crl").read_text())
    return site(slbd, hx, pki, name="mtls", client_ca=ca, **tls)


def _client_ctx(pki, who, version):
    ctx = hu.insecure_client_context()
    v = getattr(ssl.TLSVersion, version)
    ctx.minimum_version = ctx.maximum_version = v
    if who == "wrong-client":
        chain = pki.dir / "wrong-chain.pem"
        chain.write_text(pki.pem("wrong-client") + pki.pem("wrongca"))
        ctx.load_cert_chain(str(chain), str(pki.path("wrong-client.key")))
    elif who:
        ctx.load_cert_chain(*pki.client_files(who))
    return ctx


def _alert_seen_by_client(port, ctx):
    """Handshake, then read without sending anything (with TLS 1.3 the verdict on the
    client certificate comes after the client's Finished; a request sent meanwhile would
    make the closing server answer it with a reset that destroys the alert)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(10))
    try:
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.settimeout(h.scaled(5))
        data = t.recv(100)
        return f"no alert: read {data!r}"
    except ssl.SSLError as e:
        alerts = hu.received_alerts(str(e))
        return alerts[0] if alerts else f"no alert: {e}"
    except OSError as e:
        return f"no alert: {e}"
    finally:
        s.close()


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
@pytest.mark.parametrize("who,alert,reason", [
    ("wrong-client", "unknown_ca", "unknown_ca"),
    ("client-expired", "certificate_expired", "cert_expired"),
    ("client-revoked", "certificate_revoked", "cert_revoked"),
    (None, "certificate_required", "no_client_cert"),
], ids=["unknown-ca", "expired", "revoked", "missing"])
def test_mtls_failure_alerts(slbd, hx, pki, version, who, alert, reason):
    port = _mtls(slbd, hx, pki)
    before = hs_failures(slbd, "mtls").get(reason, 0)
    if who is None and version == "TLSv1_2":
        alert = "handshake_failure"  # TLS 1.2 has no certificate_required alert
    got = _alert_seen_by_client(port, _client_ctx(pki, who, version))
    assert got == alert, got
    h.wait_until(lambda: hs_failures(slbd, "mtls").get(reason, 0) == before + 1, 5,
                 f"a {reason} failure to be counted")
    # The same alert as openssl s_client reads it off the wire.
    args = ["-tls1_3" if version == "TLSv1_3" else "-tls1_2", "-msg"]
    if who:
        cert, key = pki.client_files(who) if who != "wrong-client" else (
            str(pki.dir / "wrong-chain.pem"), str(pki.path("wrong-client.key")))
        args += ["-cert", cert, "-key", key]
    rc, out = hu.s_client(port, *args, hold=1.0)
    assert alert in hu.received_alerts(out), "\n".join(
        ln for ln in out.splitlines() if "Alert" in ln or "alert" in ln or "error" in ln)
    # A good client is still served.
    ctx = _client_ctx(pki, "client", version)
    assert hu.simple_get(port, tls_ctx=ctx) == 200


@pytest.mark.timeout(60)
def test_handshake_timeout_while_waiting_for_the_client_certificate(slbd, hx, pki):
    timeout_s = 2
    port = _mtls(slbd, hx, pki, header_timeout_s=timeout_s)
    before = hs_failures(slbd, "mtls").get("timeout", 0)
    flight, s = hu.send_flight(port, hu.records(hu.client_hello(tls13=False)))
    try:
        assert 13 in flight.handshakes, flight  # CertificateRequest
        t0 = time.monotonic()
        how = h.wait_closed(s, timeout_s + h.scaled(3))
        took = time.monotonic() - t0
    finally:
        s.close()
    assert how in ("eof", "reset") and took <= timeout_s + h.scaled(1.5), (how, took)
    h.wait_until(lambda: hs_failures(slbd, "mtls").get("timeout", 0) == before + 1, 5,
                 "the timeout to be counted")
    assert hu.simple_get(port, tls_ctx=_client_ctx(pki, "client", "TLSv1_3")) == 200
