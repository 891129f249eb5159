# SPDX-License-Identifier: Apache-2.0
"""Observability end to end: /metrics is valid exposition text (strictly parsed), counters never
go backwards or lose traffic across configuration changes, handshake failures are counted by
reason, requests by status class, full vs resumed handshakes, the per-server response
histogram, certificate expiry, connection rates, /v1/stats agreeing with /metrics, and
`slbctl stats`."""

import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import promparse
import scale_certs as sc
import slbd_harness as h
from http_util import (HttpConn, Scripted, add_listener, hx, put_listener,  # noqa: F401
                       rst_close)
from metering_util import (ConnectionBurst, CountingSocket, MeteredTls, listener_stats,
                           monotonic_series, request_bytes, scrape, settle, slbctl,
                           tls_attempt, tls_client_context, tls_request, wait_metric,
                           went_backwards)
from pki import pki, tls_block, upload_ca, upload_crl, upload_server  # noqa: F401

NOHC = h.no_health_check()
DEFAULT_POLICY = "tls_cipher_policy_1_2_strict_with_1_3"
FAIL_REASONS = ("no_shared_cipher", "unknown_ca", "cert_expired", "no_client_cert",
                "cert_revoked", "cert_not_yet_valid", "cert_key_usage", "protocol_version",
                "bad_sni", "no_application_protocol", "http_on_https", "timeout", "other")
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
SERVER_FAIL_REASONS = ("connect_refused", "connect_timeout", "connect_error", "reset", "closed",
                       "timeout", "invalid_response", "status_5xx")


class Stack:
    """Two http backends (group g), a tcp echo backend (group gt), the server certificate and
    three listeners: web (http), tls (https), raw (tcp)."""

    def __init__(self, slbd, hx, backend, pki):  # noqa: F811
        self.slbd, self.hx, self.pki = slbd, hx, pki
        self.a, self.b = hx.backend("a"), hx.backend("b")
        self.t = backend("t", mode="tcp")
        slbd.add_group("g", [self.a.server(), self.b.server()], health_check=NOHC)
        slbd.add_group("gt", [self.t.server()], health_check=NOHC)
        self.cert = upload_server(slbd, pki, "server")
        self.web = add_listener(slbd, "web", "g")
        self.tls = add_listener(slbd, "tls", "g", protocol="https",
                                tls=self.tls_cfg(DEFAULT_POLICY), idle_timeout_s=60)
        self.raw = slbd.add_tcp_listener("raw", "gt")
        self.ctx = tls_client_context(pki)

    def tls_cfg(self, policy):
        return tls_block([self.cert], policy=policy)

    def traffic(self):
        """A little of everything: two http requests, one https request, one tcp echo."""
        for target in ("/", "/status/404"):
            r = self.hx.get(self.web, target)
            assert r.status in (200, 404), r
        c, r = tls_request(self.tls, self.ctx, "/", track=self.hx.track)
        assert r.status == 200, r
        s = self.slbd.clients.connect(self.raw)
        h.echo_roundtrip(s, b"metrics\n" * 10)
        s.close()


@pytest.fixture
def stack(slbd, hx, backend, pki):  # noqa: F811
    return Stack(slbd, hx, backend, pki)


def server_label(b):
    return f"{b.address}:{b.port}"


def sample_map(doc, name, label):
    """{label value: sample value} of one family, keyed by one label."""
    return {s.labels[label]: s.value for s in doc.select(name)}


def listener_labels(doc, name):
    return {s.labels["listener"] for s in doc.select(name)}


# --------------------------------------------------------------------------------------------
# The parser itself: it must reject what it promises to reject
# --------------------------------------------------------------------------------------------

GOOD = (
    '# HELP c_total Things.\n# TYPE c_total counter\nc_total{a="x\\"y\\\\z\\n"} 1\n'
    'c_total{a="b"} 2.5e3\n'
    '# TYPE g gauge\ng -Inf\ng{w="1s"} NaN 1700000000000\n'
    '# TYPE h histogram\nh_bucket{le="0.1"} 1\nh_bucket{le="1"} 3\nh_bucket{le="+Inf"} 3\n'
    'h_sum 0.7\nh_count 3\n'
)

BAD = {
    "no trailing newline": GOOD[:-1],
    "sample without TYPE": GOOD + "orphan 1\n",
    "counter not *_total": "# TYPE c counter\nc 1\n",
    "duplicate series": GOOD.replace('c_total{a="b"} 2.5e3\n',
                                     'c_total{a="b"} 2.5e3\nc_total{a="b"} 4\n'),
    "label order duplicate": '# TYPE d gauge\nd{a="1",b="2"} 1\nd{b="2",a="1"} 1\n',
    "bad escape": '# TYPE d gauge\nd{a="\\t"} 1\n',
    "unterminated label": '# TYPE d gauge\nd{a="x} 1\n',
    "bad metric name": "# TYPE 1d gauge\n1d 1\n",
    "bad label name": '# TYPE d gauge\nd{1a="x"} 1\n',
    "reserved label": '# TYPE d gauge\nd{__a="x"} 1\n',
    "bad value": "# TYPE d gauge\nd one\n",
    "bad timestamp": "# TYPE d gauge\nd 1 2.5\n",
    "unknown type": "# TYPE d meter\nd 1\n",
    "second TYPE": "# TYPE d gauge\n# TYPE d gauge\nd 1\n",
    "HELP after samples": "# TYPE d gauge\nd 1\n# TYPE e gauge\ne 1\n# HELP d late\n",
    "untyped then TYPE": "# TYPE d gauge\nd 1\ne 1\n# TYPE e gauge\n",
    "HELP twice": "# HELP d a\n# HELP d b\n# TYPE d gauge\nd 1\n",
    "family overlap": "# TYPE h histogram\n# TYPE h_count gauge\nh_count 1\n",
    "split family": "# TYPE d gauge\n# TYPE e gauge\nd 1\ne 1\nd{x=\"1\"} 2\n",
    "negative counter": "# TYPE c_total counter\nc_total -1\n",
    "le not ascending": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="0.5"} 1\n'
                        'h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
    "buckets not cumulative": '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\n'
                              'h_sum 1\nh_count 1\n',
    "+Inf != count": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\n'
                     'h_sum 1\nh_count 3\n',
    "no +Inf bucket": '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n',
    "no _count": '# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 1\n',
    "bucket without le": '# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n',
    "histogram sample under its own name": '# TYPE h histogram\nh 1\n',
    "blank before value missing": '# TYPE d gauge\nd{a="1"}1\n',
    "carriage return": "# TYPE d gauge\r\nd 1\r\n",
}


def test_promparse_accepts_valid_text():
    doc = promparse.parse(GOOD)
    assert doc.value("c_total", a='x"y\\z\n') == 1
    assert doc.value("c_total", a="b") == 2500
    assert doc.family("c_total").help == "Things."
    assert doc.value("g") == -math.inf and math.isnan(doc.value("g", w="1s"))
    assert doc.family("h").type == "histogram" and doc.value("h_count") == 3


