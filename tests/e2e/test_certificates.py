# SPDX-License-Identifier: Apache-2.0
"""The certificate store end to end through the admin API of a real slbd: uploads in the shapes
users paste (chains, CRLF, surrounding text, shuffled, trailing root), every rejection code
with real malformed input (and nothing changes), files and modes in the state dir, listeners
referring to certificates by id, CRLs enforced on mutual TLS, expiry metrics and warnings, and
slbctl's cert commands. No response and no log line may ever carry a private key."""

import json
import os
import re
import ssl
import stat
import threading
import time

import pytest

import slbd_harness as h
import cert_util as cu
from http_util import hx  # noqa: F401  (fixture)
from pki import pki  # noqa: F401  (fixture)
import http_util as hu

CERT_FIELDS = {"id", "name", "type", "subject", "issuer", "sans", "not_before", "not_after",
               "fingerprint_sha256", "key_type", "used_by"}


def expect_error(resp, status, code):
    assert resp.status == status, resp
    assert resp.error_code() == code, resp
    msg = resp.json["error"].get("message")
    assert isinstance(msg, str) and msg, resp


def store_state(slbd):
    """What a refused request must leave alone: the API's list and the files on disk."""
    return cu.cert_list(slbd), cu.certs_dir_listing(slbd.state_dir)


def all_keys(pki):
    return [p.read_text() for p in sorted(pki.dir.glob("*.key"))]


# --------------------------------------------------------------------------------------------
# Uploads that must be accepted, and the resource they produce
# --------------------------------------------------------------------------------------------

BAG_TEXT = ("Bag Attributes\n    localKeyID: 01 00 00 00\n    friendlyName: www\n"
            "subject=/O=SLB Test/CN=localhost\nissuer=/O=SLB Test/CN=SLB Test Intermediate CA\n")


def upload_variants(pki):
    """(label, certificate, private_key, leaf file name, key_type)."""
    inter, root = pki.pem("inter"), pki.pem("root")
    return [
        ("ec", pki.chain("server"), pki.key("server"), "server", "ec-p256"),
        ("rsa", pki.chain("server-rsa"), pki.key("server-rsa"), "server-rsa", "rsa-2048"),
        ("leaf-only", pki.pem("server"), pki.key("server"), "server", "ec-p256"),
        ("crlf", cu.crlf(pki.chain("server")), cu.crlf(pki.key("server")), "server",
         "ec-p256"),
        ("leading-text", BAG_TEXT + pki.chain("server"),
         "Key Attributes: <No Attributes>\n" + pki.key("server"), "server", "ec-p256"),
        ("shuffled", inter + pki.pem("server"), pki.key("server"), "server", "ec-p256"),
        ("shuffled-root", root + pki.pem("server-rsa") + inter, pki.key("server-rsa"),
         "server-rsa", "rsa-2048"),
        ("trailing-root", (pki.dir / "server-full.pem").read_text(), pki.key("server"),
         "server", "ec-p256"),
        ("rsa-traditional", pki.chain("server-rsa"),
         (pki.dir / "server-rsa-trad.key").read_text(), "server-rsa", "rsa-2048"),
        ("ec-traditional", pki.chain("server"), (pki.dir / "server-ec-trad.key").read_text(),
         "server", "ec-p256"),
    ]


def check_resource(pki, res, name, leaf, key_type):
    assert CERT_FIELDS <= set(res), res
    assert res["name"] == name and res["type"] == "server", res
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,63}", res["id"]), res
    assert res["subject"] == pki.subject(leaf), res
    assert res["issuer"] == pki.issuer(leaf), res
    assert res["sans"] == cu.SERVER_SANS, res
    nb, na = cu.cert_dates(pki.path(f"{leaf}.pem"))
    assert (res["not_before"], res["not_after"]) == (cu.rfc3339(nb), cu.rfc3339(na)), res
    # Our own hash of the leaf's DER, not slbd's.
    assert res["fingerprint_sha256"] == cu.sha256_hex(pki.der(leaf)), res
    assert res["key_type"] == key_type, res
    assert res["used_by"] == [], res


@pytest.mark.slbd(log_level="debug")
def test_upload_variants_and_fields(slbd, pki):
    """Run at log level debug: not even debug logging may show key material."""
    api = cu.RecordingApi(slbd)
    made = {}
    for label, cert, key, leaf, key_type in upload_variants(pki):
        r = api.post("/v1/certificates", cu.server_body(f"cert-{label}", cert, key))
        assert r.status == 201, (label, r)
        check_resource(pki, r.json, f"cert-{label}", leaf, key_type)
        g = api.get(f"/v1/certificates/{r.json['id']}")
        assert g.status == 200 and g.json == r.json, (label, g, r)
        made[r.json["id"]] = r.json
    assert len(made) == len(upload_variants(pki)), "ids must be distinct"
    # A CA certificate: no key, no SANs, its own subject.
    r = api.post("/v1/certificates", cu.ca_body("the-inter", pki.pem("inter")))
    assert r.status == 201, r
    assert r.json["type"] == "ca" and r.json["subject"] == pki.subject("inter"), r
    assert r.json["issuer"] == pki.subject("root") and r.json["sans"] == [], r
    assert r.json["fingerprint_sha256"] == cu.sha256_hex(pki.der("inter")), r
    assert r.json["key_type"] == "ec-p256" and r.json["used_by"] == [], r
    made[r.json["id"]] = r.json
    lst = api.get("/v1/certificates")
    assert lst.status == 200, lst
    assert {c["id"]: c for c in lst.json["certificates"]} == made
    # An optional id in the body chooses the id.
    r = api.post("/v1/certificates", cu.server_body("chosen", pki.chain("server"),
                                                    pki.key("server"), id="my-web.cert_1"))
    assert r.status == 201 and r.json["id"] == "my-web.cert_1", r
    assert api.get("/v1/certificates/my-web.cert_1").status == 200
    # Everything else the API shows, with the certificates in use by a listener.
    slbd.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port()}],
                   health_check=h.no_health_check())
    cu.add_https_listener(slbd, "web", "g", list(made)[:3])
    for path in ("/v1/certificates", "/v1/listeners", "/v1/groups", "/v1/stats", "/metrics"):
        assert api.get(path).status == 200, path
    # No response ever carried a key, and neither did the log nor config.json.
    assert api.error_text() == ""
    cu.assert_no_secret(api.ok_text(), all_keys(pki), "an API response")
    cu.assert_no_secret(slbd.log_text(), all_keys(pki), "slbd's log")
    cu.assert_no_secret((slbd.state_dir / "config.json").read_text(), all_keys(pki),
                        "config.json")


