/* SPDX-License-Identifier: Apache-2.0 */
/* The control thread: state directory, configuration changes, synchronous publication to the
 * workers, signals and the retirement of old snapshots. */
#include "daemon/control.h"

#include "acme/order.h"
#include "cert/ocsp_fetch.h"
#include "cert/store.h"
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
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define PUBLISH_TIMEOUT_MS 10000
#define SWEEP_INTERVAL_MS 1000

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
    if (st->access_log[0] && strcmp(st->access_log, "stdout") != 0)
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
    struct slb_cert_lookup lookup = {cert_type_of, ctl->certs};
    int rc = slb_config_from_json(doc, &lookup, &cfg, err);
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
        uint64_t expect = ctl->backend->ops->shared ? ctl->config_rev : SLB_REV_ANY;
        rc = slb_state_config_save(ctl->backend, snap->cfg->json, expect, &ctl->config_rev, err);
        if (rc < 0) {
            slb_snapshot_discard(&ctl->reg, snap);
            return rc;
        }
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
    json_t *doc = NULL;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/config.json", ctl->state_dir);
    if (access(path, F_OK) < 0) {
        /* A missing file means "first start" at start-up; on a reload it is an accident
         * that must not wipe every listener. */
        slb_error("reload refused, keeping the running configuration: %s is missing", path);
        slb_notify("STATUS=reload refused, keeping the running configuration: %s is missing", path);
        return;
    }
    uint64_t rev = 0;
    if (slb_state_config_load(ctl->backend, &doc, &rev, &err) < 0 ||
        slb_ctl_apply(ctl, doc, false, &err) < 0) {
        slb_error("reload refused, keeping the running configuration: %s", err.msg);
        slb_notify("STATUS=reload refused, keeping the running configuration: %s", err.msg);
        return;
    }
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
    if (ctl->ocsp)
        slb_ocsp_fetcher_tick(ctl->ocsp);
    if (ctl->acme)
        slb_acme_tick(ctl->acme);
    if (slb_ticket_ring_tick(&ctl->tickets, ctl->backend)) {
        /* New ticket keys reach workers the way every change does: a new snapshot. */
        slb_tls_set_store(ctl->certs, ctl->tickets);
        struct slb_err err = {0};
        if (slb_ctl_apply(ctl, json_incref(ctl->doc), false, &err) < 0)
            slb_error("ticket key rotation: %s", err.msg);
        else
            slb_info("session ticket keys rotated");
    }
    slb_timer_start(loop, t, SWEEP_INTERVAL_MS);
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

