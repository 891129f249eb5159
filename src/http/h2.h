/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/2 towards clients of https listeners (ALPN "h2"). The HTTP/1.1 proxy hands a TLS
 * connection over once its handshake selected h2; from then on it is an h2 connection owned
 * by the same worker, whose streams each become one HTTP/1.1 request to a backend. */
#ifndef SLB_HTTP_H2_H
#define SLB_HTTP_H2_H

#include "http/bind.h"
#include "net/transport.h"
#include "net/worker_ctx.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

struct slb_http_worker;

/* What the handing-over connection gives away. On success the h2 connection owns the socket,
 * the TLS state (t), the configuration holds (b) and the listener's active-connection count;
 * on failure nothing was taken. */
struct slb_h2_handoff {
    struct slb_worker *w;
    struct slb_http_worker *hw;
    struct slb_http_bind b;
    struct slb_tconn t;
    const char *client_ip;
    uint16_t client_port;
    const struct sockaddr_storage *peer; /* the client's address; NULL: unknown */
    uint16_t local_port;
    uint64_t wire_in_seen, wire_out_seen; /* wire bytes already counted for the listener */
};

/* 0, or -ENOMEM. */
int slb_h2_start(const struct slb_h2_handoff *h);

/* True when the TLS handshake of ssl selected h2. */
bool slb_h2_selected(SSL *ssl);

#endif
