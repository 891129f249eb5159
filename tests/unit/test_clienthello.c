/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the ClientHello SNI parser: real hellos from openssl and curl, every prefix,
 * fragmentation over records, malformed framing and names, and the size limits. */
/* cmocka needs these in this order; keep clang-format from sorting them. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls/clienthello.h"

#define MAX SLB_CH_DEFAULT_MAX

/* ---------------------------------------------------------------------------------------------
 * Captured hellos: the first bytes `openssl s_client` and `curl` sent to a socket on 127.0.0.1
 * (the same files as tests/fuzz/corpus/clienthello/). Embedded so the test does not depend on
 * the directory it runs from; sized without the string literals' NUL.
 * ------------------------------------------------------------------------------------------- */

/* openssl s_client -servername example.com (TLS 1.3, one record) */
static const unsigned char openssl_tls13_sni[317] =
    "\x16\x03\x01\x01\x38\x01\x00\x01\x34\x03\x03\x77\x05\x7a\xa1\xdf\xdc\x79\xc3\x4e\xa0\x9b\x45"
    "\xa4\x86\x9c\x3c\x69\xe9\xab\x76\x37\xc4\x72\x79\xfd\x39\x50\x16\x13\x68\xa3\xf6\x20\x70\x70"
    "\x71\x52\x2e\xdd\x94\x23\x12\x5d\x36\x59\x63\x94\x64\x9a\x2d\x8b\x79\x65\x6b\xae\xeb\x07\x8c"
    "\x33\xe6\xd6\xc1\xf1\xe2\xee\x00\x3e\x13\x02\x13\x03\x13\x01\xc0\x2c\xc0\x30\x00\x9f\xcc\xa9"
    "\xcc\xa8\xcc\xaa\xc0\x2b\xc0\x2f\x00\x9e\xc0\x24\xc0\x28\x00\x6b\xc0\x23\xc0\x27\x00\x67\xc0"
    "\x0a\xc0\x14\x00\x39\xc0\x09\xc0\x13\x00\x33\x00\x9d\x00\x9c\x00\x3d\x00\x3c\x00\x35\x00\x2f"
    "\x00\xff\x01\x00\x00\xad\x00\x00\x00\x10\x00\x0e\x00\x00\x0b\x65\x78\x61\x6d\x70\x6c\x65\x2e"
    "\x63\x6f\x6d\x00\x0b\x00\x04\x03\x00\x01\x02\x00\x0a\x00\x16\x00\x14\x00\x1d\x00\x17\x00\x1e"
    "\x00\x19\x00\x18\x01\x00\x01\x01\x01\x02\x01\x03\x01\x04\x00\x23\x00\x00\x00\x16\x00\x00\x00"
    "\x17\x00\x00\x00\x0d\x00\x2a\x00\x28\x04\x03\x05\x03\x06\x03\x08\x07\x08\x08\x08\x09\x08\x0a"
    "\x08\x0b\x08\x04\x08\x05\x08\x06\x04\x01\x05\x01\x06\x01\x03\x03\x03\x01\x03\x02\x04\x02\x05"
    "\x02\x06\x02\x00\x2b\x00\x09\x08\x03\x04\x03\x03\x03\x02\x03\x01\x00\x2d\x00\x02\x01\x01\x00"
    "\x33\x00\x26\x00\x24\x00\x1d\x00\x20\xff\xd1\x79\xd0\xfe\xe1\xba\xe1\x84\xf6\x2c\x51\x8b\xe3"
    "\x20\x7d\x21\xc0\x9a\x55\xfb\x1f\xbe\x06\x08\x23\x4a\xd1\x51\x02\x69\x1a";

/* openssl s_client -servername example.com -tls1_2 */
static const unsigned char openssl_tls12_sni[208] =
    "\x16\x03\x01\x00\xcb\x01\x00\x00\xc7\x03\x03\xb8\x0f\xe7\xa3\x3c\x72\xf8\x95\xc7\x85\x20\x40"
    "\x40\x03\x5b\xc6\x07\x00\xa7\xab\xaf\xc3\xb0\xa3\xf1\xa6\xa5\xeb\xd6\xab\xf6\x32\x00\x00\x38"
    "\xc0\x2c\xc0\x30\x00\x9f\xcc\xa9\xcc\xa8\xcc\xaa\xc0\x2b\xc0\x2f\x00\x9e\xc0\x24\xc0\x28\x00"
    "\x6b\xc0\x23\xc0\x27\x00\x67\xc0\x0a\xc0\x14\x00\x39\xc0\x09\xc0\x13\x00\x33\x00\x9d\x00\x9c"
    "\x00\x3d\x00\x3c\x00\x35\x00\x2f\x00\xff\x01\x00\x00\x66\x00\x00\x00\x10\x00\x0e\x00\x00\x0b"
    "\x65\x78\x61\x6d\x70\x6c\x65\x2e\x63\x6f\x6d\x00\x0b\x00\x04\x03\x00\x01\x02\x00\x0a\x00\x0c"
    "\x00\x0a\x00\x1d\x00\x17\x00\x1e\x00\x19\x00\x18\x00\x23\x00\x00\x00\x16\x00\x00\x00\x17\x00"
    "\x00\x00\x0d\x00\x2a\x00\x28\x04\x03\x05\x03\x06\x03\x08\x07\x08\x08\x08\x09\x08\x0a\x08\x0b"
    "\x08\x04\x08\x05\x08\x06\x04\x01\x05\x01\x06\x01\x03\x03\x03\x01\x03\x02\x04\x02\x05\x02\x06"
    "\x02";

