# SPDX-License-Identifier: Apache-2.0
"""The connection cap: with a low open-file limit, slbd stops accepting before it runs out of
descriptors. Clients beyond the cap wait in the listen backlog (no 503, no reset), the admin
API keeps answering, the log stays short, and the waiting clients are served once
connections close; they are counted as refused with reason fd_limit."""

import selectors
import socket
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import add_listener, hx, listener_stats, metrics  # noqa: F401

NOFILE = 256
EXTRA = 64  # clients beyond the cap


def _collect(socks, answers, ended, seconds):
    """Read what arrives on socks for `seconds`: the first bytes of each answered socket go to
    answers, sockets that were closed or reset go to ended."""
    sel = selectors.DefaultSelector()
    for s in socks:
        if s not in answers and s not in ended:
            sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    try:
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                sel.unregister(s)
                if data:
                    answers[s] = data
                else:
                    ended.add(s)
    finally:
        sel.close()


@pytest.mark.slbd(nofile=NOFILE)
@pytest.mark.timeout(90)
def test_clients_beyond_the_cap_wait_in_the_backlog(slbd, hx):
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=h.no_health_check())
    port = add_listener(slbd, "web", "g", idle_timeout_s=600, header_timeout_s=600)
    cap = slbd.stats()["connection_cap"]
    # Two descriptors per connection after a reserve of max(64, 5 %).
    assert cap == (NOFILE - 64) // 2, cap
    socks, err = hu.open_many(port, cap + EXTRA)
    assert err is None, err
    try:
        for s in socks:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        answers, ended = {}, set()
        deadline = time.monotonic() + h.scaled(15)
        while len(answers) + len(ended) < cap and time.monotonic() < deadline:
            _collect(socks, answers, ended, 0.5)
        _collect(socks, answers, ended, 1.0)  # nobody else is answered or cut
        statuses = sorted(hu.status_of(d) for d in answers.values())
        assert not ended, f"{len(ended)} clients were closed or reset"
        assert statuses == [200] * cap, (len(statuses), set(statuses))
        # The admin API answers while the workers hold the cap.
        st = listener_stats(slbd, "web")
        assert st["active"] == cap, st
        m = metrics(slbd)
        assert m["slbd_connection_cap"] == cap
        # Served clients close: the waiting ones are accepted and served.
        waiting = [s for s in socks if s not in answers]
        assert len(waiting) == EXTRA
        for s in answers:
            s.close()
        later, ended = {}, set()
        deadline = time.monotonic() + h.scaled(15)
        while len(later) + len(ended) < EXTRA and time.monotonic() < deadline:
            _collect(waiting, later, ended, 0.5)
        assert not ended, f"{len(ended)} waiting clients were closed or reset"
        assert sorted(hu.status_of(d) for d in later.values()) == [200] * EXTRA
        st = listener_stats(slbd, "web")
        assert st["refused_by_reason"] == {"max_connections": 0, "fd_limit": EXTRA}, st
        m = metrics(slbd)
        assert m['slbd_listener_connections_refused_total{listener="web",reason="fd_limit"}'] \
            == EXTRA
        assert hu.simple_get(port) == 200
    finally:
        hu.close_all(socks)
    h.wait_until(lambda: listener_stats(slbd, "web")["active"] == 0, 10, "clients to close")
    log = slbd.log_text().splitlines()
    assert len(log) < 25, "\n".join(log[-40:])
    assert not [ln for ln in log if "Too many open files" in ln], "\n".join(log[-40:])


@pytest.mark.slbd(nofile=NOFILE)
@pytest.mark.timeout(90)
def test_idle_pooled_backend_connections_make_room(slbd, hx):
    """Kept-alive backend connections whose clients have gone hold descriptors too: a worker
    keeps its clients plus its pooled connections within its share of the cap, closing idle
    pooled ones for new backend connections, so clients are served rather than answered 503
    when pooled connections to other servers pile up."""
    slow = [hx.backend(f"slow{i}", delay_ms=500) for i in range(3)]
    other = hx.backend("other")
    ports = []
    for i, b in enumerate(slow + [other]):
        slbd.add_group(f"g{i}", [b.server()], health_check=h.no_health_check())
        ports.append(add_listener(slbd, f"l{i}", f"g{i}", idle_timeout_s=600,
                                  header_timeout_s=600))
    cap = slbd.stats()["connection_cap"]
    n = cap // 2  # well below every worker's share, however the kernel spreads them

    def burst(port):
        socks, err = hu.open_many(port, n)
        assert err is None, err
        for s in socks:
            s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
        answers, ended = {}, set()
        deadline = time.monotonic() + h.scaled(20)
        while len(answers) + len(ended) < n and time.monotonic() < deadline:
            _collect(socks, answers, ended, 0.5)
        return socks, sorted(hu.status_of(d) for d in answers.values()), ended

    # n slow requests at once to each of three servers: n backend connections each, which
    # would stay pooled after their clients leave.
    for port in ports[:3]:
        socks, statuses, ended = burst(port)
        hu.close_all(socks)
        assert statuses == [200] * n and not ended, (len(statuses), set(statuses), len(ended))
    # n clients of a fourth server, held: with 3n pooled connections, n clients and n backend
    # connections, slbd would need more descriptors than its limit gives.
    assert n * 5 + 30 > NOFILE
    socks, statuses, ended = burst(ports[3])
    try:
        assert not ended, f"{len(ended)} clients were closed or reset"
        assert statuses == [200] * n, (len(statuses), sorted(set(statuses)))
    finally:
        hu.close_all(socks)
