/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the hand-over wire (src/net/handover.c): messages with descriptors over a
 * SOCK_SEQPACKET pair, the new side's request against a scripted old side, and a refusal. */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "net/handover.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Two descriptors travel with a message and arrive as new descriptors of the same files. */
static void test_send_recv_fds(void **state)
{
    int sp[2], p[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
    assert_int_equal(pipe(p), 0);
    assert_int_equal(slb_handover_send(sp[0], "listen 127.0.0.1:80 web", p, 2), 0);
    char msg[SLB_HANDOVER_MSG];
    int fds[4], n = 0;
    assert_int_equal(slb_handover_recv(sp[1], msg, sizeof(msg), fds, &n, 4), 23);
    assert_string_equal(msg, "listen 127.0.0.1:80 web");
    assert_int_equal(n, 2);
    assert_int_equal(write(fds[1], "x", 1), 1);
    char c = 0;
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'x');
    assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    for (int i = 0; i < 2; i++) {
        close(fds[i]);
        close(p[i]);
    }
    /* More descriptors than the receiver takes: none is kept, the message is refused. */
    assert_int_equal(pipe(p), 0);
    assert_int_equal(slb_handover_send(sp[0], "listen x", p, 2), 0);
    assert_int_equal(slb_handover_recv(sp[1], msg, sizeof(msg), fds, &n, 1), SLB_EPROTO);
    assert_int_equal(n, 0);
    close(p[0]);
    close(p[1]);
    /* The peer's end. */
    close(sp[0]);
    assert_int_equal(slb_handover_recv(sp[1], msg, sizeof(msg), fds, &n, 4), 0);
    close(sp[1]);
}

struct old_side {
    int lfd;
    const char *answer; /* "busy", "refused WHY", or NULL: the sockets */
    char got[SLB_HANDOVER_MSG];
};

/* A scripted old process: answers one request with a lock, an admin socket, a listening
 * address with two sockets, its cluster identity and "end" (or "busy", or "refused WHY"),
 * then waits for "ready" and says "done". */
static void *old_main(void *arg)
{
    struct old_side *o = arg;
    int c = accept(o->lfd, NULL, NULL);
    int fds[4], n;
    slb_handover_recv(c, o->got, sizeof(o->got), fds, &n, 4);
    if (o->answer) {
        slb_handover_send(c, o->answer, NULL, 0);
        close(c);
        return NULL;
    }
    int p[2], q[2];
    if (pipe(p) < 0 || pipe(q) < 0)
        return NULL;
    slb_handover_send(c, "lock", &p[0], 1);
    slb_handover_send(c, "admin 127.0.0.1:9000", &p[1], 1);
    slb_handover_send(c, "listen 127.0.0.1:8443 secure", q, 2);
    slb_handover_send(c, "cluster 7 nodea /slbd/", NULL, 0);
    slb_handover_send(c, "end", NULL, 0);
    for (int i = 0; i < 2; i++) {
        close(p[i]);
        close(q[i]);
    }
    char msg[SLB_HANDOVER_MSG];
    if (slb_handover_recv(c, msg, sizeof(msg), fds, &n, 4) > 0 && strncmp(msg, "ready ", 6) == 0)
        slb_handover_send(c, "done", NULL, 0);
    close(c);
    return NULL;
}

static void run_request(const char *answer)
{
    char dir[] = "/tmp/slb-test-handover-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct slb_err err = {0};
    struct old_side o = {.answer = answer};
    assert_int_equal(slb_handover_listen(dir, &o.lfd, &err), 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, SLB_HANDOVER_SOCK);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    int fl = fcntl(o.lfd, F_GETFL);
    fcntl(o.lfd, F_SETFL, fl & ~O_NONBLOCK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, old_main, &o), 0);
    struct slb_handover h;
    int rc = slb_handover_request(dir, &h, &err);
    if (answer && strcmp(answer, "busy") == 0) {
        assert_int_not_equal(rc, 0);
        assert_string_equal(err.code, "upgrade_in_progress");
    } else if (answer) {
        /* The old process says why it cannot hand over now. */
        assert_int_not_equal(rc, 0);
        assert_string_equal(err.code, "upgrade_refused");
        assert_non_null(strstr(err.msg, "cannot hand over now: a write waits"));
    } else {
        assert_int_equal(rc, 0);
        assert_true(h.lock_fd >= 0 && h.admin_fd >= 0);
        assert_string_equal(h.admin_key, "127.0.0.1:9000");
        assert_non_null(h.socks);
        assert_null(h.socks->next);
        assert_string_equal(h.socks->key, "127.0.0.1:8443");
        assert_string_equal(h.socks->name, "secure");
        assert_int_equal(h.socks->nfds, 2);
        assert_string_equal(h.cluster, "7 nodea /slbd/");
        assert_int_equal(slb_handover_commit(&h, 5000, &err), 0);
    }
    slb_handover_deinit(&h);
    pthread_join(t, NULL);
    assert_int_equal(strncmp(o.got, "upgrade ", 8), 0);
    close(o.lfd);
    unlink(path);
    rmdir(dir);
}

static void test_request(void **state)
{
    run_request(NULL);
}

static void test_request_busy(void **state)
{
    run_request("busy");
}

static void test_request_refused(void **state)
{
    run_request("refused a write waits");
}

/* Nobody listening: a clear error naming the socket. */
static void test_request_nobody(void **state)
{
    char dir[] = "/tmp/slb-test-handover-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct slb_handover h;
    struct slb_err err = {0};
    assert_int_not_equal(slb_handover_request(dir, &h, &err), 0);
    assert_string_equal(err.code, "upgrade_failed");
    assert_non_null(strstr(err.msg, "no running slbd answers"));
    slb_handover_deinit(&h);
    rmdir(dir);
}

static void test_addr_key(void **state)
{
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(443);
    inet_pton(AF_INET6, "::1", &in6->sin6_addr);
    char key[96];
    slb_handover_addr_key(&ss, key, sizeof(key));
    assert_string_equal(key, "[::1]:443");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_send_recv_fds), cmocka_unit_test(test_request),
        cmocka_unit_test(test_request_busy),  cmocka_unit_test(test_request_nobody),
        cmocka_unit_test(test_addr_key),      cmocka_unit_test(test_request_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
