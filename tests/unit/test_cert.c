/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for certificate upload validation on a real test PKI made by
 * tests/pki/make-pki.sh: accepted uploads (EC, RSA, key encodings, CRLF, shuffled chains) and
 * every rejection code with a real malformed input. Persistence is in test_certstore.c. */
#include "cert_fixture.h"

/* ---------------------------------------------------------------------------------------------
 * Accepted uploads
 * ------------------------------------------------------------------------------------------- */

static void test_server_ec_chain(void **unused)
{
    char dir[256], path[512], fp[65];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    struct slb_cert *c =
        expect_create_ok(s, server_body("web", pki("server-chain.pem"), pki("server.key")));
    assert_string_equal(c->key_type, "ec-p256");
    assert_int_equal(c->type, SLB_CERT_SERVER);
    assert_int_equal(c->version, 1);
    assert_int_equal(strlen(c->id), 13);
    assert_int_equal(c->id[0], 'c');
    assert_true(slb_certval_id_ok(c->id));
    assert_int_equal(sk_X509_num(c->chain), 1);
    assert_non_null(c->key);
    size_t derlen;
    const char *der = pki_len("server.der", &derlen);
    sha256_hex(der, derlen, fp);
    assert_string_equal(c->fingerprint, fp);
    assert_int_equal(c->nsans, 4);
    assert_true(has_san(c, "localhost") && has_san(c, "www.example.com"));
    assert_true(has_san(c, "*.example.com") && has_san(c, "127.0.0.1"));
    assert_true(c->not_before < c->not_after);
    assert_ptr_equal(slb_certstore_get(s, c->id), c);
    assert_int_equal(slb_certstore_type_of(s, c->id), SLB_CERT_SERVER);
    assert_int_equal(slb_certstore_type_of(s, "nope"), 0);

    json_t *j = slb_cert_to_json(c);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "subject")),
                        "CN=localhost,O=SLB Test");
    assert_string_equal(json_string_value(json_object_get(j, "issuer")),
                        "CN=SLB Test Intermediate CA,O=SLB Test");
    assert_string_equal(json_string_value(json_object_get(j, "fingerprint_sha256")), fp);
    assert_string_equal(json_string_value(json_object_get(j, "type")), "server");
    assert_string_equal(json_string_value(json_object_get(j, "key_type")), "ec-p256");
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
    assert_true(json_is_null(json_object_get(j, "crl")));
    assert_int_equal(json_array_size(json_object_get(j, "sans")), 4);
    const char *na = json_string_value(json_object_get(j, "not_after"));
    assert_non_null(na);
    assert_int_equal(strlen(na), 20);
    assert_true(na[4] == '-' && na[10] == 'T' && na[19] == 'Z');
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, "PRIVATE"));
    free(text);
    json_decref(j);

    /* Stored privately: 0700 directory, 0600 file named after the id. */
    struct stat st;
    snprintf(path, sizeof(path), "%s/certs", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/certs/%s.json", dir, c->id);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    slb_certstore_free(s);
}

static void test_server_rsa_and_key_formats(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    struct slb_cert *c =
        expect_create_ok(s, server_body("rsa", pki("server-rsa-chain.pem"), pki("server-rsa.key")));
    assert_string_equal(c->key_type, "rsa-2048");
    /* "RSA PRIVATE KEY" and "EC PARAMETERS" + "EC PRIVATE KEY" encodings. */
    c = expect_create_ok(
        s, server_body("rsa-trad", pki("server-rsa-chain.pem"), pki("server-rsa-trad.key")));
    assert_string_equal(c->key_type, "rsa-2048");
    c = expect_create_ok(
        s, server_body("ec-trad", pki("server-chain.pem"), pki("server-ec-trad.key")));
    assert_string_equal(c->key_type, "ec-p256");
    /* A leaf alone (no intermediates) is accepted with an empty chain. */
    c = expect_create_ok(s, server_body("alone", pki("server.pem"), pki("server.key")));
    assert_int_equal(sk_X509_num(c->chain), 0);
    slb_certstore_free(s);
}

static void test_crlf_and_surrounding_text(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    char *plain = cat("Here is the bundle from the CA:\n", pki("server-chain.pem"),
                      "\nThanks, the PKI team\n", NULL);
    char *cert = crlf(plain);
    char *key = crlf(pki("server.key"));
    struct slb_cert *c = expect_create_ok(s, server_body("crlf", cert, key));
    assert_int_equal(sk_X509_num(c->chain), 1);
    char fp[65];
    size_t derlen;
    const char *der = pki_len("server.der", &derlen);
    sha256_hex(der, derlen, fp);
    assert_string_equal(c->fingerprint, fp);
    free(plain);
    free(cert);
    free(key);
    slb_certstore_free(s);
}

