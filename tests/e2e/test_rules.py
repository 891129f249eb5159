# SPDX-License-Identifier: Apache-2.0
"""Forwarding rules (listener "rules") on the request path, end to end on HTTP/1.1 and HTTP/2:
every condition, every action, the weighted pick, hostile paths that must not walk around a
rule, and the decided group's servers (more than 32) being tried on a failure."""

import json
import types

import pytest

import slbd_harness as h
from h2_util import NOHC, LibH2, access_lines, client_context, https_listener, set_access_log
from http_util import add_listener, hx  # noqa: F401
from pki import pki, upload_server  # noqa: F401

RULES = [
    {"name": "health", "match": {"path": "/lb-health"},
     "action": {"fixed_response": {"code": 200, "content_type": "text/plain", "body": "ok\n"}}},
    {"name": "teapot", "match": {"path": "/tea"},
     "action": {"fixed_response": {"code": 418, "body": "short and stout"}}},
    {"name": "admin", "match": {"path_regex": "(?i)^/admin(/|$)"},
     "action": {"fixed_response": {"code": 403, "body": "no"}}},
    {"name": "r301", "match": {"path": "/r301"}, "action": {"redirect": {"code": 301,
                                                                         "path": "/p301"}}},
    {"name": "r302", "match": {"path": "/r302"},
     "action": {"redirect": {"code": 302, "scheme": "https"}}},
    {"name": "r303", "match": {"path": "/r303"},
     "action": {"redirect": {"code": 303, "host": "other.example"}}},
    {"name": "r307", "match": {"path": "/r307"},
     "action": {"redirect": {"code": 307, "port": 8443}}},
    {"name": "r308", "match": {"path": "/r308"},
     "action": {"redirect": {"code": 308, "path": "/moved", "query": "a=b"}}},
    {"name": "rq", "match": {"path": "/rq"}, "action": {"redirect": {"query": ""}}},
    {"name": "host-exact", "match": {"host": "api.example"}, "action": {"forward": "a"}},
    {"name": "host-wild", "match": {"host": "*.wild.example"}, "action": {"forward": "b"}},
    {"name": "exact", "match": {"path": "/exact"}, "action": {"forward": "a"}},
    {"name": "prefix", "match": {"path_prefix": "/pre/"}, "action": {"forward": "b"}},
    {"name": "regex", "match": {"path_regex": "^/rx/[0-9]+$"}, "action": {"forward": "a"}},
    {"name": "delete", "match": {"path_prefix": "/m/", "methods": ["DELETE"]},
     "action": {"forward": "a"}},
    {"name": "hdr-exact", "match": {"headers": {"x-route": "a"}}, "action": {"forward": "a"}},
    {"name": "hdr-re", "match": {"headers": {"x-route": {"regex": "^b[0-9]$"}}},
     "action": {"forward": "b"}},
    {"name": "query", "match": {"query": {"go": "a b"}}, "action": {"forward": "a"}},
    {"name": "source", "match": {"path_prefix": "/src/", "source": ["127.0.0.2/32"]},
     "action": {"forward": "b"}},
    {"name": "rewrite", "match": {"path_prefix": "/hdr/"},
     "action": {"forward": "a", "set_request_headers": {"x-set": "yes", "x-over": "new"},
                "remove_request_headers": ["x-drop"]}},
    {"name": "weighted", "match": {"path_prefix": "/w/"},
     "action": {"forward": [{"group": "a", "weight": 75}, {"group": "b", "weight": 25}]}},
]


@pytest.fixture
def site(slbd, hx, pki):  # noqa: F811
    """Groups d (the listeners' default), a and b, one echo backend each (named like the
    group); an http and an https listener with RULES."""
    bs = {}
    for g in ("d", "a", "b"):
        bs[g] = hx.backend(g, record=(g == "a"))
        slbd.add_group(g, [bs[g].server()], health_check=NOHC)
    http = add_listener(slbd, "web", "d", rules=RULES)
    cert = upload_server(slbd, pki, "server")
    https = https_listener(slbd, "tls", "d", cert, rules=RULES)
    return types.SimpleNamespace(http=http, https=https, backends=bs, pki=pki, hx=hx)


class Client:
    """One keep-alive client of either protocol; get() returns (status, {name: value}, body)."""

    def __init__(self, site, proto, source=None):
        self.proto = proto
        if proto == "h1":
            self.c = site.hx.connect(site.http, source=source)
        else:
            self.c = LibH2.connect(site.https, client_context(site.pki), track=site.hx.track)

    def get(self, path, method="GET", host=None, headers=()):
        if self.proto == "h1":
            r = self.c.request(method, path, headers=list(headers),
                               host=host or "example.test")
            return r.status, {k.lower(): v for k, v in r.headers}, r.body
        s = self.c.wait_stream(self.c.request(method, path, headers=list(headers),
                                              authority=host or "localhost"))
        assert s.reset is None, s
        return s.status, dict(s.headers), bytes(s.data)

    def server(self, path, **kw):
        st, _, body = self.get(path, **kw)
        assert st == 200, (path, st, body)
        return json.loads(body)["server"]


