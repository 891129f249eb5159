/* SPDX-License-Identifier: Apache-2.0 */
/* PEM input of certificate uploads: our own block scanner (so errors name the field and block,
 * and DH parameters and encrypted keys are caught before OpenSSL sees them), then OpenSSL
 * parsing of certificates, private keys and CRLs. */
#include "cert/validate.h"

#include <errno.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST SLB_CERTVAL_STATUS
/* Larger PEM fields are refused before scanning; a long chain is a few tens of KiB. */
#define CERTVAL_MAX_PEM (1u << 20)
/* Subjects quoted in messages are cut here so a message keeps room for its advice. */
#define CERTVAL_SUBJECT_MAX 100

/* ---------------------------------------------------------------------------------------------
 * PEM block scanning
 * ------------------------------------------------------------------------------------------- */

/* One block found in a field, re-emitted as clean PEM (LF line ends, no indentation, no text
 * around it) so OpenSSL parses exactly this block and nothing else. */
struct pem_block {
    char type[48];
    bool encrypted; /* a "Proc-Type: 4,ENCRYPTED" header */
    char *norm;     /* malloc'd normalized PEM text */
    size_t norm_len;
};

struct pem_scan {
    const char *what; /* field name for messages */
    const char *code; /* error code for malformed input: invalid_pem or invalid_crl */
    struct pem_block blocks[SLB_CERTVAL_MAX_BLOCKS];
    size_t n;
};

static void scan_free(struct pem_scan *sc)
{
    for (size_t i = 0; i < sc->n; i++) {
        /* Key blocks are secrets: do not leave them in freed heap memory. */
        if (sc->blocks[i].norm)
            OPENSSL_cleanse(sc->blocks[i].norm, sc->blocks[i].norm_len);
        free(sc->blocks[i].norm);
    }
    sc->n = 0;
}

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* Growable output for one normalized block. */
struct outbuf {
    char *p;
    size_t len, cap;
};

static int out_put(struct outbuf *o, const char *s, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 1024;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *np = malloc(cap);
        if (!np)
            return -ENOMEM;
        if (o->p) {
            memcpy(np, o->p, o->len);
            OPENSSL_cleanse(o->p, o->len);
            free(o->p);
        }
        o->p = np;
        o->cap = cap;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
    return 0;
}

/* "-----BEGIN X-----" / "-----END X-----": copy X into type and return true. */
static bool marker(const char *line, size_t len, const char *word, char *type, size_t size)
{
    size_t wl = strlen(word);
    if (len < 10 + wl || memcmp(line, "-----", 5) != 0 || memcmp(line + 5, word, wl) != 0 ||
        memcmp(line + len - 5, "-----", 5) != 0)
        return false;
    size_t tl = len - 10 - wl;
    if (tl >= size)
        tl = size - 1;
    memcpy(type, line + 5 + wl, tl);
    type[tl] = '\0';
    return true;
}

static bool starts(const char *line, size_t len, const char *prefix)
{
    size_t pl = strlen(prefix);
    return len >= pl && memcmp(line, prefix, pl) == 0;
}

/* State of the block being read. */
struct cur_block {
    struct outbuf out;
    size_t b64;        /* base64 characters so far */
    size_t pad;        /* '=' characters seen (only at the end) */
    size_t headers;    /* RFC 1421 header lines copied */
    bool body_started; /* headers end at the first base64 line or a blank line */
};

