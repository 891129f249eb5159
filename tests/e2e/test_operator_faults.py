# SPDX-License-Identifier: Apache-2.0
"""What operators and their machines do to slbd: the state directory's file system fills up or
turns read-only while slbd persists an API change, the state directory is removed, is a file
or holds a directory where config.json belongs, a listener's port is taken by another process
(through the API, at start-up and on SIGHUP), and a burst of SIGHUPs under traffic. A failed
write answers 500 and changes nothing, the old files stay intact, and traffic keeps flowing.
(kill -9 during API writes is covered by test_state.py for config.json and by
test_cert_replace.py for certificates.)"""

import errno
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import hostile_util as hu
import slbd_harness as h
from http_util import add_listener, hx, listener_stats  # noqa: F401
from pki import pki  # noqa: F401

NOHC = h.no_health_check()

# What slbd logs when a durable write fails: expected by the tests below.
WRITE_ERRORS = (r"No space left|Read-only file system|No such file or directory|"
                r"storage_failed|write_failed|cannot write|cannot create|fsync|rename")


def _mount_tmpfs(path, size="2m"):
    path.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                            str(path)], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs for the state directory: {e}")
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs for the state directory (needs root or "
                    f"CAP_SYS_ADMIN): {p.stderr.decode(errors='replace').strip()}")


def _umount(path):
    for argv in (["umount", str(path)], ["umount", "-l", str(path)]):
        p = subprocess.run(argv, capture_output=True, timeout=20)
        if p.returncode == 0:
            return


@pytest.fixture
def small_fs(workdir):
    """A 2 MiB tmpfs mounted under the test's directory (unmounted after slbd has stopped:
    request this fixture before slbd_factory)."""
    mnt = workdir / "small-fs"
    _mount_tmpfs(mnt)
    yield mnt
    _umount(mnt)


def fill(path):
    """Write a file until the file system is full; returns its path."""
    filler = path / "filler"
    # Unbuffered: the ENOSPC comes from our write, not from a flush at close.
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def state_snapshot(d):
    """Every file of the state directory with its bytes (the filler, the audit log, which
    records the refused writes too, and upgrade.sock, a socket, excluded)."""
    out = {}
    for root, _, files in os.walk(d):
        for n in files:
            p = os.path.join(root, n)
            if n.startswith("filler") or n == "audit.log" or not os.path.isfile(p):
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = f.read()
    return out


def serving_site(slbd, hx):
    b = hx.backend("a")
    slbd.add_group("g", [b.server()], health_check=NOHC)
    port = add_listener(slbd, "web", "g")
    assert hu.simple_get(port) == 200
    return port


def refused_writes(slbd, pki):
    """Every kind of API write; each must answer 500 with storage_failed/write_failed."""
    cert = {"name": "late", "type": "server", "certificate": pki.chain("server"),
            "private_key": pki.key("server")}
    lis = slbd.api.get("/v1/listeners/web")[1]
    cases = [
        ("POST /v1/groups", "POST", "/v1/groups", {"name": "new", "servers": []}),
        ("PUT /v1/listeners/web", "PUT", "/v1/listeners/web",
         dict(lis, idle_timeout_s=lis["idle_timeout_s"] + 1)),
        ("DELETE /v1/groups/spare", "DELETE", "/v1/groups/spare", None),
        ("POST /v1/apply", "POST", "/v1/apply", {"settings": {"drain_timeout_s": 7}}),
        ("POST /v1/certificates", "POST", "/v1/certificates", cert),
    ]
    out = []
    for what, method, path, body in cases:
        r = slbd.api.request(method, path, body)
        out.append((what, r.status, r.error_code()))
    return out


