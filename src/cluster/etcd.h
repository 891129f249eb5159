/* SPDX-License-Identifier: Apache-2.0 */
/* An etcd v3 client over etcd's JSON gateway (/v3/kv/range, /v3/kv/txn, /v3/watch, ...),
 * running on the control loop through the outbound HTTP client. Keys are NUL-terminated
 * strings, values are bytes; both travel base64-encoded as the gateway requires. Several
 * endpoints: a call that cannot reach one tries the next, backing off once all were tried. */
#ifndef SLB_CLUSTER_ETCD_H
#define SLB_CLUSTER_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "event/loop.h"
#include "net/httpc.h"

/* Codes of our own beside err.h's. */
enum {
    SLB_ETCD_ECOMPACTED = -10100,   /* the revision asked for was compacted away: resync */
    SLB_ETCD_EUNAVAILABLE = -10101, /* no endpoint answered before the call's deadline */
};
const char *slb_etcd_strerror(int code);

struct slb_etcd;
struct slb_etcd_call;
struct slb_etcd_watch;

/* A key-value pair as etcd returns it. key and value are NUL-terminated copies (value may hold
 * NULs too: use value_len); they live until the callback returns. */
struct slb_etcd_kv {
    char *key;
    char *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
};

/* What a call reports. rc is 0 or negative; on failure error is a sentence for logs.
 * revision is the store's revision (the response header's) when rc is 0. */
struct slb_etcd_resp {
    int rc;
    const char *error;
    int64_t revision;
    bool succeeded;          /* txn: the comparisons held */
    struct slb_etcd_kv *kvs; /* range, and the range ops of a txn's branch that ran */
    size_t nkvs;
    int64_t count;    /* range: keys matching, even beyond a limit */
    int64_t deleted;  /* delete_range, and the delete ops of a txn */
    int64_t lease_id; /* lease grant and keepalive */
    int64_t ttl;      /* lease grant and keepalive (seconds left) */
};

typedef void (*slb_etcd_cb)(struct slb_etcd *e, const struct slb_etcd_resp *resp, void *data);

struct slb_etcd_opts {
    const char *const *endpoints; /* base URLs, "http://127.0.0.1:2379" or https:// */
    size_t nendpoints;
    const char *ca_file;   /* https endpoints: CA bundle; NULL: the system's */
    const char *cert_file; /* TLS client authentication (etcd --client-cert-auth) */
    const char *key_file;
    uint32_t call_timeout_ms; /* one call, failover included; 0: 5000 */
    uint32_t try_timeout_ms;  /* one HTTP request to one endpoint; 0: 2000 */
    /* A watch stream silent for this long is taken as lost (a member that stopped answering
     * without closing the connection). Set it above etcd's watch progress notification
     * interval (--experimental-watch-progress-notify-interval, 10 min by default). 0: none,
     * TCP keep-alive only. */
    uint32_t watch_idle_timeout_ms;
};

/* The client; owned by the control thread, lives on its loop, uses http (which must outlive
 * it). Returns NULL with err filled on bad options or out of memory. */
struct slb_etcd *slb_etcd_new(struct slb_loop *loop, struct slb_httpc *http,
                              const struct slb_etcd_opts *opts, struct slb_err *err);
/* Cancels every call and watch without calling back. Accepts NULL. */
void slb_etcd_free(struct slb_etcd *e);
/* Index of the endpoint the next call starts with (the last one that answered). */
size_t slb_etcd_endpoint(const struct slb_etcd *e);

/* --- key-value --- */

/* Compare target and result of a txn comparison. */
enum slb_etcd_target { SLB_ETCD_MOD, SLB_ETCD_CREATE, SLB_ETCD_VERSION, SLB_ETCD_VALUE };
enum slb_etcd_result { SLB_ETCD_EQUAL, SLB_ETCD_NOT_EQUAL, SLB_ETCD_GREATER, SLB_ETCD_LESS };

struct slb_etcd_cmp {
    const char *key;
    enum slb_etcd_target target;
    enum slb_etcd_result result;
    int64_t rev;       /* MOD, CREATE (0: the key does not exist), VERSION */
    const void *value; /* VALUE */
    size_t value_len;
};

enum slb_etcd_op_kind { SLB_ETCD_OP_PUT, SLB_ETCD_OP_DELETE, SLB_ETCD_OP_RANGE };

struct slb_etcd_op {
    enum slb_etcd_op_kind kind;
    const char *key;
    bool prefix;       /* DELETE, RANGE: every key starting with key */
    const void *value; /* PUT */
    size_t value_len;
    int64_t lease; /* PUT: attach to this lease (0: none) */
};

