/* SPDX-License-Identifier: Apache-2.0 */
/* Sealing of values kept in etcd (private keys, tokens): AES-256-GCM under the cluster key,
 * with the etcd key name as associated data, so a sealed value cannot be read by anyone
 * without the key, changed without detection, or moved to another etcd key. */
#ifndef SLB_CLUSTER_SEAL_H
#define SLB_CLUSTER_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

#define SLB_SEAL_KEY_LEN 32
#define SLB_SEAL_VERSION 1
#define SLB_SEAL_NONCE_LEN 12
#define SLB_SEAL_TAG_LEN 16
/* version byte + nonce + ciphertext (as long as the plaintext) + tag */
#define SLB_SEAL_OVERHEAD (1 + SLB_SEAL_NONCE_LEN + SLB_SEAL_TAG_LEN)

/* slb_seal_open: the value is not authentic (wrong key, another name, or changed). */
enum { SLB_SEAL_EAUTH = -10110 };

/* The cluster key. Owned by the control thread for the daemon's life; wiped by
 * slb_seal_deinit. */
struct slb_seal {
    unsigned char key[SLB_SEAL_KEY_LEN];
};

/* Read the key from path: exactly 32 bytes, or 64 hex digits (an optional newline after
 * them), in a regular file of ours that group and others cannot access (mode 0600 or 0400).
 * Anything else is refused with err saying why (code "cluster_key"). */
int slb_seal_load(struct slb_seal *s, const char *path, struct slb_err *err);
/* Use key (32 bytes) directly. */
void slb_seal_init(struct slb_seal *s, const unsigned char key[SLB_SEAL_KEY_LEN]);
void slb_seal_deinit(struct slb_seal *s);

static inline size_t slb_seal_size(size_t plain_len)
{
    return plain_len + SLB_SEAL_OVERHEAD;
}

/* Seal plain for the etcd key name into out (room for slb_seal_size(len) bytes); *out_len gets
 * the sealed size. A fresh random nonce each time. 0 or SLB_EINTERNAL. */
int slb_seal_seal(const struct slb_seal *s, const char *name, const void *plain, size_t len,
                  unsigned char *out, size_t *out_len);
/* Open what slb_seal_seal made for name into out (room for len bytes; *out_len gets
 * len - SLB_SEAL_OVERHEAD). SLB_EINVAL when it is too short or of an unknown version,
 * SLB_SEAL_EAUTH when the authentication fails: a wrong key, another name, or any change;
 * out is then wiped. */
int slb_seal_open(const struct slb_seal *s, const char *name, const void *sealed, size_t len,
                  unsigned char *out, size_t *out_len);

#endif
