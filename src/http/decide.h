/* SPDX-License-Identifier: Apache-2.0 */
/* The decision step of an HTTP request, the same for HTTP/1.x and HTTP/2: from the listener,
 * the client's TLS state and the parsed request head, either an answer slbd makes itself
 * (405, 417, 301, 421, 503) or the group the request is forwarded to, with the sticky cookie
 * that may name its server. No I/O; the only state it touches is the listener's and rules'
 * requests_per_s budgets (core/ratelimit.h) and their counters of refused requests. */
#ifndef SLB_HTTP_DECIDE_H
#define SLB_HTTP_DECIDE_H

#include "config/snapshot.h"
#include "http/parser.h"
#include "http/rewrite.h"
#include "http/rules.h"
#include "net/worker_ctx.h"

#include <openssl/ssl.h>

#include <stdbool.h>

/* The methods an answer 405 names (CONNECT is not among them). */
#define SLB_HTTP_ALLOW "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH\r\n"

/* What to do with a request. Lives on the caller's stack for the time of one request start;
 * extra and sticky point into it or into the request's bytes. */
struct slb_http_decision {
    int status;              /* an answer with this status; 0: forward to wg */
    bool close;              /* the answer ends an HTTP/1.x connection whatever the request asked */
    const char *extra;       /* the answer's extra header lines ("Name: value\r\n"...), or NULL */
    const char *text;        /* the answer's text/plain body (an ACME http-01 key authorization;
                                acme/challenge.h), or NULL for the standard one */
    struct slb_wgroup *wg;   /* forward: the worker's view of the group */
    struct slb_slice sticky; /* forward: the sticky cookie's value in the request, or empty */
    const struct slb_rule *rule; /* the forwarding rule that took the request, or NULL */
    /* A rule's own answer (fixed_response, redirect with its Location in buf): built by
     * slb_http_decision_answer, not as a plain status. */
    bool rule_answer;
    bool limited;   /* a 503 for the listener's or the rule's requests_per_s */
    char buf[2048]; /* room for extra, or a rule redirect's Location */
};

/* Decide for request m arriving on listener l. ws is the worker's hold on the snapshot l
 * lives in (rules name groups of it); wg is the worker's view of the listener's own group
 * (NULL when it has none); ssl is the client's TLS state (NULL for plain http), which the 421
 * check reads; client is the client's address (rules' "source", sticky group choice). In
 * order: CONNECT (405), an Expect other than 100-continue on HTTP/1.1 (417), a pending ACME
 * http-01 token (200 with its key authorization, before any redirect: a CA validates on plain
 * port 80), the listener's redirect_to (301), a Host the TLS handshake did not pick (421), the
 * listener's limits.requests_per_s (503 with Retry-After), the forwarding rules (a path the
 * normalizer refuses: 400; the first matching rule, past its own requests_per_s, answers or
 * names the group), then the group: none or empty answers 503. */
void slb_http_decide(struct slb_http_decision *d, const struct slb_listener_rt *l,
                     struct slb_wsnap *ws, struct slb_wgroup *wg, SSL *ssl,
                     const struct sockaddr_storage *client, const struct slb_http_msg *m);

/* The answer of decision d (d->status != 0) as an HTTP/1.1 response into out: keep_alive says
 * whether the connection stays open after it, head_only that the request was HEAD. */
void slb_http_decision_answer(struct slb_hbuf *out, const struct slb_http_decision *d,
                              bool keep_alive, bool head_only);

#endif
