/* SPDX-License-Identifier: Apache-2.0 */
/* The default `slbctl stats` screen: a line about the daemon, one summary row per listener and
 * a health row per backend group, sized to fit 100 columns, with counts, bytes, durations and
 * dates written for people. Pure rendering (no I/O but the FILE given), so unit tests drive it. */
#include "cli/cli.h"

#include <math.h>
#include <string.h>
#include <time.h>

void slb_cli_human_count(double v, char *buf, size_t size)
{
    static const char *const unit[] = {"", "k", "M", "G", "T", "P"};
    size_t u = 0;
    if (!isfinite(v) || v < 0) {
        snprintf(buf, size, "-");
        return;
    }
    while (v >= 999.5 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
        v /= 1000;
        u++;
    }
    /* One decimal below ten keeps "1.2k" and "0.5" (a rate) meaningful; whole numbers stay
     * whole. */
    if (v < 9.95 && v != floor(v))
        snprintf(buf, size, "%.1f%s", v, unit[u]);
    else
        snprintf(buf, size, "%.0f%s", v, unit[u]);
}

void slb_cli_human_bytes(double v, char *buf, size_t size)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    size_t u = 0;
    if (!isfinite(v) || v < 0) {
        snprintf(buf, size, "-");
        return;
    }
    while (v >= 1023.5 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
        v /= 1024;
        u++;
    }
    if (u > 0 && v < 9.95)
        snprintf(buf, size, "%.1f %s", v, unit[u]);
    else
        snprintf(buf, size, "%.0f %s", v, unit[u]);
}

void slb_cli_human_duration(double seconds, char *buf, size_t size)
{
    if (!isfinite(seconds) || seconds < 0)
        seconds = 0;
    if (seconds > 1e15) /* some 30 million years: keeps the conversion below defined */
        seconds = 1e15;
    unsigned long long s = (unsigned long long)seconds;
    if (s < 60)
        snprintf(buf, size, "%llu s", s);
    else if (s < 3600)
        snprintf(buf, size, "%llum %llus", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, size, "%lluh %llum", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, size, "%llud %lluh", s / 86400, s % 86400 / 3600);
}

void slb_cli_local_time(long long unix_ms, char *buf, size_t size)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    char zone[8];
    if (!localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm) == 0 ||
        strftime(zone, sizeof(zone), "%z", &tm) != 5) {
        snprintf(buf, size, "-");
        return;
    }
    /* ISO 8601 writes the offset as +hh:mm; strftime gives +hhmm. */
    size_t n = strlen(buf);
    snprintf(buf + n, size - n, "%.3s:%.2s", zone, zone + 3);
}

void slb_cli_relative_time(double seconds, char *buf, size_t size)
{
    char d[32]; /* "106751991167300d 15h" at most */
    slb_cli_human_duration(fabs(seconds), d, sizeof(d));
    if (seconds >= 0)
        snprintf(buf, size, "in %s", d);
    else
        snprintf(buf, size, "%s ago", d);
}

int slb_cli_parse_utc(const char *text, long long *unix_ms)
{
    struct tm tm = {0};
    int n = 0;
    if (!text ||
        sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
        n == 0 || text[n] != '\0')
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *unix_ms = (long long)t * 1000;
    return 0;
}

/* A number from a stats object, or -1 when absent (printed as "-"). */
static double num(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : -1;
}

/* Sum of the numbers of an object (handshake failures by reason); -1 when it is not one. */
static double sum_values(const json_t *obj)
{
    if (!json_is_object(obj))
        return -1;
    double total = 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (json_is_number(v))
            total += json_number_value(v);
    }
    return total;
}

static void count_cell(double v, char *buf)
{
    slb_cli_human_count(v, buf, SLB_CLI_CELL);
}

static void bytes_cell(double v, char *buf)
{
    slb_cli_human_bytes(v, buf, SLB_CLI_CELL);
}

