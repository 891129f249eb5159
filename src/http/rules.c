/* SPDX-License-Identifier: Apache-2.0 */
/* Forwarding rules: compilation at snapshot build and first-match lookup per request (see
 * rules.h). Every rule is filed in exactly one index, by its most selective condition: exact
 * host, else exact path, else path prefix, else wildcard host, else the list of rules that
 * every request visits. Each index entry is a list of rule numbers in configuration order. A
 * lookup scans the lists the request selects, each only below the best rule found so far, and
 * checks every condition of a candidate, so the index only ever narrows the search. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "http/rules.h"

#include "http/normalize.h"

#include <ctype.h>
#include <netinet/in.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds on one regex match, so a pattern that backtracks badly costs a bounded amount of
 * work on a hostile path or header instead of a worker. */
#define RE_MATCH_LIMIT 100000
#define RE_DEPTH_LIMIT 1000

/* A hash table of keys (hosts, paths, host suffixes) to rule lists; open addressing. */
struct rtab_ent {
    const char *key; /* NULL: empty slot */
    size_t len;
    uint32_t off, n; /* rule numbers in slb_rules.ids */
};
struct rtab {
    struct rtab_ent *e;
    size_t mask, nkeys;
    bool icase;
};

/* A byte trie node for path prefixes: children in a sibling list (paths use few distinct
 * bytes at each position, so the lists are short). Node 0 is the root (the empty prefix). */
struct tnode {
    uint8_t byte;
    int32_t child, next;
    uint32_t off, n;
};

struct slb_rules {
    struct slb_rule *r;
    size_t n;
    uint32_t *ids;
    struct rtab hosts, paths, suffixes;
    struct tnode *trie;
    size_t ntrie;
    uint32_t off_any, n_any; /* rules every request visits */
    pcre2_match_context *mctx;
};

/* --- building -------------------------------------------------------------------------------*/

enum file { F_HOST, F_PATH, F_PREFIX, F_SUFFIX, F_ANY };

static enum file file_of(const struct slb_rule_cfg *c)
{
    if (c->host && c->host[0] != '*')
        return F_HOST;
    if (c->path)
        return F_PATH;
    if (c->path_prefix)
        return F_PREFIX;
    if (c->host)
        return F_SUFFIX;
    return F_ANY;
}

/* ASCII only, without the locale tables: host names are ASCII. */
static inline unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* s (from a request) equals lc (lower-case, from the configuration) ignoring ASCII case. */
static bool icase_eq(const char *s, const char *lc, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lc[i])
            return false;
    return true;
}

/* FNV-1a. Host tables (icase) hash the name from its last byte to its first, so one pass
 * backwards over a request's host yields the hash of every suffix (".example.com") on the way
 * and of the whole name at the end. */
static const uint64_t fnv_basis = 1469598103934665603ull, fnv_prime = 1099511628211ull;

static uint64_t hash(const char *s, size_t len, bool icase)
{
    uint64_t h = fnv_basis;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (icase ? lower((unsigned char)s[len - 1 - i]) : (unsigned char)s[i])) * fnv_prime;
    return h;
}

static bool key_eq(const struct rtab *t, const struct rtab_ent *e, const char *s, size_t len)
{
    return e->len == len && (t->icase ? icase_eq(s, e->key, len) : memcmp(e->key, s, len) == 0);
}

static struct rtab_ent *rtab_find_h(const struct rtab *t, const char *s, size_t len, uint64_t h)
{
    if (!t->nkeys)
        return NULL;
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        struct rtab_ent *e = &t->e[i];
        if (!e->key)
            return NULL;
        if (key_eq(t, e, s, len))
            return e;
    }
}

static struct rtab_ent *rtab_find(const struct rtab *t, const char *s, size_t len)
{
    return rtab_find_h(t, s, len, hash(s, len, t->icase));
}

