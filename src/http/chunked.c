/* SPDX-License-Identifier: Apache-2.0 */
/* Strict, byte-at-a-time chunked transfer-coding decoder (RFC 9112 7.1), and the re-framing
 * of a chunked body for the next hop built on it (see parser.h). */
#include "http/parser.h"

#include <string.h>

/* One state per position in the grammar, so any split of the input between two calls lands on
 * a state and no byte is ever looked at twice. */
enum chunked_state {
    CH_SIZE = 0,   /* chunk-size hex digits */
    CH_EXT_NAME0,  /* after ';': first byte of an extension name */
    CH_EXT_NAME,   /* in an extension name */
    CH_EXT_VAL0,   /* after '=': token or quoted-string starts */
    CH_EXT_TOKEN,  /* in a token extension value */
    CH_EXT_QUOTED, /* in a quoted-string extension value */
    CH_EXT_QESC,   /* after a backslash inside the quoted-string */
    CH_EXT_QEND,   /* after the closing quote */
    CH_SIZE_LF,    /* CR seen at the end of the size line */
    CH_DATA,       /* chunk data, c->remaining bytes left */
    CH_DATA_CR,    /* CRLF after the data */
    CH_DATA_LF,
    CH_TRAILER,       /* start of a trailer field line or of the final CRLF */
    CH_TRAILER_NAME,  /* in a trailer field name */
    CH_TRAILER_VALUE, /* in a trailer field value */
    CH_TRAILER_LF,    /* CR seen at the end of a trailer field line */
    CH_FINAL_LF,      /* CR seen on the empty line that ends the body */
    CH_DONE,
    CH_ERROR,
};

void slb_chunked_init(struct slb_chunked *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CH_SIZE;
}

bool slb_http_trailer_field_banned(const char *name, size_t len)
{
    static const char *const banned[] = {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        NULL,
    };
    struct slb_slice n = {name, len};
    for (const char *const *b = banned; *b; b++)
        if (slb_slice_eq_ci(n, *b))
            return true;
    return false;
}

/* The trailer field name byte just consumed (refuse_banned_trailers): kept while it fits, and
 * at the colon the whole name is judged. 0, or -1 for a banned field. */
