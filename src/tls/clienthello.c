/* SPDX-License-Identifier: Apache-2.0 */
/* Finds the server name in the ClientHello at the start of a TCP stream without copying the
 * handshake: a reader walks the TLS records in place and the parser reads the message through
 * it, checking every length against its container (RFC 8446 4.1.2, RFC 6066 section 3). */
#include "tls/clienthello.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define CH_REC_HANDSHAKE 22
#define CH_HS_CLIENT_HELLO 1
#define CH_EXT_SERVER_NAME 0
#define CH_NAME_HOST 0
#define CH_REC_HDR 5
#define CH_HS_HDR 4
/* RFC 8446 5.2: a ciphertext may exceed a plaintext record by 256 bytes, and TLS 1.2 allowed
 * 2048; a ClientHello is plaintext, but tolerating the wider bound costs nothing. */
#define CH_REC_MAX (16384 + 2048)
#define CH_LABEL_MAX 63
#define CH_SID_MAX 32

/* Internal "need more bytes": positive so it cannot be mistaken for an error or for success
 * (0) while it travels up; the public function turns it into 0. */
#define CH_MORE 1

/* Where the parser stands in the stream. The handshake message is a logical byte sequence cut
 * into record payloads; `off` counts in that sequence (so vector bounds are plain offsets),
 * `pos` in the stream the caller gave us. Lives on the stack of one call. */
struct ch_reader {
    const unsigned char *buf;
    size_t len;      /* bytes available */
    size_t max;      /* bytes the caller is willing to buffer: never read at or past this */
    size_t pos;      /* stream offset of the next unread byte */
    size_t rec_left; /* payload bytes left in the current record */
    size_t off;      /* logical offset in the handshake message */
    unsigned nrec;   /* records begun */
};

/* Can the byte at stream offset p be read? Past max it never can, so that is final; past len
 * it is only missing so far. Checking max first keeps the result independent of bytes the
 * caller was not obliged to give us. */
static int ch_avail(const struct ch_reader *r, size_t p)
{
    if (p >= r->max)
        return SLB_CH_TOO_BIG;
    if (p >= r->len)
        return CH_MORE;
    return 0;
}

/* Read the next record header at r->pos. Each byte is judged as soon as it is available, so
 * a stream that is plainly not TLS (an HTTP request, an SSLv2 hello with its high bit set) is
 * recognised from its first byte instead of after five. Bad framing in the first record means
 * the peer is not speaking TLS; in a later one, that it broke a hello it had started. */
static int ch_record(struct ch_reader *r)
{
    int bad = r->nrec == 0 ? SLB_CH_NOT_TLS : SLB_CH_INVALID;
    unsigned char h[CH_REC_HDR];

    for (size_t i = 0; i < CH_REC_HDR; i++) {
        int rc = ch_avail(r, r->pos + i);
        if (rc != 0)
            return rc;
        h[i] = r->buf[r->pos + i];
        /* While the hello is incomplete, RFC 8446 5.1 allows nothing but handshake records. */
        if (i == 0 && h[0] != CH_REC_HANDSHAKE)
            return bad;
        if (i == 1 && h[1] != 3)
            return bad;
        if (i == 2 && (h[2] < 1 || h[2] > 4))
            return bad;
    }
    size_t rlen = (size_t)h[3] << 8 | h[4];
    /* Zero-length handshake fragments are forbidden (RFC 8446 5.1), and refusing them keeps a
     * stream of empty records from making us walk headers for free. */
    if (rlen == 0 || rlen > CH_REC_MAX)
        return SLB_CH_INVALID;
    r->pos += CH_REC_HDR;
    r->rec_left = rlen;
    r->nrec++;
    return 0;
}

/* Make sure the current record has payload left, starting the next record if needed. */
static int ch_fill(struct ch_reader *r)
{
    if (r->rec_left > 0)
        return 0;
    return ch_record(r);
}

/* Read one byte of the handshake message, which must lie before the logical offset end (the
 * end of the innermost vector being read). */
static int ch_u8(struct ch_reader *r, size_t end, unsigned *v)
{
    if (r->off >= end)
        return SLB_CH_INVALID;
    int rc = ch_fill(r);
    if (rc != 0)
        return rc;
    rc = ch_avail(r, r->pos);
    if (rc != 0)
        return rc;
    *v = r->buf[r->pos];
    r->pos++;
    r->rec_left--;
    r->off++;
    return 0;
}

