/* SPDX-License-Identifier: Apache-2.0 */
/* The etcd client and the outbound HTTP client against real etcd servers started here (a
 * single member, a three-member cluster on loopback, a member with TLS client authentication),
 * all driven through slbd's event loop. Skipped when no `etcd` binary is on PATH. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "cluster/etcd.h"
#include "cluster/lease.h"
#include "core/log.h"
#include "etcd_proc.h"
#include "net/httpc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[64];
static bool have_etcd;
static struct slb_loop loop;
static struct slb_httpc http;

/* --- etcd processes: etcd_proc.h --- */

/* --- running the loop until something happened --- */

static bool run_until(const bool *flag, int ms)
{
    slb_loop_update_time(&loop);
    uint64_t end = slb_loop_now(&loop) + (uint64_t)ms;
    while (!*flag && slb_loop_now(&loop) < end)
        slb_loop_once(&loop, 20);
    return *flag;
}

static void sleep_loop(int ms)
{
    bool never = false;
    run_until(&never, ms);
}

#define MAX_KVS 16

/* A call's response, copied out of the callback. */
struct res {
    bool done;
    int rc;
    char error[300];
    int64_t revision, count, deleted, lease_id, ttl;
    bool succeeded;
    size_t nkvs;
    struct {
        char key[64];
        char value[64];
        size_t value_len;
        int64_t mod, create, lease;
    } kvs[MAX_KVS];
};

static void res_cb(struct slb_etcd *e, const struct slb_etcd_resp *r, void *data)
{
    struct res *s = data;
    memset(s, 0, sizeof(*s));
    s->done = true;
    s->rc = r->rc;
    snprintf(s->error, sizeof(s->error), "%s", r->error ? r->error : "");
    s->revision = r->revision;
    s->count = r->count;
    s->deleted = r->deleted;
    s->lease_id = r->lease_id;
    s->ttl = r->ttl;
    s->succeeded = r->succeeded;
    s->nkvs = r->nkvs;
    for (size_t i = 0; i < r->nkvs && i < MAX_KVS; i++) {
        snprintf(s->kvs[i].key, sizeof(s->kvs[i].key), "%s", r->kvs[i].key);
        size_t n = r->kvs[i].value_len < 63 ? r->kvs[i].value_len : 63;
        memcpy(s->kvs[i].value, r->kvs[i].value, n);
        s->kvs[i].value_len = r->kvs[i].value_len;
        s->kvs[i].mod = r->kvs[i].mod_revision;
        s->kvs[i].create = r->kvs[i].create_revision;
        s->kvs[i].lease = r->kvs[i].lease;
    }
}

static void wait_res(struct res *r, int ms)
{
    if (!run_until(&r->done, ms))
        fail_msg("etcd call did not complete within %d ms", ms);
}

#define CHECK_OK(r)                                                                                \
    do {                                                                                           \
        if ((r).rc != 0)                                                                           \
            fail_msg("etcd call failed: %d %s", (r).rc, (r).error);                                \
    } while (0)

static int64_t put(struct slb_etcd *e, const char *key, const char *value)
{
    struct res r = {0};
    assert_int_equal(slb_etcd_put(e, key, value, strlen(value), 0, res_cb, &r, NULL), 0);
    wait_res(&r, 10000);
    CHECK_OK(r);
    assert_true(r.revision > 0);
    return r.revision;
}

static struct res range(struct slb_etcd *e, const char *key, bool prefix, int64_t rev)
{
    struct res r = {0};
    assert_int_equal(slb_etcd_range(e, key, prefix, rev, res_cb, &r, NULL), 0);
    wait_res(&r, 10000);
    return r;
}

static struct slb_etcd *client(const char *const *eps, size_t n, bool tls, bool client_cert)
{
    char ca[128], cert[128], key[128];
    snprintf(ca, sizeof(ca), "%s/ca.pem", tmp);
    snprintf(cert, sizeof(cert), "%s/client.pem", tmp);
    snprintf(key, sizeof(key), "%s/client.key", tmp);
    struct slb_etcd_opts o = {
        .endpoints = eps,
        .nendpoints = n,
        .ca_file = tls ? ca : NULL,
        .cert_file = client_cert ? cert : NULL,
        .key_file = client_cert ? key : NULL,
        .call_timeout_ms = 8000,
        .try_timeout_ms = 1000,
    };
    struct slb_err err = {0};
    struct slb_etcd *e = slb_etcd_new(&loop, &http, &o, &err);
    if (!e)
        fail_msg("slb_etcd_new: %s", err.msg);
    return e;
}