PROTOS = ["h1", "h2"]


@pytest.mark.parametrize("proto", PROTOS)
def test_conditions_choose_the_group(site, proto):
    c = Client(site, proto)
    assert c.server("/") == "d"
    assert c.server("/exact") == "a"
    assert c.server("/exact/no") == "d"
    assert c.server("/pre/x") == "b"
    assert c.server("/pre") == "d"
    assert c.server("/rx/12") == "a"
    assert c.server("/rx/12a") == "d"
    assert c.server("/m/x", method="DELETE") == "a"
    assert c.server("/m/x") == "d"
    assert c.server("/", headers=[("x-route", "a")]) == "a"
    assert c.server("/", headers=[("x-route", "b7")]) == "b"
    assert c.server("/", headers=[("x-route", "c")]) == "d"
    assert c.server("/q?go=a%20b") == "a"
    assert c.server("/q?go=ab") == "d"
    # the normalized path is what rules see
    assert c.server("/x/../exact") == "a"
    assert c.server("/%65xact") == "a"


def test_host_conditions(site):
    c = Client(site, "h1")
    assert c.server("/", host="api.example") == "a"
    assert c.server("/", host="API.Example:8080") == "a"
    assert c.server("/", host="x.wild.example") == "b"
    assert c.server("/", host="wild.example") == "d"
    assert c.server("/", host="other.example") == "d"


def test_source_condition(site):
    assert Client(site, "h1", source="127.0.0.2").server("/src/x") == "b"
    assert Client(site, "h1", source="127.0.0.3").server("/src/x") == "d"


@pytest.mark.parametrize("proto", PROTOS)
def test_fixed_response_exact(site, proto):
    c = Client(site, proto)
    st, hd, body = c.get("/lb-health")
    assert (st, body) == (200, b"ok\n")
    assert hd["content-type"] == "text/plain" and hd["content-length"] == "3", hd
    st, hd, body = c.get("/tea")
    assert (st, body) == (418, b"short and stout"), (st, body)
    st, hd, body = c.get("/lb-health", method="HEAD")
    assert (st, body) == (200, b""), (st, body)
    assert c.server("/") == "d"  # the connection is still usable after our answers


def test_fixed_response_bytes_http1(site):
    c = site.hx.connect(site.http)
    c.send(b"GET /lb-health HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = c.read_until(b"ok\n", timeout=10)
    assert raw == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   b"Content-Length: 3\r\n\r\nok\n"), raw


@pytest.mark.parametrize("proto", PROTOS)
def test_redirects(site, proto):
    c = Client(site, proto)
    if proto == "h1":
        host, scheme = "example.test:8080", "http"
    else:
        host, scheme = "localhost", "https"
    bare = host.split(":")[0]
    want = {
        "/r301?q=1": (301, f"{scheme}://{host}/p301?q=1"),
        "/r302?q=1": (302, f"https://{bare}/r302?q=1"),
        "/r303?q=1": (303, "%s://other.example/r303?q=1" % scheme),
        "/r307?q=1": (307, f"{scheme}://{bare}:8443/r307?q=1"),
        "/r308?q=1": (308, f"{scheme}://{host}/moved?a=b"),
        "/rq?q=1": (301, f"{scheme}://{host}/rq"),
    }
    for path, (code, loc) in want.items():
        st, hd, body = c.get(path, host=host)
        assert (st, hd.get("location")) == (code, loc), (path, st, hd)
        assert body == b"" and hd["content-length"] == "0", (path, hd)


@pytest.mark.parametrize("proto", PROTOS)
def test_request_headers_set_and_removed(site, proto):
    c = Client(site, proto)
    # Underscore twins go too: a CGI-style backend would read x_drop as x-drop.
    st, _, body = c.get("/hdr/x", headers=[("x-drop", "1"), ("x-over", "old"),
                                           ("x-keep", "k"), ("x_drop", "2"), ("x_over", "old2"),
                                           ("x_keep", "k2")])
    assert st == 200, body
    js = json.loads(body)
    hd = js["headers"]
    assert js["server"] == "a"
    assert "x-drop" not in hd and hd["x-set"] == "yes" and hd["x-over"] == "new", hd
    assert "x_drop" not in hd and "x_over" not in hd, hd
    assert hd["x-keep"] == "k" and hd["x_keep"] == "k2", hd
    # the original target goes to the backend
    st, _, body = c.get("/hdr/./y/../z?k=1")
    assert json.loads(body)["path"] == "/hdr/./y/../z?k=1", body


