/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/1.1 framing of bodies on the HTTP/1.x client side (proxy.c): a chunked request
 * body re-framed towards the backend, a chunked response re-framed towards the client, and a
 * compressed response (the exchange's gzip filter) chunked towards the client. */
#ifndef SLB_HTTP_H1_BODY_H
#define SLB_HTTP_H1_BODY_H

#include "core/buf.h"
#include "http/exchange.h"
#include "http/xchg.h"

/* A chunked request body goes on re-framed (see slb_rechunk): our size line from the
 * exchange state (x->req_chunk) and the data behind it in in, the client's input buffer,
 * leave in one sendmsg to x->e.up, so the client's size lines and extensions never reach the
 * backend. Sends until the backend or the client's bytes run out. -400 on invalid framing;
 * else whether anything moved. */
int slb_h1_send_chunked_request(struct http_xchg *x, struct slb_buf *in);

/* A chunked response to an HTTP/1.1 client goes on re-framed (see slb_rechunk): the size
 * line of each piece into out, its data left in up->in (e->resp_ready) to be sent from
 * there. Small pieces are copied behind their size line, so a run of small chunks leaves in
 * one send (one TLS record). Called with nothing of the previous piece left in resp_ready.
 * -502 on invalid framing. */
int slb_h1_response_chunk_next(struct slb_exchange *e, struct slb_hbuf *out);

/* A compressed response (x->e.resp_gzip): the body bytes that are ready (decoded when the
 * backend chunked them) go through the compressor (slb_exchange_gzip_run) into out while out
 * holds less than a buffer's worth: as chunks, and once the body is all in, the gzip trailer,
 * the last chunk and the backend's trailer section (kept in x->resp_trailers); for an
 * HTTP/1.0 client (x->resp_unchunk) as they are, the close ending them. -502 on invalid
 * chunked framing from the backend, -500 when the compressor failed; out->oom is the caller's
 * to check. */
int slb_h1_gzip_chunks(struct http_xchg *x, struct slb_hbuf *out);

#endif
