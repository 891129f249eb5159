/* SPDX-License-Identifier: Apache-2.0 */
/* Access log lines: formatted on workers, written by a logger thread. */
#include "http/access.h"

#include "config/snapshot.h"
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
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define WBUF_SIZE 32768
#define SYSLOG_WAIT_MS 200

struct line_carry {
    char buf[4096];
    size_t len;
};

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
    /* syslog: the datagram socket, and each pipe's last incomplete line (a read may end in
     * the middle of one; every datagram must be one whole line) */
    bool syslog;
    struct line_carry carry[SLB_MAX_WORKERS];
    int wake_pipe[2]; /* SIGUSR1: reopen now */
};

static struct logger lg = {.target_lock = PTHREAD_MUTEX_INITIALIZER};

struct wbuf {
    char data[WBUF_SIZE];
    size_t len;
};
static _Thread_local struct wbuf *tl_buf;

/* Where syslog lines go: /dev/log, or SLBD_SYSLOG_SOCKET (the tests' own socket). */
static int open_syslog(void)
{
    const char *path = getenv("SLBD_SYSLOG_SOCKET");
    if (!path || !*path)
        path = "/dev/log";
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 0, .tv_usec = SYSLOG_WAIT_MS * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        slb_error("access log: cannot connect to syslog at %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int open_target(const char *target)
{
    lg.syslog = false;
    if (!target[0])
        return -1;
    if (strcmp(target, "stdout") == 0)
        return dup(STDOUT_FILENO);
    if (strcmp(target, "syslog") == 0) {
        lg.syslog = true;
        for (int i = 0; i < SLB_MAX_WORKERS; i++)
            lg.carry[i].len = 0;
        return open_syslog();
    }
    int fd = open(target, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        slb_error("access log: cannot open %s: %s", target, strerror(errno));
    return fd;
}

/* One datagram per line, RFC 3164 style as syslog(3) sends them: facility local7, severity
 * info (what nginx uses for access logs), the tag "slbd". A full socket makes the logger
 * thread wait (the workers' pipes fill meanwhile, and their batches are dropped and counted),
 * but at most SYSLOG_WAIT_MS per line: a stuck syslog daemon loses lines, it never stops
 * slbd. */
static void syslog_line(int fd, const char *line, size_t len)
{
    char msg[4200];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t n = strftime(msg, 64, "<190>%b %e %H:%M:%S ", &tm);
    n += (size_t)snprintf(msg + n, 64, "slbd[%ld]: ", (long)getpid());
    if (len > sizeof(msg) - n)
        len = sizeof(msg) - n;
    memcpy(msg + n, line, len);
    ssize_t w = send(fd, msg, n + len, MSG_NOSIGNAL);
    (void)w;
}

/* Send the whole lines of what pipe i gave, keeping an incomplete last one for the next read. */
static void syslog_batch(int fd, int i, const char *p, size_t len)
{
    struct line_carry *c = &lg.carry[i];
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t take = nl ? (size_t)(nl - p) : len;
        size_t room = sizeof(c->buf) - c->len;
        memcpy(c->buf + c->len, p, take < room ? take : room);
        c->len += take < room ? take : room;
        if (!nl)
            return;
        if (fd >= 0)
            syslog_line(fd, c->buf, c->len);
        c->len = 0;
        p = nl + 1;
        len -= take + 1;
    }
}

static void *logger_main(void *arg)
{
    slb_log_thread_name("access-log");
    int out = -1;
    char buf[65536];
    struct pollfd pfd[SLB_MAX_WORKERS + 2];
    for (;;) {
        int n = 0;
        for (int i = 0; i < lg.nworkers; i++)
            pfd[n++] = (struct pollfd){.fd = lg.pipes[i][0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = lg.wake_pipe[0], .events = POLLIN};
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
        if (pfd[n - 2].revents) {
            char drain[64];
            while (read(lg.wake_pipe[0], drain, sizeof(drain)) > 0) {
            }
        }
        for (int i = 0; i < lg.nworkers; i++) {
            if (!pfd[i].revents && !stop)
                continue;
            for (;;) {
                ssize_t r = read(pfd[i].fd, buf, sizeof(buf));
                if (r <= 0)
                    break;
                if (lg.syslog) {
                    syslog_batch(out, i, buf, (size_t)r);
                } else if (out >= 0) {
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
        if (pipe2(lg.stop_pipe, O_CLOEXEC) < 0 || pipe2(lg.wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0)
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

void slb_access_reopen(void)
{
    if (!lg.started)
        return;
    pthread_mutex_lock(&lg.target_lock);
    lg.target_changed = lg.target[0] != '\0';
    pthread_mutex_unlock(&lg.target_lock);
    /* Wake the logger so the next lines go to the new file at once (it reopens after
     * waking, before it writes). */
    char b = 0;
    ssize_t w = write(lg.wake_pipe[1], &b, 1);
    (void)w;
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
    close(lg.wake_pipe[0]);
    close(lg.wake_pipe[1]);
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

/* 128 random bits as 32 hex digits from a per-thread xorshift128+ seeded once from the
 * kernel: unique enough to find a request in several logs, and no system call per request. */
static void new_request_id(char out[33])
{
    static _Thread_local uint64_t st[2];
    static const char hex[] = "0123456789abcdef";
    if (!st[0] && !st[1]) {
        if (getrandom(st, sizeof(st), 0) != (ssize_t)sizeof(st) || (!st[0] && !st[1])) {
            st[0] = (uint64_t)slb_mono_us() ^ ((uint64_t)getpid() << 32);
            st[1] = (uint64_t)(uintptr_t)&st | 1;
        }
    }
    for (int half = 0; half < 2; half++) {
        uint64_t a = st[0], b = st[1];
        st[0] = b;
        a ^= a << 23;
        st[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
        uint64_t v = st[1] + b;
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(v >> (60 - 4 * i)) & 15];
    }
    out[32] = '\0';
}

static void capture_header(char *out, size_t size, const struct slb_http_msg *m, const char *name)
{
    int i = slb_http_find_header(m, name, 0);
    if (i >= 0)
        json_escape(out, size, m->headers[i].value.p, m->headers[i].value.len);
    else
        out[0] = '\0';
}

void slb_access_rule(struct slb_access_rec *rec, const char *name)
{
    if (rec)
        snprintf(rec->rule, sizeof(rec->rule), "%s", name);
}

void slb_access_capture(struct slb_access_rec *rec, uint64_t now_ms, const struct slb_http_msg *m)
{
    rec->start_ms = now_ms;
    rec->start_us = slb_mono_us();
    rec->request_id_ours = false;
    rec->rule[0] = '\0';
    if (!m) {
        snprintf(rec->method, sizeof(rec->method), "-");
        snprintf(rec->path, sizeof(rec->path), "-");
        rec->host[0] = rec->user_agent[0] = '\0';
        new_request_id(rec->request_id);
        return;
    }
    json_escape(rec->method, sizeof(rec->method), m->method_name.p, m->method_name.len);
    json_escape(rec->path, sizeof(rec->path), m->target.p, m->target.len);
    if (m->host.len)
        json_escape(rec->host, sizeof(rec->host), m->host.p, m->host.len);
    else
        capture_header(rec->host, sizeof(rec->host), m, "host");
    capture_header(rec->user_agent, sizeof(rec->user_agent), m, "user-agent");
    capture_header(rec->request_id, sizeof(rec->request_id), m, "x-request-id");
    if (!rec->request_id[0]) {
        new_request_id(rec->request_id);
        rec->request_id_ours = true;
    }
}

const char *slb_access_error_name(uint8_t e)
{
    if (e == 0)
        return NULL;
    if (e == SLB_ACCESS_NO_SERVER)
        return "no_healthy_server";
    if (e == SLB_ACCESS_RATE_LIMITED)
        return "rate_limited";
    return slb_srv_fail_name((enum slb_srv_fail)(e - 1));
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
    char line[3072], sni[300];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    json_escape(sni, sizeof(sni), e->sni ? e->sni : "", e->sni ? strlen(e->sni) : 0);
    const struct slb_access_rec *r = e->rec;
    int n = snprintf(
        line, sizeof(line),
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"id\":\"%s\",\"listener\":\"%s\","
        "\"client\":\"%s\",\"client_port\":%u,\"tls\":%s%s%s,\"cipher\":%s%s%s,\"resumed\":%s,"
        "\"sni\":\"%s\",\"method\":\"%s\",\"host\":\"%s\",\"path\":\"%s\",\"proto\":\"%s\","
        "\"status\":%d,\"user_agent\":\"%s\",\"bytes_in\":%llu,\"bytes_out\":%llu,"
        "\"wire_in\":%llu,\"wire_out\":%llu,\"upstream\":%s%s%s,\"error\":%s%s%s,"
        "\"request_ms\":%.3f,\"upstream_ms\":%.3f,\"rule\":%s%s%s}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        ts.tv_nsec / 1000000, r->request_id, e->listener, e->client, e->client_port,
        e->tls_version ? "\"" : "", e->tls_version ? e->tls_version : "null",
        e->tls_version ? "\"" : "", e->cipher ? "\"" : "", e->cipher ? e->cipher : "null",
        e->cipher ? "\"" : "", e->resumed < 0 ? "null" : (e->resumed ? "true" : "false"), sni,
        r->method, r->host, r->path, e->proto ? e->proto : "-", e->status, r->user_agent,
        (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out,
        (unsigned long long)e->wire_in, (unsigned long long)e->wire_out, e->upstream ? "\"" : "",
        e->upstream ? e->upstream : "null", e->upstream ? "\"" : "", e->error ? "\"" : "",
        e->error ? e->error : "null", e->error ? "\"" : "", e->request_ms, e->upstream_ms,
        r->rule[0] ? "\"" : "", r->rule[0] ? r->rule : "null", r->rule[0] ? "\"" : "");
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
