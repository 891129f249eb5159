/* SPDX-License-Identifier: Apache-2.0 */
/* OCSP for server certificates: responder URL, request, response verification and the staple
 * slot of a certificate version (cert/ocsp.h). */
#include "cert/ocsp.h"

#include "cert/store.h"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/tls1.h>
#include <openssl/x509v3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long a replaced staple stays allocated: a worker holds the pointer it loaded only while
 * it copies the bytes in the status callback, a few microseconds. */
#define RETIRE_GRACE_MS 60000
/* Clock skew tolerated on thisUpdate. */
#define SKEW_S 300

void slb_ocsp_staple_free(struct slb_ocsp_staple *s)
{
    if (!s)
        return;
    free(s->der);
    free(s);
}

const char *slb_ocsp_status_name(enum slb_ocsp_status s)
{
    return s == SLB_OCSP_REVOKED ? "revoked" : "good";
}

/* The chain certificate that issued the leaf (borrowed), or NULL. */
static X509 *issuer_of(const struct slb_cert *c)
{
    for (int i = 0; c->chain && i < sk_X509_num(c->chain); i++) {
        X509 *x = sk_X509_value(c->chain, i);
        if (X509_check_issued(x, c->leaf) == X509_V_OK)
            return x;
    }
    return NULL;
}

char *slb_ocsp_url(const struct slb_cert *c)
{
    STACK_OF(OPENSSL_STRING) *urls = X509_get1_ocsp(c->leaf);
    char *url = NULL;
    for (int i = 0; urls && i < sk_OPENSSL_STRING_num(urls) && !url; i++) {
        const char *u = sk_OPENSSL_STRING_value(urls, i);
        if (strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0)
            url = strdup(u);
    }
    X509_email_free(urls);
    return url;
}

bool slb_ocsp_must_staple(const struct slb_cert *c)
{
    TLS_FEATURE *f = X509_get_ext_d2i(c->leaf, NID_tlsfeature, NULL, NULL);
    bool yes = false;
    for (int i = 0; f && i < sk_ASN1_INTEGER_num(f); i++)
        yes |= ASN1_INTEGER_get(sk_ASN1_INTEGER_value(f, i)) == TLSEXT_TYPE_status_request;
    TLS_FEATURE_free(f);
    ERR_clear_error();
    return yes;
}

int slb_ocsp_request(const struct slb_cert *c, unsigned char **der, size_t *len,
                     struct slb_err *err)
{
    X509 *issuer = issuer_of(c);
    if (!issuer)
        return slb_err_set(err, 400, "ocsp_no_issuer", "",
                           "the issuer of the certificate is not in its chain");
    ERR_clear_error();
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = OCSP_cert_to_id(NULL, c->leaf, issuer);
    int n = -1;
    *der = NULL;
    if (req && id && OCSP_request_add0_id(req, id)) {
        id = NULL; /* owned by req now */
        n = i2d_OCSP_REQUEST(req, der);
    }
    OCSP_CERTID_free(id);
    OCSP_REQUEST_free(req);
    if (n <= 0) {
        ERR_clear_error();
        return slb_err_set(err, 500, "internal", "", "cannot build an OCSP request");
    }
    *len = (size_t)n;
    return 0;
}

static bool time_of(const ASN1_GENERALIZEDTIME *t, int64_t *out)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return false;
    *out = (int64_t)timegm(&tm);
    return true;
}

static struct slb_ocsp_staple *bad(struct slb_err *err, const char *fmt, const char *arg)
{
    char msg[200];
    snprintf(msg, sizeof(msg), fmt, arg);
    unsigned long e = ERR_peek_last_error();
    char why[160] = "";
    if (e)
        ERR_error_string_n(e, why, sizeof(why));
    ERR_clear_error();
    slb_err_set(err, 400, "invalid_ocsp_response", "", "%s%s%s", msg, why[0] ? ": " : "", why);
    return NULL;
}