/* Chain order policy: shuffled bundles are rebuilt leaf -> intermediate, a root is dropped. */
static void test_chain_reordered_and_root_dropped(void **unused)
{
    struct slb_certval_material m;
    struct slb_err err = {0};
    size_t kl;
    const char *key = pki_len("server.key", &kl);
    char *shuffled = cat(pki("inter.pem"), pki("server.pem"), NULL);
    assert_int_equal(slb_certval_material(SLB_CERT_SERVER, shuffled, strlen(shuffled), key, kl,
                                          time(NULL), 0, &m, &err),
                     0);
    assert_true(m.reordered);
    assert_int_equal(sk_X509_num(m.chain), 1);
    char *subj = slb_certval_name_string(X509_get_subject_name(sk_X509_value(m.chain, 0)));
    assert_string_equal(subj, "CN=SLB Test Intermediate CA,O=SLB Test");
    free(subj);
    subj = slb_certval_name_string(X509_get_subject_name(m.leaf));
    assert_string_equal(subj, "CN=localhost,O=SLB Test");
    free(subj);
    slb_certval_material_clear(&m);
    free(shuffled);

    /* Root first, then leaf, then intermediate: still one path, root not served. */
    char *reversed = cat(pki("root.pem"), pki("server.pem"), pki("inter.pem"), NULL);
    assert_int_equal(slb_certval_material(SLB_CERT_SERVER, reversed, strlen(reversed), key, kl,
                                          time(NULL), 0, &m, &err),
                     0);
    assert_true(m.reordered);
    assert_int_equal(sk_X509_num(m.chain), 1);
    slb_certval_material_clear(&m);
    free(reversed);

    /* In order with a trailing root: not "reordered", root dropped. */
    size_t fl;
    const char *full = pki_len("server-full.pem", &fl);
    assert_int_equal(
        slb_certval_material(SLB_CERT_SERVER, full, fl, key, kl, time(NULL), 0, &m, &err), 0);
    assert_false(m.reordered);
    assert_int_equal(sk_X509_num(m.chain), 1);
    slb_certval_material_clear(&m);

    /* Through the store as well. */
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    char *b = cat(pki("inter.pem"), pki("root.pem"), pki("server.pem"), NULL);
    struct slb_cert *c = expect_create_ok(s, server_body("shuffled", b, key));
    assert_int_equal(sk_X509_num(c->chain), 1);
    free(b);
    slb_certstore_free(s);
}

static void test_ca_upload(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    json_t *b = ca_body("clients", pki("inter.pem"));
    json_object_set_new(b, "id", json_string("client-ca"));
    struct slb_cert *c = expect_create_ok(s, b);
    assert_string_equal(c->id, "client-ca");
    assert_int_equal(c->type, SLB_CERT_CA);
    assert_null(c->key);
    assert_null(c->crls);
    assert_int_equal(sk_X509_num(c->chain), 0);
    assert_string_equal(c->key_type, "ec-p256");
    assert_int_equal(slb_certstore_type_of(s, "client-ca"), SLB_CERT_CA);
    /* A self-signed root is a CA too. */
    expect_create_ok(s, ca_body("root", pki("root.pem")));
    slb_certstore_free(s);
}

/* ---------------------------------------------------------------------------------------------
 * Rejections
 * ------------------------------------------------------------------------------------------- */

static void test_reject_material(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    const char *msg;
    const char *key = pki("server.key");

    expect_create_fails(s, server_body("a", pki("server-dh.pem"), key),
                        "dh_parameters_not_supported");
    char *key_dh = cat(key, pki("dh.pem"), NULL);
    expect_create_fails(s, server_body("a", pki("server-chain.pem"), key_dh),
                        "dh_parameters_not_supported");
    free(key_dh);

    msg = expect_create_fails(s, server_body("a", pki("server-chain.pem"), pki("client.key")),
                              "key_mismatch");
    assert_non_null(strstr(msg, "block 1"));

    char *b = cat(pki("expired.pem"), pki("inter.pem"), NULL);
    msg = expect_create_fails(s, server_body("a", b, pki("expired.key")), "expired");
    assert_non_null(strstr(msg, "2021-01-01T00:00:00Z"));
    free(b);
    b = cat(pki("notyet.pem"), pki("inter.pem"), NULL);
    expect_create_fails(s, server_body("a", b, pki("notyet.key")), "not_yet_valid");
    free(b);
    /* A valid leaf under an expired intermediate: the message names the intermediate. */
    b = cat(pki("server-under-expired.pem"), pki("inter-expired.pem"), NULL);
    msg = expect_create_fails(s, server_body("a", b, pki("server-under-expired.key")), "expired");
    assert_non_null(strstr(msg, "block 2"));
    assert_non_null(strstr(msg, "Expired Intermediate"));
    free(b);

    msg = expect_create_fails(s, server_body("a", pki("weak-rsa.pem"), pki("weak-rsa.key")),
                              "weak_key");
    assert_non_null(strstr(msg, "1024"));
    msg = expect_create_fails(s, server_body("a", pki("weak-curve.pem"), pki("weak-curve.key")),
                              "weak_key");
    assert_non_null(strstr(msg, "secp256k1"));

    expect_create_fails(s, server_body("a", pki("server-chain.pem"), pki("server-enc.key")),
                        "encrypted_private_key");
    expect_create_fails(s, server_body("a", pki("server-rsa-chain.pem"), pki("server-rsa-enc.key")),
                        "encrypted_private_key");

    msg = expect_create_fails(s, ca_body("a", pki("server.pem")), "not_a_ca");
    assert_non_null(strstr(msg, "CN=localhost"));
    msg = expect_create_fails(s, ca_body("a", pki("server-chain.pem")), "invalid_pem");
    assert_non_null(strstr(msg, "exactly one"));
    slb_certstore_free(s);
}

