/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API's queue of changes in cluster mode (admin/jobs.h): copies of the requests,
 * one coroutine at a time, answers handed back to their connections. */
#include "admin/jobs.h"
#include "admin/routes.h"

#include "event/coro.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A queued change, owned by the queue; owner is NULL once the connection closed (the change
 * still completes, its answer goes nowhere). */
struct slb_admin_job {
    struct slb_admin_jobs *q;
    void *owner;
    struct slb_auth_who who;
    char peer[64];
    char *method, *path, *query, *ctype, *if_match, *body;
    size_t body_len;
    bool keep_alive;
    struct slb_admin_resp resp;
    struct slb_coro *co;
    struct slb_admin_job *next;
};

void slb_admin_jobs_init(struct slb_admin_jobs *q, struct slb_ctl *ctl, slb_admin_job_run_fn run,
                         slb_admin_job_answer_fn answer, void *arg)
{
    memset(q, 0, sizeof(*q));
    q->ctl = ctl;
    q->run = run;
    q->answer = answer;
    q->arg = arg;
    q->queue_tail = &q->queue;
}

static void job_free(struct slb_admin_job *j)
{
    if (!j)
        return;
    json_decref(j->resp.json);
    free(j->resp.text);
    free(j->method);
    free(j->path);
    free(j->query);
    free(j->ctype);
    free(j->if_match);
    free(j->body);
    free(j);
}

static void job_run(void *arg)
{
    struct slb_admin_job *j = arg;
    struct slb_admin_req req = {
        .method = j->method,
        .path = j->path,
        .query = j->query,
        .content_type = j->ctype,
        .if_match = j->if_match,
        .body = j->body,
        .body_len = j->body_len,
    };
    j->q->run(j->q->arg, &j->who, j->peer, &req, &j->resp);
}

/* The change's coroutine ended (on the loop's own stack): answer, start the next one. */
static void job_done(struct slb_coro *co, void *arg)
{
    struct slb_admin_job *j = arg;
    struct slb_admin_jobs *q = j->q;
    slb_coro_free(co);
    j->co = NULL;
    q->running = NULL;
    slb_ops_cluster_write_done(q->ctl);
    if (j->owner)
        q->answer(j->owner, &j->resp, j->keep_alive);
    job_free(j);
    slb_admin_jobs_start(q);
}

void slb_admin_jobs_start(struct slb_admin_jobs *q)
{
    while (!q->running && !q->closing && q->queue) {
        struct slb_admin_job *j = q->queue;
        q->queue = j->next;
        if (!q->queue)
            q->queue_tail = &q->queue;
        j->co = slb_coro_new(job_run, job_done, j);
        if (!j->co) {
            if (j->owner) {
                slb_admin_error_simple(&j->resp, 500, "internal", "out of memory");
                q->answer(j->owner, &j->resp, false);
            }
            job_free(j);
            continue;
        }
        q->running = j;
        slb_coro_resume(j->co); /* job_done runs from here when nothing waited */
    }
}

struct slb_admin_job *slb_admin_jobs_add(struct slb_admin_jobs *q, void *owner,
                                         const struct slb_auth_who *who, const char *peer,
                                         const struct slb_admin_req *req, bool keep_alive)
{
    bool connected;
    long long rev;
    if (slb_admin_method_is(req, "GET") || slb_admin_method_is(req, "HEAD") ||
        !slb_ops_cluster(q->ctl, &connected, &rev))
        return NULL;
    struct slb_admin_job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->q = q;
    j->owner = owner;
    j->who = *who;
    snprintf(j->peer, sizeof(j->peer), "%s", peer);
    j->method = strdup(req->method);
    j->path = strdup(req->path);
    j->query = strdup(req->query);
    j->ctype = strdup(req->content_type);
    j->if_match = req->if_match ? strdup(req->if_match) : NULL;
    j->body = malloc(req->body_len + 1);
    j->body_len = req->body_len;
    j->keep_alive = keep_alive;
    j->resp.status = 200;
    if (!j->method || !j->path || !j->query || !j->ctype || !j->body ||
        (req->if_match && !j->if_match)) {
        job_free(j);
        return NULL;
    }
    if (req->body_len)
        memcpy(j->body, req->body, req->body_len);
    j->body[req->body_len] = '\0';
    *q->queue_tail = j;
    q->queue_tail = &j->next;
    return j;
}

void slb_admin_job_detach(struct slb_admin_job *j)
{
    j->owner = NULL;
}

void slb_admin_jobs_deinit(struct slb_admin_jobs *q)
{
    q->closing = true;
    /* A change waiting for etcd fails now (the loop no longer runs to answer it). */
    if (q->running)
        slb_ops_cluster_abort(q->ctl);
    while (q->queue) {
        struct slb_admin_job *j = q->queue;
        q->queue = j->next;
        if (j->owner)
            q->answer(j->owner, NULL, false);
        job_free(j);
    }
}
