#!/usr/bin/env bash
# DNS benchmark: torc's DNS server against bind9 `named` on loopback, in one run, one after the
# other: same generated zone (10,000 names), same query file, each server pinned to core 0 and
# dnsperf to core 1. Prints figures and the torc/bind9 ratios. A benchmark, never a timed test.
#
#   bench/dns.sh                       # 15 s throughput pass + 10 s latency pass per server
#   DURATION=5 LAT_DURATION=5 bench/dns.sh
#   THREADS=2 bench/dns.sh             # torc with 2 SO_REUSEPORT sockets (still on core 0)
#
# Two passes per server, because dnsperf 2.10 (Debian 12) prints no latency percentiles:
# 1. Throughput: dnsperf flat out (CLIENTS sockets, OUTSTANDING queries in flight). Gives QPS,
#    loss, average latency, and the server's CPU time (utime + stime from /proc/PID/stat, read
#    just before and after) per 100,000 answers. No per-query output, which would slow dnsperf,
#    the bottleneck near 150k QPS here.
# 2. Latency: dnsperf -v at a fixed rate (LAT_QPS, below what either server sustains, so the
#    figure is the server's service time, not a queue dnsperf built). -v prints one line per
#    query with its latency ("> NOERROR name A 0.000123"); the script sorts them and reads the
#    p50, p99 and p99.9 (lost queries, "> T ...", count as lost, not as latencies). The server's
#    CPU time per 100,000 answers is read here too, at one offered rate for both servers (in
#    pass 1 each runs at its own peak rate, so their batch sizes and wakeups per answer differ).
#
# A third server, bench/dns-floor.c, does no DNS work at all (receive a batch, set the QR bit,
# send it back, with the same system calls and batch size as torc-dns): its CPU per answer is
# the kernel's share that every UDP server pays here, the floor under any server's figure.
#
# Targets (the design's, ../shared/DESIGN.md): QPS >= bind9's, zero loss, p99 <= bind9's, CPU
# per answer <= half of bind9's (compare with the floor's ratio).
#
# Response-rate limiting (RRL, on by default in `torc dns`): the passes above run torc with it
# off, like bind9's default, since dnsperf's flood from one address is exactly what RRL limits.
# A last section measures what RRL costs legitimate traffic, i.e. answers under the limit: torc
# with RRL off and with RRL on at a limit above this mix's busiest account (so every answer pays
# for the bookkeeping and none is limited), RRL_ROUNDS rounds of RRL_DURATION s each, off and on
# alternating in one run. Target: QPS on within 5% of off, zero loss. For the comparison alone:
#
#   RRL_ONLY=1 RRL_DURATION=5 RRL_ROUNDS=2 bench/dns.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}         # throughput pass, seconds
LAT_DURATION=${LAT_DURATION:-10} # latency pass, seconds
LAT_QPS=${LAT_QPS:-40000}        # latency pass rate
TORC_PORT=${TORC_PORT:-15353}
BIND_PORT=${BIND_PORT:-15354}
FLOOR_PORT=${FLOOR_PORT:-15355}
CLIENTS=${CLIENTS:-4}            # dnsperf sockets
OUTSTANDING=${OUTSTANDING:-200}
THREADS=${THREADS:-1}            # torc UDP sockets/threads
RRL_DURATION=${RRL_DURATION:-8}  # RRL comparison: seconds per pass
RRL_ROUNDS=${RRL_ROUNDS:-2}      # RRL comparison: rounds of (off, on)
RRL_ONLY=${RRL_ONLY:-0}          # 1: only the RRL comparison
NAMES=10000

missing=()
command -v named >/dev/null || [[ -x /usr/sbin/named ]] || missing+=(bind9)
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
NAMED=$(command -v named || echo /usr/sbin/named)

