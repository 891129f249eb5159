/* SPDX-License-Identifier: Apache-2.0 */
/* The control thread: state directory, configuration changes, synchronous publication to the
 * workers, signals and the retirement of old snapshots. */
#include "daemon/control.h"

#include "acme/order.h"
#include "cert/ocsp_fetch.h"
#include "cert/store.h"
#include "cluster/backend.h"
#include "config/state.h"
#include "core/fsio.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/time.h"
#include "http/access.h"
#include "lb/health.h"
#include "metrics/metrics.h"
#include "state/backend.h"
#include "tls/tls.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PUBLISH_TIMEOUT_MS 10000
#define SWEEP_INTERVAL_MS 1000
/* From handing our sockets over until the new process serves: it loads the state directory and
 * builds every TLS context meanwhile, which a large configuration on a busy machine makes slow. */
#define UPGRADE_TIMEOUT_MS 120000
/* An admin write that waits for etcd when a new process asks (cluster mode) is answered within
 * its deadline, or a few of them when it conflicts and runs again: the new process waits that
 * long, checked every UPGRADE_POLL_MS, then is refused. */
#define UPGRADE_WRITE_WAIT_MS 20000
#define UPGRADE_POLL_MS 20

static int cert_type_of(void *arg, const char *id)
{
    return slb_certstore_type_of(arg, id);
}

/* Wait until every worker adopted generation gen. Workers poke ack_fd after each adoption;
 * the eventfd only wakes us, the adopted generations are the truth. */
static int wait_adopted(struct slb_ctl *ctl, uint64_t gen)
{
    uint64_t start = slb_mono_ms();
    for (;;) {
        int pending = 0;
        for (int i = 0; i < ctl->nworkers; i++) {
            struct slb_worker *w = &ctl->workers[i];
            if (atomic_load_explicit(&w->adopted_gen, memory_order_acquire) < gen &&
                !atomic_load(&w->exited))
                pending++;
        }
        if (pending == 0)
            return 0;
        uint64_t waited = slb_mono_ms() - start;
        if (waited >= PUBLISH_TIMEOUT_MS)
            return -ETIMEDOUT;
        struct pollfd pfd = {.fd = ctl->ack_fd, .events = POLLIN};
        poll(&pfd, 1, (int)(PUBLISH_TIMEOUT_MS - waited));
        uint64_t v;
        ssize_t r = read(ctl->ack_fd, &v, sizeof(v));
        (void)r;
    }
}

static void publish(struct slb_ctl *ctl, struct slb_snapshot *snap)
{
    for (int i = 0; i < ctl->nworkers; i++)
        slb_worker_post(&ctl->workers[i], snap);
    if (wait_adopted(ctl, snap->generation) < 0)
        slb_error("a worker did not adopt configuration %llu within %d ms",
                  (unsigned long long)snap->generation, PUBLISH_TIMEOUT_MS);
    struct slb_snapshot *old = ctl->cur;
    ctl->cur = snap;
    slb_registry_close_unused(&ctl->reg, snap);
    if (ctl->health)
        slb_health_update(ctl->health, snap);
    slb_snapshot_retire(&ctl->reg, old);
    slb_snapshot_sweep(&ctl->reg);
}

static void configure_access_log(struct slb_ctl *ctl, const struct slb_settings *st)
{
    char target[PATH_MAX + 300];
    if (st->access_log[0] && st->access_log[0] != '/' && strcmp(st->access_log, "stdout") != 0 &&
        strcmp(st->access_log, "syslog") != 0)
        snprintf(target, sizeof(target), "%s/%s", ctl->state_dir, st->access_log);
    else
        snprintf(target, sizeof(target), "%s", st->access_log);
    int rc = slb_access_configure(target, ctl->nworkers);
    if (rc < 0)
        slb_error("access log: %s", slb_strerror(rc));
}

/* Validate doc (owned) and build its snapshot, unpublished; NULL with err set. */
static struct slb_snapshot *build(struct slb_ctl *ctl, json_t *doc, struct slb_err *err)
{
    struct slb_config *cfg = NULL;
    struct slb_cert_lookup lookup = {cert_type_of, ctl->certs, slb_certstore_ids_gen(ctl->certs)};
    /* What the running configuration parsed already is taken as it is (config.h). */
    int rc = slb_config_from_json_prev(doc, &lookup, ctl->cur ? ctl->cur->cfg : NULL, &cfg, err);
    json_decref(doc);
    if (rc < 0)
        return NULL;
    return slb_snapshot_build(&ctl->reg, cfg, err);
}

int slb_ctl_dry_run(struct slb_ctl *ctl, json_t *doc, json_t **out, struct slb_err *err)
{
    struct slb_snapshot *snap = build(ctl, doc, err);
    if (!snap)
        return SLB_EINVAL;
    *out = json_incref(snap->cfg->json);
    slb_snapshot_discard(&ctl->reg, snap);
    return 0;
}

