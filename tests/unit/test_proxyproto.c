/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the PROXY protocol encoder and decoder (src/tcp/proxyproto.c). */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "core/err.h"
#include "tcp/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

static struct sockaddr_storage mk(const char *addr, unsigned port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
    }
    return ss;
}

/* Formats a decoded address as "addr:port" ("[addr]:port" for IPv6, "-" for unspecified) so
 * tests compare one readable string instead of raw structs. */
static const char *fmt(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char a[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
        snprintf(out, size, "%s:%u", a, ntohs(sin->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
        snprintf(out, size, "[%s]:%u", a, ntohs(sin6->sin6_port));
    } else if (ss->ss_family == AF_UNSPEC) {
        snprintf(out, size, "-");
    } else {
        snprintf(out, size, "family%d", ss->ss_family);
    }
    return out;
}

/* Encodes src->dst with the given version, decodes the result (followed by payload bytes that
 * must not be consumed) and checks the decoded endpoints against the expected text. */
static void roundtrip(int version, const char *sa, unsigned sp, const char *da, unsigned dp,
                      const char *want_src, const char *want_dst)
{
    struct sockaddr_storage s = mk(sa, sp), d = mk(da, dp);
    unsigned char buf[SLB_PP_MAX + 16];
    memset(buf, 0xAA, sizeof(buf));
    size_t n = slb_pp_encode(version, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
    assert_true(n > 0 && n <= SLB_PP_MAX);
    if (version == 1) {
        assert_true(n <= 107);
        assert_memory_equal(buf, "PROXY ", 6);
    } else {
        assert_int_equal(buf[12], 0x21);
    }
    memcpy(buf + n, "GET / HTTP/1.1\r\n", 16);

    struct sockaddr_storage ds, dd;
    int rc = slb_pp_decode(buf, n + 16, &ds, &dd);
    assert_int_equal(rc, (int)n);
    char got[80];
    assert_string_equal(fmt(&ds, got, sizeof(got)), want_src);
    assert_string_equal(fmt(&dd, got, sizeof(got)), want_dst);
}

static void test_roundtrip_ipv4(void **state)
{
    for (int v = 1; v <= 2; v++) {
        roundtrip(v, "192.0.2.1", 56324, "198.51.100.7", 443, "192.0.2.1:56324",
                  "198.51.100.7:443");
        roundtrip(v, "0.0.0.0", 0, "255.255.255.255", 65535, "0.0.0.0:0", "255.255.255.255:65535");
    }
}

static void test_roundtrip_ipv6(void **state)
{
    for (int v = 1; v <= 2; v++) {
        roundtrip(v, "2001:db8::1", 40000, "2001:db8::2", 8443, "[2001:db8::1]:40000",
                  "[2001:db8::2]:8443");
        roundtrip(v, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535,
                  "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                  "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535");
    }
}

static void test_roundtrip_mapped(void **state)
{
    unsigned char buf[SLB_PP_MAX];
    for (int v = 1; v <= 2; v++) {
        /* Both sides mapped: written as plain TCP4. */
        roundtrip(v, "::ffff:192.0.2.1", 1234, "::ffff:10.0.0.1", 80, "192.0.2.1:1234",
                  "10.0.0.1:80");
        /* Mapped client meeting a real IPv6 address: both must be IPv6 in one header. */
        roundtrip(v, "::ffff:192.0.2.1", 1234, "2001:db8::5", 80, "[::ffff:192.0.2.1]:1234",
                  "[2001:db8::5]:80");
        /* Plain IPv4 with IPv6: the IPv4 side is widened. */
        roundtrip(v, "192.0.2.9", 9, "2001:db8::5", 80, "[::ffff:192.0.2.9]:9", "[2001:db8::5]:80");
    }
    struct sockaddr_storage s = mk("::ffff:192.0.2.1", 1234), d = mk("::ffff:10.0.0.1", 80);
    size_t n = slb_pp_encode(1, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
    const char want[] = "PROXY TCP4 192.0.2.1 10.0.0.1 1234 80\r\n";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(buf, want, n);
}

static void test_exact_v1(void **state)
{
    struct sockaddr_storage s = mk("192.0.2.1", 56324), d = mk("198.51.100.7", 443);
    unsigned char buf[SLB_PP_MAX];
    size_t n = slb_pp_encode(1, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
    const char want[] = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n";
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(buf, want, n);

    s = mk("2001:db8::1", 1);
    d = mk("::1", 2);
    n = slb_pp_encode(1, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
    const char want6[] = "PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
    assert_int_equal(n, sizeof(want6) - 1);
    assert_memory_equal(buf, want6, n);
}

static void test_exact_v2(void **state)
{
    struct sockaddr_storage s = mk("192.0.2.1", 56324), d = mk("198.51.100.7", 443);
    unsigned char buf[SLB_PP_MAX];
    size_t n = slb_pp_encode(2, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
    static const unsigned char want[] = {
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, /* signature */
        0x21,                                                                   /* v2 PROXY */
        0x11,                                                                   /* TCP4 */
        0x00, 0x0c,                                                             /* length 12 */
        192,  0,    2,    1,                                                    /* src */
        198,  51,   100,  7,                                                    /* dst */
        0xdc, 0x04,                                                             /* 56324 */
        0x01, 0xbb,                                                             /* 443 */
    };
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(buf, want, n);
}

static void test_unknown_family(void **state)
{
    struct sockaddr_un un;
    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    strcpy(un.sun_path, "/tmp/x.sock");
    struct sockaddr_storage d = mk("10.0.0.1", 80), ds, dd;
    unsigned char buf[SLB_PP_MAX];

    size_t n = slb_pp_encode(1, (struct sockaddr *)&un, (struct sockaddr *)&d, buf);
    assert_int_equal(n, 15);
    assert_memory_equal(buf, "PROXY UNKNOWN\r\n", 15);
    memset(&ds, 0xff, sizeof(ds));
    assert_int_equal(slb_pp_decode(buf, n, &ds, &dd), 15);
    assert_int_equal(ds.ss_family, AF_UNSPEC);
    assert_int_equal(dd.ss_family, AF_UNSPEC);

    n = slb_pp_encode(2, NULL, NULL, buf);
    assert_int_equal(n, 16);
    assert_int_equal(buf[12], 0x20); /* LOCAL */
    assert_int_equal(buf[13], 0x00);
    assert_int_equal(buf[14], 0);
    assert_int_equal(buf[15], 0);
    assert_int_equal(slb_pp_decode(buf, n, &ds, &dd), 16);
    assert_int_equal(ds.ss_family, AF_UNSPEC);

    /* UNKNOWN may carry anything after it, up to the 107-byte limit. */
    char line[128];
    memset(line, 'z', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    memcpy(line + 105, "\r\n", 2);
    assert_int_equal(slb_pp_decode((unsigned char *)line, 107, &ds, &dd), 107);
    memset(line + 105, 'z', 2);
    memcpy(line + 106, "\r\n", 2);
    assert_int_equal(slb_pp_decode((unsigned char *)line, 108, &ds, &dd), SLB_EPROTO);
}

/* A v2 header carrying TLVs after the addresses: the TLVs are skipped, but must be whole. */
static void test_v2_tlvs(void **state)
{
    unsigned char buf[64];
    struct sockaddr_storage s = mk("10.1.2.3", 1000), d = mk("10.3.2.1", 2000), ds, dd;
    size_t n = slb_pp_encode(2, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
    assert_int_equal(n, 28);
    /* PP2_TYPE_AUTHORITY "a.b" and an empty NOOP. */
    const unsigned char tlvs[] = {0x02, 0x00, 0x03, 'a', '.', 'b', 0x04, 0x00, 0x00};
    memcpy(buf + n, tlvs, sizeof(tlvs));
    buf[15] = (unsigned char)(12 + sizeof(tlvs));
    int total = (int)(n + sizeof(tlvs));
    assert_int_equal(slb_pp_decode(buf, (size_t)total, &ds, &dd), total);
    char got[64];
    assert_string_equal(fmt(&ds, got, sizeof(got)), "10.1.2.3:1000");
    assert_string_equal(fmt(&dd, got, sizeof(got)), "10.3.2.1:2000");
    for (int i = 0; i < total; i++)
        assert_int_equal(slb_pp_decode(buf, (size_t)i, &ds, &dd), 0);

    /* A TLV claiming more bytes than the header holds. */
    buf[n + 2] = 0x09;
    assert_int_equal(slb_pp_decode(buf, (size_t)total, &ds, &dd), SLB_EPROTO);
    /* A dangling partial TLV record. */
    buf[n + 2] = 0x03;
    buf[15] = (unsigned char)(12 + sizeof(tlvs) - 1);
    assert_int_equal(slb_pp_decode(buf, (size_t)total - 1, &ds, &dd), SLB_EPROTO);

    /* LOCAL with an address block and TLVs: addresses are ignored. */
    buf[12] = 0x20;
    buf[15] = (unsigned char)(12 + sizeof(tlvs));
    assert_int_equal(slb_pp_decode(buf, (size_t)total, &ds, &dd), total);
    assert_int_equal(ds.ss_family, AF_UNSPEC);
    assert_int_equal(dd.ss_family, AF_UNSPEC);
}

static void check_prefixes(const unsigned char *hdr, size_t n)
{
    struct sockaddr_storage ds, dd;
    for (size_t i = 0; i < n; i++) {
        int rc = slb_pp_decode(hdr, i, &ds, &dd);
        if (rc != 0)
            fail_msg("prefix of %zu/%zu bytes gave %d, want 0", i, n, rc);
    }
    assert_int_equal(slb_pp_decode(hdr, n, &ds, &dd), (int)n);
}

static void test_incomplete(void **state)
{
    const char *pairs[][2] = {
        {"192.0.2.1", "198.51.100.7"},
        {"2001:db8::1", "2001:db8::2"},
        {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
    };
    unsigned char buf[SLB_PP_MAX];
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        struct sockaddr_storage s = mk(pairs[i][0], 65535), d = mk(pairs[i][1], 65535);
        for (int v = 1; v <= 2; v++) {
            size_t n = slb_pp_encode(v, (struct sockaddr *)&s, (struct sockaddr *)&d, buf);
            check_prefixes(buf, n);
        }
    }
    check_prefixes((const unsigned char *)"PROXY UNKNOWN\r\n", 15);
    size_t n = slb_pp_encode(2, NULL, NULL, buf);
    check_prefixes(buf, n);
}

static void expect_invalid(const void *hdr, size_t n, const char *why)
{
    struct sockaddr_storage ds, dd;
    int rc = slb_pp_decode(hdr, n, &ds, &dd);
    if (rc != SLB_EPROTO)
        fail_msg("%s: got %d, want SLB_EPROTO", why, rc);
}

static void expect_invalid_v1(const char *line)
{
    expect_invalid(line, strlen(line), line);
}

static void test_invalid_v1(void **state)
{
    expect_invalid_v1("GET / HTTP/1.1\r\n");
    expect_invalid_v1("PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    expect_invalid_v1("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    expect_invalid_v1("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n");
    expect_invalid_v1("PROXY\r\n");
    expect_invalid_v1("PROXY \r\n");
    /* bad ports */
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 000080\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 08\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n");
    /* bad addresses */
    expect_invalid_v1("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n");
    expect_invalid_v1("PROXY TCP4 ::1 5.6.7.8 1 2\r\n");
    expect_invalid_v1("PROXY TCP6 1.2.3.4 ::1 1 2\r\n");
    expect_invalid_v1("PROXY TCP6 ::1 ::g 1 2\r\n");
    expect_invalid_v1("PROXY TCP4 localhost 5.6.7.8 1 2\r\n");
    /* line framing */
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
    expect_invalid_v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX");
    expect_invalid_v1("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n");
    expect_invalid_v1("PROXY UNKNOWNX\r\n");

    /* 107 bytes without a CRLF, and a CRLF that starts at byte 107. */
    char line[200];
    memset(line, '1', sizeof(line));
    memcpy(line, "PROXY TCP4 ", 11);
    expect_invalid(line, 107, "no CRLF within 107 bytes");
    expect_invalid(line, sizeof(line), "no CRLF within 200 bytes");
    memcpy(line + 106, "\r\n", 2);
    expect_invalid(line, 107, "CR at the last allowed byte");
}

static void test_invalid_v2(void **state)
{
    unsigned char good[SLB_PP_MAX], b[SLB_PP_MAX + 64];
    struct sockaddr_storage s = mk("10.0.0.1", 1), d = mk("10.0.0.2", 2);
    size_t n = slb_pp_encode(2, (struct sockaddr *)&s, (struct sockaddr *)&d, good);
    assert_int_equal(n, 28);

    /* signature damaged at each byte; detected as soon as that byte arrives */
    for (size_t i = 0; i < 12; i++) {
        memcpy(b, good, n);
        b[i] ^= 0x40;
        expect_invalid(b, n, "bad signature");
        if (i > 0)
            expect_invalid(b, i + 1, "bad signature prefix");
    }
    memcpy(b, good, n);
    b[12] = 0x11; /* version 1 */
    expect_invalid(b, n, "version 1");
    expect_invalid(b, 13, "version 1, short");
    b[12] = 0x31; /* version 3 */
    expect_invalid(b, n, "version 3");
    b[12] = 0x22; /* command 2 */
    expect_invalid(b, n, "command 2");

    memcpy(b, good, n);
    b[15] = 11; /* TCP4 needs 12 */
    expect_invalid(b, n, "length too small for TCP4");
    expect_invalid(b, 16, "length too small for TCP4, head only");
    b[13] = 0x21;
    b[15] = 35; /* TCP6 needs 36 */
    expect_invalid(b, 16, "length too small for TCP6");
    b[13] = 0x31;
    b[14] = 0;
    b[15] = 215; /* UNIX needs 216 */
    expect_invalid(b, 16, "length too small for UNIX");

    memcpy(b, good, n);
    b[14] = 0xff; /* 65k: far beyond what we accept */
    expect_invalid(b, 16, "length too large");

    memcpy(b, good, n);
    b[13] = 0x12; /* UDP over IPv4 for a TCP connection */
    expect_invalid(b, n, "datagram transport");
    b[13] = 0x41; /* unknown address family */
    expect_invalid(b, n, "family 4");
    b[13] = 0x13; /* unknown transport */
    expect_invalid(b, n, "transport 3");
    b[13] = 0x10; /* family without transport */
    expect_invalid(b, n, "family without transport");
}

/* A v2 UNIX-stream header decodes to AF_UNIX paths. */
static void test_v2_unix(void **state)
{
    unsigned char b[16 + 216];
    memset(b, 0, sizeof(b));
    size_t n = slb_pp_encode(2, NULL, NULL, b);
    assert_int_equal(n, 16);
    b[12] = 0x21;
    b[13] = 0x31;
    b[14] = 0;
    b[15] = 216;
    memcpy(b + 16, "/run/a.sock", 11);
    memset(b + 16 + 108, 'p', 108); /* unterminated: must be clipped, not overrun */
    struct sockaddr_storage ds, dd;
    assert_int_equal(slb_pp_decode(b, sizeof(b), &ds, &dd), (int)sizeof(b));
    assert_int_equal(ds.ss_family, AF_UNIX);
    assert_string_equal(((struct sockaddr_un *)&ds)->sun_path, "/run/a.sock");
    assert_int_equal(dd.ss_family, AF_UNIX);
    assert_int_equal(strlen(((struct sockaddr_un *)&dd)->sun_path), 107);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_ipv4),   cmocka_unit_test(test_roundtrip_ipv6),
        cmocka_unit_test(test_roundtrip_mapped), cmocka_unit_test(test_exact_v1),
        cmocka_unit_test(test_exact_v2),         cmocka_unit_test(test_unknown_family),
        cmocka_unit_test(test_v2_tlvs),          cmocka_unit_test(test_incomplete),
        cmocka_unit_test(test_invalid_v1),       cmocka_unit_test(test_invalid_v2),
        cmocka_unit_test(test_v2_unix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
