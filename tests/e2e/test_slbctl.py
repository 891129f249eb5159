# SPDX-License-Identifier: Apache-2.0
"""slbctl for people: the default `stats` screen fits 100 columns (full tables with --wide,
JSON with --json), every command's --help lists its options and their values, SLBD_ADMIN
names the daemon, and `config export` / `config import [--dry-run]` save and restore the whole
configuration through GET /v1/config and POST /v1/apply."""

import calendar
import json
import os
import re
import signal
import subprocess
import time

import pytest

import slbd_harness as h
from cert_util import slbctl
from pki import pki, upload_server  # noqa: F401


def run_cli(*args, env_extra=None, drop=("SLBD_TOKEN", "SLBD_ADMIN", "COLUMNS")):
    """build/slbctl with a clean environment (no admin address, token or width inherited)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra or {})
    return subprocess.run([str(h.binary("slbctl")), *map(str, args)], capture_output=True,
                          text=True, timeout=h.scaled(30), env=env, stdin=subprocess.DEVNULL)


def commands():
    """{"listener create": its usage text (with continuation lines), ...} from `slbctl help`,
    which lists the command table."""
    p = run_cli("help")
    assert p.returncode == 0, p.stderr
    out, cur = {}, None
    for line in p.stdout.splitlines():
        m = re.match(r"  slbctl (\w+)(?: ([a-z][a-z-]*))?(.*)", line)
        if m:
            cur = " ".join(w for w in m.groups()[:2] if w)
            out[cur] = line
        elif cur and line.startswith("        "):
            out[cur] += line
        else:
            cur = None
    return out


def test_help_describes_every_command_and_its_options():
    cmds = commands()
    assert {"listener create", "group update", "stats", "apply", "config export",
            "config import", "server set-weight"} <= set(cmds), cmds
    for cmd, usage in cmds.items():
        words = cmd.split()
        for argv in ([*words, "--help"], ["help", *words], [*words, "-h"]):
            p = run_cli(*argv)
            assert p.returncode == 0, (argv, p.returncode, p.stderr)
            assert p.stdout.startswith(f"usage: slbctl {cmd}"), (argv, p.stdout)
            # Every option of the usage line is described on a line of its own.
            described = set(re.findall(r"^  (-[-\w]+)|, (-[-\w]+)", p.stdout, re.M))
            described = {o for pair in described for o in pair if o}
            wanted = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage.split(" ", 3)[-1]))
            assert wanted <= described, (cmd, wanted - described, p.stdout)
            assert "--admin URL" in p.stdout  # and the global flags
    # Allowed values are spelled out.
    text = run_cli("listener", "create", "--help").stdout
    assert re.search(r"--protocol tcp\|http\|https", text), text
    assert re.search(r"--client-auth required\|optional", text), text
    assert "tls_cipher_policy_1_2_strict_with_1_3" in text and "--proxy-protocol v1|v2|none" in text
    text = run_cli("group", "update", "--help").stdout
    assert "--scheduler wrr|rr|wlc|sch|tch" in text and "--health tcp|http" in text, text
    text = run_cli("config", "import", "--help").stdout
    assert "--dry-run" in text, text
    # A group alone lists its verbs; an unknown verb is still a usage error.
    p = run_cli("config", "--help")
    assert p.returncode == 0 and "slbctl config export" in p.stdout and "config import" in p.stdout
    p = run_cli("config", "frobnicate")
    assert p.returncode == 2 and "unknown command 'config frobnicate'" in p.stderr, p.stderr


def test_every_command_refuses_bad_arguments_alike():
    """Every command parses its arguments the same way (slb_cli_parse) before it reaches the
    daemon: an unknown option, one argument too many or a missing one is exit status 2 with
    the problem and the command's usage on stderr, nothing on stdout."""
    cmds = commands()
    for cmd, usage in cmds.items():
        words = cmd.split()
        # "slbctl cert show ID": a positional argument is required.
        required = usage.strip()[len(f"slbctl {cmd}"):].strip()[:1].isupper()
        cases = [([*words, "--no-such-option"], "unknown option '--no-such-option'"),
                 ([*words, *["extra"] * 6], "unexpected argument 'extra'"),
                 ([*words, "--no-such-option=1"], "unknown option '--no-such-option'")]
        if required:
            cases.append((words, "missing argument"))
        for argv, problem in cases:
            p = run_cli(*argv)
            lines = p.stderr.splitlines()
            assert p.returncode == 2 and p.stdout == "", (argv, p.returncode, p.stdout)
            assert lines[0] == f"slbctl: {problem}", (argv, p.stderr)
            assert lines[1].startswith(f"usage: slbctl {cmd}"), (argv, p.stderr)


