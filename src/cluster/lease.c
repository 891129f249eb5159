/* SPDX-License-Identifier: Apache-2.0 */
/* The lease keeper: one timer and at most one etcd call at a time. The timer means "send the
 * next keep-alive (or grant)" while no call is in flight, and "the lease has expired by now"
 * while one is, so a lease is reported lost on time even when etcd does not answer. */
#include "cluster/lease.h"

#include "core/log.h"

#include <errno.h>
#include <stdlib.h>

#define KEEPER_RETRY_MS 500u

struct slb_etcd_keeper {
    struct slb_etcd *e;
    struct slb_loop *loop;
    int64_t ttl_s;
    int64_t id;          /* 0: none held */
    uint64_t last_ok_ms; /* when the last confirmed grant or keep-alive was sent */
    uint64_t sent_ms;    /* when the call in flight was sent */
    struct slb_etcd_call *call;
    struct slb_timer timer;
    bool stopped;
    slb_etcd_keeper_cb cb;
    void *data;
};

static void keeper_grant(struct slb_etcd_keeper *k);

static uint64_t ttl_ms(const struct slb_etcd_keeper *k)
{
    return (uint64_t)k->ttl_s * 1000;
}

/* Arm the timer for the next keep-alive, or for the expiry while a call is in flight. */
static void keeper_arm(struct slb_etcd_keeper *k, uint64_t after_ms)
{
    slb_timer_start(k->loop, &k->timer, after_ms);
}

static void keeper_lost(struct slb_etcd_keeper *k, const char *why)
{
    int64_t id = k->id;
    k->id = 0;
    slb_warn("etcd: lease %llx lost: %s", (unsigned long long)id, why);
    k->cb(k, SLB_ETCD_LEASE_LOST, id, why, k->data);
}

static void keepalive_cb(struct slb_etcd *e, const struct slb_etcd_resp *r, void *data)
{
    struct slb_etcd_keeper *k = data;
    k->call = NULL;
    uint64_t now = slb_loop_now(k->loop);
    if (r->rc == 0) {
        /* etcd renewed it at some point after we sent: count from the sending, to be early
         * rather than late about an expiry. */
        k->last_ok_ms = k->sent_ms;
        keeper_arm(k, ttl_ms(k) / 3 - (now - k->sent_ms < ttl_ms(k) / 3 ? now - k->sent_ms : 0));
        return;
    }
    if (r->rc == SLB_ENOTFOUND || now >= k->last_ok_ms + ttl_ms(k)) {
        keeper_lost(k, r->rc == SLB_ENOTFOUND ? "expired or revoked in etcd" : r->error);
        if (!k->stopped)
            keeper_grant(k);
        return;
    }
    /* Not confirmed yet but not expired either: try again soon. */
    uint64_t left = k->last_ok_ms + ttl_ms(k) - now;
    keeper_arm(k, left / 2 < KEEPER_RETRY_MS ? left / 2 : KEEPER_RETRY_MS);
}

static void grant_cb(struct slb_etcd *e, const struct slb_etcd_resp *r, void *data)
{
    struct slb_etcd_keeper *k = data;
    k->call = NULL;
    if (r->rc < 0) {
        slb_warn("etcd: lease grant failed: %s", r->error);
        keeper_arm(k, KEEPER_RETRY_MS);
        return;
    }
    k->id = r->lease_id;
    k->last_ok_ms = k->sent_ms;
    keeper_arm(k, ttl_ms(k) / 3);
    k->cb(k, SLB_ETCD_LEASE_GRANTED, k->id, NULL, k->data);
}

static void keeper_grant(struct slb_etcd_keeper *k)
{
    k->sent_ms = slb_loop_now(k->loop);
    int rc = slb_etcd_lease_grant(k->e, k->ttl_s, 0, grant_cb, k, &k->call);
    if (rc < 0)
        keeper_arm(k, KEEPER_RETRY_MS);
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_etcd_keeper *k = t->data;
    if (k->call && k->id == 0) {
        keeper_arm(k, KEEPER_RETRY_MS); /* a grant is on its way */
        return;
    }
    if (k->call) {
        /* The keep-alive in flight came too late: the lease has expired by now. */
        slb_etcd_call_cancel(k->call);
        k->call = NULL;
        keeper_lost(k, "no keep-alive confirmed within the lease's TTL");
        if (!k->stopped)
            keeper_grant(k);
        return;
    }
    if (k->id == 0) {
        keeper_grant(k);
        return;
    }
    k->sent_ms = slb_loop_now(loop);
    int rc = slb_etcd_lease_keepalive(k->e, k->id, keepalive_cb, k, &k->call);
    if (rc < 0) {
        k->call = NULL;
        keeper_arm(k, KEEPER_RETRY_MS);
        return;
    }
    /* While it is in flight, the timer watches the expiry. */
    uint64_t now = slb_loop_now(loop), exp = k->last_ok_ms + ttl_ms(k);
    keeper_arm(k, exp > now ? exp - now : 0);
}

int slb_etcd_keeper_start(struct slb_etcd *e, struct slb_loop *loop, int64_t ttl_s,
                          slb_etcd_keeper_cb cb, void *data, struct slb_etcd_keeper **kp)
{
    *kp = NULL;
    if (ttl_s < 1)
        return SLB_EINVAL;
    struct slb_etcd_keeper *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->e = e;
    k->loop = loop;
    k->ttl_s = ttl_s;
    k->cb = cb;
    k->data = data;
    slb_timer_init(&k->timer, timer_cb, k);
    /* The first grant goes from the timer, so no callback runs inside this call. */
    keeper_arm(k, 0);
    *kp = k;
    return 0;
}

int slb_etcd_keeper_adopt(struct slb_etcd *e, struct slb_loop *loop, int64_t ttl_s, int64_t id,
                          slb_etcd_keeper_cb cb, void *data, struct slb_etcd_keeper **kp)
{
    int rc = slb_etcd_keeper_start(e, loop, ttl_s, cb, data, kp);
    if (rc < 0 || id == 0)
        return rc;
    /* Its keeper renewed it within a third of the TTL: counting from now errs on the late
     * side by that much at most, and the first keep-alive goes at once (the timer at 0). */
    (*kp)->id = id;
    (*kp)->last_ok_ms = slb_loop_now(loop);
    return 0;
}

static void ignore_cb(struct slb_etcd *e, const struct slb_etcd_resp *r, void *data)
{
    if (r->rc < 0)
        slb_info("etcd: revoking a lease on stop failed (it expires by itself): %s", r->error);
}

void slb_etcd_keeper_stop(struct slb_etcd_keeper *k, bool revoke)
{
    if (!k || k->stopped)
        return;
    k->stopped = true;
    slb_etcd_call_cancel(k->call);
    k->call = NULL;
    slb_timer_stop(k->loop, &k->timer);
    if (revoke && k->id != 0)
        slb_etcd_lease_revoke(k->e, k->id, ignore_cb, NULL, NULL);
    slb_loop_defer_free(k->loop, free, k);
}

int64_t slb_etcd_keeper_id(const struct slb_etcd_keeper *k)
{
    return k->id;
}
