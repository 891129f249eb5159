/* SPDX-License-Identifier: Apache-2.0 */
/* Per-listener TLS contexts: one SSL_CTX per https listener built from the certificate store
 * and the listener's policy, the certificates SNI offers at ClientHello time,
 * client certificate verification, ALPN, and handshake failure classification. */
#include "tls/tls.h"

#include "acme/challenge.h"
#include "cert/ocsp.h"
#include "cert/store.h"
#include "cert/validate.h"
#include "config/snapshot.h"
#include "core/log.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Per-SSL flags kept in ex_data next to the chosen site (see client_hello_cb for when):
 * FLAG_KEPT_NAME says the ClientHello's server name, if it sent one, is in ssl_name_idx;
 * FLAG_ACME marks an ACME CA's tls-alpn-01 validation handshake (acme_alpn). */
enum { FLAG_BAD_SNI = 1, FLAG_KEPT_NAME = 2, FLAG_ACME = 4 };

#define VERIFY_DEPTH 4
#define TLS_MAX_HOSTNAME 255 /* RFC 6066: HostName is at most 2^8-1 bytes in practice */

/* Control-thread build context (slb_tls_set_store). */
static struct slb_certstore *g_store;
static struct slb_ticket_ring *g_ring;
static uint64_t g_context_builds; /* control thread only */

static pthread_once_t idx_once = PTHREAD_ONCE_INIT;
static int ssl_site_idx = -1, ssl_flags_idx = -1, ssl_name_idx = -1, ctx_listener_idx = -1;

static void name_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void idx_init(void)
{
    ssl_site_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ssl_flags_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ssl_name_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, name_free);
    ctx_listener_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void slb_tls_set_store(struct slb_certstore *store, struct slb_ticket_ring *ring)
{
    g_store = store;
    if (ring != g_ring) {
        slb_ticket_ring_ref(ring);
        slb_ticket_ring_unref(g_ring);
        g_ring = ring;
    }
    slb_ticket_ring_publish(ring);
}

static struct slb_cert *cert_lookup(const char *id)
{
    return g_store ? slb_certstore_get(g_store, id) : NULL;
}

static struct slb_tls_listener *listener_of(SSL *ssl)
{
    return ctx_listener_idx < 0 ? NULL
                                : SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_listener_idx);
}

/* --- names: SNI and Host against certificate SANs --- */

/* A name as it arrives (SNI or Host without port): one trailing dot is the same name. */
static void name_trim(const char **name, size_t *len)
{
    if (*len > 1 && (*name)[*len - 1] == '.')
        (*len)--;
}

/* exact: case-insensitive equality. wildcard: san is "*.rest" and name is "label.rest" with
 * a non-empty first label, so the star covers exactly one label. */
static bool san_match(const char *san, const char *name, size_t len, bool wildcard)
{
    size_t sl = strlen(san);
    if (!wildcard)
        return sl == len && strncasecmp(san, name, len) == 0;
    if (sl < 3 || san[0] != '*' || san[1] != '.')
        return false;
    const char *dot = memchr(name, '.', len);
    if (!dot || dot == name || memchr(name, '*', (size_t)(dot - name)))
        return false;
    size_t rest = len - (size_t)(dot + 1 - name);
    return rest == sl - 2 && strncasecmp(dot + 1, san + 2, rest) == 0;
}

static bool site_match(const struct slb_tls_site *s, const char *name, size_t len, bool wildcard)
{
    for (size_t i = 0; i < s->cert->nsans; i++) {
        if (san_match(s->cert->sans[i], name, len, wildcard))
            return true;
    }
    return false;
}

/* Adds s to the pair unless it already holds a certificate of s's key type: OpenSSL keeps one
 * certificate per key type, and configuration order decides within a type. */
static void pair_add(const struct slb_tls_site *pair[2], const struct slb_tls_site *s)
{
    if (!pair[0])
        pair[0] = s;
    else if (!pair[1] && s->kind != pair[0]->kind)
        pair[1] = s;
}

/* One slot of a listener's name table: a lowercased SAN (a wildcard "*.rest" as "rest" with
 * wild set) and the certificates offered for it. name NULL: empty slot. */
struct slb_tls_name {
    const char *name;
    uint32_t len;
    bool wild;
    uint64_t hash;
    struct slb_tls_pair pair;
};

static uint64_t name_hash(const char *name, size_t len, bool wild)
{
    /* FNV-1a over the lowercased bytes, the wildcard flag mixed in. */
    uint64_t h = wild ? 0xcbf29ce484222325ULL ^ 0x2a : 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        h = (h ^ c) * 0x100000001b3ULL;
    }
    return h ^ (h >> 29);
}

static struct slb_tls_name *name_find(const struct slb_tls_listener *t, const char *name,
                                      size_t len, bool wild)
{
    if (!t->names || len == 0)
        return NULL;
    uint64_t h = name_hash(name, len, wild);
    for (size_t i = h & t->names_mask;; i = (i + 1) & t->names_mask) {
        struct slb_tls_name *e = &t->names[i];
        if (!e->name)
            return NULL;
        if (e->hash == h && e->wild == wild && e->len == len &&
            strncasecmp(e->name, name, len) == 0)
            return e;
    }
}

/* Build the name table: every SAN of every site, in configuration order, so each name's pair
 * is the first certificate of each key type that carries it. O(total SANs). */
static int names_build(struct slb_tls_listener *t)
{
    size_t total = 0, bytes = 0;
    for (size_t i = 0; i < t->nsites; i++) {
        total += t->sites[i].cert->nsans;
        for (size_t k = 0; k < t->sites[i].cert->nsans; k++)
            bytes += strlen(t->sites[i].cert->sans[k]) + 1;
    }
    size_t slots = 8;
    while (slots < 2 * total)
        slots *= 2;
    t->names = calloc(slots, sizeof(*t->names));
    t->names_arena = malloc(bytes ? bytes : 1);
    if (!t->names || !t->names_arena)
        return -1;
    t->names_arena_len = bytes;
    t->names_mask = slots - 1;
    char *arena = t->names_arena;
    for (size_t i = 0; i < t->nsites; i++) {
        const struct slb_cert *c = t->sites[i].cert;
        for (size_t k = 0; k < c->nsans; k++) {
            const char *san = c->sans[k];
            size_t len = strlen(san);
            bool wild = len >= 3 && san[0] == '*' && san[1] == '.';
            if (wild) {
                san += 2;
                len -= 2;
            } else if (memchr(san, '*', len)) {
                continue; /* another wildcard form: SNI never matches it */
            }
            struct slb_tls_name *e = name_find(t, san, len, wild);
            if (!e) {
                uint64_t h = name_hash(san, len, wild);
                size_t at = h & t->names_mask;
                while (t->names[at].name)
                    at = (at + 1) & t->names_mask;
                e = &t->names[at];
                for (size_t j = 0; j < len; j++) {
                    char ch = san[j];
                    arena[j] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 'a' - 'A') : ch;
                }
                arena[len] = '\0';
                *e = (struct slb_tls_name){
                    .name = arena, .len = (uint32_t)len, .wild = wild, .hash = h};
                arena += len + 1;
            }
            pair_add(e->pair.s, &t->sites[i]);
        }
    }
    return 0;
}

