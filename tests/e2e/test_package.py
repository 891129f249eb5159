# SPDX-License-Identifier: Apache-2.0
"""Installing slbd as a service: `make install` lays out the binaries, man pages, bash
completion, systemd unit and logrotate file and `make uninstall` removes them; the unit passes
`systemd-analyze verify`; the man pages and the completion cover every command and option of
the binaries; `make deb` builds a package that installs (system user, state directory, the
service's binary running as that user), is removed and purged without leaving a file behind.

These tests build and install from the repository (not $SLBD_BUILD alone), and one installs a
package on this machine: they run once, in the release build's run (scripts/run-e2e.sh runs
the release and the sanitizer suites side by side), and a lock keeps two checkouts from
installing at the same time."""

import contextlib
import fcntl
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

import slbd_harness as h

pytestmark = pytest.mark.skipif(
    h.is_sanitized() or h.build_dir() != h.REPO / "build",
    reason="packaging runs once, with the release build (SLBD_BUILD=build); the sanitizer run "
           "goes on in parallel and must not build or install at the same time")

VERSION = (h.REPO / "VERSION").read_text().strip()
INSTALLED = ["sbin/slbd", "bin/slbctl", "share/man/man8/slbd.8", "share/man/man1/slbctl.1",
             "share/bash-completion/completions/slbctl", "lib/systemd/system/slbd.service"]


def run(argv, timeout=120, check=True, **kw):
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):  # when the suite itself runs under make
        env.pop(k, None)
    env.update(kw.pop("env", {}))
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       cwd=kw.pop("cwd", h.REPO), env=env, **kw)
    if check:
        assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout[-3000:]}\n" \
                                  f"{p.stderr[-3000:]}"
    return p


def make(*args, timeout=300):
    return run(["make", "--no-print-directory", "BUILD=release", *args], timeout=timeout)


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if not p.is_dir())


# --------------------------------------------------------------------------------------------
# make install / uninstall, the unit
# --------------------------------------------------------------------------------------------


def test_make_install_and_uninstall(tmp_path):
    dest = tmp_path / "dest"
    make("install", f"DESTDIR={dest}")
    want = sorted([f"usr/local/{f}" for f in INSTALLED] + ["etc/logrotate.d/slbd"])
    assert files_under(dest) == want
    modes = {f: (dest / f).stat().st_mode & 0o777 for f in want}
    assert modes["usr/local/sbin/slbd"] == 0o755 and modes["usr/local/bin/slbctl"] == 0o755
    assert all(m == 0o644 for f, m in modes.items() if "bin/" not in f), modes
    unit = (dest / "usr/local/lib/systemd/system/slbd.service").read_text()
    assert "ExecStart=/usr/local/sbin/slbd --state-dir /var/lib/slbd " in unit
    assert "ExecReload=/usr/local/sbin/slbd --upgrade --detach --state-dir /var/lib/slbd " in unit
    assert "@" not in unit.replace("$MAINPID", "")  # every @PLACEHOLDER@ was replaced
    for prog in ("sbin/slbd", "bin/slbctl"):
        out = run([dest / "usr/local" / prog, "--version"]).stdout
        assert out.startswith(f"{Path(prog).name} {VERSION}"), out

    make("uninstall", f"DESTDIR={dest}")
    assert files_under(dest) == []


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is missing (scripts/deps.sh installs systemd)")
    # Installed without DESTDIR under tmp_path, so ExecStart= names a binary that exists and
    # Documentation=man:... finds the installed pages through MANPATH.
    root = tmp_path / "root"
    make("install", f"PREFIX={root}/usr", f"SYSCONFDIR={root}/etc")
    unit = root / "usr/lib/systemd/system/slbd.service"
    p = run(["systemd-analyze", "verify", unit], check=False,
            env={"MANPATH": str(root / "usr/share/man")})
    # Other units of this machine may draw warnings too; none may name ours.
    assert p.returncode == 0 and "slbd" not in p.stdout + p.stderr, p.stdout + p.stderr
    text = unit.read_text()
    for line in ("Type=notify", "User=slbd", "Group=slbd", "StateDirectory=slbd",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                 "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                 "ProtectControlGroups=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "LockPersonality=yes", "MemoryDenyWriteExecute=yes", "RestrictRealtime=yes",
                 "SystemCallArchitectures=native", "NotifyAccess=all"):
        assert f"\n{line}\n" in text, line
    # A reload is an upgrade with the service's own options (docs/operations.md).
    start = re.search(r"\nExecStart=(\S+) (.*)\n", text)
    reload = re.search(r"\nExecReload=(\S+) --upgrade --detach (.*)\n", text)
    assert start and reload and reload.groups() == start.groups(), text
    # The stop covers a drain of settings.drain_timeout_s (default 10 s) with room to spare.
    stop = re.search(r"\nTimeoutStopSec=(\d+)\n", text)
    assert stop and int(stop.group(1)) >= 30, text
    p = run(["systemd-analyze", "security", "--offline=yes", unit], check=False)
    m = re.search(r"Overall exposure level for slbd.service: ([0-9.]+)", p.stdout + p.stderr)
    assert m and float(m.group(1)) <= 3.5, p.stdout[-2000:] + p.stderr


