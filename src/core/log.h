/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one line per event on stderr, with level, thread name and the caller's context. */
#ifndef SLB_CORE_LOG_H
#define SLB_CORE_LOG_H

#include <stdatomic.h>
#include <stdint.h>

enum slb_log_level { SLB_LOG_DEBUG, SLB_LOG_INFO, SLB_LOG_WARN, SLB_LOG_ERROR };

extern enum slb_log_level slb_log_min;

/* Parse "debug|info|warn|error"; returns 0 or SLB_EINVAL. */
int slb_log_set_level(const char *name);
/* Parse "text|json" (--log-format): json writes each line as one JSON object
 * {"time","level","thread","msg"} for log shippers; returns 0 or SLB_EINVAL. */
int slb_log_set_format(const char *name);
/* Name of the calling thread in log lines ("main", "control", "w0"...); copied. */
void slb_log_thread_name(const char *name);
void slb_log_write(enum slb_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define slb_log(lvl, ...)                                                                          \
    do {                                                                                           \
        if ((lvl) >= slb_log_min)                                                                  \
            slb_log_write((lvl), __VA_ARGS__);                                                     \
    } while (0)
/* A log statement that can fire once per connection or request when something is wrong for
 * all of them (out of descriptors, every backend down) writes at most one line per second: the
 * lines in between are counted, and the next line that is written ends with "(N similar lines
 * suppressed)". The state is one per statement (a static in slb_log_limited), shared by every
 * thread that runs it; it costs atomics only when the statement fires. */
struct slb_log_limit {
    _Atomic uint64_t last_ms;
    _Atomic uint64_t suppressed;
};
void slb_log_write_limited(struct slb_log_limit *rl, enum slb_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define slb_log_limited(lvl, ...)                                                                  \
    do {                                                                                           \
        static struct slb_log_limit rl_;                                                           \
        if ((lvl) >= slb_log_min)                                                                  \
            slb_log_write_limited(&rl_, (lvl), __VA_ARGS__);                                       \
    } while (0)
#define slb_info_limited(...) slb_log_limited(SLB_LOG_INFO, __VA_ARGS__)
#define slb_warn_limited(...) slb_log_limited(SLB_LOG_WARN, __VA_ARGS__)

#define slb_debug(...) slb_log(SLB_LOG_DEBUG, __VA_ARGS__)
#define slb_info(...) slb_log(SLB_LOG_INFO, __VA_ARGS__)
#define slb_warn(...) slb_log(SLB_LOG_WARN, __VA_ARGS__)
#define slb_error(...) slb_log(SLB_LOG_ERROR, __VA_ARGS__)

#endif