@pytest.mark.parametrize("why", sorted(BAD))
def test_promparse_rejects(why):
    with pytest.raises(promparse.ParseError):
        promparse.parse(BAD[why])


# --------------------------------------------------------------------------------------------
# /metrics as a whole
# --------------------------------------------------------------------------------------------

FAMILIES = {
    "slbd_config_generation": "gauge",
    "slbd_workers": "gauge",
    "slbd_listener_connections_total": "counter",
    "slbd_listener_connections_active": "gauge",
    "slbd_listener_new_connections_per_second": "gauge",
    "slbd_listener_bytes_total": "counter",
    "slbd_listener_requests_total": "counter",
    "slbd_listener_handshakes_total": "counter",
    "slbd_listener_handshake_failures_total": "counter",
    "slbd_server_connections_total": "counter",
    "slbd_server_connections_active": "gauge",
    "slbd_server_requests_total": "counter",
    "slbd_server_up": "gauge",
    "slbd_server_response_seconds": "histogram",
    "slbd_certificate_expiry_seconds": "gauge",
}


def test_metrics_parse_strictly_with_traffic(slbd, stack):
    for _ in range(3):
        stack.traffic()
    for name in ("web", "tls", "raw"):
        settle(slbd, name)
    doc = scrape(slbd)  # raises on any violation of the format
    for name, type_ in FAMILIES.items():
        fam = doc.family(name)
        assert fam is not None, f"family {name} missing from /metrics"
        assert fam.type == type_, f"{name} is a {fam.type}, expected {type_}"
        assert fam.help, f"{name} has no HELP text"
    # tcp listeners time their backend connects too: one per proxied connection.
    assert doc.value("slbd_server_connect_seconds_count", group="gt",
                     server=server_label(stack.t)) == 3
    # slbd's own families, and the standard process_* ones.
    assert all(n.startswith(("slbd_", "process_")) for n in doc.families), sorted(doc.families)
    # Every listener has its four byte counters; the protocol decides the rest.
    for lis in ("web", "tls", "raw"):
        for d in ("in", "out"):
            for k in ("payload", "wire"):
                v = doc.value("slbd_listener_bytes_total", listener=lis, direction=d, kind=k)
                assert v > 0, (lis, d, k, v)
        # hx.get uses one connection per request: web saw two per round.
        assert doc.value("slbd_listener_connections_total", listener=lis) == \
            (6 if lis == "web" else 3)
        assert doc.value("slbd_listener_connections_active", listener=lis) == 0
        for w in ("1s", "60s"):
            assert doc.get("slbd_listener_new_connections_per_second", listener=lis,
                           window=w) is not None
    assert listener_labels(doc, "slbd_listener_requests_total") == {"web", "tls"}
    assert listener_labels(doc, "slbd_listener_handshakes_total") == {"tls"}
    assert listener_labels(doc, "slbd_listener_handshake_failures_total") == {"tls"}
    assert set(sample_map(doc, "slbd_listener_handshake_failures_total", "reason")) == \
        set(FAIL_REASONS)
    web = {s.labels["class"]: s.value for s in doc.select("slbd_listener_requests_total",
                                                           listener="web")}
    assert web == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 3, "5xx": 0}, web
    assert doc.value("slbd_listener_handshakes_total", listener="tls", type="full") == 3
    # tcp listeners carry bytes unchanged: payload and wire are the same numbers.
    for d in ("in", "out"):
        assert doc.value("slbd_listener_bytes_total", listener="raw", direction=d,
                         kind="payload") == doc.value("slbd_listener_bytes_total",
                                                      listener="raw", direction=d, kind="wire")
    servers = {(s.labels["group"], s.labels["server"])
               for s in doc.select("slbd_server_up")}
    assert servers == {("g", server_label(stack.a)), ("g", server_label(stack.b)),
                       ("gt", server_label(stack.t))}, servers
    assert doc.value("slbd_workers") == slbd.workers


# --------------------------------------------------------------------------------------------
# Counters across configuration changes
# --------------------------------------------------------------------------------------------

CHANGES = [
    ("weights", 30, 70), ("add_extra",), ("policy", "tls_cipher_policy_1_2"),
    ("weights", 100, 0), ("remove_extra",), ("policy", "tls_cipher_policy_1_2_strict"),
    ("tcp_weight", 50), ("add_extra",), ("weights", 0, 100), ("policy", "tls_cipher_policy_1_1"),
    ("remove_extra",), ("weights", 50, 50), ("policy", DEFAULT_POLICY), ("tcp_weight", 100),
    ("add_extra",), ("weights", 1, 99), ("remove_extra",), ("policy", "tls_cipher_policy_1_0"),
    ("weights", 100, 100), ("policy", DEFAULT_POLICY),
]


@pytest.mark.timeout(90)
def test_counters_never_go_backwards_across_changes(slbd, hx, stack):
    """20 changes (weights, a listener added and removed, the https listener replaced with
    another policy) with traffic in between: no counter series present in two consecutive
    snapshots decreases, and in the end the listeners' byte counters hold exactly what the
    clients' sockets carried, including a kept-alive https connection that outlived them
    all."""
    assert len(CHANGES) == 20
    web_sent = web_recv = raw_sent = raw_recv = 0
    tls_wire = {"in": 0, "out": 0}
    tls_payload = {"in": 0, "out": 0}
    keep = MeteredTls.connect(stack.tls, stack.ctx, track=hx.track)
    keep_conn = HttpConn(keep)
    extra_port = None
    first = prev = monotonic_series(scrape(slbd))
    for i, change in enumerate(CHANGES):
        kind = change[0]
        if kind == "weights":
            slbd.put_group("g", [stack.a.server(change[1]), stack.b.server(change[2])],
                           health_check=NOHC)
        elif kind == "tcp_weight":
            slbd.put_group("gt", [stack.t.server(change[1])], health_check=NOHC)
        elif kind == "add_extra":
            extra_port = add_listener(slbd, "extra", "g")
        elif kind == "remove_extra":
            st, js = slbd.api.delete("/v1/listeners/extra")
            assert st == 204, (st, js)
            extra_port = None
        elif kind == "policy":
            put_listener(slbd, "tls", {"name": "tls", "protocol": "https",
                                       "bind": f"127.0.0.1:{stack.tls}", "backend_group": "g",
                                       "idle_timeout_s": 60, "tls": stack.tls_cfg(change[1])})
        # Traffic under the new configuration, metered on the client side.
        c = CountingSocket(hx.socket(stack.web))
        conn = HttpConn(c)
        conn.send(request_bytes("GET", f"/change/{i}"))
        assert conn.read_response().status == 200
        conn.send(request_bytes("GET", "/bytes/100", close=True))
        assert conn.read_response().status == 200
        assert conn.read_to_eof() == b""
        c.close()
        web_sent, web_recv = web_sent + c.sent, web_recv + c.received
        t, r = tls_request(stack.tls, stack.ctx, f"/tls/{i}", b"x" * i, track=hx.track)
        assert r.status == 200, r
        for d in ("in", "out"):
            tls_wire[d] += t.wire()[d]
            tls_payload[d] += t.payload()[d]
        keep_conn.send(request_bytes("GET", f"/keep/{i}"))
        assert keep_conn.read_response().status == 200
        s = CountingSocket(slbd.clients.connect(stack.raw))
        s.sendall(b"r" * (100 + i))
        s.shutdown_write()
        assert len(s.read_to_eof()) == 100 + i
        s.close()
        raw_sent, raw_recv = raw_sent + s.sent, raw_recv + s.received
        if extra_port:
            assert hx.get(extra_port, "/extra").status == 200
        now = monotonic_series(scrape(slbd))
        back = went_backwards(prev, now)
        assert not back, f"after change {i} {change}: counters went backwards: {back[:10]}"
        prev = now
    back = went_backwards(first, prev)
    assert not back, f"first vs last snapshot: counters went backwards: {back[:10]}"
    keep.shutdown()
    keep.close()
    for d in ("in", "out"):
        tls_wire[d] += keep.wire()[d]
        tls_payload[d] += keep.payload()[d]
    web = settle(slbd, "web")
    assert (web["wire_bytes"], web["payload_bytes"]) == (
        {"in": web_sent, "out": web_recv}, {"in": web_sent, "out": web_recv}), web
    raw = settle(slbd, "raw")
    assert (raw["wire_bytes"], raw["payload_bytes"]) == (
        {"in": raw_sent, "out": raw_recv}, {"in": raw_sent, "out": raw_recv}), raw
    tls = settle(slbd, "tls")
    assert tls["payload_bytes"] == tls_payload, (tls, tls_payload)
    assert tls["wire_bytes"] == tls_wire, (tls, tls_wire)
    assert tls["connections"] == 21 and tls["requests"]["2xx"] == 40, tls


