#!/usr/bin/env bash
# e2e_quickstart_test.sh: README's quickstart, end to end, through the `stoke` CLI against
# real processes: a controller, the stand-in cloud whose VMs are each a sandboxed sshd with
# its own nginx, the agent installed over SSH, git. Creates a server (progress shown live),
# creates a site from the sample repository and serves it, deploys by hand and by a signed
# push webhook (from the repository's post-receive hook), attaches an SSH key to the fleet
# and logs in with it, runs a command on all servers; every outcome is checked (content over
# HTTP, deployment logs, the ssh login, command output). Then deletes what it made and
# checks that nothing is left running (every process it saw, and /proc for its folder) or
# half-made (VMs, provider keys, host folders, servers, sites, jobs).
# `make demo` runs this same file with STOKE_DEMO=1 (it prints the same; the demo only
# adds a closing line).
# shellcheck source=tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for bin in /usr/sbin/sshd /usr/sbin/nginx ssh ssh-keygen git curl jq openssl python3; do
	command -v "$bin" >/dev/null || fail "$bin is needed (make deps)"
done
[ "$(id -u)" = 0 ] || fail "runs as root (each stand-in VM is an sshd and an nginx)"

STOKED=$STOKE_BUILD/controller/stoked
STOKE_BIN=$STOKE_BUILD/controller/stoke
SAMPLE=$STOKE_SRC/tests/sample-site
stoke() { "$STOKE_BIN" "$@"; }

T0=$SECONDS

say() { printf '\n==> %s\n' "$*"; }
# show CMD...: prints the command as a newcomer types it, runs it, prints its output
# indented and keeps it in OUT; returns the command's exit status.
show() {
	local rc=0
	printf '$ %s\n' "${SHOW_AS:-$*}" | sed "s|$T_TMP|\$DEMO|g; s|$STOKE_SRC/||g"
	"$@" >"$T_TMP/out" 2>&1 || rc=$?
	sed 's/^/    /' "$T_TMP/out"
	OUT=$(cat "$T_TMP/out")
	return $rc
}
has() { grep -qF -- "$1" <<<"$OUT"; }

# --- the stand-in cloud and the controller, on free ports in a private folder ------------
say "starting the stand-in cloud (VMs: sshd + nginx in $T_TMP/hosts) and stoked"
python3 "$STOKE_SRC/tests/standin_cloud.py" --sshd --nginx --hosts-dir "$T_TMP/hosts" \
	--url-file "$T_TMP/cloud.url" --boot-ms 300 >"$T_TMP/standin.log" 2>&1 &
STANDIN_PID=$!
T_PIDS+=("$STANDIN_PID")
t_wait 20 test -s "$T_TMP/cloud.url" || fail "stand-in cloud did not start: $(cat "$T_TMP/standin.log")"
CLOUD=$(cat "$T_TMP/cloud.url")
cat >"$T_TMP/stoked.conf" <<EOC
agent_park = 1s
digitalocean_url = $CLOUD
digitalocean_token = standin-do-token
EOC
t_start_stoked "$STOKED" "$T_TMP/data" -c "$T_TMP/stoked.conf"
STOKED_PID=$T_PID
export STOKE_URL=$T_URL
STOKE_TOKEN=$("$STOKED" token create -c "$T_TMP/stoked.conf" --data-dir "$T_TMP/data" --name e2e)
export STOKE_TOKEN
standin_state() { curl -sS "$CLOUD/_standin/state"; }
ok "controller at $T_URL, stand-in cloud at $CLOUD"

# --- 1. a server -------------------------------------------------------------------------
say "1. create a server at the (stand-in) cloud, progress shown live"
show stoke server create web-1 --provider digitalocean --region nyc1 --size s-1vcpu-1gb \
	--image debian-12-x64 --tag web --wait || fail "server create failed"
{ has "running provision.sh" && has "waiting for the agent's hello"; } || fail "no live progress shown"
{ has "server web-1 is active" && has "agent online"; } || fail "no clear result line"
srv=$(stoke --json server show web-1)
{ [ "$(jq -r .state <<<"$srv")" = active ] && [ "$(jq -r .agent.status <<<"$srv")" = online ]; } ||
	fail "server: $(jq -c '{state,agent}' <<<"$srv")"
SSH_PORT=$(jq -r .ssh_port <<<"$srv")
HTTP_PORT=$(standin_state | jq -r '.do.servers[] | select(.name == "web-1") | .http_port')
[[ "$HTTP_PORT" =~ ^[0-9]+$ ]] || fail "the VM has no nginx port: $(standin_state | jq -c .do.servers)"
stoke server log web-1 | grep -q '^==> finished: server provisioned' || fail "provisioning log incomplete"
ok "server web-1 active, agent online; its sshd on port $SSH_PORT, its nginx on port $HTTP_PORT"

# --- 2. a site from the sample repository -------------------------------------------------
say "2. create a site from the sample repository (a local git repository, no internet)"
show "$SAMPLE/make-repo.sh" "$T_TMP/sample-site" || fail "make-repo.sh"
C1=$(git -C "$T_TMP/sample-site" rev-parse HEAD)
show stoke site create web-1 hello.test --repo "$T_TMP/sample-site.git" --branch main \
	--script "$SAMPLE/deploy.sh" --wait || fail "site create failed"
