/* SPDX-License-Identifier: Apache-2.0 */
/* The answers slbd gives to an ACME CA's validation requests while an order is pending: the
 * http-01 key authorizations by token, and the tls-alpn-01 challenge certificates by domain
 * (RFC 8737). The control thread publishes an immutable table with one atomic store; the
 * workers read it on the request and handshake paths without a lock. A replaced table is kept
 * for a grace period before it is freed, as OCSP staples are. */
#ifndef SLB_ACME_CHALLENGE_H
#define SLB_ACME_CHALLENGE_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_ACME_HTTP01_PREFIX "/.well-known/acme-challenge/"
#define SLB_ACME_TLS_ALPN "acme-tls/1"

/* A table under construction (control thread), then published and immutable. */
struct slb_acme_challenges;

struct slb_acme_challenges *slb_acme_challenges_new(void);
/* Copies token and key authorization. 0 or -ENOMEM. */
int slb_acme_challenges_add_http01(struct slb_acme_challenges *t, const char *token,
                                   const char *key_authorization);
/* Takes references on cert and key. 0 or -ENOMEM. */
int slb_acme_challenges_add_alpn(struct slb_acme_challenges *t, const char *domain, X509 *cert,
                                 EVP_PKEY *key);
/* For a table never published. NULL is accepted. */
void slb_acme_challenges_free(struct slb_acme_challenges *t);

/* Control thread: make t (may be NULL: nothing pending) the table workers read; the one it
 * replaces is retired. */
void slb_acme_challenges_publish(struct slb_acme_challenges *t, uint64_t now_ms);
/* Control thread: free retired tables older than the grace period (all with force, at exit). */
void slb_acme_challenges_reap(uint64_t now_ms, bool force);

/* Any thread: the key authorization to answer GET path (the request target, without query)
 * with, or NULL when path is not a pending http-01 token. The string stays valid for the grace
 * period, far longer than answering one request takes. */
const char *slb_acme_http01_answer(const char *path, size_t len);
/* The same for a parsed request: GET or HEAD of an origin-form target (query ignored). */
struct slb_http_msg;
const char *slb_acme_http01_request(const struct slb_http_msg *m);
/* Any thread (ClientHello callback): the challenge certificate and key for a tls-alpn-01
 * handshake to domain; false when none is pending. */
bool slb_acme_alpn_lookup(const char *domain, size_t len, X509 **cert, EVP_PKEY **key);
/* Whether an ALPN extension (its protocol list, as OpenSSL hands it) offers acme-tls/1. */
bool slb_acme_alpn_offered(const unsigned char *list, size_t len);

#endif
