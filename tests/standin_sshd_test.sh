#!/usr/bin/env bash
# standin_sshd_test.sh: the stand-in cloud's VMs are real hosts: a droplet (DigitalOcean API,
# key by id) and a server (Hetzner API, key by name) each get their own sshd on 127.0.0.1,
# which lets in the requested key and no other; deleting a VM (or stopping the stand-in)
# stops its sshd and removes its folder. Judged by exit code.
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for bin in /usr/sbin/sshd ssh ssh-keygen curl jq; do
	command -v "$bin" >/dev/null || fail "$bin is needed"
done
PYTHON=python3
[ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3

DO_TOKEN="sshd-test-do-$$"
HZ_TOKEN="sshd-test-hz-$$"
HOSTS="$T_TMP/hosts"
T_LOG="$T_TMP/standin.log"
ME=$(id -un)

"$PYTHON" "$STOKE_SRC/tests/standin_cloud.py" --url-file "$T_TMP/url" --boot-ms 200 \
	--hosts-dir "$HOSTS" --sshd --do-token "$DO_TOKEN" --hetzner-token "$HZ_TOKEN" \
	>>"$T_LOG" 2>&1 &
STANDIN=$!
T_PIDS+=("$STANDIN")
t_wait 20 test -s "$T_TMP/url" || fail "the stand-in wrote no URL"
URL=$(cat "$T_TMP/url")

api() { # api digitalocean|hetzner METHOD PATH [BODY]: the body of the answer; fails on non-2xx
	local tok=$DO_TOKEN
	[ "$1" = hetzner ] && tok=$HZ_TOKEN
	local args=(-sS -f -X "$2" -H "Authorization: Bearer $tok")
	[ $# -ge 4 ] && args+=(-H 'Content-Type: application/json' --data "$4")
	curl "${args[@]}" "$URL$3"
}

# A process is gone when it is not there or only a zombie (PID 1 here may not reap orphans).
proc_gone() {
	[ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

ssh_to() { # ssh_to KEY PORT CMD...
	local key=$1 port=$2
	shift 2
	ssh -i "$key" -p "$port" -o StrictHostKeyChecking=no -o BatchMode=yes \
		-o IdentitiesOnly=yes -o UserKnownHostsFile="$T_TMP/known_hosts" \
		-o ConnectTimeout=10 -o LogLevel=ERROR "$ME@127.0.0.1" "$@"
}

ssh-keygen -q -t ed25519 -N '' -C good -f "$T_TMP/good"
ssh-keygen -q -t ed25519 -N '' -C other -f "$T_TMP/other"
GOOD_PUB=$(cat "$T_TMP/good.pub")

# --- DigitalOcean: a key by id, a droplet tagged with its intent ----------------------------
KEY_ID=$(api digitalocean POST /v2/account/keys "$(jq -nc --arg k "$GOOD_PUB" '{name: "laptop", public_key: $k}')" |
	jq -er .ssh_key.id) || fail "adding the key"
CREATED=$(api digitalocean POST /v2/droplets "$(jq -nc --argjson k "$KEY_ID" '{name: "web-1", region: "nyc3",
	size: "s-1vcpu-1gb", image: "debian-12-x64", ssh_keys: [$k], tags: ["stoke-intent:sshd-1"]}')") ||
	fail "creating the droplet"
DID=$(jq -er .droplet.id <<<"$CREATED")
ACTION=$(jq -er '.links.actions[0].id' <<<"$CREATED")
[ "$(jq -r .droplet.status <<<"$CREATED")" = new ] || fail "a new droplet is not 'new'"
ok "droplet $DID created"

droplet_active() { [ "$(api digitalocean GET "/v2/droplets/$DID" | jq -r .droplet.status)" = active ]; }
t_wait 30 droplet_active || fail "droplet $DID never became active"
api digitalocean GET "/v2/actions/$ACTION" | jq -e '.action.status == "completed"' >/dev/null ||
	fail "the create action is not completed"
api digitalocean GET "/v2/droplets?tag_name=stoke-intent:sshd-1" | jq -e --argjson id "$DID" \
	'.droplets | length == 1 and .[0].id == $id' >/dev/null || fail "tag lookup"

HEADERS=$(curl -sS -D - -o "$T_TMP/droplet.json" -H "Authorization: Bearer $DO_TOKEN" \
	"$URL/v2/droplets/$DID")
PORT=$(jq -er .droplet.standin_ssh_port "$T_TMP/droplet.json")
HPORT=$(tr -d '\r' <<<"$HEADERS" | awk -F': ' 'tolower($1) == "x-standin-ssh-port" {print $2}')
[ "$PORT" = "$HPORT" ] || fail "port in JSON ($PORT) and header ($HPORT) differ"
jq -e '.droplet.networks.v4[] | select(.type == "public") | .ip_address == "127.0.0.1"' \
	"$T_TMP/droplet.json" >/dev/null || fail "no public IPv4 127.0.0.1"
ROOT=$(jq -er .droplet.standin_root "$T_TMP/droplet.json")
FOLDER=$(dirname "$ROOT")
ok "droplet active, sshd on port $PORT"

# shellcheck disable=SC2016 # expanded by the remote shell
OUT=$(ssh_to "$T_TMP/good" "$PORT" 'echo "hello $STOKE_STANDIN_ROOT"') || fail "login with the key"
[ "$OUT" = "hello $ROOT" ] || fail "unexpected output: $OUT"
ok "logged in with the droplet's key"
# The VM's own host key is the one it presented.
HOSTKEY=$(awk '{print $2}' "$FOLDER/ssh_host_ed25519_key.pub")
grep -q "$HOSTKEY" "$T_TMP/known_hosts" || fail "the host key seen is not the VM's own"
if ssh_to "$T_TMP/other" "$PORT" true 2>/dev/null; then
	fail "a key that was not requested logged in"
fi
ok "another key is refused; the host key is the VM's own"
# sftp works (the bootstrap uploads files).
echo payload >"$T_TMP/up.txt"
sftp -i "$T_TMP/good" -P "$PORT" -o StrictHostKeyChecking=no -o BatchMode=yes \
	-o IdentitiesOnly=yes -o UserKnownHostsFile="$T_TMP/known_hosts" -o LogLevel=ERROR \
	-b - "$ME@127.0.0.1" >/dev/null <<<"put $T_TMP/up.txt $ROOT/up.txt" || fail "sftp upload"
[ "$(cat "$ROOT/up.txt")" = payload ] || fail "the upload did not land"
ok "sftp upload"

SSHD_PID=$(cat "$FOLDER/sshd.pid")
! proc_gone "$SSHD_PID" || fail "no sshd process $SSHD_PID"
api digitalocean DELETE "/v2/droplets/$DID" >/dev/null || fail "deleting the droplet"
t_wait 10 proc_gone "$SSHD_PID" || fail "sshd $SSHD_PID still runs after the delete"
[ ! -e "$FOLDER" ] || fail "$FOLDER is still there"
if ssh_to "$T_TMP/good" "$PORT" true 2>/dev/null; then
	fail "the deleted droplet still lets us in"
fi
STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $DO_TOKEN" \
	"$URL/v2/droplets/$DID")
[ "$STATUS" = 404 ] || fail "GET of a deleted droplet gave $STATUS"
ok "deleted: sshd gone, folder gone, 404"

# --- Hetzner: a key by name; left running to check that stopping the stand-in stops it ------
api hetzner POST /v1/ssh_keys "$(jq -nc --arg k "$GOOD_PUB" '{name: "laptop", public_key: $k}')" \
	>/dev/null || fail "adding the Hetzner key"
SID=$(api hetzner POST /v1/servers '{"name": "web-2", "server_type": "cx22", "image": "debian-12",
	"location": "fsn1", "ssh_keys": ["laptop"], "labels": {"stoke-intent": "sshd-2"}}' |
	jq -er .server.id) || fail "creating the server"
server_running() { [ "$(api hetzner GET "/v1/servers/$SID" | jq -r .server.status)" = running ]; }
t_wait 30 server_running || fail "server $SID never ran"
HZ=$(api hetzner GET "/v1/servers?label_selector=stoke-intent%3Dsshd-2")
[ "$(jq -r '.servers | length' <<<"$HZ")" = 1 ] || fail "label lookup"
HZ_PORT=$(jq -er '.servers[0].standin_ssh_port' <<<"$HZ")
HZ_FOLDER=$(dirname "$(jq -er '.servers[0].standin_root' <<<"$HZ")")
OUT=$(ssh_to "$T_TMP/good" "$HZ_PORT" echo hetzner-ok) || fail "login to the Hetzner server"
[ "$OUT" = hetzner-ok ] || fail "unexpected output: $OUT"
ok "Hetzner server $SID: logged in with the key given by name"

HZ_PID=$(cat "$HZ_FOLDER/sshd.pid")
! proc_gone "$HZ_PID" || fail "no sshd process $HZ_PID"
kill -TERM "$STANDIN"
wait "$STANDIN" 2>/dev/null || true
t_wait 10 proc_gone "$HZ_PID" || fail "sshd $HZ_PID outlived the stand-in"
[ ! -e "$HZ_FOLDER" ] || fail "$HZ_FOLDER outlived the stand-in"
ok "stopping the stand-in stopped its VMs"
echo "standin_sshd_test: all passed"
