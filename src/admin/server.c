/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's HTTP/1.1 server: connections on the control thread's loop, the strict
 * request parser, Bearer-token check in constant time, bounded bodies, keep-alive. */
#include "admin/admin.h"
#include "admin/audit.h"
#include "admin/auth.h"
#include "admin/cluster_stats.h"
#include "admin/jobs.h"
#include "admin/routes.h"
#include "admin/ui.h"

#include "config/config.h"
#include "core/log.h"
#include "core/time.h"
#include "daemon/control.h"
#include "http/parser.h"
#include "http/rewrite.h"
#include "ops/ops.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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
    char peer[64];      /* the source address, for the failed-authentication limit and audit */
    char extra[64];     /* a response's dynamic header line (Retry-After) */
    SSL *ssl;           /* NULL on a plain or unix connection */
    /* The change it waits for (cluster mode, admin/jobs.h); nothing more is read meanwhile. */
    struct slb_admin_job *job;
    /* GET /v1/stats?scope=cluster asking the other nodes; nothing more is read meanwhile. */
    struct slb_admin_fanout *fanout;
    bool fanout_keep_alive;
    struct admin_conn *prev, *next;
};

/* One address the admin API listens on. */
struct admin_listen {
    struct slb_admin *a;
    int fd;
    struct slb_io io;
    struct slb_timer pause; /* accepting paused after EMFILE */
    char unix_path[108];    /* a unix socket's path, removed at exit; "" for TCP */
    ino_t path_ino;         /* the socket file's identity at unix_path */
    dev_t path_dev;
};

struct slb_admin {
    struct slb_ctl *ctl;
    struct admin_listen ls[SLB_ADMIN_MAX_LISTEN];
    int nls;
    struct slb_auth *auth;
    struct slb_audit *audit;
    SSL_CTX *tls; /* --admin-cert/--admin-key: TCP addresses speak TLS; NULL otherwise */
    struct admin_conn *conns;
    int nconns;
    struct slb_admin_jobs jobs; /* cluster mode: changes, one at a time */
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
    SSL_free(c->ssl);
    free(c->in);
    free(c->out);
    free(c);
}

static void conn_close(struct admin_conn *c)
{
    struct slb_loop *loop = &c->a->ctl->loop;
    if (c->job)
        slb_admin_job_detach(c->job);
    slb_admin_fanout_cancel(c->fanout);
    c->fanout = NULL;
    slb_io_set(loop, &c->io, 0);
    slb_timer_stop(loop, &c->timer);
    if (c->ssl && SSL_is_init_finished(c->ssl)) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* best effort close_notify; never waits */
        ERR_clear_error();
    }
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

/* The connection's bytes, plain or through TLS: >0 moved, 0 would block, -1 closed or failed.
 * A TLS read that needs to write first (the handshake's answer on a full socket) waits for
 * EPOLLOUT too; conn_cb then reads again. */
static ssize_t conn_recv(struct admin_conn *c, void *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n = recv(c->fd, buf, len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return n > 0 ? n : -1;
    }
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        slb_io_set(&c->a->ctl->loop, &c->io, EPOLLIN | EPOLLOUT);
        return 0;
    }
    if (e == SSL_ERROR_SSL)
        slb_debug("admin API: TLS from %s failed: %s", c->peer,
                  ERR_reason_error_string(ERR_peek_error())
                      ? ERR_reason_error_string(ERR_peek_error())
                      : "?");
    ERR_clear_error();
    return -1;
}

