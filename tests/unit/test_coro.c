/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of coroutines: yield and resume, done on the caller's stack, deep stacks. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "event/coro.h"

#include <string.h>

struct trace {
    int steps[8];
    int n;
    int done;
    struct slb_coro *seen_inside;
};

static void steps_fn(void *arg)
{
    struct trace *t = arg;
    t->seen_inside = slb_coro_current();
    t->steps[t->n++] = 1;
    slb_coro_yield();
    t->steps[t->n++] = 2;
    slb_coro_yield();
    t->steps[t->n++] = 3;
}

static void done_cb(struct slb_coro *co, void *arg)
{
    struct trace *t = arg;
    t->done++;
    assert_null(slb_coro_current()); /* back on the caller's stack */
    assert_true(slb_coro_free(co));
}

static void test_yield_resume_done(void **state)
{
    struct trace t = {0};
    struct slb_coro *co = slb_coro_new(steps_fn, done_cb, &t);
    assert_non_null(co);
    assert_null(slb_coro_current());
    slb_coro_resume(co);
    assert_int_equal(t.n, 1);
    assert_ptr_equal(t.seen_inside, co);
    assert_null(slb_coro_current());
    /* Started and not finished: it cannot be freed. */
    assert_false(slb_coro_free(co));
    slb_coro_resume(co);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.done, 0);
    slb_coro_resume(co); /* finishes: done frees it */
    assert_int_equal(t.n, 3);
    assert_int_equal(t.done, 1);
    assert_int_equal(t.steps[0], 1);
    assert_int_equal(t.steps[2], 3);
}

/* Frames as deep as an operation's (OpenSSL, jansson, error buffers) fit the stack. */
static int deep(int n)
{
    volatile char buf[4096];
    memset((char *)buf, n, sizeof(buf));
    return n == 0 ? buf[0] : deep(n - 1) + buf[1];
}

static void deep_fn(void *arg)
{
    *(int *)arg = deep(100);
    slb_coro_yield();
    *(int *)arg += deep(100);
}

static void test_deep_stack(void **state)
{
    int r = -1;
    struct slb_coro *co = slb_coro_new(deep_fn, NULL, &r);
    assert_non_null(co);
    slb_coro_resume(co);
    assert_int_equal(r, 5050);
    slb_coro_resume(co);
    assert_int_equal(r, 10100);
    assert_true(slb_coro_free(co));
    /* Never started: free at once. */
    co = slb_coro_new(deep_fn, NULL, &r);
    assert_true(slb_coro_free(co));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_yield_resume_done),
        cmocka_unit_test(test_deep_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
