#!/usr/bin/env bash
# Checks scripts/packages.sh without installing anything: fake `apt-get` and `dnf` on PATH record
# what they are asked, and the presence check is replaced by a list of missing tools. Amazon
# Linux 2023 is not at hand: this is what checks its dnf path. Run by ../test.sh; a few ms.
set -euo pipefail
cd "$(dirname "$0")/.."

fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
for pm in apt-get dnf; do
  printf '#!/bin/sh\necho "%s $*" >>"%s/calls"\n' "$pm" "$fake" >"$fake/$pm"
  chmod +x "$fake/$pm"
done

fail() {
  echo "scripts/test-packages.sh: $*" >&2
  exit 1
}
calls() { cat "$fake/calls" 2>/dev/null || true; }

# One case: manager ($1), missing tools ($2), roles (the rest); the fake managers' calls and the
# warnings go to $fake/calls and $fake/stderr.
run_case() {
  local pm=$1 missing=$2
  shift 2
  rm -f "$fake/calls" "$fake/stderr"
  (
    PATH="$fake:$PATH"
    # shellcheck disable=SC2030 # set for this case's subshell only, on purpose
    SPLITTER_PKG_MANAGER=$pm
    # shellcheck source=scripts/packages.sh
    source scripts/packages.sh
    splitter_present() { case " $missing " in *" $1 "*) return 1 ;; *) return 0 ;; esac; }
    splitter_is_root() { true; }
    splitter_install_missing "$@"
  ) 2>"$fake/stderr"
}

# Detection: apt-get first, dnf without it, none without either.
for case in "apt-get dnf:apt" "dnf:dnf" ":none"; do
  dir=$(mktemp -d -p "$fake")
  for tool in ${case%%:*}; do ln -s "$fake/$tool" "$dir/$tool"; done
  got=$(unset SPLITTER_PKG_MANAGER; PATH=$dir; source scripts/packages.sh; splitter_pkg_manager)
  [ "$got" = "${case#*:}" ] || fail "with ${case%%:*} on PATH: detected $got, not ${case#*:}"
done

# dnf (Amazon Linux 2023): its own names, one at a time; tools it has no package for are named.
run_case dnf "cc wrk haproxy dpkg-shlibdeps" build test package
want="dnf install -y -q gcc
dnf install -y -q glibc-devel
dnf install -y -q haproxy"
[ "$(calls)" = "$want" ] || fail "dnf calls:"$'\n'"$(calls)"$'\n'"wanted:"$'\n'"$want"
grep -q "wrk is missing and dnf has no package" "$fake/stderr" || fail "no note for wrk"
grep -q "dpkg-shlibdeps is missing and dnf has no package" "$fake/stderr" \
  || fail "no note for dpkg-shlibdeps"

# apt (Debian 12): one update, then each package; a role not asked for is left alone.
run_case apt "cc bpftool debootstrap" build test
want="apt-get update -qq
apt-get install -y -qq --no-install-recommends gcc
apt-get install -y -qq --no-install-recommends libc6-dev
apt-get install -y -qq --no-install-recommends bpftool
apt-get install -y -qq --no-install-recommends debootstrap"
[ "$(calls)" = "$want" ] || fail "apt calls:"$'\n'"$(calls)"$'\n'"wanted:"$'\n'"$want"
run_case apt "dpkg-shlibdeps wrk" build
[ -z "$(calls)" ] || fail "build only, yet: $(calls)"

# Nothing missing: no call at all (idempotence), not even apt-get update.
run_case apt "" build test package
[ -z "$(calls)" ] || fail "nothing missing, yet: $(calls)"
run_case dnf "" build test package
[ -z "$(calls)" ] || fail "nothing missing, yet: $(calls)"

# The presence check itself: a tool on PATH is present, a made-up one is not, and this machine's
# C toolchain compiles and links (test.sh has just built with it).
(
  source scripts/packages.sh
  splitter_present sh || fail "sh not found present"
  ! splitter_present splitter-no-such-tool || fail "a missing tool found present"
  splitter_present cc || fail "cc does not compile and link a C program"
)
echo "scripts/packages.sh: apt and dnf paths ok"
