/* SPDX-License-Identifier: Apache-2.0 */
/* slbctl's HTTP/1.1 client: one request per connection (Connection: close) over TCP, TLS (the
 * daemon verified against --cacert or the system's CAs) or a unix socket, with a bounded
 * connect, Content-Length, chunked and read-until-close response framing. */
#include "cli/cli.h"

#include "core/err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int slb_cli_url_parse(const char *text, struct slb_cli_url *url, char *err, size_t errlen)
{
    memset(url, 0, sizeof(*url));
    const char *p = text;
    if (strncmp(text, "unix:", 5) == 0) {
        const char *path = text + 5;
        if (!path[0] || strlen(path) >= sizeof(url->unix_path)) {
            snprintf(err, errlen, "bad unix socket path in admin address '%s'", text);
            return -1;
        }
        snprintf(url->unix_path, sizeof(url->unix_path), "%s", path);
        snprintf(url->host, sizeof(url->host), "localhost");
        return 0;
    }
    const char *scheme_end = strstr(text, "://");
    if (scheme_end) {
        size_t slen = (size_t)(scheme_end - text);
        if (slen == 5 && strncasecmp(text, "https", 5) == 0) {
            url->tls = 1;
        } else if (slen != 4 || strncasecmp(text, "http", 4) != 0) {
            snprintf(err, errlen, "unsupported URL scheme in '%s' (http://, https:// or unix:PATH)",
                     text);
            return -1;
        }
        p = scheme_end + 3;
    }
    size_t alen = strcspn(p, "/?#");
    if (alen == 0) {
        snprintf(err, errlen, "no host in admin URL '%s'", text);
        return -1;
    }
    if (memchr(p, '@', alen)) {
        snprintf(err, errlen, "user information is not supported in admin URL '%s'", text);
        return -1;
    }
    const char *port = NULL;
    size_t hlen;
    const char *host = p;
    if (p[0] == '[') {
        const char *close = memchr(p, ']', alen);
        if (!close) {
            snprintf(err, errlen, "unterminated '[' in admin URL '%s'", text);
            return -1;
        }
        host = p + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < p + alen) {
            if (close[1] != ':') {
                snprintf(err, errlen, "junk after ']' in admin URL '%s'", text);
                return -1;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        hlen = colon ? (size_t)(colon - p) : alen;
        if (colon)
            port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(url->host)) {
        snprintf(err, errlen, "bad host in admin URL '%s'", text);
        return -1;
    }
    memcpy(url->host, host, hlen);
    if (port) {
        size_t plen = (size_t)(p + alen - port);
        long v = 0;
        for (size_t i = 0; i < plen; i++) {
            if (!isdigit((unsigned char)port[i]) || v > 65535) {
                plen = 0;
                break;
            }
            v = v * 10 + (port[i] - '0');
        }
        if (plen == 0 || v < 1 || v > 65535) {
            snprintf(err, errlen, "bad port in admin URL '%s'", text);
            return -1;
        }
        snprintf(url->port, sizeof(url->port), "%ld", v);
    } else {
        snprintf(url->port, sizeof(url->port), "%s", url->tls ? "443" : "80");
    }
    const char *rest = p + alen;
    if (*rest == '?' || *rest == '#') {
        snprintf(err, errlen, "query or fragment not allowed in admin URL '%s'", text);
        return -1;
    }
    size_t blen = strlen(rest);
    while (blen > 0 && rest[blen - 1] == '/')
        blen--;
    if (blen >= sizeof(url->base)) {
        snprintf(err, errlen, "path too long in admin URL '%s'", text);
        return -1;
    }
    memcpy(url->base, rest, blen);
    return 0;
}

void slb_cli_resp_deinit(struct slb_cli_resp *resp)
{
    if (!resp)
        return;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

/* Finds the end of the header block; returns the offset just past the blank line, or 0. Bare
 * LF line ends are accepted since some small servers emit them. */
static size_t http_header_end(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (i + 1 < len && buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* The framing facts the body decoder needs from one header block. */
struct http_head {
    int status;
    int chunked;
    long long content_length; /* -1 when absent */
};

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t' || (*s)[*n - 1] == '\r'))
        (*n)--;
}

static int http_parse_head(const char *buf, size_t hend, struct http_head *h,
                           struct slb_cli_resp *resp, char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    h->content_length = -1;
    const char *line = buf;
    const char *end = buf + hend;
    const char *nl = memchr(line, '\n', (size_t)(end - line));
    size_t n = (size_t)(nl - line);
    if (n < 12 || strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)line[9]) ||
        !isdigit((unsigned char)line[10]) || !isdigit((unsigned char)line[11]) ||
        (n > 12 && line[12] != ' ' && line[12] != '\r')) {
        snprintf(err, errlen, "not an HTTP/1.x response");
        return -1;
    }
    h->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if (h->status < 100) {
        snprintf(err, errlen, "bad HTTP status %d", h->status);
        return -1;
    }
    if (resp) {
        const char *r = line + 12;
        size_t rn = n > 12 ? n - 12 : 0;
        trim(&r, &rn);
        snprintf(resp->reason, sizeof(resp->reason), "%.*s", (int)rn, r);
    }
    for (line = nl + 1; line < end; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(end - line));
        n = (size_t)(nl - line);
        if (n == 0 || (n == 1 && line[0] == '\r'))
            break;
        const char *colon = memchr(line, ':', n);
        if (!colon) {
            snprintf(err, errlen, "malformed response header line");
            return -1;
        }
        size_t name_len = (size_t)(colon - line);
        const char *val = colon + 1;
        size_t vlen = n - name_len - 1;
        trim(&val, &vlen);
        if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            long long v = 0;
            if (vlen == 0 || vlen > 15) {
                snprintf(err, errlen, "bad Content-Length");
                return -1;
            }
            for (size_t i = 0; i < vlen; i++) {
                if (!isdigit((unsigned char)val[i])) {
                    snprintf(err, errlen, "bad Content-Length");
                    return -1;
                }
                v = v * 10 + (val[i] - '0');
            }
            if (h->content_length >= 0 && h->content_length != v) {
                snprintf(err, errlen, "conflicting Content-Length headers");
                return -1;
            }
            h->content_length = v;
        } else if (name_len == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            /* chunked must be the last coding for the framing to be chunked */
            h->chunked = vlen >= 7 && strncasecmp(val + vlen - 7, "chunked", 7) == 0;
            if (!h->chunked) {
                snprintf(err, errlen, "unsupported Transfer-Encoding '%.*s'", (int)vlen, val);
                return -1;
            }
        } else if (resp && name_len == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
            snprintf(resp->content_type, sizeof(resp->content_type), "%.*s", (int)vlen, val);
        } else if (resp && name_len == 4 && strncasecmp(line, "ETag", 4) == 0 &&
                   vlen < sizeof(resp->etag)) {
            snprintf(resp->etag, sizeof(resp->etag), "%.*s", (int)vlen, val);
        }
    }
    return 0;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Decodes a chunked body starting at buf[0]. Returns 1 with *out (malloc'd, NUL-terminated)
 * when the last chunk and trailers are all here, 0 when more is needed, -1 when malformed. */
static int http_dechunk(const char *buf, size_t len, char **out, size_t *outlen, char *err,
                        size_t errlen)
{
    char *dst = malloc(len + 1);
    if (!dst) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t pos = 0, dlen = 0;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            goto more;
        size_t size = 0;
        size_t i = pos;
        int digits = 0;
        for (; i < (size_t)(nl - buf) && hexval(buf[i]) >= 0; i++, digits++) {
            if (size > (SLB_CLI_MAX_BODY >> 4)) {
                snprintf(err, errlen, "response body too large");
                goto fail;
            }
            size = size * 16 + (size_t)hexval(buf[i]);
        }
        if (digits == 0 || (buf[i] != ';' && buf[i] != '\r' && buf[i] != '\n' && buf[i] != ' ' &&
                            buf[i] != '\t')) {
            snprintf(err, errlen, "malformed chunk size");
            goto fail;
        }
        pos = (size_t)(nl - buf) + 1;
        if (size == 0)
            break;
        if (len - pos < size + 1)
            goto more;
        memcpy(dst + dlen, buf + pos, size);
        dlen += size;
        pos += size;
        if (buf[pos] == '\r') {
            if (len - pos < 2)
                goto more;
            pos++;
        }
        if (buf[pos] != '\n') {
            snprintf(err, errlen, "chunk not followed by CRLF");
            goto fail;
        }
        pos++;
    }
    /* Trailer fields until an empty line; their content does not matter to us. */
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            goto more;
        size_t n = (size_t)(nl - (buf + pos));
        pos += n + 1;
        if (n == 0 || (n == 1 && buf[pos - 2] == '\r'))
            break;
    }
    dst[dlen] = '\0';
    *out = dst;
    *outlen = dlen;
    return 1;
