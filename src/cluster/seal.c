/* SPDX-License-Identifier: Apache-2.0 */
/* AES-256-GCM sealing of cluster values: version byte, 96-bit random nonce, ciphertext, tag;
 * the version byte and the etcd key name are authenticated as associated data. */
#include "cluster/seal.h"

#include "core/fsio.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEAL_ERR_STATUS 500

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int slb_seal_load(struct slb_seal *s, const char *path, struct slb_err *err)
{
    memset(s, 0, sizeof(*s));
    unsigned char buf[80];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return slb_err_set(err, SEAL_ERR_STATUS, "cluster_key", path,
                           "cannot open the cluster key %s: %s", path, strerror(errno));
    struct stat st;
    int rc;
    if (fstat(fd, &st) < 0) {
        rc = slb_err_set(err, SEAL_ERR_STATUS, "cluster_key", path,
                         "cannot use the cluster key %s: %s", path, strerror(errno));
        goto out;
    }
    rc = slb_fs_check_secret(path, &st, "cluster_key", "", err);
    if (rc)
        goto out;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
        rc = slb_err_set(err, SEAL_ERR_STATUS, "cluster_key", path,
                         "cannot read the cluster key %s: %s", path, strerror(errno));
        goto out;
    }
    size_t len = (size_t)n;
    if (len == SLB_SEAL_KEY_LEN) {
        memcpy(s->key, buf, SLB_SEAL_KEY_LEN);
        rc = 0;
        goto out;
    }
    while (len > 2 * SLB_SEAL_KEY_LEN && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len == 2 * SLB_SEAL_KEY_LEN) {
        rc = 0;
        for (size_t i = 0; i < SLB_SEAL_KEY_LEN && rc == 0; i++) {
            int hi = hexval(buf[2 * i]), lo = hexval(buf[2 * i + 1]);
            if (hi < 0 || lo < 0)
                rc = -1;
            else
                s->key[i] = (unsigned char)(hi << 4 | lo);
        }
        if (rc == 0)
            goto out;
    }
    OPENSSL_cleanse(s->key, sizeof(s->key));
    rc = slb_err_set(err, SEAL_ERR_STATUS, "cluster_key", path,
                     "the cluster key %s must hold 32 random bytes, or 64 hex digits "
                     "(e.g. made with: openssl rand -hex 32 > %s; chmod 600 %s)",
                     path, path, path);
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return rc;
}

void slb_seal_init(struct slb_seal *s, const unsigned char key[SLB_SEAL_KEY_LEN])
{
    memcpy(s->key, key, SLB_SEAL_KEY_LEN);
}

void slb_seal_deinit(struct slb_seal *s)
{
    OPENSSL_cleanse(s->key, sizeof(s->key));
}

/* One GCM pass; enc selects sealing or opening. tag is written (seal) or checked (open). */
static int gcm(const struct slb_seal *s, int enc, const unsigned char *nonce, const char *name,
               const unsigned char *in, size_t len, unsigned char *out, unsigned char *tag)
{
    static const unsigned char version = SLB_SEAL_VERSION;
    int rc = SLB_EINTERNAL, n;
    ERR_clear_error();
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        goto fail;
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, SLB_SEAL_NONCE_LEN, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, s->key, nonce, enc) != 1)
        goto fail;
    /* Associated data: the format version and the name the value belongs to. */
    if (EVP_CipherUpdate(ctx, NULL, &n, &version, 1) != 1 ||
        EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)name, (int)strlen(name)) != 1)
        goto fail;
    if (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1)
        goto fail;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, SLB_SEAL_TAG_LEN, tag) != 1)
        goto fail;
    if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1) {
        rc = enc ? SLB_EINTERNAL : SLB_SEAL_EAUTH;
        goto fail;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, SLB_SEAL_TAG_LEN, tag) != 1)
        goto fail;
    rc = 0;
fail:
    ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int slb_seal_seal(const struct slb_seal *s, const char *name, const void *plain, size_t len,
                  unsigned char *out, size_t *out_len)
{
    if (len > INT32_MAX - SLB_SEAL_OVERHEAD)
        return SLB_ETOOBIG;
    out[0] = SLB_SEAL_VERSION;
    unsigned char *nonce = out + 1;
    if (RAND_bytes(nonce, SLB_SEAL_NONCE_LEN) != 1) {
        ERR_clear_error();
        return SLB_EINTERNAL;
    }
    unsigned char *ct = nonce + SLB_SEAL_NONCE_LEN;
    int rc = gcm(s, 1, nonce, name, plain, len, ct, ct + len);
    if (rc == 0)
        *out_len = slb_seal_size(len);
    return rc;
}

int slb_seal_open(const struct slb_seal *s, const char *name, const void *sealed, size_t len,
                  unsigned char *out, size_t *out_len)
{
    const unsigned char *in = sealed;
    if (len < SLB_SEAL_OVERHEAD || len > INT32_MAX || in[0] != SLB_SEAL_VERSION)
        return SLB_EINVAL;
    size_t clen = len - SLB_SEAL_OVERHEAD;
    const unsigned char *nonce = in + 1;
    const unsigned char *ct = nonce + SLB_SEAL_NONCE_LEN;
    unsigned char tag[SLB_SEAL_TAG_LEN];
    memcpy(tag, ct + clen, sizeof(tag));
    int rc = gcm(s, 0, nonce, name, ct, clen, out, tag);
    if (rc < 0) {
        OPENSSL_cleanse(out, clen);
        return rc;
    }
    *out_len = clen;
    return 0;
}
