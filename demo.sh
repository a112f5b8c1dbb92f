#!/usr/bin/env bash
# The demo on a fresh machine: set-up, a release build, then `splitter demo`.
set -euo pipefail
cd "$(dirname "$0")"
SPLITTER_SKIP_APT=1 source scripts/setup.sh
cargo run --release --quiet -p splitter-user --bin splitter -- demo "$@"
