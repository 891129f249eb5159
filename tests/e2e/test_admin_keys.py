# SPDX-License-Identifier: Apache-2.0
"""Who may use the admin API and what they did: scoped API keys (read, certificates, operator,
admin) beside the root token, secrets shown once and stored hashed, revocation at once, the
failed-authentication limit per source address, the audit log of every change, the admin API
over a unix socket and over TLS, and partial edits (certificate rename, settings PATCH)."""

import hashlib
import http.client
import json
import os
import socket
import ssl
import stat

import pytest

import slbd_harness as h
from cert_util import slbctl
from http_util import add_listener, hx  # noqa: F401
from pki import pki, tls_block, upload_server  # noqa: F401

SCOPES = ("read", "certificates", "operator", "admin")


def make_key(slbd, name, scope):
    st, js = slbd.api.post("/v1/keys", {"name": name, "scope": scope})
    assert st == 201, js
    assert js["name"] == name and js["scope"] == scope and js["secret"].startswith("slbk_")
    return js["secret"]


def audit_lines(slbd):
    path = slbd.state_dir / "audit.log"
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def forbidden(r, scope):
    """A 403 that names the scope the key lacks."""
    assert r.status == 403, r
    assert r.error_code() == "forbidden", r
    assert r.json["error"]["scope"] == scope, r
    assert f'"{scope}" scope' in r.json["error"]["message"], r


# --------------------------------------------------------------------------------------------
# Scopes
# --------------------------------------------------------------------------------------------


def test_each_scope_allows_its_operations_and_names_what_it_lacks(slbd, pki):
    keys = {s: make_key(slbd, f"k-{s}", s) for s in SCOPES}
    api = slbd.api
    # Everyone reads everything, metrics and the audit log included.
    for scope, secret in keys.items():
        for path in ("/v1/listeners", "/v1/groups", "/v1/certificates", "/v1/stats",
                     "/v1/config", "/v1/settings", "/v1/keys", "/v1/audit", "/metrics"):
            r = api.request("GET", path, token=secret)
            assert r.status == 200, (scope, path, r)

    cert = {"name": "site", "type": "server", "certificate": pki.chain("server"),
            "private_key": pki.key("server")}
    group = {"name": "g", "servers": []}
    # certificates: needs "certificates" (read lacks it).
    forbidden(api.request("POST", "/v1/certificates", cert, token=keys["read"]), "certificates")
    r = api.request("POST", "/v1/certificates", cert, token=keys["certificates"])
    assert r.status == 201, r
    cid = r.json["id"]
    forbidden(api.request("PATCH", f"/v1/certificates/{cid}", {"name": "x"},
                          token=keys["read"]), "certificates")
    assert api.request("PATCH", f"/v1/certificates/{cid}", {"name": "site2"},
                       token=keys["certificates"]).status == 200
    # Listeners, groups and servers: "operator".
    for s in ("read", "certificates"):
        forbidden(api.request("POST", "/v1/groups", group, token=keys[s]), "operator")
        forbidden(api.request("POST", "/v1/listeners", {"name": "l"}, token=keys[s]),
                  "operator")
    assert api.request("POST", "/v1/groups", group, token=keys["operator"]).status == 201
    r = api.request("POST", "/v1/groups/g/servers", {"address": "127.0.0.1", "port": 9},
                    token=keys["certificates"])
    forbidden(r, "operator")
    r = api.request("POST", "/v1/certificates", dict(cert, name="op"), token=keys["operator"])
    assert r.status == 201, r  # operator manages certificates too
    # Keys, settings and whole-document apply: "admin".
    for s in ("read", "certificates", "operator"):
        forbidden(api.request("POST", "/v1/keys", {"name": "x", "scope": "read"},
                              token=keys[s]), "admin")
        forbidden(api.request("DELETE", "/v1/keys/k-read", token=keys[s]), "admin")
        forbidden(api.request("PATCH", "/v1/settings", {"drain_timeout_s": 9}, token=keys[s]),
                  "admin")
        forbidden(api.request("POST", "/v1/apply?dry_run=true", {"groups": []}, token=keys[s]),
                  "admin")
    r = api.request("PATCH", "/v1/settings", {"drain_timeout_s": 9}, token=keys["admin"])
    assert r.status == 200 and r.json["drain_timeout_s"] == 9, r
    assert api.request("POST", "/v1/keys", {"name": "made-by-admin", "scope": "read"},
                       token=keys["admin"]).status == 201
    # Nothing a 403 answered was changed.
    assert [g["name"] for g in api.get("/v1/groups")[1]["groups"]] == ["g"]
    assert api.get("/v1/groups/g")[1]["servers"] == []


