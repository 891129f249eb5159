/* SPDX-License-Identifier: Apache-2.0 */
/* Strict, incremental HTTP/1.1 request and response head parser (see parser.h). */
#include "http/parser.h"

#include <limits.h>
#include <string.h>

/* RFC 9112 2.2 says a server SHOULD ignore at least one empty line before a request-line
 * (clients used to send a stray CRLF after a POST body). A few are tolerated; an endless
 * stream of them is not a request. */
#define HEAD_MAX_LEADING_CRLF 4

#define LIMIT_DEFAULT_LINE 8192
#define LIMIT_DEFAULT_HEADERS 100
#define LIMIT_DEFAULT_HEAD 16384

/* Result of a parsing step: a negative HTTP status, "need more bytes" or "done". */
#define STEP_MORE 0
#define STEP_DONE 1

/* One parse over the caller's buffer. `len` is the part the parser may look at: the buffer
 * clipped to max_head_bytes, so running out of it with more bytes in the buffer means the
 * head is too large rather than incomplete. */
struct head_ctx {
    const char *buf;
    size_t len;
    size_t full_len;
    size_t pos;
    size_t max_line;
    size_t max_headers;
    bool request;
};

/* --- character classes ----------------------------------------------------------------------- */

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* field-vchar plus the SP/HTAB allowed inside a field value (RFC 9110 5.5). */
static bool is_field_byte(unsigned char c)
{
    return (c >= 0x21 && c != 0x7f) || c == ' ' || c == '\t';
}

bool slb_slice_eq_ci(struct slb_slice s, const char *lit)
{
    return slb_slice_eq_ci_n(s, lit, strlen(lit));
}

int slb_http_find_header(const struct slb_http_msg *msg, const char *name, size_t from)
{
    size_t n = strlen(name);
    for (size_t i = from; i < msg->nheaders; i++)
        if (slb_slice_eq_ci_n(msg->headers[i].name, name, n))
            return (int)i;
    return -1;
}

void slb_http_limits_default(struct slb_http_limits *lim)
{
    lim->max_line = LIMIT_DEFAULT_LINE;
    lim->max_headers = LIMIT_DEFAULT_HEADERS;
    lim->max_head_bytes = LIMIT_DEFAULT_HEAD;
}

/* --- lists (RFC 9110 5.6.1) ------------------------------------------------------------------ */

/* Next element of a comma-separated list, OWS trimmed, empty elements skipped as the RFC asks.
 * Commas inside a quoted-string do not split, so `a="x,chunked"` stays one element. Returns 1
 * with *elem set, 0 at the end, -1 on an unterminated quoted-string. */
static int list_next(struct slb_slice v, size_t *pos, struct slb_slice *elem)
{
    size_t i = *pos;
    for (;;) {
        while (i < v.len && (is_ows((unsigned char)v.p[i]) || v.p[i] == ','))
            i++;
        if (i >= v.len) {
            *pos = i;
            return 0;
        }
        size_t start = i;
        bool quoted = false;
        for (; i < v.len; i++) {
            char c = v.p[i];
            if (quoted) {
                if (c == '\\') {
                    if (++i >= v.len)
                        return -1;
                } else if (c == '"') {
                    quoted = false;
                }
            } else if (c == '"') {
                quoted = true;
            } else if (c == ',') {
                break;
            }
        }
        if (quoted)
            return -1;
        size_t end = i;
        while (end > start && is_ows((unsigned char)v.p[end - 1]))
            end--;
        *pos = i;
        elem->p = v.p + start;
        elem->len = end - start;
        return 1;
    }
}

static size_t span_token(struct slb_slice s, size_t i)
{
    while (i < s.len && slb_http_is_tchar((unsigned char)s.p[i]))
        i++;
    return i;
}

static size_t span_ows(struct slb_slice s, size_t i)
{
    while (i < s.len && is_ows((unsigned char)s.p[i]))
        i++;
    return i;
}

/* quoted-string starting at s.p[i] == '"'; returns the index after the closing quote or 0. */
static size_t span_quoted(struct slb_slice s, size_t i)
{
    for (i++; i < s.len; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"')
            return i + 1;
        if (c == '\\')
            i++;
    }
    return 0;
}

/* A transfer-coding element: token *( OWS ";" OWS token "=" ( token / quoted-string ) ).
 * Returns the coding name in *name and whether parameters follow, or false when malformed. */
