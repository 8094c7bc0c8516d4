# agent_limits_test.sh: what an agent sends is bounded (the security issue's "limits on
# what an agent sends"). A client with an enrolled agent's credentials, acting as a
# compromised agent: output past command_output_max is cut with a marker line; output for a
# finished command, for another server's command, or with an out-of-range sequence number is
# not stored (that last one was a shift past 63 bits: undefined behaviour).
# labels: security
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
ROGUE=$STOKE_BUILD/tests/rogue_agent
DATA=$T_TMP/data
DB=$DATA/stoke.db
CONF=$T_TMP/stoked.conf
printf 'agent_park = 1s\ncommand_output_max = 65536\n' >"$CONF"
t_start_stoked "$STOKED" "$DATA" -c "$CONF"
TOKEN=$("$STOKED" token create -c "$CONF" --data-dir "$DATA" --name test)
AGENT_URL=$(cat "$DATA/agent.url")
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
sql() { sqlite3 -cmd '.timeout 5000' "$DB" "$1"; }
queue() { # SERVER -> command id
	local out
	out=$(api -X POST "$T_URL/api/v1/commands" -d "{\"server\":\"$1\",\"kind\":\"exec\",\"payload\":{\"argv\":[\"true\"]}}")
	echo "$out" | jq -e .command.id >/dev/null || fail "queue: $out"
	echo "$out" | jq -r .command.id
}
lines() { sql "SELECT count(*) FROM output_lines WHERE owner_kind = 'command' AND owner_id = $1"; }
for s in web-1 web-2; do
	"$STOKED" agent enroll "$s" -c "$CONF" --data-dir "$DATA" --out "$T_TMP/$s" >/dev/null || fail "enroll $s"
done
AID=$(sed -n 's/^agent_id //p' "$T_TMP/web-1/agent.conf")
SECRET=$(cat "$T_TMP/web-1/secret")
# rogue SESSION OUTPUT-SPEC: one poll as web-1's agent, then the output chunks
rogue() {
	local rc=0
	ROGUE_SESSION=$1 ROGUE_OUTPUT=$2 ASAN_OPTIONS=detect_leaks=0 "$ROGUE" "$AGENT_URL" stoke-controller \
		"$T_TMP/web-1/ca.crt" "$T_TMP/web-1/agent.crt" "$T_TMP/web-1/agent.key" "$AID" "$SECRET" 5000 \
		>"$T_TMP/rogue.out" 2>&1 || rc=$?
	[ "$rc" = 3 ] || fail "rogue_agent (exit $rc): $(cat "$T_TMP/rogue.out")"
}

A=$(queue web-1)
C=$(queue web-1)
B=$(queue web-2)
rogue s1 "$A:1:1024:100"
grep -q "with command $A" "$T_TMP/rogue.out" || fail "the poll did not get command $A: $(cat "$T_TMP/rogue.out")"
grep -q "100 of 100 chunks acknowledged" "$T_TMP/rogue.out" || fail "$(cat "$T_TMP/rogue.out")"
stored=$(sql "SELECT coalesce(sum(length(text) + 1), 0) FROM output_lines WHERE owner_kind = 'command' AND owner_id = $A AND stream != 'system'")
[ "$stored" -le 65536 ] && [ "$stored" -ge 60000 ] || fail "$stored bytes kept of 102400 with a 65536 limit"
[ "$(sql "SELECT count(*) FROM output_lines WHERE owner_kind = 'command' AND owner_id = $A AND text LIKE '[stoke: output cut here%'")" = 1 ] ||
	fail "no single marker line where the output was cut"
ok "100 KiB of output against a 64 KiB limit: $stored bytes kept, then one marker line"

rogue s1 "$C:1:100:2"
grep -q "with command $C" "$T_TMP/rogue.out" || fail "the poll did not get command $C: $(cat "$T_TMP/rogue.out")"
[ "$(lines "$C")" = 2 ] || fail "command $C: $(lines "$C") lines, want 2 (positive control)"
ok "output of a running command is stored (control)"

# A new agent process (session s2): what s1 was sent ends as outcome unknown, finished.
rogue s2 "$C:10:100:3"
[ "$(sql "SELECT state FROM commands WHERE id = $C")" = failed ] || fail "command $C: $(sql "SELECT state, error FROM commands WHERE id = $C")"
[ "$(lines "$C")" = 2 ] || fail "output for finished command $C was stored: $(lines "$C") lines"
ok "output for a finished command is not stored"

rogue s2 "$B:1:100:3"
[ "$(lines "$B")" = 0 ] || fail "web-1's agent added output to web-2's command $B"
ok "output for another server's command is not stored"

D=$(queue web-1)
rogue s2 "$D:4611686018427387904:100:2"
grep -q "with command $D" "$T_TMP/rogue.out" || fail "the poll did not get command $D: $(cat "$T_TMP/rogue.out")"
[ "$(lines "$D")" = 0 ] || fail "output with an out-of-range sequence number was stored"
grep -q "sequence number 4611686018427387904 (out of range) ignored" "$T_LOG" || fail "not logged"
curl -sf "$T_URL/api/v1/health" >/dev/null || fail "the controller died"
ok "an out-of-range sequence number is refused (no shift past 63 bits), the controller answers"
