/* SPDX-License-Identifier: Apache-2.0 */
/* The state directory: a read-only look at it, loading and durably saving config.json, and
 * the admin token that is created on first start. */
#include "config/state.h"
#include "core/fsio.h"
#include "core/log.h"
#include "state/backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_STATUS 500
#define TOKEN_FILE_MAX 4096
#define TOKEN_MIN 16

static int state_path(const char *dir, const char *name, char *dst, size_t size,
                      struct slb_err *err)
{
    if ((size_t)snprintf(dst, size, "%s/%s", dir, name) >= size)
        return slb_err_set(err, STATE_STATUS, "state_dir", dir,
                           "the state directory path %.200s is too long", dir);
    return 0;
}

int slb_state_prepare(const char *dir, struct slb_err *err)
{
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return slb_err_set(err, STATE_STATUS, "state_dir", dir,
                           "cannot create the state directory %s: %s", dir, strerror(errno));
    if (stat(dir, &st) < 0)
        return slb_err_set(err, STATE_STATUS, "state_dir", dir, "cannot use %s: %s", dir,
                           strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return slb_err_set(err, STATE_STATUS, "state_dir", dir,
                           "%s is not a directory; give --state-dir a directory", dir);
    int rc = slb_fs_check_owner(dir, &st, "state_insecure", err);
    if (rc)
        return rc;
    /* Others who can write here could replace config.json or the ticket keys: close the
     * directory to them, as certs/ is (its files stay as they are and are checked on load). */
    if (st.st_mode & 022) {
        slb_warn("%s was writable by group or others (mode %04o); setting its mode to 0700", dir,
                 (unsigned)(st.st_mode & 07777));
        if (chmod(dir, 0700) < 0)
            return slb_err_set(err, STATE_STATUS, "state_dir", dir, "cannot chmod %s: %s", dir,
                               strerror(errno));
    }
    /* Catch a read-only or foreign directory now rather than at the first API change. */
    if (access(dir, W_OK | X_OK) < 0)
        return slb_err_set(err, STATE_STATUS, "state_dir", dir,
                           "the state directory %s is not writable: %s", dir, strerror(errno));
    /* Temporary files of writes a crash interrupted: the renamed originals are intact. */
    char certs[4096];
    snprintf(certs, sizeof(certs), "%s/certs", dir);
    slb_fs_remove_leftovers(dir);
    slb_fs_remove_leftovers(certs);
    return 0;
}

int slb_state_lock(const char *dir, int *fd, struct slb_err *err)
{
    char path[4096];
    *fd = -1;
    int rc = state_path(dir, SLB_STATE_LOCK, path, sizeof(path), err);
    if (rc)
        return rc;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return slb_err_set(err, STATE_STATUS, "state_dir", dir,
                           "cannot create the state directory %s: %s", dir, strerror(errno));
    /* Not even a lock file in a directory another user controls. */
    struct stat st;
    if (stat(dir, &st) == 0 && (rc = slb_fs_check_owner(dir, &st, "state_insecure", err)))
        return rc;
    int lfd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (lfd < 0)
        return slb_err_set(err, STATE_STATUS, "state_dir", path, "cannot open %s: %s", path,
                           strerror(errno));
    if (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char buf[32] = "";
        ssize_t n = pread(lfd, buf, sizeof(buf) - 1, 0);
        close(lfd);
        if (e != EWOULDBLOCK)
            return slb_err_set(err, STATE_STATUS, "state_dir", path, "cannot lock %s: %s", path,
                               strerror(e));
        long pid = n > 0 ? strtol(buf, NULL, 10) : 0;
        /* Both would write config.json and rotate the ticket keys: one writer only. */
        if (pid > 0)
            return slb_err_set(err, STATE_STATUS, "state_locked", path,
                               "another slbd (pid %ld) is using the state directory %s; stop it "
                               "or give this one another --state-dir",
                               pid, dir);
        return slb_err_set(err, STATE_STATUS, "state_locked", path,
                           "another slbd is using the state directory %s (it is starting: no pid "
                           "in %s yet)",
                           dir, path);
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(lfd, 0) < 0 || pwrite(lfd, pid, (size_t)len, 0) != len) {
        int e = errno;
        close(lfd);
        return slb_err_set(err, STATE_STATUS, "state_dir", path, "cannot write %s: %s", path,
                           strerror(e));
    }
    *fd = lfd;
    return 0;
}

int slb_state_inspect(const char *dir, struct slb_err *err)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        int e = errno;
        if (e != ENOENT)
            return slb_err_set(err, STATE_STATUS, "state_dir", dir, "cannot use %s: %s", dir,
                               strerror(e));
        slb_err_set(err, 400, "state_dir", dir, "the state directory does not exist");
        return -ENOENT;
    }
    if (!S_ISDIR(st.st_mode))
        return slb_err_set(err, STATE_STATUS, "state_dir", dir,
                           "%s is not a directory; give --state-dir a directory", dir);
    return 0;
}

