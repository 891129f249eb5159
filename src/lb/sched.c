/* SPDX-License-Identifier: Apache-2.0 */
/* Backend schedulers (smooth WRR, RR, WLC, consistent hash) and the stable 64-bit hash they use. */
#include "lb/sched.h"

#include <stdlib.h>
#include <string.h>

/*
 * Conventions shared by every scheduler below:
 *
 * - A server is a candidate when usable[i] != 0 and weight[i] > 0. The caller already folds the
 *   weight into `usable`, but weight 0 means "drain" in the product contract, so we check it
 *   again rather than trust every caller to get it right. A NULL `usable` means all usable and a
 *   NULL `weight` means weight 1 for everyone (handy for tests and simple callers).
 * - Per-worker state is created for the group's server count n. A new configuration snapshot
 *   brings new state, so a pick never sees a different n in practice; if it does, servers beyond
 *   the state's size are ignored by WRR (which keeps an array) and positions wrap for RR/WLC.
 * - Picks never allocate, lock or touch anything but the worker's own state.
 */

/* ---------------------------------------------------------------------------------------------
 * Hashing
 * ------------------------------------------------------------------------------------------- */

/* Odd multipliers with well-spread bits. The first is 2^64 divided by the golden ratio, which
 * makes `x + j * HASH_GOLDEN` walk the 64-bit space without short cycles. */
#define HASH_GOLDEN 0x9e3779b97f4a7c15ULL
#define HASH_K1 0xc2b2ae3d27d4eb4fULL
#define HASH_K2 0xa0761d6478bd642fULL
#define HASH_K3 0xe7037ed1a0b428dbULL
#define HASH_K4 0x8ebc6af09c88c6e3ULL
/* Salt for pick keys, so a key that happens to equal a server identity does not land exactly on
 * that server's first virtual node. */
#define HASH_KEY_SALT 0x5851f42d4c957f2dULL

