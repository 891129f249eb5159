/* SPDX-License-Identifier: Apache-2.0 */
/* What a connection sees of the worker that owns it: its holds on snapshots and the
 * per-worker view of backend groups used by the schedulers. The worker thread itself (src/daemon/)
 * creates and drops the holds; protocols only take and release them. */
#include "net/worker_ctx.h"

#include "lb/health.h"

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
        if (!wg->usable || (g->ops->state_new && !wg->sched_state))
            goto fail;
        /* Workers schedule independently; start each one at a different point of the cycle
         * so that connections spread over workers also spread over servers. */
        if (g->nservers > 1 && g->cfg->scheduler != SLB_SCHED_SCH &&
            g->cfg->scheduler != SLB_SCHED_TCH) {
            for (int k = 0; k < w->id; k++)
                slb_wgroup_pick(wg, 0, NULL);
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

/* Least connections counts every worker's connections to the server: a read of the other
 * workers' counter lines, for the servers a wlc pick compares. */
static uint32_t wgroup_active(const void *arg, size_t i)
{
    struct slb_srv_rt *s = ((const struct slb_group_rt *)arg)->srv[i];
    uint64_t a = 0;
    for (int k = 0; k < s->nworkers; k++)
        a += slb_count_get(&s->w[k].v[SLB_SRV_ACTIVE]);
    return (uint32_t)a;
}

int slb_wgroup_pick(struct slb_wgroup *wg, uint64_t key, const uint8_t *tried)
{
    struct slb_group_rt *g = wg->g;
    /* Reading every server's flag at each pick would cost O(n); the flags are read again only
     * when one of them changed somewhere (rare: a health verdict or an ejection). */
    uint64_t epoch = atomic_load_explicit(&slb_health_epoch, memory_order_acquire);
    if (wg->gen == 0 || epoch != wg->epoch) {
        wg->epoch = epoch;
        for (size_t i = 0; i < g->nservers; i++)
            wg->usable[i] =
                g->weights[i] > 0 &&
                atomic_load_explicit(&g->srv[i]->healthy, memory_order_relaxed) == SLB_HEALTH_UP;
        wg->gen++;
    }
    struct slb_sched_input in = {
        .n = g->nservers,
        .weight = g->weights,
        .usable = wg->usable,
        .tried = tried,
        .active_of = g->cfg->scheduler == SLB_SCHED_WLC ? wgroup_active : NULL,
        .arg = g,
        .key = key,
        .gen = wg->gen,
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
