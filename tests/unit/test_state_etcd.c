/* SPDX-License-Identifier: Apache-2.0 */
/* The etcd state backend (src/cluster/backend.c) against a real etcd started here: revisions and
 * conditional writes, sealed secrets, the state directory as a write-through cache that reads
 * fall back to, and seeding. Skipped when no `etcd` binary is on PATH. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "cluster/backend.h"
#include "cluster/etcd.h"
#include "cluster/seal.h"
#include "core/fsio.h"
#include "core/log.h"
#include "etcd_proc.h"
#include "net/httpc.h"
#include "state/backend.h"

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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[64];
static bool have_etcd;
static char url[64];
static const unsigned char key1[32] = {1, 2, 3};
static const unsigned char key2[32] = {9, 9, 9};
static int serial;

#define SECRET "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n"

/* A fresh prefix per test: tests do not see each other's documents. */
static void prefix(char *out, size_t size)
{
    snprintf(out, size, "/t%d/", ++serial);
}

/* A state directory of its own (the cache). */
static struct slb_backend *cache_dir(char *dir, size_t size)
{
    snprintf(dir, size, "%s/cache%d", tmp, ++serial);
    assert_int_equal(mkdir(dir, 0700), 0);
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_non_null(b);
    assert_int_equal(slb_backend_dir_prepare(b, &err), 0);
    return b;
}

static struct slb_backend *backend_at(const char *endpoint, const char *pfx,
                                      const unsigned char *key, struct slb_backend *cache)
{
    const char *eps[] = {endpoint};
    struct slb_etcd_opts o = {.endpoints = eps, .nendpoints = 1};
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_etcd_new(&o, pfx, key, cache, &err);
    if (!b)
        fail_msg("slb_backend_etcd_new: %s", err.msg);
    return b;
}

/* The raw value etcd holds for key, read with etcdctl (as an operator would). */
static char *etcdctl_get(const char *key)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "ETCDCTL_API=3 etcdctl --endpoints %s get --print-value-only %s",
             url, key);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    pclose(p);
    return buf;
}

static int group_setup(void **state)
{
    slb_log_set_level("error");
    have_etcd =
        system("command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1") == 0;
    if (!have_etcd) {
        fprintf(stderr, "etcd not found on PATH: the etcd backend tests are skipped\n");
        return 0;
    }
    snprintf(tmp, sizeof(tmp), "/tmp/slb-stetcd-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    atexit(kill_all);
    int c = free_port(), p = free_port();
    char cluster[128], log[128];
    snprintf(cluster, sizeof(cluster), "s=http://127.0.0.1:%d", p);
    snprintf(log, sizeof(log), "%s/s.log", tmp);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", c);
    spawn_etcd(tmp, "s", c, p, cluster, "stetcd", false);
    /* Ready when a read answers. */
    for (int i = 0; i < 150; i++) {
        struct slb_backend *b = backend_at(url, "/ready/", key1, NULL);
        struct slb_doc d;
        struct slb_err err = {0};
        int rc = slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err);
        slb_backend_free(b);
        if (rc == -ENOENT)
            return 0;
        usleep(100 * 1000);
    }
    fprintf(stderr, "etcd did not start; see %s\n", log);
    return -1;
}