/* The daemon line: its facts joined by ", ", wrapped between them to stay within width. */
static void print_header(FILE *out, const json_t *stats, size_t width, long long now_ms)
{
    char part[4][128];
    size_t n = 0;
    snprintf(part[n++], sizeof(part[0]), "slbd: generation %.0f", num(stats, "generation"));
    snprintf(part[n++], sizeof(part[0]), "%.0f worker%s", num(stats, "workers"),
             num(stats, "workers") == 1 ? "" : "s");
    if (num(stats, "connection_cap") >= 0) {
        char cap[32];
        slb_cli_human_count(num(stats, "connection_cap"), cap, sizeof(cap));
        snprintf(part[n++], sizeof(part[0]), "at most %s connections", cap);
    }
    double started = num(stats, "started_ms");
    if (started > 0) {
        char up[32], since[48];
        slb_cli_human_duration(((double)now_ms - started) / 1000, up, sizeof(up));
        slb_cli_local_time((long long)started, since, sizeof(since));
        snprintf(part[n++], sizeof(part[0]), "up %s (since %s)", up, since);
    }
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w = strlen(part[i]);
        if (i > 0 && width > 0 && col + 2 + w > width) {
            fputs(",\n", out);
            col = 0;
        } else if (i > 0) {
            fputs(", ", out);
            col += 2;
        }
        fputs(part[i], out);
        col += w;
    }
    fputc('\n', out);
}

static void listeners_table(FILE *out, const json_t *list, size_t width)
{
    static const char *const headers[] = {"LISTENER", "PROTO", "BIND", "ACTIVE", "CONNS",   "NEW/S",
                                          "REQS",     "5XX",   "IN",   "OUT",    "TLS-FAIL"};
    enum { N = sizeof(headers) / sizeof(headers[0]) };
    struct slb_cli_table *t = slb_cli_table_new(N, headers);
    char cells[N][SLB_CLI_CELL];
    const char *row[N];
    size_t i;
    const json_t *l;
    json_array_foreach(list, i, l)
    {
        const json_t *req = json_object_get(l, "requests");
        const json_t *hs = json_object_get(l, "handshakes");
        slb_cli_value_text(json_object_get(l, "name"), cells[0], SLB_CLI_CELL);
        slb_cli_value_text(json_object_get(l, "protocol"), cells[1], SLB_CLI_CELL);
        slb_cli_value_text(json_object_get(l, "bind"), cells[2], SLB_CLI_CELL);
        count_cell(num(l, "active"), cells[3]);
        count_cell(num(l, "connections"), cells[4]);
        count_cell(num(json_object_get(l, "new_connections_per_s"), "1s"), cells[5]);
        count_cell(req ? num(req, "total") : -1, cells[6]);
        count_cell(req ? num(req, "5xx") : -1, cells[7]);
        bytes_cell(num(json_object_get(l, "wire_bytes"), "in"), cells[8]);
        bytes_cell(num(json_object_get(l, "wire_bytes"), "out"), cells[9]);
        count_cell(hs ? sum_values(json_object_get(hs, "failures")) : -1, cells[10]);
        for (size_t c = 0; c < N; c++)
            row[c] = cells[c];
        slb_cli_table_add(t, row);
    }
    if (t) {
        slb_cli_table_set_clip(t, 2); /* BIND: a long IPv6 address, as a last resort */
        slb_cli_table_print_fit(t, out, width);
    }
    slb_cli_table_free(t);
}

/* One row per group: how many servers are up, the traffic they carry, and which are down and
 * why (the last column, clipped to the width left). */
