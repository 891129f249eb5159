/* SPDX-License-Identifier: Apache-2.0 */
/* Security policies: the table of protocol ranges and cipher lists behind the configuration's
 * `policy` names, the hardening every https listener shares, and the OpenSSL error drain. */
#include "tls/tls.h"

#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

/*
 * TLS security policies (copied to docs/configuration.md)
 * =======================================================
 *
 * Every policy is forward-secret only: TLS 1.2 and older use ECDHE key exchange with an ECDSA
 * or RSA certificate; no static RSA key exchange (kRSA), no finite-field DHE, no PSK, no NULL,
 * EXPORT, RC4, 3DES, CAMELLIA or ARIA. TLS 1.3 is always (EC)DHE. The server's preference
 * order applies (AES-GCM first, then ChaCha20-Poly1305, then CBC for old clients).
 *
 * | policy                                          | protocols   | TLS 1.0-1.2 suites      |
 * |-------------------------------------------------|-------------|-------------------------|
 * | tls_cipher_policy_1_0                           | TLS 1.0-1.2 | GCM, CHACHA, CBC2, CBC1 |
 * | tls_cipher_policy_1_1                           | TLS 1.1-1.2 | GCM, CHACHA, CBC2, CBC1 |
 * | tls_cipher_policy_1_2                           | TLS 1.2     | GCM, CHACHA, CBC2, CBC1 |
 * | tls_cipher_policy_1_2_strict                    | TLS 1.2     | GCM, CHACHA             |
 * | tls_cipher_policy_1_2_strict_with_1_3 (default) | TLS 1.2-1.3 | GCM, CHACHA             |
 *
 * in this order of server preference, where
 *   GCM    ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256,
 *          ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384
 *   CHACHA ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-CHACHA20-POLY1305
 *   CBC2   ECDHE-ECDSA-AES128-SHA256, ECDHE-RSA-AES128-SHA256,
 *          ECDHE-ECDSA-AES256-SHA384, ECDHE-RSA-AES256-SHA384         (TLS 1.2 only)
 *   CBC1   ECDHE-ECDSA-AES128-SHA, ECDHE-RSA-AES128-SHA,
 *          ECDHE-ECDSA-AES256-SHA, ECDHE-RSA-AES256-SHA               (old clients)
 * (OpenSSL names; the ECDSA or RSA flavour follows the certificate SNI selects). TLS 1.3 suites
 * of the default policy: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
 * TLS_CHACHA20_POLY1305_SHA256. The 1_0 and 1_1 policies keep the TLS 1.2 suites of 1_2, so a
 * TLS 1.2 client is served alike by 1_0, 1_1 and 1_2.
 *
 * Key exchange groups, every policy: X25519, P-256, P-384 (in that order of preference).
 *
 * TLS 1.0 and 1.1 with OpenSSL 3: these versions sign the key exchange with MD5+SHA-1 / SHA-1,
 * which OpenSSL 3 refuses at security level 1 and above, so the 1_0 and 1_1 policies set
 * security level 0 ("@SECLEVEL=0" in the cipher string). The level also relaxes minimum key
 * sizes, which the certificate store enforces on upload anyway (weak_key). Every other policy
 * keeps OpenSSL's default level.
 *
 * Common to every policy: no renegotiation, no compression, no TLS 1.3 early data (0-RTT:
 * our tickets never allow it; early data sent anyway with a ticket from another server is
 * rejected and skipped, up to 16 KiB, and the handshake goes on as 1-RTT), server cipher
 * preference. Resumption uses session tickets only (the server keeps no session cache, so
 * resumption works across workers, configuration changes and restarts): the ticket
 * lifetime is the listener's session_ticket_lifetime_s, enforced by the server when a ticket
 * comes back; one ticket per TLS 1.3 handshake; lifetime 0 turns tickets off. Ticket keys
 * (AES-256-CBC + HMAC-SHA256) live in DIR/tickets.json, a new one every hour; the three newest
 * decrypt, so a ticket outlives at most two rotations. A ticket resumes only on the listener
 * that issued it, and not after its client_ca changed.
 */