cargo build --release -q -p torc
TORC=target/release/torc

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The zone: 10,000 names h00000..h09999 under bench.test. Most hold one A record; every 4th
# also an AAAA; every 50th three A records; every 20th is a CNAME to the next name; every 100th
# holds a TXT and an SRV. The apex has SOA, NS and MX.
awk -v n="$NAMES" 'BEGIN {
    print "$ORIGIN bench.test."
    print "$TTL 300"
    print "@ IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 900 604800 60"
    print "@ IN NS ns"
    print "@ IN MX 10 mail"
    print "ns IN A 192.0.2.53"
    print "mail IN A 192.0.2.25"
    for (i = 0; i < n; i++) {
        name = sprintf("h%05d", i)
        a = sprintf("10.%d.%d.%d", int(i / 65536), int(i / 256) % 256, i % 256)
        if (i % 20 == 0) { printf "%s IN CNAME h%05d\n", name, (i + 1) % n; continue }
        printf "%s IN A %s\n", name, a
        if (i % 50 == 1) { printf "%s IN A 10.200.%d.1\n%s IN A 10.200.%d.2\n", name, i % 256, name, i % 256 }
        if (i % 4 == 2) printf "%s IN AAAA fd00::%x\n", name, i
        if (i % 100 == 7) {
            printf "%s IN TXT \"name %d of the bench zone\"\n", name, i
            printf "%s IN SRV 0 5 80 h%05d\n", name, (i + 1) % n
        }
    }
}' >"$WORK/db.bench.test"

# The queries: 100,000 lines, a fixed pseudo-random mix over the names: 70% A, 10% AAAA,
# 5% A for a CNAME (chased in the zone), 3% MX at the apex, 2% TXT, 2% SRV, 8% NXDOMAIN.
awk -v n="$NAMES" 'BEGIN {
    srand(42)
    for (q = 0; q < 100000; q++) {
        r = rand() * 100; i = int(rand() * n)
        if (r < 70) { if (i % 20 == 0) i++; printf "h%05d.bench.test A\n", i % n }
        else if (r < 80) printf "h%05d.bench.test AAAA\n", i - i % 4 + 2 < n ? i - i % 4 + 2 : 2
        else if (r < 85) printf "h%05d.bench.test A\n", i - i % 20
        else if (r < 88) print "bench.test MX"
        else if (r < 90) printf "h%05d.bench.test TXT\n", i - i % 100 + 7 < n ? i - i % 100 + 7 : 7
        else if (r < 92) printf "h%05d.bench.test SRV\n", i - i % 100 + 7 < n ? i - i % 100 + 7 : 7
        else printf "x%05d.bench.test A\n", i
    }
}' >"$WORK/queries.txt"

