# SPDX-License-Identifier: Apache-2.0
"""The admin API as an attacker on the same machine sees it: the bearer token on every route
and method, the loopback-only default bind, resource ids that try to leave the state
directory, methods and media types, deeply nested JSON, oversized requests, concurrent
writers, hundreds of idle connections, and private keys that must never come back out of an
answer or a log line."""

import json
import os
import stat
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import HttpConn, add_listener, hx  # noqa: F401
from pki import pki, upload_server  # noqa: F401

NOHC = h.no_health_check()


def raw(slbd, method, target, body=None, token=True, ctype="application/json", headers=(),
        timeout=10):
    """One request with exactly this target (no client-side normalisation) on a fresh
    connection: (status, headers dict, body text)."""
    data = b"" if body is None else (body if isinstance(body, bytes) else
                                     json.dumps(body).encode())
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if token:
        lines.append(f"Authorization: Bearer {slbd.api.token if token is True else token}")
    if data or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(data)}")
        if ctype:
            lines.append(f"Content-Type: {ctype}")
    lines += list(headers)
    req = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
    s = socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=h.scaled(timeout))
    try:
        c = HttpConn(s)
        c.send(req)
        r = c.read_response(method, timeout=timeout)
        return r.status, {k.lower(): v for k, v in r.headers}, r.body.decode(errors="replace")
    finally:
        s.close()


def files_under(d):
    """{relative path: (mode, bytes)} of every file below d (logs and sockets excluded)."""
    out = {}
    for root, dirs, files in os.walk(d):
        for n in files:
            if n.endswith(".stderr") or n == "audit.log":
                continue  # logs; audit.log records refused changes too
            p = os.path.join(root, n)
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode):
                continue  # upgrade.sock: no contents
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = (st.st_mode, f.read())
        for n in dirs:
            out[os.path.relpath(os.path.join(root, n), d) + "/"] = (None, None)
    return out


@pytest.fixture
def populated(slbd, hx, pki):
    """A group, a listener and a server certificate, so that every route has something to
    act on."""
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "l", "g")
    cid = upload_server(slbd, pki, "server", cert_id="real")
    return {"port": port, "cert": cid}


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/groups"), ("POST", "/v1/groups"), ("GET", "/v1/groups/g"),
    ("PUT", "/v1/groups/g"), ("DELETE", "/v1/groups/g"),
    ("GET", "/v1/listeners"), ("POST", "/v1/listeners"), ("GET", "/v1/listeners/l"),
    ("PUT", "/v1/listeners/l"), ("DELETE", "/v1/listeners/l"),
    ("GET", "/v1/certificates"), ("POST", "/v1/certificates"), ("GET", "/v1/certificates/real"),
    ("PUT", "/v1/certificates/real"), ("DELETE", "/v1/certificates/real"),
    ("PUT", "/v1/certificates/real/crl"), ("POST", "/v1/apply"), ("GET", "/v1/stats"),
    ("GET", "/metrics"), ("PATCH", "/v1/groups"), ("GET", "/v1/nothing"),
]


# Hundreds of wrong tokens from one address on purpose: the failed-authentication limit is off
# here (tests/e2e/test_admin_keys.py tests it).
@pytest.mark.slbd(extra_args=["--admin-auth-failures", "0"])
def test_every_route_wants_the_token(slbd, populated, workdir):
    token = slbd.api.token
    wrong_same_length = ("0" if token[0] != "0" else "1") + token[1:]
    flipped_last = token[:-1] + ("0" if token[-1] != "0" else "1")
    bad_auth = [
        None,
        "Bearer",
        "Bearer ",
        f"Bearer {wrong_same_length}",
        f"Bearer {flipped_last}",
        f"Bearer {token.upper()}",
        f"Bearer {token[:32]}",
        f"Bearer {token}{token}",
        f"Bearer {token}\x00",
        f"Basic {token}",
        f"Token {token}",
        f"Bearer{token}",
        f"Bearer  {token}",
        f"{token}",
    ]
    before = files_under(slbd.state_dir)
    body = {"name": "x", "servers": []}
    for method, path in ROUTES:
        for auth in bad_auth:
            headers = [f"Authorization: {auth}"] if auth is not None else []
            st, hd, text = raw(slbd, method, path, body if method in ("POST", "PUT", "PATCH")
                               else None, token=False, headers=headers)
            if auth is not None and "\x00" in auth and st == 400:
                continue  # a NUL in a header: refused by the parser, fine too
            assert st == 401, (method, path, auth, st, text[:200])
            assert json.loads(text)["error"]["code"] == "unauthorized", text
            assert token not in text and token[:16] not in text
        # The token in the query string is not a token.
        st, _, _ = raw(slbd, method, f"{path}?token={token}&access_token={token}", token=False)
        assert st == 401, (method, path)
    assert files_under(slbd.state_dir) == before
    # The scheme name is case-insensitive (RFC 9110 §11.1); the right token is accepted.
    st, _, _ = raw(slbd, "GET", "/v1/groups", token=False,
                   headers=[f"Authorization: bearer {token}"])
    assert st == 200
    # /healthz is public (and says nothing but that slbd is up), as are the console's files.
    st, _, text = raw(slbd, "GET", "/healthz", token=False)
    assert st == 200 and set(json.loads(text)) == {"status", "generation"}, text


