/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the HTTP/2 layer: the connection (h2.c: nghttp2 glue, the client socket, abuse
 * limits, lifecycle) and its streams (h2_stream.c: each stream's exchange with a backend and
 * the translation between HTTP/2 and HTTP/1.1). */
#ifndef SLB_HTTP_H2_INT_H
#define SLB_HTTP_H2_INT_H

#include "http/exchange.h"
#include "http/h2.h"
#include "http/parser.h"
#include "http/rewrite.h"
#include "http/upstream.h"

#include <nghttp2/nghttp2.h>

#define H2_MAX_STREAMS 100      /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define H2_NGHTTP2_STREAMS 1000 /* nghttp2's own limit (see advertise_stream_limit) */
#define H2_HEAD_LIMIT 16384     /* a request head as HTTP/1.1 text, as for HTTP/1.1 clients */
/* Decoded bytes of one header block (an HPACK bomb): decoding stops there, GOAWAY
 * ENHANCE_YOUR_CALM. A block between H2_HEAD_LIMIT and this is answered 431; a connection
 * that sends more than H2_OVERSIZED_MAX of those is closed the same way. */
#define H2_HEAD_HARD (64 * 1024)
#define H2_OVERSIZED_MAX 4
#define H2_OUT_HIGH (64 * 1024) /* frames queued for the client before we stop making more */
#define H2_READS_PER_RUN 16
#define H2_MAX_FRAME 16384 /* SETTINGS_MAX_FRAME_SIZE: the default, not changed */
#define H2_MAX_INTERIM 8   /* interim (1xx) responses passed on per stream */
/* Client stream ids remembered after their stream left nghttp2 (which keeps no closed
 * streams, see setup_once): the last H2_SID_WINDOW odd ids, two bits each. */
#define H2_SID_WINDOW 256
/* Token buckets: a burst, then a sustained rate per second. Streams the client resets
 * (CVE-2023-44487, Rapid Reset), and frames that cost us work but carry no request: PING,
 * SETTINGS, PRIORITY, empty DATA, WINDOW_UPDATE (two given back per DATA frame we send),
 * streams over the concurrency limit, frames on closed streams. Past either: GOAWAY
 * ENHANCE_YOUR_CALM. */
#define H2_RST_BURST 200
#define H2_RST_RATE 100
#define H2_CTRL_BURST 500
#define H2_CTRL_RATE 100

enum stream_state {
    SS_HEAD,     /* header block arriving */
    SS_DISPATCH, /* request ready, backend not chosen yet (after this read's frames) */
    SS_CONNECT,  /* backend connect in progress */
    SS_EXCHANGE, /* request to the backend, response back */
    SS_LOCAL,    /* our own response (error, redirect); request body discarded */
};

struct h2_bucket {
    uint64_t milli; /* tokens x 1000 */
    uint64_t last_ms;
};

struct h2_conn;

struct h2_stream {
    struct h2_conn *c;
    struct h2_stream *prev, *next;
    /* The configuration the stream started under (held): its listener settings (e.l) and
     * group (e.wg). The connection itself moves to each new configuration of its listener. */
    struct slb_wsnap *ws;
    /* The exchange with a backend (see exchange.h): this stream is its sink. */
    struct slb_exchange e;
    int32_t id;
    enum stream_state st;
    struct slb_timer timer;
    /* request head as it arrives */
    /* The request as HTTP/1.1 text: the pseudo-fields' values first, as they come, then from
     * text_off the request line, Host and the other fields (pseudo-fields come first in a
     * header block, RFC 9113 8.3). */
    struct slb_hbuf req;
    uint32_t m_off, m_len, p_off, p_len, a_off, a_len, text_off;
    struct slb_hbuf cookie, trailers;
    size_t head_bytes;
    bool too_big, has_length, line_done;
    bool bad; /* a field that cannot become HTTP/1.1 text: the stream is being reset */
    /* request towards the backend: head, then body bytes (chunk-framed when chunked) */
    struct slb_hbuf tx;
    bool req_chunked, head_only;
    uint64_t unconsumed; /* DATA bytes in tx not yet given back to the client's window */
    /* response */
    bool resp_submitted, deferred, reset;
    bool up_eof; /* the backend closed its side */
    uint8_t interims;
    struct slb_hbuf resp_trailers;
    struct slb_hbuf local; /* our own response: head and body as HTTP/1.1 */
    /* accounting */
    uint64_t bytes_in, bytes_out;
    struct slb_access_rec *log;
    bool logged;
    const struct slb_rule *rule; /* the forwarding rule that chose e.wg, or NULL */
    /* Per server of e.wg: already tried (e.tried). tried_in (sized for the listener's group,
     * at least one) unless a rule chose a bigger group: then its own allocation. */
    size_t ntried;
    uint8_t tried_in[];
};

