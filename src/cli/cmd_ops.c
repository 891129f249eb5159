/* SPDX-License-Identifier: Apache-2.0 */
/* slbctl's operational commands: stats (once or refreshed with --watch), apply, export and
 * import of a whole configuration, raw Prometheus metrics and the daemon's health. */
#include "cli/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_watch;

static void on_interrupt(int sig)
{
    (void)sig;
    stop_watch = 1;
}

/* Sleeps up to seconds, returning early once Ctrl-C was pressed. */
static void watch_sleep(double seconds)
{
    struct timespec ts = {.tv_sec = (time_t)seconds,
                          .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (!stop_watch && nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* `stats --cluster`: every node's counters added up (slb_cli_cluster_stats). */
static int stats_cluster;

/* How `stats` lays out what it fetched. */
enum stats_view { STATS_SUMMARY, STATS_WIDE, STATS_JSON_LINE };

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One stats screen into out; returns the exit status of the fetch. */
static int stats_once(struct slb_cli *c, FILE *out, enum stats_view view)
{
    json_t *doc;
    FILE *saved = c->out;
    int rc = stats_cluster ? slb_cli_cluster_stats(c, &doc)
                           : slb_cli_call(c, "GET", "/v1/stats", NULL, &doc);
    if (rc != 0)
        return rc;
    c->out = out;
    if (!doc)
        fprintf(out, c->json ? "{}\n" : "(no statistics)\n");
    else if (c->json && view == STATS_JSON_LINE) {
        json_dumpf(doc, out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
        fputc('\n', out);
    } else if (c->json || !json_is_object(doc)) {
        slb_cli_print_resource(c, doc);
    } else if (view == STATS_WIDE) {
        slb_cli_render_stats_wide(out, doc, slb_cli_term_width(), now_ms());
    } else {
        size_t width = slb_cli_term_width();
        slb_cli_render_stats(out, doc, width ? width : SLB_CLI_SUMMARY_WIDTH, now_ms());
    }
    c->out = saved;
    json_decref(doc);
    return 0;
}

int slb_cli_stats(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {{"--watch", SLB_CLI_ARG_OPTIONAL_NUMBER},
                                                  {"-w", SLB_CLI_ARG_OPTIONAL_NUMBER},
                                                  {"--wide", SLB_CLI_ARG_NONE},
                                                  {"--cluster", SLB_CLI_ARG_NONE},
                                                  {NULL, 0}};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 0, 0);
    if (rc != 0)
        return rc;
    enum stats_view view = slb_cli_has(&a, "--wide") ? STATS_WIDE : STATS_SUMMARY;
    stats_cluster = slb_cli_has(&a, "--cluster");
    int watch = slb_cli_has(&a, "--watch") || slb_cli_has(&a, "-w");
    if (!watch)
        return stats_once(c, c->out, view);
    const char *v = slb_cli_opt(&a, "--watch");
    if (!v)
        v = slb_cli_opt(&a, "-w");
    double interval = 2.0;
    if (v) {
        char *end;
        interval = strtod(v, &end);
        if (*end != '\0' || !(interval >= 0.1 && interval <= 3600))
            return slb_cli_usage_fail("--watch wants seconds between 0.1 and 3600, not '%s'", v);
    }
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!stop_watch) {
        if (c->json) {
            /* For scripts: one compact document per line, no screen control. */
            stats_once(c, c->out, STATS_JSON_LINE);
            fflush(c->out);
        } else {
            /* Render off-screen first so the refresh does not flicker. */
            char *buf = NULL;
            size_t len = 0;
            FILE *mem = open_memstream(&buf, &len);
            if (!mem)
                return slb_cli_fail("out of memory");
            char stamp[64];
            slb_cli_local_time(now_ms(), stamp, sizeof(stamp));
            fprintf(mem, "slbctl stats  %s  every %gs  (Ctrl-C to stop)\n\n", c->admin, interval);
            /* A failure goes on the screen (stderr would be wiped by the next refresh) and
             * the loop carries on like watch(1), so a daemon restart does not end it. */
            c->err = mem;
            stats_once(c, mem, view);
            c->err = stderr;
            fclose(mem);
            fputs("\033[H\033[2J", c->out);
            fprintf(c->out, "%s", buf ? buf : "");
            fprintf(c->out, "\nupdated %s\n", stamp);
            fflush(c->out);
            free(buf);
        }
        watch_sleep(interval);
    }
    return SLB_CLI_EXIT_OK;
}

/* Sends a whole configuration file to POST /v1/apply (with dry_run=true: only checked, and
 * the daemon answers what it would store). */
static int apply_file(struct slb_cli *c, const char *file, int dry_run)
{
    json_t *doc = slb_cli_read_json_object(file);
    if (!doc)
        return SLB_CLI_EXIT_API;
    /* apply replaces everything: a file without one of the arrays is far more likely a mistake
     * than a wish to delete all listeners or groups, so that must be spelled out as []. */
    json_t *listeners = json_object_get(doc, "listeners");
    json_t *groups = json_object_get(doc, "groups");
    const char *name = strcmp(file, "-") == 0 ? "standard input" : file;
    int rc;
    if (!json_is_array(listeners) || !json_is_array(groups)) {
        rc = slb_cli_fail("%s: needs a \"%s\" array (use [] for none)", name,
                          !json_is_array(listeners) ? "listeners" : "groups");
        json_decref(doc);
        return rc;
    }
    json_t *body = json_object();
    json_object_set(body, "listeners", listeners);
    json_object_set(body, "groups", groups);
    /* A whole config.json also carries settings; the daemon applies them in the same change.
     * Any other top-level key is left out rather than refused, so the file may hold notes. */
    if (json_is_object(json_object_get(doc, "settings")))
        json_object_set(body, "settings", json_object_get(doc, "settings"));
    json_t *out;
    rc = slb_cli_call(c, "POST", dry_run ? "/v1/apply?dry_run=true" : "/v1/apply", body, &out);
    if (rc == 0 && c->json) {
        slb_cli_print_json(c->out, out ? out : body);
    } else if (rc == 0) {
        /* Prefer the daemon's own account of what is (or would be) in force. */
        json_t *l = json_object_get(out, "listeners"), *g = json_object_get(out, "groups");
        size_t nl = json_is_array(l) ? json_array_size(l) : json_array_size(listeners);
        size_t ng = json_is_array(g) ? json_array_size(g) : json_array_size(groups);
        fprintf(c->out, "%s %zu listener%s and %zu group%s%s\n",
                dry_run ? "valid: would apply" : "applied", nl, nl == 1 ? "" : "s", ng,
                ng == 1 ? "" : "s", dry_run ? " (dry run, nothing changed)" : "");
    }
    json_decref(out);
    json_decref(body);
    json_decref(doc);
    return rc;
}

int slb_cli_apply(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {
        {"-f", SLB_CLI_ARG_REQUIRED},
        {"--file", SLB_CLI_ARG_REQUIRED},
        {"--dry-run", SLB_CLI_ARG_NONE},
        {NULL, 0},
    };
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 0, 0);
    if (rc != 0)
        return rc;
    const char *file = slb_cli_opt(&a, "-f");
    if (!file)
        file = slb_cli_opt(&a, "--file");
    if (!file)
        return slb_cli_usage_fail("missing -f FILE");
    return apply_file(c, file, slb_cli_has(&a, "--dry-run"));
}

int slb_cli_config_import(struct slb_cli *c, int argc, char **argv)
{
    static const struct slb_cli_optspec spec[] = {{"--dry-run", SLB_CLI_ARG_NONE}, {NULL, 0}};
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, spec, 1, 1);
    if (rc != 0)
        return rc;
    return apply_file(c, a.pos[0], slb_cli_has(&a, "--dry-run"));
}

