/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the published ACME challenge answers: http-01 lookups by exact token under the
 * well-known prefix, tls-alpn-01 lookups by domain, the ALPN list check, and retired tables
 * staying readable for the grace period. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "acme/challenge.h"
#include "acme/jws.h"

#include <openssl/x509v3.h>
#include <string.h>

static const char *answer(const char *path)
{
    return slb_acme_http01_answer(path, strlen(path));
}

static void test_http01(void **state)
{
    assert_null(answer("/.well-known/acme-challenge/tok1"));
    struct slb_acme_challenges *t = slb_acme_challenges_new();
    assert_int_equal(slb_acme_challenges_add_http01(t, "tok1", "tok1.thumb"), 0);
    assert_int_equal(slb_acme_challenges_add_http01(t, "tok2", "tok2.thumb"), 0);
    slb_acme_challenges_publish(t, 1000);
    assert_string_equal(answer("/.well-known/acme-challenge/tok1"), "tok1.thumb");
    assert_string_equal(answer("/.well-known/acme-challenge/tok2"), "tok2.thumb");
    /* Exact tokens only, under the exact prefix. */
    assert_null(answer("/.well-known/acme-challenge/tok"));
    assert_null(answer("/.well-known/acme-challenge/tok12"));
    assert_null(answer("/.well-known/acme-challenge/"));
    assert_null(answer("/.well-known/acme-challengetok1"));
    assert_null(answer("/tok1"));
    /* A new table replaces it; the old answer pointer stays valid through the grace period. */
    const char *old = answer("/.well-known/acme-challenge/tok1");
    slb_acme_challenges_publish(NULL, 2000);
    assert_null(answer("/.well-known/acme-challenge/tok1"));
    slb_acme_challenges_reap(2500, false);
    assert_string_equal(old, "tok1.thumb");
    slb_acme_challenges_reap(UINT64_MAX / 2, false);
    slb_acme_challenges_reap(0, true);
}

static void test_alpn(void **state)
{
    X509 *x, *got;
    EVP_PKEY *k, *gotk;
    assert_int_equal(slb_acme_alpn_cert("a.test", "t.k", &x, &k), 0);
    struct slb_acme_challenges *t = slb_acme_challenges_new();
    assert_int_equal(slb_acme_challenges_add_alpn(t, "a.test", x, k), 0);
    X509_free(x); /* the table holds its own references */
    EVP_PKEY_free(k);
    assert_false(slb_acme_alpn_lookup("a.test", 6, &got, &gotk));
    slb_acme_challenges_publish(t, 0);
    assert_true(slb_acme_alpn_lookup("A.Test", 6, &got, &gotk));
    assert_int_equal(X509_check_host(got, "a.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_private_key(got, gotk), 1);
    assert_false(slb_acme_alpn_lookup("b.test", 6, &got, &gotk));
    assert_false(slb_acme_alpn_lookup("a.tes", 5, &got, &gotk));
    slb_acme_challenges_reap(0, true);
    assert_false(slb_acme_alpn_lookup("a.test", 6, &got, &gotk));

    const unsigned char both[] = "\x02h2\x0a"
                                 "acme-tls/1";
    const unsigned char h2[] = "\x02h2\x08http/1.1";
    const unsigned char bad[] = "\x0b"
                                "acme-tls/1";
    assert_true(slb_acme_alpn_offered(both, sizeof(both) - 1));
    assert_false(slb_acme_alpn_offered(h2, sizeof(h2) - 1));
    assert_false(slb_acme_alpn_offered(bad, sizeof(bad) - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http01),
        cmocka_unit_test(test_alpn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
