/* SPDX-License-Identifier: Apache-2.0 */
/* The whole configuration document: builds the typed model from groups, listeners and
 * settings, then checks what only the whole document can tell (duplicate names, shared bind
 * addresses, references to groups and certificates). */
#include "config/validate.h"

#include <netinet/in.h>
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

void slb_config_free(struct slb_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        slb_cv_listener_deinit(&cfg->listeners[i]);
    for (size_t i = 0; i < cfg->ngroups; i++)
        slb_cv_group_deinit(&cfg->groups[i]);
    free(cfg->listeners);
    free(cfg->groups);
    json_decref(cfg->json);
    free(cfg);
}

const struct slb_group_cfg *slb_config_group(const struct slb_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->ngroups; i++)
        if (strcmp(cfg->groups[i].name, name) == 0)
            return &cfg->groups[i];
    return NULL;
}

const struct slb_listener_cfg *slb_config_listener(const struct slb_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

static int settings_parse(const struct slb_cv *doc, struct slb_settings *s, json_t **norm)
{
    const json_t *in = slb_cv_get(doc, "settings");
    json_t *empty = NULL;
    struct slb_cv cv;
    const char *log;
    *norm = NULL;
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

static int groups_parse(const struct slb_cv *doc, struct slb_config *cfg, json_t *list)
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
        json_t *norm;
        struct slb_group_cfg *g = &cfg->groups[i];
        slb_cv_index(path, "groups", i);
        if ((rc = slb_cv_group(json_array_get(arr, i), path, g, &norm, doc->err)))
            return rc;
        cfg->ngroups = i + 1;
        if (json_array_append_new(list, norm))
            return slb_cv_oom(doc->err);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->groups[j].name, g->name) != 0)
                continue;
            slb_cv_join(where, path, "name");
            return slb_cv_fail(doc->err, "duplicate_name", where,
                               "a backend group named \"%s\" already exists (groups[%zu])", g->name,
                               j);
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
        const struct slb_listener_cfg *o = &cfg->listeners[tab[i]];
        if (by_name ? strcmp(o->name, l->name) == 0 : same_bind(o, l))
            return tab[i];
    }
    *slot = i;
    return SEEN_EMPTY;
}

/* Checks one listener against the groups and the listeners before it. */
static int listener_refs(const struct slb_config *cfg, size_t i, const char *path,
                         const struct slb_cert_lookup *certs, struct listener_seen *seen,
                         struct slb_err *err)
{
    const struct slb_listener_cfg *l = &cfg->listeners[i];
    char where[SLB_CV_PATH];
    size_t name_slot = 0, bind_slot = 0;
    uint32_t jn = seen_find(cfg, seen, l, true, &name_slot);
    uint32_t jb = seen_find(cfg, seen, l, false, &bind_slot);
    /* The first earlier listener that clashes, by name before address for the same one. */
    if (jn != SEEN_EMPTY && jn <= jb) {
        slb_cv_join(where, path, "name");
        return slb_cv_fail(err, "duplicate_name", where,
                           "a listener named \"%s\" already exists (listeners[%zu])", l->name,
                           (size_t)jn);
    }
    if (jb != SEEN_EMPTY) {
        const struct slb_listener_cfg *o = &cfg->listeners[jb];
        slb_cv_join(where, path, "bind");
        return slb_cv_fail(err, "bind_conflict", where,
                           "\"%s\" is the same address and port as listener \"%s\" (\"%s\"); "
                           "each listener needs its own address:port",
                           l->bind, o->name, o->bind);
    }
    seen->by_name[name_slot] = (uint32_t)i;
    seen->by_bind[bind_slot] = (uint32_t)i;
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
    return certs_check(l, path, certs, err);
}

static int listeners_each(const struct slb_cv *doc, struct slb_config *cfg,
                          const struct slb_cert_lookup *certs, json_t *list, const json_t *arr,
                          struct listener_seen *seen);

static int listeners_parse(const struct slb_cv *doc, struct slb_config *cfg,
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
    rc = listeners_each(doc, cfg, certs, list, arr, &seen);
    free(seen.by_name);
    free(seen.by_bind);
    return rc;
}

static int listeners_each(const struct slb_cv *doc, struct slb_config *cfg,
                          const struct slb_cert_lookup *certs, json_t *list, const json_t *arr,
                          struct listener_seen *seen)
{
    char path[SLB_CV_PATH];
    int rc;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *norm;
        slb_cv_index(path, "listeners", i);
        if ((rc = slb_cv_listener(json_array_get(arr, i), path, &cfg->listeners[i], &norm,
                                  doc->err)))
            return rc;
        cfg->nlisteners = i + 1;
        if (json_array_append_new(list, norm))
            return slb_cv_oom(doc->err);
        if ((rc = listener_refs(cfg, i, path, certs, seen, doc->err)))
            return rc;
    }
    return 0;
}

int slb_config_from_json(const json_t *doc, const struct slb_cert_lookup *certs,
                         struct slb_config **out, struct slb_err *err)
{
    struct slb_cv cv;
    struct slb_config *cfg = NULL;
    json_t *listeners = NULL, *groups = NULL, *settings = NULL;
    *out = NULL;
    int rc = slb_cv_open(&cv, doc, "", "the configuration document", err);
    if (rc || (rc = slb_cv_keys(&cv, doc_keys)))
        return rc;
    cfg = calloc(1, sizeof(*cfg));
    listeners = json_array();
    groups = json_array();
    if (!cfg || !listeners || !groups) {
        rc = slb_cv_oom(err);
        goto fail;
    }
    /* Groups first: listeners refer to them. */
    if ((rc = groups_parse(&cv, cfg, groups)) ||
        (rc = listeners_parse(&cv, cfg, certs, listeners)) ||
        (rc = settings_parse(&cv, &cfg->settings, &settings)))
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
    *out = cfg;
    return 0;
fail:
    json_decref(listeners);
    json_decref(groups);
    json_decref(settings);
    slb_config_free(cfg);
    return rc;
}
