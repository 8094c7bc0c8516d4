# sites_ssh_test.sh: a site whose repository is reached over SSH, end to end: a real
# controller, agent, nginx, and an OpenSSH sshd serving the bare repository. Without known
# hosts the deployment fails at once saying what to set; with the wrong host key ssh refuses
# it; with the right one (and the site's deploy key authorized on the git host) it deploys
# the pushed commit and the site serves it. Bad known_hosts text is refused at the API.
source "$(dirname "$0")/lib.sh"

STOKED=$STOKE_BUILD/controller/stoked
STOKE=$STOKE_BUILD/controller/stoke
AGENT=$STOKE_BUILD/agent/stoke-agent
DATA=$T_TMP/data
for bin in /usr/sbin/sshd ssh ssh-keygen git curl jq; do
	command -v "$bin" >/dev/null || fail "needs $bin"
done
[ "$(id -u)" = 0 ] || fail "runs as root (sshd logins as root, the agent acting as root)"
chmod 755 "$T_TMP"
NGX=$T_TMP/nginx
PORT=$(t_free_port)
t_start_nginx "$NGX" "$PORT"

printf 'agent_park = 1s\n' >"$T_TMP/stoked.conf"
t_start_stoked "$STOKED" "$DATA" -c "$T_TMP/stoked.conf"
TOKEN=$("$STOKED" token create --data-dir "$DATA" --name test)
export STOKE_URL=$T_URL STOKE_TOKEN=$TOKEN
api() { curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }

t_site_agent "$STOKED" "$AGENT" "$DATA" "$TOKEN" web-1 "$NGX" "$PORT" "$T_TMP/www"

# The git host: an sshd on 127.0.0.1 whose authorized keys we control, serving origin.git.
t_git_site_repo
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$T_TMP/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$T_TMP/otherkey"
: >"$T_TMP/authorized_keys"
SPORT=$(t_free_port)
cat >"$T_TMP/sshd_config" <<EOS
ListenAddress 127.0.0.1
Port $SPORT
HostKey $T_TMP/hostkey
PidFile $T_TMP/sshd.pid
AuthorizedKeysFile $T_TMP/authorized_keys
UsePAM no
SetEnv PYENV_REHASH_TIMEOUT=1
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel ERROR
EOS
/usr/sbin/sshd -D -e -f "$T_TMP/sshd_config" >>"$T_TMP/sshd.log" 2>&1 &
T_PIDS+=("$!")
t_wait 10 sh -c "ssh-keyscan -p $SPORT 127.0.0.1 2>/dev/null | grep -q ssh-" || fail "sshd did not start"
# known_hosts lines as ssh-keyscan prints them for a port other than 22
printf '[127.0.0.1]:%s %s\n' "$SPORT" "$(cut -d' ' -f1,2 "$T_TMP/hostkey.pub")" >"$T_TMP/known_hosts"
printf '[127.0.0.1]:%s %s\n' "$SPORT" "$(cut -d' ' -f1,2 "$T_TMP/otherkey.pub")" >"$T_TMP/wrong_hosts"
REPO="ssh://root@127.0.0.1:$SPORT$ORIGIN"

# Bad known_hosts text: refused, nothing made.
for bad in 'not a key line' '[127.0.0.1]:22 ssh-dss AAAAB3NzaC1kc3MAAACBAP1' \
	"$(printf '%s\r' "$(cat "$T_TMP/known_hosts")")" '-----BEGIN OPENSSH PRIVATE KEY-----'; do
	r=$(api -o /dev/null -w '%{http_code}' -X POST "$T_URL/api/v1/sites" \
		-d "$(jq -nc --arg r "$REPO" --arg k "$bad" '{server:"web-1", domain:"bad.test", repo_url:$r, known_hosts:$k}')")
	[ "$r" = 400 ] || fail "known_hosts '$bad' accepted ($r)"
done
[ "$(api "$T_URL/api/v1/sites" | jq '.items | length')" = 0 ] || fail "a refused site was made"
ok "bad known_hosts refused at the API, nothing made"

