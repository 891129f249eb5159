/* SPDX-License-Identifier: Apache-2.0 */
/* Who may use the admin API: the root token, scoped API keys stored hashed in keys.json, the
 * scope each request needs, and the per-source limit on failed authentications. */
#ifndef SLB_ADMIN_AUTH_H
#define SLB_ADMIN_AUTH_H

#include "admin/admin.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Scopes, each including those below it: read < certificates < operator < admin. */
enum slb_scope {
    SLB_SCOPE_NONE = 0,
    SLB_SCOPE_READ,
    SLB_SCOPE_CERTIFICATES,
    SLB_SCOPE_OPERATOR,
    SLB_SCOPE_ADMIN,
};

#define SLB_AUTH_KEYS_FILE "keys.json"
#define SLB_AUTH_NAME_SIZE 64
/* A source is refused (429) for the rest of a window after this many failures in it (the
 * default of --admin-auth-failures). */
#define SLB_AUTH_FAIL_MAX 10
#define SLB_AUTH_FAIL_WINDOW_MS 60000

/* The caller of one request: the root token is "root" with the admin scope. */
struct slb_auth_who {
    char name[SLB_AUTH_NAME_SIZE];
    enum slb_scope scope;
};

struct slb_auth;

/* Load DIR/keys.json (missing: no keys; it must be private like admin.token). root_token is
 * borrowed and outlives the struct; max_failures per source and minute (0: unlimited). */
struct slb_auth *slb_auth_new(const char *state_dir, const char *root_token, unsigned max_failures,
                              struct slb_err *err);
void slb_auth_free(struct slb_auth *a);

enum slb_auth_result { SLB_AUTH_OK, SLB_AUTH_BAD, SLB_AUTH_LIMITED };
/* Check an Authorization header value (NULL when absent) from source (an address text);
 * constant time in the secret. SLB_AUTH_BAD counts against the source (unless no
 * credentials were sent at all: that is no guess); SLB_AUTH_LIMITED means
 * the source failed too often and must wait *retry_after seconds (nothing was checked). */
enum slb_auth_result slb_auth_check(struct slb_auth *a, const char *authz, size_t len,
                                    const char *source, uint64_t now_ms, struct slb_auth_who *who,
                                    unsigned *retry_after);

/* The scope a request needs (read for reads; see docs/api.md for writes). */
enum slb_scope slb_auth_needed(const char *method, const char *path);
const char *slb_scope_name(enum slb_scope s);
/* False with resp filled (403 forbidden, naming the scope missing) when who lacks need. */
bool slb_auth_allowed(const struct slb_auth_who *who, enum slb_scope need,
                      struct slb_admin_resp *resp);

/* /v1/keys and /v1/keys/{name}: true when path is theirs (resp then answered). */
bool slb_auth_route(struct slb_auth *a, const struct slb_auth_who *who,
                    const struct slb_admin_req *req, struct slb_admin_resp *resp);

#endif
