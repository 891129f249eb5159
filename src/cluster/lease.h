/* SPDX-License-Identifier: Apache-2.0 */
/* A lease kept alive: granted, refreshed every third of its TTL, and granted anew when it was
 * lost (expired while etcd was out of reach, or revoked), so that keys tied to it (a node's
 * membership) can be put again under the new one. Runs on the control loop. */
#ifndef SLB_CLUSTER_LEASE_H
#define SLB_CLUSTER_LEASE_H

#include <stdint.h>

#include "cluster/etcd.h"

struct slb_etcd_keeper;

enum slb_etcd_keeper_event {
    SLB_ETCD_LEASE_GRANTED, /* id is the new lease: put the keys that hang on it */
    SLB_ETCD_LEASE_LOST,    /* id is gone (or must be taken as gone): its keys are deleted */
};

typedef void (*slb_etcd_keeper_cb)(struct slb_etcd_keeper *k, enum slb_etcd_keeper_event ev,
                                   int64_t id, const char *why, void *data);

/* Start keeping a lease of ttl_s seconds (at least 1) on e's loop. The keeper is owned by the
 * caller and must be stopped before e is freed. A lease counts as lost as soon as no
 * keep-alive succeeded for ttl_s, even when etcd cannot be asked. */
int slb_etcd_keeper_start(struct slb_etcd *e, struct slb_loop *loop, int64_t ttl_s,
                          slb_etcd_keeper_cb cb, void *data, struct slb_etcd_keeper **kp);
/* The same, for a lease id granted and kept by another process until now (slbd --upgrade
 * hands its lease to the new process): kept alive from the first keep-alive on, and granted
 * anew like any lost lease when etcd no longer knows it. */
int slb_etcd_keeper_adopt(struct slb_etcd *e, struct slb_loop *loop, int64_t ttl_s, int64_t id,
                          slb_etcd_keeper_cb cb, void *data, struct slb_etcd_keeper **kp);
/* Stop (and with revoke, revoke the lease, which deletes its keys at once); safe from inside
 * the keeper's callback. No callback after this. */
void slb_etcd_keeper_stop(struct slb_etcd_keeper *k, bool revoke);
/* The lease currently held, 0 when none. */
int64_t slb_etcd_keeper_id(const struct slb_etcd_keeper *k);

#endif
