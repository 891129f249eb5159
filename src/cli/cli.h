/* SPDX-License-Identifier: Apache-2.0 */
/* slbctl's internal interfaces: the HTTP client, the API call wrapper, option parsing, table
 * rendering and the command entry points shared by the files of src/cli. */
#ifndef SLB_CLI_CLI_H
#define SLB_CLI_CLI_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

/* Exit statuses are part of the CLI contract: scripts tell an API refusal from a usage
 * mistake from an unreachable daemon. */
enum {
    SLB_CLI_EXIT_OK = 0,
    SLB_CLI_EXIT_API = 1,   /* the API (or a local file) refused the operation */
    SLB_CLI_EXIT_USAGE = 2, /* bad command line; the usage text follows */
    SLB_CLI_EXIT_CONN = 3,  /* could not talk to the admin API */
};

#define SLB_CLI_CONNECT_TIMEOUT_MS 10000
#define SLB_CLI_IO_TIMEOUT_MS 60000
#define SLB_CLI_MAX_BODY (64u << 20)
#define SLB_CLI_MAX_ARGS 64

/* ---- client.c: a minimal HTTP/1.1 client (one request per connection) ---- */

/* A parsed admin URL: http://, https:// or unix:PATH. base is a path prefix without a trailing
 * slash ("" usually). */
struct slb_cli_url {
    char host[256]; /* without brackets for IPv6 */
    char port[8];
    char base[256];
    char unix_path[108]; /* unix:PATH: the socket; host and port are then unused */
    int tls;             /* https:// */
    const char *cacert;  /* https: the CA file to verify the daemon with (NULL: system's) */
};

/* A complete response. body is NUL-terminated and malloc'd (never NULL after a successful
 * parse); the caller releases it with slb_cli_resp_deinit(). */
struct slb_cli_resp {
    int status;
    char reason[64];
    char content_type[128];
    char etag[80]; /* the ETag header, "" when absent */
    char *body;
    size_t body_len;
};

/* Parse "http[s]://host[:port][/base]" (the scheme may be omitted) or "unix:PATH"; 0 or -1
 * with err filled. */
int slb_cli_url_parse(const char *text, struct slb_cli_url *url, char *err, size_t errlen);

/* Parse a response accumulated in buf[0..len). eof tells whether the peer has closed, which
 * ends a body that has neither Content-Length nor chunked framing. no_body is set for HEAD.
 * Returns 1 when complete (resp filled), 0 when more bytes are needed, -1 when malformed
 * (err filled). Pure: no I/O, so it is tested on its own. */
int slb_cli_http_parse(const char *buf, size_t len, int eof, int no_body, struct slb_cli_resp *resp,
                       char *err, size_t errlen);

/* Send one request and read the whole response. token may be NULL (no Authorization header);
 * body and if_match (sent as If-Match) may be NULL. Returns 0, or a negative errno /
 * SLB_EPROTO with err filled. */
int slb_cli_http_request(const struct slb_cli_url *url, const char *method, const char *path,
                         const char *token, const char *if_match, const char *body, size_t body_len,
                         struct slb_cli_resp *resp, char *err, size_t errlen);
void slb_cli_resp_deinit(struct slb_cli_resp *resp);

/* ---- api.c: calls, error reporting, output, local files ---- */

/* Everything a command needs about the invocation; lives for the whole run in main(). */
struct slb_cli {
    const char *admin; /* the URL as the user gave it, for messages */
    struct slb_cli_url url;
    char token[512];
    int have_token;
    char token_problem[512]; /* why there is no token, for the message */
    int json;                /* --json: print the API's JSON instead of tables */
    FILE *out;
    FILE *err; /* where API failures are reported: stderr, or the --watch screen */
    /* Revisions for read-modify-write: slb_cli_call stores the ETag of each 2xx answer in
     * etag, and sends if_match (when not empty) as If-Match. */
    char etag[80];
    char if_match[80];
    int status;    /* the HTTP status of the last answer (0: none) */
    int quiet_412; /* a 412 answer is not reported (the caller reads again and retries) */
    int page_size; /* --page-size: items per request of a list (0: SLB_CLI_PAGE_SIZE) */
};

/* Items per request when slbctl pages through a list (the API takes 1..1000). */
#define SLB_CLI_PAGE_SIZE 500

/* How often an update that read a resource, changed it and put it back (with If-Match) starts
 * over when someone else changed the resource in between. */
#define SLB_CLI_UPDATE_TRIES 5

