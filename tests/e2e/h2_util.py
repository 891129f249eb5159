# SPDX-License-Identifier: Apache-2.0
"""HTTP/2 clients of the https end-to-end tests: TLS over a plain socket through ssl.MemoryBIO
(a flood can be written without reading, and what slbd sent before a reset is still read), a
client that writes frames by hand (any frame in any order, HPACK without a dynamic table
unless a test builds one), a client on Debian's python3-h2 that checks everything slbd sends,
and runners for curl --http2 and h2load (standard library, pytest, python3-h2/hpack)."""

import json
import re
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
import types

import pytest

import slbd_harness as h
from http_util import add_listener
from pki import tls_block, upload_server

# --------------------------------------------------------------------------------------------
# Protocol constants (RFC 9113)
# --------------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xb
ERROR_NAMES = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
               0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
               0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
               0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR", 0xb: "ENHANCE_YOUR_CALM",
               0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED"}

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# Fields that only mean something on one HTTP/1.1 connection (RFC 9113 8.2.2).
CONNECTION_SPECIFIC = ("connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade")


def error_name(code):
    return ERROR_NAMES.get(code, hex(code)) if code is not None else None


# --------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------


def frame(ftype, flags=0, sid=0, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7fffffff) + bytes(payload)


def settings_frame(settings=None, ack=False):
    payload = b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items())
    return frame(SETTINGS, ACK if ack else 0, 0, b"" if ack else payload)


