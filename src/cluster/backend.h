/* SPDX-License-Identifier: Apache-2.0 */
/* etcd as a state backend (state/backend.h) for cluster mode, over the etcd client. */
#ifndef SLB_CLUSTER_BACKEND_H
#define SLB_CLUSTER_BACKEND_H

#include "state/backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Documents as keys PREFIX<key> of etcd (through its v3 JSON gateway), revisions are the keys'
 * mod_revision. Values of "certs/<id>" and "tickets" are sealed (cluster/seal.h) under the
 * cluster key with their etcd key as associated data: etcd never holds a private key.
 * Every call is synchronous and bounded: it runs a private event loop until etcd answered or
 * call_timeout_ms passed (-> SLB_BACKEND_EUNAVAILABLE), except a call made from a coroutine,
 * which waits on the control loop (slb_backend_etcd_set_async). cache (owned, may be NULL) is the
 * node's state directory: every document read from or written to etcd is written through to it, and
 * reads fall back to it while etcd is unreachable, so a node restarts from its cache. */
struct slb_etcd_opts;
struct slb_backend *slb_backend_etcd_new(const struct slb_etcd_opts *opts, const char *prefix,
                                         const unsigned char key[32], struct slb_backend *cache,
                                         struct slb_err *err);
/* The highest etcd store revision seen by any call (0 before the first answer), and whether
 * the last call reached etcd. */
int64_t slb_backend_etcd_revision(struct slb_backend *b);
bool slb_backend_etcd_online(struct slb_backend *b);
/* While offline is set (the watch knows etcd is out of reach) writes fail at once with
 * SLB_BACKEND_EUNAVAILABLE and reads come from the cache: nothing waits for a timeout. */
void slb_backend_etcd_set_offline(struct slb_backend *b, bool offline);
/* The etcd key of document key ("/slbd/" "config"). */
void slb_backend_etcd_key(struct slb_backend *b, const char *key, char *out, size_t size);
/* Seeding: when no "config" document exists in etcd, store every document of the cache
 * (config, certs/<id>, tickets) in one transaction that only succeeds while "config" is still
 * absent (another node seeding at the same time wins or loses as a whole). *seeded tells
 * whether this call did it. 0, or SLB_BACKEND_EUNAVAILABLE / another code. */
int slb_backend_etcd_seed(struct slb_backend *b, bool *seeded);
/* Whether revision rev is one of this backend's own recent writes (its watch event needs no
 * applying: the write was applied before it was answered). */
bool slb_backend_etcd_own(struct slb_backend *b, int64_t rev);
/* Revoke lease (a node leaving: its registration and leadership go at once). */
int slb_backend_etcd_revoke(struct slb_backend *b, int64_t lease);
/* Asynchronous calls: a call made from a coroutine (event/coro.h; the admin API runs each
 * write in one) is sent through etcd, a client on the control loop, and the coroutine yields
 * until it is answered, so the loop goes on meanwhile. etcd NULL: abort (below). */
struct slb_loop;
struct slb_etcd;
void slb_backend_etcd_set_async(struct slb_backend *b, struct slb_loop *loop,
                                struct slb_etcd *etcd);
/* Whether a coroutine waits for etcd now (b may be any backend, or NULL). */
bool slb_backend_etcd_waiting(struct slb_backend *b);
/* Stop asynchronous calls (the loop stops): a waiting call fails as unreachable and its
 * coroutine runs on at once; its later calls, and every call after this, are synchronous. */
void slb_backend_etcd_abort(struct slb_backend *b);
/* The revision of this backend's newest write (0 before the first). */
int64_t slb_backend_etcd_last_write(struct slb_backend *b);
/* Write a document another node stored through to the cache (data NULL: delete it). */
void slb_backend_etcd_cache(struct slb_backend *b, const char *key, const char *data, size_t len);
/* A sealed value of etcd key name as the document's bytes (plain for config); *out owned
 * (wipe and free). For the watch, which receives values directly. */
int slb_backend_etcd_decode(struct slb_backend *b, const char *name, const char *value, size_t len,
                            char **out, size_t *out_len);

#endif
