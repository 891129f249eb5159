/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the state directory (src/config/state.c): config.json load/save and the admin
 * token, each in a fresh temporary directory. */
/* cmocka needs these before it, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "config/state.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fixture {
    char dir[64];
    char path[160]; /* dir/config.json */
    char token_path[160];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/slb-test-state-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/%s", f->dir, SLB_STATE_CONFIG);
    snprintf(f->token_path, sizeof(f->token_path), "%s/%s", f->dir, SLB_STATE_TOKEN);
    *state = f;
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static size_t count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len >= 4 && strcmp(e->d_name + len - 4, ".tmp") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static void test_prepare(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/state", f->dir);
    assert_int_equal(slb_state_prepare(sub, &err), 0);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(slb_state_prepare(sub, &err), 0); /* existing is fine */

    write_file(f->path, "{}", 0600);
    slb_err_clear(&err);
    assert_true(slb_state_prepare(f->path, &err) < 0);
    assert_string_equal(err.code, "state_dir");
    assert_non_null(strstr(err.msg, "not a directory"));

    snprintf(sub, sizeof(sub), "%s/missing/deeper", f->dir);
    assert_true(slb_state_prepare(sub, &err) < 0);
    assert_non_null(strstr(err.msg, sub));
}

static void test_missing_config_is_empty(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    json_t *doc = NULL;
    assert_int_equal(slb_state_load_config(f->dir, &doc, &err), 0);
    json_t *want = json_pack("{s:[], s:[], s:{}}", "listeners", "groups", "settings");
    assert_true(json_equal(doc, want));
    json_decref(want);
    json_decref(doc);
}

static void test_save_then_load(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    json_t *doc = json_pack("{s:[{s:s, s:s, s:s, s:s}], s:[{s:s, s:[]}], s:{s:i}}", "listeners",
                            "name", "web", "protocol", "http", "bind", "*:80", "backend_group", "g",
                            "groups", "name", "g", "servers", "settings", "drain_timeout_s", 3);
    assert_non_null(doc);
    assert_int_equal(slb_state_save_config(f->dir, doc, &err), 0);
    json_t *back = NULL;
    assert_int_equal(slb_state_load_config(f->dir, &back, &err), 0);
    assert_true(json_equal(doc, back));
    json_decref(back);

    /* Pretty, sorted and newline-terminated, so hand edits and diffs stay readable. */
    char *text = NULL;
    FILE *fp = fopen(f->path, "r");
    assert_non_null(fp);
    text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, fp);
    fclose(fp);
    assert_true(n > 0);
    assert_int_equal(text[n - 1], '\n');
    assert_non_null(strstr(text, "\n  \"groups\""));
    assert_true(strstr(text, "\"groups\"") < strstr(text, "\"listeners\""));
    assert_true(strstr(text, "\"listeners\"") < strstr(text, "\"settings\""));
    free(text);
    assert_int_equal(count_tmp_files(f->dir), 0);

    /* A second save replaces the first completely. */
    json_object_set_new(doc, "listeners", json_array());
    assert_int_equal(slb_state_save_config(f->dir, doc, &err), 0);
    assert_int_equal(slb_state_load_config(f->dir, &back, &err), 0);
    assert_int_equal(json_array_size(json_object_get(back, "listeners")), 0);
    json_decref(back);
    assert_int_equal(count_tmp_files(f->dir), 0);
    json_decref(doc);

    char missing[128];
    snprintf(missing, sizeof(missing), "%s/nope", f->dir);
    doc = json_object();
    assert_true(slb_state_save_config(missing, doc, &err) < 0);
    assert_string_equal(err.code, "write_failed");
    assert_non_null(strstr(err.msg, missing));
    json_decref(doc);
}

static void test_invalid_json(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    json_t *doc = (json_t *)1;
    write_file(f->path, "{\n  \"listeners\": [,]\n}\n", 0600);
    slb_err_clear(&err);
    assert_true(slb_state_load_config(f->dir, &doc, &err) < 0);
    assert_null(doc);
    assert_string_equal(err.code, "invalid_json");
    char prefix[200];
    snprintf(prefix, sizeof(prefix), "%s:2:", f->path);
    assert_int_equal(strncmp(err.where, prefix, strlen(prefix)), 0);
    assert_int_equal(strncmp(err.msg, prefix, strlen(prefix)), 0);
    assert_true(strlen(err.where) > strlen(prefix)); /* a column follows */

    /* Repeating a key in a hand edit would silently lose one value: refused. */
    write_file(f->path, "{\"groups\": [], \"groups\": []}", 0600);
    assert_true(slb_state_load_config(f->dir, &doc, &err) < 0);
    assert_string_equal(err.code, "invalid_json");
    assert_non_null(strstr(err.msg, "duplicate"));

    write_file(f->path, "", 0600);
    assert_true(slb_state_load_config(f->dir, &doc, &err) < 0);
    assert_string_equal(err.code, "invalid_json");
}

