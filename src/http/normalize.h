/* SPDX-License-Identifier: Apache-2.0 */
/* The path forwarding rules match on: one spelling for every request path that means the same
 * resource, so a rule is not bypassed by bytes a client shapes (RFC 3986 sections 2.3, 6.2.2).
 * Pure, no allocation: the output is never longer than the input. */
#ifndef SLB_HTTP_NORMALIZE_H
#define SLB_HTTP_NORMALIZE_H

#include <stddef.h>

/* Normalize the path of an origin-form request target (the part before '?', starting with
 * '/'), writing at most len + 1 bytes (NUL-terminated) to out, and the length to *outlen:
 *  - percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) are decoded, the hex
 *    digits of every other escape are upper-cased ("%7e" -> "~", "%3a" -> "%3A");
 *  - runs of '/' become one ("//a" -> "/a");
 *  - "." and ".." segments are resolved after decoding ("%2e%2e" is ".."); ".." at the root
 *    stays at the root;
 *  - case is kept: paths are case-sensitive.
 * Refused (SLB_EINVAL): a path not starting with '/', a '%' not followed by two hex digits,
 * an escaped '/', '\' or NUL ("%2F", "%5C", "%00": backends disagree whether they separate
 * segments, and either reading could walk around a rule), a raw '\', '#', space, control
 * or non-ASCII byte. Returns 0 or SLB_EINVAL. */
int slb_path_normalize(const char *in, size_t len, char *out, size_t *outlen);

#endif
