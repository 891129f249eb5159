/* SPDX-License-Identifier: Apache-2.0 */
/* fixed-backend: the benchmark's HTTP/1.1 backend, a single-threaded epoll server that answers
 * every request with one of two precomputed responses (a small one, or 1 MiB for paths starting
 * with /1m), with keep-alive and pipelining, so the proxy under test, not the backend, costs. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define IN_SIZE 16384 /* the largest request head we accept; proxies send a few hundred bytes */
#define BIG_SIZE (1024 * 1024)
#define MAX_EVENTS 256

/* One client (proxy) connection, owned by the loop from accept to close. */
struct conn {
    int fd;
    size_t inlen;
    unsigned long long discard; /* request body bytes still to skip */
    /* the response being written: head then body, from static buffers */
    const char *head;
    size_t headlen, headoff;
    const char *body;
    size_t bodylen, bodyoff;
    bool writing, close_after, want_out;
    char in[IN_SIZE];
};

static char small_body[4096];
static size_t small_len = 100;
static char *big_body;
static char heads[4][160]; /* [big][close] */
static size_t headlens[4];
static unsigned long long requests;

static void make_heads(void)
{
    for (int big = 0; big < 2; big++) {
        for (int cl = 0; cl < 2; cl++) {
            int n = snprintf(heads[big * 2 + cl], sizeof(heads[0]),
                             "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n",
                             big ? "application/octet-stream" : "text/plain",
                             big ? (size_t)BIG_SIZE : small_len, cl ? "Connection: close\r\n" : "");
            headlens[big * 2 + cl] = (size_t)n;
        }
    }
}

static void conn_close(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void set_interest(int ep, struct conn *c, bool out)
{
    if (out == c->want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

/* Writes what is pending; returns -1 to close, 0 when blocked, 1 when the response is done. */
static int flush_out(struct conn *c)
{
    while (c->headoff < c->headlen || c->bodyoff < c->bodylen) {
        struct iovec iov[2];
        int n = 0;
        if (c->headoff < c->headlen)
            iov[n++] = (struct iovec){(void *)(c->head + c->headoff), c->headlen - c->headoff};
        if (c->bodyoff < c->bodylen)
            iov[n++] = (struct iovec){(void *)(c->body + c->bodyoff), c->bodylen - c->bodyoff};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        size_t k = (size_t)w;
        size_t h = c->headlen - c->headoff < k ? c->headlen - c->headoff : k;
        c->headoff += h;
        c->bodyoff += k - h;
    }
    c->writing = false;
    return 1;
}

static bool has_close(const char *head, size_t len)
{
    /* Proxies send "Connection: close" only when they mean it; a substring test suffices. */
    for (size_t i = 0; i + 17 <= len; i++) {
        if ((head[i] == 'C' || head[i] == 'c') &&
            strncasecmp(head + i, "connection: close", 17) == 0)
            return true;
    }
    return false;
}

static unsigned long long content_length(const char *head, size_t len)
{
    for (size_t i = 0; i + 16 <= len; i++) {
        if (strncasecmp(head + i, "\ncontent-length:", 16) == 0)
            return strtoull(head + i + 16, NULL, 10);
    }
    return 0;
}

/* Parses as many complete requests as are buffered while no response is being written. Returns
 * -1 to close the connection. */
static int serve(struct conn *c)
{
    for (;;) {
        if (c->writing) {
            int r = flush_out(c);
            if (r <= 0)
                return r;
            if (c->close_after)
                return -1;
        }
        if (c->discard) {
            size_t k = c->discard < c->inlen ? (size_t)c->discard : c->inlen;
            memmove(c->in, c->in + k, c->inlen - k);
            c->inlen -= k;
            c->discard -= k;
            if (c->discard)
                return 0;
        }
        char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
        if (!end)
            return c->inlen == sizeof(c->in) ? -1 : 0;
        size_t hl = (size_t)(end - c->in) + 4;
        const char *sp = memchr(c->in, ' ', hl);
        bool big = sp && strncmp(sp + 1, "/1m", 3) == 0;
        c->close_after = has_close(c->in, hl);
        c->discard = content_length(c->in, hl);
        int v = (big ? 2 : 0) + (c->close_after ? 1 : 0);
        c->head = heads[v];
        c->headlen = headlens[v];
        c->headoff = c->bodyoff = 0;
        c->body = big ? big_body : small_body;
        c->bodylen = big ? BIG_SIZE : small_len;
        c->writing = true;
        memmove(c->in, c->in + hl, c->inlen - hl);
        c->inlen -= hl;
        requests++;
    }
}

static int listen_on(const char *spec)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || (size_t)(colon - spec) >= sizeof(host)) {
        fprintf(stderr, "fixed-backend: --listen wants IPV4:PORT\n");
        exit(2);
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "fixed-backend: bad address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "fixed-backend: cannot listen on %s: %s\n", spec, strerror(errno));
        exit(2);
    }
    return fd;
}

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    const char *spec = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            spec = argv[i + 1];
        else if (strcmp(argv[i], "--small-bytes") == 0)
            small_len = (size_t)atoi(argv[i + 1]);
    }
    if (!spec || small_len > sizeof(small_body)) {
        fprintf(stderr, "usage: fixed-backend --listen IPV4:PORT [--small-bytes N (<= 4096)]\n");
        return 2;
    }
    memset(small_body, 's', sizeof(small_body));
    if (small_len)
        small_body[small_len - 1] = '\n';
    big_body = malloc(BIG_SIZE);
    if (!big_body)
        return 1;
    memset(big_body, 'x', BIG_SIZE);
    make_heads();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = listen_on(spec);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("ready\n");
    fflush(stdout);

    struct epoll_event evs[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct conn *nc = calloc(1, sizeof(*nc));
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            bool dead = (evs[i].events & (EPOLLERR | EPOLLHUP)) != 0;
            if (!dead && (evs[i].events & EPOLLIN) && c->inlen < sizeof(c->in)) {
                ssize_t r = recv(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                    dead = true;
                else if (r > 0)
                    c->inlen += (size_t)r;
            }
            int s = dead ? -1 : serve(c);
            if (s < 0)
                conn_close(ep, c);
            else
                set_interest(ep, c, c->writing);
        }
    }
    fprintf(stderr, "fixed-backend: %llu requests\n", requests);
    return 0;
}