HOSTILE = ["/v1/../admin", "/v1/%2e%2e/admin", "/%2E%2E/admin", "//admin", "/ADMIN",
           "/%61dmin/x", "/%2Fadmin", "/x/..%2Fadmin", "/admin%2F"]


@pytest.mark.parametrize("proto", PROTOS)
def test_hostile_paths_do_not_bypass_a_rule(site, proto):
    c = Client(site, proto)
    for path in HOSTILE:
        st, _, body = c.get(path)
        assert st in (403, 400), (path, st, body)
        if proto == "h1" and st == 400:
            c = Client(site, proto)  # our 400 may close an HTTP/1.1 connection


@pytest.mark.parametrize("proto", PROTOS)
def test_weighted_forward(site, proto):
    """75/25 over 10,000 requests: within 3 % of each share."""
    c = Client(site, proto)
    n = 10000
    seen = {"a": 0, "b": 0}
    if proto == "h1":
        # pipelined in batches on one keep-alive connection
        batch = 100
        for i in range(0, n, batch):
            c.c.send(b"".join(b"GET /w/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i + k)
                              for k in range(batch)))
            for _ in range(batch):
                r = c.c.read_response()
                assert r.status == 200, r
                seen[r.json()["server"]] += 1
    else:
        batch = 50
        for i in range(0, n, batch):
            sids = [c.c.request("GET", f"/w/{i + k}") for k in range(batch)]
            for sid in sids:
                s = c.c.wait_stream(sid)
                assert s.status == 200, s
                seen[json.loads(bytes(s.data))["server"]] += 1
    assert abs(seen["a"] - 0.75 * n) <= 0.03 * n, seen
    assert abs(seen["b"] - 0.25 * n) <= 0.03 * n, seen


@pytest.mark.parametrize("proto", PROTOS)
def test_rule_group_with_more_than_32_servers(slbd, hx, pki, proto):  # noqa: F811
    """A rule's group of 40 servers, 39 of them refusing connections: every server may be
    tried once, so the request reaches the live one, whatever the size of the listener's
    default group (1 server)."""
    live, dflt = hx.backend("live"), hx.backend("dflt")
    slbd.add_group("d", [dflt.server()], health_check=NOHC)
    dead = [{"address": "127.0.0.1", "port": h.dead_port(), "weight": 100} for _ in range(39)]
    slbd.add_group("big", dead + [live.server()], health_check=NOHC)
    rules = [{"name": "big", "match": {"path_prefix": "/big/"}, "action": {"forward": "big"}}]
    http = add_listener(slbd, "web", "d", rules=rules)
    https = https_listener(slbd, "tls", "d", upload_server(slbd, pki, "server"), rules=rules)
    site = types.SimpleNamespace(http=http, https=https, pki=pki, hx=hx)
    for i in range(4):
        assert Client(site, proto).server(f"/big/{i}") == "live"
    assert Client(site, proto).server("/other") == "dflt"


def test_sticky_keeps_a_client_on_its_group_and_server(slbd, hx):  # noqa: F811
    """With sticky sessions a weighted forward picks the group by the client address (every
    request of an address lands in one group; addresses spread over both), and a sticky
    cookie keeps its server whatever address sends it."""
    bs = {n: hx.backend(n) for n in ("a1", "a2", "b1", "b2", "d")}
    slbd.add_group("a", [bs["a1"].server(), bs["a2"].server()], health_check=NOHC)
    slbd.add_group("b", [bs["b1"].server(), bs["b2"].server()], health_check=NOHC)
    slbd.add_group("d", [bs["d"].server()], health_check=NOHC)
    port = add_listener(slbd, "web", "d", sticky={"type": "insert", "cookie": "SRVID"}, rules=[
        {"name": "split", "action": {"forward": [{"group": "a"}, {"group": "b"}]}}])
    groups = set()
    cookies = {}
    for i in range(2, 18):
        src = f"127.0.0.{i}"
        got = set()
        for k in range(3):
            r = hx.connect(port, source=src).request("GET", f"/s/{k}")
            assert r.status == 200, r
            got.add(r.json()["server"][0])
            cookies[r.json()["server"]] = r.header("Set-Cookie").split(";")[0]
        assert len(got) == 1, (src, got)
        groups |= got
    assert groups == {"a", "b"}, groups
    for server, cookie in cookies.items():
        for i in (20, 21, 22):
            r = hx.connect(port, source=f"127.0.0.{i}").request(
                "GET", "/c", headers=[("Cookie", cookie)])
            assert r.json()["server"] == server, (cookie, r.json())


