/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's HTTP/1.1 server: connections on the control thread's loop, the strict
 * request parser, Bearer-token check in constant time, bounded bodies, keep-alive. */
#include "admin/admin.h"
#include "admin/ui.h"

#include "config/config.h"
#include "core/log.h"
#include "daemon/control.h"
#include "http/parser.h"
#include "http/rewrite.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_MAX_HEAD 16384
#define ADMIN_MAX_CONNS 256
#define ADMIN_IDLE_MS 30000

struct admin_conn {
    struct slb_admin *a;
    int fd;
    struct slb_io io;
    struct slb_timer timer;
    char *in; /* head + body being received */
    size_t inlen, incap;
    char *out; /* response being sent */
    size_t outlen, outoff;
    bool close_after;
    bool head_only;     /* answering HEAD: headers only */
    bool continue_sent; /* "100 Continue" already sent for the request being received */
    struct admin_conn *prev, *next;
};

struct slb_admin {
    struct slb_ctl *ctl;
    int fd;
    struct slb_io io;
    struct slb_timer pause; /* accepting paused after EMFILE */
    struct admin_conn *conns;
    int nconns;
};

void slb_admin_error(struct slb_admin_resp *resp, const struct slb_err *err)
{
    json_t *e =
        json_pack("{s:s, s:s}", "code", err->code[0] ? err->code : "error", "message", err->msg);
    if (err->where[0])
        json_object_set_new(e, "where", json_string(err->where));
    json_decref(resp->json);
    resp->json = json_pack("{s:o}", "error", e);
    resp->status = err->status ? err->status : 400;
}

void slb_admin_error_simple(struct slb_admin_resp *resp, int status, const char *code,
                            const char *fmt, ...)
{
    struct slb_err err = {.status = status};
    snprintf(err.code, sizeof(err.code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err.msg, sizeof(err.msg), fmt, ap);
    va_end(ap);
    slb_admin_error(resp, &err);
}

static void conn_free(void *p)
{
    struct admin_conn *c = p;
    free(c->in);
    free(c->out);
    free(c);
}

static void conn_close(struct admin_conn *c)
{
    struct slb_loop *loop = &c->a->ctl->loop;
    slb_io_set(loop, &c->io, 0);
    slb_timer_stop(loop, &c->timer);
    close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->a->nconns--;
    slb_loop_defer_free(loop, conn_free, c);
}

/* Serialize resp into c->out and start sending. */
static void respond(struct admin_conn *c, struct slb_admin_resp *resp)
{
    char *body = NULL;
    size_t blen = 0;
    const char *ctype = resp->content_type;
    if (resp->json) {
        body = json_dumps(resp->json, JSON_COMPACT | JSON_PRESERVE_ORDER);
        blen = body ? strlen(body) : 0;
        if (body) {
            /* A trailing newline makes curl output readable; clients ignore it. */
            char *nb = realloc(body, blen + 2);
            if (nb) {
                body = nb;
                body[blen++] = '\n';
                body[blen] = '\0';
            }
        }
        ctype = "application/json";
    } else if (resp->text) {
        body = resp->text;
        resp->text = NULL;
        blen = resp->text_len;
    }
    char head[1024];
    bool etag = resp->etag[0] != '\0';
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n%s%s%s%s%s%s%s%s%s"
                      "Cache-Control: no-store\r\n%s\r\n",
                      resp->status, slb_http_reason(resp->status), blen,
                      ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "",
                      resp->allow ? "Allow: " : "", resp->allow ? resp->allow : "",
                      resp->allow ? "\r\n" : "", etag ? "ETag: " : "", etag ? resp->etag : "",
                      etag ? "\r\n" : "", c->close_after ? "Connection: close\r\n" : "");
    if (resp->headers && hn >= 2 && (size_t)hn < sizeof(head)) {
        /* Extra header lines (static, a few hundred bytes) go before the head's blank line. */
        size_t at = (size_t)hn - 2;
        int n = snprintf(head + at, sizeof(head) - at, "%s\r\n", resp->headers);
        if (n > 0 && at + (size_t)n < sizeof(head))
            hn = (int)(at + (size_t)n);
        else
            memcpy(head + at, "\r\n", 3);
    }
    free(c->out);
    c->out = malloc((size_t)hn + blen);
    if (!c->out) {
        free(body);
        conn_close(c);
        return;
    }
    memcpy(c->out, head, (size_t)hn);
    if (c->head_only)
        blen = 0; /* Content-Length still tells the size of what GET would send */
    if (blen)
        memcpy(c->out + hn, body, blen);
    c->outlen = (size_t)hn + blen;
    c->outoff = 0;
    free(body);
    json_decref(resp->json);
    resp->json = NULL;
    slb_io_set(&c->a->ctl->loop, &c->io, EPOLLOUT);
}

