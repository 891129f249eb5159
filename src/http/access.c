/* SPDX-License-Identifier: Apache-2.0 */
/* Access log lines: formatted on workers, written by a logger thread. */
#include "http/access.h"

#include "core/log.h"
#include "core/time.h"
#include "net/worker_ctx.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WBUF_SIZE 32768

/* One pipe per worker: the worker writes whole lines, non-blocking; the logger reads. */
struct logger {
    pthread_t thread;
    bool started;
    int nworkers;
    int pipes[SLB_MAX_WORKERS][2];
    int stop_pipe[2];
    _Atomic int enabled;
    _Atomic uint64_t dropped;
    pthread_mutex_t target_lock; /* guards target between control and logger only */
    char target[4096];
    bool target_changed;
};

static struct logger lg = {.target_lock = PTHREAD_MUTEX_INITIALIZER};

struct wbuf {
    char data[WBUF_SIZE];
    size_t len;
};
static _Thread_local struct wbuf *tl_buf;

static int open_target(const char *target)
{
    if (!target[0])
        return -1;
    if (strcmp(target, "stdout") == 0)
        return dup(STDOUT_FILENO);
    int fd = open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        slb_error("access log: cannot open %s: %s", target, strerror(errno));
    return fd;
}

static void *logger_main(void *arg)
{
    slb_log_thread_name("access-log");
    int out = -1;
    char buf[65536];
    struct pollfd pfd[SLB_MAX_WORKERS + 1];
    for (;;) {
        int n = 0;
        for (int i = 0; i < lg.nworkers; i++)
            pfd[n++] = (struct pollfd){.fd = lg.pipes[i][0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = lg.stop_pipe[0], .events = POLLIN};
        if (poll(pfd, (nfds_t)n, 500) < 0 && errno != EINTR)
            break;
        /* Look at the target after waking, before writing: lines of the first request after
         * the log was switched on must reach the new file. */
        pthread_mutex_lock(&lg.target_lock);
        if (lg.target_changed) {
            if (out >= 0)
                close(out);
            out = open_target(lg.target);
            lg.target_changed = false;
        }
        pthread_mutex_unlock(&lg.target_lock);
        bool stop = pfd[n - 1].revents != 0;
        for (int i = 0; i < n - 1; i++) {
            if (!pfd[i].revents && !stop)
                continue;
            for (;;) {
                ssize_t r = read(pfd[i].fd, buf, sizeof(buf));
                if (r <= 0)
                    break;
                if (out >= 0) {
                    ssize_t off = 0;
                    while (off < r) {
                        ssize_t wr = write(out, buf + off, (size_t)(r - off));
                        if (wr <= 0)
                            break;
                        off += wr;
                    }
                }
            }
        }
        if (stop)
            break;
    }
    if (out >= 0)
        close(out);
    return NULL;
}

int slb_access_configure(const char *target, int nworkers)
{
    if (!lg.started) {
        lg.nworkers = nworkers;
        for (int i = 0; i < nworkers; i++) {
            if (pipe2(lg.pipes[i], O_NONBLOCK | O_CLOEXEC) < 0)
                return -errno;
            /* Room for bursts: the logger drains continuously. */
            fcntl(lg.pipes[i][1], F_SETPIPE_SZ, 1 << 20);
        }
        if (pipe2(lg.stop_pipe, O_CLOEXEC) < 0)
            return -errno;
        if (pthread_create(&lg.thread, NULL, logger_main, NULL) != 0)
            return -EAGAIN;
        lg.started = true;
    }
    pthread_mutex_lock(&lg.target_lock);
    if (strcmp(lg.target, target) != 0) {
        snprintf(lg.target, sizeof(lg.target), "%s", target);
        lg.target_changed = true;
    }
    pthread_mutex_unlock(&lg.target_lock);
    atomic_store(&lg.enabled, target[0] != '\0');
    return 0;
}

void slb_access_shutdown(void)
{
    if (!lg.started)
        return;
    char b = 1;
    ssize_t w = write(lg.stop_pipe[1], &b, 1);
    (void)w;
    pthread_join(lg.thread, NULL);
    for (int i = 0; i < lg.nworkers; i++) {
        close(lg.pipes[i][0]);
        close(lg.pipes[i][1]);
    }
    close(lg.stop_pipe[0]);
    close(lg.stop_pipe[1]);
    lg.started = false;
    lg.target[0] = '\0';
}

bool slb_access_enabled(void)
{
    return atomic_load_explicit(&lg.enabled, memory_order_relaxed) != 0;
}

uint64_t slb_access_dropped(void)
{
    return atomic_load(&lg.dropped);
}

struct slb_access_rec *slb_access_new(struct slb_worker *w, struct slb_listener_rt *l)
{
    if (!slb_access_enabled())
        return NULL;
    return calloc(1, sizeof(struct slb_access_rec));
}

void slb_access_free(struct slb_access_rec *rec)
{
    free(rec);
}

/* Copy a slice as a JSON string body, escaping quotes, backslashes and control bytes. */
static size_t json_escape(char *out, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < len && o + 7 < size; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
    return o;
}

void slb_access_rule(struct slb_access_rec *rec, const char *name)
{
    if (rec)
        snprintf(rec->rule, sizeof(rec->rule), "%s", name);
}

void slb_access_capture(struct slb_access_rec *rec, uint64_t now_ms, const struct slb_http_msg *m)
{
    rec->start_ms = now_ms;
    rec->rule[0] = '\0';
    if (!m) {
        snprintf(rec->method, sizeof(rec->method), "-");
        snprintf(rec->path, sizeof(rec->path), "-");
        return;
    }
    json_escape(rec->method, sizeof(rec->method), m->method_name.p, m->method_name.len);
    json_escape(rec->path, sizeof(rec->path), m->target.p, m->target.len);
}

void slb_access_flush(struct slb_worker *w)
{
    struct wbuf *b = tl_buf;
    if (!b || b->len == 0 || !lg.started)
        return;
    ssize_t r = write(lg.pipes[w->id][1], b->data, b->len);
    if (r < (ssize_t)b->len) {
        /* The logger is behind: count the loss rather than block the worker. A partial write
         * of a pipe this large only happens when it is full; the rest is dropped whole. */
        atomic_fetch_add(&lg.dropped, 1);
    }
    b->len = 0;
}

void slb_access_write(struct slb_worker *w, const struct slb_access_entry *e)
{
    if (!tl_buf) {
        tl_buf = calloc(1, sizeof(*tl_buf));
        if (!tl_buf)
            return;
    }
    char line[2048], sni[300];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    json_escape(sni, sizeof(sni), e->sni ? e->sni : "", e->sni ? strlen(e->sni) : 0);
    int n = snprintf(
        line, sizeof(line),
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"listener\":\"%s\","
        "\"client\":\"%s\",\"tls\":%s%s%s,\"cipher\":%s%s%s,\"resumed\":%s,\"sni\":\"%s\","
        "\"method\":\"%s\",\"path\":\"%s\",\"proto\":\"%s\",\"status\":%d,\"bytes_in\":%llu,"
        "\"bytes_out\":%llu,"
        "\"wire_in\":%llu,\"wire_out\":%llu,\"upstream\":%s%s%s,\"request_ms\":%.3f,"
        "\"upstream_ms\":%.3f,\"rule\":%s%s%s}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        ts.tv_nsec / 1000000, e->listener, e->client, e->tls_version ? "\"" : "",
        e->tls_version ? e->tls_version : "null", e->tls_version ? "\"" : "", e->cipher ? "\"" : "",
        e->cipher ? e->cipher : "null", e->cipher ? "\"" : "",
        e->resumed < 0 ? "null" : (e->resumed ? "true" : "false"), sni, e->rec->method,
        e->rec->path, e->proto ? e->proto : "-", e->status, (unsigned long long)e->bytes_in,
        (unsigned long long)e->bytes_out, (unsigned long long)e->wire_in,
        (unsigned long long)e->wire_out, e->upstream ? "\"" : "",
        e->upstream ? e->upstream : "null", e->upstream ? "\"" : "", e->request_ms, e->upstream_ms,
        e->rec->rule[0] ? "\"" : "", e->rec->rule[0] ? e->rec->rule : "null",
        e->rec->rule[0] ? "\"" : "");
    if (n <= 0)
        return;
    size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
    if (tl_buf->len + len > WBUF_SIZE)
        slb_access_flush(w);
    memcpy(tl_buf->data + tl_buf->len, line, len);
    tl_buf->len += len;
}

void slb_access_thread_exit(struct slb_worker *w)
{
    slb_access_flush(w);
    free(tl_buf);
    tl_buf = NULL;
}