def test_served_chain_is_leaf_first_without_root(slbd, pki, hx):
    """A shuffled bundle is served in issuing order, and a trailing root is not served."""
    ids = {}
    for label, cert, key in [
        ("shuffled", pki.pem("inter") + pki.pem("server"), pki.key("server")),
        ("full", (pki.dir / "server-full.pem").read_text(), pki.key("server")),
        ("root-first", pki.pem("root") + pki.pem("inter") + pki.pem("server-rsa"),
         pki.key("server-rsa")),
    ]:
        st, js = slbd.api.post("/v1/certificates", cu.server_body(label, cert, key))
        assert st == 201, (label, js)
        ids[label] = js["id"]
    port = cu.https_setup(slbd, hx, [ids["shuffled"]])
    inter = pki.fingerprint("inter")
    assert cu.served_chain(port) == [pki.fingerprint("server"), inter]
    listener = hu.get_listener(slbd, "web")
    for label, leaf in (("full", "server"), ("root-first", "server-rsa")):
        listener["tls"]["certificates"] = [ids[label]]
        hu.put_listener(slbd, "web", listener)
        assert cu.served_chain(port) == [pki.fingerprint(leaf), inter], label
    # The served chain verifies against the root with a strict client.
    fp, status = cu.tls_fingerprint(port, cu.verify_context(pki), request=True)
    assert (fp, status) == (pki.fingerprint("server-rsa"), 200)


# --------------------------------------------------------------------------------------------
# Rejections: status, exact code, and nothing changes
# --------------------------------------------------------------------------------------------


def truncated_no_end(pem):
    lines = pem.strip().splitlines()
    return "\n".join(lines[:-3]) + "\n"


def truncated_middle(pem):
    """Two base64 lines cut out of the middle; the END line is still there."""
    lines = pem.strip().splitlines()
    mid = len(lines) // 2
    return "\n".join(lines[:mid - 1] + lines[mid + 1:]) + "\n"


def rejection_cases(pki):
    """(label, method, body, status, code); body None means a raw case handled separately."""
    srv, key = pki.chain("server"), pki.key("server")
    post = "POST"
    return [
        ("dh-in-certificate", post, cu.server_body("x", (pki.dir / "server-dh.pem").read_text(),
                                                   key), 400, "dh_parameters_not_supported"),
        ("dh-in-key", post, cu.server_body("x", srv, key + (pki.dir / "dh.pem").read_text()),
         400, "dh_parameters_not_supported"),
        ("key-of-another-cert", post, cu.server_body("x", srv, pki.key("server-rsa")), 400,
         "key_mismatch"),
        ("key-of-same-type", post, cu.server_body("x", srv, pki.key("soon")), 400,
         "key_mismatch"),
        ("expired", post, cu.server_body("x", pki.chain("expired"), pki.key("expired")), 400,
         "expired"),
        ("not-yet-valid", post, cu.server_body("x", pki.chain("notyet"), pki.key("notyet")),
         400, "not_yet_valid"),
        ("expired-intermediate", post,
         cu.server_body("x", pki.pem("server-under-expired") + pki.pem("inter-expired"),
                        pki.key("server-under-expired")), 400, "expired"),
        ("rsa-1024", post, cu.server_body("x", pki.chain("weak-rsa"), pki.key("weak-rsa")), 400,
         "weak_key"),
        ("secp256k1", post, cu.server_body("x", pki.chain("weak-curve"),
                                           pki.key("weak-curve")), 400, "weak_key"),
        ("encrypted-pkcs8", post, cu.server_body("x", srv, (pki.dir / "server-enc.key")
                                                 .read_text()), 400, "encrypted_private_key"),
        ("encrypted-traditional", post,
         cu.server_body("x", pki.chain("server-rsa"), (pki.dir / "server-rsa-enc.key")
                        .read_text()), 400, "encrypted_private_key"),
        ("ca-that-is-a-leaf", post, cu.ca_body("x", pki.pem("server")), 400, "not_a_ca"),
        ("truncated-no-end", post, cu.server_body("x", truncated_no_end(pki.pem("server")),
                                                  key), 400, "invalid_pem"),
        ("truncated-middle", post, cu.server_body("x", truncated_middle(pki.pem("server")),
                                                  key), 400, "invalid_pem"),
        ("truncated-key", post, cu.server_body("x", srv, truncated_no_end(key)), 400,
         "invalid_pem"),
        ("binary-garbage", post, cu.server_body("x", cu.garbage_text(nul=False), key), 400,
         "invalid_pem"),
        ("no-pem-at-all", post, cu.server_body("x", "just some text\n", key), 400,
         "invalid_pem"),
        ("key-in-certificate-field", post, cu.server_body("x", key, key), 400, "invalid_pem"),
        ("unrelated-intermediate", post,
         cu.server_body("x", pki.pem("server") + pki.pem("wrong-inter"), key), 400,
         "chain_incomplete"),
        ("root-without-intermediate", post,
         cu.server_body("x", pki.pem("server") + pki.pem("root"), key), 400,
         "chain_incomplete"),
        ("leaf-twice", post, cu.server_body("x", pki.pem("server") + pki.pem("server"), key),
         400, "chain_order"),
        ("same-name-twice", post, cu.server_body("existing", pki.chain("server-rsa"),
                                                 pki.key("server-rsa")), 400, "name_taken"),
        ("unknown-field", post, dict(cu.server_body("x", srv, key), passphrase="secret"), 400,
         "invalid_body"),
        ("missing-key", post, {"name": "x", "type": "server", "certificate": srv}, 400,
         "invalid_body"),
        ("ca-with-key", post, dict(cu.ca_body("x", pki.pem("inter")), private_key=key), 400,
         "invalid_body"),
        ("bad-type", post, cu.server_body("x", srv, key, type="client"), 400, "invalid_body"),
        ("name-not-string", post, dict(cu.server_body("x", srv, key), name=5), 400,
         "invalid_body"),
        ("name-with-newline", post, cu.server_body("a\nb", srv, key), 400, "invalid_body"),
        ("17-blocks", post, cu.server_body("x", pki.pem("server") + pki.pem("inter") * 16, key),
         400, "invalid_pem"),
        ("id-path-traversal", post, cu.server_body("x", srv, key, id="../../etc/x"), 400,
         "invalid_body"),
        ("id-dot-dot", post, cu.server_body("x", srv, key, id=".."), 400, "invalid_body"),
        ("id-taken", post, cu.server_body("x", srv, key, id="existing-id"), 400, "id_taken"),
    ]


