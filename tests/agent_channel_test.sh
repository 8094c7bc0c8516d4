# agent_channel_test.sh: a real controller and real agents over mutual TLS on
# 127.0.0.1: commands through the API, 100,000 lines of output complete and in order,
# rogue clients refused (no certificate, another CA, wrong secret), revocation, and
# connections cut mid-stream (controller killed; agent's connection cut through a
# proxy; agent killed) with no line lost or doubled and no command run twice.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
AGENT=$STOKE_BUILD/agent/stoke-agent
ROGUE=$STOKE_BUILD/tests/rogue_agent
DATA=$T_TMP/data
DB=$DATA/stoke.db
CONF=$T_TMP/stoked.conf
printf 'agent_park = 1s\n' >"$CONF"
mkdir -p "$T_TMP/files"
# systemd is not PID 1 here: the service command drives a stand-in systemctl that says
# what it was asked.
printf '#!/bin/sh\necho "systemctl $*"\n' >"$T_TMP/systemctl"
chmod 755 "$T_TMP/systemctl"
cat >"$T_TMP/extra.conf" <<EOC
allow_root yes
default_user root
write_roots $T_TMP/files
systemctl_bin $T_TMP/systemctl
services stoke-demo:nginx
EOC

t_start_stoked "$STOKED" "$DATA" -c "$CONF"
TOKEN=$("$STOKED" token create -c "$CONF" --data-dir "$DATA" --name test)
AGENT_URL=$(cat "$DATA/agent.url")

api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

start_agent() { # NAME
	"$AGENT" -c "$T_TMP/$1/agent.conf" >>"$T_TMP/$1.log" 2>&1 &
	AGENT_PID=$!
	T_PIDS+=("$AGENT_PID")
}

online() { [ "$(api "$T_URL/api/v1/servers/$1" | jq -r .agent.status)" = online ]; }

# queue KIND SERVER PAYLOAD -> command id
queue() {
	local out
	out=$(api -X POST "$T_URL/api/v1/commands" -d "{\"server\":\"$2\",\"kind\":\"$1\",\"payload\":$3}")
	echo "$out" | jq -e .command.id >/dev/null || fail "queue $1: $out"
	echo "$out" | jq -r .command.id
}

finished() { # ID
	local s
	s=$(api "$T_URL/api/v1/commands/$1" | jq -r .state)
	[ "$s" = done ] || [ "$s" = failed ] || [ "$s" = cancelled ]
}

field() { api "$T_URL/api/v1/commands/$1" | jq -r "$2"; }

"$STOKED" agent enroll web-1 -c "$CONF" --data-dir "$DATA" --out "$T_TMP/web-1" \
	--conf-extra "$T_TMP/extra.conf" >/dev/null
[ "$(stat -c %a "$T_TMP/web-1/agent.key")" = 600 ] || fail "agent.key is not mode 600"
[ "$(stat -c %a "$T_TMP/web-1/secret")" = 600 ] || fail "secret is not mode 600"
! grep -rq "$(cat "$T_TMP/web-1/secret")" "$DATA" 2>/dev/null || fail "the agent secret is stored in the clear"
start_agent web-1
t_wait 20 online web-1 || fail "agent web-1 never came online"
ok "enrolled agent dials in over mutual TLS"

[ "$(api "$T_URL/api/v1/servers/web-1" | jq -r .agent.facts.hostname)" = "$(hostname)" ] ||
	fail "facts: $(api "$T_URL/api/v1/servers/web-1" | jq -c .agent)"
ok "facts reported"

