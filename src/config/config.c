/* SPDX-License-Identifier: Apache-2.0 */
/* The whole configuration document: builds the typed model from groups, listeners and
 * settings, then checks what only the whole document can tell (duplicate names, shared bind
 * addresses, references to groups and certificates). */
#include "config/validate.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const char *const doc_keys[] = {"listeners", "groups", "settings", NULL};
static const char *const settings_keys[] = {"drain_timeout_s", "access_log", NULL};

bool slb_config_name_ok(const char *s)
{
    if (!s)
        return false;
    size_t n = strlen(s);
    if (n == 0 || n >= SLB_NAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int slb_config_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char why[128];
    if (!s)
        return SLB_EINVAL;
    return slb_cv_hostport(s, ss, len, why) ? SLB_EINVAL : 0;
}

static void listener_unref(struct slb_listener_cfg *l)
{
    if (!l || --l->refs > 0)
        return;
    slb_cv_listener_deinit(l);
    free(l);
}

static void group_unref(struct slb_group_cfg *g)
{
    if (!g || --g->refs > 0)
        return;
    slb_cv_group_deinit(g);
    free(g);
}

static uint64_t next_serial(void)
{
    static _Atomic uint64_t serial;
    return atomic_fetch_add_explicit(&serial, 1, memory_order_relaxed) + 1;
}

/* Certificate id -> the listeners naming it (slb_config_cert_users): per id the head of a
 * chain of (listener index, next) entries, pushed in document order. */
struct slb_cert_users {
    int refs;
    size_t mask;
    struct cert_use {
        const char *id; /* borrowed from a listener of the configurations sharing this */
        uint32_t head;  /* last entry, CU_END for none */
    } * slots;
    struct cert_use_entry {
        uint32_t listener, next;
    } * entries;
    size_t nentries;
};
#define CU_END UINT32_MAX

static void cert_users_unref(struct slb_cert_users *u);

void slb_config_free(struct slb_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        listener_unref(cfg->listeners[i]);
    for (size_t i = 0; i < cfg->ngroups; i++)
        group_unref(cfg->groups[i]);
    free(cfg->listeners);
    free(cfg->groups);
    cert_users_unref(cfg->cert_users);
    json_decref(cfg->json);
    free(cfg);
}

const struct slb_group_cfg *slb_config_group(const struct slb_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->ngroups; i++)
        if (strcmp(cfg->groups[i]->name, name) == 0)
            return cfg->groups[i];
    return NULL;
}

const struct slb_listener_cfg *slb_config_listener(const struct slb_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i]->name, name) == 0)
            return cfg->listeners[i];
    return NULL;
}

/* What a configuration being built takes from the previous one (slb_config_from_json_prev). */
struct ptr_index {
    const void **keys; /* element pointers of an array of prev's document, NULL = empty */
    uint32_t *vals;    /* their indexes */
    size_t mask;
    bool made;
};

struct reuse {
    const struct slb_config *prev;               /* NULL: everything is parsed */
    const json_t *listeners, *groups, *settings; /* prev's normalized parts */
    struct ptr_index lix, gix;
    bool group_names_same; /* the groups have prev's names: references need no new check */
    bool certs_same;       /* certificate ids are as when prev was checked */
    bool listeners_same;   /* every listener is prev's, in the same place */
};

static size_t ptr_hash(const void *p)
{
    uint64_t v = (uint64_t)(uintptr_t)p;
    v ^= v >> 29;
    return (size_t)(v * 0x9e3779b97f4a7c15ULL >> 17);
}

static void ptr_index_free(struct ptr_index *ix)
{
    free(ix->keys);
    free(ix->vals);
}

/* The index in prev's array arr of the element in (seen at index i of the new one), or -1.
 * Most changes keep places, so i is tried first; the rest goes through a hash of arr's
 * pointers made on the first miss (a linear search when there is no memory for it). */
