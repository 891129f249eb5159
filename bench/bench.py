#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""`make bench`: slbd against HAProxy and nginx on the same backend, certificate and ports, one
server after another, the server pinned to one CPU and the load generators to the other. Prints
one table (each slbd figure also as a ratio to the better anchor), checks that the run measured
what it claims, and writes bench/results/<timestamp>.json. See docs/benchmarks.md."""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_scenarios as sc
from bench_procs import CLK_TCK, Procs, foreign_ticks, port_free, set_priority
from bench_servers import SERVERS, Backend, BenchError, Floor

REPO = Path(__file__).resolve().parents[1]
ANCHORS = ("haproxy", "nginx")


class Env:
    """What every scenario needs: paths, ports, CPUs, the process registry, options."""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__.split("\n")[0])
    p.add_argument("--rsa", action="store_true", help="RSA-2048 certificate instead of P-256")
    p.add_argument("--quick", action="store_true", help="3 s phases instead of 10 s")
    p.add_argument("--duration", type=int, help="seconds per phase (default 10, --quick 3)")
    p.add_argument("--servers", default="haproxy,nginx,slbd",
                   help="comma-separated subset of haproxy,nginx,slbd (default: all)")
    p.add_argument("--baseline-slbd", metavar="PATH",
                   help="also run this slbd binary (the build before a change, say) as the "
                        "server slbd-base, just before slbd in each round, with the same "
                        "configuration; the table gains the ratio slbd / slbd-base")
    p.add_argument("--backend", choices=("fixed", "echo"), default="fixed",
                   help="fixed: bench/tools/fixed-backend (default); echo: build/echo-backend")
    p.add_argument("--port", type=int, default=18443, help="TLS port of every server")
    p.add_argument("--backend-port", type=int, default=18080)
    p.add_argument("--admin-port", type=int, default=18900, help="slbd's admin API")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--slbd-workers", type=int, default=1,
                   help="slbd's worker threads; above 1, slbd runs unpinned on every CPU (the "
                        "scaling check: compare CPU per operation with a 1-worker run)")
    p.add_argument("--backend-reuse", choices=("always", "safe"), default="always",
                   help="which requests may use a pooled backend connection: slbd's listener "
                        "backend_reuse and HAProxy's http-reuse (default always, as nginx's "
                        "upstream keepalive does; safe, slbd's and HAProxy's own default: "
                        "HAProxy opens a backend connection for each client connection's "
                        "first request, slbd only for a first request it could not send "
                        "again, a POST or one with a body; nginx has no such mode and stays "
                        "as it is)")
    p.add_argument("--ka-conns", type=int, default=32, help="keep-alive connections (1)")
    p.add_argument("--tls-conns", type=int, default=32, help="connections in flight (2, 3)")
    p.add_argument("--big-conns", type=int, default=8, help="connections for 1 MiB (4)")
    p.add_argument("--idle-conns", type=int, default=5000, help="idle connections (5)")
    p.add_argument("--rate", type=int, default=2000, help="requests/s for latency (6)")
    p.add_argument("--rate-conns", type=int, default=16, help="connections for latency (6)")
    p.add_argument("--replacements", type=int, default=50, help="certificate PUTs (7)")
    p.add_argument("--h2-conns", type=int, default=8, help="HTTP/2 connections (h2)")
    p.add_argument("--h2-streams", type=int, default=32,
                   help="HTTP/2 streams in flight per connection (h2)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the server sequence N times and report medians (noisy machines)")
    p.add_argument("--scenarios", default="1,2,3,close,4,5,6,7,h2",
                   help="comma-separated subset of the scenarios 1-7, close and h2 (default: "
                        "all)")
    p.add_argument("--syscalls", action="store_true",
                   help="also count system calls per keep-alive request (strace -c, 3 s)")
    p.add_argument("--nice", type=int, default=-10,
                   help="nice value of the servers and load generators (default -10: other "
                        "processes on a shared machine disturb less; 0 to turn off)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    p.add_argument("--results", default=str(REPO / "bench" / "results"))
    p.add_argument("--markdown", metavar="JSON",
                   help="print the ratio table of an earlier run (a results file) as Markdown, "
                        "as docs/benchmarks.md shows it, and exit")
    a = p.parse_args(argv)
    if a.duration is None:
        a.duration = 3 if a.quick else 10
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    for s in a.servers:
        if s not in SERVERS or s == "slbd-base":
            p.error(f"unknown server {s!r}")
    if a.baseline_slbd:
        if not os.access(a.baseline_slbd, os.X_OK):
            p.error(f"--baseline-slbd: {a.baseline_slbd} is not an executable file")
        # Just before slbd, so that the two run on the machine in the same state.
        at = a.servers.index("slbd") if "slbd" in a.servers else len(a.servers)
        a.servers.insert(at, "slbd-base")
    names = [x.strip() for x in a.scenarios.split(",") if x.strip()]
    if not names or not set(names) <= {str(i) for i in range(1, 8)} | {"h2", "close"}:
        p.error("--scenarios wants numbers from 1 to 7, close and h2")
    a.scenarios = {x if x in ("h2", "close") else int(x) for x in names}
    if a.slbd_workers < 1:
        p.error("--slbd-workers wants a positive number")
    if a.repeat < 1:
        p.error("--repeat wants a positive number")
    if a.h2_conns < 1 or a.h2_streams < 1:
        p.error("--h2-conns and --h2-streams want positive numbers")
    if a.quick and a.idle_conns == 5000:
        a.idle_conns = 2000
    if a.quick and a.replacements == 50:
        a.replacements = 20
    return a


def openssl(*args, cwd):
    subprocess.run(["openssl", *[str(x) for x in args]], cwd=cwd, check=True,
                   capture_output=True)


def make_pki(d, rsa, replacements):
    """A CA and a leaf for localhost/127.0.0.1 (ECDSA P-256, or RSA-2048), plus the leaves the
    certificate-replacement scenario uploads (same key, new serial each). A year of validity:
    slbd warns about certificates that expire within 30 days."""
    os.makedirs(d)
    key = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt",
                                                "ec_paramgen_curve:P-256"]
    openssl("req", "-x509", *key, "-nodes", "-days", 365, "-subj", "/CN=slbd bench CA",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    openssl("req", *key, "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out",
            "server.csr", cwd=d)
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-days",
            365, "-extfile", "ext.cnf"]
    openssl(*sign, "-set_serial", 1, "-out", "server.crt", cwd=d)
    for i in range(replacements):
        openssl(*sign, "-set_serial", 1000 + i, "-out", f"repl-{i}.crt", cwd=d)
    with open(os.path.join(d, "server.pem"), "w") as out:
        for f in ("server.crt", "server.key"):
            with open(os.path.join(d, f)) as src:
                out.write(src.read())


def run_server(env, server):
    """All scenarios against one server, which is started fresh (memory is measured first,
    before the other scenarios have grown its heap)."""
    a = env.args
    res = {"version": server.version()}
    say(f"== {server.name}: {res['version']}")
    want = a.scenarios
    server.start()
    try:
        sc.warm_up(env, server)
        if 5 in want:
            say(f"   5 memory: {a.idle_conns} idle TLS connections")
            res["memory"] = sc.memory(env, server)
        if 1 in want:
            say("   1 keep-alive requests")
            res["keepalive"] = sc.keepalive(env, server)
        if 2 in want:
            say("   2 new connection per request, resumed sessions")
            res["resumed"] = sc.connections(env, server, "resume")
        if 3 in want:
            say("   3 full handshakes")
            res["full"] = sc.connections(env, server, "full")
        if "close" in want:
            say("   close new connection per request, the client closes first (wrk)")
            res["close"] = sc.client_close(env, server)
        if 4 in want:
            say("   4 1 MiB responses")
            res["big"] = sc.big(env, server)
        if 6 in want:
            say(f"   6 latency at {a.rate} requests/s")
            res["latency"] = sc.latency(env, server)
        if server.name.startswith("slbd") and 7 in want:
            say(f"   7 certificate activation, {a.replacements} replacements")
            certs = []
            for i in range(a.replacements):
                with open(os.path.join(env.pki, f"repl-{i}.crt")) as f:
                    certs.append(f.read())
            with open(os.path.join(env.pki, "server.key")) as f:
                key = f.read()
            res["activation"] = sc.activation(env, server, certs, key)
        # Last, so that the HTTP/1.1 scenarios run on a server in the same state as before the
        # h2 row existed.
        if "h2" in want:
            say(f"   h2 HTTP/2 requests, {a.h2_conns} connections x {a.h2_streams} streams")
            res["h2"] = sc.h2(env, server)
            if res["h2"].get("unavailable"):
                say(f"      no h2 figures: {res['h2']['unavailable']}")
    finally:
        server.stop()
    return res


def run_memory_floor(env):
    """Scenario 5 against bench/tools/tlsfloor: what OpenSSL alone holds per idle connection,
    measured the same way as the servers, in the same run."""
    floor = Floor(env)
    res = {"version": floor.version()}
    say(f"== {floor.name}: {res['version']}")
    floor.start()
    try:
        say(f"   5 memory: {env.args.idle_conns} idle TLS connections")
        res["memory"] = sc.memory(env, floor)
    finally:
        floor.stop()
    return res


def median_of_floor(runs):
    """The floor's memory figures: medians over the runs, each run kept under "runs"."""
    if not runs:
        return None
    merged = json.loads(json.dumps(runs[0]))
    for key in ("kib_per_conn", "kib_per_conn_after_request"):
        set_median(merged, runs, "memory", key)
    if len(runs) > 1:
        merged["runs"] = runs
    return merged


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