def ping_frame(data=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


def rst_frame(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update_frame(sid, increment):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def data_frame(sid, data=b"", end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, sid, data)


def headers_frames(sid, block, end_stream=True, max_frame=16384):
    """A header block as HEADERS plus as many CONTINUATION frames as max_frame requires."""
    parts = [block[i:i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
    out = bytearray()
    for i, part in enumerate(parts):
        flags = END_HEADERS if i == len(parts) - 1 else 0
        if i == 0:
            out += frame(HEADERS, flags | (END_STREAM if end_stream else 0), sid, part)
        else:
            out += frame(CONTINUATION, flags, sid, part)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# HPACK (RFC 7541) for requests: literals without indexing, so the encoder keeps no state and
# a test can reference its own dynamic-table entries by number
# --------------------------------------------------------------------------------------------


def hp_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hp_string(s):
    b = s.encode("latin-1") if isinstance(s, str) else bytes(s)
    return hp_int(len(b), 7) + b


def hp_literal(name, value, index=False):
    """A literal field with a literal name: "without indexing", or "with incremental indexing"
    (it then becomes dynamic-table entry 62, pushing older ones up)."""
    return (b"\x40" if index else b"\x00") + hp_string(name) + hp_string(value)


def hp_indexed(i):
    return hp_int(i, 7, 0x80)


def request_fields(method="GET", path="/", authority="localhost", scheme="https", extra=()):
    fields = [(":method", method), (":scheme", scheme)]
    if authority is not None:
        fields.append((":authority", authority))
    fields.append((":path", path))
    return fields + list(extra)


def hpack_block(fields):
    return b"".join(hp_literal(n, v) for n, v in fields)


# --------------------------------------------------------------------------------------------
# TLS over a plain socket
# --------------------------------------------------------------------------------------------


def client_context(pki, alpn=("h2",), cert=None):
    """A client context trusting the test root and offering alpn (None: no ALPN)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.root)
    ctx.check_hostname = False
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if cert:
        ctx.load_cert_chain(*pki.client_files(cert))
    return ctx


class TlsWire:
    """A TLS client whose records go through memory: writes never block (ciphertext the kernel
    does not take yet waits in .pending), and reads see every byte slbd sent before it closed
    or reset the connection. .ended is None while open, else "eof" or "reset"."""

    def __init__(self, sock, ctx, server_hostname="localhost"):
        self.sock = sock
        sock.setblocking(False)
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname=server_hostname)
        self.pending = bytearray()
        self.ended = None
        self.tls_done = False  # close_notify, a TLS error or EOF: no more plaintext
        self.write_broken = False  # a send saw a reset or broken pipe
        self.sent = 0  # bytes the kernel took, TLS included
        self.received = 0
        self.plain_in = 0  # plaintext bytes read / written
        self.plain_out = 0

    @classmethod
    def connect(cls, port, ctx, server_hostname="localhost", host="127.0.0.1", timeout=10,
                track=None, rcvbuf=None):
        """rcvbuf: a small receive buffer (SO_RCVBUF, set before the connect), so that what
        slbd sends while the client does not read backs up in slbd's socket."""
        if rcvbuf:
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.settimeout(h.scaled(timeout))
            s.connect((host, port))
        else:
            s = socket.create_connection((host, port), timeout=h.scaled(timeout))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if track is not None:
            track(s)
        w = cls(s, ctx, server_hostname)
        w.handshake(timeout)
        return w

    @property
    def alpn(self):
        return self.obj.selected_alpn_protocol()

    def handshake(self, timeout=10, flush_last=True):
        """flush_last=False leaves our last flight (TLS 1.3: the Finished) in .pending, to go
        out with what is written next."""
        deadline = time.monotonic() + h.scaled(timeout)
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self._queue()
                self.flush(deadline - time.monotonic())
                if not self._fill(deadline - time.monotonic()):
                    raise h.HarnessError(f"TLS handshake did not complete ({self.ended})")
                continue
            self._queue()
            if flush_last:
                self.flush(deadline - time.monotonic())
            return

    def _queue(self):
        data = self.out.read()
        if data:
            self.pending += data

    def write(self, data):
        """Encrypt data into .pending; flush() hands it to the kernel."""
        view = memoryview(data)
        while view:
            n = self.obj.write(view)
            view = view[n:]
        self.plain_out += len(data)
        self._queue()

    def flush(self, stall):
        """Send pending ciphertext. True when all of it went out; False when the socket took
        nothing for `stall` seconds (not scaled) or the connection was reset."""
        while self.pending:
            if self.write_broken or self.ended == "reset":
                self.pending.clear()
                return False
            try:
                n = self.sock.send(self.pending)
            except (BlockingIOError, InterruptedError):
                n = 0
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                # What slbd sent before its reset is still in our receive queue: reads go
                # on until they see the reset themselves.
                self.write_broken = True
                self.pending.clear()
                return False
            if n:
                del self.pending[:n]
                self.sent += n
                continue
            _, w, _ = select.select([], [self.sock], [], max(0.0, stall))
            if not w:
                return False
        return True

    def send(self, data, timeout=10):
        """write + flush; fails when the socket stays full for `timeout` seconds (scaled). A
        reset is not an error here: the reads still return what came, then .ended says so."""
        self.write(data)
        if not self.flush(h.scaled(timeout)) and self.ended is None and not self.write_broken:
            raise h.HarnessError(f"slbd took no bytes for {h.scaled(timeout):.0f} s "
                                 f"({len(self.pending)} waiting)")

    def _fill(self, timeout):
        """One socket read into the TLS engine. False when the connection ended, None when
        nothing came within timeout seconds."""
        if self.ended:
            return False
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return None
        try:
            chunk = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return True
        except (ConnectionResetError, ConnectionAbortedError):
            self.ended = "reset"
            self.inc.write_eof()
            return False
        if not chunk:
            self.ended = "eof"
            self.inc.write_eof()
            return False
        self.received += len(chunk)
        self.inc.write(chunk)
        return True

    def recv(self, timeout):
        """Plaintext that arrived by now or within timeout seconds (not scaled); b"" once the
        TLS stream ended (after that, b"" only once the connection itself ended); None when
        nothing came in time."""
        deadline = time.monotonic() + timeout
        while True:
            if self.tls_done:
                # No more plaintext: wait for the end of the connection itself.
                got = self._fill(deadline - time.monotonic())
                if got is None:
                    return None
                if got is False:
                    return b""
                continue
            try:
                data = self.obj.read(1 << 18)
                self._queue()
                if data:
                    self.plain_in += len(data)
                    return data
                self.tls_done = True  # close_notify
                return b""
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                self.tls_done = True  # EOF without close_notify, or a TLS alert
                return b""
            if self.pending:
                self.flush(0)
            got = self._fill(deadline - time.monotonic())
            if got is None:
                return None

    def readable(self):
        """Bytes wait in the TLS engine or the socket (a cheap check between flood batches)."""
        if self.obj.pending():
            return True
        r, _, _ = select.select([self.sock], [], [], 0)
        return bool(r)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------
# What a client saw of one stream
# --------------------------------------------------------------------------------------------


class Stream:
    """The response side of one stream: final status and fields (pseudo-fields included, as
    (str, str)), interim responses, trailers, the body, DATA frames counted (empty ones too),
    whether END_STREAM came (and on the HEADERS frame), the RST_STREAM code from slbd."""

    def __init__(self, sid):
        self.sid = sid
        self.status = None
        self.headers = []
        self.interim = []
        self.trailers = []
        self.data = bytearray()
        self.data_frames = 0
        self.ended = False
        self.end_on_headers = False
        self.reset = None

    @property
    def done(self):
        return self.ended or self.reset is not None

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def all(self, name):
        return [v for n, v in self.headers if n == name]

    def json(self):
        return json.loads(bytes(self.data))

    def _take_fields(self, fields, end_stream):
        status = dict(fields).get(":status")
        if self.status is None and status is not None and 100 <= int(status) < 200:
            self.interim.append(fields)
        elif self.status is None:
            self.status = int(status) if status is not None else -1
            self.headers = fields
        else:
            self.trailers = fields
        if end_stream:
            self.ended = True
            self.end_on_headers = not self.data_frames

    def __repr__(self):
        return (f"<stream {self.sid} status {self.status} ended {self.ended} reset "
                f"{error_name(self.reset)} headers {self.headers} data {len(self.data)} bytes "
                f"in {self.data_frames} frames {bytes(self.data[:200])!r}>")


class _Client:
    """What both clients share: the streams, slbd's SETTINGS, GOAWAYs and the waiting."""

    def __init__(self, wire):
        self.wire = wire
        self.streams = {}
        self.server_settings = {}
        self.settings_frames = 0  # SETTINGS frames (not ACKs) received
        self.settings_acks = 0
        self.ping_acks = 0
        self.goaways = []  # (last stream id, error code, debug data) in arrival order
        self.order = []  # ("goaway", None) / ("end", sid) / ("reset", sid) in arrival order

    def stream(self, sid):
        if sid not in self.streams:
            self.streams[sid] = Stream(sid)
        return self.streams[sid]

    @property
    def ended(self):
        return self.wire.ended

    def _send_windowed(self, sid, data, end_stream, timeout, emit, room):
        """data as DATA, each piece within room() (the flow-control windows and the frame
        size), pumping for WINDOW_UPDATE when it is 0; emit(piece, end_stream) sends one.
        Stops early when the stream was reset or the connection ended."""
        deadline = time.monotonic() + h.scaled(timeout)
        view = memoryview(bytes(data))
        while view:
            if self.streams[sid].reset is not None or self.ended:
                return
            n = min(room(), len(view))
            if n <= 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise h.HarnessError(f"no flow-control window for stream {sid} in time: "
                                         f"{self.describe()}")
                self.pump(left)
                continue
            emit(view[:n], end_stream and n == len(view))
            view = view[n:]

    def describe(self):
        busy = [s for s in self.streams.values() if not s.done]
        state = self.ended or ("TLS closed" if self.wire.tls_done else "open")
        return (f"connection {state}, GOAWAYs "
                f"{[(last, error_name(code), dbg) for last, code, dbg in self.goaways]}, "
                f"{len(self.streams)} streams, unfinished: {busy[:5]}")

    def wait(self, pred, timeout=10, what="a condition"):
        """Read until pred() is true; fails on the deadline (scaled) or when the connection
        ends first. Returns pred()'s value."""
        deadline = time.monotonic() + h.scaled(timeout)
        while True:
            got = pred()
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                raise h.HarnessError(f"timed out after {h.scaled(timeout):.1f} s waiting for "
                                     f"{what}: {self.describe()}")
            if self.pump(left) is False:
                got = pred()
                if got:
                    return got
                raise h.HarnessError(f"the connection ended while waiting for {what}: "
                                     f"{self.describe()}")

    def wait_stream(self, sid, timeout=10):
        return self.wait(lambda: self.streams[sid].done and self.streams[sid], timeout,
                         f"stream {sid} to end")

    def get(self, path="/", timeout=10, **kw):
        """One request, waited for; returns its Stream."""
        return self.wait_stream(self.request("GET", path, **kw), timeout)

    def wait_end(self, timeout):
        """Read (and process) until slbd ends the connection: "eof" or "reset", or None when
        it is still open after timeout seconds (not scaled)."""
        deadline = time.monotonic() + timeout
        while not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.pump(left)
        return self.ended

    def wait_goaway_or_end(self, timeout=10):
        """Read until a GOAWAY arrives or the connection ends (scaled deadline); returns the
        first GOAWAY or None."""
        deadline = time.monotonic() + h.scaled(timeout)
        while not self.goaways and not self.ended and time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())
        return self.goaways[0] if self.goaways else None

    def settle(self, seconds):
        """Process whatever arrives during the next `seconds` (not scaled)."""
        deadline = time.monotonic() + seconds
        while not self.ended:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.pump(left)

    def close(self):
        self.wire.close()


# --------------------------------------------------------------------------------------------
# A client that writes frames by hand
# --------------------------------------------------------------------------------------------


class RawH2(_Client):
    """HTTP/2 client that sends exactly the frames asked for. Incoming frames are all
    processed (HPACK decoded with python3-hpack); SETTINGS and PING are acknowledged and
    received DATA is given back as WINDOW_UPDATE unless the test turns that off."""

    def __init__(self, wire, auto_ack=True, auto_window=True):
        hpack = pytest.importorskip("hpack", reason="python3-hpack (with python3-h2) is needed")
        super().__init__(wire)
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.auto_ack = auto_ack
        self.auto_window = auto_window
        self.next_sid = 1
        self.conn_send_window = 65535
        self.stream_send_window = {}
        self.initial_send_window = 65535
        self.max_frame_out = 16384
        self.frames_in = 0
        self.push_promises = 0
        self._buf = bytearray()
        self._block = None  # (sid, end_stream, bytearray) while CONTINUATIONs are due

    @classmethod
    def connect(cls, port, ctx, track=None, settings=None, preface=True, rcvbuf=None, **kw):
        """Connect, check that h2 was selected, and send the preface with settings (push off
        unless given)."""
        wire = TlsWire.connect(port, ctx, track=track, rcvbuf=rcvbuf)
        if wire.alpn != "h2":
            raise h.HarnessError(f"ALPN selected {wire.alpn!r} instead of h2")
        c = cls(wire, **kw)
        if preface:
            s = {SETTINGS_ENABLE_PUSH: 0}
            s.update(settings or {})
            c.send(PREFACE + settings_frame(s))
        return c

    def send(self, data, timeout=10):
        self.wire.send(data, timeout)

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def send_headers(self, sid, fields, end_stream=True, block=None):
        self.stream(sid)
        self.stream_send_window.setdefault(sid, self.initial_send_window)
        self.send(headers_frames(sid, block if block is not None else hpack_block(fields),
                                 end_stream, self.max_frame_out))

    def request(self, method="GET", path="/", headers=(), body=None, authority="localhost",
                end_stream=True, sid=None):
        """Open a stream. body None: END_STREAM on the HEADERS when end_stream; else the body
        follows in DATA frames (flow controlled), END_STREAM on the last when end_stream."""
        sid = sid or self.new_sid()
        self.send_headers(sid, request_fields(method, path, authority, extra=headers),
                          end_stream=end_stream and body is None)
        if body is not None:
            self.send_data(sid, body, end_stream)
        return sid

    def send_data(self, sid, data, end_stream=True, timeout=30):
        """DATA frames within slbd's flow-control windows (waiting for WINDOW_UPDATE). Stops
        early when the stream was reset."""
        if not data:
            self.send(data_frame(sid, b"", end_stream))
            return

        def emit(chunk, end):
            self.send(data_frame(sid, chunk, end))
            self.conn_send_window -= len(chunk)
            self.stream_send_window[sid] -= len(chunk)
        self._send_windowed(sid, data, end_stream, timeout, emit, lambda: min(
            self.conn_send_window, self.stream_send_window.get(sid, 0), self.max_frame_out))

    def ping(self, timeout=10):
        """A PING round trip: proof that the connection is alive and read by slbd."""
        before = self.ping_acks
        self.send(ping_frame(b"slbdtest"))
        self.wait(lambda: self.ping_acks > before, timeout, "the PING ACK")

    def pump(self, timeout):
        """Read once and process every complete frame. True when bytes came, False when the
        connection ended, None on timeout (not scaled)."""
        data = self.wire.recv(timeout)
        if data is None:
            return None
        if not data:
            return False
        self._buf += data
        replies = bytearray()
        while len(self._buf) >= 9:
            length = int.from_bytes(self._buf[:3], "big")
            if len(self._buf) < 9 + length:
                break
            ftype, flags = self._buf[3], self._buf[4]
            sid = int.from_bytes(self._buf[5:9], "big") & 0x7fffffff
            payload = bytes(self._buf[9:9 + length])
            del self._buf[:9 + length]
            self.frames_in += 1
            self._frame(ftype, flags, sid, payload, replies)
        if replies and not self.ended:
            self.wire.write(bytes(replies))
            self.wire.flush(0)
        return True

    def _frame(self, ftype, flags, sid, payload, replies):
        if ftype in (DATA, HEADERS) and flags & PADDED:
            pad = payload[0]
            payload = payload[1:len(payload) - pad]
        if ftype == DATA:
            s = self.stream(sid)
            s.data += payload
            s.data_frames += 1
            if flags & END_STREAM:
                s.ended = True
                self.order.append(("end", sid))
            if self.auto_window and payload:
                replies += window_update_frame(0, len(payload))
                if not s.done:
                    replies += window_update_frame(sid, len(payload))
        elif ftype == HEADERS:
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._block = (sid, bool(flags & END_STREAM), bytearray(payload))
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == CONTINUATION:
            if self._block is None or self._block[0] != sid:
                raise h.HarnessError(f"slbd sent a CONTINUATION on stream {sid} out of place")
            self._block[2].extend(payload)
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == RST_STREAM:
            s = self.stream(sid)
            s.reset = struct.unpack(">I", payload[:4])[0]
            self.order.append(("reset", sid))
        elif ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
                return
            self.settings_frames += 1
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                if k == SETTINGS_INITIAL_WINDOW_SIZE:
                    delta = v - self.initial_send_window
                    self.initial_send_window = v
                    for x in self.stream_send_window:
                        self.stream_send_window[x] += delta
                elif k == SETTINGS_MAX_FRAME_SIZE:
                    self.max_frame_out = v
                self.server_settings[k] = v
            if self.auto_ack:
                replies += settings_frame(ack=True)
        elif ftype == PING:
            if flags & ACK:
                self.ping_acks += 1
            elif self.auto_ack:
                replies += ping_frame(payload, ack=True)
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaways.append((last & 0x7fffffff, code, payload[8:]))
            self.order.append(("goaway", None))
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload[:4])[0] & 0x7fffffff
            if sid == 0:
                self.conn_send_window += inc
            else:
                self.stream_send_window[sid] = self.stream_send_window.get(sid, 0) + inc
        elif ftype == PUSH_PROMISE:
            self.push_promises += 1

    def _end_block(self):
        sid, end_stream, block = self._block
        self._block = None
        fields = [(n.decode("latin-1"), v.decode("latin-1"))
                  for n, v in self.decoder.decode(bytes(block), raw=True)]
        s = self.stream(sid)
        s._take_fields(fields, end_stream)
        if end_stream:
            self.order.append(("end", sid))


# --------------------------------------------------------------------------------------------
# A client on python3-h2
# --------------------------------------------------------------------------------------------


class LibH2(_Client):
    """HTTP/2 client on python3-h2: a second, independent implementation that validates what
    slbd sends (lowercase names, no connection-specific fields, frame and flow-control rules)
    and raises AssertionError when slbd breaks one. Outbound validation is off so tests can
    send what real clients sometimes do."""

    def __init__(self, wire, settings=None, auto_window=True):
        conn_mod = pytest.importorskip("h2.connection", reason="python3-h2 is not installed")
        config = pytest.importorskip("h2.config", reason="python3-h2 is not installed")
        self._ev = pytest.importorskip("h2.events", reason="python3-h2 is not installed")
        self._exc = pytest.importorskip("h2.exceptions", reason="python3-h2 is not installed")
        super().__init__(wire)
        cfg = config.H2Configuration(client_side=True, header_encoding=None,
                                     validate_outbound_headers=False,
                                     normalize_outbound_headers=False,
                                     validate_inbound_headers=True)
        self.conn = conn_mod.H2Connection(config=cfg)
        self.auto_window = auto_window
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self._flush()

    @classmethod
    def connect(cls, port, ctx, track=None, **kw):
        wire = TlsWire.connect(port, ctx, track=track)
        if wire.alpn != "h2":
            raise h.HarnessError(f"ALPN selected {wire.alpn!r} instead of h2")
        return cls(wire, **kw)

    def _flush(self, timeout=10):
        data = self.conn.data_to_send()
        if data:
            self.wire.send(data, timeout)

    def request(self, method="GET", path="/", headers=(), body=None, authority="localhost",
                end_stream=True):
        sid = self.conn.get_next_available_stream_id()
        self.stream(sid)
        fields = [(n.encode("latin-1"), v.encode("latin-1"))
                  for n, v in request_fields(method, path, authority, extra=headers)]
        self.conn.send_headers(sid, fields, end_stream=end_stream and body is None)
        self._flush()
        if body is not None:
            self.send_data(sid, body, end_stream)
        return sid

    def send_data(self, sid, data, end_stream=True, timeout=60):
        if not data and end_stream:
            self.conn.end_stream(sid)
            self._flush()

        def emit(chunk, end):
            self.conn.send_data(sid, bytes(chunk), end_stream=end)
            self._flush()
        self._send_windowed(sid, data, end_stream, timeout, emit, lambda: min(
            self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size))

    def send_trailers(self, sid, fields):
        self.conn.send_headers(sid, [(n.encode("latin-1"), v.encode("latin-1"))
                                     for n, v in fields], end_stream=True)
        self._flush()

    def ping(self, timeout=10):
        before = self.ping_acks
        self.conn.ping(b"slbdtest")
        self._flush()
        self.wait(lambda: self.ping_acks > before, timeout, "the PING ACK")

    def pump(self, timeout):
        data = self.wire.recv(timeout)
        if data is None:
            return None
        if not data:
            return False
        try:
            events = self.conn.receive_data(data)
        except self._exc.ProtocolError as e:
            raise AssertionError(f"python-h2 refused what slbd sent: {e!r} "
                                 f"({self.describe()})") from e
        ev = self._ev
        for e in events:
            if isinstance(e, ev.ResponseReceived):
                self.stream(e.stream_id)._take_fields(_text(e.headers), False)
            elif isinstance(e, ev.InformationalResponseReceived):
                self.stream(e.stream_id).interim.append(_text(e.headers))
            elif isinstance(e, ev.TrailersReceived):
                self.stream(e.stream_id).trailers = _text(e.headers)
            elif isinstance(e, ev.DataReceived):
                s = self.stream(e.stream_id)
                s.data += e.data
                s.data_frames += 1
                if self.auto_window and e.flow_controlled_length:
                    self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamEnded):
                s = self.stream(e.stream_id)
                s.ended = True
                s.end_on_headers = s.data_frames == 0
                self.order.append(("end", e.stream_id))
            elif isinstance(e, ev.StreamReset):
                self.stream(e.stream_id).reset = int(e.error_code)
                self.order.append(("reset", e.stream_id))
            elif isinstance(e, ev.ConnectionTerminated):
                self.goaways.append((e.last_stream_id, int(e.error_code), e.additional_data))
                self.order.append(("goaway", None))
            elif isinstance(e, ev.RemoteSettingsChanged):
                self.settings_frames += 1
                for k, v in e.changed_settings.items():
                    self.server_settings[int(k)] = v.new_value
            elif isinstance(e, ev.SettingsAcknowledged):
                self.settings_acks += 1
            elif isinstance(e, ev.PingAckReceived):
                self.ping_acks += 1
        if not self.ended:
            self._flush()
        return True


def _text(fields):
    return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in fields]


