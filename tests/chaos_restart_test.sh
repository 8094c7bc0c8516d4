# chaos_restart_test.sh: a controller restarted on the data of one killed with -9 while a
# job ran. (1) The job, claimable at once after the restart, resumes only once the whole
# configuration is loaded: never with empty paths, never toward a provider's real URL, and
# the crash is a resume, not an attempt. (2) An undo that fails (the provider refuses to
# delete the VM) leaves the job failed_dirty with the VM named on the server; the undo is
# retried by itself and, once the provider answers again, the VM is gone and the job failed.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
STOKE=$STOKE_BUILD/controller/stoke
DB=$T_TMP/data/stoke.db
mkdir -p "$T_TMP/hosts"
python3 "$STOKE_SRC/tests/standin_cloud.py" --url-file "$T_TMP/cloud.url" --hosts-dir "$T_TMP/hosts" \
	--sshd --boot-ms 4000 >"$T_TMP/standin.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start"
CLOUD=$(cat "$T_TMP/cloud.url")
cp -r "$STOKE_SRC/provision-scripts" "$T_TMP/scripts"
MARK=$T_TMP/fail
sed -i "2i if [ -e '$MARK' ]; then echo '==> error: injected failure' >&2; exit 1; fi" "$T_TMP/scripts/provision.sh"
cat >"$T_TMP/stoked.conf" <<EOC
agent_park = 1s
job_lease = 2s
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
provision_scripts = $T_TMP/scripts
EOC
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf"
AGENT_PORT=$(sed 's/.*://' "$T_TMP/data/agent.url")
TOKEN=$("$STOKED" token create --data-dir "$T_TMP/data" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
cloud() { curl -sS -H "Authorization: Bearer standin-do-token" "$CLOUD$1"; }
sql() { sqlite3 -cmd '.timeout 5000' "$DB" "$1"; }
job_is() { [ "$(curl -s -H "Authorization: Bearer $TOKEN" "$T_URL/api/v1/jobs/$1" | jq -r .state)" = "$2" ]; }

# (1) killed while the job waits for the VM to boot; restarted once its lease has expired,
# so the job is claimable the moment the workers start.
J=$(api -X POST "$T_URL/api/v1/servers" -d '{"name":"web-1","provider":"digitalocean","region":"nyc1","size":"s-1vcpu-1gb","image":"debian-12-x64"}' | jq -r .job_id)
[[ "$J" =~ ^[0-9]+$ ]] || fail "server create"
t_wait 30 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$DB' \"SELECT state FROM servers WHERE name='web-1'\")\" = booting ]" ||
	fail "the job never reached wait_active"
kill -9 "$T_PID"
wait "$T_PID" 2>/dev/null || true
t_wait 20 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$DB' \"SELECT lease_until < CAST(strftime('%s','now') AS INTEGER) * 1000 FROM jobs WHERE id = $J\")\" = 1 ]" ||
	fail "the dead controller's lease did not expire"
cp "$T_TMP/data/stoked.log" "$T_TMP/before.log"
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf" --agent-listen "127.0.0.1:$AGENT_PORT"
t_wait 180 sh -c "job_is() { [ \"\$(curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$J | jq -r .state)\" = \"\$1\" ]; }; job_is done || job_is failed" ||
	fail "job $J did not finish after the restart"
job=$(api "$T_URL/api/v1/jobs/$J")
[ "$(echo "$job" | jq -r .state)" = done ] || fail "job after the restart: $(echo "$job" | jq -c '{state,step,error}')"
[ "$(echo "$job" | jq -c '[.attempts, .resumes]')" = "[1,1]" ] ||
	fail "the crash was counted as an attempt: $(echo "$job" | jq -c '{attempts,resumes}')"
after=$(tail -n +"$(($(wc -l <"$T_TMP/before.log") + 1))" "$T_TMP/data/stoked.log")
echo "$after" | grep -q '(null)' && fail "a step ran with an empty configuration: $(echo "$after" | grep '(null)' | head -3)"
echo "$after" | grep -Eq 'api\.digitalocean\.com|api\.hetzner\.cloud' && fail "a request went toward a real provider"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 1 ] || fail "not exactly one droplet"
[ "$(api "$T_URL/api/v1/servers/web-1" | jq -r .state)" = active ] || fail "server not active"
ok "restart with the job due at once: resumed after start-up, done, attempts 1 resumes 1, no empty configuration"