# (scenario label, figure, section key, value key, unit, higher is better, format)
ROWS = [
    ("1 keep-alive", "requests/s", "keepalive", "req_per_s", "", True, "{:,.0f}"),
    ("", "CPU µs / request", "keepalive", "cpu_us_per_req", "", False, "{:.1f}"),
    ("2 resumed", "connections/s", "resumed", "conn_per_s", "", True, "{:,.0f}"),
    ("", "CPU µs / connection", "resumed", "cpu_us_per_conn", "", False, "{:.1f}"),
    ("", "TCP segments / conn", "resumed", "segments_per_conn", "", False, "{:.1f}"),
    ("3 full handshake", "handshakes/s", "full", "conn_per_s", "", True, "{:,.0f}"),
    ("", "CPU µs / handshake", "full", "cpu_us_per_conn", "", False, "{:.1f}"),
    ("", "TCP segments / conn", "full", "segments_per_conn", "", False, "{:.1f}"),
    ("close: client closes", "connections/s", "close", "conn_per_s", "", True, "{:,.0f}"),
    ("", "CPU µs / connection", "close", "cpu_us_per_conn", "", False, "{:.1f}"),
    ("", "TCP segments / conn", "close", "segments_per_conn", "", False, "{:.1f}"),
    ("", "TCP resets / conn", "close", "resets_per_conn", "", False, "{:.2f}"),
    ("4 1 MiB responses", "MiB/s", "big", "mib_per_s", "", True, "{:,.0f}"),
    ("", "CPU µs / MiB", "big", "cpu_us_per_mib", "", False, "{:.0f}"),
    ("5 idle TLS conns", "KiB / connection", "memory", "kib_per_conn", "", False, "{:.1f}"),
    ("", "KiB / conn after 1 req", "memory", "kib_per_conn_after_request", "", False,
     "{:.1f}"),
    ("6 latency", "p50 ms", "latency", "p50_ms", "", False, "{:.2f}"),
    ("", "p99 ms", "latency", "p99_ms", "", False, "{:.2f}"),
    ("7 cert activation", "p50 ms", "activation", "p50_ms", "", False, "{:.1f}"),
    ("", "p99 ms", "activation", "p99_ms", "", False, "{:.1f}"),
    ("h2 keep-alive", "requests/s", "h2", "req_per_s", "", True, "{:,.0f}"),
    ("", "CPU µs / request", "h2", "cpu_us_per_req", "", False, "{:.1f}"),
]


