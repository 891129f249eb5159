/* SPDX-License-Identifier: Apache-2.0 */
/* Adding up nodes' /v1/stats answers (stats_sum.h). */
#include "metrics/stats_sum.h"

#include <string.h>

/* Two array items stand for the same thing: same "name" (listeners, groups, rules), else
 * same "address" and "port" (servers). */
static int same_item(const json_t *a, const json_t *b)
{
    const char *na = json_string_value(json_object_get(a, "name"));
    const char *nb = json_string_value(json_object_get(b, "name"));
    if (na || nb)
        return na && nb && strcmp(na, nb) == 0;
    const char *aa = json_string_value(json_object_get(a, "address"));
    const char *ab = json_string_value(json_object_get(b, "address"));
    return aa && ab && strcmp(aa, ab) == 0 &&
           json_integer_value(json_object_get(a, "port")) ==
               json_integer_value(json_object_get(b, "port"));
}

static void merge_value(json_t *dst_parent, const char *key, json_t *dst, json_t *src,
                        double dst_requests, double src_requests);

static void merge_object(json_t *dst, json_t *src)
{
    /* Read before the counters are added up: the weights of a mean. */
    double rd = json_number_value(json_object_get(dst, "requests"));
    double rs = json_number_value(json_object_get(src, "requests"));
    const char *key;
    json_t *sv;
    json_object_foreach(src, key, sv)
    {
        json_t *dv = json_object_get(dst, key);
        if (!dv)
            json_object_set_new(dst, key, json_deep_copy(sv));
        else
            merge_value(dst, key, dv, sv, rd, rs);
    }
}

static void merge_array(json_t *dst, json_t *src)
{
    size_t i;
    json_t *sv;
    json_array_foreach(src, i, sv)
    {
        if (!json_is_object(sv))
            continue;
        json_t *match = NULL;
        size_t j;
        json_t *dv;
        json_array_foreach(dst, j, dv)
        {
            if (json_is_object(dv) && same_item(dv, sv)) {
                match = dv;
                break;
            }
        }
        if (match)
            merge_object(match, sv);
        else
            json_array_append_new(dst, json_deep_copy(sv));
    }
}

/* Counters and gauges add up; identities, settings and the configuration's generation stay
 * as the first node has them; a server is "down" when it is down for any node; a mean
 * response time is weighted by each node's requests. */
static void merge_value(json_t *parent, const char *key, json_t *dst, json_t *src, double rd,
                        double rs)
{
    static const char *const keep[] = {"generation", "port", "weight", "bind", NULL};
    for (const char *const *k = keep; *k; k++)
        if (strcmp(key, *k) == 0)
            return;
    if (json_is_object(dst) && json_is_object(src)) {
        merge_object(dst, src);
    } else if (json_is_array(dst) && json_is_array(src)) {
        merge_array(dst, src);
    } else if (json_is_number(dst) && json_is_number(src)) {
        double a = json_number_value(dst), b = json_number_value(src);
        if (strcmp(key, "started_ms") == 0) {
            if (b < a)
                json_object_set(parent, key, src);
        } else if (strcmp(key, "avg_response_ms") == 0) {
            double mean = rd + rs > 0 ? (a * rd + b * rs) / (rd + rs) : (a + b) / 2;
            json_object_set_new(parent, key, json_real(mean));
        } else if (json_is_integer(dst) && json_is_integer(src)) {
            json_object_set_new(parent, key,
                                json_integer(json_integer_value(dst) + json_integer_value(src)));
        } else {
            json_object_set_new(parent, key, json_real(a + b));
        }
    } else if (json_is_string(dst) && json_is_string(src) && strcmp(key, "health") == 0) {
        if (strcmp(json_string_value(src), "down") == 0) {
            json_object_set(parent, key, src);
        }
    }
}

void slb_stats_sum(json_t *dst, json_t *src)
{
    if (json_is_object(dst) && json_is_object(src))
        merge_object(dst, src);
}
