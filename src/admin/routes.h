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
/* GET /v1/stats: ?scope=node (the default) or cluster (404 not_clustered on a single node). */
void slb_admin_stats(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp);
/* GET /metrics[?certificates=false]: false leaves out the per-certificate series. */
void slb_admin_metrics(struct slb_ctl *ctl, bool certificates, struct slb_admin_resp *resp);

/* Lists (admin/pages.c): ?limit=N&after=KEY. Without either, a list answers all its items in
 * their usual order; with them, items in byte order of their key (a certificate's id, a
 * listener's, group's or key's name, a server's address:port), the first `limit` after `after`,
 * and "next" (the last key of the page) while more remain. */
#define SLB_ADMIN_PAGE_MAX 1000
#define SLB_ADMIN_PAGE_MAX_TEXT "1000"
#define SLB_ADMIN_PAGE_FILTERS 6
struct slb_admin_page {
    size_t limit; /* 0: no limit */
    bool paged;   /* limit or after given: key order */
    bool has_after;
    char after[SLB_ADMIN_SEG];
};
/* False (resp filled) for an unknown parameter (filters: the list's own, NULL-terminated) or a
 * bad limit or after. */
bool slb_admin_page_parse(const struct slb_admin_req *req, const char *const *filters,
                          struct slb_admin_page *pg, struct slb_admin_resp *resp);
/* Query parameter name, percent-decoded into out: 1 given, 0 absent, -1 given twice, without a
 * value, too long or with control bytes. */
int slb_admin_param(const struct slb_admin_req *req, const char *name, char *out, size_t size);
/* Filter parameter name into out ("" when absent); false with 400 invalid_value (resp filled)
 * unless absent or given once as one of choices (NULL: any non-empty value). */
bool slb_admin_filter_enum(const struct slb_admin_req *req, const char *name,
                           const char *const *choices, char *out, size_t size,
                           struct slb_admin_resp *resp);
/* The page of keys[0..n): fills idx with item indices and returns their number (SIZE_MAX when
 * out of memory); *more when items remain after it. idx holds n entries. */
size_t slb_admin_page_select(const struct slb_admin_page *pg, const char *const *keys, size_t n,
                             size_t *idx, bool *more);
/* Answer {coll: page (owned; NULL: out of memory), "next": next (when not NULL)}. */
void slb_admin_page_answer(struct slb_admin_resp *resp, const char *coll, json_t *page,
                           const char *next);
/* Answer the page of items (owned, an array of objects) with key giving each item's key. */
void slb_admin_list_json(struct slb_admin_resp *resp, const char *coll, json_t *items,
                         const struct slb_admin_page *pg,
                         void (*key)(const json_t *item, char *buf, size_t size));
/* key for items keyed by their "name". */
void slb_admin_key_name(const json_t *item, char *buf, size_t size);
/* routes.c: false with 400 unknown_parameter (resp filled) when the query names a parameter
 * not in accepted (NULL-terminated, or NULL for none). */
bool slb_admin_params_ok(const struct slb_admin_req *req, const char *const *accepted,
                         struct slb_admin_resp *resp);

#endif
