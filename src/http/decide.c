/* SPDX-License-Identifier: Apache-2.0 */
/* The decision step of an HTTP request, for both client protocols (see decide.h). */
#include "http/decide.h"

#include "acme/challenge.h"
#include "http/rewrite.h"
#include "http/route.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>

static void answer(struct slb_http_decision *d, int status, bool close)
{
    d->status = status;
    d->close = close;
}

/* The redirect keeps the request's path and query; an absolute-form target gives up its
 * authority, and a path it left empty gets its "/" (before the query, if any). */
static void redirect(struct slb_http_decision *d, const char *to, const struct slb_http_msg *m)
{
    struct slb_slice authority, path = m->target;
    const char *slash = "";
    if (slb_http_split_absolute(m->target, &authority, &path) && (!path.len || path.p[0] == '?'))
        slash = "/";
    snprintf(d->buf, sizeof(d->buf), "Location: %s%s%.*s\r\n", to, slash,
             (int)(path.len > 1000 ? 1000 : path.len), path.p);
    d->extra = d->buf;
    answer(d, 301, false);
}

static uint32_t mix32(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)h;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* A per-thread random number for picking among a rule's weighted groups (no lock, no call
 * into the kernel after the first). */
static uint32_t rand32(void)
{
    static _Thread_local uint64_t state;
    if (!state) {
        if (getrandom(&state, sizeof(state), 0) != (ssize_t)sizeof(state) || !state)
            state = (uint64_t)(uintptr_t)&state ^ 0x9e3779b97f4a7c15ull;
    }
    state += 0x9e3779b97f4a7c15ull;
    return mix32(state);
}

/* A hash of the client's address (not its port). */
static uint32_t client_key(const struct sockaddr_storage *client)
{
    uint64_t h = 0xcbf29ce484222325ull;
    if (client && client->ss_family == AF_INET)
        h = fnv1a(h, &((const struct sockaddr_in *)client)->sin_addr, 4);
    else if (client && client->ss_family == AF_INET6)
        h = fnv1a(h, &((const struct sockaddr_in6 *)client)->sin6_addr, 16);
    return mix32(h);
}

#define RETRY_AFTER "Retry-After: 1\r\n"

/* A request over a requests_per_s limit: 503 with Retry-After, counted on the listener (and
 * by the caller on the rule). The budget refills continuously, so a second is always enough. */
static bool over_limit(struct slb_http_decision *d, const struct slb_listener_rt *l,
                       const struct slb_wsnap *ws, struct slb_ratelimit *r, uint32_t rate)
{
    if (!rate)
        return false;
    int worker = ws->worker->id;
    if (slb_ratelimit_take(r, worker, rate, 1, NULL))
        return false;
    slb_count_add(&l->stats->w[worker].v[SLB_LIS_LIMITED_REQ], 1);
    d->limited = true;
    d->extra = RETRY_AFTER;
    answer(d, 503, false);
    return true;
}

/* The normalized path of a request; the longest request head of either protocol fits. */
#define PATH_BUF (64u * 1024u)