static ssize_t conn_send(struct admin_conn *c, const void *buf, size_t len)
{
    if (!c->ssl) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return n >= 0 ? n : -1;
    }
    ERR_clear_error();
    int n = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
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
    if (resp->revision[0] && hn >= 2 && (size_t)hn < sizeof(head)) {
        size_t at = (size_t)hn - 2;
        int n =
            snprintf(head + at, sizeof(head) - at, "X-Slbd-Revision: %s\r\n\r\n", resp->revision);
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

/* Who sent the request; false with resp filled (401, or 429 for a source that failed too
 * often) when nobody valid did. */
static bool authenticate(struct admin_conn *c, const struct slb_http_msg *m,
                         struct slb_auth_who *who, struct slb_admin_resp *resp)
{
    int i = slb_http_find_header(m, "authorization", 0);
    unsigned retry = 0;
    enum slb_auth_result r =
        slb_auth_check(c->a->auth, i >= 0 ? m->headers[i].value.p : NULL,
                       i >= 0 ? m->headers[i].value.len : 0, c->peer, slb_mono_ms(), who, &retry);
    if (r == SLB_AUTH_OK)
        return true;
    if (r == SLB_AUTH_LIMITED) {
        slb_admin_error_simple(resp, 429, "too_many_failures",
                               "too many failed authentications from %s; retry in %u s", c->peer,
                               retry);
        snprintf(c->extra, sizeof(c->extra), "Retry-After: %u\r\n", retry);
        resp->headers = c->extra;
        return false;
    }
    slb_admin_error_simple(resp, 401, "unauthorized",
                           "missing or wrong bearer token (see admin.token in the state "
                           "directory, or create a key with POST /v1/keys)");
    return false;
}

/* The resource's revision (ETag) as a GET of path answers it now, "" when there is none: what
 * a change is about to replace, for the audit log. */
static void revision_of(struct slb_ctl *ctl, const char *path, char *out)
{
    char p[SLB_ADMIN_SEG * SLB_ADMIN_MAX_SEGS + 8];
    if (strcmp(path, "/v1/apply") == 0)
        path = "/v1/config"; /* apply replaces the whole document */
    snprintf(p, sizeof(p), "%s", path);
    size_t n = strlen(p);
    if (n > 4 && strcmp(p + n - 4, "/crl") == 0)
        p[n - 4] = '\0'; /* a CRL is part of its certificate, */
    else if (n > 5 && strcmp(p + n - 5, "/ocsp") == 0)
        p[n - 5] = '\0'; /* and so is a stapled OCSP response */
    struct slb_admin_req get = {.method = "GET", .path = p, .query = "", .content_type = ""};
    struct slb_admin_resp r = {.status = 200};
    slb_admin_route(ctl, &get, &r);
    snprintf(out, SLB_ADMIN_ETAG_SIZE, "%s", r.status == 200 ? r.etag : "");
    json_decref(r.json);
    free(r.text);
}

/* Check the caller's scope, answer the request, and write an audit line for every attempted
 * change (refused ones included) and every export of the state (it carries private keys). */
static void dispatch(struct slb_admin *a, const struct slb_auth_who *who, const char *peer,
                     const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    bool change = !slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD");
    char old_rev[SLB_ADMIN_ETAG_SIZE] = "";
    if (slb_auth_allowed(who, slb_auth_needed(req->method, req->path), resp)) {
        if (change && strncmp(req->path, "/v1/keys", 8) != 0)
            revision_of(a->ctl, req->path, old_rev);
        if (slb_auth_route(a->auth, who, req, resp))
            ;
        else if (strcmp(req->path, "/v1/audit") == 0)
            slb_audit_route(a->audit, req, resp);
        else
            slb_admin_route(a->ctl, req, resp);
    }
    /* The one read that hands out private keys is audited like a change. */
    bool secrets = !change && strcmp(req->path, "/v1/cluster/export") == 0;
    if (!change && !secrets)
        return;
    const char *result = "ok";
    if (resp->status >= 400) {
        const char *code =
            json_string_value(json_object_get(json_object_get(resp->json, "error"), "code"));
        result = code ? code : "error";
    }
    /* A create names what it made: "groups/web", "certificates/c0123", "keys/ci". */
    char resource[SLB_ADMIN_SEG * (SLB_ADMIN_MAX_SEGS + 1) + 8];
    const char *made = json_string_value(json_object_get(resp->json, "id"));
    if (!made)
        made = json_string_value(json_object_get(resp->json, "name"));
    const char *under = strncmp(req->path, "/v1/", 4) == 0 ? req->path + 4 : req->path;
    snprintf(resource, sizeof(resource), "%s%s%s", under, made && resp->status == 201 ? "/" : "",
             made && resp->status == 201 ? made : "");
    /* The query too: a dry run (?dry_run=true) must not read as an apply. */
    char full[SLB_ADMIN_SEG * (SLB_ADMIN_MAX_SEGS + 2) + 8];
    snprintf(full, sizeof(full), "%s%s%s", req->path, req->query[0] ? "?" : "", req->query);
    /* Only printable ASCII of the request goes into the JSON line. */
    for (char *p = full; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    for (char *p = resource; *p && p < resource + strlen(under); p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    struct slb_audit_entry e = {
        .resource = resource,
        .key = who->name,
        .source = peer,
        .method = req->method,
        .path = full,
        .old_rev = old_rev,
        .new_rev = resp->status < 300 ? resp->etag : "",
        .status = resp->status,
        .result = result,
    };
    slb_audit_write(a->audit, &e);
}

static void job_dispatch(void *arg, const struct slb_auth_who *who, const char *peer,
                         const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    dispatch(arg, who, peer, req, resp);
}

/* A queued change's answer (admin/jobs.h); resp NULL: dropped at stop, never run. */
static void job_answer(void *owner, struct slb_admin_resp *resp, bool keep_alive)
{
    struct admin_conn *c = owner;
    c->job = NULL;
    if (!resp)
        return;
    if (resp->status >= 400 || !keep_alive)
        c->close_after = c->close_after || !keep_alive;
    respond(c, resp);
}

/* In cluster mode a change is queued (true): its answer comes from job_answer. */
static bool job_queue(struct admin_conn *c, const struct slb_auth_who *who,
                      const struct slb_admin_req *req, bool keep_alive)
{
    struct slb_admin *a = c->a;
    struct slb_admin_job *j = slb_admin_jobs_add(&a->jobs, c, who, c->peer, req, keep_alive);
    if (!j)
        return false;
    c->job = j;
    /* Nothing more is read from the connection until it is answered. */
    slb_io_set(&a->ctl->loop, &c->io, 0);
    slb_timer_stop(&a->ctl->loop, &c->timer);
    slb_admin_jobs_start(&a->jobs);
    return true;
}

static void fanout_done(json_t *answer, void *data)
{
    struct admin_conn *c = data;
    struct slb_admin_resp resp = {.status = 200, .json = answer};
    c->fanout = NULL;
    if (!answer)
        slb_admin_error_simple(&resp, 500, "internal", "out of memory");
    if (resp.status >= 400 || !c->fanout_keep_alive)
        c->close_after = true;
    respond(c, &resp);
}

/* GET /v1/stats?scope=cluster in cluster mode, by a caller allowed to read the stats: the
 * other nodes are asked (admin/cluster_stats.h) and the answer comes from fanout_done (true).
 * Anything else (false) goes the usual way, which also answers its errors. */
static bool fanout_start(struct admin_conn *c, const struct slb_http_msg *m,
                         const struct slb_auth_who *who, const struct slb_admin_req *req)
{
    static const char *const params[] = {"scope", NULL};
    struct slb_admin *a = c->a;
    char scope[16];
    bool connected;
    long long rev;
    if (strcmp(req->path, "/v1/stats") != 0 || !slb_admin_method_is(req, "GET") ||
        slb_admin_param(req, "scope", scope, sizeof(scope)) != 1 || strcmp(scope, "cluster") != 0 ||
        !slb_ops_cluster(a->ctl, &connected, &rev))
        return false;
    struct slb_admin_resp check = {.status = 200};
    bool ok = slb_admin_params_ok(req, params, &check) &&
              slb_auth_allowed(who, slb_auth_needed(req->method, req->path), &check);
    json_decref(check.json);
    if (!ok)
        return false;
    int i = slb_http_find_header(m, "authorization", 0);
    char *auth = i >= 0 ? slice_dup(m->headers[i].value) : NULL;
    if (i >= 0 && !auth)
        return false;
    c->fanout = slb_admin_fanout_stats(a->ctl, auth, a->tls != NULL, fanout_done, c);
    free(auth);
    if (!c->fanout)
        return false;
    c->fanout_keep_alive = m->keep_alive;
    slb_io_set(&a->ctl->loop, &c->io, 0);
    slb_timer_stop(&a->ctl->loop, &c->timer);
    return true;
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
    if (ui) {
        slb_admin_ui(&req, &resp);
        goto out;
    }
    if (public_path) {
        slb_admin_route(ctl, &req, &resp);
        goto out;
    }
    struct slb_auth_who who = {0};
    if (!authenticate(c, m, &who, &resp))
        goto out;
    if (fanout_start(c, m, &who, &req)) {
        json_decref(resp.json);
        goto done;
    }
    if (job_queue(c, &who, &req, m->keep_alive)) {
        json_decref(resp.json);
        goto done;
    }
    dispatch(c->a, &who, c->peer, &req, &resp);
out:
    if (resp.status >= 400 || !m->keep_alive)
        c->close_after = c->close_after || !m->keep_alive;
    respond(c, &resp);
done:
    free(target);
    free(method);
    free(ctype);
    free(if_match);
}

static void try_request(struct admin_conn *c)
{
    if (c->job || c->fanout)
        return; /* pipelined requests wait until the change is answered */
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
        ssize_t w = conn_send(c, cont, sizeof(cont) - 1);
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
    if ((events & EPOLLOUT) && c->outlen == 0 && c->ssl) {
        /* A TLS read waited to write: read again. */
        slb_io_set(loop, io, EPOLLIN);
        events = EPOLLIN;
    }
    if (events & EPOLLOUT) {
        while (c->outoff < c->outlen) {
            ssize_t n = conn_send(c, c->out + c->outoff, c->outlen - c->outoff);
            if (n == 0)
                return;
            if (n < 0) {
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
        /* Bytes TLS already decrypted raise no socket event: read them now. */
        if (!(c->ssl && c->outlen == 0 && SSL_pending(c->ssl) > 0))
            return;
    }
    do {
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
        ssize_t n = conn_recv(c, c->in + c->inlen, c->incap - c->inlen);
        if (n == 0)
            return;
        if (n < 0) {
            conn_close(c);
            return;
        }
        c->inlen += (size_t)n;
        slb_timer_start(loop, &c->timer, ADMIN_IDLE_MS);
        try_request(c);
        /* Requests are answered one at a time: with an answer under way, the rest waits. */
    } while (c->ssl && c->outlen == 0 && !c->job && !c->fanout && SSL_pending(c->ssl) > 0);
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    conn_close(t->data);
}

static void resume_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct admin_listen *l = t->data;
    slb_io_set(loop, &l->io, EPOLLIN);
}

static void peer_text(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, host, sizeof(host));
    else if (ss->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, host, sizeof(host));
    else
        snprintf(host, sizeof(host), "unix");
    snprintf(out, size, "%s", host);
}

static void accept_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct admin_listen *l = io->data;
    struct slb_admin *a = l->a;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: the level-triggered socket would wake us at once,
                 * forever. Stop watching it for a moment. */
                slb_io_set(loop, io, 0);
                slb_timer_start(loop, &l->pause, 100);
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
        peer_text(&ss, c->peer, sizeof(c->peer));
        if (a->tls && !l->unix_path[0]) {
            c->ssl = SSL_new(a->tls);
            if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
                ERR_clear_error();
                SSL_free(c->ssl);
                free(c);
                close(fd);
                continue;
            }
            SSL_set_accept_state(c->ssl);
        }
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

/* A unix socket at path (after "unix:"), mode 0660: its group may use the API (with a token
 * or key, like any client). A socket left by a previous run is replaced; any other file is
 * not. */
static int listen_unix(struct admin_listen *l, const char *path, int fd, struct slb_err *err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (!path[0] || strlen(path) >= sizeof(sun.sun_path)) {
        if (fd >= 0)
            close(fd);
        return slb_err_set(err, 400, "invalid_value", "--admin",
                           "unix socket path \"%s\" is empty or too long", path);
    }
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    struct stat st;
    if (fd >= 0) { /* handed over: the same socket, already bound and listening at path */
        l->fd = fd;
        snprintf(l->unix_path, sizeof(l->unix_path), "%s", path);
        if (lstat(path, &st) == 0)
            l->path_ino = st.st_ino, l->path_dev = st.st_dev;
        slb_info("admin API on unix:%s (handed over)", path);
        return 0;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return slb_err_set(err, 400, "bind_failed", "--admin",
                               "%s exists and is not a socket; remove it or choose another path",
                               path);
        unlink(path);
    }
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    /* Created 0600 at bind (no window where others could connect), then opened to the group. */
    mode_t old = umask(0177);
    int rc = l->fd < 0 ? -1 : bind(l->fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    umask(old);
    if (rc == 0 && (chmod(path, 0660) < 0 || listen(l->fd, 128) < 0))
        rc = -1, e = errno;
    if (rc < 0) {
        slb_err_set(err, 400, "bind_failed", "--admin",
                    "cannot listen on unix:%s for the admin API: %s", path, strerror(e));
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
        return SLB_EINVAL;
    }
    snprintf(l->unix_path, sizeof(l->unix_path), "%s", path);
    if (lstat(path, &st) == 0)
        l->path_ino = st.st_ino, l->path_dev = st.st_dev;
    slb_info("admin API on unix:%s", path);
    return 0;
}

static int listen_tcp(struct admin_listen *l, const char *addr, int fd, struct slb_err *err)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (slb_config_parse_hostport(addr, &ss, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return slb_err_set(err, 400, "invalid_value", "--admin",
                           "admin address \"%s\" is not ADDR:PORT or unix:PATH", addr);
    }
    if (fd >= 0) { /* handed over: already bound and listening */
        l->fd = fd;
        slb_info("admin API on %s://%s (handed over)", l->a->tls ? "https" : "http", addr);
        return 0;
    }
    l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (l->fd >= 0)
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&ss, len) < 0 || listen(l->fd, 128) < 0) {
        slb_err_set(err, 400, "bind_failed", "--admin", "cannot listen on %s for the admin API: %s",
                    addr, strerror(errno));
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
        return SLB_EINVAL;
    }
    slb_info("admin API on %s://%s", l->a->tls ? "https" : "http", addr);
    return 0;
}

/* The admin API's TLS: the certificate (chain) and key from PEM files, TLS 1.2 or later with
 * forward secrecy only, as for listeners. */
static SSL_CTX *tls_new(const char *cert, const char *key, struct slb_err *err)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
        SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") == 1 &&
        SSL_CTX_use_certificate_chain_file(ctx, cert) == 1 &&
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1 &&
        SSL_CTX_check_private_key(ctx) == 1) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                     SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        return ctx;
    }
    const char *why = ERR_reason_error_string(ERR_peek_last_error());
    slb_err_set(err, 400, "invalid_tls", "--admin-cert",
                "cannot use %s and %s for the admin API's TLS: %s", cert, key,
                why ? why : "unknown error");
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

