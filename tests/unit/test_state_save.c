/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for writing config.json from remembered pieces (src/state/jsoncache.c through
 * src/config/state.c): after any change of a large document sharing its unchanged pieces, the
 * text is byte for byte what a from-scratch serialization gives, loads back equal, and the
 * cache holds the pieces of one document only. */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "config/state.h"
#include "core/fsio.h"
#include "state/backend.h"
#include "state/jsoncache.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NLISTENERS 1000
#define NGROUPS 100
#define NCERTS_BIG 2000

static json_t *listener(int i, int ncerts)
{
    json_t *certs = json_array();
    for (int k = 0; k < ncerts; k++)
        json_array_append_new(certs, json_sprintf("c%d", (i * 10 + k) % 10000));
    return json_pack("{s:o, s:s, s:o, s:s, s:s, s:o, s:{s:s, s:b}}", "name",
                     json_sprintf("l%04d", i), "protocol", "https", "bind",
                     json_sprintf("127.0.0.1:%d", 20000 + i), "backend_group", "g1", "status",
                     "running", "certificates", certs, "tls", "min_version", "1.2", "hsts", i % 2);
}

static json_t *group(int i)
{
    json_t *servers = json_array();
    for (int k = 0; k < 4; k++)
        json_array_append_new(servers,
                              json_pack("{s:o, s:i, s:s}", "address",
                                        json_sprintf("10.0.%d.%d:8080", i % 250, k), "weight",
                                        k + 1, "name", "s\u00e9rver \"quoted\" \\ /"));
    return json_pack("{s:o, s:s, s:o}", "name", json_sprintf("g%d", i), "scheduler", "wrr",
                     "servers", servers);
}

/* 1,000 listeners (the first with NCERTS_BIG certificates), 100 groups, settings. */
static json_t *large_doc(void)
{
    json_t *ls = json_array(), *gs = json_array();
    for (int i = 0; i < NLISTENERS; i++)
        json_array_append_new(ls, listener(i, i == 0 ? NCERTS_BIG : 10));
    for (int i = 0; i < NGROUPS; i++)
        json_array_append_new(gs, group(i));
    return json_pack("{s:o, s:o, s:{s:i, s:s, s:n, s:f}}", "listeners", ls, "groups", gs,
                     "settings", "drain_timeout_s", 30, "access_log", "stdout", "unset", "ratio",
                     0.25);
}

/* A new document sharing every piece of doc, with its own copy of the array coll (whose
 * elements are shared too): what a copy-on-write change starts from. */
static json_t *next_doc(const json_t *doc, const char *coll)
{
    json_t *n = json_copy((json_t *)doc);
    if (coll)
        json_object_set_new(n, coll, json_copy(json_object_get(doc, coll)));
    return n;
}

static size_t pieces_of(const json_t *doc)
{
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)doc, key, v)
    {
        n += json_is_array(v) && json_array_size(v) ? json_array_size(v) : 1;
    }
    return n;
}

/* What the daemon always wrote. */
static char *plain_text(const json_t *doc, size_t *len)
{
    char *t = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    assert_non_null(t);
    size_t n = strlen(t);
    t = realloc(t, n + 2);
    t[n] = '\n';
    t[n + 1] = '\0';
    *len = n + 1;
    return t;
}

/* Dump doc through c and check it against json_dumps, a fresh cache and a reload; returns
 * the stats of c's dump. */
static struct slb_json_cache_stats check_dump(struct slb_json_cache *c, const json_t *doc)
{
    char *text = NULL, *fresh = NULL, *want;
    size_t len = 0, flen = 0, wlen;
    assert_int_equal(slb_json_cache_dump(c, doc, &text, &len), 0);
    struct slb_json_cache_stats st;
    slb_json_cache_stats(c, &st);

    want = plain_text(doc, &wlen);
    assert_int_equal(len, wlen);
    assert_memory_equal(text, want, len);
    assert_int_equal(text[len], '\0');

    struct slb_json_cache *fc = slb_json_cache_new();
    assert_int_equal(slb_json_cache_dump(fc, doc, &fresh, &flen), 0);
    assert_int_equal(flen, len);
    assert_memory_equal(fresh, text, len);
    slb_json_cache_free(fc);

    json_error_t jerr;
    json_t *back = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(back);
    assert_true(json_equal(back, doc));
    json_decref(back);
    free(text);
    free(fresh);
    free(want);
    /* Bounded: the pieces of this document, nothing of the ones before. */
    assert_true(st.pieces <= pieces_of(doc));
    return st;
}

