/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers shared by the admin API's route files. */
#ifndef SLB_ADMIN_ROUTES_H
#define SLB_ADMIN_ROUTES_H

#include "admin/admin.h"

#include <stdbool.h>

struct slb_ctl;

/* Longest path segment after /v1/ (a server's "[IPv6]:port", percent-encoded, fits). */
#define SLB_ADMIN_SEG 128
#define SLB_ADMIN_MAX_SEGS 4

bool slb_admin_method_is(const struct slb_admin_req *req, const char *m);
void slb_admin_not_allowed(struct slb_admin_resp *resp, const char *allow);
json_t *slb_admin_body_object(const struct slb_admin_req *req, struct slb_admin_resp *resp);
/* The same, accepting NUL bytes inside strings (certificate bodies: the validators then
 * report binary input as invalid_pem). */
json_t *slb_admin_body_object_binary(const struct slb_admin_req *req, struct slb_admin_resp *resp);
/* Split "/v1/a/b/..." into at most SLB_ADMIN_MAX_SEGS segments; returns their number, 0 for a
 * path outside /v1/, -1 for an empty or too long segment or too many of them. */
int slb_admin_split(const char *path, char (*seg)[SLB_ADMIN_SEG]);

/* The resource's ETag: its revision (slb_ops_revision). out holds SLB_ADMIN_ETAG_SIZE bytes. */
void slb_admin_etag(const json_t *resource, char *out);
/* Check the request's If-Match against the resource's current revision: true when there is
 * none, when it is "*" or lists it; otherwise fills resp with 412 precondition_failed. The
 * operations check again; checking here first keeps a stale client's answer a 412 whatever
 * else is wrong with its request. */
bool slb_admin_if_match(const struct slb_admin_req *req, const json_t *resource, const char *what,
                        struct slb_admin_resp *resp);
/* Answer v (owned) with its ETag. */
void slb_admin_answer(struct slb_admin_resp *resp, int status, json_t *v);
/* Answer an operation's outcome: err when rc < 0, else status with v (owned; its ETag), or
 * no body for 204. */
void slb_admin_answer_op(struct slb_admin_resp *resp, int rc, const struct slb_err *err, int status,
                         json_t *v);

/* Route families in their own files. */
void slb_admin_certificates(struct slb_ctl *ctl, const char *id, const char *sub,
                            const struct slb_admin_req *req, struct slb_admin_resp *resp);
void slb_admin_servers(struct slb_ctl *ctl, const char *group, const char *server,
                       const struct slb_admin_req *req, struct slb_admin_resp *resp);
/* ACME (admin/acme.c): /v1/acme/accounts[/{name}]; a certificate body with "acme" (true:
 * answered); the "acme" member of a certificate resource; certificates not issued yet. */
void slb_admin_acme(struct slb_ctl *ctl, const struct slb_admin_req *req,
                    struct slb_admin_resp *resp);
bool slb_admin_acme_create(struct slb_ctl *ctl, const json_t *body, bool replace,
                           struct slb_admin_resp *resp);
void slb_admin_acme_decorate(struct slb_ctl *ctl, json_t *resource, const char *id);
bool slb_admin_acme_pending(struct slb_ctl *ctl, const char *id, const struct slb_admin_req *req,
                            struct slb_admin_resp *resp);
json_t *slb_admin_acme_pending_list(struct slb_ctl *ctl);
void slb_admin_stats(struct slb_ctl *ctl, struct slb_admin_resp *resp);
void slb_admin_metrics(struct slb_ctl *ctl, struct slb_admin_resp *resp);

#endif