# --------------------------------------------------------------------------------------------
# Floods
# --------------------------------------------------------------------------------------------


def flood(client, unit, count, batch=200, pause=0.0, watch=False):
    """Write `unit` (bytes of one or more frames) count times, in batches, without reading
    (an attacker does not read); only when slbd stops taking bytes (writes stalled for 1 s,
    scaled) is what it sent read, so that it can go on. With watch=True what arrives is
    processed between batches, so the caller learns how far the flood got before slbd
    reacted. Returns the number of units handed to the socket before a GOAWAY, the end of
    the connection or the last one."""
    sent = 0
    stall = h.scaled(1.0)
    deadline = time.monotonic() + h.scaled(30)
    while sent < count and not client.ended and not client.wire.write_broken and \
            time.monotonic() < deadline:
        n = min(batch, count - sent)
        client.wire.write(unit * n)
        sent += n
        if not client.wire.flush(stall) and not client.ended and not client.wire.write_broken:
            client.pump(0.05)
        if watch:
            while client.wire.readable() and not client.ended:
                client.pump(0)
            if client.goaways or client.ended:
                break
        if pause:
            time.sleep(pause)
    return sent


# --------------------------------------------------------------------------------------------
# Sites, curl, h2load, access log
# --------------------------------------------------------------------------------------------

