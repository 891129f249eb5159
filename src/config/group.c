/* SPDX-License-Identifier: Apache-2.0 */
/* Backend groups: validation of a group resource (servers, scheduler, health check) into its
 * typed form and its normalized JSON with every default written out. */
#include "config/validate.h"
#include "lb/sched.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const char *const group_keys[] = {"name", "scheduler", "servers", "health_check", NULL};
static const char *const server_keys[] = {"address", "port", "weight", NULL};
static const char *const hc_keys[] = {"enabled",
                                      "protocol",
                                      "uri",
                                      "domain",
                                      "method",
                                      "http_codes",
                                      "interval_s",
                                      "timeout_s",
                                      "healthy_threshold",
                                      "unhealthy_threshold",
                                      "port",
                                      "passive",
                                      NULL};
static const char *const passive_keys[] = {"enabled", "consecutive_failures", "include_5xx",
                                           "ejection_s", NULL};
static const char *const hc_protocols[] = {"tcp", "http", NULL};
static const char *const hc_methods[] = {"head", "get", NULL};

#define HC_CODES_DEFAULT ((1u << 2) | (1u << 3))

static int server_parse(const json_t *in, const char *path, struct slb_server_cfg *s,
                        json_t *norm_list, struct slb_err *err)
{
    struct slb_cv cv;
    int rc = slb_cv_open(&cv, in, path, "a server", err);
    if (rc || (rc = slb_cv_keys(&cv, server_keys)))
        return rc;
    const char *address;
    json_int_t port, weight;
    if ((rc = slb_cv_str(&cv, "address", true, NULL, sizeof(s->address), &address)))
        return rc;
    if ((rc = slb_cv_int(&cv, "port", true, 0, 1, 65535, &port)))
        return rc;
    if ((rc = slb_cv_int(&cv, "weight", false, 100, 0, 100, &weight)))
        return rc;

    memset(s, 0, sizeof(*s));
    snprintf(s->address, sizeof(s->address), "%s", address);
    s->port = (uint16_t)port;
    snprintf(s->authority, sizeof(s->authority), strchr(s->address, ':') ? "[%s]:%u" : "%s:%u",
             s->address, s->port);
    s->weight = (uint32_t)weight;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&s->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&s->addr;
    if (inet_pton(AF_INET, address, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(s->port);
        s->addrlen = sizeof(*a4);
    } else if (inet_pton(AF_INET6, address, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(s->port);
        s->addrlen = sizeof(*a6);
    } else {
        char where[SLB_CV_PATH];
        slb_cv_path(&cv, "address", where);
        return slb_cv_fail(err, "invalid_value", where,
                           "\"%s\" is not an IPv4 or IPv6 address (host names are not resolved; "
                           "give the server's IP address)",
                           address);
    }

    json_t *n = json_object();
    int bad = n ? 0 : -1;
    bad |= slb_cv_put(n, "address", json_string(address));
    bad |= slb_cv_put(n, "port", json_integer(port));
    bad |= slb_cv_put(n, "weight", json_integer(weight));
    if (json_array_append_new(norm_list, n))
        bad = -1;
    return bad ? slb_cv_oom(err) : 0;
}

static int server_cmp(const struct slb_server_cfg *a, const struct slb_server_cfg *b)
{
    if (a->addr.ss_family != b->addr.ss_family)
        return a->addr.ss_family < b->addr.ss_family ? -1 : 1;
    if (a->port != b->port)
        return a->port < b->port ? -1 : 1;
    if (a->addr.ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)&a->addr)->sin_addr,
                      &((const struct sockaddr_in *)&b->addr)->sin_addr, sizeof(struct in_addr));
    return memcmp(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr,
                  &((const struct sockaddr_in6 *)&b->addr)->sin6_addr, sizeof(struct in6_addr));
}

struct server_pos {
    const struct slb_server_cfg *s;
    size_t i;
};

static int server_pos_cmp(const void *a, const void *b)
{
    const struct server_pos *x = a, *y = b;
    int c = server_cmp(x->s, y->s);
    return c ? c : x->i < y->i ? -1 : x->i > y->i;
}

/* The first server (*later) listed again after an earlier one (*first) of the same address and
 * port: 1, 0 when none, -1 out of memory. Sorting keeps this O(n log n) for groups of
 * thousands of servers. */