int slb_admin_listen_fd(const struct slb_admin *a)
{
    return a->nls > 0 ? a->ls[0].fd : -1;
}

void slb_admin_keep_paths(struct slb_admin *a)
{
    for (int i = 0; a && i < a->nls; i++)
        a->ls[i].unix_path[0] = '\0';
}

struct slb_admin *slb_admin_new(struct slb_ctl *ctl, const struct slb_options *opt,
                                int inherited_fd, struct slb_err *err)
{
    struct slb_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        slb_err_set(err, 500, "internal", "--admin", "out of memory");
        if (inherited_fd >= 0)
            close(inherited_fd);
        return NULL;
    }
    a->ctl = ctl;
    slb_admin_jobs_init(&a->jobs, ctl, job_dispatch, job_answer, a);
    unsigned max_failures =
        opt->admin_auth_failures < 0 ? SLB_AUTH_FAIL_MAX : (unsigned)opt->admin_auth_failures;
    if (!(a->auth = slb_auth_new(ctl->state_dir, ctl->token, max_failures, err)) ||
        !(a->audit = slb_audit_open(ctl->state_dir, err)))
        goto fail;
    if ((opt->admin_cert || opt->admin_key) &&
        !(a->tls = tls_new(opt->admin_cert ? opt->admin_cert : "(none)",
                           opt->admin_key ? opt->admin_key : "(none)", err)))
        goto fail;
    const char *const *addrs = opt->admin_addrs;
    int naddrs = opt->nadmin;
    for (int i = 0; i < naddrs && i < SLB_ADMIN_MAX_LISTEN; i++) {
        struct admin_listen *l = &a->ls[i];
        l->a = a;
        int fd = i == 0 ? inherited_fd : -1;
        inherited_fd = -1;
        int rc = strncmp(addrs[i], "unix:", 5) == 0 ? listen_unix(l, addrs[i] + 5, fd, err)
                                                    : listen_tcp(l, addrs[i], fd, err);
        if (rc < 0)
            goto fail;
        a->nls++;
        slb_io_init(&l->io, l->fd, accept_cb, l);
        slb_timer_init(&l->pause, resume_cb, l);
        slb_io_set(&ctl->loop, &l->io, EPOLLIN);
    }
    return a;
fail:
    if (inherited_fd >= 0)
        close(inherited_fd);
    slb_admin_free(a);
    return NULL;
}

void slb_admin_free(struct slb_admin *a)
{
    if (!a)
        return;
    slb_admin_jobs_deinit(&a->jobs);
    while (a->conns)
        conn_close(a->conns);
    for (int i = 0; i < a->nls; i++) {
        struct admin_listen *l = &a->ls[i];
        slb_timer_stop(&a->ctl->loop, &l->pause);
        slb_io_set(&a->ctl->loop, &l->io, 0);
        close(l->fd);
        /* Only our own socket file: a next process may have bound a new one at the path. */
        struct stat st;
        if (l->unix_path[0] && lstat(l->unix_path, &st) == 0 && st.st_ino == l->path_ino &&
            st.st_dev == l->path_dev)
            unlink(l->unix_path);
    }
    slb_auth_free(a->auth);
    slb_audit_free(a->audit);
    SSL_CTX_free(a->tls);
    free(a);
}
