# SPDX-License-Identifier: Apache-2.0
"""ACME end to end, all on loopback: Debian's Pebble is the CA (its directory served with a
certificate of the test PKI, which the account trusts through ca_certificate), and
pebble-challtestsrv its DNS server, answering 127.0.0.1 for every name. Pebble's validation
authority connects to slbd's own listeners: http-01 on the http listener, tls-alpn-01 on the
https listener."""

import json
import re
import shutil
import ssl
import socket
import subprocess
import time

import pytest

import slbd_harness as h
import cert_util as cu
import http_util as hu
import pki as pk
from pki import pki  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not shutil.which("pebble") or not shutil.which(
    "pebble-challtestsrv"), reason="pebble and pebble-challtestsrv are needed (scripts/deps.sh)")


class Pebble:
    """pebble + pebble-challtestsrv, on free loopback ports, validating against slbd's ports."""

    def __init__(self, workdir, pki, http_port, tls_port, va_sleep=0):
        cu.issue_server(pki, "pebble")
        self.dir = workdir / "pebble"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cert.pem").write_text(pki.chain("pebble"))
        (self.dir / "key.pem").write_text(pki.key("pebble"))
        self.port = h.free_port()
        mgmt = h.free_port()
        dns = h.free_port()
        cts_mgmt = h.free_port()
        (self.dir / "config.json").write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{mgmt}",
            "certificate": str(self.dir / "cert.pem"), "privateKey": str(self.dir / "key.pem"),
            "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}))
        self.log = open(self.dir / "pebble.log", "wb")
        self.cts = subprocess.Popen(
            ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{cts_mgmt}", "-defaultIPv4",
             "127.0.0.1", "-defaultIPv6", ""], stdout=self.log, stderr=subprocess.STDOUT)
        env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_ALWAYS_VALID": "0"}
        if va_sleep:
            env["PEBBLE_VA_SLEEPTIME"] = str(va_sleep)
        else:
            env["PEBBLE_VA_NOSLEEP"] = "1"
        self.proc = subprocess.Popen(
            ["pebble", "-config", str(self.dir / "config.json"), "-dnsserver",
             f"127.0.0.1:{dns}"], stdout=self.log, stderr=subprocess.STDOUT, env=env,
            cwd=self.dir)
        h.wait_until(self._up, h.scaled(20), "pebble listening")
        self.directory = f"https://localhost:{self.port}/dir"

    def _up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log_text(self):
        return (self.dir / "pebble.log").read_text(errors="replace")

    def stop(self):
        for p in (self.proc, self.cts):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.log.close()


def _setup(slbd, pki, workdir, va_sleep=0):
    """slbd with an http and an https listener (the https one on an uploaded certificate until
    ACME gives it another), and Pebble validating against them."""
    backend = h.EchoBackend(workdir, "b", mode="http")
    backend.start()
    slbd.add_group("g", [backend.server()], health_check=h.no_health_check())
    http_port = hu.add_listener(slbd, "web", "g")
    up = pk.upload_server(slbd, pki, "server")
    tls_port = cu.add_https_listener(slbd, "secure", "g", [up])
    pb = Pebble(workdir, pki, http_port, tls_port, va_sleep)
    return {"http": http_port, "https": tls_port, "pebble": pb, "uploaded": up,
            "backend": backend}


@pytest.fixture
def setup(slbd, pki, workdir):
    s = _setup(slbd, pki, workdir)
    yield s
    s["pebble"].stop()
    s["backend"].stop()


@pytest.fixture
def slow_setup(slbd, pki, workdir):
    """The same with Pebble's validation authority waiting 4 s before it looks."""
    s = _setup(slbd, pki, workdir, va_sleep=4)
    yield s
    s["pebble"].stop()
    s["backend"].stop()


def make_account(slbd, pki, pb, name="pebble"):
    r = slbd.api.request("POST", "/v1/acme/accounts", {
        "name": name, "directory": pb.directory, "email": "ops@example.test",
        "ca_certificate": pki.pem("root")})
    assert r.status == 201, r
    return r.json


def wait_state(slbd, cid, states, timeout=60):
    got = {}

    def done():
        st, js = slbd.api.get(f"/v1/certificates/{cid}")
        got["r"] = js
        return st == 200 and js.get("acme", {}).get("state") in states and (
            js["acme"]["state"] != "valid" or "fingerprint_sha256" in js)
    h.wait_until(done, h.scaled(timeout), f"certificate {cid} in state {states}")
    return got["r"]


