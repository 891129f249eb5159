/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the operations layer (src/ops/), called directly without HTTP on a real
 * daemon state (one worker, a fresh state directory per test), and for the state directory
 * as a state backend (src/state/dir.c). */
#include "cert_fixture.h"

#include "config/state.h"
#include "daemon/control.h"
#include "ops/ops.h"
#include "state/backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

struct ops_fixture {
    char dir[160];
    struct slb_ctl ctl;
};

static int ops_setup(void **state)
{
    struct ops_fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    new_state(f->dir, sizeof(f->dir));
    struct slb_options opt = {.state_dir = f->dir, .workers = 1};
    struct slb_err err = {0};
    if (slb_ctl_init(&f->ctl, &opt, &err) < 0 || slb_ctl_start(&f->ctl, &opt, &err) < 0) {
        fprintf(stderr, "slb_ctl_init: %s: %s\n", err.code, err.msg);
        slb_ctl_deinit(&f->ctl);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int ops_teardown(void **state)
{
    struct ops_fixture *f = *state;
    slb_ctl_deinit(&f->ctl);
    free(f);
    return 0;
}

/* The bytes of DIR/name, or NULL when it does not exist. */
static char *file_text(const char *dir, const char *name)
{
    char path[300], *data = NULL;
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return slb_fs_read_all(path, 1 << 22, &data, &len) == 0 ? data : NULL;
}

static struct slb_certval_upload server_material(const char *name)
{
    struct slb_certval_upload m = {.name = name, .type = SLB_CERT_SERVER};
    m.certificate = pki_len("server-full.pem", &m.certificate_len);
    m.private_key = pki_len("server.key", &m.private_key_len);
    return m;
}

/* A certificate created from PEM material (no API body) is validated, stored durably and
 * listed; a replace based on a stale revision is refused and changes nothing. */
static void test_cert_from_material(void **state)
{
    struct ops_fixture *f = *state;
    struct slb_ctl *ctl = &f->ctl;
    struct slb_err err = {0};
    struct slb_cert *c = NULL;
    struct slb_certval_upload m = server_material("web");
    m.id = "web1";
    assert_int_equal(slb_ops_cert_create(ctl, &m, NULL, &c, &err), 0);
    assert_non_null(c);
    assert_string_equal(c->id, "web1");
    assert_int_equal(c->version, 1);
    assert_true(has_san(c, "www.example.com"));
    char *stored = file_text(f->dir, "certs/web1.json");
    assert_non_null(stored);
    free(stored);
    json_t *list = slb_ops_cert_list(ctl);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    /* Material is checked as an upload is: a server certificate needs its key. */
    struct slb_certval_upload nokey = server_material("nokey");
    nokey.private_key = NULL;
    nokey.private_key_len = 0;
    assert_true(slb_ops_cert_create(ctl, &nokey, NULL, &c, &err) < 0);
    assert_string_equal(err.code, "invalid_body");
    assert_string_equal(err.where, "private_key");

    /* Read the revision, let someone else replace it, then replace from the stale read. */
    char rev[SLB_OPS_REV_SIZE];
    json_t *res = slb_ops_cert_resource(ctl, slb_ops_cert_get(ctl, "web1", &err));
    slb_ops_revision(res, rev);
    json_decref(res);
    struct slb_certval_upload again = server_material("web");
    again.type = SLB_CERT_NONE; /* a replace may omit the type */
    struct slb_op op = {.expect = rev};
    assert_int_equal(slb_ops_cert_replace(ctl, "web1", &again, &op, &c, &err), 0);
    assert_int_equal(c->version, 2);
    memset(&err, 0, sizeof(err));
    assert_true(slb_ops_cert_replace(ctl, "web1", &again, &op, &c, &err) < 0);
    assert_int_equal(err.status, 412);
    assert_string_equal(err.code, "precondition_failed");
    assert_int_equal(slb_ops_cert_get(ctl, "web1", &err)->version, 2);
    assert_true(slb_ops_cert_delete(ctl, "web1", &op, &err) < 0);
    assert_int_equal(err.status, 412);

    /* No dry run for certificates: refused rather than pretended. */
    struct slb_op dry = {.dry_run = true};
    assert_true(slb_ops_cert_create(ctl, &m, &dry, &c, &err) < 0);
    assert_string_equal(err.where, "dry_run");

    assert_int_equal(slb_ops_cert_delete(ctl, "web1", NULL, &err), 0);
    assert_null(slb_ops_cert_get(ctl, "web1", &err));
    assert_int_equal(err.status, 404);
    assert_null(file_text(f->dir, "certs/web1.json"));
}

static json_t *server(const char *addr, int port)
{
    return json_pack("{s:s, s:i}", "address", addr, "port", port);
}

/* Adding a server based on a stale read of its group is refused; based on the current one it
 * is applied and stored. */
static void test_server_stale_revision(void **state)
{
    struct ops_fixture *f = *state;
    struct slb_ctl *ctl = &f->ctl;
    struct slb_err err = {0};
    json_t *g = json_pack("{s:s, s:[{s:s, s:i}]}", "name", "app", "servers", "address", "127.0.0.1",
                          "port", 9001);
    json_t *out = NULL;
    assert_int_equal(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, NULL, &out, &err), 0);
    json_decref(g);
    char rev[SLB_OPS_REV_SIZE];
    slb_ops_revision(out, rev);
    json_decref(out);
    unsigned long long gen = slb_ops_generation(ctl);

    struct slb_op op = {.expect = rev};
    json_t *s2 = server("127.0.0.1", 9002), *s3 = server("::1", 9003);
    assert_int_equal(slb_ops_server_add(ctl, "app", s2, &op, &out, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(out, "weight")), 100);
    json_decref(out);
    assert_true(slb_ops_generation(ctl) > gen);
    gen = slb_ops_generation(ctl);

    /* rev is now stale: the group has two servers. */
    memset(&err, 0, sizeof(err));
    assert_true(slb_ops_server_add(ctl, "app", s3, &op, &out, &err) < 0);
    assert_int_equal(err.status, 412);
    assert_string_equal(err.code, "precondition_failed");
    assert_int_equal(slb_ops_generation(ctl), gen);
    json_t *now = slb_ops_item_get(ctl, SLB_OPS_GROUP, "app", &err);
    assert_int_equal(json_array_size(json_object_get(now, "servers")), 2);
    char *text = file_text(f->dir, "config.json");
    assert_non_null(text);
    assert_null(strstr(text, "9003"));
    free(text);

    /* One server's own revision guards its changes; addresses compare by value. */
    json_t *cur = slb_ops_server_get(ctl, "app", "127.0.0.1:9002", &err);
    assert_non_null(cur);
    slb_ops_revision(cur, rev);
    json_t *w = json_pack("{s:i}", "weight", 5);
    assert_int_equal(slb_ops_server_update(ctl, "app", "127.0.0.1:9002", w, true, &op, &out, &err),
                     0);
    json_decref(out);
    assert_true(slb_ops_server_update(ctl, "app", "127.0.0.1:9002", w, true, &op, &out, &err) < 0);
    assert_int_equal(err.status, 412);
    json_decref(w);
    assert_int_equal(slb_ops_server_add(ctl, "app", s3, NULL, NULL, &err), 0);
    assert_non_null(slb_ops_server_get(ctl, "app", "[0:0::1]:9003", &err));
    assert_true(slb_ops_server_add(ctl, "app", s3, NULL, NULL, &err) < 0);
    assert_int_equal(err.status, 409);
    assert_int_equal(slb_ops_server_remove(ctl, "app", "[::1]:9003", NULL, &err), 0);
    assert_null(slb_ops_server_get(ctl, "app", "[::1]:9003", &err));
    assert_int_equal(err.status, 404);
    json_decref(s2);
    json_decref(s3);
}

/* A dry run validates and answers what would be stored, and changes nothing: not the
 * active document, not its generation, not config.json. */
static void test_apply_dry_run(void **state)
{
    struct ops_fixture *f = *state;
    struct slb_ctl *ctl = &f->ctl;
    struct slb_err err = {0};
    json_t *g = json_pack("{s:s, s:[]}", "name", "base", "servers");
    assert_int_equal(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, NULL, NULL, &err), 0);
    json_decref(g);
    json_t *before = json_deep_copy(slb_ops_config(ctl));
    char *file_before = file_text(f->dir, "config.json");
    assert_non_null(file_before);
    unsigned long long gen = slb_ops_generation(ctl);

    json_t *doc = json_pack("{s:[{s:s, s:[{s:s, s:i}]}]}", "groups", "name", "new", "servers",
                            "address", "10.0.0.1", "port", 80);
    struct slb_op op = {.dry_run = true};
    json_t *would = NULL;
    assert_int_equal(slb_ops_apply(ctl, doc, &op, &would, &err), 0);
    assert_non_null(slb_ops_find_named(json_object_get(would, "groups"), "new", NULL));
    assert_null(slb_ops_find_named(json_object_get(would, "groups"), "base", NULL));
    json_decref(would);
    assert_true(json_equal(before, slb_ops_config(ctl)));
    assert_int_equal(slb_ops_generation(ctl), gen);
    char *file_after = file_text(f->dir, "config.json");
    assert_string_equal(file_before, file_after);
    free(file_after);

    /* A dry run of an invalid document fails the way the real one would. */
    json_t *bad = json_pack("{s:[{s:s, s:i}]}", "groups", "name", "x", "servers", 1);
    assert_true(slb_ops_apply(ctl, bad, &op, &would, &err) < 0);
    assert_int_equal(err.status, 400);
    json_decref(bad);

    /* The same document applied for real changes all three. */
    assert_int_equal(slb_ops_apply(ctl, doc, NULL, &would, &err), 0);
    json_decref(would);
    assert_true(slb_ops_generation(ctl) > gen);
    assert_non_null(slb_ops_item_get(ctl, SLB_OPS_GROUP, "new", &err));
    file_after = file_text(f->dir, "config.json");
    assert_string_not_equal(file_before, file_after);
    free(file_after);
    free(file_before);
    json_decref(doc);
    json_decref(before);
}

