#!/usr/bin/env bash
# fleet_run_test.sh: `stoke run` on 50 real agents (50 stoke-agent processes on 127.0.0.1,
# one controller): mixed exit codes, time limits, one agent offline and one that is
# connected but frozen (never takes the command): the right summary, exit status 1, and the
# complete output, live and kept (stoke batch output); --gather groups identical outputs;
# --batch N never runs more than N at once; Ctrl-C cancels. Judged by exit code.
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for bin in curl jq sqlite3; do
	command -v "$bin" >/dev/null || fail "$bin is needed"
done
[ "$(id -u)" = 0 ] || fail "runs as root (agents acting as root)"

STOKED=${STOKE_STOKED_BIN:-$STOKE_BUILD/controller/stoked}
STOKE=$STOKE_BUILD/controller/stoke
AGENT=${STOKE_AGENT_BIN:-$STOKE_BUILD/agent/stoke-agent}
DATA=$T_TMP/data
CONF=$T_TMP/stoked.conf
N=50
printf 'agent_park = 20s\nworkers = 4\n' >"$CONF"
t_start_stoked "$STOKED" "$DATA" -c "$CONF" --log-level warn
export STOKE_URL=$T_URL
STOKE_TOKEN=$("$STOKED" token create -c "$CONF" --data-dir "$DATA" --name run)
export STOKE_TOKEN
api() { curl -sS -H "Authorization: Bearer $STOKE_TOKEN" -H 'Content-Type: application/json' "$@"; }

printf 'allow_root yes\ndefault_user root\nlog_level warn\n' >"$T_TMP/extra.conf"
declare -A PID
t0=$SECONDS
for i in $(seq 1 $N); do
	"$STOKED" agent enroll "a$i" -c "$CONF" --data-dir "$DATA" --out "$T_TMP/a$i" \
		--conf-extra "$T_TMP/extra.conf" >/dev/null || fail "enrolling a$i"
	"$AGENT" -c "$T_TMP/a$i/agent.conf" >>"$T_TMP/a$i.log" 2>&1 &
	PID[a$i]=$!
	T_PIDS+=("$!")
done
online() { [ "$(api "$T_URL/api/v1/servers?limit=200" | jq '[.items[] | select(.agent.status == "online")] | length')" = "$1" ]; }
t_wait 60 online $N || fail "not every agent came online"
for i in $(seq 1 25); do "$STOKE" server tag "a$i" half >/dev/null || fail "tag a$i"; done
ok "$N agents enrolled and online in $((SECONDS - t0)) s"

# Which agent runs a command: the script's parent is the agent, started with its bundle.
cat >"$T_TMP/mixed.sh" <<'EOS'
n=$(tr '\0' '\n' </proc/$PPID/cmdline | sed -n 's|.*/a\([0-9]*\)/agent.conf$|\1|p')
for i in $(seq 1 20); do echo "a$n line $i"; done
echo "a$n to stderr" >&2
case $((n % 10)) in
3) exit 3 ;;
7) sleep 30 ;;
esac
echo "a$n done"
EOS

# a50 is offline; a49 is connected but frozen: its agent never takes the command.
kill -9 "${PID[a50]}"
t_wait 30 bash -c "[ \"\$(curl -sS -H 'Authorization: Bearer $STOKE_TOKEN' $T_URL/api/v1/servers/a50 | jq -r .agent.status)\" = offline ]" ||
	fail "a50 not seen offline"
kill -STOP "${PID[a49]}"
t0=$SECONDS
set +e
# A 12 s limit: 50 scripts starting at once on a busy 2-core machine took more than 3 s
# before their first line (the sleepers still time out; the frozen agent is not waited on).
"$STOKE" run --all --timeout 12 --pickup 5 --script "$T_TMP/mixed.sh" >"$T_TMP/run.out" 2>"$T_TMP/run.err"
rc=$?
set -e
took=$((SECONDS - t0))
[ $rc = 1 ] || fail "stoke run exited $rc (want 1): $(tail -5 "$T_TMP/run.err")"
SUMMARY=$(grep '^batch ' "$T_TMP/run.err") || fail "no summary: $(cat "$T_TMP/run.err")"
[[ "$SUMMARY" == *"50 servers: 38 ok, 5 failed, 5 timed out, 2 offline"* ]] || fail "summary: $SUMMARY"
grep -qx '  exit 3: a3,a13,a23,a33,a43' "$T_TMP/run.err" || fail "exit codes: $(cat "$T_TMP/run.err")"
grep -qx '  timed out: a7,a17,a27,a37,a47' "$T_TMP/run.err" || fail "timeouts: $(cat "$T_TMP/run.err")"
grep -qx '  offline: a49,a50' "$T_TMP/run.err" || fail "offline: $(cat "$T_TMP/run.err")"
[ $took -lt 40 ] || fail "the batch took $took s: the frozen agent was waited on"
ok "mixed exits, time limits, offline and frozen agents: right summary in $took s, exit 1"

# Complete output: 20 lines from each of the 48 that ran, "done" from the 38 that ended
# well, one stderr line each; every line prefixed with its own server.
want_lines=$((48 * 20 + 38))
[ "$(wc -l <"$T_TMP/run.out")" = $want_lines ] ||
	fail "stdout has $(wc -l <"$T_TMP/run.out") lines, want $want_lines"
