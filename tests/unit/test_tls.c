/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of src/tls: real in-memory handshakes (BIO pairs) between an OpenSSL client and
 * the server SSL of slb_tls_ssl_new, over certificates from a real store filled with a PKI the
 * openssl CLI generates in the group setup. */

/* cmocka needs these in this order; keep clang-format from sorting them. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "cert/store.h"
#include "config/config.h"
#include "config/snapshot.h"
#include "core/fsio.h"
#include "core/log.h"
#include "state/backend.h"
#include "tls/tls.h"

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmp_dir[64];
static char pki_dir[128];
static char state_dir[128];
static struct slb_certstore *store;
static struct slb_ticket_ring *ring;

/* ------------------------------------------------------------------------------------------
 * PKI
 * ---------------------------------------------------------------------------------------- */

/* One CA database per signing CA (CADB picks it); leaf profiles as extension sections. */
static const char pki_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "cat >ca.cnf <<'EOF'\n"
    "[ ca ]\n"
    "default_ca = d\n"
    "[ d ]\n"
    "dir = $ENV::CADB\n"
    "database = $dir/index.txt\n"
    "new_certs_dir = $dir/new\n"
    "serial = $dir/serial\n"
    "crlnumber = $dir/crlnumber\n"
    "default_md = sha256\n"
    "default_days = 30\n"
    "default_crl_days = 30\n"
    "policy = p\n"
    "unique_subject = no\n"
    "copy_extensions = none\n"
    "[ p ]\n"
    "commonName = supplied\n"
    "[ req ]\n"
    "distinguished_name = dn\n"
    "prompt = no\n"
    "[ dn ]\n"
    "CN = unused\n"
    "[ v3ca ]\n"
    "basicConstraints = critical, CA:TRUE\n"
    "keyUsage = critical, keyCertSign, cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[ srv ]\n"
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature, keyEncipherment\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:localhost, DNS:*.example.com\n"
    "[ other ]\n"
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = DNS:other.test\n"
    "[ cli ]\n"
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature\n"
    "extendedKeyUsage = clientAuth\n"
    "[ crlx ]\n"
    "authorityKeyIdentifier = keyid\n"
    "EOF\n"
    "key() {\n"
    "  if [ $2 = rsa ]; then\n"
    "    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $1.key\n"
    "  else\n"
    "    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key\n"
    "  fi\n"
    "}\n"
    "mkca() {\n"
    "  mkdir -p db-$1/new; : >db-$1/index.txt; echo 1000 >db-$1/serial\n"
    "  echo 1000 >db-$1/crlnumber\n"
    "  key $1 ec\n"
    "  CADB=db-$1 openssl req -config ca.cnf -new -x509 -key $1.key -subj \"/CN=$2\" \\\n"
    "    -days 30 -extensions v3ca -out $1.pem\n"
    "}\n"
    "issue() {\n"
    "  ca=$1 name=$2 kind=$3 ext=$4 cn=$5; shift 5\n"
    "  key $name $kind\n"
    "  CADB=db-$ca openssl req -config ca.cnf -new -key $name.key -subj \"/CN=$cn\" \\\n"
    "    -out $name.csr\n"
    "  CADB=db-$ca openssl ca -config ca.cnf -batch -notext -cert $ca.pem -keyfile $ca.key \\\n"
    "    -extensions $ext \"$@\" -in $name.csr -out $name.pem\n"
    "}\n"
    "mkca ca 'SLB Test CA'\n"
    "mkca wrongca 'SLB Wrong CA'\n"
    "issue ca server-ec ec srv localhost\n"
    "issue ca server-rsa rsa srv localhost\n"
    "issue ca other-ec ec other other.test\n"
    "issue ca client ec cli 'SLB Test Client'\n"
    "issue ca client-expired ec cli 'SLB Expired Client' -startdate 20200101000000Z \\\n"
    "  -enddate 20210101000000Z\n"
    "issue ca client-revoked ec cli 'SLB Revoked Client'\n"
    "issue wrongca client-wrong ec cli 'SLB Wrong Client'\n"
    "issue ca inter ec v3ca 'SLB Test Intermediate'\n"
    "mkdir -p db-inter/new; : >db-inter/index.txt; echo 1000 >db-inter/serial\n"
    "issue inter client-inter ec cli 'SLB Inter Client'\n"
    "cat client-inter.pem inter.pem >client-inter-chain.pem\n"
    "cp client-inter.key client-inter-chain.key\n"
    "CADB=db-ca openssl ca -config ca.cnf -batch -cert ca.pem -keyfile ca.key \\\n"
    "  -revoke client-revoked.pem\n"
    "CADB=db-ca openssl ca -config ca.cnf -batch -cert ca.pem -keyfile ca.key -gencrl \\\n"
    "  -crlexts crlx -out ca.crl\n";

static char *read_pki(const char *name)
{
    char path[256];
    char *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", pki_dir, name);
    int rc = slb_fs_read_all(path, 1 << 20, &data, &len);
    if (rc != 0)
        fail_msg("cannot read %s: %s", path, slb_strerror(rc));
    return data;
}

static const char *pki_path(const char *name)
{
    static char path[8][256];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 256, "%s/%s", pki_dir, name);
    return p;
}

static void store_add(const char *id, const char *type, const char *file, const char *keyfile)
{
    char *pem = read_pki(file);
    char *key = keyfile ? read_pki(keyfile) : NULL;
    json_t *body =
        json_pack("{s:s, s:s, s:s, s:s}", "id", id, "name", id, "type", type, "certificate", pem);
    if (key)
        json_object_set_new(body, "private_key", json_string(key));
    struct slb_err err = {0};
    int rc = slb_certstore_create(store, body, NULL, &err);
    if (rc != 0)
        fail_msg("store %s: %s: %s", id, err.code, err.msg);
    json_decref(body);
    free(pem);
    free(key);
}

static X509 *leaf_of(const char *id)
{
    struct slb_cert *c = slb_certstore_get(store, id);
    assert_non_null(c);
    return c->leaf;
}

/* The state directory dir as a state backend (the ticket ring persists through one); kept
 * until the group ends. */
static struct slb_backend *backends[32];
static size_t nbackends;

static struct slb_backend *dir_backend(const char *dir)
{
    struct slb_err err = {0};
    assert_true(nbackends < sizeof(backends) / sizeof(backends[0]));
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_non_null(b);
    backends[nbackends++] = b;
    return b;
}

static int group_setup(void **state)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/slb-tls-XXXXXX");
    if (!mkdtemp(tmp_dir))
        return -1;
    snprintf(pki_dir, sizeof(pki_dir), "%s/pki", tmp_dir);
    snprintf(state_dir, sizeof(state_dir), "%s/state", tmp_dir);
    if (mkdir(pki_dir, 0700) < 0 || mkdir(state_dir, 0700) < 0)
        return -1;
    char path[256], cmd[768];
    snprintf(path, sizeof(path), "%s/gen.sh", pki_dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(pki_script, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "sh %s %s >%s/gen.log 2>&1", path, pki_dir, pki_dir);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof(cmd), "tail -n 30 %s/gen.log >&2", pki_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "openssl PKI generation failed\n");
        return -1;
    }
    struct slb_err err = {0};
    store = slb_certstore_open(state_dir, &err);
    if (!store) {
        fprintf(stderr, "certstore: %s\n", err.msg);
        return -1;
    }
    store_add("ec", "server", "server-ec.pem", "server-ec.key");
    store_add("rsa", "server", "server-rsa.pem", "server-rsa.key");
    store_add("other", "server", "other-ec.pem", "other-ec.key");
    store_add("ca", "ca", "ca.pem", NULL);
    store_add("cacrl", "ca", "ca.pem", NULL);
    store_add("inter", "ca", "inter.pem", NULL);
    char *crl = read_pki("ca.crl");
    if (slb_certstore_set_crl(store, "cacrl", crl, &err) != 0) {
        fprintf(stderr, "set_crl: %s\n", err.msg);
        return -1;
    }
    free(crl);
    ring = slb_ticket_ring_open(dir_backend(state_dir), &err);
    if (!ring) {
        fprintf(stderr, "ring: %s\n", err.msg);
        return -1;
    }
    slb_tls_set_store(store, ring);
    return 0;
}

