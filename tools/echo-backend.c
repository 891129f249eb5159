/* SPDX-License-Identifier: Apache-2.0 */
/* echo-backend: a standalone TCP echo / minimal HTTP/1.1 backend that end-to-end tests and the
 * demo put behind slbd; it reports what it received (name, headers, PROXY header, raw bytes). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN 32
#define BUF_SIZE 65536 /* per-connection read buffer; also the largest request head */
#define MAX_HEADERS 100
#define MAX_BYTES_BODY (1ULL << 36) /* /bytes/N cap: 64 GiB, more than any test needs */
#define MAX_SLOW_MS 600000

/* Settings from the command line; written once by main before any thread starts. */
static struct {
    const char *name;
    bool http;
    bool proxy;
    int record_fd; /* -1 when --record is not given */
    long delay_ms;
} cfg = {.record_fd = -1};

/* One accepted connection, owned by the thread that serves it and freed when it ends. */
struct conn {
    int fd;
    struct sockaddr_storage peer;
    size_t start, end; /* unread bytes are buf[start, end) */
    bool eof;
    bool have_proxy;  /* a PROXY header was received ... */
    bool proxy_known; /* ... and it named addresses (not UNKNOWN/LOCAL) */
    char proxy_src[64], proxy_dst[64];
    char buf[BUF_SIZE];
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "echo-backend: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* --- socket I/O ---------------------------------------------------------------------------- */

/* MSG_NOSIGNAL as well as the ignored SIGPIPE: a peer that vanished is an ordinary event. */
static bool send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads more bytes into the buffer (compacting it first) and appends them to the record file
 * with one write, so the file holds exactly the byte stream that reached us. Returns bytes
 * read, 0 at EOF or when the buffer is full, -1 on error. */
static ssize_t conn_fill(struct conn *c)
{
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    if (c->end == sizeof(c->buf))
        return 0;
    ssize_t n;
    do {
        n = recv(c->fd, c->buf + c->end, sizeof(c->buf) - c->end, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        c->eof = true;
    if (n <= 0)
        return n;
    if (cfg.record_fd >= 0 && write(cfg.record_fd, c->buf + c->end, (size_t)n) != n)
        fprintf(stderr, "echo-backend: short write to record file\n");
    c->end += (size_t)n;
    return n;
}

static size_t conn_avail(const struct conn *c)
{
    return c->end - c->start;
}

/* Makes at least want bytes available; false on EOF/error first. */
static bool conn_need(struct conn *c, size_t want)
{
    while (conn_avail(c) < want)
        if (conn_fill(c) <= 0)
            return false;
    return true;
}

/* --- PROXY header (parsed here on purpose: this program must not depend on libslb) --------- */

static void fmt_addr(int family, const void *addr, unsigned port, char *out, size_t size)
{
    char a[INET6_ADDRSTRLEN] = "?";
    inet_ntop(family, addr, a, sizeof(a));
    if (family == AF_INET6)
        snprintf(out, size, "[%s]:%u", a, port);
    else
        snprintf(out, size, "%s:%u", a, port);
}

static bool parse_port(const char *s, unsigned *out)
{
    if (!*s || strlen(s) > 5)
        return false;
    unsigned v = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return false;
        v = v * 10 + (unsigned)(*s - '0');
    }
    *out = v;
    return v <= 65535;
}

/* "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n", at most 107 bytes. */
static bool proxy_v1(struct conn *c)
{
    char *crlf = NULL;
    for (;;) {
        size_t n = conn_avail(c) < 107 ? conn_avail(c) : 107;
        crlf = memmem(c->buf + c->start, n, "\r\n", 2);
        if (crlf || conn_avail(c) >= 107)
            break;
        if (conn_fill(c) <= 0)
            return false;
    }
    if (!crlf)
        return false;
    char line[108];
    size_t len = (size_t)(crlf - (c->buf + c->start));
    memcpy(line, c->buf + c->start, len);
    line[len] = '\0';
    c->start += len + 2;

    char proto[8], s[64], d[64], sp[8], dp[8], extra[2];
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' '))
        return true;
    if (sscanf(line, "PROXY %7s %63s %63s %7s %7s %1s", proto, s, d, sp, dp, extra) != 5)
        return false;
    int family = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
    unsigned char sa[16], da[16];
    unsigned sport, dport;
    if (!family || inet_pton(family, s, sa) != 1 || inet_pton(family, d, da) != 1 ||
        !parse_port(sp, &sport) || !parse_port(dp, &dport))
        return false;
    fmt_addr(family, sa, sport, c->proxy_src, sizeof(c->proxy_src));
    fmt_addr(family, da, dport, c->proxy_dst, sizeof(c->proxy_dst));
    c->proxy_known = true;
    return true;
}

