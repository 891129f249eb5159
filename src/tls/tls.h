/* SPDX-License-Identifier: Apache-2.0 */
/* TLS termination: per-listener OpenSSL contexts built by the control thread from the
 * certificate store and the listener's policy, shared read-only by workers; the session
 * ticket key ring shared by every worker and persisted in the state directory. */
#ifndef SLB_TLS_TLS_H
#define SLB_TLS_TLS_H

#include "core/err.h"

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

struct slb_listener_rt;
struct slb_certstore;
struct slb_ticket_ring;
struct slb_cert;

/* Kind of a certificate's key, for choosing between an ECDSA and an RSA certificate. */
enum slb_tls_key_kind { SLB_TLS_KEY_OTHER, SLB_TLS_KEY_RSA, SLB_TLS_KEY_EC };

/* One certificate of a listener as SNI chooses it. Owned by its struct slb_tls_listener. */
struct slb_tls_site {
    struct slb_cert *cert; /* referenced for the listener's lifetime */
    enum slb_tls_key_kind kind;
    bool default_twin; /* same names as the default certificate (first site) */
};

/* The certificates on offer for a name: at most one per key type (s[1] may be NULL). */
struct slb_tls_pair {
    const struct slb_tls_site *s[2];
};

struct slb_tls_name;

/* What slb_tls_listener_build leaves in l->tls. Immutable once published. Contexts live in a
 * registry keyed by what they are made of (listener name, TLS settings, the certificate
 * versions, the client CA version): every snapshot holding one holds a reference (control
 * thread only), and the next snapshot reuses it when nothing it is made of changed. */
struct slb_tls_listener {
    SSL_CTX *ctx;               /* the context every connection starts on */
    struct slb_tls_site *sites; /* one per certificate id, in configuration order */
    size_t nsites;
    /* What ctx serves without SNI or a matching name: the first site and its twin of the
     * other key type, if any (dflt[1] may be NULL). */
    const struct slb_tls_site *dflt[2];
    struct slb_tls_pair dflt_pair; /* the same, as a pair */
    /* SNI: exact names and wildcard suffixes ("*.rest" as "rest") of every site, lowercased,
     * to their pair; open addressing, names_mask + 1 slots (src/tls/ctx.c). */
    struct slb_tls_name *names;
    size_t names_mask;
    char *names_arena;
    size_t names_arena_len;
    bool client_auth; /* a client CA is configured */
    bool client_cert_required;
    /* Added by src/tls: */
    struct slb_cert *client_ca; /* referenced; NULL without two-way authentication */
    uint32_t ticket_lifetime_s; /* 0 = tickets off */
    uint32_t session_max_age_s; /* no resumption once the full handshake is older */
    unsigned char alpn[32];     /* wire format (length-prefixed), what we may select */
    size_t alpn_len;
    char name[64]; /* the listener's name, for log lines */
    /* Registry (control thread only): the recipe's settings not kept above, the references
     * held by snapshots, and the chain of its bucket. */
    int policy;
    uint32_t ticket_lifetime_cfg;
    bool had_ring;
    int refs;
    struct slb_tls_listener *reg_next;
    /* The parsed listener configuration (struct slb_listener_cfg.serial) this context was last
     * found right for, and the certificate store's change count then: the next snapshot
     * holding that same configuration reuses the context after looking only at the
     * certificates changed since (slb_certstore_change_id), found through ids_ix, an open
     * addressing table by certificate id (ids_mask + 1 slots) of the id's hash (high 32 bits)
     * and its site's index (low 32 bits). */
    uint64_t cfg_serial, store_seen;
    uint64_t *ids_ix;
    size_t ids_mask;
};

/* Build-time context the control thread sets before building snapshots. Takes a reference on
 * ring (dropping the previous one): call it again after slb_ticket_ring_tick rotated so new
 * snapshots use the new ring, and with NULLs at shutdown. A NULL ring builds listeners
 * without session tickets. */
void slb_tls_set_store(struct slb_certstore *store, struct slb_ticket_ring *ring);

/* Set l->tls for an https listener (certificates, policy, tickets, client CA): the registry's
 * context with the same recipe, referenced, or a new one built and registered. */
int slb_tls_listener_build(struct slb_listener_rt *l, struct slb_err *err);
/* Drop a reference taken by slb_tls_listener_build; the last one frees the context. NULL is
 * accepted. */
void slb_tls_listener_free(void *tls);

/* TLS contexts built since start (control thread; the slbd_tls_context_builds_total metric):
 * a context reused from the registry is not counted. */
uint64_t slb_tls_context_builds(void);

/* Worker side: a new server-side SSL for a connection accepted on l (NULL on failure). */
SSL *slb_tls_ssl_new(struct slb_listener_rt *l);

/* Why a handshake failed, for metrics and logs. */
enum slb_tls_fail {
    SLB_TLS_FAIL_NONE,
    SLB_TLS_FAIL_NO_SHARED_CIPHER,
    SLB_TLS_FAIL_UNKNOWN_CA,
    SLB_TLS_FAIL_CERT_EXPIRED,
    SLB_TLS_FAIL_NO_CLIENT_CERT,
    SLB_TLS_FAIL_CERT_REVOKED,
    SLB_TLS_FAIL_CERT_NOT_YET_VALID,
    SLB_TLS_FAIL_CERT_KEY_USAGE, /* key usage or extended key usage not for a TLS client */
    SLB_TLS_FAIL_PROTOCOL_VERSION,
    SLB_TLS_FAIL_BAD_SNI,
    SLB_TLS_FAIL_NO_APPLICATION_PROTOCOL, /* ALPN offered, nothing in common (RFC 7301 3.2) */
    SLB_TLS_FAIL_HTTP_ON_HTTPS,           /* plain HTTP sent to an https port (answered 400) */
    SLB_TLS_FAIL_TIMEOUT,
    SLB_TLS_FAIL_OTHER,
    SLB_TLS_FAIL_COUNT
};
/* The certificate served on this connection, among those SNI offered; NULL before the
 * ClientHello and when the client sent no server_name (nothing was chosen by name, so no Host
 * can contradict it). */
