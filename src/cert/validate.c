/* SPDX-License-Identifier: Apache-2.0 */
/* Certificate upload rules on parsed material (key strength, dates, chain ordering, CA
 * constraint), the shape of an upload body, and the derived fields of a certificate. */
#include "cert/validate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ST SLB_CERTVAL_STATUS
/* Subjects quoted in messages are cut here so a message keeps room for its advice. */
#define CERTVAL_SUBJECT_MAX 100

/* ---------------------------------------------------------------------------------------------
 * Rules
 * ------------------------------------------------------------------------------------------- */

int slb_certval_key_type(const EVP_PKEY *key, const char *what, char type[16], struct slb_err *err)
{
    static const char *advice = "use RSA with 2048 bits or more, or ECDSA on P-256, P-384 or "
                                "P-521";
    if (!key) {
        /* OpenSSL could not decode the public key (an algorithm it does not know). */
        ERR_clear_error();
        return slb_err_set(err, ST, "weak_key", "certificate",
                           "%s has a public key of an unknown or unsupported algorithm; %s", what,
                           advice);
    }
    int id = EVP_PKEY_get_base_id(key);
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(key);
        if (bits < 2048)
            return slb_err_set(err, ST, "weak_key", "certificate",
                               "%s has an RSA key of %d bits, which is too weak; %s", what, bits,
                               advice);
        snprintf(type, 16, "rsa-%d", bits);
        return 0;
    }
    if (id == EVP_PKEY_EC) {
        char group[64];
        size_t glen = 0;
        ERR_clear_error();
        if (EVP_PKEY_get_group_name(key, group, sizeof(group), &glen) != 1) {
            ERR_clear_error();
            return slb_err_set(err, ST, "weak_key", "certificate",
                               "%s has an EC key with explicit curve parameters, which clients "
                               "do not accept; %s",
                               what, advice);
        }
        int nid = OBJ_sn2nid(group);
        if (nid == NID_undef)
            nid = EC_curve_nist2nid(group);
        const char *name = nid == NID_X9_62_prime256v1 ? "ec-p256"
                           : nid == NID_secp384r1      ? "ec-p384"
                           : nid == NID_secp521r1      ? "ec-p521"
                                                       : NULL;
        if (!name)
            return slb_err_set(err, ST, "weak_key", "certificate",
                               "%s uses the EC curve %s, which is not supported; %s", what, group,
                               advice);
        snprintf(type, 16, "%s", name);
        return 0;
    }
    /* Ed25519 and friends are valid but few TLS clients accept them in certificates; DSA and
     * RSA-PSS-only keys are legacy or rare. Refusing them keeps every listener reachable. */
    const char *tn = EVP_PKEY_get0_type_name(key);
    return slb_err_set(err, ST, "weak_key", "certificate",
                       "%s has an unsupported key type (%s); %s", what, tn ? tn : "unknown",
                       advice);
}

int slb_certval_dates(const X509 *x, int64_t now, const char *what, struct slb_err *err)
{
    int64_t nb = slb_certval_time(X509_get0_notBefore(x));
    int64_t na = slb_certval_time(X509_get0_notAfter(x));
    char when[32];
    if (nb == INT64_MIN || na == INT64_MIN)
        return slb_err_set(err, ST, "invalid_pem", "certificate",
                           "%s has an unreadable validity period", what);
    if (na < now) {
        slb_certval_rfc3339(na, when, sizeof(when));
        return slb_err_set(err, ST, "expired", "certificate",
                           "%s expired on %s; upload a renewed certificate", what, when);
    }
    if (nb > now) {
        slb_certval_rfc3339(nb, when, sizeof(when));
        return slb_err_set(err, ST, "not_yet_valid", "certificate",
                           "%s is not valid before %s; upload it once it is valid or check the "
                           "clock",
                           what, when);
    }
    return 0;
}

/* "certificate block 2 (CN=...)" for messages. */
static void describe(const X509 *x, size_t block, char *buf, size_t size)
{
    char *subj = slb_certval_name_string(X509_get_subject_name(x));
    snprintf(buf, size, "certificate block %zu (%.*s)", block, CERTVAL_SUBJECT_MAX,
             subj ? subj : "?");
    free(subj);
}