@pytest.mark.timeout(90)
def test_disk_full_while_persisting(small_fs, slbd_factory, hx, pki):
    d = slbd_factory(state_dir=small_fs / "state")
    d.allow_errors(WRITE_ERRORS)
    port = serving_site(d, hx)
    d.add_group("spare", [])
    before = state_snapshot(d.state_dir)
    config_before = (d.state_dir / "config.json").read_bytes()
    fill(small_fs)
    with hu.Prober(port) as p:
        results = refused_writes(d, pki)
    assert all(st == 500 and code in ("storage_failed", "write_failed")
               for _, st, code in results), results
    # Nothing changed: not the files (config.json byte for byte, no new certificate file, no
    # temporary file left behind) and not the running configuration.
    assert (d.state_dir / "config.json").read_bytes() == config_before
    after = state_snapshot(d.state_dir)
    assert after == before, (sorted(set(after) ^ set(before)), "files differ")
    assert [g["name"] for g in d.api.get("/v1/groups")[1]["groups"]] == ["g", "spare"]
    assert d.api.get("/v1/certificates")[1]["certificates"] == []
    lis = d.api.get("/v1/listeners/web")[1]
    assert json.loads(config_before)["listeners"][0] == lis
    p.assert_all_ok()
    # Space again: the same write goes through and is durable across a restart.
    for f in small_fs.glob("filler*"):
        f.unlink()
    assert d.api.post("/v1/groups", {"name": "new", "servers": []})[0] == 201
    d.restart()
    assert [g["name"] for g in d.api.get("/v1/groups")[1]["groups"]] == ["g", "spare", "new"]
    assert hu.simple_get(port) == 200


@pytest.mark.timeout(60)
def test_read_only_state_dir_while_running(small_fs, slbd_factory, hx, pki):
    d = slbd_factory(state_dir=small_fs / "state")
    d.allow_errors(WRITE_ERRORS)
    port = serving_site(d, hx)
    d.add_group("spare", [])
    before = state_snapshot(d.state_dir)
    p = subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {p.stderr.decode(errors='replace')}")
    try:
        with hu.Prober(port) as probe:
            results = refused_writes(d, pki)
        assert all(st == 500 and code in ("storage_failed", "write_failed")
                   for _, st, code in results), results
        assert state_snapshot(d.state_dir) == before
        assert [g["name"] for g in d.api.get("/v1/groups")[1]["groups"]] == ["g", "spare"]
        probe.assert_all_ok()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], capture_output=True)
    assert d.api.post("/v1/groups", {"name": "new", "servers": []})[0] == 201


def generation(slbd):
    return slbd.api.get("/healthz")[1]["generation"]


def test_state_dir_removed_while_running(slbd, hx, pki):
    slbd.allow_errors(WRITE_ERRORS)
    port = serving_site(slbd, hx)
    slbd.add_group("spare", [])
    gen = generation(slbd)
    subprocess.run(["rm", "-rf", str(slbd.state_dir)], check=True)
    with hu.Prober(port) as p:
        results = refused_writes(slbd, pki)
    assert all(st == 500 and code in ("storage_failed", "write_failed")
               for _, st, code in results), results
    # Nothing was recreated behind the operator's back, and nothing changed in memory.
    assert not slbd.state_dir.exists()
    assert [g["name"] for g in slbd.api.get("/v1/groups")[1]["groups"]] == ["g", "spare"]
    p.assert_all_ok()
    # The refused writes used up no generation: the next change is the next one.
    assert generation(slbd) == gen
    slbd.state_dir.mkdir(mode=0o700)
    assert slbd.api.post("/v1/groups", {"name": "new", "servers": []})[0] == 201
    assert generation(slbd) == gen + 1


@pytest.mark.parametrize("damage", ["state-dir-is-a-file", "config-json-is-a-directory",
                                    "certs-is-a-file", "config-json-is-a-fifo"])