#define SUITES_GCM                                                                                 \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define SUITES_CHACHA "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define SUITES_CBC_SHA2                                                                            \
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"                                           \
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384"
#define SUITES_CBC_SHA1                                                                            \
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"
#define SUITES_TLS13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

#define LIST_LEGACY SUITES_GCM ":" SUITES_CHACHA ":" SUITES_CBC_SHA2 ":" SUITES_CBC_SHA1
#define LIST_STRICT SUITES_GCM ":" SUITES_CHACHA

/* Indexed by enum slb_tls_policy (config/config.h); the names match slb_tls_policy_name. */
static const struct slb_tls_policy_def policies[] = {
    {"tls_cipher_policy_1_0", TLS1_VERSION, TLS1_2_VERSION, LIST_LEGACY ":@SECLEVEL=0",
     SUITES_TLS13},
    {"tls_cipher_policy_1_1", TLS1_1_VERSION, TLS1_2_VERSION, LIST_LEGACY ":@SECLEVEL=0",
     SUITES_TLS13},
    {"tls_cipher_policy_1_2", TLS1_2_VERSION, TLS1_2_VERSION, LIST_LEGACY, SUITES_TLS13},
    {"tls_cipher_policy_1_2_strict", TLS1_2_VERSION, TLS1_2_VERSION, LIST_STRICT, SUITES_TLS13},
    {"tls_cipher_policy_1_2_strict_with_1_3", TLS1_2_VERSION, TLS1_3_VERSION, LIST_STRICT,
     SUITES_TLS13},
};

#define GROUPS "X25519:P-256:P-384"

const struct slb_tls_policy_def *slb_tls_policy_get(int policy)
{
    if (policy < 0 || (size_t)policy >= sizeof(policies) / sizeof(policies[0]))
        return NULL;
    return &policies[policy];
}

int slb_tls_policy_apply(SSL_CTX *ctx, int policy)
{
    const struct slb_tls_policy_def *p = slb_tls_policy_get(policy);
    if (!p) {
        ERR_raise_data(ERR_LIB_SSL, SSL_R_UNSUPPORTED_PROTOCOL, "unknown policy %d", policy);
        return -1;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, p->min_version) ||
        !SSL_CTX_set_max_proto_version(ctx, p->max_version))
        return -1;
    /* The TLS 1.3 suites are set even for policies that stop at 1.2: harmless, and it keeps
     * OpenSSL's defaults (which we do not document) out of the picture. */
    if (!SSL_CTX_set_cipher_list(ctx, p->ciphers) ||
        !SSL_CTX_set_ciphersuites(ctx, p->ciphersuites))
        return -1;
    if (!SSL_CTX_set1_groups_list(ctx, GROUPS))
        return -1;
    /* An EOF without close_notify is an ordinary end of stream for HTTP (its framing shows
     * truncation), not a protocol error to answer with an alert. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Partial writes and moving buffers suit a non-blocking event loop; released buffers keep
     * idle keep-alive connections at a few hundred bytes each. Certificate chains come from
     * the store complete, so OpenSSL must not spend a chain build per handshake. */
    /* Read whole records (and what follows) in one read(2) instead of header, then body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_NO_AUTO_CHAIN);
    /* 0-RTT data is replayable: a proxy cannot know whether the backend request is idempotent.
     * max_early_data 0: our tickets never invite it and every offer is rejected. The receive
     * limit is how much rejected early data (sent with a stale or foreign ticket) is skipped
     * before the 1-RTT handshake goes on (RFC 8446 4.2.10); at 0 every such offer would end
     * the handshake with unexpected_message. One full record covers the usual 16 KiB limit
     * servers put in their tickets. */
    if (!SSL_CTX_set_max_early_data(ctx, 0) ||
        !SSL_CTX_set_recv_max_early_data(ctx, SSL3_RT_MAX_PLAIN_LENGTH))
        return -1;
    /* Tickets only: a stateful cache would be per SSL_CTX, i.e. lost on every configuration
     * change, and would need locking between workers. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return 0;
}

bool slb_tls_alpn_supported(const char *proto)
{
    return strcmp(proto, "http/1.1") == 0 || strcmp(proto, "h2") == 0;
}

void slb_tls_drain_errors(char *buf, size_t len)
{
    size_t used = 0;
    unsigned long e;
    const char *data;
    int flags;
    if (len == 0) {
        ERR_clear_error();
        return;
    }
    buf[0] = '\0';
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        const char *reason = ERR_reason_error_string(e);
        char num[32];
        if (!reason) {
            snprintf(num, sizeof(num), "error %lu", e);
            reason = num;
        }
        bool extra = (flags & ERR_TXT_STRING) && data && data[0];
        int n = snprintf(buf + used, len - used, "%s%s%s%s%s", used ? "; " : "", reason,
                         extra ? " (" : "", extra ? data : "", extra ? ")" : "");
        if (n < 0 || (size_t)n >= len - used) {
            used = len - 1;
            break;
        }
        used += (size_t)n;
    }
    ERR_clear_error();
    if (used == 0)
        snprintf(buf, len, "unknown error");
}

/* --- handshakes by version and cipher suite --- */

