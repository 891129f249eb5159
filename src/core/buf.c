/* SPDX-License-Identifier: Apache-2.0 */
/* Per-thread pool of fixed-size blocks behind struct slb_buf. */
#include "core/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_CACHE_MAX 256

struct block_cache {
    char *blocks[BLOCK_CACHE_MAX];
    size_t n;
};
static _Thread_local struct block_cache cache;

char *slb_block_get(void)
{
    if (cache.n > 0)
        return cache.blocks[--cache.n];
    return malloc(SLB_BUF_SIZE);
}

void slb_block_put(char *block)
{
    if (!block)
        return;
    if (cache.n < BLOCK_CACHE_MAX)
        cache.blocks[cache.n++] = block;
    else
        free(block);
}

void slb_block_cache_drain(void)
{
    while (cache.n > 0)
        free(cache.blocks[--cache.n]);
}

int slb_buf_prepare(struct slb_buf *b)
{
    if (!b->data) {
        b->data = slb_block_get();
        if (!b->data)
            return -ENOMEM;
        b->off = b->len = 0;
        return 0;
    }
    if (b->off > 0 && b->off + b->len == SLB_BUF_SIZE) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
    }
    return 0;
}

void slb_buf_consume(struct slb_buf *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        slb_buf_release(b);
}

void slb_buf_release(struct slb_buf *b)
{
    slb_block_put(b->data);
    b->data = NULL;
    b->off = b->len = 0;
}
