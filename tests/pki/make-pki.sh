#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Generates a throw-away test PKI with the openssl CLI into DIR (created when missing): a root
# and an intermediate CA, good and deliberately broken server and client certificates, CRLs and
# malformed PEM files that the unit and end-to-end tests upload.
#
# Usage: sh tests/pki/make-pki.sh DIR
#
# Files (every certificate X has X.pem and its key X.key):
#   root            self-signed root CA ("SLB Test Root CA")
#   inter           intermediate CA signed by root (pathlen 0); signs everything below
#   server          EC P-256 server cert for localhost, www.example.com, *.example.com, 127.0.0.1
#   server-rsa      RSA-2048 server cert for the same names
#   client          client cert (clientAuth)
#   expired         server cert valid 2020-01-01 .. 2021-01-01
#   notyet          server cert valid from 2099-01-01
#   soon            server cert that expires 10 days after the script ran
#   client-expired  client cert valid 2020-01-01 .. 2021-01-01
#   client-revoked  client cert revoked in inter.crl
#   client-notyet   client cert valid from 2099-01-01
#   weak-rsa        server cert with an RSA-1024 key
#   weak-curve      server cert with a secp256k1 key
#   wrongca         an unrelated self-signed CA; wrong-inter is an intermediate under it and
#                   wrong-client a client cert signed by wrongca
#   inter-expired   an intermediate CA under root that expired in 2021 and server-under-expired
#                   a server cert it signed
# Bundles and special files:
#   server-chain.pem          server + inter        server-full.pem   server + inter + root
#   server-rsa-chain.pem      server-rsa + inter    server-dh.pem     server + inter + DH params
#   server-enc.key            server.key as PKCS#8 encrypted ("ENCRYPTED PRIVATE KEY")
#   server-rsa-enc.key        server-rsa.key as traditional PEM with Proc-Type: 4,ENCRYPTED
#   server-rsa-trad.key       server-rsa.key as "RSA PRIVATE KEY"
#   server-ec-trad.key        "EC PARAMETERS" + "EC PRIVATE KEY" of server.key
#   server.der                the server certificate in DER
#   inter.crl                 CRL of inter revoking client-revoked (PEM)
#   inter-future.crl          CRL of inter whose lastUpdate is in 2099
#   inter-stale.crl           CRL of inter whose nextUpdate was in 2021
#   wrongca.crl               CRL of wrongca
#   root.crl                  CRL of root (revokes nothing)
#   root-revokes-inter.crl    CRL of root revoking inter
# The passphrase of the encrypted keys is "secret". openssl's chatter goes to DIR/openssl.log.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
D=$1
mkdir -p "$D"
D=$(cd "$D" && pwd)
LOG=$D/openssl.log
: >"$LOG"

SANS="DNS:localhost,DNS:www.example.com,DNS:*.example.com,IP:127.0.0.1"

run() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "make-pki: failed: $*" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
}

# keygen NAME ec|rsa2048|rsa1024|k256
keygen() {
    case $2 in
    ec) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$D/$1.key" ;;
    rsa2048) run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$D/$1.key" ;;
    rsa1024) run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$D/$1.key" ;;
    k256) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:secp256k1 \
        -out "$D/$1.key" ;;
    esac
    chmod 600 "$D/$1.key"
}

# One openssl configuration per CA: the `openssl ca` database plus the extension sections
# used when that CA signs, and a [req] section so no system openssl.cnf is consulted.
mkcfg() {
    cadir=$D/ca-$1
    mkdir -p "$cadir/newcerts"
    : >"$cadir/index.txt"
    echo 1000 >"$cadir/serial"
    echo 1000 >"$cadir/crlnumber"
    cat >"$cadir/openssl.cnf" <<EOF
[ ca ]
default_ca = ca_default

[ ca_default ]
dir = $cadir
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $D/$1.pem
private_key = $D/$1.key
default_md = sha256
default_days = 3650
default_crl_days = 30
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none

[ policy_any ]
organizationName = optional
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt = no

[ req_dn ]
CN = unused

[ root_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ inter_ext ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $SANS
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ client_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ crl_ext ]
authorityKeyIdentifier = keyid
EOF
}

# selfsigned NAME "CN" : a root CA
selfsigned() {
    keygen "$1" ec
    mkcfg "$1"
    run openssl req -config "$D/ca-$1/openssl.cnf" -new -x509 -key "$D/$1.key" \
        -subj "/O=SLB Test/CN=$2" -days 7300 -sha256 -extensions root_ext -out "$D/$1.pem"
}