more:
    free(dst);
    return 0;
fail:
    free(dst);
    return -1;
}

int slb_cli_http_parse(const char *buf, size_t len, int eof, int no_body, struct slb_cli_resp *resp,
                       char *err, size_t errlen)
{
    struct http_head h;
    size_t start = 0;
    /* Interim 1xx answers (100 Continue) come before the real one; skip them. */
    for (;;) {
        size_t hend = http_header_end(buf + start, len - start);
        if (hend == 0) {
            if (len - start > 65536) {
                snprintf(err, errlen, "response header too large");
                return -1;
            }
            if (eof) {
                snprintf(err, errlen,
                         len == 0 ? "connection closed without a response"
                                  : "connection closed inside the response header");
                return -1;
            }
            return 0;
        }
        if (http_parse_head(buf + start, hend, &h, NULL, err, errlen) < 0)
            return -1;
        if (h.status >= 200 || h.status == 101) {
            memset(resp, 0, sizeof(*resp));
            http_parse_head(buf + start, hend, &h, resp, err, errlen);
            resp->status = h.status;
            start += hend;
            break;
        }
        start += hend;
    }
    const char *body = buf + start;
    size_t avail = len - start;
    if (no_body || h.status == 204 || h.status == 304) {
        resp->body = calloc(1, 1);
        resp->body_len = 0;
        return resp->body ? 1 : -1;
    }
    if (h.chunked) {
        int rc = http_dechunk(body, avail, &resp->body, &resp->body_len, err, errlen);
        if (rc == 0 && eof) {
            snprintf(err, errlen, "connection closed inside a chunked body");
            return -1;
        }
        return rc;
    }
    size_t want;
    if (h.content_length >= 0) {
        if ((unsigned long long)h.content_length > SLB_CLI_MAX_BODY) {
            snprintf(err, errlen, "response body too large");
            return -1;
        }
        want = (size_t)h.content_length;
        if (avail < want) {
            if (eof) {
                snprintf(err, errlen, "connection closed after %zu of %zu body bytes", avail, want);
                return -1;
            }
            return 0;
        }
    } else {
        if (avail > SLB_CLI_MAX_BODY) {
            snprintf(err, errlen, "response body too large");
            return -1;
        }
        if (!eof)
            return 0;
        want = avail;
    }
    resp->body = malloc(want + 1);
    if (!resp->body) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(resp->body, body, want);
    resp->body[want] = '\0';
    resp->body_len = want;
    return 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline; 1 ready, 0 timed out, negative errno. */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, (int)left);
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

