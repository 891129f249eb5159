/* SPDX-License-Identifier: Apache-2.0 */
/* PROXY protocol v1/v2 encoder and strict, incremental decoder (see proxyproto.h). */
#include "tcp/proxyproto.h"

#include "core/err.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

/* The twelve bytes that open every v2 header; chosen by the protocol so that no valid HTTP,
 * TLS or v1 stream can start with them. */
static const unsigned char pp_v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                            0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

#define PP_V1_MAX 107 /* longest v1 line, CRLF included, fixed by the protocol */
#define PP_V2_HDR 16  /* signature + ver/cmd + fam + 16-bit length */

/* The wire format allows 64 KiB of address block + TLVs. We refuse anything above 2 KiB so a
 * listener can hold a whole header in a small fixed buffer: real senders (HAProxy, cloud load
 * balancers) stay far below that even with their TLVs. */
#define PP_V2_MAX_BODY 2048

#define PP_V2_CMD_LOCAL 0x0
#define PP_V2_CMD_PROXY 0x1

#define PP_V2_FAM_UNSPEC 0x00
#define PP_V2_FAM_TCP4 0x11
#define PP_V2_FAM_TCP6 0x21
#define PP_V2_FAM_UNIX 0x31

#define PP_V2_LEN_INET 12  /* 2 x 4-byte address + 2 x port */
#define PP_V2_LEN_INET6 36 /* 2 x 16-byte address + 2 x port */
#define PP_V2_LEN_UNIX 216 /* 2 x 108-byte path */

/* --- encoding ------------------------------------------------------------------------------ */

/* A connection endpoint reduced to what the header can carry: family is AF_INET, AF_INET6 or
 * AF_UNSPEC; the address bytes are in network order. */
struct pp_addr {
    int family;
    unsigned char addr[16];
    uint16_t port; /* host order */
};

static void pp_addr_from_sockaddr(const struct sockaddr *sa, struct pp_addr *out)
{
    memset(out, 0, sizeof(*out));
    out->family = AF_UNSPEC;
    if (!sa)
        return;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        memcpy(out->addr, &sin->sin_addr, 4);
        out->port = ntohs(sin->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        out->port = ntohs(sin6->sin6_port);
        /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; backends expect to log
         * and match those as plain IPv4, so the header says TCP4. */
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            out->family = AF_INET;
            memcpy(out->addr, &sin6->sin6_addr.s6_addr[12], 4);
        } else {
            out->family = AF_INET6;
            memcpy(out->addr, &sin6->sin6_addr, 16);
        }
    }
}

/* Both ends of a header must share one family. When only one side is IPv4 (an IPv4 client
 * reaching an IPv6 address, say) the IPv4 side is widened back to its mapped IPv6 form. */
static void pp_addr_to_v6(struct pp_addr *a)
{
    if (a->family != AF_INET)
        return;
    unsigned char v4[4];
    memcpy(v4, a->addr, 4);
    memset(a->addr, 0, 10);
    a->addr[10] = 0xff;
    a->addr[11] = 0xff;
    memcpy(&a->addr[12], v4, 4);
    a->family = AF_INET6;
}

/* Returns the common family of src and dst after normalisation, AF_UNSPEC when either side is
 * not an internet address. */
static int pp_addr_pair(const struct sockaddr *src, const struct sockaddr *dst, struct pp_addr *s,
                        struct pp_addr *d)
{
    pp_addr_from_sockaddr(src, s);
    pp_addr_from_sockaddr(dst, d);
    if (s->family == AF_UNSPEC || d->family == AF_UNSPEC)
        return AF_UNSPEC;
    if (s->family != d->family) {
        pp_addr_to_v6(s);
        pp_addr_to_v6(d);
    }
    return s->family;
}

static size_t pp_encode_v1(int family, const struct pp_addr *s, const struct pp_addr *d,
                           unsigned char *out)
{
    if (family == AF_UNSPEC) {
        static const char unknown[] = "PROXY UNKNOWN\r\n";
        memcpy(out, unknown, sizeof(unknown) - 1);
        return sizeof(unknown) - 1;
    }
    char sbuf[INET6_ADDRSTRLEN], dbuf[INET6_ADDRSTRLEN];
    if (!inet_ntop(family, s->addr, sbuf, sizeof(sbuf)) ||
        !inet_ntop(family, d->addr, dbuf, sizeof(dbuf)))
        return pp_encode_v1(AF_UNSPEC, s, d, out);
    /* The longest possible line (two full IPv6 texts, two 5-digit ports) is 104 bytes, which
     * is below both PP_V1_MAX and SLB_PP_MAX, so snprintf never truncates here. */
    int n = snprintf((char *)out, SLB_PP_MAX, "PROXY %s %s %s %u %u\r\n",
                     family == AF_INET ? "TCP4" : "TCP6", sbuf, dbuf, (unsigned)s->port,
                     (unsigned)d->port);
    return n > 0 ? (size_t)n : 0;
}

static void pp_put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)(v & 0xff);
}