/* Wait until a member answers (it has joined a cluster with a leader). */
static bool wait_ready(struct slb_etcd *e, int ms)
{
    slb_loop_update_time(&loop);
    uint64_t end = slb_loop_now(&loop) + (uint64_t)ms;
    while (slb_loop_now(&loop) < end) {
        struct res r = {0};
        slb_etcd_range(e, "ready", false, 0, res_cb, &r, NULL);
        run_until(&r.done, 10000);
        if (r.done && r.rc == 0)
            return true;
        sleep_loop(100);
    }
    return false;
}

/* --- watch notes, copied out of the callback --- */

struct wlog {
    int created, lost, compacted, failed, progress;
    int64_t compact_rev;
    size_t n;
    struct {
        int type;
        char key[64];
        char value[64];
        int64_t mod;
    } ev[64];
};

static void watch_cb(struct slb_etcd_watch *w, const struct slb_etcd_watch_note *n, void *data)
{
    struct wlog *l = data;
    switch (n->kind) {
    case SLB_ETCD_WATCH_CREATED:
        l->created++;
        break;
    case SLB_ETCD_WATCH_LOST:
        l->lost++;
        break;
    case SLB_ETCD_WATCH_COMPACTED:
        l->compacted++;
        l->compact_rev = n->revision;
        break;
    case SLB_ETCD_WATCH_FAILED:
        l->failed++;
        break;
    case SLB_ETCD_WATCH_PROGRESS:
        l->progress++;
        break;
    case SLB_ETCD_WATCH_EVENTS:
        for (size_t i = 0; i < n->nevents && l->n < 64; i++, l->n++) {
            l->ev[l->n].type = n->events[i].type;
            snprintf(l->ev[l->n].key, 64, "%s", n->events[i].kv.key);
            snprintf(l->ev[l->n].value, 64, "%s", n->events[i].kv.value);
            l->ev[l->n].mod = n->events[i].kv.mod_revision;
        }
        break;
    }
}

static bool wait_events(struct wlog *l, size_t n, int ms)
{
    slb_loop_update_time(&loop);
    uint64_t end = slb_loop_now(&loop) + (uint64_t)ms;
    while (l->n < n && slb_loop_now(&loop) < end)
        slb_loop_once(&loop, 20);
    return l->n >= n;
}

static bool wait_count(const int *counter, int n, int ms)
{
    slb_loop_update_time(&loop);
    uint64_t end = slb_loop_now(&loop) + (uint64_t)ms;
    while (*counter < n && slb_loop_now(&loop) < end)
        slb_loop_once(&loop, 20);
    return *counter >= n;
}

/* --- the single member most tests share --- */

static char single_url[64];
static pid_t single_pid;

