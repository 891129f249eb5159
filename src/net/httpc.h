/* SPDX-License-Identifier: Apache-2.0 */
/* The outbound HTTP(S) client: libcurl's multi-socket API driven by one slbd event loop (the
 * control loop), so requests to etcd, ACME and OCSP servers never block and never need a
 * thread of their own. Generic: nothing here knows what the requests are for. */
#ifndef SLB_NET_HTTPC_H
#define SLB_NET_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event/loop.h"

struct slb_httpc_req;

/* What a finished request reports. rc is 0 when a response arrived (whatever its status) or a
 * negative code: -ETIMEDOUT, -ECONNREFUSED (no connection could be made), SLB_ETLS (handshake
 * or certificate), SLB_ETOOBIG (body over max_body), SLB_EPROTO, -EIO (other transfer errors).
 * connected tells whether the request may have reached the server (false: safe to retry
 * anywhere). body is the buffered response body (NUL-terminated, empty when streamed); it and
 * error live until the done callback returns. */
struct slb_httpc_result {
    int rc;
    long status;
    bool connected;
    const char *body;
    size_t body_len;
    const char *error; /* a sentence for logs when rc < 0, else "" */
};

/* A piece of a streamed response body as it arrives (not aligned to anything the server
 * meant). Return 0 to go on or a negative code to abort the transfer, which then completes
 * with that code. */
typedef int (*slb_httpc_chunk_cb)(struct slb_httpc_req *req, long status, const char *buf,
                                  size_t len, void *data);
/* Called exactly once per request that was not cancelled, from the loop (never from inside
 * slb_httpc_start). The request is freed after it returns. */
typedef void (*slb_httpc_done_cb)(struct slb_httpc_req *req, const struct slb_httpc_result *res,
                                  void *data);

/* One request. Strings are copied by slb_httpc_start; nothing needs to outlive the call. */
struct slb_httpc_opts {
    const char *method;         /* NULL: GET, or POST when a body is given */
    const char *url;            /* http:// or https:// only */
    const char *const *headers; /* "Name: value" strings, NULL-terminated; may be NULL */
    const void *body;
    size_t body_len;
    uint32_t timeout_ms;         /* whole request; 0: none (long-lived streams) */
    uint32_t connect_timeout_ms; /* 0: 10 s */
    /* Fail with -ETIMEDOUT when nothing arrives for this long (from the start, then from the
     * last piece of body); for streams whose server sends something regularly. 0: none. */
    uint32_t idle_timeout_ms;
    size_t max_body; /* buffered responses only; 0: 16 MiB */
    /* TLS: a CA bundle to verify the server with (NULL: the system's), and a client
     * certificate (PEM, leaf then intermediates) with its key for TLS client authentication. */
    const char *ca_file;
    const char *cert_file;
    const char *key_file;
    slb_httpc_chunk_cb on_chunk; /* non-NULL: stream the body through it instead of buffering */
    slb_httpc_done_cb on_done;
    void *data;
};

/* The client of one loop: a curl multi handle, its timer and one watch per socket. Embedded
 * in its owner (the control thread); every request and callback runs on that loop's thread. */
struct slb_httpc {
    struct slb_loop *loop;
    void *multi; /* CURLM * */
    struct slb_timer timer;
    struct slb_httpc_req *reqs; /* in flight, doubly linked */
    struct httpc_sock *socks;   /* watched sockets, doubly linked */
    unsigned nreqs;
};

int slb_httpc_init(struct slb_httpc *c, struct slb_loop *loop);
/* Aborts every request without calling its callbacks. */
void slb_httpc_deinit(struct slb_httpc *c);
/* Start a request; its result comes to opts->on_done. Returns 0 or a negative code (out of
 * memory, SLB_EINVAL for a missing URL or callback); *reqp (may be NULL) receives the handle. */
int slb_httpc_start(struct slb_httpc *c, const struct slb_httpc_opts *opts,
                    struct slb_httpc_req **reqp);
/* The value of response header name (case-insensitive; the first of repeated ones) copied into
 * out (NUL-terminated, truncated to cap); false when the response has no such header. Only
 * from inside the request's done callback, for a response (rc 0). */
bool slb_httpc_header(struct slb_httpc_req *req, const char *name, char *out, size_t cap);
/* Abort a request: no callback is called for it after this returns. Safe from inside its own
 * chunk callback; a no-op from inside its done callback. */
void slb_httpc_cancel(struct slb_httpc_req *req);

#endif
