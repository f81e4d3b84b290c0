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
#        bench/kv.sh snapshot [KEYS]      (default 1000000)
# `snapshot`: both servers filled with KEYS keys (100-byte values, txns of 100
# puts), then `etcdctl snapshot save` against each, one after the other: time
# and size of each file, `etcdctl snapshot status` of each, and `torc kv
# restore` of each file (torc's and etcd's) timed.
# TLS=1 runs both servers over TLS (certificates from `torc ca`: torc kv with
# --cert-file/--key-file, etcd the same with https:// client URLs; the load
# generator with --cacert, one handshake per connection), plus torc kv in plain
# text in the same run, and prints torc/etcd over TLS and what TLS costs torc.
# LOADS="put1 put64" runs only those loads (of put1 put64 gets getl getp watch
# watchk), for a quick check.
# The watch loads run twice, with two clients: the one-thread client, pinned to
# core 1 like the other loads, and a multi-threaded tokio client
# (`--client-threads`, CLIENT_THREADS workers, default 2: what `#[tokio::main]`,
# and so the `etcd-client` crate's users, get on this 2-core machine), unpinned
# as a user's program would run.
# TORC_KV_STATS=1 makes torc print commit-thread timings once a second, kept
# in target/bench-kv-torc-stats.log. TORC_KV_CMD replaces `target/release/torc kv`
# (e.g. target/release/examples/kv-serve, to bench torc-kv alone).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=loads
if [ "${1:-}" = snapshot ]; then MODE=snapshot; SNAP_KEYS="${2:-1000000}"; set -- 10; fi
SECS="${1:-10}"
TLS="${TLS:-}"

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

TORC_KV_CMD="${TORC_KV_CMD:-}"
if [ -z "$TORC_KV_CMD" ] || [ -n "$TLS" ]; then
  # Two builds: with --example, cargo builds only the examples, not torc's binary
  # (which TLS=1 also needs for `torc ca`).
  cargo build --release -q -p torc --bin torc
fi
if [ -z "$TORC_KV_CMD" ]; then
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

# The servers' certificate, from a throwaway rack CA.
CA=""
if [ -n "$TLS" ]; then
  target/release/torc ca init "$WORK/ca" >/dev/null
  target/release/torc ca issue "$WORK/ca" --out "$WORK/server" --ip 127.0.0.1 --dns localhost >/dev/null
  CA="$WORK/ca/ca.pem"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_healthy URL [tls]
wait_healthy() {
  local tls=(); if [ -n "${2:-}" ]; then tls=(--cacert "$CA"); fi
  for _ in $(seq 1 100); do
    ETCDCTL_API=3 etcdctl --endpoints="$1" "${tls[@]}" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not become healthy" >&2; exit 1
}

# start_torc NAME [tls]: sets URL.
start_torc() {
  local port scheme=http tls=(); port=$(free_port)
  if [ -n "${2:-}" ]; then scheme=https; tls=(--cert-file "$WORK/server.crt" --key-file "$WORK/server.key"); fi
  # shellcheck disable=SC2086 # TORC_KV_CMD is a command and its arguments
  taskset -c 0 $TORC_KV_CMD --listen "127.0.0.1:$port" --data-dir "$WORK/torc-$1" "${tls[@]}" >"$WORK/torc-$1.log" 2>&1 &
  PIDS+=($!); URL="$scheme://127.0.0.1:$port"; wait_healthy "$URL" "${2:-}"
}

# start_etcd NAME [tls]: sets URL.
start_etcd() {
  local port peer scheme=http tls=(); port=$(free_port); peer=$(free_port)
  if [ -n "${2:-}" ]; then scheme=https; tls=(--cert-file "$WORK/server.crt" --key-file "$WORK/server.key"); fi
  taskset -c 0 etcd --name bench --data-dir "$WORK/etcd-$1" "${tls[@]}" \
    --listen-client-urls "$scheme://127.0.0.1:$port" --advertise-client-urls "$scheme://127.0.0.1:$port" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$WORK/etcd-$1.log" 2>&1 &
  PIDS+=($!); URL="$scheme://127.0.0.1:$port"; wait_healthy "$URL" "${2:-}"
}

# load NAME ARGS...: the multi-threaded client's loads (NAME ending in `mt`) run unpinned.
load() {
  local name=$1; shift
  case $name in
    *mt) "$BIN/kv-load" "$@" ;;
    *) taskset -c 1 "$BIN/kv-load" "$@" ;;
  esac
}
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}' if float($2) else 'n/a')"; }