static int group_setup(void **state)
{
    slb_log_set_level("error");
    if (slb_loop_init(&loop) != 0 || slb_httpc_init(&http, &loop) != 0)
        return -1;
    have_etcd = system("command -v etcd >/dev/null 2>&1") == 0;
    if (!have_etcd) {
        fprintf(stderr, "etcd not found on PATH: the etcd tests are skipped\n");
        return 0;
    }
    snprintf(tmp, sizeof(tmp), "/tmp/slb-etcd-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    atexit(kill_all);
    int c = free_port(), p = free_port();
    char cluster[128];
    snprintf(cluster, sizeof(cluster), "single=http://127.0.0.1:%d", p);
    single_pid = spawn_etcd(tmp, "single", c, p, cluster, "single", false);
    snprintf(single_url, sizeof(single_url), "http://127.0.0.1:%d", c);
    const char *eps[] = {single_url};
    struct slb_etcd *e = client(eps, 1, false, false);
    bool ok = wait_ready(e, 15000);
    slb_etcd_free(e);
    if (!ok) {
        fprintf(stderr, "etcd did not start; see %s/single.log\n", tmp);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    kill_all();
    slb_httpc_deinit(&http);
    slb_loop_deinit(&loop);
    if (tmp[0] && !getenv("SLB_TEST_KEEP")) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

static struct slb_etcd *single(void)
{
    const char *eps[] = {single_url};
    return client(eps, 1, false, false);
}

/* --- tests --- */

static void test_put_range(void **state)
{
    if (!have_etcd)
        skip();
    struct slb_etcd *e = single();
    int64_t r1 = put(e, "/t1/a", "one");
    struct res r = range(e, "/t1/a", false, 0);
    CHECK_OK(r);
    assert_int_equal(r.nkvs, 1);
    assert_string_equal(r.kvs[0].key, "/t1/a");
    assert_string_equal(r.kvs[0].value, "one");
    assert_int_equal(r.kvs[0].mod, r1);
    assert_int_equal(r.kvs[0].create, r1);
    assert_int_equal(r.revision, r1);

    /* A value with every byte value, NULs included, survives base64 both ways. */
    unsigned char bin[256];
    for (int i = 0; i < 256; i++)
        bin[i] = (unsigned char)i;
    struct res pr = {0};
    assert_int_equal(slb_etcd_put(e, "/t1/bin", bin, 256, 0, res_cb, &pr, NULL), 0);
    wait_res(&pr, 10000);
    CHECK_OK(pr);
    r = range(e, "/t1/bin", false, 0);
    assert_int_equal(r.nkvs, 1);
    assert_int_equal(r.kvs[0].value_len, 256);
    assert_memory_equal(r.kvs[0].value, bin, 63);

    /* An older revision of a key, and a prefix in key order. */
    int64_t r2 = put(e, "/t1/a", "two");
    put(e, "/t1/b", "bee");
    put(e, "/t1b", "not under /t1/");
    r = range(e, "/t1/a", false, r1);
    assert_int_equal(r.nkvs, 1);
    assert_string_equal(r.kvs[0].value, "one");
    r = range(e, "/t1/", true, 0);
    CHECK_OK(r);
    assert_int_equal(r.count, 3);
    assert_int_equal(r.nkvs, 3);
    assert_string_equal(r.kvs[0].key, "/t1/a");
    assert_string_equal(r.kvs[0].value, "two");
    assert_int_equal(r.kvs[0].mod, r2);
    assert_string_equal(r.kvs[1].key, "/t1/b");
    assert_string_equal(r.kvs[2].key, "/t1/bin");

    /* A missing key is an empty answer, not an error. */
    r = range(e, "/t1/none", false, 0);
    CHECK_OK(r);
    assert_int_equal(r.nkvs, 0);

    struct res d = {0};
    assert_int_equal(slb_etcd_delete(e, "/t1/", true, res_cb, &d, NULL), 0);
    wait_res(&d, 10000);
    CHECK_OK(d);
    assert_int_equal(d.deleted, 3);
    r = range(e, "/t1", true, 0);
    assert_int_equal(r.nkvs, 1); /* "/t1b" */
    slb_etcd_free(e);
}

static void test_many_calls_at_once(void **state)
{
    if (!have_etcd)
        skip();
    /* Calls in flight together each complete once, with their own answer. */
    struct slb_etcd *e = single();
    static struct res r[40];
    memset(r, 0, sizeof(r));
    char key[32], val[32];
    for (int i = 0; i < 40; i++) {
        snprintf(key, sizeof(key), "/t9/%02d", i);
        snprintf(val, sizeof(val), "v%d", i);
        assert_int_equal(slb_etcd_put(e, key, val, strlen(val), 0, res_cb, &r[i], NULL), 0);
    }
    for (int i = 0; i < 40; i++) {
        wait_res(&r[i], 10000);
        CHECK_OK(r[i]);
    }
    for (int i = 1; i < 40; i++)
        assert_int_not_equal(r[i].revision, r[0].revision);
    struct res all = range(e, "/t9/", true, 0);
    CHECK_OK(all);
    assert_int_equal(all.count, 40);
    assert_string_equal(all.kvs[7].key, "/t9/07");
    assert_string_equal(all.kvs[7].value, "v7");
    slb_etcd_free(e);
}

static void test_txn_conflict(void **state)
{
    if (!have_etcd)
        skip();
    struct slb_etcd *e = single();
    /* Create only if absent. */
    struct slb_etcd_cmp absent = {
        .key = "/t2/k", .target = SLB_ETCD_CREATE, .result = SLB_ETCD_EQUAL, .rev = 0};
    struct slb_etcd_op put1 = {
        .kind = SLB_ETCD_OP_PUT, .key = "/t2/k", .value = "v1", .value_len = 2};
    struct slb_etcd_op get = {.kind = SLB_ETCD_OP_RANGE, .key = "/t2/k"};
    struct slb_etcd_txn create = {&absent, 1, &put1, 1, &get, 1};
    struct res r = {0};
    assert_int_equal(slb_etcd_txn(e, &create, res_cb, &r, NULL), 0);
    wait_res(&r, 10000);
    CHECK_OK(r);
    assert_true(r.succeeded);
    int64_t rev1 = r.revision;
    memset(&r, 0, sizeof(r));
    assert_int_equal(slb_etcd_txn(e, &create, res_cb, &r, NULL), 0);
    wait_res(&r, 10000);
    CHECK_OK(r);
    assert_false(r.succeeded);
    assert_int_equal(r.nkvs, 1);
    assert_int_equal(r.kvs[0].mod, rev1);

    /* Compare-and-swap on mod_revision: the current one wins, a stale one loses and the
     * failure branch reads what is there now. */
    struct slb_etcd_cmp cur = {
        .key = "/t2/k", .target = SLB_ETCD_MOD, .result = SLB_ETCD_EQUAL, .rev = rev1};
    struct slb_etcd_op put2 = {
        .kind = SLB_ETCD_OP_PUT, .key = "/t2/k", .value = "v2", .value_len = 2};
    struct slb_etcd_txn cas = {&cur, 1, &put2, 1, &get, 1};
    memset(&r, 0, sizeof(r));
    assert_int_equal(slb_etcd_txn(e, &cas, res_cb, &r, NULL), 0);
    wait_res(&r, 10000);
    CHECK_OK(r);
    assert_true(r.succeeded);
    int64_t rev2 = r.revision;
    assert_true(rev2 > rev1);
    struct slb_etcd_op put3 = {
        .kind = SLB_ETCD_OP_PUT, .key = "/t2/k", .value = "v3", .value_len = 2};
    cas.success = &put3;
    memset(&r, 0, sizeof(r));
    assert_int_equal(slb_etcd_txn(e, &cas, res_cb, &r, NULL), 0); /* still says rev1 */
    wait_res(&r, 10000);
    CHECK_OK(r);
    assert_false(r.succeeded);
    assert_int_equal(r.revision, rev2);
    assert_int_equal(r.nkvs, 1);
    assert_string_equal(r.kvs[0].value, "v2");
    assert_int_equal(r.kvs[0].mod, rev2);

    /* Compare on the value; success deletes. */
    struct slb_etcd_cmp val = {.key = "/t2/k",
                               .target = SLB_ETCD_VALUE,
                               .result = SLB_ETCD_EQUAL,
                               .value = "v2",
                               .value_len = 2};
    struct slb_etcd_op del = {.kind = SLB_ETCD_OP_DELETE, .key = "/t2/", .prefix = true};
    struct slb_etcd_txn cad = {&val, 1, &del, 1, NULL, 0};
    memset(&r, 0, sizeof(r));
    assert_int_equal(slb_etcd_txn(e, &cad, res_cb, &r, NULL), 0);
    wait_res(&r, 10000);
    CHECK_OK(r);
    assert_true(r.succeeded);
    assert_int_equal(r.deleted, 1);
    slb_etcd_free(e);
}

static void test_watch_in_order(void **state)
{
    if (!have_etcd)
        skip();
    struct slb_etcd *e = single();
    struct wlog l = {0};
    struct slb_etcd_watch *w;
    assert_int_equal(slb_etcd_watch_start(e, "/t3/", true, 0, watch_cb, &l, &w), 0);
    assert_true(wait_count(&l.created, 1, 5000));
    int64_t r1 = put(e, "/t3/a", "1");
    int64_t r2 = put(e, "/t3/b", "2");
    put(e, "/t3x", "outside the prefix");
    struct res d = {0};
    slb_etcd_delete(e, "/t3/a", false, res_cb, &d, NULL);
    wait_res(&d, 10000);
    CHECK_OK(d);
    int64_t r4 = put(e, "/t3/b", "3");
    assert_true(wait_events(&l, 4, 5000));
    sleep_loop(100);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.ev[0].type, SLB_ETCD_EV_PUT);
    assert_string_equal(l.ev[0].key, "/t3/a");
    assert_string_equal(l.ev[0].value, "1");
    assert_int_equal(l.ev[0].mod, r1);
    assert_int_equal(l.ev[1].mod, r2);
    assert_int_equal(l.ev[2].type, SLB_ETCD_EV_DELETE);
    assert_string_equal(l.ev[2].key, "/t3/a");
    assert_int_equal(l.ev[2].mod, d.revision);
    assert_int_equal(l.ev[3].type, SLB_ETCD_EV_PUT);
    assert_string_equal(l.ev[3].value, "3");
    assert_int_equal(l.ev[3].mod, r4);
    assert_int_equal(slb_etcd_watch_next_revision(w), r4 + 1);
    /* A quiet watch hears progress notifications (every 300 ms here). */
    assert_true(wait_count(&l.progress, 1, 3000));
    assert_true(slb_etcd_watch_next_revision(w) >= r4 + 1);
    slb_etcd_watch_stop(w);

    /* From a past revision the history is replayed, in the same order. */
    struct wlog h = {0};
    assert_int_equal(slb_etcd_watch_start(e, "/t3/", true, r1, watch_cb, &h, &w), 0);
    assert_true(wait_events(&h, 4, 5000));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(h.ev[i].mod, l.ev[i].mod);
        assert_int_equal(h.ev[i].type, l.ev[i].type);
    }
    slb_etcd_watch_stop(w);
    assert_int_equal(l.lost + l.failed + l.compacted, 0);
    slb_etcd_free(e);
}

static void test_watch_compacted(void **state)
{
    if (!have_etcd)
        skip();
    struct slb_etcd *e = single();
    int64_t old = put(e, "/t4/k", "a");
    put(e, "/t4/k", "b");
    int64_t now = put(e, "/t4/k", "c");
    struct res c = {0};
    assert_int_equal(slb_etcd_compact(e, now, res_cb, &c, NULL), 0);
    wait_res(&c, 10000);
    CHECK_OK(c);

    /* Reading or watching from before the compaction says so, with the revision to load. */
    struct res r = range(e, "/t4/k", false, old);
    assert_int_equal(r.rc, SLB_ETCD_ECOMPACTED);
    struct wlog l = {0};
    struct slb_etcd_watch *w;
    assert_int_equal(slb_etcd_watch_start(e, "/t4/", true, old, watch_cb, &l, &w), 0);
    assert_true(wait_count(&l.compacted, 1, 5000));
    assert_int_equal(l.compact_rev, now);
    assert_int_equal(l.n, 0);
    /* Ended: nothing more comes, and no reconnect happens. */
    put(e, "/t4/k", "d");
    sleep_loop(300);
    assert_int_equal(l.n, 0);
    assert_int_equal(l.lost, 0);
    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
}

static void test_watch_silent_stream(void **state)
{
    if (!have_etcd)
        skip();
    const char *eps[] = {single_url};
    struct slb_etcd_opts o = {.endpoints = eps,
                              .nendpoints = 1,
                              .call_timeout_ms = 8000,
                              .try_timeout_ms = 1000,
                              .watch_idle_timeout_ms = 1000};
    struct slb_etcd *e = slb_etcd_new(&loop, &http, &o, NULL);
    assert_non_null(e);
    struct wlog l = {0};
    struct slb_etcd_watch *w;
    assert_int_equal(slb_etcd_watch_start(e, "/t8/", true, 0, watch_cb, &l, &w), 0);
    assert_true(wait_count(&l.created, 1, 5000));
    /* Progress notifications (every 300 ms) keep a quiet stream alive. */
    sleep_loop(1600);
    assert_int_equal(l.lost, 0);

    /* A member that stops answering without closing anything: the silence is noticed. */
    kill(single_pid, SIGSTOP);
    bool lost = wait_count(&l.lost, 1, 4000);
    kill(single_pid, SIGCONT);
    assert_true(lost);
    assert_true(wait_count(&l.created, 2, 8000));
    int64_t rev = put(e, "/t8/k", "v");
    assert_true(wait_events(&l, 1, 5000));
    sleep_loop(100);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0].mod, rev);
    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
}

