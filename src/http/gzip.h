/* SPDX-License-Identifier: Apache-2.0 */
/* Response compression (a listener's "gzip"): whether a response is compressed (from facts of
 * its request, its head and the listener's settings), the rewrite of its head, and a streaming
 * gzip compressor with a fixed memory bound. Pure: no I/O, no knowledge of either client
 * protocol, so the exchange that feeds a client (HTTP/1.1 or HTTP/2) calls it where head and
 * body bytes go out. */
#ifndef SLB_HTTP_GZIP_H
#define SLB_HTTP_GZIP_H

#include "http/parser.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct slb_listener_cfg;

/* Responses with a Content-Length below this are not worth a gzip header and trailer. */
#define SLB_GZIP_MIN_LENGTH 1024
/* The deflate parameters: an 8 KiB window (windowBits 13) and memLevel 6 give about 70 KiB
 * per stream (SLB_GZIP_MEM_MAX bounds it: see slb_gzip_new); level 1 keeps the cost per byte
 * close to that of a copy, as a proxy compressing on the fly should. */
#define SLB_GZIP_WINDOW_BITS 13
#define SLB_GZIP_MEM_LEVEL 6
#define SLB_GZIP_LEVEL 1
#define SLB_GZIP_MEM_MAX (80u * 1024u)

/* The request's part of the decision, taken when its head is parsed (the head's bytes are
 * gone when the response arrives). */
struct slb_gzip_req {
    bool accepts; /* Accept-Encoding accepts gzip (q > 0) */
    bool head;    /* a HEAD request */
    bool range;   /* a Range request */
};
void slb_gzip_req_facts(struct slb_gzip_req *f, const struct slb_http_msg *req);

/* Accept-Encoding: the quality of gzip in one field value in thousandths, combined with what
 * earlier fields of the same request said (*st starts as zero). slb_gzip_ae_ok: gzip is
 * acceptable. An explicit "gzip" or "x-gzip" wins over "*"; among several, the lowest q. */
struct slb_gzip_ae {
    int explicit_q; /* -1: not named */
    int star_q;     /* -1: no "*" */
    bool seen;
};
void slb_gzip_ae_init(struct slb_gzip_ae *st);
void slb_gzip_ae_parse(struct slb_gzip_ae *st, struct slb_slice value);
bool slb_gzip_ae_ok(const struct slb_gzip_ae *st);

/* Why a response is not compressed (SLB_GZIP_YES: it is). For tests and debugging. */
enum slb_gzip_verdict {
    SLB_GZIP_YES = 0,
    SLB_GZIP_OFF,          /* the listener does not compress */
    SLB_GZIP_NOT_ACCEPTED, /* the client does not take gzip */
    SLB_GZIP_METHOD,       /* HEAD */
    SLB_GZIP_RANGE,        /* a Range request, or a Content-Range answer */
    SLB_GZIP_STATUS,       /* 1xx, 204, 206, 304 */
    SLB_GZIP_NO_BODY,
    SLB_GZIP_ENCODED, /* Content-Encoding, or a transfer coding besides chunked */
    SLB_GZIP_NO_TRANSFORM,
    SLB_GZIP_TYPE, /* absent or not in the listener's types */
    SLB_GZIP_SMALL,
    SLB_GZIP_NO_ROOM, /* no room for the fields we add */
};
enum slb_gzip_verdict slb_gzip_decide(const struct slb_gzip_req *rq,
                                      const struct slb_http_msg *resp,
                                      const struct slb_listener_cfg *cfg);
static inline bool slb_gzip_wanted(const struct slb_gzip_req *rq, const struct slb_http_msg *resp,
                                   const struct slb_listener_cfg *cfg)
{
    return slb_gzip_decide(rq, resp, cfg) == SLB_GZIP_YES;
}

/* Storage for the field values the head rewrite makes; must outlive the use of the head. */
struct slb_gzip_scratch {
    char etag[256];
    char vary[512];
    char names[48]; /* the added fields' names: writable, as HTTP/2 lower-cases them in place */
};
/* Rewrite a response head (slb_gzip_wanted said yes) in place for a compressed body:
 * Content-Length and Transfer-Encoding go, a strong ETag becomes weak, Accept-Encoding joins
 * Vary (or Vary is added), Content-Encoding: gzip is added, and the body is chunked
 * (m->body; for an HTTP/1.1 client, chunked_field adds Transfer-Encoding: chunked). Values that
 * do not fit the scratch: -1, and m is unchanged. */
int slb_gzip_rewrite_head(struct slb_http_msg *m, struct slb_gzip_scratch *sc, bool chunked_field);

/* A streaming compressor: one per compressed response, its memory bounded by SLB_GZIP_MEM_MAX
 * whatever the body's length. */
struct slb_gzip;
struct slb_gzip *slb_gzip_new(void); /* NULL when memory is short */
void slb_gzip_free(struct slb_gzip *z);
/* Compress from in into out: *in_used and *out_made say how much of each was taken. Without
 * finish, output may lag input (deflate keeps what it has not yet coded). With finish (all the
 * input is given), returns 1 once the gzip trailer is out, else 0: call again with more room.
 * <0 on an internal error. */
int slb_gzip_run(struct slb_gzip *z, const void *in, size_t in_len, size_t *in_used, void *out,
                 size_t out_len, size_t *out_made, bool finish);
bool slb_gzip_done(const struct slb_gzip *z);

/* A worker's kept compressors (reset, ready for the next response), so that compressing does
 * not allocate per response once a worker has served a few: at most SLB_GZIP_KEEP are kept. */
#define SLB_GZIP_KEEP 16
struct slb_gzip_pool {
    struct slb_gzip *free;
    size_t n;
};
/* A kept compressor or a new one; NULL when memory is short. */
struct slb_gzip *slb_gzip_take(struct slb_gzip_pool *p);
/* *z (may be NULL) goes back to the pool or is freed; *z becomes NULL. */
void slb_gzip_give(struct slb_gzip_pool *p, struct slb_gzip **z);
void slb_gzip_pool_drain(struct slb_gzip_pool *p);
/* Bytes taken in and given out so far, and the most memory the stream held. */
uint64_t slb_gzip_total_in(const struct slb_gzip *z);
uint64_t slb_gzip_total_out(const struct slb_gzip *z);
size_t slb_gzip_mem_peak(const struct slb_gzip *z);

#endif
