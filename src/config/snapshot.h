/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration snapshots: the immutable, published form of a configuration with everything a
 * worker needs resolved (bound listener sockets, schedulers' shared data, runtime objects of
 * servers). Built and freed only by the control thread; workers hold references.
 *
 * Lifetimes:
 *  - struct slb_snapshot: refs = 1 while current (held by control) + 1 per worker that adopted
 *    it and has not let go. Workers only decrement; the control thread sweeps retired
 *    snapshots whose count reached zero and frees them, so all registry bookkeeping below is
 *    single-threaded.
 *  - struct slb_lsock (bound listening sockets) and struct slb_srv_rt / slb_lis_rt (runtime
 *    state and counters that must survive configuration changes) live in registries on the
 *    control thread, keyed by bind address / "group/addr:port" / listener name, with plain
 *    reference counts held by snapshots. */
#ifndef SLB_CONFIG_SNAPSHOT_H
#define SLB_CONFIG_SNAPSHOT_H

#include "config/config.h"
#include "core/ratelimit.h"
#include "event/loop.h"
#include "lb/sched.h"
#include "tls/tls.h"

#include <stdatomic.h>
#include <stdint.h>

#define SLB_MAX_WORKERS 64

/* Counters written by one worker (relaxed atomic stores: no lock prefix on x86) and summed by
 * the control thread when read. Whole cache lines per worker so workers never share a line. */
#define SLB_WCOUNT_SLOTS 64
struct slb_wcount {
    _Atomic uint64_t v[SLB_WCOUNT_SLOTS];
} __attribute__((aligned(64)));

static inline void slb_count_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}
static inline uint64_t slb_count_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* Histograms of durations share their buckets (upper bounds in seconds; the last, +Inf,
 * implied): SLB_HIST_BUCKETS per-bucket (not cumulative) counts, then the sum in
 * microseconds, in consecutive counter slots. */
#define SLB_HIST_BUCKETS 13
#define SLB_HIST_SLOTS (SLB_HIST_BUCKETS + 1)
#define SLB_RESP_BUCKETS SLB_HIST_BUCKETS
extern const double slb_resp_bucket_le[SLB_HIST_BUCKETS - 1];
/* Count one duration in the histogram whose first slot is w->v[base]. */
void slb_hist_observe(struct slb_wcount *w, int base, uint64_t us);

/* Why a backend server failed a request or connection: the reason label of
 * slbd_server_failures_total and the access log's "error". */
enum slb_srv_fail {
    SLB_SRV_FAIL_CONNECT_REFUSED,
    SLB_SRV_FAIL_CONNECT_TIMEOUT, /* not connected within connect_timeout_ms */
    SLB_SRV_FAIL_CONNECT_ERROR,   /* any other connect error (unreachable, no socket) */
    SLB_SRV_FAIL_RESET,           /* reset (or another socket error) during the exchange */
    SLB_SRV_FAIL_CLOSED,          /* closed before its response was complete */
    SLB_SRV_FAIL_TIMEOUT,         /* request_timeout_s passed (a 504, or a stalled body) */
    SLB_SRV_FAIL_INVALID,         /* a response slbd could not forward (malformed, ...) */
    SLB_SRV_FAIL_STATUS_5XX,      /* the server answered 5xx */
    SLB_SRV_FAIL_COUNT
};
const char *slb_srv_fail_name(enum slb_srv_fail f);
/* The connect failure reason of an errno (positive or negative); ETIMEDOUT is a timeout. */
enum slb_srv_fail slb_srv_fail_connect(int err);

