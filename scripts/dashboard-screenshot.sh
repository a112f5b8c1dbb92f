#!/usr/bin/env bash
# The README's dashboard picture, reproducibly: a real splitter with three mock backends under
# load for a few minutes, scraped every 5 s by a real Prometheus (Debian's `prometheus`, with
# infra/prometheus/splitter.rules.yml loaded), then infra/grafana/splitter.json drawn from that
# Prometheus by infra/grafana/preview/ (a static page: Grafana is not packaged for Debian) and
# photographed by headless Chromium.
#
#   scripts/dashboard-screenshot.sh [OUT.png]        # default docs/dashboard.png; about 7 minutes
#
# What happens, in run time (SHOT_SCALE=0.25 makes it all 4x shorter, for a quick look):
#   0:00  load starts: wrk on /bid (450 ms deadline) and on /fast (80 ms)
#   2:00  backend c is killed: errors, then it is ejected (splitter_backend_up 0)
#   3:00  c is back on the same port: the probe lets it in again
#   3:30  a reload with an invalid file (refused), 3:45 a valid one (/fast goes to 100 ms)
#   4:00  backend b is restarted slow (60-200 ms): timeouts on /fast, more 204s, higher p99
#   6:00  load stops; the picture shows the whole run
#
# Needs: prometheus, chromium, wrk (Debian packages of the same names; installed here when
# missing and root), and a release build of splitter (built here; SPLITTER_BIN=path skips it).
# Everything listens on 127.0.0.1; Prometheus on PROM_PORT (default 19091). Every process started
# here is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=$(realpath -m "${1:-docs/dashboard.png}")
scale=${SHOT_SCALE:-1}
prom_port=${PROM_PORT:-19091}

need=()
for pair in prometheus:prometheus chromium:chromium wrk:wrk; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (Debian packages); run as root to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's prometheus package starts its own server on :9090; this script runs its own.
  if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$prom_port") 2>/dev/null; then
  echo "127.0.0.1:$prom_port is taken: set PROM_PORT to a free port" >&2
  exit 1
fi

