/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the sd_notify sender (src/core/notify.c): each test binds its own unix datagram
 * socket, a path or an abstract name, points $NOTIFY_SOCKET at it and reads what was sent. */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "core/notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Binds a datagram socket at name ('@' for abstract); returns the descriptor. */
static int bind_receiver(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(sa.sun_path, name, len);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    else
        alen++;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, alen), 0);
    return fd;
}

static void expect_message(int fd, const char *want)
{
    char buf[2048];
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_path_socket(void **state)
{
    char dir[] = "/tmp/slb-test-notify-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/notify", dir);
    int fd = bind_receiver(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(slb_notify("READY=1\nSTATUS=configuration %d active", 3), 1);
    expect_message(fd, "READY=1\nSTATUS=configuration 3 active");
    assert_int_equal(slb_notify("STOPPING=1"), 1);
    expect_message(fd, "STOPPING=1");
    unsetenv("NOTIFY_SOCKET");
    close(fd);
    unlink(path);
    rmdir(dir);
}

static void test_abstract_socket(void **state)
{
    char name[64];
    snprintf(name, sizeof(name), "@slb-test-notify-%d", (int)getpid());
    int fd = bind_receiver(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(slb_notify("RELOADING=1\nMONOTONIC_USEC=%u", 42u), 1);
    expect_message(fd, "RELOADING=1\nMONOTONIC_USEC=42");
    unsetenv("NOTIFY_SOCKET");
    close(fd);
}

static void test_unset_is_a_no_op(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(slb_notify("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(slb_notify("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_bad_addresses_fail_without_harm(void **state)
{
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(slb_notify("READY=1"), -EAFNOSUPPORT);
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[0] = '/';
    longname[sizeof(longname) - 1] = '\0';
    setenv("NOTIFY_SOCKET", longname, 1);
    assert_int_equal(slb_notify("READY=1"), -ENAMETOOLONG);
    setenv("NOTIFY_SOCKET", "/nonexistent-slb-dir/notify", 1);
    assert_int_equal(slb_notify("READY=1"), -ENOENT);
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_unset_is_a_no_op),
        cmocka_unit_test(test_bad_addresses_fail_without_harm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
