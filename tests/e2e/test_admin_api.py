# SPDX-License-Identifier: Apache-2.0
"""The admin API end to end: authentication, every class of bad input (right status and
error.code, and nothing changes), create/update/delete round trips, atomic apply, /metrics."""

import http.server
import json
import os
import socket
import subprocess
import threading

import pytest

import slbd_harness as h
from cert_util import slbctl
from pki import pki  # noqa: F401


def snapshot(slbd):
    """Everything a refused request must leave alone: the resources, the file on disk and the
    generation of the running configuration."""
    st_l, listeners = slbd.api.get("/v1/listeners")
    st_g, groups = slbd.api.get("/v1/groups")
    assert (st_l, st_g) == (200, 200)
    health = slbd.api.request("GET", "/healthz", token=None).json
    cfg = slbd.state_dir / "config.json"
    return {
        "listeners": listeners,
        "groups": groups,
        "generation": health["generation"],
        "file": cfg.read_bytes() if cfg.exists() else None,
    }


@pytest.fixture
def base(slbd, backend):
    """A group "g" with one live server and a tcp listener "l" using it."""
    a = backend("a")
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    return {"backend": a, "port": port}


def expect_error(resp, status, code):
    assert resp.status == status, resp
    assert resp.error_code() == code, resp
    msg = resp.json["error"].get("message")
    assert isinstance(msg, str) and msg, resp


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


# Many wrong tokens from one address on purpose: the failed-authentication limit is off here
# (tests/e2e/test_admin_keys.py tests it).
@pytest.mark.slbd(extra_args=["--admin-auth-failures", "0"])
def test_token_required(slbd):
    for path in ("/v1/groups", "/v1/listeners", "/v1/stats", "/metrics", "/v1/nothing"):
        expect_error(slbd.api.request("GET", path, token=None), 401, "unauthorized")
        expect_error(slbd.api.request("GET", path, token="wrong" * 8), 401, "unauthorized")
        expect_error(slbd.api.request("GET", path, token=slbd.api.token + "x"), 401,
                     "unauthorized")
        expect_error(slbd.api.request("GET", path, token=slbd.api.token[:-1]), 401,
                     "unauthorized")
    r = slbd.api.request("GET", "/v1/groups", token=None,
                         headers={"Authorization": f"Basic {slbd.api.token}"})
    expect_error(r, 401, "unauthorized")
    before = snapshot(slbd)
    r = slbd.api.request("POST", "/v1/groups", {"name": "x", "servers": []}, token=None)
    expect_error(r, 401, "unauthorized")
    assert snapshot(slbd) == before
    # /healthz is public.
    r = slbd.api.request("GET", "/healthz", token=None)
    assert r.status == 200 and r.json["status"] == "ok", r
    st, js = slbd.api.get("/v1/groups")
    assert st == 200 and js == {"groups": []}


# --------------------------------------------------------------------------------------------
# Bad input: right status and code, and nothing changes
# --------------------------------------------------------------------------------------------

SRV = {"address": "127.0.0.1", "port": 9}


def group(**kw):
    g = {"name": "new", "servers": [dict(SRV)]}
    g.update(kw)
    return g


def listener(port, **kw):
    lis = {"name": "new", "protocol": "tcp", "bind": f"127.0.0.1:{port}", "backend_group": "g"}
    lis.update(kw)
    return lis


BAD_GROUPS = [
    ("unknown field", group(colour="red"), "unknown_field"),
    ("unknown server field", group(servers=[dict(SRV, colour="red")]), "unknown_field"),
    ("unknown health field", group(health_check={"intervall_s": 3}), "unknown_field"),
    ("servers not a list", group(servers="127.0.0.1:9"), "wrong_type"),
    ("port as string", group(servers=[dict(SRV, port="9")]), "wrong_type"),
    ("weight as real", group(servers=[dict(SRV, weight=1.5)]), "wrong_type"),
    ("name as number", group(name=5), "wrong_type"),
    ("health_check not object", group(health_check=[]), "wrong_type"),
    ("port 0", group(servers=[dict(SRV, port=0)]), "invalid_value"),
    ("port 65536", group(servers=[dict(SRV, port=65536)]), "invalid_value"),
    ("weight 101", group(servers=[dict(SRV, weight=101)]), "invalid_value"),
    ("weight -1", group(servers=[dict(SRV, weight=-1)]), "invalid_value"),
    ("interval 0", group(health_check={"interval_s": 0}), "invalid_value"),
    ("interval 51", group(health_check={"interval_s": 51}), "invalid_value"),
    ("timeout 301", group(health_check={"timeout_s": 301}), "invalid_value"),
    ("threshold 1", group(health_check={"unhealthy_threshold": 1}), "invalid_value"),
    ("threshold 11", group(health_check={"healthy_threshold": 11}), "invalid_value"),
    ("bad http code", group(health_check={"http_codes": ["http_6xx"]}), "invalid_value"),
    ("bad scheduler", group(scheduler="random"), "invalid_value"),
    ("host name address", group(servers=[dict(SRV, address="localhost")]), "invalid_value"),
    ("bad name", group(name="a/b"), "invalid_value"),
    ("dot-dot name", group(name=".."), "invalid_value"),
    ("long name", group(name="n" * 64), "invalid_value"),
    ("duplicate server", group(servers=[dict(SRV), dict(SRV)]), "invalid_value"),
    ("missing name", {"servers": [dict(SRV)]}, "missing_field"),
    ("missing port", group(servers=[{"address": "127.0.0.1"}]), "missing_field"),
    ("missing address", group(servers=[{"port": 9}]), "missing_field"),
]


