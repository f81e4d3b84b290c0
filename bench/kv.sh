#!/usr/bin/env bash
# Benchmark: torc kv vs a real etcd 3.4, side by side on loopback, with the
# same load (crates/kv/examples/kv-load.rs). Servers are pinned to core 0,
# the load generator to core 1. Prints figures and torc/etcd ratios.
# Loads: durable puts (1 and 64 clients), reads from 64 clients (single-key
# serializable and linearizable gets, a 100-key prefix range), and watch
# latency with 1 watcher and with 1,000 watchers of one key (10 streams of 100
# watches, as etcd's `benchmark watch-latency` spreads them).
# Usage: bench/kv.sh [SECONDS_PER_RUN]   (default 10)
# TORC_KV_STATS=1 makes torc print commit-thread timings once a second, kept
# in target/bench-kv-torc-stats.log. TORC_KV_CMD replaces `target/release/torc kv`
# (e.g. target/release/examples/kv-serve, to bench torc-kv alone).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

TORC_KV_CMD="${TORC_KV_CMD:-}"
if [ -z "$TORC_KV_CMD" ]; then
  cargo build --release -q -p torc -p torc-kv --example kv-load
  TORC_KV_CMD="target/release/torc kv"
else
  cargo build --release -q -p torc-kv --example kv-load --example kv-serve
fi
BIN=target/release/examples
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_healthy() {
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not become healthy" >&2; exit 1
}

start_torc() {
  local port; port=$(free_port)
  # shellcheck disable=SC2086 # TORC_KV_CMD is a command and its arguments
  taskset -c 0 $TORC_KV_CMD --listen "127.0.0.1:$port" --data-dir "$WORK/torc-$1" >"$WORK/torc-$1.log" 2>&1 &
  PIDS+=($!); wait_healthy "127.0.0.1:$port"; URL="http://127.0.0.1:$port"
}

start_etcd() {
  local port peer; port=$(free_port); peer=$(free_port)
  taskset -c 0 etcd --name bench --data-dir "$WORK/etcd-$1" \
    --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$WORK/etcd-$1.log" 2>&1 &
  PIDS+=($!); wait_healthy "127.0.0.1:$port"; URL="http://127.0.0.1:$port"
}

load() { taskset -c 1 "$BIN/kv-load" "$@"; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}' if float($2) else 'n/a')"; }

declare -A R
for server in torc etcd; do
  "start_${server}" run; url=$URL
  out1=$(load put --endpoint "$url" --clients 1 --seconds "$SECS")
  out64=$(load put --endpoint "$url" --clients 64 --seconds "$SECS")
  outs=$(load get --endpoint "$url" --clients 64 --seconds "$SECS" --kind serializable)
  outl=$(load get --endpoint "$url" --clients 64 --seconds "$SECS" --kind linearizable)
  outp=$(load get --endpoint "$url" --clients 64 --seconds "$SECS" --kind prefix)
  outw=$(load watch --endpoint "$url" --events 2000)
  outk=$(load watch --endpoint "$url" --events 300 --watchers 1000 --streams 10)
  R[$server.put1]=$(field puts_per_sec "$out1")
  R[$server.p99]=$(field p99_us "$out1")
  R[$server.put64]=$(field puts_per_sec "$out64")
  R[$server.p99_64]=$(field p99_us "$out64")
  R[$server.gets]=$(field gets_per_sec "$outs")
  R[$server.getl]=$(field gets_per_sec "$outl")
  R[$server.getp]=$(field gets_per_sec "$outp")
  R[$server.watch]=$(field watch_p99_us "$outw")
  R[$server.watchk]=$(field watch_p99_us "$outk")
  echo "$server: put, 1 client: $out1"
  echo "$server: put, 64 clients: $out64"
  echo "$server: get serializable, 64 clients: $outs"
  echo "$server: get linearizable, 64 clients: $outl"
  echo "$server: range 100 keys, 64 clients: $outp"
  echo "$server: watch, 1 watcher: $outw"
  echo "$server: watch, 1000 watchers: $outk"
  if [ "$server" = torc ] && [ -n "${TORC_KV_STATS:-}" ]; then cp "$WORK/torc-run.log" target/bench-kv-torc-stats.log; fi
  last=$((${#PIDS[@]} - 1)); kill "${PIDS[$last]}"; wait "${PIDS[$last]}" 2>/dev/null || true; unset "PIDS[$last]"
done

printf '\n%-34s %12s %12s %10s\n' "metric" "torc kv" "etcd 3.4" "torc/etcd"
printf '%-34s %12s %12s %10s\n' "durable puts/s, 1 client" "${R[torc.put1]}" "${R[etcd.put1]}" "$(ratio "${R[torc.put1]}" "${R[etcd.put1]}")"
printf '%-34s %12s %12s %10s\n' "durable puts/s, 64 clients" "${R[torc.put64]}" "${R[etcd.put64]}" "$(ratio "${R[torc.put64]}" "${R[etcd.put64]}")"
printf '%-34s %12s %12s %10s\n' "put p99 us, 1 client" "${R[torc.p99]}" "${R[etcd.p99]}" "$(ratio "${R[torc.p99]}" "${R[etcd.p99]}")"
printf '%-34s %12s %12s %10s\n' "put p99 us, 64 clients" "${R[torc.p99_64]}" "${R[etcd.p99_64]}" "$(ratio "${R[torc.p99_64]}" "${R[etcd.p99_64]}")"
printf '%-34s %12s %12s %10s\n' "gets/s serializable, 64 clients" "${R[torc.gets]}" "${R[etcd.gets]}" "$(ratio "${R[torc.gets]}" "${R[etcd.gets]}")"
printf '%-34s %12s %12s %10s\n' "gets/s linearizable, 64 clients" "${R[torc.getl]}" "${R[etcd.getl]}" "$(ratio "${R[torc.getl]}" "${R[etcd.getl]}")"
printf '%-34s %12s %12s %10s\n' "100-key ranges/s, 64 clients" "${R[torc.getp]}" "${R[etcd.getp]}" "$(ratio "${R[torc.getp]}" "${R[etcd.getp]}")"
printf '%-34s %12s %12s %10s\n' "watch p99 us, 1 watcher" "${R[torc.watch]}" "${R[etcd.watch]}" "$(ratio "${R[torc.watch]}" "${R[etcd.watch]}")"
printf '%-34s %12s %12s %10s\n' "watch p99 us, 1000 watchers" "${R[torc.watchk]}" "${R[etcd.watchk]}" "$(ratio "${R[torc.watchk]}" "${R[etcd.watchk]}")"
echo "watch latency: put sent -> event received, including the durable commit"
echo "targets: 64-client puts >= 1.5x etcd; 1-client put p99 <= etcd; reads >= 2x etcd; watch p99 <= 1000 us"
