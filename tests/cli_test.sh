#!/usr/bin/env bash
# cli_test.sh: the `stoke` CLI against a real stoked (and stoked-testjobs for `job wait`):
# configuration and exit codes, tokens, servers, jobs, following a job's progress live and
# resuming the event stream after the connection is cut. Judged by exit codes and output.
set -euo pipefail

: "${STOKE_BUILD:?STOKE_BUILD must name the build folder}"
STOKE="$STOKE_BUILD/controller/stoke"
STOKED="$STOKE_BUILD/controller/stoked"
TESTJOBS="$STOKE_BUILD/tests/stoked-testjobs"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/stoke-cli-test.XXXXXX")
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	if [ -n "${OUT+x}" ]; then
		echo "--- last command: ${LAST_CMD:-}" >&2
		echo "--- exit status: ${RC:-}" >&2
		echo "--- stdout:" >&2
		printf '%s\n' "$OUT" >&2
		echo "--- stderr:" >&2
		printf '%s\n' "$ERR" >&2
	fi
	for log in "$TMP"/*.log; do
		[ -f "$log" ] || continue
		echo "--- $log (tail):" >&2
		tail -n 20 "$log" >&2
	done
	exit 1
}

pass() {
	echo "ok: $*"
}

[ -x "$STOKE" ] || fail "$STOKE not built"
[ -x "$STOKED" ] || fail "$STOKED not built"
command -v jq >/dev/null || fail "jq is needed"

# python3 runs the connection-cutting proxy; found before HOME changes (pyenv shims need it).
PYTHON=""
if [ -x /usr/bin/python3 ]; then
	PYTHON=/usr/bin/python3
elif command -v python3 >/dev/null; then
	PYTHON=$(command -v python3)
fi

# A clean environment: no config, no proxy between us and 127.0.0.1.
export HOME="$TMP/home"
mkdir -p "$HOME"
unset XDG_CONFIG_HOME STOKE_URL STOKE_TOKEN http_proxy https_proxy HTTP_PROXY HTTPS_PROXY \
	all_proxy ALL_PROXY
export NO_PROXY='*' no_proxy='*'

# Under ASan/UBSan a report must not pass for an expected exit status 1.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}exitcode=86"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}exitcode=86:print_stacktrace=1"

# run CMD...: runs it with a time limit, keeping stdout, stderr and the exit status in
# OUT, ERR, RC (never trips set -e). Everything printed is also kept in all.out.
run() {
	LAST_CMD="$*"
	set +e
	timeout 60 "$@" >"$TMP/stdout" 2>"$TMP/stderr"
	RC=$?
	set -e
	OUT=$(cat "$TMP/stdout")
	ERR=$(cat "$TMP/stderr")
	cat "$TMP/stdout" "$TMP/stderr" >>"$TMP/all.out"
	[ "$RC" -ne 124 ] || fail "timed out: $*"
}

expect_rc() {
	[ "$RC" -eq "$1" ] || fail "$LAST_CMD: exit status $RC, expected $1"
}

expect_err() {
	printf '%s\n' "$ERR" | grep -Eq -- "$1" || fail "$LAST_CMD: stderr does not match /$1/"
}

expect_out() {
	printf '%s\n' "$OUT" | grep -Eq -- "$1" || fail "$LAST_CMD: stdout does not match /$1/"
}

# start_daemon BINARY DATADIR LOG: starts it on free ports, sets URL from DATADIR/api.url.
start_daemon() {
	local bin=$1 dir=$2 log=$3 pid deadline
	mkdir -p "$dir"
	chmod 700 "$dir"
	"$bin" --data-dir "$dir" --api-listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 \
		>"$log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	deadline=$((SECONDS + 30))
	while [ ! -s "$dir/api.url" ]; do
		kill -0 "$pid" 2>/dev/null || fail "$bin exited at start-up"
		[ "$SECONDS" -lt "$deadline" ] || fail "$bin wrote no $dir/api.url within 30 s"
		sleep 0.05
	done
	URL=$(head -n 1 "$dir/api.url")
	DAEMON_PID=$pid
}

# wait_for FILE REGEX SECONDS: polls until FILE has a line matching REGEX.
wait_for() {
	local deadline=$((SECONDS + $3))
	until grep -Eq -- "$2" "$1" 2>/dev/null; do
		[ "$SECONDS" -lt "$deadline" ] || fail "nothing matching /$2/ in $1 within $3 s"
		sleep 0.05
	done
}

# ---------------------------------------------------------------------------------------
# Without a server: usage, configuration, unreachable URL.

run "$STOKE" --version
expect_rc 0
expect_out '^stoke [0-9]+\.[0-9]+'
run "$STOKE" help
expect_rc 0
expect_out 'job wait ID'
run "$STOKE"
expect_rc 2
run "$STOKE" frobnicate
expect_rc 2
expect_err "unknown command 'frobnicate'"
run "$STOKE" server list --bogus
expect_rc 2
expect_err "unknown option '--bogus'"
run "$STOKE" job show
expect_rc 2
run "$STOKE" job show 1 2
expect_rc 2
run "$STOKE" --url http://127.0.0.1:1 --token x job show abc
expect_rc 2
expect_err "not an id"
pass "usage errors exit 2"

run "$STOKE" server list
expect_rc 2
expect_err '^stoke: no API URL: set STOKE_URL or url in ~/.config/stoke/config$'
STOKE_URL=http://127.0.0.1:1 run "$STOKE" server list
expect_rc 2
expect_err '^stoke: no API token'
STOKE_URL=ftp://127.0.0.1:1 STOKE_TOKEN=x run "$STOKE" server list
expect_rc 2
pass "missing configuration exits 2"

STOKE_URL=http://127.0.0.1:1 STOKE_TOKEN=x run "$STOKE" server list
expect_rc 1
expect_err '^stoke: cannot reach http://127\.0\.0\.1:1: Connection refused$'
pass "unreachable URL exits 1"

# ---------------------------------------------------------------------------------------
# A real stoked.

start_daemon "$STOKED" "$TMP/data" "$TMP/stoked.log"
TOKEN=$("$STOKED" token create --data-dir "$TMP/data" --name test) ||
	fail "stoked token create failed"
[[ "$TOKEN" =~ ^[A-Za-z0-9_]+$ ]] || fail "stoked token create printed '$TOKEN'"
export STOKE_URL="$URL" STOKE_TOKEN="$TOKEN"

# Flags beat the environment; --json and --url may come after the command.
run "$STOKE" server list --url http://127.0.0.1:1
expect_rc 1
expect_err 'cannot reach http://127\.0\.0\.1:1'
STOKE_URL="$URL/api/v1/" run "$STOKE" server list
expect_rc 0
STOKE_URL="ftp://$URL" run "$STOKE" server list
expect_rc 2
pass "--url overrides STOKE_URL; a URL ending in /api/v1/ works"

# The config file: refused while others may read it (it holds a token).
mkdir -p "$HOME/.config/stoke"
printf '# test\nurl = %s\ntoken = "%s"\n' "$URL" "$TOKEN" >"$HOME/.config/stoke/config"
chmod 644 "$HOME/.config/stoke/config"
run env -u STOKE_URL -u STOKE_TOKEN "$STOKE" token list
expect_rc 2
expect_err 'group or others may read it.*chmod 600'
chmod 600 "$HOME/.config/stoke/config"
run env -u STOKE_URL -u STOKE_TOKEN "$STOKE" token list
expect_rc 0
expect_out '^ID +NAME +PREFIX'
printf 'url = %s\nsecret = x\n' "$URL" >"$HOME/.config/stoke/config"
run env -u STOKE_URL -u STOKE_TOKEN "$STOKE" token list
expect_rc 2
expect_err "config:2: unknown key 'secret'"
rm -f "$HOME/.config/stoke/config"
pass "config file: mode checked, read, unknown keys refused"

# Tokens.
run "$STOKE" token create ci
expect_rc 0
CI_TOKEN="$OUT"
[[ "$CI_TOKEN" =~ ^[A-Za-z0-9_]{16,}$ ]] || fail "token create printed '$CI_TOKEN', not a token alone"
run "$STOKE" token list
expect_rc 0
expect_out '^ID +NAME +PREFIX +CREATED +LAST USED +REVOKED$'
expect_out '^[0-9]+ +ci '
printf '%s\n' "$OUT" | grep -qF "$CI_TOKEN" && fail "token list shows a token's secret"
run "$STOKE" token list --json
expect_rc 0
CI_ID=$(printf '%s' "$OUT" | jq -e '.items[] | select(.name == "ci") | .id') ||
	fail "token list --json: no token named ci in $OUT"
printf '%s\n' "$OUT" | grep -qF "$CI_TOKEN" && fail "token list --json shows a token's secret"
STOKE_TOKEN="$CI_TOKEN" run "$STOKE" token list
expect_rc 0
run "$STOKE" --json token create ci2
expect_rc 0
printf '%s' "$OUT" | jq -e '(.token | type == "string") and .name == "ci2"' >/dev/null ||
	fail "token create --json: $OUT"
run "$STOKE" token revoke "$CI_ID"
expect_rc 0
expect_out "^token $CI_ID 'ci' revoked$"
run "$STOKE" token list --json
printf '%s' "$OUT" | jq -e ".items[] | select(.id == $CI_ID) | .revoked_at != null" >/dev/null ||
	fail "token $CI_ID not shown as revoked: $OUT"
# The revoked token fails with the API's own message.
API_MSG=$(curl -sS -H "Authorization: Bearer $CI_TOKEN" "$URL/api/v1/tokens" | jq -r .error.message)
if [ -z "$API_MSG" ] || [ "$API_MSG" = null ]; then
	fail "no error message from the API for a revoked token"
fi
STOKE_TOKEN="$CI_TOKEN" run "$STOKE" token list
expect_rc 1
[ "$ERR" = "stoke: $API_MSG" ] || fail "revoked token: stderr '$ERR', expected 'stoke: $API_MSG'"
run "$STOKE" token revoke 999999
expect_rc 1
expect_err '^stoke: '
pass "token create/list/revoke; a revoked token fails with the API's message"

# Servers, on an empty store.
run "$STOKE" server list
expect_rc 0
[ "$OUT" = "$(printf '%s\n' "$OUT" | head -n 1)" ] || fail "server list on an empty store: more than a header"
expect_out '^ID +NAME +STATE +PROVIDER +REGION +IPV4 +AGENT +TAGS$'
run "$STOKE" server list --json
expect_rc 0
printf '%s' "$OUT" | jq -e '.items == [] and has("next")' >/dev/null ||
	fail "server list --json: $OUT"
run "$STOKE" server list --tag web --state active
expect_rc 0
run "$STOKE" server show nope
expect_rc 1
expect_err '^stoke: .*not found|^stoke: .*no (such )?server'
run "$STOKE" --json server show nope
expect_rc 1
[ -z "$OUT" ] || fail "an error printed something on stdout: $OUT"
pass "server list (table, --json), server show of a missing server"

# Jobs without a job engine's help.
run "$STOKE" job show 999
expect_rc 1
expect_err '^stoke: '
run "$STOKE" job wait 999
expect_rc 1
run "$STOKE" job list
expect_rc 0
expect_out '^ID +TYPE +STATE +PROGRESS'
run "$STOKE" job list --json --state failed
expect_rc 0
printf '%s' "$OUT" | jq -e '.items | type == "array"' >/dev/null || fail "job list --json: $OUT"
pass "job show/wait of a missing job, job list"

# ---------------------------------------------------------------------------------------
# Following jobs live, on stoked-testjobs (stoked plus test job types).

if [ ! -x "$TESTJOBS" ]; then
	echo "SKIP: job wait/cancel/retry: $TESTJOBS is not built"
else
	start_daemon "$TESTJOBS" "$TMP/jobs" "$TMP/testjobs.log"
	JOBS_PID=$DAEMON_PID
	JTOKEN=$("$TESTJOBS" token create --data-dir "$TMP/jobs" --name test) ||
		fail "stoked-testjobs token create failed"
	export STOKE_URL="$URL" STOKE_TOKEN="$JTOKEN"
	enqueue() { # enqueue DIR JSON-PAYLOAD-WITHOUT-DIR
		mkdir -p "$1"
		"$TESTJOBS" enqueue --data-dir "$TMP/jobs" test.steps \
			"$(jq -cn --arg d "$1" "$2 + {dir: \$d}")"
	}

	# A job that succeeds: plain progress lines (stdout is no terminal), then "done".
	ID=$(enqueue "$TMP/j1" '{"sleep_ms": 150}') || fail "enqueue failed"
	run "$STOKE" job wait "$ID"
	expect_rc 0
	expect_out "^job $ID done$"
	LINES=$(printf '%s\n' "$OUT" | grep -Ec '^[0-9]{1,3}% ' || true)
	[ "$LINES" -ge 3 ] || fail "job wait printed $LINES progress lines, expected >= 3"
	printf '%s\n' "$OUT" | grep -E '^[0-9]+% ' | tail -n 1 | grep -q '^100% ' ||
		fail "the last progress line is not 100%"
	printf '%s\n' "$OUT" | grep -Eo '^[0-9]+' | sort -nc ||
		fail "progress went backwards"
	printf '%s\n' "$OUT" | grep -q '% step [0-9] working' || fail "no step messages"
	[ "$(wc -l <"$TMP/j1/effects.log")" -eq 5 ] || fail "the job did not run its five steps"
	run "$STOKE" job show "$ID"
	expect_rc 0
	expect_out '^state: +done'
	expect_out '^  done +four'
	run "$STOKE" job wait "$ID" --json
	expect_rc 0
	printf '%s' "$OUT" | jq -e '.state == "done"' >/dev/null || fail "job wait --json: $OUT"
	pass "job wait: progress lines and exit 0 when done"

	# A job that fails (every attempt, at step two): exit 1 with the step and the error.
	ID=$(enqueue "$TMP/j2" '{"sleep_ms": 20, "fail_at": 2}') || fail "enqueue failed"
	run "$STOKE" job wait "$ID"
	expect_rc 1
	expect_err "^stoke: job $ID failed at step two: .*step 2 failed on purpose"
	run "$STOKE" job show "$ID"
	expect_rc 0
	expect_out '^state: +failed'
	expect_out 'failed here'
	RUNS=$(grep -c '^run 2 ' "$TMP/j2/runs.log")
	# Retry --wait follows the new attempts, not the old failure, and fails again.
	run "$STOKE" job retry "$ID" --wait
	expect_rc 1
	expect_err "^stoke: job $ID failed at step two"
	[ "$(grep -c '^run 2 ' "$TMP/j2/runs.log")" -gt "$RUNS" ] ||
		fail "job retry --wait returned before the job ran again"
	run "$STOKE" job show "$ID" --json
	printf '%s' "$OUT" | jq -e '.state == "failed"' >/dev/null ||
		fail "job retry --wait returned while the job was not finished: $OUT"
	run "$STOKE" job cancel "$ID"
	expect_rc 1
	expect_err '^stoke: '
	pass "job wait/retry --wait: exit 1 with the failing step; cancel of a finished job fails"

	# Cancel --wait: exit 0 once the job has stopped as cancelled; wait then says cancelled.
	ID=$(enqueue "$TMP/j3" '{"sleep_ms": 3000}') || fail "enqueue failed"
	wait_for "$TMP/j3/runs.log" '^run 0 ' 20
	run "$STOKE" job cancel "$ID" --wait
	expect_rc 0
	expect_out "^job $ID cancelled$"
	run "$STOKE" job wait "$ID"
	expect_rc 1
	expect_err "^stoke: job $ID was cancelled"
	pass "job cancel --wait; job wait of a cancelled job exits 1"

	# The event stream is cut in the middle: job wait reconnects with Last-Event-ID.
	if [ -z "$PYTHON" ]; then
		echo "SKIP: reconnecting job wait: python3 (for the cutting proxy) is missing"
	else
		cat >"$TMP/proxy.py" <<-'EOF'
			# A TCP proxy that cuts every connection on SIGUSR1 and logs Last-Event-ID headers.
			import os, selectors, signal, socket, sys
			target = (sys.argv[1], int(sys.argv[2]))
			portfile, hdrlog = sys.argv[3], sys.argv[4]
			cut = False
			def on_usr1(signum, frame):
			    global cut
			    cut = True
			signal.signal(signal.SIGUSR1, on_usr1)
			sel = selectors.DefaultSelector()
			lsock = socket.socket()
			lsock.bind(("127.0.0.1", 0))
			lsock.listen(16)
			sel.register(lsock, selectors.EVENT_READ, None)
			pairs = {}
			with open(portfile + ".tmp", "w") as f:
			    f.write(str(lsock.getsockname()[1]))
			os.rename(portfile + ".tmp", portfile)
			def close(s):
			    peer = pairs.pop(s, None)
			    for x in (s, peer):
			        if x is not None:
			            pairs.pop(x, None)
			            try:
			                sel.unregister(x)
			            except Exception:
			                pass
			            x.close()
			while True:
			    for key, _ in sel.select(timeout=0.05):
			        s = key.fileobj
			        if s is lsock:
			            c, _ = lsock.accept()
			            u = socket.create_connection(target)
			            pairs[c], pairs[u] = u, c
			            sel.register(c, selectors.EVENT_READ, "client")
			            sel.register(u, selectors.EVENT_READ, "server")
			            continue
			        if s not in pairs:
			            continue
			        try:
			            data = s.recv(65536)
			        except OSError:
			            data = b""
			        if not data:
			            close(s)
			            continue
			        if key.data == "client":
			            for line in data.split(b"\r\n"):
			                if line.lower().startswith(b"last-event-id:"):
			                    with open(hdrlog, "a") as f:
			                        f.write(line.decode() + "\n")
			        try:
			            pairs[s].sendall(data)
			        except OSError:
			            close(s)
			    if cut:
			        cut = False
			        for s in list(pairs):
			            close(s)
		EOF
		HOSTPORT=${URL#http://}
		"$PYTHON" "$TMP/proxy.py" "${HOSTPORT%:*}" "${HOSTPORT##*:}" "$TMP/proxy.port" \
			"$TMP/proxy.hdrs" >"$TMP/proxy.log" 2>&1 &
		PROXY_PID=$!
		PIDS+=("$PROXY_PID")
		deadline=$((SECONDS + 20))
		until [ -s "$TMP/proxy.port" ]; do
			kill -0 "$PROXY_PID" 2>/dev/null || fail "the proxy exited at start-up"
			[ "$SECONDS" -lt "$deadline" ] || fail "the proxy did not start"
			sleep 0.05
		done
		PROXY_URL="http://127.0.0.1:$(cat "$TMP/proxy.port")"

		ID=$(enqueue "$TMP/j4" '{"sleep_ms": 600}') || fail "enqueue failed"
		set +e
		timeout 60 "$STOKE" --url "$PROXY_URL" job wait "$ID" >"$TMP/wait.out" 2>"$TMP/wait.err" &
		WAIT_PID=$!
		set -e
		PIDS+=("$WAIT_PID")
		# Cut once the stream is up (the proxy saw its request) and events flow.
		wait_for "$TMP/proxy.hdrs" '^Last-Event-ID' 30
		wait_for "$TMP/wait.out" '^[3-9]0% step' 30
		kill -USR1 "$PROXY_PID"
		set +e
		wait "$WAIT_PID"
		RC=$?
		set -e
		OUT=$(cat "$TMP/wait.out")
		ERR=$(cat "$TMP/wait.err")
		LAST_CMD="stoke job wait $ID (through the cutting proxy)"
		cat "$TMP/wait.out" "$TMP/wait.err" >>"$TMP/all.out"
		[ "$RC" -ne 124 ] || fail "timed out: $LAST_CMD"
		expect_rc 0
		expect_err 'event stream lost.*reconnecting'
		expect_out "^job $ID done$"
		expect_out '^90% step 4 working'
		# The first connection resumes after the events before the wait; the reconnect
		# after the last event it handled: a larger id.
		[ "$(wc -l <"$TMP/proxy.hdrs")" -ge 2 ] || fail "no Last-Event-ID on reconnect: $(cat "$TMP/proxy.hdrs")"
		FIRST=$(head -n 1 "$TMP/proxy.hdrs" | tr -dc 0-9)
		SECOND=$(sed -n 2p "$TMP/proxy.hdrs" | tr -dc 0-9)
		[ "$SECOND" -gt "$FIRST" ] || fail "reconnect sent Last-Event-ID $SECOND, not after $FIRST"
		pass "job wait reconnects with Last-Event-ID after the stream is cut"
	fi
	kill "$JOBS_PID"
fi

# ---------------------------------------------------------------------------------------
# A stand-in API for what stoked cannot show yet or only by chance: servers with facts and a
# checklist, lists over several pages, and an event stream framed awkwardly (CRLF split
# across writes, multi-line data, comments, another job's events, an earlier attempt's
# failure, a dropped connection).

if [ -z "$PYTHON" ]; then
	echo "SKIP: stand-in API checks: python3 is missing"
else
	cat >"$TMP/fake_api.py" <<-'EOF'
		import json, os, sys, threading, time
		from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
		from urllib.parse import urlparse, parse_qs
		portfile, hdrlog = sys.argv[1], sys.argv[2]
		lock = threading.Lock()
		state = {"job": "running", "conns": 0}
		def server(i, name, tags):
		    return {"id": i, "name": name, "provider": "custom", "region": "lab", "size": "s",
		            "image": "debian-12", "provider_id": None, "ipv4": "192.0.2.%d" % i,
		            "ssh_port": 22, "ssh_user": "root", "host_key_sha256": "SHA256:abc",
		            "state": "installing_agent", "progress": 80, "message": "waiting for agent",
		            "checklist": [{"item": "host key pinned", "done": True, "required": True, "detail": None},
		                          {"item": "agent hello", "done": False, "required": True, "detail": "no hello yet"}],
		            "error": None, "failed_step": None, "failed_at": None, "tags": tags,
		            "agent": {"status": "offline", "version": "0.1.0", "last_seen": None,
		                      "facts": {"os": {"id": "debian", "version": "12"}, "cpus": 2}},
		            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:00.000Z"}
		SERVERS = [server(1, "web-1", ["web"]), server(2, "db-1", ["db"])]
		def ev(i, kind, job, data, name=True):
		    body = json.dumps({"id": i, "time": "2026-01-01T00:00:00.000Z", "actor": "system", "kind": kind,
		                       "resource_kind": "job", "resource_id": job, "data": data})
		    if kind == "job.progress" and job == 7:
		        with lock:
		            state["progress"], state["message"] = data["progress"], data["message"]
		    head = "id: %d\n" % i + ("event: %s\n" % kind if name else "")
		    return (head + "data: " + body + "\n\n").encode()
		class H(BaseHTTPRequestHandler):
		    def log_message(self, *a):
		        pass
		    def reply(self, code, obj):
		        b = json.dumps(obj).encode()
		        self.send_response(code)
		        self.send_header("Content-Type", "application/json")
		        self.send_header("Content-Length", str(len(b)))
		        self.end_headers()
		        self.wfile.write(b)
		    def send(self, b, pause=0.05):
		        self.wfile.write(b)
		        self.wfile.flush()
		        time.sleep(pause)
		    def do_GET(self):
		        u = urlparse(self.path)
		        q = {k: v[0] for k, v in parse_qs(u.query).items()}
		        if self.headers.get("Authorization") != "Bearer faketoken":
		            return self.reply(401, {"error": {"code": "unauthorized", "message": "fake: bad token"}})
		        if u.path == "/api/v1/servers":
		            items = [x for x in SERVERS if "tag" not in q or q["tag"] in x["tags"]]
		            after = int(q.get("after", 0))
		            items = [x for x in items if x["id"] > after][:1]
		            nxt = items[-1]["id"] if items and items[-1]["id"] < SERVERS[-1]["id"] else None
		            return self.reply(200, {"items": items, "next": nxt})
		        if u.path.startswith("/api/v1/servers/"):
		            key = u.path.rsplit("/", 1)[1]
		            for x in SERVERS:
		                if key in (x["name"], str(x["id"])):
		                    return self.reply(200, x)
		            return self.reply(404, {"error": {"code": "not_found", "message": "server %s: not found" % key}})
		        if u.path == "/api/v1/audit":
		            return self.reply(200, {"items": [], "next": None})
		        if u.path == "/api/v1/jobs/7":
		            with lock:
		                st = state["job"]
		            j = {"id": 7, "type": "site.deploy", "state": st, "progress": state.get("progress", 0),
		                 "message": state.get("message"), "error": None, "failed_step": None}
		            if st == "failed":
		                j.update(error="deploy: exit status 3", failed_step="deploy")
		            return self.reply(200, j)
		        if u.path != "/api/v1/events":
		            return self.reply(404, {"error": {"code": "not_found", "message": "no route"}})
		        with lock:
		            state["conns"] += 1
		            n = state["conns"]
		        with open(hdrlog, "a") as f:
		            f.write("%d %s\n" % (n, self.headers.get("Last-Event-ID", "-")))
		        self.send_response(200)
		        self.send_header("Content-Type", "text/event-stream")
		        self.end_headers()
		        if n == 1:
		            self.send(b": hello\r\n\r\nretry: 100\r\n")
		            e = ev(1, "job.progress", 7, {"progress": 25, "message": "uploading"}).replace(b"\n", b"\r\n")
		            cut = e.index(b"\r\n") + 1
		            self.send(e[:cut])              # ends in CR; its LF comes in the next write
		            self.send(e[cut:cut + 7])
		            self.send(e[cut + 7:])
		            # An earlier attempt's failure: the job itself is still running.
		            self.send(ev(2, "job.state", 7, {"state": "failed", "step": "deploy", "error": "old"}))
		            time.sleep(2)
		        elif n == 2:
		            body = json.dumps({"id": 3, "kind": "job.progress", "resource_kind": "job",
		                               "resource_id": 7, "data": {"progress": 50, "message": "half way"}})
		            half = body.index(", ") + 1  # two data lines, joined by "\n": still JSON
		            self.send(("id: 3\ndata: %s\ndata: %s\n\n" % (body[:half], body[half + 1:])).encode())
		            self.send(ev(4, "job.progress", 8, {"progress": 99, "message": "another job"}))
		            self.send(b": keepalive\n\n")
		            # and the connection drops
		        else:
		            with lock:
		                state["job"] = "failed"
		            self.send(ev(5, "job.progress", 7, {"progress": 60, "message": "restarting php"}, name=False))
		            self.send(ev(6, "job.state", 7, {"state": "failed", "step": "deploy", "error": "x"}))
		            time.sleep(2)
		srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
		with open(portfile + ".tmp", "w") as f:
		    f.write(str(srv.server_address[1]))
		os.rename(portfile + ".tmp", portfile)
		srv.serve_forever()
	EOF
	"$PYTHON" "$TMP/fake_api.py" "$TMP/fake.port" "$TMP/fake.hdrs" >"$TMP/fake_api.log" 2>&1 &
	FAKE_PID=$!
	PIDS+=("$FAKE_PID")
	deadline=$((SECONDS + 20))
	until [ -s "$TMP/fake.port" ]; do
		kill -0 "$FAKE_PID" 2>/dev/null || fail "the stand-in API exited at start-up"
		[ "$SECONDS" -lt "$deadline" ] || fail "the stand-in API did not start"
		sleep 0.05
	done
	STOKE_URL="http://127.0.0.1:$(cat "$TMP/fake.port")"
	export STOKE_URL STOKE_TOKEN=faketoken

	run "$STOKE" server list
	expect_rc 0
	expect_out '^1 +web-1 +installing_agent 80% +custom +lab +192\.0\.2\.1 +offline +web$'
	expect_out '^2 +db-1 '
	run "$STOKE" server list --json
	printf '%s' "$OUT" | jq -e '(.items | map(.name)) == ["web-1", "db-1"] and .next == null' \
		>/dev/null || fail "server list --json did not gather both pages: $OUT"
	run "$STOKE" server list --tag db
	expect_rc 0
	printf '%s\n' "$OUT" | grep -q 'web-1' && fail "server list --tag db shows web-1"
	expect_out '^2 +db-1 '
	run "$STOKE" server show web-1
	expect_rc 0
	expect_out '^state: +installing_agent 80%: waiting for agent$'
	expect_out '^  os\.version: +12$'
	expect_out '^  cpus: +2$'
	expect_out '^  \[x\] +host key pinned$'
	expect_out '^  \[ \] +agent hello: no hello yet$'
	run "$STOKE" server show nope
	expect_rc 1
	[ "$ERR" = "stoke: server nope: not found" ] || fail "server show nope: stderr '$ERR'"
	STOKE_TOKEN=wrong run "$STOKE" server list
	expect_rc 1
	[ "$ERR" = "stoke: fake: bad token" ] || fail "bad token: stderr '$ERR'"
	pass "stand-in API: server list over pages and by tag, server show with facts and checklist"

	run "$STOKE" job wait 7
	expect_rc 1
	expect_err '^stoke: job 7 failed at step deploy: exit status 3$'
	expect_err 'event stream lost.*reconnecting'
	[ "$(printf '%s\n' "$OUT" | grep -E '^[0-9]+% ')" = "$(printf '0%% running\n25%% uploading\n50%% half way\n60%% restarting php')" ] ||
		fail "job wait against the stand-in: progress lines are wrong"
	# Connections: from the start ("0": no events yet), after the earlier attempt's failure
	# (2, where it stopped to look at the job), after the drop (4, the last event received,
	# the other job's included).
	[ "$(cut -d' ' -f2 "$TMP/fake.hdrs" | tr '\n' ' ')" = "0 2 4 " ] ||
		fail "Last-Event-ID per connection: $(cut -d' ' -f2 "$TMP/fake.hdrs" | tr '\n' ' '), expected 0 2 4"
	pass "stand-in API: SSE framing (CRLF split, multi-line data, comments), other jobs ignored, stale failure ignored, resume"
fi

# The token the CLI was configured with never appeared in its output.
grep -qF "$TOKEN" "$TMP/all.out" && fail "the API token appeared in stoke's output"
if [ -n "${JTOKEN:-}" ]; then
	grep -qF "$JTOKEN" "$TMP/all.out" && fail "the API token appeared in stoke's output"
fi
pass "the configured token never printed"
if grep -Eq 'Sanitizer|runtime error:' "$TMP/all.out"; then
	grep -E -A5 'Sanitizer|runtime error:' "$TMP/all.out" >&2
	fail "a sanitizer reported a problem in stoke"
fi
echo "cli_test: all passed"
