/* SPDX-License-Identifier: Apache-2.0 */
/* The decision step of an HTTP request, for both client protocols (see decide.h). */
#include "http/decide.h"

#include "acme/challenge.h"
#include "http/rewrite.h"
#include "http/route.h"

#include <stdio.h>

static void answer(struct slb_http_decision *d, int status, bool close)
{
    d->status = status;
    d->close = close;
}

/* The redirect keeps the request's path and query; an absolute-form target gives up its
 * authority, and a path it left empty gets its "/" (before the query, if any). */
static void redirect(struct slb_http_decision *d, const char *to, const struct slb_http_msg *m)
{
    struct slb_slice authority, path = m->target;
    const char *slash = "";
    if (slb_http_split_absolute(m->target, &authority, &path) && (!path.len || path.p[0] == '?'))
        slash = "/";
    snprintf(d->buf, sizeof(d->buf), "Location: %s%s%.*s\r\n", to, slash,
             (int)(path.len > 1000 ? 1000 : path.len), path.p);
    d->extra = d->buf;
    answer(d, 301, false);
}

void slb_http_decide(struct slb_http_decision *d, const struct slb_listener_rt *l,
                     struct slb_wgroup *wg, SSL *ssl, const struct slb_http_msg *m)
{
    const struct slb_listener_cfg *cfg = l->cfg;
    d->status = 0;
    d->close = false;
    d->extra = NULL;
    d->text = NULL;
    d->wg = NULL;
    d->sticky = (struct slb_slice){0};
    if (m->method == SLB_HTTP_CONNECT) {
        /* A reverse proxy has no business opening tunnels to arbitrary places. */
        d->extra = SLB_HTTP_ALLOW;
        answer(d, 405, true);
        return;
    }
    /* HTTP/1.0 has no Expect (RFC 9110 10.1.1): ignored there. */
    if (m->version_minor == 1 && !m->expect_continue && slb_http_find_header(m, "expect", 0) >= 0) {
        answer(d, 417, true);
        return;
    }
    if ((d->text = slb_acme_http01_request(m)) != NULL) {
        answer(d, 200, false);
        return;
    }
    if (cfg->redirect_to[0]) {
        redirect(d, cfg->redirect_to, m);
        return;
    }
    if (slb_http_misdirected(ssl, m)) {
        answer(d, 421, false);
        return;
    }
    /* Layer-7 rules (src/http/rules.c) plug in here: a matching rule answers or names the
     * group, before the listener's default group below. */
    if (!wg || wg->g->nservers == 0) {
        answer(d, 503, false);
        return;
    }
    d->wg = wg;
    if (cfg->sticky != SLB_STICKY_NONE)
        d->sticky = slb_http_cookie(m, cfg->sticky_cookie);
}
