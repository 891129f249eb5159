/* SPDX-License-Identifier: Apache-2.0 */
/* Session ticket keys: an immutable, reference-counted ring of up to three keys (the newest
 * encrypts, all decrypt), persisted as the "tickets" document of the state backend
 * (DIR/tickets.json) and rotated by the control thread. */
#include "tls/tls.h"

#include "core/log.h"
#include "state/backend.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING_MAX 3
#define RING_FILE "tickets.json"
#define ROTATE_DEFAULT_S 3600
#define NAME_LEN 16
#define SECRET_LEN 32

struct ticket_key {
    uint8_t name[NAME_LEN]; /* sent in clear in the ticket; selects the key on the way back */
    uint8_t aes[SECRET_LEN];
    uint8_t hmac[SECRET_LEN];
    int64_t created; /* unix seconds */
};

/* Immutable after creation; shared by every listener's SSL_CTX of every snapshot built while
 * it was current, and by the control thread. Workers only read it (in the ticket callback);
 * the last unref frees it, which happens on the control thread when snapshots are swept. */
struct slb_ticket_ring {
    _Atomic int refs;
    size_t n;                      /* 1..RING_MAX */
    struct ticket_key k[RING_MAX]; /* newest first */
    EVP_CIPHER *cipher;            /* AES-256-CBC, fetched once per ring lineage */
};

static pthread_once_t idx_once = PTHREAD_ONCE_INIT;
static int ring_idx = -1;

static void idx_init(void)
{
    ring_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* Period between rotations: SLBD_TICKET_ROTATE_S (seconds) lets tests rotate quickly. Read
 * once; only the control thread rotates. */
static int64_t rotate_period(void)
{
    static int64_t period;
    if (period == 0) {
        period = ROTATE_DEFAULT_S;
        const char *env = getenv("SLBD_TICKET_ROTATE_S");
        if (env && *env) {
            char *end;
            long long v = strtoll(env, &end, 10);
            if (*end == '\0' && v > 0 && v <= 86400 * 365)
                period = v;
            else
                slb_warn("tickets: ignoring SLBD_TICKET_ROTATE_S=\"%s\"", env);
        }
    }
    return period;
}

static void ring_free(struct slb_ticket_ring *r)
{
    if (!r)
        return;
    EVP_CIPHER_free(r->cipher);
    OPENSSL_cleanse(r, sizeof(*r));
    free(r);
}

static struct slb_ticket_ring *ring_alloc(EVP_CIPHER *reuse)
{
    struct slb_ticket_ring *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    if (reuse && EVP_CIPHER_up_ref(reuse)) {
        r->cipher = reuse;
    } else {
        ERR_clear_error();
        /* An explicit fetch once, rather than EVP_aes_256_cbc() whose implicit fetch would be
         * repeated by every EVP_CipherInit_ex in the handshake path. */
        r->cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
        if (!r->cipher) {
            char why[200];
            slb_tls_drain_errors(why, sizeof(why));
            slb_error("tickets: cannot fetch AES-256-CBC: %s", why);
            free(r);
            return NULL;
        }
    }
    return r;
}

static int key_fresh(struct ticket_key *k)
{
    ERR_clear_error();
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_priv_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_priv_bytes(k->hmac, sizeof(k->hmac)) != 1) {
        ERR_clear_error();
        return -1;
    }
    k->created = (int64_t)time(NULL);
    return 0;
}

