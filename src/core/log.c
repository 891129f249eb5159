/* SPDX-License-Identifier: Apache-2.0 */
/* Log lines are formatted into one buffer and written with a single write(2) so lines from
 * different threads never interleave. */
#include "core/log.h"

#include "core/err.h"
#include "core/time.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum slb_log_level slb_log_min = SLB_LOG_INFO;
static _Thread_local char log_thread[16] = "main";
static bool log_json; /* set once at start-up, before any thread */

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

int slb_log_set_format(const char *name)
{
    if (strcmp(name, "text") != 0 && strcmp(name, "json") != 0)
        return SLB_EINVAL;
    log_json = strcmp(name, "json") == 0;
    return 0;
}

/* The JSON form of a line: msg (len bytes) escaped as a JSON string. */
static size_t format_json(char *out, size_t size, const char *stamp, const char *level,
                          const char *msg, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int n = snprintf(out, size, "{\"time\":\"%s\",\"level\":\"%s\",\"thread\":\"%s\",\"msg\":\"",
                     stamp, level, log_thread);
    size_t o = n < 0 ? 0 : (size_t)n;
    for (size_t i = 0; i < len && o + 10 < size; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        } else {
            out[o++] = (char)c; /* UTF-8 passes through; other bytes are the caller's text */
        }
    }
    memcpy(out + o, "\"}\n", 3);
    return o + 3;
}

/* One line: the prefix, the message, then suffix (may be empty). */
static void log_vwrite(enum slb_log_level lvl, const char *suffix, const char *fmt, va_list ap)
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
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    if (*suffix) {
        int k = snprintf(line + len, sizeof(line) - 1 - len, "%s", suffix);
        len += k < 0 ? 0 : (size_t)k;
        if (len > sizeof(line) - 2)
            len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    if (log_json) {
        char stamp[64], json[2 * sizeof(line) + 128];
        snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
        size_t jl =
            format_json(json, sizeof(json), stamp, tags[lvl], line + n, len - 1 - (size_t)n);
        ssize_t w = write(STDERR_FILENO, json, jl);
        (void)w;
        return;
    }
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void slb_log_write(enum slb_log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(lvl, "", fmt, ap);
    va_end(ap);
}

void slb_log_write_limited(struct slb_log_limit *rl, enum slb_log_level lvl, const char *fmt, ...)
{
    /* +1: a statement that never fired has last_ms 0, and the clock may be below 1000. */
    uint64_t now = slb_mono_ms() + 1000;
    uint64_t last = atomic_load_explicit(&rl->last_ms, memory_order_relaxed);
    /* One thread per second wins the exchange and writes; the others only count. */
    if (now - last < 1000 ||
        !atomic_compare_exchange_strong_explicit(&rl->last_ms, &last, now, memory_order_relaxed,
                                                 memory_order_relaxed)) {
        atomic_fetch_add_explicit(&rl->suppressed, 1, memory_order_relaxed);
        return;
    }
    uint64_t n = atomic_exchange_explicit(&rl->suppressed, 0, memory_order_relaxed);
    char suffix[64] = "";
    if (n)
        snprintf(suffix, sizeof(suffix), " (%llu similar lines suppressed)", (unsigned long long)n);
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(lvl, suffix, fmt, ap);
    va_end(ap);
}