def test_unusable_state_dir_refused_at_start(slbd_factory, workdir, damage):
    state = workdir / "state"
    d = slbd_factory(start=False, state_dir=state)
    if damage == "state-dir-is-a-file":
        state.write_text("not a directory\n")
        named = str(state)
    else:
        state.mkdir(mode=0o700)
        if damage == "config-json-is-a-directory":
            (state / "config.json").mkdir()
            named = "config.json"
        elif damage == "config-json-is-a-fifo":
            os.mkfifo(state / "config.json")
            named = "config.json"
        else:
            (state / "certs").write_text("not a directory\n")
            named = "certs"
    before = sorted(os.listdir(state)) if state.is_dir() else None
    for args in (["--check"], []):
        # A FIFO must not be opened for a blocking read: slbd would wait for a writer.
        rc, text = d.run_once(*args, timeout=5 if "fifo" in damage else 15)
        assert rc != 0, f"slbd {args} accepted a state dir with {damage}:\n{text}"
        assert named in text, f"the message does not name {named!r}:\n{text}"
    if before is not None:
        # Start-up may create what was missing (certs/, admin.token, tickets.json) but
        # replaces nothing that was there.
        now = set(os.listdir(state))
        assert set(before) <= now and now - set(before) <= {"certs", "admin.token",
                                                             "tickets.json", "lock"}, now
    else:
        assert state.read_text() == "not a directory\n"


# --------------------------------------------------------------------------------------------
# Ports taken by someone else
# --------------------------------------------------------------------------------------------


def _hold_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


def test_port_in_use_through_the_api(slbd, hx):
    port = serving_site(slbd, hx)
    holder, taken = _hold_port()
    try:
        with hu.Prober(port) as p:
            r = slbd.api.request("POST", "/v1/listeners", {
                "name": "second", "protocol": "http", "bind": f"127.0.0.1:{taken}",
                "backend_group": "g"})
            assert r.status == 400 and r.error_code() == "bind_failed", r
            assert "second" in r.json["error"]["message"] and str(taken) in \
                r.json["error"]["message"], r
            lis = slbd.api.get("/v1/listeners/web")[1]
            r = slbd.api.request("PUT", "/v1/listeners/web",
                                 dict(lis, bind=f"127.0.0.1:{taken}"))
            assert r.status == 400 and r.error_code() == "bind_failed", r
        p.assert_all_ok()
        assert slbd.api.get("/v1/listeners/web")[1] == lis
        assert slbd.api.get("/v1/listeners/second")[0] == 404
    finally:
        holder.close()


def test_port_in_use_at_start_up(slbd, hx):
    port = serving_site(slbd, hx)
    assert slbd.stop() == 0
    config = (slbd.state_dir / "config.json").read_bytes()
    holder = socket.socket()
    # SO_REUSEADDR only to get past the TIME_WAIT entries of our own requests; the port is
    # then held exclusively, as by any other daemon.
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen(8)
    try:
        rc, text = slbd.run_once(timeout=20)
        assert rc != 0, f"slbd started although 127.0.0.1:{port} is taken:\n{text}"
        assert "web" in text and str(port) in text, f"the message names no listener:\n{text}"
        assert "cannot start" in text, text
        assert (slbd.state_dir / "config.json").read_bytes() == config
    finally:
        holder.close()
    slbd.start()
    assert hu.simple_get(port) == 200


def test_port_in_use_on_sighup(slbd, hx):
    slbd.allow_errors(r"reload refused")
    port = serving_site(slbd, hx)
    holder, taken = _hold_port()
    try:
        doc = json.loads((slbd.state_dir / "config.json").read_text())
        doc["listeners"].append(dict(doc["listeners"][0], name="hup", bind=f"127.0.0.1:{taken}"))
        (slbd.state_dir / "config.json").write_text(json.dumps(doc))
        n = slbd.log_text().count("reload refused")
        slbd.signal(signal.SIGHUP)
        h.wait_until(lambda: slbd.log_text().count("reload refused") > n, 10,
                     "the reload to be refused")
        text = slbd.log_text().split("reload refused")[-1].splitlines()[0]
        assert "hup" in text and str(taken) in text, text
        assert slbd.running() and hu.simple_get(port) == 200
        assert slbd.api.get("/v1/listeners/hup")[0] == 404
    finally:
        holder.close()