static const unsigned char v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                         0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static bool proxy_v2(struct conn *c)
{
    if (!conn_need(c, 16))
        return false;
    const unsigned char *h = (const unsigned char *)c->buf + c->start;
    if (memcmp(h, v2_sig, 12) != 0 || (h[12] >> 4) != 2 || (h[12] & 0xf) > 1)
        return false;
    size_t body = ((size_t)h[14] << 8) | h[15];
    if (16 + body > sizeof(c->buf) || !conn_need(c, 16 + body))
        return false;
    h = (const unsigned char *)c->buf + c->start; /* conn_need may have moved the data */
    const unsigned char *p = h + 16;
    bool proxy_cmd = (h[12] & 0xf) == 1;
    if (proxy_cmd && h[13] == 0x11 && body >= 12) {
        fmt_addr(AF_INET, p, (unsigned)(p[8] << 8 | p[9]), c->proxy_src, sizeof(c->proxy_src));
        fmt_addr(AF_INET, p + 4, (unsigned)(p[10] << 8 | p[11]), c->proxy_dst,
                 sizeof(c->proxy_dst));
        c->proxy_known = true;
    } else if (proxy_cmd && h[13] == 0x21 && body >= 36) {
        fmt_addr(AF_INET6, p, (unsigned)(p[32] << 8 | p[33]), c->proxy_src, sizeof(c->proxy_src));
        fmt_addr(AF_INET6, p + 16, (unsigned)(p[34] << 8 | p[35]), c->proxy_dst,
                 sizeof(c->proxy_dst));
        c->proxy_known = true;
    } else if (proxy_cmd && h[13] != 0x00) {
        return false; /* a family we do not report, or a block too short for its family */
    }
    c->start += 16 + body;
    return true;
}

/* Reads the PROXY header that must open the connection; false closes the connection. */
static bool proxy_read(struct conn *c)
{
    if (!conn_need(c, 1))
        return false;
    bool ok = c->buf[c->start] == 'P' ? proxy_v1(c) : proxy_v2(c);
    if (!ok)
        fprintf(stderr, "echo-backend: invalid or missing PROXY header, closing\n");
    c->have_proxy = ok;
    return ok;
}

/* --- TCP mode ------------------------------------------------------------------------------ */

static void serve_tcp(struct conn *c)
{
    /* The first bytes decide between the WHO question and plain echo, so hold them back while
     * they are still a prefix of "WHO\n". */
    static const char who[] = "WHO\n";
    for (;;) {
        size_t n = conn_avail(c) < 4 ? conn_avail(c) : 4;
        if (memcmp(c->buf + c->start, who, n) != 0)
            break;
        if (n == 4) {
            char line[256];
            if (c->have_proxy)
                snprintf(line, sizeof(line), "%s PROXY=%s\n", cfg.name,
                         c->proxy_known ? c->proxy_src : "UNKNOWN");
            else
                snprintf(line, sizeof(line), "%s\n", cfg.name);
            if (!send_all(c->fd, line, strlen(line)))
                return;
            c->start += 4;
            break;
        }
        if (c->eof || conn_fill(c) <= 0)
            break;
    }
    for (;;) {
        if (conn_avail(c) > 0) {
            if (!send_all(c->fd, c->buf + c->start, conn_avail(c)))
                return;
            c->start = c->end = 0;
        }
        if (c->eof || conn_fill(c) <= 0)
            break;
    }
    /* Everything is echoed; pass the client's half-close on so it sees our EOF too. */
    if (c->eof)
        shutdown(c->fd, SHUT_WR);
}

