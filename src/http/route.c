/* SPDX-License-Identifier: Apache-2.0 */
/* Routing decisions of the http/https listeners that need no connection state. */
#include "http/route.h"

#include "http/rewrite.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

void slb_http_format_ip(const struct sockaddr_storage *a, char *out, size_t size)
{
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)a;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], out, (socklen_t)size);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, out, (socklen_t)size);
    } else {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, out, (socklen_t)size);
    }
}

void slb_http_sticky_value(const struct slb_group_rt *g, int i, char *out, size_t size)
{
    snprintf(out, size, "%s", g->srv[i]->sticky_id);
}

int slb_http_sticky_lookup(const struct slb_group_rt *g, struct slb_slice v)
{
    if (v.len < SLB_STICKY_ID_LEN)
        return -1;
    for (size_t i = 0; i < g->nservers; i++) {
        if (memcmp(g->srv[i]->sticky_id, v.p, SLB_STICKY_ID_LEN) == 0)
            return (int)i;
    }
    return -1;
}

bool slb_http_server_usable(const struct slb_group_rt *g, int i)
{
    return g->weights[i] > 0 &&
           atomic_load_explicit(&g->srv[i]->healthy, memory_order_relaxed) == SLB_HEALTH_UP;
}

bool slb_http_acl_allows(const struct slb_listener_cfg *cfg, const struct sockaddr_storage *peer)
{
    if (cfg->acl_mode == SLB_ACL_NONE)
        return true;
    uint8_t a4[4], a6[16];
    bool v4 = false;
    if (peer->ss_family == AF_INET) {
        memcpy(a4, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        v4 = true;
    } else {
        const struct in6_addr *x = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        memcpy(a6, x, 16);
        if (IN6_IS_ADDR_V4MAPPED(x)) {
            memcpy(a4, &x->s6_addr[12], 4);
            v4 = true;
        }
    }
    bool match = false;
    for (size_t i = 0; i < cfg->nacl && !match; i++) {
        const struct slb_cidr *r = &cfg->acl[i];
        const uint8_t *addr =
            r->family == AF_INET ? (v4 ? a4 : NULL) : (peer->ss_family == AF_INET6 ? a6 : NULL);
        if (!addr)
            continue;
        unsigned bits = r->prefix, k = 0;
        match = true;
        for (; bits >= 8; bits -= 8, k++)
            match &= addr[k] == r->addr[k];
        if (bits)
            match &= (addr[k] >> (8 - bits)) == (r->addr[k] >> (8 - bits));
    }
    return cfg->acl_mode == SLB_ACL_ALLOW ? match : !match;
}

bool slb_http_misdirected(SSL *ssl, const struct slb_http_msg *m)
{
    struct slb_slice host = m->host, path;
    slb_http_split_absolute(m->target, &host, &path); /* the target's authority wins */
    return ssl && host.len && slb_tls_ssl_misdirected(ssl, host.p, host.len);
}

void slb_http_fwd_init(struct slb_fwd_info *fwd, struct slb_fwd_certs *certs,
                       const struct slb_listener_rt *l, SSL *ssl, const char *client_ip,
                       unsigned local_port)
{
    const struct slb_listener_cfg *cfg = l->cfg;
    *fwd = (struct slb_fwd_info){
        .client_ip = client_ip,
        .proto = cfg->x_forwarded_proto ? (ssl ? "https" : "http") : NULL,
        .port = local_port,
        .xff = cfg->x_forwarded_for,
        .strip_cookie_prefix_name = cfg->sticky == SLB_STICKY_SERVER ? cfg->sticky_cookie : NULL,
    };
    if (!ssl || !l->tls || !((struct slb_tls_listener *)l->tls)->client_auth)
        return;
    if (slb_tls_client_cert_info(ssl, certs->subject, sizeof(certs->subject), certs->issuer,
                                 sizeof(certs->issuer), certs->fingerprint,
                                 sizeof(certs->fingerprint))) {
        fwd->cert_verify = "SUCCESS";
        fwd->cert_subject = certs->subject;
        fwd->cert_issuer = certs->issuer;
        fwd->cert_fingerprint = certs->fingerprint;
    } else {
        fwd->cert_verify = "NONE";
    }
}

void slb_http_sticky_response(struct slb_sticky_out *o, const struct slb_listener_cfg *cfg,
                              const struct slb_group_rt *g, int srv_idx, bool tls)
{
    o->set_cookie = o->prefix_name = NULL;
    o->prefix[0] = 0;
    if (cfg->sticky == SLB_STICKY_INSERT) {
        char v[20];
        slb_http_sticky_value(g, srv_idx, v, sizeof(v));
        snprintf(o->cookie, sizeof(o->cookie), "%s=%s; Path=/; Max-Age=%u; HttpOnly%s",
                 cfg->sticky_cookie, v, cfg->sticky_timeout_s, tls ? "; Secure" : "");
        o->set_cookie = o->cookie;
    } else if (cfg->sticky == SLB_STICKY_SERVER) {
        slb_http_sticky_value(g, srv_idx, o->prefix, sizeof(o->prefix));
        o->prefix_name = cfg->sticky_cookie;
    }
}