int slb_ctl_apply(struct slb_ctl *ctl, json_t *doc, bool persist, struct slb_err *err)
{
    int rc;
    struct slb_snapshot *snap = build(ctl, doc, err);
    if (!snap)
        return SLB_EINVAL;
    if (persist) {
        /* Against the revision we read when others may write too; the directory's lock
         * makes us its only writer. */
        bool shared = ctl->backend->ops->shared;
        uint64_t expect = shared ? ctl->config_rev : SLB_REV_ANY;
        /* Only a shared store's revision is ever compared; the directory's is a SHA-256 of
         * the whole file (1 MB at 1,000 listeners), not worth computing for nobody. */
        rc = slb_state_config_save(ctl->backend, snap->cfg->json, expect,
                                   shared ? &ctl->config_rev : NULL, err);
        if (rc < 0) {
            slb_snapshot_discard(&ctl->reg, snap);
            return rc;
        }
        if (ctl->cluster)
            slb_cluster_wrote(ctl->cluster, (int64_t)ctl->config_rev);
    }
    uint64_t t0 = slb_mono_us();
    configure_access_log(ctl, &snap->cfg->settings);
    publish(ctl, snap);
    json_decref(ctl->doc);
    ctl->doc = json_incref(snap->cfg->json);
    slb_info("configuration %llu active on %d workers in %.2f ms",
             (unsigned long long)snap->generation, ctl->nworkers,
             (double)(slb_mono_us() - t0) / 1000.0);
    slb_notify("STATUS=configuration %llu active on %d workers",
               (unsigned long long)snap->generation, ctl->nworkers);
    return 0;
}

static void reload_config(struct slb_ctl *ctl)
{
    struct slb_err err = {0};
    if (slb_backend_etcd_waiting(ctl->backend)) {
        slb_error("reload refused, keeping the running configuration: an admin write waits "
                  "for etcd; reload again once it is answered");
        ctl->reload_ok = false;
        return;
    }
    json_t *doc = NULL;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/config.json", ctl->state_dir);
    if (access(path, F_OK) < 0) {
        /* A missing file means "first start" at start-up; on a reload it is an accident
         * that must not wipe every listener. */
        slb_error("reload refused, keeping the running configuration: %s is missing", path);
        slb_notify("STATUS=reload refused, keeping the running configuration: %s is missing", path);
        ctl->reload_ok = false;
        return;
    }
    uint64_t rev = 0;
    if (slb_state_config_load(ctl->backend, &doc, &rev, &err) < 0 ||
        slb_ctl_apply(ctl, doc, false, &err) < 0) {
        slb_error("reload refused, keeping the running configuration: %s", err.msg);
        slb_notify("STATUS=reload refused, keeping the running configuration: %s", err.msg);
        ctl->reload_ok = false;
        return;
    }
    ctl->reload_ok = true;
    ctl->reload_ok_ms = slb_wall_ms();
    ctl->config_rev = rev;
    slb_info("configuration reloaded from %s/config.json", ctl->state_dir);
}

/* systemd's reload protocol: RELOADING=1 (with the monotonic time newer systemd asks for),
 * then READY=1 whether the new configuration was taken or refused. */
static void reload(struct slb_ctl *ctl)
{
    slb_notify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)slb_mono_us());
    reload_config(ctl);
    slb_notify("READY=1");
}

static void signal_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_ctl *ctl = io->data;
    struct signalfd_siginfo si;
    while (read(ctl->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            reload(ctl);
        } else if (si.ssi_signo == SIGUSR1) {
            slb_info("signal %u: reopening the access log", si.ssi_signo);
            slb_access_reopen();
        } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
            slb_info("signal %u: stopping", si.ssi_signo);
            slb_notify("STOPPING=1\nSTATUS=stopping: draining connections");
            ctl->stopping = true;
            slb_loop_stop(loop);
        }
    }
}

static void sweep_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_ctl *ctl = t->data;
    slb_snapshot_sweep(&ctl->reg);
    slb_metrics_sample(ctl->cur);
    if (ctl->certs)
        slb_certstore_tick(ctl->certs);
    /* While a new process takes over, the state directory is its to write (stored OCSP
     * responses, ticket keys). */
    bool owner = ctl->handover_state == SLB_HANDOVER_NONE;
    /* An admin write waiting for etcd is half done (a snapshot built, a certificate entry
     * held): what changes the store or publishes waits for the next tick. */
    if (slb_backend_etcd_waiting(ctl->backend))
        owner = false;
    if (ctl->ocsp && owner)
        slb_ocsp_fetcher_tick(ctl->ocsp);
    /* ACME orders write DIR/acme/ and answer challenges: the owner of the state only. */
    if (ctl->acme && owner)
        slb_acme_tick(ctl->acme);
    if (owner && slb_cluster_rotates_tickets(ctl->cluster) &&
        slb_ticket_ring_tick(&ctl->tickets, ctl->backend)) {
        /* New ticket keys reach every TLS context through one atomic pointer: no snapshot, no
         * context is built. */
        slb_tls_set_store(ctl->certs, ctl->tickets);
        slb_info("session ticket keys rotated");
    }
    slb_cluster_tick(ctl->cluster);
    slb_timer_start(loop, t, SWEEP_INTERVAL_MS);
}