def table_rows(results):
    rows = []
    for label, fig, sec, key, _unit, higher, fmt in ROWS:
        vals = {s: results[s].get(sec, {}).get(key) for s in results}
        anchors = [vals[s] for s in ANCHORS if vals.get(s) is not None]
        best = (max(anchors) if higher else min(anchors)) if anchors else None
        ratio = base = None
        if vals.get("slbd") is not None and best:
            ratio = vals["slbd"] / best
        if vals.get("slbd") is not None and vals.get("slbd-base"):
            base = vals["slbd"] / vals["slbd-base"]
        # A server that ran the scenario but could not be measured (h2 not negotiated).
        na = {s: results[s][sec]["unavailable"] for s in results
              if results[s].get(sec, {}).get("unavailable")}
        rows.append({"scenario": label, "figure": fig, "section": sec, "key": key,
                     "higher_is_better": higher, "values": vals, "best_anchor": best,
                     "slbd_ratio": ratio, "base_ratio": base, "unavailable": na,
                     "format": fmt})
    return rows


def print_table(rows, servers):
    cols = [s for s in ("haproxy", "nginx", "slbd-base", "slbd") if s in servers]
    based = "slbd-base" in cols
    head = f"{'scenario':<21}{'figure':<24}" + "".join(f"{c:>11}" for c in cols)
    head += "   slbd / best anchor" + ("   slbd / slbd-base" if based else "")
    print(head)
    print("-" * len(head))
    for r in rows:
        na = r["unavailable"]
        if all(r["values"].get(c) is None and c not in na for c in cols):
            continue
        line = f"{r['scenario']:<21}{r['figure']:<24}"
        for c in cols:
            v = r["values"].get(c)
            cell = r["format"].format(v) if v is not None else "n/a" if c in na else "-"
            line += f"{cell:>11}"
        verdict = "higher is better" if r["higher_is_better"] else "lower is better"
        if r["slbd_ratio"] is not None:
            line += f"   {r['slbd_ratio']:.2f}x ({verdict})"
        if based:
            line = line.ljust(len(head) - len("   slbd / slbd-base"))
        if based and r["base_ratio"] is not None:
            line += f"   {r['base_ratio']:.2f}x" + ("" if r["slbd_ratio"] is not None else
                                                    f" ({verdict})")
        elif na and r["scenario"]:
            line += f"   n/a: {', '.join(sorted(na))} did not negotiate {r['section']}"
        print(line)


