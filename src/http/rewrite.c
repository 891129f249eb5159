/* SPDX-License-Identifier: Apache-2.0 */
/* Head rewriting for the HTTP proxy (see rewrite.h). */
#include "http/rewrite.h"

#include "http/rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

char *slb_hbuf_extend(struct slb_hbuf *b, size_t n)
{
    if (b->oom)
        return NULL;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    b->len += n;
    return b->p + b->len - n;
}

void slb_hbuf_put(struct slb_hbuf *b, const char *s, size_t n)
{
    char *p = n ? slb_hbuf_extend(b, n) : NULL;
    if (p)
        memcpy(p, s, n);
}

void slb_hbuf_puts(struct slb_hbuf *b, const char *s)
{
    slb_hbuf_put(b, s, strlen(s));
}

void slb_hbuf_printf(struct slb_hbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(tmp)) {
        b->oom = true; /* our own formats never get this long */
        return;
    }
    slb_hbuf_put(b, tmp, (size_t)n);
}

void slb_hbuf_reset(struct slb_hbuf *b)
{
    b->len = b->off = 0;
    b->oom = false;
}

void slb_hbuf_free(struct slb_hbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = b->off = 0;
    b->oom = false;
}

static void put_uint(struct slb_hbuf *b, unsigned v)
{
    char tmp[12];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    slb_hbuf_put(b, tmp + i, sizeof(tmp) - i);
}

#define name_is(n, lit) SLB_SLICE_IS(n, lit)

/* Does the comma-separated list in v contain token tok (case-insensitive)? */
static bool list_has(struct slb_slice v, const char *tok, size_t toklen)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.len && v.p[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
            e--;
        if (e - s == toklen && strncasecmp(v.p + s, tok, toklen) == 0)
            return true;
    }
    return false;
}

bool slb_http_upgrade_offers(const struct slb_http_msg *m, const char *proto)
{
    size_t plen = strlen(proto);
    for (size_t k = 0; k < m->nheaders; k++) {
        if (!name_is(m->headers[k].name, "upgrade"))
            continue;
        struct slb_slice v = m->headers[k].value;
        size_t i = 0;
        while (i < v.len) {
            while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
                i++;
            /* The protocol name ends at a '/' (its version), a ',' or whitespace. */
            size_t s = i;
            while (i < v.len && v.p[i] != ',' && v.p[i] != '/' && v.p[i] != ' ' && v.p[i] != '\t')
                i++;
            if (i - s == plen && strncasecmp(v.p + s, proto, plen) == 0)
                return true;
            while (i < v.len && v.p[i] != ',')
                i++;
        }
    }
    return false;
}

bool slb_http_is_hop_by_hop(const struct slb_http_msg *m, size_t i)
{
#define HOP(lit)                                                                                   \
    {                                                                                              \
        lit, sizeof(lit) - 1                                                                       \
    }
    static const struct {
        const char *name;
        size_t len;
    } fixed[] = {HOP("connection"),        HOP("keep-alive"),
                 HOP("proxy-connection"),  HOP("te"),
                 HOP("trailer"),           HOP("transfer-encoding"),
                 HOP("upgrade"),           HOP("proxy-authorization"),
                 HOP("proxy-authenticate")};
#undef HOP
    struct slb_slice n = m->headers[i].name;
    for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++) {
        if (slb_slice_eq_ci_n(n, fixed[k].name, fixed[k].len))
            return true;
    }
    /* Fields named in Connection: only a message that has one can list any. */
    if (!m->has_connection)
        return false;
    /* Headers the sender listed in Connection are hop-by-hop too, except the ones this proxy
     * sets itself: a client must not be able to strip our X-Forwarded-* that way. */
    if (n.len >= 11 && strncasecmp(n.p, "x-forwarded", 11) == 0)
        return false;
    /* Nor the message's own framing and target: dropping Content-Length because the sender
     * listed it in Connection would let the body be read as the next message (smuggling). */
    if (name_is(n, "x-real-ip") || name_is(n, "content-length") || name_is(n, "host"))
        return false;
    for (size_t k = 0; k < m->nheaders; k++) {
        if (name_is(m->headers[k].name, "connection") && list_has(m->headers[k].value, n.p, n.len))
            return true;
    }
    return false;
}

