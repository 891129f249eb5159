/* SPDX-License-Identifier: Apache-2.0 */
/* Shared rate limits with per-worker batches (see ratelimit.h). */
#include "core/ratelimit.h"

#include <stdlib.h>
#include <time.h>

struct slb_ratelimit *slb_ratelimit_new(int nworkers)
{
    struct slb_ratelimit *r;
    size_t size = sizeof(*r) + (size_t)nworkers * sizeof(r->local[0]);
    size = (size + 63) & ~(size_t)63;
    if (!(r = aligned_alloc(64, size)))
        return NULL;
    atomic_init(&r->tat_ns, 0);
    r->nworkers = nworkers;
    for (int i = 0; i < nworkers; i++)
        r->local[i].tokens = 0;
    return r;
}

void slb_ratelimit_free(struct slb_ratelimit *r)
{
    free(r);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ns that n tokens take at rate per second (n * 1e9 may not fit 64 bits for byte budgets). */
static int64_t span_ns(uint64_t n, uint64_t rate)
{
    return (int64_t)((unsigned __int128)n * 1000000000u / rate);
}

uint64_t slb_ratelimit_take(struct slb_ratelimit *r, int worker, uint64_t rate, uint64_t want,
                            uint64_t *wait_ns)
{
    struct slb_rate_local *loc = &r->local[worker];
    if (loc->tokens >= want) {
        loc->tokens -= want;
        return want;
    }
    uint64_t batch = rate / (50u * (uint64_t)r->nworkers);
    batch = batch ? batch : 1;
    uint64_t burst = rate / 10u;
    if (burst < batch * (uint64_t)r->nworkers)
        burst = batch * (uint64_t)r->nworkers;
    uint64_t need = want - loc->tokens, grab = need > batch ? need : batch;
    if (grab > burst)
        grab = burst;
    int64_t now = now_ns(), tau = span_ns(burst, rate);
    int64_t old = atomic_load_explicit(&r->tat_ns, memory_order_relaxed), next;
    uint64_t got;
    do {
        int64_t base = old > now ? old : now;
        /* Tokens the budget holds now: whole ones that fit before now + tau. */
        int64_t room = now + tau - base;
        got = room > 0 ? (uint64_t)((unsigned __int128)room * rate / 1000000000u) : 0;
        if (got == 0) {
            if (wait_ns)
                *wait_ns = (uint64_t)(base + span_ns(1, rate) - now - tau);
            break;
        }
        if (got > grab)
            got = grab;
        next = base + span_ns(got, rate);
    } while (!atomic_compare_exchange_weak_explicit(&r->tat_ns, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
    loc->tokens += got;
    uint64_t granted = loc->tokens < want ? loc->tokens : want;
    loc->tokens -= granted;
    return granted;
}

uint64_t slb_ratelimit_repay(struct slb_ratelimit *r, int worker, uint64_t rate, uint64_t *owed)
{
    if (!*owed)
        return 0;
    *owed -= slb_ratelimit_take(r, worker, rate, *owed, NULL);
    if (!*owed)
        return 0;
    uint64_t part = *owed < rate / 10 ? *owed : rate / 10;
    uint64_t ms = part * 1000u / rate;
    return ms ? ms : 1;
}
