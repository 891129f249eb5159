/* SPDX-License-Identifier: Apache-2.0 */
/* tlsload: the benchmark's TLS connection generator. One thread, non-blocking sockets and
 * edge-triggered epoll, C connections in flight. Modes:
 *   full    each connection does a full handshake (no ticket offered, no session set) and one
 *           "Connection: close" request; the count of resumed handshakes must stay 0.
 *   resume  the same, but each slot resumes with the session (ticket) its previous connection
 *           received; every handshake after a slot's first should be resumed.
 *   hold    opens --count connections, completes their handshakes, prints "ready ..." and
 *           holds them; a line "r" on stdin sends one keep-alive request on each (and prints
 *           "requested ..."); stdin's EOF or SIGTERM ends it.
 * Whether a handshake resumed is read from the client's own SSL object (SSL_session_reused),
 * so the check does not depend on the server's statistics. The summary is one JSON object. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { MODE_FULL, MODE_RESUME, MODE_HOLD };
enum state { S_IDLE, S_CONNECT, S_HANDSHAKE, S_WRITE, S_READ, S_DRAIN, S_HOLD };
enum fail { F_CONNECT, F_HANDSHAKE, F_IO, F_TIMEOUT, F_SHORT, F_COUNT };
static const char *const fail_names[F_COUNT] = {"connect", "handshake", "io", "timeout",
                                                "short_response"};

/* One connection slot; slots are reused connection after connection and own their SSL, socket
 * and, in resume mode, the session the last connection received. */
struct slot {
    int fd;
    SSL *ssl;
    SSL_SESSION *sess;
    enum state st;
    double start, deadline;
    size_t reqoff;
    char head[8192];
    size_t headlen;
    bool head_done;
    int status;
    long long clen, body;
};

static struct {
    enum mode mode;
    struct sockaddr_in addr;
    const char *sni;
    const char *path;
    int conc;
    double duration;
    long count;
    double timeout;
    bool tls12;
} opt = {.sni = "localhost", .path = "/", .conc = 32, .duration = 10, .timeout = 5};

static struct {
    long started, done, resumed, full, st2xx, non2xx, dropped;
    long fail[F_COUNT];
    double first, last;
} st;

static SSL_CTX *ctx;
static int ep;
static struct slot *slots;
static char req[1024];
static size_t reqlen;
static volatile sig_atomic_t stop_hold;
static double *lat; /* per-connection duration in ms, for percentiles */
static size_t nlat, caplat;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int slot_index_of(SSL *ssl)
{
    return (int)(long)SSL_get_app_data(ssl);
}

/* TLS 1.3 tickets arrive after the handshake, inside SSL_read; this keeps the newest one for
 * the slot's next connection. Returning 1 keeps our reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct slot *s = &slots[slot_index_of(ssl)];
    if (opt.mode != MODE_RESUME)
        return 0;
    SSL_SESSION_free(s->sess);
    s->sess = sess;
    return 1;
}

static void record_lat(double ms)
{
    if (nlat == caplat) {
        size_t cap = caplat ? caplat * 2 : 65536;
        double *p = realloc(lat, cap * sizeof(*p));
        if (!p)
            return;
        lat = p;
        caplat = cap;
    }
    lat[nlat++] = ms;
}

static void slot_close(struct slot *s)
{
    if (s->ssl) {
        /* Marking the shutdown done keeps the session resumable: OpenSSL otherwise treats a
         * connection freed without close_notify as bad and its session as unusable. */
        SSL_set_shutdown(s->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    s->st = S_IDLE;
}

static void slot_fail(struct slot *s, enum fail f)
{
    if (s->st == S_HOLD)
        st.dropped++;
    else
        st.fail[f]++;
    ERR_clear_error();
    slot_close(s);
}

static void slot_done(struct slot *s)
{
    double t = now();
    st.done++;
    st.last = t;
    record_lat((t - s->start) * 1000.0);
    if (s->status >= 200 && s->status < 300)
        st.st2xx++;
    else
        st.non2xx++;
    slot_close(s);
}

static bool slot_start(struct slot *s, int idx)
{
    memset(s->head, 0, 1);
    s->headlen = 0;
    s->head_done = false;
    s->status = 0;
    s->clen = -1;
    s->body = 0;
    s->reqoff = 0;
    s->start = now();
    s->deadline = s->start + opt.timeout;
    if (st.started == 0)
        st.first = s->start;
    st.started++;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        st.fail[F_CONNECT]++;
        return false;
    }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(s->fd, (struct sockaddr *)&opt.addr, sizeof(opt.addr)) < 0 &&
        errno != EINPROGRESS) {
        slot_fail(s, F_CONNECT);
        return false;
    }
    s->ssl = SSL_new(ctx);
    if (!s->ssl) {
        slot_fail(s, F_HANDSHAKE);
        return false;
    }
    SSL_set_app_data(s->ssl, (void *)(long)idx);
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_tlsext_host_name(s->ssl, opt.sni);
    if (opt.mode == MODE_RESUME && s->sess)
        SSL_set_session(s->ssl, s->sess);
    s->st = S_CONNECT;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = (uint32_t)idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    return true;
}