PHASES = [("1 keep-alive", "keepalive"), ("2 resumed", "resumed"), ("3 full handshake", "full"),
          ("close: client closes", "close"), ("4 1 MiB responses", "big"),
          ("6 latency", "latency"), ("h2 keep-alive", "h2")]


def print_load(results, client_cpu):
    """Per phase: how busy the server was, how busy the client's CPU was, and how much CPU
    other processes took: a server well below 100 % means the load generator set the pace."""
    cols = [s for s in ("haproxy", "nginx", "slbd-base", "slbd") if s in results]
    print("\nphase load, % of one CPU: server busy / client CPU busy / other processes")
    print(f"{'scenario':<21}" + "".join(f"{c:>16}" for c in cols))
    for label, sec in PHASES:
        cells = []
        for c in cols:
            ph = results[c].get(sec, {}).get("phase")
            if not ph:
                cells.append(f"{'-':>16}")
                continue
            cli = ph["cpu_busy"].get(str(client_cpu), 0)
            cells.append(f"{100 * ph['server_util']:>6.0f}/{100 * cli:.0f}/"
                         f"{100 * ph['foreign_cpu']:.0f}".rjust(16))
        if any(c.strip() != "-" for c in cells):
            print(f"{label:<21}" + "".join(cells))


def print_syscalls(results):
    """The --syscalls diagnostic: system calls per keep-alive request, per resumed
    connection, per connection the client closes and per 1 MiB response, by call."""
    for section, what in (("keepalive", "keep-alive request"), ("resumed", "resumed connection"),
                          ("close", "connection closed by the client"),
                          ("big", "1 MiB response")):
        sc_ = {s: r.get(section, {}).get("syscalls") for s, r in results.items()}
        sc_ = {s: v for s, v in sc_.items() if v}
        if sc_:
            print_syscall_table(sc_, what)


def print_syscall_table(sc_, what):
    names = sorted({k for v in sc_.values() for k in v["per_request"]
                    if max(x["per_request"].get(k, 0) for x in sc_.values()) >= 0.05})
    print(f"\nsystem calls per {what} (strace -c; EAGAIN and other errors in brackets)")
    print(f"{'call':<19}" + "".join(f"{s:>16}" for s in sc_))
    for n in names:
        cells = []
        for v in sc_.values():
            c = v["per_request"].get(n, 0)
            e = v["errors_per_request"].get(n)
            cells.append((f"{c:.2f}" + (f" ({e:.2f})" if e else "")).rjust(16))
        print(f"{n:<19}" + "".join(cells))
    print(f"{'total':<19}" + "".join(f"{v['total_per_request']:>16.2f}" for v in sc_.values()))


