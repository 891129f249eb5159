/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the schedulers: WRR smoothness and exactness, RR, WLC, consistent hashing. */
/* cmocka needs these in this order; keep clang-format from sorting them. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb/sched.h"

#define MAX_SERVERS 16

/* One group as a worker would see it; the arrays back the slb_sched_input. */
struct group {
    size_t n;
    uint32_t weight[MAX_SERVERS];
    uint8_t usable[MAX_SERVERS];
    uint32_t active[MAX_SERVERS];
    uint64_t ids[MAX_SERVERS];
};

static void group_init(struct group *g, const uint32_t *weights, size_t n)
{
    memset(g, 0, sizeof(*g));
    g->n = n;
    for (size_t i = 0; i < n; i++) {
        char name[64];
        int len = snprintf(name, sizeof(name), "10.0.%zu.%zu:8080", i / 250, i % 250 + 1);
        g->weight[i] = weights[i];
        g->usable[i] = weights[i] > 0;
        g->ids[i] = slb_hash64(name, (size_t)len, 0);
    }
}

static struct slb_sched_input group_input(struct group *g, uint64_t key)
{
    struct slb_sched_input in = {
        .n = g->n, .weight = g->weight, .usable = g->usable, .active = g->active, .key = key};
    return in;
}

static int pick(const struct slb_sched_ops *ops, void *st, const void *shared, struct group *g,
                uint64_t key)
{
    struct slb_sched_input in = group_input(g, key);
    return ops->pick(st, shared, &in);
}

/* ---------------------------------------------------------------------------------------------
 * Names and hashing
 * ------------------------------------------------------------------------------------------- */

static void test_names(void **unused)
{
    static const char *names[] = {"wrr", "rr", "wlc", "sch", "tch"};
    static const enum slb_sched_kind kinds[] = {SLB_SCHED_WRR, SLB_SCHED_RR, SLB_SCHED_WLC,
                                                SLB_SCHED_SCH, SLB_SCHED_TCH};

    for (size_t k = 0; k < 5; k++) {
        assert_int_equal(slb_sched_parse(names[k]), kinds[k]);
        assert_string_equal(slb_sched_name(kinds[k]), names[k]);
        const struct slb_sched_ops *ops = slb_sched_get(kinds[k]);
        assert_non_null(ops);
        assert_string_equal(ops->name, names[k]);
        assert_non_null(ops->pick);
        assert_non_null(ops->state_new);
        /* Every kind has real state so NULL can only mean out of memory. */
        void *st = ops->state_new(3);
        assert_non_null(st);
        ops->state_free(st);
        ops->state_free(NULL);
        ops->shared_free(NULL);
    }
    assert_int_equal(slb_sched_parse("WRR"), -1);
    assert_int_equal(slb_sched_parse("lc"), -1);
    assert_int_equal(slb_sched_parse(""), -1);
    assert_int_equal(slb_sched_parse(NULL), -1);
    assert_null(slb_sched_get((enum slb_sched_kind)99));
    assert_null(slb_sched_name((enum slb_sched_kind)99));
    assert_null(slb_sched_get(SLB_SCHED_WRR)->shared_new(NULL, NULL, 0));
}

static int popcount64(uint64_t x)
{
    int c = 0;
    for (; x; x &= x - 1)
        c++;
    return c;
}

