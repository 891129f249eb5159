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
    const char *help; /* what it does, then its options and their allowed values */
};

#define CERT_ARGS                                                                                  \
    "  --cert FILE        PEM certificate, its chain after it\n"                                   \
    "  --key FILE         PEM private key (server certificates)\n"
#define LISTENER_ARGS                                                                              \
    "  --protocol tcp|http|https\n"                                                                \
    "  --bind ADDR:PORT   address to listen on ([v6]:PORT for IPv6)\n"                             \
    "  --group GROUP      backend group that receives the traffic\n"                               \
    "  --cert ID          certificate id (https); repeat or give ID,ID for several\n"              \
    "  --client-ca ID     CA certificate that client certificates must chain to (none: off)\n"     \
    "  --client-auth required|optional\n"                                                          \
    "  --policy P         tls_cipher_policy_1_0|tls_cipher_policy_1_1|tls_cipher_policy_1_2|\n"    \
    "                     tls_cipher_policy_1_2_strict|tls_cipher_policy_1_2_strict_with_1_3\n"    \
    "  --proxy-protocol v1|v2|none   PROXY protocol header sent to the backends\n"                 \
    "  --from-json FILE|- the listener as JSON (see docs/configuration.md); flags override it\n"
#define GROUP_ARGS                                                                                 \
    "  --scheduler wrr|rr|wlc|sch|tch\n"                                                           \
    "                     weighted round robin, round robin, weighted least connections,\n"        \
    "                     source hash, TCP 4-tuple hash\n"                                         \
    "  --health tcp|http  health check protocol\n"                                                 \
    "  --health-uri URI   path of the http health check\n"                                         \
    "  --from-json FILE|- the group as JSON (see docs/configuration.md); flags override it\n"

