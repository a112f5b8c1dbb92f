#!/usr/bin/env bash
# Every check and test, on a fresh machine: set-up, formatting, lints, unit and black-box tests.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