static inline uint64_t hash_rotl(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* The splitmix64 finaliser: every input bit affects every output bit with probability ~1/2. */
static inline uint64_t hash_fmix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Byte-wise little-endian load so the hash is the same on every architecture; compilers turn
 * this into one load on little-endian machines. */
static inline uint64_t hash_load(const unsigned char *p, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Absorb one 8-byte block. The block is diffused on its own first so that blocks differing only
 * in high bits still disturb the low bits of the state; the rotate-multiply on the state makes
 * the result depend on block order. */
static inline uint64_t hash_absorb(uint64_t h, uint64_t k)
{
    k *= HASH_K2;
    k ^= k >> 29;
    k *= HASH_K3;
    h ^= k;
    return hash_rotl(h, 27) * HASH_K1 + HASH_K4;
}

uint64_t slb_hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    /* The length goes into the initial state so that inputs differing only by trailing zero
     * bytes ("a" and "a\0") hash differently even though the tail is zero-padded. */
    uint64_t h = seed ^ (HASH_GOLDEN + (uint64_t)len * HASH_K1);

    while (len >= 8) {
        h = hash_absorb(h, hash_load(p, 8));
        p += 8;
        len -= 8;
    }
    if (len > 0)
        h = hash_absorb(h, hash_load(p, len));
    return hash_fmix(h ^ (h >> 32));
}

/* ---------------------------------------------------------------------------------------------
 * Helpers and per-worker state
 * ------------------------------------------------------------------------------------------- */

static inline uint32_t sched_weight(const struct slb_sched_input *in, size_t i)
{
    return in->weight ? in->weight[i] : 1;
}

/* A candidate for this pick: usable, not tried, weight > 0. */
static inline int sched_usable(const struct slb_sched_input *in, size_t i)
{
    return (!in->usable || in->usable[i]) && !(in->tried && in->tried[i]) &&
           sched_weight(in, i) > 0;
}

/* A candidate as far as the indexes built per usable[] generation go (tried aside). */
static inline int sched_indexable(const struct slb_sched_input *in, size_t i)
{
    return (!in->usable || in->usable[i]) && sched_weight(in, i) > 0;
}

static inline uint64_t sched_active(const struct slb_sched_input *in, size_t i)
{
    if (in->active_of)
        return in->active_of(in->arg, i);
    return in->active ? in->active[i] : 0;
}

/* xorshift64: per-worker randomness for sampling, never shared. */
static inline uint64_t sched_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Owned by one worker for the lifetime of a configuration snapshot. `pos` is the next rotation
 * start for RR and WLC; `cur` holds the smooth-WRR current weights (empty for other kinds). */
struct sched_state {
    size_t n;
    size_t pos;
    int64_t cur[];
};

static struct sched_state *sched_state_alloc(size_t n, size_t ncur)
{
    if (ncur > (SIZE_MAX - sizeof(struct sched_state)) / sizeof(int64_t))
        return NULL;
    struct sched_state *st = calloc(1, sizeof(*st) + ncur * sizeof(int64_t));
    if (st)
        st->n = n;
    return st;
}

/* Every scheduler returns real state, even one that needs none, so a NULL from state_new always
 * means "out of memory" to the caller. */
static void *sched_state_new(size_t n)
{
    return sched_state_alloc(n, 0);
}

static void sched_state_free(void *state)
{
    free(state);
}

static void *sched_no_shared_new(const uint64_t *ids, const uint32_t *weights, size_t n)
{
    return NULL;
}

static void sched_no_shared_free(void *shared) {}

/* ---------------------------------------------------------------------------------------------
 * Smooth weighted round robin
 * ------------------------------------------------------------------------------------------- */

/*
 * Each pick raises every candidate's current weight by its configured weight, takes the largest
 * (lowest index on ties) and lowers the winner by the sum of the candidates' weights. The sum of
 * current weights stays zero, every server is chosen exactly weight times per cycle of
 * sum(weights) picks, and heavy servers are interleaved with light ones instead of being picked
 * in a burst (weights 5,1,1 give a a b a c a a).
 *
 * Servers that are not candidates are skipped entirely: their current weight neither grows nor
 * shrinks, so a server that was unhealthy for a while does not come back owed a burst of picks.
 */
/*
 * The same sequence in O(distinct weights + log n) per pick while the candidates stay the same
 * (the caller's usable[] generation, in->gen, does not move). With a fixed candidate set of
 * total weight W, after t picks a candidate's current weight is w * t - key, where key starts
 * at minus its current weight and grows by W each time it wins. Among candidates of one
 * weight the largest current weight is the smallest key (lowest index on ties): one min-heap
 * per distinct weight (at most 101 with weights 0..100) keeps it at the top, and a pick
 * compares the tops of the heaps. Only the winner's key changes, so a pick is one sift-down.
 * When the candidates change, the current weights are written back to cur[] and the heaps are
 * built again (O(n log n), once per health change, not per pick). A retry whose winner the
 * connection already tried is made the plain way on cur[] (O(n); retries are rare); tried
 * servers that would not have won anyway are not looked at, so they keep the credit the plain
 * algorithm would have withheld for that one pick.
 */
struct wrr_class {
    int64_t weight;
    int64_t top_key;   /* key[heap[off]], kept here so a pick reads one array */
    uint32_t off, len; /* its heap is heap[off, off + len) */
};

/* Owned by one worker for the lifetime of a configuration snapshot; one allocation. */
struct wrr_state {
    size_t n;
    uint64_t gen; /* generation the heaps were built for; 0: none, cur[] is current */
    int64_t t;    /* picks since the heaps were built */
    int64_t total;
    size_t nclass;
    struct wrr_class *cls;
    uint32_t *heap;
    int64_t *key;
    uint8_t *indexed; /* 1 for servers in the heaps */
    int64_t cur[];
};

static void *wrr_state_new(size_t n)
{
    size_t per = 2 * sizeof(int64_t) + sizeof(struct wrr_class) + sizeof(uint32_t) + 1;
    if (n > (SIZE_MAX - sizeof(struct wrr_state)) / per)
        return NULL;
    struct wrr_state *st = calloc(1, sizeof(*st) + n * per);
    if (!st)
        return NULL;
    st->n = n;
    st->key = st->cur + n;
    st->cls = (struct wrr_class *)(st->key + n);
    st->heap = (uint32_t *)(st->cls + n);
    st->indexed = (uint8_t *)(st->heap + n);
    return st;
}

static void wrr_state_free(void *state)
{
    free(state);
}

static inline bool wrr_less(const struct wrr_state *st, uint32_t a, uint32_t b)
{
    return st->key[a] < st->key[b] || (st->key[a] == st->key[b] && a < b);
}

static void wrr_sift_down(struct wrr_state *st, uint32_t *h, size_t len, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < len && wrr_less(st, h[l], h[m]))
            m = l;
        if (l + 1 < len && wrr_less(st, h[l + 1], h[m]))
            m = l + 1;
        if (m == i)
            return;
        uint32_t tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

/* Write the heaps' current weights back to cur[] and drop them. */
static void wrr_flatten(struct wrr_state *st, const struct slb_sched_input *in)
{
    if (st->gen == 0)
        return;
    for (size_t i = 0; i < st->n; i++) {
        if (st->indexed[i])
            st->cur[i] = (int64_t)sched_weight(in, i) * st->t - st->key[i];
        st->indexed[i] = 0;
    }
    st->gen = 0;
    st->nclass = 0;
}

/* Sort the candidates by weight (then index) with weights as the key: qsort cannot take a
 * context, so the heap array is sorted through a small array of pairs. */
struct wrr_pair {
    uint32_t weight, idx;
};

static int wrr_pair_cmp(const void *a, const void *b)
{
    const struct wrr_pair *x = a, *y = b;
    if (x->weight != y->weight)
        return x->weight < y->weight ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Build the heaps for in's candidates; false when out of memory (cur[] stays current). */
static bool wrr_build(struct wrr_state *st, const struct slb_sched_input *in)
{
    wrr_flatten(st, in);
    size_t lim = in->n < st->n ? in->n : st->n, m = 0;
    for (size_t i = 0; i < lim; i++)
        m += sched_indexable(in, i) != 0;
    struct wrr_pair *pairs = malloc((m ? m : 1) * sizeof(*pairs));
    if (!pairs)
        return false;
    m = 0;
    st->total = 0;
    for (size_t i = 0; i < lim; i++) {
        if (!sched_indexable(in, i))
            continue;
        pairs[m++] = (struct wrr_pair){sched_weight(in, i), (uint32_t)i};
        st->key[i] = -st->cur[i];
        st->indexed[i] = 1;
        st->total += sched_weight(in, i);
    }
    qsort(pairs, m, sizeof(*pairs), wrr_pair_cmp);
    st->nclass = 0;
    for (size_t k = 0; k < m; k++) {
        st->heap[k] = pairs[k].idx;
        if (k == 0 || pairs[k].weight != pairs[k - 1].weight)
            st->cls[st->nclass++] = (struct wrr_class){pairs[k].weight, 0, (uint32_t)k, 0};
        st->cls[st->nclass - 1].len++;
    }
    free(pairs);
    for (size_t c = 0; c < st->nclass; c++) {
        struct wrr_class *cl = &st->cls[c];
        for (size_t i = cl->len / 2; i-- > 0;)
            wrr_sift_down(st, st->heap + cl->off, cl->len, i);
        cl->top_key = st->key[st->heap[cl->off]];
    }
    st->t = 0;
    st->gen = in->gen;
    return true;
}

/* The plain algorithm on cur[]: O(n). */
static int wrr_pick_scan(struct wrr_state *st, const struct slb_sched_input *in)
{
    size_t lim = in->n < st->n ? in->n : st->n;
    int64_t total = 0;
    size_t best = SIZE_MAX;

    for (size_t i = 0; i < lim; i++) {
        if (!sched_usable(in, i))
            continue;
        int64_t w = sched_weight(in, i);
        st->cur[i] += w;
        total += w;
        if (best == SIZE_MAX || st->cur[i] > st->cur[best])
            best = i;
    }
    if (best == SIZE_MAX)
        return -1;
    st->cur[best] -= total;
    return (int)best;
}

static int wrr_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    struct wrr_state *st = state;
    if (in->gen == 0 || (st->gen != in->gen && !wrr_build(st, in))) {
        wrr_flatten(st, in);
        return wrr_pick_scan(st, in);
    }
    size_t best = SIZE_MAX, bc = 0;
    int64_t bestv = 0;
    for (size_t c = 0; c < st->nclass; c++) {
        int64_t v = st->cls[c].weight * (st->t + 1) - st->cls[c].top_key;
        if (best == SIZE_MAX || v > bestv ||
            (v == bestv && st->heap[st->cls[c].off] < st->heap[st->cls[bc].off])) {
            best = st->heap[st->cls[c].off];
            bestv = v;
            bc = c;
        }
    }
    if (best == SIZE_MAX)
        return -1;
    if (in->tried && in->tried[best]) {
        wrr_flatten(st, in);
        return wrr_pick_scan(st, in);
    }
    struct wrr_class *cl = &st->cls[bc];
    st->key[best] += st->total;
    wrr_sift_down(st, st->heap + cl->off, cl->len, 0);
    cl->top_key = st->key[st->heap[cl->off]];
    st->t++;
    return (int)best;
}

/* ---------------------------------------------------------------------------------------------
 * Round robin
 * ------------------------------------------------------------------------------------------- */

static int rr_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    struct sched_state *st = state;
    size_t n = in->n;

    if (n == 0)
        return -1;
    size_t i = st->pos % n;
    for (size_t k = 0; k < n; k++) {
        if (sched_usable(in, i)) {
            st->pos = i + 1;
            return (int)i;
        }
        if (++i == n)
            i = 0;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Weighted least connections
 * ------------------------------------------------------------------------------------------- */

/*
 * Minimise active/weight. Comparing a_i * w_j < a_j * w_i avoids division and rounding; both
 * sides fit in 64 bits because each factor is at most 32 bits. The scan starts at a rotating
 * position and only a strictly better server replaces the current best, so among equally loaded
 * servers the first one after the previous winner is chosen: ties (such as an idle group) are
 * spread round-robin instead of all landing on server 0.
 */
/* Owned by one worker: the rotation start for the exact scan, and for large groups the
 * usable servers of generation gen, sampled with the worker's own random state. */
struct wlc_state {
    size_t n;
    size_t pos;
    uint64_t gen;
    uint64_t rng;
    size_t ncand;
    uint32_t cand[];
};

static void *wlc_state_new(size_t n)
{
    if (n > (SIZE_MAX - sizeof(struct wlc_state)) / sizeof(uint32_t))
        return NULL;
    struct wlc_state *st = calloc(1, sizeof(*st) + n * sizeof(uint32_t));
    if (!st)
        return NULL;
    st->n = n;
    /* Any non-zero seed; workers' states sit at different addresses. */
    st->rng = slb_hash64(&st, sizeof(st), n) | 1;
    return st;
}

static int wlc_pick_scan(struct wlc_state *st, const struct slb_sched_input *in)
{
    size_t n = in->n;
    size_t best = SIZE_MAX;
    uint64_t best_a = 0, best_w = 0;

    if (n == 0)
        return -1;
    size_t i = st->pos % n;
    for (size_t k = 0; k < n; k++) {
        if (sched_usable(in, i)) {
            uint64_t a = sched_active(in, i);
            uint64_t w = sched_weight(in, i);
            if (best == SIZE_MAX || a * best_w < best_a * w) {
                best = i;
                best_a = a;
                best_w = w;
            }
        }
        if (++i == n)
            i = 0;
    }
    if (best == SIZE_MAX)
        return -1;
    st->pos = best + 1;
    return (int)best;
}

/* Tries at drawing a server the connection has not tried before scanning instead. */
#define WLC_DRAWS 8

static int wlc_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    struct wlc_state *st = state;
    if (in->gen == 0 || in->n <= SLB_SCHED_SCAN_MAX || in->n > st->n)
        return wlc_pick_scan(st, in);
    if (st->gen != in->gen) {
        st->ncand = 0;
        for (size_t i = 0; i < in->n; i++)
            if (sched_indexable(in, i))
                st->cand[st->ncand++] = (uint32_t)i;
        st->gen = in->gen;
    }
    if (st->ncand == 0)
        return -1;
    /* Two random usable servers, the less loaded for its weight wins (the first on a tie):
     * close to least connections at O(1), and never the herd that an exact minimum sends to
     * one idle server from every worker at once. */
    size_t a = SIZE_MAX, b = SIZE_MAX;
    for (int k = 0; k < WLC_DRAWS && b == SIZE_MAX; k++) {
        size_t i = st->cand[sched_rand(&st->rng) % st->ncand];
        if (in->tried && in->tried[i])
            continue;
        if (a == SIZE_MAX)
            a = i;
        else if (i != a)
            b = i;
    }
    if (a == SIZE_MAX)
        return wlc_pick_scan(st, in);
    if (b == SIZE_MAX)
        return (int)a;
    uint64_t la = sched_active(in, a), lb = sched_active(in, b);
    return lb * sched_weight(in, a) < la * sched_weight(in, b) ? (int)b : (int)a;
}

/* ---------------------------------------------------------------------------------------------
 * Consistent hash ring (sch and tch)
 * ------------------------------------------------------------------------------------------- */

/*
 * Ring scheme:
 * - Server i with weight w > 0 owns CHASH_VNODES_PER_WEIGHT * w virtual nodes; weight 0 owns
 *   none. The count is absolute (not normalised by the group's largest weight or by a gcd), so
 *   adding, removing or re-weighting one server never changes another server's nodes, and only
 *   keys that belong to the changed server move.
 * - Virtual node j of a server with identity id sits at fmix(id + (j + 1) * golden), i.e. the
 *   j-th output of a splitmix64 stream seeded with the id. Positions depend only on the id, never
 *   on the server's index in the configuration, so reordering servers changes nothing, and the
 *   first k nodes of a server are the same whatever its weight (a weight change adds or removes
 *   nodes at the end of its stream only).
 * - Equal positions (astronomically rare) are ordered by id and then node number, again so that
 *   configuration order cannot matter.
 * - A group whose nodes would exceed CHASH_RING_MAX scales every server's count down by the same
 *   factor (at least one node each); such groups lose the minimal-movement guarantee when a
 *   change moves them across the cap. With 40 nodes per weight unit that takes a total weight
 *   above 13107, e.g. more than 131 servers of weight 100.
 *
 * A pick mixes the key, binary-searches the first node at or after it and walks clockwise to the
 * first node whose server is a candidate. Keys of an unhealthy (or already tried) server thus
 * spill onto the servers that follow its nodes, spread over the whole group, and return to it
 * as soon as it is usable again, while every other key stays put.
 *
 * Balance: a server's share has a relative standard deviation of about 1/sqrt(nodes), i.e. ~16%
 * for weight 1 (40 nodes), ~5% for weight 10 and ~1.6% for weight 100.
 */
#define CHASH_VNODES_PER_WEIGHT 40u
#define CHASH_RING_MAX ((size_t)1 << 19)

/* Immutable after chash_shared_new; shared by all workers through the configuration snapshot,
 * freed with it. One allocation: the struct, then points, owners and the per-server flags. */
struct chash_ring {
    size_t nservers;
    size_t len;
    uint64_t *points;    /* sorted ascending */
    uint32_t *owner;     /* server index of points[k] */
    uint8_t *has_vnodes; /* per server: 1 when it owns at least one node */
};

struct chash_vnode {
    uint64_t point;
    uint64_t id;
    uint32_t seq;
    uint32_t server;
};

static inline uint64_t chash_vnode_point(uint64_t id, uint32_t seq)
{
    return hash_fmix(id + ((uint64_t)seq + 1) * HASH_GOLDEN);
}

static inline uint64_t chash_key_point(uint64_t key)
{
    return hash_fmix(key ^ HASH_KEY_SALT);
}

static int chash_vnode_cmp(const void *a, const void *b)
{
    const struct chash_vnode *x = a, *y = b;

    if (x->point != y->point)
        return x->point < y->point ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (x->seq != y->seq)
        return x->seq < y->seq ? -1 : 1;
    /* Only duplicate identities get here; keep the result deterministic anyway. */
    return x->server < y->server ? -1 : x->server > y->server;
}

/* Node count for a server of weight w, given the group's total weight. */
static size_t chash_vnode_count(uint64_t w, uint64_t total)
{
    if (w == 0)
        return 0;
    if (total <= CHASH_RING_MAX / CHASH_VNODES_PER_WEIGHT)
        return (size_t)w * CHASH_VNODES_PER_WEIGHT;
    /* w <= 2^32 and CHASH_RING_MAX = 2^19, so the product fits in 64 bits. */
    uint64_t c = w * CHASH_RING_MAX / total;
    return c ? (size_t)c : 1;
}

static void *chash_shared_new(const uint64_t *ids, const uint32_t *weights, size_t n)
{
    struct chash_vnode *tmp = NULL;
    struct chash_ring *r = NULL;
    uint64_t total = 0;
    size_t len = 0;

    /* Indices travel as uint32_t on the ring and as int out of pick. */
    if (n > (size_t)INT32_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++)
        total += weights[i];
    for (size_t i = 0; i < n; i++)
        len += chash_vnode_count(weights[i], total);

    /* len <= CHASH_RING_MAX + n, so none of these sizes can overflow. */
    size_t size = sizeof(*r) + len * sizeof(uint64_t) + len * sizeof(uint32_t) + n;
    r = calloc(1, size);
    if (!r)
        goto fail;
    r->nservers = n;
    r->len = len;
    r->points = (uint64_t *)(r + 1);
    r->owner = (uint32_t *)(r->points + len);
    r->has_vnodes = (uint8_t *)(r->owner + len);
    if (len == 0)
        return r;

    tmp = malloc(len * sizeof(*tmp));
    if (!tmp)
        goto fail;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t c = chash_vnode_count(weights[i], total);
        for (size_t j = 0; j < c; j++) {
            tmp[k].point = chash_vnode_point(ids[i], (uint32_t)j);
            tmp[k].id = ids[i];
            tmp[k].seq = (uint32_t)j;
            tmp[k].server = (uint32_t)i;
            k++;
        }
        r->has_vnodes[i] = c > 0;
    }
    qsort(tmp, len, sizeof(*tmp), chash_vnode_cmp);
    for (k = 0; k < len; k++) {
        r->points[k] = tmp[k].point;
        r->owner[k] = tmp[k].server;
    }
    free(tmp);
    return r;

fail:
    free(tmp);
    free(r);
    return NULL;
}