/* Parses the response head once complete; returns false on a malformed one. */
static bool parse_head(struct slot *s, size_t hl)
{
    if (hl < 12 || strncmp(s->head, "HTTP/1.", 7) != 0)
        return false;
    s->status = atoi(s->head + 9);
    for (size_t i = 0; i + 16 < hl; i++) {
        if (strncasecmp(s->head + i, "\ncontent-length:", 16) == 0) {
            s->clen = atoll(s->head + i + 16);
            break;
        }
    }
    s->head_done = true;
    s->body = (long long)(s->headlen - hl);
    return true;
}

/* Consumes response bytes; returns 1 when the response is complete, 0 for more, -1 on error. */
static int take(struct slot *s, const char *p, size_t n)
{
    if (!s->head_done) {
        size_t room = sizeof(s->head) - 1 - s->headlen;
        size_t k = n < room ? n : room;
        memcpy(s->head + s->headlen, p, k);
        s->headlen += k;
        s->head[s->headlen] = '\0';
        char *e = strstr(s->head, "\r\n\r\n");
        if (!e)
            return s->headlen == sizeof(s->head) - 1 ? -1 : 0;
        if (!parse_head(s, (size_t)(e - s->head) + 4))
            return -1;
        s->body += (long long)(n - k);
    } else {
        s->body += (long long)n;
    }
    if (s->clen < 0)
        return -1; /* the backends always send Content-Length */
    return s->body >= s->clen ? 1 : 0;
}

/* Runs the slot's state machine as far as it can go without blocking. */
static void step(struct slot *s)
{
    char buf[65536];
    for (;;) {
        switch (s->st) {
        case S_IDLE:
            return;
        case S_CONNECT: {
            int err = 0;
            socklen_t len = sizeof(err);
            getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                slot_fail(s, F_CONNECT);
                return;
            }
            s->st = S_HANDSHAKE;
            break;
        }
        case S_HANDSHAKE: {
            ERR_clear_error();
            int r = SSL_connect(s->ssl);
            if (r == 1) {
                if (SSL_session_reused(s->ssl))
                    st.resumed++;
                else
                    st.full++;
                if (opt.mode == MODE_HOLD) {
                    s->st = S_HOLD;
                    return;
                }
                s->st = S_WRITE;
                break;
            }
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            if (e == SSL_ERROR_SYSCALL && (errno == EINPROGRESS || errno == ENOTCONN))
                return; /* the connect is still in progress */
            slot_fail(s, F_HANDSHAKE);
            return;
        }
        case S_WRITE: {
            ERR_clear_error();
            int r = SSL_write(s->ssl, req + s->reqoff, (int)(reqlen - s->reqoff));
            if (r > 0) {
                s->reqoff += (size_t)r;
                if (s->reqoff == reqlen)
                    s->st = S_READ;
                break;
            }
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            slot_fail(s, F_IO);
            return;
        }
        case S_READ:
        case S_DRAIN:
        case S_HOLD: {
            ERR_clear_error();
            int r = SSL_read(s->ssl, buf, sizeof(buf));
            if (r > 0) {
                if (s->st != S_READ)
                    break; /* nothing more is expected; ignore it */
                int t = take(s, buf, (size_t)r);
                if (t < 0) {
                    slot_fail(s, F_IO);
                    return;
                }
                if (t == 1) {
                    if (opt.mode == MODE_HOLD) {
                        s->st = S_HOLD;
                        st.done++;
                        if (s->status >= 200 && s->status < 300)
                            st.st2xx++;
                        else
                            st.non2xx++;
                    } else {
                        s->st = S_DRAIN;
                    }
                }
                break;
            }
            int e = SSL_get_error(s->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            if (s->st == S_DRAIN &&
                (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL)) {
                slot_done(s); /* the server closed after its "Connection: close" response */
                return;
            }
            slot_fail(s, s->st == S_READ ? F_SHORT : F_IO);
            return;
        }
        }
    }
}