@pytest.mark.parametrize("what,body,code", BAD_GROUPS, ids=[c[0] for c in BAD_GROUPS])
def test_bad_group_refused(slbd, base, what, body, code):
    before = snapshot(slbd)
    expect_error(slbd.api.request("POST", "/v1/groups", body), 400, code)
    # The same body as an update of an existing group (the path gives the name).
    if "name" not in what:
        upd = {k: v for k, v in body.items() if k != "name"}
        expect_error(slbd.api.request("PUT", "/v1/groups/g", upd), 400, code)
    assert snapshot(slbd) == before


@pytest.mark.parametrize("n", [64, 300])
def test_long_name_message_gives_the_real_limit(slbd, base, n):
    # Names are 1-63 characters; the error must say so whatever the length given.
    r = slbd.api.request("POST", "/v1/groups", group(name="n" * n))
    expect_error(r, 400, "invalid_value")
    msg = r.json["error"]["message"]
    assert "63" in msg and "255" not in msg, msg


def bad_listeners(port):
    return [
        ("unknown field", listener(port, colour="red"), 400, "unknown_field"),
        ("http field on tcp", listener(port, sticky={"type": "insert"}), 400, "invalid_field"),
        ("protocol", listener(port, protocol="udp"), 400, "invalid_value"),
        ("bind port 0", listener(0), 400, "invalid_value"),
        ("bind port 70000", listener(70000), 400, "invalid_value"),
        ("bind no port", listener(port, bind="127.0.0.1"), 400, "invalid_value"),
        ("bind host name", listener(port, bind=f"localhost:{port}"), 400, "invalid_value"),
        ("bind as number", listener(port, bind=port), 400, "wrong_type"),
        ("proxy_protocol v3", listener(port, proxy_protocol="v3"), 400, "invalid_value"),
        ("established_timeout 0", listener(port, established_timeout_s=0), 400,
         "invalid_value"),
        ("established_timeout string", listener(port, established_timeout_s="5"), 400,
         "wrong_type"),
        ("missing bind", {"name": "new", "protocol": "tcp", "backend_group": "g"}, 400,
         "missing_field"),
        ("missing protocol", {"name": "new", "bind": f"127.0.0.1:{port}", "backend_group": "g"},
         400, "missing_field"),
        ("missing group", {"name": "new", "protocol": "tcp", "bind": f"127.0.0.1:{port}"}, 400,
         "missing_field"),
        ("unknown group", listener(port, backend_group="nope"), 400, "unknown_group"),
        ("rules on tcp", listener(port, rules=[]), 400, "invalid_field"),
        ("rule with two actions",
         listener(port, protocol="http",
                  rules=[{"name": "a", "action": {"forward": "g", "redirect": {"path": "/"}}}]),
         400, "conflicting_actions"),
        ("rule with a bad regex",
         listener(port, protocol="http",
                  rules=[{"name": "a", "match": {"path_regex": "("}, "action": {"forward": "g"}}]),
         400, "invalid_value"),
        ("rule to an unknown group",
         listener(port, protocol="http", rules=[{"name": "a", "action": {"forward": "nope"}}]),
         400, "unknown_group"),
    ]


def test_bad_listener_refused(slbd, base):
    port = h.free_port()
    for what, body, status, code in bad_listeners(port):
        before = snapshot(slbd)
        expect_error(slbd.api.request("POST", "/v1/listeners", body), status, code)
        assert snapshot(slbd) == before, what
        # Nothing was bound either.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_rules_errors_name_the_rule(slbd, base):
    """Rule errors carry the JSON path down to the rule's field; an empty list is accepted and
    not shown."""
    port = h.free_port()
    body = listener(port, protocol="http", rules=[
        {"name": "a", "action": {"forward": "g"}},
        {"name": "b", "match": {"path": "/v1/../admin"}, "action": {"forward": "g"}}])
    resp = slbd.api.request("POST", "/v1/listeners", body)
    expect_error(resp, 400, "invalid_value")
    assert resp.json["error"]["message"].startswith("rules[1].match.path: "), resp
    assert '"/admin"' in resp.json["error"]["message"], resp
    body["rules"] = []
    st, created = slbd.api.post("/v1/listeners", body)
    assert st == 201, created
    st, got = slbd.api.get("/v1/listeners/new")
    assert st == 200 and got["name"] == "new" and "rules" not in got, got


