# provision_test.sh: `server create` through the stand-in cloud (DigitalOcean API shapes)
# to an active server with an online agent that runs a command; delete removes the VM,
# the provider key and the record; a failure injected at the provider rolls back (no VM,
# no key left) and retry succeeds once the fault is gone; a custom server is bootstrapped
# over SSH against a plain local sshd.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
STANDIN=$STOKE_SRC/tests/standin_cloud.py
mkdir -p "$T_TMP/hosts"
python3 "$STANDIN" --url-file "$T_TMP/cloud.url" --hosts-dir "$T_TMP/hosts" --sshd --boot-ms 300 \
	>"$T_TMP/standin.log" 2>&1 &
T_PIDS+=("$!")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start: $(cat "$T_TMP/standin.log")"
CLOUD=$(cat "$T_TMP/cloud.url")
cat >"$T_TMP/stoked.conf" <<EOC
agent_park = 1s
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
EOC
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKED" token create --data-dir "$T_TMP/data" --name test)
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
cloud() { curl -sS -H "Authorization: Bearer standin-do-token" "$CLOUD$1"; }
grep -q standin-do-token "$T_LOG" && fail "the provider token is in the log"
! grep -qa standin-do-token "$T_TMP/data/stoke.db" || fail "the provider token is stored in the clear"

job_final() { # JOB -> state once finished
	t_wait 120 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/jobs/$1 | jq -e '.state == \"done\" or .state == \"failed\" or .state == \"cancelled\"' >/dev/null" ||
		fail "job $1 did not finish: $(api "$T_URL/api/v1/jobs/$1" | jq -c '{state,step,error}')"
	api "$T_URL/api/v1/jobs/$1" | jq -r .state
}

out=$(api -X POST "$T_URL/api/v1/servers" -d '{"name":"web-1","provider":"digitalocean","region":"nyc1","size":"s-1vcpu-1gb","image":"debian-12-x64","tags":["web"]}')
J=$(echo "$out" | jq -r .job_id)
[[ "$J" =~ ^[0-9]+$ ]] || fail "server create: $out"
st=$(job_final "$J")
[ "$st" = done ] || fail "provisioning: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}'); log: $(api "$T_URL/api/v1/servers/web-1/log?limit=200" | jq -r '.items[].text' | tail -5)"
srv=$(api "$T_URL/api/v1/servers/web-1")
[ "$(echo "$srv" | jq -r .state)" = active ] || fail "server not active: $srv"
[ "$(echo "$srv" | jq -r .agent.status)" = online ] || fail "agent not online: $srv"
echo "$srv" | jq -r .host_key_sha256 | grep -q '^SHA256:' || fail "host key not pinned: $srv"
api "$T_URL/api/v1/servers/web-1/log?limit=200" | jq -r '.items[].text' | grep -q '^==> ' || fail "no provisioning log"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 1 ] || fail "not exactly one droplet"
C=$(api -X POST "$T_URL/api/v1/commands" -d '{"server":"web-1","kind":"exec","payload":{"argv":["echo","hello from the new server"]}}' | jq -r .command.id)
t_wait 30 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' $T_URL/api/v1/commands/$C | jq -e '.state == \"done\"' >/dev/null" ||
	fail "command on the new server: $(api "$T_URL/api/v1/commands/$C" | jq -c .)"
api "$T_URL/api/v1/commands/$C/output" | jq -r '.items[].text' | grep -q "hello from the new server" || fail "command output"
ok "server create through the stand-in cloud: active, agent online, runs a command"

