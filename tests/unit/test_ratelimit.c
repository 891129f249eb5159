/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the shared rate limit (core/ratelimit.c). */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "core/ratelimit.h"

#include <time.h>

/* The budget holds a tenth of a second's worth: 10 at 100/s, shared by the workers. */
static void test_burst_shared_by_workers(void **state)
{
    (void)state;
    struct slb_ratelimit *r = slb_ratelimit_new(2);
    assert_non_null(r);
    unsigned granted = 0;
    for (int i = 0; i < 40; i++)
        granted += (unsigned)slb_ratelimit_take(r, i % 2, 100, 1, NULL);
    assert_int_equal(granted, 10);
    uint64_t wait = 0;
    assert_int_equal(slb_ratelimit_take(r, 0, 100, 1, &wait), 0);
    assert_true(wait > 0 && wait <= 10000000); /* one token: 10 ms at 100/s */
    slb_ratelimit_free(r);
}

/* After the budget ran dry it refills at the rate: about rate * t over t. */
static void test_refill_at_rate(void **state)
{
    (void)state;
    struct slb_ratelimit *r = slb_ratelimit_new(1);
    while (slb_ratelimit_take(r, 0, 1000, 1, NULL))
        ;
    struct timespec t0, t1, pause = {0, 200000000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    nanosleep(&pause, NULL);
    unsigned granted = 0;
    while (slb_ratelimit_take(r, 0, 1000, 1, NULL))
        granted++;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* the refill is capped at the budget: 100 at 1000/s */
    assert_true(granted >= 95 && granted <= 101);
    assert_true(s >= 0.2);
    slb_ratelimit_free(r);
}

/* Byte budgets: a large want is granted in part, never beyond the budget. */
static void test_partial_grants(void **state)
{
    (void)state;
    struct slb_ratelimit *r = slb_ratelimit_new(1);
    uint64_t got = slb_ratelimit_take(r, 0, 1000000, 500000, NULL);
    assert_true(got > 0 && got <= 100000);
    slb_ratelimit_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_shared_by_workers),
        cmocka_unit_test(test_refill_at_rate),
        cmocka_unit_test(test_partial_grants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