@pytest.fixture
def existing(slbd, pki):
    st, js = slbd.api.post("/v1/certificates", cu.server_body("existing", pki.chain("server"),
                                                              pki.key("server"),
                                                              id="existing-id"))
    assert st == 201, js
    return js


def test_every_rejection_changes_nothing(slbd, pki, existing):
    api = cu.RecordingApi(slbd)
    before = store_state(slbd)
    assert before[1] == [f"{existing['id']}.json"]
    wrong = []
    for label, method, body, status, code in rejection_cases(pki):
        r = api.request(method, "/v1/certificates", body)
        # Every case is tried before failing, so one report shows all wrong answers.
        if (r.status, r.error_code()) != (status, code) or not r.json["error"].get("message"):
            wrong.append(f"{label}: expected {status} {code}, got {r.status} {r.text.strip()}")
        assert store_state(slbd) == before, f"{label} changed the store"
    assert not wrong, "wrong answers:\n" + "\n".join(wrong)
    # The same material as a replace of the existing certificate: refused, old one kept.
    path = f"/v1/certificates/{existing['id']}"
    for label, body, code in [
        ("expired", cu.server_body("existing", pki.chain("expired"), pki.key("expired")),
         "expired"),
        ("key-mismatch", cu.server_body("existing", pki.chain("server"),
                                        pki.key("server-rsa")), "key_mismatch"),
        ("weak", cu.server_body("existing", pki.chain("weak-rsa"), pki.key("weak-rsa")),
         "weak_key"),
        ("dh", cu.server_body("existing", (pki.dir / "server-dh.pem").read_text(),
                              pki.key("server")), "dh_parameters_not_supported"),
        ("type-change", cu.ca_body("existing", pki.pem("inter")), "invalid_body"),
        ("encrypted", cu.server_body("existing", pki.chain("server"),
                                     (pki.dir / "server-enc.key").read_text()),
         "encrypted_private_key"),
        ("another id in the body", cu.server_body("existing", pki.chain("server"),
                                                  pki.key("server"), id="other-id"),
         "invalid_body"),
        ("unknown field", dict(cu.server_body("existing", pki.chain("server"),
                                              pki.key("server")), version=7), "invalid_body"),
    ]:
        expect_error(api.put(path, body), 400, code)
        assert store_state(slbd) == before, f"replace {label} changed the store"
    assert api.get(path).json == existing
    # Transport-level refusals: wrong content type, malformed JSON, a 5 MB body.
    good = json.dumps(cu.server_body("ct", pki.chain("server-rsa"), pki.key("server-rsa")))
    expect_error(api.request("POST", "/v1/certificates", data=good, content_type="text/plain"),
                 415, "unsupported_media_type")
    expect_error(api.request("POST", "/v1/certificates", data=good[:-1]), 400, "invalid_json")
    big = json.dumps({"name": "big", "type": "server", "certificate": "A" * (5 << 20),
                      "private_key": "B"}).encode()
    head = ["POST /v1/certificates HTTP/1.1", "Host: 127.0.0.1",
            "Content-Type: application/json", f"Content-Length: {len(big)}"]
    st, text = cu.raw_admin_request(slbd, head, big, send_body=False)
    assert st == 413 and json.loads(text)["error"]["code"] == "body_too_large", (st, text)
    st, text = cu.raw_admin_request(slbd, head, big, send_body=True)
    assert st == 413, (st, text[:300])
    assert store_state(slbd) == before
    # Nothing of any key in any answer (messages name blocks, never quote them) or the log.
    cu.assert_no_secret(api.ok_text(), all_keys(pki), "an API response")
    cu.assert_no_secret(api.error_text(), all_keys(pki), "an error response", strict=False)
    cu.assert_no_secret(slbd.log_text(), all_keys(pki), "slbd's log", strict=False)


