/* SPDX-License-Identifier: Apache-2.0 */
/* Durable, atomic replacement of files in the state directory. */
#include "core/fsio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_STATUS 500

int slb_fs_check_owner(const char *path, const struct stat *st, const char *code,
                       struct slb_err *err)
{
    uid_t me = geteuid();
    if (st->st_uid == me)
        return 0;
    return slb_err_set(err, FS_STATUS, code, path,
                       "%s is owned by uid %u but slbd runs as uid %u, so another user could "
                       "change what slbd trusts; run chown %u on it, or give slbd a state "
                       "directory of its own",
                       path, (unsigned)st->st_uid, (unsigned)me, (unsigned)me);
}

int slb_fs_check_secret(const char *path, const struct stat *st, const char *code, const char *hint,
                        struct slb_err *err)
{
    if (!S_ISREG(st->st_mode))
        return slb_err_set(err, FS_STATUS, code, path, "%s is not a regular file", path);
    int rc = slb_fs_check_owner(path, st, code, err);
    if (rc)
        return rc;
    if (st->st_mode & 077)
        return slb_err_set(err, FS_STATUS, code, path,
                           "%s holds secrets and is accessible by group or others (mode %04o); "
                           "run chmod 600 on it%s",
                           path, (unsigned)(st->st_mode & 07777), hint ? hint : "");
    return 0;
}

int slb_fs_check_secret_path(const char *path, const char *code, const char *hint,
                             struct slb_err *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return slb_err_set(err, FS_STATUS, "unreadable", path, "cannot use %s: %s", path,
                           strerror(errno));
    }
    if (S_ISLNK(st.st_mode))
        return slb_err_set(err, FS_STATUS, code, path,
                           "%s is a symbolic link; a file holding secrets must be a regular file",
                           path);
    return slb_fs_check_secret(path, &st, code, hint, err);
}

int slb_fs_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int slb_fs_write_atomic(const char *dir, const char *name, const void *data, size_t len,
                        mode_t mode)
{
    char tmp[4096], dst[4096];
    int rc = 0, fd = -1;
    if (snprintf(dst, sizeof(dst), "%s/%s", dir, name) >= (int)sizeof(dst))
        return -ENAMETOOLONG;
    /* The pid and a counter make the temporary name unique per writer; a leftover ".tmp"
     * from a crash is harmless and ignored by loaders. */
    static _Atomic unsigned seq;
    if (snprintf(tmp, sizeof(tmp), "%s/.%s.%d.%u.tmp", dir, name, (int)getpid(), seq++) >=
        (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, mode) < 0)
        goto fail;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, dst) < 0)
        goto fail;
    return slb_fs_sync_dir(dir);
fail:
    rc = -errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc ? rc : -EIO;
}

int slb_fs_read_all(const char *path, size_t max, char **out, size_t *len)
{
    /* O_NONBLOCK: a FIFO or device put in place of a state file must not hang start-up. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
        goto done;
    }
    if ((size_t)st.st_size > max) {
        rc = -EFBIG;
        goto done;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto done;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto done;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    buf = NULL;
    if (len)
        *len = got;
done:
    free(buf);
    close(fd);
    return rc;
}

int slb_fs_remove(const char *dir, const char *name)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return slb_fs_sync_dir(dir);
}

int slb_fs_remove_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != '.' || len < 5 || strcmp(e->d_name + len - 4, ".tmp") != 0)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            n++;
    }
    closedir(d);
    return n;
}
