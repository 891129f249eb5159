/* SPDX-License-Identifier: Apache-2.0 */
/* Where the daemon's state is kept: one interface over revisioned documents, so the state
 * directory (today's behaviour, the default) and a shared store such as etcd are
 * interchangeable. Callers never see files: they load a document by key, put one against the
 * revision they based it on, delete one, list those under a prefix, and watch for changes made
 * by others.
 *
 * The document model. Every piece of persistent state is a document: a key, the bytes of its
 * JSON, and a revision that changes on every write.
 *   "config"          the configuration document (schema of docs/configuration.md)
 *   "certs/<id>"      one certificate bundle: material, private key, and its CRLs with the
 *                     intermediates that signed them (a CRL is part of its CA's document, so
 *                     a CA and its revocation data change together)
 *   "tickets"         the session ticket key ring
 * The admin token and the state lock are local to a machine and not documents.
 *
 * Revisions are opaque non-zero numbers compared for equality only (the directory uses a
 * hash of the bytes; etcd would use the key's mod_revision). A put names the revision it
 * expects: SLB_REV_ANY (unconditional), SLB_REV_ABSENT (create only) or the revision read;
 * when the stored one differs the put fails with SLB_ECONFLICT and changes nothing. A
 * successful write is atomic and durable: a reader sees the old document or the new one,
 * never a part. All calls are made on the control thread. */
#ifndef SLB_STATE_BACKEND_H
#define SLB_STATE_BACKEND_H

#include "core/err.h"
#include "state/jsoncache.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SLB_REV_ANY UINT64_MAX
#define SLB_REV_ABSENT 0

#define SLB_DOC_CONFIG "config"
#define SLB_DOC_TICKETS "tickets"
#define SLB_DOC_CERTS "certs/" /* prefix of the certificate documents */

#define SLB_DOC_KEY_MAX 96

/* A shared store that cannot be reached now (every etcd endpoint down): callers answer 503
 * cluster_unavailable and keep serving what they have. */
#define SLB_BACKEND_EUNAVAILABLE (-10120)

/* One document as read: data is NUL-terminated and owned by whoever holds the struct (free
 * with slb_doc_clear, which wipes it: certificate documents hold private keys). */
struct slb_doc {
    char key[SLB_DOC_KEY_MAX];
    uint64_t rev;
    char *data;
    size_t len;
};

void slb_doc_clear(struct slb_doc *d);

struct slb_backend;

/* A change made by someone else (another node, an operator's tool): the document as it is now
 * (deleted: data NULL, rev 0). Borrowed for the call. */
typedef void (*slb_backend_watch_fn)(const struct slb_doc *doc, void *arg);
/* Called for each key of a list, in order; a non-zero return stops the list and is returned
 * by it. */
typedef int (*slb_backend_list_fn)(const char *key, void *arg);

/* What a backend implements. Every function returns 0 or a negative code: -ENOENT (get, del
 * of an absent key), SLB_ECONFLICT (revision mismatch), -EFBIG (larger than max), -EROFS (a
 * read-only backend), another -errno or SLB_E* for a failure of the store. Only a refusal
 * that is the backend's own policy fills err (get: SLB_EINVAL, e.g. a secret file others can
 * read); otherwise callers phrase the error with slb_backend_where, as they did when they
 * owned files. */
struct slb_backend_ops {
    const char *name; /* "dir", "etcd" */
    /* Others write too (nodes of a cluster): a writer must put against the revision it read,
     * and watch. False for the directory, whose lock makes us its only writer, so the daemon
     * keeps writing unconditionally there (a hand edit of config.json that was not reloaded
     * is overwritten by the next change, as it always was). */
    bool shared;
    int (*get)(struct slb_backend *b, const char *key, size_t max, struct slb_doc *out,
               struct slb_err *err);
    /* The keys under prefix, in byte order (keys only: a caller that refuses a name need not
     * read it). */
    int (*list)(struct slb_backend *b, const char *prefix, slb_backend_list_fn fn, void *arg);
    int (*put)(struct slb_backend *b, const char *key, const void *data, size_t len,
               uint64_t expect, uint64_t *rev);
    int (*del)(struct slb_backend *b, const char *key, uint64_t expect);
    /* Register fn for changes under prefix made by others; a backend with one writer (the
     * directory, held by its lock) never calls it. */
    int (*watch)(struct slb_backend *b, const char *prefix, slb_backend_watch_fn fn, void *arg);
    /* A place a person can look at, for messages ("DIR/certs/c1.json"; a prefix: "DIR/certs"). */
    void (*where)(struct slb_backend *b, const char *key, char *out, size_t size);
    void (*free)(struct slb_backend *b);
};

/* Implementations embed this first and zero the rest. */
struct slb_backend {
    const struct slb_backend_ops *ops;
    /* The text of the "config" document last written through this backend, by piece, so the
     * next write serializes only what changed (config/state.c; created on first use). */
    struct slb_json_cache *config_text;
};

static inline int slb_backend_get(struct slb_backend *b, const char *key, size_t max,
                                  struct slb_doc *out, struct slb_err *err)
{
    return b->ops->get(b, key, max, out, err);
}
static inline int slb_backend_list(struct slb_backend *b, const char *prefix,
                                   slb_backend_list_fn fn, void *arg)
{
    return b->ops->list(b, prefix, fn, arg);
}
static inline int slb_backend_put(struct slb_backend *b, const char *key, const void *data,
                                  size_t len, uint64_t expect, uint64_t *rev)
{
    return b->ops->put(b, key, data, len, expect, rev);
}
static inline int slb_backend_del(struct slb_backend *b, const char *key, uint64_t expect)
{
    return b->ops->del(b, key, expect);
}
static inline int slb_backend_watch(struct slb_backend *b, const char *prefix,
                                    slb_backend_watch_fn fn, void *arg)
{
    return b->ops->watch(b, prefix, fn, arg);
}
static inline void slb_backend_where(struct slb_backend *b, const char *key, char *out, size_t size)
{
    b->ops->where(b, key, out, size);
}
static inline void slb_backend_free(struct slb_backend *b)
{
    if (b) {
        slb_json_cache_free(b->config_text);
        b->ops->free(b);
    }
}

/* --- the state directory (src/state/dir.c) --- */

/* Documents as files of dir, exactly as slbd always kept them: "config" is config.json,
 * "tickets" tickets.json, "certs/<id>" certs/<id>.json; every file 0600, written through a
 * temporary file, fsync and rename (core/fsio.h), so a torn write is never visible. Files
 * holding secrets (certificates, ticket keys) that group or others can access are refused by
 * get (state_insecure). The directory's single writer is guaranteed by the state lock
 * (config/state.h), so a revision check and the rename that follows cannot race.
 * A readonly backend refuses writes (a missing certs/ then lists empty). Creating one touches
 * nothing; NULL with err when dir is unusable as a path or memory is short. */
struct slb_backend *slb_backend_dir_new(const char *dir, bool readonly, struct slb_err *err);
/* Make certs/ ready before certificates are loaded: created 0700 when missing and closed to
 * group and others (a readonly backend only checks, and accepts a missing one): 0 or err. */
int slb_backend_dir_prepare(struct slb_backend *b, struct slb_err *err);
/* The revision the directory gives data (a hash of its bytes, never 0 or SLB_REV_ANY). */
uint64_t slb_backend_dir_rev(const void *data, size_t len);

/* The etcd backend of cluster mode is in src/cluster/backend.h (a layer above: it runs over
 * the etcd client). */

#endif