void slb_ctl_on_stop(struct slb_ctl *ctl, void (*fn)(void *arg), void *arg)
{
    ctl->on_stop = fn;
    ctl->on_stop_arg = arg;
}

void slb_ctl_set_admin_fd(struct slb_ctl *ctl, int fd)
{
    ctl->admin_fd = fd;
}

bool slb_ctl_handing_over(const struct slb_ctl *ctl)
{
    return ctl->handover_state != SLB_HANDOVER_NONE;
}

/* Stop the clients of the control loop (the admin API, with its socket). */
static void stop_clients(struct slb_ctl *ctl)
{
    void (*fn)(void *) = ctl->on_stop;
    ctl->on_stop = NULL;
    ctl->admin_fd = -1;
    if (fn)
        fn(ctl->on_stop_arg);
}

/* --- upgrades, the running process's side (net/handover.h) --- */

static void upgrade_end(struct slb_ctl *ctl)
{
    slb_timer_stop(&ctl->loop, &ctl->upgrade_timer);
    if (ctl->upgrade_conn >= 0) {
        slb_io_set(&ctl->loop, &ctl->upgrade_conn_io, 0);
        close(ctl->upgrade_conn);
    }
    ctl->upgrade_conn = -1;
}

static void upgrade_abort(struct slb_ctl *ctl, const char *why)
{
    slb_error("upgrade failed: %s; still serving, configuration changes are accepted again", why);
    upgrade_end(ctl);
    ctl->handover_state = SLB_HANDOVER_NONE;
    slb_cluster_freeze(ctl->cluster, false);
}

/* Send every listening socket (one per worker), the admin socket and the locked DIR/lock.
 * The descriptors are copies: we keep serving on ours until the new process is ready. */
static int upgrade_send(struct slb_ctl *ctl)
{
    int fd = ctl->upgrade_conn, rc;
    char msg[SLB_HANDOVER_MSG];
    if ((rc = slb_handover_send(fd, "lock", &ctl->lock_fd, 1)) < 0)
        return rc;
    if (ctl->admin_fd >= 0) {
        int afd = ctl->admin_fd;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char key[96];
        if (getsockname(afd, (struct sockaddr *)&ss, &len) < 0)
            return -errno;
        slb_handover_addr_key(&ss, key, sizeof(key));
        snprintf(msg, sizeof(msg), "admin %s", key);
        if ((rc = slb_handover_send(fd, msg, &afd, 1)) < 0)
            return rc;
    }
    for (struct slb_lsock *ls = ctl->reg.lsocks; ls; ls = ls->next) {
        const char *name = NULL;
        for (size_t i = 0; ctl->cur && i < ctl->cur->nlisteners; i++) {
            if (ctl->cur->listeners[i].sock == ls)
                name = ctl->cur->listeners[i].cfg->name;
        }
        if (ls->closed || !name)
            continue;
        int fds[SLB_HANDOVER_MAX_FDS], n = 0;
        for (int i = 0; i < ls->nworkers && n < SLB_HANDOVER_MAX_FDS; i++) {
            if (ls->slot[i].fd >= 0)
                fds[n++] = ls->slot[i].fd;
        }
        snprintf(msg, sizeof(msg), "listen %s %s", ls->key, name);
        if (n && (rc = slb_handover_send(fd, msg, fds, n)) < 0)
            return rc;
    }
    if (ctl->cluster && ((rc = slb_cluster_handover_msg(ctl->cluster, msg, sizeof(msg))) < 0 ||
                         (rc = slb_handover_send(fd, msg, NULL, 0)) < 0))
        return rc;
    return slb_handover_send(fd, "end", NULL, 0);
}

/* The new process serves on every socket: stop accepting, stop writing to the state
 * directory, give the lock up (the new process holds the same open file, so the flock stays
 * taken throughout), confirm, and drain. */
