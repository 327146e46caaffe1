#!/bin/sh
# client-connect script of the erebus interop harness, profile "tls-legacy-prf": admits only
# clients that do not announce TLS_KEY_EXPORT (bit 3 of IV_PROTO), so that both sides derive
# the data-channel keys with the OpenVPN TLS PRF. OpenVPN exports the client's peer info
# (IV_PROTO, IV_VER, ...) to the environment of this script. Its output goes to the server log.
proto="${IV_PROTO:-0}"
case "$proto" in
    '' | *[!0-9]*)
        echo "check-legacy-prf.sh: REFUSED client with malformed IV_PROTO '$proto'"
        exit 1
        ;;
esac
if [ $((proto & 8)) -ne 0 ]; then
    echo "check-legacy-prf.sh: REFUSED client announcing TLS_KEY_EXPORT (IV_PROTO=$proto)"
    exit 1
fi
echo "check-legacy-prf.sh: admitted client without TLS_KEY_EXPORT (IV_PROTO=$proto): legacy PRF"
exit 0
