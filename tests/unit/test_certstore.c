/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the certificate store on a real test PKI: persistence across reopen, replace
 * and delete with their files, corrupt files refusing start-up, CRLs, and the periodic expiry
 * and stale-CRL warnings. Upload validation is in test_cert.c. */
#include "cert_fixture.h"

#include "state/backend.h"

/* ---------------------------------------------------------------------------------------------
 * Persistence
 * ------------------------------------------------------------------------------------------- */

static void test_persist_reopen(void **unused)
{
    char dir[256], id[64], fp[65], path[512];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    struct slb_cert *c =
        expect_create_ok(s, server_body("web", pki("server-full.pem"), pki("server.key")));
    snprintf(id, sizeof(id), "%s", c->id);
    snprintf(fp, sizeof(fp), "%s", c->fingerprint);
    json_t *b = ca_body("clients", pki("inter.pem"));
    json_object_set_new(b, "id", json_string("b-ca"));
    expect_create_ok(s, b);
    slb_certstore_free(s);

    /* Leftovers of interrupted writes and foreign files are ignored. */
    snprintf(path, sizeof(path), "%s/certs", dir);
    assert_int_equal(slb_fs_write_atomic(path, ".web.json.1.0.tmp", "{", 1, 0600), 0);
    assert_int_equal(slb_fs_write_atomic(path, "README", "x", 1, 0600), 0);

    s = open_store(dir);
    c = slb_certstore_get(s, id);
    assert_non_null(c);
    assert_string_equal(c->fingerprint, fp);
    assert_string_equal(c->name, "web");
    assert_int_equal(c->version, 1);
    assert_int_equal(sk_X509_num(c->chain), 1);
    EVP_PKEY *orig = NULL;
    assert_int_equal(slb_certval_parse_key(pki("server.key"), strlen(pki("server.key")), &orig,
                                           &(struct slb_err){0}),
                     0);
    assert_int_equal(EVP_PKEY_eq(orig, c->key), 1);
    EVP_PKEY_free(orig);
    assert_int_equal(slb_certstore_type_of(s, "b-ca"), SLB_CERT_CA);

    /* The list is sorted by id and never carries the key. */
    json_t *list = slb_certstore_list(s);
    assert_int_equal(json_array_size(list), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")), "b-ca");
    char *text = json_dumps(list, 0);
    assert_null(strstr(text, "PRIVATE"));
    free(text);
    json_decref(list);

    /* The stored file holds the key as PKCS#8 and the chain without the root. */
    char *file = NULL;
    snprintf(path, sizeof(path), "%s/certs/%s.json", dir, id);
    assert_int_equal(slb_fs_read_all(path, 1 << 20, &file, NULL), 0);
    json_t *doc = json_loads(file, 0, NULL);
    assert_non_null(doc);
    assert_non_null(strstr(json_string_value(json_object_get(doc, "private_key")),
                           "-----BEGIN PRIVATE KEY-----"));
    const char *stored = json_string_value(json_object_get(doc, "certificate"));
    assert_non_null(stored);
    assert_non_null(strstr(stored, "-----END CERTIFICATE-----"));
    assert_null(strstr(strstr(strstr(stored, "END CERT") + 1, "END CERT") + 1, "END CERT"));
    assert_string_equal(json_string_value(json_object_get(doc, "id")), id);
    json_decref(doc);
    free(file);
    slb_certstore_free(s);
}

static void test_replace_and_delete(void **unused)
{
    char dir[256], path[512];
    struct slb_err err = {0};
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    json_t *b = server_body("web", pki("server-chain.pem"), pki("server.key"));
    json_object_set_new(b, "id", json_string("web"));
    struct slb_cert *old = expect_create_ok(s, b);
    expect_create_ok(s, server_body("other", pki("server-chain.pem"), pki("server.key")));
    slb_cert_ref(old); /* as a TLS context would */

    b = json_pack("{s:s, s:s}", "certificate", pki("server-rsa-chain.pem"), "private_key",
                  pki("server-rsa.key"));
    struct slb_cert *c = NULL;
    assert_int_equal(slb_certstore_replace(s, "web", b, &c, &err), 0);
    json_decref(b);
    assert_non_null(c);
    assert_ptr_not_equal(c, old);
    assert_int_equal(c->version, 2);
    assert_string_equal(c->name, "web");
    assert_string_equal(c->key_type, "rsa-2048");
    assert_ptr_equal(slb_certstore_get(s, "web"), c);
    /* The old version is intact for its holder. */
    assert_string_equal(old->key_type, "ec-p256");
    assert_int_equal(old->version, 1);
    char *subj = slb_certval_name_string(X509_get_subject_name(old->leaf));
    assert_string_equal(subj, "CN=localhost,O=SLB Test");
    free(subj);
    slb_cert_unref(old);

    /* Replace errors. */
    b = server_body("web", pki("server-chain.pem"), pki("server.key"));
    assert_int_not_equal(slb_certstore_replace(s, "missing", b, &c, &err), 0);
    assert_string_equal(err.code, "not_found");
    assert_int_equal(err.status, 404);
    json_object_set_new(b, "type", json_string("ca"));
    assert_int_not_equal(slb_certstore_replace(s, "web", b, &c, &err), 0);
    assert_string_equal(err.code, "invalid_body");
    json_object_set_new(b, "type", json_string("server"));
    json_object_set_new(b, "name", json_string("other"));
    assert_int_not_equal(slb_certstore_replace(s, "web", b, &c, &err), 0);
    assert_string_equal(err.code, "name_taken");
    json_object_set_new(b, "name", json_string("web"));
    json_object_set_new(b, "private_key", json_string(pki("client.key")));
    assert_int_not_equal(slb_certstore_replace(s, "web", b, &c, &err), 0);
    assert_string_equal(err.code, "key_mismatch");
    json_decref(b);
    assert_int_equal(slb_certstore_get(s, "web")->version, 2);
    slb_certstore_free(s);

    /* The file has the new version. */
    s = open_store(dir);
    c = slb_certstore_get(s, "web");
    assert_non_null(c);
    assert_int_equal(c->version, 2);
    assert_string_equal(c->key_type, "rsa-2048");

    assert_int_equal(slb_certstore_delete(s, "web", &err), 0);
    assert_null(slb_certstore_get(s, "web"));
    struct stat st;
    snprintf(path, sizeof(path), "%s/certs/web.json", dir);
    assert_int_equal(stat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_not_equal(slb_certstore_delete(s, "web", &err), 0);
    assert_string_equal(err.code, "not_found");
    slb_certstore_free(s);
    s = open_store(dir);
    json_t *list = slb_certstore_list(s);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);
    slb_certstore_free(s);
}

/* Write name into DIR/certs with content and expect open to fail naming that file. */
static void expect_open_fails(const char *dir, const char *name, const char *content,
                              const char *code)
{
    char certs[512];
    struct slb_err err = {0};
    snprintf(certs, sizeof(certs), "%s/certs", dir);
    assert_int_equal(slb_fs_write_atomic(certs, name, content, strlen(content), 0600), 0);
    struct slb_certstore *s = slb_certstore_open(dir, &err);
    assert_null(s);
    if (strcmp(err.code, code) != 0)
        fail_msg("expected %s, got %s: %s", code, err.code, err.msg);
    assert_non_null(strstr(err.where, name));
    assert_non_null(strstr(err.msg, name));
    assert_no_key_in(err.msg);
    assert_int_equal(slb_fs_remove(certs, name), 0);
}

static void test_corrupt_files(void **unused)
{
    char dir[256], path[512];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    json_t *b = server_body("web", pki("server-chain.pem"), pki("server.key"));
    json_object_set_new(b, "id", json_string("web"));
    expect_create_ok(s, b);
    slb_certstore_free(s);
    char *good = NULL;
    snprintf(path, sizeof(path), "%s/certs/web.json", dir);
    assert_int_equal(slb_fs_read_all(path, 1 << 20, &good, NULL), 0);

    expect_open_fails(dir, "bad.json", "{\"id\": ", "invalid_json");
    expect_open_fails(dir, "bad.json", "[]", "invalid_state");
    /* A copy under another file name: the id no longer matches the name. */
    expect_open_fails(dir, "copy.json", good, "invalid_state");

    json_t *doc = json_loads(good, 0, NULL);
    json_object_set_new(doc, "id", json_string("tampered"));
    json_object_set_new(doc, "name", json_string("tampered"));
    json_object_set_new(doc, "private_key", json_string(pki("client.key")));
    char *text = json_dumps(doc, 0);
    expect_open_fails(dir, "tampered.json", text, "key_mismatch");
    free(text);
    json_object_set_new(doc, "private_key", json_string(pki("server.key")));
    json_object_set_new(doc, "certificate", json_string("-----BEGIN CERTIFICATE-----\nAAAA\n"));
    text = json_dumps(doc, 0);
    expect_open_fails(dir, "tampered.json", text, "invalid_pem");
    free(text);
    /* A stored certificate that has expired since still loads. */
    char *chain = cat(pki("expired.pem"), pki("inter.pem"), NULL);
    json_object_set_new(doc, "certificate", json_string(chain));
    json_object_set_new(doc, "private_key", json_string(pki("expired.key")));
    text = json_dumps(doc, 0);
    snprintf(path, sizeof(path), "%s/certs", dir);
    assert_int_equal(slb_fs_write_atomic(path, "tampered.json", text, strlen(text), 0600), 0);
    s = open_store(dir);
    struct slb_cert *c = slb_certstore_get(s, "tampered");
    assert_non_null(c);
    char when[32];
    slb_certval_rfc3339(c->not_after, when, sizeof(when));
    assert_string_equal(when, "2021-01-01T00:00:00Z");
    slb_certstore_free(s);
    free(text);
    free(chain);
    json_decref(doc);
    free(good);
}

/* ---------------------------------------------------------------------------------------------
 * CRLs and periodic checks
 * ------------------------------------------------------------------------------------------- */

static int set_crl(struct slb_certstore *s, const char *id, const char *file, char *code)
{
    struct slb_err err = {0};
    int rc = slb_certstore_set_crl(s, id, file ? pki(file) : "garbage", &err);
    snprintf(code, 48, "%s", rc ? err.code : "");
    return rc;
}

static void test_crl(void **unused)
{
    char dir[256], code[48];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    json_t *b = ca_body("clients", pki("inter.pem"));
    json_object_set_new(b, "id", json_string("ca"));
    struct slb_cert *old = expect_create_ok(s, b);
    slb_cert_ref(old);
    b = server_body("web", pki("server-chain.pem"), pki("server.key"));
    json_object_set_new(b, "id", json_string("web"));
    expect_create_ok(s, b);

    assert_int_not_equal(set_crl(s, "ca", "wrongca.crl", code), 0);
    assert_string_equal(code, "crl_signature");
    assert_int_not_equal(set_crl(s, "ca", "inter-future.crl", code), 0);
    assert_string_equal(code, "invalid_crl");
    assert_int_not_equal(set_crl(s, "ca", NULL, code), 0);
    assert_string_equal(code, "invalid_crl");
    assert_int_not_equal(set_crl(s, "ca", "inter.pem", code), 0);
    assert_string_equal(code, "invalid_crl");
    assert_int_not_equal(set_crl(s, "web", "inter.crl", code), 0);
    assert_string_equal(code, "not_a_ca");
    assert_int_not_equal(set_crl(s, "nope", "inter.crl", code), 0);
    assert_string_equal(code, "not_found");
    assert_int_equal(slb_certstore_get(s, "ca")->version, 1);

    assert_int_equal(set_crl(s, "ca", "inter.crl", code), 0);
    struct slb_cert *c = slb_certstore_get(s, "ca");
    assert_ptr_not_equal(c, old);
    assert_null(old->crls);
    slb_cert_unref(old);
    assert_int_equal(c->version, 2);
    assert_int_equal(sk_X509_CRL_num(c->crls), 1);
    json_t *j = slb_cert_to_json(c);
    json_t *crl = json_object_get(j, "crl");
    assert_true(json_is_object(crl));
    assert_int_equal(json_integer_value(json_object_get(crl, "revoked")), 1);
    assert_true(json_is_string(json_object_get(crl, "this_update")));
    assert_true(json_is_string(json_object_get(crl, "next_update")));
    json_decref(j);
    assert_int_equal(slb_certstore_crl_stale(s), 0);

    /* Replacing the CA with itself keeps its CRL. */
    b = json_pack("{s:s}", "certificate", pki("inter.pem"));
    struct slb_err err = {0};
    assert_int_equal(slb_certstore_replace(s, "ca", b, &c, &err), 0);
    json_decref(b);
    assert_int_equal(c->version, 3);
    assert_non_null(c->crls);
    slb_certstore_free(s);

    s = open_store(dir);
    c = slb_certstore_get(s, "ca");
    assert_non_null(c->crls);
    assert_int_equal(c->version, 3);
    /* An old CRL (past nextUpdate) is accepted and counted as stale. */
    assert_int_equal(set_crl(s, "ca", "inter-stale.crl", code), 0);
    assert_int_equal(slb_certstore_crl_stale(s), 1);
    slb_certstore_free(s);
}

static int set_crl_pem(struct slb_certstore *s, const char *id, char *pem, char *code)
{
    struct slb_err err = {0};
    int rc = slb_certstore_set_crl(s, id, pem, &err);
    snprintf(code, 48, "%s", rc ? err.code : "");
    free(pem);
    return rc;
}

/* A root CA's CRL set may hold an intermediate's CRL when the intermediate comes with it and
 * chains to the root; it survives a restart with its intermediate. */
static void test_crl_of_intermediate(void **unused)
{
    char dir[256], code[48];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    json_t *b = ca_body("roots", pki("root.pem"));
    json_object_set_new(b, "id", json_string("root"));
    expect_create_ok(s, b);

    /* Without the intermediate nothing vouches for its CRL. */
    assert_int_not_equal(set_crl(s, "root", "inter.crl", code), 0);
    assert_string_equal(code, "crl_signature");
    /* An intermediate of another CA does not chain to this one. */
    assert_int_not_equal(
        set_crl_pem(s, "root", cat(pki("wrong-inter.pem"), pki("inter.crl"), NULL), code), 0);
    assert_string_equal(code, "crl_signature");
    /* Two CRLs of one issuer. */
    assert_int_not_equal(
        set_crl_pem(s, "root",
                    cat(pki("inter.pem"), pki("inter.crl"), pki("inter-stale.crl"), NULL), code),
        0);
    assert_string_equal(code, "invalid_crl");
    /* No CRL at all. */
    assert_int_not_equal(set_crl_pem(s, "root", cat(pki("inter.pem"), NULL), code), 0);
    assert_string_equal(code, "invalid_crl");
    assert_int_equal(slb_certstore_get(s, "root")->version, 1);

    /* Either order of the blocks. */
    assert_int_equal(set_crl_pem(s, "root", cat(pki("inter.crl"), pki("inter.pem"), NULL), code),
                     0);
    struct slb_cert *c = slb_certstore_get(s, "root");
    assert_int_equal(sk_X509_CRL_num(c->crls), 1);
    assert_int_equal(sk_X509_num(c->crl_issuers), 1);
    json_t *j = slb_cert_to_json(c);
    json_t *crl = json_object_get(j, "crl");
    assert_int_equal(json_integer_value(json_object_get(crl, "revoked")), 1);
    json_t *one = json_array_get(json_object_get(crl, "crls"), 0);
    assert_string_equal(json_string_value(json_object_get(one, "issuer")),
                        "CN=SLB Test Intermediate CA,O=SLB Test");
    json_decref(j);
    slb_certstore_free(s);

    s = open_store(dir);
    c = slb_certstore_get(s, "root");
    assert_int_equal(sk_X509_CRL_num(c->crls), 1);
    assert_int_equal(sk_X509_num(c->crl_issuers), 1);
    assert_int_equal(c->version, 2);
    slb_certstore_free(s);
}

/* Run the store's tick with stderr captured and return how often needle was logged. */
static int count_logged(struct slb_certstore *s, int ticks, const char *needle)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/log.txt", root_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    for (int i = 0; i < ticks; i++)
        slb_certstore_tick(s);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fd);
    char *text = NULL;
    assert_int_equal(slb_fs_read_all(path, 1 << 20, &text, NULL), 0);
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    free(text);
    return n;
}