static int rtab_init(struct rtab *t, size_t nkeys, bool icase)
{
    size_t cap = 8;
    while (cap < 2 * nkeys)
        cap *= 2;
    t->icase = icase;
    t->mask = cap - 1;
    t->e = calloc(cap, sizeof(*t->e));
    return t->e ? 0 : -1;
}

/* The entry for key, added when new; counts one more rule in it. */
static struct rtab_ent *rtab_add(struct rtab *t, const char *s)
{
    size_t len = strlen(s);
    struct rtab_ent *e = rtab_find(t, s, len);
    if (!e) {
        size_t i = hash(s, len, t->icase) & t->mask;
        while (t->e[i].key)
            i = (i + 1) & t->mask;
        e = &t->e[i];
        e->key = s;
        e->len = len;
        t->nkeys++;
    }
    e->n++;
    return e;
}

static int32_t trie_add(struct slb_rules *rs, const char *s)
{
    int32_t node = 0;
    for (; *s; s++) {
        int32_t c = rs->trie[node].child;
        while (c >= 0 && rs->trie[c].byte != (uint8_t)*s)
            c = rs->trie[c].next;
        if (c < 0) {
            c = (int32_t)rs->ntrie++;
            rs->trie[c] =
                (struct tnode){.byte = (uint8_t)*s, .child = -1, .next = rs->trie[node].child};
            rs->trie[node].child = c;
        }
        node = c;
    }
    rs->trie[node].n++;
    return node;
}

/* The list a rule is filed in: its count was taken in pass one, off is set in pass two. */
static uint32_t *slot_of(struct slb_rules *rs, const struct slb_rule_cfg *c, uint32_t **n)
{
    struct rtab_ent *e = NULL;
    switch (file_of(c)) {
    case F_HOST:
        e = rtab_find(&rs->hosts, c->host, strlen(c->host));
        break;
    case F_PATH:
        e = rtab_find(&rs->paths, c->path, strlen(c->path));
        break;
    case F_SUFFIX:
        e = rtab_find(&rs->suffixes, c->host + 1, strlen(c->host + 1));
        break;
    case F_PREFIX: {
        int32_t node = 0;
        for (const char *s = c->path_prefix; *s; s++) {
            node = rs->trie[node].child;
            while (rs->trie[node].byte != (uint8_t)*s)
                node = rs->trie[node].next;
        }
        *n = &rs->trie[node].n;
        return &rs->trie[node].off;
    }
    case F_ANY:
        *n = &rs->n_any;
        return &rs->off_any;
    }
    *n = &e->n;
    return &e->off;
}

/* Give a list of n rules its place in ids; n restarts at 0 and counts them again as they are
 * filed, in configuration order. */
static void reserve(uint32_t *off, uint32_t *n, uint32_t *next)
{
    *off = *next;
    *next += *n;
    *n = 0;
}

static void lay_out(struct rtab *t, uint32_t *next)
{
    for (size_t i = 0; i <= t->mask; i++)
        if (t->e[i].key)
            reserve(&t->e[i].off, &t->e[i].n, next);
}