static void test_one_change_serializes_one_piece(void **state)
{
    (void)state;
    struct slb_json_cache *c = slb_json_cache_new();
    json_t *doc = large_doc();
    struct slb_json_cache_stats st = check_dump(c, doc);
    size_t total = pieces_of(doc);
    assert_int_equal(st.serialized, total);
    assert_int_equal(st.pieces, total);

    /* The same document again: nothing is serialized. */
    st = check_dump(c, doc);
    assert_int_equal(st.serialized, 0);
    assert_int_equal(st.reused, total);

    /* One listener's weight-like change: one piece. */
    json_t *next = next_doc(doc, "listeners");
    json_t *l = json_deep_copy(json_array_get(json_object_get(next, "listeners"), 500));
    json_object_set_new(l, "status", json_string("stopped"));
    json_array_set_new(json_object_get(next, "listeners"), 500, l);
    json_decref(doc);
    doc = next;
    st = check_dump(c, doc);
    assert_int_equal(st.serialized, 1);
    assert_int_equal(st.reused, total - 1);
    assert_int_equal(st.pieces, total);

    /* The big listener changes (one certificate more). */
    next = next_doc(doc, "listeners");
    l = json_deep_copy(json_array_get(json_object_get(next, "listeners"), 0));
    json_array_append_new(json_object_get(l, "certificates"), json_string("c-new"));
    json_array_set_new(json_object_get(next, "listeners"), 0, l);
    json_decref(doc);
    doc = next;
    st = check_dump(c, doc);
    assert_int_equal(st.serialized, 1);

    /* Settings replaced. */
    next = next_doc(doc, NULL);
    json_object_set_new(next, "settings", json_pack("{s:i}", "drain_timeout_s", 5));
    json_decref(doc);
    doc = next;
    st = check_dump(c, doc);
    assert_int_equal(st.serialized, 1);
    assert_int_equal(st.pieces, total);

    json_decref(doc);
    slb_json_cache_free(c);
}

static void test_delete_add_and_bound(void **state)
{
    (void)state;
    struct slb_json_cache *c = slb_json_cache_new();
    json_t *doc = large_doc();
    check_dump(c, doc);
    srandom(19);
    for (int round = 0; round < 60; round++) {
        const char *coll = round % 3 == 2 ? "groups" : "listeners";
        json_t *next = next_doc(doc, coll);
        json_t *arr = json_object_get(next, coll);
        size_t n = json_array_size(arr);
        size_t expect_new = 0;
        switch (round % 4) {
        case 0: /* delete one */
            json_array_remove(arr, (size_t)random() % n);
            break;
        case 1: /* add one, at the end or inside */
            json_array_insert_new(arr, (size_t)random() % (n + 1),
                                  round % 3 == 2 ? group(1000 + round) : listener(2000 + round, 3));
            expect_new = 1;
            break;
        case 2: /* replace one and delete another */
            json_array_set_new(arr, 0, json_deep_copy(json_array_get(arr, 0)));
            json_array_remove(arr, n - 1);
            expect_new = 1;
            break;
        case 3: /* reorder: the same pieces elsewhere are not serialized again */
            json_array_insert(arr, 0, json_array_get(arr, n - 1));
            json_array_remove(arr, n);
            break;
        }
        json_decref(doc);
        doc = next;
        struct slb_json_cache_stats st = check_dump(c, doc);
        assert_int_equal(st.serialized, expect_new);
        assert_int_equal(st.pieces, pieces_of(doc));
    }
    /* Everything replaced by new values: the old pieces are all dropped. */
    json_decref(doc);
    doc = json_pack("{s:[], s:[], s:{}}", "listeners", "groups", "settings");
    struct slb_json_cache_stats st = check_dump(c, doc);
    assert_int_equal(st.pieces, 3);
    json_decref(doc);
    slb_json_cache_free(c);
}