/* Call the API with an optional JSON body. On 2xx returns 0 and stores the decoded body in
 * *out (NULL for an empty body; out may be NULL). Otherwise prints the problem to c->err and
 * returns the exit status (SLB_CLI_EXIT_API or SLB_CLI_EXIT_CONN). */
int slb_cli_call(struct slb_cli *c, const char *method, const char *path, json_t *body,
                 json_t **out);
/* Like slb_cli_call but keeps the raw response (for /metrics and /healthz). auth=0 sends no
 * token and does not require one. */
int slb_cli_call_raw(struct slb_cli *c, const char *method, const char *path, int auth,
                     struct slb_cli_resp *resp);
/* Print an API error response ("slbctl: message (code)") and return SLB_CLI_EXIT_API. */
int slb_cli_report_error(const struct slb_cli *c, const struct slb_cli_resp *resp);

/* "/v1/" + a percent-encoded path segment + optional suffix; -1 when it does not fit. */
int slb_cli_path(char *buf, size_t size, const char *prefix, const char *segment,
                 const char *suffix);
/* Read-modify-write of one resource: GET prefix+id, edit(obj, arg) changes it (0, or an exit
 * status to stop with), PUT it back with If-Match: the ETag of what was read. When the resource
 * changed in between (412), start over with what is stored now, up to SLB_CLI_UPDATE_TRIES
 * times. On success *out (may be NULL) is the stored resource. */
int slb_cli_update(struct slb_cli *c, const char *prefix, const char *id,
                   int (*edit)(json_t *obj, void *arg), void *arg, json_t **out);
/* Pretty-print JSON (two-space indent, keys in the API's order) with a final newline. */
void slb_cli_print_json(FILE *out, const json_t *v);
/* Read a whole file ("-" = stdin) into a NUL-terminated buffer; 0 or -1 with a message
 * already printed. */
int slb_cli_read_file(const char *path, char **data, size_t *len);
/* Read a JSON object from a file ("-" = stdin); NULL with a message printed. */
json_t *slb_cli_read_json_object(const char *path);
/* "slbctl: " + message on stderr; returns SLB_CLI_EXIT_API for `return slb_cli_fail(...)`. */
int slb_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same with SLB_CLI_EXIT_USAGE; main() then prints the command's usage. */
int slb_cli_usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- main.c: per-command option parsing and value parsing ---- */

enum { SLB_CLI_ARG_NONE, SLB_CLI_ARG_REQUIRED, SLB_CLI_ARG_OPTIONAL_NUMBER };

/* One accepted option, spelled as typed ("--name", "-f"). Arrays end with a NULL name. */
struct slb_cli_optspec {
    const char *name;
    int arg;
};

/* Options and positionals in command-line order; values point into argv. */
struct slb_cli_args {
    int npos;
    const char *pos[SLB_CLI_MAX_ARGS];
    int nopt;
    const char *opt_name[SLB_CLI_MAX_ARGS];
    const char *opt_val[SLB_CLI_MAX_ARGS]; /* NULL for a flag or an omitted optional value */
};

/* Every command's prologue: parse argv against spec (NULL: no options), then require between
 * min_pos and max_pos positional arguments. Returns 0, or SLB_CLI_EXIT_USAGE with the problem
 * printed (an unknown or malformed option first, then a missing or unexpected argument). */
int slb_cli_parse(struct slb_cli_args *a, int argc, char **argv, const struct slb_cli_optspec *spec,
                  int min_pos, int max_pos);
/* Whether an option was given at all. */
int slb_cli_has(const struct slb_cli_args *a, const char *name);
/* The last value given for an option, or NULL. */
const char *slb_cli_opt(const struct slb_cli_args *a, const char *name);
/* Integer in [lo, hi]; 0 or -1. */
int slb_cli_parse_int(const char *s, long lo, long hi, long *out);
/* "ADDR:PORT[:WEIGHT]" with "[v6]" brackets; weight stays -1 when absent or not allowed. */
int slb_cli_parse_server(const char *s, int allow_weight, char *addr, size_t addrlen, long *port,
                         long *weight);
/* Whether value is one of the NULL-terminated choices. */
int slb_cli_one_of(const char *value, const char *const *choices);

/* ---- table.c: aligned text tables ---- */

struct slb_cli_table;

