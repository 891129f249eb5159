/* SPDX-License-Identifier: Apache-2.0 */
/* The operations layer: every change an operator (or a program) can make to the running
 * configuration and the certificate store, without any transport. The admin API is a route
 * table over these functions; the console, a cluster watcher and ACME call the same ones.
 *
 * Each operation runs on the control thread, validates its input against the current state,
 * checks the caller's expected revision, persists the result and activates it (every worker
 * has adopted it when the call returns), or changes nothing and fills a struct slb_err whose
 * status is the HTTP status an API answers with. Operations never parse HTTP, query strings
 * or request bodies: they take material (a normalized JSON object of the configuration's own
 * schema, certificate PEM text).
 *
 * Operations are written as one synchronous call chain: the state directory writes at once.
 * In cluster mode the admin API runs each write in a coroutine (event/coro.h), one at a time,
 * and the etcd backend's calls made from it yield to the control loop until etcd answered:
 * the loop (admin reads, health checks, OCSP) goes on meanwhile, and what would change the
 * state under the waiting operation (the watch, ticket rotation, ACME, OCSP, reload) waits for
 * it (docs/architecture.md, "Cluster mode"). Other callers (the watch, ACME, start-up) call
 * them outside a coroutine, where the backend's calls are synchronous and bounded. */
#ifndef SLB_OPS_OPS_H
#define SLB_OPS_OPS_H

#include "cert/store.h"
#include "cert/validate.h"
#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct slb_ctl;

/* A revision: a quoted hash of a resource's JSON (compact, keys sorted), so it changes exactly
 * when the resource changes and survives restarts. The admin API sends it as the ETag. */
#define SLB_OPS_REV_SIZE 40

/* How to make a change. */
struct slb_op {
    /* The revisions the change was based on, in If-Match syntax: NULL (no condition), "*"
     * (the resource exists), or one or more quoted revisions separated by commas. When the
     * resource's current revision is not listed the operation fails with 412
     * precondition_failed before anything is touched. */
    const char *expect;
    /* Validate everything (bind addresses and TLS contexts included), store and activate
     * nothing. */
    bool dry_run;
};

/* 0 when changes are accepted; 503 upgrading while the daemon hands the state over to a new
 * process (slbd --upgrade), which may have read it already: every change below checks it
 * first, and a transport may ask before it reads a request's body. */
int slb_ops_writable(struct slb_ctl *ctl, struct slb_err *err);

/* out receives the revision of resource (SLB_OPS_REV_SIZE bytes; "" when out of memory). */
void slb_ops_revision(const json_t *resource, char *out);
/* 0 when op (may be NULL) accepts resource's current revision; otherwise 412
 * precondition_failed naming what ("listener", "certificate", ...). */
int slb_ops_precondition(const struct slb_op *op, const json_t *resource, const char *what,
                         struct slb_err *err);

/* --- reading: borrowed views of the active state, valid until the next change --- */

/* The normalized document of the active configuration. */
const json_t *slb_ops_config(struct slb_ctl *ctl);
/* The generation of the active snapshot (0 before the first). */
unsigned long long slb_ops_generation(struct slb_ctl *ctl);
/* What /v1/stats and /metrics are computed from (metrics/metrics.h), borrowed. */
struct slb_metrics_view;
void slb_ops_metrics_view(struct slb_ctl *ctl, struct slb_metrics_view *v);

/* --- cluster mode (daemon/cluster.h) --- */

/* False on a single node; else whether etcd is reachable and the revision this node serves. */
bool slb_ops_cluster(struct slb_ctl *ctl, bool *connected, long long *revision);
/* After a change was answered: this node serves the revision of its newest write. */
void slb_ops_cluster_wrote(struct slb_ctl *ctl);
/* An admin write that ran in a coroutine (below) finished: the watch goes on. */
void slb_ops_cluster_write_done(struct slb_ctl *ctl);
/* The control loop stops: a write waiting for etcd fails (503 cluster_unavailable) now. */
void slb_ops_cluster_abort(struct slb_ctl *ctl);
/* GET /v1/cluster's answer (owned), or NULL on a single node. */
json_t *slb_ops_cluster_status(struct slb_ctl *ctl);
/* After a 409 conflict (another node changed the configuration or a certificate since this
 * node applied it): read them from etcd again and serve them, so the change can be validated
 * again against them. 0 or err (503 cluster_unavailable). */
int slb_ops_cluster_refresh(struct slb_ctl *ctl, struct slb_err *err);

/* --- listeners and groups: named members of the document's "listeners" and "groups" --- */

enum slb_ops_kind { SLB_OPS_LISTENER = 0, SLB_OPS_GROUP = 1 };

/* The member of arr whose "name" is name (its index in *idx), or NULL. */
json_t *slb_ops_find_named(const json_t *arr, const char *name, size_t *idx);
/* The listener or group named name (borrowed), or NULL (404 not_found in err when given). */
json_t *slb_ops_item_get(struct slb_ctl *ctl, enum slb_ops_kind kind, const char *name,
                         struct slb_err *err);
/* Create from obj (the schema's object; normalized here): 409 name_taken. *out (owned, may be
 * NULL) is the stored object. */
