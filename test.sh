#!/usr/bin/env bash
# Every check and test, on a fresh machine: set-up, formatting, lints, unit tests, the
# black-box tests over real sockets, once per I/O shell (io_uring by default, then epoll), and
# each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh --fuzz
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
SPLITTER_TEST_IO=epoll cargo test -p splitter-user --test '*'
# 45 s per fuzz target (about 3 min, plus the sanitizer build); a finding fails the run.
fuzz/run.sh