/* A table with ncols columns and the given headers (copied). NULL on allocation failure. */
struct slb_cli_table *slb_cli_table_new(size_t ncols, const char *const *headers);
/* Append a row of ncols cells (copied; NULL prints as "-"). 0 or -1. */
int slb_cli_table_add(struct slb_cli_table *t, const char *const *cells);
size_t slb_cli_table_rows(const struct slb_cli_table *t);
/* Width in columns of the widest printed line. */
size_t slb_cli_table_width(const struct slb_cli_table *t);
/* Rows become columns: the first column's cells become the headers, under first_header. */
struct slb_cli_table *slb_cli_table_transpose(const struct slb_cli_table *t,
                                              const char *first_header);
/* Columns separated by two spaces, padded to the widest cell; no trailing blanks. */
void slb_cli_table_print(const struct slb_cli_table *t, FILE *out);
/* The same within width columns (0: unlimited): a first-column cell too long for the space
 * left goes on a line of its own with its row below it; then the widest of the columns marked
 * with _set_clip are narrowed (down to their header), their cells clipped and ended by "…".
 * Numbers are never clipped: a line that cannot fit so stays too long. */
void slb_cli_table_print_fit(const struct slb_cli_table *t, FILE *out, size_t width);
/* Lets slb_cli_table_print_fit clip column col (text that stays useful when cut short). */
void slb_cli_table_set_clip(struct slb_cli_table *t, size_t col);
void slb_cli_table_free(struct slb_cli_table *t);
/* Display width of a UTF-8 string (code points; control characters print as '?'). */
size_t slb_cli_text_width(const char *s);

/* ---- table.c: JSON resources and reports as text ---- */

/* A scalar or array of scalars as a cell: strings raw (but the API's UTC times in local time,
 * ISO 8601), null "-", arrays joined by ", ". */
void slb_cli_value_text(const json_t *v, char *buf, size_t size);
/* A resource as aligned "key: value" lines (nested objects flattened with dots; a time is
 * followed by how far away it is: "(in 89d 23h)"); arrays and maps of objects follow as
 * titled tables. width>0 lets over-wide tables turn sideways. */
void slb_cli_render_object(FILE *out, const json_t *obj, size_t width);
/* Terminal width for stdout: the tty's, else $COLUMNS, else 0 (unlimited). */
size_t slb_cli_term_width(void);

/* ---- summary.c: numbers for people, the default stats screen ---- */

/* The default width of `stats` and other summaries when the terminal's is unknown. */
#define SLB_CLI_SUMMARY_WIDTH 100

/* 999, 1.2k, 12k, 3.4M ...; a fraction below 10 keeps one decimal (rates); "-" if negative. */
void slb_cli_human_count(double v, char *buf, size_t size);
/* 157 B, 1.2 KiB, 34 MiB ...; "-" if negative. */
void slb_cli_human_bytes(double v, char *buf, size_t size);
/* 12 s, 5m 3s, 4h 10m, 3d 4h: the two largest units. */
void slb_cli_human_duration(double seconds, char *buf, size_t size);
/* Unix milliseconds as ISO 8601 local time with its offset: 2026-12-07T18:33:22+01:00. */
void slb_cli_local_time(long long unix_ms, char *buf, size_t size);
/* A moment relative to now, seconds later (>= 0) or earlier: "in 89d 23h", "12 s ago". */
void slb_cli_relative_time(double seconds, char *buf, size_t size);
/* The API's UTC times, "2027-03-07T17:39:16Z", as Unix milliseconds; 0 or -1. */
int slb_cli_parse_utc(const char *text, long long *unix_ms);
/* A /v1/stats document as the summary screen: the daemon line, one row per listener, one
 * health row per group, within width columns; now_ms (Unix ms) dates the uptime. */
void slb_cli_render_stats(FILE *out, const json_t *stats, size_t width, long long now_ms);
/* `stats --wide`: the same daemon line, then every field in full tables (wider than width
 * when they must be; width only decides when a table turns sideways). */
void slb_cli_render_stats_wide(FILE *out, const json_t *stats, size_t width, long long now_ms);

/* ---- commands: each takes the words after the verb, returns an exit status ---- */

typedef int (*slb_cli_cmd_fn)(struct slb_cli *c, int argc, char **argv);

int slb_cli_cert_upload(struct slb_cli *c, int argc, char **argv);
int slb_cli_cert_list(struct slb_cli *c, int argc, char **argv);
int slb_cli_cert_show(struct slb_cli *c, int argc, char **argv);
int slb_cli_cert_replace(struct slb_cli *c, int argc, char **argv);
int slb_cli_cert_delete(struct slb_cli *c, int argc, char **argv);
int slb_cli_cert_crl(struct slb_cli *c, int argc, char **argv);
int slb_cli_cert_rename(struct slb_cli *c, int argc, char **argv);

