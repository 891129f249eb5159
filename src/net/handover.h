/* SPDX-License-Identifier: Apache-2.0 */
/* Upgrade without dropping a connection: the running slbd hands its listening sockets, its
 * admin socket and its state-directory lock to a new process over DIR/upgrade.sock
 * (SOCK_SEQPACKET, SCM_RIGHTS), as HAProxy's -x and nginx's USR2 do. This module is the
 * wire: messages, descriptor passing and the new side's request.
 * The decisions (freeze, stop, drain) are the control thread's (src/daemon/control.c).
 *
 * The conversation, one message per line below (fds in brackets travel with the message):
 *   new -> old   "upgrade PID"
 *   old -> new   "busy" (another upgrade is in progress: the end)
 *             or "refused WHY" (it cannot hand over now: the end)
 *             or "lock" [lock fd], "admin ADDR:PORT" [fd], "listen ADDR:PORT NAME" [one fd
 *                per worker]..., in cluster mode "cluster LEASE NODE PREFIX" (its etcd lease,
 *                node name and key prefix, daemon/cluster.h), "end"
 *   new -> old   "ready PID" once the new process serves on every socket (or it closes the
 *                connection: it failed, and the old one goes on as before)
 *   old -> new   "done" once the old one stopped accepting and writing to the state
 *                directory: the new one owns it from then on. */
#ifndef SLB_NET_HANDOVER_H
#define SLB_NET_HANDOVER_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SLB_HANDOVER_SOCK "upgrade.sock"
#define SLB_HANDOVER_MAX_FDS 64 /* SLB_MAX_WORKERS sockets of one address in one message */
#define SLB_HANDOVER_MSG 256

/* A listening address received from the old process: one SO_REUSEPORT socket per old
 * worker. Consumed by the socket registry (config/snapshot.c), which takes the fds it
 * adopts (sets them to -1) and closes the rest. */
struct slb_inherited_sock {
    char key[96];  /* normalized "addr:port", the registry's key */
    char name[64]; /* a listener using it (for the log) */
    int nfds;
    int fds[SLB_HANDOVER_MAX_FDS];
    struct slb_inherited_sock *next;
};

/* The new process's side of a hand-over, from the request until "done". */
struct slb_handover {
    int conn; /* the connection to the old process */
    pid_t old_pid;
    int lock_fd;  /* the old process's locked DIR/lock (the same open file: the same flock) */
    int admin_fd; /* -1 when the old one sent none */
    char admin_key[96];
    char cluster[SLB_HANDOVER_MSG]; /* "LEASE NODE PREFIX" in cluster mode, else "" */
    struct slb_inherited_sock *socks;
};

/* Create DIR/upgrade.sock (0600, a stale one is replaced: only the lock holder calls this)
 * and listen on it; *fd is non-blocking. */
int slb_handover_listen(const char *dir, int *fd, struct slb_err *err);

/* One message with up to nfds descriptors; 0 or -errno. Blocking. */
int slb_handover_send(int fd, const char *msg, const int *fds, int nfds);
/* One message: its text (NUL-terminated) and descriptors. Returns the text length, 0 at
 * EOF, -errno on failure. Descriptors beyond maxfds are closed (SLB_EPROTO). */
ssize_t slb_handover_recv(int fd, char *msg, size_t size, int *fds, int *nfds, int maxfds);

/* The new side: connect to DIR/upgrade.sock, ask, and receive every descriptor. On failure
 * err says why (no slbd answering, another upgrade in progress, a broken conversation). */
int slb_handover_request(const char *dir, struct slb_handover *h, struct slb_err *err);
/* Tell the old process we serve, and wait for its "done" (at most timeout_ms). */
int slb_handover_commit(struct slb_handover *h, int timeout_ms, struct slb_err *err);
/* Close everything not taken (the connection too: the old process goes on when it fails). */
void slb_handover_deinit(struct slb_handover *h);

struct sockaddr_storage;
/* The normalized "addr:port" of an address ("[addr]:port" for IPv6): the socket registry's
 * key, and how both sides name a socket. */
void slb_handover_addr_key(const struct sockaddr_storage *ss, char *out, size_t size);

#endif
