/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the ClientHello SNI parser: besides memory safety under ASan, it checks
 * the promises of src/tls/clienthello.h on every input (results, names, prefixes, limits, and
 * that fragmenting the first record over several changes nothing). */
#include "tls/clienthello.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG_MAX ((size_t)1 << 20) /* a limit no input of the fuzzer reaches */
#define MAX_CUTS 8

/* An invariant failed: say which and crash, so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_clienthello: %s:%d: check failed: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int parse(const uint8_t *d, size_t len, size_t max, char *out, size_t outlen)
{
    return slb_clienthello_sni(d, len, max, out, outlen);
}

/* A name we hand to a router: lowercase LDH labels of 1..63 joined by single dots. */
static void check_name(const char *s, int n)
{
    CHECK(n >= 1 && n <= SLB_CH_NAME_MAX);
    CHECK(strlen(s) == (size_t)n);
    CHECK(s[0] != '.' && s[n - 1] != '.');
    int label = 0;
    for (int i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            CHECK(label > 0);
            label = 0;
            continue;
        }
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
        label++;
        CHECK(label <= 63);
    }
}

/* FNV-1a, to derive cut points from the input itself so every run of an input is the same. */
static uint64_t hash(const uint8_t *d, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ d[i]) * 0x100000001b3u;
    return h;
}

/* When the input starts with a well-formed handshake record that it holds completely, cut that
 * record's payload into several records and check the result does not change: the parser
 * reads the handshake as one logical byte sequence. Only the record headers move the bytes,
 * and with a limit that is never reached nothing else can differ. */
static void check_refragmented(const uint8_t *d, size_t len, int want, const char *name)
{
    if (len < 5 || d[0] != 22 || d[1] != 3 || d[2] < 1 || d[2] > 4)
        return;
    size_t plen = (size_t)d[3] << 8 | d[4];
    if (plen < 2 || plen > 16384 + 2048 || 5 + plen > len)
        return;

    /* Cut only before the hello's end: bytes after it in the same record make it invalid,
     * while in a record of their own they are beyond what the parser reads. */
    size_t limit = plen;
    if (plen >= 4) {
        size_t end = 4 + ((size_t)d[6] << 16 | (size_t)d[7] << 8 | d[8]);
        if (end < limit)
            limit = end;
    }
    if (limit < 2)
        return;

    uint64_t h = hash(d, len);
    size_t ncuts = 1 + (size_t)(h % MAX_CUTS);
    if (ncuts > limit - 1)
        ncuts = limit - 1;
    size_t cuts[MAX_CUTS];
    /* Distinct, ascending cut points in 1..limit-1: pick ncuts of them by walking with gaps. */
    size_t at = 0;
    for (size_t i = 0; i < ncuts; i++) {
        size_t room = limit - 1 - at - (ncuts - 1 - i); /* keep one position per later cut */
        h = h * 6364136223846793005u + 1442695040888963407u;
        at += 1 + (size_t)((h >> 33) % room);
        cuts[i] = at;
    }

    uint8_t *f = malloc(len + 5 * ncuts);
    CHECK(f != NULL);
    size_t n = 0, from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : plen;
        CHECK(to > from);
        f[n++] = 22;
        f[n++] = d[1];
        f[n++] = d[2];
        f[n++] = (uint8_t)((to - from) >> 8);
        f[n++] = (uint8_t)(to - from);
        memcpy(f + n, d + 5 + from, to - from);
        n += to - from;
        from = to;
    }
    memcpy(f + n, d + 5 + plen, len - 5 - plen);
    n += len - 5 - plen;

    char out[SLB_CH_NAME_MAX + 1];
    int rc = parse(f, n, BIG_MAX, out, sizeof(out));
    if (rc != want)
        fprintf(stderr, "refragmented into %zu records: %d, whole: %d\n", ncuts + 1, rc, want);
    CHECK(rc == want);
    if (rc > 0)
        CHECK(strcmp(out, name) == 0);
    free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char out[SLB_CH_NAME_MAX + 1];
    char again[SLB_CH_NAME_MAX + 1];
    const size_t max = SLB_CH_DEFAULT_MAX;

    memset(out, 'x', sizeof(out));
    int rc = parse(data, size, max, out, sizeof(out));
    CHECK(rc >= SLB_CH_TOO_BIG && rc <= SLB_CH_NAME_MAX);
    if (rc > 0)
        check_name(out, rc);
    else
        CHECK(out[0] == '\0');
    if (size >= max)
        CHECK(rc != 0);

    /* Pure: the same answer twice, and without an output buffer. */
    CHECK(parse(data, size, max, again, sizeof(again)) == rc);
    CHECK(rc <= 0 || strcmp(out, again) == 0);
    CHECK(parse(data, size, max, NULL, 0) == rc);

    /* A name fits exactly in length + 1 bytes, and not in fewer. */
    if (rc > 0) {
        CHECK(parse(data, size, max, again, (size_t)rc + 1) == rc);
        CHECK(strcmp(out, again) == 0);
        CHECK(parse(data, size, max, again, (size_t)rc) == SLB_CH_TOO_BIG);
    }

    /* Prefixes: either "need more" or already the final answer. */
    if (size > 0) {
        size_t ks[] = {size - 1, size / 2, (size_t)(hash(data, size) % size), 5, 9};
        for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
            if (ks[i] >= size)
                continue;
            int p = parse(data, ks[i], max, again, sizeof(again));
            if (p != 0 && p != rc)
                fprintf(stderr, "prefix %zu of %zu: %d, whole: %d\n", ks[i], size, p, rc);
            CHECK(p == 0 || p == rc);
        }
    }

    /* A tighter limit can only turn the answer into TOO_BIG, and bytes past the limit are
     * never looked at. */
    size_t m = size / 2;
    int rm = parse(data, size, m, again, sizeof(again));
    CHECK(rm == rc || rm == SLB_CH_TOO_BIG);
    CHECK(parse(data, m, m, again, sizeof(again)) == rm);

    /* With no limit in reach, the answer is the same or the 16384 limit was what refused it. */
    int rb = parse(data, size, BIG_MAX, again, sizeof(again));
    CHECK(rb == rc || rc == SLB_CH_TOO_BIG);

    check_refragmented(data, size, rb, again);
    return 0;
}