int slb_cli_key_create(struct slb_cli *c, int argc, char **argv);
int slb_cli_key_list(struct slb_cli *c, int argc, char **argv);
int slb_cli_key_revoke(struct slb_cli *c, int argc, char **argv);
int slb_cli_audit(struct slb_cli *c, int argc, char **argv);

int slb_cli_listener_create(struct slb_cli *c, int argc, char **argv);
int slb_cli_listener_list(struct slb_cli *c, int argc, char **argv);
int slb_cli_listener_show(struct slb_cli *c, int argc, char **argv);
int slb_cli_listener_update(struct slb_cli *c, int argc, char **argv);
int slb_cli_listener_delete(struct slb_cli *c, int argc, char **argv);
int slb_cli_listener_start(struct slb_cli *c, int argc, char **argv);
int slb_cli_listener_stop(struct slb_cli *c, int argc, char **argv);

int slb_cli_group_create(struct slb_cli *c, int argc, char **argv);
int slb_cli_group_list(struct slb_cli *c, int argc, char **argv);
int slb_cli_group_show(struct slb_cli *c, int argc, char **argv);
int slb_cli_group_update(struct slb_cli *c, int argc, char **argv);
int slb_cli_group_delete(struct slb_cli *c, int argc, char **argv);

int slb_cli_rule_list(struct slb_cli *c, int argc, char **argv);
int slb_cli_rule_add(struct slb_cli *c, int argc, char **argv);
int slb_cli_rule_remove(struct slb_cli *c, int argc, char **argv);
int slb_cli_rule_move(struct slb_cli *c, int argc, char **argv);

int slb_cli_cluster_status(struct slb_cli *c, int argc, char **argv);
int slb_cli_cluster_export(struct slb_cli *c, int argc, char **argv);
/* `stats --cluster`: GET /v1/cluster, then /v1/stats of every registered node (same token,
 * scheme and CA), added up into one document of /v1/stats's shape plus "scope": "cluster"
 * and "nodes": [{"name", "admin", "ok"[, "error"]}]. A node that does not answer is reported
 * on c->err and left out. 0 with *out, or an exit status. */
int slb_cli_cluster_stats(struct slb_cli *c, json_t **out);

int slb_cli_server_add(struct slb_cli *c, int argc, char **argv);
int slb_cli_server_remove(struct slb_cli *c, int argc, char **argv);
int slb_cli_server_set_weight(struct slb_cli *c, int argc, char **argv);

int slb_cli_stats(struct slb_cli *c, int argc, char **argv);
int slb_cli_apply(struct slb_cli *c, int argc, char **argv);
int slb_cli_config_export(struct slb_cli *c, int argc, char **argv);
int slb_cli_config_import(struct slb_cli *c, int argc, char **argv);
int slb_cli_metrics(struct slb_cli *c, int argc, char **argv);
int slb_cli_health(struct slb_cli *c, int argc, char **argv);

/* Shared by the resource commands (api.c): show one resource, list with columns, delete,
 * and print a created/updated object. */
#define SLB_CLI_CELL 512
/* Fills one table row's cells (ncols buffers of SLB_CLI_CELL bytes) from a list item. */
typedef void (*slb_cli_row_fn)(const json_t *item, char (*cells)[SLB_CLI_CELL]);
/* GET path, take the array under key (or a bare array) and print it as a table with the given
 * headers, or the JSON as received with --json. */
int slb_cli_list(struct slb_cli *c, const char *path, const char *key, size_t ncols,
                 const char *const *headers, slb_cli_row_fn row);
/* Fetch one resource (an object) for a read-modify-write; the exit status or 0. */
int slb_cli_get_object(struct slb_cli *c, const char *collection, const char *id, json_t **out);
int slb_cli_show_resource(struct slb_cli *c, const char *collection, const char *id);
/* Send body (NULL: none; not consumed) with method to path and print the resource answered;
 * the exit status or 0. */
int slb_cli_send_resource(struct slb_cli *c, const char *method, const char *path, json_t *body);
int slb_cli_delete_resource(struct slb_cli *c, const char *collection, const char *kind,
                            const char *id);
void slb_cli_print_resource(struct slb_cli *c, const json_t *obj);

#endif
