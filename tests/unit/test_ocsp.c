/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the OCSP staple slot of a certificate version (cert/ocsp.c): publishing
 * retires the previous staple, which is freed only after the grace period; freeing the
 * certificate frees everything. Response verification is covered end to end (test_ocsp.py). */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "cert/ocsp.h"
#include "cert/store.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static struct slb_ocsp_staple *staple(int64_t next_update)
{
    struct slb_ocsp_staple *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->der = malloc(4);
    memcpy(s->der, "\x30\x02\x0a\x00", 4);
    s->len = 4;
    s->this_update = 1;
    s->next_update = next_update;
    return s;
}

static size_t retired(const struct slb_cert *c)
{
    size_t n = 0;
    for (const struct slb_ocsp_staple *s = c->staple_retired; s; s = s->next)
        n++;
    return n;
}

static void test_publish_retires_and_reclaims_after_grace(void **state)
{
    (void)state;
    struct slb_cert *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    struct slb_ocsp_staple *a = staple(100), *b = staple(200);
    slb_ocsp_publish(c, a, 1000);
    assert_ptr_equal(atomic_load(&c->staple), a);
    assert_int_equal(retired(c), 0);
    slb_ocsp_publish(c, b, 2000);
    assert_ptr_equal(atomic_load(&c->staple), b);
    assert_int_equal(retired(c), 1);
    /* A worker may still be copying a: kept for the grace period. */
    slb_ocsp_reclaim(c, 2000 + 59999);
    assert_int_equal(retired(c), 1);
    slb_ocsp_reclaim(c, 2000 + 60000);
    assert_int_equal(retired(c), 0);
    /* Stopping stapling retires too. */
    slb_ocsp_publish(c, NULL, 3000);
    assert_null(atomic_load(&c->staple));
    assert_int_equal(retired(c), 1);
    slb_ocsp_publish(c, staple(300), 3001);
    slb_ocsp_cert_free(c); /* the staple and the retired list; ASan checks nothing leaks */
    free(c);
}

static void test_verify_needs_the_issuer(void **state)
{
    (void)state;
    struct slb_cert *c = calloc(1, sizeof(*c));
    struct slb_err err = {0};
    assert_null(slb_ocsp_verify(c, (const unsigned char *)"\x30\x00", 2, 0, &err));
    assert_string_equal(err.code, "invalid_ocsp_response");
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_retires_and_reclaims_after_grace),
        cmocka_unit_test(test_verify_needs_the_issuer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
