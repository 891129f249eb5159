/* SPDX-License-Identifier: Apache-2.0 */
/* Cost of one backend pick (src/lb/sched.c) for groups of 10 and 5,000 servers: nanoseconds
 * per pick of each scheduler as workers call it (usable[] generation fixed between health
 * changes), next to the plain O(n) scan every pick paid before (generation 0), and the
 * memory a server costs. Single thread, no I/O: `make bench-sched`. */
#include "config/snapshot.h"
#include "lb/sched.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PICKS 2000000

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

struct group {
    size_t n;
    uint32_t *weight, *active;
    uint8_t *usable;
    uint64_t *ids;
};

static struct group group_new(size_t n)
{
    struct group g = {.n = n,
                      .weight = calloc(n, sizeof(uint32_t)),
                      .active = calloc(n, sizeof(uint32_t)),
                      .usable = calloc(n, 1),
                      .ids = calloc(n, sizeof(uint64_t))};
    if (!g.weight || !g.active || !g.usable || !g.ids) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    uint64_t x = 7;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        g.weight[i] = (uint32_t)(x >> 33) % 100 + 1;
        g.usable[i] = i % 50 != 3; /* a few down */
        char name[64];
        int len = snprintf(name, sizeof(name), "10.0.%zu.%zu:8080", i / 250, i % 250 + 1);
        g.ids[i] = slb_hash64(name, (size_t)len, 0);
    }
    return g;
}

static void group_free(struct group *g)
{
    free(g->weight);
    free(g->active);
    free(g->usable);
    free(g->ids);
}

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd; /* large blocks are mmapped */
}

/* ns per pick; *state_bytes: the per-worker state plus the shared data, per server. */
static double measure(enum slb_sched_kind kind, struct group *g, uint64_t gen, long picks,
                      double *bytes_per_server)
{
    const struct slb_sched_ops *ops = slb_sched_get(kind);
    size_t before = heap_used();
    void *shared = ops->shared_new(g->ids, g->weight, g->n);
    void *st = ops->state_new(g->n);
    struct slb_sched_input in = {
        .n = g->n, .weight = g->weight, .usable = g->usable, .active = g->active, .gen = gen};
    /* The first pick builds the per-generation index: not what a pick costs. */
    in.key = 1;
    ops->pick(st, shared, &in);
    if (bytes_per_server)
        *bytes_per_server = (double)(heap_used() - before) / (double)g->n;
    uint64_t key = 0x9e3779b97f4a7c15ULL;
    long sink = 0;
    double t0 = now_ns();
    for (long k = 0; k < picks; k++) {
        key = key * 6364136223846793005ULL + 1442695040888963407ULL;
        in.key = key;
        int s = ops->pick(st, shared, &in);
        sink += s;
        /* Connections come and go: wlc sees a changing load. */
        if (s >= 0 && kind == SLB_SCHED_WLC) {
            g->active[s]++;
            g->active[(size_t)(key >> 40) % g->n] /= 2;
        }
    }
    double ns = (now_ns() - t0) / (double)picks;
    if (sink == -1)
        printf("\n");
    ops->state_free(st);
    ops->shared_free(shared);
    return ns;
}

int main(int argc, char **argv)
{
    long picks = argc > 1 ? atol(argv[1]) : PICKS;
    static const enum slb_sched_kind kinds[] = {SLB_SCHED_WRR, SLB_SCHED_WLC, SLB_SCHED_TCH,
                                                SLB_SCHED_RR};
    static const size_t sizes[] = {10, 5000};
    printf("ns per pick (one thread; %ld picks each; indexed = between health changes, "
           "scan = the O(n) pass every pick made before)\n",
           picks);
    printf("%-6s %12s %12s %12s %12s %14s\n", "sched", "10 indexed", "5000 indexed", "10 scan",
           "5000 scan", "bytes/server");
    for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
        double fast[2], slow[2], bytes = 0;
        for (size_t s = 0; s < 2; s++) {
            struct group g = group_new(sizes[s]);
            fast[s] = measure(kinds[k], &g, 1, picks, s == 1 ? &bytes : NULL);
            /* The scan is O(n): fewer picks keep the run short. */
            slow[s] = measure(kinds[k], &g, 0, s == 1 ? picks / 50 : picks, NULL);
            group_free(&g);
        }
        printf("%-6s %12.1f %12.1f %12.1f %12.1f %14.1f\n", slb_sched_name(kinds[k]), fast[0],
               fast[1], slow[0], slow[1], bytes);
    }
    /* What else a server costs: its configuration, its runtime object (health state and a
     * counter line per worker, kept across configuration changes), and per worker the usable
     * flag and the weight the snapshot keeps. */
    int workers = 2;
    printf("\nmemory per server besides the scheduler (%d workers): config %zu B, runtime %zu B, "
           "snapshot/worker views %zu B\n",
           workers, sizeof(struct slb_server_cfg),
           sizeof(struct slb_srv_rt) + (size_t)workers * sizeof(struct slb_wcount),
           sizeof(uint32_t) + sizeof(struct slb_srv_rt *) + (size_t)workers * 1);
    return 0;
}
