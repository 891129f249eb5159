# SPDX-License-Identifier: Apache-2.0
"""The admin API's lists at scale: ?limit=N&after=KEY pages walk a collection in key order,
each item exactly once, even while it changes; filters (certificate type, expiry and users,
listener protocol and group, group scheduler, key scope); unknown parameters and bad values
are refused with 400; without paging parameters a list answers everything, as before."""

import urllib.parse

import slbd_harness as h
import cert_util as cu
from pki import pki, upload_ca, upload_server  # noqa: F401


def walk(slbd, path, key, limit, id_of=lambda v: v["id"], extra=""):
    """Every page of path; returns (items, number of requests). Each page but the last says
    "next", the last item of that page."""
    items, after, pages = [], None, 0
    while True:
        q = f"limit={limit}{extra}" + (f"&after={urllib.parse.quote(after, safe='')}"
                                       if after else "")
        st, js = slbd.api.get(f"{path}?{q}")
        assert st == 200, (st, js)
        pages += 1
        page = js[key]
        assert len(page) <= limit
        items += page
        if "next" not in js:
            return items, pages
        assert len(page) == limit and js["next"] == id_of(page[-1]), js.get("next")
        after = js["next"]


def upload_many(slbd, pki, n, prefix="c"):
    """n server certificates with ids prefix000.. (one key pair: uploads are what is timed)."""
    body = {"type": "server", "certificate": pki.chain("server"), "private_key": pki.key("server")}
    ids = []
    for i in range(n):
        cid = f"{prefix}{i:03d}"
        st, js = slbd.api.post("/v1/certificates", {**body, "id": cid, "name": cid})
        assert st == 201, (st, js)
        ids.append(cid)
    return ids


def test_certificate_pages_walk_every_certificate_once(slbd, pki):
    ids = upload_many(slbd, pki, 250)
    ids += [upload_ca(slbd, pki, "root", cert_id="ca-root")]
    items, pages = walk(slbd, "/v1/certificates", "certificates", 37)
    got = [c["id"] for c in items]
    assert got == sorted(ids) and len(set(got)) == len(ids), got
    assert pages == (len(ids) + 36) // 37
    # Pages carry the same resources as the whole list (which is answered without paging).
    st, whole = slbd.api.get("/v1/certificates")
    assert st == 200 and "next" not in whole and len(whole["certificates"]) == len(ids)
    assert {c["id"]: c for c in whole["certificates"]} == {c["id"]: c for c in items}
    # One page holds everything: no next.
    st, js = slbd.api.get("/v1/certificates?limit=1000")
    assert st == 200 and len(js["certificates"]) == len(ids) and "next" not in js

    # The cursor is a key: what changes before it does not shift the walk, what is added after
    # it is seen, what is removed after it is not.
    st, first = slbd.api.get("/v1/certificates?limit=100")
    assert st == 200 and first["next"] == "c099"
    upload_many(slbd, pki, 1, prefix="a-new")  # before the cursor
    upload_many(slbd, pki, 1, prefix="z-new")  # after it
    assert slbd.api.delete("/v1/certificates/c050")[0] == 204  # before it
    assert slbd.api.delete("/v1/certificates/c150")[0] == 204  # after it
    rest, after = [], first["next"]
    while after:
        st, js = slbd.api.get(f"/v1/certificates?limit=100&after={after}")
        assert st == 200
        rest += [c["id"] for c in js["certificates"]]
        after = js.get("next")
    expect = [i for i in sorted(ids + ["z-new000"]) if i > "c099" and i != "c150"]
    assert rest == expect


def test_certificate_filters(slbd, pki, backend):
    upload_many(slbd, pki, 12)
    ca = upload_ca(slbd, pki, "root", cert_id="ca-root")
    cu.issue_server(pki, "soon", days=10)
    soon = upload_server(slbd, pki, "soon", cert_id="soon")
    slbd.add_group("g", [backend("b").server()], health_check=h.no_health_check())
    cu.add_https_listener(slbd, "web", "g", ["c003", "c007", "soon"])
    cu.add_https_listener(slbd, "mtls", "g", ["c001"], client_ca=ca, client_auth="required")

    def ids(q):
        st, js = slbd.api.get(f"/v1/certificates?{q}")
        assert st == 200, (q, st, js)
        return [c["id"] for c in js["certificates"]]

    assert ids("type=ca") == [ca]
    assert sorted(ids("type=server")) == sorted([f"c{i:03d}" for i in range(12)] + [soon])
    assert ids("expiring_within_days=30") == [soon]
    assert ids("expiring_within_days=0") == []
    assert len(ids("expiring_within_days=36500")) == 14
    assert sorted(ids("used_by=web")) == ["c003", "c007", "soon"]
    assert sorted(ids("used_by=mtls")) == ["c001", ca]
    assert ids("used_by=mtls&type=ca") == [ca]
    assert ids("used_by=nobody") == []
    # Filters and pages together: the filter applies before the page is cut.
    items, pages = walk(slbd, "/v1/certificates", "certificates", 2, extra="&used_by=web")
    assert [c["id"] for c in items] == ["c003", "c007", "soon"] and pages == 2