@pytest.fixture
def site(slbd, backend):
    """Two groups (one with a dead server) and four tcp listeners, three of them with names of
    the full 63 characters."""
    a = backend("a")
    slbd.add_group("web-frontend-backends-production", [a.server()],
                   health_check=h.no_health_check())
    slbd.add_group("broken", [{"address": "127.0.0.1", "port": h.dead_port(), "weight": 100}],
                   health_check=h.fast_health_check())
    names = [f"listener-{i}-" + "x" * 52 for i in range(3)]
    ports = [slbd.add_tcp_listener(n, "web-frontend-backends-production") for n in names]
    names.append("raw")
    ports.append(slbd.add_tcp_listener("raw", "broken"))
    assert all(len(n) == 63 for n in names[:3])
    return names, ports


def test_stats_fits_100_columns_wide_and_json(slbd, site, clients):
    names, ports = site
    assert h.who(clients, ports[0]) == "a"
    slbd.wait_health("broken", slbd.api.get("/v1/groups/broken")[1]["servers"][0]["port"],
                     "down", h.scaled(15))
    base = ["--admin", f"http://127.0.0.1:{slbd.admin_port}", "--state-dir", slbd.state_dir]
    p = run_cli(*base, "stats")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 100, p.stdout
    header = p.stdout.split("\n\n")[0].replace(",\n", ", ")  # wrapped between its facts
    assert re.match(r"slbd: generation \d+, 2 workers, at most [\d.]+[kM]? connections, "
                    r"up \d+ s \(since "
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d\)$", header), header
    for n in names:  # never clipped
        assert any(re.search(rf"(^|\s){n}(\s|$)", ln) for ln in lines), (n, p.stdout)
    # The listener that carried a connection, in the row under its name.
    i = lines.index(names[0])
    assert re.match(rf"\s+tcp\s+127\.0\.0\.1:{ports[0]}\s+\d+\s+1\s", lines[i + 1]), lines[i + 1]
    # The health view per group: servers up, and the one down with the reason.
    row = next(ln for ln in lines if ln.startswith("broken "))
    assert re.search(r"\s0/1\s.*127\.0\.0\.1:\d+ \(connect: Connection refused\)", row), row
    assert re.search(r"\s1/1\s", p.stdout[p.stdout.index("web-frontend-backends-production"):])
    # A narrower terminal is honoured too (COLUMNS when stdout is not a tty).
    p = run_cli(*base, "stats", env_extra={"COLUMNS": "80"})
    assert p.returncode == 0 and max(map(len, p.stdout.splitlines())) <= 80, p.stdout

    # --wide: every counter, one row per listener with its full name.
    p = run_cli(*base, "stats", "--wide")
    assert p.returncode == 0, p.stderr
    assert "CONNECTIONS" in p.stdout and "WIRE_BYTES.IN" in p.stdout and "LAST_CHECK" in p.stdout
    assert any(ln.startswith(names[1] + " ") and f":{ports[1]}" in ln
               for ln in p.stdout.splitlines()), p.stdout
    assert "started_ms" not in p.stdout and ", up " in p.stdout.splitlines()[0]

    # --json: the API's document as it is.
    for args in (("--json", "stats"), ("stats", "--json")):
        p = run_cli(*base, *args)
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert {x["name"] for x in doc["listeners"]} == set(names)
        assert isinstance(doc["started_ms"], int)