# Delete: no VM, no key at the provider, the agent stopped, the record gone.
AGENT_PID=$(cat "$T_TMP"/hosts/*/root/var/lib/stoke-agent/agent.pid 2>/dev/null | head -n 1)
J=$(api -X DELETE "$T_URL/api/v1/servers/web-1" | jq -r .job_id)
[ "$(job_final "$J")" = done ] || fail "delete: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}')"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 0 ] || fail "droplet left after delete"
[ "$(cloud /v2/account/keys | jq '.ssh_keys | length')" = 0 ] || fail "key left after delete"
[ "$(api -o /dev/null -w '%{http_code}' "$T_URL/api/v1/servers/web-1")" = 404 ] || fail "server record left"
if [ -n "$AGENT_PID" ]; then
	t_wait 10 sh -c "! kill -0 $AGENT_PID 2>/dev/null || grep -q zombie /proc/$AGENT_PID/status 2>/dev/null || [ \"\$(awk '/State/ {print \$2}' /proc/$AGENT_PID/status)\" = Z ]" ||
		fail "the agent still runs after delete"
fi
ok "delete removes the VM, the provider key, the agent and the record"

# A fault at the provider: rollback leaves nothing; retry works once it is gone.
curl -sS -X POST "$CLOUD/_standin/faults" -d '{"provider":"do","path_prefix":"/v2/droplets","method":"POST","status":422,"count":-1}' >/dev/null
out=$(api -X POST "$T_URL/api/v1/servers" -d '{"name":"web-2","provider":"digitalocean","region":"nyc1","size":"s-1vcpu-1gb","image":"debian-12-x64"}')
J=$(echo "$out" | jq -r .job_id)
[ "$(job_final "$J")" = failed ] || fail "a 422 at create should fail the job"
srv=$(api "$T_URL/api/v1/servers/web-2")
[ "$(echo "$srv" | jq -r .state)" = failed ] || fail "server should be failed: $srv"
echo "$srv" | jq -r .error | grep -q "digitalocean: 422" || fail "provider's words not shown: $(echo "$srv" | jq -r .error)"
[ "$(cloud /v2/droplets | jq '.droplets | length')" = 0 ] || fail "a VM was left"
[ "$(cloud /v2/account/keys | jq '.ssh_keys | length')" = 0 ] || fail "the provider key was not rolled back"
curl -sS -X DELETE "$CLOUD/_standin/faults" >/dev/null
api -X POST "$T_URL/api/v1/servers/web-2/retry" >/dev/null
[ "$(job_final "$J")" = done ] || fail "retry: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}')"
[ "$(api "$T_URL/api/v1/servers/web-2" | jq -r .state)" = active ] || fail "server not active after retry"
ok "fault at the provider: rolled back with nothing left; retry succeeds"

J=$(api -X DELETE "$T_URL/api/v1/servers/web-2" | jq -r .job_id)
[ "$(job_final "$J")" = done ] || fail "delete web-2"
ok "cleaned up"

# A custom server: an existing machine reached over SSH (here a plain local sshd, whose
# sessions are told to stay inside a sandbox folder).
SSHD_DIR=$T_TMP/custom
mkdir -p "$SSHD_DIR/root" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$SSHD_DIR/host_key"
: >"$SSHD_DIR/authorized_keys"
SPORT=$(t_free_port)
cat >"$SSHD_DIR/sshd_config" <<EOC
ListenAddress 127.0.0.1
Port $SPORT
HostKey $SSHD_DIR/host_key
PidFile $SSHD_DIR/sshd.pid
AuthorizedKeysFile $SSHD_DIR/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
Subsystem sftp internal-sftp
SetEnv PYENV_REHASH_TIMEOUT=1 STOKE_STANDIN_ROOT=$SSHD_DIR/root
EOC
/usr/sbin/sshd -D -e -f "$SSHD_DIR/sshd_config" >>"$SSHD_DIR/sshd.log" 2>&1 &
T_PIDS+=("$!")
t_wait 10 sh -c "ssh-keyscan -p $SPORT 127.0.0.1 2>/dev/null | grep -q ssh-" || fail "custom sshd did not start"
out=$(api -X POST "$T_URL/api/v1/servers" -d "{\"name\":\"old-box\",\"provider\":\"custom\",\"ipv4\":\"127.0.0.1\",\"ssh_port\":$SPORT,\"ssh_user\":\"root\"}")
J=$(echo "$out" | jq -r .job_id)
KEY=$(echo "$out" | jq -r .server.ssh_public_key)
[[ "$KEY" == ssh-ed25519\ * ]] || fail "custom server: no public key to install: $out"
echo "$KEY" >"$SSHD_DIR/authorized_keys"
[ "$(job_final "$J")" = done ] || fail "custom bootstrap: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}')"
srv=$(api "$T_URL/api/v1/servers/old-box")
[ "$(echo "$srv" | jq -r .state)" = active ] && [ "$(echo "$srv" | jq -r .agent.status)" = online ] ||
	fail "custom server not active/online: $(echo "$srv" | jq -c '{state,agent}')"
want=$(ssh-keygen -lf "$SSHD_DIR/host_key.pub" | awk '{print $2}')
[ "$(echo "$srv" | jq -r .host_key_sha256)" = "$want" ] || fail "pinned $(echo "$srv" | jq -r .host_key_sha256), sshd has $want"
ok "custom server bootstrapped over SSH: host key pinned, agent online"

# A host key given by the user that the server does not have: refused, naming both.
BOGUS=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
out=$(api -X POST "$T_URL/api/v1/servers" -d "{\"name\":\"impostor\",\"provider\":\"custom\",\"ipv4\":\"127.0.0.1\",\"ssh_port\":$SPORT,\"ssh_user\":\"root\",\"host_key_sha256\":\"$BOGUS\"}")
J2=$(echo "$out" | jq -r .job_id)
echo "$out" | jq -r .server.ssh_public_key >>"$SSHD_DIR/authorized_keys"
st=$(job_final "$J2")
err=$(api "$T_URL/api/v1/jobs/$J2" | jq -r .error)
[ "$st" = failed ] && [[ "$err" == *"host key mismatch"*"$BOGUS"*"$want"* ]] || fail "a wrong host key was not refused: $st $err"
[ "$(api "$T_URL/api/v1/jobs/$J2" | jq -r .attempts)" = 1 ] || fail "a host key mismatch was retried"
ok "a host key that does not match stops the job at once, naming both fingerprints"
J2=$(api -X DELETE "$T_URL/api/v1/servers/impostor" | jq -r .job_id)
[ "$(job_final "$J2")" = done ] || fail "delete impostor"
APID=$(cat "$SSHD_DIR/root/var/lib/stoke-agent/agent.pid")
J=$(api -X DELETE "$T_URL/api/v1/servers/old-box" | jq -r .job_id)
[ "$(job_final "$J")" = done ] || fail "delete old-box: $(api "$T_URL/api/v1/jobs/$J" | jq -c '{state,step,error}')"
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '/^State/ {print $2}' "/proc/$1/status" 2>/dev/null)" = Z ]; }
t_wait 10 gone "$APID" || fail "the custom server's agent still runs after delete (pid $APID)"
ok "deleting a custom server stops its agent"
