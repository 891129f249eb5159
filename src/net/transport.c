/* SPDX-License-Identifier: Apache-2.0 */
/* Plain and TLS transports. Wire bytes of TLS connections are read from the socket BIO's
 * counters, which see every byte the kernel took or gave: records, handshakes, alerts. */
#include "net/transport.h"

#include "core/ratelimit.h"

#include "core/err.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- plain sockets --- */

static int raw_handshake(struct slb_tconn *t)
{
    t->handshake_done = true;
    return 1;
}

static ssize_t raw_recv(struct slb_tconn *t, void *buf, size_t len)
{
    ssize_t n = recv(t->fd, buf, len, 0);
    if (n > 0) {
        t->raw_in += (uint64_t)n;
        /* A short read emptied the socket: the (level-triggered) loop reports the next bytes,
         * so a second recv that would only say EAGAIN is not made. */
        if ((size_t)n < len)
            t->rd_ready = false;
        return n;
    }
    if (n == 0)
        return SLB_EEOF;
    if (errno == EAGAIN || errno == EINTR) {
        t->rd_ready = false;
        return 0;
    }
    return -errno;
}

/* Bytes sent beyond the shaping budget become a debt (see slb_tconn_repay). Taking after the
 * send, rather than cutting the send to the budget, keeps TLS writes whole: a write that
 * would block must be retried with the same bytes. */
static void shape_account(struct slb_tconn *t, size_t n)
{
    if (t->shape && n > 0)
        t->owed += n - slb_ratelimit_take(t->shape, t->shape_worker, t->shape_rate, n, NULL);
}

static ssize_t raw_send(struct slb_tconn *t, const void *buf, size_t len)
{
    if (t->owed)
        return 0;
    ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
        t->raw_out += (uint64_t)n;
        shape_account(t, (size_t)n);
        return n;
    }
    if (errno == EAGAIN || errno == EINTR) {
        t->wr_ready = false;
        return 0;
    }
    return -errno;
}

static bool raw_pending(struct slb_tconn *t)
{
    return false;
}

static void raw_shutdown(struct slb_tconn *t) {}

static void raw_free(struct slb_tconn *t) {}

const struct slb_transport slb_transport_raw = {
    .name = "tcp",
    .handshake = raw_handshake,
    .recv = raw_recv,
    .send = raw_send,
    .pending = raw_pending,
    .shutdown = raw_shutdown,
    .free = raw_free,
};

void slb_tconn_init_raw(struct slb_tconn *t, int fd)
{
    t->fd = fd;
    t->ops = &slb_transport_raw;
    t->ssl = NULL;
    t->rd_wants = EPOLLIN;
    t->wr_wants = EPOLLOUT;
    t->rd_ready = true;
    t->wr_ready = true;
    t->handshake_done = true;
    t->corked = false;
    t->raw_in = t->raw_out = 0;
}

void slb_tconn_shape(struct slb_tconn *t, struct slb_ratelimit *r, uint64_t rate, int worker)
{
    t->shape = rate ? r : NULL;
    t->shape_rate = rate;
    t->shape_worker = worker;
    t->owed = 0;
}

uint64_t slb_tconn_repay(struct slb_tconn *t)
{
    if (!t->shape)
        return t->owed = 0;
    return slb_ratelimit_repay(t->shape, t->shape_worker, t->shape_rate, &t->owed);
}

void slb_tconn_cork(struct slb_tconn *t)
{
    int one = 1;
    if (!t->corked && setsockopt(t->fd, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)) == 0)
        t->corked = true;
}

void slb_tconn_uncork(struct slb_tconn *t)
{
    int zero = 0;
    if (t->corked)
        setsockopt(t->fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
    t->corked = false;
}

void slb_tconn_linger(struct slb_tconn *t)
{
    t->ops->shutdown(t);
    shutdown(t->fd, SHUT_WR);
}

bool slb_tconn_drain(struct slb_tconn *t, uint64_t *dropped)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(t->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            *dropped += (uint64_t)n;
            continue;
        }
        return n < 0 && (errno == EAGAIN || errno == EINTR);
    }
}