static bool self_signed(X509 *x)
{
    ERR_clear_error();
    bool ok = X509_check_issued(x, x) == X509_V_OK && X509_verify(x, X509_get0_pubkey(x)) == 1;
    ERR_clear_error();
    return ok;
}

/* Names (and key identifiers, key usage) must fit and the signature must verify: a name
 * match alone would link two CAs that happen to share a subject. */
static bool issued_by(X509 *subject, X509 *issuer)
{
    ERR_clear_error();
    bool ok = X509_check_issued(issuer, subject) == X509_V_OK &&
              X509_verify(subject, X509_get0_pubkey(issuer)) == 1;
    ERR_clear_error();
    return ok;
}

/* Chain order policy: the order of the blocks in the upload does not matter. Tools disagree on
 * bundle order (some write root first) and the private key identifies the leaf without
 * ambiguity, so instead of refusing a shuffled bundle with chain_order we rebuild the path
 * leaf -> issuer -> issuer by names and signatures and serve it in that order. chain_order is
 * left for the one case we cannot decide: several blocks carry the key's public key. */
int slb_certval_order_chain(STACK_OF(X509) * certs, EVP_PKEY *key, X509 **leaf,
                            STACK_OF(X509) * *chain, bool *reordered, struct slb_err *err)
{
    int n = sk_X509_num(certs);
    int path[SLB_CERTVAL_MAX_BLOCKS];
    bool used[SLB_CERTVAL_MAX_BLOCKS] = {0};
    int npath = 0, li = -1;
    char d1[160], d2[160];
    *leaf = NULL;
    *chain = NULL;
    *reordered = false;
    if (n < 1 || n > SLB_CERTVAL_MAX_BLOCKS)
        return slb_err_set(err, ST, "invalid_pem", "certificate",
                           "certificate must hold 1 to %d blocks", SLB_CERTVAL_MAX_BLOCKS);
    for (int i = 0; i < n; i++) {
        const EVP_PKEY *pub = X509_get0_pubkey(sk_X509_value(certs, i));
        if (!pub || EVP_PKEY_eq(pub, key) != 1)
            continue;
        if (li >= 0)
            return slb_err_set(err, ST, "chain_order", "certificate",
                               "certificate blocks %d and %d both match private_key, so the "
                               "leaf is ambiguous; give the leaf certificate once, first",
                               li + 1, i + 1);
        li = i;
    }
    ERR_clear_error();
    if (li < 0) {
        describe(sk_X509_value(certs, 0), 1, d1, sizeof(d1));
        return slb_err_set(err, ST, "key_mismatch", "private_key",
                           "private_key does not belong to %s%s; upload the key that was "
                           "generated with the certificate",
                           d1, n > 1 ? " nor to any other block" : "");
    }
    if (X509_check_private_key(sk_X509_value(certs, li), key) != 1) {
        ERR_clear_error();
        describe(sk_X509_value(certs, li), (size_t)li + 1, d1, sizeof(d1));
        return slb_err_set(err, ST, "key_mismatch", "private_key",
                           "private_key does not belong to %s", d1);
    }
    path[npath++] = li;
    used[li] = true;
    while (npath < n && !self_signed(sk_X509_value(certs, path[npath - 1]))) {
        X509 *cur = sk_X509_value(certs, path[npath - 1]);
        int next = -1;
        for (int j = 0; j < n && next < 0; j++)
            if (!used[j] && issued_by(cur, sk_X509_value(certs, j)))
                next = j;
        if (next < 0)
            break;
        path[npath++] = next;
        used[next] = true;
    }
    for (int j = 0; j < n; j++) {
        if (used[j])
            continue;
        X509 *x = sk_X509_value(certs, j);
        describe(x, (size_t)j + 1, d1, sizeof(d1));
        for (int k = 0; k < n; k++) {
            if (k != j && X509_cmp(x, sk_X509_value(certs, k)) == 0)
                return slb_err_set(err, ST, "chain_incomplete", "certificate",
                                   "%s repeats block %d; give each certificate once", d1, k + 1);
        }
        X509 *last = sk_X509_value(certs, path[npath - 1]);
        describe(last, (size_t)path[npath - 1] + 1, d2, sizeof(d2));
        char *iss = slb_certval_name_string(X509_get_issuer_name(last));
        slb_err_set(err, ST, "chain_incomplete", "certificate",
                    "%s does not link into the chain of the leaf (block %d): the chain ends at "
                    "%s, issued by %.*s, which is not in the upload; add the missing "
                    "intermediate or remove the unrelated block",
                    d1, li + 1, d2, CERTVAL_SUBJECT_MAX, iss ? iss : "?");
        free(iss);
        return SLB_EINVAL;
    }
    for (int i = 0; i < npath; i++)
        if (path[i] != i)
            *reordered = true;
    /* A trailing root is accepted but not served: clients must already trust it, and sending
     * it only costs handshake bytes. A self-signed leaf stays (there is nothing else). */
    if (npath > 1 && self_signed(sk_X509_value(certs, path[npath - 1])))
        npath--;
    *chain = sk_X509_new_null();
    if (!*chain)
        goto nomem;
    for (int i = 1; i < npath; i++) {
        X509 *x = sk_X509_value(certs, path[i]);
        if (!sk_X509_push(*chain, x))
            goto nomem;
        X509_up_ref(x);
    }
    *leaf = sk_X509_value(certs, li);
    X509_up_ref(*leaf);
    return 0;
nomem:
    sk_X509_pop_free(*chain, X509_free);
    *chain = NULL;
    return slb_err_set(err, 500, "internal", "certificate", "out of memory");
}