static void chash_shared_free(void *shared)
{
    free(shared);
}

/* First index whose point is >= h, or len when h is past the last point. */
static size_t chash_lower_bound(const uint64_t *points, size_t len, uint64_t h)
{
    size_t lo = 0, hi = len;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (points[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Without a ring (its allocation failed) fall back to rendezvous hashing: still a stable mapping
 * that moves only a failed server's keys, just O(n) per pick and blind to weights. Keeps the
 * daemon serving instead of refusing every connection of the group. */
static int chash_pick_without_ring(const struct slb_sched_input *in, uint64_t h)
{
    size_t best = SIZE_MAX;
    uint64_t best_score = 0;

    for (size_t i = 0; i < in->n; i++) {
        if (!sched_usable(in, i))
            continue;
        uint64_t score = hash_fmix(h ^ (((uint64_t)i + 1) * HASH_GOLDEN));
        if (best == SIZE_MAX || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return best == SIZE_MAX ? -1 : (int)best;
}

/* Owned by one worker: whether generation gen has a usable server with nodes. */
struct chash_state {
    size_t n;
    uint64_t gen;
    bool any;
};

static void *chash_state_new(size_t n)
{
    struct chash_state *st = calloc(1, sizeof(*st));
    if (st)
        st->n = n;
    return st;
}

static int chash_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    const struct chash_ring *r = shared;
    struct chash_state *st = state;
    uint64_t h = chash_key_point(in->key);

    if (!r)
        return chash_pick_without_ring(in, h);

    /* Bail out early when no server with nodes is a candidate: otherwise the walk below would
     * visit the whole ring before giving up. The scan runs once per usable[] generation (with
     * servers already tried, the walk may still go round once: a retry's price). */
    size_t lim = in->n < r->nservers ? in->n : r->nservers;
    if (in->gen == 0 || st->gen != in->gen) {
        size_t i;
        for (i = 0; i < lim; i++) {
            if (r->has_vnodes[i] && (in->gen ? sched_indexable(in, i) : sched_usable(in, i)))
                break;
        }
        st->any = i < lim;
        st->gen = in->gen;
    }
    if (!st->any)
        return -1;

    size_t pos = chash_lower_bound(r->points, r->len, h);
    for (size_t step = 0; step < r->len; step++) {
        if (pos == r->len)
            pos = 0;
        uint32_t s = r->owner[pos];
        if (s < lim && sched_usable(in, s))
            return (int)s;
        pos++;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Registry
 * ------------------------------------------------------------------------------------------- */

static const struct slb_sched_ops sched_ops[] = {
    [SLB_SCHED_WRR] = {"wrr", sched_no_shared_new, sched_no_shared_free, wrr_state_new,
                       wrr_state_free, wrr_pick},
    [SLB_SCHED_RR] = {"rr", sched_no_shared_new, sched_no_shared_free, sched_state_new,
                      sched_state_free, rr_pick},
    [SLB_SCHED_WLC] = {"wlc", sched_no_shared_new, sched_no_shared_free, wlc_state_new,
                       sched_state_free, wlc_pick},
    /* sch and tch share the ring; they differ only in the key the caller hashes. */
    [SLB_SCHED_SCH] = {"sch", chash_shared_new, chash_shared_free, chash_state_new,
                       sched_state_free, chash_pick},
    [SLB_SCHED_TCH] = {"tch", chash_shared_new, chash_shared_free, chash_state_new,
                       sched_state_free, chash_pick},
};

#define SCHED_KINDS (sizeof(sched_ops) / sizeof(sched_ops[0]))

/* Returns NULL for a value outside enum slb_sched_kind. */
const struct slb_sched_ops *slb_sched_get(enum slb_sched_kind kind)
{
    if ((unsigned)kind >= SCHED_KINDS)
        return NULL;
    return &sched_ops[kind];
}

int slb_sched_parse(const char *name)
{
    if (!name)
        return -1;
    for (size_t k = 0; k < SCHED_KINDS; k++) {
        if (strcmp(name, sched_ops[k].name) == 0)
            return (int)k;
    }
    return -1;
}

/* Returns NULL for a value outside enum slb_sched_kind. */
const char *slb_sched_name(enum slb_sched_kind kind)
{
    const struct slb_sched_ops *ops = slb_sched_get(kind);
    return ops ? ops->name : NULL;
}