bin=${SPLITTER_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet -p splitter-user --bin splitter
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/splitter
fi

work=$(mktemp -d /tmp/splitter-shot.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
started=$(date +%s)
log() { printf '%4ss  %s\n' $(($(date +%s) - started)) "$*"; }
# Sleeps until run time $1 seconds (scaled).
at() {
  local due
  due=$(awk -v s="$started" -v t="$1" -v k="$scale" 'BEGIN { printf "%d", s + t * k }')
  while [ "$(date +%s)" -lt "$due" ]; do sleep 1; done
}
# Starts `splitter mock-backend` NAME on LISTEN with ARGS; sets $mock_pid and $mock_addr.
mock() {
  local name=$1 listen=$2
  shift 2
  "$bin" mock-backend --listen "$listen" --name "$name" "$@" >"$work/mock-$name.log" 2>&1 &
  mock_pid=$!
  pids+=("$mock_pid")
  for _ in $(seq 100); do
    mock_addr=$(sed -n 's/^listening on //p' "$work/mock-$name.log")
    [ -n "$mock_addr" ] && return
    sleep 0.1
  done
  echo "mock-backend $name did not start:" >&2
  cat "$work/mock-$name.log" >&2
  exit 1
}

mock a 127.0.0.1:0 --price-range 1..10 --delay-ms 2..25 --late-share 0.1 --late-delay-ms 200
a_addr=$mock_addr
mock b 127.0.0.1:0 --price-range 2..12 --delay-ms 5..70 --late-share 0.05 --late-delay-ms 300
b_addr=$mock_addr b_pid=$mock_pid
mock c 127.0.0.1:0 --price-range 1..14 --delay-ms 10..120 --broken-share 0.02
c_addr=$mock_addr c_pid=$mock_pid

write_config() { # $1: /fast deadline in ms
  cat >"$work/splitter.toml.new" <<EOF
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
workers = 2
eject_after = 5
[[backend]]
name = "a"
address = "$a_addr"
[[backend]]
name = "b"
address = "$b_addr"
[[backend]]
name = "c"
address = "$c_addr"
[[route]]
path_prefix = "/fast"
timeout_ms = $1
[[route]]
path_prefix = "/"
timeout_ms = 450
EOF
  mv "$work/splitter.toml.new" "$work/splitter.toml"
}
write_config 80
RUST_LOG=info NO_COLOR=1 "$bin" run -c "$work/splitter.toml" >"$work/splitter.log" 2>&1 &
splitter_pid=$!
pids+=("$splitter_pid")
for _ in $(seq 100); do
  grep -q 'splitter started' "$work/splitter.log" && break
  sleep 0.1
done
start_line=$(grep -m1 'splitter started' "$work/splitter.log") || {
  cat "$work/splitter.log" >&2
  exit 1
}
listen=$(sed 's/.* listen="\{0,1\}\([0-9.:]*\).*/\1/' <<<"$start_line")
admin=$(sed 's/.* admin="\{0,1\}\([0-9.:]*\).*/\1/' <<<"$start_line")
log "splitter $("$bin" --version 2>/dev/null || true) listen=$listen admin=$admin; backends a=$a_addr b=$b_addr c=$c_addr"

# Prometheus: the repository's rules, the splitter as job "splitter", the preview as user assets.
mkdir -p "$work/assets"
cp -r infra/grafana/preview/. "$work/assets/"
cp infra/grafana/splitter.json "$work/assets/"
cp infra/prometheus/splitter.rules.yml "$work/"
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files: [splitter.rules.yml]
scrape_configs:
  - job_name: splitter
    static_configs:
      - targets: ["$admin"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --web.user-assets="$work/assets" \
  >"$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "127.0.0.1:$prom_port/-/ready" >/dev/null || {
  cat "$work/prometheus.log" >&2
  exit 1
}
log "prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') on 127.0.0.1:$prom_port"

run_s=$(awk -v k="$scale" 'BEGIN { printf "%d", 360 * k }')
wrk -t1 -c8 -d"${run_s}s" -s bench/post-2k-light.lua "http://$listen/bid" >"$work/wrk-bid.log" 2>&1 &
pids+=($!)
wrk -t1 -c4 -d"${run_s}s" -s bench/post-2k-light.lua "http://$listen/fast" >"$work/wrk-fast.log" 2>&1 &
pids+=($!)
log "load: wrk on /bid (8 connections) and /fast (4), each pausing 20 ms between requests"

at 120
kill "$c_pid"
log "backend c killed"
at 180
mock c "$c_addr" --price-range 1..14 --delay-ms 10..120 --broken-share 0.02
c_pid=$mock_pid
log "backend c back on $c_addr"
at 210
echo 'listen = "127.0.0.1:0"' >"$work/splitter.toml.new"
echo 'no_such_key = 1' >>"$work/splitter.toml.new"
mv "$work/splitter.toml.new" "$work/splitter.toml"
kill -HUP "$splitter_pid"
log "reload with an invalid file (refused)"
at 225
write_config 100
kill -HUP "$splitter_pid"
log "reload: /fast deadline 80 -> 100 ms"
at 240
kill "$b_pid"
wait "$b_pid" 2>/dev/null || true
mock b "$b_addr" --price-range 2..12 --delay-ms 60..200
log "backend b restarted slow (60-200 ms)"
# The picture ends just before the load does (the last scrape in it is under load).
at 358
end=$(date +%s)
minutes=$(awk -v k="$scale" 'BEGIN { printf "%d", 6.5 * k + 0.999 }')
at 362
for _ in $(seq 50); do
  [ "$(cat "$work"/wrk-*.log | grep -c 'Requests/sec')" = 2 ] && break
  sleep 0.2
done
log "load done: $(grep -h 'Requests/sec' "$work"/wrk-*.log | awk '{s += $2} END {printf "%.0f", s}') requests/s"

# The alerts the rules raised during the run, from Prometheus's ALERTS series.
curl -fsS "127.0.0.1:$prom_port/api/v1/query" \
  --data-urlencode "query=max_over_time(ALERTS{alertstate=\"firing\"}[${minutes}m])" |
  grep -o '"metric":{[^}]*}' |
  sed 's/.*"alertname":"\([^"]*\)".*/\1 &/; s/ .*"backend":"\([^"]*\)".*/ (backend \1)/; s/ "metric".*//' |
  sed 's/^/      fired: /' | sort -u || true

url="http://127.0.0.1:$prom_port/user/?minutes=$minutes&step=5&rate=30s&end=$end"
chrome() {
  local profile
  profile=$(mktemp -d "$work/chromium.XXXXXX")
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --virtual-time-budget=30000 \
    --window-size=1400,2000 "$@" "$url" 2>"$work/chromium.log"
}
# The page titles itself "ready" once every panel is drawn, or "error: ..." naming the panels.
title=$(chrome --dump-dom | sed -n 's:.*<title>\(.*\)</title>.*:\1:p')
if [ "$title" != ready ]; then
  echo "the preview did not render: ${title:-no title} (see $url)" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
chrome --screenshot="$out" >/dev/null
log "wrote $out ($(stat -c %s "$out") bytes) from $url"