/* Position of x in certs as a 1-based block number (x comes from certs). */
static size_t block_of(STACK_OF(X509) * certs, const X509 *x)
{
    for (int i = 0; i < sk_X509_num(certs); i++)
        if (sk_X509_value(certs, i) == x)
            return (size_t)i + 1;
    return 0;
}

static int material_server(STACK_OF(X509) * certs, const char *key_pem, size_t key_len, int64_t now,
                           unsigned flags, struct slb_certval_material *m, struct slb_err *err)
{
    char what[200];
    int rc = slb_certval_parse_key(key_pem, key_len, &m->key, err);
    if (rc)
        return rc;
    rc = slb_certval_order_chain(certs, m->key, &m->leaf, &m->chain, &m->reordered, err);
    if (rc)
        return rc;
    describe(m->leaf, block_of(certs, m->leaf), what, sizeof(what));
    rc = slb_certval_key_type(m->key, what, m->key_type, err);
    if (rc || (flags & SLB_CERTVAL_NO_DATES))
        return rc;
    if ((rc = slb_certval_dates(m->leaf, now, what, err)) != 0)
        return rc;
    for (int i = 0; i < sk_X509_num(m->chain); i++) {
        X509 *x = sk_X509_value(m->chain, i);
        describe(x, block_of(certs, x), what, sizeof(what));
        if ((rc = slb_certval_dates(x, now, what, err)) != 0)
            return rc;
    }
    return 0;
}

static int material_ca(STACK_OF(X509) * certs, int64_t now, unsigned flags,
                       struct slb_certval_material *m, struct slb_err *err)
{
    char what[200];
    int n = sk_X509_num(certs);
    if (n != 1)
        return slb_err_set(err, ST, "invalid_pem", "certificate",
                           "a certificate of type ca holds exactly one CERTIFICATE block (the "
                           "CA); this one has %d; upload each CA separately",
                           n);
    X509 *x = sk_X509_value(certs, 0);
    describe(x, 1, what, sizeof(what));
    if (X509_check_ca(x) != 1)
        return slb_err_set(err, ST, "not_a_ca", "certificate",
                           "%s is not a CA certificate (no basic constraint CA:TRUE, or key "
                           "usage without keyCertSign); upload the issuing CA, not a leaf",
                           what);
    int rc = slb_certval_key_type(X509_get0_pubkey(x), what, m->key_type, err);
    if (rc)
        return rc;
    if (!(flags & SLB_CERTVAL_NO_DATES) && (rc = slb_certval_dates(x, now, what, err)) != 0)
        return rc;
    m->chain = sk_X509_new_null();
    if (!m->chain)
        return slb_err_set(err, 500, "internal", "certificate", "out of memory");
    X509_up_ref(x);
    m->leaf = x;
    return 0;
}