/* The forwarding rules: true when they decided (an answer, or the group in d->wg). */
static bool apply_rules(struct slb_http_decision *d, const struct slb_listener_rt *l,
                        struct slb_wsnap *ws, SSL *ssl, const struct sockaddr_storage *client,
                        const struct slb_http_msg *m)
{
    static _Thread_local char path_buf[PATH_BUF];
    if (m->target.len + 2 > sizeof(path_buf)) {
        answer(d, 414, true);
        return true;
    }
    struct slb_rule_req req;
    if (slb_rule_req_from_msg(&req, m, client, path_buf) != 0) {
        /* A path the normalizer refuses could mean one thing to a rule and another to the
         * backend: it goes nowhere. */
        answer(d, 400, false);
        return true;
    }
    const struct slb_rule *rule = slb_rules_match(l->rules, &req);
    if (!rule)
        return false;
    d->rule = rule;
    const struct slb_rule_cfg *rc = rule->cfg;
    struct slb_rule_rt *rrt = l->rule_stats ? l->rule_stats[rule->index] : NULL;
    if (rrt && over_limit(d, l, ws, rrt->req_rate, rc->requests_per_s)) {
        slb_count_add(&rrt->w[ws->worker->id].v[SLB_RULE_LIMITED], 1);
        return true;
    }
    switch (rc->action) {
    case SLB_RULE_FIXED:
        d->rule_answer = true;
        answer(d, rc->code, false);
        return true;
    case SLB_RULE_REDIRECT:
        if (slb_rule_location(rule, &req, ssl != NULL, d->buf, sizeof(d->buf)) < 0) {
            answer(d, 400, false); /* no Host to keep, or a Location too long */
            return true;
        }
        d->rule_answer = true;
        answer(d, rc->code, false);
        return true;
    case SLB_RULE_FORWARD:
        break;
    }
    struct slb_slice cookie = {0};
    const struct slb_group_rt *g = NULL;
    if (l->cfg->sticky != SLB_STICKY_NONE) {
        /* A sticky cookie naming a server of one of the targets keeps the client on that
         * group (and server); else the client's address picks the group, the same for all
         * its requests. */
        cookie = slb_http_cookie(m, l->cfg->sticky_cookie);
        for (size_t k = 0; cookie.len && !g && k < rc->nforward; k++)
            if (rc->forward[k].weight && slb_http_sticky_lookup(rule->groups[k], cookie) >= 0)
                g = rule->groups[k];
        if (!g)
            g = rule->groups[slb_rule_pick(rule, client_key(client))];
    } else {
        g = rule->groups[slb_rule_pick(rule, rand32())];
    }
    struct slb_wgroup *wg = slb_wsnap_group(ws, g);
    if (!wg || wg->g->nservers == 0) {
        answer(d, 503, false);
        return true;
    }
    d->wg = wg;
    d->sticky = cookie;
    return true;
}

void slb_http_decision_answer(struct slb_hbuf *out, const struct slb_http_decision *d,
                              bool keep_alive, bool head_only)
{
    if (!d->rule_answer) {
        if (d->text)
            slb_http_build_text(out, d->status, d->text, keep_alive, head_only);
        else
            slb_http_build_simple(out, d->status, d->extra, keep_alive, head_only);
        return;
    }
    const struct slb_rule_cfg *rc = d->rule->cfg;
    if (rc->action == SLB_RULE_FIXED)
        slb_rule_http1_response(out, rc->code, rc->content_type, rc->body, rc->body_len, NULL,
                                head_only, !keep_alive);
    else
        slb_rule_http1_response(out, rc->code, NULL, NULL, 0, d->buf, head_only, !keep_alive);
}

void slb_http_decide(struct slb_http_decision *d, const struct slb_listener_rt *l,
                     struct slb_wsnap *ws, struct slb_wgroup *wg, SSL *ssl,
                     const struct sockaddr_storage *client, const struct slb_http_msg *m)
{
    const struct slb_listener_cfg *cfg = l->cfg;
    d->status = 0;
    d->close = false;
    d->extra = NULL;
    d->text = NULL;
    d->wg = NULL;
    d->sticky = (struct slb_slice){0};
    d->rule = NULL;
    d->rule_answer = false;
    d->limited = false;
    if (m->method == SLB_HTTP_CONNECT) {
        /* A reverse proxy has no business opening tunnels to arbitrary places. */
        d->extra = SLB_HTTP_ALLOW;
        answer(d, 405, true);
        return;
    }
    /* HTTP/1.0 has no Expect (RFC 9110 10.1.1): ignored there. */
    if (m->version_minor == 1 && !m->expect_continue && slb_http_find_header(m, "expect", 0) >= 0) {
        answer(d, 417, true);
        return;
    }
    if ((d->text = slb_acme_http01_request(m)) != NULL) {
        answer(d, 200, false);
        return;
    }
    if (cfg->redirect_to[0]) {
        redirect(d, cfg->redirect_to, m);
        return;
    }
    if (slb_http_misdirected(ssl, m)) {
        answer(d, 421, false);
        return;
    }
    /* The listener's limit counts every request it takes from here on, whichever rule or
     * group handles it; a rule's own limit applies on top (in apply_rules). */
    if (over_limit(d, l, ws, cfg->requests_per_s ? l->stats->req_rate : NULL, cfg->requests_per_s))
        return;
    if (l->rules && apply_rules(d, l, ws, ssl, client, m))
        return;
    if (!wg || wg->g->nservers == 0) {
        answer(d, 503, false);
        return;
    }
    d->wg = wg;
    if (cfg->sticky != SLB_STICKY_NONE)
        d->sticky = slb_http_cookie(m, cfg->sticky_cookie);
}