/* Tries each resolved address in turn within one overall connect deadline, the way a user
 * expects "localhost" to work whether the daemon listens on ::1 or 127.0.0.1. */
static int unix_connect(const struct slb_cli_url *url, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", url->unix_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        /* A unix socket connects at once or not at all (EAGAIN: its backlog is full). */
        int e = errno;
        snprintf(err, errlen, "%s: %s", url->unix_path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    return fd;
}

static int http_connect(const struct slb_cli_url *url, char *err, size_t errlen)
{
    if (url->unix_path[0])
        return unix_connect(url, err, errlen);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(url->host, url->port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", url->host, gai_strerror(gai));
        return -EHOSTUNREACH;
    }
    long long deadline = now_ms() + SLB_CLI_CONNECT_TIMEOUT_MS;
    int last = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = -errno;
            continue;
        }
        int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            rc = wait_fd(fd, POLLOUT, deadline);
            if (rc == 0) {
                close(fd);
                last = -ETIMEDOUT;
                break;
            }
            if (rc > 0) {
                int soerr = 0;
                socklen_t sl = sizeof(soerr);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                    soerr = errno;
                rc = soerr ? -1 : 0;
                errno = soerr;
            } else {
                errno = -rc;
                rc = -1;
            }
        }
        if (rc == 0) {
            freeaddrinfo(res);
            return fd;
        }
        last = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (last == -ETIMEDOUT)
        snprintf(err, errlen, "connection timed out after %d s", SLB_CLI_CONNECT_TIMEOUT_MS / 1000);
    else
        snprintf(err, errlen, "%s", strerror(-last));
    return last;
}