static int servers_repeated(const struct slb_server_cfg *v, size_t n, size_t *later, size_t *first)
{
    if (n < 2)
        return 0;
    struct server_pos *p = malloc(n * sizeof(*p));
    if (!p)
        return -1;
    for (size_t i = 0; i < n; i++)
        p[i] = (struct server_pos){&v[i], i};
    qsort(p, n, sizeof(*p), server_pos_cmp);
    int found = 0;
    for (size_t k = 1; k < n; k++) {
        /* The second of a run of equals is its earliest repeat; the run's first is first. */
        if (server_cmp(p[k].s, p[k - 1].s) != 0 || (k >= 2 && server_cmp(p[k].s, p[k - 2].s) == 0))
            continue;
        if (!found || p[k].i < *later) {
            *later = p[k].i;
            *first = p[k - 1].i;
            found = 1;
        }
    }
    free(p);
    return found;
}

static int servers_parse(const struct slb_cv *cv, struct slb_group_cfg *g, json_t *norm,
                         struct slb_err *err)
{
    const json_t *arr;
    int rc = slb_cv_array(cv, "servers", SLB_MAX_SERVERS, &arr);
    if (rc)
        return rc;
    json_t *list = json_array();
    if (!list || slb_cv_put(norm, "servers", list))
        return slb_cv_oom(err);
    size_t n = arr ? json_array_size(arr) : 0;
    if (n == 0)
        return 0;
    g->servers = calloc(n, sizeof(*g->servers));
    if (!g->servers)
        return slb_cv_oom(err);
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(cv, "servers", base);
    for (size_t i = 0; i < n; i++) {
        slb_cv_index(path, base, i);
        if ((rc = server_parse(json_array_get(arr, i), path, &g->servers[i], list, err)))
            break;
        g->nservers = i + 1;
    }
    /* A repeated server before the first invalid one is reported first, as a check of each
     * server against those before it would. */
    size_t i = 0, j = 0;
    int drc = servers_repeated(g->servers, g->nservers, &i, &j);
    if (drc < 0)
        return slb_cv_oom(err);
    if (drc > 0) {
        slb_cv_index(path, base, i);
        return slb_cv_fail(err, "invalid_value", path,
                           "server %s port %u is already listed as servers[%zu]; each "
                           "address:port may appear once in a group",
                           g->servers[i].address, g->servers[i].port, j);
    }
    return rc;
}

/* "http_2xx".."http_5xx" → bit n; the normalized list (*list, owned by the caller) is sorted
 * and free of duplicates. */
