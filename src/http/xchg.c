/* SPDX-License-Identifier: Apache-2.0 */
#include "http/xchg.h"

#include "http/upstream.h"

#include <stdlib.h>
#include <string.h>

/* The worker keeps the exchange states connections gave back, up to this many: enough for the
 * requests in flight on a busy worker, so that a keep-alive request allocates nothing. */
#define XCHG_KEEP 1024

/* It keeps response-head buffers the same way, fewer of them since they are bigger, and none
 * that grew past HEAD_KEEP_CAP. A kept buffer holds its own list link. */
#define HEAD_KEEP 128
#define HEAD_KEEP_CAP 4096
struct head_mem {
    struct head_mem *next;
    size_t cap;
};

void slb_xchg_head_put(struct slb_http_worker *hw, struct slb_hbuf *b)
{
    if (!b->p || b->oom || b->cap > HEAD_KEEP_CAP || hw->nheads >= HEAD_KEEP) {
        slb_hbuf_free(b);
        return;
    }
    struct head_mem *h = (struct head_mem *)(void *)b->p;
    h->cap = b->cap;
    h->next = hw->heads;
    hw->heads = h;
    hw->nheads++;
    *b = (struct slb_hbuf){0};
}

bool slb_xchg_get(struct slb_http_worker *hw, struct http_xchg **xp, struct slb_hbuf *out)
{
    if (*xp)
        return true;
    struct http_xchg *x = hw->xchg_free;
    if (x) {
        hw->xchg_free = x->next;
        hw->nxchg_free--;
        uint8_t *heap = x->tried_heap;
        size_t cap = x->tried_cap;
        memset(x, 0, sizeof(*x));
        x->tried_heap = heap;
        x->tried_cap = cap;
    } else if (!(x = calloc(1, sizeof(*x)))) {
        return false;
    }
    *xp = x;
    struct head_mem *h = hw->heads;
    if (h && !out->p) {
        hw->heads = h->next;
        hw->nheads--;
        *out = (struct slb_hbuf){.p = (char *)h, .cap = h->cap};
    }
    return true;
}

void slb_xchg_free(struct http_xchg *x)
{
    if (x)
        free(x->tried_heap);
    free(x);
}

void slb_xchg_put(struct slb_http_worker *hw, struct http_xchg **xp, struct slb_hbuf *out)
{
    struct http_xchg *x = *xp;
    *xp = NULL;
    slb_xchg_head_put(hw, out);
    if (!x)
        return;
    if (hw->nxchg_free >= XCHG_KEEP) {
        slb_xchg_free(x);
        return;
    }
    x->next = hw->xchg_free;
    hw->xchg_free = x;
    hw->nxchg_free++;
}

uint8_t *slb_xchg_tried(struct http_xchg *x, size_t n)
{
    uint8_t *t = x->tried_in;
    if (n > sizeof(x->tried_in)) {
        if (n > x->tried_cap) {
            uint8_t *p = realloc(x->tried_heap, n);
            if (!p)
                return NULL;
            x->tried_heap = p;
            x->tried_cap = n;
        }
        t = x->tried_heap;
    }
    memset(t, 0, n);
    return t;
}

void slb_xchg_lists_free(struct slb_http_worker *hw)
{
    while (hw->xchg_free) {
        struct http_xchg *x = hw->xchg_free;
        hw->xchg_free = x->next;
        slb_xchg_free(x);
    }
    while (hw->heads) {
        struct head_mem *h = hw->heads;
        hw->heads = h->next;
        free(h);
    }
}
