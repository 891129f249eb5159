/* SPDX-License-Identifier: Apache-2.0 */
/* Human output for slbctl: aligned text tables, and the layout of JSON resources as "key: value"
 * lines plus titled tables for any array or map of objects inside them (servers, per-listener
 * counters), so `show` and `stats` stay readable whatever fields the daemon adds later. */
#include "cli/cli.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* Nesting deeper than this is printed as compact JSON rather than more tables. */
#define RENDER_MAX_DEPTH 4

/* A grid of owned strings: row 0 holds the headers. Owned by whoever called _new. */
struct slb_cli_table {
    size_t ncols;
    size_t nrows; /* including the header row */
    size_t cap;
    char **cells;            /* nrows * ncols */
    unsigned long long clip; /* bit c: column c may be clipped to fit a width */
};

size_t slb_cli_text_width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        /* UTF-8 continuation bytes share the column of their lead byte. */
        if ((*p & 0xC0) != 0x80)
            w++;
    }
    return w;
}

/* A cell is one line: control characters would break the alignment, so they print as '?'. */
static char *cell_dup(const char *s)
{
    if (!s)
        s = "-";
    char *d = strdup(s);
    if (!d)
        return NULL;
    for (char *p = d; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    return d;
}

static int table_push(struct slb_cli_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 8;
        char **nc = realloc(t->cells, ncap * t->ncols * sizeof(*nc));
        if (!nc)
            return -1;
        t->cells = nc;
        t->cap = ncap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = cell_dup(cells[i]);
        if (!row[i]) {
            while (i > 0)
                free(row[--i]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

struct slb_cli_table *slb_cli_table_new(size_t ncols, const char *const *headers)
{
    if (ncols == 0)
        return NULL;
    struct slb_cli_table *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    if (table_push(t, headers) < 0) {
        slb_cli_table_free(t);
        return NULL;
    }
    return t;
}

int slb_cli_table_add(struct slb_cli_table *t, const char *const *cells)
{
    return table_push(t, cells);
}

void slb_cli_table_set_clip(struct slb_cli_table *t, size_t col)
{
    if (col < t->ncols && col < 64)
        t->clip |= 1ull << col;
}

size_t slb_cli_table_rows(const struct slb_cli_table *t)
{
    return t->nrows - 1;
}

static const char *cell(const struct slb_cli_table *t, size_t row, size_t col)
{
    return t->cells[row * t->ncols + col];
}

/* Column widths into w[ncols]; returns the width of the widest line. */
static size_t column_widths(const struct slb_cli_table *t, size_t *w)
{
    for (size_t c = 0; c < t->ncols; c++) {
        w[c] = 0;
        for (size_t r = 0; r < t->nrows; r++) {
            size_t cw = slb_cli_text_width(cell(t, r, c));
            if (cw > w[c])
                w[c] = cw;
        }
    }
    size_t total = 0;
    for (size_t c = 0; c < t->ncols; c++)
        total += w[c] + (c + 1 < t->ncols ? 2 : 0);
    return total;
}

size_t slb_cli_table_width(const struct slb_cli_table *t)
{
    size_t *w = calloc(t->ncols, sizeof(*w));
    if (!w)
        return 0;
    size_t total = column_widths(t, w);
    free(w);
    return total;
}

struct slb_cli_table *slb_cli_table_transpose(const struct slb_cli_table *t,
                                              const char *first_header)
{
    size_t ncols = t->nrows; /* one column of labels plus one per data row */
    const char **row = calloc(ncols, sizeof(*row));
    if (!row)
        return NULL;
    struct slb_cli_table *out = NULL;
    row[0] = first_header;
    for (size_t r = 1; r < t->nrows; r++)
        row[r] = cell(t, r, 0);
    out = slb_cli_table_new(ncols, row);
    for (size_t c = 1; out && c < t->ncols; c++) {
        for (size_t r = 0; r < t->nrows; r++)
            row[r] = cell(t, r, c);
        if (slb_cli_table_add(out, row) < 0) {
            slb_cli_table_free(out);
            out = NULL;
        }
    }
    free(row);
    return out;
}

/* Prints the first n code points of s and, when s is longer, "…" in the last of them. */
static void put_clipped(FILE *out, const char *s, size_t n)
{
    if (slb_cli_text_width(s) <= n) {
        fputs(s, out);
        return;
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t w = 0;
    for (; *p; p++) {
        if ((*p & 0xC0) != 0x80 && ++w == n)
            break;
        fputc(*p, out);
    }
    fputs("\xe2\x80\xa6", out); /* U+2026 HORIZONTAL ELLIPSIS */
}

/* Narrows w[] so the lines fit width: first the first column (its longer cells then go on a
 * line of their own), then the widest of the columns that may be clipped, each no narrower
 * than its header. */
static void fit_widths(const struct slb_cli_table *t, size_t *w, size_t total, size_t width)
{
    if (width == 0 || total <= width)
        return;
    size_t excess = total - width;
    size_t floor0 = slb_cli_text_width(cell(t, 0, 0));
    size_t cut = w[0] - floor0 < excess ? w[0] - floor0 : excess;
    w[0] -= cut;
    excess -= cut;
    while (excess > 0) {
        size_t widest = 0;
        for (size_t c = 1; c < t->ncols; c++) {
            size_t floor = slb_cli_text_width(cell(t, 0, c));
            if (floor < 4)
                floor = 4;
            if (c < 64 && (t->clip >> c & 1) && w[c] > floor && (widest == 0 || w[c] > w[widest]))
                widest = c;
        }
        if (widest == 0)
            return; /* nothing left to narrow: the line stays too long */
        /* One column at a time, so the widest ones end up equally narrowed. */
        w[widest]--;
        excess--;
    }
}

void slb_cli_table_print_fit(const struct slb_cli_table *t, FILE *out, size_t width)
{
    size_t *w = calloc(t->ncols, sizeof(*w));
    if (!w)
        return;
    fit_widths(t, w, column_widths(t, w), width);
    for (size_t r = 0; r < t->nrows; r++) {
        /* Trailing empty cells would only add blanks at the end of the line. */
        size_t last = t->ncols;
        while (last > 1 && cell(t, r, last - 1)[0] == '\0')
            last--;
        size_t first = 0;
        if (slb_cli_text_width(cell(t, r, 0)) > w[0]) {
            /* A name is never clipped (it would become ambiguous): it gets a line of its own
             * and the row follows under it, like df(1) does with long device names. */
            fprintf(out, "%s\n", cell(t, r, 0));
            if (last == 1)
                continue;
            for (size_t pad = 0; pad < w[0] + 2; pad++)
                fputc(' ', out);
            first = 1;
        }
        for (size_t c = first; c < last; c++) {
            const char *s = cell(t, r, c);
            put_clipped(out, s, c == 0 ? (size_t)-1 : w[c]);
            if (c + 1 < last) {
                size_t sw = slb_cli_text_width(s);
                for (size_t pad = sw < w[c] ? sw : w[c]; pad < w[c] + 2; pad++)
                    fputc(' ', out);
            }
        }
        fputc('\n', out);
    }
    free(w);
}

void slb_cli_table_print(const struct slb_cli_table *t, FILE *out)
{
    slb_cli_table_print_fit(t, out, 0);
}

void slb_cli_table_free(struct slb_cli_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

/* ---- JSON resources as text ---- */

size_t slb_cli_term_width(void)
{
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    const char *cols = getenv("COLUMNS");
    char *end;
    long v = cols ? strtol(cols, &end, 10) : 0;
    return cols && *end == '\0' && v > 0 && v <= 10000 ? (size_t)v : 0;
}

static void scalar_text(const json_t *v, char *buf, size_t size)
{
    switch (json_typeof(v)) {
    case JSON_STRING: {
        /* The API's times are UTC ("...Z"); people read them in their own time zone. */
        long long ms;
        if (slb_cli_parse_utc(json_string_value(v), &ms) == 0)
            slb_cli_local_time(ms, buf, size);
        else /* an empty string reads as a missing value, and keeps a table's columns visible */
            snprintf(buf, size, "%s", json_string_length(v) ? json_string_value(v) : "-");
        break;
    }
    case JSON_INTEGER:
        snprintf(buf, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL: {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 1e15) {
            snprintf(buf, size, "%.0f", d);
        } else {
            /* Rates and ratios: three decimals are plenty, without trailing zeros. */
            snprintf(buf, size, "%.3f", d);
            char *dot = strchr(buf, '.');
            if (dot) {
                char *end = buf + strlen(buf);
                while (end > dot + 1 && end[-1] == '0')
                    *--end = '\0';
            }
        }
        break;
    }
    case JSON_TRUE:
        snprintf(buf, size, "true");
        break;
    case JSON_FALSE:
        snprintf(buf, size, "false");
        break;
    case JSON_NULL:
        snprintf(buf, size, "-");
        break;
    default: {
        char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
        snprintf(buf, size, "%s", s ? s : "?");
        free(s);
        break;
    }
    }
}

void slb_cli_value_text(const json_t *v, char *buf, size_t size)
{
    if (size == 0)
        return;
    buf[0] = '\0';
    if (!v) {
        snprintf(buf, size, "-");
        return;
    }
    if (json_is_object(v) && json_object_size(v) == 0) {
        snprintf(buf, size, "-");
        return;
    }
    if (!json_is_array(v)) {
        scalar_text(v, buf, size);
        return;
    }
    if (json_array_size(v) == 0) {
        snprintf(buf, size, "-");
        return;
    }
    size_t n = 0, i;
    const json_t *el;
    json_array_foreach(v, i, el)
    {
        char item[512];
        scalar_text(el, item, sizeof(item));
        int w = snprintf(buf + n, size - n, "%s%s", i ? ", " : "", item);
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
}

/* Whether v is a collection of records: a non-empty array of objects, or a non-empty object
 * whose every value is an object (a map keyed by name, as per-listener stats often are). */
static int is_rows(const json_t *v)
{
    size_t i;
    const char *k;
    const json_t *el;
    if (json_is_array(v) && json_array_size(v) > 0) {
        json_array_foreach(v, i, el)
        {
            if (!json_is_object(el))
                return 0;
        }
        return 1;
    }
    if (json_is_object(v) && json_object_size(v) > 0) {
        json_object_foreach((json_t *)v, k, el)
        {
            if (!json_is_object(el))
                return 0;
        }
        return 1;
    }
    return 0;
}

/* A flattened field: dotted key and its value; child marks a nested collection. */
struct leaf {
    char *key;
    const json_t *val;
    int child;
};

struct leaves {
    struct leaf *v;
    size_t n, cap;
};

static int leaves_add(struct leaves *l, const char *key, const json_t *val, int child)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        struct leaf *nv = realloc(l->v, ncap * sizeof(*nv));
        if (!nv)
            return -1;
        l->v = nv;
        l->cap = ncap;
    }
    char *k = strdup(key);
    if (!k)
        return -1;
    l->v[l->n++] = (struct leaf){.key = k, .val = val, .child = child};
    return 0;
}

static void leaves_free(struct leaves *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].key);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

static const struct leaf *leaves_find(const struct leaves *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i].key, key) == 0)
            return &l->v[i];
    }
    return NULL;
}

