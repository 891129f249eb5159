/* SPDX-License-Identifier: Apache-2.0 */
/* The access log: one JSON line per request. Workers format lines into a per-worker buffer
 * and hand full buffers to a logger thread through a non-blocking pipe, so a slow disk never
 * stalls a worker (lines are dropped and counted if the logger falls behind). */
#ifndef SLB_HTTP_ACCESS_H
#define SLB_HTTP_ACCESS_H

#include "http/parser.h"

#include <stdbool.h>
#include <stdint.h>

struct slb_worker;
struct slb_listener_rt;

/* Per-request fields captured when the head is parsed (the head bytes are gone later); the
 * strings are JSON-escaped already. */
struct slb_access_rec {
    uint64_t start_ms;
    uint64_t start_us; /* for sub-millisecond request_ms */
    char method[16];
    char path[400];
    char host[160];
    char user_agent[200];
    /* The client's X-Request-Id, or one of ours (32 hex digits) that the backend gets too */
    char request_id[80];
    bool request_id_ours;
    char rule[64]; /* the forwarding rule that took the request; "" when none */
};

/* Why slbd answered 5xx itself, for the access log's "error": 0 none, else
 * enum slb_srv_fail + 1, SLB_ACCESS_NO_SERVER or SLB_ACCESS_RATE_LIMITED. */
#define SLB_ACCESS_NO_SERVER 255
#define SLB_ACCESS_RATE_LIMITED 254 /* limits.requests_per_s */
const char *slb_access_error_name(uint8_t e);

struct slb_access_entry {
    const char *listener;
    const char *client;
    unsigned client_port;
    const char *tls_version; /* NULL for plain http */
    const char *cipher;
    int resumed; /* -1 not TLS */
    const char *sni;
    const struct slb_access_rec *rec;
    const char *proto; /* "HTTP/1.0", "HTTP/1.1", "HTTP/2" */
    int status;
    uint64_t bytes_in, bytes_out; /* payload */
    uint64_t wire_in, wire_out;   /* wire bytes of the connection during this request */
    const char *upstream;         /* "addr:port" or NULL */
    const char *error; /* why slbd answered 5xx itself (slb_access_error_name), or NULL */
    double request_ms, upstream_ms;
};

/* Control thread: start the logger (once) and point it at "" (off), "stdout", "syslog" (one
 * datagram per line to /dev/log, or to the socket SLBD_SYSLOG_SOCKET names) or a path. */
int slb_access_configure(const char *target, int nworkers);
/* Control thread (SIGUSR1): open the target again, for log rotation. */
void slb_access_reopen(void);
void slb_access_shutdown(void);
bool slb_access_enabled(void);
uint64_t slb_access_dropped(void);

/* Worker side. rec is NULL when logging is off. */
struct slb_access_rec *slb_access_new(struct slb_worker *w, struct slb_listener_rt *l);
void slb_access_free(struct slb_access_rec *rec);
/* Capture method, target, Host, User-Agent and the request id (m NULL: the request could not
 * be parsed); a request without X-Request-Id gets an id of ours (request_id_ours). */
void slb_access_capture(struct slb_access_rec *rec, uint64_t now_ms, const struct slb_http_msg *m);
void slb_access_write(struct slb_worker *w, const struct slb_access_entry *e);
/* Name the forwarding rule that took the request (rec NULL: logging is off). */
void slb_access_rule(struct slb_access_rec *rec, const char *name);
/* Push the worker's buffered lines to the logger (called at least every loop wake-up with
 * pending lines, and at exit). */
void slb_access_flush(struct slb_worker *w);
/* Flush and free the calling worker's buffer (at thread exit). */
void slb_access_thread_exit(struct slb_worker *w);

#endif