static void respond_error(struct admin_conn *c, int status, const char *code, const char *msg)
{
    struct slb_admin_resp resp = {0};
    slb_admin_error_simple(&resp, status, code, "%s", msg);
    c->close_after = true;
    respond(c, &resp);
}

/* Constant-time comparison: the time taken does not depend on where the strings differ. */
static bool token_ok(const struct slb_ctl *ctl, const struct slb_http_msg *m)
{
    int i = slb_http_find_header(m, "authorization", 0);
    if (i < 0)
        return false;
    struct slb_slice v = m->headers[i].value;
    if (v.len < 7 || strncasecmp(v.p, "Bearer ", 7) != 0)
        return false;
    const char *tok = v.p + 7;
    size_t tlen = v.len - 7, want = strlen(ctl->token);
    unsigned diff = (unsigned)(tlen ^ want);
    for (size_t k = 0; k < want; k++)
        diff |= (unsigned char)ctl->token[k] ^ (unsigned char)(k < tlen ? tok[k] : 0);
    return diff == 0;
}

static char *slice_dup(struct slb_slice s)
{
    char *p = malloc(s.len + 1);
    if (p) {
        memcpy(p, s.p, s.len);
        p[s.len] = '\0';
    }
    return p;
}

/* Every If-Match header's value joined by ", " (a list may be split over several headers),
 * or NULL when there is none. */
static char *if_match_of(const struct slb_http_msg *m)
{
    char *out = NULL;
    size_t len = 0;
    for (int i = slb_http_find_header(m, "if-match", 0); i >= 0;
         i = slb_http_find_header(m, "if-match", (size_t)i + 1)) {
        struct slb_slice v = m->headers[i].value;
        char *n = realloc(out, len + v.len + 3);
        if (!n)
            break;
        out = n;
        if (len) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, v.p, v.len);
        len += v.len;
        out[len] = '\0';
    }
    return out;
}

/* Handle one complete request sitting in c->in; returns bytes consumed. */
static void handle(struct admin_conn *c, const struct slb_http_msg *m, const char *body,
                   size_t blen)
{
    struct slb_ctl *ctl = c->a->ctl;
    struct slb_admin_resp resp = {.status = 200};
    char *target = slice_dup(m->target);
    char *method = slice_dup(m->method_name);
    char *ctype = NULL, *if_match = if_match_of(m);
    int ci = slb_http_find_header(m, "content-type", 0);
    if (ci >= 0)
        ctype = slice_dup(m->headers[ci].value);
    if (!target || !method) {
        slb_admin_error_simple(&resp, 500, "internal", "out of memory");
        goto out;
    }
    char *q = strchr(target, '?');
    if (q)
        *q++ = '\0';
    /* The console's files hold no data (every datum comes from the API, with the token). */
    bool ui = slb_admin_ui_path(target);
    bool public_path = ui || strcmp(target, "/healthz") == 0;
    if (!public_path && !token_ok(ctl, m)) {
        slb_admin_error_simple(&resp, 401, "unauthorized",
                               "missing or wrong bearer token (see admin.token in the state "
                               "directory)");
        goto out;
    }
    c->head_only = strcmp(method, "HEAD") == 0;
    struct slb_admin_req req = {
        .method = method,
        .path = target,
        .query = q ? q : "",
        .content_type = ctype ? ctype : "",
        .if_match = if_match,
        .body = body,
        .body_len = blen,
    };
    if (ui)
        slb_admin_ui(&req, &resp);
    else
        slb_admin_route(ctl, &req, &resp);
out:
    if (resp.status >= 400 || !m->keep_alive)
        c->close_after = c->close_after || !m->keep_alive;
    respond(c, &resp);
    free(target);
    free(method);
    free(ctype);
    free(if_match);
}

static void try_request(struct admin_conn *c)
{
    struct slb_http_limits lim;
    slb_http_limits_default(&lim);
    struct slb_http_msg *m = malloc(sizeof(*m));
    if (!m) {
        conn_close(c);
        return;
    }
    int rc = slb_http_parse_request(c->in, c->inlen, &lim, m);
    if (rc == 0) {
        free(m);
        return;
    }
    if (rc < 0) {
        int status = -rc;
        respond_error(c, status, status == 431 ? "headers_too_large" : "bad_request",
                      "malformed HTTP request");
        free(m);
        return;
    }
    size_t head = (size_t)rc;
    uint64_t blen = 0;
    if (m->body == SLB_BODY_CHUNKED) {
        respond_error(c, 411, "length_required", "send the body with a Content-Length");
        free(m);
        return;
    }
    if (m->body == SLB_BODY_LENGTH)
        blen = m->content_length;
    if (blen > SLB_ADMIN_MAX_BODY) {
        respond_error(c, 413, "body_too_large", "request bodies are limited to 1 MiB");
        free(m);
        return;
    }
    if (c->inlen < head + blen && m->expect_continue && !c->continue_sent) {
        /* The client waits for this before sending the body (curl does for > 1 KiB). The
         * head was accepted, so invite the body; a failed send just means no invitation. */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        ssize_t w = send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
        (void)w;
        c->continue_sent = true;
    }
    if (c->inlen < head + blen) {
        if (c->incap < head + blen) {
            char *n = realloc(c->in, head + blen);
            if (!n) {
                conn_close(c);
                free(m);
                return;
            }
            c->in = n;
            c->incap = head + blen;
        }
        free(m);
        return;
    }
    c->continue_sent = false;
    /* Requests are served one at a time; pipelined bytes after this one wait in c->in. */
    handle(c, m, c->in + head, (size_t)blen);
    size_t used = head + (size_t)blen;
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= used;
    free(m);
}