def print_floor(crypto, results):
    print(f"\ncrypto floor ({crypto['command']}, on the server CPU):")
    print(f"  {crypto['sign_alg']} sign {crypto['sign_us']:.1f} µs, X25519 ECDH "
          f"{crypto['ecdh_us']:.1f} µs -> full handshake floor (sign + ECDH) "
          f"{crypto['full_floor_us']:.1f} µs, resumed floor (ECDH) "
          f"{crypto['resumed_floor_us']:.1f} µs")
    for s, r in results.items():
        full = r.get("full", {}).get("cpu_us_per_conn")
        res = r.get("resumed", {}).get("cpu_us_per_conn")
        parts = []
        if full:
            parts.append(f"full handshake + request {full:.0f} µs = "
                         f"{full / crypto['full_floor_us']:.2f}x floor")
        if res:
            parts.append(f"resumed + request {res:.0f} µs = "
                         f"{res / crypto['resumed_floor_us']:.2f}x floor")
        if parts:
            print(f"  {s:<8} " + "; ".join(parts))


def print_memory_floor(mem_floor, results):
    """Scenario 5 against the OpenSSL floor: each server's KiB per idle connection above it."""
    m = (mem_floor or {}).get("memory", {})
    idle, after = m.get("kib_per_conn"), m.get("kib_per_conn_after_request")
    if idle is None:
        return
    print(f"\nmemory floor ({mem_floor['version']}): {idle:.2f} KiB per idle TLS connection, "
          f"{after:.2f} KiB after one request")
    for s, r in results.items():
        mine = r.get("memory", {})
        if mine.get("kib_per_conn") is None:
            continue
        line = f"  {s:<8} idle {mine['kib_per_conn'] - idle:+.2f} KiB over the floor"
        if mine.get("kib_per_conn_after_request") is not None and after is not None:
            line += f", after one request {mine['kib_per_conn_after_request'] - after:+.2f} KiB"
        print(line)


def checks(env, results, fails=None, warns=None):
    """Did each scenario measure what it claims? Failures make the run exit 1; warnings only
    say that a number may be distorted (a busy machine, a client-bound phase)."""
    fails = [] if fails is None else fails
    warns = [] if warns is None else warns
    for s, res in results.items():
        runs = res.get("runs", [res])
        for i, r in enumerate(runs):
            tag = f"{s} (run {i + 1})" if len(runs) > 1 else s
            check_run(env, tag, r, fails, warns)
    return fails, warns