/* Flattens obj into leaves: nested plain objects join their keys with dots and collections
 * are kept whole (child) for a table of their own. Inside a table row (in_row) only arrays of
 * objects split out: a map such as {"in": {...}, "out": {...}} reads better as columns. */
static void flatten(const char *prefix, const json_t *obj, struct leaves *out, int in_row,
                    int depth)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        char key[256];
        snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", k);
        int rows = depth < RENDER_MAX_DEPTH && is_rows(v) && (!in_row || json_is_array(v));
        if (rows)
            leaves_add(out, key, v, 1);
        else if (depth < RENDER_MAX_DEPTH && json_is_object(v) && json_object_size(v) > 0)
            flatten(key, v, out, in_row, depth + 1);
        else
            leaves_add(out, key, v, 0);
    }
}

/* The records of one table; parent names the enclosing record for nested collections. */
struct rowref {
    char *parent;
    const char *key; /* map key, or NULL for array elements */
    const json_t *obj;
};

struct rowset {
    char title[128];
    char parent_header[128];
    struct rowref *v;
    size_t n, cap;
};

static void rowset_add_all(struct rowset *rs, const json_t *coll, const char *parent)
{
    size_t count = json_is_array(coll) ? json_array_size(coll) : json_object_size(coll);
    if (rs->n + count > rs->cap) {
        size_t ncap = rs->cap * 2 > rs->n + count ? rs->cap * 2 : rs->n + count;
        struct rowref *nv = realloc(rs->v, ncap * sizeof(*nv));
        if (!nv)
            return;
        rs->v = nv;
        rs->cap = ncap;
    }
    size_t i;
    const char *k;
    const json_t *el;
    if (json_is_array(coll)) {
        json_array_foreach(coll, i, el)
        {
            rs->v[rs->n++] = (struct rowref){.parent = parent ? strdup(parent) : NULL, .obj = el};
        }
    } else {
        json_object_foreach((json_t *)coll, k, el)
        {
            rs->v[rs->n++] =
                (struct rowref){.parent = parent ? strdup(parent) : NULL, .key = k, .obj = el};
        }
    }
}

