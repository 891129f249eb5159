/* SPDX-License-Identifier: Apache-2.0 */
/* slbd: parse the command line, validate the state directory without changing it, then start
 * the control thread's state and run it. */
#include "admin/admin.h"
#include "core/err.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/version.h"
#include "daemon/control.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: slbd [--state-dir DIR] [--admin ADDR:PORT|unix:PATH]... "
               "[--admin-cert FILE --admin-key FILE] [--admin-auth-failures N] [--workers N] "
               "[--log-level debug|info|warn|error] [--check] [--version]\n");
}

static void print_err(const char *what, const struct slb_err *err)
{
    fprintf(stderr, "slbd: %s: %s%s%s (%s)\n", what, err->where, err->where[0] ? ": " : "",
            err->msg, err->code);
}

/* The admin API stops before the workers drain: no change can start while they do. */
static void stop_admin(void *arg)
{
    slb_admin_free(arg);
}

int main(int argc, char **argv)
{
    struct slb_options opt = {
        .state_dir = "./slbd-state",
        .workers = (int)sysconf(_SC_NPROCESSORS_ONLN),
        .admin_auth_failures = -1,
    };
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 's'},
        {"admin", required_argument, NULL, 'a'},
        {"admin-cert", required_argument, NULL, 'C'},
        {"admin-key", required_argument, NULL, 'K'},
        {"admin-auth-failures", required_argument, NULL, 'F'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
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
        case 'c':
            opt.check_only = true;
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
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if ((opt.admin_cert == NULL) != (opt.admin_key == NULL)) {
        fprintf(stderr, "slbd: --admin-cert and --admin-key go together\n");
        return 2;
    }
    if (opt.nadmin == 0)
        opt.admin_addrs[opt.nadmin++] = "127.0.0.1:9000";
    if (opt.workers < 1)
        opt.workers = 1;
    if (opt.workers > SLB_MAX_WORKERS)
        opt.workers = SLB_MAX_WORKERS;

    struct slb_err err = {0};
    if (slb_ctl_check(opt.state_dir, !opt.check_only, &err) < 0) {
        print_err(opt.check_only ? "invalid state" : "cannot start", &err);
        return 1;
    }
    if (opt.check_only) {
        printf("slbd: %s is valid\n", opt.state_dir);
        return 0;
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
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct slb_ctl ctl;
    if (slb_ctl_init(&ctl, &opt, &err) < 0) {
        print_err("cannot start", &err);
        slb_ctl_deinit(&ctl);
        return 1;
    }
    struct slb_admin *admin = slb_admin_new(&ctl, &opt, &err);
    if (!admin) {
        print_err("cannot start", &err);
        slb_ctl_deinit(&ctl);
        return 1;
    }
    slb_ctl_on_stop(&ctl, stop_admin, admin);
    slb_info("slbd %s started: %d workers, state dir %s", slb_version(), opt.workers,
             opt.state_dir);
    /* The first configuration's listeners and the admin API are open: ready for systemd (the
     * STATUS line was set when that configuration became active). */
    slb_notify("READY=1");
    int rc = slb_ctl_run(&ctl);
    slb_ctl_deinit(&ctl);
    return rc < 0 ? 1 : 0;
}
