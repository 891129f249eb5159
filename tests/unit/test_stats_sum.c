/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for slb_stats_sum (metrics/stats_sum.h), the adding up of nodes' /v1/stats that
 * GET /v1/stats?scope=cluster and slbctl stats --cluster share. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "metrics/stats_sum.h"

static json_t *load(const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_counters_add_settings_stay(void **state)
{
    json_t *a = load("{\"generation\": 6, \"workers\": 2, \"started_ms\": 500,"
                     " \"listeners\": [{\"name\": \"web\", \"bind\": \"0.0.0.0:443\","
                     " \"connections\": 2, \"requests\": {\"total\": 2, \"2xx\": 2}}]}");
    json_t *b = load("{\"generation\": 7, \"workers\": 4, \"started_ms\": 100,"
                     " \"listeners\": [{\"name\": \"web\", \"bind\": \"0.0.0.0:443\","
                     " \"connections\": 3, \"requests\": {\"total\": 5, \"2xx\": 4}},"
                     " {\"name\": \"only_b\", \"connections\": 1}]}");
    slb_stats_sum(a, b);
    assert_int_equal(json_integer_value(json_object_get(a, "generation")), 6);
    assert_int_equal(json_integer_value(json_object_get(a, "workers")), 6);
    assert_int_equal(json_integer_value(json_object_get(a, "started_ms")), 100);
    json_t *ls = json_object_get(a, "listeners");
    assert_int_equal(json_array_size(ls), 2);
    json_t *web = json_array_get(ls, 0);
    assert_string_equal(json_string_value(json_object_get(web, "bind")), "0.0.0.0:443");
    assert_int_equal(json_integer_value(json_object_get(web, "connections")), 5);
    json_t *req = json_object_get(web, "requests");
    assert_int_equal(json_integer_value(json_object_get(req, "total")), 7);
    assert_int_equal(json_integer_value(json_object_get(req, "2xx")), 6);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ls, 1), "name")),
                        "only_b");
    /* src is left as it was. */
    assert_int_equal(json_integer_value(json_object_get(b, "workers")), 4);
    json_decref(a);
    json_decref(b);
}

static void test_servers_match_by_address_down_wins_mean_weighted(void **state)
{
    json_t *a = load("{\"groups\": [{\"name\": \"g\", \"servers\": [{\"address\": \"10.0.0.1\","
                     " \"port\": 80, \"weight\": 1, \"health\": \"up\", \"requests\": 1,"
                     " \"avg_response_ms\": 10.0}]}]}");
    json_t *b = load("{\"groups\": [{\"name\": \"g\", \"servers\": [{\"address\": \"10.0.0.1\","
                     " \"port\": 80, \"weight\": 1, \"health\": \"down\", \"requests\": 3,"
                     " \"avg_response_ms\": 30.0}, {\"address\": \"10.0.0.1\", \"port\": 81,"
                     " \"requests\": 9}]}]}");
    slb_stats_sum(a, b);
    json_t *srv = json_object_get(json_array_get(json_object_get(a, "groups"), 0), "servers");
    assert_int_equal(json_array_size(srv), 2);
    json_t *s = json_array_get(srv, 0);
    assert_int_equal(json_integer_value(json_object_get(s, "port")), 80);
    assert_int_equal(json_integer_value(json_object_get(s, "weight")), 1);
    assert_string_equal(json_string_value(json_object_get(s, "health")), "down");
    assert_int_equal(json_integer_value(json_object_get(s, "requests")), 4);
    assert_true(json_number_value(json_object_get(s, "avg_response_ms")) == 25.0);
    json_decref(a);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_add_settings_stay),
        cmocka_unit_test(test_servers_match_by_address_down_wins_mean_weighted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
