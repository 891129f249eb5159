/* SPDX-License-Identifier: Apache-2.0 */
/* Who may talk to an http/https listener and which server serves it, as pure functions of the
 * configuration snapshot: the client ACL, sticky cookie values, server usability, and the
 * client address as text. The proxy (http/proxy.c) calls them per connection or request. */
#ifndef SLB_HTTP_ROUTE_H
#define SLB_HTTP_ROUTE_H

#include "config/config.h"
#include "config/snapshot.h"
#include "http/parser.h"
#include "http/rewrite.h"

#include <openssl/ssl.h>

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* The listener's allow/deny CIDR list applied to the client address (IPv4-mapped IPv6
 * addresses match IPv4 entries). */
bool slb_http_acl_allows(const struct slb_listener_cfg *cfg, const struct sockaddr_storage *peer);

/* The sticky cookie value naming server i of g: its identity hash (SLB_STICKY_ID_LEN hex
 * digits), so it is stable across configuration changes and identical on every worker. */
void slb_http_sticky_value(const struct slb_group_rt *g, int i, char *out, size_t size);
/* The server a sticky cookie value names, or -1. */
int slb_http_sticky_lookup(const struct slb_group_rt *g, struct slb_slice v);

/* Weight above 0 and healthy: may take a new request. */
bool slb_http_server_usable(const struct slb_group_rt *g, int i);

/* The client address for headers and logs; IPv4-mapped IPv6 addresses written as IPv4. */
void slb_http_format_ip(const struct sockaddr_storage *a, char *out, size_t size);

/* The Host (or the absolute target's authority) names a site other than the one the TLS
 * handshake picked by SNI (RFC 9110 7.4): answered 421. ssl NULL: plain http, never. */
bool slb_http_misdirected(SSL *ssl, const struct slb_http_msg *m);

/* Room for the client certificate fields of struct slb_fwd_info. */
struct slb_fwd_certs {
    char subject[512], issuer[512], fingerprint[65];
};
/* What every request forwarded from this client connection carries: X-Forwarded-*, and the
 * client certificate's fields when the listener verifies clients (kept in certs). The caller
 * sets upgrade and default_host. */
void slb_http_fwd_init(struct slb_fwd_info *fwd, struct slb_fwd_certs *certs,
                       const struct slb_listener_rt *l, SSL *ssl, const char *client_ip,
                       unsigned local_port);

/* What a response carries for sticky sessions: the Set-Cookie of "insert" mode, or the cookie
 * whose value "server" mode prefixes with the server's identity. */
struct slb_sticky_out {
    char cookie[160], prefix[20];
    const char *set_cookie, *prefix_name; /* NULL when not used */
};
void slb_http_sticky_response(struct slb_sticky_out *o, const struct slb_listener_cfg *cfg,
                              const struct slb_group_rt *g, int srv_idx, bool tls);

#endif