/* Per-server counter slots (index into slb_wcount.v). */
enum {
    SLB_SRV_ACTIVE,
    SLB_SRV_CONNS,
    SLB_SRV_REQS,
    SLB_SRV_BYTES_TO,
    SLB_SRV_BYTES_FROM,
    SLB_SRV_EJECTIONS,                                /* passive health check ejections */
    SLB_SRV_FAIL,                                     /* + enum slb_srv_fail */
    SLB_SRV_RESP = SLB_SRV_FAIL + SLB_SRV_FAIL_COUNT, /* histogram: request sent to response head */
    SLB_SRV_CONNECT = SLB_SRV_RESP + SLB_HIST_SLOTS,  /* histogram: connect start to connected */
    SLB_SRV_SLOTS = SLB_SRV_CONNECT + SLB_HIST_SLOTS
};
_Static_assert(SLB_SRV_SLOTS <= SLB_WCOUNT_SLOTS, "server counters fit one struct slb_wcount");
/* Count one response time in a server's histogram line. */
static inline void slb_srv_observe(struct slb_wcount *w, uint64_t us)
{
    slb_hist_observe(w, SLB_SRV_RESP, us);
}
static inline void slb_srv_failed(struct slb_wcount *w, enum slb_srv_fail f)
{
    slb_count_add(&w->v[SLB_SRV_FAIL + f], 1);
}
/* Per-listener counter slots. */
enum {
    SLB_LIS_CONNS,
    SLB_LIS_ACTIVE,
    SLB_LIS_PAYLOAD_IN,
    SLB_LIS_PAYLOAD_OUT,
    SLB_LIS_WIRE_IN,
    SLB_LIS_WIRE_OUT,
    SLB_LIS_REFUSED,
    SLB_LIS_ERRORS,
    SLB_LIS_HS_FULL,
    SLB_LIS_HS_RESUMED,
    SLB_LIS_HS_FAIL, /* + enum slb_tls_fail (SLB_TLS_FAIL_COUNT slots) */
    SLB_LIS_REQ_1XX = SLB_LIS_HS_FAIL + SLB_TLS_FAIL_COUNT, /* + status class - 1 (5 slots) */
    SLB_LIS_REQS = SLB_LIS_REQ_1XX + 5,
    SLB_LIS_DENIED,       /* ACL */
    SLB_LIS_H2_ABUSE,     /* HTTP/2 connections ended with GOAWAY ENHANCE_YOUR_CALM */
    SLB_LIS_REFUSED_FD,   /* connections that waited in the backlog: connection cap or EMFILE */
    SLB_LIS_5XX_LOCAL,    /* 5xx answers slbd made itself (no backend answer to forward) */
    SLB_LIS_5XX_BACKEND,  /* 5xx answers of backends forwarded */
    SLB_LIS_RETRIES,      /* requests sent again: to the next server, or on a fresh connection */
    SLB_LIS_LIMITED_CONN, /* connections reset at accept: limits.connections_per_s */
    SLB_LIS_LIMITED_REQ,  /* requests answered 503: limits.requests_per_s (listener or rule) */
    SLB_LIS_GZIP,         /* responses compressed (listener gzip) */
    SLB_LIS_GZIP_IN,      /* their body bytes before compression */
    SLB_LIS_GZIP_OUT,     /* and after (gzip stream bytes, without framing) */
    SLB_LIS_DURATION,     /* histogram: request head parsed to the end of the exchange */
    SLB_LIS_SLOTS = SLB_LIS_DURATION + SLB_HIST_SLOTS
};
_Static_assert(SLB_LIS_SLOTS <= SLB_WCOUNT_SLOTS, "listener counters fit one struct slb_wcount");

/* Health of a server as workers see it (srv_rt->healthy). The control thread writes UP and
 * DOWN from its active checks and ends ejections; a worker only ever moves UP to EJECTED (a
 * compare-and-swap, when passive checks saw too many failed exchanges in a row). Anything
 * but UP keeps the server out of rotation. */
enum { SLB_HEALTH_DOWN = 0, SLB_HEALTH_UP = 1, SLB_HEALTH_EJECTED = 2 };

/* Runtime state of one backend server of one group: survives configuration changes while a
 * server with the same group and address stays configured. Owned by the server registry. */
