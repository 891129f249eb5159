/* SPDX-License-Identifier: Apache-2.0 */
/* Paging and filtering of the admin API's lists (?limit=N&after=KEY plus per-list filters):
 * parsing the query, choosing a page in key order, and answering it with its "next" cursor. */
#include "admin/routes.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode src[0..len) into out ('+' stays '+': keys never hold spaces). -1 when it does
 * not fit or decodes to a control byte or NUL. */
static int pct_decode(const char *src, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%' && i + 2 < len && hexdigit(src[i + 1]) >= 0 && hexdigit(src[i + 2]) >= 0) {
            c = (char)(hexdigit(src[i + 1]) * 16 + hexdigit(src[i + 2]));
            i += 2;
        }
        if ((unsigned char)c < 0x20 || c == 0x7f || n + 1 >= size)
            return -1;
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

static bool page_fail(struct slb_admin_resp *resp, const char *name, const char *fmt, const char *a)
{
    struct slb_err err = {.status = 400};
    snprintf(err.code, sizeof(err.code), "invalid_value");
    snprintf(err.where, sizeof(err.where), "%s", name);
    snprintf(err.msg, sizeof(err.msg), fmt, name, a);
    slb_admin_error(resp, &err);
    return false;
}

int slb_admin_param(const struct slb_admin_req *req, const char *name, char *out, size_t size)
{
    size_t nlen = strlen(name);
    int found = 0;
    for (const char *p = req->query; *p;) {
        size_t len = strcspn(p, "&");
        size_t klen = strcspn(p, "=&");
        if (klen == nlen && memcmp(p, name, nlen) == 0) {
            if (found || klen == len)
                return -1; /* given twice, or without a value */
            const char *val = p + klen + 1;
            if (pct_decode(val, len - klen - 1, out, size) < 0)
                return -1;
            found = 1;
        }
        p += len + (p[len] == '&');
    }
    return found;
}

bool slb_admin_page_parse(const struct slb_admin_req *req, const char *const *filters,
                          struct slb_admin_page *pg, struct slb_admin_resp *resp)
{
    /* limit and after first, then the list's own filters. */
    const char *accepted[SLB_ADMIN_PAGE_FILTERS + 3] = {"limit", "after"};
    size_t na = 2;
    for (const char *const *f = filters; f && *f && na < SLB_ADMIN_PAGE_FILTERS + 2; f++)
        accepted[na++] = *f;
    accepted[na] = NULL;
    if (!slb_admin_params_ok(req, accepted, resp))
        return false;
    memset(pg, 0, sizeof(*pg));
    char v[32];
    int rc = slb_admin_param(req, "limit", v, sizeof(v));
    if (rc < 0)
        return page_fail(resp, "limit", "%s: give it once, as a number from 1 to %s",
                         SLB_ADMIN_PAGE_MAX_TEXT);
    if (rc > 0) {
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < 1 || n > SLB_ADMIN_PAGE_MAX)
            return page_fail(resp, "limit", "%s: give a number from 1 to %s",
                             SLB_ADMIN_PAGE_MAX_TEXT);
        pg->limit = (size_t)n;
        pg->paged = true;
    }
    rc = slb_admin_param(req, "after", pg->after, sizeof(pg->after));
    if (rc < 0 || (rc > 0 && !pg->after[0]))
        return page_fail(resp, "after", "%s: give it once, as the \"next\" of the previous page%s",
                         "");
    if (rc > 0)
        pg->has_after = pg->paged = true;
    return true;
}

bool slb_admin_filter_enum(const struct slb_admin_req *req, const char *name,
                           const char *const *choices, char *out, size_t size,
                           struct slb_admin_resp *resp)
{
    out[0] = '\0';
    int rc = slb_admin_param(req, name, out, size);
    if (rc == 0)
        return true;
    bool ok = rc > 0 && out[0];
    if (ok && choices) {
        ok = false;
        for (const char *const *c = choices; *c; c++)
            ok |= strcmp(*c, out) == 0;
    }
    if (ok)
        return true;
    char list[200] = "";
    size_t used = 0;
    for (const char *const *c = choices; c && *c && used < sizeof(list); c++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", *c);
    out[0] = '\0';
    if (!choices)
        return page_fail(resp, name, "%s: give it once, as a name%s", "");
    return page_fail(resp, name, "%s: give it once, as one of: %s", list);
}

struct page_key {
    const char *key;
    size_t i;
};

static int page_key_cmp(const void *a, const void *b)
{
    return strcmp(((const struct page_key *)a)->key, ((const struct page_key *)b)->key);
}

size_t slb_admin_page_select(const struct slb_admin_page *pg, const char *const *keys, size_t n,
                             size_t *idx, bool *more)
{
    *more = false;
    if (!pg->paged) {
        /* No paging asked for: the whole list, in its usual order. */
        for (size_t i = 0; i < n; i++)
            idx[i] = i;
        return n;
    }
    struct page_key *pk = malloc((n ? n : 1) * sizeof(*pk));
    if (!pk)
        return SIZE_MAX;
    for (size_t i = 0; i < n; i++)
        pk[i] = (struct page_key){keys[i], i};
    qsort(pk, n, sizeof(*pk), page_key_cmp);
    size_t k = 0, out = 0;
    /* The cursor is a key, not a position: what was added or removed before it since the
     * previous page shifts nothing, and every key that stays is seen exactly once. */
    if (pg->has_after)
        while (k < n && strcmp(pk[k].key, pg->after) <= 0)
            k++;
    size_t limit = pg->limit ? pg->limit : SIZE_MAX;
    for (; k < n && out < limit; k++)
        idx[out++] = pk[k].i;
    *more = k < n;
    free(pk);
    return out;
}

void slb_admin_page_answer(struct slb_admin_resp *resp, const char *coll, json_t *page,
                           const char *next)
{
    if (!page) {
        slb_admin_error_simple(resp, 500, "internal", "out of memory");
        return;
    }
    resp->json =
        next ? json_pack("{s:o, s:s}", coll, page, "next", next) : json_pack("{s:o}", coll, page);
}

void slb_admin_list_json(struct slb_admin_resp *resp, const char *coll, json_t *items,
                         const struct slb_admin_page *pg,
                         void (*key)(const json_t *item, char *buf, size_t size))
{
    size_t n = json_array_size(items);
    char(*bufs)[SLB_ADMIN_SEG] = malloc((n ? n : 1) * sizeof(*bufs));
    const char **keys = malloc((n ? n : 1) * sizeof(*keys));
    size_t *idx = malloc((n ? n : 1) * sizeof(*idx));
    json_t *page = json_array();
    bool more = false;
    size_t m = SIZE_MAX;
    if (bufs && keys && idx && page) {
        for (size_t i = 0; i < n; i++) {
            key(json_array_get(items, i), bufs[i], sizeof(bufs[i]));
            keys[i] = bufs[i];
        }
        m = slb_admin_page_select(pg, keys, n, idx, &more);
    }
    if (m == SIZE_MAX) {
        json_decref(page);
        page = NULL;
    }
    for (size_t k = 0; page && k < m; k++)
        json_array_append(page, json_array_get(items, idx[k]));
    slb_admin_page_answer(resp, coll, page, page && more && m ? keys[idx[m - 1]] : NULL);
    free(bufs);
    free(keys);
    free(idx);
    json_decref(items);
}

void slb_admin_key_name(const json_t *item, char *buf, size_t size)
{
    const char *s = json_string_value(json_object_get(item, "name"));
    snprintf(buf, size, "%s", s ? s : "");
}