/* openssl s_client -connect 127.0.0.1:PORT (an address: no server_name) */
static const unsigned char openssl_tls13_nosni[297] =
    "\x16\x03\x01\x01\x24\x01\x00\x01\x20\x03\x03\xeb\x31\xad\x3d\x0c\x7f\x83\x60\xf9\xbe\x42\x3c"
    "\xa0\x53\x1e\xf6\xc0\xb6\x57\x2d\xd8\x82\x8b\x3e\xe3\x60\x18\x2c\x50\x89\xa7\x94\x20\x96\x2f"
    "\x67\x52\x1e\xf7\x54\x8a\xd1\x9d\x06\x75\x47\x66\x4d\x1d\x2a\xe5\x9b\xaf\xfa\x38\xa0\x6d\x9e"
    "\xa7\xae\x90\x8e\xa0\x61\x25\x00\x3e\x13\x02\x13\x03\x13\x01\xc0\x2c\xc0\x30\x00\x9f\xcc\xa9"
    "\xcc\xa8\xcc\xaa\xc0\x2b\xc0\x2f\x00\x9e\xc0\x24\xc0\x28\x00\x6b\xc0\x23\xc0\x27\x00\x67\xc0"
    "\x0a\xc0\x14\x00\x39\xc0\x09\xc0\x13\x00\x33\x00\x9d\x00\x9c\x00\x3d\x00\x3c\x00\x35\x00\x2f"
    "\x00\xff\x01\x00\x00\x99\x00\x0b\x00\x04\x03\x00\x01\x02\x00\x0a\x00\x16\x00\x14\x00\x1d\x00"
    "\x17\x00\x1e\x00\x19\x00\x18\x01\x00\x01\x01\x01\x02\x01\x03\x01\x04\x00\x23\x00\x00\x00\x16"
    "\x00\x00\x00\x17\x00\x00\x00\x0d\x00\x2a\x00\x28\x04\x03\x05\x03\x06\x03\x08\x07\x08\x08\x08"
    "\x09\x08\x0a\x08\x0b\x08\x04\x08\x05\x08\x06\x04\x01\x05\x01\x06\x01\x03\x03\x03\x01\x03\x02"
    "\x04\x02\x05\x02\x06\x02\x00\x2b\x00\x09\x08\x03\x04\x03\x03\x03\x02\x03\x01\x00\x2d\x00\x02"
    "\x01\x01\x00\x33\x00\x26\x00\x24\x00\x1d\x00\x20\x60\x39\x01\x1e\xfd\xa4\x73\x9b\x81\x04\xb7"
    "\xc8\x97\x31\x7a\xbe\x6e\x6a\x2a\x9d\x79\x43\xd2\xa7\x45\x30\x6b\xe4\xda\xf9\xf9\x15";

/* openssl s_client -tls1_2, no server_name */
static const unsigned char openssl_tls12_nosni[188] =
    "\x16\x03\x01\x00\xb7\x01\x00\x00\xb3\x03\x03\x3e\xba\xb8\x28\xc8\x9b\xfc\x2f\x6b\xdb\xef\x1a"
    "\x2d\x6f\x77\xba\x51\x8d\xab\xdc\x24\x59\xd6\x26\x9f\xd9\x18\xfc\x95\x51\x72\x12\x00\x00\x38"
    "\xc0\x2c\xc0\x30\x00\x9f\xcc\xa9\xcc\xa8\xcc\xaa\xc0\x2b\xc0\x2f\x00\x9e\xc0\x24\xc0\x28\x00"
    "\x6b\xc0\x23\xc0\x27\x00\x67\xc0\x0a\xc0\x14\x00\x39\xc0\x09\xc0\x13\x00\x33\x00\x9d\x00\x9c"
    "\x00\x3d\x00\x3c\x00\x35\x00\x2f\x00\xff\x01\x00\x00\x52\x00\x0b\x00\x04\x03\x00\x01\x02\x00"
    "\x0a\x00\x0c\x00\x0a\x00\x1d\x00\x17\x00\x1e\x00\x19\x00\x18\x00\x23\x00\x00\x00\x16\x00\x00"
    "\x00\x17\x00\x00\x00\x0d\x00\x2a\x00\x28\x04\x03\x05\x03\x06\x03\x08\x07\x08\x08\x08\x09\x08"
    "\x0a\x08\x0b\x08\x04\x08\x05\x08\x06\x04\x01\x05\x01\x06\x01\x03\x03\x03\x01\x03\x02\x04\x02"
    "\x05\x02\x06\x02";

/* curl --resolve example.com:PORT:127.0.0.1 https://example.com:PORT/ (padded to 512) */
static const unsigned char curl_sni[517] =
    "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\xb3\x26\xa8\x0b\x86\x48\x3f\x0c\x6b\x4f\x31\x00"
    "\x63\x58\x18\x9f\x24\x47\xe0\x58\x6f\x3d\x54\xd7\x76\xe6\xa7\x2c\x16\x3e\x7b\x22\x20\xe2\xc5"
    "\x07\x71\xa7\x20\xfc\x15\xc5\x6d\xf4\xfd\x26\x25\x59\xf1\xfa\xdc\xba\xc5\xd7\xa9\x19\xc5\xfd"
    "\xa6\x5c\x4c\x36\x03\x51\x1f\x00\x3e\x13\x02\x13\x03\x13\x01\xc0\x2c\xc0\x30\x00\x9f\xcc\xa9"
    "\xcc\xa8\xcc\xaa\xc0\x2b\xc0\x2f\x00\x9e\xc0\x24\xc0\x28\x00\x6b\xc0\x23\xc0\x27\x00\x67\xc0"
    "\x0a\xc0\x14\x00\x39\xc0\x09\xc0\x13\x00\x33\x00\x9d\x00\x9c\x00\x3d\x00\x3c\x00\x35\x00\x2f"
    "\x00\xff\x01\x00\x01\x75\x00\x00\x00\x10\x00\x0e\x00\x00\x0b\x65\x78\x61\x6d\x70\x6c\x65\x2e"
    "\x63\x6f\x6d\x00\x0b\x00\x04\x03\x00\x01\x02\x00\x0a\x00\x16\x00\x14\x00\x1d\x00\x17\x00\x1e"
    "\x00\x19\x00\x18\x01\x00\x01\x01\x01\x02\x01\x03\x01\x04\x00\x10\x00\x0e\x00\x0c\x02\x68\x32"
    "\x08\x68\x74\x74\x70\x2f\x31\x2e\x31\x00\x16\x00\x00\x00\x17\x00\x00\x00\x31\x00\x00\x00\x0d"
    "\x00\x2a\x00\x28\x04\x03\x05\x03\x06\x03\x08\x07\x08\x08\x08\x09\x08\x0a\x08\x0b\x08\x04\x08"
    "\x05\x08\x06\x04\x01\x05\x01\x06\x01\x03\x03\x03\x01\x03\x02\x04\x02\x05\x02\x06\x02\x00\x2b"
    "\x00\x09\x08\x03\x04\x03\x03\x03\x02\x03\x01\x00\x2d\x00\x02\x01\x01\x00\x33\x00\x26\x00\x24"
    "\x00\x1d\x00\x20\x0e\x92\xcb\xe0\x0e\x1e\x75\xdd\x4a\x8f\x59\xf9\x09\x8e\x70\x72\x13\xda\x38"
    "\x00\x8d\xa1\x5d\x36\x59\xaa\x4a\x96\x34\x7b\x35\x1e\x00\x15\x00\xb2\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";

