# shellcheck shell=bash
# The system packages splitter's build, tests and packaging need, per package manager, and the
# function that installs the missing ones. Sourced by scripts/setup.sh (and by
# scripts/test-packages.sh, which checks it with fake package managers); not run on its own.
#
# apt: Debian 12 (what the project is built and tested on). dnf: Amazon Linux 2023 (written from
# its package names, not run there by CI). "-": the manager has no such package; the tests that
# need the tool stay #[ignore]d (skipped) there.
#
# check            apt              dnf              role     what needs it
splitter_packages='
cc                 gcc,libc6-dev    gcc,glibc-devel  build    the C compiler and libc files rustc links with
wrk                wrk              -                test     benchmarks and tests/soak.rs
haproxy            haproxy          haproxy          test     tests/haproxy_failover.rs, tests/ops.rs, benchmarks
bpftool            bpftool          bpftool          test     tests/steering.rs reads the pinned eBPF map back
systemd-analyze    systemd          systemd          test     tests/ops.rs and tests/package.rs verify the unit
dpkg-shlibdeps     dpkg-dev         -                package  cargo xtask package (Depends: of the .deb)
debootstrap        debootstrap      -                test     tests/package.rs installs the .deb in a fresh Debian 12
promtool           prometheus       -                test     infra/prometheus checks, tests/monitoring.rs (promtool check metrics)
llvm-bolt-19       bolt-19          -                package  cargo xtask build lays the PGO binary out by its profile (without it: PGO only)
'

# apt or dnf (the first one on PATH), or none; SPLITTER_PKG_MANAGER overrides.
splitter_pkg_manager() {
  if [ -n "${SPLITTER_PKG_MANAGER:-}" ]; then
    echo "$SPLITTER_PKG_MANAGER"
  elif command -v apt-get >/dev/null 2>&1; then
    echo apt
  elif command -v dnf >/dev/null 2>&1; then
    echo dnf
  else
    echo none
  fi
}

# Is what `check` names (a table row's first column) there? `cc`: a C program compiles and links.
splitter_present() {
  case "$1" in
    cc)
      command -v cc >/dev/null 2>&1 || return 1
      local out
      out=$(mktemp)
      if printf 'int main(void) { return 0; }\n' | cc -x c - -o "$out" >/dev/null 2>&1; then
        rm -f "$out"
      else
        rm -f "$out"
        return 1
      fi
      ;;
    *) command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] ;;
  esac
}

splitter_is_root() { [ "$(id -u)" = 0 ]; }

# Installs the packages of every missing row whose role is one of "$@" (build, test, package).
# One package at a time: a package the mirror fails to serve (it happens to bpftool on Debian's
# security mirror) costs only what needs it. Never fails: it warns, and what needs the package
# fails or is skipped later, naming it.
splitter_install_missing() {
  local pm need=() check apt dnf role rest pkgs list
  pm=$(splitter_pkg_manager)
  if [ "$pm" != apt ] && [ "$pm" != dnf ]; then
    echo "warning: neither apt-get nor dnf found: install by hand what scripts/packages.sh" \
      "lists" >&2
    return 0
  fi
  while read -r check apt dnf role rest; do
    [ -n "$check" ] || continue
    case " $* " in *" $role "*) ;; *) continue ;; esac
    splitter_present "$check" && continue
    if [ "$pm" = apt ]; then pkgs=$apt; else pkgs=$dnf; fi
    if [ "$pkgs" = - ]; then
      echo "note: $check is missing and $pm has no package for it: $rest will be skipped" >&2
      continue
    fi
    IFS=, read -ra list <<<"$pkgs"
    need+=("${list[@]}")
  done <<<"$splitter_packages"
  [ "${#need[@]}" -gt 0 ] || return 0
  if ! splitter_is_root; then
    echo "note: ${need[*]} missing and not root: install them ($pm), or what needs them" \
      "fails or is skipped" >&2
    return 0
  fi
  local pkg
  if [ "$pm" = apt ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || echo "warning: apt-get update failed" >&2
    for pkg in "${need[@]}"; do
      apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null \
        || echo "warning: could not install $pkg: what needs it fails or is skipped" >&2
    done
  else
    for pkg in "${need[@]}"; do
      dnf install -y -q "$pkg" >/dev/null \
        || echo "warning: could not install $pkg: what needs it fails or is skipped" >&2
    done
  fi
}