static int scan_body_line(struct pem_scan *sc, struct cur_block *cb, const char *line, size_t len,
                          struct slb_err *err)
{
    struct pem_block *b = &sc->blocks[sc->n];
    if (!cb->body_started && len > 0 && memchr(line, ':', len)) {
        /* RFC 1421 headers: only the encryption marker matters to us; the rest is copied so
         * OpenSSL sees the block as written. */
        if (starts(line, len, "Proc-Type:") && memmem(line, len, "ENCRYPTED", 9))
            b->encrypted = true;
        cb->headers++;
        if (out_put(&cb->out, line, len) || out_put(&cb->out, "\n", 1))
            return -ENOMEM;
        return 0;
    }
    if (!cb->body_started) {
        cb->body_started = true;
        /* OpenSSL wants exactly one blank line between headers and data. */
        if (cb->headers > 0 && out_put(&cb->out, "\n", 1))
            return -ENOMEM;
    }
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = line[i];
        if (c == '=') {
            cb->pad++;
        } else if (is_b64(c) && cb->pad == 0) {
            cb->b64++;
        } else {
            return slb_err_set(err, ST, sc->code, sc->what,
                               "%s block %zu (%s) is not valid base64: unexpected %s; the block "
                               "looks corrupted, paste it again as written by the tool that "
                               "made it",
                               sc->what, sc->n + 1, b->type,
                               is_b64(c) ? "data after '=' padding" : "character");
        }
    }
    if (out_put(&cb->out, line, len) || out_put(&cb->out, "\n", 1))
        return -ENOMEM;
    return 0;
}

/* Split text into PEM blocks. Lines are trimmed of surrounding blanks and CR, so CRLF and
 * indented pastes work; text outside blocks is ignored, but binary bytes anywhere mean the
 * input is not PEM (most likely DER). */
static int pem_scan(struct pem_scan *sc, const char *text, size_t len, struct slb_err *err)
{
    struct cur_block cb = {0};
    bool inside = false;
    int rc = 0;
    sc->n = 0;
    if (len > CERTVAL_MAX_PEM)
        return slb_err_set(err, ST, sc->code, sc->what, "%s is larger than %u KiB", sc->what,
                           CERTVAL_MAX_PEM >> 10);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c == 0x7f)
            return slb_err_set(err, ST, sc->code, sc->what,
                               "%s contains binary data (byte %zu); it must be PEM text "
                               "(-----BEGIN ...-----), not DER; convert it with openssl",
                               sc->what, i);
    }
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *ls = p;
        p = nl ? nl + 1 : end;
        while (ls < le && (*ls == ' ' || *ls == '\t'))
            ls++;
        while (le > ls && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
            le--;
        size_t ll = (size_t)(le - ls);
        char type[48];
        if (!inside) {
            if (marker(ls, ll, "BEGIN ", type, sizeof(type))) {
                if (sc->n == SLB_CERTVAL_MAX_BLOCKS) {
                    rc = slb_err_set(err, ST, sc->code, sc->what, "%s has more than %d PEM blocks",
                                     sc->what, SLB_CERTVAL_MAX_BLOCKS);
                    goto fail;
                }
                memset(&sc->blocks[sc->n], 0, sizeof(sc->blocks[sc->n]));
                snprintf(sc->blocks[sc->n].type, sizeof(sc->blocks[sc->n].type), "%s", type);
                memset(&cb, 0, sizeof(cb));
                if (out_put(&cb.out, ls, ll) || out_put(&cb.out, "\n", 1))
                    goto nomem;
                inside = true;
            } else if (starts(ls, ll, "-----END")) {
                rc = slb_err_set(err, ST, sc->code, sc->what,
                                 "%s block %zu is truncated: it has an END line but no BEGIN "
                                 "line; paste the whole block",
                                 sc->what, sc->n + 1);
                goto fail;
            } else if (starts(ls, ll, "-----BEGIN")) {
                rc = slb_err_set(err, ST, sc->code, sc->what,
                                 "%s block %zu has a malformed BEGIN line", sc->what, sc->n + 1);
                goto fail;
            }
            continue;
        }
        struct pem_block *b = &sc->blocks[sc->n];
        if (marker(ls, ll, "END ", type, sizeof(type))) {
            if (strcmp(type, b->type) != 0) {
                rc = slb_err_set(err, ST, sc->code, sc->what,
                                 "%s block %zu begins as %s but ends as %s; the block is "
                                 "truncated or two blocks were merged",
                                 sc->what, sc->n + 1, b->type, type);
                goto fail;
            }
            if (cb.b64 == 0 || (cb.b64 + cb.pad) % 4 != 0 || cb.pad > 2) {
                rc = slb_err_set(err, ST, sc->code, sc->what,
                                 "%s block %zu (%s) is truncated: its base64 data is %s", sc->what,
                                 sc->n + 1, b->type, cb.b64 == 0 ? "empty" : "cut short");
                goto fail;
            }
            if (out_put(&cb.out, ls, ll) || out_put(&cb.out, "\n", 1))
                goto nomem;
            b->norm = cb.out.p;
            b->norm_len = cb.out.len;
            memset(&cb, 0, sizeof(cb));
            sc->n++;
            inside = false;
        } else if (starts(ls, ll, "-----")) {
            rc = slb_err_set(err, ST, sc->code, sc->what,
                             starts(ls, ll, "-----BEGIN")
                                 ? "%s block %zu (%s) is truncated: it has no END line before "
                                   "the next BEGIN line"
                                 : "%s block %zu (%s) has a malformed END line",
                             sc->what, sc->n + 1, b->type);
            goto fail;
        } else if ((rc = scan_body_line(sc, &cb, ls, ll, err)) != 0) {
            if (rc == -ENOMEM)
                goto nomem;
            goto fail;
        }
    }
    if (inside) {
        rc = slb_err_set(err, ST, sc->code, sc->what,
                         "%s block %zu (%s) is truncated: it has no -----END %s----- line",
                         sc->what, sc->n + 1, sc->blocks[sc->n].type, sc->blocks[sc->n].type);
        goto fail;
    }
    if (sc->n == 0) {
        rc = slb_err_set(err, ST, sc->code, sc->what,
                         "%s holds no PEM block (no -----BEGIN ...----- line found)", sc->what);
        goto fail;
    }
    return 0;