static void *re_compile(const char *pattern, struct slb_err *err)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    if (!re) {
        slb_err_set(err, 400, "invalid_value", "", "regular expression \"%.100s\" does not compile",
                    pattern);
        return NULL;
    }
    /* Without JIT support (some architectures) PCRE2 interprets: slower, same results. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int rule_compile(struct slb_rule *r, void *(*resolve)(void *, const char *), void *arg,
                        struct slb_err *err)
{
    const struct slb_rule_cfg *c = r->cfg;
    if (c->path_regex && !(r->path_re = re_compile(c->path_regex, err)))
        return SLB_EINVAL;
    if (c->nheaders && !(r->header_re = calloc(c->nheaders, sizeof(void *))))
        goto oom;
    for (size_t k = 0; k < c->nheaders; k++)
        if (c->headers[k].regex && !(r->header_re[k] = re_compile(c->headers[k].value, err)))
            return SLB_EINVAL;
    if (c->nforward && !(r->groups = calloc(c->nforward, sizeof(void *))))
        goto oom;
    for (size_t k = 0; k < c->nforward; k++) {
        r->total_weight += c->forward[k].weight;
        if (resolve && !(r->groups[k] = resolve(arg, c->forward[k].group)))
            return slb_err_set(err, 400, "unknown_group", "",
                               "rule \"%s\" forwards to \"%s\", which is no backend group", c->name,
                               c->forward[k].group);
    }
    return 0;
oom:
    return slb_err_set(err, 500, "internal", "", "out of memory compiling rule \"%s\"", c->name);
}

struct slb_rules *slb_rules_build(const struct slb_rule_cfg *cfg, size_t n,
                                  void *(*resolve)(void *arg, const char *group), void *arg,
                                  struct slb_err *err)
{
    struct slb_rules *rs = calloc(1, sizeof(*rs));
    size_t nhost = 0, npath = 0, nsuffix = 0, trie_bytes = 1;
    if (!rs || (n && (!(rs->r = calloc(n, sizeof(*rs->r))) || !(rs->ids = calloc(n, 4)))))
        goto oom;
    rs->n = n;
    for (size_t i = 0; i < n; i++) {
        rs->r[i].cfg = &cfg[i];
        rs->r[i].index = i;
        if (rule_compile(&rs->r[i], resolve, arg, err))
            goto fail;
        switch (file_of(&cfg[i])) {
        case F_HOST:
            nhost++;
            break;
        case F_PATH:
            npath++;
            break;
        case F_SUFFIX:
            nsuffix++;
            break;
        case F_PREFIX:
            trie_bytes += strlen(cfg[i].path_prefix);
            break;
        case F_ANY:
            break;
        }
    }
    if (!(rs->mctx = pcre2_match_context_create(NULL)) || rtab_init(&rs->hosts, nhost, true) ||
        rtab_init(&rs->paths, npath, false) || rtab_init(&rs->suffixes, nsuffix, true) ||
        !(rs->trie = calloc(trie_bytes, sizeof(*rs->trie))))
        goto oom;
    pcre2_set_match_limit(rs->mctx, RE_MATCH_LIMIT);
    pcre2_set_depth_limit(rs->mctx, RE_DEPTH_LIMIT);
    rs->trie[0] = (struct tnode){.child = -1, .next = -1};
    rs->ntrie = 1;
    /* Pass one counts the rules of each list, pass two lays the lists out in ids. */
    for (size_t i = 0; i < n; i++) {
        const struct slb_rule_cfg *c = &cfg[i];
        switch (file_of(c)) {
        case F_HOST:
            rtab_add(&rs->hosts, c->host);
            break;
        case F_PATH:
            rtab_add(&rs->paths, c->path);
            break;
        case F_SUFFIX:
            rtab_add(&rs->suffixes, c->host + 1); /* ".example.com" */
            break;
        case F_PREFIX:
            trie_add(rs, c->path_prefix);
            break;
        case F_ANY:
            rs->n_any++;
            break;
        }
    }
    uint32_t next = 0;
    lay_out(&rs->hosts, &next);
    lay_out(&rs->paths, &next);
    lay_out(&rs->suffixes, &next);
    for (size_t k = 0; k < rs->ntrie; k++)
        reserve(&rs->trie[k].off, &rs->trie[k].n, &next);
    reserve(&rs->off_any, &rs->n_any, &next);
    for (size_t i = 0; i < n; i++) {
        uint32_t *cnt, *off = slot_of(rs, &cfg[i], &cnt);
        rs->ids[*off + (*cnt)++] = (uint32_t)i;
    }
    return rs;
oom:
    slb_err_set(err, 500, "internal", "", "out of memory compiling forwarding rules");
fail:
    slb_rules_free(rs);
    return NULL;
}