# --------------------------------------------------------------------------------------------
# Handshakes
# --------------------------------------------------------------------------------------------


def hs_counts(doc, listener):
    fails = {s.labels["reason"]: s.value
             for s in doc.select("slbd_listener_handshake_failures_total", listener=listener)}
    done = {s.labels["type"]: s.value
            for s in doc.select("slbd_listener_handshakes_total", listener=listener)}
    return fails, done


def leaf_only_context(pki, name):  # noqa: F811
    """A client presenting just the leaf certificate name (no intermediate)."""
    ctx = tls_client_context(pki)
    ctx.load_cert_chain(str(pki.path(f"{name}.pem")), str(pki.path(f"{name}.key")))
    return ctx


def alpn_context(pki, protocols):  # noqa: F811
    """A client with a good certificate offering only the given ALPN protocols."""
    ctx = tls_client_context(pki, cert="client")
    ctx.set_alpn_protocols(protocols)
    return ctx


def half_handshake(port, hx, pki):  # noqa: F811
    """Send a ClientHello, read slbd's answer and then go quiet; returns how long slbd took
    to close the connection."""
    c = MeteredTls.connect(port, tls_client_context(pki), track=hx.track, handshake=False)
    c.handshake_step()
    t0 = time.monotonic()
    c.drain_socket()
    took = time.monotonic() - t0
    c.close()
    assert c.received > 0, "slbd did not answer the ClientHello"
    return took


