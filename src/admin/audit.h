/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's audit log: one JSON line per change attempted through the API (who, what,
 * revisions before and after, result) in DIR/audit.log, and GET /v1/audit to read its end. */
#ifndef SLB_ADMIN_AUDIT_H
#define SLB_ADMIN_AUDIT_H

#include "admin/admin.h"

#define SLB_AUDIT_FILE "audit.log"
#define SLB_AUDIT_LIMIT_DEFAULT 100
#define SLB_AUDIT_LIMIT_MAX 10000

struct slb_audit;

/* Open (create, 0600) DIR/audit.log for appending. */
struct slb_audit *slb_audit_open(const char *state_dir, struct slb_err *err);
void slb_audit_free(struct slb_audit *a);

/* What one change did. old_rev/new_rev are ETags ("" for none); result is "ok" or the error
 * code the API answered. */
struct slb_audit_entry {
    const char *resource; /* the path under /v1/, completed by what a create made */
    const char *key;
    const char *source;
    const char *method;
    const char *path;
    const char *old_rev;
    const char *new_rev;
    int status;
    const char *result;
};

/* Append one line (written at once with O_APPEND; a failure is logged, never fatal). */
void slb_audit_write(struct slb_audit *a, const struct slb_audit_entry *e);
/* GET /v1/audit[?limit=N]: the last N lines, oldest first. */
void slb_audit_route(struct slb_audit *a, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp);

#endif