/* --- HTTP mode ----------------------------------------------------------------------------- */

/* A growable string for building responses. Allocation failure aborts: this is a test tool. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            abort();
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Bytes above 0x7f are written as \u00XX so the output is always valid JSON in UTF-8, whatever
 * a client put in its headers. */
static void sb_json_str(struct sbuf *b, const char *s, size_t n)
{
    sb_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            sb_add(b, esc, 2);
        } else if (ch < 0x20 || ch > 0x7e) {
            sb_printf(b, "\\u%04x", ch);
        } else {
            sb_add(b, (const char *)&ch, 1);
        }
    }
    sb_add(b, "\"", 1);
}

struct header {
    char *name; /* lowercased in place */
    size_t nlen;
    char *val;
    size_t vlen;
};

/* A parsed request head. The head is copied out of the connection buffer so the slices stay
 * valid while the body is read (which may move the buffer). */
struct request {
    char *head;
    char *method, *target;
    int minor; /* HTTP/1.minor */
    struct header h[MAX_HEADERS];
    size_t nh;
    bool chunked, has_length, close, keep_alive_10, expect_continue;
    unsigned long long length;
    unsigned long long body_bytes;
};

static bool is_tchar(unsigned char ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Does the comma-separated header value contain token (case-insensitive)? */
static bool has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
            return true;
    }
    return false;
}

static bool parse_ull(const char *s, size_t n, unsigned long long max, unsigned long long *out)
{
    if (n == 0 || n > 19)
        return false;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* Parses head[0, len) (ending in the blank line, lines ending in CRLF or a bare LF). Returns 0
 * or the status to answer with before closing (400, 501). */
static int parse_head(struct request *r, char *head, size_t len)
{
    memset(r, 0, sizeof(*r));
    r->head = head;
    char *p = head, *end = head + len;
    char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
        return 400;
    *eol = '\0';
    if (eol > p && eol[-1] == '\r')
        eol[-1] = '\0';
    char *sp1 = strchr(p, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1)
        return 400;
    *sp1 = *sp2 = '\0';
    r->method = p;
    r->target = sp1 + 1;
    for (char *m = r->method; *m; m++)
        if (!is_tchar((unsigned char)*m))
            return 400;
    for (char *t = r->target; *t; t++)
        if ((unsigned char)*t <= 0x20 || *t == 0x7f)
            return 400;
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)ver[7]) || ver[8])
        return 400;
    r->minor = ver[7] - '0';

    for (p = eol + 1; p < end;) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            return 400;
        char *le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (le == p)
            break; /* the blank line */
        if (*p == ' ' || *p == '\t')
            return 400; /* obsolete line folding */
        char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon || colon == p || r->nh == MAX_HEADERS)
            return 400;
        for (char *n = p; n < colon; n++) {
            if (!is_tchar((unsigned char)*n))
                return 400;
            *n = (char)tolower((unsigned char)*n);
        }
        char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        struct header *h = &r->h[r->nh++];
        *h = (struct header){p, (size_t)(colon - p), v, (size_t)(ve - v)};
        p = eol + 1;
    }

    for (size_t i = 0; i < r->nh; i++) {
        struct header *h = &r->h[i];
        if (h->nlen == 14 && memcmp(h->name, "content-length", 14) == 0) {
            unsigned long long v;
            if (!parse_ull(h->val, h->vlen, ~0ULL >> 1, &v) || (r->has_length && v != r->length))
                return 400;
            r->has_length = true;
            r->length = v;
        } else if (h->nlen == 17 && memcmp(h->name, "transfer-encoding", 17) == 0) {
            if (r->chunked || !(h->vlen == 7 && strncasecmp(h->val, "chunked", 7) == 0))
                return 501;
            r->chunked = true;
        } else if (h->nlen == 10 && memcmp(h->name, "connection", 10) == 0) {
            r->close |= has_token(h->val, h->vlen, "close");
            r->keep_alive_10 |= has_token(h->val, h->vlen, "keep-alive");
        } else if (h->nlen == 6 && memcmp(h->name, "expect", 6) == 0) {
            r->expect_continue = h->vlen == 12 && strncasecmp(h->val, "100-continue", 12) == 0;
        }
    }
    /* Both framings at once is the classic smuggling vector; a correct server refuses it. */
    if (r->chunked && r->has_length)
        return 400;
    if (r->minor == 0 && !r->keep_alive_10)
        r->close = true;
    return 0;
}

