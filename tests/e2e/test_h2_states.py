# SPDX-License-Identifier: Apache-2.0
"""Frames on streams that are no longer open, and stream ids out of order (RFC 9113 5.1 and
5.1.1), as h2spec checks them (5.1 #8, #9, #11, #12; 6.1 #2 strict; 5.1.1 #2), with raw
frames: slbd answers STREAM_CLOSED or PROTOCOL_ERROR instead of ignoring the frame, and still
ignores what follows its own RST_STREAM."""

import pytest

import slbd_harness as h
from h2_util import (END_HEADERS, END_STREAM, HEADERS, NO_ERROR, PROTOCOL_ERROR,
                     STREAM_CLOSED, RawH2, client_context, data_frame, error_name, frame,
                     h2_site, hpack_block, request_fields, rst_frame, serves_fresh)
from http_util import hx  # noqa: F401
from pki import pki  # noqa: F401


def raw(site, pki, hx):  # noqa: F811
    c = RawH2.connect(site.port, client_context(pki), track=hx.track)
    c.wait(lambda: c.settings_acks, 10, "the ACK of our SETTINGS")
    return c


def headers(sid, path="/", end_stream=True):
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid,
                 hpack_block(request_fields("POST" if not end_stream else "GET", path)))


def stream_error(c, sid, code, what):
    """slbd answered with RST_STREAM code on sid, or a GOAWAY with code (RFC 9113 allows the
    connection error where a stream error is asked for)."""
    c.wait(lambda: c.streams[sid].reset is not None or c.goaways or c.ended, 5, what)
    s = c.streams[sid]
    if c.goaways:
        assert c.goaways[0][1] == code, (what, c.describe())
    else:
        assert s.reset == code, f"{what}: RST_STREAM {error_name(s.reset)}: {c.describe()}"


def connection_error(c, code, what):
    got = c.wait_goaway_or_end(5)
    assert got, f"{what}: no GOAWAY: {c.describe()}"
    assert got[1] == code, f"{what}: GOAWAY {error_name(got[1])}: {c.describe()}"
    assert c.wait_end(h.scaled(5)) in ("eof", "reset"), c.describe()


def closed_stream(c):
    """A stream that ran its course: request and response both ended."""
    sid = c.new_sid()
    c.stream(sid)
    c.send(headers(sid))
    s = c.wait_stream(sid)
    assert s.status == 200 and s.ended, s
    return sid


def test_data_on_a_closed_stream(slbd, hx, pki):  # noqa: F811
    """h2spec 5.1 #8: DATA on a closed stream is a STREAM_CLOSED error; the connection's
    other streams go on when slbd makes it a stream error."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    sid = closed_stream(c)
    c.send(data_frame(sid, b"test", end_stream=True))
    stream_error(c, sid, STREAM_CLOSED, "DATA on a closed stream")
    if not c.goaways:
        assert c.get("/after").status == 200


def test_headers_on_a_closed_stream(slbd, hx, pki):  # noqa: F811
    """h2spec 5.1 #9: HEADERS on a closed stream is a connection error STREAM_CLOSED."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    sid = closed_stream(c)
    c.send(headers(sid))
    connection_error(c, STREAM_CLOSED, "HEADERS on a closed stream")
    serves_fresh(site.port, pki, hx.track)


@pytest.mark.parametrize("ftype", ["DATA", "HEADERS"])
def test_frames_after_the_clients_reset(slbd, hx, pki, ftype):  # noqa: F811
    """h2spec 5.1 #11 and #12: the client reset the stream, then sends DATA or HEADERS on it:
    STREAM_CLOSED."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    assert c.get("/first").status == 200
    sid = c.new_sid()
    c.stream(sid)
    c.send(headers(sid, "/slow/2000", end_stream=False))
    c.send(rst_frame(sid))
    if ftype == "DATA":
        c.send(data_frame(sid, b"test", end_stream=True))
    else:
        c.send(headers(sid))
    stream_error(c, sid, STREAM_CLOSED, f"{ftype} after RST_STREAM")


def test_data_on_a_half_closed_remote_stream(slbd, hx, pki):  # noqa: F811
    """h2spec 6.1 #2 (strict): DATA after the client's END_STREAM is STREAM_CLOSED, whether
    slbd's answer has already ended the stream or not."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    for path in ("/slow/1000", "/"):
        sid = c.new_sid()
        c.stream(sid)
        c.send(headers(sid, path) + data_frame(sid, b"test", end_stream=True))
        stream_error(c, sid, STREAM_CLOSED, f"DATA after END_STREAM ({path})")
        if c.goaways:
            return
        c.wait_stream(sid)


def test_stream_id_lower_than_a_previous_one(slbd, hx, pki):  # noqa: F811
    """h2spec 5.1.1 #2: HEADERS on stream 5, then on stream 3 (never used): a connection
    error PROTOCOL_ERROR, and stream 3 never reaches a backend."""
    site = h2_site(slbd, hx, pki, record=True)
    c = raw(site, pki, hx)
    c.stream(5)
    c.stream(3)
    c.send(headers(5, "/five") + headers(3, "/three"))
    connection_error(c, PROTOCOL_ERROR, "stream 3 after stream 5")
    assert b"/three" not in site.backends[0].recorded()
    serves_fresh(site.port, pki, hx.track)


def test_frames_after_slbds_reset_are_ignored(slbd, hx, pki):  # noqa: F811
    """RFC 9113 5.1: after slbd's RST_STREAM (here NO_ERROR: its 417 is complete while the
    request body is still coming) the client's DATA already on its way is ignored, not
    answered with an error."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    sid = c.new_sid()
    c.stream(sid)
    block = hpack_block(request_fields("POST", "/upload", extra=[("expect", "nothing")]))
    c.send(frame(HEADERS, END_HEADERS, sid, block))
    c.wait(lambda: c.streams[sid].reset is not None, 10, "slbd's RST_STREAM")
    assert c.streams[sid].reset == NO_ERROR and c.streams[sid].status == 417, c.describe()
    for _ in range(3):
        c.send(data_frame(sid, b"late", end_stream=False))
    c.send(data_frame(sid, b"", end_stream=True))
    c.ping()
    assert c.get("/after").status == 200
    assert not c.goaways and c.streams[sid].reset == NO_ERROR, c.describe()


def test_frames_on_many_old_streams(slbd, hx, pki):  # noqa: F811
    """Streams far behind the newest one (more than slbd remembers) are still answered or
    ignored, never taken for new streams: the connection goes on."""
    site = h2_site(slbd, hx, pki)
    c = raw(site, pki, hx)
    first = closed_stream(c)
    for _ in range(300):
        sid = c.new_sid()
        c.stream(sid)
        c.send(headers(sid))
    c.wait(lambda: all(s.done for s in c.streams.values()), 30, "300 streams to end")
    c.send(data_frame(first, b"old", end_stream=True))
    c.ping()
    assert c.get("/after").status == 200
    assert not c.goaways, c.describe()