def expect_error(slbd, path, status, code, where=None):
    r = slbd.api.request("GET", path)
    assert r.status == status and r.error_code() == code, (path, r)
    assert r.json["error"]["message"], r
    if where is not None:
        assert r.json["error"]["where"] == where, r


def test_list_parameters_are_checked(slbd, backend):
    slbd.add_group("g", [backend("b").server()], health_check=h.no_health_check())
    lists = ["/v1/certificates", "/v1/listeners", "/v1/groups", "/v1/groups/g/servers",
             "/v1/keys"]
    for path in lists:
        expect_error(slbd, f"{path}?limitt=5", 400, "unknown_parameter", "limitt")
        expect_error(slbd, f"{path}?limit=5&bogus", 400, "unknown_parameter", "bogus")
        for bad in ("limit=0", "limit=1001", "limit=abc", "limit=5&limit=6", "limit=",
                    "limit=-1", "limit", "after=", "after"):
            expect_error(slbd, f"{path}?{bad}", 400, "invalid_value",
                         bad.split("=")[0].split("&")[0])
        # Filters of another list are unknown here.
        expect_error(slbd, f"{path}?nope_filter=1", 400, "unknown_parameter")
    for bad in ("type=leaf", "type=", "expiring_within_days=-1", "expiring_within_days=x",
                "expiring_within_days=36501", "used_by="):
        expect_error(slbd, f"/v1/certificates?{bad}", 400, "invalid_value", bad.split("=")[0])
    expect_error(slbd, "/v1/listeners?protocol=udp", 400, "invalid_value", "protocol")
    expect_error(slbd, "/v1/groups?scheduler=random", 400, "invalid_value", "scheduler")
    expect_error(slbd, "/v1/keys?scope=root", 400, "invalid_value", "scope")
    # Paging parameters belong to lists: elsewhere they are unknown, as before.
    expect_error(slbd, "/v1/groups/g?limit=5", 400, "unknown_parameter", "limit")
    r = slbd.api.request("POST", "/v1/groups?limit=5", {"name": "x", "servers": []})
    assert r.status == 400 and r.error_code() == "unknown_parameter", r


def test_listeners_groups_servers_keys_pages(slbd, backend):
    b = backend("b")
    servers = [{"address": f"127.0.{i // 200}.{i % 200 + 1}", "port": 9000 + i, "weight": 1}
               for i in range(30)]
    schedulers = ["wrr", "rr", "wlc", "sch", "tch"]
    for i in range(10):
        slbd.add_group(f"g{i:02d}", servers if i == 0 else [b.server()],
                       scheduler=schedulers[i % 5], health_check=h.no_health_check())
    for i in range(9):
        slbd.add_tcp_listener(f"l{i:02d}", f"g{i % 3:02d}")
    for i in range(7):
        st, js = slbd.api.post("/v1/keys", {"name": f"k{i}", "scope": ["read", "admin"][i % 2]})
        assert st == 201, js

    name = lambda v: v["name"]  # noqa: E731
    items, _ = walk(slbd, "/v1/groups", "groups", 3, id_of=name)
    assert [g["name"] for g in items] == [f"g{i:02d}" for i in range(10)]
    items, _ = walk(slbd, "/v1/groups", "groups", 1, id_of=name, extra="&scheduler=tch")
    assert [g["name"] for g in items] == ["g04", "g09"]
    items, _ = walk(slbd, "/v1/listeners", "listeners", 4, id_of=name)
    assert [v["name"] for v in items] == [f"l{i:02d}" for i in range(9)]
    items, _ = walk(slbd, "/v1/listeners", "listeners", 2, id_of=name,
                    extra="&backend_group=g01&protocol=tcp")
    assert [v["name"] for v in items] == ["l01", "l04", "l07"]
    st, js = slbd.api.get("/v1/listeners?protocol=https")
    assert st == 200 and js == {"listeners": []}
    key = lambda s: f"{s['address']}:{s['port']}"  # noqa: E731
    items, pages = walk(slbd, "/v1/groups/g00/servers", "servers", 7, id_of=key)
    assert sorted(map(key, items)) == sorted(map(key, servers)) and pages == 5
    assert [key(s) for s in items] == sorted(map(key, items))
    items, _ = walk(slbd, "/v1/keys", "keys", 2, id_of=name, extra="&scope=admin")
    assert [k["name"] for k in items] == ["k1", "k3", "k5"]
    # Without paging parameters: everything, in the stored order, as before.
    st, js = slbd.api.get("/v1/groups/g00/servers")
    assert st == 200 and js == {"servers": servers}
