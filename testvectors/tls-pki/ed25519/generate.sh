#!/bin/sh
# Regenerates the test-only Ed25519 PKI of the server-role tests (core/openvpn/src/server,
# core/server).
#
# Ed25519 signatures are deterministic, so a handshake with these keys is a pure function of
# the sessions' seeds: the determinism test replays a whole server session byte for byte.
# (RSA-PSS and ECDSA signing in *ring* draws from the system.) Everything here is published on
# purpose and protects nothing. Valid for 20 years from the day it was made; the tests pin
# their wall time (ED_NOW_UNIX in server/tests.rs) inside that range.
#
# Usage: cd testvectors/tls-pki/ed25519 && ./generate.sh
set -eu
days=7300
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey ed25519 -nodes -keyout "$work/ed-ca.key" -out ed-ca.crt -days $days \
    -subj "/C=DE/O=erebus test/CN=erebus test Ed25519 CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" 2>/dev/null

leaf() { # name, subject, extensions
    printf '[ext]\n%s\n' "$3" > "$work/$1.ext"
    openssl req -new -newkey ed25519 -nodes -keyout "$1.key" -out "$work/$1.csr" \
        -subj "$2" 2>/dev/null
    openssl x509 -req -in "$work/$1.csr" -CA ed-ca.crt -CAkey "$work/ed-ca.key" \
        -CAcreateserial -CAserial "$work/ed-ca.srl" -out "$1.crt" -days $days \
        -extfile "$work/$1.ext" -extensions ext 2>/dev/null
}

leaf ed-server "/C=DE/O=erebus test/CN=server.erebus.test" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:server.erebus.test'
leaf ed-client "/C=DE/O=erebus test/CN=ed-client" 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'
