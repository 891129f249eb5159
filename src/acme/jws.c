/* SPDX-License-Identifier: Apache-2.0 */
/* ACME cryptography (acme/jws.h): JWK, JWS and the tls-alpn-01 certificate with OpenSSL 3. */
#include "acme/jws.h"

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int slb_acme_key_type_parse(const char *s)
{
    if (s && strcmp(s, "ec-p256") == 0)
        return SLB_ACME_KEY_EC_P256;
    if (s && strcmp(s, "rsa-2048") == 0)
        return SLB_ACME_KEY_RSA_2048;
    return -1;
}

size_t slb_acme_b64url(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

char *slb_acme_b64url_new(const void *in, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out)
        slb_acme_b64url(in, len, out);
    return out;
}

static int b64url_value(char c)
{
    const char *p = c ? strchr(b64url_alphabet, c) : NULL;
    return p ? (int)(p - b64url_alphabet) : -1;
}

long slb_acme_b64url_decode(const char *in, size_t len, unsigned char *out)
{
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6 | (unsigned)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits must be zero: one text, one encoding. */
    if (bits && (acc & ((1u << bits) - 1)))
        return -1;
    return (long)o;
}

EVP_PKEY *slb_acme_key_generate(enum slb_acme_key_type t)
{
    ERR_clear_error();
    EVP_PKEY *k = t == SLB_ACME_KEY_RSA_2048 ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    if (!k)
        ERR_clear_error();
    return k;
}

/* A big number parameter of key as base64url of width bytes (0: its natural length). */
static json_t *bn_b64(EVP_PKEY *key, const char *param, int width)
{
    BIGNUM *bn = NULL;
    unsigned char buf[512];
    char text[700];
    if (!EVP_PKEY_get_bn_param(key, param, &bn))
        return NULL;
    int n = width ? width : BN_num_bytes(bn);
    json_t *out = NULL;
    if (n > 0 && (size_t)n <= sizeof(buf) && BN_bn2binpad(bn, buf, n) == n) {
        slb_acme_b64url(buf, (size_t)n, text);
        out = json_string(text);
    }
    BN_free(bn);
    return out;
}

json_t *slb_acme_jwk(EVP_PKEY *key)
{
    json_t *a = NULL, *b = NULL;
    ERR_clear_error();
    if (EVP_PKEY_is_a(key, "EC")) {
        char crv[32];
        if (!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, crv, sizeof(crv),
                                            NULL) ||
            strcmp(crv, "prime256v1") != 0)
            goto fail;
        if (!(a = bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_X, 32)) ||
            !(b = bn_b64(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32)))
            goto fail;
        return json_pack("{s:s, s:s, s:o, s:o}", "crv", "P-256", "kty", "EC", "x", a, "y", b);
    }
    if (EVP_PKEY_is_a(key, "RSA")) {
        if (!(a = bn_b64(key, OSSL_PKEY_PARAM_RSA_E, 0)) ||
            !(b = bn_b64(key, OSSL_PKEY_PARAM_RSA_N, 0)))
            goto fail;
        return json_pack("{s:o, s:s, s:o}", "e", a, "kty", "RSA", "n", b);
    }
fail:
    json_decref(a);
    json_decref(b);
    ERR_clear_error();
    return NULL;
}

int slb_acme_jwk_thumbprint(const json_t *jwk, char out[SLB_ACME_B64_SHA256])
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    char buf[1200];
    int n;
    if (kty && strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        const char *x = json_string_value(json_object_get(jwk, "x"));
        const char *y = json_string_value(json_object_get(jwk, "y"));
        if (!crv || !x || !y)
            return -1;
        n = snprintf(buf, sizeof(buf), "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                     crv, x, y);
    } else if (kty && strcmp(kty, "RSA") == 0) {
        const char *e = json_string_value(json_object_get(jwk, "e"));
        const char *nn = json_string_value(json_object_get(jwk, "n"));
        if (!e || !nn)
            return -1;
        n = snprintf(buf, sizeof(buf), "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, nn);
    } else {
        return -1;
    }
    if (n < 0 || (size_t)n >= sizeof(buf))
        return -1;
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)buf, (size_t)n, md);
    slb_acme_b64url(md, sizeof(md), out);
    return 0;
}

/* Sign "protected.payload" (both already base64url); the JWS signature as raw bytes (ES256:
 * R || S of 32 bytes each, not DER). Returns the length or -1. */
static long sign(EVP_PKEY *key, const char *input, size_t len, unsigned char *sig, size_t cap)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[600];
    size_t dlen = sizeof(der);
    long out = -1;
    ECDSA_SIG *es = NULL;
    if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, der, &dlen, (const unsigned char *)input, len) != 1)
        goto done;
    if (EVP_PKEY_is_a(key, "EC")) {
        const unsigned char *p = der;
        const BIGNUM *r, *s;
        if (cap < 64 || !(es = d2i_ECDSA_SIG(NULL, &p, (long)dlen)))
            goto done;
        ECDSA_SIG_get0(es, &r, &s);
        if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)
            goto done;
        out = 64;
    } else if (dlen <= cap) {
        memcpy(sig, der, dlen);
        out = (long)dlen;
    }
done:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    if (out < 0)
        ERR_clear_error();
    return out;
}

char *slb_acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                   const char *payload)
{
    json_t *prot = json_pack("{s:s, s:s, s:s}", "alg", EVP_PKEY_is_a(key, "EC") ? "ES256" : "RS256",
                             "nonce", nonce ? nonce : "", "url", url ? url : "");
    char *prot_text = NULL, *prot64 = NULL, *pay64 = NULL, *input = NULL, *out = NULL;
    json_t *body = NULL;
    if (!prot)
        return NULL;
    if (kid) {
        if (json_object_set_new(prot, "kid", json_string(kid)) < 0)
            goto done;
    } else {
        json_t *jwk = slb_acme_jwk(key);
        if (!jwk || json_object_set_new(prot, "jwk", jwk) < 0)
            goto done;
    }
    if (!(prot_text = json_dumps(prot, JSON_COMPACT | JSON_SORT_KEYS)) ||
        !(prot64 = slb_acme_b64url_new(prot_text, strlen(prot_text))) ||
        !(pay64 = slb_acme_b64url_new(payload ? payload : "", payload ? strlen(payload) : 0)))
        goto done;
    size_t ilen = strlen(prot64) + 1 + strlen(pay64);
    if (!(input = malloc(ilen + 1)))
        goto done;
    snprintf(input, ilen + 1, "%s.%s", prot64, pay64);
    unsigned char sig[512];
    char sig64[700];
    long slen = sign(key, input, ilen, sig, sizeof(sig));
    if (slen < 0)
        goto done;
    slb_acme_b64url(sig, (size_t)slen, sig64);
    body = json_pack("{s:s, s:s, s:s}", "protected", prot64, "payload", pay64, "signature", sig64);
    if (body)
        out = json_dumps(body, JSON_COMPACT);
done:
    json_decref(prot);
    json_decref(body);
    free(prot_text);
    free(prot64);
    free(pay64);
    free(input);
    return out;
}

char *slb_acme_key_authorization(EVP_PKEY *account_key, const char *token)
{
    char tp[SLB_ACME_B64_SHA256];
    json_t *jwk = slb_acme_jwk(account_key);
    int rc = jwk ? slb_acme_jwk_thumbprint(jwk, tp) : -1;
    json_decref(jwk);
    if (rc < 0 || !token)
        return NULL;
    size_t n = strlen(token) + 1 + strlen(tp) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s.%s", token, tp);
    return out;
}

int slb_acme_alpn_cert(const char *domain, const char *key_authorization, X509 **cert,
                       EVP_PKEY **key)
{
    EVP_PKEY *k = slb_acme_key_generate(SLB_ACME_KEY_EC_P256);
    X509 *x = X509_new();
    ASN1_OBJECT *oid = NULL;
    ASN1_OCTET_STRING *val = NULL;
    X509_EXTENSION *ext = NULL;
    X509V3_CTX v3;
    char san[300];
    unsigned char digest[2 + SHA256_DIGEST_LENGTH] = {0x04, SHA256_DIGEST_LENGTH};
    ERR_clear_error();
    if (!k || !x || !domain || !key_authorization || strlen(domain) > 253)
        goto fail;
    /* extnValue holds the DER of Authorization ::= OCTET STRING (SIZE (32)). */
    SHA256((const unsigned char *)key_authorization, strlen(key_authorization), digest + 2);
    snprintf(san, sizeof(san), "DNS:%s", domain);
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, 2) || !ASN1_INTEGER_set(X509_get_serialNumber(x), 1) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 7 * 24 * 3600) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)domain, -1, -1,
                                    0) ||
        !X509_set_issuer_name(x, name) || !X509_set_pubkey(x, k))
        goto fail;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (!(ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san)) ||
        !X509_add_ext(x, ext, -1))
        goto fail;
    X509_EXTENSION_free(ext);
    ext = NULL;
    if (!(oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1)) || !(val = ASN1_OCTET_STRING_new()) ||
        !ASN1_OCTET_STRING_set(val, digest, sizeof(digest)) ||
        !(ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 1, val)) || !X509_add_ext(x, ext, -1) ||
        !X509_sign(x, k, EVP_sha256()))
        goto fail;
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(oid);
    *cert = x;
    *key = k;
    return 0;
fail:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(val);
    ASN1_OBJECT_free(oid);
    X509_free(x);
    EVP_PKEY_free(k);
    ERR_clear_error();
    return -1;
}
