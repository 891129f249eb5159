/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the ACME cryptography: base64url, the RFC 7638 thumbprint example, JWS bodies
 * whose signatures verify with the public key, key authorizations and the RFC 8737 challenge
 * certificate. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "acme/jws.h"

#include <openssl/ecdsa.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

static void test_b64url(void **state)
{
    char out[64];
    unsigned char back[64];
    assert_int_equal(slb_acme_b64url("", 0, out), 0);
    assert_string_equal(out, "");
    slb_acme_b64url("f", 1, out);
    assert_string_equal(out, "Zg");
    slb_acme_b64url("fo", 2, out);
    assert_string_equal(out, "Zm8");
    slb_acme_b64url("foo", 3, out);
    assert_string_equal(out, "Zm9v");
    slb_acme_b64url("\xfb\xff", 2, out);
    assert_string_equal(out, "-_8");
    assert_int_equal(slb_acme_b64url_decode("-_8", 3, back), 2);
    assert_memory_equal(back, "\xfb\xff", 2);
    assert_int_equal(slb_acme_b64url_decode("Zm9vYg", 6, back), 4);
    assert_memory_equal(back, "foob", 4);
    /* Padding, the standard alphabet, a lone character and non-zero spare bits are refused. */
    assert_int_equal(slb_acme_b64url_decode("Zg==", 4, back), -1);
    assert_int_equal(slb_acme_b64url_decode("+/8", 3, back), -1);
    assert_int_equal(slb_acme_b64url_decode("Zm9vY", 5, back), -1);
    assert_int_equal(slb_acme_b64url_decode("Zh", 2, back), -1);
}

static void test_thumbprint_rfc7638(void **state)
{
    /* The example of RFC 7638 section 3.1. */
    json_t *jwk = json_pack(
        "{s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "n",
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_"
        "BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_"
        "RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbO"
        "pbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-"
        "csFCur-kEgU8awapJzKnqDKgw",
        "e", "AQAB", "alg", "RS256", "kid", "2011-04-29");
    char tp[SLB_ACME_B64_SHA256];
    assert_int_equal(slb_acme_jwk_thumbprint(jwk, tp), 0);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    json_object_del(jwk, "e");
    assert_int_equal(slb_acme_jwk_thumbprint(jwk, tp), -1);
    json_decref(jwk);
}

static unsigned char *b64_field(const json_t *o, const char *name, long *len)
{
    const char *s = json_string_value(json_object_get(o, name));
    assert_non_null(s);
    unsigned char *out = malloc(strlen(s) + 1);
    *len = slb_acme_b64url_decode(s, strlen(s), out);
    assert_true(*len >= 0);
    out[*len] = 0;
    return out;
}

/* Check a JWS body: signature over protected.payload with key, the protected header's members,
 * and return the decoded protected header. */