static size_t pp_encode_v2(int family, const struct pp_addr *s, const struct pp_addr *d,
                           unsigned char *out)
{
    memcpy(out, pp_v2_sig, sizeof(pp_v2_sig));
    if (family == AF_UNSPEC) {
        /* LOCAL tells the receiver to use the real connection's addresses. */
        out[12] = 0x20 | PP_V2_CMD_LOCAL;
        out[13] = PP_V2_FAM_UNSPEC;
        pp_put16(&out[14], 0);
        return PP_V2_HDR;
    }
    size_t alen = family == AF_INET ? 4 : 16;
    out[12] = 0x20 | PP_V2_CMD_PROXY;
    out[13] = family == AF_INET ? PP_V2_FAM_TCP4 : PP_V2_FAM_TCP6;
    pp_put16(&out[14], (uint16_t)(2 * alen + 4));
    unsigned char *p = out + PP_V2_HDR;
    memcpy(p, s->addr, alen);
    memcpy(p + alen, d->addr, alen);
    pp_put16(p + 2 * alen, s->port);
    pp_put16(p + 2 * alen + 2, d->port);
    return PP_V2_HDR + 2 * alen + 4;
}

size_t slb_pp_encode(int version, const struct sockaddr *src, const struct sockaddr *dst,
                     unsigned char *out)
{
    struct pp_addr s, d;
    int family = pp_addr_pair(src, dst, &s, &d);
    if (version == 2)
        return pp_encode_v2(family, &s, &d, out);
    return pp_encode_v1(family, &s, &d, out);
}

/* --- decoding ------------------------------------------------------------------------------ */

static void pp_fill(struct sockaddr_storage *ss, int family, const void *addr, uint16_t port)
{
    if (!ss)
        return;
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, addr, 4);
        sin->sin_port = htons(port);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, addr, 16);
        sin6->sin6_port = htons(port);
    } else {
        ss->ss_family = AF_UNSPEC;
    }
}

/* v2 UNIX addresses are 108-byte, NUL-padded paths; an unterminated one is clipped rather than
 * trusted, since sun_path has exactly that size. */
static void pp_fill_unix(struct sockaddr_storage *ss, const unsigned char *path)
{
    if (!ss)
        return;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    sun->sun_family = AF_UNIX;
    size_t n = sizeof(sun->sun_path) - 1;
    memcpy(sun->sun_path, path, n < 108 ? n : 108);
}

/* Parses a port of 1-5 decimal digits in [p, end), value <= 65535, no sign, no leading zero
 * (our encoder never writes one and the protocol's own examples never do). */