/* Cluster mode: a certificate another node stored is taken from its document as is (nothing
 * written here); an invalid one leaves the previous version; NULL deletes it. */
static void test_adopt(void **unused)
{
    char dir1[256], dir2[256], path[512];
    struct slb_err err = {0};
    new_state(dir1, sizeof(dir1));
    new_state(dir2, sizeof(dir2));
    struct slb_certstore *a = open_store(dir1);
    json_t *b = server_body("web", pki("server-full.pem"), pki("server.key"));
    json_object_set_new(b, "id", json_string("web"));
    struct slb_cert *c = expect_create_ok(a, b);
    char fp[65];
    snprintf(fp, sizeof(fp), "%s", c->fingerprint);
    char *file = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/certs/web.json", dir1);
    assert_int_equal(slb_fs_read_all(path, 1 << 20, &file, &len), 0);

    struct slb_certstore *other = open_store(dir2);
    assert_int_equal(slb_certstore_adopt(other, "web", file, len, 7, &err), 0);
    c = slb_certstore_get(other, "web");
    assert_non_null(c);
    assert_string_equal(c->fingerprint, fp);
    assert_int_equal(slb_certstore_rev(other, "web"), 7);
    assert_string_equal(c->name, "web");
    snprintf(path, sizeof(path), "%s/certs/web.json", dir2);
    assert_int_equal(access(path, F_OK), -1);
    /* Adopting it again (a resync) replaces it by an equal one. */
    assert_int_equal(slb_certstore_adopt(other, "web", file, len, 7, &err), 0);
    assert_int_equal(slb_certstore_count(other), 1);
    /* A broken document is refused and the previous version stays. */
    assert_int_not_equal(slb_certstore_adopt(other, "web", "{\"id\":\"web\"}", 12, 8, &err), 0);
    assert_non_null(slb_certstore_get(other, "web"));
    assert_int_not_equal(slb_certstore_adopt(other, "web", "not json", 8, 8, &err), 0);
    assert_non_null(slb_certstore_get(other, "web"));
    assert_int_equal(slb_certstore_rev(other, "web"), 7);
    /* Deleted by another node. */
    assert_int_equal(slb_certstore_adopt(other, "web", NULL, 0, 0, &err), 0);
    assert_null(slb_certstore_get(other, "web"));
    assert_int_equal(slb_certstore_count(other), 0);
    free(file);
    slb_certstore_free(other);
    slb_certstore_free(a);
}

