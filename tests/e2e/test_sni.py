# SPDX-License-Identifier: Apache-2.0
"""Certificate selection on an https listener with several certificates: by SNI name (exact,
one-label wildcard, default for everything else), by key type from the client's signature
algorithms (an ECDSA and an RSA certificate for the same names), with curl, Python ssl and
openssl s_client; and 421 when Host names a site of another certificate than SNI chose."""

import hashlib
import re
import shutil
import ssl
import subprocess

import pytest

import cert_util as cu
import slbd_harness as h
from http_util import add_listener, client_context, hx  # noqa: F401
from pki import pki, tls_block, upload_server  # noqa: F401

NOHC = h.no_health_check()


def sni_site(slbd, hx, pki, certs=("server", "other")):
    """One https listener with the given pki certificates, in that order (the first is the
    default). Returns the port."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    ids = [upload_server(slbd, pki, c, cert_id=c) for c in certs]
    return add_listener(slbd, "sni", "g", protocol="https", tls=tls_block(ids))


def served(hx, port, pki, name, **ctx_kw):
    """The fingerprint of the certificate served for SNI name (None: no SNI)."""
    ctx = client_context(pki.root, **ctx_kw)
    c = hx.tls_connect(port, ctx, server_hostname=name)
    fp = hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest()
    c.close()
    return fp


@pytest.mark.parametrize("name,cert", [
    ("localhost", "server"),
    ("www.example.com", "server"),
    ("WWW.Example.COM", "server"),
    ("api.example.com", "server"),      # *.example.com
    ("other.test", "other"),
    ("other.test.", "other"),           # a trailing dot is the same name
    ("a.other.test", "other"),          # *.other.test covers one label
    ("a.b.other.test", "server"),       # ... not two: default
    ("unknown.test", "server"),         # no match: default
    (None, "server"),                   # no SNI: default
])
def test_certificate_chosen_by_name(slbd, hx, pki, name, cert):
    port = sni_site(slbd, hx, pki)
    assert served(hx, port, pki, name) == pki.fingerprint(cert)


def test_default_is_the_first_certificate(slbd, hx, pki):
    port = sni_site(slbd, hx, pki, certs=("other", "server"))
    assert served(hx, port, pki, None) == pki.fingerprint("other")
    assert served(hx, port, pki, "unknown.test") == pki.fingerprint("other")
    assert served(hx, port, pki, "localhost") == pki.fingerprint("server")


@pytest.mark.parametrize("name,cn", [("localhost", "localhost"), ("www.example.com", "localhost"),
                                     ("other.test", "other.test"),
                                     ("x.other.test", "other.test")])
def test_curl_verifies_each_name(slbd, hx, pki, name, cn):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    port = sni_site(slbd, hx, pki)
    p = subprocess.run(["curl", "-sSv", "--cacert", pki.root, "--resolve",
                        f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/sni"],
                       capture_output=True, timeout=h.scaled(20))
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err  # curl checked the name against the served certificate
    m = re.search(r"subject: (.*)", err)
    assert m and f"CN={cn}" in m.group(1).replace(" ", ""), err


def s_client_cert(port, servername, *args):
    """(fingerprint of the served leaf, s_client output) via openssl s_client."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-showcerts", *args]
    if servername:
        argv += ["-servername", servername]
    else:
        argv += ["-noservername"]
    p = subprocess.run(argv, input=b"", capture_output=True, timeout=h.scaled(15))
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    if p.returncode != 0 or not m:
        return None, out
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest(), out


@pytest.mark.parametrize("proto", ["-tls1_3", "-tls1_2"])
@pytest.mark.parametrize("name,ec,rsa", [("localhost", "server", "server-rsa"),
                                         ("other.test", "other", "other-rsa"),
                                         (None, "server", "server-rsa")])
def test_key_type_follows_signature_algorithms(slbd, hx, pki, proto, name, ec, rsa):
    port = sni_site(slbd, hx, pki, certs=("server", "server-rsa", "other", "other-rsa"))
    fp, out = s_client_cert(port, name, proto, "-sigalgs", "ECDSA+SHA256:RSA-PSS+SHA256")
    assert fp == pki.fingerprint(ec), out
    fp, out = s_client_cert(port, name, proto, "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256")
    assert fp == pki.fingerprint(rsa), out
    fp, out = s_client_cert(port, name, proto, "-sigalgs", "ECDSA+SHA256")
    assert fp == pki.fingerprint(ec), out