/* Reads and counts a Content-Length body. */
static bool read_length_body(struct conn *c, struct request *r)
{
    unsigned long long left = r->length;
    while (left > 0) {
        if (conn_avail(c) == 0 && conn_fill(c) <= 0)
            return false;
        size_t take = conn_avail(c) < left ? conn_avail(c) : (size_t)left;
        c->start += take;
        left -= take;
        r->body_bytes += take;
    }
    return true;
}

/* Returns a pointer to the next line (terminated by LF) in the buffer and its length without
 * the line ending, consuming it; NULL on EOF, error or a line longer than the buffer. */
static char *read_line(struct conn *c, size_t *len)
{
    for (;;) {
        char *lf = memchr(c->buf + c->start, '\n', conn_avail(c));
        if (lf) {
            char *line = c->buf + c->start;
            size_t n = (size_t)(lf - line);
            c->start += n + 1;
            if (n > 0 && line[n - 1] == '\r')
                n--;
            *len = n;
            return line;
        }
        if (conn_fill(c) <= 0)
            return NULL;
    }
}

/* Reads a chunked body: size lines (hex, optional extensions), data, CRLF, then trailers. */
static bool read_chunked_body(struct conn *c, struct request *r)
{
    for (;;) {
        size_t n;
        char *line = read_line(c, &n);
        if (!line)
            return false;
        unsigned long long size = 0;
        size_t i = 0;
        for (; i < n && isxdigit((unsigned char)line[i]); i++) {
            if (i >= 15)
                return false;
            int ch = tolower((unsigned char)line[i]);
            size = size * 16 + (unsigned long long)(isdigit(ch) ? ch - '0' : ch - 'a' + 10);
        }
        if (i == 0 || (i < n && line[i] != ';' && line[i] != ' ' && line[i] != '\t'))
            return false;
        if (size == 0)
            break;
        struct request tmp = {.length = size};
        if (!read_length_body(c, &tmp))
            return false;
        r->body_bytes += size;
        if (!read_line(c, &n) || n != 0)
            return false;
    }
    for (;;) { /* trailer section ends with an empty line */
        size_t n;
        if (!read_line(c, &n))
            return false;
        if (n == 0)
            return true;
    }
}

static const char *reason(int status)
{
    static const struct {
        int status;
        const char *text;
    } reasons[] = {
        {200, "OK"},
        {201, "Created"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {413, "Content Too Large"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].status == status)
            return reasons[i].text;
    return "Status";
}

/* Sends status line and headers; the body (if any) follows separately. */
static bool send_head(struct conn *c, int status, const char *ctype, unsigned long long clen,
                      bool body_allowed, bool close)
{
    struct sbuf b = {0};
    sb_printf(&b, "HTTP/1.1 %d %s\r\nX-Backend: %s\r\n", status, reason(status), cfg.name);
    if (body_allowed)
        sb_printf(&b, "Content-Type: %s\r\nContent-Length: %llu\r\n", ctype, clen);
    sb_printf(&b, "Connection: %s\r\n\r\n", close ? "close" : "keep-alive");
    bool ok = send_all(c->fd, b.p, b.len);
    free(b.p);
    return ok;
}

static void send_error(struct conn *c, int status)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%d %s\n", status, reason(status));
    if (send_head(c, status, "text/plain", (unsigned long long)n, true, true))
        send_all(c->fd, body, (size_t)n);
}