/* The state directory with the "shared" flag set: a store then writes against the revision it
 * read, as it does on etcd, and the directory's revision check stands in for etcd's txn. */
static struct slb_backend_ops shared_ops;

static struct slb_backend *shared_dir(const char *dir)
{
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_non_null(b);
    assert_int_equal(slb_backend_dir_prepare(b, &err), 0);
    shared_ops = *b->ops;
    shared_ops.shared = true;
    b->ops = &shared_ops;
    return b;
}

/* Two nodes change the same certificate from the same revision: the second is 409 conflict
 * and changes nothing; after taking the first's version it can change it. */
static void test_shared_write_conflict(void **unused)
{
    char dir[256];
    struct slb_err err = {0};
    new_state(dir, sizeof(dir));
    struct slb_backend *ba = shared_dir(dir), *bb = shared_dir(dir);
    struct slb_certstore *a = slb_certstore_open_backend(ba, false, &err);
    assert_non_null(a);
    json_t *body = server_body("web", pki("server-full.pem"), pki("server.key"));
    json_object_set_new(body, "id", json_string("web"));
    expect_create_ok(a, body);
    struct slb_certstore *b = slb_certstore_open_backend(bb, false, &err);
    assert_non_null(b);
    uint64_t r0 = slb_certstore_rev(b, "web");
    assert_true(r0 != 0);
    assert_int_equal(slb_certstore_rev(a, "web"), r0);
    assert_int_equal(slb_certstore_rename(a, "web", "first", &err), 0);
    assert_true(slb_certstore_rev(a, "web") != r0);
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(slb_certstore_rename(b, "web", "second", &err), 0);
    assert_int_equal(err.status, 409);
    assert_string_equal(err.code, "conflict");
    assert_string_equal(slb_certstore_get(b, "web")->name, "web");
    /* Deleting from a stale revision is refused the same way. */
    memset(&err, 0, sizeof(err));
    assert_int_not_equal(slb_certstore_delete(b, "web", &err), 0);
    assert_string_equal(err.code, "conflict");
    assert_non_null(slb_certstore_get(b, "web"));
    slb_certstore_free(b);
    slb_certstore_free(a);
    slb_backend_free(ba);
    slb_backend_free(bb);
}