static void test_reject_pem(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    const char *key = pki("server.key");
    const char *msg;

    /* Cut in the middle of the base64: no END line. */
    const char *pem = pki("server.pem");
    char *half = strndup(pem, strlen(pem) / 2);
    msg = expect_create_fails(s, server_body("a", half, key), "invalid_pem");
    assert_non_null(strstr(msg, "truncated"));
    assert_non_null(strstr(msg, "certificate block 1"));
    free(half);
    /* END line kept but base64 lines lost. */
    const char *body = strchr(pem, '\n') + 1;
    char *cut = cat("-----BEGIN CERTIFICATE-----\n", body + 130, NULL);
    expect_create_fails(s, server_body("a", cut, key), "invalid_pem");
    free(cut);
    /* The intermediate's block truncated: the message names block 2. */
    char *two = cat(pem, pki("inter.pem"), NULL);
    two[strlen(two) - 30] = '\0';
    msg = expect_create_fails(s, server_body("a", two, key), "invalid_pem");
    assert_non_null(strstr(msg, "block 2"));
    free(two);
    /* A character that is not base64. */
    char *bad = strdup(pem);
    bad[100] = '!';
    msg = expect_create_fails(s, server_body("a", bad, key), "invalid_pem");
    assert_non_null(strstr(msg, "base64"));
    free(bad);
    /* Valid base64 of something that is not a certificate. */
    expect_create_fails(s,
                        server_body("a",
                                    "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQh\n"
                                    "-----END CERTIFICATE-----\n",
                                    key),
                        "invalid_pem");
    expect_create_fails(s, server_body("a", "just some text", key), "invalid_pem");

    /* DER bytes in the JSON string (jansson does not check with _nocheck) and directly. */
    size_t derlen;
    const char *der = pki_len("server.der", &derlen);
    json_t *b = server_body("a", "x", key);
    json_object_set_new(b, "certificate", json_stringn_nocheck(der, derlen));
    msg = expect_create_fails(s, b, "invalid_pem");
    assert_non_null(strstr(msg, "binary"));
    STACK_OF(X509) *certs = NULL;
    struct slb_err err = {0};
    assert_int_not_equal(slb_certval_parse_certs("certificate", der, derlen, &certs, &err), 0);
    assert_string_equal(err.code, "invalid_pem");
    assert_null(certs);

    /* Wrong block types in each field. */
    char *with_key = cat(pem, key, NULL);
    msg = expect_create_fails(s, server_body("a", with_key, key), "invalid_pem");
    assert_non_null(strstr(msg, "block 2"));
    assert_non_null(strstr(msg, "PRIVATE KEY"));
    free(with_key);
    expect_create_fails(s, server_body("a", pem, pki("inter.pem")), "invalid_pem");
    char *two_keys = cat(key, pki("client.key"), NULL);
    expect_create_fails(s, server_body("a", pem, two_keys), "invalid_pem");
    free(two_keys);
    slb_certstore_free(s);
}

static void test_reject_chain(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    const char *key = pki("server.key");
    const char *msg;

    char *b = cat(pki("server.pem"), pki("wrong-inter.pem"), NULL);
    msg = expect_create_fails(s, server_body("a", b, key), "chain_incomplete");
    assert_non_null(strstr(msg, "block 2"));
    free(b);
    /* The intermediate is missing between the leaf and the root. */
    b = cat(pki("server.pem"), pki("root.pem"), NULL);
    msg = expect_create_fails(s, server_body("a", b, key), "chain_incomplete");
    assert_non_null(strstr(msg, "SLB Test Intermediate CA"));
    free(b);
    b = cat(pki("server.pem"), pki("inter.pem"), pki("wrongca.pem"), NULL);
    msg = expect_create_fails(s, server_body("a", b, key), "chain_incomplete");
    assert_non_null(strstr(msg, "block 3"));
    free(b);
    /* The leaf twice: which one is meant cannot be told. */
    b = cat(pki("server.pem"), pki("inter.pem"), pki("server.pem"), NULL);
    msg = expect_create_fails(s, server_body("a", b, key), "chain_order");
    assert_non_null(strstr(msg, "1 and 3"));
    free(b);
    slb_certstore_free(s);
}