/* The pair a name finds: an exact SAN beats a wildcard covering exactly one label ("*.d" for
 * "x.d", never "x.y.d"); NULL when neither matches. */
static const struct slb_tls_pair *name_lookup(const struct slb_tls_listener *t, const char *name,
                                              size_t len)
{
    const struct slb_tls_name *e = name_find(t, name, len, false);
    if (e)
        return &e->pair;
    const char *dot = memchr(name, '.', len);
    if (!dot || dot == name || memchr(name, '*', (size_t)(dot - name)))
        return NULL;
    e = name_find(t, dot + 1, len - (size_t)(dot + 1 - name), true);
    return e ? &e->pair : NULL;
}

/* The certificates offered for a server name: exact SAN matches beat wildcard matches, which
 * beat the default certificate (with its twins, the certificates with the same names). From
 * the winning tier, the first certificate of each key type (pair[1] may be NULL). Which of the
 * two is served is OpenSSL's choice from what the client can verify (see client_hello_cb).
 * One hash lookup or two, whatever the number of certificates. */
static const struct slb_tls_pair *site_pick(const struct slb_tls_listener *t, const char *name,
                                            size_t len)
{
    const struct slb_tls_pair *p = name ? name_lookup(t, name, len) : NULL;
    return p ? p : &t->dflt_pair;
}

/* Host header value → host name: drops ":port", unwraps "[v6]". false when malformed. */
static bool host_strip(const char **host, size_t *len)
{
    const char *h = *host;
    size_t n = *len;
    if (n && h[0] == '[') {
        const char *end = memchr(h, ']', n);
        if (!end)
            return false;
        *host = h + 1;
        *len = (size_t)(end - h - 1);
    } else {
        const char *colon = memchr(h, ':', n);
        /* More than one colon: a bare IPv6 literal (not valid in Host, but unambiguous). */
        if (colon && !memchr(colon + 1, ':', n - (size_t)(colon + 1 - h)))
            n = (size_t)(colon - h);
        *len = n;
    }
    name_trim(host, len);
    return *len > 0;
}

bool slb_tls_site_matches_host(const struct slb_tls_site *s, const char *host, size_t len)
{
    if (!s || !host || !host_strip(&host, &len))
        return false;
    return site_match(s, host, len, false) || site_match(s, host, len, true);
}

const char *slb_tls_ssl_servername(SSL *ssl)
{
    if (!ssl)
        return NULL;
    if ((uintptr_t)SSL_get_ex_data(ssl, ssl_flags_idx) & FLAG_KEPT_NAME)
        return SSL_get_ex_data(ssl, ssl_name_idx);
    return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
}

/* The pair client_hello_cb offered this connection (the default pair when none is stored). */
static const struct slb_tls_pair *ssl_pair(SSL *ssl, const struct slb_tls_listener *t)
{
    const struct slb_tls_pair *p = SSL_get_ex_data(ssl, ssl_site_idx);
    return p ? p : &t->dflt_pair;
}

/* The site of the certificate OpenSSL served (after a resumption, which serves none, one of
 * those SNI offered): the SSL holds the site's own X509, so a pointer identifies it. */
static const struct slb_tls_site *served_site(SSL *ssl, const struct slb_tls_pair *p)
{
    const X509 *x = SSL_get_certificate(ssl);
    for (int k = 0; x && k < 2 && p->s[k]; k++) {
        if (p->s[k]->cert->leaf == x)
            return p->s[k];
    }
    return NULL;
}

const struct slb_tls_site *slb_tls_ssl_site(SSL *ssl)
{
    /* Without SNI nothing was selected by name, so there is nothing for Host to contradict. */
    if (!slb_tls_ssl_servername(ssl))
        return NULL;
    const struct slb_tls_listener *t = listener_of(ssl);
    if (!t)
        return NULL;
    const struct slb_tls_pair *p = ssl_pair(ssl, t);
    const struct slb_tls_site *site = served_site(ssl, p);
    return site ? site : p->s[0];
}

/* --- OCSP stapling --- */

/* Called by OpenSSL when the client asked for a certificate status (TLS 1.2 status_request; in
 * TLS 1.3 the response goes in the leaf's certificate entry). The staple is read from the
 * served certificate's slot with one atomic load: a new response never rebuilds a context. */
