# SPDX-License-Identifier: Apache-2.0
"""OCSP stapling end to end, all on loopback: `openssl ocsp` is the responder named in the
certificates' AIA, `openssl s_client -status` the client that reads the staple (TLS 1.2
status_request and the TLS 1.3 certificate entry). slbd runs with SLBD_OCSP_REFRESH_S=2 so a
response is refreshed every 2 s instead of at half its validity."""

import base64
import datetime
import importlib.util
import re
import subprocess
import time

import pytest

import slbd_harness as h
import cert_util as cu
import http_util as hu
from http_util import hx  # noqa: F401  (fixture)
from pki import pki  # noqa: F401  (fixture)


def _run(argv, cwd, input=None):
    p = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, timeout=60,
                       input=input)
    if p.returncode != 0:
        raise h.HarnessError(f"{' '.join(map(str, argv))} failed:\n"
                             f"{p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


class OcspPki:
    """Under the session PKI's intermediate: a delegated OCSP responder certificate and server
    certificates whose AIA names http://127.0.0.1:<port> (one of them must-staple, one with no
    AIA at all)."""

    def __init__(self, pki):
        self.pki = pki
        self.dir = pki.dir / "ocsp"
        self.dir.mkdir(exist_ok=True)
        self.port = h.free_port()
        self._issue("responder", "extendedKeyUsage = critical, OCSPSigning\n")
        aia = f"authorityInfoAccess = OCSP;URI:http://127.0.0.1:{self.port}\n"
        server = "extendedKeyUsage = serverAuth\nsubjectAltName = " + cu.SERVER_SANS_EXT + "\n"
        self._issue("leaf", server + aia)
        self._issue("must", server + aia + "tlsfeature = status_request\n")
        self._issue("noaia", server)

    def _issue(self, name, ext):
        d = self.dir
        _run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-out", f"{name}.key"], d)
        (d / f"{name}.ext").write_text("basicConstraints = critical, CA:FALSE\n"
                                       "keyUsage = critical, digitalSignature\n" + ext)
        _run(["openssl", "req", "-new", "-key", f"{name}.key", "-subj",
              f"/O=SLB Test/CN=ocsp-{name}", "-config", self.pki.dir / "ca-inter" / "openssl.cnf",
              "-out", f"{name}.csr"], d)
        _run(["openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", self.pki.dir / "inter.pem",
              "-CAkey", self.pki.dir / "inter.key", "-CAcreateserial", "-days", "365", "-sha256",
              "-extfile", f"{name}.ext", "-out", f"{name}.pem"], d)

    def path(self, name, ext="pem"):
        return self.dir / f"{name}.{ext}"

    def body(self, name, cert_id):
        return {"id": cert_id, "name": cert_id, "type": "server",
                "certificate": self.path(name).read_text() + self.pki.pem("inter"),
                "private_key": self.path(name, "key").read_text()}

    def write_index(self, revoked=()):
        """The responder's database: every server certificate valid, except those named."""
        lines = []
        for name in ("leaf", "must", "noaia"):
            serial = _run(["openssl", "x509", "-in", self.path(name), "-noout", "-serial"],
                          self.dir).strip().split("=", 1)[1]
            exp = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 86400 * 365))
            rev = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() - 60))
            flag, when = ("R", rev) if name in revoked else ("V", "")
            lines.append(f"{flag}\t{exp}\t{when}\t{serial}\tunknown\t/O=SLB Test/CN=ocsp-{name}\n")
        self.path("index", "txt").write_text("".join(lines))

    def offline_response(self, name, out):
        """A response for certificate name made by `openssl ocsp` without a network."""
        req = self.dir / f"{out}.req"
        _run(["openssl", "ocsp", "-issuer", self.pki.dir / "inter.pem", "-cert", self.path(name),
              "-no_nonce", "-reqout", req], self.dir)
        resp = self.dir / f"{out}.der"
        _run(["openssl", "ocsp", "-index", self.path("index", "txt"), "-rsigner",
              self.path("responder"), "-rkey", self.path("responder", "key"), "-CA",
              self.pki.dir / "inter.pem", "-reqin", req, "-respout", resp, "-ndays", "1"],
             self.dir)
        return resp.read_bytes()