void slb_rules_free(struct slb_rules *rs)
{
    if (!rs)
        return;
    for (size_t i = 0; i < rs->n; i++) {
        struct slb_rule *r = &rs->r[i];
        pcre2_code_free(r->path_re);
        for (size_t k = 0; r->header_re && k < r->cfg->nheaders; k++)
            pcre2_code_free(r->header_re[k]);
        free(r->header_re);
        free(r->groups);
    }
    pcre2_match_context_free(rs->mctx);
    free(rs->r);
    free(rs->ids);
    free(rs->hosts.e);
    free(rs->paths.e);
    free(rs->suffixes.e);
    free(rs->trie);
    free(rs);
}

size_t slb_rules_count(const struct slb_rules *rs)
{
    return rs ? rs->n : 0;
}

/* --- matching -------------------------------------------------------------------------------*/

/* Match data for one regex match at a time per thread, made on a thread's first match and
 * freed when the thread ends: no allocation per request. */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void md_free(void *md)
{
    pcre2_match_data_free(md);
}

static void md_init(void)
{
    (void)pthread_key_create(&md_key, md_free);
}

static pcre2_match_data *match_data(void)
{
    pthread_once(&md_once, md_init);
    pcre2_match_data *md = pthread_getspecific(md_key);
    if (!md && (md = pcre2_match_data_create(1, NULL)) && pthread_setspecific(md_key, md)) {
        pcre2_match_data_free(md);
        md = NULL;
    }
    return md;
}

/* A regex that cannot run (no match data, match limit reached) does not match: the rule is
 * skipped rather than the request failed. */
static bool re_match(const struct slb_rules *rs, void *re, const char *s, size_t len)
{
    pcre2_match_data *md = match_data();
    return md && pcre2_match(re, (PCRE2_SPTR)(s ? s : ""), len, 0, 0, md, rs->mctx) >= 0;
}

/* The request's host name without a port or a trailing dot. */
static struct slb_slice host_name(struct slb_slice h)
{
    size_t n = 0;
    if (h.len && h.p[0] == '[') {
        while (n < h.len && h.p[n] != ']')
            n++;
        n = n < h.len ? n + 1 : 0; /* an unterminated literal names nothing */
    } else {
        while (n < h.len && h.p[n] != ':')
            n++;
        if (n && h.p[n - 1] == '.')
            n--;
    }
    return (struct slb_slice){h.p, n};
}

static bool slice_is(struct slb_slice s, const char *z)
{
    return s.len == strlen(z) && memcmp(s.p, z, s.len) == 0;
}

static bool host_ok(const char *want, struct slb_slice host)
{
    if (want[0] != '*')
        return host.len == strlen(want) && icase_eq(host.p, want, host.len);
    size_t sl = strlen(want + 1); /* ".example.com", and at least one byte before it */
    return host.len > sl && icase_eq(host.p + host.len - sl, want + 1, sl);
}

static int hexv(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Whether raw, percent-decoded (a '%' without two hex digits stays itself; '+' is not a
 * space), is exactly want. */
static bool decoded_is(const char *raw, size_t len, const char *want)
{
    size_t i = 0;
    for (; i < len; want++) {
        unsigned char c = (unsigned char)raw[i];
        int hi, lo;
        if (c == '%' && i + 2 < len && (hi = hexv((unsigned char)raw[i + 1])) >= 0 &&
            (lo = hexv((unsigned char)raw[i + 2])) >= 0) {
            c = (unsigned char)(hi << 4 | lo);
            i += 3;
        } else {
            i++;
        }
        if (!*want || (unsigned char)*want != c)
            return false;
    }
    return !*want;
}

static bool query_ok(const struct slb_rule_kv *kv, struct slb_slice q)
{
    const char *p = q.p, *end = q.p + q.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ne = eq ? eq : pe;
        if (decoded_is(p, (size_t)(ne - p), kv->name) &&
            decoded_is(eq ? eq + 1 : pe, eq ? (size_t)(pe - eq - 1) : 0, kv->value))
            return true;
        p = pe + 1;
    }
    return false;
}