if [ "$MODE" = snapshot ]; then
  start_torc snap; TU=$URL
  start_etcd snap; EU=$URL
  now() { date +%s.%N; }
  for s in torc etcd; do
    u=$TU; [ $s = etcd ] && u=$EU
    echo "$s: fill: $(load fill fill --endpoint "$u" --keys "$SNAP_KEYS" --clients 64 --value-size 100)"
  done
  declare -A T Z
  for s in torc etcd; do
    u=$TU; [ $s = etcd ] && u=$EU
    t0=$(now)
    ETCDCTL_API=3 etcdctl --endpoints="$u" --command-timeout=600s snapshot save "$WORK/$s.db" >/dev/null 2>&1
    T[$s]=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
    Z[$s]=$(stat -c %s "$WORK/$s.db")
    echo "$s: snapshot save: ${T[$s]} s, ${Z[$s]} bytes; status: $(ETCDCTL_API=3 etcdctl snapshot status -w table "$WORK/$s.db" | sed -n 4p)"
  done
  for s in torc etcd; do
    t0=$(now)
    target/release/torc kv restore --snapshot "$WORK/$s.db" --data-dir "$WORK/restored-$s"
    echo "torc kv restore of $s's snapshot: $(python3 -c "print(f'{$(now) - $t0:.2f}')") s"
  done
  printf '\n%-38s %12s %12s %10s\n' "snapshot of $SNAP_KEYS keys" "torc kv" "etcd 3.4" "torc/etcd"
  printf '%-38s %12s %12s %10s\n' "etcdctl snapshot save, s" "${T[torc]}" "${T[etcd]}" "$(ratio "${T[torc]}" "${T[etcd]}")"
  printf '%-38s %12s %12s %10s\n' "file size, bytes" "${Z[torc]}" "${Z[etcd]}" "$(ratio "${Z[torc]}" "${Z[etcd]}")"
  exit 0
fi

# The servers run side by side (the idle ones cost next to nothing) and each
# load runs on one, then at once on the next, rotating which goes first, so
# that the machine's load drifting during the run (it is shared) skews all
# alike instead of only the one measured in that part. With TLS=1, `torc` and
# `etcd` are the TLS servers and `plain` is torc kv without TLS.
declare -A U L
if [ -n "$TLS" ]; then
  SERVERS=(torc etcd plain)
  start_torc run tls; U[torc]=$URL; L[torc]="--cacert $CA"
  start_etcd run tls; U[etcd]=$URL; L[etcd]="--cacert $CA"
  start_torc plain; U[plain]=$URL; L[plain]=""
else
  SERVERS=(torc etcd)
  start_torc run; U[torc]=$URL; L[torc]=""
  start_etcd run; U[etcd]=$URL; L[etcd]=""
fi
declare -A R O
read -r -a ASKED <<<"${LOADS:-put1 put64 gets getl getp watch watchk}"
CT="${CLIENT_THREADS:-2}"
# Each watch load also with the multi-threaded client.
LOADS=()
for l in "${ASKED[@]}"; do
  LOADS+=("$l")
  case $l in watch | watchk) LOADS+=("${l}mt") ;; esac
