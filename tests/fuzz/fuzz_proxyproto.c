/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the PROXY protocol v1/v2 decoder and encoder: results in the
 * documented range, a header length inside the input, incremental reading (every prefix of a
 * valid header asks for more, bytes after it change nothing), and for valid headers that the
 * decoded addresses survive encode -> decode in both versions. */
#include "core/err.h"
#include "tcp/proxyproto.h"

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* An invariant failed: say which and crash, so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_proxyproto: %s:%d: check failed: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define V1_MAX 107         /* longest v1 line, CRLF included */
#define V2_MAX (16 + 2048) /* fixed part plus the largest address block + TLVs we accept */

static int decode_copy(const uint8_t *data, size_t len, struct sockaddr_storage *src,
                       struct sockaddr_storage *dst)
{
    /* A private copy of exactly len bytes, so ASan sees any read past the end. */
    unsigned char *buf = malloc(len ? len : 1);
    CHECK(buf != NULL);
    memcpy(buf, data, len);
    int rc = slb_pp_decode(buf, len, src, dst);
    free(buf);
    return rc;
}

/* An address as the encoder will write it: IPv4-mapped IPv6 is IPv4, and when the two ends
 * do not share a family the IPv4 one is widened back to mapped IPv6. */
struct norm_addr {
    int family; /* AF_INET, AF_INET6 or AF_UNSPEC */
    unsigned char addr[16];
    uint16_t port;
};

static void norm_one(const struct sockaddr_storage *ss, struct norm_addr *n)
{
    memset(n, 0, sizeof(*n));
    n->family = AF_UNSPEC;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        n->family = AF_INET;
        memcpy(n->addr, &sin->sin_addr, 4);
        n->port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        n->port = ntohs(sin6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            n->family = AF_INET;
            memcpy(n->addr, &sin6->sin6_addr.s6_addr[12], 4);
        } else {
            n->family = AF_INET6;
            memcpy(n->addr, &sin6->sin6_addr, 16);
        }
    }
}

static void widen(struct norm_addr *n)
{
    if (n->family != AF_INET)
        return;
    unsigned char v4[4];
    memcpy(v4, n->addr, 4);
    memset(n->addr, 0, 16);
    n->addr[10] = n->addr[11] = 0xff;
    memcpy(n->addr + 12, v4, 4);
    n->family = AF_INET6;
}

static void normalize(const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
                      struct norm_addr *s, struct norm_addr *d)
{
    norm_one(src, s);
    norm_one(dst, d);
    if (s->family == AF_UNSPEC || d->family == AF_UNSPEC) {
        memset(s, 0, sizeof(*s));
        memset(d, 0, sizeof(*d));
        s->family = d->family = AF_UNSPEC;
        return;
    }
    if (s->family != d->family) {
        widen(s);
        widen(d);
    }
}

static bool norm_eq(const struct norm_addr *a, const struct norm_addr *b)
{
    if (a->family != b->family)
        return false;
    if (a->family == AF_UNSPEC)
        return true;
    size_t n = a->family == AF_INET ? 4 : 16;
    return a->port == b->port && memcmp(a->addr, b->addr, n) == 0;
}

/* Exactly what slb_pp_decode fills for a family: nothing left over from a previous use. */
static void check_filled(const struct sockaddr_storage *ss)
{
    CHECK(ss->ss_family == AF_INET || ss->ss_family == AF_INET6 || ss->ss_family == AF_UNIX ||
          ss->ss_family == AF_UNSPEC);
    if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
        CHECK(memchr(sun->sun_path, '\0', sizeof(sun->sun_path)) != NULL);
    }
}

/* decode(encode(a)) == a for both versions, and encoding is a fixed point after one round. */
static void check_roundtrip(const struct sockaddr_storage *src, const struct sockaddr_storage *dst)
{
    struct norm_addr want_s, want_d;
    normalize(src, dst, &want_s, &want_d);
    for (int version = 1; version <= 2; version++) {
        unsigned char enc[SLB_PP_MAX + 16], enc2[SLB_PP_MAX + 16];
        memset(enc, 0xa5, sizeof(enc));
        size_t n =
            slb_pp_encode(version, (const struct sockaddr *)src, (const struct sockaddr *)dst, enc);
        CHECK(n > 0 && n <= SLB_PP_MAX);
        CHECK(enc[SLB_PP_MAX] == 0xa5); /* nothing written past the documented size */
        if (version == 1)
            CHECK(n <= V1_MAX && memcmp(enc, "PROXY ", 6) == 0 && enc[n - 2] == '\r' &&
                  enc[n - 1] == '\n');
        struct sockaddr_storage s2, d2;
        int rc = decode_copy(enc, n, &s2, &d2);
        CHECK(rc > 0 && (size_t)rc == n);
        struct norm_addr got_s, got_d;
        normalize(&s2, &d2, &got_s, &got_d);
        CHECK(norm_eq(&got_s, &want_s) && norm_eq(&got_d, &want_d));
        size_t n2 = slb_pp_encode(version, (const struct sockaddr *)&s2,
                                  (const struct sockaddr *)&d2, enc2);
        CHECK(n2 == n && memcmp(enc, enc2, n) == 0);
    }
}

static uint64_t hash(const uint8_t *d, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ d[i]) * 0x100000001b3u;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_storage src, dst;
    memset(&src, 0x5a, sizeof(src));
    memset(&dst, 0x5a, sizeof(dst));
    int rc = decode_copy(data, size, &src, &dst);
    CHECK(rc == SLB_EPROTO || rc >= 0);
    CHECK(rc <= 0 || (size_t)rc <= size);
    if (rc > 0) {
        CHECK((size_t)rc <= (data[0] == 'P' ? V1_MAX : V2_MAX));
        check_filled(&src);
        check_filled(&dst);
        /* NULL outputs are allowed and change nothing. */
        CHECK(decode_copy(data, size, NULL, NULL) == rc);
        /* Bytes after the header belong to the proxied stream. */
        CHECK(decode_copy(data, (size_t)rc, NULL, NULL) == rc);
    }
    if (rc >= 0) {
        /* A listener reads the header as it arrives: no prefix of an acceptable (or not yet
         * complete) header may be refused or be complete at another length. */
        size_t end = rc > 0 ? (size_t)rc : size;
        if (end <= 256) {
            for (size_t k = 0; k < end; k++)
                CHECK(decode_copy(data, k, NULL, NULL) == 0);
        } else {
            uint64_t h = hash(data, size);
            for (int i = 0; i < 16; i++) {
                h = h * 6364136223846793005u + 1442695040888963407u;
                size_t k = i == 0 ? end - 1 : (size_t)(h >> 33) % end;
                CHECK(decode_copy(data, k, NULL, NULL) == 0);
            }
        }
    }
    if (rc > 0)
        check_roundtrip(&src, &dst);
    return 0;
}
