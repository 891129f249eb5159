/* SPDX-License-Identifier: Apache-2.0 */
/* sd_notify's wire protocol: one datagram of "KEY=VALUE" lines to $NOTIFY_SOCKET. A socket is
 * opened per message: messages are rare (start, reload, configuration changes, stop), so no
 * descriptor stays open for the whole life of the daemon. */
#include "core/notify.h"

#include "core/err.h"
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills sa from $NOTIFY_SOCKET's value; returns the address length or a negative errno. */
static int notify_addr(const char *name, struct sockaddr_un *sa)
{
    size_t len = strlen(name);
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (name[0] != '/' && name[0] != '@')
        return -EAFNOSUPPORT; /* vsock ("vsock:...") and relative paths are not supported */
    if (len > sizeof(sa->sun_path) - (name[0] == '/' ? 1 : 0))
        return -ENAMETOOLONG;
    memcpy(sa->sun_path, name, len);
    if (name[0] == '@')
        sa->sun_path[0] = '\0'; /* abstract namespace: the length, not a NUL, ends the name */
    return (int)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/' ? 1 : 0));
}

int slb_notify(const char *fmt, ...)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !name[0])
        return 0;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof(msg))
        n = (int)sizeof(msg) - 1; /* a STATUS line cut short is still a valid message */
    struct sockaddr_un sa;
    int alen = notify_addr(name, &sa);
    int rc = alen;
    if (alen > 0) {
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
        } else {
            ssize_t w =
                sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, (socklen_t)alen);
            rc = w < 0 ? -errno : 1;
            close(fd);
        }
    }
    if (rc < 0)
        slb_warn("cannot notify the service manager at %s: %s", name, slb_strerror(rc));
    return rc;
}
