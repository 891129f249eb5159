/* SPDX-License-Identifier: Apache-2.0 */
/* Cost of one forwarding-rule lookup (src/http/rules.c) for listeners of 10 and 1,000 rules:
 * prints nanoseconds per lookup for requests that hit rules filed under an exact host, a path
 * prefix, an exact path and a wildcard host, and for a request no rule takes (which visits
 * every index it could be in, and the rules that every request visits). Also the cost of
 * normalizing the path. Single thread, no I/O: `make bench-rules`. On a busy machine count
 * instructions instead of time, one figure at a time:
 *   valgrind --tool=callgrind --toggle-collect=slb_rules_match build/rules-bench 10000 */
#include "config/validate.h"
#include "http/normalize.h"
#include "http/rules.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void *resolve(void *arg, const char *name)
{
    return (void *)name;
}

static bool no_header(const void *arg, const char *name, size_t i, struct slb_slice *v)
{
    if (i == 0 && strcmp(name, "user-agent") == 0) {
        v->p = "Mozilla/5.0 (X11; Linux x86_64)";
        v->len = strlen(v->p);
        return true;
    }
    return false;
}

/* n rules, a quarter of each kind, then two rules every request visits (a method and a header
 * regex), and a catch-all that is never reached by the misses because of its host. */
static json_t *rules_json(int n)
{
    json_t *list = json_array();
    for (int i = 0; i < n - 2; i++) {
        char name[32], a[64], b[64];
        snprintf(name, sizeof(name), "r%d", i);
        json_t *match;
        switch (i % 4) {
        case 0:
            snprintf(a, sizeof(a), "svc%d.example.com", i);
            match = json_pack("{s:s,s:s}", "host", a, "path_prefix", "/api/");
            break;
        case 1:
            snprintf(a, sizeof(a), "/p%d/", i);
            match = json_pack("{s:s}", "path_prefix", a);
            break;
        case 2:
            snprintf(a, sizeof(a), "/exact/%d", i);
            match = json_pack("{s:s}", "path", a);
            break;
        default:
            snprintf(b, sizeof(b), "*.zone%d.example.net", i);
            match = json_pack("{s:s}", "host", b);
            break;
        }
        json_array_append_new(list, json_pack("{s:s,s:o,s:{s:s}}", "name", name, "match", match,
                                              "action", "forward", "g"));
    }
    json_array_append_new(list, json_pack("{s:s,s:{s:[s]},s:{s:s}}", "name", "purge", "match",
                                          "methods", "PURGE", "action", "forward", "g"));
    json_array_append_new(list, json_pack("{s:s,s:{s:{s:{s:s}}},s:{s:s}}", "name", "bot", "match",
                                          "headers", "user-agent", "regex", "(?i)bot|crawler",
                                          "action", "forward", "g"));
    return list;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* argv[1]: lookups per figure (default 2,000,000; fewer under callgrind); argv[2], "N:R":
 * only the figure of N rules and request R (0..4). */
int main(int argc, char **argv)
{
    const int sizes[] = {10, 1000};
    const long iters = argc > 1 ? atol(argv[1]) : 2000000;
    int only_n = -1, only_r = -1;
    if (argc > 2 && sscanf(argv[2], "%d:%d", &only_n, &only_r) != 2)
        return 2;
    printf("%-6s %-22s %10s\n", "rules", "request", "ns/lookup");
    for (size_t s = 0; s < 2; s++) {
        int n = sizes[s];
        json_t *l = json_pack("{s:s,s:s,s:s,s:s,s:o}", "name", "l", "protocol", "http", "bind",
                              "*:80", "backend_group", "g", "rules", rules_json(n));
        struct slb_listener_cfg cfg;
        json_t *norm;
        struct slb_err err;
        if (slb_cv_listener(l, "", &cfg, &norm, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        struct slb_rules *rules = slb_rules_build(cfg.rules, cfg.nrules, resolve, NULL, &err);
        if (!rules) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        /* Rules near the end of the list, so a scan in order would pay for all before them. */
        char host[64], path[64], whost[64], ppath[64], epath[64];
        int last = n - 3;
        snprintf(host, sizeof(host), "svc%d.example.com", last - (last % 4));
        snprintf(ppath, sizeof(ppath), "/p%d/items/42", last - ((last + 3) % 4));
        snprintf(epath, sizeof(epath), "/exact/%d", last - ((last + 2) % 4));
        snprintf(whost, sizeof(whost), "www.zone%d.example.net", last - ((last + 1) % 4));
        snprintf(path, sizeof(path), "/api/v1/users");
        struct {
            const char *what, *host, *path;
        } reqs[] = {
            {"exact host + prefix", host, path},
            {"path prefix", "www.example.org", ppath},
            {"exact path", "www.example.org", epath},
            {"wildcard host", whost, "/"},
            {"no rule (miss)", "www.example.org", "/static/app.js"},
        };
        for (size_t r = 0; r < sizeof(reqs) / sizeof(reqs[0]); r++) {
            if (only_n >= 0 && (only_n != n || only_r != (int)r))
                continue;
            struct slb_rule_req req = {
                .method = {"GET", 3},
                .host = {reqs[r].host, strlen(reqs[r].host)},
                .path = {reqs[r].path, strlen(reqs[r].path)},
                .header = no_header,
            };
            const struct slb_rule *hit = slb_rules_match(rules, &req);
            if ((r < 4) != (hit != NULL)) {
                fprintf(stderr, "unexpected %s for %s\n", hit ? hit->cfg->name : "miss",
                        reqs[r].what);
                return 1;
            }
            double t0 = now_ns();
            size_t sink = 0;
            for (long i = 0; i < iters; i++)
                sink += (size_t)slb_rules_match(rules, &req);
            double dt = now_ns() - t0;
            printf("%-6d %-22s %10.1f%s\n", n, reqs[r].what, dt / iters, sink == 1 ? " " : "");
        }
        slb_rules_free(rules);
        slb_cv_listener_deinit(&cfg);
        json_decref(norm);
        json_decref(l);
    }
    const char *raw = "/static/js/../css/%61pp.%63ss";
    char out[64];
    size_t len, sink = 0;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        slb_path_normalize(raw, strlen(raw), out, &len);
        sink += len;
    }
    printf("normalize \"%s\": %.1f ns%s\n", raw, (now_ns() - t0) / iters, sink == 1 ? " " : "");
    return 0;
}
