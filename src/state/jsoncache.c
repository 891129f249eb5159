/* SPDX-License-Identifier: Apache-2.0 */
/* A document's pretty, sorted text assembled from the remembered text of its pieces, each
 * serialized once while its json_t lives (see jsoncache.h). */
#include "state/jsoncache.h"

#include "core/log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JC_FLAGS (JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENCODE_ANY)
#define JC_INDENT 2
#define JC_MIN_CAP 16

/* AddressSanitizer builds (the tests) check the immutability contract on every reuse. */
#if defined(__SANITIZE_ADDRESS__)
#define JC_VERIFY 1
#else
#define JC_VERIFY 0
#endif

/* The text of one piece, indented for the depth it sits at in the document. */
struct jc_entry {
    json_t *json; /* a reference is held */
    unsigned depth;
    unsigned gen; /* the last dump that used it */
    char *text;
    size_t len;
};

struct slb_json_cache {
    struct jc_entry **slots; /* open addressing, linear probing; NULL is empty */
    size_t cap;              /* a power of two, or 0 */
    size_t count;
    unsigned gen;
    size_t reused, serialized;
};

/* One top-level member of the document, in key order. */
struct jc_member {
    const char *key;
    size_t klen;
    json_t *value;
};

/* Output of an assembly: counts only when p is NULL (the first pass), writes when not. */
struct jc_out {
    char *p;
    size_t n;
};

struct slb_json_cache *slb_json_cache_new(void)
{
    return calloc(1, sizeof(struct slb_json_cache));
}

static void entry_free(struct jc_entry *e)
{
    json_decref(e->json);
    free(e->text);
    free(e);
}

static void cache_clear(struct slb_json_cache *c)
{
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i])
            entry_free(c->slots[i]);
    free(c->slots);
    c->slots = NULL;
    c->cap = c->count = 0;
}

void slb_json_cache_free(struct slb_json_cache *c)
{
    if (!c)
        return;
    cache_clear(c);
    free(c);
}

void slb_json_cache_stats(const struct slb_json_cache *c, struct slb_json_cache_stats *out)
{
    out->pieces = c->count;
    out->reused = c->reused;
    out->serialized = c->serialized;
}

static size_t slot_of(const json_t *j, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)j * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (cap - 1);
}

static struct jc_entry *cache_find(const struct slb_json_cache *c, const json_t *j, unsigned depth)
{
    if (!c->cap)
        return NULL;
    for (size_t i = slot_of(j, c->cap);; i = (i + 1) & (c->cap - 1)) {
        struct jc_entry *e = c->slots[i];
        if (!e)
            return NULL;
        if (e->json == j && e->depth == depth)
            return e;
    }
}

static void slots_put(struct jc_entry **slots, size_t cap, struct jc_entry *e)
{
    size_t i = slot_of(e->json, cap);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = e;
}

/* Move the entries that keep (used by the current dump, or all) into a table of cap slots;
 * the others are freed. */
static int cache_rehash(struct slb_json_cache *c, size_t cap, bool current_only)
{
    struct jc_entry **slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    size_t count = 0;
    for (size_t i = 0; i < c->cap; i++) {
        struct jc_entry *e = c->slots[i];
        if (!e)
            continue;
        if (current_only && e->gen != c->gen) {
            entry_free(e);
            continue;
        }
        slots_put(slots, cap, e);
        count++;
    }
    free(c->slots);
    c->slots = slots;
    c->cap = cap;
    c->count = count;
    return 0;
}

static int cache_add(struct slb_json_cache *c, struct jc_entry *e)
{
    /* At most half full, so probes stay short. */
    if (2 * (c->count + 1) > c->cap) {
        int rc = cache_rehash(c, c->cap ? 2 * c->cap : JC_MIN_CAP, false);
        if (rc < 0)
            return rc;
    }
    slots_put(c->slots, c->cap, e);
    c->count++;
    return 0;
}