def test_slbd_admin_environment(slbd, site):
    token = {"SLBD_TOKEN": slbd.api.token}
    live = f"127.0.0.1:{slbd.admin_port}"
    dead = f"127.0.0.1:{h.dead_port()}"
    # Without a scheme, like slbd's own --admin ADDR:PORT.
    for addr in (live, f"http://{live}"):
        p = run_cli("listener", "list", env_extra={**token, "SLBD_ADMIN": addr})
        assert p.returncode == 0 and "raw" in p.stdout, (addr, p.returncode, p.stderr)
    # The environment is used: a dead address fails, naming it.
    p = run_cli("listener", "list", env_extra={**token, "SLBD_ADMIN": dead})
    assert p.returncode == 3 and dead in p.stderr, (p.returncode, p.stderr)
    # --admin wins over it.
    p = run_cli("--admin", live, "listener", "list", env_extra={**token, "SLBD_ADMIN": dead})
    assert p.returncode == 0 and "raw" in p.stdout, p.stderr
    # A malformed one is a usage error that says where the address came from.
    p = run_cli("listener", "list", env_extra={**token, "SLBD_ADMIN": "ftp://x"})
    assert p.returncode == 2 and "SLBD_ADMIN: unsupported URL scheme" in p.stderr, p.stderr
    # An empty SLBD_ADMIN is as good as none (the default address).
    p = run_cli("health", env_extra={**token, "SLBD_ADMIN": ""})
    assert "127.0.0.1:9000" in p.stderr or p.returncode == 0, p.stderr


def test_get_config_answers_the_whole_document_with_its_etag(slbd, site):
    r = slbd.api.request("GET", "/v1/config")
    assert r.status == 200, r
    assert set(r.json) == {"listeners", "groups", "settings"}
    assert {x["name"] for x in r.json["listeners"]} == set(site[0])
    assert r.json["groups"] == slbd.api.get("/v1/groups")[1]["groups"]
    assert r.json["settings"] == slbd.api.get("/v1/settings")[1]
    etag = r.headers["ETag"]
    # The same ETag POST /v1/apply checks: a write against it passes, a stale one is refused.
    body = {"settings": dict(r.json["settings"], drain_timeout_s=7)}
    r2 = slbd.api.request("POST", "/v1/apply", body, headers={"If-Match": etag})
    assert r2.status == 200 and r2.headers["ETag"] != etag, r2
    r3 = slbd.api.request("POST", "/v1/apply", body, headers={"If-Match": etag})
    assert r3.status == 412, r3
    assert slbd.api.request("GET", "/v1/config").headers["ETag"] == r2.headers["ETag"]
    assert slbd.api.request("PUT", "/v1/config", {}).status == 405
    assert slbd.api.request("GET", "/v1/config?x=1").status == 400


def generation(slbd):
    return slbd.api.request("GET", "/healthz", token=None).json["generation"]


def test_config_export_import_round_trip(slbd, site, workdir, clients):
    names, ports = site
    saved = workdir / "saved.json"
    p = slbctl(slbd, "config", "export", saved)
    assert p.returncode == 0, p.stderr
    assert "exported 4 listeners, 2 groups" in p.stdout, p.stdout
    exported = json.loads(saved.read_text())
    assert exported == slbd.api.get("/v1/config")[1]
    # Without a file: the same JSON on stdout.
    p = slbctl(slbd, "config", "export")
    assert p.returncode == 0 and json.loads(p.stdout) == exported
    # Change things: a listener gone, a group's scheduler, a setting.
    assert slbd.api.delete(f"/v1/listeners/{names[0]}")[0] == 204
    g = slbd.api.get("/v1/groups/broken")[1]
    assert slbd.api.put("/v1/groups/broken", dict(g, scheduler="rr"))[0] == 200
    assert slbd.api.put("/v1/settings", dict(exported["settings"], drain_timeout_s=3))[0] == 200
    with pytest.raises(ConnectionRefusedError):
        clients.connect(ports[0])
    before = generation(slbd)
    p = slbctl(slbd, "config", "import", saved)
    assert p.returncode == 0, p.stderr
    assert "applied 4 listeners and 2 groups" in p.stdout, p.stdout
    assert slbd.api.get("/v1/config")[1] == exported
    assert generation(slbd) > before
    assert h.who(clients, ports[0]) == "a"
    # From standard input too.
    p = subprocess.run([str(h.binary("slbctl")), "--admin", f"http://127.0.0.1:{slbd.admin_port}",
                        "--state-dir", str(slbd.state_dir), "config", "import", "-"],
                       input=saved.read_text(), capture_output=True, text=True,
                       timeout=h.scaled(30))
    assert p.returncode == 0, p.stderr
    # Export refuses to write where it cannot, and leaves no temporary file behind.
    p = slbctl(slbd, "config", "export", workdir / "no-such-dir" / "x.json")
    assert p.returncode == 1 and "cannot write" in p.stderr, p.stderr


