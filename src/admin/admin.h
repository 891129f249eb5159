/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API: HTTP/1.1 + JSON on the control thread's loop, Bearer-token protected. */
#ifndef SLB_ADMIN_ADMIN_H
#define SLB_ADMIN_ADMIN_H

#include "core/err.h"

#include <jansson.h>
#include <stddef.h>

struct slb_ctl;
struct slb_admin;
struct slb_options;

#define SLB_ADMIN_MAX_BODY (1u << 20) /* bodies above 1 MiB get 413 */

/* Addresses the admin API listens on at once (--admin given several times). */
#define SLB_ADMIN_MAX_LISTEN 4

/* Listen on each of opt's admin addresses: "ADDR:PORT" (TLS with admin_cert and admin_key)
 * or "unix:PATH". The first one serves on inherited_fd instead when it is >= 0 (its listening
 * socket, handed over by the previous process on an upgrade; taken even on failure). */
struct slb_admin *slb_admin_new(struct slb_ctl *ctl, const struct slb_options *opt,
                                int inherited_fd, struct slb_err *err);
/* The first address's listening socket (to hand over to the next process). */
int slb_admin_listen_fd(const struct slb_admin *a);
/* After a hand-over: the unix socket paths now belong to the next process; free leaves them. */
void slb_admin_keep_paths(struct slb_admin *a);
void slb_admin_free(struct slb_admin *a);

/* A parsed admin request handed to the routes. */
struct slb_admin_req {
    const char *method; /* NUL-terminated copies */
    const char *path;   /* without the query string */
    const char *query;  /* may be "" */
    const char *content_type;
    const char *if_match; /* the If-Match headers' values joined by ", ", or NULL */
    const char *body;
    size_t body_len;
};

/* An ETag: a quoted hash of the resource's JSON (see slb_admin_etag). */
#define SLB_ADMIN_ETAG_SIZE 40

/* What a route answers: status plus either a JSON value (owned, serialized compactly) or a
 * text body (malloc'd, owned). */
struct slb_admin_resp {
    int status;
    json_t *json;
    char *text;
    size_t text_len;
    const char *content_type;
    const char *allow;              /* for 405 */
    const char *headers;            /* extra header lines, each ending in CRLF (static), or NULL */
    char etag[SLB_ADMIN_ETAG_SIZE]; /* sent as ETag when not empty */
    char revision[24];              /* cluster mode: sent as X-Slbd-Revision when not empty */
};

void slb_admin_route(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp);
/* Set resp to the error JSON of SPEC.md from err. */
void slb_admin_error(struct slb_admin_resp *resp, const struct slb_err *err);
void slb_admin_error_simple(struct slb_admin_resp *resp, int status, const char *code,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