/* Read a big-endian integer of n bytes (n <= 3), each byte possibly in a different record. */
static int ch_uint(struct ch_reader *r, size_t end, int n, size_t *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        unsigned b;
        int rc = ch_u8(r, end, &b);
        if (rc != 0)
            return rc;
        *v = *v << 8 | b;
    }
    return 0;
}

/* Step over n bytes of the message that must end by end, a record at a time rather than a
 * byte at a time: cipher suites, key shares and padding are most of a ClientHello. A run that
 * needs a byte past max is refused at once, before the bytes before it have arrived. */
static int ch_skip(struct ch_reader *r, size_t n, size_t end)
{
    if (n > end - r->off)
        return SLB_CH_INVALID;
    while (n > 0) {
        int rc = ch_fill(r);
        if (rc != 0)
            return rc;
        size_t chunk = n < r->rec_left ? n : r->rec_left;
        rc = ch_avail(r, r->pos + chunk - 1);
        if (rc != 0)
            return rc;
        r->pos += chunk;
        r->rec_left -= chunk;
        r->off += chunk;
        n -= chunk;
    }
    return 0;
}

/* Read a vector's length prefix of n bytes and step over its contents; the length must be in
 * [min, cap]. Returns the length through *vlen when vlen is not NULL. */
static int ch_vector(struct ch_reader *r, size_t end, int n, size_t min, size_t cap, size_t *vlen)
{
    size_t len;
    int rc = ch_uint(r, end, n, &len);
    if (rc != 0)
        return rc;
    if (len < min || len > cap)
        return SLB_CH_INVALID;
    if (vlen)
        *vlen = len;
    return ch_skip(r, len, end);
}

/* Letters, digits and '-' (the LDH rule of RFC 5890) plus the dots between labels. Done by
 * hand rather than with <ctype.h>, whose answer depends on the locale. */