static int group_teardown(void **state)
{
    slb_tls_set_store(NULL, NULL);
    slb_ticket_ring_unref(ring);
    slb_certstore_free(store);
    for (size_t i = 0; i < nbackends; i++)
        slb_backend_free(backends[i]);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------
 * Listeners built by hand
 * ---------------------------------------------------------------------------------------- */

struct lis {
    struct slb_listener_cfg cfg;
    struct slb_listener_rt rt;
    char ids[4][SLB_NAME_MAX];
};

static void lis_init(struct lis *L, const char *name, const char *c0, const char *c1,
                     const char *c2)
{
    memset(L, 0, sizeof(*L));
    snprintf(L->cfg.name, sizeof(L->cfg.name), "%s", name);
    L->cfg.protocol = SLB_PROTO_HTTPS;
    const char *ids[3] = {c0, c1, c2};
    for (size_t i = 0; i < 3 && ids[i]; i++) {
        snprintf(L->ids[i], sizeof(L->ids[i]), "%s", ids[i]);
        L->cfg.tls.ncertificates = i + 1;
    }
    L->cfg.tls.certificates = L->ids;
    L->cfg.tls.policy = SLB_TLS_POLICY_1_2_STRICT_WITH_1_3;
    L->cfg.tls.client_auth = SLB_CLIENT_AUTH_REQUIRED;
    L->cfg.tls.session_ticket_lifetime_s = 300;
    L->cfg.tls.session_max_age_s = 3600;
    snprintf(L->cfg.tls.alpn[0], sizeof(L->cfg.tls.alpn[0]), "h2");
    snprintf(L->cfg.tls.alpn[1], sizeof(L->cfg.tls.alpn[1]), "http/1.1");
    L->cfg.tls.nalpn = 2;
    L->rt.cfg = &L->cfg;
}

static void lis_build(struct lis *L)
{
    struct slb_err err = {0};
    if (slb_tls_listener_build(&L->rt, &err) != 0)
        fail_msg("build %s: %s: %s (%s)", L->cfg.name, err.code, err.msg, err.where);
    assert_non_null(L->rt.tls);
}

static void lis_free(struct lis *L)
{
    slb_tls_listener_free(L->rt.tls);
    L->rt.tls = NULL;
}

/* ------------------------------------------------------------------------------------------
 * In-memory handshakes
 * ---------------------------------------------------------------------------------------- */

struct copts {
    int min, max;        /* 0 = library default */
    const char *ciphers; /* TLS <= 1.2 */
    const char *sigalgs;
    const char *sni;
    const char *cert; /* PKI base name: X.pem and X.key */
    SSL_SESSION *session;
    const unsigned char *alpn;
    unsigned alpn_len;
};

struct hs {
    SSL *c, *s;
    int cst, sst;          /* 1 done, -1 failed, 0 in progress */
    unsigned long cerr;    /* the client's error (an alert received shows up here) */
    enum slb_tls_fail why; /* the server's classified failure */
    bool data_ok;          /* application data crossed after the handshake */
};

static void step(SSL *ssl, int *st, bool server, struct hs *h)
{
    if (*st != 0)
        return;
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1) {
        *st = 1;
        return;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return;
    *st = -1;
    /* One thread plays both sides and the error queue is per thread: read it right away. */
    if (server)
        h->why = slb_tls_classify_failure(ssl);
    else
        h->cerr = ERR_peek_last_error();
    ERR_clear_error();
}

static void hs_run(struct lis *L, const struct copts *o, struct hs *h)
{
    memset(h, 0, sizeof(*h));
    h->why = SLB_TLS_FAIL_NONE;
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cctx);
    if (o->min)
        assert_int_equal(SSL_CTX_set_min_proto_version(cctx, o->min), 1);
    if (o->max)
        assert_int_equal(SSL_CTX_set_max_proto_version(cctx, o->max), 1);
    if (o->ciphers)
        assert_int_equal(SSL_CTX_set_cipher_list(cctx, o->ciphers), 1);
    if (o->cert) {
        char pem[64], key[64];
        snprintf(pem, sizeof(pem), "%s.pem", o->cert);
        snprintf(key, sizeof(key), "%s.key", o->cert);
        assert_int_equal(SSL_CTX_use_certificate_chain_file(cctx, pki_path(pem)), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(cctx, pki_path(key), SSL_FILETYPE_PEM), 1);
    }
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    h->c = SSL_new(cctx);
    SSL_CTX_free(cctx);
    assert_non_null(h->c);
    if (o->sigalgs)
        assert_int_equal(SSL_set1_sigalgs_list(h->c, o->sigalgs), 1);
    if (o->sni)
        assert_int_equal(SSL_set_tlsext_host_name(h->c, o->sni), 1);
    if (o->session)
        assert_int_equal(SSL_set_session(h->c, o->session), 1);
    if (o->alpn)
        assert_int_equal(SSL_set_alpn_protos(h->c, o->alpn, o->alpn_len), 0);

    h->s = slb_tls_ssl_new(&L->rt);
    assert_non_null(h->s);
    BIO *bc, *bs;
    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(h->c, bc, bc);
    SSL_set_bio(h->s, bs, bs);
    SSL_set_connect_state(h->c);
    SSL_set_accept_state(h->s);
    for (int i = 0; i < 50 && (h->cst == 0 || h->sst == 0); i++) {
        step(h->c, &h->cst, false, h);
        step(h->s, &h->sst, true, h);
        if (h->cst == -1 && h->sst == 0)
            step(h->s, &h->sst, true, h); /* let the server read the client's alert */
        if (h->cst == -1 && h->sst == 0)
            break;
    }
    char buf[8];
    if (h->cst == 1 && h->sst == -1) {
        /* TLS 1.3: the client finished before the server judged its certificate; the alert
         * arrives with the next read. */
        ERR_clear_error();
        if (SSL_read(h->c, buf, sizeof(buf)) <= 0)
            h->cerr = ERR_peek_last_error();
        ERR_clear_error();
    }
    if (h->cst == 1 && h->sst == 1) {
        /* Application data after the handshake; reading it also makes the client process
         * TLS 1.3 NewSessionTicket messages, so its session becomes resumable. */
        ERR_clear_error();
        int w = SSL_write(h->s, "ping", 4);
        int r = SSL_read(h->c, buf, sizeof(buf));
        h->data_ok = w == 4 && r == 4 && memcmp(buf, "ping", 4) == 0;
        ERR_clear_error();
    }
}

static void hs_free(struct hs *h)
{
    /* A client freed without close_notify marks its session not resumable (OpenSSL treats
     * it as a possibly truncated connection). */
    if (h->cst == 1) {
        ERR_clear_error();
        SSL_shutdown(h->c);
        ERR_clear_error();
    }
    SSL_free(h->c);
    SSL_free(h->s);
    h->c = h->s = NULL;
}

static bool hs_ok(const struct hs *h)
{
    return h->cst == 1 && h->sst == 1 && h->data_ok;
}

static void assert_hs_ok(const struct hs *h)
{
    if (!hs_ok(h)) {
        char e[256];
        ERR_error_string_n(h->cerr, e, sizeof(e));
        fail_msg("handshake failed: client %d (%s), server %d (%s)", h->cst, e, h->sst,
                 slb_tls_fail_name(h->why));
    }
}