static void json_echo(struct sbuf *b, const struct conn *c, const struct request *r)
{
    sb_add(b, "{\"server\":", 10);
    sb_json_str(b, cfg.name, strlen(cfg.name));
    sb_add(b, ",\"method\":", 10);
    sb_json_str(b, r->method, strlen(r->method));
    sb_add(b, ",\"path\":", 8);
    sb_json_str(b, r->target, strlen(r->target));
    sb_add(b, ",\"headers\":{", 12);
    /* Repeated fields are joined with ", " (RFC 9110 5.3) so the object keeps one key each. */
    bool first = true;
    for (size_t i = 0; i < r->nh; i++) {
        const struct header *h = &r->h[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = r->h[j].nlen == h->nlen && memcmp(r->h[j].name, h->name, h->nlen) == 0;
        if (seen)
            continue;
        struct sbuf v = {0};
        for (size_t j = i; j < r->nh; j++) {
            if (r->h[j].nlen != h->nlen || memcmp(r->h[j].name, h->name, h->nlen) != 0)
                continue;
            if (v.len)
                sb_add(&v, ", ", 2);
            sb_add(&v, r->h[j].val, r->h[j].vlen);
        }
        if (!first)
            sb_add(b, ",", 1);
        first = false;
        sb_json_str(b, h->name, h->nlen);
        sb_add(b, ":", 1);
        sb_json_str(b, v.p ? v.p : "", v.len);
        free(v.p);
    }
    sb_printf(b, "},\"body_bytes\":%llu", r->body_bytes);
    char peer[80] = "";
    if (c->peer.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&c->peer;
        fmt_addr(AF_INET, &sin->sin_addr, ntohs(sin->sin_port), peer, sizeof(peer));
    } else if (c->peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&c->peer;
        fmt_addr(AF_INET6, &sin6->sin6_addr, ntohs(sin6->sin6_port), peer, sizeof(peer));
    }
    sb_add(b, ",\"peer\":", 8);
    sb_json_str(b, peer, strlen(peer));
    if (c->have_proxy) {
        if (c->proxy_known) {
            sb_add(b, ",\"proxy\":{\"src\":", 16);
            sb_json_str(b, c->proxy_src, strlen(c->proxy_src));
            sb_add(b, ",\"dst\":", 7);
            sb_json_str(b, c->proxy_dst, strlen(c->proxy_dst));
            sb_add(b, "}", 1);
        } else {
            sb_add(b, ",\"proxy\":{\"src\":null,\"dst\":null}", 32);
        }
    }
    sb_add(b, "}\n", 2);
}

static bool send_x_bytes(struct conn *c, unsigned long long n)
{
    static char xs[16384];
    if (!xs[0])
        memset(xs, 'x', sizeof(xs)); /* idempotent, so a benign race between threads */
    while (n > 0) {
        size_t k = n < sizeof(xs) ? (size_t)n : sizeof(xs);
        if (!send_all(c->fd, xs, k))
            return false;
        n -= k;
    }
    return true;
}

/* Answers one parsed request (body already consumed). Returns false to close the connection. */
static bool respond(struct conn *c, struct request *r)
{
    bool head = strcmp(r->method, "HEAD") == 0;
    size_t plen = strcspn(r->target, "?");
    const char *path = r->target;
    bool close = r->close;
    int status = 200;
    unsigned long long nbytes = 0;
    long slow = 0;
    enum { JSON, OK, BYTES } kind = JSON;

    if (plen == 7 && strncmp(path, "/health", 7) == 0) {
        kind = OK;
    } else if (plen > 8 && strncmp(path, "/status/", 8) == 0) {
        unsigned long long v;
        if (!parse_ull(path + 8, plen - 8, 599, &v) || v < 200) {
            send_error(c, 400);
            return false;
        }
        status = (int)v;
    } else if (plen > 7 && strncmp(path, "/bytes/", 7) == 0) {
        if (!parse_ull(path + 7, plen - 7, MAX_BYTES_BODY, &nbytes)) {
            send_error(c, 400);
            return false;
        }
        kind = BYTES;
    } else if (plen > 6 && strncmp(path, "/slow/", 6) == 0) {
        unsigned long long v;
        if (!parse_ull(path + 6, plen - 6, MAX_SLOW_MS, &v)) {
            send_error(c, 400);
            return false;
        }
        slow = (long)v;
    } else if (plen == 6 && strncmp(path, "/close", 6) == 0) {
        close = true;
    }

    if (cfg.delay_ms > 0)
        sleep_ms(cfg.delay_ms);
    if (slow > 0)
        sleep_ms(slow);

    /* 204 and 304 never carry a body or its length; HEAD carries the length without it. */
    bool body_allowed = status != 204 && status != 304;
    struct sbuf b = {0};
    const char *ctype = "application/json";
    unsigned long long clen;
    if (kind == OK) {
        sb_add(&b, "ok", 2);
        ctype = "text/plain";
        clen = b.len;
    } else if (kind == BYTES) {
        ctype = "application/octet-stream";
        clen = nbytes;
    } else {
        json_echo(&b, c, r);
        clen = b.len;
    }
    bool ok = send_head(c, status, ctype, clen, body_allowed, close);
    if (ok && body_allowed && !head)
        ok = kind == BYTES ? send_x_bytes(c, nbytes) : send_all(c->fd, b.p, b.len);
    free(b.p);
    return ok && !close;
}

static void serve_http(struct conn *c)
{
    for (;;) {
        /* Find the end of the head: CRLFCRLF, or LFLF from lenient clients. */
        size_t hlen = 0;
        for (size_t scanned = 0;;) {
            char *s = c->buf + c->start;
            size_t n = conn_avail(c);
            for (size_t i = scanned; i < n && !hlen; i++) {
                if (s[i] != '\n')
                    continue;
                if (i >= 1 && s[i - 1] == '\n')
                    hlen = i + 1;
                else if (i >= 3 && s[i - 1] == '\r' && s[i - 2] == '\n' && s[i - 3] == '\r')
                    hlen = i + 1;
            }
            if (hlen)
                break;
            scanned = n;
            if (n == sizeof(c->buf)) {
                send_error(c, 431);
                return;
            }
            /* Offsets are relative to c->start, so compaction inside conn_fill keeps them. */
            if (conn_fill(c) <= 0)
                return; /* clean close between requests, or a truncated head */
        }
        /* Leading blank lines before a request line are allowed by RFC 9112 2.2. */
        if (hlen <= 2 && (c->buf[c->start] == '\n' || c->buf[c->start] == '\r')) {
            c->start += hlen;
            continue;
        }
        char *head = malloc(hlen + 1);
        if (!head)
            return;
        memcpy(head, c->buf + c->start, hlen);
        head[hlen] = '\0';
        c->start += hlen;

        struct request r;
        int status = parse_head(&r, head, hlen);
        bool keep = false;
        if (status) {
            send_error(c, status);
        } else {
            if (r.expect_continue && r.minor >= 1 && (r.chunked || r.length > 0))
                send_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            bool body_ok = r.chunked ? read_chunked_body(c, &r) : read_length_body(c, &r);
            if (!body_ok)
                send_error(c, 400);
            else
                keep = respond(c, &r);
        }
        free(head);
        if (!keep)
            return;
    }
}

/* --- connections and listeners ------------------------------------------------------------- */

static void *conn_main(void *arg)
{
    struct conn *c = arg;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!cfg.proxy || proxy_read(c)) {
        if (cfg.http)
            serve_http(c);
        else
            serve_tcp(c);
    }
    close(c->fd);
    free(c);
    return NULL;
}

