/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for certificate upload validation (src/cert/validate.h): the PEM block
 * scanner, certificate, key and CRL parsing, chain ordering and the derived fields, fed the
 * way an upload reaches them. Besides memory safety it checks what the header promises: a
 * result and a struct slb_err that agree, material that is consistent when accepted, and error
 * messages that never quote the base64 of a private key.
 *
 * The first byte of the input picks how the rest is read:
 *   '{'  the whole input is an upload body (JSON), checked with slb_certval_body and then, when
 *        valid, with slb_certval_material as the admin API does;
 *   'D'  DER: a flags byte, then DER SEQUENCEs, each wrapped as a CERTIFICATE block (with flag
 *        1, the last one as a PRIVATE KEY block), so the fuzzer can mutate certificates
 *        structurally instead of through base64;
 *   else PEM text: certificate field, then after a NUL the private_key field, then after
 *        another NUL a CRL. */
#include "cert/validate.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant failed: say which and crash, so libFuzzer keeps the input. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_cert: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A fixed clock, so every run of an input is the same: 2027-01-15T08:00:00Z. */
#define NOW INT64_C(1800000000)
/* Shortest run of key base64 in a message that counts as quoting the key. */
#define SECRET_WINDOW 16

/* The fields of one case: borrowed text, NULL when absent. */
struct fields {
    const char *cert;
    size_t cert_len;
    const char *key;
    size_t key_len;
    const char *crl;
    size_t crl_len;
};

/* --- error reports -------------------------------------------------------------------------- */

static void check_err(int rc, const struct slb_err *err)
{
    static const char *const codes[] = {"invalid_pem",
                                        "dh_parameters_not_supported",
                                        "encrypted_private_key",
                                        "weak_key",
                                        "expired",
                                        "not_yet_valid",
                                        "key_mismatch",
                                        "chain_order",
                                        "chain_incomplete",
                                        "not_a_ca",
                                        "invalid_body",
                                        "invalid_crl",
                                        "crl_signature",
                                        "internal"};
    CHECK(rc < 0);
    CHECK(err->status == 400 || (err->status == 500 && strcmp(err->code, "internal") == 0));
    CHECK(memchr(err->code, '\0', sizeof(err->code)) && memchr(err->msg, '\0', sizeof(err->msg)));
    CHECK(memchr(err->where, '\0', sizeof(err->where)));
    bool known = false;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        known |= strcmp(err->code, codes[i]) == 0;
    if (!known)
        fprintf(stderr, "fuzz_cert: unexpected code \"%s\": %s\n", err->code, err->msg);
    CHECK(known);
    CHECK(err->msg[0] != '\0');
}

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Does [p, p + n) occur in text[0, len)? */
static bool occurs(const char *text, size_t len, const char *p, size_t n)
{
    return text && len >= n && memmem(text, len, p, n) != NULL;
}

/* Is [p, p + n) inside the base64 body of some block of the key field, i.e. key material, and
 * nowhere else in the input (marker lines, the other fields), from where a message may quote
 * it legitimately? Lines are compared after the same trimming the scanner does. */
static bool is_key_material(const struct fields *f, const char *p, size_t n)
{
    const char *s = f->key, *end = f->key + f->key_len;
    bool inside = false, found = false, elsewhere = false;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *le = nl ? nl : end, *ls = s;
        s = nl ? nl + 1 : end;
        while (ls < le && (*ls == ' ' || *ls == '\t'))
            ls++;
        while (le > ls && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
            le--;
        size_t ll = (size_t)(le - ls);
        bool marker = ll >= 5 && memcmp(ls, "-----", 5) == 0;
        bool body = inside && !marker && !memchr(ls, ':', ll);
        if (occurs(ls, ll, p, n)) {
            if (body)
                found = true;
            else
                elsewhere = true;
        }
        if (marker)
            inside = !inside && ll >= 10 && memcmp(ls, "-----BEGIN", 10) == 0;
    }
    elsewhere |= occurs(f->cert, f->cert_len, p, n) || occurs(f->crl, f->crl_len, p, n);
    return found && !elsewhere;
}

/* No message may quote key material: not SECRET_WINDOW base64 characters in a row that come
 * from the base64 of the private_key field. */
static void check_no_secret(const struct fields *f, const struct slb_err *err)
{
    if (!f->key)
        return;
    size_t n = strlen(err->msg);
    for (size_t i = 0; i + SECRET_WINDOW <= n; i++) {
        bool all = true;
        for (size_t k = 0; k < SECRET_WINDOW && all; k++)
            all = is_b64(err->msg[i + k]);
        if (all && is_key_material(f, err->msg + i, SECRET_WINDOW)) {
            fprintf(stderr, "fuzz_cert: message quotes the key: %s\n", err->msg);
            CHECK(!"an error message quotes private key material");
        }
    }
}