static int status_cb(SSL *ssl, void *arg)
{
    const struct slb_tls_listener *t = arg;
    const struct slb_tls_site *site = served_site(ssl, ssl_pair(ssl, t));
    const struct slb_cert *c = site ? site->cert : NULL;
    const struct slb_ocsp_staple *s =
        c ? atomic_load_explicit(&((struct slb_cert *)c)->staple, memory_order_acquire) : NULL;
    /* The control thread drops an expired staple within a second; this check closes that
     * second. */
    if (!s || (int64_t)time(NULL) >= s->next_update)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = OPENSSL_memdup(s->der, s->len);
    if (!copy || !SSL_set_tlsext_status_ocsp_resp(ssl, copy, (long)s->len)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

uint64_t slb_tls_context_builds(void)
{
    return g_context_builds;
}

bool slb_tls_ssl_misdirected(SSL *ssl, const char *host, size_t len)
{
    const struct slb_tls_site *site = slb_tls_ssl_site(ssl);
    const struct slb_tls_listener *t = ssl ? listener_of(ssl) : NULL;
    if (!site || !t || slb_tls_site_matches_host(site, host, len))
        return false;
    /* Host is not a name of the served certificate: misdirected when another certificate of
     * the listener has it (a name in the table, exact or by wildcard). */
    return host_strip(&host, &len) && name_lookup(t, host, len) != NULL;
}

/* --- ClientHello: SNI and certificate choice --- */

/* RFC 6066 server_name extension, strictly: a list length covering the rest, exactly one
 * entry of type host_name, a name length covering the rest, 1..255 bytes, no NUL. */
static int sni_parse(const unsigned char *p, size_t len, const char **name, size_t *nlen)
{
    if (len < 5 || (size_t)(p[0] << 8 | p[1]) != len - 2)
        return -1;
    if (p[2] != TLSEXT_NAMETYPE_host_name)
        return -1;
    size_t n = (size_t)(p[3] << 8 | p[4]);
    if (n == 0 || n != len - 5 || n > TLS_MAX_HOSTNAME || memchr(p + 5, '\0', n))
        return -1;
    *name = (const char *)(p + 5);
    *nlen = n;
    return 0;
}

/* Whether this ClientHello can lead to TLS 1.3 (see client_hello_cb for why it matters). */
static bool client_offers_tls13(SSL *ssl)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &p, &len) || len < 1)
        return false;
    for (size_t i = 1; i + 1 < len && i < (size_t)p[0] + 1; i += 2) {
        if (p[i] == 0x03 && p[i + 1] == 0x04)
            return true;
    }
    return false;
}

static bool client_offers_tls13_suite(SSL *ssl)
{
    const unsigned char *p;
    size_t len = SSL_client_hello_get0_ciphers(ssl, &p);
    for (size_t i = 0; i + 1 < len; i += 2) {
        if (p[i] == 0x13 && p[i + 1] >= 0x01 && p[i + 1] <= 0x05)
            return true;
    }
    return false;
}

/* An ACME CA validating tls-alpn-01 (RFC 8737): a ClientHello offering acme-tls/1 for a
 * domain with a pending challenge gets that challenge's certificate, and nothing else. 1: so,
 * 0: an ordinary handshake, -1: error. */
static int acme_alpn(SSL *ssl, const char *name, size_t nlen)
{
    const unsigned char *ext;
    size_t len;
    X509 *cert;
    EVP_PKEY *key;
    if (!name ||
        !SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                   &len) ||
        len < 2 || !slb_acme_alpn_offered(ext + 2, len - 2) ||
        !slb_acme_alpn_lookup(name, nlen, &cert, &key))
        return 0;
    SSL_certs_clear(ssl);
    if (!SSL_use_cert_and_key(ssl, cert, key, NULL, 1) ||
        !SSL_set_ex_data(ssl, ssl_flags_idx, (void *)(uintptr_t)FLAG_ACME))
        return -1;
    return 1;
}