static long prev_index(struct ptr_index *ix, const json_t *arr, const json_t *in, size_t i)
{
    size_t n = json_array_size(arr);
    if (n == 0)
        return -1;
    if (i < n && json_array_get(arr, i) == in)
        return (long)i;
    if (!ix->made) {
        ix->made = true;
        size_t slots = 16;
        while (slots < 2 * n)
            slots *= 2;
        ix->keys = calloc(slots, sizeof(*ix->keys));
        ix->vals = malloc(slots * sizeof(*ix->vals));
        ix->mask = slots - 1;
        for (size_t k = 0; ix->keys && ix->vals && k < n; k++) {
            const void *p = json_array_get(arr, k);
            size_t h = ptr_hash(p) & ix->mask;
            while (ix->keys[h] && ix->keys[h] != p)
                h = (h + 1) & ix->mask;
            if (!ix->keys[h]) {
                ix->keys[h] = p;
                ix->vals[h] = (uint32_t)k;
            }
        }
    }
    if (!ix->keys || !ix->vals) {
        for (size_t k = 0; k < n; k++)
            if (json_array_get(arr, k) == in)
                return (long)k;
        return -1;
    }
    for (size_t h = ptr_hash(in) & ix->mask; ix->keys[h]; h = (h + 1) & ix->mask)
        if (ix->keys[h] == in)
            return (long)ix->vals[h];
    return -1;
}

static int settings_parse(const struct slb_cv *doc, const struct reuse *r, struct slb_settings *s,
                          json_t **norm)
{
    const json_t *in = slb_cv_get(doc, "settings");
    json_t *empty = NULL;
    struct slb_cv cv;
    const char *log;
    *norm = NULL;
    if (in && in == r->settings) {
        *s = r->prev->settings;
        *norm = json_incref((json_t *)in);
        return 0;
    }
    if (!in && !(in = empty = json_object()))
        return slb_cv_oom(doc->err);
    int rc = slb_cv_open(&cv, in, "settings", "settings", doc->err);
    if (rc || (rc = slb_cv_keys(&cv, settings_keys)) ||
        (rc = slb_cv_u32(&cv, "drain_timeout_s", 10, 0, 3600, &s->drain_timeout_s)) ||
        (rc = slb_cv_str(&cv, "access_log", false, "", sizeof(s->access_log), &log)))
        goto done;
    /* A bare file name keeps the log inside the state directory, which the daemon owns; an
     * absolute path is the operator's choice (/var/log/slbd/...). */
    if (*log && strcmp(log, "stdout") != 0 && strcmp(log, "syslog") != 0 &&
        !slb_config_name_ok(log) && !(log[0] == '/' && log[1] && !strstr(log, "/../"))) {
        rc = slb_cv_fail(doc->err, "invalid_value", "settings.access_log",
                         "\"%.80s\" must be empty (off), \"stdout\", \"syslog\", an absolute path "
                         "or a file name without '/' (created in the state directory)",
                         log);
        goto done;
    }
    snprintf(s->access_log, sizeof(s->access_log), "%s", log);
    json_t *n = json_object();
    int bad = n ? 0 : -1;
    bad |= slb_cv_put(n, "drain_timeout_s", json_integer(s->drain_timeout_s));
    bad |= slb_cv_put(n, "access_log", json_string(s->access_log));
    if (bad) {
        json_decref(n);
        rc = slb_cv_oom(doc->err);
        goto done;
    }
    *norm = n;
done:
    json_decref(empty);
    return rc;
}

static int groups_parse(const struct slb_cv *doc, struct reuse *r, struct slb_config *cfg,
                        json_t *list)
{
    const json_t *arr;
    char path[SLB_CV_PATH], where[SLB_CV_PATH];
    int rc = slb_cv_array(doc, "groups", SLB_MAX_GROUPS, &arr);
    if (rc || !arr || json_array_size(arr) == 0)
        return rc;
    cfg->groups = calloc(json_array_size(arr), sizeof(*cfg->groups));
    if (!cfg->groups)
        return slb_cv_oom(doc->err);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *norm, *in = json_array_get(arr, i);
        long j = r->prev ? prev_index(&r->gix, r->groups, in, i) : -1;
        struct slb_group_cfg *g;
        slb_cv_index(path, "groups", i);
        if (j >= 0) {
            g = r->prev->groups[j];
            g->refs++;
            norm = json_incref(in);
        } else {
            if (!(g = calloc(1, sizeof(*g))))
                return slb_cv_oom(doc->err);
            if ((rc = slb_cv_group(in, path, g, &norm, doc->err))) {
                free(g);
                return rc;
            }
            g->refs = 1;
            g->serial = next_serial();
        }
        cfg->groups[i] = g;
        cfg->ngroups = i + 1;
        if (json_array_append_new(list, norm))
            return slb_cv_oom(doc->err);
        for (size_t j2 = 0; j2 < i; j2++) {
            if (strcmp(cfg->groups[j2]->name, g->name) != 0)
                continue;
            slb_cv_join(where, path, "name");
            return slb_cv_fail(doc->err, "duplicate_name", where,
                               "a backend group named \"%s\" already exists (groups[%zu])", g->name,
                               j2);
        }
    }
    return 0;
}