def served_cert(port, name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return t.getpeercert(binary_form=True)


def test_obtain_http01_and_serve(slbd, pki, setup):
    pb = setup["pebble"]
    make_account(slbd, pki, pb)
    r = slbd.api.request("POST", "/v1/certificates", {
        "name": "auto", "type": "server",
        "acme": {"account": "pebble", "domains": ["a.acme.test", "b.acme.test"],
                 "key_type": "ec-p256", "challenge": "http-01"}})
    assert r.status == 202, r
    cid = r.json["id"]
    assert r.json["acme"]["state"] in ("pending", "valid"), r
    res = wait_state(slbd, cid, ("valid", "failed"))
    assert res["acme"]["state"] == "valid", (res, pb.log_text()[-3000:])
    assert sorted(res["sans"]) == ["a.acme.test", "b.acme.test"], res
    assert res["key_type"] == "ec-p256"
    # Listeners use it by id like any other certificate.
    lis = hu.get_listener(slbd, "secure")
    lis["tls"]["certificates"] = [cid]
    hu.put_listener(slbd, "secure", lis)
    der = served_cert(setup["https"], "a.acme.test")
    assert cu.sha256_hex(der) == res["fingerprint_sha256"]
    # slbctl cert show has the ACME state.
    shown = cu.slbctl(slbd, "cert", "show", cid)
    assert shown.returncode == 0, shown
    assert re.search(r"^acme\.state: +valid$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^acme\.account: +pebble$", shown.stdout, re.M), shown.stdout
    metrics = slbd.api.request("GET", "/metrics").text
    assert f'slbd_acme_certificate_state{{id="{cid}",name="auto",state="valid"}} 1' in metrics
    assert f'slbd_acme_certificate_state{{id="{cid}",name="auto",state="pending"}} 0' in metrics
    assert f'slbd_acme_renewal_timestamp_seconds{{id="{cid}"}}' in metrics
    accts = slbd.api.get("/v1/acme/accounts")[1]["accounts"]
    assert [a["status"] for a in accts] == ["registered"], accts


def order(slbd, domains, challenge="http-01", name="auto", **extra):
    r = slbd.api.request("POST", "/v1/certificates", {
        "name": name, "type": "server",
        "acme": {"account": "pebble", "domains": domains, "key_type": "ec-p256",
                 "challenge": challenge, **extra}})
    assert r.status == 202, r
    return r.json["id"]


def test_obtain_tls_alpn01(slbd, pki, setup):
    """Pebble validates on the https listener; the listener's own certificate stays what
    ordinary clients get meanwhile. A listener without ALPN still negotiates acme-tls/1."""
    lis = hu.get_listener(slbd, "secure")
    lis["tls"]["alpn"] = []
    hu.put_listener(slbd, "secure", lis)
    make_account(slbd, pki, setup["pebble"])
    cid = order(slbd, ["t.acme.test"], challenge="tls-alpn-01", key_type="rsa-2048")
    res = wait_state(slbd, cid, ("valid", "failed"))
    assert res["acme"]["state"] == "valid", (res, setup["pebble"].log_text()[-2000:])
    assert res["sans"] == ["t.acme.test"] and res["key_type"] == "rsa-2048", res
    assert res["acme"]["challenge"] == "tls-alpn-01"
    # Once validated, the name gets the listener's certificate again, not a challenge one.
    assert cu.sha256_hex(served_cert(setup["https"], "t.acme.test")) == \
        cu.sha256_hex(pki.der("server"))
    # Deleting it ends the ACME certificate too: no renewal, no state left.
    assert slbd.api.delete(f"/v1/certificates/{cid}")[0] in (200, 204)
    f = slbd.state_dir / "acme" / f"cert-{cid}.json"
    h.wait_until(lambda: not f.exists(), h.scaled(10), "the ACME state removed")
    assert slbd.api.get(f"/v1/certificates/{cid}")[0] == 404
    assert f'id="{cid}"' not in slbd.api.request("GET", "/metrics").text


def test_api_checks_and_refusals(slbd, pki, setup):
    api = slbd.api
    body = {"name": "x", "type": "server",
            "acme": {"account": "nobody", "domains": ["a.acme.test"]}}
    r = api.request("POST", "/v1/certificates", body)
    assert r.status == 400 and r.error_code() == "invalid_value", r
    make_account(slbd, pki, setup["pebble"])
    r = api.request("POST", "/v1/acme/accounts", {"name": "pebble", "directory": "https://x/d"})
    assert r.status == 409 and r.error_code() == "name_taken", r
    r = api.request("POST", "/v1/acme/accounts", {"name": "p2", "directory": "http://x/d"})
    assert r.status == 400 and r.error_code() == "invalid_value", r
    for bad in ({"domains": []}, {"domains": ["*.acme.test"]}, {"key_type": "rsa-1024"},
                {"challenge": "dns-01"}, {"surprise": 1}):
        acme = {"account": "pebble", "domains": ["a.acme.test"], **bad}
        r = api.request("POST", "/v1/certificates", {"name": "x", "type": "server",
                                                     "acme": acme})
        assert r.status == 400, (bad, r)
    # An uploaded certificate cannot become an ACME one.
    r = api.request("PUT", f"/v1/certificates/{setup['uploaded']}",
                    {"acme": {"account": "pebble", "domains": ["a.acme.test"]}})
    assert r.status == 400 and r.error_code() == "invalid_body", r
    # Nothing was ordered, and the account key never shows.
    assert [c["id"] for c in api.get("/v1/certificates")[1]["certificates"]] == \
        [setup["uploaded"]]
    assert "PRIVATE KEY" not in api.request("GET", "/v1/acme/accounts").text


def test_ca_error_is_surfaced(slbd, pki, setup):
    """The http listener goes away: Pebble cannot validate, and its error reaches the API."""
    make_account(slbd, pki, setup["pebble"])
    assert slbd.api.delete("/v1/listeners/web")[0] in (200, 204)
    cid = order(slbd, ["gone.acme.test"])
    res = wait_state(slbd, cid, ("failed",))
    err = res["acme"]["error"]
    assert "gone.acme.test" in err and "urn:ietf:params:acme:error:" in err, res
    metrics = slbd.api.request("GET", "/metrics").text
    assert f'slbd_acme_certificate_state{{id="{cid}",name="auto",state="failed"}} 1' in metrics
    assert f'slbd_acme_failures_total{{id="{cid}"}} 0' not in metrics
    slbd.allow_errors("acme: certificate")


def exchange(s):
    """One keep-alive request on s; the response status line (the body is read to its end)."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: r.acme.test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
             if ln.lower().startswith(b"content-length:")][0])
    while len(body) < n:
        body += s.recv(4096)
    return head.split(b"\r\n")[0]


def test_renewal_replaces_without_dropping(slbd, pki, setup, monkeypatch):
    make_account(slbd, pki, setup["pebble"])
    cid = order(slbd, ["r.acme.test"])
    first = wait_state(slbd, cid, ("valid",))
    lis = hu.get_listener(slbd, "secure")
    lis["tls"]["certificates"] = [cid]
    hu.put_listener(slbd, "secure", lis)
    # Renew 3 s after each issue from now on (restart with the test knob).
    monkeypatch.setenv("SLBD_ACME_RENEW_S", "3")
    slbd.restart()
    st, res = slbd.api.get(f"/v1/certificates/{cid}")
    assert res["acme"]["state"] == "valid" and res["fingerprint_sha256"] == \
        first["fingerprint_sha256"], res
    h.wait_until(lambda: slbd.api.get(f"/v1/certificates/{cid}")[1]["fingerprint_sha256"] !=
                 first["fingerprint_sha256"], h.scaled(60), "a renewal")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", setup["https"]), timeout=10),
                        server_hostname="r.acme.test")
    before = s.getpeercert(binary_form=True)
    assert exchange(s) == b"HTTP/1.1 200 OK"
    h.wait_until(lambda: cu.sha256_hex(served_cert(setup["https"], "r.acme.test")) !=
                 cu.sha256_hex(before), h.scaled(60), "a second renewal served")
    # The connection opened under the old certificate still works.
    assert exchange(s) == b"HTTP/1.1 200 OK"
    s.close()
    res = slbd.api.get(f"/v1/certificates/{cid}")[1]
    assert res["acme"]["state"] in ("valid", "renewing") and "renew_at" in res["acme"], res


def test_restart_mid_order_resumes(slbd, pki, slow_setup):
    """Pebble waits before validating; slbd is killed once the order exists, and the restarted
    slbd resumes that same order (answering its challenge again) and gets the certificate."""
    setup = slow_setup
    make_account(slbd, pki, setup["pebble"])
    cid = order(slbd, ["resume.acme.test"])
    f = slbd.state_dir / "acme" / f"cert-{cid}.json"
    h.wait_until(lambda: json.loads(f.read_text()).get("token"), h.scaled(20), "a challenge")
    slbd.kill9()
    saved = json.loads(f.read_text())
    order_url = saved["order"]
    slbd.start()
    if saved.get("token"):
        # The stored challenge is answered before anything is asked of the CA again.
        c = socket.create_connection(("127.0.0.1", setup["http"]), timeout=10)
        c.sendall(f"GET /.well-known/acme-challenge/{saved['token']} HTTP/1.1\r\n"
                  "Host: resume.acme.test\r\nConnection: close\r\n\r\n".encode())
        resp = bytes(h.read_to_eof(c))
        c.close()
        st = int(resp.split(b" ")[1])
        body = resp.split(b"\r\n\r\n", 1)[1].decode()
        assert st == 200 and body.startswith(saved["token"] + "."), (st, body)
    res = wait_state(slbd, cid, ("valid",), timeout=90)
    assert json.loads(f.read_text())["order"] == "", "a finished order is forgotten"
    assert f"resuming order {order_url}" in slbd.log_text()
    # Unless Pebble's validation hit the instant slbd was down, no second order was needed.
    added = setup["pebble"].log_text().count("Added order")
    assert added == 1 or "is invalid" in slbd.log_text(), added
    slbd.allow_errors("acme: certificate")