#define IS_FOLDED(n, lit) slb_name_eq_folded((n), (lit), sizeof(lit) - 1)

/* Fields this proxy sets itself. A client's field that differs from one of them only by '_'
 * for '-' counts as ours too (and is dropped, see slb_name_starts_folded): the client's could
 * clobber ours at the backend (Puma's CVE-2024-45614). */
static bool is_ours(struct slb_slice n)
{
    if (n.len < 9 || (n.p[0] | 0x20) != 'x')
        return false;
    return IS_FOLDED(n, "x-forwarded-for") || IS_FOLDED(n, "x-forwarded-proto") ||
           IS_FOLDED(n, "x-forwarded-port") || IS_FOLDED(n, "x-real-ip") ||
           slb_name_starts_folded(n, "x-forwarded-clientcert", 22);
}

static void put_header(struct slb_hbuf *out, const struct slb_http_header *h)
{
    slb_hbuf_put(out, h->name.p, h->name.len);
    slb_hbuf_put(out, ": ", 2);
    slb_hbuf_put(out, h->value.p, h->value.len);
    slb_hbuf_put(out, "\r\n", 2);
}

bool slb_http_sticky_prefixed(const char *v, size_t len)
{
    if (len <= SLB_STICKY_ID_LEN || v[SLB_STICKY_ID_LEN] != '~')
        return false;
    for (size_t i = 0; i < SLB_STICKY_ID_LEN; i++) {
        char ch = v[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
            return false;
    }
    return true;
}

/* Copy a Cookie header, removing the "<id>~" prefix we added to cookie `name`. */
static void put_cookie_stripped(struct slb_hbuf *out, const struct slb_http_header *h,
                                const char *name)
{
    size_t nl = strlen(name);
    slb_hbuf_put(out, h->name.p, h->name.len);
    slb_hbuf_put(out, ": ", 2);
    const char *p = h->value.p, *end = p + h->value.len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi ? semi : end;
        const char *s = p;
        while (s < e && *s == ' ')
            s++;
        if ((size_t)(e - s) > nl && strncmp(s, name, nl) == 0 && s[nl] == '=') {
            const char *v = s + nl + 1;
            slb_hbuf_put(out, p, (size_t)(v - p));
            if (slb_http_sticky_prefixed(v, (size_t)(e - v)))
                v += SLB_STICKY_ID_LEN + 1;
            slb_hbuf_put(out, v, (size_t)(e - v));
        } else {
            slb_hbuf_put(out, p, (size_t)(e - p));
        }
        if (semi)
            slb_hbuf_put(out, ";", 1);
        p = semi ? semi + 1 : end;
    }
    slb_hbuf_put(out, "\r\n", 2);
}

/* An absolute-form target ("http://host:port/path?q", RFC 9112 3.2.2) names the host
 * itself, and that wins over the Host header: split it into authority and origin-form. */
bool slb_http_split_absolute(struct slb_slice t, struct slb_slice *authority,
                             struct slb_slice *path)
{
    size_t skip = 0;
    if (t.len >= 7 && strncasecmp(t.p, "http://", 7) == 0)
        skip = 7;
    else if (t.len >= 8 && strncasecmp(t.p, "https://", 8) == 0)
        skip = 8;
    else
        return false;
    const char *a = t.p + skip, *end = t.p + t.len;
    const char *slash = a;
    while (slash < end && *slash != '/' && *slash != '?')
        slash++;
    authority->p = a;
    authority->len = (size_t)(slash - a);
    path->p = slash;
    path->len = (size_t)(end - slash);
    return true;
}