def test_rsa_default_twin_chosen_for_rsa_only_clients(slbd, hx, pki):
    # The RSA certificate is listed first (default) and the ECDSA one has the same names.
    port = sni_site(slbd, hx, pki, certs=("server-rsa", "server"))
    fp, out = s_client_cert(port, "localhost", "-sigalgs", "ECDSA+SHA256")
    assert fp == pki.fingerprint("server"), out
    fp, out = s_client_cert(port, "localhost", "-sigalgs", "RSA-PSS+SHA256")
    assert fp == pki.fingerprint("server-rsa"), out


def test_tls12_client_with_rsa_suites_only(slbd, hx, pki):
    """A TLS 1.2 client that offers only ECDHE-RSA suites gets the RSA certificate (its
    default signature algorithms still list ECDSA, but it could not use an ECDSA key)."""
    port = sni_site(slbd, hx, pki, certs=("server", "server-rsa"))
    ctx = client_context(pki.root, maximum=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    c = hx.tls_connect(port, ctx, server_hostname="localhost")
    assert hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest() == \
        pki.fingerprint("server-rsa")
    assert c.sock.cipher()[0].startswith("ECDHE-RSA-"), c.sock.cipher()
    ctx = client_context(pki.root, maximum=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    c = hx.tls_connect(port, ctx, server_hostname="localhost")
    assert hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest() == \
        pki.fingerprint("server")


# OpenSSL chooses among the certificates SNI offers (one per key type), from everything the
# client says it can verify: a TLS 1.3 ECDSA scheme names its curve (ecdsa_secp384r1_sha384 is
# no use for a P-256 key), a TLS 1.2 ECDSA key must be on a curve the client lists.
@pytest.mark.parametrize("name,rsa", [("localhost", "server-rsa"), ("other.test", "other-rsa"),
                                      (None, "server-rsa")])
@pytest.mark.parametrize("args", [
    ("-tls1_3", "-sigalgs", "ECDSA+SHA384:RSA-PSS+SHA256"),
    ("-tls1_3", "-sigalgs", "ECDSA+SHA384:ECDSA+SHA512:RSA-PSS+SHA256"),
    ("-tls1_2", "-curves", "P-384"),
])
def test_ecdsa_scheme_for_another_curve_gets_rsa(slbd, hx, pki, args, name, rsa):
    port = sni_site(slbd, hx, pki, certs=("server", "server-rsa", "other", "other-rsa"))
    fp, out = s_client_cert(port, name, *args)
    assert fp == pki.fingerprint(rsa), out


@pytest.mark.parametrize("name,ec,rsa", [("other.test", "other", "other-rsa"),
                                         (None, "server", "server-rsa")])
def test_key_type_after_hello_retry_request(slbd, hx, pki, name, ec, rsa):
    """A key share for P-521 only, which slbd does not take: a HelloRetryRequest, and the
    second ClientHello gets the certificates of the first."""
    port = sni_site(slbd, hx, pki, certs=("server", "server-rsa", "other", "other-rsa"))
    for sigalgs, want in (("ECDSA+SHA384:RSA-PSS+SHA256", rsa), ("ECDSA+SHA256", ec)):
        fp, out = s_client_cert(port, name, "-tls1_3", "-groups", "P-521:X25519", "-sigalgs",
                                sigalgs, "-msg")
        assert out.count("], ClientHello") == 2, out  # the second answers the retry request
        assert fp == pki.fingerprint(want), out


def test_p384_certificate_served_by_its_scheme(slbd, hx, pki):
    cu.issue_server(pki, "server-p384", kind="ec384")
    port = sni_site(slbd, hx, pki, certs=("server-p384", "server-rsa"))
    fp, out = s_client_cert(port, "localhost", "-tls1_3", "-sigalgs",
                            "ECDSA+SHA256:RSA-PSS+SHA256")
    assert fp == pki.fingerprint("server-rsa"), out
    fp, out = s_client_cert(port, "localhost", "-tls1_3", "-sigalgs",
                            "ECDSA+SHA256:ECDSA+SHA384:RSA-PSS+SHA256")
    assert fp == pki.fingerprint("server-p384"), out
    fp, out = s_client_cert(port, "localhost", "-tls1_2", "-curves", "P-256")
    assert fp == pki.fingerprint("server-rsa"), out
    fp, out = s_client_cert(port, "localhost", "-tls1_2")
    assert fp == pki.fingerprint("server-p384"), out


@pytest.mark.parametrize("certs", [("server", "server-rsa"), ("server-rsa", "server")])
def test_python_clients_by_key_type(slbd, hx, pki, certs):
    """Python ssl: a default client gets ECDSA whichever certificate is the default; a TLS 1.2
    client without P-256 among its groups, or offering only ECDHE-RSA suites, gets RSA."""
    port = sni_site(slbd, hx, pki, certs=certs)
    for maximum in (None, ssl.TLSVersion.TLSv1_2):
        assert served(hx, port, pki, "localhost", maximum=maximum) == pki.fingerprint("server")
    ctx = client_context(pki.root, maximum=ssl.TLSVersion.TLSv1_2)
    ctx.set_ecdh_curve("secp384r1")  # the client's supported groups: P-384 only
    c = hx.tls_connect(port, ctx, server_hostname="localhost")
    assert hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest() == \
        pki.fingerprint("server-rsa")
    assert c.request("GET", "/p384", host="localhost").status == 200
    ctx = client_context(pki.root, maximum=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
    c = hx.tls_connect(port, ctx, server_hostname="localhost")
    assert hashlib.sha256(c.sock.getpeercert(binary_form=True)).hexdigest() == \
        pki.fingerprint("server-rsa")


@pytest.mark.parametrize("proto", ["-tls1_3", "-tls1_2"])
@pytest.mark.parametrize("sigalgs,status", [("ECDSA+SHA256", 200), ("RSA-PSS+SHA256", 421)])
def test_misdirected_judges_the_certificate_served(slbd, hx, pki, sigalgs, status, proto):
    """Both certificates match the SNI name, only the ECDSA one covers www.example.com: the 421
    check looks at the one OpenSSL served."""
    cu.issue_server(pki, "localhost-rsa", kind="rsa", sans="DNS:localhost")
    port = sni_site(slbd, hx, pki, certs=("server", "localhost-rsa"))
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            proto, "-sigalgs", sigalgs, "-quiet"]
    req = b"GET /md HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n"
    p = subprocess.run(argv, input=req, capture_output=True, timeout=h.scaled(15))
    assert p.stdout.startswith(f"HTTP/1.1 {status} ".encode()), p.stdout + p.stderr


@pytest.mark.parametrize("sni,host,status", [
    ("localhost", "other.test", 421),
    ("localhost", "a.other.test:443", 421),
    ("other.test", "www.example.com", 421),
    ("localhost", "www.example.com", 200),     # same certificate
    ("localhost", "api.example.com:8443", 200),
    ("localhost", "unknown.test", 200),        # names no certificate of the listener
    (None, "other.test", 200),                 # no SNI: nothing to contradict
    ("other.test", "OTHER.TEST.", 200),
])
# TLS 1.3 reads SNI presence back from OpenSSL, TLS 1.2 keeps it in a flag (tls/ctx.c).
@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_misdirected_request(slbd, hx, pki, sni, host, status, tls):
    port = sni_site(slbd, hx, pki)
    maximum = ssl.TLSVersion.TLSv1_2 if tls == "1.2" else None
    c = hx.tls_connect(port, client_context(pki.root, maximum=maximum), server_hostname=sni)
    assert c.sock.version() == f"TLSv{tls}"
    r = c.request("GET", "/md", host=host)
    assert r.status == status, r
    if status == 421:
        # The connection stays usable for the site SNI chose.
        ok_host = "localhost" if sni == "localhost" else "other.test"
        assert c.request("GET", "/ok", host=ok_host).status == 200


@pytest.mark.parametrize("sni,status", [("localhost", 421), (None, 200)])
def test_tls12_resumption_judges_this_handshakes_sni(slbd, hx, pki, sni, status):
    """A TLS 1.2 session made with SNI, resumed with or without it. What counts is the SNI of
    the resuming handshake, which OpenSSL does not report for TLS 1.2 resumptions (its
    SSL_get_servername gives the session's name, which it does not keep here)."""
    port = sni_site(slbd, hx, pki)
    ctx = client_context(pki.root, maximum=ssl.TLSVersion.TLSv1_2)
    first = hx.tls_connect(port, ctx, server_hostname="localhost")
    assert first.request("GET", "/md", host="other.test").status == 421
    session = first.sock.session
    first.close()
    again = hx.tls_connect(port, ctx, server_hostname=sni, session=session)
    assert again.sock.session_reused and again.sock.version() == "TLSv1.2"
    assert again.request("GET", "/md", host="other.test").status == status
