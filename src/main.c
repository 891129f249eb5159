/* SPDX-License-Identifier: Apache-2.0 */
/* slbd: parse the command line, validate the state directory without changing it, then start
 * the control thread's state and run it. */
#include "admin/admin.h"
#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/version.h"
#include "daemon/control.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: slbd [--state-dir DIR] [--admin ADDR:PORT|unix:PATH]... "
               "[--admin-cert FILE --admin-key FILE] [--admin-auth-failures N] [--workers N] "
               "[--log-level debug|info|warn|error] [--log-format text|json] "
               "[--check | --upgrade [--detach]] "
               "[--cluster URL[,URL...] --node NAME --cluster-key-file FILE "
               "[--cluster-prefix PREFIX] [--bind-host ADDR] "
               "[--etcd-cacert FILE] [--etcd-cert FILE --etcd-key FILE]] "
               "[--version]\n");
}

static void print_err(const char *what, const struct slb_err *err)
{
    fprintf(stderr, "slbd: %s: %s%s%s (%s)\n", what, err->where, err->where[0] ? ": " : "",
            err->msg, err->code);
}

/* The admin API stops before the workers drain (or once a new process took over from us): no
 * change can start while they do. */
static struct slb_ctl ctl;

static void stop_admin(void *arg)
{
    /* After a hand-over the unix socket files serve the next process: leave them. */
    if (ctl.handover_state == SLB_HANDOVER_DONE)
        slb_admin_keep_paths(arg);
    slb_admin_free(arg);
}

/* --upgrade --detach, for systemd's ExecReload (a command that must end): the new daemon is a
 * child, forked before any thread starts; this process exits 0 once the child took over, or
 * with the child's code when it failed. Returns -1 in the child, which goes on. */
static int detach_upgrade(struct slb_options *opt)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "slbd: --detach: %s\n", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "slbd: --detach: %s\n", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        close(p[0]);
        setsid(); /* not killed with the invoking command's process group */
        opt->ready_fd = p[1];
        return -1;
    }
    close(p[1]);
    char c;
    ssize_t n;
    do
        n = read(p[0], &c, 1);
    while (n < 0 && errno == EINTR);
    close(p[0]);
    if (n == 1)
        return 0;
    int st = 0;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) == 0)
        return 1;
    return WEXITSTATUS(st);
}

