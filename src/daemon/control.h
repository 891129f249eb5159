/* SPDX-License-Identifier: Apache-2.0 */
/* The control thread: owns the configuration document, the state directory, the certificate
 * store, health checks and signals; the admin API runs on its loop. It builds snapshots and
 * publishes them to the workers synchronously: slb_ctl_apply returns only after every worker
 * adopted the new snapshot, so an API answer means "active everywhere". */
#ifndef SLB_DAEMON_CONTROL_H
#define SLB_DAEMON_CONTROL_H

#include "config/snapshot.h"
#include "daemon/cluster.h"
#include "daemon/worker.h"
#include "event/loop.h"
#include "net/handover.h"
#include "net/httpc.h"

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>

struct slb_health;
struct slb_backend;
struct slb_certstore;
struct slb_ticket_ring;
struct slb_busy_conn;
struct slb_ocsp_fetcher;
struct slb_acme;

struct slb_options {
    const char *state_dir;
    const char *admin_addrs[4]; /* "ADDR:PORT" or "unix:PATH" (SLB_ADMIN_MAX_LISTEN) */
    int nadmin;
    const char *admin_cert, *admin_key; /* PEM files: TCP admin addresses speak TLS */
    int admin_auth_failures;            /* per source and minute before 429; 0: no limit */
    int workers;
    bool check_only;
    bool upgrade; /* take the sockets and the state directory over from the running slbd */
    int ready_fd; /* --detach: one byte written once the upgrade took over, else -1 */
    struct slb_cluster_opts cluster; /* cluster.endpoints NULL: a single node */
};

/* Where a hand-over to a new process stands (the old process's side, net/handover.h). */
enum slb_handover_state {
    SLB_HANDOVER_NONE,
    SLB_HANDOVER_ASKED, /* a new process asked while an admin write waits for etcd: it waits */
    SLB_HANDOVER_SENT,  /* a new process has our sockets and is starting: no state writes */
    SLB_HANDOVER_DONE,  /* it serves: we stopped accepting and drain */
};

struct slb_ctl {
    char state_dir[PATH_MAX];
    char token[128];
    struct slb_loop loop;
    int nworkers;
    struct slb_worker *workers;
    int ack_fd;
    int lock_fd; /* flock on DIR/lock, held for the process's life (config/state.h) */
    struct slb_registry reg;
    struct slb_snapshot *cur;
    json_t *doc;       /* the normalized document of cur, owned */
    json_t *start_doc; /* the stored one, from slb_ctl_init to slb_ctl_start */
    /* Called once when the loop stops, before workers drain (the admin API closes there). */
    void (*on_stop)(void *arg);
    void *on_stop_arg;
    int admin_fd; /* the admin API's listening socket, to hand over (not ours to close) */
    struct slb_health *health;
    struct slb_backend *backend; /* the state: documents config, certs/<id>, tickets */
    uint64_t config_rev;         /* revision of the stored configuration document */
    struct slb_certstore *certs;
    struct slb_ticket_ring *tickets;
    struct slb_httpc httpc;        /* outbound HTTP on the control loop (OCSP, ...) */
    struct slb_ocsp_fetcher *ocsp; /* OCSP stapling schedule (cert/ocsp_fetch.h) */
    struct slb_acme *acme;         /* ACME accounts and orders (acme/order.h) */
    struct slb_timer sweep_timer;
    int signal_fd;
    struct slb_io signal_io;
    /* Upgrades: DIR/upgrade.sock, the new process's connection while one is in progress, and
     * its time limit; handover is the new side's conversation while we start. */
    int upgrade_fd;
    struct slb_io upgrade_io;
    int upgrade_conn;
    struct slb_io upgrade_conn_io;
    struct slb_busy_conn *upgrade_busy; /* later requests, to be answered "busy" */
    struct slb_timer upgrade_timer;
    enum slb_handover_state handover_state;
    long upgrade_pid;          /* the new process that asked, */
    uint64_t upgrade_asked_ms; /* and when (ASKED waits UPGRADE_WRITE_WAIT_MS at most) */
    struct slb_handover handover;
    bool stopping;
    uint64_t started_ms;
    /* The last SIGHUP reload (or the start): whether it was taken, and when one last was. */
    bool reload_ok;
    uint64_t reload_ok_ms;
    unsigned long conn_cap; /* client connections over all workers (slb_conn_cap) */
    /* Cluster mode (daemon/cluster.h): NULL on a single node. */
    struct slb_cluster *cluster;
    int64_t cluster_start_rev; /* the etcd revision the start loaded (0: from the cache) */
};

/* Load the state directory and start workers, with an empty configuration (with
 * opt->upgrade, after asking the running slbd for its sockets and its lock); err names the
 * file and field on failure. Then the program starts the admin API and slb_ctl_start. */
int slb_ctl_init(struct slb_ctl *ctl, const struct slb_options *opt, struct slb_err *err);
/* Apply the stored configuration, take signals, and with opt->upgrade complete the hand-over:
 * from then on this process serves alone and owns the state directory. */
int slb_ctl_start(struct slb_ctl *ctl, const struct slb_options *opt, struct slb_err *err);
/* Validate doc, build and publish it; when persist is set it is written to config.json first
 * (durably). Takes ownership of doc. On failure nothing changes. */
int slb_ctl_apply(struct slb_ctl *ctl, json_t *doc, bool persist, struct slb_err *err);
/* Everything slb_ctl_apply checks (bind addresses and TLS contexts included: the snapshot
 * is built, then dropped), without storing or publishing anything: *out is the normalized
 * document that applying doc would store. Takes ownership of doc. */
int slb_ctl_dry_run(struct slb_ctl *ctl, json_t *doc, json_t **out, struct slb_err *err);
/* The clients of the control loop (the admin API) are started by the program above the daemon
 * (src/main.c), so the daemon never calls up into them: fn(arg) runs once when the loop stops,
 * before the workers drain, or from slb_ctl_deinit. */
void slb_ctl_on_stop(struct slb_ctl *ctl, void (*fn)(void *arg), void *arg);
/* The admin API's listening socket, which an upgrade hands to the next process with the
 * listeners' (it stays the admin API's; on_stop closes it when the next process serves). */
void slb_ctl_set_admin_fd(struct slb_ctl *ctl, int fd);
/* With opt->upgrade: the admin socket the running slbd handed over when it listens on addr
 * (the caller owns it), else -1. */
int slb_ctl_inherited_admin_fd(struct slb_ctl *ctl, const char *addr);
/* A new process is taking over (slbd --upgrade): changes must wait, as it may have read the
 * state already (503 upgrading in the admin API). */
bool slb_ctl_handing_over(const struct slb_ctl *ctl);
/* Run the control loop until SIGTERM/SIGINT, then drain workers and return 0. */
int slb_ctl_run(struct slb_ctl *ctl);
void slb_ctl_deinit(struct slb_ctl *ctl);

/* Validate the state directory (certificates and config.json) without changing anything in it:
 * all of slbd --check (start false), and the first step of a start (start true), so that a
 * start refused for its configuration leaves no new file behind. A start also accepts a missing
 * directory (a first start) and a certs/ directory others can read (slb_ctl_init tightens it). */
int slb_ctl_check(const char *state_dir, bool start, struct slb_err *err);

#endif
