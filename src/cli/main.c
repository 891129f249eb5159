/* SPDX-License-Identifier: Apache-2.0 */
/* slbctl's entry point and command line: global flags (accepted anywhere on the line), the
 * admin token, the dispatch of "<resource> <verb>" to the command functions, and the option and
 * value parsing those commands share. */
#include "cli/cli.h"

#include "core/version.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ADMIN "http://127.0.0.1:9000"
#define DEFAULT_STATE_DIR "./slbd-state"

struct command {
    const char *group;
    const char *verb; /* NULL for single-word commands */
    slb_cli_cmd_fn fn;
    const char *usage;
};

static const struct command commands[] = {
    {"cert", "upload", slb_cli_cert_upload,
     "cert upload --name NAME [--type server|ca] --cert FILE [--key FILE]"},
    {"cert", "list", slb_cli_cert_list, "cert list"},
    {"cert", "show", slb_cli_cert_show, "cert show ID"},
    {"cert", "replace", slb_cli_cert_replace,
     "cert replace ID --cert FILE [--key FILE] [--name NAME]"},
    {"cert", "delete", slb_cli_cert_delete, "cert delete ID"},
    {"cert", "crl", slb_cli_cert_crl, "cert crl ID --crl FILE"},
    {"listener", "create", slb_cli_listener_create,
     "listener create --name NAME --protocol tcp|http|https --bind ADDR:PORT --group GROUP\n"
     "        [--cert ID]... [--client-ca ID] [--client-auth required|optional] [--policy P]\n"
     "        [--proxy-protocol v1|v2|none] [--from-json FILE|-]"},
    {"listener", "list", slb_cli_listener_list, "listener list"},
    {"listener", "show", slb_cli_listener_show, "listener show NAME"},
    {"listener", "update", slb_cli_listener_update,
     "listener update NAME [--protocol P] [--bind ADDR:PORT] [--group GROUP] [--cert ID]...\n"
     "        [--client-ca ID|none] [--client-auth required|optional] [--policy P]\n"
     "        [--proxy-protocol v1|v2|none] [--from-json FILE|-]"},
    {"listener", "delete", slb_cli_listener_delete, "listener delete NAME"},
    {"group", "create", slb_cli_group_create,
     "group create --name NAME [--scheduler wrr|rr|wlc|sch|tch] [--server ADDR:PORT[:WEIGHT]]...\n"
     "        [--health tcp|http] [--health-uri URI] [--from-json FILE|-]"},
    {"group", "list", slb_cli_group_list, "group list"},
    {"group", "show", slb_cli_group_show, "group show NAME"},
    {"group", "update", slb_cli_group_update,
     "group update NAME [--scheduler S] [--health tcp|http] [--health-uri URI]\n"
     "        [--from-json FILE|-]"},
    {"group", "delete", slb_cli_group_delete, "group delete NAME"},
    {"server", "add", slb_cli_server_add, "server add GROUP ADDR:PORT [--weight W]"},
    {"server", "remove", slb_cli_server_remove, "server remove GROUP ADDR:PORT"},
    {"server", "set-weight", slb_cli_server_set_weight, "server set-weight GROUP ADDR:PORT W"},
    {"stats", NULL, slb_cli_stats, "stats [--watch [SECONDS]]"},
    {"apply", NULL, slb_cli_apply, "apply -f FILE|-"},
    {"metrics", NULL, slb_cli_metrics, "metrics"},
    {"health", NULL, slb_cli_health, "health"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Friendly spellings a user is likely to type. */
static const char *canonical_group(const char *word)
{
    static const char *const alias[][2] = {
        {"certs", "cert"},         {"certificate", "cert"}, {"certificates", "cert"},
        {"listeners", "listener"}, {"groups", "group"},     {"servers", "server"},
        {"healthz", "health"},
    };
    for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++) {
        if (strcmp(word, alias[i][0]) == 0)
            return alias[i][1];
    }
    return word;
}

static void usage(FILE *out, const char *group)
{
    fprintf(out, "usage: slbctl [--admin URL] [--token-file FILE] [--state-dir DIR] [--json] "
                 "COMMAND ...\n");
    fprintf(out, group ? "\n" : "\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (!group || strcmp(commands[i].group, group) == 0)
            fprintf(out, "  slbctl %s\n", commands[i].usage);
    }
    if (group)
        return;
    fprintf(out, "\nglobal flags (before or after the command):\n"
                 "  --admin URL        admin API, default " DEFAULT_ADMIN "\n"
                 "  --token-file FILE  file holding the admin token\n"
                 "  --state-dir DIR    read the token from DIR/admin.token "
                 "(default " DEFAULT_STATE_DIR ")\n"
                 "  --json             print the API's JSON instead of tables\n"
                 "  --version          print slbctl's version and exit\n"
                 "The token comes from --token-file, else $SLBD_TOKEN, else DIR/admin.token.\n"
                 "Exit status: 0 success, 1 refused by the API, 2 usage error, 3 cannot reach "
                 "the API.\n");
}

/* Reads a token file: one line, surrounding blanks ignored. */
static int read_token_file(struct slb_cli *c, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(c->token_problem, sizeof(c->token_problem), "cannot read %s: %s", path,
                 strerror(errno));
        return -1;
    }
    char buf[sizeof(c->token) + 2];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = buf;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    size_t len = strcspn(s, "\r\n");
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof(c->token)) {
        snprintf(c->token_problem, sizeof(c->token_problem), "%s %s", path,
                 len == 0 ? "is empty" : "holds a token that is too long");
        return -1;
    }
    memcpy(c->token, s, len);
    c->token[len] = '\0';
    return 0;
}