static bool same_bind(const struct slb_listener_cfg *a, const struct slb_listener_cfg *b)
{
    if (a->addr.ss_family != b->addr.ss_family)
        return false;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static int certs_check(const struct slb_listener_cfg *l, const char *path,
                       const struct slb_cert_lookup *certs, struct slb_err *err)
{
    char where[SLB_CV_PATH], base[SLB_CV_PATH];
    if (!certs || !certs->type_of || l->protocol != SLB_PROTO_HTTPS)
        return 0;
    slb_cv_join(base, path, "tls.certificates");
    for (size_t i = 0; i < l->tls.ncertificates; i++) {
        const char *id = l->tls.certificates[i];
        int type = certs->type_of(certs->arg, id);
        if (type == 1)
            continue; /* the path is written only for an error: 10,000 ids per listener */
        slb_cv_index(where, base, i);
        if (type == 0)
            return slb_cv_fail(err, "unknown_certificate", where,
                               "no certificate with id \"%s\" exists; upload it first or fix "
                               "the id",
                               id);
        if (type != 1)
            return slb_cv_fail(err, "unknown_certificate", where,
                               "certificate \"%s\" is a CA certificate; a listener needs a "
                               "server certificate with its private key here",
                               id);
    }
    if (!l->tls.client_ca[0])
        return 0;
    slb_cv_join(where, path, "tls.client_ca");
    int type = certs->type_of(certs->arg, l->tls.client_ca);
    if (type == 0)
        return slb_cv_fail(err, "unknown_certificate", where,
                           "no CA certificate with id \"%s\" exists; upload it with type \"ca\" "
                           "first or fix the id",
                           l->tls.client_ca);
    if (type != 2)
        return slb_cv_fail(err, "unknown_certificate", where,
                           "certificate \"%s\" is a server certificate; client_ca needs a "
                           "certificate of type \"ca\"",
                           l->tls.client_ca);
    return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t k = 0; k < n; k++)
        h = (h ^ b[k]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

static uint64_t bind_hash(const struct slb_listener_cfg *l)
{
    uint64_t h = fnv(0xcbf29ce484222325ULL, &l->addr.ss_family, sizeof(l->addr.ss_family));
    if (l->addr.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&l->addr;
        h = fnv(h, &x->sin_port, sizeof(x->sin_port));
        return fnv(h, &x->sin_addr, sizeof(x->sin_addr));
    }
    const struct sockaddr_in6 *x = (const void *)&l->addr;
    h = fnv(h, &x->sin6_port, sizeof(x->sin6_port));
    return fnv(h, &x->sin6_addr, sizeof(x->sin6_addr));
}

/* The listeners seen so far by name and by address, so each listener is checked against the
 * ones before it in O(1) rather than against each (1,000 listeners: 500,000 comparisons per
 * change). Earlier listeners are unique by both, or the document was refused already. */
struct listener_seen {
    uint32_t *by_name, *by_bind; /* indexes into cfg->listeners, UINT32_MAX empty */
    size_t mask;
};

#define SEEN_EMPTY UINT32_MAX

/* The earlier listener with l's name (by_name) or address, or SEEN_EMPTY; *slot is where l
 * goes when there is none. */
static uint32_t seen_find(const struct slb_config *cfg, const struct listener_seen *s,
                          const struct slb_listener_cfg *l, bool by_name, size_t *slot)
{
    uint32_t *tab = by_name ? s->by_name : s->by_bind;
    uint64_t h = by_name ? fnv(0xcbf29ce484222325ULL, l->name, strlen(l->name)) : bind_hash(l);
    size_t i = h & s->mask;
    for (; tab[i] != SEEN_EMPTY; i = (i + 1) & s->mask) {
        const struct slb_listener_cfg *o = cfg->listeners[tab[i]];
        if (by_name ? strcmp(o->name, l->name) == 0 : same_bind(o, l))
            return tab[i];
    }
    *slot = i;
    return SEEN_EMPTY;
}

/* Checks one listener against the listeners before it and, unless it was checked already
 * against the same group names (groups_ok) and certificate ids (certs_ok), its references. */
static int listener_refs(const struct slb_config *cfg, size_t i,
                         const struct slb_cert_lookup *certs, struct listener_seen *seen,
                         bool groups_ok, bool certs_ok, struct slb_err *err)
{
    const struct slb_listener_cfg *l = cfg->listeners[i];
    char where[SLB_CV_PATH], path[SLB_CV_PATH];
    /* The path is only for messages: made when a check that can fail runs (an unchanged
     * listener of 1,000 only meets the clash checks). */
    if (!groups_ok || !certs_ok)
        slb_cv_index(path, "listeners", i);
    size_t name_slot = 0, bind_slot = 0;
    uint32_t jn = seen_find(cfg, seen, l, true, &name_slot);
    uint32_t jb = seen_find(cfg, seen, l, false, &bind_slot);
    /* The first earlier listener that clashes, by name before address for the same one. */
    if (jn != SEEN_EMPTY && jn <= jb) {
        slb_cv_index(path, "listeners", i);
        slb_cv_join(where, path, "name");
        return slb_cv_fail(err, "duplicate_name", where,
                           "a listener named \"%s\" already exists (listeners[%zu])", l->name,
                           (size_t)jn);
    }
    if (jb != SEEN_EMPTY) {
        const struct slb_listener_cfg *o = cfg->listeners[jb];
        slb_cv_index(path, "listeners", i);
        slb_cv_join(where, path, "bind");
        return slb_cv_fail(err, "bind_conflict", where,
                           "\"%s\" is the same address and port as listener \"%s\" (\"%s\"); "
                           "each listener needs its own address:port",
                           l->bind, o->name, o->bind);
    }
    seen->by_name[name_slot] = (uint32_t)i;
    seen->by_bind[bind_slot] = (uint32_t)i;
    if (groups_ok)
        return certs_ok ? 0 : certs_check(l, path, certs, err);
    if (l->backend_group[0] && !slb_config_group(cfg, l->backend_group)) {
        slb_cv_join(where, path, "backend_group");
        return slb_cv_fail(err, "unknown_group", where,
                           "no backend group named \"%s\" exists; create it first or fix the "
                           "name",
                           l->backend_group);
    }
    for (size_t k = 0; k < l->nsni_routes; k++) {
        const struct slb_sni_route *r = &l->sni_routes[k];
        if (slb_config_group(cfg, r->group))
            continue;
        char base[SLB_CV_PATH];
        slb_cv_join(base, path, "sni_routes");
        slb_cv_member(where, base, r->server_name);
        return slb_cv_fail(err, "unknown_group", where,
                           "no backend group named \"%s\" exists; create it first or fix the "
                           "name",
                           r->group);
    }
    int rc = slb_cv_rules_refs(cfg, l, path, err);
    if (rc)
        return rc;
    return certs_ok ? 0 : certs_check(l, path, certs, err);
}

static int listeners_each(const struct slb_cv *doc, struct reuse *r, struct slb_config *cfg,
                          const struct slb_cert_lookup *certs, json_t *list, const json_t *arr,
                          struct listener_seen *seen);

static int listeners_parse(const struct slb_cv *doc, struct reuse *r, struct slb_config *cfg,
                           const struct slb_cert_lookup *certs, json_t *list)
{
    const json_t *arr;
    int rc = slb_cv_array(doc, "listeners", SLB_MAX_LISTENERS, &arr);
    if (rc || !arr || json_array_size(arr) == 0)
        return rc;
    cfg->listeners = calloc(json_array_size(arr), sizeof(*cfg->listeners));
    if (!cfg->listeners)
        return slb_cv_oom(doc->err);
    size_t slots = 16;
    while (slots < 2 * json_array_size(arr))
        slots *= 2;
    struct listener_seen seen = {malloc(slots * sizeof(uint32_t)), malloc(slots * sizeof(uint32_t)),
                                 slots - 1};
    if (!seen.by_name || !seen.by_bind) {
        free(seen.by_name);
        free(seen.by_bind);
        return slb_cv_oom(doc->err);
    }
    memset(seen.by_name, 0xff, slots * sizeof(uint32_t));
    memset(seen.by_bind, 0xff, slots * sizeof(uint32_t));
    rc = listeners_each(doc, r, cfg, certs, list, arr, &seen);
    free(seen.by_name);
    free(seen.by_bind);
    return rc;
}

static int listeners_each(const struct slb_cv *doc, struct reuse *r, struct slb_config *cfg,
                          const struct slb_cert_lookup *certs, json_t *list, const json_t *arr,
                          struct listener_seen *seen)
{
    char path[SLB_CV_PATH];
    int rc;
    r->listeners_same = r->prev && json_array_size(arr) == r->prev->nlisteners;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *norm, *in = json_array_get(arr, i);
        long j = r->prev ? prev_index(&r->lix, r->listeners, in, i) : -1;
        struct slb_listener_cfg *l;
        r->listeners_same &= j == (long)i;
        if (j >= 0) {
            l = r->prev->listeners[j];
            l->refs++;
            norm = json_incref(in);
        } else {
            if (!(l = calloc(1, sizeof(*l))))
                return slb_cv_oom(doc->err);
            slb_cv_index(path, "listeners", i);
            if ((rc = slb_cv_listener(in, path, l, &norm, doc->err))) {
                free(l);
                return rc;
            }
            l->refs = 1;
            l->serial = next_serial();
        }
        cfg->listeners[i] = l;
        cfg->nlisteners = i + 1;
        if (json_array_append_new(list, norm))
            return slb_cv_oom(doc->err);
        if ((rc = listener_refs(cfg, i, certs, seen, j >= 0 && r->group_names_same,
                                j >= 0 && r->certs_same, doc->err)))
            return rc;
    }
    return 0;
}

static bool group_names_same(const struct slb_config *a, const struct slb_config *b)
{
    if (!a || !b || a->ngroups != b->ngroups)
        return false;
    for (size_t i = 0; i < a->ngroups; i++)
        if (a->groups[i] != b->groups[i] && strcmp(a->groups[i]->name, b->groups[i]->name) != 0)
            return false;
    return true;
}

int slb_config_from_json(const json_t *doc, const struct slb_cert_lookup *certs,
                         struct slb_config **out, struct slb_err *err)
{
    return slb_config_from_json_prev(doc, certs, NULL, out, err);
}

int slb_config_from_json_prev(const json_t *doc, const struct slb_cert_lookup *certs,
                              const struct slb_config *prev, struct slb_config **out,
                              struct slb_err *err)
{
    struct slb_cv cv;
    struct slb_config *cfg = NULL;
    json_t *listeners = NULL, *groups = NULL, *settings = NULL;
    struct reuse r = {.prev = prev};
    *out = NULL;
    int rc = slb_cv_open(&cv, doc, "", "the configuration document", err);
    if (rc || (rc = slb_cv_keys(&cv, doc_keys)))
        return rc;
    if (prev && prev->json) {
        r.listeners = json_object_get(prev->json, "listeners");
        r.groups = json_object_get(prev->json, "groups");
        r.settings = json_object_get(prev->json, "settings");
        r.certs_same = certs && certs->gen && prev->certs_gen == certs->gen;
    } else {
        r.prev = NULL;
    }
    cfg = calloc(1, sizeof(*cfg));
    listeners = json_array();
    groups = json_array();
    if (!cfg || !listeners || !groups) {
        rc = slb_cv_oom(err);
        goto fail;
    }
    cfg->certs_gen = certs ? certs->gen : 0;
    /* Groups first: listeners refer to them. */
    if ((rc = groups_parse(&cv, &r, cfg, groups)))
        goto fail;
    r.group_names_same = group_names_same(r.prev, cfg);
    if ((rc = listeners_parse(&cv, &r, cfg, certs, listeners)) ||
        (rc = settings_parse(&cv, &r, &cfg->settings, &settings)))
        goto fail;
    cfg->json = json_object();
    int bad = cfg->json ? 0 : -1;
    bad |= slb_cv_put(cfg->json, "listeners", listeners);
    bad |= slb_cv_put(cfg->json, "groups", groups);
    bad |= slb_cv_put(cfg->json, "settings", settings);
    listeners = groups = settings = NULL;
    if (bad) {
        rc = slb_cv_oom(err);
        goto fail;
    }
    if (r.listeners_same && prev->cert_users) {
        cfg->cert_users = prev->cert_users;
        cfg->cert_users->refs++;
    }
    ptr_index_free(&r.lix);
    ptr_index_free(&r.gix);
    *out = cfg;
    return 0;
fail:
    ptr_index_free(&r.lix);
    ptr_index_free(&r.gix);
    json_decref(listeners);
    json_decref(groups);
    json_decref(settings);
    slb_config_free(cfg);
    return rc;
}

/* --- certificate users --- */

static void cert_users_unref(struct slb_cert_users *u)
{
    if (!u || --u->refs > 0)
        return;
    free(u->slots);
    free(u->entries);
    free(u);
}

static struct cert_use *cert_use_slot(const struct slb_cert_users *u, const char *id)
{
    size_t h = fnv(0xcbf29ce484222325ULL, id, strlen(id)) & u->mask;
    while (u->slots[h].id && strcmp(u->slots[h].id, id) != 0)
        h = (h + 1) & u->mask;
    return &u->slots[h];
}

static void cert_use_add(struct slb_cert_users *u, const char *id, size_t listener)
{
    struct cert_use *c = cert_use_slot(u, id);
    if (!c->id) {
        c->id = id;
        c->head = CU_END;
    }
    if (c->head != CU_END && u->entries[c->head].listener == listener)
        return; /* named twice by one listener */
    u->entries[u->nentries] = (struct cert_use_entry){(uint32_t)listener, c->head};
    c->head = (uint32_t)u->nentries++;
}

static struct slb_cert_users *cert_users_make(const struct slb_config *cfg)
{
    size_t refs = 0, slots = 16;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        refs += cfg->listeners[i]->tls.ncertificates + 1;
    while (slots < 2 * refs)
        slots *= 2;
    struct slb_cert_users *u = calloc(1, sizeof(*u));
    if (!u || !(u->slots = calloc(slots, sizeof(*u->slots))) ||
        !(u->entries = malloc(refs * sizeof(*u->entries)))) {
        if (u)
            free(u->slots);
        free(u);
        return NULL;
    }
    u->refs = 1;
    u->mask = slots - 1;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const struct slb_listener_cfg *l = cfg->listeners[i];
        if (l->protocol != SLB_PROTO_HTTPS)
            continue;
        for (size_t k = 0; k < l->tls.ncertificates; k++)
            cert_use_add(u, l->tls.certificates[k], i);
        if (l->tls.client_ca[0])
            cert_use_add(u, l->tls.client_ca, i);
    }
    return u;
}