# (2) an undo that cannot finish: provision.sh fails, and the provider refuses the delete.
touch "$MARK"
curl -sS -X POST "$CLOUD/_standin/faults" -d '{"provider":"do","path_prefix":"/v2/droplets/","method":"DELETE","status":403,"count":-1}' >/dev/null
J=$(api -X POST "$T_URL/api/v1/servers" -d '{"name":"web-2","provider":"digitalocean","region":"nyc1","size":"s-1vcpu-1gb","image":"debian-12-x64"}' | jq -r .job_id)
t_wait 180 job_is "$J" failed_dirty || fail "job $J: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error,message}')"
srv=$(api "$T_URL/api/v1/servers/web-2")
[ "$(echo "$srv" | jq -r .state)" = failed ] || fail "server web-2: $(echo "$srv" | jq -c '{state,error}')"
pid=$(echo "$srv" | jq -r .provider_id)
[[ "$pid" =~ ^[0-9]+$ ]] || fail "the server does not name its VM: $(echo "$srv" | jq -c .)"
[ "$(echo "$srv" | jq -r .cleanup.provider_id)" = "$pid" ] || fail "cleanup: $(echo "$srv" | jq -c .cleanup)"
[ "$(echo "$srv" | jq -r .cleanup.job)" = "$J" ] || fail "cleanup job: $(echo "$srv" | jq -c .cleanup)"
cloud "/v2/droplets/$pid" | jq -e '.droplet.id' >/dev/null || fail "the VM is gone though the delete was refused?"
show=$(STOKE_URL=$T_URL STOKE_TOKEN=$TOKEN "$STOKE" server show web-2)
echo "$show" | grep -q "^cleanup: *not finished (job $J" || fail "stoke server show: $show"
echo "$show" | grep -q "left at the provider: $pid" || fail "stoke server show does not name the VM: $show"
if STOKE_URL=$T_URL STOKE_TOKEN=$TOKEN "$STOKE" job wait "$J" >"$T_TMP/wait.out" 2>&1; then
	fail "stoke job wait on a failed_dirty job exited 0"
fi
grep -q "undo has not finished" "$T_TMP/wait.out" || fail "stoke job wait: $(cat "$T_TMP/wait.out")"
ok "provider refuses the delete: job failed_dirty, server failed naming VM $pid, shown by the API and the CLI"

# The provider answers again: the undo, retried by itself, finishes.
curl -sS -X DELETE "$CLOUD/_standin/faults" >/dev/null
t_wait 180 job_is "$J" failed || fail "job $J after the fault: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,message,undo_attempts}')"
cloud "/v2/droplets/$pid" | jq -e '.droplet.id' >/dev/null 2>&1 && fail "VM $pid still at the provider"
srv=$(api "$T_URL/api/v1/servers/web-2")
[ "$(echo "$srv" | jq -r .cleanup)" = null ] || fail "cleanup still shown: $(echo "$srv" | jq -c .cleanup)"
[ "$(echo "$srv" | jq -r .provider_id)" = null ] || fail "provider_id kept after the delete"
[ "$(api "$T_URL/api/v1/jobs/$J" | jq -r .undo_attempts)" -ge 2 ] || fail "undo_attempts: $(api "$T_URL/api/v1/jobs/$J" | jq -c .)"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 1 ] || fail "droplets left: $(cloud /v2/droplets | jq -c '[.droplets[].name]')"
[ "$(sql "SELECT count(*) FROM jobs WHERE type LIKE 'server.%' AND state IN ('queued','running','failed_dirty')")" = 0 ] ||
	fail "server jobs left unfinished: $(sql "SELECT id, type, state FROM jobs WHERE state IN ('queued','running','failed_dirty')")"
ok "the undo retried by itself: VM $pid deleted, job failed (clean), nothing left at the provider"
