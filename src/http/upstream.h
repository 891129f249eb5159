/* SPDX-License-Identifier: Apache-2.0 */
/* Connections from a worker to backend servers for the HTTP proxy, and the worker's pool of
 * kept-alive ones. A pooled connection belongs to the pool (keyed by the server's address, so
 * it outlives configuration changes); an active one belongs to the client connection using it.
 * A connection goes back to the pool only after a complete exchange that both sides agreed to
 * keep alive: never with a response still pending. */
#ifndef SLB_HTTP_UPSTREAM_H
#define SLB_HTTP_UPSTREAM_H

#include "config/config.h"
#include "core/buf.h"
#include "http/gzip.h"
#include "http/parser.h"
#include "http/rewrite.h"
#include "lb/health.h"
#include "net/worker_ctx.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct http_up;
struct slb_http_worker;
struct http_xchg;

typedef void (*slb_up_cb)(struct http_up *up, uint32_t events);

struct http_up {
    int fd;
    struct slb_io io;
    struct slb_timer idle; /* while pooled */
    struct slb_http_worker *hw;
    void *owner; /* the client connection using it; NULL while pooled */
    slb_up_cb cb;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t key;
    struct slb_buf in;    /* bytes from the backend */
    struct slb_hbuf head; /* request head to send */
    bool connected, reused, rd_ready, wr_ready, pooled;
    int send_err; /* errno of a failed send: the backend reset the connection */
    /* The server whose active-request count this connection holds while a request uses it
     * (see slb_up_count_start); NULL while pooled. Closing or pooling the connection gives the
     * count back, so every way an exchange ends releases it exactly once. */
    struct slb_srv_rt *srv;
    uint64_t bytes_to, bytes_from;
    uint64_t connect_us;         /* when the connect started, for the connect histogram */
    struct http_up *next, *prev; /* pool bucket */
};

#define SLB_POOL_BUCKETS 64
#define SLB_POOL_IDLE_MS 15000
#define SLB_POOL_MAX_PER_WORKER 1024

/* Per-worker HTTP state: the pool and a scratch parse result (too big for each connection). */
struct slb_http_worker {
    struct slb_worker *w;
    struct http_up *buckets[SLB_POOL_BUCKETS];
    size_t npooled;
    struct slb_http_msg msg;
    /* Exchange states HTTP/1.x connections gave back (see http/xchg.h), for the next request. */
    struct http_xchg *xchg_free;
    size_t nxchg_free;
    /* Response-head buffers those connections gave back (see http/xchg.h). */
    struct head_mem *heads;
    size_t nheads;
    /* Compressors responses gave back (http/gzip.h). */
    struct slb_gzip_pool gz_pool;
};

struct slb_http_worker *slb_http_worker_get(struct slb_worker *w);

/* Whether up->in can take more bytes: room at its end, or at its front (slb_up_read moves the
 * bytes down first) once none of what is left is ready to go (ready: body bytes at its front
 * waiting to be sent). A chunked body decoded and sent from the front of a full buffer leaves
 * its room there while the rest of a chunk's framing waits: a reader that looked at the end
 * alone would wait forever. While bytes are ready, sending them makes the room, without a
 * move. */
static inline bool slb_up_room(const struct http_up *up, uint64_t ready)
{
    return slb_buf_space(&up->in) > 0 || (up->in.off > 0 && ready == 0);
}

/* Take a kept-alive connection to srv from the pool, or start a new connect. Returns NULL
 * with *err set (-errno) when a socket cannot be created. */
struct http_up *slb_up_acquire(struct slb_http_worker *hw, const struct slb_server_cfg *srv,
                               void *owner, slb_up_cb cb, int *err);
/* A new connection to srv, never one from the pool (a retry after a pooled one failed). */
struct http_up *slb_up_connect(struct slb_http_worker *hw, const struct slb_server_cfg *srv,
                               void *owner, slb_up_cb cb, int *err);
/* An event on up: finishes a connect in progress and notes the readiness. Returns 1 when the
 * connect just completed, 0, or -errno when it failed. */
int slb_up_on_event(struct http_up *up, uint32_t events);
/* Read what fits into up->in. >0 bytes read, 0 would block (rd_ready cleared), SLB_EEOF at
 * the backend's close, -errno on an error. An empty buffer goes back to the pool. A close
 * after a failed send is that send's error: the kernel reports a reset once, to whichever
 * call comes first, so the end of the stream after it is not an orderly close. */