/* A port nobody listens on now (the kernel's pick for an ephemeral bind). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Listener and group ops: name_taken, in_use, and an update that may not rename. */
static void test_items(void **state)
{
    struct ops_fixture *f = *state;
    struct slb_ctl *ctl = &f->ctl;
    struct slb_err err = {0};
    json_t *g = json_pack("{s:s, s:[]}", "name", "g", "servers");
    assert_int_equal(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, NULL, NULL, &err), 0);
    assert_true(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, NULL, NULL, &err) < 0);
    assert_int_equal(err.status, 409);
    assert_string_equal(err.code, "name_taken");
    json_decref(g);
    char bind[32];
    snprintf(bind, sizeof(bind), "127.0.0.1:%d", free_port());
    json_t *l = json_pack("{s:s, s:s, s:s, s:s}", "name", "web", "protocol", "tcp", "bind", bind,
                          "backend_group", "g");
    json_t *out = NULL;
    int rc = slb_ops_item_create(ctl, SLB_OPS_LISTENER, l, NULL, &out, &err);
    json_decref(l);
    if (rc)
        fail_msg("listener: %s: %s", err.code, err.msg);
    assert_string_equal(json_string_value(json_object_get(out, "bind")), bind);
    json_decref(out);
    assert_true(slb_ops_item_delete(ctl, SLB_OPS_GROUP, "g", NULL, &err) < 0);
    assert_string_equal(err.code, "in_use");
    assert_int_equal(slb_ops_item_delete(ctl, SLB_OPS_LISTENER, "web", NULL, &err), 0);
    json_t *renamed = json_pack("{s:s, s:[]}", "name", "other", "servers");
    assert_true(slb_ops_item_update(ctl, SLB_OPS_GROUP, "g", renamed, NULL, NULL, &err) < 0);
    assert_string_equal(err.code, "invalid_value");
    json_decref(renamed);
    assert_int_equal(slb_ops_item_delete(ctl, SLB_OPS_GROUP, "g", NULL, &err), 0);
    assert_null(slb_ops_item_get(ctl, SLB_OPS_GROUP, "g", &err));
    assert_int_equal(err.status, 404);
}