static void test_hash64(void **unused)
{
    /* Frozen values: server identities and hash keys must not change between builds, or a
     * restart would remap every consistent-hash client. */
    assert_true(slb_hash64("", 0, 0) == UINT64_C(0xfbf3d07040a8e228));
    assert_true(slb_hash64("10.0.0.1:80", 11, 0) == UINT64_C(0x8e3699b2d7d4cd96));
    assert_true(slb_hash64("the quick brown fox jumps", 25, 7) == UINT64_C(0x46eea232834fcee1));

    assert_true(slb_hash64(NULL, 0, 1) != slb_hash64(NULL, 0, 2));
    assert_true(slb_hash64("a", 1, 0) != slb_hash64("a\0", 2, 0));
    assert_true(slb_hash64("ab", 2, 0) != slb_hash64("ba", 2, 0));
    assert_true(slb_hash64("12345678abcdefgh", 16, 0) != slb_hash64("abcdefgh12345678", 16, 0));
    assert_true(slb_hash64("10.0.0.1:80", 11, 0) != slb_hash64("10.0.0.1:81", 11, 0));

    /* Avalanche: flipping any single input bit flips each output bit about half the time. */
    enum { INPUTS = 64, LEN = 13 };
    unsigned flips[64] = {0};
    unsigned long total_bits = 0, trials = 0;
    uint64_t state = 12345;
    for (int t = 0; t < INPUTS; t++) {
        unsigned char buf[LEN];
        for (int b = 0; b < LEN; b++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[b] = (unsigned char)(state >> 56);
        }
        uint64_t h0 = slb_hash64(buf, LEN, 0);
        for (int bit = 0; bit < LEN * 8; bit++) {
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            uint64_t d = h0 ^ slb_hash64(buf, LEN, 0);
            buf[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            total_bits += (unsigned long)popcount64(d);
            trials++;
            for (int o = 0; o < 64; o++)
                flips[o] += (unsigned)((d >> o) & 1);
        }
    }
    double mean = (double)total_bits / (double)trials;
    assert_true(mean > 31.0 && mean < 33.0);
    for (int o = 0; o < 64; o++) {
        double p = (double)flips[o] / (double)trials;
        assert_true(p > 0.45 && p < 0.55);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Smooth weighted round robin
 * ------------------------------------------------------------------------------------------- */

/* Runs `cycles` full cycles of sum(weights) picks and checks that (a) every cycle hands each
 * server exactly its weight and (b) in every window of the sequence each server's count stays
 * within 2 of its proportional share. A plain "weight picks in a row" WRR fails (b) badly for
 * weights like 50,50,1 (a window of 50 picks holds 50 of one server instead of ~25). */
static void check_wrr_smooth(const uint32_t *weights, size_t n, size_t cycles)
{
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WRR);
    struct group g;
    group_init(&g, weights, n);
    void *st = ops->state_new(n);
    assert_non_null(st);

    uint32_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += weights[i];
    size_t len = (size_t)total * cycles;
    int *seq = calloc(len, sizeof(*seq));
    assert_non_null(seq);

    for (size_t c = 0; c < cycles; c++) {
        unsigned counts[MAX_SERVERS] = {0};
        for (size_t k = 0; k < total; k++) {
            int s = pick(ops, st, NULL, &g, 0);
            assert_in_range(s, 0, (int)n - 1);
            seq[c * total + k] = s;
            counts[s]++;
        }
        for (size_t i = 0; i < n; i++)
            assert_int_equal(counts[i], weights[i]);
    }

    for (size_t start = 0; start < total; start++) {
        unsigned counts[MAX_SERVERS] = {0};
        for (size_t L = 1; L <= total && start + L <= len; L++) {
            counts[seq[start + L - 1]]++;
            for (size_t i = 0; i < n; i++) {
                double share = (double)L * weights[i] / total;
                double dev = (double)counts[i] - share;
                if (dev < -2.0 || dev > 2.0)
                    fail_msg("server %zu: %u picks in window [%zu,+%zu), share %.2f", i, counts[i],
                             start, L, share);
            }
        }
    }
    free(seq);
    ops->state_free(st);
}

static void test_wrr_smooth(void **unused)
{
    static const uint32_t w511[] = {5, 1, 1};
    static const uint32_t w50501[] = {50, 50, 1};
    static const uint32_t w7531[] = {7, 5, 3, 1};
    static const uint32_t w100[] = {100, 99, 98, 1};

    check_wrr_smooth(w511, 3, 6);
    check_wrr_smooth(w50501, 3, 3);
    check_wrr_smooth(w7531, 4, 4);
    check_wrr_smooth(w100, 4, 2);

    /* 5,1,1 interleaves the light servers into the heavy one's picks. */
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WRR);
    struct group g;
    group_init(&g, w511, 3);
    void *st = ops->state_new(3);
    static const int want[] = {0, 0, 1, 0, 2, 0, 0};
    for (size_t k = 0; k < 14; k++)
        assert_int_equal(pick(ops, st, NULL, &g, 0), want[k % 7]);
    ops->state_free(st);
}

static void test_wrr_zero_and_unusable(void **unused)
{
    static const uint32_t w[] = {3, 0, 2};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WRR);
    struct group g;
    group_init(&g, w, 3);
    void *st = ops->state_new(3);
    unsigned counts[3] = {0};

    /* Weight 0 is never picked, even when a careless caller marks it usable. */
    g.usable[1] = 1;
    for (int k = 0; k < 500; k++)
        counts[pick(ops, st, NULL, &g, 0)]++;
    assert_int_equal(counts[0], 300);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 200);

    /* Unusable servers are skipped. */
    g.usable[0] = 0;
    for (int k = 0; k < 20; k++)
        assert_int_equal(pick(ops, st, NULL, &g, 0), 2);

    /* Nothing usable: -1, and the state is left balanced for when servers come back. */
    g.usable[2] = 0;
    assert_int_equal(pick(ops, st, NULL, &g, 0), -1);
    assert_int_equal(pick(ops, st, NULL, &g, 0), -1);
    g.usable[0] = g.usable[2] = 1;
    memset(counts, 0, sizeof(counts));
    for (int k = 0; k < 50; k++)
        counts[pick(ops, st, NULL, &g, 0)]++;
    assert_int_equal(counts[0], 30);
    assert_int_equal(counts[2], 20);
    ops->state_free(st);

    /* An empty group and a group whose state is smaller than the input. */
    st = ops->state_new(0);
    assert_non_null(st);
    assert_int_equal(pick(ops, st, NULL, &g, 0), -1);
    ops->state_free(st);
}

