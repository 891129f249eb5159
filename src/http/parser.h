/* SPDX-License-Identifier: Apache-2.0 */
/* Strict, incremental HTTP/1.1 message-head parser (RFC 9110/9112). Pure: no I/O, no
 * allocation. It parses in place over the caller's buffer and returns slices into it, so the
 * buffer must stay unchanged while the result is used. Anything ambiguous is an error: the
 * proxy never forwards a message whose framing two implementations could read differently. */
#ifndef SLB_HTTP_PARSER_H
#define SLB_HTTP_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_slice {
    const char *p;
    size_t len;
};

#define SLB_HTTP_MAX_HEADERS 100

enum slb_http_method {
    SLB_HTTP_OTHER = 0,
    SLB_HTTP_GET,
    SLB_HTTP_HEAD,
    SLB_HTTP_POST,
    SLB_HTTP_PUT,
    SLB_HTTP_DELETE,
    SLB_HTTP_OPTIONS,
    SLB_HTTP_PATCH,
    SLB_HTTP_CONNECT,
    SLB_HTTP_TRACE,
};

/* Limits: a request line over max_line gives 414, headers over max_headers or a head over
 * max_head_bytes give 431. A NULL pointer or a 0 field means the default. */
struct slb_http_limits {
    size_t max_line;       /* default 8192 */
    size_t max_headers;    /* default 100, at most SLB_HTTP_MAX_HEADERS */
    size_t max_head_bytes; /* default 16384 */
};

struct slb_http_header {
    struct slb_slice name;  /* token, case preserved */
    struct slb_slice value; /* leading/trailing OWS removed */
};

/* Framing of the body, decided by the parser from Content-Length/Transfer-Encoding. */
enum slb_http_body { SLB_BODY_NONE, SLB_BODY_LENGTH, SLB_BODY_CHUNKED, SLB_BODY_UNTIL_CLOSE };

struct slb_http_msg {
    /* request */
    enum slb_http_method method;
    struct slb_slice method_name;
    struct slb_slice target;
    /* response */
    int status;
    struct slb_slice reason;
    /* both */
    int version_minor; /* 0 or 1 (HTTP/1.0, HTTP/1.1) */
    size_t nheaders;
    struct slb_http_header headers[SLB_HTTP_MAX_HEADERS];
    size_t head_len; /* bytes of the head including the final CRLF CRLF */
    enum slb_http_body body;
    uint64_t content_length; /* when body == SLB_BODY_LENGTH */
    bool keep_alive;         /* after Connection: close/keep-alive and the version */
    bool expect_continue;
    bool upgrade;          /* Connection: upgrade with an Upgrade header */
    bool has_connection;   /* a Connection header is present (it may name hop-by-hop fields) */
    struct slb_slice host; /* Host header value (requests), empty when absent */
};

/* Result codes: >0 head complete (value = head_len, which counts the few empty lines a request
 * may be preceded by), 0 need more bytes, <0 = -(HTTP status to answer): -400 malformed, -414
 * line too long, -431 headers too large, -501 unsupported transfer coding, -505 version not
 * supported. For responses (slb_http_parse_response) any failure is -502. Each call rescans
 * the buffer from its start; limits are enforced on incomplete heads too. An Expect other
 * than 100-continue is left to the caller (slb_http_find_header), which answers 417. */
int slb_http_parse_request(const char *buf, size_t len, const struct slb_http_limits *lim,
                           struct slb_http_msg *msg);
/* req_method is the method of the request this answers (HEAD and CONNECT change framing). */
int slb_http_parse_response(const char *buf, size_t len, const struct slb_http_limits *lim,
                            enum slb_http_method req_method, struct slb_http_msg *msg);

void slb_http_limits_default(struct slb_http_limits *lim);

/* Case-insensitive lookup; returns the index of the first header named name or -1. */
int slb_http_find_header(const struct slb_http_msg *msg, const char *name, size_t from);
bool slb_slice_eq_ci(struct slb_slice s, const char *lit);
/* The same with the length known: s equals the n bytes at lit, ignoring ASCII case. */
static inline bool slb_slice_eq_ci_n(struct slb_slice s, const char *lit, size_t n)
{
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s.p[i], b = (unsigned char)lit[i];
        a = (unsigned char)(a >= 'A' && a <= 'Z' ? a + 32 : a);
        b = (unsigned char)(b >= 'A' && b <= 'Z' ? b + 32 : b);
        if (a != b)
            return false;
    }
    return true;
}
/* For a string literal: no strlen, and a length mismatch costs one comparison. */
#define SLB_SLICE_IS(s, lit) slb_slice_eq_ci_n((s), (lit), sizeof(lit) - 1)
/* The first n bytes of s and lit are the same field name as a CGI-style backend reads it
 * (Rack, WSGI, PHP: HTTP_X_REAL_IP for both X-Real-IP and X_Real_IP): ASCII case ignored and
 * '_' taken for '-'. A field slbd sets or removes is matched this way, so that a client's
 * underscore twin cannot stand in for it. */
static inline bool slb_name_starts_folded(struct slb_slice s, const char *lit, size_t n)
{
    if (s.len < n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s.p[i], b = (unsigned char)lit[i];
        a = (unsigned char)(a == '_' ? '-' : a >= 'A' && a <= 'Z' ? a + 32 : a);
        b = (unsigned char)(b == '_' ? '-' : b >= 'A' && b <= 'Z' ? b + 32 : b);
        if (a != b)
            return false;
    }
    return true;
}
static inline bool slb_name_eq_folded(struct slb_slice s, const char *lit, size_t n)
{
    return s.len == n && slb_name_starts_folded(s, lit, n);
}
/* RFC 9110 tchar: the bytes allowed in a method, a field name or a list token:
 * ALPHA / DIGIT / "!#$%&'*+-.^_`|~", as a 256-bit set (bit c). */
