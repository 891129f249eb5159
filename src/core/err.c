/* SPDX-License-Identifier: Apache-2.0 */
/* The error model: negative codes, slb_strerror(), and the reportable struct slb_err. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int slb_err_set(struct slb_err *err, int status, const char *code, const char *where,
                const char *fmt, ...)
{
    if (!err)
        return SLB_EINVAL;
    err->status = status;
    snprintf(err->code, sizeof(err->code), "%s", code ? code : "error");
    snprintf(err->where, sizeof(err->where), "%s", where ? where : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return SLB_EINVAL;
}

void slb_err_clear(struct slb_err *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
}

const char *slb_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case SLB_EINVAL:
        return "invalid input";
    case SLB_ENOTFOUND:
        return "not found";
    case SLB_ECONFLICT:
        return "conflict";
    case SLB_ETOOBIG:
        return "too big";
    case SLB_EPROTO:
        return "protocol error";
    case SLB_ETLS:
        return "TLS error";
    case SLB_EINTERNAL:
        return "internal error";
    case SLB_EEOF:
        return "end of stream";
    default:
        return code < 0 ? strerror(-code) : "unknown error";
    }
}