/* A server that was unusable for a while must not come back owed a burst of picks. */
static void test_wrr_no_catch_up(void **unused)
{
    static const uint32_t w[] = {1, 1};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WRR);
    struct group g;
    group_init(&g, w, 2);
    void *st = ops->state_new(2);

    g.usable[0] = 0;
    for (int k = 0; k < 100; k++)
        assert_int_equal(pick(ops, st, NULL, &g, 0), 1);
    g.usable[0] = 1;
    int prev = pick(ops, st, NULL, &g, 0);
    for (int k = 0; k < 20; k++) {
        int s = pick(ops, st, NULL, &g, 0);
        assert_int_not_equal(s, prev);
        prev = s;
    }
    ops->state_free(st);
}

/* ---------------------------------------------------------------------------------------------
 * Round robin
 * ------------------------------------------------------------------------------------------- */

static void test_rr(void **unused)
{
    static const uint32_t w[] = {1, 5, 1, 1, 0};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_RR);
    struct group g;
    group_init(&g, w, 5);
    void *st = ops->state_new(5);
    unsigned counts[5] = {0};

    /* Weights other than 0 do not matter; weight 0 drains even if marked usable. */
    g.usable[4] = 1;
    for (int k = 0; k < 400; k++) {
        int s = pick(ops, st, NULL, &g, 0);
        assert_int_equal(s, k % 4);
        counts[s]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(counts[i], 100);
    assert_int_equal(counts[4], 0);

    /* Unusable skipped, the rest stay even. */
    g.usable[1] = 0;
    memset(counts, 0, sizeof(counts));
    for (int k = 0; k < 300; k++)
        counts[pick(ops, st, NULL, &g, 0)]++;
    assert_int_equal(counts[0], 100);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 100);
    assert_int_equal(counts[3], 100);

    g.usable[0] = g.usable[2] = g.usable[3] = 0;
    assert_int_equal(pick(ops, st, NULL, &g, 0), -1);
    g.usable[2] = 1;
    assert_int_equal(pick(ops, st, NULL, &g, 0), 2);
    assert_int_equal(pick(ops, st, NULL, &g, 0), 2);
    ops->state_free(st);

    /* Separate workers keep separate positions. */
    group_init(&g, w, 4);
    void *a = ops->state_new(4), *b = ops->state_new(4);
    assert_int_equal(pick(ops, a, NULL, &g, 0), 0);
    assert_int_equal(pick(ops, a, NULL, &g, 0), 1);
    assert_int_equal(pick(ops, b, NULL, &g, 0), 0);
    assert_int_equal(pick(ops, a, NULL, &g, 0), 2);
    ops->state_free(a);
    ops->state_free(b);
}

/* ---------------------------------------------------------------------------------------------
 * Weighted least connections
 * ------------------------------------------------------------------------------------------- */