static bool parse_coding(struct slb_slice e, struct slb_slice *name, bool *has_params)
{
    size_t i = span_token(e, 0);
    if (i == 0)
        return false;
    name->p = e.p;
    name->len = i;
    *has_params = false;
    for (;;) {
        i = span_ows(e, i);
        if (i >= e.len)
            return true;
        if (e.p[i] != ';')
            return false;
        *has_params = true;
        i = span_ows(e, i + 1);
        size_t n = span_token(e, i);
        if (n == i)
            return false;
        i = span_ows(e, n);
        if (i >= e.len || e.p[i] != '=')
            return false;
        i = span_ows(e, i + 1);
        if (i < e.len && e.p[i] == '"') {
            i = span_quoted(e, i);
            if (i == 0)
                return false;
        } else {
            n = span_token(e, i);
            if (n == i)
                return false;
            i = n;
        }
    }
}

/* --- start lines ----------------------------------------------------------------------------- */

/* Skips up to HEAD_MAX_LEADING_CRLF empty lines before a request-line. */
static int skip_leading_crlf(struct head_ctx *h)
{
    for (int n = 0;; n++) {
        if (h->pos >= h->len)
            return STEP_MORE;
        if (h->buf[h->pos] != '\r')
            return h->buf[h->pos] == '\n' ? -400 : STEP_DONE;
        if (n == HEAD_MAX_LEADING_CRLF)
            return -400;
        if (h->pos + 1 >= h->len)
            return STEP_MORE;
        if (h->buf[h->pos + 1] != '\n')
            return -400;
        h->pos += 2;
    }
}

/* Finds the CRLF ending the start line at h->pos, checking every byte on the way so garbage
 * (a TLS ClientHello on a plain port, binary junk) is refused at once instead of after a
 * timeout. A request line is VCHAR and SP only; a status line may also carry HTAB and
 * obs-text in its reason phrase. */
static int scan_start_line(const struct head_ctx *h, size_t *line_end)
{
    size_t start = h->pos;
    for (size_t i = start; i < h->len; i++) {
        unsigned char c = (unsigned char)h->buf[i];
        if (c == '\r') {
            if (i + 1 >= h->len)
                return STEP_MORE;
            if (h->buf[i + 1] != '\n')
                return -400;
            *line_end = i;
            return STEP_DONE;
        }
        bool ok = h->request ? (c >= 0x20 && c <= 0x7e) : is_field_byte(c);
        if (!ok)
            return -400;
        if (i - start >= h->max_line)
            return -414;
    }
    return STEP_MORE;
}

/* "HTTP/" DIGIT "." DIGIT at p (8 bytes). Returns the minor version, -505 for a well-formed
 * version other than 1.0/1.1, -400 for anything else. */
static int parse_version(const char *p, size_t n)
{
    if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || !is_digit((unsigned char)p[5]) || p[6] != '.' ||
        !is_digit((unsigned char)p[7]))
        return -400;
    if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
        return -505;
    return p[7] - '0';
}

static const struct {
    const char *name;
    enum slb_http_method method;
} http_methods[] = {
    {"GET", SLB_HTTP_GET},     {"HEAD", SLB_HTTP_HEAD},       {"POST", SLB_HTTP_POST},
    {"PUT", SLB_HTTP_PUT},     {"DELETE", SLB_HTTP_DELETE},   {"OPTIONS", SLB_HTTP_OPTIONS},
    {"PATCH", SLB_HTTP_PATCH}, {"CONNECT", SLB_HTTP_CONNECT}, {"TRACE", SLB_HTTP_TRACE},
};

/* Methods are case-sensitive (RFC 9110 9.1): "get" is some other method, not GET. */
static enum slb_http_method method_lookup(struct slb_slice m)
{
    for (size_t i = 0; i < sizeof(http_methods) / sizeof(http_methods[0]); i++) {
        size_t n = strlen(http_methods[i].name);
        if (m.len == n && memcmp(m.p, http_methods[i].name, n) == 0)
            return http_methods[i].method;
    }
    return SLB_HTTP_OTHER;
}

/* uri-host [ ":" port ] as in Host and in authority-form. reg-name is unreserved, pct-encoded
 * and sub-delims, except ',': a comma would let one implementation read the singleton Host
 * as a list and another as a name. The userinfo '@' is refused (RFC 9110 4.2.4). A port is
 * 1-5 digits up to 65535 when the ':' is there; need_port makes it mandatory. */
