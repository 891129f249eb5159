/* SPDX-License-Identifier: Apache-2.0 */
/* Cluster mode on the control thread: the etcd backend's watch (changes made by other nodes,
 * applied in revision order), full resyncs, the node's registration under a lease, and what
 * /healthz, /metrics and GET /v1/cluster say about it. Everything here runs on the control
 * loop through the asynchronous etcd client (cluster/etcd.h); only loads and writes of
 * documents go through the synchronous backend (cluster/backend.c). */
#ifndef SLB_DAEMON_CLUSTER_H
#define SLB_DAEMON_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

struct slb_ctl;
struct slb_options;
struct slb_backend;
struct slb_cluster;

/* The cluster options of the command line (NULL cluster: a single node). */
struct slb_cluster_opts {
    const char *endpoints; /* "URL[,URL...]" */
    const char *node;
    const char *key_file;
    const char *prefix; /* NULL: "/slbd/" */
    const char *cacert, *cert, *key;
};

/* The etcd backend over the state directory dir (its cache), seeded from it when the prefix is
 * empty; *revision receives the store revision the loads that follow may start watching from
 * (0 when etcd could not be reached: the node starts from its cache). */
struct slb_backend *slb_cluster_backend(const struct slb_cluster_opts *o, const char *dir,
                                        int64_t *revision, struct slb_err *err);
/* Start watching and registering, once the configuration is active. */
struct slb_cluster *slb_cluster_start(struct slb_ctl *ctl, const struct slb_cluster_opts *o,
                                      const char *admin_addr, int64_t revision,
                                      struct slb_err *err);
void slb_cluster_free(struct slb_cluster *c, bool leaving);
/* Each second from the control thread's sweep. */
void slb_cluster_tick(struct slb_cluster *c);
/* Whether etcd is reachable (the watch stream is established), the revision this node serves. */
bool slb_cluster_connected(const struct slb_cluster *c);
int64_t slb_cluster_revision(const struct slb_cluster *c);
/* A write of this node was stored at revision rev (and is active). */
void slb_cluster_wrote(struct slb_cluster *c, int64_t rev);
/* Whether this node rotates the session ticket keys: true on a single node (c NULL); in a
 * cluster only the leader, the node that created <prefix>leader/tickets under its lease. The
 * others adopt the ring it stores, through the watch. */
bool slb_cluster_rotates_tickets(const struct slb_cluster *c);
/* After a 409 conflict: read the configuration and the certificates from etcd again and serve
 * them, so the change can be validated again. 0 or err (503 cluster_unavailable). */
int slb_cluster_refresh(struct slb_cluster *c, struct slb_err *err);
/* An admin write finished (it ran in a coroutine, admin/server.c): the watch, stopped while
 * the write waited for etcd, starts again from where it stopped. */
void slb_cluster_write_done(struct slb_cluster *c);
/* slbd --upgrade in cluster mode (docs/cluster.md). The running process tells the new one
 * its lease, node name and prefix (handover_msg, "cluster LEASE NODE PREFIX" into out); the
 * new one refuses other --node / --cluster-prefix options, or a change of mode (check, running
 * the message's text after "cluster ", "" when none came), and keeps that lease alive from its
 * start (slb_cluster_start, with ctl->handover), so the registration and the ticket
 * leadership stay. Meanwhile the old process watches nothing (freeze on; off again when the
 * upgrade failed: it resyncs) and, once the new one serves, leaves without revoking the lease
 * (handed_over); the new one revokes it on its own stop only once it took over. */
int slb_cluster_handover_msg(const struct slb_cluster *c, char *out, size_t size);
int slb_cluster_handover_check(const struct slb_cluster_opts *o, const char *running,
                               struct slb_err *err);
void slb_cluster_freeze(struct slb_cluster *c, bool on);
void slb_cluster_handed_over(struct slb_cluster *c);
void slb_cluster_took_over(struct slb_cluster *c);
/* GET /v1/cluster: {"revision", "connected", "node", "nodes": [...]}; owned. */
json_t *slb_cluster_status(struct slb_cluster *c);

#endif
