/* SPDX-License-Identifier: Apache-2.0 */
/* Log lines are formatted into one buffer and written with a single write(2) so lines from
 * different threads never interleave. */
#include "core/log.h"

#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum slb_log_level slb_log_min = SLB_LOG_INFO;
static _Thread_local char log_thread[16] = "main";

int slb_log_set_level(const char *name)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            slb_log_min = (enum slb_log_level)i;
            return 0;
        }
    }
    return SLB_EINVAL;
}

void slb_log_thread_name(const char *name)
{
    snprintf(log_thread, sizeof(log_thread), "%s", name);
}

void slb_log_write(enum slb_log_level lvl, const char *fmt, ...)
{
    static const char *tags[] = {"debug", "info", "warn", "error"};
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, tags[lvl], log_thread);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
