# SPDX-License-Identifier: Apache-2.0
"""`make bench-tcp`: how the tcp listener should move bytes, measured. One slbd worker pinned to
one CPU runs a tcp listener in front of bench/tools/fixed-backend, once per copy mode
(SLBD_TCP_SPLICE=off: user-space buffers only; auto: splice(2) for bulk flows, the default;
on: splice for every flow), and wrk on the other CPU drives plain HTTP through it:

  bulk    1 MiB responses over 8 keep-alive connections: MB/s and server CPU µs per MB
  small   100-byte responses over 50 keep-alive connections: server CPU µs per request
  connect 100-byte responses, a new connection per request: server CPU µs per connection

Server CPU is the time on CPU of all slbd threads over the phase (/proc/PID/task/*/schedstat).
Each mode runs --rounds times, interleaved in a rotating order, and the median is reported with ratios to `off`.
Writes bench/results/tcp-copy-<timestamp>.json."""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_procs import Procs, run, sched_ns  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("off", "auto", "on")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def parse_wrk(out):
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", out)
    if not m:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(3)]
    res = {"requests": int(m.group(1)), "duration_s": float(m.group(2)) * scale, "errors": 0}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(g) for g in m.groups())
    return res


class Slbd:
    def __init__(self, args, procs, work, backend_port, mode):
        self.port = free_port()
        admin = free_port()
        state = os.path.join(work, f"state-{mode}")
        shutil.rmtree(state, ignore_errors=True)
        os.makedirs(state)
        cfg = {"listeners": [{"name": "bench", "protocol": "tcp",
                              "bind": f"127.0.0.1:{self.port}", "backend_group": "be"}],
               "groups": [{"name": "be", "scheduler": "wrr",
                           "servers": [{"address": "127.0.0.1", "port": backend_port}],
                           "health_check": {"enabled": False}}]}
        with open(os.path.join(state, "config.json"), "w") as f:
            json.dump(cfg, f)
        env = dict(os.environ, SLBD_TCP_SPLICE=mode)
        self.proc = procs.start(f"slbd-{mode}", [args.slbd, "--state-dir", state, "--admin",
                                                 f"127.0.0.1:{admin}", "--workers", "1",
                                                 "--log-level", "warn"],
                                cpu=args.server_cpu, env=env)
        if not wait_port(self.port, 15):
            raise RuntimeError(f"slbd ({mode}) did not start; see {work}/slbd-{mode}.log")


def phase(args, procs, pid, port, path, conns, close):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{args.duration}s", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    cpu0 = sched_ns([pid])
    rc, out, err = run(argv, cpu=args.client_cpu, timeout=args.duration + 60, procs=procs,
                       name="wrk")
    cpu_s = (sched_ns([pid]) - cpu0) / 1e9
    if rc != 0:
        raise RuntimeError(f"wrk failed ({rc}): {err.strip()}")
    r = parse_wrk(out)
    if r["errors"]:
        raise RuntimeError(f"wrk saw {r['errors']} errors through {path}:\n{out}")
    r["server_cpu_s"] = cpu_s
    return r


def measure(args, procs, slbd):
    pid = slbd.proc.pid
    phase(args, procs, pid, slbd.port, "/", 20, False)  # warm-up
    res = {}
    r = phase(args, procs, pid, slbd.port, "/1m", 8, False)
    mb = r["requests"] * (1 << 20) / 1e6
    res["bulk_mb_per_s"] = mb / r["duration_s"]
    res["bulk_cpu_us_per_mb"] = r["server_cpu_s"] * 1e6 / max(mb, 1e-9)
    r = phase(args, procs, pid, slbd.port, "/", 50, False)
    res["small_req_per_s"] = r["requests"] / r["duration_s"]
    res["small_cpu_us_per_req"] = r["server_cpu_s"] * 1e6 / max(r["requests"], 1)
    r = phase(args, procs, pid, slbd.port, "/", 50, True)
    res["connect_conn_per_s"] = r["requests"] / r["duration_s"]
    res["connect_cpu_us_per_conn"] = r["server_cpu_s"] * 1e6 / max(r["requests"], 1)
    return res


ROWS = [("bulk_mb_per_s", "1 MiB responses: MB/s", False),
        ("bulk_cpu_us_per_mb", "1 MiB responses: CPU µs per MB", True),
        ("small_cpu_us_per_req", "small keep-alive: CPU µs per request", True),
        ("connect_cpu_us_per_conn", "new connection per request: CPU µs each", True)]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    build = os.environ.get("SLBD_BUILD", "build")
    p.add_argument("--slbd", default=os.path.join(REPO, build, "slbd"))
    p.add_argument("--backend", default=os.path.join(REPO, build, "bench", "fixed-backend"))
    p.add_argument("--duration", type=int, default=5, help="seconds per phase")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="slbd-bench-tcp-")
    procs = Procs(work, os.environ.get("BENCH_PGID_FILE"))
    runs = {m: [] for m in MODES}
    try:
        backend_port = free_port()
        # The backend shares the client's CPU: the server CPU is slbd's alone.
        procs.start("backend", [args.backend, "--listen", f"127.0.0.1:{backend_port}"],
                    cpu=args.client_cpu)
        if not wait_port(backend_port, 10):
            raise RuntimeError(f"the backend did not start; see {work}/backend.log")
        for rnd in range(args.rounds):
            # Each round starts with a different mode, so no mode always inherits the previous
            # one's leftovers (TIME_WAIT sockets, warm caches).
            for mode in MODES[rnd % len(MODES):] + MODES[:rnd % len(MODES)]:
                print(f"round {rnd + 1}/{args.rounds}: SLBD_TCP_SPLICE={mode}", flush=True)
                s = Slbd(args, procs, work, backend_port, mode)
                try:
                    runs[mode].append(measure(args, procs, s))
                finally:
                    procs.stop(s.proc)
    finally:
        procs.stop_all()
    med = {m: {k: statistics.median(r[k] for r in runs[m]) for k in runs[m][0]} for m in MODES}
    print(f"\n{'':44}" + "".join(f"{m:>16}" for m in MODES))
    for key, label, _lower_better in ROWS:
        cells = []
        for m in MODES:
            v = med[m][key]
            ratio = v / med["off"][key] if med["off"][key] else 0
            cells.append(f"{v:9.1f} {ratio:5.2f}x" if m != "off" else f"{v:15.1f}")
        print(f"{label:44}" + "".join(f"{c:>16}" for c in cells))
    print("(ratios to off; CPU rows: lower is better)")
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    out = os.path.join(REPO, "bench", "results",
                       time.strftime("tcp-copy-%Y%m%dT%H%M%S.json", time.gmtime()))
    with open(out, "w") as f:
        json.dump({"args": vars(args), "runs": runs, "median": med}, f, indent=2)
    print(f"results: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