[ "$(grep -c ' to stderr$' "$T_TMP/run.err")" = 48 ] || fail "stderr lines: $(grep -c ' to stderr$' "$T_TMP/run.err")"
awk -F': ' '{ split($2, w, " "); if (w[1] != $1) { print; bad = 1 } } END { exit bad }' "$T_TMP/run.out" ||
	fail "a line carries another server's prefix"
for i in $(seq 1 48); do
	got=$(grep -c "^a$i: a$i line " "$T_TMP/run.out")
	[ "$got" = 20 ] || fail "a$i: $got lines of 20"
	for l in 1 10 20; do grep -qx "a$i: a$i line $l" "$T_TMP/run.out" || fail "a$i: line $l missing"; done
done
ok "complete output: every line of every server, prefixed with its server"

BID=$(api "$T_URL/api/v1/batches" | jq -r '.items[-1].id')
B=$(api "$T_URL/api/v1/batches/$BID")
jq -e '.summary | .servers == 50 and .ok == 38 and .failed == 5 and .timeout == 5 and .offline == 2' <<<"$B" >/dev/null ||
	fail "batch summary: $(jq -c .summary <<<"$B")"
jq -e '[.servers[] | select(.server == "a3")][0] | .exit_code == 3 and .outcome == "failed"' <<<"$B" >/dev/null ||
	fail "a3: $(jq -c '.servers[] | select(.server == "a3")' <<<"$B")"
"$STOKE" batch output "$BID" >"$T_TMP/again.out" 2>/dev/null && fail "batch output of a failed batch exited 0"
cmp -s <(sort "$T_TMP/run.out") <(sort "$T_TMP/again.out") || fail "the kept output differs from what was shown live"
ok "the batch and every server's output are kept: stoke batch output shows the same"
kill -CONT "${PID[a49]}"

# --gather: identical outputs once, with the list of their servers.
cat >"$T_TMP/parity.sh" <<'EOS'
n=$(tr '\0' '\n' </proc/$PPID/cmdline | sed -n 's|.*/a\([0-9]*\)/agent.conf$|\1|p')
if [ $((n % 2)) = 0 ]; then echo even; echo same; else echo odd; echo same; fi
EOS
"$STOKE" run --tag half --gather --script "$T_TMP/parity.sh" >"$T_TMP/gather.out" 2>"$T_TMP/gather.err" ||
	fail "gather run: $(cat "$T_TMP/gather.err")"
grep -qx 'a1,a3,a5,a7,a9,a11,a13,a15,a17,a19,a21,a23,a25 (13)' "$T_TMP/gather.out" || fail "odd group: $(cat "$T_TMP/gather.out")"
grep -qx 'a2,a4,a6,a8,a10,a12,a14,a16,a18,a20,a22,a24 (12)' "$T_TMP/gather.out" || fail "even group: $(cat "$T_TMP/gather.out")"
[ "$(grep -cx same "$T_TMP/gather.out")" = 2 ] || fail "gathered output: $(cat "$T_TMP/gather.out")"
grep -q '25 servers: 25 ok' "$T_TMP/gather.err" || fail "gather summary: $(cat "$T_TMP/gather.err")"
ok "--gather prints identical outputs once under their servers"

# --batch 5: rolling, never more than 5 at once.
"$STOKE" run --tag half --batch 5 -- sh -c 'sleep 0.3' >/dev/null 2>"$T_TMP/roll.err" ||
	fail "rolling run: $(cat "$T_TMP/roll.err")"
BID=$(api "$T_URL/api/v1/batches" | jq -r '.items[-1].id')
max=$(sqlite3 -cmd '.timeout 5000' "$DATA/stoke.db" "SELECT max(n) FROM (SELECT (SELECT count(*) FROM commands d WHERE d.batch_id = c.batch_id AND d.started_at <= c.started_at AND d.finished_at > c.started_at) AS n FROM commands c WHERE c.batch_id = $BID)")
[ "$max" -le 5 ] && [ "$max" -ge 2 ] || fail "rolling batch ran $max at once (want 2..5)"
[ "$(api "$T_URL/api/v1/batches/$BID" | jq .summary.ok)" = 25 ] || fail "rolling batch: not all ok"
ok "--batch 5 rolls: at most $max ran at once, all 25 ok"

# Ctrl-C cancels: the batch ends cancelled, the commands are stopped on the agents.
"$STOKE" run --tag half -- sleep 77 >/dev/null 2>"$T_TMP/cancel.err" &
RUN=$!
running() { [ "$(api "$T_URL/api/v1/batches" | jq -r '.items[-1] | "\(.argv[1]) \(.summary.running)"')" = "77 25" ]; }
t_wait 20 running || fail "the sleep batch never ran everywhere"
kill -INT $RUN
set +e
wait $RUN
rc=$?
set -e
[ $rc = 1 ] || fail "cancelled run exited $rc: $(cat "$T_TMP/cancel.err")"
grep -q '^batch [0-9]* cancelled: 25 servers: 0 ok, 25 cancelled' "$T_TMP/cancel.err" ||
	fail "cancel summary: $(cat "$T_TMP/cancel.err")"
t_wait 20 bash -c '! pgrep -x -f "sleep 77" >/dev/null' || fail "the agents did not stop the cancelled commands"
ok "Ctrl-C cancels the batch; the agents stop the commands"
