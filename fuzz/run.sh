#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after the other, from the seed corpus; exits
# non-zero on the first finding (its input is left in fuzz/artifacts/<target>/). test.sh runs it
# with the default 45 s per target; FUZZ_SECONDS sets another bound.
#
# On the pinned nightly (splitter-common's EBPF_TOOLCHAIN): cargo fuzz needs -Zsanitizer.
# SPLITTER_NO_EBPF=1: the targets need no eBPF object, and building one would hand the sanitizer
# flags on to the BPF build.
set -euo pipefail
cd "$(dirname "$0")/.."
nightly=$(sed -n 's/^pub const EBPF_TOOLCHAIN: &str = "\(.*\)";/\1/p' splitter-common/src/lib.rs)
seconds=${FUZZ_SECONDS:-45}
export SPLITTER_NO_EBPF=1

cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo +"$nightly" fuzz build
for target in $(cargo +"$nightly" fuzz list); do
  # New inputs go to a scratch directory: the committed seeds stay as they are.
  scratch=$(mktemp -d)
  echo "fuzz: $target for ${seconds}s"
  # One job (the machine is shared), 10 s per input at most (a slower one is a finding too).
  if ! cargo +"$nightly" fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$scratch.log" 2>&1; then
    tail -n 60 "$scratch.log" >&2
    echo "fuzz: $target found a failing input: see fuzz/artifacts/$target/ and fuzz/README.md" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units)' "$scratch.log" || true
  rm -rf "$scratch" "$scratch.log"
done
