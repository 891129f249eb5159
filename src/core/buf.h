/* SPDX-License-Identifier: Apache-2.0 */
/* Byte buffers for connections. Idle connections hold no buffer: a buffer is taken from the
 * thread's free list when data arrives and given back as soon as it is drained, which keeps
 * memory per idle connection small. */
#ifndef SLB_CORE_BUF_H
#define SLB_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>

#define SLB_BUF_SIZE 16384

/* data[off .. off+len) is pending; data is NULL while empty and released. */
struct slb_buf {
    char *data;
    size_t off, len;
};

/* Get/put SLB_BUF_SIZE blocks from the calling thread's free list (bounded). */
char *slb_block_get(void);
void slb_block_put(char *block);
/* Free the calling thread's cached blocks (at thread exit). */
void slb_block_cache_drain(void);

static inline size_t slb_buf_space(const struct slb_buf *b)
{
    return b->data ? SLB_BUF_SIZE - b->off - b->len : SLB_BUF_SIZE;
}
static inline bool slb_buf_empty(const struct slb_buf *b)
{
    return b->len == 0;
}
/* Make sure the buffer has a block and its free space is at the end; 0 or -ENOMEM. */
int slb_buf_prepare(struct slb_buf *b);
/* Consume n bytes from the front; releases the block when empty. */
void slb_buf_consume(struct slb_buf *b, size_t n);
void slb_buf_release(struct slb_buf *b);

#endif
