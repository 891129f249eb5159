/* SPDX-License-Identifier: Apache-2.0 */
/* A client connection's hold on the configuration (see bind.h). */
#include "http/bind.h"

void slb_http_bind_init(struct slb_http_bind *b, struct slb_worker *w, struct slb_listener_rt *l)
{
    b->l = l;
    b->ws = slb_wsnap_hold(w);
    b->rws = NULL;
    b->wg = slb_wsnap_group(b->ws, l->group);
}

struct slb_listener_rt *slb_http_bind_newer(const struct slb_http_bind *b,
                                            const struct slb_worker *w)
{
    struct slb_listener_rt *cur = b->l->sock->slot[w->id].cur;
    if (!cur || cur == b->l || cur->cfg->protocol != b->l->cfg->protocol ||
        (cur->cfg->protocol == SLB_PROTO_HTTPS && !cur->tls))
        return NULL;
    return cur;
}

void slb_http_bind_move(struct slb_http_bind *b, struct slb_worker *w, struct slb_listener_rt *cur,
                        bool tls_bound)
{
    if (cur->stats != b->l->stats) {
        slb_count_add(&b->l->stats->w[w->id].v[SLB_LIS_ACTIVE], (uint64_t)-1);
        slb_count_add(&cur->stats->w[w->id].v[SLB_LIS_ACTIVE], 1);
    }
    /* Hold the current snapshot before letting go of an older one, which may free it. */
    struct slb_wsnap *now = slb_wsnap_hold(w), *old;
    if (tls_bound) {
        old = b->rws;
        b->rws = now;
    } else {
        old = b->ws;
        b->ws = now;
    }
    b->l = cur;
    b->wg = slb_wsnap_group(now, cur->group);
    if (old)
        slb_wsnap_release(old);
}

void slb_http_bind_release(struct slb_http_bind *b)
{
    if (b->rws)
        slb_wsnap_release(b->rws);
    slb_wsnap_release(b->ws);
    b->ws = b->rws = NULL;
}