def test_bad_json_and_body_shape(slbd, base):
    before = snapshot(slbd)
    cases = [
        ("POST", "/v1/groups", '{"name": "x", ', 400, "invalid_json"),
        ("POST", "/v1/groups", "", 400, "invalid_json"),
        ("POST", "/v1/groups", '{"name": "x", "name": "y", "servers": []}', 400,
         "invalid_json"),
        ("POST", "/v1/groups", '[{"name": "x"}]', 400, "wrong_type"),
        ("POST", "/v1/groups", '"x"', 400, "invalid_json"),  # jansson: top level must be
        ("POST", "/v1/groups", "null", 400, "invalid_json"),  # an object or array
        ("PUT", "/v1/groups/g", "{]", 400, "invalid_json"),
        ("POST", "/v1/listeners", "\xff\xfe", 400, "invalid_json"),
        ("POST", "/v1/apply", "nope", 400, "invalid_json"),
    ]
    for method, path, raw, status, code in cases:
        r = slbd.api.request(method, path, data=raw.encode("latin-1"))
        expect_error(r, status, code)
        assert snapshot(slbd) == before, (method, path, raw)


def test_wrong_content_type(slbd, base):
    before = snapshot(slbd)
    body = json.dumps(group()).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        r = slbd.api.request("POST", "/v1/groups", data=body, content_type=ctype)
        expect_error(r, 415, "unsupported_media_type")
    r = slbd.api.request("PUT", "/v1/groups/g", data=body, content_type="text/json")
    expect_error(r, 415, "unsupported_media_type")
    # Parameters after the media type are fine.
    r = slbd.api.request("POST", "/v1/groups", data=body,
                         content_type="application/json; charset=utf-8")
    assert r.status == 201, r
    assert slbd.api.delete("/v1/groups/new")[0] == 204
    assert snapshot(slbd)["groups"] == before["groups"]