@pytest.mark.parametrize("proto", PROTOS)
def test_access_log_names_the_rule(site, slbd, proto):
    set_access_log(slbd, "access.log")
    try:
        path = slbd.state_dir / "access.log"
        c = Client(site, proto)

        def lines():
            c.get("/warm")
            return [x for x in access_lines(path) if x["path"] == "/warm"]
        h.wait_until(lines, 10, "the access log to be on")
        c.get("/exact")
        c.get("/lb-health")
        c.get("/r301")
        c.get("/nothing")
        want = {"/exact": "exact", "/lb-health": "health", "/r301": "r301", "/nothing": None}
        got = h.wait_until(lambda: (x := {ln["path"]: ln["rule"] for ln in access_lines(path)
                                          if ln["path"] in want}) and len(x) == 4 and x,
                           10, "the lines")
        assert got == want, got
    finally:
        set_access_log(slbd, "")


def test_rule_counters_in_metrics_and_stats(site, slbd):
    c1, c2 = Client(site, "h1"), Client(site, "h2")
    for _ in range(3):
        c1.get("/exact")
        c2.get("/exact")
    c1.get("/lb-health")
    c2.get("/r301")
    c1.get("/nothing")

    def stats_rules(name):
        ls = [x for x in slbd.stats()["listeners"] if x["name"] == name][0]
        return {r["name"]: r["requests"] for r in ls["rules"]}

    want_web = {"exact": 3, "health": 1}
    want_tls = {"exact": 3, "r301": 1}
    h.wait_until(lambda: all(stats_rules("web")[k] == v for k, v in want_web.items()) and
                 all(stats_rules("tls")[k] == v for k, v in want_tls.items()), 10, "rule stats")
    web = stats_rules("web")
    assert [r["name"] for r in RULES] == list(web), web
    assert sum(web.values()) == 4 and sum(stats_rules("tls").values()) == 4
    r = slbd.api.request("GET", "/metrics")
    m = h.parse_metrics(r.text)
    assert m['slbd_rule_requests_total{listener="web",rule="exact"}'] == 3, m
    assert m['slbd_rule_requests_total{listener="tls",rule="r301"}'] == 1, m
    assert m['slbd_rule_requests_total{listener="web",rule="weighted"}'] == 0, m
    # a configuration change keeps the counts of a rule that stays
    st, js = slbd.api.get("/v1/listeners/web")
    js["rules"] = [x for x in js["rules"] if x["name"] != "health"]
    st, out = slbd.api.put("/v1/listeners/web", js)
    assert st == 200, out
    web = stats_rules("web")
    assert web["exact"] == 3 and "health" not in web, web


def test_slbctl_rule_commands(slbd, hx, workdir):  # noqa: F811
    from cert_util import slbctl
    for g in ("d", "a"):
        slbd.add_group(g, [hx.backend(g).server()], health_check=NOHC)
    port = add_listener(slbd, "web", "d")
    c = hx.connect(port)
    assert c.request("GET", "/x").json()["server"] == "d"
    p = slbctl(slbd, "rule", "list", "web", "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == [], p
    rule = workdir / "rule.json"
    rule.write_text(json.dumps({"name": "x", "match": {"path": "/x"}, "action": {"forward": "a"}}))
    p = slbctl(slbd, "rule", "add", "web", "--from-json", rule)
    assert p.returncode == 0, p.stderr
    assert c.request("GET", "/x").json()["server"] == "a"
    rule.write_text(json.dumps({"name": "all", "action": {"fixed_response": {"code": 200,
                                                                             "body": "all"}}}))
    p = slbctl(slbd, "rule", "add", "web", "--from-json", rule)
    assert p.returncode == 0, p.stderr
    assert c.request("GET", "/x").json()["server"] == "a"
    p = slbctl(slbd, "rule", "move", "web", "all", "--to", "1")
    assert p.returncode == 0, p.stderr
    assert c.request("GET", "/x").body == b"all"
    p = slbctl(slbd, "rule", "list", "web")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "MATCH", "ACTION"], lines
    assert lines[1].split()[0] == "all" and lines[1].split()[-2:] == ["fixed_response", "200"]
    assert lines[2].split() == ["x", '{"path":"/x"}', "forward", "a:100"], lines
    p = slbctl(slbd, "rule", "remove", "web", "all")
    assert p.returncode == 0, p.stderr
    assert c.request("GET", "/x").json()["server"] == "a"
    p = slbctl(slbd, "rule", "remove", "web", "nope")
    assert p.returncode != 0 and "no rule named 'nope'" in p.stderr, p
    p = slbctl(slbd, "rule", "list", "web", "--json")
    assert [r["name"] for r in json.loads(p.stdout)] == ["x"], p.stdout