nomem:
    rc = slb_err_set(err, 500, "internal", sc->what, "out of memory");
fail:
    if (cb.out.p) {
        OPENSSL_cleanse(cb.out.p, cb.out.len);
        free(cb.out.p);
    }
    scan_free(sc);
    return rc;
}

/* Diffie-Hellman parameters are looked for in the raw text, before any other check, because
 * pasting them (as nginx setups do) is a common mistake that deserves its own answer. */
static int reject_dh(const char *what, const char *text, size_t len, struct slb_err *err)
{
    if (memmem(text, len, "BEGIN DH PARAMETERS", 19) ||
        memmem(text, len, "BEGIN X9.42 DH PARAMETERS", 25))
        return slb_err_set(err, ST, "dh_parameters_not_supported", what,
                           "%s contains a DH PARAMETERS block; slbd uses only ECDHE key "
                           "exchange, remove the DH parameters from the upload",
                           what);
    return 0;
}

/* Encrypted keys must fail at once instead of prompting on the daemon's terminal. */
static int refuse_password(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* The reason of the last OpenSSL error (never data), then the queue is drained. */
static const char *ossl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* ---------------------------------------------------------------------------------------------
 * Parsing
 * ------------------------------------------------------------------------------------------- */

int slb_certval_parse_certs(const char *what, const char *pem, size_t len, STACK_OF(X509) * *out,
                            struct slb_err *err)
{
    struct pem_scan sc = {.what = what, .code = "invalid_pem"};
    STACK_OF(X509) *certs = NULL;
    *out = NULL;
    int rc = reject_dh(what, pem, len, err);
    if (rc || (rc = pem_scan(&sc, pem, len, err)) != 0)
        return rc;
    certs = sk_X509_new_null();
    if (!certs)
        goto nomem;
    for (size_t i = 0; i < sc.n; i++) {
        const struct pem_block *b = &sc.blocks[i];
        if (strcmp(b->type, "CERTIFICATE") != 0) {
            rc = slb_err_set(err, ST, "invalid_pem", what,
                             "%s block %zu is a %s block; this field takes CERTIFICATE blocks "
                             "only (leaf first, then intermediates)%s",
                             what, i + 1, b->type,
                             strstr(b->type, "PRIVATE KEY") ? "; put the key in private_key" : "");
            goto fail;
        }
        ERR_clear_error();
        BIO *bio = BIO_new_mem_buf(b->norm, (int)b->norm_len);
        if (!bio)
            goto nomem;
        X509 *x = PEM_read_bio_X509(bio, NULL, refuse_password, NULL);
        BIO_free(bio);
        if (!x) {
            rc = slb_err_set(err, ST, "invalid_pem", what,
                             "%s block %zu is not a valid X.509 certificate (%s)", what, i + 1,
                             ossl_reason());
            goto fail;
        }
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            goto nomem;
        }
    }
    scan_free(&sc);
    *out = certs;
    return 0;
nomem:
    rc = slb_err_set(err, 500, "internal", what, "out of memory");
fail:
    sk_X509_pop_free(certs, X509_free);
    scan_free(&sc);
    return rc;
}