static void test_wlc_least_loaded(void **unused)
{
    static const uint32_t w[] = {1, 1, 1};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WLC);
    struct group g;
    group_init(&g, w, 3);
    void *st = ops->state_new(3);

    g.active[0] = 10, g.active[1] = 5, g.active[2] = 8;
    for (int k = 0; k < 5; k++)
        assert_int_equal(pick(ops, st, NULL, &g, 0), 1);

    /* 10/4 = 2.5 beats 5/1 and 8/1. */
    g.weight[0] = 4;
    assert_int_equal(pick(ops, st, NULL, &g, 0), 0);
    /* 10/4 = 2.5 loses to 2/1. */
    g.active[2] = 2;
    assert_int_equal(pick(ops, st, NULL, &g, 0), 2);
    /* Large counts must not overflow the cross-multiplication: 4e9/100 < 4.1e9/100. */
    g.weight[0] = g.weight[1] = g.weight[2] = 100;
    g.active[0] = 4000000000u, g.active[1] = 4100000000u, g.active[2] = 4200000000u;
    assert_int_equal(pick(ops, st, NULL, &g, 0), 0);

    /* The least loaded one is skipped when unusable; nothing usable gives -1. */
    g.usable[0] = 0;
    assert_int_equal(pick(ops, st, NULL, &g, 0), 1);
    g.usable[1] = g.usable[2] = 0;
    assert_int_equal(pick(ops, st, NULL, &g, 0), -1);
    ops->state_free(st);
}

static void test_wlc_ties_rotate(void **unused)
{
    static const uint32_t w[] = {2, 2, 2, 2};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WLC);
    struct group g;
    group_init(&g, w, 4);
    void *st = ops->state_new(4);
    unsigned counts[4] = {0};

    /* Idle group: equal loads spread round robin instead of piling onto server 0. */
    for (int k = 0; k < 40; k++)
        counts[pick(ops, st, NULL, &g, 0)]++;
    for (int i = 0; i < 4; i++)
        assert_int_equal(counts[i], 10);

    /* Ties among the least loaded only: server 1 is busier and never chosen. */
    g.active[1] = 3;
    memset(counts, 0, sizeof(counts));
    for (int k = 0; k < 30; k++)
        counts[pick(ops, st, NULL, &g, 0)]++;
    assert_int_equal(counts[0], 10);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 10);
    assert_int_equal(counts[3], 10);

    /* No active counts at all behaves like the idle group. */
    struct slb_sched_input in = group_input(&g, 0);
    in.active = NULL;
    int first = ops->pick(st, NULL, &in);
    assert_int_not_equal(ops->pick(st, NULL, &in), first);
    ops->state_free(st);
}

/* Long-lived connections: each pick opens one; the active counts converge to the weights. */
static void test_wlc_follows_weights(void **unused)
{
    static const uint32_t w[] = {3, 1, 4};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WLC);
    struct group g;
    group_init(&g, w, 3);
    void *st = ops->state_new(3);

    for (int k = 0; k < 800; k++) {
        int s = pick(ops, st, NULL, &g, 0);
        assert_in_range(s, 0, 2);
        g.active[s]++;
    }
    assert_int_equal(g.active[0], 300);
    assert_int_equal(g.active[1], 100);
    assert_int_equal(g.active[2], 400);
    ops->state_free(st);
}

/* ---------------------------------------------------------------------------------------------
 * Consistent hashing
 * ------------------------------------------------------------------------------------------- */

#define KEYS 100000

static uint64_t key_of(size_t k)
{
    return slb_hash64(&k, sizeof(k), 42);
}

/* A key -> server identity map for KEYS keys. */
static uint64_t *map_new(void)
{
    uint64_t *map = malloc(KEYS * sizeof(*map));
    assert_non_null(map);
    return map;
}

/* Map KEYS keys; out[k] is the chosen server's identity (0 for none), so rings built from the
 * same servers in another order or with some removed can be compared. */
static void map_keys(enum slb_sched_kind kind, const void *ring, struct group *g, uint64_t *out)
{
    const struct slb_sched_ops *ops = slb_sched_get(kind);
    void *st = ops->state_new(g->n);
    for (size_t k = 0; k < KEYS; k++) {
        int s = pick(ops, st, ring, g, key_of(k));
        out[k] = s < 0 ? 0 : g->ids[s];
    }
    ops->state_free(st);
}

