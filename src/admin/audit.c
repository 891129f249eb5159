/* SPDX-License-Identifier: Apache-2.0 */
/* Audit lines are appended with one write(2) on an O_APPEND descriptor, so a line is never
 * torn by another writer and a crash loses at most the line being written. Reading takes the
 * file's end only: the log grows without bound until the operator rotates it (copytruncate,
 * or move it away and restart). */
#include "admin/audit.h"
#include "admin/routes.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The end of the file read by GET /v1/audit: enough for SLB_AUDIT_LIMIT_MAX lines. */
#define AUDIT_TAIL_MAX (8u << 20)

/* Owned by the admin server, for the daemon's life. */
struct slb_audit {
    int fd;
    char path[4200];
};

struct slb_audit *slb_audit_open(const char *state_dir, struct slb_err *err)
{
    struct slb_audit *a = calloc(1, sizeof(*a));
    if (!a) {
        slb_err_set(err, 500, "internal", "", "out of memory");
        return NULL;
    }
    snprintf(a->path, sizeof(a->path), "%s/%s", state_dir, SLB_AUDIT_FILE);
    const char *path = a->path;
    a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->fd < 0) {
        slb_err_set(err, 500, "unwritable", path, "cannot open %s: %s", path, strerror(errno));
        free(a);
        return NULL;
    }
    return a;
}

void slb_audit_free(struct slb_audit *a)
{
    if (!a)
        return;
    close(a->fd);
    free(a);
}

static json_t *rev(const char *r)
{
    return r && r[0] ? json_string(r) : json_null();
}

void slb_audit_write(struct slb_audit *a, const struct slb_audit_entry *e)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof(when) - n, ".%03ldZ", ts.tv_nsec / 1000000);
    json_t *line = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:i, s:s}", "time", when, "key", e->key, "source",
        e->source, "method", e->method, "path", e->path, "resource", e->resource, "old_revision",
        rev(e->old_rev), "new_revision", rev(e->new_rev), "status", e->status, "result", e->result);
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(line);
    if (!text) {
        slb_warn_limited("audit: cannot format a line (out of memory)");
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: the buffer is written by length */
    ssize_t w;
    do
        w = write(a->fd, text, len + 1);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)(len + 1))
        slb_warn_limited("audit: cannot append to %s: %s", SLB_AUDIT_FILE,
                         w < 0 ? strerror(errno) : "short write");
    free(text);
}

/* limit=N (1..SLB_AUDIT_LIMIT_MAX) is the only parameter; false with resp filled otherwise. */
static bool parse_limit(const char *query, long *limit, struct slb_admin_resp *resp)
{
    *limit = SLB_AUDIT_LIMIT_DEFAULT;
    if (!query[0])
        return true;
    if (strncmp(query, "limit=", 6) != 0) {
        slb_admin_error_simple(resp, 400, "unknown_parameter",
                               "unknown query parameter; this endpoint accepts: limit");
        return false;
    }
    char *end;
    errno = 0;
    long v = strtol(query + 6, &end, 10);
    if (*end || errno || end == query + 6 || v < 1 || v > SLB_AUDIT_LIMIT_MAX) {
        slb_admin_error_simple(resp, 400, "invalid_value", "limit: give a number from 1 to %d",
                               SLB_AUDIT_LIMIT_MAX);
        return false;
    }
    *limit = v;
    return true;
}

void slb_audit_route(struct slb_audit *a, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    if (!slb_admin_method_is(req, "GET")) {
        slb_admin_not_allowed(resp, "GET");
        return;
    }
    long limit;
    if (!parse_limit(req->query, &limit, resp))
        return;
    struct stat st;
    int rfd = open(a->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (rfd < 0 || fstat(rfd, &st) < 0) {
        slb_admin_error_simple(resp, 500, "internal", "cannot read the audit log: %s",
                               strerror(errno));
        if (rfd >= 0)
            close(rfd);
        return;
    }
    off_t from = st.st_size > (off_t)AUDIT_TAIL_MAX ? st.st_size - (off_t)AUDIT_TAIL_MAX : 0;
    size_t len = (size_t)(st.st_size - from);
    char *buf = malloc(len + 1);
    ssize_t got = buf ? pread(rfd, buf, len, from) : -1;
    close(rfd);
    if (got < 0) {
        free(buf);
        slb_admin_error_simple(resp, 500, "internal", "cannot read the audit log");
        return;
    }
    buf[got] = '\0';
    /* Walk back over the last limit complete lines. */
    char *start = buf + got;
    long n = 0;
    while (start > buf && n < limit) {
        char *p = start - 1; /* the newline ending the line before start */
        while (p > buf && p[-1] != '\n')
            p--;
        if (p == buf && from > 0)
            break; /* cut at the front: not a whole line */
        n++;
        start = p;
    }
    json_t *entries = json_array();
    for (char *p = start; p < buf + got;) {
        char *nl = memchr(p, '\n', (size_t)(buf + got - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(buf + got - p);
        json_t *v = json_loadb(p, l, 0, NULL);
        if (v)
            json_array_append_new(entries, v);
        p += l + 1;
    }
    free(buf);
    resp->json = json_pack("{s:o}", "entries", entries);
}