static void test_lease_expiry(void **state)
{
    if (!have_etcd)
        skip();
    struct slb_etcd *e = single();
    struct res g = {0};
    assert_int_equal(slb_etcd_lease_grant(e, 1, 0, res_cb, &g, NULL), 0);
    wait_res(&g, 10000);
    CHECK_OK(g);
    assert_true(g.lease_id != 0);
    assert_true(g.ttl >= 1);
    struct res p = {0};
    assert_int_equal(slb_etcd_put(e, "/t5/member", "me", 2, g.lease_id, res_cb, &p, NULL), 0);
    wait_res(&p, 10000);
    CHECK_OK(p);
    struct res r = range(e, "/t5/member", false, 0);
    assert_int_equal(r.nkvs, 1);
    assert_int_equal(r.kvs[0].lease, g.lease_id);
    struct res k = {0};
    assert_int_equal(slb_etcd_lease_keepalive(e, g.lease_id, res_cb, &k, NULL), 0);
    wait_res(&k, 10000);
    CHECK_OK(k);
    assert_true(k.ttl >= 1);

    /* Without keep-alives the key goes away with the lease. */
    bool gone = false;
    for (int i = 0; i < 60 && !gone; i++) {
        sleep_loop(100);
        r = range(e, "/t5/member", false, 0);
        gone = r.rc == 0 && r.nkvs == 0;
    }
    assert_true(gone);
    memset(&k, 0, sizeof(k));
    assert_int_equal(slb_etcd_lease_keepalive(e, g.lease_id, res_cb, &k, NULL), 0);
    wait_res(&k, 10000);
    assert_int_equal(k.rc, SLB_ENOTFOUND);

    /* Revoking removes the keys at once. */
    memset(&g, 0, sizeof(g));
    assert_int_equal(slb_etcd_lease_grant(e, 60, 0, res_cb, &g, NULL), 0);
    wait_res(&g, 10000);
    CHECK_OK(g);
    memset(&p, 0, sizeof(p));
    slb_etcd_put(e, "/t5/other", "x", 1, g.lease_id, res_cb, &p, NULL);
    wait_res(&p, 10000);
    CHECK_OK(p);
    struct res v = {0};
    assert_int_equal(slb_etcd_lease_revoke(e, g.lease_id, res_cb, &v, NULL), 0);
    wait_res(&v, 10000);
    CHECK_OK(v);
    r = range(e, "/t5/other", false, 0);
    assert_int_equal(r.nkvs, 0);
    memset(&v, 0, sizeof(v));
    slb_etcd_lease_revoke(e, g.lease_id, res_cb, &v, NULL);
    wait_res(&v, 10000);
    assert_int_equal(v.rc, SLB_ENOTFOUND);
    slb_etcd_free(e);
}