NOHC = h.no_health_check()


def h2_site(slbd, hx, pki, n=1, record=False, listener="h2", group="g", tls_extra=None,
            **extra):
    """n echo backends (a, b, ...) in a group behind an https listener with the default TLS
    settings (ALPN h2 first): namespace(port, backends, cert)."""
    bs = [hx.backend(chr(ord("a") + i), record=record) for i in range(n)]
    slbd.add_group(group, [b.server() for b in bs], health_check=NOHC)
    cert = upload_server(slbd, pki, "server")
    port = add_listener(slbd, listener, group, protocol="https",
                        tls=tls_block([cert], **(tls_extra or {})), **extra)
    return types.SimpleNamespace(port=port, backends=bs, cert=cert)


def https_listener(slbd, name, group, cert, tls_extra=None, **extra):
    return add_listener(slbd, name, group, protocol="https",
                        tls=tls_block([cert], **(tls_extra or {})), **extra)


def serves_fresh(port, pki, track, path="/fresh", echo=True):
    """A new h2 connection gets a normal 200 for path (with echo, the echo backend's JSON
    naming that path)."""
    c = LibH2.connect(port, client_context(pki), track=track)
    try:
        s = c.get(path)
        assert s.status == 200 and s.ended and s.reset is None, s
        assert not echo or s.json()["path"] == path, s
        return s
    finally:
        c.close()


