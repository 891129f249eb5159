/* SPDX-License-Identifier: Apache-2.0 */
/* The exchange of a request with a backend. The steps both client protocols share (HTTP/1.x
 * in proxy.c, HTTP/2 streams in h2_stream.c): the choice of a new connection, the retry on a
 * fresh one, the counters of a response head, what a failure tells health checks and the
 * log, the request timeout, and the access-log line. Also the state of one HTTP/1.x
 * exchange, and the worker's lists that keep these states and the connections'
 * response-head buffers between requests, so that a keep-alive request allocates nothing and
 * an idle connection holds neither. */
#ifndef SLB_HTTP_XCHG_H
#define SLB_HTTP_XCHG_H

#include "config/snapshot.h"
#include "http/access.h"
#include "http/exchange.h"
#include "http/parser.h"
#include "http/rewrite.h"
#include "http/upstream.h"
#include "net/transport.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_http_worker;

/* One request and its answer (the backend's response, our own, or a tunnel after 101): taken
 * from the worker's list when a request head starts to be parsed, given back when the
 * connection waits for its next request, so an idle keep-alive connection holds none of it
 * (see slb_xchg_get). Zeroed when taken, but for the array it keeps for big groups. */
struct http_xchg {
    struct http_xchg *next; /* on the worker's list of free ones */
    struct slb_exchange e;  /* the backend side, shared with HTTP/2 (see exchange.h) */
    /* request */
    bool req_keep_alive, head_only;
    bool upgrade_req;  /* the request asked for a protocol upgrade we forwarded */
    uint8_t req_minor; /* HTTP/1.x minor version of the request */
    uint8_t req_body;
    /* req_ready: body bytes at the front of the input buffer to send as they are (for a
     * chunked body, data or trailer bytes; our framing is in req_chunk.frame). */
    uint64_t req_remaining, req_ready;
    struct slb_rechunk req_chunk;
    bool body_unread; /* answered before the request body was all read: the connection ends */
    /* The body goes to an HTTP/1.0 client without chunked framing, ended by our close: a
     * chunked one decoded (trailers dropped), or a compressed one. */
    bool resp_unchunk;
    /* A compressed response's trailer section from a chunked backend (its fields and final
     * CRLF), sent after the last chunk; its memory is kept with the state for the next one. */
    struct slb_hbuf resp_trailers;
    bool client_shut, up_shut; /* tunnel: our write side towards that peer is shut down */
    /* accounting */
    uint64_t req_bytes_in, resp_bytes_out;
    /* Per server of the group: already tried for this request (see slb_xchg_tried). */
    uint8_t *tried_heap; /* for groups too big for tried_in; kept while on the list */
    size_t tried_cap;
    uint8_t tried_in[32];
};

/* The exchange state for the request about to be parsed (or answered by us), zeroed, unless
 * *x is already there; and a kept head buffer for its answer in *out when *out has none and
 * the worker has one. false when memory is short. */
bool slb_xchg_get(struct slb_http_worker *hw, struct http_xchg **x, struct slb_hbuf *out);
/* The exchange is over and the connection waits for its next request: *x (if any) and the
 * head buffer go back to the worker; *x becomes NULL and *out empty. */
void slb_xchg_put(struct slb_http_worker *hw, struct http_xchg **x, struct slb_hbuf *out);
/* The head buffer alone goes back to the worker (or to malloc), emptied. */
void slb_xchg_head_put(struct slb_http_worker *hw, struct slb_hbuf *out);
/* Free a state that is not on the list (a closing connection's), with what it keeps. */
void slb_xchg_free(struct http_xchg *x);
/* The tried flags for this request to a group of n servers, all clear; NULL when memory is
 * short. Small groups use the state's own array, bigger ones one it keeps. */
uint8_t *slb_xchg_tried(struct http_xchg *x, size_t n);
/* Free the worker's lists (the worker is going away). */
void slb_xchg_lists_free(struct slb_http_worker *hw);

/* --- the steps both client protocols share --- */

/* Whether a request (method m, with a body or not) must get a new backend connection rather
 * than a pooled one: under the listener's backend_reuse "safe", until a request of its client
 * connection has ended (reuse_ok), unless slbd can send it again by itself. A pooled
 * connection the backend closes just as the request goes out ends before any response byte;
 * the client cannot tell that from a server that failed, so only a request slbd retries on a
 * new connection (slb_up_retryable) may take that chance: an idempotent one without a body.
 * The others (a POST, any body) keep a new connection. */
static inline bool slb_xchg_fresh_only(const struct slb_listener_cfg *cfg, bool reuse_ok,
                                       enum slb_http_method m, bool has_body)
{
    return !reuse_ok && cfg->backend_reuse == SLB_REUSE_SAFE && !slb_up_resendable(m, has_body);
}

/* A reused connection failed before any byte of the response and the request may go again
 * (slb_up_retryable): *up is closed and replaced by a new connection to the same server,
 * counted active on srv, and the retry counted on the listener (lis). NULL (and *up NULL)
 * when none can be made. */
