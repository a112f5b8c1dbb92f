#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (apt) or Amazon Linux 2023 (dnf): the C
# toolchain rustc links with, the pinned Rust toolchain, the system packages the tests,
# benchmarks and `cargo xtask package` use (scripts/packages.sh: one table, per manager), and
# the eBPF toolchain (nightly, bpf-linker). Only what is missing is installed. Sourced by
# ../demo.sh and ../test.sh.
#
# With `--fuzz` (../test.sh: `source scripts/setup.sh --fuzz`), cargo-fuzz too.
#
# SPLITTER_SKIP_APT=1 (../demo.sh): only what the build needs, none of the test and packaging
# tools (the name is older than dnf support; it means either manager). SPLITTER_NO_EBPF=1: no
# eBPF toolchain.
set -euo pipefail
# shellcheck source=scripts/packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/packages.sh"

# The C toolchain first: rustc links through `cc`, and nothing builds without it.
splitter_install_missing build

if ! command -v rustup >/dev/null 2>&1; then
  echo "rustup is required: https://rustup.rs" >&2
  exit 1
fi
# rustup's self-update here can replace the rustup binary with an older one.
rustup set auto-self-update disable >/dev/null 2>&1 || true
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../rust-toolchain.toml")
# llvm-tools: llvm-profdata, which `cargo xtask build` merges the PGO profile with.
installed=$(rustup component list --toolchain "$toolchain" --installed 2>/dev/null || true)
if ! rustup run "$toolchain" cargo --version >/dev/null 2>&1 \
  || ! grep -q '^clippy' <<<"$installed" || ! grep -q '^llvm-tools' <<<"$installed"; then
  rustup toolchain install "$toolchain" --profile minimal --component clippy,rustfmt,llvm-tools --no-self-update
fi

# The tools the tests, benchmarks and `cargo xtask package` drive.
if [ "${SPLITTER_SKIP_APT:-0}" != 1 ]; then
  splitter_install_missing test package
  # promtool comes with Debian's Prometheus server package, which also enables and starts the
  # server (on :9090): only promtool is wanted here, so the server is stopped and stays off.
  if [ -d /run/systemd/system ] && systemctl is-enabled prometheus >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
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