static void on_term(int sig)
{
    (void)sig;
    stop_hold = 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    if (nlat == 0)
        return 0;
    size_t i = (size_t)(p * (double)(nlat - 1) + 0.5);
    return lat[i];
}

static void summary(double elapsed)
{
    qsort(lat, nlat, sizeof(*lat), cmp_double);
    printf("{\"mode\": \"%s\", \"started\": %ld, \"completed\": %ld, \"full\": %ld, "
           "\"resumed\": %ld, \"status_2xx\": %ld, \"non_2xx\": %ld, \"dropped\": %ld, "
           "\"elapsed_s\": %.4f, \"per_s\": %.1f, \"conn_ms_p50\": %.3f, \"conn_ms_p99\": %.3f, "
           "\"errors\": {",
           opt.mode == MODE_FULL     ? "full"
           : opt.mode == MODE_RESUME ? "resume"
                                     : "hold",
           st.started, st.done, st.full, st.resumed, st.st2xx, st.non2xx, st.dropped, elapsed,
           elapsed > 0 ? (double)st.done / elapsed : 0.0, pct(0.5), pct(0.99));
    long total = 0;
    for (int i = 0; i < F_COUNT; i++) {
        printf("%s\"%s\": %ld", i ? ", " : "", fail_names[i], st.fail[i]);
        total += st.fail[i];
    }
    printf("}, \"errors_total\": %ld}\n", total);
    fflush(stdout);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: tlsload --connect IPV4:PORT --mode full|resume|hold [--sni NAME] [--path P]\n"
            "               [-c CONCURRENCY] [--duration S] [--count N] [--timeout S]\n"
            "               [--tls12]\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    const char *connect_to = NULL, *mode = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--tls12") == 0) {
            opt.tls12 = true;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (strcmp(a, "--connect") == 0)
            connect_to = v;
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--sni") == 0)
            opt.sni = v;
        else if (strcmp(a, "--path") == 0)
            opt.path = v;
        else if (strcmp(a, "-c") == 0)
            opt.conc = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            opt.duration = atof(v);
        else if (strcmp(a, "--count") == 0)
            opt.count = atol(v);
        else if (strcmp(a, "--timeout") == 0)
            opt.timeout = atof(v);
        else
            usage();
    }
    if (!connect_to || !mode || opt.conc < 1)
        usage();
    if (strcmp(mode, "full") == 0)
        opt.mode = MODE_FULL;
    else if (strcmp(mode, "resume") == 0)
        opt.mode = MODE_RESUME;
    else if (strcmp(mode, "hold") == 0)
        opt.mode = MODE_HOLD;
    else
        usage();
    if (opt.mode == MODE_HOLD && opt.count < 1)
        usage();
    char host[64];
    const char *colon = strrchr(connect_to, ':');
    if (!colon || (size_t)(colon - connect_to) >= sizeof(host))
        usage();
    memcpy(host, connect_to, (size_t)(colon - connect_to));
    host[colon - connect_to] = '\0';
    opt.addr.sin_family = AF_INET;
    opt.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &opt.addr.sin_addr) != 1)
        usage();
}

static SSL_CTX *make_ctx(void)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c)
        return NULL;
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    if (opt.tls12)
        SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    /* A server that closes without close_notify is not an error for this tool. */
    SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (opt.mode == MODE_RESUME) {
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(c, on_new_session);
    } else {
        /* No ticket extension (TLS 1.2) and no session cache: every handshake is full. */
        SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(c, alpn, sizeof(alpn) - 1);
    return c;
}

static void check_timeouts(double t)
{
    for (int i = 0; i < opt.conc; i++) {
        struct slot *s = &slots[i];
        if (s->st != S_IDLE && s->st != S_HOLD && t > s->deadline)
            slot_fail(s, F_TIMEOUT);
    }
}

static void run_load(void)
{
    struct epoll_event evs[256];
    double t0 = now(), end = t0 + opt.duration, last_scan = t0;
    bool starting = true;
    for (;;) {
        double t = now();
        if (starting && (t >= end || (opt.count > 0 && st.started >= opt.count)))
            starting = false;
        int busy = 0;
        for (int i = 0; i < opt.conc; i++) {
            if (slots[i].st == S_IDLE && starting && !(opt.count > 0 && st.started >= opt.count)) {
                if (slot_start(&slots[i], i))
                    step(&slots[i]);
            }
            busy += slots[i].st != S_IDLE;
        }
        if (!starting && busy == 0)
            break;
        int n = epoll_wait(ep, evs, 256, 20);
        for (int i = 0; i < n; i++)
            step(&slots[evs[i].data.u32]);
        if (t - last_scan > 0.1) {
            check_timeouts(t);
            last_scan = t;
        }
    }
    summary(st.last > st.first ? st.last - st.first : now() - t0);
}