int slb_ops_item_create(struct slb_ctl *ctl, enum slb_ops_kind kind, const json_t *obj,
                        const struct slb_op *op, json_t **out, struct slb_err *err);
/* Replace the member named name with obj (its name, when given, must be name). */
int slb_ops_item_update(struct slb_ctl *ctl, enum slb_ops_kind kind, const char *name,
                        const json_t *obj, const struct slb_op *op, json_t **out,
                        struct slb_err *err);
/* Delete; a group that listeners use is 409 in_use. */
int slb_ops_item_delete(struct slb_ctl *ctl, enum slb_ops_kind kind, const char *name,
                        const struct slb_op *op, struct slb_err *err);

/* Start (stopped false) or stop a listener: its "status" field, through slb_ops_item_update.
 * A stopped listener keeps its configuration and closes its socket once the workers adopted
 * the change (connections in progress finish as for a deleted listener); starting binds it
 * again (400 bind_failed when that fails). *out as for slb_ops_item_update. */
int slb_ops_listener_status(struct slb_ctl *ctl, const char *name, bool stopped,
                            const struct slb_op *op, json_t **out, struct slb_err *err);

/* Replace the settings object. */
int slb_ops_settings_update(struct slb_ctl *ctl, const json_t *settings, const struct slb_op *op,
                            json_t **out, struct slb_err *err);

/* Apply a document: its listeners, groups and settings (each optional) replace the current
 * ones; other members are 400 unknown_field. The precondition is on the whole document. *out
 * is the normalized document stored (with dry_run: the one that would be). */
int slb_ops_apply(struct slb_ctl *ctl, const json_t *doc, const struct slb_op *op, json_t **out,
                  struct slb_err *err);

/* --- a group's servers, named "ADDRESS:PORT" or "[IPv6]:PORT" --- */

/* The server of group named by key (borrowed; addresses compare by value), or NULL with
 * 404 not_found (the group or the server). */
json_t *slb_ops_server_get(struct slb_ctl *ctl, const char *group, const char *key,
                           struct slb_err *err);
/* Add one server ({address, port[, weight, ...]}): 409 name_taken when the group has it. */
int slb_ops_server_add(struct slb_ctl *ctl, const char *group, const json_t *server,
                       const struct slb_op *op, json_t **out, struct slb_err *err);
/* Change one server: with merge, the fields of server over the current ones (PATCH);
 * otherwise server is the whole new object (PUT). Its address and port, when given, must be
 * the key's. */
int slb_ops_server_update(struct slb_ctl *ctl, const char *group, const char *key,
                          const json_t *server, bool merge, const struct slb_op *op, json_t **out,
                          struct slb_err *err);
int slb_ops_server_remove(struct slb_ctl *ctl, const char *group, const char *key,
                          const struct slb_op *op, struct slb_err *err);

/* --- certificates --- */

/* The certificate resource (slb_cert_to_json plus "used_by": the listeners using it); owned. */
json_t *slb_ops_cert_resource(struct slb_ctl *ctl, const struct slb_cert *c);
/* All certificates' resources, sorted by id; owned. */
json_t *slb_ops_cert_list(struct slb_ctl *ctl);
/* Borrowed, or NULL with 404 not_found. */
struct slb_cert *slb_ops_cert_get(struct slb_ctl *ctl, const char *id, struct slb_err *err);
/* Create from material (m->type and m->name required; m->id optional). *out is borrowed. The
 * precondition of a create has no resource to compare with and is ignored. */
int slb_ops_cert_create(struct slb_ctl *ctl, const struct slb_certval_upload *m,
                        const struct slb_op *op, struct slb_cert **out, struct slb_err *err);
/* Replace id's material (m->type SLB_CERT_NONE or the same type; m->name optional). Listeners
 * using it get new TLS contexts before this returns; if they cannot be built the store goes
 * back to the previous version. */
int slb_ops_cert_replace(struct slb_ctl *ctl, const char *id, const struct slb_certval_upload *m,
                         const struct slb_op *op, struct slb_cert **out, struct slb_err *err);
/* Set the CRLs of CA certificate id from PEM, activated the same way. */
int slb_ops_cert_set_crl(struct slb_ctl *ctl, const char *id, const char *pem,
                         const struct slb_op *op, struct slb_cert **out, struct slb_err *err);
/* Give id another display name: no new material, the same version, nothing to rebuild. */
int slb_ops_cert_rename(struct slb_ctl *ctl, const char *id, const char *name,
                        const struct slb_op *op, struct slb_cert **out, struct slb_err *err);
/* Delete; 409 in_use when a listener uses it. */
int slb_ops_cert_delete(struct slb_ctl *ctl, const char *id, const struct slb_op *op,
                        struct slb_err *err);
/* The OCSP stapling state of certificate id (cert/ocsp_fetch.h); owned. Not part of the
 * certificate's revision: it changes on its own. */
json_t *slb_ops_cert_ocsp(struct slb_ctl *ctl, const char *id);
/* Staple an uploaded DER OCSP response for certificate id, verified like a fetched one. */
int slb_ops_cert_set_ocsp(struct slb_ctl *ctl, const char *id, const unsigned char *der, size_t len,
                          struct slb_err *err);

#endif