static json_t *check_jws(const char *text, EVP_PKEY *key, const char *payload)
{
    json_t *body = json_loads(text, 0, NULL);
    assert_non_null(body);
    long plen, paylen, slen;
    unsigned char *prot = b64_field(body, "protected", &plen);
    unsigned char *pay = b64_field(body, "payload", &paylen);
    unsigned char *sig = b64_field(body, "signature", &slen);
    assert_int_equal(paylen, strlen(payload));
    assert_memory_equal(pay, payload, (size_t)paylen);
    char input[4096];
    snprintf(input, sizeof(input), "%s.%s", json_string_value(json_object_get(body, "protected")),
             json_string_value(json_object_get(body, "payload")));
    unsigned char der[600];
    size_t dlen = (size_t)slen;
    if (EVP_PKEY_is_a(key, "EC")) {
        /* JWS carries R || S; OpenSSL verifies DER. */
        assert_int_equal(slen, 64);
        ECDSA_SIG *es = ECDSA_SIG_new();
        ECDSA_SIG_set0(es, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
        unsigned char *p = der;
        dlen = (size_t)i2d_ECDSA_SIG(es, &p);
        ECDSA_SIG_free(es);
    } else {
        memcpy(der, sig, dlen);
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestVerify(md, der, dlen, (const unsigned char *)input, strlen(input)),
                     1);
    /* One flipped bit of the input no longer verifies. */
    input[3] ^= 1;
    assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_not_equal(
        EVP_DigestVerify(md, der, dlen, (const unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    json_t *hdr = json_loadb((const char *)prot, (size_t)plen, 0, NULL);
    assert_non_null(hdr);
    free(prot);
    free(pay);
    free(sig);
    json_decref(body);
    return hdr;
}

static void test_jws_ec_new_account_and_kid(void **state)
{
    EVP_PKEY *k = slb_acme_key_generate(SLB_ACME_KEY_EC_P256);
    assert_non_null(k);
    char *jws =
        slb_acme_jws(k, NULL, "nonce-1", "https://ca/new-acct", "{\"termsOfServiceAgreed\":true}");
    assert_non_null(jws);
    json_t *hdr = check_jws(jws, k, "{\"termsOfServiceAgreed\":true}");
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "ES256");
    assert_string_equal(json_string_value(json_object_get(hdr, "nonce")), "nonce-1");
    assert_string_equal(json_string_value(json_object_get(hdr, "url")), "https://ca/new-acct");
    assert_null(json_object_get(hdr, "kid"));
    json_t *jwk = json_object_get(hdr, "jwk");
    assert_string_equal(json_string_value(json_object_get(jwk, "kty")), "EC");
    assert_string_equal(json_string_value(json_object_get(jwk, "crv")), "P-256");
    assert_int_equal(json_string_length(json_object_get(jwk, "x")), 43);
    assert_int_equal(json_string_length(json_object_get(jwk, "y")), 43);
    assert_null(json_object_get(jwk, "d"));
    json_decref(hdr);
    free(jws);

    /* Later requests name the account; POST-as-GET has an empty payload. */
    jws = slb_acme_jws(k, "https://ca/acct/1", "nonce-2", "https://ca/order/7", NULL);
    hdr = check_jws(jws, k, "");
    assert_string_equal(json_string_value(json_object_get(hdr, "kid")), "https://ca/acct/1");
    assert_null(json_object_get(hdr, "jwk"));
    json_decref(hdr);
    free(jws);
    EVP_PKEY_free(k);
}

static void test_jws_rsa(void **state)
{
    EVP_PKEY *k = slb_acme_key_generate(SLB_ACME_KEY_RSA_2048);
    assert_non_null(k);
    char *jws = slb_acme_jws(k, NULL, "n", "https://ca/x", "{}");
    json_t *hdr = check_jws(jws, k, "{}");
    assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "RS256");
    json_t *jwk = json_object_get(hdr, "jwk");
    assert_string_equal(json_string_value(json_object_get(jwk, "e")), "AQAB");
    /* 2048 bits: 256 bytes, 342 characters. */
    assert_int_equal(json_string_length(json_object_get(jwk, "n")), 342);
    json_decref(hdr);
    free(jws);
    EVP_PKEY_free(k);
}

static void test_key_authorization(void **state)
{
    EVP_PKEY *k = slb_acme_key_generate(SLB_ACME_KEY_EC_P256);
    char tp[SLB_ACME_B64_SHA256], want[128];
    json_t *jwk = slb_acme_jwk(k);
    assert_int_equal(slb_acme_jwk_thumbprint(jwk, tp), 0);
    json_decref(jwk);
    char *ka = slb_acme_key_authorization(k, "tok-EN_1");
    snprintf(want, sizeof(want), "tok-EN_1.%s", tp);
    assert_string_equal(ka, want);
    free(ka);
    EVP_PKEY_free(k);
    assert_int_equal(slb_acme_key_type_parse("ec-p256"), SLB_ACME_KEY_EC_P256);
    assert_int_equal(slb_acme_key_type_parse("rsa-2048"), SLB_ACME_KEY_RSA_2048);
    assert_int_equal(slb_acme_key_type_parse("rsa-1024"), -1);
    assert_int_equal(slb_acme_key_type_parse(NULL), -1);
}

static void test_alpn_cert(void **state)
{
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    const char *ka = "token.thumb";
    assert_int_equal(slb_acme_alpn_cert("a.example.test", ka, &x, &k), 0);
    assert_int_equal(X509_verify(x, k), 1);
    assert_int_equal(X509_check_host(x, "a.example.test", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "b.example.test", 0, 0, NULL), 0);
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    int at = X509_get_ext_by_OBJ(x, oid, -1);
    assert_true(at >= 0);
    X509_EXTENSION *ext = X509_get_ext(x, at);
    assert_int_equal(X509_EXTENSION_get_critical(ext), 1);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
    unsigned char want[34] = {0x04, 32};
    SHA256((const unsigned char *)ka, strlen(ka), want + 2);
    assert_int_equal(ASN1_STRING_length(v), 34);
    assert_memory_equal(ASN1_STRING_get0_data(v), want, 34);
    ASN1_OBJECT_free(oid);
    X509_free(x);
    EVP_PKEY_free(k);
    assert_int_equal(slb_acme_alpn_cert(NULL, ka, &x, &k), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_thumbprint_rfc7638),
        cmocka_unit_test(test_jws_ec_new_account_and_kid),
        cmocka_unit_test(test_jws_rsa),
        cmocka_unit_test(test_key_authorization),
        cmocka_unit_test(test_alpn_cert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