static void rowset_free(struct rowset *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        free(rs->v[i].parent);
    free(rs->v);
}

/* How a record is named in the tables of its children. */
static void row_id(const struct rowref *r, size_t idx, char *buf, size_t size)
{
    const json_t *name = json_object_get(r->obj, "name");
    const json_t *id = json_object_get(r->obj, "id");
    const json_t *addr = json_object_get(r->obj, "address");
    if (r->key)
        snprintf(buf, size, "%s", r->key);
    else if (json_is_string(name))
        snprintf(buf, size, "%s", json_string_value(name));
    else if (json_is_string(id))
        snprintf(buf, size, "%s", json_string_value(id));
    else if (json_is_string(addr) && json_is_integer(json_object_get(r->obj, "port")))
        snprintf(buf, size, "%s:%" JSON_INTEGER_FORMAT, json_string_value(addr),
                 json_integer_value(json_object_get(r->obj, "port")));
    else
        snprintf(buf, size, "#%zu", idx + 1);
}

static void header_text(const char *key, char *buf, size_t size)
{
    snprintf(buf, size, "%s", key);
    for (char *p = buf; *p; p++)
        *p = (char)toupper((unsigned char)*p);
}

/* "groups" names its records "GROUP" in a child table. */
static void singular_header(const char *title, char *buf, size_t size)
{
    const char *last = strrchr(title, '.');
    header_text(last ? last + 1 : title, buf, size);
    size_t n = strlen(buf);
    if (n > 1 && buf[n - 1] == 'S')
        buf[n - 1] = '\0';
}

