#!/bin/sh
# Regenerates the test-only PKI used by the TLS unit tests of erebus-openvpn.
#
# Everything here is published on purpose and protects nothing. Certificates are valid for
# 20 years from the day they were made; the tests pin the verification time, so re-running this
# script means updating the time constants in core/openvpn/src/tls/verify.rs (tests).
#
# Usage: cd testvectors/tls-pki && ./generate.sh
set -eu
days=7300
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ext() { # name, extensions
    printf '[ext]\n%s\n' "$2" > "$work/$1.ext"
}

ca() { # name, subject
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days $days \
        -subj "$2" -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null
}

leaf() { # name, key algorithm options, subject, issuer, extensions
    name=$1; keyopt=$2; subj=$3; issuer=$4
    ext "$name" "$5"
    openssl req -new -newkey $keyopt -nodes -keyout "$work/$name.key" -out "$work/$name.csr" \
        -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$work/$name.csr" -CA "$issuer.crt" -CAkey "$issuer.key" \
        -CAcreateserial -CAserial "$work/$issuer.srl" -out "$name.crt" -days $days -sha256 \
        -extfile "$work/$name.ext" -extensions ext 2>/dev/null
    cp "$work/$name.key" "$name.key"
}

server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:server.erebus.test'
client_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

ca ca "/C=DE/O=erebus test/CN=erebus test CA"
ca other-ca "/C=DE/O=someone else/CN=unrelated test CA"

# The good server: what `openssl ca` and Easy-RSA produce for a server.
leaf server "rsa:2048" "/C=DE/O=erebus test/CN=server.erebus.test" ca "$server_ext"
# The same, signed by a CA the profile does not trust.
leaf server-other-ca "rsa:2048" "/C=DE/O=erebus test/CN=server.erebus.test" other-ca "$server_ext"
# A client certificate presented as a server: OpenSSL's purpose check refuses it.
leaf server-client-eku "rsa:2048" "/C=DE/O=erebus test/CN=server.erebus.test" ca "$client_ext"
# No extended key usage at all: chains fine, fails `remote-cert-tls server`.
leaf server-no-eku "rsa:2048" "/C=DE/O=erebus test/CN=server.erebus.test" ca 'basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment'
# No key usage extension: fails `remote-cert-tls server` (OpenVPN requires the extension).
leaf server-no-ku "rsa:2048" "/C=DE/O=erebus test/CN=server.erebus.test" ca 'basicConstraints=CA:FALSE
extendedKeyUsage=serverAuth'
# An ECDSA P-256 server.
leaf server-ec "ec -pkeyopt ec_paramgen_curve:P-256" "/C=DE/O=erebus test/CN=ec-server.erebus.test" ca "$server_ext"

# Clients: RSA (PKCS#1 and PKCS#8 key files) and ECDSA P-256 (SEC1 and PKCS#8 key files).
leaf client "rsa:2048" "/C=DE/O=erebus test/CN=client1" ca "$client_ext"
openssl pkey -in client.key -out client.pkcs8.key
openssl rsa -in client.key -traditional -out client.pkcs1.key 2>/dev/null
rm client.key
leaf client-ec "ec -pkeyopt ec_paramgen_curve:P-256" "/C=DE/O=erebus test/CN=client2" ca "$client_ext"
openssl pkey -in client-ec.key -out client-ec.pkcs8.key
openssl ec -in client-ec.key -out client-ec.sec1.key 2>/dev/null
rm client-ec.key
# A bare P-384 key (no certificate) for the signing unit tests.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out client-p384.key
rm -f other-ca.key ca.key
