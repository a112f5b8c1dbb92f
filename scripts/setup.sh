#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: the pinned Rust toolchain, the Debian
# packages the tests and benchmarks use (wrk, haproxy, bpftool, systemd-analyze, promtool), and
# the eBPF toolchain (nightly, bpf-linker). Sourced by ../demo.sh and ../test.sh.
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
  # promtool (checks of infra/prometheus and of /metrics) comes with Debian's Prometheus server.
  for pair in wrk:wrk haproxy:haproxy bpftool:bpftool systemd-analyze:systemd \
    promtool:prometheus; do
    tool=${pair%%:*}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("${pair#*:}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      # One at a time: a package the mirror fails to serve (it happens to bpftool on Debian's
      # security mirror) costs only the tests that need it, which stay #[ignore]d (skipped).
      for pkg in "${need[@]}"; do
        apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
          || echo "warning: could not install $pkg: the tests that need it will be skipped" >&2
      done
      # The package also enables and starts a Prometheus server (on :9090): only promtool is
      # wanted here, so the server is stopped and stays off.
      if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
      fi
    else
      echo "note: ${need[*]} missing and not root: the tests that need them will be skipped" >&2
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