struct capture {
    const char *what;
    const unsigned char *bytes;
    size_t len;
    int want; /* expected result: a name length or SLB_CH_NO_SNI */
};

static const struct capture captures[] = {
    {"openssl_tls13_sni", openssl_tls13_sni, sizeof(openssl_tls13_sni), 11},
    {"openssl_tls12_sni", openssl_tls12_sni, sizeof(openssl_tls12_sni), 11},
    {"openssl_tls13_nosni", openssl_tls13_nosni, sizeof(openssl_tls13_nosni), SLB_CH_NO_SNI},
    {"openssl_tls12_nosni", openssl_tls12_nosni, sizeof(openssl_tls12_nosni), SLB_CH_NO_SNI},
    {"curl_sni", curl_sni, sizeof(curl_sni), 11},
};
#define NCAPTURES (sizeof(captures) / sizeof(captures[0]))

/* Parse with the listeners' limit and a full-size name buffer. */
static int sni(const unsigned char *b, size_t len, char *out)
{
    return slb_clienthello_sni(b, len, MAX, out, SLB_CH_NAME_MAX + 1);
}

/* ---------------------------------------------------------------------------------------------
 * A small writer for synthetic hellos. Vectors are opened, filled and closed, which patches
 * their length prefix, so a test can then corrupt exactly one field.
 * ------------------------------------------------------------------------------------------- */

/* Where build_hello put the fields tests corrupt. */
struct hello_layout {
    size_t rec_len;   /* offset of the record length */
    size_t hs_len;    /* offset of the handshake length */
    size_t ext_total; /* offset of the extensions' total length */
    size_t sni_ext;   /* offset of the (first) server_name extension's type */
};

struct bld {
    unsigned char b[70000];
    size_t n;
};

static void put(struct bld *w, unsigned v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        w->b[w->n++] = (unsigned char)(v >> (8 * i));
}

static void put_mem(struct bld *w, const void *p, size_t n)
{
    memcpy(w->b + w->n, p, n);
    w->n += n;
}

/* Open a vector with a length prefix of `bytes` bytes; returns where the prefix is. */
static size_t open_vec(struct bld *w, int bytes)
{
    size_t at = w->n;
    put(w, 0, bytes);
    return at;
}

/* Add delta to the big-endian integer of `bytes` bytes at b + at (a length field). */
static void adjust(unsigned char *b, size_t at, int bytes, long delta)
{
    long v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | b[at + (size_t)i];
    v += delta;
    assert_true(v >= 0 && v < 1L << (8 * bytes));
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        b[at + (size_t)i] = (unsigned char)v;
}

/* Shrink or grow the record, handshake and extensions lengths of a one-record hello together,
 * after delta bytes were removed from or added to its extensions. */
static void adjust_all(unsigned char *b, const struct hello_layout *l, long delta)
{
    adjust(b, l->rec_len, 2, delta);
    adjust(b, l->hs_len, 3, delta);
    adjust(b, l->ext_total, 2, delta);
}

static void close_vec(struct bld *w, size_t at, int bytes)
{
    size_t len = w->n - at - (size_t)bytes;
    for (int i = 0; i < bytes; i++)
        w->b[at + (size_t)i] = (unsigned char)(len >> (8 * (bytes - 1 - i)));
}

/* Options for one synthetic hello; zero means the usual value. */
struct hello_opts {
    bool no_extensions; /* stop after the compression methods */
    const char *name;   /* server_name host_name, or NULL for none */
    size_t name_len;    /* when the name has embedded NULs or is built by the test */
    int sni_count;      /* how many server_name extensions (default 1 when name is set) */
    bool padding_after; /* a padding extension after server_name */
    size_t padding;     /* its length */
};

static void put_sni_ext(struct bld *w, const char *name, size_t nlen)
{
    put(w, 0, 2); /* server_name */
    size_t ext = open_vec(w, 2);
    size_t list = open_vec(w, 2);
    put(w, 0, 1); /* host_name */
    size_t hn = open_vec(w, 2);
    put_mem(w, name, nlen);
    close_vec(w, hn, 2);
    close_vec(w, list, 2);
    close_vec(w, ext, 2);
}