struct http_up *slb_xchg_reconnect(struct slb_http_worker *hw, struct slb_wcount *lis,
                                   struct http_up **up, const struct slb_server_cfg *scfg,
                                   struct slb_srv_rt *srv, void *owner, slb_up_cb cb);

/* The response on up is complete: the server's answer (status) counts for the passive health
 * checks, and the connection goes back to the pool when both sides keep alive (keep), else
 * closes, giving its server's active count back either way. *up becomes NULL. */
void slb_xchg_up_done(struct http_up **up, struct slb_srv_rt *srv, int wid, int status, bool keep);

/* The listener's request counters: one request more (dir 1) with this status, or one less
 * (dir -1, a backend's head replaced by our error before it went out); a 5xx also by its source,
 * slbd's own answer (local) or a backend's. */
static inline void slb_xchg_count_status(struct slb_wcount *lis, int status, bool local,
                                         int64_t dir)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        slb_count_add(&lis->v[SLB_LIS_REQ_1XX + cls - 1], (uint64_t)dir);
    slb_count_add(&lis->v[SLB_LIS_REQS], (uint64_t)dir);
    if (cls == 5)
        slb_count_add(&lis->v[local ? SLB_LIS_5XX_LOCAL : SLB_LIS_5XX_BACKEND], (uint64_t)dir);
}

/* The request (its head parsed at start_us, 0: never started) has ended: the listener's
 * request-duration histogram. */
static inline void slb_xchg_count_duration(struct slb_wcount *lis, uint64_t start_us,
                                           uint64_t now_us)
{
    if (start_us)
        slb_hist_observe(lis, SLB_LIS_DURATION, now_us - start_us);
}

/* A backend's final response head arrived at now_us: the server's response-time histogram
 * (from *sent_us, then cleared), its request and failure counters, the listener's. */
void slb_xchg_count_head(struct slb_wcount *lis, struct slb_wcount *srv, int status,
                         uint64_t *sent_us, uint64_t now_us);

/* The access log's "error" for a failure of reason f (see slb_access_error_name). */
static inline uint8_t slb_xchg_fail_code(enum slb_srv_fail f)
{
    return (uint8_t)(f + 1);
}

/* The connect to srv failed for reason f: logged, counted, and reported to the passive health
 * checks. */
void slb_xchg_connect_failed(int wid, const struct slb_listener_rt *l, struct slb_srv_rt *srv,
                             enum slb_srv_fail f, const char *why);

/* The exchange with srv (NULL when none was chosen) failed and the client gets status (or a
 * cut): logged and reported to the passive health checks. A timeout (504) is the server's
 * only when it had the whole request and did not answer: a slow upload or a client that does
 * not read must not get servers ejected. */
void slb_xchg_failed(int wid, const struct slb_listener_rt *l, struct slb_srv_rt *srv, int status,
                     bool req_done, bool resp_head_done, enum slb_srv_fail f, const char *why);

/* The request timeout (request_timeout_s): a fixed deadline from the moment the request first
 * goes to a backend until its body is sent and the response head has arrived, which moving
 * bytes do not push back; after that an inactivity limit on the response body. */
/* Milliseconds until the fixed deadline, which starts (*deadline_ms set) at the first call. */
static inline uint64_t slb_xchg_deadline_in(const struct slb_listener_cfg *cfg,
                                            uint64_t *deadline_ms, uint64_t now_ms)
{
    if (!*deadline_ms)
        *deadline_ms = now_ms + (uint64_t)cfg->request_timeout_s * 1000u;
    return *deadline_ms > now_ms ? *deadline_ms - now_ms : 0;
}
/* When the exchange's timer is due: the fixed deadline while fixed, else the inactivity one. */
static inline uint64_t slb_xchg_due(const struct slb_listener_cfg *cfg, bool fixed,
                                    uint64_t deadline_ms, uint64_t last_io_ms)
{
    return fixed ? deadline_ms : last_io_ms + (uint64_t)cfg->request_timeout_s * 1000u;
}
/* The log's words for a request timeout that passed. */
static inline const char *slb_xchg_timeout_why(bool req_done, bool resp_head_done)
{
    return !resp_head_done ? "response timeout"
           : !req_done     ? "request body timeout"
                           : "response body stalled";
}

/* One exchange's facts for its access-log line; those of the client connection (TLS, wire
 * bytes) are read from it by slb_xchg_log. */
struct slb_xchg_log {
    const struct slb_access_rec *rec;
    const char *proto; /* NULL: the request could not be parsed */
    unsigned client_port;
    uint64_t bytes_in, bytes_out;
    /* The status, the server (or the key of the one last tried), why slbd answered 5xx itself
     * and when the response head arrived. */
    const struct slb_exchange *e;
};
/* Write the access-log line of an exchange of client connection t (at client_ip, served by
 * listener l). The wire bytes are the connection's since *wire_in/out, which move on: the
 * requests of one connection share them. */
void slb_xchg_log(struct slb_worker *w, const struct slb_listener_rt *l, const struct slb_tconn *t,
                  const char *client_ip, const struct slb_xchg_log *x, uint64_t *wire_in,
                  uint64_t *wire_out);

#endif