cat >"$WORK/named.conf" <<CONF
options {
    directory "$WORK";
    pid-file "$WORK/named.pid";
    session-keyfile "$WORK/session.key";
    managed-keys-directory "$WORK";
    listen-on port $BIND_PORT { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
    notify no;
};
controls { };
zone "bench.test" { type primary; file "$WORK/db.bench.test"; };
CONF

# utime and stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

wait_ready() { # port pid
    for _ in $(seq 300); do
        kill -0 "$2" 2>/dev/null || { echo "server on port $1 exited" >&2; exit 1; }
        dig @127.0.0.1 -p "$1" +time=1 +tries=1 h00001.bench.test A 2>/dev/null |
            grep -q 'status: NOERROR' && return 0
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    exit 1
}

# throughput NAME PORT PID: prints "qps lost_pct avg_ms cpu_s_per_100k user_s sys_s".
throughput() {
    local name=$1 port=$2 pid=$3 out
    read -r u0 s0 < <(cpu_ticks "$pid")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" 2>&1)
    read -r u1 s1 < <(cpu_ticks "$pid")
    echo "$out" >"$WORK/$name.dnsperf"
    awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$(getconf CLK_TCK)" '
        /Queries sent:/ { sent = $3 }
        /Queries completed:/ { done = $3 }
        /Queries per second:/ { qps = $4 }
        /Average Latency/ { avg = $4 * 1000 }
        END { k = 100000 / hz / (done > 0 ? done : 1)
              lost = sent > 0 ? 100 * (sent - done) / sent : 0
              printf "%.0f %.3f %.3f %.3f %.3f %.3f\n", qps, lost, avg, (u + s) * k, u * k, s * k }' <<<"$out"
}

# latency NAME PORT PID: prints "p50_ms p99_ms p999_ms lost_pct cpu_s_per_100k" at LAT_QPS
# queries per second.
latency() {
    local name=$1 port=$2 pid=$3
    read -r u0 s0 < <(cpu_ticks "$pid")
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$LAT_DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" -Q "$LAT_QPS" -v >"$WORK/$name.latency" 2>&1
    read -r u1 s1 < <(cpu_ticks "$pid")
    awk '/^> / { if ($2 == "T") lost++; else print $NF * 1000 }
         END { print lost + 0 > "/dev/stderr" }' "$WORK/$name.latency" 2>"$WORK/$name.lost" |
        sort -g >"$WORK/$name.sorted"
    awk -v lost="$(cat "$WORK/$name.lost")" -v ticks="$((u1 - u0 + s1 - s0))" \
        -v hz="$(getconf CLK_TCK)" '{ v[NR] = $1 }
        END { if (NR == 0) { print "n/a n/a n/a 100 n/a"; exit }
              i50 = int(NR * 0.50); i99 = int(NR * 0.99); i999 = int(NR * 0.999)
              if (i50 < 1) i50 = 1; if (i99 < 1) i99 = 1; if (i999 < 1) i999 = 1
              printf "%.3f %.3f %.3f %.3f %.3f\n", v[i50], v[i99], v[i999],
                  100 * lost / (NR + lost), ticks * 100000 / hz / NR }' \
        "$WORK/$name.sorted"
}


# rrl_pass RATE: torc with --rrl-responses-per-second RATE, one throughput pass of RRL_DURATION s;
# prints "qps lost_pct cpu_s_per_100k".
rrl_pass() {
    local rate=$1 pid out u0 s0 u1 s1
    taskset -c 0 "$TORC" dns --listen "127.0.0.1:$TORC_PORT" --rrl-responses-per-second "$rate" \
        --zone-file "bench.test=$WORK/db.bench.test" --threads "$THREADS" 2>"$WORK/torc-rrl.log" &
    pid=$!
    PIDS+=("$pid")
    wait_ready "$TORC_PORT" "$pid"
    read -r u0 s0 < <(cpu_ticks "$pid")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$TORC_PORT" -d "$WORK/queries.txt" \
        -l "$RRL_DURATION" -c "$CLIENTS" -q "$OUTSTANDING" 2>&1)
    read -r u1 s1 < <(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    awk -v t="$((u1 - u0 + s1 - s0))" -v hz="$(getconf CLK_TCK)" '
        /Queries sent:/ { sent = $3 } /Queries completed:/ { done = $3 }
        /Queries per second:/ { qps = $4 }
        END { lost = sent > 0 ? 100 * (sent - done) / sent : 0
              cpu = done > 0 ? t * 100000 / hz / done : 0
              printf "%.0f %.3f %.3f\n", qps, lost, cpu }' <<<"$out"
}

# The RRL comparison: rounds of (off, on), same run, same everything else; means over rounds.
rrl_compare() {
    local round rate label
    : >"$WORK/rrl.all"
    for round in $(seq "$RRL_ROUNDS"); do
        for rate in 0 1000000; do
            label=$([[ $rate == 0 ]] && echo off || echo on)
            rrl_pass "$rate" >"$WORK/rrl.out" # not in a subshell: PIDS must see the server
            echo "$label $(cat "$WORK/rrl.out")" >>"$WORK/rrl.all"
            echo "  round $round, RRL $label: $(cat "$WORK/rrl.out") (qps, lost %, CPU s/100k)"
        done
    done
    printf '\nRRL cost for legitimate traffic (answers under the limit; %s rounds of %s s, alternating)\n' \
        "$RRL_ROUNDS" "$RRL_DURATION"
    awk '{ n[$1]++; qps[$1] += $2; cpu[$1] += $4; if ($3 > lost[$1]) lost[$1] = $3 }
        END {
            printf "%-36s %12s %12s %10s\n", "", "RRL off", "RRL on", "on/off"
            printf "%-36s %12.0f %12.0f %10.3f\n", "  queries per second (mean)",
                qps["off"] / n["off"], qps["on"] / n["on"], (qps["on"] / n["on"]) / (qps["off"] / n["off"])
            printf "%-36s %12.3f %12.3f %10.3f\n", "  server CPU s per 100,000 answers",
                cpu["off"] / n["off"], cpu["on"] / n["on"], (cpu["on"] / n["on"]) / (cpu["off"] / n["off"])
            printf "%-36s %12.3f %12.3f %10s\n", "  queries lost (%, worst pass)", lost["off"] + 0, lost["on"] + 0, "-"
        }' "$WORK/rrl.all"
    echo "  target: QPS on/off >= 0.95, zero loss"
}

if [[ $RRL_ONLY == 1 ]]; then
    echo "== torc-dns: RRL off vs on ($THREADS UDP thread(s), core 0) =="
    rrl_compare
    exit 0
fi

echo "== torc-dns ($THREADS UDP thread(s), core 0, RRL off) =="
taskset -c 0 "$TORC" dns --listen "127.0.0.1:$TORC_PORT" --rrl-responses-per-second 0 \
    --zone-file "bench.test=$WORK/db.bench.test" --threads "$THREADS" 2>"$WORK/torc.log" &
TORC_PID=$!
PIDS+=("$TORC_PID")
wait_ready "$TORC_PORT" "$TORC_PID"
read -r t_qps t_lost t_avg t_cpu t_user t_sys < <(throughput torc "$TORC_PORT" "$TORC_PID")
read -r t_p50 t_p99 t_p999 t_llost t_lcpu < <(latency torc "$TORC_PORT" "$TORC_PID")
kill "$TORC_PID"

echo "== bind9 named (1 worker, core 0) =="
taskset -c 0 "$NAMED" -g -4 -n 1 -c "$WORK/named.conf" 2>"$WORK/named.log" &
NAMED_PID=$!
PIDS+=("$NAMED_PID")
wait_ready "$BIND_PORT" "$NAMED_PID"
read -r b_qps b_lost b_avg b_cpu b_user b_sys < <(throughput bind9 "$BIND_PORT" "$NAMED_PID")
read -r b_p50 b_p99 b_p999 b_llost b_lcpu < <(latency bind9 "$BIND_PORT" "$NAMED_PID")
kill "$NAMED_PID"

echo "== the floor: bench/dns-floor.c, a server that does no DNS work (core 0) =="
cc -O2 -o "$WORK/dns-floor" bench/dns-floor.c
taskset -c 0 "$WORK/dns-floor" "$FLOOR_PORT" &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_ready "$FLOOR_PORT" "$FLOOR_PID"
read -r f_qps f_lost f_avg f_cpu f_user f_sys < <(throughput floor "$FLOOR_PORT" "$FLOOR_PID")
read -r f_p50 f_p99 f_p999 f_llost f_lcpu < <(latency floor "$FLOOR_PORT" "$FLOOR_PID")
kill "$FLOOR_PID"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '%-36s %12s %12s %10s\n' "$1" "$2" "$3" "${4:-$(ratio "$2" "$3")}"; }
# floor_row LABEL FLOOR BIND9: the floor's figure and its ratio to bind9's.
floor_row() { printf '%-36s %12s %12s %10s\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
printf '\n%s names, %s-line query mix (8%% NXDOMAIN), loopback\n' "$NAMES" 100000
row "" torc-dns bind9 torc/bind9
echo "throughput pass: ${DURATION}s, $CLIENTS clients, $OUTSTANDING outstanding"
row "  queries per second" "$t_qps" "$b_qps"
row "  queries lost (%)" "$t_lost" "$b_lost" -
row "  average latency (ms)" "$t_avg" "$b_avg"
row "  server CPU s per 100,000 answers" "$t_cpu" "$b_cpu"
row "    of which user" "$t_user" "$b_user"
row "    of which kernel" "$t_sys" "$b_sys"
echo "latency pass: ${LAT_DURATION}s at $LAT_QPS queries/s (dnsperf -v, per-query latencies)"
row "  p50 latency (ms)" "$t_p50" "$b_p50"
row "  p99 latency (ms)" "$t_p99" "$b_p99"
row "  p99.9 latency (ms)" "$t_p999" "$b_p999"
row "  queries lost (%)" "$t_llost" "$b_llost" -
row "  server CPU s per 100,000 answers" "$t_lcpu" "$b_lcpu"
echo "the floor (no DNS work; same system calls and batches as torc-dns)"
row "" floor bind9 floor/bind9
floor_row "  server CPU s per 100,000 answers" "$f_cpu" "$b_cpu"
floor_row "    at $LAT_QPS queries/s" "$f_lcpu" "$b_lcpu"
floor_row "  queries per second" "$f_qps" "$b_qps"

echo
echo "== torc-dns: RRL off vs on ($THREADS UDP thread(s), core 0) =="
rrl_compare