def test_admin_api_binds_loopback_only(slbd, workdir):
    # The harness passes --admin 127.0.0.1:P: bound to that address only.
    assert hu.listening_address(slbd.pid, slbd.admin_port) == {"127.0.0.1"}
    try:
        socket.create_connection(("127.0.0.2", slbd.admin_port), timeout=2).close()
        reachable = True
    except OSError:
        reachable = False
    assert not reachable, "the admin port answers on 127.0.0.2: it is not bound to 127.0.0.1"


@pytest.mark.timeout(60)
def test_admin_default_is_loopback_9000(workdir):
    """Without --admin slbd listens on 127.0.0.1:9000 (SPEC). Checked only when 9000 is
    free on this machine; the explicit-address case is test_admin_api_binds_loopback_only."""
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", 9000))
    except OSError as e:
        pytest.skip(f"port 9000 is in use here ({e}); the default admin address cannot be "
                    "started")
    finally:
        probe.close()
    state = workdir / "default-admin-state"
    err_path = workdir / "default-admin.stderr"
    with open(err_path, "wb") as err:
        p = h._spawn([h.binary("slbd"), "--state-dir", state, "--workers", "1"],
                     stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                     env=h._sanitizer_env())
    try:
        def up():
            try:
                with urllib.request.urlopen("http://127.0.0.1:9000/healthz", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.URLError):
                return p.poll() is not None
        h.wait_until(up, 20, "slbd on the default admin address")
        assert p.poll() is None, err_path.read_text()
        assert hu.listening_address(p.pid, 9000) == {"127.0.0.1"}
    finally:
        p.terminate()
        rc = p.wait(h.scaled(15))
        h._live_procs.discard(p)
    text = err_path.read_text(errors="replace")
    assert rc == 0, text
    assert not any(pat in text for pat in h.SANITIZER_PATTERNS), text


# --------------------------------------------------------------------------------------------
# Ids that try to leave the state directory
# --------------------------------------------------------------------------------------------

LONG = "n" * 300
TRAVERSALS = [
    "../x", "..%2fx", "%2e%2e", "%2E%2E", ".%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%00",
    "a%00b", "real%00.json", "..", ".", "..%5cdecoy", "..\\decoy", "%2fetc%2fpasswd",
    "/etc/passwd", "..%2fdecoy", "..%2f..%2fdecoy", "..%252fdecoy", "real%2f..%2f..%2fdecoy",
    "%c0%ae%c0%ae%2fdecoy", "real/../../decoy", LONG, "r" * 64, "decoy.json", "x y",
    "%20", "real%20", "real;rm", "*", "~root",
]