int slb_certval_material(enum slb_cert_type type, const char *cert_pem, size_t cert_len,
                         const char *key_pem, size_t key_len, int64_t now, unsigned flags,
                         struct slb_certval_material *out, struct slb_err *err)
{
    STACK_OF(X509) *certs = NULL;
    memset(out, 0, sizeof(*out));
    int rc = slb_certval_parse_certs("certificate", cert_pem, cert_len, &certs, err);
    if (rc)
        return rc;
    if (type == SLB_CERT_SERVER) {
        rc = key_pem ? material_server(certs, key_pem, key_len, now, flags, out, err)
                     : slb_err_set(err, ST, "invalid_body", "private_key",
                                   "private_key is required for a server certificate");
    } else if (type == SLB_CERT_CA) {
        rc = key_pem ? slb_err_set(err, ST, "invalid_body", "private_key",
                                   "a ca certificate takes no private_key; remove the field")
                     : material_ca(certs, now, flags, out, err);
    } else {
        rc = slb_err_set(err, ST, "invalid_body", "type", "type must be \"server\" or \"ca\"");
    }
    sk_X509_pop_free(certs, X509_free);
    if (rc)
        slb_certval_material_clear(out);
    return rc;
}

void slb_certval_material_clear(struct slb_certval_material *m)
{
    X509_free(m->leaf);
    sk_X509_pop_free(m->chain, X509_free);
    EVP_PKEY_free(m->key);
    memset(m, 0, sizeof(*m));
}

/* ---------------------------------------------------------------------------------------------
 * CRLs
 * ------------------------------------------------------------------------------------------- */

static int crl_fail(struct slb_err *err, const char *code, const X509_NAME *name, const char *fmt)
{
    char *n = slb_certval_name_string(name);
    int rc = slb_err_set(err, ST, code, "crl", fmt, CERTVAL_SUBJECT_MAX, n ? n : "?");
    free(n);
    return rc;
}

/* The signers a CRL may come from: the CA, then every issuer certificate that links to it
 * through the others (any order, at most SLB_CERTVAL_MAX_BLOCKS deep since each pass links
 * at least one). A certificate that links nowhere is refused rather than ignored: it is
 * what the operator meant to vouch for a CRL. */
