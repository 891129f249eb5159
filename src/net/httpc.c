/* SPDX-License-Identifier: Apache-2.0 */
/* The outbound HTTP(S) client on an slbd loop: curl's multi-socket API tells us which sockets
 * to watch and when to wake it (CURLMOPT_SOCKETFUNCTION, CURLMOPT_TIMERFUNCTION); the loop
 * hands readiness back with curl_multi_socket_action. Nothing here blocks. */
#include "net/httpc.h"

#include "core/err.h"
#include "core/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTPC_MAX_BODY_DEFAULT (16u << 20)
#define HTTPC_CONNECT_TIMEOUT_DEFAULT 10000u

/* One socket curl asked us to watch; freed at the end of the iteration after curl says
 * CURL_POLL_REMOVE, since an event for it may still be in the loop's current batch. */
struct httpc_sock {
    struct slb_io io;
    struct slb_httpc *c;
    struct httpc_sock *prev, *next;
};

/* One request, owned by the client from slb_httpc_start until its done callback has returned
 * (or until it is cancelled); freed at the end of that loop iteration. */
struct slb_httpc_req {
    struct slb_httpc *c;
    struct slb_httpc_req *prev, *next;
    CURL *easy;
    struct curl_slist *headers;
    slb_httpc_chunk_cb on_chunk;
    slb_httpc_done_cb on_done;
    void *data;
    char *body;
    size_t body_len, body_cap, max_body;
    int abort_rc; /* set by the write callback when it stops the transfer */
    /* Idle timeout: stamped on each arrival, checked lazily when the timer fires (curl's
     * low-speed limit averages over seconds and reacts far too late to a silent stream). */
    struct slb_timer idle;
    uint32_t idle_ms;
    uint64_t last_data_ms;
    bool finished;  /* taken out of the multi handle */
    bool cancelled; /* no callback any more; a deferred reap frees it */
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void sock_link(struct slb_httpc *c, struct httpc_sock *hs)
{
    hs->prev = NULL;
    hs->next = c->socks;
    if (c->socks)
        c->socks->prev = hs;
    c->socks = hs;
}

static void sock_unlink(struct slb_httpc *c, struct httpc_sock *hs)
{
    if (hs->prev)
        hs->prev->next = hs->next;
    else
        c->socks = hs->next;
    if (hs->next)
        hs->next->prev = hs->prev;
    hs->prev = hs->next = NULL;
}

static void req_link(struct slb_httpc *c, struct slb_httpc_req *r)
{
    r->prev = NULL;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->nreqs++;
}

static void req_unlink(struct slb_httpc *c, struct slb_httpc_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
    c->nreqs--;
}

static void req_free(void *obj)
{
    struct slb_httpc_req *r = obj;
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body);
    free(r);
}

/* Take a request out of curl's hands: after this no curl callback refers to it. */
static void req_detach(struct slb_httpc_req *r)
{
    if (r->finished)
        return;
    r->finished = true;
    slb_timer_stop(r->c->loop, &r->idle);
    curl_multi_remove_handle(r->c->multi, r->easy);
    req_unlink(r->c, r);
}

static void finish(struct slb_httpc_req *r, CURLcode cc);

static void idle_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_httpc_req *r = t->data;
    uint64_t now = slb_loop_now(loop);
    if (now < r->last_data_ms + r->idle_ms) {
        slb_timer_start(loop, t, r->last_data_ms + r->idle_ms - now);
        return;
    }
    /* Not inside curl here, so the transfer can be ended at once. */
    snprintf(r->errbuf, sizeof(r->errbuf), "nothing received for %u ms", r->idle_ms);
    finish(r, CURLE_OPERATION_TIMEDOUT);
}

static int map_curl_error(struct slb_httpc_req *r, CURLcode cc)
{
    switch (cc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
        return -ECONNREFUSED;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return SLB_ETLS;
    case CURLE_WRITE_ERROR:
        return r->abort_rc ? r->abort_rc : -EIO;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return SLB_EINVAL;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
        /* A TLS 1.3 server refusing our certificate says so after the handshake, in an alert
         * on the first read: a TLS error, not a broken connection worth retrying. */
        if (strstr(r->errbuf, "alert"))
            return SLB_ETLS;
        return -EIO;
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
        return -EIO;
    default:
        return SLB_EPROTO;
    }
}