static void *ring_new(struct group *g)
{
    void *ring = slb_sched_get(SLB_SCHED_SCH)->shared_new(g->ids, g->weight, g->n);
    assert_non_null(ring);
    return ring;
}

static void ring_free(void *ring)
{
    slb_sched_get(SLB_SCHED_SCH)->shared_free(ring);
}

static size_t count_id(const uint64_t *map, uint64_t id)
{
    size_t c = 0;
    for (size_t k = 0; k < KEYS; k++)
        c += map[k] == id;
    return c;
}

static void test_chash_balance(void **unused)
{
    uint32_t w[10];
    for (int i = 0; i < 10; i++)
        w[i] = 10;
    struct group g;
    group_init(&g, w, 10);
    void *ring = ring_new(&g);
    uint64_t *map = map_new();

    map_keys(SLB_SCHED_SCH, ring, &g, map);
    for (int i = 0; i < 10; i++) {
        size_t c = count_id(map, g.ids[i]);
        if (c < KEYS / 10 * 7 / 10 || c > KEYS / 10 * 13 / 10)
            fail_msg("server %d has %zu of %d keys", i, c, KEYS);
    }
    ring_free(ring);

    /* Weights 1:2:3:4 (as 10:20:30:40) give proportional shares within 15%. */
    static const uint32_t ww[] = {10, 20, 30, 40};
    group_init(&g, ww, 4);
    ring = ring_new(&g);
    map_keys(SLB_SCHED_SCH, ring, &g, map);
    for (int i = 0; i < 4; i++) {
        double share = (double)count_id(map, g.ids[i]) / KEYS;
        double want = ww[i] / 100.0;
        if (share < want * 0.85 || share > want * 1.15)
            fail_msg("server %d share %.3f, want %.3f", i, share, want);
    }
    ring_free(ring);
    free(map);
}

static void test_chash_add_server(void **unused)
{
    uint32_t w[11];
    for (int i = 0; i < 11; i++)
        w[i] = 10;
    struct group g10, g11;
    group_init(&g10, w, 10);
    group_init(&g11, w, 11);
    void *r10 = ring_new(&g10), *r11 = ring_new(&g11);
    uint64_t *before = map_new(), *after = map_new();

    map_keys(SLB_SCHED_SCH, r10, &g10, before);
    map_keys(SLB_SCHED_SCH, r11, &g11, after);
    size_t moved = 0;
    for (size_t k = 0; k < KEYS; k++) {
        if (before[k] == after[k])
            continue;
        moved++;
        assert_true(after[k] == g11.ids[10]);
    }
    assert_true(moved > 0);
    assert_true(moved <= (size_t)(KEYS * 1.5 / 11));

    ring_free(r10);
    ring_free(r11);
    free(before);
    free(after);
}

static void test_chash_remove_server(void **unused)
{
    uint32_t w[10];
    for (int i = 0; i < 10; i++)
        w[i] = 10;
    struct group full, less;
    group_init(&full, w, 10);
    /* Drop server 3; the others shift down one index, which must not matter. */
    group_init(&less, w, 9);
    for (int i = 0, j = 0; i < 10; i++) {
        if (i != 3)
            less.ids[j++] = full.ids[i];
    }
    void *rf = ring_new(&full), *rl = ring_new(&less);
    uint64_t *before = map_new(), *after = map_new();

    map_keys(SLB_SCHED_SCH, rf, &full, before);
    map_keys(SLB_SCHED_SCH, rl, &less, after);
    size_t moved = 0;
    for (size_t k = 0; k < KEYS; k++) {
        if (before[k] != after[k]) {
            assert_true(before[k] == full.ids[3]);
            moved++;
        }
        assert_true(after[k] != full.ids[3]);
    }
    assert_int_equal(moved, count_id(before, full.ids[3]));

    ring_free(rf);
    ring_free(rl);
    free(before);
    free(after);
}

