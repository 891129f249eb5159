/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the exchange steps both client protocols share (http/xchg.c): counters and
 * the request timeout. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "http/xchg.h"

#include <string.h>

static uint64_t get(struct slb_wcount *w, int i)
{
    return atomic_load(&w->v[i]);
}

static void test_count_status_and_undo(void **state)
{
    static struct slb_wcount lis;
    memset(&lis, 0, sizeof(lis));
    slb_xchg_count_status(&lis, 503, 1);
    slb_xchg_count_status(&lis, 200, 1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 2);
    assert_int_equal(get(&lis, SLB_LIS_REQ_1XX + 4), 1);
    assert_int_equal(get(&lis, SLB_LIS_REQ_1XX + 1), 1);
    /* A backend's head replaced by our error before it went out is taken back. */
    slb_xchg_count_status(&lis, 200, -1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 1);
    assert_int_equal(get(&lis, SLB_LIS_REQ_1XX + 1), 0);
    /* A status outside the classes counts as a request only. */
    slb_xchg_count_status(&lis, 99, 1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 2);
}

static void test_count_head(void **state)
{
    static struct slb_wcount lis, srv;
    memset(&lis, 0, sizeof(lis));
    memset(&srv, 0, sizeof(srv));
    uint64_t sent = 0;
    slb_xchg_count_head(&lis, &srv, 502, &sent);
    slb_xchg_count_head(&lis, &srv, 204, &sent);
    assert_int_equal(get(&srv, SLB_SRV_REQS), 2);
    assert_int_equal(get(&srv, SLB_SRV_FAILS), 1);
    assert_int_equal(get(&lis, SLB_LIS_REQS), 2);
    sent = 1;
    slb_xchg_count_head(&lis, &srv, 200, &sent);
    assert_int_equal(sent, 0); /* observed once */
}

static void test_request_timeout(void **state)
{
    struct slb_listener_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.request_timeout_s = 30;
    uint64_t deadline = 0;
    /* The fixed deadline starts at the first arming and is not pushed back by later ones. */
    assert_int_equal(slb_xchg_deadline_in(&cfg, &deadline, 1000), 30000);
    assert_int_equal(deadline, 31000);
    assert_int_equal(slb_xchg_deadline_in(&cfg, &deadline, 21000), 10000);
    assert_int_equal(slb_xchg_deadline_in(&cfg, &deadline, 40000), 0);
    /* Until the request is sent and the head is here the deadline holds; then inactivity. */
    assert_int_equal(slb_xchg_due(&cfg, true, deadline, 35000), 31000);
    assert_int_equal(slb_xchg_due(&cfg, false, deadline, 35000), 65000);
    assert_string_equal(slb_xchg_timeout_why(true, false), "response timeout");
    assert_string_equal(slb_xchg_timeout_why(false, true), "request body timeout");
    assert_string_equal(slb_xchg_timeout_why(true, true), "response body stalled");
}

static void test_fresh_only(void **state)
{
    struct slb_listener_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.backend_reuse = SLB_REUSE_SAFE;
    assert_true(slb_xchg_fresh_only(&cfg, false));
    assert_false(slb_xchg_fresh_only(&cfg, true));
    cfg.backend_reuse = SLB_REUSE_ALWAYS;
    assert_false(slb_xchg_fresh_only(&cfg, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_status_and_undo),
        cmocka_unit_test(test_count_head),
        cmocka_unit_test(test_request_timeout),
        cmocka_unit_test(test_fresh_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