/* An explicit --token-file wins over the environment, which wins over the state dir. */
static void load_token(struct slb_cli *c, const char *token_file, const char *state_dir)
{
    const char *env = getenv("SLBD_TOKEN");
    int rc;
    if (token_file) {
        rc = read_token_file(c, token_file);
    } else if (env && env[0]) {
        rc = snprintf(c->token, sizeof(c->token), "%s", env) < (int)sizeof(c->token) ? 0 : -1;
        if (rc < 0)
            snprintf(c->token_problem, sizeof(c->token_problem), "SLBD_TOKEN is too long");
    } else {
        char path[4096];
        snprintf(path, sizeof(path), "%s/admin.token", state_dir ? state_dir : DEFAULT_STATE_DIR);
        rc = read_token_file(c, path);
        if (rc < 0) {
            size_t n = strlen(c->token_problem);
            snprintf(c->token_problem + n, sizeof(c->token_problem) - n,
                     " (set SLBD_TOKEN, --token-file or --state-dir)");
        }
    }
    if (rc == 0) {
        /* The token goes into a header line: anything but visible ASCII would corrupt it. */
        for (const char *p = c->token; *p; p++) {
            if (*p < 0x21 || *p > 0x7e) {
                snprintf(c->token_problem, sizeof(c->token_problem),
                         "the admin token contains blanks or non-ASCII characters");
                return;
            }
        }
        c->have_token = 1;
    }
}

/* Global flags' values, collected from anywhere on the command line. */
struct globals {
    const char *admin;
    const char *token_file;
    const char *state_dir;
    int json;
    int help;
    int version;
};

static int global_value(const char *name, int argc, char **argv, int *i, const char **out)
{
    size_t n = strlen(name);
    const char *arg = argv[*i];
    if (strncmp(arg, name, n) != 0)
        return 0;
    if (arg[n] == '=') {
        *out = arg + n + 1;
        return 1;
    }
    if (arg[n] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        slb_cli_usage_fail("option '%s' needs a value", name);
        return -1;
    }
    *out = argv[++*i];
    return 1;
}

/* Moves the global flags out of argv into g; what remains (command words and the command's own
 * options, in order) goes to rest. Returns the count or -1 on a usage error. */