struct slb_ocsp_staple *slb_ocsp_verify(const struct slb_cert *c, const unsigned char *der,
                                        size_t len, int64_t now, struct slb_err *err)
{
    struct slb_ocsp_staple *s = NULL;
    OCSP_RESPONSE *resp = NULL;
    OCSP_BASICRESP *bs = NULL;
    X509_STORE *store = NULL;
    OCSP_CERTID *id = NULL;
    X509 *issuer = issuer_of(c);
    ERR_clear_error();
    if (!issuer)
        return bad(err, "%s", "the issuer of the certificate is not in its chain");
    const unsigned char *p = der;
    resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    if (!resp || p != der + len) {
        bad(err, "%s", "not a DER-encoded OCSP response");
        goto out;
    }
    int rs = OCSP_response_status(resp);
    if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        bad(err, "the responder answered \"%s\"", OCSP_response_status_str(rs));
        goto out;
    }
    bs = OCSP_response_get1_basic(resp);
    store = X509_STORE_new();
    if (!bs || !store || !X509_STORE_add_cert(store, issuer)) {
        bad(err, "%s", "unreadable basic response");
        goto out;
    }
    /* The issuer is the trust anchor even when it is an intermediate: the response must be
     * signed by it or by a responder certificate it issued for OCSP signing. */
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    if (OCSP_basic_verify(bs, c->chain, store, 0) <= 0) {
        bad(err, "%s", "the signature is not the issuer's or a responder's it delegated to");
        goto out;
    }
    id = OCSP_cert_to_id(NULL, c->leaf, issuer);
    int st = -1, reason = 0;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    if (!id || !OCSP_resp_find_status(bs, id, &st, &reason, &rev, &thisupd, &nextupd)) {
        bad(err, "%s", "the response is not about this certificate");
        goto out;
    }
    if (st != V_OCSP_CERTSTATUS_GOOD && st != V_OCSP_CERTSTATUS_REVOKED) {
        bad(err, "%s", "the responder does not know the certificate (status unknown)");
        goto out;
    }
    int64_t tu, nu;
    if (!time_of(thisupd, &tu)) {
        bad(err, "%s", "unreadable thisUpdate");
        goto out;
    }
    if (!nextupd || !time_of(nextupd, &nu)) {
        bad(err, "%s", "the response has no nextUpdate, so it cannot tell when it expires");
        goto out;
    }
    if (tu > now + SKEW_S) {
        bad(err, "%s", "thisUpdate is in the future");
        goto out;
    }
    if (nu <= now) {
        bad(err, "%s", "the response has expired (nextUpdate has passed)");
        goto out;
    }
    if (nu <= tu) {
        bad(err, "%s", "nextUpdate is not after thisUpdate");
        goto out;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->der = malloc(len))) {
        free(s);
        s = NULL;
        slb_err_set(err, 500, "internal", "", "out of memory");
        goto out;
    }
    memcpy(s->der, der, len);
    s->len = len;
    s->status = st == V_OCSP_CERTSTATUS_REVOKED ? SLB_OCSP_REVOKED : SLB_OCSP_GOOD;
    s->this_update = tu;
    s->next_update = nu;
out:
    OCSP_CERTID_free(id);
    X509_STORE_free(store);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(resp);
    ERR_clear_error();
    return s;
}

void slb_ocsp_publish(struct slb_cert *c, struct slb_ocsp_staple *s, uint64_t now_ms)
{
    struct slb_ocsp_staple *old = atomic_exchange_explicit(&c->staple, s, memory_order_acq_rel);
    if (old) {
        old->retired_ms = now_ms;
        old->next = c->staple_retired;
        c->staple_retired = old;
    }
}

void slb_ocsp_reclaim(struct slb_cert *c, uint64_t now_ms)
{
    struct slb_ocsp_staple **pp = &c->staple_retired;
    while (*pp) {
        struct slb_ocsp_staple *s = *pp;
        if (now_ms - s->retired_ms >= RETIRE_GRACE_MS) {
            *pp = s->next;
            slb_ocsp_staple_free(s);
        } else {
            pp = &s->next;
        }
    }
}

void slb_ocsp_cert_free(struct slb_cert *c)
{
    slb_ocsp_staple_free(atomic_load_explicit(&c->staple, memory_order_acquire));
    while (c->staple_retired) {
        struct slb_ocsp_staple *s = c->staple_retired;
        c->staple_retired = s->next;
        slb_ocsp_staple_free(s);
    }
}