static int strlist_has(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i], s) == 0)
            return 1;
    }
    return 0;
}

static void render_rows(FILE *out, struct rowset *rs, size_t width, int depth, int *printed);

/* Builds and prints one table, then the tables of its nested collections. */
static void render_rows(FILE *out, struct rowset *rs, size_t width, int depth, int *printed)
{
    struct leaves *rows = calloc(rs->n ? rs->n : 1, sizeof(*rows));
    size_t maxcols = 2;
    int has_parent = 0, has_key = 0;
    for (size_t r = 0; rows && r < rs->n; r++) {
        flatten("", rs->v[r].obj, &rows[r], 1, 0);
        maxcols += rows[r].n;
        has_parent |= rs->v[r].parent != NULL;
        has_key |= rs->v[r].key != NULL;
    }
    char **cols = rows ? calloc(maxcols, sizeof(*cols)) : NULL;
    char **kids = rows ? calloc(maxcols, sizeof(*kids)) : NULL;
    if (!cols || !kids)
        goto done;
    size_t ncols = 0, nkids = 0;
    /* The record's own name goes first, wherever the daemon put it. */
    static const char *const first[] = {"name", "id"};
    for (size_t f = 0; f < 2 && !has_key; f++) {
        for (size_t r = 0; r < rs->n; r++) {
            if (leaves_find(&rows[r], first[f]) && !strlist_has(cols, ncols, first[f])) {
                cols[ncols++] = (char *)first[f];
                break;
            }
        }
    }
    /* Nested collections first: a key that holds records in any row is a table of its own,
     * even in rows where it happens to be empty. */
    for (size_t r = 0; r < rs->n; r++) {
        for (size_t i = 0; i < rows[r].n; i++) {
            struct leaf *l = &rows[r].v[i];
            if (l->child && !strlist_has(kids, nkids, l->key))
                kids[nkids++] = l->key;
        }
    }
    for (size_t r = 0; r < rs->n; r++) {
        for (size_t i = 0; i < rows[r].n; i++) {
            struct leaf *l = &rows[r].v[i];
            if (!l->child && !strlist_has(kids, nkids, l->key) && !strlist_has(cols, ncols, l->key))
                cols[ncols++] = l->key;
        }
    }
    size_t extra = (size_t)has_parent + (size_t)has_key;
    size_t total = extra + ncols;
    const char **cells = calloc(total, sizeof(*cells));
    char(*bufs)[512] = calloc(total, sizeof(*bufs));
    struct slb_cli_table *t = NULL;
    if (!cells || !bufs)
        goto cells_done;
    size_t c = 0;
    if (has_parent)
        cells[c++] = rs->parent_header;
    if (has_key)
        cells[c++] = "NAME";
    for (size_t i = 0; i < ncols; i++) {
        header_text(cols[i], bufs[c], sizeof(bufs[c]));
        cells[c] = bufs[c];
        c++;
    }
    t = slb_cli_table_new(total, cells);
    for (size_t r = 0; t && r < rs->n; r++) {
        c = 0;
        if (has_parent)
            cells[c++] = rs->v[r].parent ? rs->v[r].parent : "-";
        if (has_key)
            cells[c++] = rs->v[r].key ? rs->v[r].key : "-";
        for (size_t i = 0; i < ncols; i++) {
            const struct leaf *l = leaves_find(&rows[r], cols[i]);
            slb_cli_value_text(l ? l->val : NULL, bufs[c], sizeof(bufs[c]));
            cells[c] = bufs[c];
            c++;
        }
        slb_cli_table_add(t, cells);
    }
    /* A table holding nothing but names, above tables that repeat them, is noise. */
    int only_names = nkids > 0 && ncols <= (has_key ? 0u : 1u);
    if (t && !only_names) {
        if (*printed)
            fputc('\n', out);
        fprintf(out, "%s:\n", rs->title);
        struct slb_cli_table *side = NULL;
        if (width > 0 && !has_parent && slb_cli_table_width(t) > width)
            side = slb_cli_table_transpose(t, "FIELD");
        if (side && slb_cli_table_width(side) < slb_cli_table_width(t))
            slb_cli_table_print(side, out);
        else
            slb_cli_table_print(t, out);
        slb_cli_table_free(side);
        *printed = 1;
    }
    for (size_t k = 0; depth < RENDER_MAX_DEPTH && k < nkids; k++) {
        struct rowset child = {0};
        snprintf(child.title, sizeof(child.title), "%s", kids[k]);
        singular_header(rs->title, child.parent_header, sizeof(child.parent_header));
        for (size_t r = 0; r < rs->n; r++) {
            const struct leaf *l = leaves_find(&rows[r], kids[k]);
            char id[256];
            row_id(&rs->v[r], r, id, sizeof(id));
            if (l && l->child)
                rowset_add_all(&child, l->val, id);
        }
        render_rows(out, &child, width, depth + 1, printed);
        rowset_free(&child);
    }
cells_done:
    slb_cli_table_free(t);
    free(cells);
    free(bufs);
done:
    for (size_t r = 0; rows && r < rs->n; r++)
        leaves_free(&rows[r]);
    free(rows);
    free(cols);
    free(kids);
}