static void test_chash_unusable_and_back(void **unused)
{
    uint32_t w[10];
    for (int i = 0; i < 10; i++)
        w[i] = 10;
    struct group g;
    group_init(&g, w, 10);
    void *ring = ring_new(&g);
    uint64_t *base = map_new(), *down = map_new();

    map_keys(SLB_SCHED_SCH, ring, &g, base);
    g.usable[4] = 0;
    map_keys(SLB_SCHED_SCH, ring, &g, down);
    size_t moved = 0;
    unsigned spread[10] = {0};
    for (size_t k = 0; k < KEYS; k++) {
        assert_true(down[k] != g.ids[4]);
        if (base[k] != down[k]) {
            assert_true(base[k] == g.ids[4]);
            moved++;
            for (int i = 0; i < 10; i++)
                spread[i] += down[k] == g.ids[i];
        }
    }
    assert_int_equal(moved, count_id(base, g.ids[4]));
    /* The failed server's keys spill over the whole group, not onto one neighbour. */
    for (int i = 0; i < 10; i++) {
        if (i != 4)
            assert_true(spread[i] > 0);
    }

    /* Health comes back: every key returns to where it was. */
    g.usable[4] = 1;
    map_keys(SLB_SCHED_SCH, ring, &g, down);
    assert_memory_equal(base, down, KEYS * sizeof(*base));

    /* Only one usable server takes everything; none usable gives -1. */
    memset(g.usable, 0, sizeof(g.usable));
    g.usable[7] = 1;
    map_keys(SLB_SCHED_SCH, ring, &g, down);
    assert_int_equal(count_id(down, g.ids[7]), KEYS);
    g.usable[7] = 0;
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_SCH);
    void *st = ops->state_new(10);
    assert_int_equal(pick(ops, st, ring, &g, 1), -1);
    ops->state_free(st);

    ring_free(ring);
    free(base);
    free(down);
}

static void test_chash_deterministic(void **unused)
{
    static const uint32_t w[] = {10, 20, 10, 5, 10, 30};
    struct group a, b;
    group_init(&a, w, 6);
    /* Same servers in reverse configuration order. */
    b = a;
    for (size_t i = 0; i < 6; i++) {
        b.ids[i] = a.ids[5 - i];
        b.weight[i] = a.weight[5 - i];
        b.usable[i] = a.usable[5 - i];
    }
    void *ra = ring_new(&a), *ra2 = ring_new(&a), *rb = ring_new(&b);
    uint64_t *ma = map_new(), *mb = map_new();

    map_keys(SLB_SCHED_SCH, ra, &a, ma);
    map_keys(SLB_SCHED_SCH, ra2, &a, mb);
    assert_memory_equal(ma, mb, KEYS * sizeof(*ma));
    map_keys(SLB_SCHED_SCH, rb, &b, mb);
    assert_memory_equal(ma, mb, KEYS * sizeof(*ma));
    /* tch is the same ring with a different key; same key, same answer. */
    map_keys(SLB_SCHED_TCH, ra, &a, mb);
    assert_memory_equal(ma, mb, KEYS * sizeof(*ma));

    ring_free(ra);
    ring_free(ra2);
    ring_free(rb);
    free(ma);
    free(mb);
}

static void test_chash_edge_cases(void **unused)
{
    static const uint32_t w[] = {10, 0, 10};
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_SCH);
    struct group g;
    group_init(&g, w, 3);
    void *st = ops->state_new(3);

    /* Weight 0 owns no nodes, even if marked usable. */
    void *ring = ring_new(&g);
    g.usable[1] = 1;
    for (uint64_t k = 0; k < 2000; k++)
        assert_int_not_equal(pick(ops, st, ring, &g, key_of(k)), 1);
    ring_free(ring);

    /* Empty groups and all-drained groups build a ring that picks nothing. */
    ring = ops->shared_new(NULL, NULL, 0);
    assert_non_null(ring);
    struct group empty = {0};
    assert_int_equal(pick(ops, st, ring, &empty, 5), -1);
    ring_free(ring);
    static const uint32_t zeros[] = {0, 0};
    struct group gz;
    group_init(&gz, zeros, 2);
    ring = ring_new(&gz);
    gz.usable[0] = gz.usable[1] = 1;
    assert_int_equal(pick(ops, st, ring, &gz, 5), -1);
    ring_free(ring);

    /* Without a ring (allocation failed) picks still land on usable servers, stably. */
    g.usable[1] = 0;
    unsigned counts[3] = {0};
    for (uint64_t k = 0; k < 3000; k++) {
        int s = pick(ops, st, NULL, &g, key_of(k));
        assert_true(s == 0 || s == 2);
        assert_int_equal(pick(ops, st, NULL, &g, key_of(k)), s);
        counts[s]++;
    }
    assert_true(counts[0] > 1000 && counts[2] > 1000);
    g.usable[0] = g.usable[2] = 0;
    assert_int_equal(pick(ops, st, NULL, &g, 1), -1);
    ops->state_free(st);
}