/* OpenSSL 3.0's PEM_read_bio_PrivateKey tries every key decoder of every provider, about a
 * millisecond a key: most of start-up with thousands of certificates. A PKCS#8 block whose
 * algorithm we read first (plain ASN.1) is decoded with its structure and key type named,
 * several times faster. NULL (nothing consumed that matters) sends the caller to the generic
 * path, which also gives the error messages. */
static EVP_PKEY *pkcs8_decode(BIO *bio)
{
    char *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long len = 0;
    EVP_PKEY *pkey = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    OSSL_DECODER_CTX *dctx = NULL;
    if (PEM_read_bio(bio, &name, &header, &der, &len) != 1 || strcmp(name, "PRIVATE KEY") != 0 ||
        header[0])
        goto done;
    const unsigned char *p = der;
    const X509_ALGOR *alg = NULL;
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, len);
    if (!p8 || !PKCS8_pkey_get0(NULL, NULL, NULL, &alg, p8))
        goto done;
    const ASN1_OBJECT *oid = NULL;
    X509_ALGOR_get0(&oid, NULL, NULL, alg);
    int nid = OBJ_obj2nid(oid);
    const char *type = nid == NID_X9_62_id_ecPublicKey ? "EC"
                       : nid == NID_rsaEncryption      ? "RSA"
                                                       : NULL;
    if (!type)
        goto done;
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "DER", "PrivateKeyInfo", type, EVP_PKEY_KEYPAIR,
                                         NULL, NULL);
    p = der;
    size_t left = (size_t)len;
    if (!dctx || !OSSL_DECODER_from_data(dctx, &p, &left)) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
done:
    OSSL_DECODER_CTX_free(dctx);
    PKCS8_PRIV_KEY_INFO_free(p8);
    OPENSSL_free(name);
    OPENSSL_free(header);
    if (der)
        OPENSSL_clear_free(der, (size_t)len);
    return pkey;
}

int slb_certval_parse_key(const char *pem, size_t len, EVP_PKEY **out, struct slb_err *err)
{
    static const char *what = "private_key";
    struct pem_scan sc = {.what = what, .code = "invalid_pem"};
    const struct pem_block *key = NULL;
    size_t key_no = 0;
    *out = NULL;
    int rc = reject_dh(what, pem, len, err);
    if (rc || (rc = pem_scan(&sc, pem, len, err)) != 0)
        return rc;
    for (size_t i = 0; i < sc.n; i++) {
        const struct pem_block *b = &sc.blocks[i];
        if (strcmp(b->type, "ENCRYPTED PRIVATE KEY") == 0 || b->encrypted) {
            rc = slb_err_set(err, ST, "encrypted_private_key", what,
                             "private_key block %zu (%s) is encrypted; upload the key without "
                             "a passphrase (openssl pkey -in KEY -out PLAIN)",
                             i + 1, b->type);
            goto done;
        }
        /* openssl ecparam -genkey writes the curve before the key; the key names it again. */
        if (strcmp(b->type, "EC PARAMETERS") == 0)
            continue;
        if (strcmp(b->type, "PRIVATE KEY") != 0 && strcmp(b->type, "RSA PRIVATE KEY") != 0 &&
            strcmp(b->type, "EC PRIVATE KEY") != 0) {
            rc = slb_err_set(err, ST, "invalid_pem", what,
                             "private_key block %zu is a %s block; expected PRIVATE KEY, RSA "
                             "PRIVATE KEY or EC PRIVATE KEY",
                             i + 1, b->type);
            goto done;
        }
        if (key) {
            rc = slb_err_set(err, ST, "invalid_pem", what,
                             "private_key holds two keys (blocks %zu and %zu); give exactly "
                             "the key of the leaf certificate",
                             key_no, i + 1);
            goto done;
        }
        key = b;
        key_no = i + 1;
    }
    if (!key) {
        rc = slb_err_set(err, ST, "invalid_pem", what, "private_key holds no PRIVATE KEY block");
        goto done;
    }
    ERR_clear_error();
    BIO *bio = BIO_new_mem_buf(key->norm, (int)key->norm_len);
    if (!bio) {
        rc = slb_err_set(err, 500, "internal", what, "out of memory");
        goto done;
    }
    *out = strcmp(key->type, "PRIVATE KEY") == 0 ? pkcs8_decode(bio) : NULL;
    if (!*out) {
        ERR_clear_error();
        (void)BIO_reset(bio);
        *out = PEM_read_bio_PrivateKey(bio, NULL, refuse_password, NULL);
    }
    BIO_free(bio);
    if (!*out)
        rc = slb_err_set(err, ST, "invalid_pem", what,
                         "private_key block %zu (%s) is not a valid private key (%s)", key_no,
                         key->type, ossl_reason());
done:
    scan_free(&sc);
    return rc;
}