int slb_certval_crls_check(const X509 *ca, STACK_OF(X509_CRL) * crls, STACK_OF(X509) * issuers,
                           int64_t now, unsigned flags, struct slb_err *err)
{
    X509 *signers[SLB_CERTVAL_MAX_BLOCKS + 1] = {(X509 *)ca};
    size_t nsigners = 1;
    int nx = sk_X509_num(issuers), ncrl = sk_X509_CRL_num(crls);
    if (nx + ncrl > SLB_CERTVAL_MAX_BLOCKS)
        return slb_err_set(err, ST, "invalid_crl", "crl", "more than %d blocks",
                           SLB_CERTVAL_MAX_BLOCKS);
    bool linked[SLB_CERTVAL_MAX_BLOCKS] = {false};
    for (bool progress = true; progress;) {
        progress = false;
        for (int i = 0; i < nx; i++) {
            X509 *x = sk_X509_value(issuers, i);
            for (size_t j = 0; !linked[i] && j < nsigners; j++) {
                if (issued_by(x, signers[j]) && X509_check_ca(x) == 1) {
                    linked[i] = progress = true;
                    signers[nsigners++] = x;
                }
            }
        }
    }
    for (int i = 0; i < nx; i++) {
        if (!linked[i])
            return crl_fail(err, "crl_signature", X509_get_subject_name(sk_X509_value(issuers, i)),
                            "the certificate %.*s is not an intermediate CA issued by this CA "
                            "(or by another intermediate of the upload that is); only CRLs of "
                            "this CA and of intermediates under it are accepted");
    }
    for (int i = 0; i < ncrl; i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        const X509_NAME *iss = X509_CRL_get_issuer(crl);
        bool ok = false;
        ERR_clear_error();
        for (size_t j = 0; !ok && j < nsigners; j++)
            ok = X509_NAME_cmp(iss, X509_get_subject_name(signers[j])) == 0 &&
                 X509_CRL_verify(crl, X509_get0_pubkey(signers[j])) == 1;
        ERR_clear_error();
        if (!ok)
            return crl_fail(err, "crl_signature", iss,
                            "the CRL of %.*s is signed neither by this CA nor by an intermediate "
                            "CA under it given in the same field; upload the CRL this CA issued, "
                            "or an intermediate's CRL together with the intermediate's "
                            "certificate");
        for (int k = 0; k < i; k++) {
            if (X509_NAME_cmp(iss, X509_CRL_get_issuer(sk_X509_CRL_value(crls, k))) == 0)
                return crl_fail(err, "invalid_crl", iss,
                                "two CRLs of %.*s; give one CRL per issuing CA");
        }
        int64_t last = slb_certval_time(X509_CRL_get0_lastUpdate(crl));
        if (last == INT64_MIN)
            return crl_fail(err, "invalid_crl", iss, "the CRL of %.*s has no readable lastUpdate");
        if (!(flags & SLB_CERTVAL_NO_DATES) && last > now)
            return crl_fail(err, "invalid_crl", iss,
                            "the lastUpdate of the CRL of %.*s is in the future; check the CA's "
                            "clock");
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Upload body
 * ------------------------------------------------------------------------------------------- */

bool slb_certval_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > 63 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool slb_certval_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > 127)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

/* A string member or NULL; a present member of another type (or with a NUL inside) is an
 * error. JSON null counts as absent. */
static int body_str(const json_t *body, const char *key, const char **out, size_t *len,
                    struct slb_err *err)
{
    const json_t *v = json_object_get(body, key);
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return slb_err_set(err, ST, "invalid_body", key, "%s must be a string", key);
    size_t n = json_string_length(v);
    /* Names and ids must not hide a NUL; PEM fields keep it so the scanner can call it
     * binary data. */
    if (!len && strlen(json_string_value(v)) != n)
        return slb_err_set(err, ST, "invalid_body", key, "%s contains a NUL character", key);
    *out = json_string_value(v);
    if (len)
        *len = n;
    return 0;
}

int slb_certval_body(const json_t *body, enum slb_cert_type existing,
                     struct slb_certval_upload *out, struct slb_err *err)
{
    static const char *const allowed[] = {"name", "type", "certificate", "private_key", "id"};
    const char *key, *type = NULL;
    const json_t *v;
    memset(out, 0, sizeof(*out));
    if (!json_is_object(body))
        return slb_err_set(err, ST, "invalid_body", "",
                           "the body must be a JSON object {name, type, certificate, "
                           "private_key}");
    json_object_foreach((json_t *)body, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]) && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok)
            return slb_err_set(err, ST, "invalid_body", key,
                               "unknown field \"%.60s\"; a certificate body has name, type, "
                               "certificate, private_key and optionally id",
                               key);
    }
    int rc;
    if ((rc = body_str(body, "id", &out->id, NULL, err)) != 0 ||
        (rc = body_str(body, "name", &out->name, NULL, err)) != 0 ||
        (rc = body_str(body, "type", &type, NULL, err)) != 0 ||
        (rc = body_str(body, "certificate", &out->certificate, &out->certificate_len, err)) ||
        (rc = body_str(body, "private_key", &out->private_key, &out->private_key_len, err)))
        return rc;
    return slb_certval_upload_check(out, type, existing, err);
}