static void upgrade_complete(struct slb_ctl *ctl, long pid)
{
    slb_timer_stop(&ctl->loop, &ctl->upgrade_timer);
    ctl->handover_state = SLB_HANDOVER_DONE;
    slb_io_set(&ctl->loop, &ctl->upgrade_io, 0);
    close(ctl->upgrade_fd); /* the new process replaces DIR/upgrade.sock with its own */
    ctl->upgrade_fd = -1;
    stop_clients(ctl); /* the admin API: its socket serves in the new process */
    for (int i = 0; i < ctl->nworkers; i++)
        slb_worker_request_stop(&ctl->workers[i], ctl->cur->cfg->settings.drain_timeout_s * 1000u,
                                true);
    if (ctl->lock_fd >= 0)
        close(ctl->lock_fd);
    ctl->lock_fd = -1;
    slb_cluster_handed_over(ctl->cluster);
    int rc = slb_handover_send(ctl->upgrade_conn, "done", NULL, 0);
    if (rc < 0)
        slb_warn("upgrade: cannot confirm the hand-over to pid %ld: %s", pid, strerror(-rc));
    /* The connection stays open until the new process closes it, after it told systemd it
     * is the main process: we exit only then (slb_ctl_run), or systemd would take our exit
     * for the service's end. */
    slb_io_set(&ctl->loop, &ctl->upgrade_conn_io, 0);
    slb_info("upgrade: pid %ld serves now; draining connections (at most %u s), then exiting", pid,
             ctl->cur->cfg->settings.drain_timeout_s);
    ctl->stopping = true;
    slb_loop_stop(&ctl->loop);
}

/* Hand our sockets over, once no admin write waits for etcd (cluster mode): the new process
 * reads etcd after that write is answered, and only one process writes at a time. Changes
 * that start meanwhile are refused (ASKED counts as handing over). */
static void upgrade_hand(struct slb_ctl *ctl)
{
    char why[SLB_HANDOVER_MSG + 64];
    long pid = ctl->upgrade_pid;
    if (slb_backend_etcd_waiting(ctl->backend)) {
        if (slb_mono_ms() - ctl->upgrade_asked_ms < UPGRADE_WRITE_WAIT_MS) {
            slb_timer_start(&ctl->loop, &ctl->upgrade_timer, UPGRADE_POLL_MS);
            return;
        }
        snprintf(why, sizeof(why),
                 "refused an admin write has waited for etcd for %d s; upgrade again once it "
                 "is answered",
                 UPGRADE_WRITE_WAIT_MS / 1000);
        slb_handover_send(ctl->upgrade_conn, why, NULL, 0);
        upgrade_abort(ctl, why + 8);
        return;
    }
    ctl->handover_state = SLB_HANDOVER_SENT;
    /* The new process reads etcd from now on, and the state directory is its to write. */
    slb_cluster_freeze(ctl->cluster, true);
    int rc = upgrade_send(ctl);
    if (rc < 0) {
        snprintf(why, sizeof(why), "cannot send the sockets to pid %ld: %s", pid, slb_strerror(rc));
        upgrade_abort(ctl, why);
        return;
    }
    slb_timer_start(&ctl->loop, &ctl->upgrade_timer, UPGRADE_TIMEOUT_MS);
}

static void upgrade_conn_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_ctl *ctl = io->data;
    char msg[SLB_HANDOVER_MSG], why[SLB_HANDOVER_MSG + 64];
    int fds[SLB_HANDOVER_MAX_FDS], nfds = 0;
    ssize_t n =
        slb_handover_recv(ctl->upgrade_conn, msg, sizeof(msg), fds, &nfds, SLB_HANDOVER_MAX_FDS);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (n == -EAGAIN)
        return;
    long pid = 0;
    if (n > 0 && ctl->handover_state == SLB_HANDOVER_NONE &&
        sscanf(msg, "upgrade %ld", &pid) == 1) {
        slb_info("upgrade: pid %ld takes over; configuration changes wait until it serves", pid);
        ctl->upgrade_pid = pid;
        ctl->upgrade_asked_ms = slb_mono_ms();
        ctl->handover_state = SLB_HANDOVER_ASKED;
        if (slb_backend_etcd_waiting(ctl->backend))
            slb_info("upgrade: pid %ld waits until etcd answers the admin write in progress", pid);
        upgrade_hand(ctl);
        return;
    }
    if (n > 0 && ctl->handover_state == SLB_HANDOVER_SENT && sscanf(msg, "ready %ld", &pid) == 1) {
        upgrade_complete(ctl, pid);
        return;
    }
    if (ctl->handover_state == SLB_HANDOVER_NONE) {
        upgrade_end(ctl); /* it went before asking: nothing was sent */
        return;
    }
    if (n > 0)
        snprintf(why, sizeof(why), "unexpected message from the new process: %s", msg);
    else
        snprintf(why, sizeof(why), "the new process exited before it served (%s)",
                 n == 0 ? "see its own message" : slb_strerror((int)n));
    upgrade_abort(ctl, why);
}

static void upgrade_timeout_cb(struct slb_loop *loop, struct slb_timer *t)
{
    struct slb_ctl *ctl = t->data;
    if (ctl->handover_state == SLB_HANDOVER_ASKED)
        upgrade_hand(ctl);
    else
        upgrade_abort(ctl, "the new process did not serve within 120 s");
}