int slb_certval_crls(const char *pem, size_t len, const X509 *ca, int64_t now, unsigned flags,
                     STACK_OF(X509_CRL) * *crls, STACK_OF(X509) * *issuers, struct slb_err *err)
{
    struct pem_scan sc = {.what = "crl", .code = "invalid_crl"};
    STACK_OF(X509_CRL) *cs = sk_X509_CRL_new_null();
    STACK_OF(X509) *xs = sk_X509_new_null();
    *crls = NULL;
    *issuers = NULL;
    int rc = cs && xs ? pem_scan(&sc, pem, len, err)
                      : slb_err_set(err, 500, "internal", "crl", "out of memory");
    for (size_t i = 0; rc == 0 && i < sc.n; i++) {
        const struct pem_block *b = &sc.blocks[i];
        bool is_crl = strcmp(b->type, "X509 CRL") == 0;
        if (!is_crl && strcmp(b->type, "CERTIFICATE") != 0) {
            rc = slb_err_set(err, ST, "invalid_crl", "crl",
                             "block %zu is a %s block; the field holds X509 CRL blocks and the "
                             "CERTIFICATE blocks of the intermediates that signed them",
                             i + 1, b->type);
            break;
        }
        ERR_clear_error();
        BIO *bio = BIO_new_mem_buf(b->norm, (int)b->norm_len);
        X509_CRL *crl = NULL;
        X509 *x = NULL;
        if (bio && is_crl)
            crl = PEM_read_bio_X509_CRL(bio, NULL, refuse_password, NULL);
        else if (bio)
            x = PEM_read_bio_X509(bio, NULL, refuse_password, NULL);
        BIO_free(bio);
        if (!crl && !x) {
            rc = slb_err_set(err, ST, "invalid_crl", "crl", "block %zu (%s) cannot be parsed (%s)",
                             i + 1, b->type, ossl_reason());
        } else if (crl ? !sk_X509_CRL_push(cs, crl) : !sk_X509_push(xs, x)) {
            X509_CRL_free(crl);
            X509_free(x);
            rc = slb_err_set(err, 500, "internal", "crl", "out of memory");
        }
    }
    if (rc == 0 && sk_X509_CRL_num(cs) == 0)
        rc = slb_err_set(err, ST, "invalid_crl", "crl",
                         "the field holds no X509 CRL block (%zu other block(s))", sc.n);
    if (rc == 0)
        rc = slb_certval_crls_check(ca, cs, xs, now, flags, err);
    if (rc == 0) {
        *crls = cs;
        *issuers = xs;
        cs = NULL;
        xs = NULL;
    }
    sk_X509_CRL_pop_free(cs, X509_CRL_free);
    sk_X509_pop_free(xs, X509_free);
    scan_free(&sc);
    return rc;
}
