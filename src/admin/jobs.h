/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's queue of changes in cluster mode: each change waits its turn, then runs in a
 * coroutine (event/coro.h) whose etcd calls pause it, not the control loop. Changes run one at
 * a time, in arrival order, so each is validated against the state the previous one left.
 * Control thread only; the queue knows connections only as an opaque owner. */
#ifndef SLB_ADMIN_JOBS_H
#define SLB_ADMIN_JOBS_H

#include "admin/admin.h"
#include "admin/auth.h"

#include <stdbool.h>

struct slb_ctl;
struct slb_admin_job;

/* Runs one change inside its coroutine (the server's scope check, route and audit line). */
typedef void (*slb_admin_job_run_fn)(void *arg, const struct slb_auth_who *who, const char *peer,
                                     const struct slb_admin_req *req, struct slb_admin_resp *resp);
/* Hands a change's answer to the connection that asked (owner), on the control loop;
 * keep_alive is false when the connection must close after it. resp is NULL when the queue is
 * torn down before the change ran: the owner only forgets the job. Never called for a job
 * whose owner was detached. */
typedef void (*slb_admin_job_answer_fn)(void *owner, struct slb_admin_resp *resp, bool keep_alive);

/* Embedded in the admin server, from slb_admin_jobs_init to slb_admin_jobs_deinit; the fields
 * are jobs.c's. */
struct slb_admin_jobs {
    struct slb_ctl *ctl;
    slb_admin_job_run_fn run;
    slb_admin_job_answer_fn answer;
    void *arg;                                 /* run's first argument */
    struct slb_admin_job *queue, **queue_tail; /* changes waiting for their turn */
    struct slb_admin_job *running;             /* the change in its coroutine */
    bool closing;
};

void slb_admin_jobs_init(struct slb_admin_jobs *q, struct slb_ctl *ctl, slb_admin_job_run_fn run,
                         slb_admin_job_answer_fn answer, void *arg);
/* The control loop stops: the change waiting for etcd fails now, the ones behind it are
 * dropped (answer with resp NULL) and none starts any more. */
void slb_admin_jobs_deinit(struct slb_admin_jobs *q);

/* In cluster mode, a change (any method but GET and HEAD) is copied into a new job at the end
 * of the queue for owner (peer: its source address, for the audit log); NULL when the request
 * is not one to queue, or out of memory: the caller answers it at once. The job starts with
 * slb_admin_jobs_start; its answer comes through answer. */
struct slb_admin_job *slb_admin_jobs_add(struct slb_admin_jobs *q, void *owner,
                                         const struct slb_auth_who *who, const char *peer,
                                         const struct slb_admin_req *req, bool keep_alive);
/* Start the changes waiting, one at a time; a change that waits for nothing is answered
 * before this returns. */
void slb_admin_jobs_start(struct slb_admin_jobs *q);
/* The owner is gone (its connection closed): the change still completes, its answer goes
 * nowhere. */
void slb_admin_job_detach(struct slb_admin_job *j);

#endif
