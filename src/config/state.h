/* SPDX-License-Identifier: Apache-2.0 */
/* The state directory: config.json, admin.token, certs/, tickets/. Only the control thread
 * writes to it. Every write is atomic and durable (core/fsio.h). */
#ifndef SLB_CONFIG_STATE_H
#define SLB_CONFIG_STATE_H

#include "core/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SLB_STATE_CONFIG "config.json"
#define SLB_STATE_TOKEN "admin.token"
#define SLB_STATE_LOCK "lock"
#define SLB_STATE_MAX_CONFIG (16u << 20) /* config.json larger than this is refused */

/* Create dir (0700) when missing and check it is a writable directory. */
int slb_state_prepare(const char *dir, struct slb_err *err);

/* Take the state directory for this process: an exclusive flock on DIR/lock (created 0600,
 * with the directory when missing), which then holds our pid. *fd keeps the lock until it is
 * closed (or the process dies). When another process holds it the error names its pid. */
int slb_state_lock(const char *dir, int *fd, struct slb_err *err);

/* Look at an existing state directory without changing anything in it: 0 when dir is a
 * directory, -ENOENT (err set) when it does not exist, another error when it is unusable. */
int slb_state_inspect(const char *dir, struct slb_err *err);
/* The configuration document ("config") of a state backend (state/backend.h). Load: as
 * slb_state_load_config below, *rev its revision (SLB_REV_ABSENT when there is none). Save:
 * pretty, sorted keys, trailing newline, against expect (a mismatch is 409 conflict), *rev
 * the new revision. */
struct slb_backend;
int slb_state_config_load(struct slb_backend *b, json_t **out, uint64_t *rev, struct slb_err *err);
int slb_state_config_save(struct slb_backend *b, const json_t *doc, uint64_t expect, uint64_t *rev,
                          struct slb_err *err);

/* The same on the state directory dir. Load config.json as JSON. A missing file yields an empty
 * document
 * {"listeners": [], "groups": [], "settings": {}}. A parse error names the file, line and
 * column (code "invalid_json", where "DIR/config.json:LINE:COL"). Caller owns *out. */
int slb_state_load_config(const char *dir, json_t **out, struct slb_err *err);
/* Write doc as config.json (pretty, sorted keys, trailing newline), atomically and durably. */
int slb_state_save_config(const char *dir, const json_t *doc, struct slb_err *err);
/* Read admin.token, creating it (32 random bytes as 64 hex chars, mode 0600) on first start.
 * token must hold 128 bytes. A token file that is empty, too short (<16 chars) or readable by
 * group/others is refused with a clear error. */
int slb_state_admin_token(const char *dir, char *token, size_t size, struct slb_err *err);

#endif
