/* SPDX-License-Identifier: Apache-2.0 */
/* Forwarding rules of an http/https listener, compiled once when a configuration snapshot is
 * built: regular expressions with JIT, exact hosts and paths in hash tables, wildcard hosts in
 * a suffix table and path prefixes in a byte trie. A request only visits the rules filed under
 * its own host, path and prefixes (plus the rules with none of those), in configuration order,
 * so 1,000 rules cost about what 10 do. Pure: no I/O, no allocation per request.
 *
 * Ownership: struct slb_rules is immutable once built, owned by the snapshot's listener and
 * freed with it; the struct slb_rule_cfg it points into is the snapshot's configuration. */
#ifndef SLB_HTTP_RULES_H
#define SLB_HTTP_RULES_H

#include "config/config.h"
#include "core/err.h"
#include "http/parser.h"
#include "http/rewrite.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct slb_rules;

/* One compiled rule. */
struct slb_rule {
    const struct slb_rule_cfg *cfg;
    size_t index;          /* in the listener's list */
    void **groups;         /* per forward target: what the resolver returned */
    uint32_t total_weight; /* of the forward targets */
    void *path_re;         /* pcre2_code, JIT-compiled */
    void **header_re;      /* per header condition: pcre2_code or NULL when exact */
};

/* The facts about a request that rules look at; slices borrow the request's head. */
struct slb_rule_req {
    struct slb_slice method;
    struct slb_slice host;  /* Host or :authority as received: case and port are ignored */
    struct slb_slice path;  /* normalized by slb_path_normalize */
    struct slb_slice query; /* after '?' as received; empty when none */
    const struct sockaddr_storage *source; /* the client; NULL matches no "source" */
    /* The i-th value of the header named name (lower-case), false past the last. */
    bool (*header)(const void *arg, const char *name, size_t i, struct slb_slice *value);
    const void *header_arg;
};

/* The request facts of a parsed HTTP/1.x request head (an HTTP/2 stream's once translated):
 * method, host (an absolute-form target's authority wins over Host), query, a header accessor
 * over msg, the client address; the path is normalized into path_buf, which has room for
 * msg->target.len + 2 bytes. The "*" and authority (CONNECT) forms have an empty path, which
 * no path condition matches. SLB_EINVAL when the path is refused (answer 400). req borrows
 * msg, path_buf and source. */
int slb_rule_req_from_msg(struct slb_rule_req *req, const struct slb_http_msg *msg,
                          const struct sockaddr_storage *source, char *path_buf);
/* The header accessor slb_rule_req_from_msg installs (arg: the struct slb_http_msg). */
bool slb_rule_msg_header(const void *arg, const char *name, size_t i, struct slb_slice *value);

/* Compile n rules. resolve maps a forward target's group name to the caller's object (a
 * struct slb_group_rt in a snapshot); NULL from it is an error (unknown_group). Returns NULL
 * with err set on failure (a pattern PCRE2 refuses, out of memory). */
struct slb_rules *slb_rules_build(const struct slb_rule_cfg *rules, size_t n,
                                  void *(*resolve)(void *arg, const char *group), void *arg,
                                  struct slb_err *err);
void slb_rules_free(struct slb_rules *rules);
size_t slb_rules_count(const struct slb_rules *rules);

/* The first rule whose conditions all hold, or NULL (then the listener's backend_group
 * serves). Thread-safe: rules are read-only, regex match data are per thread. */
const struct slb_rule *slb_rules_match(const struct slb_rules *rules,
                                       const struct slb_rule_req *req);

/* Whether every condition of rule holds for req, without the indexes: the reference the
 * lookup must agree with (tests, fuzzing). */
bool slb_rule_holds(const struct slb_rules *rules, const struct slb_rule *rule,
                    const struct slb_rule_req *req);
/* The rule at index i (0 <= i < slb_rules_count). */
const struct slb_rule *slb_rules_get(const struct slb_rules *rules, size_t i);

/* Which forward target serves a request: deterministic in x (a random number, or a hash of the
 * client for sticky sessions), in proportion to the weights. Returns the target's index. */
size_t slb_rule_pick(const struct slb_rule *rule, uint32_t x);

/* Whether a forward rule takes the request header name out of what goes to the backend: it
 * is removed, or set (the rule's value replaces every occurrence; the caller then adds
 * cfg->set_headers). Names compare case-insensitively. */
bool slb_rule_drops_header(const struct slb_rule *rule, struct slb_slice name);

/* The Location of a redirect rule: the rule's scheme, host, port, path and query where set,
 * the request's otherwise (its scheme is https when tls). The request's port is kept only when
 * neither scheme nor host changes; a port that is the scheme's default is left out. A set path
 * replaces the whole path; a set query "" drops the request's. Writes a NUL-terminated URL;
 * returns its length, or SLB_EINVAL when the request has no host to keep or out is too small. */
int slb_rule_location(const struct slb_rule *rule, const struct slb_rule_req *req, bool tls,
                      char *out, size_t size);

/* An HTTP/1.1 response slbd answers itself (fixed_response, or a redirect with its Location):
 * status line, Content-Type, Content-Length, Location when given, Connection: close when
 * close, then the body unless head_only (a HEAD request). */
void slb_rule_http1_response(struct slb_hbuf *out, unsigned code, const char *content_type,
                             const char *body, size_t body_len, const char *location,
                             bool head_only, bool close);

#endif