static bool cidr_has(const struct slb_cidr *r, const struct sockaddr_storage *ss)
{
    const uint8_t *a;
    if (ss->ss_family == AF_INET) {
        if (r->family != AF_INET)
            return false;
        a = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
    } else if (ss->ss_family == AF_INET6) {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        a = x->s6_addr;
        if (r->family == AF_INET) { /* IPv4-mapped clients of a dual-stack socket */
            if (!IN6_IS_ADDR_V4MAPPED(x))
                return false;
            a += 12;
        }
    } else {
        return false;
    }
    unsigned bits = r->prefix, k = 0;
    for (; bits >= 8; bits -= 8, k++)
        if (a[k] != r->addr[k])
            return false;
    return !bits || (a[k] >> (8 - bits)) == (r->addr[k] >> (8 - bits));
}

static bool header_ok(const struct slb_rules *rs, const struct slb_rule *r, size_t k,
                      const struct slb_rule_req *req)
{
    const struct slb_rule_kv *kv = &r->cfg->headers[k];
    struct slb_slice v;
    for (size_t i = 0; req->header && req->header(req->header_arg, kv->name, i, &v); i++) {
        if (r->header_re && r->header_re[k] ? re_match(rs, r->header_re[k], v.p, v.len)
                                            : slice_is(v, kv->value))
            return true;
    }
    return false;
}

static bool rule_ok(const struct slb_rules *rs, const struct slb_rule *r,
                    const struct slb_rule_req *req, struct slb_slice host)
{
    const struct slb_rule_cfg *c = r->cfg;
    if (c->host && !host_ok(c->host, host))
        return false;
    if (c->path && !slice_is(req->path, c->path))
        return false;
    if (c->path_prefix && (req->path.len < strlen(c->path_prefix) ||
                           memcmp(req->path.p, c->path_prefix, strlen(c->path_prefix)) != 0))
        return false;
    if (c->nmethods) {
        size_t k = 0;
        while (k < c->nmethods && !slice_is(req->method, c->methods[k]))
            k++;
        if (k == c->nmethods)
            return false;
    }
    if (c->nsource) {
        size_t k = 0;
        while (req->source && k < c->nsource && !cidr_has(&c->source[k], req->source))
            k++;
        if (!req->source || k == c->nsource)
            return false;
    }
    for (size_t k = 0; k < c->nquery; k++)
        if (!query_ok(&c->query[k], req->query))
            return false;
    for (size_t k = 0; k < c->nheaders; k++)
        if (!header_ok(rs, r, k, req))
            return false;
    /* The regex last: it is the dearest check. */
    return !r->path_re || re_match(rs, r->path_re, req->path.p, req->path.len);
}

bool slb_rule_holds(const struct slb_rules *rs, const struct slb_rule *r,
                    const struct slb_rule_req *req)
{
    return rule_ok(rs, r, req, host_name(req->host));
}

const struct slb_rule *slb_rules_get(const struct slb_rules *rs, size_t i)
{
    return i < rs->n ? &rs->r[i] : NULL;
}

/* The first rule of list (off, n) that holds and comes before *best. */
static void scan(const struct slb_rules *rs, uint32_t off, uint32_t n,
                 const struct slb_rule_req *req, struct slb_slice host, size_t *best)
{
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = rs->ids[off + k];
        if (i >= *best)
            return;
        if (rule_ok(rs, &rs->r[i], req, host)) {
            *best = i;
            return;
        }
    }
}

static void scan_ent(const struct slb_rules *rs, const struct rtab_ent *e,
                     const struct slb_rule_req *req, struct slb_slice host, size_t *best)
{
    if (e)
        scan(rs, e->off, e->n, req, host, best);
}