/* Writes text and a newline to path through a temporary file renamed over it, so an interrupted
 * export never leaves half a configuration where a whole one was. */
static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return slb_cli_fail("%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return slb_cli_fail("cannot write %s: %s", path, strerror(errno));
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    int err = errno;
    ok &= fclose(f) == 0;
    if (ok && rename(tmp, path) == 0)
        return 0;
    err = ok ? errno : err;
    unlink(tmp);
    return slb_cli_fail("cannot write %s: %s", path, strerror(err));
}

int slb_cli_config_export(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 1);
    if (rc != 0)
        return rc;
    const char *path = a.npos == 1 && strcmp(a.pos[0], "-") != 0 ? a.pos[0] : NULL;
    json_t *doc;
    rc = slb_cli_call(c, "GET", "/v1/config", NULL, &doc);
    if (rc != 0)
        return rc;
    if (!json_is_object(doc)) {
        json_decref(doc);
        return slb_cli_fail("bad response from %s: the configuration is not a JSON object",
                            c->admin);
    }
    if (!path) {
        slb_cli_print_json(c->out, doc);
    } else {
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = text ? write_file(path, text) : slb_cli_fail("out of memory");
        free(text);
        if (rc == 0 && !c->json) {
            size_t nl = json_array_size(json_object_get(doc, "listeners"));
            size_t ng = json_array_size(json_object_get(doc, "groups"));
            fprintf(c->out, "exported %zu listener%s, %zu group%s and the settings to %s\n", nl,
                    nl == 1 ? "" : "s", ng, ng == 1 ? "" : "s", path);
        }
    }
    json_decref(doc);
    return rc;
}

/* Prints a text body as received, ending with a newline. */
static void print_body(FILE *out, const struct slb_cli_resp *resp)
{
    fwrite(resp->body, 1, resp->body_len, out);
    if (resp->body_len > 0 && resp->body[resp->body_len - 1] != '\n')
        fputc('\n', out);
}

int slb_cli_metrics(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    if (rc != 0)
        return rc;
    struct slb_cli_resp resp;
    rc = slb_cli_call_raw(c, "GET", "/metrics", 1, &resp);
    if (rc != 0)
        return rc;
    if (resp.status >= 200 && resp.status <= 299)
        print_body(c->out, &resp);
    else
        rc = slb_cli_report_error(c, &resp);
    slb_cli_resp_deinit(&resp);
    return rc;
}

int slb_cli_health(struct slb_cli *c, int argc, char **argv)
{
    struct slb_cli_args a;
    int rc = slb_cli_parse(&a, argc, argv, NULL, 0, 0);
    if (rc != 0)
        return rc;
    struct slb_cli_resp resp;
    rc = slb_cli_call_raw(c, "GET", "/healthz", 0, &resp);
    if (rc != 0)
        return rc;
    if (resp.status < 200 || resp.status > 299) {
        rc = slb_cli_report_error(c, &resp);
        slb_cli_resp_deinit(&resp);
        return rc;
    }
    json_t *doc =
        resp.body_len ? json_loadb(resp.body, resp.body_len, JSON_DECODE_ANY, NULL) : NULL;
    if (doc)
        slb_cli_print_resource(c, doc);
    else if (resp.body_len)
        print_body(c->out, &resp);
    else
        fprintf(c->out, c->json ? "{}\n" : "ok\n");
    json_decref(doc);
    slb_cli_resp_deinit(&resp);
    return SLB_CLI_EXIT_OK;
}