/* ---------------------------------------------------------------------------------------------
 * Large groups: the indexed picks (in.gen != 0)
 * ------------------------------------------------------------------------------------------- */

#define BIG 5000

/* A group of BIG servers with weights 1..100 (some 0) and a few unusable, heap-allocated. */
struct big {
    uint32_t weight[BIG];
    uint8_t usable[BIG];
    uint8_t tried[BIG];
    uint32_t active[BIG];
    uint64_t ids[BIG];
};

static struct big *big_new(void)
{
    struct big *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    uint64_t x = 42;
    for (size_t i = 0; i < BIG; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        b->weight[i] = i % 97 == 0 ? 0 : (uint32_t)(x >> 33) % 100 + 1;
        b->usable[i] = b->weight[i] > 0 && i % 13 != 5;
        char name[64];
        int len = snprintf(name, sizeof(name), "10.1.%zu.%zu:80", i / 250, i % 250 + 1);
        b->ids[i] = slb_hash64(name, (size_t)len, 0);
    }
    return b;
}

static struct slb_sched_input big_input(struct big *b, uint64_t gen, uint64_t key)
{
    struct slb_sched_input in = {.n = BIG,
                                 .weight = b->weight,
                                 .usable = b->usable,
                                 .tried = b->tried,
                                 .active = b->active,
                                 .key = key,
                                 .gen = gen};
    return in;
}

/* The indexed smooth WRR makes exactly the picks of the plain one, through health changes
 * (new generations); a pick with servers already tried never returns one of them. */
static void test_wrr_big_same_as_scan(void **unused)
{
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WRR);
    struct big *b = big_new();
    void *fast = ops->state_new(BIG), *plain = ops->state_new(BIG);
    uint64_t gen = 1;
    for (int k = 0; k < 30000; k++) {
        if (k % 5000 == 4999) {
            /* A health change: one server leaves, another comes back. */
            b->usable[(size_t)k % BIG] = 0;
            b->usable[((size_t)k * 7 + 5) % BIG] = b->weight[((size_t)k * 7 + 5) % BIG] > 0;
            gen++;
        }
        struct slb_sched_input fi = big_input(b, gen, 0), pi = big_input(b, 0, 0);
        int f = ops->pick(fast, NULL, &fi), p = ops->pick(plain, NULL, &pi);
        if (f != p)
            fail_msg("pick %d: indexed %d, plain %d", k, f, p);
    }
    /* Retries: the servers tried are skipped, whoever would have been next. */
    for (int k = 0; k < 2000; k++) {
        struct slb_sched_input fi = big_input(b, gen, 0);
        int f = ops->pick(fast, NULL, &fi);
        assert_true(f >= 0 && b->usable[f] && !b->tried[f]);
        if (k % 3 == 0)
            b->tried[f] = 1;
    }
    ops->state_free(fast);
    ops->state_free(plain);
    free(b);
}

/* Over one cycle of sum(weights) picks every usable server is picked exactly weight times. */
static void test_wrr_big_distribution(void **unused)
{
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WRR);
    struct big *b = big_new();
    void *st = ops->state_new(BIG);
    uint64_t total = 0;
    for (size_t i = 0; i < BIG; i++)
        total += b->usable[i] ? b->weight[i] : 0;
    uint32_t *counts = calloc(BIG, sizeof(*counts));
    assert_non_null(counts);
    for (uint64_t k = 0; k < total; k++) {
        struct slb_sched_input in = big_input(b, 1, 0);
        int s = ops->pick(st, NULL, &in);
        assert_in_range(s, 0, BIG - 1);
        counts[s]++;
    }
    for (size_t i = 0; i < BIG; i++)
        assert_int_equal(counts[i], b->usable[i] ? b->weight[i] : 0);
    free(counts);
    ops->state_free(st);
    free(b);
}

/* wlc over 5,000 servers compares two random usable ones: connections that stay open end up
 * spread by weight (a server's load over its weight stays close to the group's), never on an
 * unusable server or one already tried. */