struct klog {
    int n;
    enum slb_etcd_keeper_event ev[8];
    int64_t id[8];
};

static void keeper_cb(struct slb_etcd_keeper *k, enum slb_etcd_keeper_event ev, int64_t id,
                      const char *why, void *data)
{
    struct klog *l = data;
    if (l->n < 8) {
        l->ev[l->n] = ev;
        l->id[l->n] = id;
    }
    l->n++;
}

static void test_lease_keeper(void **state)
{
    if (!have_etcd)
        skip();
    struct slb_etcd *e = single();
    struct klog l = {0};
    struct slb_etcd_keeper *k;
    assert_int_equal(slb_etcd_keeper_start(e, &loop, 1, keeper_cb, &l, &k), 0);
    assert_int_equal(l.n, 0); /* never from inside the start */
    assert_true(wait_count(&l.n, 1, 5000));
    assert_int_equal(l.ev[0], SLB_ETCD_LEASE_GRANTED);
    int64_t id1 = l.id[0];
    assert_int_equal(slb_etcd_keeper_id(k), id1);
    struct res p = {0};
    slb_etcd_put(e, "/t10/node", "me", 2, id1, res_cb, &p, NULL);
    wait_res(&p, 10000);
    CHECK_OK(p);
    /* Kept well past its 1 s TTL. */
    sleep_loop(2000);
    assert_int_equal(l.n, 1);
    struct res r = range(e, "/t10/node", false, 0);
    assert_int_equal(r.nkvs, 1);

    /* etcd out of reach for longer than the TTL: lost on time, then granted anew. */
    kill(single_pid, SIGSTOP);
    bool lost = wait_count(&l.n, 2, 2500);
    sleep_loop(500);
    kill(single_pid, SIGCONT);
    assert_true(lost);
    assert_int_equal(l.ev[1], SLB_ETCD_LEASE_LOST);
    assert_int_equal(l.id[1], id1);
    assert_int_equal(slb_etcd_keeper_id(k), 0);
    assert_true(wait_count(&l.n, 3, 8000));
    assert_int_equal(l.ev[2], SLB_ETCD_LEASE_GRANTED);
    int64_t id2 = l.id[2];
    assert_true(id2 != 0 && id2 != id1);
    memset(&p, 0, sizeof(p));
    slb_etcd_put(e, "/t10/node", "me", 2, id2, res_cb, &p, NULL);
    wait_res(&p, 10000);
    CHECK_OK(p);

    /* Stopping with revoke deletes the keys at once. */
    slb_etcd_keeper_stop(k, true);
    bool gone = false;
    for (int i = 0; i < 10 && !gone; i++) {
        sleep_loop(50);
        r = range(e, "/t10/node", false, 0);
        gone = r.rc == 0 && r.nkvs == 0;
    }
    assert_true(gone);
    assert_int_equal(l.n, 3);
    slb_etcd_free(e);
}