static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
    const struct slb_tls_listener *t = arg;
    const unsigned char *ext;
    size_t extlen, nlen = 0, raw_len = 0;
    const char *name = NULL, *raw = NULL;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &extlen)) {
        if (sni_parse(ext, extlen, &name, &nlen) < 0) {
            SSL_set_ex_data(ssl, ssl_flags_idx, (void *)(uintptr_t)FLAG_BAD_SNI);
            *al = SSL_AD_DECODE_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
        raw = name;
        raw_len = nlen;
        name_trim(&name, &nlen);
    }
    int acme = acme_alpn(ssl, name, nlen);
    if (acme != 0) {
        *al = SSL_AD_INTERNAL_ERROR;
        return acme > 0 ? SSL_CLIENT_HELLO_SUCCESS : SSL_CLIENT_HELLO_ERROR;
    }
    /* TLS 1.3 happens only if both sides allow it; then OpenSSL reports this ClientHello's
     * name itself (below). */
    long max = SSL_get_max_proto_version(ssl);
    bool tls13 = (max == 0 || max >= TLS1_3_VERSION) && client_offers_tls13(ssl) &&
                 client_offers_tls13_suite(ssl);
    const struct slb_tls_pair *p = site_pick(t, name, nlen);
    const struct slb_tls_site *const *pair = p->s;
    /* SNI decides the certificates on offer, at most one per key type, and OpenSSL picks the
     * one the client can use, as it does for a context holding both: by the TLS 1.3 signature
     * schemes with their curves and signature_algorithms_cert, or by the TLS 1.2 cipher suite,
     * signature algorithms and supported groups. SSL_new copied the context's certificates,
     * which are the default pair; any other pair replaces them (after a HelloRetryRequest the
     * first ClientHello's pair is installed: install again). Clearing first matters: a default
     * of a key type the new pair lacks would otherwise be served for this name. */
    const struct slb_tls_pair *installed = SSL_get_ex_data(ssl, ssl_site_idx);
    bool dflt = pair[0] == t->dflt[0] && pair[1] == t->dflt[1];
    if (installed || !dflt) {
        SSL_certs_clear(ssl);
        for (int k = 0; k < 2 && pair[k]; k++) {
            const struct slb_cert *c = pair[k]->cert;
            if (!SSL_use_cert_and_key(ssl, c->leaf, c->key, c->chain, 1)) {
                *al = SSL_AD_INTERNAL_ERROR;
                return SSL_CLIENT_HELLO_ERROR;
            }
        }
    }
    /* The first SSL_set_ex_data of a connection allocates OpenSSL's ex_data stack (two blocks,
     * kept until SSL_free, about 100 bytes of every idle connection), so the common cases store
     * nothing: the default site is what no stored site means, and the server name is read back
     * with SSL_get_servername. That reports this ClientHello's name in TLS 1.3 only: in a TLS
     * 1.2 resumption it gives the session's, which OpenSSL keeps only when a servername callback
     * accepted it (slbd has none). So below 1.3 the name is kept here, as sent. */
    if (!dflt || installed)
        SSL_set_ex_data(ssl, ssl_site_idx, (void *)p);
    if (!tls13 && !SSL_get_ex_data(ssl, ssl_flags_idx)) {
        char *copy = raw ? strndup(raw, raw_len) : NULL;
        bool kept = !raw || (copy && SSL_set_ex_data(ssl, ssl_name_idx, copy));
        if (!kept)
            free(copy); /* else the SSL owns it (name_free) */
        if (!kept || !SSL_set_ex_data(ssl, ssl_flags_idx, (void *)(uintptr_t)FLAG_KEPT_NAME)) {
            *al = SSL_AD_INTERNAL_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Server preference: the first of our protocols the client offers. A client that offers ALPN
 * but none of ours gets the fatal no_application_protocol alert (RFC 7301 3.2): going on
 * without ALPN would hand HTTP/1.1 to a client that asked for something else. A client that
 * sends no ALPN extension never comes here and speaks HTTP/1.1. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct slb_tls_listener *t = arg;
    if ((uintptr_t)SSL_get_ex_data(ssl, ssl_flags_idx) & FLAG_ACME) {
        static const unsigned char acme[] = SLB_ACME_TLS_ALPN;
        *out = acme;
        *outlen = sizeof(acme) - 1;
        return SSL_TLSEXT_ERR_OK;
    }
    if (!t->alpn_len)
        return SSL_TLSEXT_ERR_NOACK; /* as without a callback: the client speaks HTTP/1.1 */
    for (size_t i = 0; i < t->alpn_len; i += 1 + (size_t)t->alpn[i]) {
        const unsigned char *ours = &t->alpn[i + 1];
        unsigned char olen = t->alpn[i];
        for (unsigned j = 0; j < inlen;) {
            unsigned clen = in[j];
            if (clen == 0 || j + 1 + clen > inlen)
                break;
            if (clen == olen && memcmp(in + j + 1, ours, olen) == 0) {
                *out = ours;
                *outlen = olen;
                return SSL_TLSEXT_ERR_OK;
            }
            j += 1 + clen;
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* What a ticket carries besides OpenSSL's session, in its app data: facts of the session's
 * full handshake. A renewed ticket (every TLS 1.3 resumption gets one, and OpenSSL restarts
 * its session time then) copies them, so they keep describing the full handshake. */
struct ticket_app {
    int64_t full_at;        /* unix seconds of the full handshake */
    int64_t peer_not_after; /* the client certificate's notAfter; INT64_MAX without one */
};

/* Called by OpenSSL before it encrypts a ticket. A resumed session already carries the app
 * data of its full handshake: keep it. Only a full handshake allocates (the copy OpenSSL
 * makes), and a full handshake allocates far more than that anyway. */
static int ticket_gen_cb(SSL *ssl, void *arg)
{
    SSL_SESSION *ss = SSL_get0_session(ssl);
    void *data = NULL;
    size_t len = 0;
    if (!ss)
        return 0;
    if (SSL_SESSION_get0_ticket_appdata(ss, &data, &len) == 1 && len == sizeof(struct ticket_app))
        return 1;
    struct ticket_app a = {.full_at = (int64_t)time(NULL), .peer_not_after = INT64_MAX};
    X509 *peer = SSL_SESSION_get0_peer(ss);
    if (peer) {
        /* An unreadable notAfter never passed verification; INT64_MIN would refuse anyway. */
        a.peer_not_after = slb_certval_time(X509_get0_notAfter(peer));
    }
    return SSL_SESSION_set1_ticket_appdata(ss, &a, sizeof(a));
}

/* The ticket carries its own timeout, fixed when it was issued; checking the age against the
 * listener's current lifetime also retires tickets issued under a longer, older setting. But
 * each resumption renews the ticket, so the session itself is bounded by session_max_age_s
 * from its full handshake, and by its client certificate's notAfter: past either, the client
 * gets a full handshake, where its certificate is verified again. A ticket without our app
 * data (from before it existed) cannot show its age and does not resume. */
static SSL_TICKET_RETURN ticket_dec_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname,
                                       size_t keyname_len, SSL_TICKET_STATUS status, void *arg)
{
    const struct slb_tls_listener *t = arg;
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    int64_t now = (int64_t)time(NULL);
    int64_t age = now - (int64_t)SSL_SESSION_get_time(ss);
    if (age < 0 || age > (int64_t)t->ticket_lifetime_s)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    void *data = NULL;
    size_t len = 0;
    struct ticket_app a;
    if (SSL_SESSION_get0_ticket_appdata(ss, &data, &len) != 1 || len != sizeof(a))
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    memcpy(&a, data, sizeof(a));
    if (now < a.full_at || now - a.full_at > (int64_t)t->session_max_age_s ||
        now > a.peer_not_after)
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    /* TLS 1.3 clients use each ticket once (RFC 8446 C.4): a resumption must hand out a fresh
     * one or every other connection falls back to a full handshake. */
    if (status == SSL_TICKET_SUCCESS_RENEW || SSL_version(ssl) >= TLS1_3_VERSION)
        return SSL_TICKET_RETURN_USE_RENEW;
    return SSL_TICKET_RETURN_USE;
}

/* Whether the client CA's CRL set holds a CRL from the issuer of x. */
static bool have_crl_for(const struct slb_cert *ca, X509 *x)
{
    const X509_NAME *iss = X509_get_issuer_name(x);
    for (int i = 0; i < sk_X509_CRL_num(ca->crls); i++) {
        if (X509_NAME_cmp(X509_CRL_get_issuer(sk_X509_CRL_value(ca->crls, i)), iss) == 0)
            return true;
    }
    return false;
}

/* CRL checking covers every certificate of the chain, but we hold CRLs only of the issuers
 * the operator uploaded: a certificate whose issuer has none (an intermediate below the
 * client CA without an uploaded CRL, the client CA itself) has nothing to look up, and that
 * alone must not reject it. An issuer whose CRL we do hold must answer for its certificate. */
static int verify_cb(int ok, X509_STORE_CTX *xs)
{
    if (ok)
        return ok;
    /* A CRL past its next update still lists what it revoked: keep enforcing it rather than
     * refuse every client. The store reports the stale CRL in the log and in metrics. */
    if (X509_STORE_CTX_get_error(xs) == X509_V_ERR_CRL_HAS_EXPIRED) {
        X509_STORE_CTX_set_error(xs, X509_V_OK);
        return 1;
    }
    int e = X509_STORE_CTX_get_error(xs);
    if (e != X509_V_ERR_UNABLE_TO_GET_CRL && e != X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct slb_tls_listener *t = ssl ? listener_of(ssl) : NULL;
    X509 *cur = X509_STORE_CTX_get_current_cert(xs);
    if (t && t->client_ca && cur && !have_crl_for(t->client_ca, cur)) {
        X509_STORE_CTX_set_error(xs, X509_V_OK);
        return 1;
    }
    return 0;
}

/* --- building --- */

static void context_free(struct slb_tls_listener *t);

static enum slb_tls_key_kind key_kind(EVP_PKEY *key)
{
    switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC:
        return SLB_TLS_KEY_EC;
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
        return SLB_TLS_KEY_RSA;
    default:
        return SLB_TLS_KEY_OTHER;
    }
}

static bool same_names(const struct slb_cert *a, const struct slb_cert *b)
{
    if (a->nsans != b->nsans || a->nsans == 0)
        return false;
    for (size_t i = 0; i < a->nsans; i++) {
        bool found = false;
        for (size_t j = 0; j < b->nsans && !found; j++)
            found = strcasecmp(a->sans[i], b->sans[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Fill err with the listener, what was being done and OpenSSL's reasons (draining them). */
static int tls_fail(struct slb_err *err, const struct slb_listener_rt *l, const char *where,
                    const char *what)
{
    char why[256];
    slb_tls_drain_errors(why, sizeof(why));
    return slb_err_set(err, 400, "tls_error", where, "listener %s: %s: %s", l->cfg->name, what,
                       why);
}

/* Tickets from one listener must not resume on another (one may require client certificates
 * the other never asked for), nor survive a change of the client CA: the session id context
 * binds sessions to the listener name and the CA's identity. */
static int sid_ctx_set(SSL_CTX *ctx, const struct slb_tls_listener *t)
{
    char buf[512];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const struct slb_cert *ca = t->client_ca;
    int n = snprintf(buf, sizeof(buf), "slbd|%s|%s|%s|%llu|%d", t->name, ca ? ca->id : "",
                     ca ? ca->fingerprint : "", ca ? (unsigned long long)ca->version : 0ULL,
                     t->client_cert_required);
    if (n < 0 || (size_t)n >= sizeof(buf))
        n = (int)sizeof(buf) - 1;
    if (!EVP_Digest(buf, (size_t)n, md, &mdlen, EVP_sha256(), NULL))
        return -1;
    if (mdlen > SSL_MAX_SID_CTX_LENGTH)
        mdlen = SSL_MAX_SID_CTX_LENGTH;
    return SSL_CTX_set_session_id_context(ctx, md, mdlen) == 1 ? 0 : -1;
}

static int client_ca_setup(SSL_CTX *ctx, struct slb_tls_listener *t,
                           const struct slb_listener_rt *l, struct slb_err *err)
{
    const struct slb_tls_cfg *tc = &l->cfg->tls;
    char where[160], what[128];
    snprintf(where, sizeof(where), "listeners[%zu].tls.client_ca", l->index);
    struct slb_cert *ca = cert_lookup(tc->client_ca);
    if (!ca || ca->type != SLB_CERT_CA || !ca->leaf)
        return slb_err_set(err, 400, "unknown_certificate", where,
                           "listener %s: client_ca %s is not a CA certificate in the store",
                           l->cfg->name, tc->client_ca);
    slb_cert_ref(ca);
    t->client_ca = ca;
    t->client_auth = true;
    t->client_cert_required = tc->client_auth == SLB_CLIENT_AUTH_REQUIRED;
    snprintf(what, sizeof(what), "client_ca %s", ca->id);

    ERR_clear_error();
    X509_STORE *st = X509_STORE_new();
    if (!st || !X509_STORE_add_cert(st, ca->leaf))
        goto fail;
    /* The uploaded CA is the trust anchor even when it is itself an intermediate. Its CRL
     * set may hold intermediates' CRLs too: each is checked against the intermediate the
     * client presents (the uploaded intermediates are never added: they would become trust
     * anchors). CRL_CHECK_ALL, so that a CRL of the CA can revoke an intermediate. */
    unsigned long flags = X509_V_FLAG_PARTIAL_CHAIN;
    for (int i = 0; i < sk_X509_CRL_num(ca->crls); i++) {
        if (!X509_STORE_add_crl(st, sk_X509_CRL_value(ca->crls, i)))
            goto fail;
        flags |= X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL;
    }
    if (!X509_STORE_set_flags(st, flags) ||
        !X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), flags))
        goto fail;
    /* A separate verify store leaves the context's chain store alone. */
    if (!SSL_CTX_set1_verify_cert_store(ctx, st))
        goto fail;
    X509_STORE_free(st);
    st = NULL;
    if (!SSL_CTX_add_client_CA(ctx, ca->leaf))
        goto fail;
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (t->client_cert_required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        verify_cb);
    SSL_CTX_set_verify_depth(ctx, VERIFY_DEPTH);
    return 0;
fail:
    X509_STORE_free(st);
    return tls_fail(err, l, where, what);
}

static void alpn_wire(struct slb_tls_listener *t, const struct slb_tls_cfg *tc)
{
    for (size_t i = 0; i < tc->nalpn && i < 2; i++) {
        const char *p = tc->alpn[i];
        size_t n = strnlen(p, sizeof(tc->alpn[i]));
        if (n == 0 || !slb_tls_alpn_supported(p) || t->alpn_len + 1 + n > sizeof(t->alpn))
            continue;
        t->alpn[t->alpn_len] = (unsigned char)n;
        memcpy(&t->alpn[t->alpn_len + 1], p, n);
        t->alpn_len += 1 + n;
    }
}

static int alpn_setup(SSL_CTX *ctx, struct slb_tls_listener *t, const struct slb_tls_cfg *tc)
{
    alpn_wire(t, tc);
    /* Always: an ACME tls-alpn-01 validation needs it even on a listener without ALPN. */
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, t);
    return 0;
}

static int tickets_setup(SSL_CTX *ctx, struct slb_tls_listener *t, const struct slb_tls_cfg *tc)
{
    t->ticket_lifetime_s = tc->session_ticket_lifetime_s;
    t->session_max_age_s = tc->session_max_age_s;
    if (t->ticket_lifetime_s && !g_ring)
        slb_warn("listener %s: no session ticket keys loaded; resumption is off", t->name);
    if (t->ticket_lifetime_s == 0 || !g_ring) {
        t->ticket_lifetime_s = 0;
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        return SSL_CTX_set_num_tickets(ctx, 0) == 1 ? 0 : -1;
    }
    /* The session timeout is what OpenSSL checks when a ticket comes back, and what TLS 1.3
     * announces as the ticket lifetime. The keys are the published ring's (no reference
     * here): a rotation changes no context. */
    SSL_CTX_set_timeout(ctx, (long)t->ticket_lifetime_s);
    if (SSL_CTX_set_num_tickets(ctx, 1) != 1 || slb_ticket_ring_install(ctx) < 0 ||
        SSL_CTX_set_session_ticket_cb(ctx, ticket_gen_cb, ticket_dec_cb, t) != 1)
        return -1;
    return 0;
}

/* Every site's certificate must be usable with the policy (key matches, security level),
 * which OpenSSL would otherwise only find out during a handshake. The answer depends only on
 * the certificate version and the policy, so it is remembered on the certificate: a context
 * rebuilt for one replaced certificate among thousands checks that one. */
static int sites_check(SSL_CTX *ctx, const struct slb_tls_listener *t,
                       const struct slb_tls_listener *base, const struct slb_listener_rt *l,
                       struct slb_err *err)
{
    /* base's sites passed under the same policy: only the others are looked at */
    if (base && (base->policy != t->policy || base->nsites != t->nsites))
        base = NULL;
    char where[160], what[128];
    ERR_clear_error();
    SSL *probe = SSL_new(ctx);
    if (!probe)
        return tls_fail(err, l, "", "SSL_new");
    uint32_t bit = t->policy >= 0 && t->policy < 32 ? 1u << t->policy : 0;
    for (size_t i = 0; i < t->nsites; i++) {
        struct slb_cert *c = t->sites[i].cert;
        if ((base && base->sites[i].cert == c) || (c->tls_policies_ok & bit))
            continue;
        SSL_certs_clear(probe);
        ERR_clear_error();
        if (!SSL_use_cert_and_key(probe, c->leaf, c->key, c->chain, 1)) {
            snprintf(where, sizeof(where), "listeners[%zu].tls.certificates[%zu]", l->index, i);
            snprintf(what, sizeof(what), "certificate %s", c->id);
            SSL_free(probe);
            return tls_fail(err, l, where, what);
        }
        c->tls_policies_ok |= bit;
    }
    SSL_free(probe);
    return 0;
}

/* --- the registry of contexts --- */

/* Contexts by listener name (a context is one listener's: its session id context names it),
 * each bucket holding the few recipes alive at once (the running snapshot's, a retired one's
 * still held by connections, a candidate being built). Control thread only. */
#define REG_BUCKETS 4096
static struct slb_tls_listener *g_reg[REG_BUCKETS];

static struct slb_tls_listener **reg_bucket(const char *name)
{
    return &g_reg[name_hash(name, strlen(name), false) & (REG_BUCKETS - 1)];
}

/* Whether t is made of exactly this: settings, the same certificate objects (a replace or a
 * CRL publishes a new object, so a pointer is a version), the same client CA object, and the
 * same ticket availability. */
static bool recipe_same(const struct slb_tls_listener *t, const struct slb_tls_cfg *tc,
                        const char *name, struct slb_cert *const *certs, struct slb_cert *ca)
{
    if (strcmp(t->name, name) != 0 || t->policy != (int)tc->policy ||
        t->ticket_lifetime_cfg != tc->session_ticket_lifetime_s ||
        t->session_max_age_s != tc->session_max_age_s || t->had_ring != (g_ring != NULL) ||
        t->client_ca != ca || t->nsites != tc->ncertificates)
        return false;
    if (ca && t->client_cert_required != (tc->client_auth == SLB_CLIENT_AUTH_REQUIRED))
        return false;
    struct slb_tls_listener probe = {0};
    alpn_wire(&probe, tc);
    if (probe.alpn_len != t->alpn_len || memcmp(probe.alpn, t->alpn, t->alpn_len) != 0)
        return false;
    for (size_t i = 0; i < t->nsites; i++) {
        if (t->sites[i].cert != certs[i])
            return false;
    }
    return true;
}

#define IDS_EMPTY UINT64_MAX

static int ids_build(struct slb_tls_listener *t)
{
    size_t slots = 8;
    while (slots < 2 * t->nsites)
        slots *= 2;
    if (!(t->ids_ix = malloc(slots * sizeof(*t->ids_ix))))
        return -1;
    memset(t->ids_ix, 0xff, slots * sizeof(*t->ids_ix));
    t->ids_mask = slots - 1;
    for (size_t i = 0; i < t->nsites; i++) {
        const char *id = t->sites[i].cert->id;
        uint64_t h = name_hash(id, strlen(id), false);
        size_t at = h & t->ids_mask;
        while (t->ids_ix[at] != IDS_EMPTY)
            at = (at + 1) & t->ids_mask;
        t->ids_ix[at] = (h >> 32 << 32) | (uint32_t)i;
    }
    return 0;
}

/* Whether t is made of certificate id (hash h: name_hash), as a site or the client CA. The
 * hash kept in the table spares reading the certificates it is not. */
static bool uses_id(const struct slb_tls_listener *t, const char *id, uint64_t h)
{
    if (t->client_ca && strcmp(t->client_ca->id, id) == 0)
        return true;
    for (size_t at = h & t->ids_mask; t->ids_ix[at] != IDS_EMPTY; at = (at + 1) & t->ids_mask) {
        uint64_t e = t->ids_ix[at];
        if (e >> 32 == h >> 32 && strcmp(t->sites[(uint32_t)e].cert->id, id) == 0)
            return true;
    }
    return false;
}

/* The id of store change n and its hash, NULL once the store forgot it; the hash is made once
 * per change for the 1,000 contexts asking. */
static const char *change_id(uint64_t n, uint64_t *h)
{
    static uint64_t last_n;
    static uint64_t last_h;
    static const char *last_id;
    const char *id = slb_certstore_change_id(g_store, n);
    if (id && (n != last_n || id != last_id)) {
        last_n = n;
        last_id = id;
        last_h = name_hash(id, strlen(id), false);
    }
    *h = last_h;
    return id;
}

/* Whether t, found right for the same listener configuration before, still is: none of the
 * certificates published since is one of its own, and ticket availability is the same. A
 * context that looked at more changes than the store remembers is checked the long way. */
static bool still_right(struct slb_tls_listener *t, uint64_t serial)
{
    if (!serial || t->cfg_serial != serial || t->had_ring != (g_ring != NULL) || !t->ids_ix)
        return false;
    uint64_t now = slb_certstore_changes(g_store);
    for (uint64_t n = t->store_seen + 1; n <= now; n++) {
        uint64_t h;
        const char *id = change_id(n, &h);
        if (!id || uses_id(t, id, h))
            return false;
    }
    t->store_seen = now;
    return true;
}

/* Whether a and b have the same names in the same order (a renewal's usual shape). */
static bool same_san_list(const struct slb_cert *a, const struct slb_cert *b)
{
    if (a->nsans != b->nsans)
        return false;
    for (size_t i = 0; i < a->nsans; i++)
        if (strcasecmp(a->sans[i], b->sans[i]) != 0)
            return false;
    return true;
}

/* Whether a context made of certs can take base's name table and id index as they are: the
 * same number of sites, each either base's certificate or one with the same names and key
 * type (the replace of one certificate among 10,000 then costs copying, not 10,000 names
 * hashed again). */
static bool base_fits(const struct slb_tls_listener *base, struct slb_cert *const *certs, size_t n)
{
    if (!base || base->nsites != n || !base->names || !base->ids_ix)
        return false;
    for (size_t i = 0; i < n; i++) {
        const struct slb_tls_site *s = &base->sites[i];
        if (certs[i] != s->cert &&
            (strcmp(certs[i]->id, s->cert->id) != 0 || key_kind(certs[i]->key) != s->kind ||
             !same_san_list(certs[i], s->cert)))
            return false;
    }
    return true;
}

/* t's name table and id index as copies of base's (base_fits), pointing at t's sites. */
static int names_copy(struct slb_tls_listener *t, const struct slb_tls_listener *base)
{
    size_t slots = base->names_mask + 1, ids = base->ids_mask + 1;
    t->names = malloc(slots * sizeof(*t->names));
    t->names_arena = malloc(base->names_arena_len ? base->names_arena_len : 1);
    t->ids_ix = malloc(ids * sizeof(*t->ids_ix));
    if (!t->names || !t->names_arena || !t->ids_ix)
        return -1;
    memcpy(t->names, base->names, slots * sizeof(*t->names));
    memcpy(t->names_arena, base->names_arena, base->names_arena_len);
    memcpy(t->ids_ix, base->ids_ix, ids * sizeof(*t->ids_ix));
    t->names_mask = base->names_mask;
    t->names_arena_len = base->names_arena_len;
    t->ids_mask = base->ids_mask;
    for (size_t i = 0; i < slots; i++) {
        struct slb_tls_name *e = &t->names[i];
        if (!e->name)
            continue;
        e->name = t->names_arena + (e->name - base->names_arena);
        for (int k = 0; k < 2; k++)
            if (e->pair.s[k])
                e->pair.s[k] = &t->sites[e->pair.s[k] - base->sites];
    }
    return 0;
}

/* Make a new context for l from the resolved certificates (referenced here); base, when not
 * NULL, is a context of the same listener configuration whose names may be copied. */
static struct slb_tls_listener *context_build(const struct slb_listener_rt *l,
                                              struct slb_cert *const *certs,
                                              const struct slb_tls_listener *base,
                                              struct slb_err *err)
{
    const struct slb_listener_cfg *lc = l->cfg;
    const struct slb_tls_cfg *tc = &lc->tls;
    char where[160], what[128];
    snprintf(where, sizeof(where), "listeners[%zu].tls", l->index);
    struct slb_tls_listener *t = calloc(1, sizeof(*t));
    if (!t || !(t->sites = calloc(tc->ncertificates, sizeof(*t->sites)))) {
        free(t);
        slb_err_set(err, 500, "internal", where, "out of memory");
        return NULL;
    }
    snprintf(t->name, sizeof(t->name), "%s", lc->name);
    t->policy = (int)tc->policy;
    t->ticket_lifetime_cfg = tc->session_ticket_lifetime_s;
    t->had_ring = g_ring != NULL;
    t->refs = 1;
    for (size_t i = 0; i < tc->ncertificates; i++) {
        slb_cert_ref(certs[i]);
        t->sites[i].cert = certs[i];
        /* A site of base's keeps its key type: not reading 10,000 keys again. */
        t->sites[i].kind = base && i < base->nsites && base->sites[i].cert == certs[i]
                               ? base->sites[i].kind
                               : key_kind(certs[i]->key);
        t->nsites = i + 1;
    }
    bool copy = base_fits(base, certs, t->nsites);
    for (size_t i = 0; i < t->nsites; i++)
        t->sites[i].default_twin = copy ? base->sites[i].default_twin
                                        : i == 0 || same_names(t->sites[0].cert, t->sites[i].cert);
    for (size_t i = 0; i < t->nsites && !t->dflt_pair.s[1]; i++) {
        if (t->sites[i].default_twin)
            pair_add(t->dflt_pair.s, &t->sites[i]);
    }
    t->dflt[0] = t->dflt_pair.s[0];
    t->dflt[1] = t->dflt_pair.s[1];
    if (copy ? names_copy(t, base) < 0 : names_build(t) < 0 || ids_build(t) < 0) {
        slb_err_set(err, 500, "internal", where, "out of memory");
        goto fail;
    }

    ERR_clear_error();
    g_context_builds++;
    SSL_CTX *ctx = t->ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_fail(err, l, where, "SSL_CTX_new");
        goto fail;
    }
    if (!SSL_CTX_set_ex_data(ctx, ctx_listener_idx, t) ||
        slb_tls_policy_apply(ctx, (int)tc->policy) < 0) {
        snprintf(what, sizeof(what), "policy %d", (int)tc->policy);
        const struct slb_tls_policy_def *p = slb_tls_policy_get((int)tc->policy);
        if (p)
            snprintf(what, sizeof(what), "policy %s", p->name);
        tls_fail(err, l, where, what);
        goto fail;
    }
    if (sites_check(ctx, t, base, l, err) < 0)
        goto fail;
    /* Both default certificates are in the context, so SSL_new gives every connection the
     * default pair and OpenSSL chooses between them with no work in client_hello_cb. */
    for (int k = 0; k < 2 && t->dflt[k]; k++) {
        const struct slb_cert *def = t->dflt[k]->cert;
        ERR_clear_error();
        if (!SSL_CTX_use_cert_and_key(ctx, def->leaf, def->key, def->chain, 1)) {
            snprintf(where, sizeof(where), "listeners[%zu].tls.certificates[%zu]", l->index,
                     (size_t)(t->dflt[k] - t->sites));
            snprintf(what, sizeof(what), "certificate %s", def->id);
            tls_fail(err, l, where, what);
            goto fail;
        }
    }
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, t);
    SSL_CTX_set_tlsext_status_cb(ctx, status_cb);
    SSL_CTX_set_tlsext_status_arg(ctx, t);

    if (tc->client_ca[0] && client_ca_setup(ctx, t, l, err) < 0)
        goto fail;
    ERR_clear_error();
    if (sid_ctx_set(ctx, t) < 0 || alpn_setup(ctx, t, tc) < 0 || tickets_setup(ctx, t, tc) < 0) {
        tls_fail(err, l, where, "session setup");
        goto fail;
    }
    return t;
fail:
    context_free(t);
    return NULL;
}

/* certs = b's certificates, those changed in the store since b->store_seen looked up again;
 * false when the store no longer remembers every change since. */
static bool certs_patch(const struct slb_tls_listener *b, struct slb_cert **certs)
{
    uint64_t now = slb_certstore_changes(g_store);
    for (uint64_t n = b->store_seen + 1; n <= now; n++)
        if (!slb_certstore_change_id(g_store, n))
            return false;
    for (size_t i = 0; i < b->nsites; i++)
        certs[i] = b->sites[i].cert;
    for (uint64_t n = b->store_seen + 1; n <= now; n++) {
        uint64_t h;
        const char *id = change_id(n, &h);
        for (size_t at = h & b->ids_mask; b->ids_ix[at] != IDS_EMPTY; at = (at + 1) & b->ids_mask) {
            uint64_t e = b->ids_ix[at];
            if (e >> 32 == h >> 32 && strcmp(b->sites[(uint32_t)e].cert->id, id) == 0)
                certs[(uint32_t)e] = cert_lookup(id);
        }
    }
    return true;
}

int slb_tls_listener_build(struct slb_listener_rt *l, struct slb_err *err)
{
    const struct slb_listener_cfg *lc = l->cfg;
    const struct slb_tls_cfg *tc = &lc->tls;
    char where[160];
    pthread_once(&idx_once, idx_init);
    if (ssl_site_idx < 0 || ssl_flags_idx < 0 || ssl_name_idx < 0 || ctx_listener_idx < 0 ||
        tc->ncertificates == 0) {
        snprintf(where, sizeof(where), "listeners[%zu].tls", l->index);
        if (tc->ncertificates)
            return slb_err_set(err, 500, "internal", where, "cannot allocate OpenSSL ex_data");
        return slb_err_set(err, 400, "tls_error", where,
                           "listener %s: an https listener needs a certificate", lc->name);
    }
    /* The same parsed configuration as a context of the registry's, whose certificates have
     * not changed since: reused without looking up its 10,000 certificate ids again. */
    struct slb_tls_listener **bucket = reg_bucket(lc->name), *t;
    for (t = *bucket; t; t = t->reg_next) {
        if (still_right(t, lc->serial)) {
            t->refs++;
            l->tls = t;
            return 0;
        }
    }
    snprintf(where, sizeof(where), "listeners[%zu].tls", l->index);
    struct slb_cert **certs = malloc(tc->ncertificates * sizeof(*certs));
    if (!certs)
        return slb_err_set(err, 500, "internal", where, "out of memory");
    /* A context of this same configuration whose certificates changed: its certificates with
     * the changed ones looked up again, rather than every id. */
    struct slb_tls_listener *base = NULL;
    for (t = *bucket; t && !base; t = t->reg_next)
        if (lc->serial && t->cfg_serial == lc->serial && t->ids_ix &&
            t->nsites == tc->ncertificates && certs_patch(t, certs))
            base = t;
    for (size_t i = 0; i < tc->ncertificates; i++) {
        if (base && certs[i] == base->sites[i].cert)
            continue; /* a server certificate of base's */
        struct slb_cert *c = certs[i] = base ? certs[i] : cert_lookup(tc->certificates[i]);
        if (!c || c->type != SLB_CERT_SERVER || !c->leaf || !c->key) {
            snprintf(where, sizeof(where), "listeners[%zu].tls.certificates[%zu]", l->index, i);
            slb_err_set(err, 400, "unknown_certificate", where,
                        "listener %s: certificate %s is not a server certificate in the store",
                        lc->name, tc->certificates[i]);
            free(certs);
            return SLB_EINVAL;
        }
    }
    struct slb_cert *ca = tc->client_ca[0] ? cert_lookup(tc->client_ca) : NULL;
    for (t = *bucket; t; t = t->reg_next) {
        if (recipe_same(t, tc, lc->name, certs, ca))
            break;
    }
    if (t) {
        t->refs++;
    } else if ((t = context_build(l, certs, base, err)) != NULL) {
        t->reg_next = *bucket;
        *bucket = t;
    }
    free(certs);
    if (!t)
        return SLB_EINVAL;
    t->cfg_serial = lc->serial;
    t->store_seen = slb_certstore_changes(g_store);
    l->tls = t;
    return 0;
}

/* Free a context that is in no bucket (refs 0, or never registered). */
static void context_free(struct slb_tls_listener *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    for (size_t i = 0; i < t->nsites; i++)
        slb_cert_unref(t->sites[i].cert);
    free(t->sites);
    free(t->names);
    free(t->names_arena);
    free(t->ids_ix);
    if (t->client_ca)
        slb_cert_unref(t->client_ca);
    free(t);
}

void slb_tls_listener_free(void *tls)
{
    struct slb_tls_listener *t = tls;
    if (!t || --t->refs > 0)
        return;
    for (struct slb_tls_listener **pp = reg_bucket(t->name); *pp; pp = &(*pp)->reg_next) {
        if (*pp == t) {
            *pp = t->reg_next;
            break;
        }
    }
    context_free(t);
}

SSL *slb_tls_ssl_new(struct slb_listener_rt *l)
{
    struct slb_tls_listener *t = l ? l->tls : NULL;
    if (!t)
        return NULL;
    ERR_clear_error();
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        ERR_clear_error(); /* only memory can fail here; the caller counts and closes */
    return ssl;
}

/* Whether the ClientHello of ssl named a server this listener has no certificate for (the
 * failure classification in tls/failure.c reads it). */
bool slb_tls_ssl_bad_sni(SSL *ssl)
{
    return ssl && ssl_flags_idx >= 0 &&
           ((uintptr_t)SSL_get_ex_data(ssl, ssl_flags_idx) & FLAG_BAD_SNI);
}
