/* SPDX-License-Identifier: Apache-2.0 */
/* One exchange of a request with a backend, the same for both client protocols: the choice
 * of a server and its connection, the connect failures and retries (issue 15's rules), the
 * response head (interim ones, counters, what a failure tells the log and health checks),
 * the response body's framing, the request timeout and the access-log line. It answers
 * through a sink, the client side: an HTTP/1.x connection (proxy.c) or an HTTP/2 stream
 * (h2_stream.c), which turn heads, body bytes, trailers and errors into their own protocol.
 *
 * The exchange does not copy the body: it frames it in place, so that the first resp_ready
 * bytes of up->in are body data the sink may take (slb_exchange_body_ready, then the sink
 * consumes them from up->in as its client takes them, at the pace of its flow control). A
 * response-body filter (gzip) sits exactly there: it takes the ready bytes and offers its own
 * output to the sink instead (see docs/architecture.md, "The exchange and its sinks"). */
#ifndef SLB_HTTP_EXCHANGE_H
#define SLB_HTTP_EXCHANGE_H

#include "http/gzip.h"
#include "http/parser.h"
#include "http/upstream.h"

#include <stdbool.h>
#include <stdint.h>

struct slb_exchange;

/* What the client side does for the exchange. Every callback gets the exchange; e->sink is
 * the client side's own object. */
struct slb_exchange_sink_ops {
    /* Fill the client's part of a server choice: client_fd, the scheduler key and fresh. */
    void (*choice)(struct slb_exchange *e, struct slb_up_choice *ch);
    /* e->up was chosen again after a failure (the request head, if it lives in up->head, has
     * moved to it): its connect is in progress unless it was pooled. */
    void (*connecting)(struct slb_exchange *e);
    /* An interim (1xx) response head m. 0: it is taken, go on; 1: it is taken, stop for now
     * (the client must read first); -1: the sink failed the exchange instead. */
    int (*interim)(struct slb_exchange *e, struct slb_http_msg *m);
    /* The final response head m, counted already. false: the sink failed the exchange. */
    bool (*head)(struct slb_exchange *e, struct slb_http_msg *m);
    /* The exchange failed with status (logged and counted already): the client gets our
     * answer with that status when nothing of the response has gone to it, else a cut. */
    void (*error)(struct slb_exchange *e, int status);
};

/* The backend side of one request. Embedded in the HTTP/1.x exchange state (struct
 * http_xchg, taken per request from the worker's list) and in each HTTP/2 stream; its owner
 * sets ops, sink, hw, wid, l and up_cb before the request starts. */
struct slb_exchange {
    const struct slb_exchange_sink_ops *ops;
    void *sink;
    struct slb_http_worker *hw;
    struct slb_listener_rt *l; /* the listener (and configuration) the request runs under */
    int wid;
    slb_up_cb up_cb; /* the sink's handler of events on up (up->owner is the sink) */
    /* backend */
    struct http_up *up;
    struct slb_srv_rt *srv;
    struct slb_wgroup *wg; /* the group decided for the request */
    uint8_t *tried;        /* per server of wg: already tried for this request */
    int srv_idx, attempts;
    /* request */
    uint8_t method;
    bool req_has_body, req_done;
    bool no_upgrade; /* the client side cannot take a 101 (HTTP/2) */
    bool tunnel;     /* a 101 made the exchange a tunnel (HTTP/1.x) */
    /* Why slbd answered 5xx itself (see slb_access_error_name) and the server it last tried */
    uint8_t fail;
    const char *fail_srv;
    int status;
    uint64_t start_us; /* request head parsed, for the request duration histogram */
    uint64_t sent_us;  /* request head handed to the backend, for the response histogram */
    uint64_t resp_us;  /* response head received, for the access log */
    uint64_t last_io_ms, exchange_deadline_ms; /* see slb_exchange_timer_left */
    /* response */
    bool resp_head_done, resp_done, up_keep_alive;
    uint8_t resp_body;
    uint64_t resp_remaining, resp_ready;
    /* Decoded for the sink (slb_exchange_body_ready), or re-framed by an HTTP/1.1 sink. */
    struct slb_rechunk resp_chunk;
    /* The response-body filter, compression (http/gzip.h): the request's facts (set by the
     * sink when the listener compresses); resp_gzip: this response is compressed, by gz until
     * its gzip trailer is out (then gz is back in the worker's pool). */
    struct slb_gzip_req gz_req;
    bool resp_gzip;
    struct slb_gzip *gz;
};