struct h2_conn {
    struct slb_conn_link link;
    struct slb_worker *w;
    struct slb_http_worker *hw;
    /* The listener and configuration new streams use; the TLS state keeps its handshake's
     * (see bind.h, conn_reconfigured). */
    struct slb_http_bind b;
    struct slb_tconn t;
    struct slb_io io;
    struct slb_timer timer;
    struct slb_timer shape_timer; /* limits.bandwidth_mbps: sending again (slb_tconn_repay) */
    nghttp2_session *ng;
    struct slb_hbuf out; /* frames for the client */
    struct h2_stream *streams;
    unsigned nstreams, ndispatch;
    /* fatal: the connection ends with GOAWAY fatal_code and reads nothing more. The nghttp2
     * session is gone (ng NULL) once it failed: our own GOAWAY goes out, then the close. */
    bool closed, goaway, fatal, client_eof, kicked, settings_sent, lingering, wire_due;
    uint32_t fatal_code;
    int32_t last_accepted; /* the highest stream given state: GOAWAY's last stream id */
    size_t block_bytes;    /* decoded bytes of the header block being read */
    unsigned oversized;    /* header blocks over H2_HEAD_LIMIT */
    int32_t sid_hi;        /* the highest client stream id given to on_begin_headers */
    /* The frame boundaries in the client's bytes, followed as they go to nghttp2 (see feed) */
    uint32_t scan_skip; /* bytes before the next frame header */
    uint8_t scan_hd[9], scan_hlen;
    bool scan_off;   /* framing nghttp2 refused: nothing more is looked at */
    int32_t scan_hi; /* the highest stream id of a HEADERS frame seen */
    uint64_t sid_opened[H2_SID_WINDOW / 64], sid_reset[H2_SID_WINDOW / 64]; /* see sid_* */
    uint64_t last_io_ms, last_write_ms;
    struct h2_bucket rst, ctrl;
    uint64_t wire_in_seen, wire_out_seen, log_wire_in, log_wire_out;
    char client_ip[INET6_ADDRSTRLEN];
    uint16_t client_port;
    struct sockaddr_storage peer;
    uint16_t local_port;
    uint8_t sched_key_of; /* sched_key: see struct slb_up_choice */
    /* A stream of this connection has ended: under backend_reuse "safe", only from then on
     * may one go on a pooled backend connection. */
    bool reuse_ok;
    uint64_t sched_key;
};

/* h2.c */
void h2_run(struct h2_conn *c);
/* h2_run once the loop's current events have all been handled: the responses of several
 * streams that arrive together leave in one write (one TLS record or a few). */
void h2_kick(struct h2_conn *c);
struct slb_wcount *h2_lis_counts(struct h2_conn *c);

/* h2_stream.c */
/* A new stream's exchange, under the connection's current listener and group. */
void h2_exchange_init(struct h2_stream *s);
/* Once the pseudo-fields are in: the request line and Host start the request text. */
void h2_request_line(struct h2_stream *s);
/* The request's header block is complete: answer it ourselves or make it ready for a
 * backend (h2_dispatch). */
void h2_start_request(struct h2_stream *s);
/* Choose backends for the streams made ready by the frames just read. */
void h2_dispatch(struct h2_conn *c);
/* The client ended its side of the stream. */
void h2_request_end(struct h2_stream *s);
/* Move what can move between a stream and its backend. */
void h2_stream_io(struct h2_stream *s);
void h2_stream_timer_cb(struct slb_loop *loop, struct slb_timer *t);
/* Log, give back the backend connection and free (the stream left nghttp2 or the connection
 * closes). */
void h2_stream_free(struct h2_stream *s);

#endif
