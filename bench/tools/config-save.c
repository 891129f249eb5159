/* SPDX-License-Identifier: Apache-2.0 */
/* What writing config.json costs after a weight change (src/config/state.c): serializing the
 * normalized document of `make bench-scale`'s large configuration (10,000 certificates, 1,000
 * listeners) from scratch against assembling it from the remembered text of its unchanged
 * pieces (src/state/jsoncache.c), and the durable write of that text against the small
 * configuration's (10 certificates, 1 listener): with and without its fsyncs.
 * `make bench-save [BENCH_ARGS=DIR]` (DIR: where to write, default /tmp). */
#include "config/config.h"
#include "config/state.h"
#include "core/fsio.h"
#include "state/backend.h"
#include "state/jsoncache.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 30

/* Serializing is timed in CPU time (on a shared machine the wall clock mostly measures the
 * others), writing in wall time (an fsync waits for the disk). */
static double clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    return clock_ms(CLOCK_THREAD_CPUTIME_ID);
}

static double now_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *ms, int n)
{
    qsort(ms, (size_t)n, sizeof(*ms), cmp_double);
    printf("  %-58s p50 %8.3f ms   p90 %8.3f ms\n", what, ms[n / 2], ms[n * 9 / 10]);
}

static int any_cert(void *arg, const char *id)
{
    (void)arg;
    (void)id;
    return 1;
}

static void die(const char *what)
{
    fprintf(stderr, "config-save: %s\n", what);
    exit(1);
}

/* The document bench/scale.py writes, normalized as slbd keeps it: listener 0 holds every
 * certificate, the others ncerts / nlisteners each. */
static json_t *scale_doc(int ncerts, int nlisteners)
{
    json_t *ls = json_array();
    int per = nlisteners > 1 ? ncerts / nlisteners : ncerts;
    for (int i = 0; i < nlisteners; i++) {
        json_t *ids = json_array();
        int n = i == 0 ? ncerts : per;
        for (int k = 0; k < n; k++)
            json_array_append_new(ids, json_sprintf("s%d", i == 0 ? k : (i * per + k) % ncerts));
        json_array_append_new(ls, json_pack("{s:o, s:s, s:o, s:s, s:{s:o}}", "name",
                                            json_sprintf("l%d", i), "protocol", "https", "bind",
                                            json_sprintf("127.0.0.1:%d", 20000 + i),
                                            "backend_group", "g", "tls", "certificates", ids));
    }
    json_t *in = json_pack("{s:o, s:[{s:s, s:[{s:s, s:i, s:i}], s:{s:b}}]}", "listeners", ls,
                           "groups", "name", "g", "servers", "address", "127.0.0.1", "port", 19999,
                           "weight", 100, "health_check", "enabled", 0);
    struct slb_cert_lookup lookup = {any_cert, NULL};
    struct slb_config *cfg = NULL;
    struct slb_err err = {0};
    if (!in || slb_config_from_json(in, &lookup, &cfg, &err) < 0) {
        fprintf(stderr, "config-save: %s\n", err.msg);
        exit(1);
    }
    json_t *doc = json_incref(cfg->json);
    slb_config_free(cfg);
    json_decref(in);
    return doc;
}

/* The next document after a weight change, as a copy-on-write change builds it: every piece
 * shared but the group. */
static json_t *weight_change(const json_t *doc, int w)
{
    json_t *next = json_copy((json_t *)doc);
    json_t *groups = json_copy(json_object_get(doc, "groups"));
    json_t *g = json_deep_copy(json_array_get(groups, 0));
    json_object_set_new(json_array_get(json_object_get(g, "servers"), 0), "weight",
                        json_integer(w));
    json_array_set_new(groups, 0, g);
    json_object_set_new(next, "groups", groups);
    return next;
}

/* The atomic write without its two fsyncs: what the durability costs is the difference. */
static int write_no_sync(const char *dir, const char *data, size_t len)
{
    char tmp[4200], dst[4200];
    snprintf(tmp, sizeof(tmp), "%s/.nosync.tmp", dir);
    snprintf(dst, sizeof(dst), "%s/nosync.json", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, data, len);
    close(fd);
    return w == (ssize_t)len ? rename(tmp, dst) : -1;
}

