# SPDX-License-Identifier: Apache-2.0
"""GET /v1/config: the whole stored document with its ETag."""

import pytest

import slbd_harness as h


@pytest.fixture
def site(slbd, backend):
    """Two groups (one with a dead server) and four tcp listeners, three of them with names of
    the full 63 characters."""
    a = backend("a")
    slbd.add_group("web-frontend-backends-production", [a.server()],
                   health_check=h.no_health_check())
    slbd.add_group("broken", [{"address": "127.0.0.1", "port": h.dead_port(), "weight": 100}],
                   health_check=h.fast_health_check())
    names = [f"listener-{i}-" + "x" * 52 for i in range(3)]
    ports = [slbd.add_tcp_listener(n, "web-frontend-backends-production") for n in names]
    names.append("raw")
    ports.append(slbd.add_tcp_listener("raw", "broken"))
    assert all(len(n) == 63 for n in names[:3])
    return names, ports


def test_get_config_answers_the_whole_document_with_its_etag(slbd, site):
    r = slbd.api.request("GET", "/v1/config")
    assert r.status == 200, r
    assert set(r.json) == {"listeners", "groups", "settings"}
    assert {x["name"] for x in r.json["listeners"]} == set(site[0])
    assert r.json["groups"] == slbd.api.get("/v1/groups")[1]["groups"]
    assert r.json["settings"] == slbd.api.get("/v1/settings")[1]
    etag = r.headers["ETag"]
    # The same ETag POST /v1/apply checks: a write against it passes, a stale one is refused.
    body = {"settings": dict(r.json["settings"], drain_timeout_s=7)}
    r2 = slbd.api.request("POST", "/v1/apply", body, headers={"If-Match": etag})
    assert r2.status == 200 and r2.headers["ETag"] != etag, r2
    r3 = slbd.api.request("POST", "/v1/apply", body, headers={"If-Match": etag})
    assert r3.status == 412, r3
    assert slbd.api.request("GET", "/v1/config").headers["ETag"] == r2.headers["ETag"]
    assert slbd.api.request("PUT", "/v1/config", {}).status == 405
    assert slbd.api.request("GET", "/v1/config?x=1").status == 400