done
declare -A ARGS=(
  [put1]="put --clients 1 --seconds $SECS"
  [put64]="put --clients 64 --seconds $SECS"
  [gets]="get --clients 64 --seconds $SECS --kind serializable"
  [getl]="get --clients 64 --seconds $SECS --kind linearizable"
  [getp]="get --clients 64 --seconds $SECS --kind prefix"
  [watch]="watch --events 2000"
  [watchk]="watch --events 1000 --watchers 1000 --streams 10"
  [watchmt]="watch --events 2000 --client-threads $CT"
  [watchkmt]="watch --events 1000 --watchers 1000 --streams 10 --client-threads $CT"
)
i=0
n=${#SERVERS[@]}
for l in "${LOADS[@]}"; do
  for j in $(seq 0 $((n - 1))); do
    server=${SERVERS[$(((i + j) % n))]}
    # shellcheck disable=SC2086 # ARGS and L entries are argument lists
    O[$server.$l]=$(load "$l" ${ARGS[$l]} --endpoint "${U[$server]}" ${L[$server]})
  done
  i=$((i + 1))
done
show() { if [ -n "$2" ]; then echo "$server: $1: $2"; fi; }
for server in "${SERVERS[@]}"; do
  R[$server.put1]=$(field puts_per_sec "${O[$server.put1]:-}")
  R[$server.p99]=$(field p99_us "${O[$server.put1]:-}")
  R[$server.put64]=$(field puts_per_sec "${O[$server.put64]:-}")
  R[$server.p99_64]=$(field p99_us "${O[$server.put64]:-}")
  R[$server.gets]=$(field gets_per_sec "${O[$server.gets]:-}")
  R[$server.getl]=$(field gets_per_sec "${O[$server.getl]:-}")
  R[$server.getp]=$(field gets_per_sec "${O[$server.getp]:-}")
  for w in watch watchk watchmt watchkmt; do
    R[$server.$w]=$(field watch_p99_us "${O[$server.$w]:-}")
    R[$server.${w}_p50]=$(field watch_p50_us "${O[$server.$w]:-}")
    R[$server.${w}_ack]=$(field after_ack_p99_us "${O[$server.$w]:-}")
  done
  show "put, 1 client" "${O[$server.put1]:-}"
  show "put, 64 clients" "${O[$server.put64]:-}"
  show "get serializable, 64 clients" "${O[$server.gets]:-}"
  show "get linearizable, 64 clients" "${O[$server.getl]:-}"
  show "range 100 keys, 64 clients" "${O[$server.getp]:-}"
  show "watch, 1 watcher" "${O[$server.watch]:-}"
  show "watch, 1000 watchers" "${O[$server.watchk]:-}"
  show "watch, 1 watcher, $CT-thread client" "${O[$server.watchmt]:-}"
  show "watch, 1000 watchers, $CT-thread client" "${O[$server.watchkmt]:-}"
done
if [ -n "${TORC_KV_STATS:-}" ]; then cp "$WORK/torc-run.log" target/bench-kv-torc-stats.log; fi

# row LABEL KEY: torc, etcd and their ratio (with TLS=1 also torc without TLS and
# torc TLS/plain); skipped when the load did not run.
row() {
  local t=${R[torc.$2]:-} e=${R[etcd.$2]:-}
  [ -n "$t" ] || return 0
  if [ -n "$TLS" ]; then
    local p=${R[plain.$2]:-}
    printf '%-38s %12s %12s %10s %12s %10s\n' "$1" "$t" "$e" "$(ratio "$t" "$e")" "$p" "$(ratio "$t" "$p")"
  else
    printf '%-38s %12s %12s %10s\n' "$1" "$t" "$e" "$(ratio "$t" "$e")"
  fi
}
if [ -n "$TLS" ]; then
  printf '\n%-38s %12s %12s %10s %12s %10s\n' "metric (TLS)" "torc kv" "etcd 3.4" "torc/etcd" "torc plain" "TLS/plain"
else
  printf '\n%-38s %12s %12s %10s\n' "metric" "torc kv" "etcd 3.4" "torc/etcd"
fi
row "durable puts/s, 1 client" put1
row "durable puts/s, 64 clients" put64
row "put p99 us, 1 client" p99
row "put p99 us, 64 clients" p99_64
row "gets/s serializable, 64 clients" gets
row "gets/s linearizable, 64 clients" getl
row "100-key ranges/s, 64 clients" getp
row "watch p50 us, 1 watcher" watch_p50
row "watch p99 us, 1 watcher" watch
row "watch p50 us, 1000 watchers" watchk_p50
row "watch p99 us, 1000 watchers" watchk
row "  after the put's ack, 1 watcher" watch_ack
row "  after the put's ack, 1000" watchk_ack
row "watch p50 us, 1 watcher, ${CT}-thr" watchmt_p50
row "watch p99 us, 1 watcher, ${CT}-thr" watchmt
row "watch p50 us, 1000 watchers, ${CT}-thr" watchkmt_p50
row "watch p99 us, 1000 watchers, ${CT}-thr" watchkmt
row "  after the put's ack, 1, ${CT}-thr" watchmt_ack
row "  after the put's ack, 1000, ${CT}-thr" watchkmt_ack
echo "watch latency: put sent -> event received, including the durable commit;"
echo "'${CT}-thr': the same load from a ${CT}-worker multi-threaded tokio client, unpinned;"
echo "'after the put's ack': put acknowledged -> event received (0 if the event came first),"
echo "as etcd's own 'benchmark watch-latency' times it"
echo "targets: 64-client puts >= 1.5x etcd (also over TLS); 1-client put p99 <= etcd; reads >= 2x etcd; watch p99 <= 1000 us and <= etcd's, with either client"
