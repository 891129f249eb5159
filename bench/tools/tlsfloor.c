/* SPDX-License-Identifier: Apache-2.0 */
/* tlsfloor: the memory floor of scenario 5, the least a TLS server built on this OpenSSL can
 * hold per idle connection. A single-threaded epoll server with SSL_MODE_RELEASE_BUFFERS and
 * nothing else of its own but a descriptor and an SSL pointer: it completes handshakes, answers
 * every request head with a fixed 100-byte response (keep-alive), and holds the connection.
 * Protocol range, TLS 1.3 suites, TLS 1.2 ciphers and groups are those of slbd's default policy
 * and of the anchors' bench configurations, so every server holds the same key shares and cipher
 * contexts; tickets are OpenSSL's defaults (on, so the session is kept, as by all three).
 *
 *   tlsfloor --listen IPV4:PORT --cert FILE --key FILE */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256

#define BODY_LEN 100 /* like the bench backend's small response */
#define HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"

static char response[sizeof(HEAD) - 1 + BODY_LEN];

/* The whole per-connection state: what any TLS server must keep. */
struct conn {
    int fd;
    SSL *ssl;
};

static void die(const char *what)
{
    fprintf(stderr, "tlsfloor: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}

static void conn_close(struct conn *c)
{
    SSL_free(c->ssl);
    close(c->fd); /* also leaves the epoll set */
    free(c);
}

/* Handshake, then read request heads and answer each; returns false to close. The request is
 * only scanned for its blank line: the floor is about memory, not HTTP. */
static bool serve(struct conn *c)
{
    if (!SSL_is_init_finished(c->ssl)) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
        }
    }
    char buf[4096];
    for (;;) {
        int n = SSL_read(c->ssl, buf, sizeof(buf));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
        }
        /* Every segment with a head end gets one response; the bench's client sends one
         * request at a time, so that is one per request. */
        if (memmem(buf, (size_t)n, "\r\n\r\n", 4) &&
            SSL_write(c->ssl, response, (int)sizeof(response)) <= 0)
            return false;
    }
}

static int listen_on(const char *spec)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host))
        die("--listen wants IPV4:PORT");
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("--listen wants IPV4:PORT");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0)
        die("cannot listen");
    return fd;
}

static SSL_CTX *make_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_ciphersuites(
            ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") ||
        !SSL_CTX_set_cipher_list(ctx,
                                 "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") ||
        !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("cannot set up the TLS context");
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

int main(int argc, char **argv)
{
    const char *listen_spec = NULL, *cert = NULL, *key = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            listen_spec = argv[i + 1];
        else if (strcmp(argv[i], "--cert") == 0)
            cert = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            key = argv[i + 1];
    }
    if (!listen_spec || !cert || !key) {
        fprintf(stderr, "usage: tlsfloor --listen IPV4:PORT --cert FILE --key FILE\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    memcpy(response, HEAD, sizeof(HEAD) - 1);
    memset(response + sizeof(HEAD) - 1, 'x', BODY_LEN);
    SSL_CTX *ctx = make_ctx(cert, key);
    int lfd = listen_on(listen_spec);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        die("epoll");
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (c) {
                if (!serve(c))
                    conn_close(c);
                continue;
            }
            int fd;
            while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                c = malloc(sizeof(*c));
                SSL *ssl = c ? SSL_new(ctx) : NULL;
                if (!ssl || !SSL_set_fd(ssl, fd)) {
                    SSL_free(ssl);
                    free(c);
                    close(fd);
                    ERR_clear_error();
                    continue;
                }
                SSL_set_accept_state(ssl);
                *c = (struct conn){.fd = fd, .ssl = ssl};
                /* Edge-triggered: serve() always reads until OpenSSL wants more. */
                struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0)
                    conn_close(c);
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR)
                perror("tlsfloor: accept");
        }
        ERR_clear_error();
    }
}
