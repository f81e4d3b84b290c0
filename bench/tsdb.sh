#!/usr/bin/env bash
# Benchmark: torc-tsdb vs InfluxDB 1.6 side by side on loopback. Prints figures; not a test.
# Ingest: identical batches of 5,000 lines x 10 fields over 40,000 series (tsdb-load).
# Then the seed query *during* ingest (EXTRA more rounds written while one client queries every
# QIVAL ms), bytes/value on disk after flush/compaction, and p50/p99 of two queries on the quiet
# databases, REPS times, torc and influx alternating so machine noise hits both.
# The torc side runs the `tsdb-server` example, not `torc tsdb`: both open the same
# `torc_tsdb::Tsdb` and call `torc_tsdb::serve`; the example sizes its tokio runtime from the
# CPUs it may use (one, under taskset, like influxd's GOMAXPROCS) where `torc tsdb` always
# starts two workers, and it compacts on exit so the disk figure is one segment per shard.
# TORC_TSDB_QUERY_TIMING=1 in the environment makes torc log each query's server-side parse,
# execute and encode times to its stderr, $WORK/torc.log (see crates/tsdb/src/http.rs); KEEP=1
# keeps $WORK (logs and both databases) after the run instead of deleting it.
#
# Two smaller modes, each a short run (figures from a shared machine are noisy: compare within
# a run, not across runs):
#   bench/tsdb.sh parse    line-protocol cost for 1k, 8k and 64k fields per line, and the
#                          growth ratios (linear work grows 8x and 64x)
#   bench/tsdb.sh limits   the seed queries' p50/p99 with the query limits on (the defaults:
#                          max-select-point/-series/-buckets, query-timeout) and off, two
#                          servers on copies of the same data, alternating, REPS times
#   bench/tsdb.sh tls      ingest over HTTP and HTTPS for torc and influxd 1.6 (`https-enabled`,
#                          the same self-signed P-256 certificate), each on a fresh database,
#                          the four alternating REPS times: torc/influx over HTTPS and what
#                          HTTPS costs each (https/http)
#   bench/tsdb.sh backup   backup and restore of VALUES values (default 100M: SERIES x ROUNDS
#                          x 10 fields, written CHUNK rounds at a time): torc's `POST
#                          /torc/backup` and `/torc/restore` (what `torc tsdb backup|restore`
#                          call) next to `influxd backup -portable` and `influxd restore
#                          -portable -db -newdb` of the same data; times and sizes. Needs 15 GB
#                          free on $TMPDIR's disk (checked; VALUES=10000000 needs far less).
set -euo pipefail
cd "$(dirname "$0")/.."
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_ping URL: until the server answers /ping (trusting $CURL_CA for https, when set).
wait_ping() {
  for _ in $(seq 1 300); do curl -sf -o /dev/null ${CURL_CA:+--cacert "$CURL_CA"} "$1/ping" && return 0; sleep 0.1; done
  echo "no ping from $1"; exit 1
}
# influx_conf FILE DIR PORT [CERT KEY]: influxd's config, data under DIR, HTTP on PORT (HTTPS
# with CERT and KEY when given).
influx_conf() {
  cat > "$1" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$(free_port)"
[meta]
  dir = "$2/meta"
[data]
  dir = "$2/data"
  wal-dir = "$2/wal"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "2s"
  compact-full-write-cold-duration = "4s"
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$3"
  log-enabled = false
CONF
  if [ -n "${4:-}" ]; then
    printf '  https-enabled = true\n  https-certificate = "%s"\n  https-private-key = "%s"\n' "$4" "$5" >> "$1"
  fi
}
case "${1:-}" in
  parse)
    exec cargo bench -q -p torc-tsdb --bench lineproto_fields
    ;;
  limits)
    SERIES=${SERIES:-4000}; ROUNDS=${ROUNDS:-30}; NQ=${NQ:-300}; REPS=${REPS:-3}
    cargo build -q --release -p torc-tsdb --example tsdb-server --example tsdb-load
    BIN=target/release/examples
    WORK=$(mktemp -d)
    cleanup() { kill "${APID:-}" "${BPID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
    trap cleanup EXIT
    APORT=$(free_port); BPORT=$(free_port); AURL=http://127.0.0.1:$APORT; BURL=http://127.0.0.1:$BPORT
    START=1600000000
    "$BIN/tsdb-server" "127.0.0.1:$APORT" "$WORK/a" 2>"$WORK/a.log" & APID=$!
    wait_ping "$AURL"
    curl -sf -XPOST "$AURL/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null
    "$BIN/tsdb-load" write "$AURL" bench "$SERIES" "$ROUNDS" 5000 2 "$START" >/dev/null
    kill -TERM $APID; wait $APID || true
    cp -r "$WORK/a" "$WORK/b"
    taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$APORT" "$WORK/a" limits=on 2>>"$WORK/a.log" & APID=$!
    taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$BPORT" "$WORK/b" limits=off 2>"$WORK/b.log" & BPID=$!
    wait_ping "$AURL"; wait_ping "$BURL"
    echo "== query limits on vs off ($SERIES series x $ROUNDS rounds, $NQ runs per query, $REPS repetitions, servers on core 0, client on core 1)"
    for q in "select * from machine where hostname = 'host7' limit 1000" \
             "SELECT mean(f0) FROM machine WHERE hostname = 'host7' AND time >= ${START}s AND time < $((START+3600))s GROUP BY time(1m)"; do
      echo "$q"
      for rep in $(seq 1 "$REPS"); do
        ON=$(taskset -c 1 "$BIN/tsdb-load" query "$AURL" bench "$NQ" "$q"); echo "  [$rep] limits on:  $ON"
        OFF=$(taskset -c 1 "$BIN/tsdb-load" query "$BURL" bench "$NQ" "$q"); echo "  [$rep] limits off: $OFF"
        awk -v a="$ON" -v b="$OFF" 'BEGIN { split(a,x,/[= ]/); split(b,y,/[= ]/); printf "  ratio on/off p50 = %.3f, p99 = %.3f\n", x[2]/y[2], x[4]/y[4] }'
      done
    done
    exit 0
    ;;
  tls)
    SERIES=${SERIES:-40000}; ROUNDS=${ROUNDS:-10}; BATCH=${BATCH:-5000}; CONC=${CONC:-4}; REPS=${REPS:-3}
    cargo build -q --release -p torc-tsdb --example tsdb-server --example tsdb-load
    BIN=target/release/examples
    WORK=$(mktemp -d)
    cleanup() { kill "${PID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
    trap cleanup EXIT
    # A CA and a server certificate from it (webpki refuses a CA certificate as a server's).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=bench-ca -keyout "$WORK/ca-key.pem" -out "$WORK/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
      -keyout "$WORK/key.pem" -out "$WORK/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$WORK/ext.cnf"
    openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca-key.pem" \
      -CAcreateserial -days 2 -extfile "$WORK/ext.cnf" -out "$WORK/cert.pem" 2>/dev/null
    export TSDB_LOAD_CA=$WORK/ca.pem CURL_CA=$WORK/ca.pem
    # run_one SERVER SCHEME: a fresh database, one ingest; prints values/s.
    run_one() {
      local port dir url; port=$(free_port); dir=$(mktemp -d "$WORK/db.XXXX"); url=$2://127.0.0.1:$port
      if [ "$1" = torc ]; then
        local tls=(); [ "$2" = https ] && tls=("cert=$WORK/cert.pem" "key=$WORK/key.pem")
        taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$port" "$dir" "${tls[@]}" 2>>"$WORK/torc.log" & PID=$!
      else
        if [ "$2" = https ]; then
          influx_conf "$dir.conf" "$dir" "$port" "$WORK/cert.pem" "$WORK/key.pem"
        else
          influx_conf "$dir.conf" "$dir" "$port"
        fi
        taskset -c 0 influxd -config "$dir.conf" >>"$WORK/influx.log" 2>&1 & PID=$!
      fi
      wait_ping "$url"
      curl -sf --cacert "$CURL_CA" -XPOST "$url/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null
      taskset -c 1 "$BIN/tsdb-load" write "$url" bench "$SERIES" "$ROUNDS" "$BATCH" "$CONC" 1600000000 | sed -n 1p | sed 's/.*values_per_sec=//'
      kill -TERM $PID; wait $PID 2>/dev/null || true; PID=
      rm -rf "$dir" "$dir.conf"
    }
    echo "== ingest over HTTP and HTTPS ($SERIES series, $ROUNDS rounds, batch $BATCH, $CONC writers; server on core 0, load on core 1), values/s"
    for rep in $(seq 1 "$REPS"); do
      th=$(run_one torc http); ts=$(run_one torc https); ih=$(run_one influx http); is=$(run_one influx https)
      awk -v th="$th" -v ts="$ts" -v ih="$ih" -v is="$is" -v r="$rep" 'BEGIN {
        printf "  [%d] torc http %.0f, https %.0f (https/http %.2f); influx http %.0f, https %.0f (https/http %.2f); over HTTPS torc/influx = %.2f (target >= 3)\n",
          r, th, ts, ts/th, ih, is, is/ih, ts/is }'
    done
    exit 0
    ;;
  backup)
    VALUES=${VALUES:-100000000}; SERIES=${SERIES:-40000}; CHUNK=${CHUNK:-25}
    ROUNDS=$(( (VALUES + SERIES * 10 - 1) / (SERIES * 10) ))
    FREE_GB=$(df -P --block-size=1G "${TMPDIR:-/tmp}" | awk 'NR==2 {print $4}')
    if [ "$FREE_GB" -lt 15 ] && [ "$VALUES" -gt 10000000 ]; then
      echo "only ${FREE_GB} GB free on ${TMPDIR:-/tmp}: run with VALUES=10000000" >&2; exit 1
    fi
    cargo build -q --release -p torc-tsdb --example tsdb-server --example tsdb-load
    BIN=target/release/examples
    WORK=$(mktemp -d)
    cleanup() { kill "${TPID:-}" "${IPID:-}" "${RPID:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
    trap cleanup EXIT
    now() { date +%s.%N; }
    secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
    TPORT=$(free_port); IPORT=$(free_port); TURL=http://127.0.0.1:$TPORT; IURL=http://127.0.0.1:$IPORT
    influx_conf "$WORK/influxdb.conf" "$WORK/influx" "$IPORT"
    IRPC=$(sed -n 's/^bind-address = "\(.*\)"/\1/p' "$WORK/influxdb.conf")
    # influxd refuses a write after 10 s ("timeout") while it compacts on a busy machine.
    printf '[coordinator]\n  write-timeout = "300s"\n' >> "$WORK/influxdb.conf"
    taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$TPORT" "$WORK/torc" 2>"$WORK/torc.log" & TPID=$!
    taskset -c 0 influxd -config "$WORK/influxdb.conf" >"$WORK/influx.log" 2>&1 & IPID=$!
    wait_ping "$TURL"; wait_ping "$IURL"
    for u in "$TURL" "$IURL"; do curl -sf -XPOST "$u/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null; done
    # The load generator builds its batches in memory: CHUNK rounds at a time.
    START=1600000000
    for u in "$TURL" "$IURL"; do
      for r in $(seq 0 "$CHUNK" $((ROUNDS - 1))); do
        n=$(( ROUNDS - r < CHUNK ? ROUNDS - r : CHUNK ))
        taskset -c 1 "$BIN/tsdb-load" write "$u" bench "$SERIES" "$n" 5000 4 $((START + r * 120)) >/dev/null
      done
    done
    N=$((SERIES * ROUNDS * 10))
    echo "== backup and restore of $N values ($SERIES series x $ROUNDS rounds x 10 fields), servers on core 0, clients on core 1"
    # torc: the backup over HTTP, then restored into a fresh server on an empty directory.
    t0=$(now)
    taskset -c 1 curl -sf -XPOST "$TURL/torc/backup?db=bench" -o "$WORK/torc.bak"
    t1=$(now)
    RPORT=$(free_port); RURL=http://127.0.0.1:$RPORT
    taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$RPORT" "$WORK/torc-restored" 2>"$WORK/restored.log" & RPID=$!
    wait_ping "$RURL"
    t2=$(now)
    ANSWER=$(taskset -c 1 curl -sf -XPOST -T "$WORK/torc.bak" "$RURL/torc/restore?db=bench")
    t3=$(now)
    RESTORED=$(echo "$ANSWER" | python3 -c 'import json,sys; print(json.load(sys.stdin)["restored"][0]["values"])')
    [ "$RESTORED" = "$N" ] || { echo "torc restored $RESTORED values, not $N: $ANSWER"; exit 1; }
    TB=$(stat -c %s "$WORK/torc.bak")
    echo "torc:   backup $(secs "$t0" "$t1") s, $TB bytes ($(awk -v b="$TB" -v n="$N" 'BEGIN { printf "%.3f", b/n }') bytes/value); restore $(secs "$t2" "$t3") s (into a running server, $RESTORED values)"
    # influxd 1.6: -portable backup over its RPC port, restore under a new name.
    t0=$(now)
    taskset -c 1 influxd backup -portable -database bench -host "$IRPC" "$WORK/influx.bak" >"$WORK/ibackup.log" 2>&1
    t1=$(now)
    taskset -c 1 influxd restore -portable -db bench -newdb bench2 -host "$IRPC" "$WORK/influx.bak" >"$WORK/irestore.log" 2>&1
    t2=$(now)
    curl -sf "$IURL/query" --data-urlencode "q=SHOW DATABASES" | grep -q bench2 \
      || { echo "influxd restore failed:"; cat "$WORK/irestore.log"; exit 1; }
    IB=$(du -sb "$WORK/influx.bak" | cut -f1)
    echo "influx: backup $(secs "$t0" "$t1") s, $IB bytes ($(awk -v b="$IB" -v n="$N" 'BEGIN { printf "%.3f", b/n }') bytes/value); restore $(secs "$t1" "$t2") s (-newdb, into the running server)"
    exit 0
    ;;
  "") ;;
  *) echo "usage: bench/tsdb.sh [parse|limits|tls|backup]" >&2; exit 2 ;;
