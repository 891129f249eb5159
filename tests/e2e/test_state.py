# SPDX-License-Identifier: Apache-2.0
"""The state directory end to end: config.json follows every change durably, --check, refusing
a bad state at start-up without touching it, the token's mode, kill -9 in the middle of writes,
SIGHUP reloads (good and bad) and the graceful SIGTERM drain."""

import json
import os
import signal
import stat
import subprocess
import threading
import time

import pytest

import slbd_harness as h
from pki import pki  # noqa: F401


def disk_config(slbd):
    return json.loads((slbd.state_dir / "config.json").read_text())


def assert_disk_matches_api(slbd):
    doc = disk_config(slbd)
    assert set(doc) == {"listeners", "groups", "settings"}, doc.keys()
    assert slbd.api.get("/v1/listeners") == (200, {"listeners": doc["listeners"]})
    assert slbd.api.get("/v1/groups") == (200, {"groups": doc["groups"]})
    return doc


def tmp_leftovers(state_dir):
    return [n for n in os.listdir(state_dir) if n.endswith(".tmp")]


def test_config_json_follows_every_change(slbd, backend):
    a, b = backend("a"), backend("b")
    steps = [
        lambda: slbd.add_group("g", [a.server()]),
        lambda: slbd.add_group("g2", [b.server(5)], scheduler="rr"),
        lambda: slbd.add_tcp_listener("l", "g", proxy_protocol="v2"),
        lambda: slbd.put_group("g", [a.server(3), b.server(4)], scheduler="wlc"),
        lambda: slbd.api.put("/v1/listeners/l", dict(slbd.api.get("/v1/listeners/l")[1],
                                                     backend_group="g2")),
        lambda: slbd.api.delete("/v1/listeners/l"),
        lambda: slbd.api.delete("/v1/groups/g"),
        lambda: slbd.api.post("/v1/apply", {"settings": {"drain_timeout_s": 4}}),
    ]
    for step in steps:
        step()
        assert_disk_matches_api(slbd)
        assert tmp_leftovers(slbd.state_dir) == []
    doc = disk_config(slbd)
    assert [g["name"] for g in doc["groups"]] == ["g2"]
    assert doc["listeners"] == []
    assert doc["settings"]["drain_timeout_s"] == 4
    # A refused change leaves the file as it was, byte for byte.
    before = (slbd.state_dir / "config.json").read_bytes()
    st, _ = slbd.api.post("/v1/groups", {"name": "bad", "servers": [{"port": 1}]})
    assert st == 400
    assert (slbd.state_dir / "config.json").read_bytes() == before


def test_admin_token_mode(slbd):
    st = os.stat(slbd.state_dir / "admin.token")
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    token = (slbd.state_dir / "admin.token").read_text()
    assert len(token.strip()) >= 16
    # The state directory itself is private too.
    assert stat.S_IMODE(os.stat(slbd.state_dir).st_mode) & 0o077 == 0
    # The token survives a restart (same file, same token).
    slbd.restart()
    assert (slbd.state_dir / "admin.token").read_text() == token
    assert slbd.api.get("/v1/groups")[0] == 200


def test_second_slbd_on_the_same_state_dir_is_refused(slbd, backend):
    """Two daemons on one state directory would both write config.json and rotate the ticket
    keys: the second exits 1 naming the first one's pid, and touches nothing (not even the
    leftover of a write the first one may have in progress)."""
    a = backend("a")
    slbd.add_group("g", [a.server()])
    slbd.add_tcp_listener("l", "g")
    leftover = slbd.state_dir / f".config.json.{slbd.pid}.99.tmp"
    leftover.write_text("{")
    before = state_snapshot(slbd.state_dir)
    argv = [str(h.binary("slbd")), "--state-dir", str(slbd.state_dir), "--admin",
            f"127.0.0.1:{h.free_port()}", "--workers", "1"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=h.scaled(10))
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("a second slbd started on a state directory that is in use")
    text = out.decode(errors="replace")
    assert p.returncode == 1, text
    assert f"pid {slbd.pid}" in text and "state_locked" in text, text
    assert state_snapshot(slbd.state_dir) == before
    assert (slbd.state_dir / "lock").read_text().strip() == str(slbd.pid)
    assert slbd.api.get("/v1/groups")[0] == 200
    # Once the first has stopped, the directory is free again.
    leftover.unlink()
    slbd.restart()
    assert (slbd.state_dir / "lock").read_text().strip() == str(slbd.pid)


