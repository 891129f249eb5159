/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the HTTP/2 connection (src/http/h2.c, h2_stream.c): the input is what a
 * client sends after the connection preface (frames, or anything else; after a first byte
 * that picks the listener), written into a real
 * h2 connection over a socket pair and driven by a real worker loop, so nghttp2's callbacks,
 * the translation of requests to HTTP/1.1 heads, our own responses, flow control and the abuse
 * limits all run. The listener has no backend group: every request slbd accepts is answered
 * 503 (or 301 when the first input byte is odd: a redirect listener, whose Location carries
 * the request's path). Memory errors, leaks and undefined behaviour are the findings. */
#include "http/h2.h"
#include "http/upstream.h"
#include "net/worker_ctx.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static struct slb_worker w;
static struct slb_wsnap ws;
static struct slb_listener_cfg cfg;
static struct slb_listener_rt lis;
static struct slb_lis_rt *stats;
static struct slb_lsock *sock;

static void setup(void)
{
    if (slb_loop_init(&w.loop) < 0)
        abort();
    w.conns.next = w.conns.prev = &w.conns;
    ws.worker = &w;
    w.cur = &ws;
    snprintf(cfg.name, sizeof(cfg.name), "fuzz");
    cfg.protocol = SLB_PROTO_HTTPS;
    cfg.connect_timeout_ms = 5000;
    cfg.header_timeout_s = 10;
    cfg.idle_timeout_s = 15;
    cfg.request_timeout_s = 60;
    stats = aligned_alloc(64, sizeof(*stats) + sizeof(struct slb_wcount));
    sock = aligned_alloc(64, sizeof(*sock) + sizeof(struct slb_lsock_slot));
    if (!stats || !sock)
        abort();
    memset(stats, 0, sizeof(*stats) + sizeof(struct slb_wcount));
    memset(sock, 0, sizeof(*sock) + sizeof(struct slb_lsock_slot));
    stats->nworkers = sock->nworkers = 1;
    sock->slot[0].cur = &lis;
    lis.cfg = &cfg;
    lis.sock = sock;
    lis.stats = stats;
}

/* Read and drop what slbd wrote; true when anything came. */
static bool drain_peer(int fd)
{
    char buf[65536];
    bool any = false;
    while (read(fd, buf, sizeof(buf)) > 0)
        any = true;
    return any;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    if (size == 0)
        return 0;
    snprintf(cfg.redirect_to, sizeof(cfg.redirect_to), "%s",
             (data[0] & 1) ? "https://example.test" : "");
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return 0;
    struct slb_h2_handoff h = {
        .w = &w, .hw = slb_http_worker_get(&w), .client_ip = "192.0.2.1", .local_port = 443};
    slb_http_bind_init(&h.b, &w, &lis);
    slb_tconn_init_raw(&h.t, sv[0]);
    if (!h.hw || slb_h2_start(&h) < 0) {
        slb_http_bind_release(&h.b);
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    /* The input goes in pieces, as a client's writes would, with slbd running in between. */
    if (write(sv[1], preface, sizeof(preface) - 1) < 0)
        abort();
    size_t off = 0;
    for (int i = 0; i < 64 && w.conns.next != &w.conns; i++) {
        if (off < size) {
            size_t n = size - off < 1024 ? size - off : 1024;
            ssize_t r = write(sv[1], data + off, n);
            if (r > 0)
                off += (size_t)r;
        } else if (off == size) {
            shutdown(sv[1], SHUT_WR); /* then the client is gone */
            off++;
        }
        slb_loop_once(&w.loop, 0);
        drain_peer(sv[1]);
    }
    /* Whatever is still open is aborted, as at the end of a drain. */
    while (w.conns.next != &w.conns)
        w.conns.next->abort(w.conns.next);
    slb_loop_once(&w.loop, 0); /* deferred frees */
    close(sv[1]);
    return 0;
}
