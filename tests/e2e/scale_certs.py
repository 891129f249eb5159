# SPDX-License-Identifier: Apache-2.0
"""Thousands of ECDSA server certificates, quickly (Python's cryptography), as slbd's
certificate store files (DIR/certs/<id>.json), cached under the build directory so a second
run copies instead of signing. Used by tests/e2e/test_sni_scale.py and bench/scale.py.

Certificate i (id "s<i>") names "site<i>.scale.test"; certificate 1 instead names
"*.wild.scale.test" (a wildcard), and certificate 0 is the default. Every certificate has its
own P-256 key unless shared_key (one key for all, which still tests the lookup)."""

import datetime
import json
import os
import shutil
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FORMAT = 1  # bump when the files' contents change, so caches are regenerated


def name_of(i):
    return "*.wild.scale.test" if i == 1 else f"site{i}.scale.test"


def cert_id(i):
    return f"s{i}"


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _generate(dest, n, shared_key):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slbd scale test root")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (dest / "root.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (dest / "root.key").write_text(_pem_key(ca_key))
    certs = dest / "certs"
    certs.mkdir(mode=0o700)
    one = ec.generate_private_key(ec.SECP256R1()) if shared_key else None
    one_pem = _pem_key(one) if one else None
    created = int(time.time())
    for i in range(n):
        key = one or ec.generate_private_key(ec.SECP256R1())
        name = name_of(i)
        cert = _leaf(ca, ca_key, key, name, now)
        doc = {"id": cert_id(i), "name": f"scale-{i}", "type": "server", "version": 1,
               "certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
               "private_key": one_pem or _pem_key(key), "crl": None, "created": created}
        fd = os.open(certs / f"{cert_id(i)}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)


def cached(cache_root, n, shared_key=False):
    """The directory holding root.pem and certs/ for n certificates, generated once."""
    d = Path(cache_root) / f"scale-certs-v{FORMAT}-{n}{'-shared' if shared_key else ''}"
    if not (d / "done").exists():
        tmp = d.with_name(d.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _generate(tmp, n, shared_key)
        (tmp / "done").write_text("ok\n")
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
    return d


def install(cache_dir, state_dir):
    """Copy the certificate files into a (stopped) slbd's state directory."""
    dst = Path(state_dir) / "certs"
    dst.mkdir(mode=0o700, parents=True, exist_ok=True)
    for f in (Path(cache_dir) / "certs").iterdir():
        shutil.copyfile(f, dst / f.name)
        os.chmod(dst / f.name, 0o600)


def _leaf(ca, ca_key, key, name, now):
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name.replace("*", "wild"))])
    return (x509.CertificateBuilder().subject_name(subj).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))


def issue_one(cache_dir, i):
    """A fresh certificate with a new key for certificate i's name, signed by the same root:
    (certificate PEM, key PEM, SHA-256 of the DER). For a replace."""
    d = Path(cache_dir)
    ca = x509.load_pem_x509_certificate((d / "root.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((d / "root.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _leaf(ca, ca_key, key, name_of(i), datetime.datetime.now(datetime.timezone.utc))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(), _pem_key(key),
            cert.fingerprint(hashes.SHA256()).hex())