static bool valid_authority(struct slb_slice a, bool need_port)
{
    size_t i = 0;
    if (a.len == 0)
        return false;
    if (a.p[0] == '[') {
        for (i = 1; i < a.len && a.p[i] != ']'; i++) {
            unsigned char c = (unsigned char)a.p[i];
            if (!is_hex(c) && c != ':' && c != '.')
                return false;
        }
        if (i >= a.len || i == 1)
            return false;
        i++;
    } else {
        for (; i < a.len && a.p[i] != ':'; i++) {
            unsigned char c = (unsigned char)a.p[i];
            if (c == '%') {
                if (i + 2 >= a.len || !is_hex((unsigned char)a.p[i + 1]) ||
                    !is_hex((unsigned char)a.p[i + 2]))
                    return false;
                i += 2;
                continue;
            }
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
                      (c != '\0' && strchr("-._~!$&'()*+;=", c) != NULL);
            if (!ok)
                return false;
        }
        if (i == 0)
            return false;
    }
    if (i == a.len)
        return !need_port;
    if (a.p[i] != ':')
        return false;
    size_t digits = a.len - (i + 1);
    if (digits == 0 || digits > 5)
        return false;
    unsigned port = 0;
    for (i++; i < a.len; i++) {
        if (!is_digit((unsigned char)a.p[i]))
            return false;
        port = port * 10 + (unsigned)(a.p[i] - '0');
    }
    return port <= 65535;
}

/* RFC 9112 3.2: origin-form for everything, asterisk-form only for OPTIONS, authority-form
 * only (and always) for CONNECT, absolute-form only with an http(s) scheme and a host, so
 * that "host:443" can never be read both as a scheme and as an authority. A fragment is never
 * part of a request-target. Bytes were already limited to VCHAR by scan_start_line. */
static int check_target(enum slb_http_method m, struct slb_slice t)
{
    if (memchr(t.p, '#', t.len) != NULL)
        return -400;
    if (m == SLB_HTTP_CONNECT) /* "*:443" is a reg-name by grammar, never a host to reach */
        return t.p[0] != '*' && valid_authority(t, true) ? 0 : -400;
    if (t.p[0] == '/')
        return 0;
    if (t.len == 1 && t.p[0] == '*')
        return m == SLB_HTTP_OPTIONS ? 0 : -400;
    size_t skip;
    if (t.len > 7 && slb_slice_eq_ci_n((struct slb_slice){t.p, 7}, "http://", 7))
        skip = 7;
    else if (t.len > 8 && slb_slice_eq_ci_n((struct slb_slice){t.p, 8}, "https://", 8))
        skip = 8;
    else
        return -400;
    struct slb_slice auth = {t.p + skip, 0};
    while (skip + auth.len < t.len && t.p[skip + auth.len] != '/' && t.p[skip + auth.len] != '?')
        auth.len++;
    return valid_authority(auth, false) ? 0 : -400;
}

static int parse_request_line(struct head_ctx *h, size_t end, struct slb_http_msg *msg)
{
    struct slb_slice line = {h->buf + h->pos, end - h->pos};
    size_t i = span_token(line, 0);
    if (i == 0 || i >= line.len || line.p[i] != ' ')
        return -400;
    msg->method_name = (struct slb_slice){line.p, i};
    msg->method = method_lookup(msg->method_name);

    size_t t0 = i + 1, t1 = t0;
    while (t1 < line.len && line.p[t1] != ' ')
        t1++;
    if (t1 == t0 || t1 >= line.len)
        return -400;
    msg->target = (struct slb_slice){line.p + t0, t1 - t0};

    int minor = parse_version(line.p + t1 + 1, line.len - (t1 + 1));
    if (minor < 0)
        return minor;
    msg->version_minor = minor;
    int rc = check_target(msg->method, msg->target);
    if (rc < 0)
        return rc;
    h->pos = end + 2;
    return STEP_DONE;
}

/* HTTP-version SP 3DIGIT SP reason-phrase. The SP before an empty reason is required by the
 * grammar but often dropped by servers, so "HTTP/1.1 200" alone is accepted. */
static int parse_status_line(struct head_ctx *h, size_t end, struct slb_http_msg *msg)
{
    const char *p = h->buf + h->pos;
    size_t n = end - h->pos;
    if (n < 12)
        return -400;
    int minor = parse_version(p, 8);
    if (minor < 0)
        return minor;
    if (p[8] != ' ' || !is_digit((unsigned char)p[9]) || !is_digit((unsigned char)p[10]) ||
        !is_digit((unsigned char)p[11]))
        return -400;
    int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (status < 100 || status > 599)
        return -400;
    if (n > 12 && p[12] != ' ')
        return -400;
    msg->version_minor = minor;
    msg->status = status;
    msg->reason = n > 12 ? (struct slb_slice){p + 13, n - 13} : (struct slb_slice){p + n, 0};
    h->pos = end + 2;
    return STEP_DONE;
}