/* One connection: a socket, with TLS over it for https. */
struct conn {
    int fd;
    SSL *ssl;
    short want; /* the poll events a would-block needs */
};

/* send(2)/recv(2) semantics through TLS too: >0 bytes, 0 end of stream (recv), -1 with errno
 * (EAGAIN with c->want set when it would block). */
static ssize_t conn_io(struct conn *c, int out, void *buf, size_t len)
{
    c->want = out ? POLLOUT : POLLIN;
    if (!c->ssl)
        return out ? send(c->fd, buf, len, MSG_NOSIGNAL) : recv(c->fd, buf, len, 0);
    ERR_clear_error();
    int n = out ? SSL_write(c->ssl, buf, (int)(len > 65536 ? 65536 : len))
                : SSL_read(c->ssl, buf, (int)(len > 65536 ? 65536 : len));
    if (n > 0)
        return n;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    errno = e == SSL_ERROR_SYSCALL && errno ? errno : ECONNRESET;
    return -1;
}

/* TLS to the daemon: its certificate must chain to cacert (or the system's CAs) and name the
 * URL's host (a DNS name or an IP address). 0, or -1 with err filled. */
static int tls_start(struct conn *c, const struct slb_cli_url *url, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int ok = ctx && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
             (url->cacert ? SSL_CTX_load_verify_locations(ctx, url->cacert, NULL)
                          : SSL_CTX_set_default_verify_paths(ctx)) == 1;
    if (!ok) {
        snprintf(err, errlen, "cannot load the CA file %s",
                 url->cacert ? url->cacert : "(system default)");
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return -1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, url->host, ip) == 1 || inet_pton(AF_INET6, url->host, ip) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(param, url->host);
    else {
        SSL_set_tlsext_host_name(c->ssl, url->host);
        SSL_set1_host(c->ssl, url->host);
    }
    long long deadline = now_ms() + SLB_CLI_CONNECT_TIMEOUT_MS;
    for (;;) {
        ERR_clear_error();
        int n = SSL_connect(c->ssl);
        if (n == 1)
            return 0;
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline) > 0)
                continue;
            snprintf(err, errlen, "TLS handshake timed out");
            return -1;
        }
        long v = SSL_get_verify_result(c->ssl);
        if (v != X509_V_OK)
            snprintf(err, errlen, "TLS: the daemon's certificate is not trusted: %s%s",
                     X509_verify_cert_error_string(v),
                     url->cacert ? "" : " (give its CA with --cacert FILE)");
        else {
            const char *why = ERR_reason_error_string(ERR_peek_error());
            snprintf(err, errlen, "TLS handshake failed: %s", why ? why : "connection closed");
        }
        ERR_clear_error();
        return -1;
    }
}

static int send_all(struct conn *cn, const char *data, size_t len, char *err, size_t errlen)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = conn_io(cn, 1, (void *)(data + off), len - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(cn->fd, cn->want, now_ms() + SLB_CLI_IO_TIMEOUT_MS);
            if (rc > 0)
                continue;
            snprintf(err, errlen, "%s while sending the request",
                     rc == 0 ? "timed out" : strerror(-rc));
            return rc == 0 ? -ETIMEDOUT : rc;
        }
        int e = n < 0 ? errno : EPIPE;
        snprintf(err, errlen, "sending the request: %s", strerror(e));
        return -e;
    }
    return 0;
}

