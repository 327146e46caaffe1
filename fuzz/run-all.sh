#!/usr/bin/env bash
# Builds every cargo-fuzz target (erebus-ipsec, erebus-openvpn's server role, erebus-server)
# and runs each for SECONDS (default 30).
# Exits non-zero if any target crashed (a panic, an overflow, an out-of-memory or a timeout),
# after running the others; the crashing input is then in fuzz/artifacts/<target>/.
#
#   fuzz/run-all.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The toolchain is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. The seeds in fuzz/corpus/<target>/ are
# read but never written: what the fuzzer finds goes to fuzz/work/<target>/ (ignored by git).
#
# The targets are built without AddressSanitizer (`-s none`): erebus and its harnesses are
# safe Rust, ASan would find nothing more and makes the runs about eight times slower. Debug
# assertions and overflow checks stay on (cargo-fuzz's default release build). Set
# FUZZ_SANITIZER=address to run with it anyway.
set -euo pipefail

seconds="${1:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir/.."
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

targets=$(cargo fuzz list)
echo "== building: $(echo $targets)"
cargo fuzz build -s "$sanitizer"

failed=()
for target in $targets; do
  work="$fuzz_dir/work/$target"
  mkdir -p "$work" "$fuzz_dir/corpus/$target"
  echo "== $target: ${seconds}s"
  # -rss_limit_mb: the session keeps whole IKE messages; 2 GB is libFuzzer's default too.
  if ! cargo fuzz run -s "$sanitizer" "$target" "$work" "$fuzz_dir/corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
    echo "== $target: CRASH (input in fuzz/artifacts/$target/)" >&2
    failed+=("$target")
  fi
done

if ((${#failed[@]})); then
  echo "== crashed: ${failed[*]}" >&2
  exit 1
fi
echo "== no crash in $(echo $targets | wc -w) targets"