void slb_http_build_request(struct slb_hbuf *out, const struct slb_http_msg *req,
                            const struct slb_fwd_info *fwd)
{
    struct slb_slice authority = {0}, path = req->target;
    bool absolute = slb_http_split_absolute(req->target, &authority, &path);
    slb_hbuf_put(out, req->method_name.p, req->method_name.len);
    slb_hbuf_put(out, " ", 1);
    /* An empty path is "/", except for OPTIONS where it asks about the server as a whole:
     * that is "*" to the origin server (RFC 9112 3.2.4). */
    if (absolute && path.len == 0 && req->method == SLB_HTTP_OPTIONS)
        slb_hbuf_put(out, "*", 1);
    else if (absolute && (path.len == 0 || path.p[0] == '?'))
        slb_hbuf_put(out, "/", 1);
    slb_hbuf_put(out, path.p, path.len);
    slb_hbuf_puts(out, " HTTP/1.1\r\n");
    if (absolute) {
        slb_hbuf_puts(out, "Host: ");
        slb_hbuf_put(out, authority.p, authority.len);
        slb_hbuf_puts(out, "\r\n");
    } else if (!req->host.len && slb_http_find_header(req, "host", 0) < 0 && fwd->default_host) {
        /* HTTP/1.0 needs no Host, the HTTP/1.1 we send does. */
        slb_hbuf_puts(out, "Host: ");
        slb_hbuf_puts(out, fwd->default_host);
        slb_hbuf_puts(out, "\r\n");
    }
    bool prior_xff = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct slb_http_header *h = &req->headers[i];
        if (is_ours(h->name))
            continue; /* set by us alone, below; the client's X-Forwarded-For is extended */
        if (absolute && name_is(h->name, "host"))
            continue;
        /* An expectation in an HTTP/1.0 request is to be ignored (RFC 9110 10.1.1); sent on
         * as HTTP/1.1 it would ask the backend for a 100 the client must not get. */
        if (req->version_minor == 0 && name_is(h->name, "expect"))
            continue;
        if (fwd->rule && slb_rule_drops_header(fwd->rule, h->name))
            continue;
        if (slb_http_is_hop_by_hop(req, i)) {
            if (fwd->upgrade && name_is(h->name, "upgrade"))
                put_header(out, h);
            continue;
        }
        if (fwd->strip_cookie_prefix_name && name_is(h->name, "cookie"))
            put_cookie_stripped(out, h, fwd->strip_cookie_prefix_name);
        else
            put_header(out, h);
    }
    if (fwd->rule) {
        const struct slb_rule_cfg *rc = fwd->rule->cfg;
        for (size_t i = 0; i < rc->nset_headers; i++) {
            slb_hbuf_puts(out, rc->set_headers[i].name);
            slb_hbuf_puts(out, ": ");
            slb_hbuf_puts(out, rc->set_headers[i].value);
            slb_hbuf_puts(out, "\r\n");
        }
    }
    if (req->body == SLB_BODY_CHUNKED)
        slb_hbuf_puts(out, "Transfer-Encoding: chunked\r\n");
    if (fwd->upgrade)
        slb_hbuf_puts(out, "Connection: upgrade\r\n");
    if (fwd->xff) {
        /* Every X-Forwarded-For line the client sent, in order, then the client itself. */
        slb_hbuf_puts(out, "X-Forwarded-For: ");
        for (size_t i = 0; i < req->nheaders; i++) {
            const struct slb_http_header *h = &req->headers[i];
            if (!name_is(h->name, "x-forwarded-for") || !h->value.len)
                continue;
            if (prior_xff)
                slb_hbuf_puts(out, ", ");
            slb_hbuf_put(out, h->value.p, h->value.len);
            prior_xff = true;
        }
        if (prior_xff)
            slb_hbuf_puts(out, ", ");
        slb_hbuf_puts(out, fwd->client_ip);
        slb_hbuf_puts(out, "\r\n");
    }
    /* Per-request path: plain appends, no printf. */
    if (fwd->proto) {
        slb_hbuf_puts(out, "X-Forwarded-Proto: ");
        slb_hbuf_puts(out, fwd->proto);
        slb_hbuf_puts(out, "\r\nX-Forwarded-Port: ");
        put_uint(out, fwd->port);
        slb_hbuf_puts(out, "\r\n");
    }
    slb_hbuf_puts(out, "X-Real-IP: ");
    slb_hbuf_puts(out, fwd->client_ip);
    slb_hbuf_puts(out, "\r\n");
    if (fwd->request_id) {
        slb_hbuf_puts(out, "X-Request-Id: ");
        slb_hbuf_puts(out, fwd->request_id);
        slb_hbuf_puts(out, "\r\n");
    }
    if (fwd->cert_verify) {
        slb_hbuf_printf(out, "X-Forwarded-Clientcert-clientverify: %s\r\n", fwd->cert_verify);
        if (fwd->cert_subject) {
            slb_hbuf_printf(out, "X-Forwarded-Clientcert-subjectdn: %s\r\n", fwd->cert_subject);
            slb_hbuf_printf(out, "X-Forwarded-Clientcert-issuerdn: %s\r\n", fwd->cert_issuer);
            slb_hbuf_printf(out, "X-Forwarded-Clientcert-fingerprint: %s\r\n",
                            fwd->cert_fingerprint);
        }
    }
    slb_hbuf_puts(out, "\r\n");
}

