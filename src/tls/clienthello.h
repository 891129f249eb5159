/* SPDX-License-Identifier: Apache-2.0 */
/* A strict, pure parser for the server name (SNI) of the TLS ClientHello that opens a TCP
 * stream, so `tcp` listeners can route by name without terminating TLS. */
#ifndef SLB_TLS_CLIENTHELLO_H
#define SLB_TLS_CLIENTHELLO_H

#include <stddef.h>

/* Results below zero; 0 means "need more bytes" and >0 is the length of the name. */
enum {
    SLB_CH_NO_SNI = -1,  /* a valid ClientHello without a server_name extension */
    SLB_CH_NOT_TLS = -2, /* the stream does not start with a TLS handshake record */
    SLB_CH_INVALID = -3, /* TLS framing, but a malformed ClientHello or server name */
    SLB_CH_TOO_BIG = -4, /* the ClientHello does not fit in max bytes (or the name in out) */
};

#define SLB_CH_NAME_MAX 255      /* longest host name we accept, without the NUL */
#define SLB_CH_DEFAULT_MAX 16384 /* what listeners pass as max: one full TLS record */

/* Look at the first len bytes of a TCP stream (buf may be NULL when len is 0) and find the
 * host_name of the server_name extension of the ClientHello they start with.
 *
 * The ClientHello may be fragmented over several handshake records; they are walked in place,
 * nothing is copied but the name. Every length is checked against its container and the whole
 * message is read, so a name is only returned from a ClientHello that is complete and well
 * formed; the record holding its last byte must end with it (bytes in later records, such as
 * early data, are not looked at). The name must be 1..255 bytes of letters, digits, '-' and '.',
 * with no empty label; one trailing dot is accepted and removed.
 *
 * max bounds how many bytes of the stream the ClientHello (record headers included) may take;
 * bytes at or past max are never read, and a hello that needs them gives SLB_CH_TOO_BIG.
 *
 * Returns >0: the name's length; it is written lowercased and NUL-terminated to out, which
 * must hold SLB_CH_NAME_MAX + 1 bytes (a smaller outlen that cannot hold the name gives
 * SLB_CH_TOO_BIG; out may be NULL with outlen 0 to classify only). 0: the bytes so far are a
 * valid beginning of a ClientHello and more are needed (never when len >= max). Otherwise one
 * of SLB_CH_NO_SNI, SLB_CH_NOT_TLS, SLB_CH_INVALID, SLB_CH_TOO_BIG; out is then "".
 *
 * The result only depends on the bytes read, in order, so a prefix of a stream gives either 0
 * or the same result as the whole stream: callers may retry as bytes arrive. */
int slb_clienthello_sni(const unsigned char *buf, size_t len, size_t max, char *out, size_t outlen);

/* A short constant name for a result code, for logs and metrics labels. */
const char *slb_clienthello_strerror(int rc);

#endif