def test_key_requests_are_validated(slbd):
    api = slbd.api
    assert api.post("/v1/keys", {"name": "a", "scope": "root"})[1]["error"]["code"] == \
        "invalid_value"
    assert api.post("/v1/keys", {"name": "root", "scope": "read"})[0] == 400
    assert api.post("/v1/keys", {"name": "../x", "scope": "read"})[0] == 400
    assert api.post("/v1/keys", {"name": "a", "scope": "read", "secret": "x"})[0] == 400
    make_key(slbd, "a", "read")
    st, js = api.post("/v1/keys", {"name": "a", "scope": "admin"})
    assert st == 409 and js["error"]["code"] == "name_taken"
    assert api.delete("/v1/keys/nope")[0] == 404
    assert api.request("PUT", "/v1/keys/a", {"scope": "admin"}).status == 405


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def test_secret_is_shown_once_and_stored_hashed(slbd):
    secret = make_key(slbd, "prom", "read")
    api = slbd.api
    listed = api.request("GET", "/v1/keys")
    one = api.request("GET", "/v1/keys/prom")
    assert one.status == 200 and one.json["scope"] == "read" and "secret" not in one.json
    assert listed.json["keys"][0]["name"] == "prom"
    api.post("/v1/groups", {"name": "g", "servers": []})
    audit = api.request("GET", "/v1/audit")
    for text in (listed.text, one.text, audit.text, slbd.log_text(),
                 (slbd.state_dir / "audit.log").read_text()):
        assert secret not in text and secret[5:37] not in text
    path = slbd.state_dir / "keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    assert secret not in stored and secret[5:] not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    assert slbd.api.token not in stored
    # Keys survive a restart; the root token stays valid beside them.
    slbd.restart()
    assert slbd.api.request("GET", "/v1/stats", token=secret).status == 200
    assert slbd.api.request("GET", "/v1/stats").status == 200
    # A key file others could read is refused at start.
    slbd.stop()
    os.chmod(path, 0o644)
    rc, out = slbd.run_once()
    assert rc == 1 and "keys.json" in out and "keys_insecure" in out, out
    os.chmod(path, 0o600)
    slbd.start()


def test_revoke_takes_effect_at_once(slbd):
    secret = make_key(slbd, "temp", "operator")
    # One kept-alive connection: the key is checked on every request, not per connection.
    conn = http.client.HTTPConnection("127.0.0.1", slbd.admin_port, timeout=h.scaled(10))
    hdr = {"Authorization": f"Bearer {secret}"}
    conn.request("GET", "/v1/groups", headers=hdr)
    r = conn.getresponse()
    r.read()
    assert r.status == 200
    assert slbd.api.delete("/v1/keys/temp")[0] == 204
    conn.request("GET", "/v1/groups", headers=hdr)
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 401 and body["error"]["code"] == "unauthorized"
    conn.close()
    assert slbd.api.request("GET", "/v1/groups", token=secret).status == 401
    assert slbd.api.get("/v1/keys")[1]["keys"] == []
    assert "key \"temp\" revoked by \"root\"" in slbd.log_text()


def test_metrics_with_a_read_key(slbd):
    secret = make_key(slbd, "prometheus", "read")
    r = slbd.api.request("GET", "/metrics", token=secret)
    assert r.status == 200 and "slbd_config_generation" in r.text
    forbidden(slbd.api.request("POST", "/v1/groups", {"name": "g", "servers": []},
                               token=secret), "operator")


# --------------------------------------------------------------------------------------------
# Failed authentications
# --------------------------------------------------------------------------------------------


