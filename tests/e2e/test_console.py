# SPDX-License-Identifier: Apache-2.0
"""The web console (docs/console.md): its files are served by the admin listener without a
token and with security headers, the embedded copy matches console/src, and a real browser
(headless Chromium driven by console/test/browser.mjs) logs in and operates slbd through it."""

import json
import os
import shutil
import subprocess
import urllib.request

import pytest

import slbd_harness as h
from cert_util import issue_server
from pki import pki, upload_server  # noqa: F401  (pki is a fixture)

CONSOLE = h.REPO / "console"
CHROMIUM = "/usr/bin/chromium"
# Shown as text by the console, never as markup (a subject and a name an attacker chose).
XSS_CN = '"><img src=x onerror=alert(1)> <script>alert(2)<\\/script>'
XSS_NAME = "<img src=x onerror=alert(3)>evil"


def raw_get(slbd, path, method="GET", headers=None):
    """One request without following redirects: (status, headers, body)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(f"http://127.0.0.1:{slbd.admin_port}{path}", method=method,
                                 headers=headers or {})
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_console_served_without_token_with_security_headers(slbd):
    st, hd, body = raw_get(slbd, "/")
    assert st == 302 and hd["Location"] == "/ui/"
    st, hd, body = raw_get(slbd, "/ui")
    assert st == 302 and hd["Location"] == "/ui/"
    st, hd, body = raw_get(slbd, "/ui/")
    assert st == 200, body
    assert hd["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="js/main.js">' in body
    csp = hd["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert hd["X-Content-Type-Options"] == "nosniff"
    assert hd["Referrer-Policy"] == "no-referrer"
    st, hd, body = raw_get(slbd, "/ui/js/main.js")
    assert st == 200 and hd["Content-Type"].startswith("text/javascript")
    assert hd["Content-Security-Policy"] and int(hd["Content-Length"]) == len(body)
    st, hd, body = raw_get(slbd, "/ui/app.css", method="HEAD")
    assert st == 200 and body == b"" and int(hd["Content-Length"]) > 1000
    st, hd, body = raw_get(slbd, "/ui/../admin.token")
    assert st == 404
    st, hd, body = raw_get(slbd, "/ui/nope.js")
    assert st == 404 and json.loads(body)["error"]["code"] == "not_found"
    st, hd, body = raw_get(slbd, "/ui/", method="DELETE")
    assert st == 405 and hd["Allow"] == "GET, HEAD"
    # No file of the console carries a reference to another origin.
    for name in ("index.html", "app.css", "js/main.js", "js/chart.js"):
        st, hd, body = raw_get(slbd, f"/ui/{name}")
        assert st == 200 and b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
        assert b"https://" not in body.replace(b"https://HOST", b"")
    # The data stays behind the token.
    assert raw_get(slbd, "/v1/stats")[0] == 401
    assert raw_get(slbd, "/v1/about")[0] == 401


def test_about_endpoint(slbd):
    st, js = slbd.api.get("/v1/about")
    assert st == 200, js
    assert js["workers"] == 2 and js["state_dir"] == str(slbd.state_dir)
    assert js["version"] and js["started_ms"] > 0 and js["generation"] >= 0
    st, js = slbd.api.post("/v1/about", {})
    assert st == 405


def test_embedded_assets_match_sources():
    """src/admin/ui_assets.c is generated from console/src by `make console` and committed
    (so `make` needs no Node.js); a console change without it fails here."""
    p = subprocess.run(["python3", str(h.REPO / "scripts" / "console-embed.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.timeout(200)
def test_console_in_browser(slbd, backend, pki):  # noqa: F811
    """Log in, see the listeners, upload a certificate through the form, a mismatched key's
    error at the field, a CA and its CRL, an https listener with client authentication
    created through the form, an inline weight change reaching the API, a killed backend
    turning down, hostile certificate text rendered as text, no request to another origin,
    axe-core clean at both sizes; screenshots of every page in build/console/ (see
    console/test/browser.mjs for every step)."""
    if h.is_sanitized():
        pytest.skip("the browser test runs once, against the release build")
    node = shutil.which("node")
    if not node or not os.path.exists(CHROMIUM):
        pytest.skip("node or chromium missing (make test installs them: scripts/deps.sh)")
    if not (CONSOLE / "node_modules" / "playwright-core").is_dir():
        pytest.skip("console/node_modules missing (make test runs scripts/console-deps.sh)")

    b1 = backend("b1", mode="http")
    b2 = backend("b2", mode="http")
    api = slbd.api
    st, js = api.post("/v1/groups", {
        "name": "web", "scheduler": "wrr", "servers": [b1.server(), b2.server()],
        "health_check": {"protocol": "http", "uri": "/health", "interval_s": 1, "timeout_s": 1,
                         "unhealthy_threshold": 2, "healthy_threshold": 2}})
    assert st == 201, js
    demo = upload_server(slbd, pki, "server", cert_id="demo")
    issue_server(pki, "console-xss", cn=XSS_CN)
    st, js = api.post("/v1/certificates", {
        "name": XSS_NAME, "type": "server", "certificate": pki.pem("console-xss"),
        "private_key": pki.key("console-xss"), "id": "hostile"})
    assert st == 201, js
    https_port, http_port, tcp_port = h.free_port(), h.free_port(), h.free_port()
    for body in (
        {"name": "https", "protocol": "https", "bind": f"127.0.0.1:{https_port}",
         "backend_group": "web", "tls": {"certificates": [demo]}},
        {"name": "http", "protocol": "http", "bind": f"127.0.0.1:{http_port}",
         "backend_group": "web"},
        {"name": "tcp", "protocol": "tcp", "bind": f"127.0.0.1:{tcp_port}",
         "backend_group": "web"},
    ):
        st, js = api.post("/v1/listeners", body)
        assert st == 201, js
    # Some traffic for the charts and counters.
    for _ in range(5):
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/hello", timeout=5).read()

    # Files the form's file pickers upload, and a key that does not match.
    up = slbd.workdir / "console-upload"
    up.mkdir(exist_ok=True)
    (up / "other-chain.pem").write_text(pki.chain("other"))
    (up / "other.key").write_text(pki.key("other"))
    (up / "wrong.key").write_text(pki.key("server"))
    (up / "inter.pem").write_text(pki.pem("inter"))
    (up / "inter.crl").write_text((pki.dir / "inter.crl").read_text())

    artifacts = h.REPO / "build" / "console"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ,
               SLBD_ADMIN=f"http://127.0.0.1:{slbd.admin_port}", SLBD_TOKEN=api.token,
               CONSOLE_UPLOAD_DIR=str(up), CONSOLE_ARTIFACTS=str(artifacts),
               CONSOLE_KILL_PID=str(b2.proc.pid), CONSOLE_KILL_SERVER=f"127.0.0.1:{b2.port}",
               CONSOLE_WEIGHT_SERVER=f"127.0.0.1:{b1.port}", CONSOLE_CHROMIUM=CHROMIUM,
               CONSOLE_HTTP_PORT=str(http_port), CONSOLE_FREE_PORT=str(h.free_port()))
    try:
        p = subprocess.run([node, str(CONSOLE / "test" / "browser.mjs")], env=env,
                           capture_output=True, text=True, timeout=180)
        (artifacts / "browser-test.log").write_text(p.stdout + p.stderr)
        assert p.returncode == 0, f"browser test failed:\n{p.stdout[-6000:]}\n{p.stderr[-6000:]}"
        # What the browser did, seen from the API.
        st, js = api.get(f"/v1/groups/web/servers/127.0.0.1:{b1.port}")
        assert st == 200 and js["weight"] == 37
        # Stopped and started again from the listeners page.
        http = api.get("/v1/listeners/http")[1]
        assert http["status"] == "running"
        assert http["limits"] == {"requests_per_s": 1000, "bandwidth_mbps": 500}
        audit = [e["path"] for e in api.get("/v1/audit")[1]["entries"]]
        assert "/v1/listeners/http/stop" in audit and "/v1/listeners/http/start" in audit, audit
        names = {c["name"] for c in api.get("/v1/certificates")[1]["certificates"]}
        assert "uploaded-in-browser" in names and "mismatch" not in names
    finally:
        # No health probe or pooled backend connection left for the descriptor check.
        for name in ("https", "http", "tcp", "mtls"):
            api.delete(f"/v1/listeners/{name}")
        api.delete("/v1/groups/web")
        b1.kill()  # closes slbd's pooled keep-alive connections to it (idle for up to 15 s)