/* Sends one keep-alive request on a held connection; the response brings it back to S_HOLD. */
static void slot_request(struct slot *s)
{
    s->headlen = 0;
    s->head_done = false;
    s->status = 0;
    s->clen = -1;
    s->body = 0;
    s->reqoff = 0;
    s->deadline = now() + opt.timeout;
    s->st = S_WRITE;
    step(s);
}

static long count_state(bool (*pred)(const struct slot *))
{
    long n = 0;
    for (long i = 0; i < opt.count; i++)
        n += pred(&slots[i]);
    return n;
}

static bool is_held(const struct slot *s)
{
    return s->st == S_HOLD;
}

static bool is_busy(const struct slot *s)
{
    return s->st != S_IDLE && s->st != S_HOLD;
}

static long errors_total(void)
{
    long errs = 0;
    for (int i = 0; i < F_COUNT; i++)
        errs += st.fail[i];
    return errs;
}

/* Runs the event loop until no slot is busy, starting slots from *next (establishing) or
 * sending requests on held ones (requesting) while fewer than conc are in flight. */
static void drive(long *next, bool requesting, int conc, double limit)
{
    struct epoll_event evs[256];
    double t0 = now();
    for (;;) {
        long busy = count_state(is_busy);
        while (*next < opt.count && busy < conc) {
            struct slot *s = &slots[*next];
            if (!requesting) {
                if (slot_start(s, (int)*next))
                    step(s);
            } else if (s->st == S_HOLD) {
                slot_request(s);
            }
            busy += is_busy(s);
            (*next)++;
        }
        if (*next == opt.count && busy == 0)
            return;
        int n = epoll_wait(ep, evs, 256, 20);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 != UINT32_MAX)
                step(&slots[evs[i].data.u32]);
        }
        check_timeouts(now());
        if (now() - t0 > limit)
            return; /* bounded: report what we have */
    }
}

/* Hold mode: establish, report, then wait for commands on stdin: "r" sends one keep-alive
 * request on every held connection and reports again; EOF (or SIGTERM) closes everything. */
static void run_hold(void)
{
    int conc = opt.conc;
    opt.conc = (int)opt.count; /* one slot per held connection */
    struct slot *all = calloc((size_t)opt.count, sizeof(*all));
    if (!all)
        exit(1);
    free(slots);
    slots = all;
    for (long i = 0; i < opt.count; i++)
        slots[i].fd = -1;
    long next = 0;
    double t0 = now();
    drive(&next, false, conc, 120);
    printf("ready established=%ld failed=%ld seconds=%.3f\n", count_state(is_held), errors_total(),
           now() - t0);
    fflush(stdout);

    struct epoll_event evs[256];
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev);
    while (!stop_hold) {
        int n = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < n && !stop_hold; i++) {
            if (evs[i].data.u32 != UINT32_MAX) {
                step(&slots[evs[i].data.u32]);
                continue;
            }
            char b[64];
            ssize_t r = read(0, b, sizeof(b));
            if (r <= 0) {
                stop_hold = 1;
            } else if (memchr(b, 'r', (size_t)r)) {
                double t1 = now();
                long before_fail = errors_total(), before_ok = st.st2xx;
                next = 0;
                drive(&next, true, conc, 120);
                printf("requested ok=%ld failed=%ld held=%ld seconds=%.3f\n", st.st2xx - before_ok,
                       errors_total() - before_fail, count_state(is_held), now() - t1);
                fflush(stdout);
            }
        }
    }
    double t2 = now();
    long held = count_state(is_held);
    for (long i = 0; i < opt.count; i++) {
        if (slots[i].st != S_IDLE) {
            slots[i].st = S_IDLE; /* not a drop: we close */
            SSL_set_shutdown(slots[i].ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
            SSL_free(slots[i].ssl);
            close(slots[i].fd);
        }
    }
    st.done = held;
    summary(t2 - t0);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ctx = make_ctx();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!ctx || ep < 0) {
        fprintf(stderr, "tlsload: cannot set up OpenSSL or epoll\n");
        return 1;
    }
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", opt.path, opt.sni,
                     opt.mode == MODE_HOLD ? "" : "Connection: close\r\n");
    reqlen = (size_t)n;
    slots = calloc((size_t)opt.conc, sizeof(*slots));
    if (!slots)
        return 1;
    for (int i = 0; i < opt.conc; i++)
        slots[i].fd = -1;
    if (opt.mode == MODE_HOLD)
        run_hold();
    else
        run_load();
    return 0;
}