# exec: streams, exit code
ID=$(queue exec web-1 '{"argv":["sh","-c","echo hello; echo oops >&2; exit 3"]}')
t_wait 20 finished "$ID" || fail "exec $ID did not finish"
[ "$(field "$ID" .state)" = failed ] || fail "exit 3 should fail: $(field "$ID" .)"
[ "$(field "$ID" .exit_code)" = 3 ] || fail "exit code: $(field "$ID" .exit_code)"
out=$(api "$T_URL/api/v1/commands/$ID/output" | jq -r '.items[] | "\(.stream) \(.text)"')
[ "$(echo "$out" | grep -v '^system ')" = $'stdout hello\nstderr oops' ] || fail "output: $out"
echo "$out" | grep -q '^system exited with code 3' || fail "no exit note in the output: $out"
ok "exec: output streamed with its streams, exit code kept"

# 100,000 lines complete and in order
ID=$(queue exec web-1 '{"argv":["seq","1","100000"]}')
t_wait 120 finished "$ID" || fail "seq did not finish"
[ "$(field "$ID" .state)" = done ] || fail "seq: $(field "$ID" .)"
t_sql "$DB" "SELECT text FROM output_lines WHERE owner_kind='command' AND owner_id=$ID AND stream='stdout' ORDER BY seq" >"$T_TMP/seq.out"
seq 1 100000 | cmp -s - "$T_TMP/seq.out" || fail "100,000 lines not complete and in order ($(wc -l <"$T_TMP/seq.out") lines)"
first=$(api "$T_URL/api/v1/commands/$ID/output?limit=3" | jq -r '[.items[].text] | join(",")')
[ "$first" = 1,2,3 ] || fail "output API first page: $first"
ok "100,000 lines arrive complete and in order"

# write_file
ID=$(queue write_file web-1 "{\"path\":\"$T_TMP/files/hello.txt\",\"content\":\"hi there\\n\",\"mode\":416}")
t_wait 20 finished "$ID" || fail "write_file did not finish"
[ "$(field "$ID" .state)" = done ] || fail "write_file: $(field "$ID" .error)"
[ "$(cat "$T_TMP/files/hello.txt")" = "hi there" ] || fail "write_file content"
[ "$(stat -c %a "$T_TMP/files/hello.txt")" = 640 ] || fail "write_file mode"
ID=$(queue write_file web-1 '{"path":"/etc/stoke-evil","content":"x"}')
t_wait 20 finished "$ID" || fail "write_file outside did not finish"
[ "$(field "$ID" .state)" = failed ] || fail "write outside the roots was not refused"
[ ! -e /etc/stoke-evil ] || fail "write outside the roots happened"
ok "write_file: atomic with mode; outside the allowed roots refused by the agent"

# facts and service through the API
ID=$(queue facts web-1 '{}')
t_wait 20 finished "$ID" || fail "facts did not finish"
[ "$(field "$ID" .state)" = done ] || fail "facts: $(field "$ID" .)"
[ "$(api "$T_URL/api/v1/servers/web-1" | jq -r .agent.facts.cpus)" = "$(nproc)" ] || fail "facts: cpus"
ID=$(queue service web-1 '{"name":"stoke-demo","action":"restart"}')
t_wait 20 finished "$ID" || fail "service did not finish"
[ "$(field "$ID" .state)" = done ] || fail "service: $(field "$ID" .)"
api "$T_URL/api/v1/commands/$ID/output" | jq -r '.items[].text' | grep -q "^systemctl restart stoke-demo$" ||
	fail "service: systemctl not called as expected: $(api "$T_URL/api/v1/commands/$ID/output" | jq -c .)"
ID=$(queue service web-1 '{"name":"sshd","action":"stop"}')
t_wait 20 finished "$ID" || fail "service (not allowed) did not finish"
[ "$(field "$ID" .state)" = failed ] || fail "a service outside the allow-list was not refused"
ok "facts and service: through the API; a service outside the agent's allow-list is refused"