static bool ch_ldh(unsigned c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Read one host name of nlen bytes, validating and lowercasing as the bytes come so that a bad
 * character is reported as soon as it arrives. Empty labels ("a..b", ".a") and labels longer
 * than DNS allows cannot name a server anyone routes to, so they are malformed here. */
static int ch_hostname(struct ch_reader *r, size_t end, size_t nlen, char *name, size_t *outn)
{
    size_t label = 0;
    for (size_t i = 0; i < nlen; i++) {
        unsigned c;
        int rc = ch_u8(r, end, &c);
        if (rc != 0)
            return rc;
        if (c == '.') {
            if (label == 0)
                return SLB_CH_INVALID;
            label = 0;
        } else if (ch_ldh(c)) {
            if (++label > CH_LABEL_MAX)
                return SLB_CH_INVALID;
            if (c >= 'A' && c <= 'Z')
                c += 'a' - 'A';
        } else {
            return SLB_CH_INVALID;
        }
        name[i] = (char)c;
    }
    /* An absolute name ("example.com.") means the same server; one dot is all it may have, and
     * a lone "." was refused above as an empty label. */
    if (name[nlen - 1] == '.')
        nlen--;
    name[nlen] = '\0';
    *outn = nlen;
    return 0;
}

/* The server_name extension's body, ending at end: a ServerNameList holding exactly one
 * host_name (RFC 6066 allows one name per type and defines no other type, and an unknown type
 * could not even be skipped since its length format is unknown). */
static int ch_server_name(struct ch_reader *r, size_t end, char *name, size_t *nlen)
{
    size_t list;
    int rc = ch_uint(r, end, 2, &list);
    if (rc != 0)
        return rc;
    if (list == 0 || list != end - r->off)
        return SLB_CH_INVALID;
    bool have = false;
    while (r->off < end) {
        unsigned type;
        size_t len;
        rc = ch_u8(r, end, &type);
        if (rc != 0)
            return rc;
        if (type != CH_NAME_HOST || have)
            return SLB_CH_INVALID;
        rc = ch_uint(r, end, 2, &len);
        if (rc != 0)
            return rc;
        if (len == 0 || len > SLB_CH_NAME_MAX || len > end - r->off)
            return SLB_CH_INVALID;
        rc = ch_hostname(r, end, len, name, nlen);
        if (rc != 0)
            return rc;
        have = true;
    }
    return 0;
}

/* The extensions block, which must fill the rest of the message exactly; a name is only
 * reported once every extension after it has been checked too. */
static int ch_extensions(struct ch_reader *r, size_t msg_end, char *name, size_t *nlen)
{
    size_t total;
    int rc = ch_uint(r, msg_end, 2, &total);
    if (rc != 0)
        return rc;
    if (total != msg_end - r->off)
        return SLB_CH_INVALID;
    bool sni = false;
    while (r->off < msg_end) {
        size_t type, len;
        rc = ch_uint(r, msg_end, 2, &type);
        if (rc == 0)
            rc = ch_uint(r, msg_end, 2, &len);
        if (rc != 0)
            return rc;
        if (len > msg_end - r->off)
            return SLB_CH_INVALID;
        if (type != CH_EXT_SERVER_NAME) {
            rc = ch_skip(r, len, msg_end);
        } else if (sni) {
            /* Two names would let a router and a backend each believe a different one. */
            return SLB_CH_INVALID;
        } else {
            sni = true;
            rc = ch_server_name(r, r->off + len, name, nlen);
        }
        if (rc != 0)
            return rc;
    }
    return sni ? 0 : SLB_CH_NO_SNI;
}

/* The handshake header and the ClientHello body up to its extensions. */
static int ch_client_hello(struct ch_reader *r, char *name, size_t *nlen)
{
    unsigned type;
    size_t hlen, v;
    int rc = ch_u8(r, SIZE_MAX, &type);
    if (rc != 0)
        return rc;
    if (type != CH_HS_CLIENT_HELLO)
        return SLB_CH_INVALID;
    rc = ch_uint(r, SIZE_MAX, 3, &hlen);
    if (rc != 0)
        return rc;
    /* Even unfragmented the message needs one record header besides itself; knowing now that
     * it cannot fit spares the caller buffering up to max for nothing. */
    if (CH_REC_HDR + CH_HS_HDR + hlen > r->max)
        return SLB_CH_TOO_BIG;
    size_t end = CH_HS_HDR + hlen;

    /* legacy_version: 0x0303 from TLS 1.3 clients; anything not SSL 3.x-shaped is no hello. */
    rc = ch_uint(r, end, 2, &v);
    if (rc != 0)
        return rc;
    if (v >> 8 != 3)
        return SLB_CH_INVALID;
    rc = ch_skip(r, 32, end); /* random */
    if (rc == 0)
        rc = ch_vector(r, end, 1, 0, CH_SID_MAX, NULL); /* legacy_session_id */
    if (rc == 0)
        rc = ch_vector(r, end, 2, 2, 65534, &v); /* cipher_suites, two bytes each */
    if (rc == 0 && v % 2 != 0)
        rc = SLB_CH_INVALID;
    if (rc == 0)
        rc = ch_vector(r, end, 1, 1, 255, NULL); /* legacy_compression_methods */
    if (rc != 0)
        return rc;
    /* Hellos from before RFC 3546 end here: valid, but they cannot carry a name. */
    if (r->off == end)
        return SLB_CH_NO_SNI;
    return ch_extensions(r, end, name, nlen);
}

int slb_clienthello_sni(const unsigned char *buf, size_t len, size_t max, char *out, size_t outlen)
{
    struct ch_reader r = {.buf = buf, .len = len, .max = max};
    char name[SLB_CH_NAME_MAX + 1];
    size_t nlen = 0;

    if (out && outlen > 0)
        out[0] = '\0';
    int rc = ch_client_hello(&r, name, &nlen);
    if (rc == CH_MORE)
        return 0;
    /* Nothing may share a record with the hello: the client has nothing else to say before
     * the server answers, and a router must not pass on bytes it was not able to judge. */
    if ((rc == 0 || rc == SLB_CH_NO_SNI) && r.rec_left > 0)
        return SLB_CH_INVALID;
    if (rc < 0)
        return rc;
    if (out) {
        if (nlen >= outlen)
            return SLB_CH_TOO_BIG;
        memcpy(out, name, nlen + 1);
    }
    return (int)nlen;
}

const char *slb_clienthello_strerror(int rc)
{
    if (rc > 0)
        return "ok";
    switch (rc) {
    case 0:
        return "incomplete";
    case SLB_CH_NO_SNI:
        return "no_sni";
    case SLB_CH_NOT_TLS:
        return "not_tls";
    case SLB_CH_INVALID:
        return "invalid";
    case SLB_CH_TOO_BIG:
        return "too_big";
    default:
        return "unknown";
    }
}
