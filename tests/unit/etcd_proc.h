/* SPDX-License-Identifier: Apache-2.0 */
/* Real etcd processes for the unit tests that need one (test_etcd.c, test_state_etcd.c):
 * a free loopback port, a member spawned with its data and log under a work directory, and
 * every spawned member killed at the end. Included by one test file each (static). */
#ifndef SLB_TEST_ETCD_PROC_H
#define SLB_TEST_ETCD_PROC_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_PROCS 8
static pid_t procs[MAX_PROCS];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void kill_proc(pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i] == pid && pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            procs[i] = 0;
        }
    }
}

static void kill_all(void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        kill_proc(procs[i]);
}

/* A member named name on client port cport and peer port pport of the cluster described by
 * cluster ("n0=http://127.0.0.1:P0,...") whose members all share token, its data and log in
 * work. tls adds https and client authentication (work/ca.pem, server.pem, server.key). */
static pid_t spawn_etcd(const char *work, const char *name, int cport, int pport,
                        const char *cluster, const char *token, bool tls)
{
    char dir[128], curl[64], purl[64], log[128], ca[128], cert[128], key[128];
    snprintf(dir, sizeof(dir), "%s/%s.data", work, name);
    snprintf(curl, sizeof(curl), "%s://127.0.0.1:%d", tls ? "https" : "http", cport);
    snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", pport);
    snprintf(log, sizeof(log), "%s/%s.log", work, name);
    snprintf(ca, sizeof(ca), "%s/ca.pem", work);
    snprintf(cert, sizeof(cert), "%s/server.pem", work);
    snprintf(key, sizeof(key), "%s/server.key", work);
    /* clang-format off */
    const char *argv[40] = {
        "etcd", "--name", name, "--data-dir", dir,
        "--listen-client-urls", curl, "--advertise-client-urls", curl,
        "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
        "--initial-cluster", cluster, "--initial-cluster-state", "new",
        "--initial-cluster-token", token,
        "--heartbeat-interval", "50", "--election-timeout", "500",
        "--experimental-watch-progress-notify-interval", "300ms",
    };
    /* clang-format on */
    int argc = 25;
    if (tls) {
        const char *t[] = {
            "--client-cert-auth", "--trusted-ca-file", ca, "--cert-file", cert, "--key-file", key};
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
            argv[argc++] = t[i];
    }
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        /* Dies with the test, even when a sanitizer aborts it before atexit runs. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execvp("etcd", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < MAX_PROCS; i++) {
        if (procs[i] == 0) {
            procs[i] = pid;
            break;
        }
    }
    return pid;
}

#endif