static void test_tick_warnings(void **unused)
{
    char dir[256], code[48];
    new_state(dir, sizeof(dir));
    struct slb_certstore *s = open_store(dir);
    char *chain = cat(pki("soon.pem"), pki("inter.pem"), NULL);
    json_t *b = server_body("soon", chain, pki("soon.key"));
    json_object_set_new(b, "id", json_string("soon"));
    free(chain);
    expect_create_ok(s, b);
    b = ca_body("clients", pki("inter.pem"));
    json_object_set_new(b, "id", json_string("ca"));
    expect_create_ok(s, b);
    assert_int_equal(set_crl(s, "ca", "inter-stale.crl", code), 0);

    enum slb_log_level lvl = slb_log_min;
    slb_log_set_level("warn");
    /* Ten days left: the 30-day warning once, not yet the 7-day one. */
    assert_int_equal(count_logged(s, 3, "certificate soon (soon) expires within 30 days"), 1);
    assert_int_equal(count_logged(s, 3, "expires within"), 0);
    slb_log_min = lvl;
    slb_certstore_free(s);

    /* The stale CRL is reported once per version (a fresh store starts over). */
    s = open_store(dir);
    slb_log_set_level("warn");
    assert_int_equal(count_logged(s, 3, "its CRL was due for renewal"), 1);
    slb_log_min = lvl;
    slb_certstore_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_persist_reopen),
        cmocka_unit_test(test_replace_and_delete),
        cmocka_unit_test(test_corrupt_files),
        cmocka_unit_test(test_crl),
        cmocka_unit_test(test_crl_of_intermediate),
        cmocka_unit_test(test_tick_warnings),
        cmocka_unit_test(test_adopt),
        cmocka_unit_test(test_shared_write_conflict),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
