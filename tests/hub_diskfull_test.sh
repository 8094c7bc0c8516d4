# hub_diskfull_test.sh: the controller's disk fills up while an agent streams output; the
# hub cannot commit its rounds, so it acknowledges nothing and the agent sends the output
# again; once there is room, every line is stored exactly once, in order, and the result
# too. The data dir is a small tmpfs in a mount namespace of the test's own (root only).
if [ -z "${STOKE_IN_MNTNS:-}" ]; then
	[ "$(id -u)" = 0 ] || { echo "skip: needs root (tmpfs mount)"; exit 77; }
	STOKE_IN_MNTNS=1 exec unshare --mount --propagation private bash "$0" "$@"
fi
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
AGENT=$STOKE_BUILD/agent/stoke-agent
DATA=$T_TMP/data
LINES=30000
mkdir -p "$DATA"
mount -t tmpfs -o size=32m tmpfs "$DATA" || fail "cannot mount a tmpfs"
# detach it before lib.sh's cleanup removes the folder (the namespace goes with the test)
trap 'umount -l "$DATA" 2>/dev/null || true; t_cleanup' EXIT
printf 'agent_park = 1s\nlog_level = info\n' >"$T_TMP/stoked.conf"
t_start_stoked "$STOKED" "$DATA" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKED" token create --data-dir "$DATA" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
printf 'allow_root yes\ndefault_user root\n' >"$T_TMP/extra.conf"
"$STOKED" agent enroll web-1 --data-dir "$DATA" --out "$T_TMP/agent" --conf-extra "$T_TMP/extra.conf" >/dev/null
"$AGENT" -c "$T_TMP/agent/agent.conf" >>"$T_TMP/agent.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/servers/web-1 | grep -q '\"status\": *\"online\"'" ||
	fail "agent did not come online"

# The command waits for the disk to be full before it prints.
GO=$T_TMP/go
out=$(api -X POST "$T_URL/api/v1/commands" -d "$(jq -nc --arg go "$GO" --arg n "$LINES" \
	'{server:"web-1", kind:"exec", payload:{argv:["sh","-c","while [ ! -e \"$0\" ]; do sleep 0.05; done; seq 1 \"$1\"", $go, $n]}}')")
C=$(echo "$out" | jq -r .command.id)
[[ "$C" =~ ^[0-9]+$ ]] || fail "queue: $out"
t_wait 20 sh -c "[ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/commands/$C | jq -r .state)\" = running ]" ||
	fail "command not running: $(api "$T_URL/api/v1/commands/$C" | jq -c .)"

# Fill the disk, let the output come, and keep it full a while.
dd if=/dev/zero of="$DATA/filler" bs=1M 2>/dev/null || true
[ "$(df --output=avail "$DATA" | tail -1 | tr -d ' ')" -lt 1024 ] || fail "the disk did not fill"
touch "$GO"
t_wait 30 grep -q "cannot store what agents sent" "$T_LOG" || fail "the hub never failed to store (disk not full?)"
sleep 2
stored_full=$(t_sql "$DATA/stoke.db" "SELECT count(*) FROM output_lines WHERE owner_id = $C")
[ "$stored_full" -lt "$LINES" ] || fail "all lines stored while the disk was full?"
rm -f "$DATA/filler"

t_wait 120 sh -c "[ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/commands/$C | jq -r .state)\" = done ]" ||
	fail "command did not finish after the disk had room again: $(api "$T_URL/api/v1/commands/$C" | jq -c .)"
n=$(t_sql "$DATA/stoke.db" "SELECT count(*) FROM output_lines WHERE owner_id = $C AND stream = 'stdout'")
d=$(t_sql "$DATA/stoke.db" "SELECT count(DISTINCT text) FROM output_lines WHERE owner_id = $C AND stream = 'stdout'")
[ "$n" = "$LINES" ] && [ "$d" = "$LINES" ] || fail "stored $n lines ($d distinct), want $LINES once each"
# in order: the n-th line by seq says n
bad=$(t_sql "$DATA/stoke.db" "SELECT count(*) FROM (SELECT text, row_number() OVER (ORDER BY seq) AS r FROM output_lines WHERE owner_id = $C AND stream = 'stdout') WHERE CAST(text AS INTEGER) != r")
[ "$bad" = 0 ] || fail "$bad lines out of order"
[ "$(api "$T_URL/api/v1/commands/$C" | jq -r .exit_code)" = 0 ] || fail "exit code lost"
ok "disk full mid-stream: nothing acknowledged, then every line stored once, in order, and the result"
