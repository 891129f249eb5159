# SPDX-License-Identifier: Apache-2.0
"""Two-way TLS end to end: which client certificates pass (good, wrong CA, expired, revoked by
an uploaded CRL, none), the X-Forwarded-Clientcert-* headers the backend receives (also on
resumed sessions, client copies removed), optional mode and the handshake failure counters."""

import hashlib
import ssl
import time

import pytest

import slbd_harness as h
from http_util import ConnectionEnded, add_listener, client_context, hx, metrics  # noqa: F401
from pki import issue_client, pki, tls_block, upload_ca, upload_crl, upload_server  # noqa: F401

NOHC = h.no_health_check()
XFC = "x-forwarded-clientcert-"


def mtls_site(slbd, hx, pki, client_auth="required", ca="inter", listener="mtls"):
    """An https listener with client_ca ca: (port, ca id)."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    caid = upload_ca(slbd, pki, ca, cert_id=f"ca-{ca}")
    port = add_listener(slbd, listener, "g", protocol="https",
                        tls=tls_block([cid], client_ca=caid, client_auth=client_auth))
    return port, caid


def ctx_with(pki, client=None, **kw):
    if client:
        cert, key = pki.client_files(client)
        return client_context(pki.root, cert=cert, key=key, **kw)
    return client_context(pki.root, **kw)


def attempt(hx, port, ctx, headers=None, session=None):
    """Handshake and one request. Returns ("ok", response, sslsocket) or ("fail", error, None).
    With TLS 1.3 the server judges the client certificate after the client finished its side
    of the handshake, so a refusal may only show on the first read."""
    try:
        c = hx.tls_connect(port, ctx, server_hostname="localhost", session=session)
        r = c.request("GET", "/whoami", headers)
        return "ok", r, c.sock
    except (ssl.SSLError, ConnectionEnded, ConnectionResetError, BrokenPipeError) as e:
        return "fail", e, None


def fail_counts(slbd, listener="mtls"):
    prefix = f'slbd_listener_handshake_failures_total{{listener="{listener}",reason="'
    return {k[len(prefix):-2]: v for k, v in metrics(slbd).items() if k.startswith(prefix)}


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_good_client_certificate(slbd, hx, pki, version):
    port, _ = mtls_site(slbd, hx, pki)
    v = getattr(ssl.TLSVersion, version)
    kind, r, sock = attempt(hx, port, ctx_with(pki, "client", minimum=v, maximum=v))
    assert kind == "ok", r
    assert r.status == 200, r
    hd = r.json()["headers"]
    assert hd[XFC + "clientverify"] == "SUCCESS", hd
    assert hd[XFC + "subjectdn"] == pki.subject("client") == "CN=SLB Test Client,O=SLB Test"
    assert hd[XFC + "issuerdn"] == pki.issuer("client") == \
        "CN=SLB Test Intermediate CA,O=SLB Test"
    assert hd[XFC + "fingerprint"] == pki.fingerprint("client"), hd
    assert hd[XFC + "fingerprint"] == hashlib.sha256(pki.der("client")).hexdigest()


def test_no_client_certificate_fails(slbd, hx, pki):
    port, _ = mtls_site(slbd, hx, pki)
    for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        kind, err, _ = attempt(hx, port, ctx_with(pki, None, minimum=v, maximum=v))
        assert kind == "fail", err
    h.wait_until(lambda: fail_counts(slbd).get("no_client_cert", 0) >= 2, 5,
                 "no_client_cert failures to be counted")


@pytest.mark.parametrize("client,reason", [("wrong-client", "unknown_ca"),
                                           ("client-expired", "cert_expired"),
                                           ("client-notyet", "cert_not_yet_valid"),
                                           ("server", "cert_key_usage")])
def test_bad_client_certificate_fails(slbd, hx, pki, client, reason):
    port, _ = mtls_site(slbd, hx, pki)
    if client == "wrong-client":
        # Signed by an unrelated CA: send it with its own CA, which slbd does not trust.
        ctx = client_context(pki.root)
        (pki.dir / "wrong-chain.pem").write_text(pki.pem("wrong-client") + pki.pem("wrongca"))
        ctx.load_cert_chain(str(pki.dir / "wrong-chain.pem"), str(pki.dir / "wrong-client.key"))
    else:
        ctx = ctx_with(pki, client)
    kind, err, _ = attempt(hx, port, ctx)
    assert kind == "fail", err
    h.wait_until(lambda: fail_counts(slbd).get(reason, 0) >= 1, 5,
                 f"a {reason} failure to be counted")
    # The good one still works on the same listener.
    assert attempt(hx, port, ctx_with(pki, "client"))[0] == "ok"


def test_revoked_client_certificate_fails_after_crl(slbd, hx, pki):
    port, caid = mtls_site(slbd, hx, pki)
    kind, r, _ = attempt(hx, port, ctx_with(pki, "client-revoked"))
    assert kind == "ok" and r.status == 200, r  # no CRL yet: the certificate chains fine
    upload_crl(slbd, caid, (pki.dir / "inter.crl").read_text())
    kind, err, _ = attempt(hx, port, ctx_with(pki, "client-revoked"))
    assert kind == "fail", err
    h.wait_until(lambda: fail_counts(slbd).get("cert_revoked", 0) >= 1, 5,
                 "a cert_revoked failure to be counted")
    kind, r, _ = attempt(hx, port, ctx_with(pki, "client"))
    assert kind == "ok" and r.status == 200, r


def test_intermediate_crl_under_root_client_ca(slbd, hx, pki):
    """client_ca is the root; client certificates come from the intermediate, whose CRL is
    uploaded to the root together with the intermediate's certificate (and the root's own CRL)."""
    port, caid = mtls_site(slbd, hx, pki, ca="root")
    assert attempt(hx, port, ctx_with(pki, "client-revoked"))[0] == "ok"
    inter_crl = (pki.dir / "inter.crl").read_text()
    # Alone, nothing vouches for the intermediate's CRL.
    st, js = slbd.api.put(f"/v1/certificates/{caid}/crl", {"crl": inter_crl})
    assert st == 400 and js["error"]["code"] == "crl_signature", js
    # An intermediate of another CA does not chain to the root.
    st, js = slbd.api.put(f"/v1/certificates/{caid}/crl",
                          {"crl": pki.pem("wrong-inter") + inter_crl})
    assert st == 400 and js["error"]["code"] == "crl_signature", js
    js = upload_crl(slbd, caid, (pki.dir / "root.crl").read_text() + pki.pem("inter") +
                    inter_crl)
    assert js["crl"]["revoked"] == 1, js
    assert sorted(c["issuer"] for c in js["crl"]["crls"]) == [
        "CN=SLB Test Intermediate CA,O=SLB Test", "CN=SLB Test Root CA,O=SLB Test"], js
    for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        kind, err, _ = attempt(hx, port, ctx_with(pki, "client-revoked", minimum=v, maximum=v))
        assert kind == "fail", err
        kind, r, _ = attempt(hx, port, ctx_with(pki, "client", minimum=v, maximum=v))
        assert kind == "ok" and r.status == 200, r
    h.wait_until(lambda: fail_counts(slbd).get("cert_revoked", 0) >= 2, 5,
                 "cert_revoked failures to be counted")
    # The CRLs and their intermediate survive a restart.
    slbd.restart()
    kind, err, _ = attempt(hx, port, ctx_with(pki, "client-revoked"))
    assert kind == "fail", err
    assert attempt(hx, port, ctx_with(pki, "client"))[0] == "ok"


def test_root_crl_revokes_an_intermediate(slbd, hx, pki):
    """Every certificate of the client's chain is checked: a root CRL that revokes the
    intermediate refuses the clients it issued."""
    port, caid = mtls_site(slbd, hx, pki, ca="root")
    assert attempt(hx, port, ctx_with(pki, "client"))[0] == "ok"
    upload_crl(slbd, caid, (pki.dir / "root-revokes-inter.crl").read_text())
    kind, err, _ = attempt(hx, port, ctx_with(pki, "client"))
    assert kind == "fail", err
    h.wait_until(lambda: fail_counts(slbd).get("cert_revoked", 0) >= 1, 5,
                 "a cert_revoked failure to be counted")


def test_root_as_client_ca(slbd, hx, pki):
    port, _ = mtls_site(slbd, hx, pki, ca="root")
    kind, r, _ = attempt(hx, port, ctx_with(pki, "client"))
    assert kind == "ok", r
    assert r.json()["headers"][XFC + "issuerdn"] == "CN=SLB Test Intermediate CA,O=SLB Test"
    # A client certificate from the unrelated CA still fails.
    ctx = client_context(pki.root)
    ctx.load_cert_chain(str(pki.dir / "wrong-client.pem"), str(pki.dir / "wrong-client.key"))
    assert attempt(hx, port, ctx)[0] == "fail"


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_headers_on_resumed_session(slbd, hx, pki, version):
    port, _ = mtls_site(slbd, hx, pki)
    v = getattr(ssl.TLSVersion, version)
    ctx = ctx_with(pki, "client", minimum=v, maximum=v)
    kind, r, sock = attempt(hx, port, ctx)
    assert kind == "ok", r
    first = r.json()["headers"]
    sess = sock.session
    sock.unwrap()
    kind, r, sock = attempt(hx, port, ctx, session=sess)
    assert kind == "ok", r
    assert sock.session_reused, "the session was not resumed"
    again = r.json()["headers"]
    for k in ("clientverify", "subjectdn", "issuerdn", "fingerprint"):
        assert again[XFC + k] == first[XFC + k], (k, first, again)
    assert again[XFC + "clientverify"] == "SUCCESS"


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
def test_no_resumption_past_client_certificate_expiry(slbd, hx, pki, version):
    """A session resumes without its client certificate being verified again; once that
    certificate has expired the ticket no longer resumes, and the full handshake fails."""
    port, _ = mtls_site(slbd, hx, pki)
    not_after = int(time.time()) + 6
    name = issue_client(pki, f"client-short-{version}", not_after)
    v = getattr(ssl.TLSVersion, version)
    ctx = ctx_with(pki, name, minimum=v, maximum=v)
    kind, r, sock = attempt(hx, port, ctx)
    assert kind == "ok", r
    sess = sock.session
    sock.unwrap()
    kind, r, sock = attempt(hx, port, ctx, session=sess)
    assert kind == "ok" and sock.session_reused, r
    sess = sock.session
    sock.unwrap()
    time.sleep(max(0, not_after + 1.2 - time.time()))  # the expiry is the point of this test
    kind, err, _ = attempt(hx, port, ctx, session=sess)
    assert kind == "fail", "a session of an expired client certificate resumed"
    h.wait_until(lambda: fail_counts(slbd).get("cert_expired", 0) >= 1, 5,
                 "a cert_expired failure to be counted")


def test_client_sent_clientcert_headers_replaced(slbd, hx, pki):
    port, _ = mtls_site(slbd, hx, pki)
    forged = [("X-Forwarded-Clientcert-clientverify", "SUCCESS-FORGED"),
              ("X-Forwarded-Clientcert-subjectdn", "CN=admin"),
              ("x-forwarded-clientcert-fingerprint", "00" * 32),
              ("X-Forwarded-Clientcert-Extra", "injected"),
              ("X-Forwarded-Clientcert", "whole")]
    kind, r, _ = attempt(hx, port, ctx_with(pki, "client"), headers=forged)
    assert kind == "ok", r
    hd = r.json()["headers"]
    assert hd[XFC + "clientverify"] == "SUCCESS", hd
    assert hd[XFC + "subjectdn"] == "CN=SLB Test Client,O=SLB Test", hd
    assert hd[XFC + "fingerprint"] == pki.fingerprint("client"), hd
    assert XFC + "extra" not in hd and "x-forwarded-clientcert" not in hd, hd


def test_optional_mode(slbd, hx, pki):
    port, _ = mtls_site(slbd, hx, pki, client_auth="optional")
    kind, r, _ = attempt(hx, port, ctx_with(pki, None),
                         headers=[("X-Forwarded-Clientcert-subjectdn", "CN=forged")])
    assert kind == "ok", r
    hd = r.json()["headers"]
    assert hd[XFC + "clientverify"] == "NONE", hd
    for k in ("subjectdn", "issuerdn", "fingerprint"):
        assert XFC + k not in hd, hd
    kind, r, _ = attempt(hx, port, ctx_with(pki, "client"))
    assert kind == "ok" and r.json()["headers"][XFC + "clientverify"] == "SUCCESS", r
    # A certificate that is sent must verify, even when it is optional.
    assert attempt(hx, port, ctx_with(pki, "client-expired"))[0] == "fail"


def test_no_client_ca_strips_clientcert_headers(slbd, hx, pki):
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    cid = upload_server(slbd, pki, "server")
    port = add_listener(slbd, "plain-tls", "g", protocol="https", tls=tls_block([cid]))
    kind, r, _ = attempt(hx, port, ctx_with(pki, "client"),
                         headers=[("X-Forwarded-Clientcert-clientverify", "SUCCESS")])
    assert kind == "ok", r
    hd = r.json()["headers"]
    assert not [k for k in hd if k.startswith("x-forwarded-clientcert")], hd