def raw_get(port, token, source="127.0.0.1"):
    """GET /v1/groups from a given loopback source address: (status, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=h.scaled(10),
                                      source_address=(source, 0))
    try:
        hdr = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", "/v1/groups", headers=hdr)
        r = conn.getresponse()
        r.read()
        return r.status, r.headers
    finally:
        conn.close()


def test_failed_authentications_are_limited_per_source_and_logged(slbd):
    port = slbd.admin_port
    # Requests without credentials are no guesses: they never count.
    for _ in range(15):
        assert raw_get(port, None)[0] == 401
    for i in range(10):
        assert raw_get(port, "wrong" * 10)[0] == 401, i
    st, hd = raw_get(port, "wrong" * 10)
    assert st == 429
    assert 0 < int(hd["Retry-After"]) <= 60
    # Refused before any check: even the right token waits.
    st, _ = raw_get(port, slbd.api.token)
    assert st == 429
    # Another source address is not affected.
    assert raw_get(port, slbd.api.token, source="127.0.0.2")[0] == 200
    assert raw_get(port, "wrong" * 10, source="127.0.0.2")[0] == 401
    log = slbd.log_text()
    assert "failed authentication from 127.0.0.1" in log
    assert "10 failed authentications from 127.0.0.1" in log
    # Logged at a bounded rate, never the token tried.
    lines = [ln for ln in log.splitlines() if "failed authentication" in ln]
    assert 2 <= len(lines) < 8, lines
    assert "wrongwrong" not in log


def test_the_limit_can_be_turned_off(slbd_factory):
    d = slbd_factory(extra_args=["--admin-auth-failures", "0"])
    for _ in range(15):
        assert raw_get(d.admin_port, "wrong" * 10)[0] == 401
    assert raw_get(d.admin_port, d.api.token)[0] == 200


# --------------------------------------------------------------------------------------------
# Audit log
# --------------------------------------------------------------------------------------------


def test_audit_records_every_change_with_key_revisions_and_result(slbd):
    op = make_key(slbd, "deployer", "operator")
    ro = make_key(slbd, "viewer", "read")
    api = slbd.api
    r = api.request("POST", "/v1/groups", {"name": "g", "servers": []}, token=op)
    assert r.status == 201
    created = r.headers["ETag"]
    cur = api.get("/v1/groups/g")[1]
    r = api.request("PUT", "/v1/groups/g", dict(cur, scheduler="rr"), token=op,
                    headers={"If-Match": created})
    assert r.status == 200
    updated = r.headers["ETag"]
    # A stale revision, a refused scope, an invalid body: audited as failures.
    r = api.request("PUT", "/v1/groups/g", dict(cur, scheduler="wlc"), token=op,
                    headers={"If-Match": created})
    assert r.status == 412
    assert api.request("DELETE", "/v1/groups/g", token=ro).status == 403
    assert api.request("POST", "/v1/groups", {"name": "bad", "servers": 7},
                       token=op).status == 400
    assert api.request("DELETE", "/v1/groups/g", token=op).status == 204
    # Reads are not changes.
    api.get("/v1/groups")
    lines = audit_lines(slbd)
    mine = [ln for ln in lines if ln["key"] in ("deployer", "viewer")]
    got = [(ln["key"], ln["method"], ln["resource"], ln["status"], ln["result"]) for ln in mine]
    assert got == [
        ("deployer", "POST", "groups/g", 201, "ok"),
        ("deployer", "PUT", "groups/g", 200, "ok"),
        ("deployer", "PUT", "groups/g", 412, "precondition_failed"),
        ("viewer", "DELETE", "groups/g", 403, "forbidden"),
        ("deployer", "POST", "groups", 400, "wrong_type"),
        ("deployer", "DELETE", "groups/g", 204, "ok"),
    ], got
    assert mine[0]["old_revision"] is None and mine[0]["new_revision"] == created
    assert mine[1]["old_revision"] == created and mine[1]["new_revision"] == updated
    assert mine[2]["old_revision"] == updated and mine[2]["new_revision"] is None
    assert mine[5]["old_revision"] == updated and mine[5]["new_revision"] is None
    assert all(ln["path"].startswith("/v1/") and ln["source"] == "127.0.0.1" and ln["time"]
               for ln in mine)
    # Key management is audited too, by the root token's name.
    assert [(ln["key"], ln["method"], ln["resource"]) for ln in lines[:2]] == [
        ("root", "POST", "keys/deployer"), ("root", "POST", "keys/viewer")]
    assert stat.S_IMODE((slbd.state_dir / "audit.log").stat().st_mode) == 0o600

    st, js = api.get("/v1/audit?limit=2")
    assert st == 200 and js["entries"] == lines[-2:]
    assert api.get("/v1/audit")[1]["entries"] == lines
    p = slbctl(slbd, "audit", "--limit", "1")
    assert p.returncode == 0, p.stderr
    assert "deployer" in p.stdout and "DELETE" in p.stdout and "groups/g" in p.stdout
    for bad in ("limit=0", "limit=x", "limit=10001", "other=1"):
        assert api.get(f"/v1/audit?{bad}")[0] == 400, bad
    assert api.request("POST", "/v1/audit", {}).status == 405
    # A dry run says so in the path; a target with odd (encoded) bytes still makes a line.
    assert api.request("POST", "/v1/apply?dry_run=true", {"groups": []}).status == 200
    assert audit_lines(slbd)[-1]["path"] == "/v1/apply?dry_run=true"
    assert audit_lines(slbd)[-1]["new_revision"] is None
    s = socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=h.scaled(10))
    s.sendall(b"DELETE /v1/groups/%FF%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Authorization: Bearer " + api.token.encode() + b"\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    last = audit_lines(slbd)[-1]
    assert last["method"] == "DELETE" and last["status"] >= 400, last


# --------------------------------------------------------------------------------------------
# slbctl
# --------------------------------------------------------------------------------------------


def test_slbctl_manages_keys(slbd, workdir):
    p = slbctl(slbd, "key", "create", "ci", "--scope", "certificates")
    assert p.returncode == 0, p.stderr
    secret = p.stdout.strip()
    assert secret.startswith("slbk_") and "shown only now" in p.stderr
    p = slbctl(slbd, "key", "list")
    assert p.returncode == 0 and "ci" in p.stdout and "certificates" in p.stdout
    assert secret not in p.stdout
    # The key works as a token, and a 403 says what is missing.
    f = workdir / "ci.key"
    f.write_text(secret + "\n")
    p = slbctl(slbd, "--token-file", f, "group", "create", "--name", "g")
    assert p.returncode == 1 and '"operator" scope' in p.stderr, p.stderr
    p = slbctl(slbd, "--token-file", f, "group", "list")
    assert p.returncode == 0, p.stderr
    p = slbctl(slbd, "key", "revoke", "ci")
    assert p.returncode == 0, p.stderr
    p = slbctl(slbd, "--token-file", f, "group", "list")
    assert p.returncode == 1 and "unauthorized" in p.stderr
    p = slbctl(slbd, "key", "create", "x", "--scope", "everything")
    assert p.returncode == 2


# --------------------------------------------------------------------------------------------
# Unix socket and TLS
# --------------------------------------------------------------------------------------------


def test_admin_over_a_unix_socket(slbd_factory, workdir):
    sock = workdir / "admin.sock"
    d = slbd_factory(extra_args=["--admin", f"unix:{sock}"])
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    env_admin = f"unix:{sock}"
    p = slbctl(d, "--admin", env_admin, "group", "create", "--name", "viaunix")
    assert p.returncode == 0, p.stderr
    p = slbctl(d, "--admin", env_admin, "group", "list")
    assert p.returncode == 0 and "viaunix" in p.stdout
    # Still a token: the socket's mode decides who may connect, not who is trusted.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(h.scaled(10))
    s.connect(str(sock))
    s.sendall(b"GET /v1/groups HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 401")
    assert any(ln["source"] == "unix" and ln["resource"] == "groups/viaunix"
               for ln in audit_lines(d))
    # The TCP address serves too; a stop removes the socket.
    assert d.api.get("/v1/groups")[0] == 200
    assert d.stop() == 0
    assert not sock.exists()


def test_admin_over_tls(slbd_factory, pki, workdir):
    d = slbd_factory(start=False, extra_args=["--admin-cert", pki.path("server-chain.pem"),
                                              "--admin-key", pki.path("server.key")])
    d.admin_ssl = ssl.create_default_context(cafile=pki.root)
    d.start()
    assert d.api.get("/v1/groups")[0] == 200
    url = f"https://127.0.0.1:{d.admin_port}"
    p = slbctl(d, "--admin", url, "--cacert", pki.root, "group", "create", "--name", "tls")
    assert p.returncode == 0, p.stderr
    p = slbctl(d, "--admin", f"https://localhost:{d.admin_port}", "--cacert", pki.root,
               "group", "list")
    assert p.returncode == 0 and "tls" in p.stdout, p.stderr
    # A CA that did not sign the daemon's certificate is refused, as are the system's CAs.
    for extra in (["--cacert", pki.path("wrongca.pem")], []):
        p = slbctl(d, "--admin", url, *extra, "group", "list")
        assert p.returncode == 3 and "not trusted" in p.stderr, p.stderr
    # Plain HTTP to the TLS port gets no answer.
    p = slbctl(d, "--admin", f"http://127.0.0.1:{d.admin_port}", "group", "list")
    assert p.returncode == 3
    # Bodies of many TLS records, several on one kept-alive connection.
    conn = http.client.HTTPSConnection("127.0.0.1", d.admin_port, timeout=h.scaled(20),
                                       context=d.admin_ssl)
    big = json.dumps({"name": "big", "servers": [], "health_check": {"uri": "/" + "a" * 400000}})
    hdr = {"Authorization": f"Bearer {d.api.token}", "Content-Type": "application/json"}
    for _ in range(3):
        conn.request("POST", "/v1/groups", body=big, headers=hdr)
        r = conn.getresponse()
        assert r.status == 400 and b"health_check.uri" in r.read()
    conn.request("GET", "/v1/groups", headers=hdr)
    r = conn.getresponse()
    assert r.status == 200 and [g["name"] for g in json.loads(r.read())["groups"]] == ["tls"]
    conn.close()


def test_tls_needs_both_files(slbd_factory, pki):
    d = slbd_factory(start=False)
    rc, out = d.run_once("--admin-cert", pki.path("server-chain.pem"))
    assert rc == 2 and "--admin-key" in out
    rc, out = d.run_once("--admin-cert", pki.path("server-chain.pem"), "--admin-key",
                         pki.path("other.key"))
    assert rc == 1 and "invalid_tls" in out, out


# --------------------------------------------------------------------------------------------
# Partial edits
# --------------------------------------------------------------------------------------------


def test_cert_rename_keeps_id_and_listeners(slbd, pki, hx):
    cid = upload_server(slbd, pki, "server", cert_id="site")
    g = hx.backend("a")
    slbd.add_group("g", [g.server()], health_check=h.no_health_check())
    port = add_listener(slbd, "web", "g", protocol="https", tls=tls_block([cid]))
    before = slbd.api.request("GET", f"/v1/certificates/{cid}")
    r = slbd.api.request("PATCH", f"/v1/certificates/{cid}", {"name": "renamed"},
                         headers={"If-Match": before.headers["ETag"]})
    assert r.status == 200, r
    assert r.json["id"] == cid and r.json["name"] == "renamed"
    assert r.json["used_by"] == ["web"] and r.json["version"] == before.json["version"]
    assert r.json["fingerprint_sha256"] == before.json["fingerprint_sha256"]
    assert r.headers["ETag"] != before.headers["ETag"]
    # The stale revision is refused; so are a taken name and a body with material.
    r2 = slbd.api.request("PATCH", f"/v1/certificates/{cid}", {"name": "x"},
                          headers={"If-Match": before.headers["ETag"]})
    assert r2.status == 412
    other = upload_server(slbd, pki, "other", cert_id="other")
    assert slbd.api.request("PATCH", f"/v1/certificates/{other}",
                            {"name": "renamed"}).error_code() == "name_taken"
    assert slbd.api.request("PATCH", f"/v1/certificates/{cid}",
                            {"name": "y", "certificate": "x"}).error_code() == "invalid_body"
    # The listener still serves the same certificate.
    ctx = ssl.create_default_context(cafile=pki.root)
    with socket.create_connection(("127.0.0.1", port), timeout=h.scaled(10)) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            der = t.getpeercert(binary_form=True)
    assert hashlib.sha256(der).hexdigest() == before.json["fingerprint_sha256"]
    # slbctl, and the name survives a restart.
    p = slbctl(slbd, "cert", "rename", cid, "again")
    assert p.returncode == 0, p.stderr
    slbd.restart()
    st, js = slbd.api.get(f"/v1/certificates/{cid}")
    assert js["name"] == "again" and js["used_by"] == ["web"]


def test_patch_settings_changes_only_the_fields_given(slbd):
    before = slbd.api.get("/v1/settings")[1]
    r = slbd.api.request("PATCH", "/v1/settings", {"drain_timeout_s": 11})
    assert r.status == 200, r
    assert r.json == dict(before, drain_timeout_s=11)
    r = slbd.api.request("PATCH", "/v1/settings", {"drain_timeout_s": None})
    assert r.status == 200 and r.json == before
    r = slbd.api.request("PATCH", "/v1/settings", {"drain_timeout_s": -1})
    assert r.status == 400