static int group_teardown(void **state)
{
    kill_all();
    if (tmp[0] && !getenv("SLB_TEST_KEEP")) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

#define NEED_ETCD()                                                                                \
    do {                                                                                           \
        if (!have_etcd)                                                                            \
            skip();                                                                                \
    } while (0)

/* Revisions are etcd's mod_revision; a write against a stale one changes nothing. */
static void test_put_get_conflict(void **state)
{
    NEED_ETCD();
    char pfx[32], dir[128];
    prefix(pfx, sizeof(pfx));
    struct slb_backend *b = backend_at(url, pfx, key1, cache_dir(dir, sizeof(dir)));
    assert_true(b->ops->shared);
    uint64_t r1 = 0, r2 = 0;
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{\"a\":1}\n", 8, SLB_REV_ABSENT, &r1), 0);
    assert_true(r1 > 0);
    /* Create-only again: taken. */
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{}\n", 3, SLB_REV_ABSENT, NULL),
                     SLB_ECONFLICT);
    struct slb_doc d;
    struct slb_err err = {0};
    assert_int_equal(slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    assert_int_equal(d.rev, r1);
    assert_string_equal(d.data, "{\"a\":1}\n");
    slb_doc_clear(&d);
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{\"a\":2}\n", 8, r1, &r2), 0);
    assert_true(r2 > r1);
    /* Another node's write based on r1 loses, and nothing changes. */
    struct slb_backend *other = backend_at(url, pfx, key1, NULL);
    assert_int_equal(slb_backend_put(other, SLB_DOC_CONFIG, "{\"a\":3}\n", 8, r1, NULL),
                     SLB_ECONFLICT);
    assert_int_equal(slb_backend_get(other, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    assert_string_equal(d.data, "{\"a\":2}\n");
    assert_int_equal(d.rev, r2);
    slb_doc_clear(&d);
    /* Written through to the cache. */
    char path[256], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/config.json", dir);
    assert_int_equal(slb_fs_read_all(path, 1024, &text, &len), 0);
    assert_string_equal(text, "{\"a\":2}\n");
    free(text);
    /* Conditional delete. */
    assert_int_equal(slb_backend_del(other, SLB_DOC_CONFIG, r1), SLB_ECONFLICT);
    assert_int_equal(slb_backend_del(b, SLB_DOC_CONFIG, r2), 0);
    assert_int_equal(slb_backend_get(other, SLB_DOC_CONFIG, 1024, &d, &err), -ENOENT);
    slb_backend_free(other);
    slb_backend_free(b);
}

struct keys {
    char v[8][64];
    int n;
};

static int collect(const char *key, void *arg)
{
    struct keys *k = arg;
    if (k->n < 8)
        snprintf(k->v[k->n++], 64, "%s", key);
    return 0;
}

/* Certificates and ticket keys are sealed under the cluster key: etcd never holds a private
 * key, another key cannot open them, and they cannot be moved to another etcd key. */
static void test_secrets_sealed(void **state)
{
    NEED_ETCD();
    char pfx[32], dir[128], name[96];
    prefix(pfx, sizeof(pfx));
    struct slb_backend *b = backend_at(url, pfx, key1, cache_dir(dir, sizeof(dir)));
    assert_int_equal(slb_backend_put(b, "certs/c1", SECRET, strlen(SECRET), SLB_REV_ANY, NULL), 0);
    assert_int_equal(slb_backend_put(b, "certs/c2", SECRET, strlen(SECRET), SLB_REV_ANY, NULL), 0);
    assert_int_equal(slb_backend_put(b, SLB_DOC_TICKETS, "ticketkeys", 10, SLB_REV_ANY, NULL), 0);
    snprintf(name, sizeof(name), "%scerts/c1", pfx);
    assert_null(strstr(etcdctl_get(name), "PRIVATE KEY"));
    snprintf(name, sizeof(name), "%stickets", pfx);
    assert_null(strstr(etcdctl_get(name), "ticketkeys"));
    struct slb_doc d;
    struct slb_err err = {0};
    assert_int_equal(slb_backend_get(b, "certs/c1", 1 << 20, &d, &err), 0);
    assert_string_equal(d.data, SECRET);
    slb_doc_clear(&d);
    struct keys k = {0};
    assert_int_equal(slb_backend_list(b, SLB_DOC_CERTS, collect, &k), 0);
    assert_int_equal(k.n, 2);
    assert_string_equal(k.v[0], "certs/c1");
    assert_string_equal(k.v[1], "certs/c2");
    /* Another cluster's key: refused, said clearly. */
    struct slb_backend *wrong = backend_at(url, pfx, key2, NULL);
    assert_int_equal(slb_backend_get(wrong, "certs/c1", 1 << 20, &d, &err), SLB_EINVAL);
    assert_string_equal(err.code, "cluster_key");
    slb_backend_free(wrong);
    /* A sealed value copied under another name does not open. */
    struct slb_seal seal;
    slb_seal_init(&seal, key1);
    unsigned char sealed[256];
    size_t slen = 0;
    char n1[96], n2[96], *out = NULL;
    size_t olen = 0;
    snprintf(n1, sizeof(n1), "%scerts/c1", pfx);
    snprintf(n2, sizeof(n2), "%scerts/c2", pfx);
    assert_int_equal(slb_seal_seal(&seal, n1, "abc", 3, sealed, &slen), 0);
    assert_int_equal(slb_backend_etcd_decode(b, n1, (char *)sealed, slen, &out, &olen), 0);
    assert_string_equal(out, "abc");
    free(out);
    assert_int_not_equal(slb_backend_etcd_decode(b, n2, (char *)sealed, slen, &out, &olen), 0);
    slb_seal_deinit(&seal);
    slb_backend_free(b);
}

/* etcd out of reach: reads come from the cache (a node restarts from it), writes are
 * refused with SLB_BACKEND_EUNAVAILABLE and leave the cache alone. */
static void test_unreachable_uses_cache(void **state)
{
    NEED_ETCD();
    char pfx[32], dir[128], dead[64];
    prefix(pfx, sizeof(pfx));
    struct slb_backend *cache = cache_dir(dir, sizeof(dir));
    assert_int_equal(
        slb_backend_put(cache, SLB_DOC_CONFIG, "{\"cached\":1}\n", 13, SLB_REV_ANY, NULL), 0);
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", free_port());
    struct slb_backend *b = backend_at(dead, pfx, key1, cache);
    struct slb_doc d;
    struct slb_err err = {0};
    assert_int_equal(slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    assert_string_equal(d.data, "{\"cached\":1}\n");
    slb_doc_clear(&d);
    assert_false(slb_backend_etcd_online(b));
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{}\n", 3, SLB_REV_ANY, NULL),
                     SLB_BACKEND_EUNAVAILABLE);
    bool seeded = true;
    assert_int_equal(slb_backend_etcd_seed(b, &seeded), SLB_BACKEND_EUNAVAILABLE);
    assert_false(seeded);
    /* Told offline (by the watch), nothing waits for a timeout. */
    slb_backend_etcd_set_offline(b, true);
    assert_int_equal(slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    slb_doc_clear(&d);
    slb_backend_free(b);
}

/* The first node imports its state directory in one transaction; a second finds the prefix
 * taken and imports nothing. */
static void test_seed_once(void **state)
{
    NEED_ETCD();
    char pfx[32], dir1[128], dir2[128], name[96];
    prefix(pfx, sizeof(pfx));
    struct slb_backend *c1 = cache_dir(dir1, sizeof(dir1));
    assert_int_equal(slb_backend_put(c1, SLB_DOC_CONFIG, "{\"seed\":1}\n", 11, SLB_REV_ANY, NULL),
                     0);
    assert_int_equal(slb_backend_put(c1, "certs/abc", SECRET, strlen(SECRET), SLB_REV_ANY, NULL),
                     0);
    assert_int_equal(slb_backend_put(c1, SLB_DOC_TICKETS, "ring", 4, SLB_REV_ANY, NULL), 0);
    struct slb_backend *c2 = cache_dir(dir2, sizeof(dir2));
    assert_int_equal(slb_backend_put(c2, SLB_DOC_CONFIG, "{\"seed\":2}\n", 11, SLB_REV_ANY, NULL),
                     0);
    struct slb_backend *b1 = backend_at(url, pfx, key1, c1);
    struct slb_backend *b2 = backend_at(url, pfx, key1, c2);
    bool s1 = false, s2 = true;
    assert_int_equal(slb_backend_etcd_seed(b1, &s1), 0);
    assert_true(s1);
    assert_int_equal(slb_backend_etcd_seed(b2, &s2), 0);
    assert_false(s2);
    struct slb_doc d;
    struct slb_err err = {0};
    assert_int_equal(slb_backend_get(b2, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    assert_string_equal(d.data, "{\"seed\":1}\n");
    slb_doc_clear(&d);
    assert_int_equal(slb_backend_get(b2, "certs/abc", 1 << 20, &d, &err), 0);
    assert_string_equal(d.data, SECRET);
    slb_doc_clear(&d);
    assert_int_equal(slb_backend_get(b2, SLB_DOC_TICKETS, 1024, &d, &err), 0);
    assert_string_equal(d.data, "ring");
    slb_doc_clear(&d);
    snprintf(name, sizeof(name), "%scerts/abc", pfx);
    assert_null(strstr(etcdctl_get(name), "PRIVATE KEY"));
    /* The second node's cache now holds what etcd has (written through on read). */
    char path[256], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/certs/abc.json", dir2);
    assert_int_equal(slb_fs_read_all(path, 1 << 20, &text, &len), 0);
    assert_string_equal(text, SECRET);
    free(text);
    slb_backend_free(b1);
    slb_backend_free(b2);
}

int main(void)
{
    if (getenv("SLB_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLB_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_conflict),
        cmocka_unit_test(test_secrets_sealed),
        cmocka_unit_test(test_unreachable_uses_cache),
        cmocka_unit_test(test_seed_once),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