def check_run(env, s, r, fails, warns):
    """The checks of one server's run of the scenarios (see checks)."""
    a = env.args

    def fail(server, what):
        fails.append(f"{server}: {what}")

    for sec in ("keepalive", "big", "close"):
        x = r.get(sec)
        if x and (x["non_2xx"] or x["socket_errors"]):
            fail(s, f"{sec}: {x['non_2xx']} non-2xx responses, {x['socket_errors']} "
                    f"socket errors")
    for sec in ("resumed", "full"):
        x = r.get(sec)
        if not x:
            continue
        if x["non_2xx"] or x["errors_total"]:
            fail(s, f"{sec}: {x['non_2xx']} non-2xx responses, errors {x['errors']}")
    x = r.get("resumed")
    if x and x["resumed"] < 0.95 * x["resumable"]:
        fail(s, f"resumed: only {x['resumed']} of {x['resumable']} resumable handshakes "
                f"resumed ({100 * x['resumed'] / max(x['resumable'], 1):.0f} %): the figures "
                f"mix in full handshakes")
    x = r.get("full")
    if x and x["resumed"]:
        fail(s, f"full: {x['resumed']} handshakes resumed although the client offered no "
                f"session")
    for sec in ("resumed", "full"):
        x = r.get(sec, {}).get("server_stats")
        if x and s.startswith("slbd"):
            client = r[sec]
            if sec == "full" and x.get("handshakes_resumed", 0):
                fail(s, f"full: slbd counted {x['handshakes_resumed']} resumed handshakes")
            if sec == "resumed" and abs(x.get("handshakes_resumed", 0) -
                                        client["resumed"]) > a.tls_conns:
                fail(s, f"resumed: slbd counted {x.get('handshakes_resumed', 0)} resumed "
                        f"handshakes, the client {client['resumed']}")
    x = r.get("close", {}).get("server_stats")
    if x and s.startswith("slbd"):
        # Each connection's first handshake has nothing to resume; wrk's later ones should.
        res, full = x.get("handshakes_resumed", 0), x.get("handshakes_full", 0)
        if res < 0.95 * max(res + full - a.tls_conns, 0):
            fail(s, f"close: slbd counted {res} resumed and {full} full handshakes: the "
                    f"figures mix in full handshakes")
    x = r.get("memory")
    if x:
        if x["established"] != x["connections"] or x["dropped"]:
            fail(s, f"memory: {x['established']} of {x['connections']} connections "
                    f"established, {x['dropped']} dropped by the server")
        if x["requests_ok"] != x["established"] or x["held_after_requests"] != x[
                "established"]:
            fail(s, f"memory: {x['requests_ok']} of {x['established']} requests answered "
                    f"2xx, {x['held_after_requests']} connections still open after them")
    x = r.get("latency")
    if x:
        if x["non_2xx"] or x["h2load_failed"]:
            fail(s, f"latency: {x['non_2xx']} non-2xx, {x['h2load_failed']} failed")
        if x.get("protocol", "http/1.1") != "http/1.1":
            fail(s, f"latency: h2load --h1 reported the protocol {x['protocol']}")
        if x["achieved_rate"] < 0.95 * x["target_rate"]:
            fail(s, f"latency: {x['achieved_rate']:.0f} requests/s achieved, "
                    f"{x['target_rate']} wanted: the server could not keep the rate")
    x = r.get("h2")
    if x:
        if x.get("unavailable"):
            fail(s, f"h2: no HTTP/2 figures: {x['unavailable']}")
        elif x["non_2xx"] or x["h2load_failed"]:
            fail(s, f"h2: {x['non_2xx']} non-2xx, {x['h2load_failed']} failed")
    x = r.get("activation")
    if x:
        if x["non_200"] or x["timeouts"] or x["activated"] != x["replacements"]:
            fail(s, f"activation: {x['non_200']} PUTs failed, {x['timeouts']} certificates "
                    f"never presented")
        if x["stale_after_200"]:
            fail(s, f"activation: {x['stale_after_200']} handshakes after the PUT's 200 "
                    f"still presented the old certificate")
    for sec, x in r.items():
        ph = x.get("phase") if isinstance(x, dict) else None
        if not ph:
            continue
        sched = ph.get("server_cpu_s_schedstat")
        if sched and ph["server_cpu_s"] > 0.5 and abs(sched - ph["server_cpu_s"]) > 0.15 * sched:
            warns.append(f"{s}: {sec}: utime+stime says {ph['server_cpu_s']:.2f} s of server "
                         f"CPU, schedstat {sched:.2f} s: the tick-based figures are imprecise")
        if ph["foreign_cpu"] > 0.10:
            warns.append(f"{s}: {sec}: other processes on this machine used "
                         f"{100 * ph['foreign_cpu']:.0f} % of a CPU during the phase")


def median_of_runs(runs):
    """One server's results over --repeat runs: the first run's details with every table
    figure replaced by its median over the runs; all runs are kept under "runs"."""
    if len(runs) == 1:
        return runs[0]
    merged = json.loads(json.dumps(runs[0]))
    for _label, _fig, sec, key, _unit, _higher, _fmt in ROWS:
        set_median(merged, runs, sec, key)
    merged["runs"] = runs
    return merged