struct slb_srv_rt {
    char key[SLB_NAME_MAX + 80]; /* "group/address:port" */
    /* The server's identity in sticky cookies: a hash of "address:port" in 16 lowercase hex
     * digits, made once with the key. */
    char sticky_id[17];
    int refs; /* control thread only */
    _Atomic int healthy;
    /* Passive checks: the group's settings, copied here by the control thread when a
     * configuration is published (threshold 0 = off), and the failed exchanges in a row seen by
     * all workers (written only on failures, and on a success that follows one). */
    _Atomic uint32_t passive_threshold;
    _Atomic bool passive_5xx;
    _Atomic uint32_t passive_fails;
    /* health checker state, control thread only */
    bool active_down;        /* the active checks' verdict, kept while the server is ejected */
    uint64_t eject_until_ms; /* end of the current ejection, 0 until the checker saw it */
    int ok_streak, fail_streak;
    uint64_t next_check_ms;
    uint64_t went_up, went_down; /* health transitions, for metrics */
    void *hc_probe;              /* an in-flight probe, owned by the health checker */
    char last_error[96];
    struct slb_srv_rt *next;       /* registry list */
    struct slb_srv_rt *index_next; /* registry index bucket */
    int nworkers;
    struct slb_wcount w[]; /* one per worker */
};

/* Runtime state of a listener name: counters that survive updates of the listener. */
#define SLB_RATE_WINDOW 61
struct slb_lis_rt {
    char name[SLB_NAME_MAX];
    int refs;
    /* connections total sampled once a second by the control thread, for rates */
    uint64_t conn_samples[SLB_RATE_WINDOW];
    unsigned nsamples, sample_pos;
    /* limits.connections_per_s, requests_per_s and bandwidth_mbps (in bytes), shared by the
     * workers */
    struct slb_ratelimit *conn_rate, *req_rate, *bw_rate;
    struct slb_lis_rt *next;
    int nworkers;
    /* Two lines per worker: w[i] the counters above, w[nworkers + i] the handshakes by
     * version and cipher suite (slb_tls_suite_slot) */
    struct slb_wcount w[];
};
static inline struct slb_wcount *slb_lis_tls_counts(struct slb_lis_rt *r, int worker)
{
    return &r->w[r->nworkers + worker];
}
_Static_assert(SLB_TLS_SUITE_SLOTS <= SLB_WCOUNT_SLOTS, "a slot for every TLS suite");

/* Runtime state of one forwarding rule of one listener, by names: its counters and its
 * limits.requests_per_s budget survive updates of the listener while a rule of that name stays
 * in it. Slots: requests taken, requests refused by the rule's limit. */
enum { SLB_RULE_REQS, SLB_RULE_LIMITED, SLB_RULE_SLOTS };
struct slb_rule_rt {
    char key[2 * SLB_NAME_MAX]; /* "listener/rule" */
    int refs;
    struct slb_ratelimit *req_rate;
    struct slb_rule_rt *next;
    int nworkers;
    struct slb_wcount w[]; /* one per worker */
};

struct slb_worker;
struct slb_listener_rt;
struct slb_rules;

/* A bound listening address with one SO_REUSEPORT socket per worker, so the kernel spreads
 * accepts. fds are created by the control thread; worker i only touches slot i. */
struct slb_lsock_slot {
    int fd;
    struct slb_io io;
    struct slb_listener_rt *cur; /* in the worker's current snapshot; worker-owned */
    struct slb_worker *worker;
    struct slb_timer pause; /* accept paused after EMFILE */
    /* Accepting stopped (connection cap or EMFILE) since the backlog was last found empty:
     * the connections accepted until then waited, and are counted as refused (fd_limit). */
    bool waiting;
    /* The worker's adoption that found this socket in the new snapshot (worker-owned), so
     * sockets dropped are found in one pass over each snapshot rather than comparing them */
    uint64_t kept_mark;
} __attribute__((aligned(64)));

struct slb_lsock {
    char key[96]; /* normalized "addr:port" */
    unsigned port;
    int refs;
    bool closed;
    uint64_t used_mark; /* slb_registry_close_unused: cur uses it when this is the pass's mark */
    struct slb_lsock *next;
    int nworkers;
    struct slb_lsock_slot slot[];
};

struct slb_group_rt {
    const struct slb_group_cfg *cfg;
    const struct slb_sched_ops *ops;
    void *sched_shared;
    size_t nservers;
    struct slb_srv_rt **srv;
    uint32_t *weights;
};