static const struct command commands[] = {
    {"cert", "upload", slb_cli_cert_upload,
     "cert upload --name NAME [--type server|ca] --cert FILE [--key FILE]",
     "Upload a certificate (and its key) and print its id.\n"
     "  --name NAME        a label for people\n"
     "  --type server|ca   server (default): presented by https listeners; ca: trusted for\n"
     "                     client certificates\n" CERT_ARGS},
    {"cert", "list", slb_cli_cert_list, "cert list",
     "List the certificates, with the end of their validity in local time and how far away\n"
     "it is.\n"},
    {"cert", "show", slb_cli_cert_show, "cert show ID", "Show one certificate.\n"},
    {"cert", "replace", slb_cli_cert_replace,
     "cert replace ID --cert FILE [--key FILE] [--name NAME]",
     "Replace a certificate in place; listeners using it serve the new one at once.\n" CERT_ARGS
     "  --name NAME        a new label\n"},
    {"cert", "rename", slb_cli_cert_rename, "cert rename ID NAME",
     "Give a certificate a new name; its id, material and the listeners using it stay.\n"},
    {"cert", "delete", slb_cli_cert_delete, "cert delete ID",
     "Delete a certificate that no listener uses.\n"},
    {"cert", "crl", slb_cli_cert_crl, "cert crl ID --crl FILE",
     "Set the revocation lists of a CA certificate.\n"
     "  --crl FILE         PEM CRLs issued by that CA\n"},
    {"listener", "create", slb_cli_listener_create,
     "listener create --name NAME --protocol tcp|http|https --bind ADDR:PORT --group GROUP\n"
     "        [--cert ID]... [--client-ca ID] [--client-auth required|optional] [--policy P]\n"
     "        [--proxy-protocol v1|v2|none] [--from-json FILE|-]",
     "Create a listener.\n"
     "  --name NAME        1-63 of A-Z a-z 0-9 . _ -\n" LISTENER_ARGS},
    {"listener", "list", slb_cli_listener_list, "listener list", "List the listeners.\n"},
    {"listener", "show", slb_cli_listener_show, "listener show NAME", "Show one listener.\n"},
    {"listener", "update", slb_cli_listener_update,
     "listener update NAME [--protocol P] [--bind ADDR:PORT] [--group GROUP] [--cert ID]...\n"
     "        [--client-ca ID|none] [--client-auth required|optional] [--policy P]\n"
     "        [--proxy-protocol v1|v2|none] [--from-json FILE|-]",
     "Change the given fields of a listener, keeping the others.\n" LISTENER_ARGS},
    {"listener", "delete", slb_cli_listener_delete, "listener delete NAME",
     "Delete a listener: it stops accepting at once; HTTP connections end after their\n"
     "current request, tcp connections go on.\n"},
    {"listener", "stop", slb_cli_listener_stop, "listener stop NAME",
     "Stop a listener, keeping its configuration: its socket closes (new connections are\n"
     "refused), connections in progress end as for a delete.\n"},
    {"listener", "start", slb_cli_listener_start, "listener start NAME",
     "Start a stopped listener: its socket opens again.\n"},
    {"group", "create", slb_cli_group_create,
     "group create --name NAME [--scheduler wrr|rr|wlc|sch|tch]\n"
     "        [--server ADDR:PORT[:WEIGHT]]... [--health tcp|http] [--health-uri URI]\n"
     "        [--from-json FILE|-]",
     "Create a backend group.\n"
     "  --name NAME        1-63 of A-Z a-z 0-9 . _ -\n"
     "  --server ADDR:PORT[:WEIGHT]   a backend server, weight 0-100 (default 100); "
     "repeat\n" GROUP_ARGS},
    {"rule", "list", slb_cli_rule_list, "rule list LISTENER",
     "List a listener's forwarding rules, in the order they are tried.\n"},
    {"rule", "add", slb_cli_rule_add, "rule add LISTENER --from-json FILE|- [--position N]",
     "Add a forwarding rule.\n"
     "  --from-json FILE|- the rule as JSON (see docs/configuration.md)\n"
     "  --position N       where it goes, 1 = first (default: last)\n"},
    {"rule", "remove", slb_cli_rule_remove, "rule remove LISTENER RULE",
     "Remove a forwarding rule.\n"},
    {"rule", "move", slb_cli_rule_move, "rule move LISTENER RULE --to N",
     "Move a forwarding rule.\n"
     "  --to N             its new position, 1 = tried first\n"},
    {"group", "list", slb_cli_group_list, "group list", "List the backend groups.\n"},
    {"group", "show", slb_cli_group_show, "group show NAME", "Show one backend group.\n"},
    {"group", "update", slb_cli_group_update,
     "group update NAME [--scheduler wrr|rr|wlc|sch|tch] [--health tcp|http] [--health-uri URI]\n"
     "        [--from-json FILE|-]",
     "Change the given fields of a group, keeping the others (servers: slbctl "
     "server).\n" GROUP_ARGS},
    {"group", "delete", slb_cli_group_delete, "group delete NAME",
     "Delete a group that no listener uses.\n"},
    {"server", "add", slb_cli_server_add, "server add GROUP ADDR:PORT [--weight W]",
     "Add a server to a group.\n"
     "  --weight W         0-100 (default 100; 0 drains the server)\n"},
    {"server", "remove", slb_cli_server_remove, "server remove GROUP ADDR:PORT",
     "Remove a server from a group.\n"},
    {"server", "set-weight", slb_cli_server_set_weight, "server set-weight GROUP ADDR:PORT W",
     "Set a server's weight, 0-100.\n"},
    {"stats", NULL, slb_cli_stats, "stats [--wide] [--cluster] [--watch [SECONDS]]",
     "Traffic and health: a summary per listener and per group, within 100 columns (or the\n"
     "terminal's width).\n"
     "  --wide             every counter, in full tables\n"
     "  --cluster          every node of the cluster added up: the nodes GET /v1/cluster lists\n"
     "                     are asked with the same token (give the nodes one admin token or\n"
     "                     API key); a node that does not answer is named and left out\n"
     "  --watch [SECONDS], -w [SECONDS]   refresh every SECONDS (default 2, 0.1-3600)\n"
     "  --json             the API's JSON (with --watch: one document per line)\n"},
    {"apply", NULL, slb_cli_apply, "apply -f FILE|- [--dry-run]",
     "Replace all listeners and groups (and the settings, when given) with a file's, as one\n"
     "change.\n"
     "  -f FILE|-, --file FILE|-   {\"listeners\": [...], \"groups\": [...], \"settings\": {...}}\n"
     "  --dry-run          only check it; nothing changes\n"},
    {"config", "export", slb_cli_config_export, "config export [FILE]",
     "Save the whole configuration (listeners, groups, settings; certificates aside) as JSON\n"
     "to FILE, or print it.\n"},
    {"config", "import", slb_cli_config_import, "config import FILE|- [--dry-run]",
     "Apply a configuration saved by config export, as one change.\n"
     "  --dry-run          only check it (validation, certificates, bind addresses, TLS);\n"
     "                     nothing changes\n"},
    {"key", "create", slb_cli_key_create,
     "key create NAME --scope read|certificates|operator|admin",
     "Create an API key and print its secret (shown only this once).\n"
     "  --scope S          read: read everything, change nothing; certificates: also manage\n"
     "                     certificates and CRLs; operator: also listeners, groups and\n"
     "                     servers; admin: everything (keys, settings, apply)\n"},
    {"key", "list", slb_cli_key_list, "key list", "List the API keys (never their secrets).\n"},
    {"key", "revoke", slb_cli_key_revoke, "key revoke NAME",
     "Revoke an API key: it stops working at once.\n"},
    {"audit", NULL, slb_cli_audit, "audit [--limit N]",
     "The latest changes made through the API: who, what, and the result.\n"
     "  --limit N          how many, 1-10000 (default 20)\n"},
    {"cluster", "status", slb_cli_cluster_status, "cluster status",
     "The nodes of the cluster (docs/cluster.md): name, admin API, the etcd revision each has\n"
     "applied, when it last renewed its registration, its version and its state.\n"},
    {"cluster", "export", slb_cli_cluster_export, "cluster export DIR",
     "Write the shared state (configuration, certificates with their private keys, ticket\n"
     "keys) to DIR as a state directory a single node can start from (--state-dir DIR).\n"
     "Files are created 0600 in a 0700 directory.\n"},
    {"metrics", NULL, slb_cli_metrics, "metrics", "Print the Prometheus metrics.\n"},
    {"health", NULL, slb_cli_health, "health",
     "Whether the daemon answers, and its configuration generation (needs no token).\n"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Friendly spellings a user is likely to type. */
static const char *canonical_group(const char *word)
{
    static const char *const alias[][2] = {
        {"certs", "cert"},         {"certificate", "cert"}, {"certificates", "cert"},
        {"listeners", "listener"}, {"groups", "group"},     {"rules", "rule"},
        {"servers", "server"},     {"healthz", "health"},   {"keys", "key"},
    };
    for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++) {
        if (strcmp(word, alias[i][0]) == 0)
            return alias[i][1];
    }
    return word;
}

#define GLOBAL_FLAGS                                                                               \
    "  --admin URL        admin API (http://, https:// or unix:PATH), default $SLBD_ADMIN,\n"      \
    "                     else " DEFAULT_ADMIN "\n"                                                \
    "  --cacert FILE      CA certificate(s) to verify an https:// admin API with\n"                \
    "  --token-file FILE  file holding the admin token\n"                                          \
    "  --state-dir DIR    read the token from DIR/admin.token (default " DEFAULT_STATE_DIR ")\n"   \
    "  --json             print the API's JSON instead of tables\n"                                \
    "  --page-size N      fetch lists N items per request (1-1000, default 500)\n"                 \
    "  --help, -h         describe a command and its options\n"                                    \
    "  --version          print slbctl's version and exit\n"

static void usage(FILE *out, const char *group)
{
    fprintf(out, "usage: slbctl [--admin URL] [--cacert FILE] [--token-file FILE] "
                 "[--state-dir DIR] [--json] COMMAND ...\n");
    fprintf(out, group ? "\n" : "\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (!group || strcmp(commands[i].group, group) == 0)
            fprintf(out, "  slbctl %s\n", commands[i].usage);
    }
    if (group) {
        fprintf(out, "\n'slbctl %s VERB --help' describes one of them.\n", group);
        return;
    }
    fprintf(out, "\n'slbctl COMMAND --help' describes a command and its options.\n"
                 "\nglobal flags (before or after the command):\n" GLOBAL_FLAGS
                 "The token comes from --token-file, else $SLBD_TOKEN, else DIR/admin.token.\n"
                 "Exit status: 0 success, 1 refused by the API, 2 usage error, 3 cannot reach "
                 "the API.\n");
}

/* `slbctl COMMAND --help`: the usage line, what the command does, its options. */
static void command_help(FILE *out, const struct command *cmd)
{
    fprintf(out, "usage: slbctl %s\n\n%s", cmd->usage, cmd->help);
    fprintf(out, "\nglobal flags:\n" GLOBAL_FLAGS);
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
    const char *cacert;
    const char *token_file;
    const char *state_dir;
    const char *page_size;
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
            (rc = global_value("--cacert", argc, argv, &i, &g->cacert)) != 0 ||
            (rc = global_value("--token-file", argc, argv, &i, &g->token_file)) != 0 ||
            (rc = global_value("--state-dir", argc, argv, &i, &g->state_dir)) != 0 ||
            (rc = global_value("--page-size", argc, argv, &i, &g->page_size)) != 0) {
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

/* The command of group named by the next word (its verb), or group's single-word command;
 * words (may be NULL) becomes how many words of the line named it. */
static const struct command *find_command(const char *group, int argc, char **argv, int *words)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (strcmp(commands[i].group, group) != 0)
            continue;
        if (!commands[i].verb || (argc > 0 && strcmp(commands[i].verb, argv[0]) == 0)) {
            if (words)
                *words = commands[i].verb ? 2 : 1;
            return &commands[i];
        }
    }
    return NULL;
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

static int args_parse(struct slb_cli_args *a, int argc, char **argv,
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

int slb_cli_parse(struct slb_cli_args *a, int argc, char **argv, const struct slb_cli_optspec *spec,
                  int min_pos, int max_pos)
{
    int rc = args_parse(a, argc, argv, spec);
    if (rc != 0)
        return rc;
    if (a->npos < min_pos)
        return slb_cli_usage_fail("missing argument");
    if (a->npos > max_pos)
        return slb_cli_usage_fail("unexpected argument '%s'", a->pos[max_pos]);
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
        fprintf(stderr,
                "usage: slbctl [--admin URL] [--cacert FILE] [--token-file FILE] [--state-dir DIR] "
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
        const struct command *cmd = group ? find_command(group, n - 2, rest + 2, NULL) : NULL;
        if (cmd && (n > 2 || !cmd->verb))
            command_help(stdout, cmd);
        else
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
    int words = 1;
    const struct command *cmd = find_command(group, n - 1, rest + 1, &words);
    if (g.help) {
        if (cmd)
            command_help(stdout, cmd);
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
    /* Like the token, the address may come from the environment, so a shell (or a script's
     * caller) set up for one daemon needs no flag on every command. */
    const char *env_admin = getenv("SLBD_ADMIN");
    c.admin = g.admin ? g.admin : env_admin && env_admin[0] ? env_admin : DEFAULT_ADMIN;
    c.json = g.json;
    long ps = SLB_CLI_PAGE_SIZE;
    if (g.page_size && slb_cli_parse_int(g.page_size, 1, 1000, &ps) < 0) {
        slb_cli_usage_fail("--page-size: give a number from 1 to 1000");
        goto out;
    }
    c.page_size = (int)ps;
    if (slb_cli_url_parse(c.admin, &c.url, err, sizeof(err)) < 0) {
        slb_cli_usage_fail("%s%s", g.admin ? "" : "SLBD_ADMIN: ", err);
        goto out;
    }
    c.url.cacert = g.cacert;
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
