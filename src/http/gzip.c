/* SPDX-License-Identifier: Apache-2.0 */
/* Response compression: the decision, the head rewrite and the streaming compressor (zlib's
 * deflate with a gzip wrapper and a fixed memory bound). */
#include "http/gzip.h"

#include "config/config.h"
#include "http/rewrite.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

static struct slb_slice trim(struct slb_slice s)
{
    while (s.len && is_ows(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

/* The next element of a comma-separated list at *k of v (empty elements skipped); false at
 * the end. Quoted strings keep their commas. */
static bool next_element(struct slb_slice v, size_t *k, struct slb_slice *el)
{
    while (*k < v.len && (v.p[*k] == ',' || is_ows(v.p[*k])))
        (*k)++;
    if (*k >= v.len)
        return false;
    size_t s = *k;
    bool quoted = false;
    while (*k < v.len && (quoted || v.p[*k] != ',')) {
        if (v.p[*k] == '"')
            quoted = !quoted;
        else if (quoted && v.p[*k] == '\\' && *k + 1 < v.len)
            (*k)++;
        (*k)++;
    }
    *el = trim((struct slb_slice){v.p + s, *k - s});
    return true;
}

/* --- Accept-Encoding --- */

/* A qvalue (RFC 9110 12.4.2: "0" ["." 0*3DIGIT] / "1" ["." 0*3("0")]) in thousandths; -1 when
 * malformed. */
static int parse_q(struct slb_slice v)
{
    if (!v.len || (v.p[0] != '0' && v.p[0] != '1'))
        return -1;
    int q = (v.p[0] - '0') * 1000;
    if (v.len == 1)
        return q;
    if (v.p[1] != '.' || v.len > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < v.len; i++, scale /= 10) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        q += (v.p[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

void slb_gzip_ae_init(struct slb_gzip_ae *st)
{
    st->explicit_q = st->star_q = -1;
    st->seen = false;
}

static void lower_q(int *slot, int q)
{
    if (*slot < 0 || q < *slot)
        *slot = q;
}

void slb_gzip_ae_parse(struct slb_gzip_ae *st, struct slb_slice value)
{
    st->seen = true;
    size_t k = 0;
    struct slb_slice el;
    while (next_element(value, &k, &el)) {
        size_t semi = 0;
        while (semi < el.len && el.p[semi] != ';')
            semi++;
        struct slb_slice coding = trim((struct slb_slice){el.p, semi});
        /* Parameters: only q means anything; a malformed q makes the element refuse the
         * coding, the safe reading. */
        int q = 1000;
        size_t i = semi;
        while (i < el.len) {
            size_t s = ++i;
            while (i < el.len && el.p[i] != ';')
                i++;
            struct slb_slice p = trim((struct slb_slice){el.p + s, i - s});
            if (p.len >= 2 && (p.p[0] == 'q' || p.p[0] == 'Q')) {
                struct slb_slice eq = trim((struct slb_slice){p.p + 1, p.len - 1});
                if (eq.len && eq.p[0] == '=') {
                    int v = parse_q(trim((struct slb_slice){eq.p + 1, eq.len - 1}));
                    q = v < 0 ? 0 : v;
                }
            }
        }
        if (SLB_SLICE_IS(coding, "gzip") || SLB_SLICE_IS(coding, "x-gzip"))
            lower_q(&st->explicit_q, q);
        else if (coding.len == 1 && coding.p[0] == '*')
            lower_q(&st->star_q, q);
    }
}

bool slb_gzip_ae_ok(const struct slb_gzip_ae *st)
{
    if (st->explicit_q >= 0)
        return st->explicit_q > 0;
    return st->star_q > 0;
}

void slb_gzip_req_facts(struct slb_gzip_req *f, const struct slb_http_msg *req)
{
    struct slb_gzip_ae ae;
    slb_gzip_ae_init(&ae);
    *f = (struct slb_gzip_req){.head = req->method == SLB_HTTP_HEAD};
    for (size_t i = 0; i < req->nheaders; i++) {
        struct slb_slice n = req->headers[i].name;
        if (SLB_SLICE_IS(n, "accept-encoding"))
            slb_gzip_ae_parse(&ae, req->headers[i].value);
        else if (SLB_SLICE_IS(n, "range"))
            f->range = true;
    }
    f->accepts = slb_gzip_ae_ok(&ae);
}

/* --- the response --- */

/* A list field (Cache-Control, Vary) holds token tok (case-insensitive, parameters ignored). */
static bool list_has(struct slb_slice v, const char *tok, size_t tlen)
{
    size_t k = 0;
    struct slb_slice el;
    while (next_element(v, &k, &el)) {
        size_t n = 0;
        while (n < el.len && el.p[n] != '=' && el.p[n] != ';')
            n++;
        if (slb_slice_eq_ci_n(trim((struct slb_slice){el.p, n}), tok, tlen))
            return true;
    }
    return false;
}

static char lc(char ch)
{
    return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
}

/* The media type mt ("type/subtype", any case) matches pattern pat (lower case). */
static bool type_matches(struct slb_slice mt, const char *pat)
{
    const char *star = strchr(pat, '*');
    if (!star)
        return slb_slice_eq_ci(mt, pat);
    size_t pre = (size_t)(star - pat); /* "type/" */
    const char *suffix = star + 1;     /* "" or "+json" */
    size_t slen = strlen(suffix);
    if (mt.len < pre + slen + (slen ? 1 : 0) || mt.len == pre)
        return false;
    for (size_t i = 0; i < pre; i++)
        if (lc(mt.p[i]) != pat[i])
            return false;
    for (size_t i = 0; i < slen; i++)
        if (lc(mt.p[mt.len - slen + i]) != suffix[i])
            return false;
    return true;
}

static bool type_listed(const struct slb_listener_cfg *cfg, struct slb_slice ct)
{
    size_t n = 0;
    while (n < ct.len && ct.p[n] != ';')
        n++;
    struct slb_slice mt = trim((struct slb_slice){ct.p, n});
    /* An event stream is read as it comes: deflate would hold its events back. */
    if (!mt.len || SLB_SLICE_IS(mt, "text/event-stream"))
        return false;
    for (size_t i = 0; i < cfg->ngzip_types; i++)
        if (type_matches(mt, cfg->gzip_types[i]))
            return true;
    return false;
}

enum slb_gzip_verdict slb_gzip_decide(const struct slb_gzip_req *rq,
                                      const struct slb_http_msg *resp,
                                      const struct slb_listener_cfg *cfg)
{
    if (!cfg->gzip)
        return SLB_GZIP_OFF;
    if (!rq->accepts)
        return SLB_GZIP_NOT_ACCEPTED;
    if (rq->head)
        return SLB_GZIP_METHOD;
    if (rq->range)
        return SLB_GZIP_RANGE;
    int st = resp->status;
    if (st < 200 || st == 204 || st == 206 || st == 304)
        return SLB_GZIP_STATUS;
    if (resp->body == SLB_BODY_NONE || (resp->body == SLB_BODY_LENGTH && resp->content_length == 0))
        return SLB_GZIP_NO_BODY;
    if (slb_http_other_transfer_coding(resp))
        return SLB_GZIP_ENCODED;
    int ctype = -1;
    for (size_t i = 0; i < resp->nheaders; i++) {
        struct slb_slice n = resp->headers[i].name, v = resp->headers[i].value;
        if (SLB_SLICE_IS(n, "content-encoding") && v.len)
            return SLB_GZIP_ENCODED;
        if (SLB_SLICE_IS(n, "content-range"))
            return SLB_GZIP_RANGE;
        if (SLB_SLICE_IS(n, "cache-control") && list_has(v, "no-transform", 12))
            return SLB_GZIP_NO_TRANSFORM;
        if (SLB_SLICE_IS(n, "content-type"))
            ctype = ctype < 0 ? (int)i : -2; /* two of them: which one holds is unclear */
    }
    if (ctype < 0 || !type_listed(cfg, resp->headers[ctype].value))
        return SLB_GZIP_TYPE;
    if (resp->body == SLB_BODY_LENGTH && resp->content_length < SLB_GZIP_MIN_LENGTH)
        return SLB_GZIP_SMALL;
    /* The rewrite adds up to three fields (Vary, Content-Encoding, Transfer-Encoding). */
    if (resp->nheaders + 3 > SLB_HTTP_MAX_HEADERS)
        return SLB_GZIP_NO_ROOM;
    return SLB_GZIP_YES;
}

/* Add a field whose name is copied to the scratch at *used; the value is a literal. */
static void add_field(struct slb_http_msg *m, struct slb_gzip_scratch *sc, size_t *used,
                      const char *name, const char *value)
{
    size_t n = strlen(name);
    memcpy(sc->names + *used, name, n);
    m->headers[m->nheaders++] =
        (struct slb_http_header){{sc->names + *used, n}, {value, strlen(value)}};
    *used += n;
}

int slb_gzip_rewrite_head(struct slb_http_msg *m, struct slb_gzip_scratch *sc, bool chunked_field)
{
    if (m->nheaders + 3 > SLB_HTTP_MAX_HEADERS)
        return -1;
    /* Check first that the new values fit, so a failure leaves m as it was. */
    int vary = -1, strong = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        struct slb_slice n = m->headers[i].name, v = m->headers[i].value;
        if (SLB_SLICE_IS(n, "etag") && !(v.len >= 2 && v.p[0] == 'W' && v.p[1] == '/') &&
            (++strong > 1 || v.len + 3 > sizeof(sc->etag)))
            return -1;
        if (SLB_SLICE_IS(n, "vary") && vary < 0)
            vary = (int)i;
    }
    bool vary_has = false;
    for (size_t i = 0; i < m->nheaders; i++)
        if (SLB_SLICE_IS(m->headers[i].name, "vary") &&
            (list_has(m->headers[i].value, "accept-encoding", 15) ||
             list_has(m->headers[i].value, "*", 1)))
            vary_has = true;
    if (vary >= 0 && !vary_has && m->headers[vary].value.len + 18 > sizeof(sc->vary))
        return -1;

    size_t out = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        struct slb_http_header h = m->headers[i];
        /* An empty Content-Encoding (the only one slb_gzip_decide lets through) goes too. */
        if (SLB_SLICE_IS(h.name, "content-length") || SLB_SLICE_IS(h.name, "transfer-encoding") ||
            SLB_SLICE_IS(h.name, "content-encoding"))
            continue;
        if (SLB_SLICE_IS(h.name, "etag") &&
            !(h.value.len >= 2 && h.value.p[0] == 'W' && h.value.p[1] == '/')) {
            /* The compressed bytes differ from those the strong validator names, but mean the
             * same: a weak validator (RFC 9110 8.8.1). */
            memcpy(sc->etag, "W/", 2);
            memcpy(sc->etag + 2, h.value.p, h.value.len);
            h.value = (struct slb_slice){sc->etag, h.value.len + 2};
        }
        if ((int)i == vary && !vary_has) {
            memcpy(sc->vary, h.value.p, h.value.len);
            size_t n = h.value.len;
            if (n) {
                memcpy(sc->vary + n, ", ", 2);
                n += 2;
            }
            memcpy(sc->vary + n, "Accept-Encoding", 15);
            h.value = (struct slb_slice){sc->vary, n + 15};
        }
        m->headers[out++] = h;
    }
    m->nheaders = out;
    size_t used = 0;
    if (vary < 0)
        add_field(m, sc, &used, "Vary", "Accept-Encoding");
    add_field(m, sc, &used, "Content-Encoding", "gzip");
    if (chunked_field)
        add_field(m, sc, &used, "Transfer-Encoding", "chunked");
    m->body = SLB_BODY_CHUNKED;
    m->content_length = 0;
    return 0;
}

/* --- the compressor --- */

struct slb_gzip {
    struct slb_gzip *next; /* in a pool */
    z_stream zs;
    size_t mem, mem_peak;
    bool done;
};

/* zlib's allocations for one stream, counted against SLB_GZIP_MEM_MAX: a stream never holds
 * more, whatever it is fed. A size header in front of each block lets the free count back. */
static voidpf gz_alloc(voidpf opaque, uInt items, uInt size)
{
    struct slb_gzip *z = opaque;
    size_t n = (size_t)items * size;
    if (size && n / size != items)
        return Z_NULL;
    if (z->mem + n > SLB_GZIP_MEM_MAX)
        return Z_NULL;
    size_t *p = malloc(n + sizeof(max_align_t));
    if (!p)
        return Z_NULL;
    *p = n;
    z->mem += n;
    if (z->mem > z->mem_peak)
        z->mem_peak = z->mem;
    return (char *)p + sizeof(max_align_t);
}

static void gz_release(voidpf opaque, voidpf ptr)
{
    struct slb_gzip *z = opaque;
    if (!ptr)
        return;
    size_t *p = (size_t *)((char *)ptr - sizeof(max_align_t));
    z->mem -= *p;
    free(p);
}

struct slb_gzip *slb_gzip_new(void)
{
    struct slb_gzip *z = calloc(1, sizeof(*z));
    if (!z)
        return NULL;
    z->zs.zalloc = gz_alloc;
    z->zs.zfree = gz_release;
    z->zs.opaque = z;
    /* windowBits + 16: a gzip header and trailer rather than zlib's. */
    if (deflateInit2(&z->zs, SLB_GZIP_LEVEL, Z_DEFLATED, SLB_GZIP_WINDOW_BITS + 16,
                     SLB_GZIP_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

void slb_gzip_free(struct slb_gzip *z)
{
    if (!z)
        return;
    deflateEnd(&z->zs);
    free(z);
}

int slb_gzip_run(struct slb_gzip *z, const void *in, size_t in_len, size_t *in_used, void *out,
                 size_t out_len, size_t *out_made, bool finish)
{
    *in_used = *out_made = 0;
    if (z->done)
        return finish ? 1 : -1;
    /* zlib counts in uInt: feed at most that much per call (finish waits for the rest). */
    bool all_in = in_len <= 1u << 30;
    if (!all_in)
        in_len = 1u << 30;
    if (out_len > 1u << 30)
        out_len = 1u << 30;
    z->zs.next_in = (Bytef *)(uintptr_t)in;
    z->zs.avail_in = (uInt)in_len;
    z->zs.next_out = out;
    z->zs.avail_out = (uInt)out_len;
    int rc = Z_OK;
    if (out_len)
        rc = deflate(&z->zs, finish && all_in ? Z_FINISH : Z_NO_FLUSH);
    *in_used = in_len - z->zs.avail_in;
    *out_made = out_len - z->zs.avail_out;
    z->zs.next_in = NULL;
    z->zs.next_out = NULL;
    if (rc == Z_STREAM_END) {
        z->done = true;
        return 1;
    }
    /* Z_BUF_ERROR: no progress was possible (no room, or nothing to do): not an error. */
    if (rc != Z_OK && rc != Z_BUF_ERROR)
        return -1;
    return 0;
}

bool slb_gzip_done(const struct slb_gzip *z)
{
    return z->done;
}

uint64_t slb_gzip_total_in(const struct slb_gzip *z)
{
    return z->zs.total_in;
}

uint64_t slb_gzip_total_out(const struct slb_gzip *z)
{
    return z->zs.total_out;
}

size_t slb_gzip_mem_peak(const struct slb_gzip *z)
{
    return z->mem_peak;
}

struct slb_gzip *slb_gzip_take(struct slb_gzip_pool *p)
{
    struct slb_gzip *z = p->free;
    if (!z)
        return slb_gzip_new();
    p->free = z->next;
    p->n--;
    z->next = NULL;
    return z;
}

void slb_gzip_give(struct slb_gzip_pool *p, struct slb_gzip **zp)
{
    struct slb_gzip *z = *zp;
    *zp = NULL;
    if (!z)
        return;
    /* deflateReset keeps the stream's memory: the next response allocates nothing. */
    if (p->n >= SLB_GZIP_KEEP || deflateReset(&z->zs) != Z_OK) {
        slb_gzip_free(z);
        return;
    }
    z->done = false;
    z->next = p->free;
    p->free = z;
    p->n++;
}

void slb_gzip_pool_drain(struct slb_gzip_pool *p)
{
    while (p->free) {
        struct slb_gzip *z = p->free;
        p->free = z->next;
        slb_gzip_free(z);
    }
    p->n = 0;
}
