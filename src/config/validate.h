/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to src/config: field-by-field readers for one JSON object that report errors with
 * the field's JSON path, plus the per-resource builders shared by config.c and the API-facing
 * normalize functions. Module word "cv" (configuration validation). */
#ifndef SLB_CONFIG_VALIDATE_H
#define SLB_CONFIG_VALIDATE_H

#include "config/config.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Paths fit struct slb_err.where; longer ones are truncated, which only shortens messages. */
#define SLB_CV_PATH 160
#define SLB_CV_STATUS 400

/* One JSON object being read: borrowed pointers, valid for one validation call. */
struct slb_cv {
    const json_t *obj;
    const char *path; /* the object's own path; "" at the top of an API body */
    struct slb_err *err;
};

/* Fill err with status 400, where = path and a message prefixed by "path: " so the message
 * alone (which is all the admin API shows) still says which field is wrong. */
int slb_cv_fail(struct slb_err *err, const char *code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* dst (SLB_CV_PATH bytes) = "prefix.key" or "key" when prefix is empty. */
void slb_cv_join(char *dst, const char *prefix, const char *key);
/* dst (SLB_CV_PATH bytes) = 'prefix["key"]', for keys that are data (server names). */
void slb_cv_member(char *dst, const char *prefix, const char *key);
/* dst (SLB_CV_PATH bytes) = "prefix[i]". */
void slb_cv_index(char *dst, const char *prefix, size_t i);
/* A JSON type name for messages: "a string", "an integer"... */
const char *slb_cv_type_name(const json_t *v);

/* Check v is an object (wrong_type otherwise) and set up cv. what names the resource. */
int slb_cv_open(struct slb_cv *cv, const json_t *v, const char *path, const char *what,
                struct slb_err *err);
/* unknown_field for the first key not in the NULL-terminated allowed list (document order). */
int slb_cv_keys(const struct slb_cv *cv, const char *const *allowed);
/* The member or NULL when absent (a JSON null is returned as present). */
const json_t *slb_cv_get(const struct slb_cv *cv, const char *key);
/* Full path of cv's member key into dst (SLB_CV_PATH bytes). */
void slb_cv_path(const struct slb_cv *cv, const char *key, char *dst);

/* Typed readers: absent → def (or missing_field when required); wrong JSON type → wrong_type;
 * outside [min, max] → invalid_value with the allowed range in the message. */
int slb_cv_int(const struct slb_cv *cv, const char *key, bool required, json_int_t def,
               json_int_t min, json_int_t max, json_int_t *out);
int slb_cv_u32(const struct slb_cv *cv, const char *key, uint32_t def, uint32_t min, uint32_t max,
               uint32_t *out);
int slb_cv_bool(const struct slb_cv *cv, const char *key, bool def, bool *out);
/* A string shorter than size bytes; *out borrows from the JSON or is def. */
int slb_cv_str(const struct slb_cv *cv, const char *key, bool required, const char *def,
               size_t size, const char **out);
/* One of the NULL-terminated names; *out is its index (def when absent). */
int slb_cv_enum(const struct slb_cv *cv, const char *key, bool required, int def,
                const char *const *names, int *out);
/* A resource name (slb_config_name_ok), copied into dst (SLB_NAME_MAX bytes). */
int slb_cv_name(const struct slb_cv *cv, const char *key, bool required, char *dst);
/* An array (wrong_type otherwise) of at most max elements (invalid_value beyond); *out is
 * NULL when the field is absent. */
int slb_cv_array(const struct slb_cv *cv, const char *key, size_t max, const json_t **out);

/* Host name characters only ([A-Za-z0-9._-], labels 1..63), optionally "*." first. */
bool slb_cv_hostname_ok(const char *s, bool allow_wildcard);
/* Parse "ADDR:PORT" for binds; on failure why (128 bytes) says what is wrong. */
int slb_cv_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *why);
/* Parse an IP literal (v4 or v6) with an optional "/prefix". */
int slb_cv_cidr(const char *s, struct slb_cidr *out, char *why);

/* json_object_set_new that reports failure (allocation) as -1 so builders can OR results. */
int slb_cv_put(json_t *obj, const char *key, json_t *v);
int slb_cv_oom(struct slb_err *err);

/* Per-resource builders: validate in, fill out (typed) and *norm (normalized JSON, owned by
 * the caller). On failure out is left deinitialised-safe and *norm is NULL. */
int slb_cv_group(const json_t *in, const char *path, struct slb_group_cfg *out, json_t **norm,
                 struct slb_err *err);
void slb_cv_group_deinit(struct slb_group_cfg *g);
int slb_cv_listener(const json_t *in, const char *path, struct slb_listener_cfg *out, json_t **norm,
                    struct slb_err *err);
void slb_cv_listener_deinit(struct slb_listener_cfg *l);

/* Forwarding rules (rules.c): the listener's "rules" list into l->rules and *norm (a JSON
 * array, [] when absent). On failure the rules built so far stay in l for the caller's
 * deinit. */
/* An optional "limits" object of parent with the given keys (positive integers up to
 * max[i]; absent or null = 0 = none), into vals (all parallel to keys); *norm is the
 * normalized object with the keys set, or NULL when none is. */
int slb_cv_limits(const struct slb_cv *parent, const char *const *keys, const uint32_t *max,
                  uint32_t *const *vals, json_t **norm);
int slb_cv_rules(const struct slb_cv *lis, struct slb_listener_cfg *l, json_t **norm);
void slb_cv_rules_free(struct slb_rule_cfg *rules, size_t n);
/* unknown_group for a forward target naming no group of cfg. */
int slb_cv_rules_refs(const struct slb_config *cfg, const struct slb_listener_cfg *l,
                      const char *path, struct slb_err *err);
/* 0 when pattern compiles as PCRE2; else SLB_EINVAL and why says what and where. */
int slb_cv_regex_check(const char *pattern, char *why, size_t size);

#endif