static void groups_table(FILE *out, const json_t *list, size_t width)
{
    static const char *const headers[] = {"GROUP", "SCHED", "UP",  "ACTIVE", "CONNS",
                                          "REQS",  "FAIL",  "AVG", "DOWN"};
    enum { N = sizeof(headers) / sizeof(headers[0]) };
    struct slb_cli_table *t = slb_cli_table_new(N, headers);
    char cells[N][SLB_CLI_CELL];
    const char *row[N];
    size_t i, j;
    const json_t *g, *s;
    json_array_foreach(list, i, g)
    {
        const json_t *servers = json_object_get(g, "servers");
        double active = 0, conns = 0, reqs = 0, fails = 0, weighted_ms = 0;
        size_t up = 0, n = json_array_size(servers), used = 0;
        cells[8][0] = '\0';
        json_array_foreach(servers, j, s)
        {
            const char *health = json_string_value(json_object_get(s, "health"));
            double r = num(s, "requests"), ms = num(s, "avg_response_ms");
            active += fmax(num(s, "active"), 0);
            conns += fmax(num(s, "connections"), 0);
            reqs += fmax(r, 0);
            fails += fmax(num(s, "failures"), 0);
            if (r > 0 && ms >= 0)
                weighted_ms += r * ms;
            if (health && strcmp(health, "down") != 0) {
                up++;
                continue;
            }
            const char *addr = json_string_value(json_object_get(s, "address"));
            /* Ejected by passive checks, the server may well pass its active ones. */
            const char *reason = json_string_value(json_object_get(s, "down_reason"));
            const char *why = reason && strcmp(reason, "passive") == 0
                                  ? "ejected by passive checks"
                                  : json_string_value(json_object_get(s, "last_check"));
            int v6 = addr && strchr(addr, ':');
            int w = snprintf(cells[8] + used, SLB_CLI_CELL - used, "%s%s%s%s:%.0f%s%s%s",
                             used ? ", " : "", v6 ? "[" : "", addr ? addr : "?", v6 ? "]" : "",
                             num(s, "port"), why && *why ? " (" : "", why && *why ? why : "",
                             why && *why ? ")" : "");
            if (w > 0)
                used = used + (size_t)w < SLB_CLI_CELL ? used + (size_t)w : SLB_CLI_CELL - 1;
        }
        slb_cli_value_text(json_object_get(g, "name"), cells[0], SLB_CLI_CELL);
        slb_cli_value_text(json_object_get(g, "scheduler"), cells[1], SLB_CLI_CELL);
        snprintf(cells[2], SLB_CLI_CELL, "%zu/%zu", up, n);
        count_cell(active, cells[3]);
        count_cell(conns, cells[4]);
        count_cell(reqs, cells[5]);
        count_cell(fails, cells[6]);
        if (reqs > 0)
            snprintf(cells[7], SLB_CLI_CELL, "%.*f ms", weighted_ms / reqs < 10 ? 1 : 0,
                     weighted_ms / reqs);
        else
            snprintf(cells[7], SLB_CLI_CELL, "-");
        for (size_t c = 0; c < N; c++)
            row[c] = cells[c];
        slb_cli_table_add(t, row);
    }
    if (t) {
        slb_cli_table_set_clip(t, 8);
        slb_cli_table_print_fit(t, out, width);
    }
    slb_cli_table_free(t);
}

void slb_cli_render_stats(FILE *out, const json_t *stats, size_t width, long long now_ms)
{
    print_header(out, stats, width, now_ms);
    const json_t *listeners = json_object_get(stats, "listeners");
    const json_t *groups = json_object_get(stats, "groups");
    fputc('\n', out);
    if (json_array_size(listeners) > 0)
        listeners_table(out, listeners, width);
    else
        fprintf(out, "no listeners\n");
    fputc('\n', out);
    if (json_array_size(groups) > 0)
        groups_table(out, groups, width);
    else
        fprintf(out, "no backend groups\n");
}

void slb_cli_render_stats_wide(FILE *out, const json_t *stats, size_t width, long long now_ms)
{
    print_header(out, stats, width, now_ms);
    /* The header said these in words; every other field follows as the API names it. */
    json_t *rest = json_copy((json_t *)stats);
    if (!rest)
        return;
    json_object_del(rest, "generation");
    json_object_del(rest, "workers");
    json_object_del(rest, "started_ms");
    json_object_del(rest, "connection_cap");
    fputc('\n', out);
    slb_cli_render_object(out, rest, width);
    json_decref(rest);
}
