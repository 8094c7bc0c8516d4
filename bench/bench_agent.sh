#!/usr/bin/env bash
# bench_agent.sh: the agent channel on loopback, real controller and agent over TLS:
# output ingest (lines stored per second), command round trips per second (queue N
# `true` commands, time until all are done), and the agent's idle RSS (goal < 4 MB).
# Usage: STOKE_BUILD=build bench/bench_agent.sh [LINES] [COMMANDS]
set -euo pipefail
B=${STOKE_BUILD:-build}
LINES=${1:-500000}
CMDS=${2:-200}
TMP=$(mktemp -d /tmp/stoke-bench-agent.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
now() { date +%s.%N; }

"$B/controller/stoked" --data-dir "$TMP/data" --api-listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
	--log-level error >"$TMP/stoked.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$TMP/data/api.url" ] && break; sleep 0.05; done
URL=$(cat "$TMP/data/api.url")
TOKEN=$("$B/controller/stoked" token create --data-dir "$TMP/data" --name bench)
printf 'allow_root yes\ndefault_user root\nlog_level error\n' >"$TMP/extra.conf"
"$B/controller/stoked" agent enroll bench-1 --data-dir "$TMP/data" --out "$TMP/agent" --conf-extra "$TMP/extra.conf" >/dev/null
${AGENT_WRAP:-} "$B/agent/stoke-agent" -c "$TMP/agent/agent.conf" >"$TMP/agent.log" 2>&1 &
APID=$!
PIDS+=($APID)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
for _ in $(seq 200); do [ "$(api "$URL/api/v1/servers/bench-1" | jq -r .agent.status)" = online ] && break; sleep 0.05; done
sleep 1
rss=$(ps -o rss= -p "$APID" | tr -d ' ')

queue() { api -X POST "$URL/api/v1/commands" -d "{\"server\":\"bench-1\",\"kind\":\"exec\",\"payload\":$1}" | jq -r .command.id; }
wait_done() { while :; do s=$(api "$URL/api/v1/commands/$1" | jq -r .state); [ "$s" = done ] || [ "$s" = failed ] && break; sleep 0.02; done; }

t0=$(now)
id=$(queue "{\"argv\":[\"seq\",\"1\",\"$LINES\"]}")
wait_done "$id"
t1=$(now)
stored=$(sqlite3 "$TMP/data/stoke.db" "SELECT count(*) FROM output_lines WHERE owner_id=$id")

# Command round trips: queue CMDS `true` commands over 8 parallel connections of one curl
# process (a curl process per request cost more than the round trip it measured), time
# until the last is done (the API's queueing is included).
before=$(sqlite3 "$TMP/data/stoke.db" "SELECT count(*) FROM commands WHERE state IN ('done','failed')")
for i in $(seq "$CMDS"); do
	[ "$i" = 1 ] || echo next
	printf 'url = "%s/api/v1/commands"\nrequest = "POST"\noutput = "/dev/null"\n' "$URL"
	printf 'header = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\n' "$TOKEN"
	printf 'data = "{\\"server\\":\\"bench-1\\",\\"kind\\":\\"exec\\",\\"payload\\":{\\"argv\\":[\\"true\\"]}}"\n'
done >"$TMP/curl.conf"
chmod 600 "$TMP/curl.conf"
t2=$(now)
curl -sS --no-progress-meter --parallel --parallel-max 8 -K "$TMP/curl.conf"
while [ "$(sqlite3 "$TMP/data/stoke.db" "SELECT count(*) FROM commands WHERE state IN ('done','failed')")" -lt $((before + CMDS)) ]; do
	sleep 0.02
done
t3=$(now)

echo "bench_agent: one agent on loopback over mutual TLS"
awk -v n="$stored" -v a="$t0" -v b="$t1" 'BEGIN { printf "  output ingest:        %10.0f lines/s stored (%d lines in %.2f s)\n", n/(b-a), n, b-a }'
awk -v n="$CMDS" -v a="$t2" -v b="$t3" 'BEGIN { printf "  command round trips:  %10.0f commands/s (%d queued through the API, %.2f s to all done)\n", n/(b-a), n, b-a }'
echo "  agent idle RSS:       $rss KiB (goal: under 4096)"