/* The listener's counters of this worker. */
static inline struct slb_wcount *slb_exchange_lis(const struct slb_exchange *e)
{
    return &e->l->stats->w[e->wid];
}

/* Choose a server for the request (a usable sticky cookie first) and get a connection to it
 * in e->up. false: no server is left. */
bool slb_exchange_choose(struct slb_exchange *e, struct slb_slice sticky);

/* The connect to e->srv failed for reason f: logged, counted, and the request (its head in
 * up->head, if there) moves to the next server; with none left the sink answers 502. */
void slb_exchange_connect_failed(struct slb_exchange *e, enum slb_srv_fail f, const char *why);

/* The backend connection ended (f: closed or reset) before the response was complete: the
 * request goes again when it may (see slb_up_retryable), else the exchange fails with 502. */
void slb_exchange_backend_cut(struct slb_exchange *e, enum slb_srv_fail f, const char *why);

/* The exchange failed: logged, reported to health checks, and the sink's error(status). */
void slb_exchange_fail(struct slb_exchange *e, int status, enum slb_srv_fail f, const char *why);

/* Parse what arrived of the response head: interim heads and the final one go to the sink.
 * Whether anything moved. */
bool slb_exchange_parse_head(struct slb_exchange *e);

/* Frame the body bytes that arrived (after the head): the first e->resp_ready bytes of
 * up->in become body data for the sink, a chunked body decoded in place (its trailer section
 * appended to trailers, or dropped when NULL). A close-delimited body or a tunnel takes
 * whatever is there. 0, or -1 on invalid chunked framing. */
int slb_exchange_body_ready(struct slb_exchange *e, struct slb_hbuf *trailers);

/* The request timeout fired at now_ms: the milliseconds until it is really due (the timer is
 * to be armed again for them), or 0 when it has passed. Until the request is sent and the
 * response head is here it is a fixed deadline; after that, and in a tunnel, an inactivity
 * limit. */
uint64_t slb_exchange_timer_left(const struct slb_exchange *e, uint64_t now_ms);

/* The request timeout has passed: the exchange fails with 504. */
void slb_exchange_timed_out(struct slb_exchange *e);

/* At the sink's head: whether the response m is to be compressed (the listener's settings,
 * the request's facts, a compressor from the worker's pool); then m is rewritten in place for
 * it (its new values in sc until the head is out; chunked_field: an HTTP/1.1 head) and counted.
 * The sink then takes the body from slb_exchange_gzip_run, not from the ready bytes. */
bool slb_exchange_gzip_head(struct slb_exchange *e, struct slb_http_msg *m,
                            struct slb_gzip_scratch *sc, bool chunked_field);

/* Compress the ready body bytes (slb_exchange_body_ready first) into out (cap bytes), taking
 * them from up->in: *made bytes of output. 1 once the body is all in and the gzip trailer is
 * out (the compressor is back in the pool, e->gz NULL; also when there is none), 0 when bytes
 * moved, 2 when none could (more input or more room is needed), -1 when the compressor
 * failed. */
int slb_exchange_gzip_run(struct slb_exchange *e, void *out, size_t cap, size_t *made);

/* The compressor, if any, goes back to the worker's pool (the response ends or is dropped). */
void slb_exchange_gzip_drop(struct slb_exchange *e);

/* The exchange is over (the response complete): the backend connection goes back to the pool
 * when keep, else closes; the server's answer counts for passive health checks. */
void slb_exchange_up_done(struct slb_exchange *e, bool keep);

#endif
