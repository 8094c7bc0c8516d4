# provision_crash_test.sh: the controller is killed (-9) while its create call to the
# provider is in flight; the provider makes the VM anyway. After a restart the job resumes,
# finds the VM by its intent id and does not make a second one.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
mkdir -p "$T_TMP/hosts"
python3 "$STOKE_SRC/tests/standin_cloud.py" --url-file "$T_TMP/cloud.url" --hosts-dir "$T_TMP/hosts" \
	--sshd --boot-ms 300 >"$T_TMP/standin.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start"
CLOUD=$(cat "$T_TMP/cloud.url")
cat >"$T_TMP/stoked.conf" <<EOC
agent_park = 1s
job_lease = 2s
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
EOC
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf"
AGENT_PORT=$(sed 's/.*://' "$T_TMP/data/agent.url")
TOKEN=$("$STOKED" token create --data-dir "$T_TMP/data" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
droplets() { curl -sS -H "Authorization: Bearer standin-do-token" "$CLOUD/v2/droplets" | jq '.droplets | length'; }
posts() { curl -sS "$CLOUD/_standin/state" | jq '[.requests[] | select(.method == "POST" and (.path | startswith("/v2/droplets")))] | length'; }

# The create call is answered 2 s late; the droplet is made when the delay ends.
curl -sS -X POST "$CLOUD/_standin/faults" \
	-d '{"provider":"do","path_prefix":"/v2/droplets","method":"POST","delay_ms":2000,"count":1}' >/dev/null
J=$(api -X POST "$T_URL/api/v1/servers" -d '{"name":"web-1","provider":"digitalocean","region":"nyc1","size":"s-1vcpu-1gb","image":"debian-12-x64"}' | jq -r .job_id)
[[ "$J" =~ ^[0-9]+$ ]] || fail "server create"
t_wait 20 sh -c "[ \"\$(sqlite3 -cmd '.timeout 5000' '$T_TMP/data/stoke.db' \"SELECT state FROM servers WHERE name='web-1'\")\" = creating ]" ||
	fail "the job never reached the create call"
kill -9 "$T_PID"
wait "$T_PID" 2>/dev/null || true
t_wait 20 sh -c "[ \$(curl -sS -H 'Authorization: Bearer standin-do-token' $CLOUD/v2/droplets | jq '.droplets | length') = 1 ]" ||
	fail "the provider never made the droplet"
ok "controller killed with its create call in flight; the provider made the VM"

t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf" --agent-listen "127.0.0.1:$AGENT_PORT"
t_wait 180 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$J | jq -e '.state == \"done\" or .state == \"failed\"' >/dev/null" ||
	fail "job $J did not finish after the restart"
[ "$(api "$T_URL/api/v1/jobs/$J" | jq -r .state)" = done ] || fail "job: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}')"
[ "$(droplets)" = 1 ] || fail "$(droplets) droplets after the restart: a duplicate was made"
[ "$(posts)" = 1 ] || fail "$(posts) create calls reached the provider"
[ "$(api "$T_URL/api/v1/servers/web-1" | jq -r .state)" = active ] || fail "server not active"
ok "after the restart the job found the VM by its intent id: one create call, one VM, active"

J=$(api -X DELETE "$T_URL/api/v1/servers/web-1" | jq -r .job_id)
t_wait 60 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$J | jq -e '.state == \"done\"' >/dev/null" || fail "delete"
[ "$(droplets)" = 0 ] || fail "droplet left"