esac
SERIES=${SERIES:-40000}; ROUNDS=${ROUNDS:-30}; BATCH=${BATCH:-5000}; CONC=${CONC:-4}; NQ=${NQ:-200}
EXTRA=${EXTRA:-10}; QIVAL=${QIVAL:-10}; REPS=${REPS:-2}
if ! command -v influxd >/dev/null; then
  apt-get update -qq && apt-get install -y -qq influxdb influxdb-client >/dev/null
fi
cargo build -q --release -p torc-tsdb --example tsdb-server --example tsdb-load
BIN=target/release/examples
WORK=$(mktemp -d)
cleanup() {
  kill "${TPID:-}" "${IPID:-}" 2>/dev/null || true; wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
TPORT=$(free_port); IPORT=$(free_port)
influx_conf "$WORK/influxdb.conf" "$WORK/influx" "$IPORT"
TURL=http://127.0.0.1:$TPORT; IURL=http://127.0.0.1:$IPORT
taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$TPORT" "$WORK/torc" 2>"$WORK/torc.log" & TPID=$!
taskset -c 0 influxd -config "$WORK/influxdb.conf" >"$WORK/influx.log" 2>&1 & IPID=$!
wait_ping "$TURL"; wait_ping "$IURL"
for u in "$TURL" "$IURL"; do curl -sf -XPOST "$u/query" --data-urlencode "q=CREATE DATABASE bench" >/dev/null; done
START=1600000000
Q1="select * from machine where hostname = 'host7' limit 1000"
Q2="SELECT mean(f0) FROM machine WHERE hostname = 'host7' AND time >= ${START}s AND time < $((START+3600))s GROUP BY time(1m)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { split(a,x,/[= ]/); split(b,y,/[= ]/); printf "  ratio p50 torc/influx = %.2f, p99 = %.2f\n", x[2]/y[2], x[4]/y[4] }'; }
XSTART=$((START + ROUNDS * 120))
# One server at a time (write, then write + query) so neither's background work lands in the
# other's measurement.
load_one() {
  taskset -c 1 "$BIN/tsdb-load" write "$1" bench "$SERIES" "$ROUNDS" "$BATCH" "$CONC" "$START"
  taskset -c 1 "$BIN/tsdb-load" mixed "$1" bench "$SERIES" "$EXTRA" "$BATCH" "$CONC" "$XSTART" "$QIVAL" "$Q1"
}
TL=$(load_one "$TURL"); IL=$(load_one "$IURL")
echo "== ingest ($SERIES series, $ROUNDS rounds, batch $BATCH, $CONC writers; servers on core 0, load on core 1)"
TW=$(echo "$TL" | sed -n 1p); IW=$(echo "$IL" | sed -n 1p)
echo "torc:   $TW"; echo "influx: $IW"
echo "== during ingest: $EXTRA more rounds while one client runs the seed query every ${QIVAL} ms"
echo "$Q1"
echo "  torc:   $(echo "$TL" | sed -n 3p)   (writes: $(echo "$TL" | sed -n 2p))"
echo "  influx: $(echo "$IL" | sed -n 3p)   (writes: $(echo "$IL" | sed -n 2p))"
ratio "$(echo "$TL" | sed -n 3p)" "$(echo "$IL" | sed -n 3p)"
VALUES=$((SERIES * (ROUNDS + EXTRA) * 10))
# torc: graceful stop flushes + compacts; restart on the same dir for the queries.
kill -TERM $TPID; wait $TPID || true
TBYTES=$(du -sb "$WORK/torc" | cut -f1)
taskset -c 0 "$BIN/tsdb-server" "127.0.0.1:$TPORT" "$WORK/torc" 2>>"$WORK/torc.log" & TPID=$!
wait_ping "$TURL"
# influx: wait until its WAL is snapshotted into TSM and compactions settle.
for _ in $(seq 1 120); do
  w=$(find "$WORK/influx/wal" -name '*.wal' -size +1k | wc -l)
  [ "$w" = 0 ] && break; sleep 1
done
sleep 6
IBYTES=$(du -sb "$WORK/influx/data" "$WORK/influx/wal" | awk '{s+=$1} END {print s}')
echo "== disk (after flush/compaction), $VALUES values"
awk -v t=$TBYTES -v i=$IBYTES -v n=$VALUES 'BEGIN { printf "torc:   %d bytes, %.3f bytes/value\ninflux: %d bytes, %.3f bytes/value\n", t, t/n, i, i/n }'
echo "== quiet databases: query latency ($NQ runs each, $REPS repetitions)"
for q in "$Q1" "$Q2"; do
  echo "$q"
  for rep in $(seq 1 "$REPS"); do
    TQ=$(taskset -c 1 "$BIN/tsdb-load" query "$TURL" bench "$NQ" "$q"); echo "  [$rep] torc:   $TQ"
    IQ=$(taskset -c 1 "$BIN/tsdb-load" query "$IURL" bench "$NQ" "$q"); echo "  [$rep] influx: $IQ"
    ratio "$TQ" "$IQ"
  done
done
tv=$(echo "$TW" | sed 's/.*values_per_sec=//'); iv=$(echo "$IW" | sed 's/.*values_per_sec=//')
awk -v t=$tv -v i=$iv 'BEGIN { printf "== ingest ratio torc/influx = %.2f (target >= 3)\n", t/i }'