/* Copy a Set-Cookie header, prefixing the value of cookie `name` with "<prefix>~". */
static void put_set_cookie_prefixed(struct slb_hbuf *out, const struct slb_http_header *h,
                                    const char *name, const char *prefix)
{
    size_t nl = strlen(name);
    const char *v = h->value.p;
    size_t vl = h->value.len;
    if (vl > nl && strncmp(v, name, nl) == 0 && v[nl] == '=') {
        slb_hbuf_put(out, h->name.p, h->name.len);
        slb_hbuf_put(out, ": ", 2);
        slb_hbuf_put(out, v, nl + 1);
        slb_hbuf_puts(out, prefix);
        slb_hbuf_put(out, "~", 1);
        slb_hbuf_put(out, v + nl + 1, vl - nl - 1);
        slb_hbuf_put(out, "\r\n", 2);
        return;
    }
    put_header(out, h);
}

void slb_http_build_interim(struct slb_hbuf *out, const struct slb_http_msg *resp)
{
    slb_hbuf_puts(out, "HTTP/1.1 ");
    put_uint(out, (unsigned)resp->status);
    slb_hbuf_put(out, " ", 1);
    slb_hbuf_put(out, resp->reason.p, resp->reason.len);
    slb_hbuf_puts(out, "\r\n");
    for (size_t i = 0; i < resp->nheaders; i++) {
        if (!slb_http_is_hop_by_hop(resp, i))
            put_header(out, &resp->headers[i]);
    }
    slb_hbuf_puts(out, "\r\n");
}

static void build_response(struct slb_hbuf *out, const struct slb_http_msg *resp, bool keep_alive,
                           bool unchunk, const char *set_cookie, const char *cookie_prefix_name,
                           const char *cookie_prefix_value)
{
    slb_hbuf_puts(out, "HTTP/1.1 ");
    put_uint(out, (unsigned)resp->status);
    slb_hbuf_put(out, " ", 1);
    slb_hbuf_put(out, resp->reason.p, resp->reason.len);
    slb_hbuf_puts(out, "\r\n");
    bool upgrade = resp->status == 101;
    for (size_t i = 0; i < resp->nheaders; i++) {
        const struct slb_http_header *h = &resp->headers[i];
        if (slb_http_is_hop_by_hop(resp, i)) {
            if (upgrade && name_is(h->name, "upgrade"))
                put_header(out, h);
            continue;
        }
        if (cookie_prefix_name && name_is(h->name, "set-cookie"))
            put_set_cookie_prefixed(out, h, cookie_prefix_name, cookie_prefix_value);
        else
            put_header(out, h);
    }
    /* The body is forwarded as it came, so its transfer codings must reach the client as they
     * were (a "gzip, chunked" body re-labelled "chunked" would be taken for plain bytes). A
     * body decoded for an HTTP/1.0 client (unchunk) goes without any: chunked was its only
     * coding, and the field does not exist in HTTP/1.0. */
    for (size_t i = 0; i < resp->nheaders && resp->body != SLB_BODY_NONE && !unchunk; i++) {
        if (name_is(resp->headers[i].name, "transfer-encoding"))
            put_header(out, &resp->headers[i]);
    }
    if (set_cookie)
        slb_hbuf_printf(out, "Set-Cookie: %s\r\n", set_cookie);
    if (upgrade)
        slb_hbuf_puts(out, "Connection: upgrade\r\n");
    else if (!keep_alive)
        slb_hbuf_puts(out, "Connection: close\r\n");
    slb_hbuf_puts(out, "\r\n");
}