def raw_request(port, head, body=b"", read_timeout=10):
    """Send bytes on a fresh connection and return (status, headers, body) of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=h.scaled(10)) as s:
        s.sendall(head + body)
        data = b""
        s.settimeout(h.scaled(read_timeout))
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        lines = head_part.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (ln.partition(":") for ln in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest


def test_oversized_body(slbd, base):
    before = snapshot(slbd)
    size = (1 << 20) + 1
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {slbd.api.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n").encode()
    # The limit is enforced from the declared length, before the body is read.
    status, _, body = raw_request(slbd.admin_port, head)
    assert status == 413, body
    assert json.loads(body)["error"]["code"] == "body_too_large"
    # And with the body actually sent (a JSON document just over 1 MiB).
    doc = json.dumps({"name": "big", "servers": [], "pad": "x" * (1 << 20)}).encode()
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {slbd.api.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(doc)}\r\n\r\n").encode()
    try:
        status, _, body = raw_request(slbd.admin_port, head, doc)
        assert status == 413, body
    except (ConnectionResetError, BrokenPipeError):
        pass  # answered and closed while we were still sending: the body was refused
    # Exactly 1 MiB is accepted as far as size goes (then refused for its content).
    prefix, suffix = b'{"name": "x", "servers": [], "pad": "', b'"}'
    doc = prefix + b"x" * ((1 << 20) - len(prefix) - len(suffix)) + suffix
    assert len(doc) == 1 << 20
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {slbd.api.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(doc)}\r\n\r\n").encode()
    status, _, body = raw_request(slbd.admin_port, head, doc)
    assert status == 400 and json.loads(body)["error"]["code"] == "unknown_field", body
    assert snapshot(slbd) == before


def test_unknown_path_and_wrong_method(slbd, base):
    before = snapshot(slbd)
    # "/" is the web console's (test_console.py).
    for path in ("/v1/nothing", "/v2/groups", "/v1/groups/g/members", "/v1", "/uix",
                 "/v1/groups/nope", "/v1/listeners/nope", "/v1/groups/nope/servers",
                 "/v1/groups/g/servers/10.9.9.9:1", "/v1/listeners/l/servers"):
        expect_error(slbd.api.request("GET", path), 404, "not_found")
    for path in ("/v1/groups/nope", "/v1/listeners/nope"):
        expect_error(slbd.api.request("DELETE", path), 404, "not_found")
        expect_error(slbd.api.request("PUT", path, group()), 404, "not_found")
    cases = [
        ("PATCH", "/v1/groups", "GET, POST"),
        ("DELETE", "/v1/groups", "GET, POST"),
        ("PUT", "/v1/listeners", "GET, POST"),
        ("POST", "/v1/groups/g", "GET, PUT, DELETE"),
        ("PATCH", "/v1/listeners/l", "GET, PUT, DELETE"),
        ("GET", "/v1/apply", "POST"),
        ("POST", "/v1/stats", "GET"),
        ("DELETE", "/metrics", "GET"),
    ]
    for method, path, allow in cases:
        r = slbd.api.request(method, path, group() if method in ("POST", "PUT", "PATCH")
                             else None)
        expect_error(r, 405, "method_not_allowed")
        got = {m.strip() for m in (r.headers.get("Allow") or "").split(",")}
        assert got == {m.strip() for m in allow.split(",")}, (method, path, r.headers)
    assert snapshot(slbd) == before


def test_name_taken_and_in_use(slbd, base):
    before = snapshot(slbd)
    expect_error(slbd.api.request("POST", "/v1/groups", group(name="g")), 409, "name_taken")
    r = slbd.api.request("POST", "/v1/listeners", listener(h.free_port(), name="l"))
    expect_error(r, 409, "name_taken")
    r = slbd.api.request("DELETE", "/v1/groups/g")
    expect_error(r, 409, "in_use")
    assert '"l"' in r.json["error"]["message"], r
    assert snapshot(slbd) == before
    # A group that is only an SNI route target is in use as well.
    assert slbd.api.post("/v1/groups", group(name="sni-target"))[0] == 201
    st, js = slbd.api.post("/v1/listeners", listener(h.free_port(), name="sni",
                                                     sni_routes={"a.example": "sni-target"}))
    assert st == 201, js
    r = slbd.api.request("DELETE", "/v1/groups/sni-target")
    expect_error(r, 409, "in_use")
    assert '"sni"' in r.json["error"]["message"], r
    assert slbd.api.delete("/v1/listeners/sni")[0] == 204
    assert slbd.api.delete("/v1/groups/sni-target")[0] == 204
    # Traffic is unaffected.
    assert h.who(slbd.clients, base["port"]) == "a"


def test_put_cannot_rename(slbd, base):
    before = snapshot(slbd)
    expect_error(slbd.api.request("PUT", "/v1/groups/g", group(name="other")), 400,
                 "invalid_value")
    r = slbd.api.request("PUT", "/v1/listeners/l", listener(base["port"], name="other"))
    expect_error(r, 400, "invalid_value")
    r = slbd.api.request("PUT", "/v1/groups/g", group(name=7))
    assert r.status == 400, r
    assert snapshot(slbd) == before
    # Repeating the right name is fine.
    st, js = slbd.api.put("/v1/groups/g", {"name": "g", "servers": [base["backend"].server(7)],
                                           "health_check": {"enabled": False}})
    assert st == 200 and js["servers"][0]["weight"] == 7, js


def test_bind_conflict_and_bind_failed(slbd, base):
    before = snapshot(slbd)
    r = slbd.api.request("POST", "/v1/listeners", listener(base["port"]))
    expect_error(r, 400, "bind_conflict")
    assert snapshot(slbd) == before
    # A port that another process listens on.
    other = socket.socket()
    try:
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        taken = other.getsockname()[1]
        r = slbd.api.request("POST", "/v1/listeners", listener(taken))
        expect_error(r, 400, "bind_failed")
        assert snapshot(slbd) == before
        # Moving the existing listener there fails the same way and keeps it where it was.
        r = slbd.api.request("PUT", "/v1/listeners/l", listener(taken, name="l"))
        expect_error(r, 400, "bind_failed")
        assert snapshot(slbd) == before
        assert h.who(slbd.clients, base["port"]) == "a"
    finally:
        other.close()


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


def test_group_round_trip(slbd, backend):
    a = backend("a")
    body = {"name": "web", "scheduler": "wlc", "servers": [a.server(weight=20)],
            "health_check": {"protocol": "http", "uri": "/health", "interval_s": 7}}
    st, created = slbd.api.post("/v1/groups", body)
    assert st == 201, created
    # Normalized: defaults written out, given values kept.
    assert created["name"] == "web" and created["scheduler"] == "wlc"
    assert created["servers"] == [a.server(weight=20)]
    hc = created["health_check"]
    assert (hc["protocol"], hc["uri"], hc["interval_s"]) == ("http", "/health", 7)
    assert (hc["timeout_s"], hc["healthy_threshold"], hc["unhealthy_threshold"]) == (5, 3, 3)
    assert slbd.api.get("/v1/groups/web") == (200, created)
    assert slbd.api.get("/v1/groups") == (200, {"groups": [created]})
    # Defaults of a minimal group.
    st, minimal = slbd.api.post("/v1/groups", {"name": "min", "servers": []})
    assert st == 201 and minimal["scheduler"] == "wrr" and minimal["servers"] == []
    assert minimal["health_check"]["interval_s"] == 2
    st, srv_default = slbd.api.post("/v1/groups", {"name": "w", "servers": [
        {"address": "127.0.0.1", "port": 5}]})
    assert st == 201 and srv_default["servers"][0]["weight"] == 100
    # Update.
    body["servers"] = [a.server(weight=0)]
    body["scheduler"] = "sch"
    st, updated = slbd.api.put("/v1/groups/web", body)
    assert st == 200 and updated["servers"][0]["weight"] == 0 and updated["scheduler"] == "sch"
    assert slbd.api.get("/v1/groups/web") == (200, updated)
    # Delete.
    st, _ = slbd.api.delete("/v1/groups/web")
    assert st == 204
    assert slbd.api.get("/v1/groups/web")[0] == 404
    assert [g["name"] for g in slbd.api.get("/v1/groups")[1]["groups"]] == ["min", "w"]


def test_listener_round_trip(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("ga", [a.server()], health_check=h.no_health_check())
    slbd.add_group("gb", [b.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "ga")
    st, created = slbd.api.get("/v1/listeners/l")
    assert st == 200
    assert created["protocol"] == "tcp" and created["bind"] == f"127.0.0.1:{port}"
    assert created["proxy_protocol"] is None and created["established_timeout_s"] == 900
    assert slbd.api.get("/v1/listeners") == (200, {"listeners": [created]})
    assert h.who(clients, port) == "a"
    # Update in place (same bind): the new group serves new connections at once.
    upd = dict(created, backend_group="gb", established_timeout_s=30)
    st, updated = slbd.api.put("/v1/listeners/l", upd)
    assert st == 200 and updated["backend_group"] == "gb", updated
    assert h.who(clients, port) == "b"
    # Move to another port: the old one stops accepting before the answer, the new one works.
    new_port = h.free_port()
    st, moved = slbd.api.put("/v1/listeners/l", dict(upd, bind=f"127.0.0.1:{new_port}"))
    assert st == 200, moved
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert h.who(clients, new_port) == "b"
    st, _ = slbd.api.delete("/v1/listeners/l")
    assert st == 204
    assert slbd.api.get("/v1/listeners") == (200, {"listeners": []})
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", new_port), timeout=5).close()
    # The group is free to go now.
    assert slbd.api.delete("/v1/groups/gb")[0] == 204


def test_apply_is_atomic(slbd, base, backend, clients):
    before = snapshot(slbd)
    b = backend("b")
    good_port, bad_port = h.free_port(), h.free_port()
    doc = {
        "groups": [{"name": "g", "servers": [base["backend"].server()]},
                   {"name": "g2", "servers": [b.server()]}],
        "listeners": [
            {"name": "l", "protocol": "tcp", "bind": f"127.0.0.1:{base['port']}",
             "backend_group": "g"},
            {"name": "l2", "protocol": "tcp", "bind": f"127.0.0.1:{good_port}",
             "backend_group": "g2"},
            {"name": "l3", "protocol": "tcp", "bind": f"127.0.0.1:{bad_port}",
             "backend_group": "missing"},
        ],
    }
    r = slbd.api.request("POST", "/v1/apply", doc)
    expect_error(r, 400, "unknown_group")
    assert r.json["error"].get("where", "").startswith("listeners[2]"), r
    assert snapshot(slbd) == before
    for p in (good_port, bad_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p), timeout=5).close()
    # A port conflict in the last listener refuses the whole document too.
    doc["listeners"][2] = dict(doc["listeners"][1], name="l3")
    expect_error(slbd.api.request("POST", "/v1/apply", doc), 400, "bind_conflict")
    expect_error(slbd.api.request("POST", "/v1/apply", dict(doc, extra=1)), 400,
                 "unknown_field")
    assert snapshot(slbd) == before
    # The valid document applies as a whole.
    doc["listeners"].pop()
    st, applied = slbd.api.post("/v1/apply", doc)
    assert st == 200, applied
    assert [x["name"] for x in applied["listeners"]] == ["l", "l2"]
    assert h.who(clients, good_port) == "b" and h.who(clients, base["port"]) == "a"
    assert slbd.api.get("/v1/listeners")[1]["listeners"] == applied["listeners"]
    # Replacing everything with nothing closes the listeners.
    st, empty = slbd.api.post("/v1/apply", {"listeners": [], "groups": []})
    assert st == 200 and empty["listeners"] == [] and empty["groups"] == []
    for p in (good_port, base["port"]):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p), timeout=5).close()


def test_metrics(slbd, base, clients):
    s = clients.connect(base["port"])
    h.echo_roundtrip(s, b"y" * 5000)
    s.close()
    r = slbd.api.request("GET", "/metrics")
    assert r.status == 200, r
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers
    m = h.parse_metrics(r.text)
    # slbd's own families, and the standard process_* ones (docs/api.md)
    assert m and all(k.startswith(("slbd_", "process_")) for k in m), list(m)[:10]
    assert m['slbd_listener_connections_total{listener="l"}'] >= 1
    key = 'slbd_listener_bytes_total{listener="l",direction="in",kind="payload"}'

    def counted():
        text = slbd.api.request("GET", "/metrics").text
        return h.parse_metrics(text).get(key, 0) >= 5000
    h.wait_until(counted, 5, "payload bytes in /metrics")
    for direction in ("in", "out"):
        for kind in ("payload", "wire"):
            k = f'slbd_listener_bytes_total{{listener="l",direction="{direction}",kind="{kind}"}}'
            assert k in m, k
    srv = f'slbd_server_up{{group="g",server="127.0.0.1:{base["backend"].port}"}}'
    assert m.get(srv) == 1, [k for k in m if "server_up" in k]


def test_listener_moves_between_address_and_wildcard(slbd, base, clients):
    """Changing only the address of a listener's bind (127.0.0.1:P to *:P and back) is an
    ordinary update: the port is slbd's own, so it must not be refused as "in use"."""
    port = base["port"]
    st, lis = slbd.api.get("/v1/listeners/l")
    assert st == 200
    r = slbd.api.request("PUT", "/v1/listeners/l", dict(lis, bind=f"*:{port}"))
    assert r.status == 200, r
    assert h.who(clients, port) == "a"
    r = slbd.api.request("PUT", "/v1/listeners/l", dict(lis, bind=f"127.0.0.1:{port}"))
    assert r.status == 200, r
    assert h.who(clients, port) == "a"