static int split_globals(int argc, char **argv, struct globals *g, char **rest)
{
    int n = 0, only_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (only_pos) {
            rest[n++] = argv[i];
            continue;
        }
        if (strcmp(argv[i], "--") == 0) {
            only_pos = 1;
            rest[n++] = argv[i];
            continue;
        }
        int rc;
        if ((rc = global_value("--admin", argc, argv, &i, &g->admin)) != 0 ||
            (rc = global_value("--token-file", argc, argv, &i, &g->token_file)) != 0 ||
            (rc = global_value("--state-dir", argc, argv, &i, &g->state_dir)) != 0) {
            if (rc < 0)
                return -1;
            continue;
        }
        if (strcmp(argv[i], "--json") == 0)
            g->json = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            g->help = 1;
        else if (strcmp(argv[i], "--version") == 0)
            g->version = 1;
        else
            rest[n++] = argv[i];
    }
    rest[n] = NULL;
    return n;
}

static int known_group(const char *group)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].group, group) == 0)
            return 1;
    }
    return 0;
}

/* ---- per-command options and values ---- */

static const struct slb_cli_optspec *find_spec(const struct slb_cli_optspec *spec, const char *arg,
                                               size_t len)
{
    for (; spec && spec->name; spec++) {
        if (strlen(spec->name) == len && strncmp(spec->name, arg, len) == 0)
            return spec;
    }
    return NULL;
}

/* An optional value is taken only when it looks like a number, so `stats --watch` followed by
 * nothing (or by another option) still parses. */
static int looks_numeric(const char *s)
{
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    strtod(s, &end);
    return errno == 0 && *end == '\0' && isdigit((unsigned char)s[0]);
}

int slb_cli_args_parse(struct slb_cli_args *a, int argc, char **argv,
                       const struct slb_cli_optspec *spec)
{
    memset(a, 0, sizeof(*a));
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (only_pos || arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (a->npos == SLB_CLI_MAX_ARGS)
                return slb_cli_usage_fail("too many arguments");
            a->pos[a->npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = 1;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t nlen = eq && arg[1] == '-' ? (size_t)(eq - arg) : strlen(arg);
        const struct slb_cli_optspec *s = find_spec(spec, arg, nlen);
        if (!s)
            return slb_cli_usage_fail("unknown option '%.*s'", (int)nlen, arg);
        if (a->nopt == SLB_CLI_MAX_ARGS)
            return slb_cli_usage_fail("too many options");
        const char *val = NULL;
        if (s->arg == SLB_CLI_ARG_NONE) {
            if (eq && arg[1] == '-')
                return slb_cli_usage_fail("option '%s' takes no value", s->name);
        } else if (eq && arg[1] == '-') {
            val = eq + 1;
        } else if (s->arg == SLB_CLI_ARG_REQUIRED) {
            if (i + 1 >= argc)
                return slb_cli_usage_fail("option '%s' needs a value", s->name);
            val = argv[++i];
        } else if (i + 1 < argc && looks_numeric(argv[i + 1])) {
            val = argv[++i];
        }
        a->opt_name[a->nopt] = s->name;
        a->opt_val[a->nopt] = val;
        a->nopt++;
    }
    return 0;
}

int slb_cli_has(const struct slb_cli_args *a, const char *name)
{
    for (int i = 0; i < a->nopt; i++) {
        if (strcmp(a->opt_name[i], name) == 0)
            return 1;
    }
    return 0;
}

const char *slb_cli_opt(const struct slb_cli_args *a, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i < a->nopt; i++) {
        if (strcmp(a->opt_name[i], name) == 0)
            v = a->opt_val[i];
    }
    return v;
}

int slb_cli_want_pos(const struct slb_cli_args *a, int min, int max)
{
    if (a->npos < min)
        return slb_cli_usage_fail("missing argument");
    if (a->npos > max)
        return slb_cli_usage_fail("unexpected argument '%s'", a->pos[max]);
    return 0;
}

