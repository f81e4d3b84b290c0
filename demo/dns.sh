#!/usr/bin/env bash
# The DNS example's story on the local rack, with a timeline:
#   start the DNS scheduler -> one server up and resolvable -> load 200 -> load 400 -> a second
#   server starts and takes half the queries -> the load drops -> it is stopped.
#
# Needs a local rack: run `cargo run --release --bin torc -- up` in another terminal first (as root, or
# with CAP_NET_BIND_SERVICE, for the rack's DNS on port 53). Then: demo/dns.sh
# DNS_SERVER=named demo/dns.sh runs the servers as bind9's `named` instead of `torc dns`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then UP=${TORC_UP_DIR:-/var/lib/torc/up}; else UP=${TORC_UP_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/torc/up}; fi
CONTROLLER=${TORC_CONTROLLER:-https://127.0.3.20:3000}
TOKEN_FILE=${TORC_TOKEN_FILE:-$UP/credentials/admin.token}
export TORC_CA=${TORC_CA:-$UP/pki/ca.pem}
RACK_DNS=${RACK_DNS:-127.0.3.20:53}
API=127.0.0.1:3005
[ -r "$TOKEN_FILE" ] || { echo "no local rack admin token at $TOKEN_FILE: is \`torc up\` running?" >&2; exit 1; }
command -v dig >/dev/null || { echo "dig is needed: apt-get install bind9-dnsutils" >&2; exit 1; }
TORC=${TORC:-target/release/torc}
[ -x "$TORC" ] || cargo build --release -q -p torc
admin() { TORC_CONTROLLER=$CONTROLLER TORC_TOKEN_FILE=$TOKEN_FILE "$TORC" "$@"; }
ADMIN=$(cat "$TOKEN_FILE")
curl_admin() { curl -s --cacert "$TORC_CA" -H "Authorization: Bearer $ADMIN" "$@"; }

# The scheduler binary: built here unless given (e.g. TORC_DNS_SCHEDULER=target/debug/torc-dns-scheduler).
if [ -z "${TORC_DNS_SCHEDULER:-}" ]; then
  cargo build --release -q -p torc-dns-scheduler
  TORC_DNS_SCHEDULER=target/release/torc-dns-scheduler
fi
STATE=$(mktemp -d)
# The scheduler acts with a framework token of its own, and reads (and has its servers write)
# the load in the rack's tsdb as its admin, whose password the rack config lets it use.
umask 077
admin token create --role framework --framework torc-dns-scheduler --name demo >"$STATE/framework.token"
admin secret get tsdb-admin >"$STATE/tsdb-password"
# Its port-3005 API takes admin tokens: it serves TLS, with a certificate of the rack CA.
"$TORC" ca issue "$UP/pki" --out "$STATE/api" --ip "${API%:*}" >/dev/null
umask 022
"$TORC_DNS_SCHEDULER" run --controller "$CONTROLLER" --token-file "$STATE/framework.token" \
  --ca "$TORC_CA" --tsdb-user admin --tsdb-password-file "$STATE/tsdb-password" \
  --tsdb-password-secret tsdb-admin \
  --state-dir "$STATE" --listen "$API" --rack-dns "$RACK_DNS" --server "${DNS_SERVER:-torc}" \
  --tls-certificate "$STATE/api.crt" --tls-private-key "$STATE/api.key" \
  --high-qps 400 --low-qps 250 --k 2 --n 3 --cooldown-secs 10 --interval-secs 2 \
  >"$STATE/scheduler.log" 2>&1 &
SCHED=$!
cleanup() {
  kill "$SCHED" 2>/dev/null || true
  # Unregistering the framework ends its servers and loads.
  curl_admin -X DELETE "$CONTROLLER/api/v1/frameworks/torc-dns-scheduler" >/dev/null || true
  echo "scheduler log and state: $STATE"
}
trap cleanup EXIT

T0=$(date +%s)
step() { printf '%4ss  %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
scaling() { curl_admin "https://$API/api/v1/scaling"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
until_true() { # SECONDS WHAT CMD...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do if "$@" >/dev/null 2>&1; then return 0; fi; sleep 1; done
  echo "gave up waiting for: $what" >&2; exit 1
}
resolves() { [ -n "$(dig @"${RACK_DNS%:*}" +short "$1")" ]; }
gone() { [ -z "$(dig @"${RACK_DNS%:*}" +short "$1")" ]; }
desired_is() { [ "$(scaling | json 'd["desired_servers"]')" = "$1" ]; }
measured_over() { scaling | json "d['last_observation']['total_qps'] > $1" | grep -q True; }

step "starting the DNS scheduler (framework torc-dns-scheduler, API on $API)"
until_true 60 "dns-sl1 in the service domain" resolves dns-sl1.service.torc
step "dns-sl1 is up: dns-sl1.service.torc -> $(dig @"${RACK_DNS%:*}" +short dns-sl1.service.torc), SRV $(dig @"${RACK_DNS%:*}" +short _dns-sl1._tcp.service.torc SRV)"

curl_admin "https://$API/start/group?name=normalload200" >/dev/null
step "load 200 started (normalload200: 200 users, ~1 query/s each)"
until_true 60 "the load to show" measured_over 120
step "measured $(scaling | json 'round(d["last_observation"]["total_qps"])') qps on 1 server: no change"

curl_admin "https://$API/start/group?name=normalload400" >/dev/null
step "load 400 started (normalload400)"
until_true 90 "a second server" desired_is 2
step "scaled up: $(scaling | json 'd["decisions"][-1]["reason"]')"
until_true 30 "dns-sl2 in the service domain" resolves dns-sl2.service.torc
step "dns-sl2 is up: dns-sl2.service.torc -> $(dig @"${RACK_DNS%:*}" +short dns-sl2.service.torc)"
sleep 8
TASK=$(curl_admin "$CONTROLLER/api/v1/tasks?state=running" | json '[t["id"] for t in d if t["name"]=="normalload400"][0]')
step "normalload400 now sends: $(curl_admin "$CONTROLLER/api/v1/tasks/$TASK/logs?tail=2000" | json 'json.loads(d["data"].strip().splitlines()[-1])["per_server_qps"]')"

curl_admin -X DELETE "https://$API/service?name=normalload400" >/dev/null
step "load 400 stopped"
until_true 120 "back to one server" desired_is 1
step "scaled down: $(scaling | json 'd["decisions"][-1]["reason"]')"
until_true 30 "dns-sl2 to leave the service domain" gone dns-sl2.service.torc
step "dns-sl2 is stopped and no longer resolves"
step "decisions: $(scaling | json 'len(d["decisions"])') (one up, one down: no flapping)"
