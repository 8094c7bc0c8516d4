# provision_fault_test.sh: a failure late in provisioning (provision.sh fails on the new
# server) rolls everything back — no VM, no provider key left, the server `failed` with the
# failing step — and `retry` succeeds once the fault is gone.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
mkdir -p "$T_TMP/hosts"
python3 "$STOKE_SRC/tests/standin_cloud.py" --url-file "$T_TMP/cloud.url" --hosts-dir "$T_TMP/hosts" \
	--sshd --boot-ms 300 >"$T_TMP/standin.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start"
CLOUD=$(cat "$T_TMP/cloud.url")

# provision.sh with an injected failure while $T_TMP/fail exists
cp -r "$STOKE_SRC/provision-scripts" "$T_TMP/scripts"
MARK=$T_TMP/fail
sed -i "2i if [ -e '$MARK' ]; then echo '==> error: injected failure' >&2; exit 1; fi" "$T_TMP/scripts/provision.sh"
touch "$MARK"
cat >"$T_TMP/stoked.conf" <<EOC
agent_park = 1s
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
provision_scripts = $T_TMP/scripts
EOC
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKED" token create --data-dir "$T_TMP/data" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
cloud() { curl -sS -H "Authorization: Bearer standin-do-token" "$CLOUD$1"; }
final() {
	t_wait 180 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$1 | jq -e '.state == \"done\" or .state == \"failed\"' >/dev/null" ||
		fail "job $1 did not finish"
	api "$T_URL/api/v1/jobs/$1" | jq -r .state
}

J=$(api -X POST "$T_URL/api/v1/servers" -d '{"name":"web-1","provider":"digitalocean","region":"nyc1","size":"s-1vcpu-1gb","image":"debian-12-x64"}' | jq -r .job_id)
[ "$(final "$J")" = failed ] || fail "provisioning should fail"
srv=$(api "$T_URL/api/v1/servers/web-1")
[ "$(echo "$srv" | jq -r .state)" = failed ] || fail "server state: $(echo "$srv" | jq -c .)"
[ "$(api "$T_URL/api/v1/jobs/$J" | jq -r .failed_step)" = provision ] || fail "failing step: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{failed_step,error}')"
api "$T_URL/api/v1/servers/web-1/log?limit=200" | jq -r '.items[].text' | grep -q "injected failure" ||
	fail "the script's error is not in the server's log"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 0 ] || fail "the VM was not rolled back"
[ "$(cloud /v2/account/keys | jq '.ssh_keys | length')" = 0 ] || fail "the provider key was not rolled back"
ok "provision.sh failing: rolled back (no VM, no key), failed at step provision with its output kept"

rm -f "$MARK"
api -X POST "$T_URL/api/v1/servers/web-1/retry" >/dev/null
[ "$(final "$J")" = done ] || fail "retry: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}')"
[ "$(api "$T_URL/api/v1/servers/web-1" | jq -r .state)" = active ] || fail "not active after retry"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 1 ] || fail "not exactly one VM after retry"
ok "retry after the fault is gone: active, one VM"

J=$(api -X DELETE "$T_URL/api/v1/servers/web-1" | jq -r .job_id)
[ "$(final "$J")" = done ] || fail "delete"