def test_expect_100_continue(slbd):
    """curl sends "Expect: 100-continue" with bodies over 1 KiB (certificate uploads) and then
    waits for "100 Continue"; the API must answer the expectation instead of letting every
    such request stall for curl's 1 s fallback."""
    servers = [{"address": "127.0.0.1", "port": 20000 + i, "weight": 1} for i in range(60)]
    body = json.dumps({"name": "e", "servers": servers, "health_check": {"enabled": False}})
    assert len(body) > 1024
    head = (f"POST /v1/groups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {slbd.api.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=h.scaled(10)) as s:
        s.sendall(head)
        s.settimeout(h.scaled(0.5))
        try:
            first = s.recv(100)
        except TimeoutError:
            first = b""
        assert first.startswith(b"HTTP/1.1 100"), f"no interim response, got {first!r}"
        s.sendall(body.encode())
        s.settimeout(h.scaled(10))
        rest = b""
        while b"\r\n\r\n" not in rest.split(b"HTTP/1.1 100 Continue\r\n\r\n")[-1]:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    assert b"HTTP/1.1 201" in first + rest, first + rest


def test_healthz_head_has_no_body(slbd):
    """HEAD is allowed on /healthz; its answer carries the length but no body, or a
    keep-alive client (a monitor) reads the body as the start of the next response."""
    with socket.create_connection(("127.0.0.1", slbd.admin_port), timeout=h.scaled(10)) as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = h.read_to_eof(s)
    first, sep, after = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), data
    assert after.startswith(b"HTTP/1.1 200"), f"bytes after the HEAD response's head: {after!r}"
    assert json.loads(after.partition(b"\r\n\r\n")[2])["status"] == "ok"


