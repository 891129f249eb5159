/* SPDX-License-Identifier: Apache-2.0 */
/* The state of one HTTP/1.x exchange, and the worker's lists that keep these states and the
 * connections' response-head buffers between requests, so that a keep-alive request
 * allocates nothing and an idle connection holds neither. */
#ifndef SLB_HTTP_XCHG_H
#define SLB_HTTP_XCHG_H

#include "http/parser.h"
#include "http/rewrite.h"

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
    int attempts;
    int status;
    /* request */
    uint8_t method;
    bool req_keep_alive, req_done, head_only;
    bool upgrade_req;  /* the request asked for a protocol upgrade we forwarded */
    uint8_t req_minor; /* HTTP/1.x minor version of the request */
    uint8_t req_body;
    /* req_ready: body bytes at the front of the input buffer to send as they are (for a
     * chunked body, data or trailer bytes; our framing is in req_chunk.frame). */
    uint64_t req_remaining, req_ready;
    struct slb_rechunk req_chunk;
    uint64_t resp_start_ms;
    uint64_t start_us; /* request head parsed, for the request duration histogram */
    uint64_t resp_us;  /* response head received, for the access log */
    /* Why slbd answered 5xx itself (see slb_access_error_name) and the server it last tried */
    uint8_t fail;
    const char *fail_srv;
    uint64_t sent_us;    /* request head handed to the backend, for the response histogram */
    uint64_t last_io_ms; /* last time bytes moved during an exchange or tunnel */
    uint64_t exchange_deadline_ms; /* request_timeout_s after the request first went out */
    /* response */
    bool resp_head_done, resp_done, up_keep_alive;
    bool body_unread;  /* answered before the request body was all read: the connection ends */
    bool resp_unchunk; /* chunked from the backend, decoded for an HTTP/1.0 client */
    bool client_shut, up_shut; /* tunnel: our write side towards that peer is shut down */
    uint8_t resp_body;
    uint64_t resp_remaining, resp_ready;
    struct slb_rechunk resp_chunk; /* re-framed for an HTTP/1.1 client, decoded for 1.0 */
    /* accounting */
    uint64_t req_bytes_in, resp_bytes_out;
    /* Per server of the group: already tried for this request (see slb_xchg_tried). */
    uint8_t *tried;
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

#endif
