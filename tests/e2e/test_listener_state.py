# SPDX-License-Identifier: Apache-2.0
"""Listener status: POST /v1/listeners/{name}/stop closes the listener's socket (new
connections are refused) while a request in progress finishes, the configuration stays (and
survives a restart of slbd), and POST .../start opens the socket again; slbctl does the same."""

import socket

import pytest

import slbd_harness as h
from h2_util import NOHC
from http_util import add_listener, hx, metrics  # noqa: F401
from test_slbctl import run_cli


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=h.scaled(5)).close()
    except ConnectionRefusedError:
        return True
    return False


def status_of(slbd, name):
    lis = slbd.api.get("/v1/listeners")[1]["listeners"]
    return [x for x in lis if x["name"] == name][0]["status"]


@pytest.fixture
def web(slbd, hx):  # noqa: F811
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    return add_listener(slbd, "web", "g", max_connections=100)


def test_stop_finishes_in_flight_then_start_reopens(slbd, hx, web):  # noqa: F811
    port = web
    assert hx.connect(port).request("GET", "/").status == 200
    slow = hx.connect(port)
    slow.send(b"GET /slow/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
    h.wait_until(lambda: [x for x in slbd.stats()["listeners"] if x["name"] == "web"][0]
                 ["active"] >= 1, h.scaled(5), "the slow request in progress")
    before = slbd.api.get("/v1/listeners/web")[1]
    st, js = slbd.api.post("/v1/listeners/web/stop")
    assert st == 200 and js["status"] == "stopped", (st, js)
    # Everything but the status is kept.
    assert {k: v for k, v in js.items() if k != "status"} == \
        {k: v for k, v in before.items() if k != "status"}
    assert refused(port)
    r = slow.read_response()
    assert r.status == 200, r
    assert slow.closed(h.scaled(5))  # as for a deleted listener: no next request
    assert status_of(slbd, "web") == "stopped"
    assert metrics(slbd)['slbd_listener_up{listener="web"}'] == 0
    st = [x for x in slbd.stats()["listeners"] if x["name"] == "web"][0]
    assert st["status"] == "stopped"
    # Stopping twice is harmless; the status is stored with the configuration.
    assert slbd.api.post("/v1/listeners/web/stop")[0] == 200
    slbd.restart()
    assert status_of(slbd, "web") == "stopped"
    assert refused(port)
    st, js = slbd.api.post("/v1/listeners/web/start")
    assert st == 200 and js["status"] == "running", (st, js)
    assert hx.connect(port).request("GET", "/").status == 200
    assert metrics(slbd)['slbd_listener_up{listener="web"}'] == 1


def test_start_stop_errors(slbd, web):
    assert slbd.api.post("/v1/listeners/nope/stop")[0] == 404
    assert slbd.api.get("/v1/listeners/web/stop")[0] == 405
    assert slbd.api.post("/v1/listeners/web/pause")[0] == 404
    r = slbd.api.request("POST", "/v1/listeners/web/stop", headers={"If-Match": '"stale"'})
    assert r.status == 412, r
    assert status_of(slbd, "web") == "running"


def test_slbctl_listener_start_stop(slbd, hx, web):  # noqa: F811
    port = web
    base = ["--admin", f"http://127.0.0.1:{slbd.admin_port}", "--state-dir", slbd.state_dir]
    p = run_cli(*base, "listener", "stop", "web")
    assert p.returncode == 0 and p.stdout == "stopped listener web\n", (p.stdout, p.stderr)
    assert refused(port)
    p = run_cli(*base, "listener", "list")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].split()[-1] == "STATUS", p.stdout
    assert [ln for ln in p.stdout.splitlines() if ln.startswith("web ")][0].split()[-1] == \
        "stopped", p.stdout
    p = run_cli(*base, "listener", "start", "web")
    assert p.returncode == 0 and p.stdout == "started listener web\n", (p.stdout, p.stderr)
    assert hx.connect(port).request("GET", "/").status == 200
    p = run_cli(*base, "listener", "stop", "nope")
    assert p.returncode != 0 and "nope" in p.stderr, p.stderr
