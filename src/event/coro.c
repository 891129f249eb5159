/* SPDX-License-Identifier: Apache-2.0 */
/* Coroutines over ucontext: each has a 1 MiB mmap'd stack (committed as it is touched) below
 * a guard page. Switches are annotated for AddressSanitizer, which otherwise takes the other
 * stack for a corrupted one. One thread (the control thread) uses them; nothing is shared. */
#include "event/coro.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CORO_ASAN 1
#else
#define CORO_ASAN 0
#endif

#define CORO_STACK (1u << 20)

struct slb_coro {
    ucontext_t ctx, caller;
    void *map; /* guard page + stack */
    size_t map_len;
    slb_coro_fn fn;
    slb_coro_done_fn done;
    void *arg;
    bool started, finished;
    /* AddressSanitizer's view of the stacks it switches between. */
    void *fake;
    const void *caller_bottom;
    size_t caller_size;
};

static _Thread_local struct slb_coro *current;
static _Thread_local unsigned unfinished; /* started and not finished */

static void switch_start(void **fake, const void *bottom, size_t size)
{
#if CORO_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

static void switch_finish(void *fake, const void **bottom, size_t *size)
{
#if CORO_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

static void trampoline(unsigned lo, unsigned hi)
{
    struct slb_coro *co = (struct slb_coro *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
    switch_finish(NULL, &co->caller_bottom, &co->caller_size);
    co->fn(co->arg);
    co->finished = true;
    /* NULL: this stack is done for good. */
    switch_start(NULL, co->caller_bottom, co->caller_size);
    /* uc_link returns to the caller's context */
}

/* getcontext only fills the context makecontext then rewrites: it never returns twice here,
 * but the compiler cannot know, so it stays out of slb_coro_new's frame. */
__attribute__((noinline)) static int context_init(ucontext_t *u)
{
    return getcontext(u);
}

struct slb_coro *slb_coro_new(slb_coro_fn fn, slb_coro_done_fn done, void *arg)
{
    struct slb_coro *co = calloc(1, sizeof(*co));
    if (!co)
        return NULL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    co->map_len = CORO_STACK + page;
    co->map = mmap(NULL, co->map_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (co->map == MAP_FAILED) {
        free(co);
        return NULL;
    }
    mprotect(co->map, page, PROT_NONE);
    if (context_init(&co->ctx) < 0) {
        munmap(co->map, co->map_len);
        free(co);
        return NULL;
    }
    co->ctx.uc_stack.ss_sp = (char *)co->map + page;
    co->ctx.uc_stack.ss_size = CORO_STACK;
    co->ctx.uc_link = &co->caller;
    uintptr_t p = (uintptr_t)co;
    makecontext(&co->ctx, (void (*)(void))trampoline, 2, (unsigned)(p & 0xffffffffu),
                (unsigned)(p >> 32));
    co->fn = fn;
    co->done = done;
    co->arg = arg;
    return co;
}

bool slb_coro_free(struct slb_coro *co)
{
    if (!co)
        return true;
    if (co->started && !co->finished)
        return false;
    munmap(co->map, co->map_len);
    free(co);
    return true;
}

void slb_coro_resume(struct slb_coro *co)
{
    if (current || co->finished)
        return;
    if (!co->started)
        unfinished++;
    co->started = true;
    current = co;
    void *fake = NULL;
    switch_start(&fake, co->ctx.uc_stack.ss_sp, co->ctx.uc_stack.ss_size);
    swapcontext(&co->caller, &co->ctx);
    switch_finish(fake, NULL, NULL);
    current = NULL;
    if (co->finished)
        unfinished--;
    if (co->finished && co->done)
        co->done(co, co->arg);
}

void slb_coro_yield(void)
{
    struct slb_coro *co = current;
    if (!co)
        return;
    switch_start(&co->fake, co->caller_bottom, co->caller_size);
    swapcontext(&co->ctx, &co->caller);
    switch_finish(co->fake, &co->caller_bottom, &co->caller_size);
}

bool slb_coro_paused(void)
{
    return unfinished > 0 && !current;
}

struct slb_coro *slb_coro_current(void)
{
    return current;
}