/* A second upgrade while one is in progress: its request is read before the answer, since
 * closing a unix socket with unread data resets the peer, which would then not read "busy". */
struct slb_busy_conn {
    struct slb_io io;
    struct slb_ctl *ctl;
    struct slb_busy_conn *next;
};

static void busy_close(struct slb_ctl *ctl, struct slb_busy_conn *b)
{
    for (struct slb_busy_conn **pp = &ctl->upgrade_busy; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    slb_io_set(&ctl->loop, &b->io, 0);
    close(b->io.fd);
    slb_loop_defer_free(&ctl->loop, free, b);
}

static void busy_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_busy_conn *b = io->data;
    char msg[SLB_HANDOVER_MSG];
    int fds[SLB_HANDOVER_MAX_FDS], nfds = 0;
    ssize_t n = slb_handover_recv(io->fd, msg, sizeof(msg), fds, &nfds, SLB_HANDOVER_MAX_FDS);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    if (n == -EAGAIN)
        return;
    if (n > 0)
        slb_handover_send(io->fd, "busy", NULL, 0);
    busy_close(b->ctl, b);
}

static void upgrade_accept_cb(struct slb_loop *loop, struct slb_io *io, uint32_t events)
{
    struct slb_ctl *ctl = io->data;
    int fd = accept4(ctl->upgrade_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    /* The socket is 0600 in a 0700 directory; the peer's uid is checked all the same, as the
     * descriptors it would receive are every listener of this machine. */
    struct ucred cr = {.uid = (uid_t)-1};
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.uid != geteuid()) {
        slb_warn("upgrade: refused a connection from uid %ld", (long)cr.uid);
        close(fd);
        return;
    }
    if (ctl->upgrade_conn >= 0 || ctl->stopping) {
        /* One upgrade at a time: the second one is told why and exits non-zero. */
        struct slb_busy_conn *b = calloc(1, sizeof(*b));
        if (!b) {
            close(fd);
            return;
        }
        b->ctl = ctl;
        b->next = ctl->upgrade_busy;
        ctl->upgrade_busy = b;
        slb_io_init(&b->io, fd, busy_cb, b);
        slb_io_set(loop, &b->io, EPOLLIN);
        return;
    }
    ctl->upgrade_conn = fd;
    slb_io_init(&ctl->upgrade_conn_io, fd, upgrade_conn_cb, ctl);
    slb_io_set(loop, &ctl->upgrade_conn_io, EPOLLIN);
}

static void upgrade_listen(struct slb_ctl *ctl)
{
    struct slb_err err = {0};
    if (slb_handover_listen(ctl->state_dir, &ctl->upgrade_fd, &err) < 0) {
        slb_warn("slbd --upgrade will not be possible: %s", err.msg);
        return;
    }
    slb_io_init(&ctl->upgrade_io, ctl->upgrade_fd, upgrade_accept_cb, ctl);
    slb_io_set(&ctl->loop, &ctl->upgrade_io, EPOLLIN);
}

/* --- upgrades, the new process's side --- */

/* The lock passed by the old process must be our state directory's, and locked. */
static int adopt_lock(struct slb_ctl *ctl, const char *dir, struct slb_err *err)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/%s", dir, SLB_STATE_LOCK);
    struct stat a, b;
    int lfd = ctl->handover.lock_fd;
    if (fstat(lfd, &a) < 0 || stat(path, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino ||
        flock(lfd, LOCK_EX | LOCK_NB) < 0)
        return slb_err_set(err, 500, "upgrade_failed", path,
                           "the running slbd passed a lock that is not %s's", path);
    ctl->lock_fd = lfd;
    ctl->handover.lock_fd = -1;
    return 0;
}

/* We serve: tell the old process and wait for its "done"; from then on the state directory
 * is ours. */
static int upgrade_commit(struct slb_ctl *ctl, struct slb_err *err)
{
    long old = (long)ctl->handover.old_pid;
    int rc = slb_handover_commit(&ctl->handover, 30000, err);
    if (rc < 0)
        return rc;
    slb_info("upgrade complete: took over from pid %ld", old);
    return 0;
}

/* The lock file names the process that holds it, for the messages of those refused. */
static void write_lock_pid(struct slb_ctl *ctl)
{
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(ctl->lock_fd, 0) < 0 || pwrite(ctl->lock_fd, pid, (size_t)len, 0) != len)
        slb_warn("cannot write our pid to %s/%s: %s", ctl->state_dir, SLB_STATE_LOCK,
                 strerror(errno));
}

/* Errors found in config.json carry the field in their message; name the file as the place
 * so start-up errors say both. */