/* Every suite a policy can offer and the versions it can be negotiated in: what the
 * per-listener handshake counters are indexed by (SLB_TLS_SUITE_SLOTS slots). */
enum { V10 = 1, V11 = 2, V12 = 4, V13 = 8 };
static const struct {
    const char *name;
    unsigned versions;
} suites[] = {
    {"TLS_AES_128_GCM_SHA256", V13},           {"TLS_AES_256_GCM_SHA384", V13},
    {"TLS_CHACHA20_POLY1305_SHA256", V13},     {"ECDHE-ECDSA-AES128-GCM-SHA256", V12},
    {"ECDHE-RSA-AES128-GCM-SHA256", V12},      {"ECDHE-ECDSA-AES256-GCM-SHA384", V12},
    {"ECDHE-RSA-AES256-GCM-SHA384", V12},      {"ECDHE-ECDSA-CHACHA20-POLY1305", V12},
    {"ECDHE-RSA-CHACHA20-POLY1305", V12},      {"ECDHE-ECDSA-AES128-SHA256", V12},
    {"ECDHE-RSA-AES128-SHA256", V12},          {"ECDHE-ECDSA-AES256-SHA384", V12},
    {"ECDHE-RSA-AES256-SHA384", V12},          {"ECDHE-ECDSA-AES128-SHA", V10 | V11 | V12},
    {"ECDHE-RSA-AES128-SHA", V10 | V11 | V12}, {"ECDHE-ECDSA-AES256-SHA", V10 | V11 | V12},
    {"ECDHE-RSA-AES256-SHA", V10 | V11 | V12},
};
static const char *const version_names[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};

static unsigned version_bit(int v)
{
    switch (v) {
    case TLS1_VERSION:
        return V10;
    case TLS1_1_VERSION:
        return V11;
    case TLS1_2_VERSION:
        return V12;
    case TLS1_3_VERSION:
        return V13;
    default:
        return 0;
    }
}

int slb_tls_suite_slot(SSL *ssl)
{
    unsigned vb = version_bit(SSL_version(ssl));
    const char *name = SSL_get_cipher_name(ssl);
    int slot = 0;
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        for (unsigned b = V10; b <= V13; b <<= 1) {
            if (!(suites[i].versions & b))
                continue;
            if (b == vb && name && strcmp(name, suites[i].name) == 0)
                return slot;
            slot++;
        }
    }
    return slot; /* anything else: the last slot */
}

bool slb_tls_suite_describe(int slot, const char **version, const char **cipher)
{
    int k = 0;
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        for (int v = 0; v < 4; v++) {
            if (!(suites[i].versions & (1u << v)))
                continue;
            if (k++ == slot) {
                *version = version_names[v];
                *cipher = suites[i].name;
                return true;
            }
        }
    }
    if (slot == k) {
        *version = *cipher = "other";
        return true;
    }
    return false;
}
