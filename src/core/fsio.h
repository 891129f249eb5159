/* SPDX-License-Identifier: Apache-2.0 */
/* Durable file writes: temporary file, fsync, rename over the old one, fsync of the directory.
 * A crash at any moment leaves the old or the new content, never a torn file. */
#ifndef SLB_CORE_FSIO_H
#define SLB_CORE_FSIO_H

#include <stddef.h>
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

/* Remove temporary files a crash left behind (".NAME.PID.N.tmp" from slb_fs_write_atomic).
 * Returns how many were removed. */
int slb_fs_remove_leftovers(const char *dir);

#endif