static int codes_parse(const struct slb_cv *cv, uint32_t *codes, json_t **list)
{
    const json_t *arr;
    int rc = slb_cv_array(cv, "http_codes", 4 * 16, &arr);
    if (rc)
        return rc;
    char base[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(cv, "http_codes", base);
    uint32_t mask = HC_CODES_DEFAULT;
    if (arr) {
        if (json_array_size(arr) == 0)
            return slb_cv_fail(cv->err, "invalid_value", base,
                               "must list at least one of \"http_2xx\", \"http_3xx\", "
                               "\"http_4xx\", \"http_5xx\"");
        mask = 0;
        for (size_t i = 0; i < json_array_size(arr); i++) {
            const json_t *v = json_array_get(arr, i);
            slb_cv_index(path, base, i);
            if (!json_is_string(v))
                return slb_cv_fail(cv->err, "wrong_type", path, "expected a string, got %s",
                                   slb_cv_type_name(v));
            const char *s = json_string_value(v);
            if (strlen(s) != 8 || strncmp(s, "http_", 5) != 0 || s[5] < '2' || s[5] > '5' ||
                strcmp(s + 6, "xx") != 0)
                return slb_cv_fail(cv->err, "invalid_value", path,
                                   "\"%.40s\" is not one of \"http_2xx\", \"http_3xx\", "
                                   "\"http_4xx\", \"http_5xx\"",
                                   s);
            mask |= 1u << (s[5] - '0');
        }
    }
    *list = json_array();
    if (!*list)
        return slb_cv_oom(cv->err);
    for (int c = 2; c <= 5; c++) {
        char name[9] = "http_0xx";
        name[5] = (char)('0' + c);
        if ((mask & (1u << c)) && json_array_append_new(*list, json_string(name)))
            return slb_cv_oom(cv->err);
    }
    *codes = mask;
    return 0;
}

static bool uri_ok(const char *s)
{
    if (s[0] != '/')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    return true;
}

/* health_check.passive: off unless asked for (see docs/configuration.md). */
static int passive_parse(const struct slb_cv *hc_cv, struct slb_passive_cfg *p, json_t *norm)
{
    struct slb_err *err = hc_cv->err;
    char self[SLB_CV_PATH];
    slb_cv_path(hc_cv, "passive", self);
    const json_t *in = slb_cv_get(hc_cv, "passive");
    json_t *empty = NULL, *out = NULL;
    if (!in)
        in = empty = json_object();
    if (!in)
        return slb_cv_oom(err);
    struct slb_cv cv;
    int rc = slb_cv_open(&cv, in, self, "the passive health check", err);
    if (rc || (rc = slb_cv_keys(&cv, passive_keys)) ||
        (rc = slb_cv_bool(&cv, "enabled", false, &p->enabled)) ||
        (rc = slb_cv_u32(&cv, "consecutive_failures", 5, 1, 1000, &p->consecutive_failures)) ||
        (rc = slb_cv_bool(&cv, "include_5xx", false, &p->include_5xx)) ||
        (rc = slb_cv_u32(&cv, "ejection_s", 30, 1, 3600, &p->ejection_s)))
        goto done;
    out = json_object();
    int bad = out ? 0 : -1;
    bad |= slb_cv_put(out, "enabled", json_boolean(p->enabled));
    bad |= slb_cv_put(out, "consecutive_failures", json_integer(p->consecutive_failures));
    bad |= slb_cv_put(out, "include_5xx", json_boolean(p->include_5xx));
    bad |= slb_cv_put(out, "ejection_s", json_integer(p->ejection_s));
    bad |= slb_cv_put(norm, "passive", out); /* takes out, even on failure */
    out = NULL;
    if (bad)
        rc = slb_cv_oom(err);
done:
    json_decref(out);
    json_decref(empty);
    return rc;
}

static int health_parse(const struct slb_cv *group, struct slb_health_cfg *hc, json_t *norm)
{
    struct slb_err *err = group->err;
    char self[SLB_CV_PATH], path[SLB_CV_PATH];
    slb_cv_path(group, "health_check", self);
    const json_t *in = slb_cv_get(group, "health_check");
    json_t *empty = NULL, *codes = NULL;
    if (!in)
        in = empty = json_object();
    if (!in)
        return slb_cv_oom(err);
    struct slb_cv cv;
    int rc = slb_cv_open(&cv, in, self, "the health check", err);
    if (rc || (rc = slb_cv_keys(&cv, hc_keys)))
        goto done;

    int proto = SLB_HC_TCP, method = SLB_HC_HEAD;
    const char *uri, *domain;
    uint32_t port;
    if ((rc = slb_cv_bool(&cv, "enabled", true, &hc->enabled)) ||
        (rc = slb_cv_enum(&cv, "protocol", false, SLB_HC_TCP, hc_protocols, &proto)) ||
        (rc = slb_cv_str(&cv, "uri", false, "/", sizeof(hc->uri), &uri)) ||
        (rc = slb_cv_str(&cv, "domain", false, "", sizeof(hc->domain), &domain)) ||
        (rc = slb_cv_enum(&cv, "method", false, SLB_HC_HEAD, hc_methods, &method)))
        goto done;
    if (!uri_ok(uri)) {
        slb_cv_path(&cv, "uri", path);
        rc = slb_cv_fail(err, "invalid_value", path,
                         "\"%.80s\" must start with '/' and contain only printable characters "
                         "without spaces",
                         uri);
        goto done;
    }
    if (*domain && !slb_cv_hostname_ok(domain, false)) {
        slb_cv_path(&cv, "domain", path);
        rc = slb_cv_fail(err, "invalid_value", path,
                         "\"%.80s\" is not a host name (letters, digits, '.', '-' and '_'); "
                         "leave it empty to send the server's address",
                         domain);
        goto done;
    }
    if ((rc = codes_parse(&cv, &hc->http_codes, &codes)) ||
        (rc = slb_cv_u32(&cv, "interval_s", 2, 1, 50, &hc->interval_s)) ||
        (rc = slb_cv_u32(&cv, "timeout_s", 5, 1, 300, &hc->timeout_s)) ||
        (rc = slb_cv_u32(&cv, "healthy_threshold", 3, 2, 10, &hc->healthy_threshold)) ||
        (rc = slb_cv_u32(&cv, "unhealthy_threshold", 3, 2, 10, &hc->unhealthy_threshold)) ||
        (rc = slb_cv_u32(&cv, "port", 0, 0, 65535, &port)) ||
        (rc = passive_parse(&cv, &hc->passive, norm)))
        goto done;
    hc->protocol = (enum slb_hc_proto)proto;
    hc->method = (enum slb_hc_method)method;
    hc->port = (uint16_t)port;
    snprintf(hc->uri, sizeof(hc->uri), "%s", uri);
    snprintf(hc->domain, sizeof(hc->domain), "%s", domain);

    int bad = 0;
    bad |= slb_cv_put(norm, "enabled", json_boolean(hc->enabled));
    bad |= slb_cv_put(norm, "protocol", json_string(hc_protocols[proto]));
    bad |= slb_cv_put(norm, "uri", json_string(uri));
    bad |= slb_cv_put(norm, "domain", json_string(domain));
    bad |= slb_cv_put(norm, "method", json_string(hc_methods[method]));
    bad |= slb_cv_put(norm, "http_codes", codes);
    codes = NULL;
    bad |= slb_cv_put(norm, "interval_s", json_integer(hc->interval_s));
    bad |= slb_cv_put(norm, "timeout_s", json_integer(hc->timeout_s));
    bad |= slb_cv_put(norm, "healthy_threshold", json_integer(hc->healthy_threshold));
    bad |= slb_cv_put(norm, "unhealthy_threshold", json_integer(hc->unhealthy_threshold));
    bad |= slb_cv_put(norm, "port", json_integer(hc->port));
    if (bad)
        rc = slb_cv_oom(err);
done:
    json_decref(codes);
    json_decref(empty);
    return rc;
}

void slb_cv_group_deinit(struct slb_group_cfg *g)
{
    if (!g)
        return;
    free(g->servers);
    g->servers = NULL;
    g->nservers = 0;
}

int slb_cv_group(const json_t *in, const char *path, struct slb_group_cfg *g, json_t **norm,
                 struct slb_err *err)
{
    memset(g, 0, sizeof(*g));
    *norm = NULL;
    struct slb_cv cv;
    json_t *n = NULL, *hc = NULL;
    const char *sched;
    int rc = slb_cv_open(&cv, in, path, "a backend group", err);
    if (rc || (rc = slb_cv_keys(&cv, group_keys)) ||
        (rc = slb_cv_name(&cv, "name", true, g->name)) ||
        (rc = slb_cv_str(&cv, "scheduler", false, "wrr", 16, &sched)))
        goto fail;
    g->scheduler = slb_sched_parse(sched);
    if (g->scheduler < 0) {
        char where[SLB_CV_PATH];
        slb_cv_path(&cv, "scheduler", where);
        rc = slb_cv_fail(err, "invalid_value", where,
                         "\"%s\" is not one of \"wrr\", \"rr\", \"wlc\", \"sch\", \"tch\"", sched);
        goto fail;
    }
    n = json_object();
    hc = json_object();
    if (!n || !hc || slb_cv_put(n, "name", json_string(g->name)) ||
        slb_cv_put(n, "scheduler", json_string(slb_sched_name(g->scheduler)))) {
        rc = slb_cv_oom(err);
        goto fail;
    }
    if ((rc = servers_parse(&cv, g, n, err)) || (rc = health_parse(&cv, &g->hc, hc)))
        goto fail;
    if (slb_cv_put(n, "health_check", hc)) {
        hc = NULL;
        rc = slb_cv_oom(err);
        goto fail;
    }
    *norm = n;
    return 0;
fail:
    json_decref(hc);
    json_decref(n);
    slb_cv_group_deinit(g);
    return rc;
}

json_t *slb_config_normalize_group(const json_t *in, const char *where_prefix, struct slb_err *err)
{
    struct slb_group_cfg g;
    json_t *norm;
    if (slb_cv_group(in, where_prefix, &g, &norm, err))
        return NULL;
    slb_cv_group_deinit(&g);
    return norm;
}