static void test_edge_shapes(void **state)
{
    (void)state;
    struct slb_json_cache *c = slb_json_cache_new();
    json_t *doc = json_object();
    check_dump(c, doc);
    json_decref(doc);

    /* A value that is not an array, an empty array, scalars, keys in byte order ("a" < "a b"
     * < "ab" < "\u00e9"). */
    doc = json_pack("{s:i, s:[], s:s, s:[i, s, [], {}], s:b, s:{}}", "ab", 1, "a", "\u00e9", "x",
                    "a b", 1, "two", "z", 1, "e");
    check_dump(c, doc);
    json_decref(doc);

    /* The same json_t at two depths: each depth keeps its own text. */
    json_t *shared = json_pack("{s:[i, i], s:{s:s}}", "n", 1, 2, "o", "k", "v");
    doc = json_pack("{s:O, s:[O, O]}", "settings", shared, "list", shared, shared);
    check_dump(c, doc);
    check_dump(c, doc);
    json_decref(doc);
    json_decref(shared);

    /* A key that needs escaping is written the plain way, still the same bytes. */
    doc = json_pack("{s:[{s:i}], s:i}", "list", "k", 1, "we\"ird\n", 2);
    check_dump(c, doc);
    json_decref(doc);

    /* Not an object: refused as json_dumps would be for a scalar. */
    char *text = NULL;
    size_t len = 0;
    doc = json_integer(3);
    assert_true(slb_json_cache_dump(c, doc, &text, &len) < 0);
    assert_null(text);
    json_decref(doc);
    slb_json_cache_free(c);
}

/* The cache holds a reference: a piece whose document was freed stays valid, and its address
 * cannot be handed to a new value while it is remembered. */
static void test_pieces_outlive_their_document(void **state)
{
    (void)state;
    struct slb_json_cache *c = slb_json_cache_new();
    json_t *doc = large_doc();
    check_dump(c, doc);
    json_decref(doc);
    for (int i = 0; i < 3; i++) {
        doc = large_doc();
        struct slb_json_cache_stats st = check_dump(c, doc);
        assert_int_equal(st.serialized, pieces_of(doc));
        assert_int_equal(st.reused, 0);
        json_decref(doc);
    }
    slb_json_cache_free(c);
}

#if defined(__SANITIZE_ADDRESS__)
/* Sanitizer builds check that a reused piece was not changed in place, and write its new text. */
static void test_changed_in_place_is_caught(void **state)
{
    (void)state;
    struct slb_json_cache *c = slb_json_cache_new();
    json_t *doc = large_doc();
    check_dump(c, doc);
    json_object_set_new(json_array_get(json_object_get(doc, "listeners"), 7), "status",
                        json_string("stopped"));
    check_dump(c, doc);
    json_decref(doc);
    slb_json_cache_free(c);
}
#endif

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Through the state backend: the file holds the bytes of a from-scratch serialization and
 * loads back equal after each change; the cache lives and dies with the backend. */
static void test_config_save_through_backend(void **state)
{
    (void)state;
    char dir[64] = "/tmp/slb-test-save-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_non_null(b);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, SLB_STATE_CONFIG);

    json_t *doc = large_doc();
    for (int round = 0; round < 4; round++) {
        if (round) {
            json_t *next = next_doc(doc, "groups");
            json_t *arr = json_object_get(next, "groups");
            if (round == 2)
                json_array_remove(arr, 3);
            else
                json_array_set_new(arr, (size_t)round, group(500 + round));
            json_decref(doc);
            doc = next;
        }
        uint64_t rev = 0;
        assert_int_equal(slb_state_config_save(b, doc, SLB_REV_ANY, &rev, &err), 0);
        char *data = NULL;
        size_t len = 0, wlen = 0;
        assert_int_equal(slb_fs_read_all(path, SIZE_MAX / 2, &data, &len), 0);
        char *want = plain_text(doc, &wlen);
        assert_int_equal(len, wlen);
        assert_memory_equal(data, want, len);
        assert_true(rev == slb_backend_dir_rev(data, len));
        free(data);
        free(want);

        json_t *back = NULL;
        assert_int_equal(slb_state_config_load(b, &back, NULL, &err), 0);
        assert_true(json_equal(back, doc));
        json_decref(back);
        struct slb_json_cache_stats st;
        slb_json_cache_stats(b->config_text, &st);
        assert_int_equal(st.serialized, round ? (round == 2 ? 0 : 1) : pieces_of(doc));
    }
    json_decref(doc);
    slb_backend_free(b);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_change_serializes_one_piece),
        cmocka_unit_test(test_delete_add_and_bound),
        cmocka_unit_test(test_edge_shapes),
        cmocka_unit_test(test_pieces_outlive_their_document),
#if defined(__SANITIZE_ADDRESS__)
        cmocka_unit_test(test_changed_in_place_is_caught),
#endif
        cmocka_unit_test(test_config_save_through_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
