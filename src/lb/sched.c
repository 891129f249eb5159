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

static inline int sched_usable(const struct slb_sched_input *in, size_t i)
{
    return (!in->usable || in->usable[i]) && sched_weight(in, i) > 0;
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
static void *wrr_state_new(size_t n)
{
    return sched_state_alloc(n, n);
}

static int wrr_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    struct sched_state *st = state;
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
static int wlc_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    struct sched_state *st = state;
    size_t n = in->n;
    size_t best = SIZE_MAX;
    uint64_t best_a = 0, best_w = 0;

    if (n == 0)
        return -1;
    size_t i = st->pos % n;
    for (size_t k = 0; k < n; k++) {
        if (sched_usable(in, i)) {
            uint64_t a = in->active ? in->active[i] : 0;
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

static int chash_pick(void *state, const void *shared, const struct slb_sched_input *in)
{
    const struct chash_ring *r = shared;
    uint64_t h = chash_key_point(in->key);

    if (!r)
        return chash_pick_without_ring(in, h);

    /* Bail out early when no server with nodes is a candidate: otherwise the walk below would
     * visit the whole ring before giving up. */
    size_t lim = in->n < r->nservers ? in->n : r->nservers;
    size_t i;
    for (i = 0; i < lim; i++) {
        if (r->has_vnodes[i] && sched_usable(in, i))
            break;
    }
    if (i == lim)
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
                       sched_state_free, wrr_pick},
    [SLB_SCHED_RR] = {"rr", sched_no_shared_new, sched_no_shared_free, sched_state_new,
                      sched_state_free, rr_pick},
    [SLB_SCHED_WLC] = {"wlc", sched_no_shared_new, sched_no_shared_free, sched_state_new,
                       sched_state_free, wlc_pick},
    /* sch and tch share the ring; they differ only in the key the caller hashes. */
    [SLB_SCHED_SCH] = {"sch", chash_shared_new, chash_shared_free, sched_state_new,
                       sched_state_free, chash_pick},
    [SLB_SCHED_TCH] = {"tch", chash_shared_new, chash_shared_free, sched_state_new,
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