has "site 1 hello.test is active" || fail "no clear result line"
has "building $C1 for hello.test" || fail "the first deployment's output was not shown"
HOOK_URL=$(sed -n 's/^  URL: *//p' <<<"$OUT")
HOOK_SECRET=$(sed -n 's/^  secret: *//p' <<<"$OUT")
{ [ "$HOOK_URL" = "$T_URL/hooks/1" ] && [ -n "$HOOK_SECRET" ]; } || fail "webhook URL/secret not shown"
ok "site hello.test active; first deployment of ${C1:0:12} done"

page() { curl -sS -H 'Host: hello.test' "http://127.0.0.1:$HTTP_PORT/"; }
SHOW_AS="curl -sS -H 'Host: hello.test' http://127.0.0.1:$HTTP_PORT/" \
	show curl -sS -H 'Host: hello.test' "http://127.0.0.1:$HTTP_PORT/" || fail "curl"
{ has "<h1>Hello from Stoke</h1>" && has "from commit ${C1:0:12}."; } ||
	fail "the site does not serve the sample page with its build step's stamp"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: other.test' "http://127.0.0.1:$HTTP_PORT/")
[ "$code" = 404 ] || fail "an unknown host got $code, not the default 404"
ok "nginx on the VM serves hello.test (commit stamped by the deploy script); other hosts 404"

# --- 3. deploy by hand ----------------------------------------------------------------------
say "3. deploy it by hand, following the log"
show stoke deploy hello.test --follow || fail "deploy failed"
{ has "building $C1 for hello.test" && has "stamped commit ${C1:0:12}" && has "finished in"; } ||
	fail "deployment log or result missing"
D=$(stoke --json deploy list hello.test | jq -r '.items[-1].id')
stoke deploy log "$D" | grep -qx "building $C1 for hello.test" || fail "deploy log $D"
[ "$(stoke --json deploy show "$D" | jq -r .trigger)" = api ] || fail "trigger: $(stoke --json deploy show "$D" | jq -r .trigger)"
page | grep -qF "from commit ${C1:0:12}." || fail "page after the manual deploy"
ok "manual deployment $D finished; its log is complete"

# --- 4. push a change: the webhook deploys it -------------------------------------------
say "4. push a change: the repository's hook sends a signed GitHub push webhook"
show git -C "$T_TMP/sample-site.git" config stoke.hook-url "$HOOK_URL"
git -C "$T_TMP/sample-site.git" config stoke.hook-secret "$HOOK_SECRET"
# shellcheck disable=SC2016 # shown as typed
printf '$ git -C $DEMO/sample-site.git config stoke.hook-secret (the secret shown above)\n'
sed -i 's/Hello from Stoke/Hello again/' "$T_TMP/sample-site/public/index.html"
git -C "$T_TMP/sample-site" commit -q -am "Say hello again"
C2=$(git -C "$T_TMP/sample-site" rev-parse HEAD)
show git -C "$T_TMP/sample-site" push || fail "git push"
has "stoke webhook: refs/heads/main -> $HOOK_URL: 202" || fail "the webhook was not accepted"
dep_of() { # COMMIT: the id of its last deployment once it ended
	stoke --json deploy list hello.test | jq -r --arg c "$1" '[.items[] | select(.commit_hash == $c
		and (.state == "finished" or .state == "failed" or .state == "cancelled"))][-1].id // empty'
}
ended() { [ -n "$(dep_of "$1")" ]; }
t_wait 30 ended "$C2" || fail "no finished deployment of $C2: $(stoke deploy list hello.test)"
D2=$(dep_of "$C2")
show stoke deploy show "$D2"
dep=$(stoke --json deploy show "$D2")
{ [ "$(jq -r .state <<<"$dep")" = finished ] && [ "$(jq -r .trigger <<<"$dep")" = webhook:github ] &&
	[ "$(jq -r .commit_message <<<"$dep")" = "Say hello again" ]; } || fail "webhook deployment: $dep"
show stoke deploy log "$D2"
{ has "building $C2 for hello.test" && has "stamped commit ${C2:0:12}"; } || fail "webhook deployment log"
SHOW_AS="curl -sS -H 'Host: hello.test' http://127.0.0.1:$HTTP_PORT/" \
	show curl -sS -H 'Host: hello.test' "http://127.0.0.1:$HTTP_PORT/"
{ has "<h1>Hello again</h1>" && has "from commit ${C2:0:12}."; } || fail "the pushed change is not served"
ok "push -> signed webhook -> deployment $D2 of ${C2:0:12} -> served"

