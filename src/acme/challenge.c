/* SPDX-License-Identifier: Apache-2.0 */
/* The published ACME challenge answers (acme/challenge.h). Tables are small (a few entries
 * while orders are pending) and searched linearly. */
#include "acme/challenge.h"

#include "http/parser.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GRACE_MS 60000

struct http01 {
    char *token;
    char *key_authorization;
};

struct alpn {
    char *domain;
    X509 *cert;
    EVP_PKEY *key;
};

struct slb_acme_challenges {
    struct http01 *http;
    size_t nhttp;
    struct alpn *alpn;
    size_t nalpn;
    uint64_t retired_ms;              /* control only */
    struct slb_acme_challenges *next; /* retired list; control only */
};

static _Atomic(struct slb_acme_challenges *) current;
static struct slb_acme_challenges *retired;

struct slb_acme_challenges *slb_acme_challenges_new(void)
{
    return calloc(1, sizeof(struct slb_acme_challenges));
}

int slb_acme_challenges_add_http01(struct slb_acme_challenges *t, const char *token,
                                   const char *key_authorization)
{
    struct http01 *h = realloc(t->http, (t->nhttp + 1) * sizeof(*h));
    if (!h)
        return -ENOMEM;
    t->http = h;
    h += t->nhttp;
    h->token = strdup(token);
    h->key_authorization = strdup(key_authorization);
    if (!h->token || !h->key_authorization) {
        free(h->token);
        free(h->key_authorization);
        return -ENOMEM;
    }
    t->nhttp++;
    return 0;
}

int slb_acme_challenges_add_alpn(struct slb_acme_challenges *t, const char *domain, X509 *cert,
                                 EVP_PKEY *key)
{
    struct alpn *a = realloc(t->alpn, (t->nalpn + 1) * sizeof(*a));
    if (!a)
        return -ENOMEM;
    t->alpn = a;
    a += t->nalpn;
    if (!(a->domain = strdup(domain)))
        return -ENOMEM;
    X509_up_ref(cert);
    EVP_PKEY_up_ref(key);
    a->cert = cert;
    a->key = key;
    t->nalpn++;
    return 0;
}

void slb_acme_challenges_free(struct slb_acme_challenges *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nhttp; i++) {
        free(t->http[i].token);
        free(t->http[i].key_authorization);
    }
    for (size_t i = 0; i < t->nalpn; i++) {
        free(t->alpn[i].domain);
        X509_free(t->alpn[i].cert);
        EVP_PKEY_free(t->alpn[i].key);
    }
    free(t->http);
    free(t->alpn);
    free(t);
}

void slb_acme_challenges_publish(struct slb_acme_challenges *t, uint64_t now_ms)
{
    struct slb_acme_challenges *old = atomic_exchange_explicit(&current, t, memory_order_acq_rel);
    if (old) {
        old->retired_ms = now_ms;
        old->next = retired;
        retired = old;
    }
}

void slb_acme_challenges_reap(uint64_t now_ms, bool force)
{
    struct slb_acme_challenges **pp = &retired;
    while (*pp) {
        struct slb_acme_challenges *t = *pp;
        if (force || now_ms - t->retired_ms >= GRACE_MS) {
            *pp = t->next;
            slb_acme_challenges_free(t);
        } else {
            pp = &t->next;
        }
    }
    if (force)
        slb_acme_challenges_free(atomic_exchange(&current, NULL));
}

const char *slb_acme_http01_answer(const char *path, size_t len)
{
    size_t plen = sizeof(SLB_ACME_HTTP01_PREFIX) - 1;
    if (len <= plen || memcmp(path, SLB_ACME_HTTP01_PREFIX, plen) != 0)
        return NULL;
    const struct slb_acme_challenges *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t)
        return NULL;
    const char *token = path + plen;
    size_t tlen = len - plen;
    for (size_t i = 0; i < t->nhttp; i++) {
        if (strlen(t->http[i].token) == tlen && memcmp(t->http[i].token, token, tlen) == 0)
            return t->http[i].key_authorization;
    }
    return NULL;
}

const char *slb_acme_http01_request(const struct slb_http_msg *m)
{
    if (m->method != SLB_HTTP_GET && m->method != SLB_HTTP_HEAD)
        return NULL;
    const char *q = memchr(m->target.p, '?', m->target.len);
    return slb_acme_http01_answer(m->target.p, q ? (size_t)(q - m->target.p) : m->target.len);
}

bool slb_acme_alpn_lookup(const char *domain, size_t len, X509 **cert, EVP_PKEY **key)
{
    const struct slb_acme_challenges *t = atomic_load_explicit(&current, memory_order_acquire);
    if (!t || !domain)
        return false;
    for (size_t i = 0; i < t->nalpn; i++) {
        if (strlen(t->alpn[i].domain) == len && strncasecmp(t->alpn[i].domain, domain, len) == 0) {
            *cert = t->alpn[i].cert;
            *key = t->alpn[i].key;
            return true;
        }
    }
    return false;
}

bool slb_acme_alpn_offered(const unsigned char *list, size_t len)
{
    size_t want = sizeof(SLB_ACME_TLS_ALPN) - 1;
    for (size_t i = 0; i < len;) {
        size_t n = list[i];
        if (n == 0 || i + 1 + n > len)
            return false;
        if (n == want && memcmp(list + i + 1, SLB_ACME_TLS_ALPN, n) == 0)
            return true;
        i += 1 + n;
    }
    return false;
}