# --------------------------------------------------------------------------------------------
# Revisions (ETag / If-Match), servers as resources, query parameters, dry runs
# --------------------------------------------------------------------------------------------


def test_parallel_server_adds_are_not_lost(slbd, base):
    """Ten `slbctl server add` at once: every one reports success and every server is in the
    group afterwards (each add is one change on the server, not a read-modify-write of the
    whole group)."""
    addrs = [f"10.0.7.{i}:8{i:03d}" for i in range(1, 11)]
    procs = []
    for a in addrs:
        argv = [str(h.binary("slbctl")), "--admin", f"http://127.0.0.1:{slbd.admin_port}",
                "--state-dir", str(slbd.state_dir), "server", "add", "g", a, "--weight", "0"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, stdin=subprocess.DEVNULL))
    for p in procs:
        out, err = p.communicate(timeout=h.scaled(30))
        assert p.returncode == 0 and "added server" in out, (out, err)
    servers = slbd.api.get("/v1/groups/g")[1]["servers"]
    got = {f"{s['address']}:{s['port']}" for s in servers}
    b = base["backend"]
    assert got == set(addrs) | {f"{b.address}:{b.port}"}, got
    # Remove and set-weight go through the server's own resource too.
    p = slbctl(slbd, "server", "set-weight", "g", addrs[0], "7")
    assert p.returncode == 0, p.stderr
    p = slbctl(slbd, "server", "remove", "g", addrs[1])
    assert p.returncode == 0, p.stderr
    p = slbctl(slbd, "server", "remove", "g", addrs[1])
    assert p.returncode == 1 and "has no server 10.0.7.2:8002" in p.stderr, p.stderr
    p = slbctl(slbd, "server", "add", "g", addrs[0])
    assert p.returncode == 1 and "name_taken" in p.stderr, p.stderr
    servers = {f"{s['address']}:{s['port']}": s["weight"]
               for s in slbd.api.get("/v1/groups/g")[1]["servers"]}
    assert addrs[1] not in servers and servers[addrs[0]] == 7, servers
    assert h.who(slbd.clients, base["port"]) == "a"


def test_if_match(slbd, base):
    """Every resource answers an ETag; PUT and DELETE with a stale or unknown If-Match are
    refused with 412 and change nothing; with the current one (or *) they go through."""
    r = slbd.api.request("GET", "/v1/groups/g")
    etag = r.headers["ETag"]
    assert r.status == 200 and etag.startswith('"') and etag.endswith('"'), r.headers
    body = dict(r.json, scheduler="rr")
    before = snapshot(slbd)
    for bad in ('"bogus"', "W/" + etag, etag[:-2] + '"'):
        r = slbd.api.request("PUT", "/v1/groups/g", body, headers={"If-Match": bad})
        expect_error(r, 412, "precondition_failed")
        expect_error(slbd.api.request("DELETE", "/v1/listeners/l", headers={"If-Match": bad}),
                     412, "precondition_failed")
    assert snapshot(slbd) == before
    r = slbd.api.request("PUT", "/v1/groups/g", body, headers={"If-Match": f'"x", {etag}'})
    assert r.status == 200 and r.json["scheduler"] == "rr", r
    new = r.headers["ETag"]
    assert new != etag and slbd.api.request("GET", "/v1/groups/g").headers["ETag"] == new
    # The old revision is now stale.
    r = slbd.api.request("PUT", "/v1/groups/g", body, headers={"If-Match": etag})
    expect_error(r, 412, "precondition_failed")
    # Listeners, settings, servers and the whole document have revisions too.
    for path in ("/v1/listeners/l", "/v1/settings",
                 f"/v1/groups/g/servers/127.0.0.1:{base['backend'].port}"):
        r = slbd.api.request("GET", path)
        assert r.status == 200 and r.headers.get("ETag"), (path, r)
    r = slbd.api.request("PUT", "/v1/settings", {"drain_timeout_s": 3},
                         headers={"If-Match": '"bogus"'})
    expect_error(r, 412, "precondition_failed")
    tag = slbd.api.request("GET", "/v1/settings").headers["ETag"]
    r = slbd.api.request("PUT", "/v1/settings", {"drain_timeout_s": 3},
                         headers={"If-Match": tag})
    assert r.status == 200 and r.json["drain_timeout_s"] == 3, r
    r = slbd.api.request("DELETE", "/v1/listeners/l", headers={"If-Match": "*"})
    assert r.status == 204, r