/* --- header section -------------------------------------------------------------------------- */

/* field-line CRLF until the empty line. A line that does not start with a tchar is refused:
 * that covers obs-fold (SP/HTAB), an empty name, a bare LF and whitespace before the colon. */
static int parse_fields(struct head_ctx *h, struct slb_http_msg *msg)
{
    const char *b = h->buf;
    for (;;) {
        size_t i = h->pos;
        if (i >= h->len)
            return STEP_MORE;
        if (b[i] == '\r') {
            if (i + 1 >= h->len)
                return STEP_MORE;
            if (b[i + 1] != '\n')
                return -400;
            h->pos = i + 2;
            return STEP_DONE;
        }
        if (msg->nheaders >= h->max_headers)
            return -431;
        size_t name0 = i;
        while (i < h->len && slb_http_is_tchar((unsigned char)b[i]))
            i++;
        if (i >= h->len)
            return STEP_MORE;
        if (i == name0 || b[i] != ':')
            return -400;
        size_t name1 = i++;
        while (i < h->len && is_ows((unsigned char)b[i]))
            i++;
        size_t val0 = i, val1 = i;
        for (; i < h->len && b[i] != '\r'; i++) {
            unsigned char c = (unsigned char)b[i];
            if (!is_field_byte(c))
                return -400;
            if (!is_ows(c))
                val1 = i + 1;
        }
        if (i + 1 >= h->len)
            return STEP_MORE;
        if (b[i + 1] != '\n')
            return -400;
        struct slb_http_header *f = &msg->headers[msg->nheaders++];
        f->name = (struct slb_slice){b + name0, name1 - name0};
        f->value = (struct slb_slice){b + val0, val1 - val0};
        h->pos = i + 2;
    }
}

/* --- framing and connection semantics -------------------------------------------------------- */

/* What the Transfer-Encoding fields say, all of them read as one list (RFC 9110 5.3). */
struct te_info {
    bool present;
    bool malformed;
    unsigned ncodings;
    bool last_chunked;   /* the final coding is chunked */
    unsigned nchunked;   /* how many times chunked appears */
    bool chunked_params; /* chunked carries parameters, which it has none of */
    bool other;          /* some coding other than chunked is listed */
};

static void scan_te(const struct slb_http_msg *msg, struct te_info *te)
{
    memset(te, 0, sizeof(*te));
    for (int idx = slb_http_find_header(msg, "Transfer-Encoding", 0); idx >= 0;
         idx = slb_http_find_header(msg, "Transfer-Encoding", (size_t)idx + 1)) {
        struct slb_slice v = msg->headers[idx].value, e, name;
        size_t pos = 0;
        int r;
        te->present = true;
        while ((r = list_next(v, &pos, &e)) > 0) {
            bool params;
            if (!parse_coding(e, &name, &params)) {
                te->malformed = true;
                return;
            }
            te->ncodings++;
            te->last_chunked = slb_slice_eq_ci(name, "chunked");
            if (te->last_chunked) {
                te->nchunked++;
                te->chunked_params |= params;
            } else {
                te->other = true;
            }
        }
        if (r < 0) {
            te->malformed = true;
            return;
        }
    }
    /* A Transfer-Encoding field that lists no coding at all frames nothing: refuse it. */
    if (te->present && te->ncodings == 0)
        te->malformed = true;
}

/* Content-Length is 1*DIGIT and must appear once: a list or a repeated field, even with equal
 * values, is refused so no two readers can disagree. Returns 1 when present, 0 when absent,
 * -1 when invalid. */
static int scan_cl(const struct slb_http_msg *msg, uint64_t *out)
{
    int idx = slb_http_find_header(msg, "Content-Length", 0);
    if (idx < 0)
        return 0;
    if (slb_http_find_header(msg, "Content-Length", (size_t)idx + 1) >= 0)
        return -1;
    struct slb_slice v = msg->headers[idx].value;
    if (v.len == 0)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!is_digit(c))
            return -1;
        unsigned d = (unsigned)(c - '0');
        if (n > (UINT64_MAX - d) / 10)
            return -1;
        n = n * 10 + d;
    }
    *out = n;
    return 1;
}

