/* SPDX-License-Identifier: Apache-2.0 */
/* `slbctl rule ...`: a listener's forwarding rules. Each change is a read-modify-write of the
 * whole listener (with If-Match, see slb_cli_update), so a concurrent change is never lost. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#define LISTENERS "/v1/listeners/"

enum rule_op { RULE_ADD, RULE_REMOVE, RULE_MOVE };

struct rule_edit {
    enum rule_op op;
    json_t *rule;     /* add */
    const char *name; /* remove, move */
    long pos;         /* add (0: at the end), move: 1-based */
};

static long find_rule(const json_t *rules, const char *name)
{
    for (size_t i = 0; i < json_array_size(rules); i++) {
        const char *n = json_string_value(json_object_get(json_array_get(rules, i), "name"));
        if (n && strcmp(n, name) == 0)
            return (long)i;
    }
    return -1;
}

static int rule_edit(json_t *obj, void *arg)
{
    const struct rule_edit *e = arg;
    json_t *rules = json_object_get(obj, "rules");
    if (!json_is_array(rules)) {
        rules = json_array();
        json_object_set_new(obj, "rules", rules);
    }
    long n = (long)json_array_size(rules);
    if (e->op == RULE_ADD) {
        long at = e->pos ? e->pos - 1 : n;
        if (at > n)
            return slb_cli_usage_fail("--position %ld is past the end (the listener has %ld "
                                      "rules)",
                                      e->pos, n);
        json_array_insert(rules, (size_t)at, e->rule);
        return 0;
    }
    long i = find_rule(rules, e->name);
    if (i < 0)
        return slb_cli_fail("the listener has no rule named '%s'", e->name);
    json_t *r = json_incref(json_array_get(rules, (size_t)i));
    json_array_remove(rules, (size_t)i);
    if (e->op == RULE_MOVE) {
        if (e->pos > n) {
            json_decref(r);
            return slb_cli_usage_fail("--to %ld is past the end (the listener has %ld rules)",
                                      e->pos, n);
        }
        json_array_insert(rules, (size_t)(e->pos - 1), r);
    }
    json_decref(r);
    return 0;
}

static int rule_cmd(struct slb_cli *c, int argc, char **argv, enum rule_op op)
{
    static const struct slb_cli_optspec add_spec[] = {
        {"--from-json", SLB_CLI_ARG_REQUIRED}, {"--position", SLB_CLI_ARG_REQUIRED}, {NULL, 0}};
    static const struct slb_cli_optspec move_spec[] = {{"--to", SLB_CLI_ARG_REQUIRED}, {NULL, 0}};
    struct slb_cli_args a;
    int npos = op == RULE_ADD ? 1 : 2;
    int rc = slb_cli_parse(&a, argc, argv,
                           op == RULE_ADD    ? add_spec
                           : op == RULE_MOVE ? move_spec
                                             : NULL,
                           npos, npos);
    if (rc != 0)
        return rc;
    struct rule_edit e = {.op = op, .name = npos > 1 ? a.pos[1] : NULL};
    const char *p = slb_cli_opt(&a, op == RULE_MOVE ? "--to" : "--position");
    if (op == RULE_MOVE && !p)
        return slb_cli_usage_fail("missing --to");
    if (p && slb_cli_parse_int(p, 1, 1000, &e.pos) < 0)
        return slb_cli_usage_fail("bad position '%s' (want 1-1000)", p);
    if (op == RULE_ADD) {
        const char *from = slb_cli_opt(&a, "--from-json");
        if (!from)
            return slb_cli_usage_fail("missing --from-json");
        if (!(e.rule = slb_cli_read_json_object(from)))
            return SLB_CLI_EXIT_API;
    }
    json_t *out = NULL;
    rc = slb_cli_update(c, LISTENERS, a.pos[0], rule_edit, &e, &out);
    if (rc == 0) {
        if (c->json) {
            slb_cli_print_json(c->out, json_object_get(out, "rules"));
        } else {
            const char *name = e.name ? e.name : json_string_value(json_object_get(e.rule, "name"));
            fprintf(c->out, "%s rule %s %s listener %s\n",
                    op == RULE_ADD      ? "added"
                    : op == RULE_REMOVE ? "removed"
                                        : "moved",
                    name ? name : "?", op == RULE_REMOVE ? "from" : "in", a.pos[0]);
        }
    }
    json_decref(out);
    json_decref(e.rule);
    return rc;
}