/* One record holding one ClientHello, shaped by o; lay (when not NULL) tells where fields are. */
static void build_hello(struct bld *w, const struct hello_opts *o, struct hello_layout *lay)
{
    struct hello_layout l = {0};
    w->n = 0;
    put(w, 22, 1);
    put(w, 0x0301, 2);
    l.rec_len = open_vec(w, 2);
    put(w, 1, 1);
    l.hs_len = open_vec(w, 3);
    put(w, 0x0303, 2);
    for (int i = 0; i < 32; i++)
        put(w, (unsigned)(i * 7 + 1), 1); /* random */
    size_t sid = open_vec(w, 1);
    for (int i = 0; i < 32; i++)
        put(w, 0xa0, 1);
    close_vec(w, sid, 1);
    size_t cs = open_vec(w, 2);
    put(w, 0x1301, 2); /* TLS_AES_128_GCM_SHA256 */
    put(w, 0xc02f, 2); /* ECDHE-RSA-AES128-GCM-SHA256 */
    close_vec(w, cs, 2);
    put(w, 1, 1); /* one compression method: null */
    put(w, 0, 1);
    if (!o->no_extensions) {
        l.ext_total = open_vec(w, 2);
        put(w, 0x000a, 2); /* supported_groups: x25519 */
        put(w, 4, 2);
        put(w, 2, 2);
        put(w, 0x001d, 2);
        int count = o->sni_count ? o->sni_count : 1;
        for (int i = 0; o->name && i < count; i++) {
            if (i == 0)
                l.sni_ext = w->n;
            put_sni_ext(w, o->name, o->name_len ? o->name_len : strlen(o->name));
        }
        if (o->padding_after) {
            put(w, 0x0015, 2);
            size_t pad = open_vec(w, 2);
            for (size_t i = 0; i < o->padding; i++)
                put(w, 0, 1);
            close_vec(w, pad, 2);
        }
        put(w, 0x002b, 2); /* supported_versions: TLS 1.3, 1.2 */
        put(w, 5, 2);
        put(w, 4, 1);
        put(w, 0x0304, 2);
        put(w, 0x0303, 2);
        close_vec(w, l.ext_total, 2);
    }
    close_vec(w, l.hs_len, 3);
    close_vec(w, l.rec_len, 2);
    if (lay)
        *lay = l;
}

static void hello_named(struct bld *w, const char *name)
{
    struct hello_opts o = {.name = name};
    build_hello(w, &o, NULL);
}

/* Re-cut the payload of a one-record stream into records ending at the payload offsets in cuts
 * (ascending, within the payload), each with its own header, as a client that fragments the
 * handshake would send it. Bytes after the first record are copied unchanged. */
static size_t fragment(const unsigned char *in, size_t inlen, const size_t *cuts, size_t ncuts,
                       unsigned char *out)
{
    size_t plen = (size_t)in[3] << 8 | in[4];
    const unsigned char *p = in + 5;
    size_t n = 0, from = 0;
    assert_true(5 + plen <= inlen);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : plen;
        assert_true(to > from && to <= plen);
        out[n++] = 22;
        out[n++] = in[1];
        out[n++] = in[2];
        out[n++] = (unsigned char)((to - from) >> 8);
        out[n++] = (unsigned char)(to - from);
        memcpy(out + n, p + from, to - from);
        n += to - from;
        from = to;
    }
    memcpy(out + n, in + 5 + plen, inlen - 5 - plen);
    return n + inlen - 5 - plen;
}

/* Every strict prefix of a complete stream must ask for more bytes and leave out empty. */
static void assert_prefixes_incomplete(const unsigned char *b, size_t full)
{
    char out[SLB_CH_NAME_MAX + 1];
    for (size_t k = 0; k < full; k++) {
        memset(out, 'x', sizeof(out));
        int rc = sni(b, k, out);
        if (rc != 0)
            fail_msg("prefix of %zu/%zu bytes gave %d", k, full, rc);
        assert_string_equal(out, "");
    }
}

/* ---------------------------------------------------------------------------------------------
 * Real hellos
 * ------------------------------------------------------------------------------------------- */

static void test_captured(void **unused)
{
    for (size_t i = 0; i < NCAPTURES; i++) {
        const struct capture *c = &captures[i];
        char out[SLB_CH_NAME_MAX + 1];
        int rc = sni(c->bytes, c->len, out);
        if (rc != c->want)
            fail_msg("%s: got %d (%s), want %d", c->what, rc, slb_clienthello_strerror(rc),
                     c->want);
        assert_string_equal(out, c->want > 0 ? "example.com" : "");
        /* Exactly enough room to buffer it is enough; one byte less is not. */
        assert_int_equal(slb_clienthello_sni(c->bytes, c->len, c->len, out, sizeof(out)), c->want);
        assert_int_equal(slb_clienthello_sni(c->bytes, c->len, c->len - 1, out, sizeof(out)),
                         SLB_CH_TOO_BIG);
        /* Bytes after the hello (a client's early data, a second flight) change nothing. */
        unsigned char more[1024];
        memcpy(more, c->bytes, c->len);
        memset(more + c->len, 0xee, 100);
        assert_int_equal(sni(more, c->len + 100, out), c->want);
    }
}

static void test_captured_prefixes(void **unused)
{
    for (size_t i = 0; i < NCAPTURES; i++)
        assert_prefixes_incomplete(captures[i].bytes, captures[i].len);
}

/* The seed corpus on disk is what the fuzzer starts from; make sure it is made of real hellos.
 * Skipped when the test is not run from the repository root. */
static void test_corpus_files(void **unused)
{
    const char *dir = "tests/fuzz/corpus/clienthello";
    DIR *d = opendir(dir);
    if (!d) {
        skip();
        return;
    }
    int seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        unsigned char b[MAX];
        size_t n = fread(b, 1, sizeof(b), fp);
        fclose(fp);
        char out[SLB_CH_NAME_MAX + 1];
        int rc = sni(b, n, out);
        for (size_t i = 0; i < NCAPTURES; i++) {
            size_t nl = strlen(captures[i].what);
            if (strncmp(e->d_name, captures[i].what, nl) == 0 &&
                strcmp(e->d_name + nl, ".bin") == 0)
                assert_memory_equal(b, captures[i].bytes, captures[i].len);
        }
        bool named = strstr(e->d_name, "nosni") == NULL;
        if (named ? rc != 11 || strcmp(out, "example.com") != 0 : rc != SLB_CH_NO_SNI)
            fail_msg("%s: got %d '%s'", path, rc, out);
        seen++;
    }
    closedir(d);
    assert_true(seen >= 4);
}

/* ---------------------------------------------------------------------------------------------
 * Fragmentation over records
 * ------------------------------------------------------------------------------------------- */