int slb_certval_upload_check(struct slb_certval_upload *out, const char *type,
                             enum slb_cert_type existing, struct slb_err *err)
{
    if (out->id && !slb_certval_id_ok(out->id))
        return slb_err_set(err, ST, "invalid_body", "id",
                           "id must be 1 to 63 characters of A-Z a-z 0-9 . _ - (not \".\" or "
                           "\"..\")");
    if (!out->name && existing == SLB_CERT_NONE)
        return slb_err_set(err, ST, "invalid_body", "name", "name is required");
    if (out->name && !slb_certval_name_ok(out->name))
        return slb_err_set(err, ST, "invalid_body", "name",
                           "name must be 1 to 127 bytes without control characters");
    if (type && strcmp(type, "server") == 0)
        out->type = SLB_CERT_SERVER;
    else if (type && strcmp(type, "ca") == 0)
        out->type = SLB_CERT_CA;
    else if (type)
        return slb_err_set(err, ST, "invalid_body", "type", "type must be \"server\" or \"ca\"");
    else if (existing == SLB_CERT_NONE)
        return slb_err_set(err, ST, "invalid_body", "type",
                           "type is required: \"server\" or \"ca\"");
    else
        out->type = existing;
    if (existing != SLB_CERT_NONE && out->type != existing)
        return slb_err_set(err, ST, "invalid_body", "type",
                           "type cannot change on replace (this certificate is a %s "
                           "certificate); upload a new certificate instead",
                           existing == SLB_CERT_CA ? "ca" : "server");
    if (!out->certificate || out->certificate_len == 0)
        return slb_err_set(
            err, ST, "invalid_body", "certificate", "certificate is required: the PEM of the %s",
            out->type == SLB_CERT_CA ? "CA certificate" : "leaf followed by its intermediates");
    if (out->type == SLB_CERT_SERVER && (!out->private_key || out->private_key_len == 0))
        return slb_err_set(err, ST, "invalid_body", "private_key",
                           "private_key is required for a server certificate");
    if (out->type == SLB_CERT_CA && out->private_key)
        return slb_err_set(err, ST, "invalid_body", "private_key",
                           "a ca certificate takes no private_key; remove the field");
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Derived fields
 * ------------------------------------------------------------------------------------------- */

int64_t slb_certval_time(const ASN1_TIME *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        ERR_clear_error();
        return INT64_MIN;
    }
    return (int64_t)timegm(&tm);
}

void slb_certval_rfc3339(int64_t t, char *buf, size_t size)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "invalid-time");
}

char *slb_certval_name_string(const X509_NAME *name)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    if (!bio)
        return NULL;
    /* RFC 2253 flags give the RFC 4514 form: most specific RDN first, specials escaped, and
     * non-ASCII bytes as \XX escapes so the string is safe in JSON and headers alike. */
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
        long n = BIO_get_mem_data(bio, &data);
        out = malloc((size_t)n + 1);
        if (out) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(bio);
    ERR_clear_error();
    return out;
}

int slb_certval_fingerprint(const X509 *x, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    static const char hex[] = "0123456789abcdef";
    if (X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32) {
        ERR_clear_error();
        out[0] = '\0';
        return SLB_EINTERNAL;
    }
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
    return 0;
}

/* The text of one SAN entry (DNS name or IP address) or NULL to skip it. */
static char *san_text(const GENERAL_NAME *g)
{
    int type;
    const ASN1_STRING *s = GENERAL_NAME_get0_value(g, &type);
    const unsigned char *d = ASN1_STRING_get0_data(s);
    int n = ASN1_STRING_length(s);
    char buf[INET6_ADDRSTRLEN];
    if (type == GEN_DNS) {
        /* A NUL or control byte in a DNS name is an attack, not a name to display. */
        for (int i = 0; i < n; i++)
            if (d[i] < 0x21 || d[i] > 0x7e)
                return NULL;
        return strndup((const char *)d, (size_t)n);
    }
    if (type == GEN_IPADD && (n == 4 || n == 16)) {
        if (!inet_ntop(n == 4 ? AF_INET : AF_INET6, d, buf, sizeof(buf)))
            return NULL;
        return strdup(buf);
    }
    return NULL;
}

int slb_certval_sans(const X509 *x, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    ERR_clear_error();
    if (!gens)
        return 0;
    int count = sk_GENERAL_NAME_num(gens), rc = 0;
    char **v = count > 0 ? calloc((size_t)count, sizeof(*v)) : NULL;
    if (count > 0 && !v)
        rc = -ENOMEM;
    for (int i = 0; i < count && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        int type;
        GENERAL_NAME_get0_value(g, &type);
        if (type != GEN_DNS && type != GEN_IPADD)
            continue;
        char *t = san_text(g);
        if (t)
            v[(*n)++] = t;
    }
    GENERAL_NAMES_free(gens);
    if (rc == 0 && *n == 0) {
        free(v);
        v = NULL;
    }
    *out = v;
    return rc;
}
