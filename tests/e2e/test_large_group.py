# SPDX-License-Identifier: Apache-2.0
"""A group of 5,000 servers: health checks find the dead ones, traffic goes to the live ones,
and a weight change of one server keeps every other server's health state and counters (a
rebuilt state would bring 4,996 dead servers back "up", since new servers start healthy)."""

import time

import slbd_harness as h

N = 5000


def big_stats(slbd):
    for g in slbd.stats()["groups"]:
        if g["name"] == "big":
            return {(s["address"], s["port"]): s for s in g["servers"]}
    raise AssertionError("no group big in /v1/stats")


def test_weight_change_in_a_5000_server_group_keeps_the_others_state(slbd, backend, clients):
    live = [backend(f"b{i}") for i in range(4)]
    dead = h.dead_port()
    servers = [b.server() for b in live]
    # Distinct addresses on loopback where nothing listens on that port: refused at once.
    servers += [{"address": f"127.1.{i // 250}.{i % 250 + 1}", "port": dead, "weight": 100}
                for i in range(N - len(live))]
    hc = h.fast_health_check(interval_s=2, unhealthy_threshold=2, healthy_threshold=2)
    slbd.add_group("big", servers, health_check=hc)
    port = slbd.add_tcp_listener("l", "big")

    def down_count():
        return sum(s["health"] == "down" for s in big_stats(slbd).values())

    h.wait_until(lambda: down_count() == N - len(live), h.scaled(30),
                 "every dead server of the big group to be down")
    # Only the live servers take connections.
    seen = {h.who(clients, port) for _ in range(40)}
    assert seen == {b.name for b in live}, seen
    before = big_stats(slbd)
    key = (live[0].address, live[0].port)
    assert before[key]["connections"] > 0

    t0 = time.monotonic()
    r = slbd.api.request("PATCH", f"/v1/groups/big/servers/{live[0].address}:{live[0].port}",
                         {"weight": 50})
    took = time.monotonic() - t0
    assert r.status == 200, r
    after = big_stats(slbd)
    assert after[key]["weight"] == 50
    changed = [k for k, s in after.items()
               if k != key and (s["health"], s["connections"]) !=
               (before[k]["health"], before[k]["connections"])]
    assert not changed, changed[:5]
    assert after[key]["connections"] == before[key]["connections"]
    assert down_count() == N - len(live)
    seen = {h.who(clients, port) for _ in range(40)}
    assert seen == {b.name for b in live}, seen
    print(f"weight change of one server in a group of {N}: {took * 1000:.0f} ms")

    # Its servers page: 1,000 at a time, each once, in address:port order.
    keys, after = [], None
    while True:
        q = "limit=1000" + (f"&after={after}" if after else "")
        st, js = slbd.api.get(f"/v1/groups/big/servers?{q}")
        assert st == 200 and len(js["servers"]) <= 1000
        keys += [f"{s['address']}:{s['port']}" for s in js["servers"]]
        after = js.get("next")
        if not after:
            break
    assert keys == sorted(f"{s['address']}:{s['port']}" for s in servers)