static void print_kv_value(FILE *out, const json_t *v)
{
    char buf[4096];
    slb_cli_value_text(v, buf, sizeof(buf));
    for (char *p = buf; *p; p++) {
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    }
    fputs(buf, out);
    /* A time on a line of its own also says how far away it is. */
    long long ms;
    if (json_is_string(v) && slb_cli_parse_utc(json_string_value(v), &ms) == 0) {
        char rel[64];
        slb_cli_relative_time((double)(ms - (long long)time(NULL) * 1000) / 1000, rel, sizeof(rel));
        fprintf(out, " (%s)", rel);
    }
}

void slb_cli_render_object(FILE *out, const json_t *obj, size_t width)
{
    int printed = 0;
    if (is_rows(obj) && json_is_array(obj)) {
        struct rowset rs = {.title = "items"};
        rowset_add_all(&rs, obj, NULL);
        render_rows(out, &rs, width, 0, &printed);
        rowset_free(&rs);
        return;
    }
    if (!json_is_object(obj)) {
        print_kv_value(out, obj);
        fputc('\n', out);
        return;
    }
    struct leaves l = {0};
    flatten("", obj, &l, 0, 0);
    size_t keyw = 0;
    for (size_t i = 0; i < l.n; i++) {
        size_t w = slb_cli_text_width(l.v[i].key);
        if (!l.v[i].child && w > keyw)
            keyw = w;
    }
    for (size_t i = 0; i < l.n; i++) {
        if (l.v[i].child)
            continue;
        fprintf(out, "%s:", l.v[i].key);
        for (size_t pad = slb_cli_text_width(l.v[i].key); pad < keyw + 1; pad++)
            fputc(' ', out);
        print_kv_value(out, l.v[i].val);
        fputc('\n', out);
        printed = 1;
    }
    for (size_t i = 0; i < l.n; i++) {
        if (!l.v[i].child)
            continue;
        struct rowset rs = {0};
        snprintf(rs.title, sizeof(rs.title), "%s", l.v[i].key);
        rowset_add_all(&rs, l.v[i].val, NULL);
        render_rows(out, &rs, width, 0, &printed);
        rowset_free(&rs);
    }
    leaves_free(&l);
}
