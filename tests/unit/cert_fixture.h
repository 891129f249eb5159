/* SPDX-License-Identifier: Apache-2.0 */
/* Shared fixture of the certificate unit tests (test_cert.c, test_certstore.c): the test PKI
 * made by tests/pki/make-pki.sh in a temporary directory, file access, upload bodies and
 * assertions. Included by one test binary each, so its state is per binary. */
#ifndef SLB_TEST_CERT_FIXTURE_H
#define SLB_TEST_CERT_FIXTURE_H

/* cmocka needs these in this order; keep clang-format from sorting them. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cert/store.h"
#include "cert/validate.h"
#include "core/fsio.h"
#include "core/log.h"

/* The PKI and the per-test state directories live under one mkdtemp directory. */
static char root_dir[64];
static char pki_dir[128];

/* PKI files are read once and kept until the group ends. */
#define MAX_FILES 64
static struct {
    char name[48];
    char *data;
    size_t len;
} files[MAX_FILES];
static size_t nfiles;

static inline const char *pki_len(const char *name, size_t *len)
{
    for (size_t i = 0; i < nfiles; i++) {
        if (strcmp(files[i].name, name) == 0) {
            if (len)
                *len = files[i].len;
            return files[i].data;
        }
    }
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pki_dir, name);
    assert_true(nfiles < MAX_FILES);
    int rc = slb_fs_read_all(path, 1 << 20, &files[nfiles].data, &files[nfiles].len);
    if (rc != 0)
        fail_msg("cannot read %s: %s", path, strerror(-rc));
    snprintf(files[nfiles].name, sizeof(files[nfiles].name), "%s", name);
    if (len)
        *len = files[nfiles].len;
    return files[nfiles++].data;
}

static inline const char *pki(const char *name)
{
    return pki_len(name, NULL);
}

/* Concatenation of NULL-terminated strings; the caller frees. */
static inline char *cat(const char *first, ...)
{
    size_t len = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        len += strlen(s);
    va_end(ap);
    char *out = malloc(len + 1), *p = out;
    assert_non_null(out);
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *)) {
        memcpy(p, s, strlen(s));
        p += strlen(s);
    }
    va_end(ap);
    *p = '\0';
    return out;
}

/* The text with every LF turned into CRLF. */
static inline char *crlf(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 1), *p = out;
    assert_non_null(out);
    for (; *s; s++) {
        if (*s == '\n')
            *p++ = '\r';
        *p++ = *s;
    }
    *p = '\0';
    return out;
}

static inline json_t *server_body(const char *name, const char *cert, const char *key)
{
    json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "name", name, "type", "server", "certificate",
                          cert, "private_key", key);
    assert_non_null(b);
    return b;
}

static inline json_t *ca_body(const char *name, const char *cert)
{
    json_t *b = json_pack("{s:s, s:s, s:s}", "name", name, "type", "ca", "certificate", cert);
    assert_non_null(b);
    return b;
}

/* A fresh state directory for one test. */
static inline void new_state(char *dir, size_t size)
{
    static int seq;
    snprintf(dir, size, "%s/state%d", root_dir, seq++);
    assert_int_equal(mkdir(dir, 0700), 0);
}

static inline struct slb_certstore *open_store(const char *dir)
{
    struct slb_err err = {0};
    struct slb_certstore *s = slb_certstore_open(dir, &err);
    if (!s)
        fail_msg("open failed: %s: %s", err.code, err.msg);
    return s;
}

/* No part of a private key may leak into an error: neither PEM armour nor key bytes. */
static inline void assert_no_key_in(const char *text)
{
    assert_null(strstr(text, "PRIVATE KEY-----"));
    const char *keys[] = {"server.key", "server-rsa.key", "client.key"};
    for (size_t i = 0; i < 3; i++) {
        const char *k = pki(keys[i]);
        const char *line2 = strchr(k, '\n') + 1;
        char frag[24];
        snprintf(frag, sizeof(frag), "%.20s", line2);
        assert_null(strstr(text, frag));
    }
}

/* Create must fail with code; the body is consumed. Returns the message for more checks. */
static inline const char *expect_create_fails(struct slb_certstore *s, json_t *body,
                                              const char *code)
{
    static struct slb_err err;
    struct slb_cert *c = (struct slb_cert *)1;
    memset(&err, 0, sizeof(err));
    int rc = slb_certstore_create(s, body, &c, &err);
    json_decref(body);
    if (rc == 0 || strcmp(err.code, code) != 0)
        fail_msg("expected %s, got rc %d code '%s': %s", code, rc, err.code, err.msg);
    assert_null(c);
    assert_int_equal(err.status, strcmp(code, "storage_failed") == 0 ? 500 : 400);
    assert_true(strlen(err.msg) > 10);
    assert_no_key_in(err.msg);
    return err.msg;
}

static inline struct slb_cert *expect_create_ok(struct slb_certstore *s, json_t *body)
{
    struct slb_err err = {0};
    struct slb_cert *c = NULL;
    int rc = slb_certstore_create(s, body, &c, &err);
    json_decref(body);
    if (rc != 0)
        fail_msg("create failed: %s: %s", err.code, err.msg);
    assert_non_null(c);
    return c;
}

/* Lowercase hex SHA-256 of a file's bytes (the DER certificate), computed independently. */
static inline void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, len, md, &n, EVP_sha256(), NULL), 1);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static inline bool has_san(const struct slb_cert *c, const char *san)
{
    for (size_t i = 0; i < c->nsans; i++)
        if (strcmp(c->sans[i], san) == 0)
            return true;
    return false;
}

static inline int group_setup(void **state)
{
    snprintf(root_dir, sizeof(root_dir), "/tmp/slb-test-cert-XXXXXX");
    if (!mkdtemp(root_dir))
        return -1;
    snprintf(pki_dir, sizeof(pki_dir), "%s/pki", root_dir);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "sh tests/pki/make-pki.sh %s", pki_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "make-pki.sh failed (run the tests from the repository root)\n");
        return -1;
    }
    /* Store logs are not under test except where a test captures them. */
    slb_log_set_level("error");
    return 0;
}

static inline int group_teardown(void **state)
{
    for (size_t i = 0; i < nfiles; i++)
        free(files[i].data);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root_dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
