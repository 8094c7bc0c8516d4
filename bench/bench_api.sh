#!/usr/bin/env bash
# bench_api.sh: API reads per second with wrk against a real stoked on loopback:
# the unauthenticated health check, an authenticated list, and one job by id.
# Usage: STOKE_BUILD=build bench/bench_api.sh [SECONDS]
set -euo pipefail
B=${STOKE_BUILD:-build}
SECS=${1:-5}
command -v wrk >/dev/null || { echo "bench_api: wrk is not installed (apt-get install wrk)"; exit 1; }
TMP=$(mktemp -d /tmp/stoke-bench-api.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
"$B/tests/stoked-testjobs" --data-dir "$TMP" --api-listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
	--log-level error >"$TMP/log" 2>&1 &
PID=$!
for _ in $(seq 200); do [ -s "$TMP/api.url" ] && break; sleep 0.05; done
URL=$(cat "$TMP/api.url")
TOKEN=$("$B/controller/stoked" token create --data-dir "$TMP" --name bench)
JOB=$("$B/tests/stoked-testjobs" enqueue --data-dir "$TMP" test.steps "{\"dir\":\"$TMP\"}")
for _ in $(seq 200); do curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/jobs/$JOB" | grep -q '"done"' && break; sleep 0.05; done

run() {
	local name=$1 path=$2
	shift 2
	local rps
	rps=$(wrk -t2 -c16 -d"${SECS}s" "$@" "$URL$path" | awk '/Requests\/sec/ {print $2}')
	printf '  %-32s %10s req/s\n' "$name" "$rps"
}
echo "bench_api: wrk -t2 -c16 for ${SECS}s per endpoint, stoked on $URL"
run "GET /api/v1/health" /api/v1/health
run "GET /api/v1/jobs?limit=50 (auth)" "/api/v1/jobs?limit=50" -H "Authorization: Bearer $TOKEN"
run "GET /api/v1/jobs/$JOB (auth)" "/api/v1/jobs/$JOB" -H "Authorization: Bearer $TOKEN"