const struct slb_tls_site *slb_tls_ssl_site(SSL *ssl);
/* The server name this connection's ClientHello sent (SNI), or NULL. Unlike
 * SSL_get_servername, also right for a TLS 1.2 resumption. */
const char *slb_tls_ssl_servername(SSL *ssl);
/* Whether a Host header value (may carry ":port", IPv6 in brackets) names one of the site's
 * SANs, with the SNI rules: exact (case-insensitive), or "*.d" matching exactly one label. */
bool slb_tls_site_matches_host(const struct slb_tls_site *s, const char *host, size_t len);
/* The HTTP layer's 421 test: the client sent SNI, and host does not match the certificate SNI
 * chose but matches another certificate of the listener. */
bool slb_tls_ssl_misdirected(SSL *ssl, const char *host, size_t len);

/* Handshakes by protocol version and cipher suite: each (version, suite) pair a policy can
 * negotiate has a counter slot, the last slot (version and cipher "other") takes the rest. */
#define SLB_TLS_SUITE_SLOTS 26
/* The slot of a completed handshake (a few string compares: once per handshake). */
int slb_tls_suite_slot(SSL *ssl);
/* The version ("TLSv1.2", as SSL_get_version says) and suite of a slot; false past the end. */
bool slb_tls_suite_describe(int slot, const char **version, const char **cipher);

/* ALPN: the protocols a listener's alpn list may name and slbd speaks ("h2", "http/1.1"). */
bool slb_tls_alpn_supported(const char *proto);

/* Security policies (src/tls/policy.c): protocol range and cipher lists of each
 * enum slb_tls_policy value. */
struct slb_tls_policy_def {
    const char *name; /* as in the configuration */
    int min_version;  /* TLS1_VERSION ... */
    int max_version;
    const char *ciphers;      /* TLS 1.0-1.2 cipher list, OpenSSL syntax */
    const char *ciphersuites; /* TLS 1.3 suites ("" when the policy stops at TLS 1.2) */
};
/* NULL for an unknown value. policy is an enum slb_tls_policy. */
const struct slb_tls_policy_def *slb_tls_policy_get(int policy);
/* Apply a policy and the listener-independent hardening (groups, options, modes, no early
 * data) to ctx. 0, or -1 with the reason left in the OpenSSL error queue. */
int slb_tls_policy_apply(SSL_CTX *ctx, int policy);
/* Drain the OpenSSL error queue into buf as "reason; reason" ("unknown error" when empty). */
void slb_tls_drain_errors(char *buf, size_t len);

/* Classify a failed handshake from the SSL's verify result and the OpenSSL error queue
 * (drains the queue). */
enum slb_tls_fail slb_tls_classify_failure(SSL *ssl);
/* The ClientHello named a server the listener has no certificate for (tls/ctx.c). */
bool slb_tls_ssl_bad_sni(SSL *ssl);
const char *slb_tls_fail_name(enum slb_tls_fail f);

/* Client certificate facts for the X-Forwarded-Clientcert-* headers, also on resumed
 * sessions (taken from the session's peer certificate). Returns false when the client sent
 * no certificate. subject/issuer are RFC 4514 strings, fp the SHA-256 hex of the DER. */
bool slb_tls_client_cert_info(SSL *ssl, char *subject, size_t slen, char *issuer, size_t ilen,
                              char *fp, size_t fplen);

/* --- session ticket keys --- */
/* Load the "tickets" document of the state backend (state/backend.h; DIR/tickets.json),
 * creating keys when missing, rotating keys older than rotate_s. */
struct slb_backend;
struct slb_ticket_ring *slb_ticket_ring_open(struct slb_backend *b, struct slb_err *err);
/* Called each second by the control thread; returns true when it rotated (the caller then
 * publishes the new ring with slb_tls_set_store). */
bool slb_ticket_ring_tick(struct slb_ticket_ring **ring, struct slb_backend *b);
void slb_ticket_ring_ref(struct slb_ticket_ring *r);
void slb_ticket_ring_unref(struct slb_ticket_ring *r);
/* Rotate now regardless of age (what tick does when the newest key is due); true when a new
 * ring replaced *ring (it is persisted too; a failed write is logged, not fatal). */
bool slb_ticket_ring_rotate(struct slb_ticket_ring **ring, struct slb_backend *b);
/* Keys in the ring (1..3) and the name of key i (0 = newest), for tests and diagnostics; the
 * key material itself never leaves tickets.c. */
size_t slb_ticket_ring_count(const struct slb_ticket_ring *r);
bool slb_ticket_ring_key_name(const struct slb_ticket_ring *r, size_t i, uint8_t name[16]);
/* Make ctx encrypt tickets with the published ring's newest key and decrypt with any of its
 * keys. 0, or -1 with the OpenSSL queue set. */
int slb_ticket_ring_install(SSL_CTX *ctx);
/* Make r the ring every context's ticket callback reads (one atomic pointer; slb_tls_set_store
 * calls it): a rotation reaches every connection without building any context. Takes a
 * reference; the previous ring stays alive a few seconds for callbacks still reading it.
 * NULL (at shutdown, workers stopped) drops every ring at once. */
void slb_ticket_ring_publish(struct slb_ticket_ring *r);

#endif