static void test_reject_body(void **unused)
{
    char dir[256];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    const char *cert = pki("server-chain.pem"), *key = pki("server.key");
    const char *msg;
    json_t *b;

    expect_create_fails(s, json_array(), "invalid_body");
    b = server_body("a", cert, key);
    json_object_set_new(b, "chain", json_string("x"));
    msg = expect_create_fails(s, b, "invalid_body");
    assert_non_null(strstr(msg, "\"chain\""));
    b = server_body("a", cert, key);
    json_object_del(b, "name");
    expect_create_fails(s, b, "invalid_body");
    char longname[200];
    memset(longname, 'n', 128);
    longname[128] = '\0';
    expect_create_fails(s, server_body(longname, cert, key), "invalid_body");
    expect_create_fails(s, server_body("tab\there", cert, key), "invalid_body");
    expect_create_fails(s, server_body("", cert, key), "invalid_body");
    b = server_body("a", cert, key);
    json_object_set_new(b, "type", json_string("client"));
    expect_create_fails(s, b, "invalid_body");
    b = server_body("a", cert, key);
    json_object_del(b, "type");
    expect_create_fails(s, b, "invalid_body");
    b = server_body("a", cert, key);
    json_object_del(b, "certificate");
    expect_create_fails(s, b, "invalid_body");
    b = server_body("a", cert, key);
    json_object_set_new(b, "certificate", json_integer(1));
    expect_create_fails(s, b, "invalid_body");
    b = server_body("a", cert, key);
    json_object_del(b, "private_key");
    msg = expect_create_fails(s, b, "invalid_body");
    assert_non_null(strstr(msg, "private_key"));
    b = ca_body("a", pki("inter.pem"));
    json_object_set_new(b, "private_key", json_string(pki("inter.key")));
    expect_create_fails(s, b, "invalid_body");
    const char *bad_ids[] = {
        "..", ".",      "a/b",
        "",   "sp ace", "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        b = server_body("a", cert, key);
        json_object_set_new(b, "id", json_string(bad_ids[i]));
        expect_create_fails(s, b, "invalid_body");
    }
    assert_true(slb_certval_id_ok("a.b_c-9"));
    assert_true(slb_certval_name_ok("Zertifikat für www"));

    /* Nothing of the above was stored. */
    json_t *list = slb_certstore_list(s);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);

    /* name_taken and id_taken need a first certificate. */
    b = server_body("web", cert, key);
    json_object_set_new(b, "id", json_string("web-1"));
    expect_create_ok(s, b);
    expect_create_fails(s, server_body("web", cert, key), "name_taken");
    b = server_body("web2", cert, key);
    json_object_set_new(b, "id", json_string("web-1"));
    expect_create_fails(s, b, "id_taken");
    slb_certstore_free(s);
}

static void test_derived_helpers(void **unused)
{
    char buf[32];
    slb_certval_rfc3339(0, buf, sizeof(buf));
    assert_string_equal(buf, "1970-01-01T00:00:00Z");
    slb_certval_rfc3339(1798761600, buf, sizeof(buf));
    assert_string_equal(buf, "2027-01-01T00:00:00Z");
    char type[16];
    struct slb_err err = {0};
    EVP_PKEY *k = NULL;
    assert_int_equal(
        slb_certval_parse_key(pki("server-rsa.key"), strlen(pki("server-rsa.key")), &k, &err), 0);
    assert_int_equal(slb_certval_key_type(k, "test", type, &err), 0);
    assert_string_equal(type, "rsa-2048");
    EVP_PKEY_free(k);
    /* Ed25519 is refused as an unsupported key type. */
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    assert_non_null(ed);
    assert_int_not_equal(slb_certval_key_type(ed, "test", type, &err), 0);
    assert_string_equal(err.code, "weak_key");
    assert_non_null(strstr(err.msg, "ED25519"));
    EVP_PKEY_free(ed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_ec_chain),
        cmocka_unit_test(test_server_rsa_and_key_formats),
        cmocka_unit_test(test_crlf_and_surrounding_text),
        cmocka_unit_test(test_chain_reordered_and_root_dropped),
        cmocka_unit_test(test_ca_upload),
        cmocka_unit_test(test_reject_material),
        cmocka_unit_test(test_reject_pem),
        cmocka_unit_test(test_reject_chain),
        cmocka_unit_test(test_reject_body),
        cmocka_unit_test(test_derived_helpers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