static bool pp_v1_port(const char *p, const char *end, uint16_t *out)
{
    size_t n = (size_t)(end - p);
    if (n == 0 || n > 5 || (n > 1 && p[0] == '0'))
        return false;
    unsigned long v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* Parses one textual address of the given family in [p, end) into addr (4 or 16 bytes). */
static bool pp_v1_addr(int family, const char *p, const char *end, void *addr)
{
    char tmp[INET6_ADDRSTRLEN];
    size_t n = (size_t)(end - p);
    if (n == 0 || n >= sizeof(tmp))
        return false;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    return inet_pton(family, tmp, addr) == 1;
}

/* Splits the next space-terminated token off [*p, end); the final token ends at end. */
static bool pp_v1_token(const char **p, const char *end, bool last, const char **tok,
                        const char **tok_end)
{
    const char *s = *p;
    const char *e = last ? end : memchr(s, ' ', (size_t)(end - s));
    if (!e || e == s)
        return false;
    *tok = s;
    *tok_end = e;
    *p = last ? end : e + 1;
    return true;
}

/* line/len is the text between "PROXY " and the CRLF. */
static int pp_v1_fields(const char *line, size_t len, struct sockaddr_storage *src,
                        struct sockaddr_storage *dst)
{
    const char *p = line, *end = line + len;
    if (len >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (len == 7 || p[7] == ' ')) {
        /* The protocol tells receivers to ignore whatever follows UNKNOWN. */
        pp_fill(src, AF_UNSPEC, NULL, 0);
        pp_fill(dst, AF_UNSPEC, NULL, 0);
        return 0;
    }
    int family;
    if (len >= 5 && memcmp(p, "TCP4 ", 5) == 0)
        family = AF_INET;
    else if (len >= 5 && memcmp(p, "TCP6 ", 5) == 0)
        family = AF_INET6;
    else
        return SLB_EPROTO;
    p += 5;

    const char *t[4], *te[4];
    for (int i = 0; i < 4; i++)
        if (!pp_v1_token(&p, end, i == 3, &t[i], &te[i]))
            return SLB_EPROTO;
    unsigned char sa[16], da[16];
    uint16_t sp, dp;
    if (!pp_v1_addr(family, t[0], te[0], sa) || !pp_v1_addr(family, t[1], te[1], da) ||
        !pp_v1_port(t[2], te[2], &sp) || !pp_v1_port(t[3], te[3], &dp))
        return SLB_EPROTO;
    pp_fill(src, family, sa, sp);
    pp_fill(dst, family, da, dp);
    return 0;
}

static int pp_decode_v1(const unsigned char *buf, size_t len, struct sockaddr_storage *src,
                        struct sockaddr_storage *dst)
{
    static const char prefix[] = "PROXY ";
    size_t plen = sizeof(prefix) - 1;
    if (memcmp(buf, prefix, len < plen ? len : plen) != 0)
        return SLB_EPROTO;

    /* Look for the CRLF only inside the first PP_V1_MAX bytes; any control byte or a lone CR/LF
     * before it is an error now, so a garbage stream is refused without waiting for 107 bytes. */
    size_t lim = len < PP_V1_MAX ? len : PP_V1_MAX;
    for (size_t i = 0; i < lim; i++) {
        unsigned char c = buf[i];
        if (c == '\r') {
            if (i + 1 >= PP_V1_MAX)
                return SLB_EPROTO;
            if (i + 1 == len)
                return 0;
            if (buf[i + 1] != '\n')
                return SLB_EPROTO;
            if (i < plen)
                return SLB_EPROTO;
            int rc = pp_v1_fields((const char *)buf + plen, i - plen, src, dst);
            return rc < 0 ? rc : (int)(i + 2);
        }
        if (c < 0x20 || c > 0x7e)
            return SLB_EPROTO;
    }
    return len >= PP_V1_MAX ? SLB_EPROTO : 0;
}

static uint16_t pp_get16(const unsigned char *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* The TLV area must be a whole sequence of type(1) length(2) value records; we skip their
 * contents but refuse a truncated one, which signals a broken or hostile sender. */
static bool pp_v2_tlvs_ok(const unsigned char *p, size_t len)
{
    while (len > 0) {
        if (len < 3)
            return false;
        size_t vlen = pp_get16(p + 1);
        if (vlen > len - 3)
            return false;
        p += 3 + vlen;
        len -= 3 + vlen;
    }
    return true;
}

static int pp_decode_v2(const unsigned char *buf, size_t len, struct sockaddr_storage *src,
                        struct sockaddr_storage *dst)
{
    size_t n = len < sizeof(pp_v2_sig) ? len : sizeof(pp_v2_sig);
    if (memcmp(buf, pp_v2_sig, n) != 0)
        return SLB_EPROTO;
    if (len > 12 && ((buf[12] >> 4) != 2 || (buf[12] & 0x0f) > PP_V2_CMD_PROXY))
        return SLB_EPROTO;
    if (len < PP_V2_HDR)
        return 0;

    int cmd = buf[12] & 0x0f;
    int fam = buf[13];
    size_t body = pp_get16(&buf[14]);
    if (body > PP_V2_MAX_BODY)
        return SLB_EPROTO;

    /* Address family in the high nibble (0 unspec, 1 inet, 2 inet6, 3 unix) and transport in
     * the low one (0 unspec, 1 stream, 2 dgram); an unspecified half only pairs with another. */
    int af = fam >> 4, tr = fam & 0x0f;
    if (af > 3 || tr > 2 || ((af == 0) != (tr == 0)))
        return SLB_EPROTO;
    static const size_t alens[4] = {0, PP_V2_LEN_INET, PP_V2_LEN_INET6, PP_V2_LEN_UNIX};
    size_t alen = alens[af];
    if (body < alen)
        return SLB_EPROTO;
    /* A PROXY header for a TCP connection must name a stream transport; datagram or unspecified
     * would leave us unable to say where the client is. LOCAL ignores the block entirely. */
    if (cmd == PP_V2_CMD_PROXY && fam != PP_V2_FAM_UNSPEC && tr != 1)
        return SLB_EPROTO;
    if (len < PP_V2_HDR + body)
        return 0;

    const unsigned char *p = buf + PP_V2_HDR;
    if (!pp_v2_tlvs_ok(p + alen, body - alen))
        return SLB_EPROTO;

    if (cmd == PP_V2_CMD_LOCAL || fam == PP_V2_FAM_UNSPEC) {
        pp_fill(src, AF_UNSPEC, NULL, 0);
        pp_fill(dst, AF_UNSPEC, NULL, 0);
    } else if (fam == PP_V2_FAM_TCP4) {
        pp_fill(src, AF_INET, p, pp_get16(p + 8));
        pp_fill(dst, AF_INET, p + 4, pp_get16(p + 10));
    } else if (fam == PP_V2_FAM_TCP6) {
        pp_fill(src, AF_INET6, p, pp_get16(p + 32));
        pp_fill(dst, AF_INET6, p + 16, pp_get16(p + 34));
    } else {
        pp_fill_unix(src, p);
        pp_fill_unix(dst, p + 108);
    }
    return (int)(PP_V2_HDR + body);
}

int slb_pp_decode(const unsigned char *buf, size_t len, struct sockaddr_storage *src,
                  struct sockaddr_storage *dst)
{
    if (len == 0)
        return 0;
    if (buf[0] == 'P')
        return pp_decode_v1(buf, len, src, dst);
    if (buf[0] == pp_v2_sig[0])
        return pp_decode_v2(buf, len, src, dst);
    return SLB_EPROTO;
}