static void name_config_file(struct slb_err *err, const char *dir)
{
    if (strchr(err->where, '/'))
        return;
    char where[PATH_MAX + 16];
    snprintf(where, sizeof(where), "%s/config.json", dir);
    snprintf(err->where, sizeof(err->where), "%.*s", (int)sizeof(err->where) - 1, where);
}

static int load_state(struct slb_ctl *ctl, const struct slb_options *opt, json_t **doc,
                      struct slb_err *err)
{
    const char *dir = opt->state_dir;
    /* The lock first: the clean-up in slb_state_prepare removes temporary files, which may
     * be another running slbd's writes in progress. */
    int rc = ctl->handover.conn >= 0 ? adopt_lock(ctl, dir, err)
                                     : slb_state_lock(dir, &ctl->lock_fd, err);
    if (rc < 0 || slb_state_prepare(dir, err) < 0)
        return SLB_EINVAL;
    if (opt->cluster.endpoints) {
        /* The shared state in etcd, the state directory its cache (daemon/cluster.h). */
        ctl->backend = slb_cluster_backend(&opt->cluster, dir, &ctl->cluster_start_rev, err);
        if (!ctl->backend)
            return SLB_EINVAL;
    } else {
        ctl->backend = slb_backend_dir_new(dir, false, err);
        if (!ctl->backend || slb_backend_dir_prepare(ctl->backend, err) < 0)
            return SLB_EINVAL;
    }
    ctl->certs = slb_certstore_open_backend(ctl->backend, false, err);
    if (!ctl->certs)
        return SLB_EINVAL;
    ctl->tickets = slb_ticket_ring_open(ctl->backend, err);
    if (!ctl->tickets)
        return SLB_EINVAL;
    slb_tls_set_store(ctl->certs, ctl->tickets);
    return slb_state_config_load(ctl->backend, doc, &ctl->config_rev, err);
}

int slb_ctl_check(const char *state_dir, bool start, struct slb_err *err)
{
    int rc = slb_state_inspect(state_dir, err);
    if (rc == -ENOENT && start)
        return 0; /* a first start: nothing to validate yet */
    if (rc < 0)
        return rc;
    if (!start) {
        char certs[4200];
        struct stat st;
        if (stat(state_dir, &st) == 0 &&
            slb_fs_check_owner(state_dir, &st, "state_insecure", err) < 0)
            return SLB_EINVAL;
        if (stat(state_dir, &st) == 0 && (st.st_mode & 022))
            return slb_err_set(err, 400, "state_dir", state_dir,
                               "%s is writable by group or others; slbd sets its mode to 0700 "
                               "when it starts, --check leaves it as it is (run chmod 700)",
                               state_dir);
        snprintf(certs, sizeof(certs), "%s/certs", state_dir);
        if (stat(certs, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 077))
            return slb_err_set(err, 400, "state_dir", certs,
                               "%s is accessible by group or others; slbd sets its mode to 0700 "
                               "when it starts, --check leaves it as it is (run chmod 700)",
                               certs);
    }
    struct slb_certstore *store = slb_certstore_open_readonly(state_dir, err);
    if (!store)
        return SLB_EINVAL;
    json_t *doc = NULL;
    struct slb_config *cfg = NULL;
    rc = slb_state_load_config(state_dir, &doc, err);
    if (rc == 0) {
        struct slb_cert_lookup lookup = {cert_type_of, store, 0};
        rc = slb_config_from_json(doc, &lookup, &cfg, err);
        if (rc < 0)
            name_config_file(err, state_dir);
    }
    slb_config_free(cfg);
    json_decref(doc);
    slb_certstore_free(store);
    return rc;
}

/* An ACME certificate was issued or renewed: a renewal reaches the listeners using it the way
 * an API replace does (a new snapshot, no connection dropped). */
static int acme_stored(const char *id, bool created, void *data, struct slb_err *err)
{
    struct slb_ctl *ctl = data;
    if (ctl->ocsp)
        slb_ocsp_fetcher_tick(ctl->ocsp);
    if (created)
        return 0;
    return slb_ctl_apply(ctl, json_incref(ctl->doc), false, err);
}

/* The admin socket handed over, when it listens on the address we are told to use. */
int slb_ctl_inherited_admin_fd(struct slb_ctl *ctl, const char *addr)
{
    int fd = ctl->handover.admin_fd;
    ctl->handover.admin_fd = -1;
    struct sockaddr_storage ss;
    socklen_t len;
    char key[96];
    if (fd >= 0 && slb_config_parse_hostport(addr, &ss, &len) == 0) {
        slb_handover_addr_key(&ss, key, sizeof(key));
        if (strcmp(key, ctl->handover.admin_key) == 0)
            return fd;
    }
    if (fd >= 0)
        close(fd);
    return -1;
}

