# SPDX-License-Identifier: Apache-2.0
"""The test PKI of the https end-to-end tests: tests/pki/make-pki.sh run once per session, plus
certificates for a second site (other.test, EC and RSA) issued by the same intermediate, and
helpers that upload certificates to slbd and compute what the tests compare against."""

import hashlib
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import slbd_harness as h

MAKE_PKI = h.REPO / "tests" / "pki" / "make-pki.sh"


def _run(argv, cwd):
    p = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, timeout=120)
    if p.returncode != 0:
        raise h.HarnessError(f"{' '.join(map(str, argv))} failed:\n"
                             f"{p.stdout.decode(errors='replace')}"
                             f"{p.stderr.decode(errors='replace')}")
    return p.stdout.decode()


class Pki:
    """Files of the generated PKI (see make-pki.sh for the names) and facts about them."""

    def __init__(self, d):
        self.dir = Path(d)

    def path(self, name):
        return self.dir / name

    def pem(self, name):
        return (self.dir / f"{name}.pem").read_text()

    def key(self, name):
        return (self.dir / f"{name}.key").read_text()

    def chain(self, name):
        """Leaf then the intermediate, as a user uploads a server certificate."""
        return self.pem(name) + self.pem("inter")

    def der(self, name):
        return ssl.PEM_cert_to_DER_cert(self.pem(name))

    def fingerprint(self, name):
        """SHA-256 of the DER, lowercase hex without colons (what slbd reports)."""
        return hashlib.sha256(self.der(name)).hexdigest()

    def _name(self, name, which):
        out = _run(["openssl", "x509", "-in", self.dir / f"{name}.pem", "-noout", f"-{which}",
                    "-nameopt", "RFC2253"], self.dir)
        return out.strip().split("=", 1)[1].strip()

    def subject(self, name):
        """RFC 4514 (RFC 2253 order, most specific first) subject of a certificate."""
        return self._name(name, "subject")

    def issuer(self, name):
        return self._name(name, "issuer")

    def client_files(self, name):
        """(certificate chain file, key file) for a client certificate: leaf + intermediate, so
        it verifies against either CA."""
        chain = self.dir / f"{name}-chain.pem"
        if not chain.exists():
            chain.write_text(self.pem(name) + self.pem("inter"))
        return str(chain), str(self.dir / f"{name}.key")

    @property
    def root(self):
        return str(self.dir / "root.pem")


def _issue_extra(d, name, cn, sans, kind):
    """A server certificate signed by inter with the given SANs (make-pki.sh has one SAN set)."""
    d = Path(d)
    if kind == "ec":
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", f"{name}.key"], d)
    else:
        _run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
              "-out", f"{name}.key"], d)
    (d / f"{name}.ext").write_text(
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {sans}\n")
    _run(["openssl", "req", "-new", "-key", f"{name}.key", "-subj", f"/O=SLB Test/CN={cn}",
          "-config", d / "ca-inter" / "openssl.cnf", "-out", f"{name}.csr"], d)
    _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "inter.pem", "-CAkey",
          "inter.key", "-CAcreateserial", "-days", "3650", "-sha256", "-extfile",
          f"{name}.ext", "-out", f"{name}.pem"], d)


def issue_client(pki, name, not_after):
    """A client certificate signed by inter that expires at not_after (unix seconds, UTC);
    returns name. For tests that watch a certificate expire."""
    d = pki.dir
    stamp = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(not_after))
    start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 60))
    _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", f"{name}.key"], d)
    _run(["openssl", "req", "-config", d / "ca-inter" / "openssl.cnf", "-new", "-key",
          f"{name}.key", "-subj", f"/O=SLB Test/CN={name}", "-out", f"{name}.csr"], d)
    _run(["openssl", "ca", "-config", d / "ca-inter" / "openssl.cnf", "-batch", "-notext",
          "-extensions", "client_ext", "-startdate", start, "-enddate", stamp, "-in",
          f"{name}.csr", "-out", f"{name}.pem"], d)
    return name


_generated = {}


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The PKI, generated once per session. Test modules import this fixture, which makes
    one session-scoped definition per module; the cache keeps it to one generation."""
    key = id(tmp_path_factory)
    if key not in _generated:
        d = tmp_path_factory.mktemp("pki")
        _run(["sh", MAKE_PKI, d], d)
        _issue_extra(d, "other", "other.test", "DNS:other.test,DNS:*.other.test", "ec")
        _issue_extra(d, "other-rsa", "other.test", "DNS:other.test,DNS:*.other.test", "rsa")
        _generated[key] = Pki(d)
    return _generated[key]


# --------------------------------------------------------------------------------------------
# Upload helpers
# --------------------------------------------------------------------------------------------


def upload_server(slbd, pki, name, cert_id=None):
    """Upload pki certificate name (with the intermediate) as a server certificate; returns
    the id."""
    body = {"name": cert_id or name, "type": "server", "certificate": pki.chain(name),
            "private_key": pki.key(name)}
    if cert_id:
        body["id"] = cert_id
    st, js = slbd.api.post("/v1/certificates", body)
    if st != 201:
        raise h.HarnessError(f"upload of {name}: {st} {js}")
    return js["id"]


def upload_ca(slbd, pki, name, cert_id=None):
    body = {"name": cert_id or name, "type": "ca", "certificate": pki.pem(name)}
    if cert_id:
        body["id"] = cert_id
    st, js = slbd.api.post("/v1/certificates", body)
    if st != 201:
        raise h.HarnessError(f"upload of CA {name}: {st} {js}")
    return js["id"]


def upload_crl(slbd, ca_id, crl_pem):
    st, js = slbd.api.put(f"/v1/certificates/{ca_id}/crl", {"crl": crl_pem})
    if st != 200:
        raise h.HarnessError(f"PUT CRL of {ca_id}: {st} {js}")
    return js


def tls_block(cert_ids, **extra):
    return {"certificates": list(cert_ids), **extra}