int slb_cli_parse_int(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s || isspace((unsigned char)s[0]))
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int slb_cli_parse_server(const char *s, int allow_weight, char *addr, size_t addrlen, long *port,
                         long *weight)
{
    *weight = -1;
    const char *host = s, *rest;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        host = s + 1;
        hlen = (size_t)(close - host);
        rest = close + 2;
    } else {
        const char *colon = strchr(s, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - s);
        rest = colon + 1;
        /* More than two further colons can only be an unbracketed IPv6 address: ambiguous. */
        const char *c2 = strchr(rest, ':');
        if (c2 && strchr(c2 + 1, ':'))
            return -1;
    }
    if (hlen == 0 || hlen >= addrlen)
        return -1;
    memcpy(addr, host, hlen);
    addr[hlen] = '\0';
    char portbuf[16];
    const char *wpart = strchr(rest, ':');
    size_t plen = wpart ? (size_t)(wpart - rest) : strlen(rest);
    if (plen == 0 || plen >= sizeof(portbuf))
        return -1;
    memcpy(portbuf, rest, plen);
    portbuf[plen] = '\0';
    if (slb_cli_parse_int(portbuf, 1, 65535, port) < 0)
        return -1;
    if (wpart) {
        if (!allow_weight || slb_cli_parse_int(wpart + 1, 0, 100, weight) < 0)
            return -1;
    }
    return 0;
}

int slb_cli_one_of(const char *value, const char *const *choices)
{
    for (; *choices; choices++) {
        if (strcmp(value, *choices) == 0)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    char **rest = calloc((size_t)argc + 1, sizeof(*rest));
    struct globals g = {0};
    struct slb_cli c = {.out = stdout, .err = stderr};
    int rc = SLB_CLI_EXIT_USAGE;
    if (!rest) {
        fprintf(stderr, "slbctl: out of memory\n");
        return SLB_CLI_EXIT_API;
    }
    int n = split_globals(argc, argv, &g, rest);
    if (n < 0) {
        fprintf(stderr, "usage: slbctl [--admin URL] [--token-file FILE] [--state-dir DIR] "
                        "[--json] COMMAND ... ('slbctl help' lists the commands)\n");
        goto out;
    }
    if (g.version) {
        printf("slbctl %s\n", slb_version());
        rc = SLB_CLI_EXIT_OK;
        goto out;
    }
    if (n == 0 || strcmp(rest[0], "help") == 0) {
        const char *group = n > 1 ? canonical_group(rest[1]) : NULL;
        int ok = n > 0 || g.help;
        usage(ok ? stdout : stderr, group && known_group(group) ? group : NULL);
        rc = ok ? SLB_CLI_EXIT_OK : SLB_CLI_EXIT_USAGE;
        goto out;
    }
    const char *group = canonical_group(rest[0]);
    if (!known_group(group)) {
        slb_cli_usage_fail("unknown command '%s'", rest[0]);
        usage(stderr, NULL);
        goto out;
    }
    const struct command *cmd = NULL;
    int words = 1;
    for (size_t i = 0; i < NCOMMANDS && !cmd; i++) {
        if (strcmp(commands[i].group, group) != 0)
            continue;
        if (!commands[i].verb)
            cmd = &commands[i];
        else if (n > 1 && strcmp(commands[i].verb, rest[1]) == 0)
            cmd = &commands[i], words = 2;
    }
    if (g.help) {
        if (cmd && cmd->verb)
            fprintf(stdout, "usage: slbctl %s\n", cmd->usage);
        else
            usage(stdout, group);
        rc = SLB_CLI_EXIT_OK;
        goto out;
    }
    if (!cmd) {
        if (n > 1)
            slb_cli_usage_fail("unknown command '%s %s'", group, rest[1]);
        else
            slb_cli_usage_fail("'%s' needs a subcommand", group);
        usage(stderr, group);
        goto out;
    }
    char err[300];
    c.admin = g.admin ? g.admin : DEFAULT_ADMIN;
    c.json = g.json;
    if (slb_cli_url_parse(c.admin, &c.url, err, sizeof(err)) < 0) {
        slb_cli_usage_fail("%s", err);
        goto out;
    }
    load_token(&c, g.token_file, g.state_dir);
    rc = cmd->fn(&c, n - words, rest + words);
    if (rc == SLB_CLI_EXIT_USAGE)
        fprintf(stderr, "usage: slbctl %s\n", cmd->usage);
    if (fflush(stdout) != 0 && rc == SLB_CLI_EXIT_OK) {
        fprintf(stderr, "slbctl: writing the output: %s\n", strerror(errno));
        rc = SLB_CLI_EXIT_API;
    }
out:
    free(rest);
    return rc;
}