struct slb_sni_route_rt {
    const char *server_name;
    struct slb_group_rt *group;
};

struct slb_listener_rt {
    const struct slb_listener_cfg *cfg;
    size_t index;           /* in snapshot->listeners */
    struct slb_lsock *sock; /* NULL while the listener is stopped */
    struct slb_lis_rt *stats;
    struct slb_group_rt *group; /* NULL only for redirect-only http listeners */
    struct slb_sni_route_rt *sni;
    size_t nsni;
    /* Forwarding rules compiled from cfg->rules (src/http/rules.h), NULL when there are none;
     * their forward targets resolve to this snapshot's struct slb_group_rt. */
    struct slb_rules *rules;
    struct slb_rule_rt **rule_stats; /* per rule, parallel to cfg->rules; NULL when none */
    void *tls;                       /* TLS contexts (src/tls), NULL for tcp/http */
};

struct slb_snapshot {
    _Atomic long refs;
    uint64_t generation;
    struct slb_config *cfg;
    struct slb_listener_rt *listeners;
    size_t nlisteners;
    struct slb_group_rt *groups;
    size_t ngroups;
    struct slb_snapshot *next_retired;
};

struct slb_inherited_sock;

/* Open sockets and listener counters by key, only while slb_snapshot_build runs. */
struct slb_key_index {
    const char **keys;
    void **vals;
    size_t mask, n;
};

/* Registries shared by consecutive snapshots (control thread only). */
struct slb_registry {
    int nworkers;
    struct slb_lsock *lsocks;
    /* Listening sockets handed over by the previous process (net/handover.h), adopted by
     * address instead of binding new ones; owned by the registry until adopted or closed. */
    struct slb_inherited_sock *inherited;
    struct slb_srv_rt *servers;
    /* servers by key (hash buckets, chained through index_next): a snapshot of a group of
     * 5,000 servers finds each one's runtime object in O(1), not by walking the list */
    struct slb_srv_rt **srv_index;
    size_t srv_index_size, nsrv;
    struct slb_lis_rt *lis;
    struct slb_rule_rt *rules;
    uint64_t next_generation;
    struct slb_snapshot *retired;
    /* The published snapshot (set by slb_registry_close_unused): a listener of the next one
     * with the very same parsed configuration takes its socket and counters from it without
     * looking them up by key. */
    const struct slb_snapshot *cur;
    struct slb_key_index build_socks, build_lis;
};

void slb_registry_init(struct slb_registry *reg, int nworkers);
/* Frees everything left; call only when no worker runs. */
void slb_registry_deinit(struct slb_registry *reg);

/* Build a snapshot for cfg (takes ownership of cfg, even on failure). Binds sockets for new
 * bind addresses (err code "bind_failed" naming the listener and the errno text), reuses
 * existing ones and adopts inherited ones. refs starts at 1. */
struct slb_snapshot *slb_snapshot_build(struct slb_registry *reg, struct slb_config *cfg,
                                        struct slb_err *err);
/* Drop the control thread's reference and put snap on the retired list. */
void slb_snapshot_retire(struct slb_registry *reg, struct slb_snapshot *snap);
/* Abandon a snapshot that was never published (refs must be 1). */
void slb_snapshot_discard(struct slb_registry *reg, struct slb_snapshot *snap);
/* Free retired snapshots nobody holds any more; close sockets no snapshot uses. Returns the
 * number still waiting. */
size_t slb_snapshot_sweep(struct slb_registry *reg);
/* After every worker adopted cur: close listening sockets cur no longer uses, so the kernel
 * stops queueing connections nobody will accept. */
void slb_registry_close_unused(struct slb_registry *reg, const struct slb_snapshot *cur);
/* Close the inherited sockets no snapshot adopted (the new configuration has no listener on
 * their address). */
void slb_registry_close_inherited(struct slb_registry *reg);

static inline void slb_snapshot_ref(struct slb_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}
static inline void slb_snapshot_unref(struct slb_snapshot *s)
{
    atomic_fetch_sub_explicit(&s->refs, 1, memory_order_release);
}

#endif