static inline bool slb_http_is_tchar(unsigned char c)
{
    static const uint64_t set[4] = {0x03ff6cfa00000000u, 0x57ffffffc7fffffeu, 0, 0};
    return (set[c >> 6] >> (c & 63)) & 1u;
}

/* Incremental chunked-body decoder. Feed raw bytes; it reports how many it consumed and where
 * the data bytes are, so a proxy can re-frame them (slb_rechunk) or decode them. */
#define SLB_CHUNKED_MAX_LINE 4096    /* chunk-size line with its extensions, CRLF excluded */
#define SLB_CHUNKED_MAX_TRAILER 8192 /* whole trailer section, every CRLF included */
/* The largest chunk size accepted (2^31 - 1): a size that does not fit a signed 32-bit
 * integer is refused, as HAProxy does, rather than relayed to (or read from) a peer that could
 * keep it in fewer bits than we do. */
#define SLB_CHUNKED_MAX_SIZE 0x7fffffffu
struct slb_chunked {
    int state;
    uint64_t remaining; /* data bytes left in the current chunk */
    size_t line_len;    /* length of the current chunk-size line so far */
    size_t trailer_len; /* bytes of the trailer section so far */
    bool done;
    /* Set by the caller: a feed returns where the trailer section starts, so that the bytes
     * of the next feeds (slb_chunked_in_trailer) are the trailer section's. */
    bool stop_at_trailer;
    /* Set by the caller for a body it passes on with its trailer section (a client's request):
     * a trailer field that slb_http_trailer_field_banned names is invalid framing (-400), so
     * a backend that merges trailers into the head never sees a second Content-Length or
     * Host. tname holds the start of the field name being read (tname_len saturates). */
    bool refuse_banned_trailers;
    uint8_t tname_len;
    char tname[18];
};
void slb_chunked_init(struct slb_chunked *c);
/* A field that frames, routes or controls the connection of a message (Content-Length,
 * Transfer-Encoding, Host, Connection and the fields it lists by custom, TE, Trailer): it has
 * no place in a trailer section (RFC 9110 6.5.1), and a proxy that passed one on would let a
 * recipient merging trailers into the head see a message other than the one we framed. */
bool slb_http_trailer_field_banned(const char *name, size_t len);
/* The decoder is in the trailer section (after the last chunk, before the end). */
bool slb_chunked_in_trailer(const struct slb_chunked *c);
/* Consumes up to len bytes of buf. On return *data and *data_len give the data bytes found in
 * the consumed prefix (at most one contiguous run per call). Returns bytes consumed (>0 or 0
 * when len == 0) or -400 for invalid framing (bad size, a size above SLB_CHUNKED_MAX_SIZE,
 * missing CRLF, oversized line or extension). c->done is set after the final CRLF of the
 * trailer section; from then on it consumes nothing and returns 0, so bytes after the body (a
 * pipelined request) stay with the caller. Extensions and trailer fields are validated and
 * skipped; data or data_len may be NULL when the caller only needs the framing. */
long slb_chunked_feed(struct slb_chunked *c, const char *buf, size_t len, const char **data,
                      size_t *data_len);

/* Re-framing a chunked body for the next hop: each run of data bytes in hand leaves as one
 * chunk with our own size line (never larger than what was in hand), extensions are dropped,
 * and the trailer section follows the last chunk as it came (validated by the decoder). The
 * peer's size lines never reach the next hop, so a reader there that keeps sizes in fewer
 * bits cannot be made to see a different body. Pure: the caller moves the bytes.
 *
 * One step at a time, when everything of the previous step has gone out:
 *   d = slb_rechunk_next(r, buf, len, &ready);
 *   drop d bytes from the front of buf (framing), then send r->frame[0, frame_len), then the
 *   next `ready` bytes of buf as they are, then drop r->skip bytes (framing after them).
 * Nothing to do (d, ready and frame_len all 0): more bytes are needed, or r->ck.done. */
struct slb_rechunk {
    struct slb_chunked ck;
    uint64_t skip;     /* framing bytes after the ready bytes, dropped once they are sent */
    bool had_data;     /* a data chunk went out: the next frame starts with its CRLF */
    bool last;         /* the last-chunk line went out: the trailer section follows */
    uint8_t frame_len; /* our framing to send before the ready bytes */
    uint8_t frame_off; /* for the caller: how much of frame has gone out */
    char frame[24];    /* "\r\n" + up to 16 hex digits + "\r\n" */
    /* Set by the caller for a body it passes on (a backend's response): trailer field lines
     * that slb_http_trailer_field_banned names are dropped, not sent (dropping: the line in
     * hand is one). A line is held until its name is in hand, which the caller's buffer
     * always has room for (a trailer section is at most SLB_CHUNKED_MAX_TRAILER bytes). */
    bool drop_banned_trailers;
    bool dropping;
};
void slb_rechunk_init(struct slb_rechunk *r);
/* The next step on buf[0, len), the bytes not consumed yet: returns the bytes to drop now, or
 * -400 on invalid framing; sets *ready, r->frame, r->frame_len (frame_off = 0) and r->skip. */
long slb_rechunk_next(struct slb_rechunk *r, const char *buf, size_t len, size_t *ready);

#endif