/* NAME, MATCH (compact JSON), ACTION ("forward a:75 b:25", "redirect 301", ...). */
static void rule_row(const json_t *item, char (*cells)[SLB_CLI_CELL])
{
    slb_cli_value_text(json_object_get(item, "name"), cells[0], SLB_CLI_CELL);
    const json_t *m = json_object_get(item, "match");
    char *text = json_object_size(m) ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    snprintf(cells[1], SLB_CLI_CELL, "%s", text ? text : "(every request)");
    free(text);
    const json_t *act = json_object_get(item, "action");
    const json_t *fwd = json_object_get(act, "forward");
    size_t len = 0;
    if (json_is_array(fwd)) {
        len = (size_t)snprintf(cells[2], SLB_CLI_CELL, "forward");
        for (size_t i = 0; i < json_array_size(fwd) && len < SLB_CLI_CELL; i++) {
            const json_t *t = json_array_get(fwd, i);
            len += (size_t)snprintf(cells[2] + len, SLB_CLI_CELL - len, " %s:%lld",
                                    json_string_value(json_object_get(t, "group")),
                                    (long long)json_integer_value(json_object_get(t, "weight")));
        }
    } else if (json_is_string(fwd)) {
        snprintf(cells[2], SLB_CLI_CELL, "forward %s", json_string_value(fwd));
    } else {
        const char *kind = json_object_get(act, "redirect") ? "redirect" : "fixed_response";
        const json_t *code = json_object_get(json_object_get(act, kind), "code");
        snprintf(cells[2], SLB_CLI_CELL, "%s %lld", kind,
                 code ? (long long)json_integer_value(code) : 301LL);
    }
}

int slb_cli_rule_list(struct slb_cli *c, int argc, char **argv)
{
    static const char *const headers[] = {"NAME", "MATCH", "ACTION"};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 1, 1);
    if (rc != 0)
        return rc;
    json_t *obj = NULL;
    rc = slb_cli_get_object(c, LISTENERS, a.pos[0], &obj);
    if (rc != 0)
        return rc;
    json_t *rules = json_object_get(obj, "rules");
    if (c->json) {
        json_t *none = json_array();
        slb_cli_print_json(c->out, json_is_array(rules) ? rules : none);
        json_decref(none);
        json_decref(obj);
        return 0;
    }
    struct slb_cli_table *t = slb_cli_table_new(3, headers);
    char(*cells)[SLB_CLI_CELL] = calloc(3, SLB_CLI_CELL);
    if (!t || !cells) {
        rc = slb_cli_fail("out of memory");
    } else {
        for (size_t i = 0; i < json_array_size(rules); i++) {
            for (size_t k = 0; k < 3; k++)
                strcpy(cells[k], "-");
            rule_row(json_array_get(rules, i), cells);
            const char *ptrs[3] = {cells[0], cells[1], cells[2]};
            slb_cli_table_add(t, ptrs);
        }
        slb_cli_table_print(t, c->out);
    }
    slb_cli_table_free(t);
    free(cells);
    json_decref(obj);
    return rc;
}

int slb_cli_rule_add(struct slb_cli *c, int argc, char **argv)
{
    return rule_cmd(c, argc, argv, RULE_ADD);
}

int slb_cli_rule_remove(struct slb_cli *c, int argc, char **argv)
{
    return rule_cmd(c, argc, argv, RULE_REMOVE);
}

int slb_cli_rule_move(struct slb_cli *c, int argc, char **argv)
{
    return rule_cmd(c, argc, argv, RULE_MOVE);
}
