/* SPDX-License-Identifier: Apache-2.0 */
/* PROXY protocol v1 (text) and v2 (binary) headers that tell a backend the client's address. */
#ifndef SLB_TCP_PROXYPROTO_H
#define SLB_TCP_PROXYPROTO_H

#include <stddef.h>
#include <sys/socket.h>

#define SLB_PP_MAX 232 /* largest header we produce: v1 is at most 107 bytes, v2 16 + 216 */

/* Write a header for a connection from src to dst into out (size >= SLB_PP_MAX). version is 1
 * or 2. Addresses are AF_INET or AF_INET6 (IPv4-mapped IPv6 is written as IPv4); another
 * family gives "PROXY UNKNOWN" (v1) or the LOCAL command (v2). Returns the length written. */
size_t slb_pp_encode(int version, const struct sockaddr *src, const struct sockaddr *dst,
                     unsigned char *out);

/* Parse a header at the start of buf (v1 or v2, detected). Returns the header length (>0) and
 * fills src/dst (family AF_UNSPEC for UNKNOWN/LOCAL), 0 when more bytes are needed, or
 * SLB_EPROTO for an invalid header. Used by tests and by listeners that accept PROXY. */
int slb_pp_decode(const unsigned char *buf, size_t len, struct sockaddr_storage *src,
                  struct sockaddr_storage *dst);

#endif
