/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: one line per event on stderr, with level, thread name and the caller's context. */
#ifndef SLB_CORE_LOG_H
#define SLB_CORE_LOG_H

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
#define slb_debug(...) slb_log(SLB_LOG_DEBUG, __VA_ARGS__)
#define slb_info(...) slb_log(SLB_LOG_INFO, __VA_ARGS__)
#define slb_warn(...) slb_log(SLB_LOG_WARN, __VA_ARGS__)
#define slb_error(...) slb_log(SLB_LOG_ERROR, __VA_ARGS__)

#endif