def test_config_import_dry_run_changes_nothing(slbd, site, workdir):
    names, _ = site
    saved = workdir / "saved.json"
    assert slbctl(slbd, "config", "export", saved).returncode == 0
    doc = json.loads(saved.read_text())
    doc["listeners"] = [x for x in doc["listeners"] if x["name"] != "raw"]
    doc["settings"]["drain_timeout_s"] = 4
    changed = workdir / "changed.json"
    changed.write_text(json.dumps(doc))
    before, gen = slbd.api.get("/v1/config")[1], generation(slbd)
    cfg_file = (slbd.state_dir / "config.json").read_bytes()
    for argv in (("config", "import", changed, "--dry-run"),
                 ("apply", "-f", changed, "--dry-run")):
        p = slbctl(slbd, *argv)
        assert p.returncode == 0, (argv, p.stderr)
        assert "would apply 3 listeners and 2 groups (dry run, nothing changed)" in p.stdout
        p = slbctl(slbd, "--json", *argv)
        assert p.returncode == 0 and json.loads(p.stdout)["settings"]["drain_timeout_s"] == 4
    assert slbd.api.get("/v1/config")[1] == before
    assert generation(slbd) == gen
    assert (slbd.state_dir / "config.json").read_bytes() == cfg_file
    # A dry run reports what the real import would refuse.
    doc["listeners"][0]["backend_group"] = "nope"
    changed.write_text(json.dumps(doc))
    p = slbctl(slbd, "config", "import", changed, "--dry-run")
    assert p.returncode == 1 and "nope" in p.stderr, (p.returncode, p.stderr)
    assert generation(slbd) == gen and slbd.api.get("/v1/config")[1] == before


def test_cert_list_dates_for_people(slbd, pki):
    cid = upload_server(slbd, pki, "server")
    not_after = slbd.api.get(f"/v1/certificates/{cid}")[1]["not_after"]
    left = calendar.timegm(time.strptime(not_after, "%Y-%m-%dT%H:%M:%SZ")) - time.time()
    p = run_cli("--admin", f"http://127.0.0.1:{slbd.admin_port}", "cert", "list",
                env_extra={"SLBD_TOKEN": slbd.api.token, "TZ": "XST-05:30"})
    assert p.returncode == 0, p.stderr
    header, row = p.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "KEY", "NOT_AFTER", "EXPIRES", "USED_BY"]
    # The end of validity in local time (ISO 8601 with the offset), and how far away it is.
    local = time.strftime("%Y-%m-%dT%H:%M:%S+05:30", time.gmtime(
        calendar.timegm(time.strptime(not_after, "%Y-%m-%dT%H:%M:%SZ")) + 5 * 3600 + 1800))
    # (slbctl reads the clock a little later than this test did.)
    wants = {f"in {int(t // 86400)}d {int(t % 86400 // 3600)}h" for t in (left, left - 10)}
    assert any(re.search(rf"\s{re.escape(local)}\s+{w}\s", row) for w in wants), (wants, row)
    # show: the same time on a line of its own, with how far away it is.
    p = run_cli("--admin", f"http://127.0.0.1:{slbd.admin_port}", "cert", "show", cid,
                env_extra={"SLBD_TOKEN": slbd.api.token, "TZ": "XST-05:30"})
    assert p.returncode == 0, p.stderr
    assert any(re.search(rf"^not_after:\s+{re.escape(local)} \({w}\)$", p.stdout, re.M)
               for w in wants), (wants, p.stdout)
    assert "Z\n" not in p.stdout and "Z (" not in p.stdout, p.stdout


