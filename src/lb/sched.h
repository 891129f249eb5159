/* SPDX-License-Identifier: Apache-2.0 */
/* Schedulers: pick a backend server for a new connection. Each scheduler is a callbacks struct
 * (struct slb_sched_ops). Shared data (a consistent-hash ring) is built once per configuration
 * snapshot by the control thread and is read-only afterwards; per-worker state (round-robin
 * positions, smooth-WRR current weights) is owned by one worker thread and never shared. */
#ifndef SLB_LB_SCHED_H
#define SLB_LB_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum slb_sched_kind { SLB_SCHED_WRR, SLB_SCHED_RR, SLB_SCHED_WLC, SLB_SCHED_SCH, SLB_SCHED_TCH };

/* What a pick sees of the servers of one group, index i in [0, n). */
struct slb_sched_input {
    size_t n;
    const uint32_t *weight; /* configured weight 0..100 */
    const uint8_t *usable;  /* 1 when healthy and weight > 0 (and, for old callers, not tried) */
    const uint8_t *tried;   /* 1 for servers this connection already tried; may be NULL */
    const uint32_t *active; /* active connections (for wlc); may be NULL for others */
    /* Instead of active: the count of server i read on demand, so a large group's wlc pick
     * reads only the servers it compares. */
    uint32_t (*active_of)(const void *arg, size_t i);
    const void *arg;
    uint64_t key; /* hash key: client address (sch) or 4-tuple (tch) */
    /* Generation of usable[]: the caller changes it whenever usable[] changes. The scheduler's
     * per-worker index of the usable servers is rebuilt (O(n)) when it moves; between changes
     * wrr picks in O(distinct weights + log n), wlc in O(1) above SLB_SCHED_SCAN_MAX servers,
     * sch/tch in O(log n). 0: usable[] may differ at every pick, which then scans all n. */
    uint64_t gen;
};

/* Groups up to this size are scanned whole by wlc (exact least connections); larger ones
 * compare two random usable servers (the power of two choices). */
#define SLB_SCHED_SCAN_MAX 64

struct slb_sched_ops {
    const char *name; /* "wrr", "rr", "wlc", "sch", "tch" */
    /* Build shared data for the servers; ids[i] is a stable identity of server i (a hash of
     * "address:port"), weights[i] its weight. Returns NULL when the scheduler needs none. */
    void *(*shared_new)(const uint64_t *ids, const uint32_t *weights, size_t n);
    void (*shared_free)(void *shared);
    /* Per-worker mutable state for n servers; NULL-free. */
    void *(*state_new)(size_t n);
    void (*state_free)(void *state);
    /* Returns the chosen index, or -1 when no server is usable. */
    int (*pick)(void *state, const void *shared, const struct slb_sched_input *in);
};

const struct slb_sched_ops *slb_sched_get(enum slb_sched_kind kind);
/* Name <-> kind; slb_sched_parse returns -1 for an unknown name. */
int slb_sched_parse(const char *name);
const char *slb_sched_name(enum slb_sched_kind kind);

/* 64-bit hashes used for server identities and pick keys (stable across runs and builds). */
uint64_t slb_hash64(const void *data, size_t len, uint64_t seed);

#endif
