#!/bin/sh
# Records every fixture of this directory again against the real OpenVPN 2.6 server of the
# namespace harness (testvectors/src/netns.rs), and the IPsec one against strongSwan 5.9,
# then replays what it wrote.
#
# Needs root, /dev/net/tun, `ip netns` and the harness's programs (openvpn, openssl, dnsmasq,
# python3, curl). Usage, from anywhere in the repository:
#
#   testvectors/replays/record.sh                      # all fixtures
#   testvectors/replays/record.sh tls-crypt-udp-mio    # one of them
set -eu
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ]; then
    export EREBUS_RECORD_ONLY="$1"
fi
export EREBUS_RECORD_FIXTURES=1
# The IPsec fixture comes from the strongSwan harness (testvectors/src/strongswan.rs).
if [ "${EREBUS_RECORD_ONLY:-ipsec-psk-udp-mio}" = ipsec-psk-udp-mio ]; then
    cargo test --release -p erebus --test ipsec_e2e \
        -- --ignored --exact record_ipsec_fixture --nocapture
fi
if [ "${EREBUS_RECORD_ONLY:-}" != ipsec-psk-udp-mio ]; then
    cargo test --release -p erebus --test replay_fixtures \
        -- --ignored --exact record_fixtures --nocapture
fi
