/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of cluster value sealing: round trips, the bound etcd key name, tampering, and
 * the refusal of key files that others can read or that hold the wrong amount of key. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "cluster/seal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char key1[32] = "0123456789abcdef0123456789abcde";
static const unsigned char key2[32] = "fedcba9876543210fedcba987654321";

static void test_round_trip(void **state)
{
    struct slb_seal s;
    slb_seal_init(&s, key1);
    const char *plain = "-----BEGIN PRIVATE KEY-----\nsecret\n";
    size_t len = strlen(plain);
    unsigned char sealed[128], sealed2[128], out[128];
    size_t slen, slen2, olen;
    assert_int_equal(slb_seal_seal(&s, "/slbd/certs/a/key", plain, len, sealed, &slen), 0);
    assert_int_equal(slen, len + SLB_SEAL_OVERHEAD);
    assert_int_equal(sealed[0], SLB_SEAL_VERSION);
    assert_null(memmem(sealed, slen, "secret", 6));
    assert_int_equal(slb_seal_open(&s, "/slbd/certs/a/key", sealed, slen, out, &olen), 0);
    assert_int_equal(olen, len);
    assert_memory_equal(out, plain, len);
    /* A fresh nonce every time: the same value seals differently. */
    assert_int_equal(slb_seal_seal(&s, "/slbd/certs/a/key", plain, len, sealed2, &slen2), 0);
    assert_int_equal(slen2, slen);
    assert_memory_not_equal(sealed + 1, sealed2 + 1, SLB_SEAL_NONCE_LEN);
    /* Empty values seal too. */
    assert_int_equal(slb_seal_seal(&s, "k", "", 0, sealed, &slen), 0);
    assert_int_equal(slen, SLB_SEAL_OVERHEAD);
    assert_int_equal(slb_seal_open(&s, "k", sealed, slen, out, &olen), 0);
    assert_int_equal(olen, 0);
    slb_seal_deinit(&s);
}

static void test_open_refuses_tampering(void **state)
{
    struct slb_seal s, other;
    slb_seal_init(&s, key1);
    slb_seal_init(&other, key2);
    const char *plain = "token-value";
    size_t len = strlen(plain);
    unsigned char sealed[64], bad[64], out[64];
    size_t slen, olen;
    assert_int_equal(slb_seal_seal(&s, "/slbd/a", plain, len, sealed, &slen), 0);
    /* Moved to another key. */
    assert_int_equal(slb_seal_open(&s, "/slbd/b", sealed, slen, out, &olen), SLB_SEAL_EAUTH);
    /* Another cluster key. */
    assert_int_equal(slb_seal_open(&other, "/slbd/a", sealed, slen, out, &olen), SLB_SEAL_EAUTH);
    /* Any flipped bit: nonce, ciphertext, tag. */
    for (size_t i = 1; i < slen; i++) {
        memcpy(bad, sealed, slen);
        bad[i] ^= 0x01;
        assert_int_equal(slb_seal_open(&s, "/slbd/a", bad, slen, out, &olen), SLB_SEAL_EAUTH);
    }
    /* An unknown version, a truncated value. */
    memcpy(bad, sealed, slen);
    bad[0] = 2;
    assert_int_equal(slb_seal_open(&s, "/slbd/a", bad, slen, out, &olen), SLB_EINVAL);
    assert_int_equal(slb_seal_open(&s, "/slbd/a", sealed, SLB_SEAL_OVERHEAD - 1, out, &olen),
                     SLB_EINVAL);
    assert_int_equal(slb_seal_open(&s, "/slbd/a", sealed, slen - 1, out, &olen), SLB_SEAL_EAUTH);
}

static char dir[64];

static void write_key(const char *name, const void *data, size_t len, mode_t mode)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    assert_int_equal(chmod(path, mode), 0);
}

static int load(const char *name, struct slb_seal *s, struct slb_err *err)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    slb_err_clear(err);
    return slb_seal_load(s, path, err);
}

static void test_load_key_file(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/slb-seal-XXXXXX");
    assert_non_null(mkdtemp(dir));
    struct slb_seal s;
    struct slb_err err;
    const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n";
    write_key("raw", key1, 32, 0600);
    write_key("hex", hex, strlen(hex), 0400);
    write_key("open", key1, 32, 0644);
    write_key("group", key1, 32, 0640);
    write_key("short", key1, 31, 0600);
    write_key("badhex", "zz", 2, 0600);

    assert_int_equal(load("raw", &s, &err), 0);
    assert_memory_equal(s.key, key1, 32);
    assert_int_equal(load("hex", &s, &err), 0);
    for (int i = 0; i < 32; i++)
        assert_int_equal(s.key[i], i);

    assert_int_equal(load("open", &s, &err), SLB_EINVAL);
    assert_string_equal(err.code, "cluster_key");
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_non_null(strstr(err.msg, "0644"));
    assert_int_equal(load("group", &s, &err), SLB_EINVAL);
    assert_non_null(strstr(err.msg, "0640"));
    assert_int_equal(load("short", &s, &err), SLB_EINVAL);
    assert_non_null(strstr(err.msg, "32 random bytes"));
    assert_int_equal(load("badhex", &s, &err), SLB_EINVAL);
    assert_int_equal(load("missing", &s, &err), SLB_EINVAL);
    assert_non_null(strstr(err.msg, "No such file"));

    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_open_refuses_tampering),
        cmocka_unit_test(test_load_key_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