def test_ids_cannot_reach_outside_the_state_dir(slbd, populated, pki, workdir):
    # Decoys where a traversal would land: next to the state dir, inside it, next to certs/.
    cert_json = next((slbd.state_dir / "certs").glob("*.json")).read_bytes()
    decoys = [workdir / "decoy.json", slbd.state_dir / "decoy.json",
              slbd.state_dir / "certs" / ".." / "x.json", workdir / "x"]
    for d in decoys:
        d.write_bytes(cert_json)
    before = files_under(workdir)
    lis = slbd.api.get("/v1/listeners/l")[1]
    grp = slbd.api.get("/v1/groups/g")[1]
    cert = {"name": "real", "type": "server", "certificate": pki.chain("server"),
            "private_key": pki.key("server")}
    bodies = {"listeners": lis, "groups": grp, "certificates": cert}
    seen = []
    for coll in ("listeners", "groups", "certificates"):
        for bad in TRAVERSALS:
            for method in ("GET", "PUT", "DELETE"):
                target = f"/v1/{coll}/{bad}"
                try:
                    st, _, text = raw(slbd, method, target,
                                      bodies[coll] if method == "PUT" else None)
                except (AssertionError, OSError) as e:
                    st, text = None, str(e)
                seen.append((method, target, st))
                assert st in (400, 404, 405), (method, target, st, text[:300])
        # The crl sub-resource of a traversal.
        st, _, _ = raw(slbd, "PUT", f"/v1/{coll}/..%2fdecoy/crl", {"crl": "x"})
        assert st in (400, 404, 405)
    # Names in bodies are validated the same way.
    for bad in ("../x", "..", ".", "a/b", "a\\b", "%2e%2e", "x" * 64, "a\x00b", ""):
        for coll, body in (("groups", dict(grp, name=bad)), ("listeners", dict(
                lis, name=bad, bind=f"127.0.0.1:{h.free_port()}")),
                ("certificates", dict(cert, name="n", id=bad))):
            r = slbd.api.request("POST", f"/v1/{coll}", body)
            assert r.status == 400, (coll, bad, r)
    # Nothing under the test's directory changed: no file read-modified, deleted or created.
    after = files_under(workdir)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert changed == [], changed
    assert slbd.api.get("/v1/certificates/real")[0] == 200
    print(f"\n{len(seen)} traversal requests, statuses "
          f"{sorted({str(s) for _, _, s in seen})}")


# --------------------------------------------------------------------------------------------
# Methods, media types, JSON shape, sizes
# --------------------------------------------------------------------------------------------

ALLOWED = {
    "/v1/groups": {"GET", "POST"}, "/v1/listeners": {"GET", "POST"},
    "/v1/certificates": {"GET", "POST"}, "/v1/groups/g": {"GET", "PUT", "DELETE"},
    "/v1/listeners/l": {"GET", "PUT", "DELETE"},
    "/v1/certificates/real": {"GET", "PUT", "PATCH", "DELETE"},
    "/v1/certificates/real/crl": {"PUT"}, "/v1/apply": {"POST"}, "/v1/stats": {"GET"},
    "/metrics": {"GET"}, "/healthz": {"GET", "HEAD"}, "/v1/settings": {"GET", "PUT", "PATCH"},
    "/v1/keys": {"GET", "POST"}, "/v1/keys/k": {"GET", "DELETE"}, "/v1/audit": {"GET"},
}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "FOO"]


def test_method_not_allowed_names_the_allowed_ones(slbd, populated):
    assert slbd.api.post("/v1/keys", {"name": "k", "scope": "read"})[0] == 201
    before = files_under(slbd.state_dir)
    for path, allowed in ALLOWED.items():
        for method in METHODS:
            if method in allowed:
                continue
            target = "127.0.0.1:1" if method == "CONNECT" else path
            st, hd, text = raw(slbd, method, target if method != "CONNECT" else path,
                               {"x": 1} if method in ("POST", "PUT", "PATCH") else None)
            if method in ("FOO", "CONNECT") and st in (400, 501):
                continue  # refused by the parser: fine too
            assert st == 405, (method, path, st, text[:200])
            got = {m.strip() for m in hd.get("allow", "").split(",") if m.strip()}
            assert got == allowed, (method, path, hd)
            assert "TRACE" not in text or method != "TRACE" or "Authorization" not in text
    assert files_under(slbd.state_dir) == before


WRONG_TYPES = [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
               "text/json", "application/jsonx", "application/json-patch+json",
               "application/javascript", "application/xml", "*/*"]


def test_wrong_content_type_is_415(slbd, populated):
    before = files_under(slbd.state_dir)
    grp = dict(slbd.api.get("/v1/groups/g")[1])
    writes = [("POST", "/v1/groups", {"name": "new", "servers": []}),
              ("PUT", "/v1/groups/g", grp),
              ("POST", "/v1/apply", {"settings": {"drain_timeout_s": 3}}),
              ("POST", "/v1/listeners", {"name": "n", "protocol": "tcp", "bind":
                                         "127.0.0.1:1", "backend_group": "g"})]
    failures = []
    for method, path, body in writes:
        for ctype in WRONG_TYPES:
            st, _, text = raw(slbd, method, path, body, ctype=ctype)
            if st != 415:
                failures.append((method, path, ctype, st))
    assert not failures, failures
    assert files_under(slbd.state_dir) == before, "a write with a wrong media type went through"


def _nest(depth, open_, close):
    return open_ * depth + close * depth


