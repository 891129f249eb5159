/* SPDX-License-Identifier: Apache-2.0 */
/* The OCSP schedule of the control thread: for every server certificate whose leaf names an
 * OCSP responder, fetch a response through the control loop's HTTP client, verify it, publish
 * it as the certificate's staple and store it in DIR/certs/<id>.ocsp.der; refresh it at half
 * its validity, retry failures with backoff, keep a still-valid staple while the responder
 * fails and drop it once it expires. Control thread only. */
#ifndef SLB_CERT_OCSP_FETCH_H
#define SLB_CERT_OCSP_FETCH_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_certstore;
struct slb_httpc;
struct slb_ocsp_fetcher;

struct slb_ocsp_fetcher *slb_ocsp_fetcher_new(struct slb_certstore *store, struct slb_httpc *httpc,
                                              const char *state_dir);
/* Cancels requests in flight (no callback runs after). NULL is accepted. */
void slb_ocsp_fetcher_free(struct slb_ocsp_fetcher *f);
/* Follow the store (new, replaced and deleted certificates), drop expired staples, start due
 * fetches. Called each second, and after a certificate change so it takes effect at once. */
void slb_ocsp_fetcher_tick(struct slb_ocsp_fetcher *f);
/* The same after a change of certificate id: follow the store, and only id's entry (NULL:
 * none) drops an expired staple or starts a due fetch; the others wait for the next tick
 * (a replace among 10,000 certificates looks at one). */
void slb_ocsp_fetcher_tick_id(struct slb_ocsp_fetcher *f, const char *id);
/* Verify an uploaded DER response for server certificate id and staple it (and store it).
 * Codes: 404 not_found, 400 not_a_server_certificate, invalid_ocsp_response. */
int slb_ocsp_fetcher_upload(struct slb_ocsp_fetcher *f, const char *id, const unsigned char *der,
                            size_t len, struct slb_err *err);
/* Fetch a response for server certificate id now, waiting at most timeout_ms (on a private
 * loop: the control thread blocks), unless it already has a staple. For must-staple
 * uploads. 0, or SLB_EINVAL with err set (400 must_staple_without_ocsp). */
int slb_ocsp_fetcher_fetch_sync(struct slb_ocsp_fetcher *f, const char *id, uint32_t timeout_ms,
                                struct slb_err *err);
/* The "ocsp" member of a certificate's API resource ({state, status, this_update,
 * next_update, responder, must_staple, last_error, ...}); json null for CA certificates. */
json_t *slb_ocsp_fetcher_json(struct slb_ocsp_fetcher *f, const char *id);
/* What the metrics show of one certificate. false when id is not a server certificate. */
struct slb_ocsp_info {
    const char *state;   /* none, fetching, good, revoked, expired, error */
    int64_t next_update; /* of the staple served, unix seconds; 0 without one */
    uint64_t failures;   /* fetches and uploads that gave no usable response */
};
bool slb_ocsp_fetcher_info(struct slb_ocsp_fetcher *f, const char *id, struct slb_ocsp_info *out);
/* The same for ids asked in increasing order, as slb_certstore_at lists them: *cursor (0
 * before the first) remembers where the walk is, so a scrape of every certificate costs a
 * comparison or two each instead of a binary search through scattered entries. */
bool slb_ocsp_fetcher_info_next(struct slb_ocsp_fetcher *f, const char *id, size_t *cursor,
                                struct slb_ocsp_info *out);

#endif
