/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the log: a rate-limited statement writes one line a second and then says how
 * many lines it suppressed; limits are per statement. */
/* cmocka needs these in this order; keep clang-format from sorting them. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* Run the statements with stderr sent to a temporary file; returns what was written. */
static char *captured(void (*fn)(int), int arg)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(f), STDERR_FILENO) >= 0);
    fn(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    static char buf[8192];
    rewind(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void limited_a(int i)
{
    slb_warn_limited("statement a %d", i);
}

static void burst(int n)
{
    for (int i = 0; i < n; i++) {
        limited_a(i);
        slb_warn_limited("statement b %d", i);
    }
}

static void test_rate_limit(void **unused)
{
    char *out = captured(burst, 1000);
    /* One line per statement, the first of each. */
    assert_int_equal(count_lines(out), 2);
    assert_non_null(strstr(out, "warn [main] statement a 0\n"));
    assert_non_null(strstr(out, "statement b 0\n"));
    /* A second later: one line again, with the count of the lines in between. */
    usleep(1100 * 1000);
    out = captured(limited_a, 7);
    assert_int_equal(count_lines(out), 1);
    assert_non_null(strstr(out, "statement a 7 (999 similar lines suppressed)\n"));
    out = captured(limited_a, 8);
    assert_int_equal(count_lines(out), 0);
    /* Below the log level nothing is written or counted. */
    slb_log_min = SLB_LOG_ERROR;
    usleep(1100 * 1000);
    out = captured(limited_a, 9);
    slb_log_min = SLB_LOG_INFO;
    assert_int_equal(count_lines(out), 0);
    out = captured(limited_a, 10);
    assert_non_null(strstr(out, "statement a 10 (1 similar lines suppressed)\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
