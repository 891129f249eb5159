/* SPDX-License-Identifier: Apache-2.0 */
/* Steps shared by the operation files (src/ops/), not part of the layer's API. */
#ifndef SLB_OPS_OPS_INT_H
#define SLB_OPS_OPS_INT_H

#include "ops/ops.h"

struct slb_ctl;

/* Validate, store and activate doc (owned): slb_ctl_apply, or with op->dry_run only
 * slb_ctl_dry_run, whose normalized document is then *would (owned; NULL otherwise). */
int slb_ops_commit(struct slb_ctl *ctl, json_t *doc, const struct slb_op *op, json_t **would,
                   struct slb_err *err);
/* A new document for a change to collection coll ("listeners", "groups") of doc: the document
 * and that array are copied and *arr is the copy, while every element stays the very json_t of
 * doc. Applied documents are never modified in place: the next configuration takes the parsed
 * form of every unchanged element by its pointer (slb_config_from_json_prev), so a change only
 * replaces, adds or removes elements of *arr (a changed element is a new object). NULL when
 * out of memory. */
json_t *slb_ops_doc_with(const json_t *doc, const char *coll, json_t **arr);
/* 0 when users (owned, an array of listener names) is empty; else 409 in_use. */
int slb_ops_in_use(json_t *users, const char *what, const char *name, struct slb_err *err);

#endif
