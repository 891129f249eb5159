# SPDX-License-Identifier: Apache-2.0
"""Health checks end to end: http checks judged by status class, tcp checks, the healthy and
unhealthy thresholds, the check port and switch, and what /v1/stats and /metrics report."""

import time

import slbd_harness as h


def http_hc(uri="/health", **kw):
    return h.fast_health_check(protocol="http", uri=uri, **kw)


def test_http_check_by_status(slbd, backend):
    web = backend("web", mode="http")
    slbd.add_group("ok", [web.server()], health_check=http_hc("/health"))
    slbd.add_group("get", [web.server()], health_check=http_hc("/health", method="get"))
    slbd.add_group("bad", [web.server()], health_check=http_hc("/status/500"))
    slbd.add_group("404", [web.server()], health_check=http_hc("/status/404"))
    slbd.add_group("5xx-ok", [web.server()],
                   health_check=http_hc("/status/500", http_codes=["http_5xx"]))
    # Every server starts up; the failing ones leave after unhealthy_threshold checks.
    slbd.wait_health("bad", web.port, "down", timeout=10)
    slbd.wait_health("404", web.port, "down", timeout=10)
    assert "500" in slbd.server_stats("bad", web.port)["last_check"]
    # One more check period for everybody, then the passing ones must still be up.
    time.sleep(1.2)
    for g in ("ok", "get", "5xx-ok"):
        s = slbd.server_stats(g, web.port)
        assert s["health"] == "up" and s["last_check"] == "ok", (g, s)
    m = h.parse_metrics(slbd.api.request("GET", "/metrics").text)
    assert m[f'slbd_server_up{{group="bad",server="127.0.0.1:{web.port}"}}'] == 0
    assert m[f'slbd_server_up{{group="ok",server="127.0.0.1:{web.port}"}}'] == 1


def test_http_check_server_down_refuses_traffic(slbd, backend, clients):
    web = backend("web", mode="http")
    slbd.add_group("g", [web.server()], health_check=http_hc("/status/503"))
    port = slbd.add_tcp_listener("l", "g")
    slbd.wait_health("g", web.port, "down", timeout=10)
    # The only server is down: a new tcp connection is ended at once.
    t0 = time.monotonic()
    try:
        s = clients.connect(port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        how = h.wait_closed(s, h.scaled(2))
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    assert how in ("eof", "reset") and time.monotonic() - t0 < h.scaled(2) + 0.5
    # Fixing the check brings it back after healthy_threshold successes.
    slbd.put_group("g", [web.server()], health_check=http_hc("/health"))
    slbd.wait_health("g", web.port, "up", timeout=10)
    s = clients.connect(port)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = h.read_to_eof(s)
    assert reply.startswith(b"HTTP/1.1 200") and b'"path":"/x"' in reply, reply[:200]


def test_thresholds_honoured(slbd, backend):
    t = backend("t")
    hc = h.fast_health_check(unhealthy_threshold=3, healthy_threshold=3)
    slbd.add_group("g", [t.server()], health_check=hc)

    def last_check():
        return slbd.server_stats("g", t.port)["last_check"]

    # A few successful checks first.
    time.sleep(1.5)
    s = slbd.server_stats("g", t.port)
    assert s["health"] == "up" and s["last_check"] == "ok", s
    t.kill()
    t0 = time.monotonic()
    # The first failed check is reported while the server is still up...
    h.wait_until(lambda: last_check() != "ok", 10, "the first failed check")
    assert slbd.server_stats("g", t.port)["health"] == "up"
    # ...and only the third one takes it out: checks are 1 s apart, so >= 2 s after the kill.
    slbd.wait_health("g", t.port, "down", timeout=10)
    down_after = time.monotonic() - t0
    assert down_after >= 1.8, f"down after {down_after:.2f} s, before 3 failed checks"
    t.restart()
    t1 = time.monotonic()
    slbd.wait_health("g", t.port, "up", timeout=10)
    up_after = time.monotonic() - t1
    assert up_after >= 1.8, f"up after {up_after:.2f} s, before 3 successful checks"
    assert last_check() == "ok"


def test_check_port_and_disabled_checks(slbd, backend):
    a = backend("a")
    dead = h.dead_port()
    # The check goes to its own port: a dead one takes the (live) server out.
    slbd.add_group("other-port", [a.server()], health_check=h.fast_health_check(port=dead))
    # Disabled checks: a server on a dead port stays eligible ("up").
    slbd.add_group("unchecked", [{"address": "127.0.0.1", "port": dead}],
                   health_check=h.no_health_check())
    slbd.add_group("checked", [a.server()], health_check=h.fast_health_check())
    slbd.wait_health("other-port", a.port, "down", timeout=10)
    time.sleep(1.2)
    assert slbd.server_stats("unchecked", dead)["health"] == "up"
    assert slbd.server_stats("checked", a.port)["health"] == "up"
    # Turning checks off brings a down server back at once.
    slbd.put_group("other-port", [a.server()], health_check=h.no_health_check())
    assert slbd.server_stats("other-port", a.port)["health"] == "up"


def test_stats_shape(slbd, backend, clients):
    a = backend("a")
    slbd.add_group("g", [a.server(weight=42)], scheduler="wlc", health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    assert h.who(clients, port) == "a"
    st = slbd.stats()
    assert st["workers"] == 2 and st["generation"] >= 1
    g = st["groups"][0]
    assert g["name"] == "g" and g["scheduler"] == "wlc"
    s = g["servers"][0]
    assert (s["address"], s["port"], s["weight"], s["health"]) == ("127.0.0.1", a.port, 42, "up")
    assert s["connections"] == 1
    lis = st["listeners"][0]
    assert lis["name"] == "l" and lis["bind"] == f"127.0.0.1:{port}"
    assert lis["connections"] == 1
    h.wait_until(lambda: slbd.stats()["listeners"][0]["active"] == 0, 5,
                 "the closed connection to leave the active count")
