/* SPDX-License-Identifier: Apache-2.0 */
/* After the handshake: why one failed (the counters of slbd_tls_handshake_failures_total) and
 * what a client certificate says (the X-Forwarded-Clientcert-* fields). Reads OpenSSL's state
 * of a connection only; the contexts are tls/ctx.c's. */
#include "tls/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

static enum slb_tls_fail from_verify(long v)
{
    switch (v) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return SLB_TLS_FAIL_CERT_EXPIRED;
    case X509_V_ERR_CERT_REVOKED:
        return SLB_TLS_FAIL_CERT_REVOKED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return SLB_TLS_FAIL_CERT_NOT_YET_VALID;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
    case X509_V_ERR_KEYUSAGE_NO_DIGITAL_SIGNATURE:
        return SLB_TLS_FAIL_CERT_KEY_USAGE;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return SLB_TLS_FAIL_UNKNOWN_CA;
    default:
        return SLB_TLS_FAIL_OTHER;
    }
}

static enum slb_tls_fail from_reason(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return SLB_TLS_FAIL_OTHER;
    switch (ERR_GET_REASON(e)) {
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
        return SLB_TLS_FAIL_NO_SHARED_CIPHER;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        return SLB_TLS_FAIL_PROTOCOL_VERSION;
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        return SLB_TLS_FAIL_NO_CLIENT_CERT;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        return SLB_TLS_FAIL_NO_APPLICATION_PROTOCOL;
    case SSL_R_HTTP_REQUEST:        /* the first record began "GET ", "POST ", "HEAD ", "PUT " */
    case SSL_R_HTTPS_PROXY_REQUEST: /* ... or "CONNE" */
        return SLB_TLS_FAIL_HTTP_ON_HTTPS;
    default:
        return SLB_TLS_FAIL_OTHER;
    }
}

enum slb_tls_fail slb_tls_classify_failure(SSL *ssl)
{
    enum slb_tls_fail f = SLB_TLS_FAIL_OTHER;
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (slb_tls_ssl_bad_sni(ssl)) {
        f = SLB_TLS_FAIL_BAD_SNI;
    } else if (vr != X509_V_OK) {
        f = from_verify(vr);
    } else {
        unsigned long e;
        while (f == SLB_TLS_FAIL_OTHER && (e = ERR_get_error()) != 0)
            f = from_reason(e);
    }
    ERR_clear_error();
    return f;
}

const char *slb_tls_fail_name(enum slb_tls_fail f)
{
    static const char *const names[SLB_TLS_FAIL_COUNT] = {
        [SLB_TLS_FAIL_NONE] = "none",
        [SLB_TLS_FAIL_NO_SHARED_CIPHER] = "no_shared_cipher",
        [SLB_TLS_FAIL_UNKNOWN_CA] = "unknown_ca",
        [SLB_TLS_FAIL_CERT_EXPIRED] = "cert_expired",
        [SLB_TLS_FAIL_NO_CLIENT_CERT] = "no_client_cert",
        [SLB_TLS_FAIL_CERT_REVOKED] = "cert_revoked",
        [SLB_TLS_FAIL_CERT_NOT_YET_VALID] = "cert_not_yet_valid",
        [SLB_TLS_FAIL_CERT_KEY_USAGE] = "cert_key_usage",
        [SLB_TLS_FAIL_PROTOCOL_VERSION] = "protocol_version",
        [SLB_TLS_FAIL_BAD_SNI] = "bad_sni",
        [SLB_TLS_FAIL_NO_APPLICATION_PROTOCOL] = "no_application_protocol",
        [SLB_TLS_FAIL_HTTP_ON_HTTPS] = "http_on_https",
        [SLB_TLS_FAIL_TIMEOUT] = "timeout",
        [SLB_TLS_FAIL_OTHER] = "other",
    };
    return (unsigned)f < SLB_TLS_FAIL_COUNT ? names[f] : "other";
}

/* RFC 4514 text of name into buf (truncated to fit); false on failure. */
static bool name_text(const X509_NAME *name, char *buf, size_t len)
{
    BIO *b = BIO_new(BIO_s_mem());
    bool ok = false;
    if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
        char *p;
        long n = BIO_get_mem_data(b, &p);
        if (n >= 0 && len > 0) {
            size_t k = (size_t)n < len - 1 ? (size_t)n : len - 1;
            memcpy(buf, p, k);
            buf[k] = '\0';
            ok = true;
        }
    }
    BIO_free(b);
    return ok;
}

bool slb_tls_client_cert_info(SSL *ssl, char *subject, size_t slen, char *issuer, size_t ilen,
                              char *fp, size_t fplen)
{
    /* The peer certificate travels in the session, so resumed connections see it too. */
    X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!peer)
        return false;
    ERR_clear_error();
    if (subject && slen && !name_text(X509_get_subject_name(peer), subject, slen))
        subject[0] = '\0';
    if (issuer && ilen && !name_text(X509_get_issuer_name(peer), issuer, ilen))
        issuer[0] = '\0';
    if (fp && fplen) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        fp[0] = '\0';
        if (X509_digest(peer, EVP_sha256(), md, &n) && fplen >= 2 * (size_t)n + 1) {
            for (unsigned i = 0; i < n; i++)
                snprintf(fp + 2 * i, 3, "%02x", md[i]);
        }
    }
    ERR_clear_error();
    return true;
}