class Responder:
    """`openssl ocsp` serving the index on the port the certificates name."""

    def __init__(self, op, workdir):
        self.op = op
        self.workdir = workdir
        self.proc = None
        self.runs = 0

    def start(self, revoked=()):
        self.op.write_index(revoked)
        self.runs += 1
        path = self.workdir / f"ocsp-responder.{self.runs}.log"
        log = open(path, "wb")
        self.proc = subprocess.Popen(
            ["openssl", "ocsp", "-index", str(self.op.path("index", "txt")), "-port",
             str(self.op.port), "-rsigner", str(self.op.path("responder")), "-rkey",
             str(self.op.path("responder", "key")), "-CA", str(self.op.pki.dir / "inter.pem"),
             "-nmin", "1", "-ignore_err"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        log.close()
        # Not probed with a connection: one that sends nothing wedges openssl ocsp.
        deadline = time.monotonic() + h.scaled(10)
        while time.monotonic() < deadline:
            if "waiting for OCSP client connections" in path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise h.HarnessError("openssl ocsp did not start listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="module")
def op(pki):
    return OcspPki(pki)


@pytest.fixture(autouse=True)
def fast_refresh(monkeypatch):
    monkeypatch.setenv("SLBD_OCSP_REFRESH_S", "2")


@pytest.fixture
def responder(op, workdir):
    r = Responder(op, workdir)
    yield r
    r.stop()


def staple(port, version):
    """What `openssl s_client -status` reports: "good", "revoked" or None (no staple)."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                        "localhost", "-status", version], input=b"", capture_output=True,
                       timeout=h.scaled(20))
    out = p.stdout.decode(errors="replace")
    assert "Verify return code" in out or "Protocol" in out, out + p.stderr.decode()
    if "OCSP response: no response sent" in out:
        return None
    assert "OCSP Response Status: successful" in out, out
    m = re.search(r"Cert Status: (\w+)", out)
    assert m, out
    return m.group(1)


def staples(port):
    """The staple seen over TLS 1.2 and TLS 1.3, which must agree."""
    a, b = staple(port, "-tls1_2"), staple(port, "-tls1_3")
    assert a == b, (a, b)
    return a


def ocsp_state(slbd, cert_id):
    return cu.get_cert(slbd, cert_id)["ocsp"]


def wait_until(what, pred, timeout=20):
    deadline = time.monotonic() + h.scaled(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def context_builds(slbd):
    return hu.metrics(slbd)["slbd_tls_context_builds_total"]


def site(slbd, hx, op, name, cert_id):
    st, js = slbd.api.post("/v1/certificates", op.body(name, cert_id))
    assert st == 201, js
    return cu.https_setup(slbd, hx, [cert_id])


def test_good_staple_then_revoked_after_the_responder_changes(slbd, hx, op, responder):
    responder.start()
    port = site(slbd, hx, op, "leaf", "leaf")
    st = wait_until("a good staple", lambda: ocsp_state(slbd, "leaf")["state"] == "good"
                    and ocsp_state(slbd, "leaf"))
    assert st["responder"] == f"http://127.0.0.1:{op.port}"
    assert st["next_update"] and st["this_update"] and st["last_error"] is None
    assert staples(port) == "good"
    m = hu.metrics(slbd)
    assert m['slbd_certificate_ocsp_state{id="leaf",state="good"}'] == 1
    assert m['slbd_certificate_ocsp_next_update_timestamp_seconds{id="leaf"}'] == \
        cu.parse_rfc3339(st["next_update"])
    builds = context_builds(slbd)

    responder.stop()
    responder.start(revoked=("leaf",))
    wait_until("a revoked staple", lambda: staple(port, "-tls1_3") == "revoked")
    assert staples(port) == "revoked"
    assert ocsp_state(slbd, "leaf")["state"] == "revoked"
    # The new response reached the workers without a new TLS context.
    assert context_builds(slbd) == builds


def test_responder_down_keeps_the_valid_staple(slbd, hx, op, responder):
    responder.start()
    port = site(slbd, hx, op, "leaf", "leaf")
    wait_until("a good staple", lambda: ocsp_state(slbd, "leaf")["state"] == "good")
    responder.stop()
    st = wait_until("a failed refresh", lambda: (s := ocsp_state(slbd, "leaf"))["failures"] > 0
                    and s)
    assert st["state"] == "good", st
    assert "127.0.0.1" in st["last_error"], st
    assert staples(port) == "good"
    assert hu.metrics(slbd)['slbd_certificate_ocsp_failures_total{id="leaf"}'] >= 1


def _made_response(op, next_update_s, status="GOOD", signer="responder"):
    """A response for noaia valid for next_update_s seconds (negative: expired), signed by
    signer (the openssl CLI cannot make validity shorter than a minute, nor sign wrongly)."""
    ocsp = pytest.importorskip("cryptography.x509.ocsp")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    cert = x509.load_pem_x509_certificate(op.path("noaia").read_bytes())
    issuer = x509.load_pem_x509_certificate(op.pki.pem("inter").encode())
    rcert = x509.load_pem_x509_certificate(op.path(signer).read_bytes())
    rkey = serialization.load_pem_private_key(op.path(signer, "key").read_bytes(), None)
    now = datetime.datetime.utcnow()
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=cert, issuer=issuer, algorithm=hashes.SHA1(),
        cert_status=getattr(ocsp.OCSPCertStatus, status),
        this_update=now - datetime.timedelta(seconds=120),
        next_update=now + datetime.timedelta(seconds=next_update_s), revocation_time=None,
        revocation_reason=None)
    b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, rcert).certificates([rcert])
    return b.sign(rkey, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def put_ocsp(slbd, cert_id, der):
    return slbd.api.put(f"/v1/certificates/{cert_id}/ocsp",
                        {"response": base64.b64encode(der).decode()})


def test_expired_staple_is_dropped(slbd, hx, op):
    der = _made_response(op, 4)
    port = site(slbd, hx, op, "noaia", "noaia")
    assert ocsp_state(slbd, "noaia")["state"] == "none"
    assert staples(port) is None
    st, js = put_ocsp(slbd, "noaia", der)
    assert st == 200, js
    assert js["ocsp"]["state"] == "good"
    assert staples(port) == "good"
    wait_until("the staple to expire", lambda: staple(port, "-tls1_3") is None, timeout=15)
    assert staple(port, "-tls1_2") is None
    wait_until("state expired", lambda: ocsp_state(slbd, "noaia")["state"] == "expired")


def test_uploaded_response(slbd, hx, op):
    op.write_index()
    port = site(slbd, hx, op, "noaia", "noaia")
    builds = context_builds(slbd)
    st, js = put_ocsp(slbd, "noaia", op.offline_response("leaf", "other"))
    assert st == 400 and js["error"]["code"] == "invalid_ocsp_response", js
    st, js = put_ocsp(slbd, "noaia", b"not an OCSP response")
    assert st == 400 and js["error"]["code"] == "invalid_ocsp_response", js
    st, js = slbd.api.put("/v1/certificates/noaia/ocsp", {"response": "!!"})
    assert st == 400 and js["error"]["code"] == "invalid_body", js
    if importlib.util.find_spec("cryptography"):
        # Signed by a certificate of the issuer that is not an OCSP responder; expired;
        # status unknown: all refused.
        for der in (_made_response(op, 3600, signer="leaf"), _made_response(op, -60),
                    _made_response(op, 3600, status="UNKNOWN")):
            st, js = put_ocsp(slbd, "noaia", der)
            assert st == 400 and js["error"]["code"] == "invalid_ocsp_response", js
    assert staples(port) is None
    st, js = put_ocsp(slbd, "noaia", op.offline_response("noaia", "noaia-good"))
    assert st == 200, js
    assert js["ocsp"]["state"] == "good" and js["ocsp"]["responder"] is None
    assert staples(port) == "good"
    op.write_index(revoked=("noaia",))
    st, js = put_ocsp(slbd, "noaia", op.offline_response("noaia", "noaia-revoked"))
    assert st == 200 and js["ocsp"]["state"] == "revoked", js
    assert staples(port) == "revoked"
    assert context_builds(slbd) == builds


def test_must_staple_refused_unless_a_response_can_be_had(slbd, hx, op, responder):
    st, js = slbd.api.post("/v1/certificates", op.body("must", "must"))
    assert st == 400 and js["error"]["code"] == "must_staple_without_ocsp", js
    assert all(c["id"] != "must" for c in cu.cert_list(slbd))
    assert not (slbd.state_dir / "certs" / "must.json").exists()
    responder.start()
    st, js = slbd.api.post("/v1/certificates", op.body("must", "must"))
    assert st == 201, js
    assert js["ocsp"]["state"] == "good" and js["ocsp"]["must_staple"] is True
    port = cu.https_setup(slbd, hx, ["must"])
    assert staples(port) == "good"


def test_restart_staples_the_stored_response_at_once(slbd, hx, op, responder):
    responder.start()
    port = site(slbd, hx, op, "leaf", "leaf")
    wait_until("a good staple", lambda: ocsp_state(slbd, "leaf")["state"] == "good")
    assert (slbd.state_dir / "certs" / "leaf.ocsp.der").exists()
    responder.stop()
    slbd.restart()
    assert staples(port) == "good"
    assert ocsp_state(slbd, "leaf")["state"] == "good"