# --- 5. an SSH key for the fleet ------------------------------------------------------------
say "5. add an SSH key to the fleet and log in with it"
ssh-keygen -q -t ed25519 -N '' -C alice@laptop -f "$T_TMP/alice"
ssh_in() {
	ssh -i "$T_TMP/alice" -p "$SSH_PORT" -o BatchMode=yes -o IdentitiesOnly=yes \
		-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
		root@127.0.0.1 "$@"
}
! ssh_in true 2>/dev/null || fail "the key logs in before it was attached: the test proves nothing"
show stoke key add alice "$T_TMP/alice.pub" || fail "key add"
want=$(ssh-keygen -lf "$T_TMP/alice.pub" | awk '{print $2}')
has "$want" || fail "key add does not show the fingerprint $want"
show stoke key attach alice --user root --all || fail "key attach"
stoke key show alice | grep -E '^web-1 +root +synced' >/dev/null || fail "key not synced: $(stoke key show alice)"
# shellcheck disable=SC2016 # expanded on the server
SHOW_AS="ssh -i \$DEMO/alice -p $SSH_PORT root@127.0.0.1 'echo \"logged in as \$(id -un) with the key alice\"'" \
	show ssh_in 'echo "logged in as $(id -un) with the key alice"' || fail "ssh login with the attached key"
has "logged in as root with the key alice" || fail "ssh output"
ok "key alice attached on every server; ssh logs in with it"

# --- 6. a command on every server ---------------------------------------------------------
say "6. run a command on all servers"
show stoke run --all -- uname -a || fail "stoke run"
has "web-1: $(uname -a)" || fail "the command's output is not shown prefixed by its server"
grep -qE '1 ok' <<<"$OUT" || fail "no exit-code summary"
ok "uname -a ran on every server: output and exit-code summary shown"

# --- cleaning up: nothing left running, nothing half-made ------------------------------
say "cleaning up: delete the site and the server"
AGENT_PID=$(cat "$T_TMP"/hosts/*/root/var/lib/stoke-agent/agent.pid)
mapfile -t SEEN < <(standin_state | jq -r '.do.servers[] | .sshd_pid, .nginx_pid')
NGINX_MASTER=$(standin_state | jq -r '.do.servers[0].nginx_pid')
for d in /proc/[0-9]*; do # the nginx workers
	if [ "$(awk '{print $4}' "$d/stat" 2>/dev/null)" = "$NGINX_MASTER" ]; then
		SEEN+=("${d#/proc/}")
	fi
done
SEEN+=("$AGENT_PID")
[ ${#SEEN[@]} -ge 4 ] || fail "expected sshd, nginx master and worker, agent; saw: ${SEEN[*]}"
show stoke site delete hello.test --wait || fail "site delete"
show stoke server delete web-1 --wait || fail "server delete"
st=$(standin_state)
[ "$(jq '.do.servers | length' <<<"$st")" = 0 ] || fail "a VM is left at the provider"
[ "$(jq '.do.keys | length' <<<"$st")" = 0 ] || fail "an SSH key is left at the provider"
[ -z "$(ls -A "$T_TMP/hosts")" ] || fail "host folders left: $(ls "$T_TMP/hosts")"
[ "$(stoke --json server list | jq '[.items[] | select(.state != "deleted")] | length')" = 0 ] ||
	fail "servers left: $(stoke server list)"
[ "$(stoke --json site list | jq '.items | length')" = 0 ] || fail "sites left"
# (the periodic fleet-wide drift check is about no resource and always scheduled)
[ "$(stoke --json job list | jq '[.items[] | select(.resource != null and (.state == "queued" or .state == "running"))] | length')" = 0 ] ||
	fail "jobs still queued or running: $(stoke job list)"
[ "$(stoke --json job list | jq '[.items[] | select(.state == "failed")] | length')" = 0 ] ||
	fail "failed jobs: $(stoke job list)"
ok "no VM, provider key, host folder, server, site or unfinished job is left"

kill -TERM "$STOKED_PID" "$STANDIN_PID"
gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '/^State/ {print $2}' "/proc/$1/status" 2>/dev/null)" = Z ]; }
for p in "$STOKED_PID" "$STANDIN_PID" "${SEEN[@]}"; do
	[[ "$p" =~ ^[0-9]+$ ]] || continue
	t_wait 15 gone "$p" || fail "process $p still runs: $(tr '\0' ' ' <"/proc/$p/cmdline")"
done
wait "$STOKED_PID" "$STANDIN_PID" 2>/dev/null || true
left=()
for d in /proc/[0-9]*; do
	p=${d#/proc/}
	[ "$p" = $$ ] && continue
	cmd=$({ tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null) || continue
	exe=$(readlink "$d/exe" 2>/dev/null) || exe=""
	if [[ "$cmd" == *"$T_TMP"* || "$exe" == "$T_TMP"* ]]; then
		left+=("$p: $cmd")
	fi
done
[ ${#left[@]} -eq 0 ] || fail "processes of the test still run: ${left[*]}"
ok "nothing left running: stoked, the stand-in, sshd, nginx (master and workers), the agent"
echo
echo "quickstart tour passed in $((SECONDS - T0)) s"
if [ -n "${STOKE_DEMO:-}" ]; then
	echo "(make demo: everything ran in $T_TMP on free ports, and is removed now)"
fi