static void test_fragmented(void **unused)
{
    static unsigned char out_bytes[4096];
    for (size_t i = 0; i < NCAPTURES; i++) {
        const struct capture *c = &captures[i];
        size_t plen = c->len - 5;
        /* Cuts inside the handshake header, inside the random, and around the extensions. */
        const size_t two[][1] = {{1}, {3}, {20}, {plen / 2}, {plen - 1}};
        const size_t three[][2] = {{2, 4}, {10, plen - 20}, {plen / 3, 2 * plen / 3}};
        char out[SLB_CH_NAME_MAX + 1];
        for (size_t j = 0; j < sizeof(two) / sizeof(two[0]); j++) {
            size_t n = fragment(c->bytes, c->len, two[j], 1, out_bytes);
            assert_int_equal(n, c->len + 5);
            assert_int_equal(sni(out_bytes, n, out), c->want);
            assert_string_equal(out, c->want > 0 ? "example.com" : "");
            assert_prefixes_incomplete(out_bytes, n);
        }
        for (size_t j = 0; j < sizeof(three) / sizeof(three[0]); j++) {
            size_t n = fragment(c->bytes, c->len, three[j], 2, out_bytes);
            assert_int_equal(n, c->len + 10);
            assert_int_equal(sni(out_bytes, n, out), c->want);
            assert_string_equal(out, c->want > 0 ? "example.com" : "");
            assert_prefixes_incomplete(out_bytes, n);
        }
    }
}

/* The worst a client can do: one byte per record, so every field straddles a record boundary. */
static void test_fragmented_every_byte(void **unused)
{
    const struct capture *c = &captures[0];
    size_t plen = c->len - 5;
    size_t cuts[1024];
    static unsigned char out_bytes[8192];
    for (size_t i = 0; i + 1 < plen; i++)
        cuts[i] = i + 1;
    size_t n = fragment(c->bytes, c->len, cuts, plen - 1, out_bytes);
    assert_int_equal(n, 6 * plen);
    char out[SLB_CH_NAME_MAX + 1];
    assert_int_equal(sni(out_bytes, n, out), 11);
    assert_string_equal(out, "example.com");
    /* 6 bytes per payload byte no longer fit in the listeners' usual 16384 only when the hello
     * is big; here a tighter limit shows the record headers are counted. */
    assert_int_equal(slb_clienthello_sni(out_bytes, n, n, out, sizeof(out)), 11);
    assert_int_equal(slb_clienthello_sni(out_bytes, n, n - 1, out, sizeof(out)), SLB_CH_TOO_BIG);
    assert_prefixes_incomplete(out_bytes, n);
}

/* A later record that is not a handshake record breaks a hello that has started. */
static void test_fragment_bad_continuation(void **unused)
{
    const struct capture *c = &captures[0];
    static unsigned char b[4096];
    size_t cut = 100;
    size_t n = fragment(c->bytes, c->len, &cut, 1, b);
    size_t second = 5 + cut;
    char out[SLB_CH_NAME_MAX + 1];
    assert_int_equal(sni(b, n, out), 11);

    const struct {
        size_t at;
        unsigned char v;
    } bad[] = {
        {0, 23},   /* application data */
        {0, 21},   /* alert */
        {0, 0x80}, /* not a record at all */
        {1, 2},    /* wrong major version */
        {2, 0},    /* SSL 3.0 */
        {2, 5},    /* unknown minor version */
        {3, 0x48}, /* record too long (0x48xx > 18432) */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char save = b[second + bad[i].at];
        b[second + bad[i].at] = bad[i].v;
        assert_int_equal(sni(b, n, out), SLB_CH_INVALID);
        /* Decided as soon as the offending byte is there (the length takes both of its). */
        size_t known = second + (bad[i].at == 3 ? 5 : bad[i].at + 1);
        assert_int_equal(sni(b, known - 1, out), 0);
        assert_int_equal(sni(b, known, out), SLB_CH_INVALID);
        assert_string_equal(out, "");
        b[second + bad[i].at] = save;
    }
    /* An empty record in the middle. */
    b[second + 3] = 0;
    b[second + 4] = 0;
    assert_int_equal(sni(b, second + 5, out), SLB_CH_INVALID);
}

/* ---------------------------------------------------------------------------------------------
 * Not TLS, and malformed framing
 * ------------------------------------------------------------------------------------------- */

static void test_not_tls(void **unused)
{
    char out[SLB_CH_NAME_MAX + 1];
    const char *http = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_int_equal(sni((const unsigned char *)http, strlen(http), out), SLB_CH_NOT_TLS);
    /* Known from the first byte, without waiting for a record header's worth. */
    assert_int_equal(sni((const unsigned char *)http, 1, out), SLB_CH_NOT_TLS);

    /* An SSLv2-compatible hello: two-byte length with the high bit, then msg type 1. */
    const unsigned char v2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10};
    assert_int_equal(sni(v2, sizeof(v2), out), SLB_CH_NOT_TLS);

    const unsigned char *h = captures[0].bytes;
    unsigned char b[16];
    memcpy(b, h, sizeof(b));
    const struct {
        size_t at;
        unsigned char v;
    } bad[] = {{0, 23}, {0, 21}, {0, 20}, {0, 0}, {0, 0x96}, {1, 2}, {1, 0x16}, {2, 0}, {2, 5}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(b, h, sizeof(b));
        b[bad[i].at] = bad[i].v;
        assert_int_equal(sni(b, sizeof(b), out), SLB_CH_NOT_TLS);
        assert_int_equal(sni(b, bad[i].at + 1, out), SLB_CH_NOT_TLS);
    }
    /* Each accepted record version starts a hello. */
    for (unsigned minor = 1; minor <= 4; minor++) {
        memcpy(b, h, sizeof(b));
        b[2] = (unsigned char)minor;
        assert_int_equal(sni(b, sizeof(b), out), 0);
    }
}

