#!/usr/bin/env bash
# Every check and test, on a fresh machine: set-up, formatting, lints, unit tests, and the
# black-box tests over real sockets, once per I/O shell (io_uring by default, then epoll).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
SPLITTER_TEST_IO=epoll cargo test -p splitter-user --test '*'