# Rogue clients. rogue: exit 0 refused, 3 answered, anything else a broken tool.
rogue() {
	local rc=0
	ASAN_OPTIONS=detect_leaks=0 "$ROGUE" "$@" || rc=$?
	[ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "rogue_agent broke (exit $rc): $*"
	return "$rc"
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=evil \
	-keyout "$T_TMP/evil.key" -out "$T_TMP/evil.crt" 2>/dev/null
AID=$(sed -n 's/^agent_id //p' "$T_TMP/web-1/agent.conf")
SECRET=$(cat "$T_TMP/web-1/secret")
CA=$T_TMP/web-1/ca.crt
rogue "$AGENT_URL" stoke-controller "$CA" - - "$AID" "$SECRET" 3000 >"$T_TMP/r1" || fail "no-certificate client was answered"
rogue "$AGENT_URL" stoke-controller "$CA" "$T_TMP/evil.crt" "$T_TMP/evil.key" "$AID" "$SECRET" 3000 >"$T_TMP/r2" ||
	fail "a certificate from another CA was answered"
rogue "$AGENT_URL" stoke-controller "$CA" "$T_TMP/web-1/agent.crt" "$T_TMP/web-1/agent.key" "$AID" wrong-secret 3000 >"$T_TMP/r3" ||
	fail "a wrong secret was answered"
grep -q "wrong secret" "$T_LOG" || fail "the wrong secret was not logged"
! grep -q "$SECRET" "$T_LOG" || fail "the secret appears in the log"
# positive control: the same client with the right secret is answered
if rogue "$AGENT_URL" stoke-controller "$CA" "$T_TMP/web-1/agent.crt" "$T_TMP/web-1/agent.key" "$AID" "$SECRET" 5000 >"$T_TMP/r4"; then
	fail "the right credentials were not answered: $(cat "$T_TMP/r4")"
fi
ok "no certificate, another CA's certificate and a wrong secret all get nothing"

# The agent's side of TLS: a controller certificate without the expected name, or from
# another CA, is refused (and said so), never talked to.
"$STOKED" agent enroll web-t -c "$CONF" --data-dir "$DATA" --out "$T_TMP/web-t" \
	--conf-extra "$T_TMP/extra.conf" >/dev/null
sed 's/^server_name .*/server_name not-the-controller/' "$T_TMP/web-t/agent.conf" >"$T_TMP/web-t/name.conf"
sed "s|^ca_file .*|ca_file $T_TMP/evil.crt|" "$T_TMP/web-t/agent.conf" >"$T_TMP/web-t/ca.conf"
grep -q "^server_name not-the-controller" "$T_TMP/web-t/name.conf" || fail "test set-up: no server_name line"
grep -q "^ca_file $T_TMP/evil.crt" "$T_TMP/web-t/ca.conf" || fail "test set-up: no ca_file line"
for c in name ca; do
	"$AGENT" -c "$T_TMP/web-t/$c.conf" >"$T_TMP/web-t-$c.log" 2>&1 &
	TPID=$!
	T_PIDS+=("$TPID")
	t_wait 20 grep -q "not trusted" "$T_TMP/web-t-$c.log" ||
		fail "agent with a wrong $c did not refuse the controller: $(tail -3 "$T_TMP/web-t-$c.log")"
	! online web-t || fail "agent with a wrong $c came online"
	kill "$TPID"
done
grep -q "expected name not-the-controller" "$T_TMP/web-t-name.log" || fail "the name is not in the message"
"$AGENT" -c "$T_TMP/web-t/agent.conf" >"$T_TMP/web-t.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 online web-t || fail "positive control: web-t with its own configuration never came online"
ok "the agent refuses a controller certificate without the expected name or from another CA"

# A command sent to an agent process that never acknowledged it is sent again to the same
# process (its journal stops a second run), but not to a restarted one (a new Poll.session:
# its journal, not flushed per command, may have lost it): there it ends as unknown.
"$STOKED" agent enroll web-s -c "$CONF" --data-dir "$DATA" --out "$T_TMP/web-s" \
	--conf-extra "$T_TMP/extra.conf" >/dev/null
SAID=$(sed -n 's/^agent_id //p' "$T_TMP/web-s/agent.conf")
SSECRET=$(cat "$T_TMP/web-s/secret")
srogue() { # SESSION WAIT_MS: one poll as web-s from agent process SESSION
	ROGUE_SESSION=$1 rogue "$AGENT_URL" stoke-controller "$CA" "$T_TMP/web-s/agent.crt" \
		"$T_TMP/web-s/agent.key" "$SAID" "$SSECRET" "$2"
}
srogue first 3000 >"$T_TMP/s0" || true # the first hello of web-s, before any command
ID=$(queue exec web-s "$(jq -cn --arg f "$T_TMP/ran-s" '{argv:["touch",$f]}')")
if srogue first 5000 >"$T_TMP/s1"; then fail "web-s got nothing: $(cat "$T_TMP/s1")"; fi
grep -q "command $ID\$" "$T_TMP/s1" || fail "web-s was not sent command $ID: $(cat "$T_TMP/s1")"
if srogue first 5000 >"$T_TMP/s2"; then fail "web-s got nothing again: $(cat "$T_TMP/s2")"; fi
grep -q "command $ID\$" "$T_TMP/s2" || fail "not sent again to the same session: $(cat "$T_TMP/s2")"
srogue second 2000 >"$T_TMP/s3" || true
! grep -q "command $ID\$" "$T_TMP/s3" || fail "sent again to a restarted agent: $(cat "$T_TMP/s3")"
[ "$(field "$ID" .state)" = failed ] || fail "in flight across a restart: $(field "$ID" '{state, error}')"
[[ "$(field "$ID" .error)" == *"agent restarted"*"outcome is unknown"* ]] ||
	fail "error: $(field "$ID" .error)"
ok "an unacknowledged command is sent again to the same agent process, never to a restarted one"

# Controller killed mid-stream: no line lost or doubled, the command runs once.
SCRIPT="for i in \$(seq 1 3000); do echo line\$i; if [ \$i = 1500 ]; then sleep 3; fi; done; echo ran >> $T_TMP/ran1"
ID=$(queue exec web-1 "$(jq -cn --arg s "$SCRIPT" '{argv:["sh","-c",$s]}')")
t_wait 20 sh -c "[ \$(sqlite3 -cmd '.timeout 5000' '$DB' \"SELECT count(*) FROM output_lines WHERE owner_id=$ID\") -ge 1500 ]" ||
	fail "first half of the output never arrived"
kill -9 "$T_PID"
wait "$T_PID" 2>/dev/null || true
# same agent port: the agents keep dialing the address in their bundle
t_start_stoked "$STOKED" "$DATA" -c "$CONF" --agent-listen "127.0.0.1:${AGENT_URL##*:}"
t_wait 60 finished "$ID" || fail "command $ID did not finish after the controller restarted"
n=$(t_sql "$DB" "SELECT count(*), count(DISTINCT text) FROM output_lines WHERE owner_id=$ID AND stream='stdout'")
[ "$n" = "3000|3000" ] || fail "after a controller restart: $n lines (want 3000|3000)"
[ "$(wc -l <"$T_TMP/ran1")" = 1 ] || fail "the command ran $(wc -l <"$T_TMP/ran1") times"
ok "controller killed mid-stream: no line lost or doubled, command ran once"

# The agent's connection cut (through a proxy we kill): same guarantees.
PPORT=$((20000 + RANDOM % 10000))
HPORT=${AGENT_URL##*:}
socat TCP-LISTEN:$PPORT,bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:$HPORT &
SOCAT=$!
T_PIDS+=("$SOCAT")
"$STOKED" agent enroll web-2 -c "$CONF" --data-dir "$DATA" --out "$T_TMP/web-2" \
	--controller "tls+tcp://127.0.0.1:$PPORT" --conf-extra "$T_TMP/extra.conf" >/dev/null
start_agent web-2
t_wait 20 online web-2 || fail "agent web-2 (through the proxy) never came online"
SCRIPT="for i in \$(seq 1 2000); do echo l\$i; if [ \$i = 1000 ]; then sleep 3; fi; done; echo ran >> $T_TMP/ran2"
ID=$(queue exec web-2 "$(jq -cn --arg s "$SCRIPT" '{argv:["sh","-c",$s]}')")
t_wait 20 sh -c "[ \$(sqlite3 -cmd '.timeout 5000' '$DB' \"SELECT count(*) FROM output_lines WHERE owner_id=$ID\") -ge 1000 ]" ||
	fail "first half through the proxy never arrived"
kill -9 "$SOCAT"
pkill -9 -f "TCP-LISTEN:$PPORT" || true
sleep 1
socat TCP-LISTEN:$PPORT,bind=127.0.0.1,reuseaddr,fork TCP:127.0.0.1:$HPORT &
T_PIDS+=("$!")
# Generous: under heavy parallel load (ctest -j2 beside e2e_vm_test) recovery once took over
# a minute (not diagnosed yet, see the note of 2026-11-22); what is tested here is that no
# line is lost or doubled and nothing runs twice. On failure, say where it stood.
if ! t_wait 150 finished "$ID"; then
	echo "--- command $ID: $(field "$ID" '{state, acked, exit_code, error}' | tr -d '\n')" >&2
	echo "--- hub lines of the controller's log:" >&2
	grep -E "hub:|cannot store" "$T_LOG" | tail -n 20 >&2 || true
	echo "--- web-2's log:" >&2
	tail -n 30 "$T_TMP/web-2.log" >&2 || true
	fail "command $ID did not finish after the connection was cut"
fi
n=$(t_sql "$DB" "SELECT count(*), count(DISTINCT text) FROM output_lines WHERE owner_id=$ID AND stream='stdout'")
[ "$n" = "2000|2000" ] || fail "after the connection was cut: $n lines (want 2000|2000)"
[ "$(wc -l <"$T_TMP/ran2")" = 1 ] || fail "the command ran $(wc -l <"$T_TMP/ran2") times"
ok "agent connection cut mid-stream: no line lost or doubled, command ran once"

# Agent killed while a command runs: reported, not run again.
ID=$(queue exec web-1 "$(jq -cn --arg s "echo start >> $T_TMP/ran3; sleep 4" '{argv:["sh","-c",$s]}')")
t_wait 20 test -s "$T_TMP/ran3" || fail "command never started"
kill -9 "$AGENT_PID"
start_agent web-1
t_wait 30 finished "$ID" || fail "command $ID not finished after the agent restarted"
[ "$(field "$ID" .state)" = failed ] || fail "an interrupted command should fail: $(field "$ID" .)"
[[ "$(field "$ID" .error)" == *"outcome is unknown"* ]] || fail "error: $(field "$ID" .error)"
sleep 5
[ "$(wc -l <"$T_TMP/ran3")" = 1 ] || fail "the interrupted command ran again"
ok "agent killed mid-command: reported as unknown outcome, not run again"

# Revocation takes effect on the next message.
"$STOKED" agent revoke web-1 -c "$CONF" --data-dir "$DATA" >/dev/null
ID=$(queue exec web-1 '{"argv":["true"]}')
sleep 3
[ "$(field "$ID" .state)" = queued ] || fail "a revoked agent got a command: $(field "$ID" .state)"
rogue "$AGENT_URL" stoke-controller "$CA" "$T_TMP/web-1/agent.crt" "$T_TMP/web-1/agent.key" "$AID" "$SECRET" 3000 >"$T_TMP/r5" ||
	fail "revoked credentials were answered"
grep -q "revoked" "$T_TMP/r5" || fail "revoked agent not told: $(cat "$T_TMP/r5")"
ok "revoked agent gets nothing more"