/* Connection options (close, keep-alive, upgrade). Each element must be a token. */
static int scan_connection(const struct slb_http_msg *msg, bool *close, bool *keep, bool *upg,
                           bool *has)
{
    *has = false;
    *close = *keep = *upg = false;
    for (int idx = slb_http_find_header(msg, "Connection", 0); idx >= 0;
         idx = slb_http_find_header(msg, "Connection", (size_t)idx + 1)) {
        *has = true;
        struct slb_slice v = msg->headers[idx].value, e;
        size_t pos = 0;
        int r;
        while ((r = list_next(v, &pos, &e)) > 0) {
            if (span_token(e, 0) != e.len)
                return -400;
            if (slb_slice_eq_ci(e, "close"))
                *close = true;
            else if (slb_slice_eq_ci(e, "keep-alive"))
                *keep = true;
            else if (slb_slice_eq_ci(e, "upgrade"))
                *upg = true;
        }
        if (r < 0)
            return -400;
    }
    return 0;
}

/* keep_alive and upgrade from the Connection options and the version. Upgrade (like
 * 100-continue) is an HTTP/1.1 feature that an HTTP/1.0 message cannot ask for. */
static int connection_semantics(struct slb_http_msg *msg)
{
    bool close, keep, upg;
    if (scan_connection(msg, &close, &keep, &upg, &msg->has_connection) < 0)
        return -400;
    msg->keep_alive = !close && (msg->version_minor == 1 || keep);
    msg->upgrade = upg && msg->version_minor == 1 && slb_http_find_header(msg, "Upgrade", 0) >= 0;
    return 0;
}

/* Expect: only 100-continue is understood; anything else is left for the caller, which finds
 * the field with slb_http_find_header and answers 417. */
static int expect_semantics(struct slb_http_msg *msg)
{
    for (int idx = slb_http_find_header(msg, "Expect", 0); idx >= 0;
         idx = slb_http_find_header(msg, "Expect", (size_t)idx + 1)) {
        struct slb_slice v = msg->headers[idx].value, e;
        size_t pos = 0;
        int r;
        while ((r = list_next(v, &pos, &e)) > 0)
            if (slb_slice_eq_ci(e, "100-continue"))
                msg->expect_continue = msg->version_minor == 1;
        if (r < 0)
            return -400;
    }
    return 0;
}

/* RFC 9112 6.1 and 6.3 for requests, in the order that makes smuggling impossible: any doubt
 * about where the body ends is a 400 and the connection closes. */
static int request_semantics(struct slb_http_msg *msg)
{
    int host = slb_http_find_header(msg, "Host", 0);
    if (host >= 0) {
        if (slb_http_find_header(msg, "Host", (size_t)host + 1) >= 0)
            return -400;
        msg->host = msg->headers[host].value;
        /* An empty Host is what a client sends for a URI without authority (RFC 9110 7.2). */
        if (msg->host.len > 0 && !valid_authority(msg->host, false))
            return -400;
    } else if (msg->version_minor == 1) {
        return -400;
    }

    struct te_info te;
    uint64_t cl = 0;
    scan_te(msg, &te);
    int has_cl = scan_cl(msg, &cl);
    if (has_cl < 0 || te.malformed)
        return -400;
    if (te.present) {
        if (has_cl || msg->version_minor == 0)
            return -400;
        if (!te.last_chunked || te.nchunked != 1 || te.chunked_params)
            return -400;
        if (te.other)
            return -501;
        msg->body = SLB_BODY_CHUNKED;
    } else if (has_cl) {
        msg->body = SLB_BODY_LENGTH;
        msg->content_length = cl;
    } else {
        msg->body = SLB_BODY_NONE;
    }
    if (connection_semantics(msg) < 0)
        return -400;
    return expect_semantics(msg);
}

/* RFC 9112 6.3 for responses. Both framing fields, a broken Content-Length or a
 * Transfer-Encoding in an HTTP/1.0 response are refused even when the status says there is no
 * body: a backend that sends them is confused and the connection must not be reused. */
