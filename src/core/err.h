/* SPDX-License-Identifier: Apache-2.0 */
/* One error model: functions return 0 or a negative code (-errno or SLB_E*); configuration,
 * admin and certificate paths also fill a struct slb_err that travels up to the API's JSON. */
#ifndef SLB_CORE_ERR_H
#define SLB_CORE_ERR_H

#include <stddef.h>

/* Our own codes live far below the errno range so both fit in one int. */
enum {
    SLB_EINVAL = -10000, /* invalid input (see the slb_err for details) */
    SLB_ENOTFOUND = -10001,
    SLB_ECONFLICT = -10002,
    SLB_ETOOBIG = -10003,
    SLB_EPROTO = -10004, /* peer broke the protocol */
    SLB_ETLS = -10005,
    SLB_EINTERNAL = -10006,
    SLB_EEOF = -10007, /* orderly end of stream from the peer */
};

/* A reportable error: a stable machine code (e.g. "invalid_value"), a sentence a person can act
 * on, the place it was found (a JSON path like "listeners[1].bind" or a file name) and the
 * HTTP status the admin API answers with. Owned by the caller, usually on the stack. */
struct slb_err {
    int status;
    char code[48];
    char where[160];
    char msg[400];
};

/* Fill err (when non-NULL) and return SLB_EINVAL, so callers can `return slb_err_set(...)`. */
int slb_err_set(struct slb_err *err, int status, const char *code, const char *where,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void slb_err_clear(struct slb_err *err);
const char *slb_strerror(int code);

#endif