int slb_ctl_init(struct slb_ctl *ctl, const struct slb_options *opt, struct slb_err *err)
{
    memset(ctl, 0, sizeof(*ctl));
    ctl->ack_fd = ctl->signal_fd = ctl->lock_fd = ctl->upgrade_fd = ctl->upgrade_conn = -1;
    ctl->admin_fd = -1;
    ctl->handover.conn = ctl->handover.lock_fd = ctl->handover.admin_fd = -1;
    snprintf(ctl->state_dir, sizeof(ctl->state_dir), "%s", opt->state_dir);
    ctl->started_ms = slb_wall_ms();
    ctl->reload_ok = true; /* the start is the first load */
    ctl->reload_ok_ms = ctl->started_ms;
    slb_timer_init(&ctl->upgrade_timer, upgrade_timeout_cb, ctl);
    /* An upgrade asks the running slbd for its sockets and its lock first: until we tell it we
     * serve, it serves as before, and refuses configuration changes we could miss. */
    if (opt->upgrade && (slb_handover_request(opt->state_dir, &ctl->handover, err) < 0 ||
                         slb_cluster_handover_check(&opt->cluster, ctl->handover.cluster, err) < 0))
        return SLB_EINVAL;
    if (load_state(ctl, opt, &ctl->start_doc, err) < 0)
        return SLB_EINVAL;
    if (slb_state_admin_token(opt->state_dir, ctl->token, sizeof(ctl->token), err) < 0)
        return SLB_EINVAL;
    if (slb_loop_init(&ctl->loop) < 0)
        return slb_err_set(err, 500, "internal", "", "cannot create the control loop: %s",
                           strerror(errno));
    if (slb_httpc_init(&ctl->httpc, &ctl->loop) < 0 ||
        !(ctl->ocsp = slb_ocsp_fetcher_new(ctl->certs, &ctl->httpc, opt->state_dir)))
        return slb_err_set(err, 500, "internal", "", "cannot start the outbound HTTP client");
    if (!(ctl->acme = slb_acme_new(ctl->certs, &ctl->httpc, opt->state_dir, acme_stored, ctl, err)))
        return SLB_EINVAL;
    ctl->ack_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ctl->nworkers = opt->workers;
    ctl->workers = calloc((size_t)opt->workers, sizeof(*ctl->workers));
    if (ctl->ack_fd < 0 || !ctl->workers)
        return slb_err_set(err, 500, "internal", "", "cannot allocate workers");
    slb_registry_init(&ctl->reg, opt->workers);
    ctl->reg.inherited = ctl->handover.socks;
    ctl->handover.socks = NULL;
    ctl->health = slb_health_new(&ctl->loop);
    /* Each worker holds its share of the connection cap, counted by itself: nothing is shared
     * between workers on the accept and close paths (docs/architecture.md). */
    unsigned long nofile, reserve;
    unsigned long share = slb_conn_cap(&nofile, &reserve) / (unsigned long)opt->workers;
    ctl->conn_cap = (share ? share : 1) * (unsigned long)opt->workers;
    slb_info("connection cap %lu (open-file limit %lu, %lu descriptors reserved, two per "
             "connection)",
             ctl->conn_cap, nofile, reserve);
    /* Workers start with an empty snapshot so a bad config.json leaves nothing half-bound. */
    for (int i = 0; i < opt->workers; i++) {
        int rc = slb_worker_start(&ctl->workers[i], i, ctl->ack_fd, share ? share : 1);
        if (rc < 0) {
            ctl->nworkers = i;
            return slb_err_set(err, 500, "internal", "", "cannot start worker %d: %s", i,
                               slb_strerror(rc));
        }
    }
    struct slb_config *empty = NULL;
    json_t *edoc = json_object();
    slb_config_from_json(edoc, NULL, &empty, err);
    json_decref(edoc);
    struct slb_snapshot *s0 = empty ? slb_snapshot_build(&ctl->reg, empty, err) : NULL;
    if (!s0)
        return SLB_EINVAL;
    publish(ctl, s0);
    return 0;
}

/* Stop accepting and drain (bounded by settings.drain_timeout_s); gentle after a hand-over. */
static void stop_workers(struct slb_ctl *ctl, bool gentle)
{
    uint64_t drain_ms =
        ctl->cur ? (uint64_t)ctl->cur->cfg->settings.drain_timeout_s * 1000u : 10000u;
    for (int i = 0; i < ctl->nworkers; i++)
        slb_worker_request_stop(&ctl->workers[i], drain_ms, gentle);
    for (int i = 0; i < ctl->nworkers; i++)
        slb_worker_join(&ctl->workers[i]);
    ctl->nworkers = 0;
}

/* After slb_ctl_init, once the program started the admin API (an upgrade's admin socket
 * included): once the configuration is published the workers accept, and after an upgrade's
 * commit nothing may fail any more. */