# issue CA NAME KEYKIND EXT "CN" [VALIDITY-OPTIONS]
issue() {
    ca=$1 name=$2 kind=$3 ext=$4 cn=$5 dates=${6:--days 3650}
    keygen "$name" "$kind"
    run openssl req -config "$D/ca-$ca/openssl.cnf" -new -key "$D/$name.key" \
        -subj "/O=SLB Test/CN=$cn" -out "$D/$name.csr"
    # shellcheck disable=SC2086 # $dates is two option pairs on purpose
    run openssl ca -config "$D/ca-$ca/openssl.cnf" -batch -notext -extensions "$ext" \
        $dates -in "$D/$name.csr" -out "$D/$name.pem"
    rm -f "$D/$name.csr"
}

PAST="-startdate 20200101000000Z -enddate 20210101000000Z"
FUTURE="-startdate 20990101000000Z -enddate 21000101000000Z"

selfsigned root "SLB Test Root CA"
issue root inter ec inter_ext "SLB Test Intermediate CA"
mkcfg inter
issue root inter-expired ec inter_ext "SLB Test Expired Intermediate" "$PAST"
mkcfg inter-expired

issue inter server ec server_ext "localhost"
issue inter server-rsa rsa2048 server_ext "localhost"
issue inter client ec client_ext "SLB Test Client"
issue inter expired ec server_ext "localhost" "$PAST"
issue inter notyet ec server_ext "localhost" "$FUTURE"
issue inter soon ec server_ext "localhost" "-days 10"
issue inter client-expired ec client_ext "SLB Test Expired Client" "$PAST"
issue inter client-revoked ec client_ext "SLB Test Revoked Client"
issue inter client-notyet ec client_ext "SLB Test Future Client" "$FUTURE"
issue inter weak-rsa rsa1024 server_ext "localhost"
issue inter weak-curve k256 server_ext "localhost"
issue inter-expired server-under-expired ec server_ext "localhost"

selfsigned wrongca "SLB Test Wrong CA"
issue wrongca wrong-inter ec inter_ext "SLB Test Wrong Intermediate"
issue wrongca wrong-client ec client_ext "SLB Test Wrong Client"

# CRLs: the revocation goes into inter's database, then -gencrl signs the list.
run openssl ca -config "$D/ca-inter/openssl.cnf" -batch -revoke "$D/client-revoked.pem" \
    -crl_reason keyCompromise
run openssl ca -config "$D/ca-inter/openssl.cnf" -batch -gencrl -crlexts crl_ext \
    -out "$D/inter.crl"
run openssl ca -config "$D/ca-inter/openssl.cnf" -batch -gencrl -crlexts crl_ext \
    -crl_lastupdate 20990101000000Z -crl_nextupdate 20990201000000Z -out "$D/inter-future.crl"
run openssl ca -config "$D/ca-inter/openssl.cnf" -batch -gencrl -crlexts crl_ext \
    -crl_lastupdate 20200101000000Z -crl_nextupdate 20210101000000Z -out "$D/inter-stale.crl"
run openssl ca -config "$D/ca-wrongca/openssl.cnf" -batch -gencrl -crlexts crl_ext \
    -out "$D/wrongca.crl"
run openssl ca -config "$D/ca-root/openssl.cnf" -batch -gencrl -crlexts crl_ext \
    -out "$D/root.crl"
run openssl ca -config "$D/ca-root/openssl.cnf" -batch -revoke "$D/inter.pem" \
    -crl_reason cACompromise
run openssl ca -config "$D/ca-root/openssl.cnf" -batch -gencrl -crlexts crl_ext \
    -out "$D/root-revokes-inter.crl"

# Bundles as users paste them.
cat "$D/server.pem" "$D/inter.pem" >"$D/server-chain.pem"
cat "$D/server.pem" "$D/inter.pem" "$D/root.pem" >"$D/server-full.pem"
cat "$D/server-rsa.pem" "$D/inter.pem" >"$D/server-rsa-chain.pem"
run openssl genpkey -genparam -algorithm DH -pkeyopt dh_param:ffdhe2048 -out "$D/dh.pem"
cat "$D/server.pem" "$D/inter.pem" "$D/dh.pem" >"$D/server-dh.pem"

# Key encodings.
run openssl pkey -in "$D/server.key" -aes256 -passout pass:secret -out "$D/server-enc.key"
run openssl rsa -in "$D/server-rsa.key" -traditional -aes128 -passout pass:secret \
    -out "$D/server-rsa-enc.key"
run openssl rsa -in "$D/server-rsa.key" -traditional -out "$D/server-rsa-trad.key"
run openssl ecparam -name prime256v1 -out "$D/server-ec-trad.key"
openssl ec -in "$D/server.key" 2>>"$LOG" >>"$D/server-ec-trad.key"
run openssl x509 -in "$D/server.pem" -outform DER -out "$D/server.der"
chmod 600 "$D"/*.key

exit 0