static json_t *empty_doc(void)
{
    return json_pack("{s:[], s:[], s:{}}", "listeners", "groups", "settings");
}

int slb_state_config_load(struct slb_backend *b, json_t **out, uint64_t *rev, struct slb_err *err)
{
    char path[4400];
    struct slb_doc d;
    *out = NULL;
    if (rev)
        *rev = SLB_REV_ABSENT;
    slb_backend_where(b, SLB_DOC_CONFIG, path, sizeof(path));
    int rc = slb_backend_get(b, SLB_DOC_CONFIG, SLB_STATE_MAX_CONFIG, &d, err);
    if (rc == -ENOENT) {
        /* First start: nothing configured yet. */
        *out = empty_doc();
        return *out ? 0 : slb_err_set(err, STATE_STATUS, "internal", path, "out of memory");
    }
    if (rc == SLB_EINVAL)
        return rc;
    if (rc == -EFBIG)
        return slb_err_set(err, STATE_STATUS, "too_large", path,
                           "%s is larger than %u MiB; it cannot be a configuration this daemon "
                           "wrote",
                           path, SLB_STATE_MAX_CONFIG >> 20);
    if (rc < 0)
        return slb_err_set(err, STATE_STATUS, "unreadable", path, "cannot read %s: %s", path,
                           slb_strerror(rc));
    json_error_t jerr;
    /* Duplicate keys are refused: a hand edit that repeats a key would otherwise silently
     * lose one of the values. */
    json_t *doc = json_loadb(d.data, d.len, JSON_REJECT_DUPLICATES, &jerr);
    if (rev)
        *rev = d.rev;
    slb_doc_clear(&d);
    if (!doc) {
        char where[sizeof(err->where)];
        snprintf(where, sizeof(where), "%.120s:%d:%d", path, jerr.line, jerr.column);
        return slb_err_set(err, 400, "invalid_json", where, "%s:%d:%d: invalid JSON: %s", path,
                           jerr.line, jerr.column, jerr.text);
    }
    *out = doc;
    return 0;
}

int slb_state_config_save(struct slb_backend *b, const json_t *doc, uint64_t expect, uint64_t *rev,
                          struct slb_err *err)
{
    /* Each listener, group and the settings are serialized once while their json_t lives:
     * a change re-serializes what it changed and copies the rest (state/jsoncache.h). */
    if (!b->config_text && !(b->config_text = slb_json_cache_new()))
        return slb_err_set(err, STATE_STATUS, "internal", SLB_STATE_CONFIG, "out of memory");
    char *buf = NULL;
    size_t len = 0;
    int rc = slb_json_cache_dump(b->config_text, doc, &buf, &len);
    if (rc == -ENOMEM)
        return slb_err_set(err, STATE_STATUS, "internal", SLB_STATE_CONFIG, "out of memory");
    if (rc < 0)
        return slb_err_set(err, STATE_STATUS, "internal", SLB_STATE_CONFIG,
                           "cannot serialize the configuration");
    rc = slb_backend_put(b, SLB_DOC_CONFIG, buf, len, expect, rev);
    free(buf);
    if (rc == SLB_ECONFLICT)
        return slb_err_set(err, 409, "conflict", SLB_STATE_CONFIG,
                           "the stored configuration changed since it was read; read it again "
                           "and retry");
    if (rc == SLB_BACKEND_EUNAVAILABLE)
        return slb_err_set(err, 503, "cluster_unavailable", SLB_STATE_CONFIG,
                           "etcd cannot be reached: the cluster's state cannot change now (this "
                           "node goes on serving what it has); retry later");
    if (rc < 0) {
        char where[4400];
        slb_backend_where(b, SLB_DOC_CONFIG, where, sizeof(where));
        return slb_err_set(err, STATE_STATUS, "write_failed", SLB_STATE_CONFIG,
                           "cannot write %s: %s", where, slb_strerror(rc));
    }
    return 0;
}

int slb_state_load_config(const char *dir, json_t **out, struct slb_err *err)
{
    *out = NULL;
    struct slb_backend *b = slb_backend_dir_new(dir, true, err);
    if (!b)
        return SLB_EINVAL;
    int rc = slb_state_config_load(b, out, NULL, err);
    slb_backend_free(b);
    return rc;
}