static void test_wlc_big_spreads_by_weight(void **unused)
{
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_WLC);
    struct big *b = big_new();
    for (size_t i = 0; i < BIG; i++)
        b->weight[i] = b->weight[i] ? (i % 2 ? 100 : 50) : 0;
    void *st = ops->state_new(BIG);
    for (int k = 0; k < 200000; k++) {
        struct slb_sched_input in = big_input(b, 1, 0);
        int s = ops->pick(st, NULL, &in);
        assert_in_range(s, 0, BIG - 1);
        assert_true(b->usable[s]);
        b->active[s]++;
    }
    double heavy = 0, light = 0;
    size_t nh = 0, nl = 0;
    uint32_t max_per_100 = 0;
    for (size_t i = 0; i < BIG; i++) {
        if (!b->usable[i])
            continue;
        if (b->weight[i] == 100) {
            heavy += b->active[i];
            nh++;
        } else {
            light += b->active[i];
            nl++;
        }
        uint32_t per = b->active[i] * 100 / b->weight[i];
        max_per_100 = per > max_per_100 ? per : max_per_100;
    }
    double ratio = (heavy / (double)nh) / (light / (double)nl);
    if (ratio < 1.8 || ratio > 2.2)
        fail_msg("weight 100 vs 50 servers: load ratio %.2f", ratio);
    /* Mean load per 100 of weight is about 200000 / 3580 * 100/75 ~ 75: no server far above. */
    assert_true(max_per_100 < 110);

    /* Every usable server but one tried: that one. */
    memset(b->tried, 1, sizeof(b->tried));
    b->tried[123] = 0;
    b->usable[123] = 1;
    b->weight[123] = 7;
    struct slb_sched_input in = big_input(b, 2, 0);
    assert_int_equal(ops->pick(st, NULL, &in), 123);
    b->tried[123] = 1;
    assert_int_equal(ops->pick(st, NULL, &in), -1);
    ops->state_free(st);
    free(b);
}

/* sch/tch with generations pick what they pick without, and move only an unusable server's
 * keys. */
static void test_chash_big_generations(void **unused)
{
    const struct slb_sched_ops *ops = slb_sched_get(SLB_SCHED_TCH);
    struct big *b = big_new();
    void *ring = ops->shared_new(b->ids, b->weight, BIG);
    assert_non_null(ring);
    void *st = ops->state_new(BIG);
    int *before = calloc(20000, sizeof(*before));
    assert_non_null(before);
    for (uint64_t k = 0; k < 20000; k++) {
        struct slb_sched_input fi = big_input(b, 1, k), pi = big_input(b, 0, k);
        before[k] = ops->pick(st, ring, &fi);
        assert_int_equal(before[k], ops->pick(st, ring, &pi));
        assert_true(before[k] >= 0 && b->usable[before[k]]);
    }
    int gone = before[0];
    b->usable[gone] = 0;
    for (uint64_t k = 0; k < 20000; k++) {
        struct slb_sched_input in = big_input(b, 2, k);
        int s = ops->pick(st, ring, &in);
        if (before[k] == gone)
            assert_true(s != gone && s >= 0);
        else
            assert_int_equal(s, before[k]);
    }
    free(before);
    ops->state_free(st);
    ops->shared_free(ring);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hash64),
        cmocka_unit_test(test_wrr_smooth),
        cmocka_unit_test(test_wrr_zero_and_unusable),
        cmocka_unit_test(test_wrr_no_catch_up),
        cmocka_unit_test(test_rr),
        cmocka_unit_test(test_wlc_least_loaded),
        cmocka_unit_test(test_wlc_ties_rotate),
        cmocka_unit_test(test_wlc_follows_weights),
        cmocka_unit_test(test_chash_balance),
        cmocka_unit_test(test_chash_add_server),
        cmocka_unit_test(test_chash_remove_server),
        cmocka_unit_test(test_chash_unusable_and_back),
        cmocka_unit_test(test_chash_deterministic),
        cmocka_unit_test(test_chash_edge_cases),
        cmocka_unit_test(test_wrr_big_same_as_scan),
        cmocka_unit_test(test_wrr_big_distribution),
        cmocka_unit_test(test_wlc_big_spreads_by_weight),
        cmocka_unit_test(test_chash_big_generations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
