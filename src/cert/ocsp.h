/* SPDX-License-Identifier: Apache-2.0 */
/* OCSP material of a server certificate: its responder URL (AIA), the request to send, the
 * verification of a response and the immutable staple object workers hand to clients. */
#ifndef SLB_CERT_OCSP_H
#define SLB_CERT_OCSP_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_cert;

enum slb_ocsp_status { SLB_OCSP_GOOD = 0, SLB_OCSP_REVOKED = 1 };

/* A verified OCSP response, immutable once published. The control thread creates it and
 * publishes it in its certificate's staple slot (slb_ocsp_publish); workers copy der during a
 * handshake without a lock. A replaced staple is kept on the certificate's retired list for a
 * grace period before it is freed (docs/architecture.md, "OCSP stapling"). */
struct slb_ocsp_staple {
    unsigned char *der;
    size_t len;
    enum slb_ocsp_status status;
    int64_t this_update, next_update; /* unix seconds */
    uint64_t retired_ms;              /* monotonic time it was replaced; control only */
    struct slb_ocsp_staple *next;     /* retired list; control only */
};

void slb_ocsp_staple_free(struct slb_ocsp_staple *s);

/* The first OCSP responder URL of the leaf's AIA (malloc'd), or NULL. */
char *slb_ocsp_url(const struct slb_cert *c);
/* Whether the leaf carries the TLS Feature extension with status_request (must-staple). */
bool slb_ocsp_must_staple(const struct slb_cert *c);
/* DER of an OCSP request for the leaf (OPENSSL_malloc'd); needs the issuer in the chain. */
int slb_ocsp_request(const struct slb_cert *c, unsigned char **der, size_t *len,
                     struct slb_err *err);
/* Verify a DER OCSP response for c at time now: a successful response, signed by the issuer
 * or a responder the issuer delegated to, about the leaf, current (thisUpdate not in the
 * future beyond 5 minutes, nextUpdate present and not passed), good or revoked. Returns the
 * staple, or NULL with err set (code invalid_ocsp_response, status 400). */
struct slb_ocsp_staple *slb_ocsp_verify(const struct slb_cert *c, const unsigned char *der,
                                        size_t len, int64_t now, struct slb_err *err);

/* Control thread: make s (owned; NULL to stop stapling) the certificate's staple; the previous
 * one goes to the retired list. */
void slb_ocsp_publish(struct slb_cert *c, struct slb_ocsp_staple *s, uint64_t now_ms);
/* Control thread: free retired staples older than the grace period. */
void slb_ocsp_reclaim(struct slb_cert *c, uint64_t now_ms);
/* Free the staple and the retired list (the certificate is being freed). */
void slb_ocsp_cert_free(struct slb_cert *c);

const char *slb_ocsp_status_name(enum slb_ocsp_status s);

#endif