NESTED = {
    "array-10000": _nest(10000, "[", "]"),
    "object-10000": '{"a":' * 10000 + "1" + "}" * 10000,
    "servers-array-10000": '{"name": "deep", "servers": ' + _nest(10000, "[", "]") + "}",
    "array-200000": _nest(200000, "[", "]"),
    "unterminated-100000": "[" * 100000,
}


@pytest.mark.parametrize("what", list(NESTED))
def test_deeply_nested_json(slbd, populated, what):
    body = NESTED[what]
    before = files_under(slbd.state_dir)
    for path in ("/v1/groups", "/v1/apply", "/v1/certificates"):
        st, _, text = raw(slbd, "POST", path, body.encode())
        assert st == 400, (path, st, text[:200])
        assert json.loads(text)["error"]["code"] in ("invalid_json", "wrong_type"), text
    assert files_under(slbd.state_dir) == before
    assert slbd.api.get("/v1/groups/g")[0] == 200


def test_deeply_nested_config_json_at_start(slbd_factory, workdir):
    d = slbd_factory(start=False, state_dir=workdir / "deep")
    os.makedirs(d.state_dir, mode=0o700)
    (d.state_dir / "config.json").write_text('{"groups": ' + _nest(100000, "[", "]") + "}")
    for args in (["--check"], []):
        rc, text = d.run_once(*args)
        assert rc == 1 and "config.json" in text, text[-500:]


def test_request_size_limits(slbd, populated):
    token = slbd.api.token
    before = files_under(slbd.state_dir)
    # A declared length far over 1 MiB is refused from the head alone.
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n").encode()
    data, how = hu.raw_exchange(slbd.admin_port, head, timeout=5)
    assert hu.status_of(data) == 413, data[:200]
    # Chunked bodies are not taken at all.
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            f"2\r\n{{}}\r\n0\r\n\r\n").encode()
    data, how = hu.raw_exchange(slbd.admin_port, head, timeout=5)
    assert hu.status_of(data) == 411, data[:200]
    # A head over the limit: 431, and an endless one does not make slbd buffer it all.
    big = b"GET /v1/groups HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)) + b"\r\n"
    data, how = hu.raw_exchange(slbd.admin_port, big, timeout=5)
    assert hu.status_of(data) == 431, data[:200]
    rss0 = hu.rss_kb(slbd.pid)
    s = socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=h.scaled(5))
    sent = 0
    answer = b""
    try:
        s.sendall(b"GET /v1/groups HTTP/1.1\r\nX-Endless: ")
        s.settimeout(0.01)
        while sent < (8 << 20) and not answer:
            s.sendall(b"v" * 16384)
            sent += 16384
            try:
                answer = s.recv(4096)
            except socket.timeout:
                pass
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    grown = hu.rss_kb(slbd.pid) - rss0
    assert sent < (8 << 20), "slbd kept reading an endless head"
    assert grown < hu.rss_budget_kb(8 << 10), f"RSS grew {grown} KiB for one endless head"
    assert files_under(slbd.state_dir) == before
    assert slbd.api.get("/v1/groups")[0] == 200


# --------------------------------------------------------------------------------------------
# Concurrency and connection load
# --------------------------------------------------------------------------------------------


def _parallel(n, fn):
    results = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(h.scaled(30))
    return results


def test_concurrent_writers_are_serialised(slbd, populated):
    res = _parallel(20, lambda i: slbd.api.post("/v1/groups", {"name": f"c{i}", "servers": []}))
    assert [st for st, _ in res] == [201] * 20, res
    names = {g["name"] for g in slbd.api.get("/v1/groups")[1]["groups"]}
    assert {f"c{i}" for i in range(20)} <= names
    disk = json.loads((slbd.state_dir / "config.json").read_text())
    assert {g["name"] for g in disk["groups"]} == names
    # The same name from 20 writers: exactly one wins.
    res = _parallel(20, lambda i: slbd.api.request("POST", "/v1/groups",
                                                   {"name": "same", "servers": []}))
    statuses = sorted(r.status for r in res)
    assert statuses == [201] + [409] * 19, statuses
    assert all(r.error_code() == "name_taken" for r in res if r.status == 409)
    # 20 writers replacing one listener: each answer is whole, and the final state is one of
    # them, on disk too.
    lis = slbd.api.get("/v1/listeners/l")[1]
    res = _parallel(20, lambda i: slbd.api.put("/v1/listeners/l",
                                               dict(lis, idle_timeout_s=100 + i)))
    assert all(st == 200 for st, _ in res), res
    final = slbd.api.get("/v1/listeners/l")[1]
    assert final["idle_timeout_s"] in range(100, 120)
    disk = json.loads((slbd.state_dir / "config.json").read_text())
    assert [x for x in disk["listeners"] if x["name"] == "l"][0] == final