/* While a new process takes the state over (slbd --upgrade), every change is refused with 503
 * upgrading and nothing is stored, whichever client asks; reads go on. */
static void test_changes_wait_for_handover(void **state)
{
    struct ops_fixture *f = *state;
    struct slb_ctl *ctl = &f->ctl;
    struct slb_err err = {0};
    char *before = file_text(f->dir, "config.json");
    ctl->handover_state = SLB_HANDOVER_SENT;
    json_t *g = json_pack("{s:s, s:[]}", "name", "g", "servers");
    assert_true(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, NULL, NULL, &err) < 0);
    assert_int_equal(err.status, 503);
    assert_string_equal(err.code, "upgrading");
    struct slb_op dry = {.dry_run = true};
    memset(&err, 0, sizeof(err));
    assert_true(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, &dry, NULL, &err) < 0);
    assert_string_equal(err.code, "upgrading");
    struct slb_certval_upload m = server_material("web");
    struct slb_cert *c = NULL;
    memset(&err, 0, sizeof(err));
    assert_true(slb_ops_cert_create(ctl, &m, NULL, &c, &err) < 0);
    assert_string_equal(err.code, "upgrading");
    assert_null(c);
    json_t *list = slb_ops_cert_list(ctl);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_null(slb_ops_item_get(ctl, SLB_OPS_GROUP, "g", NULL));
    char *after = file_text(f->dir, "config.json");
    assert_true((!before && !after) || (before && after && strcmp(before, after) == 0));
    free(before);
    free(after);

    /* The hand-over failed: changes are accepted again. */
    ctl->handover_state = SLB_HANDOVER_NONE;
    assert_int_equal(slb_ops_item_create(ctl, SLB_OPS_GROUP, g, NULL, NULL, &err), 0);
    json_decref(g);
}