/* --- TLS --- */

/* SSL_get_error needs an empty error queue before each call. Every failure path below
 * empties it afterwards, so it is normally empty already, and looking costs far less than
 * clearing (which walks every slot of the thread's queue). */
static void err_queue_empty(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* Map an SSL_get_error result to our convention, noting what the socket must become. */
static ssize_t tls_result(struct slb_tconn *t, int ret, uint32_t *wants)
{
    int e = SSL_get_error(t->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *wants = EPOLLIN;
        t->rd_ready = false;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *wants = EPOLLOUT;
        t->wr_ready = false;
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return SLB_EEOF;
    case SSL_ERROR_SYSCALL:
        /* An EOF without close_notify: treat as the end of the stream; the HTTP framing
         * decides whether a message was truncated. */
        ERR_clear_error();
        return errno && errno != EAGAIN ? -errno : SLB_EEOF;
    default:
        return SLB_ETLS;
    }
}

static int tls_handshake(struct slb_tconn *t)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->handshake_done = true;
        t->rd_wants = EPOLLIN;
        t->wr_wants = EPOLLOUT;
        return 1;
    }
    uint32_t wants = EPOLLIN;
    ssize_t rc = tls_result(t, r, &wants);
    t->rd_wants = t->wr_wants = wants;
    /* Leave the error queue for the caller to classify the failure. */
    return rc == 0 ? 0 : (rc == SLB_EEOF ? SLB_EPROTO : (int)rc);
}

static ssize_t tls_recv(struct slb_tconn *t, void *buf, size_t len)
{
    err_queue_empty();
    size_t got = 0;
    int r = SSL_read_ex(t->ssl, buf, len, &got);
    if (r == 1) {
        t->rd_wants = EPOLLIN;
        /* Nothing left in OpenSSL's buffer after a short read: as for raw_recv, wait for the
         * loop instead of a read that fails with EAGAIN. */
        if (got < len && !SSL_has_pending(t->ssl))
            t->rd_ready = false;
        return (ssize_t)got;
    }
    ssize_t rc = tls_result(t, 0, &t->rd_wants);
    ERR_clear_error();
    return rc;
}

static ssize_t tls_send(struct slb_tconn *t, const void *buf, size_t len)
{
    if (t->owed)
        return 0;
    err_queue_empty();
    size_t put = 0;
    int r = SSL_write_ex(t->ssl, buf, len, &put);
    if (r == 1) {
        t->wr_wants = EPOLLOUT;
        shape_account(t, put);
        return (ssize_t)put;
    }
    ssize_t rc = tls_result(t, 0, &t->wr_wants);
    ERR_clear_error();
    return rc == SLB_EEOF ? -EPIPE : rc;
}

static bool tls_pending(struct slb_tconn *t)
{
    return SSL_has_pending(t->ssl) != 0;
}

static void tls_shutdown(struct slb_tconn *t)
{
    if (!t->handshake_done)
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
}

static void tls_free(struct slb_tconn *t)
{
    SSL_free(t->ssl);
    t->ssl = NULL;
}

const struct slb_transport slb_transport_tls = {
    .name = "tls",
    .handshake = tls_handshake,
    .recv = tls_recv,
    .send = tls_send,
    .pending = tls_pending,
    .shutdown = tls_shutdown,
    .free = tls_free,
};

int slb_tconn_init_tls(struct slb_tconn *t, int fd, SSL *ssl)
{
    slb_tconn_init_raw(t, fd);
    t->ops = &slb_transport_tls;
    t->ssl = ssl;
    t->handshake_done = false;
    if (SSL_set_fd(ssl, fd) != 1) {
        ERR_clear_error();
        return -ENOMEM;
    }
    SSL_set_accept_state(ssl);
    return 0;
}

void slb_tconn_wire(const struct slb_tconn *t, uint64_t *in, uint64_t *out)
{
    if (t->ssl) {
        *in = BIO_number_read(SSL_get_rbio(t->ssl));
        *out = BIO_number_written(SSL_get_wbio(t->ssl));
    } else {
        *in = t->raw_in;
        *out = t->raw_out;
    }
}