/* Reads until the parser says the response is complete or the peer closes. */
static int recv_response(struct conn *cn, int no_body, struct slb_cli_resp *resp, char *err,
                         size_t errlen)
{
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    int ret = -ENOMEM;
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        return ret;
    }
    for (;;) {
        if (cap - len < 4096) {
            if (cap >= SLB_CLI_MAX_BODY + 65536) {
                snprintf(err, errlen, "response too large");
                ret = SLB_ETOOBIG;
                goto done;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = conn_io(cn, 0, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(cn->fd, cn->want, now_ms() + SLB_CLI_IO_TIMEOUT_MS);
            if (rc > 0)
                continue;
            snprintf(err, errlen, "%s while waiting for the response",
                     rc == 0 ? "timed out" : strerror(-rc));
            ret = rc == 0 ? -ETIMEDOUT : rc;
            goto done;
        }
        if (n < 0 && len > 0 && errno == ECONNRESET) {
            /* A server that closes right after answering may reset; judge what arrived. */
            n = 0;
        }
        if (n < 0) {
            ret = -errno;
            snprintf(err, errlen, "reading the response: %s", strerror(errno));
            goto done;
        }
        len += (size_t)n;
        int rc = slb_cli_http_parse(buf, len, n == 0, no_body, resp, err, errlen);
        if (rc > 0) {
            ret = 0;
            goto done;
        }
        if (rc < 0) {
            ret = SLB_EPROTO;
            goto done;
        }
    }
done:
    free(buf);
    return ret;
}

int slb_cli_http_request(const struct slb_cli_url *url, const char *method, const char *path,
                         const char *token, const char *if_match, const char *body, size_t body_len,
                         struct slb_cli_resp *resp, char *err, size_t errlen)
{
    memset(resp, 0, sizeof(*resp));
    int v6 = strchr(url->host, ':') != NULL;
    char *head = NULL;
    size_t head_len = 0;
    FILE *f = open_memstream(&head, &head_len);
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    fprintf(f, "%s %s%s HTTP/1.1\r\n", method, url->base, path);
    if (url->unix_path[0])
        fprintf(f, "Host: localhost\r\n");
    else
        fprintf(f, "Host: %s%s%s:%s\r\n", v6 ? "[" : "", url->host, v6 ? "]" : "", url->port);
    fprintf(f, "User-Agent: slbctl\r\nAccept: application/json, text/plain\r\n");
    if (token)
        fprintf(f, "Authorization: Bearer %s\r\n", token);
    if (if_match && if_match[0])
        fprintf(f, "If-Match: %s\r\n", if_match);
    if (body)
        fprintf(f, "Content-Type: application/json\r\n");
    if (body || strcmp(method, "GET") != 0)
        fprintf(f, "Content-Length: %zu\r\n", body ? body_len : 0);
    fprintf(f, "Connection: close\r\n\r\n");
    if (fclose(f) != 0 || !head) {
        free(head);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int fd = http_connect(url, err, errlen);
    if (fd < 0) {
        free(head);
        return fd;
    }
    struct conn cn = {.fd = fd};
    int rc = url->tls ? tls_start(&cn, url, err, errlen) : 0;
    if (rc < 0) {
        free(head);
        SSL_free(cn.ssl);
        close(fd);
        return -ECONNREFUSED;
    }
    rc = send_all(&cn, head, head_len, err, errlen);
    if (rc == 0 && body && body_len > 0)
        rc = send_all(&cn, body, body_len, err, errlen);
    free(head);
    int no_body = strcmp(method, "HEAD") == 0;
    if (rc == 0) {
        rc = recv_response(&cn, no_body, resp, err, errlen);
    } else if (rc == -EPIPE || rc == -ECONNRESET) {
        /* The server may refuse a body early (413) and close; its answer says more than the
         * broken pipe does, so read it when it is there. */
        char err2[256];
        if (recv_response(&cn, no_body, resp, err2, sizeof(err2)) == 0)
            rc = 0;
    }
    SSL_free(cn.ssl);
    close(fd);
    return rc;
}