/* A full handshake on L that must succeed; returns the client's resumable session. */
static SSL_SESSION *full_session(struct lis *L, const struct copts *o)
{
    struct hs h;
    hs_run(L, o, &h);
    assert_hs_ok(&h);
    assert_false(SSL_session_reused(h.s));
    SSL_SESSION *s = SSL_get1_session(h.c);
    assert_non_null(s);
    assert_true(SSL_SESSION_is_resumable(s));
    hs_free(&h);
    return s;
}

/* Try to resume sess on L: 1 reused, 0 full handshake; *renewed says a different session
 * (ticket) came back. */
static int resume(struct lis *L, const struct copts *base, SSL_SESSION *sess, SSL_SESSION **newsess)
{
    struct copts o = *base;
    struct hs h;
    o.session = sess;
    hs_run(L, &o, &h);
    assert_hs_ok(&h);
    int reused = SSL_session_reused(h.s);
    assert_int_equal(reused, SSL_session_reused(h.c));
    if (newsess)
        *newsess = SSL_get1_session(h.c);
    hs_free(&h);
    return reused;
}

static const struct copts dflt = {0};

/* ------------------------------------------------------------------------------------------
 * Tests: policies
 * ---------------------------------------------------------------------------------------- */

static void test_policy_table(void **state)
{
    for (int p = SLB_TLS_POLICY_1_0; p <= SLB_TLS_POLICY_1_2_STRICT_WITH_1_3; p++) {
        const struct slb_tls_policy_def *d = slb_tls_policy_get(p);
        assert_non_null(d);
        assert_string_equal(d->name, slb_tls_policy_name((enum slb_tls_policy)p));
        struct lis L;
        lis_init(&L, "pol", "ec", "rsa", NULL);
        L.cfg.tls.policy = (enum slb_tls_policy)p;
        lis_build(&L);
        SSL_CTX *ctx = ((struct slb_tls_listener *)L.rt.tls)->ctx;
        assert_int_equal(SSL_CTX_get_min_proto_version(ctx), d->min_version);
        assert_int_equal(SSL_CTX_get_max_proto_version(ctx), d->max_version);
        STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx);
        int n12 = 0;
        for (int i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
            const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
            int kx = SSL_CIPHER_get_kx_nid(c);
            /* Forward secrecy only: ECDHE, or TLS 1.3 (kx "any"). */
            assert_true(kx == NID_kx_ecdhe || kx == NID_kx_any);
            if (kx == NID_kx_ecdhe) {
                n12++;
                if (p >= SLB_TLS_POLICY_1_2_STRICT)
                    assert_true(SSL_CIPHER_is_aead(c));
            }
            assert_null(strstr(SSL_CIPHER_get_name(c), "CAMELLIA"));
            assert_null(strstr(SSL_CIPHER_get_name(c), "ARIA"));
            assert_null(strstr(SSL_CIPHER_get_name(c), "DES"));
        }
        assert_int_equal(n12, p >= SLB_TLS_POLICY_1_2_STRICT ? 6 : 14);
        long opts = (long)SSL_CTX_get_options(ctx);
        assert_true(opts & SSL_OP_NO_RENEGOTIATION);
        assert_true(opts & SSL_OP_CIPHER_SERVER_PREFERENCE);
        assert_true(opts & SSL_OP_NO_COMPRESSION);
        assert_int_equal(SSL_CTX_get_max_early_data(ctx), 0);
        assert_int_equal(SSL_CTX_get_session_cache_mode(ctx), SSL_SESS_CACHE_OFF);
        assert_int_equal(SSL_CTX_get_timeout(ctx), 300);
        assert_int_equal(SSL_CTX_get_num_tickets(ctx), 1);
        int sec = SSL_CTX_get_security_level(ctx);
        if (p <= SLB_TLS_POLICY_1_1)
            assert_int_equal(sec, 0);
        else
            assert_true(sec >= 1);
        lis_free(&L);
    }
    assert_null(slb_tls_policy_get(-1));
    assert_null(slb_tls_policy_get(5));
}

static void test_default_tls13_and_alpn(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", "rsa", NULL);
    lis_build(&L);
    static const unsigned char both[] = "\x02h2\x08http/1.1";
    struct copts o = {.alpn = both, .alpn_len = sizeof(both) - 1};
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_int_equal(SSL_version(h.s), TLS1_3_VERSION);
    const unsigned char *sel;
    unsigned len;
    /* Server preference: h2 first. */
    SSL_get0_alpn_selected(h.c, &sel, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(sel, "h2", 2);
    hs_free(&h);

    /* A client offering http/1.1 alone gets it. */
    static const unsigned char h1[] = "\x08http/1.1";
    o.alpn = h1;
    o.alpn_len = sizeof(h1) - 1;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    SSL_get0_alpn_selected(h.c, &sel, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(sel, "http/1.1", 8);
    hs_free(&h);

    /* A client offering only protocols we do not speak gets the no_application_protocol
     * alert (RFC 7301 3.2), counted under its own reason. */
    static const unsigned char other[] = "\x06spdy/3\x02h3";
    o.alpn = other;
    o.alpn_len = sizeof(other) - 1;
    hs_run(&L, &o, &h);
    assert_int_equal(h.sst, -1);
    assert_int_equal(h.why, SLB_TLS_FAIL_NO_APPLICATION_PROTOCOL);
    assert_int_equal(ERR_GET_REASON(h.cerr), SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL);
    hs_free(&h);

    /* No ALPN extension at all: HTTP/1.1, no alert. */
    hs_run(&L, &dflt, &h);
    assert_hs_ok(&h);
    SSL_get0_alpn_selected(h.c, &sel, &len);
    assert_int_equal(len, 0);
    hs_free(&h);

    /* A listener with ALPN off ("alpn": []) ignores the extension. */
    lis_free(&L);
    lis_init(&L, "web", "ec", "rsa", NULL);
    L.cfg.tls.nalpn = 0;
    lis_build(&L);
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    hs_free(&h);
    lis_free(&L);

    assert_true(slb_tls_alpn_supported("http/1.1"));
    assert_true(slb_tls_alpn_supported("h2"));
    assert_false(slb_tls_alpn_supported("spdy/3"));
}

/* 0-RTT is never accepted: our tickets do not invite early data (max_early_data 0), and the
 * early data a client sends under a ticket from elsewhere is skipped up to one record's worth
 * (recv_max_early_data) so that its 1-RTT handshake goes on. */
static void test_early_data_limits(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", NULL, NULL);
    lis_build(&L);
    SSL *s = slb_tls_ssl_new(&L.rt);
    assert_non_null(s);
    assert_int_equal(SSL_get_max_early_data(s), 0);
    assert_int_equal(SSL_get_recv_max_early_data(s), SSL3_RT_MAX_PLAIN_LENGTH);
    SSL_free(s);
    struct copts o = {0};
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_int_equal(SSL_get_early_data_status(h.s), SSL_EARLY_DATA_NOT_SENT);
    hs_free(&h);
    lis_free(&L);
}

static void test_tls12_ecdhe(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", "rsa", NULL);
    lis_build(&L);
    struct copts o = {.max = TLS1_2_VERSION};
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_int_equal(SSL_version(h.s), TLS1_2_VERSION);
    const SSL_CIPHER *c = SSL_get_current_cipher(h.s);
    assert_int_equal(SSL_CIPHER_get_kx_nid(c), NID_kx_ecdhe);
    assert_true(SSL_CIPHER_is_aead(c));
    hs_free(&h);

    /* Server preference: a client listing CBC first still gets AES-GCM. */
    o.ciphers = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384";
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(h.s)),
                        "ECDHE-ECDSA-AES256-GCM-SHA384");
    hs_free(&h);
    lis_free(&L);
}