def test_handshake_failures_by_reason(slbd, hx, pki):  # noqa: F811
    """Each failure increments exactly its own reason (and no completed-handshake counter):
    no client certificate, one from another CA, an expired one, TLS 1.1 only, no ECDHE
    suite, ALPN with no protocol in common, a handshake left half done until header_timeout_s,
    and a revoked certificate."""
    a = hx.backend("a")
    slbd.add_group("g", [a.server()], health_check=NOHC)
    cert = upload_server(slbd, pki, "server")
    ca = upload_ca(slbd, pki, "inter")
    port = add_listener(slbd, "mtls", "g", protocol="https", header_timeout_s=1,
                        tls=tls_block([cert], client_ca=ca, client_auth="required"))
    good = tls_client_context(pki, cert="client")
    assert tls_attempt(port, good) == "ok"  # the positive control
    cases = [
        ("no_client_cert", lambda: tls_attempt(port, tls_client_context(pki))),
        ("unknown_ca", lambda: tls_attempt(port, leaf_only_context(pki, "wrong-client"))),
        ("cert_expired", lambda: tls_attempt(port, tls_client_context(pki,
                                                                      cert="client-expired"))),
        ("protocol_version", lambda: tls_attempt(port, tls_client_context(
            pki, version=ssl.TLSVersion.TLSv1_1, seclevel0=True, cert="client"))),
        ("no_shared_cipher", lambda: tls_attempt(port, tls_client_context(
            pki, version=ssl.TLSVersion.TLSv1_2, cert="client",
            ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES128-SHA"))),
        ("no_application_protocol", lambda: tls_attempt(port, alpn_context(pki, ["foo"]))),
        ("timeout", lambda: half_handshake(port, hx, pki)),
        # Last: the CRL is attached to the CA (the listener is rebuilt) before this attempt.
        ("cert_revoked", lambda: tls_attempt(port, tls_client_context(
            pki, cert="client-revoked"))),
    ]
    doc = scrape(slbd)
    fails0, done0 = hs_counts(doc, "mtls")
    assert done0 == {"full": 1, "resumed": 0}, done0
    assert set(fails0.values()) == {0}, fails0
    problems = []
    fails = fails0
    for reason, attempt in cases:
        if reason == "cert_revoked":
            upload_crl(slbd, ca, pki.path("inter.crl").read_text())
            now = hs_counts(scrape(slbd), "mtls")[0]
            assert now == fails, f"the CRL upload changed the counters: {fails} -> {now}"
        before = fails
        result = attempt()
        if reason == "timeout":
            assert 0.5 <= result <= h.scaled(5), f"half-done handshake closed after {result} s"
        else:
            assert str(result).startswith("failed"), f"{reason}: the handshake did not fail: " \
                                                     f"{result}"
        wait_metric(slbd, lambda d: sum(hs_counts(d, "mtls")[0].values()) >
                    sum(before.values()), 10, f"a handshake failure to be counted ({reason})")
        time.sleep(0.1)  # a second, wrong increment would show up by now
        fails, done = hs_counts(scrape(slbd), "mtls")
        diff = {k: fails[k] - before[k] for k in fails if fails[k] != before[k]}
        if diff != {reason: 1}:
            problems.append(f"{reason}: counted as {diff}")
        if done != done0:
            problems.append(f"{reason}: completed-handshake counters changed {done0} -> {done}")
    assert not problems, "handshake failures mis-counted:\n" + "\n".join(problems)
    ls = settle(slbd, "mtls")
    assert ls["connections"] == 1 + len(cases)
    assert ls["handshakes"]["failures"] == fails, (ls["handshakes"], fails)


def plain_http_exchange(port, request):
    """Send plain HTTP bytes to a port and read until slbd closes; returns what came back."""
    s = socket.create_connection(("127.0.0.1", port), timeout=h.scaled(5))
    try:
        s.sendall(request)
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                return got
            got += b
    finally:
        s.close()


def test_plain_http_on_https_port(slbd, hx, stack):
    """Plain HTTP sent to an https port gets nginx's plain answer (400, "The plain HTTP
    request was sent to HTTPS port") instead of a silent close, also while a request body is
    still arriving, and each one counts as handshake failure http_on_https, not as a
    request; TLS clients on the same listener are not affected."""
    before, done0 = hs_counts(scrape(slbd), "tls")
    get = plain_http_exchange(stack.tls, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    body = b"x" * 200000
    post = plain_http_exchange(stack.tls, b"POST /up HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    for got in (get, post):
        head, _, text = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), got[:200]
        assert b"connection: close" in head.lower(), head
        assert text == b"400 The plain HTTP request was sent to HTTPS port\n", text
    doc = wait_metric(slbd, lambda d: hs_counts(d, "tls")[0]["http_on_https"] >= 2, 10,
                      "plain HTTP to be counted")
    fails, done = hs_counts(doc, "tls")
    diff = {k: fails[k] - before[k] for k in fails if fails[k] != before[k]}
    assert diff == {"http_on_https": 2}, diff
    assert done == done0
    assert doc.value("slbd_listener_requests_total", listener="tls", **{"class": "4xx"}) == 0
    c, r = tls_request(stack.tls, stack.ctx, "/", track=hx.track)
    assert r.status == 200, r


def test_full_and_resumed_handshakes(slbd, hx, stack):
    expect = {"full": 0, "resumed": 0}
    for version, resumptions in ((ssl.TLSVersion.TLSv1_3, 3), (ssl.TLSVersion.TLSv1_2, 2)):
        ctx = tls_client_context(stack.pki, version=version)
        c, r = tls_request(stack.tls, ctx, "/first", track=hx.track)
        assert r.status == 200 and not c.session_reused
        expect["full"] += 1
        session = c.session
        for i in range(resumptions):
            c, r = tls_request(stack.tls, ctx, f"/again/{i}", session=session, track=hx.track)
            assert r.status == 200 and c.session_reused, f"{version}: not resumed"
            expect["resumed"] += 1
            session = c.session
    ls = settle(slbd, "tls")
    assert {k: ls["handshakes"][k] for k in ("full", "resumed")} == expect, ls["handshakes"]
    doc = scrape(slbd)
    assert hs_counts(doc, "tls")[1] == expect
    assert set(hs_counts(doc, "tls")[0].values()) == {0}
    # The same handshakes by version and suite: TLS 1.3 four times (one full, three resumed),
    # TLS 1.2 three times, each with the suite the client saw.
    by = {(x.labels["version"], x.labels["cipher"]): x.value
          for x in doc.select("slbd_listener_tls_handshakes_total", listener="tls")}
    assert sum(by.values()) == expect["full"] + expect["resumed"], by
    assert sum(v for (ver, _), v in by.items() if ver == "TLSv1.3") == 4, by
    assert sum(v for (ver, _), v in by.items() if ver == "TLSv1.2") == 3, by
    assert all(c.startswith("TLS_") == (v == "TLSv1.3") and c != "other" for v, c in by), by
    ctx = tls_client_context(stack.pki, version=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384")
    c, r = tls_request(stack.tls, ctx, "/pinned", track=hx.track)
    assert r.status == 200
    doc = wait_metric(slbd, lambda d: sum(x.value for x in d.select(
        "slbd_listener_tls_handshakes_total", listener="tls")) == 8, 10, "the pinned handshake")
    got = {(x.labels["version"], x.labels["cipher"]): x.value
           for x in doc.select("slbd_listener_tls_handshakes_total", listener="tls")}
    diff = {k: v - by.get(k, 0) for k, v in got.items() if v != by.get(k, 0)}
    assert len(diff) == 1 and list(diff.values()) == [1], diff
    (ver, cipher), = diff
    assert ver == "TLSv1.2" and cipher.endswith("-AES256-GCM-SHA384"), diff


# --------------------------------------------------------------------------------------------
# Requests, servers, certificates
# --------------------------------------------------------------------------------------------


def test_requests_by_status_class(slbd, hx):
    a = hx.backend("a")
    slbd.add_group("g", [a.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    plan = ["/", "/", "/", "/status/404", "/status/404", "/status/301", "/status/503"]
    for target in plan:
        r = hx.get(port, target)
        assert r.status == (int(target.rsplit("/", 1)[1]) if "status" in target else 200), r
    slbd.put_group("g", [a.server(0)], health_check=NOHC)  # drained: slbd answers 503 itself
    for _ in range(2):
        r = hx.get(port, "/")
        assert r.status == 503, r
    ls = settle(slbd, "web")
    want = {"1xx": 0, "2xx": 3, "3xx": 1, "4xx": 2, "5xx": 3}
    assert {c: ls["requests"][c] for c in CLASSES} == want, ls["requests"]
    assert ls["requests"]["total"] == 9
    doc = scrape(slbd)
    got = {s.labels["class"]: s.value for s in doc.select("slbd_listener_requests_total",
                                                           listener="web")}
    assert got == want, got
    srv = {"group": "g", "server": server_label(a)}
    # The backend answered 7 of them; slbd's own 503s never reached it.
    assert doc.value("slbd_server_requests_total", **srv) == 7
    assert doc.value("slbd_server_response_seconds_count", **srv) == 7
    fails = {x.labels["reason"]: x.value for x in doc.select("slbd_server_failures_total", **srv)}
    assert fails == dict.fromkeys(SERVER_FAIL_REASONS, 0) | {"status_5xx": 1}, fails  # its 503
    # 5xx by source: the backend's one 503, and slbd's two for the drained group.
    assert doc.value("slbd_listener_responses_5xx_total", listener="web", source="backend") == 1
    assert doc.value("slbd_listener_responses_5xx_total", listener="web", source="slbd") == 2
    # Every answer is in the duration histogram, slbd's own ones included.
    assert doc.value("slbd_listener_request_duration_seconds_count", listener="web") == 9


def test_response_histogram_per_server(slbd, hx):
    a, b = hx.backend("a"), hx.backend("b")
    slbd.add_group("g", [a.server(), b.server()], scheduler="rr", health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    served = {"a": 0, "b": 0}
    targets = ["/fast"] * 8 + ["/slow/300"] * 2
    for t in targets:
        r = hx.get(port, t)
        assert r.status == 200, r
        served[r.header("X-Backend")] += 1
    # Pipelined requests: each is observed once, on the server that answered it.
    c = hx.connect(port)
    c.send(b"".join(request_bytes("GET", f"/pipelined/{i}") for i in range(4)))
    for _ in range(4):
        r = c.read_response()
        assert r.status == 200, r
        served[r.header("X-Backend")] += 1
    c.close()
    assert served["a"] > 0 and served["b"] > 0, served
    settle(slbd, "web")
    doc = scrape(slbd)
    total_fast = total_all = 0
    sum_s = 0.0
    for name, be in (("a", a), ("b", b)):
        lab = {"group": "g", "server": server_label(be)}
        assert doc.value("slbd_server_response_seconds_count", **lab) == served[name], \
            (name, served)
        assert doc.value("slbd_server_requests_total", **lab) == served[name]
        total_fast += doc.value("slbd_server_response_seconds_bucket", le="0.25", **lab)
        total_all += doc.value("slbd_server_response_seconds_bucket", le="1", **lab)
        sum_s += doc.value("slbd_server_response_seconds_sum", **lab)
    assert total_fast == 12 and total_all == 14, (total_fast, total_all)
    assert 0.6 <= sum_s < 0.6 + h.scaled(3), sum_s
    st = {s["port"]: s for g in slbd.stats()["groups"] if g["name"] == "g"
          for s in g["servers"]}
    assert st[a.port]["requests"] == served["a"] and st[b.port]["requests"] == served["b"]


def not_after(pki, name):  # noqa: F811
    out = subprocess.run(["openssl", "x509", "-in", str(pki.path(f"{name}.pem")), "-noout",
                          "-enddate"], capture_output=True, text=True, check=True).stdout
    return ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])


def test_certificate_expiry_gauge(slbd, pki):  # noqa: F811
    odd = 'edge "quoted" \\ back\\slash ü'
    body = {"name": odd, "type": "server", "certificate": pki.chain("server"),
            "private_key": pki.key("server")}
    st, js = slbd.api.post("/v1/certificates", body)
    assert st == 201, js
    ids = {"server": js["id"], "soon": upload_server(slbd, pki, "soon")}
    names = {"server": odd, "soon": "soon"}
    t0 = time.time()
    doc = scrape(slbd)
    t1 = time.time()
    got = {(s.labels["id"], s.labels["name"]): s.value
           for s in doc.select("slbd_certificate_expiry_seconds")}
    assert set(got) == {(ids[k], names[k]) for k in ids}, got
    for k in ids:
        v = got[(ids[k], names[k])]
        lo, hi = not_after(pki, k) - t1 - 2, not_after(pki, k) - t0 + 2
        assert lo <= v <= hi, f"{k}: expiry {v} not within [{lo}, {hi}]"
    # "soon" was made to expire ten days after the PKI was generated.
    assert 9 * 86400 < got[(ids["soon"], "soon")] <= 10 * 86400 + 60


# --------------------------------------------------------------------------------------------
# Rates, /v1/stats against /metrics, slbctl
# --------------------------------------------------------------------------------------------


def stats_pairs(stats, doc):
    """[(what, value in /v1/stats, value in /metrics)] for every number both expose."""
    out = []
    m = doc.get
    for ls in stats["listeners"]:
        n = ls["name"]
        out += [(f"{n} connections", ls["connections"],
                 m("slbd_listener_connections_total", listener=n)),
                (f"{n} active", ls["active"], m("slbd_listener_connections_active", listener=n)),
                (f"{n} refused", ls["refused"],
                 sum(m("slbd_listener_connections_refused_total", listener=n, reason=r)
                     for r in ("max_connections", "fd_limit"))),
                (f"{n} denied", ls["denied"],
                 m("slbd_listener_connections_denied_total", listener=n))]
        for w in ("1s", "60s"):
            out.append((f"{n} rate {w}", ls["new_connections_per_s"][w],
                        m("slbd_listener_new_connections_per_second", listener=n, window=w)))
        for kind in ("payload", "wire"):
            for d in ("in", "out"):
                out.append((f"{n} {kind} {d}", ls[f"{kind}_bytes"][d],
                            m("slbd_listener_bytes_total", listener=n, direction=d, kind=kind)))
        if "requests" in ls:
            for c in CLASSES:
                out.append((f"{n} requests {c}", ls["requests"][c],
                            m("slbd_listener_requests_total", listener=n, **{"class": c})))
        if "handshakes" in ls:
            for t in ("full", "resumed"):
                out.append((f"{n} handshakes {t}", ls["handshakes"][t],
                            m("slbd_listener_handshakes_total", listener=n, type=t)))
            for r, v in ls["handshakes"]["failures"].items():
                out.append((f"{n} failures {r}", v,
                            m("slbd_listener_handshake_failures_total", listener=n, reason=r)))
    for g in stats["groups"]:
        for s in g["servers"]:
            lab = {"group": g["name"], "server": f"{s['address']}:{s['port']}"}
            w = f"{lab['group']}/{lab['server']}"
            for key, fam in (("active", "slbd_server_connections_active"),
                             ("connections", "slbd_server_connections_total"),
                             ("requests", "slbd_server_requests_total"),
                             ("bytes_to", "slbd_server_bytes_sent_total"),
                             ("bytes_from", "slbd_server_bytes_received_total")):
                out.append((f"{w} {key}", s[key], m(fam, **lab)))
            fails = doc.select("slbd_server_failures_total", **lab)
            out.append((f"{w} failures", s["failures"],
                        sum(x.value for x in fails) if fails else None))
            out.append((f"{w} up", 1 if s["health"] == "up" else 0, m("slbd_server_up", **lab)))
    return out


def same(x, y):
    return x is not None and y is not None and abs(float(x) - float(y)) <= 1e-3


def is_gauge(what):
    return what.endswith((" active", " up")) or " rate " in what


def assert_stats_match_metrics(slbd, moving=False, attempts=5):
    """Each number of /v1/stats equals /metrics scraped just before or just after it (rates
    move once a second, so a pair that moved between the two scrapes gets another try).
    moving: traffic is flowing, so counters need only lie between the two scrapes and gauges
    are not compared."""
    for _ in range(attempts):
        m1 = scrape(slbd)
        stats = slbd.stats()
        m2 = scrape(slbd)
        p1, p2 = stats_pairs(stats, m1), stats_pairs(stats, m2)
        missing = [w for w, _, v in p1 if v is None]
        assert not missing, f"/v1/stats numbers with no /metrics series: {missing}"
        if moving:
            bad = [(w, s, v1, v2) for (w, s, v1), (_, _, v2) in zip(p1, p2)
                   if not is_gauge(w) and not v1 <= s <= v2]
            assert not bad, f"/v1/stats counters outside the scrapes around them: {bad[:20]}"
            return
        bad = [(w, s, v1, v2) for (w, s, v1), (_, _, v2) in zip(p1, p2)
               if not same(s, v1) and not same(s, v2)]
        if not bad:
            metric_listeners = listener_labels(m2, "slbd_listener_connections_total")
            assert metric_listeners == {ls["name"] for ls in stats["listeners"]}
            return
        moved = all(not same(v1, v2) for _, _, v1, v2 in bad)
        if not moved:
            break
    raise AssertionError(f"/v1/stats and /metrics disagree: {bad[:20]}")


def test_new_connection_rate_and_stats_match_metrics(slbd, hx, stack):
    stack.traffic()
    with ConnectionBurst(stack.raw, payload=b"burst") as burst:
        doc = wait_metric(slbd, lambda d: d.get("slbd_listener_new_connections_per_second",
                                                listener="raw", window="1s", default=0) > 0,
                          10, "new_connections_per_second{window=1s} of raw to rise")
        assert doc.value("slbd_listener_new_connections_per_second", listener="raw",
                         window="60s") > 0
        assert_stats_match_metrics(slbd, moving=True)
    assert burst.count > 0 and burst.errors == 0, (burst.count, burst.errors)
    ls = settle(slbd, "raw")
    assert ls["connections"] == burst.count + 1
    # The 1 s window falls back to zero once the burst is over.
    wait_metric(slbd, lambda d: d.value("slbd_listener_new_connections_per_second",
                                        listener="raw", window="1s") == 0, 10,
                "the 1 s connection rate to fall back to 0")
    assert_stats_match_metrics(slbd)


def test_slbctl_stats(slbd, stack):
    stack.traffic()
    for name in ("web", "tls", "raw"):
        settle(slbd, name)
    p = slbctl(slbd, "stats")
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    for name in ("web", "tls", "raw"):
        assert name in p.stdout, f"listener {name} missing from `slbctl stats`:\n{p.stdout}"
    api = slbd.stats()
    for args in (("--json", "stats"), ("stats", "--json")):
        p = slbctl(slbd, *args)
        assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
        doc = json.loads(p.stdout)
        by_name = {x["name"]: x for x in doc["listeners"]}
        assert set(by_name) == {"web", "tls", "raw"}, by_name
        for x in api["listeners"]:
            assert by_name[x["name"]]["wire_bytes"] == x["wire_bytes"], (x, by_name[x["name"]])
            assert by_name[x["name"]]["connections"] == x["connections"]


def test_connection_gauges_refused_and_denied(slbd, hx, stack):
    """connections_active follows open connections; max_connections refusals and ACL denials
    have their own counters."""
    put = {"name": "raw", "protocol": "tcp", "bind": f"127.0.0.1:{stack.raw}",
           "backend_group": "gt", "max_connections": 2}
    put_listener(slbd, "raw", put)
    held = []
    for _ in range(2):
        s = slbd.clients.connect(stack.raw)
        h.echo_roundtrip(s, b"hold\n")
        held.append(s)
    ls = settle(slbd, "raw", active=2)
    assert ls["connections"] == 2
    try:
        extra = slbd.clients.connect(stack.raw)
        assert h.wait_closed(extra, h.scaled(5)) in ("eof", "reset")
    except ConnectionResetError:
        pass
    ls = settle(slbd, "raw", active=2)
    doc = scrape(slbd)
    assert ls["refused"] == 1 and doc.value("slbd_listener_connections_refused_total",
                                            listener="raw", reason="max_connections") == 1, ls
    assert ls["refused_by_reason"] == {"max_connections": 1, "fd_limit": 0}, ls
    assert doc.value("slbd_listener_connections_active", listener="raw") == 2
    assert doc.value("slbd_server_connections_active", group="gt",
                     server=server_label(stack.t)) == 2
    for s in held:
        s.close()
    settle(slbd, "raw", active=0)
    assert scrape(slbd).value("slbd_server_connections_active", group="gt",
                              server=server_label(stack.t)) == 0
    port = add_listener(slbd, "walled", "g", acl={"mode": "deny", "cidrs": ["127.0.0.0/8"]})
    try:
        s = slbd.clients.connect(port)
        assert h.wait_closed(s, h.scaled(5)) in ("eof", "reset")
    except ConnectionResetError:
        pass  # the reset can beat connect() back to the caller on loopback
    ls = settle(slbd, "walled")
    assert ls["denied"] == 1 and ls["requests"]["total"] == 0, ls
    assert scrape(slbd).value("slbd_listener_connections_denied_total", listener="walled") == 1


@pytest.mark.parametrize("protocol", ["http", "https"])
def test_client_gone_mid_head_leaves_at_once(slbd, hx, stack, protocol):
    """A client that closes its connection in the middle of a request head can never complete
    that request: slbd should close its side at once, so connections_active drops and no
    response (a 408 nobody receives, header_timeout_s later) is counted."""
    port = add_listener(slbd, "cut", "g", protocol=protocol, header_timeout_s=2,
                        **({"tls": stack.tls_cfg(DEFAULT_POLICY)} if protocol == "https"
                           else {}))
    if protocol == "https":
        c = MeteredTls.connect(port, stack.ctx, track=hx.track)
    else:
        c = CountingSocket(hx.socket(port))
    c.sendall(b"GET /never-finished HTTP/1.1\r\nHost: loc")
    settle(slbd, "cut", active=1)
    c.close()
    t0 = time.monotonic()
    # Not scaled for sanitizers: closing takes milliseconds there too, and header_timeout_s
    # (2 s) must not be what ends the connection.
    while True:
        ls = listener_stats(slbd, "cut")
        took = time.monotonic() - t0
        if ls["active"] == 0 or took > 1.0:
            break
        time.sleep(0.05)
    problems = []
    if ls["active"] != 0:
        problems.append(f"the connection is still open {took:.1f} s after the client left "
                        "(slbd waits for header_timeout_s)")
    ls = settle(slbd, "cut", timeout=10)  # header_timeout_s ends it in any case
    if ls["requests"]["total"] != 0:
        problems.append(f"responses counted for a client that had gone: {ls['requests']}")
    assert not problems, f"{protocol}: " + "; ".join(problems)


# --------------------------------------------------------------------------------------------
# What an operator alerts on: promtool, build, reloads, certificates, the process
# --------------------------------------------------------------------------------------------


def promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/deps.sh "
                    "installs it)")
    return path


def test_promtool_check_metrics(slbd, hx, stack):
    """Prometheus' own linter finds nothing to say about /metrics with every kind of
    listener, traffic, a certificate and a handshake failure in it."""
    tool = promtool()
    stack.traffic()
    tls_attempt(stack.tls, tls_client_context(stack.pki, version=ssl.TLSVersion.TLSv1_1,
                                              seclevel0=True))
    for name in ("web", "tls", "raw"):
        settle(slbd, name)
    text = slbd.api.request("GET", "/metrics").text
    r = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=h.scaled(30))
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        f"promtool check metrics (rc {r.returncode}):\n{r.stdout}{r.stderr}"


CERT_FAMILIES = ("slbd_certificate_not_after_timestamp_seconds",
                 "slbd_certificate_expiry_seconds", "slbd_certificate_ocsp_state",
                 "slbd_certificate_ocsp_failures_total")


@pytest.mark.timeout(300)
def test_metrics_at_two_thousand_certificates(slbd, hx, pki):  # noqa: F811
    """With 2,000 certificates on a listener, /metrics still parses strictly and promtool
    accepts it, and every certificate has its series: a name that needs escaping, and a CA
    certificate among the server ones (it has no OCSP state; the ones after it keep theirs).
    ?certificates=false leaves their series out."""
    n = 2000
    cache = sc.cached(h.build_dir(), n)
    slbd.stop()
    sc.install(cache, slbd.state_dir)
    slbd.start(ready_timeout=120)
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=h.no_health_check())
    ids = [sc.cert_id(i) for i in range(n)]
    add_listener(slbd, "big", "g", protocol="https", tls={"certificates": ids})
    odd = 'edge "quoted" \\ back\\slash ü'
    r = slbd.api.request("PATCH", f"/v1/certificates/{ids[7]}", {"name": odd})
    assert r.status == 200, r.text
    ca = upload_ca(slbd, pki, "root", cert_id="s1000-ca")  # sorts between s1000 and s1001
    names = {i: f"scale-{k}" for k, i in enumerate(ids)}
    names[ids[7]] = odd
    names[ca] = ca

    text = slbd.api.request("GET", "/metrics").text
    doc = promparse.parse(text)  # raises on any violation of the format
    for fam in CERT_FAMILIES:
        got = [s for s in doc.samples if s.name == fam]
        if fam.startswith("slbd_certificate_ocsp"):
            want = set(ids)  # server certificates only
        else:
            want = set(ids) | {ca}
            assert {s.labels["id"]: s.labels["name"] for s in got} == \
                {i: names[i] for i in want}, fam
        assert {s.labels["id"] for s in got} == want, fam
        per = 6 if fam == "slbd_certificate_ocsp_state" else 1
        assert len(got) == per * len(want), (fam, len(got))
    # One OCSP state per server certificate; nothing fetched or failed here.
    states = {}
    for s in doc.samples:
        if s.name == "slbd_certificate_ocsp_state":
            states[s.labels["id"]] = states.get(s.labels["id"], 0) + s.value
    assert set(states.values()) == {1}, states
    assert {s.value for s in doc.samples
            if s.name == "slbd_certificate_ocsp_failures_total"} == {0}
    na = {s.labels["id"]: s.value for s in doc.samples
          if s.name == "slbd_certificate_not_after_timestamp_seconds"}
    ex = {s.labels["id"]: s.value for s in doc.samples
          if s.name == "slbd_certificate_expiry_seconds"}
    now = time.time()
    assert all(abs(na[i] - ex[i] - now) < h.scaled(60) for i in na), "expiry != not_after - now"


    # ?certificates=false: the same families, those of the certificates without a sample, for
    # a frequent scrape that leaves them to a slower one; anything but true or false is 400.
    r = slbd.api.request("GET", "/metrics?certificates=false")
    assert r.status == 200, r.text
    lean = promparse.parse(r.text)
    assert set(lean.families) == set(doc.families)
    assert not [s for s in lean.samples if s.name in CERT_FAMILIES or
                s.name == "slbd_certificate_ocsp_next_update_timestamp_seconds"]
    assert lean.value("slbd_listener_up", listener="big") == 1
    assert lean.value("slbd_tls_context_builds_total") >= 1
    assert len(r.text) < len(text) / 50, (len(r.text), len(text))
    full = promparse.parse(slbd.api.request("GET", "/metrics?certificates=true").text)
    assert len(full.samples) == len(doc.samples)
    for q in ("certificates=no", "certificates", "certificates=false&certificates=false"):
        r = slbd.api.request("GET", f"/metrics?{q}")
        assert r.status == 400 and r.json["error"]["code"] == "invalid_value", (q, r.text)
        assert r.json["error"]["where"] == "certificates", (q, r.text)

    tool = promtool()
    for t in (text, slbd.api.request("GET", "/metrics?certificates=false").text):
        r = subprocess.run([tool, "check", "metrics"], input=t, capture_output=True, text=True,
                           timeout=h.scaled(60))
        assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
            f"promtool check metrics (rc {r.returncode}):\n{r.stdout[:2000]}{r.stderr[:2000]}"


def test_build_reload_certificate_and_process_metrics(slbd, hx, stack):
    """slbd_build_info names the version; a refused SIGHUP reload sets
    slbd_config_reload_success to 0 and keeps the last success time, a taken one sets it
    back to 1 with a new time; the certificate's not_after is exported as a timestamp; the
    standard process_* families describe this very process."""
    slbd.allow_errors(r"reload refused")
    t_start = time.time()
    doc = scrape(slbd)
    info = doc.select("slbd_build_info")
    version = (Path(__file__).resolve().parents[2] / "VERSION").read_text().strip()
    assert len(info) == 1 and info[0].value == 1, info
    assert info[0].labels["version"] == version, info[0].labels
    assert info[0].labels["openssl"].startswith("3."), info[0].labels
    assert doc.value("slbd_config_reload_success") == 1
    started = doc.value("slbd_config_last_reload_success_timestamp_seconds")
    assert t_start - 120 < started <= t_start + 1, (started, t_start)
    na = [x for x in doc.select("slbd_certificate_not_after_timestamp_seconds", id=stack.cert)]
    assert len(na) == 1 and na[0].labels["name"] == "server", na
    assert na[0].value == not_after(stack.pki, "server"), na
    # Process metrics of this process.
    pid = slbd.pid
    fds = doc.value("process_open_fds")
    assert 0 < fds <= doc.value("process_max_fds"), fds
    assert abs(fds - len(list(Path(f"/proc/{pid}/fd").iterdir()))) <= 4, fds
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert 0.5 * rss < doc.value("process_resident_memory_bytes") < 2 * rss
    assert doc.value("process_cpu_seconds_total") > 0
    assert abs(doc.value("process_start_time_seconds") - started) < 2
    # A refused reload.
    cfg = slbd.state_dir / "config.json"
    good = cfg.read_text()
    cfg.write_text("{ not json")
    slbd.signal(signal.SIGHUP)
    wait_metric(slbd, lambda d: d.value("slbd_config_reload_success") == 0, 10,
                "the refused reload to show")
    assert scrape(slbd).value("slbd_config_last_reload_success_timestamp_seconds") == started
    # A taken one.
    time.sleep(0.01)
    cfg.write_text(good)
    slbd.signal(signal.SIGHUP)
    doc = wait_metric(slbd, lambda d: d.value("slbd_config_reload_success") == 1, 10,
                      "the reload to be taken")
    assert doc.value("slbd_config_last_reload_success_timestamp_seconds") > started


# --------------------------------------------------------------------------------------------
# Backend failures by reason, retries, connect and request durations, health transitions
# --------------------------------------------------------------------------------------------


def server_fails(doc, group, server):
    return {x.labels["reason"]: x.value
            for x in doc.select("slbd_server_failures_total", group=group, server=server)}


@pytest.mark.slbd(workers=1)  # one rr cycle: the dead server comes first for a request
def test_server_failures_by_reason_retries_and_histograms(slbd, hx):
    """Each kind of backend failure counts under its own reason of slbd_server_failures_total
    (refused connect, reset, early close, timeout, malformed response, a 5xx); a request moved
    to the next server counts as a retry; slbd's own 5xx and the backends' are told apart; the
    connect and request-duration histograms move."""
    def slow(conn):
        time.sleep(h.scaled(1) + 1)
        return False
    scripted = Scripted(hx, {
        "/reset": lambda conn: rst_close(conn),
        "/close": lambda conn: False,
        "/slow": slow,
        "/garbage": lambda conn: conn.sendall(b"garbage\r\n\r\n"),
        "/503": lambda conn: conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"),
    })
    dead = h.dead_port()
    slbd.add_group("s", [scripted.server()], health_check=NOHC)
    slbd.add_group("d", [{"address": "127.0.0.1", "port": dead, "weight": 100}],
                   health_check=NOHC)
    ok = hx.backend("ok")
    slbd.add_group("m", [{"address": "127.0.0.1", "port": dead, "weight": 100}, ok.server()],
                   scheduler="rr", health_check=NOHC)
    ps = add_listener(slbd, "ps", "s", request_timeout_s=1, backend_reuse="safe")
    pd = add_listener(slbd, "pd", "d")
    pm = add_listener(slbd, "pm", "m")
    expect = {"/reset": (502, "reset"), "/close": (502, "closed"), "/slow": (504, "timeout"),
              "/garbage": (502, "invalid_response"), "/503": (503, "status_5xx")}
    for path, (status, _) in expect.items():
        r = hx.get(ps, path)
        assert r.status == status, (path, r)
    assert hx.get(pd, "/").status == 502
    # Group m: the rr cycle puts the dead server first for at least one of two requests; that
    # request moves to the good server (a retry) and is answered.
    for _ in range(2):
        r = hx.get(pm, "/")
        assert r.status == 200, r
    for n in ("ps", "pd", "pm"):
        settle(slbd, n)
    doc = scrape(slbd)
    zero = dict.fromkeys(SERVER_FAIL_REASONS, 0)
    s_srv = f"127.0.0.1:{scripted.raw.port}"
    assert server_fails(doc, "s", s_srv) == zero | {v[1]: 1 for v in expect.values()}
    dead_srv = f"127.0.0.1:{dead}"
    assert server_fails(doc, "d", dead_srv) == zero | {"connect_refused": 1}
    # Each refused connect in group m moved its request to the good server: one retry each.
    refused = server_fails(doc, "m", dead_srv)["connect_refused"]
    assert refused >= 1 and server_fails(doc, "m", dead_srv) == zero | {"connect_refused": refused}
    assert doc.value("slbd_listener_retries_total", listener="pm") == refused
    assert doc.value("slbd_listener_retries_total", listener="ps") == 0
    # slbd made 4 of ps's 5xx answers (502, 502, 504, 502), the backend one (503).
    assert doc.value("slbd_listener_responses_5xx_total", listener="ps", source="slbd") == 4
    assert doc.value("slbd_listener_responses_5xx_total", listener="ps", source="backend") == 1
    assert doc.value("slbd_listener_responses_5xx_total", listener="pd", source="slbd") == 1
    # Durations: the slow request lies between 1 s and 2.5 s, the others well below.
    lab = {"listener": "ps"}
    assert doc.value("slbd_listener_request_duration_seconds_count", **lab) == 5
    assert doc.value("slbd_listener_request_duration_seconds_bucket", le="0.5", **lab) == 4
    assert doc.value("slbd_listener_request_duration_seconds_bucket", le="2.5", **lab) == 5
    assert 1 <= doc.value("slbd_listener_request_duration_seconds_sum", **lab) < 3
    # Connects: each of ps's five requests had a new connection to the scripted server.
    c = {"group": "s", "server": s_srv}
    assert doc.value("slbd_server_connect_seconds_count", **c) == 5
    assert doc.value("slbd_server_connect_seconds_bucket", le="0.1", **c) == 5
    ok_lab = {"group": "m", "server": f"127.0.0.1:{ok.port}"}
    assert doc.value("slbd_server_connect_seconds_count", **ok_lab) >= 1
    # A refused connect never completed: not in the histogram.
    assert doc.value("slbd_server_connect_seconds_count", group="d", server=dead_srv) == 0


def test_health_transitions(slbd, hx):
    """A server taken out by its health checks and brought back counts one transition each
    way."""
    a = hx.backend("a")
    slbd.add_group("g", [a.server()], health_check=h.fast_health_check())
    lab = {"group": "g", "server": f"127.0.0.1:{a.port}"}
    slbd.wait_health("g", a.port, "up", 10)
    doc = scrape(slbd)
    assert doc.value("slbd_server_health_transitions_total", to="down", **lab) == 0
    up0 = doc.value("slbd_server_health_transitions_total", to="up", **lab)
    a.stop()
    slbd.wait_health("g", a.port, "down", 15)
    a.restart()
    slbd.wait_health("g", a.port, "up", 15)
    doc = scrape(slbd)
    assert doc.value("slbd_server_health_transitions_total", to="down", **lab) == 1
    assert doc.value("slbd_server_health_transitions_total", to="up", **lab) == up0 + 1


def test_prometheus_rules_example(slbd, hx, stack):
    """examples/prometheus-rules.yml passes `promtool check rules` and the alert cases of
    prometheus_rules_test.yml (`promtool test rules`), and every metric it names is one slbd
    exports (a renamed metric would leave an alert that never fires)."""
    tool = promtool()
    rules = Path(__file__).resolve().parents[2] / "examples" / "prometheus-rules.yml"
    r = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True,
                       timeout=h.scaled(30))
    assert r.returncode == 0, f"promtool check rules:\n{r.stdout}{r.stderr}"
    # The alerts fire on the series slbd exports, and only then (prometheus_rules_test.yml).
    cases = Path(__file__).resolve().parent / "prometheus_rules_test.yml"
    r = subprocess.run([tool, "test", "rules", str(cases)], capture_output=True, text=True,
                       timeout=h.scaled(60))
    assert r.returncode == 0, f"promtool test rules:\n{r.stdout}{r.stderr}"
    stack.traffic()
    doc = scrape(slbd)
    text = rules.read_text()
    exprs = "\n".join(re.findall(r"expr: (\|\n(?:\s{10}.*\n)+|.*)", text))
    names = set(re.findall(r"\b((?:slbd|process)_[a-z0-9_]+)", exprs))
    assert len(names) >= 8, names
    missing = sorted(n for n in names if doc.family(n) is None)
    assert not missing, f"metrics named by the rules but not exported: {missing}"
