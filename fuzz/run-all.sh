#!/usr/bin/env bash
# Builds every cargo-fuzz target (erebus-ipsec, erebus-openvpn, erebus-net, erebus-proxy,
# erebus-server) and runs each for SECONDS (default 30), FUZZ_JOBS targets at a time
# (default 1; each libFuzzer process uses one core).
# Exits non-zero if any target crashed (a panic, an overflow, an out-of-memory or a timeout),
# after running the others; the crashing input is then in fuzz/artifacts/<target>/.
#
#   [FUZZ_JOBS=2] fuzz/run-all.sh [SECONDS [TARGET...]]
#
# With TARGETs, only those are built and run.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). The toolchain is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. The seeds in fuzz/corpus/<target>/ are
# read but never written: what the fuzzer finds goes to fuzz/work/<target>/ (ignored by git),
# and each run's output to fuzz/work/<target>.log (its last lines are printed).
#
# The targets are built without AddressSanitizer (`-s none`): erebus and its harnesses are
# safe Rust, ASan would find nothing more and makes the runs about eight times slower. Debug
# assertions and overflow checks stay on (cargo-fuzz's default release build). Set
# FUZZ_SANITIZER=address to run with it anyway.
set -euo pipefail

seconds="${1:-30}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS [TARGET...]]" >&2; exit 2 ;;
esac

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir/.."
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

if (($# > 1)); then
  targets="${*:2}"
  echo "== building: $targets"
  for target in $targets; do
    cargo fuzz build -s "$sanitizer" "$target"
  done
else
  targets=$(cargo fuzz list)
  echo "== building: $(echo $targets)"
  cargo fuzz build -s "$sanitizer"
fi

jobs="${FUZZ_JOBS:-1}"
case "$jobs" in
  '' | 0 | *[!0-9]*) echo "FUZZ_JOBS must be a positive number" >&2; exit 2 ;;
esac

# One target: its output goes to a log; a crash is recorded in the lane's failure list.
run_one() {
  local target="$1" failures="$2"
  local work="$fuzz_dir/work/$target" log="$fuzz_dir/work/$target.log"
  mkdir -p "$work" "$fuzz_dir/corpus/$target"
  # -rss_limit_mb: the session keeps whole IKE messages; 2 GB is libFuzzer's default too.
  # FUZZ_SEED fixes libFuzzer's random seed (CI sets it, so a run can be repeated exactly).
  if cargo fuzz run -s "$sanitizer" "$target" "$work" "$fuzz_dir/corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      ${FUZZ_SEED:+-seed="$FUZZ_SEED"} >"$log" 2>&1; then
    echo "== $target: ok, $(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)," \
      "$(grep -Eo 'exec/s: [0-9]+' "$log" | tail -1)"
  else
    echo "== $target: CRASH (input in fuzz/artifacts/$target/, output in $log)" >&2
    tail -n 40 "$log" >&2
    echo "$target" >>"$failures"
  fi
}

# Lanes: lane i runs targets i, i + jobs, i + 2 * jobs, ... one after the other, so at most
# `jobs` fuzzers run at once and a crash in one lane does not stop the others.
mkdir -p "$fuzz_dir/work"
failures="$(mktemp)"
trap 'rm -f "$failures"' EXIT
read -r -a all <<<"$(echo $targets)"
echo "== running ${#all[@]} targets for ${seconds}s each, $jobs at a time"
for ((lane = 0; lane < jobs; lane++)); do
  (
    for ((i = lane; i < ${#all[@]}; i += jobs)); do
      run_one "${all[$i]}" "$failures"
    done
  ) &
done
wait

if [[ -s "$failures" ]]; then
  echo "== crashed: $(sort "$failures" | tr '\n' ' ')" >&2
  exit 1
fi
echo "== no crash in ${#all[@]} targets"