void slb_ticket_ring_ref(struct slb_ticket_ring *r)
{
    if (r)
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

void slb_ticket_ring_unref(struct slb_ticket_ring *r)
{
    if (r && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        ring_free(r);
}

size_t slb_ticket_ring_count(const struct slb_ticket_ring *r)
{
    return r ? r->n : 0;
}

bool slb_ticket_ring_key_name(const struct slb_ticket_ring *r, size_t i, uint8_t name[16])
{
    if (!r || i >= r->n)
        return false;
    memcpy(name, r->k[i].name, NAME_LEN);
    return true;
}

/* --- persistence --- */

static void hex_put(char *out, const uint8_t *in, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int hex_get(const char *in, uint8_t *out, size_t n)
{
    if (!in || strlen(in) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_nibble(in[2 * i]), lo = hex_nibble(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* The file is formatted by hand into a buffer we can wipe, rather than through jansson whose
 * internal copies of the hex strings would linger in freed memory. */
static int ring_save(const struct slb_ticket_ring *r, struct slb_backend *b)
{
    char buf[RING_MAX * 320 + 64];
    size_t used = 0;
    int n = snprintf(buf, sizeof(buf), "{\"version\": 1, \"keys\": [");
    for (size_t i = 0; n >= 0 && (size_t)n < sizeof(buf) - used && i < r->n; i++) {
        char name[2 * NAME_LEN + 1], aes[2 * SECRET_LEN + 1], hmac[2 * SECRET_LEN + 1];
        used += (size_t)n;
        hex_put(name, r->k[i].name, NAME_LEN);
        hex_put(aes, r->k[i].aes, SECRET_LEN);
        hex_put(hmac, r->k[i].hmac, SECRET_LEN);
        n = snprintf(buf + used, sizeof(buf) - used,
                     "%s\n  {\"name\": \"%s\", \"aes_key\": \"%s\", \"hmac_key\": \"%s\", "
                     "\"created\": %lld}",
                     i ? "," : "", name, aes, hmac, (long long)r->k[i].created);
        OPENSSL_cleanse(aes, sizeof(aes));
        OPENSSL_cleanse(hmac, sizeof(hmac));
    }
    if (n >= 0 && (size_t)n < sizeof(buf) - used) {
        used += (size_t)n;
        n = snprintf(buf + used, sizeof(buf) - used, "\n]}\n");
    }
    int rc = -ENOBUFS;
    if (n >= 0 && (size_t)n < sizeof(buf) - used)
        rc = slb_backend_put(b, SLB_DOC_TICKETS, buf, used + (size_t)n, SLB_REV_ANY, NULL);
    OPENSSL_cleanse(buf, sizeof(buf));
    return rc;
}

/* Parse the ticket document into r (keys newest first). 0, -ENOENT when there is none,
 * SLB_EINVAL with why filled (never with key material), or SLB_ETLS when the backend refused
 * it (err filled: a file others can read). */
static int ring_load(struct slb_ticket_ring *r, struct slb_backend *b, char *why, size_t wlen,
                     struct slb_err *err)
{
    struct slb_doc d;
    json_t *doc = NULL;
    int rc = SLB_EINVAL;
    int frc = slb_backend_get(b, SLB_DOC_TICKETS, 64 * 1024, &d, err);
    if (frc == -ENOENT)
        return -ENOENT;
    if (frc == SLB_EINVAL)
        return SLB_ETLS;
    if (frc < 0) {
        snprintf(why, wlen, "cannot read: %s", slb_strerror(frc));
        return SLB_EINVAL;
    }
    char *data = d.data;
    size_t len = d.len;
    json_error_t jerr;
    doc = json_loadb(data, len, 0, &jerr);
    if (!doc) {
        snprintf(why, wlen, "not JSON (line %d)", jerr.line);
        goto out;
    }
    json_t *keys = json_object_get(doc, "keys");
    if (json_integer_value(json_object_get(doc, "version")) != 1 || !json_is_array(keys) ||
        json_array_size(keys) == 0) {
        snprintf(why, wlen, "expected {\"version\": 1, \"keys\": [...]}");
        goto out;
    }
    r->n = 0;
    for (size_t i = 0; i < json_array_size(keys) && r->n < RING_MAX; i++) {
        json_t *k = json_array_get(keys, i);
        json_t *created = json_object_get(k, "created");
        struct ticket_key *tk = &r->k[r->n];
        if (hex_get(json_string_value(json_object_get(k, "name")), tk->name, NAME_LEN) ||
            hex_get(json_string_value(json_object_get(k, "aes_key")), tk->aes, SECRET_LEN) ||
            hex_get(json_string_value(json_object_get(k, "hmac_key")), tk->hmac, SECRET_LEN) ||
            !json_is_integer(created) || json_integer_value(created) < 0) {
            snprintf(why, wlen, "keys[%zu] is malformed", i);
            goto out;
        }
        tk->created = json_integer_value(created);
        r->n++;
    }
    rc = 0;
out:
    json_decref(doc);
    slb_doc_clear(&d);
    return rc;
}

/* A copy of old with a fresh key in front, the oldest dropped beyond RING_MAX. */
static struct slb_ticket_ring *ring_rotated(const struct slb_ticket_ring *old)
{
    struct slb_ticket_ring *r = ring_alloc(old ? old->cipher : NULL);
    if (!r)
        return NULL;
    if (key_fresh(&r->k[0]) < 0) {
        ring_free(r);
        return NULL;
    }
    r->n = 1;
    for (size_t i = 0; old && i < old->n && r->n < RING_MAX; i++)
        r->k[r->n++] = old->k[i];
    return r;
}

static bool due(const struct slb_ticket_ring *r, int64_t now)
{
    return now - r->k[0].created >= rotate_period() || now < r->k[0].created;
}

struct slb_ticket_ring *slb_ticket_ring_open(struct slb_backend *b, struct slb_err *err)
{
    struct slb_ticket_ring *r = ring_alloc(NULL);
    char why[160] = "", where[4400];
    if (!r) {
        slb_err_set(err, 500, "tls_error", RING_FILE, "cannot set up session ticket keys");
        return NULL;
    }
    slb_backend_where(b, SLB_DOC_TICKETS, where, sizeof(where));
    /* Keys others could read may have leaked: the backend refuses them (as admin.token is)
     * rather than have them used or quietly replaced. */
    int rc = ring_load(r, b, why, sizeof(why), err);
    if (rc == SLB_ETLS) {
        ring_free(r);
        return NULL;
    }
    if (rc == 0 && !due(r, (int64_t)time(NULL)))
        return r;
    /* A damaged file costs resumption for tickets already out, nothing else: regenerate
     * rather than refusing to start. */
    if (rc == SLB_EINVAL)
        slb_warn("tickets: %s: %s; generating new keys", where, why);
    struct slb_ticket_ring *fresh = ring_rotated(rc == 0 ? r : NULL);
    ring_free(r);
    if (!fresh) {
        slb_err_set(err, 500, "tls_error", RING_FILE, "cannot generate session ticket keys");
        return NULL;
    }
    rc = ring_save(fresh, b);
    if (rc == SLB_BACKEND_EUNAVAILABLE) {
        /* A cluster node starting from its cache while etcd is away: serve with these keys;
         * the ring stored in etcd replaces them once it answers. */
        slb_warn("tickets: cannot store new keys in %s: etcd is unreachable", where);
        return fresh;
    }
    if (rc < 0) {
        slb_err_set(err, 500, "storage_failed", RING_FILE, "cannot write %s: %s", where,
                    slb_strerror(rc));
        ring_free(fresh);
        return NULL;
    }
    return fresh;
}

bool slb_ticket_ring_rotate(struct slb_ticket_ring **ring, struct slb_backend *b)
{
    struct slb_ticket_ring *r = ring_rotated(*ring);
    if (!r) {
        slb_error("tickets: cannot generate a new session ticket key");
        return false;
    }
    int rc = ring_save(r, b);
    /* Keep rotating in memory even if the disk refuses: a restart then loses resumption, but
     * serving with an over-aged key would be worse. */
    if (rc < 0) {
        char where[4400];
        slb_backend_where(b, SLB_DOC_TICKETS, where, sizeof(where));
        slb_error("tickets: cannot write %s: %s", where, slb_strerror(rc));
    }
    slb_ticket_ring_unref(*ring);
    *ring = r;
    slb_info("tickets: rotated session ticket keys (%zu in the ring)", r->n);
    return true;
}

bool slb_ticket_ring_tick(struct slb_ticket_ring **ring, struct slb_backend *b)
{
    if (!*ring || !due(*ring, (int64_t)time(NULL)))
        return false;
    return slb_ticket_ring_rotate(ring, b);
}

/* --- the OpenSSL callback --- */

static int mac_init(EVP_MAC_CTX *hctx, const uint8_t *key)
{
    static char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key, SECRET_LEN),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* Runs on workers in the middle of a handshake: returns 1 (key found), 2 (found, but the
 * client should get a ticket under the newest key), 0 (unknown key: full handshake, new
 * ticket) or -1 (failure, aborts the handshake). */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    const struct slb_ticket_ring *r = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ring_idx);
    if (!r || r->n == 0)
        return enc ? -1 : 0;
    if (enc) {
        const struct ticket_key *k = &r->k[0];
        int ivlen = EVP_CIPHER_get_iv_length(r->cipher);
        if (ivlen <= 0 || ivlen > EVP_MAX_IV_LENGTH || RAND_bytes(iv, ivlen) != 1)
            return -1;
        memcpy(key_name, k->name, NAME_LEN);
        if (!EVP_EncryptInit_ex(cctx, r->cipher, NULL, k->aes, iv) || mac_init(hctx, k->hmac) < 0)
            return -1;
        return 1;
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct ticket_key *k = &r->k[i];
        if (CRYPTO_memcmp(key_name, k->name, NAME_LEN) != 0)
            continue;
        if (mac_init(hctx, k->hmac) < 0 || !EVP_DecryptInit_ex(cctx, r->cipher, NULL, k->aes, iv))
            return -1;
        return i == 0 ? 1 : 2;
    }
    return 0;
}

int slb_ticket_ring_install(SSL_CTX *ctx, struct slb_ticket_ring *r)
{
    pthread_once(&idx_once, idx_init);
    if (ring_idx < 0 || !SSL_CTX_set_ex_data(ctx, ring_idx, r))
        return -1;
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) == 1 ? 0 : -1;
}