void slb_http_build_response(struct slb_hbuf *out, const struct slb_http_msg *resp, bool keep_alive,
                             const char *set_cookie, const char *cookie_prefix_name,
                             const char *cookie_prefix_value)
{
    build_response(out, resp, keep_alive, false, set_cookie, cookie_prefix_name,
                   cookie_prefix_value);
}

void slb_http_build_response_unchunked(struct slb_hbuf *out, const struct slb_http_msg *resp,
                                       const char *set_cookie, const char *cookie_prefix_name,
                                       const char *cookie_prefix_value)
{
    build_response(out, resp, false, true, set_cookie, cookie_prefix_name, cookie_prefix_value);
}

bool slb_http_other_transfer_coding(const struct slb_http_msg *msg)
{
    for (size_t i = 0; i < msg->nheaders; i++) {
        if (!name_is(msg->headers[i].name, "transfer-encoding"))
            continue;
        /* A plain split on commas is enough here: an element holding a quote or a parameter
         * is not exactly "chunked", so it counts as another coding, which is the safe side. */
        struct slb_slice v = msg->headers[i].value;
        size_t k = 0;
        while (k < v.len) {
            while (k < v.len && (v.p[k] == ' ' || v.p[k] == '\t' || v.p[k] == ','))
                k++;
            size_t s = k;
            while (k < v.len && v.p[k] != ',')
                k++;
            size_t e = k;
            while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
                e--;
            struct slb_slice coding = {v.p + s, e - s};
            if (coding.len && !name_is(coding, "chunked"))
                return true;
        }
    }
    return false;
}

const char *slb_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 400 ? "Status" : "Error";
    }
}

void slb_http_build_simple(struct slb_hbuf *out, int status, const char *extra_headers,
                           bool keep_alive, bool head_only)
{
    char body[160];
    int blen = snprintf(body, sizeof(body), "<html><body><h1>%d %s</h1></body></html>\n", status,
                        slb_http_reason(status));
    slb_hbuf_printf(out,
                    "HTTP/1.1 %d %s\r\nServer: slbd\r\nContent-Type: text/html\r\n"
                    "Content-Length: %d\r\n%s%s\r\n",
                    status, slb_http_reason(status), blen, extra_headers ? extra_headers : "",
                    keep_alive ? "" : "Connection: close\r\n");
    if (!head_only)
        slb_hbuf_put(out, body, (size_t)blen);
}

void slb_http_build_text(struct slb_hbuf *out, int status, const char *text, bool keep_alive,
                         bool head_only)
{
    size_t len = strlen(text);
    slb_hbuf_printf(out,
                    "HTTP/1.1 %d %s\r\nServer: slbd\r\nContent-Type: text/plain\r\n"
                    "Content-Length: %zu\r\n%s\r\n",
                    status, slb_http_reason(status), len,
                    keep_alive ? "" : "Connection: close\r\n");
    if (!head_only)
        slb_hbuf_put(out, text, len);
}

struct slb_slice slb_http_cookie(const struct slb_http_msg *m, const char *name)
{
    struct slb_slice none = {NULL, 0};
    size_t nl = strlen(name);
    for (size_t i = 0; i < m->nheaders; i++) {
        if (!name_is(m->headers[i].name, "cookie"))
            continue;
        const char *p = m->headers[i].value.p, *end = p + m->headers[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *e = memchr(p, ';', (size_t)(end - p));
            if (!e)
                e = end;
            if ((size_t)(e - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
                struct slb_slice v = {p + nl + 1, (size_t)(e - p - (ptrdiff_t)nl - 1)};
                return v;
            }
            p = e;
        }
    }
    return none;
}
