/* SPDX-License-Identifier: Apache-2.0 */
/* What a connection sees of the worker that owns it: its holds on snapshots and the
 * per-worker view of backend groups used by the schedulers. The worker thread itself (src/daemon/)
 * creates and drops the holds; protocols only take and release them. */
#include "net/worker_ctx.h"

#include <stdlib.h>
#include <string.h>

void slb_wsnap_free(struct slb_wsnap *ws)
{
    if (!ws)
        return;
    for (size_t i = 0; ws->groups && i < ws->snap->ngroups; i++) {
        struct slb_wgroup *wg = &ws->groups[i];
        if (wg->g->ops->state_free)
            wg->g->ops->state_free(wg->sched_state);
        free(wg->usable);
        free(wg->active);
    }
    free(ws->groups);
    slb_snapshot_unref(ws->snap);
    free(ws);
}

struct slb_wsnap *slb_wsnap_new(struct slb_worker *w, struct slb_snapshot *snap)
{
    struct slb_wsnap *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return NULL;
    ws->snap = snap;
    ws->worker = w;
    ws->groups = calloc(snap->ngroups ? snap->ngroups : 1, sizeof(*ws->groups));
    if (!ws->groups)
        goto fail;
    for (size_t i = 0; i < snap->ngroups; i++) {
        struct slb_wgroup *wg = &ws->groups[i];
        struct slb_group_rt *g = &snap->groups[i];
        size_t n = g->nservers ? g->nservers : 1;
        wg->g = g;
        wg->sched_state = g->ops->state_new ? g->ops->state_new(g->nservers) : NULL;
        wg->usable = calloc(n, 1);
        wg->active = calloc(n, sizeof(*wg->active));
        if (!wg->usable || !wg->active || (g->ops->state_new && !wg->sched_state))
            goto fail;
        /* Workers schedule independently; start each one at a different point of the cycle
         * so that connections spread over workers also spread over servers. */
        if (g->nservers > 1 && g->cfg->scheduler != SLB_SCHED_SCH &&
            g->cfg->scheduler != SLB_SCHED_TCH) {
            memset(wg->usable, 1, g->nservers);
            struct slb_sched_input in = {
                .n = g->nservers, .weight = g->weights, .usable = wg->usable, .active = wg->active};
            for (int k = 0; k < w->id; k++)
                g->ops->pick(wg->sched_state, g->sched_shared, &in);
        }
    }
    return ws;
fail:
    /* The snapshot reference is the caller's on failure. */
    slb_snapshot_ref(snap);
    slb_wsnap_free(ws);
    return NULL;
}

struct slb_wgroup *slb_wsnap_group(struct slb_wsnap *ws, const struct slb_group_rt *g)
{
    if (!g)
        return NULL;
    return &ws->groups[g - ws->snap->groups];
}

int slb_wgroup_pick(struct slb_wgroup *wg, uint64_t key, const uint8_t *tried)
{
    struct slb_group_rt *g = wg->g;
    bool need_active = g->cfg->scheduler == SLB_SCHED_WLC;
    for (size_t i = 0; i < g->nservers; i++) {
        struct slb_srv_rt *s = g->srv[i];
        wg->usable[i] = g->weights[i] > 0 &&
                        atomic_load_explicit(&s->healthy, memory_order_relaxed) == SLB_HEALTH_UP &&
                        !(tried && tried[i]);
        if (need_active) {
            /* Least connections counts every worker's connections to the server: a read of
             * the other workers' counter lines, paid only by wlc groups. */
            uint64_t a = 0;
            for (int k = 0; k < s->nworkers; k++)
                a += slb_count_get(&s->w[k].v[SLB_SRV_ACTIVE]);
            wg->active[i] = (uint32_t)a;
        }
    }
    struct slb_sched_input in = {
        .n = g->nservers,
        .weight = g->weights,
        .usable = wg->usable,
        .active = wg->active,
        .key = key,
    };
    return g->ops->pick(wg->sched_state, g->sched_shared, &in);
}

/* Let go of holds that no connection uses any more. */
void slb_worker_release_idle_holds(struct slb_worker *w)
{
    struct slb_wsnap **pp = &w->old;
    while (*pp) {
        struct slb_wsnap *ws = *pp;
        if (ws->nconns == 0) {
            *pp = ws->next;
            slb_wsnap_free(ws);
        } else {
            pp = &ws->next;
        }
    }
}

void slb_wsnap_release(struct slb_wsnap *ws)
{
    struct slb_worker *w = ws->worker;
    ws->nconns--;
    w->nconns--;
    if (ws->nconns == 0 && ws != w->cur)
        slb_worker_release_idle_holds(w);
}
