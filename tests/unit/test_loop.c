/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the event loop's timers and deferred frees, and of connection buffers. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "core/buf.h"
#include "event/loop.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fired[64];
static int nfired;

static void record_cb(struct slb_loop *loop, struct slb_timer *t)
{
    fired[nfired++] = (int)(intptr_t)t->data;
}

/* Drive the loop with a fake clock: timers run when now passes their deadline. */
static void advance(struct slb_loop *loop, uint64_t to_ms)
{
    while (loop->nheap > 0 && loop->heap[0]->deadline_ms <= to_ms) {
        loop->now_ms = loop->heap[0]->deadline_ms;
        struct slb_timer *t = loop->heap[0];
        slb_timer_stop(loop, t);
        t->cb(loop, t);
    }
    loop->now_ms = to_ms;
}

static void test_timers_fire_in_deadline_order(void **state)
{
    struct slb_loop loop;
    assert_int_equal(slb_loop_init(&loop), 0);
    loop.now_ms = 1000;
    nfired = 0;
    struct slb_timer t[40];
    /* Deadlines in a scrambled order. */
    for (int i = 0; i < 40; i++) {
        slb_timer_init(&t[i], record_cb, (void *)(intptr_t)i);
        slb_timer_start(&loop, &t[i], (uint64_t)((i * 17) % 40) * 10 + 10);
    }
    advance(&loop, 1000 + 10000);
    assert_int_equal(nfired, 40);
    for (int i = 1; i < 40; i++)
        assert_true((fired[i - 1] * 17) % 40 < (fired[i] * 17) % 40);
    slb_loop_deinit(&loop);
}

static void test_timer_stop_and_rearm(void **state)
{
    struct slb_loop loop;
    assert_int_equal(slb_loop_init(&loop), 0);
    loop.now_ms = 0;
    nfired = 0;
    struct slb_timer a, b, c;
    slb_timer_init(&a, record_cb, (void *)1);
    slb_timer_init(&b, record_cb, (void *)2);
    slb_timer_init(&c, record_cb, (void *)3);
    assert_false(slb_timer_active(&a));
    slb_timer_start(&loop, &a, 100);
    slb_timer_start(&loop, &b, 200);
    slb_timer_start(&loop, &c, 300);
    assert_true(slb_timer_active(&a));
    slb_timer_stop(&loop, &b);
    slb_timer_stop(&loop, &b);       /* stopping twice is harmless */
    slb_timer_start(&loop, &a, 400); /* re-arm later: now last */
    slb_timer_start(&loop, &c, 50);  /* re-arm earlier: now first */
    advance(&loop, 1000);
    assert_int_equal(nfired, 2);
    assert_int_equal(fired[0], 3);
    assert_int_equal(fired[1], 1);
    assert_false(slb_timer_active(&a));
    slb_loop_deinit(&loop);
}

static int freed;
static void count_free(void *p)
{
    freed++;
    free(p);
}

static void io_cb(struct slb_loop *loop, struct slb_io *io, uint32_t ev)
{
    char b[16];
    ssize_t n = read(io->fd, b, sizeof(b));
    (void)n;
    slb_io_set(loop, io, 0);
    slb_loop_defer_free(loop, count_free, malloc(8));
    /* Deferred frees wait for the end of the iteration. */
    assert_int_equal(freed, 0);
}

static void test_io_and_deferred_free(void **state)
{
    struct slb_loop loop;
    assert_int_equal(slb_loop_init(&loop), 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct slb_io io;
    slb_io_init(&io, sv[0], io_cb, NULL);
    assert_int_equal(slb_io_set(&loop, &io, EPOLLIN), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    freed = 0;
    assert_int_equal(slb_loop_once(&loop, 1000), 0);
    assert_int_equal(freed, 1);
    assert_int_equal(io.events, 0u);
    close(sv[0]);
    close(sv[1]);
    slb_loop_deinit(&loop);
}

/* Two sockets readable in one batch: whichever callback runs first sees the other one's
 * event still pending, and no callback sees its own. */
static struct slb_io pend_io[2];
static int pend_seen[2], pend_own;

static void pending_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    int me = io == &pend_io[1];
    char b[8];
    ssize_t n = read(io->fd, b, sizeof(b));
    (void)n;
    pend_own += slb_io_pending(io);
    pend_seen[me] = slb_io_pending(&pend_io[!me]) ? 1 : 2;
    /* The pending mark is not part of the interest set: no epoll_ctl for it. */
    assert_int_equal(slb_io_set(loop, io, EPOLLIN), 0);
    assert_int_equal(io->events, (uint32_t)EPOLLIN);
}

static void test_io_pending_within_a_batch(void **state)
{
    struct slb_loop loop;
    assert_int_equal(slb_loop_init(&loop), 0);
    int a[2], b[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
    slb_io_init(&pend_io[0], a[0], pending_cb, NULL);
    slb_io_init(&pend_io[1], b[0], pending_cb, NULL);
    assert_int_equal(slb_io_set(&loop, &pend_io[0], EPOLLIN), 0);
    assert_int_equal(slb_io_set(&loop, &pend_io[1], EPOLLIN), 0);
    assert_int_equal(write(a[1], "x", 1), 1);
    assert_int_equal(write(b[1], "y", 1), 1);
    pend_own = 0;
    assert_int_equal(slb_loop_once(&loop, 1000), 0);
    /* One ran first and saw the other pending (1); the second saw nothing pending (2). */
    assert_int_equal(pend_seen[0] + pend_seen[1], 3);
    assert_int_equal(pend_own, 0);
    assert_false(slb_io_pending(&pend_io[0]) || slb_io_pending(&pend_io[1]));
    /* Nothing readable: nothing pending in the next batch. */
    pend_seen[0] = pend_seen[1] = 0;
    assert_int_equal(slb_loop_once(&loop, 10), 0);
    assert_int_equal(pend_seen[0] + pend_seen[1], 0);
    for (int i = 0; i < 2; i++) {
        close(a[i]);
        close(b[i]);
    }
    slb_loop_deinit(&loop);
}

static void test_buf_lifecycle(void **state)
{
    struct slb_buf b = {0};
    assert_true(slb_buf_empty(&b));
    assert_int_equal(slb_buf_space(&b), SLB_BUF_SIZE);
    assert_int_equal(slb_buf_prepare(&b), 0);
    assert_non_null(b.data);
    memset(b.data, 'a', SLB_BUF_SIZE);
    b.len = SLB_BUF_SIZE;
    assert_int_equal(slb_buf_space(&b), 0);
    slb_buf_consume(&b, 100);
    assert_int_equal(b.off, 100);
    /* Full at the end with room at the front: prepare moves the data down. */
    assert_int_equal(slb_buf_prepare(&b), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, SLB_BUF_SIZE - 100);
    assert_int_equal(slb_buf_space(&b), 100);
    slb_buf_consume(&b, b.len);
    /* Drained buffers give their block back: idle connections hold none. */
    assert_null(b.data);
    slb_block_cache_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_timers_fire_in_deadline_order),
        cmocka_unit_test(test_timer_stop_and_rearm),
        cmocka_unit_test(test_io_and_deferred_free),
        cmocka_unit_test(test_io_pending_within_a_batch),
        cmocka_unit_test(test_buf_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