static bool names_cert(const struct slb_listener_cfg *l, const char *id)
{
    if (l->protocol != SLB_PROTO_HTTPS)
        return false;
    for (size_t k = 0; k < l->tls.ncertificates; k++)
        if (strcmp(l->tls.certificates[k], id) == 0)
            return true;
    return strcmp(l->tls.client_ca, id) == 0;
}

size_t slb_config_cert_users(struct slb_config *cfg, const char *id, size_t *idx, size_t max)
{
    size_t n = 0;
    if (!cfg || !id || !*id)
        return 0;
    if (!cfg->cert_users && !(cfg->cert_users = cert_users_make(cfg))) {
        for (size_t i = 0; i < cfg->nlisteners; i++) { /* no memory for the index */
            if (!names_cert(cfg->listeners[i], id))
                continue;
            if (n < max)
                idx[n] = i;
            n++;
        }
        return n;
    }
    const struct slb_cert_users *u = cfg->cert_users;
    const struct cert_use *c = cert_use_slot(u, id);
    if (!c->id)
        return 0;
    for (uint32_t e = c->head; e != CU_END; e = u->entries[e].next)
        n++;
    /* The chain runs from the last listener to the first. */
    size_t k = n;
    for (uint32_t e = c->head; e != CU_END; e = u->entries[e].next) {
        k--;
        if (k < max)
            idx[k] = u->entries[e].listener;
    }
    return n;
}
