/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for admin authentication (src/admin/auth.c): the scope each request needs, the
 * root token, and the failed-authentication window per source, with the clock given. */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "admin/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROOT "0123456789abcdef0123456789abcdef"

static void test_needed_scopes(void **state)
{
    (void)state;
    assert_int_equal(slb_auth_needed("GET", "/v1/keys"), SLB_SCOPE_READ);
    assert_int_equal(slb_auth_needed("HEAD", "/metrics"), SLB_SCOPE_READ);
    assert_int_equal(slb_auth_needed("PUT", "/v1/certificates/c1/crl"), SLB_SCOPE_CERTIFICATES);
    assert_int_equal(slb_auth_needed("POST", "/v1/certificates"), SLB_SCOPE_CERTIFICATES);
    assert_int_equal(slb_auth_needed("PATCH", "/v1/groups/g/servers/[::1]:80"), SLB_SCOPE_OPERATOR);
    assert_int_equal(slb_auth_needed("DELETE", "/v1/listeners/web"), SLB_SCOPE_OPERATOR);
    /* A prefix is a whole segment: /v1/groupsX is not a group. */
    assert_int_equal(slb_auth_needed("POST", "/v1/groupsX"), SLB_SCOPE_ADMIN);
    assert_int_equal(slb_auth_needed("POST", "/v1/certificatesX"), SLB_SCOPE_ADMIN);
    assert_int_equal(slb_auth_needed("PATCH", "/v1/settings"), SLB_SCOPE_ADMIN);
    assert_int_equal(slb_auth_needed("POST", "/v1/apply"), SLB_SCOPE_ADMIN);
    assert_int_equal(slb_auth_needed("DELETE", "/v1/keys/a"), SLB_SCOPE_ADMIN);
    assert_string_equal(slb_scope_name(SLB_SCOPE_CERTIFICATES), "certificates");
}

static void test_forbidden_names_the_scope(void **state)
{
    (void)state;
    struct slb_auth_who who = {.name = "ci", .scope = SLB_SCOPE_CERTIFICATES};
    struct slb_admin_resp resp = {0};
    assert_true(slb_auth_allowed(&who, SLB_SCOPE_READ, &resp));
    assert_true(slb_auth_allowed(&who, SLB_SCOPE_CERTIFICATES, &resp));
    assert_false(slb_auth_allowed(&who, SLB_SCOPE_OPERATOR, &resp));
    assert_int_equal(resp.status, 403);
    json_t *e = json_object_get(resp.json, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "forbidden");
    assert_string_equal(json_string_value(json_object_get(e, "scope")), "operator");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "\"ci\""));
    json_decref(resp.json);
}

static enum slb_auth_result check(struct slb_auth *a, const char *header, const char *src,
                                  uint64_t now, unsigned *retry)
{
    struct slb_auth_who who;
    return slb_auth_check(a, header, header ? strlen(header) : 0, src, now, &who, retry);
}

static void test_root_token_and_failure_window(void **state)
{
    (void)state;
    char dir[] = "/tmp/slb-test-auth-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct slb_err err = {0};
    struct slb_auth *a = slb_auth_new(dir, ROOT, 3, &err);
    assert_non_null(a);
    struct slb_auth_who who;
    unsigned retry = 0;
    const char *good = "Bearer " ROOT;
    assert_int_equal(slb_auth_check(a, good, strlen(good), "10.0.0.1", 1000, &who, &retry),
                     SLB_AUTH_OK);
    assert_string_equal(who.name, "root");
    assert_int_equal(who.scope, SLB_SCOPE_ADMIN);
    /* Case-insensitive scheme; a prefix or an extension of the token is wrong. */
    assert_int_equal(check(a, "bearer " ROOT, "s", 1000, &retry), SLB_AUTH_OK);
    /* No credentials: refused, never counted. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(check(a, NULL, "10.0.0.1", 1000, &retry), SLB_AUTH_BAD);
    assert_int_equal(check(a, "Bearer " ROOT "x", "10.0.0.1", 1000, &retry), SLB_AUTH_BAD);
    assert_int_equal(check(a, "Bearer 0123", "10.0.0.1", 2000, &retry), SLB_AUTH_BAD);
    assert_int_equal(check(a, "Basic " ROOT, "10.0.0.1", 3000, &retry), SLB_AUTH_BAD);
    /* Three failures in the window: refused until it ends, right token or not. */
    assert_int_equal(check(a, good, "10.0.0.1", 4000, &retry), SLB_AUTH_LIMITED);
    assert_int_equal(retry, 57);
    assert_int_equal(check(a, good, "10.0.0.2", 4000, &retry), SLB_AUTH_OK);
    assert_int_equal(check(a, good, "10.0.0.1", 1000 + SLB_AUTH_FAIL_WINDOW_MS - 1, &retry),
                     SLB_AUTH_LIMITED);
    assert_int_equal(retry, 1);
    assert_int_equal(check(a, good, "10.0.0.1", 1000 + SLB_AUTH_FAIL_WINDOW_MS, &retry),
                     SLB_AUTH_OK);
    slb_auth_free(a);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needed_scopes),
        cmocka_unit_test(test_forbidden_names_the_scope),
        cmocka_unit_test(test_root_token_and_failure_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
