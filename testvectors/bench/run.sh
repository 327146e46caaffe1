#!/bin/sh
# The end-to-end benchmark: erebus (mio and smol drivers, HTTP proxy, as nobody) against the
# stock OpenVPN 2.6 client (kernel TUN) on a real OpenVPN 2.6 server in network namespaces.
# Needs root, openvpn, dnsmasq, python3, curl. Prints markdown tables and writes them to
# target/bench/erebus-vs-openvpn.md. Takes a long while at the defaults.
#
# Usage: sudo testvectors/bench/run.sh
# Settings (environment, defaults in brackets):
#   EREBUS_BENCH_BYTES        large download size in bytes [268435456]
#   EREBUS_BENCH_ROUNDS       interleaved rounds per case and client, medians reported [3]
#   EREBUS_BENCH_SMALL        sequential small requests per session [500]
#   EREBUS_BENCH_LOAD         concurrent downloads for erebus's peak RSS, 0 skips [1000]
#   EREBUS_BENCH_LOAD_BYTES   size of each of them [1048576]
#   EREBUS_BENCH_LOAD_TIMEOUT_SECS  time allowed for all of them [300]
#   EREBUS_BENCH_SETTLE_SECS  pause before RSS is read again after the load [60]
#   EREBUS_BENCH_CASES        comma-separated subset of aes-udp,chacha-udp,aes-tcp [all]
#   EREBUS_BENCH_PERF         file to `perf record -g` erebus into during the first
#                             AES-256-GCM UDP download [off]
#   EREBUS_BENCH_PERF_RUNTIME the driver profiled: mio, smol [mio]
#   EREBUS_BENCH_OUT          where the tables go [target/bench/erebus-vs-openvpn.md]
# Example, a quick run: EREBUS_BENCH_BYTES=33554432 EREBUS_BENCH_ROUNDS=1 \
#   EREBUS_BENCH_LOAD_TIMEOUT_SECS  time allowed for all of them [300]
#   EREBUS_BENCH_SETTLE_SECS=5 testvectors/bench/run.sh
set -eu
cd "$(dirname "$0")/../.."
exec cargo test --release --locked -p erebus --test bench_e2e -- \
    --ignored --nocapture --test-threads=1 erebus_against_the_stock_openvpn_client