struct slb_etcd_txn {
    const struct slb_etcd_cmp *cmp;
    size_t ncmp;
    const struct slb_etcd_op *success;
    size_t nsuccess;
    const struct slb_etcd_op *failure;
    size_t nfailure;
};

/* Every call copies what it needs, returns 0 or a negative code at once (the callback is then
 * not called), and reports through cb later, from the loop. *callp (may be NULL) receives a
 * handle for slb_etcd_call_cancel, valid until the callback returns. Calls in flight together
 * travel on separate connections and may be applied in any order: start the next one from
 * the callback when order matters (or use one txn). */
int slb_etcd_range(struct slb_etcd *e, const char *key, bool prefix, int64_t revision,
                   slb_etcd_cb cb, void *data, struct slb_etcd_call **callp);
int slb_etcd_put(struct slb_etcd *e, const char *key, const void *value, size_t value_len,
                 int64_t lease, slb_etcd_cb cb, void *data, struct slb_etcd_call **callp);
int slb_etcd_delete(struct slb_etcd *e, const char *key, bool prefix, slb_etcd_cb cb, void *data,
                    struct slb_etcd_call **callp);
int slb_etcd_txn(struct slb_etcd *e, const struct slb_etcd_txn *txn, slb_etcd_cb cb, void *data,
                 struct slb_etcd_call **callp);
/* Discard history before revision (operators and tests; the daemon never needs it). */
int slb_etcd_compact(struct slb_etcd *e, int64_t revision, slb_etcd_cb cb, void *data,
                     struct slb_etcd_call **callp);

/* --- leases --- */

/* id 0 lets etcd choose; the response has lease_id and ttl. */
int slb_etcd_lease_grant(struct slb_etcd *e, int64_t ttl_s, int64_t id, slb_etcd_cb cb, void *data,
                         struct slb_etcd_call **callp);
/* One keep-alive: resp.ttl is the new time to live; SLB_ENOTFOUND once the lease expired. */
int slb_etcd_lease_keepalive(struct slb_etcd *e, int64_t id, slb_etcd_cb cb, void *data,
                             struct slb_etcd_call **callp);
int slb_etcd_lease_revoke(struct slb_etcd *e, int64_t id, slb_etcd_cb cb, void *data,
                          struct slb_etcd_call **callp);

/* No callback for the call after this. */
void slb_etcd_call_cancel(struct slb_etcd_call *call);

/* --- watch --- */

enum slb_etcd_watch_kind {
    SLB_ETCD_WATCH_CREATED,   /* the stream is established (again, after a reconnect) */
    SLB_ETCD_WATCH_EVENTS,    /* events, in revision order */
    SLB_ETCD_WATCH_PROGRESS,  /* no events up to revision */
    SLB_ETCD_WATCH_LOST,      /* the stream broke; reconnecting from the next revision */
    SLB_ETCD_WATCH_COMPACTED, /* history the watch needs is gone: the watch has ended; load
                                 everything again and watch from that load's revision + 1 */
    SLB_ETCD_WATCH_FAILED,    /* refused (bad request) or closed by the server: ended */
};

enum slb_etcd_event_type { SLB_ETCD_EV_PUT, SLB_ETCD_EV_DELETE };

struct slb_etcd_event {
    enum slb_etcd_event_type type;
    struct slb_etcd_kv kv; /* a DELETE has key and mod_revision only */
};

/* One notification. revision: EVENTS, PROGRESS, CREATED: the header's; COMPACTED: the
 * compact revision. error: LOST, FAILED. */
struct slb_etcd_watch_note {
    enum slb_etcd_watch_kind kind;
    int64_t revision;
    const struct slb_etcd_event *events;
    size_t nevents;
    const char *error;
};

typedef void (*slb_etcd_watch_cb)(struct slb_etcd_watch *w, const struct slb_etcd_watch_note *n,
                                  void *data);

/* Watch key (or every key under it with prefix) from start_revision (0: from now). Progress
 * notifications are asked for. After a COMPACTED or FAILED note the watch does nothing more
 * but must still be stopped. */
int slb_etcd_watch_start(struct slb_etcd *e, const char *key, bool prefix, int64_t start_revision,
                         slb_etcd_watch_cb cb, void *data, struct slb_etcd_watch **wp);
/* Stop and free; safe from inside the watch's own callback. */
void slb_etcd_watch_stop(struct slb_etcd_watch *w);
/* The revision a reconnect would resume from (last delivered revision + 1). */
int64_t slb_etcd_watch_next_revision(const struct slb_etcd_watch *w);

#endif