static void test_cancel_and_unavailable(void **state)
{
    if (!have_etcd)
        skip();
    /* Nothing listens on these: the call fails by its deadline, not before, not never. */
    char a[64], b[64];
    snprintf(a, sizeof(a), "http://127.0.0.1:%d", free_port());
    snprintf(b, sizeof(b), "http://127.0.0.1:%d", free_port());
    const char *eps[] = {a, b};
    struct slb_etcd_opts o = {.endpoints = eps, .nendpoints = 2, .call_timeout_ms = 700};
    struct slb_etcd *e = slb_etcd_new(&loop, &http, &o, NULL);
    assert_non_null(e);
    struct res r = {0};
    slb_loop_update_time(&loop);
    uint64_t t0 = slb_loop_now(&loop);
    assert_int_equal(slb_etcd_range(e, "k", false, 0, res_cb, &r, NULL), 0);
    wait_res(&r, 5000);
    assert_int_equal(r.rc, SLB_ETCD_EUNAVAILABLE);
    assert_non_null(strstr(r.error, "127.0.0.1"));
    uint64_t took = slb_loop_now(&loop) - t0;
    assert_true(took >= 300 && took < 1500);

    /* A cancelled call never calls back; freeing the client cancels the rest. */
    struct res c1 = {0}, c2 = {0};
    struct slb_etcd_call *call;
    assert_int_equal(slb_etcd_range(e, "k", false, 0, res_cb, &c1, &call), 0);
    assert_int_equal(slb_etcd_range(e, "k", false, 0, res_cb, &c2, NULL), 0);
    slb_etcd_call_cancel(call);
    sleep_loop(100);
    slb_etcd_free(e);
    sleep_loop(900);
    assert_false(c1.done);
    assert_false(c2.done);

    /* Bad endpoints are refused up front with a reportable error. */
    const char *bad[] = {"127.0.0.1:2379"};
    o.endpoints = bad;
    o.nendpoints = 1;
    struct slb_err err = {0};
    assert_null(slb_etcd_new(&loop, &http, &o, &err));
    assert_string_equal(err.code, "invalid_value");
}