static int response_semantics(struct slb_http_msg *msg, enum slb_http_method req)
{
    struct te_info te;
    uint64_t cl = 0;
    scan_te(msg, &te);
    int has_cl = scan_cl(msg, &cl);
    if (has_cl < 0 || te.malformed)
        return -502;
    if (te.present && (has_cl || msg->version_minor == 0 || te.nchunked > 1 || te.chunked_params))
        return -502;
    if (connection_semantics(msg) < 0)
        return -502;

    int s = msg->status;
    if (req == SLB_HTTP_HEAD || s < 200 || s == 204 || s == 304)
        msg->body = SLB_BODY_NONE;
    else if (req == SLB_HTTP_CONNECT && s < 300)
        msg->body = SLB_BODY_NONE;
    else if (te.present)
        msg->body = te.last_chunked ? SLB_BODY_CHUNKED : SLB_BODY_UNTIL_CLOSE;
    else if (has_cl)
        msg->body = SLB_BODY_LENGTH;
    else
        msg->body = SLB_BODY_UNTIL_CLOSE;
    if (msg->body == SLB_BODY_LENGTH)
        msg->content_length = cl;
    if (msg->body == SLB_BODY_UNTIL_CLOSE)
        msg->keep_alive = false;
    return 0;
}

/* --- entry points ---------------------------------------------------------------------------- */

static void msg_reset(struct slb_http_msg *msg)
{
    msg->method = SLB_HTTP_OTHER;
    msg->method_name = (struct slb_slice){"", 0};
    msg->target = (struct slb_slice){"", 0};
    msg->status = 0;
    msg->reason = (struct slb_slice){"", 0};
    msg->version_minor = 0;
    msg->nheaders = 0;
    msg->head_len = 0;
    msg->body = SLB_BODY_NONE;
    msg->content_length = 0;
    msg->keep_alive = false;
    msg->expect_continue = false;
    msg->upgrade = false;
    msg->has_connection = false;
    msg->host = (struct slb_slice){"", 0};
}

static void ctx_init(struct head_ctx *h, const char *buf, size_t len,
                     const struct slb_http_limits *lim, bool request)
{
    struct slb_http_limits def;
    if (lim == NULL) {
        slb_http_limits_default(&def);
        lim = &def;
    }
    size_t max_head = lim->max_head_bytes ? lim->max_head_bytes : LIMIT_DEFAULT_HEAD;
    if (max_head > INT_MAX)
        max_head = INT_MAX; /* the head length is returned as an int */
    h->buf = buf;
    h->full_len = len;
    h->len = len < max_head ? len : max_head;
    h->pos = 0;
    h->max_line = lim->max_line ? lim->max_line : LIMIT_DEFAULT_LINE;
    h->max_headers = lim->max_headers ? lim->max_headers : LIMIT_DEFAULT_HEADERS;
    if (h->max_headers > SLB_HTTP_MAX_HEADERS)
        h->max_headers = SLB_HTTP_MAX_HEADERS;
    h->request = request;
}

/* The syntax pass shared by requests and responses: start line and field lines. Running out
 * of the clipped view while the buffer holds more means the head is over max_head_bytes. */
static int parse_head(struct head_ctx *h, struct slb_http_msg *msg)
{
    int rc = STEP_DONE;
    size_t end = 0;
    if (h->request)
        rc = skip_leading_crlf(h);
    if (rc == STEP_DONE)
        rc = scan_start_line(h, &end);
    if (rc == STEP_DONE)
        rc = h->request ? parse_request_line(h, end, msg) : parse_status_line(h, end, msg);
    if (rc == STEP_DONE)
        rc = parse_fields(h, msg);
    if (rc == STEP_MORE && h->full_len > h->len)
        return -431;
    if (rc == STEP_DONE)
        msg->head_len = h->pos;
    return rc;
}

int slb_http_parse_request(const char *buf, size_t len, const struct slb_http_limits *lim,
                           struct slb_http_msg *msg)
{
    struct head_ctx h;
    msg_reset(msg);
    ctx_init(&h, buf, len, lim, true);
    int rc = parse_head(&h, msg);
    if (rc != STEP_DONE)
        return rc;
    rc = request_semantics(msg);
    return rc < 0 ? rc : (int)msg->head_len;
}

int slb_http_parse_response(const char *buf, size_t len, const struct slb_http_limits *lim,
                            enum slb_http_method req_method, struct slb_http_msg *msg)
{
    struct head_ctx h;
    msg_reset(msg);
    ctx_init(&h, buf, len, lim, false);
    int rc = parse_head(&h, msg);
    if (rc != STEP_DONE)
        return rc < 0 ? -502 : rc;
    rc = response_semantics(msg, req_method);
    return rc < 0 ? -502 : (int)msg->head_len;
}