def test_certificate_if_match(slbd, pki):
    cert = {"name": "site", "type": "server", "certificate": pki.chain("server"),
            "private_key": pki.key("server")}
    r = slbd.api.request("POST", "/v1/certificates", cert)
    assert r.status == 201 and r.headers.get("ETag"), r
    cid, etag = r.json["id"], r.headers["ETag"]
    assert slbd.api.request("GET", f"/v1/certificates/{cid}").headers["ETag"] == etag
    for method, body in (("PUT", cert), ("DELETE", None)):
        r = slbd.api.request(method, f"/v1/certificates/{cid}", body,
                             headers={"If-Match": '"bogus"'})
        expect_error(r, 412, "precondition_failed")
    r = slbd.api.request("PUT", f"/v1/certificates/{cid}", cert, headers={"If-Match": etag})
    assert r.status == 200 and r.json["version"] == 2 and r.headers["ETag"] != etag, r
    r = slbd.api.request("DELETE", f"/v1/certificates/{cid}", headers={"If-Match": etag})
    expect_error(r, 412, "precondition_failed")
    etag = slbd.api.request("GET", f"/v1/certificates/{cid}").headers["ETag"]
    r = slbd.api.request("DELETE", f"/v1/certificates/{cid}", headers={"If-Match": etag})
    assert r.status == 204, r


def test_server_resource(slbd, base):
    """POST /v1/groups/G/servers adds one server, PATCH changes its weight, DELETE removes
    it; IPv6 addresses are named in brackets (percent-encoded or not) and compared by value."""
    before = snapshot(slbd)
    for bad, code, where in (({"address": "10.0.0.1"}, "missing_field", "port"),
                             ({"address": "10.0.0.1", "port": 80, "weight": 101},
                              "invalid_value", "weight"),
                             ({"address": "db.local", "port": 80}, "invalid_value", "address"),
                             ({"address": "10.0.0.1", "port": 80, "x": 1}, "unknown_field",
                              "x")):
        r = slbd.api.request("POST", "/v1/groups/g/servers", bad)
        expect_error(r, 400, code)
        assert r.json["error"].get("where") == where, r
    r = slbd.api.request("POST", "/v1/groups/g/servers", base["backend"].server())
    expect_error(r, 409, "name_taken")
    assert snapshot(slbd) == before
    r = slbd.api.request("POST", "/v1/groups/g/servers", {"address": "::1", "port": 9})
    assert r.status == 201 and r.json == {"address": "::1", "port": 9, "weight": 100}, r
    r = slbd.api.request("PATCH", "/v1/groups/g/servers/%5B0:0::1%5D:9", {"weight": 0})
    assert r.status == 200 and r.json["weight"] == 0, r
    r = slbd.api.request("PATCH", "/v1/groups/g/servers/[::1]:9", {"port": 10})
    expect_error(r, 400, "invalid_value")
    etag = slbd.api.request("GET", "/v1/groups/g/servers/[::1]:9").headers["ETag"]
    r = slbd.api.request("DELETE", "/v1/groups/g/servers/[::1]:9",
                         headers={"If-Match": '"old"'})
    expect_error(r, 412, "precondition_failed")
    r = slbd.api.request("DELETE", "/v1/groups/g/servers/[::1]:9", headers={"If-Match": etag})
    assert r.status == 204, r
    expect_error(slbd.api.request("DELETE", "/v1/groups/g/servers/[::1]:9"), 404, "not_found")
    assert slbd.api.get("/v1/groups/g/servers")[1] == {"servers": [base["backend"].server()]}
    assert h.who(slbd.clients, base["port"]) == "a"


def test_unknown_query_parameters(slbd, base):
    before = snapshot(slbd)
    for method, path in (("GET", "/v1/groups?limits=5"), ("GET", "/v1/groups/g?x"),
                         ("DELETE", "/v1/listeners/l?force=true"), ("GET", "/v1/stats?a=1"),
                         ("GET", "/metrics?name=x"), ("GET", "/healthz?verbose=1"),
                         ("GET", "/v1/certificates?x=1"), ("POST", "/v1/apply?dryrun=true"),
                         ("POST", "/v1/groups/g/servers?dry_run=true")):
        body = {} if method == "POST" else None
        r = slbd.api.request(method, path, body)
        expect_error(r, 400, "unknown_parameter")
    assert snapshot(slbd) == before