static void test_cluster_failover(void **state)
{
    if (!have_etcd)
        skip();
    int cp[3], pp[3];
    char cluster[256] = "", urls[4][64];
    for (int i = 0; i < 3; i++) {
        cp[i] = free_port();
        pp[i] = free_port();
        char part[80];
        snprintf(part, sizeof(part), "%sm%d=http://127.0.0.1:%d", i ? "," : "", i, pp[i]);
        strcat(cluster, part);
        snprintf(urls[i], sizeof(urls[i]), "http://127.0.0.1:%d", cp[i]);
    }
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof(name), "m%d", i);
        pids[i] = spawn_etcd(tmp, name, cp[i], pp[i], cluster, "three", false);
    }
    /* The first endpoint never existed; the client moves past it. */
    snprintf(urls[3], sizeof(urls[3]), "http://127.0.0.1:%d", free_port());
    const char *eps[] = {urls[3], urls[0], urls[1], urls[2]};
    struct slb_etcd *e = client(eps, 4, false, false);
    assert_true(wait_ready(e, 20000));
    int64_t r1 = put(e, "/t6/k", "before");
    size_t used = slb_etcd_endpoint(e);
    assert_true(used >= 1);

    /* A watch on the member about to die. */
    struct wlog l = {0};
    struct slb_etcd_watch *w;
    assert_int_equal(slb_etcd_watch_start(e, "/t6/", true, r1 + 1, watch_cb, &l, &w), 0);
    assert_true(wait_count(&l.created, 1, 5000));
    int64_t r2 = put(e, "/t6/k", "second");
    assert_true(wait_events(&l, 1, 5000));

    kill_proc(pids[used - 1]);
    int64_t r3 = put(e, "/t6/k", "after");
    assert_true(slb_etcd_endpoint(e) != used);
    struct res r = range(e, "/t6/k", false, 0);
    CHECK_OK(r);
    assert_string_equal(r.kvs[0].value, "after");
    assert_int_equal(r.kvs[0].mod, r3);

    /* The watch noticed, reconnected to a live member and went on from where it was, with
     * nothing lost and nothing twice. */
    assert_true(wait_events(&l, 2, 10000));
    assert_true(l.lost >= 1);
    assert_true(l.created >= 2);
    int64_t r4 = put(e, "/t6/k", "last");
    assert_true(wait_events(&l, 3, 5000));
    sleep_loop(100);
    for (size_t i = 0; l.n != 3 && i < l.n; i++)
        fprintf(stderr, "event %zu: %s=%s at %lld\n", i, l.ev[i].key, l.ev[i].value,
                (long long)l.ev[i].mod);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.ev[0].mod, r2);
    assert_int_equal(l.ev[1].mod, r3);
    assert_string_equal(l.ev[1].value, "after");
    assert_int_equal(l.ev[2].mod, r4);
    slb_etcd_watch_stop(w);
    slb_etcd_free(e);
    for (int i = 0; i < 3; i++)
        kill_proc(pids[i]);
}