/* The cluster options go together (docs/configuration.md, "Cluster mode"). */
static int cluster_options(const struct slb_options *opt)
{
    const struct slb_cluster_opts *c = &opt->cluster;
    if (!c->endpoints) {
        if (c->node || c->key_file || c->prefix || c->cacert || c->cert || c->key) {
            fprintf(stderr, "slbd: --node, --cluster-key-file, --cluster-prefix and --etcd-* "
                            "need --cluster\n");
            return -1;
        }
        return 0;
    }
    if (!c->node || !c->key_file) {
        fprintf(stderr, "slbd: --cluster needs --node NAME and --cluster-key-file FILE\n");
        return -1;
    }
    if (!slb_config_name_ok(c->node)) {
        fprintf(stderr, "slbd: --node \"%s\": a name of letters, digits, '-', '_' and '.'\n",
                c->node);
        return -1;
    }
    if (c->prefix && (c->prefix[0] != '/' || c->prefix[strlen(c->prefix) - 1] != '/' ||
                      strlen(c->prefix) > 64)) {
        fprintf(stderr, "slbd: --cluster-prefix must start and end with '/' (at most 64 "
                        "characters)\n");
        return -1;
    }
    if ((c->cert == NULL) != (c->key == NULL)) {
        fprintf(stderr, "slbd: --etcd-cert and --etcd-key go together\n");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct slb_options opt = {
        .state_dir = "./slbd-state",
        .workers = (int)sysconf(_SC_NPROCESSORS_ONLN),
        .admin_auth_failures = -1,
        .ready_fd = -1,
    };
    bool detach = false;
    const char *bind_host = NULL;
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 's'},
        {"admin", required_argument, NULL, 'a'},
        {"admin-cert", required_argument, NULL, 'C'},
        {"admin-key", required_argument, NULL, 'K'},
        {"admin-auth-failures", required_argument, NULL, 'F'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 'c'},
        {"upgrade", no_argument, NULL, 'u'},
        {"detach", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"log-format", required_argument, NULL, 'L'},
        {"cluster", required_argument, NULL, 1000},
        {"node", required_argument, NULL, 1001},
        {"cluster-key-file", required_argument, NULL, 1002},
        {"cluster-prefix", required_argument, NULL, 1003},
        {"bind-host", required_argument, NULL, 1004},
        {"etcd-cacert", required_argument, NULL, 1005},
        {"etcd-cert", required_argument, NULL, 1006},
        {"etcd-key", required_argument, NULL, 1007},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "s:a:w:l:chV", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            opt.state_dir = optarg;
            break;
        case 'a':
            if (opt.nadmin == (int)(sizeof(opt.admin_addrs) / sizeof(opt.admin_addrs[0]))) {
                fprintf(stderr, "slbd: --admin is given too many times (at most %d)\n", opt.nadmin);
                return 2;
            }
            opt.admin_addrs[opt.nadmin++] = optarg;
            break;
        case 'C':
            opt.admin_cert = optarg;
            break;
        case 'K':
            opt.admin_key = optarg;
            break;
        case 'F': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || end == optarg || n < 0 || n > 1000000) {
                fprintf(stderr, "slbd: --admin-auth-failures must be 0..1000000\n");
                return 2;
            }
            opt.admin_auth_failures = (int)n;
            break;
        }
        case 'w': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > SLB_MAX_WORKERS) {
                fprintf(stderr, "slbd: --workers must be 1..%d\n", SLB_MAX_WORKERS);
                return 2;
            }
            opt.workers = (int)n;
            break;
        }
        case 'l':
            if (slb_log_set_level(optarg) < 0) {
                fprintf(stderr, "slbd: unknown log level \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'L':
            if (slb_log_set_format(optarg) < 0) {
                fprintf(stderr, "slbd: unknown log format \"%s\" (text or json)\n", optarg);
                return 2;
            }
            break;
        case 'c':
            opt.check_only = true;
            break;
        case 'u':
            opt.upgrade = true;
            break;
        case 'D':
            detach = true;
            break;
        case 1000:
            opt.cluster.endpoints = optarg;
            break;
        case 1001:
            opt.cluster.node = optarg;
            break;
        case 1002:
            opt.cluster.key_file = optarg;
            break;
        case 1003:
            opt.cluster.prefix = optarg;
            break;
        case 1004:
            bind_host = optarg;
            break;
        case 1005:
            opt.cluster.cacert = optarg;
            break;
        case 1006:
            opt.cluster.cert = optarg;
            break;
        case 1007:
            opt.cluster.key = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("slbd %s\n", slb_version());
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || (opt.check_only && opt.upgrade) || (detach && !opt.upgrade)) {
        usage(stderr);
        return 2;
    }
    if ((opt.admin_cert == NULL) != (opt.admin_key == NULL)) {
        fprintf(stderr, "slbd: --admin-cert and --admin-key go together\n");
        return 2;
    }
    if (cluster_options(&opt) < 0)
        return 2;
    if (bind_host && slb_config_set_bind_host(bind_host) < 0) {
        fprintf(stderr, "slbd: --bind-host must be an IPv4 or IPv6 address, not \"%s\"\n",
                bind_host);
        return 2;
    }
    if (opt.nadmin == 0)
        opt.admin_addrs[opt.nadmin++] = "127.0.0.1:9000";
    if (opt.workers < 1)
        opt.workers = 1;
    if (opt.workers > SLB_MAX_WORKERS)
        opt.workers = SLB_MAX_WORKERS;

    /* A failed upgrade leaves the running slbd as it was: say so. */
    const char *fail = opt.check_only ? "invalid state"
                       : opt.upgrade  ? "upgrade failed, the running slbd goes on unchanged"
                                      : "cannot start";
    struct slb_err err = {0};
    if (slb_ctl_check(opt.state_dir, !opt.check_only, &err) < 0) {
        print_err(fail, &err);
        return 1;
    }
    if (opt.check_only) {
        printf("slbd: %s is valid\n", opt.state_dir);
        return 0;
    }
    if (detach) {
        int rc = detach_upgrade(&opt);
        if (rc >= 0)
            return rc;
    }

    /* A load balancer holds two descriptors per proxied connection: take the hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* Signals go to the control thread's signalfd: block them before any thread starts so
     * every thread inherits the mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (slb_ctl_init(&ctl, &opt, &err) < 0) {
        print_err(fail, &err);
        slb_ctl_deinit(&ctl);
        return 1;
    }
    /* The admin API before the configuration; its first address serves on the socket an
     * upgrade was handed when the running slbd listened there too. */
    struct slb_admin *admin =
        slb_admin_new(&ctl, &opt, slb_ctl_inherited_admin_fd(&ctl, opt.admin_addrs[0]), &err);
    if (!admin) {
        print_err(fail, &err);
        slb_ctl_deinit(&ctl);
        return 1;
    }
    slb_ctl_on_stop(&ctl, stop_admin, admin);
    slb_ctl_set_admin_fd(&ctl, slb_admin_listen_fd(admin));
    if (slb_ctl_start(&ctl, &opt, &err) < 0) {
        print_err(fail, &err);
        slb_ctl_deinit(&ctl);
        return 1;
    }
    slb_info("slbd %s started: %d workers, state dir %s", slb_version(), opt.workers,
             opt.state_dir);
    /* The first configuration's listeners and the admin API are open: ready for systemd (the
     * STATUS line was set when that configuration became active). An upgrade said it with
     * its new main pid. */
    if (!opt.upgrade)
        slb_notify("READY=1");
    int rc = slb_ctl_run(&ctl);
    slb_ctl_deinit(&ctl);
    return rc < 0 ? 1 : 0;
}
