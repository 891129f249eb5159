/* SPDX-License-Identifier: Apache-2.0 */
/* Serves the web console's embedded assets (see ui.h and docs/console.md). */
#include "admin/ui.h"

#include "admin/routes.h"
#include "core/version.h"
#include "daemon/control.h"

#include <stdlib.h>
#include <string.h>

/* Sent with every console answer. The console loads nothing from another origin and runs no
 * inline script; it may not be framed (clickjacking) and sends no Referer with its calls. */
#define UI_SECURITY_HEADERS                                                                        \
    "Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; "           \
    "img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "                     \
    "form-action 'none'; frame-ancestors 'none'\r\n"                                               \
    "X-Content-Type-Options: nosniff\r\n"                                                          \
    "X-Frame-Options: DENY\r\n"                                                                    \
    "Referrer-Policy: no-referrer\r\n"

bool slb_admin_ui_path(const char *path)
{
    return strcmp(path, "/") == 0 || strcmp(path, "/ui") == 0 || strncmp(path, "/ui/", 4) == 0;
}

static const struct slb_ui_asset *find_asset(const char *rel)
{
    for (size_t i = 0; i < slb_ui_nassets; i++)
        if (strcmp(slb_ui_assets[i].path, rel) == 0)
            return &slb_ui_assets[i];
    return NULL;
}

void slb_admin_ui(const struct slb_admin_req *req, struct slb_admin_resp *resp)
{
    resp->headers = UI_SECURITY_HEADERS;
    if (!slb_admin_method_is(req, "GET") && !slb_admin_method_is(req, "HEAD")) {
        slb_admin_not_allowed(resp, "GET, HEAD");
        return;
    }
    if (strcmp(req->path, "/") == 0 || strcmp(req->path, "/ui") == 0) {
        resp->status = 302;
        resp->headers = UI_SECURITY_HEADERS "Location: /ui/\r\n";
        return;
    }
    const char *rel = req->path + 4; /* after "/ui/" */
    if (*rel == '\0')
        rel = "index.html";
    const struct slb_ui_asset *a = find_asset(rel);
    if (!a) {
        slb_admin_error_simple(resp, 404, "not_found", "no such console file: %s", req->path);
        return;
    }
    resp->text = malloc(a->len ? a->len : 1);
    if (!resp->text) {
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
        return;
    }
    memcpy(resp->text, a->data, a->len);
    resp->text_len = a->len;
    resp->content_type = a->content_type;
    resp->status = 200;
}

void slb_admin_about(struct slb_ctl *ctl, const struct slb_admin_req *req,
                     struct slb_admin_resp *resp)
{
    if (!slb_admin_method_is(req, "GET")) {
        slb_admin_not_allowed(resp, "GET");
        return;
    }
    resp->json = json_pack("{s:s, s:s, s:i, s:I, s:I}", "version", slb_version(), "state_dir",
                           ctl->state_dir, "workers", ctl->nworkers, "started_ms",
                           (json_int_t)ctl->started_ms, "generation",
                           (json_int_t)(ctl->cur ? ctl->cur->generation : 0));
    if (!resp->json)
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
}