int slb_state_save_config(const char *dir, const json_t *doc, struct slb_err *err)
{
    struct slb_backend *b = slb_backend_dir_new(dir, false, err);
    if (!b)
        return SLB_EINVAL;
    int rc = slb_state_config_save(b, doc, SLB_REV_ANY, NULL, err);
    slb_backend_free(b);
    return rc;
}

static int token_create(const char *dir, struct slb_err *err)
{
    unsigned char raw[32];
    char hex[2 * sizeof(raw) + 1];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t r = getrandom(raw + got, sizeof(raw) - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return slb_err_set(err, STATE_STATUS, "internal", SLB_STATE_TOKEN,
                               "cannot get random bytes for the admin token: %s", strerror(errno));
        got += (size_t)r;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    /* No trailing newline: scripts may pass the file's bytes straight into a header. */
    int rc = slb_fs_write_atomic(dir, SLB_STATE_TOKEN, hex, 2 * sizeof(raw), 0600);
    if (rc < 0)
        return slb_err_set(err, STATE_STATUS, "write_failed", SLB_STATE_TOKEN,
                           "cannot write %s/%s: %s", dir, SLB_STATE_TOKEN, strerror(-rc));
    return 0;
}

/* Read the token file, refusing anything another local user could have read. */
static int token_read(const char *path, char *token, size_t size, struct slb_err *err)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return -ENOENT;
    if (fd < 0 && errno == ELOOP)
        return slb_err_set(err, STATE_STATUS, "unreadable", path,
                           "%s is a symbolic link; the token must be a regular file", path);
    if (fd < 0)
        return slb_err_set(err, STATE_STATUS, "unreadable", path, "cannot read %s: %s", path,
                           strerror(errno));
    struct stat st;
    char buf[TOKEN_FILE_MAX];
    ssize_t n = -1;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = slb_err_set(err, STATE_STATUS, "unreadable", path, "cannot stat %s: %s", path,
                         strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc =
            slb_err_set(err, STATE_STATUS, "token_invalid", path, "%s is not a regular file", path);
        goto done;
    }
    if ((rc = slb_fs_check_owner(path, &st, "token_insecure", err)))
        goto done;
    if (st.st_mode & 077) {
        rc = slb_err_set(err, STATE_STATUS, "token_insecure", path,
                         "%s is accessible by group or others (mode %04o); run chmod 600 on it "
                         "or delete it to get a new token",
                         path, (unsigned)(st.st_mode & 07777));
        goto done;
    }
    do
        n = read(fd, buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        rc = slb_err_set(err, STATE_STATUS, "unreadable", path, "cannot read %s: %s", path,
                         strerror(errno));
        goto done;
    }
    /* A trailing newline from a hand edit ("echo TOKEN > admin.token") is not part of it. */
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] <= 0x20 || buf[i] >= 0x7f) {
            rc = slb_err_set(err, STATE_STATUS, "token_invalid", path,
                             "%s contains spaces or non-printable characters; a token must be "
                             "printable ASCII on one line",
                             path);
            goto done;
        }
    }
    if (n == 0) {
        rc = slb_err_set(err, STATE_STATUS, "token_invalid", path,
                         "%s is empty; delete it to get a new token", path);
        goto done;
    }
    if (n < TOKEN_MIN) {
        rc = slb_err_set(err, STATE_STATUS, "token_invalid", path,
                         "the token in %s is too short (%zd characters, at least %d needed)", path,
                         n, TOKEN_MIN);
        goto done;
    }
    if ((size_t)n >= size) {
        rc = slb_err_set(err, STATE_STATUS, "token_invalid", path,
                         "the token in %s is too long (%zd characters, at most %zu)", path, n,
                         size - 1);
        goto done;
    }
    memcpy(token, buf, (size_t)n + 1);
done:
    close(fd);
    return rc;
}

int slb_state_admin_token(const char *dir, char *token, size_t size, struct slb_err *err)
{
    char path[4096];
    int rc = state_path(dir, SLB_STATE_TOKEN, path, sizeof(path), err);
    if (rc)
        return rc;
    rc = token_read(path, token, size, err);
    if (rc != -ENOENT)
        return rc;
    if ((rc = token_create(dir, err)))
        return rc;
    /* Read back what is on disk, so a concurrent creator and we agree on one token. */
    rc = token_read(path, token, size, err);
    if (rc == -ENOENT)
        return slb_err_set(err, STATE_STATUS, "unreadable", path,
                           "%s disappeared right after it was created", path);
    return rc;
}