const struct slb_rule *slb_rules_match(const struct slb_rules *rs, const struct slb_rule_req *req)
{
    if (!rs || !rs->n)
        return NULL;
    size_t best = rs->n;
    struct slb_slice host = host_name(req->host);
    if (host.len && (rs->hosts.nkeys || rs->suffixes.nkeys)) {
        uint64_t h = fnv_basis;
        for (size_t i = host.len; i-- > 0;) {
            h = (h ^ lower((unsigned char)host.p[i])) * fnv_prime;
            if (i > 0 && host.p[i] == '.')
                scan_ent(rs, rtab_find_h(&rs->suffixes, host.p + i, host.len - i, h), req, host,
                         &best);
        }
        scan_ent(rs, rtab_find_h(&rs->hosts, host.p, host.len, h), req, host, &best);
    }
    scan_ent(rs, rtab_find(&rs->paths, req->path.p, req->path.len), req, host, &best);
    int32_t node = 0;
    for (size_t i = 0; node >= 0; i++) {
        scan(rs, rs->trie[node].off, rs->trie[node].n, req, host, &best);
        if (i == req->path.len)
            break;
        int32_t c = rs->trie[node].child;
        while (c >= 0 && rs->trie[c].byte != (uint8_t)req->path.p[i])
            c = rs->trie[c].next;
        node = c;
    }
    /* Last: the indexed lists have usually lowered best below these rules by now. */
    scan(rs, rs->off_any, rs->n_any, req, host, &best);
    return best < rs->n ? &rs->r[best] : NULL;
}

bool slb_rule_msg_header(const void *arg, const char *name, size_t i, struct slb_slice *value)
{
    const struct slb_http_msg *m = arg;
    size_t n = strlen(name);
    for (size_t k = 0; k < m->nheaders; k++) {
        if (!slb_slice_eq_ci_n(m->headers[k].name, name, n) || i-- > 0)
            continue;
        *value = m->headers[k].value;
        return true;
    }
    return false;
}

int slb_rule_req_from_msg(struct slb_rule_req *req, const struct slb_http_msg *m,
                          const struct sockaddr_storage *source, char *path_buf)
{
    struct slb_slice host = m->host, target = m->target;
    slb_http_split_absolute(m->target, &host, &target); /* the target's authority wins */
    *req = (struct slb_rule_req){.method = m->method_name,
                                 .host = host,
                                 .source = source,
                                 .header = slb_rule_msg_header,
                                 .header_arg = m,
                                 .path = {path_buf, 0},
                                 .query = {"", 0}};
    path_buf[0] = '\0';
    const char *q = memchr(target.p, '?', target.len);
    size_t plen = q ? (size_t)(q - target.p) : target.len;
    if (q)
        req->query = (struct slb_slice){q + 1, target.len - plen - 1};
    if (m->method == SLB_HTTP_CONNECT || (target.len == 1 && target.p[0] == '*'))
        return 0;
    if (plen == 0) { /* "http://host" or "http://host?q": the path is "/" */
        memcpy(path_buf, "/", 2);
        req->path.len = 1;
        return 0;
    }
    return slb_path_normalize(target.p, plen, path_buf, &req->path.len);
}

/* --- actions --------------------------------------------------------------------------------*/

size_t slb_rule_pick(const struct slb_rule *r, uint32_t x)
{
    if (!r->total_weight)
        return 0;
    uint32_t at = x % r->total_weight;
    size_t k = 0;
    for (; k + 1 < r->cfg->nforward; k++) {
        if (at < r->cfg->forward[k].weight)
            break;
        at -= r->cfg->forward[k].weight;
    }
    return k;
}

