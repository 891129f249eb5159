/* SPDX-License-Identifier: Apache-2.0 */
/* The service manager's readiness protocol (sd_notify) without libsystemd: state lines such as
 * "READY=1" or "STATUS=..." sent as one datagram to the unix socket named by $NOTIFY_SOCKET. */
#ifndef SLB_CORE_NOTIFY_H
#define SLB_CORE_NOTIFY_H

/* Send the newline-separated assignments in fmt (e.g. "READY=1\nSTATUS=running") to
 * $NOTIFY_SOCKET: a path, or an abstract name when it starts with '@'. Returns 1 when sent, 0
 * when $NOTIFY_SOCKET is unset or empty (not run by a service manager), or a negative errno.
 * Failures are logged as warnings once per call; nothing here can stop the daemon. */
int slb_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
