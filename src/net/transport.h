/* SPDX-License-Identifier: Apache-2.0 */
/* Transports as an ops table: a connection's bytes go through plain sockets or TLS behind the
 * same three calls, so the HTTP proxy is written once. I/O calls return >0 bytes moved,
 * 0 would block, SLB_EEOF at the peer's orderly end, or another negative code. */
#ifndef SLB_NET_TRANSPORT_H
#define SLB_NET_TRANSPORT_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

struct slb_tconn;
struct slb_ratelimit;

struct slb_transport {
    const char *name;
    /* 1 done, 0 in progress (see rd_wants/wr_wants), <0 failed. */
    int (*handshake)(struct slb_tconn *t);
    ssize_t (*recv)(struct slb_tconn *t, void *buf, size_t len);
    ssize_t (*send)(struct slb_tconn *t, const void *buf, size_t len);
    /* Bytes already decrypted and waiting inside the transport (no socket event will come). */
    bool (*pending)(struct slb_tconn *t);
    /* Best-effort orderly close (TLS close_notify); never blocks. */
    void (*shutdown)(struct slb_tconn *t);
    void (*free)(struct slb_tconn *t);
};

/* One end of a connection. rd_wants/wr_wants say which socket readiness the last recv/send
 * (or handshake) needs: TLS may need to write in order to read and the other way round. */
struct slb_tconn {
    int fd;
    const struct slb_transport *ops;
    SSL *ssl;
    uint32_t rd_wants, wr_wants;
    bool rd_ready, wr_ready; /* last known socket readiness (cleared on EAGAIN) */
    bool handshake_done;
    bool corked;              /* TCP_CORK is on (slb_tconn_cork) */
    uint64_t raw_in, raw_out; /* wire bytes of a plain socket */
    /* Egress shaping (a listener's limits.bandwidth_mbps), off while shape is NULL: each send
     * takes its bytes from the shared budget; what the budget could not cover is owed, and
     * sends answer "would block" until slb_tconn_repay has paid it. Not touched by the init
     * functions: set once by slb_tconn_shape. */
    struct slb_ratelimit *shape;
    uint64_t shape_rate; /* bytes per second */
    int shape_worker;
    uint64_t owed;
};

extern const struct slb_transport slb_transport_raw;
extern const struct slb_transport slb_transport_tls;

void slb_tconn_init_raw(struct slb_tconn *t, int fd);
/* Takes ownership of ssl; binds it to fd for the server side. 0 or -ENOMEM. */
int slb_tconn_init_tls(struct slb_tconn *t, int fd, SSL *ssl);
/* Shape what t sends to rate bytes per second from budget r, as worker (core/ratelimit.h). */
void slb_tconn_shape(struct slb_tconn *t, struct slb_ratelimit *r, uint64_t rate, int worker);
/* Pay what t owes from the budget: 0 when nothing is owed any more (sends go again), else the
 * milliseconds after which to try again. While t->owed is non-zero the connection must not
 * wait for writability (the socket is writable: a level-triggered loop would spin) but for
 * this time instead. */
uint64_t slb_tconn_repay(struct slb_tconn *t);

/* Bytes on the wire so far in each direction (TLS records, handshakes and alerts included). */
void slb_tconn_wire(const struct slb_tconn *t, uint64_t *in, uint64_t *out);
/* Hold what is sent next in the kernel, to leave in as few packets as possible: the last bytes
 * of a response, the TLS close_notify and the FIN of a connection that closes after it. A
 * shutdown(SHUT_WR) sends what is held with the FIN (a close with unread bytes would reset
 * instead); slb_tconn_uncork does when the connection stays open. */
void slb_tconn_cork(struct slb_tconn *t);
void slb_tconn_uncork(struct slb_tconn *t);
/* A lingering close, for a peer that may still be sending: TLS close_notify and our FIN (with
 * what the cork holds) now; then slb_tconn_drain reads and drops what still comes, raw, until
 * it returns false (the peer's FIN or an error: close the socket), for a bounded time.
 * Closing with unread bytes would make the kernel send a reset, which may destroy what the
 * peer has not read yet. */
void slb_tconn_linger(struct slb_tconn *t);
/* Adds the bytes dropped to *dropped (they are wire bytes in). */
bool slb_tconn_drain(struct slb_tconn *t, uint64_t *dropped);

#endif