bool slb_rule_drops_header(const struct slb_rule *r, struct slb_slice name)
{
    const struct slb_rule_cfg *c = r->cfg;
    /* Underscore twins too: the backend may read X_Auth as X-Auth (slb_name_starts_folded). */
    for (size_t k = 0; k < c->nremove_headers; k++)
        if (slb_name_eq_folded(name, c->remove_headers[k], strlen(c->remove_headers[k])))
            return true;
    for (size_t k = 0; k < c->nset_headers; k++)
        if (slb_name_eq_folded(name, c->set_headers[k].name, strlen(c->set_headers[k].name)))
            return true;
    return false;
}

static bool query_chars_ok(struct slb_slice q)
{
    for (size_t i = 0; i < q.len; i++)
        if ((unsigned char)q.p[i] <= 0x20 || (unsigned char)q.p[i] >= 0x7f || q.p[i] == '#')
            return false;
    return true;
}

int slb_rule_location(const struct slb_rule *r, const struct slb_rule_req *req, bool tls, char *out,
                      size_t size)
{
    const struct slb_rule_cfg *c = r->cfg;
    const char *scheme = c->redir_scheme ? c->redir_scheme : tls ? "https" : "http";
    struct slb_slice host = host_name(req->host);
    if (c->redir_host)
        host = (struct slb_slice){c->redir_host, strlen(c->redir_host)};
    if (!host.len)
        return SLB_EINVAL;
    for (size_t i = 0; !c->redir_host && i < host.len; i++)
        if (!isalnum((unsigned char)host.p[i]) && !strchr("-._[]:", host.p[i]))
            return SLB_EINVAL; /* nothing a client sent goes into Location unchecked */
    unsigned port = c->redir_port;
    if (!port && !c->redir_scheme && !c->redir_host) {
        struct slb_slice h = host_name(req->host);
        if (h.len < req->host.len && req->host.p[h.len] == ':') {
            port = 0;
            for (size_t i = h.len + 1; i < req->host.len && port <= 65535; i++) {
                if (!isdigit((unsigned char)req->host.p[i]))
                    return SLB_EINVAL;
                port = port * 10 + (unsigned)(req->host.p[i] - '0');
            }
            if (port > 65535)
                return SLB_EINVAL;
        }
    }
    if (port == (strcmp(scheme, "https") == 0 ? 443u : 80u))
        port = 0;
    struct slb_slice path = req->path, query = req->query;
    if (c->redir_path)
        path = (struct slb_slice){c->redir_path, strlen(c->redir_path)};
    if (c->redir_query)
        query = (struct slb_slice){c->redir_query, strlen(c->redir_query)};
    if (!path.len || path.p[0] != '/' || !query_chars_ok(query) || !query_chars_ok(path))
        return SLB_EINVAL;
    char portbuf[8] = "";
    if (port)
        snprintf(portbuf, sizeof(portbuf), ":%u", port);
    int n = snprintf(out, size, "%s://%.*s%s%.*s%s%.*s", scheme, (int)host.len, host.p, portbuf,
                     (int)path.len, path.p, query.len ? "?" : "", (int)query.len, query.p);
    return n < 0 || (size_t)n >= size ? SLB_EINVAL : n;
}

/* Redirect codes are ours alone in slbd; others share the proxy's phrases. */
static const char *reason(unsigned code)
{
    switch (code) {
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    default:
        return slb_http_reason((int)code);
    }
}

void slb_rule_http1_response(struct slb_hbuf *out, unsigned code, const char *content_type,
                             const char *body, size_t body_len, const char *location,
                             bool head_only, bool close)
{
    slb_hbuf_printf(out, "HTTP/1.1 %u %s\r\n", code, reason(code));
    if (location)
        slb_hbuf_printf(out, "Location: %s\r\n", location);
    if (content_type)
        slb_hbuf_printf(out, "Content-Type: %s\r\n", content_type);
    slb_hbuf_printf(out, "Content-Length: %zu\r\n%s\r\n", body_len,
                    close ? "Connection: close\r\n" : "");
    if (!head_only && body_len)
        slb_hbuf_put(out, body, body_len);
}