/* Forget the pieces the current dump did not use, shrinking the table to fit. */
static void cache_sweep(struct slb_json_cache *c)
{
    size_t live = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i] && c->slots[i]->gen == c->gen)
            live++;
    if (live == c->count)
        return;
    size_t cap = JC_MIN_CAP;
    while (cap < 2 * live)
        cap *= 2;
    /* Without memory for the new table, everything is forgotten (linear probing cannot drop
     * entries in place): the next dump serializes it all. */
    if (cache_rehash(c, cap, true) < 0)
        cache_clear(c);
}

/* A growing text whose every line break is followed by extra spaces: a piece serialized on
 * its own is shifted to the depth it has inside the document. */
struct jc_text {
    char *buf;
    size_t len, cap;
    size_t shift;
};

static int text_reserve(struct jc_text *t, size_t more)
{
    if (t->len + more + 1 <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < t->len + more + 1)
        cap *= 2;
    char *nb = realloc(t->buf, cap);
    if (!nb)
        return -1;
    t->buf = nb;
    t->cap = cap;
    return 0;
}

static int text_append(const char *s, size_t n, void *arg)
{
    struct jc_text *t = arg;
    /* jansson hands over most tokens one by one: single bytes (punctuation and each line
     * break, which is always a call of its own) take the short way. */
    if (n == 1) {
        size_t pad = *s == '\n' ? t->shift : 0;
        if (text_reserve(t, 1 + pad) < 0)
            return -1;
        t->buf[t->len++] = *s;
        for (size_t i = 0; i < pad; i++)
            t->buf[t->len++] = ' ';
        return 0;
    }
    while (n > 0) {
        const char *nl = memchr(s, '\n', n);
        size_t part = nl ? (size_t)(nl - s) + 1 : n;
        size_t pad = nl ? t->shift : 0;
        if (text_reserve(t, part + pad) < 0)
            return -1;
        memcpy(t->buf + t->len, s, part);
        memset(t->buf + t->len + part, ' ', pad);
        t->len += part + pad;
        s += part;
        n -= part;
    }
    return 0;
}

/* j serialized as it reads at depth in the document; malloc'd text or NULL. */
static char *serialize(const json_t *j, unsigned depth, size_t *len)
{
    struct jc_text t = {.shift = (size_t)depth * JC_INDENT};
    if (json_dump_callback(j, text_append, &t, JC_FLAGS) < 0 || text_reserve(&t, 0) < 0) {
        free(t.buf);
        return NULL;
    }
    t.buf[t.len] = '\0';
    *len = t.len;
    /* Kept while the piece lives: without the growth's slack. */
    char *fit = realloc(t.buf, t.len + 1);
    return fit ? fit : t.buf;
}

/* The entry of piece j at depth, serialized when it is not remembered. During the writing
 * pass every piece was remembered by the counting pass. */
static struct jc_entry *piece(struct slb_json_cache *c, json_t *j, unsigned depth, bool counting)
{
    struct jc_entry *e = cache_find(c, j, depth);
    if (e && counting) {
        e->gen = c->gen;
        c->reused++;
        if (JC_VERIFY) {
            size_t len = 0;
            char *fresh = serialize(j, depth, &len);
            if (fresh && (len != e->len || memcmp(fresh, e->text, len) != 0)) {
                slb_error("configuration text: a part of the document was changed in place "
                          "after it was written (the applied document must be immutable); "
                          "writing its new text");
                free(e->text);
                e->text = fresh;
                e->len = len;
                fresh = NULL;
            }
            free(fresh);
        }
    }
    if (e || !counting)
        return e;
    e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    if (!(e->text = serialize(j, depth, &e->len))) {
        free(e);
        return NULL;
    }
    e->json = json_incref(j);
    e->depth = depth;
    e->gen = c->gen;
    if (cache_add(c, e) < 0) {
        entry_free(e);
        return NULL;
    }
    c->serialized++;
    return e;
}

static void put(struct jc_out *o, const char *s, size_t n)
{
    if (o->p)
        memcpy(o->p + o->n, s, n);
    o->n += n;
}