def test_der_and_nul_bytes_are_invalid_pem(slbd, pki, existing):
    """DER pasted into the JSON string (it holds NUL bytes, which JSON carries as \\u0000) is
    not PEM: the answer is invalid_pem naming the field, as for any other binary input."""
    before = store_state(slbd)
    wrong = []
    for label, body in [
        ("server certificate as DER", cu.server_body("x", cu.der_as_text(pki.der("server")),
                                                     pki.key("server"))),
        ("CA certificate as DER", cu.ca_body("x", cu.der_as_text(pki.der("inter")))),
        ("binary garbage with NUL bytes", cu.server_body("x", cu.garbage_text(),
                                                         pki.key("server"))),
        ("key with a NUL byte", cu.server_body("x", pki.chain("server"),
                                               "\0" + pki.key("server"))),
    ]:
        r = slbd.api.request("POST", "/v1/certificates", body)
        if (r.status, r.error_code()) != (400, "invalid_pem"):
            wrong.append(f"{label}: expected 400 invalid_pem, got {r.status} {r.text.strip()}")
        assert store_state(slbd) == before, label
    assert not wrong, "wrong answers:\n" + "\n".join(wrong)


def test_replace_semantics(slbd, pki):
    """PUT keeps the id and the first-upload facts, takes name and type from the stored
    certificate when omitted, renames when told, and refuses another certificate's name."""
    a = slbd.api.post("/v1/certificates", cu.server_body("a", pki.chain("server"),
                                                         pki.key("server")))[1]
    b = slbd.api.post("/v1/certificates", cu.server_body("b", pki.chain("server-rsa"),
                                                         pki.key("server-rsa")))[1]
    path = f"/v1/certificates/{a['id']}"
    # Only the material: name and type stay.
    st, js = slbd.api.put(path, {"certificate": pki.chain("server-rsa"),
                                 "private_key": pki.key("server-rsa")})
    assert st == 200, js
    assert (js["id"], js["name"], js["type"], js["key_type"]) == (a["id"], "a", "server",
                                                                  "rsa-2048"), js
    assert js["fingerprint_sha256"] == pki.fingerprint("server-rsa")
    assert js["version"] == a["version"] + 1, js
    # Rename.
    st, js = slbd.api.put(path, cu.server_body("a2", pki.chain("server"), pki.key("server")))
    assert st == 200 and js["name"] == "a2" and js["version"] == a["version"] + 2, js
    # Another certificate's name is taken.
    r = slbd.api.request("PUT", path, cu.server_body("b", pki.chain("server"),
                                                     pki.key("server")))
    expect_error(r, 400, "name_taken")
    # Unknown ids are 404 for every method.
    for method, body in (("GET", None), ("PUT", cu.server_body("z", pki.chain("server"),
                                                                 pki.key("server"))),
                         ("DELETE", None)):
        expect_error(slbd.api.request(method, "/v1/certificates/nope", body), 404, "not_found")
    expect_error(slbd.api.request("PUT", "/v1/certificates/nope/crl",
                                  {"crl": (pki.dir / "inter.crl").read_text()}), 404,
                 "not_found")
    got = {c["id"]: (c["name"], c["fingerprint_sha256"]) for c in cu.cert_list(slbd)}
    assert got == {a["id"]: ("a2", pki.fingerprint("server")),
                   b["id"]: ("b", pki.fingerprint("server-rsa"))}
    # The file follows.
    doc = json.loads((slbd.state_dir / "certs" / f"{a['id']}.json").read_text())
    assert doc["name"] == "a2" and doc["version"] == a["version"] + 2, doc


def test_concurrent_uploads_of_one_name(slbd, pki):
    """Eight clients upload the same name at once: exactly one wins, the others get
    name_taken, and exactly one file exists."""
    results = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def upload(i):
        start.wait()
        leaf = "server" if i % 2 else "server-rsa"
        r = slbd.api.request("POST", "/v1/certificates",
                             cu.server_body("race", pki.chain(leaf), pki.key(leaf)))
        with lock:
            results.append((r.status, r.error_code()))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(h.scaled(30))
    assert sorted(results) == [(201, None)] + [(400, "name_taken")] * 7, results
    certs = cu.cert_list(slbd)
    assert [c["name"] for c in certs] == ["race"]
    assert cu.certs_dir_listing(slbd.state_dir) == [f"{certs[0]['id']}.json"]


# --------------------------------------------------------------------------------------------
# Files in the state directory
# --------------------------------------------------------------------------------------------


def test_files_modes_and_restart(slbd, pki):
    st, srv = slbd.api.post("/v1/certificates", cu.server_body("web", pki.chain("server"),
                                                               pki.key("server")))
    assert st == 201, srv
    st, ca = slbd.api.post("/v1/certificates", cu.ca_body("clients", pki.pem("inter")))
    assert st == 201, ca
    d = slbd.state_dir / "certs"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, oct(os.stat(d).st_mode)
    assert cu.certs_dir_listing(slbd.state_dir) == sorted([f"{srv['id']}.json",
                                                           f"{ca['id']}.json"])
    for c in (srv, ca):
        f = d / f"{c['id']}.json"
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, (f, oct(os.stat(f).st_mode))
        doc = json.loads(f.read_text())
        assert doc["id"] == c["id"] and doc["name"] == c["name"] and doc["type"] == c["type"]
    # A replace keeps the mode (the file is rewritten through a temporary file).
    st, rep = slbd.api.put(f"/v1/certificates/{srv['id']}",
                           cu.server_body("web", pki.chain("server-rsa"), pki.key("server-rsa")))
    assert st == 200 and rep["fingerprint_sha256"] == pki.fingerprint("server-rsa"), rep
    assert stat.S_IMODE(os.stat(d / f"{srv['id']}.json").st_mode) == 0o600
    assert cu.certs_dir_listing(slbd.state_dir) == sorted([f"{srv['id']}.json",
                                                           f"{ca['id']}.json"])
    # The store survives a restart unchanged.
    before = cu.cert_list(slbd)
    slbd.restart()
    assert cu.cert_list(slbd) == before
    # Deleting removes the file.
    assert slbd.api.delete(f"/v1/certificates/{srv['id']}")[0] == 204
    assert cu.certs_dir_listing(slbd.state_dir) == [f"{ca['id']}.json"]
    assert slbd.api.get(f"/v1/certificates/{srv['id']}")[0] == 404
    cu.assert_no_secret(slbd.log_text(), all_keys(pki), "slbd's log")