static void test_no_shared_cipher(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", "rsa", NULL);
    lis_build(&L);
    struct copts o = {.max = TLS1_2_VERSION,
                      .ciphers = "AES128-GCM-SHA256:AES256-SHA:DHE-RSA-AES128-GCM-SHA256:"
                                 "@SECLEVEL=0"};
    struct hs h;
    hs_run(&L, &o, &h);
    assert_int_equal(h.sst, -1);
    assert_int_equal(h.cst, -1);
    assert_int_equal(h.why, SLB_TLS_FAIL_NO_SHARED_CIPHER);
    assert_int_equal(ERR_GET_REASON(h.cerr), SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE);
    hs_free(&h);
    /* Even the most permissive policy has no static RSA or finite-field DH. */
    L.cfg.tls.policy = SLB_TLS_POLICY_1_0;
    lis_free(&L);
    lis_build(&L);
    hs_run(&L, &o, &h);
    assert_int_equal(h.sst, -1);
    assert_int_equal(h.why, SLB_TLS_FAIL_NO_SHARED_CIPHER);
    hs_free(&h);
    lis_free(&L);
}

static void test_old_protocols(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", "rsa", NULL);
    struct copts o11 = {.min = TLS1_1_VERSION,
                        .max = TLS1_1_VERSION,
                        .ciphers = "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:@SECLEVEL=0"};
    struct copts o10 = o11;
    o10.min = o10.max = TLS1_VERSION;
    struct hs h;
    enum slb_tls_policy refuse11[] = {SLB_TLS_POLICY_1_2, SLB_TLS_POLICY_1_2_STRICT,
                                      SLB_TLS_POLICY_1_2_STRICT_WITH_1_3};
    for (size_t i = 0; i < 3; i++) {
        L.cfg.tls.policy = refuse11[i];
        lis_build(&L);
        hs_run(&L, &o11, &h);
        assert_int_equal(h.sst, -1);
        assert_int_equal(h.why, SLB_TLS_FAIL_PROTOCOL_VERSION);
        assert_int_equal(ERR_GET_REASON(h.cerr), SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
        hs_free(&h);
        lis_free(&L);
    }
    L.cfg.tls.policy = SLB_TLS_POLICY_1_1;
    lis_build(&L);
    hs_run(&L, &o10, &h);
    assert_int_equal(h.sst, -1);
    assert_int_equal(h.why, SLB_TLS_FAIL_PROTOCOL_VERSION);
    hs_free(&h);
    hs_run(&L, &o11, &h);
    bool ok11 = hs_ok(&h);
    if (ok11)
        assert_int_equal(SSL_version(h.s), TLS1_1_VERSION);
    hs_free(&h);
    lis_free(&L);
    L.cfg.tls.policy = SLB_TLS_POLICY_1_0;
    lis_build(&L);
    hs_run(&L, &o10, &h);
    bool ok10 = hs_ok(&h);
    if (ok10)
        assert_int_equal(SSL_version(h.s), TLS1_VERSION);
    hs_free(&h);
    /* RSA certificate with TLS 1.0 (MD5+SHA-1 key exchange signature). */
    o10.sigalgs = NULL;
    o10.ciphers = "ECDHE-RSA-AES256-SHA:@SECLEVEL=0";
    hs_run(&L, &o10, &h);
    bool ok10rsa = hs_ok(&h);
    if (ok10rsa)
        assert_int_equal(X509_cmp(SSL_get0_peer_certificate(h.c), leaf_of("rsa")), 0);
    hs_free(&h);
    lis_free(&L);
    if (!ok11 || !ok10 || !ok10rsa) {
        print_message("skipped: this OpenSSL refuses TLS 1.0/1.1 even at @SECLEVEL=0 "
                      "(1.1: %s, 1.0: %s)\n",
                      ok11 ? "ok" : "refused", ok10 && ok10rsa ? "ok" : "refused");
        skip();
    }
}

/* ------------------------------------------------------------------------------------------
 * Tests: SNI and certificate choice
 * ---------------------------------------------------------------------------------------- */

static void expect_cert(struct lis *L, const char *sni, const char *sigalgs, const char *id,
                        bool has_site)
{
    struct copts o = {.sni = sni, .sigalgs = sigalgs};
    struct hs h;
    hs_run(L, &o, &h);
    assert_hs_ok(&h);
    if (X509_cmp(SSL_get0_peer_certificate(h.c), leaf_of(id)) != 0)
        fail_msg("SNI %s, sigalgs %s: expected certificate %s", sni ? sni : "(none)",
                 sigalgs ? sigalgs : "(default)", id);
    const struct slb_tls_site *site = slb_tls_ssl_site(h.s);
    if (has_site) {
        assert_non_null(site);
        assert_string_equal(site->cert->id, id);
    } else {
        assert_null(site);
    }
    hs_free(&h);
}

static void test_sni(void **state)
{
    struct lis L;
    /* The default (first) certificate is other.test's, so falling back is visible. */
    lis_init(&L, "web", "other", "ec", "rsa");
    lis_build(&L);
    expect_cert(&L, "localhost", NULL, "ec", true);
    expect_cert(&L, "LocalHost", NULL, "ec", true);
    expect_cert(&L, "other.test", NULL, "other", true);
    expect_cert(&L, "a.example.com", NULL, "ec", true);
    expect_cert(&L, "a.b.example.com", NULL, "other", true);
    expect_cert(&L, "example.com", NULL, "other", true);
    expect_cert(&L, "unknown.test", NULL, "other", true);
    expect_cert(&L, NULL, NULL, "other", false);
    lis_free(&L);
}

static void test_sni_key_type(void **state)
{
    static const char rsa_only[] = "rsa_pss_rsae_sha256:rsa_pkcs1_sha256";
    static const char ec_only[] = "ECDSA+SHA256";
    struct lis L;
    lis_init(&L, "web", "ec", "rsa", "other");
    lis_build(&L);
    expect_cert(&L, "localhost", NULL, "ec", true);
    expect_cert(&L, "localhost", rsa_only, "rsa", true);
    expect_cert(&L, "a.example.com", rsa_only, "rsa", true);
    expect_cert(&L, "localhost", ec_only, "ec", true);
    /* No SNI: the default certificate, or its RSA twin for an RSA-only client. */
    expect_cert(&L, NULL, rsa_only, "rsa", false);
    expect_cert(&L, NULL, NULL, "ec", false);
    lis_free(&L);

    /* RSA listed first: ECDSA still wins for a client that can verify it; TLS 1.2 too. */
    lis_init(&L, "web", "rsa", "ec", NULL);
    lis_build(&L);
    expect_cert(&L, "localhost", NULL, "ec", true);
    expect_cert(&L, "localhost", rsa_only, "rsa", true);
    struct copts o = {
        .max = TLS1_2_VERSION, .sni = "x.example.com", .sigalgs = "RSA+SHA256:RSA+SHA384"};
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_int_equal(X509_cmp(SSL_get0_peer_certificate(h.c), leaf_of("rsa")), 0);
    hs_free(&h);
    lis_free(&L);
}

/* A ClientHello whose server_name extension has a list length that does not add up. */
static size_t bad_sni_hello(unsigned char *out)
{
    static const unsigned char sni[] = {0x00, 0x00, 0x00, 0x08, 0x00, 0x10,
                                        0x00, 0x00, 0x03, 'a',  'b',  'c'};
    unsigned char body[256];
    size_t n = 0;
    body[n++] = 0x03; /* legacy_version TLS 1.2 */
    body[n++] = 0x03;
    memset(body + n, 0x5a, 32); /* random */
    n += 32;
    body[n++] = 0; /* session id */
    body[n++] = 0;
    body[n++] = 2;
    body[n++] = 0xc0; /* ECDHE-ECDSA-AES128-GCM-SHA256 */
    body[n++] = 0x2b;
    body[n++] = 1; /* compression: null */
    body[n++] = 0;
    body[n++] = 0;
    body[n++] = sizeof(sni);
    memcpy(body + n, sni, sizeof(sni));
    n += sizeof(sni);
    size_t k = 0;
    out[k++] = 0x16;
    out[k++] = 0x03;
    out[k++] = 0x01;
    out[k++] = (unsigned char)((n + 4) >> 8);
    out[k++] = (unsigned char)(n + 4);
    out[k++] = 0x01; /* client_hello */
    out[k++] = 0;
    out[k++] = (unsigned char)(n >> 8);
    out[k++] = (unsigned char)n;
    memcpy(out + k, body, n);
    return k + n;
}

static void test_bad_sni(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", NULL, NULL);
    lis_build(&L);
    SSL *s = slb_tls_ssl_new(&L.rt);
    assert_non_null(s);
    BIO *bc, *bs;
    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(s, bs, bs);
    SSL_set_accept_state(s);
    unsigned char hello[300];
    size_t n = bad_sni_hello(hello);
    assert_int_equal(BIO_write(bc, hello, (int)n), (int)n);
    ERR_clear_error();
    int r = SSL_do_handshake(s);
    assert_true(r <= 0);
    assert_int_equal(SSL_get_error(s, r), SSL_ERROR_SSL);
    assert_int_equal(slb_tls_classify_failure(s), SLB_TLS_FAIL_BAD_SNI);
    assert_int_equal(ERR_peek_error(), 0); /* drained */
    unsigned char alert[16];
    int got = BIO_read(bc, alert, sizeof(alert));
    assert_int_equal(got, 7);
    assert_int_equal(alert[0], 0x15); /* alert record */
    assert_int_equal(alert[5], 2);    /* fatal */
    assert_int_equal(alert[6], SSL_AD_DECODE_ERROR);
    assert_null(slb_tls_ssl_site(s));
    SSL_free(s);
    BIO_free(bc);
    lis_free(&L);
}

static void test_host_matching(void **state)
{
    struct lis L;
    lis_init(&L, "web", "ec", "other", NULL);
    lis_build(&L);
    const struct slb_tls_listener *t = L.rt.tls;
    const struct slb_tls_site *ec = &t->sites[0], *other = &t->sites[1];
#define HOST(s, h) slb_tls_site_matches_host((s), (h), strlen(h))
    assert_true(HOST(ec, "localhost"));
    assert_true(HOST(ec, "LOCALHOST:8443"));
    assert_true(HOST(ec, "localhost."));
    assert_true(HOST(ec, "www.example.com"));
    assert_true(HOST(ec, "www.Example.COM:443"));
    assert_false(HOST(ec, "a.b.example.com"));
    assert_false(HOST(ec, "example.com"));
    assert_false(HOST(ec, ".example.com"));
    assert_false(HOST(ec, "other.test"));
    assert_false(HOST(ec, ""));
    assert_false(HOST(ec, ":443"));
    assert_false(HOST(ec, "[::1]:443"));
    assert_false(HOST(ec, "[localhost"));
    assert_true(HOST(other, "other.test:80"));
    assert_false(HOST(other, "localhost"));
    assert_false(slb_tls_site_matches_host(NULL, "x", 1));
    /* Length-bounded: the bytes after len are not part of the host. */
    assert_true(slb_tls_site_matches_host(ec, "localhostXYZ", 9));
#undef HOST

    struct copts o = {.sni = "www.example.com"};
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_ptr_equal(slb_tls_ssl_site(h.s), ec);
    assert_true(slb_tls_ssl_misdirected(h.s, "other.test", 10));
    assert_false(slb_tls_ssl_misdirected(h.s, "a.example.com:443", 17));
    assert_false(slb_tls_ssl_misdirected(h.s, "nowhere.test", 12));
    hs_free(&h);
    /* Without SNI nothing was chosen by name: no Host is misdirected. */
    o.sni = NULL;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_null(slb_tls_ssl_site(h.s));
    assert_false(slb_tls_ssl_misdirected(h.s, "other.test", 10));
    hs_free(&h);
    lis_free(&L);
}

/* ------------------------------------------------------------------------------------------
 * Tests: client certificates
 * ---------------------------------------------------------------------------------------- */

static void expect_fail(struct lis *L, const struct copts *o, enum slb_tls_fail why,
                        int client_reason)
{
    struct hs h;
    hs_run(L, o, &h);
    if (h.sst != -1)
        fail_msg("client cert %s: the handshake should fail", o->cert ? o->cert : "(none)");
    assert_string_equal(slb_tls_fail_name(h.why), slb_tls_fail_name(why));
    if (ERR_GET_REASON(h.cerr) != client_reason) {
        char e[256];
        ERR_error_string_n(h.cerr, e, sizeof(e));
        fail_msg("client cert %s: client saw \"%s\", expected reason %d",
                 o->cert ? o->cert : "(none)", e, client_reason);
    }
    hs_free(&h);
}

static void test_mtls_required(void **state)
{
    struct lis L;
    lis_init(&L, "mtls", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "ca");
    lis_build(&L);
    const struct slb_tls_listener *t = L.rt.tls;
    assert_true(t->client_auth);
    assert_true(t->client_cert_required);

    struct copts o = {0};
    expect_fail(&L, &o, SLB_TLS_FAIL_NO_CLIENT_CERT, SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED);
    o.max = TLS1_2_VERSION;
    expect_fail(&L, &o, SLB_TLS_FAIL_NO_CLIENT_CERT, SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE);
    o.max = 0;
    o.cert = "client-wrong";
    expect_fail(&L, &o, SLB_TLS_FAIL_UNKNOWN_CA, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
    o.cert = "client-expired";
    expect_fail(&L, &o, SLB_TLS_FAIL_CERT_EXPIRED, SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED);
    o.max = TLS1_2_VERSION;
    expect_fail(&L, &o, SLB_TLS_FAIL_CERT_EXPIRED, SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED);
    o.max = 0;
    /* Without a CRL on the CA a revoked certificate is not known to be revoked. */
    o.cert = "client-revoked";
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    hs_free(&h);

    o.cert = "client";
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    char subject[256], issuer[256], fp[65], want_fp[65];
    assert_true(slb_tls_client_cert_info(h.s, subject, sizeof(subject), issuer, sizeof(issuer), fp,
                                         sizeof(fp)));
    assert_string_equal(subject, "CN=SLB Test Client");
    assert_string_equal(issuer, "CN=SLB Test CA");
    FILE *f = fopen(pki_path("client.pem"), "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    unsigned char md[32];
    unsigned mdlen = 0;
    assert_int_equal(X509_digest(x, EVP_sha256(), md, &mdlen), 1);
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(want_fp + 2 * i, 3, "%02x", md[i]);
    X509_free(x);
    assert_string_equal(fp, want_fp);
    /* Truncation is safe. */
    char small[8];
    assert_true(slb_tls_client_cert_info(h.s, small, sizeof(small), NULL, 0, NULL, 0));
    assert_string_equal(small, "CN=SLB ");
    /* The CA list in CertificateRequest names our CA. */
    STACK_OF(X509_NAME) *names = SSL_get_client_CA_list(h.c);
    assert_int_equal(sk_X509_NAME_num(names), 1);
    assert_int_equal(
        X509_NAME_cmp(sk_X509_NAME_value(names, 0), X509_get_subject_name(leaf_of("ca"))), 0);

    /* Resumption keeps the client certificate facts. */
    SSL_SESSION *sess = SSL_get1_session(h.c);
    hs_free(&h);
    o.session = sess;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_true(SSL_session_reused(h.s));
    fp[0] = '\0';
    assert_true(slb_tls_client_cert_info(h.s, subject, sizeof(subject), issuer, sizeof(issuer), fp,
                                         sizeof(fp)));
    assert_string_equal(subject, "CN=SLB Test Client");
    assert_string_equal(fp, want_fp);
    hs_free(&h);
    SSL_SESSION_free(sess);
    lis_free(&L);
}

static void test_mtls_crl_and_optional(void **state)
{
    struct lis L;
    lis_init(&L, "mtls-crl", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "cacrl");
    lis_build(&L);
    struct copts o = {.cert = "client-revoked"};
    expect_fail(&L, &o, SLB_TLS_FAIL_CERT_REVOKED, SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED);
    o.cert = "client";
    struct hs h;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    hs_free(&h);
    lis_free(&L);

    lis_init(&L, "mtls-opt", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "ca");
    L.cfg.tls.client_auth = SLB_CLIENT_AUTH_OPTIONAL;
    lis_build(&L);
    assert_false(((struct slb_tls_listener *)L.rt.tls)->client_cert_required);
    o.cert = NULL;
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    char subject[64] = "x";
    assert_false(slb_tls_client_cert_info(h.s, subject, sizeof(subject), NULL, 0, NULL, 0));
    hs_free(&h);
    /* Optional still means a certificate that is sent must be good. */
    o.cert = "client-wrong";
    expect_fail(&L, &o, SLB_TLS_FAIL_UNKNOWN_CA, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
    o.cert = "client";
    hs_run(&L, &o, &h);
    assert_hs_ok(&h);
    assert_true(slb_tls_client_cert_info(h.s, subject, sizeof(subject), NULL, 0, NULL, 0));
    hs_free(&h);
    lis_free(&L);
}

static void expect_ok(struct lis *L, const char *cert)
{
    struct copts o = {.cert = cert};
    struct hs h;
    hs_run(L, &o, &h);
    if (!hs_ok(&h))
        fail_msg("client cert %s on %s: %s", cert, L->cfg.name, slb_tls_fail_name(h.why));
    char subject[128];
    assert_true(slb_tls_client_cert_info(h.s, subject, sizeof(subject), NULL, 0, NULL, 0));
    hs_free(&h);
}

static void test_mtls_chains(void **state)
{
    struct lis L;
    struct copts o = {0};
    /* A leaf under an intermediate below the CA: the client sends the intermediate. The CA's
     * CRL says nothing about that leaf, which is no reason to refuse it. */
    lis_init(&L, "mtls-crl", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "cacrl");
    lis_build(&L);
    expect_ok(&L, "client-inter-chain");
    o.cert = "client-inter";
    expect_fail(&L, &o, SLB_TLS_FAIL_UNKNOWN_CA, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
    lis_free(&L);
    lis_init(&L, "mtls", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "ca");
    lis_build(&L);
    expect_ok(&L, "client-inter-chain");
    lis_free(&L);
    /* An intermediate as client_ca is a trust anchor of its own. */
    lis_init(&L, "mtls-inter", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "inter");
    lis_build(&L);
    expect_ok(&L, "client-inter");
    expect_ok(&L, "client-inter-chain");
    o.cert = "client";
    expect_fail(&L, &o, SLB_TLS_FAIL_UNKNOWN_CA, SSL_R_TLSV1_ALERT_UNKNOWN_CA);
    lis_free(&L);
}

/* ------------------------------------------------------------------------------------------
 * Tests: resumption and ticket keys
 * ---------------------------------------------------------------------------------------- */

static void test_resumption(void **state)
{
    for (int v = 0; v < 2; v++) {
        struct copts o = {.max = v ? TLS1_2_VERSION : 0};
        struct lis L, L2, other;
        lis_init(&L, "web", "ec", "rsa", NULL);
        lis_build(&L);
        SSL_SESSION *sess = full_session(&L, &o);
        assert_int_equal(SSL_SESSION_get_protocol_version(sess),
                         v ? TLS1_2_VERSION : TLS1_3_VERSION);
        /* A new SSL on the same listener. */
        assert_int_equal(resume(&L, &o, sess, NULL), 1);
        /* Another build of the same listener with the same ring: another worker or snapshot. */
        lis_init(&L2, "web", "ec", "rsa", NULL);
        lis_build(&L2);
        assert_int_equal(resume(&L2, &o, sess, NULL), 1);
        /* Another listener shares the ring but not its sessions. */
        lis_init(&other, "api", "ec", "rsa", NULL);
        lis_build(&other);
        assert_int_equal(resume(&other, &o, sess, NULL), 0);
        lis_free(&other);
        lis_free(&L2);
        /* Tickets off. */
        lis_free(&L);
        L.cfg.tls.session_ticket_lifetime_s = 0;
        lis_build(&L);
        assert_true(SSL_CTX_get_options(((struct slb_tls_listener *)L.rt.tls)->ctx) &
                    SSL_OP_NO_TICKET);
        assert_int_equal(resume(&L, &o, sess, NULL), 0);
        SSL_SESSION_free(sess);
        lis_free(&L);
    }
}

static void test_resumption_lifetime(void **state)
{
    struct lis L;
    lis_init(&L, "short", "ec", NULL, NULL);
    L.cfg.tls.session_ticket_lifetime_s = 1;
    lis_build(&L);
    struct copts o13 = {0}, o12 = {.max = TLS1_2_VERSION};
    SSL_SESSION *s13 = full_session(&L, &o13), *s12 = full_session(&L, &o12);
    assert_int_equal(resume(&L, &o13, s13, NULL), 1);
    assert_int_equal(resume(&L, &o12, s12, NULL), 1);
    sleep(2);
    /* Make the clients believe their sessions are fresh so they offer them: the refusal
     * below is the server's. */
    SSL_SESSION_set_time(s13, (long)time(NULL));
    SSL_SESSION_set_time(s12, (long)time(NULL));
    SSL_SESSION *n13 = NULL, *n12 = NULL;
    assert_int_equal(resume(&L, &o13, s13, &n13), 0);
    assert_int_equal(resume(&L, &o12, s12, &n12), 0);
    /* The full handshake handed out a fresh ticket that resumes. */
    assert_int_equal(resume(&L, &o12, n12, NULL), 1);
    SSL_SESSION_free(n13);
    SSL_SESSION_free(n12);
    SSL_SESSION_free(s13);
    SSL_SESSION_free(s12);
    lis_free(&L);
}

/* Renewed tickets do not extend a session beyond session_max_age_s from its full handshake,
 * although each renewed ticket is younger than the ticket lifetime. */
static void test_resumption_max_age(void **state)
{
    struct lis L;
    lis_init(&L, "maxage", "ec", NULL, NULL);
    L.cfg.tls.session_max_age_s = 2;
    lis_build(&L);
    struct copts o13 = {0}, o12 = {.max = TLS1_2_VERSION};
    SSL_SESSION *s13 = full_session(&L, &o13), *s12 = full_session(&L, &o12);
    SSL_SESSION *n13 = NULL, *n12 = NULL, *m13 = NULL, *m12 = NULL;
    sleep(1);
    assert_int_equal(resume(&L, &o13, s13, &n13), 1);
    assert_int_equal(resume(&L, &o12, s12, &n12), 1);
    sleep(2);
    /* The renewed tickets are a second or two old; their sessions are three. */
    assert_int_equal(resume(&L, &o13, n13, &m13), 0);
    assert_int_equal(resume(&L, &o12, n12, &m12), 0);
    /* The full handshakes started new sessions that resume. */
    assert_int_equal(resume(&L, &o13, m13, NULL), 1);
    assert_int_equal(resume(&L, &o12, m12, NULL), 1);
    SSL_SESSION *all[] = {s13, s12, n13, n12, m13, m12};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        SSL_SESSION_free(all[i]);
    lis_free(&L);
}

static bool same_ticket(SSL_SESSION *a, SSL_SESSION *b)
{
    const unsigned char *ta, *tb;
    size_t la, lb;
    SSL_SESSION_get0_ticket(a, &ta, &la);
    SSL_SESSION_get0_ticket(b, &tb, &lb);
    return la == lb && la > 0 && memcmp(ta, tb, la) == 0;
}

static void test_rotation_resumes(void **state)
{
    char dir[160];
    snprintf(dir, sizeof(dir), "%s/rot", tmp_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    struct slb_err err = {0};
    struct slb_ticket_ring *r = slb_ticket_ring_open(dir_backend(dir), &err);
    assert_non_null(r);
    slb_tls_set_store(store, r);
    struct copts o12 = {.max = TLS1_2_VERSION}, o13 = {0};
    struct lis L;
    lis_init(&L, "web", "ec", NULL, NULL);
    lis_build(&L);
    SSL_SESSION *s12 = full_session(&L, &o12), *s13 = full_session(&L, &o13), *n = NULL;
    /* TLS 1.2 under the newest key: resumed, and the ticket is not reissued. */
    assert_int_equal(resume(&L, &o12, s12, &n), 1);
    assert_true(same_ticket(n, s12));
    SSL_SESSION_free(n);
    lis_free(&L);

    assert_true(slb_ticket_ring_rotate(&r, dir_backend(dir)));
    assert_int_equal(slb_ticket_ring_count(r), 2);
    slb_tls_set_store(store, r);
    lis_build(&L);
    /* The old key still decrypts; TLS 1.2 gets a renewed ticket under the new key. */
    assert_int_equal(resume(&L, &o13, s13, NULL), 1);
    assert_int_equal(resume(&L, &o12, s12, &n), 1);
    assert_false(same_ticket(n, s12));
    SSL_SESSION *renewed = n;
    lis_free(&L);

    /* Two more rotations push the first key out of the ring. */
    assert_true(slb_ticket_ring_rotate(&r, dir_backend(dir)));
    assert_true(slb_ticket_ring_rotate(&r, dir_backend(dir)));
    assert_int_equal(slb_ticket_ring_count(r), 3);
    slb_tls_set_store(store, r);
    lis_build(&L);
    assert_int_equal(resume(&L, &o12, s12, NULL), 0);
    assert_int_equal(resume(&L, &o13, s13, NULL), 0);
    assert_int_equal(resume(&L, &o12, renewed, NULL), 1);
    lis_free(&L);

    slb_tls_set_store(store, ring);
    slb_ticket_ring_unref(r);
    SSL_SESSION_free(renewed);
    SSL_SESSION_free(s12);
    SSL_SESSION_free(s13);
}

static void names_of(const struct slb_ticket_ring *r, uint8_t names[3][16])
{
    memset(names, 0, 3 * 16);
    for (size_t i = 0; i < slb_ticket_ring_count(r); i++)
        assert_true(slb_ticket_ring_key_name(r, i, names[i]));
}

static void test_ring_persistence(void **state)
{
    char dir[160], path[200];
    snprintf(dir, sizeof(dir), "%s/persist", tmp_dir);
    snprintf(path, sizeof(path), "%s/tickets.json", dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    struct slb_err err = {0};
    struct slb_ticket_ring *r = slb_ticket_ring_open(dir_backend(dir), &err);
    assert_non_null(r);
    assert_int_equal(slb_ticket_ring_count(r), 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* A ticket issued under r... */
    slb_tls_set_store(store, r);
    struct lis L;
    lis_init(&L, "web", "ec", NULL, NULL);
    lis_build(&L);
    SSL_SESSION *sess = full_session(&L, &dflt);
    lis_free(&L);

    assert_true(slb_ticket_ring_rotate(&r, dir_backend(dir)));
    uint8_t before[3][16], after[3][16];
    names_of(r, before);
    assert_int_equal(slb_ticket_ring_count(r), 2);
    assert_memory_not_equal(before[0], before[1], 16);

    /* ...resumes on a ring reloaded from disk: a restart keeps resumption working. */
    struct slb_ticket_ring *again = slb_ticket_ring_open(dir_backend(dir), &err);
    assert_non_null(again);
    assert_int_equal(slb_ticket_ring_count(again), 2);
    names_of(again, after);
    assert_memory_equal(before, after, sizeof(before));
    slb_tls_set_store(store, again);
    lis_build(&L);
    assert_int_equal(resume(&L, &dflt, sess, NULL), 1);
    lis_free(&L);
    slb_tls_set_store(store, ring);

    /* Nothing but hex and numbers in the file; no key equals another. */
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(slb_fs_read_all(path, 65536, &text, &len), 0);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    json_t *keys = json_object_get(doc, "keys");
    assert_int_equal(json_array_size(keys), 2);
    json_t *k0 = json_array_get(keys, 0);
    assert_int_equal(strlen(json_string_value(json_object_get(k0, "aes_key"))), 64);
    assert_int_equal(strlen(json_string_value(json_object_get(k0, "hmac_key"))), 64);
    assert_int_equal(strlen(json_string_value(json_object_get(k0, "name"))), 32);
    json_decref(doc);
    free(text);

    /* A damaged file is replaced by fresh keys rather than stopping start-up. */
    assert_int_equal(
        slb_fs_write_atomic(dir, "tickets.json", "{\"version\": 1, \"keys\": [{}]}", 28, 0600), 0);
    struct slb_ticket_ring *fresh = slb_ticket_ring_open(dir_backend(dir), &err);
    assert_non_null(fresh);
    assert_int_equal(slb_ticket_ring_count(fresh), 1);
    uint8_t name[16];
    assert_true(slb_ticket_ring_key_name(fresh, 0, name));
    assert_memory_not_equal(name, before[0], 16);
    assert_false(slb_ticket_ring_key_name(fresh, 1, name));

    slb_ticket_ring_unref(fresh);
    slb_ticket_ring_unref(again);
    slb_ticket_ring_unref(r);
    SSL_SESSION_free(sess);
}

/* SLBD_TICKET_ROTATE_S is set to 2 by main(). */
static void test_ring_tick(void **state)
{
    char dir[160];
    snprintf(dir, sizeof(dir), "%s/tick", tmp_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    struct slb_err err = {0};
    struct slb_ticket_ring *r = slb_ticket_ring_open(dir_backend(dir), &err);
    assert_non_null(r);
    struct slb_ticket_ring *first = r;
    assert_false(slb_ticket_ring_tick(&r, dir_backend(dir)));
    assert_ptr_equal(r, first);
    sleep(3);
    assert_true(slb_ticket_ring_tick(&r, dir_backend(dir)));
    assert_int_equal(slb_ticket_ring_count(r), 2);
    assert_false(slb_ticket_ring_tick(&r, dir_backend(dir)));
    uint8_t before[3][16], after[3][16];
    names_of(r, before);
    struct slb_ticket_ring *again = slb_ticket_ring_open(dir_backend(dir), &err);
    assert_non_null(again);
    names_of(again, after);
    assert_memory_equal(before, after, sizeof(before));
    slb_ticket_ring_unref(again);
    slb_ticket_ring_unref(r);
}

/* ------------------------------------------------------------------------------------------
 * Tests: build errors and failure names
 * ---------------------------------------------------------------------------------------- */

static void expect_build_error(struct lis *L, const char *code, const char *where)
{
    struct slb_err err = {0};
    assert_int_not_equal(slb_tls_listener_build(&L->rt, &err), 0);
    assert_null(L->rt.tls);
    assert_string_equal(err.code, code);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.where, where);
    assert_non_null(strstr(err.msg, L->cfg.name));
}

static void test_build_errors(void **state)
{
    struct lis L;
    lis_init(&L, "bad", "ec", "nope", NULL);
    L.rt.index = 3;
    expect_build_error(&L, "unknown_certificate", "listeners[3].tls.certificates[1]");
    lis_init(&L, "bad", "ca", NULL, NULL);
    expect_build_error(&L, "unknown_certificate", "listeners[0].tls.certificates[0]");
    lis_init(&L, "bad", "ec", NULL, NULL);
    snprintf(L.cfg.tls.client_ca, sizeof(L.cfg.tls.client_ca), "rsa");
    expect_build_error(&L, "unknown_certificate", "listeners[0].tls.client_ca");
    lis_init(&L, "bad", NULL, NULL, NULL);
    expect_build_error(&L, "tls_error", "listeners[0].tls");
    slb_tls_listener_free(NULL);

    /* The builder holds its own references to the certificates. */
    struct slb_cert *c = slb_certstore_get(store, "ec");
    int refs = atomic_load(&c->refs);
    lis_init(&L, "web", "ec", NULL, NULL);
    lis_build(&L);
    assert_int_equal(atomic_load(&c->refs), refs + 1);
    lis_free(&L);
    assert_int_equal(atomic_load(&c->refs), refs);

    /* The registry: the same recipe is the same context, built once; another listener name
     * (its own session id context) is another one. */
    struct lis L2, L3;
    lis_init(&L, "web", "ec", NULL, NULL);
    lis_init(&L2, "web", "ec", NULL, NULL);
    lis_init(&L3, "web2", "ec", NULL, NULL);
    uint64_t builds = slb_tls_context_builds();
    lis_build(&L);
    lis_build(&L2);
    assert_ptr_equal(L.rt.tls, L2.rt.tls);
    assert_int_equal(slb_tls_context_builds(), builds + 1);
    lis_build(&L3);
    assert_ptr_not_equal(L.rt.tls, L3.rt.tls);
    assert_int_equal(slb_tls_context_builds(), builds + 2);
    lis_free(&L);
    lis_free(&L2);
    lis_free(&L3);
    assert_int_equal(atomic_load(&c->refs), refs);

    /* Without a ticket ring, listeners still build, without tickets. */
    slb_tls_set_store(store, NULL);
    lis_build(&L);
    assert_false(((struct slb_tls_listener *)L.rt.tls)->had_ring);
    assert_true(SSL_CTX_get_options(((struct slb_tls_listener *)L.rt.tls)->ctx) & SSL_OP_NO_TICKET);
    lis_free(&L);
    slb_tls_set_store(store, ring);
    assert_null(slb_tls_ssl_new(&L.rt));
}

/* The site serving name on L: the store's current object for id. */
static void expect_current(struct lis *L, const char *name, const char *id)
{
    struct copts o = {.sni = name};
    struct hs h;
    hs_run(L, &o, &h);
    assert_hs_ok(&h);
    const struct slb_tls_site *site = slb_tls_ssl_site(h.s);
    assert_non_null(site);
    assert_ptr_equal(site->cert, slb_certstore_get(store, id));
    hs_free(&h);
}

static void rename_cert(const char *id, const char *name)
{
    struct slb_err err = {0};
    if (slb_certstore_rename(store, id, name, &err) != 0)
        fail_msg("rename %s: %s", id, err.msg);
}

/* A listener configuration parsed once (the same serial) keeps its context across snapshots
 * while none of its certificates changes; a change of one of them builds a new context on the
 * new version (its name table copied from the old one's, pointing at its own sites), and a
 * change of another certificate builds nothing. */
static void test_context_reuse(void **state)
{
    struct lis A, B;
    lis_init(&A, "reuse", "other", "ec", NULL);
    A.cfg.serial = 0x5e7a1;
    uint64_t builds = slb_tls_context_builds();
    lis_build(&A);
    struct slb_tls_listener *t1 = A.rt.tls;
    assert_int_equal(slb_tls_context_builds(), builds + 1);

    lis_init(&B, "reuse", "other", "ec", NULL);
    B.cfg.serial = A.cfg.serial;
    lis_build(&B);
    assert_ptr_equal(B.rt.tls, t1);
    lis_free(&B);
    rename_cert("rsa", "rsa-renamed"); /* a new object for a certificate it does not use */
    lis_build(&B);
    assert_ptr_equal(B.rt.tls, t1);
    assert_int_equal(slb_tls_context_builds(), builds + 1);
    lis_free(&B);

    rename_cert("ec", "ec-renamed"); /* its own: a new context on the new version */
    lis_build(&B);
    struct slb_tls_listener *t2 = B.rt.tls;
    assert_ptr_not_equal(t2, t1);
    assert_int_equal(slb_tls_context_builds(), builds + 2);
    assert_ptr_equal(t2->sites[1].cert, slb_certstore_get(store, "ec"));
    assert_ptr_equal(t2->sites[0].cert, t1->sites[0].cert);
    assert_ptr_not_equal(t2->names, t1->names);
    lis_free(&A); /* t1 goes: t2 holds nothing of it */
    expect_current(&B, "localhost", "ec");
    expect_current(&B, "a.example.com", "ec");
    expect_current(&B, "other.test", "other");
    expect_cert(&B, NULL, NULL, "other", false);

    /* Another configuration (serial) of the same recipe still finds the context. */
    lis_init(&A, "reuse", "other", "ec", NULL);
    A.cfg.serial = 0x5e7a2;
    lis_build(&A);
    assert_ptr_equal(A.rt.tls, t2);
    lis_free(&A);
    lis_free(&B);
    rename_cert("rsa", "rsa");
    rename_cert("ec", "ec");
}

static void test_fail_names(void **state)
{
    assert_string_equal(slb_tls_fail_name(SLB_TLS_FAIL_NONE), "none");
    assert_string_equal(slb_tls_fail_name(SLB_TLS_FAIL_NO_SHARED_CIPHER), "no_shared_cipher");
    assert_string_equal(slb_tls_fail_name(SLB_TLS_FAIL_TIMEOUT), "timeout");
    assert_string_equal(slb_tls_fail_name(SLB_TLS_FAIL_CERT_NOT_YET_VALID), "cert_not_yet_valid");
    assert_string_equal(slb_tls_fail_name(SLB_TLS_FAIL_CERT_KEY_USAGE), "cert_key_usage");
    assert_string_equal(slb_tls_fail_name(SLB_TLS_FAIL_COUNT), "other");
    for (int f = 0; f < SLB_TLS_FAIL_COUNT; f++)
        assert_non_null(slb_tls_fail_name((enum slb_tls_fail)f));
    /* Nothing known in the queue: "other", and the queue is drained. */
    ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);
    assert_int_equal(slb_tls_classify_failure(NULL), SLB_TLS_FAIL_OTHER);
    assert_int_equal(ERR_peek_error(), 0);
    char buf[64];
    slb_tls_drain_errors(buf, sizeof(buf));
    assert_string_equal(buf, "unknown error");
}

int main(void)
{
    setenv("SLBD_TICKET_ROTATE_S", "2", 1);
    slb_log_set_level("error");
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_table),
        cmocka_unit_test(test_default_tls13_and_alpn),
        cmocka_unit_test(test_early_data_limits),
        cmocka_unit_test(test_tls12_ecdhe),
        cmocka_unit_test(test_no_shared_cipher),
        cmocka_unit_test(test_old_protocols),
        cmocka_unit_test(test_sni),
        cmocka_unit_test(test_sni_key_type),
        cmocka_unit_test(test_bad_sni),
        cmocka_unit_test(test_host_matching),
        cmocka_unit_test(test_mtls_required),
        cmocka_unit_test(test_mtls_crl_and_optional),
        cmocka_unit_test(test_mtls_chains),
        cmocka_unit_test(test_resumption),
        cmocka_unit_test(test_resumption_lifetime),
        cmocka_unit_test(test_resumption_max_age),
        cmocka_unit_test(test_rotation_resumes),
        cmocka_unit_test(test_ring_persistence),
        cmocka_unit_test(test_ring_tick),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_context_reuse),
        cmocka_unit_test(test_fail_names),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