static void writes(const char *dir, const char *what, const char *text, size_t len)
{
    double ms[ROUNDS], cpu[ROUNDS], ns[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        double t0 = now_ms(), c0 = cpu_ms();
        if (slb_fs_write_atomic(dir, "config.json", text, len, 0600) < 0)
            die("write failed");
        ms[i] = now_ms() - t0;
        cpu[i] = cpu_ms() - c0;
        t0 = now_ms();
        if (write_no_sync(dir, text, len) < 0)
            die("write failed");
        ns[i] = now_ms() - t0;
    }
    char label[120];
    snprintf(label, sizeof(label), "write %s (%zu bytes), durable", what, len);
    report(label, ms, ROUNDS);
    snprintf(label, sizeof(label), "write %s, durable, CPU time", what);
    report(label, cpu, ROUNDS);
    snprintf(label, sizeof(label), "write %s, without the fsyncs", what);
    report(label, ns, ROUNDS);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : "/tmp";
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/slb-config-save-XXXXXX", base);
    if (!mkdtemp(dir))
        die("cannot create a temporary directory");

    json_t *small = scale_doc(10, 1), *large = scale_doc(10000, 1000);
    double old_ms[ROUNDS], new_ms[ROUNDS], cold_ms[ROUNDS], small_ms[ROUNDS];
    char *text = NULL, *small_text = NULL;
    size_t len = 0, small_len = 0;

    struct slb_json_cache *c = slb_json_cache_new(), *sc = slb_json_cache_new();
    if (slb_json_cache_dump(c, large, &text, &len) < 0 ||
        slb_json_cache_dump(sc, small, &small_text, &small_len) < 0)
        die("cannot serialize");
    for (int i = 0; i < ROUNDS; i++) {
        json_t *next = weight_change(large, 50 + i % 2);
        json_decref(large);
        large = next;
        double t0 = cpu_ms();
        char *plain = json_dumps(large, JSON_INDENT(2) | JSON_SORT_KEYS);
        old_ms[i] = cpu_ms() - t0;
        free(plain);
        free(text);
        t0 = cpu_ms();
        if (slb_json_cache_dump(c, large, &text, &len) < 0)
            die("cannot serialize");
        new_ms[i] = cpu_ms() - t0;

        /* A document sharing no piece with the one before: everything is serialized. */
        struct slb_json_cache *cold = slb_json_cache_new();
        char *cold_text = NULL;
        size_t cold_len = 0;
        t0 = cpu_ms();
        if (!cold || slb_json_cache_dump(cold, large, &cold_text, &cold_len) < 0)
            die("cannot serialize");
        cold_ms[i] = cpu_ms() - t0;
        free(cold_text);
        slb_json_cache_free(cold);

        next = weight_change(small, 50 + i % 2);
        json_decref(small);
        small = next;
        free(small_text);
        t0 = cpu_ms();
        if (slb_json_cache_dump(sc, small, &small_text, &small_len) < 0)
            die("cannot serialize");
        small_ms[i] = cpu_ms() - t0;
    }
    struct slb_json_cache_stats st;
    slb_json_cache_stats(c, &st);
    printf("config.json after a weight change, %d rounds (large: 10,000 certificates, 1,000 "
           "listeners, %zu bytes, %zu pieces, %zu serialized per change)\n",
           ROUNDS, len, st.pieces, st.serialized);
    printf("serializing, CPU time:\n");
    report("large, json_dumps of the whole document (before)", old_ms, ROUNDS);
    report("large, assembled from remembered pieces (now)", new_ms, ROUNDS);
    report("large, nothing remembered (no piece shared)", cold_ms, ROUNDS);
    report("small, assembled from remembered pieces", small_ms, ROUNDS);
    printf("durable write in %s, wall time:\n", dir);
    writes(dir, "large", text, len);
    writes(dir, "small", small_text, small_len);

    free(text);
    free(small_text);
    slb_json_cache_free(c);
    slb_json_cache_free(sc);
    json_decref(large);
    json_decref(small);
    char path[4200];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/nosync.json", dir);
    unlink(path);
    rmdir(dir);
    return 0;
}
