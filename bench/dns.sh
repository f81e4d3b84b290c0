#!/usr/bin/env bash
# DNS benchmark: torc's DNS server against bind9 on loopback, one after the other, same zone,
# same queries, each server pinned to core 0 and dnsperf to core 1. Prints figures and the
# torc/bind9 ratios. A benchmark, never a timed test.
#
#   bench/dns.sh                 # 15 s per server
#   DURATION=5 bench/dns.sh      # shorter
#
# Targets (DESIGN.md): QPS >= bind9's, zero loss, latency <= bind9's, CPU per answer <= half
# of bind9's. dnsperf 2.10 (Debian 12) reports average/min/max latency but no percentiles.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
TORC_PORT=${TORC_PORT:-15353}
BIND_PORT=${BIND_PORT:-15354}
CLIENTS=${CLIENTS:-4}        # dnsperf sockets
OUTSTANDING=${OUTSTANDING:-200}

missing=()
command -v named >/dev/null || missing+=(bind9)
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release -q -p torc
TORC=target/release/torc
ZONE=crates/dns/tests/data/zones/homer.ave.zone

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cp "$ZONE" "$WORK/db.homer.ave"
cat >"$WORK/named.conf" <<CONF
options {
    directory "$WORK";
    pid-file "$WORK/named.pid";
    listen-on port $BIND_PORT { 127.0.0.1; };
    listen-on-v6 { none; };
    recursion no;
    dnssec-validation no;
};
controls { };
zone "homer.ave" { type primary; file "$WORK/db.homer.ave"; };
CONF

# Hot names: what a rack asks all day, plus one NXDOMAIN.
cat >"$WORK/queries.txt" <<QUERIES
bladerunner1.homer.ave A
bladerunner2.homer.ave A
bladerunner3.homer.ave A
bladerunner4.homer.ave A
ns.homer.ave A
wedge.homer.ave A
homer.ave SOA
homer.ave MX
mail.homer.ave AAAA
info.homer.ave TXT
nope.homer.ave A
QUERIES

# utime and stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }

wait_ready() { # port
    for _ in $(seq 100); do
        dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short bladerunner1.homer.ave A >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "server on port $1 did not come up" >&2
    exit 1
}

# run NAME PORT PID: dnsperf against a server; prints
# "qps lost avg_ms max_ms cpu_us user_us sys_us" (CPU figures per answer).
run() {
    local name=$1 port=$2 pid=$3
    wait_ready "$port"
    local before after out
    read -r u0 s0 < <(cpu_ticks "$pid")
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" 2>&1)
    read -r u1 s1 < <(cpu_ticks "$pid")
    echo "$out" >"$WORK/$name.dnsperf"
    local completed lost qps avg max hz
    completed=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    avg=$(awk '/Average Latency/ {print $4 * 1000}' <<<"$out")
    max=$(awk '/Average Latency/ {gsub(/\)/, "", $8); print $8 * 1000}' <<<"$out")
    hz=$(getconf CLK_TCK)
    awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v n="$completed" -v hz="$hz" \
        -v rest="$qps $lost $avg $max" \
        'BEGIN { k = 1e6 / hz / (n > 0 ? n : 1);
                 printf "%s %.2f %.2f %.2f\n", rest, (u + s) * k, u * k, s * k }'
}

echo "== torc-dns (1 UDP thread, core 0) =="
taskset -c 0 "$TORC" dns --listen "127.0.0.1:$TORC_PORT" --zone-file "homer.ave=$WORK/db.homer.ave" \
    --threads 1 2>"$WORK/torc.log" &
TORC_PID=$!
PIDS+=("$TORC_PID")
read -r t_qps t_lost t_avg t_max t_cpu t_user t_sys < <(run torc "$TORC_PORT" "$TORC_PID")
kill "$TORC_PID"

echo "== bind9 named (1 worker, core 0) =="
taskset -c 0 named -g -n 1 -c "$WORK/named.conf" 2>"$WORK/named.log" &
NAMED_PID=$!
PIDS+=("$NAMED_PID")
read -r b_qps b_lost b_avg b_max b_cpu b_user b_sys < <(run bind9 "$BIND_PORT" "$NAMED_PID")
kill "$NAMED_PID"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '\n%-28s %14s %14s %10s\n' "dnsperf ${DURATION}s, loopback" torc-dns bind9 torc/bind9
printf '%-28s %14s %14s %10s\n' "queries per second" "$t_qps" "$b_qps" "$(ratio "$t_qps" "$b_qps")"
printf '%-28s %14s %14s %10s\n' "queries lost" "$t_lost" "$b_lost" "-"
printf '%-28s %14s %14s %10s\n' "average latency (ms)" "$t_avg" "$b_avg" "$(ratio "$t_avg" "$b_avg")"
printf '%-28s %14s %14s %10s\n' "max latency (ms)" "$t_max" "$b_max" "$(ratio "$t_max" "$b_max")"
printf '%-28s %14s %14s %10s\n' "server CPU per answer (us)" "$t_cpu" "$b_cpu" "$(ratio "$t_cpu" "$b_cpu")"
printf '%-28s %14s %14s %10s\n' "  of which user (us)" "$t_user" "$b_user" "$(ratio "$t_user" "$b_user")"
printf '%-28s %14s %14s %10s\n' "  of which kernel (us)" "$t_sys" "$b_sys" "$(ratio "$t_sys" "$b_sys")"
echo "(p99 latency: dnsperf 2.10 reports no percentiles)"