@pytest.mark.timeout(60)
def test_many_idle_admin_connections_do_not_lock_out_the_operator(slbd):
    """300 idle connections to the admin port (more than its 256-connection cap): the
    operator's request must still be answered promptly, not after the idle ones time out."""
    socks, err = hu.open_many(slbd.admin_port, 300)
    assert err is None and len(socks) == 300, err
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        try:
            r = slbd.api.request("GET", "/v1/groups", timeout=h.scaled(5))
            outcome = r.status
        except (OSError, urllib.error.URLError) as e:
            outcome = f"{type(e).__name__}: {e}"
        took = time.monotonic() - t0
    finally:
        hu.close_all(socks)
    assert outcome == 200, (f"with 300 idle connections open the admin API answered "
                            f"{outcome!r} after {took:.1f} s")
    assert slbd.api.get("/v1/groups")[0] == 200


def test_admin_survives_connection_churn(slbd):
    """Thousands of connections that connect and go away, some mid-request."""
    tok = slbd.api.token.encode()
    for i in range(1500):
        s = socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=5)
        if i % 3 == 1:
            s.sendall(b"GET /v1/groups HTTP/1.1\r\nAuthorization: Bearer " + tok[:i % 64])
        elif i % 3 == 2:
            s.sendall(b"POST /v1/groups HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
        hu.abort(s)
    assert slbd.api.get("/v1/groups")[0] == 200


# --------------------------------------------------------------------------------------------
# Private keys
# --------------------------------------------------------------------------------------------


def _key_fragments(pem):
    """The base64 lines of a PEM key (any one of them appearing is a leak)."""
    return [ln for ln in pem.splitlines() if ln and not ln.startswith("-----") and len(ln) > 16]


@pytest.mark.slbd(log_level="debug")
def test_private_keys_never_come_back(slbd, hx, pki, workdir):
    texts = []

    def keep(r):
        texts.append(r.text)
        return r
    keys = {n: pki.key(n) for n in ("server", "server-rsa")}
    body = {"name": "site", "type": "server", "certificate": pki.chain("server"),
            "private_key": keys["server"]}
    r = keep(slbd.api.request("POST", "/v1/certificates", body))
    assert r.status == 201, r
    cid = r.json["id"]
    keep(slbd.api.request("PUT", f"/v1/certificates/{cid}", dict(
        body, certificate=pki.chain("server-rsa"), private_key=keys["server-rsa"])))
    # Refusals must not quote the key either.
    for bad in (dict(body, private_key=keys["server-rsa"]),  # key_mismatch
                dict(body, private_key=keys["server"][:200]),  # truncated PEM
                dict(body, private_key=keys["server"].replace("PRIVATE KEY", "PRIVATE  KEY")),
                dict(body, certificate=keys["server"]),  # a key where the certificate goes
                dict(body, name="site")):  # name_taken
        r = keep(slbd.api.request("POST", "/v1/certificates", bad))
        assert r.status in (400, 409), r
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    add_listener(slbd, "tls", "g", protocol="https", tls={"certificates": [cid]})
    for path in ("/v1/certificates", f"/v1/certificates/{cid}", f"/v1/certificates/{cid}?key=1",
                 "/v1/listeners", "/v1/stats", "/metrics", "/v1/groups"):
        keep(slbd.api.request("GET", path))
    keep(slbd.api.request("POST", "/v1/apply", {}))
    leaks = []
    everything = {"answers": "\n".join(texts), "log": slbd.log_text(),
                  "config.json": (slbd.state_dir / "config.json").read_text()}
    for where, text in everything.items():
        if "PRIVATE KEY" in text:
            leaks.append((where, "PRIVATE KEY"))
        for name, key in keys.items():
            for frag in _key_fragments(key):
                if frag in text:
                    leaks.append((where, name, frag[:20]))
                    break
    assert not leaks, leaks
    # The key lives in certs/<id>.json only, readable by the owner alone.
    for p in (slbd.state_dir / "certs").glob("*.json"):
        assert os.stat(p).st_mode & 0o077 == 0, oct(os.stat(p).st_mode)
