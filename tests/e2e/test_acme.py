# SPDX-License-Identifier: Apache-2.0
"""ACME. The protocol modules exist (src/acme/, unit-tested in tests/unit/test_acme_jws.c) but
the order flow is not wired end to end yet, so the API refuses every ACME request with one
clear error and changes nothing."""

import cert_util as cu
from pki import pki  # noqa: F401  (fixture)


def test_acme_is_refused_as_not_available_yet(slbd, pki):
    acme = {"account": "le", "domains": ["a.test"], "key_type": "ec-p256",
            "challenge": "http-01"}
    api = slbd.api
    before = api.get("/v1/certificates")[1]["certificates"]
    r = api.request("POST", "/v1/certificates", {"name": "auto", "type": "server", "acme": acme})
    assert r.status == 501 and r.error_code() == "acme_not_available", r
    assert "not available yet" in r.text, r
    r = api.request("POST", "/v1/acme/accounts", {"name": "le", "directory": "https://ca/dir",
                                                    "email": "ops@example.test"})
    assert r.status == 501 and r.error_code() == "acme_not_available", r
    assert api.request("GET", "/v1/acme/accounts").status == 501
    # A replace that names acme is refused too, and leaves the certificate as it was.
    st, made = api.post("/v1/certificates", cu.server_body("up", pki.chain("server"),
                                                                pki.key("server")))
    assert st == 201, made
    r = api.request("PUT", f"/v1/certificates/{made['id']}", {"acme": acme})
    assert r.status == 501 and r.error_code() == "acme_not_available", r
    assert api.get(f"/v1/certificates/{made['id']}") == (200, made)
    assert len(api.get("/v1/certificates")[1]["certificates"]) == len(before) + 1
