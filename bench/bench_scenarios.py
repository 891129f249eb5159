# SPDX-License-Identifier: Apache-2.0
"""The benchmark's scenarios, each run against the server that is up, with the load generator
pinned to the client CPU, and each returning a dict of results plus the phase's CPU figures.
Every scenario is bounded in time, and records what its sanity checks need."""

import hashlib
import json
import os
import re
import selectors
import subprocess
import time

from bench_procs import Meter, rss_kib, run
from bench_servers import BenchError, presented_cert_sha256

MIB = 1 << 20


def _measured(env, server, fn):
    """Runs fn() between the two readings of a Meter and merges the phase figures in."""
    meter = Meter(env.procs, server.cpu_pids, [env.server_cpu, env.client_cpu]).start()
    res = fn()
    res["phase"] = meter.stop()
    return res


def _url(env, path):
    return f"https://127.0.0.1:{env.port}{path}"


def _dur_s(value, unit):
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_wrk(out):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", out)
    if not m:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    res = {"requests": int(m.group(1)), "duration_s": _dur_s(m.group(2), m.group(3)),
           "non_2xx": 0, "socket_errors": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["non_2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(g) for g in m.groups())
    return res


def _wrk(env, path, conns, duration, extra=()):
    rc, out, err = run(["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
                        *extra, _url(env, path)], cpu=env.client_cpu, timeout=duration + 60,
                       procs=env.procs, name="wrk")
    if rc != 0:
        raise BenchError(f"wrk failed ({rc}): {err.strip()}")
    return parse_wrk(out)


def warm_up(env, server):
    _wrk(env, env.backend.small_path, env.args.ka_conns, 1)


def keepalive(env, server):
    """Scenario 1: keep-alive HTTPS requests for the small response."""
    a = env.args

    def go():
        return _wrk(env, env.backend.small_path, a.ka_conns, a.duration)
    r = _measured(env, server, go)
    r["req_per_s"] = r["requests"] / r["duration_s"]
    r["cpu_us_per_req"] = r["phase"]["server_cpu_s"] * 1e6 / max(r["requests"], 1)
    r["segments_per_req"] = r["phase"]["tcp_segments"] / max(r["requests"], 1)
    r["tool"] = f"wrk -t1 -c{a.ka_conns} -d{a.duration}s"
    if a.syscalls:
        r["syscalls"] = syscalls(env, server, "keepalive", lambda: _wrk(
            env, env.backend.small_path, a.ka_conns, 3)["requests"])
    return r


def syscalls(env, server, what, load):
    """Diagnostic (--syscalls): system calls per operation (load() runs the load and returns
    the count of operations), counted by strace -c on the server's processes during that
    separate run (strace slows the server, so this run's rate is not reported)."""
    out = os.path.join(env.work, f"strace-{server.name}-{what}.txt")
    argv = ["strace", "-c", "-f", "-o", out]
    for pid in server.cpu_pids():
        argv += ["-p", pid]
    tracer = env.procs.start("strace", argv, cpu=env.client_cpu)
    time.sleep(0.5)  # attached
    try:
        ops = load()
    finally:
        tracer.send_signal(2)  # SIGINT: strace detaches and writes its table
        try:
            tracer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        env.procs.stop(tracer)
    calls = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            # "% time seconds usecs/call calls [errors] syscall"
            if (len(parts) >= 5 and parts[-1].isidentifier() and parts[-1] != "total"
                    and parts[0][0].isdigit()):
                errors = int(parts[4]) if len(parts) == 6 else 0
                calls[parts[-1]] = (int(parts[3]), errors)
    n = max(ops, 1)
    return {"requests": ops,
            "per_request": {k: round(c / n, 3) for k, (c, _e) in sorted(calls.items())},
            "errors_per_request": {k: round(e / n, 3) for k, (_c, e) in sorted(calls.items())
                                   if e},
            "total_per_request": round(sum(c for c, _e in calls.values()) / n, 2)}


def _tlsload(env, mode, duration):
    a = env.args
    rc, out, err = run([env.tools / "tlsload", "--connect", f"127.0.0.1:{env.port}", "--mode",
                        mode, "--path", env.backend.small_path, "-c", a.tls_conns,
                        "--duration", duration], cpu=env.client_cpu, timeout=duration + 60,
                       procs=env.procs, name="tlsload")
    if rc != 0:
        raise BenchError(f"tlsload {mode} failed ({rc}): {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def _stats_delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def connections(env, server, mode):
    """Scenarios 2 (mode resume) and 3 (mode full): a new TLS connection per request."""
    a = env.args
    before = server.stats()
    r = _measured(env, server, lambda: _tlsload(env, mode, a.duration))
    r["server_stats"] = _stats_delta(before, server.stats())
    done = max(r["completed"], 1)
    r["conn_per_s"] = r["per_s"]
    r["cpu_us_per_conn"] = r["phase"]["server_cpu_s"] * 1e6 / done
    r["segments_per_conn"] = r["phase"]["tcp_segments"] / done
    r["resets_per_conn"] = r["phase"]["tcp_resets"] / done
    # Each slot's first connection has nothing to resume.
    r["resumable"] = max(r["full"] + r["resumed"] - a.tls_conns, 0)
    r["tool"] = f"bench/tools/tlsload --mode {mode} -c{a.tls_conns} --duration {a.duration}"
    if a.syscalls and mode == "resume":
        r["syscalls"] = syscalls(env, server, "resumed",
                                 lambda: _tlsload(env, "resume", 3)["completed"])
    return r


def client_close(env, server):
    """Scenario close: a new connection per request from a client that closes first: wrk with
    "Connection: close". wrk reads the response, then sends its close_notify and closes
    (SSL_shutdown, SSL_clear, close), and its next connection resumes the session it kept
    (SSL_clear keeps a session that was shut down properly). Unlike tlsload (scenario 2), it
    does not wait for the server's close."""
    a = env.args
    extra = ("-H", "Connection: close")
    before = server.stats()
    r = _measured(env, server, lambda: _wrk(env, env.backend.small_path, a.tls_conns,
                                            a.duration, extra))
    r["server_stats"] = _stats_delta(before, server.stats())
    done = max(r["requests"], 1)
    r["conn_per_s"] = r["requests"] / r["duration_s"]
    r["cpu_us_per_conn"] = r["phase"]["server_cpu_s"] * 1e6 / done
    r["segments_per_conn"] = r["phase"]["tcp_segments"] / done
    # Both ends close at once: the resets say whose close met the other's data.
    r["resets_per_conn"] = r["phase"]["tcp_resets"] / done
    r["tool"] = f"wrk -t1 -c{a.tls_conns} -d{a.duration}s -H 'Connection: close'"
    if a.syscalls:
        r["syscalls"] = syscalls(env, server, "close", lambda: _wrk(
            env, env.backend.small_path, a.tls_conns, 3, extra)["requests"])
    return r


def big(env, server):
    """Scenario 4: 1 MiB responses over keep-alive TLS."""
    a = env.args

    def go():
        return _wrk(env, env.backend.big_path, a.big_conns, a.duration)
    r = _measured(env, server, go)
    r["mib_per_s"] = r["requests"] / r["duration_s"]
    r["cpu_us_per_mib"] = r["phase"]["server_cpu_s"] * 1e6 / max(r["requests"], 1)
    r["tool"] = f"wrk -t1 -c{a.big_conns} -d{a.duration}s (1 MiB per response)"
    if a.syscalls:
        r["syscalls"] = syscalls(env, server, "big", lambda: _wrk(
            env, env.backend.big_path, a.big_conns, 3)["requests"])
    return r


def _read_line(proc, timeout):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise BenchError(f"no answer from the idle-connection client in {timeout} s")
        line = proc.stdout.readline().decode(errors="replace").strip()
    finally:
        sel.close()
    if not line:
        raise BenchError("the idle-connection client exited early")
    return line


def _kv(line):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}


def memory(env, server):
    """Scenario 5: RSS growth with N idle TLS connections (handshake done, no request), then
    after one keep-alive request on each."""
    n = env.args.idle_conns
    pids = server.mem_pids()
    time.sleep(0.5)
    rss0 = rss_kib(pids)
    p = env.procs.start("tlsload-hold", [env.tools / "tlsload", "--connect",
                                         f"127.0.0.1:{env.port}", "--mode", "hold", "--count", n,
                                         "-c", 64, "--timeout", 30,
                                         "--path", env.backend.small_path],
                        cpu=env.client_cpu, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready = _kv(_read_line(p, 150))
        time.sleep(1.0)
        rss1 = rss_kib(pids)
        p.stdin.write(b"r\n")
        p.stdin.flush()
        requested = _kv(_read_line(p, 150))
        time.sleep(1.0)
        rss2 = rss_kib(pids)
        p.stdin.close()
        final = json.loads(_read_line(p, 30))
    finally:
        env.procs.stop(p)
    est = int(ready.get("established", 0))
    held = int(requested.get("held", 0))
    return {"connections": n, "established": est, "establish_s": ready.get("seconds"),
            "establish_failed": int(ready.get("failed", 0)),
            "requests_ok": int(requested.get("ok", 0)),
            "requests_failed": int(requested.get("failed", 0)),
            "held_after_requests": held, "dropped": final.get("dropped", 0),
            "rss_kib_before": rss0, "rss_kib_idle": rss1, "rss_kib_after_request": rss2,
            "kib_per_conn": (rss1 - rss0) / est if est else None,
            "kib_per_conn_after_request": (rss2 - rss0) / held if held else None,
            "tool": f"bench/tools/tlsload --mode hold --count {n} -c64, RSS from /proc"}


def latency(env, server):
    """Scenario 6: p50/p99 latency at a fixed request rate (h2load --h1 --rps)."""
    a = env.args
    per_conn = max(1, round(a.rate / a.rate_conns))
    log = os.path.join(env.work, f"h2load-{server.name}.log")
    if os.path.exists(log):
        os.unlink(log)

    def go():
        rc, out, err = run(["h2load", "--h1", "-c", a.rate_conns, "--rps", per_conn, "-D",
                            a.duration, "--warm-up-time", 1, "--log-file", log,
                            _url(env, env.backend.small_path)], cpu=env.client_cpu,
                           timeout=a.duration + 60, procs=env.procs, name="h2load")
        if rc != 0:
            raise BenchError(f"h2load failed ({rc}): {err.strip() or out.strip()}")
        return {"summary": out}
    r = _measured(env, server, go)
    out = r.pop("summary")
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        raise BenchError(f"cannot read h2load's output:\n{out}")
    r["h2load_failed"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    # HTTP/1.1 although the servers also offer h2: --h1 offers only http/1.1 by ALPN.
    m = re.search(r"Application protocol: (\S+)", out)
    r["protocol"] = m.group(1) if m else None
    # What was negotiated, to show that the servers are compared on the same TLS parameters.
    tls = [re.search(rf"{k}: (.+)", out) for k in ("TLS Protocol", "Cipher", "Server Temp Key")]
    r["tls"] = ", ".join(t.group(1).strip() for t in tls if t)
    lat, non2xx = [], 0
    with open(log) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            if not parts[1].startswith("2"):
                non2xx += 1
            lat.append(int(parts[2]))
    r["requests"] = len(lat)
    r["non_2xx"] = non2xx
    r["target_rate"] = per_conn * a.rate_conns
    r["achieved_rate"] = len(lat) / a.duration
    r["p50_ms"] = _pct(lat, 0.5) / 1000 if lat else None
    r["p99_ms"] = _pct(lat, 0.99) / 1000 if lat else None
    r["tool"] = (f"h2load --h1 -c{a.rate_conns} --rps {per_conn} -D {a.duration} "
                 f"--warm-up-time 1 --log-file (percentiles computed from the log)")
    return r


def parse_h2load(out):
    """The summary of an h2load run: protocol, requests by outcome, status classes, rate."""
    res = {}
    m = re.search(r"Application protocol: (\S+)", out)
    res["protocol"] = m.group(1) if m else None
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if not m:
        raise BenchError(f"cannot read h2load's output:\n{out}")
    res["requests"] = int(m.group(3))
    res["succeeded"] = int(m.group(4))
    res["h2load_failed"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    res["non_2xx"] = sum(int(g) for g in m.groups()[1:]) if m else 0
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m|h), ", out)
    res["duration_s"] = _dur_s(m.group(1), m.group(2)) if m else None
    tls = [re.search(rf"{k}: (.+)", out) for k in ("TLS Protocol", "Cipher", "Server Temp Key")]
    res["tls"] = ", ".join(t.group(1).strip() for t in tls if t)
    return res


def _h2load(env, args, timeout):
    return run(["h2load", *args, _url(env, env.backend.small_path)], cpu=env.client_cpu,
               timeout=timeout, procs=env.procs, name="h2load")


def h2(env, server):
    """Scenario h2: keep-alive HTTP/2 requests for the small response, many streams in flight
    on each connection (h2load without --h1). HTTP/1.1 to the backend, as in the other
    scenarios. A server that does not negotiate h2 yields no figures but the reason
    ("unavailable"), which fails the run's checks: an HTTP/1.1 figure must never stand in the h2
    row."""
    a = env.args
    # First, what the server picks when offered what a browser offers, h2 before http/1.1:
    # with h2load's default list a server without h2 would quietly be measured on HTTP/1.1.
    rc, out, err = _h2load(env, ["-n", 1, "-c", 1], 30)
    proto = parse_h2load(out)["protocol"] if "requests:" in out else None
    if proto:
        why = f"offered h2 and http/1.1 by ALPN, the server chose {proto}"
    else:
        said = [x.strip() for x in (out + err).splitlines()
                if re.search(r"protocol|negotiat|error|fail", x, re.I)]
        why = (f"offered h2 and http/1.1 by ALPN, the server chose neither (h2load exit {rc}: "
               f"{' / '.join(said[:3]) or 'no output'})")
    if proto != "h2":
        return {"unavailable": why, "protocol": proto}
    # Only h2 from here on, so that no connection of the measured run can fall back to
    # HTTP/1.1; a 1 s unmeasured run first, like the keep-alive warm-up.
    common = ["--npn-list", "h2", "-t", 1, "-c", a.h2_conns, "-m", a.h2_streams]
    rc, out, err = _h2load(env, common + ["-D", 1], 60)
    if rc != 0:
        raise BenchError(f"h2load (warm-up) failed ({rc}): {err.strip() or out.strip()}")

    def go():
        rc_, out_, err_ = _h2load(env, common + ["-D", a.duration], a.duration + 60)
        if rc_ != 0:
            raise BenchError(f"h2load failed ({rc_}): {err_.strip() or out_.strip()}")
        return {"summary": out_}
    r = _measured(env, server, go)
    out = r.pop("summary")
    r.update(parse_h2load(out))
    r["tool"] = (f"h2load --npn-list h2 -t1 -c{a.h2_conns} -m{a.h2_streams} -D {a.duration} "
                 f"(after h2load -n1 -c1 with ALPN h2,http/1.1 chose h2, and a 1 s warm-up)")
    if r["protocol"] != "h2":
        # Not expected with --npn-list h2; no figures, and the check fails the run.
        r["unavailable"] = f"h2load reported the protocol {r['protocol']}, not h2"
        return r
    # h2load's duration is its measurement window (-D); the server's CPU is read around the
    # whole process, which adds the handshakes and the requests in flight at the end.
    dur = r["duration_s"] or a.duration
    r["req_per_s"] = r["succeeded"] / dur
    r["cpu_us_per_req"] = r["phase"]["server_cpu_s"] * 1e6 / max(r["succeeded"], 1)
    return r


def activation(env, server, certs, key_pem):
    """Scenario 7 (slbd only): PUT a new certificate, then handshake until the new one is
    presented. Latency is from sending the PUT to the end of the first handshake that presents
    it; a handshake after the 200 that still presents the old one is a failure (activation is
    synchronous by contract)."""
    total, put, hs, stale, statuses, timeouts = [], [], [], 0, [], 0
    for pem in certs:
        want = hashlib.sha256(_pem_der(pem)).hexdigest()
        t0 = time.perf_counter()
        status = server.replace_cert(pem, key_pem)
        t1 = time.perf_counter()
        statuses.append(status)
        put.append((t1 - t0) * 1000)
        if status != 200:
            continue
        deadline = t1 + 5.0
        while True:
            t2 = time.perf_counter()
            got = presented_cert_sha256(env.port)
            if got == want:
                t3 = time.perf_counter()
                total.append((t3 - t0) * 1000)
                hs.append((t3 - t2) * 1000)
                break
            stale += 1
            if time.perf_counter() > deadline:
                timeouts += 1
                break
    return {"replacements": len(certs), "activated": len(total),
            "non_200": sum(1 for s in statuses if s != 200), "stale_after_200": stale,
            "timeouts": timeouts, "p50_ms": _pct(total, 0.5), "p99_ms": _pct(total, 0.99),
            "max_ms": max(total) if total else None, "put_p50_ms": _pct(put, 0.5),
            "put_p99_ms": _pct(put, 0.99), "handshake_p50_ms": _pct(hs, 0.5),
            "tool": "PUT /v1/certificates/{id}, then full handshakes (Python ssl) until the new "
                    "certificate's SHA-256 is presented; from sending the PUT to the end of "
                    "that handshake"}


def _pct(values, p):
    """The p-quantile (nearest rank) of values, None when empty."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))]


def _pem_der(pem):
    import base64
    body = pem.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0]
    return base64.b64decode("".join(body.split()))


def crypto_floor(env):
    """openssl speed on the server CPU: the cost of the handshake's signature and ECDH."""
    algs = ["ecdsap256", "ecdhx25519"] + (["rsa2048"] if env.args.rsa else [])
    secs = 1 if env.args.quick else 2
    rc, out, err = run(["openssl", "speed", "-seconds", secs, "-mr", *algs],
                       cpu=env.server_cpu, timeout=120, procs=env.procs, name="openssl-speed")
    if rc != 0:
        raise BenchError(f"openssl speed failed: {err.strip()}")
    res = {"command": f"openssl speed -seconds {secs} {' '.join(algs)}"}
    for line in out.splitlines():
        f = line.split(":")
        if line.startswith("+F2:") and len(f) >= 5:
            res["rsa2048_sign_per_s"] = float(f[3])
            res["rsa2048_verify_per_s"] = float(f[4])
        elif line.startswith("+F4:") and len(f) >= 5 and f[2] == "256":
            res["ecdsap256_sign_per_s"] = float(f[3])
            res["ecdsap256_verify_per_s"] = float(f[4])
        elif line.startswith("+F5:") and len(f) >= 4 and f[2] == "253":
            res["x25519_per_s"] = float(f[3])
    sign = res.get("rsa2048_sign_per_s" if env.args.rsa else "ecdsap256_sign_per_s")
    ecdh = res.get("x25519_per_s")
    if not sign or not ecdh:
        raise BenchError(f"cannot read openssl speed's output:\n{out}")
    res["sign_alg"] = "RSA-2048" if env.args.rsa else "ECDSA P-256"
    res["sign_us"] = 1e6 / sign
    res["ecdh_us"] = 1e6 / ecdh
    res["full_floor_us"] = res["sign_us"] + res["ecdh_us"]
    res["resumed_floor_us"] = res["ecdh_us"]
    return res
