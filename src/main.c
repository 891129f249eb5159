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
    fprintf(f, "usage: slbd [--state-dir DIR] [--admin ADDR:PORT] [--workers N] "
               "[--log-level debug|info|warn|error] [--log-format text|json] [--check] "
               "[--version]\n");
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
        .admin_addr = "127.0.0.1:9000",
        .workers = (int)sysconf(_SC_NPROCESSORS_ONLN),
    };
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 's'},
        {"admin", required_argument, NULL, 'a'},
        {"workers", required_argument, NULL, 'w'},
        {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"log-format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "s:a:w:l:chV", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            opt.state_dir = optarg;
            break;
        case 'a':
            opt.admin_addr = optarg;
            break;
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
        case 'F':
            if (slb_log_set_format(optarg) < 0) {
                fprintf(stderr, "slbd: unknown log format \"%s\" (text or json)\n", optarg);
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
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    static struct slb_ctl ctl;
    if (slb_ctl_init(&ctl, &opt, &err) < 0) {
        print_err("cannot start", &err);
        slb_ctl_deinit(&ctl);
        return 1;
    }
    struct slb_admin *admin = slb_admin_new(&ctl, opt.admin_addr, &err);
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