def set_median(merged, runs, sec, key):
    """merged[sec][key] becomes the median of that figure over the runs that have it."""
    vals = sorted(r[sec][key] for r in runs if r.get(sec, {}).get(key) is not None)
    if vals:
        n = len(vals)
        merged[sec][key] = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def markdown(path):
    """The ratio table of a results file, in the form docs/benchmarks.md uses: ratios only."""
    with open(path) as f:
        doc = json.load(f)
    based = any(r.get("base_ratio") is not None for r in doc["table"])
    print("| scenario | figure | slbd / best anchor | better if | best anchor |"
          + (" slbd / slbd-base |" if based else ""))
    print("|---|---|---|---|---|" + ("---|" if based else ""))
    for r in doc["table"]:
        if r["slbd_ratio"] is None:
            if "slbd" in r.get("unavailable", {}):
                print(f"| {r['scenario'] or ''} | {r['figure']} | n/a (no {r['section']}) | "
                      f"{'higher' if r['higher_is_better'] else 'lower'} | |")
            continue
        best = [s for s in ANCHORS if r["values"].get(s) == r["best_anchor"]]
        print(f"| {r['scenario'] or ''} | {r['figure']} | {r['slbd_ratio']:.2f}× | "
              f"{'higher' if r['higher_is_better'] else 'lower'} | {', '.join(best)} |"
              + (f" {r['base_ratio']:.2f}× |" if r.get("base_ratio") is not None else
                 " |" if based else ""))
    crypto = doc["crypto"]
    print()
    print("| server | full handshake + request, × floor | resumed + request, × floor |")
    print("|---|---|---|")
    for s, r in doc["results"].items():
        full = r.get("full", {}).get("cpu_us_per_conn")
        res = r.get("resumed", {}).get("cpu_us_per_conn")
        print(f"| {s} | {full / crypto['full_floor_us']:.1f}× | "
              f"{res / crypto['resumed_floor_us']:.1f}× |" if full and res else f"| {s} | - | - |")
    floor = (doc.get("memory_floor") or {}).get("memory", {})
    if floor.get("kib_per_conn") is not None:
        print()
        print("| server | KiB per idle connection over the OpenSSL floor | after one request |")
        print("|---|---|---|")
        for s, r in doc["results"].items():
            m = r.get("memory", {})
            if m.get("kib_per_conn") is None:
                continue
            after = m.get("kib_per_conn_after_request")
            print(f"| {s} | {m['kib_per_conn'] - floor['kib_per_conn']:+.2f} | "
                  + (f"{after - floor['kib_per_conn_after_request']:+.2f} |"
                     if after is not None else "- |"))
    return 0


def say(msg):
    print(msg, flush=True)


def machine_info():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "openssl": subprocess.run(["openssl", "version"], capture_output=True,
                                      text=True).stdout.strip()}


def preflight(a):
    for tool in ("wrk", "h2load", "openssl", "taskset") + tuple(
            s for s in a.servers if not s.startswith("slbd")):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed; run bench/run.sh (it installs it)")
    cpus = os.sched_getaffinity(0)
    if a.server_cpu not in cpus or a.client_cpu not in cpus or a.server_cpu == a.client_cpu:
        raise BenchError(f"need two distinct CPUs for --server-cpu {a.server_cpu} and "
                         f"--client-cpu {a.client_cpu}; this process may use {sorted(cpus)}")
    for port in (a.port, a.backend_port, a.admin_port):
        if not port_free(port):
            raise BenchError(f"port {port} is in use; choose others with --port, "
                             f"--backend-port, --admin-port")


def machine_noise(procs, seconds=2.0):
    """CPU used by other processes on this machine, as a fraction of one CPU."""
    before = foreign_ticks(procs.sids())
    time.sleep(seconds)
    after = foreign_ticks(procs.sids())
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / CLK_TCK / seconds


