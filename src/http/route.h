/* SPDX-License-Identifier: Apache-2.0 */
/* Who may talk to an http/https listener and which server serves it, as pure functions of the
 * configuration snapshot: the client ACL, sticky cookie values, server usability, and the
 * client address as text. The proxy (http/proxy.c) calls them per connection or request. */
#ifndef SLB_HTTP_ROUTE_H
#define SLB_HTTP_ROUTE_H

#include "config/config.h"
#include "config/snapshot.h"
#include "http/parser.h"

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

#endif
