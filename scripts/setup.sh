#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: the pinned Rust toolchain, the Debian
# packages the tests and benchmarks use (wrk, haproxy, bpftool, systemd-analyze), the eBPF
# toolchain (nightly, bpf-linker), and with `--fuzz` cargo-fuzz. Sourced by ../demo.sh and
# ../test.sh (`source scripts/setup.sh --fuzz`).
set -euo pipefail

if ! command -v rustup >/dev/null 2>&1; then
  echo "rustup is required: https://rustup.rs" >&2
  exit 1
fi
# rustup's self-update here can replace the rustup binary with an older one.
rustup set auto-self-update disable >/dev/null 2>&1 || true
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")
if ! rustup run "$toolchain" cargo --version >/dev/null 2>&1 \
  || ! rustup component list --toolchain "$toolchain" --installed 2>/dev/null | grep -q clippy; then
  rustup toolchain install "$toolchain" --profile minimal --component clippy,rustfmt --no-self-update
fi

# Debian packages the tests and benchmarks drive: tool, then the package that has it.
if [ "${SPLITTER_SKIP_APT:-0}" != 1 ]; then
  need=()
  for pair in wrk:wrk haproxy:haproxy bpftool:bpftool systemd-analyze:systemd; do
    tool=${pair%%:*}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("${pair#*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      # One at a time: a package the mirror fails to serve (it happens to bpftool on Debian's
      # security mirror) costs only the tests that need it, which say so and skip.
      for pkg in "${need[@]}"; do
        apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
          || echo "warning: could not install $pkg: the tests that need it will skip" >&2
      done
    else
      echo "note: ${need[*]} missing and not root: the tests that need them will say so and skip" >&2
    fi
  fi
fi

# The eBPF steering program: the pinned nightly with rust-src, and bpf-linker built against that
# nightly's LLVM (cargo xtask setup-ebpf installs only what is missing). Without them splitter
# still builds and falls back to SO_REUSEPORT, so a failure here warns and goes on.
if [ "${SPLITTER_NO_EBPF:-0}" != 1 ]; then
  if ! (cd "$(dirname "${BASH_SOURCE[0]}")/.." && cargo xtask setup-ebpf); then
    echo "warning: eBPF toolchain set-up failed: splitter will build without eBPF steering" \
      "(SO_REUSEPORT fallback); see the output above" >&2
  fi
fi

# cargo-fuzz, for the bounded fuzz step of ../test.sh (fuzz/run.sh, SPEC 9 "Fuzzed"), so only
# with `--fuzz`: the demo does without. It runs on the pinned nightly (-Zsanitizer needs one),
# installed here too when the eBPF set-up above was skipped or failed. Both only when missing.
if [ "${1:-}" = --fuzz ]; then
  nightly=$(sed -n 's/^pub const EBPF_TOOLCHAIN: &str = "\(.*\)";/\1/p' \
    "$(dirname "${BASH_SOURCE[0]}")/../splitter-common/src/lib.rs")
  if ! rustup run "$nightly" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$nightly" --profile minimal --no-self-update
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
  fi
fi