static void conn_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct admin_conn *c = io->data;
    if (events & EPOLLOUT) {
        while (c->outoff < c->outlen) {
            ssize_t n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return;
                conn_close(c);
                return;
            }
            c->outoff += (size_t)n;
        }
        free(c->out);
        c->out = NULL;
        c->outlen = c->outoff = 0;
        if (c->close_after) {
            conn_close(c);
            return;
        }
        slb_io_set(loop, io, EPOLLIN);
        slb_timer_start(loop, &c->timer, ADMIN_IDLE_MS);
        if (c->inlen > 0)
            try_request(c);
        return;
    }
    if (c->incap - c->inlen < 4096) {
        size_t cap = c->incap ? c->incap * 2 : 8192;
        if (cap > ADMIN_MAX_HEAD + SLB_ADMIN_MAX_BODY + 8192) {
            respond_error(c, 413, "body_too_large", "request too large");
            return;
        }
        char *n = realloc(c->in, cap);
        if (!n) {
            conn_close(c);
            return;
        }
        c->in = n;
        c->incap = cap;
    }
    ssize_t n = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_close(c);
        return;
    }
    c->inlen += (size_t)n;
    slb_timer_start(loop, &c->timer, ADMIN_IDLE_MS);
    try_request(c);
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    conn_close(t->data);
}

static void resume_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_admin *a = t->data;
    slb_io_set(loop, &a->io, EPOLLIN);
}

static void accept_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_admin *a = io->data;
    for (;;) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the level-triggered socket would wake us at once,
                 * forever. Stop watching it for a moment. */
                slb_io_set(loop, io, 0);
                slb_timer_start(loop, &a->pause, 100);
            }
            return;
        }
        if (a->nconns >= ADMIN_MAX_CONNS) {
            /* Full: make room by dropping the oldest idle connection, so idle clients cannot
             * lock the operator out; with none idle, refuse the new one. */
            struct admin_conn *old = NULL;
            for (struct admin_conn *c = a->conns; c; c = c->next) {
                if (c->inlen == 0 && c->outlen == 0)
                    old = c;
            }
            if (!old) {
                close(fd);
                continue;
            }
            conn_close(old);
        }
        struct admin_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->a = a;
        c->fd = fd;
        slb_io_init(&c->io, fd, conn_cb, c);
        slb_timer_init(&c->timer, timer_cb, c);
        c->next = a->conns;
        if (a->conns)
            a->conns->prev = c;
        a->conns = c;
        a->nconns++;
        slb_io_set(loop, &c->io, EPOLLIN);
        slb_timer_start(loop, &c->timer, ADMIN_IDLE_MS);
    }
}

struct slb_admin *slb_admin_new(struct slb_ctl *ctl, const char *addr, struct slb_err *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (slb_config_parse_hostport(addr, &ss, &len) < 0) {
        slb_err_set(err, 400, "invalid_value", "--admin", "admin address \"%s\" is not ADDR:PORT",
                    addr);
        return NULL;
    }
    struct slb_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        slb_err_set(err, 500, "internal", "--admin", "out of memory");
        return NULL;
    }
    a->ctl = ctl;
    a->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (a->fd >= 0)
        setsockopt(a->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (a->fd < 0 || bind(a->fd, (struct sockaddr *)&ss, len) < 0 || listen(a->fd, 128) < 0) {
        slb_err_set(err, 400, "bind_failed", "--admin", "cannot listen on %s for the admin API: %s",
                    addr, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        free(a);
        return NULL;
    }
    slb_io_init(&a->io, a->fd, accept_cb, a);
    slb_timer_init(&a->pause, resume_cb, a);
    slb_io_set(&ctl->loop, &a->io, EPOLLIN);
    slb_info("admin API on http://%s", addr);
    return a;
}

void slb_admin_free(struct slb_admin *a)
{
    if (!a)
        return;
    while (a->conns)
        conn_close(a->conns);
    slb_timer_stop(&a->ctl->loop, &a->pause);
    slb_io_set(&a->ctl->loop, &a->io, 0);
    close(a->fd);
    free(a);
}
