/* SPDX-License-Identifier: Apache-2.0 */
/* A rate limit shared by all worker threads: one budget (a generic cell rate algorithm on one
 * atomic word) from which each worker takes small batches of tokens into a bucket of its own,
 * so most grants touch only worker-local memory and none takes a lock. */
#ifndef SLB_CORE_RATELIMIT_H
#define SLB_CORE_RATELIMIT_H

#include <stdatomic.h>
#include <stdint.h>

/* One worker's tokens already taken from the shared budget; only that worker touches it. */
struct slb_rate_local {
    uint64_t tokens;
} __attribute__((aligned(64)));

/* Owned by the runtime object of what it limits (a listener's or a rule's, config/snapshot.h):
 * it survives configuration changes, the rate itself is passed at every call. */
struct slb_ratelimit {
    /* The time at which the budget is empty again ("theoretical arrival time"), in
     * nanoseconds of CLOCK_MONOTONIC; each grant moves it on by tokens / rate. */
    _Atomic int64_t tat_ns __attribute__((aligned(64)));
    int nworkers;
    struct slb_rate_local local[];
};

struct slb_ratelimit *slb_ratelimit_new(int nworkers);
void slb_ratelimit_free(struct slb_ratelimit *r);

/* Grant up to want tokens to worker under a limit of rate tokens per second (rate > 0): the
 * number granted (0..want). The budget holds at most a tenth of a second's worth (at least
 * one token, and at least one batch per worker); a worker takes from it batches of about a
 * fiftieth of a second's worth divided by the worker count. With 0 granted and wait_ns not
 * NULL, *wait_ns is the time until one more token is due. */
uint64_t slb_ratelimit_take(struct slb_ratelimit *r, int worker, uint64_t rate, uint64_t want,
                            uint64_t *wait_ns);

/* Shaping by debt: bytes already sent beyond the budget are *owed. Pay what the budget covers
 * now: 0 when nothing is owed any more, else the milliseconds after which to try again (the
 * time the budget takes to refill what is owed, at most a tenth of a second; at least 1). */
uint64_t slb_ratelimit_repay(struct slb_ratelimit *r, int worker, uint64_t rate, uint64_t *owed);

#endif
