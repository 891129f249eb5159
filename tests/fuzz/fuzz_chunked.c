/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the chunked-body decoder: the promises of slb_chunked_feed (consumed
 * bytes, data slices inside what was consumed, nothing consumed once done, errors that stick),
 * the same outcome whether the body arrives whole, byte by byte or in uneven pieces, and data
 * and body length that agree with a simple reading of the chunk sizes. Then the re-framing on
 * top of it (slb_rechunk): relayed in uneven pieces, a body comes out in slbd's own framing
 * (no extensions, no leading zeros, no chunk larger than the piece in hand) that decodes to
 * the same data, and a body the decoder refuses is refused there too. With
 * refuse_banned_trailers set (a client's request body), a body is accepted exactly when it
 * would be without it and no trailer field is one slb_http_trailer_field_banned names,
 * however the body is split. */
#include "http/parser.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant failed: say which and crash, so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_chunked: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* What decoding a whole input gave: bytes consumed, the data bytes in order, the end state. */
struct outcome {
    size_t consumed;
    bool done;
    bool error;
    char *data;
    size_t data_len, cap;
};

static void outcome_free(struct outcome *o)
{
    free(o->data);
    memset(o, 0, sizeof(*o));
}

/* One call of the decoder on buf[0, len), with its documented promises checked; the data
 * found is appended to o->data, which has room for the whole input. */
static long feed(struct slb_chunked *c, const char *buf, size_t len, struct outcome *o)
{
    const char *d = (const char *)1; /* must be overwritten */
    size_t dl = (size_t)-1;
    bool was_done = c->done;
    long n = slb_chunked_feed(c, buf, len, &d, &dl);
    CHECK(n == -400 || (n >= 0 && (size_t)n <= len));
    if (n < 0) {
        /* An error sticks: a broken stream is never resumed. */
        CHECK(slb_chunked_feed(c, buf, len, NULL, NULL) == -400);
        o->error = true;
        return n;
    }
    if (was_done)
        CHECK(n == 0 && c->done);
    /* Progress or an end: 0 only for an empty buffer or a finished body. */
    CHECK(n > 0 || len == 0 || c->done);
    CHECK(dl <= (size_t)n);
    if (dl > 0) {
        uintptr_t b = (uintptr_t)buf, p = (uintptr_t)d;
        CHECK(p >= b && p - b + dl <= (size_t)n);
        CHECK(o->data_len + dl <= o->cap);
        memcpy(o->data + o->data_len, d, dl);
        o->data_len += dl;
    } else {
        CHECK(d == NULL);
    }
    o->consumed += (size_t)n;
    o->done = c->done;
    return n;
}

/* Feed buf in pieces of the given sizes (cycled), calling again on what a call left over, as
 * the proxy does, until the body ends, fails or the input runs out. Each piece is a private
 * copy, so ASan sees any read past it. */
static void decode(const char *buf, size_t len, const size_t *pieces, size_t npieces,
                   bool refuse_banned, struct outcome *o)
{
    struct slb_chunked c;
    slb_chunked_init(&c);
    c.refuse_banned_trailers = refuse_banned;
    memset(o, 0, sizeof(*o));
    o->cap = len;
    o->data = malloc(len ? len : 1);
    char *piece = malloc(len ? len : 1);
    CHECK(o->data != NULL && piece != NULL);
    size_t k = 0;
    while (o->consumed < len && !o->done && !o->error) {
        size_t want = npieces ? pieces[k++ % npieces] : len - o->consumed;
        if (want == 0 || want > len - o->consumed)
            want = len - o->consumed;
        size_t end = o->consumed + want;
        while (o->consumed < end && !o->done && !o->error) {
            size_t n = end - o->consumed;
            char *copy = piece + (len - n); /* the copy ends where the allocation ends */
            memcpy(copy, buf + o->consumed, n);
            feed(&c, copy, n, o);
        }
    }
    if (o->done) {
        /* Bytes after the body (a pipelined request) are left alone. */
        CHECK(slb_chunked_feed(&c, buf + o->consumed, len - o->consumed, NULL, NULL) == 0);
    }
    free(piece);
}

static void check_same(const struct outcome *a, const struct outcome *b)
{
    CHECK(a->error == b->error);
    if (a->error)
        return;
    CHECK(a->done == b->done);
    CHECK(a->consumed == b->consumed);
    CHECK(a->data_len == b->data_len);
    CHECK(a->data_len == 0 || memcmp(a->data, b->data, a->data_len) == 0);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A plain reading of a body the decoder accepted: size lines (extensions skipped up to the
 * CR, which no extension byte may be), the data, CRLF, and after size 0 trailer lines up to
 * the empty one. The data must be the decoder's and the end must be where it stopped. Returns
 * whether a trailer field's name is one slb_http_trailer_field_banned names. */
static bool check_reference(const char *buf, const struct outcome *o)
{
    bool banned = false;
    size_t i = 0, d = 0, n = o->consumed;
    for (;;) {
        uint64_t size = 0;
        size_t digits = 0;
        int v;
        while (i < n && (v = hexval(buf[i])) >= 0) {
            CHECK(digits < 16);
            size = size << 4 | (uint64_t)v;
            digits++;
            i++;
        }
        CHECK(digits > 0);
        size_t line = digits;
        while (i < n && buf[i] != '\r') {
            i++;
            line++;
        }
        CHECK(line <= SLB_CHUNKED_MAX_LINE);
        CHECK(i + 1 < n && buf[i + 1] == '\n');
        i += 2;
        if (size == 0)
            break;
        CHECK(size <= n - i);
        CHECK(d + size <= o->data_len && memcmp(buf + i, o->data + d, (size_t)size) == 0);
        i += (size_t)size;
        d += (size_t)size;
        CHECK(i + 1 < n && buf[i] == '\r' && buf[i + 1] == '\n');
        i += 2;
    }
    size_t trailer = 0;
    for (;;) {
        CHECK(i + 1 < n);
        if (buf[i] == '\r' && buf[i + 1] == '\n')
            break;
        const char *cr = memchr(buf + i, '\r', n - i);
        CHECK(cr != NULL && (size_t)(cr - buf) + 1 < n && cr[1] == '\n');
        const char *colon = memchr(buf + i, ':', (size_t)(cr - buf) - i);
        CHECK(colon != NULL);
        banned |= slb_http_trailer_field_banned(buf + i, (size_t)(colon - buf) - i);
        trailer += (size_t)(cr - buf) + 2 - i;
        i = (size_t)(cr - buf) + 2;
    }
    CHECK(trailer + 2 <= SLB_CHUNKED_MAX_TRAILER);
    CHECK(i + 2 == n);
    CHECK(d == o->data_len);
    return banned;
}

/* Relay buf through slb_rechunk as the proxy does, the input arriving in pieces of the given
 * sizes (cycled) into a window; check the output against the decoder's outcome `whole`. With
 * drop_banned (a response), the output holds no banned trailer field. */
static void relay(const char *buf, size_t len, const size_t *pieces, size_t npieces,
                  const struct outcome *whole, bool drop_banned)
{
    struct slb_rechunk r;
    slb_rechunk_init(&r);
    r.drop_banned_trailers = drop_banned;
    size_t cap = 8 * len + 64, out_len = 0, off = 0, avail = 0, k = 0, max_piece = 0;
    char *out = malloc(cap);
    CHECK(out != NULL);
    bool error = false;
    for (;;) {
        char *win = malloc(avail ? avail : 1); /* a private copy, so ASan sees any overread */
        CHECK(win != NULL);
        memcpy(win, buf + off, avail);
        size_t ready = (size_t)-1;
        long d = slb_rechunk_next(&r, win, avail, &ready);
        if (d < 0) {
            CHECK(d == -400);
            free(win);
            error = true;
            break;
        }
        CHECK((size_t)d + ready + r.skip <= avail);
        CHECK(r.frame_len <= sizeof(r.frame) && r.frame_off == 0);
        CHECK(out_len + r.frame_len + ready <= cap);
        memcpy(out + out_len, r.frame, r.frame_len);
        out_len += r.frame_len;
        memcpy(out + out_len, win + d, ready);
        out_len += ready;
        free(win);
        size_t used = (size_t)d + ready + (size_t)r.skip;
        off += used;
        avail -= used;
        if (d == 0 && ready == 0 && r.frame_len == 0) {
            if (r.ck.done || off + avail == len)
                break;
            size_t want = pieces[k++ % npieces];
            avail += want;
            if (avail > len - off)
                avail = len - off;
            if (avail > max_piece)
                max_piece = avail;
        }
    }
    CHECK(error == whole->error);
    if (!error) {
        CHECK(r.ck.done == whole->done);
        /* A trailer line may be held until its name is whole: only when the input ends. */
        CHECK(off == whole->consumed || (drop_banned && !r.ck.done && off < whole->consumed));
    }
    if (r.ck.done) {
        /* The output is a chunked body of our framing with the same data. */
        struct outcome again;
        decode(out, out_len, NULL, 0, drop_banned, &again);
        CHECK(again.done && !again.error && again.consumed == out_len);
        CHECK(again.data_len == whole->data_len);
        CHECK(again.data_len == 0 || memcmp(again.data, whole->data, again.data_len) == 0);
        outcome_free(&again);
        size_t i = 0;
        for (;;) {
            uint64_t size = 0;
            size_t digits = 0;
            int v;
            while ((v = hexval(out[i])) >= 0) {
                CHECK(out[i] < 'A' || out[i] > 'F');
                size = size << 4 | (uint64_t)v;
                digits++;
                i++;
            }
            CHECK(digits == 1 || out[i - digits] != '0'); /* no leading zeros */
            CHECK(out[i] == '\r');                        /* no extension */
            i += 2;
            if (size == 0)
                break;
            CHECK(size <= max_piece);
            i += (size_t)size + 2;
        }
    }
    free(out);
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
    const char *buf = (const char *)data;
    struct outcome whole, bytes, uneven, strict, strict_bytes, strict_uneven;
    static const size_t one[] = {1};

    decode(buf, size, NULL, 0, false, &whole);
    bool banned = whole.done && check_reference(buf, &whole);
    decode(buf, size, one, 1, false, &bytes);
    check_same(&whole, &bytes);

    /* Refusing banned trailer fields: a body with one is refused, any other keeps its outcome
     * (one still incomplete may already be refused for a banned name it holds). */
    decode(buf, size, NULL, 0, true, &strict);
    if (whole.error || banned)
        CHECK(strict.error);
    else if (whole.done || !strict.error)
        check_same(&whole, &strict);
    if (strict.done)
        CHECK(!check_reference(buf, &strict));
    decode(buf, size, one, 1, true, &strict_bytes);
    check_same(&strict, &strict_bytes);

    /* Uneven pieces from the input's hash: splits inside the size line, the CRLFs, the data
     * and the trailer all land somewhere across the corpus. */
    size_t pieces[6];
    uint64_t h = hash(data, size);
    for (size_t i = 0; i < 6; i++) {
        h = h * 6364136223846793005u + 1442695040888963407u;
        pieces[i] = 1 + (size_t)(h >> 33) % 17;
    }
    decode(buf, size, pieces, 6, false, &uneven);
    check_same(&whole, &uneven);
    decode(buf, size, pieces, 6, true, &strict_uneven);
    check_same(&strict, &strict_uneven);
    relay(buf, size, pieces, 6, &whole, false);
    relay(buf, size, one, 1, &whole, false);
    relay(buf, size, pieces, 6, &whole, true);
    relay(buf, size, one, 1, &whole, true);

    outcome_free(&whole);
    outcome_free(&bytes);
    outcome_free(&uneven);
    outcome_free(&strict);
    outcome_free(&strict_bytes);
    outcome_free(&strict_uneven);
    return 0;
}
