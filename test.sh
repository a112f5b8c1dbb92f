#!/usr/bin/env bash
# Every check and test, on a fresh machine: set-up, formatting, lints, unit tests, the
# black-box tests over real sockets, once per I/O shell (io_uring by default, then epoll), and
# each fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh --fuzz
scripts/test-packages.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The release build that is shipped and benchmarked (`cargo xtask build`: an instrumented build,
# a profiling load on `splitter run`, the build with the profile, then BOLT's layout by the same
# load; 6-8 minutes from scratch), and its demo, which fails when no request succeeds.
splitter=$(cargo xtask build)
"$splitter" demo --seconds 2
SPLITTER_TEST_IO=epoll cargo test -p splitter-user --test '*'

# Tests that need root or a tool a bare machine may lack are #[ignore]d, so that where they
# cannot run, the runs above report them skipped instead of passing them unchecked. Run them
# where they can (CI: root, and every tool installed by scripts/setup.sh); without what it
# needs, such a test fails, naming it.
have() { for tool; do command -v "$tool" >/dev/null 2>&1 || return 1; done; }
once=() per_shell=()
have systemd-analyze haproxy && once+=(--test ops)
# The alert rules and their unit tests (infra/prometheus), here for their output in the log; the
# monitoring suite runs them too, checks every dashboard query parses, and checks a scrape.
if have promtool; then
  (cd infra/prometheus && promtool check rules splitter.rules.yml \
    && promtool test rules splitter.rules.test.yml)
  once+=(--test monitoring)
fi
have haproxy && per_shell+=(--test haproxy_failover)
# Host-name backends: the splitter in a mount namespace of its own, over its own /etc/hosts.
[ "$(id -u)" = 0 ] && per_shell+=(--test dns)
have wrk && per_shell+=(--test soak --test restart)
# eBPF steering: root for CAP_BPF and CAP_NET_ADMIN, bpftool to read the map back, and a build
# with the program, which takes bpf-linker (scripts/setup.sh goes on with a warning without it).
if [ "$(id -u)" = 0 ] && have bpftool bpf-linker && [ "${SPLITTER_NO_EBPF:-0}" != 1 ]; then
  per_shell+=(--test steering)
  once+=(--test demo)
fi
if [ $((${#once[@]} + ${#per_shell[@]})) -gt 0 ]; then
  cargo test -p splitter-user "${once[@]}" "${per_shell[@]}" -- --ignored
fi
if [ ${#per_shell[@]} -gt 0 ]; then
  SPLITTER_TEST_IO=epoll cargo test -p splitter-user "${per_shell[@]}" -- --ignored
fi
# The .deb of `cargo xtask package`: its contents where dpkg-dev and systemd are; as root with
# debootstrap, also installed, started, upgraded and purged in a fresh Debian 12 (about 3 minutes,
# most of it debootstrap downloading from the Debian mirror).
if have dpkg-deb dpkg-shlibdeps systemd-analyze systemd-sysusers; then
  only=(deb_holds_the_install_files_at_package_paths)
  if [ "$(id -u)" = 0 ] && have debootstrap unshare nsenter ip; then
    only=()
  fi
  cargo test -p splitter-user --test package -- --ignored "${only[@]}"
fi
# 45 s per fuzz target (about 3 min, plus the sanitizer build); a finding fails the run.
fuzz/run.sh