static void finish(struct slb_httpc_req *r, CURLcode cc)
{
    struct slb_httpc *c = r->c;
    req_detach(r);
    if (r->cancelled)
        return; /* the reap deferred by slb_httpc_cancel frees it */
    struct slb_httpc_result res = {.body = r->body ? r->body : "", .body_len = r->body_len};
    res.rc = map_curl_error(r, cc);
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &res.status);
    long sent = 0;
    curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent);
    res.connected = sent > 0;
    if (res.rc < 0)
        res.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc);
    else
        res.error = "";
    if (r->abort_rc == SLB_ETOOBIG)
        res.error = "response body too big";
    r->on_done(r, &res, r->data);
    slb_loop_defer_free(c->loop, req_free, r);
}

static void check_done(struct slb_httpc *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct slb_httpc_req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode cc = msg->data.result;
        if (r)
            finish(r, cc);
    }
}

static void sock_io_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct httpc_sock *hs = io->data;
    struct slb_httpc *c = hs->c;
    int flags = 0;
    if (events & EPOLLIN)
        flags |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        flags |= CURL_CSELECT_ERR;
    int running;
    curl_multi_socket_action(c->multi, io->fd, flags, &running);
    check_done(c);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct slb_httpc *c = userp;
    struct httpc_sock *hs = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (hs) {
            if (slb_io_set(c->loop, &hs->io, 0) < 0)
                slb_io_forget(&hs->io);
            sock_unlink(c, hs);
            curl_multi_assign(c->multi, s, NULL);
            slb_loop_defer_free(c->loop, free, hs);
        }
        return 0;
    }
    if (!hs) {
        hs = calloc(1, sizeof(*hs));
        if (!hs)
            return -1;
        slb_io_init(&hs->io, s, sock_io_cb, hs);
        hs->c = c;
        sock_link(c, hs);
        curl_multi_assign(c->multi, s, hs);
    }
    uint32_t ev = 0;
    if (what & CURL_POLL_IN)
        ev |= EPOLLIN;
    if (what & CURL_POLL_OUT)
        ev |= EPOLLOUT;
    int rc = slb_io_set(c->loop, &hs->io, ev);
    if (rc < 0) {
        slb_warn("httpc: watching socket %d failed: %s", (int)s, slb_strerror(rc));
        return -1;
    }
    return 0;
}

static void timer_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_httpc *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

/* curl asks to be woken after timeout_ms (0: as soon as possible, which the loop does after
 * this iteration's events, outside any curl call, as curl requires); -1 disarms. */
static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct slb_httpc *c = userp;
    if (timeout_ms < 0)
        slb_timer_stop(c->loop, &c->timer);
    else
        slb_timer_start(c->loop, &c->timer, (uint64_t)timeout_ms);
    return 0;
}

int slb_httpc_init(struct slb_httpc *c, struct slb_loop *loop)
{
    memset(c, 0, sizeof(*c));
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        return SLB_EINTERNAL;
    c->loop = loop;
    slb_timer_init(&c->timer, timer_cb, c);
    c->multi = curl_multi_init();
    if (!c->multi)
        return -ENOMEM;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return 0;
}

void slb_httpc_deinit(struct slb_httpc *c)
{
    if (!c->multi)
        return;
    while (c->reqs) {
        struct slb_httpc_req *r = c->reqs;
        req_detach(r);
        /* A cancelled request is freed by its pending reap, which no longer needs c. */
        if (!r->cancelled)
            req_free(r);
    }
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    /* Sockets curl still had open (its connection cache) are closed by the cleanup. */
    while (c->socks) {
        struct httpc_sock *hs = c->socks;
        sock_unlink(c, hs);
        slb_io_forget(&hs->io);
        free(hs);
    }
    slb_timer_stop(c->loop, &c->timer);
}

