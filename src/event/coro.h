/* SPDX-License-Identifier: Apache-2.0 */
/* Coroutines on the control thread: a function that runs on its own stack and can pause
 * (slb_coro_yield) until the loop resumes it, so that code written as one synchronous call
 * chain (an admin write: validate, persist, publish) waits for etcd without pausing the loop. */
#ifndef SLB_EVENT_CORO_H
#define SLB_EVENT_CORO_H

#include <stdbool.h>

struct slb_coro;

typedef void (*slb_coro_fn)(void *arg);
/* Called by slb_coro_resume once fn returned, on the caller's stack: it may free co. */
typedef void (*slb_coro_done_fn)(struct slb_coro *co, void *arg);

/* A coroutine that will run fn(arg) when first resumed; NULL when out of memory. Owned by the
 * caller; slb_coro_free refuses (returns false) one that started and did not finish. */
struct slb_coro *slb_coro_new(slb_coro_fn fn, slb_coro_done_fn done, void *arg);
bool slb_coro_free(struct slb_coro *co);
/* Run co until it yields or returns (then done is called). Never from inside a coroutine. */
void slb_coro_resume(struct slb_coro *co);
/* From inside a coroutine: go back to whoever resumed it. */
void slb_coro_yield(void);
/* Whether a coroutine is paused half-way (a change waits for etcd) while the thread's own
 * stack runs: callbacks that would change what it holds (the certificate store, the
 * configuration) wait for it to finish. */
bool slb_coro_paused(void);
/* The coroutine running now, or NULL on the thread's own stack. */
struct slb_coro *slb_coro_current(void);

#endif
