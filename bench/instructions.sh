#!/bin/bash
# Instructions the splitter's worker executes per request, counted by callgrind: the user-space
# cost of a hot-path change, free of the noise that makes CPU time on a shared host move by 20 %
# from one run to the next (this VM exposes no hardware counters, so `perf stat -e instructions`
# is not available). Kernel work is not counted: that is `cargo xtask bench`'s accounting table.
#
#     bench/instructions.sh BINARY [TAG] [--cache]
#
# Starts two mock backends (2 KB replies, as the bench's `fast` scenario) and BINARY (one io_uring
# worker) under `valgrind --tool=callgrind`, warms up with 3 s of `wrk -t1 -c16`, then counts
# 10 s of the same load (the bench's 2 KB POSTs) and divides by the requests wrk completed. With
# --cache, callgrind also simulates the caches (48 KiB 12-way L1d, 32 MiB L3) and prints misses
# per request. The profile stays in /tmp/instructions/TAG.out.1, for `callgrind_annotate`.
# Needs valgrind and wrk; about a minute. The counts move by about 1 % between runs (the requests
# in flight when the count starts and stops).
set -euo pipefail
BIN=$(realpath "$1")
TAG=${2:-run}
CACHE=()
[ "${3:-}" = --cache ] && CACHE=(--cache-sim=yes --D1=49152,12,64 --LL=33554432,16,64)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=/tmp/instructions
mkdir -p "$DIR"
rm -f "$DIR/$TAG".out*
PIDS=()
VG=
cleanup() {
    [ -n "$VG" ] && kill -9 "$VG" 2>/dev/null
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    true
}
trap cleanup EXIT

ADDRS=()
for name in a b; do
    "$BIN" mock-backend --listen 127.0.0.1:0 --name $name --body-bytes 2048 --price-range 0.1..10 \
        > "$DIR/mock-$name.out" 2>/dev/null &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$DIR/mock-$name.out" ] && break; sleep 0.05; done
    ADDRS+=("$(head -1 "$DIR/mock-$name.out" | awk '{print $NF}')")
done
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$DIR/$TAG.toml" <<EOF
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:0"
workers = 1
io = "uring"
handover_socket = "$DIR/$TAG-handover.sock"
[[backend]]
name = "a"
address = "${ADDRS[0]}"
[[backend]]
name = "b"
address = "${ADDRS[1]}"
[[route]]
path_prefix = "/"
timeout_ms = 450
EOF
valgrind --tool=callgrind --instr-atstart=no "${CACHE[@]}" --callgrind-out-file="$DIR/$TAG.out" \
    "$BIN" run -c "$DIR/$TAG.toml" > /dev/null 2> "$DIR/$TAG-valgrind.log" &
VG=$!
for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
URL="http://127.0.0.1:$PORT/"
wrk -t1 -c16 -d3s -s "$ROOT/bench/post-2k.lua" "$URL" > /dev/null
callgrind_control -i on "$VG" > /dev/null 2>&1
wrk -t1 -c16 -d10s -s "$ROOT/bench/post-2k.lua" "$URL" > "$DIR/$TAG-wrk.txt"
callgrind_control -i off "$VG" > /dev/null 2>&1
callgrind_control -d "$VG" > /dev/null 2>&1
REQUESTS=$(awk '/requests in/ {print $1}' "$DIR/$TAG-wrk.txt")
callgrind_annotate "$DIR/$TAG.out.1" 2>/dev/null | awk -v tag="$TAG" -v n="$REQUESTS" '
    /^Events shown:/ { for (i = 3; i <= NF; i++) names[i - 2] = $i; count = NF - 2 }
    /PROGRAM TOTALS/ {
        printf "%s: %d requests;", tag, n
        for (i = 1; i <= count; i++) { v = $(2 * i - 1); gsub(",", "", v); printf " %s %.0f", names[i], v / n }
        print " per request"
    }'