static int trailer_name_step(struct slb_chunked *c, int prev, unsigned char ch)
{
    if (c->state == CH_TRAILER_NAME) {
        if (prev == CH_TRAILER)
            c->tname_len = 0;
        if (c->tname_len < sizeof(c->tname))
            c->tname[c->tname_len] = (char)ch;
        if (c->tname_len < UINT8_MAX)
            c->tname_len++;
        return 0;
    }
    if (prev == CH_TRAILER_NAME && c->tname_len <= sizeof(c->tname) &&
        slb_http_trailer_field_banned(c->tname, c->tname_len))
        return -1;
    return 0;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* qdtext and the byte after a backslash: HTAB, SP, VCHAR and obs-text, but not '"' or '\\'
 * for qdtext (the caller handles those first). */
static bool is_quoted_byte(unsigned char ch)
{
    return ch == '\t' || ch == ' ' || (ch >= 0x21 && ch != 0x7f);
}

static bool is_field_byte(unsigned char ch)
{
    return ch == '\t' || ch == ' ' || (ch >= 0x21 && ch != 0x7f);
}

/* End of the size line: decide between data and the trailer section. */
static int after_size_line(struct slb_chunked *c)
{
    c->line_len = 0;
    if (c->remaining == 0) {
        c->trailer_len = 0;
        return CH_TRAILER;
    }
    return CH_DATA;
}

/* One framing byte (never a data byte). Returns the next state or CH_ERROR. Extensions are
 * read strictly, without the BWS the grammar tolerates: whitespace around ';' or '=' is where
 * implementations have disagreed about where a chunk starts. */
static int step(struct slb_chunked *c, unsigned char ch)
{
    switch (c->state) {
    case CH_SIZE: {
        int v = hex_value(ch);
        if (v >= 0) {
            /* 16 hex digits fill a uint64_t: a longer size, leading zeros or not, is refused
             * rather than parsed into something another reader would truncate differently. */
            if (c->line_len >= 16)
                return CH_ERROR;
            c->remaining = (c->remaining << 4) | (uint64_t)v;
            return c->remaining > SLB_CHUNKED_MAX_SIZE ? CH_ERROR : CH_SIZE;
        }
        if (c->line_len == 0)
            return CH_ERROR;
        if (ch == ';')
            return CH_EXT_NAME0;
        return ch == '\r' ? CH_SIZE_LF : CH_ERROR;
    }
    case CH_EXT_NAME0:
        return slb_http_is_tchar(ch) ? CH_EXT_NAME : CH_ERROR;
    case CH_EXT_NAME:
    case CH_EXT_TOKEN:
        if (slb_http_is_tchar(ch))
            return c->state;
        if (ch == '=' && c->state == CH_EXT_NAME)
            return CH_EXT_VAL0;
        if (ch == ';')
            return CH_EXT_NAME0;
        return ch == '\r' ? CH_SIZE_LF : CH_ERROR;
    case CH_EXT_VAL0:
        if (ch == '"')
            return CH_EXT_QUOTED;
        return slb_http_is_tchar(ch) ? CH_EXT_TOKEN : CH_ERROR;
    case CH_EXT_QUOTED:
        if (ch == '"')
            return CH_EXT_QEND;
        if (ch == '\\')
            return CH_EXT_QESC;
        return is_quoted_byte(ch) ? CH_EXT_QUOTED : CH_ERROR;
    case CH_EXT_QESC:
        return is_quoted_byte(ch) ? CH_EXT_QUOTED : CH_ERROR;
    case CH_EXT_QEND:
        if (ch == ';')
            return CH_EXT_NAME0;
        return ch == '\r' ? CH_SIZE_LF : CH_ERROR;
    case CH_SIZE_LF:
        return ch == '\n' ? after_size_line(c) : CH_ERROR;
    case CH_DATA_CR:
        return ch == '\r' ? CH_DATA_LF : CH_ERROR;
    case CH_DATA_LF:
        if (ch != '\n')
            return CH_ERROR;
        c->line_len = 0;
        c->remaining = 0;
        return CH_SIZE;
    case CH_TRAILER:
        if (ch == '\r')
            return CH_FINAL_LF;
        /* Like a header line: a leading SP/HTAB would be obs-fold, ':' an empty name. */
        return slb_http_is_tchar(ch) ? CH_TRAILER_NAME : CH_ERROR;
    case CH_TRAILER_NAME:
        if (slb_http_is_tchar(ch))
            return CH_TRAILER_NAME;
        return ch == ':' ? CH_TRAILER_VALUE : CH_ERROR;
    case CH_TRAILER_VALUE:
        if (ch == '\r')
            return CH_TRAILER_LF;
        return is_field_byte(ch) ? CH_TRAILER_VALUE : CH_ERROR;
    case CH_TRAILER_LF:
        return ch == '\n' ? CH_TRAILER : CH_ERROR;
    case CH_FINAL_LF:
        if (ch != '\n')
            return CH_ERROR;
        c->done = true;
        return CH_DONE;
    default:
        return CH_ERROR;
    }
}

/* Whether the byte just consumed in state s counts toward the size line or trailer limits. */
static bool in_size_line(int s)
{
    return s >= CH_SIZE && s <= CH_EXT_QEND;
}

static bool in_trailer(int s)
{
    return s >= CH_TRAILER && s <= CH_FINAL_LF;
}

bool slb_chunked_in_trailer(const struct slb_chunked *c)
{
    return in_trailer(c->state);
}

long slb_chunked_feed(struct slb_chunked *c, const char *buf, size_t len, const char **data,
                      size_t *data_len)
{
    const char *dummy_data;
    size_t dummy_len;
    if (data == NULL)
        data = &dummy_data;
    if (data_len == NULL)
        data_len = &dummy_len;
    *data = NULL;
    *data_len = 0;
    if (c->state == CH_ERROR)
        return -400;

    size_t i = 0;
    while (i < len && c->state != CH_DONE) {
        if (c->state == CH_DATA) {
            /* Only one contiguous run per call: stop before the data of a second chunk. */
            if (*data != NULL)
                break;
            size_t n = len - i;
            if ((uint64_t)n > c->remaining)
                n = (size_t)c->remaining;
            *data = buf + i;
            *data_len = n;
            c->remaining -= n;
            i += n;
            if (c->remaining == 0)
                c->state = CH_DATA_CR;
            continue;
        }
        int prev = c->state;
        c->state = step(c, (unsigned char)buf[i]);
        if (c->state == CH_ERROR)
            return -400;
        if (in_size_line(prev) && c->state != CH_SIZE_LF && ++c->line_len > SLB_CHUNKED_MAX_LINE) {
            c->state = CH_ERROR;
            return -400;
        }
        if (in_trailer(prev) && (++c->trailer_len > SLB_CHUNKED_MAX_TRAILER ||
                                 (c->refuse_banned_trailers &&
                                  trailer_name_step(c, prev, (unsigned char)buf[i]) < 0))) {
            c->state = CH_ERROR;
            return -400;
        }
        i++;
        if (c->stop_at_trailer && c->state == CH_TRAILER && prev == CH_SIZE_LF)
            break;
    }
    return (long)i;
}

void slb_rechunk_init(struct slb_rechunk *r)
{
    memset(r, 0, sizeof(*r));
    slb_chunked_init(&r->ck);
    r->ck.stop_at_trailer = true;
}

static void frame_put(struct slb_rechunk *r, const char *p, size_t n)
{
    memcpy(r->frame + r->frame_len, p, n);
    r->frame_len = (uint8_t)(r->frame_len + n);
}

/* The CRLF that ends the data chunk before, when there was one. */
static void frame_start(struct slb_rechunk *r)
{
    r->frame_len = 0;
    r->frame_off = 0;
    if (r->had_data)
        frame_put(r, "\r\n", 2);
}

/* One trailer field line or part of it (drop_banned_trailers): fed up to the line's end at
 * most, sent (*ready) or dropped (returned) as its name says. */
static long rechunk_trailer(struct slb_rechunk *r, const char *buf, size_t len, size_t *ready)
{
    const char *nl = memchr(buf, '\n', len);
    size_t line = nl ? (size_t)(nl - buf) + 1 : len;
    if (r->ck.state == CH_TRAILER) {
        /* Held while what is here could still be the start of a name; anything else goes to
         * the decoder now, so a bad byte is refused as soon as it arrives. */
        size_t k = 0;
        while (k < len && k <= SLB_CHUNKED_MAX_TRAILER && slb_http_is_tchar((unsigned char)buf[k]))
            k++;
        if (k == len && k <= SLB_CHUNKED_MAX_TRAILER)
            return 0;
        r->dropping = k < len && buf[k] == ':' && slb_http_trailer_field_banned(buf, k);
    }
    long n = slb_chunked_feed(&r->ck, buf, line, NULL, NULL);
    if (n < 0 || r->dropping)
        return n;
    *ready = (size_t)n;
    return 0;
}

long slb_rechunk_next(struct slb_rechunk *r, const char *buf, size_t len, size_t *ready)
{
    *ready = 0;
    r->frame_len = 0;
    r->frame_off = 0;
    r->skip = 0;
    if (r->ck.done)
        return 0;
    bool trailer = slb_chunked_in_trailer(&r->ck);
    if (trailer && !r->last) {
        /* The feed that reached the last chunk stopped there (stop_at_trailer). */
        frame_start(r);
        frame_put(r, "0\r\n", 3);
        r->last = true;
    }
    if (trailer && r->drop_banned_trailers)
        return rechunk_trailer(r, buf, len, ready);
    const char *data;
    size_t dlen;
    long n = slb_chunked_feed(&r->ck, buf, len, &data, &dlen);
    if (n < 0)
        return n;
    if (trailer) {
        /* Trailer field lines and the final CRLF: checked field by field, sent as they are. */
        *ready = (size_t)n;
        return 0;
    }
    if (dlen == 0)
        return n; /* framing only (the last-chunk line goes out with the next step) */
    static const char hex[] = "0123456789abcdef";
    char digits[16];
    size_t k = 0;
    for (size_t v = dlen; v; v >>= 4)
        digits[k++] = hex[v & 15];
    frame_start(r);
    while (k)
        r->frame[r->frame_len++] = digits[--k];
    frame_put(r, "\r\n", 2);
    r->had_data = true;
    size_t pre = (size_t)(data - buf);
    *ready = dlen;
    r->skip = (uint64_t)n - pre - dlen;
    return (long)pre;
}