def test_state_dir_modes_and_owners(slbd, pki):
    """The state directory is private to slbd's user. Secrets that group or others can read
    (tickets.json, a certificate's file with its private key) or that another user owns are
    refused at start-up with the file named, as admin.token is; a directory another user owns
    is refused too; a directory others can write to is closed (0700) with a warning, as
    certs/ is."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give files to another user")
    cert = {"name": "site", "type": "server", "certificate": pki.chain("server"),
            "private_key": pki.key("server")}
    st, js = slbd.api.post("/v1/certificates", cert)
    assert st == 201, js
    assert slbd.stop() == 0
    state = slbd.state_dir
    certfile = state / "certs" / f"{js['id']}.json"
    nobody = 65534

    def refused(path, *, check=True):
        # Only the lock (taken first: it names the refused start's pid) may change.
        before = state_snapshot(state)
        before.pop("lock")
        for args in ((("--check",),) if check else ()) + ((),):
            rc, out = slbd.run_once(*args)
            assert rc == 1 and str(path) in out and "state_insecure" in out, (args, out)
        after = state_snapshot(state)
        after.pop("lock", None)
        assert after == before

    os.chmod(state / "tickets.json", 0o666)
    refused(state / "tickets.json", check=False)  # --check does not read the ticket keys
    os.chmod(state / "tickets.json", 0o600)
    os.chown(state / "tickets.json", nobody, nobody)
    refused(state / "tickets.json", check=False)
    os.chown(state / "tickets.json", 0, 0)
    os.chmod(certfile, 0o644)
    refused(certfile)
    os.chmod(certfile, 0o600)
    os.chown(certfile, nobody, nobody)
    refused(certfile)
    os.chown(certfile, 0, 0)
    os.chown(state, nobody, nobody)
    refused(state)
    os.chown(state, 0, 0)
    os.chown(state / "certs", nobody, nobody)
    refused(state / "certs")
    os.chown(state / "certs", 0, 0)
    # World-writable: --check reports it, a start closes it and runs.
    os.chmod(state, 0o777)
    rc, out = slbd.run_once("--check")
    assert rc == 1 and "writable by group or others" in out, out
    slbd.start()
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert "setting its mode to 0700" in slbd.log_text()
    assert slbd.api.get(f"/v1/certificates/{js['id']}")[0] == 200


def write_config(state_dir, doc):
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = state_dir / "config.json"
    path.write_text(json.dumps(doc, indent=2) if not isinstance(doc, str) else doc)
    return path


def good_doc(port, backend_port):
    return {
        "groups": [{"name": "g", "servers": [{"address": "127.0.0.1", "port": backend_port}]}],
        "listeners": [{"name": "l", "protocol": "tcp", "bind": f"127.0.0.1:{port}",
                       "backend_group": "g"}],
        "settings": {},
    }


BAD_DOCS = [
    ("out-of-range port", lambda d: d["listeners"][0].update(bind="127.0.0.1:99999"),
     "listeners[0].bind"),
    ("unknown field", lambda d: d["groups"][0].update(colour="red"), "groups[0].colour"),
    ("unknown group", lambda d: d["listeners"][0].update(backend_group="nope"),
     "listeners[0].backend_group"),
    ("weight", lambda d: d["groups"][0]["servers"][0].update(weight=500),
     "groups[0].servers[0].weight"),
    ("settings", lambda d: d["settings"].update(drain_timeout_s="x"),
     "settings.drain_timeout_s"),
]


def test_check_good_state(slbd, backend):
    a = backend("a")
    slbd.add_group("g", [a.server()])
    slbd.add_tcp_listener("l", "g")
    rc, out = slbd.run_once("--check")
    assert rc == 0, out


def state_snapshot(state_dir):
    """Every entry under the state directory, the directory itself included, with its type,
    mode, size and mtime: what a read-only command must leave exactly as it found it."""
    out = {}
    for p in [state_dir, *state_dir.rglob("*")]:
        st = os.lstat(p)
        out[str(p.relative_to(state_dir))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                              st.st_size, st.st_mtime_ns)
    return out


def test_check_and_refused_start_leave_a_new_state_dir_untouched(slbd_factory):
    """A state directory written by hand (config.json only, no certs/, tickets.json or
    admin.token yet) plus the leftover of an interrupted write: --check on a valid and on an
    invalid configuration, and a start refused for the invalid one, create, delete and rewrite
    nothing."""
    d = slbd_factory(start=False, name="ro")
    write_config(d.state_dir, good_doc(h.free_port(), h.free_port()))
    (d.state_dir / ".config.json.1.1.tmp").write_text('{"groups": [')
    before = state_snapshot(d.state_dir)
    assert set(before) == {".", "config.json", ".config.json.1.1.tmp"}, before
    rc, out = d.run_once("--check")
    assert rc == 0 and "is valid" in out, out
    assert state_snapshot(d.state_dir) == before
    doc = good_doc(h.free_port(), h.free_port())
    doc["listeners"][0]["backend_group"] = "nope"
    write_config(d.state_dir, doc)
    before = state_snapshot(d.state_dir)
    rc, out = d.run_once("--check")
    assert rc == 1 and "listeners[0].backend_group" in out, out
    assert state_snapshot(d.state_dir) == before
    rc, out = d.run_once()
    assert rc == 1 and "cannot start" in out and "listeners[0].backend_group" in out, out
    assert state_snapshot(d.state_dir) == before


def test_check_and_refused_start_leave_a_used_state_dir_untouched(slbd, backend):
    """The state directory of a daemon that ran (certs/, tickets.json, admin.token), with
    ticket keys due for rotation: --check does not rotate them, on a valid or an invalid
    configuration, nor does a start refused for the invalid one; and --check reports a
    certs/ directory others can read instead of changing its mode."""
    a = backend("a")
    slbd.add_group("g", [a.server()])
    slbd.add_tcp_listener("l", "g")
    assert slbd.stop() == 0
    state = slbd.state_dir
    tickets = state / "tickets.json"
    keys = json.loads(tickets.read_text())
    for k in keys["keys"]:
        k["created"] = 1  # long due: a start rotates at once
    tickets.write_text(json.dumps(keys))
    before = state_snapshot(state)
    assert {"certs", "tickets.json", "admin.token", "config.json"} <= set(before), before
    rc, out = slbd.run_once("--check")
    assert rc == 0 and "is valid" in out, out
    assert state_snapshot(state) == before
    good = (state / "config.json").read_bytes()
    doc = json.loads(good)
    doc["groups"][0]["servers"][0]["weight"] = 500
    write_config(state, doc)
    before = state_snapshot(state)
    for args in (("--check",), ()):
        rc, out = slbd.run_once(*args)
        assert rc == 1 and "groups[0].servers[0].weight" in out, (args, out)
        assert state_snapshot(state) == before, args
    (state / "config.json").write_bytes(good)
    os.chmod(state / "certs", 0o755)
    before = state_snapshot(state)
    rc, out = slbd.run_once("--check")
    assert rc == 1 and "certs is accessible by group or others" in out, out
    assert state_snapshot(state) == before
    # A start tightens the mode and rotates the keys that were due.
    slbd.start()
    assert stat.S_IMODE(os.stat(state / "certs").st_mode) == 0o700
    assert json.loads(tickets.read_text())["keys"][0]["created"] > 1


@pytest.mark.parametrize("what,mutate,field", BAD_DOCS, ids=[c[0] for c in BAD_DOCS])
def test_check_and_startup_refuse_bad_config(slbd_factory, what, mutate, field):
    d = slbd_factory(start=False, name="bad")
    doc = good_doc(h.free_port(), h.free_port())
    mutate(doc)
    path = write_config(d.state_dir, doc)
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    rc, out = d.run_once("--check")
    assert rc == 1, out
    assert "config.json" in out and field in out, out
    # Start-up refuses with the same message and exits; nothing is overwritten.
    rc, out = d.run_once()
    assert rc != 0, out
    assert "config.json" in out and field in out, out
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert tmp_leftovers(d.state_dir) == []


def test_check_and_startup_refuse_invalid_json(slbd_factory):
    d = slbd_factory(start=False, name="badjson")
    path = write_config(d.state_dir, '{"groups": [}\n')
    before = path.read_bytes()
    for args in (("--check",), ()):
        rc, out = d.run_once(*args)
        assert rc != 0, out
        assert "config.json" in out and ":1:" in out, out
    assert path.read_bytes() == before


def test_startup_with_good_hand_written_config(slbd_factory, backend):
    a = backend("a")
    d = slbd_factory(start=False, name="hand")
    port = h.free_port()
    write_config(d.state_dir, good_doc(port, a.port))
    d.start()
    assert h.who(d.clients, port) == "a"
    # Served normalized (defaults filled in); the hand-written file is left as written until
    # the next change through the API.
    st, lis = d.api.get("/v1/listeners/l")
    assert st == 200 and lis["established_timeout_s"] == 900 and lis["bind"].endswith(f":{port}")
    d.add_group("g2", [])
    assert_disk_matches_api(d)


@pytest.mark.timeout(120)
def test_kill9_during_writes(slbd, backend):
    a = backend("a")
    slbd.add_group("base", [a.server()])
    port = slbd.add_tcp_listener("l", "base")
    for round_no in range(3):
        api = slbd.api
        done = threading.Event()
        ok = [0]

        def churn():
            i = 0
            while not done.is_set():
                name = f"burst{round_no}-{i % 5}"
                try:
                    st, _ = api.post("/v1/groups", {"name": name, "servers": [a.server(i % 100)]})
                    if st == 201:
                        ok[0] += 1
                    st, _ = api.delete(f"/v1/groups/{name}")
                    if st == 204:
                        ok[0] += 1
                    i += 1
                except Exception:  # noqa: BLE001 - refused, reset or cut short mid-answer
                    return  # the daemon is gone

        t = threading.Thread(target=churn, daemon=True)
        t.start()
        h.wait_until(lambda: ok[0] >= 10 + 7 * round_no, 20, "API writes to be under way")
        slbd.kill9()
        done.set()
        t.join(h.scaled(20))
        assert not t.is_alive()
        doc = disk_config(slbd)  # valid JSON, whichever state it holds
        assert [g["name"] for g in doc["groups"]][0] == "base"
        rc, out = slbd.run_once("--check")
        assert rc == 0, out
        slbd.start()
        assert_disk_matches_api(slbd)
        assert h.who(slbd.clients, port) == "a"
        # Writing works after the restart, whatever leftovers the kill produced.
        st, _ = slbd.api.post("/v1/groups", {"name": f"after{round_no}", "servers": []})
        assert st == 201
        assert_disk_matches_api(slbd)


def test_sighup_reload(slbd, backend, clients):
    a, b = backend("a"), backend("b")
    slbd.add_group("g", [a.server()])
    slbd.add_tcp_listener("l", "g")
    gen = slbd.api.request("GET", "/healthz", token=None).json["generation"]
    doc = disk_config(slbd)
    doc["groups"].append({"name": "hup", "servers": [b.server()]})
    new_port = h.free_port()
    doc["listeners"].append({"name": "hup-l", "protocol": "tcp", "bind": f"127.0.0.1:{new_port}",
                             "backend_group": "hup"})
    write_config(slbd.state_dir, doc)
    slbd.signal(signal.SIGHUP)
    h.wait_until(lambda: slbd.api.get("/v1/groups/hup")[0] == 200, 10, "group from SIGHUP")
    assert slbd.api.get("/v1/listeners/hup-l")[0] == 200
    assert h.who(clients, new_port) == "b"
    assert slbd.api.request("GET", "/healthz", token=None).json["generation"] > gen


def test_sighup_with_invalid_config_keeps_running(slbd, backend, clients):
    a = backend("a")
    slbd.add_group("g", [a.server()])
    port = slbd.add_tcp_listener("l", "g")
    slbd.allow_errors(r"reload refused")
    before_api = assert_disk_matches_api(slbd)
    gen = slbd.api.request("GET", "/healthz", token=None).json["generation"]
    for bad in ('{"groups": [', json.dumps(dict(before_api, listeners=[
            dict(before_api["listeners"][0], backend_group="nope")]))):
        n_refused = slbd.log_text().count("reload refused")
        write_config(slbd.state_dir, bad)
        slbd.signal(signal.SIGHUP)
        h.wait_until(lambda: slbd.log_text().count("reload refused") > n_refused, 10,
                     "the reload to be refused")
        assert slbd.running()
        assert slbd.api.get("/v1/groups")[1]["groups"] == before_api["groups"]
        assert slbd.api.get("/v1/listeners")[1]["listeners"] == before_api["listeners"]
        assert slbd.api.request("GET", "/healthz", token=None).json["generation"] == gen
        assert h.who(clients, port) == "a"
    # The next API change writes a valid file again.
    slbd.add_group("later", [])
    assert_disk_matches_api(slbd)


def test_sigterm_drains_then_exits(slbd, backend, clients):
    a = backend("a")
    st, _ = slbd.api.post("/v1/apply", {"settings": {"drain_timeout_s": 3}})
    assert st == 200
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    s = clients.connect(port)
    h.echo_roundtrip(s, b"before\n")
    t0 = time.monotonic()
    slbd.signal(signal.SIGTERM)
    # The connection that was open keeps working while slbd drains.
    h.echo_roundtrip(s, b"during the drain\n")
    rc = slbd.stop(timeout=3 + 10)  # already signalled; this waits and records the exit
    elapsed = time.monotonic() - t0
    assert rc == 0
    assert elapsed <= 3 + h.scaled(3), f"exit took {elapsed:.1f} s with drain_timeout_s 3"
    # The idle connection held slbd until the bound, then was closed.
    assert elapsed >= 2.5, f"exited after {elapsed:.1f} s without draining"
    assert h.wait_closed(s, 5) in ("eof", "reset")


def test_sigterm_without_connections_is_prompt(slbd, backend):
    a = backend("a")
    slbd.add_group("g", [a.server()])
    slbd.add_tcp_listener("l", "g")
    t0 = time.monotonic()
    assert slbd.stop() == 0
    assert time.monotonic() - t0 < h.scaled(2)


def test_sigterm_stops_accepting(slbd, backend, clients):
    """While slbd drains (an idle connection holds it), its listeners no longer take new
    connections: a client is refused or closed at once instead of waiting in a backlog that
    nobody accepts from until the drain bound resets it."""
    a = backend("a")
    st, _ = slbd.api.post("/v1/apply", {"settings": {"drain_timeout_s": 5}})
    assert st == 200
    slbd.add_group("g", [a.server()], health_check=h.no_health_check())
    port = slbd.add_tcp_listener("l", "g")
    held = clients.connect(port)
    h.echo_roundtrip(held, b"held\n")
    slbd.signal(signal.SIGTERM)
    # The control thread handles the signal asynchronously: give it a moment (the drain
    # lasts 5 s, so this stays well inside it).
    time.sleep(0.5)
    assert slbd.running(), "slbd exited before the drain bound with a connection open"
    t0 = time.monotonic()
    try:
        s = clients.connect(port, timeout=3)
        s.sendall(b"WHO\n")
        s.settimeout(1.0)
        data = s.recv(100)
        outcome = f"served ({data!r})" if data else "closed"
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
        outcome = "refused"
    except TimeoutError:
        outcome = "hanging"
    assert outcome in ("refused", "closed"), (
        f"a connection made 0.5 s into the drain was {outcome} after "
        f"{time.monotonic() - t0:.1f} s: the listening sockets still take connections while "
        "slbd drains")
    assert slbd.stop(timeout=15) == 0
