#!/usr/bin/env bash
# Benchmark: torc kv vs a real etcd 3.4, side by side on loopback, with the
# same load (crates/kv/examples/kv-load.rs). Servers are pinned to core 0,
# the load generator to core 1. Prints figures and torc/etcd ratios.
# Loads: durable puts (1 and 64 clients), reads from 64 clients (single-key
# serializable and linearizable gets, a 100-key prefix range), and watch
# latency with 1 watcher and with 1,000 watchers of one key (10 streams of 100
# watches, as etcd's `benchmark watch-latency` spreads them). Each event goes
# to all 1,000 watchers, so one slow commit is 1,000 slow deliveries: the
# 1,000-watcher load puts 1,000 events, so that its p99 rests on its 10
# slowest events rather than on 3.
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
  # Two builds: with --example, cargo builds only the examples, not torc's binary.
  cargo build --release -q -p torc --bin torc
  cargo build --release -q -p torc-kv --example kv-load
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

# Both servers run side by side (the idle one costs next to nothing) and each
# load runs on one, then at once on the other, alternating which goes first,
# so that the machine's load drifting during the run (it is shared) skews
# both alike instead of only the one measured in that half.
declare -A U
start_torc run; U[torc]=$URL
start_etcd run; U[etcd]=$URL
declare -A R O
LOADS=(put1 put64 gets getl getp watch watchk)
declare -A ARGS=(
  [put1]="put --clients 1 --seconds $SECS"
  [put64]="put --clients 64 --seconds $SECS"
  [gets]="get --clients 64 --seconds $SECS --kind serializable"
  [getl]="get --clients 64 --seconds $SECS --kind linearizable"
  [getp]="get --clients 64 --seconds $SECS --kind prefix"
  [watch]="watch --events 2000"
  [watchk]="watch --events 1000 --watchers 1000 --streams 10"
)
i=0
for l in "${LOADS[@]}"; do
  if [ $((i % 2)) = 0 ]; then order="torc etcd"; else order="etcd torc"; fi
  i=$((i + 1))
  for server in $order; do
    # shellcheck disable=SC2086 # ARGS entries are argument lists
    O[$server.$l]=$(load ${ARGS[$l]} --endpoint "${U[$server]}")
  done
done
for server in torc etcd; do
  R[$server.put1]=$(field puts_per_sec "${O[$server.put1]}")
  R[$server.p99]=$(field p99_us "${O[$server.put1]}")
  R[$server.put64]=$(field puts_per_sec "${O[$server.put64]}")
  R[$server.p99_64]=$(field p99_us "${O[$server.put64]}")
  R[$server.gets]=$(field gets_per_sec "${O[$server.gets]}")
  R[$server.getl]=$(field gets_per_sec "${O[$server.getl]}")
  R[$server.getp]=$(field gets_per_sec "${O[$server.getp]}")
  R[$server.watch]=$(field watch_p99_us "${O[$server.watch]}")
  R[$server.watchk]=$(field watch_p99_us "${O[$server.watchk]}")
  R[$server.watch_ack]=$(field after_ack_p99_us "${O[$server.watch]}")
  R[$server.watchk_ack]=$(field after_ack_p99_us "${O[$server.watchk]}")
  echo "$server: put, 1 client: ${O[$server.put1]}"
  echo "$server: put, 64 clients: ${O[$server.put64]}"
  echo "$server: get serializable, 64 clients: ${O[$server.gets]}"
  echo "$server: get linearizable, 64 clients: ${O[$server.getl]}"
  echo "$server: range 100 keys, 64 clients: ${O[$server.getp]}"
  echo "$server: watch, 1 watcher: ${O[$server.watch]}"
  echo "$server: watch, 1000 watchers: ${O[$server.watchk]}"
done
if [ -n "${TORC_KV_STATS:-}" ]; then cp "$WORK/torc-run.log" target/bench-kv-torc-stats.log; fi

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
printf '%-34s %12s %12s %10s\n' "  after the put's ack, 1 watcher" "${R[torc.watch_ack]}" "${R[etcd.watch_ack]}" "$(ratio "${R[torc.watch_ack]}" "${R[etcd.watch_ack]}")"
printf '%-34s %12s %12s %10s\n' "  after the put's ack, 1000" "${R[torc.watchk_ack]}" "${R[etcd.watchk_ack]}" "$(ratio "${R[torc.watchk_ack]}" "${R[etcd.watchk_ack]}")"
echo "watch latency: put sent -> event received, including the durable commit;"
echo "'after the put's ack': put acknowledged -> event received (0 if the event came first),"
echo "as etcd's own 'benchmark watch-latency' times it"
echo "targets: 64-client puts >= 1.5x etcd; 1-client put p99 <= etcd; reads >= 2x etcd; watch p99 <= 1000 us"