static void test_empty_input(void **unused)
{
    char out[4] = "abc";
    assert_int_equal(slb_clienthello_sni(NULL, 0, MAX, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(slb_clienthello_sni(NULL, 0, 0, out, sizeof(out)), SLB_CH_TOO_BIG);
}

static void test_bad_record_length(void **unused)
{
    char out[SLB_CH_NAME_MAX + 1];
    unsigned char b[64];
    memcpy(b, captures[0].bytes, sizeof(b));
    b[3] = 0;
    b[4] = 0;
    assert_int_equal(sni(b, 5, out), SLB_CH_INVALID);
    b[3] = 0x48; /* 18432 + 0x01 > 16384 + 2048 */
    b[4] = 0x01;
    assert_int_equal(sni(b, sizeof(b), out), SLB_CH_INVALID);
    b[4] = 0x00; /* exactly 16384 + 2048 is allowed: still incomplete here */
    assert_int_equal(slb_clienthello_sni(b, sizeof(b), 65536, out, sizeof(out)), 0);
}

/* The record is shorter than the handshake message says and nothing follows: only more bytes
 * can tell; a following record that holds something else settles it. */
static void test_record_shorter_than_message(void **unused)
{
    struct bld w;
    struct hello_layout l;
    struct hello_opts o = {.name = "example.com"};
    build_hello(&w, &o, &l);
    char out[SLB_CH_NAME_MAX + 1];
    adjust(w.b, l.rec_len, 2, -10); /* record ends 10 bytes early */
    size_t first = w.n - 10;
    assert_int_equal(sni(w.b, first, out), 0);
    /* The 10 bytes left are where a record header is now expected, and are not one. */
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

static void test_bad_handshake(void **unused)
{
    struct bld w;
    struct hello_layout l;
    struct hello_opts o = {.name = "example.com"};
    char out[SLB_CH_NAME_MAX + 1];

    build_hello(&w, &o, &l);
    assert_int_equal(sni(w.b, w.n, out), 11);

    /* Not a ClientHello: a ServerHello (2) or a Finished (20) first. */
    w.b[5] = 2;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    assert_int_equal(sni(w.b, 6, out), SLB_CH_INVALID);
    w.b[5] = 20;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* The handshake length disagrees with the extensions it holds, either way: known when the
     * extensions' total is read, without waiting for bytes that will never come. */
    build_hello(&w, &o, &l);
    adjust(w.b, l.hs_len, 3, 4);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    assert_int_equal(sni(w.b, l.ext_total + 2, out), SLB_CH_INVALID);
    build_hello(&w, &o, &l);
    adjust(w.b, l.hs_len, 3, -4);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* legacy_version with a major other than 3. */
    build_hello(&w, &o, &l);
    w.b[9] = 2;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* session_id longer than 32. */
    build_hello(&w, &o, &l);
    size_t sid = 9 + 2 + 32;
    assert_int_equal(w.b[sid], 32);
    w.b[sid] = 33;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    assert_int_equal(sni(w.b, sid + 1, out), SLB_CH_INVALID);

    /* cipher_suites: odd length, empty. */
    size_t cs = sid + 1 + 32;
    build_hello(&w, &o, &l);
    assert_int_equal(w.b[cs + 1], 4);
    w.b[cs + 1] = 3;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    w.b[cs + 1] = 0;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* compression methods: none. */
    size_t comp = cs + 2 + 4;
    build_hello(&w, &o, &l);
    assert_int_equal(w.b[comp], 1);
    w.b[comp] = 0;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

static void test_no_extensions(void **unused)
{
    struct bld w;
    struct hello_opts o = {.no_extensions = true};
    char out[SLB_CH_NAME_MAX + 1];
    build_hello(&w, &o, NULL);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_NO_SNI);
    assert_string_equal(out, "");
    assert_prefixes_incomplete(w.b, w.n);

    /* Extensions but no server_name. */
    struct hello_opts o2 = {0};
    build_hello(&w, &o2, NULL);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_NO_SNI);

    /* A lone byte where the extensions' length would be. */
    struct hello_layout l;
    build_hello(&w, &o, &l);
    w.b[w.n++] = 0;
    adjust(w.b, l.rec_len, 2, 1);
    adjust(w.b, l.hs_len, 3, 1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

static void test_bad_extensions(void **unused)
{
    struct bld w;
    struct hello_layout l;
    struct hello_opts o = {.name = "example.com"};
    char out[SLB_CH_NAME_MAX + 1];

    /* Total extensions length one more or one less than what the message holds. */
    build_hello(&w, &o, &l);
    adjust(w.b, l.ext_total, 2, 1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    build_hello(&w, &o, &l);
    adjust(w.b, l.ext_total, 2, -1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* Truncated extension: the last one (supported_versions) claims more than is left. */
    build_hello(&w, &o, &l);
    adjust(w.b, w.n - 7, 2, 1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* The message ends inside an extension header: cut the last 7 bytes from every length. */
    build_hello(&w, &o, &l);
    w.n -= 7;
    adjust_all(w.b, &l, -7);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* server_name's own length runs past the extensions. */
    build_hello(&w, &o, &l);
    w.b[l.sni_ext + 2] = 0x40;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

/* ---------------------------------------------------------------------------------------------
 * The server_name extension and the name
 * ------------------------------------------------------------------------------------------- */

static void test_names_valid(void **unused)
{
    struct bld w;
    char out[SLB_CH_NAME_MAX + 1];
    const struct {
        const char *in, *want;
    } ok[] = {
        {"example.com", "example.com"},
        {"WWW.Example.COM", "www.example.com"},
        {"example.com.", "example.com"},
        {"a", "a"},
        {"localhost", "localhost"},
        {"xn--bcher-kva.example", "xn--bcher-kva.example"},
        {"-a-.b-", "-a-.b-"},
        {"10.0.0.1", "10.0.0.1"},
        {"A1-B2.C3", "a1-b2.c3"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        hello_named(&w, ok[i].in);
        int rc = sni(w.b, w.n, out);
        assert_int_equal(rc, (int)strlen(ok[i].want));
        assert_string_equal(out, ok[i].want);
    }
    hello_named(&w, "Mixed.Case.Example.ORG");
    assert_prefixes_incomplete(w.b, w.n);
}

/* A name of n characters: labels of 63 letters joined by dots, ending in a shorter label. */
static void long_name(char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        s[i] = i % 64 == 63 ? '.' : (char)('a' + i % 26);
    if (s[n - 1] == '.')
        s[n - 1] = 'z';
    s[n] = '\0';
}

static void test_name_lengths(void **unused)
{
    struct bld w;
    char out[SLB_CH_NAME_MAX + 1], name[300];

    long_name(name, 255);
    hello_named(&w, name);
    assert_int_equal(sni(w.b, w.n, out), 255);
    assert_string_equal(out, name);

    /* 255 with the trailing dot: 254 left. */
    long_name(name, 254);
    strcat(name, ".");
    hello_named(&w, name);
    assert_int_equal(sni(w.b, w.n, out), 254);
    name[254] = '\0';
    assert_string_equal(out, name);

    long_name(name, 256);
    hello_named(&w, name);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    assert_string_equal(out, "");

    /* 255 characters and a trailing dot are 256 bytes on the wire: too long as well. */
    long_name(name, 255);
    strcat(name, ".");
    hello_named(&w, name);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* A label of 63 is the most DNS allows. */
    memset(name, 'q', 63);
    strcpy(name + 63, ".com");
    hello_named(&w, name);
    assert_int_equal(sni(w.b, w.n, out), 67);
    memset(name, 'q', 64);
    strcpy(name + 64, ".com");
    hello_named(&w, name);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

static void test_names_invalid(void **unused)
{
    struct bld w;
    char out[SLB_CH_NAME_MAX + 1];
    const char *bad[] = {
        "exa mple.com",  "example.com ",  " example.com",
        "exam_ple.com",  "example.com/",  "ex\xc3\xa9mple.com",
        "example..com",  ".example.com",  ".",
        "example.com..", "*.example.com", "example.com:443",
        "[::1]",         "a\tb",          "a\r\nb",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hello_named(&w, bad[i]);
        int rc = sni(w.b, w.n, out);
        if (rc != SLB_CH_INVALID)
            fail_msg("'%s' gave %d", bad[i], rc);
        assert_string_equal(out, "");
    }
    /* An embedded NUL must not cut the name short. */
    struct hello_opts o = {.name = "good\0evil.com", .name_len = 13};
    build_hello(&w, &o, NULL);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    /* The empty name. */
    struct hello_opts e = {.name = "", .name_len = 0};
    build_hello(&w, &e, NULL);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

/* A bad character is reported as soon as it arrives, before the rest of the hello. */
static void test_name_invalid_early(void **unused)
{
    struct bld w;
    struct hello_layout l;
    struct hello_opts o = {.name = "exa mple.com"};
    char out[SLB_CH_NAME_MAX + 1];
    build_hello(&w, &o, &l);
    size_t space = l.sni_ext + 4 + 2 + 1 + 2 + 3;
    assert_int_equal(w.b[space], ' ');
    assert_int_equal(sni(w.b, space, out), 0);
    assert_int_equal(sni(w.b, space + 1, out), SLB_CH_INVALID);
}

static void test_server_name_structure(void **unused)
{
    struct bld w;
    struct hello_layout l;
    struct hello_opts o = {.name = "example.com"};
    char out[SLB_CH_NAME_MAX + 1];
    size_t list, type, hlen;

    build_hello(&w, &o, &l);
    list = l.sni_ext + 4;
    type = list + 2;
    hlen = type + 1;
    assert_int_equal(sni(w.b, w.n, out), 11);

    /* server_name_list length one short, one long. */
    adjust(w.b, list, 2, -1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    adjust(w.b, list, 2, 2);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* name_type other than host_name. */
    build_hello(&w, &o, &l);
    w.b[type] = 1;
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* host_name length one short (the list then has a stray byte) and one long. */
    build_hello(&w, &o, &l);
    adjust(w.b, hlen, 2, -1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    adjust(w.b, hlen, 2, 2);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);

    /* An empty server_name extension is what servers answer with; a client must not send it. */
    build_hello(&w, &o, &l);
    {
        struct bld v;
        v.n = 0;
        put_mem(&v, w.b, l.sni_ext);
        put(&v, 0, 2);
        put(&v, 0, 2);
        size_t rest = l.sni_ext + 4 + 2 + 1 + 2 + 11;
        put_mem(&v, w.b + rest, w.n - rest);
        adjust_all(v.b, &l, -(long)(w.n - v.n));
        assert_int_equal(sni(v.b, v.n, out), SLB_CH_INVALID);
        /* Sanity: the edit left the rest well formed (the same bytes without SNI parse). */
        v.b[l.sni_ext + 1] = 0x23; /* session_ticket, empty: fine */
        assert_int_equal(sni(v.b, v.n, out), SLB_CH_NO_SNI);
    }
}

static void test_duplicate_sni(void **unused)
{
    struct bld w;
    char out[SLB_CH_NAME_MAX + 1];
    struct hello_opts o = {.name = "example.com", .sni_count = 2};
    build_hello(&w, &o, NULL);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    assert_string_equal(out, "");

    /* Two host_name entries in one list. */
    struct hello_layout l;
    struct hello_opts one = {.name = "a.example"};
    build_hello(&w, &one, &l);
    struct bld v;
    v.n = 0;
    put_mem(&v, w.b, l.sni_ext);
    put(&v, 0, 2);
    size_t ext = open_vec(&v, 2);
    size_t list = open_vec(&v, 2);
    for (int i = 0; i < 2; i++) {
        put(&v, 0, 1);
        size_t hn = open_vec(&v, 2);
        put_mem(&v, "a.example", 9);
        close_vec(&v, hn, 2);
    }
    close_vec(&v, list, 2);
    close_vec(&v, ext, 2);
    size_t rest = l.sni_ext + 4 + 2 + 1 + 2 + 9;
    put_mem(&v, w.b + rest, w.n - rest);
    adjust_all(v.b, &l, (long)(v.n - w.n));
    assert_int_equal(sni(v.b, v.n, out), SLB_CH_INVALID);
    /* Refused at the second entry's name_type byte. */
    size_t second = l.sni_ext + 4 + 2 + 1 + 2 + 9;
    assert_int_equal(sni(v.b, second, out), 0);
    assert_int_equal(sni(v.b, second + 1, out), SLB_CH_INVALID);
}

/* A name is only returned once the whole hello has been checked. */
static void test_error_after_name(void **unused)
{
    struct bld w;
    char out[SLB_CH_NAME_MAX + 1];
    hello_named(&w, "example.com");
    adjust(w.b, w.n - 7, 2, 1); /* the last extension, after server_name, overruns */
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    assert_string_equal(out, "");
}

/* The record that ends the hello must end with it; the next record is not ours to read. */
static void test_trailing_in_record(void **unused)
{
    struct bld w;
    struct hello_layout l;
    struct hello_opts o = {.name = "example.com"};
    char out[SLB_CH_NAME_MAX + 1];
    build_hello(&w, &o, &l);
    w.b[w.n++] = 20; /* what could be a Finished message's type */
    adjust(w.b, l.rec_len, 2, 1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
    /* Known once the hello is complete: the record header promised the extra byte. */
    assert_int_equal(sni(w.b, w.n - 1, out), SLB_CH_INVALID);
    assert_string_equal(out, "");

    struct hello_opts none = {.no_extensions = true};
    build_hello(&w, &none, &l);
    w.b[w.n++] = 0;
    adjust(w.b, l.rec_len, 2, 1);
    assert_int_equal(sni(w.b, w.n, out), SLB_CH_INVALID);
}

/* ---------------------------------------------------------------------------------------------
 * Limits
 * ------------------------------------------------------------------------------------------- */

static void test_too_big(void **unused)
{
    static struct bld w;
    struct hello_layout l;
    char out[SLB_CH_NAME_MAX + 1];

    static unsigned char frag[70000];
    size_t cuts[64];

    /* A hello padded to 20000 bytes cannot fit in 16384, whatever the records (two here, as
     * one record may not hold it). Known from the handshake header alone. */
    struct hello_opts o = {.name = "example.com", .padding_after = true, .padding = 20000};
    build_hello(&w, &o, &l);
    cuts[0] = 10000;
    size_t n = fragment(w.b, w.n, cuts, 1, frag);
    assert_int_equal(slb_clienthello_sni(frag, n, 65536, out, sizeof(out)), 11);
    assert_int_equal(sni(frag, n, out), SLB_CH_TOO_BIG);
    assert_int_equal(sni(frag, 9, out), SLB_CH_TOO_BIG);
    assert_int_equal(sni(frag, 8, out), 0);

    /* One that fits the message but not its record headers once fragmented. */
    struct hello_opts o2 = {.name = "example.com", .padding_after = true, .padding = 16200};
    build_hello(&w, &o2, &l);
    size_t plen = w.n - 5;
    assert_true(5 + plen <= MAX);
    assert_int_equal(sni(w.b, w.n, out), 11);
    size_t ncuts = 0;
    for (size_t at = 500; at < plen; at += 500)
        cuts[ncuts++] = at;
    n = fragment(w.b, w.n, cuts, ncuts, frag);
    assert_true(n > MAX);
    assert_int_equal(sni(frag, n, out), SLB_CH_TOO_BIG);
    /* ...and it is refused before the bytes past the limit arrive. */
    assert_int_equal(sni(frag, MAX - 1, out), SLB_CH_TOO_BIG);
    /* Given the room, it parses. */
    assert_int_equal(slb_clienthello_sni(frag, n, n, out, sizeof(out)), 11);

    /* Never "need more" once max bytes are there. */
    hello_named(&w, "example.com");
    for (size_t m = 0; m < w.n; m++)
        assert_int_equal(slb_clienthello_sni(w.b, m, m, out, sizeof(out)), SLB_CH_TOO_BIG);
}

static void test_out_buffer(void **unused)
{
    struct bld w;
    hello_named(&w, "Example.COM");
    char small[12];
    assert_int_equal(slb_clienthello_sni(w.b, w.n, MAX, small, sizeof(small)), 11);
    assert_string_equal(small, "example.com");
    memset(small, 'x', sizeof(small));
    assert_int_equal(slb_clienthello_sni(w.b, w.n, MAX, small, 11), SLB_CH_TOO_BIG);
    assert_int_equal(small[0], '\0');
    /* Classification only. */
    assert_int_equal(slb_clienthello_sni(w.b, w.n, MAX, NULL, 0), 11);
}

static void test_strerror(void **unused)
{
    assert_string_equal(slb_clienthello_strerror(5), "ok");
    assert_string_equal(slb_clienthello_strerror(0), "incomplete");
    assert_string_equal(slb_clienthello_strerror(SLB_CH_NO_SNI), "no_sni");
    assert_string_equal(slb_clienthello_strerror(SLB_CH_NOT_TLS), "not_tls");
    assert_string_equal(slb_clienthello_strerror(SLB_CH_INVALID), "invalid");
    assert_string_equal(slb_clienthello_strerror(SLB_CH_TOO_BIG), "too_big");
    assert_string_equal(slb_clienthello_strerror(-99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_captured),
        cmocka_unit_test(test_captured_prefixes),
        cmocka_unit_test(test_corpus_files),
        cmocka_unit_test(test_fragmented),
        cmocka_unit_test(test_fragmented_every_byte),
        cmocka_unit_test(test_fragment_bad_continuation),
        cmocka_unit_test(test_not_tls),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_bad_record_length),
        cmocka_unit_test(test_record_shorter_than_message),
        cmocka_unit_test(test_bad_handshake),
        cmocka_unit_test(test_no_extensions),
        cmocka_unit_test(test_bad_extensions),
        cmocka_unit_test(test_names_valid),
        cmocka_unit_test(test_name_lengths),
        cmocka_unit_test(test_names_invalid),
        cmocka_unit_test(test_name_invalid_early),
        cmocka_unit_test(test_server_name_structure),
        cmocka_unit_test(test_duplicate_sni),
        cmocka_unit_test(test_error_after_name),
        cmocka_unit_test(test_trailing_in_record),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_out_buffer),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