@pytest.mark.timeout(60)
def test_sighup_storm_under_traffic(slbd, hx):
    port = serving_site(slbd, hx)
    with hu.Prober(port, interval=0.02) as p:
        for _ in range(100):
            slbd.signal(signal.SIGHUP)
            time.sleep(0.01)
        time.sleep(0.5)
    assert slbd.running()
    p.assert_all_ok(minimum=20)
    assert listener_stats(slbd, "web") is not None


# --------------------------------------------------------------------------------------------
# make run twice
# --------------------------------------------------------------------------------------------


def test_second_demo_is_refused(workdir):
    """A second `make run` (scripts/demo.sh) while one runs says why it cannot start and
    touches nothing: the first demo's state directory stays and its listeners keep serving."""
    ports = [h.free_port() for _ in range(6)]
    env = dict(os.environ, SLBD_BUILD=str(h.build_dir()), SLBD_DEMO_STATE=str(workdir / "demo"),
               SLBD_DEMO_ADMIN=f"127.0.0.1:{ports[0]}", HTTPS_PORT=str(ports[1]),
               HTTP_PORT=str(ports[2]), TCP_PORT=str(ports[3]),
               SLBD_DEMO_BACKEND_PORTS=f"{ports[4]} {ports[5]}")
    script = str(h.REPO / "scripts" / "demo.sh")
    first = subprocess.Popen(["bash", script], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + h.scaled(60)
        while time.monotonic() < deadline:
            line = first.stdout.readline().decode(errors="replace")
            lines.append(line)
            if not line or "slbd is running" in line:
                break
        assert "slbd is running" in "".join(lines), "".join(lines)
        before = sorted(p.name for p in (workdir / "demo").iterdir())
        token = (workdir / "demo" / "admin.token").read_bytes()
        second = subprocess.run(["bash", script], env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=h.scaled(30))
        assert second.returncode == 1, (second.stdout, second.stderr)
        assert "another demo is already running" in second.stderr, second.stderr
        assert sorted(p.name for p in (workdir / "demo").iterdir()) == before
        assert (workdir / "demo" / "admin.token").read_bytes() == token
        # The first demo still serves its tour: the https listener answers through a backend.
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert",
                            str(workdir / "demo" / "demo-pki" / "ca.crt"),
                            f"https://localhost:{ports[1]}/hello"],
                           capture_output=True, text=True, timeout=h.scaled(20))
        assert r.stdout == "200", (r.stdout, r.stderr)
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        try:
            first.wait(h.scaled(30))
        except subprocess.TimeoutExpired:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)


def test_unreachable_certs_dir_names_the_real_error(slbd_factory):
    """A state directory that slbd's user can stat but not enter: `certs` is a directory all
    right, and the message says what is wrong with it (Permission denied)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run slbd as another user")
    top = tempfile.mkdtemp(prefix="slbd-perm-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        state = os.path.join(top, "state")
        os.mkdir(state, 0o700)
        os.mkdir(os.path.join(state, "certs"), 0o700)
        for d in (state, os.path.join(state, "certs")):
            os.chown(d, 65534, 65534)  # slbd's user: only the mode is in the way
        os.chmod(state, 0o600)  # readable, not searchable
        for args in (["--check"], ["--admin", f"127.0.0.1:{h.free_port()}", "--workers", "1"]):
            p = subprocess.run(["runuser", "-u", "nobody", "--", str(h.binary("slbd")),
                                "--state-dir", state, *args], capture_output=True, text=True,
                               timeout=h.scaled(20), stdin=subprocess.DEVNULL)
            assert p.returncode == 1, (args, p.stdout, p.stderr)
            assert "Permission denied" in p.stderr, (args, p.stderr)
            assert "not a directory" not in p.stderr, (args, p.stderr)
    finally:
        os.chmod(os.path.join(top, "state"), 0o700)
        subprocess.run(["rm", "-rf", top], check=True)