def main(argv):
    a = parse_args(argv)
    if a.markdown:
        return markdown(a.markdown)
    env = Env()
    env.args = a
    env.repo = REPO
    env.build = Path(os.environ.get("SLBD_BUILD", REPO / "build"))
    if not env.build.is_absolute():
        env.build = REPO / env.build
    env.tools = env.build / "bench"
    env.port, env.backend_port, env.admin_port = a.port, a.backend_port, a.admin_port
    env.server_cpu, env.client_cpu = a.server_cpu, a.client_cpu
    preflight(a)
    # The orchestrator itself stays off the server's CPU.
    os.sched_setaffinity(0, {a.client_cpu})
    if a.nice and not set_priority(a.nice):
        say(f"cannot set nice {a.nice} (not root?): running at normal priority")
        a.nice = 0
    env.work = tempfile.mkdtemp(prefix="slbd-bench-")
    env.procs = Procs(env.work, os.environ.get("BENCH_PGID_FILE"))
    env.pki = os.path.join(env.work, "pki")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    ok = False
    try:
        say(f"slbd benchmark: {'RSA-2048' if a.rsa else 'ECDSA P-256'}, {a.duration} s per "
            f"phase, server on CPU {a.server_cpu}, load generators on CPU {a.client_cpu}, "
            f"nice {a.nice}, work directory {env.work}")
        noise = machine_noise(env.procs)
        say(f"other processes use {100 * noise:.0f} % of a CPU right now"
            + (": the figures will be noisy (see docs/benchmarks.md)" if noise > 0.1 else ""))
        make_pki(env.pki, a.rsa, a.replacements if "slbd" in a.servers else 0)
        # A private copy: the tree may be rebuilt while the benchmark runs, and every run of
        # slbd must be the same binary.
        env.slbd_bin = os.path.join(env.work, "slbd-binary")
        shutil.copy2(env.build / "slbd", env.slbd_bin)
        with open(env.slbd_bin, "rb") as f:
            env.slbd_sha256 = hashlib.sha256(f.read()).hexdigest()
        if a.baseline_slbd:
            env.slbd_base_bin = os.path.join(env.work, "slbd-base-binary")
            shutil.copy2(a.baseline_slbd, env.slbd_base_bin)
            with open(env.slbd_base_bin, "rb") as f:
                env.slbd_base_sha256 = hashlib.sha256(f.read()).hexdigest()
        say("== crypto floor: openssl speed")
        crypto = sc.crypto_floor(env)
        env.backend = Backend(env, a.backend)
        env.backend.start()
        runs = {name: [] for name in a.servers}
        floor_runs = []
        for i in range(a.repeat):
            if a.repeat > 1:
                say(f"== run {i + 1} of {a.repeat}")
            for name in a.servers:
                runs[name].append(run_server(env, SERVERS[name](env)))
            if 5 in a.scenarios:
                floor_runs.append(run_memory_floor(env))
        env.backend.stop()
        results = {name: median_of_runs(runs[name]) for name in a.servers}
        mem_floor = median_of_floor(floor_runs)
        rows = table_rows(results)
        fails, warns = checks(env, results)
        if mem_floor:
            checks(env, {Floor.name: mem_floor}, fails, warns)
        print()
        print_table(rows, results)
        print_load(results, a.client_cpu)
        print_syscalls(results)
        print_floor(crypto, results)
        print_memory_floor(mem_floor, results)
        tls = {s: r.get("latency", {}).get("tls") for s, r in results.items()}
        if len({v for v in tls.values() if v}) > 1:
            warns.append(f"the servers negotiated different TLS parameters: {tls}")
        if warns:
            print("\nwarnings:")
            for w in warns:
                print(f"  - {w}")
        print(f"\nchecks: {'all passed' if not fails else f'{len(fails)} FAILED'}")
        for f in fails:
            print(f"  - FAILED {f}")
        os.makedirs(a.results, exist_ok=True)
        out = os.path.join(a.results, f"{stamp}.json")
        args = {k: (sorted(v, key=str) if isinstance(v, set) else v)
                for k, v in vars(a).items()}
        doc = {"timestamp": stamp, "args": args, "noise_at_start": round(noise, 3),
               "slbd_binary_sha256": env.slbd_sha256,
               "machine": machine_info(), "crypto": crypto, "memory_floor": mem_floor,
               "results": results,
               "table": [{k: v for k, v in r.items() if k != "format"} for r in rows],
               "checks_failed": fails, "warnings": warns}
        with open(out, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"results: {out}")
        ok = not fails
        return 0 if ok else 1
    finally:
        env.procs.stop_all()
        if a.keep or not ok:
            print(f"work directory kept: {env.work}")
        else:
            shutil.rmtree(env.work, ignore_errors=True)


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    # SIGINT too: a shell that starts us in the background may have set it to "ignore".
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as ex:
        print(f"bench: {ex}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started has been stopped", file=sys.stderr)
        sys.exit(130)