static void test_unreadable_and_too_large(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    json_t *doc = NULL;
    /* A directory in place of the file fails to read whatever our privileges are. */
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_true(slb_state_load_config(f->dir, &doc, &err) < 0);
    assert_string_equal(err.code, "unreadable");
    assert_non_null(strstr(err.msg, f->path));
    assert_non_null(strstr(err.msg, "Is a directory"));
    assert_int_equal(rmdir(f->path), 0);

    int fd = open(f->path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)SLB_STATE_MAX_CONFIG + 1), 0);
    close(fd);
    assert_true(slb_state_load_config(f->dir, &doc, &err) < 0);
    assert_string_equal(err.code, "too_large");
    assert_non_null(strstr(err.msg, f->path));
    assert_null(doc);
}

static void test_token_created_and_stable(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    char a[128], b[128];
    assert_int_equal(slb_state_admin_token(f->dir, a, sizeof(a), &err), 0);
    assert_int_equal(strlen(a), 64);
    assert_int_equal(strspn(a, "0123456789abcdef"), 64);
    struct stat st;
    assert_int_equal(stat(f->token_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 64);
    assert_int_equal(slb_state_admin_token(f->dir, b, sizeof(b), &err), 0);
    assert_string_equal(a, b);
    assert_int_equal(count_tmp_files(f->dir), 0);

    /* A new directory gets a different token. */
    char other[128];
    snprintf(other, sizeof(other), "%s/other", f->dir);
    assert_int_equal(slb_state_prepare(other, &err), 0);
    assert_int_equal(slb_state_admin_token(other, b, sizeof(b), &err), 0);
    assert_string_not_equal(a, b);
}

static void test_token_refused(void **state)
{
    struct fixture *f = *state;
    struct slb_err err;
    char tok[128];
    assert_int_equal(slb_state_admin_token(f->dir, tok, sizeof(tok), &err), 0);
    assert_int_equal(chmod(f->token_path, 0644), 0);
    slb_err_clear(&err);
    assert_true(slb_state_admin_token(f->dir, tok, sizeof(tok), &err) < 0);
    assert_string_equal(err.code, "token_insecure");
    assert_non_null(strstr(err.msg, f->token_path));
    assert_non_null(strstr(err.msg, "0644"));
    assert_int_equal(chmod(f->token_path, 0640), 0);
    assert_true(slb_state_admin_token(f->dir, tok, sizeof(tok), &err) < 0);
    assert_string_equal(err.code, "token_insecure");

    write_file(f->token_path, "", 0600);
    assert_true(slb_state_admin_token(f->dir, tok, sizeof(tok), &err) < 0);
    assert_string_equal(err.code, "token_invalid");
    assert_non_null(strstr(err.msg, "empty"));

    write_file(f->token_path, "short-token\n", 0600);
    assert_true(slb_state_admin_token(f->dir, tok, sizeof(tok), &err) < 0);
    assert_string_equal(err.code, "token_invalid");
    assert_non_null(strstr(err.msg, "too short"));

    write_file(f->token_path, "a token with spaces", 0600);
    assert_true(slb_state_admin_token(f->dir, tok, sizeof(tok), &err) < 0);
    assert_string_equal(err.code, "token_invalid");

    /* A hand-written token with a trailing newline is accepted without it. */
    write_file(f->token_path, "0123456789abcdefXYZ\n", 0600);
    assert_int_equal(slb_state_admin_token(f->dir, tok, sizeof(tok), &err), 0);
    assert_string_equal(tok, "0123456789abcdefXYZ");
    char small[10];
    assert_true(slb_state_admin_token(f->dir, small, sizeof(small), &err) < 0);
    assert_string_equal(err.code, "token_invalid");

    /* A symlink could point anywhere: not followed. */
    assert_int_equal(unlink(f->token_path), 0);
    assert_int_equal(symlink("/etc/hostname", f->token_path), 0);
    assert_true(slb_state_admin_token(f->dir, tok, sizeof(tok), &err) < 0);
    assert_string_equal(err.code, "unreadable");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prepare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_config_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_then_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_and_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_created_and_stable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