/* --- accepted material ---------------------------------------------------------------------- */

static void check_derived(X509 *x)
{
    int64_t nb = slb_certval_time(X509_get0_notBefore(x));
    int64_t na = slb_certval_time(X509_get0_notAfter(x));
    char when[32], fp[65];
    slb_certval_rfc3339(nb, when, sizeof(when));
    CHECK(memchr(when, '\0', sizeof(when)) != NULL);
    struct slb_err err;
    if (nb != INT64_MIN && na != INT64_MIN) {
        /* The date rules, at the edges of the validity period. */
        memset(&err, 0, sizeof(err));
        int rc = slb_certval_dates(x, nb, "certificate block 1", &err);
        if (na >= nb) {
            CHECK(rc == 0);
            CHECK(slb_certval_dates(x, na, "certificate block 1", &err) == 0);
        } else {
            check_err(rc, &err);
        }
        if (na < INT64_MAX) {
            memset(&err, 0, sizeof(err));
            rc = slb_certval_dates(x, na + 1, "certificate block 1", &err);
            check_err(rc, &err);
            CHECK(strcmp(err.code, "expired") == 0 || strcmp(err.code, "not_yet_valid") == 0);
        }
        if (nb > INT64_MIN + 1 && na >= nb) {
            memset(&err, 0, sizeof(err));
            rc = slb_certval_dates(x, nb - 1, "certificate block 1", &err);
            check_err(rc, &err);
            CHECK(strcmp(err.code, "not_yet_valid") == 0);
        }
    }
    char *subject = slb_certval_name_string(X509_get_subject_name(x));
    char *issuer = slb_certval_name_string(X509_get_issuer_name(x));
    free(subject);
    free(issuer);
    if (slb_certval_fingerprint(x, fp) == 0) {
        CHECK(strlen(fp) == 64);
        for (int i = 0; i < 64; i++)
            CHECK((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f'));
    }
    char **sans = NULL;
    size_t nsans = 0;
    if (slb_certval_sans(x, &sans, &nsans) == 0) {
        CHECK((nsans == 0) == (sans == NULL));
        for (size_t i = 0; i < nsans; i++) {
            CHECK(sans[i] != NULL && sans[i][0] != '\0');
            /* Printable ASCII only: these names end up in JSON and in SNI routing. */
            for (const char *c = sans[i]; *c; c++)
                CHECK(*c > 0x20 && *c < 0x7f);
            free(sans[i]);
        }
        free(sans);
    }
    EVP_PKEY *pub = X509_get0_pubkey(x);
    ERR_clear_error();
    if (pub) {
        char type[16];
        memset(&err, 0, sizeof(err));
        int rc = slb_certval_key_type(pub, "certificate block 1", type, &err);
        if (rc == 0)
            CHECK(memchr(type, '\0', sizeof(type)) &&
                  (strncmp(type, "rsa-", 4) == 0 || strcmp(type, "ec-p256") == 0 ||
                   strcmp(type, "ec-p384") == 0 || strcmp(type, "ec-p521") == 0));
        else
            check_err(rc, &err);
    }
}

static bool in_stack(STACK_OF(X509) * certs, const X509 *x)
{
    for (int i = 0; i < sk_X509_num(certs); i++)
        if (X509_cmp(sk_X509_value(certs, i), x) == 0)
            return true;
    return false;
}

static void check_material(enum slb_cert_type type, const struct fields *f, STACK_OF(X509) * certs,
                           int64_t now, unsigned flags)
{
    struct slb_certval_material m;
    struct slb_err err;
    memset(&err, 0, sizeof(err));
    const char *key = type == SLB_CERT_SERVER ? f->key : NULL;
    size_t key_len = type == SLB_CERT_SERVER ? f->key_len : 0;
    int rc = slb_certval_material(type, f->cert, f->cert_len, key, key_len, now, flags, &m, &err);
    ERR_clear_error();
    if (rc) {
        check_err(rc, &err);
        check_no_secret(f, &err);
        CHECK(m.leaf == NULL && m.chain == NULL && m.key == NULL);
        return;
    }
    /* Accepted: the certificate field parsed, and the material is what the header says. */
    CHECK(certs != NULL);
    CHECK(m.leaf != NULL && m.chain != NULL && in_stack(certs, m.leaf));
    CHECK(sk_X509_num(m.chain) < sk_X509_num(certs));
    for (int i = 0; i < sk_X509_num(m.chain); i++) {
        CHECK(in_stack(certs, sk_X509_value(m.chain, i)));
        CHECK(X509_cmp(sk_X509_value(m.chain, i), m.leaf) != 0);
    }
    CHECK(strncmp(m.key_type, "rsa-", 4) == 0 || strncmp(m.key_type, "ec-p", 4) == 0);
    if (type == SLB_CERT_SERVER) {
        CHECK(m.key != NULL);
        CHECK(EVP_PKEY_eq(X509_get0_pubkey(m.leaf), m.key) == 1);
    } else {
        CHECK(m.key == NULL && sk_X509_num(m.chain) == 0 && sk_X509_num(certs) == 1);
        CHECK(X509_check_ca(m.leaf) == 1);
    }
    if (!(flags & SLB_CERTVAL_NO_DATES)) {
        CHECK(slb_certval_time(X509_get0_notBefore(m.leaf)) <= now);
        CHECK(slb_certval_time(X509_get0_notAfter(m.leaf)) >= now);
    }
    ERR_clear_error();
    slb_certval_material_clear(&m);
    CHECK(m.leaf == NULL && m.chain == NULL && m.key == NULL);
}

static void check_crl(const struct fields *f, X509 *ca)
{
    STACK_OF(X509_CRL) *crls = NULL;
    STACK_OF(X509) *issuers = NULL;
    struct slb_err err;
    memset(&err, 0, sizeof(err));
    int rc = slb_certval_crls(f->crl, f->crl_len, ca, NOW, 0, &crls, &issuers, &err);
    if (rc) {
        check_err(rc, &err);
        CHECK(crls == NULL && issuers == NULL);
    } else {
        CHECK(crls != NULL && sk_X509_CRL_num(crls) > 0);
        for (int i = 0; i < sk_X509_CRL_num(crls); i++)
            CHECK(slb_certval_time(X509_CRL_get0_lastUpdate(sk_X509_CRL_value(crls, i))) <= NOW);
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    sk_X509_pop_free(issuers, X509_free);
    crls = NULL;
    issuers = NULL;
    memset(&err, 0, sizeof(err));
    rc = slb_certval_crls(f->crl, f->crl_len, ca, NOW, SLB_CERTVAL_NO_DATES, &crls, &issuers,
                          &err);
    if (rc)
        check_err(rc, &err);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    sk_X509_pop_free(issuers, X509_free);
    ERR_clear_error();
}

/* Every function of the header on one set of fields. */
static void run_fields(const struct fields *f)
{
    STACK_OF(X509) *certs = NULL;
    struct slb_err err;
    memset(&err, 0, sizeof(err));
    int rc = slb_certval_parse_certs("certificate", f->cert, f->cert_len, &certs, &err);
    ERR_clear_error();
    if (rc) {
        check_err(rc, &err);
        CHECK(certs == NULL);
    } else {
        CHECK(certs != NULL);
        CHECK(sk_X509_num(certs) >= 1 && sk_X509_num(certs) <= SLB_CERTVAL_MAX_BLOCKS);
        for (int i = 0; i < sk_X509_num(certs); i++) {
            CHECK(sk_X509_value(certs, i) != NULL);
            check_derived(sk_X509_value(certs, i));
        }
    }
    if (f->key) {
        EVP_PKEY *key = NULL;
        memset(&err, 0, sizeof(err));
        rc = slb_certval_parse_key(f->key, f->key_len, &key, &err);
        ERR_clear_error();
        if (rc) {
            check_err(rc, &err);
            check_no_secret(f, &err);
            CHECK(key == NULL);
        } else {
            CHECK(key != NULL);
        }
        EVP_PKEY_free(key);
        check_material(SLB_CERT_SERVER, f, certs, NOW, 0);
        check_material(SLB_CERT_SERVER, f, certs, NOW, SLB_CERTVAL_NO_DATES);
    }
    check_material(SLB_CERT_CA, f, certs, NOW, SLB_CERTVAL_NO_DATES);
    if (f->crl && certs)
        check_crl(f, sk_X509_value(certs, 0));
    sk_X509_pop_free(certs, X509_free);
    ERR_clear_error();
}

/* --- input modes ---------------------------------------------------------------------------- */

static void run_pem(const char *p, size_t len)
{
    struct fields f = {0};
    const char *nul = memchr(p, '\0', len);
    f.cert = p;
    f.cert_len = nul ? (size_t)(nul - p) : len;
    if (nul) {
        const char *k = nul + 1, *end = p + len;
        const char *nul2 = memchr(k, '\0', (size_t)(end - k));
        f.key = k;
        f.key_len = nul2 ? (size_t)(nul2 - k) : (size_t)(end - k);
        if (nul2) {
            f.crl = nul2 + 1;
            f.crl_len = (size_t)(end - f.crl);
        }
    }
    run_fields(&f);
}

/* Appends one PEM block of the given type holding der to a growing text. */
static bool pem_append(char **text, size_t *len, const char *type, const uint8_t *der, size_t n)
{
    size_t b64 = 4 * ((n + 2) / 3);
    size_t need = *len + 2 * strlen(type) + 40 + b64 + b64 / 64 + 2;
    char *t = realloc(*text, need + 1);
    if (!t)
        return false;
    *text = t;
    *len += (size_t)sprintf(t + *len, "-----BEGIN %s-----\n", type);
    for (size_t i = 0; i < n; i += 48) {
        size_t chunk = n - i < 48 ? n - i : 48;
        *len += (size_t)EVP_EncodeBlock((unsigned char *)t + *len, der + i, (int)chunk);
        t[(*len)++] = '\n';
    }
    *len += (size_t)sprintf(t + *len, "-----END %s-----\n", type);
    return true;
}

/* Length of the DER element (tag, length, contents) at d, or 0 when it is not one. */
static size_t der_element(const uint8_t *d, size_t n)
{
    if (n < 2 || d[0] != 0x30)
        return 0;
    size_t len, hdr;
    if (d[1] < 0x80) {
        len = d[1];
        hdr = 2;
    } else {
        size_t k = d[1] & 0x7f;
        if (k == 0 || k > 3 || n < 2 + k)
            return 0;
        len = 0;
        for (size_t i = 0; i < k; i++)
            len = len << 8 | d[2 + i];
        hdr = 2 + k;
    }
    return len <= n - hdr ? hdr + len : 0;
}

static void run_der(const uint8_t *d, size_t n)
{
    if (n < 1)
        return;
    bool last_is_key = d[0] & 1;
    d++;
    n--;
    const uint8_t *el[SLB_CERTVAL_MAX_BLOCKS + 1];
    size_t ellen[SLB_CERTVAL_MAX_BLOCKS + 1], count = 0;
    while (n > 0 && count < SLB_CERTVAL_MAX_BLOCKS + 1) {
        size_t e = der_element(d, n);
        if (e == 0)
            break;
        el[count] = d;
        ellen[count++] = e;
        d += e;
        n -= e;
    }
    if (count == 0)
        return;
    char *cert = NULL, *key = NULL;
    size_t cert_len = 0, key_len = 0;
    size_t ncerts = last_is_key && count > 1 ? count - 1 : count;
    bool ok = true;
    for (size_t i = 0; i < ncerts && ok; i++)
        ok = pem_append(&cert, &cert_len, "CERTIFICATE", el[i], ellen[i]);
    if (ok && ncerts < count)
        ok = pem_append(&key, &key_len, "PRIVATE KEY", el[count - 1], ellen[count - 1]);
    if (ok) {
        struct fields f = {.cert = cert, .cert_len = cert_len, .key = key, .key_len = key_len};
        run_fields(&f);
    }
    free(cert);
    if (key)
        OPENSSL_cleanse(key, key_len);
    free(key);
}

static void run_body(const char *p, size_t len)
{
    json_error_t jerr;
    json_t *body = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return;
    static const enum slb_cert_type existing[] = {SLB_CERT_NONE, SLB_CERT_SERVER, SLB_CERT_CA};
    for (size_t i = 0; i < sizeof(existing) / sizeof(existing[0]); i++) {
        struct slb_certval_upload up;
        struct slb_err err;
        memset(&err, 0, sizeof(err));
        int rc = slb_certval_body(body, existing[i], &up, &err);
        if (rc) {
            check_err(rc, &err);
            CHECK(strcmp(err.code, "invalid_body") == 0);
            continue;
        }
        CHECK(json_is_object(body));
        CHECK(up.type == SLB_CERT_SERVER || up.type == SLB_CERT_CA);
        CHECK(existing[i] == SLB_CERT_NONE || up.type == existing[i]);
        CHECK(up.certificate && up.certificate_len > 0);
        CHECK(up.type == SLB_CERT_CA ? up.private_key == NULL
                                     : up.private_key && up.private_key_len > 0);
        CHECK(!up.id || slb_certval_id_ok(up.id));
        CHECK(existing[i] != SLB_CERT_NONE || (up.name && slb_certval_name_ok(up.name)));
        struct fields f = {.cert = up.certificate,
                           .cert_len = up.certificate_len,
                           .key = up.private_key,
                           .key_len = up.private_key_len};
        STACK_OF(X509) *certs = NULL;
        memset(&err, 0, sizeof(err));
        slb_certval_parse_certs("certificate", f.cert, f.cert_len, &certs, &err);
        ERR_clear_error();
        check_material(up.type, &f, certs, NOW, SLB_CERTVAL_NO_DATES);
        sk_X509_pop_free(certs, X509_free);
    }
    json_decref(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* A private copy of exactly size bytes, so ASan sees any read past the end. */
    char *buf = malloc(size);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (buf[0] == '{')
        run_body(buf, size);
    else if (buf[0] == 'D')
        run_der((const uint8_t *)buf + 1, size - 1);
    else
        run_pem(buf, size);
    free(buf);
    ERR_clear_error();
    return 0;
}