int slb_ctl_start(struct slb_ctl *ctl, const struct slb_options *opt, struct slb_err *err)
{
    json_t *doc = ctl->start_doc;
    ctl->start_doc = NULL;
    if (slb_ctl_apply(ctl, doc, false, err) < 0) {
        name_config_file(err, opt->state_dir);
        return SLB_EINVAL;
    }
    slb_registry_close_inherited(&ctl->reg);
    if (opt->cluster.endpoints &&
        !(ctl->cluster = slb_cluster_start(ctl, &opt->cluster, opt->admin_addrs[0],
                                           ctl->cluster_start_rev, err)))
        return SLB_EINVAL;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    ctl->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (ctl->signal_fd >= 0) {
        slb_io_init(&ctl->signal_io, ctl->signal_fd, signal_cb, ctl);
        slb_io_set(&ctl->loop, &ctl->signal_io, EPOLLIN);
    }
    slb_timer_init(&ctl->sweep_timer, sweep_cb, ctl);
    slb_timer_start(&ctl->loop, &ctl->sweep_timer, SWEEP_INTERVAL_MS);
    if (opt->upgrade && upgrade_commit(ctl, err) < 0) {
        /* We may have accepted connections already: they finish, as when stopping. */
        stop_workers(ctl, true);
        return SLB_EINVAL;
    }
    if (opt->upgrade)
        slb_cluster_took_over(ctl->cluster);
    upgrade_listen(ctl);
    if (opt->upgrade) {
        /* Last: whoever waits for the lock file to name us finds everything in place. Under
         * systemd (NotifyAccess=all) the service's main process becomes us. */
        write_lock_pid(ctl);
        slb_notify("MAINPID=%ld\nREADY=1", (long)getpid());
        slb_handover_deinit(&ctl->handover); /* the old process may exit now */
        if (opt->ready_fd >= 0) {
            /* --detach: the command that started us ends now, with success. */
            ssize_t w = write(opt->ready_fd, "1", 1);
            (void)w;
            close(opt->ready_fd);
        }
    }
    return 0;
}

int slb_ctl_run(struct slb_ctl *ctl)
{
    slb_log_thread_name("control");
    int rc = slb_loop_run(&ctl->loop);
    /* Graceful stop: stop the clients (the admin API), tell workers to stop accepting and
     * drain (gently after a hand-over). */
    stop_clients(ctl);
    stop_workers(ctl, ctl->handover_state == SLB_HANDOVER_DONE);
    if (ctl->upgrade_conn >= 0 && ctl->handover_state == SLB_HANDOVER_DONE) {
        struct pollfd p = {.fd = ctl->upgrade_conn, .events = POLLIN};
        poll(&p, 1, 10000);
    }
    slb_info("stopped");
    return rc;
}

void slb_ctl_deinit(struct slb_ctl *ctl)
{
    stop_clients(ctl);
    for (int i = 0; i < ctl->nworkers; i++) {
        slb_worker_request_stop(&ctl->workers[i], 0, false);
        slb_worker_join(&ctl->workers[i]);
    }
    slb_health_free(ctl->health);
    ctl->health = NULL;
    slb_access_shutdown();
    slb_acme_free(ctl->acme);
    ctl->acme = NULL;
    slb_ocsp_fetcher_free(ctl->ocsp);
    ctl->ocsp = NULL;
    slb_cluster_free(ctl->cluster, true);
    ctl->cluster = NULL;
    slb_httpc_deinit(&ctl->httpc);
    if (ctl->cur) {
        slb_snapshot_retire(&ctl->reg, ctl->cur);
        ctl->cur = NULL;
    }
    slb_registry_close_unused(&ctl->reg, NULL);
    slb_registry_deinit(&ctl->reg);
    slb_tls_set_store(NULL, NULL);
    slb_ticket_ring_unref(ctl->tickets);
    slb_certstore_free(ctl->certs);
    slb_backend_free(ctl->backend);
    json_decref(ctl->doc);
    json_decref(ctl->start_doc);
    free(ctl->workers);
    if (ctl->ack_fd >= 0)
        close(ctl->ack_fd);
    if (ctl->signal_fd >= 0)
        close(ctl->signal_fd);
    upgrade_end(ctl);
    while (ctl->upgrade_busy) {
        struct slb_busy_conn *b = ctl->upgrade_busy;
        ctl->upgrade_busy = b->next;
        close(b->io.fd);
        free(b);
    }
    slb_handover_deinit(&ctl->handover);
    if (ctl->upgrade_fd >= 0) {
        /* Still ours (no hand-over): remove it while we hold the lock. */
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s/%s", ctl->state_dir, SLB_HANDOVER_SOCK);
        unlink(path);
        close(ctl->upgrade_fd);
        ctl->upgrade_fd = -1;
    }
    if (ctl->lock_fd >= 0)
        close(ctl->lock_fd);
    slb_loop_deinit(&ctl->loop);
}