# --------------------------------------------------------------------------------------------
# Man pages and completion are true to the binaries
# --------------------------------------------------------------------------------------------


def man_text(name):
    return (h.REPO / "dist/man" / name).read_text().replace("\\-", "-")


def cli_usage():
    """(commands as "group verb" or "group", options) from `slbctl help`."""
    text = run([h.binary("slbctl"), "help"]).stdout
    commands, options = set(), set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", text))
    for line in text.splitlines():
        m = re.match(r"  slbctl (\w+)(?: ([a-z][a-z-]*))?", line)
        if m:
            commands.add(" ".join(w for w in m.groups() if w))
    return commands, options


def test_man_pages_and_completion_cover_the_command_lines():
    slbd_opts = set(re.findall(r"--[a-z-]+", run([h.binary("slbd"), "--help"]).stdout))
    assert {"--state-dir", "--admin", "--workers", "--log-level", "--check",
            "--version"} <= slbd_opts
    slbd8 = man_text("slbd.8")
    assert [o for o in slbd_opts if o not in slbd8] == []

    commands, options = cli_usage()
    assert len(commands) >= 20 and "server set-weight" in commands, commands
    slbctl1 = man_text("slbctl.1")
    completion = (h.REPO / "dist/bash-completion/slbctl").read_text()
    for c in sorted(commands):
        words = c.split()
        assert re.search(r"\b" + r"\s+".join(map(re.escape, words)) + r"\b", slbctl1), c
        assert all(re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", completion) for w in words), c
    for o in sorted(options | {"--version", "--help"}):
        assert re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", slbctl1), o
        assert re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", completion), o

    if shutil.which("groff"):
        for page in ("slbd.8", "slbctl.1"):
            p = run(["groff", "-man", "-ww", "-z", "-Tutf8", h.REPO / "dist/man" / page])
            assert not p.stderr.strip(), p.stderr


# The functions bash-completion provides, reduced to what _slbctl uses, so the completion runs
# without the bash-completion package.
COMPLETION_STUBS = r'''
_init_completion() { words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; cur=${words[cword]};
                     prev=${words[cword-1]}; }
_filedir() { COMPREPLY=(FILE${1:+-DIR}); }
'''


@pytest.mark.parametrize("line, want", [
    ("slbctl ", {"cert", "listener", "rule", "group", "server", "key", "stats", "apply",
                 "config", "cluster", "audit", "metrics", "health", "help"}),
    ("slbctl cluster ", {"status", "export"}),
    ("slbctl cluster export ", {"FILE-DIR"}),
    ("slbctl key create --scope ", {"read", "certificates", "operator", "admin"}),
    ("slbctl --state-dir /x lis", {"listener"}),
    ("slbctl listener ", {"create", "list", "show", "update", "delete", "stop", "start"}),
    ("slbctl listener create --pro", {"--protocol", "--proxy-protocol"}),
    ("slbctl listener create --protocol ", {"tcp", "http", "https"}),
    ("slbctl group create --scheduler ", {"wrr", "rr", "wlc", "sch", "tch"}),
    ("slbctl cert upload --cert ", {"FILE"}),
    ("slbctl --state-dir ", {"FILE-DIR"}),
    ("slbctl server ", {"add", "remove", "set-weight"}),
    ("slbctl stats --w", {"--watch", "--wide"}),
    ("slbctl config ", {"export", "import"}),
    ("slbctl config import --d", {"--dry-run"}),
    ("slbctl config import ", {"FILE"}),
    ("slbctl apply --dr", {"--dry-run"}),
    ("slbctl --ver", {"--version"}),
])
def test_bash_completion(line, want):
    words = line.split(" ")
    script = (COMPLETION_STUBS + (h.REPO / "dist/bash-completion/slbctl").read_text() +
              "\nCOMP_WORDS=(" + " ".join(f"'{w}'" for w in words) + ")\n"
              f"COMP_CWORD={len(words) - 1}\n_slbctl\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = run(["bash", "-c", script]).stdout.split()
    assert set(out) == want, out


def test_debian_changelog_version_is_the_version():
    first = (h.REPO / "debian/changelog").read_text().splitlines()[0]
    assert first.startswith(f"slbd ({VERSION})"), first


# --------------------------------------------------------------------------------------------
# make deb; dpkg -i, -r, --purge
# --------------------------------------------------------------------------------------------


def dpkg(*args):
    """dpkg waits for nobody: retry while another apt or dpkg holds its lock."""
    deadline = time.monotonic() + 180
    while True:
        p = run(["dpkg", *args], check=False, timeout=180)
        if p.returncode == 0:
            return p
        if "lock" not in p.stderr or time.monotonic() > deadline:
            raise AssertionError(f"dpkg {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n"
                                 f"{p.stderr}")
        time.sleep(2)


def installed():
    p = run(["dpkg-query", "-W", "-f=${Status}", "slbd"], check=False)
    return p.returncode == 0 and "installed" in p.stdout.split()


def exists_user(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def exists_group(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


# What installing the package may touch besides its own files, compared before and after.
WATCHED = ["/etc/systemd/system", "/var/lib/systemd/deb-systemd-helper-enabled",
           "/var/lib/systemd/deb-systemd-helper-masked", "/etc/logrotate.d", "/var/lib/slbd"]


def machine_state():
    state = {}
    for d in WATCHED:
        p = Path(d)
        state[d] = sorted(str(x) for x in p.rglob("*")) if p.is_dir() else p.exists()
    state["user"] = exists_user("slbd")
    state["group"] = exists_group("slbd")
    return state


@contextlib.contextmanager
def machine_lock():
    """One package test at a time on this machine, whichever checkout runs it."""
    with open("/tmp/slbd-package-test.lock", "w") as f:
        deadline = time.monotonic() + 240
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.skip("another checkout's package test held the lock for 4 minutes")
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running(pid):
    """pid is a process that has not exited (a zombie waiting for its reaper has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def packaged_reload_command(port):
    """The installed unit's ExecReload= (what `systemctl reload slbd` runs), on the test's admin
    port and with one worker, as run_packaged_slbd starts slbd."""
    unit = Path("/lib/systemd/system/slbd.service").read_text()
    argv = re.search(r"\nExecReload=(.*)\n", unit).group(1).split()
    assert argv[:3] == ["/usr/sbin/slbd", "--upgrade", "--detach"], argv
    return [f"127.0.0.1:{port}" if a == "127.0.0.1:9000" else a for a in argv] + ["--workers", "1"]


def run_packaged_slbd(workdir):
    """Start /usr/sbin/slbd as the service would (user slbd, /var/lib/slbd, $NOTIFY_SOCKET),
    wait for READY=1, use it with the packaged slbctl, reload it with the unit's ExecReload= (a
    new main process says MAINPID= and READY=1, the old one exits 0), stop the new one, wait for
    STOPPING=1."""
    name = f"slbd-package-test-{os.getpid()}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + name)  # abstract: the slbd user may send to it
    rx.settimeout(30)
    port = h.free_port()
    env = dict(os.environ, NOTIFY_SOCKET="@" + name)
    log = open(workdir / "packaged-slbd.log", "wb")
    new_pid = None
    proc = subprocess.Popen(
        ["setpriv", "--reuid=slbd", "--regid=slbd", "--init-groups", "--",
         "/usr/sbin/slbd", "--state-dir", "/var/lib/slbd", "--admin", f"127.0.0.1:{port}",
         "--workers", "1"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env=env)
    try:
        while b"READY=1" not in rx.recv(4096):
            pass
        token = Path("/var/lib/slbd/admin.token")
        st = token.stat()
        assert st.st_uid == pwd.getpwnam("slbd").pw_uid and st.st_mode & 0o777 == 0o600
        p = run(["/usr/bin/slbctl", "--state-dir", "/var/lib/slbd", "--admin",
                 f"http://127.0.0.1:{port}", "group", "create", "--name", "web"])
        p = run(["/usr/bin/slbctl", "--state-dir", "/var/lib/slbd", "--admin",
                 f"http://127.0.0.1:{port}", "--json", "group", "list"])
        assert '"web"' in p.stdout
        assert Path("/var/lib/slbd/config.json").stat().st_uid == st.st_uid
        # systemctl reload: the command ends once the new process serves.
        r = subprocess.run(["setpriv", "--reuid=slbd", "--regid=slbd", "--init-groups", "--",
                            *packaged_reload_command(port)], stdin=subprocess.DEVNULL,
                           stdout=log, stderr=subprocess.STDOUT, env=env, timeout=60)
        assert r.returncode == 0
        m = None
        while not m:
            m = re.search(rb"MAINPID=(\d+)\nREADY=1", rx.recv(4096))
        new_pid = int(m.group(1))
        assert new_pid != proc.pid
        assert proc.wait(30) == 0  # the old main process drained and exited
        p = run(["/usr/bin/slbctl", "--state-dir", "/var/lib/slbd", "--admin",
                 f"http://127.0.0.1:{port}", "--json", "group", "list"])
        assert '"web"' in p.stdout
        os.kill(new_pid, signal.SIGTERM)
        while b"STOPPING=1" not in rx.recv(4096):
            pass
        deadline = time.monotonic() + 30
        while running(new_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(new_pid)
        new_pid = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if new_pid and running(new_pid):
            os.kill(new_pid, signal.SIGKILL)
        rx.close()
        log.close()
    text = (workdir / "packaged-slbd.log").read_text(errors="replace")
    assert " error " not in text, text


@pytest.mark.timeout(420)
def test_deb_installs_runs_and_purges_cleanly(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root")
    for tool in ("dpkg-buildpackage", "dh", "setpriv"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (scripts/deps.sh installs it)")
    with machine_lock():
        if installed() or exists_user("slbd") or exists_group("slbd") or \
                Path("/var/lib/slbd").exists():
            pytest.skip("slbd is installed here (package, user or /var/lib/slbd): the test "
                        "would not leave this machine as it found it")
        before = machine_state()
        try:
            make("deb", timeout=300)
            arch = run(["dpkg", "--print-architecture"]).stdout.strip()
            deb = h.REPO / "build/deb" / f"slbd_{VERSION}_{arch}.deb"
            assert deb.exists(), sorted(os.listdir(h.REPO / "build/deb"))
            assert not list(h.REPO.parent.glob("slbd_*")), "dpkg-buildpackage wrote outside build/"

            dpkg("-i", deb)
            assert installed()
            files = [f for f in run(["dpkg", "-L", "slbd"]).stdout.split() if Path(f).is_file()]
            for f in ("/usr/sbin/slbd", "/usr/bin/slbctl", "/lib/systemd/system/slbd.service",
                      "/etc/logrotate.d/slbd", "/usr/share/man/man8/slbd.8.gz",
                      "/usr/share/man/man1/slbctl.1.gz",
                      "/usr/share/bash-completion/completions/slbctl"):
                assert f in files, files
            user = pwd.getpwnam("slbd")
            assert user.pw_uid < 1000 and user.pw_shell.endswith("nologin"), user
            assert grp.getgrgid(user.pw_gid).gr_name == "slbd"
            st = os.stat("/var/lib/slbd")
            assert (st.st_uid, st.st_mode & 0o777) == (user.pw_uid, 0o700)
            # Enabled, although no systemd runs here to start it.
            assert Path("/etc/systemd/system/multi-user.target.wants/slbd.service").is_symlink()
            for prog in ("/usr/sbin/slbd", "/usr/bin/slbctl"):
                out = run([prog, "--version"]).stdout
                assert out.startswith(f"{Path(prog).name} {VERSION}"), out
            if Path("/run/systemd/system").is_dir():
                # A booted systemd started the service on installation: stop it, so the
                # state directory has one user.
                run(["systemctl", "stop", "slbd"], check=False)
            run_packaged_slbd(tmp_path)

            dpkg("-r", "slbd")
            assert not installed()
            # Configuration files and the state (certificates, keys) stay until a purge.
            assert [f for f in files if Path(f).exists()] == ["/etc/logrotate.d/slbd"]
            assert exists_user("slbd") and Path("/var/lib/slbd/admin.token").exists()

            dpkg("--purge", "slbd")
            assert [f for f in files if Path(f).exists()] == []
            assert machine_state() == before
        finally:
            if run(["dpkg-query", "-W", "slbd"], check=False).returncode == 0:
                dpkg("--purge", "slbd")