/* --- the state directory as a backend --- */

static void test_backend_put_revision(void **state)
{
    char dir[160];
    new_state(dir, sizeof(dir));
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_non_null(b);
    uint64_t r1 = 0, r2 = 0, r3 = 0;
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{\"a\": 1}\n", 9, SLB_REV_ABSENT, &r1), 0);
    assert_true(r1 != SLB_REV_ABSENT && r1 != SLB_REV_ANY);
    /* Create-only when it exists, and a stale revision: refused, nothing written. */
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{}", 2, SLB_REV_ABSENT, NULL),
                     SLB_ECONFLICT);
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{\"a\": 2}\n", 9, r1, &r2), 0);
    assert_true(r2 != r1);
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{\"a\": 3}\n", 9, r1, &r3), SLB_ECONFLICT);
    assert_int_equal(slb_backend_del(b, SLB_DOC_CONFIG, r1), SLB_ECONFLICT);
    struct slb_doc d;
    assert_int_equal(slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    assert_string_equal(d.data, "{\"a\": 2}\n");
    assert_true(d.rev == r2);
    slb_doc_clear(&d);
    /* The file is config.json, as it always was. */
    char *text = file_text(dir, "config.json");
    assert_string_equal(text, "{\"a\": 2}\n");
    free(text);
    /* An unconditional put and a delete at the current revision. */
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{}", 2, SLB_REV_ANY, &r3), 0);
    assert_int_equal(slb_backend_del(b, SLB_DOC_CONFIG, r3), 0);
    assert_int_equal(slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err), -ENOENT);
    slb_backend_free(b);

    /* A readonly backend refuses writes. */
    b = slb_backend_dir_new(dir, true, &err);
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{}", 2, SLB_REV_ANY, NULL), -EROFS);
    slb_backend_free(b);
}

static int collect(const char *key, void *arg)
{
    json_array_append_new(arg, json_string(key));
    return 0;
}