static void test_tls_client_auth(void **state)
{
    if (!have_etcd)
        skip();
    char cmd[2048];
    snprintf(
        cmd, sizeof(cmd),
        "cd %s && exec >pki.log 2>&1 && set -e && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout ca.key -out ca.pem -days 2 -subj /CN=etcd-test-ca && "
        "printf "
        "'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,clientAuth\\n'"
        " >server.ext && "
        "printf 'extendedKeyUsage=clientAuth\\n' >client.ext && "
        "for n in server client; do "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $n.key "
        "-out $n.csr -subj /CN=etcd-test-$n && "
        "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile $n.ext -out $n.pem; done",
        tmp);
    assert_int_equal(system(cmd), 0);
    int c = free_port(), p = free_port();
    char cluster[128], url[64];
    snprintf(cluster, sizeof(cluster), "tls=http://127.0.0.1:%d", p);
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", c);
    pid_t pid = spawn_etcd(tmp, "tls", c, p, cluster, "tls", true);
    const char *eps[] = {url};
    struct slb_etcd *e = client(eps, 1, true, true);
    assert_true(wait_ready(e, 15000));
    int64_t rev = put(e, "/t7/k", "secret");
    struct res r = range(e, "/t7/k", false, 0);
    CHECK_OK(r);
    assert_string_equal(r.kvs[0].value, "secret");
    struct wlog l = {0};
    struct slb_etcd_watch *w;
    assert_int_equal(slb_etcd_watch_start(e, "/t7/k", false, rev, watch_cb, &l, &w), 0);
    assert_true(wait_events(&l, 1, 5000));
    assert_int_equal(l.ev[0].mod, rev);
    slb_etcd_watch_stop(w);
    slb_etcd_free(e);

    /* Without a client certificate etcd refuses the handshake: a TLS error, not a retry
     * until the deadline. */
    e = client(eps, 1, true, false);
    r = range(e, "/t7/k", false, 0);
    assert_int_equal(r.rc, SLB_ETLS);
    slb_etcd_free(e);
    kill_proc(pid);
}

int main(void)
{
    /* SLB_TEST_FILTER=test_name runs one test (cmocka's own filter). */
    if (getenv("SLB_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLB_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_range),
        cmocka_unit_test(test_many_calls_at_once),
        cmocka_unit_test(test_txn_conflict),
        cmocka_unit_test(test_watch_in_order),
        cmocka_unit_test(test_watch_compacted),
        cmocka_unit_test(test_watch_silent_stream),
        cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_lease_keeper),
        cmocka_unit_test(test_cancel_and_unavailable),
        cmocka_unit_test(test_cluster_failover),
        cmocka_unit_test(test_tls_client_auth),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