static int load_state(struct slb_ctl *ctl, const char *dir, json_t **doc, struct slb_err *err)
{
    /* The lock first: the clean-up in slb_state_prepare removes temporary files, which may
     * be another running slbd's writes in progress. */
    if (slb_state_lock(dir, &ctl->lock_fd, err) < 0 || slb_state_prepare(dir, err) < 0)
        return SLB_EINVAL;
    ctl->backend = slb_backend_dir_new(dir, false, err);
    if (!ctl->backend || slb_backend_dir_prepare(ctl->backend, err) < 0)
        return SLB_EINVAL;
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
        struct slb_cert_lookup lookup = {cert_type_of, store};
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

int slb_ctl_init(struct slb_ctl *ctl, const struct slb_options *opt, struct slb_err *err)
{
    memset(ctl, 0, sizeof(*ctl));
    ctl->ack_fd = ctl->signal_fd = ctl->lock_fd = -1;
    snprintf(ctl->state_dir, sizeof(ctl->state_dir), "%s", opt->state_dir);
    ctl->started_ms = slb_wall_ms();
    json_t *doc = NULL;
    if (load_state(ctl, opt->state_dir, &doc, err) < 0)
        return SLB_EINVAL;
    if (slb_state_admin_token(opt->state_dir, ctl->token, sizeof(ctl->token), err) < 0)
        goto fail;
    if (slb_loop_init(&ctl->loop) < 0) {
        slb_err_set(err, 500, "internal", "", "cannot create the control loop: %s",
                    strerror(errno));
        goto fail;
    }
    if (slb_httpc_init(&ctl->httpc, &ctl->loop) < 0 ||
        !(ctl->ocsp = slb_ocsp_fetcher_new(ctl->certs, &ctl->httpc, opt->state_dir))) {
        slb_err_set(err, 500, "internal", "", "cannot start the outbound HTTP client");
        goto fail;
    }
    if (!(ctl->acme = slb_acme_new(ctl->certs, &ctl->httpc, opt->state_dir, acme_stored, ctl, err)))
        goto fail;
    ctl->ack_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ctl->nworkers = opt->workers;
    ctl->workers = calloc((size_t)opt->workers, sizeof(*ctl->workers));
    if (ctl->ack_fd < 0 || !ctl->workers) {
        slb_err_set(err, 500, "internal", "", "cannot allocate workers");
        goto fail;
    }
    slb_registry_init(&ctl->reg, opt->workers);
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
            slb_err_set(err, 500, "internal", "", "cannot start worker %d: %s", i,
                        slb_strerror(rc));
            ctl->nworkers = i;
            goto fail;
        }
    }
    struct slb_config *empty = NULL;
    json_t *edoc = json_object();
    slb_config_from_json(edoc, NULL, &empty, err);
    json_decref(edoc);
    struct slb_snapshot *s0 = empty ? slb_snapshot_build(&ctl->reg, empty, err) : NULL;
    if (!s0)
        goto fail;
    publish(ctl, s0);
    if (slb_ctl_apply(ctl, doc, false, err) < 0) {
        doc = NULL;
        name_config_file(err, opt->state_dir);
        goto fail;
    }
    doc = NULL;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    ctl->signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (ctl->signal_fd >= 0) {
        slb_io_init(&ctl->signal_io, ctl->signal_fd, signal_cb, ctl);
        slb_io_set(&ctl->loop, &ctl->signal_io, EPOLLIN);
    }
    slb_timer_init(&ctl->sweep_timer, sweep_cb, ctl);
    slb_timer_start(&ctl->loop, &ctl->sweep_timer, SWEEP_INTERVAL_MS);
    return 0;
fail:
    json_decref(doc);
    return SLB_EINVAL;
}

void slb_ctl_on_stop(struct slb_ctl *ctl, void (*fn)(void *arg), void *arg)
{
    ctl->on_stop = fn;
    ctl->on_stop_arg = arg;
}

static void stop_clients(struct slb_ctl *ctl)
{
    void (*fn)(void *) = ctl->on_stop;
    ctl->on_stop = NULL;
    if (fn)
        fn(ctl->on_stop_arg);
}

int slb_ctl_run(struct slb_ctl *ctl)
{
    slb_log_thread_name("control");
    int rc = slb_loop_run(&ctl->loop);
    /* Graceful stop: stop the clients (the admin API), tell workers to stop accepting and
     * drain. */
    stop_clients(ctl);
    uint64_t drain_ms =
        ctl->cur ? (uint64_t)ctl->cur->cfg->settings.drain_timeout_s * 1000u : 10000u;
    for (int i = 0; i < ctl->nworkers; i++)
        slb_worker_request_stop(&ctl->workers[i], drain_ms);
    for (int i = 0; i < ctl->nworkers; i++)
        slb_worker_join(&ctl->workers[i]);
    ctl->nworkers = 0;
    slb_info("stopped");
    return rc;
}

void slb_ctl_deinit(struct slb_ctl *ctl)
{
    stop_clients(ctl);
    for (int i = 0; i < ctl->nworkers; i++) {
        slb_worker_request_stop(&ctl->workers[i], 0);
        slb_worker_join(&ctl->workers[i]);
    }
    slb_health_free(ctl->health);
    ctl->health = NULL;
    slb_access_shutdown();
    slb_acme_free(ctl->acme);
    ctl->acme = NULL;
    slb_ocsp_fetcher_free(ctl->ocsp);
    ctl->ocsp = NULL;
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
    free(ctl->workers);
    if (ctl->ack_fd >= 0)
        close(ctl->ack_fd);
    if (ctl->signal_fd >= 0)
        close(ctl->signal_fd);
    if (ctl->lock_fd >= 0)
        close(ctl->lock_fd);
    slb_loop_deinit(&ctl->loop);
}
