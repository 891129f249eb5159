# SPDX-License-Identifier: Apache-2.0
"""Processes and /proc accounting for the benchmark: starting pinned processes that are always
cleaned up, CPU time and RSS of a set of PIDs, per-CPU busy time, and the CPU that processes
outside the benchmark used during a phase (so a noisy machine is reported, not hidden)."""

import ctypes
import os
import signal
import socket
import subprocess
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1
# The nice value of every process the benchmark starts (set_priority).
_priority = None


def set_priority(value):
    """Runs this process and every process it starts at nice value `value`, so that other
    processes on a shared machine take less CPU from the measurements. Returns False when the
    system refuses (a negative value needs root); the benchmark then runs at normal priority."""
    global _priority
    try:
        os.setpriority(os.PRIO_PROCESS, 0, value)
    except OSError:
        return False
    _priority = value
    return True


def _child_setup():
    """preexec_fn: the child gets SIGKILL if the benchmark dies without cleaning up (kill -9),
    so no server is ever left behind holding the benchmark's ports; and it inherits the
    benchmark's priority explicitly."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    if _priority is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, _priority)
        except OSError:
            pass
        # With autogroup scheduling (sched_autogroup_enabled), a process's nice value only
        # counts within its session's group; the child is a new session, so its group gets the
        # same nice value, or the machine's other sessions would still share the CPUs equally.
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(_priority))
        except OSError:
            pass


class Procs:
    """Every process the benchmark starts, each in its own session (process group), so that
    stopping one also stops its children (nginx workers) and nothing else."""

    def __init__(self, logdir, pgid_file=None):
        self.logdir = logdir
        self.live = {}  # pid -> (name, Popen, log file)
        # bench/run.sh kills the groups listed here if this program itself is killed (-9).
        self.pgid_file = pgid_file

    def _publish(self):
        if self.pgid_file:
            with open(self.pgid_file, "w") as f:
                f.write("".join(f"{pid}\n" for pid in self.live))

    def start(self, name, argv, cpu=None, stdin=None, stdout=None, env=None):
        """Starts argv pinned to cpu (taskset execs the program, so the PID is the program's).
        Output goes to LOGDIR/NAME.log unless stdout is given (e.g. subprocess.PIPE)."""
        cmd = (["taskset", "-c", str(cpu)] if cpu is not None else []) + [str(a) for a in argv]
        log = open(os.path.join(self.logdir, name + ".log"), "ab")
        p = subprocess.Popen(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                             stdout=stdout if stdout is not None else log,
                             stderr=log, start_new_session=True, preexec_fn=_child_setup,
                             env=env)
        self.live[p.pid] = (name, p, log)
        self._publish()
        return p

    def sids(self):
        return set(self.live)

    def stop(self, p, grace=5.0):
        """SIGTERM to the process group the benchmark created for p, SIGKILL after grace."""
        entry = self.live.pop(p.pid, None)
        self._publish()
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        # Children of the group (nginx workers) may outlive the leader by a moment.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if entry:
            entry[2].close()

    def stop_all(self):
        for pid in list(self.live):
            self.stop(self.live[pid][1], grace=3.0)


def run(argv, cpu=None, timeout=60, procs=None, name=None):
    """Runs a client to completion (bounded by timeout) and returns (rc, stdout, stderr). With
    procs, the client is registered so an interrupt also stops it."""
    cmd = (["taskset", "-c", str(cpu)] if cpu is not None else []) + [str(a) for a in argv]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True,
                         preexec_fn=_child_setup)
    if procs is not None:
        procs.live[p.pid] = (name or os.path.basename(cmd[0]), p, open(os.devnull, "wb"))
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err = (err or b"") + b"\n[benchmark: killed after %d s]" % timeout
    finally:
        if procs is not None:
            entry = procs.live.pop(p.pid, None)
            if entry:
                entry[2].close()
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


# ------------------------------------------------------------------------------------------
# /proc readers
# ------------------------------------------------------------------------------------------


def _stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (after the command name, which may contain spaces)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def cpu_ticks(pids):
    """utime + stime of the processes (all their threads), in clock ticks."""
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
            total += int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass
    return total


def sched_ns(pids):
    """Time on CPU of all threads of the processes, in ns (/proc/PID/task/*/schedstat): a
    precise cross-check of the tick-based utime + stime."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    """PIDs whose parent is pid (nginx workers of the master)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if int(_stat_fields(d)[1]) == pid:
                out.append(int(d))
        except (OSError, ValueError, IndexError):
            pass
    return out


def tcp_out_segments():
    """The kernel's counts of TCP segments sent and of resets sent (Tcp OutSegs and OutRsts in
    /proc/net/snmp). On loopback every segment of the client, the server and the backend is
    in them once."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")]), int(rows[1][rows[0].index("OutRsts")])


def cpu_times():
    """{cpu index: (busy, total)} in ticks from /proc/stat."""
    res = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            vals = [int(v) for v in parts[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            total = sum(vals[:8])
            res[int(parts[0][3:])] = (total - idle, total)
    return res


def foreign_ticks(our_sids):
    """{pid: ticks} of user processes that are not the benchmark's (another session, not a
    kernel thread): what else ran on this machine."""
    res = {}
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == me:
            continue
        try:
            f = _stat_fields(pid)
            ppid, sid = int(f[1]), int(f[3])
            if pid == 2 or ppid == 2 or sid in our_sids:
                continue
            res[pid] = int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass
    return res


class Meter:
    """Measures one phase: the server's CPU time, the busy time of each CPU and the CPU used by
    processes outside the benchmark, between start() and stop()."""

    def __init__(self, procs, server_pids, cpus):
        self.procs = procs
        self.server_pids = server_pids
        self.cpus = cpus

    def start(self):
        self.t0 = time.monotonic()
        pids = self.server_pids()
        self.srv0 = cpu_ticks(pids)
        self.ns0 = sched_ns(pids)
        self.cpu0 = cpu_times()
        self.for0 = foreign_ticks(self.procs.sids())
        self.seg0, self.rst0 = tcp_out_segments()
        return self

    def stop(self):
        wall = time.monotonic() - self.t0
        segs, rsts = tcp_out_segments()
        segs -= self.seg0
        rsts -= self.rst0
        pids = self.server_pids()
        srv = (cpu_ticks(pids) - self.srv0) / CLK_TCK
        srv_ns = (sched_ns(pids) - self.ns0) / 1e9
        cpu1 = cpu_times()
        for1 = foreign_ticks(self.procs.sids())
        foreign = sum(t - self.for0.get(pid, 0) for pid, t in for1.items()) / CLK_TCK
        busy = {}
        for c in self.cpus:
            if c in self.cpu0 and c in cpu1:
                db = cpu1[c][0] - self.cpu0[c][0]
                dt = cpu1[c][1] - self.cpu0[c][1]
                busy[c] = db / dt if dt > 0 else 0.0
        return {"wall_s": round(wall, 3), "server_cpu_s": round(srv, 3),
                "server_cpu_s_schedstat": round(srv_ns, 4),
                "server_util": round(srv / wall, 3) if wall > 0 else 0.0,
                "cpu_busy": {str(c): round(b, 3) for c, b in busy.items()},
                "foreign_cpu": round(foreign / wall, 3) if wall > 0 else 0.0,
                "tcp_segments": segs, "tcp_resets": rsts}


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def port_free(port, host="127.0.0.1"):
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()