def curl(port, pki, path, workdir, http2=True, args=(), timeout=20):
    """curl (--http2 unless told otherwise) against https://localhost:port. Returns a
    namespace: version ("2", "1.1"), status, the header lines as received, body bytes."""
    from hostile_util import require_tool
    require_tool("curl", "curl")
    body_path = workdir / f"curl-body-{time.monotonic_ns()}"
    argv = ["curl", "-sS", "--cacert", pki.root, "--resolve", f"localhost:{port}:127.0.0.1",
            "-D", "-", "-o", str(body_path), "-w", "\n@@%{http_version} %{http_code}",
            *(["--http2"] if http2 else []), *args, f"https://localhost:{port}{path}"]
    p = subprocess.run(argv, capture_output=True, timeout=h.scaled(timeout))
    out = p.stdout.decode("latin-1")
    if p.returncode != 0:
        raise h.HarnessError(f"curl failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    head, _, tail = out.rpartition("\n@@")
    version, status = tail.split()
    lines = [ln for ln in head.split("\r\n") if ln]
    body = body_path.read_bytes() if body_path.exists() else b""
    return types.SimpleNamespace(version=version, status=int(status), status_line=lines[0],
                                 header_lines=lines[1:], body=body)


def h2load(url, *args, timeout=90):
    """Run h2load (never --h1 here); returns (summary dict, output). The summary has total,
    started, done, succeeded, failed, errored, 2xx and protocol."""
    from hostile_util import require_tool
    require_tool("h2load", "nghttp2-client")
    p = subprocess.run(["h2load", *args, url], capture_output=True, timeout=h.scaled(timeout))
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    if not m:
        raise h.HarnessError(f"h2load printed no summary:\n{out}")
    keys = ("total", "started", "done", "succeeded", "failed", "errored")
    res = dict(zip(keys, map(int, m.groups())))
    codes = re.search(r"status codes: (\d+) 2xx", out)
    res["2xx"] = int(codes.group(1)) if codes else None
    proto = re.search(r"Application protocol: (\S+)", out)
    res["protocol"] = proto.group(1) if proto else None
    return res, out


def set_access_log(slbd, value):
    st, js = slbd.api.post("/v1/apply", {"settings": {"access_log": value}})
    assert st == 200, js


def access_lines(path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------------------------
# Backend side
# --------------------------------------------------------------------------------------------


def split_record(record):
    """A request as a backend received it: (request line, [(name, value)], rest bytes)."""
    end = record.index(b"\r\n\r\n")
    lines = record[:end].decode("latin-1").split("\r\n")
    fields = []
    for ln in lines[1:]:
        n, _, v = ln.partition(":")
        fields.append((n.strip().lower(), v.strip()))
    return lines[0], fields, record[end + 4:]


def dechunk(data):
    """A chunked body: (body, trailer lines, bytes after the terminating blank line)."""
    body = bytearray()
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";")[0], 16)
        pos = eol + 2
        if size == 0:
            break
        body += data[pos:pos + size]
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise AssertionError(f"chunk of {size} bytes not followed by CRLF at {pos + size}")
        pos += size + 2
    trailers = []
    while True:
        eol = data.index(b"\r\n", pos)
        line = data[pos:eol]
        pos = eol + 2
        if not line:
            return bytes(body), trailers, data[pos:]
        trailers.append(line.decode("latin-1"))


class HeadCounter:
    """A raw-backend handler that counts the request heads it receives and answers each
    with a small 200 after `delay` seconds (keep-alive)."""

    def __init__(self, delay=0.0):
        self.delay = delay
        self.heads = 0
        self.lock = threading.Lock()

    def __call__(self, conn, backend):
        while True:
            head = conn.read_head()
            if not head:
                return
            with self.lock:
                self.heads += 1
            if self.delay:
                time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
