/* SPDX-License-Identifier: Apache-2.0 */
/* The ACME manager of the control thread: accounts (key generated here, stored 0600 in
 * DIR/acme/), certificates of kind acme and their orders (RFC 8555): new order, the http-01 or
 * tls-alpn-01 answers published for the workers (acme/challenge.h), finalize with a CSR,
 * download of the chain into the certificate store, renewal at two thirds of the lifetime,
 * retries with backoff. Order progress is stored so a restart resumes a pending order. */
#ifndef SLB_ACME_ORDER_H
#define SLB_ACME_ORDER_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_certstore;
struct slb_httpc;
struct slb_acme;

/* A certificate was stored (created = true) or replaced by a renewal: the owner republishes
 * the listeners that use it. Returns 0, or a negative code to report as the order's error. */
typedef int (*slb_acme_stored_cb)(const char *id, bool created, void *data, struct slb_err *err);

struct slb_acme *slb_acme_new(struct slb_certstore *store, struct slb_httpc *httpc,
                              const char *state_dir, slb_acme_stored_cb stored, void *data,
                              struct slb_err *err);
/* Cancels requests in flight and withdraws published challenges. NULL is accepted. */
void slb_acme_free(struct slb_acme *a);
/* Start due orders and renewals, reap retired challenge tables. Called each second. */
void slb_acme_tick(struct slb_acme *a);

/* POST /v1/acme/accounts {name, directory, email, ca_certificate}. 0 and *out (the resource,
 * new reference), or SLB_EINVAL with err. */
int slb_acme_account_create(struct slb_acme *a, const json_t *body, json_t **out,
                            struct slb_err *err);
json_t *slb_acme_accounts_json(struct slb_acme *a);
json_t *slb_acme_account_json(struct slb_acme *a, const char *name); /* NULL: none */

/* POST /v1/certificates with "acme": {account, domains, key_type, challenge}. 0 and *out
 * (the resource: id, name, type, acme), or SLB_EINVAL with err. */
int slb_acme_cert_create(struct slb_acme *a, const json_t *body, json_t **out, struct slb_err *err);
/* The "acme" member of certificate id's resource, or NULL when it is not an ACME
 * certificate. */
json_t *slb_acme_cert_json(struct slb_acme *a, const char *id);
/* The resource of an ACME certificate not issued yet ({id, name, type, acme}); NULL when id
 * is not one. */
json_t *slb_acme_pending_json(struct slb_acme *a, const char *id);
/* ACME certificates not in the store yet, as resources (for the list). */
json_t *slb_acme_pending_list(struct slb_acme *a);

/* What the metrics show of ACME certificate i (0 <= i < slb_acme_count). */
struct slb_acme_info {
    const char *id, *name;
    const char *state; /* pending, valid, renewing, failed */
    int64_t renew_at;  /* unix seconds; 0: not issued yet */
    uint64_t failures; /* failed attempts since start */
};
size_t slb_acme_count(struct slb_acme *a);
bool slb_acme_info_at(struct slb_acme *a, size_t i, struct slb_acme_info *out);

#endif
