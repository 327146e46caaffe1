#!/usr/bin/env bash
# Runs every erebus test: unit, property, simulation, and the interop tests against real peers
# in network namespaces. Interop tests need root; without it they fail under CI=true and say so.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --workspace --release --locked "$@"
