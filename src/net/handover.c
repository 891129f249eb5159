/* SPDX-License-Identifier: Apache-2.0 */
/* The wire of a hand-over between an old and a new slbd (see handover.h): a SOCK_SEQPACKET
 * unix socket in the state directory, short text messages, descriptors as SCM_RIGHTS. */
#include "net/handover.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define STATUS 500 /* only the start-up message shows these */

void slb_handover_addr_key(const struct sockaddr_storage *ss, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(out, size, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(out, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(out, size, "%s", "");
    }
}

static int sock_addr(const char *dir, struct sockaddr_un *sun, struct slb_err *err)
{
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    int n = snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/%s", dir, SLB_HANDOVER_SOCK);
    if (n < 0 || (size_t)n >= sizeof(sun->sun_path))
        return slb_err_set(err, STATUS, "state_dir", dir,
                           "the path %s/%s is longer than a unix socket allows (%zu bytes); give "
                           "--state-dir a shorter path",
                           dir, SLB_HANDOVER_SOCK, sizeof(sun->sun_path) - 1);
    return 0;
}

int slb_handover_listen(const char *dir, int *fd, struct slb_err *err)
{
    struct sockaddr_un sun;
    *fd = -1;
    if (sock_addr(dir, &sun, err) < 0)
        return SLB_EINVAL;
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        goto fail;
    /* We hold the state directory's lock: a socket file there is a dead process's (or the
     * previous process's, which closed it when it handed over). */
    if (unlink(sun.sun_path) < 0 && errno != ENOENT)
        goto fail;
    if (bind(s, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        goto fail;
    /* The directory is 0700 already; the socket says it too. */
    if (chmod(sun.sun_path, 0600) < 0 || listen(s, 4) < 0)
        goto fail;
    *fd = s;
    return 0;
fail:;
    int e = errno;
    if (s >= 0)
        close(s);
    return slb_err_set(err, STATUS, "state_dir", sun.sun_path, "cannot listen on %s: %s",
                       sun.sun_path, strerror(e));
}

int slb_handover_send(int fd, const char *msg, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = strlen(msg)};
    union {
        char buf[CMSG_SPACE(sizeof(int) * SLB_HANDOVER_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > SLB_HANDOVER_MAX_FDS)
        return -EINVAL;
    if (nfds > 0) {
        memset(&u, 0, sizeof(u));
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        if (sendmsg(fd, &mh, MSG_NOSIGNAL) >= 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 5000) <= 0)
            return -ETIMEDOUT;
    }
}

ssize_t slb_handover_recv(int fd, char *msg, size_t size, int *fds, int *nfds, int maxfds)
{
    struct iovec iov = {.iov_base = msg, .iov_len = size - 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * SLB_HANDOVER_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    *nfds = 0;
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    msg[n] = '\0';
    bool excess = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int got[SLB_HANDOVER_MAX_FDS];
        memcpy(got, CMSG_DATA(cm), sizeof(int) * (size_t)k);
        for (int i = 0; i < k; i++) {
            if (*nfds < maxfds)
                fds[(*nfds)++] = got[i];
            else {
                close(got[i]);
                excess = true;
            }
        }
    }
    if (excess) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return SLB_EPROTO;
    }
    return n;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* Wait for the next message, at most timeout_ms. */
static ssize_t recv_wait(int fd, int timeout_ms, char *msg, int *fds, int *nfds)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc;
    do
        rc = poll(&p, 1, timeout_ms);
    while (rc < 0 && errno == EINTR);
    if (rc == 0)
        return -ETIMEDOUT;
    return slb_handover_recv(fd, msg, SLB_HANDOVER_MSG, fds, nfds, SLB_HANDOVER_MAX_FDS);
}

int slb_handover_request(const char *dir, struct slb_handover *h, struct slb_err *err)
{
    memset(h, 0, sizeof(*h));
    h->conn = h->lock_fd = h->admin_fd = -1;
    struct sockaddr_un sun;
    if (sock_addr(dir, &sun, err) < 0)
        return SLB_EINVAL;
    h->conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (h->conn < 0 || connect(h->conn, (struct sockaddr *)&sun, sizeof(sun)) < 0)
        return slb_err_set(err, STATUS, "upgrade_failed", sun.sun_path,
                           "no running slbd answers on %s (%s): is one running with this "
                           "--state-dir?",
                           sun.sun_path, strerror(errno));
    struct ucred cr;
    socklen_t crlen = sizeof(cr);
    if (getsockopt(h->conn, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
        h->old_pid = cr.pid;
    char msg[SLB_HANDOVER_MSG];
    snprintf(msg, sizeof(msg), "upgrade %ld", (long)getpid());
    /* A busy old process answers "busy" and closes before reading us: then the send fails
     * but the answer waits to be read. */
    int rc = slb_handover_send(h->conn, msg, NULL, 0);
    for (;;) {
        int fds[SLB_HANDOVER_MAX_FDS], nfds = 0;
        /* The old process answers from its control loop at once: a generous bound. */
        ssize_t n = recv_wait(h->conn, 30000, msg, fds, &nfds);
        if (n <= 0 && rc < 0)
            return slb_err_set(err, STATUS, "upgrade_failed", sun.sun_path,
                               "cannot ask the running slbd (pid %ld) for its sockets: %s",
                               (long)h->old_pid, strerror(-rc));
        if (n <= 0)
            return slb_err_set(err, STATUS, "upgrade_failed", sun.sun_path,
                               "the running slbd (pid %ld) did not hand its sockets over: %s",
                               (long)h->old_pid,
                               n == 0 ? "it closed the connection" : slb_strerror((int)n));
        if (strcmp(msg, "end") == 0 && nfds == 0)
            break;
        if (strcmp(msg, "busy") == 0)
            return slb_err_set(err, STATUS, "upgrade_in_progress", sun.sun_path,
                               "another upgrade of the running slbd (pid %ld) is in progress",
                               (long)h->old_pid);
        if (strncmp(msg, "refused ", 8) == 0)
            return slb_err_set(err, STATUS, "upgrade_refused", sun.sun_path,
                               "the running slbd (pid %ld) cannot hand over now: %s",
                               (long)h->old_pid, msg + 8);
        if (strncmp(msg, "cluster ", 8) == 0 && nfds == 0 && !h->cluster[0]) {
            snprintf(h->cluster, sizeof(h->cluster), "%s", msg + 8);
            continue;
        }
        if (strcmp(msg, "lock") == 0 && nfds == 1 && h->lock_fd < 0) {
            h->lock_fd = fds[0];
            continue;
        }
        if (strncmp(msg, "admin ", 6) == 0 && nfds == 1 && h->admin_fd < 0) {
            h->admin_fd = fds[0];
            snprintf(h->admin_key, sizeof(h->admin_key), "%.95s", msg + 6);
            continue;
        }
        if (strncmp(msg, "listen ", 7) == 0 && nfds >= 1) {
            struct slb_inherited_sock *s = calloc(1, sizeof(*s));
            char key[96] = "", name[64] = "";
            if (!s || sscanf(msg + 7, "%95s %63s", key, name) < 1) {
                free(s);
                close_fds(fds, nfds);
                return slb_err_set(err, STATUS, "upgrade_failed", sun.sun_path,
                                   "the running slbd sent a message we do not understand: %s", msg);
            }
            snprintf(s->key, sizeof(s->key), "%s", key);
            snprintf(s->name, sizeof(s->name), "%s", name);
            memcpy(s->fds, fds, sizeof(int) * (size_t)nfds);
            s->nfds = nfds;
            s->next = h->socks;
            h->socks = s;
            continue;
        }
        close_fds(fds, nfds);
        return slb_err_set(err, STATUS, "upgrade_failed", sun.sun_path,
                           "the running slbd sent a message we do not understand: %s", msg);
    }
    if (h->lock_fd < 0)
        return slb_err_set(err, STATUS, "upgrade_failed", sun.sun_path,
                           "the running slbd did not pass its state directory lock");
    return 0;
}

int slb_handover_commit(struct slb_handover *h, int timeout_ms, struct slb_err *err)
{
    char msg[SLB_HANDOVER_MSG];
    snprintf(msg, sizeof(msg), "ready %ld", (long)getpid());
    int rc = slb_handover_send(h->conn, msg, NULL, 0);
    int fds[SLB_HANDOVER_MAX_FDS], nfds = 0;
    ssize_t n = rc < 0 ? rc : recv_wait(h->conn, timeout_ms, msg, fds, &nfds);
    close_fds(fds, nfds);
    if (n <= 0 || strcmp(msg, "done") != 0)
        return slb_err_set(err, STATUS, "upgrade_failed", "",
                           "the old slbd (pid %ld) did not confirm the hand-over: %s",
                           (long)h->old_pid,
                           n < 0    ? slb_strerror((int)n)
                           : n == 0 ? "it closed the connection"
                                    : msg);
    return 0;
}

void slb_handover_deinit(struct slb_handover *h)
{
    if (h->conn >= 0)
        close(h->conn);
    if (h->lock_fd >= 0)
        close(h->lock_fd);
    if (h->admin_fd >= 0)
        close(h->admin_fd);
    while (h->socks) {
        struct slb_inherited_sock *s = h->socks;
        h->socks = s->next;
        close_fds(s->fds, s->nfds);
        free(s);
    }
    h->conn = h->lock_fd = h->admin_fd = -1;
}
