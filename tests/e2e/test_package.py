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

import os
import re
import shutil
import subprocess
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
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    text = unit.read_text()
    for line in ("Type=notify", "User=slbd", "Group=slbd", "StateDirectory=slbd",
                 "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
                 "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                 "ProtectControlGroups=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "LockPersonality=yes", "MemoryDenyWriteExecute=yes", "RestrictRealtime=yes",
                 "SystemCallArchitectures=native", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert f"\n{line}\n" in text, line
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
    ("slbctl ", {"cert", "listener", "group", "server", "stats", "apply", "metrics", "health",
                 "help"}),
    ("slbctl --state-dir /x lis", {"listener"}),
    ("slbctl listener ", {"create", "list", "show", "update", "delete"}),
    ("slbctl listener create --pro", {"--protocol", "--proxy-protocol"}),
    ("slbctl listener create --protocol ", {"tcp", "http", "https"}),
    ("slbctl group create --scheduler ", {"wrr", "rr", "wlc", "sch", "tch"}),
    ("slbctl cert upload --cert ", {"FILE"}),
    ("slbctl --state-dir ", {"FILE-DIR"}),
    ("slbctl server ", {"add", "remove", "set-weight"}),
    ("slbctl stats --w", {"--watch"}),
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
