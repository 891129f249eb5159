# SPDX-License-Identifier: Apache-2.0
"""Health checks end to end: http checks judged by status class, tcp checks, the healthy and
unhealthy thresholds, the check port and switch, and what /v1/stats and /metrics report."""

import time

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import ConnectionEnded, add_listener, hx, metrics, rst_close  # noqa: F401


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


# --- passive checks ---


def _status_line_then_reset(conn, backend):
    """A backend whose health checks pass (a good status line) but whose answers never
    complete: after the status line, the connection is reset."""
    if conn.read_head():
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        time.sleep(0.1)  # the health check reads its line before the reset
    rst_close(conn)


def _requests_until(hx, port, pred, limit):
    """Sequential GETs until pred() holds; returns the statuses (None: connection cut)."""
    statuses = []
    for _ in range(limit):
        if pred():
            return statuses
        try:
            statuses.append(hx.get(port, "/x").status)
        except ConnectionEnded:
            statuses.append(None)
    assert pred(), f"condition not reached after {limit} requests: {statuses}"
    return statuses


@pytest.mark.timeout(90)
def test_passive_check_ejects_a_server_whose_exchanges_fail(slbd, hx):
    bad = hx.raw_backend("bad", _status_line_then_reset)
    good = hx.backend("good")
    passive = {"enabled": True, "consecutive_failures": 3, "ejection_s": 3}
    slbd.add_group("g", [bad.server(), good.server()], scheduler="rr",
                   health_check=http_hc("/health", passive=passive))
    st, js = slbd.api.get("/v1/groups/g")
    assert js["health_check"]["passive"] == {"enabled": True, "consecutive_failures": 3,
                                             "include_5xx": False, "ejection_s": 3}, js
    port = add_listener(slbd, "web", "g")
    time.sleep(1.5)  # active checks have run on both: they pass
    assert slbd.server_stats("g", bad.port)["health"] == "up"

    def ejected():
        s = slbd.server_stats("g", bad.port)
        return s["health"] == "down" and s.get("down_reason") == "passive" and s
    _requests_until(hx, port, ejected, 60)
    s = ejected()
    assert s["ejections"] == 1, s
    m = metrics(slbd)
    lbl = f'group="g",server="127.0.0.1:{bad.port}"'
    assert m[f"slbd_server_up{{{lbl}}}"] == 0
    assert m[f'slbd_server_down{{{lbl},reason="passive"}}'] == 1
    assert m[f'slbd_server_down{{{lbl},reason="active"}}'] == 0
    assert m[f"slbd_server_ejections_total{{{lbl}}}"] == 1
    # Ejected: every request goes to the healthy server, none fails.
    before = s["connections"]
    statuses = [hx.get(port, "/x").status for _ in range(20)]
    assert statuses == [200] * 20, statuses
    assert slbd.server_stats("g", bad.port)["connections"] == before
    # After the back-off it is back (its active checks pass), and the next run of failures
    # ejects it again.
    slbd.wait_health("g", bad.port, "up", timeout=8)
    _requests_until(hx, port, lambda: slbd.server_stats("g", bad.port)["ejections"] == 2, 60)


def test_passive_check_validation_and_default(slbd):
    st, js = slbd.api.post("/v1/groups", {"name": "d", "servers": []})
    assert st == 201 and js["health_check"]["passive"] == {
        "enabled": False, "consecutive_failures": 5, "include_5xx": False, "ejection_s": 30}, js
    for bad in ({"consecutive_failures": 0}, {"ejection_s": 0}, {"ejection_s": 3601},
                {"include_5xx": "yes"}, {"bogus": 1}):
        st, js = slbd.api.post("/v1/groups", {"name": "v", "servers": [],
                                              "health_check": {"passive": bad}})
        assert st == 400 and "health_check.passive" in js["error"]["message"] + str(
            js["error"].get("where", "")), (bad, st, js)


def test_passive_check_does_not_blame_servers_for_slow_clients(slbd, hx):
    """A request timeout caused by a client that trickles its upload is no verdict on the
    server, even with consecutive_failures 1."""
    good = hx.backend("good")
    passive = {"enabled": True, "consecutive_failures": 1}
    slbd.add_group("g", [good.server()], health_check=http_hc("/health", passive=passive))
    port = add_listener(slbd, "web", "g", request_timeout_s=1)
    c = hx.connect(port)
    c.sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
    assert hu.status_of(c.sock.recv(4096)) == 504
    s = slbd.server_stats("g", good.port)
    assert s["health"] == "up" and s["ejections"] == 0, s
    assert hx.get(port, "/x").status == 200