def stored_file(cert_id, name, certificate, private_key, version=1):
    """A certificate file as slbd writes it (see src/cert/store.c), for start-up tests."""
    return json.dumps({"id": cert_id, "name": name, "type": "server", "version": version,
                       "certificate": certificate, "private_key": private_key, "crl": None,
                       "created": int(time.time())}, indent=2)


def test_startup_with_damaged_or_expired_files(slbd, pki):
    """A damaged certificate file stops start-up with a message naming it (and nothing is
    rewritten); an expired certificate does not stop it but is warned about; a leftover
    temporary dot-file of an interrupted write is ignored."""
    st, srv = slbd.api.post("/v1/certificates", cu.server_body("web", pki.chain("server"),
                                                               pki.key("server")))
    assert st == 201, srv
    slbd.add_group("g", [{"address": "127.0.0.1", "port": h.dead_port()}],
                   health_check=h.no_health_check())
    cu.add_https_listener(slbd, "web", "g", [srv["id"]])
    assert slbd.stop() == 0
    d = slbd.state_dir / "certs"
    good_file = d / f"{srv['id']}.json"
    good = good_file.read_bytes()
    # Torn file: half of it.
    good_file.write_bytes(good[:len(good) // 2])
    for args in (("--check",), ()):
        rc, text = slbd.run_once(*args)
        assert rc != 0, (args, text)
        assert f"{srv['id']}.json" in text, (args, text)
    assert good_file.read_bytes() == good[:len(good) // 2], "a refused start rewrote the file"
    # A file whose key does not match its certificate.
    good_file.write_text(stored_file(srv["id"], "web", pki.chain("server"),
                                     pki.key("server-rsa")))
    rc, text = slbd.run_once("--check")
    assert rc != 0 and f"{srv['id']}.json" in text and "key_mismatch" in text, text
    cu.assert_no_secret(text, all_keys(pki), "slbd --check output")
    # The certificate a listener uses is gone: config.json refers to a missing id.
    good_file.unlink()
    rc, text = slbd.run_once("--check")
    assert rc != 0 and srv["id"] in text and "unknown_certificate" in text, text
    # Restored, plus an expired certificate and a leftover temporary file.
    good_file.write_bytes(good)
    os.chmod(good_file, 0o600)
    (d / "old-one.json").write_text(stored_file("old-one", "old", pki.chain("expired"),
                                                pki.key("expired")))
    os.chmod(d / "old-one.json", 0o600)
    (d / f".{srv['id']}.json.tmp").write_text("{\"torn\": ")
    rc, text = slbd.run_once("--check")
    assert rc == 0, text
    slbd.start()
    got = {c["id"]: c for c in cu.cert_list(slbd)}
    assert set(got) == {srv["id"], "old-one"}, got
    assert got[srv["id"]]["fingerprint_sha256"] == srv["fingerprint_sha256"]
    assert got["old-one"]["fingerprint_sha256"] == pki.fingerprint("expired")
    assert cu.expiry_metrics(slbd)[("old-one", "old")] < 0
    h.wait_until(lambda: [ln for ln in cu.warn_lines(slbd) if "old-one" in ln and "expired" in ln],
                 10, "a warning about the expired certificate")
    # The expired certificate is replaced the usual way.
    st, js = slbd.api.put("/v1/certificates/old-one", cu.server_body("old", pki.chain("server"),
                                                                     pki.key("server")))
    assert st == 200 and js["version"] == 2, js


# --------------------------------------------------------------------------------------------
# Listeners refer to certificates by id
# --------------------------------------------------------------------------------------------


def test_listener_references(slbd, pki, hx):
    b = hx.backend("be")
    slbd.add_group("g", [b.server()], health_check=h.no_health_check())
    srv = slbd.api.post("/v1/certificates", cu.server_body("web", pki.chain("server"),
                                                           pki.key("server")))[1]
    ca = slbd.api.post("/v1/certificates", cu.ca_body("clients", pki.pem("inter")))[1]
    port = h.free_port()

    def listener(**tls):
        return {"name": "web", "protocol": "https", "bind": f"127.0.0.1:{port}",
                "backend_group": "g", "tls": tls}

    lst_before = slbd.api.get("/v1/listeners")
    for label, tls in [
        ("unknown id", {"certificates": ["no-such-cert"]}),
        ("a CA as server certificate", {"certificates": [ca["id"]]}),
        ("unknown client_ca", {"certificates": [srv["id"]], "client_ca": "nope"}),
        ("a server certificate as client_ca", {"certificates": [srv["id"]],
                                               "client_ca": srv["id"]}),
    ]:
        r = slbd.api.request("POST", "/v1/listeners", listener(**tls))
        expect_error(r, 400, "unknown_certificate")
        assert slbd.api.get("/v1/listeners") == lst_before, label
    # No certificate at all is refused too (whatever the code, it is a 400).
    r = slbd.api.request("POST", "/v1/listeners", listener(certificates=[]))
    assert r.status == 400, r

    port = cu.add_https_listener(slbd, "web", "g", [srv["id"]], client_ca=ca["id"],
                                 client_auth="optional")
    assert cu.get_cert(slbd, srv["id"])["used_by"] == ["web"]
    assert cu.get_cert(slbd, ca["id"])["used_by"] == ["web"]
    listed = {c["id"]: c["used_by"] for c in cu.cert_list(slbd)}
    assert listed == {srv["id"]: ["web"], ca["id"]: ["web"]}
    assert cu.tls_fingerprint(port, cu.verify_context(pki)) == pki.fingerprint("server")
    for c in (srv, ca):
        r = slbd.api.request("DELETE", f"/v1/certificates/{c['id']}")
        expect_error(r, 409, "in_use")
        assert "web" in r.json["error"]["message"], r
        assert cu.get_cert(slbd, c["id"])["fingerprint_sha256"] == c["fingerprint_sha256"]
        assert f"{c['id']}.json" in cu.certs_dir_listing(slbd.state_dir)
    # A second listener using the same certificate is named as well.
    cu.add_https_listener(slbd, "web2", "g", [srv["id"]])
    r = slbd.api.request("DELETE", f"/v1/certificates/{srv['id']}")
    expect_error(r, 409, "in_use")
    assert "web" in r.json["error"]["message"] and "web2" in r.json["error"]["message"], r
    assert sorted(cu.get_cert(slbd, srv["id"])["used_by"]) == ["web", "web2"]
    # Once the listeners are gone the certificates can go, with their files.
    assert slbd.api.delete("/v1/listeners/web")[0] == 204
    assert slbd.api.delete("/v1/listeners/web2")[0] == 204
    for c in (srv, ca):
        assert slbd.api.delete(f"/v1/certificates/{c['id']}")[0] == 204
        assert f"{c['id']}.json" not in cu.certs_dir_listing(slbd.state_dir)
        assert slbd.api.get(f"/v1/certificates/{c['id']}")[0] == 404
    assert cu.certs_dir_listing(slbd.state_dir) == []
    # Deleting what is gone is a 404, not a crash.
    expect_error(slbd.api.request("DELETE", f"/v1/certificates/{srv['id']}"), 404, "not_found")


# --------------------------------------------------------------------------------------------
# CRLs
# --------------------------------------------------------------------------------------------


def client_ctx(pki, name):
    chain, key = pki.client_files(name)
    return hu.client_context(cafile=pki.root, cert=chain, key=key)


@pytest.fixture
def mtls(slbd, pki, hx):
    """CA "clients" (the intermediate), server certificate "web" and an https listener that
    requires client certificates of that CA."""
    ca = slbd.api.post("/v1/certificates", cu.ca_body("clients", pki.pem("inter")))[1]
    srv = slbd.api.post("/v1/certificates", cu.server_body("web", pki.chain("server"),
                                                           pki.key("server")))[1]
    port = cu.https_setup(slbd, hx, [srv["id"]], client_ca=ca["id"], client_auth="required")
    return {"ca": ca, "srv": srv, "port": port, "crl_path": f"/v1/certificates/{ca['id']}/crl",
            "good": client_ctx(pki, "client"), "revoked": client_ctx(pki, "client-revoked")}


def test_crl_upload_and_enforcement(slbd, pki, mtls):
    ca, srv, port = mtls["ca"], mtls["srv"], mtls["port"]
    good, revoked = mtls["good"], mtls["revoked"]
    # Without a CRL the revoked certificate still chains to the CA and is accepted; its
    # session is kept for a resumption attempt once the CRL is in place.
    sessions = {}
    for label, ctx in (("good", good), ("revoked", revoked)):
        res = cu.mtls_request(port, ctx)
        assert res.ok and res.response.status == 200, res
        hdrs = res.response.json()["headers"]
        assert hdrs.get("x-forwarded-clientcert-clientverify") == "SUCCESS", hdrs
        assert res.session is not None, "no session ticket"
        sessions[label] = res.session
    # The ticket resumes while nothing changed.
    res = cu.mtls_request(port, revoked, session=sessions["revoked"])
    assert res.ok and res.reused, res
    # Bad CRLs are refused and change nothing.
    before = cu.get_cert(slbd, ca["id"])
    assert before["crl"] is None
    wrong = []
    for label, body, code in [
        ("signed by another CA", {"crl": (pki.dir / "wrongca.crl").read_text()},
         "crl_signature"),
        ("lastUpdate in the future", {"crl": (pki.dir / "inter-future.crl").read_text()},
         "invalid_crl"),
        ("a certificate instead", {"crl": pki.pem("inter")}, "invalid_crl"),
        ("binary garbage", {"crl": cu.garbage_text(nul=False)}, "invalid_crl"),
        ("truncated", {"crl": truncated_no_end((pki.dir / "inter.crl").read_text())},
         "invalid_crl"),
        ("extra field", {"crl": (pki.dir / "inter.crl").read_text(), "x": 1}, "invalid_body"),
    ]:
        r = slbd.api.request("PUT", mtls["crl_path"], body)
        if (r.status, r.error_code()) != (400, code):
            wrong.append(f"{label}: expected 400 {code}, got {r.status} {r.text.strip()}")
        assert cu.get_cert(slbd, ca["id"]) == before, label
    assert not wrong, "wrong answers:\n" + "\n".join(wrong)
    r = slbd.api.request("PUT", f"/v1/certificates/{srv['id']}/crl",
                         {"crl": (pki.dir / "inter.crl").read_text()})
    expect_error(r, 400, "not_a_ca")
    # The real CRL: accepted, shown on the resource, enforced at once.
    r = slbd.api.request("PUT", mtls["crl_path"], {"crl": (pki.dir / "inter.crl").read_text()})
    assert r.status == 200, r
    crl = r.json["crl"]
    assert isinstance(crl, dict) and crl["revoked"] == 1, r
    assert r.json["version"] == before["version"] + 1, r
    assert cu.parse_rfc3339(crl["this_update"]) <= time.time() + 5, crl
    assert cu.parse_rfc3339(crl["next_update"]) > time.time(), crl
    assert cu.get_cert(slbd, ca["id"])["crl"] == crl
    res = cu.mtls_request(port, revoked)
    assert not res.ok, f"a revoked client certificate was accepted: {res!r}"
    # A session from before the CRL does not let the revoked certificate back in.
    res = cu.mtls_request(port, revoked, session=sessions["revoked"])
    assert not res.ok, f"the revoked client resumed a session from before the CRL: {res!r}"
    res = cu.mtls_request(port, good, session=sessions["good"])
    assert res.ok and res.response.status == 200, res
    # Other refusals stay refusals: no certificate, a certificate of another CA.
    res = cu.mtls_request(port, hu.client_context(cafile=pki.root))
    assert not res.ok, res
    res = cu.mtls_request(port, client_ctx(pki, "wrong-client"))
    assert not res.ok, res
    # The failure is counted under its reason.
    m = hu.metrics(slbd)
    revoked_count = sum(v for k, v in m.items()
                        if k.startswith("slbd_listener_handshake_failures_total{")
                        and 'reason="cert_revoked"' in k)
    assert revoked_count >= 1, {k: v for k, v in m.items() if "handshake_failures" in k}
    # The CRL is durable: after a restart it is still shown and still enforced.
    slbd.restart()
    assert cu.get_cert(slbd, ca["id"])["crl"] == crl
    assert not cu.mtls_request(port, revoked).ok
    assert cu.mtls_request(port, good).ok
    # Re-uploading the same CA (a renewal with the same key) keeps its CRL ...
    st, js = slbd.api.put(f"/v1/certificates/{ca['id']}", cu.ca_body("clients",
                                                                       pki.pem("inter")))
    assert st == 200 and js["crl"] == crl, js
    assert not cu.mtls_request(port, revoked).ok
    # ... another CA in its place drops it (it did not sign it); the listener then trusts only
    # the new CA.
    st, js = slbd.api.put(f"/v1/certificates/{ca['id']}", cu.ca_body("clients",
                                                                       pki.pem("wrongca")))
    assert st == 200 and js["crl"] is None, js
    assert not cu.mtls_request(port, good).ok
    assert cu.mtls_request(port, client_ctx(pki, "wrong-client")).ok


def test_crl_applies_to_handshakes_started_after_the_answer(slbd, pki, mtls):
    """docs/api.md: activation covers "every handshake that starts after the answer". A client
    that connected (TCP) before the CRL was uploaded but sends its ClientHello after the
    answer must be checked against the CRL too."""
    early = cu.SteppedTls(mtls["port"], mtls["revoked"]).connect()
    try:
        time.sleep(0.2)  # accepted by a worker before the CRL exists
        r = slbd.api.request("PUT", mtls["crl_path"],
                             {"crl": (pki.dir / "inter.crl").read_text()})
        assert r.status == 200, r
        try:
            early.hello()
            early.finish()
            status = early.request()
        except (ssl.SSLError, OSError, h.HarnessError) as e:
            status = f"refused ({type(e).__name__}: {e})"
    finally:
        early.close()
    assert not cu.mtls_request(mtls["port"], mtls["revoked"]).ok
    assert status != 200, "a revoked client certificate was accepted in a handshake that " \
                          "started after the CRL upload answered (its TCP connection was " \
                          "accepted before)"


def test_stale_crl_warns_and_keeps_enforcing(slbd, pki, mtls):
    """A CRL whose nextUpdate has passed is accepted with a warning and counted in
    slbd_certificate_crl_stale; slbd's warning says the old CRL "is still enforced", so the
    revoked certificate stays refused while the others keep working."""
    port = mtls["port"]
    assert cu.metric_value(slbd, "slbd_certificate_crl_stale") == 0
    r = slbd.api.request("PUT", mtls["crl_path"],
                         {"crl": (pki.dir / "inter-stale.crl").read_text()})
    assert r.status == 200 and r.json["crl"]["revoked"] == 1, r
    assert cu.parse_rfc3339(r.json["crl"]["next_update"]) < time.time()
    assert cu.metric_value(slbd, "slbd_certificate_crl_stale") == 1
    h.wait_until(lambda: [ln for ln in cu.warn_lines(slbd)
                          if mtls["ca"]["id"] in ln and "CRL" in ln], 10,
                 "a warning about the stale CRL")
    assert not cu.mtls_request(port, mtls["revoked"]).ok
    res = cu.mtls_request(port, mtls["good"])
    fails = {k: v for k, v in hu.metrics(slbd).items() if "handshake_failures" in k and v}
    assert res.ok and res.response.status == 200, \
        f"a valid client certificate is refused while the CRL is stale: {res!r}; handshake " \
        f"failures: {fails}"
    # A fresh CRL clears the state.
    r = slbd.api.request("PUT", mtls["crl_path"], {"crl": (pki.dir / "inter.crl").read_text()})
    assert r.status == 200, r
    assert cu.metric_value(slbd, "slbd_certificate_crl_stale") == 0
    assert cu.mtls_request(port, mtls["good"]).ok


# --------------------------------------------------------------------------------------------
# Expiry: metrics and warnings
# --------------------------------------------------------------------------------------------


def test_expiry_metric_and_warning(slbd, pki):
    srv = slbd.api.post("/v1/certificates", cu.server_body("long-lived", pki.chain("server"),
                                                           pki.key("server")))[1]
    soon = slbd.api.post("/v1/certificates", cu.server_body("soon", pki.chain("soon"),
                                                            pki.key("soon")))[1]
    # A name with characters the exposition format must escape.
    ca = slbd.api.post("/v1/certificates", cu.ca_body('a "ca" \\ é', pki.pem("inter")))[1]
    assert soon.get("id"), soon
    metrics = cu.expiry_metrics(slbd)
    now = time.time()
    for c, leaf in ((srv, "server"), (soon, "soon"), (ca, "inter")):
        _, not_after = cu.cert_dates(pki.path(f"{leaf}.pem"))
        got = metrics.get((c["id"], c["name"]))
        assert got is not None, (c["id"], metrics)
        assert abs(got - (not_after - now)) <= 120, (c["name"], got, not_after - now)
    assert set(metrics) == {(c["id"], c["name"]) for c in (srv, soon, ca)}
    # "soon" expires in 10 days: a warning naming its id appears (the check runs every
    # second); the long-lived ones get none.
    lines = h.wait_until(lambda: [ln for ln in cu.warn_lines(slbd) if soon["id"] in ln], 10,
                         "an expiry warning for the soon-to-expire certificate")
    assert any("expire" in ln for ln in lines), lines
    time.sleep(1.5)  # another check round: still no warning for the others, no repetition
    assert not [ln for ln in cu.warn_lines(slbd) if srv["id"] in ln or ca["id"] in ln]
    assert len([ln for ln in cu.warn_lines(slbd) if soon["id"] in ln]) == 1, cu.warn_lines(slbd)
    # Replacing it with a long-lived certificate moves the metric.
    st, js = slbd.api.put(f"/v1/certificates/{soon['id']}",
                          cu.server_body("soon", pki.chain("server-rsa"), pki.key("server-rsa")))
    assert st == 200, js
    got = cu.expiry_metrics(slbd)[(soon["id"], "soon")]
    _, not_after = cu.cert_dates(pki.path("server-rsa.pem"))
    assert abs(got - (not_after - time.time())) <= 120
    # Deleting removes the series.
    assert slbd.api.delete(f"/v1/certificates/{srv['id']}")[0] == 204
    assert (srv["id"], "long-lived") not in cu.expiry_metrics(slbd)


# --------------------------------------------------------------------------------------------
# slbctl
# --------------------------------------------------------------------------------------------


def test_slbctl_cert_commands(slbd, pki):
    p = cu.slbctl(slbd, "cert", "upload", "--name", "web", "--type", "server", "--cert",
                  pki.path("server-chain.pem"), "--key", pki.path("server.key"))
    assert p.returncode == 0, (p.stdout, p.stderr)
    shown = cu.show_fields(p.stdout)
    cid = shown.get("id")
    assert cid and shown.get("fingerprint_sha256") == pki.fingerprint("server"), p.stdout
    # list: a table with the certificate.
    p = cu.slbctl(slbd, "cert", "list")
    assert p.returncode == 0, p.stderr
    rows = cu.table_rows(p.stdout)
    assert [(r["ID"], r["NAME"], r["TYPE"], r["KEY"]) for r in rows] == [
        (cid, "web", "server", "ec-p256")], p.stdout
    # --json list matches the API.
    p = cu.slbctl(slbd, "--json", "cert", "list")
    assert p.returncode == 0 and cu.json_of(p) == {"certificates": cu.cert_list(slbd)}
    # show
    p = cu.slbctl(slbd, "cert", "show", cid)
    assert p.returncode == 0, p.stderr
    assert cu.show_fields(p.stdout)["key_type"] == "ec-p256", p.stdout
    p = cu.slbctl(slbd, "cert", "show", cid, "--json")
    assert p.returncode == 0 and cu.json_of(p) == cu.get_cert(slbd, cid)
    # replace
    p = cu.slbctl(slbd, "cert", "replace", cid, "--cert", pki.path("server-rsa-chain.pem"),
                  "--key", pki.path("server-rsa.key"))
    assert p.returncode == 0, (p.stdout, p.stderr)
    got = cu.get_cert(slbd, cid)
    assert got["fingerprint_sha256"] == pki.fingerprint("server-rsa"), got
    assert got["name"] == "web" and got["key_type"] == "rsa-2048", got
    # API errors: exit 1 with the API's message and code on stderr.
    p = cu.slbctl(slbd, "cert", "upload", "--name", "old", "--type", "server", "--cert",
                  pki.path("expired.pem"), "--key", pki.path("expired.key"))
    assert p.returncode == 1 and "expired" in p.stderr, (p.returncode, p.stderr)
    p = cu.slbctl(slbd, "cert", "upload", "--name", "web", "--type", "server", "--cert",
                  pki.path("server.pem"), "--key", pki.path("server.key"))
    assert p.returncode == 1 and "name_taken" in p.stderr, (p.returncode, p.stderr)
    p = cu.slbctl(slbd, "cert", "replace", cid, "--cert", pki.path("server.pem"), "--key",
                  pki.path("server-rsa.key"))
    assert p.returncode == 1 and "key_mismatch" in p.stderr, (p.returncode, p.stderr)
    p = cu.slbctl(slbd, "cert", "show", "no-such-id")
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    p = cu.slbctl(slbd, "cert", "upload", "--name", "der", "--type", "server", "--cert",
                  pki.path("server.der"), "--key", pki.path("server.key"))
    assert p.returncode == 1 and p.stderr.strip(), (p.returncode, p.stderr)
    assert cu.get_cert(slbd, cid)["fingerprint_sha256"] == pki.fingerprint("server-rsa")
    # delete
    p = cu.slbctl(slbd, "cert", "delete", cid)
    assert p.returncode == 0, p.stderr
    assert slbd.api.get(f"/v1/certificates/{cid}")[0] == 404
    p = cu.slbctl(slbd, "cert", "delete", cid)
    assert p.returncode == 1 and "not_found" in p.stderr, (p.returncode, p.stderr)
    p = cu.slbctl(slbd, "cert", "list")
    assert p.returncode == 0 and cu.table_rows(p.stdout) == [], p.stdout
    # Nothing slbctl printed carried the key.
    cu.assert_no_secret(slbd.log_text(), all_keys(pki), "slbd's log")