#define PUT_LIT(o, s) put((o), (s), sizeof(s) - 1)

static int put_piece(struct slb_json_cache *c, struct jc_out *o, json_t *j, unsigned depth)
{
    struct jc_entry *e = piece(c, j, depth, o->p == NULL);
    if (!e)
        return -ENOMEM;
    put(o, e->text, e->len);
    return 0;
}

/* The layout of json_dumps with JSON_INDENT(2) | JSON_SORT_KEYS for an object of n > 0
 * members, each value a piece at depth 1 or, for a non-empty array, elements at depth 2. */
static int assemble(struct slb_json_cache *c, const struct jc_member *m, size_t n, struct jc_out *o)
{
    PUT_LIT(o, "{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            PUT_LIT(o, ",");
        PUT_LIT(o, "\n  \"");
        put(o, m[i].key, m[i].klen);
        PUT_LIT(o, "\": ");
        json_t *v = m[i].value;
        size_t len = json_is_array(v) ? json_array_size(v) : 0;
        if (!len) {
            int rc = put_piece(c, o, v, 1);
            if (rc < 0)
                return rc;
            continue;
        }
        PUT_LIT(o, "[");
        for (size_t k = 0; k < len; k++) {
            if (k)
                PUT_LIT(o, ",");
            PUT_LIT(o, "\n    ");
            int rc = put_piece(c, o, json_array_get(v, k), 2);
            if (rc < 0)
                return rc;
        }
        PUT_LIT(o, "\n  ]");
    }
    PUT_LIT(o, "\n}\n");
    return 0;
}

/* jansson's key order for JSON_SORT_KEYS: bytes, then length. */
static int member_cmp(const void *a, const void *b)
{
    const struct jc_member *x = a, *y = b;
    int r = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);
    if (r)
        return r;
    return x->klen < y->klen ? -1 : x->klen > y->klen;
}

/* A key written as it is, without JSON escapes (every key of slbd's documents). */
static bool key_plain(const char *k, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (ch < 0x20 || ch == '"' || ch == '\\')
            return false;
    }
    return true;
}

/* The plain way, for what the assembly does not handle (not an object, escaped keys). */
static int dump_whole(const json_t *doc, char **out, size_t *len)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return -EINVAL;
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return -ENOMEM;
    }
    buf[n++] = '\n';
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int slb_json_cache_dump(struct slb_json_cache *c, const json_t *doc, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    c->gen++;
    c->reused = c->serialized = 0;
    size_t n = json_is_object(doc) ? json_object_size(doc) : 0;
    struct jc_member *m = n ? calloc(n, sizeof(*m)) : NULL;
    if (n && !m)
        return -ENOMEM;
    size_t i = 0;
    bool plain = n > 0;
    for (void *it = json_object_iter((json_t *)doc); it;
         it = json_object_iter_next((json_t *)doc, it)) {
        m[i].key = json_object_iter_key(it);
        m[i].klen = json_object_iter_key_len(it);
        m[i].value = json_object_iter_value(it);
        plain = plain && key_plain(m[i].key, m[i].klen);
        i++;
    }
    int rc;
    if (!plain) {
        free(m);
        cache_clear(c);
        return dump_whole(doc, out, len);
    }
    qsort(m, n, sizeof(*m), member_cmp);
    struct jc_out count = {0};
    if ((rc = assemble(c, m, n, &count)) < 0)
        goto fail;
    struct jc_out o = {.p = malloc(count.n + 1)};
    if (!o.p) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = assemble(c, m, n, &o);
    if (rc < 0 || o.n != count.n) {
        free(o.p);
        rc = rc < 0 ? rc : -EINVAL;
        goto fail;
    }
    o.p[o.n] = '\0';
    free(m);
    cache_sweep(c);
    *out = o.p;
    *len = o.n;
    return 0;
fail:
    free(m);
    cache_clear(c);
    return rc;
}
