/* SPDX-License-Identifier: Apache-2.0 */
/* Durable file writes: temporary file, fsync, rename over the old one, fsync of the directory.
 * A crash at any moment leaves the old or the new content, never a torn file. */
#ifndef SLB_CORE_FSIO_H
#define SLB_CORE_FSIO_H

#include "core/err.h"

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Write data to dir/name atomically and durably with the given mode. 0 or -errno. */
int slb_fs_write_atomic(const char *dir, const char *name, const void *data, size_t len,
                        mode_t mode);
/* Read a whole file (at most max bytes) into a NUL-terminated malloc'd buffer. 0 or -errno
 * (-EFBIG when larger than max). */
int slb_fs_read_all(const char *path, size_t max, char **out, size_t *len);
/* fsync a directory. */
int slb_fs_sync_dir(const char *dir);
/* Remove dir/name and fsync dir; a missing file is not an error. */
int slb_fs_remove(const char *dir, const char *name);

/* The state directory is private to the user slbd runs as (docs/configuration.md, "Modes").
 * slb_fs_check_owner: 0 when st (of path) is owned by the effective uid, else err filled with
 * code and SLB_EINVAL (another user could replace what is in it). slb_fs_check_secret: the
 * same, and a file holding secrets must be a regular file that group and others cannot access
 * at all: it may have been read already, so it is refused rather than quietly tightened; hint
 * ends the message ("" or e.g. " or delete it to get a new token"). */
int slb_fs_check_owner(const char *path, const struct stat *st, const char *code,
                       struct slb_err *err);
int slb_fs_check_secret(const char *path, const struct stat *st, const char *code, const char *hint,
                        struct slb_err *err);
/* slb_fs_check_secret on path itself (not following a symbolic link, which is refused);
 * a missing file is fine (0). */
int slb_fs_check_secret_path(const char *path, const char *code, const char *hint,
                             struct slb_err *err);

/* Remove temporary files a crash left behind (".NAME.PID.N.tmp" from slb_fs_write_atomic).
 * Returns how many were removed. */
int slb_fs_remove_leftovers(const char *dir);

#endif