static void conn_start(int fd, const struct sockaddr_storage *peer)
{
    struct conn *c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->fd = fd;
    c->peer = *peer;
    c->start = c->end = 0;
    c->eof = c->have_proxy = c->proxy_known = false;
    c->proxy_src[0] = c->proxy_dst[0] = '\0';

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    if (pthread_create(&t, &attr, conn_main, c) != 0) {
        fprintf(stderr, "echo-backend: cannot start a thread, dropping connection\n");
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
}

/* ADDR:PORT, [V6ADDR]:PORT or :PORT (all addresses). */
static int listen_on(const char *spec)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || !colon[1])
        die("--listen wants ADDR:PORT, got '%s'", spec);
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof(host))
        die("address too long: '%s'", spec);
    memcpy(host, spec, hl);
    host[hl] = '\0';
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
    if (rc != 0)
        die("cannot resolve '%s': %s", spec, gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0)
        die("cannot listen on '%s': %s", spec, strerror(errno));
    freeaddrinfo(ai);
    return fd;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo-backend --listen ADDR:PORT [--listen ADDR:PORT ...] --name NAME\n"
                    "                    [--mode http|tcp] [--proxy-protocol] [--record FILE]\n"
                    "                    [--delay-ms N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *listen_specs[MAX_LISTEN];
    int nlisten = 0;
    cfg.http = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_val = i + 1 < argc;
        if (strcmp(a, "--listen") == 0 && has_val) {
            if (nlisten == MAX_LISTEN)
                die("at most %d --listen", MAX_LISTEN);
            listen_specs[nlisten++] = argv[++i];
        } else if (strcmp(a, "--name") == 0 && has_val) {
            cfg.name = argv[++i];
        } else if (strcmp(a, "--mode") == 0 && has_val) {
            const char *m = argv[++i];
            if (strcmp(m, "http") != 0 && strcmp(m, "tcp") != 0)
                die("--mode is http or tcp");
            cfg.http = strcmp(m, "http") == 0;
        } else if (strcmp(a, "--proxy-protocol") == 0) {
            cfg.proxy = true;
        } else if (strcmp(a, "--record") == 0 && has_val) {
            const char *f = argv[++i];
            cfg.record_fd = open(f, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (cfg.record_fd < 0)
                die("cannot open '%s': %s", f, strerror(errno));
        } else if (strcmp(a, "--delay-ms") == 0 && has_val) {
            unsigned long long v;
            if (!parse_ull(argv[i + 1], strlen(argv[i + 1]), 3600000, &v))
                die("--delay-ms wants a number of milliseconds");
            cfg.delay_ms = (long)v;
            i++;
        } else {
            usage();
        }
    }
    if (nlisten == 0 || !cfg.name)
        usage();

    signal(SIGPIPE, SIG_IGN);
    /* Blocked before any thread exists so every thread inherits the mask and the signals only
     * reach the signalfd that the accept loop polls. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0)
        die("signalfd: %s", strerror(errno));

    struct pollfd pfd[MAX_LISTEN + 1];
    for (int i = 0; i < nlisten; i++)
        pfd[i] = (struct pollfd){.fd = listen_on(listen_specs[i]), .events = POLLIN};
    pfd[nlisten] = (struct pollfd){.fd = sfd, .events = POLLIN};
    printf("ready\n");
    fflush(stdout);

    for (;;) {
        if (poll(pfd, (nfds_t)nlisten + 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll: %s", strerror(errno));
        }
        if (pfd[nlisten].revents)
            break;
        for (int i = 0; i < nlisten; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            struct sockaddr_storage peer;
            socklen_t plen = sizeof(peer);
            int fd = accept4(pfd[i].fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
            if (fd < 0) {
                /* EMFILE and friends: back off instead of spinning on a full table. */
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
                    sleep_ms(10);
                continue;
            }
            conn_start(fd, &peer);
        }
    }
    /* Connection threads may still be mid-write; exiting the process ends them with it. */
    fflush(stdout);
    _exit(0);
}
