/* SPDX-License-Identifier: Apache-2.0 */
/* Path normalization for forwarding rules (see normalize.h for what is normalized and why). */
#include "http/normalize.h"

#include "core/err.h"

#include <stdbool.h>
#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* A byte a client may send raw in a path: visible ASCII but '\' (a separator on some
 * backends) and '#' (never sent: it starts a fragment). */
static bool raw_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '\\' && c != '#';
}

/* The segment just written (seg, n bytes) is "." or ".." or, as some servlet containers read
 * path parameters, ".;..." / "..;...": 1 and 2 for the dot segments, -1 for the lookalikes. */
static int dot_kind(const char *seg, size_t n)
{
    if (n == 1 && seg[0] == '.')
        return 1;
    if (n == 2 && seg[0] == '.' && seg[1] == '.')
        return 2;
    if ((n >= 2 && seg[0] == '.' && seg[1] == ';') ||
        (n >= 3 && seg[0] == '.' && seg[1] == '.' && seg[2] == ';'))
        return -1;
    return 0;
}

int slb_path_normalize(const char *in, size_t len, char *out, size_t *outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i = 0, w = 0;
    *outlen = 0;
    if (len == 0 || in[0] != '/')
        return SLB_EINVAL;
    while (i < len) {
        /* in[i] is '/': one separator for a run of them. */
        while (i < len && in[i] == '/')
            i++;
        if (w == 0 || out[w - 1] != '/')
            out[w++] = '/';
        size_t seg = w;
        while (i < len && in[i] != '/') {
            unsigned char c = (unsigned char)in[i];
            if (c == '%') {
                int hi = i + 2 < len ? hexval((unsigned char)in[i + 1]) : -1;
                int lo = hi >= 0 ? hexval((unsigned char)in[i + 2]) : -1;
                if (lo < 0)
                    return SLB_EINVAL;
                unsigned char v = (unsigned char)(hi << 4 | lo);
                if (v == '/' || v == '\\' || v == 0)
                    return SLB_EINVAL;
                if (unreserved(v)) {
                    out[w++] = (char)v;
                } else {
                    out[w++] = '%';
                    out[w++] = hex[v >> 4];
                    out[w++] = hex[v & 15];
                }
                i += 3;
                continue;
            }
            if (!raw_ok(c))
                return SLB_EINVAL;
            out[w++] = (char)c;
            i++;
        }
        int dot = dot_kind(out + seg, w - seg);
        if (dot < 0)
            return SLB_EINVAL;
        if (dot == 0)
            continue;
        w = seg; /* drop the dot segment, keep the '/' before it */
        if (dot == 2 && seg > 1) {
            /* out[seg - 1] is the '/' that ends the previous segment: drop that segment. */
            w = seg - 1;
            while (w > 0 && out[w - 1] != '/')
                w--;
        }
    }
    out[w] = '\0';
    *outlen = w;
    return 0;
}