def test_stats_watch_refreshes_the_summary(slbd, site):
    base = [str(h.binary("slbctl")), "--admin", f"http://127.0.0.1:{slbd.admin_port}",
            "--state-dir", str(slbd.state_dir), "stats"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("SLBD_TOKEN", "SLBD_ADMIN", "COLUMNS")}
    for extra in (["--watch", "0.2"], ["--watch", "0.2", "--json"]):
        p = subprocess.Popen(base + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, stdin=subprocess.DEVNULL)
        time.sleep(h.scaled(1.5))
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=h.scaled(10))
        assert p.returncode == 0, (p.returncode, err)
        if "--json" in extra:
            docs = [json.loads(ln) for ln in out.splitlines()]
            assert len(docs) >= 2 and all(d["listeners"] for d in docs), out
            continue
        screens = out.split("\x1b[H\x1b[2J")[1:]
        assert len(screens) >= 2, out
        for s in screens:
            assert "LISTENER" in s and "GROUP" in s, s
            assert max(len(ln) for ln in s.splitlines()) <= 100, s
            assert re.search(r"^updated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$", s, re.M), s


def test_lists_page_through_the_api(slbd, pki):
    """slbctl fetches lists a page at a time (--page-size, default 500) and shows them whole."""
    body = {"type": "server", "certificate": pki.chain("server"), "private_key": pki.key("server")}
    ids = [f"c{i:02d}" for i in range(23)]
    for cid in ids:
        st, js = slbd.api.post("/v1/certificates", {**body, "id": cid, "name": cid})
        assert st == 201, js
    for args in (["--page-size", "5"], ["--page-size=1"], []):
        p = slbctl(slbd, *args, "cert", "list")
        assert p.returncode == 0, p.stderr
        assert [ln.split()[0] for ln in p.stdout.splitlines()[1:]] == ids, (args, p.stdout)
        p = slbctl(slbd, *args, "--json", "cert", "list")
        assert p.returncode == 0, p.stderr
        doc = json.loads(p.stdout)
        assert list(doc) == ["certificates"], doc.keys()
        assert [c["id"] for c in doc["certificates"]] == ids
    for bad in ("0", "1001", "x"):
        p = slbctl(slbd, "--page-size", bad, "cert", "list")
        assert p.returncode == 2 and "--page-size" in p.stderr, (bad, p.stderr)


def test_cluster_export_writes_a_state_directory(slbd, slbd_factory, pki, workdir):
    """`slbctl cluster export DIR` (GET /v1/cluster/export, admin scope: it carries private
    keys) writes the state as a directory another slbd starts from; on a single node it is a
    backup of the state directory."""
    cid = upload_server(slbd, pki, "server")
    slbd.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port()}],
                   health_check=h.no_health_check())
    out = workdir / "exported"
    p = slbctl(slbd, "cluster", "export", out)
    assert p.returncode == 0, p.stderr
    assert "1 certificate" in p.stdout, p.stdout
    for f in ("config.json", "tickets.json", f"certs/{cid}.json"):
        assert (out / f).is_file(), f
        assert os.stat(out / f).st_mode & 0o077 == 0, f
    assert os.stat(out).st_mode & 0o077 == 0
    st, js = slbd.api.post("/v1/keys", {"name": "reader", "scope": "read"})
    assert st == 201, js
    r = slbd.api.request("GET", "/v1/cluster/export", token=js["secret"])
    assert r.status == 403 and r.error_code() == "forbidden", r
    # Both exports (it hands out private keys), the refused one too, are in the audit log.
    st, js = slbd.api.get("/v1/audit")
    exports = [(e["key"], e["status"]) for e in js["entries"]
               if e["path"] == "/v1/cluster/export"]
    assert exports == [("root", 200), ("reader", 403)], js["entries"]
    other = slbd_factory(name="restored", state_dir=out)
    st, js = other.api.get(f"/v1/certificates/{cid}")
    assert st == 200 and js["fingerprint_sha256"] == pki.fingerprint("server"), js
    assert [g["name"] for g in other.api.get("/v1/groups")[1]["groups"]] == ["g"]