static size_t write_cb(char *ptr, size_t size, size_t n, void *ud)
{
    struct slb_httpc_req *r = ud;
    size_t len = size * n;
    if (r->cancelled)
        return 0;
    if (r->idle_ms)
        r->last_data_ms = slb_loop_now(r->c->loop);
    if (r->on_chunk) {
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        int rc = r->on_chunk(r, status, ptr, len, r->data);
        if (rc < 0) {
            r->abort_rc = rc;
            return 0;
        }
        return r->cancelled ? 0 : len;
    }
    if (len > r->max_body - r->body_len) {
        r->abort_rc = SLB_ETOOBIG;
        return 0;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->abort_rc = -ENOMEM;
            return 0;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

int slb_httpc_start(struct slb_httpc *c, const struct slb_httpc_opts *o,
                    struct slb_httpc_req **reqp)
{
    if (reqp)
        *reqp = NULL;
    if (!c->multi || !o->url || !o->on_done)
        return SLB_EINVAL;
    struct slb_httpc_req *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->c = c;
    slb_timer_init(&r->idle, idle_cb, r);
    r->on_chunk = o->on_chunk;
    r->on_done = o->on_done;
    r->data = o->data;
    r->max_body = o->max_body ? o->max_body : HTTPC_MAX_BODY_DEFAULT;
    r->easy = curl_easy_init();
    if (!r->easy)
        goto fail;
    CURL *e = r->easy;
    bool ok = true;
    ok &= curl_easy_setopt(e, CURLOPT_URL, o->url) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)r) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_WRITEDATA, r) == CURLE_OK;
    /* HTTP/1.1 keeps one stream per connection, which long-lived watch streams want. */
    ok &= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK;
    ok &= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms) == CURLE_OK;
    ok &=
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(o->connect_timeout_ms ? o->connect_timeout_ms
                                                      : HTTPC_CONNECT_TIMEOUT_DEFAULT)) == CURLE_OK;
    if (o->body) {
        ok &= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)o->body_len) == CURLE_OK;
        ok &= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, o->body) == CURLE_OK;
    }
    if (o->method)
        ok &= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method) == CURLE_OK;
    if (o->ca_file) {
        ok &= curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file) == CURLE_OK;
        ok &= curl_easy_setopt(e, CURLOPT_CAPATH, NULL) == CURLE_OK;
    }
    if (o->cert_file)
        ok &= curl_easy_setopt(e, CURLOPT_SSLCERT, o->cert_file) == CURLE_OK;
    if (o->key_file)
        ok &= curl_easy_setopt(e, CURLOPT_SSLKEY, o->key_file) == CURLE_OK;
    /* No "Expect: 100-continue" round trip before larger bodies. */
    r->headers = curl_slist_append(NULL, "Expect:");
    ok &= r->headers != NULL;
    for (size_t i = 0; ok && o->headers && o->headers[i]; i++) {
        struct curl_slist *l = curl_slist_append(r->headers, o->headers[i]);
        ok &= l != NULL;
        if (l)
            r->headers = l;
    }
    ok &= curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers) == CURLE_OK;
    if (!ok)
        goto fail;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        goto fail;
    req_link(c, r);
    if (o->idle_timeout_ms) {
        r->idle_ms = o->idle_timeout_ms;
        r->last_data_ms = slb_loop_now(c->loop);
        slb_timer_start(c->loop, &r->idle, r->idle_ms);
    }
    if (reqp)
        *reqp = r;
    return 0;
fail:
    req_free(r);
    return -ENOMEM;
}

bool slb_httpc_header(struct slb_httpc_req *req, const char *name, char *out, size_t cap)
{
    struct curl_header *h = NULL;
    if (!req || !req->easy || cap == 0 ||
        curl_easy_header(req->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
        return false;
    snprintf(out, cap, "%s", h->value);
    return true;
}

static void reap(void *obj)
{
    struct slb_httpc_req *r = obj;
    if (!r->finished)
        req_detach(r);
    req_free(r);
}

void slb_httpc_cancel(struct slb_httpc_req *req)
{
    if (!req || req->cancelled || req->finished)
        return;
    /* Curl may be inside a callback of this very transfer, where removing the handle is not
     * allowed; the write callback refuses further data and the reap runs after this loop
     * iteration. */
    req->cancelled = true;
    slb_loop_defer(req->c->loop, reap, req);
}