/* A write interrupted by a crash leaves its temporary file behind: neither get nor list ever
 * shows it, and the document keeps its previous content and revision. */
static void test_backend_torn_write_invisible(void **state)
{
    char dir[160], path[300];
    new_state(dir, sizeof(dir));
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_non_null(b);
    assert_int_equal(slb_backend_dir_prepare(b, &err), 0);
    uint64_t rev = 0;
    assert_int_equal(slb_backend_put(b, "certs/c1", "{\"id\": \"c1\"}", 12, SLB_REV_ANY, &rev), 0);
    assert_int_equal(slb_backend_put(b, SLB_DOC_CONFIG, "{\"v\": 1}", 8, SLB_REV_ANY, NULL), 0);
    /* What slb_fs_write_atomic had written when the process died: a prefix of the new bytes
     * under its temporary name. */
    snprintf(path, sizeof(path), "%s/certs/.c1.json.99999.0.tmp", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"id\": \"c1\", \"certif", fp);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/.config.json.99999.1.tmp", dir);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"v\": ", fp);
    fclose(fp);

    struct slb_doc d;
    assert_int_equal(slb_backend_get(b, "certs/c1", 1024, &d, &err), 0);
    assert_string_equal(d.data, "{\"id\": \"c1\"}");
    assert_true(d.rev == rev);
    slb_doc_clear(&d);
    assert_int_equal(slb_backend_get(b, SLB_DOC_CONFIG, 1024, &d, &err), 0);
    assert_string_equal(d.data, "{\"v\": 1}");
    slb_doc_clear(&d);
    json_t *keys = json_array();
    assert_int_equal(slb_backend_list(b, SLB_DOC_CERTS, collect, keys), 0);
    assert_int_equal(json_array_size(keys), 1);
    assert_string_equal(json_string_value(json_array_get(keys, 0)), "certs/c1");
    json_decref(keys);

    /* A put at the document's revision still succeeds and leaves no temporary file of its
     * own (the crash's leftovers are removed by slb_state_prepare at the next start). */
    assert_int_equal(slb_backend_put(b, "certs/c1", "{\"id\": \"c1\", \"v\": 2}", 20, rev, &rev),
                     0);
    assert_int_equal(slb_fs_remove_leftovers(dir), 1);
    snprintf(path, sizeof(path), "%s/certs", dir);
    assert_int_equal(slb_fs_remove_leftovers(path), 1);
    slb_backend_free(b);
}

/* The directory's secret documents keep their file checks: a certificate file others can
 * read is refused with state_insecure. */
static void test_backend_secret_files(void **state)
{
    char dir[160], path[300];
    new_state(dir, sizeof(dir));
    struct slb_err err = {0};
    struct slb_backend *b = slb_backend_dir_new(dir, false, &err);
    assert_int_equal(slb_backend_dir_prepare(b, &err), 0);
    assert_int_equal(slb_backend_put(b, "certs/c1", "{}", 2, SLB_REV_ANY, NULL), 0);
    snprintf(path, sizeof(path), "%s/certs/c1.json", dir);
    assert_int_equal(chmod(path, 0644), 0);
    struct slb_doc d;
    assert_int_equal(slb_backend_get(b, "certs/c1", 1024, &d, &err), SLB_EINVAL);
    assert_string_equal(err.code, "state_insecure");
    slb_backend_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cert_from_material, ops_setup, ops_teardown),
        cmocka_unit_test_setup_teardown(test_server_stale_revision, ops_setup, ops_teardown),
        cmocka_unit_test_setup_teardown(test_apply_dry_run, ops_setup, ops_teardown),
        cmocka_unit_test_setup_teardown(test_items, ops_setup, ops_teardown),
        cmocka_unit_test_setup_teardown(test_changes_wait_for_handover, ops_setup, ops_teardown),
        cmocka_unit_test(test_backend_put_revision),
        cmocka_unit_test(test_backend_torn_write_invisible),
        cmocka_unit_test(test_backend_secret_files),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