def test_stats_scope(slbd, base):
    """GET /v1/stats?scope=node is today's answer; scope=cluster needs a cluster (404
    not_clustered on a single node, like GET /v1/cluster); any other scope is refused."""
    st, node = slbd.api.get("/v1/stats?scope=node")
    assert st == 200 and "listeners" in node and "scope" not in node, node
    assert [x["name"] for x in node["listeners"]] == \
        [x["name"] for x in slbd.api.get("/v1/stats")[1]["listeners"]]
    expect_error(slbd.api.request("GET", "/v1/stats?scope=cluster"), 404, "not_clustered")
    for bad in ("everything", "", "node&scope=node"):
        expect_error(slbd.api.request("GET", f"/v1/stats?scope={bad}"), 400, "invalid_value")
    expect_error(slbd.api.request("GET", "/v1/stats?scope=node&x=1"), 400, "unknown_parameter")


def test_apply_dry_run(slbd, base):
    """dry_run=true validates like an apply and answers the document that would be stored,
    changing nothing: not the resources, not config.json, not the generation."""
    before = snapshot(slbd)
    port = h.free_port()
    doc = {"listeners": [{"name": "l2", "protocol": "http", "bind": f"127.0.0.1:{port}",
                          "backend_group": "g"}]}
    st, js = slbd.api.post("/v1/apply?dry_run=true", doc)
    assert st == 200, js
    assert [x["name"] for x in js["listeners"]] == ["l2"] and js["listeners"][0]["idle_timeout_s"]
    assert [g["name"] for g in js["groups"]] == ["g"]
    assert snapshot(slbd) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    doc["listeners"][0]["backend_group"] = "missing"
    expect_error(slbd.api.request("POST", "/v1/apply?dry_run=true", doc), 400, "unknown_group")
    expect_error(slbd.api.request("POST", "/v1/apply?dry_run=yes", doc), 400, "invalid_value")
    assert snapshot(slbd) == before
    # dry_run=false is an ordinary apply.
    doc["listeners"][0]["backend_group"] = "g"
    st, js = slbd.api.post("/v1/apply?dry_run=false", doc)
    assert st == 200 and snapshot(slbd)["generation"] == before["generation"] + 1, js


def test_slbctl_listener_update_protocol(slbd, base):
    """`slbctl listener update --protocol` changes the protocol of a listener whose stored
    object carries the old protocol's fields (defaults the user never set): those go, what the
    command gives stays, and a field the user gives that the new protocol refuses is still an
    error."""
    p = slbctl(slbd, "listener", "update", "l", "--protocol", "http")
    assert p.returncode == 0, p.stderr
    lis = slbd.api.get("/v1/listeners/l")[1]
    assert lis["protocol"] == "http" and "proxy_protocol" not in lis, lis
    assert lis["bind"] == f"127.0.0.1:{base['port']}" and lis["x_forwarded_for"] is True, lis
    p = slbctl(slbd, "listener", "update", "l", "--protocol", "tcp", "--proxy-protocol", "v2")
    assert p.returncode == 0, p.stderr
    lis = slbd.api.get("/v1/listeners/l")[1]
    assert lis["protocol"] == "tcp" and lis["proxy_protocol"] == "v2", lis
    assert "x_forwarded_for" not in lis and "idle_timeout_s" not in lis, lis
    p = slbctl(slbd, "listener", "update", "l", "--protocol", "http", "--proxy-protocol", "v1")
    assert p.returncode == 1 and "invalid_field" in p.stderr, p.stderr
    assert slbd.api.get("/v1/listeners/l")[1] == lis


def test_slbctl_update_sends_if_match_and_retries():
    """`slbctl group update` reads, edits and writes back with If-Match; when the group
    changed in between (412) it reads again and retries on the new revision. Against a
    scripted API so that the race happens every time."""
    seen = {"gets": 0, "puts": []}
    group = {"name": "g", "scheduler": "wrr", "servers": []}

    class Api(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body, etag=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if etag:
                self.send_header("ETag", etag)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            seen["gets"] += 1
            self.answer(200, group, f'"v{seen["gets"]}"')

        def do_PUT(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["puts"].append((self.headers.get("If-Match"), body["scheduler"]))
            if len(seen["puts"]) == 1:  # someone else changed it after our first read
                self.answer(412, {"error": {"code": "precondition_failed", "message": "stale"}})
            else:
                self.answer(200, body, '"v9"')

    srv = http.server.HTTPServer(("127.0.0.1", 0), Api)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        env = dict(os.environ, SLBD_TOKEN="t" * 32)
        p = subprocess.run([str(h.binary("slbctl")), "--admin",
                            f"http://127.0.0.1:{srv.server_address[1]}", "group", "update", "g",
                            "--scheduler", "rr"], capture_output=True, text=True, env=env,
                           timeout=h.scaled(20), stdin=subprocess.DEVNULL)
    finally:
        srv.shutdown()
        srv.server_close()
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert seen["gets"] == 2 and seen["puts"] == [('"v1"', "rr"), ('"v2"', "rr")], seen