# No known hosts: the deployment fails at once, saying what to set.
out=$("$STOKE" --json site create web-1 ssh.test --repo "$REPO" --branch main --web-dir public) ||
	fail "site create: $out"
SITE=$(echo "$out" | jq -r .site.id)
echo "$out" | jq -r .deploy_key_public >>"$T_TMP/authorized_keys"
grep -q '^ssh-ed25519 ' "$T_TMP/authorized_keys" || fail "no deploy key shown: $out"
last_dep() { api "$T_URL/api/v1/deployments?site=$SITE&limit=200" | jq -r '.items[-1].id // empty'; }
dep() { api "$T_URL/api/v1/deployments/$1"; }
dep_final() { local s; s=$(dep "$1" | jq -r .state); [ "$s" = finished ] || [ "$s" = failed ]; }
t_wait 30 sh -c "[ -n \"\$(curl -s -H 'Authorization: Bearer $TOKEN' '$T_URL/api/v1/deployments?site=$SITE' | jq -r '.items[0].id // empty')\" ]" ||
	fail "no first deployment"
D=$(last_dep)
t_wait 60 dep_final "$D" || fail "first deployment did not end: $(dep "$D" | jq -c .)"
[ "$(dep "$D" | jq -r .state)" = failed ] || fail "deployed without known hosts: $(dep "$D" | jq -c .)"
dep "$D" | jq -r '.error // ""' | grep -q "no known hosts" || fail "error does not say what is missing: $(dep "$D" | jq -c .)"
ok "SSH repository without known hosts: the deployment fails saying what to set"

# The wrong host key: ssh refuses the host, nothing deployed.
"$STOKE" site known-hosts ssh.test "$T_TMP/wrong_hosts" >/dev/null || fail "known-hosts set"
"$STOKE" site known-hosts ssh.test | grep -qF "$(cut -d' ' -f2 "$T_TMP/otherkey.pub")" || fail "known-hosts not shown"
D=$(api -X POST "$T_URL/api/v1/sites/$SITE/deploy" -d '{}' | jq -r .deployment_id)
t_wait 60 dep_final "$D" || fail "deployment $D did not end"
[ "$(dep "$D" | jq -r .state)" = failed ] || fail "deployed from a host with the wrong key"
dep "$D" | jq -r '.error // ""' | grep -q "Host key verification failed" ||
	fail "error does not show ssh's host key refusal: $(dep "$D" | jq -c .)"
ok "the wrong host key: refused by ssh, nothing deployed"

# The right one: the pushed commit deploys and is served.
C=$(t_publish v2)
"$STOKE" site known-hosts ssh.test "$T_TMP/known_hosts" >/dev/null || fail "known-hosts set"
D=$(api -X POST "$T_URL/api/v1/sites/$SITE/deploy" -d '{}' | jq -r .deployment_id)
t_wait 60 dep_final "$D" || fail "deployment $D did not end"
[ "$(dep "$D" | jq -r .state)" = finished ] ||
	fail "deployment over SSH: $(dep "$D" | jq -c .) $(api "$T_URL/api/v1/deployments/$D/log?limit=500" | jq -r '.items[].text')"
[ "$(dep "$D" | jq -r .commit_hash)" = "$C" ] || fail "deployed another commit"
t_wait 10 sh -c "[ \"\$(curl -s -H 'Host: ssh.test' http://127.0.0.1:$PORT/)\" = v2 ]" ||
	fail "site does not serve v2: $(curl -s -H 'Host: ssh.test' "http://127.0.0.1:$PORT/")"
! grep -rqF "$(sed -n 2p "$T_TMP/hostkey")" "$T_TMP/www" 2>/dev/null || fail "key material in the site"
ok "right host key and the deploy key authorized: the pushed commit deploys over SSH and is served"

# --clear removes them again.
"$STOKE" site known-hosts ssh.test --clear >/dev/null || fail "known-hosts --clear"
[ "$(api "$T_URL/api/v1/sites/$SITE" | jq -r .known_hosts)" = null ] || fail "known hosts not removed"
ok "known-hosts --clear"