ssize_t slb_up_read(struct http_up *up);
/* Send to the backend: bytes sent, or -1 with errno (EAGAIN and EINTR clear wr_ready; any
 * other error is kept in send_err). */
ssize_t slb_up_send(struct http_up *up, const void *p, size_t n);
/* The same for pieces in several places (a size line we wrote and the data after it). */
ssize_t slb_up_sendv(struct http_up *up, const struct iovec *iov, int n);
/* Decode a chunked body in place: the front of up->in becomes *ready data bytes, followed
 * by the raw bytes not decoded yet. With trailers (and ck->stop_at_trailer), the trailer
 * section's bytes are appended there. 0, or -1 on invalid framing. */
int slb_up_unchunk(struct http_up *up, struct slb_chunked *ck, uint64_t *ready,
                   struct slb_hbuf *trailers);
/* A request on up to server srv starts: one active request more on srv (and one connection
 * more when up is new), held by up until it is closed or pooled. */
void slb_up_count_start(struct http_up *up, struct slb_srv_rt *srv);
/* Whether slbd can send a request again by itself, whatever the backend did with it: an
 * idempotent method (RFC 9110 9.2.2) and no body, which slbd does not keep for a second
 * send. */
static inline bool slb_up_resendable(enum slb_http_method m, bool has_body)
{
    if (has_body)
        return false;
    switch (m) {
    case SLB_HTTP_GET:
    case SLB_HTTP_HEAD:
    case SLB_HTTP_OPTIONS:
    case SLB_HTTP_TRACE:
    case SLB_HTTP_PUT:
    case SLB_HTTP_DELETE:
        return true;
    default:
        return false;
    }
}
/* Whether a request (method m, with a body or not) whose connection ended before any byte of
 * a response may be sent again: on a fresh connection to the same server when up was reused,
 * to the next server when up was fresh. Only when nothing of it was written, or it is
 * idempotent (RFC 9110 9.2.2) and has no body that would have to be sent again: a
 * non-idempotent request the backend may have acted on is never sent twice (RFC 9112
 * 9.3.1). */
bool slb_up_retryable(const struct http_up *up, enum slb_http_method m, bool has_body);
/* Whether a backend that has answered can no longer take the rest of the request: a send
 * failed, or it closed or reset its side, or it sent bytes after its complete response. */
bool slb_up_gone(struct http_up *up);
/* Give a connection back after a complete keep-alive exchange (or close it when the pool is
 * full). The active request it held ends, its bytes counted. */
void slb_up_release(struct http_up *up);
/* Close and free (deferred) an upstream connection; the active request it held (if any)
 * ends, its bytes counted. */
void slb_up_close(struct http_up *up);
void slb_up_set_interest(struct http_up *up, uint32_t events);
void slb_up_pool_drain(struct slb_http_worker *hw);

/* The response head at the front of up->in, for a request with method. >0: its length, with
 * m filled. 0: not all here yet; a head cut by the end of the buffer, behind interim
 * responses already taken from it, has been moved to the buffer's front so that the rest can
 * be read. <0: the response cannot be used, *why says why (answered 502). */
int slb_up_parse_head(struct http_up *up, enum slb_http_method method, struct slb_http_msg *m,
                      const char **why);

/* Choosing the server for a request and getting a connection to it. */
struct slb_up_choice {
    struct slb_wgroup *wg;
    uint8_t *tried; /* per server: already tried for this request */
    int attempts;   /* servers tried so far */
    int client_fd;  /* for the source/target hash schedulers */
    /* The connection's hash key for them, kept by the caller: computed at the first request
     * that needs it (the scheduler it was made for in *key_of, 0 for none yet). */
    uint64_t *key;
    uint8_t *key_of;
    const char *listener; /* for log lines */
    /* A new connection, never a pooled one: under backend_reuse "safe", the first request of
     * a client connection when slbd could not send it again itself (slb_xchg_fresh_only). */
    bool fresh;
    void *owner;
    slb_up_cb cb;
    int srv_idx; /* out: the server chosen */
    struct slb_srv_rt *srv;
};
/* The server a usable sticky cookie names (first attempt only), else the scheduler's pick
 * among servers not tried yet; a server whose socket cannot be made counts as failed and the
 * next is tried. Returns the connection (counted active on its server, see
 * slb_up_count_start), or NULL when no server is left. */
struct http_up *slb_up_choose(struct slb_http_worker *hw, struct slb_up_choice *ch,
                              struct slb_slice sticky);

#endif
